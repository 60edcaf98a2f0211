//! The SQLite checkpoint store.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqlitePool};

use super::{Checkpoint, CheckpointStore, ChunkRecord, ChunkState, DoneMark};
use crate::check::ChunkCounts;
use crate::config::show_path;
use crate::db::IoRuntime;
use crate::db::sqlite::{Access, connect};
use crate::plan::Chunk;
use crate::{Error, Result};

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS \"_rowshift_runs\" (
        pipeline TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        settings TEXT NOT NULL,
        created_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS \"_rowshift_chunks\" (
        pipeline TEXT NOT NULL,
        id INTEGER NOT NULL,
        chunk TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        rows_read INTEGER NOT NULL DEFAULT 0,
        rows_written INTEGER NOT NULL DEFAULT 0,
        rows_filtered INTEGER NOT NULL DEFAULT 0,
        rows_rejected INTEGER NOT NULL DEFAULT 0,
                seconds REAL NOT NULL DEFAULT 0,
        checksum TEXT,
        last_error TEXT,
        PRIMARY KEY (pipeline, id))",
];

/// Columns added to `_rowshift_chunks` after its first release, with their declarations.
/// A store opened for writing adds the ones it lacks; one read as it is reads NULL for them.
const ADDED_COLUMNS: &[(&str, &str)] = &[("checksum", "TEXT")];

/// The columns `_rowshift_chunks` has.
async fn chunk_columns(pool: &SqlitePool, here: &str) -> Result<Vec<String>> {
    let rows = sqlx::query("SELECT name FROM pragma_table_info('_rowshift_chunks')")
        .fetch_all(pool)
        .await
        .map_err(|e| Error::db(here, e))?;
    Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
}

/// A checkpoint store in a SQLite file: the state directory's, or the target database.
pub struct SqliteStore {
    path: PathBuf,
    pipeline: String,
    io: IoRuntime,
    pool: OnceLock<SqlitePool>,
    /// The lock of the sink writing the same file, held for each write here: SQLite has
    /// one writer per file, and one waiting in SQLite's busy handler sleeps in steps of
    /// up to 100 ms after the other is done.
    lock: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl SqliteStore {
    /// A store for `pipeline` in the database file at `path`. Touches nothing until written.
    pub fn new(path: &Path, pipeline: &str, io: &IoRuntime) -> Self {
        SqliteStore {
            path: path.to_path_buf(),
            pipeline: pipeline.to_string(),
            io: io.clone(),
            pool: OnceLock::new(),
            lock: None,
        }
    }

    /// The store, taking `lock` for each write (a SQLite target's own write lock).
    pub fn sharing_lock(mut self, lock: Arc<tokio::sync::Mutex<()>>) -> Self {
        self.lock = Some(lock);
        self
    }

    /// The shared write lock, if there is one, to hold while writing.
    async fn writing(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.lock {
            Some(l) => Some(l.lock().await),
            None => None,
        }
    }

    fn here(&self) -> String {
        format!("checkpoint sqlite://{}", show_path(&self.path))
    }

    fn pool(&self) -> Result<&SqlitePool> {
        if let Some(p) = self.pool.get() {
            return Ok(p);
        }
        let pool = connect(&self.io, &self.path, Access::Write, 1)?;
        let here = self.here();
        self.io.block_on(async {
            for s in SCHEMA {
                sqlx::query(*s)
                    .execute(&pool)
                    .await
                    .map_err(|e| Error::db(&here, e))?;
            }
            // A store written by an older rowshift: add what it lacks, keep its rows.
            let have = chunk_columns(&pool, &here).await?;
            for (name, decl) in ADDED_COLUMNS {
                if !have.iter().any(|h| h == name) {
                    sqlx::query(crate::db::stmt(format!(
                        "ALTER TABLE \"_rowshift_chunks\" ADD COLUMN {name} {decl}"
                    )))
                    .execute(&pool)
                    .await
                    .map_err(|e| Error::db(&here, e))?;
                }
            }
            Ok::<_, Error>(())
        })?;
        Ok(self.pool.get_or_init(|| pool))
    }

    fn exec(&self, sql: &'static str, binds: &[Bind<'_>]) -> Result<u64> {
        let pool = self.pool()?;
        let here = self.here();
        self.io.block_on(async {
            let _writing = self.writing().await;
            let mut q = sqlx::query(sql);
            for b in binds {
                q = match b {
                    Bind::Int(i) => q.bind(*i),
                    Bind::Text(s) => q.bind(s.to_string()),
                };
            }
            q.execute(pool)
                .await
                .map(|r| r.rows_affected())
                .map_err(|e| Error::db(&here, e))
        })
    }
}

enum Bind<'a> {
    Int(i64),
    Text(&'a str),
}

/// Marks a chunk done on `conn`: inside the sink's own transaction when the store lives
/// in the target, so rows and mark commit together.
pub async fn mark_done(
    conn: &mut SqliteConnection,
    pipeline: &str,
    mark: &DoneMark,
) -> sqlx::Result<u64> {
    let c = &mark.counts;
    sqlx::query(
        "UPDATE \"_rowshift_chunks\" SET state = 'done', rows_read = ?, rows_written = ?, rows_filtered = ?, \
         rows_rejected = ?, seconds = ?, checksum = ?, last_error = NULL WHERE pipeline = ? AND id = ?",
    )
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

impl SqliteStore {
    /// The checkpoint as `pool` reads it.
    fn load_from(&self, pool: &SqlitePool) -> Result<Option<Checkpoint>> {
        let here = self.here();
        let pool = pool.clone();
        self.io.block_on(async {
            let has: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE name = '_rowshift_runs'")
                .fetch_one(&pool)
                .await
                .map_err(|e| Error::db(&here, e))?;
            if has == 0 {
                return Ok(None);
            }
            let Some(run) = sqlx::query("SELECT fingerprint, settings, created_at FROM \"_rowshift_runs\" WHERE pipeline = ?")
                .bind(self.pipeline.clone())
                .fetch_optional(&pool)
                .await
                .map_err(|e| Error::db(&here, e))?
            else {
                return Ok(None);
            };
            let settings: String = run.get(1);
            let have = chunk_columns(&pool, &here).await?;
            let checksum = if have.iter().any(|c| c == "checksum") { "checksum" } else { "NULL" };
            let rows = sqlx::query(crate::db::stmt(format!(
                "SELECT chunk, state, attempts, rows_read, rows_written, rows_filtered, rows_rejected, seconds, last_error, {checksum} \
                 FROM \"_rowshift_chunks\" WHERE pipeline = ? ORDER BY id"
            )))
            .bind(self.pipeline.clone())
            .fetch_all(&pool)
            .await
            .map_err(|e| Error::db(&here, e))?;
            let corrupt = |what: &str| Error::data(&here, format!("the checkpoint is unreadable ({what}); run with --restart"));
            let mut chunks = Vec::with_capacity(rows.len());
            for r in rows {
                let chunk: Chunk = serde_json::from_str(r.get::<&str, _>(0)).map_err(|_| corrupt("chunk range"))?;
                let state = ChunkState::parse(r.get::<&str, _>(1)).ok_or_else(|| corrupt("chunk state"))?;
                let n = |i: usize| r.get::<i64, _>(i) as u64;
                chunks.push(ChunkRecord {
                    chunk,
                    state,
                    attempts: r.get::<i64, _>(2) as u32,
                    counts: ChunkCounts { read: n(3), written: n(4), filtered: n(5), rejected: n(6) },
                                        seconds: r.get(7),
                    last_error: r.get(8),
                    checksum: r.get::<Option<&str>, _>(9).and_then(|h| u64::from_str_radix(h, 16).ok()).unwrap_or(0),
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
}

/// Whether SQLite refused a read-only connection because the file needs recovery
/// first: a hot rollback journal (`SQLITE_READONLY_ROLLBACK`), a WAL to recover
/// (`SQLITE_READONLY_RECOVERY`) or a WAL index it cannot create
/// (`SQLITE_READONLY_CANTINIT`).
fn needs_recovery(code: Option<&str>) -> bool {
    matches!(code, Some("776" | "1032" | "1288"))
}

impl CheckpointStore for SqliteStore {
    fn describe(&self) -> String {
        self.here()
    }

    fn load(&self) -> Result<Option<Checkpoint>> {
        if !self.path.exists() {
            return Ok(None);
        }
        let pool = match self.pool.get() {
            Some(p) => p.clone(),
            None => connect(&self.io, &self.path, Access::Read, 1)?,
        };
        match self.load_from(&pool) {
            // A run killed mid-transaction leaves a journal that only a writer may roll
            // back, so a read-only look (`status` right after a crash) is refused. Opening
            // the file for writing rolls the unfinished transaction back, as the next run
            // would; nothing committed changes.
            Err(Error::Database {
                source: sqlx::Error::Database(db),
                ..
            }) if self.pool.get().is_none() && needs_recovery(db.code().as_deref()) => {
                let pool = connect(&self.io, &self.path, Access::Write, 1)?;
                let loaded = self.load_from(&pool);
                self.io.block_on(pool.close());
                loaded
            }
            other => other,
        }
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
        self.io.block_on(async {
            let _writing = self.writing().await;
            let mut tx = pool.begin().await.map_err(|e| Error::db(&here, e))?;
            let p = self.pipeline.clone();
            let db = |e| Error::db(&here, e);
            sqlx::query("DELETE FROM \"_rowshift_chunks\" WHERE pipeline = ?").bind(p.clone()).execute(&mut *tx).await.map_err(db)?;
            sqlx::query("DELETE FROM \"_rowshift_runs\" WHERE pipeline = ?").bind(p.clone()).execute(&mut *tx).await.map_err(db)?;
            sqlx::query("INSERT INTO \"_rowshift_runs\" (pipeline, fingerprint, settings, created_at) VALUES (?, ?, ?, ?)")
                .bind(p.clone())
                .bind(fingerprint.to_string())
                .bind(settings)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            for c in chunks {
                let json = serde_json::to_string(c).map_err(|e| Error::Internal(e.to_string()))?;
                sqlx::query("INSERT INTO \"_rowshift_chunks\" (pipeline, id, chunk, state) VALUES (?, ?, ?, 'pending')")
                    .bind(p.clone())
                    .bind(c.id as i64)
                    .bind(json)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
            tx.commit().await.map_err(db)
        })
    }

    fn claim(&self, chunk: usize) -> Result<()> {
        let n = self.exec(
            "UPDATE \"_rowshift_chunks\" SET state = 'running', attempts = attempts + 1 WHERE pipeline = ? AND id = ?",
            &[Bind::Text(&self.pipeline), Bind::Int(chunk as i64)],
        )?;
        expect_one(n, chunk, &self.here())
    }

    fn finish(&self, mark: &DoneMark) -> Result<()> {
        let pool = self.pool()?;
        let here = self.here();
        let n = self.io.block_on(async {
            let _writing = self.writing().await;
            let mut conn = pool.acquire().await.map_err(|e| Error::db(&here, e))?;
            mark_done(&mut conn, &self.pipeline, mark)
                .await
                .map_err(|e| Error::db(&here, e))
        })?;
        expect_one(n, mark.chunk, &here)
    }

    fn close(&self) -> Result<()> {
        if let Some(pool) = self.pool.get() {
            self.io.block_on(pool.close());
        }
        Ok(())
    }

    fn fail(&self, chunk: usize, error: &str) -> Result<()> {
        let n = self.exec(
            "UPDATE \"_rowshift_chunks\" SET state = 'failed', last_error = ? WHERE pipeline = ? AND id = ?",
            &[Bind::Text(error), Bind::Text(&self.pipeline), Bind::Int(chunk as i64)],
        )?;
        expect_one(n, chunk, &self.here())
    }

    fn reset(&self, chunks: &[usize]) -> Result<()> {
        for &c in chunks {
            let n = self.exec(
                "UPDATE \"_rowshift_chunks\" SET state = 'pending' WHERE pipeline = ? AND id = ? AND state <> 'done'",
                &[Bind::Text(&self.pipeline), Bind::Int(c as i64)],
            )?;
            expect_one(n, c, &self.here())?;
        }
        Ok(())
    }

    fn redo(&self, chunks: &[usize]) -> Result<()> {
        for &c in chunks {
            self.exec(
                "UPDATE \"_rowshift_chunks\" SET state = 'pending' WHERE pipeline = ? AND id = ? AND state = 'done'",
                &[Bind::Text(&self.pipeline), Bind::Int(c as i64)],
            )?;
        }
        Ok(())
    }

    fn discard(&self) -> Result<()> {
        if !self.path.exists() {
            return Ok(());
        }
        self.exec(
            "DELETE FROM \"_rowshift_chunks\" WHERE pipeline = ?",
            &[Bind::Text(&self.pipeline)],
        )?;
        self.exec(
            "DELETE FROM \"_rowshift_runs\" WHERE pipeline = ?",
            &[Bind::Text(&self.pipeline)],
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
