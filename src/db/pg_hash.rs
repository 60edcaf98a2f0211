//! PostgreSQL's own 64-bit hash functions (`hashint8extended`, `hashtextextended`, ...),
//! computed over the values a chunk sends. The read-back can then ask the server for the
//! sum of the same hashes over the rows it stored, instead of having every row sent back:
//! the server hashes a row in less time than it formats it for `COPY`, and nothing
//! crosses the wire.
//!
//! The functions are Bob Jenkins' lookup3 as PostgreSQL's `hash_bytes_extended` and
//! `hash_bytes_uint32_extended` compute it (on a little-endian machine, which is what
//! the tests check them against).

use crate::db::postgres::PgKind;
use crate::types::ColumnType;

fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

fn finish(mut a: u32, mut b: u32, mut c: u32) -> u64 {
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(24));
    (u64::from(b) << 32) | u64::from(c)
}

/// The initial state for `len` bytes and `seed`.
fn start(len: u32, seed: u64) -> (u32, u32, u32) {
    let mut a = 0x9e37_79b9_u32.wrapping_add(len).wrapping_add(3_923_095);
    let (mut b, mut c) = (a, a);
    if seed != 0 {
        a = a.wrapping_add((seed >> 32) as u32);
        b = b.wrapping_add(seed as u32);
        mix(&mut a, &mut b, &mut c);
    }
    (a, b, c)
}

/// `hash_bytes_extended`: what `hashtextextended` gives a text in a deterministic
/// collation, over its UTF-8 bytes.
pub fn bytes(k: &[u8], seed: u64) -> u64 {
    let (mut a, mut b, mut c) = start(k.len() as u32, seed);
    let word = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let mut rest = k;
    while rest.len() >= 12 {
        a = a.wrapping_add(word(rest));
        b = b.wrapping_add(word(&rest[4..]));
        c = c.wrapping_add(word(&rest[8..]));
        mix(&mut a, &mut b, &mut c);
        rest = &rest[12..];
    }
    let mut tail = [0u8; 12];
    tail[..rest.len()].copy_from_slice(rest);
    // PostgreSQL's variant leaves the lowest byte of `c` out of the tail.
    if rest.len() > 8 {
        c = c.wrapping_add(u32::from_le_bytes([0, tail[8], tail[9], tail[10]]));
    }
    if rest.len() > 4 {
        b = b.wrapping_add(word(&tail[4..]));
    }
    if !rest.is_empty() {
        a = a.wrapping_add(word(&tail));
    }
    finish(a, b, c)
}

/// `hash_bytes_uint32_extended`: what `hashint4extended` gives (and `hashint2extended`
/// its value widened to 32 bits).
pub fn uint32(k: u32, seed: u64) -> u64 {
    let (a, b, c) = start(4, seed);
    finish(a.wrapping_add(k), b, c)
}

/// `hashint8extended` (also `timestamp_hash_extended` and `time_hash_extended`, over
/// their microseconds): a value that fits 32 bits hashes as `hashint4extended` does.
pub fn int8(v: i64, seed: u64) -> u64 {
    let lo = v as u32;
    let hi = (v >> 32) as u32;
    uint32(if v >= 0 { lo ^ hi } else { lo ^ !hi }, seed)
}

/// `hashfloat8extended` (and `hashfloat4extended`, the value widened): zero (either
/// sign) hashes as the seed, every NaN as one.
pub fn float8(v: f64, seed: u64) -> u64 {
    if v == 0.0 {
        return seed;
    }
    let v = if v.is_nan() { f64::NAN } else { v };
    bytes(&v.to_le_bytes(), seed)
}

/// The kinds the server can hash the same way as they are sent, with the type the
/// column must be stored as: the read-back hashes what the table holds.
fn stored_type(kind: PgKind) -> Option<&'static [&'static str]> {
    Some(match kind {
        PgKind::Int2 => &["int2"],
        PgKind::Int4 => &["int4"],
        PgKind::Int8 => &["int8"],
        PgKind::Float4 => &["float4"],
        PgKind::Float8 => &["float8"],
        PgKind::Bool => &["bool"],
        PgKind::Text => &["text", "varchar"],
        PgKind::Date => &["date"],
        PgKind::Time => &["time"],
        PgKind::Timestamp => &["timestamp"],
        _ => return None,
    })
}

/// Hashes rows of the written columns as the server's `SELECT` of [`RowHasher::sql`]
/// does: each value with its column's own seed (so values that trade columns do not
/// cancel), the columns combined with XOR, NULL as a constant of its column.
#[derive(Debug, Clone)]
pub struct RowHasher {
    kinds: Vec<PgKind>,
}

impl RowHasher {
    /// A hasher for columns of these declared types, stored as `stored` types
    /// (`pg_type.typname`; `None` for a table rowshift creates, which stores each
    /// declared type as itself). `None` when some column cannot be hashed alike on both
    /// sides: a `char(n)` pads, `numeric` and `timestamptz` hash other than they are
    /// sent, an enum hashes its internal id.
    pub fn new(types: &[ColumnType], stored: Option<&[Option<&str>]>) -> Option<RowHasher> {
        let mut kinds = Vec::with_capacity(types.len());
        for (i, ty) in types.iter().enumerate() {
            let kind = PgKind::for_type(*ty);
            let allowed = stored_type(kind)?;
            if let Some(stored) = stored {
                let name = stored.get(i).copied().flatten()?;
                if !allowed.contains(&name) {
                    return None;
                }
            }
            kinds.push(kind);
        }
        Some(RowHasher { kinds })
    }

    fn seed(column: usize) -> u64 {
        0x726f_7773_0000_0000 | column as u64
    }

    fn null(column: usize) -> i64 {
        (0x6e75_6c6c_0000_0000 | column as u64) as i64
    }

    /// The seed of an `int8`'s high half: `hashint8extended` folds the halves together
    /// (0 and 4294967297 hash alike), so the high half is hashed on its own as well.
    fn high_seed(column: usize) -> u64 {
        Self::seed(column) ^ 0x0000_0001_0000_0000
    }

    /// What an infinite date hashes as (never sent: such dates are row failures).
    fn infinite(column: usize) -> i64 {
        Self::null(column) ^ 1
    }

    /// The row's hash as a SQL expression over `columns` (quoted, in order).
    pub fn sql(&self, columns: &[String]) -> String {
        let parts: Vec<String> = self
            .kinds
            .iter()
            .zip(columns)
            .enumerate()
            .map(|(i, (kind, c))| {
                let s = Self::seed(i) as i64;
                let h = match kind {
                    PgKind::Int2 => format!("hashint2extended({c}, {s})"),
                    PgKind::Int4 => format!("hashint4extended({c}, {s})"),
                    PgKind::Int8 => format!(
                        "hashint8extended({c}, {s}) # hashint4extended(({c} >> 32)::int4, {})",
                        Self::high_seed(i) as i64
                    ),
                    PgKind::Float4 => format!("hashfloat4extended({c}, {s})"),
                    PgKind::Float8 => format!("hashfloat8extended({c}, {s})"),
                    PgKind::Bool => format!("hashint4extended({c}::int4, {s})"),
                    // "C" is deterministic: the hash is the bytes', whatever the column's
                    // collation.
                    PgKind::Text => format!("hashtextextended({c}::text COLLATE \"C\", {s})"),
                    // A date is its days since 2000-01-01; an infinite one (never sent)
                    // hashes as a constant of its own rather than failing the subtraction.
                    PgKind::Date => format!(
                        "CASE WHEN isfinite({c}) THEN hashint4extended({c} - DATE '2000-01-01', {s}) WHEN {c} IS NOT NULL THEN {} END",
                        Self::infinite(i)
                    ),
                    PgKind::Time => format!("time_hash_extended({c}, {s})"),
                    _ => format!("timestamp_hash_extended({c}, {s})"),
                };
                format!("coalesce({h}, {})", Self::null(i))
            })
            .collect();
        parts.join(" # ")
    }

    /// The hash of field `column` from its binary `COPY` bytes (`None` for NULL).
    /// `None` when the bytes are not a value of the column's kind.
    pub fn field(&self, column: usize, value: Option<&[u8]>) -> Option<u64> {
        let Some(v) = value else {
            return Some(Self::null(column) as u64);
        };
        let seed = Self::seed(column);
        let be4 = || <[u8; 4]>::try_from(v).ok();
        let be8 = || <[u8; 8]>::try_from(v).ok();
        Some(match self.kinds[column] {
            PgKind::Int2 => uint32(
                i32::from(i16::from_be_bytes(v.try_into().ok()?)) as u32,
                seed,
            ),
            PgKind::Int4 | PgKind::Date => uint32(u32::from_be_bytes(be4()?), seed),
            PgKind::Int8 => {
                let v = i64::from_be_bytes(be8()?);
                int8(v, seed) ^ uint32((v >> 32) as u32, Self::high_seed(column))
            }
            PgKind::Time | PgKind::Timestamp => int8(i64::from_be_bytes(be8()?), seed),
            PgKind::Float4 => float8(f64::from(f32::from_be_bytes(be4()?)), seed),
            PgKind::Float8 => float8(f64::from_be_bytes(be8()?), seed),
            PgKind::Bool => uint32(u32::from(*v.first()? != 0), seed),
            PgKind::Text => bytes(v, seed),
            _ => return None,
        })
    }
}

/// Rows and the exact sum of their hashes (as signed 64-bit values, which is how the
/// server sums them), in any order.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HashSum {
    /// Rows hashed.
    pub rows: u64,
    /// The sum of their hashes.
    pub sum: i128,
}

impl HashSum {
    /// Adds one row's hash.
    pub fn add(&mut self, row: u64) {
        self.rows += 1;
        self.sum += i128::from(row as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_values_postgresql_computes() {
        // From PostgreSQL 15: `SELECT hashtextextended('abc', 1)` and so on. The
        // PostgreSQL suite checks many more against the server itself.
        let h = |v: u64| v as i64;
        assert_eq!(h(bytes(b"abc", 1)), 2125675926272891485);
        assert_eq!(h(bytes(b"", 0)), -6939563903564495251);
        let text = "José Álvarez, 李小龙";
        assert_eq!(h(bytes(text.as_bytes(), 77)), -7113609629640706687);
        assert_eq!(h(int8(-5, 3)), 4566310048417840633);
        assert_eq!(h(float8(1.5, 9)), 420245996409940593);
        assert_eq!(h(uint32(-7i32 as u32, 2)), -4280293135234795377);
        // time '12:34:56.789' and timestamp '2024-02-29 01:02:03.5', in microseconds.
        assert_eq!(h(int8(45_296_789_000, 4)), -4533982461844964759);
        assert_eq!(h(int8(762_483_723_500_000, 5)), -1413358410331919068);
        // date '1999-12-31' is day -1; true is 1.
        assert_eq!(h(uint32(-1i32 as u32, 6)), 5755537446403278427);
        assert_eq!(h(uint32(1, 8)), -3365140600555868597);
        assert_eq!(h(float8(f64::NAN, 1)), 3661006396734384099);
        assert_eq!(h(float8(f64::NEG_INFINITY, 1)), -596918538226457560);
        // Either zero hashes as the seed; every NaN as one.
        assert_eq!(float8(-0.0, 7), 7);
        assert_eq!(
            float8(f64::from_bits(0x7ff8_0000_0000_0001), 1),
            float8(f64::NAN, 1)
        );
    }

    #[test]
    fn only_types_stored_as_they_are_sent_are_hashed() {
        use ColumnType::*;
        assert!(RowHasher::new(&[BigInt, Text, Date, Double, Boolean], None).is_some());
        assert!(RowHasher::new(&[TimestampTz], None).is_none());
        let dec = Decimal {
            precision: 12,
            scale: 2,
        };
        assert!(RowHasher::new(&[BigInt, dec], None).is_none());
        let stored = |t: &'static str| [Some("int8"), Some(t)];
        assert!(RowHasher::new(&[BigInt, Text], Some(&stored("varchar"))).is_some());
        assert!(RowHasher::new(&[BigInt, Text], Some(&stored("bpchar"))).is_none());
        assert!(RowHasher::new(&[BigInt, Text], Some(&stored("jsonb"))).is_none());
        assert!(RowHasher::new(&[BigInt, Text], Some(&[Some("int8"), None])).is_none());
    }
}
