//! What the database targets (SQLite, PostgreSQL, MySQL) decide the same way about an
//! existing table: `if_exists`, `--restart`, missing columns, a table gone on resume; and
//! which of its rows are a chunk's.

use arrow::record_batch::RecordBatch;

use super::Prepare;
use crate::check::readback::KEYS_PER_QUERY;
use crate::chunk::{Chunk, ChunkRange, TargetKey};
use crate::chunk::{Selection, key_values};
use crate::config::IfExists;
use crate::sql::keyset::{KeySql, Render};
use crate::types::ColumnType;
use crate::{Error, Result};

/// Refuses `--restart` on an `if_exists = "append"` target.
pub(crate) fn check_restart(how: Prepare, if_exists: IfExists, here: &str) -> Result<()> {
    if how == Prepare::Restart && if_exists == IfExists::Append {
        return Err(Error::Unsupported(format!(
            "{here}: --restart cannot clean an if_exists = \"append\" target: rowshift cannot tell the rows it wrote from those already there"
        )));
    }
    Ok(())
}

/// Whether `prepare` drops an existing table that holds `rows` rows (and its quarantine)
/// and creates it again; `Err` when `if_exists = "fail"` forbids writing into it.
pub(crate) fn drops_existing(
    how: Prepare,
    if_exists: IfExists,
    rows: i64,
    here: &str,
) -> Result<bool> {
    match (how, if_exists) {
        (Prepare::Restart, _) | (Prepare::Fresh, IfExists::Replace) => Ok(true),
        (Prepare::Fresh, IfExists::Fail) if rows > 0 => Err(Error::data(
            here,
            format!(
                "the target table already holds {rows} rows; set if_exists = \"replace\" or \"append\" in [target]"
            ),
        )),
        _ => Ok(false),
    }
}

/// The statements `prepare` would run on the table (for dry runs): `existing_rows` is the
/// table's row count if it exists, `table` its quoted name, `create` its `CREATE TABLE`.
pub(crate) fn planned_ddl(
    existing_rows: Option<i64>,
    if_exists: IfExists,
    table: &str,
    create: String,
) -> Vec<String> {
    match (existing_rows, if_exists) {
        (None, _) => vec![create],
        (Some(_), IfExists::Replace) => vec![format!("DROP TABLE {table}"), create],
        (Some(rows), IfExists::Fail) if rows > 0 => vec![format!(
            "-- none: the table already holds {rows} rows and if_exists = \"fail\"; run would stop"
        )],
        (Some(_), _) => vec![format!("-- none: table {table} exists and is written into")],
    }
}

/// The statements a database sink's `prepare` runs, exactly and in its order, for
/// `plan`: what differs between the databases is given, the decision is made here once.
pub(crate) struct PreparePlan {
    /// What comes first whatever the table's state (`CREATE SCHEMA`, `CREATE DATABASE`).
    pub prelude: Option<String>,
    /// The `DROP`s of an existing table and its quarantine table, in the order this
    /// database's `prepare` runs them.
    pub drops: Vec<String>,
    /// The table's `CREATE TABLE`.
    pub create_table: String,
    /// The quarantine table's `CREATE TABLE IF NOT EXISTS`.
    pub create_rejects: String,
}

impl PreparePlan {
    /// The statements for a table that holds `existing` rows (`None`: no table yet).
    pub(crate) fn statements(self, existing: Option<i64>, if_exists: IfExists) -> Vec<String> {
        let mut out: Vec<String> = self.prelude.into_iter().collect();
        match (existing, if_exists) {
            (None, _) => out.push(self.create_table),
            (Some(_), IfExists::Replace) => {
                out.extend(self.drops);
                out.push(self.create_table);
            }
            (Some(rows), IfExists::Fail) if rows > 0 => {
                out.push(format!("-- the table already holds {rows} rows and if_exists = \"fail\": the run would stop here"));
                return out;
            }
            (Some(_), _) => {}
        }
        out.push(self.create_rejects);
        out
    }
}

/// Checks that an existing table has every declared column.
pub(crate) fn check_columns<'a>(
    declared: impl Iterator<Item = &'a str>,
    have: &[&str],
    here: &str,
) -> Result<()> {
    let missing: Vec<&str> = declared.filter(|c| !have.contains(c)).collect();
    if !missing.is_empty() {
        return Err(Error::data(
            here,
            format!(
                "the existing table lacks column(s) {}; it has: {}",
                missing.join(", "),
                have.join(", ")
            ),
        ));
    }
    Ok(())
}

/// On resume: refuses to go on when `prepare` had to create the table again although the
/// checkpoint says `done` chunks were committed to it.
pub(crate) fn check_not_recreated(recreated: bool, done: &[usize], here: &str) -> Result<()> {
    if recreated && !done.is_empty() {
        return Err(Error::data(
            here,
            format!(
                "the table is gone, but the checkpoint says {} chunks were committed to it; run with --restart to start over",
                done.len()
            ),
        ));
    }
    Ok(())
}

/// Which target rows are `chunk`'s, for `replace-chunk`: its key range when the target
/// columns hold the source key unchanged and the range fits their types (`column_type`),
/// else exactly the keys it wrote (`batches`).
pub(crate) fn chunk_selection(
    key: Option<&TargetKey>,
    chunk: &Chunk,
    batches: &[RecordBatch],
    column_type: impl Fn(&str) -> Option<ColumnType>,
    here: &str,
) -> Result<Selection> {
    let Some(key) = key else {
        return Err(Error::Unsupported(format!(
            "{here}: write_mode = \"replace-chunk\" needs a target column whose expr is the source key"
        )));
    };
    if let (true, ChunkRange::Keys { lo, hi }) = (key.unchanged, &chunk.range) {
        let range = Selection::Range {
            columns: key.columns.clone(),
            lo: lo.clone(),
            hi: hi.clone(),
        };
        if range.range_fits(column_type) {
            return Ok(range);
        }
    }
    Selection::of_keys(&key.columns, batches)
}

/// The rows a chunk that wrote `batches` reads back: `selection`, or exactly the keys it
/// sent (`key` columns) when it upserted (rows that were there before may have been
/// updated, in its key range or not) or when its range does not fit the key columns.
pub(crate) fn readback_selection(
    selection: &Selection,
    key: &[String],
    upsert: bool,
    column_type: impl Fn(&str) -> Option<ColumnType>,
    batches: &[RecordBatch],
) -> Result<Selection> {
    if !key.is_empty() && (upsert || !selection.range_fits(column_type)) {
        return Selection::of_keys(key, batches);
    }
    Ok(selection.clone())
}

/// `WHERE` clauses (several for a long key list) restricting a table to `selection`,
/// key values rendered by `literal` (statements like `COPY` take no parameters).
/// `keyset(columns, range)` writes the key columns in the database's SQL, for a range
/// comparison or (`range` false) an equality lookup; `column_type` says whether a range
/// fits its columns.
pub(crate) fn conditions(
    selection: &Selection,
    keyset: impl Fn(&[String], bool) -> KeySql,
    column_type: impl Fn(&str) -> Option<ColumnType>,
    literal: Render<'_>,
    here: &str,
) -> Result<Vec<String>> {
    Ok(match selection {
        Selection::Range { columns, lo, hi } => {
            if !selection.range_fits(column_type) {
                return Err(Error::Unsupported(format!(
                    "{here}: a chunk's key range cannot be compared with target column(s) {} of another type",
                    columns.join(", ")
                )));
            }
            let range = keyset(columns, true).range(lo.as_ref(), hi.as_ref(), literal)?;
            vec![format!(" WHERE {range}")]
        }
        Selection::Keys { columns, keys } => {
            let keyset = keyset(columns, false);
            key_values(keys)
                .chunks(KEYS_PER_QUERY)
                .map(|group| Ok(format!(" WHERE {}", keyset.one_of(group, literal)?)))
                .collect::<Result<_>>()?
        }
        Selection::All => vec![String::new()],
        Selection::Files => {
            return Err(Error::Internal("a table has no part files".into()));
        }
    })
}

/// A column of the target table as the database sinks create and write it: the
/// declared name and type, and whether it may hold NULL and is part of the primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredColumn {
    /// The column's name, unquoted.
    pub name: String,
    /// Its declared type.
    pub ty: ColumnType,
    /// Whether it may hold NULL.
    pub nullable: bool,
    /// Whether it is (part of) the primary key.
    pub primary_key: bool,
    /// Its `default`, a SQL expression.
    pub default: Option<String>,
    /// Whether the target numbers it (`identity`).
    pub identity: bool,
}

impl DeclaredColumn {
    /// A column of `name` and type `ty`.
    pub fn new(name: impl Into<String>, ty: ColumnType, nullable: bool, primary_key: bool) -> Self {
        DeclaredColumn {
            name: name.into(),
            ty,
            nullable,
            primary_key,
            default: None,
            identity: false,
        }
    }

    /// The column a pipeline's `[target.columns]` entry declares.
    pub fn of(c: &crate::config::TargetColumn) -> DeclaredColumn {
        DeclaredColumn {
            name: c.name.value.clone(),
            ty: c.ty.value,
            nullable: c.nullable,
            primary_key: c.primary_key,
            default: c.default.as_ref().map(|d| d.value.clone()),
            identity: c.identity,
        }
    }
}

/// The primary key columns of a table rowshift creates, from `columns`: the source key's columns first, in key order, so the key's
/// index serves a chunk's range; then any other declared ones, in their order.
pub(crate) fn primary_key<'c>(
    columns: &'c [DeclaredColumn],
    key: Option<&'c TargetKey>,
) -> Vec<&'c str> {
    let declared = columns
        .iter()
        .filter(|c| c.primary_key)
        .map(|c| c.name.as_str());
    let in_key = |name: &str| key.is_some_and(|k| k.columns.iter().any(|c| c == name));
    let mut pk: Vec<&str> = key
        .map(|k| k.columns.iter().map(String::as_str).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|k| declared.clone().any(|d| d == *k))
        .collect();
    pk.extend(declared.filter(|d| !in_key(d)));
    pk
}

/// A written column that the existing table stores more coarsely than its declared type
/// holds values: a `datetime` keeping whole seconds under a `timestamp`, a
/// `numeric(10,2)` under a `decimal(10,4)`, MySQL's single-precision `float` under a
/// `double`, or one that stores some texts as others (MySQL's `char(n)`, `enum`, `set`,
/// MariaDB's `uuid`, a `varchar(n)` cutting trailing spaces). Neither server refuses such
/// a value, even in strict mode: it rounds, cuts or rewrites it, so the sink refuses the
/// row itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Coarse {
    /// The column's place among the written columns.
    pub column: usize,
    /// The stored type as the catalog shows it.
    pub shown: String,
    /// What the column keeps of a value.
    pub keeps: Keeps,
    /// An `enum`'s or a `set`'s members, in their order.
    pub members: Vec<String>,
}

/// What a [`Coarse`] column keeps of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keeps {
    /// The digits after the point: of a second for times and timestamps, of the number
    /// for decimals (below zero, a PostgreSQL `numeric(5,-2)` keeps multiples of 100).
    Digits(i32),
    /// A 32-bit float's precision.
    Single,
    /// A float rounded to this many decimal places, as MySQL's `float(m,d)` and
    /// `double(m,d)` store it (then in single precision where `single`).
    FloatDigits { digits: u32, single: bool },
    /// Text without its trailing spaces, as MySQL's `char(n)` gives it back.
    NoTrailingSpaces,
    /// One of the members, spelled as declared: MySQL's `enum` stores a value that
    /// matches one but for case or trailing spaces as that member.
    Member,
    /// Members spelled as declared, in their order, each once: MySQL's `set` stores
    /// `'b,a'` as `'a,b'`.
    Members,
    /// A UUID's lowercase, dashed form, which MariaDB's `uuid` stores any other as.
    Uuid,
    /// This many characters: MySQL's `varchar(n)` cuts the spaces a text ends in past
    /// them with only a note, even in strict mode, and PostgreSQL's without one (other
    /// characters past them either refuses itself).
    MaxChars(usize),
    /// This many bytes, as MySQL's `tinytext`, `text` and `mediumtext` hold, cutting
    /// spaces past them alike.
    MaxBytes(usize),
}

impl Coarse {
    /// The column at `column` of declared type `ty`, stored as `shown` with `fraction`
    /// digits of a second (times and timestamps) or `scale` digits (decimals, and a
    /// MySQL float's `d`), where the catalog has them; `mysql` is its MySQL `DATA_TYPE`
    /// (`float`, `char`, `enum`, ...) in a MySQL table. `None` when the column keeps every
    /// value of the type as it is sent.
    pub(crate) fn of(
        column: usize,
        ty: ColumnType,
        shown: &str,
        fraction: Option<u64>,
        scale: Option<i64>,
        mysql: Option<&str>,
    ) -> Option<Coarse> {
        // A float column stores single precision whatever the declared type.
        let single = mysql == Some("float");
        let keeps = match ty {
            ColumnType::Timestamp | ColumnType::TimestampTz | ColumnType::Time => {
                fraction.filter(|&f| f < 6).map(|f| Keeps::Digits(f as i32))
            }
            ColumnType::Decimal { scale: s, .. } => scale
                .filter(|&kept| kept < i64::from(s.max(0)))
                .map(|kept| Keeps::Digits(kept.max(-1000) as i32)),
            // MySQL's 31 decimals (`NOT_FIXED_DEC`) mean no rounding at all.
            ColumnType::Double | ColumnType::Real => match scale.filter(|d| (0..31).contains(d)) {
                Some(d) => Some(Keeps::FloatDigits {
                    digits: d as u32,
                    single,
                }),
                None => (single && ty == ColumnType::Double).then_some(Keeps::Single),
            },
            ColumnType::Text | ColumnType::Varchar(_) => match mysql {
                // Sessions run without PAD_CHAR_TO_FULL_LENGTH (`db::mysql`), so a
                // char(n) is read back without its trailing spaces.
                Some("char") => Some(Keeps::NoTrailingSpaces),
                Some("enum") => Some(Keeps::Member),
                Some("set") => Some(Keeps::Members),
                Some("uuid") => Some(Keeps::Uuid),
                Some("varchar") => shown
                    .strip_prefix("varchar(")
                    .and_then(|rest| rest.split(')').next()?.parse().ok())
                    .map(Keeps::MaxChars),
                Some("tinytext") => Some(Keeps::MaxBytes(255)),
                Some("text") => Some(Keeps::MaxBytes(65_535)),
                Some("mediumtext") => Some(Keeps::MaxBytes(16_777_215)),
                _ => None,
            },
            _ => None,
        }?;
        let members = match keeps {
            Keeps::Member | Keeps::Members => members(shown),
            _ => Vec::new(),
        };
        Some(Coarse {
            column,
            shown: shown.to_string(),
            keeps,
            members,
        })
    }

    /// A text column at `column`, stored as `shown`, that holds `n` characters and cuts
    /// the spaces past them: PostgreSQL's `varchar(n)`.
    pub(crate) fn max_chars(column: usize, shown: &str, n: usize) -> Coarse {
        Coarse {
            column,
            shown: shown.to_string(),
            keeps: Keeps::MaxChars(n),
            members: Vec::new(),
        }
    }

    /// Why a value of column `name` is refused (`decimal`: its values are decimals,
    /// whose digits are places rather than digits of a second).
    fn reason(&self, name: &str, decimal: bool) -> String {
        const FINER: &str = "a finer value would be rounded or cut";
        const REWRITTEN: &str = "this text would be changed or refused";
        let (what, outcome) = match self.keeps {
            Keeps::NoTrailingSpaces => (
                "gives text back without its trailing spaces".to_string(),
                "they would be lost",
            ),
            Keeps::Member => (
                "stores only its members, spelled as declared".to_string(),
                "another text would be changed or refused",
            ),
            Keeps::Members => (
                "stores its members in their declared order and spelling, each once".to_string(),
                REWRITTEN,
            ),
            Keeps::Uuid => (
                "stores a UUID in its lowercase, dashed form".to_string(),
                REWRITTEN,
            ),
            Keeps::MaxChars(n) => (
                format!("holds {n} characters"),
                "the spaces past them would be cut",
            ),
            Keeps::MaxBytes(n) => (
                format!("holds {n} bytes"),
                "the spaces past them would be cut",
            ),
            Keeps::Single => ("keeps single precision".to_string(), FINER),
            Keeps::FloatDigits {
                digits,
                single: true,
            } => (
                format!("keeps {digits} decimal places in single precision"),
                FINER,
            ),
            Keeps::FloatDigits { digits, .. } => (format!("keeps {digits} decimal places"), FINER),
            Keeps::Digits(d) if decimal && d < 0 => (
                format!(
                    "keeps multiples of 1{}",
                    "0".repeat(d.unsigned_abs() as usize)
                ),
                FINER,
            ),
            Keeps::Digits(d) if decimal => (format!("keeps {d} decimal places"), FINER),
            Keeps::Digits(0) => ("keeps whole seconds".to_string(), FINER),
            Keeps::Digits(d) => (format!("keeps {d} digits of a second"), FINER),
        };
        format!("column {name} is {}, which {what}: {outcome}", self.shown)
    }

    /// Whether the column would store `text` as another text (`false` for a column
    /// whose values are not text).
    fn rewrites(&self, text: &str) -> bool {
        match self.keeps {
            Keeps::NoTrailingSpaces => text.ends_with(' '),
            Keeps::Member => !self.members.iter().any(|m| m == text),
            Keeps::Members => !in_set_order(text, &self.members),
            Keeps::Uuid => !canonical_uuid(text),
            // A text within n bytes is within n characters too.
            Keeps::MaxChars(n) => {
                text.len() > n
                    && text
                        .char_indices()
                        .nth(n)
                        .is_some_and(|(at, _)| spaces_only(&text.as_bytes()[at..]))
            }
            // Byte n may fall inside a character: compare bytes, not a slice of the text.
            Keeps::MaxBytes(n) => text.len() > n && spaces_only(&text.as_bytes()[n..]),
            Keeps::Digits(_) | Keeps::Single | Keeps::FloatDigits { .. } => false,
        }
    }
}

/// The rows of `batches` (counted across them) that hold a value a `coarse` column would
/// not keep as sent, each refused once, for its first such column, with the value and
/// what the column keeps.
pub(crate) fn coarse_refusals(
    coarse: &[Coarse],
    columns: &[DeclaredColumn],
    batches: &[RecordBatch],
) -> Vec<super::Refusal> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{
        DataType, Decimal128Type, Float32Type, Float64Type, Time64MicrosecondType, TimeUnit,
        TimestampMicrosecondType,
    };
    let mut out = std::collections::BTreeMap::new();
    let mut base = 0;
    for batch in batches {
        for c in coarse {
            let a = batch.column(c.column);
            // The unit of the last digit kept, in the array's own unit.
            // Past 10^38 no Decimal128 value but 0 is a multiple of the step.
            let finer = |unit_digits: u32| -> Option<i128> {
                let Keeps::Digits(kept) = c.keeps else {
                    return None;
                };
                let d = i64::from(unit_digits) - i64::from(kept);
                (d > 0).then(|| 10i128.checked_pow(d as u32).unwrap_or(i128::MAX))
            };
            let lossy: Vec<usize> = match (a.data_type(), c.keeps) {
                (DataType::Float64 | DataType::Float32, Keeps::FloatDigits { digits, single }) => {
                    let values: Vec<f64> = match a.data_type() {
                        DataType::Float32 => a
                            .as_primitive::<Float32Type>()
                            .values()
                            .iter()
                            .map(|v| f64::from(*v))
                            .collect(),
                        _ => a.as_primitive::<Float64Type>().values().to_vec(),
                    };
                    // What the server stores, bit for bit (-0 becomes 0); NaN and the
                    // infinities are the server's to refuse.
                    let stored = |x: f64| {
                        let s = mysql_rounded(x, digits);
                        if single { f64::from(s as f32) } else { s }
                    };
                    (0..a.len())
                        .filter(|&r| {
                            let x = values[r];
                            a.is_valid(r) && x.is_finite() && stored(x).to_bits() != x.to_bits()
                        })
                        .collect()
                }
                (
                    DataType::Utf8,
                    Keeps::NoTrailingSpaces
                    | Keeps::Member
                    | Keeps::Members
                    | Keeps::Uuid
                    | Keeps::MaxChars(_)
                    | Keeps::MaxBytes(_),
                ) => {
                    let v = a.as_string::<i32>();
                    (0..v.len())
                        .filter(|&r| v.is_valid(r) && c.rewrites(v.value(r)))
                        .collect()
                }
                (DataType::Float64, Keeps::Single) => {
                    let v = a.as_primitive::<Float64Type>();
                    // NaN and the infinities are the server's to refuse.
                    (0..v.len())
                        .filter(|&r| {
                            let x = v.value(r);
                            v.is_valid(r) && x.is_finite() && f64::from(x as f32) != x
                        })
                        .collect()
                }
                (DataType::Timestamp(TimeUnit::Microsecond, _), _) => match finer(6) {
                    Some(step) => off_step(a.as_primitive::<TimestampMicrosecondType>(), step),
                    None => continue,
                },
                (DataType::Time64(TimeUnit::Microsecond), _) => match finer(6) {
                    Some(step) => off_step(a.as_primitive::<Time64MicrosecondType>(), step),
                    None => continue,
                },
                (DataType::Decimal128(_, s), _) => {
                    match finer(u32::from(s.max(&0).unsigned_abs())) {
                        Some(step) => off_step(a.as_primitive::<Decimal128Type>(), step),
                        None => continue,
                    }
                }
                _ => continue,
            };
            let name = columns[c.column].name.as_str();
            let reason = c.reason(name, matches!(a.data_type(), DataType::Decimal128(..)));
            for r in lossy {
                let std::collections::btree_map::Entry::Vacant(slot) = out.entry(base + r) else {
                    continue;
                };
                let value = crate::transform::cell_text(batch, c.column, r);
                slot.insert(super::Refusal {
                    row: base + r,
                    column: Some(name.to_string()),
                    // The value is the refusal's detail: without it, the reason groups
                    // the column's refusals in the summary.
                    reason: reason.clone(),
                    detail: value,
                });
            }
        }
        base += batch.num_rows();
    }
    out.into_values().collect()
}

/// The members of a MySQL `enum(...)` or `set(...)` as `information_schema` shows the
/// type: each quoted, a quote doubled and a backslash escaped.
fn members(shown: &str) -> Vec<String> {
    let Some(list) = shown.find('(').map(|at| &shown[at + 1..]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut chars = list.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut member = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    member.push('\'');
                }
                '\'' => break,
                '\\' => member.extend(chars.next()),
                c => member.push(c),
            }
        }
        out.push(member);
    }
    out
}

/// Whether `bytes` (past a column's length) are spaces alone, which MySQL cuts with only
/// a note; past the length, anything else it refuses itself.
fn spaces_only(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| *b == b' ')
}

/// Whether `text` is a `set` value MySQL stores as it is: members spelled as declared,
/// in their declared order, each once (the empty set is the empty text).
fn in_set_order(text: &str, members: &[String]) -> bool {
    if text.is_empty() {
        return true;
    }
    let mut last = None;
    text.split(',').all(|part| {
        let Some(at) = members.iter().position(|m| m == part) else {
            return false;
        };
        let ordered = last.is_none_or(|l| at > l);
        last = Some(at);
        ordered
    })
}

/// Whether `text` is a UUID as MariaDB gives one back: 36 characters, lowercase hex
/// digits with dashes after the 8th, 12th, 16th and 20th.
fn canonical_uuid(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// `x` as MySQL and MariaDB round it for a `float(m,d)` or `double(m,d)` column of
/// `digits` decimals (MariaDB's `truncate_double`, MySQL's `Field_real::truncate`: the
/// fraction scaled, rounded half to even, scaled back), before a `float` stores it in
/// single precision.
fn mysql_rounded(x: f64, digits: u32) -> f64 {
    // The servers' own table of exact powers of ten (`log_10`); `digits` is below 31.
    const POW10: [f64; 31] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22, 1e23, 1e24, 1e25, 1e26, 1e27, 1e28, 1e29, 1e30,
    ];
    let scale = POW10[digits.min(30) as usize];
    let whole = x.floor();
    whole + ((x - whole) * scale).round_ties_even() / scale
}

/// The rows of `a` whose value is not a whole multiple of `step`.
fn off_step<T>(a: &arrow::array::PrimitiveArray<T>, step: i128) -> Vec<usize>
where
    T: arrow::datatypes::ArrowPrimitiveType,
    T::Native: Into<i128>,
{
    use arrow::array::Array;
    (0..a.len())
        .filter(|&r| a.is_valid(r) && a.value(r).into() % step != 0)
        .collect()
}

/// `Ok` when nothing is `refused`, else the error that has the run quarantine the
/// refused rows and commit the chunk again without them.
pub(crate) fn refuse(refused: Vec<super::Refusal>) -> Result<()> {
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Error::Refused(refused))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each refusal's row, column and value.
    fn cells(refused: &[crate::sink::Refusal]) -> Vec<(usize, Option<&str>, Option<&str>)> {
        refused
            .iter()
            .map(|r| (r.row, r.column.as_deref(), r.detail.as_deref()))
            .collect()
    }

    #[test]
    fn a_created_primary_key_lists_the_source_key_first_in_key_order() {
        let col = |name: &str, pk: bool| DeclaredColumn::new(name, ColumnType::BigInt, !pk, pk);
        let columns = [
            col("n", true),
            col("note", false),
            col("extra", true),
            col("region", true),
        ];
        let key = TargetKey {
            columns: vec!["region".into(), "n".into()],
            unchanged: true,
        };
        assert_eq!(primary_key(&columns, Some(&key)), ["region", "n", "extra"]);
        // Without a key, or with key columns that are not declared primary keys, the
        // declared order stands.
        assert_eq!(primary_key(&columns, None), ["n", "extra", "region"]);
        let other = TargetKey {
            columns: vec!["note".into()],
            unchanged: true,
        };
        assert_eq!(
            primary_key(&columns, Some(&other)),
            ["n", "extra", "region"]
        );
    }

    #[test]
    fn values_finer_than_a_coarse_column_keeps_are_refused_once_per_row() {
        use std::sync::Arc;

        use arrow::array::{Decimal128Array, Time64MicrosecondArray, TimestampMicrosecondArray};
        use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
        let schema = Arc::new(Schema::new(vec![
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("amount", DataType::Decimal128(10, 4), true),
            Field::new("took", DataType::Time64(TimeUnit::Microsecond), true),
        ]));
        let batch = |at: Vec<Option<i64>>, amount: Vec<Option<i128>>, took: Vec<Option<i64>>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(TimestampMicrosecondArray::from(at)),
                    Arc::new(
                        Decimal128Array::from(amount)
                            .with_precision_and_scale(10, 4)
                            .unwrap(),
                    ),
                    Arc::new(Time64MicrosecondArray::from(took)),
                ],
            )
            .unwrap()
        };
        let types = [
            ColumnType::Timestamp,
            ColumnType::Decimal {
                precision: 10,
                scale: 4,
            },
            ColumnType::Time,
        ];
        let coarse: Vec<Coarse> = [(Some(0), None), (None, Some(2)), (Some(3), None)]
            .into_iter()
            .enumerate()
            .filter_map(|(i, (fraction, scale))| {
                Coarse::of(i, types[i], "t", fraction, scale, None)
            })
            .collect();
        assert_eq!(coarse.len(), 3);
        // A column that keeps what the type carries is not coarse.
        assert_eq!(
            Coarse::of(0, ColumnType::Timestamp, "t", Some(6), None, None),
            None
        );
        assert_eq!(Coarse::of(1, types[1], "t", None, Some(4), None), None);
        assert_eq!(
            Coarse::of(0, ColumnType::BigInt, "t", Some(0), None, None),
            None
        );
        assert_eq!(
            Coarse::of(0, ColumnType::Real, "t", None, None, Some("float")),
            None
        );

        let second = 1_000_000;
        let batches = [
            batch(
                // Whole seconds, before 1970 too, and NULL pass.
                vec![Some(0), Some(-second), None, Some(-second / 2)],
                vec![Some(12_300), None, Some(5), Some(1)],
                vec![Some(1_000), Some(1), None, None],
            ),
            batch(
                vec![Some(7 * second)],
                vec![Some(-99_900)],
                vec![Some(86_399_999_000)],
            ),
        ];
        let columns =
            ["at", "amount", "took"].map(|n| DeclaredColumn::new(n, ColumnType::Text, true, false));
        let refused = coarse_refusals(&coarse, &columns, &batches);
        let got = cells(&refused);
        assert_eq!(
            got,
            [
                // 0.000001 s into a time kept to milliseconds.
                (1, Some("took"), Some("00:00:00.000001")),
                // 0.0005 into two decimal places.
                (2, Some("amount"), Some("0.0005")),
                // Half a second and 0.0001 in one row: refused once, for the first.
                (3, Some("at"), Some("1969-12-31T23:59:59.500")),
            ]
        );
        assert_eq!(
            refused[0].reason,
            "column took is t, which keeps 3 digits of a second: a finer value would be rounded or cut"
        );
        assert_eq!(
            refused[1].reason,
            "column amount is t, which keeps 2 decimal places: a finer value would be rounded or cut"
        );
        assert_eq!(
            refused[2].reason,
            "column at is t, which keeps whole seconds: a finer value would be rounded or cut"
        );
    }

    #[test]
    fn a_double_finer_than_a_single_precision_column_is_refused() {
        use std::sync::Arc;

        use arrow::array::Float64Array;
        use arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![Field::new("r", DataType::Float64, true)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Float64Array::from(vec![
                Some(0.5),
                Some(0.1),
                None,
                Some(f64::NAN),
                Some(1e300),
                Some(-3.0),
            ]))],
        )
        .unwrap();
        let coarse =
            [Coarse::of(0, ColumnType::Double, "float", None, None, Some("float")).unwrap()];
        let refused = coarse_refusals(
            &coarse,
            &[DeclaredColumn::new("r", ColumnType::Double, true, false)],
            &[batch],
        );
        let got: Vec<(usize, Option<&str>)> = refused
            .iter()
            .map(|r| (r.row, r.detail.as_deref()))
            .collect();
        assert_eq!(got, [(1, Some("0.1")), (4, Some("1e300"))]);
        assert_eq!(
            refused[0].reason,
            "column r is float, which keeps single precision: a finer value would be rounded or cut"
        );
    }

    #[test]
    fn mysql_enum_set_and_uuid_text_is_refused_unless_stored_as_sent() {
        use std::sync::Arc;

        use arrow::array::StringArray;
        use arrow::datatypes::{DataType, Field, Schema};
        assert_eq!(
            members(r"enum('A','it''s','back\\slash','comma,here')"),
            ["A", "it's", r"back\slash", "comma,here"]
        );
        assert!(members("enum()").is_empty());
        let text = |v: Vec<Option<&str>>| Arc::new(StringArray::from(v)) as arrow::array::ArrayRef;
        let schema = Arc::new(Schema::new(
            ["e", "s", "u"]
                .map(|n| Field::new(n, DataType::Utf8, true))
                .to_vec(),
        ));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                text(vec![
                    Some("A"),
                    Some("a"),
                    Some("it's"),
                    None,
                    Some("A "),
                    None,
                    None,
                ]),
                text(vec![
                    Some("x,z"),
                    Some(""),
                    None,
                    Some("z,x"),
                    Some("x"),
                    Some("x,x"),
                    Some("x,y"),
                ]),
                text(vec![
                    Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
                    None,
                    Some("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"),
                    None,
                    None,
                    Some("a0eebc999c0b4ef8bb6d6bb9bd380a11"),
                    None,
                ]),
            ],
        )
        .unwrap();
        use ColumnType::*;
        let coarse: Vec<Coarse> = [
            ("enum('A','it''s')", "enum"),
            ("set('x','Y','z')", "set"),
            ("uuid", "uuid"),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (shown, data_type))| {
            Coarse::of(i, Text, shown, None, None, Some(data_type)).unwrap()
        })
        .collect();
        assert_eq!(coarse[1].members, ["x", "Y", "z"]);
        // A varchar(n) holds n characters, a text type its bytes; only spaces past them
        // are cut without an error (the server refuses 'abcdef', 256 x's and a character
        // cut in two itself).
        let long = RecordBatch::try_new(
            Arc::new(Schema::new(
                ["v", "t"]
                    .map(|n| Field::new(n, DataType::Utf8, true))
                    .to_vec(),
            )),
            vec![
                text(vec![
                    Some("éééé"),
                    Some("ab   "),
                    None,
                    Some("abcdef"),
                    None,
                    None,
                ]),
                text(vec![
                    None,
                    None,
                    Some(&format!("{}    ", "x".repeat(254))),
                    None,
                    Some(&"x".repeat(256)),
                    // The 255-byte limit falls inside 'é': not spaces past it.
                    Some(&format!("{}é  ", "x".repeat(254))),
                ]),
            ],
        )
        .unwrap();
        let lengths = [
            Coarse::of(0, Varchar(10), "varchar(4)", None, None, Some("varchar")).unwrap(),
            Coarse::of(1, Text, "tinytext", None, None, Some("tinytext")).unwrap(),
        ];
        let columns2 = ["v", "t"].map(|n| DeclaredColumn::new(n, Text, true, false));
        let refused = coarse_refusals(&lengths, &columns2, &[long]);
        assert_eq!(
            refused
                .iter()
                .map(|r| (r.row, r.reason.as_str()))
                .collect::<Vec<_>>(),
            [
                (
                    1,
                    "column v is varchar(4), which holds 4 characters: the spaces past them would be cut"
                ),
                (
                    2,
                    "column t is tinytext, which holds 255 bytes: the spaces past them would be cut"
                ),
            ]
        );
        let columns = ["e", "s", "u"].map(|n| DeclaredColumn::new(n, Text, true, false));
        let refused = coarse_refusals(&coarse, &columns, &[batch]);
        let got: Vec<(usize, Option<&str>)> = refused
            .iter()
            .map(|r| (r.row, r.column.as_deref()))
            .collect();
        // Row 0 is stored as sent; 1: 'a' for 'A'; 2: an uppercase UUID; 3: a set out of
        // order; 4: a trailing space; 5: a repeated member (and a UUID without dashes);
        // 6: 'y' for 'Y'.
        assert_eq!(
            got,
            [
                (1, Some("e")),
                (2, Some("u")),
                (3, Some("s")),
                (4, Some("e")),
                (5, Some("s")),
                (6, Some("s")),
            ]
        );
        assert_eq!(
            refused[0].reason,
            "column e is enum('A','it''s'), which stores only its members, spelled as declared: another text would be changed or refused"
        );
    }

    #[test]
    fn mysql_float_digits_and_char_trailing_spaces_are_refused_where_they_would_change() {
        use std::sync::Arc;

        use arrow::array::{Float32Array, Float64Array, StringArray};
        use arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("d", DataType::Float64, true),
            Field::new("f", DataType::Float32, true),
            Field::new("s", DataType::Float64, true),
            Field::new("c", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                // 12.345 has a third decimal; 0.1, 123.45 and -2.5 keep as they are.
                Arc::new(Float64Array::from(vec![
                    Some(0.1),
                    Some(12.345),
                    Some(123.45),
                    Some(-2.5),
                    None,
                    Some(7.0),
                ])),
                // 0.125 is exact in single precision, but has a third decimal; 1.23 and
                // 0.1 as single-precision floats are what the column stores of them.
                Arc::new(Float32Array::from(vec![
                    Some(0.5),
                    None,
                    Some(0.125),
                    Some(-1.25),
                    Some(1.23),
                    Some(0.1),
                ])),
                // A float(7,2): 0.25 is exact and kept; 0.1 is not single precision.
                Arc::new(Float64Array::from(vec![
                    Some(0.25),
                    None,
                    None,
                    None,
                    Some(0.1),
                    None,
                ])),
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    Some("b"),
                    Some(" lead"),
                    Some("trail "),
                    Some("x"),
                    Some("   "),
                ])),
            ],
        )
        .unwrap();
        use ColumnType::*;
        let coarse: Vec<Coarse> = [
            (Double, "double(10,2)", "double"),
            (Real, "float(6,2)", "float"),
            (Double, "float(7,2)", "float"),
            (Text, "char(8)", "char"),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (ty, shown, data_type))| {
            Coarse::of(i, ty, shown, None, Some(2), Some(data_type)).unwrap()
        })
        .collect();
        // Plain double and float columns report no scale, or MySQL's 31: they round nothing.
        assert_eq!(
            Coarse::of(0, Double, "double", None, Some(31), Some("double")),
            None
        );
        assert_eq!(
            Coarse::of(0, Real, "float", None, None, Some("float")),
            None
        );
        // Only text is held to a char(n)'s spaces, and only in MySQL.
        assert_eq!(
            Coarse::of(0, BigInt, "char(8)", None, None, Some("char")),
            None
        );
        assert_eq!(Coarse::of(0, Text, "char(8)", None, None, None), None);
        let columns = ["d", "f", "s", "c"].map(|n| DeclaredColumn::new(n, Text, true, false));
        let refused = coarse_refusals(&coarse, &columns, &[batch]);
        let got = cells(&refused);
        assert_eq!(
            got,
            [
                (1, Some("d"), Some("12.345")),
                (2, Some("f"), Some("0.125")),
                (3, Some("c"), Some("trail ")),
                (4, Some("s"), Some("0.1")),
                (5, Some("c"), Some("   ")),
            ]
        );
        assert_eq!(
            refused[0].reason,
            "column d is double(10,2), which keeps 2 decimal places: a finer value would be rounded or cut"
        );
        assert_eq!(
            refused[3].reason,
            "column s is float(7,2), which keeps 2 decimal places in single precision: a finer value would be rounded or cut"
        );
        assert_eq!(
            refused[2].reason,
            "column c is char(8), which gives text back without its trailing spaces: they would be lost"
        );
        // A double(m,d) stores -0 as 0: the sign would be lost.
        let zeros = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("d", DataType::Float64, true)])),
            vec![Arc::new(Float64Array::from(vec![Some(0.0), Some(-0.0)]))],
        )
        .unwrap();
        let refused = coarse_refusals(&coarse[..1], &columns[..1], &[zeros]);
        assert_eq!(refused.iter().map(|r| r.row).collect::<Vec<_>>(), [1]);
    }
}
