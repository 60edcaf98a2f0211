//! The executor: plans chunks, runs them on parallel workers, checks each, and reports
//! progress as [`Event`]s to an [`Observer`].
//!
//! Each worker is a plain thread that owns one chunk at a time: it pulls batches from the
//! source (database reads run on the I/O runtime and arrive over a channel), hands the CPU
//! work to the rayon pool, and feeds the chunk's writer. With several workers, reading and
//! writing of one chunk overlap with transforming another, and memory is bounded by
//! `parallel` chunks in flight, whatever the table's size.

mod chunk;
mod dry_run;
mod hooks;
mod keys;
mod observer;
mod process;
mod refused;
mod report;
mod requeue;
mod status;
mod verify;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use self::chunk::*;
pub use self::dry_run::{DryRunOptions, DryRunReport, RejectGroup, SampleMode, dry_run};
pub use self::hooks::RunHooks;
use self::keys::*;
pub use self::observer::{Event, NoopObserver, Observer};
pub(crate) use self::process::*;
use self::refused::*;
pub use self::report::*;
pub use self::requeue::{RequeueReport, requeue_rejects};
pub use self::status::{FailedChunk, RunningState, StatusReport, WorkerStatus, recorded, status};
pub use self::verify::{ChunkDifference, VerifyReport, verify};
use crate::check::conservation;
use crate::check::quarantine::{QuarantineEntry, RowJsonWriter, grouped_reason};
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
    /// An online move's capture and catch-up (`[online]`), joined to the run.
    pub hooks: Option<Arc<dyn RunHooks>>,
    /// Join a run shared by several processes (`--worker`), taking chunks from the
    /// target's checkpoint tables under leases.
    pub worker: bool,
    /// How long a shared run's lease lasts without a heartbeat; overrides `[chunks]
    /// lease_seconds`.
    pub lease: Option<Duration>,
}

/// The first pause before a chunk's transient error is retried; each retry doubles it,
/// up to [`MAX_BACKOFF`], and a random part of it is left out (jitter), so that workers
/// that failed together do not retry together.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The longest pause between two attempts of a chunk.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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
    /// The pipeline's run lock, held for the run; a process of a shared run holds none
    /// while chunks run.
    lock: Option<&'a RunLock>,
    /// This process's leases, in a shared run (`--worker`).
    lease: Option<&'a worker::Lease<'a>>,
    pool: rayon::ThreadPool,
    rejected_total: AtomicU64,
    /// Nanoseconds spent in checkpoint calls, to report bookkeeping's cost.
    checkpoint_nanos: AtomicU64,
    /// Nanoseconds spent reading chunks back, to report verification's cost.
    verify_nanos: AtomicU64,
}

impl Shared<'_> {
    /// Whether the run can no longer commit: its run lock is gone, or (in a shared run)
    /// the lease on `chunk`.
    fn lost(&self, chunk: Option<usize>) -> bool {
        self.lock.is_some_and(|l| l.lost())
            || matches!((self.lease, chunk), (Some(l), Some(c)) if l.is_lost(c))
    }

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
    if opts.worker {
        return worker::run_worker(plan, sink, observer, opts, &store);
    }
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
    // Workers of a shared run hold no run lock while their chunks run: a run of its own
    // would take their chunks from under them.
    let lease = Duration::from_secs(cfg.lease_seconds);
    let live: Vec<String> = store
        .workers()?
        .into_iter()
        .filter(|w| w.live(lease))
        .map(|w| {
            format!(
                "{} (last heartbeat {} ago)",
                w.id,
                fmt_duration(Duration::from_millis(
                    (w.now_ms - w.heartbeat_ms).max(0) as u64
                ))
            )
        })
        .collect();
    if !live.is_empty() {
        return Err(Error::Unsupported(format!(
            "pipeline {} is being run by {} worker(s) of a shared run: {}; join them with `rowshift run --worker`, or wait until they end",
            plan.pipeline.name,
            live.len(),
            live.join(", ")
        )));
    }
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
    if let Some(h) = &opts.hooks {
        h.before_plan(plan, sink, records.is_none())?;
    }
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
    execute(
        plan,
        sink,
        observer,
        opts,
        store,
        Work {
            chunks: &chunks,
            todo,
            skipped,
            queue: None,
            how,
            accepted,
            started,
            lock: Some(lock),
        },
    )
}

/// The chunks a run has to do, and how it finds them.
struct Work<'a> {
    /// The plan's chunks, by id.
    chunks: &'a [Chunk],
    /// The chunks not done when the run started (in a shared run, when it joined).
    todo: Vec<usize>,
    /// The chunks done then.
    skipped: usize,
    /// In a shared run, the queue the chunks are taken from instead of `todo`.
    queue: Option<&'a worker::Lease<'a>>,
    how: Prepare,
    /// Changes to the pipeline the run accepted.
    accepted: Vec<String>,
    started: Instant,
    lock: Option<&'a RunLock>,
}

/// Runs `work`'s chunks on parallel workers, then builds what comes after the load when
/// every chunk is done, and sums up.
fn execute(
    plan: &Plan,
    sink: &dyn Sink,
    observer: &dyn Observer,
    opts: &RunOptions,
    store: &Arc<dyn CheckpointStore>,
    work: Work<'_>,
) -> Result<Summary> {
    let Work {
        chunks,
        todo,
        skipped,
        queue,
        how,
        accepted,
        started,
        lock,
    } = work;
    let cfg = &plan.pipeline.chunks;
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
        lease: queue,
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
    // Why a shared run's queue could not be read: the process takes no more chunks.
    let queue_error: Mutex<Option<Error>> = Mutex::new(None);
    // The next chunk and its claim's token (a shared run's claim is taken here; a
    // run's own, by each attempt).
    let next_chunk = || -> Option<(usize, Option<u64>)> {
        let Some(lease) = queue else {
            let i = next.fetch_add(1, Ordering::SeqCst);
            return todo.get(i).map(|&id| (id, None));
        };
        let budget = Duration::from_secs(cfg.retry_seconds);
        let mut t0 = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            // No chunk to take while others hold some: wait, since a lease whose
            // process died runs out and its chunk is then this process's to take.
            let found = shared.timed(|| {
                lease.claim_next().and_then(|found| match found {
                    Some(f) => Ok(Some(Some(f))),
                    None => lease.open_chunks().map(|open| (open == 0).then_some(None)),
                })
            });
            match found {
                Ok(Some(found)) => return found.map(|(id, token)| (id, Some(token))),
                Ok(None) => {
                    if stop.load(Ordering::SeqCst) || cancelled() {
                        return None;
                    }
                    (attempt, t0) = (0, Instant::now());
                    std::thread::sleep(lease.poll());
                }
                Err(e) if e.is_transient() && t0.elapsed() + backoff(attempt) <= budget => {
                    std::thread::sleep(backoff(attempt));
                }
                Err(e) => {
                    stop.store(true, Ordering::SeqCst);
                    queue_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e);
                    return None;
                }
            }
        }
    };
    let beating = AtomicBool::new(false);

    std::thread::scope(|s| {
        if let Some(lease) = queue {
            let beating = &beating;
            std::thread::Builder::new()
                .name("rowshift-heartbeat".into())
                .spawn_scoped(s, move || worker::heartbeats(lease, beating))
                .expect("spawning the heartbeat thread");
        }
        let workers: Vec<_> = (0..parallel).map(|w| {
            let (stop, results, chunks, shared, lock_lost) =
                (&stop, &results, &chunks, &shared, &lock_lost);
            let (cancelled, next_chunk) = (&cancelled, &next_chunk);
            std::thread::Builder::new()
                .name(format!("rowshift-chunk-{w}"))
                .spawn_scoped(s, move || {
                    loop {
                        if stop.load(Ordering::SeqCst) || cancelled() {
                            break;
                        }
                        if shared.lost(None) {
                            lock_lost.store(true, Ordering::SeqCst);
                            break;
                        }
                        let Some((id, leased)) = next_chunk() else { break };
                        let chunk = &chunks[id];
                        observer.on_event(&Event::ChunkStarted { chunk: chunk.id });
                        let t0 = Instant::now();
                        let outcome = run_with_retries(shared, chunk, leased);
                        if let Some(lease) = shared.lease {
                            let counts = match &outcome {
                                Ok(Outcome::Done(done)) => Some(done.counts),
                                _ => None,
                            };
                            lease.release(chunk.id, counts.as_ref());
                        }
                        match outcome {
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
                            Err(failed)
                                if shared.lease.is_some()
                                    && crate::checkpoint::is_claim_lost(&failed.error) =>
                            {
                                observer.on_event(&Event::ChunkLost {
                                    chunk: chunk.id,
                                    reason: failed.error.to_string(),
                                });
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
                .expect("spawning a worker thread")
        }).collect();
        for w in workers {
            let _ = w.join();
        }
        // The leases are kept alive until every chunk thread is done with them.
        beating.store(true, Ordering::SeqCst);
    });

    let totals = results.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = queue_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
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
    let loaded = store.load()?;
    let (state, checksum) = match &loaded {
        Some(c) => run_state(c),
        None => (RunState::default(), 0),
    };
    // A shared run's chunks not yet taken are left to the other workers; those not
    // done are what the checkpoint says is still pending or running.
    let pending = match (queue, &loaded) {
        (Some(_), Some(c)) => c
            .chunks
            .iter()
            .filter(|r| matches!(r.state, ChunkState::Pending | ChunkState::Running))
            .count(),
        _ => todo.len() - attempted,
    };
    let interrupted = cancelled() && pending > 0;
    // The declared indexes and constraints come once every chunk is done, whichever run
    // did them: a rerun of a finished run builds what the last one could not.
    let post_load = if failures.is_empty() && !interrupted && state.chunks_done == chunks.len() {
        if let Some(h) = &opts.hooks {
            h.after_copy(plan, sink, chunks)?;
        }
        match queue {
            Some(_) => worker::post_load_shared(sink, observer, store.as_ref(), opts)?,
            None => {
                crate::fault::crash_run("post-load");
                sink.post_load()?
            }
        }
    } else {
        Vec::new()
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
        chunks_pending: pending,
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
        interrupted,
        failures,
        post_load,
        worker: queue.is_some(),
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
