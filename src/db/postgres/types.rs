//! PostgreSQL column types: how each is laid out in binary `COPY`, the Arrow type it
//! becomes, and the type a pipeline type is created as.
//!
//! # Type mapping
//!
//! | PostgreSQL | Arrow | pipeline type |
//! |---|---|---|
//! | `smallint` | Int16 | `smallint` |
//! | `integer` | Int32 | `integer` |
//! | `bigint` | Int64 | `bigint` |
//! | `real` | Float32 | `real` |
//! | `double precision` | Float64 | `double` |
//! | `numeric(p,s)`, p ≤ 38, s ≥ 0 | Decimal128(p,s) | `numeric(p,s)` |
//! | `numeric` (no precision) | Utf8 (its exact text) | `text` |
//! | `boolean` | Boolean | `boolean` |
//! | `text`, `varchar(n)`, `char(n)`, `name` | Utf8 | `text`, `varchar(n)` |
//! | `json`, `jsonb`, `uuid` | Utf8 (their text form) | `text` |
//! | `date` | Date32 | `date` |
//! | `time` | Time64(µs) | `time` |
//! | `timestamp` | Timestamp(µs) | `timestamp` |
//! | `timestamptz` | Timestamp(µs, UTC) | `timestamptz` |
//! | `bytea` | Binary | `bytea` |
//!
//! Any other source type (`numeric(50,2)`, `interval`, arrays, ...) is an error naming the
//! column when the pipeline is validated; `[source.types] col = "text"` reads its text form
//! instead. `infinity` dates and timestamps and numeric `NaN` have no Arrow value: such a
//! row is an error naming it.

use arrow::datatypes::{DataType, TimeUnit};

use super::PgColumn;
use crate::Result;
use crate::types::ColumnType;

/// How a column's values are laid out in binary `COPY`, and the Arrow type they become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgKind {
    /// `int2`.
    Int2,
    /// `int4`.
    Int4,
    /// `int8`.
    Int8,
    /// `float4`.
    Float4,
    /// `float8`.
    Float8,
    /// `numeric` read into a Decimal128 of this precision and scale.
    Numeric(u8, i8),
    /// `numeric` read as its exact text.
    NumericText,
    /// `bool`.
    Bool,
    /// Text (any type selected as `::text`).
    Text,
    /// `date`.
    Date,
    /// `time`.
    Time,
    /// `timestamp`.
    Timestamp,
    /// `timestamptz`.
    TimestampTz,
    /// `bytea`.
    Bytea,
}

impl PgKind {
    /// The kind a pipeline column type is written and read back as.
    pub fn for_type(ty: ColumnType) -> PgKind {
        match ty {
            ColumnType::SmallInt => PgKind::Int2,
            ColumnType::Int => PgKind::Int4,
            ColumnType::BigInt => PgKind::Int8,
            ColumnType::Real => PgKind::Float4,
            ColumnType::Double => PgKind::Float8,
            ColumnType::Decimal { precision, scale } => PgKind::Numeric(precision, scale),
            ColumnType::Boolean => PgKind::Bool,
            ColumnType::Text | ColumnType::Varchar(_) => PgKind::Text,
            ColumnType::Date => PgKind::Date,
            ColumnType::Time => PgKind::Time,
            ColumnType::Timestamp => PgKind::Timestamp,
            ColumnType::TimestampTz => PgKind::TimestampTz,
            ColumnType::Bytes => PgKind::Bytea,
        }
    }

    /// The kind a source column is read as, and whether it must be selected as `::text`;
    /// `Err` says why it cannot be read without loss.
    pub fn for_column(c: &PgColumn) -> Result<(PgKind, bool), String> {
        let kind = match c.type_name.as_str() {
            // An enum's binary form is its label.
            _ if c.is_enum => PgKind::Text,
            "int2" => PgKind::Int2,
            "int4" => PgKind::Int4,
            "int8" => PgKind::Int8,
            "float4" => PgKind::Float4,
            "float8" => PgKind::Float8,
            "bool" => PgKind::Bool,
            "text" | "varchar" | "bpchar" | "name" => PgKind::Text,
            "json" | "jsonb" | "uuid" => return Ok((PgKind::Text, true)),
            "date" => PgKind::Date,
            "time" => PgKind::Time,
            "timestamp" => PgKind::Timestamp,
            "timestamptz" => PgKind::TimestampTz,
            "bytea" => PgKind::Bytea,
            "numeric" if c.typmod < 4 => PgKind::NumericText,
            "numeric" => {
                let m = c.typmod - 4;
                let precision = (m >> 16) & 0xffff;
                // PostgreSQL 15 stores the scale as an 11-bit signed number.
                let scale = ((m & 0x7ff) ^ 1024) - 1024;
                if !(1..=38).contains(&precision) || scale < 0 {
                    return Err(format!(
                        "its type {} does not fit an Arrow decimal (precision up to 38, scale 0 or more)",
                        c.shown_type
                    ));
                }
                PgKind::Numeric(precision as u8, scale as i8)
            }
            _ => {
                return Err(format!(
                    "rowshift cannot read its type {} without loss",
                    c.shown_type
                ));
            }
        };
        Ok((kind, false))
    }

    /// The Arrow type values of this kind become.
    pub fn arrow_type(self) -> DataType {
        match self {
            PgKind::Int2 => DataType::Int16,
            PgKind::Int4 => DataType::Int32,
            PgKind::Int8 => DataType::Int64,
            PgKind::Float4 => DataType::Float32,
            PgKind::Float8 => DataType::Float64,
            PgKind::Numeric(p, s) => DataType::Decimal128(p, s),
            PgKind::NumericText | PgKind::Text => DataType::Utf8,
            PgKind::Bool => DataType::Boolean,
            PgKind::Date => DataType::Date32,
            PgKind::Time => DataType::Time64(TimeUnit::Microsecond),
            PgKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            PgKind::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            PgKind::Bytea => DataType::Binary,
        }
    }
}

/// The PostgreSQL column type a pipeline type is created as.
pub fn pg_decl(ty: ColumnType) -> String {
    match ty {
        ColumnType::SmallInt => "smallint".into(),
        ColumnType::Int => "integer".into(),
        ColumnType::BigInt => "bigint".into(),
        ColumnType::Real => "real".into(),
        ColumnType::Double => "double precision".into(),
        ColumnType::Decimal { precision, scale } => format!("numeric({precision},{scale})"),
        ColumnType::Boolean => "boolean".into(),
        ColumnType::Text => "text".into(),
        ColumnType::Varchar(n) => format!("varchar({n})"),
        ColumnType::Date => "date".into(),
        ColumnType::Time => "time".into(),
        ColumnType::Timestamp => "timestamp".into(),
        ColumnType::TimestampTz => "timestamptz".into(),
        ColumnType::Bytes => "bytea".into(),
    }
}
