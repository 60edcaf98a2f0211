//! What MySQL's and MariaDB's errors mean to a run: which are worth retrying, which say
//! the disk is full, and which refuse a row rather than the statement.

use crate::Error;
use crate::error::{DbErrorKind, RefusedRow};

/// A MySQL/MariaDB error at `location` (already redacted), classified by its SQLSTATE
/// and error number.
pub(crate) fn error(location: impl Into<String>, source: sqlx::Error) -> Error {
    let my = match &source {
        sqlx::Error::Database(db) => db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>(),
        _ => None,
    };
    let Some(my) = my else {
        return Error::db(location, source);
    };
    let code = my.code().unwrap_or_default();
    let number = my.number();
    // MySQL 8 reports a failed CHECK (3819) and a value its column cannot take (1366
    // incorrect value, 1292 truncated value, 1265 data truncated) as HY000.
    let value = matches!(number, 3819 | 1366 | 1292 | 1265);
    let kind = DbErrorKind {
        // A lock wait timeout (1205) and a deadlock (1213) have the catch-all SQLSTATE
        // HY000: their numbers tell. 40001 is a serialization failure.
        transient: matches!(number, 1205 | 1213) || code == "40001",
        // 1021 disk full, 1114 table full, 3 and 1030 a write that failed with the OS's
        // error 28 (ENOSPC).
        disk_full: matches!(number, 1021 | 1114)
            || (matches!(number, 3 | 1030) && my.message().contains("28")),
        // SQLSTATE classes 22 and 23, `SIGNAL SQLSTATE '45000'`, and the values above.
        refused: (code.starts_with("22") || code.starts_with("23") || code == "45000" || value)
            .then(|| RefusedRow {
                row: None,
                column: None,
                detail: None,
                reason: my.message().to_string(),
            }),
        said: None,
    };
    Error::db_kind(location, source, kind)
}
