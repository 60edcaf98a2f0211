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

    fn restart_identity(&self, table: &str, _column: &str, next: i64) -> Option<String> {
        Some(format!("ALTER TABLE {table} AUTO_INCREMENT = {next}"))
    }
}
