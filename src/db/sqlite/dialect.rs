//! SQLite's [`Dialect`]: what its bookkeeping SQL spells its own way.

use crate::Error;
use crate::sql::dialect::{Affected, Ddl, Dialect, Marks};

/// SQLite. Its tables live in the database file, so names are not qualified by a
/// schema.
#[derive(Debug, Clone, Copy, Default)]
pub struct SqliteDialect;

impl Dialect for SqliteDialect {
    type Db = sqlx::Sqlite;

    fn quote(&self, name: &str) -> String {
        crate::sql::quote_ident(name)
    }

    fn qualified(&self, _schema: &str, table: &str) -> String {
        self.quote(table)
    }

    fn marks(&self) -> Marks {
        Marks::Question
    }

    fn now_ms(&self) -> &'static str {
        "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)"
    }

    fn ddl(&self, ty: Ddl) -> &'static str {
        match ty {
            Ddl::KeyText | Ddl::Text | Ddl::ShortText => "TEXT",
            Ddl::BigInt => "INTEGER",
            Ddl::Double => "REAL",
            // The rowid: numbered in insertion order.
            Ddl::Serial => "INTEGER PRIMARY KEY",
            // No default that writes the time as the other databases do: the insert
            // binds it.
            Ddl::InsertedAt => "TEXT NOT NULL",
        }
    }

    fn binds_inserted_at(&self) -> bool {
        true
    }

    fn schema_word(&self) -> &'static str {
        "file"
    }

    fn create_schema(&self, _schema: &str) -> Option<String> {
        None
    }

    fn columns_sql(&self) -> &'static str {
        // The schema (the first parameter) is the file itself.
        "SELECT name FROM pragma_table_info(?2)"
    }

    fn error(&self, here: &str, e: sqlx::Error) -> Error {
        super::errors::error(here, e)
    }
}

impl Affected for sqlx::sqlite::SqliteQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}

/// SQLite's declared table DDL: an `INTEGER` primary key is the rowid, which numbers new
/// rows past the largest one by itself; checks and foreign keys go into `CREATE TABLE`.
impl crate::sink::ddl::TableDdl for SqliteDialect {
    fn identity_words(&self) -> &'static str {
        ""
    }

    fn text(&self, expr: &str) -> String {
        format!("CAST({expr} AS TEXT)")
    }

    fn alters_constraints(&self) -> bool {
        false
    }

    fn index_exists(&self, _schema: &str, table: &str, name: &str) -> crate::sql::dialect::Stmt {
        crate::sql::dialect::Stmt {
            sql: "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND name = ?".into(),
            binds: vec![table.into(), name.into()],
        }
    }

    fn constraint_state(
        &self,
        _schema: &str,
        _table: &str,
        _name: &str,
    ) -> crate::sql::dialect::Stmt {
        crate::sql::dialect::Stmt {
            sql: "SELECT 2".into(),
            binds: Vec::new(),
        }
    }

    fn restart_identity(&self, _table: &str, _column: &str, _next: &str) -> Option<String> {
        None
    }
}

/// SQLite's one lock: a statement that writes (DDL too) takes the database's write lock
/// (RESERVED, then EXCLUSIVE at the commit), so there is one writer at a time; in WAL
/// mode, readers go on meanwhile.
impl crate::sql::dialect::Locks for SqliteDialect {
    fn database(&self) -> &'static str {
        "SQLite"
    }

    fn lock(&self, op: &crate::sql::locks::Op) -> String {
        use crate::sql::locks::Op;
        match op {
            Op::Select { .. } => "none (a read: SHARED while it reads)".into(),
            Op::Session => "none (a setting of the connection)".into(),
            _ => {
                "the database write lock: other writers wait until the commit; readers go on (WAL)"
                    .into()
            }
        }
    }

    fn run_lock(&self, _schema: &str, pipeline: &str) -> String {
        format!(
            "INSERT INTO \"_rowshift_locks\" (token, host, pid, started, since, heartbeat, pipeline) VALUES (?, ?, ?, ?, ?, ?, {}) ON CONFLICT (pipeline) DO NOTHING",
            crate::error::diag::quote_value(pipeline)
        )
    }

    fn load(&self, schema: &str, table: &str, columns: &[String]) -> String {
        let table = self.qualified(schema, table);
        let cols: Vec<String> = columns.iter().map(|c| self.quote(c)).collect();
        let marks = vec!["?"; cols.len()].join(", ");
        format!("INSERT INTO {table} ({}) VALUES ({marks})", cols.join(", "))
    }
}
