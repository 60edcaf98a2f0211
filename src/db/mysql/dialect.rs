//! MySQL's and MariaDB's [`Dialect`]: what their bookkeeping SQL spells their own way.

use crate::Error;
use crate::db::mysql::MyClient;
use crate::runtime::IoRuntime;
use crate::sql::dialect::{Affected, Ddl, Dialect, Marks, Pooled};

/// MySQL and MariaDB.
#[derive(Debug, Clone, Copy, Default)]
pub struct MyDialect;

impl Dialect for MyDialect {
    type Db = sqlx::MySql;

    fn quote(&self, name: &str) -> String {
        super::quote(name)
    }

    fn marks(&self) -> Marks {
        Marks::Question
    }

    fn now_ms(&self) -> &'static str {
        "CAST(ROUND(UNIX_TIMESTAMP(CURRENT_TIMESTAMP(3)) * 1000) AS SIGNED)"
    }

    fn skip_locked(&self) -> Option<&'static str> {
        Some(" FOR UPDATE SKIP LOCKED")
    }

    fn ddl(&self, ty: Ddl) -> &'static str {
        match ty {
            // An index holds at most 3072 bytes: 255 characters of utf8mb4 fit.
            Ddl::KeyText => "VARCHAR(255)",
            Ddl::Text => "LONGTEXT",
            Ddl::ShortText => "VARCHAR(16)",
            Ddl::BigInt => "BIGINT",
            Ddl::Double => "DOUBLE",
            Ddl::Serial => "BIGINT AUTO_INCREMENT PRIMARY KEY",
            Ddl::InsertedAt => "DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)",
        }
    }

    fn table_options(&self) -> &'static str {
        // Binary collation: keys and texts compare byte for byte, as the other databases'.
        " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
    }

    fn schema_word(&self) -> &'static str {
        "database"
    }

    fn create_schema(&self, schema: &str) -> Option<String> {
        Some(format!(
            "CREATE DATABASE IF NOT EXISTS {} DEFAULT CHARACTER SET utf8mb4",
            self.quote(schema)
        ))
    }

    fn columns_sql(&self) -> &'static str {
        // The catalog's columns are `longtext` on some servers and `varchar` with a
        // binary collation on others; CAST makes them read the same everywhere.
        "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.columns \
         WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION"
    }

    fn index(&self, column: &str) -> Option<String> {
        Some(format!("KEY ({})", self.quote(column)))
    }

    fn error(&self, here: &str, e: sqlx::Error) -> Error {
        super::errors::error(here, e)
    }
}

impl Affected for sqlx::mysql::MySqlQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl Pooled for MyClient {
    type Db = sqlx::MySql;

    fn pool(&self) -> crate::Result<&sqlx::MySqlPool> {
        MyClient::pool(self)
    }

    fn io(&self) -> &IoRuntime {
        MyClient::io(self)
    }

    fn shown(&self) -> &str {
        &self.shown
    }
}

/// MySQL's and MariaDB's declared table DDL: `AUTO_INCREMENT`, and constraints added
/// with `ALTER TABLE` (each committed on its own; the catalog records it).
impl crate::sink::ddl::TableDdl for MyDialect {
    fn identity_words(&self) -> &'static str {
        "AUTO_INCREMENT"
    }

    fn text(&self, expr: &str) -> String {
        format!("CAST({expr} AS CHAR)")
    }

    fn index_exists(&self, schema: &str, table: &str, name: &str) -> crate::sql::dialect::Stmt {
        crate::sql::dialect::Stmt {
            sql: "SELECT CAST(count(*) AS SIGNED) FROM information_schema.statistics WHERE table_schema = ? AND table_name = ? AND index_name = ?".into(),
            binds: vec![schema.into(), table.into(), name.into()],
        }
    }

    fn constraint_state(&self, schema: &str, table: &str, name: &str) -> crate::sql::dialect::Stmt {
        crate::sql::dialect::Stmt {
            sql: "SELECT CAST(2 AS SIGNED) FROM information_schema.table_constraints WHERE constraint_schema = ? AND table_name = ? AND constraint_name = ?".into(),
            binds: vec![schema.into(), table.into(), name.into()],
        }
    }

    fn restart_identity(&self, table: &str, _column: &str, next: &str) -> Option<String> {
        Some(format!("ALTER TABLE {table} AUTO_INCREMENT = {next}"))
    }
}

/// MySQL's and MariaDB's locks, as their online DDL documentation gives them: every DDL
/// statement takes a metadata lock on its table (exclusive at least briefly, so it waits
/// for the transactions using the table) and commits on its own; InnoDB then does the
/// change INSTANT (metadata only), INPLACE (with LOCK=NONE, reads and writes go on) or
/// COPY (the table is copied; LOCK=SHARED lets reads go on).
impl crate::sql::dialect::Locks for MyDialect {
    fn database(&self) -> &'static str {
        "MySQL/MariaDB"
    }

    fn lock(&self, op: &crate::sql::locks::Op) -> String {
        use crate::sql::locks::{Alter, Op};
        const MDL: &str = "exclusive metadata lock";
        match op {
            Op::CreateTable { table, .. } => {
                format!("{MDL} on the new table {table}; commits on its own")
            }
            Op::CreateIndex { table, .. } => format!(
                "ALGORITHM=INPLACE, LOCK=NONE on {table}: reads and writes go on; {MDL} briefly at the start and the end; commits on its own"
            ),
            Op::CreateSchema | Op::CreateDatabase => {
                format!("{MDL} on the database's name; commits on its own")
            }
            Op::CreateOther(w) => {
                format!("{MDL} on the new object (CREATE {w}); commits on its own")
            }
            Op::DropTable { tables } => format!(
                "{MDL} on {}: waits for every transaction using it; commits on its own",
                tables.join(", ")
            ),
            Op::DropIndex { .. } => {
                "ALGORITHM=INPLACE, LOCK=NONE: metadata only; commits on its own".into()
            }
            Op::DropOther(w) => {
                format!("{MDL} on the object dropped (DROP {w}); commits on its own")
            }
            Op::AlterTable { table, ops } => {
                // The statement runs with the weakest algorithm and strongest lock any of
                // its changes needs.
                let (_, text) = ops
                    .iter()
                    .map(|a| match a {
                        Alter::AddColumn => (
                            1,
                            "ALGORITHM=INSTANT (MySQL 8.0.12+, MariaDB 10.3+; else INPLACE with a rebuild, LOCK=NONE): metadata only",
                        ),
                        Alter::Default | Alter::Rename => (1, "ALGORITHM=INSTANT: metadata only"),
                        Alter::AutoIncrement => (
                            2,
                            "ALGORITHM=INPLACE, LOCK=NONE: the counter only, no rebuild",
                        ),
                        Alter::DropConstraint => (
                            2,
                            "ALGORITHM=INPLACE, LOCK=NONE: metadata only",
                        ),
                        Alter::DropColumn => (
                            3,
                            "ALGORITHM=INSTANT (MySQL 8.0.29+, MariaDB 10.4+; else INPLACE with a rebuild, LOCK=NONE)",
                        ),
                        Alter::AddIndex { primary: false } => (
                            3,
                            "ALGORITHM=INPLACE, LOCK=NONE: reads and writes go on while the index is built",
                        ),
                        Alter::AddIndex { primary: true } | Alter::SetNotNull | Alter::DropNotNull => (
                            4,
                            "ALGORITHM=INPLACE, LOCK=NONE: the table is rebuilt; reads and writes go on",
                        ),
                        Alter::AddForeignKey { .. } => (
                            5,
                            "ALGORITHM=COPY, LOCK=SHARED (foreign_key_checks on): the table is copied; reads go on, writes wait",
                        ),
                        Alter::AddCheck { .. } => (
                            5,
                            "ALGORITHM=COPY, LOCK=SHARED: the table is copied to check every row; reads go on, writes wait",
                        ),
                        Alter::ColumnType => (
                            5,
                            "ALGORITHM=COPY, LOCK=SHARED: the table is copied; reads go on, writes wait",
                        ),
                        Alter::ValidateConstraint | Alter::Identity | Alter::Other => (
                            5,
                            "ALGORITHM=COPY, LOCK=SHARED at worst: reads go on, writes wait",
                        ),
                    })
                    .max_by_key(|(rank, _)| *rank)
                    .unwrap_or((5, "ALGORITHM=COPY, LOCK=SHARED at worst"));
                format!("{text}; {MDL} on {table} briefly; commits on its own")
            }
            Op::Insert(t) | Op::Update(t) | Op::Delete(t) | Op::Copy(t) => {
                format!("shared write metadata lock on {t}; InnoDB row locks on the rows written")
            }
            Op::Truncate(t) => {
                format!("{MDL} on {t} (dropped and created again); commits on its own")
            }
            Op::Select { calls } if calls.iter().any(|c| c == "get_lock") => {
                "named lock (GET_LOCK), held by the session; no table lock".into()
            }
            Op::Select { .. } => "shared read metadata lock on the tables read".into(),
            Op::Session => "none (a setting of the session)".into(),
            Op::Other(w) => format!("not known to rowshift ({w}): see the server's documentation"),
        }
    }

    fn run_lock(&self, schema: &str, pipeline: &str) -> String {
        format!(
            "SELECT GET_LOCK('{}', 0)",
            super::checkpoint::lock_name(schema, pipeline)
        )
    }

    fn load(&self, schema: &str, table: &str, columns: &[String]) -> String {
        let table = self.qualified(schema, table);
        let cols: Vec<String> = columns.iter().map(|c| self.quote(c)).collect();
        let marks = vec!["?"; cols.len()].join(", ");
        format!(
            "INSERT INTO {table} ({}) VALUES ({marks}), ...",
            cols.join(", ")
        )
    }
}
