//! Declared column types and their Arrow and SQL counterparts.

pub mod cast;
pub mod datefmt;

pub use crate::error::diag::quote_value;

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

/// The double a SQLite (or any float64) target stores for the `real` value `v`: the
/// double nearest to the shortest decimal that reads back as `v` (`-2.1f32` is stored as
/// the double `-2.1`, not as `-2.0999999046325684`, which is `v` widened bit for bit).
/// A reader of the column sees the value as PostgreSQL's `real` prints it. Infinities
/// and NaN stay what they are.
pub fn float32_as_double(v: f32) -> f64 {
    if !v.is_finite() {
        return v as f64;
    }
    // Rust prints the shortest decimal that parses back to the same float32.
    let mut text = String::with_capacity(24);
    {
        use std::fmt::Write;
        let _ = write!(text, "{v:e}");
    }
    text.parse::<f64>().unwrap_or(v as f64)
}

/// The `real` value a double is, if it is one without loss: the float32 whose
/// [`float32_as_double`] is `d` (`-2.1`), or whose exact widening is `d`
/// (`-2.0999999046325684`, the bits of `-2.1f32`). `None` for a double that neither
/// (`0.1 + 1e-12`, `1e300`).
pub fn double_as_float32(d: f64) -> Option<f32> {
    if d.is_nan() {
        return Some(f32::NAN);
    }
    let near = d as f32;
    if near as f64 == d {
        return Some(near);
    }
    // Rounding the double to float32 lands on the value or, near the middle between two
    // float32s, on a neighbour.
    [near, near.next_down(), near.next_up()]
        .into_iter()
        .find(|&c| float32_as_double(c).to_bits() == d.to_bits())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_is_stored_as_the_double_of_its_shortest_decimal() {
        assert_eq!(float32_as_double(-2.1), -2.1);
        assert_eq!(float32_as_double(0.1), 0.1);
        assert_eq!(float32_as_double(3.402_823_5e38), 3.402_823_5e38);
        assert_eq!(float32_as_double(f32::MIN_POSITIVE), 1.175_494_4e-38);
        assert_eq!(float32_as_double(1e-45), 1e-45);
        assert_eq!(float32_as_double(f32::INFINITY), f64::INFINITY);
        assert!(float32_as_double(-0.0).is_sign_negative());
        assert!(float32_as_double(f32::NAN).is_nan());
        for v in [-2.1f32, 0.1, 3.402_823_5e38, 1e-45, 16_777_217.0, -0.0, 7.0] {
            assert_eq!(
                double_as_float32(float32_as_double(v)).map(f32::to_bits),
                Some(v.to_bits())
            );
        }
        // Every float32 in a sweep maps to a double that maps back to it.
        for bits in (1u32..0x7f80_0000).step_by(4_093) {
            let v = f32::from_bits(bits);
            assert_eq!(double_as_float32(float32_as_double(v)), Some(v), "{v:e}");
        }
        assert_eq!(double_as_float32((-2.1f32) as f64), Some(-2.1));
        assert_eq!(double_as_float32(0.1 + 1e-12), None);
    }

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
