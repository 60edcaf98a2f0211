//! The quarantine: rejected rows, kept whole with the reason they failed.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Int32Type, Int64Type, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::types::cast::{cast_lossless, value_text};
use crate::{Error, Result, RowFailure};

/// One rejected row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    /// The chunk it came from.
    pub chunk: usize,
    /// Its key value, when the source has a key.
    pub key: Option<String>,
    /// Where it is in the source.
    pub location: String,
    /// The column that failed, if one did.
    pub column: Option<String>,
    /// The offending value.
    pub value: Option<String>,
    /// Why it was rejected.
    pub reason: String,
    /// The whole source row, column name to value.
    pub row: serde_json::Value,
}

impl QuarantineEntry {
    /// An entry for row `row` of `batch` that failed with `failure`.
    pub fn new(
        chunk: usize,
        batch: &RecordBatch,
        row: usize,
        key: &[String],
        failure: &RowFailure,
    ) -> Self {
        let key = crate::chunk::key::row_key(batch, key, row);
        QuarantineEntry {
            chunk,
            key,
            location: failure.location.clone(),
            column: failure.column.clone(),
            value: failure.value.clone(),
            reason: failure.reason.clone(),
            row: row_json(batch, row),
        }
    }

    /// A source record that could not be read into a row: kept as its raw text under
    /// `_unreadable`, since it has no columns to name. When its bytes are not UTF-8, that
    /// text is a preview (invalid bytes shown as U+FFFD), and the exact bytes are kept in
    /// base64 under `_unreadable_base64`, so nothing of the record is lost.
    pub fn unreadable(chunk: usize, u: crate::source::Unreadable) -> Self {
        let mut row = serde_json::Map::new();
        row.insert(UNREADABLE.into(), u.raw.clone().into());
        if let Some(bytes) = &u.raw_bytes {
            row.insert(UNREADABLE_BASE64.into(), base64_encode(bytes).into());
        }
        QuarantineEntry {
            chunk,
            key: u.key,
            location: u.location,
            column: u.column,
            value: Some(u.raw),
            reason: u.reason,
            row: serde_json::Value::Object(row),
        }
    }

    /// The exact bytes of an unreadable record (see [`Self::unreadable`]).
    pub fn unreadable_bytes(&self) -> Option<Vec<u8>> {
        if let Some(b64) = self.row.get(UNREADABLE_BASE64).and_then(|v| v.as_str()) {
            return base64_decode(b64);
        }
        self.row
            .get(UNREADABLE)
            .and_then(|v| v.as_str())
            .map(|t| t.as_bytes().to_vec())
    }

    /// Whether this entry is a record that could not be read (see [`Self::unreadable`]).
    /// `retry --rejects` reads it again from [`Self::unreadable_bytes`] when the source
    /// can (a CSV file whose options were fixed), and keeps it otherwise.
    pub fn is_unreadable(&self) -> bool {
        self.row.get(UNREADABLE).is_some()
    }

    /// The reason with the column, the way summaries group them.
    pub fn grouped_reason(&self) -> String {
        match &self.column {
            Some(c) => format!("column {c}: {}", strip_quoted(&self.reason)),
            None => strip_quoted(&self.reason),
        }
    }
}

/// The key under which an unreadable record's raw text is kept.
pub const UNREADABLE: &str = "_unreadable";

/// The key under which an unreadable record's exact bytes are kept, in base64 (RFC 4648,
/// with padding), when they are not UTF-8.
pub const UNREADABLE_BASE64: &str = "_unreadable_base64";

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(BASE64[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The bytes of standard base64 text; `None` if it is not.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut n, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let v = BASE64.iter().position(|&b| b == c)? as u32;
        n = n << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((n >> bits) as u8);
            n &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// A row as a JSON object: numbers and booleans as JSON, everything else as text, so it
/// reads back exactly ([`rows_from_json`]).
pub fn row_json(batch: &RecordBatch, row: usize) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (i, f) in batch.schema().fields().iter().enumerate() {
        let col = batch.column(i);
        let v = if col.is_null(row) {
            serde_json::Value::Null
        } else {
            match col.data_type() {
                DataType::Boolean => serde_json::Value::Bool(col.as_boolean().value(row)),
                // Read directly: a quarantine with many rows must not format each value
                // through the generic display path.
                DataType::Int64 => {
                    serde_json::Value::Number(col.as_primitive::<Int64Type>().value(row).into())
                }
                DataType::Int32 => {
                    serde_json::Value::Number(col.as_primitive::<Int32Type>().value(row).into())
                }
                DataType::Utf8 => {
                    serde_json::Value::String(col.as_string::<i32>().value(row).into())
                }
                DataType::Int8 | DataType::Int16 => value_text(col.as_ref(), row)
                    .and_then(|t| t.parse::<i64>().ok())
                    .map_or(serde_json::Value::Null, |n| {
                        serde_json::Value::Number(n.into())
                    }),
                DataType::Binary => serde_json::Value::String(
                    col.as_binary::<i32>()
                        .value(row)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                ),
                _ => serde_json::Value::String(value_text(col.as_ref(), row).unwrap_or_default()),
            }
        };
        map.insert(f.name().clone(), v);
    }
    serde_json::Value::Object(map)
}

/// Rebuilds source rows from their JSON in `schema`, exactly as they were read.
pub fn rows_from_json(schema: &SchemaRef, rows: &[serde_json::Value]) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        let texts: Vec<Option<String>> = rows
            .iter()
            .map(|r| match r.get(f.name()) {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
            })
            .collect();
        let array: ArrayRef = if f.data_type() == &DataType::Binary {
            let bytes: Vec<Option<Vec<u8>>> = texts
                .iter()
                .map(|t| t.as_ref().map(|h| hex_decode(h)))
                .collect();
            std::sync::Arc::new(arrow::array::BinaryArray::from_iter(bytes))
        } else {
            let text: ArrayRef = std::sync::Arc::new(StringArray::from(texts));
            let (cast, failures) =
                cast_lossless(&text, f.data_type()).map_err(|e| Error::Internal(e.to_string()))?;
            if let Some(fl) = failures.first() {
                return Err(Error::data(
                    "quarantine",
                    format!(
                        "column {}: stored value {:?} {}",
                        f.name(),
                        fl.value,
                        fl.reason
                    ),
                ));
            }
            cast
        };
        columns.push(array);
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::data("quarantine", e))
}

fn hex_decode(h: &str) -> Vec<u8> {
    (0..h.len() / 2)
        .filter_map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// Replaces quoted values in a reason with `'…'` so reasons group.
pub fn strip_quoted(text: &str) -> String {
    if !text.contains('\'') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    // Pieces alternate: outside quotes, inside, outside, ...
    for (i, piece) in text.split('\'').enumerate() {
        out.push_str(if i % 2 == 0 { piece } else { "'…'" });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{BooleanArray, Int64Array};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    #[test]
    fn unreadable_bytes_are_kept_exactly() {
        let raw = b"JOURDAIN|h\xe9h\xe9\xb6".to_vec();
        let e = QuarantineEntry::unreadable(
            0,
            crate::source::Unreadable {
                location: "f.csv line 3".into(),
                line: 3,
                key: None,
                column: Some("name".into()),
                reason: "is not valid UTF-8 text".into(),
                raw: String::from_utf8_lossy(&raw).into_owned(),
                raw_bytes: Some(raw.clone()),
            },
        );
        assert_eq!(e.row[UNREADABLE_BASE64], "Sk9VUkRBSU58aOlo6bY=");
        assert_eq!(e.unreadable_bytes().unwrap(), raw);
        // Through the JSON the quarantine stores.
        let back: QuarantineEntry =
            serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back.unreadable_bytes().unwrap(), raw);
        assert_eq!(strip_quoted("value 'x' is 'y"), "value '…' is '…'");
        assert_eq!(strip_quoted("no quotes"), "no quotes");
        for n in 0..7 {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 97 + 200) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&bytes)).unwrap(), bytes);
        }
    }

    #[test]
    fn rows_round_trip_through_json() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("day", DataType::Date32, true),
            Field::new("raw", DataType::Binary, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, -9_007_199_254_740_993])),
                Arc::new(StringArray::from(vec![Some("Zoë \"x\"\n"), None])),
                Arc::new(BooleanArray::from(vec![Some(true), None])),
                Arc::new(arrow::array::Date32Array::from(vec![Some(19000), None])),
                Arc::new(arrow::array::BinaryArray::from_iter(vec![
                    Some(vec![0u8, 255]),
                    None,
                ])),
            ],
        )
        .unwrap();
        let rows: Vec<_> = (0..2).map(|r| row_json(&batch, r)).collect();
        assert_eq!(rows[0]["id"], 1);
        assert_eq!(rows[0]["raw"], "00ff");
        assert_eq!(rows_from_json(&schema, &rows).unwrap(), batch);
    }
}
