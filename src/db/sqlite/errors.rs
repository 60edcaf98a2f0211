//! What SQLite's result codes mean to a run: which errors are worth retrying, which say
//! the disk is full, and which refuse a row rather than the statement.

use crate::Error;
use crate::error::{DbErrorKind, RefusedRow};

/// A SQLite error at `location` (already redacted), classified by its extended result
/// code, whose low byte is the primary one.
pub(crate) fn error(location: impl Into<String>, source: sqlx::Error) -> Error {
    let found = match &source {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<u32>().ok())
            .map(|code| (code, db.message().to_string())),
        _ => None,
    };
    let Some((code, message)) = found else {
        return Error::db(location, source);
    };
    let kind = DbErrorKind {
        // SQLITE_BUSY (5), SQLITE_LOCKED (6), SQLITE_BUSY_RECOVERY (517).
        transient: matches!(code, 5 | 6 | 517),
        // SQLITE_FULL.
        disk_full: code & 0xff == 13,
        // SQLITE_CONSTRAINT (19: unique, check, not null, foreign key, RAISE(ABORT) in a
        // trigger) and SQLITE_MISMATCH (20: a STRICT table's column type).
        refused: matches!(code & 0xff, 19 | 20).then(|| RefusedRow {
            row: None,
            column: None,
            detail: None,
            reason: message,
        }),
        said: None,
    };
    Error::db_kind(location, source, kind)
}
