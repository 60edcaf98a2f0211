//! Checkpoints: the chunk plan and each chunk's state, kept so that an interrupted run
//! resumes where it stopped with no row lost or written twice.
//!
//! The store is a SQLite database, or two tables in a PostgreSQL target's schema or a
//! MySQL target's database. For a
//! database target it lives *in the target*, and a chunk's rows and its "done" mark commit
//! in one transaction. For a file target it lives in `.rowshift/` beside the pipeline file;
//! part files are renamed into place before the mark is written, and a chunk redone after
//! a crash rewrites the same part file.

pub(crate) mod lock;
pub mod replay;
pub mod sql;
pub mod store;
pub mod tables;

use serde::{Deserialize, Serialize};

use std::time::Duration;

pub use self::lock::{Holder, RunLock, SessionLock};
pub use self::store::SqlStore;
pub use self::tables::Tables;
use crate::Result;
use crate::chunk::Chunk;
use crate::chunk::ChunkCounts;

/// Where a chunk is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChunkState {
    /// Not started (or interrupted and to be redone).
    Pending,
    /// Claimed by a worker; a run that died leaves it here, and resume redoes it.
    Running,
    /// Committed.
    Done,
    /// Failed permanently; `retry` runs it again.
    Failed,
}

impl ChunkState {
    /// The state's name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkState::Pending => "pending",
            ChunkState::Running => "running",
            ChunkState::Done => "done",
            ChunkState::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => ChunkState::Pending,
            "running" => ChunkState::Running,
            "done" => ChunkState::Done,
            "failed" => ChunkState::Failed,
            _ => return None,
        })
    }
}

/// One chunk's record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkRecord {
    /// The chunk, as planned.
    pub chunk: Chunk,
    /// Its state.
    pub state: ChunkState,
    /// How many times a worker claimed it.
    pub attempts: u32,
    /// Row counts of the committed attempt.
    pub counts: ChunkCounts,
    /// Seconds the committed attempt took.
    pub seconds: f64,
    /// Order-independent checksum of the rows written ([`crate::check::checksum`]).
    pub checksum: u64,
    /// The last error, if it failed.
    pub last_error: Option<String>,
    /// The process that holds the chunk or committed it (`host:pid`), when the store
    /// recorded one.
    pub worker: Option<String>,
    /// When the last attempt claimed the chunk (milliseconds since 1970, the claiming
    /// process's clock).
    pub started_ms: Option<i64>,
    /// When the chunk was marked done (milliseconds since 1970, the committing
    /// process's clock).
    pub finished_ms: Option<i64>,
    /// Seconds the committed attempt spent reading its rows back.
    pub verify_seconds: f64,
    /// Until when the claim of a process of a shared run (`run --worker`) holds
    /// (milliseconds since 1970, the database's clock); `None` for a run's own claim,
    /// which its run lock guards.
    pub lease_ms: Option<i64>,
}

/// One process of a run shared by several (`rowshift run --worker`), as the checkpoint
/// records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerRecord {
    /// `host:pid`.
    pub id: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// When it joined (milliseconds since 1970, the database's clock).
    pub started_ms: i64,
    /// Its last heartbeat (milliseconds since 1970, the database's clock).
    pub heartbeat_ms: i64,
    /// `running`, `finished` (it found no chunk left) or `stopped` (it ended early:
    /// an error, Ctrl-C).
    pub state: String,
    /// Chunks it committed.
    pub chunks_done: u64,
    /// Rows those chunks read.
    pub rows_read: u64,
    /// Rows those chunks wrote.
    pub rows_written: u64,
    /// The database's clock when this was read, to tell how old the heartbeat is.
    pub now_ms: i64,
}

impl WorkerRecord {
    /// Whether its last heartbeat is within `lease` of when it was read, and it has not
    /// said it ended.
    pub fn live(&self, lease: Duration) -> bool {
        self.state == "running" && self.now_ms - self.heartbeat_ms <= lease.as_millis() as i64
    }
}

/// A run's recorded plan and progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Checkpoint {
    /// The pipeline's fingerprint when the plan was made.
    pub fingerprint: String,
    /// The pipeline's settings then, to say what changed.
    pub settings: Vec<(String, String)>,
    /// When the plan was made (UTC, RFC 3339).
    pub created_at: String,
    /// Every chunk, by id.
    pub chunks: Vec<ChunkRecord>,
}

/// What marks a chunk done.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DoneMark {
    /// The chunk's id.
    pub chunk: usize,
    /// Its row counts.
    pub counts: ChunkCounts,
    /// Seconds it took.
    pub seconds: f64,
    /// Checksum of the rows written.
    pub checksum: u64,
    /// The token of the claim the chunk was written under ([`CheckpointStore::claim`]):
    /// the mark applies only while the chunk is still running under it, so a run whose
    /// chunk another run took over cannot commit it.
    pub claim: u64,
    /// Seconds spent reading the rows back ([`DoneMark::verified`]).
    pub verify_seconds: f64,
    /// When the chunk was finished (milliseconds since 1970, [`unix_ms`]).
    pub finished_ms: i64,
}

/// This process's clock in milliseconds since 1970, as chunk times are recorded.
pub fn unix_ms() -> i64 {
    (lock::unix_now() * 1000.0) as i64
}

impl DoneMark {
    /// This mark with the read-back time the sink measured (`None`: nothing was read
    /// back), for sinks that read back inside the commit that writes the mark.
    pub fn verified(&self, seconds: Option<f64>) -> DoneMark {
        DoneMark {
            verify_seconds: seconds.unwrap_or(self.verify_seconds),
            ..*self
        }
    }
}

/// A fresh token for a claim of a chunk ([`CheckpointStore::claim`]).
pub fn new_claim() -> u64 {
    lock::token()
}

/// Part of the message of a done or failed mark refused because the writer's claim on
/// the chunk is gone (see [`is_claim_lost`]).
pub const CLAIM_LOST: &str =
    "another run took this chunk over (its claim in the checkpoint is no longer this run's)";

/// Whether `e` says a chunk's claim was lost to another run: the attempt is rolled back,
/// and neither retrying it nor marking it failed is this run's to do.
pub fn is_claim_lost(e: &crate::Error) -> bool {
    match e {
        crate::Error::Chunk { source, .. } => is_claim_lost(source),
        crate::Error::Unsupported(m) => m.contains(CLAIM_LOST),
        _ => false,
    }
}

/// Durable chunk bookkeeping. Every method is atomic: after a crash the store holds either
/// the old or the new state of what the call changed.
pub trait CheckpointStore: Send + Sync {
    /// Where the store lives, for messages.
    fn describe(&self) -> String;

    /// The recorded run, or `None` if there is none. Never creates anything.
    fn load(&self) -> Result<Option<Checkpoint>>;

    /// Records a new plan, every chunk pending, replacing any earlier one.
    fn create(
        &self,
        fingerprint: &str,
        settings: &[(String, String)],
        chunks: &[Chunk],
    ) -> Result<()>;

    /// Takes the pipeline's run lock, waiting up to `wait` for a run that holds it (and
    /// telling `waiting` who that is). Refused, naming the holder (host, pid, since
    /// when), if it is still held then. Taken before anything else of a run touches the
    /// target.
    fn lock(&self, wait: Duration, waiting: &mut dyn FnMut(&Holder)) -> Result<RunLock>;

    /// The live run holding the pipeline's lock, if any. Reads only.
    fn holder(&self) -> Result<Option<Holder>>;

    /// Marks a chunk running under the claim `token` and counts the attempt, unless it is
    /// done: returns `false` then (another run committed it). The caller holds the run
    /// lock, so a chunk found running was left by a run that is gone.
    fn claim(&self, chunk: usize, token: u64) -> Result<bool>;

    /// Marks a chunk done, if it still runs under `mark.claim`; else fails with a
    /// message that [`is_claim_lost`] recognises. Sinks that commit the mark with the
    /// rows do not call this.
    fn finish(&self, mark: &DoneMark) -> Result<()>;

    /// Marks a chunk failed with its error, if it still runs under the claim `token`;
    /// otherwise changes nothing (the run that took it over owns it now).
    fn fail(&self, chunk: usize, token: u64, error: &str) -> Result<()>;

    /// Moves `written` + `filtered` + `gone` rows of a done chunk out of its rejected
    /// count, `written` into its written and `filtered` into its filtered count: what
    /// `retry --rejects` did with its quarantined rows.
    fn requeued(&self, chunk: usize, written: u64, filtered: u64, gone: u64) -> Result<()>;

    /// Records that the run goes on under changed settings (changes that only widen what
    /// passes, see [`Change::widens`]): its fingerprint and settings become these.
    fn record_settings(&self, fingerprint: &str, settings: &[(String, String)]) -> Result<()>;

    /// Marks chunks pending again (for `retry`).
    fn reset(&self, chunks: &[usize]) -> Result<()>;

    /// Marks done chunks pending again: `verify --repair` found their rows wrong and
    /// removes them next. Chunks that are not done are left as they are.
    fn redo(&self, chunks: &[usize]) -> Result<()>;

    /// Forgets the run.
    fn discard(&self) -> Result<()>;

    /// Writes checkpoint changes the store holds back (a SQLite target's ledger), so
    /// that [`CheckpointStore::load`] sees them.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// The processes of a shared run (`run --worker`) the store has recorded, newest
    /// first; none for a store that cannot be shared.
    fn workers(&self) -> Result<Vec<WorkerRecord>> {
        Ok(Vec::new())
    }

    /// The store as a work queue that processes on several machines can share (a
    /// PostgreSQL or MySQL target's tables); `None` for one that only a single
    /// process can use (SQLite, files).
    fn queue(&self) -> Option<&dyn WorkQueue> {
        None
    }

    /// Releases the store's connections once a command is done with it. Called before
    /// [`crate::sink::Sink::finish`]: a store in a SQLite target shares its file, and the
    /// last connection to close is the one that folds the write-ahead log into the file.
    fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// The chunk queue of a run shared by several processes (`rowshift run --worker`), in
/// the checkpoint tables of a database target: no coordinator, the target is the queue.
///
/// The contract:
/// - A claim is a lease on the database's clock: [`WorkQueue::claim_next`] takes the
///   first chunk that is pending, or running under a lease that has run out, and locks
///   it for no one else (`FOR UPDATE SKIP LOCKED`), in one transaction.
/// - [`WorkQueue::heartbeat`] extends the leases a process still holds; a lease that has
///   run out is never extended (the chunk may be another's already), and the chunk is
///   reported lost.
/// - The done mark ([`CheckpointStore::finish`] or a sink's commit) applies only under
///   the claim's token and an unexpired lease, so a process whose lease ran out (it was
///   stopped, or cut off from the database) cannot commit: its rows roll back with the
///   refused mark. Exactly one attempt of a chunk commits.
pub trait WorkQueue: Send + Sync {
    /// Records this process (`me`) as a worker of the run, running.
    fn join(&self, me: &Worker) -> Result<()>;

    /// Claims the next chunk for `me` under `token`, leased for `lease`; `None` when no
    /// chunk is pending or held under a lease that ran out.
    fn claim_next(&self, me: &Worker, token: u64, lease: Duration) -> Result<Option<usize>>;

    /// How many chunks are pending or running, under anyone's lease: a worker that
    /// finds none to claim waits while there are, since a lease whose process died
    /// runs out and its chunk is then to be taken.
    fn open_chunks(&self) -> Result<u64>;

    /// Extends the leases of `held` (chunk, token) by `lease` and records `me`'s
    /// heartbeat and counts; returns the chunks whose lease was gone.
    fn heartbeat(
        &self,
        me: &Worker,
        held: &[(usize, u64)],
        lease: Duration,
        done: &WorkerCounts,
    ) -> Result<Vec<usize>>;

    /// Records that `me` ended (`finished` or `stopped`) and gives up the leases of
    /// `held`, so that others take those chunks at once.
    fn leave(
        &self,
        me: &Worker,
        state: &str,
        held: &[(usize, u64)],
        done: &WorkerCounts,
    ) -> Result<()>;

    /// Puts back to pending the chunks a run left running or failed: called by the
    /// first worker of a run, under the run lock, when no worker is live.
    fn reopen(&self) -> Result<u64>;
}

/// This process as a worker of a shared run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    /// `host:pid`.
    pub id: String,
    /// The host.
    pub host: String,
    /// The process id.
    pub pid: u32,
}

impl Worker {
    /// This process (its host name read once).
    pub fn me() -> Worker {
        static ME: std::sync::OnceLock<Worker> = std::sync::OnceLock::new();
        ME.get_or_init(|| {
            let me = lock::Me::now();
            Worker {
                id: format!("{}:{}", me.host, me.pid),
                host: me.host,
                pid: me.pid,
            }
        })
        .clone()
    }
}

/// What a worker has committed so far, for its heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerCounts {
    /// Chunks committed.
    pub chunks: u64,
    /// Rows they read.
    pub read: u64,
    /// Rows they wrote.
    pub written: u64,
}

/// Lines saying what differs between two pipelines' settings, in the pipeline's own
/// terms (`check v range: max = 8 → max = 100`).
pub fn diff_settings(old: &[(String, String)], new: &[(String, String)]) -> Vec<String> {
    changes(old, new).into_iter().map(|c| c.line).collect()
}

/// One setting that differs between a checkpoint's pipeline and the pipeline now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What changed, in the pipeline's own terms.
    pub line: String,
    /// Whether the change only lets more rows pass (a check removed, a bound moved
    /// out, a value accepted, a policy made milder): rows already written stay right,
    /// so the run can go on under it.
    pub widens: bool,
}

/// Every setting that differs between `old` and `new`.
pub fn changes(old: &[(String, String)], new: &[(String, String)]) -> Vec<Change> {
    use std::collections::BTreeMap;
    let a: BTreeMap<_, _> = old.iter().cloned().collect();
    let b: BTreeMap<_, _> = new.iter().cloned().collect();
    let mut out = Vec::new();
    for (k, v) in &a {
        match b.get(k) {
            None => out.push(Change {
                line: format!("{}: {} was removed", shown_key(k), shown_value(k, v)),
                widens: k.starts_with("checks."),
            }),
            Some(w) if w != v => out.push(Change {
                line: match (k.starts_with("checks."), Check::parse(v), Check::parse(w)) {
                    (true, Some(old), Some(new)) => format!("{}: {}", shown_key(k), new.diff(&old)),
                    _ => format!(
                        "{}: {} → {}",
                        shown_key(k),
                        shown_value(k, v),
                        shown_value(k, w)
                    ),
                },
                widens: k.starts_with("checks.") && check_widens(v, w),
            }),
            _ => {}
        }
    }
    for (k, v) in &b {
        if !a.contains_key(k) {
            out.push(Change {
                line: format!("{}: {} was added", shown_key(k), shown_value(k, v)),
                widens: csv_widens(k),
            });
        }
    }
    out
}

/// Whether setting CSV option `key` (from its default) only lets more records be read.
/// `quoting = "lenient"` reads the same text from every record that strict quoting
/// reads, and reads the records it set aside. `encoding = "latin1"` or
/// `"windows-1252"` reads every record that UTF-8 read, and the ones it set aside; a
/// record of valid UTF-8 beyond ASCII would read as other characters (`é` as `Ã©`), but a
/// file in a single-byte encoding rarely holds one, and `verify` reads every chunk again
/// under the new encoding and reports a chunk whose written rows differ. Every other CSV
/// option (the delimiter, the quote, null markers, `max_record_bytes`, ...) moves or
/// changes fields of records already written, so it is never accepted.
fn csv_widens(key: &str) -> bool {
    matches!(key, "source.csv.quoting" | "source.csv.encoding")
}

/// A setting's name as the pipeline file says it.
fn shown_key(key: &str) -> String {
    match key.strip_prefix("checks.") {
        Some(name) => format!("check {name}"),
        None => key.to_string(),
    }
}

/// A setting's value as the pipeline file would write it.
fn shown_value(key: &str, value: &str) -> String {
    if key.starts_with("checks.")
        && let Some(check) = Check::parse(value)
    {
        return check.to_string();
    }
    match parse_debug_option(value) {
        Some(Some(v)) => v,
        Some(None) => "unset".into(),
        None => value.to_string(),
    }
}

/// A declared check, read back from how the settings record it (`Some("v") Range {
/// min: None, max: Some("8") } Reject`).
#[derive(Debug, Clone, PartialEq)]
struct Check {
    column: Option<String>,
    /// The rule's name, and its values as the file writes them.
    rule: String,
    min: Option<String>,
    max: Option<String>,
    values: Vec<String>,
    policy: String,
}

impl Check {
    fn parse(text: &str) -> Option<Check> {
        let (column, rest) = match text.strip_prefix("None ") {
            Some(rest) => (None, rest),
            None => {
                let inner = text.strip_prefix("Some(")?;
                let (column, rest) = debug_string(inner)?;
                (Some(column), rest.strip_prefix(") ")?)
            }
        };
        let (kind, policy) = rest.rsplit_once(' ')?;
        let mut check = Check {
            column,
            rule: String::new(),
            min: None,
            max: None,
            values: Vec::new(),
            policy: policy.to_lowercase(),
        };
        if let Some(range) = kind.strip_prefix("Range { min: ") {
            let (min, rest) = debug_option(range)?;
            let (max, rest) = debug_option(rest.strip_prefix(", max: ")?)?;
            (rest == " }").then_some(())?;
            check.rule = "range".into();
            check.min = min;
            check.max = max;
        } else if let Some(list) = kind.strip_prefix("Accepted([") {
            let mut rest = list;
            loop {
                let r = rest.strip_prefix(", ").unwrap_or(rest);
                if let Some(end) = r.strip_prefix("])") {
                    end.is_empty().then_some(())?;
                    break;
                }
                let (v, after) = debug_string(r)?;
                check.values.push(v);
                rest = after;
            }
            check.rule = "accepted".into();
        } else {
            check.rule = kind.to_string();
        }
        Some(check)
    }
}

impl Check {
    /// The check's keys and values as the pipeline file writes them.
    fn parts(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(c) = &self.column {
            out.push(("column", format!("\"{c}\"")));
        }
        match self.rule.as_str() {
            "range" => {
                if let Some(min) = &self.min {
                    out.push(("min", min.clone()));
                }
                if let Some(max) = &self.max {
                    out.push(("max", max.clone()));
                }
            }
            "accepted" => out.push(("accepted", format!("[{}]", self.values.join(", ")))),
            "NotNull" => out.push(("not_null", "true".into())),
            "Unique" => out.push(("unique", "true".into())),
            other => out.push(("rule", other.to_string())),
        }
        out.push(("policy", format!("\"{}\"", self.policy)));
        out
    }

    /// What differs from `old` to `self`, key by key: `max 8 → 100`.
    fn diff(&self, old: &Check) -> String {
        let (a, b) = (old.parts(), self.parts());
        let find = |parts: &[(&str, String)], k: &str| {
            parts.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        };
        let mut out = Vec::new();
        for (k, v) in &a {
            match find(&b, k) {
                None => out.push(format!("{k} = {v} was removed")),
                Some(w) if &w != v => out.push(format!("{k} {v} → {w}")),
                _ => {}
            }
        }
        for (k, v) in &b {
            if find(&a, k).is_none() {
                out.push(format!("{k} = {v} was added"));
            }
        }
        out.join(", ")
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .parts()
            .into_iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        write!(f, "{}", parts.join(", "))
    }
}

/// Whether check `old` becoming `new` only lets more rows pass.
fn check_widens(old: &str, new: &str) -> bool {
    let (Some(a), Some(b)) = (Check::parse(old), Check::parse(new)) else {
        return false;
    };
    let mildness = |p: &str| match p {
        "fail" => 0,
        "reject" => 1,
        _ => 2,
    };
    if a.column != b.column || a.rule != b.rule || mildness(&b.policy) < mildness(&a.policy) {
        return false;
    }
    // A bound widens when it is dropped or moves out; bounds that are not numbers
    // (dates, text) only when they stay as they were.
    let number = |v: &str| v.trim().parse::<f64>().ok();
    let wider = |old: &Option<String>, new: &Option<String>, lower: bool| match (old, new) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(o), Some(n)) if o == n => true,
        (Some(o), Some(n)) => match (number(o), number(n)) {
            (Some(o), Some(n)) => (n < o) == lower,
            _ => false,
        },
    };
    match a.rule.as_str() {
        "range" => wider(&a.min, &b.min, true) && wider(&a.max, &b.max, false),
        "accepted" => a.values.iter().all(|v| b.values.contains(v)),
        _ => a.rule == b.rule,
    }
}

/// A Rust `Option<String>` as `{:?}` writes it: `Some(Some(text))`, `Some(None)` for
/// `None`, `None` if `text` is not one.
fn parse_debug_option(text: &str) -> Option<Option<String>> {
    let (v, rest) = debug_option(text)?;
    rest.is_empty().then_some(v)
}

/// The `Option<String>` that `text` starts with, as `{:?}` writes it, and what follows.
fn debug_option(text: &str) -> Option<(Option<String>, &str)> {
    if let Some(rest) = text.strip_prefix("None") {
        return Some((None, rest));
    }
    let (v, rest) = debug_string(text.strip_prefix("Some(")?)?;
    Some((Some(v), rest.strip_prefix(')')?))
}

/// The string that `text` starts with, as `{:?}` writes it, and what follows.
fn debug_string(text: &str) -> Option<(String, &str)> {
    let body = text.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &body[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                // `\u{..}`: kept as written, which is what the file would need.
                'u' => out.push_str("\\u"),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests;
