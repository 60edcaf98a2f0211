//! Which rows of a target belong to a chunk.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Int16Type, Int32Type, Int64Type};
use arrow::record_batch::RecordBatch;

use super::KeyValue;
use crate::types::ColumnType;
use crate::types::cast::value_text;
use crate::{Error, Result};

/// Which rows of a database target belong to a chunk.
#[derive(Debug, Clone)]
pub enum Selection {
    /// `lo < key <= hi` (either bound open), a composite key compared as a row value:
    /// the chunk's key range, when the target columns hold the source key unchanged.
    Range {
        /// The target columns that hold the key, in key order.
        columns: Vec<String>,
        /// Exclusive lower bound.
        lo: Option<KeyValue>,
        /// Inclusive upper bound.
        hi: Option<KeyValue>,
    },
    /// Rows whose key columns hold one of `keys` (file sources, or a converted key).
    Keys {
        /// The target columns that hold the key, in key order.
        columns: Vec<String>,
        /// The key values the chunk wrote: one array per column, rows aligned.
        keys: Vec<ArrayRef>,
    },
    /// Everything the chunk's own files hold (file targets).
    Files,
    /// Every row of the target.
    All,
}

impl Selection {
    /// The rows whose `columns` hold the keys in `batches` (a chunk's rows found by the
    /// keys it wrote).
    pub fn of_keys(columns: &[String], batches: &[RecordBatch]) -> Result<Selection> {
        let mut keys = Vec::with_capacity(columns.len());
        for column in columns {
            let arrays: Vec<&dyn Array> = batches
                .iter()
                .filter_map(|b| b.column_by_name(column).map(|c| c.as_ref()))
                .collect();
            keys.push(if arrays.is_empty() {
                arrow::array::new_null_array(&DataType::Int64, 0)
            } else {
                arrow::compute::concat(&arrays).map_err(|e| Error::Internal(e.to_string()))?
            });
        }
        Ok(Selection::Keys {
            columns: columns.to_vec(),
            keys,
        })
    }

    /// Whether a key range can be compared with its target columns in a database, given
    /// each column's type (`column_type`): integer bounds on integer columns, text bounds
    /// on text columns. Otherwise (a source key written into a column of another type)
    /// the range means something else there, and the chunk's rows are found by their
    /// keys instead.
    pub fn range_fits(&self, column_type: impl Fn(&str) -> Option<ColumnType>) -> bool {
        let Selection::Range { lo, hi, columns } = self else {
            return true;
        };
        [lo, hi].into_iter().flatten().all(|b| {
            b.parts().len() == columns.len()
                && b.parts().iter().zip(columns).all(|(p, c)| match p {
                    KeyValue::Int(_) => matches!(
                        column_type(c),
                        Some(ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt)
                    ),
                    KeyValue::Text(_) => {
                        matches!(
                            column_type(c),
                            Some(ColumnType::Text | ColumnType::Varchar(_))
                        )
                    }
                    KeyValue::Tuple(_) => false,
                })
        })
    }
}

/// The key at `row` of `keys` (a [`Selection::Keys`] list), as a value for a statement;
/// `None` when a part is NULL.
pub fn key_at(keys: &[ArrayRef], row: usize) -> Option<KeyValue> {
    let parts = keys
        .iter()
        .map(|k| part_at(k, row))
        .collect::<Option<Vec<_>>>()?;
    Some(KeyValue::from_parts(parts))
}

/// Every non-NULL key of `keys` (a [`Selection::Keys`] list), in order.
pub fn key_values(keys: &[ArrayRef]) -> Vec<KeyValue> {
    let rows = keys.first().map_or(0, |k| k.len());
    (0..rows).filter_map(|r| key_at(keys, r)).collect()
}

fn part_at(keys: &ArrayRef, row: usize) -> Option<KeyValue> {
    if keys.is_null(row) {
        return None;
    }
    Some(match keys.data_type() {
        DataType::Int16 => KeyValue::Int(keys.as_primitive::<Int16Type>().value(row) as i64),
        DataType::Int32 => KeyValue::Int(keys.as_primitive::<Int32Type>().value(row) as i64),
        DataType::Int64 => KeyValue::Int(keys.as_primitive::<Int64Type>().value(row)),
        _ => KeyValue::Text(value_text(keys.as_ref(), row)?),
    })
}
