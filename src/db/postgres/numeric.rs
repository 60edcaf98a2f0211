//! The binary `numeric` codec: Arrow decimals to PostgreSQL's base-10,000 digits and back,
//! and a `numeric` as exact text.

use crate::Result;

/// A decimal `v` with `scale` digits after the point, as a binary `numeric`.
pub fn encode_numeric(v: i128, scale: i8) -> Vec<u8> {
    let negative = v < 0;
    let mut u = v.unsigned_abs();
    let mut dscale = scale.max(0) as u32;
    if scale < 0 {
        u *= 10u128.pow((-scale) as u32);
        dscale = 0;
    }
    let pow = 10u128.pow(dscale);
    let int = u / pow;
    let frac = u % pow;
    // The fraction's digits, padded on the right to whole groups of four (multiplying
    // instead could overflow at scale 38).
    let mut frac_text = format!("{frac:0width$}", width = dscale as usize);
    while frac_text.len() % 4 != 0 {
        frac_text.push('0');
    }
    let frac_digits: Vec<i16> = frac_text
        .as_bytes()
        .chunks(4)
        .map(|g| g.iter().fold(0i16, |acc, d| acc * 10 + (d - b'0') as i16))
        .collect();
    let mut int_digits = Vec::new();
    let mut i = int;
    while i > 0 {
        int_digits.push((i % 10_000) as i16);
        i /= 10_000;
    }
    int_digits.reverse();
    let mut weight = int_digits.len() as i16 - 1;
    let mut digits = int_digits;
    digits.extend(frac_digits);
    // Leading zero groups move the weight down; trailing ones are dropped.
    let lead = digits.iter().take_while(|d| **d == 0).count();
    digits.drain(..lead);
    weight -= lead as i16;
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        weight = 0;
    }
    let sign: u16 = if negative && !digits.is_empty() {
        0x4000
    } else {
        0
    };
    let mut out = Vec::with_capacity(8 + digits.len() * 2);
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(dscale as i16).to_be_bytes());
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out
}

/// The parts of a binary `numeric`: digits (base 10,000), weight, sign, display scale.
fn numeric_parts(v: &[u8]) -> Result<(Vec<i16>, i16, u16, i16), String> {
    if v.len() < 8 {
        return Err("a numeric value shorter than its header".into());
    }
    let word = |i: usize| i16::from_be_bytes([v[2 * i], v[2 * i + 1]]);
    let n = word(0);
    if n < 0 || v.len() != 8 + 2 * n as usize {
        return Err("a numeric value with a wrong length".into());
    }
    let digits = (0..n as usize).map(|i| word(4 + i)).collect();
    Ok((digits, word(1), word(2) as u16, word(3)))
}

fn special(sign: u16) -> Option<&'static str> {
    match sign {
        0xC000 => Some("NaN"),
        0xD000 => Some("Infinity"),
        0xF000 => Some("-Infinity"),
        _ => None,
    }
}

/// A binary `numeric` as an integer with `scale` digits after the point; `Err` if it has
/// more digits after the point, does not fit, or is NaN or infinite.
pub fn decode_numeric(v: &[u8], scale: i8) -> Result<i128, String> {
    let (digits, weight, sign, _) = numeric_parts(v)?;
    if let Some(s) = special(sign) {
        return Err(format!("numeric {s} has no decimal value"));
    }
    let s = scale as i32;
    let mut acc: i128 = 0;
    let mut last_exp = i32::MAX;
    for (i, g) in digits.iter().enumerate() {
        for j in 0..4 {
            let d = (*g as i32 / 10i32.pow(3 - j as u32)) % 10;
            let exp = (weight as i32 - i as i32) * 4 + 3 - j;
            if exp < -s {
                if d != 0 {
                    return Err(format!(
                        "more than {scale} digits after the point: {}",
                        numeric_text(v).unwrap_or_default()
                    ));
                }
                continue;
            }
            acc = acc
                .checked_mul(10)
                .and_then(|a| a.checked_add(d as i128))
                .ok_or("too many digits for a decimal")?;
            last_exp = exp;
        }
    }
    if last_exp != i32::MAX && last_exp > -s {
        acc = acc
            .checked_mul(10i128.pow((last_exp + s) as u32))
            .ok_or("too many digits for a decimal")?;
    }
    Ok(if sign == 0x4000 { -acc } else { acc })
}

/// A binary `numeric` as exact text, e.g. `-12.50`.
pub fn numeric_text(v: &[u8]) -> Result<String, String> {
    let (digits, weight, sign, dscale) = numeric_parts(v)?;
    if let Some(s) = special(sign) {
        return Ok(s.into());
    }
    let mut int = String::new();
    for i in 0..=weight.max(-1) {
        let g = digits.get(i as usize).copied().unwrap_or(0);
        if int.is_empty() {
            if g != 0 {
                int = g.to_string();
            }
        } else {
            int.push_str(&format!("{g:04}"));
        }
    }
    if int.is_empty() {
        int.push('0');
    }
    let mut frac = String::new();
    let mut i = weight as i32 + 1;
    while (frac.len() as i32) < dscale as i32 {
        let g = if i < 0 {
            0
        } else {
            digits.get(i as usize).copied().unwrap_or(0)
        };
        frac.push_str(&format!("{g:04}"));
        i += 1;
    }
    frac.truncate(dscale.max(0) as usize);
    let neg = if sign == 0x4000 { "-" } else { "" };
    Ok(if frac.is_empty() {
        format!("{neg}{int}")
    } else {
        format!("{neg}{int}.{frac}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn any_decimal_round_trips_and_reads_as_arrow_prints_it(
            v in -99_999_999_999_999_999_999_999_999_999_999_999_999i128..=99_999_999_999_999_999_999_999_999_999_999_999_999,
            scale in 0i8..=38,
        ) {
            let bytes = encode_numeric(v, scale);
            proptest::prop_assert_eq!(decode_numeric(&bytes, scale).unwrap(), v);
            let arrow = arrow::array::Decimal128Array::from(vec![v])
                .with_precision_and_scale(38, scale)
                .unwrap();
            proptest::prop_assert_eq!(
                numeric_text(&bytes).unwrap(),
                crate::types::cast::value_text(&arrow, 0).unwrap()
            );
        }
    }

    #[test]
    fn numerics_round_trip_at_their_scale() {
        for (v, scale, text) in [
            (0i128, 2i8, "0.00"),
            (1250, 2, "12.50"),
            (-1250, 2, "-12.50"),
            (1, 4, "0.0001"),
            (1, 6, "0.000001"),
            (123_456_789, 0, "123456789"),
            (10_000, 0, "10000"),
            (-5, 1, "-0.5"),
            (i128::from(i64::MAX), 3, "9223372036854775.807"),
            (
                99_999_999_999_999_999_999_999_999_999_999_999_999,
                2,
                "999999999999999999999999999999999999.99",
            ),
            (
                -99_999_999_999_999_999_999_999_999_999_999_999_999,
                38,
                "-0.99999999999999999999999999999999999999",
            ),
        ] {
            let bytes = encode_numeric(v, scale);
            assert_eq!(numeric_text(&bytes).unwrap(), text, "{v} scale {scale}");
            assert_eq!(decode_numeric(&bytes, scale).unwrap(), v, "{text}");
        }
        // Read at a larger scale, the value is multiplied; at a smaller one with digits
        // there, it is refused.
        assert_eq!(
            decode_numeric(&encode_numeric(1250, 2), 4).unwrap(),
            125_000
        );
        assert!(decode_numeric(&encode_numeric(1255, 2), 1).is_err());
        assert_eq!(decode_numeric(&encode_numeric(1250, 2), 1).unwrap(), 125);
    }
}
