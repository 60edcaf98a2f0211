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

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use self::dry_run::{DryRunOptions, DryRunReport, RejectGroup, SampleMode, dry_run};
pub use self::observer::{Event, NoopObserver, Observer};
use crate::check::{ChunkCounts, conservation};
use crate::plan::{Chunk, Plan};
use crate::sink::Sink;
use crate::transform::cell_text;
use crate::{Error, Result, RowFailure};

/// Knobs the command line can override.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Chunks in flight; overrides `[chunks] parallel`.
    pub parallel: Option<usize>,
    /// Rows per chunk; overrides `[chunks] rows`.
    pub chunk_rows: Option<u64>,
    /// Stop starting new chunks after the first failure.
    pub fail_fast: bool,
}

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

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The pipeline's name.
    pub pipeline: String,
    /// Chunks in the plan.
    pub chunks_total: usize,
    /// Chunks committed.
    pub chunks_done: usize,
    /// Chunks that failed.
    pub chunks_failed: usize,
    /// Row counts over all committed chunks.
    pub rows: ChunkCounts,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Rows read per second of wall time.
    pub rows_per_second: f64,
    /// Peak resident memory of the process so far, bytes (Linux only).
    pub peak_rss_bytes: Option<u64>,
    /// Each failed chunk.
    pub failures: Vec<ChunkFailure>,
}

impl Summary {
    /// 0 when every chunk committed, 1 when only data checks failed, 2 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.failures.is_empty() {
            0
        } else if self.failures.iter().all(|f| f.data) {
            1
        } else {
            2
        }
    }
}

/// Runs a pipeline to the end: plans, prepares the target, runs every chunk.
pub fn run(
    plan: &Plan,
    sink: &dyn Sink,
    observer: &dyn Observer,
    opts: &RunOptions,
) -> Result<Summary> {
    let started = Instant::now();
    let cfg = &plan.pipeline.chunks;
    let chunks = plan.source.plan(opts.chunk_rows.unwrap_or(cfg.rows))?;
    let parallel = opts
        .parallel
        .unwrap_or(cfg.parallel)
        .clamp(1, chunks.len().max(1));
    observer.on_event(&Event::Planned {
        chunks: chunks.len(),
        rows: chunks.iter().map(|c| c.rows).sum(),
    });
    sink.prepare()?;

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(parallel)
        .thread_name(|i| format!("rowshift-cpu-{i}"))
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the CPU pool: {e}")))?;
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let totals = Mutex::new((ChunkCounts::default(), 0usize, Vec::<ChunkFailure>::new()));

    std::thread::scope(|s| {
        for w in 0..parallel {
            let (next, stop, totals, chunks, pool) = (&next, &stop, &totals, &chunks, &pool);
            std::thread::Builder::new()
                .name(format!("rowshift-chunk-{w}"))
                .spawn_scoped(s, move || {
                    loop {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(chunk) = chunks.get(i) else { break };
                        observer.on_event(&Event::ChunkStarted { chunk: chunk.id });
                        let t0 = Instant::now();
                        let result = run_chunk(plan, sink, pool, chunk);
                        let mut guard = totals.lock().unwrap_or_else(|p| p.into_inner());
                        match result {
                            Ok(counts) => {
                                guard.0 += counts;
                                guard.1 += 1;
                                drop(guard);
                                observer.on_event(&Event::ChunkDone {
                                    chunk: chunk.id,
                                    counts,
                                    elapsed: t0.elapsed(),
                                });
                            }
                            Err(e) => {
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
                                guard.2.push(failure.clone());
                                drop(guard);
                                observer.on_event(&Event::ChunkFailed {
                                    chunk: chunk.id,
                                    error: failure.error,
                                });
                                if opts.fail_fast {
                                    stop.store(true, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                })
                .expect("spawning a worker thread");
        }
    });

    let (rows, done, mut failures) = totals.into_inner().unwrap_or_else(|p| p.into_inner());
    failures.sort_by_key(|f| f.chunk);
    let seconds = started.elapsed().as_secs_f64();
    let summary = Summary {
        pipeline: plan.pipeline.name.clone(),
        chunks_total: chunks.len(),
        chunks_done: done,
        chunks_failed: failures.len(),
        rows,
        seconds,
        rows_per_second: if seconds > 0.0 {
            rows.read as f64 / seconds
        } else {
            0.0
        },
        peak_rss_bytes: peak_rss_bytes(),
        failures,
    };
    sink.finish()?;
    observer.on_event(&Event::Finished(summary.clone()));
    Ok(summary)
}

/// Reads, transforms, checks and commits one chunk.
fn run_chunk(
    plan: &Plan,
    sink: &dyn Sink,
    pool: &rayon::ThreadPool,
    chunk: &Chunk,
) -> Result<ChunkCounts> {
    let wrap = |e: Error| Error::Chunk {
        chunk: chunk.id,
        source: Box::new(e),
    };
    let source = plan.source.as_ref();
    let mut writer = sink.open_chunk(chunk).map_err(wrap)?;
    let mut counts = ChunkCounts::default();
    let mut offset = 0u64;
    for batch in source
        .read(chunk, plan.pipeline.chunks.batch_rows)
        .map_err(wrap)?
    {
        let batch = batch.map_err(wrap)?;
        let base = offset;
        let p = process_batch(plan, pool, &batch, &|row| {
            source.locate(chunk, base + row as u64)
        })
        .map_err(wrap)?;
        counts += p.counts;
        // Until rejected rows have a quarantine to go to, one stops its chunk: a row is
        // never dropped silently.
        if let Some(failure) = p.rejects.into_iter().next() {
            return Err(wrap(Error::Row(failure)));
        }
        writer.write(&p.out.batch).map_err(wrap)?;
        offset += batch.num_rows() as u64;
    }
    conservation(chunk, &counts).map_err(wrap)?;
    let committed = writer.commit().map_err(wrap)?;
    if committed != counts.written {
        return Err(wrap(Error::Check(format!(
            "{chunk}: {} rows were sent to the target but it reports {committed} written",
            counts.written
        ))));
    }
    Ok(counts)
}

/// One source batch after the transform: what would be written, and every rejected row
/// with its location. `run` and `dry-run` both go through here.
pub(crate) struct Processed {
    /// The transform's output.
    pub out: crate::transform::Transformed,
    /// Counts for this batch (written = rows that passed).
    pub counts: ChunkCounts,
    /// Rejected rows, located in the source.
    pub rejects: Vec<RowFailure>,
}

/// Transforms `batch` on the CPU pool and locates its rejects. `locate` names a row of the
/// batch (by its index) in the source.
pub(crate) fn process_batch(
    plan: &Plan,
    pool: &rayon::ThreadPool,
    batch: &arrow::record_batch::RecordBatch,
    locate: &dyn Fn(usize) -> String,
) -> Result<Processed> {
    let source = plan.source.as_ref();
    let out = pool.install(|| plan.transform.apply(batch))?;
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
    let key_index = source.key().and_then(|k| batch.schema().index_of(k).ok());
    let key =
        key_index.and_then(|k| Some(format!("{}={}", source.key()?, cell_text(batch, k, row)?)));
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
