//! `[online]`: change capture during the copy, catch-up and cut-over (see
//! docs/online.md). None of it decides which rows are written, so none enters the
//! fingerprint.

use super::*;
use crate::config::OnlineConfig;

impl Walker<'_> {
    /// `[online]`: `enabled`, `max_lag_rows`, `batch_rows`, `cutover`, `lock_timeout_ms`,
    /// `lock_attempts`, and the catch-up's throttle: `max_rows_per_second`,
    /// `max_active_backends` and `max_replica_lag_ms` (PostgreSQL), `max_threads_running`
    /// (MySQL/MariaDB), and `reverse`, the reverse pipeline's file.
    pub(super) fn online(
        &mut self,
        s: &Section<'_>,
        source: Option<&SourceConfig>,
    ) -> OnlineConfig {
        self.check_keys(
            s,
            &[
                "enabled",
                "max_lag_rows",
                "batch_rows",
                "cutover",
                "lock_timeout_ms",
                "lock_attempts",
                "max_rows_per_second",
                "max_active_backends",
                "max_replica_lag_ms",
                "max_threads_running",
                "reverse",
            ],
        );
        let reverse = self.string(s, "reverse", false).map(|r| {
            let path = self.base_dir.join(&r.value);
            if !path.is_file() {
                self.error(
                    r.span.clone(),
                    format!(
                        "[online] reverse: no pipeline file {} (the reverse pipeline, found from this file's folder)",
                        path.display()
                    ),
                );
            }
            Spanned {
                value: path,
                span: r.span,
            }
        });
        let d = OnlineConfig::default();
        let enabled = self.bool(s, "enabled", false);
        let out = OnlineConfig {
            enabled,
            max_lag_rows: self.integer(s, "max_lag_rows", 0, d.max_lag_rows as i64) as u64,
            batch_rows: self.integer(s, "batch_rows", 1, d.batch_rows as i64) as usize,
            cutover: self.bool(s, "cutover", false),
            lock_timeout_ms: self.integer(s, "lock_timeout_ms", 1, d.lock_timeout_ms as i64) as u64,
            lock_attempts: self.integer(s, "lock_attempts", 1, d.lock_attempts as i64) as u32,
            max_rows_per_second: self.integer(s, "max_rows_per_second", 0, 0) as u64,
            max_active_backends: self.integer(s, "max_active_backends", 0, 0) as u64,
            max_replica_lag_ms: self.integer(s, "max_replica_lag_ms", 0, 0) as u64,
            max_threads_running: self.integer(s, "max_threads_running", 0, 0) as u64,
            reverse,
        };
        // A server's load is read in its own terms: a limit another database's source
        // cannot honour is an error, not a silent no-op.
        if let Some(src) = source {
            let (db, keys): (&str, &[&str]) = match src.location {
                Location::Postgres { .. } => ("PostgreSQL", &["max_threads_running"]),
                Location::Mysql { .. } => (
                    "MySQL/MariaDB",
                    &["max_active_backends", "max_replica_lag_ms"],
                ),
                Location::Sqlite { .. } => (
                    "SQLite",
                    &[
                        "max_active_backends",
                        "max_replica_lag_ms",
                        "max_threads_running",
                    ],
                ),
                Location::Files { .. } => (
                    "a file",
                    &[
                        "max_active_backends",
                        "max_replica_lag_ms",
                        "max_threads_running",
                    ],
                ),
            };
            for key in keys {
                if s.table.contains_key(key) {
                    let applies = if *key == "max_threads_running" {
                        "a MySQL/MariaDB source (its Threads_running)"
                    } else {
                        "a PostgreSQL source (pg_stat_activity, pg_stat_replication)"
                    };
                    self.error(
                        s.key_span(key),
                        format!("[online] {key} applies to {applies}; this source is {db}"),
                    );
                }
            }
        }
        if enabled && let Some(src) = source {
            let span = s.table.get("enabled").and_then(Item::span);
            if matches!(src.location, Location::Files { .. }) {
                self.error(
                    span.clone(),
                    "[online] enabled = true needs a database source (SQLite, PostgreSQL or MySQL/MariaDB): a file has no triggers to capture its changes",
                );
            } else if src.key.is_none() {
                self.error(
                    span,
                    "[online] enabled = true needs [source] key: the change log records the key of each changed row, and the catch-up reads the rows again by it",
                );
            }
        }
        out
    }
}
