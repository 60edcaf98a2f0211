//! Decodes rows of the binary protocol straight into Arrow builders, and a row as JSON
//! for the quarantine.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder,
    Int16Builder, Int32Builder, Int64Builder, StringBuilder, Time64MicrosecondBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use sqlx::mysql::MySqlRow;
use sqlx::{Column, Decode, MySql, Row, TypeInfo};

use super::MyKind;
use crate::{Error, Result};

/// One column's builder.
enum Col {
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Bool(BooleanBuilder),
    Text(StringBuilder),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder, bool),
}

/// A value converted for its column, not yet appended.
#[derive(Clone, Copy)]
enum Val<'v> {
    Null,
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(&'v str),
    Bytes(&'v [u8]),
}

impl Col {
    fn new(kind: MyKind, cap: usize) -> Col {
        match kind {
            MyKind::Int16 => Col::Int16(Int16Builder::with_capacity(cap)),
            MyKind::Int32 => Col::Int32(Int32Builder::with_capacity(cap)),
            MyKind::Int64 => Col::Int64(Int64Builder::with_capacity(cap)),
            MyKind::Float32 => Col::Float32(Float32Builder::with_capacity(cap)),
            MyKind::Float64 => Col::Float64(Float64Builder::with_capacity(cap)),
            MyKind::Bool => Col::Bool(BooleanBuilder::with_capacity(cap)),
            MyKind::Text => Col::Text(StringBuilder::with_capacity(cap, cap * 16)),
            MyKind::Bytes => Col::Bytes(BinaryBuilder::with_capacity(cap, cap * 16)),
            MyKind::Date => Col::Date(Date32Builder::with_capacity(cap)),
            MyKind::Time => Col::Time(Time64MicrosecondBuilder::with_capacity(cap)),
            MyKind::Timestamp => {
                Col::Timestamp(TimestampMicrosecondBuilder::with_capacity(cap), false)
            }
            MyKind::TimestampUtc => {
                Col::Timestamp(TimestampMicrosecondBuilder::with_capacity(cap), true)
            }
        }
    }

    fn null(&mut self) {
        match self {
            Col::Int16(b) => b.append_null(),
            Col::Int32(b) => b.append_null(),
            Col::Int64(b) => b.append_null(),
            Col::Float32(b) => b.append_null(),
            Col::Float64(b) => b.append_null(),
            Col::Bool(b) => b.append_null(),
            Col::Text(b) => b.append_null(),
            Col::Bytes(b) => b.append_null(),
            Col::Date(b) => b.append_null(),
            Col::Time(b) => b.append_null(),
            Col::Timestamp(b, _) => b.append_null(),
        }
    }

    /// Converts one binary-protocol value (`unsigned` for an unsigned integer column)
    /// for this column, or says why it does not fit. Nothing is appended, so a row whose
    /// later value fails leaves no trace.
    fn convert<'v>(&self, v: &'v [u8], unsigned: bool) -> Result<Val<'v>, String> {
        Ok(match self {
            Col::Int16(_) => Val::I16(fit(int(v, unsigned)?, "smallint")?),
            Col::Int32(_) => Val::I32(fit(int(v, unsigned)?, "integer")?),
            Col::Int64(_) => Val::I64(fit(int(v, unsigned)?, "bigint")?),
            Col::Bool(_) => match int(v, unsigned)? {
                0 => Val::Bool(false),
                1 => Val::Bool(true),
                n => return Err(format!("{n} is not a boolean (0 or 1)")),
            },
            Col::Float32(_) => match v.len() {
                4 => Val::F32(f32::from_le_bytes(v.try_into().expect("4 bytes"))),
                8 => {
                    let d = f64::from_le_bytes(v.try_into().expect("8 bytes"));
                    let f = d as f32;
                    if f as f64 != d && !d.is_nan() {
                        return Err(format!("{d} does not fit a real without rounding"));
                    }
                    Val::F32(f)
                }
                n => return Err(format!("a float of {n} bytes")),
            },
            Col::Float64(_) => match v.len() {
                4 => Val::F64(f32::from_le_bytes(v.try_into().expect("4 bytes")) as f64),
                8 => Val::F64(f64::from_le_bytes(v.try_into().expect("8 bytes"))),
                n => return Err(format!("a float of {n} bytes")),
            },
            Col::Text(_) => match std::str::from_utf8(v) {
                Ok(s) => Val::Str(s),
                Err(_) => {
                    return Err(format!(
                        "`{}` is not valid UTF-8 text",
                        String::from_utf8_lossy(v)
                    ));
                }
            },
            Col::Bytes(_) => Val::Bytes(v),
            Col::Date(_) => Val::I32(datetime(v)?.0),
            Col::Time(_) => Val::I64(time(v)?),
            Col::Timestamp(..) => {
                let (days, micros) = datetime(v)?;
                Val::I64(days as i64 * 86_400_000_000 + micros)
            }
        })
    }

    /// Appends a value [`Col::convert`] made for this column.
    fn append(&mut self, v: Val<'_>) {
        match (self, v) {
            (Col::Int16(b), Val::I16(v)) => b.append_value(v),
            (Col::Int32(b), Val::I32(v)) => b.append_value(v),
            (Col::Int64(b), Val::I64(v)) => b.append_value(v),
            (Col::Bool(b), Val::Bool(v)) => b.append_value(v),
            (Col::Float32(b), Val::F32(v)) => b.append_value(v),
            (Col::Float64(b), Val::F64(v)) => b.append_value(v),
            (Col::Text(b), Val::Str(v)) => b.append_value(v),
            (Col::Bytes(b), Val::Bytes(v)) => b.append_value(v),
            (Col::Date(b), Val::I32(v)) => b.append_value(v),
            (Col::Time(b), Val::I64(v)) => b.append_value(v),
            (Col::Timestamp(b, _), Val::I64(v)) => b.append_value(v),
            (c, Val::Null) => c.null(),
            _ => unreachable!("a value converted for another column"),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Int16(b) => Arc::new(b.finish()),
            Col::Int32(b) => Arc::new(b.finish()),
            Col::Int64(b) => Arc::new(b.finish()),
            Col::Float32(b) => Arc::new(b.finish()),
            Col::Float64(b) => Arc::new(b.finish()),
            Col::Bool(b) => Arc::new(b.finish()),
            Col::Text(b) => Arc::new(b.finish()),
            Col::Bytes(b) => Arc::new(b.finish()),
            Col::Date(b) => Arc::new(b.finish()),
            Col::Time(b) => Arc::new(b.finish()),
            Col::Timestamp(b, utc) => {
                let a = b.finish();
                Arc::new(if *utc { a.with_timezone("UTC") } else { a })
            }
        }
    }
}

/// A little-endian integer of 1, 2, 4 or 8 bytes.
fn int(v: &[u8], unsigned: bool) -> Result<i128, String> {
    Ok(match (v.len(), unsigned) {
        (1, false) => v[0] as i8 as i128,
        (1, true) => v[0] as i128,
        (2, false) => i16::from_le_bytes([v[0], v[1]]) as i128,
        (2, true) => u16::from_le_bytes([v[0], v[1]]) as i128,
        (4, false) => i32::from_le_bytes(v.try_into().expect("4 bytes")) as i128,
        (4, true) => u32::from_le_bytes(v.try_into().expect("4 bytes")) as i128,
        (8, false) => i64::from_le_bytes(v.try_into().expect("8 bytes")) as i128,
        (8, true) => u64::from_le_bytes(v.try_into().expect("8 bytes")) as i128,
        (n, _) => return Err(format!("an integer of {n} bytes")),
    })
}

fn fit<T: TryFrom<i128>>(v: i128, name: &str) -> Result<T, String> {
    T::try_from(v).map_err(|_| format!("{v} is out of range for {name}"))
}

/// A binary-protocol `DATE`, `DATETIME` or `TIMESTAMP`: days since 1970-01-01 and
/// microseconds into the day.
fn datetime(v: &[u8]) -> Result<(i32, i64), String> {
    let len = *v.first().ok_or("an empty date")? as usize;
    if len == 0 || v.len() < len + 1 {
        return Err("the zero date 0000-00-00 is not a date".into());
    }
    let b = &v[1..];
    let year = u16::from_le_bytes([b[0], b[1]]) as i32;
    let (month, day) = (b[2] as u32, b[3] as u32);
    let date = chrono::NaiveDate::from_ymd_opt(year, month, day)
        .ok_or_else(|| format!("{year:04}-{month:02}-{day:02} is not a date"))?;
    let days = (date - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days();
    let mut micros = 0i64;
    if len >= 7 {
        micros += (b[4] as i64 * 3600 + b[5] as i64 * 60 + b[6] as i64) * 1_000_000;
    }
    if len >= 11 {
        micros += u32::from_le_bytes([b[7], b[8], b[9], b[10]]) as i64;
    }
    Ok((days as i32, micros))
}

/// A binary-protocol `TIME` as microseconds into a day; a negative time or one of a day
/// or more (MySQL's TIME spans ±838 hours) does not fit Arrow's time of day.
fn time(v: &[u8]) -> Result<i64, String> {
    let len = *v.first().ok_or("an empty time")? as usize;
    if len == 0 {
        return Ok(0);
    }
    let b = &v[1..];
    if v.len() < len + 1 || len < 8 {
        return Err(format!("a TIME of {len} bytes"));
    }
    let negative = b[0] == 1;
    let days = u32::from_le_bytes([b[1], b[2], b[3], b[4]]) as i64;
    let micros = if len >= 12 {
        u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as i64
    } else {
        0
    };
    let total =
        ((days * 24 + b[5] as i64) * 3600 + b[6] as i64 * 60 + b[7] as i64) * 1_000_000 + micros;
    if (negative && total != 0) || total >= 86_400_000_000 {
        let h = days * 24 + b[5] as i64;
        return Err(format!(
            "{}{h:02}:{:02}:{:02} is not a time of day (00:00:00 to 23:59:59.999999)",
            if negative { "-" } else { "" },
            b[6],
            b[7]
        ));
    }
    Ok(total)
}

/// Decodes result rows into batches of one schema.
pub struct Decoder {
    cols: Vec<Col>,
    /// Per column: whether the result column is an unsigned integer (from the first row).
    unsigned: Option<Vec<bool>>,
    schema: SchemaRef,
    cap: usize,
    /// Rows in the batch being built.
    pub len: usize,
    /// Rows decoded in all.
    pub rows: u64,
}

impl Decoder {
    /// A decoder for `kinds`, batches of `schema` (one field per kind) of up to `cap` rows.
    pub fn new(kinds: &[MyKind], schema: SchemaRef, cap: usize) -> Self {
        Decoder {
            cols: kinds.iter().map(|k| Col::new(*k, cap)).collect(),
            unsigned: None,
            schema,
            cap,
            len: 0,
            rows: 0,
        }
    }

    /// Appends one row; `Err` names the column (by index) and why its value does not
    /// fit, and appends nothing. Returns the batch when it is full.
    pub fn push(&mut self, row: &MySqlRow) -> Result<Option<RecordBatch>, (usize, String)> {
        let unsigned = self.unsigned.get_or_insert_with(|| {
            row.columns()
                .iter()
                .map(|c| c.type_info().name().ends_with("UNSIGNED"))
                .collect()
        });
        let n = self.cols.len();
        if row.len() != n {
            return Err((0, format!("{} columns, expected {n}", row.len())));
        }
        let mut on_stack = [Val::Null; 16];
        let mut on_heap = Vec::new();
        let vals: &mut [Val<'_>] = if n <= on_stack.len() {
            &mut on_stack[..n]
        } else {
            on_heap.resize(n, Val::Null);
            &mut on_heap
        };
        for (i, slot) in vals.iter_mut().enumerate() {
            let Some(bytes) = value_bytes(row, i).map_err(|why| (i, why))? else {
                continue;
            };
            *slot = self.cols[i]
                .convert(bytes, unsigned[i])
                .map_err(|why| (i, why))?;
        }
        for (c, v) in self.cols.iter_mut().zip(vals.iter()) {
            c.append(*v);
        }
        self.len += 1;
        self.rows += 1;
        if self.len >= self.cap {
            return self.finish().map(Some).map_err(|e| (0, e.to_string()));
        }
        Ok(None)
    }

    /// The rows decoded since the last batch, as one batch.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = self.cols.iter_mut().map(Col::finish).collect();
        self.len = 0;
        RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| Error::Internal(e.to_string()))
    }
}

/// The bytes of column `i` of `row` as the server sent them; `None` for SQL NULL only.
///
/// Not sqlx's `is_null`, which also says NULL for a zero date (`0000-00-00`): a source
/// holding one would be read as NULL, and a target that stored one in place of a NULL
/// sent would pass its read-back. The zero date's bytes reach the decoder, which refuses
/// it as a date, so the row is quarantined with that reason.
pub(super) fn value_bytes(row: &MySqlRow, i: usize) -> Result<Option<&[u8]>, String> {
    let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
    // `decode` fails only where the protocol sent no value at all.
    Ok(<&[u8] as Decode<MySql>>::decode(raw).ok())
}

/// A row as a JSON object of its values as the server sent them, for the quarantine:
/// numbers as numbers, dates and times as their SQL text, text as text (invalid UTF-8
/// replaced), bytes as hex.
pub fn row_json(row: &MySqlRow) -> String {
    let mut out = serde_json::Map::new();
    for (i, c) in row.columns().iter().enumerate() {
        let ty = c.type_info().name();
        let value = match value_bytes(row, i) {
            Ok(Some(v)) => json_value(v, ty),
            Ok(None) => serde_json::Value::Null,
            Err(e) => e.into(),
        };
        out.insert(c.name().to_string(), value);
    }
    serde_json::Value::Object(out).to_string()
}

fn json_value(v: &[u8], ty: &str) -> serde_json::Value {
    let unsigned = ty.ends_with("UNSIGNED");
    let base = ty.trim_end_matches(" UNSIGNED");
    match base {
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" | "BOOLEAN" => {
            match int(v, unsigned) {
                Ok(n) => match i64::try_from(n) {
                    Ok(n) => n.into(),
                    Err(_) => n.to_string().into(),
                },
                Err(e) => e.into(),
            }
        }
        "FLOAT" if v.len() == 4 => {
            (f32::from_le_bytes(v.try_into().expect("4 bytes")) as f64).into()
        }
        "DOUBLE" if v.len() == 8 => f64::from_le_bytes(v.try_into().expect("8 bytes")).into(),
        "DATE" | "DATETIME" | "TIMESTAMP" => temporal_text(v, base != "DATE").into(),
        "TIME" => time_text(v).into(),
        "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" => v
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
            .into(),
        _ => String::from_utf8_lossy(v).into_owned().into(),
    }
}

/// A binary `DATE`/`DATETIME` as SQL text, zero dates included.
fn temporal_text(v: &[u8], with_time: bool) -> String {
    let len = v.first().copied().unwrap_or(0) as usize;
    let b = v.get(1..).unwrap_or_default();
    let get = |i: usize| b.get(i).copied().unwrap_or(0);
    let year = if len >= 4 {
        u16::from_le_bytes([get(0), get(1)])
    } else {
        0
    };
    let mut s = format!("{year:04}-{:02}-{:02}", get(2), get(3));
    if with_time {
        s.push_str(&format!(" {:02}:{:02}:{:02}", get(4), get(5), get(6)));
        if len >= 11 {
            s.push_str(&format!(
                ".{:06}",
                u32::from_le_bytes([get(7), get(8), get(9), get(10)])
            ));
        }
    }
    s
}

/// A binary `TIME` as SQL text: `-838:59:59.000000`.
fn time_text(v: &[u8]) -> String {
    let len = v.first().copied().unwrap_or(0) as usize;
    let b = v.get(1..).unwrap_or_default();
    let get = |i: usize| b.get(i).copied().unwrap_or(0);
    if len < 8 {
        return "00:00:00".into();
    }
    let days = u32::from_le_bytes([get(1), get(2), get(3), get(4)]) as u64;
    let mut s = format!(
        "{}{:02}:{:02}:{:02}",
        if get(0) == 1 { "-" } else { "" },
        days * 24 + get(5) as u64,
        get(6),
        get(7)
    );
    if len >= 12 {
        s.push_str(&format!(
            ".{:06}",
            u32::from_le_bytes([get(8), get(9), get(10), get(11)])
        ));
    }
    s
}
