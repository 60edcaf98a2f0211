//! The PostgreSQL checkpoint store: `_rowshift_runs` and `_rowshift_chunks` in the target's
//! schema, so a chunk's rows and its done mark commit in one transaction.

use std::sync::{Arc, OnceLock};

use sqlx::Row;
use sqlx::postgres::{PgConnection, PgPool};

use super::{Checkpoint, CheckpointStore, ChunkRecord, ChunkState, DoneMark};
use crate::check::ChunkCounts;
use crate::db::postgres::{PgClient, qualified};
use crate::db::stmt;
use crate::plan::Chunk;
use crate::{Error, Result};

/// A checkpoint store in a PostgreSQL schema (the target's).
pub struct PgStore {
    client: Arc<PgClient>,
    schema: String,
    pipeline: String,
    ready: OnceLock<()>,
}

impl PgStore {
    /// A store for `pipeline` in `schema`. Touches nothing until written.
    pub fn new(client: Arc<PgClient>, schema: &str, pipeline: &str) -> Self {
        PgStore {
            client,
            schema: schema.to_string(),
            pipeline: pipeline.to_string(),
            ready: OnceLock::new(),
        }
    }

    fn here(&self) -> String {
        format!("checkpoint {} schema {}", self.client.shown, self.schema)
    }

    fn runs(&self) -> String {
        qualified(&self.schema, "_rowshift_runs")
    }

    fn chunks(&self) -> String {
        chunks_table(&self.schema)
    }

    /// The pool, with the store's tables created.
    fn pool(&self) -> Result<&PgPool> {
        let pool = self.client.pool()?;
        if self.ready.get().is_some() {
            return Ok(pool);
        }
        let here = self.here();
        let s = crate::db::quote_ident(&self.schema);
        let ddl = [
            format!("CREATE SCHEMA IF NOT EXISTS {s}"),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    pipeline text PRIMARY KEY,
                    fingerprint text NOT NULL,
                    settings text NOT NULL,
                    created_at text NOT NULL)",
                self.runs()
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    pipeline text NOT NULL,
                    id bigint NOT NULL,
                    chunk text NOT NULL,
                    state text NOT NULL,
                    attempts bigint NOT NULL DEFAULT 0,
                    rows_read bigint NOT NULL DEFAULT 0,
                    rows_written bigint NOT NULL DEFAULT 0,
                    rows_filtered bigint NOT NULL DEFAULT 0,
                    rows_rejected bigint NOT NULL DEFAULT 0,
                    seconds double precision NOT NULL DEFAULT 0,
                    checksum text,
                    last_error text,
                    PRIMARY KEY (pipeline, id))",
                self.chunks()
            ),
        ];
        self.client.io().block_on(async {
            for sql in ddl {
                // Two runs creating the schema at once may race; the second sees it exist.
                sqlx::query(stmt(sql))
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
            let mut q = sqlx::query(stmt(sql)).bind(self.pipeline.clone());
            if let Some(c) = chunk {
                q = q.bind(c);
            }
            if let Some(t) = text {
                q = q.bind(t.to_string());
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
    conn: &mut PgConnection,
    schema: &str,
    pipeline: &str,
    mark: &DoneMark,
) -> sqlx::Result<u64> {
    let c = &mark.counts;
    sqlx::query(stmt(format!(
        "UPDATE {} SET state = 'done', rows_read = $1, rows_written = $2, rows_filtered = $3, \
         rows_rejected = $4, seconds = $5, checksum = $6, last_error = NULL WHERE pipeline = $7 AND id = $8",
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

impl CheckpointStore for PgStore {
    fn describe(&self) -> String {
        self.here()
    }

    fn load(&self) -> Result<Option<Checkpoint>> {
        let pool = self.client.pool()?;
        let here = self.here();
        self.client.io().block_on(async {
            let db = |e| Error::db(&here, e);
            let has: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
                .bind(self.chunks())
                .fetch_one(pool)
                .await
                .map_err(db)?;
            if has.is_none() {
                return Ok(None);
            }
            let Some(run) = sqlx::query(stmt(format!(
                "SELECT fingerprint, settings, created_at FROM {} WHERE pipeline = $1",
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
                 FROM {} WHERE pipeline = $1 ORDER BY id",
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
                sqlx::query(stmt(format!("DELETE FROM {t} WHERE pipeline = $1")))
                    .bind(p.clone())
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
            sqlx::query(stmt(format!(
                "INSERT INTO {} (pipeline, fingerprint, settings, created_at) VALUES ($1, $2, $3, $4)",
                self.runs()
            )))
            .bind(p.clone())
            .bind(fingerprint.to_string())
            .bind(settings)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            let ids: Vec<i64> = chunks.iter().map(|c| c.id as i64).collect();
            let json = chunks
                .iter()
                .map(serde_json::to_string)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::Internal(e.to_string()))?;
            sqlx::query(stmt(format!(
                "INSERT INTO {} (pipeline, id, chunk, state) SELECT $1, id, chunk, 'pending' FROM unnest($2::bigint[], $3::text[]) AS u(id, chunk)",
                self.chunks()
            )))
            .bind(p)
            .bind(ids)
            .bind(json)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)
        })
    }

    fn claim(&self, chunk: usize) -> Result<()> {
        let n = self.exec(
            format!(
                "UPDATE {} SET state = 'running', attempts = attempts + 1 WHERE pipeline = $1 AND id = $2",
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
                "UPDATE {} SET state = 'failed', last_error = $3 WHERE pipeline = $1 AND id = $2",
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
                    "UPDATE {} SET state = 'pending' WHERE pipeline = $1 AND id = $2 AND state <> 'done'",
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
                    "UPDATE {} SET state = 'pending' WHERE pipeline = $1 AND id = $2 AND state = 'done'",
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
            format!("DELETE FROM {} WHERE pipeline = $1", self.chunks()),
            None,
            None,
        )?;
        self.exec(
            format!("DELETE FROM {} WHERE pipeline = $1", self.runs()),
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
