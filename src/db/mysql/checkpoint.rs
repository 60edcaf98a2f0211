//! The MySQL/MariaDB checkpoint store: the shared [`SqlStore`] in the target's database,
//! and its run lock, a named lock (`GET_LOCK`) whose holder says who it is in
//! `_rowshift_locks`.

use sqlx::Row;
use sqlx::mysql::{MySqlConnection, MySqlPool};

use super::dialect::MyDialect;
use crate::checkpoint::lock::{Holder, Me, SessionLock, lock_key};
use crate::checkpoint::store::SqlStore;
use crate::db::mysql::{MyClient, qualified};
use crate::sql::dialect::Dialect;
use crate::sql::stmt;

/// A checkpoint store in a MySQL database (the target's).
pub type MyStore = SqlStore<MyDialect, MyClient>;

/// The named lock of a pipeline (MySQL allows 64 characters).
pub(crate) fn lock_name(database: &str, pipeline: &str) -> String {
    format!("rowshift:{:016x}", lock_key(database, pipeline) as u64)
}

/// The table where the lock's holder says who it is: MySQL's named locks tell only the
/// holding connection's id.
fn holders(database: &str) -> String {
    qualified(database, "_rowshift_locks")
}

impl SessionLock for MyDialect {
    async fn open(&self, _conn: &mut MySqlConnection, _since: &str) -> sqlx::Result<()> {
        Ok(())
    }

    async fn try_lock(
        &self,
        conn: &mut MySqlConnection,
        database: &str,
        pipeline: &str,
    ) -> sqlx::Result<bool> {
        let got: Option<i64> = sqlx::query_scalar("SELECT CAST(GET_LOCK(?, 0) AS SIGNED)")
            .bind(lock_name(database, pipeline))
            .fetch_one(conn)
            .await?;
        Ok(got == Some(1))
    }

    async fn announce(
        &self,
        conn: &mut MySqlConnection,
        database: &str,
        pipeline: &str,
    ) -> sqlx::Result<()> {
        let me = Me::now();
        if let Some(create) = self.create_schema(database) {
            sqlx::raw_sql(stmt(create)).execute(&mut *conn).await?;
        }
        sqlx::raw_sql(stmt(format!(
            "CREATE TABLE IF NOT EXISTS {} (
                pipeline VARCHAR(255) PRIMARY KEY,
                connection BIGINT NOT NULL,
                host VARCHAR(255) NOT NULL,
                pid BIGINT,
                since VARCHAR(64) NOT NULL
            ){}",
            holders(database),
            self.table_options()
        )))
        .execute(&mut *conn)
        .await?;
        sqlx::query(stmt(format!(
            "REPLACE INTO {} (pipeline, connection, host, pid, since) VALUES (?, CONNECTION_ID(), ?, ?, ?)",
            holders(database)
        )))
        .bind(pipeline.to_string())
        .bind(me.host.clone())
        .bind(me.pid as i64)
        .bind(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .execute(conn)
        .await
        .map(|_| ())
    }

    /// The live holder of the named lock, named by the row it wrote in
    /// `_rowshift_locks`, or by its connection when it has not written one yet.
    async fn holder(
        &self,
        pool: &MySqlPool,
        database: &str,
        pipeline: &str,
    ) -> sqlx::Result<Option<Holder>> {
        let id: Option<i64> = sqlx::query_scalar("SELECT CAST(IS_USED_LOCK(?) AS SIGNED)")
            .bind(lock_name(database, pipeline))
            .fetch_one(pool)
            .await?;
        let Some(id) = id else {
            return Ok(None);
        };
        // The holder writes its row just after taking the lock: give it a moment.
        let mut row = Ok(None);
        for _ in 0..40 {
            row = sqlx::query(stmt(format!(
                "SELECT CAST(host AS CHAR), CAST(pid AS SIGNED), CAST(since AS CHAR) FROM {} WHERE pipeline = ? AND connection = ?",
                holders(database)
            )))
            .bind(pipeline.to_string())
            .bind(id)
            .fetch_optional(pool)
            .await;
            if matches!(row, Ok(Some(_))) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Ok(Some(match row {
            Ok(Some(r)) => Holder {
                host: r.get(0),
                pid: r.get::<Option<i64>, _>(1).map(|p| p as u32),
                since: r.get(2),
            },
            // No such table or row yet: the holder took the lock a moment ago.
            _ => Holder {
                host: format!("MySQL connection {id}"),
                pid: None,
                since: "a moment ago (it has not said who it is yet)".into(),
            },
        }))
    }

    async fn still_held(&self, conn: &mut MySqlConnection, database: &str, pipeline: &str) -> bool {
        sqlx::query_scalar::<_, Option<i64>>(
            "SELECT CAST(IS_USED_LOCK(?) = CONNECTION_ID() AS SIGNED)",
        )
        .bind(lock_name(database, pipeline))
        .fetch_one(conn)
        .await
        .is_ok_and(|held| held == Some(1))
    }

    async fn unlock(&self, conn: &mut MySqlConnection, database: &str, pipeline: &str) {
        let _ = sqlx::query(stmt(format!(
            "DELETE FROM {} WHERE pipeline = ? AND connection = CONNECTION_ID()",
            holders(database)
        )))
        .bind(pipeline.to_string())
        .execute(&mut *conn)
        .await;
        let _ = sqlx::query("SELECT RELEASE_LOCK(?)")
            .bind(lock_name(database, pipeline))
            .execute(conn)
            .await;
    }
}
