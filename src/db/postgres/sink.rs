//! A PostgreSQL table, written with binary `COPY FROM STDIN`. Each chunk's rows, its
//! rejected rows (in `<table>_rejects`) and its checkpoint mark commit in one transaction,
//! so a chunk lands whole or not at all, and a chunk redone after a crash never doubles.
//!
//! `write_mode`:
//! - `insert`: `COPY` into the table.
//! - `upsert`: `COPY` into a temporary staging table, then `INSERT ... ON CONFLICT (primary
//!   key) DO UPDATE`.
//! - `replace-chunk`: delete the chunk's key range (or keys) from the table, then `COPY`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arrow::array::AsArray;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use sqlx::postgres::PgConnection;

use super::checkpoint::PgStore;
use super::dialect::PgDialect;
use crate::check::quarantine::QuarantineEntry;
use crate::check::readback::ReadBack;
use crate::checkpoint::{CheckpointStore, DoneMark, Tables};
use crate::chunk::Selection;
use crate::chunk::{Chunk, TargetKey};
use crate::config::{IfExists, SecretUrl, TargetConfig, WriteMode};
use crate::db::postgres::errors::error as db_error;
use crate::db::postgres::hash::{HashSum, RowHasher};
use crate::db::postgres::{
    Decoder, Encoder, PgClient, PgColumn, PgKind, RowDigest, literal, pg_decl, qualified,
    table_columns,
};
use crate::runtime::IoRuntime;
use crate::sink::ddl::{self, Declared, PostLoad};
use crate::sink::quarantine::Quarantine;
use crate::sink::table::{self, DeclaredColumn};
use crate::sink::{ChunkWriter, Committed, Prepare, Refusal, Sink, refuse};
use crate::sql::keyset::KeySql;
use crate::sql::trace::traced;
use crate::sql::{quote_ident, stmt};
use crate::types::ColumnType;
use crate::{Error, Result};

mod dependents;
mod replay;

/// Rows per batch when reading rows back.
const READ_BATCH: usize = 8192;

/// Bytes of `COPY` data buffered before they are sent.
const SEND_BYTES: usize = 1 << 20;

/// Writes into one PostgreSQL table.
pub struct PostgresSink {
    client: Arc<PgClient>,
    schema: String,
    table: String,
    columns: Vec<DeclaredColumn>,
    kinds: Vec<PgKind>,
    arrow_schema: SchemaRef,
    if_exists: IfExists,
    write_mode: WriteMode,
    /// The target columns that hold the source key.
    key: Option<TargetKey>,
    pipeline: OnceLock<String>,
    /// Set when `prepare` had to create the table on resume: the chunks an earlier run
    /// committed are gone.
    created_on_resume: AtomicBool,
    /// What `prepare`, or the first statement that needed it, found of the table.
    facts: OnceLock<TableFacts>,
    /// The indexes, constraints and foreign keys built after the load.
    declared: Declared,
}

/// What a chunk's rows were sent as, for the read-back to compare: the sum of
/// PostgreSQL's own hashes of their values where the table allows, else the digest of
/// their bytes where it stores what it is sent; neither without a read-back.
#[derive(Debug, Default)]
struct Sent {
    digest: Option<RowDigest>,
    hashed: Option<HashSum>,
}

/// What the target table's own column types mean for rowshift.
struct TableFacts {
    /// Enum columns: declared text, but they order by their labels' declaration and
    /// take no collation.
    enums: Vec<String>,
    /// Whether every written column stores a value so that it sends back the very bytes
    /// it was sent as (not so for `char(n)`, which pads, or a `numeric` whose scale is
    /// not the declared one): the commit's read-back can then compare a [`RowDigest`] of
    /// the bytes instead of decoding the rows.
    byte_exact: bool,
    /// How the server hashes the written columns the way the sink does as it sends
    /// them, when every column's stored type allows: the commit's read-back then asks
    /// for the sum of the hashes over the chunk's rows instead of the rows.
    hasher: Option<RowHasher>,
    /// The written columns the table stores more coarsely than declared: a
    /// `timestamp(0)` or a `numeric(10,2)` rounds a finer value without an error.
    coarse: Vec<table::Coarse>,
    /// The written columns stored as `char(n)`. The server pads a text to n characters
    /// (and cuts spaces past them); under `char(n)` trailing spaces are no part of the
    /// value, so such a column is read back as text without them (`bpchar::text`) and
    /// compared with the text sent without them.
    padded: Vec<usize>,
}

impl TableFacts {
    /// The facts of a table rowshift creates from the `declared` columns.
    fn created(declared: &[DeclaredColumn]) -> Self {
        let types: Vec<ColumnType> = declared.iter().map(|c| c.ty).collect();
        TableFacts {
            enums: Vec::new(),
            byte_exact: true,
            hasher: RowHasher::new(&types, None),
            coarse: Vec::new(),
            padded: Vec::new(),
        }
    }

    /// The facts of an existing table with `found` columns, `declared` written into it.
    fn of(found: &[PgColumn], declared: &[DeclaredColumn]) -> Self {
        let byte_exact = declared.iter().all(|DeclaredColumn { name, ty, .. }| {
            found.iter().find(|c| &c.name == name).is_none_or(|c| {
                match (c.type_name.as_str(), ty) {
                    ("bpchar", _) => false,
                    ("numeric", ColumnType::Decimal { precision, scale }) => {
                        // Unconstrained numeric keeps the scale it is sent with.
                        c.typmod < 4 || c.typmod - 4 == ((*precision as i32) << 16 | *scale as i32)
                    }
                    _ => true,
                }
            })
        });
        let types: Vec<ColumnType> = declared.iter().map(|c| c.ty).collect();
        let stored: Vec<Option<&str>> = declared
            .iter()
            .map(|DeclaredColumn { name, .. }| {
                found
                    .iter()
                    .find(|c| &c.name == name && !c.is_enum)
                    .map(|c| c.type_name.as_str())
            })
            .collect();
        TableFacts {
            enums: found
                .iter()
                .filter(|c| c.is_enum)
                .map(|c| c.name.clone())
                .collect(),
            byte_exact,
            hasher: RowHasher::new(&types, Some(&stored)),
            padded: stored
                .iter()
                .enumerate()
                .filter(|(_, t)| **t == Some("bpchar"))
                .map(|(i, _)| i)
                .collect(),
            coarse: declared
                .iter()
                .enumerate()
                .filter_map(|(i, DeclaredColumn { name, ty, .. })| {
                    let c = found.iter().find(|c| &c.name == name)?;
                    // `atttypmod` is the digits of a second for times and timestamps,
                    // 4 + (precision << 16 | scale) for a numeric; -1 when unconstrained.
                    let fraction = matches!(
                        c.type_name.as_str(),
                        "timestamp" | "timestamptz" | "time" | "timetz"
                    )
                    .then_some(c.typmod)
                    .filter(|m| *m >= 0)
                    .map(|m| m as u64);
                    // A numeric's scale, 11 bits of two's complement since PostgreSQL 15
                    // (numeric(5,-2) rounds to hundreds); a float in a numeric column is
                    // no float column.
                    let scale = (c.type_name == "numeric"
                        && c.typmod >= 4
                        && matches!(ty, ColumnType::Decimal { .. }))
                    .then(|| i64::from((((c.typmod - 4) & 0x7ff) ^ 1024) - 1024));
                    table::Coarse::of(i, *ty, &c.shown_type, fraction, scale, None).or_else(|| {
                        // A varchar(n) cuts the spaces past n characters without an
                        // error (other characters past them it refuses itself).
                        let text = matches!(ty, ColumnType::Text | ColumnType::Varchar(_));
                        (text && c.type_name == "varchar" && c.typmod >= 4).then(|| {
                            table::Coarse::max_chars(i, &c.shown_type, (c.typmod - 4) as usize)
                        })
                    })
                })
                .collect(),
        }
    }
}

impl PostgresSink {
    /// A sink for `schema.table` on `url`. Connects on first use.
    ///
    /// `key` is the target columns holding the source key; `replace-chunk` finds a
    /// chunk's rows by them.
    pub fn open(
        config: &TargetConfig,
        url: &SecretUrl,
        schema: &str,
        arrow_schema: SchemaRef,
        key: Option<TargetKey>,
        io: &IoRuntime,
    ) -> Result<Self> {
        let columns: Vec<_> = config.columns.iter().map(DeclaredColumn::of).collect();
        Ok(PostgresSink {
            client: Arc::new(PgClient::new(url, &config.db, io)),
            schema: schema.to_string(),
            table: config
                .table
                .as_ref()
                .map(|t| t.value.clone())
                .unwrap_or_default(),
            kinds: columns.iter().map(|c| PgKind::for_type(c.ty)).collect(),
            columns,
            arrow_schema,
            if_exists: config.if_exists,
            write_mode: config.write_mode,
            key,
            pipeline: OnceLock::new(),
            created_on_resume: AtomicBool::new(false),
            facts: OnceLock::new(),
            declared: Declared::of(config),
        })
    }

    fn here(&self) -> String {
        format!("{} table {}.{}", self.client.shown, self.schema, self.table)
    }

    fn t(&self) -> String {
        qualified(&self.schema, &self.table)
    }

    /// The quarantine table, `<table>_rejects`.
    fn rejects(&self) -> Quarantine<PgDialect> {
        Quarantine::new(PgDialect, &self.schema, &self.table)
    }

    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The `CREATE TABLE` statement for the declared columns, with PostgreSQL types.
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
                        pg_decl(*ty),
                        if *nullable { "" } else { " NOT NULL" },
                        ddl::column_clauses(&PgDialect, c)
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
        format!("CREATE TABLE {} (\n  {}\n)", self.t(), defs.join(",\n  "))
    }

    /// The post-load DDL of the table, as `post_load` runs it and `rowshift plan` shows it.
    fn post_load_of<'a>(&'a self, here: &'a str) -> PostLoad<'a, PgDialect> {
        PostLoad {
            d: &PgDialect,
            schema: &self.schema,
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

    fn create_schema_sql(&self) -> String {
        format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(&self.schema))
    }

    /// The table's row count if it exists.
    fn existing_rows(&self) -> Result<Option<i64>> {
        let pool = self.client.pool()?;
        let here = self.here();
        self.client.io().block_on(async {
            if table_columns(pool, &self.schema, &self.table, &here)
                .await?
                .is_none()
            {
                return Ok(None);
            }
            let n: i64 = sqlx::query_scalar(stmt(format!("SELECT count(*) FROM {}", self.t())))
                .fetch_one(pool)
                .await
                .map_err(|e| db_error(&here, e))?;
            Ok(Some(n))
        })
    }

    /// Finds the table's facts if `prepare` has not: `verify` and `retry` work on a table
    /// they did not prepare. A table that does not exist has no enum columns.
    fn facts(&self) -> Result<&TableFacts> {
        if let Some(f) = self.facts.get() {
            return Ok(f);
        }
        let pool = self.client.pool()?;
        let here = self.here();
        let found =
            self.client
                .io()
                .block_on(table_columns(pool, &self.schema, &self.table, &here))?;
        Ok(self
            .facts
            .get_or_init(|| TableFacts::of(&found.unwrap_or_default(), &self.columns)))
    }

    /// The column type of target column `name` as keys compare with it: `None` for an
    /// enum column, whose order is not its labels' (a chunk's rows are then found by
    /// their keys).
    fn column_type(&self, name: &str) -> Option<ColumnType> {
        if self
            .facts
            .get()
            .is_some_and(|f| f.enums.iter().any(|c| c == name))
        {
            return None;
        }
        self.columns.iter().find(|c| c.name == name).map(|c| c.ty)
    }

    /// `WHERE` clauses (several for a long key list) restricting to `selection`, with
    /// key values as literals: `COPY` takes no parameters.
    fn conditions(&self, selection: &Selection) -> Result<Vec<String>> {
        // Key ranges are planned in byte order, whatever the database's collation; key
        // lists compare for equality, where the column's own collation keeps its index.
        let keyset = |columns: &[String], bytewise: bool| {
            KeySql::new(
                columns.iter().map(|c| quote_ident(c)).collect(),
                columns
                    .iter()
                    .map(|c| match self.column_type(c) {
                        Some(ColumnType::Text | ColumnType::Varchar(_)) if bytewise => {
                            format!("{} COLLATE \"C\"", quote_ident(c))
                        }
                        _ => quote_ident(c),
                    })
                    .collect(),
            )
        };
        table::conditions(
            selection,
            keyset,
            |c| self.column_type(c),
            &mut literal,
            &self.here(),
        )
    }

    /// Reads the rows `selection` names with binary `COPY`, decoded into the target
    /// schema, so that a value the database changed reads back different.
    async fn select_rows(
        &self,
        conn: &mut PgConnection,
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

    /// The table's facts, read before any row is read back (inside a transaction there
    /// is no blocking on the catalog).
    fn read_facts(&self) -> Result<&TableFacts> {
        self.facts.get().ok_or_else(|| {
            Error::Internal(format!(
                "{}: rows read back before the table's columns",
                self.here()
            ))
        })
    }

    /// Compares the rows read back (`back`, whose reading began at `started`) with the
    /// rows `v` sent, beside the rows that stood under their keys before (`there`), in
    /// the form they read back in.
    fn compare_back(
        &self,
        v: &ReadBack,
        there: &[RecordBatch],
        back: &[RecordBatch],
        started: Instant,
    ) -> Result<()> {
        let padded = &self.read_facts()?.padded;
        if padded.is_empty() {
            return v.verify_beside(there, back, started);
        }
        let sent = unpadded(v.sent.to_vec(), padded)?;
        v.as_sent(&sent)?.verify_beside(there, back, started)
    }

    /// Streams the rows `selection` names to `f`, batch by batch, so a whole table is
    /// never held at once.
    async fn select_each(
        &self,
        conn: &mut PgConnection,
        selection: &Selection,
        f: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let mut decoder = Decoder::new(&self.kinds, self.arrow_schema.clone(), READ_BATCH);
        self.copy_out(conn, selection, &mut decoder, f).await?;
        if decoder.len > 0 {
            f(decoder.finish()?)?;
        }
        Ok(())
    }

    /// The [`RowDigest`] of the rows `selection` names, as binary `COPY` sends them.
    async fn digest_rows(
        &self,
        conn: &mut PgConnection,
        selection: &Selection,
    ) -> Result<RowDigest> {
        let mut decoder = Decoder::digest(&self.kinds);
        self.copy_out(conn, selection, &mut decoder, &mut |_| Ok(()))
            .await?;
        Ok(decoder.digested().unwrap_or_default())
    }

    /// The count and the sum of `hasher`'s row hashes of the rows `selection` names, as
    /// the server computes them over what it stores.
    async fn hash_rows(
        &self,
        conn: &mut PgConnection,
        selection: &Selection,
        hasher: &RowHasher,
    ) -> Result<HashSum> {
        let here = self.here();
        let columns: Vec<String> = self.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let row = hasher.sql(&columns);
        let mut total = HashSum::default();
        for cond in self.conditions(selection)? {
            let sql = format!(
                "SELECT count(*), coalesce(sum({row}), 0)::text FROM {}{cond}",
                self.t()
            );
            let (rows, sum): (i64, String) = sqlx::query_as(stmt(sql))
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| db_error(&here, e))?;
            total.rows += rows as u64;
            total.sum += sum.parse::<i128>().map_err(|e| {
                Error::data(&here, format!("reading back a sum of hashes `{sum}`: {e}"))
            })?;
        }
        Ok(total)
    }

    /// Feeds the rows `selection` names, with binary `COPY`, to `decoder`, which hands
    /// full batches to `f`.
    async fn copy_out(
        &self,
        conn: &mut PgConnection,
        selection: &Selection,
        decoder: &mut Decoder,
        f: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let here = self.here();
        let facts = self.read_facts()?;
        let columns: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| match facts.padded.contains(&i) {
                true => format!("{}::text", quote_ident(&c.name)),
                false => quote_ident(&c.name),
            })
            .collect();
        for cond in self.conditions(selection)? {
            decoder.restart();
            let sql = format!(
                "COPY (SELECT {} FROM {}{cond}) TO STDOUT (FORMAT binary)",
                columns.join(", "),
                self.t()
            );
            let mut stream = conn
                .copy_out_raw(&sql)
                .await
                .map_err(|e| db_error(&here, e))?;
            while let Some(data) = stream.try_next().await.map_err(|e| db_error(&here, e))? {
                decoder.feed(&data, f).map_err(|(col, reason)| {
                    let col = col.map_or(String::new(), |i| {
                        format!(", column {}", self.columns[i].name)
                    });
                    Error::data(&here, format!("reading rows back{col}: {reason}"))
                })?;
            }
            if !decoder.ended() {
                return Err(Error::data(
                    &here,
                    "reading rows back: the COPY stream ended without its trailer",
                ));
            }
        }
        Ok(())
    }

    /// Sends `batches` with binary `COPY` into `table` (quoted); returns the rows copied
    /// and, when a read-back will `check` them, what they were sent as.
    async fn copy_in(
        &self,
        conn: &mut PgConnection,
        table: &str,
        batches: &[RecordBatch],
        check: bool,
    ) -> Result<(u64, Sent)> {
        let here = self.here();
        let db = |e| db_error(&here, e);
        let sql = format!(
            "COPY {table} ({}) FROM STDIN (FORMAT binary)",
            self.column_list()
        );
        let mut copy = conn.copy_in_raw(&sql).await.map_err(db)?;
        // Only what the read-back will compare is computed: a run without read-back
        // pays for neither.
        let facts = self.facts()?;
        let mut enc = match (check, &facts.hasher) {
            (true, Some(hasher)) => Encoder::hashing(hasher.clone()),
            (true, None) if facts.byte_exact => Encoder::digesting(),
            _ => Encoder::new(),
        };
        let key = self.key.as_ref().map_or(&[][..], |k| &k.columns);
        for b in batches {
            if let Err(e) = enc.rows(b, &self.kinds, &here, key) {
                let _ = copy.abort("rowshift: a row could not be encoded").await;
                return Err(e);
            }
            if enc.buf.len() >= SEND_BYTES {
                copy.send(std::mem::take(&mut enc.buf)).await.map_err(db)?;
            }
        }
        enc.finish();
        copy.send(std::mem::take(&mut enc.buf)).await.map_err(db)?;
        let sent = Sent {
            digest: enc.digest,
            hashed: enc.hashed.map(|(_, sum)| sum),
        };
        Ok((copy.finish().await.map_err(db)?, sent))
    }

    /// Deletes the rows `selection` names.
    async fn delete_rows(&self, conn: &mut PgConnection, selection: &Selection) -> Result<()> {
        for cond in self.conditions(selection)? {
            sqlx::query(stmt(format!("DELETE FROM {}{cond}", self.t())))
                .execute(&mut *conn)
                .await
                .map_err(|e| db_error(self.here(), e))?;
        }
        Ok(())
    }

    /// After writing `batches` failed with `first`, a refusal: see [`refuse::refusals`].
    async fn refusals(
        &self,
        failed: sqlx::Transaction<'_, sqlx::Postgres>,
        pool: &sqlx::PgPool,
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
            async |conn: &mut PgConnection| match replace {
                Some(sel) => self.delete_rows(conn, sel).await,
                None => Ok(()),
            },
            async |conn: &mut PgConnection, part: &[RecordBatch]| {
                self.write_rows(conn, part, None, false).await.map(|_| ())
            },
        )
        .await
    }

    /// Writes `batches` by the write mode, inside the caller's transaction. `replace`
    /// is the selection `replace-chunk` deletes first. Returns the rows written and, when
    /// a read-back will `check` them, what they were sent as.
    async fn write_rows(
        &self,
        conn: &mut PgConnection,
        batches: &[RecordBatch],
        replace: Option<&Selection>,
        check: bool,
    ) -> Result<(u64, Sent)> {
        let here = self.here();
        let db = |e| db_error(&here, e);
        if let Some(sel) = replace {
            self.delete_rows(conn, sel).await?;
        }
        if batches.iter().all(|b| b.num_rows() == 0) {
            return Ok((0, Sent::default()));
        }
        if self.write_mode != WriteMode::Upsert {
            return self.copy_in(conn, &self.t(), batches, check).await;
        }
        // Only the written columns, with the table's types and no constraints: another
        // NOT NULL column of the table, filled by its default, does not get in the way.
        let stage = quote_ident("_rowshift_stage");
        sqlx::query(stmt(format!(
            "CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA",
            self.column_list(),
            self.t()
        )))
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        let (_, sent) = self
            .copy_in(conn, &format!("pg_temp.{stage}"), batches, check)
            .await?;
        let pk: Vec<String> = table::primary_key(&self.columns, self.key.as_ref())
            .into_iter()
            .map(quote_ident)
            .collect();
        let set: Vec<String> = self
            .columns
            .iter()
            .filter(|c| !c.primary_key)
            .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(&c.name)))
            .collect();
        let action = if set.is_empty() {
            "DO NOTHING".to_string()
        } else {
            format!("DO UPDATE SET {}", set.join(", "))
        };
        let cols = self.column_list();
        let done = sqlx::query(stmt(format!(
            "INSERT INTO {} ({cols}) SELECT {cols} FROM pg_temp.{stage} ON CONFLICT ({}) {action}",
            self.t(),
            pk.join(", ")
        )))
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        let rows = done.rows_affected();
        sqlx::query(stmt(format!("DROP TABLE pg_temp.{stage}")))
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        Ok((rows, sent))
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
}

/// Whether column `c` takes `ty`'s binary layout.
fn same_type(ty: ColumnType, c: &PgColumn) -> bool {
    // An enum's binary form is its label: text goes in, and the server refuses a label
    // the type does not have (the row is quarantined).
    if c.is_enum {
        return matches!(ty, ColumnType::Text | ColumnType::Varchar(_));
    }
    let want: &[&str] = match ty {
        ColumnType::SmallInt => &["int2"],
        ColumnType::Int => &["int4"],
        ColumnType::BigInt => &["int8"],
        ColumnType::Real => &["float4"],
        ColumnType::Double => &["float8"],
        ColumnType::Decimal { .. } => &["numeric"],
        ColumnType::Boolean => &["bool"],
        // `json`'s binary form is its text.
        ColumnType::Text | ColumnType::Varchar(_) => &["text", "varchar", "bpchar", "json"],
        ColumnType::Date => &["date"],
        ColumnType::Time => &["time"],
        ColumnType::Timestamp => &["timestamp"],
        ColumnType::TimestampTz => &["timestamptz"],
        ColumnType::Bytes => &["bytea"],
    };
    want.contains(&c.type_name.as_str())
}

impl Sink for PostgresSink {
    crate::sink::replay::online_methods!();

    fn refuses_rows(&self) -> bool {
        true
    }

    fn refusals_before_sending(&self, batches: &[RecordBatch]) -> Result<Vec<Refusal>> {
        Ok(table::coarse_refusals(
            &self.facts()?.coarse,
            &self.columns,
            batches,
        ))
    }

    fn describe(&self) -> String {
        self.here()
    }

    fn planned_ddl(&self) -> Result<Vec<String>> {
        let t = self.t();
        let mut out = vec![];
        if self.schema != "public" {
            out.push(self.create_schema_sql());
        }
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
        self.client.io().block_on(async {
            let db = |e| db_error(&here, e);
            let mut tx = pool.begin().await.map_err(db)?;
            // Runs of other pipelines into this schema, started at the same moment, create
            // it and their tables one after another (`IF NOT EXISTS` alone lets the loser
            // fail on a catalog index).
            let key = crate::checkpoint::lock::schema_ddl_key(&self.schema);
            sqlx::query(stmt(format!("SELECT pg_advisory_xact_lock({key})"))).execute(&mut *tx).await.map_err(db)?;
            sqlx::query(stmt(traced(self.create_schema_sql()))).execute(&mut *tx).await.map_err(db)?;
            if let Some(existing) = table_columns(pool, &self.schema, &self.table, &here).await? {
                let rows: i64 = sqlx::query_scalar(stmt(format!("SELECT count(*) FROM {t}"))).fetch_one(&mut *tx).await.map_err(db)?;
                if table::drops_existing(how, self.if_exists, rows, &here)? {
                    sqlx::query(stmt(traced(format!("DROP TABLE {t}")))).execute(&mut *tx).await.map_err(db)?;
                    sqlx::query(stmt(traced(format!("DROP TABLE IF EXISTS {r}")))).execute(&mut *tx).await.map_err(db)?;
                    sqlx::query(stmt(traced(self.create_table_sql()))).execute(&mut *tx).await.map_err(db)?;
                    let _ = self.facts.set(TableFacts::created(&self.columns));
                } else {
                    let _ = self.facts.set(TableFacts::of(&existing, &self.columns));
                    let have: Vec<&str> = existing.iter().map(|c| c.name.as_str()).collect();
                    table::check_columns(self.columns.iter().map(|c| c.name.as_str()), &have, &here)?;
                    // Binary COPY sends each value in the declared type's layout, so the
                    // table's columns must have those types.
                    for DeclaredColumn { name, ty, .. } in &self.columns {
                        let found = existing.iter().find(|c| &c.name == name).expect("checked above");
                        if !same_type(*ty, found) {
                            return Err(Error::data(
                                &here,
                                format!("column {name} is {} in the existing table but declared {ty}; declare type = \"{}\" or let rowshift create the table", found.shown_type, found.shown_type),
                            ));
                        }
                    }
                }
            } else {
                self.created_on_resume.store(how == Prepare::Resume, Ordering::SeqCst);
                sqlx::query(stmt(traced(self.create_table_sql()))).execute(&mut *tx).await.map_err(db)?;
                let _ = self.facts.set(TableFacts::created(&self.columns));
            }
            sqlx::query(stmt(traced(self.rejects().create_sql()))).execute(&mut *tx).await.map_err(db)?;
            tx.commit().await.map_err(db)
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
            prelude: Some(self.create_schema_sql()),
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

    fn open_chunk(&self, chunk: &Chunk) -> Result<Box<dyn ChunkWriter + '_>> {
        Ok(Box::new(PgChunk {
            sink: self,
            chunk: chunk.clone(),
            batches: Vec::new(),
            rejects: Vec::new(),
        }))
    }

    fn as_read_back(&self, sent: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        unpadded(sent, &self.facts()?.padded)
    }

    fn chunk_rows(
        &self,
        selection: &Selection,
        key: &[String],
        sent: &[RecordBatch],
    ) -> Result<Selection> {
        self.facts()?;
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
        self.facts()?;
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
        self.facts()?;
        let pool = self.client.pool()?;
        let here = self.here();
        self.client.io().block_on(async {
            let mut conn = pool.acquire().await.map_err(|e| db_error(&here, e))?;
            self.select_each(&mut conn, &Selection::All, f).await
        })
    }

    fn checkpoint_store(&self, pipeline: &str) -> Option<Arc<dyn CheckpointStore>> {
        let _ = self.pipeline.set(pipeline.to_string());
        Some(Arc::new(PgStore::new(
            PgDialect,
            self.client.clone(),
            &self.schema,
            pipeline,
        )))
    }

    fn quarantine(&self) -> String {
        format!(
            "{} table {}.{}",
            self.client.shown,
            self.schema,
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
            let (written, _) = match self.write_rows(&mut tx, passing, None, false).await {
                Ok(w) => w,
                Err(e) => return Err(self.refusals(tx, pool, passing, None, e).await),
            };
            if let (Some(v), Some(sel)) = (verify, &readback) {
                let t0 = Instant::now();
                let back = self.select_rows(&mut tx, sel).await?;
                self.compare_back(v, &there, &back, t0)?;
            }
            self.rejects()
                .replace(&mut tx, &here, chunk, remaining)
                .await?;
            tx.commit().await.map_err(|e| db_error(&here, e))?;
            Ok(written)
        })
    }
}

/// `batches` with the texts of the `padded` columns (stored as `char(n)`) without their
/// trailing spaces, as such a column reads back.
fn unpadded(batches: Vec<RecordBatch>, padded: &[usize]) -> Result<Vec<RecordBatch>> {
    if padded.is_empty() {
        return Ok(batches);
    }
    batches
        .into_iter()
        .map(|b| {
            let mut columns = b.columns().to_vec();
            for &i in padded {
                if let Some(text) = columns[i].as_string_opt::<i32>() {
                    let trimmed: arrow::array::StringArray = text
                        .iter()
                        .map(|v| v.map(|v| v.trim_end_matches(' ')))
                        .collect();
                    columns[i] = Arc::new(trimmed);
                }
            }
            RecordBatch::try_new(b.schema(), columns).map_err(|e| Error::Internal(e.to_string()))
        })
        .collect()
}

/// Buffers a chunk's batches (bounded by the chunk size) and copies them in one
/// transaction at commit.
struct PgChunk<'a> {
    sink: &'a PostgresSink,
    chunk: Chunk,
    batches: Vec<RecordBatch>,
    rejects: Vec<QuarantineEntry>,
}

impl ChunkWriter for PgChunk<'_> {
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
        let facts = sink.facts()?;
        table::refuse(sink.refusals_before_sending(&self.batches)?)?;
        let replace = match sink.write_mode {
            WriteMode::ReplaceChunk => Some(sink.chunk_selection(&self.chunk, &self.batches)?),
            _ => None,
        };
        let readback = verify
            .map(|v| sink.chunk_rows(&v.selection, v.key, &self.batches))
            .transpose()?;
        sink.client.io().block_on(async {
            let db = |e| db_error(&here, e);
            let mut tx = pool.begin().await.map_err(db)?;
            sink.rejects()
                .replace(&mut tx, &here, self.chunk.id, &self.rejects)
                .await?;
            let written = sink
                .write_rows(&mut tx, &self.batches, replace.as_ref(), verify.is_some())
                .await;
            let (rows, sent) = match written {
                Ok(w) => w,
                Err(e) => {
                    return Err(sink
                        .refusals(tx, pool, &self.batches, replace.as_ref(), e)
                        .await);
                }
            };
            // Read back inside the transaction: what the database stored, before anything
            // of the chunk is visible, so a mismatch rolls the whole chunk back. Where the
            // server hashes each stored value as the sink hashed it when sending, the sum
            // of the hashes settles it without the rows leaving the server; else, where
            // the stored bytes must equal those sent, a digest of the bytes read back
            // does, without decoding them. Any difference (or a table that may store
            // other bytes for the same values) is compared value by value, which names
            // the first row that differs.
            if let (Some(v), Some(sel)) = (verify, &readback) {
                let t0 = Instant::now();
                let same = match (&facts.hasher, sent.hashed, sent.digest) {
                    (Some(hasher), Some(hashed), _) => {
                        sink.hash_rows(&mut tx, sel, hasher).await? == hashed
                    }
                    (_, _, Some(digest)) => sink.digest_rows(&mut tx, sel).await? == digest,
                    _ => false,
                };
                if same {
                    v.passed(t0);
                } else {
                    let back = sink.select_rows(&mut tx, sel).await?;
                    sink.compare_back(v, &[], &back, t0)?;
                }
            }
            let marked = match sink.pipeline.get() {
                Some(p) => {
                    // Refused when another run took the chunk over: the rows roll back.
                    Tables::new(PgDialect, &sink.schema, p)
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
    use super::*;

    fn found(name: &str, type_name: &str, typmod: i32) -> PgColumn {
        PgColumn {
            name: name.into(),
            type_name: type_name.into(),
            shown_type: type_name.into(),
            typmod,
            not_null: false,
            is_enum: false,
        }
    }

    #[test]
    fn a_read_back_compares_bytes_only_where_the_table_stores_what_it_is_sent() {
        let dec = |precision, scale| ColumnType::Decimal { precision, scale };
        let declared = |ty| vec![DeclaredColumn::new("c", ty, true, false)];
        let exact = |c: PgColumn, ty| TableFacts::of(&[c], &declared(ty)).byte_exact;
        assert!(TableFacts::created(&declared(ColumnType::Text)).byte_exact);
        let hashed = |c: PgColumn, ty| TableFacts::of(&[c], &declared(ty)).hasher.is_some();
        assert!(
            TableFacts::created(&declared(ColumnType::Text))
                .hasher
                .is_some()
        );
        assert!(
            TableFacts::created(&declared(ColumnType::TimestampTz))
                .hasher
                .is_none()
        );
        assert!(hashed(found("c", "varchar", 14), ColumnType::Varchar(10)));
        // `char(n)` hashes its text without the padding, as it reads back.
        assert!(hashed(found("c", "bpchar", 14), ColumnType::Text));
        assert_eq!(
            TableFacts::of(&[found("c", "bpchar", 14)], &declared(ColumnType::Text)).padded,
            [0]
        );
        assert!(!hashed(found("c", "jsonb", -1), ColumnType::Text));
        assert!(exact(found("c", "text", -1), ColumnType::Text));
        assert!(exact(found("c", "varchar", 14), ColumnType::Varchar(10)));
        // `char(n)` pads what it is sent.
        assert!(!exact(found("c", "bpchar", 14), ColumnType::Text));
        // numeric(12,2) stores the declared decimal(12,2) at its scale; numeric(12,4)
        // stores it at scale 4, other bytes for the same value; plain numeric keeps it.
        assert!(exact(found("c", "numeric", (12 << 16 | 2) + 4), dec(12, 2)));
        assert!(!exact(
            found("c", "numeric", (12 << 16 | 4) + 4),
            dec(12, 2)
        ));
        assert!(exact(found("c", "numeric", -1), dec(12, 2)));
        // Only the written columns count.
        assert!(exact(found("other", "bpchar", 14), ColumnType::Text));
    }
}
