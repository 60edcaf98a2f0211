//! The checkpoint store of a server target (PostgreSQL, MySQL/MariaDB): the
//! [`Tables`] in the target's schema, on the sink's pool, so that a chunk's rows and its
//! done mark commit in one transaction, and the run lock on a session of its own.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::Connection;

use super::lock::{self, Holder, RunLock, SessionLock, Try};
use super::tables::{Tables, statement_writes};
use super::{Checkpoint, CheckpointStore, DoneMark, WorkQueue, Worker, WorkerCounts, WorkerRecord};
use crate::Result;
use crate::chunk::Chunk;
use crate::sql::dialect::{Driver, Kind, Pooled, Stmt};

/// How many times creating the tables is tried while other sessions create the same
/// schema or tables (see [`crate::sql::dialect::Dialect::is_create_race`]).
const CREATE_TRIES: u32 = 3;

/// A checkpoint store in a server's schema (the target's).
pub struct SqlStore<D: SessionLock, C: Pooled<Db = D::Db>> {
    client: Arc<C>,
    tables: Tables<D>,
    ready: OnceLock<()>,
}

impl<D: SessionLock, C: Pooled<Db = D::Db>> SqlStore<D, C> {
    /// A store for `pipeline` in `schema`. Touches nothing until written.
    pub fn new(d: D, client: Arc<C>, schema: &str, pipeline: &str) -> Self {
        SqlStore {
            client,
            tables: Tables::new(d, schema, pipeline),
            ready: OnceLock::new(),
        }
    }

    fn d(&self) -> &D {
        self.tables.dialect()
    }

    fn here(&self) -> String {
        format!(
            "checkpoint {} {} {}",
            self.client.shown(),
            self.d().schema_word(),
            self.tables.schema()
        )
    }

    /// The pool, with the store's tables created.
    fn pool(&self) -> Result<&sqlx::Pool<D::Db>> {
        let pool = self.client.pool()?;
        if self.ready.get().is_some() {
            return Ok(pool);
        }
        let here = self.here();
        // `IF NOT EXISTS` does not keep two sessions from creating the same schema or
        // table at once on every server: the loser fails on a catalog index. The runs of
        // one pipeline hold its run lock, and those of others take the dialect's DDL
        // lock; a sink creating the same schema at that moment can still win the race,
        // and a second try then finds it.
        self.client.io().block_on(async {
            let mut tries = 0;
            loop {
                tries += 1;
                let created = async {
                    let mut tx = pool.begin().await?;
                    self.tables.create_tables(&mut *tx).await?;
                    tx.commit().await
                }
                .await;
                match created {
                    Ok(()) => return Ok(()),
                    Err(e) if tries < CREATE_TRIES && self.d().is_create_race(&e) => {}
                    // Still racing after three tries: say so, with the server's error.
                    Err(e) if tries > 1 => {
                        return Err(self.d().error(
                            &format!(
                                "{here} (tried {tries} times while other sessions created the same schema or tables)"
                            ),
                            e,
                        ));
                    }
                    Err(e) => return Err(self.d().error(&here, e)),
                }
            }
        })?;
        let _ = self.ready.set(());
        Ok(pool)
    }

    /// Runs `stmt` on the pool; the rows it changed.
    fn exec(&self, stmt: Stmt) -> Result<u64> {
        let pool = self.pool()?;
        let here = self.here();
        self.client.io().block_on(async {
            let mut conn = pool.acquire().await.map_err(|e| self.d().error(&here, e))?;
            D::Db::execute(&mut *conn, stmt)
                .await
                .map_err(|e| self.d().error(&here, e))
        })
    }
}

impl<D: SessionLock, C: Pooled<Db = D::Db>> CheckpointStore for SqlStore<D, C> {
    fn describe(&self) -> String {
        self.here()
    }

    fn load(&self) -> Result<Option<Checkpoint>> {
        let pool = self.client.pool()?;
        let here = self.here();
        self.client.io().block_on(async {
            let mut conn = pool.acquire().await.map_err(|e| self.d().error(&here, e))?;
            self.tables.load(&mut *conn, &here).await
        })
    }

    fn create(
        &self,
        fingerprint: &str,
        settings: &[(String, String)],
        chunks: &[Chunk],
    ) -> Result<()> {
        let pool = self.pool()?;
        let here = self.here();
        // Recording plans of other pipelines into the same tables at the same moment can
        // deadlock on MySQL (each transaction's delete takes gap locks the other's
        // insert wants); the server rolls one back, and it is tried again.
        let mut tries = 0;
        loop {
            tries += 1;
            let created = self.client.io().block_on(async {
                let mut conn = pool.acquire().await.map_err(|e| self.d().error(&here, e))?;
                self.tables
                    .create(&mut *conn, &here, fingerprint, settings, chunks)
                    .await
            });
            match created {
                Err(e) if e.is_transient() && tries < CREATE_TRIES * 2 => {
                    std::thread::sleep(Duration::from_millis(20 << tries));
                }
                other => return other,
            }
        }
    }

    fn lock(&self, wait: Duration, waiting: &mut dyn FnMut(&Holder)) -> Result<RunLock> {
        let pool = self.client.pool()?.clone();
        let io = self.client.io().clone();
        let here = self.here();
        let d = self.d().clone();
        let db = |e| d.error(&here, e);
        let (schema, pipeline) = (
            self.tables.schema().to_string(),
            self.tables.pipeline().to_string(),
        );
        let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        // A connection of the run's own, out of the pool: the lock lives as long as its
        // session, which the server ends when the process dies.
        let mut conn = io
            .block_on(async {
                let mut conn = pool.acquire().await?.detach();
                d.open(&mut conn, &since).await?;
                Ok(conn)
            })
            .map_err(db)?;
        let what = format!("pipeline {pipeline} ({here})");
        let taken = lock::acquire(&what, wait, waiting, || {
            io.block_on(async {
                if d.try_lock(&mut conn, &schema, &pipeline).await? {
                    return Ok(Try::Taken(()));
                }
                // Released between the two statements: the next try takes it.
                Ok(Try::Held(
                    d.holder(&pool, &schema, &pipeline)
                        .await?
                        .unwrap_or(Holder {
                            host: "a session that just released it".into(),
                            pid: None,
                            since: since.clone(),
                        }),
                ))
            })
            .map_err(db)
        });
        // Who holds it, for a run refused meanwhile. Written only now, under the lock:
        // nothing of a run creates anything before it holds the lock.
        let taken = taken.and_then(|()| {
            io.block_on(d.announce(&mut conn, &schema, &pipeline))
                .map_err(db)
        });
        if let Err(e) = taken {
            let _ = io.block_on(conn.close());
            return Err(e);
        }
        let (beat_io, beat_d, beat_schema, beat_pipeline) =
            (io.clone(), d.clone(), schema.clone(), pipeline.clone());
        Ok(RunLock::kept(
            conn,
            move |conn| beat_io.block_on(beat_d.still_held(conn, &beat_schema, &beat_pipeline)),
            move |mut conn| {
                io.block_on(async {
                    d.unlock(&mut conn, &schema, &pipeline).await;
                    let _ = conn.close().await;
                })
            },
        ))
    }

    fn holder(&self) -> Result<Option<Holder>> {
        let pool = self.client.pool()?;
        let here = self.here();
        self.client
            .io()
            .block_on(
                self.d()
                    .holder(pool, self.tables.schema(), self.tables.pipeline()),
            )
            .map_err(|e| self.d().error(&here, e))
    }

    fn claim(&self, chunk: usize, token: u64) -> Result<bool> {
        Ok(self.exec(self.tables.claim(chunk, token, super::unix_ms()))? == 1)
    }

    fn finish(&self, mark: &DoneMark) -> Result<()> {
        let pool = self.pool()?;
        let here = self.here();
        self.client.io().block_on(async {
            let mut conn = pool.acquire().await.map_err(|e| self.d().error(&here, e))?;
            self.tables.mark_done(&mut *conn, &here, mark).await
        })
    }

    statement_writes!();

    fn workers(&self) -> Result<Vec<WorkerRecord>> {
        let pool = self.client.pool()?;
        let here = self.here();
        self.client.io().block_on(async {
            let mut conn = pool.acquire().await.map_err(|e| self.d().error(&here, e))?;
            self.tables.load_workers(&mut *conn, &here).await
        })
    }

    fn queue(&self) -> Option<&dyn WorkQueue> {
        self.d().skip_locked().map(|_| self as &dyn WorkQueue)
    }

    fn discard(&self) -> Result<()> {
        if self.load()?.is_none() {
            return Ok(());
        }
        for forget in self.tables.discard() {
            self.exec(forget)?;
        }
        Ok(())
    }
}

impl<D: SessionLock, C: Pooled<Db = D::Db>> WorkQueue for SqlStore<D, C> {
    fn join(&self, me: &Worker) -> Result<()> {
        for stmt in self.tables.join(me) {
            self.exec(stmt)?;
        }
        Ok(())
    }

    fn claim_next(&self, me: &Worker, token: u64, lease: Duration) -> Result<Option<usize>> {
        let pool = self.pool()?;
        let here = self.here();
        self.client.io().block_on(async {
            let mut conn = pool.acquire().await.map_err(|e| self.d().error(&here, e))?;
            self.tables
                .claim_next(&mut *conn, me, token, lease.as_millis() as i64)
                .await
                .map_err(|e| self.d().error(&here, e))
        })
    }

    fn open_chunks(&self) -> Result<u64> {
        let pool = self.pool()?;
        let here = self.here();
        self.client.io().block_on(async {
            let mut conn = pool.acquire().await.map_err(|e| self.d().error(&here, e))?;
            let rows = D::Db::fetch(&mut *conn, self.tables.open_chunks(), &[Kind::Int])
                .await
                .map_err(|e| self.d().error(&here, e))?;
            Ok(rows
                .first()
                .and_then(|r| r.first())
                .map_or(0, |v| v.int() as u64))
        })
    }

    fn heartbeat(
        &self,
        me: &Worker,
        held: &[(usize, u64)],
        lease: Duration,
        done: &WorkerCounts,
    ) -> Result<Vec<usize>> {
        let mut lost = Vec::new();
        for &(chunk, token) in held {
            if self.exec(self.tables.extend(chunk, token, lease.as_millis() as i64))? == 0 {
                lost.push(chunk);
            }
        }
        self.exec(self.tables.beat(me, "running", done))?;
        Ok(lost)
    }

    fn leave(
        &self,
        me: &Worker,
        state: &str,
        held: &[(usize, u64)],
        done: &WorkerCounts,
    ) -> Result<()> {
        for &(chunk, token) in held {
            self.exec(self.tables.give_up(chunk, token))?;
        }
        self.exec(self.tables.beat(me, state, done)).map(drop)
    }

    fn reopen(&self) -> Result<u64> {
        self.exec(self.tables.reopen())
    }
}
