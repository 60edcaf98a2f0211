//! A SQLite table. Each chunk's rows and its rejected rows (in `<table>_rejects`) commit
//! in one transaction, so a chunk lands whole or not at all.
//!
//! SQLite has one writer per file, so chunks commit one after the other, and whatever a
//! commit does under the write lock adds to the run's wall time in full. Where the
//! target's rows in a chunk's key range can only be the chunk's own (see
//! [`SqliteSink::defers_read_back`]), the read-back therefore runs *after* the commit,
//! on a read connection, while the next chunk is being inserted; the chunk stays
//! "running" in the checkpoint until its rows have read back the same, and only then
//! is it marked done. A mismatch deletes the chunk's rows and rejects again, and a run
//! that dies in between leaves a running chunk whose rows the next run deletes before
//! redoing it ([`Sink::settle`]). Elsewhere (`if_exists = "append"`, a table with
//! triggers or referenced by foreign keys, a key the transform changes) the read-back
//! runs inside the transaction, which a mismatch rolls back, and the done mark commits
//! with the rows.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, SchemaRef,
};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use sqlx::sqlite::{SqliteConnection, SqlitePool};

use std::time::Instant;

use super::checkpoint::{Entry, Ledger, SqliteStore, tables};
use super::dialect::SqliteDialect;
use crate::check::quarantine::QuarantineEntry;
use crate::check::readback::{KEYS_PER_QUERY, ReadBack};
use crate::checkpoint::{CheckpointStore, DoneMark};
use crate::chunk::KeyValue;
use crate::chunk::Selection;
use crate::chunk::{Chunk, TargetKey};
use crate::config::{IfExists, TargetConfig, show_path};
use crate::db::sqlite::decode::{
    BatchBuilder, Bind, KeyCols, Kind, RawConn, RawError, StoredSum, bind_key,
};
use crate::db::sqlite::errors::error as db_error;
use crate::db::sqlite::{Access, Affinity, TableColumn, connect, table_columns};
use crate::runtime::IoRuntime;
use crate::sink::ddl::{self, Declared, PostLoad};
use crate::sink::quarantine::Quarantine;
use crate::sink::table::{self, DeclaredColumn};
use crate::sink::{ChunkWriter, Committed, Prepare, Sink, refuse};
use crate::sql::keyset::{KeySql, marks};
use crate::sql::trace::traced;
use crate::sql::{quote_ident, stmt};
use crate::types::{ColumnType, double_as_float32, float32_as_double};
use crate::{Error, Result};

mod replay;

/// SQLite allows up to 32,766 bound parameters per statement.
const MAX_PARAMS: usize = 32_766;

/// Writes into one SQLite table.
pub struct SqliteSink {
    path: PathBuf,
    pool: OnceLock<SqlitePool>,
    /// Read connections for read-backs after the commit, created on first use.
    read_pool: OnceLock<SqlitePool>,
    io: IoRuntime,
    shown: String,
    table: String,
    columns: Vec<DeclaredColumn>,
    schema: SchemaRef,
    /// `schema` as a reader of the table sees it: a `real` column is the double it
    /// stores (see [`float32_as_double`]).
    read_schema: SchemaRef,
    if_exists: IfExists,
    /// The target columns that hold the source key: the primary key lists them first.
    key: Option<TargetKey>,
    pipeline: OnceLock<String>,
    /// How each column is read back. A `numeric` is read as text whether the table
    /// stores it as text or as a double (whose shortest decimal is the value).
    kinds: Vec<Kind>,
    /// Which `numeric` columns the table stores as doubles (an existing REAL column, see
    /// [`SqliteSink::decimals_as_real`]); `None` until looked up.
    real_decimals: std::sync::Mutex<Option<Arc<Vec<bool>>>>,
    /// Held by the chunk committing. SQLite has one writer per file; a second one waiting
    /// in SQLite's busy handler sleeps in steps of up to 100 ms and leaves the file idle,
    /// while waiting here wakes it the moment the first commits. The checkpoint store in
    /// the same file takes it too (see [`Ledger`]).
    write_lock: Arc<tokio::sync::Mutex<()>>,
    /// Claims and done marks waiting for the write lock, shared with the checkpoint store.
    ledger: OnceLock<Arc<Ledger>>,
    /// Whether chunks whose rows are found by key range are read back after their
    /// commit, decided by [`Sink::prepare`] (see [`SqliteSink::defers_read_back`]).
    defer: AtomicBool,
    /// The indexes, checks and foreign keys the pipeline declares.
    declared: Declared,
    /// Whether a resumed run found the table gone and created it again: the chunks its
    /// checkpoint says were committed then hold nothing ([`Sink::check_done`]).
    created_on_resume: AtomicBool,
}

impl SqliteSink {
    /// A sink for `path`. Touches nothing (not even the file) until [`Sink::prepare`].
    pub fn open(
        config: &TargetConfig,
        path: &Path,
        schema: SchemaRef,
        key: Option<TargetKey>,
        io: &IoRuntime,
    ) -> Result<Self> {
        let columns = config.columns.iter().map(DeclaredColumn::of).collect();
        Ok(SqliteSink {
            path: path.to_path_buf(),
            pool: OnceLock::new(),
            read_pool: OnceLock::new(),
            io: io.clone(),
            shown: format!("sqlite://{}", show_path(path)),
            table: config
                .table
                .as_ref()
                .map(|t| t.value.clone())
                .unwrap_or_default(),
            columns,
            read_schema: as_stored_schema(&schema),
            schema,
            if_exists: config.if_exists,
            key,
            pipeline: OnceLock::new(),
            kinds: config
                .columns
                .iter()
                .map(|c| Kind::for_type(c.ty.value))
                .collect(),
            real_decimals: std::sync::Mutex::new(None),
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
            ledger: OnceLock::new(),
            defer: AtomicBool::new(false),
            created_on_resume: AtomicBool::new(false),
            declared: Declared::of(config),
        })
    }

    /// Refuses an existing table whose column affinity would convert the values of a
    /// declared type as they are stored: SQLite does that without an error, even in a
    /// `STRICT` table, so a read-back would fail the chunk and no read-back would let it
    /// pass.
    fn check_affinities(&self, existing: &[TableColumn]) -> Result<()> {
        for DeclaredColumn { name, ty, .. } in &self.columns {
            let Some(found) = existing.iter().find(|c| &c.name == name) else {
                continue;
            };
            let affinity = Affinity::of(&found.decl);
            if let Some(why) = affinity.converts(*ty) {
                let decl = if found.decl.is_empty() {
                    "untyped".to_string()
                } else {
                    found.decl.clone()
                };
                return Err(Error::data(
                    self.here(),
                    format!(
                        "column {name} is {decl} in the existing table, and its {} affinity {why}; declare a type of its kind or let rowshift create the table (it makes {ty} columns {})",
                        affinity.name(),
                        ty.sqlite_decl()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The post-load DDL of the table, as `post_load` runs it and `rowshift plan` shows it.
    fn post_load_of<'a>(&'a self, here: &'a str) -> PostLoad<'a, SqliteDialect> {
        PostLoad {
            d: &SqliteDialect,
            schema: "",
            table: &self.table,
            columns: &self.columns,
            key: table::primary_key(&self.columns, self.key.as_ref())
                .into_iter()
                .map(str::to_string)
                .collect(),
            declared: &self.declared,
            here,
        }
    }

    /// The `CREATE TABLE` statement for the declared columns.
    pub fn create_table_sql(&self) -> String {
        let mut defs: Vec<String> = self
            .columns
            .iter()
            .map(
                |c @ DeclaredColumn {
                     name, ty, nullable, ..
                 }| {
                    format!(
                        "{} {}{}{}",
                        quote_ident(name),
                        ty.sqlite_decl(),
                        if *nullable { "" } else { " NOT NULL" },
                        ddl::column_clauses(&SqliteDialect, c)
                    )
                },
            )
            .collect();
        let pk: Vec<String> = table::primary_key(&self.columns, self.key.as_ref())
            .into_iter()
            .map(quote_ident)
            .collect();
        if !pk.is_empty() {
            defs.push(format!("PRIMARY KEY ({})", pk.join(", ")));
        }
        // SQLite adds no constraint to an existing table: the declared checks and foreign
        // keys are part of it from the start.
        defs.extend(ddl::inline_constraints(&SqliteDialect, "", &self.declared));
        format!(
            "CREATE TABLE {} (\n  {}\n)",
            quote_ident(&self.table),
            defs.join(",\n  ")
        )
    }

    /// The quarantine table, `<table>_rejects`.
    fn rejects(&self) -> Quarantine<SqliteDialect> {
        Quarantine::new(SqliteDialect, "", &self.table)
    }

    fn here(&self) -> String {
        format!("{} table {}", self.shown, self.table)
    }

    /// Which columns are `numeric` ones stored as doubles: those an existing table
    /// declares with REAL affinity (`REAL`, `DOUBLE`, `FLOAT`), which keep numeric order
    /// in `max()` and `ORDER BY`. A table rowshift creates stores `numeric` as its exact
    /// text. Looked up once (from `existing`, or the table in the file), then kept.
    fn decimals_as_real(&self, existing: Option<&[TableColumn]>) -> Result<Arc<Vec<bool>>> {
        let mut cached = self
            .real_decimals
            .lock()
            .map_err(|_| Error::Internal("a lock was poisoned".into()))?;
        if existing.is_none()
            && let Some(found) = cached.as_ref()
        {
            return Ok(Arc::clone(found));
        }
        let mut looked_up = None;
        if existing.is_none() && self.path.exists() {
            let here = self.here();
            let pool = connect(&self.io, &self.path, Access::Read, 1)?;
            let found = self.io.block_on(table_columns(&pool, &self.table, &here));
            self.io.block_on(pool.close());
            looked_up = found?;
        }
        let columns = existing.or(looked_up.as_deref());
        let flags = Arc::new(
            self.columns
                .iter()
                .map(|DeclaredColumn { name, ty, .. }| {
                    matches!(ty, ColumnType::Decimal { .. })
                        && columns.is_some_and(|cols| {
                            cols.iter()
                                .any(|c| &c.name == name && Affinity::of(&c.decl) == Affinity::Real)
                        })
                })
                .collect::<Vec<_>>(),
        );
        *cached = Some(Arc::clone(&flags));
        Ok(flags)
    }

    /// Whether the rows in a chunk's key range can only be ones this pipeline wrote for
    /// that chunk: the table was created, replaced or found empty by the run, never
    /// appended to, and chunks partition the key space.
    fn owns_ranges(&self) -> bool {
        self.if_exists != IfExists::Append
    }

    /// Whether a chunk found by `selection` is read back after its commit rather than
    /// inside it. That needs a key range the chunk owns ([`Self::owns_ranges`]), since a
    /// mismatch is undone by deleting the range and a crash is recovered by deleting it
    /// before the chunk is redone, and a table without triggers or foreign keys pointing
    /// at it, whose effects a delete would not undo.
    fn defers_read_back(&self, selection: &Selection) -> bool {
        self.defer.load(Ordering::Relaxed) && matches!(selection, Selection::Range { .. })
    }

    /// Read connections for read-backs after the commit, one per chunk reading back.
    fn read_pool(&self) -> Result<&SqlitePool> {
        if let Some(p) = self.read_pool.get() {
            return Ok(p);
        }
        let pool = connect(&self.io, &self.path, Access::Read, READ_BACK_CONNECTIONS)?;
        Ok(self.read_pool.get_or_init(|| pool))
    }

    /// Deletes the rows `selection` names.
    async fn delete_rows(&self, conn: &mut SqliteConnection, selection: &Selection) -> Result<()> {
        let here = self.here();
        let head = format!("DELETE FROM {}", quote_ident(&self.table));
        for (sql, binds) in self.filtered(&head, selection)? {
            let mut q = sqlx::query(stmt(sql));
            for b in &binds {
                q = bind_key(q, b);
            }
            q.execute(&mut *conn)
                .await
                .map_err(|e| db_error(&here, e))?;
        }
        Ok(())
    }

    /// Deletes what a commit of `chunk` (rows in `selection`) wrote.
    async fn delete_chunk(
        &self,
        conn: &mut SqliteConnection,
        chunk: usize,
        selection: &Selection,
    ) -> Result<()> {
        self.delete_rows(conn, selection).await?;
        self.rejects().delete(conn, &self.here(), chunk).await
    }

    /// Reads back the rows `v` selects on `conn`: first the values as stored against
    /// those bound (`bound`), without decoding; only if they differ are the rows decoded
    /// and compared with what was sent, which decides (a value SQLite stored in another
    /// class may still read back the same) and names the first difference.
    async fn read_back(
        &self,
        conn: &mut SqliteConnection,
        v: &ReadBack<'_>,
        bound: &StoredSum,
    ) -> Result<()> {
        let t0 = Instant::now();
        let stored = self.stored_sum(conn, &v.selection).await?;
        if stored == *bound && bound.rows == v.rows {
            v.passed(t0);
            return Ok(());
        }
        let back = self.select_rows(conn, &v.selection, v.key).await?;
        if self.read_schema == self.schema {
            return v.verify(&back, t0);
        }
        // Compared as a reader sees them: a `real` as the double the table holds.
        let sent = widen_reals(v.sent, &self.read_schema)?;
        v.as_sent(&sent)?.verify(&back, t0)
    }

    /// [`Self::read_back`] of committed rows, on a read connection.
    fn read_back_committed(&self, v: &ReadBack<'_>, bound: &StoredSum) -> Result<()> {
        let here = self.here();
        let pool = self.read_pool()?;
        self.io.block_on(async {
            let mut conn = pool.acquire().await.map_err(|e| db_error(&here, e))?;
            self.read_back(&mut conn, v, bound).await
        })
    }

    /// The write pool, created (with the file) on first use. One connection: SQLite has a
    /// single writer, and chunks queue for it.
    fn pool(&self) -> Result<&SqlitePool> {
        if let Some(p) = self.pool.get() {
            return Ok(p);
        }
        let pool = connect(&self.io, &self.path, Access::Write, 1)?;
        Ok(self.pool.get_or_init(|| pool))
    }

    /// The table's row count if it exists, looked up without creating or changing the file.
    fn existing_rows(&self) -> Result<Option<i64>> {
        if !self.path.exists() {
            return Ok(None);
        }
        let here = self.here();
        let pool = connect(&self.io, &self.path, Access::Inspect, 1)?;
        let t = quote_ident(&self.table);
        let rows = self.io.block_on(async {
            if table_columns(&pool, &self.table, &here).await?.is_none() {
                return Ok(None);
            }
            let n: i64 = sqlx::query_scalar(stmt(format!("SELECT count(*) FROM {t}")))
                .fetch_one(&pool)
                .await
                .map_err(|e| db_error(&here, e))?;
            Ok::<_, Error>(Some(n))
        });
        self.io.block_on(pool.close());
        rows
    }

    /// Marks `mark`'s chunk done in the sink's transaction.
    async fn mark(
        &self,
        conn: &mut SqliteConnection,
        pipeline: &str,
        mark: &DoneMark,
    ) -> Result<()> {
        // Refused when another run took the chunk over: the rows roll back.
        tables(pipeline).mark_done(conn, &self.here(), mark).await
    }

    /// Writes the claims and marks the ledger holds, before a transaction of the
    /// caller's, who holds the write lock.
    async fn write_ledger(&self, pool: &SqlitePool) -> Result<()> {
        let Some(ledger) = self.ledger.get() else {
            return Ok(());
        };
        let mut conn = pool.acquire().await.map_err(|e| db_error(self.here(), e))?;
        ledger.write_queued(&mut conn).await
    }

    /// After inserting `batches` failed with `first`, a refusal: see
    /// [`refuse::refusals`]. The caller holds the write lock. `clear` is the selection
    /// the failed transaction had deleted before inserting.
    async fn refusals(
        &self,
        failed: sqlx::Transaction<'_, sqlx::Sqlite>,
        pool: &sqlx::SqlitePool,
        batches: &[RecordBatch],
        first: Error,
        clear: Option<&Selection>,
    ) -> Error {
        refuse::refusals(
            failed,
            pool,
            &self.here(),
            super::errors::error,
            batches,
            self.key.as_ref().map_or(&[][..], |k| k.columns.as_slice()),
            first,
            async |conn: &mut SqliteConnection| match clear {
                Some(selection) => self.delete_rows(conn, selection).await,
                None => Ok(()),
            },
            async |conn: &mut SqliteConnection, part: &[RecordBatch]| {
                self.insert_rows(conn, part).await.map(|_| ())
            },
        )
        .await
    }

    /// Inserts `batches` (made [`bindable`]); returns the rows written.
    async fn insert_rows(
        &self,
        conn: &mut SqliteConnection,
        batches: &[RecordBatch],
    ) -> Result<u64> {
        let here = self.here();
        let width = self.schema.fields().len();
        let head = format!(
            "INSERT INTO {} ({}) VALUES ",
            quote_ident(&self.table),
            self.columns
                .iter()
                .map(|c| quote_ident(&c.name))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let rows_per_stmt = (MAX_PARAMS / width.max(1)).clamp(1, 500);
        let row_sql = format!("({})", vec!["?"; width].join(", "));
        let statement = |rows: usize| format!("{head}{}", vec![row_sql.as_str(); rows].join(", "));
        let mut lock = conn.lock_handle().await.map_err(|e| db_error(&here, e))?;
        let raw = RawConn::new(&mut lock);
        let failed = |e: RawError| db_error(&here, e.into());
        // One statement for full groups of rows, prepared once per chunk and re-bound.
        let mut full = raw
            .prepare(&statement(rows_per_stmt), &[])
            .map_err(failed)?;
        let mut written = 0u64;
        let mut values: Vec<Bind<'_>> = Vec::with_capacity(rows_per_stmt * width);
        for batch in batches {
            let cells = Cells::new(batch)?;
            let mut start = 0;
            while start < batch.num_rows() {
                let n = rows_per_stmt.min(batch.num_rows() - start);
                let mut rest;
                let st = if n == rows_per_stmt {
                    &mut full
                } else {
                    rest = raw.prepare(&statement(n), &[]).map_err(failed)?;
                    &mut rest
                };
                values.clear();
                for row in start..start + n {
                    cells.push_row(row, &mut values);
                }
                written += st.execute_with(&values).map_err(failed)?;
                start += n;
            }
        }
        Ok(written)
    }

    /// `head` (a SELECT or DELETE) restricted to `selection`: one statement, or several
    /// for a long key list, each with its bound values.
    fn filtered(&self, head: &str, selection: &Selection) -> Result<Vec<(String, Vec<KeyValue>)>> {
        let mut queries: Vec<(String, Vec<KeyValue>)> = Vec::new();
        // Text compares in byte order (BINARY), the order chunks are planned in and
        // equality a NOCASE column cannot blur.
        let keyset = |columns: &[String]| {
            KeySql::new(
                columns.iter().map(|c| quote_ident(c)).collect(),
                columns
                    .iter()
                    .map(|c| {
                        let ty = self.columns.iter().find(|d| &d.name == c).map(|d| d.ty);
                        match ty {
                            Some(ColumnType::Text | ColumnType::Varchar(_)) => {
                                format!("{} COLLATE BINARY", quote_ident(c))
                            }
                            _ => quote_ident(c),
                        }
                    })
                    .collect(),
            )
        };
        match selection {
            Selection::Range { columns, lo, hi } => {
                let mut binds = Vec::new();
                let range =
                    keyset(columns).range(lo.as_ref(), hi.as_ref(), &mut marks(&mut binds))?;
                queries.push((format!("{head} WHERE {range}"), binds));
            }
            Selection::Keys { columns, keys } => {
                let rows = keys.first().map_or(0, |k| k.len());
                let values: Vec<KeyValue> = (0..rows)
                    .filter_map(|r| {
                        let parts = keys.iter().map(|k| key_of(k, r)).collect::<Option<_>>()?;
                        Some(KeyValue::from_parts(parts))
                    })
                    .collect();
                let keyset = keyset(columns);
                // SQLite takes at most 32766 parameters per statement.
                for group in values.chunks(KEYS_PER_QUERY.min(30_000 / columns.len().max(1))) {
                    let mut binds = Vec::new();
                    let cond = keyset.one_of(group, &mut marks(&mut binds))?;
                    queries.push((format!("{head} WHERE {cond}"), binds));
                }
            }
            Selection::All => queries.push((head.to_string(), Vec::new())),
            Selection::Files => {
                return Err(Error::Internal("a table has no part files".into()));
            }
        }
        Ok(queries)
    }

    /// Reads the rows `selection` names, decoded into the target schema the way they were
    /// bound, so that a value the database changed reads back different.
    async fn select_rows(
        &self,
        conn: &mut SqliteConnection,
        selection: &Selection,
        key: &[String],
    ) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        self.select_each(conn, selection, key, &mut |b| {
            out.push(b);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// `SELECT <every target column> FROM <table>`.
    fn select_all(&self) -> String {
        let columns: Vec<String> = self.columns.iter().map(|c| quote_ident(&c.name)).collect();
        format!(
            "SELECT {} FROM {}",
            columns.join(", "),
            quote_ident(&self.table)
        )
    }

    /// The [`StoredSum`] of the rows `selection` names, read as stored.
    async fn stored_sum(
        &self,
        conn: &mut SqliteConnection,
        selection: &Selection,
    ) -> Result<StoredSum> {
        let here = self.here();
        let head = self.select_all();
        let mut sum = StoredSum::default();
        let mut lock = conn.lock_handle().await.map_err(|e| db_error(&here, e))?;
        let raw = RawConn::new(&mut lock);
        for (sql, binds) in self.filtered(&head, selection)? {
            let mut rows = raw
                .prepare(&sql, &binds)
                .map_err(|e| db_error(&here, e.into()))?;
            while rows.step().map_err(|e| db_error(&here, e.into()))? {
                sum.add_stored(&rows, self.columns.len());
            }
        }
        Ok(sum)
    }

    /// Reads committed rows on a read-only connection of its own, batch by batch.
    fn read_each(
        &self,
        selection: &Selection,
        key: &[String],
        emit: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let pool = connect(&self.io, &self.path, Access::Read, 1)?;
        let here = self.here();
        let out = self.io.block_on(async {
            let mut conn = pool.acquire().await.map_err(|e| db_error(&here, e))?;
            self.select_each(&mut conn, selection, key, emit).await
        });
        self.io.block_on(pool.close());
        out
    }

    /// [`Self::select_rows`], handing over each batch as soon as it is full, so a whole
    /// table can be read in bounded memory.
    async fn select_each(
        &self,
        conn: &mut SqliteConnection,
        selection: &Selection,
        key: &[String],
        emit: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let here = self.here();
        let head = self.select_all();
        let queries = self.filtered(&head, selection)?;
        let raw_schema = Arc::new(arrow::datatypes::Schema::new(
            self.columns
                .iter()
                .zip(&self.kinds)
                .map(|(c, k)| arrow::datatypes::Field::new(&c.name, k.arrow_type(), true))
                .collect::<Vec<_>>(),
        ));
        let key = KeyCols::find(key, self.columns.iter().map(|c| c.name.as_str()));
        let mut builder = BatchBuilder::new(&self.kinds, READ_BATCH);
        let mut lock = conn.lock_handle().await.map_err(|e| db_error(&here, e))?;
        let raw = RawConn::new(&mut lock);
        for (sql, binds) in queries {
            let mut rows = raw
                .prepare(&sql, &binds)
                .map_err(|e| db_error(&here, e.into()))?;
            while rows.step().map_err(|e| db_error(&here, e.into()))? {
                builder
                    .push(&rows, &raw_schema, &key, &here)
                    .map_err(Error::Row)?;
                if builder.len == READ_BATCH {
                    emit(builder.finish(&raw_schema, &self.read_schema, &here)?)?;
                }
            }
        }
        if builder.len > 0 {
            emit(builder.finish(&raw_schema, &self.read_schema, &here)?)?;
        }
        Ok(())
    }
}

/// Rows per batch when reading rows back.
const READ_BATCH: usize = 8192;

/// Read connections for read-backs after the commit: more than the chunks that commit
/// at once ever need, since each holds one only while reading back.
const READ_BACK_CONNECTIONS: u32 = 8;

/// The key part at `row` of `keys`, as a value to bind.
fn key_of(keys: &ArrayRef, row: usize) -> Option<KeyValue> {
    if keys.is_null(row) {
        return None;
    }
    Some(match keys.data_type() {
        DataType::Int16 => KeyValue::Int(keys.as_primitive::<Int16Type>().value(row) as i64),
        DataType::Int32 => KeyValue::Int(keys.as_primitive::<Int32Type>().value(row) as i64),
        DataType::Int64 => KeyValue::Int(keys.as_primitive::<Int64Type>().value(row)),
        // Other types are stored as text (see `Cells`), so they are looked up as text.
        _ => KeyValue::Text(
            ArrayFormatter::try_new(keys.as_ref(), &FORMAT)
                .ok()?
                .value(row)
                .to_string(),
        ),
    })
}

impl Sink for SqliteSink {
    crate::sink::replay::online_methods!();

    fn refuses_rows(&self) -> bool {
        true
    }

    fn refusals_before_sending(
        &self,
        batches: &[RecordBatch],
    ) -> Result<Vec<crate::sink::Refusal>> {
        Ok(nan_refusals(batches, 0))
    }

    fn describe(&self) -> String {
        self.here()
    }

    fn planned_ddl(&self) -> Result<Vec<String>> {
        let t = quote_ident(&self.table);
        let mut out = table::planned_ddl(
            self.existing_rows()?,
            self.if_exists,
            &t,
            self.create_table_sql(),
        );
        out.push(self.rejects().create_sql());
        // SQL over the table compares text as text: say so where a number is kept as one.
        let real = match self.if_exists {
            IfExists::Replace => Arc::new(vec![false; self.columns.len()]),
            _ => self.decimals_as_real(None)?,
        };
        for (DeclaredColumn { name, ty, .. }, real) in self.columns.iter().zip(real.iter()) {
            let ColumnType::Decimal { precision, .. } = ty else {
                continue;
            };
            if *real {
                continue;
            }
            let order = if *precision <= 15 {
                format!(
                    "for numeric order, create the table beforehand with {} REAL: a numeric of up to 15 digits is then stored as the double whose shortest decimal is its value, which loses nothing",
                    quote_ident(name)
                )
            } else {
                "SQLite has no numeric type that holds more than 15 significant digits without rounding".to_string()
            };
            out.push(format!(
                "-- warning: column {name} is {ty}, stored as its exact text (TEXT): max(), min(), ORDER BY and comparisons in SQL compare it as text ('994.6' > '1010.7'); {order}"
            ));
        }
        Ok(out)
    }

    fn prepare(&self, how: Prepare) -> Result<()> {
        let here = self.here();
        let t = quote_ident(&self.table);
        let r = self.rejects().table();
        table::check_restart(how, self.if_exists, &here)?;
        let pool = self.pool()?;
        self.io.block_on(async {
            let db = |e| db_error(&here, e);
            if let Some(existing) = table_columns(pool, &self.table, &here).await? {
                let rows: i64 = sqlx::query_scalar(stmt(format!("SELECT count(*) FROM {t}")))
                    .fetch_one(pool)
                    .await
                    .map_err(db)?;
                if table::drops_existing(how, self.if_exists, rows, &here)? {
                    sqlx::query(stmt(traced(format!("DROP TABLE {t}"))))
                        .execute(pool)
                        .await
                        .map_err(db)?;
                    sqlx::query(stmt(traced(format!("DROP TABLE IF EXISTS {r}"))))
                        .execute(pool)
                        .await
                        .map_err(db)?;
                } else {
                    let have: Vec<&str> = existing.iter().map(|c| c.name.as_str()).collect();
                    table::check_columns(self.columns.iter().map(|c| c.name.as_str()), &have, &here)?;
                    self.check_affinities(&existing)?;
                }
            }
            if table_columns(pool, &self.table, &here).await?.is_none() {
                self.created_on_resume
                    .store(how == Prepare::Resume, Ordering::SeqCst);
                sqlx::query(stmt(traced(self.create_table_sql())))
                    .execute(pool)
                    .await
                    .map_err(db)?;
            }
            let now = table_columns(pool, &self.table, &here).await?;
            self.decimals_as_real(Some(now.as_deref().unwrap_or(&[])))?;
            sqlx::query(stmt(traced(self.rejects().create_sql())))
                .execute(pool)
                .await
                .map_err(db)?;
            // A trigger's side effects, or rows of another table whose foreign key points
            // here, would not be undone by deleting a chunk's rows again; only a rolled-back
            // transaction undoes them.
            let entangled: i64 = sqlx::query_scalar(
                "SELECT (SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?1 COLLATE NOCASE) \
                 + (SELECT count(*) FROM sqlite_master AS m, pragma_foreign_key_list(m.name) AS f \
                    WHERE m.type = 'table' AND f.\"table\" = ?1 COLLATE NOCASE)",
            )
            .bind(&self.table)
            .fetch_one(pool)
            .await
            .map_err(db)?;
            self.defer
                .store(self.owns_ranges() && entangled == 0, Ordering::Relaxed);
            Ok(())
        })
    }

    fn post_load(&self) -> Result<Vec<String>> {
        let here = self.here();
        let pool = self.pool()?;
        let post = self.post_load_of(&here);
        self.io.block_on(async {
            let _writing = self.write_lock.lock().await;
            let mut conn = pool.acquire().await.map_err(|e| db_error(&here, e))?;
            post.run(&mut conn).await
        })
    }

    fn planned_prepare(&self, existing: Option<i64>) -> Vec<String> {
        let (table, rejects) = (
            format!("DROP TABLE {}", quote_ident(&self.table)),
            format!("DROP TABLE IF EXISTS {}", self.rejects().table()),
        );
        table::PreparePlan {
            prelude: None,
            drops: vec![table, rejects],
            create_table: self.create_table_sql(),
            create_rejects: self.rejects().create_sql(),
        }
        .statements(existing, self.if_exists)
    }

    fn planned_post_load(
        &self,
        catalog: &mut dyn FnMut(crate::sql::dialect::Stmt) -> Result<Vec<i64>>,
    ) -> Result<Vec<String>> {
        self.post_load_of(&self.here()).planned(catalog)
    }

    fn check_done(&self, chunks: &[usize]) -> Result<()> {
        table::check_not_recreated(
            self.created_on_resume.load(Ordering::SeqCst),
            chunks,
            &self.here(),
        )
    }

    fn settle(&self, unfinished: &[(usize, Selection)]) -> Result<()> {
        if !self.owns_ranges() {
            return Ok(());
        }
        let ranges: Vec<_> = unfinished
            .iter()
            .filter(|(_, s)| matches!(s, Selection::Range { .. }))
            .collect();
        if ranges.is_empty() {
            return Ok(());
        }
        let here = self.here();
        let pool = self.pool()?;
        self.io.block_on(async {
            let _writing = self.write_lock.lock().await;
            let mut tx = pool.begin().await.map_err(|e| db_error(&here, e))?;
            for (chunk, selection) in ranges {
                self.delete_chunk(&mut tx, *chunk, selection).await?;
            }
            tx.commit().await.map_err(|e| db_error(&here, e))
        })
    }

    fn finish(&self) -> Result<()> {
        // The file alone must hold every committed row: a dry run looks at it as
        // unchanging, without the write-ahead log. Closing the last connection folds the
        // log in, but another may still be open (a `references` check reading this file),
        // so fold it in first, whoever else is connected. The read-back connections
        // close first, so that the writer's is the last of this process.
        if let Some(pool) = self.read_pool.get() {
            self.io.block_on(pool.close());
        }
        if let Some(pool) = self.pool.get() {
            let here = self.here();
            self.io.block_on(async {
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(pool)
                    .await
                    .map_err(|e| db_error(&here, e))?;
                pool.close().await;
                Ok::<_, Error>(())
            })?;
        }
        Ok(())
    }

    fn open_chunk(&self, chunk: &Chunk) -> Result<Box<dyn ChunkWriter + '_>> {
        Ok(Box::new(SqliteChunk {
            sink: self,
            chunk: chunk.id,
            batches: Vec::new(),
            rejects: Vec::new(),
            given: 0,
            nan: Vec::new(),
        }))
    }

    fn read_rows(
        &self,
        _chunk: usize,
        selection: &Selection,
        key: &[String],
    ) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        self.read_each(selection, key, &mut |b| {
            out.push(b);
            Ok(())
        })?;
        Ok(out)
    }

    fn remove_rows(&self, _chunk: usize, selection: &Selection) -> Result<()> {
        let here = self.here();
        let pool = self.pool()?;
        self.io.block_on(async {
            let _writing = self.write_lock.lock().await;
            let mut tx = pool.begin().await.map_err(|e| db_error(&here, e))?;
            self.delete_rows(&mut tx, selection).await?;
            tx.commit().await.map_err(|e| db_error(&here, e))
        })
    }

    fn scan(&self, f: &mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<()> {
        // Called after `prepare` or on a target with a quarantine: the table exists.
        // Checks see rows in the target schema, as a run's transform gives them.
        let here = self.here();
        self.read_each(&Selection::All, &[], &mut |b| {
            f(narrow_reals(b, &self.schema, &here)?)
        })
    }

    fn as_read_back(&self, sent: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        widen_reals(&sent, &self.read_schema)
    }

    fn checkpoint_store(&self, pipeline: &str) -> Option<Arc<dyn CheckpointStore>> {
        let _ = self.pipeline.set(pipeline.to_string());
        let ledger = self.ledger.get_or_init(|| {
            Ledger::new(&self.path, pipeline, &self.io, Arc::clone(&self.write_lock))
        });
        Some(Arc::new(
            SqliteStore::new(&self.path, pipeline, &self.io).with_ledger(Arc::clone(ledger)),
        ))
    }

    fn quarantine(&self) -> String {
        format!("{} table {}", self.shown, self.rejects().name())
    }

    fn read_quarantine(&self) -> Result<Vec<QuarantineEntry>> {
        if !self.path.exists() {
            return Ok(Vec::new());
        }
        let here = self.quarantine();
        let pool = connect(&self.io, &self.path, Access::Read, 1)?;
        let out = self.io.block_on(async {
            let mut conn = pool.acquire().await.map_err(|e| db_error(&here, e))?;
            self.rejects().read(&mut conn, &here).await
        });
        self.io.block_on(pool.close());
        out
    }

    fn requeue(
        &self,
        chunk: usize,
        passing: &[RecordBatch],
        remaining: &[QuarantineEntry],
        verify: Option<&ReadBack>,
    ) -> Result<u64> {
        let here = self.here();
        let pool = self.pool()?;
        table::refuse(nan_refusals(passing, 0))?;
        let real = self.decimals_as_real(None)?;
        let passing = passing
            .iter()
            .map(|b| bindable(b, &here, &real))
            .collect::<Result<Vec<_>>>()?;
        self.io.block_on(async {
            let _writing = self.write_lock.lock().await;
            let mut tx = pool.begin().await.map_err(|e| db_error(&here, e))?;
            // Rows already under the retried keys (a key need not be unique) stay.
            let there = match verify {
                Some(v) => self.select_rows(&mut tx, &v.selection, v.key).await?,
                None => Vec::new(),
            };
            let written = match self.insert_rows(&mut tx, &passing).await {
                Ok(w) => w,
                Err(e) => return Err(self.refusals(tx, pool, &passing, e, None).await),
            };
            if let Some(v) = verify {
                let t0 = Instant::now();
                let back = self.select_rows(&mut tx, &v.selection, v.key).await?;
                let sent = widen_reals(v.sent, &self.read_schema)?;
                v.as_sent(&sent)?.verify_beside(&there, &back, t0)?;
            }
            self.rejects()
                .replace(&mut tx, &here, chunk, remaining)
                .await?;
            tx.commit().await.map_err(|e| db_error(&here, e))?;
            Ok(written)
        })
    }
}

/// Buffers a chunk's batches (bounded by the chunk size) and inserts them in one
/// transaction at commit, so writers queue for SQLite's single write lock only briefly.
/// Whatever can be done without the lock is done before taking it: formatting values
/// as they are stored, and hashing them for the read-back. Workers take turns at that
/// lock, so work done under it adds to the wall time in full, while work done before it
/// overlaps another worker's commit.
struct SqliteChunk<'a> {
    sink: &'a SqliteSink,
    chunk: usize,
    /// The chunk's batches, made [`bindable`].
    batches: Vec<RecordBatch>,
    rejects: Vec<QuarantineEntry>,
    /// Rows given so far, counted across batches.
    given: usize,
    /// Rows holding a float NaN, which SQLite would store as NULL: the commit refuses
    /// them, and the chunk is written again without them.
    nan: Vec<crate::sink::Refusal>,
}

impl ChunkWriter for SqliteChunk<'_> {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() > 0 {
            let real = self.sink.decimals_as_real(None)?;
            let nan = nan_refusals(std::slice::from_ref(batch), self.given);
            self.given += batch.num_rows();
            if !nan.is_empty() {
                // The chunk is refused at its commit and written again without them.
                self.nan.extend(nan);
                return Ok(());
            }
            self.batches
                .push(bindable(batch, &self.sink.here(), &real)?);
        }
        Ok(())
    }

    fn reject(&mut self, entries: Vec<QuarantineEntry>) -> Result<()> {
        self.rejects.extend(entries);
        Ok(())
    }

    fn commit(self: Box<Self>, mark: &DoneMark, verify: Option<&ReadBack>) -> Result<Committed> {
        if !self.nan.is_empty() {
            return Err(Error::Refused(self.nan));
        }
        let sink = self.sink;
        let here = sink.here();
        let pool = sink.pool()?;
        let bound = match verify {
            Some(_) => Some(bound_sum(&self.batches)?),
            None => None,
        };
        let after = verify.filter(|v| sink.defers_read_back(&v.selection));
        let (rows, marked) = sink.io.block_on(async {
            let db = |e| db_error(&here, e);
            let _writing = sink.write_lock.lock().await;
            sink.write_ledger(pool).await?;
            let mut tx = pool.begin().await.map_err(db)?;
            // The chunk's quarantine is replaced, and so are its rows when it is read back
            // after the commit: an attempt that died before its read-back left them.
            // Otherwise a chunk redone after a crash never committed, so it has no rows
            // here yet.
            let clear = after.map(|v| &v.selection);
            sink.rejects().delete(&mut tx, &here, self.chunk).await?;
            if let Some(selection) = clear {
                sink.delete_rows(&mut tx, selection).await?;
            }
            sink.rejects()
                .insert(&mut tx, &here, self.chunk, &self.rejects)
                .await?;
            let rows = match sink.insert_rows(&mut tx, &self.batches).await {
                Ok(w) => w,
                Err(e) => return Err(sink.refusals(tx, pool, &self.batches, e, clear).await),
            };
            // Read back inside the transaction: what the database stored, before anything
            // of the chunk is visible, so a mismatch rolls the whole chunk back.
            if let (Some(v), Some(bound), None) = (verify, &bound, after) {
                sink.read_back(&mut tx, v, bound).await?;
            }
            let marked = match (sink.pipeline.get(), after) {
                (Some(p), None) => {
                    sink.mark(&mut tx, p, &mark.verified(verify.map(ReadBack::seconds)))
                        .await?;
                    true
                }
                // Marked done only after the read-back: the rows commit only while the
                // chunk is still this run's.
                (Some(p), Some(_)) => {
                    tables(p).holds_claim(&mut tx, &here, mark).await?;
                    false
                }
                _ => false,
            };
            tx.commit().await.map_err(db)?;
            Ok::<_, Error>((rows, marked))
        })?;
        let (Some(v), Some(bound)) = (after, bound) else {
            return Ok(Committed { rows, marked });
        };
        crate::fault::crash_point(self.chunk, "committed");
        if let Some(sql) = crate::fault::fault_sql(self.chunk, "committed") {
            sink.io
                .block_on(sqlx::raw_sql(stmt(sql)).execute(pool))
                .map_err(|e| db_error(&here, e))?;
        }
        // The rows are committed but the chunk is still running: the next chunk's insert
        // goes on while this one reads back.
        if let Err(mismatch) = sink.read_back_committed(v, &bound) {
            let deleted = sink.io.block_on(async {
                let db = |e| db_error(&here, e);
                let _writing = sink.write_lock.lock().await;
                sink.write_ledger(pool).await?;
                let mut tx = pool.begin().await.map_err(db)?;
                sink.delete_chunk(&mut tx, self.chunk, &v.selection).await?;
                tx.commit().await.map_err(db)
            });
            // Rows that could not be deleted again are left to the chunk's next attempt,
            // in this run or the next, which deletes them first.
            return Err(match deleted {
                Ok(()) => mismatch,
                Err(cleanup) => Error::Check(format!(
                    "{mismatch}; deleting the chunk's rows again failed too ({cleanup}), so they stay in the target until the chunk is run again"
                )),
            });
        }
        match sink.ledger.get() {
            Some(ledger) => {
                ledger.hand_over(Entry::Done(mark.verified(verify.map(ReadBack::seconds))));
                Ok(Committed { rows, marked: true })
            }
            None => Ok(Committed {
                rows,
                marked: false,
            }),
        }
    }
}

/// The rows of `batches` (counted across them, from `first`) holding a float NaN, which
/// SQLite stores as NULL: refused with the column, so that they go to the quarantine
/// and the rest of their chunk is written.
fn nan_refusals(batches: &[RecordBatch], first: usize) -> Vec<crate::sink::Refusal> {
    let mut out = Vec::new();
    let mut offset = first;
    for batch in batches {
        let mut seen = std::collections::HashSet::new();
        for (field, array) in batch.schema_ref().fields().iter().zip(batch.columns()) {
            let nan_at = |row: usize| match array.data_type() {
                DataType::Float32 => {
                    array.is_valid(row) && array.as_primitive::<Float32Type>().value(row).is_nan()
                }
                DataType::Float64 => {
                    array.is_valid(row) && array.as_primitive::<Float64Type>().value(row).is_nan()
                }
                _ => false,
            };
            for row in 0..batch.num_rows() {
                if nan_at(row) && seen.insert(row) {
                    out.push(crate::sink::Refusal {
                        row: offset + row,
                        column: Some(field.name().clone()),
                        detail: Some("NaN".into()),
                        reason: "SQLite stores NaN as NULL, which would change the value".into(),
                    });
                }
            }
        }
        offset += batch.num_rows();
    }
    out.sort_by_key(|r| r.row);
    out
}

/// `schema` with each `real` (Float32) column as the double SQLite stores for it.
fn as_stored_schema(schema: &SchemaRef) -> SchemaRef {
    Arc::new(arrow::datatypes::Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Float32 => f.as_ref().clone().with_data_type(DataType::Float64),
                _ => f.as_ref().clone(),
            })
            .collect::<Vec<_>>(),
    ))
}

/// `batches` (target rows) as the table holds them (`stored`, see
/// [`as_stored_schema`]): each `real` as [`float32_as_double`] of it.
fn widen_reals(batches: &[RecordBatch], stored: &SchemaRef) -> Result<Vec<RecordBatch>> {
    batches
        .iter()
        .map(|b| {
            if b.schema_ref() == stored {
                return Ok(b.clone());
            }
            let columns = b
                .columns()
                .iter()
                .map(|c| match c.data_type() {
                    DataType::Float32 => Arc::new(
                        c.as_primitive::<Float32Type>()
                            .unary::<_, Float64Type>(float32_as_double),
                    ) as ArrayRef,
                    _ => c.clone(),
                })
                .collect();
            let fields: Vec<_> = b
                .schema_ref()
                .fields()
                .iter()
                .zip(stored.fields())
                .map(|(f, s)| f.as_ref().clone().with_data_type(s.data_type().clone()))
                .collect();
            RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns)
                .map_err(|e| Error::Internal(e.to_string()))
        })
        .collect()
}

/// A batch read from the table (see [`as_stored_schema`]) in the target `schema`: each
/// stored double of a `real` column as the float32 it stores. A double no float32 is
/// stored as (another writer's) fails, naming the column and value.
fn narrow_reals(batch: RecordBatch, schema: &SchemaRef, here: &str) -> Result<RecordBatch> {
    if batch.schema_ref() == schema {
        return Ok(batch);
    }
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (c, f) in batch.columns().iter().zip(schema.fields()) {
        if f.data_type() != &DataType::Float32 || c.data_type() != &DataType::Float64 {
            columns.push(c.clone());
            continue;
        }
        let doubles = c.as_primitive::<Float64Type>();
        let mut out = arrow::array::Float32Builder::with_capacity(doubles.len());
        for v in doubles.iter() {
            match v.map(|d| (d, double_as_float32(d))) {
                None => out.append_null(),
                Some((_, Some(r))) => out.append_value(r),
                Some((d, None)) => {
                    return Err(Error::Row(crate::RowFailure {
                        location: here.to_string(),
                        column: Some(f.name().clone()),
                        value: Some(d.to_string()),
                        reason: "the real column holds a double that no real value is stored as"
                            .into(),
                    }));
                }
            }
        }
        columns.push(Arc::new(out.finish()) as ArrayRef);
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::Internal(e.to_string()))
}

/// Writes `days` since 1970-01-01 as `YYYY-MM-DD`, as the `%Y-%m-%d` formatter does for
/// years 0 to 9999, without parsing a format string per value. `false` for other years,
/// which the formatter writes.
fn write_date(text: &mut String, days: i32) -> bool {
    use chrono::Datelike;
    let Some(date) = chrono::NaiveDate::from_num_days_from_ce_opt(days.saturating_add(719_163))
    else {
        return false;
    };
    let (y, m, d) = (date.year(), date.month(), date.day());
    if !(0..=9999).contains(&y) {
        return false;
    }
    let digit = |v: u32| char::from(b'0' + v as u8);
    let y = y as u32;
    for c in [
        digit(y / 1000),
        digit(y / 100 % 10),
        digit(y / 10 % 10),
        digit(y % 10),
        '-',
        digit(m / 10),
        digit(m % 10),
        '-',
        digit(d / 10),
        digit(d % 10),
    ] {
        text.push(c);
    }
    true
}

/// The [`StoredSum`] of the values binding `batches` (made [`bindable`]) binds, which
/// the read-back compares with the sum of the values as stored.
fn bound_sum(batches: &[RecordBatch]) -> Result<StoredSum> {
    let mut sum = StoredSum::default();
    let mut row_values = Vec::new();
    for batch in batches {
        let cells = Cells::new(batch)?;
        for row in 0..batch.num_rows() {
            row_values.clear();
            cells.push_row(row, &mut row_values);
            sum.add_bound(&row_values);
        }
    }
    Ok(sum)
}

const FORMAT: FormatOptions<'static> = FormatOptions::new()
    .with_date_format(Some("%Y-%m-%d"))
    .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.f"))
    .with_timestamp_tz_format(Some("%Y-%m-%d %H:%M:%S%.f%:z"));

/// `batch` as SQLite stores it, column by column: decimals, dates, times and timestamps
/// as the text they are stored as (see [`ColumnType::sqlite_decl`]); every other column
/// as it is. A float NaN is refused: SQLite would store it as NULL.
fn bindable(batch: &RecordBatch, here: &str, real: &[bool]) -> Result<RecordBatch> {
    use arrow::array::StringBuilder;
    let schema = batch.schema_ref();
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (i, (field, array)) in schema.fields().iter().zip(batch.columns()).enumerate() {
        let nan = || {
            Error::Row(crate::RowFailure {
                location: here.to_string(),
                column: Some(field.name().to_string()),
                value: Some("NaN".into()),
                reason: "SQLite stores NaN as NULL, which would change the value".into(),
            })
        };
        let column = match array.data_type() {
            // A `numeric` in a REAL column: the double nearest its value, whose shortest
            // decimal is the value (precision at most 15 digits, checked when the table
            // was found).
            DataType::Decimal128(..) if real.get(i).copied().unwrap_or(false) => {
                let f = ArrayFormatter::try_new(array.as_ref(), &FORMAT)
                    .map_err(|e| Error::data(here, e))?;
                let mut doubles = arrow::array::Float64Builder::with_capacity(array.len());
                for row in 0..array.len() {
                    if array.is_null(row) {
                        doubles.append_null();
                        continue;
                    }
                    let text = f.value(row).to_string();
                    let v: f64 = text.parse().map_err(|e| Error::data(here, e))?;
                    doubles.append_value(v);
                }
                Arc::new(doubles.finish()) as ArrayRef
            }
            DataType::Decimal128(..)
            | DataType::Date32
            | DataType::Time64(_)
            | DataType::Timestamp(..) => {
                let f = ArrayFormatter::try_new(array.as_ref(), &FORMAT)
                    .map_err(|e| Error::data(here, e))?;
                let days = (array.data_type() == &DataType::Date32)
                    .then(|| array.as_primitive::<Date32Type>());
                let mut text = StringBuilder::with_capacity(array.len(), array.len() * 12);
                let mut value = String::new();
                for row in 0..array.len() {
                    if array.is_null(row) {
                        text.append_null();
                        continue;
                    }
                    value.clear();
                    if !days.is_some_and(|d| write_date(&mut value, d.value(row))) {
                        use std::fmt::Write;
                        write!(value, "{}", f.value(row)).map_err(|e| Error::data(here, e))?;
                    }
                    text.append_value(&value);
                }
                Arc::new(text.finish()) as ArrayRef
            }
            DataType::Float32 => {
                let values = array.as_primitive::<Float32Type>();
                if values.iter().flatten().any(|v| v.is_nan()) {
                    return Err(nan());
                }
                array.clone()
            }
            DataType::Float64 => {
                let values = array.as_primitive::<Float64Type>();
                if values.iter().flatten().any(|v| v.is_nan()) {
                    return Err(nan());
                }
                array.clone()
            }
            DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Boolean
            | DataType::Utf8
            | DataType::Binary => array.clone(),
            other => {
                return Err(Error::Unsupported(format!(
                    "column {}: cannot write {other} to SQLite",
                    field.name()
                )));
            }
        };
        fields.push(arrow::datatypes::Field::new(
            field.name(),
            column.data_type().clone(),
            true,
        ));
        columns.push(column);
    }
    RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns)
        .map_err(|e| Error::Internal(e.to_string()))
}

/// One column of a [`bindable`] batch, typed once rather than per value.
enum Column<'a> {
    I16(&'a arrow::array::Int16Array),
    I32(&'a arrow::array::Int32Array),
    I64(&'a arrow::array::Int64Array),
    Bool(&'a arrow::array::BooleanArray),
    F32(&'a arrow::array::Float32Array),
    F64(&'a arrow::array::Float64Array),
    Text(&'a arrow::array::StringArray),
    Blob(&'a arrow::array::BinaryArray),
}

/// The columns of a [`bindable`] batch, to bind row by row.
struct Cells<'a> {
    columns: Vec<Column<'a>>,
}

impl<'a> Cells<'a> {
    fn new(batch: &'a RecordBatch) -> Result<Self> {
        let columns = batch
            .columns()
            .iter()
            .zip(batch.schema_ref().fields())
            .map(|(a, field)| {
                Ok(match a.data_type() {
                    DataType::Int16 => Column::I16(a.as_primitive()),
                    DataType::Int32 => Column::I32(a.as_primitive()),
                    DataType::Int64 => Column::I64(a.as_primitive()),
                    DataType::Boolean => Column::Bool(a.as_boolean()),
                    DataType::Float32 => Column::F32(a.as_primitive()),
                    DataType::Float64 => Column::F64(a.as_primitive()),
                    DataType::Utf8 => Column::Text(a.as_string()),
                    DataType::Binary => Column::Blob(a.as_binary()),
                    other => {
                        return Err(Error::Internal(format!(
                            "column {}: {other} was not made bindable",
                            field.name()
                        )));
                    }
                })
            })
            .collect::<Result<_>>()?;
        Ok(Cells { columns })
    }

    /// Appends row `row`'s values to `values`.
    fn push_row(&self, row: usize, values: &mut Vec<Bind<'a>>) {
        for column in &self.columns {
            let value = match *column {
                Column::I16(a) => a.is_valid(row).then(|| Bind::Int(a.value(row) as i64)),
                Column::I32(a) => a.is_valid(row).then(|| Bind::Int(a.value(row) as i64)),
                Column::I64(a) => a.is_valid(row).then(|| Bind::Int(a.value(row))),
                Column::Bool(a) => a.is_valid(row).then(|| Bind::Int(a.value(row) as i64)),
                Column::F32(a) => a
                    .is_valid(row)
                    .then(|| Bind::Real(float32_as_double(a.value(row)))),
                Column::F64(a) => a.is_valid(row).then(|| Bind::Real(a.value(row))),
                Column::Text(a) => a.is_valid(row).then(|| Bind::Text(a.value(row))),
                Column::Blob(a) => a.is_valid(row).then(|| Bind::Blob(a.value(row))),
            };
            values.push(value.unwrap_or(Bind::Null));
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, Date32Array};
    use arrow::util::display::ArrayFormatter;

    #[test]
    fn bindable_batches_hold_what_sqlite_stores_and_refuse_nan() {
        use arrow::array::{
            Decimal128Array, Float64Array, Int16Array, StringArray, TimestampMicrosecondArray,
        };
        use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
        use arrow::record_batch::RecordBatch;
        use std::sync::Arc;

        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int16, true),
            Field::new("d", DataType::Date32, true),
            Field::new("price", DataType::Decimal128(10, 2), true),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("x", DataType::Float64, true),
        ]));
        let batch = |x: Vec<Option<f64>>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int16Array::from(vec![Some(-7), None])),
                    Arc::new(Date32Array::from(vec![Some(19_782), None])),
                    Arc::new(
                        Decimal128Array::from(vec![Some(1250), Some(-5)])
                            .with_precision_and_scale(10, 2)
                            .unwrap(),
                    ),
                    Arc::new(TimestampMicrosecondArray::from(vec![
                        Some(1_700_000_000_123_456),
                        None,
                    ])),
                    Arc::new(Float64Array::from(x)),
                ],
            )
            .unwrap()
        };
        let out = super::bindable(&batch(vec![Some(1.5), None]), "t", &[]).unwrap();
        let text = |i: usize| {
            let a = out
                .column(i)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            (0..a.len())
                .map(|r| a.is_valid(r).then(|| a.value(r).to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(out.column(0).data_type(), &DataType::Int16);
        assert_eq!(text(1), vec![Some("2024-02-29".to_string()), None]);
        assert_eq!(
            text(2),
            vec![Some("12.50".to_string()), Some("-0.05".to_string())]
        );
        assert_eq!(
            text(3),
            vec![Some("2023-11-14 22:13:20.123456".to_string()), None]
        );
        assert_eq!(out.column(4).data_type(), &DataType::Float64);

        // The sum of a bindable batch is the sum of the values it binds.
        let mut expected = crate::db::sqlite::decode::StoredSum::default();
        use crate::db::sqlite::decode::Bind;
        expected.add_bound(&[
            Bind::Int(-7),
            Bind::Text("2024-02-29"),
            Bind::Text("12.50"),
            Bind::Text("2023-11-14 22:13:20.123456"),
            Bind::Real(1.5),
        ]);
        expected.add_bound(&[
            Bind::Null,
            Bind::Null,
            Bind::Text("-0.05"),
            Bind::Null,
            Bind::Null,
        ]);
        assert_eq!(super::bound_sum(&[out]).unwrap(), expected);

        let err = super::bindable(
            &batch(vec![None, Some(f64::NAN)]),
            "sqlite://out.db table t",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.ends_with(
                "sqlite://out.db table t, column x, value 'NaN': SQLite stores NaN as NULL, \
                 which would change the value"
            ),
            "{err}"
        );
    }

    #[test]
    fn dates_are_written_as_the_formatter_writes_them() {
        let days = [
            i32::MIN,
            -719_529,
            -719_528,
            -719_162,
            -1,
            0,
            59,
            60,
            11_016,
            19_782,
            2_932_896,
            2_932_897,
            i32::MAX,
        ];
        let array = Date32Array::from(days.to_vec());
        let formatter = ArrayFormatter::try_new(&array as &dyn Array, &super::FORMAT).unwrap();
        for (row, d) in days.iter().enumerate() {
            let mut fast = String::new();
            if super::write_date(&mut fast, *d) {
                assert_eq!(fast, formatter.value(row).to_string(), "day {d}");
            } else {
                let year = formatter.value(row).to_string();
                assert!(
                    !year.starts_with(|c: char| c.is_ascii_digit()) || year.len() > 10,
                    "day {d}: {year}"
                );
            }
        }
        let mut text = String::new();
        assert!(super::write_date(&mut text, 19_782));
        assert_eq!(text, "2024-02-29");
    }
}
