//! MySQL and MariaDB column types: the Arrow type each is decoded into, and the type a
//! pipeline type is created as.
//!
//! # Type mapping
//!
//! Reading (MySQL/MariaDB → Arrow → pipeline type):
//!
//! | MySQL / MariaDB | Arrow | pipeline type |
//! |---|---|---|
//! | `tinyint`, `tinyint unsigned`, `smallint`, `year` | Int16 | `smallint` |
//! | `smallint unsigned`, `mediumint` (either), `int` | Int32 | `integer` |
//! | `int unsigned`, `bigint` | Int64 | `bigint` |
//! | `bigint unsigned` | Int64; a value above 2^63-1 is a row error (declare `numeric(20,0)`) | `bigint` |
//! | `float` | Float32 | `real` |
//! | `double` | Float64 | `double` |
//! | `decimal(p,s)`, p ≤ 38 | Decimal128(p,s) | `numeric(p,s)` |
//! | `char`, `varchar`, `*text`, `enum`, `set`, `json`, `uuid` | Utf8 | `text` |
//! | `binary`, `varbinary`, `*blob` | Binary | `bytea` |
//! | `date` | Date32 | `date` |
//! | `time` | Time64(µs); a value outside 00:00–24:00 is a row error | `time` |
//! | `datetime(n)` | Timestamp(µs) | `timestamp` |
//! | `timestamp(n)` | Timestamp(µs, UTC) | `timestamptz` |
//!
//! `boolean` is `tinyint(1)` in MySQL and reads as an integer; declare
//! `[source.types] col = "boolean"` to read it as one (a value other than 0 or 1 is then a
//! row error). Any other type (`bit`, spatial types, `decimal(65,30)`) is an error naming
//! the column when the pipeline is validated; `[source.types] col = "text"` reads its text
//! form instead.
//!
//! Writing (pipeline type → created column):
//!
//! | pipeline type | MySQL / MariaDB |
//! |---|---|
//! | `smallint`, `integer`, `bigint` | `SMALLINT`, `INT`, `BIGINT` |
//! | `real`, `double` | `FLOAT`, `DOUBLE` |
//! | `numeric(p,s)` | `DECIMAL(p,s)` (scale up to 30) |
//! | `boolean` | `BOOLEAN` (`tinyint(1)`) |
//! | `text` | `LONGTEXT` (`TEXT` holds only 64 KiB) |
//! | `varchar(n)` | `VARCHAR(n)` (n up to 16383, the most a utf8mb4 row allows) |
//! | `date`, `time` | `DATE`, `TIME(6)` |
//! | `timestamp` | `DATETIME(6)` |
//! | `timestamptz` | `DATETIME(6)` holding UTC (`TIMESTAMP` stops in 2038) |
//! | `bytea` | `LONGBLOB` |
//!
//! Tables are created `DEFAULT CHARSET utf8mb4 COLLATE utf8mb4_bin`.

use arrow::datatypes::{DataType, TimeUnit};

use super::MyColumn;
use crate::Result;
use crate::types::ColumnType;

/// The Arrow column a value is decoded into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MyKind {
    /// Int16.
    Int16,
    /// Int32.
    Int32,
    /// Int64.
    Int64,
    /// Float32.
    Float32,
    /// Float64.
    Float64,
    /// Boolean, from a 0 or 1 integer.
    Bool,
    /// Utf8: strings, and decimals as their exact text (cast to Decimal128 afterwards).
    Text,
    /// Binary.
    Bytes,
    /// Date32.
    Date,
    /// Time64(µs).
    Time,
    /// Timestamp(µs).
    Timestamp,
    /// Timestamp(µs, UTC).
    TimestampUtc,
}

impl MyKind {
    /// How a target column of type `ty` is read back: the inverse of how sinks write it.
    /// Decimals read as text and are cast to the column's Decimal128 afterwards.
    pub fn for_type(ty: ColumnType) -> MyKind {
        match ty {
            ColumnType::SmallInt => MyKind::Int16,
            ColumnType::Int => MyKind::Int32,
            ColumnType::BigInt => MyKind::Int64,
            ColumnType::Real => MyKind::Float32,
            ColumnType::Double => MyKind::Float64,
            ColumnType::Boolean => MyKind::Bool,
            ColumnType::Decimal { .. } | ColumnType::Text | ColumnType::Varchar(_) => MyKind::Text,
            ColumnType::Date => MyKind::Date,
            ColumnType::Time => MyKind::Time,
            ColumnType::Timestamp => MyKind::Timestamp,
            ColumnType::TimestampTz => MyKind::TimestampUtc,
            ColumnType::Bytes => MyKind::Bytes,
        }
    }

    /// How a source column is read: its kind and the Arrow type it ends up as (a
    /// decimal's text becomes Decimal128). `Err` says why it cannot be read without loss.
    pub fn for_column(c: &MyColumn) -> Result<(MyKind, DataType), String> {
        let unsigned = c.column_type.contains("unsigned");
        let kind = match c.data_type.as_str() {
            "tinyint" | "year" => MyKind::Int16,
            "smallint" if !unsigned => MyKind::Int16,
            "smallint" | "mediumint" => MyKind::Int32,
            "int" | "integer" if !unsigned => MyKind::Int32,
            "int" | "integer" | "bigint" => MyKind::Int64,
            "float" => MyKind::Float32,
            "double" | "real" => MyKind::Float64,
            "decimal" | "numeric" => {
                let (p, s) = (c.precision.unwrap_or(0), c.scale.unwrap_or(0));
                if !(1..=38).contains(&p) {
                    return Err(format!(
                        "its type {} does not fit an Arrow decimal (precision up to 38)",
                        c.column_type
                    ));
                }
                return Ok((MyKind::Text, DataType::Decimal128(p as u8, s as i8)));
            }
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum"
            | "set" | "json" | "uuid"
                if c.charset.as_deref() != Some("binary") =>
            {
                MyKind::Text
            }
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "char"
            | "varchar" => MyKind::Bytes,
            "date" => MyKind::Date,
            "time" => MyKind::Time,
            "datetime" => MyKind::Timestamp,
            "timestamp" => MyKind::TimestampUtc,
            _ => {
                return Err(format!(
                    "rowshift cannot read its type {} without loss",
                    c.column_type
                ));
            }
        };
        Ok((kind, kind.arrow_type()))
    }

    /// The Arrow type values of this kind are decoded into.
    pub fn arrow_type(self) -> DataType {
        match self {
            MyKind::Int16 => DataType::Int16,
            MyKind::Int32 => DataType::Int32,
            MyKind::Int64 => DataType::Int64,
            MyKind::Float32 => DataType::Float32,
            MyKind::Float64 => DataType::Float64,
            MyKind::Bool => DataType::Boolean,
            MyKind::Text => DataType::Utf8,
            MyKind::Bytes => DataType::Binary,
            MyKind::Date => DataType::Date32,
            MyKind::Time => DataType::Time64(TimeUnit::Microsecond),
            MyKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            MyKind::TimestampUtc => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }
}

/// The MySQL column type a pipeline type is created as; `Err` when MySQL has no column
/// that holds it without loss.
pub fn my_decl(ty: ColumnType) -> Result<String, String> {
    Ok(match ty {
        ColumnType::SmallInt => "SMALLINT".into(),
        ColumnType::Int => "INT".into(),
        ColumnType::BigInt => "BIGINT".into(),
        ColumnType::Real => "FLOAT".into(),
        ColumnType::Double => "DOUBLE".into(),
        ColumnType::Decimal { precision, scale } => {
            if !(0..=30).contains(&scale) {
                return Err(format!(
                    "{ty} has scale {scale}; a MySQL DECIMAL holds a scale from 0 to 30"
                ));
            }
            format!("DECIMAL({precision},{scale})")
        }
        ColumnType::Boolean => "BOOLEAN".into(),
        ColumnType::Text => "LONGTEXT".into(),
        ColumnType::Varchar(n) => {
            if n > 16_383 {
                return Err(format!(
                    "{ty} is longer than the 16383 characters a utf8mb4 VARCHAR holds; declare type = \"text\""
                ));
            }
            format!("VARCHAR({n})")
        }
        ColumnType::Date => "DATE".into(),
        ColumnType::Time => "TIME(6)".into(),
        ColumnType::Timestamp | ColumnType::TimestampTz => "DATETIME(6)".into(),
        ColumnType::Bytes => "LONGBLOB".into(),
    })
}

/// Whether an existing column (`DATA_TYPE`) stores what a column of pipeline type `ty`
/// is sent as, without conversion. Text sent into a number column, say, would be
/// converted by the server; rowshift refuses that instead.
pub fn same_family(ty: ColumnType, data_type: &str) -> bool {
    let want: &[&str] = match ty {
        ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt => {
            &["tinyint", "smallint", "mediumint", "int", "bigint"]
        }
        ColumnType::Real | ColumnType::Double => &["float", "double"],
        ColumnType::Decimal { .. } => &["decimal"],
        ColumnType::Boolean => &["tinyint"],
        ColumnType::Text | ColumnType::Varchar(_) => &[
            "char",
            "varchar",
            "tinytext",
            "text",
            "mediumtext",
            "longtext",
            "enum",
            "set",
            "json",
            "uuid",
        ],
        ColumnType::Date => &["date"],
        ColumnType::Time => &["time"],
        ColumnType::Timestamp | ColumnType::TimestampTz => &["datetime", "timestamp"],
        ColumnType::Bytes => &[
            "binary",
            "varbinary",
            "tinyblob",
            "blob",
            "mediumblob",
            "longblob",
        ],
    };
    want.contains(&data_type)
}
