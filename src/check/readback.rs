//! Read-back verification: what landed in the target, read back, must be what was sent.
//!
//! The comparison is a row count and the order-independent [`checksum`] of the rows, so
//! it costs one vectorised hash per column. Only when they differ are the rows compared
//! one by one, to name the first row and column that differ.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arrow::record_batch::RecordBatch;

use super::checksum;
use crate::chunk::{Chunk, Selection};
use crate::types::cast::value_text;
use crate::types::quote_value;
use crate::{Error, Result};

/// Keys per `IN (...)` lookup when reading a chunk back by its keys.
pub const KEYS_PER_QUERY: usize = 10_000;

/// What a chunk sent to the target, to compare the read-back with.
pub struct ReadBack<'a> {
    /// The chunk.
    pub chunk: &'a Chunk,
    /// Rows sent.
    pub rows: u64,
    /// [`checksum`] of the rows sent.
    pub checksum: u64,
    /// The rows sent, to find the first difference.
    pub sent: &'a [RecordBatch],
    /// The target columns that name rows in messages (none: rows are named by position).
    pub key: &'a [String],
    /// Which target rows are the chunk's.
    pub selection: Selection,
    /// Adds the nanoseconds spent reading back and comparing: the chunk's own counter,
    /// which the run adds to its total.
    pub nanos: &'a AtomicU64,
}

impl ReadBack<'_> {
    /// Seconds counted so far on [`ReadBack::nanos`]: a chunk's read-back time, when the
    /// run gives each chunk a counter of its own.
    pub fn seconds(&self) -> f64 {
        self.nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// Counts time spent on a read-back that a sink settled on its own (a check on the
    /// stored values that matched), for the summary.
    pub fn passed(&self, started: Instant) {
        self.nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// Compares the rows read back (`back`, whose reading began at `started`) with what
    /// was sent. The error names the first row and column that differ.
    pub fn verify(&self, back: &[RecordBatch], started: Instant) -> Result<()> {
        let out = compare(
            self.chunk,
            (self.rows, self.checksum, self.sent),
            back,
            self.key,
        )
        .map_err(Error::Check);
        self.nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }
}

impl ReadBack<'_> {
    /// This read-back with `sent` as the rows sent: the same rows in the form the target
    /// gives them back in (see `Sink::as_read_back`).
    pub fn as_sent<'b>(&'b self, sent: &'b [RecordBatch]) -> Result<ReadBack<'b>> {
        let (rows, checksum) = count_and_sum(sent)?;
        Ok(ReadBack {
            chunk: self.chunk,
            rows,
            checksum,
            sent,
            key: self.key,
            selection: self.selection.clone(),
            nanos: self.nanos,
        })
    }

    /// As [`Self::verify`], for rows written beside rows that already stood under the
    /// same keys (`there`, read in the same transaction before the write: a retry under
    /// a key that is not unique): the target must hold those and the rows sent.
    pub fn verify_beside(
        &self,
        there: &[RecordBatch],
        back: &[RecordBatch],
        started: Instant,
    ) -> Result<()> {
        let (rows, sum) = count_and_sum(there)?;
        let mut expected = there.to_vec();
        expected.extend(self.sent.iter().cloned());
        let out = compare(
            self.chunk,
            (self.rows + rows, self.checksum.wrapping_add(sum), &expected),
            back,
            self.key,
        )
        .map_err(Error::Check);
        self.nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }
}

/// The count and checksum of `batches`.
pub fn count_and_sum(batches: &[RecordBatch]) -> Result<(u64, u64)> {
    let mut rows = 0;
    let mut sum = 0u64;
    for b in batches {
        rows += b.num_rows() as u64;
        sum = sum.wrapping_add(checksum(b)?);
    }
    Ok((rows, sum))
}

/// Compares the expected rows with those found; `Err` describes the first difference.
pub fn compare(
    chunk: &Chunk,
    expected: (u64, u64, &[RecordBatch]),
    found: &[RecordBatch],
    key: &[String],
) -> Result<(), String> {
    compare_what(&chunk.to_string(), expected, found, key)
}

/// [`compare`] for rows that are not one chunk's; `what` names them in the message.
pub fn compare_what(
    what: &str,
    (rows, sum, sent): (u64, u64, &[RecordBatch]),
    found: &[RecordBatch],
    key: &[String],
) -> Result<(), String> {
    let (back_rows, back_sum) = count_and_sum(found).map_err(|e| e.to_string())?;
    if back_rows == rows && back_sum == sum {
        return Ok(());
    }
    let detail = first_difference(sent, found, key)
        .unwrap_or_else(|| "the rows differ, but no single row could be named".into());
    Err(format!(
        "{what}: the target does not hold what was written: {rows} rows sent (checksum {sum:016x}), {back_rows} found (checksum {back_sum:016x}); first difference: {detail}"
    ))
}

/// A row as (its key named, `id=7` or `tenant=1, id=7`; cell texts).
type RowText = (Option<String>, Vec<Option<String>>);

fn rows_of(batches: &[RecordBatch], key: &[String]) -> (Vec<String>, Vec<RowText>) {
    let names = batches
        .first()
        .map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for b in batches {
        let k: Option<Vec<usize>> = key.iter().map(|k| b.schema().index_of(k).ok()).collect();
        let k = k.filter(|k| !k.is_empty());
        for row in 0..b.num_rows() {
            let cells: Vec<Option<String>> = b
                .columns()
                .iter()
                .map(|c| value_text(c.as_ref(), row))
                .collect();
            let label = k.as_ref().map(|k| {
                k.iter()
                    .map(|&i| {
                        let v = cells[i].as_deref().unwrap_or("NULL");
                        format!("{}={v}", names_of(b, i))
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            out.push((label, cells));
        }
    }
    (names, out)
}

fn names_of(b: &RecordBatch, i: usize) -> String {
    b.schema().field(i).name().clone()
}

/// Names the first row (by key, else by position) and column where `sent` and `found`
/// differ.
pub fn first_difference(
    sent: &[RecordBatch],
    found: &[RecordBatch],
    key: &[String],
) -> Option<String> {
    let (names_s, sent_rows) = rows_of(sent, key);
    let (names_f, found_rows) = rows_of(found, key);
    let names = if names_s.is_empty() { names_f } else { names_s };
    let show = |v: &Option<String>| v.as_deref().map_or("NULL".to_string(), quote_value);
    let cell_diff = |label: String, a: &[Option<String>], b: &[Option<String>]| {
        a.iter()
            .zip(b)
            .enumerate()
            .find(|(_, (x, y))| x != y)
            .map(|(i, (x, y))| {
                format!(
                    "{label}, column {}: sent {}, the target holds {}",
                    names.get(i).map_or("?", |s| s.as_str()),
                    show(x),
                    show(y)
                )
            })
    };
    match key {
        [_, ..] => {
            let mut found_by_key: HashMap<&str, Vec<&Vec<Option<String>>>> = HashMap::new();
            for (kt, cells) in &found_rows {
                found_by_key
                    .entry(kt.as_deref().unwrap_or(""))
                    .or_default()
                    .push(cells);
            }
            for (kt, cells) in &sent_rows {
                let kt = kt.as_deref().unwrap_or("");
                let label = kt.to_string();
                match found_by_key.get(kt).map(Vec::as_slice) {
                    None | Some([]) => return Some(format!("{label}: missing from the target")),
                    Some([one]) => {
                        if let Some(d) = cell_diff(label, cells, one) {
                            return Some(d);
                        }
                    }
                    Some(many) => {
                        return Some(format!(
                            "{label}: the target holds {} rows with this key, 1 was sent",
                            many.len()
                        ));
                    }
                }
            }
            let sent_keys: std::collections::HashSet<&str> = sent_rows
                .iter()
                .map(|(k, _)| k.as_deref().unwrap_or(""))
                .collect();
            found_rows
                .iter()
                .find(|(kt, _)| !sent_keys.contains(kt.as_deref().unwrap_or("")))
                .map(|(kt, _)| {
                    format!(
                        "{}: in the target but not sent",
                        kt.as_deref().unwrap_or("NULL")
                    )
                })
        }
        [] => {
            for (i, ((_, a), (_, b))) in sent_rows.iter().zip(&found_rows).enumerate() {
                if let Some(d) = cell_diff(format!("row {}", i + 1), a, b) {
                    return Some(d);
                }
            }
            (sent_rows.len() != found_rows.len()).then(|| {
                format!(
                    "row {}: {} rows sent, {} found",
                    sent_rows.len().min(found_rows.len()) + 1,
                    sent_rows.len(),
                    found_rows.len()
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::chunk::{ChunkRange, KeyValue};
    use crate::types::ColumnType;

    fn batch(ids: &[i64], names: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(names.to_vec())),
            ],
        )
        .unwrap()
    }

    fn chunk() -> Chunk {
        Chunk {
            id: 3,
            range: ChunkRange::Keys { lo: None, hi: None },
            rows: None,
        }
    }

    fn check(sent: RecordBatch, found: RecordBatch) -> Result<(), String> {
        let (rows, sum) = count_and_sum(std::slice::from_ref(&sent)).unwrap();
        compare(
            &chunk(),
            (rows, sum, &[sent]),
            &[found],
            &["id".to_string()],
        )
    }

    #[test]
    fn equal_rows_in_another_order_pass() {
        assert_eq!(
            check(batch(&[1, 2], &["a", "b"]), batch(&[2, 1], &["b", "a"])),
            Ok(())
        );
    }

    #[test]
    fn a_changed_value_is_named_by_key_and_column() {
        let e = check(batch(&[1, 2], &["a", "Zoë"]), batch(&[1, 2], &["a", "Zo"])).unwrap_err();
        assert!(
            e.ends_with("first difference: id=2, column name: sent 'Zoë', the target holds 'Zo'"),
            "{e}"
        );
        assert!(
            e.starts_with(
                "chunk 3 (all keys): the target does not hold what was written: 2 rows sent"
            ),
            "{e}"
        );
    }

    #[test]
    fn missing_duplicated_and_extra_rows_are_named() {
        let e = check(batch(&[1, 2], &["a", "b"]), batch(&[1], &["a"])).unwrap_err();
        assert!(e.ends_with("id=2: missing from the target"), "{e}");
        let e = check(
            batch(&[1, 2], &["a", "b"]),
            batch(&[1, 2, 2], &["a", "b", "b"]),
        )
        .unwrap_err();
        assert!(
            e.ends_with("id=2: the target holds 2 rows with this key, 1 was sent"),
            "{e}"
        );
        let e = check(batch(&[1], &["a"]), batch(&[1, 9], &["a", "x"])).unwrap_err();
        assert!(e.ends_with("id=9: in the target but not sent"), "{e}");
    }

    #[test]
    fn a_composite_key_names_rows_by_every_part() {
        let (rows, sum) = count_and_sum(&[batch(&[1, 1], &["a", "b"])]).unwrap();
        let key = ["id".to_string(), "name".to_string()];
        let sent = [batch(&[1, 1], &["a", "b"])];
        let e = compare(&chunk(), (rows, sum, &sent), &[batch(&[1], &["a"])], &key).unwrap_err();
        assert!(
            e.ends_with("first difference: id=1, name=b: missing from the target"),
            "{e}"
        );
    }

    #[test]
    fn a_range_fits_only_columns_of_its_parts_types() {
        let range = Selection::Range {
            columns: vec!["t".into(), "n".into()],
            lo: Some(KeyValue::Tuple(vec![
                KeyValue::Int(1),
                KeyValue::Text("x".into()),
            ])),
            hi: None,
        };
        let types = |c: &str| match c {
            "t" => Some(ColumnType::BigInt),
            _ => Some(ColumnType::Text),
        };
        assert!(range.range_fits(types));
        assert!(!range.range_fits(|_| Some(ColumnType::BigInt)));
    }
}
