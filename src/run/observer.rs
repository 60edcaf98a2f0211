//! Progress events. The library only emits them; the command line draws them.

use std::time::Duration;

use super::Summary;
use crate::chunk::ChunkCounts;

/// Something that happened during a run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// The chunks to run are known (planned now, or read from a checkpoint).
    Planned {
        /// How many.
        chunks: usize,
        /// Total rows, when every chunk's count is known.
        rows: Option<u64>,
        /// Chunks an earlier run already committed.
        skipped: usize,
    },
    /// A worker started a chunk.
    ChunkStarted {
        /// The chunk's id.
        chunk: usize,
    },
    /// A chunk was committed.
    ChunkDone {
        /// The chunk's id.
        chunk: usize,
        /// Its row counts.
        counts: ChunkCounts,
        /// Time from start to commit.
        elapsed: Duration,
    },
    /// A chunk failed; nothing of it was committed.
    ChunkFailed {
        /// The chunk's id.
        chunk: usize,
        /// Why, redacted.
        error: String,
    },
    /// A worker of a shared run gave up a chunk: its lease ran out (the process was
    /// stopped, or cut off from the database), and another worker takes it or has
    /// taken it. Nothing of this attempt was committed.
    ChunkLost {
        /// The chunk's id.
        chunk: usize,
        /// Why, as the store said it.
        reason: String,
    },
    /// Another run holds the pipeline's lock; this one waits for it, up to `limit`.
    WaitingForLock {
        /// Who holds it.
        holder: crate::checkpoint::Holder,
        /// The longest this run waits.
        limit: Duration,
    },
    /// The run ended.
    Finished(Box<Summary>),
}

/// Receives progress events from any worker thread.
pub trait Observer: Send + Sync {
    /// Called for each event, in the order they happen on each thread.
    fn on_event(&self, event: &Event);
}

/// Ignores every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl Observer for NoopObserver {
    fn on_event(&self, _: &Event) {}
}
