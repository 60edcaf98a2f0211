//! Decoding SQLite rows into Arrow batches, strictly: a value whose storage class does not
//! fit its column's type is an error, never a silent conversion. Sources read tables with
//! it, and sinks read back what they wrote.

use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder,
    StringBuilder,
};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use sqlx::sqlite::{SqliteRow, SqliteValueRef};
use sqlx::{Decode, Row, Sqlite, TypeInfo, ValueRef};

use crate::plan::KeyValue;
use crate::transform::cast::cast_batch;
use crate::types::ColumnType;
use crate::{Error, Result, RowFailure};

/// How a column's values are read, from its declared type's affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Real,
    Text,
    Blob,
    Bool,
}

impl Kind {
    /// SQLite's affinity rules (section 3.1 of its datatype page), plus BOOLEAN. Columns
    /// with NUMERIC affinity (DECIMAL, DATE, ...) are read as text so nothing is rounded.
    pub(crate) fn from_decl(decl: &str) -> Kind {
        let d = decl.to_ascii_uppercase();
        if d.contains("INT") {
            Kind::Int
        } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") || d.is_empty() {
            Kind::Text
        } else if d.contains("BLOB") {
            Kind::Blob
        } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
            Kind::Real
        } else if d.contains("BOOL") {
            Kind::Bool
        } else {
            Kind::Text
        }
    }

    /// How a target column of type `ty` is read back: the inverse of how sinks bind it.
    pub(crate) fn for_type(ty: ColumnType) -> Kind {
        match ty {
            ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt => Kind::Int,
            ColumnType::Boolean => Kind::Bool,
            ColumnType::Real | ColumnType::Double => Kind::Real,
            ColumnType::Bytes => Kind::Blob,
            _ => Kind::Text,
        }
    }

    pub(crate) fn arrow_type(self) -> DataType {
        match self {
            Kind::Int => DataType::Int64,
            Kind::Real => DataType::Float64,
            Kind::Text => DataType::Utf8,
            Kind::Blob => DataType::Binary,
            Kind::Bool => DataType::Boolean,
        }
    }
}

pub(crate) fn bind_key<'q>(
    q: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
    v: &KeyValue,
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
    match v {
        KeyValue::Int(i) => q.bind(*i),
        KeyValue::Text(s) => q.bind(s.clone()),
    }
}

pub(crate) fn key_value(raw: SqliteValueRef<'_>) -> Result<Option<KeyValue>, String> {
    if raw.is_null() {
        return Ok(None);
    }
    match raw.type_info().name() {
        "INTEGER" => <i64 as Decode<Sqlite>>::decode(raw)
            .map(|v| Some(KeyValue::Int(v)))
            .map_err(|e| e.to_string()),
        "TEXT" => <String as Decode<Sqlite>>::decode(raw)
            .map(|v| Some(KeyValue::Text(v)))
            .map_err(|e| e.to_string()),
        other => Err(format!(
            "key values must be INTEGER or TEXT, found a {other} value"
        )),
    }
}

/// Column builders for one batch, decoding each value by its storage class.
pub(crate) struct BatchBuilder {
    kinds: Vec<Kind>,
    builders: Vec<Box<dyn ArrayBuilder>>,
    pub(crate) len: usize,
    cap: usize,
}

impl BatchBuilder {
    pub(crate) fn new(kinds: &[Kind], cap: usize) -> Self {
        let builders = kinds.iter().map(|k| Self::builder(*k, cap)).collect();
        BatchBuilder {
            kinds: kinds.to_vec(),
            builders,
            len: 0,
            cap,
        }
    }

    fn builder(kind: Kind, cap: usize) -> Box<dyn ArrayBuilder> {
        match kind {
            Kind::Int => Box::new(Int64Builder::with_capacity(cap)),
            Kind::Real => Box::new(Float64Builder::with_capacity(cap)),
            Kind::Text => Box::new(StringBuilder::with_capacity(cap, cap * 16)),
            Kind::Blob => Box::new(BinaryBuilder::with_capacity(cap, cap * 16)),
            Kind::Bool => Box::new(BooleanBuilder::with_capacity(cap)),
        }
    }

    pub(crate) fn push(
        &mut self,
        row: &SqliteRow,
        schema: &SchemaRef,
        key_index: usize,
        key: &str,
        here: &str,
    ) -> Result<(), RowFailure> {
        for i in 0..self.kinds.len() {
            let fail = |value: Option<String>, reason: String| {
                let key_text = row
                    .try_get_raw(key_index)
                    .ok()
                    .and_then(|v| key_value(v).ok().flatten())
                    .map_or_else(|| "?".to_string(), |k| k.to_string());
                RowFailure {
                    location: format!("{here}, {key}={key_text}"),
                    column: Some(schema.field(i).name().clone()),
                    value,
                    reason,
                }
            };
            let raw = row.try_get_raw(i).map_err(|e| fail(None, e.to_string()))?;
            let b = &mut self.builders[i];
            if raw.is_null() {
                append_null(self.kinds[i], b.as_mut());
                continue;
            }
            let storage = raw.type_info().name().to_string();
            let decode_err =
                |e: Box<dyn std::error::Error + Send + Sync>| fail(None, e.to_string());
            match (self.kinds[i], storage.as_str()) {
                (Kind::Int, "INTEGER") => downcast::<Int64Builder>(b)
                    .append_value(<i64 as Decode<Sqlite>>::decode(raw).map_err(decode_err)?),
                (Kind::Real, "REAL") => downcast::<Float64Builder>(b)
                    .append_value(<f64 as Decode<Sqlite>>::decode(raw).map_err(decode_err)?),
                (Kind::Real, "INTEGER") => {
                    let v = <i64 as Decode<Sqlite>>::decode(raw).map_err(decode_err)?;
                    if v.unsigned_abs() > 1 << 53 {
                        return Err(fail(
                            Some(v.to_string()),
                            "integer too large for a REAL column without losing precision".into(),
                        ));
                    }
                    downcast::<Float64Builder>(b).append_value(v as f64)
                }
                (Kind::Text, "TEXT") => downcast::<StringBuilder>(b)
                    .append_value(<&str as Decode<Sqlite>>::decode(raw).map_err(decode_err)?),
                (Kind::Text, "INTEGER") => downcast::<StringBuilder>(b).append_value(
                    <i64 as Decode<Sqlite>>::decode(raw)
                        .map_err(decode_err)?
                        .to_string(),
                ),
                // Rust prints the shortest text that reads back as the same float: exact.
                (Kind::Text, "REAL") => downcast::<StringBuilder>(b).append_value(
                    <f64 as Decode<Sqlite>>::decode(raw)
                        .map_err(decode_err)?
                        .to_string(),
                ),
                (Kind::Blob, "BLOB" | "TEXT") => downcast::<BinaryBuilder>(b)
                    .append_value(<&[u8] as Decode<Sqlite>>::decode(raw).map_err(decode_err)?),
                (Kind::Bool, "INTEGER") => {
                    match <i64 as Decode<Sqlite>>::decode(raw).map_err(decode_err)? {
                        0 => downcast::<BooleanBuilder>(b).append_value(false),
                        1 => downcast::<BooleanBuilder>(b).append_value(true),
                        v => {
                            return Err(fail(
                                Some(v.to_string()),
                                "a BOOLEAN column holds an integer other than 0 or 1".into(),
                            ));
                        }
                    }
                }
                (kind, storage) => {
                    let shown = <&str as Decode<Sqlite>>::decode(raw)
                        .ok()
                        .map(str::to_string);
                    return Err(fail(
                        shown,
                        format!("a {storage} value in a column read as {}", kind_name(kind)),
                    ));
                }
            }
        }
        self.len += 1;
        Ok(())
    }

    pub(crate) fn finish(
        &mut self,
        raw_schema: &SchemaRef,
        schema: &SchemaRef,
        here: &str,
    ) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(|b| b.finish()).collect();
        self.len = 0;
        self.builders = self
            .kinds
            .iter()
            .map(|k| Self::builder(*k, self.cap))
            .collect();
        let batch =
            RecordBatch::try_new(raw_schema.clone(), columns).map_err(|e| Error::data(here, e))?;
        if raw_schema == schema {
            return Ok(batch);
        }
        cast_batch(batch, schema, here, |row| {
            format!("{here}, batch row {}", row + 1)
        })
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Int => "INTEGER",
        Kind::Real => "REAL",
        Kind::Text => "TEXT",
        Kind::Blob => "BLOB",
        Kind::Bool => "BOOLEAN",
    }
}

fn downcast<T: 'static>(b: &mut Box<dyn ArrayBuilder>) -> &mut T {
    b.as_any_mut()
        .downcast_mut::<T>()
        .expect("builder matches its kind")
}

fn append_null(kind: Kind, b: &mut dyn ArrayBuilder) {
    let any = b.as_any_mut();
    match kind {
        Kind::Int => any
            .downcast_mut::<Int64Builder>()
            .expect("kind")
            .append_null(),
        Kind::Real => any
            .downcast_mut::<Float64Builder>()
            .expect("kind")
            .append_null(),
        Kind::Text => any
            .downcast_mut::<StringBuilder>()
            .expect("kind")
            .append_null(),
        Kind::Blob => any
            .downcast_mut::<BinaryBuilder>()
            .expect("kind")
            .append_null(),
        Kind::Bool => any
            .downcast_mut::<BooleanBuilder>()
            .expect("kind")
            .append_null(),
    }
}
