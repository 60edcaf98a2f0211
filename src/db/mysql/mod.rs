//! MySQL and MariaDB: connecting, reading the catalog, and decoding rows of the binary
//! protocol straight into Arrow builders.
//!
//! Every connection runs with strict SQL modes (`STRICT_ALL_TABLES`, `NO_ZERO_DATE`,
//! `NO_ZERO_IN_DATE`, `ERROR_FOR_DIVISION_BY_ZERO`), so the server refuses a value it
//! would otherwise truncate or coerce, with `time_zone = '+00:00'`, and with
//! `NO_BACKSLASH_ESCAPES`, so a quote doubled is the only escape in a literal.
//!
//! The files: this one connects and sets up the session; `catalog.rs` reads the catalog
//! (columns, keys, and what `init` carries: defaults, indexes, foreign keys, checks);
//! `types.rs` maps the types (its documentation holds the type tables); `decode.rs`
//! decodes the binary protocol, `temporal.rs` writes dates and times as MySQL's text, and
//! `digest.rs` digests rows without decoding them.

pub mod capture;
mod catalog;
pub mod checkpoint;
mod decode;
pub mod dialect;
mod digest;
mod errors;
pub mod sink;
pub mod source;
mod temporal;
mod types;

pub use self::catalog::{
    MyColumn, enum_labels, primary_key, schema_objects, table_columns, table_details, table_engine,
    table_names,
};
pub use self::decode::{Decoder, row_json};
pub use self::digest::DigestLayout;
pub use self::temporal::{write_date, write_time, write_timestamp, written};
pub use self::types::{MyKind, my_decl, same_family};

use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::MySql;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool};

use crate::chunk::KeyValue;
use crate::config::{DbOptions, SecretUrl};
use crate::db::mysql::errors::error as db_error;
use crate::runtime::IoRuntime;
pub use crate::sql::RowDigest;
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
