//! Reading the catalog: a table's columns, its tables, its primary key and engine.

use sqlx::Row;
use sqlx::mysql::{MySqlConnection, MySqlPool};

use crate::Result;
use crate::db::mysql::errors::error as db_error;
use crate::sql::catalog::{
    ColumnDetail, ForeignKeyDetail, IndexDetail, SchemaObjects, TableDetails,
};

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

/// Reads the tables and other objects of `database`.
pub async fn schema_objects(
    pool: &MySqlPool,
    database: &str,
    shown: &str,
) -> Result<SchemaObjects> {
    let err = |e| db_error(shown, e);
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(TABLE_NAME AS CHAR), CAST(TABLE_TYPE AS CHAR) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = ? ORDER BY 1",
    )
    .bind(database)
    .fetch_all(pool)
    .await
    .map_err(err)?;
    let mut out = SchemaObjects::default();
    for (name, kind) in rows {
        match kind.as_str() {
            "BASE TABLE" | "SYSTEM VERSIONED" => out.tables.push(name),
            other => out.others.push((other.to_lowercase(), name)),
        }
    }
    for sql in [
        "SELECT CAST(LOWER(ROUTINE_TYPE) AS CHAR), CAST(ROUTINE_NAME AS CHAR) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ? ORDER BY 2",
        "SELECT 'trigger', CAST(CONCAT(TRIGGER_NAME, ' on ', EVENT_OBJECT_TABLE) AS CHAR) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? ORDER BY 2",
        "SELECT 'event', CAST(EVENT_NAME AS CHAR) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ? ORDER BY 2",
    ] {
        let rows: Vec<(String, String)> = sqlx::query_as(sql)
            .bind(database)
            .fetch_all(pool)
            .await
            .map_err(err)?;
        out.others.extend(rows);
    }
    Ok(out)
}

/// The labels of `enum('a','b''c')`, or `None` for another type.
pub fn enum_labels(column_type: &str) -> Option<Vec<String>> {
    let inner = column_type.strip_prefix("enum(")?.strip_suffix(')')?;
    let mut labels = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        if chars.next() != Some('\'') {
            return None;
        }
        let mut label = String::new();
        loop {
            match chars.next()? {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                '\'' => break,
                c => label.push(c),
            }
        }
        labels.push(label);
        match chars.next() {
            None => return Some(labels),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

/// A rule of `REFERENTIAL_CONSTRAINTS` in SQL words. MySQL shows RESTRICT for a key
/// declared without one; it checks at once, as NO ACTION does where nothing is deferred.
fn action(rule: &str) -> Option<&'static str> {
    match rule {
        "CASCADE" => Some("CASCADE"),
        "SET NULL" => Some("SET NULL"),
        "SET DEFAULT" => Some("SET DEFAULT"),
        _ => None,
    }
}

/// Reads the defaults, auto-increment columns, indexes, foreign keys and checks of
/// `database.table`.
pub async fn table_details(
    pool: &MySqlPool,
    database: &str,
    table: &str,
    shown: &str,
) -> Result<TableDetails> {
    let err = |e| db_error(shown, e);
    let version: String = sqlx::query_scalar("SELECT CAST(VERSION() AS CHAR)")
        .fetch_one(pool)
        .await
        .map_err(err)?;
    // MariaDB writes a default as an expression (a string quoted, NULL as `NULL`); MySQL
    // writes a literal bare and marks an expression DEFAULT_GENERATED.
    let mariadb = version.contains("MariaDB");
    let mut out = TableDetails::default();
    let rows = sqlx::query(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(COLUMN_DEFAULT AS CHAR), CAST(EXTRA AS CHAR), \
                CAST(COLUMN_TYPE AS CHAR), CAST(LOWER(DATA_TYPE) AS CHAR), CAST(GENERATION_EXPRESSION AS CHAR) \
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
    )
    .bind(database)
    .bind(table)
    .fetch_all(pool)
    .await
    .map_err(err)?;
    for r in &rows {
        let default: Option<String> = r.try_get(1).map_err(err)?;
        let extra: String = r
            .try_get::<Option<String>, _>(2)
            .map_err(err)?
            .unwrap_or_default()
            .to_lowercase();
        let column_type: String = r.try_get(3).map_err(err)?;
        let data_type: String = r.try_get(4).map_err(err)?;
        let generation: Option<String> = r.try_get(5).map_err(err)?;
        let generated = extra.contains("generated") && !extra.contains("default_generated");
        let default = match default {
            _ if generated => None,
            None => None,
            Some(d) if mariadb => (d != "NULL").then_some(d),
            Some(d) if extra.contains("default_generated") => Some(d),
            Some(d) => {
                let numeric = matches!(
                    data_type.as_str(),
                    "tinyint"
                        | "smallint"
                        | "mediumint"
                        | "int"
                        | "bigint"
                        | "decimal"
                        | "float"
                        | "double"
                        | "bit"
                );
                Some(if numeric {
                    d
                } else {
                    format!("'{}'", d.replace('\'', "''"))
                })
            }
        };
        out.columns.push(ColumnDetail {
            name: r.try_get(0).map_err(err)?,
            default,
            identity: extra.contains("auto_increment"),
            generated: generation.filter(|g| generated && !g.is_empty()),
            on_update: extra.contains("on update"),
            labels: enum_labels(&column_type),
        });
    }
    let rows = sqlx::query(
        "SELECT CAST(INDEX_NAME AS CHAR), CAST(NON_UNIQUE AS SIGNED), CAST(COLUMN_NAME AS CHAR), \
                CAST(SUB_PART AS SIGNED), CAST(INDEX_TYPE AS CHAR) \
         FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME <> 'PRIMARY' \
         ORDER BY INDEX_NAME, SEQ_IN_INDEX",
    )
    .bind(database)
    .bind(table)
    .fetch_all(pool)
    .await
    .map_err(err)?;
    for r in &rows {
        let name: String = r.try_get(0).map_err(err)?;
        let column: Option<String> = r.try_get(2).map_err(err)?;
        let prefix: Option<i64> = r.try_get(3).map_err(err)?;
        let kind: String = r.try_get(4).map_err(err)?;
        if out.indexes.last().is_none_or(|ix| ix.name != name) {
            let mut unusual = Vec::new();
            if kind != "BTREE" && kind != "HASH" {
                unusual.push(format!("a {kind} index"));
            }
            out.indexes.push(IndexDetail {
                name: name.clone(),
                columns: Vec::new(),
                unique: r.try_get::<i64, _>(1).map_err(err)? == 0,
                unusual,
                definition: None,
            });
        }
        let ix = out.indexes.last_mut().expect("pushed above");
        if let (Some(n), Some(c)) = (prefix, &column) {
            ix.unusual
                .push(format!("it indexes the first {n} characters of `{c}` only"));
        }
        ix.columns.push(column);
    }
    let rows = sqlx::query(
        "SELECT CAST(k.CONSTRAINT_NAME AS CHAR), CAST(k.COLUMN_NAME AS CHAR), \
                CAST(k.REFERENCED_TABLE_SCHEMA AS CHAR), CAST(k.REFERENCED_TABLE_NAME AS CHAR), \
                CAST(k.REFERENCED_COLUMN_NAME AS CHAR), CAST(r.DELETE_RULE AS CHAR), CAST(r.UPDATE_RULE AS CHAR) \
         FROM information_schema.KEY_COLUMN_USAGE k \
         JOIN information_schema.REFERENTIAL_CONSTRAINTS r ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA \
              AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME AND r.TABLE_NAME = k.TABLE_NAME \
         WHERE k.TABLE_SCHEMA = ? AND k.TABLE_NAME = ? AND k.REFERENCED_TABLE_NAME IS NOT NULL \
         ORDER BY k.CONSTRAINT_NAME, k.ORDINAL_POSITION",
    )
    .bind(database)
    .bind(table)
    .fetch_all(pool)
    .await
    .map_err(err)?;
    for r in &rows {
        let name: String = r.try_get(0).map_err(err)?;
        if out
            .foreign_keys
            .last()
            .is_none_or(|fk| fk.name.as_deref() != Some(name.as_str()))
        {
            let del: String = r.try_get(5).map_err(err)?;
            let upd: String = r.try_get(6).map_err(err)?;
            out.foreign_keys.push(ForeignKeyDetail {
                name: Some(name.clone()),
                columns: Vec::new(),
                schema: Some(r.try_get(2).map_err(err)?),
                table: r.try_get(3).map_err(err)?,
                references: Vec::new(),
                on_delete: action(&del),
                on_update: action(&upd),
            });
        }
        let fk = out.foreign_keys.last_mut().expect("pushed above");
        fk.columns.push(r.try_get(1).map_err(err)?);
        fk.references.push(r.try_get(4).map_err(err)?);
    }
    // MariaDB names a column's check after the column, so names repeat across tables:
    // its CHECK_CONSTRAINTS has the table. MySQL's names are the database's own.
    let sql = if mariadb {
        "SELECT CAST(CONSTRAINT_NAME AS CHAR), CAST(CHECK_CLAUSE AS CHAR) FROM information_schema.CHECK_CONSTRAINTS \
         WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ? ORDER BY 1"
    } else {
        "SELECT CAST(c.CONSTRAINT_NAME AS CHAR), CAST(c.CHECK_CLAUSE AS CHAR) FROM information_schema.TABLE_CONSTRAINTS t \
         JOIN information_schema.CHECK_CONSTRAINTS c ON c.CONSTRAINT_SCHEMA = t.CONSTRAINT_SCHEMA \
              AND c.CONSTRAINT_NAME = t.CONSTRAINT_NAME \
         WHERE t.TABLE_SCHEMA = ? AND t.TABLE_NAME = ? AND t.CONSTRAINT_TYPE = 'CHECK' ORDER BY 1"
    };
    let checks: Vec<(String, String)> = sqlx::query_as(sql)
        .bind(database)
        .bind(table)
        .fetch_all(pool)
        .await
        .map_err(err)?;
    out.checks = checks.into_iter().map(|(n, c)| (Some(n), c)).collect();
    Ok(out)
}
