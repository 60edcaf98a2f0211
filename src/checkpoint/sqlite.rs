//! The SQLite checkpoint store.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{Connection, Row};

use super::{Checkpoint, CheckpointStore, ChunkRecord, ChunkState, DoneMark};
use crate::check::ChunkCounts;
use crate::config::show_path;
use crate::db::IoRuntime;
use crate::db::sqlite::{Access, connect, connect_async};
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

/// Marks a chunk running and counts the attempt (pipeline, chunk id).
const CLAIM: &str = "UPDATE \"_rowshift_chunks\" SET state = 'running', attempts = attempts + 1 WHERE pipeline = ? AND id = ?";

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
    /// The ledger of the sink writing the same file, whose write lock every write here
    /// holds, and which takes claims so that they never wait for it.
    ledger: Option<Arc<Ledger>>,
}

impl SqliteStore {
    /// A store for `pipeline` in the database file at `path`. Touches nothing until written.
    pub fn new(path: &Path, pipeline: &str, io: &IoRuntime) -> Self {
        SqliteStore {
            path: path.to_path_buf(),
            pipeline: pipeline.to_string(),
            io: io.clone(),
            pool: OnceLock::new(),
            ledger: None,
        }
    }

    /// The store of a SQLite target, sharing its sink's `ledger`: each write here holds
    /// the sink's write lock and first writes what the ledger holds, and claims are
    /// handed to the ledger.
    pub fn with_ledger(mut self, ledger: Arc<Ledger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// Takes the shared write lock, if there is one, and writes what the ledger holds
    /// on `conn`, so that this write comes after them.
    async fn writing(
        &self,
        conn: &mut SqliteConnection,
    ) -> Result<Option<tokio::sync::MutexGuard<'_, ()>>> {
        let Some(ledger) = &self.ledger else {
            return Ok(None);
        };
        let guard = ledger.lock.lock().await;
        ledger.write_queued(conn).await?;
        Ok(Some(guard))
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
            let mut conn = pool.acquire().await.map_err(|e| Error::db(&here, e))?;
            let _writing = self.writing(&mut conn).await?;
            let mut q = sqlx::query(sql);
            for b in binds {
                q = match b {
                    Bind::Int(i) => q.bind(*i),
                    Bind::Text(s) => q.bind(s.to_string()),
                };
            }
            q.execute(&mut *conn)
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

/// A checkpoint write handed to a [`Ledger`].
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A chunk was claimed: it is running, one attempt more.
    Claim(usize),
    /// A chunk read back after its commit was found the same: it is done.
    Done(DoneMark),
}

/// Checkpoint writes that a SQLite target's workers hand over instead of waiting for the
/// file's one write lock, which another worker's insert may hold for a good part of a
/// second: claims, and the done marks of chunks read back after their commit. A worker
/// that waited would start its next chunk in step with the one inserting, and the lock
/// would then sit idle while both read; so bookkeeping never waits.
///
/// Entries are written in the order handed over, by whoever holds the lock next: a
/// chunk's commit writes them before its own transaction (so a claim lands before the
/// done mark that commits with the rows), a write of the store before its own, and each
/// hand-over starts a task on the I/O runtime that queues for the lock like the workers.
/// Until written, a claimed chunk still shows as pending and a verified one as running;
/// both are redone after a crash, which is what they should be. [`Ledger::close`] writes
/// what is left and fails if it cannot, naming the chunks whose marks are lost.
pub struct Ledger {
    path: PathBuf,
    pipeline: String,
    io: IoRuntime,
    /// The target's write lock, shared with its sink.
    lock: Arc<tokio::sync::Mutex<()>>,
    /// The ledger's own connection, for the tasks that write hand-overs.
    pool: OnceLock<SqlitePool>,
    queue: std::sync::Mutex<Vec<Entry>>,
}

impl Ledger {
    /// A ledger for `pipeline`'s checkpoint in the file at `path`, whose writers take
    /// `lock`.
    pub fn new(
        path: &Path,
        pipeline: &str,
        io: &IoRuntime,
        lock: Arc<tokio::sync::Mutex<()>>,
    ) -> Arc<Self> {
        Arc::new(Ledger {
            path: path.to_path_buf(),
            pipeline: pipeline.to_string(),
            io: io.clone(),
            lock,
            pool: OnceLock::new(),
            queue: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn here(&self) -> String {
        format!("checkpoint sqlite://{}", show_path(&self.path))
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `entry` to be written as soon as the write lock is free; returns at once.
    pub fn hand_over(self: &Arc<Self>, entry: Entry) {
        self.queue().push(entry);
        let ledger = Arc::clone(self);
        self.io.spawn(async move {
            let _writing = ledger.lock.lock().await;
            // A write that fails leaves its entries queued for the next one, and the
            // last, in `close`, reports it.
            let _ = ledger.write_own().await;
        });
    }

    /// Writes what is queued on the ledger's own connection; the caller holds the lock.
    async fn write_own(&self) -> Result<()> {
        if self.queue().is_empty() {
            return Ok(());
        }
        let pool = match self.pool.get() {
            Some(p) => p,
            None => {
                let pool = connect_async(&self.path, Access::Write, 1).await?;
                self.pool.get_or_init(|| pool)
            }
        };
        let mut conn = pool
            .acquire()
            .await
            .map_err(|e| Error::db(self.here(), e))?;
        self.write_queued(&mut conn).await
    }

    /// Writes what is queued on `conn`, in one transaction; the caller holds the write
    /// lock. Entries that could not be written stay queued, ahead of newer ones.
    pub async fn write_queued(&self, conn: &mut SqliteConnection) -> Result<()> {
        let entries = std::mem::take(&mut *self.queue());
        if entries.is_empty() {
            return Ok(());
        }
        let here = self.here();
        let written = async {
            let mut tx = conn.begin().await?;
            for entry in &entries {
                match entry {
                    Entry::Claim(chunk) => {
                        sqlx::query(CLAIM)
                            .bind(self.pipeline.clone())
                            .bind(*chunk as i64)
                            .execute(&mut *tx)
                            .await?;
                    }
                    Entry::Done(mark) => {
                        mark_done(&mut tx, &self.pipeline, mark).await?;
                    }
                }
            }
            tx.commit().await
        }
        .await;
        if let Err(e) = written {
            let mut queue = self.queue();
            let newer = std::mem::replace(&mut *queue, entries);
            queue.extend(newer);
            return Err(Error::db(here, e));
        }
        Ok(())
    }

    /// Writes what is left, once the workers are done, and closes the ledger's
    /// connection.
    pub fn close(&self) -> Result<()> {
        let written = self.io.block_on(async {
            let _writing = self.lock.lock().await;
            self.write_own().await
        });
        if let Some(pool) = self.pool.get() {
            self.io.block_on(pool.close());
        }
        written.map_err(|e| {
            let done: Vec<String> = self
                .queue()
                .iter()
                .filter_map(|entry| match entry {
                    Entry::Done(mark) => Some(mark.chunk.to_string()),
                    Entry::Claim(_) => None,
                })
                .collect();
            match done.is_empty() {
                true => e,
                false => Error::Unsupported(format!(
                    "{e}\nchunks {} were written and read back, but could not be marked done; the next run deletes and redoes them",
                    done.join(", ")
                )),
            }
        })
    }
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
            let mut conn = pool.acquire().await.map_err(|e| Error::db(&here, e))?;
            let _writing = self.writing(&mut conn).await?;
            let mut tx = conn.begin().await.map_err(|e| Error::db(&here, e))?;
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
        if let Some(ledger) = &self.ledger {
            ledger.hand_over(Entry::Claim(chunk));
            return Ok(());
        }
        let n = self.exec(
            CLAIM,
            &[Bind::Text(&self.pipeline), Bind::Int(chunk as i64)],
        )?;
        expect_one(n, chunk, &self.here())
    }

    fn finish(&self, mark: &DoneMark) -> Result<()> {
        let pool = self.pool()?;
        let here = self.here();
        let n = self.io.block_on(async {
            let mut conn = pool.acquire().await.map_err(|e| Error::db(&here, e))?;
            let _writing = self.writing(&mut conn).await?;
            mark_done(&mut conn, &self.pipeline, mark)
                .await
                .map_err(|e| Error::db(&here, e))
        })?;
        expect_one(n, mark.chunk, &here)
    }

    fn close(&self) -> Result<()> {
        let written = match &self.ledger {
            Some(ledger) => ledger.close(),
            None => Ok(()),
        };
        if let Some(pool) = self.pool.get() {
            self.io.block_on(pool.close());
        }
        written
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
