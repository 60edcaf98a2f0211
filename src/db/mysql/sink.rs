//! A MySQL or MariaDB table, written with multi-row `INSERT` statements of bound values,
//! each under the protocol's 65,535 placeholders and a quarter of the server's
//! `max_allowed_packet`. Each chunk's rows, its rejected rows (in `<table>_rejects`) and
//! its checkpoint mark commit in one InnoDB transaction, so a chunk lands whole or not at
//! all, and a chunk redone after a crash never doubles.
//!
//! Connections run in strict mode (see [`crate::db::mysql`]): a value the server would
//! truncate or coerce is an error that fails the chunk instead of a warning, and the
//! read-back inside the transaction catches whatever strict mode lets through.
//!
//! `write_mode`:
//! - `insert`: `INSERT`.
//! - `upsert`: `INSERT ... ON DUPLICATE KEY UPDATE` every written column that is not part
//!   of the primary key.
//! - `replace-chunk`: delete the chunk's key range (or keys) from the table, then insert.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, Schema, SchemaRef, Time64MicrosecondType, TimestampMicrosecondType,
};
use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use sqlx::MySql;
use sqlx::mysql::{MySqlArguments, MySqlConnection, MySqlRow};

use super::checkpoint::MyStore;
use super::dialect::MyDialect;
use crate::check::quarantine::QuarantineEntry;
use crate::check::readback::ReadBack;
use crate::checkpoint::{CheckpointStore, DoneMark, Tables};
use crate::chunk::Selection;
use crate::chunk::{Chunk, KeyValue, TargetKey};
use crate::config::{IfExists, SecretUrl, TargetConfig, WriteMode};
use crate::db::mysql::errors::error as db_error;
use crate::db::mysql::{
    Decoder, DigestLayout, MAX_PLACEHOLDERS, MyClient, MyColumn, MyKind, RowDigest, literal,
    my_decl, qualified, quote, same_family, table_columns, table_engine, write_date, write_time,
    write_timestamp, written,
};
use crate::runtime::IoRuntime;
use crate::sink::ddl::{self, Declared, PostLoad};
use crate::sink::quarantine::Quarantine;
use crate::sink::table::{self, DeclaredColumn};
use crate::sink::{ChunkWriter, Committed, Prepare, Refusal, Sink, refuse};
use crate::source::SchemaCast;
use crate::sql::keyset::KeySql;
use crate::sql::stmt;
use crate::sql::trace::traced;
use crate::types::ColumnType;
use crate::{Error, Result};

mod replay;

/// Rows per batch when reading rows back.
const READ_BATCH: usize = 8192;

/// Most rows in one `INSERT`: larger statements gain nothing measurable and make each
/// prepared statement's parameter list longer to encode.
const ROWS_PER_INSERT: usize = 2000;

type Query<'q> = sqlx::query::Query<'q, MySql, MySqlArguments>;

/// Writes into one MySQL or MariaDB table.
pub struct MysqlSink {
    client: Arc<MyClient>,
    database: String,
    table: String,
    columns: Vec<DeclaredColumn>,
    /// Each column's read-back decoding, and the schema it decodes into (decimals as
    /// text, cast to `arrow_schema` afterwards).
    kinds: Vec<MyKind>,
    decoded_schema: SchemaRef,
    arrow_schema: SchemaRef,
    if_exists: IfExists,
    write_mode: WriteMode,
    /// The target columns that hold the source key.
    key: Option<TargetKey>,
    pipeline: OnceLock<String>,
    /// The server's `max_allowed_packet`, read on first write.
    packet: OnceLock<usize>,
    /// Set when `prepare` had to create the table on resume: the chunks an earlier run
    /// committed are gone.
    created_on_resume: AtomicBool,
    /// How the stored rows come back as bytes, set by `prepare` when every column's do
    /// follow from the value alone: the read-back then compares a [`RowDigest`] of those
    /// bytes with one of the rows sent, without decoding them.
    digest: OnceLock<Option<DigestLayout>>,
    /// The written columns the table stores more coarsely than declared (see
    /// [`table::Coarse`]), found by `prepare` or the first commit without it.
    coarse: OnceLock<Vec<table::Coarse>>,
    /// The indexes, constraints and foreign keys built after the load.
    declared: Declared,
}

impl MysqlSink {
    /// A sink for `database.table` on `url`. Connects on first use. A declared column
    /// type MySQL cannot hold without loss is an error naming the column.
    pub fn open(
        config: &TargetConfig,
        url: &SecretUrl,
        database: &str,
        arrow_schema: SchemaRef,
        key: Option<TargetKey>,
        io: &IoRuntime,
    ) -> Result<Self> {
        let columns: Vec<_> = config.columns.iter().map(DeclaredColumn::of).collect();
        let table = config
            .table
            .as_ref()
            .map(|t| t.value.clone())
            .unwrap_or_default();
        let shown = url.shown();
        let problems: Vec<String> = columns
            .iter()
            .filter_map(|DeclaredColumn { name, ty, primary_key: pk, .. }| match my_decl(*ty) {
                Err(why) => Some(format!("column `{name}`: {why}")),
                Ok(_) if *pk && *ty == ColumnType::Text => Some(format!(
                    "column `{name}`: a MySQL primary key cannot be LONGTEXT; declare type = \"varchar(N)\""
                )),
                Ok(_) => None,
            })
            .collect();
        if !problems.is_empty() {
            return Err(Error::data(
                format!("{shown} table {database}.{table}"),
                problems.join("; "),
            ));
        }
        let kinds: Vec<MyKind> = columns.iter().map(|c| MyKind::for_type(c.ty)).collect();
        let decoded_schema = Arc::new(Schema::new(
            arrow_schema
                .fields()
                .iter()
                .zip(&kinds)
                .map(|(f, k)| f.as_ref().clone().with_data_type(k.arrow_type()))
                .collect::<Vec<_>>(),
        ));
        Ok(MysqlSink {
            client: Arc::new(MyClient::new(url, &config.db, io)),
            database: database.to_string(),
            table,
            columns,
            kinds,
            decoded_schema,
            arrow_schema,
            if_exists: config.if_exists,
            write_mode: config.write_mode,
            key,
            pipeline: OnceLock::new(),
            packet: OnceLock::new(),
            created_on_resume: AtomicBool::new(false),
            digest: OnceLock::new(),
            coarse: OnceLock::new(),
            declared: Declared::of(config),
        })
    }

    fn here(&self) -> String {
        format!(
            "{} table {}.{}",
            self.client.shown, self.database, self.table
        )
    }

    fn t(&self) -> String {
        qualified(&self.database, &self.table)
    }

    /// The quarantine table, `<table>_rejects`.
    fn rejects(&self) -> Quarantine<MyDialect> {
        Quarantine::new(MyDialect, &self.database, &self.table)
    }

    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The `CREATE TABLE` statement for the declared columns, with MySQL types.
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
                        quote(name),
                        my_decl(*ty).expect("checked in open"),
                        if *nullable { "" } else { " NOT NULL" },
                        ddl::column_clauses(&MyDialect, c)
                    )
                },
            )
            .collect();
        let pk: Vec<String> = table::primary_key(&self.columns, self.key.as_ref())
            .into_iter()
            .map(quote)
            .collect();
        if !pk.is_empty() {
            defs.push(format!("PRIMARY KEY ({})", pk.join(", ")));
        }
        format!(
            "CREATE TABLE {} (\n  {}\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            self.t(),
            defs.join(",\n  ")
        )
    }

    /// The post-load DDL of the table, as `post_load` runs it and `rowshift plan` shows it.
    fn post_load_of<'a>(&'a self, here: &'a str) -> PostLoad<'a, MyDialect> {
        PostLoad {
            d: &MyDialect,
            schema: &self.database,
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

    fn create_database_sql(&self) -> String {
        format!(
            "CREATE DATABASE IF NOT EXISTS {} DEFAULT CHARACTER SET utf8mb4",
            quote(&self.database)
        )
    }

    async fn count(&self, conn: &mut MySqlConnection, table: &str) -> Result<i64> {
        sqlx::query_scalar(stmt(format!(
            "SELECT CAST(count(*) AS SIGNED) FROM {table}"
        )))
        .fetch_one(conn)
        .await
        .map_err(|e| db_error(self.here(), e))
    }

    /// The table's row count if it exists.
    fn existing_rows(&self) -> Result<Option<i64>> {
        let pool = self.client.pool()?;
        let here = self.here();
        self.client.io().block_on(async {
            if table_columns(pool, &self.database, &self.table, &here)
                .await?
                .is_none()
            {
                return Ok(None);
            }
            let mut conn = pool.acquire().await.map_err(|e| db_error(&here, e))?;
            Ok(Some(self.count(&mut conn, &self.t()).await?))
        })
    }

    /// The written columns stored more coarsely than declared in `existing` (`None`: the
    /// table rowshift created, which has none).
    fn coarse_of(&self, existing: Option<&[MyColumn]>) -> Vec<table::Coarse> {
        let Some(existing) = existing else {
            return Vec::new();
        };
        self.columns
            .iter()
            .enumerate()
            .filter_map(|(i, DeclaredColumn { name, ty, .. })| {
                let c = existing.iter().find(|c| &c.name == name)?;
                table::Coarse::of(
                    i,
                    *ty,
                    &c.column_type,
                    c.fraction,
                    c.scale.map(|s| s as i64),
                    Some(&c.data_type),
                )
            })
            .collect()
    }

    /// [`Self::coarse_of`] the table as it is, once per run.
    fn coarse(&self) -> Result<&[table::Coarse]> {
        if let Some(c) = self.coarse.get() {
            return Ok(c);
        }
        let pool = self.client.pool()?;
        let here = self.here();
        let existing =
            self.client
                .io()
                .block_on(table_columns(pool, &self.database, &self.table, &here))?;
        Ok(self
            .coarse
            .get_or_init(|| self.coarse_of(existing.as_deref())))
    }

    /// The column type of target column `name`.
    fn column_type(&self, name: &str) -> Option<ColumnType> {
        self.columns.iter().find(|c| c.name == name).map(|c| c.ty)
    }

    /// The key columns in SQL, text compared as bytes: the order chunks are planned in,
    /// and equality that a case-insensitive collation cannot blur.
    fn keyset(&self, columns: &[String]) -> KeySql {
        KeySql::new(
            columns.iter().map(|c| quote(c)).collect(),
            columns
                .iter()
                .map(|c| match self.column_type(c) {
                    Some(ColumnType::Text | ColumnType::Varchar(_)) => {
                        format!("CAST({} AS BINARY)", quote(c))
                    }
                    _ => quote(c),
                })
                .collect(),
        )
    }

    /// `WHERE` clauses (several for a long key list) restricting to `selection`, with
    /// key values as literals.
    fn conditions(&self, selection: &Selection) -> Result<Vec<String>> {
        table::conditions(
            selection,
            |columns, _| self.keyset(columns),
            |c| self.column_type(c),
            &mut |v: &KeyValue| Ok(literal(v)),
            &self.here(),
        )
    }

    /// Reads the rows `selection` names, decoded into the target schema, so that a value
    /// the database changed reads back different.
    async fn select_rows(
        &self,
        conn: &mut MySqlConnection,
        selection: &Selection,
    ) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        self.select_each(conn, selection, &mut |b| {
            out.push(b);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Streams the rows `selection` names to `f`, batch by batch, so a whole table is
    /// never held at once.
    async fn select_each(
        &self,
        conn: &mut MySqlConnection,
        selection: &Selection,
        f: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let here = self.here();
        let cast = SchemaCast::new(&self.decoded_schema, &self.arrow_schema);
        let mut decoder = Decoder::new(&self.kinds, self.decoded_schema.clone(), READ_BATCH);
        self.each_row(conn, selection, &mut |row| {
            let full = decoder.push(row).map_err(|(i, reason)| {
                Error::data(
                    &here,
                    format!(
                        "reading rows back, column {}: {reason}",
                        self.columns[i].name
                    ),
                )
            })?;
            match full {
                Some(b) => f(cast.cast(b, &here)?),
                None => Ok(()),
            }
        })
        .await?;
        if decoder.len > 0 {
            f(cast.cast(decoder.finish()?, &here)?)?;
        }
        Ok(())
    }

    /// The [`RowDigest`] of the rows `selection` names, as the server returns them.
    async fn digest_rows(
        &self,
        conn: &mut MySqlConnection,
        selection: &Selection,
    ) -> Result<RowDigest> {
        let here = self.here();
        let mut digest = RowDigest::default();
        self.each_row(conn, selection, &mut |row| {
            digest
                .add_row(row)
                .map_err(|reason| Error::data(&here, format!("reading rows back: {reason}")))
        })
        .await?;
        Ok(digest)
    }

    /// Hands each of the written columns' rows that `selection` names to `f`, as the
    /// server returns them.
    async fn each_row(
        &self,
        conn: &mut MySqlConnection,
        selection: &Selection,
        f: &mut dyn FnMut(&MySqlRow) -> Result<()>,
    ) -> Result<()> {
        let here = self.here();
        for cond in self.conditions(selection)? {
            let sql = format!("SELECT {} FROM {}{cond}", self.column_list(), self.t());
            let mut rows = sqlx::query(stmt(sql)).fetch(&mut *conn);
            while let Some(row) = rows.try_next().await.map_err(|e| db_error(&here, e))? {
                f(&row)?;
            }
        }
        Ok(())
    }

    /// The digest layout of the written columns, stored as `existing` (`None`: the table
    /// rowshift created).
    fn digest_layout(&self, existing: Option<&[MyColumn]>) -> Option<DigestLayout> {
        let types: Vec<ColumnType> = self.columns.iter().map(|c| c.ty).collect();
        let stored = match existing {
            Some(have) => Some(
                self.columns
                    .iter()
                    .map(|c| have.iter().find(|h| h.name == c.name))
                    .collect::<Option<Vec<&MyColumn>>>()?,
            ),
            None => None,
        };
        DigestLayout::new(&types, stored.as_deref())
    }

    /// The server's `max_allowed_packet`.
    async fn packet(&self, conn: &mut MySqlConnection) -> Result<usize> {
        if let Some(p) = self.packet.get() {
            return Ok(*p);
        }
        let p: i64 = sqlx::query_scalar("SELECT CAST(@@max_allowed_packet AS SIGNED)")
            .fetch_one(conn)
            .await
            .map_err(|e| db_error(self.here(), e))?;
        Ok(*self.packet.get_or_init(|| p.max(1 << 20) as usize))
    }

    /// Inserts `batches` with multi-row `INSERT`s (`upsert` adds `ON DUPLICATE KEY
    /// UPDATE`); returns the rows sent.
    async fn insert(&self, conn: &mut MySqlConnection, batches: &[RecordBatch]) -> Result<u64> {
        let here = self.here();
        let width = self.columns.len();
        let per_statement = (MAX_PLACEHOLDERS / width).min(ROWS_PER_INSERT);
        // A quarter of the packet leaves room for the protocol's length prefixes and
        // NULL bitmap whatever the estimate misses.
        let max_bytes = self.packet(conn).await? / 4;
        let row_sql = format!("({})", vec!["?"; width].join(", "));
        let upsert = if self.write_mode == WriteMode::Upsert {
            let set: Vec<String> = self
                .columns
                .iter()
                .filter(|c| !c.primary_key)
                .map(|c| format!("{0} = VALUES({0})", quote(&c.name)))
                .collect();
            if set.is_empty() {
                // Every column is in the key: a row already there is left as it is.
                let pk = quote(
                    &self
                        .columns
                        .iter()
                        .find(|c| c.primary_key)
                        .expect("validated")
                        .name,
                );
                format!(" ON DUPLICATE KEY UPDATE {pk} = {pk}")
            } else {
                format!(" ON DUPLICATE KEY UPDATE {}", set.join(", "))
            }
        } else {
            String::new()
        };
        let head = format!("INSERT INTO {} ({}) VALUES ", self.t(), self.column_list());
        let key = self.key.as_ref().map_or(&[][..], |k| &k.columns);
        let cols = batches
            .iter()
            .map(|b| Cols::new(b, &self.columns, &here, key))
            .collect::<Result<Vec<_>>>()?;
        // Statements run across batch boundaries, and a statement of fewer rows than
        // `per_statement` has a power-of-two count: each statement text is prepared once
        // per connection and reused, where a remainder per batch would prepare a new
        // one (a round trip, and a parameter list the server describes back) each time.
        let mut rest = rows_of(batches);
        let mut sent = 0u64;
        loop {
            let mut fit = 0;
            let mut bytes = 0;
            for (b, r) in rest.clone() {
                if fit == per_statement || bytes >= max_bytes {
                    break;
                }
                bytes += cols[b].row_bytes(r);
                fit += 1;
            }
            if fit == 0 {
                break;
            }
            let rows = statement_rows(fit, per_statement);
            let mut sql = String::with_capacity(head.len() + rows * (row_sql.len() + 2));
            sql.push_str(&head);
            for i in 0..rows {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&row_sql);
            }
            sql.push_str(&upsert);
            let mut q = sqlx::query(stmt(sql));
            for (b, r) in rest.by_ref().take(rows) {
                q = cols[b].bind(q, r);
            }
            let done = q
                .execute(&mut *conn)
                .await
                .map_err(|e| db_error(&here, e))?;
            if self.write_mode != WriteMode::Upsert && done.rows_affected() != rows as u64 {
                return Err(Error::data(
                    &here,
                    format!(
                        "an INSERT of {rows} rows affected {} rows",
                        done.rows_affected()
                    ),
                ));
            }
            sent += rows as u64;
        }
        Ok(sent)
    }

    /// Writes `batches` by the write mode, inside the caller's transaction. `replace`
    /// is the selection `replace-chunk` deletes first.
    async fn write_rows(
        &self,
        conn: &mut MySqlConnection,
        batches: &[RecordBatch],
        replace: Option<&Selection>,
    ) -> Result<u64> {
        if let Some(sel) = replace {
            self.delete_rows(conn, sel).await?;
        }
        self.insert(conn, batches).await
    }

    /// Deletes the rows `selection` names.
    async fn delete_rows(&self, conn: &mut MySqlConnection, selection: &Selection) -> Result<()> {
        for cond in self.conditions(selection)? {
            sqlx::query(stmt(format!("DELETE FROM {}{cond}", self.t())))
                .execute(&mut *conn)
                .await
                .map_err(|e| db_error(self.here(), e))?;
        }
        Ok(())
    }

    /// After writing `batches` failed with `first`, a refusal: see [`refuse::refusals`]
    /// (MySQL does not say which row of a multi-row `INSERT` it refused, so the rows are
    /// halved).
    async fn refusals(
        &self,
        failed: sqlx::Transaction<'_, sqlx::MySql>,
        pool: &sqlx::MySqlPool,
        batches: &[RecordBatch],
        replace: Option<&Selection>,
        first: Error,
    ) -> Error {
        refuse::refusals(
            failed,
            pool,
            &self.here(),
            super::errors::error,
            batches,
            self.key.as_ref().map_or(&[][..], |k| k.columns.as_slice()),
            first,
            async |conn: &mut MySqlConnection| match replace {
                Some(sel) => self.delete_rows(conn, sel).await,
                None => Ok(()),
            },
            async |conn: &mut MySqlConnection, part: &[RecordBatch]| {
                self.insert(conn, part).await.map(|_| ())
            },
        )
        .await
    }

    /// Which target rows are the chunk's, for `replace-chunk`.
    fn chunk_selection(&self, chunk: &Chunk, batches: &[RecordBatch]) -> Result<Selection> {
        table::chunk_selection(
            self.key.as_ref(),
            chunk,
            batches,
            |c| self.column_type(c),
            &self.here(),
        )
    }

    /// Refuses to insert into an existing table whose engine cannot roll back (MEMORY,
    /// MyISAM, ARCHIVE, ...): a chunk that fails there keeps the rows sent before the
    /// failure, and redoing it with plain inserts would write them twice. `upsert` and
    /// `replace-chunk` redo a chunk without duplicates, so they may write there.
    async fn check_engine(&self, conn: &mut MySqlConnection) -> Result<()> {
        if self.write_mode != WriteMode::Insert {
            return Ok(());
        }
        let here = self.here();
        match table_engine(conn, &self.database, &self.table, &here).await? {
            Some((engine, false)) => Err(Error::Unsupported(format!(
                "{here}: the table uses the {engine} engine, which cannot roll back: a chunk that fails would leave the rows sent before the failure, and redoing it would write them twice. Convert the table (ALTER TABLE ... ENGINE=InnoDB), or set write_mode = \"upsert\" or \"replace-chunk\" under [target], which redo a chunk without duplicates"
            ))),
            _ => Ok(()),
        }
    }

    /// Checks an existing table against the declared columns: each must be there, with a
    /// type of the same family.
    fn check_existing(&self, existing: &[crate::db::mysql::MyColumn]) -> Result<()> {
        let here = self.here();
        let have: Vec<&str> = existing.iter().map(|c| c.name.as_str()).collect();
        table::check_columns(self.columns.iter().map(|c| c.name.as_str()), &have, &here)?;
        for DeclaredColumn { name, ty, .. } in &self.columns {
            let found = existing
                .iter()
                .find(|c| &c.name == name)
                .expect("checked above");
            if !same_family(*ty, &found.data_type) {
                return Err(Error::data(
                    &here,
                    format!(
                        "column {name} is {} in the existing table but declared {ty}; declare a type of its kind or let rowshift create the table",
                        found.column_type
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A batch's columns, downcast once, bound row by row.
struct Cols<'a> {
    cols: Vec<ColRef<'a>>,
}

/// Rows in the next `INSERT` when `fit` rows fit in one: all of them when that is the
/// most a statement takes, else the largest power of two not above `fit` (`fit` ≥ 1).
fn statement_rows(fit: usize, per_statement: usize) -> usize {
    if fit == per_statement {
        fit
    } else {
        1 << fit.ilog2()
    }
}

/// Every row of `batches` as (batch, row), in order.
fn rows_of(batches: &[RecordBatch]) -> impl Iterator<Item = (usize, usize)> + Clone + '_ {
    batches
        .iter()
        .enumerate()
        .flat_map(|(b, batch)| (0..batch.num_rows()).map(move |r| (b, r)))
}

enum ColRef<'a> {
    I16(&'a arrow::array::Int16Array),
    I32(&'a arrow::array::Int32Array),
    I64(&'a arrow::array::Int64Array),
    F32(&'a arrow::array::Float32Array),
    F64(&'a arrow::array::Float64Array),
    Dec(&'a arrow::array::Decimal128Array),
    Bool(&'a arrow::array::BooleanArray),
    Str(&'a arrow::array::StringArray),
    Bytes(&'a arrow::array::BinaryArray),
    Date(&'a arrow::array::Date32Array),
    Time(&'a arrow::array::Time64MicrosecondArray),
    Ts(&'a arrow::array::TimestampMicrosecondArray),
}

impl<'a> Cols<'a> {
    /// Checks what MySQL cannot store before anything is sent: NaN and infinite floats,
    /// which it refuses with a message that names no row.
    fn new(
        batch: &'a RecordBatch,
        columns: &[DeclaredColumn],
        here: &str,
        key: &[String],
    ) -> Result<Self> {
        let mut cols = Vec::with_capacity(columns.len());
        for (i, DeclaredColumn { name, .. }) in columns.iter().enumerate() {
            let a = batch.column(i);
            let c = match a.data_type() {
                DataType::Int16 => ColRef::I16(a.as_primitive::<Int16Type>()),
                DataType::Int32 => ColRef::I32(a.as_primitive::<Int32Type>()),
                DataType::Int64 => ColRef::I64(a.as_primitive::<Int64Type>()),
                DataType::Float32 => ColRef::F32(a.as_primitive::<Float32Type>()),
                DataType::Float64 => ColRef::F64(a.as_primitive::<Float64Type>()),
                DataType::Decimal128(..) => ColRef::Dec(a.as_primitive::<Decimal128Type>()),
                DataType::Boolean => ColRef::Bool(a.as_boolean()),
                DataType::Utf8 => ColRef::Str(a.as_string::<i32>()),
                DataType::Binary => ColRef::Bytes(a.as_binary::<i32>()),
                DataType::Date32 => ColRef::Date(a.as_primitive::<Date32Type>()),
                DataType::Time64(_) => ColRef::Time(a.as_primitive::<Time64MicrosecondType>()),
                DataType::Timestamp(..) => ColRef::Ts(a.as_primitive::<TimestampMicrosecondType>()),
                other => {
                    return Err(Error::Internal(format!(
                        "{here}: column {name} arrives as {other}, which no MySQL column is written from"
                    )));
                }
            };
            let bad = match &c {
                ColRef::F32(f) => f.iter().position(|v| v.is_some_and(|v| !v.is_finite())),
                ColRef::F64(f) => f.iter().position(|v| v.is_some_and(|v| !v.is_finite())),
                _ => None,
            };
            if let Some(row) = bad {
                let at = crate::chunk::key::row_label(batch, key, row)
                    .unwrap_or_else(|| format!("batch row {}", row + 1));
                return Err(Error::data(
                    format!("{here}, {at}"),
                    format!(
                        "column {name} holds {}, which a MySQL float column cannot store",
                        crate::types::cast::value_text(a.as_ref(), row).unwrap_or_default()
                    ),
                ));
            }
            cols.push(c);
        }
        Ok(Cols { cols })
    }

    /// About how many bytes row `r` takes in a statement.
    fn row_bytes(&self, r: usize) -> usize {
        self.cols
            .iter()
            .map(|c| match c {
                ColRef::Str(a) => a.value_length(r) as usize + 9,
                ColRef::Bytes(a) => a.value_length(r) as usize + 9,
                ColRef::Dec(_) => 48,
                _ => 16,
            })
            .sum()
    }

    /// Binds row `r`'s values.
    fn bind<'q>(&self, mut q: Query<'q>, r: usize) -> Query<'q>
    where
        'a: 'q,
    {
        for c in &self.cols {
            q = match c {
                ColRef::I16(a) => q.bind(a.is_valid(r).then(|| a.value(r))),
                ColRef::I32(a) => q.bind(a.is_valid(r).then(|| a.value(r))),
                ColRef::I64(a) => q.bind(a.is_valid(r).then(|| a.value(r))),
                ColRef::F32(a) => q.bind(a.is_valid(r).then(|| a.value(r))),
                ColRef::F64(a) => q.bind(a.is_valid(r).then(|| a.value(r))),
                // Exact decimal text; the server parses it into DECIMAL(p,s) unchanged.
                ColRef::Dec(a) => q.bind(a.is_valid(r).then(|| a.value_as_string(r))),
                ColRef::Bool(a) => q.bind(a.is_valid(r).then(|| a.value(r))),
                ColRef::Str(a) => q.bind(a.is_valid(r).then(|| a.value(r))),
                ColRef::Bytes(a) => q.bind(a.is_valid(r).then(|| a.value(r))),
                ColRef::Date(a) => q.bind(
                    a.is_valid(r)
                        .then(|| written(|o| write_date(o, a.value(r)))),
                ),
                ColRef::Time(a) => q.bind(
                    a.is_valid(r)
                        .then(|| written(|o| write_time(o, a.value(r)))),
                ),
                ColRef::Ts(a) => q.bind(
                    a.is_valid(r)
                        .then(|| written(|o| write_timestamp(o, a.value(r)))),
                ),
            };
        }
        q
    }
}

impl Sink for MysqlSink {
    crate::sink::replay::online_methods!();

    fn refuses_rows(&self) -> bool {
        true
    }

    fn refusals_before_sending(&self, batches: &[RecordBatch]) -> Result<Vec<Refusal>> {
        Ok(table::coarse_refusals(
            self.coarse()?,
            &self.columns,
            batches,
        ))
    }

    fn describe(&self) -> String {
        self.here()
    }

    fn planned_ddl(&self) -> Result<Vec<String>> {
        let t = self.t();
        let mut out = vec![self.create_database_sql()];
        out.extend(table::planned_ddl(
            self.existing_rows()?,
            self.if_exists,
            &t,
            self.create_table_sql(),
        ));
        out.push(self.rejects().create_sql());
        Ok(out)
    }

    fn prepare(&self, how: Prepare) -> Result<()> {
        let here = self.here();
        let t = self.t();
        let r = self.rejects().table();
        table::check_restart(how, self.if_exists, &here)?;
        if self.write_mode == WriteMode::ReplaceChunk && self.key.is_none() {
            return Err(Error::Unsupported(format!(
                "{here}: write_mode = \"replace-chunk\" needs a target column whose expr is the source key"
            )));
        }
        let pool = self.client.pool()?;
        // MySQL commits each DDL statement on its own; the steps are ordered so that a
        // crash between them leaves a state the next `prepare` completes.
        self.client.io().block_on(async {
            let db = |e| db_error(&here, e);
            let mut conn = pool.acquire().await.map_err(db)?;
            let exec = |sql: String| sqlx::raw_sql(stmt(traced(sql)));
            exec(self.create_database_sql())
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            let mut kept = None;
            if let Some(existing) = table_columns(pool, &self.database, &self.table, &here).await? {
                let rows = self.count(&mut conn, &t).await?;
                if table::drops_existing(how, self.if_exists, rows, &here)? {
                    exec(format!("DROP TABLE IF EXISTS {r}"))
                        .execute(&mut *conn)
                        .await
                        .map_err(db)?;
                    exec(format!("DROP TABLE {t}"))
                        .execute(&mut *conn)
                        .await
                        .map_err(db)?;
                    exec(self.create_table_sql())
                        .execute(&mut *conn)
                        .await
                        .map_err(db)?;
                } else {
                    self.check_existing(&existing)?;
                    self.check_engine(&mut conn).await?;
                    kept = Some(existing);
                }
            } else {
                self.created_on_resume
                    .store(how == Prepare::Resume, Ordering::SeqCst);
                exec(self.create_table_sql())
                    .execute(&mut *conn)
                    .await
                    .map_err(db)?;
            }
            exec(self.rejects().create_sql())
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            let _ = self.digest.set(self.digest_layout(kept.as_deref()));
            let _ = self.coarse.set(self.coarse_of(kept.as_deref()));
            Ok(())
        })
    }

    fn post_load(&self) -> Result<Vec<String>> {
        let here = self.here();
        let pool = self.client.pool()?;
        let post = self.post_load_of(&here);
        self.client.io().block_on(async {
            let mut conn = pool.acquire().await.map_err(|e| db_error(&here, e))?;
            post.run(&mut conn).await
        })
    }

    fn planned_prepare(&self, existing: Option<i64>) -> Vec<String> {
        let (table, rejects) = (
            format!("DROP TABLE {}", self.t()),
            format!("DROP TABLE IF EXISTS {}", self.rejects().table()),
        );
        table::PreparePlan {
            prelude: Some(self.create_database_sql()),
            drops: vec![rejects, table],
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

    fn open_chunk(&self, chunk: &Chunk) -> Result<Box<dyn ChunkWriter + '_>> {
        Ok(Box::new(MyChunk {
            sink: self,
            chunk: chunk.clone(),
            batches: Vec::new(),
            rejects: Vec::new(),
        }))
    }

    fn chunk_rows(
        &self,
        selection: &Selection,
        key: &[String],
        sent: &[RecordBatch],
    ) -> Result<Selection> {
        table::readback_selection(
            selection,
            key,
            self.write_mode == WriteMode::Upsert,
            |c| self.column_type(c),
            sent,
        )
    }

    fn read_rows(
        &self,
        _chunk: usize,
        selection: &Selection,
        _key: &[String],
    ) -> Result<Vec<RecordBatch>> {
        let pool = self.client.pool()?;
        let here = self.here();
        self.client.io().block_on(async {
            let mut conn = pool.acquire().await.map_err(|e| db_error(&here, e))?;
            self.select_rows(&mut conn, selection).await
        })
    }

    fn remove_rows(&self, _chunk: usize, selection: &Selection) -> Result<()> {
        let here = self.here();
        let conds = self.conditions(selection)?;
        let pool = self.client.pool()?;
        self.client.io().block_on(async {
            let mut tx = pool.begin().await.map_err(|e| db_error(&here, e))?;
            for cond in conds {
                sqlx::query(stmt(format!("DELETE FROM {}{cond}", self.t())))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error(&here, e))?;
            }
            tx.commit().await.map_err(|e| db_error(&here, e))
        })
    }

    fn scan(&self, f: &mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<()> {
        let pool = self.client.pool()?;
        let here = self.here();
        self.client.io().block_on(async {
            let mut conn = pool.acquire().await.map_err(|e| db_error(&here, e))?;
            self.select_each(&mut conn, &Selection::All, f).await
        })
    }

    fn checkpoint_store(&self, pipeline: &str) -> Option<Arc<dyn CheckpointStore>> {
        let _ = self.pipeline.set(pipeline.to_string());
        Some(Arc::new(MyStore::new(
            MyDialect,
            self.client.clone(),
            &self.database,
            pipeline,
        )))
    }

    fn quarantine(&self) -> String {
        format!(
            "{} table {}.{}",
            self.client.shown,
            self.database,
            self.rejects().name()
        )
    }

    fn read_quarantine(&self) -> Result<Vec<QuarantineEntry>> {
        self.rejects().read_on(&*self.client, &self.quarantine())
    }

    fn requeue(
        &self,
        chunk: usize,
        passing: &[RecordBatch],
        remaining: &[QuarantineEntry],
        verify: Option<&ReadBack>,
    ) -> Result<u64> {
        let here = self.here();
        let pool = self.client.pool()?;
        table::refuse(self.refusals_before_sending(passing)?)?;
        let readback = verify
            .map(|v| self.chunk_rows(&v.selection, v.key, passing))
            .transpose()?;
        self.client.io().block_on(async {
            let mut tx = pool.begin().await.map_err(|e| db_error(&here, e))?;
            // Rows already under the retried keys (a key need not be unique) stay.
            // (An upsert replaces them: only the rows sent are expected then.)
            let there = match &readback {
                Some(sel) if self.write_mode != WriteMode::Upsert => {
                    self.select_rows(&mut tx, sel).await?
                }
                _ => Vec::new(),
            };
            let written = match self.write_rows(&mut tx, passing, None).await {
                Ok(w) => w,
                Err(e) => return Err(self.refusals(tx, pool, passing, None, e).await),
            };
            if let (Some(v), Some(sel)) = (verify, &readback) {
                let t0 = Instant::now();
                let back = self.select_rows(&mut tx, sel).await?;
                v.verify_beside(&there, &back, t0)?;
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
/// transaction at commit.
struct MyChunk<'a> {
    sink: &'a MysqlSink,
    chunk: Chunk,
    batches: Vec<RecordBatch>,
    rejects: Vec<QuarantineEntry>,
}

impl ChunkWriter for MyChunk<'_> {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() > 0 {
            self.batches.push(batch.clone());
        }
        Ok(())
    }

    fn reject(&mut self, entries: Vec<QuarantineEntry>) -> Result<()> {
        self.rejects.extend(entries);
        Ok(())
    }

    fn commit(self: Box<Self>, mark: &DoneMark, verify: Option<&ReadBack>) -> Result<Committed> {
        let sink = self.sink;
        let here = sink.here();
        let pool = sink.client.pool()?;
        let replace = match sink.write_mode {
            WriteMode::ReplaceChunk => Some(sink.chunk_selection(&self.chunk, &self.batches)?),
            _ => None,
        };
        table::refuse(sink.refusals_before_sending(&self.batches)?)?;
        let readback = verify
            .map(|v| sink.chunk_rows(&v.selection, v.key, &self.batches))
            .transpose()?;
        sink.client.io().block_on(async {
            let db = |e| db_error(&here, e);
            let mut tx = pool.begin().await.map_err(db)?;
            sink.rejects()
                .replace(&mut tx, &here, self.chunk.id, &self.rejects)
                .await?;
            let rows = match sink
                .write_rows(&mut tx, &self.batches, replace.as_ref())
                .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    return Err(sink
                        .refusals(tx, pool, &self.batches, replace.as_ref(), e)
                        .await);
                }
            };
            // Read back inside the transaction: what the database stored, before anything
            // of the chunk is visible, so a mismatch rolls the whole chunk back. Where the
            // stored values come back as bytes that follow from the values alone, a digest
            // of the bytes settles it without decoding them; any difference is compared
            // value by value, which names the first row that differs.
            if let (Some(v), Some(sel)) = (verify, &readback) {
                let t0 = Instant::now();
                let same = match sink.digest.get().and_then(Option::as_ref) {
                    Some(layout) => {
                        let mut sent = RowDigest::default();
                        self.batches.iter().all(|b| sent.add_sent(layout, b))
                            && sink.digest_rows(&mut tx, sel).await? == sent
                    }
                    None => false,
                };
                if same {
                    v.passed(t0);
                } else {
                    let back = sink.select_rows(&mut tx, sel).await?;
                    v.verify(&back, t0)?;
                }
            }
            let marked = match sink.pipeline.get() {
                Some(p) => {
                    // Refused when another run took the chunk over: the rows roll back.
                    Tables::new(MyDialect, &sink.database, p)
                        .mark_done(
                            &mut tx,
                            &here,
                            &mark.verified(verify.map(ReadBack::seconds)),
                        )
                        .await?;
                    true
                }
                None => false,
            };
            tx.commit().await.map_err(db)?;
            Ok(Committed { rows, marked })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array};

    use super::*;

    #[test]
    fn statements_take_few_sizes_and_run_across_batches() {
        let sizes = |mut n: usize| {
            let mut out = Vec::new();
            while n > 0 {
                let rows = statement_rows(n.min(2000), 2000);
                out.push(rows);
                n -= rows;
            }
            out
        };
        assert_eq!(sizes(4000), [2000, 2000]);
        assert_eq!(sizes(4013), [2000, 2000, 8, 4, 1]);
        assert_eq!(sizes(1999), [1024, 512, 256, 128, 64, 8, 4, 2, 1]);
        assert_eq!(sizes(1), [1]);

        let batch = |n: i64| {
            RecordBatch::try_from_iter([(
                "a",
                Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef,
            )])
            .unwrap()
        };
        let batches = [batch(2), batch(0), batch(0), batch(1), batch(0)];
        let seen: Vec<_> = rows_of(&batches).collect();
        assert_eq!(seen, [(0, 0), (0, 1), (3, 0)]);
    }
}
