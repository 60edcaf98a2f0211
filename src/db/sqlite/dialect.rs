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
