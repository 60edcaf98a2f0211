//! Checkpoints: the chunk plan and each chunk's state, kept so that an interrupted run
//! resumes where it stopped with no row lost or written twice.
//!
//! The store is a SQLite database, or two tables in a PostgreSQL target's schema or a
//! MySQL target's database. For a
//! database target it lives *in the target*, and a chunk's rows and its "done" mark commit
//! in one transaction. For a file target it lives in `.rowshift/` beside the pipeline file;
//! part files are renamed into place before the mark is written, and a chunk redone after
//! a crash rewrites the same part file.

mod mysql;
mod postgres;
mod sqlite;

use serde::{Deserialize, Serialize};

pub use self::mysql::{MyStore, mark_done as my_mark_done};
pub use self::postgres::{PgStore, mark_done as pg_mark_done};
pub use self::sqlite::{Entry, Ledger, SqliteStore, mark_done};
use crate::Result;
use crate::check::ChunkCounts;
use crate::plan::Chunk;

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

    fn parse(s: &str) -> Option<Self> {
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

    /// Marks a chunk running and counts the attempt.
    fn claim(&self, chunk: usize) -> Result<()>;

    /// Marks a chunk done. Sinks that commit the mark with the rows do not call this.
    fn finish(&self, mark: &DoneMark) -> Result<()>;

    /// Marks a chunk failed with its error.
    fn fail(&self, chunk: usize, error: &str) -> Result<()>;

    /// Marks chunks pending again (for `retry`).
    fn reset(&self, chunks: &[usize]) -> Result<()>;

    /// Marks done chunks pending again: `verify --repair` found their rows wrong and
    /// removes them next. Chunks that are not done are left as they are.
    fn redo(&self, chunks: &[usize]) -> Result<()>;

    /// Forgets the run.
    fn discard(&self) -> Result<()>;

    /// Releases the store's connections once a command is done with it. Called before
    /// [`crate::sink::Sink::finish`]: a store in a SQLite target shares its file, and the
    /// last connection to close is the one that folds the write-ahead log into the file.
    fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// Lines saying what differs between two pipelines' settings.
pub fn diff_settings(old: &[(String, String)], new: &[(String, String)]) -> Vec<String> {
    use std::collections::BTreeMap;
    let a: BTreeMap<_, _> = old.iter().cloned().collect();
    let b: BTreeMap<_, _> = new.iter().cloned().collect();
    let mut out = Vec::new();
    for (k, v) in &a {
        match b.get(k) {
            None => out.push(format!("{k}: {v} was removed")),
            Some(w) if w != v => out.push(format!("{k}: {v} -> {w}")),
            _ => {}
        }
    }
    for (k, v) in &b {
        if !a.contains_key(k) {
            out.push(format!("{k}: {v} was added"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
