//! The MySQL/MariaDB checkpoint store: `_rowshift_runs` and `_rowshift_chunks` in the
//! target's database, so a chunk's rows and its done mark commit in one transaction.

use std::sync::{Arc, OnceLock};

use sqlx::Row;
use sqlx::mysql::{MySqlConnection, MySqlPool};

use super::{Checkpoint, CheckpointStore, ChunkRecord, ChunkState, DoneMark};
use crate::check::ChunkCounts;
use crate::db::mysql::{MyClient, qualified, table_columns};
use crate::db::stmt;
use crate::plan::Chunk;
use crate::{Error, Result};

/// A checkpoint store in a MySQL database (the target's).
pub struct MyStore {
    client: Arc<MyClient>,
    schema: String,
    pipeline: String,
    ready: OnceLock<()>,
}

impl MyStore {
    /// A store for `pipeline` in `schema`. Touches nothing until written.
    pub fn new(client: Arc<MyClient>, schema: &str, pipeline: &str) -> Self {
        MyStore {
            client,
            schema: schema.to_string(),
            pipeline: pipeline.to_string(),
            ready: OnceLock::new(),
        }
    }

    fn here(&self) -> String {
        format!("checkpoint {} database {}", self.client.shown, self.schema)
    }

    fn runs(&self) -> String {
        qualified(&self.schema, "_rowshift_runs")
    }

    fn chunks(&self) -> String {
        chunks_table(&self.schema)
    }

    /// The pool, with the store's tables created.
    fn pool(&self) -> Result<&MySqlPool> {
        let pool = self.client.pool()?;
        if self.ready.get().is_some() {
            return Ok(pool);
        }
        let here = self.here();
        let s = crate::db::mysql::quote(&self.schema);
        let ddl = [
            format!("CREATE DATABASE IF NOT EXISTS {s} DEFAULT CHARACTER SET utf8mb4"),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    pipeline VARCHAR(255) PRIMARY KEY,
                    fingerprint LONGTEXT NOT NULL,
                    settings LONGTEXT NOT NULL,
                    created_at VARCHAR(64) NOT NULL
                ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
                self.runs()
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    pipeline VARCHAR(255) NOT NULL,
                    id BIGINT NOT NULL,
                    chunk LONGTEXT NOT NULL,
                    state VARCHAR(16) NOT NULL,
                    attempts BIGINT NOT NULL DEFAULT 0,
                    rows_read BIGINT NOT NULL DEFAULT 0,
                    rows_written BIGINT NOT NULL DEFAULT 0,
                    rows_filtered BIGINT NOT NULL DEFAULT 0,
                    rows_rejected BIGINT NOT NULL DEFAULT 0,
                    seconds DOUBLE NOT NULL DEFAULT 0,
                    checksum VARCHAR(16),
                    last_error LONGTEXT,
                    PRIMARY KEY (pipeline, id)
                ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
                self.chunks()
            ),
        ];
        self.client.io().block_on(async {
            for sql in ddl {
                sqlx::raw_sql(stmt(sql))
                    .execute(pool)
                    .await
                    .map_err(|e| Error::db(&here, e))?;
            }
            Ok::<_, Error>(())
        })?;
        let _ = self.ready.set(());
        Ok(pool)
    }

    fn exec(&self, sql: String, chunk: Option<i64>, text: Option<&str>) -> Result<u64> {
        let pool = self.pool()?;
        let here = self.here();
        self.client.io().block_on(async {
            // Placeholders are positional: the text (only `fail` has one) comes first.
            let mut q = sqlx::query(stmt(sql));
            if let Some(t) = text {
                q = q.bind(t.to_string());
            }
            q = q.bind(self.pipeline.clone());
            if let Some(c) = chunk {
                q = q.bind(c);
            }
            q.execute(pool)
                .await
                .map(|r| r.rows_affected())
                .map_err(|e| Error::db(&here, e))
        })
    }
}

fn chunks_table(schema: &str) -> String {
    qualified(schema, "_rowshift_chunks")
}

/// Marks a chunk done on `conn`, inside the sink's transaction, so rows and mark commit
/// together.
pub async fn mark_done(
    conn: &mut MySqlConnection,
    schema: &str,
    pipeline: &str,
    mark: &DoneMark,
) -> sqlx::Result<u64> {
    let c = &mark.counts;
    sqlx::query(stmt(format!(
        "UPDATE {} SET state = 'done', rows_read = ?, rows_written = ?, rows_filtered = ?, \
         rows_rejected = ?, seconds = ?, checksum = ?, last_error = NULL WHERE pipeline = ? AND id = ?",
        chunks_table(schema)
    )))
    .bind(c.read as i64)
    .bind(c.written as i64)
    .bind(c.filtered as i64)
    .bind(c.rejected as i64)
    .bind(mark.seconds)
    .bind(format!("{:016x}", mark.checksum))
    .bind(pipeline.to_string())
    .bind(mark.chunk as i64)
    .execute(conn)
    .await
    .map(|r| r.rows_affected())
}

impl CheckpointStore for MyStore {
    fn describe(&self) -> String {
        self.here()
    }

    fn load(&self) -> Result<Option<Checkpoint>> {
        let pool = self.client.pool()?;
        let here = self.here();
        self.client.io().block_on(async {
            let db = |e| Error::db(&here, e);
            let has = table_columns(pool, &self.schema, "_rowshift_chunks", &here).await?;
            if has.is_none() {
                return Ok(None);
            }
            let Some(run) = sqlx::query(stmt(format!(
                "SELECT fingerprint, settings, created_at FROM {} WHERE pipeline = ?",
                self.runs()
            )))
            .bind(self.pipeline.clone())
            .fetch_optional(pool)
            .await
            .map_err(db)?
            else {
                return Ok(None);
            };
            let settings: String = run.get(1);
            let rows = sqlx::query(stmt(format!(
                "SELECT chunk, state, attempts, rows_read, rows_written, rows_filtered, rows_rejected, seconds, last_error, checksum \
                 FROM {} WHERE pipeline = ? ORDER BY id",
                self.chunks()
            )))
            .bind(self.pipeline.clone())
            .fetch_all(pool)
            .await
            .map_err(db)?;
            let corrupt = |what: &str| {
                Error::data(
                    &here,
                    format!("the checkpoint is unreadable ({what}); run with --restart"),
                )
            };
            let mut chunks = Vec::with_capacity(rows.len());
            for r in rows {
                let chunk: Chunk = serde_json::from_str(r.get::<&str, _>(0))
                    .map_err(|_| corrupt("chunk range"))?;
                let state = ChunkState::parse(r.get::<&str, _>(1))
                    .ok_or_else(|| corrupt("chunk state"))?;
                let n = |i: usize| r.get::<i64, _>(i) as u64;
                chunks.push(ChunkRecord {
                    chunk,
                    state,
                    attempts: r.get::<i64, _>(2) as u32,
                    counts: ChunkCounts {
                        read: n(3),
                        written: n(4),
                        filtered: n(5),
                        rejected: n(6),
                    },
                    seconds: r.get(7),
                    last_error: r.get(8),
                    checksum: r
                        .get::<Option<&str>, _>(9)
                        .and_then(|h| u64::from_str_radix(h, 16).ok())
                        .unwrap_or(0),
                });
            }
            Ok(Some(Checkpoint {
                fingerprint: run.get(0),
                settings: serde_json::from_str(&settings).map_err(|_| corrupt("settings"))?,
                created_at: run.get(2),
                chunks,
            }))
        })
    }

    fn create(
        &self,
        fingerprint: &str,
        settings: &[(String, String)],
        chunks: &[Chunk],
    ) -> Result<()> {
        let pool = self.pool()?;
        let here = self.here();
        let settings =
            serde_json::to_string(settings).map_err(|e| Error::Internal(e.to_string()))?;
        let now = chrono::Utc::now().to_rfc3339();
        self.client.io().block_on(async {
            let db = |e| Error::db(&here, e);
            let mut tx = pool.begin().await.map_err(db)?;
            let p = self.pipeline.clone();
            for t in [self.chunks(), self.runs()] {
                sqlx::query(stmt(format!("DELETE FROM {t} WHERE pipeline = ?")))
                    .bind(p.clone())
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
            sqlx::query(stmt(format!(
                "INSERT INTO {} (pipeline, fingerprint, settings, created_at) VALUES (?, ?, ?, ?)",
                self.runs()
            )))
            .bind(p.clone())
            .bind(fingerprint.to_string())
            .bind(settings)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            let json = chunks
                .iter()
                .map(serde_json::to_string)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::Internal(e.to_string()))?;
            for group in chunks.iter().zip(&json).collect::<Vec<_>>().chunks(1000) {
                let mut sql = format!(
                    "INSERT INTO {} (pipeline, id, chunk, state) VALUES ",
                    self.chunks()
                );
                sql.push_str(&vec!["(?, ?, ?, 'pending')"; group.len()].join(", "));
                let mut q = sqlx::query(stmt(sql));
                for (c, j) in group {
                    q = q.bind(p.clone()).bind(c.id as i64).bind(j.as_str());
                }
                q.execute(&mut *tx).await.map_err(db)?;
            }
            tx.commit().await.map_err(db)
        })
    }

    fn claim(&self, chunk: usize) -> Result<()> {
        let n = self.exec(
            format!(
                "UPDATE {} SET state = 'running', attempts = attempts + 1 WHERE pipeline = ? AND id = ?",
                self.chunks()
            ),
            Some(chunk as i64),
            None,
        )?;
        expect_one(n, chunk, &self.here())
    }

    fn finish(&self, mark: &DoneMark) -> Result<()> {
        let pool = self.pool()?;
        let here = self.here();
        let n = self.client.io().block_on(async {
            let mut conn = pool.acquire().await.map_err(|e| Error::db(&here, e))?;
            mark_done(&mut conn, &self.schema, &self.pipeline, mark)
                .await
                .map_err(|e| Error::db(&here, e))
        })?;
        expect_one(n, mark.chunk, &here)
    }

    fn fail(&self, chunk: usize, error: &str) -> Result<()> {
        let n = self.exec(
            format!(
                "UPDATE {} SET state = 'failed', last_error = ? WHERE pipeline = ? AND id = ?",
                self.chunks()
            ),
            Some(chunk as i64),
            Some(error),
        )?;
        expect_one(n, chunk, &self.here())
    }

    fn reset(&self, chunks: &[usize]) -> Result<()> {
        for &c in chunks {
            let n = self.exec(
                format!(
                    "UPDATE {} SET state = 'pending' WHERE pipeline = ? AND id = ? AND state <> 'done'",
                    self.chunks()
                ),
                Some(c as i64),
                None,
            )?;
            expect_one(n, c, &self.here())?;
        }
        Ok(())
    }

    fn redo(&self, chunks: &[usize]) -> Result<()> {
        for &c in chunks {
            self.exec(
                format!(
                    "UPDATE {} SET state = 'pending' WHERE pipeline = ? AND id = ? AND state = 'done'",
                    self.chunks()
                ),
                Some(c as i64),
                None,
            )?;
        }
        Ok(())
    }

    fn discard(&self) -> Result<()> {
        if self.load()?.is_none() {
            return Ok(());
        }
        self.exec(
            format!("DELETE FROM {} WHERE pipeline = ?", self.chunks()),
            None,
            None,
        )?;
        self.exec(
            format!("DELETE FROM {} WHERE pipeline = ?", self.runs()),
            None,
            None,
        )?;
        Ok(())
    }
}

fn expect_one(n: u64, chunk: usize, here: &str) -> Result<()> {
    if n == 1 {
        Ok(())
    } else {
        Err(Error::Internal(format!(
            "{here}: chunk {chunk} is not in the checkpoint (or not in a state that allows this)"
        )))
    }
}
