//! The library's error type, and the diagnostics that point at a pipeline file's lines.

pub mod diag;

use std::path::PathBuf;

use self::diag::Diagnostics;

/// A `Result` with rowshift's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One row that could not be moved: where it is, which column, which value, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RowFailure {
    /// Where the row lives in the source: a key (`id=42`) or a file position.
    pub location: String,
    /// The target column whose value failed, when the failure belongs to one.
    pub column: Option<String>,
    /// The offending value as text, when there is one.
    pub value: Option<String>,
    /// What was expected and what went wrong.
    pub reason: String,
}

impl std::fmt::Display for RowFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.location)?;
        if let Some(column) = &self.column {
            write!(f, ", column {column}")?;
        }
        if let Some(value) = &self.value {
            write!(f, ", value {}", self::diag::quote_value(value))?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Everything that can go wrong in rowshift.
///
/// Messages are lowercase, name the place (file, line, row key, column) and say what was
/// expected. They never contain a password: URLs are redacted before they get here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pipeline file is invalid; holds every problem found, each with its line.
    #[error("{0}")]
    Config(Diagnostics),
    /// A file could not be read or written.
    #[error("{}: {source}{}", path.display(), full_hint(self))]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A database call failed.
    #[error("{location}: {}{}", kind.said.clone().unwrap_or_else(|| driver_text(source)), full_hint(self))]
    Database {
        /// The redacted URL and table, or the statement's purpose.
        location: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
        /// What the database's own code made of it (see [`DbErrorKind`]).
        kind: Box<DbErrorKind>,
    },
    /// Arrow or Parquet failed to read or write data.
    #[error("{location}: {message}")]
    Data {
        /// The file, table or chunk.
        location: String,
        /// What went wrong.
        message: String,
    },
    /// A row could not be converted without loss; the chunk stops.
    #[error("row rejected at {0}")]
    Row(RowFailure),
    /// A chunk failed; wraps the cause.
    #[error("chunk {chunk}: {source}")]
    Chunk {
        /// The chunk's id in the plan.
        chunk: usize,
        /// Why it failed.
        #[source]
        source: Box<Error>,
    },
    /// The target refused rows of a chunk (a constraint, a trigger, a value its column
    /// cannot hold), each named by its place among the rows the chunk sent. A run puts
    /// them in the quarantine and commits the chunk again without them.
    #[error("{}", refused_text(.0))]
    Refused(Vec<Refusal>),
    /// The target refused too many rows of a chunk to find them one by one (more than
    /// 1 in [`MAX_REFUSED_SHARE`], or every row tried, all of the chunk
    /// or past [`MIN_REFUSED`] rows): it refuses the chunk, not some rows.
    /// Nothing of the chunk is written.
    #[error("{}", refused_chunk_text(*rows, *tried, *refused, named, first))]
    RefusedChunk {
        /// Rows the chunk sent.
        rows: usize,
        /// Rows tried before the search stopped.
        tried: usize,
        /// Rows of those refused.
        refused: usize,
        /// The first refused rows, each as `row N (key=value)`.
        named: Vec<String>,
        /// The server's reasons for them, in the same order.
        first: Vec<Refusal>,
    },
    /// The run was interrupted (Ctrl-C, SIGTERM) during a long operation, which stopped
    /// and rolled back; the chunk is redone by the next run.
    #[error(
        "interrupted while {0}; nothing of the chunk was committed, and the next run redoes it"
    )]
    Cancelled(String),
    /// More rows were rejected than `max_rejects` allows; the run stops.
    #[error("reject limit: {0}")]
    RejectLimit(String),
    /// An integrity check did not hold.
    #[error("check failed: {0}")]
    Check(String),
    /// The source or target cannot be used as asked.
    #[error("{0}")]
    Unsupported(String),
    /// A bug in rowshift: an invariant the code relies on did not hold.
    #[error("internal error (this is a bug in rowshift): {0}")]
    Internal(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A database error at `location` (already redacted), classified only by what any
    /// driver says alike: a dropped connection or a pool timeout is transient, a full
    /// disk under the connection is not. A database's own code classifies its server's
    /// errors with [`Error::db_kind`].
    pub fn db(location: impl Into<String>, source: sqlx::Error) -> Self {
        let kind = match &source {
            sqlx::Error::Io(e) if io_full(e) => DbErrorKind::disk_full(),
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => DbErrorKind::transient(),
            _ => DbErrorKind::default(),
        };
        Error::db_kind(location, source, kind)
    }

    /// A database error at `location` (already redacted), with what the database's
    /// own code made of it.
    pub fn db_kind(location: impl Into<String>, source: sqlx::Error, kind: DbErrorKind) -> Self {
        Error::Database {
            location: location.into(),
            source,
            kind: Box::new(kind),
        }
    }

    /// What a database's code made of this error (or the one it wraps), if it is a
    /// database error.
    pub fn db_error_kind(&self) -> Option<&DbErrorKind> {
        match self {
            Error::Chunk { source, .. } => source.db_error_kind(),
            Error::Database { kind, .. } => Some(kind),
            _ => None,
        }
    }

    /// A data error at `location`.
    pub fn data(location: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Data {
            location: location.into(),
            message: message.to_string(),
        }
    }

    /// Whether retrying may succeed: a dropped connection, a busy or locked database, a
    /// deadlock, a serialization failure, a pool timeout. Constraint violations and bad
    /// data are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Chunk { source, .. } => source.is_transient(),
            Error::Database { kind, .. } => kind.transient && !kind.disk_full,
            _ => false,
        }
    }

    /// Whether this error (or the one it wraps) says the disk is full: SQLite's
    /// `SQLITE_FULL`, PostgreSQL's `53100 disk_full`, MySQL's and MariaDB's full disk
    /// and full table errors, `ENOSPC` on a file. Never transient: retrying fills the
    /// disk again. The run stops at once (see [`Error::stops_run`]), and a later run
    /// resumes once space is freed.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Chunk { source, .. } => source.is_disk_full(),
            Error::Io { source, .. } => io_full(source),
            Error::Data { message, .. } => message.contains("No space left on device"),
            Error::Database { kind, .. } => kind.disk_full,
            _ => false,
        }
    }

    /// Whether the run must stop starting chunks after this error: the reject limit was
    /// passed, or the disk is full (every later chunk would fail the same way, and
    /// each would leave less room for the rollback).
    pub fn stops_run(&self) -> bool {
        match self {
            Error::Chunk { source, .. } => source.stops_run(),
            Error::RejectLimit(_) => true,
            other => other.is_disk_full(),
        }
    }

    /// Whether this error (or the one it wraps) is about the data rather than the
    /// environment: a rejected row or a failed check. The CLI maps these to exit code 1.
    pub fn is_data_failure(&self) -> bool {
        match self {
            Error::Row(_)
            | Error::Check(_)
            | Error::RejectLimit(_)
            | Error::Refused(_)
            | Error::RefusedChunk { .. } => true,
            Error::Chunk { source, .. } => source.is_data_failure(),
            _ => false,
        }
    }
}

fn refused_text(refused: &[Refusal]) -> String {
    let Some(first) = refused.first() else {
        return "the target refused no row".into();
    };
    let detail = first
        .detail
        .as_ref()
        .map_or(String::new(), |d| format!(" ({d})"));
    format!(
        "the target refused {} row(s); the first, row {} of those sent: {}{detail}",
        refused.len(),
        first.row + 1,
        first.reason
    )
}

fn refusal_text(r: &Refusal) -> String {
    let detail = r
        .detail
        .as_ref()
        .map_or(String::new(), |d| format!(" ({d})"));
    format!("{}{detail}", r.reason)
}

fn refused_chunk_text(
    rows: usize,
    tried: usize,
    refused: usize,
    named: &[String],
    first: &[Refusal],
) -> String {
    let rows_named: Vec<String> = first
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let name = named
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("row {}", r.row + 1));
            format!("{name}: {}", refusal_text(r))
        })
        .collect();
    format!(
        "the target refused {refused} of the first {tried} of the chunk's {rows} rows, so it refuses the chunk rather than some rows (rows are found one by one only while fewer than 1 in {} of them, or {}, are refused, and not every row tried); nothing of the chunk was written. The first refused, counted among the rows sent: {}",
        MAX_REFUSED_SHARE,
        MIN_REFUSED,
        rows_named.join("; ")
    )
}

/// A driver error as messages show it, when the database's code gave no words of its
/// own ([`DbErrorKind::said`]): without sqlx's `error returned from database:` prefix.
fn driver_text(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.to_string(),
        other => other.to_string(),
    }
}

/// What a database's own code makes of one of its driver's errors. Only the database
/// folders of `crate::db` read a server's error codes; the rest of rowshift asks this.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbErrorKind {
    /// Retrying may succeed: a dropped connection, a busy or locked database, a
    /// deadlock, a serialization failure, a lock or pool timeout.
    pub transient: bool,
    /// The disk or a table is full: never transient, and the run stops.
    pub disk_full: bool,
    /// The server refused a row rather than the statement, the connection or the table
    /// (a constraint, a trigger that raised, a value its column cannot hold).
    pub refused: Option<RefusedRow>,
    /// The server's words as messages show them, where they differ from the driver's
    /// text (PostgreSQL's, without the line of the server's C source that raised it,
    /// which reads like a line of the pipeline).
    pub said: Option<String>,
}

impl DbErrorKind {
    /// A transient error.
    pub fn transient() -> Self {
        DbErrorKind {
            transient: true,
            ..DbErrorKind::default()
        }
    }

    /// A full disk.
    pub fn disk_full() -> Self {
        DbErrorKind {
            disk_full: true,
            ..DbErrorKind::default()
        }
    }
}

/// A row the server refused, as its error says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedRow {
    /// Which row of the statement (0-based), where the server tells.
    pub row: Option<usize>,
    /// The column the server named, if it named one.
    pub column: Option<String>,
    /// The server's detail (`Key (id)=(7) already exists.`), if it gave one.
    pub detail: Option<String>,
    /// The server's message.
    pub reason: String,
}

/// An error and its causes (as `anyhow::Error::chain` gives them) as one line, each
/// said once: a cause whose text the line already holds (a wrapper that shows its
/// cause, as most of rowshift's errors do) is left out, and so are the driver's repeats
/// of a server message and PostgreSQL's source line.
pub fn chain_text<'a>(
    chain: impl IntoIterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> String {
    let mut text = String::new();
    // The server's error under a driver's `Database` error repeats it.
    let mut repeat = false;
    for c in chain {
        if std::mem::take(&mut repeat) {
            continue;
        }
        let said = match c.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Database(db)) => {
                repeat = true;
                if text.contains(db.message()) {
                    continue;
                }
                db.to_string()
            }
            Some(e) => e.to_string(),
            None => c.to_string(),
        };
        let said = said.trim();
        // A server message as PostgreSQL's error type shows it, with its source line,
        // repeats the text already said without it.
        let bare = said
            .rsplit_once(" at line ")
            .filter(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .map_or(said, |(m, _)| m);
        if said.is_empty() || text.contains(said) || text.contains(bare) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(said);
    }
    text
}

/// Whether an I/O error is a full disk (ENOSPC, or a quota: EDQUOT).
fn io_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(28 | 122))
}

/// What a full disk's message adds: that it is not the data, and how to go on.
fn full_hint(e: &Error) -> &'static str {
    if e.is_disk_full() {
        " (the disk is full: free space, then run again; the run resumes where it stopped)"
    } else {
        ""
    }
}

/// A row the target refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The row's place among the rows the chunk sent, counted across its batches.
    pub row: usize,
    /// The column the server named, if it named one.
    pub column: Option<String>,
    /// The server's detail (`Key (id)=(7) already exists.`), if it gave one.
    pub detail: Option<String>,
    /// The server's message.
    pub reason: String,
}

/// At most this share (1 in N) of a chunk's rows, but at least [`MIN_REFUSED`], are
/// found one by one; past it the chunk fails with [`Error::RefusedChunk`].
pub const MAX_REFUSED_SHARE: usize = 10;

/// The fewest refused rows a chunk may have before the search gives up, whatever its
/// size (a small chunk of a table with a few duplicates still quarantines them).
pub const MIN_REFUSED: usize = 100;

#[cfg(test)]
mod tests {
    #[derive(Debug)]
    struct Leaf(&'static str);
    impl std::fmt::Display for Leaf {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Leaf {}

    #[derive(Debug)]
    struct Wrap(&'static str, Leaf);
    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Wrap {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.1)
        }
    }

    #[test]
    fn each_cause_is_said_once_and_without_a_server_source_line() {
        let e = Wrap(
            "t.items: canceling statement due to lock timeout",
            Leaf("canceling statement due to lock timeout at line 3312"),
        );
        let chain = std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        });
        assert_eq!(
            super::chain_text(chain),
            "t.items: canceling statement due to lock timeout"
        );
        let e = Wrap("cannot write t.db", Leaf("disk I/O error"));
        let chain = std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        });
        assert_eq!(
            super::chain_text(chain),
            "cannot write t.db: disk I/O error"
        );
    }
}
