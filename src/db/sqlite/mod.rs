//! Opening SQLite databases and reading their catalog (`catalog.rs`: what `init` carries
//! beyond a table's columns).

pub mod capture;
mod catalog;
pub mod checkpoint;
pub(crate) mod decode;
pub mod dialect;
mod errors;
pub mod lookup;
pub mod sink;
pub mod source;

pub use self::catalog::{schema_objects, table_details};

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};

use crate::db::sqlite::errors::error as db_error;
use crate::runtime::IoRuntime;
use crate::sql::quote_ident;
use crate::{Error, Result};

/// A column as `PRAGMA table_info` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumn {
    /// Column name.
    pub name: String,
    /// Declared type, as written in `CREATE TABLE` (may be empty).
    pub decl: String,
    /// Whether the column is declared `NOT NULL`.
    pub not_null: bool,
    /// Position in the primary key (1-based), or 0.
    pub pk: i64,
}

/// How a pool opens its database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read-only; never creates the file.
    Read,
    /// Read-only and treating the file as unchanging, so not even lock or `-shm` files
    /// appear next to it; read-only through its write-ahead log when one holds rows. For
    /// a dry run's look at the target.
    Inspect,
    /// Read-write; creates the file and its folder.
    Write,
}

/// The page cache of a connection that writes, in KiB (SQLite's default is 2,000).
const WRITE_CACHE_KIB: u32 = 64 * 1024;

/// Opens a pool on `path`.
pub fn connect(io: &IoRuntime, path: &Path, access: Access, max: u32) -> Result<SqlitePool> {
    io.block_on(connect_async(path, access, max))
}

/// [`connect`], from async code.
pub async fn connect_async(path: &Path, access: Access, max: u32) -> Result<SqlitePool> {
    static CONFIGURED: std::sync::Once = std::sync::Once::new();
    CONFIGURED.call_once(|| {
        // SQLite's memory statistics take a process-wide mutex on every allocation, which
        // was a tenth of a SQLite -> SQLite run. rowshift never reads them. This only works
        // before the library's first use; later it is refused and nothing changes.
        // SAFETY: a documented configuration option taking one int.
        unsafe {
            libsqlite3_sys::sqlite3_config(libsqlite3_sys::SQLITE_CONFIG_MEMSTATUS, 0);
        }
    });
    let write = access == Access::Write;
    let shown = format!("sqlite://{}", path.display());
    if !write && !path.exists() {
        return Err(Error::data(shown, "database file does not exist"));
    }
    // A write-ahead log that a killed writer left holds committed rows the file lacks:
    // an inspection reads through it rather than treat the file alone as the database.
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let unchanging = access == Access::Inspect
        && std::fs::metadata(std::path::Path::new(&wal)).map_or(true, |m| m.len() == 0);
    let mut opts = SqliteConnectOptions::from_str("sqlite://")
        .map_err(|e| db_error(&shown, e))?
        .filename(path)
        .create_if_missing(write)
        .read_only(!write)
        .busy_timeout(Duration::from_secs(60))
        .immutable(unchanging);
    // A reader sets no pragma that could change the file (journal_mode would).
    if write {
        // A chunk's pages stay in the cache from its INSERT to its read-back and commit:
        // with SQLite's default 2 MiB, a 100,000-row chunk spills its dirty pages to the
        // log mid-transaction and the read-back reads them back from the file. The cache
        // grows only as pages are used, up to this bound per connection.
        opts = opts
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .pragma("cache_size", format!("-{}", WRITE_CACHE_KIB));
    }
    if let Some(dir) = path.parent().filter(|_| write) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    crate::sql::pool_options::<sqlx::Sqlite>()
        .max_connections(max)
        .after_release(|conn, _| Box::pin(no_open_transaction(conn)))
        .connect_with(opts)
        .await
        .map_err(|e| db_error(shown, e))
}

/// Whether a connection given back to the pool may be kept: only with no transaction
/// open, in SQLite's view and in sqlx's. After a failed statement SQLite may have rolled
/// the transaction back itself (a full disk does), so sqlx's `ROLLBACK` fails and its
/// count of open transactions stays one too high; the next `begin` on that connection
/// then opens a savepoint, whose rollback leaves the transaction, and its write lock,
/// open. Every other connection to the file then waits for that lock, each statement up
/// to the busy timeout: a full disk once kept a run asleep for minutes. Such a
/// connection is closed instead, which ends whatever it holds.
async fn no_open_transaction(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    if conn.is_in_transaction() {
        return Ok(false);
    }
    let mut handle = conn.lock_handle().await?;
    // SAFETY: the handle is locked away from the worker thread while it is read.
    let autocommit =
        unsafe { libsqlite3_sys::sqlite3_get_autocommit(handle.as_raw_handle().as_ptr()) };
    Ok(autocommit != 0)
}

/// The columns of `table`, or an error listing the tables that do exist.
pub async fn table_columns(
    pool: &SqlitePool,
    table: &str,
    shown: &str,
) -> Result<Option<Vec<TableColumn>>> {
    let sql = format!("PRAGMA table_info({})", quote_ident(table));
    let rows = sqlx::query(crate::sql::stmt(sql))
        .fetch_all(pool)
        .await
        .map_err(|e| db_error(shown, e))?;
    if rows.is_empty() {
        return Ok(None);
    }
    rows.iter()
        .map(|r| {
            Ok(TableColumn {
                name: r.try_get("name")?,
                decl: r.try_get("type")?,
                not_null: r.try_get::<i64, _>("notnull")? != 0,
                pk: r.try_get("pk")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map(Some)
        .map_err(|e| db_error(shown, e))
}

/// Names of the user tables in the database, for "did you mean" messages.
pub async fn table_names(pool: &SqlitePool, shown: &str) -> Result<Vec<String>> {
    sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type IN ('table','view') AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .fetch_all(pool)
        .await
        .map_err(|e| db_error(shown, e))
}

/// A SQLite column's type affinity: how it converts the values stored in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affinity {
    /// `TEXT`: numbers are stored as their text.
    Text,
    /// `NUMERIC`: text that looks like a number is stored as one.
    Numeric,
    /// `INTEGER`: as `NUMERIC`.
    Integer,
    /// `REAL`: as `NUMERIC`, and integers are stored as floats.
    Real,
    /// `BLOB` (or no type): nothing is converted.
    Blob,
}

impl Affinity {
    /// The affinity of a column declared `decl`, by SQLite's rules in their order.
    pub fn of(decl: &str) -> Affinity {
        let d = decl.to_ascii_uppercase();
        if d.contains("INT") {
            Affinity::Integer
        } else if ["CHAR", "CLOB", "TEXT"].iter().any(|t| d.contains(t)) {
            Affinity::Text
        } else if d.contains("BLOB") || d.trim().is_empty() {
            Affinity::Blob
        } else if ["REAL", "FLOA", "DOUB"].iter().any(|t| d.contains(t)) {
            Affinity::Real
        } else {
            Affinity::Numeric
        }
    }

    /// Why a column of this affinity would change values of type `ty` as rowshift sends
    /// them (`None`: it stores them as sent). Text is sent for text, decimals, dates and
    /// times; integers for integers and booleans; floats for floats.
    pub fn converts(self, ty: crate::types::ColumnType) -> Option<&'static str> {
        use crate::types::ColumnType as T;
        match (ty, self) {
            (T::Bytes, _) | (_, Affinity::Blob) => None,
            (T::SmallInt | T::Int | T::BigInt | T::Boolean, Affinity::Real) => {
                Some("stores integers as floats, rounding those beyond 2^53")
            }
            (T::SmallInt | T::Int | T::BigInt | T::Boolean, _) => None,
            (T::Real | T::Double, Affinity::Text) => {
                Some("stores floats as text of 15 significant digits, rounding the digits beyond")
            }
            (T::Real | T::Double, _) => None,
            // Their text (`2024-01-31`, `12:30:00`, `2024-01-31 12:30:00`) never reads as
            // a number, so a `DATE` column (NUMERIC affinity) keeps it.
            (T::Date | T::Time | T::Timestamp | T::TimestampTz, _) => None,
            (_, Affinity::Text) => None,
            // Sent as the double whose shortest decimal is the value (see the SQLite sink):
            // exact up to 15 significant digits.
            (T::Decimal { precision, .. }, Affinity::Real) if precision <= 15 => None,
            (T::Decimal { .. }, Affinity::Real) => Some(
                "stores numbers as doubles, which hold 15 significant digits without rounding, fewer than the declared precision",
            ),
            (_, Affinity::Numeric | Affinity::Integer | Affinity::Real) => {
                Some("stores text that looks like a number as that number ('007' becomes 7)")
            }
        }
    }

    /// The affinity's name as SQLite's documentation gives it.
    pub fn name(self) -> &'static str {
        match self {
            Affinity::Text => "TEXT",
            Affinity::Numeric => "NUMERIC",
            Affinity::Integer => "INTEGER",
            Affinity::Real => "REAL",
            Affinity::Blob => "BLOB",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ColumnType;

    #[test]
    fn an_inspection_reads_rows_a_killed_writer_left_in_the_write_ahead_log() {
        let io = IoRuntime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live.db");
        let pool = connect(&io, &live, Access::Write, 1).unwrap();
        io.block_on(async {
            sqlx::raw_sql("CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1), (2)")
                .execute(&pool)
                .await
                .unwrap();
        });
        // The files as a writer killed now leaves them: the rows are in the log only.
        let left = dir.path().join("left.db");
        std::fs::copy(&live, &left).unwrap();
        std::fs::copy(
            dir.path().join("live.db-wal"),
            dir.path().join("left.db-wal"),
        )
        .unwrap();
        assert!(
            std::fs::metadata(dir.path().join("left.db-wal"))
                .unwrap()
                .len()
                > 0
        );
        let count = |path: &Path| -> i64 {
            let pool = connect(&io, path, Access::Inspect, 1).unwrap();
            let n = io.block_on(async {
                sqlx::query_scalar("SELECT count(*) FROM t")
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            });
            io.block_on(pool.close());
            n
        };
        assert_eq!(count(&left), 2);
        // Folded in and closed, the file alone holds them, and is read as unchanging.
        io.block_on(pool.close());
        assert!(!dir.path().join("live.db-wal").exists());
        assert_eq!(count(&live), 2);
        assert!(!dir.path().join("live.db-shm").exists());
    }

    #[test]
    fn affinity_follows_sqlite_s_rules_and_names_what_would_convert() {
        for (decl, want) in [
            ("INTEGER", Affinity::Integer),
            ("bigint", Affinity::Integer),
            ("POINT", Affinity::Integer),
            ("VARCHAR(20)", Affinity::Text),
            ("CLOB", Affinity::Text),
            ("BLOB", Affinity::Blob),
            ("", Affinity::Blob),
            ("DOUBLE PRECISION", Affinity::Real),
            ("FLOAT", Affinity::Real),
            ("DATE", Affinity::Numeric),
            ("DECIMAL(10,2)", Affinity::Numeric),
            ("BOOLEAN", Affinity::Numeric),
        ] {
            assert_eq!(Affinity::of(decl), want, "{decl}");
        }
        let n = Affinity::Numeric;
        assert!(n.converts(ColumnType::Text).is_some());
        assert!(
            n.converts(ColumnType::Decimal {
                precision: 10,
                scale: 2
            })
            .is_some()
        );
        assert_eq!(n.converts(ColumnType::Date), None);
        assert_eq!(n.converts(ColumnType::Timestamp), None);
        assert_eq!(n.converts(ColumnType::BigInt), None);
        assert_eq!(n.converts(ColumnType::Double), None);
        assert!(Affinity::Real.converts(ColumnType::BigInt).is_some());
        let numeric = |precision| ColumnType::Decimal {
            precision,
            scale: 2,
        };
        assert_eq!(Affinity::Real.converts(numeric(15)), None);
        assert!(Affinity::Real.converts(numeric(16)).is_some());
        assert!(Affinity::Integer.converts(numeric(10)).is_some());
        assert!(Affinity::Text.converts(ColumnType::Double).is_some());
        assert_eq!(Affinity::Text.converts(ColumnType::Text), None);
        assert_eq!(Affinity::Blob.converts(ColumnType::Text), None);
        assert_eq!(Affinity::Integer.converts(ColumnType::Bytes), None);
    }
}
