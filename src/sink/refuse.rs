//! Rows a database target refuses: a constraint of the table (primary key, unique,
//! check, foreign key, not null), a trigger that raises, a value the column cannot hold.
//!
//! One such row used to fail its whole chunk. Now the sink finds the refused rows of the
//! chunk, each with the server's reason, and reports them as [`Error::Refused`]; the run
//! puts them in the quarantine and commits the chunk again without them. Finding them
//! happens in a transaction of its own that is rolled back, each attempt under a
//! savepoint. The rows are written in order from a cursor, in a window that doubles
//! after each write that passes and halves after each that fails, down to one row (or
//! up to the row the server names, as PostgreSQL's `COPY` does): the rows before a
//! refused one are written before it is tried (a later row may depend on them, a
//! duplicate key for one), and no write resends more rows than the window holds.
//!
//! The search is bounded. When more than a share of the chunk is refused, or every row
//! tried is, all of it or past its first hundred rows, the table refuses the chunk rather than some rows (an
//! `append` into a table that holds those keys, a CHECK no row passes, another run
//! writing the same rows): the search stops with [`Error::RefusedChunk`], naming the
//! first refused rows and the server's reason. It also stops, between two writes, when
//! the run is interrupted (see [`crate::runtime::cancel_requested`]).

use std::ops::Range;

use arrow::record_batch::RecordBatch;

use crate::error::RefusedRow;
pub use crate::error::{MAX_REFUSED_SHARE, MIN_REFUSED, Refusal};
use crate::{Error, Result};

/// How the reason of a refused row begins in the quarantine: `verify` does not expect
/// those rows in the target.
pub const REFUSED: &str = "the target refused the row: ";

/// Whether `e` is the server refusing a row rather than the statement, the connection
/// or the table failing (as the database's own code classified it: see
/// [`crate::error::DbErrorKind::refused`]).
pub fn is_refusal(e: &Error) -> bool {
    refused(e).is_some()
}

fn refused(e: &Error) -> Option<RefusedRow> {
    match e {
        Error::Database { kind, .. } => kind.refused.clone(),
        _ => None,
    }
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

/// Refused rows named in [`Error::RefusedChunk`].
const NAMED: usize = 3;

/// What to return after writing `batches` in `failed` failed with `first`: `first`
/// itself, unless it is a refusal; then `failed` is rolled back and the rows the table
/// refuses are found, as [`Error::Refused`], or [`Error::RefusedChunk`] past the bound,
/// or the error that stopped the search. The search runs in a transaction of `pool`
/// that is rolled back too: `prepare` does there what the write did first
/// (`replace-chunk`'s delete), `write` writes some of the rows as the sink does. `key`
/// (target columns, may be empty) names rows in messages.
#[allow(clippy::too_many_arguments)]
pub async fn refusals<DB: sqlx::Database>(
    failed: sqlx::Transaction<'_, DB>,
    pool: &sqlx::Pool<DB>,
    here: &str,
    error: fn(String, sqlx::Error) -> Error,
    batches: &[RecordBatch],
    key: &[String],
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
    let db = |e| error(here.to_string(), e);
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    let found = async {
        failed.rollback().await.map_err(db)?;
        let mut tx = pool.begin().await.map_err(db)?;
        prepare(&mut tx).await?;
        // One savepoint, released after each attempt: sqlx's nested transactions roll
        // back to a savepoint without releasing it, and thousands of attempts would
        // nest as deep (PostgreSQL slows down past 64 subtransactions).
        let found = find_with(
            rows,
            first,
            async |range| {
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
            },
            refused,
            crate::runtime::cancel_requested,
        )
        .await;
        // Dropping a transaction only queues its rollback; an explicit one ends it
        // before the chunk's failure is reported, so no backend stays idle in it.
        let ended = tx.rollback().await.map_err(db);
        let found = found?;
        ended?;
        Ok::<_, Error>(found)
    };
    match found.await {
        Ok(found) => Error::Refused(found),
        Err(Error::RefusedChunk {
            rows,
            tried,
            refused,
            first,
            ..
        }) => Error::RefusedChunk {
            rows,
            tried,
            named: first
                .iter()
                .map(|r| row_name(batches, key, r.row))
                .collect(),
            refused,
            first,
        },
        Err(e) => e,
    }
}

/// A row of `batches` for a message: its place among the rows sent and its key (or, with
/// no key, its first columns) as `(id=7)`.
fn row_name(batches: &[RecordBatch], key: &[String], row: usize) -> String {
    let Some(b) = slice_rows(batches, row..row + 1).into_iter().next() else {
        return format!("row {}", row + 1);
    };
    let schema = b.schema();
    let columns: Vec<usize> = if key.is_empty() {
        (0..schema.fields().len().min(3)).collect()
    } else {
        key.iter().filter_map(|k| schema.index_of(k).ok()).collect()
    };
    let values: Vec<String> = columns
        .iter()
        .map(|&c| {
            let v = crate::transform::cell_text(&b, c, 0)
                .map_or("NULL".to_string(), |v| crate::types::quote_value(&v));
            format!("{}={v}", schema.field(c).name())
        })
        .collect();
    format!("row {} ({})", row + 1, values.join(", "))
}

/// Finds the rows of `rows` the target refuses (read by `refused` from `write`'s
/// errors). `write` writes a range of them under a savepoint it rolls back when the
/// write fails, and returns the write's error. Ranges are written in order from a
/// cursor, so the first of two rows with the same key is the one kept.
///
/// `first` is the error that made the caller look: when no row is refused on its own
/// (the statement, not a row, failed), it is returned. Past [`MAX_REFUSED_SHARE`] of
/// the rows, or when every row tried is refused, all of them or more than
/// [`MIN_REFUSED`], the search stops with
/// [`Error::RefusedChunk`]; when `cancelled` says so, with [`Error::Cancelled`].
async fn find_with(
    rows: usize,
    first: Error,
    mut write: impl AsyncFnMut(Range<usize>) -> Result<()>,
    refused: impl Fn(&Error) -> Option<RefusedRow>,
    cancelled: impl Fn() -> bool,
) -> Result<Vec<Refusal>> {
    let limit = (rows / MAX_REFUSED_SHARE).max(MIN_REFUSED);
    let mut found: Vec<Refusal> = Vec::new();
    let mut at = 0;
    let mut window = rows.max(1);
    while at < rows {
        if cancelled() {
            return Err(Error::Cancelled(format!(
                "looking for the rows the target refuses ({} found in the first {at} of {rows})",
                found.len()
            )));
        }
        let end = at + window.min(rows - at);
        let Err(e) = write(at..end).await else {
            at = end;
            window = window.saturating_mul(2);
            continue;
        };
        let Some(why) = refused(&e) else {
            return Err(e);
        };
        let named = why.row.map(|r| at + r).filter(|r| (at..end).contains(r));
        if named == Some(at) || end - at == 1 {
            found.push(Refusal {
                row: at,
                column: why.column,
                detail: why.detail,
                reason: why.reason,
            });
            at += 1;
            window = (window / 2).max(1);
            // Every row so far refused, the whole chunk or past the first
            // [`MIN_REFUSED`]: the table refuses the chunk. (Each attempt is a
            // subtransaction, and PostgreSQL slows down as thousands of them pile up
            // in one transaction, so this is where a search must not go on.)
            let all_so_far = rows > 1 && found.len() == at;
            if found.len() > limit || (all_so_far && (at == rows || at > MIN_REFUSED)) {
                return Err(Error::RefusedChunk {
                    rows,
                    tried: at,
                    refused: found.len(),
                    named: Vec::new(),
                    first: found.into_iter().take(NAMED).collect(),
                });
            }
        } else if let Some(row) = named {
            // The rows before the one named go first, on their own.
            window = row - at;
        } else {
            window = ((end - at) / 2).max(1);
        }
    }
    if found.is_empty() {
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
    /// Returns the rows found and the writes and rows sent it took.
    fn table_finds(
        rows: usize,
        keys: &[u32],
        bad: &[usize],
        lines: bool,
    ) -> (Result<Vec<usize>>, usize, usize) {
        let mut table: Vec<u32> = Vec::new();
        let (mut writes, mut sent) = (0, 0);
        let found = futures::executor::block_on(find_with(
            rows,
            Error::Internal("first".into()),
            async |range: Range<usize>| {
                writes += 1;
                sent += range.len();
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
                Error::Check(line) => Some(RefusedRow {
                    row: line.parse::<usize>().ok().map(|l| l - 1),
                    column: None,
                    detail: None,
                    reason: format!("refused at {line}"),
                }),
                _ => None,
            },
            || false,
        ));
        (
            found.map(|f| f.into_iter().map(|r| r.row).collect()),
            writes,
            sent,
        )
    }

    #[test]
    fn every_refused_row_is_found_in_order_whether_or_not_the_server_names_it() {
        let keys: Vec<u32> = (0..20).collect();
        for lines in [true, false] {
            let found = |bad: &[usize]| table_finds(20, &keys, bad, lines).0.unwrap();
            assert_eq!(found(&[3, 11, 19]), vec![3, 11, 19]);
            assert_eq!(found(&[0]), vec![0]);
            // A duplicate key: the first of the two rows stays, the later is refused,
            // because the rows before it are written again before it is tried.
            let mut dup = keys.clone();
            dup[14] = 5;
            dup[15] = 5;
            assert_eq!(table_finds(20, &dup, &[], lines).0.unwrap(), vec![14, 15]);
        }
    }

    #[test]
    fn no_refusal_returns_the_first_error_and_one_refused_row_of_one_is_found() {
        for lines in [true, false] {
            let e = table_finds(6, &[0, 1, 2, 3, 4, 5], &[], lines)
                .0
                .unwrap_err();
            assert_eq!(
                e.to_string(),
                "internal error (this is a bug in rowshift): first"
            );
        }
        assert_eq!(table_finds(1, &[7], &[0], false).0.unwrap(), vec![0]);
    }

    #[test]
    fn the_search_is_bounded_in_writes_and_rows_sent() {
        // 50,000 rows, one in 50 refused (under the share): every one found, in a
        // number of writes near the refusals' and rows sent near n log n, never the
        // quadratic resending of every remaining row per refusal.
        let n = 50_000;
        let keys: Vec<u32> = (0..n as u32).collect();
        let bad: Vec<usize> = (0..n).filter(|r| r % 50 == 7).collect();
        for lines in [true, false] {
            let (found, writes, sent) = table_finds(n, &keys, &bad, lines);
            assert_eq!(found.unwrap(), bad);
            assert!(writes <= 20 * bad.len(), "{writes} writes, lines {lines}");
            assert!(sent <= 20 * n, "{sent} rows sent, lines {lines}");
        }
    }

    #[test]
    fn a_chunk_whose_every_row_is_refused_fails_after_a_bounded_search() {
        let n = 50_000;
        let keys: Vec<u32> = (0..n as u32).collect();
        let all: Vec<usize> = (0..n).collect();
        for lines in [true, false] {
            let (found, writes, sent) = table_finds(n, &keys, &all, lines);
            let Err(Error::RefusedChunk {
                rows,
                tried,
                refused,
                first,
                ..
            }) = found
            else {
                panic!("{found:?}");
            };
            assert_eq!((rows, tried, refused), (n, 101, 101));
            assert_eq!(first.iter().map(|r| r.row).collect::<Vec<_>>(), [0, 1, 2]);
            assert_eq!(
                first[0].reason,
                if lines {
                    "refused at 1"
                } else {
                    "refused at -"
                }
            );
            assert!(writes <= 101 + 20, "{writes} writes");
            assert!(sent <= 3 * n, "{sent} rows sent");
        }
        // One row in 5 refused, spread out: past 1 in 10, the search stops there.
        let bad: Vec<usize> = (0..n).filter(|r| r % 5 == 0).collect();
        let (found, writes, _) = table_finds(n, &keys, &bad, true);
        assert!(
            matches!(found, Err(Error::RefusedChunk { refused: 5_001, .. })),
            "{found:?}"
        );
        assert!(writes <= 4 * 5_001, "{writes} writes");
        // A small chunk refused whole fails; one with a row that passes does not.
        let (found, _, _) = table_finds(6, &[0, 1, 2, 3, 4, 5], &[0, 1, 2, 3, 4, 5], false);
        assert!(
            matches!(
                found,
                Err(Error::RefusedChunk {
                    rows: 6,
                    tried: 6,
                    refused: 6,
                    ..
                })
            ),
            "{found:?}"
        );
        let (found, _, _) = table_finds(4, &[0, 1, 2, 3], &[0, 1, 3], true);
        assert_eq!(found.unwrap(), vec![0, 1, 3]);
    }

    #[test]
    fn the_search_stops_when_the_run_is_cancelled() {
        let writes = std::cell::Cell::new(0);
        let found = futures::executor::block_on(find_with(
            1_000,
            Error::Internal("first".into()),
            async |_range: Range<usize>| {
                writes.set(writes.get() + 1);
                Err(Error::Check("-".into()))
            },
            |_| {
                Some(RefusedRow {
                    row: None,
                    column: None,
                    detail: None,
                    reason: "no".into(),
                })
            },
            || writes.get() >= 3,
        ));
        assert_eq!(
            found.unwrap_err().to_string(),
            "interrupted while looking for the rows the target refuses (0 found in the first 0 of 1000); nothing of the chunk was committed, and the next run redoes it"
        );
        assert_eq!(writes.get(), 3);
    }
}
