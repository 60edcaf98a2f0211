//! `[online]`: change capture during the copy, catch-up and cut-over (see
//! docs/online.md). None of it decides which rows are written, so none enters the
//! fingerprint.

use super::*;
use crate::config::OnlineConfig;

impl Walker<'_> {
    /// `[online]`: `enabled`, `max_lag_rows`, `batch_rows`, `cutover`, `lock_timeout_ms`,
    /// `lock_attempts`.
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
            ],
        );
        let d = OnlineConfig::default();
        let enabled = self.bool(s, "enabled", false);
        let out = OnlineConfig {
            enabled,
            max_lag_rows: self.integer(s, "max_lag_rows", 0, d.max_lag_rows as i64) as u64,
            batch_rows: self.integer(s, "batch_rows", 1, d.batch_rows as i64) as usize,
            cutover: self.bool(s, "cutover", false),
            lock_timeout_ms: self.integer(s, "lock_timeout_ms", 1, d.lock_timeout_ms as i64) as u64,
            lock_attempts: self.integer(s, "lock_attempts", 1, d.lock_attempts as i64) as u32,
        };
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
