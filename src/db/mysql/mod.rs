//! MySQL and MariaDB: connecting, reading the catalog, and decoding rows of the binary
//! protocol straight into Arrow builders.
//!
//! Every connection runs with strict SQL modes (`STRICT_ALL_TABLES`, `NO_ZERO_DATE`,
//! `NO_ZERO_IN_DATE`, `ERROR_FOR_DIVISION_BY_ZERO`), so the server refuses a value it
//! would otherwise truncate or coerce, with `time_zone = '+00:00'`, and with
//! `NO_BACKSLASH_ESCAPES`, so a quote doubled is the only escape in a literal.
//!
//! # Type mapping
//!
//! Reading (MySQL/MariaDB → Arrow → pipeline type):
//!
//! | MySQL / MariaDB | Arrow | pipeline type |
//! |---|---|---|
//! | `tinyint`, `tinyint unsigned`, `smallint`, `year` | Int16 | `smallint` |
//! | `smallint unsigned`, `mediumint` (either), `int` | Int32 | `integer` |
//! | `int unsigned`, `bigint` | Int64 | `bigint` |
//! | `bigint unsigned` | Int64; a value above 2^63-1 is a row error (declare `numeric(20,0)`) | `bigint` |
//! | `float` | Float32 | `real` |
//! | `double` | Float64 | `double` |
//! | `decimal(p,s)`, p ≤ 38 | Decimal128(p,s) | `numeric(p,s)` |
//! | `char`, `varchar`, `*text`, `enum`, `set`, `json`, `uuid` | Utf8 | `text` |
//! | `binary`, `varbinary`, `*blob` | Binary | `bytea` |
//! | `date` | Date32 | `date` |
//! | `time` | Time64(µs); a value outside 00:00–24:00 is a row error | `time` |
//! | `datetime(n)` | Timestamp(µs) | `timestamp` |
//! | `timestamp(n)` | Timestamp(µs, UTC) | `timestamptz` |
//!
//! `boolean` is `tinyint(1)` in MySQL and reads as an integer; declare
//! `[source.types] col = "boolean"` to read it as one (a value other than 0 or 1 is then a
//! row error). Any other type (`bit`, spatial types, `decimal(65,30)`) is an error naming
//! the column when the pipeline is validated; `[source.types] col = "text"` reads its text
//! form instead.
//!
//! Writing (pipeline type → created column):
//!
//! | pipeline type | MySQL / MariaDB |
//! |---|---|
//! | `smallint`, `integer`, `bigint` | `SMALLINT`, `INT`, `BIGINT` |
//! | `real`, `double` | `FLOAT`, `DOUBLE` |
//! | `numeric(p,s)` | `DECIMAL(p,s)` (scale up to 30) |
//! | `boolean` | `BOOLEAN` (`tinyint(1)`) |
//! | `text` | `LONGTEXT` (`TEXT` holds only 64 KiB) |
//! | `varchar(n)` | `VARCHAR(n)` (n up to 16383, the most a utf8mb4 row allows) |
//! | `date`, `time` | `DATE`, `TIME(6)` |
//! | `timestamp` | `DATETIME(6)` |
//! | `timestamptz` | `DATETIME(6)` holding UTC (`TIMESTAMP` stops in 2038) |
//! | `bytea` | `LONGBLOB` |
//!
//! Tables are created `DEFAULT CHARSET utf8mb4 COLLATE utf8mb4_bin`.

pub mod checkpoint;
pub mod dialect;
mod errors;
pub mod sink;
pub mod source;

use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arrow::array::{
    Array, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder,
    Int16Builder, Int32Builder, Int64Builder, StringBuilder, Time64MicrosecondBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlRow};
use sqlx::{Column, Decode, MySql, Row, TypeInfo};

use crate::chunk::KeyValue;
use crate::config::{DbOptions, SecretUrl};
use crate::db::mysql::errors::error as db_error;
use crate::runtime::IoRuntime;
pub use crate::sql::RowDigest;
use crate::sql::hash_bytes;
use crate::types::ColumnType;
use crate::{Error, Result};

/// The most placeholders one statement may carry (the protocol counts them in 16 bits).
pub const MAX_PLACEHOLDERS: usize = 65_535;

/// Quotes an identifier from a pipeline file for MySQL: `` a`b `` becomes `` `a``b` ``.
pub fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quotes a database-qualified name: `` `db`.`table` ``.
pub fn qualified(database: &str, table: &str) -> String {
    format!("{}.{}", quote(database), quote(table))
}

/// A lazily opened pool on one server, shared by a sink and its checkpoint store.
pub struct MyClient {
    url: SecretUrl,
    db: DbOptions,
    io: IoRuntime,
    pool: OnceLock<MySqlPool>,
    /// The redacted URL, for messages.
    pub shown: String,
}

impl MyClient {
    /// A client for `url`. Connects on first use.
    pub fn new(url: &SecretUrl, db: &DbOptions, io: &IoRuntime) -> Self {
        MyClient {
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
    pub fn pool(&self) -> Result<&MySqlPool> {
        if let Some(p) = self.pool.get() {
            return Ok(p);
        }
        let pool = connect(&self.io, &self.url, &self.db)?;
        Ok(self.pool.get_or_init(|| pool))
    }
}

/// The session settings every connection gets; `mariadb` picks the statement-timeout
/// variable, which the two servers name differently.
fn session_sql(db: &DbOptions, mariadb: bool) -> String {
    let mut set = vec![
        // Without PAD_CHAR_TO_FULL_LENGTH, whatever the server's own mode: a char(n) then
        // gives its text back without trailing spaces, which the sink refuses to send.
        "sql_mode = CONCAT(REPLACE(@@sql_mode, 'PAD_CHAR_TO_FULL_LENGTH', ''), ',STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_BACKSLASH_ESCAPES')".to_string(),
        "time_zone = '+00:00'".to_string(),
    ];
    if let Some(ms) = db.lock_timeout_ms {
        // Both variables count whole seconds; a wait is never cut shorter than asked.
        let s = ms.div_ceil(1000).max(1);
        set.push(format!("innodb_lock_wait_timeout = {s}"));
        set.push(format!("lock_wait_timeout = {s}"));
    }
    if let Some(ms) = db.statement_timeout_ms {
        set.push(if mariadb {
            format!("max_statement_time = {}", ms as f64 / 1000.0)
        } else {
            format!("max_execution_time = {ms}")
        });
    }
    format!("SET SESSION {}", set.join(", "))
}

/// The connect options of a `mysql://` or `mariadb://` URL.
pub fn options(url: &SecretUrl) -> Result<MySqlConnectOptions, String> {
    let text = url.expose();
    let text = match text.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => text.to_string(),
    };
    MySqlConnectOptions::from_str(&text)
        .map_err(|e| {
            format!(
                "invalid MySQL url `{}`: {}",
                url.shown(),
                crate::config::redact(&e.to_string())
            )
        })
        .map(|o| {
            let o = match query_password(&text) {
                Some(password) => o.password(&password),
                None => o,
            };
            o.charset("utf8mb4").timezone(Some("+00:00".to_string()))
        })
}

/// The `password` query parameter of a MySQL URL, decoded. sqlx reads only the user-info
/// password and ignores this one, which other clients take (and which PostgreSQL URLs
/// take too); rowshift passes it on, and redacts it in every message like the other.
fn query_password(url: &str) -> Option<String> {
    let (_, query) = url.split_once('?')?;
    let query = query.split('#').next().unwrap_or(query);
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        let decode = |t: &str| crate::config::percent_decode(&t.replace('+', " "));
        (decode(key) == "password").then(|| decode(value))
    })
}

/// Opens a pool on `url` and checks that one connection works, retrying a refused or
/// dropped connection with backoff. Every connection gets the strict session settings.
pub fn connect(io: &IoRuntime, url: &SecretUrl, db: &DbOptions) -> Result<MySqlPool> {
    let shown = url.shown();
    let opts = options(url).map_err(|e| Error::data(&shown, e))?;
    let mut attempt = 0u32;
    let version: String = loop {
        attempt += 1;
        let tried = io.block_on(async {
            let mut conn = sqlx::ConnectOptions::connect(&opts).await?;
            let v: String = sqlx::query_scalar("SELECT VERSION()")
                .fetch_one(&mut conn)
                .await?;
            let _ = sqlx::Connection::close(conn).await;
            Ok::<_, sqlx::Error>(v)
        });
        match tried {
            Ok(v) => break v,
            Err(e) => {
                let transient = matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut);
                if !transient || attempt >= 3 {
                    return Err(db_error(&shown, e));
                }
                std::thread::sleep(Duration::from_millis(200 << attempt));
            }
        }
    };
    let session: Arc<str> = session_sql(db, version.contains("MariaDB")).into();
    let max = db.pool_size.unwrap_or(crate::config::DEFAULT_POOL_SIZE);
    Ok(io.block_on(async move {
        crate::sql::pool_options::<sqlx::MySql>()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(60))
            .after_connect(move |conn, _| {
                let session = session.clone();
                Box::pin(async move {
                    sqlx::raw_sql(crate::sql::stmt(session.to_string()))
                        .execute(&mut *conn)
                        .await?;
                    // Chunks read from one snapshot each, whatever the server's default.
                    sqlx::raw_sql("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                        .execute(&mut *conn)
                        .await
                        .map(|_| ())
                })
            })
            .connect_lazy_with(opts)
    }))
}

/// A column as `information_schema.columns` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MyColumn {
    /// Name.
    pub name: String,
    /// `DATA_TYPE`, lower case: `int`, `varchar`, `decimal`.
    pub data_type: String,
    /// `COLUMN_TYPE`: `int(10) unsigned`, `decimal(12,2)`, `enum('a','B')` (lower case
    /// but for an enum's or a set's members).
    pub column_type: String,
    /// `NUMERIC_PRECISION`.
    pub precision: Option<u64>,
    /// `NUMERIC_SCALE`.
    pub scale: Option<u64>,
    /// `CHARACTER_SET_NAME` (`None` for non-text columns; `binary` never appears here).
    pub charset: Option<String>,
    /// Declared `NOT NULL`.
    pub not_null: bool,
    /// `DATETIME_PRECISION`: the digits of a second a `datetime`, `timestamp` or `time`
    /// keeps.
    pub fraction: Option<u64>,
}

/// The columns of `database.table` (a table or view), or `None` if there is none.
pub async fn table_columns(
    pool: &MySqlPool,
    database: &str,
    table: &str,
    shown: &str,
) -> Result<Option<Vec<MyColumn>>> {
    // The catalog's columns are `longtext` on some servers and `varchar` with a binary
    // collation on others; CAST makes them read the same everywhere.
    let rows = sqlx::query(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(LOWER(DATA_TYPE) AS CHAR), CAST(COLUMN_TYPE AS CHAR), \
                CAST(NUMERIC_PRECISION AS SIGNED), CAST(NUMERIC_SCALE AS SIGNED), \
                CAST(LOWER(CHARACTER_SET_NAME) AS CHAR), IS_NULLABLE = 'NO', \
                CAST(DATETIME_PRECISION AS SIGNED) \
         FROM information_schema.columns WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
    )
    .bind(database)
    .bind(table)
    .fetch_all(pool)
    .await
    .map_err(|e| db_error(shown, e))?;
    if rows.is_empty() {
        return Ok(None);
    }
    rows.iter()
        .map(|r| {
            Ok(MyColumn {
                name: r.try_get(0)?,
                data_type: r.try_get(1)?,
                column_type: r.try_get(2)?,
                precision: r.try_get::<Option<i64>, _>(3)?.map(|v| v as u64),
                scale: r.try_get::<Option<i64>, _>(4)?.map(|v| v as u64),
                charset: r.try_get(5)?,
                not_null: r.try_get::<i64, _>(6)? != 0,
                fraction: r.try_get::<Option<i64>, _>(7)?.map(|v| v as u64),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map(Some)
        .map_err(|e| db_error(shown, e))
}

/// Names of the tables and views in `database`, for "did you mean" messages.
pub async fn table_names(pool: &MySqlPool, database: &str, shown: &str) -> Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT CAST(TABLE_NAME AS CHAR) FROM information_schema.tables WHERE TABLE_SCHEMA = ? ORDER BY 1",
    )
    .bind(database)
    .fetch_all(pool)
    .await
    .map_err(|e| db_error(shown, e))
}

/// The Arrow column a value is decoded into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MyKind {
    /// Int16.
    Int16,
    /// Int32.
    Int32,
    /// Int64.
    Int64,
    /// Float32.
    Float32,
    /// Float64.
    Float64,
    /// Boolean, from a 0 or 1 integer.
    Bool,
    /// Utf8: strings, and decimals as their exact text (cast to Decimal128 afterwards).
    Text,
    /// Binary.
    Bytes,
    /// Date32.
    Date,
    /// Time64(µs).
    Time,
    /// Timestamp(µs).
    Timestamp,
    /// Timestamp(µs, UTC).
    TimestampUtc,
}

impl MyKind {
    /// How a target column of type `ty` is read back: the inverse of how sinks write it.
    /// Decimals read as text and are cast to the column's Decimal128 afterwards.
    pub fn for_type(ty: ColumnType) -> MyKind {
        match ty {
            ColumnType::SmallInt => MyKind::Int16,
            ColumnType::Int => MyKind::Int32,
            ColumnType::BigInt => MyKind::Int64,
            ColumnType::Real => MyKind::Float32,
            ColumnType::Double => MyKind::Float64,
            ColumnType::Boolean => MyKind::Bool,
            ColumnType::Decimal { .. } | ColumnType::Text | ColumnType::Varchar(_) => MyKind::Text,
            ColumnType::Date => MyKind::Date,
            ColumnType::Time => MyKind::Time,
            ColumnType::Timestamp => MyKind::Timestamp,
            ColumnType::TimestampTz => MyKind::TimestampUtc,
            ColumnType::Bytes => MyKind::Bytes,
        }
    }

    /// How a source column is read: its kind and the Arrow type it ends up as (a
    /// decimal's text becomes Decimal128). `Err` says why it cannot be read without loss.
    pub fn for_column(c: &MyColumn) -> Result<(MyKind, DataType), String> {
        let unsigned = c.column_type.contains("unsigned");
        let kind = match c.data_type.as_str() {
            "tinyint" | "year" => MyKind::Int16,
            "smallint" if !unsigned => MyKind::Int16,
            "smallint" | "mediumint" => MyKind::Int32,
            "int" | "integer" if !unsigned => MyKind::Int32,
            "int" | "integer" | "bigint" => MyKind::Int64,
            "float" => MyKind::Float32,
            "double" | "real" => MyKind::Float64,
            "decimal" | "numeric" => {
                let (p, s) = (c.precision.unwrap_or(0), c.scale.unwrap_or(0));
                if !(1..=38).contains(&p) {
                    return Err(format!(
                        "its type {} does not fit an Arrow decimal (precision up to 38)",
                        c.column_type
                    ));
                }
                return Ok((MyKind::Text, DataType::Decimal128(p as u8, s as i8)));
            }
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum"
            | "set" | "json" | "uuid"
                if c.charset.as_deref() != Some("binary") =>
            {
                MyKind::Text
            }
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "char"
            | "varchar" => MyKind::Bytes,
            "date" => MyKind::Date,
            "time" => MyKind::Time,
            "datetime" => MyKind::Timestamp,
            "timestamp" => MyKind::TimestampUtc,
            _ => {
                return Err(format!(
                    "rowshift cannot read its type {} without loss",
                    c.column_type
                ));
            }
        };
        Ok((kind, kind.arrow_type()))
    }

    /// The Arrow type values of this kind are decoded into.
    pub fn arrow_type(self) -> DataType {
        match self {
            MyKind::Int16 => DataType::Int16,
            MyKind::Int32 => DataType::Int32,
            MyKind::Int64 => DataType::Int64,
            MyKind::Float32 => DataType::Float32,
            MyKind::Float64 => DataType::Float64,
            MyKind::Bool => DataType::Boolean,
            MyKind::Text => DataType::Utf8,
            MyKind::Bytes => DataType::Binary,
            MyKind::Date => DataType::Date32,
            MyKind::Time => DataType::Time64(TimeUnit::Microsecond),
            MyKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            MyKind::TimestampUtc => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }
}

/// The MySQL column type a pipeline type is created as; `Err` when MySQL has no column
/// that holds it without loss.
pub fn my_decl(ty: ColumnType) -> Result<String, String> {
    Ok(match ty {
        ColumnType::SmallInt => "SMALLINT".into(),
        ColumnType::Int => "INT".into(),
        ColumnType::BigInt => "BIGINT".into(),
        ColumnType::Real => "FLOAT".into(),
        ColumnType::Double => "DOUBLE".into(),
        ColumnType::Decimal { precision, scale } => {
            if !(0..=30).contains(&scale) {
                return Err(format!(
                    "{ty} has scale {scale}; a MySQL DECIMAL holds a scale from 0 to 30"
                ));
            }
            format!("DECIMAL({precision},{scale})")
        }
        ColumnType::Boolean => "BOOLEAN".into(),
        ColumnType::Text => "LONGTEXT".into(),
        ColumnType::Varchar(n) => {
            if n > 16_383 {
                return Err(format!(
                    "{ty} is longer than the 16383 characters a utf8mb4 VARCHAR holds; declare type = \"text\""
                ));
            }
            format!("VARCHAR({n})")
        }
        ColumnType::Date => "DATE".into(),
        ColumnType::Time => "TIME(6)".into(),
        ColumnType::Timestamp | ColumnType::TimestampTz => "DATETIME(6)".into(),
        ColumnType::Bytes => "LONGBLOB".into(),
    })
}

/// Whether an existing column (`DATA_TYPE`) stores what a column of pipeline type `ty`
/// is sent as, without conversion. Text sent into a number column, say, would be
/// converted by the server; rowshift refuses that instead.
pub fn same_family(ty: ColumnType, data_type: &str) -> bool {
    let want: &[&str] = match ty {
        ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt => {
            &["tinyint", "smallint", "mediumint", "int", "bigint"]
        }
        ColumnType::Real | ColumnType::Double => &["float", "double"],
        ColumnType::Decimal { .. } => &["decimal"],
        ColumnType::Boolean => &["tinyint"],
        ColumnType::Text | ColumnType::Varchar(_) => &[
            "char",
            "varchar",
            "tinytext",
            "text",
            "mediumtext",
            "longtext",
            "enum",
            "set",
            "json",
            "uuid",
        ],
        ColumnType::Date => &["date"],
        ColumnType::Time => &["time"],
        ColumnType::Timestamp | ColumnType::TimestampTz => &["datetime", "timestamp"],
        ColumnType::Bytes => &[
            "binary",
            "varbinary",
            "tinyblob",
            "blob",
            "mediumblob",
            "longblob",
        ],
    };
    want.contains(&data_type)
}

/// A key value bound to a statement: each part of a composite key to its own parameter.
pub fn bind_key<'q>(
    q: sqlx::query::Query<'q, MySql, sqlx::mysql::MySqlArguments>,
    v: &KeyValue,
) -> sqlx::query::Query<'q, MySql, sqlx::mysql::MySqlArguments> {
    v.parts().iter().fold(q, |q, p| match p {
        KeyValue::Int(i) => q.bind(*i),
        KeyValue::Text(t) => q.bind(t.clone()),
        KeyValue::Tuple(_) => q.bind(p.to_string()),
    })
}

/// A key value as a literal for statements that cannot take parameters (several key
/// lists in one statement): a number as is, text quoted with `'` doubled (connections
/// run with `NO_BACKSLASH_ESCAPES`).
pub fn literal(v: &KeyValue) -> String {
    match v {
        KeyValue::Int(i) => i.to_string(),
        KeyValue::Text(t) => format!("'{}'", t.replace('\'', "''")),
        KeyValue::Tuple(parts) => format!(
            "({})",
            parts.iter().map(literal).collect::<Vec<_>>().join(", ")
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------

/// One column's builder.
enum Col {
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Bool(BooleanBuilder),
    Text(StringBuilder),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder, bool),
}

/// A value converted for its column, not yet appended.
#[derive(Clone, Copy)]
enum Val<'v> {
    Null,
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(&'v str),
    Bytes(&'v [u8]),
}

impl Col {
    fn new(kind: MyKind, cap: usize) -> Col {
        match kind {
            MyKind::Int16 => Col::Int16(Int16Builder::with_capacity(cap)),
            MyKind::Int32 => Col::Int32(Int32Builder::with_capacity(cap)),
            MyKind::Int64 => Col::Int64(Int64Builder::with_capacity(cap)),
            MyKind::Float32 => Col::Float32(Float32Builder::with_capacity(cap)),
            MyKind::Float64 => Col::Float64(Float64Builder::with_capacity(cap)),
            MyKind::Bool => Col::Bool(BooleanBuilder::with_capacity(cap)),
            MyKind::Text => Col::Text(StringBuilder::with_capacity(cap, cap * 16)),
            MyKind::Bytes => Col::Bytes(BinaryBuilder::with_capacity(cap, cap * 16)),
            MyKind::Date => Col::Date(Date32Builder::with_capacity(cap)),
            MyKind::Time => Col::Time(Time64MicrosecondBuilder::with_capacity(cap)),
            MyKind::Timestamp => {
                Col::Timestamp(TimestampMicrosecondBuilder::with_capacity(cap), false)
            }
            MyKind::TimestampUtc => {
                Col::Timestamp(TimestampMicrosecondBuilder::with_capacity(cap), true)
            }
        }
    }

    fn null(&mut self) {
        match self {
            Col::Int16(b) => b.append_null(),
            Col::Int32(b) => b.append_null(),
            Col::Int64(b) => b.append_null(),
            Col::Float32(b) => b.append_null(),
            Col::Float64(b) => b.append_null(),
            Col::Bool(b) => b.append_null(),
            Col::Text(b) => b.append_null(),
            Col::Bytes(b) => b.append_null(),
            Col::Date(b) => b.append_null(),
            Col::Time(b) => b.append_null(),
            Col::Timestamp(b, _) => b.append_null(),
        }
    }

    /// Converts one binary-protocol value (`unsigned` for an unsigned integer column)
    /// for this column, or says why it does not fit. Nothing is appended, so a row whose
    /// later value fails leaves no trace.
    fn convert<'v>(&self, v: &'v [u8], unsigned: bool) -> Result<Val<'v>, String> {
        Ok(match self {
            Col::Int16(_) => Val::I16(fit(int(v, unsigned)?, "smallint")?),
            Col::Int32(_) => Val::I32(fit(int(v, unsigned)?, "integer")?),
            Col::Int64(_) => Val::I64(fit(int(v, unsigned)?, "bigint")?),
            Col::Bool(_) => match int(v, unsigned)? {
                0 => Val::Bool(false),
                1 => Val::Bool(true),
                n => return Err(format!("{n} is not a boolean (0 or 1)")),
            },
            Col::Float32(_) => match v.len() {
                4 => Val::F32(f32::from_le_bytes(v.try_into().expect("4 bytes"))),
                8 => {
                    let d = f64::from_le_bytes(v.try_into().expect("8 bytes"));
                    let f = d as f32;
                    if f as f64 != d && !d.is_nan() {
                        return Err(format!("{d} does not fit a real without rounding"));
                    }
                    Val::F32(f)
                }
                n => return Err(format!("a float of {n} bytes")),
            },
            Col::Float64(_) => match v.len() {
                4 => Val::F64(f32::from_le_bytes(v.try_into().expect("4 bytes")) as f64),
                8 => Val::F64(f64::from_le_bytes(v.try_into().expect("8 bytes"))),
                n => return Err(format!("a float of {n} bytes")),
            },
            Col::Text(_) => match std::str::from_utf8(v) {
                Ok(s) => Val::Str(s),
                Err(_) => {
                    return Err(format!(
                        "`{}` is not valid UTF-8 text",
                        String::from_utf8_lossy(v)
                    ));
                }
            },
            Col::Bytes(_) => Val::Bytes(v),
            Col::Date(_) => Val::I32(datetime(v)?.0),
            Col::Time(_) => Val::I64(time(v)?),
            Col::Timestamp(..) => {
                let (days, micros) = datetime(v)?;
                Val::I64(days as i64 * 86_400_000_000 + micros)
            }
        })
    }

    /// Appends a value [`Col::convert`] made for this column.
    fn append(&mut self, v: Val<'_>) {
        match (self, v) {
            (Col::Int16(b), Val::I16(v)) => b.append_value(v),
            (Col::Int32(b), Val::I32(v)) => b.append_value(v),
            (Col::Int64(b), Val::I64(v)) => b.append_value(v),
            (Col::Bool(b), Val::Bool(v)) => b.append_value(v),
            (Col::Float32(b), Val::F32(v)) => b.append_value(v),
            (Col::Float64(b), Val::F64(v)) => b.append_value(v),
            (Col::Text(b), Val::Str(v)) => b.append_value(v),
            (Col::Bytes(b), Val::Bytes(v)) => b.append_value(v),
            (Col::Date(b), Val::I32(v)) => b.append_value(v),
            (Col::Time(b), Val::I64(v)) => b.append_value(v),
            (Col::Timestamp(b, _), Val::I64(v)) => b.append_value(v),
            (c, Val::Null) => c.null(),
            _ => unreachable!("a value converted for another column"),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Int16(b) => Arc::new(b.finish()),
            Col::Int32(b) => Arc::new(b.finish()),
            Col::Int64(b) => Arc::new(b.finish()),
            Col::Float32(b) => Arc::new(b.finish()),
            Col::Float64(b) => Arc::new(b.finish()),
            Col::Bool(b) => Arc::new(b.finish()),
            Col::Text(b) => Arc::new(b.finish()),
            Col::Bytes(b) => Arc::new(b.finish()),
            Col::Date(b) => Arc::new(b.finish()),
            Col::Time(b) => Arc::new(b.finish()),
            Col::Timestamp(b, utc) => {
                let a = b.finish();
                Arc::new(if *utc { a.with_timezone("UTC") } else { a })
            }
        }
    }
}

/// A little-endian integer of 1, 2, 4 or 8 bytes.
fn int(v: &[u8], unsigned: bool) -> Result<i128, String> {
    Ok(match (v.len(), unsigned) {
        (1, false) => v[0] as i8 as i128,
        (1, true) => v[0] as i128,
        (2, false) => i16::from_le_bytes([v[0], v[1]]) as i128,
        (2, true) => u16::from_le_bytes([v[0], v[1]]) as i128,
        (4, false) => i32::from_le_bytes(v.try_into().expect("4 bytes")) as i128,
        (4, true) => u32::from_le_bytes(v.try_into().expect("4 bytes")) as i128,
        (8, false) => i64::from_le_bytes(v.try_into().expect("8 bytes")) as i128,
        (8, true) => u64::from_le_bytes(v.try_into().expect("8 bytes")) as i128,
        (n, _) => return Err(format!("an integer of {n} bytes")),
    })
}

fn fit<T: TryFrom<i128>>(v: i128, name: &str) -> Result<T, String> {
    T::try_from(v).map_err(|_| format!("{v} is out of range for {name}"))
}

/// A binary-protocol `DATE`, `DATETIME` or `TIMESTAMP`: days since 1970-01-01 and
/// microseconds into the day.
fn datetime(v: &[u8]) -> Result<(i32, i64), String> {
    let len = *v.first().ok_or("an empty date")? as usize;
    if len == 0 || v.len() < len + 1 {
        return Err("the zero date 0000-00-00 is not a date".into());
    }
    let b = &v[1..];
    let year = u16::from_le_bytes([b[0], b[1]]) as i32;
    let (month, day) = (b[2] as u32, b[3] as u32);
    let date = chrono::NaiveDate::from_ymd_opt(year, month, day)
        .ok_or_else(|| format!("{year:04}-{month:02}-{day:02} is not a date"))?;
    let days = (date - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days();
    let mut micros = 0i64;
    if len >= 7 {
        micros += (b[4] as i64 * 3600 + b[5] as i64 * 60 + b[6] as i64) * 1_000_000;
    }
    if len >= 11 {
        micros += u32::from_le_bytes([b[7], b[8], b[9], b[10]]) as i64;
    }
    Ok((days as i32, micros))
}

/// A binary-protocol `TIME` as microseconds into a day; a negative time or one of a day
/// or more (MySQL's TIME spans ±838 hours) does not fit Arrow's time of day.
fn time(v: &[u8]) -> Result<i64, String> {
    let len = *v.first().ok_or("an empty time")? as usize;
    if len == 0 {
        return Ok(0);
    }
    let b = &v[1..];
    if v.len() < len + 1 || len < 8 {
        return Err(format!("a TIME of {len} bytes"));
    }
    let negative = b[0] == 1;
    let days = u32::from_le_bytes([b[1], b[2], b[3], b[4]]) as i64;
    let micros = if len >= 12 {
        u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as i64
    } else {
        0
    };
    let total =
        ((days * 24 + b[5] as i64) * 3600 + b[6] as i64 * 60 + b[7] as i64) * 1_000_000 + micros;
    if (negative && total != 0) || total >= 86_400_000_000 {
        let h = days * 24 + b[5] as i64;
        return Err(format!(
            "{}{h:02}:{:02}:{:02} is not a time of day (00:00:00 to 23:59:59.999999)",
            if negative { "-" } else { "" },
            b[6],
            b[7]
        ));
    }
    Ok(total)
}

/// Decodes result rows into batches of one schema.
pub struct Decoder {
    cols: Vec<Col>,
    /// Per column: whether the result column is an unsigned integer (from the first row).
    unsigned: Option<Vec<bool>>,
    schema: SchemaRef,
    cap: usize,
    /// Rows in the batch being built.
    pub len: usize,
    /// Rows decoded in all.
    pub rows: u64,
}

impl Decoder {
    /// A decoder for `kinds`, batches of `schema` (one field per kind) of up to `cap` rows.
    pub fn new(kinds: &[MyKind], schema: SchemaRef, cap: usize) -> Self {
        Decoder {
            cols: kinds.iter().map(|k| Col::new(*k, cap)).collect(),
            unsigned: None,
            schema,
            cap,
            len: 0,
            rows: 0,
        }
    }

    /// Appends one row; `Err` names the column (by index) and why its value does not
    /// fit, and appends nothing. Returns the batch when it is full.
    pub fn push(&mut self, row: &MySqlRow) -> Result<Option<RecordBatch>, (usize, String)> {
        let unsigned = self.unsigned.get_or_insert_with(|| {
            row.columns()
                .iter()
                .map(|c| c.type_info().name().ends_with("UNSIGNED"))
                .collect()
        });
        let n = self.cols.len();
        if row.len() != n {
            return Err((0, format!("{} columns, expected {n}", row.len())));
        }
        let mut on_stack = [Val::Null; 16];
        let mut on_heap = Vec::new();
        let vals: &mut [Val<'_>] = if n <= on_stack.len() {
            &mut on_stack[..n]
        } else {
            on_heap.resize(n, Val::Null);
            &mut on_heap
        };
        for (i, slot) in vals.iter_mut().enumerate() {
            let Some(bytes) = value_bytes(row, i).map_err(|why| (i, why))? else {
                continue;
            };
            *slot = self.cols[i]
                .convert(bytes, unsigned[i])
                .map_err(|why| (i, why))?;
        }
        for (c, v) in self.cols.iter_mut().zip(vals.iter()) {
            c.append(*v);
        }
        self.len += 1;
        self.rows += 1;
        if self.len >= self.cap {
            return self.finish().map(Some).map_err(|e| (0, e.to_string()));
        }
        Ok(None)
    }

    /// The rows decoded since the last batch, as one batch.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = self.cols.iter_mut().map(Col::finish).collect();
        self.len = 0;
        RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| Error::Internal(e.to_string()))
    }
}

/// The bytes of column `i` of `row` as the server sent them; `None` for SQL NULL only.
///
/// Not sqlx's `is_null`, which also says NULL for a zero date (`0000-00-00`): a source
/// holding one would be read as NULL, and a target that stored one in place of a NULL
/// sent would pass its read-back. The zero date's bytes reach the decoder, which refuses
/// it as a date, so the row is quarantined with that reason.
fn value_bytes(row: &MySqlRow, i: usize) -> Result<Option<&[u8]>, String> {
    let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
    // `decode` fails only where the protocol sent no value at all.
    Ok(<&[u8] as Decode<MySql>>::decode(raw).ok())
}

/// A row as a JSON object of its values as the server sent them, for the quarantine:
/// numbers as numbers, dates and times as their SQL text, text as text (invalid UTF-8
/// replaced), bytes as hex.
pub fn row_json(row: &MySqlRow) -> String {
    let mut out = serde_json::Map::new();
    for (i, c) in row.columns().iter().enumerate() {
        let ty = c.type_info().name();
        let value = match value_bytes(row, i) {
            Ok(Some(v)) => json_value(v, ty),
            Ok(None) => serde_json::Value::Null,
            Err(e) => e.into(),
        };
        out.insert(c.name().to_string(), value);
    }
    serde_json::Value::Object(out).to_string()
}

fn json_value(v: &[u8], ty: &str) -> serde_json::Value {
    let unsigned = ty.ends_with("UNSIGNED");
    let base = ty.trim_end_matches(" UNSIGNED");
    match base {
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" | "BOOLEAN" => {
            match int(v, unsigned) {
                Ok(n) => match i64::try_from(n) {
                    Ok(n) => n.into(),
                    Err(_) => n.to_string().into(),
                },
                Err(e) => e.into(),
            }
        }
        "FLOAT" if v.len() == 4 => {
            (f32::from_le_bytes(v.try_into().expect("4 bytes")) as f64).into()
        }
        "DOUBLE" if v.len() == 8 => f64::from_le_bytes(v.try_into().expect("8 bytes")).into(),
        "DATE" | "DATETIME" | "TIMESTAMP" => temporal_text(v, base != "DATE").into(),
        "TIME" => time_text(v).into(),
        "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" => v
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
            .into(),
        _ => String::from_utf8_lossy(v).into_owned().into(),
    }
}

/// A binary `DATE`/`DATETIME` as SQL text, zero dates included.
fn temporal_text(v: &[u8], with_time: bool) -> String {
    let len = v.first().copied().unwrap_or(0) as usize;
    let b = v.get(1..).unwrap_or_default();
    let get = |i: usize| b.get(i).copied().unwrap_or(0);
    let year = if len >= 4 {
        u16::from_le_bytes([get(0), get(1)])
    } else {
        0
    };
    let mut s = format!("{year:04}-{:02}-{:02}", get(2), get(3));
    if with_time {
        s.push_str(&format!(" {:02}:{:02}:{:02}", get(4), get(5), get(6)));
        if len >= 11 {
            s.push_str(&format!(
                ".{:06}",
                u32::from_le_bytes([get(7), get(8), get(9), get(10)])
            ));
        }
    }
    s
}

/// A binary `TIME` as SQL text: `-838:59:59.000000`.
fn time_text(v: &[u8]) -> String {
    let len = v.first().copied().unwrap_or(0) as usize;
    let b = v.get(1..).unwrap_or_default();
    let get = |i: usize| b.get(i).copied().unwrap_or(0);
    if len < 8 {
        return "00:00:00".into();
    }
    let days = u32::from_le_bytes([get(1), get(2), get(3), get(4)]) as u64;
    let mut s = format!(
        "{}{:02}:{:02}:{:02}",
        if get(0) == 1 { "-" } else { "" },
        days * 24 + get(5) as u64,
        get(6),
        get(7)
    );
    if len >= 12 {
        s.push_str(&format!(
            ".{:06}",
            u32::from_le_bytes([get(8), get(9), get(10), get(11)])
        ));
    }
    s
}

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
fn civil(days: i32) -> (i64, i64, i64) {
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

/// How rows come back over the binary protocol, for a [`RowDigest`] of them: per column,
/// the byte width integers come back in (`0` for variable-length values and dates).
///
/// For the column types whose returned bytes follow from the value alone (integers of
/// the stored width, booleans, UTF-8 text, binary strings, dates), the rows sent digest
/// ([`RowDigest::add_sent`]) exactly as the rows read back do ([`RowDigest::add_row`]): a
/// hash of each value's bytes (or of NULL), folded in column order into the row's hash.
/// A read-back whose digests match needs no decoding into Arrow, and equal bytes of text
/// prove it valid UTF-8: it was when it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestLayout {
    widths: Vec<usize>,
}

impl DigestLayout {
    /// The layout for columns of these declared types, stored as `stored` (`None` for a
    /// table rowshift creates). `None` when some column comes back as bytes that do not
    /// follow from the value alone: floats, decimals, times and timestamps (whose length
    /// depends on the server), or a stored type other than the created one.
    pub fn new(types: &[ColumnType], stored: Option<&[&MyColumn]>) -> Option<DigestLayout> {
        let mut widths = Vec::with_capacity(types.len());
        for (i, ty) in types.iter().enumerate() {
            let (width, want): (usize, &[&str]) = match ty {
                ColumnType::SmallInt => (2, &["smallint"]),
                ColumnType::Int => (4, &["int"]),
                ColumnType::BigInt => (8, &["bigint"]),
                ColumnType::Boolean => (1, &["tinyint"]),
                ColumnType::Text | ColumnType::Varchar(_) => (
                    0,
                    &["varchar", "tinytext", "text", "mediumtext", "longtext"],
                ),
                ColumnType::Bytes => (
                    0,
                    &["varbinary", "tinyblob", "blob", "mediumblob", "longblob"],
                ),
                ColumnType::Date => (0, &["date"]),
                _ => return None,
            };
            if let Some(stored) = stored {
                let c = stored.get(i)?;
                let text = matches!(ty, ColumnType::Text | ColumnType::Varchar(_));
                // Text in another character set comes back converted.
                let charset_ok =
                    !text || matches!(c.charset.as_deref(), Some("utf8mb4" | "utf8mb3" | "utf8"));
                // An unsigned column of the same width returns the same bytes, but holds
                // no negative value: the server refuses those on insert.
                if !want.contains(&c.data_type.as_str()) || !charset_ok {
                    return None;
                }
            }
            widths.push(width);
        }
        Some(DigestLayout { widths })
    }
}

/// A row's hash before its first value is folded in.
const ROW_START: u64 = 0x6d79_7371_6c72_6f77;
/// The hash of a NULL value.
const NULL_HASH: u64 = 0x6e75_6c6c_0000_0001;

/// Folds the next value's hash into a row's. Each step is a bijection of `row` for a given
/// `value` and of `value` for a given `row`, so changing any one value changes the row's
/// hash, and values that trade columns change it too.
fn fold(row: u64, value: u64) -> u64 {
    (row.rotate_left(23) ^ value).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl RowDigest {
    fn add_hash(&mut self, row: u64) {
        self.rows += 1;
        // The last fold's multiply leaves the low bits weak; mix them before summing.
        self.sum = self.sum.wrapping_add(row ^ (row >> 29));
    }

    /// Adds the rows of `batch` (the written columns, in order) as the server will return
    /// them. `false` (and nothing added) when a column does not arrive as its layout
    /// expects, or holds a date MySQL has no binary form for.
    ///
    /// Column by column over typed arrays, so the sent side costs a tight loop per column
    /// rather than a dynamic call per value.
    pub fn add_sent(&mut self, layout: &DigestLayout, batch: &RecordBatch) -> bool {
        let columns = batch.columns();
        if columns.len() != layout.widths.len() {
            return false;
        }
        let mut rows = vec![ROW_START; batch.num_rows()];
        for (a, width) in columns.iter().zip(&layout.widths) {
            if !fold_sent(&mut rows, a.as_ref(), *width) {
                return false;
            }
        }
        for row in rows {
            self.add_hash(row);
        }
        true
    }

    /// Adds one row read back, its values' bytes as the server returned them.
    pub fn add_row(&mut self, row: &MySqlRow) -> Result<(), String> {
        let mut hash = ROW_START;
        for i in 0..row.len() {
            let value = match value_bytes(row, i)? {
                Some(bytes) => hash_bytes(bytes),
                None => NULL_HASH,
            };
            hash = fold(hash, value);
        }
        self.add_hash(hash);
        Ok(())
    }
}

/// Folds the values of `a` into `rows` (one hash per row) as the server returns them in
/// a column of integer `width` (`0`: not an integer). `false` when `a` does not arrive as
/// such a column's values, or holds a date MySQL has no binary form for.
fn fold_sent(rows: &mut [u64], a: &dyn Array, width: usize) -> bool {
    use arrow::array::AsArray;
    use arrow::datatypes::{Date32Type, Int16Type, Int32Type, Int64Type};
    let nulls = a.logical_nulls();
    match (a.data_type(), width) {
        (DataType::Int16, 2) => {
            let a = a.as_primitive::<Int16Type>();
            fold_each(rows, nulls.as_ref(), |r| {
                Some(hash_bytes(&a.value(r).to_le_bytes()))
            })
        }
        (DataType::Int32, 4) => {
            let a = a.as_primitive::<Int32Type>();
            fold_each(rows, nulls.as_ref(), |r| {
                Some(hash_bytes(&a.value(r).to_le_bytes()))
            })
        }
        (DataType::Int64, 8) => {
            let a = a.as_primitive::<Int64Type>();
            fold_each(rows, nulls.as_ref(), |r| {
                Some(hash_bytes(&a.value(r).to_le_bytes()))
            })
        }
        (DataType::Boolean, 1) => {
            let a = a.as_boolean();
            fold_each(rows, nulls.as_ref(), |r| {
                Some(hash_bytes(&[u8::from(a.value(r))]))
            })
        }
        (DataType::Utf8, 0) => {
            let a = a.as_string::<i32>();
            fold_each(rows, nulls.as_ref(), |r| {
                Some(hash_bytes(a.value(r).as_bytes()))
            })
        }
        (DataType::Binary, 0) => {
            let a = a.as_binary::<i32>();
            fold_each(rows, nulls.as_ref(), |r| Some(hash_bytes(a.value(r))))
        }
        (DataType::Date32, 0) => {
            let a = a.as_primitive::<Date32Type>();
            fold_each(rows, nulls.as_ref(), |r| {
                // The binary protocol's DATE: its length (4), the year (2 bytes,
                // little-endian), the month and the day.
                let (y, m, d) = civil(a.value(r));
                if !(1..=9999).contains(&y) {
                    return None;
                }
                let [y0, y1] = (y as u16).to_le_bytes();
                Some(hash_bytes(&[4, y0, y1, m as u8, d as u8]))
            })
        }
        _ => false,
    }
}

/// Folds into each row's hash `hash(row)`, or [`NULL_HASH`] where `nulls` says NULL;
/// `false` as soon as `hash` gives `None`.
fn fold_each(
    rows: &mut [u64],
    nulls: Option<&arrow::buffer::NullBuffer>,
    hash: impl Fn(usize) -> Option<u64>,
) -> bool {
    for (r, row) in rows.iter_mut().enumerate() {
        let value = if nulls.is_some_and(|n| n.is_null(r)) {
            NULL_HASH
        } else {
            match hash(r) {
                Some(h) => h,
                None => return false,
            }
        };
        *row = fold(*row, value);
    }
    true
}

/// The primary key's columns in key order, or none.
pub async fn primary_key(
    pool: &sqlx::MySqlPool,
    database: &str,
    table: &str,
    shown: &str,
) -> Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.KEY_COLUMN_USAGE \
         WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
         ORDER BY ORDINAL_POSITION",
    )
    .bind(database)
    .bind(table)
    .fetch_all(pool)
    .await
    .map_err(|e| db_error(shown, e))
}

/// The engine of table `database.table` and whether it supports transactions, or
/// `None` when the table does not exist.
pub async fn table_engine(
    conn: &mut MySqlConnection,
    database: &str,
    table: &str,
    shown: &str,
) -> Result<Option<(String, bool)>> {
    let row: Option<(Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT CAST(t.ENGINE AS CHAR), CAST(e.TRANSACTIONS = 'YES' AS SIGNED) \
         FROM information_schema.TABLES t \
         LEFT JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE \
         WHERE t.TABLE_SCHEMA = ? AND t.TABLE_NAME = ?",
    )
    .bind(database)
    .bind(table)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| db_error(shown, e))?;
    Ok(row
        .map(|(engine, transactions)| (engine.unwrap_or_default(), transactions.unwrap_or(0) == 1)))
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
