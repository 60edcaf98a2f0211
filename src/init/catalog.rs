//! What init carries over of a table beyond its columns, read through each database's
//! catalog (`db::*::catalog`) into one shape: defaults, identity columns, indexes,
//! foreign keys and checks, and in words what cannot be carried.

use crate::config::{DbOptions, Location};
use crate::runtime::IoRuntime;
use crate::{Error, Result};

use super::expr::Engine;

/// A table's declarations as the source holds them.
#[derive(Debug, Clone, Default)]
pub(crate) struct TableInfo {
    pub name: String,
    /// The primary key's columns in key order (empty: none).
    pub primary_key: Vec<String>,
    /// Columns of this table that other tables' foreign keys reference (filled in by
    /// the set, so that MySQL gives them a length as it does the referencing side).
    pub referenced: Vec<Vec<String>>,
    pub columns: Vec<ColumnInfo>,
    pub indexes: Vec<IndexInfo>,
    pub foreign_keys: Vec<FkInfo>,
    pub checks: Vec<CheckInfo>,
    /// What the source declares and no declaration holds, each in words.
    pub lost: Vec<String>,
}

/// A column's default, identity and enum labels.
#[derive(Debug, Clone)]
pub(crate) struct ColumnInfo {
    pub name: String,
    /// The default in the source's SQL.
    pub default: Option<String>,
    /// The source numbers new rows in it (identity, serial, AUTO_INCREMENT, rowid).
    pub identity: bool,
    /// An enum's labels: a check `col IN (...)` holds them.
    pub labels: Option<Vec<String>>,
}

/// An index of plain columns.
#[derive(Debug, Clone)]
pub(crate) struct IndexInfo {
    pub name: String,
    pub columns: Vec<String>,
    pub unique: bool,
}

/// A foreign key to a table of the same schema.
#[derive(Debug, Clone)]
pub(crate) struct FkInfo {
    pub name: Option<String>,
    pub columns: Vec<String>,
    pub table: String,
    pub references: Vec<String>,
    pub on_delete: Option<&'static str>,
    pub on_update: Option<&'static str>,
}

/// A check constraint in the source's SQL.
#[derive(Debug, Clone)]
pub(crate) struct CheckInfo {
    pub name: Option<String>,
    pub expr: String,
}

/// The kind of database at `location`, `None` for files.
pub(crate) fn engine(location: &Location) -> Option<Engine> {
    match location {
        Location::Sqlite { .. } => Some(Engine::Sqlite),
        Location::Postgres { .. } => Some(Engine::Postgres),
        Location::Mysql { .. } => Some(Engine::Mysql),
        Location::Files { .. } => None,
    }
}

/// The tables of the source's schema (PostgreSQL schema, MySQL database, SQLite file),
/// and its objects no step carries (views, routines, triggers), each in words.
pub(crate) fn schema_tables(
    location: &Location,
    schema: &str,
    io: &IoRuntime,
) -> Result<(Vec<String>, Vec<String>)> {
    let (tables, others) = match location {
        Location::Sqlite { path } => {
            let shown = format!("sqlite://{}", crate::config::show_path(path));
            let pool = crate::db::sqlite::connect(io, path, crate::db::sqlite::Access::Read, 1)?;
            let o = io.block_on(crate::db::sqlite::schema_objects(&pool, &shown))?;
            (o.tables, o.others)
        }
        Location::Postgres { url, .. } => {
            let pool = crate::db::postgres::connect(io, url, &DbOptions::default())?;
            let o = io.block_on(crate::db::postgres::schema_objects(
                &pool,
                schema,
                &url.shown(),
            ))?;
            (o.tables, o.others)
        }
        Location::Mysql { url, .. } => {
            let pool = crate::db::mysql::connect(io, url, &DbOptions::default())?;
            let o = io.block_on(crate::db::mysql::schema_objects(
                &pool,
                schema,
                &url.shown(),
            ))?;
            (o.tables, o.others)
        }
        Location::Files { .. } => {
            return Err(Error::Unsupported(
                "a migration set is made from a database (sqlite://, postgres://, mysql://), not from a file".into(),
            ));
        }
    };
    let lost = others
        .into_iter()
        .map(|(kind, name)| format!("{kind} `{name}` is not carried over: write it in a SQL step"))
        .collect();
    Ok((tables, lost))
}

/// Reads what `schema.table` declares beyond its column types.
pub(crate) fn table_info(
    location: &Location,
    schema: &str,
    table: &str,
    io: &IoRuntime,
) -> Result<TableInfo> {
    let mut t = TableInfo {
        name: table.to_string(),
        ..Default::default()
    };
    // Each database's catalog, read into one shape; what follows is the same for all.
    let (d, outside) = match location {
        Location::Sqlite { path } => {
            let shown = format!("sqlite://{}", crate::config::show_path(path));
            let pool = crate::db::sqlite::connect(io, path, crate::db::sqlite::Access::Read, 1)?;
            let d = io.block_on(crate::db::sqlite::table_details(&pool, table, &shown))?;
            let mut pk: Vec<(i64, String)> = io
                .block_on(crate::db::sqlite::table_columns(&pool, table, &shown))?
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c.pk > 0)
                .map(|c| (c.pk, c.name))
                .collect();
            pk.sort();
            t.primary_key = pk.into_iter().map(|(_, n)| n).collect();
            (d, "")
        }
        Location::Postgres { url, .. } => {
            let pool = crate::db::postgres::connect(io, url, &DbOptions::default())?;
            let shown = url.shown();
            let d = io.block_on(crate::db::postgres::table_details(
                &pool, schema, table, &shown,
            ))?;
            t.primary_key = io.block_on(crate::db::postgres::primary_key(
                &pool, schema, table, &shown,
            ))?;
            (d, "schema")
        }
        Location::Mysql { url, .. } => {
            let pool = crate::db::mysql::connect(io, url, &DbOptions::default())?;
            let shown = url.shown();
            let d = io.block_on(crate::db::mysql::table_details(
                &pool, schema, table, &shown,
            ))?;
            t.primary_key =
                io.block_on(crate::db::mysql::primary_key(&pool, schema, table, &shown))?;
            (d, "database")
        }
        Location::Files { .. } => {
            return Err(Error::Internal("table_info on a file source".into()));
        }
    };
    for c in d.columns {
        match c.generated.as_deref() {
            Some("") => t.lost.push(format!(
                "column `{}` is generated: its values are copied, its expression is not",
                c.name
            )),
            Some(g) => t.lost.push(format!(
                "column `{}` is generated ({g}): its values are copied, its expression is not",
                c.name
            )),
            None => {}
        }
        if c.on_update {
            t.lost.push(format!(
                "column `{}` is set ON UPDATE CURRENT_TIMESTAMP, which no declaration holds: write a trigger in a SQL step",
                c.name
            ));
        }
        t.columns.push(ColumnInfo {
            name: c.name,
            default: c.default,
            identity: c.identity,
            labels: c.labels,
        });
    }
    for ix in d.indexes {
        push_index(
            &mut t,
            ix.name,
            ix.columns,
            ix.unique,
            ix.unusual,
            ix.definition,
        );
    }
    for fk in d.foreign_keys {
        if let Some(other) = fk.schema.as_deref().filter(|s| *s != schema) {
            t.lost.push(format!(
                "foreign key `{}` references `{other}.{}`, outside {outside} `{schema}`: write it in a SQL step",
                fk.name.as_deref().unwrap_or_default(),
                fk.table
            ));
            continue;
        }
        t.foreign_keys.push(FkInfo {
            name: fk.name,
            columns: fk.columns,
            table: fk.table,
            references: fk.references,
            on_delete: fk.on_delete,
            on_update: fk.on_update,
        });
    }
    t.checks = d
        .checks
        .into_iter()
        .map(|(name, expr)| CheckInfo { name, expr })
        .collect();
    if let Some(why) = d.unread_checks {
        t.lost.push(format!(
            "the CHECK constraints of `{table}` could not be read ({why}): write them as [[target.constraints]]"
        ));
    }
    for (name, def) in d.others {
        t.lost.push(format!(
            "constraint `{name}` ({def}) is not carried over: write it in a SQL step"
        ));
    }
    Ok(t)
}

/// Adds an index of plain columns, or the reason it cannot be declared.
fn push_index(
    t: &mut TableInfo,
    name: String,
    columns: Vec<Option<String>>,
    unique: bool,
    mut unusual: Vec<String>,
    definition: Option<String>,
) {
    if columns.iter().any(Option::is_none) {
        unusual.push("it indexes an expression".into());
    }
    if unusual.is_empty() {
        t.indexes.push(IndexInfo {
            name,
            columns: columns.into_iter().flatten().collect(),
            unique,
        });
        return;
    }
    let def = definition.map_or(String::new(), |d| format!(" ({d})"));
    t.lost.push(format!(
        "{}index `{name}`{def} is not carried over: {}; write it in a SQL step",
        if unique { "unique " } else { "" },
        unusual.join(", ")
    ));
}
