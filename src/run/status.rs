//! `rowshift status`: a run's progress from its checkpoint and quarantine. Reads only.

use std::collections::BTreeMap;

use serde::Serialize;

use super::RejectSummary;
use crate::checkpoint::{CheckpointStore, ChunkState, Holder, diff_settings};
use crate::chunk::ChunkCounts;
use crate::config::Pipeline;
use crate::db::sqlite::checkpoint::SqliteStore;
use crate::runtime::IoRuntime;
use crate::sink::Sink;
use crate::{Result, RowFailure};

/// A failed chunk in the status.
#[derive(Debug, Clone, Serialize)]
pub struct FailedChunk {
    /// Its id.
    pub chunk: usize,
    /// Its range.
    pub range: String,
    /// How many times it was tried.
    pub attempts: u32,
    /// The last error.
    pub error: String,
}

/// What `status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The pipeline.
    pub pipeline: String,
    /// Where the checkpoint is.
    pub checkpoint: String,
    /// Whether a run was recorded at all.
    pub recorded: bool,
    /// When the plan was made.
    pub created_at: Option<String>,
    /// What changed in the pipeline file since (empty when nothing did).
    pub changes: Vec<String>,
    /// Chunks in the plan.
    pub chunks_total: usize,
    /// Chunks by state.
    pub chunks: BTreeMap<String, usize>,
    /// Counts over done chunks.
    pub rows: ChunkCounts,
    /// Done chunks' share of the plan, in percent.
    pub progress_percent: f64,
    /// Failed chunks with their last errors.
    pub failed: Vec<FailedChunk>,
    /// Quarantined rows by reason, with one example each.
    pub rejects: Vec<RejectSummary>,
    /// Where the quarantine is.
    pub quarantine: String,
    /// Whether a live run holds the pipeline now, and which.
    pub running: RunningState,
    /// The processes of a shared run (`run --worker`), the most recent first; empty
    /// for a run of one process.
    pub workers: Vec<WorkerStatus>,
}

/// One process of a shared run, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerStatus {
    /// `host:pid`.
    pub id: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// `running`; `lost` when its heartbeat is older than a lease (killed, stopped or
    /// cut off: its chunks go to the others); `finished` (no chunk left) or `stopped`
    /// (it ended early).
    pub state: String,
    /// Chunks it committed.
    pub chunks_done: u64,
    /// Rows those chunks read.
    pub rows_read: u64,
    /// Rows those chunks wrote.
    pub rows_written: u64,
    /// Rows read per second, from when it joined to its last heartbeat.
    pub rows_per_second: f64,
    /// Seconds since its last heartbeat.
    pub heartbeat_seconds_ago: f64,
    /// The chunks running under its leases now.
    pub holds: Vec<usize>,
}

/// Whether a run of the pipeline is alive, from its run lock.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum RunningState {
    /// A live run holds the pipeline's lock: its running chunks are in progress.
    Live {
        /// The run.
        holder: Holder,
    },
    /// No live run holds it, and chunks are marked running: the run that claimed them
    /// was killed. The next run redoes them.
    Interrupted,
    /// Workers of a shared run are alive (their heartbeats are within a lease).
    Shared {
        /// How many.
        workers: usize,
    },
    /// No live run holds it, and no chunk is running.
    Idle,
}

/// `pipeline`'s target and the checkpoint store a run of it uses (in the target, or in
/// the state directory beside the pipeline file), found without opening the source:
/// for the commands that read a recorded run (`status`, `report`).
pub fn recorded(
    pipeline: &Pipeline,
    io: &IoRuntime,
) -> Result<(
    std::sync::Arc<dyn Sink>,
    std::sync::Arc<dyn CheckpointStore>,
)> {
    let sink: std::sync::Arc<dyn Sink> =
        crate::plan::open_sink(&pipeline.target, pipeline.target.schema(), None, io)?;
    let store: std::sync::Arc<dyn CheckpointStore> =
        sink.checkpoint_store(&pipeline.name).unwrap_or_else(|| {
            std::sync::Arc::new(SqliteStore::new(
                &pipeline
                    .base_dir
                    .join(".rowshift")
                    .join(format!("{}.checkpoint.db", pipeline.name)),
                &pipeline.name,
                io,
            ))
        });
    Ok((sink, store))
}

/// Reads the checkpoint and quarantine of `pipeline`'s target. Opens neither the source
/// nor anything for writing.
pub fn status(pipeline: &Pipeline) -> Result<StatusReport> {
    let io = IoRuntime::new()?;
    let (sink, store) = recorded(pipeline, &io)?;
    let checkpoint = store.load()?;
    let mut chunks: BTreeMap<String, usize> = [
        ChunkState::Pending,
        ChunkState::Running,
        ChunkState::Done,
        ChunkState::Failed,
    ]
    .iter()
    .map(|s| (s.as_str().to_string(), 0))
    .collect();
    let mut rows = ChunkCounts::default();
    let mut failed = Vec::new();
    let (mut total, mut created_at, mut changes) = (0, None, Vec::new());
    if let Some(c) = &checkpoint {
        total = c.chunks.len();
        created_at = Some(c.created_at.clone());
        changes = diff_settings(&c.settings, &pipeline.settings());
        for r in &c.chunks {
            *chunks.entry(r.state.as_str().to_string()).or_default() += 1;
            match r.state {
                ChunkState::Done => rows += r.counts,
                ChunkState::Failed => failed.push(FailedChunk {
                    chunk: r.chunk.id,
                    range: r.chunk.to_string(),
                    attempts: r.attempts,
                    error: r.last_error.clone().unwrap_or_default(),
                }),
                _ => {}
            }
        }
    }
    let mut groups: BTreeMap<String, RejectSummary> = BTreeMap::new();
    for e in sink.read_quarantine()? {
        let reason = e.grouped_reason();
        let g = groups
            .entry(reason.clone())
            .or_insert_with(|| RejectSummary {
                reason,
                count: 0,
                example: RowFailure {
                    location: e.location.clone(),
                    column: e.column.clone(),
                    value: e.value.clone(),
                    reason: e.reason.clone(),
                },
            });
        g.count += 1;
    }
    let mut rejects: Vec<RejectSummary> = groups.into_values().collect();
    rejects.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
    let done = chunks["done"];
    let lease = std::time::Duration::from_secs(pipeline.chunks.lease_seconds);
    let workers: Vec<WorkerStatus> = store
        .workers()?
        .into_iter()
        .map(|w| {
            let holds = checkpoint
                .iter()
                .flat_map(|c| &c.chunks)
                .filter(|r| r.state == ChunkState::Running && r.worker.as_deref() == Some(&w.id))
                .filter(|r| r.lease_ms.is_some_and(|l| l >= w.now_ms))
                .map(|r| r.chunk.id)
                .collect();
            let busy = (w.heartbeat_ms - w.started_ms) as f64 / 1000.0;
            WorkerStatus {
                state: match w.live(lease) {
                    false if w.state == "running" => "lost".to_string(),
                    _ => w.state.clone(),
                },
                rows_per_second: if busy > 0.0 {
                    w.rows_read as f64 / busy
                } else {
                    0.0
                },
                heartbeat_seconds_ago: (w.now_ms - w.heartbeat_ms).max(0) as f64 / 1000.0,
                holds,
                id: w.id,
                host: w.host,
                pid: w.pid,
                chunks_done: w.chunks_done,
                rows_read: w.rows_read,
                rows_written: w.rows_written,
            }
        })
        .collect();
    let live_workers = workers.iter().filter(|w| w.state == "running").count();
    let running = match store.holder()? {
        Some(holder) => RunningState::Live { holder },
        None if live_workers > 0 => RunningState::Shared {
            workers: live_workers,
        },
        None if chunks["running"] > 0 => RunningState::Interrupted,
        None => RunningState::Idle,
    };
    Ok(StatusReport {
        pipeline: pipeline.name.clone(),
        checkpoint: store.describe(),
        recorded: checkpoint.is_some(),
        created_at,
        changes,
        chunks_total: total,
        chunks,
        rows,
        progress_percent: if total == 0 {
            0.0
        } else {
            100.0 * done as f64 / total as f64
        },
        failed,
        rejects,
        quarantine: sink.quarantine(),
        running,
        workers,
    })
}
