//! What the database targets (SQLite, PostgreSQL, MySQL) decide the same way about an
//! existing table: `if_exists`, `--restart`, missing columns, a table gone on resume; and
//! which of its rows are a chunk's.

use arrow::record_batch::RecordBatch;

use super::Prepare;
use crate::check::readback::{KEYS_PER_QUERY, Selection, key_values};
use crate::config::IfExists;
use crate::db::keyset::{KeySql, Render};
use crate::plan::{Chunk, ChunkRange, TargetKey};
use crate::types::ColumnType;
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

/// Which target rows are `chunk`'s, for `replace-chunk`: its key range when the target
/// columns hold the source key unchanged and the range fits their types (`column_type`),
/// else exactly the keys it wrote (`batches`).
pub(crate) fn chunk_selection(
    key: Option<&TargetKey>,
    chunk: &Chunk,
    batches: &[RecordBatch],
    column_type: impl Fn(&str) -> Option<ColumnType>,
    here: &str,
) -> Result<Selection> {
    let Some(key) = key else {
        return Err(Error::Unsupported(format!(
            "{here}: write_mode = \"replace-chunk\" needs a target column whose expr is the source key"
        )));
    };
    if let (true, ChunkRange::Keys { lo, hi }) = (key.unchanged, &chunk.range) {
        let range = Selection::Range {
            columns: key.columns.clone(),
            lo: lo.clone(),
            hi: hi.clone(),
        };
        if range.range_fits(column_type) {
            return Ok(range);
        }
    }
    Selection::of_keys(&key.columns, batches)
}

/// The rows a chunk that wrote `batches` reads back: `selection`, or exactly the keys it
/// sent (`key` columns) when it upserted (rows that were there before may have been
/// updated, in its key range or not) or when its range does not fit the key columns.
pub(crate) fn readback_selection(
    selection: &Selection,
    key: &[String],
    upsert: bool,
    column_type: impl Fn(&str) -> Option<ColumnType>,
    batches: &[RecordBatch],
) -> Result<Selection> {
    if !key.is_empty() && (upsert || !selection.range_fits(column_type)) {
        return Selection::of_keys(key, batches);
    }
    Ok(selection.clone())
}

/// `WHERE` clauses (several for a long key list) restricting a table to `selection`,
/// key values rendered by `literal` (statements like `COPY` take no parameters).
/// `keyset(columns, range)` writes the key columns in the database's SQL, for a range
/// comparison or (`range` false) an equality lookup; `column_type` says whether a range
/// fits its columns.
pub(crate) fn conditions(
    selection: &Selection,
    keyset: impl Fn(&[String], bool) -> KeySql,
    column_type: impl Fn(&str) -> Option<ColumnType>,
    literal: Render<'_>,
    here: &str,
) -> Result<Vec<String>> {
    Ok(match selection {
        Selection::Range { columns, lo, hi } => {
            if !selection.range_fits(column_type) {
                return Err(Error::Unsupported(format!(
                    "{here}: a chunk's key range cannot be compared with target column(s) {} of another type",
                    columns.join(", ")
                )));
            }
            let range = keyset(columns, true).range(lo.as_ref(), hi.as_ref(), literal)?;
            vec![format!(" WHERE {range}")]
        }
        Selection::Keys { columns, keys } => {
            let keyset = keyset(columns, false);
            key_values(keys)
                .chunks(KEYS_PER_QUERY)
                .map(|group| Ok(format!(" WHERE {}", keyset.one_of(group, literal)?)))
                .collect::<Result<_>>()?
        }
        Selection::All => vec![String::new()],
        Selection::Files => {
            return Err(Error::Internal("a table has no part files".into()));
        }
    })
}

/// The primary key columns of a table rowshift creates, from `columns` (name, type,
/// nullable, primary key): the source key's columns first, in key order, so the key's
/// index serves a chunk's range; then any other declared ones, in their order.
pub(crate) fn primary_key<'c>(
    columns: &'c [(String, ColumnType, bool, bool)],
    key: Option<&'c TargetKey>,
) -> Vec<&'c str> {
    let declared = columns.iter().filter(|c| c.3).map(|c| c.0.as_str());
    let in_key = |name: &str| key.is_some_and(|k| k.columns.iter().any(|c| c == name));
    let mut pk: Vec<&str> = key
        .map(|k| k.columns.iter().map(String::as_str).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|k| declared.clone().any(|d| d == *k))
        .collect();
    pk.extend(declared.filter(|d| !in_key(d)));
    pk
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_primary_key_lists_the_source_key_first_in_key_order() {
        let col = |name: &str, pk: bool| (name.to_string(), ColumnType::BigInt, !pk, pk);
        let columns = [
            col("n", true),
            col("note", false),
            col("extra", true),
            col("region", true),
        ];
        let key = TargetKey {
            columns: vec!["region".into(), "n".into()],
            unchanged: true,
        };
        assert_eq!(primary_key(&columns, Some(&key)), ["region", "n", "extra"]);
        // Without a key, or with key columns that are not declared primary keys, the
        // declared order stands.
        assert_eq!(primary_key(&columns, None), ["n", "extra", "region"]);
        let other = TargetKey {
            columns: vec!["note".into()],
            unchanged: true,
        };
        assert_eq!(
            primary_key(&columns, Some(&other)),
            ["n", "extra", "region"]
        );
    }
}
