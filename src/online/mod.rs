//! Online moves (docs/online.md): change capture on the source table while the chunks
//! are copied, the catch-up that replays the logged changes through the same transform,
//! checks and quarantine, and the cut-over that swaps the new table into the source
//! table's place under a short lock.
//!
//! The capture is the source database's ([`Capture`], in `db/<db>/capture.rs`); the
//! replayed writes and the swap are the target's ([`Sink::replay`], [`Sink::cutover`]).
//! This folder only drives them, so it names no driver.

mod commands;
mod replay;
mod reverse;
pub mod throttle;

pub use commands::{
    CaptureStatus, CatchUp, ReverseStatus, catch_up_pipeline, cutover_pipeline, finalize,
    plan_after_cutover, plan_for_commands, status, swap_back,
};
pub use reverse::{OLD_SUFFIX, Reverse};

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::chunk::Chunk;
use crate::config::Location;
use crate::plan::Plan;
use crate::run::RunHooks;
use crate::sink::Sink;
use crate::sink::replay::{Cutover, Replayed};
use crate::source::capture::{Capture, Lag, Position};
use crate::{Error, Result};

/// What the catch-up and the cut-over did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OnlineReport {
    /// Logged changes replayed by this command.
    pub replayed: u64,
    /// Rows those changes wrote.
    pub rows_written: u64,
    /// Replayed rows that failed the transform or a check (quarantined).
    pub rejected: u64,
    /// Transactions they took.
    pub batches: u64,
    /// Seconds the catch-up took.
    pub seconds: f64,
    /// Rows of the replayed keys read back from the target after each batch committed
    /// and found as written.
    pub read_back: u64,
    /// The log position the target is current as of.
    pub position: Option<Position>,
    /// The changes still waiting when the catch-up stopped.
    pub lag: Lag,
    /// Seconds the catch-up waited on `rowshift pause`.
    pub paused_seconds: f64,
    /// Seconds it waited on a busy source server (`[online] max_active_backends`,
    /// `max_replica_lag_ms`, `max_threads_running`).
    pub throttled_seconds: f64,
    /// The cut-over, when one ran.
    pub cutover: Option<CutoverReport>,
}

/// What a cut-over did.
#[derive(Debug, Clone, Serialize)]
pub struct CutoverReport {
    /// Whether the new table was swapped in (source and target in one database); if not,
    /// the target is current as of `position` and nothing was renamed.
    pub swapped: bool,
    /// The name the old table now has (kept for rollback until `finalize`).
    pub old_table: Option<String>,
    /// Milliseconds the source table was locked against writes.
    pub lock_ms: f64,
    /// Attempts at the lock.
    pub attempts: u32,
    /// Changes drained under the lock.
    pub drained: u64,
    /// Rows of the drained keys read back from the target under the lock and found
    /// equal to what the drain wrote.
    pub read_back: u64,
    /// The log position the target is current as of.
    pub position: Option<Position>,
    /// What moved to the new table with its name (PostgreSQL: sequences, views, foreign
    /// keys of other tables), one line each.
    pub moved: Vec<String>,
    /// What went wrong after the swap committed (a foreign key that stays `NOT VALID`).
    pub warnings: Vec<String>,
}

/// How a cut-over swaps the tables.
pub struct Swap<'a> {
    /// The name the live table gets: `<table>__v1` at the cut-over; the forward
    /// target's own name when `rowshift down` swaps back.
    pub old: String,
    /// Capture installed on the new table inside the swap (the reverse move's).
    pub reverse: Option<&'a dyn Capture>,
    /// A further check under the lock, before anything is renamed.
    pub guard: Option<&'a dyn Fn() -> Result<()>>,
}

/// An online move of one pipeline: its capture and what it did.
pub struct Online {
    capture: Box<dyn Capture>,
    report: Mutex<OnlineReport>,
    cancel: Option<std::sync::Arc<AtomicBool>>,
    /// The pipeline file whose pause flag (`rowshift pause`) holds the catch-up: the
    /// forward pipeline's, for its reverse move too.
    paused_by: std::path::PathBuf,
}

impl std::fmt::Debug for Online {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Online")
            .field("capture", &self.capture.describe())
            .finish()
    }
}

impl Online {
    /// The online move `plan` declares (`[online] enabled = true`). Checks what it needs:
    /// a database source and target, a key the target holds unchanged, integer or text
    /// key columns.
    pub fn open(plan: &Plan, cancel: Option<std::sync::Arc<AtomicBool>>) -> Result<Online> {
        let p = &plan.pipeline;
        let here = p.file.display().to_string();
        if !p.online.enabled {
            return Err(Error::Unsupported(format!(
                "{here}: pipeline {} is not an online move; set [online] enabled = true",
                p.name
            )));
        }
        if matches!(p.target.location, Location::Files { .. }) {
            return Err(Error::Unsupported(format!(
                "{here}: an online move needs a database target: replayed changes are written by key"
            )));
        }
        match plan.target_key() {
            Some(k) if k.unchanged => {}
            _ => {
                return Err(Error::Unsupported(format!(
                    "{here}: an online move needs target columns that hold the source key unchanged (expr = the key column): a replayed delete finds its row by them"
                )));
            }
        }
        replay::check_key_types(plan)?;
        let capture =
            crate::plan::open_capture(&p.source, &p.name, &plan.io)?.ok_or_else(|| {
                Error::Unsupported(format!(
                    "{here}: an online move needs a database source: a file has no triggers"
                ))
            })?;
        Ok(Online {
            capture,
            report: Mutex::new(OnlineReport::default()),
            cancel,
            paused_by: p.file.clone(),
        })
    }

    /// The capture.
    pub fn capture(&self) -> &dyn Capture {
        self.capture.as_ref()
    }

    /// What the catch-up and cut-over did so far.
    pub fn report(&self) -> OnlineReport {
        self.report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::SeqCst))
            || crate::runtime::cancel_requested()
    }

    /// Replays logged changes until fewer than `until` wait (or the command is
    /// stopped). `chunks` is the plan: a rejected row is quarantined under the chunk whose
    /// range holds its key.
    pub fn catch_up(
        &self,
        plan: &Plan,
        sink: &dyn Sink,
        chunks: &[Chunk],
        until: u64,
    ) -> Result<()> {
        self.catch_up_to(plan, sink, chunks, until, None)
    }

    /// [`Online::catch_up`], which also stops once the replayed position reaches
    /// `upto`: a source written all the time may never show fewer than `until` changes
    /// waiting, but a position taken once is reached.
    fn catch_up_to(
        &self,
        plan: &Plan,
        sink: &dyn Sink,
        chunks: &[Chunk],
        until: u64,
        upto: Option<Position>,
    ) -> Result<()> {
        let name = &plan.pipeline.name;
        let mut pacer = throttle::Pacer::new(plan.pipeline.online.max_rows_per_second);
        let batch = pacer.batch(plan.pipeline.online.batch_rows);
        let t0 = Instant::now();
        let pool = replay::cpu_pool()?;
        let mut recorded = sink.replay_position(name)?;
        let mut pos = recorded.map(|p| p.0);
        let key = plan.target_key().map(|k| k.columns).unwrap_or_default();
        let mut read_back = 0u64;
        self.refuse_truncated()?;
        let mut truncation_checked = Instant::now();
        let mut load_checked = None;
        loop {
            self.hold(plan, &mut load_checked)?;
            if self.cancelled() {
                break;
            }
            let start = pacer.wait(&|| self.cancelled());
            let changes = self.capture.read(pos, batch)?;
            pacer.done(start, changes.len());
            if let Some(last) = changes.last().map(|c| c.at) {
                let done = replay::replay(plan, &pool, chunks, &changes, &mut |r| {
                    let written = sink.replay(r)?;
                    // Every replayed batch is read back, as a chunk is: only rowshift
                    // writes the target, so what its keys hold now is what was sent.
                    let found = sink.read_rows(0, &r.delete, &key)?;
                    read_back += compare_replayed(
                        sink,
                        r,
                        &key,
                        found,
                        "a replayed batch",
                        "the catch-up stopped, and its position is set back before the batch, so that the next catch-up (and the cut-over's) replays and checks it again",
                    )?;
                    Ok(written)
                })
                .map_err(|e| rewound(sink, name, recorded, e))?;
                recorded = Some((last, recorded.map_or(0, |r| r.1) + changes.len() as u64));
                crate::fault::crash_run("replayed");
                // The position is in the target now: the source may forget what it covers.
                self.capture.prune(last)?;
                pos = Some(last);
                self.with_report(|r| {
                    r.replayed += changes.len() as u64;
                    r.rows_written += done.written;
                    r.rejected += done.rejected;
                    r.batches += 1;
                    r.position = pos;
                    r.read_back += std::mem::take(&mut read_back);
                });
                if let Some(u) = upto
                    && last >= u
                {
                    self.refuse_truncated()?;
                    let lag = self.capture.lag(pos)?;
                    self.with_report(|r| r.lag = lag);
                    break;
                }
            }
            if changes.len() < batch {
                // A TRUNCATE stops the read where it was logged (PostgreSQL), or leaves no
                // trace in the log at all (MySQL): asked again at most once a second.
                if truncation_checked.elapsed() > Duration::from_secs(1) {
                    self.refuse_truncated()?;
                    truncation_checked = Instant::now();
                }
                let lag = self.capture.lag(pos)?;
                if lag.rows <= until {
                    self.refuse_truncated()?;
                    self.with_report(|r| {
                        r.lag = lag;
                        r.position = pos;
                    });
                    break;
                }
                if changes.is_empty() {
                    // Changes not yet readable (a transaction still open): wait for them.
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        self.with_report(|r| r.seconds += t0.elapsed().as_secs_f64());
        Ok(())
    }

    /// Waits while the move is paused (`rowshift pause`) or the source server is busy,
    /// between two batches: the position stays where the last one left it. The server
    /// is asked at most every 250 ms (`load_checked`: when it last said it was not
    /// busy), so that a catch-up waiting for changes does not poll it in a tight loop.
    fn hold(&self, plan: &Plan, load_checked: &mut Option<Instant>) -> Result<()> {
        const TICK: Duration = Duration::from_millis(250);
        while !self.cancelled() {
            if throttle::paused(&self.paused_by).is_some() {
                self.with_report(|r| r.paused_seconds += TICK.as_secs_f64());
            } else if load_checked.is_some_and(|t| t.elapsed() < TICK) {
                break;
            } else if self.capture.busy(&plan.pipeline.online)?.is_some() {
                self.with_report(|r| r.throttled_seconds += TICK.as_secs_f64());
            } else {
                *load_checked = Some(Instant::now());
                break;
            }
            std::thread::sleep(TICK);
        }
        Ok(())
    }

    /// Stops the catch-up and the cut-over if the source table was truncated since the
    /// capture began: the rows a `TRUNCATE` removes are named nowhere in the log.
    fn refuse_truncated(&self) -> Result<()> {
        match self.capture.truncated()? {
            Some(what) => Err(Error::Check(format!(
                "{}: {what}; the target cannot follow a TRUNCATE by key, so nothing after it was replayed and the cut-over is refused, nothing swapped; run `rowshift run --restart` to copy the table again",
                self.capture.describe()
            ))),
            None => Ok(()),
        }
    }

    fn with_report(&self, f: impl FnOnce(&mut OnlineReport)) {
        f(&mut self.report.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Catches up, then swaps the new table in under a lock (source and target in one
    /// database), as `swap` says, or, between two databases, replays until nothing
    /// waits and reports the position the target is current as of.
    pub fn cutover(
        &self,
        plan: &Plan,
        sink: &dyn Sink,
        chunks: &[Chunk],
        swap: &Swap<'_>,
    ) -> Result<CutoverReport> {
        let cfg = &plan.pipeline.online;
        let name = &plan.pipeline.name;
        self.catch_up(plan, sink, chunks, cfg.max_lag_rows)?;
        if !same_database(plan) {
            // Writes go on in the source, so the lag may never be zero: the target is
            // made current as of the log's last change when the cut-over began.
            let replayed = sink.replay_position(name)?.map(|p| p.0);
            let end = self.capture.lag(replayed)?.last;
            self.catch_up_to(plan, sink, chunks, 0, end)?;
            let report = CutoverReport {
                swapped: false,
                old_table: None,
                lock_ms: 0.0,
                attempts: 0,
                drained: 0,
                read_back: 0,
                position: self.report().position,
                moved: Vec::new(),
                warnings: Vec::new(),
            };
            self.with_report(|r| r.cutover = Some(report.clone()));
            return Ok(report);
        }
        let source_table = source_table(plan);
        let old = swap.old.clone();
        let timeout = Duration::from_millis(cfg.lock_timeout_ms);
        let pool = replay::cpu_pool()?;
        let key = plan.target_key().map(|k| k.columns).unwrap_or_default();
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Close behind before each attempt, so that the lock is held briefly.
            self.catch_up(plan, sink, chunks, cfg.max_lag_rows)?;
            let before = sink.replay_position(name)?;
            let start = before.map(|p| p.0);
            let mut cut = match sink.cutover(&source_table, &old, timeout) {
                Ok(c) => c,
                Err(e) if is_lock_not_had(&e) && attempt < cfg.lock_attempts => {
                    std::thread::sleep(Duration::from_millis((100u64 << attempt.min(5)).min(2000)));
                    continue;
                }
                Err(e) => return Err(e),
            };
            // The lock is held: writes to the source wait. Drain what is left.
            let mut pos = start;
            let mut drained = 0u64;
            let mut read_back = 0u64;
            let t_drain = Instant::now();
            loop {
                let changes = self.capture.read(pos, cfg.batch_rows)?;
                if changes.is_empty() {
                    if self.capture.lag(pos)?.rows == 0 {
                        break;
                    }
                    if t_drain.elapsed() > Duration::from_secs(30) {
                        return Err(Error::Check(format!(
                            "{}: changes logged before the lock could not be read within 30 s; nothing was swapped",
                            self.capture.describe()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let last = changes.last().expect("not empty").at;
                let done = match replay::replay(plan, &pool, chunks, &changes, &mut |r| {
                    let written = cut.replay(r)?;
                    read_back += verify_drained(sink, cut.as_mut(), r, &key)?;
                    Ok(written)
                }) {
                    Ok(done) => done,
                    Err(e) => {
                        // The lock goes first (SQLite's writes wait for it); the drain's
                        // committed batches are then replayed again by the next cut-over.
                        drop(cut);
                        return Err(rewound(sink, name, before, e));
                    }
                };
                drained += changes.len() as u64;
                pos = Some(last);
                self.with_report(|r| {
                    r.replayed += changes.len() as u64;
                    r.rows_written += done.written;
                    r.rejected += done.rejected;
                    r.batches += 1;
                });
            }
            crate::fault::crash_run("drained");
            // Under the lock, no TRUNCATE can come after this.
            self.refuse_truncated()?;
            let capture = self.capture.as_ref();
            let mut check = || {
                if let Some(guard) = swap.guard {
                    guard()?;
                }
                let lag = capture.lag(pos)?;
                if lag.rows > 0 {
                    return Err(Error::Check(format!(
                        "{}: {} changes were logged after position {} although writes were locked out; the swap is refused",
                        capture.describe(),
                        lag.rows,
                        pos.map_or("start".to_string(), |p| p.to_string())
                    )));
                }
                Ok(())
            };
            let swapped = match cut.swap(&old, capture, swap.reverse, &mut check) {
                Ok(s) => s,
                // The upgrade to ACCESS EXCLUSIVE, or a referencing table's lock, was not
                // had: nothing was swapped, and what was drained is committed.
                Err(e) if is_lock_not_had(&e) && attempt < cfg.lock_attempts => {
                    std::thread::sleep(Duration::from_millis((100u64 << attempt.min(5)).min(2000)));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(p) = pos {
                // Best effort: the log goes with `finalize` anyway.
                let _ = capture.prune(p);
            }
            let report = CutoverReport {
                swapped: true,
                old_table: Some(old),
                lock_ms: swapped.window.as_secs_f64() * 1000.0,
                attempts: attempt,
                drained,
                read_back,
                position: pos,
                moved: swapped.moved,
                warnings: swapped.warnings,
            };
            self.with_report(|r| {
                r.position = pos;
                r.lag = Lag::default();
                r.cutover = Some(report.clone());
            });
            return Ok(report);
        }
    }
}

impl RunHooks for Online {
    fn before_plan(&self, plan: &Plan, sink: &dyn Sink, fresh: bool) -> Result<()> {
        if fresh {
            // Installed before the chunks are planned: every change made while they are
            // copied is logged. A position left by an earlier run means nothing now.
            crate::fault::crash_run("before-capture");
            self.capture.install()?;
            sink.forget_replay(&plan.pipeline.name)
        } else if !self.capture.installed()? {
            Err(Error::Unsupported(format!(
                "{}: the change capture triggers of pipeline {} are gone, so changes made since they went may be missing from the target; run with --restart to copy again",
                self.capture.describe(),
                plan.pipeline.name
            )))
        } else {
            Ok(())
        }
    }

    fn after_copy(&self, plan: &Plan, sink: &dyn Sink, chunks: &[Chunk]) -> Result<()> {
        if plan.pipeline.online.cutover {
            cutover_with_reverse(self, plan, sink, chunks).map(|_| ())
        } else {
            self.catch_up(plan, sink, chunks, plan.pipeline.online.max_lag_rows)
        }
    }
}

/// Whether source and target are one database (and schema): then the cut-over renames.
pub fn same_database(plan: &Plan) -> bool {
    same_place(
        &plan.pipeline.source.location,
        &plan.pipeline.target.location,
    )
}

/// Whether two locations are one database (and schema).
fn same_place(s: &Location, t: &Location) -> bool {
    match (s, t) {
        (Location::Sqlite { path: a }, Location::Sqlite { path: b }) => {
            std::fs::canonicalize(a).ok() == std::fs::canonicalize(b).ok()
        }
        (Location::Postgres { url: a, schema: x }, Location::Postgres { url: b, schema: y })
        | (Location::Mysql { url: a, schema: x }, Location::Mysql { url: b, schema: y }) => {
            a.expose() == b.expose() && x == y
        }
        _ => false,
    }
}

/// Reads back the target rows of the keys a drained batch replayed (under the lock,
/// before the swap) and compares them with the rows written: the last batch gets the
/// check a chunk's commit gets. Returns the rows read back.
fn verify_drained(
    sink: &dyn Sink,
    cut: &mut dyn Cutover,
    batch: &Replayed<'_>,
    key: &[String],
) -> Result<u64> {
    let found = cut.read_back(&batch.delete, key)?;
    compare_replayed(
        sink,
        batch,
        key,
        found,
        "the cut-over's drained changes",
        "the cut-over stopped, nothing was swapped, and the replay position is set back before the drain, so that the next cut-over replays and checks those changes again",
    )
}

/// Compares the target rows `found` for a replayed batch's keys with what the batch
/// wrote (count and checksum, then row by row to name the first key and column that
/// differ). Returns the rows read back.
fn compare_replayed(
    sink: &dyn Sink,
    batch: &Replayed<'_>,
    key: &[String],
    found: Vec<arrow::record_batch::RecordBatch>,
    what: &str,
    then: &str,
) -> Result<u64> {
    let sent = sink.as_read_back(batch.rows.to_vec())?;
    let (rows, sum) = crate::check::readback::count_and_sum(&sent)?;
    let what = format!("{what} (keys {})", shown_keys(batch.keys));
    crate::check::readback::compare_what(&what, (rows, sum, &sent), &found, key)
        .map_err(|detail| Error::Check(format!("{detail}; {then}")))?;
    Ok(found.iter().map(|b| b.num_rows() as u64).sum())
}

/// `e`, once the replay position is set back to `to`: a batch that committed but read
/// back different is not passed over by the next catch-up. A batch that did not commit
/// left the position at `to` anyway.
fn rewound(sink: &dyn Sink, pipeline: &str, to: Option<(Position, u64)>, e: Error) -> Error {
    match sink.rewind_replay(pipeline, to) {
        Ok(()) => e,
        Err(again) => Error::Check(format!(
            "{e}; setting the replay position back failed too ({again}): run `rowshift verify --repair` before the cut-over"
        )),
    }
}

/// Up to ten keys, for a message.
fn shown_keys(keys: &[String]) -> String {
    let mut out = keys.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
    if keys.len() > 10 {
        out.push_str(&format!(" and {} more", keys.len() - 10));
    }
    out
}

/// The forward cut-over: the old table becomes `<table>__v1`, and the reverse move's
/// capture, when the pipeline declares one (`[online] reverse`), is installed on the new
/// table in the swap. The reverse pipeline is checked and compiled first, against the
/// target table as it is before the swap: a reverse move that cannot run stops the
/// cut-over with nothing swapped.
fn cutover_with_reverse(
    online: &Online,
    plan: &Plan,
    sink: &dyn Sink,
    chunks: &[Chunk],
) -> Result<CutoverReport> {
    let reverse = if same_database(plan) {
        Reverse::load(plan, true)?
    } else {
        None
    };
    if let Some(r) = &reverse {
        // A position left by an earlier move would skip the new log's first changes.
        sink.forget_replay(r.name())?;
    }
    let old = format!("{}{OLD_SUFFIX}", source_table(plan));
    online.cutover(
        plan,
        sink,
        chunks,
        &Swap {
            old,
            reverse: reverse.as_ref().map(|r| r.capture()),
            guard: None,
        },
    )
}

/// The source table's name.
fn source_table(plan: &Plan) -> String {
    plan.pipeline
        .source
        .table
        .as_ref()
        .map(|t| t.value.clone())
        .unwrap_or_default()
}

fn is_lock_not_had(e: &Error) -> bool {
    e.to_string().contains("the cut-over could not lock table")
}
