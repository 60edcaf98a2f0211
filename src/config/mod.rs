//! The pipeline file: parsing, `${VAR}` expansion, and validation with line numbers.
//!
//! The file is parsed into a spanned TOML document and walked by hand rather than through
//! serde, so that *every* problem is collected in one pass and each points at its own line.

mod location;
mod settings;
mod walk;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::error::diag::{Diagnostic, Diagnostics, suggest};
pub use crate::secret::percent_decode;
pub use crate::secret::{SecretUrl, redact};
pub use location::{FileFormat, Location, show_path};
pub use walk::{expand_env, parse_compression};

use crate::types::ColumnType;
use crate::{Error, Result};

/// Connections in a database pool when `pool_size` is not set (and `[chunks] parallel`
/// is not more).
pub const DEFAULT_POOL_SIZE: u32 = 8;

/// A value from the pipeline file and the byte range it came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it was written; `None` for defaults.
    pub span: Option<Range<usize>>,
}

// Spans stay out of Debug so that the fingerprint ignores layout and comments.
impl<T: std::fmt::Debug> std::fmt::Debug for Spanned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.value.fmt(f)
    }
}

/// A parsed, syntactically valid pipeline file.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The pipeline's name, used for state and history.
    pub name: String,
    /// The pipeline file as the user named it.
    pub file: PathBuf,
    /// The folder relative paths are resolved against: the file's own folder.
    pub base_dir: PathBuf,
    /// What to read.
    pub source: SourceConfig,
    /// What to write.
    pub target: TargetConfig,
    /// SQL predicate over source columns; rows where it is not true are filtered out.
    pub filter: Option<Spanned<String>>,
    /// How to split and parallelise the work.
    pub chunks: ChunkConfig,
    /// When rejected rows stop a chunk or the run.
    pub limits: Limits,
    /// Declared checks (`[[checks]]`), in file order.
    pub checks: Vec<CheckConfig>,
    /// Whether each chunk is read back from the target and compared with what was sent.
    pub verify: Verify,
    /// `[online]`: change capture during the copy, catch-up and cut-over.
    pub online: OnlineConfig,
    text: Arc<str>,
}

/// `[online]`: capture the source table's changes while it is copied, replay them, and
/// optionally swap the new table in (docs/online.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlineConfig {
    /// Whether `run` installs change capture on the source table before it plans.
    pub enabled: bool,
    /// The catch-up stops once fewer changes than this wait (0: until none wait).
    pub max_lag_rows: u64,
    /// Logged changes replayed per transaction.
    pub batch_rows: usize,
    /// Whether `run` cuts over once it has caught up.
    pub cutover: bool,
    /// How long one attempt at the cut-over's lock may wait, in milliseconds.
    pub lock_timeout_ms: u64,
    /// Attempts at the cut-over's lock, with a growing pause between them.
    pub lock_attempts: u32,
    /// The most logged changes the catch-up replays per second (0: no limit).
    pub max_rows_per_second: u64,
    /// PostgreSQL source: the catch-up waits while more backends than this are active
    /// on the server (0: no limit).
    pub max_active_backends: u64,
    /// PostgreSQL source: the catch-up waits while a replica's replay lag
    /// (`pg_stat_replication`) is above this many milliseconds (0: no limit).
    pub max_replica_lag_ms: u64,
    /// MySQL/MariaDB source: the catch-up waits while `Threads_running` is above this
    /// (0: no limit).
    pub max_threads_running: u64,
    /// The reverse pipeline (`[online] reverse`, resolved against the pipeline file's
    /// folder): how the new table's rows go back to the old table's shape. With it, the
    /// cut-over installs reverse capture on the new table, which keeps the old table
    /// current and lets `rowshift down` swap back.
    pub reverse: Option<Spanned<std::path::PathBuf>>,
}

impl Default for OnlineConfig {
    fn default() -> Self {
        OnlineConfig {
            enabled: false,
            max_lag_rows: 1000,
            batch_rows: 1000,
            cutover: false,
            lock_timeout_ms: 2000,
            lock_attempts: 5,
            max_rows_per_second: 0,
            max_active_backends: 0,
            max_replica_lag_ms: 0,
            max_threads_running: 0,
            reverse: None,
        }
    }
}

/// `verify`: whether each committed chunk is read back from the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Read the chunk back and compare its row count and checksum with what was sent
    /// (the default).
    ReadBack,
    /// Trust the target's word. Faster; conservation is still checked.
    Off,
}

/// What happens to a row that fails a declared check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// The row goes to the quarantine with the check's reason (the default).
    Reject,
    /// The chunk fails and nothing of it is written.
    Fail,
    /// The row is written; the run summary counts it under the check.
    Warn,
}

/// The rule of one declared check.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// The column holds no NULL.
    NotNull,
    /// No value of the column appears twice in the whole run (NULLs are not compared).
    Unique,
    /// `min <= value <= max`, either bound optional; bounds are SQL literals.
    Range {
        /// Lowest allowed value, as a SQL literal.
        min: Option<String>,
        /// Highest allowed value, as a SQL literal.
        max: Option<String>,
    },
    /// The text matches this regular expression (anywhere, unless anchored).
    Regex(String),
    /// The value is one of these SQL literals.
    Accepted(Vec<String>),
    /// The value exists in `table.column` of the target database, or of the source
    /// database when the target has no such table.
    References {
        /// The referenced table.
        table: String,
        /// The referenced column.
        column: String,
    },
    /// A SQL boolean expression over the target columns. Like a SQL CHECK constraint, a
    /// NULL result passes.
    Expr(String),
}

/// One `[[checks]]` entry.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// The check's name in messages and the summary; by default the column and rule.
    pub name: String,
    /// The target column checked; `None` for a row check (`expr`).
    pub column: Option<Spanned<String>>,
    /// The rule, spanned at its key.
    pub kind: Spanned<CheckKind>,
    /// What a failure does.
    pub policy: Policy,
}

/// `[source]`.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The url as written, with `${VAR}`s expanded and passwords redacted.
    pub url: Spanned<String>,
    /// The resolved location.
    pub location: Location,
    /// Table name, for database sources.
    pub table: Option<Spanned<String>>,
    /// Column(s) whose ranges make the chunks (databases), and that name rows in
    /// messages: `key = "id"`, or `key = ["tenant_id", "id"]` for a composite key, whose
    /// ranges compare tuples.
    pub key: Option<Spanned<Vec<String>>>,
    /// CSV reading options.
    pub csv: CsvOptions,
    /// Declared source column types (`[source.types]`), overriding what the source says.
    pub types: Vec<(Spanned<String>, Spanned<ColumnType>)>,
    /// Connection settings, for database servers.
    pub db: DbOptions,
}

impl SourceConfig {
    /// The type `[source.types]` declares for column `name`, if it declares one.
    pub fn declared_type(&self, name: &str) -> Option<ColumnType> {
        self.types
            .iter()
            .find(|(n, _)| n.value == name)
            .map(|(_, t)| t.value)
    }
}

/// Connection settings of a database server source or target (PostgreSQL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbOptions {
    /// Connections in the pool (`pool_size`). Default: 8, or `[chunks] parallel` when
    /// that is more (parsing sets it). Each chunk in flight holds one.
    pub pool_size: Option<u32>,
    /// Longest a statement may run, in milliseconds (`statement_timeout_ms`). Default:
    /// the server's.
    pub statement_timeout_ms: Option<u64>,
    /// Longest a statement waits for a lock, in milliseconds (`lock_timeout_ms`).
    /// Default: the server's. A lock timeout is retried like a deadlock.
    pub lock_timeout_ms: Option<u64>,
}

/// How a database target writes a chunk's rows (`write_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Plain inserts (the default); a duplicate primary key fails the chunk.
    Insert,
    /// Insert, or update the row with the same primary key.
    Upsert,
    /// Delete the chunk's key range from the target, then insert, in one transaction.
    ReplaceChunk,
}

/// CSV options, for both reading and writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// Whether the first line holds column names. Default: true.
    pub header: bool,
    /// Field separator (its first byte when it has several). Default: `,`.
    pub delimiter: u8,
    /// A separator of several bytes (`delimiter = "||"`), when reading; `None` when it is
    /// the one byte `delimiter`.
    pub delimiter_multi: Option<Vec<u8>>,
    /// Quote character. Default: `"`.
    pub quote: u8,
    /// How quotes are read (`quoting`, or `quote = ""` for none). Default: strict.
    pub quoting: Quoting,
    /// Escape character inside quotes; `None` means quotes are doubled. Default: none.
    pub escape: Option<u8>,
    /// Field texts read as NULL (written as the first one). Default: `[""]`. They match
    /// unquoted fields only, so `""` is an empty string, unless `null_quoted`.
    pub null: Vec<String>,
    /// Whether `null` markers also match quoted fields. Default: false.
    pub null_quoted: bool,
    /// Per-column null markers (`[source.csv.null_columns] col = ["NA"]`), which replace
    /// `null` for those columns.
    pub null_columns: Vec<(String, Vec<String>)>,
    /// Column names when there is no header.
    pub columns: Option<Vec<String>>,
    /// The longest a record may be, in bytes; a longer one (a stray quote that never
    /// closes, say) is set aside. Default: 64 MiB.
    pub max_record_bytes: u64,
    /// The file's character encoding. Default: UTF-8.
    pub encoding: Encoding,
    /// Lines skipped before the header (or the first record). Default: 0.
    pub skip_lines: u64,
    /// Whether blanks (spaces, tabs) around fields are removed. Default: false.
    pub trim: bool,
}

impl CsvOptions {
    /// The field separator's bytes.
    pub fn delimiter_bytes(&self) -> Vec<u8> {
        self.delimiter_multi
            .clone()
            .unwrap_or_else(|| vec![self.delimiter])
    }

    /// The null markers of column `name`.
    pub fn null_of(&self, name: &str) -> &[String] {
        self.null_columns
            .iter()
            .find(|(c, _)| c == name)
            .map_or(self.null.as_slice(), |(_, m)| m.as_slice())
    }
}

/// How quotes in a CSV file are read (`quoting`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quoting {
    /// RFC 4180: a quote opens a field only at its start, and a closing quote is followed
    /// by a delimiter or the line's end; anything else sets the record aside.
    Strict,
    /// Quotes elsewhere are kept as text, and text after a closing quote is added to the
    /// field (`"ab"cd` is `abcd`).
    Lenient,
    /// No quoting: quote characters are text (`quote = ""`).
    Off,
}

/// A CSV file's character encoding (`encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8; other bytes set the record aside.
    Utf8,
    /// ISO-8859-1: every byte is the character of the same number.
    Latin1,
    /// Windows-1252; its five undefined bytes set the record aside.
    Windows1252,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            header: true,
            delimiter: b',',
            delimiter_multi: None,
            quote: b'"',
            quoting: Quoting::Strict,
            escape: None,
            null: vec![String::new()],
            null_quoted: false,
            null_columns: Vec::new(),
            columns: None,
            max_record_bytes: 64 << 20,
            encoding: Encoding::Utf8,
            skip_lines: 0,
            trim: false,
        }
    }
}

/// What to do when the target already holds data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    /// Stop with an error (the default): never mix two runs' rows by accident.
    Fail,
    /// Drop the table, or delete the part files, then write.
    Replace,
    /// Add rows to an existing table (database targets only).
    Append,
}

/// `[target]`.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// The url as written, expanded and redacted.
    pub url: Spanned<String>,
    /// The resolved location.
    pub location: Location,
    /// Table name, for database targets.
    pub table: Option<Spanned<String>>,
    /// What to do with existing data.
    pub if_exists: IfExists,
    /// The target columns, in file order.
    pub columns: Vec<TargetColumn>,
    /// CSV writing options.
    pub csv: CsvOptions,
    /// Parquet writing options.
    pub parquet: ParquetOptions,
    /// How rows are written (database server targets).
    pub write_mode: WriteMode,
    /// Connection settings, for database servers.
    pub db: DbOptions,
    /// Secondary and unique indexes (`[[target.indexes]]`), built after the load.
    pub indexes: Vec<IndexDecl>,
    /// Foreign keys (`[[target.foreign_keys]]`), added after the load.
    pub foreign_keys: Vec<ForeignKeyDecl>,
    /// Table check constraints (`[[target.constraints]]`), added after the load.
    pub constraints: Vec<ConstraintDecl>,
}

/// One `[[target.indexes]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDecl {
    /// The index's name: as declared, or `<table>_<columns>_key` (unique) /
    /// `<table>_<columns>_idx`.
    pub name: String,
    /// Its columns, in order.
    pub columns: Vec<String>,
    /// Whether two rows may not share its (non-NULL) values.
    pub unique: bool,
}

/// One `[[target.foreign_keys]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKeyDecl {
    /// The constraint's name: as declared, or `<table>_<columns>_fkey`.
    pub name: String,
    /// The referencing columns of the target table.
    pub columns: Vec<String>,
    /// The referenced table (in the target's schema or database).
    pub table: String,
    /// The referenced columns, one per referencing column.
    pub references: Vec<String>,
    /// `on_delete`, in SQL words (`CASCADE`, `SET NULL`, ...).
    pub on_delete: Option<&'static str>,
    /// `on_update`, in SQL words.
    pub on_update: Option<&'static str>,
}

/// One `[[target.constraints]]` entry: a SQL `CHECK` the target itself enforces, unlike
/// a `[[checks]]` rule, which rowshift applies to each row it moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConstraintDecl {
    /// The constraint's name: as declared, or `<table>_check<N>`.
    pub name: String,
    /// The SQL boolean expression over the table's columns, written into the DDL as is.
    pub check: String,
}

impl TargetConfig {
    /// The file format of a file target; `None` for a database.
    pub fn location_format(&self) -> Option<FileFormat> {
        match &self.location {
            Location::Files { format, .. } => Some(*format),
            Location::Sqlite { .. } | Location::Postgres { .. } | Location::Mysql { .. } => None,
        }
    }

    /// The schema the declared columns make: what transformed batches look like.
    pub fn schema(&self) -> arrow::datatypes::SchemaRef {
        Arc::new(arrow::datatypes::Schema::new(
            self.columns
                .iter()
                .map(|c| {
                    arrow::datatypes::Field::new(&c.name.value, c.ty.value.arrow_type(), c.nullable)
                })
                .collect::<Vec<_>>(),
        ))
    }
}

/// One entry of `[target.columns]`.
#[derive(Debug, Clone)]
pub struct TargetColumn {
    /// Column name in the target.
    pub name: Spanned<String>,
    /// Declared type; values are cast into it without loss or the row fails.
    pub ty: Spanned<ColumnType>,
    /// SQL expression over source columns.
    pub expr: Spanned<String>,
    /// Part of the target's primary key.
    pub primary_key: bool,
    /// Whether NULL is allowed. Default: true, false for primary key columns.
    pub nullable: bool,
    /// For `timestamptz` columns: the zone of values that carry none. Without it, a
    /// value without a zone is rejected rather than guessed to be UTC.
    pub timezone: Option<Spanned<String>>,
    /// For date, timestamp and timestamptz columns: the chrono strftime format their text
    /// values are written in (`"%d/%m/%Y"`). Each text must match it whole, with a
    /// four-digit year, or its row fails.
    pub format: Option<Spanned<String>>,
    /// `default`: the column's DEFAULT in the table rowshift creates, a SQL expression
    /// (a TOML number or boolean is its literal).
    pub default: Option<Spanned<String>>,
    /// `identity`: an integer primary key the target numbers itself (PostgreSQL identity,
    /// MySQL `AUTO_INCREMENT`, SQLite's rowid), set past the largest value loaded.
    pub identity: bool,
}

/// `[target.parquet]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ParquetOptions {
    /// Compression codec. Default: snappy.
    pub compression: parquet::basic::Compression,
    /// Maximum rows per row group. Default: 1,048,576.
    pub row_group_rows: usize,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions {
            compression: parquet::basic::Compression::SNAPPY,
            row_group_rows: 1 << 20,
        }
    }
}

/// `[limits]`: how many rejected rows are too many. Rejected rows always go to the
/// quarantine; these stop the work when there are too many of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// Rejected rows in the whole run above which the run stops. Default: no limit.
    pub max_rejects: Option<u64>,
    /// Share of a chunk's rows (0 to 1) above which that chunk fails. Default: no limit.
    pub max_reject_ratio: Option<f64>,
}

/// `[chunks]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkConfig {
    /// Target rows per chunk. Default: 100,000.
    pub rows: u64,
    /// Chunks in flight at once. Default: the number of CPUs.
    pub parallel: usize,
    /// Rows per Arrow batch inside a chunk. Default: 8,192.
    pub batch_rows: usize,
    /// How long a chunk's transient errors (a dropped connection, a lock wait, a
    /// deadlock) are retried, in seconds, before the chunk fails. Default: 60.
    pub retry_seconds: u64,
    /// How long a process of a shared run (`run --worker`) holds a chunk without a
    /// heartbeat, in seconds: after that another process takes it, and the first can
    /// no longer commit it. Default: 30.
    pub lease_seconds: u64,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        ChunkConfig {
            rows: 100_000,
            parallel: std::thread::available_parallelism().map_or(2, |n| n.get()),
            batch_rows: 8192,
            retry_seconds: 60,
            lease_seconds: 30,
        }
    }
}

impl Pipeline {
    /// Reads and parses a pipeline file, expanding `${VAR}` from the process environment.
    ///
    /// The file must be UTF-8. A byte-order mark before the first line is skipped and
    /// CRLF line ends are read like LF ones (TOML allows both), so a file saved by a
    /// Windows editor works as written; lines and columns in messages count from the
    /// text after the mark.
    pub fn load(file: &Path) -> Result<Pipeline> {
        let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => return Err(not_utf8(file, e)),
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        Pipeline::parse(file, text, &|name| std::env::var(name).ok())
    }

    /// A fresh diagnostics list for this file, for checks after parsing (expressions, types).
    pub fn diagnostics(&self) -> Diagnostics {
        Diagnostics::new(self.file.clone(), self.text.clone())
    }
}

/// A pipeline file that is not UTF-8, as a diagnostic at its first invalid byte.
fn not_utf8(file: &Path, e: std::string::FromUtf8Error) -> Error {
    let at = e.utf8_error().valid_up_to();
    let bytes = e.as_bytes();
    let bad = bytes[at];
    let text: Arc<str> = String::from_utf8_lossy(bytes).into();
    let mut diags = Diagnostics::new(file.to_path_buf(), text);
    diags.push(
        Diagnostic::at(
            Some(at..at + 1),
            format!("the file is not UTF-8: byte 0x{bad:02X} cannot start or continue a character"),
        )
        .with_help("save the file as UTF-8 (Latin-1 and Windows-1252 text must be converted)"),
    );
    Error::Config(diags)
}

#[cfg(test)]
mod tests;
