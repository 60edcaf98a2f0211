//! `references` checks against a table of a SQLite database (the target's or the
//! source's): values looked up in batches, the ones found cached.

use std::collections::HashSet;
use std::sync::Mutex;

use arrow::array::ArrayRef;
use sqlx::sqlite::SqlitePool;

use super::{Access, connect, table_columns};
use crate::Result;
use crate::check::rules::Lookup;
use crate::config::{Location, Pipeline};
use crate::db::sqlite::errors::error as db_error;
use crate::runtime::IoRuntime;
use crate::sql::{quote_ident, stmt};
use crate::types::cast::value_text;

/// `references`: values looked up in a table of a SQLite database.
pub struct SqliteLookup {
    pool: SqlitePool,
    io: IoRuntime,
    table: String,
    column: String,
    shown: String,
    /// Values known to exist, as text.
    found: Mutex<HashSet<String>>,
}

/// Values per lookup query, well under SQLite's bound-parameter limit.
const LOOKUP_BATCH: usize = 1000;
/// Found values kept; the cache is cleared when it grows past this.
const CACHE_MAX: usize = 1 << 20;

impl SqliteLookup {
    /// Opens the database that holds `table`: the target's if it has it, else the
    /// source's.
    pub fn open(
        pipeline: &Pipeline,
        table: &str,
        column: &str,
        io: &IoRuntime,
    ) -> Result<SqliteLookup, String> {
        let candidates: Vec<&std::path::Path> =
            [&pipeline.target.location, &pipeline.source.location]
                .into_iter()
                .filter_map(|l| match l {
                    Location::Sqlite { path } if path.exists() => Some(path.as_path()),
                    _ => None,
                })
                .collect();
        if candidates.is_empty() {
            let postgres = [&pipeline.target.location, &pipeline.source.location]
                .iter()
                .any(|l| matches!(l, Location::Postgres { .. } | Location::Mysql { .. }));
            return Err(if postgres {
                format!(
                    "`references` looks tables up in SQLite databases only, so far; for PostgreSQL and MySQL, declare a foreign key to `{table}` on the target table"
                )
            } else {
                format!(
                    "`references` looks `{table}` up in the target or source database, and this pipeline has no SQLite database that exists yet"
                )
            });
        }
        let mut searched = Vec::new();
        for path in candidates {
            let shown = format!("sqlite://{}", crate::config::show_path(path));
            let pool = connect(io, path, Access::Read, 1).map_err(|e| e.to_string())?;
            let columns = io
                .block_on(table_columns(&pool, table, &shown))
                .map_err(|e| e.to_string())?;
            match columns {
                None => {
                    io.block_on(pool.close());
                    searched.push(shown);
                }
                Some(cols) if !cols.iter().any(|c| c.name == column) => {
                    let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
                    return Err(format!(
                        "referenced table `{table}` in {shown} has no column `{column}`; it has: {}",
                        names.join(", ")
                    ));
                }
                Some(_) => {
                    return Ok(SqliteLookup {
                        pool,
                        io: io.clone(),
                        table: table.to_string(),
                        column: column.to_string(),
                        shown,
                        found: Mutex::new(HashSet::new()),
                    });
                }
            }
        }
        Err(format!(
            "referenced table `{table}` does not exist in {}",
            searched.join(" or ")
        ))
    }
}

impl Lookup for SqliteLookup {
    fn referenced(&self) -> String {
        format!("{}.{}", self.table, self.column)
    }

    fn missing(&self, values: &ArrayRef) -> Result<Vec<usize>> {
        let texts: Vec<Option<String>> = (0..values.len())
            .map(|r| value_text(values.as_ref(), r))
            .collect();
        let unknown: Vec<String> = {
            let found = self.found.lock().unwrap_or_else(|p| p.into_inner());
            let mut u: Vec<String> = texts
                .iter()
                .flatten()
                .filter(|t| !found.contains(*t))
                .cloned()
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            u.sort();
            u
        };
        let integers = values.data_type().is_integer();
        let mut present = HashSet::new();
        let sql_head = format!(
            "SELECT CAST({c} AS TEXT) FROM {t} WHERE {c} IN ",
            c = quote_ident(&self.column),
            t = quote_ident(&self.table)
        );
        for group in unknown.chunks(LOOKUP_BATCH) {
            let sql = format!("{sql_head}({})", vec!["?"; group.len()].join(", "));
            let rows: Vec<Option<String>> = self.io.block_on(async {
                let mut q = sqlx::query_scalar(stmt(sql));
                for v in group {
                    // Integers bind as integers so an INTEGER column's index is used.
                    q = match (integers, v.parse::<i64>()) {
                        (true, Ok(i)) => q.bind(i),
                        _ => q.bind(v.clone()),
                    };
                }
                q.fetch_all(&self.pool)
                    .await
                    .map_err(|e| db_error(format!("{} table {}", self.shown, self.table), e))
            })?;
            present.extend(rows.into_iter().flatten());
        }
        let unknown: HashSet<String> = unknown.into_iter().collect();
        let missing = texts
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                t.as_ref()
                    .is_some_and(|t| unknown.contains(t) && !present.contains(t))
            })
            .map(|(r, _)| r)
            .collect();
        let mut found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        if found.len() + present.len() > CACHE_MAX {
            found.clear();
        }
        found.extend(present);
        Ok(missing)
    }
}
