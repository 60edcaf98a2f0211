//! What PostgreSQL's error codes mean to a run: which errors are worth retrying, which
//! say the disk is full, and which refuse a row rather than the statement.

use crate::Error;
use crate::error::{DbErrorKind, RefusedRow};

/// A PostgreSQL error at `location` (already redacted), classified by its SQLSTATE.
pub(crate) fn error(location: impl Into<String>, source: sqlx::Error) -> Error {
    let Some(pg) = pg_error(&source) else {
        return Error::db(location, source);
    };
    let code = pg.code();
    let kind = DbErrorKind {
        // Serialization failure, deadlock, lock timeout; the connection failed, or the
        // server is shutting down or starting up.
        transient: matches!(
            code,
            "40001" | "40P01" | "55P03" | "08000" | "08003" | "08006" | "57P01" | "57P02" | "57P03"
        ),
        disk_full: code == "53100",
        // Data exceptions (class 22), integrity constraint violations (class 23) and
        // `RAISE EXCEPTION` (P0001).
        refused: (code.starts_with("22") || code.starts_with("23") || code == "P0001").then(|| {
            RefusedRow {
                row: pg.r#where().and_then(copy_line),
                column: pg.column().map(str::to_string),
                detail: pg.detail().map(str::to_string),
                reason: pg.message().to_string(),
            }
        }),
        said: Some(pg.message().to_string()),
    };
    Error::db_kind(location, source, kind)
}

fn pg_error(e: &sqlx::Error) -> Option<&sqlx::postgres::PgDatabaseError> {
    match e {
        sqlx::Error::Database(db) => db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>(),
        _ => None,
    }
}

/// The row of a `COPY` that PostgreSQL names in an error's context (`COPY t, line 3` or
/// `COPY t, line 3, column qty: "x"`), 0-based. The last `, line ` is taken: a table name
/// may hold those words too.
fn copy_line(context: &str) -> Option<usize> {
    let first = context.lines().next()?;
    if !first.starts_with("COPY ") {
        return None;
    }
    let at = first.rfind(", line ")? + ", line ".len();
    let digits: String = first[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse::<usize>().ok()?.checked_sub(1)
}

#[cfg(test)]
mod tests {
    use super::copy_line;

    #[test]
    fn the_copy_line_is_read_from_the_context() {
        assert_eq!(copy_line("COPY t, line 3"), Some(2));
        assert_eq!(copy_line("COPY t, line 12, column qty: \"x\""), Some(11));
        assert_eq!(
            copy_line("COPY my, line 9 table, line 4: \"4,-1\""),
            Some(3)
        );
        assert_eq!(copy_line("SQL statement \"SELECT 1\""), None);
        assert_eq!(copy_line("COPY t, line 0"), None);
    }
}
