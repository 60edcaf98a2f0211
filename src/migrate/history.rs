//! The history: one row per step of a set in the target, saying what ran, who ran it,
//! what it moved and where it stands. All of rowshift's migration bookkeeping lives in
//! one place: the `rowshift` schema on PostgreSQL (`rowshift.history`), a
//! `_rowshift_history` table on MySQL/MariaDB (in the target database) and SQLite.
//!
//! The store also runs a step's statements: on PostgreSQL and SQLite in one transaction
//! with the step's history row, on MySQL (which commits DDL on its own) one statement at a
//! time, each followed by the record of its completion.

use serde::Serialize;
use sqlx::{MySqlPool, PgPool, Row, SqlitePool};

use super::statements::Statement;
use crate::config::Location;
use crate::db::postgres::qualified as pg_qualified;
use crate::runtime::IoRuntime;
use crate::sql::{quote_ident, stmt, trace};
use crate::{Error, Result};

/// The schema that holds rowshift's bookkeeping on PostgreSQL.
pub const PG_SCHEMA: &str = "rowshift";

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// `up` started it and has not finished it (or was killed): `phase` and
    /// `statements_done` say where it stopped.
    Running,
    /// Applied by `up`.
    Applied,
    /// Adopted by `baseline`: the database was already there, nothing ran.
    Baseline,
    /// `up` failed in it; `error` says why, `phase` and `statements_done` where.
    Failed,
    /// `down` started reverting it and has not finished.
    Reverting,
    /// Reverted by `down`: pending again.
    Reverted,
}

impl State {
    /// The word the history stores.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Applied => "applied",
            State::Baseline => "baseline",
            State::Failed => "failed",
            State::Reverting => "reverting",
            State::Reverted => "reverted",
        }
    }

    fn parse(s: &str) -> Option<State> {
        [
            State::Running,
            State::Applied,
            State::Baseline,
            State::Failed,
            State::Reverting,
            State::Reverted,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// Whether the step's changes are in the target (wholly).
    pub fn is_applied(self) -> bool {
        matches!(self, State::Applied | State::Baseline)
    }
}

/// Which part of a step `statements_done` counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The `-- rowshift:up` statements.
    Up,
    /// The data move (an online step's: its change capture installed, then the copy).
    Data,
    /// An online step's catch-up: the changes logged during the copy replayed into the
    /// new table.
    CatchUp,
    /// The `-- rowshift:after` statements.
    After,
    /// An online step's cut-over: the new table swapped into the source table's place.
    Cutover,
    /// Every part is done.
    Done,
    /// An applied online step whose old table and captures `finalize` dropped: it can no
    /// longer be swapped back.
    Finalized,
    /// The `-- rowshift:down` statements.
    Down,
    /// `down`'s reverse data move (`NNN_name.down.toml`), before the down statements.
    Reverse,
    /// `down`'s swap-back of an online step's cut-over, before the down statements.
    SwapBack,
}

impl Phase {
    /// The word the history stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Up => "up",
            Phase::Data => "data",
            Phase::CatchUp => "catchup",
            Phase::After => "after",
            Phase::Cutover => "cutover",
            Phase::Done => "done",
            Phase::Finalized => "finalized",
            Phase::Down => "down",
            Phase::Reverse => "reverse",
            Phase::SwapBack => "swapback",
        }
    }

    fn parse(s: &str) -> Option<Phase> {
        [
            Phase::Up,
            Phase::Data,
            Phase::CatchUp,
            Phase::After,
            Phase::Cutover,
            Phase::Done,
            Phase::Finalized,
            Phase::Down,
            Phase::Reverse,
            Phase::SwapBack,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// One step's row in the history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// The step's number.
    pub step: u64,
    /// The step's name.
    pub name: String,
    /// `sql`, `data` or `sql+data`.
    pub kind: String,
    /// The checksum of the step's files when it ran (hex).
    pub checksum: String,
    /// The checksum chained over this step and every step before it (hex): an edit,
    /// removal or reorder of an earlier step changes it.
    pub chain: String,
    /// Where the step stands.
    pub state: State,
    /// Which part `statements_done` counts in.
    pub phase: Phase,
    /// Statements of `phase` whose completion is recorded.
    pub statements_done: u64,
    /// The user who ran it.
    pub run_by: String,
    /// The host it ran on.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// When it started (UTC, RFC 3339).
    pub started_at: String,
    /// When it ended, once it did.
    pub ended_at: Option<String>,
    /// Rows read by its data move.
    pub rows_read: u64,
    /// Rows written.
    pub rows_written: u64,
    /// Rows filtered out.
    pub rows_filtered: u64,
    /// Rows rejected (in the quarantine).
    pub rows_rejected: u64,
    /// The checksum of the rows the data move wrote and read back (hex).
    pub data_checksum: Option<String>,
    /// A data step's source rows when its move ended: `down` compares them with the
    /// source as it is then, to know whether the rows it drops could be had again.
    pub source_rows: Option<u64>,
    /// The order-independent checksum of those source rows (hex).
    pub source_checksum: Option<String>,
    /// What `--allow-changed` accepted, when it did.
    pub allowed_change: Option<String>,
    /// The last error.
    pub error: Option<String>,
    /// The step's files when it ran, to show what changed since.
    #[serde(skip)]
    pub applied_text: String,
}

const COLUMNS: &[&str] = &[
    "step",
    "name",
    "kind",
    "checksum",
    "chain",
    "state",
    "phase",
    "statements_done",
    "run_by",
    "host",
    "pid",
    "started_at",
    "ended_at",
    "rows_read",
    "rows_written",
    "rows_filtered",
    "rows_rejected",
    "data_checksum",
    "allowed_change",
    "error",
    "applied_text",
    "source_rows",
    "source_checksum",
];

/// A value bound into a history statement.
#[derive(Debug, Clone)]
enum Val {
    Text(Option<String>),
    Int(i64),
    Null,
}

impl Record {
    fn values(&self) -> Vec<Val> {
        let t = |s: &str| Val::Text(Some(s.to_string()));
        let o = |s: &Option<String>| Val::Text(s.clone());
        let i = |n: u64| Val::Int(n as i64);
        vec![
            i(self.step),
            t(&self.name),
            t(&self.kind),
            t(&self.checksum),
            t(&self.chain),
            t(self.state.as_str()),
            t(self.phase.as_str()),
            i(self.statements_done),
            t(&self.run_by),
            t(&self.host),
            i(self.pid as u64),
            t(&self.started_at),
            o(&self.ended_at),
            i(self.rows_read),
            i(self.rows_written),
            i(self.rows_filtered),
            i(self.rows_rejected),
            o(&self.data_checksum),
            o(&self.allowed_change),
            o(&self.error),
            t(&self.applied_text),
            match self.source_rows {
                Some(n) => i(n),
                None => Val::Null,
            },
            o(&self.source_checksum),
        ]
    }

    fn from_texts(v: &[Option<String>]) -> Option<Record> {
        let s = |i: usize| v.get(i).cloned().flatten();
        let n = |i: usize| s(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        Some(Record {
            step: s(0)?.parse().ok()?,
            name: s(1)?,
            kind: s(2)?,
            checksum: s(3)?,
            chain: s(4)?,
            state: State::parse(&s(5)?)?,
            phase: Phase::parse(&s(6)?)?,
            statements_done: n(7),
            run_by: s(8).unwrap_or_default(),
            host: s(9).unwrap_or_default(),
            pid: n(10) as u32,
            started_at: s(11).unwrap_or_default(),
            ended_at: s(12),
            rows_read: n(13),
            rows_written: n(14),
            rows_filtered: n(15),
            rows_rejected: n(16),
            data_checksum: s(17),
            allowed_change: s(18),
            error: s(19),
            applied_text: s(20).unwrap_or_default(),
            source_rows: s(21).and_then(|x| x.parse().ok()),
            source_checksum: s(22),
        })
    }
}

enum Pool {
    Sqlite(SqlitePool),
    Pg(PgPool),
    My(MySqlPool),
}

/// Which database a history is kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Sqlite,
    Pg,
    My,
}

/// The history's statements as the target spells them, known without connecting: what
/// the history runs, and what `rowshift plan` shows it would run.
#[derive(Debug, Clone)]
pub(crate) struct HistorySql {
    kind: Kind,
    /// The target schema (PostgreSQL), database (MySQL) or `main` (SQLite).
    target: String,
    /// The history table, qualified and quoted.
    table: String,
}

impl HistorySql {
    /// The history's statements in `location`.
    pub(crate) fn of(location: &Location) -> Result<HistorySql> {
        Ok(match location {
            Location::Sqlite { .. } => HistorySql {
                kind: Kind::Sqlite,
                target: "main".into(),
                table: quote_ident("_rowshift_history"),
            },
            Location::Postgres { schema, .. } => HistorySql {
                kind: Kind::Pg,
                target: schema.clone(),
                table: pg_qualified(PG_SCHEMA, "history"),
            },
            Location::Mysql { schema, .. } => HistorySql {
                kind: Kind::My,
                target: schema.clone(),
                table: crate::db::mysql::qualified(schema, "_rowshift_history"),
            },
            Location::Files { .. } => {
                return Err(Error::Unsupported(
                    "a migration set's target is a database, not files".into(),
                ));
            }
        })
    }

    fn ph(&self, i: usize) -> String {
        match self.kind {
            Kind::Pg => format!("${i}"),
            _ => "?".into(),
        }
    }

    /// The statements `ensure` runs, in order (PostgreSQL's first takes the lock that
    /// serialises them, with its key bound).
    pub(crate) fn ensure(&self) -> Vec<String> {
        let (text, big, key) = match self.kind {
            Kind::Pg => ("text", "bigint", "text"),
            Kind::My => ("TEXT", "BIGINT", "VARCHAR(191)"),
            Kind::Sqlite => ("TEXT", "INTEGER", "TEXT"),
        };
        let cols = format!(
            "set_name {key} NOT NULL, target {key} NOT NULL, step {big} NOT NULL, name {text} NOT NULL, kind {text} NOT NULL, \
             checksum {text} NOT NULL, chain {text} NOT NULL, state {text} NOT NULL, phase {text} NOT NULL, \
             statements_done {big} NOT NULL, run_by {text} NOT NULL, host {text} NOT NULL, pid {big} NOT NULL, \
             started_at {text} NOT NULL, ended_at {text}, rows_read {big} NOT NULL, rows_written {big} NOT NULL, \
             rows_filtered {big} NOT NULL, rows_rejected {big} NOT NULL, data_checksum {text}, allowed_change {text}, \
             error {text}, applied_text {text} NOT NULL, source_rows {big}, source_checksum {text}, \
             PRIMARY KEY (set_name, target, step)"
        );
        let create = format!("CREATE TABLE IF NOT EXISTS {} ({cols})", self.table);
        match self.kind {
            Kind::Sqlite => vec![create],
            Kind::My => vec![
                format!(
                    "CREATE DATABASE IF NOT EXISTS {} DEFAULT CHARACTER SET utf8mb4",
                    crate::db::mysql::quote(&self.target)
                ),
                format!("{create} ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"),
            ],
            Kind::Pg => vec![
                "SELECT pg_advisory_xact_lock($1)".into(),
                format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(PG_SCHEMA)),
                format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(&self.target)),
                create,
                // A history table made before the source figures were recorded.
                format!(
                    "ALTER TABLE {} ADD COLUMN IF NOT EXISTS source_rows bigint, ADD COLUMN IF NOT EXISTS source_checksum text",
                    self.table
                ),
            ],
        }
    }

    /// The statements that replace a step's row: delete, then insert.
    pub(crate) fn writes(&self) -> [String; 2] {
        let phs: Vec<String> = (1..=COLUMNS.len() + 2).map(|i| self.ph(i)).collect();
        let insert = format!(
            "INSERT INTO {} (set_name, target, {}) VALUES ({})",
            self.table,
            COLUMNS.join(", "),
            phs.join(", ")
        );
        let delete = format!(
            "DELETE FROM {} WHERE set_name = {} AND target = {} AND step = {}",
            self.table,
            self.ph(1),
            self.ph(2),
            self.ph(3)
        );
        [delete, insert]
    }

    /// The statement a transaction of the history starts with (PostgreSQL: the target
    /// schema first on the search path, for a step's statements).
    pub(crate) fn prelude(&self) -> Option<String> {
        match self.kind {
            Kind::Pg => Some(format!(
                "SET LOCAL search_path TO {}",
                quote_ident(&self.target)
            )),
            _ => None,
        }
    }

    /// The statement before each statement run on its own (MySQL).
    pub(crate) fn use_target(&self) -> String {
        format!("USE {}", crate::db::mysql::quote(&self.target))
    }

    /// Whether each statement is run and recorded on its own (MySQL, whose DDL commits
    /// by itself), rather than in one transaction with the step's row.
    pub(crate) fn per_statement(&self) -> bool {
        self.kind == Kind::My
    }
}

/// The history of one set in one target, with the connection that runs its steps' SQL.
pub struct History {
    pool: Pool,
    sql: HistorySql,
    io: IoRuntime,
    set: String,
    /// The target schema (PostgreSQL), database (MySQL) or `main` (SQLite).
    target: String,
    /// The history table, qualified and quoted.
    table: String,
    /// The target, redacted, for messages.
    shown: String,
    /// Held by a write of a step's row alone: steps applied at once save their rows from
    /// several threads, and on MySQL two transactions that each delete a missing row
    /// and insert it hold gap locks that make each other's insert wait (a deadlock).
    saving: std::sync::Mutex<()>,
}

/// Runs `$body` with `$p` bound to the concrete pool.
macro_rules! on_pool {
    ($self:expr, $p:ident => $body:expr) => {
        match &$self.pool {
            Pool::Sqlite($p) => $body,
            Pool::Pg($p) => $body,
            Pool::My($p) => $body,
        }
    };
}

/// Binds `vals` to a query, in order.
macro_rules! bind_all {
    ($q:expr, $vals:expr) => {{
        let mut q = $q;
        for v in $vals {
            q = match v {
                Val::Text(t) => q.bind(t.clone()),
                Val::Int(n) => q.bind(*n),
                Val::Null => q.bind(None::<i64>),
            };
        }
        q
    }};
}

impl History {
    /// Connects to the target `location` for set `set`. Touches nothing.
    pub fn open(location: &Location, set: &str, io: &IoRuntime) -> Result<History> {
        Self::open_as(location, set, io, false, 2)
    }

    /// [`History::open`] with `connections` in its pool (a server's; SQLite has one):
    /// `up` applying several steps at once runs their SQL on it side by side.
    pub(crate) fn open_with(
        location: &Location,
        set: &str,
        io: &IoRuntime,
        connections: u32,
    ) -> Result<History> {
        Self::open_as(location, set, io, false, connections.max(2))
    }

    /// Connects to the target `location` for set `set` in read-only sessions (a read-only
    /// SQLite connection; PostgreSQL's and MySQL's sessions refuse every write), for
    /// `rowshift plan`. A SQLite file must exist.
    pub fn open_read_only(location: &Location, set: &str, io: &IoRuntime) -> Result<History> {
        Self::open_as(location, set, io, true, 1)
    }

    fn open_as(
        location: &Location,
        set: &str,
        io: &IoRuntime,
        read_only: bool,
        connections: u32,
    ) -> Result<History> {
        let db = crate::config::DbOptions {
            // Read-only: one connection, so that the session's read-only setting holds
            // for every query.
            pool_size: Some(if read_only { 1 } else { connections }),
            ..Default::default()
        };
        let sql = HistorySql::of(location)?;
        let history = match location {
            Location::Sqlite { path } => History {
                pool: Pool::Sqlite(crate::db::sqlite::connect(
                    io,
                    path,
                    match read_only {
                        true => crate::db::sqlite::Access::Read,
                        false => crate::db::sqlite::Access::Write,
                    },
                    1,
                )?),
                sql,
                io: io.clone(),
                set: set.into(),
                target: "main".into(),
                table: quote_ident("_rowshift_history"),
                shown: format!("sqlite://{}", path.display()),
                saving: Default::default(),
            },
            Location::Postgres { url, schema } => History {
                pool: Pool::Pg(crate::db::postgres::connect(io, url, &db)?),
                sql,
                io: io.clone(),
                set: set.into(),
                target: schema.clone(),
                table: pg_qualified(PG_SCHEMA, "history"),
                shown: format!("{} schema {schema}", url.shown()),
                saving: Default::default(),
            },
            Location::Mysql { url, schema } => History {
                pool: Pool::My(crate::db::mysql::connect(io, url, &db)?),
                sql,
                io: io.clone(),
                set: set.into(),
                target: schema.clone(),
                table: crate::db::mysql::qualified(schema, "_rowshift_history"),
                shown: format!("{} database {schema}", url.shown()),
                saving: Default::default(),
            },
            Location::Files { .. } => {
                return Err(Error::Unsupported(
                    "a migration set's target is a database, not files".into(),
                ));
            }
        };
        if read_only {
            let set_read_only = match history.pool {
                Pool::Pg(_) => Some("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"),
                Pool::My(_) => Some("SET SESSION TRANSACTION READ ONLY"),
                Pool::Sqlite(_) => None,
            };
            if let Some(sql) = set_read_only {
                let here = history.here();
                on_pool!(history, p => history.io.block_on(sqlx::raw_sql(stmt(sql)).execute(p)).map(|_| ()))
                    .map_err(|e| Error::db(here, e))?;
            }
        }
        Ok(history)
    }

    /// The history's statements as this target spells them.
    pub(crate) fn sql(&self) -> &HistorySql {
        &self.sql
    }

    /// The target, redacted, for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn here(&self) -> String {
        format!("migration history {}", self.shown)
    }

    fn ph(&self, i: usize) -> String {
        match self.pool {
            Pool::Pg(_) => format!("${i}"),
            _ => "?".into(),
        }
    }

    /// Creates the history table (and on PostgreSQL the `rowshift` schema and the target
    /// schema, on MySQL the target database) if missing. Safe against other sessions
    /// creating them at the same moment.
    pub fn ensure(&self) -> Result<()> {
        let here = self.here();
        let ddl = self.sql.ensure();
        match &self.pool {
            Pool::Sqlite(p) => {
                self.run_each(p, &ddl).map_err(|e| Error::db(&here, e))?;
                self.upgrade()
            }
            Pool::My(p) => {
                self.run_each(p, &ddl).map_err(|e| Error::db(&here, e))?;
                self.upgrade()
            }
            Pool::Pg(p) => {
                // Sets on other targets hold other locks: this one serialises the
                // creation of the shared schema, and a sink creating the same schema
                // at that moment loses to a second try.
                let key = crate::checkpoint::lock::lock_key(PG_SCHEMA, "\0history tables");
                self.io.block_on(async {
                    let mut tries = 0;
                    loop {
                        tries += 1;
                        let done = async {
                            let mut tx = p.begin().await?;
                            sqlx::query(stmt(ddl[0].clone()))
                                .bind(key)
                                .execute(&mut *tx)
                                .await?;
                            for sql in &ddl[1..] {
                                sqlx::raw_sql(stmt(sql.clone())).execute(&mut *tx).await?;
                            }
                            tx.commit().await
                        }
                        .await;
                        match done {
                            Ok(()) => {
                                ddl.iter().for_each(|s| trace::executed(s));
                                return Ok(());
                            }
                            Err(sqlx::Error::Database(e))
                                if tries < 3
                                    && matches!(
                                        e.code().as_deref(),
                                        Some("23505" | "42P06" | "42P07")
                                    ) => {}
                            Err(e) => return Err(Error::db(&here, e)),
                        }
                    }
                })
            }
        }
    }

    /// Adds the source figures' columns to a SQLite or MySQL history table made before
    /// they were recorded (PostgreSQL's `ensure` adds them `IF NOT EXISTS`). A one-time
    /// change of rowshift's own table, so not among the statements a plan lists.
    fn upgrade(&self) -> Result<()> {
        let here = self.here();
        let (probe, add_rows, add_sum) = match self.pool {
            Pool::Sqlite(_) => (
                "SELECT count(*) FROM pragma_table_info('_rowshift_history') WHERE ? <> '' AND name = 'source_rows'",
                "INTEGER",
                "TEXT",
            ),
            Pool::My(_) => (
                "SELECT count(*) FROM information_schema.columns WHERE table_schema = ? AND table_name = '_rowshift_history' AND column_name = 'source_rows'",
                "BIGINT",
                "TEXT",
            ),
            Pool::Pg(_) => return Ok(()),
        };
        let has: i64 = on_pool!(self, p => self.io.block_on(
            sqlx::query_scalar::<_, i64>(probe).bind(self.target.clone()).fetch_one(p)
        ))
        .map_err(|e| Error::db(&here, e))?;
        if has > 0 {
            return Ok(());
        }
        let alter = [
            format!(
                "ALTER TABLE {} ADD COLUMN source_rows {add_rows}",
                self.table
            ),
            format!(
                "ALTER TABLE {} ADD COLUMN source_checksum {add_sum}",
                self.table
            ),
        ];
        on_pool!(self, p => self.io.block_on(async {
            for sql in &alter {
                sqlx::raw_sql(stmt(sql.clone())).execute(p).await?;
            }
            Ok::<_, sqlx::Error>(())
        }))
        .map_err(|e| Error::db(&here, e))
    }

    /// Runs `statements` one after the other, each on its own.
    fn run_each<DB: sqlx::Database>(
        &self,
        pool: &sqlx::Pool<DB>,
        statements: &[String],
    ) -> sqlx::Result<()>
    where
        for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    {
        self.io.block_on(async {
            for sql in statements {
                sqlx::raw_sql(stmt(sql.clone())).execute(pool).await?;
                trace::executed(sql);
            }
            Ok(())
        })
    }

    /// Every recorded step of the set, by step number.
    pub fn load(&self) -> Result<Vec<Record>> {
        let cast = |c: &str| match self.pool {
            Pool::Pg(_) => format!("{c}::text"),
            Pool::My(_) => format!("CAST({c} AS CHAR)"),
            Pool::Sqlite(_) => format!("CAST({c} AS TEXT)"),
        };
        let cols: Vec<String> = COLUMNS.iter().map(|c| cast(c)).collect();
        let sql = format!(
            "SELECT {} FROM {} WHERE set_name = {} AND target = {} ORDER BY step",
            cols.join(", "),
            self.table,
            self.ph(1),
            self.ph(2)
        );
        let here = self.here();
        let rows: Vec<Vec<Option<String>>> = on_pool!(self, p => self.io.block_on(async {
            let rows = sqlx::query(stmt(sql.clone()))
                .bind(self.set.clone())
                .bind(self.target.clone())
                .fetch_all(p)
                .await?;
            rows.iter()
                .map(|r| (0..COLUMNS.len()).map(|i| r.try_get::<Option<String>, _>(i)).collect())
                .collect::<sqlx::Result<Vec<_>>>()
        }))
        .map_err(|e| Error::db(&here, e))?;
        rows.iter()
            .map(|r| {
                Record::from_texts(r).ok_or_else(|| {
                    Error::Unsupported(format!(
                        "{here}: a row of {} cannot be read ({r:?}); was it edited by hand?",
                        self.table
                    ))
                })
            })
            .collect()
    }

    /// The statements that replace a step's row with `record`.
    fn writes(&self, record: &Record) -> [(String, Vec<Val>); 2] {
        let mut all = vec![
            Val::Text(Some(self.set.clone())),
            Val::Text(Some(self.target.clone())),
        ];
        all.extend(record.values());
        let key = vec![
            Val::Text(Some(self.set.clone())),
            Val::Text(Some(self.target.clone())),
            Val::Int(record.step as i64),
        ];
        let [delete, insert] = self.sql.writes();
        [(delete, key), (insert, all)]
    }

    /// Writes a step's row.
    pub fn save(&self, record: &Record) -> Result<()> {
        let _one = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        self.apply(&[], record, &mut |_| {}).map_err(|(_, e)| e)
    }

    /// The foreign keys between tables of the target schema, as (referencing table,
    /// referenced table), lower case: which steps `up` may apply at once.
    pub(crate) fn foreign_keys(&self) -> Result<Vec<(String, String)>> {
        let sql = match self.pool {
            Pool::Pg(_) => {
                "SELECT lower(c.relname::text), lower(r.relname::text) FROM pg_constraint k \
                 JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_class r ON r.oid = k.confrelid WHERE k.contype = 'f' AND n.nspname = $1"
            }
            Pool::My(_) => {
                "SELECT CAST(lower(table_name) AS CHAR), CAST(lower(referenced_table_name) AS CHAR) \
                 FROM information_schema.referential_constraints WHERE constraint_schema = ?"
            }
            Pool::Sqlite(_) => {
                "SELECT lower(m.name), lower(f.\"table\") FROM sqlite_master m, pragma_foreign_key_list(m.name) f \
                 WHERE m.type = 'table' AND ? <> ''"
            }
        };
        let rows = self.query_texts(sql, std::slice::from_ref(&self.target))?;
        Ok(rows
            .into_iter()
            .filter_map(|r| match r.as_slice() {
                [Some(a), Some(b)] => Some((a.clone(), b.clone())),
                _ => None,
            })
            .collect())
    }

    /// Runs `statements` and then writes `record`, all in one transaction (PostgreSQL,
    /// SQLite): either every statement took effect and the history says so, or nothing
    /// changed. `after` hears each statement's index once it ran (for injected crashes).
    /// On failure, says which statement failed (its index) with the error.
    pub fn apply(
        &self,
        statements: &[Statement],
        record: &Record,
        after: &mut dyn FnMut(usize),
    ) -> std::result::Result<(), (Option<usize>, Error)> {
        let writes = self.writes(record);
        let here = self.here();
        let prelude = self.sql.prelude();
        // A statement's error names the target; the history's own, the history.
        let db = |i: Option<usize>, e| match i {
            Some(_) => (i, Error::db(&self.shown, e)),
            None => (i, Error::db(&here, e)),
        };
        on_pool!(self, p => self.io.block_on(async {
            let mut tx = p.begin().await.map_err(|e| db(None, e))?;
            if let Some(sql) = &prelude {
                sqlx::raw_sql(stmt(sql.clone())).execute(&mut *tx).await.map_err(|e| db(None, e))?;
                trace::executed(sql);
            }
            for (i, s) in statements.iter().enumerate() {
                sqlx::raw_sql(stmt(s.sql.clone()))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db(Some(i), e))?;
                trace::executed(&s.sql);
                after(i);
            }
            for (sql, vals) in &writes {
                bind_all!(sqlx::query(stmt(sql.clone())), vals)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db(None, e))?;
                trace::executed(sql);
            }
            tx.commit().await.map_err(|e| db(None, e))
        }))
    }

    /// Runs one statement on its own (MySQL, whose DDL commits by itself), in the target
    /// database.
    pub fn execute_alone(&self, statement: &Statement) -> Result<()> {
        match &self.pool {
            Pool::My(p) => self
                .io
                .block_on(async {
                    let mut conn = p.acquire().await?;
                    let use_target = self.sql.use_target();
                    sqlx::raw_sql(stmt(use_target.clone()))
                        .execute(&mut *conn)
                        .await?;
                    trace::executed(&use_target);
                    sqlx::raw_sql(stmt(statement.sql.clone()))
                        .execute(&mut *conn)
                        .await?;
                    trace::executed(&statement.sql);
                    Ok::<_, sqlx::Error>(())
                })
                .map(|_| ())
                .map_err(|e| Error::db(&self.shown, e)),
            _ => Err(Error::Internal(
                "a statement run on its own outside MySQL".into(),
            )),
        }
    }

    /// Whether each statement must be recorded on its own (MySQL), rather than in one
    /// transaction with the step's row.
    pub fn per_statement(&self) -> bool {
        self.sql.per_statement()
    }

    /// Runs a catalog query (in the target's placeholders, its values text) and gives
    /// the integers of its rows' first column: for the plan's look at the catalog.
    pub fn query_ints(&self, query: &crate::sql::dialect::Stmt) -> Result<Vec<i64>> {
        let here = self.here();
        on_pool!(self, p => self.io.block_on(async {
            let mut q = sqlx::query_scalar::<_, i64>(stmt(query.sql.clone()));
            for v in &query.binds {
                q = match v {
                    crate::sql::dialect::Value::Int(n) => q.bind(*n),
                    other => q.bind(other.clone().text()),
                };
            }
            q.fetch_all(p).await
        }))
        .map_err(|e| Error::db(format!("{here}: {}", query.sql), e))
    }

    /// Whether the history table exists (without creating it).
    pub fn exists(&self) -> Result<bool> {
        let here = self.here();
        let sql = match self.pool {
            Pool::Pg(_) => {
                "SELECT count(*) FROM information_schema.tables WHERE $1 <> '' AND table_schema = 'rowshift' AND table_name = 'history'"
            }
            Pool::My(_) => {
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = '_rowshift_history'"
            }
            Pool::Sqlite(_) => {
                "SELECT count(*) FROM sqlite_master WHERE ? <> '' AND type = 'table' AND name = '_rowshift_history'"
            }
        };
        on_pool!(self, p => self.io.block_on(
            sqlx::query_scalar::<_, i64>(sql).bind(self.target.clone()).fetch_one(p)
        ))
        .map(|n| n > 0)
        .map_err(|e| Error::db(here, e))
    }

    /// Whether table `table` is in the target's schema (or database, or SQLite file),
    /// read from the catalog: an online step's cut-over and swap-back are told apart by
    /// which of its tables are there.
    pub fn has_table(&self, table: &str) -> Result<bool> {
        let here = self.here();
        let sql = match self.pool {
            Pool::Pg(_) => {
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2"
            }
            Pool::My(_) => {
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?"
            }
            Pool::Sqlite(_) => {
                "SELECT count(*) FROM sqlite_master WHERE ? = 'main' AND type = 'table' AND name = ?"
            }
        };
        on_pool!(self, p => self.io.block_on(
            sqlx::query_scalar::<_, i64>(sql)
                .bind(self.target.clone())
                .bind(table.to_string())
                .fetch_one(p)
        ))
        .map(|n| n > 0)
        .map_err(|e| Error::db(format!("{here}: looking for table {table}"), e))
    }

    /// Rows of table `table` in the target, or `None` when it does not exist.
    pub fn count_rows(&self, table: &str) -> Result<Option<u64>> {
        let here = self.here();
        let (exists, count) = match self.pool {
            Pool::Pg(_) => (
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2".to_string(),
                format!("SELECT count(*) FROM {}", pg_qualified(&self.target, table)),
            ),
            Pool::My(_) => (
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?".to_string(),
                format!("SELECT count(*) FROM {}", crate::db::mysql::qualified(&self.target, table)),
            ),
            Pool::Sqlite(_) => (
                "SELECT count(*) FROM sqlite_master WHERE ? = 'main' AND type = 'table' AND name = ?".to_string(),
                format!("SELECT count(*) FROM {}", quote_ident(table)),
            ),
        };
        on_pool!(self, p => self.io.block_on(async {
            let n: i64 = sqlx::query_scalar(stmt(exists.clone()))
                .bind(self.target.clone())
                .bind(table.to_string())
                .fetch_one(p)
                .await?;
            if n == 0 {
                return Ok(None);
            }
            let rows: i64 = sqlx::query_scalar(stmt(count.clone())).fetch_one(p).await?;
            Ok(Some(rows as u64))
        }))
        .map_err(|e| Error::db(format!("{here}: counting the rows of {table}"), e))
    }

    /// Runs `sql` (several statements, none bound) outside any transaction, unrecorded:
    /// test-rollback's making and dropping of its throwaway schemas and copies.
    pub(crate) fn execute_raw(&self, sql: &str) -> Result<()> {
        let here = self.here();
        on_pool!(self, p => self.io.block_on(sqlx::raw_sql(stmt(sql.to_string())).execute(p)).map(|_| ()))
            .map_err(|e| Error::db(format!("{here}: {sql}"), e))
    }

    /// Runs a query with `binds` (text) and gives every column of every row as text:
    /// test-rollback's look at the catalog and at the rows. A value that is not text
    /// (MySQL's binary strings) comes as its bytes, non-UTF-8 ones replaced.
    pub(crate) fn query_texts(
        &self,
        sql: &str,
        binds: &[String],
    ) -> Result<Vec<Vec<Option<String>>>> {
        let here = self.here();
        on_pool!(self, p => self.io.block_on(async {
            let mut q = sqlx::query(stmt(sql.to_string()));
            for b in binds {
                q = q.bind(b.clone());
            }
            let rows = q.fetch_all(p).await?;
            rows.iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| match r.try_get::<Option<String>, _>(i) {
                            Ok(v) => Ok(v),
                            Err(_) => r
                                .try_get::<Option<Vec<u8>>, _>(i)
                                .map(|b| b.map(|b| String::from_utf8_lossy(&b).into_owned())),
                        })
                        .collect::<sqlx::Result<Vec<_>>>()
                })
                .collect::<sqlx::Result<Vec<_>>>()
        }))
        .map_err(|e| Error::db(format!("{here}: {sql}"), e))
    }

    /// Closes the connections.
    pub fn close(&self) {
        on_pool!(self, p => self.io.block_on(p.close()));
    }
}
