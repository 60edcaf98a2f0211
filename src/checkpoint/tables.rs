//! The checkpoint tables, `_rowshift_runs` and `_rowshift_chunks`, written once for every
//! SQL database over its [`Dialect`]: creating them (and adding the columns later
//! releases added), reading a run, recording a plan, and every statement that changes a
//! chunk's state. The stores ([`super::store::SqlStore`] for servers, SQLite's own) only
//! decide which connection each runs on.

use super::sql::{self, claim_lost, hex};
use super::{Checkpoint, ChunkRecord, ChunkState, DoneMark};
use crate::chunk::{Chunk, ChunkCounts};
use crate::sql::dialect::{Conn, Ddl, Dialect, Driver, Kind, Stmt, Value};
use crate::{Error, Result};

/// Columns added to `_rowshift_chunks` after its first release: a store opened for
/// writing adds the ones it lacks, and one read as it is reads NULL for them.
const ADDED_COLUMNS: &[(&str, Ddl)] = &[
    ("checksum", Ddl::ShortText),
    ("claim", Ddl::ShortText),
    ("worker", Ddl::Text),
    ("started_ms", Ddl::BigInt),
    ("finished_ms", Ddl::BigInt),
    ("verify_seconds", Ddl::Double),
    ("lease_ms", Ddl::BigInt),
];

/// The columns of `_rowshift_chunks` that [`Tables::load`] reads, in order; one that an
/// older store lacks reads as NULL.
const LOADED_COLUMNS: &[&str] = &[
    "chunk",
    "state",
    "attempts",
    "rows_read",
    "rows_written",
    "rows_filtered",
    "rows_rejected",
    "seconds",
    "last_error",
    "checksum",
    "worker",
    "started_ms",
    "finished_ms",
    "verify_seconds",
    "lease_ms",
];

/// Chunk rows recorded per statement: three values each, far below every database's
/// limit on bound parameters.
const CHUNKS_PER_INSERT: usize = 1000;

/// One pipeline's checkpoint tables in one schema.
#[derive(Debug, Clone)]
pub struct Tables<D: Dialect> {
    d: D,
    schema: String,
    pipeline: String,
}

impl<D: Dialect> Tables<D> {
    /// The tables of `pipeline` in `schema` (a MySQL database; ignored by SQLite).
    pub fn new(d: D, schema: &str, pipeline: &str) -> Self {
        Tables {
            d,
            schema: schema.to_string(),
            pipeline: pipeline.to_string(),
        }
    }

    /// The dialect.
    pub fn dialect(&self) -> &D {
        &self.d
    }

    /// The schema.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// `_rowshift_runs`, qualified.
    pub fn runs(&self) -> String {
        self.d.qualified(&self.schema, "_rowshift_runs")
    }

    /// `_rowshift_chunks`, qualified.
    pub fn chunks(&self) -> String {
        self.d.qualified(&self.schema, "_rowshift_chunks")
    }

    /// `_rowshift_workers`, qualified: the processes of shared runs.
    pub fn workers(&self) -> String {
        self.d.qualified(&self.schema, "_rowshift_workers")
    }

    fn p(&self) -> Value {
        Value::Text(self.pipeline.clone())
    }

    fn stmt(&self, sql: String, binds: Vec<Value>) -> Stmt {
        Stmt { sql, binds }
    }

    /// The statements that create the schema and the tables where they are missing.
    fn ddl(&self) -> Vec<String> {
        let t = |ty| self.d.ddl(ty);
        let opts = self.d.table_options();
        let mut out: Vec<String> = self.d.create_schema(&self.schema).into_iter().collect();
        out.push(format!(
            "CREATE TABLE IF NOT EXISTS {} (
                pipeline {} PRIMARY KEY,
                fingerprint {text} NOT NULL,
                settings {text} NOT NULL,
                created_at {text} NOT NULL){opts}",
            self.runs(),
            t(Ddl::KeyText),
            text = t(Ddl::Text),
        ));
        out.push(format!(
            "CREATE TABLE IF NOT EXISTS {} (
                pipeline {} NOT NULL,
                id {int} NOT NULL,
                chunk {text} NOT NULL,
                state {short} NOT NULL,
                attempts {int} NOT NULL DEFAULT 0,
                rows_read {int} NOT NULL DEFAULT 0,
                rows_written {int} NOT NULL DEFAULT 0,
                rows_filtered {int} NOT NULL DEFAULT 0,
                rows_rejected {int} NOT NULL DEFAULT 0,
                seconds {} NOT NULL DEFAULT 0,
                checksum {short},
                last_error {text},
                claim {short},
                worker {text},
                started_ms {int},
                finished_ms {int},
                verify_seconds {double},
                lease_ms {int},
                PRIMARY KEY (pipeline, id)){opts}",
            self.chunks(),
            t(Ddl::KeyText),
            t(Ddl::Double),
            int = t(Ddl::BigInt),
            text = t(Ddl::Text),
            short = t(Ddl::ShortText),
            double = t(Ddl::Double),
        ));
        out.push(format!(
            "CREATE TABLE IF NOT EXISTS {} (
                pipeline {key} NOT NULL,
                worker {key} NOT NULL,
                host {text} NOT NULL,
                pid {int} NOT NULL,
                started_ms {int} NOT NULL,
                heartbeat_ms {int} NOT NULL,
                state {short} NOT NULL,
                chunks_done {int} NOT NULL DEFAULT 0,
                rows_read {int} NOT NULL DEFAULT 0,
                rows_written {int} NOT NULL DEFAULT 0,
                PRIMARY KEY (pipeline, worker)){opts}",
            self.workers(),
            key = t(Ddl::KeyText),
            int = t(Ddl::BigInt),
            text = t(Ddl::Text),
            short = t(Ddl::ShortText),
        ));
        out
    }

    /// The key of the lock that keeps two sessions from creating this schema's
    /// checkpoint tables at once (see [`Dialect::ddl_lock`]).
    pub(crate) fn ddl_key(&self) -> i64 {
        super::lock::schema_ddl_key(&self.schema)
    }

    /// The columns `_rowshift_chunks` has (none: there is no such table).
    async fn chunk_columns(&self, conn: &mut Conn<D>) -> sqlx::Result<Vec<String>> {
        let listed = Stmt {
            sql: self.d.params(self.d.columns_sql()),
            binds: vec![Value::from(self.schema.as_str()), "_rowshift_chunks".into()],
        };
        let rows = D::Db::fetch(conn, listed, &[Kind::Text]).await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| r.into_iter().next().and_then(Value::text))
            .collect())
    }

    /// Creates what is missing of the schema and the tables on `conn` (in a transaction
    /// where the dialect serializes such creations), and adds the columns an older
    /// store lacks, keeping its rows.
    pub async fn create_tables(&self, conn: &mut Conn<D>) -> sqlx::Result<()> {
        if let Some(lock) = self.d.ddl_lock(self.ddl_key()) {
            D::Db::execute_raw(conn, lock).await?;
        }
        for sql in self.ddl() {
            D::Db::execute_raw(conn, sql).await?;
        }
        let have = self.chunk_columns(conn).await?;
        for (name, ty) in ADDED_COLUMNS {
            if !have.iter().any(|h| h == name) {
                let sql = format!(
                    "ALTER TABLE {} ADD COLUMN {name} {}",
                    self.chunks(),
                    self.d.ddl(*ty)
                );
                D::Db::execute_raw(conn, sql).await?;
            }
        }
        Ok(())
    }

    /// The recorded run, read on `conn` (`here` names the store). Creates nothing.
    pub async fn load(&self, conn: &mut Conn<D>, here: &str) -> Result<Option<Checkpoint>> {
        let db = |e| self.d.error(here, e);
        let have = self.chunk_columns(conn).await.map_err(db)?;
        if have.is_empty() {
            return Ok(None);
        }
        let run = self.stmt(
            self.d.params(&format!(
                "SELECT fingerprint, settings, created_at FROM {} WHERE pipeline = ?",
                self.runs()
            )),
            vec![self.p()],
        );
        let text3 = [Kind::Text; 3];
        let Some(run) = D::Db::fetch(conn, run, &text3)
            .await
            .map_err(db)?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let columns: Vec<&str> = LOADED_COLUMNS
            .iter()
            .map(|c| match have.iter().any(|h| h == c) {
                true => *c,
                false => "NULL",
            })
            .collect();
        let rows = self.stmt(
            self.d.params(&format!(
                "SELECT {} FROM {} WHERE pipeline = ? ORDER BY id",
                columns.join(", "),
                self.chunks()
            )),
            vec![self.p()],
        );
        use Kind::{Int, Real, Text};
        let kinds = [
            Text, Text, Int, Int, Int, Int, Int, Real, Text, Text, Text, Int, Int, Real, Int,
        ];
        let rows = D::Db::fetch(conn, rows, &kinds).await.map_err(db)?;
        let corrupt = |what: &str| {
            Error::data(
                here,
                format!("the checkpoint is unreadable ({what}); run with --restart"),
            )
        };
        let mut chunks = Vec::with_capacity(rows.len());
        for r in rows {
            let mut r = r.into_iter();
            let mut next = || r.next().unwrap_or(Value::Null);
            let chunk: Chunk = next()
                .text()
                .and_then(|j| serde_json::from_str(&j).ok())
                .ok_or_else(|| corrupt("chunk range"))?;
            let state = next()
                .text()
                .and_then(|s| ChunkState::parse(&s))
                .ok_or_else(|| corrupt("chunk state"))?;
            let attempts = next().int() as u32;
            let mut n = || next().int() as u64;
            let counts = ChunkCounts {
                read: n(),
                written: n(),
                filtered: n(),
                rejected: n(),
            };
            chunks.push(ChunkRecord {
                chunk,
                state,
                attempts,
                counts,
                seconds: next().real(),
                last_error: next().text(),
                checksum: next()
                    .text()
                    .and_then(|h| u64::from_str_radix(&h, 16).ok())
                    .unwrap_or(0),
                worker: next().text(),
                started_ms: next().opt_int(),
                finished_ms: next().opt_int(),
                verify_seconds: next().real(),
                lease_ms: next().opt_int(),
            });
        }
        let mut run = run.into_iter().map(Value::text);
        let (fingerprint, settings, created_at) = (
            run.next().flatten().unwrap_or_default(),
            run.next().flatten().unwrap_or_default(),
            run.next().flatten().unwrap_or_default(),
        );
        Ok(Some(Checkpoint {
            fingerprint,
            settings: serde_json::from_str(&settings).map_err(|_| corrupt("settings"))?,
            created_at,
            chunks,
        }))
    }

    /// Records a new plan on `conn`, in one transaction, every chunk pending, replacing
    /// the pipeline's earlier one.
    pub async fn create(
        &self,
        conn: &mut Conn<D>,
        here: &str,
        fingerprint: &str,
        settings: &[(String, String)],
        chunks: &[Chunk],
    ) -> Result<()> {
        let db = |e| self.d.error(here, e);
        let settings = sql::settings_json(settings)?;
        let now = chrono::Utc::now().to_rfc3339();
        let mut tx = sqlx::Connection::begin(conn).await.map_err(db)?;
        let conn = &mut *tx;
        for forget in self.discard() {
            D::Db::execute(conn, forget).await.map_err(db)?;
        }
        let run = self.stmt(
            self.d.params(&format!(
                "INSERT INTO {} (pipeline, fingerprint, settings, created_at) VALUES (?, ?, ?, ?)",
                self.runs()
            )),
            vec![
                self.p(),
                fingerprint.into(),
                Value::Text(settings),
                Value::Text(now),
            ],
        );
        D::Db::execute(conn, run).await.map_err(db)?;
        for group in chunks.chunks(CHUNKS_PER_INSERT) {
            let mut binds = Vec::with_capacity(group.len() * 3);
            for c in group {
                let json = serde_json::to_string(c).map_err(|e| Error::Internal(e.to_string()))?;
                binds.extend([self.p(), Value::Int(c.id as i64), Value::Text(json)]);
            }
            let sql = format!(
                "INSERT INTO {} (pipeline, id, chunk, state) VALUES {}",
                self.chunks(),
                vec!["(?, ?, ?, 'pending')"; group.len()].join(", ")
            );
            D::Db::execute(conn, self.stmt(self.d.params(&sql), binds))
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    /// The done mark's update: binds `mark`, changes one row while the chunk runs under
    /// its claim, none once the claim is gone.
    pub fn done(&self, mark: &DoneMark) -> Stmt {
        let c = &mark.counts;
        self.stmt(
            sql::done(&self.chunks(), self.d.marks(), self.d.now_ms()),
            vec![
                Value::Int(c.read as i64),
                Value::Int(c.written as i64),
                Value::Int(c.filtered as i64),
                Value::Int(c.rejected as i64),
                Value::Real(mark.seconds),
                Value::Real(mark.verify_seconds),
                Value::Int(mark.finished_ms),
                Value::Text(hex(mark.checksum)),
                self.p(),
                Value::Int(mark.chunk as i64),
                Value::Text(hex(mark.claim)),
            ],
        )
    }

    /// Marks a chunk done on `conn` (`here` names the target in messages), inside the
    /// sink's transaction, so rows and mark commit together. Fails, so that the caller
    /// rolls the rows back, when the chunk no longer runs under the mark's claim.
    pub async fn mark_done(&self, conn: &mut Conn<D>, here: &str, mark: &DoneMark) -> Result<()> {
        match D::Db::execute(conn, self.done(mark)).await {
            Ok(1) => Ok(()),
            Ok(_) => Err(claim_lost(mark.chunk)),
            Err(e) => Err(self.d.error(here, e)),
        }
    }

    /// Fails, as [`Tables::mark_done`] would, unless the chunk still runs under `mark`'s
    /// claim: for a commit that writes a chunk's rows before its done mark, inside its
    /// transaction.
    pub async fn holds_claim(&self, conn: &mut Conn<D>, here: &str, mark: &DoneMark) -> Result<()> {
        let held = self.stmt(
            sql::holds(&self.chunks(), self.d.marks()),
            vec![
                self.p(),
                Value::Int(mark.chunk as i64),
                Value::Text(hex(mark.claim)),
            ],
        );
        let rows = D::Db::fetch(conn, held, &[Kind::Int])
            .await
            .map_err(|e| self.d.error(here, e))?;
        match rows.first().and_then(|r| r.first()).map(Value::int) {
            Some(1) => Ok(()),
            _ => Err(claim_lost(mark.chunk)),
        }
    }

    /// Claims `chunk` under `token` at `started_ms` (see [`sql::claim`]).
    pub fn claim(&self, chunk: usize, token: u64, started_ms: i64) -> Stmt {
        self.stmt(
            sql::claim(&self.chunks(), self.d.marks()),
            vec![
                Value::Text(hex(token)),
                Value::Text(super::Worker::me().id),
                Value::Int(started_ms),
                self.p(),
                Value::Int(chunk as i64),
            ],
        )
    }

    /// Claims the next chunk a worker of a shared run may take (see
    /// [`super::WorkQueue::claim_next`]), in one transaction on `conn`: the chunk's row
    /// is locked while it is found and taken, and rows other workers are taking are
    /// passed over.
    pub async fn claim_next(
        &self,
        conn: &mut Conn<D>,
        me: &super::Worker,
        token: u64,
        lease_ms: i64,
    ) -> sqlx::Result<Option<usize>> {
        let now = self.d.now_ms();
        let lock = self.d.skip_locked().unwrap_or("");
        let mut tx = sqlx::Connection::begin(conn).await?;
        let found = self.stmt(
            sql::next_claimable(&self.chunks(), self.d.marks(), now, lock),
            vec![self.p()],
        );
        let Some(id) = D::Db::fetch(&mut *tx, found, &[Kind::Int])
            .await?
            .first()
            .and_then(|r| r.first())
            .map(Value::int)
        else {
            tx.rollback().await?;
            return Ok(None);
        };
        let take = self.stmt(
            sql::lease(&self.chunks(), self.d.marks(), now),
            vec![
                Value::Text(hex(token)),
                Value::Text(me.id.clone()),
                Value::Int(super::unix_ms()),
                Value::Int(lease_ms),
                self.p(),
                Value::Int(id),
            ],
        );
        D::Db::execute(&mut *tx, take).await?;
        tx.commit().await?;
        Ok(Some(id as usize))
    }

    /// Extends the lease on `chunk` held under `token` by `lease_ms`; changes one row,
    /// none when the lease ran out or the chunk is another's.
    pub fn extend(&self, chunk: usize, token: u64, lease_ms: i64) -> Stmt {
        self.stmt(
            sql::extend(&self.chunks(), self.d.marks(), self.d.now_ms()),
            vec![
                Value::Int(lease_ms),
                self.p(),
                Value::Int(chunk as i64),
                Value::Text(hex(token)),
            ],
        )
    }

    /// Gives up the lease on `chunk` held under `token`.
    pub fn give_up(&self, chunk: usize, token: u64) -> Stmt {
        self.stmt(
            sql::give_up(&self.chunks(), self.d.marks()),
            vec![self.p(), Value::Int(chunk as i64), Value::Text(hex(token))],
        )
    }

    /// Counts the chunks pending or running.
    pub fn open_chunks(&self) -> Stmt {
        self.stmt(
            self.d.params(&format!(
                "SELECT count(*) FROM {} WHERE pipeline = ? AND state IN ('pending', 'running')",
                self.chunks()
            )),
            vec![self.p()],
        )
    }

    /// Puts the chunks a run left running or failed back to pending.
    pub fn reopen(&self) -> Stmt {
        self.stmt(sql::reopen(&self.chunks(), self.d.marks()), vec![self.p()])
    }

    /// Records `me` as a running worker of the run (replacing an earlier record of the
    /// same host and pid).
    pub fn join(&self, me: &super::Worker) -> [Stmt; 2] {
        let now = self.d.now_ms();
        [
            self.stmt(
                self.d.params(&format!(
                    "DELETE FROM {} WHERE pipeline = ? AND worker = ?",
                    self.workers()
                )),
                vec![self.p(), Value::Text(me.id.clone())],
            ),
            self.stmt(
                self.d.params(&format!(
                    "INSERT INTO {} (pipeline, worker, host, pid, started_ms, heartbeat_ms, state) \
                     VALUES (?, ?, ?, ?, {now}, {now}, 'running')",
                    self.workers()
                )),
                vec![
                    self.p(),
                    Value::Text(me.id.clone()),
                    Value::Text(me.host.clone()),
                    Value::Int(me.pid as i64),
                ],
            ),
        ]
    }

    /// Records `me`'s heartbeat, state and counts.
    pub fn beat(&self, me: &super::Worker, state: &str, done: &super::WorkerCounts) -> Stmt {
        self.stmt(
            self.d.params(&format!(
                "UPDATE {} SET heartbeat_ms = {}, state = ?, chunks_done = ?, rows_read = ?, \
                 rows_written = ? WHERE pipeline = ? AND worker = ?",
                self.workers(),
                self.d.now_ms()
            )),
            vec![
                state.into(),
                Value::Int(done.chunks as i64),
                Value::Int(done.read as i64),
                Value::Int(done.written as i64),
                self.p(),
                Value::Text(me.id.clone()),
            ],
        )
    }

    /// The run's workers, the most recent first, read on `conn`; none when the store
    /// has no workers table.
    pub async fn load_workers(
        &self,
        conn: &mut Conn<D>,
        here: &str,
    ) -> Result<Vec<super::WorkerRecord>> {
        let db = |e| self.d.error(here, e);
        let listed = Stmt {
            sql: self.d.params(self.d.columns_sql()),
            binds: vec![
                Value::from(self.schema.as_str()),
                "_rowshift_workers".into(),
            ],
        };
        if D::Db::fetch(conn, listed, &[Kind::Text])
            .await
            .map_err(db)?
            .is_empty()
        {
            return Ok(Vec::new());
        }
        let rows = self.stmt(
            self.d.params(&format!(
                "SELECT worker, host, pid, started_ms, heartbeat_ms, state, chunks_done, \
                 rows_read, rows_written, {} FROM {} WHERE pipeline = ? \
                 ORDER BY started_ms DESC, worker",
                self.d.now_ms(),
                self.workers()
            )),
            vec![self.p()],
        );
        use Kind::{Int, Text};
        let kinds = [Text, Text, Int, Int, Int, Text, Int, Int, Int, Int];
        let rows = D::Db::fetch(conn, rows, &kinds).await.map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let mut r = r.into_iter();
                let mut next = || r.next().unwrap_or(Value::Null);
                super::WorkerRecord {
                    id: next().text().unwrap_or_default(),
                    host: next().text().unwrap_or_default(),
                    pid: next().int() as u32,
                    started_ms: next().int(),
                    heartbeat_ms: next().int(),
                    state: next().text().unwrap_or_default(),
                    chunks_done: next().int() as u64,
                    rows_read: next().int() as u64,
                    rows_written: next().int() as u64,
                    now_ms: next().int(),
                }
            })
            .collect())
    }

    /// Marks `chunk` failed with `error` while it runs under `token`.
    pub fn fail(&self, chunk: usize, token: u64, error: &str) -> Stmt {
        self.stmt(
            sql::fail(&self.chunks(), self.d.marks()),
            vec![
                error.into(),
                self.p(),
                Value::Int(chunk as i64),
                Value::Text(hex(token)),
            ],
        )
    }

    /// Moves a done chunk's requeued rows out of its rejected count (see
    /// [`super::CheckpointStore::requeued`]).
    pub fn requeued(&self, chunk: usize, written: u64, filtered: u64, gone: u64) -> Stmt {
        self.stmt(
            sql::requeued(&self.chunks(), self.d.marks()),
            vec![
                Value::Int(written as i64),
                Value::Int(filtered as i64),
                Value::Int((written + filtered + gone) as i64),
                self.p(),
                Value::Int(chunk as i64),
            ],
        )
    }

    /// Records the run's new fingerprint and settings.
    pub fn record_settings(
        &self,
        fingerprint: &str,
        settings: &[(String, String)],
    ) -> Result<Stmt> {
        Ok(self.stmt(
            sql::record_settings(&self.runs(), self.d.marks()),
            vec![
                fingerprint.into(),
                Value::Text(sql::settings_json(settings)?),
                self.p(),
            ],
        ))
    }

    /// Puts `chunk` back to pending unless it is done (`retry`); changes one row, or
    /// none when there is no such chunk or it is done.
    pub fn reset(&self, chunk: usize) -> Stmt {
        self.stmt(
            sql::reset(&self.chunks(), self.d.marks()),
            vec![self.p(), Value::Int(chunk as i64)],
        )
    }

    /// Puts `chunk` back to pending if it is done (`verify --repair`).
    pub fn redo(&self, chunk: usize) -> Stmt {
        self.stmt(
            sql::redo(&self.chunks(), self.d.marks()),
            vec![self.p(), Value::Int(chunk as i64)],
        )
    }

    /// The statements that forget the pipeline's run: its workers, its chunks, then the
    /// run.
    pub fn discard(&self) -> [Stmt; 3] {
        [self.workers(), self.chunks(), self.runs()].map(|t| {
            self.stmt(
                self.d
                    .params(&format!("DELETE FROM {t} WHERE pipeline = ?")),
                vec![self.p()],
            )
        })
    }
}

/// The error of a `reset` that changed `n` rows of `chunk`, unless it changed one.
pub(crate) fn expect_one(n: u64, chunk: usize, here: &str) -> Result<()> {
    if n == 1 {
        Ok(())
    } else {
        Err(Error::Internal(format!(
            "{here}: chunk {chunk} is not in the checkpoint (or not in a state that allows this)"
        )))
    }
}

/// The [`super::CheckpointStore`] methods that run one of [`Tables`]' statements each,
/// for an `impl CheckpointStore` block whose type has `tables: Tables<_>`,
/// `exec(&self, Stmt) -> Result<u64>` (on whatever connection the store writes with)
/// and `here(&self) -> String`.
macro_rules! statement_writes {
    () => {
        fn fail(&self, chunk: usize, token: u64, error: &str) -> $crate::Result<()> {
            // Nothing changes when the claim is gone: the run that took the chunk owns it.
            self.exec(self.tables.fail(chunk, token, error)).map(drop)
        }

        fn requeued(
            &self,
            chunk: usize,
            written: u64,
            filtered: u64,
            gone: u64,
        ) -> $crate::Result<()> {
            self.exec(self.tables.requeued(chunk, written, filtered, gone))
                .map(drop)
        }

        fn record_settings(
            &self,
            fingerprint: &str,
            settings: &[(String, String)],
        ) -> $crate::Result<()> {
            self.exec(self.tables.record_settings(fingerprint, settings)?)
                .map(drop)
        }

        fn reset(&self, chunks: &[usize]) -> $crate::Result<()> {
            for &c in chunks {
                let n = self.exec(self.tables.reset(c))?;
                $crate::checkpoint::tables::expect_one(n, c, &self.here())?;
            }
            Ok(())
        }

        fn redo(&self, chunks: &[usize]) -> $crate::Result<()> {
            for &c in chunks {
                self.exec(self.tables.redo(c))?;
            }
            Ok(())
        }
    };
}
pub(crate) use statement_writes;
