//! Encodes Arrow batches as a binary `COPY FROM STDIN` stream.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, Time64MicrosecondType, TimeUnit, TimestampMicrosecondType,
};
use arrow::record_batch::RecordBatch;

use super::hash::{HashSum, RowHasher};
use super::numeric::encode_numeric;
use super::{EPOCH_DAYS, EPOCH_MICROS, PgKind};
use crate::sql::RowDigest;
use crate::{Error, Result, RowFailure};

/// The header every binary `COPY` stream starts with: signature, flags, extension length.
pub(super) const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Encodes Arrow batches as a binary `COPY FROM STDIN` stream.
pub struct Encoder {
    /// Bytes not yet sent.
    pub buf: Vec<u8>,
    started: bool,
    /// The digest of the rows encoded so far, when asked for (see
    /// [`Encoder::digesting`]).
    pub digest: Option<RowDigest>,
    /// PostgreSQL's own hashes of the rows encoded so far, when asked for (see
    /// [`Encoder::hashing`]).
    pub hashed: Option<(RowHasher, HashSum)>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// An encoder whose first bytes are the header.
    pub fn new() -> Self {
        Encoder {
            buf: Vec::with_capacity(1 << 20),
            started: false,
            digest: None,
            hashed: None,
        }
    }

    /// An encoder that also digests the rows' bytes ([`RowDigest`]), for a read-back
    /// that compares the bytes it reads with them.
    pub fn digesting() -> Self {
        Encoder {
            digest: Some(RowDigest::default()),
            ..Self::new()
        }
    }

    /// An encoder that also sums PostgreSQL's hashes of the rows it encodes, which the
    /// read-back compares with the server's sum over what it stored.
    pub fn hashing(hasher: RowHasher) -> Self {
        Encoder {
            hashed: Some((hasher, HashSum::default())),
            ..Self::new()
        }
    }

    /// Appends every row of `batch` (columns in `kinds` order). `here` names the target
    /// and `key` the columns that name rows in messages.
    pub fn rows(
        &mut self,
        batch: &RecordBatch,
        kinds: &[PgKind],
        here: &str,
        key: &[String],
    ) -> Result<()> {
        if !self.started {
            self.buf.extend_from_slice(HEADER);
            self.started = true;
        }
        let cols = batch.columns();
        let n = cols.len() as i16;
        for row in 0..batch.num_rows() {
            let start = self.buf.len();
            self.buf.extend_from_slice(&n.to_be_bytes());
            for (i, (col, kind)) in cols.iter().zip(kinds).enumerate() {
                encode_value(&mut self.buf, col, *kind, row).map_err(|reason| {
                    let name = batch.schema().field(i).name().clone();
                    let at = match crate::chunk::key::row_label(batch, key, row) {
                        Some(k) => format!("{here}, {k}"),
                        None => format!("{here}, row {}", row + 1),
                    };
                    Error::Row(RowFailure {
                        location: at,
                        column: Some(name),
                        value: crate::types::cast::value_text(col.as_ref(), row),
                        reason,
                    })
                })?;
            }
            if let Some(digest) = &mut self.digest {
                digest.add(&self.buf[start..]);
            }
        }
        // Hashed once the whole batch is encoded: the encoder has refused any value
        // the server would not store as sent.
        if let Some((hasher, sum)) = &mut self.hashed {
            hasher
                .add_batch(batch, sum)
                .map_err(|e| Error::Internal(format!("{here}: {e}")))?;
        }
        Ok(())
    }

    /// Appends the trailer; the stream is complete.
    pub fn finish(&mut self) {
        if !self.started {
            self.buf.extend_from_slice(HEADER);
            self.started = true;
        }
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
    }
}

fn field(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    buf.extend_from_slice(bytes);
}

fn encode_value(buf: &mut Vec<u8>, col: &ArrayRef, kind: PgKind, row: usize) -> Result<(), String> {
    if col.is_null(row) {
        buf.extend_from_slice(&(-1i32).to_be_bytes());
        return Ok(());
    }
    let mismatch = || {
        format!(
            "internal: a {} array for a column written as {kind:?}",
            col.data_type()
        )
    };
    match (kind, col.data_type()) {
        (PgKind::Int2, DataType::Int16) => field(
            buf,
            &col.as_primitive::<Int16Type>().value(row).to_be_bytes(),
        ),
        (PgKind::Int4, DataType::Int32) => field(
            buf,
            &col.as_primitive::<Int32Type>().value(row).to_be_bytes(),
        ),
        (PgKind::Int8, DataType::Int64) => field(
            buf,
            &col.as_primitive::<Int64Type>().value(row).to_be_bytes(),
        ),
        (PgKind::Float4, DataType::Float32) => field(
            buf,
            &col.as_primitive::<Float32Type>().value(row).to_be_bytes(),
        ),
        (PgKind::Float8, DataType::Float64) => field(
            buf,
            &col.as_primitive::<Float64Type>().value(row).to_be_bytes(),
        ),
        (PgKind::Numeric(_, scale), DataType::Decimal128(..)) => {
            let v = col.as_primitive::<Decimal128Type>().value(row);
            let bytes = encode_numeric(v, scale);
            field(buf, &bytes);
        }
        (PgKind::Bool, DataType::Boolean) => field(buf, &[col.as_boolean().value(row) as u8]),
        (PgKind::Text, DataType::Utf8) => {
            let s = col.as_string::<i32>().value(row);
            if s.contains('\0') {
                return Err("PostgreSQL text cannot hold the NUL character (\\0)".into());
            }
            field(buf, s.as_bytes())
        }
        (PgKind::Date, DataType::Date32) => {
            // PostgreSQL takes the extreme values as -infinity and infinity.
            let d = col
                .as_primitive::<Date32Type>()
                .value(row)
                .checked_sub(EPOCH_DAYS)
                .filter(|d| *d != i32::MIN && *d != i32::MAX)
                .ok_or("date out of PostgreSQL's range")?;
            field(buf, &d.to_be_bytes())
        }
        (PgKind::Time, DataType::Time64(TimeUnit::Microsecond)) => field(
            buf,
            &col.as_primitive::<Time64MicrosecondType>()
                .value(row)
                .to_be_bytes(),
        ),
        (
            PgKind::Timestamp | PgKind::TimestampTz,
            DataType::Timestamp(TimeUnit::Microsecond, _),
        ) => {
            let v = col.as_primitive::<TimestampMicrosecondType>().value(row);
            let v = v
                .checked_sub(EPOCH_MICROS)
                .filter(|v| *v != i64::MIN && *v != i64::MAX)
                .ok_or("timestamp out of PostgreSQL's range")?;
            field(buf, &v.to_be_bytes())
        }
        (PgKind::Bytea, DataType::Binary) => field(buf, col.as_binary::<i32>().value(row)),
        _ => return Err(mismatch()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn text_with_a_nul_is_a_row_failure_naming_the_column() {
        use arrow::array::StringArray;
        use arrow::datatypes::{Field, Schema};
        let schema =
            std::sync::Arc::new(Schema::new(vec![Field::new("note", DataType::Utf8, true)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![std::sync::Arc::new(StringArray::from(vec!["a\0b"]))],
        )
        .unwrap();
        let e = Encoder::new()
            .rows(&batch, &[PgKind::Text], "pg table t", &[])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "row rejected at pg table t, row 1, column note, value 'a\0b': PostgreSQL text cannot hold the NUL character (\\0)"
        );
    }

    #[test]
    fn dates_and_timestamps_postgresql_would_store_as_infinity_are_row_failures() {
        use arrow::array::{Date32Array, TimestampMicrosecondArray};
        use arrow::datatypes::{Field, Schema};
        let encode = |col: ArrayRef, kind: PgKind| {
            let schema = Arc::new(Schema::new(vec![Field::new(
                "d",
                col.data_type().clone(),
                true,
            )]));
            let batch = RecordBatch::try_new(schema, vec![col]).unwrap();
            Encoder::new()
                .rows(&batch, &[kind], "pg table t", &[])
                .map_err(|e| e.to_string())
        };
        // i32::MIN days after 2000-01-01 is -infinity; one day less wraps around to
        // infinity.
        for days in [i32::MIN + EPOCH_DAYS, i32::MIN + EPOCH_DAYS - 1] {
            let e = encode(Arc::new(Date32Array::from(vec![days])), PgKind::Date).unwrap_err();
            assert!(e.ends_with("date out of PostgreSQL's range"), "{e}");
        }
        assert!(
            encode(
                Arc::new(Date32Array::from(vec![i32::MIN + EPOCH_DAYS + 1])),
                PgKind::Date
            )
            .is_ok()
        );
        let e = encode(
            Arc::new(TimestampMicrosecondArray::from(vec![
                i64::MIN + EPOCH_MICROS,
            ])),
            PgKind::Timestamp,
        )
        .unwrap_err();
        assert!(e.ends_with("timestamp out of PostgreSQL's range"), "{e}");
    }
}
