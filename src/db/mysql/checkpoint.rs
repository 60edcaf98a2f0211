//! The MySQL/MariaDB checkpoint store: `_rowshift_runs` and `_rowshift_chunks` in the
//! target's database, so a chunk's rows and its done mark commit in one transaction.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::mysql::{MySqlConnection, MySqlPool};
use sqlx::{Connection, Row};

use crate::checkpoint::lock::{self, Holder, Me, RunLock, Try};
use crate::checkpoint::sql::{self, Bind, Marks};
use crate::checkpoint::{Checkpoint, CheckpointStore, ChunkRecord, ChunkState, DoneMark};
use crate::chunk::Chunk;
use crate::chunk::ChunkCounts;
use crate::db::mysql::errors::error as db_error;
use crate::db::mysql::{MyClient, qualified, table_columns};
use crate::sql::stmt;
use crate::{Error, Result};

/// A checkpoint store in a MySQL database (the target's).
pub struct MyStore {
    client: Arc<MyClient>,
    schema: String,
    pipeline: String,
    ready: OnceLock<()>,
}

impl MyStore {
    /// A store for `pipeline` in `schema`. Touches nothing until written.
    pub fn new(client: Arc<MyClient>, schema: &str, pipeline: &str) -> Self {
        MyStore {
            client,
            schema: schema.to_string(),
            pipeline: pipeline.to_string(),
            ready: OnceLock::new(),
        }
    }

    fn here(&self) -> String {
        format!("checkpoint {} database {}", self.client.shown, self.schema)
    }

    fn runs(&self) -> String {
        qualified(&self.schema, "_rowshift_runs")
    }

    fn chunks(&self) -> String {
        chunks_table(&self.schema)
    }

    /// The pool, with the store's tables created.
    fn pool(&self) -> Result<&MySqlPool> {
        let pool = self.client.pool()?;
        if self.ready.get().is_some() {
            return Ok(pool);
        }
        let here = self.here();
        let s = crate::db::mysql::quote(&self.schema);
        let ddl = [
            format!("CREATE DATABASE IF NOT EXISTS {s} DEFAULT CHARACTER SET utf8mb4"),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    pipeline VARCHAR(255) PRIMARY KEY,
                    fingerprint LONGTEXT NOT NULL,
                    settings LONGTEXT NOT NULL,
                    created_at VARCHAR(64) NOT NULL
                ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
                self.runs()
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    pipeline VARCHAR(255) NOT NULL,
                    id BIGINT NOT NULL,
                    chunk LONGTEXT NOT NULL,
                    state VARCHAR(16) NOT NULL,
                    attempts BIGINT NOT NULL DEFAULT 0,
                    rows_read BIGINT NOT NULL DEFAULT 0,
                    rows_written BIGINT NOT NULL DEFAULT 0,
                    rows_filtered BIGINT NOT NULL DEFAULT 0,
                    rows_rejected BIGINT NOT NULL DEFAULT 0,
                    seconds DOUBLE NOT NULL DEFAULT 0,
                    checksum VARCHAR(16),
                    last_error LONGTEXT,
                    claim VARCHAR(16),
                    PRIMARY KEY (pipeline, id)
                ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
                self.chunks()
            ),
        ];
        self.client.io().block_on(async {
            for sql in ddl {
                sqlx::raw_sql(stmt(sql))
                    .execute(pool)
                    .await
                    .map_err(|e| db_error(&here, e))?;
            }
            // A store written before claims were fenced.
            let columns = table_columns(pool, &self.schema, "_rowshift_chunks", &here).await?;
            if columns.is_some_and(|c| !c.iter().any(|c| c.name == "claim")) {
                sqlx::raw_sql(stmt(format!(
                    "ALTER TABLE {} ADD COLUMN claim VARCHAR(16)",
                    self.chunks()
                )))
                .execute(pool)
                .await
                .map_err(|e| db_error(&here, e))?;
            }
            Ok::<_, Error>(())
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

    /// The named lock of the pipeline (MySQL allows 64 characters).
    fn lock_name(&self) -> String {
        format!(
            "rowshift:{:016x}",
            lock::lock_key(&self.schema, &self.pipeline) as u64
        )
    }

    /// The table where the lock's holder says who it is: MySQL's named locks tell only
    /// the holding connection's id.
    fn holders(&self) -> String {
        qualified(&self.schema, "_rowshift_locks")
    }
}

/// The live holder of named lock `name`, named by the row it wrote in `holders`, or by
/// its connection when it has not written one yet.
async fn my_holder(
    pool: &MySqlPool,
    name: &str,
    holders: &str,
    pipeline: &str,
) -> sqlx::Result<Option<Holder>> {
    let id: Option<i64> = sqlx::query_scalar("SELECT CAST(IS_USED_LOCK(?) AS SIGNED)")
        .bind(name.to_string())
        .fetch_one(pool)
        .await?;
    let Some(id) = id else {
        return Ok(None);
    };
    // The holder writes its row just after taking the lock: give it a moment.
    let mut row = Ok(None);
    for _ in 0..40 {
        row = sqlx::query(stmt(format!(
            "SELECT CAST(host AS CHAR), CAST(pid AS SIGNED), CAST(since AS CHAR) FROM {holders} WHERE pipeline = ? AND connection = ?"
        )))
        .bind(pipeline.to_string())
        .bind(id)
        .fetch_optional(pool)
        .await;
        if matches!(row, Ok(Some(_))) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(Some(match row {
        Ok(Some(r)) => Holder {
            host: r.get(0),
            pid: r.get::<Option<i64>, _>(1).map(|p| p as u32),
            since: r.get(2),
        },
        // No such table or row yet: the holder took the lock a moment ago.
        _ => Holder {
            host: format!("MySQL connection {id}"),
            pid: None,
            since: "a moment ago (it has not said who it is yet)".into(),
        },
    }))
}

fn chunks_table(schema: &str) -> String {
    qualified(schema, "_rowshift_chunks")
}

/// Marks a chunk done on `conn` (`here` names the target in messages), inside the
/// sink's transaction, so rows and mark commit together. Fails, so that the caller rolls
/// the rows back, when the chunk no longer runs under the mark's claim.
pub async fn mark_done(
    conn: &mut MySqlConnection,
    here: &str,
    database: &str,
    pipeline: &str,
    mark: &DoneMark,
) -> Result<()> {
    let c = &mark.counts;
    let n = sqlx::query(stmt(sql::done(&chunks_table(database), Marks::Question)))
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

impl CheckpointStore for MyStore {
    fn describe(&self) -> String {
        self.here()
    }

    fn load(&self) -> Result<Option<Checkpoint>> {
        let pool = self.client.pool()?;
        let here = self.here();
        self.client.io().block_on(async {
            let db = |e| db_error(&here, e);
            let has = table_columns(pool, &self.schema, "_rowshift_chunks", &here).await?;
            if has.is_none() {
                return Ok(None);
            }
            let Some(run) = sqlx::query(stmt(format!(
                "SELECT fingerprint, settings, created_at FROM {} WHERE pipeline = ?",
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
                 FROM {} WHERE pipeline = ? ORDER BY id",
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
                sqlx::query(stmt(format!("DELETE FROM {t} WHERE pipeline = ?")))
                    .bind(p.clone())
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
            sqlx::query(stmt(format!(
                "INSERT INTO {} (pipeline, fingerprint, settings, created_at) VALUES (?, ?, ?, ?)",
                self.runs()
            )))
            .bind(p.clone())
            .bind(fingerprint.to_string())
            .bind(settings)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            let json = chunks
                .iter()
                .map(serde_json::to_string)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::Internal(e.to_string()))?;
            for group in chunks.iter().zip(&json).collect::<Vec<_>>().chunks(1000) {
                let mut sql = format!(
                    "INSERT INTO {} (pipeline, id, chunk, state) VALUES ",
                    self.chunks()
                );
                sql.push_str(&vec!["(?, ?, ?, 'pending')"; group.len()].join(", "));
                let mut q = sqlx::query(stmt(sql));
                for (c, j) in group {
                    q = q.bind(p.clone()).bind(c.id as i64).bind(j.as_str());
                }
                q.execute(&mut *tx).await.map_err(db)?;
            }
            tx.commit().await.map_err(db)
        })
    }

    fn lock(&self, wait: Duration, waiting: &mut dyn FnMut(&Holder)) -> Result<RunLock> {
        let pool = self.client.pool()?.clone();
        let io = self.client.io().clone();
        let here = self.here();
        let db = |e| db_error(&here, e);
        let name = self.lock_name();
        // A connection of the run's own, out of the pool: the lock lives as long as its
        // session, which the server ends when the process dies.
        let mut conn = io
            .block_on(async { Ok(pool.acquire().await?.detach()) })
            .map_err(db)?;
        let what = format!("pipeline {} ({here})", self.pipeline);
        let (holders, pipeline) = (self.holders(), self.pipeline.clone());
        let taken = lock::acquire(&what, wait, waiting, || {
            io.block_on(async {
                let got: Option<i64> = sqlx::query_scalar("SELECT CAST(GET_LOCK(?, 0) AS SIGNED)")
                    .bind(name.clone())
                    .fetch_one(&mut conn)
                    .await?;
                if got == Some(1) {
                    return Ok(Try::Taken(()));
                }
                Ok(Try::Held(
                    my_holder(&pool, &name, &holders, &pipeline)
                        .await?
                        .unwrap_or(Holder {
                            host: "a session that just released it".into(),
                            pid: None,
                            since: "now".into(),
                        }),
                ))
            })
            .map_err(db)
        });
        if let Err(e) = taken {
            let _ = io.block_on(conn.close());
            return Err(e);
        }
        // Who holds it, for a run refused meanwhile. Written only now, under the lock:
        // nothing of a run creates anything before it holds the lock.
        let me = Me::now();
        let said = io.block_on(async {
            let s = crate::db::mysql::quote(&self.schema);
            sqlx::raw_sql(stmt(format!(
                "CREATE DATABASE IF NOT EXISTS {s} DEFAULT CHARACTER SET utf8mb4"
            )))
            .execute(&mut conn)
            .await?;
            sqlx::raw_sql(stmt(format!(
                "CREATE TABLE IF NOT EXISTS {holders} (
                    pipeline VARCHAR(255) PRIMARY KEY,
                    connection BIGINT NOT NULL,
                    host VARCHAR(255) NOT NULL,
                    pid BIGINT,
                    since VARCHAR(64) NOT NULL
                ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
            )))
            .execute(&mut conn)
            .await?;
            sqlx::query(stmt(format!(
                "REPLACE INTO {holders} (pipeline, connection, host, pid, since) VALUES (?, CONNECTION_ID(), ?, ?, ?)"
            )))
            .bind(pipeline.clone())
            .bind(me.host.clone())
            .bind(me.pid as i64)
            .bind(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .execute(&mut conn)
            .await
        });
        if let Err(e) = said {
            let _ = io.block_on(conn.close());
            return Err(db(e));
        }
        let (beat_io, beat_name) = (io.clone(), name.clone());
        Ok(RunLock::kept(
            conn,
            move |conn| {
                beat_io.block_on(async {
                    sqlx::query_scalar::<_, Option<i64>>(
                        "SELECT CAST(IS_USED_LOCK(?) = CONNECTION_ID() AS SIGNED)",
                    )
                    .bind(beat_name.clone())
                    .fetch_one(&mut *conn)
                    .await
                    .is_ok_and(|held| held == Some(1))
                })
            },
            move |mut conn| {
                io.block_on(async {
                    let _ = sqlx::query(stmt(format!(
                        "DELETE FROM {holders} WHERE pipeline = ? AND connection = CONNECTION_ID()"
                    )))
                    .bind(pipeline)
                    .execute(&mut conn)
                    .await;
                    let _ = sqlx::query("SELECT RELEASE_LOCK(?)")
                        .bind(name)
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
            .block_on(my_holder(
                pool,
                &self.lock_name(),
                &self.holders(),
                &self.pipeline,
            ))
            .map_err(|e| db_error(&here, e))
    }

    fn claim(&self, chunk: usize, token: u64) -> Result<bool> {
        let n = self.exec(
            sql::claim(&self.chunks(), Marks::Question),
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
            sql::fail(&self.chunks(), Marks::Question),
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
            sql::requeued(&self.chunks(), Marks::Question),
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
            sql::record_settings(&self.runs(), Marks::Question),
            &[Bind::Text(fingerprint), Bind::Text(&json), self.p()],
        )?;
        Ok(())
    }

    fn reset(&self, chunks: &[usize]) -> Result<()> {
        for &c in chunks {
            let n = self.exec(
                sql::reset(&self.chunks(), Marks::Question),
                &[self.p(), Bind::Int(c as i64)],
            )?;
            expect_one(n, c, &self.here())?;
        }
        Ok(())
    }

    fn redo(&self, chunks: &[usize]) -> Result<()> {
        for &c in chunks {
            self.exec(
                sql::redo(&self.chunks(), Marks::Question),
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
            format!("DELETE FROM {} WHERE pipeline = ?", self.chunks()),
            &[self.p()],
        )?;
        self.exec(
            format!("DELETE FROM {} WHERE pipeline = ?", self.runs()),
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
