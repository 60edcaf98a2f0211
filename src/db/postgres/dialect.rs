//! PostgreSQL's [`Dialect`]: what its bookkeeping SQL spells its own way.

use crate::Error;
use crate::db::postgres::PgClient;
use crate::runtime::IoRuntime;
use crate::sql::dialect::{Affected, Ddl, Dialect, Marks, Pooled};

/// PostgreSQL.
#[derive(Debug, Clone, Copy, Default)]
pub struct PgDialect;

impl Dialect for PgDialect {
    type Db = sqlx::Postgres;

    fn quote(&self, name: &str) -> String {
        crate::sql::quote_ident(name)
    }

    fn marks(&self) -> Marks {
        Marks::Numbered
    }

    fn ddl(&self, ty: Ddl) -> &'static str {
        match ty {
            Ddl::KeyText | Ddl::Text | Ddl::ShortText => "text",
            Ddl::BigInt => "bigint",
            Ddl::Double => "double precision",
            Ddl::Serial => "bigserial PRIMARY KEY",
            Ddl::InsertedAt => "timestamptz NOT NULL DEFAULT now()",
        }
    }

    fn schema_word(&self) -> &'static str {
        "schema"
    }

    fn create_schema(&self, schema: &str) -> Option<String> {
        Some(format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            self.quote(schema)
        ))
    }

    fn columns_sql(&self) -> &'static str {
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position"
    }

    fn error(&self, here: &str, e: sqlx::Error) -> Error {
        super::errors::error(here, e)
    }

    fn ddl_lock(&self, key: i64) -> Option<String> {
        Some(format!("SELECT pg_advisory_xact_lock({key})"))
    }

    fn is_create_race(&self, e: &sqlx::Error) -> bool {
        // A unique violation on a catalog index, or the schema or table created since.
        matches!(e, sqlx::Error::Database(e)
            if matches!(e.code().as_deref(), Some("23505" | "42P06" | "42P07")))
    }
}

impl Affected for sqlx::postgres::PgQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl Pooled for PgClient {
    type Db = sqlx::Postgres;

    fn pool(&self) -> crate::Result<&sqlx::PgPool> {
        PgClient::pool(self)
    }

    fn io(&self) -> &IoRuntime {
        PgClient::io(self)
    }

    fn shown(&self) -> &str {
        &self.shown
    }
}
