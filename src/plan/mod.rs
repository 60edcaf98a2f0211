//! The validated pipeline and its chunk plan.
//!
//! [`Plan::build`] turns a parsed [`Pipeline`] into everything a run needs: an open source
//! with its schema, and compiled transforms. Problems that need the source to find (an
//! expression naming a missing column, a type that cannot be cast) are reported here, with
//! the line of the pipeline file, before any row moves.

mod open;

use std::path::PathBuf;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;

use crate::check::rules::Checks;
use crate::chunk::{Chunk, ChunkRange, Selection, TargetKey};
use crate::config::{Location, Pipeline, Verify};
use crate::runtime::IoRuntime;
use crate::sink::Sink;
use crate::source::Source;
use crate::transform::Transform;

pub use self::open::{open_capture, open_sink, open_source};
use crate::{Error, Result};

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
        let source = open_source(&pipeline.source, &io).map_err(|e| at_url(&pipeline, e, true))?;
        Plan::with_source(pipeline, source, io)
    }

    /// A plan that reads `source` instead of the pipeline's own (a dry run's sample file).
    pub fn with_source(pipeline: Pipeline, source: Arc<dyn Source>, io: IoRuntime) -> Result<Plan> {
        let transform = Transform::compile(&pipeline, source.schema())?;
        let open_lookup = |table: &str, column: &str| {
            crate::db::sqlite::lookup::SqliteLookup::open(&pipeline, table, column, &io)
                .map(|l| Box::new(l) as Box<dyn crate::check::rules::Lookup>)
        };
        let checks = Checks::compile(
            &pipeline,
            &transform.output_schema(),
            &source.schema(),
            &open_lookup,
        )?;
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
        open_sink(
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
