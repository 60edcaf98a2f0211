//! An online move into a MySQL/MariaDB table (docs/online.md): replayed changes written
//! by key with their position in one transaction, and the cut-over.
//!
//! MariaDB refuses `RENAME TABLE` under `LOCK TABLES` ("Can't execute the given
//! command because you have active locked tables", checked on 10.11), and a `WRITE`
//! lock would keep rowshift's own connections from reading the source to drain it. So
//! the cut-over follows gh-ost: a session creates the old table's name as an empty
//! sentry table and takes `LOCK TABLES source READ, sentry WRITE` (writes to the source
//! stop; reads go on). The last changes are drained through the other connections.
//! Then a second session issues `RENAME TABLE source TO old, target TO source`, which
//! waits for the locks; once it is seen waiting, the first session drops the sentry and
//! unlocks. The server grants the waiting rename before the waiting writes (a pending
//! exclusive metadata lock goes first), which then run against the new table. If the
//! first session dies before dropping the sentry, the rename fails on the sentry's name
//! and nothing is swapped.

use std::time::{Duration, Instant};

use super::*;
use crate::checkpoint::replay::ReplayTable;
use crate::sink::replay::{Cutover, Replayed, Swapped, lock_not_had};
use crate::source::capture::{Capture, Position};

impl MysqlSink {
    fn replay_table(&self) -> ReplayTable<MyDialect> {
        ReplayTable::new(MyDialect, &self.database)
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

    /// See [`Sink::replay`].
    pub(super) fn replay_batch(&self, batch: &Replayed<'_>) -> Result<u64> {
        let here = self.here();
        let pool = self.client.pool()?;
        table::refuse(self.refusals_before_sending(batch.rows)?)?;
        self.client.io().block_on(async {
            let db = |e| db_error(&here, e);
            let mut tx = pool.begin().await.map_err(db)?;
            self.delete_rows(&mut tx, &batch.delete).await?;
            self.rejects()
                .delete_keys(&mut tx, &here, batch.keys)
                .await?;
            let rows = self.write_rows(&mut tx, batch.rows, None).await?;
            let mut groups: std::collections::BTreeMap<usize, Vec<QuarantineEntry>> =
                Default::default();
            for r in batch.rejects {
                groups.entry(r.chunk).or_default().push(r.clone());
            }
            for (chunk, entries) in groups {
                self.rejects()
                    .insert(&mut tx, &here, chunk, &entries)
                    .await?;
            }
            self.replay_table()
                .record(&mut tx, &here, batch.pipeline, batch.at, batch.changes)
                .await?;
            tx.commit().await.map_err(db)?;
            Ok(rows)
        })
    }

    /// See [`Sink::cutover`].
    pub(super) fn begin_cutover(
        &self,
        source_table: &str,
        old: &str,
        lock_timeout: Duration,
    ) -> Result<Box<dyn Cutover + '_>> {
        let here = self.here();
        let pool = self.client.pool()?;
        let source = qualified(&self.database, source_table);
        let sentry = qualified(&self.database, old);
        let ms = lock_timeout.as_millis().max(1) as u64;
        // lock_wait_timeout counts whole seconds.
        let secs = ms.div_ceil(1000);
        let conn = self.client.io().block_on(async {
            let db = |e| db_error(&here, e);
            if let Some(sql) = crate::fault::fault_sql(0, "cutover-lock") {
                sqlx::raw_sql(stmt(sql)).execute(pool).await.map_err(db)?;
            }
            let mut conn = pool.acquire().await.map_err(db)?.detach();
            sqlx::raw_sql(stmt(format!("SET SESSION lock_wait_timeout = {secs}")))
                .execute(&mut conn)
                .await
                .map_err(db)?;
            // A sentry left by a cut-over that died holding it (a live one drops it
            // before it unlocks); the run lock keeps out any other cut-over of this
            // pipeline, so no one holds it now.
            let left: i64 = sqlx::query_scalar(stmt(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND TABLE_COMMENT = 'rowshift cut-over sentry'"
                    .to_string(),
            ))
            .bind(&self.database)
            .bind(old)
            .fetch_one(&mut conn)
            .await
            .map_err(db)?;
            if left > 0 {
                sqlx::raw_sql(stmt(format!("DROP TABLE {sentry}")))
                    .execute(&mut conn)
                    .await
                    .map_err(db)?;
            }
            sqlx::raw_sql(stmt(format!(
                "CREATE TABLE {sentry} (sentry INT) ENGINE=InnoDB COMMENT 'rowshift cut-over sentry'"
            )))
            .execute(&mut conn)
            .await
            .map_err(|e| {
                Error::Unsupported(format!(
                    "{here}: cannot create {sentry}, the name the source table takes at the cut-over ({}); if an earlier cut-over left it, run `rowshift finalize` or drop it",
                    db(e)
                ))
            })?;
            let locked = sqlx::raw_sql(stmt(format!(
                "LOCK TABLES {source} READ, {sentry} WRITE"
            )))
            .execute(&mut conn)
            .await;
            match locked {
                Ok(_) => Ok(conn),
                Err(e) => {
                    let _ = sqlx::raw_sql(stmt(format!("DROP TABLE IF EXISTS {sentry}")))
                        .execute(&mut conn)
                        .await;
                    if is_lock_timeout(&e) {
                        Err(lock_not_had(&source, ms, &e.to_string()))
                    } else {
                        Err(db(e))
                    }
                }
            }
        })?;
        Ok(Box::new(MyCutover {
            sink: self,
            conn: Some(conn),
            source_table: source_table.to_string(),
            sentry,
            secs,
            locked: Instant::now(),
        }))
    }

    /// See [`Sink::drop_table`].
    pub(super) fn drop_table_of(&self, table: &str) -> Result<()> {
        let sql = format!("DROP TABLE IF EXISTS {}", qualified(&self.database, table));
        crate::sql::dialect::run_on(&MyDialect, &*self.client, &self.here(), &sql, Vec::new())?;
        Ok(())
    }
}

/// Whether `e` is a lock wait timeout (1205) or a metadata lock wait that ran out.
fn is_lock_timeout(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "HY000" || c == "40001")
        || e.to_string().contains("Lock wait timeout")
}

struct MyCutover<'a> {
    sink: &'a MysqlSink,
    /// The session holding `LOCK TABLES`; closing it releases them.
    conn: Option<sqlx::MySqlConnection>,
    source_table: String,
    sentry: String,
    secs: u64,
    locked: Instant,
}

impl Drop for MyCutover<'_> {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let sentry = self.sentry.clone();
            let _ = self.sink.client.io().block_on(async move {
                sqlx::raw_sql(stmt(format!("DROP TABLE IF EXISTS {sentry}")))
                    .execute(&mut conn)
                    .await?;
                sqlx::raw_sql(stmt("UNLOCK TABLES".to_string()))
                    .execute(&mut conn)
                    .await
            });
        }
    }
}

impl Cutover for MyCutover<'_> {
    fn replay(&mut self, batch: &Replayed<'_>) -> Result<u64> {
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
        drained()?;
        // On the new table by its name now, before the RENAME (MySQL's DDL commits on
        // its own): nothing but rowshift writes it until the rename, and the drain is
        // done.
        let reverse_sql = match reverse {
            Some(r) => r.install_sql(&self.sink.table)?,
            None => Vec::new(),
        };
        let sink = self.sink;
        let here = sink.here();
        let pool = sink.client.pool()?;
        let source = qualified(&sink.database, &self.source_table);
        let old_q = qualified(&sink.database, old);
        let target = sink.t();
        let sentry = self.sentry.clone();
        let secs = self.secs;
        let mut lock = self.conn.take().expect("open until swapped or dropped");
        let renamed = sink.client.io().block_on(async {
            let db = |e| db_error(&here, e);
            let mut rename = pool.acquire().await.map_err(db)?.detach();
            sqlx::raw_sql(stmt(format!("SET SESSION lock_wait_timeout = {}", secs + 5)))
                .execute(&mut rename)
                .await
                .map_err(db)?;
            for sql in reverse_sql {
                sqlx::raw_sql(stmt(sql))
                    .execute(&mut rename)
                    .await
                    .map_err(db)?;
            }
            let id: u64 = sqlx::query_scalar(stmt("SELECT CONNECTION_ID()".to_string()))
                .fetch_one(&mut rename)
                .await
                .map_err(db)?;
            let rename_sql = format!("RENAME TABLE {source} TO {old_q}, {target} TO {source}");
            let renaming = async {
                sqlx::raw_sql(stmt(rename_sql)).execute(&mut rename).await
            };
            let release = async {
                // The rename must be queued before the lock goes, or a waiting write
                // could reach the old table first.
                let t0 = Instant::now();
                loop {
                    let waiting: i64 = sqlx::query_scalar(stmt(
                        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ? AND STATE LIKE '%metadata lock%'"
                            .to_string(),
                    ))
                    .bind(id)
                    .fetch_one(pool)
                    .await?;
                    if waiting > 0 || t0.elapsed() > Duration::from_secs(secs + 5) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                crate::fault::crash_run("cutover-commit");
                sqlx::raw_sql(stmt(format!("DROP TABLE IF EXISTS {sentry}")))
                    .execute(&mut lock)
                    .await?;
                sqlx::raw_sql(stmt("UNLOCK TABLES".to_string()))
                    .execute(&mut lock)
                    .await
                    .map(|_| ())
            };
            let (renamed, released) = futures::join!(renaming, release);
            drop(rename);
            drop(lock);
            released.map_err(db)?;
            renamed.map_err(|e| {
                Error::Unsupported(format!(
                    "{here}: the swap's RENAME TABLE failed ({}); nothing was renamed and capture goes on: run `rowshift cutover` again",
                    db(e)
                ))
            })?;
            Ok::<_, Error>(())
        });
        let window = self.locked.elapsed();
        if renamed.is_err()
            && let Some(r) = reverse
        {
            // Not swapped: the new table takes no writes but rowshift's, and the next
            // attempt installs the reverse capture again. Best effort.
            let _ = r.drop_triggers();
        }
        renamed?;
        // The triggers moved with the old table; no write reaches it by its new name.
        capture.drop_triggers()?;
        // A write that reached the old table between the unlock and the rename is in the
        // log after the drained position: said, never lost silently.
        drained()?;
        Ok(Swapped {
            window,
            ..Swapped::default()
        })
    }
}
