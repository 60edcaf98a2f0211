//! Casts that never lose information: a value that would overflow, round, truncate or turn
//! NULL is reported as a failure for its row instead of being coerced.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::kernels::cast::{CastOptions, can_cast_types, cast_with_options};
use arrow::compute::kernels::cmp::neq;
use std::sync::Arc;

use arrow::datatypes::{DataType, Int32Type, Int64Type, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{LocalResult, TimeZone};

/// One value that could not be cast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CastFailure {
    /// Row index within the array.
    pub row: usize,
    /// The value as text.
    pub value: Option<String>,
    /// Why, naming the target type.
    pub reason: String,
}

/// The value at `row` as text, for messages.
pub fn value_text(array: &dyn Array, row: usize) -> Option<String> {
    if array.is_null(row) {
        return None;
    }
    // The common types without building a formatter: a chunk may name every one of its
    // rows in the quarantine. The text is the formatter's.
    match array.data_type() {
        DataType::Utf8 => return Some(array.as_string::<i32>().value(row).to_string()),
        DataType::Int64 => return Some(array.as_primitive::<Int64Type>().value(row).to_string()),
        DataType::Int32 => return Some(array.as_primitive::<Int32Type>().value(row).to_string()),
        _ => {}
    }
    ArrayFormatter::try_new(array, &FormatOptions::default())
        .ok()
        .map(|f| f.value(row).to_string())
}

/// Casts `array` to `to`, returning the cast array and the rows that could not be cast
/// without loss (those rows are NULL in the result).
///
/// Errors only when no value of the source type can ever become the target type.
pub fn cast_lossless(
    array: &ArrayRef,
    to: &DataType,
) -> Result<(ArrayRef, Vec<CastFailure>), ArrowError> {
    let from = array.data_type();
    if from == to {
        return Ok((array.clone(), Vec::new()));
    }
    if !can_cast_types(from, to) {
        return Err(ArrowError::CastError(format!("cannot cast {from} to {to}")));
    }
    if (from, to) == (&DataType::Float64, &DataType::Float32) {
        return Ok(double_to_real(array));
    }
    let safe = CastOptions {
        safe: true,
        ..Default::default()
    };
    let cast = cast_with_options(array, to, &safe)?;
    let mut failures = Vec::new();
    let parsing = matches!(
        from,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    );
    // Values that became NULL: unparsable text, or out of the target's range.
    if cast.null_count() > array.null_count() {
        for row in 0..array.len() {
            if array.is_valid(row) && cast.is_null(row) {
                let reason = if parsing {
                    array
                        .as_string_opt::<i32>()
                        .and_then(|a| integer_reason(a.value(row), to))
                        .unwrap_or_else(|| format!("cannot be read as {}", type_name(to)))
                } else if matches!(from, DataType::Binary | DataType::LargeBinary) {
                    "is not valid UTF-8".to_string()
                } else {
                    match range_of(to) {
                        Some(range) => format!("is out of range for {} ({range})", type_name(to)),
                        None => format!("does not fit in {}", type_name(to)),
                    }
                };
                failures.push(CastFailure {
                    row,
                    value: value_text(array.as_ref(), row),
                    reason,
                });
            }
        }
    }
    // Values that changed: cast back and compare. Catches rounding (1.5 to integer, 1.005
    // to numeric(10,2), a big integer to float, a timestamp to a date).
    if round_trips(from, to) {
        let back = cast_with_options(&cast, from, &safe)?;
        let changed = neq(&back, array)?;
        for row in 0..array.len() {
            if changed.is_valid(row) && changed.value(row) {
                failures.push(CastFailure {
                    row,
                    value: value_text(array.as_ref(), row),
                    reason: format!(
                        "would change to '{}' in {}",
                        value_text(cast.as_ref(), row).unwrap_or_default(),
                        type_name(to)
                    ),
                });
            }
        }
    }
    if parsing && let DataType::Decimal128(_, scale) = to {
        let strings = array.as_string::<i32>();
        for row in 0..array.len() {
            if strings.is_valid(row)
                && cast.is_valid(row)
                && fraction_digits(strings.value(row)) > (*scale).max(0) as usize
            {
                failures.push(CastFailure {
                    row,
                    value: Some(strings.value(row).to_string()),
                    reason: format!(
                        "has more than {scale} digits after the point, which {} would round",
                        type_name(to)
                    ),
                });
            }
        }
    }
    failures.sort_by_key(|f| f.row);
    failures.dedup_by_key(|f| f.row);
    Ok((cast, failures))
}

/// Casts each column of `batch` into the type `schema` gives it, without loss. The first
/// value that cannot be cast is an error for its row, named by `locate(row)`; `here` names
/// the batch for other errors. Sources use it for declared types (`[source.types]`).
pub fn cast_batch(
    batch: RecordBatch,
    schema: &SchemaRef,
    here: &str,
    locate: impl Fn(usize) -> String,
) -> crate::Result<RecordBatch> {
    if batch.schema_ref() == schema {
        return Ok(batch);
    }
    let mut out = Vec::with_capacity(batch.num_columns());
    for (i, f) in schema.fields().iter().enumerate() {
        let (cast, failures) = cast_lossless(batch.column(i), f.data_type())
            .map_err(|e| crate::Error::data(here, e))?;
        if let Some(fl) = failures.first() {
            return Err(crate::Error::Row(crate::RowFailure {
                location: locate(fl.row),
                column: Some(f.name().clone()),
                value: fl.value.clone(),
                reason: fl.reason.clone(),
            }));
        }
        out.push(cast);
    }
    RecordBatch::try_new(schema.clone(), out).map_err(|e| crate::Error::data(here, e))
}

/// Checks that `zone` names a time zone: `UTC`, an offset such as `+02:00`, or an IANA
/// name such as `Europe/Paris`.
pub fn check_zone(zone: &str) -> Result<(), String> {
    zone.parse::<arrow::array::timezone::Tz>()
        .map(|_| ())
        .map_err(|_| {
            format!("unknown time zone `{zone}`; expected UTC, an offset such as +02:00, or a name such as Europe/Paris")
        })
}

/// Whether a timestamp text names its zone: ends in `Z` or a `+hh[:mm]`/`-hh[:mm]` offset
/// after the time of day.
fn names_zone(text: &str) -> bool {
    let t = text.trim();
    if t.ends_with(['Z', 'z']) {
        return true;
    }
    // The offset follows the time, so look only after the last ':'-bearing time part.
    let Some(time_at) = t.find(['T', 't', ' ']) else {
        return false;
    };
    let time = &t[time_at + 1..];
    match time.rfind(['+', '-']) {
        Some(i) => {
            let off = &time[i + 1..];
            let digits: String = off.chars().filter(|c| *c != ':').collect();
            (digits.len() == 2 || digits.len() == 4) && digits.chars().all(|c| c.is_ascii_digit())
        }
        None => time.trim_end().ends_with("UTC"),
    }
}

/// Casts values into a `timestamptz` column. A value that says its zone keeps it; a value
/// without one is read in `zone` when the column declares one, and otherwise fails: taking
/// it to be UTC would silently shift it by the writer's offset.
pub fn cast_zoned(
    array: &ArrayRef,
    to: &DataType,
    zone: Option<&str>,
) -> Result<(ArrayRef, Vec<CastFailure>), ArrowError> {
    let DataType::Timestamp(unit, Some(_)) = to else {
        return cast_lossless(array, to);
    };
    let no_zone = |row| {
        CastFailure {
        row,
        value: value_text(array.as_ref(), row),
        reason: "has no time zone, and the timestamptz column declares none to read it in; set timezone = \"...\" on the column".into(),
    }
    };
    match (array.data_type(), zone) {
        (DataType::Timestamp(_, None) | DataType::Date32 | DataType::Date64, None) => {
            let failures = (0..array.len())
                .filter(|&r| array.is_valid(r))
                .map(no_zone)
                .collect();
            Ok((arrow::array::new_null_array(to, array.len()), failures))
        }
        (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View, None) => {
            let text = arrow::compute::cast(array, &DataType::Utf8)?;
            let strings = text.as_string::<i32>();
            let bad: Vec<usize> = (0..strings.len())
                .filter(|&r| strings.is_valid(r) && !names_zone(strings.value(r)))
                .collect();
            if bad.is_empty() {
                return cast_lossless(array, to);
            }
            let keep = arrow::array::BooleanArray::from(
                (0..strings.len())
                    .map(|r| !bad.contains(&r))
                    .collect::<Vec<_>>(),
            );
            let masked = arrow::compute::nullif(&text, &arrow::compute::not(&keep)?)?;
            let (cast, mut failures) = cast_lossless(&masked, to)?;
            failures.extend(bad.into_iter().map(no_zone));
            failures.sort_by_key(|f| f.row);
            Ok((cast, failures))
        }
        (_, Some(z)) if !matches!(array.data_type(), DataType::Timestamp(_, Some(_))) => {
            // Values that name their zone keep it; the others are wall-clock times in `z`.
            let text = matches!(
                array.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            );
            let (zoned_rows, naive_input) = if text {
                let strings = arrow::compute::cast(array, &DataType::Utf8)?;
                let s = strings.as_string::<i32>();
                let zoned: Vec<bool> = (0..s.len())
                    .map(|r| s.is_valid(r) && names_zone(s.value(r)))
                    .collect();
                (zoned, strings)
            } else {
                (vec![false; array.len()], array.clone())
            };
            let naive_type = DataType::Timestamp(*unit, None);
            let only = |keep: bool| -> Result<ArrayRef, ArrowError> {
                let mask = arrow::array::BooleanArray::from(
                    zoned_rows.iter().map(|z| *z != keep).collect::<Vec<_>>(),
                );
                arrow::compute::nullif(&naive_input, &mask)
            };
            let (zoned, mut failures) = cast_lossless(&only(true)?, to)?;
            let (naive, naive_failures) = cast_lossless(&only(false)?, &naive_type)?;
            failures.extend(naive_failures);
            let tz: arrow::array::timezone::Tz = z
                .parse()
                .map_err(|_| ArrowError::CastError(format!("unknown time zone {z}")))?;
            let naive =
                arrow::compute::cast(&naive, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
            let naive = naive.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            let mut micros: Vec<Option<i64>> = Vec::with_capacity(array.len());
            for (row, &zoned) in zoned_rows.iter().enumerate() {
                if zoned || naive.is_null(row) {
                    micros.push(None);
                    continue;
                }
                let local = chrono::DateTime::from_timestamp_micros(naive.value(row))
                    .map(|d| d.naive_utc());
                match local.map(|l| tz.from_local_datetime(&l)) {
                    Some(LocalResult::Single(t)) => micros.push(Some(t.timestamp_micros())),
                    other => {
                        let why = if matches!(other, Some(LocalResult::Ambiguous(..))) {
                            "happens twice"
                        } else {
                            "does not exist"
                        };
                        failures.push(CastFailure {
                            row,
                            value: value_text(array.as_ref(), row),
                            reason: format!(
                                "{why} in time zone {z} (a daylight-saving change); give its offset"
                            ),
                        });
                        micros.push(None);
                    }
                }
            }
            let local: ArrayRef = Arc::new(
                arrow::array::TimestampMicrosecondArray::from(micros).with_timezone("UTC"),
            );
            let local = arrow::compute::cast(&local, to)?;
            let pick = arrow::array::BooleanArray::from(zoned_rows.clone());
            let merged = arrow::compute::kernels::zip::zip(&pick, &zoned, &local)?;
            failures.sort_by_key(|f| f.row);
            failures.dedup_by_key(|f| f.row);
            Ok((merged, failures))
        }
        _ => cast_lossless(array, to),
    }
}

/// A double as a `real`: the float32 whose shortest decimal is the double's value
/// (`-2.1` is the real `-2.1`), as a `real` column stores it in SQLite or PostgreSQL
/// prints it (see [`crate::types::float32_as_double`]). A double that no real is, such
/// as `0.1 + 1e-12` or 1e300, fails its row instead of being rounded.
fn double_to_real(array: &ArrayRef) -> (ArrayRef, Vec<CastFailure>) {
    let doubles = array.as_primitive::<arrow::datatypes::Float64Type>();
    let mut out = arrow::array::Float32Builder::with_capacity(doubles.len());
    let mut failures = Vec::new();
    for (row, v) in doubles.iter().enumerate() {
        match v.map(|d| (d, crate::types::double_as_float32(d))) {
            None => out.append_null(),
            Some((_, Some(r))) => out.append_value(r),
            Some((d, None)) => {
                out.append_null();
                let nearest = d as f32;
                failures.push(CastFailure {
                    row,
                    value: Some(d.to_string()),
                    reason: if nearest.is_infinite() && d.is_finite() {
                        "is out of range for real (about ±3.4028235e38)".to_string()
                    } else {
                        format!(
                            "would change to '{nearest}' in real, which keeps about 7 significant digits"
                        )
                    },
                });
            }
        }
    }
    (Arc::new(out.finish()), failures)
}

/// A decimal number as written: its sign, its significant digits (no leading or
/// trailing zeros; empty for zero) and the power of ten of the last of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecimalText {
    pub(crate) negative: bool,
    pub(crate) digits: String,
    pub(crate) exponent: i64,
    /// Whether it was written with a point or an exponent, not as a whole number.
    pub(crate) decimal: bool,
}

/// `text` as a decimal number literal (`-12`, `0.50`, `.5`, `1e3`, `+2.5E-7`), or `None`
/// when it is not one: SQL's numeric literal, without blanks, `inf` or `NaN`.
pub(crate) fn decimal_text(text: &str) -> Option<DecimalText> {
    let b = text.as_bytes();
    let mut i = 0;
    let negative = match b.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let mut mantissa = String::new();
    let mut after_point: i64 = 0;
    let mut point = false;
    while i < b.len() {
        match b[i] {
            c @ b'0'..=b'9' => {
                mantissa.push(c as char);
                if point {
                    after_point += 1;
                }
            }
            b'.' if !point => point = true,
            _ => break,
        }
        i += 1;
    }
    if mantissa.is_empty() {
        return None;
    }
    let mut exponent: i64 = 0;
    let mut exp_written = false;
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let rest = &text[i + 1..];
        let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) || digits.len() > 6 {
            return None;
        }
        exponent = rest.parse().ok()?;
        exp_written = true;
        i = b.len();
    }
    if i != b.len() {
        return None;
    }
    let trimmed = mantissa.trim_start_matches('0');
    let kept = trimmed.trim_end_matches('0');
    let trailing = (trimmed.len() - kept.len()) as i64;
    Some(DecimalText {
        negative,
        digits: kept.to_string(),
        exponent: if kept.is_empty() {
            0
        } else {
            exponent - after_point + trailing
        },
        decimal: point || exp_written,
    })
}

/// `text` as an integer of `ty` (`min` to `max`), or why not: not a number, a
/// fraction, a decimal written for a whole number, or out of the type's range.
pub(crate) fn integer_text(text: &str, ty: &str, min: i64, max: i64) -> Result<i64, String> {
    let Some(d) = decimal_text(text) else {
        return Err(format!("is not a number, so it cannot be read as {ty}"));
    };
    if d.exponent < 0 {
        return Err(format!(
            "has a fraction, which {ty} cannot hold (it takes whole numbers)"
        ));
    }
    let out_of_range = || format!("is out of range for {ty} ({min} to {max})");
    if d.digits.len() as i64 + d.exponent > 19 {
        return Err(out_of_range());
    }
    let whole: String = d.digits.clone() + &"0".repeat(d.exponent as usize);
    let magnitude: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| out_of_range())?
    };
    let value = if d.negative { -magnitude } else { magnitude };
    if value < min as i128 || value > max as i128 {
        return Err(out_of_range());
    }
    if d.decimal {
        return Err(format!(
            "is written as a decimal, not as a whole number, so it cannot be read as {ty}"
        ));
    }
    Ok(value as i64)
}

/// `text` as a double, or why not: not a number, out of range, or more significant
/// digits than a double keeps (the text would not read back the same).
pub(crate) fn double_text(text: &str) -> Result<f64, String> {
    let Some(d) = decimal_text(text) else {
        return Err("is not a number, so it cannot be read as double".into());
    };
    let v: f64 = text
        .parse()
        .map_err(|_| "is not a number, so it cannot be read as double".to_string())?;
    if v.is_infinite() {
        return Err("is out of range for double (about ±1.8e308)".into());
    }
    // The shortest decimal of the double must be the number written.
    let shortest = decimal_text(&format!("{v:e}")).map(|s| (s.negative, s.digits, s.exponent));
    if v == 0.0 && !d.digits.is_empty() {
        return Err("is too small for double, which would read it as 0".into());
    }
    let written = (d.negative, d.digits.clone(), d.exponent);
    if v != 0.0 && shortest != Some(written) {
        return Err(format!(
            "has more significant digits than a double keeps: it would read back as {v}"
        ));
    }
    Ok(v)
}

/// Why `text` cannot be an integer of type `to`, when `to` is one.
fn integer_reason(text: &str, to: &DataType) -> Option<String> {
    let (min, max) = match to {
        DataType::Int16 => (i16::MIN as i64, i16::MAX as i64),
        DataType::Int32 => (i32::MIN as i64, i32::MAX as i64),
        DataType::Int64 => (i64::MIN, i64::MAX),
        _ => return None,
    };
    integer_text(text.trim(), &type_name(to), min, max).err()
}

/// Whether casting `to` and back `from` must give the original value when nothing was lost.
fn round_trips(from: &DataType, to: &DataType) -> bool {
    let numeric = |t: &DataType| t.is_numeric() || matches!(t, DataType::Boolean);
    let temporal = |t: &DataType| t.is_temporal();
    (numeric(from) && numeric(to)) || (temporal(from) && temporal(to))
}

/// Significant digits after the decimal point of a plain decimal literal.
fn fraction_digits(text: &str) -> usize {
    let t = text.trim();
    if t.contains(['e', 'E']) {
        return 0;
    }
    t.split_once('.')
        .map_or(0, |(_, frac)| frac.trim_end_matches('0').len())
}

/// The values an integer type holds, for messages.
fn range_of(t: &DataType) -> Option<String> {
    Some(match t {
        DataType::Int16 => format!("{} to {}", i16::MIN, i16::MAX),
        DataType::Int32 => format!("{} to {}", i32::MIN, i32::MAX),
        DataType::Int64 => format!("{} to {}", i64::MIN, i64::MAX),
        _ => return None,
    })
}

/// A target type's name as a pipeline file writes it.
pub fn type_name(t: &DataType) -> String {
    match t {
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "real".into(),
        DataType::Float64 => "double".into(),
        DataType::Decimal128(p, s) => format!("numeric({p},{s})"),
        DataType::Boolean => "boolean".into(),
        DataType::Utf8 => "text".into(),
        DataType::Date32 => "date".into(),
        DataType::Time64(_) => "time".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Binary => "bytea".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Float64Array, Int64Array, StringArray};

    use super::*;

    fn fail(array: ArrayRef, to: DataType) -> Vec<(usize, String)> {
        let (_, f) = cast_lossless(&array, &to).unwrap();
        f.into_iter()
            .map(|f| {
                (
                    f.row,
                    format!("{} {}", f.value.unwrap_or_default(), f.reason),
                )
            })
            .collect()
    }

    #[test]
    fn integer_overflow_is_a_failure_not_a_null() {
        let a: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(40_000)]));
        assert_eq!(
            fail(a, DataType::Int16),
            [(
                2,
                "40000 is out of range for smallint (-32768 to 32767)".to_string()
            )]
        );
    }

    #[test]
    fn float_with_fraction_to_integer_is_a_failure() {
        let a: ArrayRef = Arc::new(Float64Array::from(vec![2.0, 2.5]));
        assert_eq!(
            fail(a, DataType::Int64),
            [(1, "2.5 would change to '2' in bigint".to_string())]
        );
    }

    #[test]
    fn text_to_decimal_with_too_much_scale_is_a_failure() {
        let a: ArrayRef = Arc::new(StringArray::from(vec!["1.50", "1.005", "abc"]));
        assert_eq!(
            fail(a, DataType::Decimal128(10, 2)),
            [
                (
                    1,
                    "1.005 has more than 2 digits after the point, which numeric(10,2) would round"
                        .to_string()
                ),
                (2, "abc cannot be read as numeric(10,2)".to_string()),
            ]
        );
    }

    #[test]
    fn impossible_dates_fail_to_parse() {
        let a: ArrayRef = Arc::new(StringArray::from(vec!["2023-02-28", "2023-02-30"]));
        assert_eq!(
            fail(a, DataType::Date32),
            [(1, "2023-02-30 cannot be read as date".to_string())]
        );
    }

    #[test]
    fn zone_less_timestamps_fail_unless_the_column_declares_a_zone() {
        let to = DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into()));
        let a: ArrayRef = Arc::new(StringArray::from(vec![
            Some("2024-03-01 10:00:00+02:00"),
            Some("2024-03-01 10:00:00"),
            None,
            Some("2024-03-01T08:00:00Z"),
        ]));
        let (cast, f) = cast_zoned(&a, &to, None).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].row, 1);
        assert!(
            f[0].reason.starts_with("has no time zone"),
            "{}",
            f[0].reason
        );
        assert_eq!(
            value_text(cast.as_ref(), 0).unwrap(),
            "2024-03-01T08:00:00Z"
        );
        assert_eq!(
            value_text(cast.as_ref(), 3).unwrap(),
            "2024-03-01T08:00:00Z"
        );

        let (cast, f) = cast_zoned(&a, &to, Some("Europe/Paris")).unwrap();
        assert!(f.is_empty(), "{f:?}");
        // 10:00 in Paris in March (UTC+1) is 09:00 UTC; a value with an offset keeps it.
        assert_eq!(
            value_text(cast.as_ref(), 1).unwrap(),
            "2024-03-01T09:00:00Z"
        );
        assert_eq!(
            value_text(cast.as_ref(), 0).unwrap(),
            "2024-03-01T08:00:00Z"
        );
        assert!(cast.is_null(2));
    }

    #[test]
    fn naive_timestamps_are_read_in_the_declared_zone() {
        use arrow::array::TimestampMicrosecondArray;
        let to = DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into()));
        // 2024-07-01 12:00:00 as a naive timestamp.
        let a: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![1_719_835_200_000_000]));
        let (_, f) = cast_zoned(&a, &to, None).unwrap();
        assert_eq!(f.len(), 1);
        let (cast, f) = cast_zoned(&a, &to, Some("+02:00")).unwrap();
        assert!(f.is_empty());
        assert_eq!(
            value_text(cast.as_ref(), 0).unwrap(),
            "2024-07-01T10:00:00Z"
        );
        assert_eq!(
            check_zone("Mars/Olympus")
                .unwrap_err()
                .split(';')
                .next()
                .unwrap(),
            "unknown time zone `Mars/Olympus`"
        );
    }

    #[test]
    fn text_that_is_no_integer_says_why() {
        let a: ArrayRef = Arc::new(StringArray::from(vec![
            "12",
            "99999999999999999999",
            "1.5",
            "abc",
            "4.0",
            "-40000",
        ]));
        assert_eq!(
            fail(a.clone(), DataType::Int64),
            [
                (
                    1,
                    "99999999999999999999 is out of range for bigint (-9223372036854775808 to 9223372036854775807)".to_string()
                ),
                (
                    2,
                    "1.5 has a fraction, which bigint cannot hold (it takes whole numbers)"
                        .to_string()
                ),
                (3, "abc is not a number, so it cannot be read as bigint".to_string()),
                (
                    4,
                    "4.0 is written as a decimal, not as a whole number, so it cannot be read as bigint"
                        .to_string()
                ),
            ]
        );
        assert_eq!(
            fail(a, DataType::Int16)[4],
            (
                5,
                "-40000 is out of range for smallint (-32768 to 32767)".to_string()
            )
        );
    }

    #[test]
    fn decimal_texts_are_read_exactly() {
        assert_eq!(integer_text("-007", "bigint", i64::MIN, i64::MAX), Ok(-7));
        assert_eq!(
            integer_text("9223372036854775807", "bigint", i64::MIN, i64::MAX),
            Ok(i64::MAX)
        );
        assert_eq!(
            integer_text("-9223372036854775808", "bigint", i64::MIN, i64::MAX),
            Ok(i64::MIN)
        );
        assert!(integer_text("1e3", "bigint", i64::MIN, i64::MAX).is_err());
        assert_eq!(double_text("0.10"), Ok(0.1));
        assert_eq!(double_text("-2.1e-3"), Ok(-0.0021));
        assert_eq!(double_text("1e308"), Ok(1e308));
        assert_eq!(double_text("-0"), Ok(-0.0));
        assert_eq!(
            double_text("0.12345678901234567890"),
            Err("has more significant digits than a double keeps: it would read back as 0.12345678901234568".into())
        );
        assert_eq!(
            double_text("1e999"),
            Err("is out of range for double (about ±1.8e308)".into())
        );
        assert_eq!(
            double_text("NA"),
            Err("is not a number, so it cannot be read as double".into())
        );
        assert_eq!(
            double_text("inf").unwrap_err(),
            "is not a number, so it cannot be read as double"
        );
    }

    #[test]
    fn a_double_is_a_real_when_its_shortest_decimal_is_one() {
        let a: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(-2.1),
            Some(0.1),
            Some(3.402_823_5e38),
            Some(f64::INFINITY),
            None,
            Some(0.1 + 1e-12),
            Some(1e300),
        ]));
        let (cast, f) = cast_lossless(&a, &DataType::Float32).unwrap();
        let reals = cast.as_primitive::<arrow::datatypes::Float32Type>();
        assert_eq!(reals.value(0), -2.1f32);
        assert_eq!(reals.value(1), 0.1f32);
        assert_eq!(reals.value(2), 3.402_823_5e38f32);
        assert_eq!(reals.value(3), f32::INFINITY);
        assert!(reals.is_null(4));
        let f: Vec<_> = f
            .into_iter()
            .map(|f| (f.row, f.value.unwrap(), f.reason))
            .collect();
        assert_eq!(
            f,
            [
                (
                    5,
                    "0.10000000000100001".to_string(),
                    "would change to '0.1' in real, which keeps about 7 significant digits"
                        .to_string()
                ),
                (
                    6,
                    (1e300f64).to_string(),
                    "is out of range for real (about ±3.4028235e38)".to_string()
                ),
            ]
        );
    }

    #[test]
    fn big_integer_to_double_loses_precision() {
        let a: ArrayRef = Arc::new(Int64Array::from(vec![1, (1 << 53) + 1]));
        let f = fail(a, DataType::Float64);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, 1);
    }
}
