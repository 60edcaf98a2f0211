//! SQLite tables, split into key ranges with keyset queries.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder,
    StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use sqlx::sqlite::{SqlitePool, SqliteRow, SqliteValueRef};
use sqlx::{Decode, Row, Sqlite, TypeInfo, ValueRef};

use super::{BatchIter, Source};
use crate::config::{SourceConfig, show_path};
use crate::db::sqlite::{Access, connect, table_columns, table_names};
use crate::db::{IoRuntime, quote_ident, stmt};
use crate::plan::{Chunk, ChunkRange, KeyValue};
use crate::transform::cast::cast_lossless;
use crate::{Error, Result, RowFailure};

/// How a column's values are read, from its declared type's affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Real,
    Text,
    Blob,
    Bool,
}

impl Kind {
    /// SQLite's affinity rules (section 3.1 of its datatype page), plus BOOLEAN. Columns
    /// with NUMERIC affinity (DECIMAL, DATE, ...) are read as text so nothing is rounded.
    fn from_decl(decl: &str) -> Kind {
        let d = decl.to_ascii_uppercase();
        if d.contains("INT") {
            Kind::Int
        } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") || d.is_empty() {
            Kind::Text
        } else if d.contains("BLOB") {
            Kind::Blob
        } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
            Kind::Real
        } else if d.contains("BOOL") {
            Kind::Bool
        } else {
            Kind::Text
        }
    }

    fn arrow_type(self) -> DataType {
        match self {
            Kind::Int => DataType::Int64,
            Kind::Real => DataType::Float64,
            Kind::Text => DataType::Utf8,
            Kind::Blob => DataType::Binary,
            Kind::Bool => DataType::Boolean,
        }
    }
}

/// A table in a SQLite database file.
pub struct SqliteSource {
    pool: SqlitePool,
    io: IoRuntime,
    shown: String,
    table: String,
    key: String,
    kinds: Vec<Kind>,
    raw_schema: SchemaRef,
    schema: SchemaRef,
    select: String,
}

impl SqliteSource {
    /// Opens the database read-only and reads the table's columns.
    pub fn open(config: &SourceConfig, path: &Path, io: &IoRuntime) -> Result<Self> {
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
        let shown = format!("sqlite://{}", show_path(path));
        let pool = connect(io, path, Access::Read, 4)?;
        let columns = io.block_on(table_columns(&pool, &table, &shown))?;
        let Some(columns) = columns else {
            let names = io.block_on(table_names(&pool, &shown))?;
            let hint = match crate::config::suggest(&table, names.iter().map(String::as_str)) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!("tables are: {}", names.join(", ")),
            };
            return Err(Error::data(
                &shown,
                format!("table `{table}` does not exist; {hint}"),
            ));
        };
        let kinds: Vec<Kind> = columns.iter().map(|c| Kind::from_decl(&c.decl)).collect();
        let raw_fields: Vec<Field> = columns
            .iter()
            .zip(&kinds)
            .map(|(c, k)| {
                Field::new(
                    &c.name,
                    k.arrow_type(),
                    !c.not_null || c.pk > 0 && k != &Kind::Int,
                )
            })
            .collect();
        let raw_schema = Arc::new(Schema::new(raw_fields.clone()));
        let mut fields = raw_fields;
        for (name, ty) in &config.types {
            match fields.iter_mut().find(|f| f.name() == &name.value) {
                Some(f) => *f = Field::new(&name.value, ty.value.arrow_type(), f.is_nullable()),
                None => {
                    return Err(Error::data(
                        format!("{shown} table {table}"),
                        format!(
                            "[source.types] names column `{}`, which the table does not have",
                            name.value
                        ),
                    ));
                }
            }
        }
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let Some(key_col) = columns.iter().find(|c| c.name == key) else {
            let names: Vec<_> = columns.iter().map(|c| c.name.as_str()).collect();
            return Err(Error::data(
                format!("{shown} table {table}"),
                format!(
                    "key column `{key}` does not exist; columns are: {}",
                    names.join(", ")
                ),
            ));
        };
        let _ = key_col;
        let cols: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
        let select = format!("SELECT {} FROM {}", cols.join(", "), quote_ident(&table));
        Ok(SqliteSource {
            pool,
            io: io.clone(),
            shown,
            table,
            key,
            kinds,
            raw_schema,
            schema,
            select,
        })
    }

    fn where_clause(&self, chunk: &Chunk) -> Result<(String, Vec<KeyValue>)> {
        let ChunkRange::Keys { lo, hi } = &chunk.range else {
            return Err(Error::Internal(format!("{chunk} is not a key-range chunk")));
        };
        let k = quote_ident(&self.key);
        let mut conds = Vec::new();
        let mut binds = Vec::new();
        if let Some(lo) = lo {
            conds.push(format!("{k} > ?"));
            binds.push(lo.clone());
        }
        if let Some(hi) = hi {
            conds.push(format!("{k} <= ?"));
            binds.push(hi.clone());
        }
        // NULL keys fall in no range; planning refuses tables that have them.
        let clause = if conds.is_empty() {
            format!("WHERE {k} IS NOT NULL")
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        Ok((clause, binds))
    }
}

fn bind_key<'q>(
    q: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
    v: &KeyValue,
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
    match v {
        KeyValue::Int(i) => q.bind(*i),
        KeyValue::Text(s) => q.bind(s.clone()),
    }
}

fn key_value(raw: SqliteValueRef<'_>) -> Result<Option<KeyValue>, String> {
    if raw.is_null() {
        return Ok(None);
    }
    match raw.type_info().name() {
        "INTEGER" => <i64 as Decode<Sqlite>>::decode(raw)
            .map(|v| Some(KeyValue::Int(v)))
            .map_err(|e| e.to_string()),
        "TEXT" => <String as Decode<Sqlite>>::decode(raw)
            .map(|v| Some(KeyValue::Text(v)))
            .map_err(|e| e.to_string()),
        other => Err(format!(
            "key values must be INTEGER or TEXT, found a {other} value"
        )),
    }
}

impl Source for SqliteSource {
    fn describe(&self) -> String {
        format!("{} table {}", self.shown, self.table)
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

    fn read_keys(&self, keys: &[Option<String>]) -> Result<Option<(RecordBatch, Vec<usize>)>> {
        let key_index = self
            .raw_schema
            .index_of(&self.key)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let int_key = self.kinds[key_index] == Kind::Int;
        let wanted: std::collections::HashMap<&str, usize> = keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| Some((k.as_deref()?, i)))
            .collect();
        let here = self.describe();
        let mut builder = BatchBuilder::new(&self.kinds, wanted.len().max(1));
        let mut origin = Vec::new();
        let list: Vec<&str> = wanted.keys().copied().collect();
        self.io.block_on(async {
            for part in list.chunks(500) {
                let marks = vec!["?"; part.len()].join(", ");
                let sql = format!(
                    "{} WHERE {} IN ({marks}) ORDER BY {}",
                    self.select,
                    quote_ident(&self.key),
                    quote_ident(&self.key)
                );
                let mut q = sqlx::query(stmt(sql));
                for k in part {
                    q = match (int_key, k.parse::<i64>()) {
                        (true, Ok(i)) => q.bind(i),
                        _ => q.bind(k.to_string()),
                    };
                }
                let rows = q
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| Error::db(&here, e))?;
                for row in &rows {
                    builder
                        .push(row, &self.raw_schema, key_index, &self.key, &here)
                        .map_err(Error::Row)?;
                    let k = key_value(
                        row.try_get_raw(key_index)
                            .map_err(|e| Error::db(&here, e))?,
                    )
                    .map_err(|m| Error::data(&here, m))?
                    .map(|k| match k {
                        KeyValue::Int(i) => i.to_string(),
                        KeyValue::Text(t) => t,
                    })
                    .unwrap_or_default();
                    origin.push(
                        *wanted
                            .get(k.as_str())
                            .ok_or_else(|| Error::Internal(format!("unexpected key {k}")))?,
                    );
                }
            }
            Ok::<_, Error>(())
        })?;
        let batch = builder.finish(&self.raw_schema, &self.schema, &here)?;
        Ok(Some((batch, origin)))
    }

    fn plan(&self, rows_per_chunk: u64) -> Result<Vec<Chunk>> {
        let k = quote_ident(&self.key);
        let t = quote_ident(&self.table);
        let here = self.describe();
        self.io.block_on(async {
            let nulls: i64 = sqlx::query_scalar(stmt(format!("SELECT count(*) FROM {t} WHERE {k} IS NULL")))
                .fetch_one(&self.pool)
                .await
                .map_err(|e| Error::db(&here, e))?;
            if nulls > 0 {
                return Err(Error::data(
                    &here,
                    format!("{nulls} rows have a NULL key `{}`; chunks are key ranges, so they would be skipped. Choose a non-null key column", self.key),
                ));
            }
            // Keyset paging: each step walks the key index `rows_per_chunk` entries from the
            // previous boundary. No OFFSET, so the cost does not grow with the position.
            let first = format!("SELECT max(k), count(*) FROM (SELECT {k} AS k FROM {t} WHERE {k} IS NOT NULL ORDER BY {k} LIMIT ?)");
            let next = format!("SELECT max(k), count(*) FROM (SELECT {k} AS k FROM {t} WHERE {k} > ? ORDER BY {k} LIMIT ?)");
            let mut chunks: Vec<Chunk> = Vec::new();
            let mut lo: Option<KeyValue> = None;
            loop {
                let q = match &lo {
                    None => sqlx::query(stmt(first.clone())),
                    Some(v) => bind_key(sqlx::query(stmt(next.clone())), v),
                };
                let row = q.bind(rows_per_chunk as i64).fetch_one(&self.pool).await.map_err(|e| Error::db(&here, e))?;
                let count: i64 = row.try_get(1).map_err(|e| Error::db(&here, e))?;
                if count == 0 {
                    break;
                }
                let hi = key_value(row.try_get_raw(0).map_err(|e| Error::db(&here, e))?)
                    .map_err(|m| Error::data(&here, format!("key `{}`: {m}", self.key)))?;
                chunks.push(Chunk { id: chunks.len(), range: ChunkRange::Keys { lo: lo.clone(), hi: hi.clone() }, rows: Some(count as u64) });
                lo = hi;
                if (count as u64) < rows_per_chunk {
                    break;
                }
            }
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
        let (clause, binds) = self.where_clause(chunk)?;
        let sql = format!(
            "{} {clause} ORDER BY {}",
            self.select,
            quote_ident(&self.key)
        );
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
        let pool = self.pool.clone();
        let kinds = self.kinds.clone();
        let raw_schema = self.raw_schema.clone();
        let schema = self.schema.clone();
        let here = self.describe();
        let key_index = raw_schema
            .index_of(&self.key)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let key_name = self.key.clone();
        self.io.spawn(async move {
            let mut q = sqlx::query(stmt(sql));
            for b in &binds {
                q = bind_key(q, b);
            }
            let mut rows = q.fetch(&pool);
            let mut builder = BatchBuilder::new(&kinds, batch_rows);
            loop {
                let row = match rows.try_next().await {
                    Ok(Some(row)) => row,
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(Error::db(&here, e))).await;
                        return;
                    }
                };
                if let Err(f) = builder.push(&row, &raw_schema, key_index, &key_name, &here) {
                    let _ = tx.send(Err(Error::Row(f))).await;
                    return;
                }
                if builder.len == batch_rows {
                    let batch = builder.finish(&raw_schema, &schema, &here);
                    if tx.send(batch).await.is_err() {
                        return;
                    }
                }
            }
            if builder.len > 0 {
                let batch = builder.finish(&raw_schema, &schema, &here);
                let _ = tx.send(batch).await;
            }
        });
        Ok(Box::new(ChannelIter(rx)))
    }

    fn locate(&self, chunk: &Chunk, row: u64) -> String {
        format!("{} {chunk} row {}", self.describe(), row + 1)
    }
}

struct ChannelIter(tokio::sync::mpsc::Receiver<Result<RecordBatch>>);

impl Iterator for ChannelIter {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.blocking_recv()
    }
}

/// Column builders for one batch, decoding each value by its storage class.
struct BatchBuilder {
    kinds: Vec<Kind>,
    builders: Vec<Box<dyn ArrayBuilder>>,
    len: usize,
    cap: usize,
}

impl BatchBuilder {
    fn new(kinds: &[Kind], cap: usize) -> Self {
        let builders = kinds.iter().map(|k| Self::builder(*k, cap)).collect();
        BatchBuilder {
            kinds: kinds.to_vec(),
            builders,
            len: 0,
            cap,
        }
    }

    fn builder(kind: Kind, cap: usize) -> Box<dyn ArrayBuilder> {
        match kind {
            Kind::Int => Box::new(Int64Builder::with_capacity(cap)),
            Kind::Real => Box::new(Float64Builder::with_capacity(cap)),
            Kind::Text => Box::new(StringBuilder::with_capacity(cap, cap * 16)),
            Kind::Blob => Box::new(BinaryBuilder::with_capacity(cap, cap * 16)),
            Kind::Bool => Box::new(BooleanBuilder::with_capacity(cap)),
        }
    }

    fn push(
        &mut self,
        row: &SqliteRow,
        schema: &SchemaRef,
        key_index: usize,
        key: &str,
        here: &str,
    ) -> Result<(), RowFailure> {
        for i in 0..self.kinds.len() {
            let fail = |value: Option<String>, reason: String| {
                let key_text = row
                    .try_get_raw(key_index)
                    .ok()
                    .and_then(|v| key_value(v).ok().flatten())
                    .map_or_else(|| "?".to_string(), |k| k.to_string());
                RowFailure {
                    location: format!("{here}, {key}={key_text}"),
                    column: Some(schema.field(i).name().clone()),
                    value,
                    reason,
                }
            };
            let raw = row.try_get_raw(i).map_err(|e| fail(None, e.to_string()))?;
            let b = &mut self.builders[i];
            if raw.is_null() {
                append_null(self.kinds[i], b.as_mut());
                continue;
            }
            let storage = raw.type_info().name().to_string();
            let decode_err =
                |e: Box<dyn std::error::Error + Send + Sync>| fail(None, e.to_string());
            match (self.kinds[i], storage.as_str()) {
                (Kind::Int, "INTEGER") => downcast::<Int64Builder>(b)
                    .append_value(<i64 as Decode<Sqlite>>::decode(raw).map_err(decode_err)?),
                (Kind::Real, "REAL") => downcast::<Float64Builder>(b)
                    .append_value(<f64 as Decode<Sqlite>>::decode(raw).map_err(decode_err)?),
                (Kind::Real, "INTEGER") => {
                    let v = <i64 as Decode<Sqlite>>::decode(raw).map_err(decode_err)?;
                    if v.unsigned_abs() > 1 << 53 {
                        return Err(fail(
                            Some(v.to_string()),
                            "integer too large for a REAL column without losing precision".into(),
                        ));
                    }
                    downcast::<Float64Builder>(b).append_value(v as f64)
                }
                (Kind::Text, "TEXT") => downcast::<StringBuilder>(b)
                    .append_value(<&str as Decode<Sqlite>>::decode(raw).map_err(decode_err)?),
                (Kind::Text, "INTEGER") => downcast::<StringBuilder>(b).append_value(
                    <i64 as Decode<Sqlite>>::decode(raw)
                        .map_err(decode_err)?
                        .to_string(),
                ),
                // Rust prints the shortest text that reads back as the same float: exact.
                (Kind::Text, "REAL") => downcast::<StringBuilder>(b).append_value(
                    <f64 as Decode<Sqlite>>::decode(raw)
                        .map_err(decode_err)?
                        .to_string(),
                ),
                (Kind::Blob, "BLOB" | "TEXT") => downcast::<BinaryBuilder>(b)
                    .append_value(<&[u8] as Decode<Sqlite>>::decode(raw).map_err(decode_err)?),
                (Kind::Bool, "INTEGER") => {
                    match <i64 as Decode<Sqlite>>::decode(raw).map_err(decode_err)? {
                        0 => downcast::<BooleanBuilder>(b).append_value(false),
                        1 => downcast::<BooleanBuilder>(b).append_value(true),
                        v => {
                            return Err(fail(
                                Some(v.to_string()),
                                "a BOOLEAN column holds an integer other than 0 or 1".into(),
                            ));
                        }
                    }
                }
                (kind, storage) => {
                    let shown = <&str as Decode<Sqlite>>::decode(raw)
                        .ok()
                        .map(str::to_string);
                    return Err(fail(
                        shown,
                        format!("a {storage} value in a column read as {}", kind_name(kind)),
                    ));
                }
            }
        }
        self.len += 1;
        Ok(())
    }

    fn finish(
        &mut self,
        raw_schema: &SchemaRef,
        schema: &SchemaRef,
        here: &str,
    ) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(|b| b.finish()).collect();
        self.len = 0;
        self.builders = self
            .kinds
            .iter()
            .map(|k| Self::builder(*k, self.cap))
            .collect();
        let batch =
            RecordBatch::try_new(raw_schema.clone(), columns).map_err(|e| Error::data(here, e))?;
        if raw_schema == schema {
            return Ok(batch);
        }
        let mut out = Vec::with_capacity(batch.num_columns());
        for (i, f) in schema.fields().iter().enumerate() {
            let (cast, failures) =
                cast_lossless(batch.column(i), f.data_type()).map_err(|e| Error::data(here, e))?;
            if let Some(fl) = failures.first() {
                return Err(Error::Row(RowFailure {
                    location: format!("{here}, batch row {}", fl.row + 1),
                    column: Some(f.name().clone()),
                    value: fl.value.clone(),
                    reason: fl.reason.clone(),
                }));
            }
            out.push(cast);
        }
        RecordBatch::try_new(schema.clone(), out).map_err(|e| Error::data(here, e))
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Int => "INTEGER",
        Kind::Real => "REAL",
        Kind::Text => "TEXT",
        Kind::Blob => "BLOB",
        Kind::Bool => "BOOLEAN",
    }
}

fn downcast<T: 'static>(b: &mut Box<dyn ArrayBuilder>) -> &mut T {
    b.as_any_mut()
        .downcast_mut::<T>()
        .expect("builder matches its kind")
}

fn append_null(kind: Kind, b: &mut dyn ArrayBuilder) {
    let any = b.as_any_mut();
    match kind {
        Kind::Int => any
            .downcast_mut::<Int64Builder>()
            .expect("kind")
            .append_null(),
        Kind::Real => any
            .downcast_mut::<Float64Builder>()
            .expect("kind")
            .append_null(),
        Kind::Text => any
            .downcast_mut::<StringBuilder>()
            .expect("kind")
            .append_null(),
        Kind::Blob => any
            .downcast_mut::<BinaryBuilder>()
            .expect("kind")
            .append_null(),
        Kind::Bool => any
            .downcast_mut::<BooleanBuilder>()
            .expect("kind")
            .append_null(),
    }
}
