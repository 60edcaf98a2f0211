//! Sinks: something that prepares a target once, then commits chunks atomically.

mod files;
mod sqlite;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

pub use self::files::FileSink;
pub use self::sqlite::SqliteSink;
use crate::Result;
use crate::config::{Location, TargetConfig};
use crate::db::IoRuntime;
use crate::plan::Chunk;

/// A table or directory to write.
pub trait Sink: Send + Sync {
    /// Where the data goes, redacted, for messages.
    fn describe(&self) -> String;

    /// What [`Sink::prepare`] would execute (DDL, or the files it would write), found
    /// without changing anything. Dry runs print it.
    fn planned_ddl(&self) -> Result<Vec<String>>;

    /// Creates the target (table or directory) and applies `if_exists`. Called once,
    /// before any chunk is opened.
    fn prepare(&self) -> Result<()>;

    /// Called once after the last chunk: release connections, flush what needs it.
    fn finish(&self) -> Result<()> {
        Ok(())
    }

    /// Starts writing one chunk. Nothing becomes visible until [`ChunkWriter::commit`].
    fn open_chunk(&self, chunk: &Chunk) -> Result<Box<dyn ChunkWriter>>;
}

/// The writer of one chunk.
///
/// Contract: `commit` makes all of the chunk's rows visible at once, or none of them.
/// Dropping a writer without committing discards what it was given.
pub trait ChunkWriter: Send {
    /// Adds a batch in the target schema.
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;

    /// Makes the chunk durable and visible; returns the rows written.
    fn commit(self: Box<Self>) -> Result<u64>;
}

/// Opens the target a pipeline names, for batches of `schema`. Touches nothing.
pub fn open(config: &TargetConfig, schema: SchemaRef, io: &IoRuntime) -> Result<Arc<dyn Sink>> {
    Ok(match &config.location {
        Location::Sqlite { path } => Arc::new(SqliteSink::open(config, path, schema, io)?),
        Location::Files { path, format } => Arc::new(FileSink::new(config, path, *format, schema)),
    })
}
