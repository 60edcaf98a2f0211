//! PostgreSQL: connecting, reading the catalog, and the binary `COPY` format both ways.
//!
//! Rows travel as binary `COPY` in both directions, decoded straight into Arrow builders
//! and encoded straight from Arrow arrays, never through generic rows.
//!
//! # Type mapping
//!
//! | PostgreSQL | Arrow | pipeline type |
//! |---|---|---|
//! | `smallint` | Int16 | `smallint` |
//! | `integer` | Int32 | `integer` |
//! | `bigint` | Int64 | `bigint` |
//! | `real` | Float32 | `real` |
//! | `double precision` | Float64 | `double` |
//! | `numeric(p,s)`, p ≤ 38, s ≥ 0 | Decimal128(p,s) | `numeric(p,s)` |
//! | `numeric` (no precision) | Utf8 (its exact text) | `text` |
//! | `boolean` | Boolean | `boolean` |
//! | `text`, `varchar(n)`, `char(n)`, `name` | Utf8 | `text`, `varchar(n)` |
//! | `json`, `jsonb`, `uuid` | Utf8 (their text form) | `text` |
//! | `date` | Date32 | `date` |
//! | `time` | Time64(µs) | `time` |
//! | `timestamp` | Timestamp(µs) | `timestamp` |
//! | `timestamptz` | Timestamp(µs, UTC) | `timestamptz` |
//! | `bytea` | Binary | `bytea` |
//!
//! Any other source type (`numeric(50,2)`, `interval`, arrays, ...) is an error naming the
//! column when the pipeline is validated; `[source.types] col = "text"` reads its text form
//! instead. `infinity` dates and timestamps and numeric `NaN` have no Arrow value: such a
//! row is an error naming it.

pub mod checkpoint;
pub mod dialect;
mod errors;
pub mod hash;
pub mod sink;
pub mod source;

use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, SchemaRef, Time64MicrosecondType, TimeUnit, TimestampMicrosecondType,
};
use arrow::record_batch::RecordBatch;
use sqlx::postgres::{PgConnectOptions, PgPool};

use self::hash::{HashSum, RowHasher};
use crate::config::{DbOptions, SecretUrl};
use crate::db::postgres::errors::error as db_error;
use crate::runtime::IoRuntime;
pub use crate::sql::RowDigest;
use crate::types::ColumnType;
use crate::{Error, Result, RowFailure};

/// Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's).
pub(crate) const EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
pub(crate) const EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Quotes a schema-qualified name: `"schema"."table"`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!(
        "{}.{}",
        crate::sql::quote_ident(schema),
        crate::sql::quote_ident(table)
    )
}

/// A lazily opened pool on one server, shared by a sink and its checkpoint store.
pub struct PgClient {
    url: SecretUrl,
    db: DbOptions,
    io: IoRuntime,
    pool: OnceLock<PgPool>,
    /// The redacted URL, for messages.
    pub shown: String,
}

impl PgClient {
    /// A client for `url`. Connects on first use.
    pub fn new(url: &SecretUrl, db: &DbOptions, io: &IoRuntime) -> Self {
        PgClient {
            url: url.clone(),
            db: db.clone(),
            io: io.clone(),
            pool: OnceLock::new(),
            shown: url.shown(),
        }
    }

    /// The runtime its I/O runs on.
    pub fn io(&self) -> &IoRuntime {
        &self.io
    }

    /// The pool, connected (with retries) on first use.
    pub fn pool(&self) -> Result<&PgPool> {
        if let Some(p) = self.pool.get() {
            return Ok(p);
        }
        let pool = connect(&self.io, &self.url, &self.db)?;
        Ok(self.pool.get_or_init(|| pool))
    }

    /// Closes the pool if it was opened.
    pub fn close(&self) {
        if let Some(p) = self.pool.get() {
            self.io.block_on(p.close());
        }
    }
}

/// Opens a pool on `url` and checks that one connection works, retrying a refused or
/// dropped connection with backoff. Timeouts from `db` are set on every connection.
pub fn connect(io: &IoRuntime, url: &SecretUrl, db: &DbOptions) -> Result<PgPool> {
    let shown = url.shown();
    let mut opts = PgConnectOptions::from_str(url.expose())
        .map_err(|e| Error::data(&shown, redact_error(&e)))?
        .application_name("rowshift");
    let mut settings: Vec<(&str, String)> = Vec::new();
    if let Some(ms) = db.statement_timeout_ms {
        settings.push(("statement_timeout", ms.to_string()));
    }
    if let Some(ms) = db.lock_timeout_ms {
        settings.push(("lock_timeout", ms.to_string()));
    }
    // Read-back and key lookups put key literals in statements; this makes `''` the only
    // escape in them whatever the server's default.
    settings.push(("standard_conforming_strings", "on".into()));
    settings.push(("client_encoding", "UTF8".into()));
    opts = opts.options(settings);
    // One connection first, retried with backoff while the server refuses or drops it,
    // so an unreachable server fails with the driver's own reason.
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match io.block_on(sqlx::ConnectOptions::connect(&opts)) {
            Ok(conn) => {
                let _ = io.block_on(sqlx::Connection::close(conn));
                break;
            }
            Err(e) => {
                let transient = matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut);
                if !transient || attempt >= 3 {
                    return Err(db_error(&shown, e));
                }
                std::thread::sleep(Duration::from_millis(200 << attempt));
            }
        }
    }
    // The pool retries refused connections itself until the acquire timeout. It is made
    // on the runtime, whose tasks maintain it.
    let max = db.pool_size.unwrap_or(crate::config::DEFAULT_POOL_SIZE);
    Ok(io.block_on(async move {
        crate::sql::pool_options::<sqlx::Postgres>()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(60))
            .connect_lazy_with(opts)
    }))
}

/// A driver error as text with any URL password hidden.
fn redact_error(e: &dyn std::fmt::Display) -> String {
    crate::config::redact(&e.to_string())
}

/// A column as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgColumn {
    /// Name.
    pub name: String,
    /// Type name (`pg_type.typname`), e.g. `int4`, `varchar`.
    pub type_name: String,
    /// The type as `format_type` shows it, e.g. `numeric(12,2)`.
    pub shown_type: String,
    /// `atttypmod`.
    pub typmod: i32,
    /// Declared `NOT NULL`.
    pub not_null: bool,
    /// An enum type, whose values travel as their labels.
    pub is_enum: bool,
}

/// The columns of `schema.table` (a table or view), or `None` if there is no such relation.
pub async fn table_columns(
    pool: &PgPool,
    schema: &str,
    table: &str,
    shown: &str,
) -> Result<Option<Vec<PgColumn>>> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT a.attname::text, t.typname::text, format_type(a.atttypid, a.atttypmod), a.atttypmod, a.attnotnull, t.typtype = 'e' \
         FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
         WHERE a.attrelid = (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                             WHERE n.nspname = $1 AND c.relname = $2) \
           AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(pool)
    .await
    .map_err(|e| db_error(shown, e))?;
    if rows.is_empty() {
        return Ok(None);
    }
    rows.iter()
        .map(|r| {
            Ok(PgColumn {
                name: r.try_get(0)?,
                type_name: r.try_get(1)?,
                shown_type: r.try_get(2)?,
                typmod: r.try_get(3)?,
                not_null: r.try_get(4)?,
                is_enum: r.try_get(5)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map(Some)
        .map_err(|e| db_error(shown, e))
}

/// Names of the tables and views in `schema`, for "did you mean" messages.
pub async fn table_names(pool: &PgPool, schema: &str, shown: &str) -> Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'v', 'm', 'p', 'f') ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .map_err(|e| db_error(shown, e))
}

/// How a column's values are laid out in binary `COPY`, and the Arrow type they become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgKind {
    /// `int2`.
    Int2,
    /// `int4`.
    Int4,
    /// `int8`.
    Int8,
    /// `float4`.
    Float4,
    /// `float8`.
    Float8,
    /// `numeric` read into a Decimal128 of this precision and scale.
    Numeric(u8, i8),
    /// `numeric` read as its exact text.
    NumericText,
    /// `bool`.
    Bool,
    /// Text (any type selected as `::text`).
    Text,
    /// `date`.
    Date,
    /// `time`.
    Time,
    /// `timestamp`.
    Timestamp,
    /// `timestamptz`.
    TimestampTz,
    /// `bytea`.
    Bytea,
}

impl PgKind {
    /// The kind a pipeline column type is written and read back as.
    pub fn for_type(ty: ColumnType) -> PgKind {
        match ty {
            ColumnType::SmallInt => PgKind::Int2,
            ColumnType::Int => PgKind::Int4,
            ColumnType::BigInt => PgKind::Int8,
            ColumnType::Real => PgKind::Float4,
            ColumnType::Double => PgKind::Float8,
            ColumnType::Decimal { precision, scale } => PgKind::Numeric(precision, scale),
            ColumnType::Boolean => PgKind::Bool,
            ColumnType::Text | ColumnType::Varchar(_) => PgKind::Text,
            ColumnType::Date => PgKind::Date,
            ColumnType::Time => PgKind::Time,
            ColumnType::Timestamp => PgKind::Timestamp,
            ColumnType::TimestampTz => PgKind::TimestampTz,
            ColumnType::Bytes => PgKind::Bytea,
        }
    }

    /// The kind a source column is read as, and whether it must be selected as `::text`;
    /// `Err` says why it cannot be read without loss.
    pub fn for_column(c: &PgColumn) -> Result<(PgKind, bool), String> {
        let kind = match c.type_name.as_str() {
            // An enum's binary form is its label.
            _ if c.is_enum => PgKind::Text,
            "int2" => PgKind::Int2,
            "int4" => PgKind::Int4,
            "int8" => PgKind::Int8,
            "float4" => PgKind::Float4,
            "float8" => PgKind::Float8,
            "bool" => PgKind::Bool,
            "text" | "varchar" | "bpchar" | "name" => PgKind::Text,
            "json" | "jsonb" | "uuid" => return Ok((PgKind::Text, true)),
            "date" => PgKind::Date,
            "time" => PgKind::Time,
            "timestamp" => PgKind::Timestamp,
            "timestamptz" => PgKind::TimestampTz,
            "bytea" => PgKind::Bytea,
            "numeric" if c.typmod < 4 => PgKind::NumericText,
            "numeric" => {
                let m = c.typmod - 4;
                let precision = (m >> 16) & 0xffff;
                // PostgreSQL 15 stores the scale as an 11-bit signed number.
                let scale = ((m & 0x7ff) ^ 1024) - 1024;
                if !(1..=38).contains(&precision) || scale < 0 {
                    return Err(format!(
                        "its type {} does not fit an Arrow decimal (precision up to 38, scale 0 or more)",
                        c.shown_type
                    ));
                }
                PgKind::Numeric(precision as u8, scale as i8)
            }
            _ => {
                return Err(format!(
                    "rowshift cannot read its type {} without loss",
                    c.shown_type
                ));
            }
        };
        Ok((kind, false))
    }

    /// The Arrow type values of this kind become.
    pub fn arrow_type(self) -> DataType {
        match self {
            PgKind::Int2 => DataType::Int16,
            PgKind::Int4 => DataType::Int32,
            PgKind::Int8 => DataType::Int64,
            PgKind::Float4 => DataType::Float32,
            PgKind::Float8 => DataType::Float64,
            PgKind::Numeric(p, s) => DataType::Decimal128(p, s),
            PgKind::NumericText | PgKind::Text => DataType::Utf8,
            PgKind::Bool => DataType::Boolean,
            PgKind::Date => DataType::Date32,
            PgKind::Time => DataType::Time64(TimeUnit::Microsecond),
            PgKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            PgKind::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            PgKind::Bytea => DataType::Binary,
        }
    }
}

/// The PostgreSQL column type a pipeline type is created as.
pub fn pg_decl(ty: ColumnType) -> String {
    match ty {
        ColumnType::SmallInt => "smallint".into(),
        ColumnType::Int => "integer".into(),
        ColumnType::BigInt => "bigint".into(),
        ColumnType::Real => "real".into(),
        ColumnType::Double => "double precision".into(),
        ColumnType::Decimal { precision, scale } => format!("numeric({precision},{scale})"),
        ColumnType::Boolean => "boolean".into(),
        ColumnType::Text => "text".into(),
        ColumnType::Varchar(n) => format!("varchar({n})"),
        ColumnType::Date => "date".into(),
        ColumnType::Time => "time".into(),
        ColumnType::Timestamp => "timestamp".into(),
        ColumnType::TimestampTz => "timestamptz".into(),
        ColumnType::Bytes => "bytea".into(),
    }
}

/// The header every binary `COPY` stream starts with: signature, flags, extension length.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

/// Encodes Arrow batches as a binary `COPY FROM STDIN` stream.
pub struct Encoder {
    /// Bytes not yet sent.
    pub buf: Vec<u8>,
    started: bool,
    /// The digest of the rows encoded so far, when asked for (see
    /// [`Encoder::digesting`]).
    pub digest: Option<RowDigest>,
    /// PostgreSQL's own hashes of the rows encoded so far, when asked for (see
    /// [`Encoder::hashing`]).
    pub hashed: Option<(RowHasher, HashSum)>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// An encoder whose first bytes are the header.
    pub fn new() -> Self {
        Encoder {
            buf: Vec::with_capacity(1 << 20),
            started: false,
            digest: None,
            hashed: None,
        }
    }

    /// An encoder that also digests the rows' bytes ([`RowDigest`]), for a read-back
    /// that compares the bytes it reads with them.
    pub fn digesting() -> Self {
        Encoder {
            digest: Some(RowDigest::default()),
            ..Self::new()
        }
    }

    /// An encoder that also sums PostgreSQL's hashes of the rows it encodes, which the
    /// read-back compares with the server's sum over what it stored.
    pub fn hashing(hasher: RowHasher) -> Self {
        Encoder {
            hashed: Some((hasher, HashSum::default())),
            ..Self::new()
        }
    }

    /// Appends every row of `batch` (columns in `kinds` order). `here` names the target
    /// and `key` the columns that name rows in messages.
    pub fn rows(
        &mut self,
        batch: &RecordBatch,
        kinds: &[PgKind],
        here: &str,
        key: &[String],
    ) -> Result<()> {
        if !self.started {
            self.buf.extend_from_slice(HEADER);
            self.started = true;
        }
        let cols = batch.columns();
        let n = cols.len() as i16;
        for row in 0..batch.num_rows() {
            let start = self.buf.len();
            self.buf.extend_from_slice(&n.to_be_bytes());
            for (i, (col, kind)) in cols.iter().zip(kinds).enumerate() {
                encode_value(&mut self.buf, col, *kind, row).map_err(|reason| {
                    let name = batch.schema().field(i).name().clone();
                    let at = match crate::chunk::key::row_label(batch, key, row) {
                        Some(k) => format!("{here}, {k}"),
                        None => format!("{here}, row {}", row + 1),
                    };
                    Error::Row(RowFailure {
                        location: at,
                        column: Some(name),
                        value: crate::types::cast::value_text(col.as_ref(), row),
                        reason,
                    })
                })?;
            }
            if let Some(digest) = &mut self.digest {
                digest.add(&self.buf[start..]);
            }
        }
        // Hashed once the whole batch is encoded: the encoder has refused any value
        // the server would not store as sent.
        if let Some((hasher, sum)) = &mut self.hashed {
            hasher
                .add_batch(batch, sum)
                .map_err(|e| Error::Internal(format!("{here}: {e}")))?;
        }
        Ok(())
    }

    /// Appends the trailer; the stream is complete.
    pub fn finish(&mut self) {
        if !self.started {
            self.buf.extend_from_slice(HEADER);
            self.started = true;
        }
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
    }
}

fn field(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    buf.extend_from_slice(bytes);
}

fn encode_value(buf: &mut Vec<u8>, col: &ArrayRef, kind: PgKind, row: usize) -> Result<(), String> {
    if col.is_null(row) {
        buf.extend_from_slice(&(-1i32).to_be_bytes());
        return Ok(());
    }
    let mismatch = || {
        format!(
            "internal: a {} array for a column written as {kind:?}",
            col.data_type()
        )
    };
    match (kind, col.data_type()) {
        (PgKind::Int2, DataType::Int16) => field(
            buf,
            &col.as_primitive::<Int16Type>().value(row).to_be_bytes(),
        ),
        (PgKind::Int4, DataType::Int32) => field(
            buf,
            &col.as_primitive::<Int32Type>().value(row).to_be_bytes(),
        ),
        (PgKind::Int8, DataType::Int64) => field(
            buf,
            &col.as_primitive::<Int64Type>().value(row).to_be_bytes(),
        ),
        (PgKind::Float4, DataType::Float32) => field(
            buf,
            &col.as_primitive::<Float32Type>().value(row).to_be_bytes(),
        ),
        (PgKind::Float8, DataType::Float64) => field(
            buf,
            &col.as_primitive::<Float64Type>().value(row).to_be_bytes(),
        ),
        (PgKind::Numeric(_, scale), DataType::Decimal128(..)) => {
            let v = col.as_primitive::<Decimal128Type>().value(row);
            let bytes = encode_numeric(v, scale);
            field(buf, &bytes);
        }
        (PgKind::Bool, DataType::Boolean) => field(buf, &[col.as_boolean().value(row) as u8]),
        (PgKind::Text, DataType::Utf8) => {
            let s = col.as_string::<i32>().value(row);
            if s.contains('\0') {
                return Err("PostgreSQL text cannot hold the NUL character (\\0)".into());
            }
            field(buf, s.as_bytes())
        }
        (PgKind::Date, DataType::Date32) => {
            // PostgreSQL takes the extreme values as -infinity and infinity.
            let d = col
                .as_primitive::<Date32Type>()
                .value(row)
                .checked_sub(EPOCH_DAYS)
                .filter(|d| *d != i32::MIN && *d != i32::MAX)
                .ok_or("date out of PostgreSQL's range")?;
            field(buf, &d.to_be_bytes())
        }
        (PgKind::Time, DataType::Time64(TimeUnit::Microsecond)) => field(
            buf,
            &col.as_primitive::<Time64MicrosecondType>()
                .value(row)
                .to_be_bytes(),
        ),
        (
            PgKind::Timestamp | PgKind::TimestampTz,
            DataType::Timestamp(TimeUnit::Microsecond, _),
        ) => {
            let v = col.as_primitive::<TimestampMicrosecondType>().value(row);
            let v = v
                .checked_sub(EPOCH_MICROS)
                .filter(|v| *v != i64::MIN && *v != i64::MAX)
                .ok_or("timestamp out of PostgreSQL's range")?;
            field(buf, &v.to_be_bytes())
        }
        (PgKind::Bytea, DataType::Binary) => field(buf, col.as_binary::<i32>().value(row)),
        _ => return Err(mismatch()),
    }
    Ok(())
}

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

// ---------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------

enum Col {
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Dec(Decimal128Builder, i8),
    Bool(BooleanBuilder),
    Text(StringBuilder),
    NumText(StringBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Ts(TimestampMicrosecondBuilder),
    Bytes(BinaryBuilder),
}

impl Col {
    fn new(kind: PgKind, cap: usize) -> Col {
        match kind {
            PgKind::Int2 => Col::I16(Int16Builder::with_capacity(cap)),
            PgKind::Int4 => Col::I32(Int32Builder::with_capacity(cap)),
            PgKind::Int8 => Col::I64(Int64Builder::with_capacity(cap)),
            PgKind::Float4 => Col::F32(Float32Builder::with_capacity(cap)),
            PgKind::Float8 => Col::F64(Float64Builder::with_capacity(cap)),
            PgKind::Numeric(p, s) => Col::Dec(
                Decimal128Builder::with_capacity(cap)
                    .with_precision_and_scale(p, s)
                    .expect("precision and scale were checked"),
                s,
            ),
            PgKind::NumericText => Col::NumText(StringBuilder::with_capacity(cap, cap * 8)),
            PgKind::Bool => Col::Bool(BooleanBuilder::with_capacity(cap)),
            PgKind::Text => Col::Text(StringBuilder::with_capacity(cap, cap * 16)),
            PgKind::Date => Col::Date(Date32Builder::with_capacity(cap)),
            PgKind::Time => Col::Time(Time64MicrosecondBuilder::with_capacity(cap)),
            PgKind::Timestamp => Col::Ts(TimestampMicrosecondBuilder::with_capacity(cap)),
            PgKind::TimestampTz => {
                Col::Ts(TimestampMicrosecondBuilder::with_capacity(cap).with_timezone("UTC"))
            }
            PgKind::Bytea => Col::Bytes(BinaryBuilder::with_capacity(cap, cap * 16)),
        }
    }

    fn null(&mut self) {
        match self {
            Col::I16(b) => b.append_null(),
            Col::I32(b) => b.append_null(),
            Col::I64(b) => b.append_null(),
            Col::F32(b) => b.append_null(),
            Col::F64(b) => b.append_null(),
            Col::Dec(b, _) => b.append_null(),
            Col::Bool(b) => b.append_null(),
            Col::Text(b) | Col::NumText(b) => b.append_null(),
            Col::Date(b) => b.append_null(),
            Col::Time(b) => b.append_null(),
            Col::Ts(b) => b.append_null(),
            Col::Bytes(b) => b.append_null(),
        }
    }

    fn value(&mut self, v: &[u8]) -> Result<(), String> {
        let fixed = |n: usize| -> Result<(), String> {
            if v.len() == n {
                Ok(())
            } else {
                Err(format!("expected {n} bytes, the server sent {}", v.len()))
            }
        };
        match self {
            Col::I16(b) => {
                fixed(2)?;
                b.append_value(i16::from_be_bytes([v[0], v[1]]))
            }
            Col::I32(b) => {
                fixed(4)?;
                b.append_value(i32::from_be_bytes(v.try_into().expect("4 bytes")))
            }
            Col::I64(b) => {
                fixed(8)?;
                b.append_value(i64::from_be_bytes(v.try_into().expect("8 bytes")))
            }
            Col::F32(b) => {
                fixed(4)?;
                b.append_value(f32::from_be_bytes(v.try_into().expect("4 bytes")))
            }
            Col::F64(b) => {
                fixed(8)?;
                b.append_value(f64::from_be_bytes(v.try_into().expect("8 bytes")))
            }
            Col::Dec(b, scale) => b.append_value(decode_numeric(v, *scale)?),
            Col::NumText(b) => b.append_value(numeric_text(v)?),
            Col::Bool(b) => {
                fixed(1)?;
                b.append_value(v[0] != 0)
            }
            Col::Text(b) => b.append_value(
                std::str::from_utf8(v).map_err(|e| format!("text is not UTF-8: {e}"))?,
            ),
            Col::Date(b) => {
                fixed(4)?;
                let d = i32::from_be_bytes(v.try_into().expect("4 bytes"));
                if d == i32::MAX || d == i32::MIN {
                    return Err("an infinite date has no Arrow value".into());
                }
                b.append_value(d + EPOCH_DAYS)
            }
            Col::Time(b) => {
                fixed(8)?;
                b.append_value(i64::from_be_bytes(v.try_into().expect("8 bytes")))
            }
            Col::Ts(b) => {
                fixed(8)?;
                let t = i64::from_be_bytes(v.try_into().expect("8 bytes"));
                if t == i64::MAX || t == i64::MIN {
                    return Err("an infinite timestamp has no Arrow value".into());
                }
                b.append_value(t + EPOCH_MICROS)
            }
            Col::Bytes(b) => b.append_value(v),
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::I16(b) => Arc::new(b.finish()),
            Col::I32(b) => Arc::new(b.finish()),
            Col::I64(b) => Arc::new(b.finish()),
            Col::F32(b) => Arc::new(b.finish()),
            Col::F64(b) => Arc::new(b.finish()),
            Col::Dec(b, _) => Arc::new(b.finish()),
            Col::Bool(b) => Arc::new(b.finish()),
            Col::Text(b) | Col::NumText(b) => Arc::new(b.finish()),
            Col::Date(b) => Arc::new(b.finish()),
            Col::Time(b) => Arc::new(b.finish()),
            Col::Ts(b) => Arc::new(b.finish()),
            Col::Bytes(b) => Arc::new(b.finish()),
        }
    }
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

/// Decodes a binary `COPY TO STDOUT` stream into batches of `schema` (whose columns are
/// of `kinds`' Arrow types), fed in pieces as they arrive.
pub struct Decoder {
    kinds: Vec<PgKind>,
    cols: Vec<Col>,
    schema: SchemaRef,
    pending: Vec<u8>,
    header_done: bool,
    ended: bool,
    /// Rows in the batch being built.
    pub len: usize,
    /// Rows decoded in all.
    pub rows: u64,
    cap: usize,
    /// Set by [`Decoder::digest`]: rows are digested instead of decoded.
    digest: Option<RowDigest>,
}

impl Decoder {
    /// A decoder for rows of `kinds`, into batches of `schema`, `cap` rows at most.
    pub fn new(kinds: &[PgKind], schema: SchemaRef, cap: usize) -> Self {
        Decoder {
            kinds: kinds.to_vec(),
            cols: kinds.iter().map(|k| Col::new(*k, cap)).collect(),
            schema,
            pending: Vec::new(),
            header_done: false,
            ended: false,
            len: 0,
            rows: 0,
            cap,
            digest: None,
        }
    }

    /// A decoder that only digests the rows of `kinds` (see [`RowDigest`]); read the
    /// digest with [`Decoder::digested`].
    pub fn digest(kinds: &[PgKind]) -> Self {
        Decoder {
            cols: Vec::new(),
            digest: Some(RowDigest::default()),
            ..Decoder::new(kinds, Arc::new(arrow::datatypes::Schema::empty()), 0)
        }
    }

    /// The digest of the rows fed so far, for a decoder made by [`Decoder::digest`].
    pub fn digested(&self) -> Option<RowDigest> {
        self.digest
    }

    /// Readies the decoder for another `COPY` stream (its header and trailer); the rows
    /// decoded so far stay.
    pub fn restart(&mut self) {
        self.pending.clear();
        self.header_done = false;
        self.ended = false;
    }

    /// Decodes what `data` completes; calls `full` with each batch of `cap` rows.
    /// `Err((column, reason))`: `column` is `None` for a broken stream.
    pub fn feed(
        &mut self,
        data: &[u8],
        full: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<(), (Option<usize>, String)> {
        // The server sends one message per row, so `data` usually holds whole rows:
        // decode it in place, and keep only an incomplete tail for the next call.
        if self.pending.is_empty() {
            let used = self.decode(data, full)?;
            self.pending.extend_from_slice(&data[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.pending);
            buf.extend_from_slice(data);
            let used = self.decode(&buf, full)?;
            buf.drain(..used);
            self.pending = buf;
        }
        Ok(())
    }

    /// Decodes the rows `buf` holds whole; returns how many bytes they took.
    fn decode(
        &mut self,
        buf: &[u8],
        full: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<usize, (Option<usize>, String)> {
        let mut at = 0;
        let broken = |m: &str| (None, format!("broken COPY stream: {m}"));
        if !self.header_done {
            if buf.len() < HEADER.len() {
                return Ok(0);
            }
            if &buf[..11] != b"PGCOPY\n\xff\r\n\0" {
                return Err(broken("no binary COPY signature"));
            }
            let ext = u32::from_be_bytes(buf[15..19].try_into().expect("4 bytes")) as usize;
            if buf.len() < 19 + ext {
                return Ok(0);
            }
            at = 19 + ext;
            self.header_done = true;
        }
        loop {
            if self.ended || buf.len() < at + 2 {
                break;
            }
            let n = i16::from_be_bytes([buf[at], buf[at + 1]]);
            if n == -1 {
                self.ended = true;
                at += 2;
                break;
            }
            if n as usize != self.kinds.len() {
                return Err(broken(&format!(
                    "a row of {n} fields, {} expected",
                    self.kinds.len()
                )));
            }
            // Is the whole tuple here?
            let mut p = at + 2;
            let mut complete = true;
            for _ in 0..n {
                if buf.len() < p + 4 {
                    complete = false;
                    break;
                }
                let len = i32::from_be_bytes(buf[p..p + 4].try_into().expect("4 bytes"));
                p += 4 + len.max(0) as usize;
                if buf.len() < p {
                    complete = false;
                    break;
                }
            }
            if !complete {
                break;
            }
            if let Some(d) = &mut self.digest {
                d.add(&buf[at..p]);
                at = p;
                self.rows += 1;
                continue;
            }
            let mut p = at + 2;
            for i in 0..n as usize {
                let len = i32::from_be_bytes(buf[p..p + 4].try_into().expect("4 bytes"));
                p += 4;
                if len < 0 {
                    self.cols[i].null();
                } else {
                    let v = &buf[p..p + len as usize];
                    p += len as usize;
                    // The batch under way is abandoned with the error.
                    self.cols[i].value(v).map_err(|reason| (Some(i), reason))?;
                }
            }
            at = p;
            self.len += 1;
            self.rows += 1;
            if self.len == self.cap {
                let batch = self.finish().map_err(|e| (None, e.to_string()))?;
                full(batch).map_err(|e| (None, e.to_string()))?;
            }
        }
        Ok(at)
    }

    /// The rows decoded since the last batch.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = self.cols.iter_mut().map(Col::finish).collect();
        self.len = 0;
        RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| Error::Internal(format!("decoded batch: {e}")))
    }

    /// Whether the trailer was seen.
    pub fn ended(&self) -> bool {
        self.ended
    }
}

/// A key value as a SQL literal: a number as is, anything else quoted (`'` doubled;
/// connections run with `standard_conforming_strings = on`).
pub fn literal(v: &crate::chunk::KeyValue) -> Result<String> {
    match v {
        crate::chunk::KeyValue::Int(i) => Ok(i.to_string()),
        crate::chunk::KeyValue::Text(t) => {
            if t.contains('\0') {
                return Err(Error::Unsupported(
                    "a key value holds the NUL character, which PostgreSQL text cannot".into(),
                ));
            }
            Ok(format!("'{}'", t.replace('\'', "''")))
        }
        crate::chunk::KeyValue::Tuple(parts) => Err(Error::Internal(format!(
            "a composite key value ({} parts) where one part was expected",
            parts.len()
        ))),
    }
}

/// The primary key's columns in key order, or none.
pub async fn primary_key(
    pool: &sqlx::PgPool,
    schema: &str,
    table: &str,
    shown: &str,
) -> Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_index i \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
         WHERE i.indisprimary AND i.indrelid = (SELECT c.oid FROM pg_class c \
               JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2) \
         ORDER BY array_position(i.indkey::int2[], a.attnum)",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(pool)
    .await
    .map_err(|e| db_error(shown, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest of rows as sent, as read back in any pieces, in any order.
    fn digests(ids: &[Option<i64>], names: &[Option<&str>]) -> (RowDigest, Vec<u8>) {
        use arrow::array::{Int64Array, StringArray};
        use arrow::datatypes::{Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(names.to_vec())),
            ],
        )
        .unwrap();
        let mut enc = Encoder::digesting();
        enc.rows(&batch, &[PgKind::Int8, PgKind::Text], "here", &[])
            .unwrap();
        enc.finish();
        (enc.digest.unwrap(), enc.buf)
    }

    fn digest_of_stream(stream: &[u8], piece: usize) -> RowDigest {
        let mut dec = Decoder::digest(&[PgKind::Int8, PgKind::Text]);
        for part in stream.chunks(piece) {
            dec.feed(part, &mut |_| unreachable!("a digest makes no batches"))
                .unwrap();
        }
        assert!(dec.ended());
        dec.digested().unwrap()
    }

    #[test]
    fn rows_read_back_digest_as_they_were_sent_in_any_order_and_a_changed_value_does_not() {
        let (sent, stream) = digests(
            &[Some(1), Some(2), None, Some(4)],
            &[Some("a"), None, Some("Zoë"), Some("")],
        );
        assert_eq!(sent.rows, 4);
        for piece in [1, 5, 1000] {
            assert_eq!(digest_of_stream(&stream, piece), sent, "pieces of {piece}");
        }
        let (reordered, _) = digests(
            &[Some(4), None, Some(2), Some(1)],
            &[Some(""), Some("Zoë"), None, Some("a")],
        );
        assert_eq!(reordered, sent);
        // One value changed, a NULL that became empty, a row missing, a row doubled.
        for (ids, names) in [
            (
                &[Some(1), Some(2), None, Some(4)][..],
                &[Some("a"), None, Some("Zoe"), Some("")][..],
            ),
            (
                &[Some(1), Some(2), None, Some(4)],
                &[Some("a"), Some(""), Some("Zoë"), Some("")],
            ),
            (&[Some(1), Some(2), None], &[Some("a"), None, Some("Zoë")]),
            (
                &[Some(1), Some(2), None, Some(4), Some(4)],
                &[Some("a"), None, Some("Zoë"), Some(""), Some("")],
            ),
        ] {
            assert_ne!(digests(ids, names).0, sent, "{ids:?} {names:?}");
        }
        // A field count or length that does not match is a broken stream, not a digest.
        let mut broken = stream.clone();
        broken[19] = 0;
        broken[20] = 3;
        let mut dec = Decoder::digest(&[PgKind::Int8, PgKind::Text]);
        let err = dec.feed(&broken, &mut |_| Ok(())).unwrap_err();
        assert_eq!(err.1, "broken COPY stream: a row of 3 fields, 2 expected");
    }

    #[test]
    fn a_batch_of_every_kind_survives_encoding_and_decoding_in_any_pieces() {
        use arrow::datatypes::{Field, Schema};
        let types = [
            ColumnType::SmallInt,
            ColumnType::Int,
            ColumnType::BigInt,
            ColumnType::Real,
            ColumnType::Double,
            ColumnType::Decimal {
                precision: 38,
                scale: 10,
            },
            ColumnType::Boolean,
            ColumnType::Text,
            ColumnType::Date,
            ColumnType::Time,
            ColumnType::Timestamp,
            ColumnType::TimestampTz,
            ColumnType::Bytes,
        ];
        let schema: SchemaRef = std::sync::Arc::new(Schema::new(
            types
                .iter()
                .enumerate()
                .map(|(i, t)| Field::new(format!("c{i}"), t.arrow_type(), true))
                .collect::<Vec<_>>(),
        ));
        // Built directly rather than parsed, so every edge is exact.
        use arrow::array::*;
        let cols: Vec<ArrayRef> = vec![
            std::sync::Arc::new(Int16Array::from(vec![Some(i16::MIN), Some(i16::MAX), None])),
            std::sync::Arc::new(Int32Array::from(vec![Some(i32::MIN), Some(i32::MAX), None])),
            std::sync::Arc::new(Int64Array::from(vec![Some(i64::MIN), Some(i64::MAX), None])),
            std::sync::Arc::new(Float32Array::from(vec![
                Some(f32::MIN),
                Some(f32::NAN),
                None,
            ])),
            std::sync::Arc::new(Float64Array::from(vec![
                Some(f64::NEG_INFINITY),
                Some(5e-324),
                None,
            ])),
            std::sync::Arc::new(
                Decimal128Array::from(vec![
                    Some(-99_999_999_999_999_999_999_999_999_999_999_999_999),
                    Some(1),
                    None,
                ])
                .with_precision_and_scale(38, 10)
                .unwrap(),
            ),
            std::sync::Arc::new(BooleanArray::from(vec![Some(false), Some(true), None])),
            std::sync::Arc::new(StringArray::from(vec![Some(""), Some("Zoë ☃ 😀"), None])),
            std::sync::Arc::new(Date32Array::from(vec![
                Some(-719_162),
                Some(2_932_896),
                None,
            ])),
            std::sync::Arc::new(Time64MicrosecondArray::from(vec![
                Some(0),
                Some(86_399_999_999),
                None,
            ])),
            std::sync::Arc::new(TimestampMicrosecondArray::from(vec![
                Some(-62_135_596_800_000_000),
                Some(253_402_300_799_999_999),
                None,
            ])),
            std::sync::Arc::new(
                TimestampMicrosecondArray::from(vec![Some(-1), Some(EPOCH_MICROS), None])
                    .with_timezone("UTC"),
            ),
            std::sync::Arc::new(BinaryArray::from(vec![
                Some(&b""[..]),
                Some(&[0u8, 255][..]),
                None,
            ])),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
        let kinds: Vec<PgKind> = types.iter().map(|t| PgKind::for_type(*t)).collect();
        let mut enc = Encoder::new();
        enc.rows(&batch, &kinds, "here", &[]).unwrap();
        enc.finish();
        for piece in [1, 3, 7, 1000] {
            let mut dec = Decoder::new(&kinds, schema.clone(), 2);
            let mut out = Vec::new();
            for part in enc.buf.chunks(piece) {
                dec.feed(part, &mut |b| {
                    out.push(b);
                    Ok(())
                })
                .unwrap();
            }
            assert!(dec.ended());
            if dec.len > 0 {
                out.push(dec.finish().unwrap());
            }
            let back = arrow::compute::concat_batches(&schema, &out).unwrap();
            // NaN != NaN, so compare the bits through the checksum-free debug text.
            assert_eq!(
                format!("{back:?}"),
                format!("{batch:?}"),
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn text_with_a_nul_is_a_row_failure_naming_the_column() {
        use arrow::array::StringArray;
        use arrow::datatypes::{Field, Schema};
        let schema =
            std::sync::Arc::new(Schema::new(vec![Field::new("note", DataType::Utf8, true)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![std::sync::Arc::new(StringArray::from(vec!["a\0b"]))],
        )
        .unwrap();
        let e = Encoder::new()
            .rows(&batch, &[PgKind::Text], "pg table t", &[])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "row rejected at pg table t, row 1, column note, value 'a\0b': PostgreSQL text cannot hold the NUL character (\\0)"
        );
    }

    #[test]
    fn dates_and_timestamps_postgresql_would_store_as_infinity_are_row_failures() {
        use arrow::array::{Date32Array, TimestampMicrosecondArray};
        use arrow::datatypes::{Field, Schema};
        let encode = |col: ArrayRef, kind: PgKind| {
            let schema = Arc::new(Schema::new(vec![Field::new(
                "d",
                col.data_type().clone(),
                true,
            )]));
            let batch = RecordBatch::try_new(schema, vec![col]).unwrap();
            Encoder::new()
                .rows(&batch, &[kind], "pg table t", &[])
                .map_err(|e| e.to_string())
        };
        // i32::MIN days after 2000-01-01 is -infinity; one day less wraps around to
        // infinity.
        for days in [i32::MIN + EPOCH_DAYS, i32::MIN + EPOCH_DAYS - 1] {
            let e = encode(Arc::new(Date32Array::from(vec![days])), PgKind::Date).unwrap_err();
            assert!(e.ends_with("date out of PostgreSQL's range"), "{e}");
        }
        assert!(
            encode(
                Arc::new(Date32Array::from(vec![i32::MIN + EPOCH_DAYS + 1])),
                PgKind::Date
            )
            .is_ok()
        );
        let e = encode(
            Arc::new(TimestampMicrosecondArray::from(vec![
                i64::MIN + EPOCH_MICROS,
            ])),
            PgKind::Timestamp,
        )
        .unwrap_err();
        assert!(e.ends_with("timestamp out of PostgreSQL's range"), "{e}");
    }

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
