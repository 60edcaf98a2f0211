//! Reading the catalog: a table's columns, its tables, its primary key and engine.

use sqlx::Row;
use sqlx::mysql::{MySqlConnection, MySqlPool};

use crate::Result;
use crate::db::mysql::errors::error as db_error;

/// A column as `information_schema.columns` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MyColumn {
    /// Name.
    pub name: String,
    /// `DATA_TYPE`, lower case: `int`, `varchar`, `decimal`.
    pub data_type: String,
    /// `COLUMN_TYPE`: `int(10) unsigned`, `decimal(12,2)`, `enum('a','B')` (lower case
    /// but for an enum's or a set's members).
    pub column_type: String,
    /// `NUMERIC_PRECISION`.
    pub precision: Option<u64>,
    /// `NUMERIC_SCALE`.
    pub scale: Option<u64>,
    /// `CHARACTER_SET_NAME` (`None` for non-text columns; `binary` never appears here).
    pub charset: Option<String>,
    /// Declared `NOT NULL`.
    pub not_null: bool,
    /// `DATETIME_PRECISION`: the digits of a second a `datetime`, `timestamp` or `time`
    /// keeps.
    pub fraction: Option<u64>,
}

/// The columns of `database.table` (a table or view), or `None` if there is none.
pub async fn table_columns(
    pool: &MySqlPool,
    database: &str,
    table: &str,
    shown: &str,
) -> Result<Option<Vec<MyColumn>>> {
    // The catalog's columns are `longtext` on some servers and `varchar` with a binary
    // collation on others; CAST makes them read the same everywhere.
    let rows = sqlx::query(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(LOWER(DATA_TYPE) AS CHAR), CAST(COLUMN_TYPE AS CHAR), \
                CAST(NUMERIC_PRECISION AS SIGNED), CAST(NUMERIC_SCALE AS SIGNED), \
                CAST(LOWER(CHARACTER_SET_NAME) AS CHAR), IS_NULLABLE = 'NO', \
                CAST(DATETIME_PRECISION AS SIGNED) \
         FROM information_schema.columns WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
    )
    .bind(database)
    .bind(table)
    .fetch_all(pool)
    .await
    .map_err(|e| db_error(shown, e))?;
    if rows.is_empty() {
        return Ok(None);
    }
    rows.iter()
        .map(|r| {
            Ok(MyColumn {
                name: r.try_get(0)?,
                data_type: r.try_get(1)?,
                column_type: r.try_get(2)?,
                precision: r.try_get::<Option<i64>, _>(3)?.map(|v| v as u64),
                scale: r.try_get::<Option<i64>, _>(4)?.map(|v| v as u64),
                charset: r.try_get(5)?,
                not_null: r.try_get::<i64, _>(6)? != 0,
                fraction: r.try_get::<Option<i64>, _>(7)?.map(|v| v as u64),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map(Some)
        .map_err(|e| db_error(shown, e))
}

/// Names of the tables and views in `database`, for "did you mean" messages.
pub async fn table_names(pool: &MySqlPool, database: &str, shown: &str) -> Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT CAST(TABLE_NAME AS CHAR) FROM information_schema.tables WHERE TABLE_SCHEMA = ? ORDER BY 1",
    )
    .bind(database)
    .fetch_all(pool)
    .await
    .map_err(|e| db_error(shown, e))
}

/// The primary key's columns in key order, or none.
pub async fn primary_key(
    pool: &sqlx::MySqlPool,
    database: &str,
    table: &str,
    shown: &str,
) -> Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.KEY_COLUMN_USAGE \
         WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
         ORDER BY ORDINAL_POSITION",
    )
    .bind(database)
    .bind(table)
    .fetch_all(pool)
    .await
    .map_err(|e| db_error(shown, e))
}

/// The engine of table `database.table` and whether it supports transactions, or
/// `None` when the table does not exist.
pub async fn table_engine(
    conn: &mut MySqlConnection,
    database: &str,
    table: &str,
    shown: &str,
) -> Result<Option<(String, bool)>> {
    let row: Option<(Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT CAST(t.ENGINE AS CHAR), CAST(e.TRANSACTIONS = 'YES' AS SIGNED) \
         FROM information_schema.TABLES t \
         LEFT JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE \
         WHERE t.TABLE_SCHEMA = ? AND t.TABLE_NAME = ?",
    )
    .bind(database)
    .bind(table)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| db_error(shown, e))?;
    Ok(row
        .map(|(engine, transactions)| (engine.unwrap_or_default(), transactions.unwrap_or(0) == 1)))
}
