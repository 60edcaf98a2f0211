//! Casts that never lose information: a value that would overflow, round, truncate or turn
//! NULL is reported as a failure for its row instead of being coerced.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::kernels::cast::{CastOptions, can_cast_types, cast_with_options};
use arrow::compute::kernels::cmp::neq;
use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use arrow::util::display::{ArrayFormatter, FormatOptions};

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
    use std::sync::Arc;

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
    fn big_integer_to_double_loses_precision() {
        let a: ArrayRef = Arc::new(Int64Array::from(vec![1, (1 << 53) + 1]));
        let f = fail(a, DataType::Float64);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, 1);
    }
}
