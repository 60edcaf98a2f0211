//! A digest of rows as they come back over the binary protocol, and of rows as sent.

use arrow::array::Array;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use sqlx::Row;
use sqlx::mysql::MySqlRow;

use super::MyColumn;
use super::decode::value_bytes;
use super::temporal::civil;
use crate::Result;
use crate::sql::RowDigest;
use crate::sql::hash_bytes;
use crate::types::ColumnType;

/// How rows come back over the binary protocol, for a [`RowDigest`] of them: per column,
/// the byte width integers come back in (`0` for variable-length values and dates).
///
/// For the column types whose returned bytes follow from the value alone (integers of
/// the stored width, booleans, UTF-8 text, binary strings, dates), the rows sent digest
/// ([`RowDigest::add_sent`]) exactly as the rows read back do ([`RowDigest::add_row`]): a
/// hash of each value's bytes (or of NULL), folded in column order into the row's hash.
/// A read-back whose digests match needs no decoding into Arrow, and equal bytes of text
/// prove it valid UTF-8: it was when it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestLayout {
    widths: Vec<usize>,
}

impl DigestLayout {
    /// The layout for columns of these declared types, stored as `stored` (`None` for a
    /// table rowshift creates). `None` when some column comes back as bytes that do not
    /// follow from the value alone: floats, decimals, times and timestamps (whose length
    /// depends on the server), or a stored type other than the created one.
    pub fn new(types: &[ColumnType], stored: Option<&[&MyColumn]>) -> Option<DigestLayout> {
        let mut widths = Vec::with_capacity(types.len());
        for (i, ty) in types.iter().enumerate() {
            let (width, want): (usize, &[&str]) = match ty {
                ColumnType::SmallInt => (2, &["smallint"]),
                ColumnType::Int => (4, &["int"]),
                ColumnType::BigInt => (8, &["bigint"]),
                ColumnType::Boolean => (1, &["tinyint"]),
                ColumnType::Text | ColumnType::Varchar(_) => (
                    0,
                    &["varchar", "tinytext", "text", "mediumtext", "longtext"],
                ),
                ColumnType::Bytes => (
                    0,
                    &["varbinary", "tinyblob", "blob", "mediumblob", "longblob"],
                ),
                ColumnType::Date => (0, &["date"]),
                _ => return None,
            };
            if let Some(stored) = stored {
                let c = stored.get(i)?;
                let text = matches!(ty, ColumnType::Text | ColumnType::Varchar(_));
                // Text in another character set comes back converted.
                let charset_ok =
                    !text || matches!(c.charset.as_deref(), Some("utf8mb4" | "utf8mb3" | "utf8"));
                // An unsigned column of the same width returns the same bytes, but holds
                // no negative value: the server refuses those on insert.
                if !want.contains(&c.data_type.as_str()) || !charset_ok {
                    return None;
                }
            }
            widths.push(width);
        }
        Some(DigestLayout { widths })
    }
}

/// A row's hash before its first value is folded in.
const ROW_START: u64 = 0x6d79_7371_6c72_6f77;
/// The hash of a NULL value.
const NULL_HASH: u64 = 0x6e75_6c6c_0000_0001;

/// Folds the next value's hash into a row's. Each step is a bijection of `row` for a given
/// `value` and of `value` for a given `row`, so changing any one value changes the row's
/// hash, and values that trade columns change it too.
fn fold(row: u64, value: u64) -> u64 {
    (row.rotate_left(23) ^ value).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl RowDigest {
    fn add_hash(&mut self, row: u64) {
        self.rows += 1;
        // The last fold's multiply leaves the low bits weak; mix them before summing.
        self.sum = self.sum.wrapping_add(row ^ (row >> 29));
    }

    /// Adds the rows of `batch` (the written columns, in order) as the server will return
    /// them. `false` (and nothing added) when a column does not arrive as its layout
    /// expects, or holds a date MySQL has no binary form for.
    ///
    /// Column by column over typed arrays, so the sent side costs a tight loop per column
    /// rather than a dynamic call per value.
    pub fn add_sent(&mut self, layout: &DigestLayout, batch: &RecordBatch) -> bool {
        let columns = batch.columns();
        if columns.len() != layout.widths.len() {
            return false;
        }
        let mut rows = vec![ROW_START; batch.num_rows()];
        for (a, width) in columns.iter().zip(&layout.widths) {
            if !fold_sent(&mut rows, a.as_ref(), *width) {
                return false;
            }
        }
        for row in rows {
            self.add_hash(row);
        }
        true
    }

    /// Adds one row read back, its values' bytes as the server returned them.
    pub fn add_row(&mut self, row: &MySqlRow) -> Result<(), String> {
        let mut hash = ROW_START;
        for i in 0..row.len() {
            let value = match value_bytes(row, i)? {
                Some(bytes) => hash_bytes(bytes),
                None => NULL_HASH,
            };
            hash = fold(hash, value);
        }
        self.add_hash(hash);
        Ok(())
    }
}

/// Folds the values of `a` into `rows` (one hash per row) as the server returns them in
/// a column of integer `width` (`0`: not an integer). `false` when `a` does not arrive as
/// such a column's values, or holds a date MySQL has no binary form for.
fn fold_sent(rows: &mut [u64], a: &dyn Array, width: usize) -> bool {
    use arrow::array::AsArray;
    use arrow::datatypes::{Date32Type, Int16Type, Int32Type, Int64Type};
    let nulls = a.logical_nulls();
    match (a.data_type(), width) {
        (DataType::Int16, 2) => {
            let a = a.as_primitive::<Int16Type>();
            fold_each(rows, nulls.as_ref(), |r| {
                Some(hash_bytes(&a.value(r).to_le_bytes()))
            })
        }
        (DataType::Int32, 4) => {
            let a = a.as_primitive::<Int32Type>();
            fold_each(rows, nulls.as_ref(), |r| {
                Some(hash_bytes(&a.value(r).to_le_bytes()))
            })
        }
        (DataType::Int64, 8) => {
            let a = a.as_primitive::<Int64Type>();
            fold_each(rows, nulls.as_ref(), |r| {
                Some(hash_bytes(&a.value(r).to_le_bytes()))
            })
        }
        (DataType::Boolean, 1) => {
            let a = a.as_boolean();
            fold_each(rows, nulls.as_ref(), |r| {
                Some(hash_bytes(&[u8::from(a.value(r))]))
            })
        }
        (DataType::Utf8, 0) => {
            let a = a.as_string::<i32>();
            fold_each(rows, nulls.as_ref(), |r| {
                Some(hash_bytes(a.value(r).as_bytes()))
            })
        }
        (DataType::Binary, 0) => {
            let a = a.as_binary::<i32>();
            fold_each(rows, nulls.as_ref(), |r| Some(hash_bytes(a.value(r))))
        }
        (DataType::Date32, 0) => {
            let a = a.as_primitive::<Date32Type>();
            fold_each(rows, nulls.as_ref(), |r| {
                // The binary protocol's DATE: its length (4), the year (2 bytes,
                // little-endian), the month and the day.
                let (y, m, d) = civil(a.value(r));
                if !(1..=9999).contains(&y) {
                    return None;
                }
                let [y0, y1] = (y as u16).to_le_bytes();
                Some(hash_bytes(&[4, y0, y1, m as u8, d as u8]))
            })
        }
        _ => false,
    }
}

/// Folds into each row's hash `hash(row)`, or [`NULL_HASH`] where `nulls` says NULL;
/// `false` as soon as `hash` gives `None`.
fn fold_each(
    rows: &mut [u64],
    nulls: Option<&arrow::buffer::NullBuffer>,
    hash: impl Fn(usize) -> Option<u64>,
) -> bool {
    for (r, row) in rows.iter_mut().enumerate() {
        let value = if nulls.is_some_and(|n| n.is_null(r)) {
            NULL_HASH
        } else {
            match hash(r) {
                Some(h) => h,
                None => return false,
            }
        };
        *row = fold(*row, value);
    }
    true
}
