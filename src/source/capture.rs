//! Change capture on a database source table: the triggers that log the key of every
//! row inserted, updated or deleted into a change log, and reading that log in order.
//! Each database implements [`Capture`] in its own folder (`db/<db>/capture.rs`); the
//! catch-up and cut-over (`crate::online`) use it without naming a driver.

use crate::Result;
use crate::config::OnlineConfig;

/// A place in a change log. Changes are ordered by `(a, b)`: PostgreSQL's is (the
/// writing transaction's id, the log's sequence), so that a change is read only once
/// every change before it is committed; the others use `a = 0` and their log's own
/// sequence, whose values commit in order or whose gaps are waited out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
pub struct Position {
    /// The major part.
    pub a: i64,
    /// The minor part.
    pub b: i64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.a == 0 {
            write!(f, "{}", self.b)
        } else {
            write!(f, "{}/{}", self.a, self.b)
        }
    }
}

/// One logged change: where it is in the log and the changed row's key, as the source's
/// [`crate::source::Source::read_keys`] takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its place in the log.
    pub at: Position,
    /// The key's parts as text, in key order.
    pub key: Vec<String>,
}

/// How far the replay is behind the source.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Lag {
    /// Changes logged after the replayed position.
    pub rows: u64,
    /// Seconds since the oldest of them was logged (0 when there is none).
    pub oldest_seconds: f64,
    /// The last position logged.
    pub last: Option<Position>,
}

/// Change capture on one source table, for one pipeline.
pub trait Capture: Send + Sync {
    /// The source table and its log, for messages.
    fn describe(&self) -> String;

    /// Creates the change log and the triggers if they are missing, and empties the log
    /// (a fresh copy follows, which holds every change logged so far). Idempotent.
    fn install(&self) -> Result<()>;

    /// The statements that install this capture inside a cut-over's swap, on the swap's
    /// own connection, before any write can reach the table: the change log created if
    /// missing and emptied, the triggers created. `on` is the table's name when they
    /// run. PostgreSQL and SQLite run them after the renames, in the swap's transaction
    /// (`on` is this capture's table); MySQL/MariaDB, whose DDL cannot share a
    /// transaction, before its `RENAME TABLE`, on the new table by the name it has then
    /// (triggers follow a renamed table). What they need to know (MySQL: the table's
    /// InnoDB id) is read on the capture's own connection.
    fn install_sql(&self, on: &str) -> Result<Vec<String>>;

    /// Whether the triggers are in place.
    fn installed(&self) -> Result<bool>;

    /// Up to `limit` changes after `after` (from the start when `None`), in log order,
    /// only as far as every change before them is committed: no change can later
    /// appear before the last one returned. A logged `TRUNCATE` ends the read: nothing
    /// after it is returned (see [`Capture::truncated`]).
    fn read(&self, after: Option<Position>, limit: usize) -> Result<Vec<Change>>;

    /// A `TRUNCATE` of the source table since the capture was installed, which the log
    /// cannot follow by key: when and how it was seen, or `None`. PostgreSQL logs it
    /// (an `AFTER TRUNCATE` trigger); MySQL/MariaDB fire no trigger on it and detect it
    /// after the fact; SQLite has no statement that empties a table past its triggers.
    fn truncated(&self) -> Result<Option<String>>;

    /// The changes logged after `after`. An error when the log does not exist.
    fn lag(&self, after: Option<Position>) -> Result<Lag>;

    /// Whether the change log exists. [`Capture::install`] creates it; the cut-over keeps
    /// it; `finalize` and `down` drop it. A run killed before it installed its capture
    /// left none, and `status` must then say so rather than fail on the missing table.
    fn log_exists(&self) -> Result<bool>;

    /// Why the source server is too busy for the catch-up to go on now, by the limits
    /// of `limits` (`[online] max_active_backends` and `max_replica_lag_ms` on
    /// PostgreSQL, `max_threads_running` on MySQL/MariaDB; 0 is no limit), or `None`.
    fn busy(&self, limits: &OnlineConfig) -> Result<Option<String>>;

    /// Forgets the changes up to `upto`, replayed and recorded in the target.
    fn prune(&self, upto: Position) -> Result<()>;

    /// The statements that drop the triggers (the cut-over runs them in its
    /// transaction, where the database allows; in its own otherwise).
    fn drop_trigger_sql(&self) -> Vec<String>;

    /// Drops the triggers, if there.
    fn drop_triggers(&self) -> Result<()>;

    /// Drops the triggers and the change log.
    fn remove(&self) -> Result<()>;
}

/// The change log's name for `pipeline`: `_rowshift_changes_<pipeline>`, with characters
/// a name may not hold in every database (`-`, `.`) as `_`.
pub fn log_name(pipeline: &str) -> String {
    format!("_rowshift_changes_{}", plain(pipeline))
}

/// The prefix of the triggers' names for `pipeline`.
pub fn trigger_name(pipeline: &str) -> String {
    format!("_rowshift_capture_{}", plain(pipeline))
}

fn plain(pipeline: &str) -> String {
    pipeline
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
