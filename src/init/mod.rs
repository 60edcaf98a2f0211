//! `rowshift init`: a starter pipeline from an existing table or file.
//!
//! It introspects the source (columns, types, nullability, primary key; for text columns a
//! sample of values), and writes one identity expression per column with the inferred
//! target type. The result validates and runs as written.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, TimeUnit};

use crate::config::{CsvOptions, FileFormat, Location, SourceConfig, Spanned, show_path};
use crate::db::sqlite::{Access, connect, table_columns, table_names};
use crate::runtime::IoRuntime;
use crate::source::Source;
use crate::types::ColumnType;
use crate::{Error, Result};

mod catalog;
mod db;
mod decl;
mod expr;
mod set;

pub use set::{SetStarter, starter_set};

/// What `rowshift init` was asked for.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The source: `sqlite://PATH`, or a CSV or Parquet file.
    pub from: String,
    /// The table, for database sources.
    pub table: Option<String>,
    /// The key column(s), overriding what init would pick; several make a composite key.
    pub key: Vec<String>,
    /// The pipeline's name; default from the table or file name.
    pub name: Option<String>,
    /// The target url; default a Parquet directory `out/<name>` beside the pipeline.
    pub target: Option<String>,
    /// The folder the pipeline file will live in: relative paths are written against it.
    pub pipeline_dir: PathBuf,
    /// The source's PostgreSQL schema or MySQL database, when not the URL's.
    pub schema: Option<String>,
    /// The target's PostgreSQL schema or MySQL database, when not the URL's.
    pub target_schema: Option<String>,
}

/// One source column and what init made of it.
pub(crate) struct Column {
    name: String,
    ty: ColumnType,
    nullable: bool,
    /// A CSV column's one non-numeric value (`NA`) in an otherwise numeric column: read
    /// as NULL, so the column keeps its numeric type.
    marker: Option<String>,
}

/// A generated pipeline and what its author should know about it.
#[derive(Debug, Clone)]
pub struct Starter {
    /// The pipeline file's text.
    pub text: String,
    /// Lines to print beside it: columns left out, passwords kept out of the file.
    pub notes: Vec<String>,
    /// What the source declares that the pipeline does not carry over (views, a check
    /// or default the target cannot evaluate, ...), each in words; also comments in the
    /// text.
    pub lost: Vec<String>,
    /// `${VAR}`s the text uses for URLs with a password, with the URL each stands for,
    /// so the pipeline validates before the user has set them.
    vars: Vec<(String, String)>,
}

impl Starter {
    /// Checks the pipeline as if it were the file `path`: it must validate as written.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let env = |name: &str| {
            std::env::var(name).ok().or_else(|| {
                self.vars
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            })
        };
        crate::config::Pipeline::parse(path, &self.text, &env)
            .and_then(crate::plan::Plan::build)
            .map(|_| ())
    }
}

/// Introspects the source and returns the text of a starter pipeline file.
pub fn starter_pipeline(opts: &InitOptions) -> Result<String> {
    starter(opts).map(|s| s.text)
}

/// Introspects the source and returns a starter pipeline with its notes.
pub fn starter(opts: &InitOptions) -> Result<Starter> {
    generate(opts, None)
}

/// What a migration set gives one table's pipeline: the table's declarations read with
/// the others', the set's tables, the foreign keys a later step adds, and the names the
/// other steps took.
pub(crate) struct InSet<'a> {
    info: &'a catalog::TableInfo,
    tables: &'a [String],
    deferred: &'a [catalog::FkInfo],
    names: &'a mut decl::Names,
}

fn generate(opts: &InitOptions, in_set: Option<InSet<'_>>) -> Result<Starter> {
    let set_mode = in_set.is_some();
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    let location = Location::parse(&opts.from, &cwd, None).map_err(Error::Unsupported)?;
    let io = IoRuntime::new()?;
    let mut vars = Vec::new();
    let mut out_notes = Vec::new();
    let mut source_types: Vec<db::SourceType> = Vec::new();
    let mut source_schema = None;
    let mut in_schema = String::new();
    let (mut columns, key, source_url, table, notes) = match &location {
        Location::Sqlite { path } => sqlite_columns(opts, path, &io)?,
        Location::Files { path, format } => file_columns(opts, path, *format, &io)?,
        Location::Postgres { .. } | Location::Mysql { .. } => {
            let found = db::server_columns(opts, &location, &io)?;
            source_types = found.types;
            source_schema = found.schema;
            in_schema = found.in_schema;
            let url = url_text(&opts.from, "ROWSHIFT_SOURCE_URL", &mut vars, &mut out_notes);
            (
                found.columns,
                Some(found.key),
                url,
                Some(found.table),
                found.notes,
            )
        }
    };
    let name = opts.name.clone().unwrap_or_else(|| {
        let base = table.clone().unwrap_or_else(|| {
            Path::new(&opts.from)
                .file_stem()
                .map_or("pipeline".into(), |s| s.to_string_lossy().into_owned())
        });
        base.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    });

    let mut t = String::new();
    t.push_str(&format!(
        "# Starter pipeline made by `rowshift init --from {}`.\n",
        crate::config::redact(&opts.from)
    ));
    t.push_str("# Each column is copied as it is; edit the expressions and types to shape the new schema,\n");
    t.push_str("# then try it with `rowshift dry-run` before `rowshift run`.\n");
    for n in &notes {
        t.push_str(&format!("# note: {n}\n"));
    }
    for (var, shown) in &vars {
        t.push_str(&format!(
            "# ${{{var}}}: set it to {} with its password; the password is not written into this file.\n",
            crate::config::redact(shown)
        ));
    }
    t.push_str(&format!(
        "name = {}\n\n[source]\nurl = {}\n",
        toml_str(&name),
        toml_str(&source_url)
    ));
    if let Some(schema) = &source_schema {
        t.push_str(&format!("schema = {}\n", toml_str(schema)));
    }
    if let Some(table) = &table {
        t.push_str(&format!("table = {}\n", toml_str(table)));
    }
    match key.as_deref() {
        Some([one]) => t.push_str(&format!("key = {}\n", toml_str(one))),
        Some(many) => {
            let names: Vec<String> = many.iter().map(|k| toml_str(k)).collect();
            t.push_str(&format!("key = [{}]\n", names.join(", ")));
        }
        None => {}
    }
    if !source_types.is_empty() {
        t.push_str("\n[source.types]\n");
        for st in &source_types {
            t.push_str(&format!("# {}\n", st.why));
            t.push_str(&format!(
                "{} = {}\n",
                toml_key(&st.column),
                toml_str(&st.ty.to_string())
            ));
        }
    }
    let marked: Vec<&Column> = columns.iter().filter(|c| c.marker.is_some()).collect();
    if !marked.is_empty() {
        t.push_str(
            "\n# Numeric columns with one other value, read as NULL:\n[source.csv.null_columns]\n",
        );
        for c in marked {
            t.push_str(&format!(
                "{} = [\"\", {}]\n",
                toml_key(&c.name),
                toml_str(c.marker.as_deref().unwrap_or_default())
            ));
        }
    }
    t.push_str("\n[target]\n");
    let mut database_target = false;
    let mut mysql_target = false;
    let mut target_engine = None;
    let mut same_place = false;
    let mut target_table = name.clone();
    match &opts.target {
        Some(url) => {
            let mut cwd_target = Location::parse(url, &cwd, None);
            if let (
                Ok(Location::Postgres { schema, .. } | Location::Mysql { schema, .. }),
                Some(s),
            ) = (&mut cwd_target, &opts.target_schema)
            {
                *schema = s.clone();
            }
            target_engine = cwd_target.as_ref().ok().and_then(catalog::engine);
            match cwd_target {
                Ok(
                    Location::Sqlite { .. } | Location::Postgres { .. } | Location::Mysql { .. },
                ) => {
                    database_target = true;
                    mysql_target = matches!(cwd_target, Ok(Location::Mysql { .. }));
                    // The source's own table is never the target: in the same database
                    // (and schema) the copy is `<name>_v2` beside it.
                    let mut source_at = location.clone();
                    if let (
                        Location::Postgres { schema, .. } | Location::Mysql { schema, .. },
                        false,
                    ) = (&mut source_at, in_schema.is_empty())
                    {
                        *schema = in_schema.clone();
                    }
                    // Without --target-schema, the source's URL as the target means the
                    // source's own schema (`--table SCHEMA.T`).
                    let same = match &opts.target_schema {
                        Some(_) => cwd_target.as_ref().ok() == Some(&source_at),
                        None => cwd_target.as_ref().ok() == Some(&location),
                    };
                    same_place = same;
                    let table = match (&table, set_mode) {
                        // A set's step writes the table of the same name.
                        (Some(t), true) => t.clone(),
                        _ if same => format!("{name}_v2"),
                        _ => name.clone(),
                    };
                    let shown = match &cwd_target {
                        // Relative paths in the file are read against the file's folder.
                        Ok(Location::Sqlite { path }) => format!(
                            "sqlite://{}",
                            relative_to(path, &opts.pipeline_dir).display()
                        ),
                        _ => url_text(url, "ROWSHIFT_TARGET_URL", &mut vars, &mut out_notes),
                    };
                    t.push_str(&format!("url = {}\n", toml_str(&shown)));
                    if let Some(schema) = source_schema.as_ref().filter(|_| same) {
                        t.push_str(&format!("schema = {}\n", toml_str(schema)));
                    } else if let Some(schema) = &opts.target_schema {
                        t.push_str(&format!("schema = {}\n", toml_str(schema)));
                    }
                    t.push_str(&format!("table = {}\n", toml_str(&table)));
                    target_table = table;
                }
                Ok(Location::Files { path, format }) => t.push_str(&format!(
                    "url = {}\nformat = \"{}\"\n",
                    toml_str(&relative_to(&path, &opts.pipeline_dir).display().to_string()),
                    format_name(format)
                )),
                Err(_) => t.push_str(&format!("url = {}\nformat = \"parquet\"\n", toml_str(url))),
            }
        }
        None => t.push_str(&format!(
            "url = {}\nformat = \"parquet\"\n",
            toml_str(&format!("out/{name}"))
        )),
    }
    // The table's declarations, when both ends are databases.
    let source_engine = catalog::engine(&location);
    let mut declared = None;
    if let (Some(source), Some(target), Some(table)) = (source_engine, target_engine, &table) {
        let read;
        let (info, tables, deferred, mut own_names, names) = match in_set {
            Some(s) => (s.info, Some(s.tables), s.deferred, None, Some(s.names)),
            None => {
                read = catalog::table_info(&location, &in_schema, table, &io)?;
                let mut names = decl::Names::default();
                if same_place {
                    // Beside the source table, its declarations' names are taken.
                    names.reserve(read.indexes.iter().map(|i| i.name.as_str()));
                    names.reserve(read.checks.iter().filter_map(|c| c.name.as_deref()));
                    names.reserve(read.foreign_keys.iter().filter_map(|f| f.name.as_deref()));
                }
                (&read, None, &[][..], Some(names), None)
            }
        };
        let names = match names {
            Some(n) => n,
            None => own_names.as_mut().expect("made above"),
        };
        let cx = decl::DeclContext {
            source,
            target,
            table: &target_table,
            tables,
            deferred,
        };
        let key = key.clone().unwrap_or_default();
        declared = Some(decl::declare(info, &mut columns, &key, &cx, names));
    }
    t.push_str("\n[target.columns]\n");
    for c in &columns {
        let pk = key.as_ref().is_some_and(|k| k.contains(&c.name));
        let mut fields = vec![
            format!("type = {}", toml_str(&c.ty.to_string())),
            format!("expr = {}", toml_str(&sql_ident(&c.name))),
        ];
        if pk {
            fields.push("primary_key = true".into());
        } else if !c.nullable {
            fields.push("nullable = false".into());
        }
        if let Some((_, more)) = declared
            .as_ref()
            .and_then(|d| d.fields.iter().find(|(n, _)| n == &c.name))
        {
            fields.extend(more.iter().cloned());
        }
        t.push_str(&format!(
            "{} = {{ {} }}\n",
            toml_key(&c.name),
            fields.join(", ")
        ));
    }
    // Without a key a row is known by its place in the file: a database target keeps it,
    // so that read-back and `verify` find a chunk's rows (the primary key makes that an
    // index search).
    if let (Location::Files { format, .. }, None, true) = (&location, &key, database_target) {
        let place = match format {
            FileFormat::Csv => crate::source::POSITION_LINE,
            FileFormat::Parquet => crate::source::POSITION_ROW,
        };
        // MySQL keys no TEXT column; a longer path is refused with its row, never cut.
        let file_type = if mysql_target { "varchar(255)" } else { "text" };
        for (expr, ty) in [(crate::source::POSITION_FILE, file_type), (place, "bigint")] {
            let base = format!("source_{}", expr.trim_start_matches("_rowshift_"));
            let name = std::iter::once(base.clone())
                .chain((2..).map(|i| format!("{base}_{i}")))
                .find(|n| !columns.iter().any(|c| &c.name == n))
                .expect("an unbounded list of names");
            t.push_str(&format!(
                "{} = {{ type = \"{ty}\", expr = \"{expr}\", primary_key = true }}\n",
                toml_key(&name)
            ));
        }
    }
    for st in source_types.iter().filter(|st| !st.copied) {
        t.push_str(&format!(
            "# {} = {{ type = \"text\", expr = {} }}  # not copied: {}\n",
            toml_key(&st.column),
            toml_str(&sql_ident(&st.column)),
            st.why
        ));
        out_notes.push(format!(
            "column `{}` is not copied: {}; its line in [target.columns] is a comment",
            st.column, st.why
        ));
    }
    let mut lost = Vec::new();
    if let Some(d) = declared {
        t.push_str(&d.body);
        if !d.lost.is_empty() {
            t.push_str("\n# Not carried over from the source:\n");
            for l in &d.lost {
                t.push_str(&format!("# - {}\n", l.replace('\n', " ")));
            }
        }
        out_notes.extend(d.notes);
        lost = d.lost;
    }
    t.push_str("\n[chunks]\nrows = 100000\n");
    Ok(Starter {
        text: t,
        notes: out_notes,
        lost,
        vars,
    })
}

/// The name `format = ...` takes for a file format.
fn format_name(format: FileFormat) -> &'static str {
    match format {
        FileFormat::Csv => "csv",
        FileFormat::Parquet => "parquet",
    }
}

/// A URL as the pipeline file holds it: as given, or when it holds a password, the
/// variable `var` (whose value is remembered in `vars` for validation only).
fn url_text(
    url: &str,
    var: &str,
    vars: &mut Vec<(String, String)>,
    notes: &mut Vec<String>,
) -> String {
    if crate::config::redact(url) == url {
        return url.to_string();
    }
    vars.push((var.to_string(), url.to_string()));
    notes.push(format!(
        "{} holds a password, which is not written into the pipeline: it reads ${{{var}}}; set {var} before running it",
        crate::config::redact(url)
    ));
    format!("${{{var}}}")
}

type Introspected = (
    Vec<Column>,
    Option<Vec<String>>,
    String,
    Option<String>,
    Vec<String>,
);

fn sqlite_columns(opts: &InitOptions, path: &Path, io: &IoRuntime) -> Result<Introspected> {
    let shown = format!("sqlite://{}", show_path(path));
    let pool = connect(io, path, Access::Read, 1)?;
    let Some(table) = opts.table.clone() else {
        let names = io.block_on(table_names(&pool, &shown))?;
        return Err(Error::Unsupported(format!(
            "name the table with --table; {shown} has: {}",
            names.join(", ")
        )));
    };
    let Some(cols) = io.block_on(table_columns(&pool, &table, &shown))? else {
        let names = io.block_on(table_names(&pool, &shown))?;
        return Err(Error::data(
            &shown,
            format!(
                "table `{table}` does not exist; tables are: {}",
                names.join(", ")
            ),
        ));
    };
    // A composite primary key chunks by its columns in the key's own order.
    let mut pks: Vec<(i64, &str)> = cols
        .iter()
        .filter(|c| c.pk > 0)
        .map(|c| (c.pk, c.name.as_str()))
        .collect();
    pks.sort();
    let key: Vec<String> = if opts.key.is_empty() {
        pks.iter().map(|(_, n)| n.to_string()).collect()
    } else {
        opts.key.clone()
    };
    if key.is_empty() {
        return Err(Error::Unsupported(format!(
            "no key found: table `{table}` has no primary key. rowshift splits a table into ranges of a unique, non-null key; pass --key COLUMN (repeat it for a composite key) to name it"
        )));
    }
    let url = format!(
        "sqlite://{}",
        relative_to(path, &opts.pipeline_dir).display()
    );
    let config = source_config(
        &location_text(&url),
        Location::Sqlite {
            path: path.to_path_buf(),
        },
        Some(&table),
        &key,
    );
    let source = crate::plan::open_source(&config, io)?;
    let sample = sample_batch(source.as_ref())?;
    let mut columns = Vec::new();
    for (i, c) in cols.iter().enumerate() {
        let ty = infer(
            sample.as_ref().map(|b| b.column(i).clone()),
            source.schema().field(i).data_type(),
            &c.name,
        )?;
        columns.push(Column {
            name: c.name.clone(),
            ty,
            nullable: !c.not_null && c.pk == 0,
            marker: None,
        });
    }
    Ok((columns, Some(key), url, Some(table), Vec::new()))
}

fn file_columns(
    opts: &InitOptions,
    path: &Path,
    format: FileFormat,
    io: &IoRuntime,
) -> Result<Introspected> {
    let url = relative_to(path, &opts.pipeline_dir).display().to_string();
    let config = source_config(
        &url,
        Location::Files {
            path: path.to_path_buf(),
            format,
        },
        None,
        &[],
    );
    let source = crate::plan::open_source(&config, io)?;
    let schema = source.schema();
    let sample = sample_batch(source.as_ref())?;
    // A CSV's types come from every row: a marker or an outlier far down must not turn
    // into rejects when the pipeline runs.
    // The position columns the source adds come last; they are not the file's.
    let data_columns = schema.fields().len() - source.position().len();
    let whole = if format == FileFormat::Csv {
        Some(csv_stats(source.as_ref(), data_columns)?)
    } else {
        None
    };
    let mut columns = Vec::new();
    for (i, f) in schema.fields().iter().enumerate().take(data_columns) {
        let (ty, marker) = match &whole {
            Some(stats) => stats[i].finish(),
            None => (
                infer(
                    sample.as_ref().map(|b| b.column(i).clone()),
                    f.data_type(),
                    f.name(),
                )?,
                None,
            ),
        };
        // CSV says nothing about NULLs; a sample cannot prove a column never holds one.
        let nullable = format == FileFormat::Csv || f.is_nullable();
        columns.push(Column {
            name: f.name().clone(),
            ty,
            nullable,
            marker,
        });
    }
    let mut notes = Vec::new();
    let key = if opts.key.is_empty() {
        let found = guess_key(&columns, sample.as_ref());
        if found.is_none() {
            notes.push("no key column found (a unique, non-null `id` or `*_id`): each row is known by its place in the source (file and line, or row in a Parquet file), which a database target keeps in columns of its own so that read-back finds a chunk's rows. Set key = \"COLUMN\" in [source] if there is one".into());
        }
        found.map(|k| vec![k])
    } else {
        Some(opts.key.clone())
    };
    for c in columns.iter_mut() {
        if key.as_ref().is_some_and(|k| k.contains(&c.name)) {
            c.nullable = false;
        }
    }
    Ok((columns, key, url, None, notes))
}

fn source_config(
    url: &str,
    location: Location,
    table: Option<&str>,
    key: &[String],
) -> SourceConfig {
    let spanned = |v: &str| Spanned {
        value: v.to_string(),
        span: None,
    };
    SourceConfig {
        url: spanned(url),
        location,
        table: table.map(spanned),
        key: (!key.is_empty()).then(|| Spanned {
            value: key.to_vec(),
            span: None,
        }),
        csv: CsvOptions::default(),
        types: Vec::new(),
        db: Default::default(),
    }
}

fn location_text(url: &str) -> String {
    url.to_string()
}

/// Up to 1,000 rows from the start of the source.
fn sample_batch(source: &dyn Source) -> Result<Option<arrow::record_batch::RecordBatch>> {
    let chunks = source.plan(1000)?;
    let Some(first) = chunks.first() else {
        return Ok(None);
    };
    source.read(first, 1000)?.next().transpose()
}

/// The column type for a source column: from its Arrow type, or for text, from the values.
fn infer(sample: Option<Arc<dyn Array>>, t: &DataType, name: &str) -> Result<ColumnType> {
    Ok(match t {
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => ColumnType::SmallInt,
        DataType::Int32 | DataType::UInt16 => ColumnType::Int,
        DataType::Int64 | DataType::UInt32 => ColumnType::BigInt,
        DataType::UInt64 => ColumnType::Decimal {
            precision: 20,
            scale: 0,
        },
        DataType::Float32 => ColumnType::Real,
        DataType::Float64 => ColumnType::Double,
        DataType::Decimal128(p, s) if *s >= 0 => ColumnType::Decimal {
            precision: *p,
            scale: *s,
        },
        DataType::Boolean => ColumnType::Boolean,
        DataType::Date32 | DataType::Date64 => ColumnType::Date,
        DataType::Time32(_) | DataType::Time64(_) => ColumnType::Time,
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            return Err(Error::Unsupported(format!(
                "column `{name}` holds nanosecond timestamps; rowshift's timestamp types keep microseconds, so a copy would round"
            )));
        }
        DataType::Timestamp(_, None) => ColumnType::Timestamp,
        DataType::Timestamp(_, Some(_)) => ColumnType::TimestampTz,
        DataType::Binary | DataType::LargeBinary => ColumnType::Bytes,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let values: Vec<String> = match &sample {
                Some(a) => {
                    let a = arrow::compute::cast(a, &DataType::Utf8)
                        .map_err(|e| Error::Internal(e.to_string()))?;
                    let s = a.as_string::<i32>();
                    (0..s.len())
                        .filter(|i| s.is_valid(*i))
                        .map(|i| s.value(i).to_string())
                        .collect()
                }
                None => Vec::new(),
            };
            infer_text(&values)
        }
        other => {
            return Err(Error::Unsupported(format!(
                "column `{name}` has type {other}, which init cannot map yet; list it by hand"
            )));
        }
    })
}

/// Every row of a CSV source, column by column.
fn csv_stats(source: &dyn Source, columns: usize) -> Result<Vec<TextStats>> {
    let mut stats: Vec<TextStats> = (0..columns).map(|_| TextStats::new()).collect();
    for chunk in source.plan(100_000)? {
        for batch in source.read(&chunk, 8192)? {
            let batch = batch?;
            for (i, st) in stats.iter_mut().enumerate() {
                let a = batch.column(i).as_string::<i32>();
                for v in a.iter().flatten() {
                    st.add(v);
                }
            }
        }
    }
    Ok(stats)
}

/// What the text values of a column read as, gathered one value at a time.
struct TextStats {
    count: u64,
    /// Values that read as numbers, and whether all of those are integers.
    numbers: u64,
    integers: bool,
    scale: usize,
    digits: usize,
    /// Distinct values that are not numbers, up to two.
    others: Vec<String>,
    date: bool,
    timestamp: bool,
    timestamptz: bool,
    boolean: bool,
}

impl TextStats {
    fn new() -> Self {
        TextStats {
            count: 0,
            numbers: 0,
            integers: true,
            scale: 0,
            digits: 0,
            others: Vec::new(),
            date: true,
            timestamp: true,
            timestamptz: true,
            boolean: true,
        }
    }

    fn add(&mut self, v: &str) {
        self.count += 1;
        if is_int(v) {
            self.numbers += 1;
            self.digits = self.digits.max(v.trim_start_matches('-').len());
        } else if is_decimal(v) {
            self.numbers += 1;
            self.integers = false;
            let (i, f) = v.trim_start_matches('-').split_once('.').unwrap_or((v, ""));
            self.digits = self.digits.max(i.len());
            self.scale = self.scale.max(f.len());
        } else if self.others.len() < 2 && !self.others.iter().any(|o| o == v) {
            self.others.push(v.to_string());
        }
        self.date &= v.len() == 10 && chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok();
        self.timestamp &= ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
            .iter()
            .any(|f| chrono::NaiveDateTime::parse_from_str(v, f).is_ok());
        self.timestamptz &= v.len() > 11
            && matches!(v.as_bytes()[10], b' ' | b'T')
            && v.is_char_boundary(11)
            && chrono::DateTime::parse_from_rfc3339(&format!("{}T{}", &v[..10], &v[11..])).is_ok();
        self.boolean &= matches!(v, "true" | "false");
    }

    fn numeric(&self) -> ColumnType {
        if self.integers && self.digits <= 18 {
            return ColumnType::BigInt;
        }
        fractional_type(self.digits, self.scale)
    }

    /// The column's type, and a marker to read as NULL: a column of numbers but for one
    /// other value (`NA`, `-`) is numeric, with that value as its null marker.
    fn finish(&self) -> (ColumnType, Option<String>) {
        match self.others.as_slice() {
            _ if self.count == 0 => (ColumnType::Text, None),
            [] => (self.numeric(), None),
            [one] if self.numbers > 0 => (self.numeric(), Some(one.clone())),
            _ if self.date => (ColumnType::Date, None),
            _ if self.timestamp => (ColumnType::Timestamp, None),
            _ if self.timestamptz => (ColumnType::TimestampTz, None),
            _ if self.boolean => (ColumnType::Boolean, None),
            _ => (ColumnType::Text, None),
        }
    }
}

fn is_int(v: &str) -> bool {
    let d = v.strip_prefix('-').unwrap_or(v);
    !d.is_empty()
        && d.len() <= 18
        && d.bytes().all(|b| b.is_ascii_digit())
        && !(d.len() > 1 && d.starts_with('0'))
}

fn is_decimal(v: &str) -> bool {
    let d = v.strip_prefix('-').unwrap_or(v);
    match d.split_once('.') {
        Some((i, f)) => {
            !i.is_empty()
                && !f.is_empty()
                && i.bytes().all(|b| b.is_ascii_digit())
                && f.bytes().all(|b| b.is_ascii_digit())
        }
        None => is_int(v),
    }
}

/// The narrowest type every sampled text value reads as without loss.
pub fn infer_text(values: &[String]) -> ColumnType {
    if values.is_empty() {
        return ColumnType::Text;
    }
    let all = |f: &dyn Fn(&str) -> bool| values.iter().all(|v| f(v.as_str()));
    let int = |v: &str| {
        let d = v.strip_prefix('-').unwrap_or(v);
        !d.is_empty()
            && d.len() <= 18
            && d.bytes().all(|b| b.is_ascii_digit())
            && !(d.len() > 1 && d.starts_with('0'))
    };
    if all(&int) {
        return ColumnType::BigInt;
    }
    let decimal = |v: &str| {
        let d = v.strip_prefix('-').unwrap_or(v);
        match d.split_once('.') {
            Some((i, f)) => {
                !i.is_empty()
                    && !f.is_empty()
                    && i.bytes().all(|b| b.is_ascii_digit())
                    && f.bytes().all(|b| b.is_ascii_digit())
            }
            None => int(v),
        }
    };
    if all(&decimal) {
        let scale = values
            .iter()
            .map(|v| v.split_once('.').map_or(0, |(_, f)| f.len()))
            .max()
            .unwrap_or(0);
        let digits = values
            .iter()
            .map(|v| {
                v.trim_start_matches('-')
                    .split('.')
                    .next()
                    .unwrap_or("")
                    .len()
            })
            .max()
            .unwrap_or(1);
        return fractional_type(digits, scale);
    }
    let date = |v: &str| chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok() && v.len() == 10;
    if all(&date) {
        return ColumnType::Date;
    }
    let timestamp = |v: &str| {
        ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
            .iter()
            .any(|f| chrono::NaiveDateTime::parse_from_str(v, f).is_ok())
    };
    if all(&timestamp) {
        return ColumnType::Timestamp;
    }
    if all(&|v| matches!(v, "true" | "false")) {
        return ColumnType::Boolean;
    }
    ColumnType::Text
}

/// The most decimals a column of numbers with a fraction may have and still read as
/// decimal money (`12.50`, `0.0725`) rather than as measurements.
const MONEY_SCALE: usize = 4;

/// The type for numbers with a fraction: a decimal when every value has at most
/// [`MONEY_SCALE`] decimals (the text is clearly decimal, like money), else `double`. A
/// float printed in full (`10.357019999999999`) would otherwise make a decimal whose
/// scale leaves no room for the integer digits of the next value (`1048.36`).
fn fractional_type(digits: usize, scale: usize) -> ColumnType {
    if scale <= MONEY_SCALE && digits + scale <= 38 {
        let precision = (digits.max(1) + scale).clamp(18, 38);
        ColumnType::Decimal {
            precision: precision as u8,
            scale: scale as i8,
        }
    } else {
        ColumnType::Double
    }
}

/// A unique, non-null `id` or `*_id` column of the sample, first one wins.
fn guess_key(
    columns: &[Column],
    sample: Option<&arrow::record_batch::RecordBatch>,
) -> Option<String> {
    let sample = sample?;
    columns.iter().enumerate().find_map(|(i, c)| {
        let named = c.name == "id" || c.name.ends_with("_id");
        let integer = matches!(
            c.ty,
            ColumnType::BigInt | ColumnType::Int | ColumnType::SmallInt
        );
        if !named || !integer {
            return None;
        }
        let col = arrow::compute::cast(sample.column(i), &DataType::Utf8).ok()?;
        let s = col.as_string::<i32>();
        if s.null_count() > 0 {
            return None;
        }
        let distinct: std::collections::HashSet<&str> = (0..s.len()).map(|r| s.value(r)).collect();
        (distinct.len() == s.len()).then(|| c.name.clone())
    })
}

/// `name` as a SQL expression: bare when DataFusion would read it back unchanged.
fn sql_ident(name: &str) -> String {
    let simple = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if simple {
        name.to_string()
    } else {
        crate::sql::quote_ident(name)
    }
}

fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn toml_key(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        s.to_string()
    } else {
        toml_str(s)
    }
}

/// `path` relative to `base` when that is shorter to read; both are made absolute.
fn relative_to(path: &Path, base: &Path) -> PathBuf {
    let (Ok(path), Ok(base)) = (std::path::absolute(path), std::path::absolute(base)) else {
        return path.to_path_buf();
    };
    let p: Vec<Component> = path.components().collect();
    let b: Vec<Component> = base.components().collect();
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    if common <= 1 {
        return path;
    }
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &p[common..] {
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(values: &[&str]) -> Vec<String> {
        values.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn infers_the_narrowest_lossless_type() {
        assert_eq!(infer_text(&v(&["1", "-20", "300"])), ColumnType::BigInt);
        assert_eq!(
            infer_text(&v(&["007"])),
            ColumnType::Text,
            "leading zeros would be lost"
        );
        assert_eq!(
            infer_text(&v(&["1.5", "20", "3.25"])),
            ColumnType::Decimal {
                precision: 18,
                scale: 2
            }
        );
        assert_eq!(
            infer_text(&v(&["2024-02-29", "2023-01-01"])),
            ColumnType::Date
        );
        assert_eq!(infer_text(&v(&["2024-02-30"])), ColumnType::Text);
        assert_eq!(
            infer_text(&v(&["2024-02-01 10:00:00", "2024-02-01T10:00:00.5"])),
            ColumnType::Timestamp
        );
        assert_eq!(infer_text(&v(&["true", "false"])), ColumnType::Boolean);
        assert_eq!(
            infer_text(&v(&["05/03/2024", "2024-03-05"])),
            ColumnType::Text
        );
    }

    #[test]
    fn floats_printed_in_full_are_double_and_money_is_decimal() {
        assert_eq!(
            infer_text(&v(&["10.357019999999999", "1048.36"])),
            ColumnType::Double
        );
        assert_eq!(
            infer_text(&v(&["12.50", "0.0725", "1048"])),
            ColumnType::Decimal {
                precision: 18,
                scale: 4
            }
        );
        let mut stats = TextStats::new();
        for x in ["10.357019999999999", "NA", "1048.36", "3"] {
            stats.add(x);
        }
        assert_eq!(stats.finish(), (ColumnType::Double, Some("NA".into())));
    }

    #[test]
    fn quotes_names_that_sql_would_change() {
        assert_eq!(sql_ident("order_id"), "order_id");
        assert_eq!(sql_ident("FullName"), "\"FullName\"");
        assert_eq!(sql_ident("first name"), "\"first name\"");
    }

    #[test]
    fn writes_paths_relative_to_the_pipeline_folder() {
        assert_eq!(
            relative_to(Path::new("/a/samples/x.csv"), Path::new("/a/pipelines")),
            PathBuf::from("../samples/x.csv")
        );
        assert_eq!(
            relative_to(Path::new("/a/x.csv"), Path::new("/a")),
            PathBuf::from("x.csv")
        );
    }
}
