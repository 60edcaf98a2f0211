//! Sinks: something that prepares a target once, then commits chunks atomically, and
//! keeps the quarantine of rejected rows next to the target.

mod csv_part;
pub mod ddl;
mod files;
pub mod quarantine;
pub mod refuse;
mod rejects_file;
pub mod replay;
pub mod table;

use std::sync::Arc;

use arrow::record_batch::RecordBatch;

pub use self::files::FileSink;
pub use self::refuse::{MAX_REFUSED_SHARE, MIN_REFUSED, REFUSED, Refusal, is_refusal};
use crate::Result;
use crate::check::quarantine::QuarantineEntry;
use crate::check::readback::ReadBack;
use crate::checkpoint::{CheckpointStore, DoneMark};
use crate::chunk::Chunk;
use crate::chunk::Selection;
use crate::source::capture::Position;

/// How [`Sink::prepare`] treats what the target already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepare {
    /// A new run: apply `if_exists` to existing data.
    Fresh,
    /// Resuming a checkpointed run: keep everything, make sure the target exists, and
    /// clear temporary files an interrupted run left.
    Resume,
    /// `--restart`: remove what an earlier run of this pipeline wrote, then start over.
    Restart,
}

/// What a chunk's commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Rows written to the target.
    pub rows: u64,
    /// Whether the sink took care of the chunk's done mark (the store lives in the
    /// target): committed with the rows, or handed to the store's ledger once they read
    /// back the same. If not, the caller marks it after the commit.
    pub marked: bool,
}

/// A table or directory to write.
pub trait Sink: Send + Sync {
    /// Where the data goes, redacted, for messages.
    fn describe(&self) -> String;

    /// What [`Sink::prepare`] would execute (DDL, or the files it would write), found
    /// without changing anything. Dry runs print it.
    fn planned_ddl(&self) -> Result<Vec<String>>;

    /// The statements [`Sink::prepare`] runs on a fresh run when the table holds
    /// `existing` rows (`None`: there is no table), found without connecting: what
    /// `rowshift plan` shows, in the order `prepare` runs them. A line that starts with
    /// `--` is a note (nothing runs). A file target runs no SQL.
    fn planned_prepare(&self, _existing: Option<i64>) -> Vec<String> {
        Vec::new()
    }

    /// The statements [`Sink::post_load`] would run, in order, without running any:
    /// `catalog` runs one of the database's catalog queries (a [`crate::sql::dialect::Stmt`]
    /// in its own placeholders) and gives its integers; it gives none for a table that
    /// does not exist yet. A row check that could leave a declaration unbuilt is not
    /// made: the plan shows the statement as the run would run it on clean rows.
    fn planned_post_load(
        &self,
        _catalog: &mut dyn FnMut(crate::sql::dialect::Stmt) -> Result<Vec<i64>>,
    ) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Creates the target (table or directory) and its quarantine. Called once, before
    /// any chunk is opened.
    fn prepare(&self, how: Prepare) -> Result<()>;

    /// On resume: checks that the chunks the checkpoint calls done are still in the target,
    /// so a deleted output is never silently skipped.
    fn check_done(&self, _chunks: &[usize]) -> Result<()> {
        Ok(())
    }

    /// On resume, before any chunk runs: removes what the chunks that are not done
    /// (each with the selection of its rows) may have left in the target. A sink that
    /// reads a chunk back after committing it leaves a chunk "running" with its rows in
    /// place when the run dies in between; other sinks never leave anything.
    fn settle(&self, _unfinished: &[(usize, Selection)]) -> Result<()> {
        Ok(())
    }

    /// Called when every chunk is done, by each run that finds them so (a rerun of a
    /// finished run too): builds the declared indexes, check constraints and foreign keys
    /// that are not there yet, after checking the rows they cover, and sets identity
    /// counters past the largest value loaded. Returns what the data does not allow, each
    /// naming its rows; that is left undone.
    fn post_load(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Called once after the last chunk: release connections, flush what needs it.
    fn finish(&self) -> Result<()> {
        Ok(())
    }

    /// Whether [`ChunkWriter::commit`] may fail with [`crate::Error::Refused`], naming rows
    /// the target refused (a database's constraints and triggers); the caller then keeps
    /// what it needs to quarantine them and write the chunk again without them.
    fn refuses_rows(&self) -> bool {
        false
    }

    /// The rows of `batches` (counted across them) that the sink would refuse before
    /// sending them, as a run's commit does: values finer than an existing column keeps.
    /// Reads the target's catalog, never its rows; a dry run shows them as rejects.
    fn refusals_before_sending(&self, _batches: &[RecordBatch]) -> Result<Vec<Refusal>> {
        Ok(Vec::new())
    }

    /// Starts writing one chunk. Nothing becomes visible until [`ChunkWriter::commit`].
    fn open_chunk(&self, chunk: &Chunk) -> Result<Box<dyn ChunkWriter + '_>>;

    /// The checkpoint store that commits together with this sink's chunks, if the target
    /// can hold one (a database). `None` means the state directory holds it.
    fn checkpoint_store(&self, _pipeline: &str) -> Option<Arc<dyn CheckpointStore>> {
        None
    }

    /// The committed rows of `chunk` that `selection` names (a file target reads the
    /// chunk's part files), decoded into the target schema the way they were written.
    /// `key` (target columns) names rows in messages. For `rowshift verify`.
    fn read_rows(
        &self,
        chunk: usize,
        selection: &Selection,
        key: &[String],
    ) -> Result<Vec<RecordBatch>>;

    /// `sent` (rows as written) in the form [`Sink::read_rows`] gives them back, where
    /// the target stores an equal value in another form: a PostgreSQL `char(n)` pads
    /// text to n characters, and such a column reads back without trailing spaces.
    fn as_read_back(&self, sent: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        Ok(sent)
    }

    /// How to find the rows of a chunk that wrote `sent` (target rows; `key` the target
    /// columns that hold the source key) given the plan's `selection`: a database target
    /// looks them up by key when the chunk upserted (rows outside it may share its key
    /// range) or when the range cannot be compared with its key columns.
    fn chunk_rows(
        &self,
        selection: &Selection,
        _key: &[String],
        _sent: &[RecordBatch],
    ) -> Result<Selection> {
        Ok(selection.clone())
    }

    /// Deletes the committed rows of `chunk` that `selection` names, so the chunk can be
    /// written again (`verify --repair`).
    fn remove_rows(&self, chunk: usize, selection: &Selection) -> Result<()>;

    /// Every committed row, batch by batch (a resumed run seeds `unique` checks with it).
    fn scan(&self, f: &mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<()>;

    /// Where rejected rows are kept, for messages.
    fn quarantine(&self) -> String;

    /// The replay position an online move recorded in this target, with the changes it
    /// replayed so far; `None` before any (see docs/online.md).
    fn replay_position(&self, pipeline: &str) -> Result<Option<(Position, u64)>> {
        let _ = pipeline;
        Err(no_online(&self.describe()))
    }

    /// Forgets the replay position (a fresh or restarted run replays the whole log).
    fn forget_replay(&self, pipeline: &str) -> Result<()> {
        let _ = pipeline;
        Err(no_online(&self.describe()))
    }

    /// Sets the replay position back to `to` (position and changes replayed; `None`
    /// forgets it): a batch that committed but read back different is replayed again.
    fn rewind_replay(&self, pipeline: &str, to: Option<(Position, u64)>) -> Result<()> {
        let _ = (pipeline, to);
        Err(no_online(&self.describe()))
    }

    /// Writes replayed changes and their position in one transaction: deletes the rows
    /// of every replayed key, inserts the rows the source has now, replaces their keys'
    /// quarantined rows. Returns the rows written.
    fn replay(&self, batch: &replay::Replayed<'_>) -> Result<u64> {
        let _ = batch;
        Err(no_online(&self.describe()))
    }

    /// Locks `source_table` (in the target's own database and schema) against writes,
    /// waiting at most `lock_timeout` (see [`replay::Cutover`]).
    /// `old` is the name the source table will take; MySQL creates it at once as the
    /// sentry that keeps a half-done swap from renaming anything.
    fn cutover(
        &self,
        source_table: &str,
        old: &str,
        lock_timeout: std::time::Duration,
    ) -> Result<Box<dyn replay::Cutover + '_>> {
        let _ = (source_table, old, lock_timeout);
        Err(no_online(&self.describe()))
    }

    /// Drops `table` (the old table an online move kept, `rowshift finalize`).
    fn drop_table(&self, table: &str) -> Result<()> {
        let _ = table;
        Err(no_online(&self.describe()))
    }

    /// Every quarantined row.
    fn read_quarantine(&self) -> Result<Vec<QuarantineEntry>>;

    /// Atomically writes `passing` (rows from `chunk`'s quarantine that now transform
    /// cleanly, in the target schema) and replaces `chunk`'s quarantine with `remaining`.
    /// With `verify`, the rows written are read back first, as a chunk's are, and a
    /// difference leaves everything as it was. Returns the rows written. Safe to repeat
    /// after a crash.
    fn requeue(
        &self,
        chunk: usize,
        passing: &[RecordBatch],
        remaining: &[QuarantineEntry],
        verify: Option<&ReadBack>,
    ) -> Result<u64>;
}

/// The error of an online move into a target that cannot take one (files).
fn no_online(target: &str) -> crate::Error {
    crate::Error::Unsupported(format!(
        "{target}: an online move needs a database target (SQLite, PostgreSQL or MySQL/MariaDB)"
    ))
}

/// The writer of one chunk.
///
/// Contract: `commit` makes all of the chunk's rows and rejects visible at once, or none
/// of them. Dropping a writer without committing discards what it was given.
pub trait ChunkWriter: Send {
    /// Adds a batch in the target schema.
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;

    /// Adds rejected rows for the quarantine.
    fn reject(&mut self, entries: Vec<QuarantineEntry>) -> Result<()>;

    /// Makes the chunk durable and visible. With `verify`, reads back what was stored
    /// (inside the transaction, the finished temporary file, or the committed rows of a
    /// range only the chunk writes into, before marking it done) and fails, leaving
    /// nothing, if it is not what was sent. A database target that refuses rows
    /// fails with [`crate::Error::Refused`] naming every one of them, leaving nothing.
    fn commit(self: Box<Self>, mark: &DoneMark, verify: Option<&ReadBack>) -> Result<Committed>;
}
