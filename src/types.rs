//! Declared column types and their Arrow and SQL counterparts.

use std::fmt;
use std::str::FromStr;

use arrow::datatypes::{DataType, TimeUnit};

/// The type of a target (or declared source) column, as written in a pipeline file.
///
/// Names follow PostgreSQL, so `integer` is 32 bits and `bigint` 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// 16-bit integer: `smallint`, `int2`.
    SmallInt,
    /// 32-bit integer: `integer`, `int`, `int4`.
    Int,
    /// 64-bit integer: `bigint`, `int8`.
    BigInt,
    /// 32-bit float: `real`, `float4`.
    Real,
    /// 64-bit float: `double`, `double precision`, `float8`, `float`.
    Double,
    /// Exact decimal: `numeric(p, s)` or `decimal(p, s)`, precision up to 38.
    Decimal {
        /// Total digits.
        precision: u8,
        /// Digits after the point.
        scale: i8,
    },
    /// `boolean`, `bool`.
    Boolean,
    /// Unbounded text: `text`, `string`.
    Text,
    /// Text of at most `n` characters: `varchar(n)`.
    Varchar(u32),
    /// Calendar date: `date`.
    Date,
    /// Time of day, microseconds: `time`.
    Time,
    /// Timestamp without zone, microseconds: `timestamp`.
    Timestamp,
    /// Timestamp with zone, stored as UTC, microseconds: `timestamptz`.
    TimestampTz,
    /// Bytes: `bytea`, `blob`, `binary`.
    Bytes,
}

/// The names `ColumnType::from_str` accepts, for error messages.
pub const TYPE_NAMES: &str = "smallint, integer, bigint, real, double, numeric(p,s), boolean, text, \
varchar(n), date, time, timestamp, timestamptz, bytea";

impl FromStr for ColumnType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        let (base, args) = match lower.split_once('(') {
            Some((base, rest)) => {
                let inner = rest
                    .strip_suffix(')')
                    .ok_or_else(|| format!("unknown type `{s}`: missing `)`"))?;
                (base.trim(), Some(inner))
            }
            None => (lower.as_str(), None),
        };
        let numbers = |args: &str| -> Result<Vec<u32>, String> {
            args.split(',')
                .map(|a| {
                    a.trim()
                        .parse::<u32>()
                        .map_err(|_| format!("`{a}` in type `{s}` is not a number"))
                })
                .collect()
        };
        let t = match (base, args) {
            ("smallint" | "int2", None) => ColumnType::SmallInt,
            ("integer" | "int" | "int4", None) => ColumnType::Int,
            ("bigint" | "int8", None) => ColumnType::BigInt,
            ("real" | "float4", None) => ColumnType::Real,
            ("double" | "double precision" | "float8" | "float", None) => ColumnType::Double,
            ("numeric" | "decimal", Some(args)) => {
                let n = numbers(args)?;
                let (precision, scale) = match n.as_slice() {
                    [p] => (*p, 0),
                    [p, s] => (*p, *s),
                    _ => return Err(format!("type `{s}` takes (precision, scale)")),
                };
                if !(1..=38).contains(&precision) || scale > precision {
                    return Err(format!(
                        "type `{s}`: precision must be 1 to 38 and scale at most the precision"
                    ));
                }
                ColumnType::Decimal {
                    precision: precision as u8,
                    scale: scale as i8,
                }
            }
            ("numeric" | "decimal", None) => {
                return Err(format!(
                    "type `{s}` needs a precision and scale, e.g. numeric(12,2)"
                ));
            }
            ("boolean" | "bool", None) => ColumnType::Boolean,
            ("text" | "string", None) => ColumnType::Text,
            ("varchar" | "character varying", Some(args)) => match numbers(args)?.as_slice() {
                [n] if *n > 0 => ColumnType::Varchar(*n),
                _ => return Err(format!("type `{s}` takes one positive length")),
            },
            ("varchar" | "character varying", None) => ColumnType::Text,
            ("date", None) => ColumnType::Date,
            ("time", None) => ColumnType::Time,
            ("timestamp" | "datetime", None) => ColumnType::Timestamp,
            ("timestamptz" | "timestamp with time zone", None) => ColumnType::TimestampTz,
            ("bytea" | "blob" | "binary" | "bytes", None) => ColumnType::Bytes,
            _ => return Err(format!("unknown type `{s}`; expected one of {TYPE_NAMES}")),
        };
        Ok(t)
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::SmallInt => f.write_str("smallint"),
            ColumnType::Int => f.write_str("integer"),
            ColumnType::BigInt => f.write_str("bigint"),
            ColumnType::Real => f.write_str("real"),
            ColumnType::Double => f.write_str("double"),
            ColumnType::Decimal { precision, scale } => write!(f, "numeric({precision},{scale})"),
            ColumnType::Boolean => f.write_str("boolean"),
            ColumnType::Text => f.write_str("text"),
            ColumnType::Varchar(n) => write!(f, "varchar({n})"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Time => f.write_str("time"),
            ColumnType::Timestamp => f.write_str("timestamp"),
            ColumnType::TimestampTz => f.write_str("timestamptz"),
            ColumnType::Bytes => f.write_str("bytea"),
        }
    }
}

impl ColumnType {
    /// The Arrow type values of this column travel as.
    pub fn arrow_type(&self) -> DataType {
        match self {
            ColumnType::SmallInt => DataType::Int16,
            ColumnType::Int => DataType::Int32,
            ColumnType::BigInt => DataType::Int64,
            ColumnType::Real => DataType::Float32,
            ColumnType::Double => DataType::Float64,
            ColumnType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Text | ColumnType::Varchar(_) => DataType::Utf8,
            ColumnType::Date => DataType::Date32,
            ColumnType::Time => DataType::Time64(TimeUnit::Microsecond),
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            ColumnType::TimestampTz => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            ColumnType::Bytes => DataType::Binary,
        }
    }

    /// The declared type of a SQLite column holding this type.
    ///
    /// Decimals, dates and times are stored as text: SQLite's NUMERIC affinity would turn
    /// `12.50` into the float `12.5`, losing the scale.
    pub fn sqlite_decl(&self) -> &'static str {
        match self {
            ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt | ColumnType::Boolean => {
                "INTEGER"
            }
            ColumnType::Real | ColumnType::Double => "REAL",
            ColumnType::Bytes => "BLOB",
            _ => "TEXT",
        }
    }
}

/// A value shown in a message: quoted, and shortened when very long.
pub fn quote_value(value: &str) -> String {
    const MAX: usize = 120;
    let n = value.chars().count();
    if n <= MAX {
        format!("'{value}'")
    } else {
        let head: String = value.chars().take(MAX).collect();
        format!("'{head}…' ({n} characters)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_type_names_and_round_trips_display() {
        for name in [
            "smallint",
            "integer",
            "bigint",
            "real",
            "double",
            "numeric(12,2)",
            "boolean",
            "text",
            "varchar(40)",
            "date",
            "time",
            "timestamp",
            "timestamptz",
            "bytea",
        ] {
            assert_eq!(name.parse::<ColumnType>().unwrap().to_string(), name);
        }
        assert_eq!(
            "DECIMAL(10, 3)".parse::<ColumnType>(),
            Ok(ColumnType::Decimal {
                precision: 10,
                scale: 3
            })
        );
        assert_eq!(
            "numeric(3,5)".parse::<ColumnType>().unwrap_err(),
            "type `numeric(3,5)`: precision must be 1 to 38 and scale at most the precision"
        );
        assert!(
            "uuidish"
                .parse::<ColumnType>()
                .unwrap_err()
                .starts_with("unknown type `uuidish`")
        );
    }
}
