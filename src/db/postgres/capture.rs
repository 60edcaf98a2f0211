//! Change capture on a PostgreSQL table (docs/online.md): one `AFTER INSERT OR UPDATE
//! OR DELETE ... FOR EACH ROW` trigger whose function logs the changed row's key (the
//! old and the new key when an update changes it) into `rowshift.changes_<pipeline>`,
//! with the writing transaction's id, and an `AFTER TRUNCATE ... FOR EACH STATEMENT`
//! trigger that logs a `TRUNCATE` as a row with no key (`truncated`). The catch-up
//! replays nothing past such a row and the cut-over is refused: a `TRUNCATE` names no
//! keys, and emptying the target at its place in the log would be wrong whenever a
//! transaction with an older id wrote rows after it (they sort before it).
//!
//! A sequence hands out positions in the order rows are logged, not the order their
//! transactions commit: a change logged at 11 may become visible after one logged at
//! 12. The log is therefore read in (transaction id, position) order, and only the
//! changes of transactions older than every one still running
//! (`pg_snapshot_xmin(pg_current_snapshot())`): nothing can later appear before them.

use sqlx::Row;
use sqlx::postgres::PgPool;

use super::errors::error as db_error;
use super::{PgClient, qualified};
use crate::Result;
use crate::config::{DbOptions, OnlineConfig, SecretUrl};
use crate::runtime::IoRuntime;
use crate::source::capture::{Capture, Change, Lag, Position, trigger_name};
use crate::sql::{quote_ident, stmt};

/// The schema rowshift keeps its bookkeeping in (as the migration history does).
const SCHEMA: &str = "rowshift";

/// Change capture on one PostgreSQL table.
pub struct PgCapture {
    client: PgClient,
    schema: String,
    table: String,
    key: Vec<String>,
    log: String,
    function: String,
    trigger: String,
}

impl PgCapture {
    /// Capture on `schema.table` (key columns `key`) for `pipeline`. Connects on first use.
    pub fn new(
        url: &SecretUrl,
        db: &DbOptions,
        io: &IoRuntime,
        schema: &str,
        table: &str,
        key: &[String],
        pipeline: &str,
    ) -> Self {
        let plain = trigger_name(pipeline);
        // The `rowshift` schema is the database's: the names carry the source table's
        // so that one pipeline name on two tables never shares a log or a function.
        let suffix = format!(
            "{}_{:08x}",
            plain.trim_start_matches("_rowshift_capture_"),
            fnv(&format!("{schema}\0{table}")) as u32
        );
        PgCapture {
            client: PgClient::new(url, db, io),
            schema: schema.to_string(),
            table: table.to_string(),
            key: key.to_vec(),
            log: qualified(SCHEMA, &format!("changes_{suffix}")),
            function: qualified(SCHEMA, &format!("capture_{suffix}")),
            trigger: plain,
        }
    }

    fn here(&self) -> String {
        format!("{} table {}.{}", self.client.shown, self.schema, self.table)
    }

    fn source(&self) -> String {
        qualified(&self.schema, &self.table)
    }

    fn with<T>(&self, f: impl AsyncFnOnce(&PgPool) -> sqlx::Result<T>) -> Result<T> {
        let pool = self.client.pool()?;
        self.client
            .io()
            .block_on(f(pool))
            .map_err(|e| db_error(self.here(), e))
    }

    /// `k0, k1, ...`: the log's key columns.
    fn key_columns(&self) -> Vec<String> {
        (0..self.key.len()).map(|i| format!("k{i}")).collect()
    }

    /// The trigger function's statements that log `row`'s key (`OLD` or `NEW`).
    fn log_row(&self, row: &str) -> String {
        format!(
            "INSERT INTO {} ({}) VALUES ({});",
            self.log,
            self.key_columns().join(", "),
            self.key
                .iter()
                .map(|k| format!("{row}.{}", quote_ident(k)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// The statement-level trigger that logs a `TRUNCATE`.
    fn truncate_trigger(&self) -> String {
        format!("{}_truncate", self.trigger)
    }

    fn tuple(&self, row: &str) -> String {
        let parts: Vec<String> = self
            .key
            .iter()
            .map(|k| format!("{row}.{}", quote_ident(k)))
            .collect();
        format!("ROW({})", parts.join(", "))
    }

    /// What installing the capture on table `on` (qualified) runs: the change log and
    /// the trigger function, then each trigger's name and its `CREATE TRIGGER`.
    fn install_parts(&self, on: &str) -> (Vec<String>, Vec<(String, String)>) {
        let keys: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{} AS k{i}", quote_ident(k)))
            .collect();
        let statements = vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {} AS SELECT {} FROM {on} WITH NO DATA",
                self.log,
                keys.join(", "),
            ),
            format!(
                "ALTER TABLE {} ADD COLUMN IF NOT EXISTS pos bigserial, ADD COLUMN IF NOT EXISTS xid bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint), ADD COLUMN IF NOT EXISTS at timestamptz NOT NULL DEFAULT clock_timestamp(), ADD COLUMN IF NOT EXISTS truncated boolean NOT NULL DEFAULT false",
                self.log
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {} ON {} (xid, pos)",
                quote_ident(&format!("{}_order", self.trigger)),
                self.log
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {} ON {} (xid, pos) WHERE truncated",
                quote_ident(&format!("{}_truncated", self.trigger)),
                self.log
            ),
            // A fresh copy follows: it holds every change committed so far. Changes of
            // transactions still open are not visible here and stay.
            format!("DELETE FROM {}", self.log),
            format!(
                "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $rowshift$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    INSERT INTO {} (truncated) VALUES (true);
    RETURN NULL;
  END IF;
  IF TG_OP <> 'INSERT' THEN {} END IF;
  IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND {} IS DISTINCT FROM {}) THEN {} END IF;
  RETURN NULL;
END $rowshift$",
                self.function,
                self.log,
                self.log_row("OLD"),
                self.tuple("OLD"),
                self.tuple("NEW"),
                self.log_row("NEW"),
            ),
        ];
        let triggers = vec![
            (
                self.trigger.clone(),
                format!(
                    "CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {on} FOR EACH ROW EXECUTE FUNCTION {}()",
                    quote_ident(&self.trigger),
                    self.function
                ),
            ),
            (
                self.truncate_trigger(),
                format!(
                    "CREATE TRIGGER {} AFTER TRUNCATE ON {on} FOR EACH STATEMENT EXECUTE FUNCTION {}()",
                    quote_ident(&self.truncate_trigger()),
                    self.function
                ),
            ),
        ];
        (statements, triggers)
    }
}

impl Capture for PgCapture {
    fn describe(&self) -> String {
        format!("{} (change log {})", self.here(), self.log)
    }

    fn install(&self) -> Result<()> {
        let (statements, triggers) = self.install_parts(&self.source());
        let installed = self.installed()?;
        let (schema, table) = (self.schema.clone(), self.table.clone());
        let schema_sql = format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(SCHEMA));
        self.with(async |pool| {
            // Two sessions creating the schema at once: one of them fails on the
            // catalog's unique index (IF NOT EXISTS checks before it inserts); the
            // schema is there either way.
            if let Err(e) = sqlx::query(stmt(schema_sql)).execute(pool).await
                && !e
                    .as_database_error()
                    .and_then(|d| d.code())
                    .is_some_and(|c| c == "23505" || c == "42P06")
            {
                return Err(e);
            }
            let mut tx = pool.begin().await?;
            for s in statements {
                sqlx::query(stmt(s)).execute(&mut *tx).await?;
            }
            if !installed {
                // Two runs creating it at once: the lock on the table settles it.
                sqlx::query(stmt(format!(
                    "LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE",
                    qualified(&schema, &table)
                )))
                .execute(&mut *tx)
                .await?;
                for (name, create) in triggers {
                    let there: bool = sqlx::query_scalar(stmt(TRIGGER_EXISTS.to_string()))
                        .bind(&schema)
                        .bind(&table)
                        .bind(&name)
                        .fetch_one(&mut *tx)
                        .await?;
                    if !there {
                        sqlx::query(stmt(create)).execute(&mut *tx).await?;
                    }
                }
            }
            tx.commit().await
        })
    }

    fn installed(&self) -> Result<bool> {
        let (schema, table) = (self.schema.clone(), self.table.clone());
        let names = [self.trigger.clone(), self.truncate_trigger()];
        self.with(async |pool| {
            for name in names {
                let there: bool = sqlx::query_scalar(stmt(TRIGGER_EXISTS.to_string()))
                    .bind(&schema)
                    .bind(&table)
                    .bind(name)
                    .fetch_one(pool)
                    .await?;
                if !there {
                    return Ok(false);
                }
            }
            Ok(true)
        })
    }

    fn install_sql(&self, on: &str) -> Result<Vec<String>> {
        // In the swap's transaction, after the renames: `on` is this capture's table,
        // which holds the new table's rows, and the `rowshift` schema is there (the
        // forward capture lives in it).
        let (mut statements, triggers) = self.install_parts(&qualified(&self.schema, on));
        for (name, create) in triggers {
            statements.push(format!(
                "DROP TRIGGER IF EXISTS {} ON {}",
                quote_ident(&name),
                qualified(&self.schema, on)
            ));
            statements.push(create);
        }
        Ok(statements)
    }

    fn read(&self, after: Option<Position>, limit: usize) -> Result<Vec<Change>> {
        let after = after.unwrap_or(Position { a: -1, b: -1 });
        let keys: Vec<String> = self
            .key_columns()
            .iter()
            .map(|k| format!("{k}::text"))
            .collect();
        let sql = format!(
            "SELECT xid, pos, truncated, {} FROM {} WHERE xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint AND (xid, pos) > ($1, $2) ORDER BY xid, pos LIMIT $3",
            keys.join(", "),
            self.log
        );
        let n = self.key.len();
        self.with(async |pool| {
            let rows = sqlx::query(stmt(sql))
                .bind(after.a)
                .bind(after.b)
                .bind(limit as i64)
                .fetch_all(pool)
                .await?;
            // A TRUNCATE ends the read: `truncated` reports it.
            let upto = rows
                .iter()
                .position(|r| r.try_get::<bool, _>(2).unwrap_or(true))
                .unwrap_or(rows.len());
            rows[..upto]
                .iter()
                .map(|r| {
                    Ok(Change {
                        at: Position {
                            a: r.try_get(0)?,
                            b: r.try_get(1)?,
                        },
                        key: (0..n)
                            .map(|i| r.try_get::<String, _>(3 + i))
                            .collect::<sqlx::Result<_>>()?,
                    })
                })
                .collect()
        })
    }

    fn truncated(&self) -> Result<Option<String>> {
        let sql = format!(
            "SELECT xid, pos, to_char(at, 'YYYY-MM-DD HH24:MI:SS.MS TZ') FROM {} WHERE truncated ORDER BY xid, pos LIMIT 1",
            self.log
        );
        let found: Option<(i64, i64, String)> =
            self.with(async |pool| sqlx::query_as(stmt(sql)).fetch_optional(pool).await)?;
        Ok(found.map(|(a, b, at)| {
            format!(
                "the source table was truncated at {at} (change log position {})",
                Position { a, b }
            )
        }))
    }

    fn busy(&self, limits: &OnlineConfig) -> Result<Option<String>> {
        let (backends, lag_ms) = (limits.max_active_backends, limits.max_replica_lag_ms);
        if backends == 0 && lag_ms == 0 {
            return Ok(None);
        }
        self.with(async |pool| {
            if backends > 0 {
                // Client backends running a statement, on the whole server, this
                // check's own left out.
                let active: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
                )
                .fetch_one(pool)
                .await?;
                if active as u64 > backends {
                    return Ok(Some(format!(
                        "{active} active backends on the server, over [online] max_active_backends = {backends}"
                    )));
                }
            }
            if lag_ms > 0 {
                // replay_lag is NULL for a replica with nothing to replay, and for a
                // role that may not read it (pg_read_all_stats).
                let worst: Option<(String, f64)> = sqlx::query_as(
                    "SELECT COALESCE(NULLIF(application_name, ''), client_addr::text, pid::text), EXTRACT(EPOCH FROM replay_lag)::float8 * 1000 FROM pg_stat_replication WHERE replay_lag IS NOT NULL ORDER BY replay_lag DESC LIMIT 1",
                )
                .fetch_optional(pool)
                .await?;
                if let Some((replica, ms)) = worst
                    && ms > lag_ms as f64
                {
                    return Ok(Some(format!(
                        "replica {replica} replays {ms:.0} ms behind, over [online] max_replica_lag_ms = {lag_ms}"
                    )));
                }
            }
            Ok(None)
        })
    }

    fn log_exists(&self) -> Result<bool> {
        // `log` is the quoted, qualified name, which `to_regclass` reads as SQL does.
        let log = self.log.clone();
        self.with(async |pool| {
            sqlx::query_scalar(stmt("SELECT to_regclass($1) IS NOT NULL".to_string()))
                .bind(log)
                .fetch_one(pool)
                .await
        })
    }

    fn lag(&self, after: Option<Position>) -> Result<Lag> {
        let after = after.unwrap_or(Position { a: -1, b: -1 });
        let sql = format!(
            "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - min(at))::float8, 0) FROM {} WHERE (xid, pos) > ($1, $2)",
            self.log
        );
        let last = format!(
            "SELECT xid, pos FROM {} ORDER BY xid DESC, pos DESC LIMIT 1",
            self.log
        );
        self.with(async |pool| {
            let (rows, oldest): (i64, f64) = sqlx::query_as(stmt(sql))
                .bind(after.a)
                .bind(after.b)
                .fetch_one(pool)
                .await?;
            let last: Option<(i64, i64)> = sqlx::query_as(stmt(last)).fetch_optional(pool).await?;
            Ok(Lag {
                rows: rows as u64,
                oldest_seconds: oldest,
                last: last.map(|(a, b)| Position { a, b }),
            })
        })
    }

    fn prune(&self, upto: Position) -> Result<()> {
        let sql = format!("DELETE FROM {} WHERE (xid, pos) <= ($1, $2)", self.log);
        self.with(async |pool| {
            sqlx::query(stmt(sql))
                .bind(upto.a)
                .bind(upto.b)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }

    fn drop_trigger_sql(&self) -> Vec<String> {
        [self.trigger.clone(), self.truncate_trigger()]
            .iter()
            .map(|t| {
                format!(
                    "DROP TRIGGER IF EXISTS {} ON {}",
                    quote_ident(t),
                    self.source()
                )
            })
            .collect()
    }

    fn drop_triggers(&self) -> Result<()> {
        let statements = self.drop_trigger_sql();
        self.with(async |pool| {
            for s in statements {
                sqlx::query(stmt(s)).execute(pool).await?;
            }
            Ok(())
        })
    }

    fn remove(&self) -> Result<()> {
        let mut statements = self.drop_trigger_sql();
        statements.push(format!("DROP TABLE IF EXISTS {}", self.log));
        statements.push(format!("DROP FUNCTION IF EXISTS {}()", self.function));
        self.with(async |pool| {
            for s in statements {
                sqlx::query(stmt(s)).execute(pool).await?;
            }
            Ok(())
        })
    }
}

/// FNV-1a: a hash that stays the same across releases, for names.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether the trigger `$3` is on table `$2` of schema `$1`.
const TRIGGER_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2 AND t.tgname = $3)";
