//! The replay position of an online move (`_rowshift_replay`): the last change-log
//! position whose changes are in the target, written in the same transaction as the
//! replayed rows, so that a replay killed at any moment resumes after exactly what it
//! committed. Written once for every SQL database over its [`Dialect`].

use crate::Result;
use crate::source::capture::Position;
use crate::sql::dialect::{Conn, Ddl, Dialect, Driver, Kind, Pooled, Stmt, Value, run};

/// The replay position table of one schema.
#[derive(Debug, Clone)]
pub struct ReplayTable<D: Dialect> {
    d: D,
    schema: String,
}

impl<D: Dialect> ReplayTable<D> {
    /// The table in `schema` (a MySQL database; ignored by SQLite).
    pub fn new(d: D, schema: &str) -> Self {
        ReplayTable {
            d,
            schema: schema.to_string(),
        }
    }

    /// The table, qualified and quoted.
    pub fn table(&self) -> String {
        self.d.qualified(&self.schema, "_rowshift_replay")
    }

    /// Creates the table if it is missing.
    pub async fn create(&self, conn: &mut Conn<D>, here: &str) -> Result<()> {
        let t = |ty| self.d.ddl(ty);
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} (pipeline {} PRIMARY KEY, pos_a {int} NOT NULL, pos_b {int} NOT NULL, replayed {int} NOT NULL, updated_at {text} NOT NULL){}",
            self.table(),
            t(Ddl::KeyText),
            self.d.table_options(),
            int = t(Ddl::BigInt),
            text = t(Ddl::Text),
        );
        D::Db::execute_raw(conn, sql)
            .await
            .map_err(|e| self.d.error(here, e))
    }

    /// Records that `pipeline` replayed `rows` more changes, up to `at`.
    pub async fn record(
        &self,
        conn: &mut Conn<D>,
        here: &str,
        pipeline: &str,
        at: Position,
        rows: u64,
    ) -> Result<()> {
        let now = chrono::Utc::now().to_rfc3339();
        let done = run(
            &self.d,
            conn,
            here,
            &format!(
                "UPDATE {} SET pos_a = ?, pos_b = ?, replayed = replayed + ?, updated_at = ? WHERE pipeline = ?",
                self.table()
            ),
            vec![
                Value::Int(at.a),
                Value::Int(at.b),
                Value::Int(rows as i64),
                Value::Text(now.clone()),
                Value::Text(pipeline.to_string()),
            ],
        )
        .await?;
        if done == 0 {
            run(
                &self.d,
                conn,
                here,
                &format!(
                    "INSERT INTO {} (pipeline, pos_a, pos_b, replayed, updated_at) VALUES (?, ?, ?, ?, ?)",
                    self.table()
                ),
                vec![
                    Value::Text(pipeline.to_string()),
                    Value::Int(at.a),
                    Value::Int(at.b),
                    Value::Int(rows as i64),
                    Value::Text(now),
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// `pipeline`'s position and the changes it replayed so far; `None` when it has
    /// replayed nothing (or the table is missing).
    pub async fn load(
        &self,
        conn: &mut Conn<D>,
        here: &str,
        pipeline: &str,
    ) -> Result<Option<(Position, u64)>> {
        self.create(conn, here).await?;
        let rows = D::Db::fetch(
            conn,
            Stmt {
                sql: self.d.params(&format!(
                    "SELECT pos_a, pos_b, replayed FROM {} WHERE pipeline = ?",
                    self.table()
                )),
                binds: vec![Value::Text(pipeline.to_string())],
            },
            &[Kind::Int, Kind::Int, Kind::Int],
        )
        .await
        .map_err(|e| self.d.error(here, e))?;
        Ok(rows.first().map(|r| {
            (
                Position {
                    a: r[0].int(),
                    b: r[1].int(),
                },
                r[2].int() as u64,
            )
        }))
    }

    /// [`ReplayTable::load`] on a connection of `client`'s pool.
    pub fn load_on<C: Pooled<Db = D::Db>>(
        &self,
        client: &C,
        here: &str,
        pipeline: &str,
    ) -> Result<Option<(Position, u64)>> {
        let pool = client.pool()?;
        client.io().block_on(async {
            let mut conn = pool.acquire().await.map_err(|e| self.d.error(here, e))?;
            self.load(&mut conn, here, pipeline).await
        })
    }

    /// [`ReplayTable::rewind`] on a connection of `client`'s pool.
    pub fn rewind_on<C: Pooled<Db = D::Db>>(
        &self,
        client: &C,
        here: &str,
        pipeline: &str,
        to: Option<(Position, u64)>,
    ) -> Result<()> {
        let pool = client.pool()?;
        client.io().block_on(async {
            let mut conn = pool.acquire().await.map_err(|e| self.d.error(here, e))?;
            self.rewind(&mut conn, here, pipeline, to).await
        })
    }

    /// Sets `pipeline`'s position back to `to` (position and changes replayed), or
    /// forgets it when `None` (a fresh or restarted run replays the whole log).
    pub async fn rewind(
        &self,
        conn: &mut Conn<D>,
        here: &str,
        pipeline: &str,
        to: Option<(Position, u64)>,
    ) -> Result<()> {
        self.create(conn, here).await?;
        let (sql, binds) = match to {
            None => (
                format!("DELETE FROM {} WHERE pipeline = ?", self.table()),
                vec![Value::Text(pipeline.to_string())],
            ),
            Some((at, replayed)) => (
                format!(
                    "UPDATE {} SET pos_a = ?, pos_b = ?, replayed = ? WHERE pipeline = ?",
                    self.table()
                ),
                vec![
                    Value::Int(at.a),
                    Value::Int(at.b),
                    Value::Int(replayed as i64),
                    Value::Text(pipeline.to_string()),
                ],
            ),
        };
        run(&self.d, conn, here, &sql, binds).await?;
        Ok(())
    }
}
