//! What an online move asks of a database target (see docs/online.md): writing a batch
//! of replayed changes by key, with the replay position, in one transaction
//! ([`Replayed`]), and swapping the new table into the source table's place under a
//! lock ([`Cutover`]). Each database implements both beside its sink.

use arrow::record_batch::RecordBatch;

use crate::check::quarantine::QuarantineEntry;
use crate::chunk::Selection;
use crate::source::capture::{Capture, Position};

/// A batch of replayed changes, as one transaction writes it.
pub struct Replayed<'a> {
    /// The pipeline, whose replay position is recorded.
    pub pipeline: &'a str,
    /// The target rows of every key the batch replays: deleted first, whether the source
    /// still has the row or not.
    pub delete: Selection,
    /// The keys' rows as the source has them now, transformed and checked (target schema).
    pub rows: &'a [RecordBatch],
    /// The keys as the quarantine stores them (`row_key`): their earlier quarantined
    /// rows are removed, a row that now fails is in `rejects`.
    pub keys: &'a [String],
    /// The rows that failed the transform or a check now, for the quarantine.
    pub rejects: &'a [QuarantineEntry],
    /// The log position the batch reaches.
    pub at: Position,
    /// How many logged changes the batch replays.
    pub changes: u64,
}

/// A cut-over in progress: the lock is held, the source table takes no writes. Dropping
/// it without [`Cutover::swap`] releases the lock and changes nothing.
pub trait Cutover {
    /// Writes replayed changes while the lock is held (in the lock's transaction where
    /// the database needs that).
    fn replay(&mut self, batch: &Replayed<'_>) -> crate::Result<u64>;

    /// The target rows `selection` names as they stand under the lock, drained writes
    /// included (read in the lock's transaction where the drain writes in it), decoded
    /// as [`crate::sink::Sink::read_rows`] decodes them: the drain's read-back.
    fn read_back(
        &mut self,
        selection: &Selection,
        key: &[String],
    ) -> crate::Result<Vec<RecordBatch>>;

    /// Renames the source table to `old` and the target table into the source's name,
    /// and drops the capture triggers, once `drained` says (under the lock) that no
    /// change is left to replay. Where the database ties the table's dependents to its
    /// identity (PostgreSQL), they move to the new table in the same transaction.
    /// `reverse`, when given, is installed on the new table before any write can reach
    /// it ([`Capture::install_sql`]): it logs what is written after the swap, for the
    /// reverse replay that keeps `old` current and for swapping back.
    fn swap(
        self: Box<Self>,
        old: &str,
        capture: &dyn Capture,
        reverse: Option<&dyn Capture>,
        drained: &mut dyn FnMut() -> crate::Result<()>,
    ) -> crate::Result<Swapped>;
}

/// What a swap did.
#[derive(Debug, Clone, Default)]
pub struct Swapped {
    /// How long the source table was locked against writes.
    pub window: std::time::Duration,
    /// The dependents moved to the new table (sequences, views, foreign keys), one line
    /// each.
    pub moved: Vec<String>,
    /// What did not go as it should after the commit (a foreign key that failed its
    /// validation and stays `NOT VALID`), one line each.
    pub warnings: Vec<String>,
}

/// A cut-over's lock that could not be had: nothing was changed.
pub fn lock_not_had(table: &str, waited_ms: u64, cause: &str) -> crate::Error {
    crate::Error::Unsupported(format!(
        "the cut-over could not lock table {table} within {waited_ms} ms ({cause}); nothing was renamed and capture goes on: run `rowshift cutover` again, or raise [online] lock_timeout_ms"
    ))
}

/// The [`crate::sink::Sink`] methods of an online move, for an `impl Sink` block of a
/// database sink whose type has, beside it (in its `sink/replay.rs`),
/// `replay_position_of`, `rewind_replay_of`, `replay_batch`, `begin_cutover` and
/// `drop_table_of`: each database writes those, and this forwards the trait to them.
macro_rules! online_methods {
    () => {
        fn replay_position(
            &self,
            pipeline: &str,
        ) -> $crate::Result<Option<($crate::source::capture::Position, u64)>> {
            self.replay_position_of(pipeline)
        }

        fn forget_replay(&self, pipeline: &str) -> $crate::Result<()> {
            self.rewind_replay_of(pipeline, None)
        }

        fn rewind_replay(
            &self,
            pipeline: &str,
            to: Option<($crate::source::capture::Position, u64)>,
        ) -> $crate::Result<()> {
            self.rewind_replay_of(pipeline, to)
        }

        fn replay(&self, batch: &$crate::sink::replay::Replayed<'_>) -> $crate::Result<u64> {
            self.replay_batch(batch)
        }

        fn cutover(
            &self,
            source_table: &str,
            old: &str,
            lock_timeout: std::time::Duration,
        ) -> $crate::Result<Box<dyn $crate::sink::replay::Cutover + '_>> {
            self.begin_cutover(source_table, old, lock_timeout)
        }

        fn drop_table(&self, table: &str) -> $crate::Result<()> {
            self.drop_table_of(table)
        }
    };
}
pub(crate) use online_methods;
