//! What the database targets (SQLite, PostgreSQL, MySQL) decide the same way about an
//! existing table: `if_exists`, `--restart`, missing columns, a table gone on resume.

use super::Prepare;
use crate::config::IfExists;
use crate::{Error, Result};

/// Refuses `--restart` on an `if_exists = "append"` target.
pub(crate) fn check_restart(how: Prepare, if_exists: IfExists, here: &str) -> Result<()> {
    if how == Prepare::Restart && if_exists == IfExists::Append {
        return Err(Error::Unsupported(format!(
            "{here}: --restart cannot clean an if_exists = \"append\" target: rowshift cannot tell the rows it wrote from those already there"
        )));
    }
    Ok(())
}

/// Whether `prepare` drops an existing table that holds `rows` rows (and its quarantine)
/// and creates it again; `Err` when `if_exists = "fail"` forbids writing into it.
pub(crate) fn drops_existing(
    how: Prepare,
    if_exists: IfExists,
    rows: i64,
    here: &str,
) -> Result<bool> {
    match (how, if_exists) {
        (Prepare::Restart, _) | (Prepare::Fresh, IfExists::Replace) => Ok(true),
        (Prepare::Fresh, IfExists::Fail) if rows > 0 => Err(Error::data(
            here,
            format!(
                "the target table already holds {rows} rows; set if_exists = \"replace\" or \"append\" in [target]"
            ),
        )),
        _ => Ok(false),
    }
}

/// The statements `prepare` would run on the table (for dry runs): `existing_rows` is the
/// table's row count if it exists, `table` its quoted name, `create` its `CREATE TABLE`.
pub(crate) fn planned_ddl(
    existing_rows: Option<i64>,
    if_exists: IfExists,
    table: &str,
    create: String,
) -> Vec<String> {
    match (existing_rows, if_exists) {
        (None, _) => vec![create],
        (Some(_), IfExists::Replace) => vec![format!("DROP TABLE {table}"), create],
        (Some(rows), IfExists::Fail) if rows > 0 => vec![format!(
            "-- none: the table already holds {rows} rows and if_exists = \"fail\"; run would stop"
        )],
        (Some(_), _) => vec![format!("-- none: table {table} exists and is written into")],
    }
}

/// Checks that an existing table has every declared column.
pub(crate) fn check_columns<'a>(
    declared: impl Iterator<Item = &'a str>,
    have: &[&str],
    here: &str,
) -> Result<()> {
    let missing: Vec<&str> = declared.filter(|c| !have.contains(c)).collect();
    if !missing.is_empty() {
        return Err(Error::data(
            here,
            format!(
                "the existing table lacks column(s) {}; it has: {}",
                missing.join(", "),
                have.join(", ")
            ),
        ));
    }
    Ok(())
}

/// On resume: refuses to go on when `prepare` had to create the table again although the
/// checkpoint says `done` chunks were committed to it.
pub(crate) fn check_not_recreated(recreated: bool, done: &[usize], here: &str) -> Result<()> {
    if recreated && !done.is_empty() {
        return Err(Error::data(
            here,
            format!(
                "the table is gone, but the checkpoint says {} chunks were committed to it; run with --restart to start over",
                done.len()
            ),
        ));
    }
    Ok(())
}
