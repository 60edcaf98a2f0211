//! Change capture on a MySQL/MariaDB table (docs/online.md): three `AFTER` triggers
//! (insert, update, delete) that log the changed row's key (the old and the new key
//! when an update changes it) into `_rowshift_changes_<pipeline>` in the source's
//! database.
//!
//! InnoDB hands out `AUTO_INCREMENT` values when rows are inserted, not when their
//! transactions commit, so the log may show 12 while 11 is not committed yet. The log
//! is read up to its first gap. A gap is passed over only once it is known to stay one
//! (its transaction rolled back): when the log is read again after every InnoDB
//! transaction that started no later than the read that found the gap has ended
//! (`information_schema.INNODB_TRX`), and the gap is still there. Only transactions that
//! have modified a row count: a position is taken by the change log's trigger, which runs
//! after its row was written, so a transaction that holds a position not yet visible has
//! modified at least one row. Read-only and idle transactions, which a busy server always
//! has, do not hold the drain back.

use std::sync::Mutex;

use sqlx::Row;
use sqlx::mysql::MySqlPool;

use super::errors::error as db_error;
use super::{MyClient, qualified, quote};
use crate::Result;
use crate::config::{DbOptions, OnlineConfig, SecretUrl};
use crate::runtime::IoRuntime;
use crate::source::capture::{Capture, Change, Lag, Position, log_name, trigger_name};
use crate::sql::{quote_literal, stmt};

/// Change capture on one MySQL/MariaDB table.
pub struct MyCapture {
    client: MyClient,
    database: String,
    table: String,
    key: Vec<String>,
    log: String,
    trigger: String,
    pipeline: String,
    /// The first gap the last read found, and the server's time (to the second) just
    /// after that read.
    gap: Mutex<Option<(i64, String)>>,
}

impl MyCapture {
    /// Capture on `database.table` (key columns `key`) for `pipeline`.
    pub fn new(
        url: &SecretUrl,
        db: &DbOptions,
        io: &IoRuntime,
        database: &str,
        table: &str,
        key: &[String],
        pipeline: &str,
    ) -> Self {
        MyCapture {
            client: MyClient::new(url, db, io),
            database: database.to_string(),
            table: table.to_string(),
            key: key.to_vec(),
            log: qualified(database, &log_name(pipeline)),
            trigger: trigger_name(pipeline),
            pipeline: pipeline.to_string(),
            gap: Mutex::new(None),
        }
    }

    fn here(&self) -> String {
        format!(
            "{} table {}.{}",
            self.client.shown, self.database, self.table
        )
    }

    fn source(&self) -> String {
        qualified(&self.database, &self.table)
    }

    fn with<T>(&self, f: impl AsyncFnOnce(&MySqlPool) -> sqlx::Result<T>) -> Result<T> {
        let pool = self.client.pool()?;
        self.client
            .io()
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

    fn log_row(&self, row: &str) -> String {
        format!(
            "INSERT INTO {} ({}) VALUES ({})",
            self.log,
            (0..self.key.len())
                .map(|i| format!("k{i}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.key
                .iter()
                .map(|k| format!("{row}.{}", quote(k)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    fn body(&self, event: &str) -> String {
        match event {
            "INSERT" => self.log_row("NEW"),
            "DELETE" => self.log_row("OLD"),
            _ => {
                let same = self
                    .key
                    .iter()
                    .map(|k| format!("OLD.{0} <=> NEW.{0}", quote(k)))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                format!(
                    "BEGIN {}; IF NOT ({same}) THEN {}; END IF; END",
                    self.log_row("OLD"),
                    self.log_row("NEW")
                )
            }
        }
    }

    /// `CREATE TABLE IF NOT EXISTS` for the change log, its key columns typed like
    /// those of `table` (qualified).
    fn create_log(&self, table: &str) -> String {
        let keys: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{} AS k{i}", quote(k)))
            .collect();
        format!(
            "CREATE TABLE IF NOT EXISTS {} (pos BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB SELECT {} FROM {table} WHERE FALSE",
            self.log,
            keys.join(", "),
        )
    }

    fn create_trigger(&self, name: &str, event: &str, table: &str) -> String {
        format!(
            "CREATE TRIGGER {} AFTER {event} ON {table} FOR EACH ROW {}",
            qualified(&self.database, name),
            self.body(event)
        )
    }

    /// The statements that record `id` as the table's InnoDB id for this change log.
    fn record_table_id(&self, id: u64) -> Vec<String> {
        let ids = self.ids();
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {ids} (log VARCHAR(191) NOT NULL PRIMARY KEY, table_id BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB"
            ),
            format!(
                "REPLACE INTO {ids} (log, table_id) VALUES ({}, {id})",
                quote_literal(&log_name(&self.pipeline))
            ),
        ]
    }
}

impl Capture for MyCapture {
    fn describe(&self) -> String {
        format!("{} (change log {})", self.here(), self.log)
    }

    fn install(&self) -> Result<()> {
        let there = self.existing()?;
        let mut statements = vec![self.create_log(&self.source())];
        for (name, event) in self.triggers() {
            if !there.contains(&name) {
                statements.push(self.create_trigger(&name, event, &self.source()));
            }
        }
        // A fresh copy follows, which holds every change committed so far.
        statements.push(format!("DELETE FROM {}", self.log));
        self.with(async |pool| {
            for s in statements {
                sqlx::raw_sql(stmt(s)).execute(pool).await?;
            }
            Ok(())
        })?;
        // The table's id from now on: a TRUNCATE gives it another.
        let record = self.record_table_id(self.table_id(&self.table)?);
        self.with(async |pool| {
            for s in record {
                sqlx::raw_sql(stmt(s)).execute(pool).await?;
            }
            Ok(())
        })
    }

    fn install_sql(&self, on: &str) -> Result<Vec<String>> {
        // Run before the swap's RENAME, on the new table by the name it has then: its
        // InnoDB id stays with it through the rename.
        let table = qualified(&self.database, on);
        let mut statements = vec![self.create_log(&table)];
        for (name, event) in self.triggers() {
            statements.push(format!(
                "DROP TRIGGER IF EXISTS {}",
                qualified(&self.database, &name)
            ));
            statements.push(self.create_trigger(&name, event, &table));
        }
        statements.push(format!("DELETE FROM {}", self.log));
        statements.extend(self.record_table_id(self.table_id(on)?));
        Ok(statements)
    }

    fn truncated(&self) -> Result<Option<String>> {
        let (ids, log) = (self.ids(), log_name(&self.pipeline));
        let recorded: Option<u64> = self.with(async |pool| {
            match sqlx::query_scalar(stmt(format!(
                "SELECT CAST(table_id AS UNSIGNED) FROM {ids} WHERE log = ?"
            )))
            .bind(log)
            .fetch_optional(pool)
            .await
            {
                Err(e)
                    if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42S02") =>
                {
                    Ok(None)
                }
                other => other,
            }
        })?;
        let Some(then) = recorded else {
            return Ok(Some(
                "the change log does not record the source table's InnoDB id, so a TRUNCATE (which fires no trigger) could not be detected".to_string(),
            ));
        };
        let now = self.table_id(&self.table)?;
        Ok((now != then).then(|| {
            format!(
                "the source table's InnoDB table id changed from {then} to {now} since the capture began: it was truncated (TRUNCATE fires no trigger, so the rows it removed are not in the change log) or rebuilt (OPTIMIZE TABLE, ALTER TABLE ... FORCE), which cannot be told apart"
            )
        }))
    }

    fn installed(&self) -> Result<bool> {
        Ok(self.existing()?.len() == 3)
    }

    fn read(&self, after: Option<Position>, limit: usize) -> Result<Vec<Change>> {
        let from = after.map_or(0, |p| p.b);
        let keys: Vec<String> = (0..self.key.len())
            .map(|i| format!("CAST(k{i} AS CHAR)"))
            .collect();
        let sql = format!(
            "SELECT pos, {} FROM {} WHERE pos > ? ORDER BY pos LIMIT ?",
            keys.join(", "),
            self.log
        );
        let seen = self.gap.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let n = self.key.len();
        let (changes, settled, now) = self.with(async |pool| {
            // Read before the log: a transaction that ended by now shows in the log read
            // after.
            let settled = match &seen {
                Some((_, at)) => {
                    let running: i64 = sqlx::query_scalar(stmt(
                        "SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_started <= ? AND trx_rows_modified > 0"
                            .to_string(),
                    ))
                    .bind(at)
                    .fetch_one(pool)
                    .await?;
                    running == 0
                }
                None => false,
            };
            let rows = sqlx::query(stmt(sql))
                .bind(from)
                .bind(limit as i64)
                .fetch_all(pool)
                .await?;
            let now: String = sqlx::query_scalar(stmt("SELECT CAST(NOW() AS CHAR)".to_string()))
                .fetch_one(pool)
                .await?;
            let changes = rows
                .iter()
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
                .collect::<sqlx::Result<Vec<_>>>()?;
            Ok((changes, settled, now))
        })?;
        let mut out = Vec::with_capacity(changes.len());
        let mut expect = after.map(|p| p.b + 1);
        let mut gap = None;
        for c in changes {
            if let Some(e) = expect
                && c.at.b != e
            {
                let known = seen.as_ref().filter(|(g, _)| *g == e);
                if !(known.is_some() && settled) {
                    // The time the gap was first seen stays: whatever holds its position
                    // started before then. Taking a later time each read would wait for
                    // transactions that started after the gap, and on a busy server never
                    // end the wait.
                    let since = known.map_or_else(|| now.clone(), |(_, at)| at.clone());
                    gap = Some((e, since));
                    break;
                }
            }
            expect = Some(c.at.b + 1);
            out.push(c);
        }
        // The first read has no place to count from: it starts where the log starts,
        // which is no gap, unless a position before the first is still running.
        if after.is_none() && !out.is_empty() && !settled {
            let first = out[0].at.b;
            let lowest: Option<i64> = self.with(async |pool| {
                sqlx::query_scalar(stmt(
                    "SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_started <= CAST(? AS DATETIME) AND trx_rows_modified > 0"
                        .to_string(),
                ))
                .bind(&now)
                .fetch_one(pool)
                .await
                .map(|n: i64| (n > 0).then_some(first))
            })?;
            if lowest.is_some() {
                // Wait for those transactions: one of them may hold a lower position. As
                // for a gap, the time of the first sighting stays.
                let since = seen
                    .as_ref()
                    .filter(|(g, _)| *g == first)
                    .map_or(now, |(_, at)| at.clone());
                *self.gap.lock().unwrap_or_else(|p| p.into_inner()) = Some((first, since));
                return Ok(Vec::new());
            }
        }
        *self.gap.lock().unwrap_or_else(|p| p.into_inner()) = gap;
        Ok(out)
    }

    fn busy(&self, limits: &OnlineConfig) -> Result<Option<String>> {
        let most = limits.max_threads_running;
        if most == 0 {
            return Ok(None);
        }
        // As pt-online-schema-change's --max-load reads it: the server's count, which
        // includes the thread that asks.
        let running: u64 = self.with(async |pool| {
            let (_, value): (String, String) = sqlx::query_as(stmt(
                "SHOW GLOBAL STATUS LIKE 'Threads_running'".to_string(),
            ))
            .fetch_one(pool)
            .await?;
            Ok(value.trim().parse().unwrap_or(0))
        })?;
        Ok((running > most).then(|| {
            format!("Threads_running is {running}, over [online] max_threads_running = {most}")
        }))
    }

    fn log_exists(&self) -> Result<bool> {
        let (database, log) = (self.database.clone(), log_name(&self.pipeline));
        self.with(async |pool| {
            let n: i64 = sqlx::query_scalar(stmt(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?"
                    .to_string(),
            ))
            .bind(database)
            .bind(log)
            .fetch_one(pool)
            .await?;
            Ok(n > 0)
        })
    }

    fn lag(&self, after: Option<Position>) -> Result<Lag> {
        let from = after.map_or(0, |p| p.b);
        let sql = format!(
            "SELECT COUNT(*), CAST(COALESCE(TIMESTAMPDIFF(MICROSECOND, MIN(at), NOW(6)), 0) AS SIGNED), MAX(pos) FROM {} WHERE pos > ?",
            self.log
        );
        let last = format!("SELECT MAX(pos) FROM {}", self.log);
        self.with(async |pool| {
            let (rows, micros, _): (i64, i64, Option<i64>) =
                sqlx::query_as(stmt(sql)).bind(from).fetch_one(pool).await?;
            let last: Option<i64> = sqlx::query_scalar(stmt(last)).fetch_one(pool).await?;
            Ok(Lag {
                rows: rows as u64,
                oldest_seconds: micros as f64 / 1e6,
                last: last.map(|b| Position { a: 0, b }),
            })
        })
    }

    fn prune(&self, upto: Position) -> Result<()> {
        // The last row stays: InnoDB may hand out its AUTO_INCREMENT value again after a
        // restart if the table is empty, and positions must only grow.
        let sql = format!("DELETE FROM {} WHERE pos < ?", self.log);
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
            .map(|(name, _)| {
                format!(
                    "DROP TRIGGER IF EXISTS {}",
                    qualified(&self.database, &name)
                )
            })
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
        statements.push(format!("DROP TABLE IF EXISTS {}", self.log));
        let (ids, log) = (self.ids(), log_name(&self.pipeline));
        self.with(async |pool| {
            for s in statements {
                sqlx::raw_sql(stmt(s)).execute(pool).await?;
            }
            match sqlx::query(stmt(format!("DELETE FROM {ids} WHERE log = ?")))
                .bind(log)
                .execute(pool)
                .await
            {
                Err(e)
                    if e.as_database_error().and_then(|d| d.code()).as_deref() != Some("42S02") =>
                {
                    Err(e)
                }
                _ => Ok(()),
            }
        })
    }
}

impl MyCapture {
    /// The table that keeps each change log's source table id.
    fn ids(&self) -> String {
        qualified(&self.database, "_rowshift_capture")
    }

    /// The source table's InnoDB table id. Reading it needs the `PROCESS` privilege,
    /// as the gap check does.
    fn table_id(&self, table: &str) -> Result<u64> {
        let name = format!(
            "{}/{}",
            innodb_file_name(&self.database),
            innodb_file_name(table)
        );
        let here = self.here();
        let found: Option<u64> = self.with(async |pool| {
            let mut last = None;
            // MariaDB's name for the table, then MySQL 8's.
            for view in ["INNODB_SYS_TABLES", "INNODB_TABLES"] {
                match sqlx::query_scalar::<_, u64>(stmt(format!(
                    "SELECT CAST(TABLE_ID AS UNSIGNED) FROM information_schema.{view} WHERE NAME = ?"
                )))
                .bind(&name)
                .fetch_optional(pool)
                .await
                {
                    Ok(id) => return Ok(id),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.expect("tried"))
        })?;
        found.ok_or_else(|| {
            crate::Error::Unsupported(format!(
                "{here}: no InnoDB table id found for {name} in information_schema: an online move needs an InnoDB source table (its id tells a TRUNCATE, which fires no trigger) and the PROCESS privilege"
            ))
        })
    }

    /// The names of the capture's triggers that are on its table. By exact name: a
    /// prefix would also match the triggers of a pipeline whose name extends this one's
    /// (`users` and `users_down`, the reverse capture after a cut-over).
    fn existing(&self) -> Result<Vec<String>> {
        let (db, table) = (self.database.clone(), self.table.clone());
        let names: Vec<String> = self.triggers().into_iter().map(|(n, _)| n).collect();
        self.with(async |pool| {
            let mut q = sqlx::query_scalar(stmt(
                "SELECT CAST(TRIGGER_NAME AS CHAR) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? AND EVENT_OBJECT_TABLE = ? AND TRIGGER_NAME IN (?, ?, ?)"
                    .to_string(),
            ))
            .bind(db)
            .bind(table);
            for n in names {
                q = q.bind(n);
            }
            q.fetch_all(pool).await
        })
    }
}

/// A database or table name as InnoDB's data dictionary spells it: letters, digits and
/// `_` as they are, any other ASCII character as `@` and four hex digits (MariaDB's
/// "identifier to file name mapping"). Other characters map through tables this does
/// not carry: such a table is not found, and the capture says so at install.
fn innodb_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || !c.is_ascii() {
                c.to_string()
            } else {
                format!("@{:04x}", c as u32)
            }
        })
        .collect()
}
