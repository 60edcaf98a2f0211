//! The report of a run: what `run` returns and `status` shows.

use super::*;

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
    /// The declared indexes and constraints the loaded rows do not allow, each naming
    /// the rows in the way; they are not built, and the next run tries them again.
    pub post_load: Vec<String>,
    /// Whether this process was one worker of a shared run (`--worker`): chunks still
    /// held by the others then leave it no less finished.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub worker: bool,
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
pub(super) fn group(n: u64) -> String {
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
        } else if !self.failures.is_empty()
            || self.rows.rejected > 0
            || self.state.quarantined > 0
            || !self.post_load.is_empty()
        {
            1
        } else if self.state.chunks_done < self.state.chunks_total && !self.worker {
            2
        } else {
            0
        }
    }
}
