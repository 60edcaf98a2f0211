//! The way back from a cut-over (docs/online.md, "Reverse capture and `down`"): the
//! reverse pipeline, `[online] reverse`, takes the new table's rows back to the old
//! table's shape. The cut-over installs its capture on the new table inside the swap,
//! so every write after the swap is logged; replaying that log through the reverse
//! pipeline keeps the old table (`<table>__v1`) current, and `rowshift down` swaps the
//! two back with the same lock, drain and read-back as the cut-over.
//!
//! The reverse pipeline is written as the step back would read before the cut-over:
//! its source is the forward pipeline's target table, its target the forward's source
//! table. After the swap those names belong to other tables, so the reverse move runs
//! with its source renamed to the live table (the source's name) and its target to the
//! old table ([`Reverse::after_swap`]).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::{Online, same_place};
use crate::config::{Diagnostic, Location, Pipeline, Spanned};
use crate::plan::Plan;
use crate::source::capture::Capture;
use crate::{Error, Result};

/// The reverse of an online move: its pipeline, checked against the forward one, and
/// its capture on the live table.
pub struct Reverse {
    /// The reverse pipeline with its tables as they are named after the cut-over.
    pipeline: Pipeline,
    capture: Box<dyn Capture>,
    /// The forward pipeline's file.
    forward_file: std::path::PathBuf,
}

impl Reverse {
    /// The reverse move `forward` declares (`[online] reverse`), checked against it, or
    /// `None` when it declares none. With `compile`, the reverse pipeline's transform
    /// is also compiled against the forward's target table as it is now (before the
    /// cut-over, when that table still has its own name).
    pub fn load(forward: &Plan, compile: bool) -> Result<Option<Reverse>> {
        let Some(file) = &forward.pipeline.online.reverse else {
            return Ok(None);
        };
        let mut pipeline = Pipeline::load(&file.value)?;
        check_against(forward, &pipeline)?;
        if compile {
            let plan = Plan::build(pipeline.clone())?;
            match plan.target_key() {
                Some(k) if k.unchanged => {}
                _ => {
                    return Err(at(
                        &pipeline,
                        pipeline.target.table.as_ref(),
                        "the reverse pipeline's target columns must hold its source key unchanged (expr = the key column): a change replayed back finds the old table's row by it".to_string(),
                    ));
                }
            }
        }
        let source_table = table_of(forward.pipeline.source.table.as_ref());
        rename(&mut pipeline.source.table, &source_table);
        rename(
            &mut pipeline.target.table,
            &format!("{source_table}{OLD_SUFFIX}"),
        );
        pipeline.online = forward.pipeline.online.clone();
        pipeline.online.enabled = true;
        pipeline.online.cutover = false;
        pipeline.online.reverse = None;
        let capture = crate::plan::open_capture(&pipeline.source, &pipeline.name, &forward.io)?
            .ok_or_else(|| Error::Internal("a reverse move without a database source".into()))?;
        Ok(Some(Reverse {
            pipeline,
            capture,
            forward_file: forward.pipeline.file.clone(),
        }))
    }

    /// The capture on the live table, which the cut-over installs in its swap.
    pub fn capture(&self) -> &dyn Capture {
        self.capture.as_ref()
    }

    /// The reverse pipeline's name: its change log and replay position are named by it.
    pub fn name(&self) -> &str {
        &self.pipeline.name
    }

    /// The reverse move as it runs after the cut-over: from the live table (the new
    /// table under the source's name) into the old table, with its capture.
    pub fn after_swap(&self, cancel: Option<Arc<AtomicBool>>) -> Result<(Plan, Online)> {
        let plan = Plan::build(self.pipeline.clone())?;
        let mut online = Online::open(&plan, cancel)?;
        // `rowshift pause` names the forward pipeline: its flag holds both ways.
        online.paused_by = self.forward_file.clone();
        Ok((plan, online))
    }
}

/// What the old table is renamed to at the cut-over: `<table>__v1`.
pub const OLD_SUFFIX: &str = "__v1";

fn table_of(t: Option<&Spanned<String>>) -> String {
    t.map(|t| t.value.clone()).unwrap_or_default()
}

fn rename(t: &mut Option<Spanned<String>>, to: &str) {
    if let Some(t) = t {
        t.value = to.to_string();
    }
}

/// An error at `span`'s line of the reverse pipeline's file.
fn at(reverse: &Pipeline, span: Option<&Spanned<String>>, message: String) -> Error {
    let mut d = reverse.diagnostics();
    d.push(Diagnostic::at(span.and_then(|s| s.span.clone()), message));
    Error::Config(d)
}

/// The reverse pipeline reads the forward one's target table and writes its source
/// table, in the same database: the rows go back where they came from.
fn check_against(forward: &Plan, reverse: &Pipeline) -> Result<()> {
    let here =
        |l: &Location, t: Option<&Spanned<String>>| format!("{} table {}", shown(l), table_of(t));
    let forward_key = forward.target_key().map(|k| k.columns);
    let forward = &forward.pipeline;
    let (fs, ft) = (&forward.source, &forward.target);
    let (rs, rt) = (&reverse.source, &reverse.target);
    if reverse.name == forward.name {
        return Err(at(
            reverse,
            None,
            format!(
                "the reverse pipeline has the forward pipeline's name, {}: their change logs and replay positions would be one; give it its own name",
                forward.name
            ),
        ));
    }
    if !same_place(&rs.location, &ft.location)
        || table_of(rs.table.as_ref()) != table_of(ft.table.as_ref())
    {
        return Err(at(
            reverse,
            rs.table.as_ref().or(Some(&rs.url)),
            format!(
                "the reverse pipeline's [source] must be the forward pipeline's target, {} ({}); it is {}",
                here(&ft.location, ft.table.as_ref()),
                forward.file.display(),
                here(&rs.location, rs.table.as_ref())
            ),
        ));
    }
    if !same_place(&rt.location, &fs.location)
        || table_of(rt.table.as_ref()) != table_of(fs.table.as_ref())
    {
        return Err(at(
            reverse,
            rt.table.as_ref().or(Some(&rt.url)),
            format!(
                "the reverse pipeline's [target] must be the forward pipeline's source, {} ({}): the rows go back where they came from; it is {}",
                here(&fs.location, fs.table.as_ref()),
                forward.file.display(),
                here(&rt.location, rt.table.as_ref())
            ),
        ));
    }
    let key = |k: &Option<Spanned<Vec<String>>>| k.as_ref().map(|k| k.value.clone());
    if key(&rs.key).is_none() || key(&rs.key) != forward_key {
        return Err(at(
            reverse,
            rs.table.as_ref(),
            format!(
                "the reverse pipeline's [source] key must be the forward target's key columns, {}; it is {}",
                forward_key.unwrap_or_default().join(", "),
                key(&rs.key).map_or("not set".to_string(), |k| k.join(", "))
            ),
        ));
    }
    Ok(())
}

/// A location for a message, its password redacted.
fn shown(l: &Location) -> String {
    match l {
        Location::Sqlite { path } => format!("SQLite file {}", path.display()),
        Location::Postgres { url, schema } => format!("{} schema {schema}", url.shown()),
        Location::Mysql { url, schema } => format!("{} database {schema}", url.shown()),
        Location::Files { .. } => "files".to_string(),
    }
}
