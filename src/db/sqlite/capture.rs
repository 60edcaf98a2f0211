//! Change capture on a SQLite table (docs/online.md): three `AFTER` triggers (insert,
//! update, delete) that log the changed row's key (the old and the new key when an
//! update changes it) into `_rowshift_changes_<pipeline>` in the same file. SQLite has
//! one writer at a time, so the log's positions commit in order: no gap is ever filled
//! later.
//!
//! SQLite has no `TRUNCATE`: `DELETE FROM t` without `WHERE` is its way to empty a
//! table, and it skips the rows one by one (the "truncate optimization") only when the
//! table has no triggers. With the capture's triggers it deletes row by row, and each
//! delete is logged. Dropping the table and creating it again drops the triggers, which
//! a resumed run and the cut-over check.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sqlx::Row;
use sqlx::sqlite::SqlitePool;

use super::errors::error as db_error;
use super::{Access, connect};
use crate::Result;
use crate::config::OnlineConfig;
use crate::runtime::IoRuntime;
use crate::source::capture::{Capture, Change, Lag, Position, log_name, trigger_name};
use crate::sql::{quote_ident, stmt};

/// Change capture on one SQLite table.
pub struct SqliteCapture {
    path: PathBuf,
    io: IoRuntime,
    pool: OnceLock<SqlitePool>,
    table: String,
    key: Vec<String>,
    log: String,
    trigger: String,
}

impl SqliteCapture {
    /// Capture on `table` of the file `path` (key columns `key`) for `pipeline`.
    pub fn new(path: &Path, io: &IoRuntime, table: &str, key: &[String], pipeline: &str) -> Self {
        SqliteCapture {
            path: path.to_path_buf(),
            io: io.clone(),
            pool: OnceLock::new(),
            table: table.to_string(),
            key: key.to_vec(),
            log: log_name(pipeline),
            trigger: trigger_name(pipeline),
        }
    }

    fn here(&self) -> String {
        format!("sqlite://{} table {}", self.path.display(), self.table)
    }

    fn with<T>(&self, f: impl AsyncFnOnce(&SqlitePool) -> sqlx::Result<T>) -> Result<T> {
        let pool = match self.pool.get() {
            Some(p) => p,
            None => {
                let p = connect(&self.io, &self.path, Access::Write, 2)?;
                self.pool.get_or_init(|| p)
            }
        };
        self.io
            .block_on(f(pool))
            .map_err(|e| db_error(self.here(), e))
    }

    fn triggers(&self) -> [(String, &'static str); 3] {
        [
            (format!("{}_ins", self.trigger), "INSERT"),
            (format!("{}_upd", self.trigger), "UPDATE"),
            (format!("{}_del", self.trigger), "DELETE"),
        ]
    }

    fn log_row(&self, row: &str, when: &str) -> String {
        format!(
            "INSERT INTO {} ({}) SELECT {}{when};",
            quote_ident(&self.log),
            (0..self.key.len())
                .map(|i| format!("k{i}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.key
                .iter()
                .map(|k| format!("{row}.{}", quote_ident(k)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    fn body(&self, event: &str) -> String {
        match event {
            "INSERT" => self.log_row("NEW", ""),
            "DELETE" => self.log_row("OLD", ""),
            _ => {
                let changed = self
                    .key
                    .iter()
                    .map(|k| format!("OLD.{0} IS NOT NEW.{0}", quote_ident(k)))
                    .collect::<Vec<_>>()
                    .join(" OR ");
                format!(
                    "{} {}",
                    self.log_row("OLD", ""),
                    self.log_row("NEW", &format!(" WHERE {changed}"))
                )
            }
        }
    }

    /// The change log, emptied, and the triggers on table `on`; `replace`: triggers of
    /// the same names are dropped first (in a swap), else kept.
    fn install_statements(&self, on: &str, replace: bool) -> Vec<String> {
        let mut statements = vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {} (pos INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now')), {})",
                quote_ident(&self.log),
                (0..self.key.len())
                    .map(|i| format!("k{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            // A fresh copy follows, which holds every change committed so far.
            format!("DELETE FROM {}", quote_ident(&self.log)),
        ];
        for (name, event) in self.triggers() {
            if replace {
                statements.push(format!("DROP TRIGGER IF EXISTS {}", quote_ident(&name)));
            }
            statements.push(format!(
                "CREATE TRIGGER IF NOT EXISTS {} AFTER {event} ON {} FOR EACH ROW BEGIN {} END",
                quote_ident(&name),
                quote_ident(on),
                self.body(event)
            ));
        }
        statements
    }

    /// The pool's file, closed (a SQLite file is folded from its log on the last close).
    pub fn close(&self) {
        if let Some(p) = self.pool.get() {
            self.io.block_on(p.close());
        }
    }
}

impl Capture for SqliteCapture {
    fn describe(&self) -> String {
        format!("{} (change log {})", self.here(), self.log)
    }

    fn install(&self) -> Result<()> {
        let statements = self.install_statements(&self.table, false);
        self.with(async |pool| {
            let mut tx = pool.begin().await?;
            for s in statements {
                sqlx::raw_sql(stmt(s)).execute(&mut *tx).await?;
            }
            tx.commit().await
        })
    }

    fn install_sql(&self, on: &str) -> Result<Vec<String>> {
        Ok(self.install_statements(on, true))
    }

    fn installed(&self) -> Result<bool> {
        let names: Vec<String> = self.triggers().into_iter().map(|(n, _)| n).collect();
        let table = self.table.clone();
        self.with(async |pool| {
            let mut n = 0;
            for name in names {
                let found: i64 = sqlx::query_scalar(stmt(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name = ? AND tbl_name = ?"
                        .to_string(),
                ))
                .bind(name)
                .bind(&table)
                .fetch_one(pool)
                .await?;
                n += found;
            }
            Ok(n == 3)
        })
    }

    fn read(&self, after: Option<Position>, limit: usize) -> Result<Vec<Change>> {
        let from = after.map_or(0, |p| p.b);
        let keys: Vec<String> = (0..self.key.len())
            .map(|i| format!("CAST(k{i} AS TEXT)"))
            .collect();
        let sql = format!(
            "SELECT pos, {} FROM {} WHERE pos > ? ORDER BY pos LIMIT ?",
            keys.join(", "),
            quote_ident(&self.log)
        );
        let n = self.key.len();
        self.with(async |pool| {
            let rows = sqlx::query(stmt(sql))
                .bind(from)
                .bind(limit as i64)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(Change {
                        at: Position {
                            a: 0,
                            b: r.try_get(0)?,
                        },
                        key: (0..n)
                            .map(|i| r.try_get::<String, _>(1 + i))
                            .collect::<sqlx::Result<_>>()?,
                    })
                })
                .collect()
        })
    }

    fn truncated(&self) -> Result<Option<String>> {
        // Nothing empties a table past its triggers (see the module's notes).
        Ok(None)
    }

    fn busy(&self, _limits: &OnlineConfig) -> Result<Option<String>> {
        // A file has no server whose load could be read; the rate limit still holds.
        Ok(None)
    }

    fn log_exists(&self) -> Result<bool> {
        let log = self.log.clone();
        self.with(async |pool| {
            let n: i64 = sqlx::query_scalar(stmt(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?".to_string(),
            ))
            .bind(log)
            .fetch_one(pool)
            .await?;
            Ok(n > 0)
        })
    }

    fn lag(&self, after: Option<Position>) -> Result<Lag> {
        let from = after.map_or(0, |p| p.b);
        let sql = format!(
            "SELECT count(*), COALESCE((julianday('now') - julianday(min(at))) * 86400.0, 0.0) FROM {} WHERE pos > ?",
            quote_ident(&self.log)
        );
        let last = format!("SELECT max(pos) FROM {}", quote_ident(&self.log));
        self.with(async |pool| {
            let (rows, oldest): (i64, f64) =
                sqlx::query_as(stmt(sql)).bind(from).fetch_one(pool).await?;
            let last: Option<i64> = sqlx::query_scalar(stmt(last)).fetch_one(pool).await?;
            Ok(Lag {
                rows: rows as u64,
                oldest_seconds: oldest.max(0.0),
                last: last.map(|b| Position { a: 0, b }),
            })
        })
    }

    fn prune(&self, upto: Position) -> Result<()> {
        let sql = format!("DELETE FROM {} WHERE pos <= ?", quote_ident(&self.log));
        self.with(async |pool| {
            sqlx::query(stmt(sql))
                .bind(upto.b)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }

    fn drop_trigger_sql(&self) -> Vec<String> {
        self.triggers()
            .into_iter()
            .map(|(name, _)| format!("DROP TRIGGER IF EXISTS {}", quote_ident(&name)))
            .collect()
    }

    fn drop_triggers(&self) -> Result<()> {
        let statements = self.drop_trigger_sql();
        self.with(async |pool| {
            for s in statements {
                sqlx::raw_sql(stmt(s)).execute(pool).await?;
            }
            Ok(())
        })
    }

    fn remove(&self) -> Result<()> {
        let mut statements = self.drop_trigger_sql();
        statements.push(format!("DROP TABLE IF EXISTS {}", quote_ident(&self.log)));
        self.with(async |pool| {
            for s in statements {
                sqlx::raw_sql(stmt(s)).execute(pool).await?;
            }
            Ok(())
        })
    }
}
