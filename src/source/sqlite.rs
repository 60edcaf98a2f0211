//! SQLite tables, split into key ranges with keyset queries.

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use sqlx::Row;
use sqlx::sqlite::SqlitePool;

use super::{BatchIter, SetAside, Source, Unreadable};
use crate::config::{SourceConfig, show_path};
use crate::db::decode::{BatchBuilder, Kind, RawConn, bind_key, key_value};
use crate::db::sqlite::{Access, connect, table_columns, table_names};
use crate::db::{IoRuntime, quote_ident, stmt};
use crate::plan::{Chunk, ChunkRange, KeyValue};
use crate::{Error, Result};

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
    /// Rows whose stored values do not fit their columns, by chunk id, set aside while
    /// the chunk was read.
    unreadable: SetAside,
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
            unreadable: SetAside::default(),
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
            let mut conn = self.pool.acquire().await.map_err(|e| Error::db(&here, e))?;
            let mut lock = conn.lock_handle().await.map_err(|e| Error::db(&here, e))?;
            let raw = RawConn::new(&mut lock);
            for part in list.chunks(500) {
                let marks = vec!["?"; part.len()].join(", ");
                let sql = format!(
                    "{} WHERE {} IN ({marks}) ORDER BY {}",
                    self.select,
                    quote_ident(&self.key),
                    quote_ident(&self.key)
                );
                let binds: Vec<KeyValue> = part
                    .iter()
                    .map(|k| match (int_key, k.parse::<i64>()) {
                        (true, Ok(i)) => KeyValue::Int(i),
                        _ => KeyValue::Text(k.to_string()),
                    })
                    .collect();
                let mut rows = raw
                    .prepare(&sql, &binds)
                    .map_err(|e| Error::db(&here, e.into()))?;
                while rows.step().map_err(|e| Error::db(&here, e.into()))? {
                    builder
                        .push(&rows, &self.raw_schema, key_index, &self.key, &here)
                        .map_err(Error::Row)?;
                    let k = match rows.cell(key_index).key() {
                        Some(KeyValue::Int(i)) => i.to_string(),
                        Some(KeyValue::Text(t)) => t,
                        None => String::new(),
                    };
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
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<RecordBatch>>(2);
        let pool = self.pool.clone();
        let io = self.io.clone();
        let kinds = self.kinds.clone();
        let raw_schema = self.raw_schema.clone();
        let schema = self.schema.clone();
        let here = self.describe();
        let key_index = raw_schema
            .index_of(&self.key)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let key_name = self.key.clone();
        let names: Vec<String> = raw_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let set_aside = self.unreadable.clone();
        let chunk_id = chunk.id;
        // A redone chunk finds its unreadable rows again.
        set_aside.clear(chunk_id);
        // Stepping the statement blocks, so it runs on a thread of its own rather than on
        // the I/O runtime; the bounded channel keeps at most two batches ahead of the
        // chunk worker.
        let read = move |tx: &std::sync::mpsc::SyncSender<Result<RecordBatch>>| -> Result<()> {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            io.block_on(async {
                let mut conn = pool.acquire().await.map_err(|e| Error::db(&here, e))?;
                let mut lock = conn.lock_handle().await.map_err(|e| Error::db(&here, e))?;
                let raw = RawConn::new(&mut lock);
                let mut rows = raw
                    .prepare(&sql, &binds)
                    .map_err(|e| Error::db(&here, e.into()))?;
                let mut builder = BatchBuilder::new(&kinds, batch_rows);
                while rows.step().map_err(|e| Error::db(&here, e.into()))? {
                    if let Err(f) = builder.push(&rows, &raw_schema, key_index, &key_name, &here) {
                        let u = Unreadable {
                            location: f.location,
                            line: 0,
                            key: rows.cell(key_index).key().map(|k| match k {
                                KeyValue::Int(i) => i.to_string(),
                                KeyValue::Text(t) => t,
                            }),
                            column: f.column,
                            reason: f.reason,
                            raw: rows.row_json(&names),
                        };
                        set_aside.push(chunk_id, u);
                        continue;
                    }
                    if builder.len == batch_rows
                        && tx
                            .send(builder.finish(&raw_schema, &schema, &here))
                            .is_err()
                    {
                        // The chunk worker stopped reading.
                        return Ok(());
                    }
                }
                if builder.len > 0 {
                    let _ = tx.send(builder.finish(&raw_schema, &schema, &here));
                }
                Ok(())
            })
        };
        std::thread::Builder::new()
            .name("rowshift-sqlite-read".into())
            .spawn(move || {
                if let Err(e) = read(&tx) {
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start a reader thread: {e}")))?;
        Ok(Box::new(rx.into_iter()))
    }

    fn unreadable(&self, chunk: &Chunk) -> Vec<Unreadable> {
        self.unreadable.get(chunk.id)
    }

    fn locate(&self, chunk: &Chunk, row: u64) -> String {
        format!("{} {chunk} row {}", self.describe(), row + 1)
    }
}
