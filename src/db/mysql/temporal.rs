//! Dates and times as MySQL's text: what a date, time or timestamp is sent as.

/// Appends days since 1970-01-01 as `YYYY-MM-DD`, the text of a MySQL `DATE` (and what a
/// date is sent as). Years outside 0–9999, which MySQL refuses, keep chrono's form.
pub fn write_date(out: &mut Vec<u8>, days: i32) {
    let (year, month, day) = civil(days);
    if !(0..=9999).contains(&year) {
        let d = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")
            + chrono::Duration::days(i64::from(days));
        out.extend_from_slice(d.format("%Y-%m-%d").to_string().as_bytes());
        return;
    }
    let digits = |out: &mut Vec<u8>, v: i64, n: u32| {
        for p in (0..n).rev() {
            out.push(b'0' + (v / 10i64.pow(p) % 10) as u8);
        }
    };
    digits(out, year, 4);
    out.push(b'-');
    digits(out, month, 2);
    out.push(b'-');
    digits(out, day, 2);
}

/// Days since 1970-01-01 as (year, month, day): Howard Hinnant's days-to-civil.
pub(super) fn civil(days: i32) -> (i64, i64, i64) {
    let z = i64::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Appends microseconds into a day as `HH:MM:SS.ffffff`, the text of a `TIME(6)`.
pub fn write_time(out: &mut Vec<u8>, micros: i64) {
    let (s, us) = (micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000));
    if !(0..360_000).contains(&s) {
        // Not a time of day (never sent): the plain formatting, whatever it gives.
        let text = format!("{:02}:{:02}:{:02}.{us:06}", s / 3600, s / 60 % 60, s % 60);
        out.extend_from_slice(text.as_bytes());
        return;
    }
    let two = |out: &mut Vec<u8>, v: i64| {
        out.push(b'0' + (v / 10 % 10) as u8);
        out.push(b'0' + (v % 10) as u8);
    };
    two(out, s / 3600);
    out.push(b':');
    two(out, s / 60 % 60);
    out.push(b':');
    two(out, s % 60);
    out.push(b'.');
    for p in (0..6).rev() {
        out.push(b'0' + (us / 10i64.pow(p) % 10) as u8);
    }
}

/// Appends microseconds since the epoch (UTC) as `YYYY-MM-DD HH:MM:SS.ffffff`, the text
/// of a `DATETIME(6)`.
pub fn write_timestamp(out: &mut Vec<u8>, micros: i64) {
    let days = micros.div_euclid(86_400_000_000);
    write_date(out, days as i32);
    out.push(b' ');
    write_time(out, micros.rem_euclid(86_400_000_000));
}

/// [`write_date`] (or another writer) into a new string.
pub fn written(f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut out = Vec::with_capacity(26);
    f(&mut out);
    String::from_utf8(out).expect("dates and times are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_are_written_as_mysql_prints_them() {
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        // Every day from year 0 past 9999, and the chrono form outside MySQL's years.
        for days in (-720_000..2_933_000)
            .step_by(7)
            .chain([-719_529, 2_932_896, 2_932_897])
        {
            let want = (epoch + chrono::Duration::days(days as i64))
                .format("%Y-%m-%d")
                .to_string();
            assert_eq!(written(|o| write_date(o, days)), want, "day {days}");
        }
        assert_eq!(written(|o| write_time(o, 0)), "00:00:00.000000");
        assert_eq!(
            written(|o| write_time(o, 86_399_999_999)),
            "23:59:59.999999"
        );
        assert_eq!(
            written(|o| write_time(o, 45_296_000_007)),
            "12:34:56.000007"
        );
        assert_eq!(
            written(|o| write_timestamp(o, -1)),
            "1969-12-31 23:59:59.999999"
        );
        assert_eq!(
            written(|o| write_timestamp(o, 1_700_000_000_123_456)),
            "2023-11-14 22:13:20.123456"
        );
    }
}
