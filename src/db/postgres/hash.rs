//! PostgreSQL's own 64-bit hash functions (`hashint8extended`, `hashtextextended`, ...),
//! computed over the values a chunk sends. The read-back can then ask the server for the
//! sum of the same hashes over the rows it stored, instead of having every row sent back:
//! the server hashes a row in less time than it formats it for `COPY`, and nothing
//! crosses the wire.
//!
//! The functions are Bob Jenkins' lookup3 as PostgreSQL's `hash_bytes_extended` and
//! `hash_bytes_uint32_extended` compute it (on a little-endian machine, which is what
//! the tests check them against).

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    Time64MicrosecondType, TimeUnit, TimestampMicrosecondType,
};

use crate::db::postgres::{EPOCH_DAYS, EPOCH_MICROS, PgKind};
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

/// Jenkins' three words of state.
type State = (u32, u32, u32);

/// The initial state for `len` bytes and `seed`. It depends on nothing else, so a column
/// of fixed-width values computes it once ([`Starts`]).
fn start(len: u32, seed: u64) -> State {
    let mut a = 0x9e37_79b9_u32.wrapping_add(len).wrapping_add(3_923_095);
    let (mut b, mut c) = (a, a);
    if seed != 0 {
        a = a.wrapping_add((seed >> 32) as u32);
        b = b.wrapping_add(seed as u32);
        mix(&mut a, &mut b, &mut c);
    }
    (a, b, c)
}

/// The little-endian value of `k`'s first `k.len()` (at most 4) bytes, the rest zero,
/// read without a byte loop: the loads overlap where `k` is shorter than 4.
fn partial_le(k: &[u8]) -> u32 {
    match k.len() {
        0 => 0,
        n @ 1..=3 => {
            let v = u32::from(k[0]) | u32::from(k[n / 2]) << 8 | u32::from(k[n - 1]) << 16;
            v & (u32::MAX >> (8 * (4 - n)))
        }
        _ => u32::from_le_bytes([k[0], k[1], k[2], k[3]]),
    }
}

/// `k` hashed from state `s` (see [`bytes`]).
fn bytes_from(k: &[u8], s: State) -> u64 {
    let (mut a, mut b, mut c) = s;
    let word = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let mut rest = k;
    while rest.len() >= 12 {
        a = a.wrapping_add(word(rest));
        b = b.wrapping_add(word(&rest[4..]));
        c = c.wrapping_add(word(&rest[8..]));
        mix(&mut a, &mut b, &mut c);
        rest = &rest[12..];
    }
    // The last 0 to 11 bytes, as words of a zero-padded tail; adding a zero word is
    // adding nothing, so no word needs a branch of its own. Words past 4 bytes are read
    // as two overlapping loads, whose shared bytes are the same bytes.
    let n = rest.len();
    let (wa, wb, wc) = match n {
        0..=4 => (partial_le(rest), 0, 0),
        5..=8 => (word(rest), word(&rest[n - 4..]) >> (8 * (8 - n)), 0),
        _ => (
            word(rest),
            word(&rest[4..]),
            word(&rest[n - 4..]) >> (8 * (12 - n)),
        ),
    };
    a = a.wrapping_add(wa);
    b = b.wrapping_add(wb);
    // PostgreSQL's variant leaves the lowest byte of `c` out of the tail.
    c = c.wrapping_add(wc << 8);
    finish(a, b, c)
}

/// `hash_bytes_extended`: what `hashtextextended` gives a text in a deterministic
/// collation, over its UTF-8 bytes.
pub fn bytes(k: &[u8], seed: u64) -> u64 {
    bytes_from(k, start(k.len() as u32, seed))
}

/// The start states of one column's seed for the lengths most values have, so hashing
/// a value begins where [`start`] would have left it.
#[derive(Clone)]
struct Starts {
    seed: u64,
    short: [State; 64],
}

impl Starts {
    fn new(seed: u64) -> Self {
        Starts {
            seed,
            short: std::array::from_fn(|len| start(len as u32, seed)),
        }
    }

    fn bytes(&self, k: &[u8]) -> u64 {
        let s = match self.short.get(k.len()) {
            Some(s) => *s,
            None => start(k.len() as u32, self.seed),
        };
        bytes_from(k, s)
    }

    fn uint32(&self, k: u32) -> u64 {
        let (a, b, c) = self.short[4];
        finish(a.wrapping_add(k), b, c)
    }

    fn int8(&self, v: i64) -> u64 {
        self.uint32(fold_int8(v))
    }

    /// An `int8` column's hash: `hashint8extended` folds the halves together (0 and
    /// 4294967297 hash alike), so the high half, sign-extended, is XORed into the seed
    /// too, and values that fold alike hash apart.
    fn int8_whole(&self, v: i64) -> u64 {
        uint32(fold_int8(v), self.seed ^ (v >> 32) as u64)
    }

    fn float8(&self, v: f64) -> u64 {
        float8_bytes(v).map_or(self.seed, |b| bytes_from(&b, self.short[8]))
    }
}

/// `hash_bytes_uint32_extended`: what `hashint4extended` gives (and `hashint2extended`
/// its value widened to 32 bits).
pub fn uint32(k: u32, seed: u64) -> u64 {
    let (a, b, c) = start(4, seed);
    finish(a.wrapping_add(k), b, c)
}

/// What `hashint8extended` hashes of a 64-bit value: its halves folded together, so a
/// value that fits 32 bits hashes as `hashint4extended` does.
fn fold_int8(v: i64) -> u32 {
    let lo = v as u32;
    let hi = (v >> 32) as u32;
    if v >= 0 { lo ^ hi } else { lo ^ !hi }
}

/// `hashint8extended` (also `timestamp_hash_extended` and `time_hash_extended`, over
/// their microseconds).
pub fn int8(v: i64, seed: u64) -> u64 {
    uint32(fold_int8(v), seed)
}

/// `hashfloat8extended` (and `hashfloat4extended`, the value widened): zero (either
/// sign) hashes as the seed, every NaN as one.
pub fn float8(v: f64, seed: u64) -> u64 {
    float8_bytes(v).map_or(seed, |b| bytes(&b, seed))
}

/// The bytes `hashfloat8extended` hashes of `v`, every NaN as one NaN; `None` for zero
/// (either sign), which hashes as the seed itself.
fn float8_bytes(v: f64) -> Option<[u8; 8]> {
    if v == 0.0 {
        return None;
    }
    Some(if v.is_nan() { f64::NAN } else { v }.to_le_bytes())
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
        // A char(n) hashes as text without its trailing spaces (`bpchar::text` drops
        // them), as the sending side hashes it.
        PgKind::Text => &["text", "varchar", "bpchar"],
        PgKind::Date => &["date"],
        PgKind::Time => &["time"],
        PgKind::Timestamp => &["timestamp"],
        _ => return None,
    })
}

/// Hashes rows of the written columns as the server's `SELECT` of [`RowHasher::sql`]
/// does: each value with its column's own seed (so values that trade columns do not
/// cancel), the columns combined with XOR, NULL as a constant of its column.
#[derive(Clone)]
pub struct RowHasher {
    kinds: Vec<PgKind>,
    /// Each column's start states, by its seed.
    starts: Vec<Starts>,
    /// Columns stored as `char(n)`: the server pads what it stores and gives it back as
    /// text without trailing spaces, so the sent text is hashed without them too; under
    /// `char(n)` such spaces are no part of the value.
    padded: Vec<bool>,
}

impl std::fmt::Debug for RowHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowHasher")
            .field("kinds", &self.kinds)
            .finish_non_exhaustive()
    }
}

impl RowHasher {
    /// A hasher for columns of these declared types, stored as `stored` types
    /// (`pg_type.typname`; `None` for a table rowshift creates, which stores each
    /// declared type as itself). `None` when some column cannot be hashed alike on both
    /// sides: `numeric` and `timestamptz` hash other than they are sent, an enum hashes
    /// its internal id. A `char(n)` column is hashed without trailing spaces.
    pub fn new(types: &[ColumnType], stored: Option<&[Option<&str>]>) -> Option<RowHasher> {
        let mut kinds = Vec::with_capacity(types.len());
        let mut padded = Vec::with_capacity(types.len());
        for (i, ty) in types.iter().enumerate() {
            let kind = PgKind::for_type(*ty);
            let allowed = stored_type(kind)?;
            let name = match stored {
                Some(stored) => Some(stored.get(i).copied().flatten()?),
                None => None,
            };
            if name.is_some_and(|n| !allowed.contains(&n)) {
                return None;
            }
            kinds.push(kind);
            padded.push(name == Some("bpchar"));
        }
        let starts = (0..kinds.len())
            .map(|i| Starts::new(Self::seed(i)))
            .collect();
        Some(RowHasher {
            kinds,
            starts,
            padded,
        })
    }

    fn seed(column: usize) -> u64 {
        0x726f_7773_0000_0000 | column as u64
    }

    fn null(column: usize) -> i64 {
        (0x6e75_6c6c_0000_0000 | column as u64) as i64
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
                    // As `Starts::int8_whole`: the high half goes into the seed.
                    PgKind::Int8 => format!("hashint8extended({c}, {s} # ({c} >> 32))"),
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

    /// Adds the rows of `batch` (the written columns, in order, as sent) to `sum`:
    /// each row's hash as [`RowHasher::sql`] computes it over the values the server
    /// stores from them. Column by column over the typed arrays, so a value costs a
    /// tight loop's step rather than a dynamic call.
    ///
    /// An error when a column is not the Arrow type its kind is sent from.
    pub fn add_batch(&self, batch: &RecordBatch, sum: &mut HashSum) -> Result<(), String> {
        let mut rows = vec![0u64; batch.num_rows()];
        for (i, (col, kind)) in batch.columns().iter().zip(&self.kinds).enumerate() {
            let st = &self.starts[i];
            let (nulls, null) = (col.logical_nulls(), Self::null(i) as u64);
            let nulls = nulls.as_ref();
            match (kind, col.data_type()) {
                (PgKind::Int2, DataType::Int16) => {
                    let a = col.as_primitive::<Int16Type>();
                    fold_column(&mut rows, nulls, null, |r| {
                        st.uint32(i32::from(a.value(r)) as u32)
                    });
                }
                (PgKind::Int4, DataType::Int32) => {
                    let a = col.as_primitive::<Int32Type>();
                    fold_column(&mut rows, nulls, null, |r| st.uint32(a.value(r) as u32));
                }
                (PgKind::Int8, DataType::Int64) => {
                    let a = col.as_primitive::<Int64Type>();
                    fold_column(&mut rows, nulls, null, |r| st.int8_whole(a.value(r)));
                }
                (PgKind::Float4, DataType::Float32) => {
                    let a = col.as_primitive::<Float32Type>();
                    fold_column(&mut rows, nulls, null, |r| st.float8(f64::from(a.value(r))));
                }
                (PgKind::Float8, DataType::Float64) => {
                    let a = col.as_primitive::<Float64Type>();
                    fold_column(&mut rows, nulls, null, |r| st.float8(a.value(r)));
                }
                (PgKind::Bool, DataType::Boolean) => {
                    let a = col.as_boolean();
                    fold_column(&mut rows, nulls, null, |r| st.uint32(u32::from(a.value(r))));
                }
                (PgKind::Text, DataType::Utf8) if self.padded[i] => {
                    let a = col.as_string::<i32>();
                    fold_column(&mut rows, nulls, null, |r| {
                        st.bytes(a.value(r).trim_end_matches(' ').as_bytes())
                    });
                }
                (PgKind::Text, DataType::Utf8) => {
                    let a = col.as_string::<i32>();
                    fold_column(&mut rows, nulls, null, |r| st.bytes(a.value(r).as_bytes()));
                }
                // Dates and timestamps are sent as days and microseconds since
                // 2000-01-01; the encoder has refused any that overflow.
                (PgKind::Date, DataType::Date32) => {
                    let a = col.as_primitive::<Date32Type>();
                    fold_column(&mut rows, nulls, null, |r| {
                        st.uint32(a.value(r).wrapping_sub(EPOCH_DAYS) as u32)
                    });
                }
                (PgKind::Time, DataType::Time64(TimeUnit::Microsecond)) => {
                    let a = col.as_primitive::<Time64MicrosecondType>();
                    fold_column(&mut rows, nulls, null, |r| st.int8(a.value(r)));
                }
                (PgKind::Timestamp, DataType::Timestamp(TimeUnit::Microsecond, _)) => {
                    let a = col.as_primitive::<TimestampMicrosecondType>();
                    fold_column(&mut rows, nulls, null, |r| {
                        st.int8(a.value(r).wrapping_sub(EPOCH_MICROS))
                    });
                }
                (kind, t) => return Err(format!("cannot hash a {t} array as {kind:?}")),
            }
        }
        for row in rows {
            sum.add(row);
        }
        Ok(())
    }
}

/// XORs into each row's hash `hash(row)`, or `null` where `nulls` says NULL.
fn fold_column(
    rows: &mut [u64],
    nulls: Option<&NullBuffer>,
    null: u64,
    hash: impl Fn(usize) -> u64,
) {
    match nulls {
        None => rows.iter_mut().enumerate().for_each(|(r, h)| *h ^= hash(r)),
        Some(n) => rows.iter_mut().enumerate().for_each(|(r, h)| {
            *h ^= if n.is_valid(r) { hash(r) } else { null };
        }),
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
    fn a_batch_hashes_as_its_rows_do_value_by_value_from_any_offset() {
        use std::sync::Arc;

        use arrow::array::{
            ArrayRef, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray,
        };

        // Text of every length up to 40 bytes and past it, NULLs in every column.
        let text: Vec<Option<String>> = (0..60)
            .map(|n| (n % 9 != 4).then(|| "é".repeat(n / 2) + &"z".repeat(n % 2)))
            .collect();
        let ids: Vec<Option<i64>> = (0..60)
            .map(|n: i64| (n % 11 != 7).then_some((n - 30) * 4_294_967_297))
            .collect();
        let floats: Vec<Option<f64>> = (0..60)
            .map(|n| (n % 13 != 2).then_some(if n % 5 == 0 { -0.0 } else { n as f64 / 3.0 }))
            .collect();
        let dates: Vec<Option<i32>> = (0..60)
            .map(|n| (n % 7 != 1).then_some(n * 400 - 9000))
            .collect();
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(ids.clone())) as ArrayRef),
            ("t", Arc::new(StringArray::from(text.clone()))),
            ("f", Arc::new(Float64Array::from(floats.clone()))),
            ("d", Arc::new(Date32Array::from(dates.clone()))),
        ])
        .unwrap();
        use ColumnType::*;
        let hasher = RowHasher::new(&[BigInt, Text, Double, Date], None).unwrap();
        // Each row as the SQL of `RowHasher::sql` computes it, one value at a time.
        let row = |r: usize| -> u64 {
            let s = RowHasher::seed;
            let null = |c| RowHasher::null(c) as u64;
            ids[r].map_or(null(0), |v| uint32(fold_int8(v), s(0) ^ (v >> 32) as u64))
                ^ text[r]
                    .as_ref()
                    .map_or(null(1), |v| bytes(v.as_bytes(), s(1)))
                ^ floats[r].map_or(null(2), |v| float8(v, s(2)))
                ^ dates[r].map_or(null(3), |v| uint32((v - 10_957) as u32, s(3)))
        };
        for (offset, len) in [(0, 60), (13, 40), (59, 1), (20, 0)] {
            let mut sum = HashSum::default();
            hasher
                .add_batch(&batch.slice(offset, len), &mut sum)
                .unwrap();
            let mut want = HashSum::default();
            (offset..offset + len).for_each(|r| want.add(row(r)));
            assert_eq!(sum, want, "rows {offset}..{}", offset + len);
        }
        // A column that is not its kind's Arrow type is an error, not a wrong sum.
        let wrong = RecordBatch::try_from_iter([(
            "id",
            Arc::new(StringArray::from(vec!["1"])) as ArrayRef,
        )])
        .unwrap();
        let err = RowHasher::new(&[BigInt], None)
            .unwrap()
            .add_batch(&wrong, &mut HashSum::default())
            .unwrap_err();
        assert_eq!(err, "cannot hash a Utf8 array as Int8");
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
        assert!(RowHasher::new(&[BigInt, Text], Some(&stored("bpchar"))).is_some());
        assert!(RowHasher::new(&[BigInt, Text], Some(&stored("jsonb"))).is_none());
        assert!(RowHasher::new(&[BigInt, Text], Some(&[Some("int8"), None])).is_none());
    }

    #[test]
    fn a_char_n_column_hashes_text_without_its_trailing_spaces_only() {
        use std::sync::Arc;

        use arrow::array::{ArrayRef, RecordBatch, StringArray};

        let sum = |hasher: &RowHasher, v: &str| {
            let batch = RecordBatch::try_from_iter([(
                "c",
                Arc::new(StringArray::from(vec![v])) as ArrayRef,
            )])
            .unwrap();
            let mut sum = HashSum::default();
            hasher.add_batch(&batch, &mut sum).unwrap();
            sum
        };
        let padded = RowHasher::new(&[ColumnType::Text], Some(&[Some("bpchar")])).unwrap();
        let text = RowHasher::new(&[ColumnType::Text], Some(&[Some("text")])).unwrap();
        assert_eq!(sum(&padded, "ab   "), sum(&text, "ab"));
        assert_eq!(sum(&padded, "ab"), sum(&text, "ab"));
        assert_ne!(sum(&text, "ab "), sum(&text, "ab"));
        // Only spaces: a tab or a leading space is part of the value.
        assert_ne!(sum(&padded, "ab\t"), sum(&text, "ab"));
        assert_eq!(sum(&padded, " ab "), sum(&text, " ab"));
    }
}
