//! The PostgreSQL checkpoint store: the shared [`SqlStore`] in the target's schema, and
//! its run lock, a session-level advisory lock.

use sqlx::Row;
use sqlx::postgres::{PgConnection, PgPool};

use super::dialect::PgDialect;
use crate::checkpoint::lock::{Holder, Me, SessionLock, lock_key};
use crate::checkpoint::store::SqlStore;
use crate::db::postgres::PgClient;

/// A checkpoint store in a PostgreSQL schema (the target's).
pub type PgStore = SqlStore<PgDialect, PgClient>;

/// What the lock connection's `application_name` says: `rowshift SINCE PID@HOST`, cut to
/// PostgreSQL's 63 bytes (the host's end goes first).
fn application_name(me: &Me, since: &str) -> String {
    let mut name = format!("rowshift {since} {}@{}", me.pid, me.host);
    while name.len() > 63 {
        name.pop();
    }
    name
}

impl SessionLock for PgDialect {
    async fn open(&self, conn: &mut PgConnection, since: &str) -> sqlx::Result<()> {
        sqlx::query("SELECT set_config('application_name', $1, false)")
            .bind(application_name(&Me::now(), since))
            .execute(conn)
            .await
            .map(|_| ())
    }

    async fn try_lock(
        &self,
        conn: &mut PgConnection,
        schema: &str,
        pipeline: &str,
    ) -> sqlx::Result<bool> {
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(lock_key(schema, pipeline))
            .fetch_one(conn)
            .await
    }

    /// The session holding the advisory lock, from its `application_name` when it is a
    /// rowshift run's, else by its backend pid and start.
    async fn holder(
        &self,
        pool: &PgPool,
        schema: &str,
        pipeline: &str,
    ) -> sqlx::Result<Option<Holder>> {
        let bits = lock_key(schema, pipeline) as u64;
        let row = sqlx::query(
            "SELECT a.application_name, \
                    to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                    a.pid, coalesce(host(a.client_addr), 'a local socket') \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND l.classid::bigint = $1 AND l.objid::bigint = $2",
        )
        .bind((bits >> 32) as i64)
        .bind((bits & 0xffff_ffff) as i64)
        .fetch_optional(pool)
        .await?;
        Ok(row.map(|r| {
            let app: Option<String> = r.get(0);
            let parts: Vec<&str> = app.as_deref().unwrap_or("").splitn(3, ' ').collect();
            match parts.as_slice() {
                ["rowshift", since, who] if who.contains('@') => {
                    let (pid, host) = who.split_once('@').unwrap_or((who, ""));
                    Holder {
                        host: host.to_string(),
                        pid: pid.parse().ok(),
                        since: since.to_string(),
                    }
                }
                _ => Holder {
                    host: format!(
                        "PostgreSQL backend {} (from {})",
                        r.get::<i32, _>(2),
                        r.get::<String, _>(3)
                    ),
                    pid: None,
                    since: r.get::<Option<String>, _>(1).unwrap_or_default(),
                },
            }
        }))
    }

    async fn still_held(&self, conn: &mut PgConnection, _schema: &str, _pipeline: &str) -> bool {
        sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(conn)
            .await
            .is_ok()
    }

    async fn unlock(&self, conn: &mut PgConnection, schema: &str, pipeline: &str) {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(lock_key(schema, pipeline))
            .execute(conn)
            .await;
    }
}
