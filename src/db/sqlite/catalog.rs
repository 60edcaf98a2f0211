//! What `rowshift init` reads of a SQLite database beyond a table's columns: its tables
//! and the objects a migration set cannot carry (views, triggers), and a table's
//! defaults, rowid key, indexes, foreign keys and checks.

use datafusion_sql::sqlparser::ast::{ColumnOption, Statement, TableConstraint};
use datafusion_sql::sqlparser::dialect::SQLiteDialect;
use datafusion_sql::sqlparser::parser::Parser;
use sqlx::Row;
use sqlx::sqlite::SqlitePool;

use crate::Result;
use crate::db::sqlite::errors::error as db_error;
use crate::sql::catalog::{
    ColumnDetail, ForeignKeyDetail, IndexDetail, SchemaObjects, TableDetails,
};
use crate::sql::quote_ident;

/// Reads the tables, views and triggers.
pub async fn schema_objects(pool: &SqlitePool, shown: &str) -> Result<SchemaObjects> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT type, name, tbl_name FROM sqlite_master \
         WHERE type IN ('table', 'view', 'trigger') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )
    .fetch_all(pool)
    .await
    .map_err(|e| db_error(shown, e))?;
    let mut out = SchemaObjects::default();
    for (kind, name, table) in rows {
        match kind.as_str() {
            "table" => out.tables.push(name),
            "trigger" => out.others.push((kind, format!("{name} on {table}"))),
            _ => out.others.push((kind, name)),
        }
    }
    Ok(out)
}

fn action(a: &str) -> Option<&'static str> {
    match a.to_ascii_uppercase().as_str() {
        "RESTRICT" => Some("RESTRICT"),
        "CASCADE" => Some("CASCADE"),
        "SET NULL" => Some("SET NULL"),
        "SET DEFAULT" => Some("SET DEFAULT"),
        _ => None,
    }
}

/// Reads the defaults, rowid key, indexes, foreign keys and checks of `table`.
pub async fn table_details(pool: &SqlitePool, table: &str, shown: &str) -> Result<TableDetails> {
    let err = |e| db_error(shown, e);
    let q = quote_ident(table);
    let mut out = TableDetails::default();
    let indexes = sqlx::query(crate::sql::stmt(format!("PRAGMA index_list({q})")))
        .fetch_all(pool)
        .await
        .map_err(err)?;
    // A WITHOUT ROWID table has an index for its primary key; a rowid table's INTEGER
    // PRIMARY KEY is the rowid itself and has none.
    let mut pk_index = false;
    for r in &indexes {
        let name: String = r.try_get("name").map_err(err)?;
        let origin: String = r.try_get("origin").map_err(err)?;
        if origin == "pk" {
            pk_index = true;
            continue;
        }
        let mut unusual = Vec::new();
        if r.try_get::<i64, _>("partial").map_err(err)? != 0 {
            unusual.push("partial (it has a WHERE clause)".to_string());
        }
        let parts = sqlx::query(crate::sql::stmt(format!(
            "PRAGMA index_xinfo({})",
            quote_ident(&name)
        )))
        .fetch_all(pool)
        .await
        .map_err(err)?;
        let mut columns = Vec::new();
        for p in &parts {
            if p.try_get::<i64, _>("key").map_err(err)? == 0 {
                continue;
            }
            if p.try_get::<i64, _>("desc").map_err(err)? != 0 {
                unusual.push("a column is descending".to_string());
            }
            columns.push(p.try_get::<Option<String>, _>("name").map_err(err)?);
        }
        out.indexes.push(IndexDetail {
            name,
            columns,
            unique: r.try_get::<i64, _>("unique").map_err(err)? != 0,
            unusual,
            definition: None,
        });
    }
    out.indexes.sort_by(|a, b| a.name.cmp(&b.name));
    for ix in &mut out.indexes {
        // A UNIQUE constraint's automatic index has a name SQLite keeps for itself.
        if ix.name.starts_with("sqlite_autoindex_") {
            let cols: Vec<&str> = ix.columns.iter().flatten().map(String::as_str).collect();
            ix.name = format!("{table}_{}_key", cols.join("_"));
        }
    }
    let cols = sqlx::query(crate::sql::stmt(format!("PRAGMA table_xinfo({q})")))
        .fetch_all(pool)
        .await
        .map_err(err)?;
    let keys = cols
        .iter()
        .filter(|r| r.try_get::<i64, _>("pk").is_ok_and(|pk| pk > 0))
        .count();
    for r in &cols {
        let hidden: i64 = r.try_get("hidden").map_err(err)?;
        if hidden == 1 {
            // A virtual table's hidden column: not part of the table's rows.
            continue;
        }
        let decl: String = r.try_get("type").map_err(err)?;
        let pk: i64 = r.try_get("pk").map_err(err)?;
        out.columns.push(ColumnDetail {
            name: r.try_get("name").map_err(err)?,
            default: r.try_get("dflt_value").map_err(err)?,
            // The rowid: the whole primary key, declared `INTEGER`, in a rowid table.
            identity: pk > 0 && keys == 1 && !pk_index && decl.eq_ignore_ascii_case("INTEGER"),
            // PRAGMA says a column is generated, not how.
            generated: (hidden >= 2).then(String::new),
            on_update: false,
            labels: None,
        });
    }
    let fks = sqlx::query(crate::sql::stmt(format!("PRAGMA foreign_key_list({q})")))
        .fetch_all(pool)
        .await
        .map_err(err)?;
    let mut last = -1;
    for r in &fks {
        let id: i64 = r.try_get("id").map_err(err)?;
        if id != last {
            last = id;
            let del: String = r.try_get("on_delete").map_err(err)?;
            let upd: String = r.try_get("on_update").map_err(err)?;
            out.foreign_keys.push(ForeignKeyDetail {
                name: None,
                schema: None,
                columns: Vec::new(),
                table: r.try_get("table").map_err(err)?,
                references: Vec::new(),
                on_delete: action(&del),
                on_update: action(&upd),
            });
        }
        let fk = out.foreign_keys.last_mut().expect("pushed above");
        fk.columns.push(r.try_get("from").map_err(err)?);
        if let Some(to) = r.try_get::<Option<String>, _>("to").map_err(err)? {
            fk.references.push(to);
        }
    }
    // PRAGMA lists the foreign keys last first; the declaration's order reads better.
    out.foreign_keys.reverse();
    for fk in out
        .foreign_keys
        .iter_mut()
        .filter(|f| f.references.is_empty())
    {
        fk.references = parent_key(pool, &fk.table, shown).await?;
    }
    let sql: Option<String> =
        sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?")
            .bind(table)
            .fetch_optional(pool)
            .await
            .map_err(err)?
            .flatten();
    match sql.as_deref().map(checks_of) {
        Some(Ok(checks)) => out.checks = checks,
        Some(Err(why)) => out.unread_checks = Some(why),
        None => {}
    }
    Ok(out)
}

/// The primary key of `table`, in key order.
async fn parent_key(pool: &SqlitePool, table: &str, shown: &str) -> Result<Vec<String>> {
    let rows = sqlx::query(crate::sql::stmt(format!(
        "PRAGMA table_info({})",
        quote_ident(table)
    )))
    .fetch_all(pool)
    .await
    .map_err(|e| db_error(shown, e))?;
    let mut pk: Vec<(i64, String)> = rows
        .iter()
        .filter_map(|r| Some((r.try_get("pk").ok()?, r.try_get("name").ok()?)))
        .filter(|(n, _)| *n > 0)
        .collect();
    pk.sort();
    Ok(pk.into_iter().map(|(_, n)| n).collect())
}

/// The CHECK constraints of a `CREATE TABLE` statement, each with its name when it has one.
fn checks_of(sql: &str) -> std::result::Result<Vec<(Option<String>, String)>, String> {
    let statements = Parser::parse_sql(&SQLiteDialect {}, sql).map_err(|e| e.to_string())?;
    let Some(Statement::CreateTable(create)) = statements.first() else {
        return Err("it is not a CREATE TABLE statement".into());
    };
    let mut out = Vec::new();
    for c in &create.columns {
        for o in &c.options {
            if let ColumnOption::Check(check) = &o.option {
                let name = o.name.as_ref().or(check.name.as_ref());
                out.push((name.map(|n| n.value.clone()), check.expr.to_string()));
            }
        }
    }
    for t in &create.constraints {
        if let TableConstraint::Check(check) = t {
            out.push((
                check.name.as_ref().map(|n| n.value.clone()),
                check.expr.to_string(),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_column_and_table_checks() {
        let checks = super::checks_of(
            "CREATE TABLE t (a INTEGER PRIMARY KEY AUTOINCREMENT, s TEXT NOT NULL CHECK (s IN ('x', 'y')), \
             n INTEGER CONSTRAINT n_pos CHECK (n > 0), CHECK (a < n))",
        )
        .unwrap();
        assert_eq!(
            checks,
            vec![
                (None, "s IN ('x', 'y')".to_string()),
                (Some("n_pos".to_string()), "n > 0".to_string()),
                (None, "a < n".to_string()),
            ]
        );
    }
}
