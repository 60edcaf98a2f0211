//! The library's error type.

use std::path::PathBuf;

use crate::config::Diagnostics;

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
            write!(f, ", value {}", crate::types::quote_value(value))?;
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
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A database call failed.
    #[error("{location}: {source}")]
    Database {
        /// The redacted URL and table, or the statement's purpose.
        location: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
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
    Refused(Vec<crate::sink::Refusal>),
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

    /// A database error at `location` (already redacted).
    pub fn db(location: impl Into<String>, source: sqlx::Error) -> Self {
        Error::Database {
            location: location.into(),
            source,
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
            Error::Database { source, .. } => match source {
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
                // MySQL's code is the SQLSTATE, and a lock wait timeout's (1205) is the
                // catch-all HY000: its error number tells (1213 is a deadlock).
                sqlx::Error::Database(db)
                    if db
                        .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                        .is_some_and(|my| matches!(my.number(), 1205 | 1213)) =>
                {
                    true
                }
                sqlx::Error::Database(db) => matches!(
                    db.code().as_deref(),
                    // SQLite busy/locked; PostgreSQL and MySQL serialization failure or
                    // deadlock; PostgreSQL lock timeout.
                    Some("5" | "6" | "517" | "40001" | "40P01" | "55P03")
                    // PostgreSQL: the connection failed, or the server is shutting down
                    // or starting up.
                    | Some("08000" | "08003" | "08006" | "57P01" | "57P02" | "57P03")
                ),
                _ => false,
            },
            _ => false,
        }
    }

    /// Whether this error (or the one it wraps) is about the data rather than the
    /// environment: a rejected row or a failed check. The CLI maps these to exit code 1.
    pub fn is_data_failure(&self) -> bool {
        match self {
            Error::Row(_) | Error::Check(_) | Error::RejectLimit(_) | Error::Refused(_) => true,
            Error::Chunk { source, .. } => source.is_data_failure(),
            _ => false,
        }
    }
}

fn refused_text(refused: &[crate::sink::Refusal]) -> String {
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
