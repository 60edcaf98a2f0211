//! Decodes a binary `COPY TO STDOUT` stream straight into Arrow builders.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::encode::HEADER;
use super::numeric::{decode_numeric, numeric_text};
use super::{EPOCH_DAYS, EPOCH_MICROS, PgKind};
use crate::sql::RowDigest;
use crate::{Error, Result};

enum Col {
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Dec(Decimal128Builder, i8),
    Bool(BooleanBuilder),
    Text(StringBuilder),
    NumText(StringBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Ts(TimestampMicrosecondBuilder),
    Bytes(BinaryBuilder),
}

impl Col {
    fn new(kind: PgKind, cap: usize) -> Col {
        match kind {
            PgKind::Int2 => Col::I16(Int16Builder::with_capacity(cap)),
            PgKind::Int4 => Col::I32(Int32Builder::with_capacity(cap)),
            PgKind::Int8 => Col::I64(Int64Builder::with_capacity(cap)),
            PgKind::Float4 => Col::F32(Float32Builder::with_capacity(cap)),
            PgKind::Float8 => Col::F64(Float64Builder::with_capacity(cap)),
            PgKind::Numeric(p, s) => Col::Dec(
                Decimal128Builder::with_capacity(cap)
                    .with_precision_and_scale(p, s)
                    .expect("precision and scale were checked"),
                s,
            ),
            PgKind::NumericText => Col::NumText(StringBuilder::with_capacity(cap, cap * 8)),
            PgKind::Bool => Col::Bool(BooleanBuilder::with_capacity(cap)),
            PgKind::Text => Col::Text(StringBuilder::with_capacity(cap, cap * 16)),
            PgKind::Date => Col::Date(Date32Builder::with_capacity(cap)),
            PgKind::Time => Col::Time(Time64MicrosecondBuilder::with_capacity(cap)),
            PgKind::Timestamp => Col::Ts(TimestampMicrosecondBuilder::with_capacity(cap)),
            PgKind::TimestampTz => {
                Col::Ts(TimestampMicrosecondBuilder::with_capacity(cap).with_timezone("UTC"))
            }
            PgKind::Bytea => Col::Bytes(BinaryBuilder::with_capacity(cap, cap * 16)),
        }
    }

    fn null(&mut self) {
        match self {
            Col::I16(b) => b.append_null(),
            Col::I32(b) => b.append_null(),
            Col::I64(b) => b.append_null(),
            Col::F32(b) => b.append_null(),
            Col::F64(b) => b.append_null(),
            Col::Dec(b, _) => b.append_null(),
            Col::Bool(b) => b.append_null(),
            Col::Text(b) | Col::NumText(b) => b.append_null(),
            Col::Date(b) => b.append_null(),
            Col::Time(b) => b.append_null(),
            Col::Ts(b) => b.append_null(),
            Col::Bytes(b) => b.append_null(),
        }
    }

    fn value(&mut self, v: &[u8]) -> Result<(), String> {
        let fixed = |n: usize| -> Result<(), String> {
            if v.len() == n {
                Ok(())
            } else {
                Err(format!("expected {n} bytes, the server sent {}", v.len()))
            }
        };
        match self {
            Col::I16(b) => {
                fixed(2)?;
                b.append_value(i16::from_be_bytes([v[0], v[1]]))
            }
            Col::I32(b) => {
                fixed(4)?;
                b.append_value(i32::from_be_bytes(v.try_into().expect("4 bytes")))
            }
            Col::I64(b) => {
                fixed(8)?;
                b.append_value(i64::from_be_bytes(v.try_into().expect("8 bytes")))
            }
            Col::F32(b) => {
                fixed(4)?;
                b.append_value(f32::from_be_bytes(v.try_into().expect("4 bytes")))
            }
            Col::F64(b) => {
                fixed(8)?;
                b.append_value(f64::from_be_bytes(v.try_into().expect("8 bytes")))
            }
            Col::Dec(b, scale) => b.append_value(decode_numeric(v, *scale)?),
            Col::NumText(b) => b.append_value(numeric_text(v)?),
            Col::Bool(b) => {
                fixed(1)?;
                b.append_value(v[0] != 0)
            }
            Col::Text(b) => b.append_value(
                std::str::from_utf8(v).map_err(|e| format!("text is not UTF-8: {e}"))?,
            ),
            Col::Date(b) => {
                fixed(4)?;
                let d = i32::from_be_bytes(v.try_into().expect("4 bytes"));
                if d == i32::MAX || d == i32::MIN {
                    return Err("an infinite date has no Arrow value".into());
                }
                b.append_value(d + EPOCH_DAYS)
            }
            Col::Time(b) => {
                fixed(8)?;
                b.append_value(i64::from_be_bytes(v.try_into().expect("8 bytes")))
            }
            Col::Ts(b) => {
                fixed(8)?;
                let t = i64::from_be_bytes(v.try_into().expect("8 bytes"));
                if t == i64::MAX || t == i64::MIN {
                    return Err("an infinite timestamp has no Arrow value".into());
                }
                b.append_value(t + EPOCH_MICROS)
            }
            Col::Bytes(b) => b.append_value(v),
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::I16(b) => Arc::new(b.finish()),
            Col::I32(b) => Arc::new(b.finish()),
            Col::I64(b) => Arc::new(b.finish()),
            Col::F32(b) => Arc::new(b.finish()),
            Col::F64(b) => Arc::new(b.finish()),
            Col::Dec(b, _) => Arc::new(b.finish()),
            Col::Bool(b) => Arc::new(b.finish()),
            Col::Text(b) | Col::NumText(b) => Arc::new(b.finish()),
            Col::Date(b) => Arc::new(b.finish()),
            Col::Time(b) => Arc::new(b.finish()),
            Col::Ts(b) => Arc::new(b.finish()),
            Col::Bytes(b) => Arc::new(b.finish()),
        }
    }
}

/// Decodes a binary `COPY TO STDOUT` stream into batches of `schema` (whose columns are
/// of `kinds`' Arrow types), fed in pieces as they arrive.
pub struct Decoder {
    kinds: Vec<PgKind>,
    cols: Vec<Col>,
    schema: SchemaRef,
    pending: Vec<u8>,
    header_done: bool,
    ended: bool,
    /// Rows in the batch being built.
    pub len: usize,
    /// Rows decoded in all.
    pub rows: u64,
    cap: usize,
    /// Set by [`Decoder::digest`]: rows are digested instead of decoded.
    digest: Option<RowDigest>,
}

impl Decoder {
    /// A decoder for rows of `kinds`, into batches of `schema`, `cap` rows at most.
    pub fn new(kinds: &[PgKind], schema: SchemaRef, cap: usize) -> Self {
        Decoder {
            kinds: kinds.to_vec(),
            cols: kinds.iter().map(|k| Col::new(*k, cap)).collect(),
            schema,
            pending: Vec::new(),
            header_done: false,
            ended: false,
            len: 0,
            rows: 0,
            cap,
            digest: None,
        }
    }

    /// A decoder that only digests the rows of `kinds` (see [`RowDigest`]); read the
    /// digest with [`Decoder::digested`].
    pub fn digest(kinds: &[PgKind]) -> Self {
        Decoder {
            cols: Vec::new(),
            digest: Some(RowDigest::default()),
            ..Decoder::new(kinds, Arc::new(arrow::datatypes::Schema::empty()), 0)
        }
    }

    /// The digest of the rows fed so far, for a decoder made by [`Decoder::digest`].
    pub fn digested(&self) -> Option<RowDigest> {
        self.digest
    }

    /// Readies the decoder for another `COPY` stream (its header and trailer); the rows
    /// decoded so far stay.
    pub fn restart(&mut self) {
        self.pending.clear();
        self.header_done = false;
        self.ended = false;
    }

    /// Decodes what `data` completes; calls `full` with each batch of `cap` rows.
    /// `Err((column, reason))`: `column` is `None` for a broken stream.
    pub fn feed(
        &mut self,
        data: &[u8],
        full: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<(), (Option<usize>, String)> {
        // The server sends one message per row, so `data` usually holds whole rows:
        // decode it in place, and keep only an incomplete tail for the next call.
        if self.pending.is_empty() {
            let used = self.decode(data, full)?;
            self.pending.extend_from_slice(&data[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.pending);
            buf.extend_from_slice(data);
            let used = self.decode(&buf, full)?;
            buf.drain(..used);
            self.pending = buf;
        }
        Ok(())
    }

    /// Decodes the rows `buf` holds whole; returns how many bytes they took.
    fn decode(
        &mut self,
        buf: &[u8],
        full: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<usize, (Option<usize>, String)> {
        let mut at = 0;
        let broken = |m: &str| (None, format!("broken COPY stream: {m}"));
        if !self.header_done {
            if buf.len() < HEADER.len() {
                return Ok(0);
            }
            if &buf[..11] != b"PGCOPY\n\xff\r\n\0" {
                return Err(broken("no binary COPY signature"));
            }
            let ext = u32::from_be_bytes(buf[15..19].try_into().expect("4 bytes")) as usize;
            if buf.len() < 19 + ext {
                return Ok(0);
            }
            at = 19 + ext;
            self.header_done = true;
        }
        loop {
            if self.ended || buf.len() < at + 2 {
                break;
            }
            let n = i16::from_be_bytes([buf[at], buf[at + 1]]);
            if n == -1 {
                self.ended = true;
                at += 2;
                break;
            }
            if n as usize != self.kinds.len() {
                return Err(broken(&format!(
                    "a row of {n} fields, {} expected",
                    self.kinds.len()
                )));
            }
            // Is the whole tuple here?
            let mut p = at + 2;
            let mut complete = true;
            for _ in 0..n {
                if buf.len() < p + 4 {
                    complete = false;
                    break;
                }
                let len = i32::from_be_bytes(buf[p..p + 4].try_into().expect("4 bytes"));
                p += 4 + len.max(0) as usize;
                if buf.len() < p {
                    complete = false;
                    break;
                }
            }
            if !complete {
                break;
            }
            if let Some(d) = &mut self.digest {
                d.add(&buf[at..p]);
                at = p;
                self.rows += 1;
                continue;
            }
            let mut p = at + 2;
            for i in 0..n as usize {
                let len = i32::from_be_bytes(buf[p..p + 4].try_into().expect("4 bytes"));
                p += 4;
                if len < 0 {
                    self.cols[i].null();
                } else {
                    let v = &buf[p..p + len as usize];
                    p += len as usize;
                    // The batch under way is abandoned with the error.
                    self.cols[i].value(v).map_err(|reason| (Some(i), reason))?;
                }
            }
            at = p;
            self.len += 1;
            self.rows += 1;
            if self.len == self.cap {
                let batch = self.finish().map_err(|e| (None, e.to_string()))?;
                full(batch).map_err(|e| (None, e.to_string()))?;
            }
        }
        Ok(at)
    }

    /// The rows decoded since the last batch.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = self.cols.iter_mut().map(Col::finish).collect();
        self.len = 0;
        RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| Error::Internal(format!("decoded batch: {e}")))
    }

    /// Whether the trailer was seen.
    pub fn ended(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::postgres::Encoder;
    use crate::types::ColumnType;
    use arrow::datatypes::DataType;

    /// The digest of rows as sent, as read back in any pieces, in any order.
    fn digests(ids: &[Option<i64>], names: &[Option<&str>]) -> (RowDigest, Vec<u8>) {
        use arrow::array::{Int64Array, StringArray};
        use arrow::datatypes::{Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(names.to_vec())),
            ],
        )
        .unwrap();
        let mut enc = Encoder::digesting();
        enc.rows(&batch, &[PgKind::Int8, PgKind::Text], "here", &[])
            .unwrap();
        enc.finish();
        (enc.digest.unwrap(), enc.buf)
    }

    fn digest_of_stream(stream: &[u8], piece: usize) -> RowDigest {
        let mut dec = Decoder::digest(&[PgKind::Int8, PgKind::Text]);
        for part in stream.chunks(piece) {
            dec.feed(part, &mut |_| unreachable!("a digest makes no batches"))
                .unwrap();
        }
        assert!(dec.ended());
        dec.digested().unwrap()
    }

    #[test]
    fn rows_read_back_digest_as_they_were_sent_in_any_order_and_a_changed_value_does_not() {
        let (sent, stream) = digests(
            &[Some(1), Some(2), None, Some(4)],
            &[Some("a"), None, Some("Zoë"), Some("")],
        );
        assert_eq!(sent.rows, 4);
        for piece in [1, 5, 1000] {
            assert_eq!(digest_of_stream(&stream, piece), sent, "pieces of {piece}");
        }
        let (reordered, _) = digests(
            &[Some(4), None, Some(2), Some(1)],
            &[Some(""), Some("Zoë"), None, Some("a")],
        );
        assert_eq!(reordered, sent);
        // One value changed, a NULL that became empty, a row missing, a row doubled.
        for (ids, names) in [
            (
                &[Some(1), Some(2), None, Some(4)][..],
                &[Some("a"), None, Some("Zoe"), Some("")][..],
            ),
            (
                &[Some(1), Some(2), None, Some(4)],
                &[Some("a"), Some(""), Some("Zoë"), Some("")],
            ),
            (&[Some(1), Some(2), None], &[Some("a"), None, Some("Zoë")]),
            (
                &[Some(1), Some(2), None, Some(4), Some(4)],
                &[Some("a"), None, Some("Zoë"), Some(""), Some("")],
            ),
        ] {
            assert_ne!(digests(ids, names).0, sent, "{ids:?} {names:?}");
        }
        // A field count or length that does not match is a broken stream, not a digest.
        let mut broken = stream.clone();
        broken[19] = 0;
        broken[20] = 3;
        let mut dec = Decoder::digest(&[PgKind::Int8, PgKind::Text]);
        let err = dec.feed(&broken, &mut |_| Ok(())).unwrap_err();
        assert_eq!(err.1, "broken COPY stream: a row of 3 fields, 2 expected");
    }

    #[test]
    fn a_batch_of_every_kind_survives_encoding_and_decoding_in_any_pieces() {
        use arrow::datatypes::{Field, Schema};
        let types = [
            ColumnType::SmallInt,
            ColumnType::Int,
            ColumnType::BigInt,
            ColumnType::Real,
            ColumnType::Double,
            ColumnType::Decimal {
                precision: 38,
                scale: 10,
            },
            ColumnType::Boolean,
            ColumnType::Text,
            ColumnType::Date,
            ColumnType::Time,
            ColumnType::Timestamp,
            ColumnType::TimestampTz,
            ColumnType::Bytes,
        ];
        let schema: SchemaRef = std::sync::Arc::new(Schema::new(
            types
                .iter()
                .enumerate()
                .map(|(i, t)| Field::new(format!("c{i}"), t.arrow_type(), true))
                .collect::<Vec<_>>(),
        ));
        // Built directly rather than parsed, so every edge is exact.
        use arrow::array::*;
        let cols: Vec<ArrayRef> = vec![
            std::sync::Arc::new(Int16Array::from(vec![Some(i16::MIN), Some(i16::MAX), None])),
            std::sync::Arc::new(Int32Array::from(vec![Some(i32::MIN), Some(i32::MAX), None])),
            std::sync::Arc::new(Int64Array::from(vec![Some(i64::MIN), Some(i64::MAX), None])),
            std::sync::Arc::new(Float32Array::from(vec![
                Some(f32::MIN),
                Some(f32::NAN),
                None,
            ])),
            std::sync::Arc::new(Float64Array::from(vec![
                Some(f64::NEG_INFINITY),
                Some(5e-324),
                None,
            ])),
            std::sync::Arc::new(
                Decimal128Array::from(vec![
                    Some(-99_999_999_999_999_999_999_999_999_999_999_999_999),
                    Some(1),
                    None,
                ])
                .with_precision_and_scale(38, 10)
                .unwrap(),
            ),
            std::sync::Arc::new(BooleanArray::from(vec![Some(false), Some(true), None])),
            std::sync::Arc::new(StringArray::from(vec![Some(""), Some("Zoë ☃ 😀"), None])),
            std::sync::Arc::new(Date32Array::from(vec![
                Some(-719_162),
                Some(2_932_896),
                None,
            ])),
            std::sync::Arc::new(Time64MicrosecondArray::from(vec![
                Some(0),
                Some(86_399_999_999),
                None,
            ])),
            std::sync::Arc::new(TimestampMicrosecondArray::from(vec![
                Some(-62_135_596_800_000_000),
                Some(253_402_300_799_999_999),
                None,
            ])),
            std::sync::Arc::new(
                TimestampMicrosecondArray::from(vec![Some(-1), Some(EPOCH_MICROS), None])
                    .with_timezone("UTC"),
            ),
            std::sync::Arc::new(BinaryArray::from(vec![
                Some(&b""[..]),
                Some(&[0u8, 255][..]),
                None,
            ])),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
        let kinds: Vec<PgKind> = types.iter().map(|t| PgKind::for_type(*t)).collect();
        let mut enc = Encoder::new();
        enc.rows(&batch, &kinds, "here", &[]).unwrap();
        enc.finish();
        for piece in [1, 3, 7, 1000] {
            let mut dec = Decoder::new(&kinds, schema.clone(), 2);
            let mut out = Vec::new();
            for part in enc.buf.chunks(piece) {
                dec.feed(part, &mut |b| {
                    out.push(b);
                    Ok(())
                })
                .unwrap();
            }
            assert!(dec.ended());
            if dec.len > 0 {
                out.push(dec.finish().unwrap());
            }
            let back = arrow::compute::concat_batches(&schema, &out).unwrap();
            // NaN != NaN, so compare the bits through the checksum-free debug text.
            assert_eq!(
                format!("{back:?}"),
                format!("{batch:?}"),
                "pieces of {piece}"
            );
        }
    }
}
