//! What `down` checks before it drops a data step's rows: that they could be had again.
//! A data step records, when its move ends, its source's row count and an
//! order-independent checksum of the source's rows; `down` reads the source again and
//! refuses when it is gone or its figures changed, unless the step has a reverse pipeline
//! that brings the rows back (or `--force`).

use super::SetError;
use super::history::{History, Record, State};
use super::set::MigrationSet;
use crate::config::{Location, Pipeline, redact};
use crate::runtime::IoRuntime;
use crate::{Error, Result};

/// A table's rows in two figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Figures {
    /// Rows.
    pub rows: u64,
    /// The wrapping sum of each row's fixed-seed hash (`check::checksum`), in hex: the
    /// order the rows are read in cannot change it.
    pub checksum: String,
}

/// The figures of `pipeline`'s source as it is now, or `None` when its table (or file)
/// is gone.
pub(crate) fn source_figures(pipeline: &Pipeline, io: &IoRuntime) -> Result<Option<Figures>> {
    let source = &pipeline.source;
    match &source.location {
        Location::Files { .. } => {}
        Location::Sqlite { path } if !path.exists() => return Ok(None),
        location => {
            let Some(table) = &source.table else {
                return Ok(None);
            };
            let look = History::open_read_only(location, "", io)?;
            let rows = look.count_rows(&table.value);
            look.close();
            if rows?.is_none() {
                return Ok(None);
            }
        }
    }
    let reader = crate::plan::open_source(source, io)?;
    let mut rows = 0u64;
    let mut sum = 0u64;
    for chunk in reader.plan(pipeline.chunks.rows)? {
        for batch in reader.read(&chunk, pipeline.chunks.batch_rows)? {
            let batch = batch?;
            rows += batch.num_rows() as u64;
            sum = sum.wrapping_add(crate::check::checksum(&batch)?);
        }
    }
    Ok(Some(Figures {
        rows,
        checksum: format!("{sum:016x}"),
    }))
}

/// `table items_v1 of sqlite://v1.db`, `table shop.items of postgres://…`.
pub(crate) fn source_shown(pipeline: &Pipeline) -> String {
    let table = pipeline
        .source
        .table
        .as_ref()
        .map_or_else(String::new, |t| t.value.clone());
    let url = redact(&pipeline.source.url.value);
    match &pipeline.source.location {
        Location::Postgres { schema, .. } | Location::Mysql { schema, .. } => {
            format!("table {schema}.{table} of {url}")
        }
        Location::Sqlite { .. } => format!("table {table} of {url}"),
        Location::Files { .. } => url,
    }
}

/// The applied data steps about to be reverted whose rows could not be had again: their
/// source is gone, or it changed since the step moved them. A step with a reverse
/// pipeline brings its rows back, so it is not among them.
pub(crate) fn source_refusals(
    set: &MigrationSet,
    targets: &[Record],
    io: &IoRuntime,
) -> std::result::Result<Vec<String>, SetError> {
    let mut out = Vec::new();
    for r in targets.iter().filter(|r| r.state.is_applied()) {
        let Some(step) = set.step(r.step) else {
            continue;
        };
        let (Some(pipeline), None) = (&step.pipeline, &step.reverse) else {
            continue;
        };
        if step.is_online() {
            // Swapped back, not moved back: `down` refuses one without its reverse
            // pipeline for that reason (online.rs), not for its source.
            continue;
        }
        let table = pipeline
            .target
            .table
            .as_ref()
            .map_or_else(String::new, |t| t.value.clone());
        let source = source_shown(pipeline);
        let remedy = format!(
            "add a reverse pipeline, {:03}_{}.down.toml, that brings them back, or pass --force to revert anyway",
            step.number, step.name
        );
        let now = source_figures(pipeline, io).map_err(|e| SetError::Step {
            step: step.label(),
            source: Error::Unsupported(format!(
                "down could not read its source, {source}, to check that the rows it drops could be had again: {}",
                redact(&e.to_string())
            )),
        })?;
        let Some(now) = now else {
            out.push(format!(
                "{}: its source, {source}, is gone, so the rows that reverting drops from table {table} could not be had again; {remedy}",
                step.label()
            ));
            continue;
        };
        let (Some(rows), Some(sum)) = (r.source_rows, &r.source_checksum) else {
            // Applied by baseline, or before the figures were recorded: nothing to
            // compare with.
            continue;
        };
        let mut what = Vec::new();
        match now.rows.cmp(&rows) {
            std::cmp::Ordering::Greater => what.push(format!(
                "{} rows added ({rows} then, {} now)",
                now.rows - rows,
                now.rows
            )),
            std::cmp::Ordering::Less => what.push(format!(
                "{} rows removed ({rows} then, {} now)",
                rows - now.rows,
                now.rows
            )),
            std::cmp::Ordering::Equal => {}
        }
        if &now.checksum != sum {
            what.push(match what.is_empty() {
                true => format!(
                    "the same {rows} rows, but their checksum differs ({sum} then, {} now): rows were changed",
                    now.checksum
                ),
                false => format!("the checksum differs ({sum} then, {} now)", now.checksum),
            });
        }
        if what.is_empty() {
            continue;
        }
        let when = r.ended_at.as_deref().unwrap_or(&r.started_at);
        out.push(format!(
            "{}: its source, {source}, changed since the step was applied on {when}: {}; the rows that reverting drops from table {table} could not be had again from it as they were; {remedy}",
            step.label(),
            what.join(" and ")
        ));
    }
    Ok(out)
}

/// Whether a record is past its reverse move (or has none to run).
pub(crate) fn reverse_pending(r: &Record, has_reverse: bool) -> bool {
    match r.state {
        State::Reverting => r.phase == super::history::Phase::Reverse,
        _ => has_reverse,
    }
}
