//! PostgreSQL tables and views, split into key ranges with keyset queries and read with
//! binary `COPY (SELECT ...) TO STDOUT`, each chunk in its own read-only
//! `REPEATABLE READ` transaction.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgPool};

use crate::chunk::key::{null_key_error, parse_keys, row_key};
use crate::chunk::{Chunk, ChunkRange, KeyValue};
use crate::config::{SecretUrl, SourceConfig};
use crate::db::postgres::errors::error as db_error;
use crate::db::postgres::{
    Decoder, PgColumn, PgKind, connect, literal, qualified, table_columns, table_names,
};
use crate::runtime::IoRuntime;
use crate::source::{
    BatchIter, ChannelIter, Projection, SchemaCast, Source, key_positions, no_such_table,
};
use crate::sql::keyset::{KeyChunks, KeySql};
use crate::sql::{quote_ident, stmt};
use crate::types::ColumnType;
use crate::{Error, Result, RowFailure};

/// How a chunk's transaction starts: one consistent snapshot, no writes.
const BEGIN: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

/// A table or view in a PostgreSQL database.
pub struct PostgresSource {
    pool: PgPool,
    io: IoRuntime,
    shown: String,
    schema_name: String,
    table: String,
    key: Vec<String>,
    /// Whether each key column is an integer (else text, compared in byte order).
    key_int: Vec<bool>,
    /// Each key column as a chunk bound is selected (see `open`).
    bounds: Vec<String>,
    keyset: KeySql,
    kinds: Vec<PgKind>,
    raw_schema: SchemaRef,
    schema: SchemaRef,
    /// How each column is selected.
    exprs: Vec<String>,
    /// `SELECT <columns> FROM <table>`.
    select: String,
}

impl PostgresSource {
    /// Connects and reads the table's columns; a column whose type cannot be read
    /// without loss is an error naming it.
    pub fn open(
        config: &SourceConfig,
        url: &SecretUrl,
        schema_name: &str,
        io: &IoRuntime,
    ) -> Result<Self> {
        let table = config
            .table
            .as_ref()
            .map(|t| t.value.clone())
            .unwrap_or_default();
        let key = config
            .key
            .as_ref()
            .map(|k| k.value.clone())
            .unwrap_or_default();
        let shown = url.shown();
        let here = format!("{shown} table {schema_name}.{table}");
        let pool = connect(io, url, &config.db)?;
        let columns = io.block_on(table_columns(&pool, schema_name, &table, &shown))?;
        let Some(columns) = columns else {
            let names = io.block_on(table_names(&pool, schema_name, &shown))?;
            let within = Some(("schema", schema_name));
            return Err(no_such_table(&shown, within, &table, &names));
        };
        let declared = |name: &str| config.declared_type(name);
        let mut kinds = Vec::new();
        let mut exprs = Vec::new();
        let mut problems = Vec::new();
        for c in &columns {
            let as_text = matches!(
                declared(&c.name),
                Some(ColumnType::Text | ColumnType::Varchar(_))
            );
            let q = quote_ident(&c.name);
            if as_text {
                // Every type has a text form; declared text reads it.
                kinds.push(PgKind::Text);
                exprs.push(format!("{q}::text"));
                continue;
            }
            match PgKind::for_column(c) {
                Ok((kind, text)) => {
                    kinds.push(kind);
                    exprs.push(if text { format!("{q}::text") } else { q });
                }
                Err(why) => problems.push(format!(
                    "column `{}`: {why}; declare [source.types] {} = \"text\" to read its text form",
                    c.name, c.name
                )),
            }
        }
        if !problems.is_empty() {
            return Err(Error::data(&here, problems.join("; ")));
        }
        let raw_fields: Vec<Field> = columns
            .iter()
            .zip(&kinds)
            .map(|(c, k)| Field::new(&c.name, k.arrow_type(), !c.not_null))
            .collect();
        let raw_schema = Arc::new(Schema::new(raw_fields.clone()));
        let mut fields = raw_fields;
        for (name, ty) in &config.types {
            match fields.iter_mut().find(|f| f.name() == &name.value) {
                Some(f) => *f = Field::new(&name.value, ty.value.arrow_type(), f.is_nullable()),
                None => {
                    return Err(Error::data(
                        &here,
                        format!(
                            "[source.types] names column `{}`, which the table does not have",
                            name.value
                        ),
                    ));
                }
            }
        }
        let mut key_int = Vec::new();
        let positions = key_positions(&key, columns.iter().map(|c| c.name.as_str()), &here)?;
        for (k, &i) in key.iter().zip(&positions) {
            key_int.push(match kinds[i] {
                PgKind::Int2 | PgKind::Int4 | PgKind::Int8 => true,
                PgKind::Text if is_plain_text(&columns[i]) => false,
                _ => {
                    return Err(Error::data(
                        &here,
                        format!(
                            "key column `{k}` is {}; chunks are ranges of an integer or text key",
                            columns[i].shown_type
                        ),
                    ));
                }
            });
        }
        // Chunk bounds as read back: integers as int8, text as text. A `char(n)` keeps
        // its padding (`::text` would strip it), as its values do when they are read: a
        // bound must sort where the padded value sorts in a text target.
        let bounds: Vec<String> = key
            .iter()
            .zip(&key_int)
            .map(|(k, int)| {
                let bpchar = columns
                    .iter()
                    .any(|c| &c.name == k && c.type_name == "bpchar");
                match (int, bpchar) {
                    (true, _) => format!("{}::int8", quote_ident(k)),
                    (false, true) => format!("format('%s', {})", quote_ident(k)),
                    (false, false) => format!("{}::text", quote_ident(k)),
                }
            })
            .collect();
        // Text keys compare in byte order, the same order as every other source and
        // target, whatever the database's collation.
        let keyset = KeySql::new(
            key.iter().map(|k| quote_ident(k)).collect(),
            key.iter()
                .zip(&key_int)
                .map(|(k, int)| match int {
                    true => quote_ident(k),
                    false => format!("{} COLLATE \"C\"", quote_ident(k)),
                })
                .collect(),
        );
        let select = format!(
            "SELECT {} FROM {}",
            exprs.join(", "),
            qualified(schema_name, &table)
        );
        Ok(PostgresSource {
            pool,
            io: io.clone(),
            shown,
            schema_name: schema_name.to_string(),
            table,
            key,
            key_int,
            bounds,
            keyset,
            kinds,
            raw_schema,
            schema: Arc::new(Schema::new(fields)),
            exprs,
            select,
        })
    }

    fn t(&self) -> String {
        qualified(&self.schema_name, &self.table)
    }

    fn where_clause(&self, chunk: &Chunk) -> Result<String> {
        let ChunkRange::Keys { lo, hi } = &chunk.range else {
            return Err(Error::Internal(format!("{chunk} is not a key-range chunk")));
        };
        let range = self.keyset.range(lo.as_ref(), hi.as_ref(), &mut literal)?;
        Ok(format!("WHERE {range}"))
    }

    fn cast(&self) -> SchemaCast {
        SchemaCast::new(&self.raw_schema, &self.schema)
    }

    /// Reads `chunk` with `select` (the columns, then `FROM` the table), decoding into
    /// `raw_schema` and handing batches out through `this`.
    fn read_as(
        &self,
        chunk: &Chunk,
        batch_rows: usize,
        select: &str,
        raw_schema: &SchemaRef,
        this: SchemaCast,
    ) -> Result<BatchIter> {
        let sql = format!(
            "{select} {} ORDER BY {}",
            self.where_clause(chunk)?,
            self.keyset.order_by()
        );
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
        let pool = self.pool.clone();
        let kinds = self.kinds.clone();
        let raw_schema = raw_schema.clone();
        let here = format!("{} {chunk}", self.describe());
        self.io.spawn(async move {
            let sender = tx.clone();
            let result = async {
                let mut conn = pool
                    .begin_with(BEGIN)
                    .await
                    .map_err(|e| db_error(&here, e))?;
                let mut decoder = Decoder::new(&kinds, raw_schema.clone(), batch_rows);
                let mut pending: Vec<RecordBatch> = Vec::new();
                // Batches are handed over as the stream is decoded, not at the end.
                let copy = format!("COPY ({sql}) TO STDOUT (FORMAT binary)");
                let mut stream = conn
                    .copy_out_raw(&copy)
                    .await
                    .map_err(|e| db_error(&here, e))?;
                while let Some(data) = stream.try_next().await.map_err(|e| db_error(&here, e))? {
                    let mut emit = |b: RecordBatch| {
                        pending.push(b);
                        Ok(())
                    };
                    decoder
                        .feed(&data, &mut emit)
                        .map_err(|(col, reason)| match col {
                            Some(i) => Error::Row(RowFailure {
                                location: format!("{here} row {}", decoder.rows + 1),
                                column: Some(raw_schema.field(i).name().clone()),
                                value: None,
                                reason,
                            }),
                            None => Error::data(&here, reason),
                        })?;
                    for b in pending.drain(..) {
                        if sender.send(this.cast(b, &here)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                drop(stream);
                if !decoder.ended() {
                    return Err(Error::data(
                        &here,
                        "the COPY stream ended without its trailer",
                    ));
                }
                if decoder.len > 0 {
                    let b = decoder.finish()?;
                    let _ = sender.send(this.cast(b, &here)).await;
                }
                conn.rollback().await.map_err(|e| db_error(&here, e))?;
                Ok::<_, Error>(())
            }
            .await;
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Box::new(ChannelIter(rx)))
    }
}

fn is_plain_text(c: &PgColumn) -> bool {
    matches!(c.type_name.as_str(), "text" | "varchar" | "bpchar" | "name")
}

/// Streams `COPY (sql) TO STDOUT` on `conn` through a decoder; `emit` gets each batch.
async fn copy_out(
    conn: &mut PgConnection,
    sql: &str,
    decoder: &mut Decoder,
    names: &SchemaRef,
    here: &str,
    emit: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    let copy = format!("COPY ({sql}) TO STDOUT (FORMAT binary)");
    let mut stream = conn
        .copy_out_raw(&copy)
        .await
        .map_err(|e| db_error(here, e))?;
    while let Some(data) = stream.try_next().await.map_err(|e| db_error(here, e))? {
        decoder
            .feed(&data, emit)
            .map_err(|(col, reason)| match col {
                Some(i) => Error::Row(RowFailure {
                    location: format!("{here}, row {}", decoder.rows + 1),
                    column: Some(names.field(i).name().clone()),
                    value: None,
                    reason,
                }),
                None => Error::data(here, reason),
            })?;
    }
    if !decoder.ended() {
        return Err(Error::data(
            here,
            "the COPY stream ended without its trailer",
        ));
    }
    if decoder.len > 0 {
        emit(decoder.finish()?)?;
    }
    Ok(())
}

impl Source for PostgresSource {
    fn describe(&self) -> String {
        format!("{} table {}.{}", self.shown, self.schema_name, self.table)
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn key(&self) -> &[String] {
        &self.key
    }

    fn names_rows_by_key(&self) -> bool {
        true
    }

    fn plan(&self, rows_per_chunk: u64) -> Result<Vec<Chunk>> {
        let t = self.t();
        let here = self.describe();
        let any_null = self.keyset.any_null();
        let selected = &self.bounds;
        self.io.block_on(async {
            let db = |e| db_error(&here, e);
            // The plan sees one snapshot, like each chunk.
            let mut tx = self.pool.begin_with(BEGIN).await.map_err(db)?;
            let nulls: i64 =
                sqlx::query_scalar(stmt(format!("SELECT count(*) FROM {t} WHERE {any_null}")))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db)?;
            if nulls > 0 {
                return Err(null_key_error(&here, nulls, &self.key));
            }
            // Keyset paging: each step walks the key index `rows_per_chunk` entries from
            // the previous boundary, so the cost does not grow with the position.
            let mut plan = KeyChunks::new(rows_per_chunk);
            let tail = loop {
                let sql = self.keyset.boundary(
                    &t,
                    selected,
                    plan.lo(),
                    rows_per_chunk - 1,
                    &mut literal,
                )?;
                let row = sqlx::query(stmt(sql))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
                let Some(row) = row else {
                    // Fewer than a chunk's rows are left: count them for the last chunk.
                    let sql = format!(
                        "SELECT count(*) FROM {t} WHERE {}",
                        self.keyset.range(plan.lo(), None, &mut literal)?
                    );
                    let count: i64 = sqlx::query_scalar(stmt(sql))
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db)?;
                    break count as u64;
                };
                let mut parts = Vec::with_capacity(self.key.len());
                for (i, int) in self.key_int.iter().enumerate() {
                    parts.push(if *int {
                        KeyValue::Int(row.try_get::<i64, _>(i).map_err(db)?)
                    } else {
                        KeyValue::Text(row.try_get::<String, _>(i).map_err(db)?)
                    });
                }
                let hi = KeyValue::from_parts(parts);
                plan.boundary(hi);
            };
            tx.rollback().await.map_err(db)?;
            Ok(plan.finish(tail))
        })
    }

    fn read(&self, chunk: &Chunk, batch_rows: usize) -> Result<BatchIter> {
        self.read_as(
            chunk,
            batch_rows,
            &self.select,
            &self.raw_schema,
            self.cast(),
        )
    }

    fn read_used(
        &self,
        chunk: &Chunk,
        batch_rows: usize,
        used: &[bool],
    ) -> Result<Option<BatchIter>> {
        let p = Projection::new(&self.exprs, &self.raw_schema, &self.schema, used)?;
        let select = format!("SELECT {} FROM {}", p.list, self.t());
        let cast = SchemaCast::new(&p.raw, &p.schema);
        self.read_as(chunk, batch_rows, &select, &p.raw, cast)
            .map(Some)
    }
    fn read_keys(&self, keys: &[Option<String>]) -> Result<Option<(RecordBatch, Vec<usize>)>> {
        let here = self.describe();
        let (wanted, values) = parse_keys(keys, &self.key, &self.key_int, &here)?;
        let mut batches = Vec::new();
        self.io.block_on(async {
            let mut conn = self
                .pool
                .begin_with(BEGIN)
                .await
                .map_err(|e| db_error(&here, e))?;
            for part in values.chunks(1000) {
                let sql = format!(
                    "{} WHERE {} ORDER BY {}",
                    self.select,
                    self.keyset.plain().one_of(part, &mut literal)?,
                    self.keyset.order_by()
                );
                let mut decoder = Decoder::new(&self.kinds, self.raw_schema.clone(), 8192);
                copy_out(
                    &mut conn,
                    &sql,
                    &mut decoder,
                    &self.raw_schema,
                    &here,
                    &mut |b| {
                        batches.push(b);
                        Ok(())
                    },
                )
                .await?;
            }
            conn.rollback().await.map_err(|e| db_error(&here, e))
        })?;
        let batch = if batches.is_empty() {
            RecordBatch::new_empty(self.raw_schema.clone())
        } else {
            arrow::compute::concat_batches(&self.raw_schema, &batches)
                .map_err(|e| Error::Internal(e.to_string()))?
        };
        let mut origin = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let k = row_key(&batch, &self.key, row).unwrap_or_default();
            origin.push(
                *wanted
                    .get(k.as_str())
                    .ok_or_else(|| Error::Internal(format!("unexpected key {k}")))?,
            );
        }
        let batch = self.cast().cast(batch, &here)?;
        Ok(Some((batch, origin)))
    }

    fn locate(&self, chunk: &Chunk, row: u64) -> String {
        format!("{} {chunk} row {}", self.describe(), row + 1)
    }
}
