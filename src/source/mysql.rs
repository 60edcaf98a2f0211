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

use super::{BatchIter, ChannelIter, SchemaCast, SetAside, Source, Unreadable, key_text};
use crate::config::{SecretUrl, SourceConfig};
use crate::db::mysql::{
    Decoder, MyColumn, MyKind, bind_key, connect, literal, qualified, quote, row_json,
    table_columns, table_names,
};
use crate::db::{IoRuntime, stmt};
use crate::plan::{Chunk, ChunkRange, KeyValue};
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
    key: String,
    /// Whether the key is an integer (else text, compared as bytes).
    int_key: bool,
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
            let hint = match crate::config::suggest(&table, names.iter().map(String::as_str)) {
                Some(best) => format!("did you mean `{best}`?"),
                None if names.is_empty() => format!("database `{database}` has no tables"),
                None => format!("tables are: {}", names.join(", ")),
            };
            return Err(Error::data(
                &shown,
                format!("table `{database}.{table}` does not exist; {hint}"),
            ));
        };
        let declared = |name: &str| {
            config
                .types
                .iter()
                .find(|(n, _)| n.value == name)
                .map(|(_, t)| t.value)
        };
        let mut kinds = Vec::new();
        let mut raw_fields = Vec::new();
        let mut exprs = Vec::new();
        let mut problems = Vec::new();
        for c in &columns {
            let q = quote(&c.name);
            let read = match declared(&c.name) {
                // Every type has a text form; declared text reads it.
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
        let Some(key_column) = columns.iter().find(|c| c.name == key) else {
            let names: Vec<_> = columns.iter().map(|c| c.name.as_str()).collect();
            return Err(Error::data(
                &here,
                format!(
                    "key column `{key}` does not exist; columns are: {}",
                    names.join(", ")
                ),
            ));
        };
        let int_key = key_kind(key_column).map_err(|why| Error::data(&here, why))?;
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
            int_key,
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

    /// The key as compared: text keys as bytes.
    fn k(&self) -> String {
        if self.int_key {
            quote(&self.key)
        } else {
            format!("CAST({} AS BINARY)", quote(&self.key))
        }
    }

    /// `WHERE` for a chunk, with its bounds as parameters (in order).
    fn where_clause(&self, chunk: &Chunk) -> Result<(String, Vec<KeyValue>)> {
        let ChunkRange::Keys { lo, hi } = &chunk.range else {
            return Err(Error::Internal(format!("{chunk} is not a key-range chunk")));
        };
        let k = self.k();
        let mut conds = vec![format!("{} IS NOT NULL", quote(&self.key))];
        let mut binds = Vec::new();
        if let Some(lo) = lo {
            conds.push(format!("{k} > ?"));
            binds.push(lo.clone());
        }
        if let Some(hi) = hi {
            conds.push(format!("{k} <= ?"));
            binds.push(hi.clone());
        }
        Ok((format!("WHERE {}", conds.join(" AND ")), binds))
    }

    /// `ORDER BY` for a chunk's rows: key order where the index gives it for free. A text
    /// key's byte order would need a sort; its rows come in index order instead.
    fn order(&self) -> String {
        if self.int_key {
            format!(" ORDER BY {}", quote(&self.key))
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

    fn key(&self) -> Option<&str> {
        Some(&self.key)
    }

    fn names_rows_by_key(&self) -> bool {
        true
    }

    fn plan(&self, rows_per_chunk: u64) -> Result<Vec<Chunk>> {
        let key = quote(&self.key);
        let k = self.k();
        let t = self.t();
        let here = self.describe();
        self.io.block_on(async {
            let db = |e| Error::db(&here, e);
            // The plan sees one snapshot, like each chunk.
            let mut tx = self.pool.begin_with(BEGIN).await.map_err(db)?;
            let nulls: i64 = sqlx::query_scalar(stmt(format!(
                "SELECT CAST(count(*) AS SIGNED) FROM {t} WHERE {key} IS NULL"
            )))
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
            if nulls > 0 {
                return Err(Error::data(
                    &here,
                    format!(
                        "{nulls} rows have a NULL key `{}`; chunks are key ranges, so they would be skipped. Choose a non-null key column",
                        self.key
                    ),
                ));
            }
            // Keyset paging: each step walks the key index `rows_per_chunk` entries from
            // the previous boundary. No OFFSET, so the cost does not grow with the position.
            let hi = if self.int_key {
                "CAST(max(k) AS SIGNED)"
            } else {
                "max(k)"
            };
            let step = |cond: &str| {
                format!(
                    "SELECT {hi}, CAST(count(*) AS SIGNED) FROM (SELECT {k} AS k FROM {t} WHERE {cond} ORDER BY {k} LIMIT ?) s"
                )
            };
            let first = step(&format!("{key} IS NOT NULL"));
            let next = step(&format!("{k} > ?"));
            let mut chunks: Vec<Chunk> = Vec::new();
            let mut lo: Option<KeyValue> = None;
            loop {
                let row = match &lo {
                    None => sqlx::query(stmt(first.clone())).bind(rows_per_chunk as i64),
                    Some(v) => bind_key(sqlx::query(stmt(next.clone())), v).bind(rows_per_chunk as i64),
                }
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
                let count: i64 = row.try_get(1).map_err(db)?;
                if count == 0 {
                    break;
                }
                let hi = if self.int_key {
                    row.try_get::<Option<i64>, _>(0).map_err(db)?.map(KeyValue::Int)
                } else {
                    match row.try_get::<Option<Vec<u8>>, _>(0).map_err(db)? {
                        Some(bytes) => Some(KeyValue::Text(String::from_utf8(bytes).map_err(|e| {
                            Error::data(&here, format!("key `{}` holds a value that is not UTF-8: {e}", self.key))
                        })?)),
                        None => None,
                    }
                };
                chunks.push(Chunk {
                    id: chunks.len(),
                    range: ChunkRange::Keys { lo: lo.clone(), hi: hi.clone() },
                    rows: Some(count as u64),
                });
                lo = hi;
                if (count as u64) < rows_per_chunk {
                    break;
                }
            }
            tx.rollback().await.map_err(db)?;
            // The last chunk is open-ended so rows added after planning are not lost.
            if let Some(last) = chunks.last_mut()
                && let ChunkRange::Keys { hi, .. } = &mut last.range
            {
                *hi = None;
            }
            Ok(chunks)
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
        let key_name = self.key.clone();
        let key_index = raw_schema.index_of(&self.key).unwrap_or(0);
        let this = self.cast();
        let set_aside = self.unreadable.clone();
        let chunk_id = chunk.id;
        // A redone chunk finds its unreadable rows again.
        set_aside.clear(chunk_id);
        self.io.spawn(async move {
            let sender = tx.clone();
            let result = async {
                let db = |e| Error::db(&here, e);
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
                                let key = key_text_of(&row, key_index);
                                set_aside.push(
                                    chunk_id,
                                    Unreadable {
                                        location: format!("{here}, {key_name}={key}"),
                                        line: 0,
                                        key: Some(key),
                                        column: Some(raw_schema.field(i).name().clone()),
                                        reason,
                                        raw: row_json(&row),
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
        let key_index = self
            .raw_schema
            .index_of(&self.key)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let wanted: std::collections::HashMap<&str, usize> = keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| Some((k.as_deref()?, i)))
            .collect();
        let here = self.describe();
        let literals: Vec<String> = wanted
            .keys()
            .filter_map(|k| match (self.int_key, k.parse::<i64>()) {
                (true, Ok(i)) => Some(i.to_string()),
                (true, Err(_)) => None,
                (false, _) => Some(literal(&KeyValue::Text(k.to_string()))),
            })
            .collect();
        let mut batches = Vec::new();
        self.io.block_on(async {
            let db = |e| Error::db(&here, e);
            let mut conn = self.pool.begin_with(BEGIN).await.map_err(db)?;
            for part in literals.chunks(KEYS_PER_LOOKUP) {
                let sql = format!(
                    "{} WHERE {} IN ({}){}",
                    self.select,
                    self.k(),
                    part.join(", "),
                    self.order()
                );
                let mut decoder = Decoder::new(&self.kinds, self.raw_schema.clone(), 8192);
                let mut rows = sqlx::query(stmt(sql)).fetch(&mut *conn);
                while let Some(row) = rows.try_next().await.map_err(db)? {
                    let full = decoder.push(&row).map_err(|(i, reason)| {
                        Error::Row(RowFailure {
                            location: format!(
                                "{here}, {}={}",
                                self.key,
                                key_text_of(&row, key_index)
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
        let key_col = batch.column(key_index).clone();
        let mut origin = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let k = key_text(key_col.as_ref(), row);
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
