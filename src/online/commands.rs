//! What the commands that act on an online move do: `status`'s capture lines,
//! `cutover`, `catchup`, `down` (swapping a cut-over back) and `finalize`. Each takes
//! the pipeline's run lock, so that none of them runs beside a `rowshift run` of it.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::Serialize;

use super::{
    OLD_SUFFIX, Online, OnlineReport, Reverse, Swap, cutover_with_reverse, same_database,
    source_table, throttle,
};
use crate::chunk::Chunk;
use crate::config::Pipeline;
use crate::plan::Plan;
use crate::sink::{Prepare, Sink};
use crate::source::capture::{Lag, Position};
use crate::{Error, Result};

/// The pipeline as the commands after its cut-over need it: its names, its key and the
/// tables it names, with the target columns cut to those that hold the key and no
/// filter or checks. After the cut-over the source table's name is the new table's,
/// which may lack columns the pipeline reads; compiled against it whole, the pipeline
/// would fail. The capture, the replay positions, the run lock and the checkpoint are
/// named by what this keeps.
pub fn plan_after_cutover(pipeline: &Pipeline) -> Result<Plan> {
    let mut p = pipeline.clone();
    let key: Vec<String> = p
        .source
        .key
        .as_ref()
        .map_or(Vec::new(), |k| k.value.clone());
    p.target
        .columns
        .retain(|c| key.contains(&c.expr.value.trim().to_string()));
    p.target.indexes.clear();
    p.target.foreign_keys.clear();
    p.target.constraints.clear();
    p.filter = None;
    p.checks.clear();
    Plan::build(p)
}

/// The plan `status`, `cutover`, `catchup`, `down` and `finalize` work with: the whole
/// pipeline while its source table is the old one, or, once a cut-over in one database
/// has given the source's name to the new table (so that the whole pipeline no longer
/// compiles against it: a column it reads is gone), [`plan_after_cutover`]'s. The
/// error of the whole pipeline stands when that is not so.
pub fn plan_for_commands(pipeline: Pipeline) -> Result<Plan> {
    let whole = match Plan::build(pipeline.clone()) {
        Ok(plan) => return Ok(plan),
        Err(e) => e,
    };
    if !pipeline.online.enabled {
        return Err(whole);
    }
    let Ok(moved) = plan_after_cutover(&pipeline) else {
        return Err(whole);
    };
    let cut_over = same_database(&moved)
        && Online::open(&moved, None)
            .and_then(|o| o.capture().installed())
            .is_ok_and(|installed| !installed);
    if cut_over { Ok(moved) } else { Err(whole) }
}

/// Where an online move stands: the replay position recorded in the target, the
/// changes replayed so far, and the lag.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureStatus {
    /// The source table and its change log.
    pub capture: String,
    /// Whether the triggers are in place (not after a cut-over).
    pub installed: bool,
    /// Whether the change log exists: not yet when a run was stopped before it
    /// installed the capture, and no longer after `finalize`.
    pub logged: bool,
    /// The last position replayed into the target.
    pub position: Option<Position>,
    /// Changes replayed so far, over every run.
    pub replayed: u64,
    /// What waits.
    pub lag: Lag,
    /// A `TRUNCATE` of the source table since the capture began, which refuses the
    /// cut-over.
    pub truncated: Option<String>,
    /// The pause flag (`rowshift pause`), when set: the catch-up waits.
    pub paused: Option<String>,
    /// Why the source server is too busy for the catch-up now, by the `[online] limits.
    pub throttled: Option<String>,
    /// After a cut-over with a reverse pipeline: the reverse capture on the new table,
    /// which keeps the old one current for `rowshift down`.
    pub reverse: Option<ReverseStatus>,
}

/// The reverse capture's state after a cut-over.
#[derive(Debug, Clone, Serialize)]
pub struct ReverseStatus {
    /// The live (new) table and the reverse change log.
    pub capture: String,
    /// Whether its triggers are on the live table.
    pub installed: bool,
    /// The old table it keeps current.
    pub old_table: String,
    /// The last position replayed into the old table.
    pub position: Option<Position>,
    /// Changes replayed back so far.
    pub replayed: u64,
    /// What waits to be replayed back.
    pub lag: Lag,
}

/// The capture's state for `rowshift status`.
pub fn status(plan: &Plan, sink: &dyn Sink) -> Result<CaptureStatus> {
    let online = Online::open(plan, None)?;
    let recorded = sink.replay_position(&plan.pipeline.name)?;
    let position = recorded.map(|r| r.0);
    let installed = online.capture.installed()?;
    let logged = installed || online.capture.log_exists()?;
    let reverse = match (installed, same_database(plan)) {
        (false, true) => Reverse::load(plan, false)?
            .map(|r| reverse_status(&r, plan, sink))
            .transpose()?,
        _ => None,
    };
    Ok(CaptureStatus {
        capture: online.capture.describe(),
        installed,
        logged,
        position,
        replayed: recorded.map_or(0, |r| r.1),
        lag: if logged {
            online.capture.lag(position)?
        } else {
            Lag::default()
        },
        // After a cut-over the source's name is the new table's: nothing to detect.
        truncated: if installed {
            online.capture.truncated()?
        } else {
            None
        },
        paused: throttle::paused(&plan.pipeline.file),
        throttled: online.capture.busy(&plan.pipeline.online)?,
        reverse,
    })
}

fn reverse_status(r: &Reverse, plan: &Plan, sink: &dyn Sink) -> Result<ReverseStatus> {
    let capture = r.capture();
    let recorded = sink.replay_position(r.name())?;
    let position = recorded.map(|p| p.0);
    let installed = capture.installed()?;
    Ok(ReverseStatus {
        capture: capture.describe(),
        installed,
        old_table: format!("{}{OLD_SUFFIX}", source_table(plan)),
        position,
        replayed: recorded.map_or(0, |p| p.1),
        lag: if installed {
            capture.lag(position)?
        } else {
            Lag::default()
        },
    })
}

/// `rowshift finalize`: drops the old table a cut-over kept, the change log, and the
/// reverse capture (its triggers and log). Refused before a cut-over (the source table
/// is still the live one).
pub fn finalize(plan: &Plan, sink: &dyn Sink) -> Result<String> {
    let online = Online::open(plan, None)?;
    let table = source_table(plan);
    if same_database(plan) && online.capture.installed()? {
        return Err(Error::Unsupported(format!(
            "{}: the capture triggers are still on table {table}: there was no cut-over, so there is no old table to drop; run `rowshift cutover {}` first",
            online.capture.describe(),
            plan.pipeline.name
        )));
    }
    let old = format!("{table}{OLD_SUFFIX}");
    if same_database(plan) {
        // The reverse triggers first: once the old table is gone, nothing may be
        // written for it.
        if let Some(r) = Reverse::load(plan, false)? {
            r.capture().remove()?;
            sink.forget_replay(r.name())?;
        }
        sink.drop_table(&old)?;
        // The reverse replay's quarantine: rows the live table holds, refused only on
        // their way back to the table now dropped.
        sink.drop_table(&format!("{old}_rejects"))?;
    }
    online.capture.remove()?;
    sink.forget_replay(&plan.pipeline.name)?;
    Ok(old)
}

/// Runs `f` under the pipeline's run lock, with the chunks of its checkpoint, which
/// must all be done. `lock_wait` is how long to wait for a run that holds the lock.
fn with_done_run<T>(
    plan: &Plan,
    sink: &dyn Sink,
    lock_wait: Duration,
    f: impl FnOnce(Vec<Chunk>) -> Result<T>,
) -> Result<T> {
    let store = crate::run::checkpoint_store(plan, sink);
    let outcome = (|| {
        let _lock = crate::run::take_lock(store.as_ref(), &crate::run::NoopObserver, lock_wait)?;
        let name = &plan.pipeline.name;
        let checkpoint = store.load()?.ok_or_else(|| {
            Error::Unsupported(format!(
                "no checkpoint for pipeline {name} in {}: run it first (`rowshift run`), which copies the table while capturing its changes",
                store.describe()
            ))
        })?;
        let pending = checkpoint
            .chunks
            .iter()
            .filter(|c| c.state != crate::checkpoint::ChunkState::Done)
            .count();
        if pending > 0 {
            return Err(Error::Unsupported(format!(
                "pipeline {name} has {pending} chunks not done; finish the copy (`rowshift run`) first"
            )));
        }
        f(checkpoint.chunks.into_iter().map(|c| c.chunk).collect())
    })();
    let closed = store.close();
    let out = outcome?;
    closed?;
    Ok(out)
}

/// `rowshift cutover`: under the pipeline's run lock, once every chunk is done, catches
/// up and cuts over (see [`Online::cutover`]). `lock_wait` is how long to wait for a run
/// that holds the run lock.
pub fn cutover_pipeline(
    plan: &Plan,
    sink: &dyn Sink,
    lock_wait: Duration,
    cancel: Option<Arc<AtomicBool>>,
) -> Result<OnlineReport> {
    let online = Online::open(plan, cancel)?;
    if let Some(why) = throttle::paused(&plan.pipeline.file) {
        return Err(Error::Unsupported(format!(
            "pipeline {} is {why}: run `rowshift resume` before the cut-over",
            plan.pipeline.name
        )));
    }
    with_done_run(plan, sink, lock_wait, |chunks| {
        if !online.capture.installed()? {
            return Err(Error::Unsupported(format!(
                "{}: the capture triggers are not on the source table: an earlier cut-over swapped it already, or the table was dropped and created again (changes since may be missing from the target: run with --restart); nothing to cut over",
                online.capture.describe()
            )));
        }
        cutover_with_reverse(&online, plan, sink, &chunks)?;
        Ok(online.report())
    })
    .and_then(|r| sink.finish().map(|()| r))
}

/// What `rowshift catchup` replayed, and in which direction.
#[derive(Debug, Clone, Serialize)]
pub struct CatchUp {
    /// `forward` before the cut-over (source into the new table), `reverse` after it
    /// (the new table back into the old one).
    pub direction: &'static str,
    /// What the replay did.
    pub report: OnlineReport,
}

/// `rowshift catchup`: replays the changes logged so far, until fewer than `[online]
/// max_lag_rows` wait. Before the cut-over that is
/// the forward catch-up a run ends with; after it, the reverse capture's changes into
/// the old table, which keeps it current for `rowshift down`.
pub fn catch_up_pipeline(
    plan: &Plan,
    sink: &dyn Sink,
    lock_wait: Duration,
    cancel: Option<Arc<AtomicBool>>,
) -> Result<CatchUp> {
    let online = Online::open(plan, cancel.clone())?;
    with_done_run(plan, sink, lock_wait, |chunks| {
        // Until fewer than `max_lag_rows` wait, as a run's catch-up: a table that is
        // written all the time may never show none waiting.
        let until = plan.pipeline.online.max_lag_rows;
        if online.capture.installed()? {
            online.catch_up(plan, sink, &chunks, until)?;
            return Ok(CatchUp {
                direction: "forward",
                report: online.report(),
            });
        }
        let (rplan, rsink, ronline) = reverse_after_swap(plan, cancel)?;
        ronline.catch_up(&rplan, rsink.as_ref(), &[], until)?;
        rsink.finish()?;
        Ok(CatchUp {
            direction: "reverse",
            report: ronline.report(),
        })
    })
    .and_then(|r| sink.finish().map(|()| r))
}

/// The reverse move of a cut-over pipeline, ready to replay: its plan, its sink (the
/// old table, its quarantine made sure of) and its capture, which must be installed.
fn reverse_after_swap(
    plan: &Plan,
    cancel: Option<Arc<AtomicBool>>,
) -> Result<(Plan, Arc<dyn Sink>, Online)> {
    let table = source_table(plan);
    let none = || {
        Error::Unsupported(format!(
            "pipeline {}: no reverse capture on table {table}: no cut-over swapped it, it was swapped back already, or the cut-over ran without [online] reverse (then writes since it are not in {table}{OLD_SUFFIX}); nothing was changed",
            plan.pipeline.name
        ))
    };
    if !same_database(plan) {
        return Err(Error::Unsupported(format!(
            "pipeline {}: source and target are different databases: a cut-over between them renames nothing, so there is nothing to swap back; point the application at the source again",
            plan.pipeline.name
        )));
    }
    let reverse = Reverse::load(plan, false)?.ok_or_else(none)?;
    if !reverse.capture().installed()? {
        return Err(none());
    }
    let (rplan, ronline) = reverse.after_swap(cancel)?;
    let rsink = rplan.open_sink()?;
    // The old table is there (renamed by the cut-over): this keeps it as it is, and
    // makes sure of its quarantine, where a row the reverse move refuses goes.
    rsink.prepare(Prepare::Resume)?;
    Ok((rplan, rsink, ronline))
}

/// `rowshift down PIPELINE`: swaps a cut-over back, with no write lost. Catches the old
/// table up from the reverse capture, takes the lock on the live table, drains the
/// last changes into the old table and reads them back, and renames the new table back
/// to its own name and the old one to the source's, in one step as the cut-over did.
/// The forward and reverse captures are then removed. Refused while a row the reverse
/// pipeline rejected stands in its quarantine (the old table would lack it), unless
/// `force`.
pub fn swap_back(
    plan: &Plan,
    sink: &dyn Sink,
    lock_wait: Duration,
    force: bool,
    cancel: Option<Arc<AtomicBool>>,
) -> Result<OnlineReport> {
    let forward = Online::open(plan, None)?;
    if let Some(why) = throttle::paused(&plan.pipeline.file) {
        return Err(Error::Unsupported(format!(
            "pipeline {} is {why}: run `rowshift resume` before swapping back",
            plan.pipeline.name
        )));
    }
    let (rplan, rsink, ronline) = reverse_after_swap(plan, cancel)?;
    let rejected = || -> Result<()> {
        let n = rsink.read_quarantine()?.len();
        if n > 0 && !force {
            return Err(Error::Check(format!(
                "{}: {n} rows written since the cut-over were rejected by the reverse pipeline {} and are in {}, not in the old table: swapping back would lose them; fix the reverse pipeline and run `rowshift down` again (they are replayed), or pass --force to swap back without them",
                rsink.describe(),
                rplan.pipeline.file.display(),
                rsink.quarantine()
            )));
        }
        Ok(())
    };
    let target_table = plan
        .pipeline
        .target
        .table
        .as_ref()
        .map(|t| t.value.clone())
        .unwrap_or_default();
    let report = with_done_run(plan, sink, lock_wait, |_| {
        // Caught up first, so that a rejected row fixed since is replayed (and leaves
        // the quarantine) before the quarantine is asked; asked again under the lock.
        ronline.catch_up(
            &rplan,
            rsink.as_ref(),
            &[],
            rplan.pipeline.online.max_lag_rows,
        )?;
        rejected()?;
        ronline.cutover(
            &rplan,
            rsink.as_ref(),
            &[],
            &Swap {
                old: target_table,
                reverse: None,
                guard: Some(&rejected),
            },
        )?;
        // Swapped back: the source table is the live one again, and neither capture
        // is wanted. The changes a forward catch-up would need went with its triggers
        // at the cut-over, so moving again starts with `rowshift run --restart`.
        ronline.capture().remove()?;
        sink.forget_replay(&rplan.pipeline.name)?;
        forward.capture().remove()?;
        sink.forget_replay(&plan.pipeline.name)?;
        // An empty reverse quarantine goes; one that holds rows (`--force`) is the only
        // record of them and stays.
        if rsink.read_quarantine()?.is_empty() {
            sink.drop_table(&format!("{}{OLD_SUFFIX}_rejects", source_table(plan)))?;
        }
        Ok(ronline.report())
    })?;
    rsink.finish()?;
    sink.finish()?;
    Ok(report)
}
