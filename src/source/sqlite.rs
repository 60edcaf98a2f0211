//! SQLite tables, split into key ranges with keyset queries.

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use sqlx::sqlite::SqlitePool;

use super::{
    BatchIter, SetAside, Source, Unreadable, key_positions, key_value_text, null_key_error,
    parse_keys, show_key,
};
use crate::config::{SourceConfig, show_path};
use crate::db::decode::{BatchBuilder, KeyCols, Kind, RawConn};
use crate::db::keyset::{KeyChunks, KeySql, marks};
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
    key: Vec<String>,
    /// The key columns' positions and names, to name rows.
    key_cols: KeyCols,
    /// Whether each key column is an integer (else its values are looked up as text).
    key_int: Vec<bool>,
    keyset: KeySql,
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
        if key.is_empty() {
            return Err(Error::Internal("a SQLite source without a key".into()));
        }
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
        let key_cols = KeyCols {
            index: key_positions(
                &key,
                columns.iter().map(|c| c.name.as_str()),
                &format!("{shown} table {table}"),
            )?,
            names: key.clone(),
        };
        let key_int: Vec<bool> = key_cols
            .index
            .iter()
            .map(|&i| kinds[i] == Kind::Int)
            .collect();
        // Text keys compare in byte order (BINARY), like every other source and target,
        // whatever collation (NOCASE, say) the column declares.
        let keyset = KeySql::new(
            key.iter().map(|k| quote_ident(k)).collect(),
            key.iter()
                .zip(&key_int)
                .map(|(k, int)| match *int {
                    true => quote_ident(k),
                    false => format!("{} COLLATE BINARY", quote_ident(k)),
                })
                .collect(),
        );
        let cols: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
        let select = format!("SELECT {} FROM {}", cols.join(", "), quote_ident(&table));
        Ok(SqliteSource {
            pool,
            io: io.clone(),
            shown,
            table,
            key,
            key_cols,
            key_int,
            keyset,
            kinds,
            raw_schema,
            schema,
            select,
            unreadable: SetAside::default(),
        })
    }

    /// `WHERE` for a chunk, with its bounds as parameters (in order). NULL keys fall in
    /// no range; planning refuses tables that have them.
    fn where_clause(&self, chunk: &Chunk) -> Result<(String, Vec<KeyValue>)> {
        let ChunkRange::Keys { lo, hi } = &chunk.range else {
            return Err(Error::Internal(format!("{chunk} is not a key-range chunk")));
        };
        let mut binds = Vec::new();
        let clause = self
            .keyset
            .range(lo.as_ref(), hi.as_ref(), &mut marks(&mut binds))?;
        Ok((format!("WHERE {clause}"), binds))
    }
}

impl Source for SqliteSource {
    fn describe(&self) -> String {
        format!("{} table {}", self.shown, self.table)
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

    fn read_keys(&self, keys: &[Option<String>]) -> Result<Option<(RecordBatch, Vec<usize>)>> {
        let here = self.describe();
        let (wanted, list) = parse_keys(keys, &self.key, &self.key_int, &here)?;
        let mut builder = BatchBuilder::new(&self.kinds, wanted.len().max(1));
        let mut origin = Vec::new();
        self.io.block_on(async {
            let mut conn = self.pool.acquire().await.map_err(|e| Error::db(&here, e))?;
            let mut lock = conn.lock_handle().await.map_err(|e| Error::db(&here, e))?;
            let raw = RawConn::new(&mut lock);
            // At most 500 parameters per statement, whatever the key's width.
            for part in list.chunks((500 / self.key.len()).max(1)) {
                let mut binds = Vec::new();
                let sql = format!(
                    "{} WHERE {} ORDER BY {}",
                    self.select,
                    self.keyset.one_of(part, &mut marks(&mut binds))?,
                    self.keyset.order_by()
                );
                let mut rows = raw
                    .prepare(&sql, &binds)
                    .map_err(|e| Error::db(&here, e.into()))?;
                while rows.step().map_err(|e| Error::db(&here, e.into()))? {
                    builder
                        .push(&rows, &self.raw_schema, &self.key_cols, &here)
                        .map_err(Error::Row)?;
                    let k = self
                        .key_cols
                        .value(&rows)
                        .map(|k| key_value_text(&k))
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
        let t = quote_ident(&self.table);
        let here = self.describe();
        let any_null = self.keyset.any_null();
        let selected: Vec<String> = self.key.iter().map(|k| quote_ident(k)).collect();
        self.io.block_on(async {
            let mut conn = self.pool.acquire().await.map_err(|e| Error::db(&here, e))?;
            let nulls: i64 =
                sqlx::query_scalar(stmt(format!("SELECT count(*) FROM {t} WHERE {any_null}")))
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(|e| Error::db(&here, e))?;
            if nulls > 0 {
                return Err(null_key_error(&here, nulls, &self.key));
            }
            let mut lock = conn.lock_handle().await.map_err(|e| Error::db(&here, e))?;
            let raw = RawConn::new(&mut lock);
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
                let mut rows = raw
                    .prepare(&sql, &binds)
                    .map_err(|e| Error::db(&here, e.into()))?;
                let hi = if rows.step().map_err(|e| Error::db(&here, e.into()))? {
                    let all = KeyCols {
                        index: (0..self.key.len()).collect(),
                        names: self.key.clone(),
                    };
                    Some(all.value(&rows).ok_or_else(|| {
                        Error::data(
                            &here,
                            format!(
                                "key {}: chunk keys must be INTEGER or TEXT values, found {}",
                                show_key(&self.key),
                                all.label(&rows)
                            ),
                        )
                    })?)
                } else {
                    None
                };
                drop(rows);
                let Some(hi) = hi else {
                    // Fewer than a chunk's rows are left: count them for the last chunk.
                    let mut binds = Vec::new();
                    let sql = format!(
                        "SELECT count(*) FROM {t} WHERE {}",
                        self.keyset.range(plan.lo(), None, &mut marks(&mut binds))?
                    );
                    let mut rows = raw
                        .prepare(&sql, &binds)
                        .map_err(|e| Error::db(&here, e.into()))?;
                    rows.step().map_err(|e| Error::db(&here, e.into()))?;
                    let count = match rows.cell(0).key() {
                        Some(KeyValue::Int(n)) => n as u64,
                        _ => 0,
                    };
                    break count as u64;
                };
                plan.boundary(hi);
            };
            Ok(plan.finish(tail))
        })
    }

    fn read(&self, chunk: &Chunk, batch_rows: usize) -> Result<BatchIter> {
        let (clause, binds) = self.where_clause(chunk)?;
        let sql = format!(
            "{} {clause} ORDER BY {}",
            self.select,
            self.keyset.order_by()
        );
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<RecordBatch>>(2);
        let pool = self.pool.clone();
        let io = self.io.clone();
        let kinds = self.kinds.clone();
        let raw_schema = self.raw_schema.clone();
        let schema = self.schema.clone();
        let here = self.describe();
        let key_cols = self.key_cols.clone();
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
                    if let Err(f) = builder.push(&rows, &raw_schema, &key_cols, &here) {
                        let u = Unreadable {
                            location: f.location,
                            line: 0,
                            key: key_cols.value(&rows).map(|k| key_value_text(&k)),
                            column: f.column,
                            reason: f.reason,
                            raw: rows.row_json(&names),
                            raw_bytes: None,
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
