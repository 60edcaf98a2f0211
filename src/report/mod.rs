//! `rowshift report`: one self-contained HTML page about a run, finished or in progress,
//! of one process or of many workers.
//!
//! [`report`] reads what a run recorded (the checkpoint's chunks and workers, the
//! quarantine's reasons) into a [`ReportData`]; [`build`] is that step without the
//! reading, for tests. [`render`] writes the page: the data as JSON, and a small script
//! that draws the charts from it. Everything the charts show (buckets, bins, the
//! slowest chunks) is computed here, so the script only draws. Reads only; opens
//! neither the source nor anything for writing.

mod chart;
mod html;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

pub use self::chart::{Histogram, MAX_BINS, MIN_BINS, Series, TIME_BUCKETS, TimeAxis};
pub use self::html::render;
use crate::checkpoint::{Checkpoint, ChunkRecord, ChunkState};
use crate::chunk::ChunkCounts;
use crate::config::{Pipeline, Verify, redact};
use crate::runtime::IoRuntime;
use crate::{Error, Result};

/// The slowest chunks the report names.
pub const SLOWEST: usize = 10;

/// The retried or failed chunks the report lists with their errors; more are counted.
pub const LISTED_RETRIES: usize = 100;

/// The reasons the rejects-over-time chart draws apart; the rest are drawn together.
pub const REASONS_DRAWN: usize = 8;

/// The workers the throughput chart draws apart; the rest are drawn together.
pub const WORKERS_DRAWN: usize = 12;

/// Everything the page shows. Serialized into the page as JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportData {
    /// The rowshift that wrote the page.
    pub generator: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// The source, as its URL (password hidden) and table.
    pub source: String,
    /// The target, as the sink describes it (password hidden).
    pub target: String,
    /// Where the checkpoint is.
    pub checkpoint: String,
    /// Where the rejected rows are kept.
    pub quarantine: String,
    /// When the plan was made (UTC, RFC 3339).
    pub planned_at: String,
    /// Where the run stands: `"running"` (a live run holds the pipeline's lock, or
    /// workers of a shared run are alive),
    /// `"interrupted"` (no live run, chunks left running), `"not done"` (chunks pending
    /// or failed) or `"done"`.
    pub state: String,
    /// Chunks by state.
    pub chunks: ChunkTally,
    /// Row counts over the done chunks.
    pub rows: ChunkCounts,
    /// Order-independent checksum of the done chunks' rows (hex), as `run` prints it.
    pub checksum: String,
    /// The time axis of the charts over time; `None` when no chunk has its times
    /// recorded (none done yet, or a checkpoint written before rowshift kept them).
    pub axis: Option<TimeAxis>,
    /// Rows read per second in each bucket of `axis`, one series per worker.
    pub throughput: Vec<Series>,
    /// The workers that joined the run (none for a run of one process).
    pub workers: Vec<WorkerRow>,
    /// Done chunks' durations in seconds.
    pub durations: Histogram,
    /// The slowest done chunks, slowest first, at most [`SLOWEST`].
    pub slowest: Vec<ChunkRow>,
    /// Rejected rows by reason.
    pub rejects: Rejects,
    /// What reading chunks back cost.
    pub readback: ReadBack,
    /// Chunks claimed more than once, or failed.
    pub retries: Retries,
}

/// Chunks by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ChunkTally {
    /// Chunks in the plan.
    pub total: usize,
    /// Committed.
    pub done: usize,
    /// Failed permanently.
    pub failed: usize,
    /// Not started, or to be redone.
    pub pending: usize,
    /// Claimed by a worker and not yet done.
    pub running: usize,
}

/// A worker of the run, as the page lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerRow {
    /// `host:pid`.
    pub id: String,
    /// `running`; `lost` when its heartbeat is older than a lease; `finished` (it found
    /// no chunk left) or `stopped` (it ended early).
    pub state: String,
    /// When it joined (epoch milliseconds, the database's clock).
    pub started_ms: i64,
    /// Its last heartbeat (epoch milliseconds).
    pub heartbeat_ms: i64,
    /// Chunks it committed.
    pub chunks_done: u64,
    /// Rows it read.
    pub rows_read: u64,
    /// Rows it wrote.
    pub rows_written: u64,
}

/// One chunk, as the page names it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkRow {
    /// Its id in the plan.
    pub id: usize,
    /// The chunk and its range, as messages write it (`chunk 3 (400 < key <= 600)`).
    pub range: String,
    /// Its state.
    pub state: ChunkState,
    /// How many times a worker claimed it.
    pub attempts: u32,
    /// The worker that committed it (or holds it), when recorded.
    pub worker: Option<String>,
    /// Seconds its committed attempt took.
    pub seconds: f64,
    /// Seconds of that spent reading it back.
    pub verify_seconds: f64,
    /// Rows it read.
    pub rows: u64,
    /// When its last attempt was claimed (epoch milliseconds, the claiming process's
    /// clock), when recorded.
    pub started_ms: Option<i64>,
    /// When it was marked done (epoch milliseconds, the committing process's clock),
    /// when recorded.
    pub finished_ms: Option<i64>,
    /// Its last error (password hidden).
    pub last_error: Option<String>,
}

/// Rejected rows by reason, in total and over time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejects {
    /// Each reason (grouped as summaries group them) with its rows, most first.
    pub reasons: Vec<ReasonCount>,
    /// Rows rejected in each bucket of the axis (a row counts when its chunk was done),
    /// one series per reason: the [`REASONS_DRAWN`] most frequent, then the rest as one.
    pub over_time: Vec<Series>,
    /// Rows whose chunk has no finish time recorded, left out of `over_time`.
    pub untimed: u64,
}

/// A reason and how many rows it rejected.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReasonCount {
    /// The reason, as summaries group it (`column v: value is above the maximum 8`).
    pub reason: String,
    /// Rows in the quarantine with it.
    pub count: u64,
}

/// What reading the chunks back cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadBack {
    /// Whether the pipeline reads chunks back (`verify = "read_back"`).
    pub on: bool,
    /// Seconds spent reading back, over the done chunks.
    pub seconds: f64,
    /// Seconds the done chunks took in all (read-back included).
    pub chunk_seconds: f64,
    /// `seconds` as a share of `chunk_seconds` (0 to 1).
    pub share: f64,
    /// The longest read-back of one chunk, in seconds.
    pub max_seconds: f64,
    /// Read-back seconds per done chunk.
    pub per_chunk: Histogram,
}

/// Chunks that took more than one attempt, or failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Retries {
    /// Chunks claimed more than once.
    pub retried: usize,
    /// Attempts beyond each chunk's first, over all chunks.
    pub extra_attempts: u64,
    /// The retried and failed chunks with their last errors, most attempts first, at
    /// most [`LISTED_RETRIES`].
    pub listed: Vec<ChunkRow>,
    /// Retried or failed chunks left out of `listed`.
    pub more: usize,
}

/// What [`build`] makes the report of.
pub struct Inputs<'a> {
    /// The pipeline's name.
    pub pipeline: String,
    /// The source, password hidden.
    pub source: String,
    /// The target, password hidden.
    pub target: String,
    /// Where the checkpoint is.
    pub checkpoint_at: String,
    /// Where the quarantine is.
    pub quarantine_at: String,
    /// Whether chunks are read back.
    pub verify: bool,
    /// Whether a live run holds the pipeline's lock, or live workers share it.
    pub live: bool,
    /// The recorded run.
    pub checkpoint: &'a Checkpoint,
    /// The workers that joined it.
    pub workers: Vec<WorkerRow>,
    /// Quarantined rows by (chunk, grouped reason).
    pub rejects: BTreeMap<(usize, String), u64>,
}

/// The report of `pipeline`'s recorded run: its checkpoint, workers and quarantine in
/// the target (or the state directory beside the pipeline file). Fails when no run is
/// recorded.
pub fn report(pipeline: &Pipeline) -> Result<ReportData> {
    let io = IoRuntime::new()?;
    // The same store `run` uses, found without opening the source (as `status` does).
    let (sink, store) = crate::run::recorded(pipeline, &io)?;
    let Some(checkpoint) = store.load()? else {
        return Err(Error::Unsupported(format!(
            "no checkpoint for pipeline {} in {}; run it before reporting",
            pipeline.name,
            store.describe()
        )));
    };
    let lease = Duration::from_secs(pipeline.chunks.lease_seconds);
    let workers: Vec<WorkerRow> = store
        .workers()?
        .into_iter()
        .map(|w| WorkerRow {
            // As `status` says it: a running worker whose heartbeat is older than a
            // lease is lost (killed, stopped, cut off), and its chunks go to the others.
            state: match w.live(lease) {
                false if w.state == "running" => "lost".to_string(),
                _ => w.state.clone(),
            },
            id: w.id,
            started_ms: w.started_ms,
            heartbeat_ms: w.heartbeat_ms,
            chunks_done: w.chunks_done,
            rows_read: w.rows_read,
            rows_written: w.rows_written,
        })
        .collect();
    let live = store.holder()?.is_some() || workers.iter().any(|w| w.state == "running");
    let mut rejects = BTreeMap::new();
    for e in sink.read_quarantine()? {
        *rejects.entry((e.chunk, e.grouped_reason())).or_insert(0) += 1;
    }
    let source = match &pipeline.source.table {
        Some(t) => format!("{} table {}", pipeline.source.url.value, t.value),
        None => pipeline.source.url.value.clone(),
    };
    Ok(build(Inputs {
        pipeline: pipeline.name.clone(),
        source: redact(&source),
        target: redact(&sink.describe()),
        checkpoint_at: redact(&store.describe()),
        quarantine_at: redact(&sink.quarantine()),
        verify: pipeline.verify != Verify::Off,
        live,
        checkpoint: &checkpoint,
        workers,
        rejects,
    }))
}

/// A chunk as the page names it, its error with any password hidden.
fn chunk_row(r: &ChunkRecord) -> ChunkRow {
    ChunkRow {
        id: r.chunk.id,
        range: r.chunk.to_string(),
        state: r.state,
        attempts: r.attempts,
        worker: r.worker.clone(),
        seconds: r.seconds,
        verify_seconds: r.verify_seconds,
        rows: r.counts.read,
        started_ms: r.started_ms,
        finished_ms: r.finished_ms,
        last_error: r.last_error.as_deref().map(redact),
    }
}

/// The report of a recorded run.
pub fn build(input: Inputs<'_>) -> ReportData {
    let records = &input.checkpoint.chunks;
    let rows: Vec<ChunkRow> = records.iter().map(chunk_row).collect();
    let done: Vec<&ChunkRow> = rows
        .iter()
        .filter(|r| r.state == ChunkState::Done)
        .collect();

    let mut chunks = ChunkTally {
        total: rows.len(),
        ..ChunkTally::default()
    };
    let (mut counts, mut checksum) = (ChunkCounts::default(), 0u64);
    for r in records {
        match r.state {
            ChunkState::Done => {
                chunks.done += 1;
                counts += r.counts;
                checksum = checksum.wrapping_add(r.checksum);
            }
            ChunkState::Failed => chunks.failed += 1,
            ChunkState::Pending => chunks.pending += 1,
            ChunkState::Running => chunks.running += 1,
        }
    }
    let state = if input.live {
        "running"
    } else if chunks.running > 0 {
        "interrupted"
    } else if chunks.done < chunks.total {
        "not done"
    } else {
        "done"
    };

    let axis = time_axis(&rows);
    let throughput = axis.map_or_else(Vec::new, |a| throughput(&a, &done));

    let mut slowest = done.clone();
    slowest.sort_by(|a, b| b.seconds.total_cmp(&a.seconds).then(a.id.cmp(&b.id)));
    slowest.truncate(SLOWEST);

    let durations: Vec<f64> = done.iter().map(|r| r.seconds).collect();
    let verify: Vec<f64> = done.iter().map(|r| r.verify_seconds).collect();
    let chunk_seconds: f64 = durations.iter().sum();
    let verify_seconds: f64 = verify.iter().sum();

    let mut retried: Vec<&ChunkRow> = rows
        .iter()
        .filter(|r| r.attempts > 1 || r.state == ChunkState::Failed)
        .collect();
    retried.sort_by(|a, b| b.attempts.cmp(&a.attempts).then(a.id.cmp(&b.id)));
    let more = retried.len().saturating_sub(LISTED_RETRIES);
    retried.truncate(LISTED_RETRIES);

    ReportData {
        generator: format!("rowshift {}", env!("CARGO_PKG_VERSION")),
        pipeline: input.pipeline,
        source: input.source,
        target: input.target,
        checkpoint: input.checkpoint_at,
        quarantine: input.quarantine_at,
        planned_at: input.checkpoint.created_at.clone(),
        state: state.to_string(),
        chunks,
        rows: counts,
        checksum: format!("{checksum:016x}"),
        axis,
        throughput,
        workers: input.workers,
        durations: Histogram::of(&durations),
        slowest: slowest.into_iter().cloned().collect(),
        rejects: rejects(axis.as_ref(), &rows, &input.rejects),
        readback: ReadBack {
            on: input.verify,
            seconds: verify_seconds,
            chunk_seconds,
            share: if chunk_seconds > 0.0 {
                verify_seconds / chunk_seconds
            } else {
                0.0
            },
            max_seconds: verify.iter().copied().fold(0.0, f64::max),
            per_chunk: Histogram::of(&verify),
        },
        retries: Retries {
            retried: rows.iter().filter(|r| r.attempts > 1).count(),
            extra_attempts: rows
                .iter()
                .map(|r| u64::from(r.attempts.saturating_sub(1)))
                .sum(),
            listed: retried.into_iter().cloned().collect(),
            more,
        },
    }
}

/// The axis from the first chunk claimed to the last chunk claimed or done. Workers'
/// heartbeats are left out: they are on the database's clock, chunk times on the
/// processes'.
fn time_axis(rows: &[ChunkRow]) -> Option<TimeAxis> {
    let start = rows.iter().filter_map(|r| r.started_ms).min()?;
    let end = rows
        .iter()
        .flat_map(|r| [r.started_ms, r.finished_ms])
        .flatten()
        .max()
        .unwrap_or(start);
    Some(TimeAxis::new(start, end.max(start)))
}

/// Rows read per second per worker over `axis`: each done chunk's rows spread over the
/// time from its claim to its done mark. A chunk with no worker recorded (a run of one
/// process) counts under "this run".
fn throughput(axis: &TimeAxis, done: &[&ChunkRow]) -> Vec<Series> {
    let mut by_worker: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for r in done {
        let (Some(from), Some(to)) = (r.started_ms, r.finished_ms) else {
            continue;
        };
        let values = by_worker
            .entry(r.worker.as_deref().unwrap_or("this run"))
            .or_insert_with(|| vec![0.0; axis.buckets]);
        axis.spread(values, from, to, r.rows as f64);
    }
    let per_second = 1000.0 / axis.bucket_ms as f64;
    let series = by_worker
        .into_iter()
        .map(|(name, values)| Series {
            name: name.to_string(),
            values: values.into_iter().map(|v| v * per_second).collect(),
        })
        .collect();
    fold_rest(series, WORKERS_DRAWN, "other workers")
}

/// Keeps the `keep` series with the largest totals (in their order) and adds the rest
/// up into one series named `rest`.
fn fold_rest(series: Vec<Series>, keep: usize, rest: &str) -> Vec<Series> {
    if series.len() <= keep {
        return series;
    }
    let total = |s: &Series| s.values.iter().sum::<f64>();
    let mut by_total: Vec<usize> = (0..series.len()).collect();
    by_total.sort_by(|&a, &b| total(&series[b]).total_cmp(&total(&series[a])));
    let kept: std::collections::BTreeSet<usize> = by_total[..keep].iter().copied().collect();
    let mut others = Series {
        name: rest.to_string(),
        values: vec![0.0; series[0].values.len()],
    };
    let mut out = Vec::with_capacity(keep + 1);
    for (i, s) in series.into_iter().enumerate() {
        if kept.contains(&i) {
            out.push(s);
        } else {
            for (o, v) in others.values.iter_mut().zip(&s.values) {
                *o += v;
            }
        }
    }
    out.push(others);
    out
}

/// The quarantine's rows by reason, in total and per bucket of `axis` by their chunk's
/// done time.
fn rejects(
    axis: Option<&TimeAxis>,
    rows: &[ChunkRow],
    quarantined: &BTreeMap<(usize, String), u64>,
) -> Rejects {
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for ((_, reason), n) in quarantined {
        *totals.entry(reason).or_insert(0) += n;
    }
    let mut reasons: Vec<ReasonCount> = totals
        .into_iter()
        .map(|(reason, count)| ReasonCount {
            reason: redact(reason),
            count,
        })
        .collect();
    reasons.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));

    let finished: BTreeMap<usize, i64> = rows
        .iter()
        .filter_map(|r| Some((r.id, r.finished_ms?)))
        .collect();
    let mut untimed = 0;
    let mut over_time = Vec::new();
    if let Some(axis) = axis {
        let mut by_reason: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for ((chunk, reason), n) in quarantined {
            match finished.get(chunk) {
                Some(&t) => {
                    by_reason
                        .entry(reason)
                        .or_insert_with(|| vec![0.0; axis.buckets])[axis.index(t)] += *n as f64
                }
                None => untimed += n,
            }
        }
        // Most rows first, as the totals list them.
        let mut series: Vec<Series> = by_reason
            .into_iter()
            .map(|(name, values)| Series {
                name: redact(name),
                values,
            })
            .collect();
        let order = |name: &str| reasons.iter().position(|r| r.reason == name);
        series.sort_by_key(|s| order(&s.name));
        over_time = fold_rest(series, REASONS_DRAWN, "other reasons");
    } else {
        untimed = reasons.iter().map(|r| r.count).sum();
    }
    Rejects {
        reasons,
        over_time,
        untimed,
    }
}

#[cfg(test)]
mod tests;
