//! The validated pipeline and its chunk plan.
//!
//! [`Plan::build`] turns a parsed [`Pipeline`] into everything a run needs: an open source
//! with its schema, and compiled transforms. Problems that need the source to find (an
//! expression naming a missing column, a type that cannot be cast) are reported here, with
//! the line of the pipeline file, before any row moves.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;

use crate::check::readback::Selection;
use crate::check::rules::Checks;
use crate::config::{Location, Pipeline, Verify};
use crate::db::IoRuntime;
use crate::sink::{self, Sink};
use crate::source::{self, Source};
use crate::transform::Transform;
use crate::{Error, Result};

/// A value of the chunking key, as stored in chunk boundaries.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum KeyValue {
    /// An integer key.
    Int(i64),
    /// A text key.
    Text(String),
    /// A composite key's value, one part per key column, compared part by part (SQL's
    /// row-value comparison). Parts are never themselves tuples.
    Tuple(Vec<KeyValue>),
}

impl KeyValue {
    /// The parts: a tuple's, or the value itself for a one-column key.
    pub fn parts(&self) -> &[KeyValue] {
        match self {
            KeyValue::Tuple(parts) => parts,
            one => std::slice::from_ref(one),
        }
    }

    /// A key value from its parts: the part itself for a one-column key.
    pub fn from_parts(mut parts: Vec<KeyValue>) -> KeyValue {
        if parts.len() == 1 {
            parts.remove(0)
        } else {
            KeyValue::Tuple(parts)
        }
    }
}

impl fmt::Display for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyValue::Int(v) => write!(f, "{v}"),
            KeyValue::Text(v) => write!(f, "'{}'", v.replace('\'', "''")),
            KeyValue::Tuple(parts) => {
                f.write_str("(")?;
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{p}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// What part of the source a chunk covers. Fixed at plan time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChunkRange {
    /// Rows with `lo < key <= hi` (an open end is unbounded).
    Keys {
        /// Exclusive lower bound; `None` for the first chunk.
        lo: Option<KeyValue>,
        /// Inclusive upper bound; `None` for the last chunk, so rows added after planning
        /// are not lost.
        hi: Option<KeyValue>,
    },
    /// Whole records between two byte offsets of a CSV file.
    Bytes {
        /// Index into the source's file list.
        file: usize,
        /// First byte of the first record.
        start: u64,
        /// One past the last byte of the last record.
        end: u64,
        /// 1-based line number of the first record.
        first_line: u64,
    },
    /// Consecutive row groups of a Parquet file.
    RowGroups {
        /// Index into the source's file list.
        file: usize,
        /// First row group.
        first: usize,
        /// One past the last row group.
        end: usize,
        /// Row number (0-based, within the file) of the chunk's first row.
        first_row: u64,
    },
}

/// One unit of work: read, transform, check and commit as a whole.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Chunk {
    /// Position in the plan, from 0.
    pub id: usize,
    /// What it covers.
    pub range: ChunkRange,
    /// Rows in the chunk when known exactly at plan time (files, key ranges).
    pub rows: Option<u64>,
}

impl fmt::Display for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.range {
            ChunkRange::Keys { lo, hi } => match (lo, hi) {
                (None, None) => write!(f, "chunk {} (all keys)", self.id),
                (Some(lo), None) => write!(f, "chunk {} (key > {lo})", self.id),
                (None, Some(hi)) => write!(f, "chunk {} (key <= {hi})", self.id),
                (Some(lo), Some(hi)) => write!(f, "chunk {} ({lo} < key <= {hi})", self.id),
            },
            ChunkRange::Bytes { start, end, .. } => {
                write!(f, "chunk {} (bytes {start}..{end})", self.id)
            }
            ChunkRange::RowGroups { first, end, .. } => {
                write!(f, "chunk {} (row groups {first}..{end})", self.id)
            }
        }
    }
}

/// The target columns that hold the source key (see [`Plan::target_key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetKey {
    /// One target column per source key column, in key order.
    pub columns: Vec<String>,
    /// Whether every one holds its key column's value unchanged, so a chunk's key range
    /// finds its rows in the target.
    pub unchanged: bool,
}

/// A validated pipeline, ready to run.
pub struct Plan {
    /// The pipeline file's content.
    pub pipeline: Pipeline,
    /// The open source.
    pub source: Arc<dyn Source>,
    /// The compiled transform.
    pub transform: Arc<Transform>,
    /// The compiled `[[checks]]`.
    pub checks: Arc<Checks>,
    /// The runtime database I/O runs on.
    pub io: IoRuntime,
}

impl Plan {
    /// Opens the source and compiles every expression, reporting all problems at once.
    pub fn build(pipeline: Pipeline) -> Result<Plan> {
        let io = IoRuntime::new()?;
        let source = source::open(&pipeline.source, &io).map_err(|e| at_url(&pipeline, e, true))?;
        Plan::with_source(pipeline, source, io)
    }

    /// A plan that reads `source` instead of the pipeline's own (a dry run's sample file).
    pub fn with_source(pipeline: Pipeline, source: Arc<dyn Source>, io: IoRuntime) -> Result<Plan> {
        let transform = Transform::compile(&pipeline, source.schema())?;
        let checks = Checks::compile(&pipeline, &transform.output_schema(), &source.schema(), &io)?;
        let database_target = !matches!(pipeline.target.location, Location::Files { .. });
        if pipeline.verify == Verify::ReadBack && database_target {
            let missing = match source.key() {
                [] => Some("[source] names no `key`".to_string()),
                key => key
                    .iter()
                    .find(|k| target_key(&pipeline, k).is_none())
                    .map(|k| format!("no target column holds the source key `{k}`")),
            };
            let position = source.position();
            if missing.is_some() && !position.is_empty() && source.key() == position {
                return Err(position_unmapped(&pipeline, source.as_ref()));
            }
            if let Some(why) = missing {
                let mut d = pipeline.diagnostics();
                let span = pipeline
                    .target
                    .table
                    .as_ref()
                    .and_then(|t| t.span.clone())
                    .or(pipeline.target.url.span.clone());
                d.push(
                    crate::config::Diagnostic::at(
                        span,
                        format!("read-back verification cannot find a chunk's rows in the target table: {why}"),
                    )
                    .with_help("add a target column whose expr is the source key (e.g. id = { type = \"bigint\", expr = \"id\" }), or set verify = \"off\" at the top of the file"),
                );
                return Err(Error::Config(d));
            }
        }
        Ok(Plan {
            pipeline,
            source,
            transform: Arc::new(transform),
            checks: Arc::new(checks),
            io,
        })
    }

    /// Opens the target. Touches nothing until [`Sink::prepare`] is called.
    pub fn open_sink(&self) -> Result<Arc<dyn Sink>> {
        sink::open(
            &self.pipeline.target,
            self.transform.output_schema(),
            self.target_key(),
            &self.io,
        )
        .map_err(|e| at_url(&self.pipeline, e, false))
    }

    /// Compares the declared target columns with an existing target table's (SQLite,
    /// PostgreSQL, MySQL), as `run` would find them, without changing anything: every
    /// declared column the table lacks, and every one whose type the table's column
    /// would not store as sent, is reported at its line in the pipeline file. A table
    /// that `if_exists = "replace"` drops, a missing table or a file target is fine.
    /// For `validate`.
    pub fn check_target_table(&self) -> Result<()> {
        self.compare_target_table()
            .map_err(|e| at_url(&self.pipeline, e, false))
    }

    fn compare_target_table(&self) -> Result<()> {
        use crate::config::{Diagnostic, IfExists};
        use crate::types::ColumnType;
        let target = &self.pipeline.target;
        if target.if_exists == IfExists::Replace {
            return Ok(());
        }
        let Some(table) = target.table.as_ref().map(|t| t.value.as_str()) else {
            return Ok(());
        };
        // (name, declared type as the catalog shows it, why a declared type would not fit)
        type Fit = Box<dyn Fn(ColumnType) -> Option<String>>;
        let existing: Option<Vec<(String, String, Fit)>> = match &target.location {
            Location::Files { .. } => None,
            Location::Sqlite { path } => {
                if !path.exists() {
                    return Ok(());
                }
                let shown = format!("sqlite://{}", crate::config::show_path(path));
                let pool = crate::db::sqlite::connect(
                    &self.io,
                    path,
                    crate::db::sqlite::Access::Inspect,
                    1,
                )?;
                let cols = self
                    .io
                    .block_on(crate::db::sqlite::table_columns(&pool, table, &shown));
                self.io.block_on(pool.close());
                cols?.map(|cols| {
                    cols.into_iter()
                        .map(|c| {
                            let affinity = crate::db::sqlite::Affinity::of(&c.decl);
                            let fit: Fit = Box::new(move |ty| {
                                affinity
                                    .converts(ty)
                                    .map(|why| format!("its {} affinity {why}", affinity.name()))
                            });
                            let decl = if c.decl.is_empty() {
                                "untyped".into()
                            } else {
                                c.decl
                            };
                            (c.name, decl, fit)
                        })
                        .collect()
                })
            }
            Location::Postgres { url, schema } => {
                let pool = crate::db::postgres::connect(&self.io, url, &target.db)?;
                let cols = self.io.block_on(crate::db::postgres::table_columns(
                    &pool,
                    schema,
                    table,
                    &url.shown(),
                ));
                self.io.block_on(pool.close());
                cols?.map(|cols| {
                    cols.into_iter()
                        .map(|c| {
                            let (family, is_enum) = (pg_family(&c.type_name), c.is_enum);
                            let fit: Fit = Box::new(move |ty| {
                                let want = pg_family_of(ty);
                                let text_into_enum = is_enum && want == "text";
                                (family.is_some_and(|f| f != want) && !text_into_enum).then(|| {
                                    format!(
                                        "it stores {} values, not {ty}",
                                        family.unwrap_or("other")
                                    )
                                })
                            });
                            (c.name, c.shown_type, fit)
                        })
                        .collect()
                })
            }
            Location::Mysql { url, schema } => {
                let pool = crate::db::mysql::connect(&self.io, url, &target.db)?;
                let cols = self.io.block_on(crate::db::mysql::table_columns(
                    &pool,
                    schema,
                    table,
                    &url.shown(),
                ));
                self.io.block_on(pool.close());
                cols?.map(|cols| {
                    cols.into_iter()
                        .map(|c| {
                            let data_type = c.data_type.clone();
                            let fit: Fit = Box::new(move |ty| {
                                (!crate::db::mysql::same_family(ty, &data_type)).then(|| {
                                    format!("the server would convert a {ty} value into it")
                                })
                            });
                            (c.name, c.column_type, fit)
                        })
                        .collect()
                })
            }
        };
        let Some(existing) = existing else {
            return Ok(());
        };
        let names: Vec<&str> = existing.iter().map(|(n, ..)| n.as_str()).collect();
        let mut d = self.pipeline.diagnostics();
        for c in &target.columns {
            match existing.iter().find(|(n, ..)| n == &c.name.value) {
                None => d.push(
                    Diagnostic::at(
                        c.name.span.clone(),
                        format!(
                            "target column `{}` is not in the existing table {table}",
                            c.name.value
                        ),
                    )
                    .with_help(format!(
                        "the table's columns are: {}; add the column to the table, rename it here, or set if_exists = \"replace\"",
                        names.join(", ")
                    )),
                ),
                Some((_, decl, fit)) => {
                    if let Some(why) = fit(c.ty.value) {
                        d.push(Diagnostic::at(
                            c.ty.span.clone(),
                            format!(
                                "target column `{}` is {} but the existing table {table} declares it {decl}: {why}",
                                c.name.value, c.ty.value
                            ),
                        ));
                    }
                }
            }
        }
        d.into_result()
    }

    /// The target columns that hold the source key, and whether they hold it unchanged
    /// (each one's expression is the key column itself) rather than converted
    /// (`CAST(key AS ...)`). Read-back and `verify` find a chunk's rows in a table by
    /// them. `None` when a key column has no target column.
    pub fn target_key(&self) -> Option<TargetKey> {
        let key = self.source.key();
        if key.is_empty() {
            return None;
        }
        let mut out = TargetKey {
            columns: Vec::with_capacity(key.len()),
            unchanged: true,
        };
        for k in key {
            let (column, unchanged) = target_key(&self.pipeline, k)?;
            // An integer key cast to another integer type keeps its value (a value the
            // type cannot hold is rejected, never wrapped), so a chunk's key range still
            // finds exactly its rows: no need to look them up key by key.
            let integer =
                |t: Option<&arrow::datatypes::DataType>| t.is_some_and(|t| t.is_integer());
            let source_type = self
                .source
                .schema()
                .field_with_name(k)
                .ok()
                .map(|f| f.data_type().clone());
            let target_type = self
                .transform
                .output_schema()
                .field_with_name(column)
                .ok()
                .map(|f| f.data_type().clone());
            out.unchanged &=
                unchanged || integer(source_type.as_ref()) && integer(target_type.as_ref());
            out.columns.push(column.to_string());
        }
        Some(out)
    }

    /// The source columns a run must read, by position in the source schema: those an
    /// expression or the filter reads, and the key. `None` when that is every column.
    /// The others never reach the target; a rejected row is read again whole for the
    /// quarantine (see [`Source::read_used`]).
    pub fn used_columns(&self) -> Option<Vec<bool>> {
        let schema = self.source.schema();
        let mut used = vec![false; schema.fields().len()];
        for i in self.transform.input_columns() {
            used[i] = true;
        }
        for k in self.source.key() {
            if let Ok(i) = schema.index_of(k) {
                used[i] = true;
            }
        }
        used.contains(&false).then_some(used)
    }

    /// Which target rows are `chunk`'s, given the rows it wrote (`sent`).
    pub fn selection(&self, chunk: &Chunk, sent: &[RecordBatch]) -> Result<Selection> {
        if matches!(self.pipeline.target.location, Location::Files { .. }) {
            return Ok(Selection::Files);
        }
        let Some(key) = self.target_key() else {
            return Err(Error::Unsupported(format!(
                "cannot find chunk {}'s rows in the target: no target column holds the source key",
                chunk.id
            )));
        };
        if let (true, ChunkRange::Keys { lo, hi }) = (key.unchanged, &chunk.range) {
            return Ok(Selection::Range {
                columns: key.columns,
                lo: lo.clone(),
                hi: hi.clone(),
            });
        }
        Selection::of_keys(&key.columns, sent)
    }

    /// The folder run state lives in: `.rowshift/` beside the pipeline file.
    pub fn state_dir(&self) -> PathBuf {
        self.pipeline.base_dir.join(".rowshift")
    }
}

/// The target column whose expression is the source key `key`, plainly or cast; a plain
/// one is preferred.
fn target_key<'p>(p: &'p Pipeline, key: &str) -> Option<(&'p str, bool)> {
    let unquoted = |e: &str| {
        let e = e.trim();
        // A quoted identifier doubles the quotes it holds: `"a""b"` names a"b.
        e == key
            || e.strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .map(|r| r.replace("\"\"", "\""))
                .as_deref()
                == Some(key)
    };
    let cast = |e: &str| {
        let e = e.trim();
        let lower = e.to_ascii_lowercase();
        let inner = lower
            .strip_prefix("try_cast")
            .or_else(|| lower.strip_prefix("cast"))
            .map(str::trim_start)
            .and_then(|r| r.strip_prefix('('))
            .and_then(|r| r.strip_suffix(')'));
        inner.is_some_and(|inner| {
            let start = e.len() - inner.len() - 1;
            let original = &e[start..e.len() - 1];
            original
                .to_ascii_lowercase()
                .rfind(" as ")
                .is_some_and(|at| unquoted(&original[..at]))
        })
    };
    let cols = &p.target.columns;
    cols.iter()
        .find(|c| unquoted(&c.expr.value))
        .map(|c| (c.name.value.as_str(), true))
        .or_else(|| {
            cols.iter()
                .find(|c| cast(&c.expr.value))
                .map(|c| (c.name.value.as_str(), false))
        })
}

/// The error for a file source without a `key` whose rows' position no target column
/// holds: it names the position columns the target lacks, with a ready-to-paste
/// `[target.columns]` line for each.
fn position_unmapped(p: &Pipeline, source: &dyn Source) -> Error {
    let schema = source.schema();
    let taken = |name: &str| p.target.columns.iter().any(|c| c.name.value == name);
    let mut lines = Vec::new();
    let mut missing = Vec::new();
    for k in source.position() {
        if target_key(p, k).is_some() {
            continue;
        }
        missing.push(format!("`{k}`"));
        let base = format!("source_{}", k.trim_start_matches("_rowshift_"));
        let name = std::iter::once(base.clone())
            .chain((2..).map(|i| format!("{base}_{i}")))
            .find(|n| !taken(n))
            .expect("an unbounded list of names");
        let ty = match schema.field_with_name(k).map(|f| f.data_type().clone()) {
            Ok(arrow::datatypes::DataType::Int64) => "bigint",
            _ => "text",
        };
        lines.push(format!("{name} = {{ type = \"{ty}\", expr = \"{k}\" }}"));
    }
    let all: Vec<String> = source.position().iter().map(|k| format!("`{k}`")).collect();
    let mut d = p.diagnostics();
    let span = p
        .target
        .table
        .as_ref()
        .and_then(|t| t.span.clone())
        .or(p.target.url.span.clone());
    d.push(
        crate::config::Diagnostic::at(
            span,
            format!(
                "read-back verification cannot find a chunk's rows in the target table: [source] names no `key`, so a row is known by its place in the source ({}), and no target column holds {}",
                all.join(", "),
                missing.join(" or ")
            ),
        )
        .with_help(format!(
            "add {} under [target.columns]:\n{}\nor name a unique source column as `key` under [source], or set verify = \"off\" at the top of the file",
            if lines.len() == 1 { "this line" } else { "these lines" },
            lines.join("\n")
        )),
    );
    Error::Config(d)
}

/// Points an error about opening the source or target at the `url` line.
fn at_url(p: &Pipeline, e: Error, source: bool) -> Error {
    match e {
        Error::Config(_) | Error::Internal(_) => e,
        other => {
            let span = if source {
                p.source.url.span.clone()
            } else {
                p.target.url.span.clone()
            };
            let mut d = p.diagnostics();
            d.push(crate::config::Diagnostic::at(span, other.to_string()));
            Error::Config(d)
        }
    }
}

/// The family of a PostgreSQL type name (`pg_type.typname`) among those rowshift writes;
/// `None` for another type, which is not judged here.
fn pg_family(type_name: &str) -> Option<&'static str> {
    Some(match type_name {
        "int2" | "int4" | "int8" => "integer",
        "float4" | "float8" => "float",
        "numeric" => "numeric",
        "bool" => "boolean",
        "text" | "varchar" | "bpchar" => "text",
        "date" => "date",
        "time" => "time",
        "timestamp" => "timestamp",
        "timestamptz" => "timestamptz",
        "bytea" => "bytea",
        _ => return None,
    })
}

/// The family [`pg_family`] gives the column a pipeline type is created as.
fn pg_family_of(ty: crate::types::ColumnType) -> &'static str {
    use crate::types::ColumnType as T;
    match ty {
        T::SmallInt | T::Int | T::BigInt => "integer",
        T::Real | T::Double => "float",
        T::Decimal { .. } => "numeric",
        T::Boolean => "boolean",
        T::Text | T::Varchar(_) => "text",
        T::Date => "date",
        T::Time => "time",
        T::Timestamp => "timestamp",
        T::TimestampTz => "timestamptz",
        T::Bytes => "bytea",
    }
}
