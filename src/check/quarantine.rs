//! The quarantine: rejected rows, kept whole with the reason they failed.

use std::io::Write as _;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Int32Type, Int64Type, Schema, SchemaRef};
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
    pub row: RowJson,
}

/// A source row as the text of a JSON object, column name to value, keys in byte order.
///
/// Kept as text because a chunk may reject hundreds of thousands of rows, and each is
/// written once and rarely read: building a `serde_json::Value` map per row cost more
/// than the rest of the chunk (issue 30, item 11). The text is what
/// `serde_json::to_string` of the map would be, so quarantines written before read the
/// same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowJson(String);

impl RowJson {
    /// The JSON text of `map`.
    pub fn from_map(map: &serde_json::Map<String, serde_json::Value>) -> RowJson {
        RowJson(serde_json::Value::Object(map.clone()).to_string())
    }

    /// Stored text, checked to be a JSON object.
    pub fn parse(text: &str) -> std::result::Result<RowJson, String> {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(map)) => Ok(RowJson::from_map(&map)),
            Ok(other) => Err(format!("expected a JSON object, found {other}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The row as a map. The text is always an object (see [`RowJson::parse`]).
    pub fn map(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::from_str(&self.0) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        }
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<serde_json::Value> {
        self.map().remove(key)
    }
}

impl std::fmt::Display for RowJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for RowJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serde_json::Value::Object(self.map()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for RowJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        Ok(RowJson::from_map(&map))
    }
}

/// Writes rows of batches of one schema as [`RowJson`]: the keys are escaped and put in
/// order once, not per row.
pub struct RowJsonWriter {
    /// Column index and its `"name":` text, in key order.
    keys: Vec<(usize, Vec<u8>)>,
}

impl RowJsonWriter {
    /// A writer for batches of `schema`.
    pub fn new(schema: &Schema) -> RowJsonWriter {
        let mut keys: Vec<(usize, &String)> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| (i, f.name()))
            .collect();
        keys.sort_by(|a, b| a.1.cmp(b.1));
        let keys = keys
            .into_iter()
            .map(|(i, name)| {
                let mut key = serde_json::to_vec(name).unwrap_or_default();
                key.push(b':');
                (i, key)
            })
            .collect();
        RowJsonWriter { keys }
    }

    /// Row `row` of `batch` (of the writer's schema).
    pub fn row(&self, batch: &RecordBatch, row: usize) -> RowJson {
        let mut out = Vec::with_capacity(16 + self.keys.len() * 24);
        out.push(b'{');
        for (n, (i, key)) in self.keys.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(key);
            write_value(&mut out, batch.column(*i).as_ref(), row);
        }
        out.push(b'}');
        // Every piece is ASCII punctuation or serde_json's own output.
        RowJson(String::from_utf8(out).unwrap_or_default())
    }
}

/// Appends `v` as JSON.
fn json<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) -> Result<()> {
    serde_json::to_writer(out, v).map_err(|e| Error::Internal(e.to_string()))
}

/// Appends `text` as a JSON string, as serde_json writes it. Most texts need no escape:
/// they are copied whole instead of byte by byte (a quarantine line holds about ten).
fn json_str(out: &mut Vec<u8>, text: &str) {
    // Without a short cut the test vectorises.
    let plain = !text.bytes().fold(false, |bad, b| {
        bad | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(out, text);
    }
}

/// Appends `text` as a JSON string, or `null`.
fn json_opt(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(t) => json_str(out, t),
        None => out.extend_from_slice(b"null"),
    }
}

/// One value as JSON: numbers and booleans as JSON, everything else as text, so that it
/// reads back exactly ([`rows_from_json`]).
fn write_value(out: &mut Vec<u8>, col: &dyn Array, row: usize) {
    if col.is_null(row) {
        out.extend_from_slice(b"null");
        return;
    }
    // Writing into a Vec cannot fail.
    let _ = match col.data_type() {
        DataType::Boolean => serde_json::to_writer(&mut *out, &col.as_boolean().value(row)),
        // Read directly: a quarantine with many rows must not format each value through
        // the generic display path.
        DataType::Int64 => {
            serde_json::to_writer(&mut *out, &col.as_primitive::<Int64Type>().value(row))
        }
        DataType::Int32 => {
            serde_json::to_writer(&mut *out, &col.as_primitive::<Int32Type>().value(row))
        }
        DataType::Utf8 => {
            json_str(out, col.as_string::<i32>().value(row));
            Ok(())
        }
        DataType::Int8 | DataType::Int16 => {
            match value_text(col, row).and_then(|t| t.parse::<i64>().ok()) {
                Some(n) => serde_json::to_writer(&mut *out, &n),
                None => serde_json::to_writer(&mut *out, &()),
            }
        }
        DataType::Binary => {
            out.push(b'"');
            for b in col.as_binary::<i32>().value(row) {
                let _ = write!(out, "{b:02x}");
            }
            out.push(b'"');
            Ok(())
        }
        _ => {
            json_str(out, &value_text(col, row).unwrap_or_default());
            Ok(())
        }
    };
}

impl QuarantineEntry {
    /// An entry for row `row` of `batch` that failed with `failure`; `json` is a writer
    /// for `batch`'s schema.
    pub fn new(
        chunk: usize,
        batch: &RecordBatch,
        row: usize,
        key: &[String],
        failure: RowFailure,
        json: &RowJsonWriter,
    ) -> Self {
        let key = crate::chunk::key::row_key(batch, key, row);
        QuarantineEntry {
            chunk,
            key,
            location: failure.location,
            column: failure.column,
            value: failure.value,
            reason: failure.reason,
            row: json.row(batch, row),
        }
    }

    /// Appends the entry as one line of NDJSON: the text `serde_json` writes for it, built
    /// without a map per row.
    pub fn write_json_line(&self, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(b"{\"chunk\":");
        json(out, &(self.chunk as u64))?;
        out.extend_from_slice(b",\"key\":");
        json_opt(out, self.key.as_deref());
        out.extend_from_slice(b",\"location\":");
        json_str(out, &self.location);
        out.extend_from_slice(b",\"column\":");
        json_opt(out, self.column.as_deref());
        out.extend_from_slice(b",\"value\":");
        json_opt(out, self.value.as_deref());
        out.extend_from_slice(b",\"reason\":");
        json_str(out, &self.reason);
        out.extend_from_slice(b",\"row\":");
        out.extend_from_slice(self.row.as_str().as_bytes());
        out.extend_from_slice(b"}\n");
        Ok(())
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
            row: RowJson::from_map(&row),
        }
    }

    /// The exact bytes of an unreadable record (see [`Self::unreadable`]).
    pub fn unreadable_bytes(&self) -> Option<Vec<u8>> {
        let row = self.row.map();
        if let Some(b64) = row.get(UNREADABLE_BASE64).and_then(|v| v.as_str()) {
            return base64_decode(b64);
        }
        row.get(UNREADABLE)
            .and_then(|v| v.as_str())
            .map(|t| t.as_bytes().to_vec())
    }

    /// Whether this entry is a record that could not be read (see [`Self::unreadable`]).
    /// `retry --rejects` reads it again from [`Self::unreadable_bytes`] when the source
    /// can (a CSV file whose options were fixed), and keeps it otherwise.
    pub fn is_unreadable(&self) -> bool {
        // Cheap before exact: most entries are rows, not unreadable records.
        self.row.as_str().contains(UNREADABLE) && self.row.get(UNREADABLE).is_some()
    }

    /// The reason with the column, the way summaries group them.
    pub fn grouped_reason(&self) -> String {
        grouped_reason(self.column.as_deref(), &self.reason)
    }
}

/// A reason with its column, the way summaries group rejects: quoted values taken out.
pub fn grouped_reason(column: Option<&str>, reason: &str) -> String {
    match column {
        Some(c) => format!("column {c}: {}", strip_quoted(reason)),
        None => strip_quoted(reason),
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

/// Row `row` of `batch` as JSON (see [`RowJsonWriter`] for many rows).
pub fn row_json(batch: &RecordBatch, row: usize) -> RowJson {
    RowJsonWriter::new(batch.schema_ref()).row(batch, row)
}

/// Rebuilds source rows from their JSON in `schema`, exactly as they were read.
pub fn rows_from_json(schema: &SchemaRef, rows: &[RowJson]) -> Result<RecordBatch> {
    let rows: Vec<_> = rows.iter().map(RowJson::map).collect();
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
        assert_eq!(
            e.row.get(UNREADABLE_BASE64).unwrap(),
            "Sk9VUkRBSU58aOlo6bY="
        );
        assert!(e.is_unreadable());
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
        assert_eq!(
            rows[0].as_str(),
            r#"{"day":"2022-01-08","id":1,"name":"Zoë \"x\"\n","ok":true,"raw":"00ff"}"#
        );
        assert_eq!(
            rows[1].as_str(),
            r#"{"day":null,"id":-9007199254740993,"name":null,"ok":null,"raw":null}"#
        );
        assert_eq!(rows_from_json(&schema, &rows).unwrap(), batch);
        // The text is what serde_json writes for the same map, so older quarantines and
        // this one read alike.
        for r in &rows {
            assert_eq!(r.as_str(), serde_json::Value::Object(r.map()).to_string());
        }
    }

    #[test]
    fn an_entry_line_is_what_serde_writes() {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("v", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![7])),
                Arc::new(StringArray::from(vec![Some("tab\there \u{1}")])),
            ],
        )
        .unwrap();
        let failure = RowFailure {
            location: "f.csv line 8 (id=7)".into(),
            column: Some("v".into()),
            value: None,
            reason: "check `v range`: \"x\" is out of range".into(),
        };
        let writer = RowJsonWriter::new(batch.schema_ref());
        let e = QuarantineEntry::new(3, &batch, 0, &["id".to_string()], failure, &writer);
        let mut line = Vec::new();
        e.write_json_line(&mut line).unwrap();
        let mut expected = serde_json::to_string(&e).unwrap();
        expected.push('\n');
        assert_eq!(String::from_utf8(line.clone()).unwrap(), expected);
        let back: QuarantineEntry = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, e);
        assert!(!e.is_unreadable());
    }
}
