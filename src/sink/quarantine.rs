//! The quarantine table of a SQL target, `<table>_rejects`, written once for every SQL
//! database over its [`Dialect`]: creating it, inserting a chunk's rejected rows in
//! batches, replacing them, and reading them all back (`retry --rejects`).

use crate::check::quarantine::{QuarantineEntry, RowJson};
use crate::sql::dialect::{Conn, Ddl, Dialect, Driver, Kind, Pooled, Stmt, Value, run};
use crate::{Error, Result};

/// Rejected rows inserted per statement: seven or eight values each, far below every
/// database's limit on bound parameters, and few enough that long source rows stay
/// within a MySQL packet. One statement per row made a SQLite chunk with 15% rejects
/// several times slower than one without (each is a round trip to sqlx's worker).
const ROWS_PER_INSERT: usize = 500;

/// The columns a rejected row is stored in, after `chunk`, as they are read back.
const COLUMNS: &str = "row_key, location, column_name, value, reason, source_row";

/// The quarantine table of one target table.
#[derive(Debug, Clone)]
pub struct Quarantine<D: Dialect> {
    d: D,
    schema: String,
    name: String,
}

impl<D: Dialect> Quarantine<D> {
    /// The quarantine of `table` in `schema` (ignored by SQLite).
    pub fn new(d: D, schema: &str, table: &str) -> Self {
        Quarantine {
            d,
            schema: schema.to_string(),
            name: format!("{table}_rejects"),
        }
    }

    /// The table's name, unqualified and unquoted.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table's name, qualified and quoted.
    pub fn table(&self) -> String {
        self.d.qualified(&self.schema, &self.name)
    }

    /// The statement that creates the table if it is missing.
    pub fn create_sql(&self) -> String {
        let t = |ty| self.d.ddl(ty);
        let mut defs = vec![
            format!("id {}", t(Ddl::Serial)),
            format!("chunk {} NOT NULL", t(Ddl::BigInt)),
            format!("row_key {}", t(Ddl::Text)),
            format!("location {} NOT NULL", t(Ddl::Text)),
            format!("column_name {}", t(Ddl::Text)),
            format!("value {}", t(Ddl::Text)),
            format!("reason {} NOT NULL", t(Ddl::Text)),
            format!("source_row {} NOT NULL", t(Ddl::Text)),
            format!("rejected_at {}", t(Ddl::InsertedAt)),
        ];
        defs.extend(self.d.index("chunk"));
        format!(
            "CREATE TABLE IF NOT EXISTS {} (\n  {}\n){}",
            self.table(),
            defs.join(",\n  "),
            self.d.table_options()
        )
    }

    /// Inserts `chunk`'s rejected rows on `conn` (`here` names the target).
    pub async fn insert(
        &self,
        conn: &mut Conn<D>,
        here: &str,
        chunk: usize,
        entries: &[QuarantineEntry],
    ) -> Result<()> {
        let stamped = self.d.binds_inserted_at();
        let now = chrono::Utc::now().to_rfc3339();
        let (columns, marks) = match stamped {
            true => (", rejected_at", "(?, ?, ?, ?, ?, ?, ?, ?)"),
            false => ("", "(?, ?, ?, ?, ?, ?, ?)"),
        };
        for group in entries.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "INSERT INTO {} (chunk, {COLUMNS}{columns}) VALUES {}",
                self.table(),
                vec![marks; group.len()].join(", ")
            );
            let mut binds = Vec::with_capacity(group.len() * 8);
            for e in group {
                binds.extend([
                    Value::Int(chunk as i64),
                    e.key.clone().into(),
                    Value::Text(e.location.clone()),
                    e.column.clone().into(),
                    e.value.clone().into(),
                    Value::Text(e.reason.clone()),
                    Value::Text(e.row.to_string()),
                ]);
                if stamped {
                    binds.push(Value::Text(now.clone()));
                }
            }
            run(&self.d, conn, here, &sql, binds).await?;
        }
        Ok(())
    }

    /// Deletes `chunk`'s rejected rows on `conn`.
    pub async fn delete(&self, conn: &mut Conn<D>, here: &str, chunk: usize) -> Result<()> {
        let sql = format!("DELETE FROM {} WHERE chunk = ?", self.table());
        run(&self.d, conn, here, &sql, vec![Value::Int(chunk as i64)]).await?;
        Ok(())
    }

    /// Deletes the rejected rows of these keys (`row_key`), in any chunk, on `conn`: an
    /// online move's replay of a key replaces what its earlier rows left here.
    pub async fn delete_keys(&self, conn: &mut Conn<D>, here: &str, keys: &[String]) -> Result<()> {
        for group in keys.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "DELETE FROM {} WHERE row_key IN ({})",
                self.table(),
                vec!["?"; group.len()].join(", ")
            );
            let binds = group.iter().map(|k| Value::Text(k.clone())).collect();
            run(&self.d, conn, here, &sql, binds).await?;
        }
        Ok(())
    }

    /// Replaces `chunk`'s rejected rows with `entries` on `conn`.
    pub async fn replace(
        &self,
        conn: &mut Conn<D>,
        here: &str,
        chunk: usize,
        entries: &[QuarantineEntry],
    ) -> Result<()> {
        self.delete(conn, here, chunk).await?;
        self.insert(conn, here, chunk, entries).await
    }

    /// Every rejected row, in the order they were inserted; none when there is no table.
    pub async fn read(&self, conn: &mut Conn<D>, here: &str) -> Result<Vec<QuarantineEntry>> {
        let db = |e| self.d.error(here, e);
        let listed = Stmt {
            sql: self.d.params(self.d.columns_sql()),
            binds: vec![self.schema.as_str().into(), self.name.as_str().into()],
        };
        if D::Db::fetch(conn, listed, &[Kind::Text])
            .await
            .map_err(db)?
            .is_empty()
        {
            return Ok(Vec::new());
        }
        let all = Stmt {
            sql: format!("SELECT chunk, {COLUMNS} FROM {} ORDER BY id", self.table()),
            binds: Vec::new(),
        };
        let kinds = [
            Kind::Int,
            Kind::Text,
            Kind::Text,
            Kind::Text,
            Kind::Text,
            Kind::Text,
            Kind::Text,
        ];
        let rows = D::Db::fetch(conn, all, &kinds).await.map_err(db)?;
        rows.into_iter()
            .map(|r| {
                let mut r = r.into_iter();
                let chunk = r.next().map_or(0, |v| v.int()) as usize;
                let mut text = || r.next().and_then(Value::text);
                Ok(QuarantineEntry {
                    chunk,
                    key: text(),
                    location: text().unwrap_or_default(),
                    column: text(),
                    value: text(),
                    reason: text().unwrap_or_default(),
                    row: RowJson::parse(&text().unwrap_or_default())
                        .map_err(|e| Error::data(here, format!("a stored row: {e}")))?,
                })
            })
            .collect()
    }

    /// [`Quarantine::read`] on a connection of `client`'s pool.
    pub fn read_on<C: Pooled<Db = D::Db>>(
        &self,
        client: &C,
        here: &str,
    ) -> Result<Vec<QuarantineEntry>> {
        let pool = client.pool()?;
        client.io().block_on(async {
            let mut conn = pool.acquire().await.map_err(|e| self.d.error(here, e))?;
            self.read(&mut *conn, here).await
        })
    }
}
