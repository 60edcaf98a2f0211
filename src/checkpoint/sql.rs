//! The statements that change a chunk's state, shared by the three stores: each is a
//! compare-and-set on the state (and claim) its writer expects, so a run that lost a
//! chunk to another can change nothing of it.
//!
//! A claim takes a chunk that is not done and records a fresh token; the done and
//! failed marks only apply to a running chunk that still holds the writer's token. The
//! done mark commits in the transaction that writes the chunk's rows (database targets),
//! so when it finds the chunk claimed by another run, the rows roll back with it.

pub(crate) use crate::sql::dialect::Marks;

/// Claims a chunk that is not done: binds the token (hex), the pipeline and the chunk id.
/// A running chunk is taken too: the caller holds the run lock, so its claimant is a run
/// that died or lost the lock, and its own commit is refused by the new token.
///
/// Also binds the claiming process (`host:pid`) and the time (ms) after the token; the
/// claim holds no lease (the run lock guards it).
pub(crate) fn claim(table: &str, m: Marks) -> String {
    m.apply(&format!(
        "UPDATE {table} SET state = 'running', attempts = attempts + 1, claim = ?, worker = ?, \
         started_ms = ?, finished_ms = NULL, lease_ms = NULL \
         WHERE pipeline = ? AND id = ? AND state <> 'done'"
    ))
}

/// Marks a chunk done if it is running under the writer's claim, and under a lease that
/// has not run out when it has one (`now` is the database's clock in ms): binds rows
/// read, written, filtered, rejected, seconds, read-back seconds, finished (ms),
/// checksum (hex), pipeline, chunk id, token (hex).
pub(crate) fn done(table: &str, m: Marks, now: &str) -> String {
    m.apply(&format!(
        "UPDATE {table} SET state = 'done', rows_read = ?, rows_written = ?, rows_filtered = ?, \
         rows_rejected = ?, seconds = ?, verify_seconds = ?, finished_ms = ?, checksum = ?, \
         last_error = NULL, lease_ms = NULL \
         WHERE pipeline = ? AND id = ? AND state = 'running' AND claim = ? \
         AND (lease_ms IS NULL OR lease_ms >= {now})"
    ))
}

/// Finds the next chunk a worker of a shared run may take, locking its row: pending, or
/// running under a lease that ran out (`now`: the database's clock in ms; `lock`: the
/// dialect's `FOR UPDATE SKIP LOCKED`). Binds the pipeline.
pub(crate) fn next_claimable(table: &str, m: Marks, now: &str, lock: &str) -> String {
    m.apply(&format!(
        "SELECT id FROM {table} WHERE pipeline = ? AND (state = 'pending' \
         OR (state = 'running' AND lease_ms IS NOT NULL AND lease_ms < {now})) \
         ORDER BY id LIMIT 1{lock}"
    ))
}

/// Claims a chunk for a worker of a shared run under a lease: binds the token (hex), the
/// worker, the time (ms), the lease (ms), the pipeline and the chunk id.
pub(crate) fn lease(table: &str, m: Marks, now: &str) -> String {
    m.apply(&format!(
        "UPDATE {table} SET state = 'running', attempts = attempts + 1, claim = ?, worker = ?, \
         started_ms = ?, finished_ms = NULL, lease_ms = {now} + ? \
         WHERE pipeline = ? AND id = ?"
    ))
}

/// Extends a worker's lease on a chunk, unless it ran out (the chunk may be another's):
/// binds the lease (ms), the pipeline, the chunk id and the token (hex).
pub(crate) fn extend(table: &str, m: Marks, now: &str) -> String {
    m.apply(&format!(
        "UPDATE {table} SET lease_ms = {now} + ? \
         WHERE pipeline = ? AND id = ? AND state = 'running' AND claim = ? AND lease_ms >= {now}"
    ))
}

/// Gives up a worker's lease on a chunk it did not finish, so that another takes it at
/// once: binds the pipeline, the chunk id and the token (hex).
pub(crate) fn give_up(table: &str, m: Marks) -> String {
    m.apply(&format!(
        "UPDATE {table} SET lease_ms = 0 \
         WHERE pipeline = ? AND id = ? AND state = 'running' AND claim = ? AND lease_ms IS NOT NULL"
    ))
}

/// Puts the chunks a run left running or failed back to pending (the first worker of a
/// shared run): binds the pipeline.
pub(crate) fn reopen(table: &str, m: Marks) -> String {
    m.apply(&format!(
        "UPDATE {table} SET state = 'pending', lease_ms = NULL \
         WHERE pipeline = ? AND state IN ('running', 'failed')"
    ))
}

/// Marks a chunk failed if it is running under the writer's claim: binds the error, the
/// pipeline, the chunk id and the token (hex).
pub(crate) fn fail(table: &str, m: Marks) -> String {
    m.apply(&format!(
        "UPDATE {table} SET state = 'failed', last_error = ? \
         WHERE pipeline = ? AND id = ? AND state = 'running' AND claim = ?"
    ))
}

/// Counts (0 or 1) whether a chunk is still running under the writer's claim: binds the
/// pipeline, the chunk id and the token (hex). For a commit that writes its rows before
/// its done mark.
pub(crate) fn holds(table: &str, m: Marks) -> String {
    m.apply(&format!(
        "SELECT count(*) FROM {table} WHERE pipeline = ? AND id = ? AND state = 'running' AND claim = ?"
    ))
}

/// Puts chunks that are not done back to pending (for `retry`): binds the pipeline and
/// the chunk id.
pub(crate) fn reset(table: &str, m: Marks) -> String {
    m.apply(&format!(
        "UPDATE {table} SET state = 'pending' WHERE pipeline = ? AND id = ? AND state <> 'done'"
    ))
}

/// Puts a done chunk back to pending (`verify --repair`): binds the pipeline and the
/// chunk id.
pub(crate) fn redo(table: &str, m: Marks) -> String {
    m.apply(&format!(
        "UPDATE {table} SET state = 'pending' WHERE pipeline = ? AND id = ? AND state = 'done'"
    ))
}

/// Moves rows from the rejected to the written (and filtered) counts of a done chunk,
/// after `retry --rejects`: binds written, filtered, written + filtered + gone, the
/// pipeline and the chunk id.
pub(crate) fn requeued(table: &str, m: Marks) -> String {
    m.apply(&format!(
        "UPDATE {table} SET rows_written = rows_written + ?, rows_filtered = rows_filtered + ?, \
         rows_rejected = rows_rejected - ? WHERE pipeline = ? AND id = ? AND state = 'done'"
    ))
}

/// Records a run's new fingerprint and settings: binds the fingerprint, the settings
/// (JSON) and the pipeline.
pub(crate) fn record_settings(table: &str, m: Marks) -> String {
    m.apply(&format!(
        "UPDATE {table} SET fingerprint = ?, settings = ? WHERE pipeline = ?"
    ))
}

/// Settings as stored.
pub(crate) fn settings_json(settings: &[(String, String)]) -> crate::Result<String> {
    serde_json::to_string(settings).map_err(|e| crate::Error::Internal(e.to_string()))
}

/// The token as stored.
pub(crate) fn hex(token: u64) -> String {
    format!("{token:016x}")
}

/// Why a chunk's done or failed mark did not apply: the writer's claim is gone.
pub(crate) fn claim_lost(chunk: usize) -> crate::Error {
    crate::Error::Unsupported(format!(
        "chunk {chunk}: {}; nothing of this attempt is committed",
        super::CLAIM_LOST
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order_for_postgres() {
        assert_eq!(
            fail("t", Marks::Numbered),
            "UPDATE t SET state = 'failed', last_error = $1 WHERE pipeline = $2 AND id = $3 AND state = 'running' AND claim = $4"
        );
        assert_eq!(
            fail("t", Marks::Question),
            "UPDATE t SET state = 'failed', last_error = ? WHERE pipeline = ? AND id = ? AND state = 'running' AND claim = ?"
        );
    }
}
