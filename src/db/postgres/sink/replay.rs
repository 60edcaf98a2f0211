//! An online move into a PostgreSQL table (docs/online.md): replayed changes written by
//! key with their position in one transaction, and the cut-over.
//!
//! The cut-over takes `EXCLUSIVE` on the source table first: it stops every write (and
//! so every trigger) while rowshift's other connections still read the table and its
//! change log to drain the last changes. Once drained, the same transaction takes
//! `ACCESS EXCLUSIVE` on both tables (a lock upgrade: waiting writers queue behind the
//! holder), checks that nothing is left, drops the triggers and renames both tables,
//! and commits. Writers queued on the old name find the new table when they get their
//! lock: PostgreSQL looks a name up again after waiting for its lock.

use std::time::{Duration, Instant};

use sqlx::Postgres;

use super::dependents::Dependents;
use super::*;
use crate::checkpoint::replay::ReplayTable;
use crate::sink::replay::{Cutover, Replayed, Swapped, lock_not_had};
use crate::source::capture::{Capture, Position};

impl PostgresSink {
    fn replay_table(&self) -> ReplayTable<PgDialect> {
        ReplayTable::new(PgDialect, &self.schema)
    }

    /// See [`Sink::replay_position`].
    pub(super) fn replay_position_of(&self, pipeline: &str) -> Result<Option<(Position, u64)>> {
        self.replay_table()
            .load_on(&*self.client, &self.here(), pipeline)
    }

    /// See [`Sink::rewind_replay`].
    pub(super) fn rewind_replay_of(
        &self,
        pipeline: &str,
        to: Option<(Position, u64)>,
    ) -> Result<()> {
        self.replay_table()
            .rewind_on(&*self.client, &self.here(), pipeline, to)
    }

    /// Writes `batch` on `conn`, inside the caller's transaction.
    async fn replay_on(&self, conn: &mut PgConnection, batch: &Replayed<'_>) -> Result<u64> {
        let here = self.here();
        self.delete_rows(conn, &batch.delete).await?;
        self.rejects().delete_keys(conn, &here, batch.keys).await?;
        let (rows, _) = self.write_rows(conn, batch.rows, None, false).await?;
        for (chunk, entries) in by_chunk(batch.rejects) {
            self.rejects().insert(conn, &here, chunk, &entries).await?;
        }
        self.replay_table()
            .record(conn, &here, batch.pipeline, batch.at, batch.changes)
            .await?;
        Ok(rows)
    }

    /// See [`Sink::replay`].
    pub(super) fn replay_batch(&self, batch: &Replayed<'_>) -> Result<u64> {
        let here = self.here();
        let pool = self.client.pool()?;
        self.facts()?;
        table::refuse(self.refusals_before_sending(batch.rows)?)?;
        self.client.io().block_on(async {
            let db = |e| db_error(&here, e);
            let mut tx = pool.begin().await.map_err(db)?;
            let rows = self.replay_on(&mut tx, batch).await?;
            tx.commit().await.map_err(db)?;
            Ok(rows)
        })
    }

    /// See [`Sink::cutover`].
    pub(super) fn begin_cutover(
        &self,
        source_table: &str,
        _old: &str,
        lock_timeout: Duration,
    ) -> Result<Box<dyn Cutover + '_>> {
        let here = self.here();
        let pool = self.client.pool()?;
        self.facts()?;
        let source = qualified(&self.schema, source_table);
        let ms = lock_timeout.as_millis().max(1) as u64;
        let tx = self.client.io().block_on(async {
            let db = |e| db_error(&here, e);
            if let Some(sql) = crate::fault::fault_sql(0, "cutover-lock") {
                sqlx::raw_sql(stmt(sql)).execute(pool).await.map_err(db)?;
            }
            let mut tx = pool.begin().await.map_err(db)?;
            sqlx::query(stmt(format!("SET LOCAL lock_timeout = {ms}")))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            match sqlx::query(stmt(format!("LOCK TABLE {source} IN EXCLUSIVE MODE")))
                .execute(&mut *tx)
                .await
            {
                Ok(_) => Ok(tx),
                Err(e) if is_lock_timeout(&e) => Err(lock_not_had(&source, ms, &e.to_string())),
                Err(e) => Err(db(e)),
            }
        })?;
        Ok(Box::new(PgCutover {
            sink: self,
            tx: Some(tx),
            source_table: source_table.to_string(),
            locked: Instant::now(),
            ms,
        }))
    }

    /// See [`Sink::drop_table`].
    pub(super) fn drop_table_of(&self, table: &str) -> Result<()> {
        let sql = format!("DROP TABLE IF EXISTS {}", qualified(&self.schema, table));
        crate::sql::dialect::run_on(&PgDialect, &*self.client, &self.here(), &sql, Vec::new())?;
        Ok(())
    }
}

/// Whether `e` is PostgreSQL's `lock_not_available` (a `lock_timeout` ran out).
fn is_lock_timeout(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "55P03")
}

/// Rejected rows grouped by the chunk each belongs to.
pub(crate) fn by_chunk(rejects: &[QuarantineEntry]) -> Vec<(usize, Vec<QuarantineEntry>)> {
    let mut out: std::collections::BTreeMap<usize, Vec<QuarantineEntry>> = Default::default();
    for r in rejects {
        out.entry(r.chunk).or_default().push(r.clone());
    }
    out.into_iter().collect()
}

struct PgCutover<'a> {
    sink: &'a PostgresSink,
    /// The lock's transaction; taken by the commit.
    tx: Option<sqlx::Transaction<'static, Postgres>>,
    source_table: String,
    locked: Instant,
    ms: u64,
}

impl Drop for PgCutover<'_> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            // Not swapped: the lock goes with the transaction, rolled back on the
            // runtime its connection belongs to.
            self.sink
                .client
                .io()
                .block_on(async move { drop(tx.rollback().await) });
        }
    }
}

impl Cutover for PgCutover<'_> {
    fn replay(&mut self, batch: &Replayed<'_>) -> Result<u64> {
        // The lock stops writes only: the drain reads and writes on other connections.
        self.sink.replay_batch(batch)
    }

    fn read_back(&mut self, selection: &Selection, key: &[String]) -> Result<Vec<RecordBatch>> {
        // The drain committed: any connection reads its rows (the lock is on the source).
        self.sink.read_rows(0, selection, key)
    }

    fn swap(
        mut self: Box<Self>,
        old: &str,
        capture: &dyn Capture,
        reverse: Option<&dyn Capture>,
        drained: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Swapped> {
        let sink = self.sink;
        let reverse_sql = match reverse {
            Some(r) => r.install_sql(&self.source_table)?,
            None => Vec::new(),
        };
        let (source_table, ms) = (self.source_table.clone(), self.ms);
        let here = sink.here();
        let source = qualified(&sink.schema, &source_table);
        let old_q = qualified(&sink.schema, old);
        let target = sink.t();
        let tx = self.tx.as_mut().expect("open until committed");
        sink.client.io().block_on(async {
            let db = |e| db_error(&here, e);
            for t in [&source, &target] {
                match sqlx::query(stmt(format!("LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE")))
                    .execute(&mut **tx)
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_lock_timeout(&e) => {
                        return Err(lock_not_had(t, ms, &e.to_string()));
                    }
                    Err(e) => return Err(db(e)),
                }
            }
            Ok(())
        })?;
        // Checked under the lock, on the capture's own connection: nothing is left.
        drained()?;
        let (dependents, moved) = sink.client.io().block_on(async {
            let db = |e| db_error(&here, e);
            let dependents = Dependents::read(tx, &source, &target).await.map_err(db)?;
            dependents.check(&source)?;
            for sql in capture.drop_trigger_sql() {
                sqlx::query(stmt(sql))
                    .execute(&mut **tx)
                    .await
                    .map_err(db)?;
            }
            sqlx::query(stmt(format!(
                "ALTER TABLE {source} RENAME TO {}",
                quote_ident(old)
            )))
            .execute(&mut **tx)
            .await
            .map_err(db)?;
            sqlx::query(stmt(format!(
                "ALTER TABLE {target} RENAME TO {}",
                quote_ident(&source_table)
            )))
            .execute(&mut **tx)
            .await
            .map_err(db)?;
            // The source's name now names the new table.
            let moved = match dependents.apply(tx, &old_q, &source).await {
                Ok(moved) => moved,
                Err(r) => {
                    return Err(match r.lock_timeout() {
                        Some(e) => lock_not_had(&source, ms, &e.to_string()),
                        None => r.into_error(&source),
                    });
                }
            };
            // Still under the lock: the first write after the commit is logged.
            for sql in reverse_sql {
                sqlx::query(stmt(sql))
                    .execute(&mut **tx)
                    .await
                    .map_err(db)?;
            }
            Ok((dependents, moved))
        })?;
        let tx = self.tx.take().expect("open until committed");
        sink.client.io().block_on(async {
            crate::fault::crash_run("cutover-commit");
            tx.commit().await.map_err(|e| db_error(&here, e))
        })?;
        let window = self.locked.elapsed();
        // After the commit: a scan of each referencing table, with writes going on.
        let pool = sink.client.pool()?;
        let warnings = sink.client.io().block_on(dependents.validate(pool));
        Ok(Swapped {
            window,
            moved,
            warnings,
        })
    }
}
