//! The PostgreSQL checkpoint store: `_rowshift_runs` and `_rowshift_chunks` in the target's
//! schema, so a chunk's rows and its done mark commit in one transaction.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{Connection, Row};

use crate::checkpoint::lock::{self, Holder, Me, RunLock, Try};
use crate::checkpoint::sql::{self, Bind, Marks};
use crate::checkpoint::{Checkpoint, CheckpointStore, ChunkRecord, ChunkState, DoneMark};
use crate::chunk::Chunk;
use crate::chunk::ChunkCounts;
use crate::db::postgres::errors::error as db_error;
use crate::db::postgres::{PgClient, qualified};
use crate::sql::stmt;
use crate::{Error, Result};

/// A checkpoint store in a PostgreSQL schema (the target's).
pub struct PgStore {
    client: Arc<PgClient>,
    schema: String,
    pipeline: String,
    ready: OnceLock<()>,
}

impl PgStore {
    /// A store for `pipeline` in `schema`. Touches nothing until written.
    pub fn new(client: Arc<PgClient>, schema: &str, pipeline: &str) -> Self {
        PgStore {
            client,
            schema: schema.to_string(),
            pipeline: pipeline.to_string(),
            ready: OnceLock::new(),
        }
    }

    fn here(&self) -> String {
        format!("checkpoint {} schema {}", self.client.shown, self.schema)
    }

    fn runs(&self) -> String {
        qualified(&self.schema, "_rowshift_runs")
    }

    fn chunks(&self) -> String {
        chunks_table(&self.schema)
    }

    /// The pool, with the store's tables created.
    fn pool(&self) -> Result<&PgPool> {
        let pool = self.client.pool()?;
        if self.ready.get().is_some() {
            return Ok(pool);
        }
        let here = self.here();
        let s = crate::sql::quote_ident(&self.schema);
        let ddl = [
            format!("CREATE SCHEMA IF NOT EXISTS {s}"),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    pipeline text PRIMARY KEY,
                    fingerprint text NOT NULL,
                    settings text NOT NULL,
                    created_at text NOT NULL)",
                self.runs()
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    pipeline text NOT NULL,
                    id bigint NOT NULL,
                    chunk text NOT NULL,
                    state text NOT NULL,
                    attempts bigint NOT NULL DEFAULT 0,
                    rows_read bigint NOT NULL DEFAULT 0,
                    rows_written bigint NOT NULL DEFAULT 0,
                    rows_filtered bigint NOT NULL DEFAULT 0,
                    rows_rejected bigint NOT NULL DEFAULT 0,
                    seconds double precision NOT NULL DEFAULT 0,
                    checksum text,
                    last_error text,
                    claim text,
                    PRIMARY KEY (pipeline, id))",
                self.chunks()
            ),
            // A store written before claims were fenced.
            format!(
                "ALTER TABLE {} ADD COLUMN IF NOT EXISTS claim text",
                self.chunks()
            ),
        ];
        // `IF NOT EXISTS` does not keep two sessions from creating the same schema or
        // table at once: the loser fails on a catalog index. The runs of one pipeline
        // hold its run lock, and those of others take this lock for the schema's
        // rowshift tables; a sink creating the same schema at that moment can still
        // win the race, and a second try then finds it.
        let ddl_key = lock::lock_key(&self.schema, "\0checkpoint tables");
        self.client.io().block_on(async {
            let mut tries = 0;
            loop {
                tries += 1;
                let created = async {
                    let mut tx = pool.begin().await?;
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(ddl_key)
                        .execute(&mut *tx)
                        .await?;
                    for sql in &ddl {
                        sqlx::query(stmt(sql.clone())).execute(&mut *tx).await?;
                    }
                    tx.commit().await
                }
                .await;
                match created {
                    Ok(()) => return Ok(()),
                    Err(sqlx::Error::Database(e))
                        if tries < 3
                            && matches!(e.code().as_deref(), Some("23505" | "42P06" | "42P07")) => {
                    }
                    // Still racing after three tries: say so, with the server's error.
                    Err(e) if tries > 1 => {
                        return Err(db_error(
                            format!(
                                "{here} (tried {tries} times while other sessions created the same schema or tables)"
                            ),
                            e,
                        ));
                    }
                    Err(e) => return Err(db_error(&here, e)),
                }
            }
        })?;
        let _ = self.ready.set(());
        Ok(pool)
    }

    /// Runs `sql` with `binds` in order.
    fn exec(&self, sql: String, binds: &[Bind<'_>]) -> Result<u64> {
        let pool = self.pool()?;
        let here = self.here();
        self.client.io().block_on(async {
            let mut q = sqlx::query(stmt(sql));
            for b in binds {
                q = match b {
                    Bind::Int(i) => q.bind(*i),
                    Bind::Text(t) => q.bind(t.to_string()),
                };
            }
            q.execute(pool)
                .await
                .map(|r| r.rows_affected())
                .map_err(|e| db_error(&here, e))
        })
    }

    /// The pipeline, as its statements bind it.
    fn p(&self) -> Bind<'_> {
        Bind::Text(&self.pipeline)
    }
}

/// What the lock connection's `application_name` says: `rowshift SINCE PID@HOST`, cut to
/// PostgreSQL's 63 bytes (the host's end goes first).
fn application_name(me: &Me, since: &str) -> String {
    let mut name = format!("rowshift {since} {}@{}", me.pid, me.host);
    while name.len() > 63 {
        name.pop();
    }
    name
}

/// The session holding advisory lock `key`, from its `application_name` when it is a
/// rowshift run's, else by its backend pid and start.
async fn pg_holder(pool: &PgPool, key: i64) -> sqlx::Result<Option<Holder>> {
    let bits = key as u64;
    let row = sqlx::query(
        "SELECT a.application_name, \
                to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                a.pid, coalesce(host(a.client_addr), 'a local socket') \
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND l.classid::bigint = $1 AND l.objid::bigint = $2",
    )
    .bind((bits >> 32) as i64)
    .bind((bits & 0xffff_ffff) as i64)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| {
        let app: Option<String> = r.get(0);
        let parts: Vec<&str> = app.as_deref().unwrap_or("").splitn(3, ' ').collect();
        match parts.as_slice() {
            ["rowshift", since, who] if who.contains('@') => {
                let (pid, host) = who.split_once('@').unwrap_or((who, ""));
                Holder {
                    host: host.to_string(),
                    pid: pid.parse().ok(),
                    since: since.to_string(),
                }
            }
            _ => Holder {
                host: format!(
                    "PostgreSQL backend {} (from {})",
                    r.get::<i32, _>(2),
                    r.get::<String, _>(3)
                ),
                pid: None,
                since: r.get::<Option<String>, _>(1).unwrap_or_default(),
            },
        }
    }))
}

fn chunks_table(schema: &str) -> String {
    qualified(schema, "_rowshift_chunks")
}

/// Marks a chunk done on `conn` (`here` names the target in messages), inside the
/// sink's transaction, so rows and mark commit together. Fails, so that the caller rolls
/// the rows back, when the chunk no longer runs under the mark's claim.
pub async fn mark_done(
    conn: &mut PgConnection,
    here: &str,
    schema: &str,
    pipeline: &str,
    mark: &DoneMark,
) -> Result<()> {
    let c = &mark.counts;
    let n = sqlx::query(stmt(sql::done(&chunks_table(schema), Marks::Numbered)))
        .bind(c.read as i64)
        .bind(c.written as i64)
        .bind(c.filtered as i64)
        .bind(c.rejected as i64)
        .bind(mark.seconds)
        .bind(format!("{:016x}", mark.checksum))
        .bind(pipeline.to_string())
        .bind(mark.chunk as i64)
        .bind(sql::hex(mark.claim))
        .execute(conn)
        .await
        .map_err(|e| db_error(here, e))?
        .rows_affected();
    match n {
        1 => Ok(()),
        _ => Err(sql::claim_lost(mark.chunk)),
    }
}

impl CheckpointStore for PgStore {
    fn describe(&self) -> String {
        self.here()
    }

    fn load(&self) -> Result<Option<Checkpoint>> {
        let pool = self.client.pool()?;
        let here = self.here();
        self.client.io().block_on(async {
            let db = |e| db_error(&here, e);
            let has: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
                .bind(self.chunks())
                .fetch_one(pool)
                .await
                .map_err(db)?;
            if has.is_none() {
                return Ok(None);
            }
            let Some(run) = sqlx::query(stmt(format!(
                "SELECT fingerprint, settings, created_at FROM {} WHERE pipeline = $1",
                self.runs()
            )))
            .bind(self.pipeline.clone())
            .fetch_optional(pool)
            .await
            .map_err(db)?
            else {
                return Ok(None);
            };
            let settings: String = run.get(1);
            let rows = sqlx::query(stmt(format!(
                "SELECT chunk, state, attempts, rows_read, rows_written, rows_filtered, rows_rejected, seconds, last_error, checksum \
                 FROM {} WHERE pipeline = $1 ORDER BY id",
                self.chunks()
            )))
            .bind(self.pipeline.clone())
            .fetch_all(pool)
            .await
            .map_err(db)?;
            let corrupt = |what: &str| {
                Error::data(
                    &here,
                    format!("the checkpoint is unreadable ({what}); run with --restart"),
                )
            };
            let mut chunks = Vec::with_capacity(rows.len());
            for r in rows {
                let chunk: Chunk = serde_json::from_str(r.get::<&str, _>(0))
                    .map_err(|_| corrupt("chunk range"))?;
                let state = ChunkState::parse(r.get::<&str, _>(1))
                    .ok_or_else(|| corrupt("chunk state"))?;
                let n = |i: usize| r.get::<i64, _>(i) as u64;
                chunks.push(ChunkRecord {
                    chunk,
                    state,
                    attempts: r.get::<i64, _>(2) as u32,
                    counts: ChunkCounts {
                        read: n(3),
                        written: n(4),
                        filtered: n(5),
                        rejected: n(6),
                    },
                    seconds: r.get(7),
                    last_error: r.get(8),
                    checksum: r
                        .get::<Option<&str>, _>(9)
                        .and_then(|h| u64::from_str_radix(h, 16).ok())
                        .unwrap_or(0),
                });
            }
            Ok(Some(Checkpoint {
                fingerprint: run.get(0),
                settings: serde_json::from_str(&settings).map_err(|_| corrupt("settings"))?,
                created_at: run.get(2),
                chunks,
            }))
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
        let settings =
            serde_json::to_string(settings).map_err(|e| Error::Internal(e.to_string()))?;
        let now = chrono::Utc::now().to_rfc3339();
        self.client.io().block_on(async {
            let db = |e| db_error(&here, e);
            let mut tx = pool.begin().await.map_err(db)?;
            let p = self.pipeline.clone();
            for t in [self.chunks(), self.runs()] {
                sqlx::query(stmt(format!("DELETE FROM {t} WHERE pipeline = $1")))
                    .bind(p.clone())
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
            sqlx::query(stmt(format!(
                "INSERT INTO {} (pipeline, fingerprint, settings, created_at) VALUES ($1, $2, $3, $4)",
                self.runs()
            )))
            .bind(p.clone())
            .bind(fingerprint.to_string())
            .bind(settings)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            let ids: Vec<i64> = chunks.iter().map(|c| c.id as i64).collect();
            let json = chunks
                .iter()
                .map(serde_json::to_string)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::Internal(e.to_string()))?;
            sqlx::query(stmt(format!(
                "INSERT INTO {} (pipeline, id, chunk, state) SELECT $1, id, chunk, 'pending' FROM unnest($2::bigint[], $3::text[]) AS u(id, chunk)",
                self.chunks()
            )))
            .bind(p)
            .bind(ids)
            .bind(json)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)
        })
    }

    fn lock(&self, wait: Duration, waiting: &mut dyn FnMut(&Holder)) -> Result<RunLock> {
        let pool = self.client.pool()?.clone();
        let io = self.client.io().clone();
        let here = self.here();
        let db = |e| db_error(&here, e);
        let key = lock::lock_key(&self.schema, &self.pipeline);
        let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        // A connection of the run's own, out of the pool: the lock lives as long as its
        // session, which the server ends when the process dies.
        let mut conn = io
            .block_on(async {
                let mut conn = pool.acquire().await?.detach();
                sqlx::query("SELECT set_config('application_name', $1, false)")
                    .bind(application_name(&Me::now(), &since))
                    .execute(&mut conn)
                    .await?;
                Ok(conn)
            })
            .map_err(db)?;
        let what = format!("pipeline {} ({here})", self.pipeline);
        let taken = lock::acquire(&what, wait, waiting, || {
            io.block_on(async {
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(key)
                    .fetch_one(&mut conn)
                    .await?;
                if got {
                    return Ok(Try::Taken(()));
                }
                // Released between the two statements: the next try takes it.
                Ok(Try::Held(pg_holder(&pool, key).await?.unwrap_or(Holder {
                    host: "a session that just released it".into(),
                    pid: None,
                    since: since.clone(),
                })))
            })
            .map_err(db)
        });
        if let Err(e) = taken {
            let _ = io.block_on(conn.close());
            return Err(e);
        }
        let beat_io = io.clone();
        Ok(RunLock::kept(
            conn,
            move |conn| {
                beat_io.block_on(async {
                    sqlx::query_scalar::<_, i32>("SELECT 1")
                        .fetch_one(&mut *conn)
                        .await
                        .is_ok()
                })
            },
            move |mut conn| {
                io.block_on(async {
                    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                        .bind(key)
                        .execute(&mut conn)
                        .await;
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
            .block_on(pg_holder(
                pool,
                lock::lock_key(&self.schema, &self.pipeline),
            ))
            .map_err(|e| db_error(&here, e))
    }

    fn claim(&self, chunk: usize, token: u64) -> Result<bool> {
        let n = self.exec(
            sql::claim(&self.chunks(), Marks::Numbered),
            &[
                Bind::Text(&sql::hex(token)),
                self.p(),
                Bind::Int(chunk as i64),
            ],
        )?;
        Ok(n == 1)
    }

    fn finish(&self, mark: &DoneMark) -> Result<()> {
        let pool = self.pool()?;
        let here = self.here();
        self.client.io().block_on(async {
            let mut conn = pool.acquire().await.map_err(|e| db_error(&here, e))?;
            mark_done(&mut conn, &here, &self.schema, &self.pipeline, mark).await
        })
    }

    fn fail(&self, chunk: usize, token: u64, error: &str) -> Result<()> {
        // Nothing changes when the claim is gone: the run that took the chunk owns it.
        self.exec(
            sql::fail(&self.chunks(), Marks::Numbered),
            &[
                Bind::Text(error),
                self.p(),
                Bind::Int(chunk as i64),
                Bind::Text(&sql::hex(token)),
            ],
        )?;
        Ok(())
    }

    fn requeued(&self, chunk: usize, written: u64, filtered: u64, gone: u64) -> Result<()> {
        self.exec(
            sql::requeued(&self.chunks(), Marks::Numbered),
            &[
                Bind::Int(written as i64),
                Bind::Int(filtered as i64),
                Bind::Int((written + filtered + gone) as i64),
                self.p(),
                Bind::Int(chunk as i64),
            ],
        )?;
        Ok(())
    }

    fn record_settings(&self, fingerprint: &str, settings: &[(String, String)]) -> Result<()> {
        let json = sql::settings_json(settings)?;
        self.exec(
            sql::record_settings(&self.runs(), Marks::Numbered),
            &[Bind::Text(fingerprint), Bind::Text(&json), self.p()],
        )?;
        Ok(())
    }

    fn reset(&self, chunks: &[usize]) -> Result<()> {
        for &c in chunks {
            let n = self.exec(
                sql::reset(&self.chunks(), Marks::Numbered),
                &[self.p(), Bind::Int(c as i64)],
            )?;
            expect_one(n, c, &self.here())?;
        }
        Ok(())
    }

    fn redo(&self, chunks: &[usize]) -> Result<()> {
        for &c in chunks {
            self.exec(
                sql::redo(&self.chunks(), Marks::Numbered),
                &[self.p(), Bind::Int(c as i64)],
            )?;
        }
        Ok(())
    }

    fn discard(&self) -> Result<()> {
        if self.load()?.is_none() {
            return Ok(());
        }
        self.exec(
            format!("DELETE FROM {} WHERE pipeline = $1", self.chunks()),
            &[self.p()],
        )?;
        self.exec(
            format!("DELETE FROM {} WHERE pipeline = $1", self.runs()),
            &[self.p()],
        )?;
        Ok(())
    }
}

fn expect_one(n: u64, chunk: usize, here: &str) -> Result<()> {
    if n == 1 {
        Ok(())
    } else {
        Err(Error::Internal(format!(
            "{here}: chunk {chunk} is not in the checkpoint (or not in a state that allows this)"
        )))
    }
}
