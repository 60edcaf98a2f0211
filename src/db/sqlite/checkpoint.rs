//! The SQLite checkpoint store: the shared [`Tables`] in a SQLite file (the state
//! directory's, or the target database), with a lease for its run lock and, in a target,
//! the sink's ledger for its writes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{Connection, Row};

use super::dialect::SqliteDialect;
use crate::checkpoint::CLAIM_LOST;
use crate::checkpoint::lock::{self, Holder, Me, RunLock, Try};
use crate::checkpoint::sql;
use crate::checkpoint::tables::{Tables, statement_writes};
use crate::checkpoint::{Checkpoint, CheckpointStore, DoneMark, unix_ms};
use crate::chunk::Chunk;
use crate::config::show_path;
use crate::db::sqlite::errors::error as db_error;
use crate::db::sqlite::{Access, connect, connect_async};
use crate::runtime::IoRuntime;
use crate::sql::dialect::{Driver, Stmt};
use crate::{Error, Result};

/// The lease that stands for a run lock: one row per pipeline, naming the process that
/// holds it and when its keeper last renewed it.
const LEASES: &str = "CREATE TABLE IF NOT EXISTS \"_rowshift_locks\" (
        pipeline TEXT PRIMARY KEY,
        token TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started INTEGER,
        since TEXT NOT NULL,
        heartbeat REAL NOT NULL)";

/// The checkpoint tables of `pipeline` in a SQLite file.
pub fn tables(pipeline: &str) -> Tables<SqliteDialect> {
    Tables::new(SqliteDialect, "", pipeline)
}

/// A checkpoint store in a SQLite file: the state directory's, or the target database.
pub struct SqliteStore {
    path: PathBuf,
    tables: Tables<SqliteDialect>,
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
            tables: tables(pipeline),
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

    fn pipeline(&self) -> &str {
        self.tables.pipeline()
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
            let mut conn = pool.acquire().await.map_err(|e| db_error(&here, e))?;
            self.tables
                .create_tables(&mut conn)
                .await
                .map_err(|e| db_error(&here, e))
        })?;
        Ok(self.pool.get_or_init(|| pool))
    }

    fn exec(&self, stmt: Stmt) -> Result<u64> {
        let pool = self.pool()?;
        let here = self.here();
        self.io.block_on(async {
            let mut conn = pool.acquire().await.map_err(|e| db_error(&here, e))?;
            let _writing = self.writing(&mut conn).await?;
            sqlx::Sqlite::execute(&mut conn, stmt)
                .await
                .map_err(|e| db_error(&here, e))
        })
    }
}

/// A checkpoint write handed to a [`Ledger`].
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A chunk was claimed under a token at a time (ms): it is running, one attempt
    /// more.
    Claim(usize, u64, i64),
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
    tables: Tables<SqliteDialect>,
    io: IoRuntime,
    /// The target's write lock, shared with its sink.
    lock: Arc<tokio::sync::Mutex<()>>,
    /// The ledger's own connection, for the tasks that write hand-overs.
    pool: OnceLock<SqlitePool>,
    queue: std::sync::Mutex<Vec<Entry>>,
    /// Chunks whose done mark was refused: another run had claimed them.
    lost: std::sync::Mutex<Vec<usize>>,
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
            tables: tables(pipeline),
            io: io.clone(),
            lock,
            pool: OnceLock::new(),
            queue: std::sync::Mutex::new(Vec::new()),
            lost: std::sync::Mutex::new(Vec::new()),
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
        let mut conn = pool.acquire().await.map_err(|e| db_error(self.here(), e))?;
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
        let mut lost = Vec::new();
        let written = async {
            let mut tx = conn.begin().await?;
            for entry in &entries {
                match entry {
                    // A chunk found done is not claimed; its done mark, with this
                    // claim's token, is then refused.
                    Entry::Claim(chunk, token, at) => {
                        sqlx::Sqlite::execute(&mut tx, self.tables.claim(*chunk, *token, *at))
                            .await?;
                    }
                    Entry::Done(mark) => {
                        if sqlx::Sqlite::execute(&mut tx, self.tables.done(mark)).await? != 1 {
                            lost.push(mark.chunk);
                        }
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
            return Err(db_error(here, e));
        }
        self.lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(lost);
        Ok(())
    }

    /// Writes what is queued now, waiting for the write lock.
    pub fn flush(&self) -> Result<()> {
        self.io.block_on(async {
            let _writing = self.lock.lock().await;
            self.write_own().await
        })
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
        let lost = std::mem::take(&mut *self.lost.lock().unwrap_or_else(|p| p.into_inner()));
        if written.is_ok() && !lost.is_empty() {
            let ids: Vec<String> = lost.iter().map(|c| c.to_string()).collect();
            return Err(Error::Unsupported(format!(
                "{}: chunks {} were written and read back, but {CLAIM_LOST}, so they were not marked done; the run that holds them redoes them",
                self.here(),
                ids.join(", ")
            )));
        }
        written.map_err(|e| {
            let done: Vec<String> = self
                .queue()
                .iter()
                .filter_map(|entry| match entry {
                    Entry::Done(mark) => Some(mark.chunk.to_string()),
                    Entry::Claim(..) => None,
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
    /// The live holder of the pipeline's lease as `pool` reads it.
    fn holder_from(&self, pool: &SqlitePool) -> Result<Option<Holder>> {
        let here = self.here();
        let me = Me::now();
        self.io.block_on(async {
            let has: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM sqlite_master WHERE name = '_rowshift_locks'",
            )
            .fetch_one(pool)
            .await
            .map_err(|e| db_error(&here, e))?;
            if has == 0 {
                return Ok(None);
            }
            let mut conn = pool.acquire().await.map_err(|e| db_error(&here, e))?;
            Ok(read_lease(&mut conn, &here, self.pipeline())
                .await?
                .filter(|l| l.live(&me))
                .map(|l| l.holder()))
        })
    }

    /// The checkpoint as `pool` reads it.
    fn load_from(&self, pool: &SqlitePool) -> Result<Option<Checkpoint>> {
        let here = self.here();
        self.io.block_on(async {
            let mut conn = pool.acquire().await.map_err(|e| db_error(&here, e))?;
            self.tables.load(&mut conn, &here).await
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
        self.io.block_on(async {
            let mut conn = pool.acquire().await.map_err(|e| db_error(&here, e))?;
            let _writing = self.writing(&mut conn).await?;
            self.tables
                .create(&mut conn, &here, fingerprint, settings, chunks)
                .await
        })
    }

    fn lock(&self, wait: Duration, waiting: &mut dyn FnMut(&Holder)) -> Result<RunLock> {
        // The lease has a connection of its own: it outlives the store's, which closes
        // before the sink finishes. Runs that start together may find the new file
        // locked while one of them turns on its write-ahead log.
        until_unlocked(&self.here(), || self.pool().map(|_| ()))?;
        let pool = until_unlocked(&self.here(), || {
            connect(&self.io, &self.path, Access::Write, 1)
        })?;
        let here = self.here();
        let me = Me::now();
        let token = sql::hex(lock::token());
        let what = format!("pipeline {} ({})", self.pipeline(), here);
        let taken = lock::acquire(&what, wait, waiting, || {
            self.io.block_on(async {
                let mut conn = pool.acquire().await.map_err(|e| db_error(&here, e))?;
                let _writing = self.writing(&mut conn).await?;
                take_lease(&mut conn, &here, self.pipeline(), &me, &token).await
            })
        });
        if let Err(e) = taken {
            self.io.block_on(pool.close());
            return Err(e);
        }
        let (io, ledger, pipeline) = (
            self.io.clone(),
            self.ledger.clone(),
            self.pipeline().to_string(),
        );
        let (beat_pool, beat_io, beat_token, beat_pipeline) =
            (pool.clone(), io.clone(), token.clone(), pipeline.clone());
        let beat = move |_: &mut ()| {
            beat_io.block_on(async {
                let _writing = match &ledger {
                    Some(l) => Some(l.lock.lock().await),
                    None => None,
                };
                sqlx::query(
                    "UPDATE \"_rowshift_locks\" SET heartbeat = ? WHERE pipeline = ? AND token = ?",
                )
                .bind(lock::unix_now())
                .bind(beat_pipeline.clone())
                .bind(beat_token.clone())
                .execute(&beat_pool)
                .await
                .is_ok_and(|r| r.rows_affected() == 1)
            })
        };
        let release = move |()| {
            io.block_on(async {
                let _ =
                    sqlx::query("DELETE FROM \"_rowshift_locks\" WHERE pipeline = ? AND token = ?")
                        .bind(pipeline)
                        .bind(token)
                        .execute(&pool)
                        .await;
                pool.close().await;
            })
        };
        Ok(RunLock::kept((), beat, release))
    }

    fn holder(&self) -> Result<Option<Holder>> {
        if !self.path.exists() {
            return Ok(None);
        }
        let pool = match self.pool.get() {
            Some(p) => p.clone(),
            None => connect(&self.io, &self.path, Access::Read, 1)?,
        };
        let found = match self.holder_from(&pool) {
            // As in `load`: a file a killed run left may need a writer to open it.
            Err(Error::Database {
                source: sqlx::Error::Database(db),
                ..
            }) if self.pool.get().is_none() && needs_recovery(db.code().as_deref()) => {
                let pool = connect(&self.io, &self.path, Access::Write, 1)?;
                let found = self.holder_from(&pool);
                self.io.block_on(pool.close());
                found
            }
            other => other,
        };
        if self.pool.get().is_none() {
            self.io.block_on(pool.close());
        }
        found
    }

    fn claim(&self, chunk: usize, token: u64) -> Result<bool> {
        if let Some(ledger) = &self.ledger {
            // Claims never wait for the target's write lock (see `Ledger`); a chunk found
            // done when it is written has its done mark refused, which rolls back its
            // rows.
            ledger.hand_over(Entry::Claim(chunk, token, unix_ms()));
            return Ok(true);
        }
        Ok(self.exec(self.tables.claim(chunk, token, unix_ms()))? == 1)
    }

    fn finish(&self, mark: &DoneMark) -> Result<()> {
        let pool = self.pool()?;
        let here = self.here();
        self.io.block_on(async {
            let mut conn = pool.acquire().await.map_err(|e| db_error(&here, e))?;
            let _writing = self.writing(&mut conn).await?;
            self.tables.mark_done(&mut conn, &here, mark).await
        })
    }

    fn flush(&self) -> Result<()> {
        match &self.ledger {
            Some(ledger) => ledger.flush(),
            None => Ok(()),
        }
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

    statement_writes!();

    fn discard(&self) -> Result<()> {
        if !self.path.exists() {
            return Ok(());
        }
        for forget in self.tables.discard() {
            self.exec(forget)?;
        }
        Ok(())
    }
}

/// How long opening a SQLite file is tried again while another process holds a lock
/// that SQLite's busy handler does not wait for (turning on the write-ahead log).
const OPEN_PATIENCE: Duration = Duration::from_secs(10);

/// Runs `open` until it does not fail on a locked file, for up to [`OPEN_PATIENCE`];
/// then fails, saying what it waited for.
fn until_unlocked<T>(here: &str, mut open: impl FnMut() -> Result<T>) -> Result<T> {
    let start = std::time::Instant::now();
    loop {
        match open() {
            Err(e) if e.is_transient() && start.elapsed() < OPEN_PATIENCE => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) if e.is_transient() => {
                return Err(Error::Unsupported(format!(
                    "{here}: the file stayed locked by another process for {}s while this run opened it: {e}",
                    OPEN_PATIENCE.as_secs()
                )));
            }
            other => return other,
        }
    }
}

/// A pipeline's lease as stored.
struct Lease {
    token: String,
    host: String,
    pid: u32,
    started: Option<u64>,
    since: String,
    heartbeat: f64,
}

impl Lease {
    /// Whether the process holding it runs: on this host, whether the process (with the
    /// same start time) still exists; elsewhere, whether its heartbeat is recent.
    fn live(&self, me: &Me) -> bool {
        let fresh = lock::unix_now() - self.heartbeat < lock::LEASE_EXPIRY.as_secs_f64();
        match self.host == me.host {
            true => lock::alive(self.pid, self.started).unwrap_or(fresh),
            false => fresh,
        }
    }

    fn holder(&self) -> Holder {
        Holder {
            host: self.host.clone(),
            pid: Some(self.pid),
            since: self.since.clone(),
        }
    }
}

async fn read_lease(
    conn: &mut SqliteConnection,
    here: &str,
    pipeline: &str,
) -> Result<Option<Lease>> {
    let row = sqlx::query(
        "SELECT token, host, pid, started, since, heartbeat FROM \"_rowshift_locks\" WHERE pipeline = ?",
    )
    .bind(pipeline.to_string())
    .fetch_optional(conn)
    .await
    .map_err(|e| db_error(here, e))?;
    Ok(row.map(|r| Lease {
        token: r.get(0),
        host: r.get(1),
        pid: r.get::<i64, _>(2) as u32,
        started: r.get::<Option<i64>, _>(3).map(|s| s as u64),
        since: r.get(4),
        heartbeat: r.get(5),
    }))
}

/// One try at `pipeline`'s lease: taken when there is none or its holder is gone, each
/// write a compare-and-set on what was read, so two runs never both take it.
async fn take_lease(
    conn: &mut SqliteConnection,
    here: &str,
    pipeline: &str,
    me: &Me,
    token: &str,
) -> Result<Try<()>> {
    let db = |e| db_error(here, e);
    sqlx::query(LEASES).execute(&mut *conn).await.map_err(db)?;
    for _ in 0..3 {
        let found = read_lease(conn, here, pipeline).await?;
        let sql = match &found {
            Some(l) if l.live(me) => return Ok(Try::Held(l.holder())),
            Some(_) => {
                "UPDATE \"_rowshift_locks\" SET token = ?, host = ?, pid = ?, started = ?, since = ?, heartbeat = ? WHERE pipeline = ? AND token = ?"
            }
            None => {
                "INSERT INTO \"_rowshift_locks\" (token, host, pid, started, since, heartbeat, pipeline) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (pipeline) DO NOTHING"
            }
        };
        let mut q = sqlx::query(sql)
            .bind(token.to_string())
            .bind(me.host.clone())
            .bind(me.pid as i64)
            .bind(me.started.map(|s| s as i64))
            .bind(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .bind(lock::unix_now())
            .bind(pipeline.to_string());
        if let Some(l) = &found {
            q = q.bind(l.token.clone());
        }
        if q.execute(&mut *conn).await.map_err(db)?.rows_affected() == 1 {
            return Ok(Try::Taken(()));
        }
    }
    // Taken by another run between each read and write: it is live.
    match read_lease(conn, here, pipeline).await? {
        Some(l) => Ok(Try::Held(l.holder())),
        None => Err(Error::Internal(format!(
            "{here}: the lease of pipeline {pipeline} kept changing while this run tried to take it"
        ))),
    }
}
