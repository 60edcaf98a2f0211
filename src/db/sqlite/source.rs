//! SQLite tables, split into key ranges with keyset queries.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use sqlx::sqlite::SqlitePool;

use crate::chunk::key::{key_value_text, null_key_error, parse_keys, show_key};
use crate::chunk::{Chunk, ChunkRange, KeyValue};
use crate::config::{SourceConfig, show_path};
use crate::db::sqlite::decode::{BatchBuilder, KeyCols, Kind, RawConn};
use crate::db::sqlite::errors::error as db_error;
use crate::db::sqlite::{Access, connect, table_columns, table_names};
use crate::runtime::IoRuntime;
use crate::source::{BatchIter, SetAside, Source, Unreadable, key_positions, no_such_table};
use crate::sql::keyset::{KeyChunks, KeySql, marks};
use crate::sql::{quote_ident, stmt};
use crate::types::cast::{cast_lossless, value_text};
use crate::types::quote_value;
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
    /// The columns `[source.types]` declares: read as that type whatever the table
    /// declares or stores, by SQLite's conversions where they lose nothing.
    convert: Vec<bool>,
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
            return Err(no_such_table(&shown, None, &table, &names));
        };
        let declared: Vec<Kind> = columns.iter().map(|c| Kind::from_decl(&c.decl)).collect();
        // SQLite stores any class in any column (`.import` leaves 'NA' in an INTEGER
        // column): a column `[source.types]` names is decoded as that type, so such values
        // convert where they can and are set aside with their reason where they cannot.
        let mut kinds = declared.clone();
        let mut convert = vec![false; columns.len()];
        for (name, ty) in &config.types {
            if let Some(i) = columns.iter().position(|c| c.name == name.value) {
                kinds[i] = Kind::for_type(ty.value);
                convert[i] = true;
            }
        }
        let raw_fields: Vec<Field> = columns
            .iter()
            .zip(&kinds)
            .zip(&declared)
            .map(|((c, k), d)| {
                Field::new(
                    &c.name,
                    k.arrow_type(),
                    !c.not_null || c.pk > 0 && d != &Kind::Int,
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
            .map(|&i| declared[i] == Kind::Int)
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
            convert,
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
        let mut builder = BatchBuilder::converting(&self.kinds, &self.convert, wanted.len().max(1));
        let mut origin = Vec::new();
        self.io.block_on(async {
            let mut conn = self.pool.acquire().await.map_err(|e| db_error(&here, e))?;
            let mut lock = conn.lock_handle().await.map_err(|e| db_error(&here, e))?;
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
                    .map_err(|e| db_error(&here, e.into()))?;
                while rows.step().map_err(|e| db_error(&here, e.into()))? {
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
            let mut conn = self.pool.acquire().await.map_err(|e| db_error(&here, e))?;
            let nulls: i64 =
                sqlx::query_scalar(stmt(format!("SELECT count(*) FROM {t} WHERE {any_null}")))
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(|e| db_error(&here, e))?;
            if nulls > 0 {
                return Err(null_key_error(&here, nulls, &self.key));
            }
            let mut lock = conn.lock_handle().await.map_err(|e| db_error(&here, e))?;
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
                    .map_err(|e| db_error(&here, e.into()))?;
                let hi = if rows.step().map_err(|e| db_error(&here, e.into()))? {
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
                        .map_err(|e| db_error(&here, e.into()))?;
                    rows.step().map_err(|e| db_error(&here, e.into()))?;
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
        let convert = self.convert.clone();
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
                let mut conn = pool.acquire().await.map_err(|e| db_error(&here, e))?;
                let mut lock = conn.lock_handle().await.map_err(|e| db_error(&here, e))?;
                let raw = RawConn::new(&mut lock);
                let mut rows = raw
                    .prepare(&sql, &binds)
                    .map_err(|e| db_error(&here, e.into()))?;
                let mut builder = BatchBuilder::converting(&kinds, &convert, batch_rows);
                let finish = |builder: &mut BatchBuilder| {
                    let raw = builder.finish(&raw_schema, &raw_schema, &here)?;
                    let (batch, bad) = cast_declared(raw, &schema, &key_cols, &here)?;
                    for u in bad {
                        set_aside.push(chunk_id, u);
                    }
                    Ok::<_, Error>(batch)
                };
                while rows.step().map_err(|e| db_error(&here, e.into()))? {
                    if let Err(f) = builder.push(&rows, &raw_schema, &key_cols, &here) {
                        let declared = f
                            .column
                            .as_ref()
                            .and_then(|c| names.iter().position(|n| *n == c.as_str()))
                            .is_some_and(|i| convert[i]);
                        let u = Unreadable {
                            location: f.location,
                            line: 0,
                            key: key_cols.value(&rows).map(|k| key_value_text(&k)),
                            reason: match (&f.value, declared, &f.column) {
                                (Some(v), true, _) => {
                                    format!("value {}: {}", quote_value(v), f.reason)
                                }
                                // SQLite keeps any class in any column; say how to read it.
                                (_, false, Some(c)) if f.reason.contains("UTF-8") => format!(
                                    "{}; [source.types] {c} = \"bytea\" reads the column's bytes",
                                    f.reason
                                ),
                                (_, false, Some(c)) => format!(
                                    "{}; [source.types] {c} = \"text\" (or another type) reads the column as that type",
                                    f.reason
                                ),
                                _ => f.reason,
                            },
                            column: f.column,
                            raw: rows.row_json(&names),
                            raw_bytes: None,
                        };
                        set_aside.push(chunk_id, u);
                        continue;
                    }
                    if builder.len == batch_rows && tx.send(finish(&mut builder)).is_err() {
                        // The chunk worker stopped reading.
                        return Ok(());
                    }
                }
                if builder.len > 0 {
                    let _ = tx.send(finish(&mut builder));
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

/// `raw` (rows as decoded) cast into the declared `schema`, without loss: a row whose
/// value cannot become its declared type (a `[source.types]` column: text that is no
/// date, an integer beyond `integer`'s range) is left out and returned, with the value
/// and the reason, to be quarantined with its stored values, so that the rest of the
/// chunk is read.
fn cast_declared(
    raw: RecordBatch,
    schema: &SchemaRef,
    key: &KeyCols,
    here: &str,
) -> Result<(RecordBatch, Vec<Unreadable>)> {
    if raw.schema_ref() == schema {
        return Ok((raw, Vec::new()));
    }
    // The first failure of each row, by row.
    let mut failed: std::collections::BTreeMap<usize, (String, Option<String>, String)> =
        std::collections::BTreeMap::new();
    for (i, f) in schema.fields().iter().enumerate() {
        if raw.column(i).data_type() == f.data_type() {
            continue;
        }
        let (_, failures) =
            cast_lossless(raw.column(i), f.data_type()).map_err(|e| Error::data(here, e))?;
        for fl in failures {
            failed
                .entry(fl.row)
                .or_insert_with(|| (f.name().clone(), fl.value, fl.reason));
        }
    }
    let mut bad = Vec::with_capacity(failed.len());
    for (&row, (column, value, reason)) in &failed {
        let parts: Option<Vec<KeyValue>> = key
            .index
            .iter()
            .map(|&i| {
                let c = raw.column(i);
                if c.is_null(row) {
                    return None;
                }
                Some(match c.data_type() {
                    arrow::datatypes::DataType::Int64 => {
                        KeyValue::Int(c.as_primitive::<arrow::datatypes::Int64Type>().value(row))
                    }
                    _ => KeyValue::Text(value_text(c.as_ref(), row)?),
                })
            })
            .collect();
        let label = match &parts {
            Some(p) => key
                .names
                .iter()
                .zip(p)
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
            None => "key unknown".into(),
        };
        bad.push(Unreadable {
            location: format!("{here}, {label}"),
            line: 0,
            key: parts.map(|p| key_value_text(&KeyValue::from_parts(p))),
            column: Some(column.clone()),
            reason: match value {
                Some(v) => format!("value {}: {reason}", quote_value(v)),
                None => reason.clone(),
            },
            raw: crate::check::quarantine::row_json(&raw, row).to_string(),
            raw_bytes: None,
        });
    }
    let raw = if failed.is_empty() {
        raw
    } else {
        let keep = arrow::array::BooleanArray::from(
            (0..raw.num_rows())
                .map(|r| !failed.contains_key(&r))
                .collect::<Vec<_>>(),
        );
        arrow::compute::filter_record_batch(&raw, &keep)
            .map_err(|e| Error::Internal(e.to_string()))?
    };
    let batch = crate::types::cast::cast_batch(raw, schema, here, |row| {
        format!("{here}, batch row {}", row + 1)
    })?;
    Ok((batch, bad))
}
