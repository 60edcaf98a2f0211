//! MySQL and MariaDB tables and views, split into key ranges with keyset queries and read
//! over the binary protocol, each chunk in its own `REPEATABLE READ` transaction started
//! `WITH CONSISTENT SNAPSHOT`.
//!
//! Text keys are compared as bytes (`CAST(key AS BINARY)`), the order every other source
//! and target uses, whatever the column's collation: a case-insensitive collation would
//! put `a` and `A` in one place, and a `PAD SPACE` one would make `a` equal `a `.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use sqlx::Row;
use sqlx::mysql::MySqlPool;

use crate::chunk::key::{join_key, null_key_error, parse_keys, row_key};
use crate::chunk::{Chunk, ChunkRange, KeyValue};
use crate::config::{SecretUrl, SourceConfig};
use crate::db::mysql::errors::error as db_error;
use crate::db::mysql::{
    Decoder, MyColumn, MyKind, bind_key, connect, literal, qualified, quote, row_json,
    table_columns, table_names,
};
use crate::runtime::IoRuntime;
use crate::source::{
    BatchIter, ChannelIter, SchemaCast, SetAside, Source, Unreadable, key_positions, no_such_table,
};
use crate::sql::keyset::{KeyChunks, KeySql, marks};
use crate::sql::stmt;
use crate::types::ColumnType;
use crate::{Error, Result, RowFailure};

/// How a chunk's transaction starts: one consistent snapshot, no writes. Connections run
/// at `REPEATABLE READ` (see [`crate::db::mysql`]).
const BEGIN: &str = "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY";

/// Key values per `IN (...)` list of `read_keys`.
const KEYS_PER_LOOKUP: usize = 1000;

/// A table or view in a MySQL or MariaDB database.
pub struct MysqlSource {
    pool: MySqlPool,
    io: IoRuntime,
    shown: String,
    database: String,
    table: String,
    key: Vec<String>,
    /// Whether each key column is an integer (else text, compared as bytes).
    key_int: Vec<bool>,
    /// Each key column's position among the table's columns.
    key_index: Vec<usize>,
    /// The key columns that are `bigint unsigned`: their values above 2^63-1 cannot be
    /// chunk bounds, so planning checks there are none.
    big_unsigned: Vec<String>,
    keyset: KeySql,
    kinds: Vec<MyKind>,
    raw_schema: SchemaRef,
    schema: SchemaRef,
    /// `SELECT <columns> FROM <table>`.
    select: String,
    /// Rows whose stored value does not fit its column, per chunk.
    unreadable: SetAside,
}

impl MysqlSource {
    /// Connects and reads the table's columns; a column whose type cannot be read
    /// without loss is an error naming it.
    pub fn open(
        config: &SourceConfig,
        url: &SecretUrl,
        database: &str,
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
        let here = format!("{shown} table {database}.{table}");
        let pool = connect(io, url, &config.db)?;
        let Some(columns) = io.block_on(table_columns(&pool, database, &table, &shown))? else {
            let names = io.block_on(table_names(&pool, database, &shown))?;
            let within = Some(("database", database));
            return Err(no_such_table(&shown, within, &table, &names));
        };
        let declared = |name: &str| config.declared_type(name);
        let mut kinds = Vec::new();
        let mut raw_fields = Vec::new();
        let mut exprs = Vec::new();
        let mut problems = Vec::new();
        for c in &columns {
            let q = quote(&c.name);
            let read = match declared(&c.name) {
                // A spatial value has no text form CAST can give ("Illegal parameter data
                // type geometry for operation 'cast_as_char'"): declared text reads its
                // WKT, with its SRID in front (EWKT) when it has one so none is lost;
                // declared bytea reads its WKB.
                Some(ColumnType::Text | ColumnType::Varchar(_)) if is_spatial(c) => {
                    exprs.push(format!(
                        "CAST(CASE WHEN ST_SRID({q}) = 0 THEN ST_AsText({q}) \
                         ELSE CONCAT('SRID=', ST_SRID({q}), ';', ST_AsText({q})) END AS CHAR)"
                    ));
                    Ok((MyKind::Text, DataType::Utf8))
                }
                Some(ColumnType::Bytes) if is_spatial(c) => {
                    exprs.push(format!("ST_AsBinary({q})"));
                    Ok((MyKind::Bytes, DataType::Binary))
                }
                // Every other type has a text form; declared text reads it.
                Some(ColumnType::Text | ColumnType::Varchar(_)) => {
                    exprs.push(format!("CAST({q} AS CHAR)"));
                    Ok((MyKind::Text, DataType::Utf8))
                }
                _ => {
                    exprs.push(q);
                    MyKind::for_column(c)
                }
            };
            match read {
                Ok((kind, arrow_type)) => {
                    kinds.push(kind);
                    raw_fields.push(Field::new(&c.name, arrow_type, !c.not_null));
                }
                Err(why) if is_spatial(c) => problems.push(format!(
                    "column `{}`: {why}; declare [source.types] {} = \"text\" to read it as WKT (EWKT when it has an SRID), or \"bytea\" to read it as WKB",
                    c.name, c.name
                )),
                Err(why) => problems.push(format!(
                    "column `{}`: {why}; declare [source.types] {} = \"text\" to read its text form",
                    c.name, c.name
                )),
            }
        }
        if !problems.is_empty() {
            return Err(Error::data(&here, problems.join("; ")));
        }
        // Decimals arrive as their exact text; the declared schema casts them.
        let decoded_fields: Vec<Field> = raw_fields
            .iter()
            .zip(&kinds)
            .map(|(f, k)| Field::new(f.name(), k.arrow_type(), f.is_nullable()))
            .collect();
        let raw_schema = Arc::new(Schema::new(decoded_fields));
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
        let key_index = key_positions(&key, columns.iter().map(|c| c.name.as_str()), &here)?;
        let mut key_int = Vec::new();
        let mut big_unsigned = Vec::new();
        for (k, &i) in key.iter().zip(&key_index) {
            key_int.push(key_kind(&columns[i]).map_err(|why| Error::data(&here, why))?);
            if columns[i].data_type == "bigint" && columns[i].column_type.contains("unsigned") {
                big_unsigned.push(k.clone());
            }
        }
        let keyset = KeySql::new(
            key.iter().map(|k| quote(k)).collect(),
            key.iter()
                .zip(&key_int)
                .map(|(k, int)| match int {
                    true => quote(k),
                    false => format!("CAST({} AS BINARY)", quote(k)),
                })
                .collect(),
        );
        let select = format!(
            "SELECT {} FROM {}",
            exprs.join(", "),
            qualified(database, &table)
        );
        Ok(MysqlSource {
            pool,
            io: io.clone(),
            shown,
            database: database.to_string(),
            table,
            key,
            key_int,
            key_index,
            big_unsigned,
            keyset,
            kinds,
            raw_schema,
            schema: Arc::new(Schema::new(fields)),
            select,
            unreadable: SetAside::default(),
        })
    }

    fn t(&self) -> String {
        qualified(&self.database, &self.table)
    }

    /// `WHERE` for a chunk, with its bounds as parameters (in order).
    fn where_clause(&self, chunk: &Chunk) -> Result<(String, Vec<KeyValue>)> {
        let ChunkRange::Keys { lo, hi } = &chunk.range else {
            return Err(Error::Internal(format!("{chunk} is not a key-range chunk")));
        };
        let mut binds = Vec::new();
        let range = self
            .keyset
            .range(lo.as_ref(), hi.as_ref(), &mut marks(&mut binds))?;
        Ok((format!("WHERE {range}"), binds))
    }

    /// `ORDER BY` for a chunk's rows: key order where the index gives it for free. A text
    /// key's byte order would need a sort; its rows come in index order instead.
    fn order(&self) -> String {
        if self.key_int.iter().all(|i| *i) {
            format!(" ORDER BY {}", self.keyset.order_by())
        } else {
            String::new()
        }
    }

    fn cast(&self) -> SchemaCast {
        SchemaCast::new(&self.raw_schema, &self.schema)
    }
}

/// Whether a key column is an integer (`true`) or text compared as UTF-8 bytes (`false`);
/// `Err` says why it cannot be a chunk key.
/// Whether `c` is of a spatial type (`geometry`, `point`, ...), which has no text form
/// a CAST gives.
fn is_spatial(c: &MyColumn) -> bool {
    matches!(
        c.data_type.as_str(),
        "geometry"
            | "point"
            | "linestring"
            | "polygon"
            | "multipoint"
            | "multilinestring"
            | "multipolygon"
            | "geometrycollection"
            | "geomcollection"
    )
}

fn key_kind(c: &MyColumn) -> Result<bool, String> {
    match c.data_type.as_str() {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" => Ok(true),
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
            match c.charset.as_deref() {
                Some("utf8mb4" | "utf8mb3" | "utf8" | "ascii") => Ok(false),
                other => Err(format!(
                    "key column `{}` is text in character set {}; chunks compare text keys as UTF-8 bytes, so the key must be utf8mb4, utf8mb3 or ascii",
                    c.name,
                    other.unwrap_or("binary")
                )),
            }
        }
        _ => Err(format!(
            "key column `{}` is {}; chunks are ranges of an integer or text key",
            c.name, c.column_type
        )),
    }
}

impl Source for MysqlSource {
    fn describe(&self) -> String {
        format!("{} table {}.{}", self.shown, self.database, self.table)
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
        let selected: Vec<String> = self
            .key
            .iter()
            .zip(&self.key_int)
            .map(|(k, int)| match int {
                true => format!("CAST({} AS SIGNED)", quote(k)),
                false => format!("CAST({} AS BINARY)", quote(k)),
            })
            .collect();
        self.io.block_on(async {
            let db = |e| db_error(&here, e);
            // The plan sees one snapshot, like each chunk.
            let mut tx = self.pool.begin_with(BEGIN).await.map_err(db)?;
            let nulls: i64 = sqlx::query_scalar(stmt(format!(
                "SELECT CAST(count(*) AS SIGNED) FROM {t} WHERE {any_null}"
            )))
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
            if nulls > 0 {
                return Err(null_key_error(&here, nulls, &self.key));
            }
            for k in &self.big_unsigned {
                let above: i64 = sqlx::query_scalar(stmt(format!(
                    "SELECT CAST(count(*) AS SIGNED) FROM {t} WHERE {} > 9223372036854775807",
                    quote(k)
                )))
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
                if above > 0 {
                    return Err(Error::data(
                        &here,
                        format!("{above} rows have key `{k}` (bigint unsigned) above 9223372036854775807; chunk bounds are signed 64-bit integers, so these rows cannot be planned. Chunk by another key"),
                    ));
                }
            }
            // Keyset paging: each step walks the key index `rows_per_chunk` entries from
            // the previous boundary, so the cost does not grow with the position.
            let mut plan = KeyChunks::new(rows_per_chunk);
            let tail = loop {
                let mut binds = Vec::new();
                let sql = self.keyset.boundary(
                    &t,
                    &selected,
                    plan.lo(),
                    rows_per_chunk - 1,
                    &mut marks(&mut binds),
                )?;
                let mut q = sqlx::query(stmt(sql));
                for b in &binds {
                    q = bind_key(q, b);
                }
                let Some(row) = q.fetch_optional(&mut *tx).await.map_err(db)? else {
                    // Fewer than a chunk's rows are left: count them for the last chunk.
                    let mut binds = Vec::new();
                    let sql = format!(
                        "SELECT CAST(count(*) AS SIGNED) FROM {t} WHERE {}",
                        self.keyset
                            .range(plan.lo(), None, &mut marks(&mut binds))?
                    );
                    let mut q = sqlx::query(stmt(sql));
                    for b in &binds {
                        q = bind_key(q, b);
                    }
                    let count: i64 = q
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db)?
                        .try_get(0)
                        .map_err(db)?;
                    break count as u64;
                };
                let mut parts = Vec::with_capacity(self.key.len());
                for (i, int) in self.key_int.iter().enumerate() {
                    parts.push(if *int {
                        KeyValue::Int(row.try_get::<i64, _>(i).map_err(db)?)
                    } else {
                        let bytes = row.try_get::<Vec<u8>, _>(i).map_err(db)?;
                        KeyValue::Text(String::from_utf8(bytes).map_err(|e| {
                            Error::data(
                                &here,
                                format!(
                                    "key `{}` holds a value that is not UTF-8: {e}",
                                    self.key[i]
                                ),
                            )
                        })?)
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
        let (cond, binds) = self.where_clause(chunk)?;
        let sql = format!("{} {cond}{}", self.select, self.order());
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
        let pool = self.pool.clone();
        let kinds = self.kinds.clone();
        let raw_schema = self.raw_schema.clone();
        let here = format!("{} {chunk}", self.describe());
        let this = self.cast();
        let (key_names, key_index) = (self.key.clone(), self.key_index.clone());
        let set_aside = self.unreadable.clone();
        let chunk_id = chunk.id;
        // A redone chunk finds its unreadable rows again.
        set_aside.clear(chunk_id);
        self.io.spawn(async move {
            let sender = tx.clone();
            let result = async {
                let db = |e| db_error(&here, e);
                let mut conn = pool.begin_with(BEGIN).await.map_err(db)?;
                let mut decoder = Decoder::new(&kinds, raw_schema.clone(), batch_rows);
                {
                    let mut q = sqlx::query(stmt(sql));
                    for b in &binds {
                        q = bind_key(q, b);
                    }
                    let mut rows = q.fetch(&mut *conn);
                    while let Some(row) = rows.try_next().await.map_err(db)? {
                        // A row whose value does not fit its column goes to the
                        // quarantine whole; the chunk goes on.
                        let full = match decoder.push(&row) {
                            Ok(full) => full,
                            Err((i, reason)) => {
                                set_aside.push(
                                    chunk_id,
                                    Unreadable {
                                        location: format!(
                                            "{here}, {}",
                                            label(&key_names, &key_index, &row)
                                        ),
                                        line: 0,
                                        key: Some(key_of(&key_index, &row)),
                                        column: Some(raw_schema.field(i).name().clone()),
                                        reason,
                                        raw: row_json(&row),
                                        raw_bytes: None,
                                    },
                                );
                                continue;
                            }
                        };
                        if let Some(b) = full
                            && sender.send(this.cast(b, &here)).await.is_err()
                        {
                            return Ok(());
                        }
                    }
                }
                if decoder.len > 0 {
                    let b = decoder.finish()?;
                    let _ = sender.send(this.cast(b, &here)).await;
                }
                conn.rollback().await.map_err(db)?;
                Ok::<_, Error>(())
            }
            .await;
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Box::new(ChannelIter(rx)))
    }

    fn read_keys(&self, keys: &[Option<String>]) -> Result<Option<(RecordBatch, Vec<usize>)>> {
        let here = self.describe();
        let (wanted, values) = parse_keys(keys, &self.key, &self.key_int, &here)?;
        let mut batches = Vec::new();
        self.io.block_on(async {
            let db = |e| db_error(&here, e);
            let mut conn = self.pool.begin_with(BEGIN).await.map_err(db)?;
            for part in values.chunks(KEYS_PER_LOOKUP) {
                let sql = format!(
                    "{} WHERE {}{}",
                    self.select,
                    self.keyset.one_of(part, &mut |v| Ok(literal(v)))?,
                    self.order()
                );
                let mut decoder = Decoder::new(&self.kinds, self.raw_schema.clone(), 8192);
                let mut rows = sqlx::query(stmt(sql)).fetch(&mut *conn);
                while let Some(row) = rows.try_next().await.map_err(db)? {
                    let full = decoder.push(&row).map_err(|(i, reason)| {
                        Error::Row(RowFailure {
                            location: format!(
                                "{here}, {}",
                                label(&self.key, &self.key_index, &row)
                            ),
                            column: Some(self.raw_schema.field(i).name().clone()),
                            value: None,
                            reason,
                        })
                    })?;
                    batches.extend(full);
                }
                drop(rows);
                if decoder.len > 0 {
                    batches.push(decoder.finish()?);
                }
            }
            conn.rollback().await.map_err(db)
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

    fn unreadable(&self, chunk: &Chunk) -> Vec<Unreadable> {
        self.unreadable.get(chunk.id)
    }

    fn locate(&self, chunk: &Chunk, row: u64) -> String {
        format!("{} {chunk} row {}", self.describe(), row + 1)
    }
}

/// The key of a row that could not be decoded, as text, for its message.
fn key_text_of(row: &sqlx::mysql::MySqlRow, index: usize) -> String {
    if let Ok(Some(v)) = row.try_get::<Option<i64>, _>(index) {
        return v.to_string();
    }
    match row.try_get_unchecked::<Option<Vec<u8>>, _>(index) {
        Ok(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        _ => "?".into(),
    }
}

/// The key of a row, named for messages: `id=42`, `tenant=1, id=7`.
fn label(key: &[String], index: &[usize], row: &sqlx::mysql::MySqlRow) -> String {
    key.iter()
        .zip(index)
        .map(|(k, &i)| format!("{k}={}", key_text_of(row, i)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The key of a row as the quarantine keeps it (see [`crate::chunk::key::row_key`]).
fn key_of(index: &[usize], row: &sqlx::mysql::MySqlRow) -> String {
    join_key(index.iter().map(|&i| key_text_of(row, i)).collect()).unwrap_or_default()
}
