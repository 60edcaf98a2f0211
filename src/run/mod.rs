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
pub use self::status::{FailedChunk, StatusReport, status};
pub use self::verify::{ChunkDifference, VerifyReport, verify};
use crate::check::quarantine::{QuarantineEntry, strip_quoted};
use crate::check::readback::ReadBack;
use crate::check::rules::{Claims, Violation};
use crate::check::{ChunkCounts, conservation};
use crate::checkpoint::{CheckpointStore, ChunkState, DoneMark, SqliteStore, diff_settings};
use crate::config::{Policy, Verify};
use crate::plan::{Chunk, Plan};
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
}

/// Attempts per chunk for transient errors (connection reset, busy, deadlock).
const MAX_ATTEMPTS: u32 = 4;

/// A chunk that failed, and why.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkFailure {
    /// The chunk's id.
    pub chunk: usize,
    /// The chunk's range, for humans.
    pub range: String,
    /// The error, redacted.
    pub error: String,
    /// Whether the failure is about data (exit code 1) rather than the environment (2).
    #[serde(skip)]
    pub data: bool,
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
    /// Order-independent checksum of the rows this run wrote (hex); the same rows give the
    /// same checksum whatever the chunk size or thread count.
    pub checksum: String,
    /// Peak resident memory of the process so far, bytes (Linux only).
    pub peak_rss_bytes: Option<u64>,
    /// Whether Ctrl-C stopped the run early.
    pub interrupted: bool,
    /// Each failed chunk.
    pub failures: Vec<ChunkFailure>,
}

impl Summary {
    /// 0 when every chunk committed and no row was rejected; 1 when rows were rejected or
    /// only data checks failed; 2 otherwise (including an interrupted run).
    pub fn exit_code(&self) -> i32 {
        if self.interrupted || self.failures.iter().any(|f| !f.data) {
            2
        } else if !self.failures.is_empty() || self.rows.rejected > 0 {
            1
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
pub fn run(
    plan: &Plan,
    sink: &dyn Sink,
    observer: &dyn Observer,
    opts: &RunOptions,
) -> Result<Summary> {
    let started = Instant::now();
    let cfg = &plan.pipeline.chunks;
    let store = checkpoint_store(plan, sink);
    let fingerprint = plan.pipeline.fingerprint();
    let settings = plan.pipeline.settings();
    let existing = store.load()?;
    let (records, how) = match existing {
        Some(_) if opts.restart => {
            // Forget the checkpoint before cleaning the target: a crash in between leaves
            // old rows and no checkpoint, which a fresh run refuses loudly, never a
            // checkpoint claiming rows that are gone.
            store.discard()?;
            (None, Prepare::Restart)
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

    std::thread::scope(|s| {
        for w in 0..parallel {
            let (next, stop, results, todo, chunks, shared) =
                (&next, &stop, &results, &todo, &chunks, &shared);
            let cancelled = &cancelled;
            std::thread::Builder::new()
                .name(format!("rowshift-chunk-{w}"))
                .spawn_scoped(s, move || {
                    loop {
                        if stop.load(Ordering::SeqCst) || cancelled() {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(&id) = todo.get(i) else { break };
                        let chunk = &chunks[id];
                        observer.on_event(&Event::ChunkStarted { chunk: chunk.id });
                        let t0 = Instant::now();
                        match run_with_retries(shared, chunk) {
                            Ok(done) => {
                                observer.on_event(&Event::ChunkDone {
                                    chunk: chunk.id,
                                    counts: done.counts,
                                    elapsed: t0.elapsed(),
                                });
                                results.lock().unwrap_or_else(|p| p.into_inner()).add(done);
                            }
                            Err((e, stop_run)) => {
                                let cause = match &e {
                                    Error::Chunk { source, .. } => source.to_string(),
                                    other => other.to_string(),
                                };
                                let failure = ChunkFailure {
                                    chunk: chunk.id,
                                    range: chunk.to_string(),
                                    error: crate::config::redact(&cause),
                                    data: e.is_data_failure(),
                                };
                                // If even the failure cannot be recorded, the chunk stays
                                // running and a later run redoes it.
                                let _ =
                                    shared.timed(|| shared.store.fail(chunk.id, &failure.error));
                                observer.on_event(&Event::ChunkFailed {
                                    chunk: chunk.id,
                                    error: failure.error.clone(),
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
    let mut failures = totals.failures;
    failures.sort_by_key(|f| f.chunk);
    let attempted = totals.done + failures.len();
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
        chunks_skipped: skipped,
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
        checksum: format!("{:016x}", totals.checksum),
        rows_per_second: if seconds > 0.0 {
            totals.rows.read as f64 / seconds
        } else {
            0.0
        },
        peak_rss_bytes: peak_rss_bytes(),
        interrupted: cancelled() && todo.len() > attempted,
        failures,
    };
    sink.finish()?;
    observer.on_event(&Event::Finished(Box::new(summary.clone())));
    Ok(summary)
}

#[derive(Default)]
struct Totals {
    rows: ChunkCounts,
    checksum: u64,
    done: usize,
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

/// Runs a chunk, retrying transient errors with exponential backoff. On failure, says
/// whether the whole run must stop (the run-wide reject limit was passed).
fn run_with_retries(shared: &Shared<'_>, chunk: &Chunk) -> Result<ChunkDone, (Error, bool)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        shared
            .timed(|| shared.store.claim(chunk.id))
            .map_err(|e| (e, false))?;
        let t0 = Instant::now();
        match run_chunk(shared, chunk, attempt) {
            Ok((done, committed)) => {
                if !committed.marked {
                    let mark = DoneMark {
                        chunk: chunk.id,
                        counts: done.counts,
                        seconds: t0.elapsed().as_secs_f64(),
                        checksum: done.checksum,
                    };
                    shared
                        .timed(|| shared.store.finish(&mark))
                        .map_err(|e| (e, false))?;
                }
                return Ok(done);
            }
            Err(e) if e.is_transient() && attempt < MAX_ATTEMPTS => {
                std::thread::sleep(Duration::from_millis(50 << attempt));
            }
            Err(e) => {
                let stop = matches!(&e, Error::Chunk { source, .. } if matches!(**source, Error::RejectLimit(_)));
                return Err((e, stop));
            }
        }
    }
}

/// Reads, transforms, checks and commits one chunk. `unique` values it claims are given
/// back if it does not commit.
fn run_chunk(shared: &Shared<'_>, chunk: &Chunk, attempt: u32) -> Result<(ChunkDone, Committed)> {
    let mut claims = Claims::default();
    let out = run_chunk_claiming(shared, chunk, attempt, &mut claims);
    if out.is_err() {
        shared.plan.checks.release(claims);
    }
    out
}

fn run_chunk_claiming(
    shared: &Shared<'_>,
    chunk: &Chunk,
    attempt: u32,
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
    for batch in source
        .read(chunk, plan.pipeline.chunks.batch_rows)
        .map_err(wrap)?
    {
        let batch = batch.map_err(wrap)?;
        let base = offset;
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
            let mut entries = Vec::with_capacity(p.rejects.len());
            for (r, failure) in p.out.rejects.iter().zip(p.rejects) {
                let entry = QuarantineEntry::new(chunk.id, &batch, r.row, source.key(), &failure);
                let slot = by_reason
                    .entry(entry.grouped_reason())
                    .or_insert((0, failure));
                slot.0 += 1;
                entries.push(entry);
            }
            writer.reject(entries).map_err(wrap)?;
        }
        for (check, failure) in p.warnings {
            by_check.entry(check).or_insert((0, failure)).0 += 1;
        }
        sum = sum.wrapping_add(crate::check::checksum(&p.out.batch).map_err(wrap)?);
        writer.write(&p.out.batch).map_err(wrap)?;
        if verify && p.out.batch.num_rows() > 0 {
            sent.push(p.out.batch);
        }
        offset += batch.num_rows() as u64;
    }
    let unreadable = source.unreadable(chunk);
    if !unreadable.is_empty() {
        let entries: Vec<QuarantineEntry> = unreadable
            .into_iter()
            .map(|u| {
                let entry = QuarantineEntry::unreadable(chunk.id, u);
                let failure = RowFailure {
                    location: entry.location.clone(),
                    column: entry.column.clone(),
                    value: entry.value.clone(),
                    reason: entry.reason.clone(),
                };
                by_reason
                    .entry(entry.grouped_reason())
                    .or_insert((0, failure))
                    .0 += 1;
                entry
            })
            .collect();
        counts.read += entries.len() as u64;
        counts.rejected += entries.len() as u64;
        writer.reject(entries).map_err(wrap)?;
    }
    conservation(chunk, &counts).map_err(wrap)?;
    if let Some(max) = limits.max_reject_ratio
        && counts.read > 0
        && counts.rejected as f64 / counts.read as f64 > max
    {
        return Err(wrap(Error::Check(format!(
            "{chunk}: {} of {} rows rejected, more than max_reject_ratio = {max}",
            counts.rejected, counts.read
        ))));
    }
    let total = shared
        .rejected_total
        .fetch_add(counts.rejected, Ordering::SeqCst)
        + counts.rejected;
    if let Some(max) = limits.max_rejects
        && total > max
    {
        shared
            .rejected_total
            .fetch_sub(counts.rejected, Ordering::SeqCst);
        return Err(wrap(Error::RejectLimit(format!(
            "{total} rows rejected so far, more than max_rejects = {max}; the run stops"
        ))));
    }
    let key = plan.target_key().map(|k| k.columns).unwrap_or_default();
    let readback = if verify {
        Some(ReadBack {
            chunk,
            rows: counts.written,
            checksum: sum,
            sent: &sent,
            key: &key,
            selection: plan.selection(chunk, &sent).map_err(wrap)?,
            nanos: &shared.verify_nanos,
        })
    } else {
        None
    };
    let result = inject_fault(chunk.id, attempt).and_then(|()| {
        writer.commit(
            &DoneMark {
                chunk: chunk.id,
                counts,
                seconds: t0.elapsed().as_secs_f64(),
                checksum: sum,
            },
            readback.as_ref(),
        )
    });
    let committed = match result {
        Ok(c) => c,
        Err(e) => {
            shared
                .rejected_total
                .fetch_sub(counts.rejected, Ordering::SeqCst);
            return Err(wrap(e));
        }
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

/// A fault for tests, from `ROWSHIFT_FAULT`: `chunk=3` fails chunk 3 permanently;
/// `chunk=3,transient=2` fails its first two attempts with a transient error.
fn inject_fault(chunk: usize, attempt: u32) -> Result<()> {
    let Ok(spec) = std::env::var("ROWSHIFT_FAULT") else {
        return Ok(());
    };
    let mut target = None;
    let mut transient = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("chunk", v)) => target = v.parse::<usize>().ok(),
            Some(("transient", v)) => transient = v.parse::<u32>().ok(),
            _ => {}
        }
    }
    match (target == Some(chunk), transient) {
        (false, _) => Ok(()),
        (true, None) => Err(Error::Unsupported(format!(
            "injected fault in the sink for chunk {chunk} (ROWSHIFT_FAULT)"
        ))),
        (true, Some(n)) if attempt <= n => Err(Error::db(
            "injected fault (ROWSHIFT_FAULT)",
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset",
            )),
        )),
        (true, Some(_)) => Ok(()),
    }
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

/// Formats a duration as `1.23s` or `2m03s`.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.2}s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}
