//! The executor: plans chunks, runs them on parallel workers, checks each, and reports
//! progress as [`Event`]s to an [`Observer`].
//!
//! Each worker is a plain thread that owns one chunk at a time: it pulls batches from the
//! source (database reads run on the I/O runtime and arrive over a channel), hands the CPU
//! work to the rayon pool, and feeds the chunk's writer. With several workers, reading and
//! writing of one chunk overlap with transforming another, and memory is bounded by
//! `parallel` chunks in flight, whatever the table's size.

mod dry_run;
mod observer;
mod requeue;
mod status;
mod verify;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use self::dry_run::{DryRunOptions, DryRunReport, RejectGroup, SampleMode, dry_run};
pub use self::observer::{Event, NoopObserver, Observer};
pub use self::requeue::{RequeueReport, requeue_rejects};
pub use self::status::{FailedChunk, RunningState, StatusReport, status};
pub use self::verify::{ChunkDifference, VerifyReport, verify};
use crate::check::conservation;
use crate::check::quarantine::{QuarantineEntry, strip_quoted};
use crate::check::readback::ReadBack;
use crate::check::rules::{Claims, Violation};
use crate::checkpoint::{CheckpointStore, ChunkState, DoneMark, RunLock, diff_settings};
use crate::chunk::Chunk;
use crate::chunk::ChunkCounts;
use crate::config::{Policy, Verify};
use crate::db::sqlite::checkpoint::SqliteStore;
pub use crate::error::diag::fmt_duration;
use crate::plan::Plan;
use crate::sink::{Committed, Prepare, Sink};
use crate::transform::cell_text;
use crate::{Error, Result, RowFailure};

/// Knobs the command line can override.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Chunks in flight; overrides `[chunks] parallel`.
    pub parallel: Option<usize>,
    /// Rows per chunk; overrides `[chunks] rows` (only when a new plan is made).
    pub chunk_rows: Option<u64>,
    /// Stop starting new chunks after the first failure.
    pub fail_fast: bool,
    /// Discard the checkpoint and what the earlier run wrote, then start over.
    pub restart: bool,
    /// Run only these chunks (`retry --chunk`); they must not be done.
    pub only: Option<Vec<usize>>,
    /// Run only the failed chunks (`retry`).
    pub failed_only: bool,
    /// Set to stop starting new chunks (Ctrl-C); chunks in flight finish.
    pub cancel: Option<Arc<AtomicBool>>,
    /// How long to wait for another run that holds the pipeline's lock
    /// (`--lock-timeout`); zero refuses at once.
    pub lock_wait: Duration,
}

/// The first pause before a chunk's transient error is retried; each retry doubles it,
/// up to [`MAX_BACKOFF`], and a random part of it is left out (jitter), so that workers
/// that failed together do not retry together.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The longest pause between two attempts of a chunk.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A chunk that failed, and why.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkFailure {
    /// The chunk's id.
    pub chunk: usize,
    /// The chunk's range, for humans.
    pub range: String,
    /// The error, redacted.
    pub error: String,
    /// How many times the chunk was tried.
    pub attempts: u32,
    /// How many attempts were made, and how long transient errors were retried:
    /// `after 6 attempts: transient errors were retried for 2.56s of the 3s that
    /// [chunks] retry_seconds allows`.
    pub tried: String,
    /// Whether the failure is about data (exit code 1) rather than the environment (2).
    #[serde(skip)]
    pub data: bool,
}

impl ChunkFailure {
    /// The error with how it was tried, as the summary and the checkpoint show it.
    pub fn line(&self) -> String {
        format!("{} ({})", self.error, self.tried)
    }
}

/// Rejected rows of a run that share a reason.
#[derive(Debug, Clone, Serialize)]
pub struct RejectSummary {
    /// Column and reason, with values left out.
    pub reason: String,
    /// How many rows.
    pub count: u64,
    /// One of them.
    pub example: RowFailure,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The pipeline's name.
    pub pipeline: String,
    /// Whether an earlier run's checkpoint was resumed.
    pub resumed: bool,
    /// Chunks in the plan.
    pub chunks_total: usize,
    /// Chunks committed by this run.
    pub chunks_done: usize,
    /// Chunks skipped because an earlier run had committed them.
    pub chunks_skipped: usize,
    /// Chunks that failed.
    pub chunks_failed: usize,
    /// Chunks left pending (the run was interrupted or stopped early).
    pub chunks_pending: usize,
    /// Row counts over the chunks this run committed.
    pub rows: ChunkCounts,
    /// Rejected rows by reason, largest first; the rows are in the quarantine.
    pub rejects: Vec<RejectSummary>,
    /// Rows written although a `warn` check failed, by check, largest first.
    pub warnings: Vec<RejectSummary>,
    /// Whether each chunk was read back from the target (`verify`).
    pub verified: bool,
    /// Seconds workers spent reading chunks back and comparing, summed over workers.
    pub verify_seconds: f64,
    /// Where rejected rows are kept.
    pub quarantine: String,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Seconds workers spent in checkpoint bookkeeping (claim, finish, fail), summed over
    /// workers. A mark committed inside the target's own transaction is not included.
    pub checkpoint_seconds: f64,
    /// Rows read per second of wall time.
    pub rows_per_second: f64,
    /// Order-independent checksum of the rows of every done chunk (hex), whichever run
    /// wrote them; the same rows give the same checksum whatever the chunk size or thread
    /// count.
    pub checksum: String,
    /// The state of the whole run after this process's work, from the checkpoint.
    pub state: RunState,
    /// Changes to the pipeline since its checkpoint that only widen what passes, which
    /// this run accepted and recorded.
    pub accepted_changes: Vec<String>,
    /// Peak resident memory of the process so far, bytes (Linux only).
    pub peak_rss_bytes: Option<u64>,
    /// Whether Ctrl-C stopped the run early.
    pub interrupted: bool,
    /// Each failed chunk.
    pub failures: Vec<ChunkFailure>,
}

/// Where the whole run stands, whichever process did its work.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunState {
    /// Chunks done.
    pub chunks_done: usize,
    /// Chunks in the plan.
    pub chunks_total: usize,
    /// Rows the done chunks keep in the quarantine (after `retry --rejects` took out
    /// those that passed).
    pub quarantined: u64,
    /// Rows the done chunks wrote.
    pub written: u64,
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.chunks_done == self.chunks_total {
            true => write!(f, "all {} chunks done", self.chunks_total)?,
            false => write!(
                f,
                "{} of {} chunks done",
                self.chunks_done, self.chunks_total
            )?,
        }
        write!(f, ", {} rows written", group(self.written))?;
        match self.quarantined {
            0 => write!(f, ", the quarantine is empty"),
            n => write!(f, ", {} rows in the quarantine", group(n)),
        }
    }
}

/// `50121` as `50,121`.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Summary {
    /// 0 when every chunk is done and the quarantine is empty, whichever run did the
    /// work; 1 when rows are in the quarantine or only data checks failed; 2 otherwise
    /// (including an interrupted run, or chunks not done).
    pub fn exit_code(&self) -> i32 {
        if self.interrupted || self.failures.iter().any(|f| !f.data) {
            2
        } else if !self.failures.is_empty() || self.rows.rejected > 0 || self.state.quarantined > 0
        {
            1
        } else if self.state.chunks_done < self.state.chunks_total {
            2
        } else {
            0
        }
    }
}

/// The checkpoint store for a plan: in the target when the sink offers one, otherwise in
/// the state directory beside the pipeline file.
pub fn checkpoint_store(plan: &Plan, sink: &dyn Sink) -> Arc<dyn CheckpointStore> {
    let name = &plan.pipeline.name;
    sink.checkpoint_store(name).unwrap_or_else(|| {
        Arc::new(SqliteStore::new(
            &plan.state_dir().join(format!("{name}.checkpoint.db")),
            name,
            &plan.io,
        ))
    })
}

/// Everything the workers share.
struct Shared<'a> {
    plan: &'a Plan,
    sink: &'a dyn Sink,
    store: &'a dyn CheckpointStore,
    /// The pipeline's run lock, held for the run.
    lock: &'a RunLock,
    pool: rayon::ThreadPool,
    rejected_total: AtomicU64,
    /// Nanoseconds spent in checkpoint calls, to report bookkeeping's cost.
    checkpoint_nanos: AtomicU64,
    /// Nanoseconds spent reading chunks back, to report verification's cost.
    verify_nanos: AtomicU64,
}

impl Shared<'_> {
    /// Runs a checkpoint call and counts its time.
    fn timed<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let t0 = Instant::now();
        let out = f();
        self.checkpoint_nanos
            .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }
}

/// Runs a pipeline: resumes its checkpoint if there is one, or plans it, then runs every
/// chunk not yet done.
///
/// The run first takes the pipeline's run lock, before it reads or creates anything: a
/// second run of the same pipeline against the same target is refused at once (or waits
/// up to `opts.lock_wait`), naming the run that holds it.
pub fn run(
    plan: &Plan,
    sink: &dyn Sink,
    observer: &dyn Observer,
    opts: &RunOptions,
) -> Result<Summary> {
    let store = checkpoint_store(plan, sink);
    let lock = match take_lock(store.as_ref(), observer, opts.lock_wait) {
        Ok(lock) => lock,
        Err(e) => {
            let _ = store.close();
            return Err(e);
        }
    };
    run_locked(plan, sink, observer, opts, &store, &lock)
}

/// Takes the pipeline's run lock from `store`, telling `observer` when it waits.
pub(crate) fn take_lock(
    store: &dyn CheckpointStore,
    observer: &dyn Observer,
    wait: Duration,
) -> Result<RunLock> {
    store.lock(wait, &mut |holder| {
        observer.on_event(&Event::WaitingForLock {
            holder: holder.clone(),
            limit: wait,
        })
    })
}

/// [`run`] under a lock the caller holds (and releases after this returns).
pub(crate) fn run_locked(
    plan: &Plan,
    sink: &dyn Sink,
    observer: &dyn Observer,
    opts: &RunOptions,
    store: &Arc<dyn CheckpointStore>,
    lock: &RunLock,
) -> Result<Summary> {
    let summary = run_with(plan, sink, observer, opts, store, lock);
    // However the run ended, the store closes before the sink: a SQLite target folds its
    // write-ahead log into the file only when its last connection closes, and a dry run
    // reads the file alone.
    let closed = store.close().and_then(|()| sink.finish());
    let summary = summary?;
    closed?;
    observer.on_event(&Event::Finished(Box::new(summary.clone())));
    Ok(summary)
}

/// [`run`] with its checkpoint store, which the caller closes.
fn run_with(
    plan: &Plan,
    sink: &dyn Sink,
    observer: &dyn Observer,
    opts: &RunOptions,
    store: &Arc<dyn CheckpointStore>,
    lock: &RunLock,
) -> Result<Summary> {
    let started = Instant::now();
    let cfg = &plan.pipeline.chunks;
    let fingerprint = plan.pipeline.fingerprint();
    let settings = plan.pipeline.settings();
    let existing = store.load()?;
    let mut accepted = Vec::new();
    let (records, how) = match existing {
        Some(_) if opts.restart => {
            // Forget the checkpoint before cleaning the target: a crash in between leaves
            // old rows and no checkpoint, which a fresh run refuses loudly, never a
            // checkpoint claiming rows that are gone.
            store.discard()?;
            (None, Prepare::Restart)
        }
        Some(c) if c.fingerprint != fingerprint && widened(&c, plan).is_some() => {
            // Changes that only let more rows pass leave what was written right: the
            // run goes on under them, and the checkpoint records them.
            accepted = widened(&c, plan).unwrap_or_default();
            store.record_settings(&fingerprint, &settings)?;
            (Some(c), Prepare::Resume)
        }
        Some(c) if c.fingerprint != fingerprint => {
            let diff = diff_settings(&c.settings, &settings);
            return Err(Error::Unsupported(format!(
                "the pipeline changed since its checkpoint of {} ({}):\n  {}\nrun with --restart to start over; it removes what the earlier run wrote",
                c.created_at,
                store.describe(),
                diff.join("\n  ")
            )));
        }
        Some(c) => (Some(c), Prepare::Resume),
        None if opts.restart => (None, Prepare::Restart),
        None => (None, Prepare::Fresh),
    };
    if records.is_none() && (opts.only.is_some() || opts.failed_only) {
        return Err(Error::Unsupported(format!(
            "no checkpoint for pipeline {} in {}; there is nothing to retry",
            plan.pipeline.name,
            store.describe()
        )));
    }
    sink.prepare(how)?;
    let (chunks, states): (Vec<Chunk>, Vec<ChunkState>) = match &records {
        Some(c) => c.chunks.iter().map(|r| (r.chunk.clone(), r.state)).unzip(),
        None => {
            let chunks = plan.source.plan(opts.chunk_rows.unwrap_or(cfg.rows))?;
            store.create(&fingerprint, &settings, &chunks)?;
            let n = chunks.len();
            (chunks, vec![ChunkState::Pending; n])
        }
    };
    let todo: Vec<usize> = match &opts.only {
        Some(ids) => {
            for &id in ids {
                match states.get(id) {
                    None => {
                        return Err(Error::Unsupported(format!(
                            "there is no chunk {id}; the plan has {} chunks",
                            chunks.len()
                        )));
                    }
                    Some(ChunkState::Done) => {
                        return Err(Error::Unsupported(format!(
                            "chunk {id} is done; only pending, running or failed chunks can be retried"
                        )));
                    }
                    _ => {}
                }
            }
            ids.clone()
        }
        None if opts.failed_only => (0..chunks.len())
            .filter(|&i| states[i] == ChunkState::Failed)
            .collect(),
        None => (0..chunks.len())
            .filter(|&i| states[i] != ChunkState::Done)
            .collect(),
    };
    let done: Vec<usize> = (0..chunks.len())
        .filter(|&i| states[i] == ChunkState::Done)
        .collect();
    if how == Prepare::Resume {
        // Rows of a chunk that is not done (one read back after its commit, when the run
        // died before marking it) go before anything reads the target or redoes it.
        let unfinished: Vec<_> = (0..chunks.len())
            .filter(|&i| states[i] != ChunkState::Done)
            .filter_map(|i| Some((i, plan.selection(&chunks[i], &[]).ok()?)))
            .collect();
        sink.settle(&unfinished)?;
    }
    sink.check_done(&done)?;
    if !done.is_empty() && plan.checks.has_unique() {
        // `unique` spans the run: values the earlier run wrote count.
        sink.scan(&mut |b| plan.checks.seed(&b))?;
    }
    let skipped = done.len();
    let parallel = opts
        .parallel
        .unwrap_or(cfg.parallel)
        .clamp(1, todo.len().max(1));
    observer.on_event(&Event::Planned {
        chunks: todo.len(),
        rows: todo.iter().map(|&i| chunks[i].rows).sum(),
        skipped,
    });

    let shared = Shared {
        plan,
        sink,
        store: store.as_ref(),
        lock,
        pool: rayon::ThreadPoolBuilder::new()
            .num_threads(parallel)
            .thread_name(|i| format!("rowshift-cpu-{i}"))
            .build()
            .map_err(|e| Error::Internal(format!("cannot start the CPU pool: {e}")))?,
        rejected_total: AtomicU64::new(0),
        checkpoint_nanos: AtomicU64::new(0),
        verify_nanos: AtomicU64::new(0),
    };
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results = Mutex::new(Totals::default());
    let cancelled = || {
        opts.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::SeqCst))
    };
    // Set when the lock was found gone: the run starts no more chunks.
    let lock_lost = AtomicBool::new(false);

    std::thread::scope(|s| {
        for w in 0..parallel {
            let (next, stop, results, todo, chunks, shared, lock_lost) =
                (&next, &stop, &results, &todo, &chunks, &shared, &lock_lost);
            let cancelled = &cancelled;
            std::thread::Builder::new()
                .name(format!("rowshift-chunk-{w}"))
                .spawn_scoped(s, move || {
                    loop {
                        if stop.load(Ordering::SeqCst) || cancelled() {
                            break;
                        }
                        if shared.lock.lost() {
                            lock_lost.store(true, Ordering::SeqCst);
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(&id) = todo.get(i) else { break };
                        let chunk = &chunks[id];
                        observer.on_event(&Event::ChunkStarted { chunk: chunk.id });
                        let t0 = Instant::now();
                        match run_with_retries(shared, chunk) {
                            Ok(Outcome::Done(done)) => {
                                observer.on_event(&Event::ChunkDone {
                                    chunk: chunk.id,
                                    counts: done.counts,
                                    elapsed: t0.elapsed(),
                                });
                                results.lock().unwrap_or_else(|p| p.into_inner()).add(done);
                            }
                            Ok(Outcome::DoneElsewhere) => {
                                results
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .elsewhere += 1;
                            }
                            Err(failed) => {
                                let Failed {
                                    error: e,
                                    stop: stop_run,
                                    attempts,
                                    claim,
                                    retried,
                                } = failed;
                                let e = *e;
                                let cause = match &e {
                                    Error::Chunk { source, .. } => source.to_string(),
                                    other => other.to_string(),
                                };
                                let tries = match attempts {
                                    1 => "after 1 attempt".to_string(),
                                    n => format!("after {n} attempts"),
                                };
                                let tried = match retried {
                                    Some(waited) => format!(
                                        "{tries}: transient errors were retried for {} of the {}s that [chunks] retry_seconds allows",
                                        fmt_duration(waited),
                                        plan.pipeline.chunks.retry_seconds
                                    ),
                                    None => tries,
                                };
                                let failure = ChunkFailure {
                                    chunk: chunk.id,
                                    range: chunk.to_string(),
                                    error: crate::config::redact(&cause),
                                    attempts,
                                    tried,
                                    data: e.is_data_failure(),
                                };
                                // If even the failure cannot be recorded, the chunk stays
                                // running and a later run redoes it. A chunk another run
                                // took over is left to that run.
                                if !crate::checkpoint::is_claim_lost(&e) {
                                    let _ = shared.timed(|| {
                                        shared.store.fail(chunk.id, claim, &failure.line())
                                    });
                                }
                                observer.on_event(&Event::ChunkFailed {
                                    chunk: chunk.id,
                                    error: failure.line(),
                                });
                                results
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .failures
                                    .push(failure);
                                if opts.fail_fast || stop_run {
                                    stop.store(true, Ordering::SeqCst);
                                }
                            }
                        }
                    }
                })
                .expect("spawning a worker thread");
        }
    });

    let totals = results.into_inner().unwrap_or_else(|p| p.into_inner());
    if lock_lost.load(Ordering::SeqCst) {
        return Err(Error::Unsupported(format!(
            "the run lost its lock on pipeline {} ({}): the server ended the session that held it, or another run took it over; it started no more chunks, and those not committed are redone by the next run",
            plan.pipeline.name,
            store.describe()
        )));
    }
    let mut failures = totals.failures;
    failures.sort_by_key(|f| f.chunk);
    let attempted = totals.done + failures.len() + totals.elsewhere;
    // The run's state as the checkpoint has it now, whichever process did the work.
    store.flush()?;
    let (state, checksum) = match store.load()? {
        Some(c) => run_state(&c),
        None => (RunState::default(), 0),
    };
    let seconds = started.elapsed().as_secs_f64();
    let by_count = |mut v: Vec<RejectSummary>| {
        v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
        v
    };
    let rejects = by_count(totals.rejects.into_values().collect());
    let warnings = by_count(totals.warnings.into_values().collect());
    let summary = Summary {
        pipeline: plan.pipeline.name.clone(),
        resumed: how == Prepare::Resume,
        chunks_total: chunks.len(),
        chunks_done: totals.done,
        chunks_skipped: skipped + totals.elsewhere,
        chunks_failed: failures.len(),
        chunks_pending: todo.len() - attempted,
        rows: totals.rows,
        rejects,
        warnings,
        verified: plan.pipeline.verify == Verify::ReadBack,
        verify_seconds: shared.verify_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        quarantine: sink.quarantine(),
        seconds,
        checkpoint_seconds: shared.checkpoint_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        checksum: format!("{checksum:016x}"),
        state,
        accepted_changes: accepted,
        rows_per_second: if seconds > 0.0 {
            totals.rows.read as f64 / seconds
        } else {
            0.0
        },
        peak_rss_bytes: peak_rss_bytes(),
        interrupted: cancelled() && todo.len() > attempted,
        failures,
    };
    Ok(summary)
}

/// The changes since `checkpoint` was made, when every one only widens what passes (a
/// check removed or loosened): the run may go on under them. `None` when a change does
/// not, or when nothing a setting shows changed but the fingerprint did.
pub(crate) fn widened(
    checkpoint: &crate::checkpoint::Checkpoint,
    plan: &Plan,
) -> Option<Vec<String>> {
    let changes = crate::checkpoint::changes(&checkpoint.settings, &plan.pipeline.settings());
    (!changes.is_empty() && changes.iter().all(|c| c.widens))
        .then(|| changes.into_iter().map(|c| c.line).collect())
}

/// Where the run recorded in `checkpoint` stands, and the checksum of its done chunks'
/// rows.
fn run_state(checkpoint: &crate::checkpoint::Checkpoint) -> (RunState, u64) {
    let mut state = RunState {
        chunks_total: checkpoint.chunks.len(),
        ..RunState::default()
    };
    let mut checksum = 0u64;
    for r in checkpoint
        .chunks
        .iter()
        .filter(|r| r.state == ChunkState::Done)
    {
        state.chunks_done += 1;
        state.quarantined += r.counts.rejected;
        state.written += r.counts.written;
        checksum = checksum.wrapping_add(r.checksum);
    }
    (state, checksum)
}

#[derive(Default)]
struct Totals {
    rows: ChunkCounts,
    checksum: u64,
    done: usize,
    /// Chunks found done by another run when claimed.
    elsewhere: usize,
    failures: Vec<ChunkFailure>,
    rejects: std::collections::BTreeMap<String, RejectSummary>,
    warnings: std::collections::BTreeMap<String, RejectSummary>,
}

impl Totals {
    fn add(&mut self, done: ChunkDone) {
        self.rows += done.counts;
        self.checksum = self.checksum.wrapping_add(done.checksum);
        self.done += 1;
        for (into, list) in [
            (&mut self.rejects, done.rejects),
            (&mut self.warnings, done.warnings),
        ] {
            for (reason, count, example) in list {
                let e = into.entry(reason.clone()).or_insert(RejectSummary {
                    reason,
                    count: 0,
                    example,
                });
                e.count += count;
            }
        }
    }
}

/// A committed chunk's counts, and its rejects by reason and `warn` check failures by
/// check (count and first example).
struct ChunkDone {
    counts: ChunkCounts,
    checksum: u64,
    rejects: Vec<(String, u64, RowFailure)>,
    warnings: Vec<(String, u64, RowFailure)>,
}

/// How a chunk's work ended well.
enum Outcome {
    /// This run committed it.
    Done(ChunkDone),
    /// Another run had committed it when this one claimed it.
    DoneElsewhere,
}

/// A chunk that failed.
struct Failed {
    error: Box<Error>,
    /// Whether the whole run must stop (the run-wide reject limit was passed).
    stop: bool,
    /// Attempts made.
    attempts: u32,
    /// The last attempt's claim, under which the failure is recorded.
    claim: u64,
    /// How long transient errors were retried, when the last one was transient.
    retried: Option<Duration>,
}

/// Runs a chunk, every statement of it (the claim, the rows, the done mark), retrying
/// transient errors with exponential backoff and jitter for up to `[chunks]
/// retry_seconds`.
fn run_with_retries(shared: &Shared<'_>, chunk: &Chunk) -> Result<Outcome, Failed> {
    let budget = Duration::from_secs(shared.plan.pipeline.chunks.retry_seconds);
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let claim = crate::checkpoint::new_claim();
        let e = match attempt_chunk(shared, chunk, attempt, claim) {
            Ok(outcome) => return Ok(outcome),
            Err(e) => e,
        };
        let transient = e.is_transient() && !crate::checkpoint::is_claim_lost(&e);
        let pause = backoff(attempt);
        // After Ctrl-C or SIGTERM no transient error is waited out: the chunk fails with
        // it at once, and the next run redoes it.
        if transient
            && started.elapsed() + pause <= budget
            && !shared.lock.lost()
            && !crate::runtime::cancel_requested()
        {
            std::thread::sleep(pause);
            if !crate::runtime::cancel_requested() {
                continue;
            }
        }
        // Past the reject limit, or on a full disk, no chunk may start.
        let stop = e.stops_run();
        return Err(Failed {
            error: Box::new(e),
            stop,
            attempts: attempt,
            claim,
            retried: transient.then(|| started.elapsed()),
        });
    }
}

/// The pause before attempt `attempt + 1`: doubling from [`FIRST_BACKOFF`] up to
/// [`MAX_BACKOFF`], of which a random part up to half is left out.
fn backoff(attempt: u32) -> Duration {
    let full = FIRST_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let half = full.as_millis() as u64 / 2;
    let jitter = crate::checkpoint::new_claim() % (half + 1);
    full - Duration::from_millis(jitter)
}

/// One attempt of a chunk under the claim `claim`.
fn attempt_chunk(shared: &Shared<'_>, chunk: &Chunk, attempt: u32, claim: u64) -> Result<Outcome> {
    crate::fault::inject_fault_at(chunk.id, attempt, true)?;
    if !shared.timed(|| shared.store.claim(chunk.id, claim))? {
        return Ok(Outcome::DoneElsewhere);
    }
    let t0 = Instant::now();
    let (done, committed) = run_chunk(shared, chunk, attempt, claim)?;
    if !committed.marked {
        let mark = DoneMark {
            chunk: chunk.id,
            counts: done.counts,
            seconds: t0.elapsed().as_secs_f64(),
            checksum: done.checksum,
            claim,
        };
        shared.timed(|| shared.store.finish(&mark))?;
    }
    Ok(Outcome::Done(done))
}

/// Reads, transforms, checks and commits one chunk. `unique` values it claims are given
/// back if it does not commit.
fn run_chunk(
    shared: &Shared<'_>,
    chunk: &Chunk,
    attempt: u32,
    claim: u64,
) -> Result<(ChunkDone, Committed)> {
    let mut claims = Claims::default();
    let out = run_chunk_claiming(shared, chunk, attempt, claim, &mut claims);
    if out.is_err() {
        shared.plan.checks.release(claims);
    }
    out
}

fn run_chunk_claiming(
    shared: &Shared<'_>,
    chunk: &Chunk,
    attempt: u32,
    claim: u64,
    claims: &mut Claims,
) -> Result<(ChunkDone, Committed)> {
    let wrap = |e: Error| Error::Chunk {
        chunk: chunk.id,
        source: Box::new(e),
    };
    let plan = shared.plan;
    let limits = &plan.pipeline.limits;
    let source = plan.source.as_ref();
    let verify = plan.pipeline.verify == Verify::ReadBack;
    let t0 = Instant::now();
    let mut writer = shared.sink.open_chunk(chunk).map_err(wrap)?;
    let mut counts = ChunkCounts::default();
    let mut offset = 0u64;
    let mut by_reason: std::collections::BTreeMap<String, (u64, RowFailure)> = Default::default();
    let mut by_check: std::collections::BTreeMap<String, (u64, RowFailure)> = Default::default();
    let mut sum = 0u64;
    // What was sent, kept for read-back (batches share their buffers; nothing is copied).
    let mut sent = Vec::new();
    // For a target that may refuse rows: every batch as read and as written, and the
    // quarantine so far, to quarantine refused rows and write the chunk again.
    let refusable = shared.sink.refuses_rows();
    let mut kept: Vec<Kept> = Vec::new();
    let mut quarantined: Vec<QuarantineEntry> = Vec::new();
    let (batches, left_out) = read_chunk(plan, chunk).map_err(wrap)?;
    let mut seen = key_places(source);
    for batch in batches {
        let batch = batch.map_err(wrap)?;
        let base = offset;
        if let Some(seen) = seen.as_mut() {
            check_repeats(source, chunk, &batch, base, seen).map_err(wrap)?;
        }
        let p = process_batch(
            plan,
            &shared.pool,
            &batch,
            &|row| source.locate(chunk, base + row as u64),
            chunk.id,
            claims,
        )
        .map_err(wrap)?;
        counts += p.counts;
        if !p.rejects.is_empty() {
            let rows: Vec<usize> = p.out.rejects.iter().map(|r| r.row).collect();
            let whole = match &left_out {
                Some(used) => Some(whole_rows(plan, chunk, &batch, &rows, used).map_err(wrap)?),
                None => None,
            };
            let mut entries = Vec::with_capacity(p.rejects.len());
            for (i, (&row, failure)) in rows.iter().zip(p.rejects).enumerate() {
                let entry = match &whole {
                    Some(whole) => QuarantineEntry::new(chunk.id, whole, i, source.key(), &failure),
                    None => QuarantineEntry::new(chunk.id, &batch, row, source.key(), &failure),
                };
                let slot = by_reason
                    .entry(entry.grouped_reason())
                    .or_insert((0, failure));
                slot.0 += 1;
                entries.push(entry);
            }
            if refusable {
                quarantined.extend(entries.iter().cloned());
            }
            writer.reject(entries).map_err(wrap)?;
        }
        for (check, failure) in p.warnings {
            by_check.entry(check).or_insert((0, failure)).0 += 1;
        }
        sum = sum.wrapping_add(crate::check::checksum(&p.out.batch).map_err(wrap)?);
        writer.write(&p.out.batch).map_err(wrap)?;
        if verify && p.out.batch.num_rows() > 0 {
            sent.push(p.out.batch.clone());
        }
        if refusable {
            kept.push(Kept {
                rows: p
                    .out
                    .rows
                    .unwrap_or_else(|| (0..p.out.batch.num_rows()).collect()),
                out: p.out.batch,
                source: batch.clone(),
                base,
            });
        }
        offset += batch.num_rows() as u64;
    }
    let unreadable = source.unreadable(chunk);
    if !unreadable.is_empty() {
        let entries: Vec<QuarantineEntry> = unreadable
            .into_iter()
            .map(|u| {
                let entry = QuarantineEntry::unreadable(chunk.id, u);
                count_reason(&mut by_reason, &entry);
                entry
            })
            .collect();
        counts.read += entries.len() as u64;
        counts.rejected += entries.len() as u64;
        if refusable {
            quarantined.extend(entries.iter().cloned());
        }
        writer.reject(entries).map_err(wrap)?;
    }
    conservation(chunk, &counts).map_err(wrap)?;
    let key = plan.target_key().map(|k| k.columns).unwrap_or_default();
    // Rejects this chunk added to the run's total so far; given back if it fails.
    let mut counted = 0;
    let mut rounds = 0;
    let committed = loop {
        let total = shared
            .rejected_total
            .fetch_add(counts.rejected - counted, Ordering::SeqCst)
            + (counts.rejected - counted);
        counted = counts.rejected;
        let limit = match (limits.max_reject_ratio, limits.max_rejects) {
            (Some(max), _)
                if counts.read > 0 && counts.rejected as f64 / counts.read as f64 > max =>
            {
                Some(Error::Check(format!(
                    "{chunk}: {} of {} rows rejected, more than max_reject_ratio = {max}",
                    counts.rejected, counts.read
                )))
            }
            (_, Some(max)) if total > max => Some(Error::RejectLimit(format!(
                "{total} rows rejected so far, more than max_rejects = {max}; the run stops"
            ))),
            _ => None,
        };
        let readback = match (limit, verify) {
            (Some(e), _) => Err(e),
            (None, true) => plan.selection(chunk, &sent).map(|selection| {
                Some(ReadBack {
                    chunk,
                    rows: counts.written,
                    checksum: sum,
                    sent: &sent,
                    key: &key,
                    selection,
                    nanos: &shared.verify_nanos,
                })
            }),
            (None, false) => Ok(None),
        };
        let result = readback.and_then(|readback| {
            crate::fault::inject_fault(chunk.id, attempt)?;
            writer.commit(
                &DoneMark {
                    chunk: chunk.id,
                    counts,
                    seconds: t0.elapsed().as_secs_f64(),
                    checksum: sum,
                    claim,
                },
                readback.as_ref(),
            )
        });
        let refused = match result {
            Ok(c) => break c,
            // The rows the target refused join the quarantine, and the chunk is written
            // again without them. The sink may refuse values a column cannot keep before
            // sending anything, and the server what it refuses in the next round; one
            // more only happens if the table changed under the run (another writer's
            // rows), and a fourth is not tried.
            Err(Error::Refused(refused)) if refusable && rounds < 3 => refused,
            Err(e) => {
                shared.rejected_total.fetch_sub(counted, Ordering::SeqCst);
                return Err(wrap(repeated_key(source, chunk, e)));
            }
        };
        rounds += 1;
        let mut again = || -> Result<_> {
            let entries = refused_entries(
                plan,
                chunk,
                &mut kept,
                &refused,
                left_out.as_deref(),
                claims,
            )?;
            for entry in &entries {
                count_reason(&mut by_reason, entry);
            }
            counts.written -= entries.len() as u64;
            counts.rejected += entries.len() as u64;
            quarantined.extend(entries);
            sum = 0;
            sent.clear();
            let mut writer = shared.sink.open_chunk(chunk)?;
            writer.reject(quarantined.clone())?;
            for k in &kept {
                sum = sum.wrapping_add(crate::check::checksum(&k.out)?);
                writer.write(&k.out)?;
                if verify && k.out.num_rows() > 0 {
                    sent.push(k.out.clone());
                }
            }
            Ok(writer)
        };
        writer = match again() {
            Ok(w) => w,
            Err(e) => {
                shared.rejected_total.fetch_sub(counted, Ordering::SeqCst);
                return Err(wrap(e));
            }
        };
    };
    if committed.rows != counts.written {
        return Err(wrap(Error::Check(format!(
            "{chunk}: {} rows were sent to the target but it reports {} written",
            counts.written, committed.rows
        ))));
    }
    let flatten = |m: std::collections::BTreeMap<String, (u64, RowFailure)>| {
        m.into_iter()
            .map(|(reason, (n, example))| (reason, n, example))
            .collect()
    };
    Ok((
        ChunkDone {
            counts,
            rejects: flatten(by_reason),
            warnings: flatten(by_check),
            checksum: sum,
        },
        committed,
    ))
}

/// `e`, saying why, when a chunk of a file read back more rows under a key than it sent:
/// the key is not unique in the file, and another chunk (a range of lines) holds the
/// same key. The repeated values are named with every place that holds them.
fn repeated_key(source: &dyn crate::source::Source, chunk: &Chunk, e: Error) -> Error {
    match e {
        Error::Check(m)
            if !source.names_rows_by_key() && m.contains(" rows with this key, 1 was sent") =>
        {
            let repeats = match crate::source::repeated_places(source, chunk) {
                Ok(r) if !r.is_empty() => format!(" ({})", r.join("; ")),
                _ => String::new(),
            };
            Error::Check(format!(
                "{m}; the key ({}) is not unique in {}: another chunk holds a row under the same key{repeats}. A file is split into chunks by position and each chunk's rows are found in the target by their keys, so the key must be unique",
                source.key().join(", "),
                source.describe()
            ))
        }
        other => other,
    }
}

/// The first place of each key value a file source's chunk has read so far, to fail the
/// chunk at a value it holds twice: its read-back could not tell the two rows apart
/// from one row written twice. `None` for a source whose key is unique by nature (a
/// database's, or a file's position).
fn key_places(
    source: &dyn crate::source::Source,
) -> Option<std::collections::HashMap<String, String>> {
    let key = source.key();
    (!source.names_rows_by_key() && !key.is_empty() && key != source.position())
        .then(Default::default)
}

/// Fails when a row of `batch` repeats a key value `seen` holds (see [`key_places`]),
/// naming the value and both places.
fn check_repeats(
    source: &dyn crate::source::Source,
    chunk: &Chunk,
    batch: &arrow::record_batch::RecordBatch,
    base: u64,
    seen: &mut std::collections::HashMap<String, String>,
) -> Result<()> {
    let key = source.key();
    for row in 0..batch.num_rows() {
        let Some(k) = crate::chunk::key::row_key(batch, key, row) else {
            continue;
        };
        let here = crate::source::place(source, batch, row)
            .unwrap_or_else(|| source.locate(chunk, base + row as u64));
        if let Some(first) = seen.get(&k) {
            let label = crate::chunk::key::row_label(batch, key, row).unwrap_or(k);
            return Err(Error::Check(format!(
                "{chunk}: the key ({}) is not unique in {}: {label} at {first} and {here}. A file's rows are found in the target by their keys, so the key must be unique; name a unique column as `key`, or leave `key` out and rows are known by their place in the file",
                key.join(", "),
                source.describe()
            )));
        }
        seen.insert(k, here);
    }
    Ok(())
}

/// One batch of a chunk as read and as written, for a target that may refuse rows.
struct Kept {
    /// The batch as read.
    source: arrow::record_batch::RecordBatch,
    /// The rows before it in the chunk, to locate its rows.
    base: u64,
    /// The batch as written.
    out: arrow::record_batch::RecordBatch,
    /// For each row of `out`, its row in `source`.
    rows: Vec<usize>,
}

/// Counts `entry` under its reason for the summary, the first one as the example.
fn count_reason(
    by_reason: &mut std::collections::BTreeMap<String, (u64, RowFailure)>,
    entry: &QuarantineEntry,
) {
    let example = || {
        let failure = RowFailure {
            location: entry.location.clone(),
            column: entry.column.clone(),
            value: entry.value.clone(),
            reason: entry.reason.clone(),
        };
        (0, failure)
    };
    by_reason
        .entry(entry.grouped_reason())
        .or_insert_with(example)
        .0 += 1;
}

/// How a row the target refused (found at `location`) is kept in the quarantine: the
/// server's message as the reason, its detail as the value.
pub(crate) fn refusal_failure(r: &crate::sink::Refusal, location: String) -> RowFailure {
    RowFailure {
        location,
        column: r.column.clone(),
        value: r.detail.clone(),
        reason: format!("{}{}", crate::sink::REFUSED, r.reason),
    }
}

/// Takes rows `drop` (positions in `out`) out of a written batch and out of `rows`, its
/// map to the rows as read; returns the rows taken out.
pub(crate) fn take_out(
    out: &mut arrow::record_batch::RecordBatch,
    rows: &mut Vec<usize>,
    drop: &[usize],
) -> Result<arrow::record_batch::RecordBatch> {
    let mut keep = vec![true; out.num_rows()];
    for &d in drop {
        keep[d] = false;
    }
    let filter = |batch: &arrow::record_batch::RecordBatch, mask: Vec<bool>| {
        arrow::compute::filter_record_batch(batch, &arrow::array::BooleanArray::from(mask))
            .map_err(|e| Error::Internal(e.to_string()))
    };
    let taken = filter(out, keep.iter().map(|k| !k).collect())?;
    *out = filter(out, keep.clone())?;
    let mut kept = keep.into_iter();
    rows.retain(|_| kept.next().unwrap_or(false));
    Ok(taken)
}

/// Quarantine entries for the rows the target refused (counted across `kept`'s written
/// rows), which are taken out of `kept`; the `unique` values they claimed are given back.
fn refused_entries(
    plan: &Plan,
    chunk: &Chunk,
    kept: &mut [Kept],
    refused: &[crate::sink::Refusal],
    left_out: Option<&[bool]>,
    claims: &mut Claims,
) -> Result<Vec<QuarantineEntry>> {
    let source = plan.source.as_ref();
    let mut entries = Vec::with_capacity(refused.len());
    let mut refused: Vec<&crate::sink::Refusal> = refused.iter().collect();
    refused.sort_by_key(|r| r.row);
    let mut next = refused.into_iter().peekable();
    let mut start = 0;
    // The refused rows as written, whose `unique` values are given back.
    let mut gone = Vec::new();
    for k in kept.iter_mut() {
        let end = start + k.out.num_rows();
        let mut here = Vec::new();
        while let Some(r) = next.next_if(|r| r.row < end) {
            here.push(r);
        }
        if here.is_empty() {
            start = end;
            continue;
        }
        let rows: Vec<usize> = here.iter().map(|r| k.rows[r.row - start]).collect();
        let whole = match left_out {
            Some(used) => Some(whole_rows(plan, chunk, &k.source, &rows, used)?),
            None => None,
        };
        for (i, (r, &row)) in here.iter().zip(&rows).enumerate() {
            let failure = refusal_failure(
                r,
                locate_row(source, &k.source, row, &|row| {
                    source.locate(chunk, k.base + row as u64)
                }),
            );
            entries.push(match &whole {
                Some(whole) => QuarantineEntry::new(chunk.id, whole, i, source.key(), &failure),
                None => QuarantineEntry::new(chunk.id, &k.source, row, source.key(), &failure),
            });
        }
        let drop: Vec<usize> = here.iter().map(|r| r.row - start).collect();
        gone.push(take_out(&mut k.out, &mut k.rows, &drop)?);
        start = end;
    }
    if next.peek().is_some() {
        return Err(Error::Internal(format!(
            "{chunk}: the target refused a row past the {start} rows written"
        )));
    }
    let written: Vec<_> = kept.iter().map(|k| k.out.clone()).collect();
    plan.checks.release_rows(claims, &gone, &written)?;
    Ok(entries)
}

/// Reads `chunk` for a run or `verify`: without the source columns nothing uses, where
/// the source can leave them out (see [`Plan::used_columns`]). Also returns which
/// columns were read when some were left out.
pub(crate) fn read_chunk(
    plan: &Plan,
    chunk: &Chunk,
) -> Result<(crate::source::BatchIter, Option<Vec<bool>>)> {
    let batch_rows = plan.pipeline.chunks.batch_rows;
    if let Some(used) = plan.used_columns()
        && let Some(batches) = plan.source.read_used(chunk, batch_rows, &used)?
    {
        return Ok((batches, Some(used)));
    }
    Ok((plan.source.read(chunk, batch_rows)?, None))
}

/// Rows `rows` of `batch`, which was read with only the `used` columns, read again whole
/// by key for the quarantine: one row per entry of `rows`, in that order. The row read
/// again must hold the values the run saw in every used column; a row the source no
/// longer has, or that changed since, fails the chunk rather than quarantining a row
/// the reason does not fit.
fn whole_rows(
    plan: &Plan,
    chunk: &Chunk,
    batch: &arrow::record_batch::RecordBatch,
    rows: &[usize],
    used: &[bool],
) -> Result<arrow::record_batch::RecordBatch> {
    let source = plan.source.as_ref();
    let keys: Vec<Option<String>> = rows
        .iter()
        .map(|&r| crate::chunk::key::row_key(batch, source.key(), r))
        .collect();
    // A key need not be unique: each is looked up once, and each row takes a row read
    // again under its key that matches it.
    let mut distinct: Vec<Option<String>> = Vec::new();
    let mut slot = std::collections::HashMap::new();
    for k in &keys {
        slot.entry(k.clone()).or_insert_with(|| {
            distinct.push(k.clone());
            distinct.len() - 1
        });
    }
    let Some((found, origin)) = source.read_keys(&distinct)? else {
        return Err(Error::Internal(format!(
            "{} left columns out but cannot read rows again by key",
            source.describe()
        )));
    };
    let mut under: Vec<Vec<usize>> = vec![Vec::new(); distinct.len()];
    for (again, &o) in origin.iter().enumerate() {
        under[o].push(again);
    }
    let same = |row: usize, again: usize| {
        used.iter().enumerate().filter(|(_, u)| **u).all(|(c, _)| {
            batch.column(c).slice(row, 1).to_data() == found.column(c).slice(again, 1).to_data()
        })
    };
    let mut take = Vec::with_capacity(rows.len());
    // Rows alike in every used column are interchangeable, but each is taken once: two
    // rejected rows never stand for one source row.
    let mut taken = vec![false; found.num_rows()];
    for (&row, key) in rows.iter().zip(&keys) {
        let candidates = &under[slot[key]];
        let again = candidates
            .iter()
            .copied()
            .find(|&j| !taken[j] && same(row, j));
        let Some(again) = again else {
            let why = match candidates.is_empty() {
                true => "the source no longer has it",
                false => "it changed since the chunk read it",
            };
            return Err(Error::Check(format!(
                "{chunk}: rejected row {} of {} could not be read again whole for the quarantine: {why}; the chunk is not committed, run again to redo it",
                key.as_deref().unwrap_or("(no key)"),
                source.describe()
            )));
        };
        taken[again] = true;
        take.push(again as u32);
    }
    arrow::compute::take_record_batch(&found, &arrow::array::UInt32Array::from(take))
        .map_err(|e| Error::Internal(e.to_string()))
}

/// One source batch after the transform and the declared checks: what would be written,
/// and every rejected row with its location. `run` and `dry-run` both go through here.
pub(crate) struct Processed {
    /// The transform's output, less the rows a check rejected.
    pub out: crate::transform::Transformed,
    /// Counts for this batch (written = rows that passed).
    pub counts: ChunkCounts,
    /// Rejected rows, located in the source.
    pub rejects: Vec<RowFailure>,
    /// Rows written although a `warn` check failed, with the reason as summaries group it.
    pub warnings: Vec<(String, RowFailure)>,
}

/// Transforms `batch` on the CPU pool, applies the declared checks, and locates the
/// rejects. `locate` names a row of the batch (by its index) in the source; `unique`
/// values are claimed for `chunk` in `claims`.
pub(crate) fn process_batch(
    plan: &Plan,
    pool: &rayon::ThreadPool,
    batch: &arrow::record_batch::RecordBatch,
    locate: &dyn Fn(usize) -> String,
    chunk: usize,
    claims: &mut Claims,
) -> Result<Processed> {
    let source = plan.source.as_ref();
    let mut out = pool.install(|| plan.transform.apply(batch))?;
    let mut warnings = Vec::new();
    if !plan.checks.is_empty() {
        let violations = pool.install(|| plan.checks.apply(&out.batch, chunk, claims))?;
        if !violations.is_empty() {
            let input_row = |row: usize| out.rows.as_ref().map_or(row, |r| r[row]);
            let failure = |v: &Violation| RowFailure {
                location: locate_row(source, batch, input_row(v.row), locate),
                column: v.column.clone(),
                value: v.value.clone(),
                reason: v.reason.clone(),
            };
            if let Some(v) = violations.iter().find(|v| v.policy == Policy::Fail) {
                return Err(Error::Check(format!(
                    "{} (policy = \"fail\" stops the chunk)",
                    failure(v)
                )));
            }
            let mut drop = vec![false; out.batch.num_rows()];
            for v in violations.iter().filter(|v| v.policy != Policy::Warn) {
                if !drop[v.row] {
                    drop[v.row] = true;
                    out.rejects.push(crate::transform::Reject {
                        row: input_row(v.row),
                        column: v.column.clone(),
                        value: v.value.clone(),
                        reason: v.reason.clone(),
                    });
                }
            }
            // Warnings count rows that are written, once per check.
            for v in violations.iter().filter(|v| v.policy == Policy::Warn) {
                if !drop[v.row] {
                    let grouped = match &v.column {
                        Some(c) => format!("column {c}: {}", strip_quoted(&v.reason)),
                        None => strip_quoted(&v.reason),
                    };
                    warnings.push((grouped, failure(v)));
                }
            }
            if drop.iter().any(|d| *d) {
                let keep =
                    arrow::array::BooleanArray::from(drop.iter().map(|d| !d).collect::<Vec<_>>());
                let rows: Vec<usize> = (0..drop.len())
                    .filter(|&i| !drop[i])
                    .map(input_row)
                    .collect();
                out.batch = arrow::compute::filter_record_batch(&out.batch, &keep)
                    .map_err(|e| Error::Internal(e.to_string()))?;
                out.rows = Some(rows);
                out.rejects.sort_by_key(|r| r.row);
            }
        }
    }
    let rejects = out
        .rejects
        .iter()
        .map(|r| RowFailure {
            location: locate_row(source, batch, r.row, locate),
            column: r.column.clone(),
            value: r.value.clone(),
            reason: r.reason.clone(),
        })
        .collect::<Vec<_>>();
    let counts = ChunkCounts {
        read: batch.num_rows() as u64,
        written: out.batch.num_rows() as u64,
        filtered: out.filtered as u64,
        rejected: rejects.len() as u64,
    };
    Ok(Processed {
        out,
        counts,
        rejects,
        warnings,
    })
}

/// Names a row of `batch` for messages: by key for databases (`sqlite://x table t, id=42`),
/// by position plus key for files (`orders.csv line 17 (order_id=16)`).
pub(crate) fn locate_row(
    source: &dyn crate::source::Source,
    batch: &arrow::record_batch::RecordBatch,
    row: usize,
    locate: &dyn Fn(usize) -> String,
) -> String {
    // A row known by its place: the location says it all.
    if source.key() == source.position() {
        return locate(row);
    }
    let parts: Option<Vec<String>> = source
        .key()
        .iter()
        .map(|k| {
            let i = batch.schema().index_of(k).ok()?;
            Some(format!("{k}={}", cell_text(batch, i, row)?))
        })
        .collect();
    let key = parts.filter(|p| !p.is_empty()).map(|p| p.join(", "));
    match key {
        Some(k) if source.names_rows_by_key() => format!("{}, {k}", source.describe()),
        Some(k) => format!("{} ({k})", locate(row)),
        None => locate(row),
    }
}

/// The process's peak resident set size, from `/proc/self/status` (`VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use arrow::record_batch::RecordBatch;

    use super::*;
    use crate::chunk::ChunkRange;
    use crate::chunk::key::row_key;
    use crate::config::Pipeline;
    use crate::source::{BatchIter, Source};

    /// A table as a source whose rows can change between reads: `now` is what a lookup
    /// by key finds.
    struct Table {
        now: RecordBatch,
        key: Vec<String>,
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("qty", DataType::Int64, true),
            Field::new("note", DataType::Utf8, true),
        ]))
    }

    fn rows(ids: &[i64], qty: &[i64], note: &[&str]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(Int64Array::from(qty.to_vec())),
                Arc::new(StringArray::from(note.to_vec())),
            ],
        )
        .unwrap()
    }

    impl Source for Table {
        fn describe(&self) -> String {
            "table t".into()
        }
        fn schema(&self) -> SchemaRef {
            schema()
        }
        fn plan(&self, _rows: u64) -> Result<Vec<Chunk>> {
            Ok(Vec::new())
        }
        fn read(&self, _chunk: &Chunk, _batch_rows: usize) -> Result<BatchIter> {
            Ok(Box::new(std::iter::once(Ok(self.now.clone()))))
        }
        fn locate(&self, chunk: &Chunk, row: u64) -> String {
            format!("{chunk} row {row}")
        }
        fn key(&self) -> &[String] {
            &self.key
        }
        fn read_keys(&self, keys: &[Option<String>]) -> Result<Option<(RecordBatch, Vec<usize>)>> {
            let mut take = Vec::new();
            let mut origin = Vec::new();
            for row in 0..self.now.num_rows() {
                let k = row_key(&self.now, &self.key, row);
                if let Some(i) = keys.iter().position(|w| *w == k) {
                    take.push(row as u32);
                    origin.push(i);
                }
            }
            let found = arrow::compute::take_record_batch(
                &self.now,
                &arrow::array::UInt32Array::from(take),
            )
            .unwrap();
            Ok(Some((found, origin)))
        }
    }

    fn plan(now: RecordBatch) -> Plan {
        let text = "name = \"t\"\n[source]\nurl = \"in.csv\"\nkey = \"id\"\n[target]\nurl = \"out\"\nformat = \"parquet\"\n[target.columns]\nid = { type = \"bigint\", expr = \"id\" }\nsmall = { type = \"smallint\", expr = \"qty\" }\n";
        let pipeline = Pipeline::parse(std::path::Path::new("/p/t.toml"), text, &|_| None).unwrap();
        let source = Arc::new(Table {
            now,
            key: vec!["id".into()],
        });
        Plan::with_source(pipeline, source, crate::runtime::IoRuntime::new().unwrap()).unwrap()
    }

    fn shown(batch: RecordBatch) -> String {
        arrow::util::pretty::pretty_format_batches(&[batch])
            .unwrap()
            .to_string()
    }

    const CHUNK: Chunk = Chunk {
        id: 4,
        range: ChunkRange::Keys { lo: None, hi: None },
        rows: None,
    };

    #[test]
    fn rejected_rows_read_without_some_columns_are_read_again_whole_or_fail_the_chunk() {
        // What the run read: `note` left out (NULL).
        let seen = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 2, 3])),
                Arc::new(Int64Array::from(vec![10, 70000, 80000, 90000])),
                Arc::new(StringArray::from(vec![None::<&str>; 4])),
            ],
        )
        .unwrap();
        let p = plan(rows(
            &[1, 2, 2, 3],
            &[10, 80000, 70000, 90000],
            &["a", "b", "c", "d"],
        ));
        assert_eq!(p.used_columns(), Some(vec![true, true, false]));
        let used = p.used_columns().unwrap();

        // Rows 1 and 2 share key 2: each gets the row that holds its own values.
        let whole = whole_rows(&p, &CHUNK, &seen, &[3, 1, 2], &used).unwrap();
        assert_eq!(
            shown(whole),
            "\
+----+-------+------+
| id | qty   | note |
+----+-------+------+
| 3  | 90000 | d    |
| 2  | 70000 | c    |
| 2  | 80000 | b    |
+----+-------+------+"
        );

        // The source changed a used value since the chunk read it, or lost the row.
        let changed = plan(rows(&[1, 2, 3], &[10, 70000, 91000], &["a", "c", "d"]));
        let err = whole_rows(&changed, &CHUNK, &seen, &[3], &used).unwrap_err();
        assert_eq!(
            err.to_string(),
            "check failed: chunk 4 (all keys): rejected row 3 of table t could not be read again whole for the quarantine: it changed since the chunk read it; the chunk is not committed, run again to redo it"
        );
        // Two rows alike in the used columns, under one key: each is quarantined once.
        let twins = plan(rows(&[2, 2], &[70000, 70000], &["b", "c"]));
        let same_seen = seen.slice(1, 1);
        let both =
            arrow::compute::concat_batches(&same_seen.schema(), &[same_seen.clone(), same_seen])
                .unwrap();
        let whole = whole_rows(&twins, &CHUNK, &both, &[0, 1], &used).unwrap();
        assert_eq!(
            shown(whole),
            "\
+----+-------+------+
| id | qty   | note |
+----+-------+------+
| 2  | 70000 | b    |
| 2  | 70000 | c    |
+----+-------+------+"
        );
        let one = plan(rows(&[2], &[70000], &["b"]));
        let err = whole_rows(&one, &CHUNK, &both, &[0, 1], &used).unwrap_err();
        assert!(
            err.to_string()
                .contains("it changed since the chunk read it"),
            "{err}"
        );
        let gone = plan(rows(&[1, 2], &[10, 70000], &["a", "c"]));
        let err = whole_rows(&gone, &CHUNK, &seen, &[1, 3], &used).unwrap_err();
        assert!(
            err.to_string().ends_with(
                "rejected row 3 of table t could not be read again whole for the quarantine: the source no longer has it; the chunk is not committed, run again to redo it"
            ),
            "{err}"
        );
    }
}
