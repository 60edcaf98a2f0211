//! PostgreSQL: connecting, reading the catalog, and the binary `COPY` format both ways.
//!
//! Rows travel as binary `COPY` in both directions, decoded straight into Arrow builders
//! and encoded straight from Arrow arrays, never through generic rows.
//!
//! The files: this one connects and reads the catalog (`catalog.rs`: what `init` carries
//! beyond the columns); `types.rs` maps the types (its
//! documentation holds the type table); `encode.rs` and `decode.rs` are the binary `COPY`
//! format each way, with `numeric.rs` its `numeric` codec.

pub mod capture;
mod catalog;
pub mod checkpoint;
mod decode;
pub mod dialect;
mod encode;
mod errors;
pub mod hash;
mod numeric;
pub mod sink;
pub mod source;
mod types;

pub use self::catalog::{schema_objects, table_details};

pub use self::decode::Decoder;
pub use self::encode::Encoder;
pub use self::numeric::{decode_numeric, encode_numeric, numeric_text};
pub use self::types::{PgKind, pg_decl};

use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool};

use crate::config::{DbOptions, SecretUrl};
use crate::db::postgres::errors::error as db_error;
use crate::runtime::IoRuntime;
pub use crate::sql::RowDigest;
use crate::{Error, Result};

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
    // A client that vanished (its machine gone, the network split) holds its open
    // transaction's locks until the server notices: with the system's keepalive
    // defaults, two hours. A worker of a shared run that takes over its chunk would
    // wait that long on the first key they share; probing an idle connection after 10 s
    // ends such a session in about 25 s.
    settings.push(("tcp_keepalives_idle", "10".into()));
    settings.push(("tcp_keepalives_interval", "5".into()));
    settings.push(("tcp_keepalives_count", "3".into()));
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
