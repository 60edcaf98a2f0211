//! Casts that never lose information: a value that would overflow, round, truncate or turn
//! NULL is reported as a failure for its row instead of being coerced.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::kernels::cast::{CastOptions, can_cast_types, cast_with_options};
use arrow::compute::kernels::cmp::neq;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
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
                    format!("cannot be read as {}", type_name(to))
                } else if matches!(from, DataType::Binary | DataType::LargeBinary) {
                    "is not valid UTF-8".to_string()
                } else {
                    format!("does not fit in {}", type_name(to))
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
            [(2, "40000 does not fit in smallint".to_string())]
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
    fn big_integer_to_double_loses_precision() {
        let a: ArrayRef = Arc::new(Int64Array::from(vec![1, (1 << 53) + 1]));
        let f = fail(a, DataType::Float64);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, 1);
    }
}
