//! Rows a database target refuses: a constraint of the table (primary key, unique,
//! check, foreign key, not null), a trigger that raises, a value the column cannot hold.
//!
//! One such row used to fail its whole chunk. Now the sink finds every refused row of
//! the chunk, each with the server's reason, and reports them as [`Error::Refused`]; the
//! run puts them in the quarantine and commits the chunk again without them. Finding
//! them happens in a transaction of its own that is rolled back, each attempt under a
//! savepoint: the rows up to the refused one are written again (a row later in the
//! chunk may depend on them, a duplicate key for one), and where the server does not
//! say which row it refused (a foreign key checked at the end of the statement, a
//! multi-row `INSERT`), the rows are halved until it is one.

use std::ops::Range;

use arrow::record_batch::RecordBatch;

use crate::{Error, Result};

/// How the reason of a refused row begins in the quarantine: `verify` does not expect
/// those rows in the target.
pub const REFUSED: &str = "the target refused the row: ";

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

/// What a refusal error says: the server's words and, where it tells, which row of the
/// statement (0-based) it refused.
#[derive(Debug)]
struct Refused {
    row: Option<usize>,
    column: Option<String>,
    detail: Option<String>,
    reason: String,
}

/// Whether `e` is the server refusing a row rather than the statement, the connection
/// or the table failing: PostgreSQL's data exceptions (class 22), integrity constraint
/// violations (class 23) and `RAISE EXCEPTION` (P0001); MySQL's SQLSTATE classes 22 and
/// 23, `SIGNAL SQLSTATE '45000'` and MySQL 8's failed CHECK and incorrect values;
/// SQLite's constraint failures and datatype mismatches.
pub fn is_refusal(e: &Error) -> bool {
    refused(e).is_some()
}

fn refused(e: &Error) -> Option<Refused> {
    let Error::Database {
        source: sqlx::Error::Database(db),
        ..
    } = e
    else {
        return None;
    };
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        let code = pg.code();
        if !(code.starts_with("22") || code.starts_with("23") || code == "P0001") {
            return None;
        }
        return Some(Refused {
            row: pg.r#where().and_then(copy_line),
            column: pg.column().map(str::to_string),
            detail: pg.detail().map(str::to_string),
            reason: pg.message().to_string(),
        });
    }
    if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        let code = my.code().unwrap_or_default();
        // MySQL 8 reports a failed CHECK (3819) and a value its column cannot take
        // (1366 incorrect value, 1292 truncated value, 1265 data truncated) as HY000.
        let value = matches!(my.number(), 3819 | 1366 | 1292 | 1265);
        if !(code.starts_with("22") || code.starts_with("23") || code == "45000" || value) {
            return None;
        }
        return Some(Refused {
            row: None,
            column: None,
            detail: None,
            reason: my.message().to_string(),
        });
    }
    // SQLite, through sqlx or the raw handle: the extended result code, whose low byte
    // is the primary one: 19 is SQLITE_CONSTRAINT (unique, check, not null, foreign key,
    // RAISE(ABORT) in a trigger), 20 SQLITE_MISMATCH (a STRICT table's column type).
    let code: u32 = db.code()?.parse().ok()?;
    if !matches!(code & 0xff, 19 | 20) {
        return None;
    }
    Some(Refused {
        row: None,
        column: None,
        detail: None,
        reason: db.message().to_string(),
    })
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

/// Rows `range` of `batches`, counted across them, as slices (nothing is copied).
pub fn slice_rows(batches: &[RecordBatch], range: Range<usize>) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut start = 0;
    for b in batches {
        let end = start + b.num_rows();
        let (from, to) = (range.start.max(start), range.end.min(end));
        if from < to {
            out.push(b.slice(from - start, to - from));
        }
        start = end;
    }
    out
}

/// What to return after writing `batches` in `failed` failed with `first`: `first`
/// itself, unless it is a refusal; then `failed` is rolled back and every row the table
/// refuses is found, as [`Error::Refused`] (or the error that stopped the search). The
/// search runs in a transaction of `pool` that is rolled back too: `prepare` does there
/// what the write did first (`replace-chunk`'s delete), `write` writes some of the rows
/// as the sink does.
pub async fn refusals<DB: sqlx::Database>(
    failed: sqlx::Transaction<'_, DB>,
    pool: &sqlx::Pool<DB>,
    here: &str,
    batches: &[RecordBatch],
    first: Error,
    prepare: impl AsyncFnOnce(&mut DB::Connection) -> Result<()>,
    mut write: impl AsyncFnMut(&mut DB::Connection, &[RecordBatch]) -> Result<()>,
) -> Error
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    if !is_refusal(&first) {
        return first;
    }
    let db = |e| Error::db(here, e);
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    let found = async {
        failed.rollback().await.map_err(db)?;
        let mut tx = pool.begin().await.map_err(db)?;
        prepare(&mut tx).await?;
        // One savepoint, released after each attempt: sqlx's nested transactions roll
        // back to a savepoint without releasing it, and thousands of attempts would
        // nest as deep (PostgreSQL slows down past 64 subtransactions).
        let found = find_refused(rows, first, async |range| {
            sqlx::raw_sql("SAVEPOINT rowshift_refusal")
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            let wrote = write(&mut tx, &slice_rows(batches, range)).await;
            if wrote.is_err() {
                sqlx::raw_sql("ROLLBACK TO SAVEPOINT rowshift_refusal")
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
            sqlx::raw_sql("RELEASE SAVEPOINT rowshift_refusal")
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            wrote
        })
        .await?;
        tx.rollback().await.map_err(db)?;
        Ok::<_, Error>(found)
    };
    match found.await {
        Ok(found) => Error::Refused(found),
        Err(e) => e,
    }
}

/// Finds every row of `rows` the target refuses. `write` writes a range of them under a
/// savepoint it rolls back when the write fails, and returns the write's error. Ranges
/// are written in order, so the first of two rows with the same key is the one kept.
///
/// `first` is the error that made the caller look: when the rows cannot be told apart
/// from the statement (no row is refused on its own, or every row is, which says more
/// about the table than the rows), that error is returned instead of refusals.
async fn find_refused(
    rows: usize,
    first: Error,
    write: impl AsyncFnMut(Range<usize>) -> Result<()>,
) -> Result<Vec<Refusal>> {
    find_with(rows, first, write, refused).await
}

/// [`find_refused`] with the errors read by `refused`.
async fn find_with(
    rows: usize,
    first: Error,
    mut write: impl AsyncFnMut(Range<usize>) -> Result<()>,
    refused: impl Fn(&Error) -> Option<Refused>,
) -> Result<Vec<Refusal>> {
    let mut found = Vec::new();
    // A stack of ranges still to write; the earliest on top.
    let mut todo = Vec::new();
    todo.push(0..rows);
    while let Some(range) = todo.pop() {
        if range.is_empty() {
            continue;
        }
        let Err(e) = write(range.clone()).await else {
            continue;
        };
        let Some(why) = refused(&e) else {
            return Err(e);
        };
        let at = why
            .row
            .map(|r| range.start + r)
            .filter(|r| range.contains(r));
        match at.or((range.len() == 1).then_some(range.start)) {
            Some(row) => {
                found.push(Refusal {
                    row,
                    column: why.column,
                    detail: why.detail,
                    reason: why.reason,
                });
                todo.push(row + 1..range.end);
                todo.push(range.start..row);
            }
            None => {
                let mid = range.start + range.len() / 2;
                todo.push(mid..range.end);
                todo.push(range.start..mid);
            }
        }
    }
    if found.is_empty() || (found.len() == rows && rows > 1) {
        return Err(first);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

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

    fn batch(ids: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ids.to_vec()))]).unwrap()
    }

    fn ids(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                a.values().to_vec()
            })
            .collect()
    }

    #[test]
    fn rows_are_sliced_across_batches() {
        let batches = [batch(&[0, 1, 2]), batch(&[3]), batch(&[4, 5, 6])];
        assert_eq!(ids(&slice_rows(&batches, 2..5)), vec![2, 3, 4]);
        assert_eq!(ids(&slice_rows(&batches, 0..7)), vec![0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(ids(&slice_rows(&batches, 6..7)), vec![6]);
        assert!(slice_rows(&batches, 3..3).is_empty());
        assert_eq!(slice_rows(&batches, 2..5).len(), 3);
    }

    /// A table in a transaction: rows `bad` are refused, and so is a row whose key is
    /// already written (`keys`); a failed write leaves nothing of its range. With `lines`
    /// the error names the refused row of the write, as PostgreSQL's `COPY` does.
    fn table_finds(rows: usize, keys: &[u32], bad: &[usize], lines: bool) -> Result<Vec<usize>> {
        let mut table: Vec<u32> = Vec::new();
        let mut writes = 0;
        let found = futures::executor::block_on(find_with(
            rows,
            Error::Internal("first".into()),
            async |range: Range<usize>| {
                writes += 1;
                let before = table.len();
                for (i, row) in range.clone().enumerate() {
                    if bad.contains(&row) || table.contains(&keys[row]) {
                        table.truncate(before);
                        let line = if lines {
                            format!("{}", i + 1)
                        } else {
                            "-".into()
                        };
                        return Err(Error::Check(line));
                    }
                    table.push(keys[row]);
                }
                Ok(())
            },
            |e| match e {
                Error::Check(line) => Some(Refused {
                    row: line.parse::<usize>().ok().map(|l| l - 1),
                    column: None,
                    detail: None,
                    reason: format!("refused at {line}"),
                }),
                _ => None,
            },
        ))?;
        assert!(writes <= 4 * rows, "{writes} writes for {rows} rows");
        Ok(found.into_iter().map(|r| r.row).collect())
    }

    #[test]
    fn every_refused_row_is_found_in_order_whether_or_not_the_server_names_it() {
        let keys: Vec<u32> = (0..20).collect();
        for lines in [true, false] {
            assert_eq!(
                table_finds(20, &keys, &[3, 11, 19], lines).unwrap(),
                vec![3, 11, 19]
            );
            assert_eq!(table_finds(20, &keys, &[0], lines).unwrap(), vec![0]);
            // A duplicate key: the first of the two rows stays, the later is refused,
            // because the rows before it are written again before it is tried.
            let mut dup = keys.clone();
            dup[14] = 5;
            dup[15] = 5;
            assert_eq!(table_finds(20, &dup, &[], lines).unwrap(), vec![14, 15]);
        }
    }

    #[test]
    fn no_refusal_or_every_row_refused_returns_the_first_error() {
        let keys: Vec<u32> = (0..6).collect();
        let all: Vec<usize> = (0..6).collect();
        for lines in [true, false] {
            let e = table_finds(6, &keys, &all, lines).unwrap_err();
            assert_eq!(
                e.to_string(),
                "internal error (this is a bug in rowshift): first"
            );
            let e = table_finds(6, &keys, &[], lines).unwrap_err();
            assert_eq!(
                e.to_string(),
                "internal error (this is a bug in rowshift): first"
            );
        }
        assert_eq!(table_finds(1, &[7], &[0], false).unwrap(), vec![0]);
    }
}
