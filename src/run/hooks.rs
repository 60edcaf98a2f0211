//! The points where an online move (`crate::online`) joins a run: before the chunks are
//! planned, and once every chunk is done.

use crate::Result;
use crate::chunk::Chunk;
use crate::plan::Plan;
use crate::sink::Sink;

/// What a run calls besides its chunks.
pub trait RunHooks: Send + Sync + std::fmt::Debug {
    /// Called after the target is prepared and before anything is read: `fresh` when the
    /// run makes a new plan (no checkpoint, or `--restart`).
    fn before_plan(&self, plan: &Plan, sink: &dyn Sink, fresh: bool) -> Result<()>;

    /// Called when every chunk of `chunks` is done, before the declared indexes and
    /// constraints are built.
    fn after_copy(&self, plan: &Plan, sink: &dyn Sink, chunks: &[Chunk]) -> Result<()>;
}
