//! An online move into a SQLite table (docs/online.md): replayed changes written by key
//! with their position in one transaction, and the cut-over.
//!
//! SQLite locks the whole file, so the cut-over's lock is its write transaction
//! (`BEGIN IMMEDIATE`): writers wait in their busy handler, readers go on, and the last
//! changes are drained inside that transaction, on the same connection, before the
//! renames. `legacy_alter_table` keeps other tables' foreign keys and views naming the
//! source table pointing at its name, which the new table takes;
//! `PRAGMA foreign_key_check` then checks them before the commit.

use std::time::{Duration, Instant};

use sqlx::sqlite::Sqlite;

use super::*;
use crate::checkpoint::replay::ReplayTable;
use crate::sink::replay::{Cutover, Replayed, Swapped, lock_not_had};
use crate::source::capture::{Capture, Position};

impl SqliteSink {
    fn replay_table(&self) -> ReplayTable<SqliteDialect> {
        ReplayTable::new(SqliteDialect, "main")
    }

    /// See [`Sink::replay_position`].
    pub(super) fn replay_position_of(&self, pipeline: &str) -> Result<Option<(Position, u64)>> {
        let here = self.here();
        let pool = self.pool()?;
        self.io.block_on(async {
            let _writing = self.write_lock.lock().await;
            let mut conn = pool.acquire().await.map_err(|e| db_error(&here, e))?;
            self.replay_table().load(&mut conn, &here, pipeline).await
        })
    }

    /// See [`Sink::rewind_replay`].
    pub(super) fn rewind_replay_of(
        &self,
        pipeline: &str,
        to: Option<(Position, u64)>,
    ) -> Result<()> {
        let here = self.here();
        let pool = self.pool()?;
        self.io.block_on(async {
            let _writing = self.write_lock.lock().await;
            let mut conn = pool.acquire().await.map_err(|e| db_error(&here, e))?;
            self.replay_table()
                .rewind(&mut conn, &here, pipeline, to)
                .await
        })
    }

    /// `batch`'s rows as SQLite binds them (reads the table's catalog once: call it
    /// before entering the runtime).
    fn replay_rows(&self, batch: &Replayed<'_>) -> Result<Vec<RecordBatch>> {
        let here = self.here();
        let real = self.decimals_as_real(None)?;
        let nan = nan_refusals(batch.rows, 0);
        if !nan.is_empty() {
            return Err(Error::Refused(nan));
        }
        batch
            .rows
            .iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| bindable(b, &here, &real))
            .collect()
    }

    /// Writes `batch` (its rows made [`Self::replay_rows`]) on `conn`, inside the
    /// caller's transaction.
    async fn replay_on(
        &self,
        conn: &mut SqliteConnection,
        batch: &Replayed<'_>,
        rows: &[RecordBatch],
    ) -> Result<u64> {
        let here = self.here();
        self.delete_rows(conn, &batch.delete).await?;
        self.rejects().delete_keys(conn, &here, batch.keys).await?;
        let written = self.insert_rows(conn, rows).await?;
        for (chunk, entries) in by_chunk(batch.rejects) {
            self.rejects().insert(conn, &here, chunk, &entries).await?;
        }
        self.replay_table()
            .record(conn, &here, batch.pipeline, batch.at, batch.changes)
            .await?;
        Ok(written)
    }

    /// See [`Sink::replay`].
    pub(super) fn replay_batch(&self, batch: &Replayed<'_>) -> Result<u64> {
        let here = self.here();
        let pool = self.pool()?;
        let rows = self.replay_rows(batch)?;
        self.io.block_on(async {
            let db = |e| db_error(&here, e);
            let _writing = self.write_lock.lock().await;
            self.write_ledger(pool).await?;
            let mut tx = pool.begin().await.map_err(db)?;
            let rows = self.replay_on(&mut tx, batch, &rows).await?;
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
        let pool = self.pool()?;
        // Looked up before the lock: the catalog read needs a connection of its own.
        self.decimals_as_real(None)?;
        let ms = lock_timeout.as_millis().max(1) as u64;
        let (guard, conn) = self.io.block_on(async {
            let db = |e| db_error(&here, e);
            let guard = self.write_lock.lock().await;
            self.write_ledger(pool).await?;
            let mut conn = pool.acquire().await.map_err(db)?;
            if let Some(sql) = crate::fault::fault_sql(0, "cutover-lock") {
                sqlx::raw_sql(stmt(sql))
                    .execute(&mut *conn)
                    .await
                    .map_err(db)?;
            }
            sqlx::raw_sql(stmt(format!("PRAGMA busy_timeout = {ms}")))
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            let begun = sqlx::raw_sql(stmt("BEGIN IMMEDIATE".to_string()))
                .execute(&mut *conn)
                .await;
            // Back to the pool's own wait for the rest of the connection's life.
            sqlx::raw_sql(stmt("PRAGMA busy_timeout = 60000".to_string()))
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            match begun {
                Ok(_) => Ok((guard, conn)),
                Err(e) if is_busy(&e) => Err(lock_not_had(
                    &format!("{} ({})", quote_ident(source_table), self.shown),
                    ms,
                    &e.to_string(),
                )),
                Err(e) => Err(db(e)),
            }
        })?;
        Ok(Box::new(SqliteCutover {
            sink: self,
            _guard: guard,
            conn: Some(conn),
            source_table: source_table.to_string(),
            locked: Instant::now(),
        }))
    }

    /// See [`Sink::drop_table`].
    pub(super) fn drop_table_of(&self, table: &str) -> Result<()> {
        let here = self.here();
        let pool = self.pool()?;
        self.io.block_on(async {
            let _writing = self.write_lock.lock().await;
            self.write_ledger(pool).await?;
            sqlx::raw_sql(stmt(format!("DROP TABLE IF EXISTS {}", quote_ident(table))))
                .execute(pool)
                .await
                .map_err(|e| db_error(&here, e))?;
            Ok(())
        })
    }
}

/// Whether `e` is SQLite's busy or locked error (the lock was not had in time).
fn is_busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| {
            c.parse::<i32>()
                .is_ok_and(|n| n & 0xff == 5 || n & 0xff == 6)
        })
}

/// Rejected rows grouped by the chunk each belongs to.
fn by_chunk(rejects: &[QuarantineEntry]) -> Vec<(usize, Vec<QuarantineEntry>)> {
    let mut out: std::collections::BTreeMap<usize, Vec<QuarantineEntry>> = Default::default();
    for r in rejects {
        out.entry(r.chunk).or_default().push(r.clone());
    }
    out.into_iter().collect()
}

struct SqliteCutover<'a> {
    sink: &'a SqliteSink,
    _guard: tokio::sync::MutexGuard<'a, ()>,
    /// The connection in `BEGIN IMMEDIATE`; taken back at the end.
    conn: Option<sqlx::pool::PoolConnection<Sqlite>>,
    source_table: String,
    locked: Instant,
}

impl Drop for SqliteCutover<'_> {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            // Not swapped: everything written under the lock goes too.
            let _ = self.sink.io.block_on(async move {
                sqlx::raw_sql(stmt("ROLLBACK".to_string()))
                    .execute(&mut *conn)
                    .await
            });
        }
    }
}

impl Cutover for SqliteCutover<'_> {
    fn replay(&mut self, batch: &Replayed<'_>) -> Result<u64> {
        let rows = self.sink.replay_rows(batch)?;
        let conn = self.conn.as_mut().expect("open until swapped or dropped");
        self.sink
            .io
            .block_on(self.sink.replay_on(conn, batch, &rows))
    }

    fn read_back(&mut self, selection: &Selection, key: &[String]) -> Result<Vec<RecordBatch>> {
        let conn = self.conn.as_mut().expect("open until swapped or dropped");
        self.sink
            .io
            .block_on(self.sink.select_rows(conn, selection, key))
    }

    fn swap(
        mut self: Box<Self>,
        old: &str,
        capture: &dyn Capture,
        reverse: Option<&dyn Capture>,
        drained: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Swapped> {
        drained()?;
        let reverse_sql = match reverse {
            Some(r) => r.install_sql(&self.source_table)?,
            None => Vec::new(),
        };
        let sink = self.sink;
        let here = sink.here();
        let mut conn = self.conn.take().expect("open until swapped or dropped");
        let (source, target) = (quote_ident(&self.source_table), quote_ident(&sink.table));
        let done = sink.io.block_on(async {
            let db = |e| db_error(&here, e);
            let mut statements = capture.drop_trigger_sql();
            statements.push("PRAGMA legacy_alter_table = ON".to_string());
            statements.push(format!("ALTER TABLE {source} RENAME TO {}", quote_ident(old)));
            statements.push(format!("ALTER TABLE {target} RENAME TO {source}"));
            statements.push("PRAGMA legacy_alter_table = OFF".to_string());
            // In the same transaction: the first write after the commit is logged.
            statements.extend(reverse_sql);
            for s in statements {
                sqlx::raw_sql(stmt(s)).execute(&mut *conn).await.map_err(db)?;
            }
            let broken: Vec<(String, i64)> =
                sqlx::query_as(stmt("SELECT \"table\", rowid FROM pragma_foreign_key_check".to_string()))
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(db)?;
            if let Some((table, rowid)) = broken.first() {
                return Err(Error::Check(format!(
                    "{here}: after the renames, {} rows break a foreign key (the first: table {table} rowid {rowid}); nothing was swapped",
                    broken.len()
                )));
            }
            crate::fault::crash_run("cutover-commit");
            sqlx::raw_sql(stmt("COMMIT".to_string()))
                .execute(&mut *conn)
                .await
                .map_err(db)
        });
        if done.is_err() {
            let _ = sink
                .io
                .block_on(sqlx::raw_sql(stmt("ROLLBACK".to_string())).execute(&mut *conn));
            let _ = sink.io.block_on(
                sqlx::raw_sql(stmt("PRAGMA legacy_alter_table = OFF".to_string()))
                    .execute(&mut *conn),
            );
        }
        // A pooled connection goes back to its pool on the runtime.
        sink.io.block_on(async move { drop(conn) });
        done?;
        Ok(Swapped {
            window: self.locked.elapsed(),
            ..Swapped::default()
        })
    }
}
