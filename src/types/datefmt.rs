//! Strict date and timestamp formats: a column's `format = "%d/%m/%Y"` and the format
//! arguments of DataFusion's parsing functions in expressions (`to_date`, `to_time`,
//! `to_timestamp` and its `_seconds` / `_millis` / `_micros` / `_nanos` forms,
//! `to_unixtime`).
//!
//! chrono reads `%Y` from any number of digits, so `10/7/6` under `%d/%m/%Y` is the year 6,
//! and `%y` makes up a century. Both are guesses. Here a text must be read whole by the
//! format, and a year must be written with at least four digits; anything else is a
//! failure of its row that names the value, the format and what went wrong.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Date32Array, StringArray, TimestampNanosecondArray};
use arrow::datatypes::DataType;
use chrono::format::{Fixed, Item, Numeric, Parsed, StrftimeItems, parse_and_remainder};
use chrono::{NaiveDate, NaiveTime};
use datafusion_common::{Result as DfResult, ScalarValue, exec_err};
use datafusion_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature};

use super::cast::CastFailure;

/// A format's items, or why it cannot be used: unknown specifiers, or `%y` / `%D` (a
/// two-digit year, whose century would be a guess).
fn items(format: &str) -> Result<Vec<Item<'_>>, String> {
    let mut out = Vec::new();
    for item in StrftimeItems::new(format) {
        match item {
            Item::Error => {
                return Err(format!(
                    "format `{format}` is not a chrono strftime format (an unknown or incomplete % specifier)"
                ));
            }
            Item::Numeric(Numeric::YearMod100 | Numeric::IsoYearMod100, _) => {
                return Err(format!(
                    "format `{format}` reads a two-digit year (%y or %D), whose century would be a guess; write the year with %Y"
                ));
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Whether a format reads a zone offset (`%z`, `%:z`, `%#z`), so its values are instants.
fn has_offset(items: &[Item<'_>]) -> bool {
    items.iter().any(|i| {
        matches!(
            i,
            Item::Fixed(
                Fixed::TimezoneOffset | Fixed::TimezoneOffsetColon | Fixed::TimezoneOffsetZ
            ) | Item::Fixed(Fixed::TimezoneOffsetColonZ | Fixed::TimezoneOffsetDoubleColon)
                | Item::Fixed(Fixed::TimezoneOffsetTripleColon | Fixed::RFC3339 | Fixed::RFC2822)
        )
    })
}

/// Reads `text` whole with `items` (the items of `format`, for messages).
fn parse(text: &str, format: &str, items: &[Item<'_>]) -> Result<Parsed, String> {
    let mut parsed = Parsed::new();
    let mut rest = text;
    for item in items {
        let before = rest;
        rest = parse_and_remainder(&mut parsed, rest, std::iter::once(item.clone())).map_err(
            |e| {
                if before.is_empty() {
                    format!("does not match format `{format}`: the text ends before the format does ({e})")
                } else {
                    format!("does not match format `{format}` at `{before}` ({e})")
                }
            },
        )?;
        if let Item::Fixed(
            Fixed::Nanosecond
            | Fixed::Nanosecond3
            | Fixed::Nanosecond6
            | Fixed::Nanosecond9
            | Fixed::Internal(_),
        ) = item
        {
            // chrono reads any number of fraction digits and keeps nine: a tenth digit
            // other than 0 would be cut without a word.
            let read = &before[..before.len() - rest.len()];
            let digits: String = read.chars().filter(char::is_ascii_digit).collect();
            if digits.len() > 9 && digits[9..].bytes().any(|b| b != b'0') {
                return Err(format!(
                    "does not match format `{format}`: its fraction `{read}` has {} digits, and a timestamp keeps 9 (nanoseconds); the rest would be cut",
                    digits.len()
                ));
            }
        }
        if let Item::Numeric(Numeric::Year | Numeric::IsoYear, _) = item {
            let read = before[..before.len() - rest.len()].trim_start();
            let digits = read.trim_start_matches(['+', '-']);
            if digits.len() < 4 {
                return Err(format!(
                    "does not match format `{format}`: its year `{read}` has {} digit{}, and a year is read only when written with 4, never completed by a guess",
                    digits.len(),
                    if digits.len() == 1 { "" } else { "s" }
                ));
            }
        }
    }
    if !rest.is_empty() {
        return Err(format!(
            "does not match format `{format}`: `{rest}` is left unread after it"
        ));
    }
    Ok(parsed)
}

/// `text` as a date under `format`. A time of day other than midnight is refused, since
/// a date column would drop it, unless `date_of` (`to_date`, whose meaning is the date of
/// a timestamp).
fn date(text: &str, format: &str, items: &[Item<'_>], date_of: bool) -> Result<NaiveDate, String> {
    let parsed = parse(text, format, items)?;
    let day = parsed
        .to_naive_date()
        .map_err(|e| format!("does not match format `{format}`: it gives no valid date ({e})"))?;
    if !date_of && (parsed.hour_div_12().is_some() || parsed.minute().is_some()) {
        let at = parsed
            .to_naive_time()
            .map_err(|e| format!("does not match format `{format}`: {e}"))?;
        if at != NaiveTime::MIN {
            return Err(format!(
                "has the time of day {at}, which a date would drop; use a timestamp column"
            ));
        }
    }
    Ok(day)
}

/// `text` as microseconds (or nanoseconds, `nanos`) since the epoch under `format`: in UTC
/// when the format reads an offset, as wall-clock time otherwise.
fn instant(
    text: &str,
    format: &str,
    items: &[Item<'_>],
    zoned: bool,
    nanos: bool,
) -> Result<i64, String> {
    let parsed = parse(text, format, items)?;
    let bad = |e: chrono::format::ParseError| {
        format!("does not match format `{format}`: it gives no valid timestamp ({e})")
    };
    let utc = if zoned {
        parsed.to_datetime().map_err(bad)?.naive_utc()
    } else {
        parsed.to_naive_datetime_with_offset(0).map_err(bad)?
    };
    let t = utc.and_utc();
    if nanos {
        t.timestamp_nanos_opt()
            .ok_or_else(|| "is out of range for a nanosecond timestamp".to_string())
    } else if t.timestamp_subsec_nanos() % 1_000 != 0 {
        // A timestamp column keeps microseconds: finer digits would be cut.
        Err(format!(
            "is read by format `{format}` with a fraction finer than the microseconds a timestamp keeps, which it would cut"
        ))
    } else {
        Ok(t.timestamp_micros())
    }
}

/// Checks a column's `format` for a column of type `ty`: a chrono strftime format without
/// a two-digit year, that reads a whole date (and, for timestamps, a time of day).
pub fn check_format(format: &str, ty: &crate::types::ColumnType) -> Result<(), String> {
    use crate::types::ColumnType;
    let items = items(format)?;
    // The format must read back what it writes; a format without a day, say, cannot.
    let sample = NaiveDate::from_ymd_opt(2001, 2, 3)
        .and_then(|d| d.and_hms_opt(4, 5, 6))
        .expect("a valid sample date");
    let text = if has_offset(&items) {
        sample.and_utc().format(format).to_string()
    } else {
        sample.format(format).to_string()
    };
    let whole = |e: String| format!("format `{format}` does not read a whole {ty}: {e}");
    match ty {
        ColumnType::Date => date(&text, format, &items, false)
            .map(|_| ())
            .or_else(|e| {
                // A time of day in the format is checked per value; only a missing date part
                // is an error here.
                if e.starts_with("has the time of day") {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(whole),
        ColumnType::Timestamp | ColumnType::TimestampTz => {
            instant(&text, format, &items, has_offset(&items), false)
                .map(|_| ())
                .map_err(whole)
        }
        other => Err(format!(
            "`format` applies to date, timestamp and timestamptz columns only; this one is {other}"
        )),
    }
}

/// Reads each text of `array` with the column's `format` into `ty`'s values: `Date32`
/// for a date, microseconds since the epoch otherwise (in UTC when the format reads an
/// offset, wall-clock otherwise, for [`super::cast::cast_zoned`] to place in the column's
/// zone). Texts that do not match are NULL, with their failure.
pub fn parse_column(
    array: &ArrayRef,
    format: &str,
    ty: &DataType,
) -> Result<(ArrayRef, Vec<CastFailure>), String> {
    let items = items(format)?;
    let text = arrow::compute::cast(array, &DataType::Utf8).map_err(|e| e.to_string())?;
    let strings = text.as_string::<i32>();
    let mut failures = Vec::new();
    let mut fail = |row: usize, reason: String| {
        failures.push(CastFailure {
            row,
            value: Some(strings.value(row).to_string()),
            reason,
        });
    };
    let out: ArrayRef = if *ty == DataType::Date32 {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch");
        let mut days = Vec::with_capacity(strings.len());
        for row in 0..strings.len() {
            if strings.is_null(row) {
                days.push(None);
                continue;
            }
            match date(strings.value(row), format, &items, false) {
                Ok(d) => days.push(Some((d - epoch).num_days() as i32)),
                Err(e) => {
                    fail(row, e);
                    days.push(None);
                }
            }
        }
        Arc::new(Date32Array::from(days))
    } else {
        let zoned = has_offset(&items);
        let mut micros = Vec::with_capacity(strings.len());
        for row in 0..strings.len() {
            if strings.is_null(row) {
                micros.push(None);
                continue;
            }
            match instant(strings.value(row), format, &items, zoned, false) {
                Ok(t) => micros.push(Some(t)),
                Err(e) => {
                    fail(row, e);
                    micros.push(None);
                }
            }
        }
        let a = arrow::array::TimestampMicrosecondArray::from(micros);
        if zoned {
            Arc::new(a.with_timezone("UTC"))
        } else {
            Arc::new(a)
        }
    };
    Ok((out, failures))
}

/// The functions of DataFusion that read text under formats; [`StrictDateFunction`]
/// wraps each of them.
pub(crate) const PARSING_FUNCTIONS: [&str; 8] = [
    "to_date",
    "to_time",
    "to_timestamp",
    "to_timestamp_seconds",
    "to_timestamp_millis",
    "to_timestamp_micros",
    "to_timestamp_nanos",
    "to_unixtime",
];

/// `text` as nanoseconds since midnight under `format`.
fn time_of_day(text: &str, format: &str, items: &[Item<'_>]) -> Result<i64, String> {
    let parsed = parse(text, format, items)?;
    let t = parsed
        .to_naive_time()
        .map_err(|e| format!("does not match format `{format}`: it gives no valid time ({e})"))?;
    Ok((t - NaiveTime::MIN)
        .num_nanoseconds()
        .expect("a day in nanoseconds fits"))
}

/// Nanoseconds per unit of what a parsing function returns: a value finer than that
/// unit fails its row rather than being cut.
fn unit_nanos(ret: &DataType) -> Option<(i64, &'static str)> {
    use arrow::datatypes::TimeUnit;
    match ret {
        DataType::Timestamp(TimeUnit::Second, _) | DataType::Int64 => {
            Some((1_000_000_000, "whole seconds"))
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => Some((1_000_000, "milliseconds")),
        DataType::Timestamp(TimeUnit::Microsecond, _) => Some((1_000, "microseconds")),
        _ => None,
    }
}

/// `to_date`, `to_time`, `to_timestamp` (and its `_seconds`, `_millis`, `_micros`,
/// `_nanos` forms) and `to_unixtime` with strict formats. Called with a text and one or
/// more formats, each text is read by the first format that reads it whole (with a
/// four-digit year); a text that none reads fails its row, naming every format's reason,
/// and so does a text finer than the function's unit (`10:00:00.5` for
/// `to_timestamp_seconds`), which DataFusion would cut. Every other call (no format, a
/// number, a date) is DataFusion's own function unchanged.
///
/// Wrapping is chosen over checking DataFusion's result afterwards: DataFusion takes the
/// first format chrono accepts, so when an earlier format reads a text loosely (`10/7/6`
/// as the year 6) a later, exact one never gets its turn, and no check of the result
/// could recover the right value.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct StrictDateFunction {
    inner: ScalarUDF,
}

impl StrictDateFunction {
    /// Wraps `inner`, one of DataFusion's [`PARSING_FUNCTIONS`].
    pub(crate) fn wrap(inner: &ScalarUDF) -> ScalarUDF {
        ScalarUDF::new_from_impl(StrictDateFunction {
            inner: inner.clone(),
        })
    }
}

impl ScalarUDFImpl for StrictDateFunction {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.return_type(arg_types)
    }

    fn documentation(&self) -> Option<&datafusion_expr::Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let texts = matches!(
            args.args.first().map(|a| a.data_type()),
            Some(DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
        );
        if args.args.len() < 2 || !texts {
            return self.inner.invoke_with_args(args);
        }
        let n = args.number_rows;
        let arrays = args
            .args
            .iter()
            .map(|a| {
                a.to_array(n)
                    .and_then(|a| Ok(arrow::compute::cast(&a, &DataType::Utf8)?))
            })
            .collect::<DfResult<Vec<_>>>()?;
        let values = arrays[0].as_string::<i32>();
        let formats: Vec<&StringArray> = arrays[1..].iter().map(|a| a.as_string()).collect();
        let ret = args.return_field.data_type().clone();
        let is_date = ret == DataType::Date32;
        let is_time = matches!(ret, DataType::Time64(_));
        let unit = unit_nanos(&ret);
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch");
        let mut out: Vec<Option<i64>> = Vec::with_capacity(n);
        for row in 0..n {
            if values.is_null(row) {
                out.push(None);
                continue;
            }
            let text = values.value(row);
            let mut reasons = Vec::new();
            let mut got = None;
            for f in &formats {
                if f.is_null(row) {
                    continue;
                }
                let format = f.value(row);
                let read = items(format).and_then(|items| {
                    if is_date {
                        date(text, format, &items, true).map(|d| (d - epoch).num_days())
                    } else if is_time {
                        time_of_day(text, format, &items)
                    } else {
                        instant(text, format, &items, has_offset(&items), true)
                    }
                });
                let read = match (read, unit) {
                    (Ok(v), Some((per, name))) if v % per != 0 => Err(format!(
                        "is read by format `{format}` with a fraction {} keeps only {name} of, which it would cut",
                        self.name()
                    )),
                    (read, _) => read,
                };
                match read {
                    Ok(v) => {
                        got = Some(v);
                        break;
                    }
                    Err(e) => reasons.push(e),
                }
            }
            match got {
                Some(v) => out.push(Some(v)),
                None if reasons.is_empty() => out.push(None),
                None => {
                    return exec_err!(
                        "{}('{text}'): '{text}' {}",
                        self.name(),
                        reasons.join("; it ")
                    );
                }
            }
        }
        let array: ArrayRef = if is_date {
            Arc::new(Date32Array::from(
                out.into_iter()
                    .map(|d| d.map(|d| d as i32))
                    .collect::<Vec<_>>(),
            ))
        } else if is_time {
            let nanos = arrow::array::Time64NanosecondArray::from(out);
            arrow::compute::cast(&nanos, &ret)?
        } else if ret == DataType::Int64 {
            // `to_unixtime`: whole seconds, checked above.
            Arc::new(arrow::array::Int64Array::from(
                out.into_iter()
                    .map(|v| v.map(|v| v / 1_000_000_000))
                    .collect::<Vec<_>>(),
            ))
        } else {
            let nanos = TimestampNanosecondArray::from(out);
            let nanos: ArrayRef = Arc::new(match &ret {
                DataType::Timestamp(_, Some(tz)) => nanos.with_timezone(tz.clone()),
                _ => nanos,
            });
            arrow::compute::cast(&nanos, &ret)?
        };
        if n == 1
            && args
                .args
                .iter()
                .all(|a| matches!(a, ColumnarValue::Scalar(_)))
        {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &array, 0,
            )?));
        }
        Ok(ColumnarValue::Array(array))
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray, StringArray};
    use arrow::datatypes::TimestampMicrosecondType;

    use super::*;

    #[test]
    fn a_timestamp_column_s_format_refuses_a_fraction_it_would_cut() {
        let texts: ArrayRef = Arc::new(StringArray::from(vec![
            "2010-07-06 10:30:15.123456",
            "2010-07-06 10:30:15.1234560",
            "2010-07-06 10:30:15.1234567",
            "2010-07-06 10:30:15.1234567891",
        ]));
        let ty = DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None);
        let (out, failures) = parse_column(&texts, "%Y-%m-%d %H:%M:%S%.f", &ty).unwrap();
        let out = out.as_primitive::<TimestampMicrosecondType>();
        assert_eq!(out.value(0), 1_278_412_215_123_456);
        assert_eq!(
            out.value(1),
            1_278_412_215_123_456,
            "trailing zeros lose nothing"
        );
        assert!(out.is_null(2) && out.is_null(3));
        let reasons: Vec<(usize, &str)> = failures
            .iter()
            .map(|f| (f.row, f.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (
                    2,
                    "is read by format `%Y-%m-%d %H:%M:%S%.f` with a fraction finer than the microseconds a timestamp keeps, which it would cut"
                ),
                (
                    3,
                    "does not match format `%Y-%m-%d %H:%M:%S%.f`: its fraction `.1234567891` has 10 digits, and a timestamp keeps 9 (nanoseconds); the rest would be cut"
                ),
            ]
        );
    }
}
