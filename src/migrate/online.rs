//! Online steps (docs/migrations.md, "Online steps"): a data step whose pipeline says
//! `[online] enabled = true` is applied as an online move of one table in the set's
//! target. `up` installs the change capture before the copy plans its chunks, catches up
//! once they are done (phase `catchup`), runs the `after` section on the new table under
//! its own name, and cuts over (phase `cutover`): the new table takes the source table's
//! name, the old one becomes `<table>__v1`, and the reverse capture of the step's
//! `NNN_name.down.toml` is installed on the new table inside the swap. `down` swaps back
//! (phase `swapback`) before the step's down section; `finalize` drops the old tables
//! and the captures.
//!
//! Each phase is recorded before it starts, and each resumed one first looks at which of
//! the step's tables exist: a kill after a swap committed and before the history said so
//! is told by the tables' names (the new table's own name gone, `<table>__v1` there), not
//! run twice.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::apply::{MigrateOptions, Session};
use super::history::{History, Phase, Record, State};
use super::set::{MigrationSet, Step};
use super::{SetError, SetEvent, SetObserver, crash_point};
use crate::chunk::Chunk;
use crate::config::{Pipeline, redact};
use crate::online::{OLD_SUFFIX, Online, OnlineReport, Reverse};
use crate::plan::Plan;
use crate::run::RunHooks;
use crate::sink::Sink;
use crate::{Error, Result};

/// What an online step's catch-up and cut-over did (`up`), or its swap-back (`down`).
#[derive(Debug, Clone, Serialize)]
pub struct OnlineOutcome {
    /// The catch-up that ended the copy (`up`), when this process ran it.
    pub catch_up: Option<OnlineReport>,
    /// The cut-over (`up`) or the swap-back (`down`), when this process ran it; `None`
    /// when an earlier process had swapped and was killed before the history said so.
    pub swap: Option<OnlineReport>,
    /// The source table: after `up` the new table's name, after `down` the old one's
    /// again.
    pub table: String,
    /// Where the other table is kept: `<table>__v1` after `up` (until `finalize`), the
    /// new table's own name after `down`.
    pub kept: String,
    /// Whether the step has a reverse pipeline, so that `down` can swap it back.
    pub reverse: bool,
}

/// What `finalize` dropped.
#[derive(Debug, Clone, Serialize)]
pub struct FinalizeReport {
    /// The set's name.
    pub set: String,
    /// The target, redacted.
    pub target: String,
    /// The steps finalized now, in order.
    pub steps: Vec<Finalized>,
    /// Online steps finalized by an earlier `finalize`.
    pub already: Vec<u64>,
}

/// One step `finalize` finalized.
#[derive(Debug, Clone, Serialize)]
pub struct Finalized {
    /// The step's number.
    pub step: u64,
    /// Its name.
    pub name: String,
    /// The old table dropped.
    pub old_table: String,
}

/// The tables of an online step.
pub(super) struct Tables {
    /// The source table: the live one.
    pub source: String,
    /// The new table's own name (the pipeline's target).
    pub target: String,
    /// The name the cut-over gives the old table.
    pub old: String,
}

impl Tables {
    pub(super) fn of(pipeline: &Pipeline) -> Tables {
        let name = |t: Option<&crate::config::Spanned<String>>| {
            t.map_or_else(String::new, |t| t.value.clone())
        };
        let source = name(pipeline.source.table.as_ref());
        Tables {
            old: format!("{source}{OLD_SUFFIX}"),
            target: name(pipeline.target.table.as_ref()),
            source,
        }
    }

    /// Whether the cut-over's swap committed: the new table's own name is gone and the
    /// old table is under `<table>__v1`. (Before it, the new table has its own name; a
    /// MariaDB cut-over killed before its rename leaves an empty sentry under
    /// `<table>__v1` beside it, which the next cut-over drops.)
    fn swapped(&self, history: &History) -> Result<bool> {
        Ok(history.has_table(&self.old)? && !history.has_table(&self.target)?)
    }

    /// Whether `down`'s swap-back committed: the new table has its own name again and
    /// `<table>__v1` is gone.
    fn swapped_back(&self, history: &History) -> Result<bool> {
        Ok(!history.has_table(&self.old)? && history.has_table(&self.target)?)
    }
}

/// The online move joined to a step's run: the capture installed before the chunks are
/// planned, and, once they are done, the history records the catch-up before it starts.
/// The run does not cut over (the step's own phase does, after its `after` section).
pub(super) struct StepHooks {
    online: Online,
    history: Arc<History>,
    /// The step's record, whose phase the catch-up moves.
    record: Mutex<Record>,
}

impl std::fmt::Debug for StepHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepHooks")
            .field("online", &self.online)
            .finish()
    }
}

impl RunHooks for StepHooks {
    fn before_plan(&self, plan: &Plan, sink: &dyn Sink, fresh: bool) -> Result<()> {
        RunHooks::before_plan(&self.online, plan, sink, fresh)
    }

    fn after_copy(&self, plan: &Plan, sink: &dyn Sink, chunks: &[Chunk]) -> Result<()> {
        let step = {
            let mut r = self.record.lock().unwrap_or_else(|p| p.into_inner());
            if r.phase != Phase::CatchUp {
                r.phase = Phase::CatchUp;
                r.statements_done = 0;
                self.history.save(&r)?;
            }
            r.step
        };
        crash_point(step, "catchup");
        self.online
            .catch_up(plan, sink, chunks, plan.pipeline.online.max_lag_rows)
    }
}

impl StepHooks {
    /// The phase the run left the record in.
    pub(super) fn phase(&self) -> Phase {
        self.record.lock().unwrap_or_else(|p| p.into_inner()).phase
    }

    /// What the catch-up did.
    pub(super) fn report(&self) -> OnlineReport {
        self.online.report()
    }
}

/// The hooks of an online step's run, and whether the run must copy again from nothing:
/// a checkpoint whose capture triggers are gone (dropped, or the table made again) may
/// lack changes made since they went, and one whose source was truncated since lacks
/// the rows the `TRUNCATE` removed, which no key in the log names.
pub(super) fn join(
    history: &Arc<History>,
    plan: &Plan,
    sink: &dyn Sink,
    record: &Record,
) -> Result<(Arc<StepHooks>, bool)> {
    let online = Online::open(plan, None)?;
    let store = crate::run::checkpoint_store(plan, sink);
    let checkpoint = store.load();
    let closed = store.close();
    let restart = checkpoint?.is_some() && must_copy_again(&online)?;
    closed?;
    Ok((
        Arc::new(StepHooks {
            online,
            history: history.clone(),
            record: Mutex::new(record.clone()),
        }),
        restart,
    ))
}

/// Whether the copy must be made again before the move can go on: its capture
/// triggers are gone, or its source was truncated since they were installed.
fn must_copy_again(online: &Online) -> Result<bool> {
    let capture = online.capture();
    Ok(!capture.installed()? || capture.truncated()?.is_some())
}

/// What the cut-over phase found.
pub(super) enum Cut {
    /// Swapped: by this process (its report), or by one killed before recording it.
    Swapped(Option<Box<OnlineReport>>),
    /// Not swapped, and the capture triggers are gone or the source was truncated: the
    /// copy is made again.
    Recopy,
}

impl Session<'_> {
    /// The cut-over of an online step, in the set's target: as `rowshift cutover` does
    /// it, with the step's reverse pipeline's capture installed in the swap. A swap an
    /// earlier process committed is finished, not done again.
    pub(super) fn cut_over(
        &self,
        step: &Step,
        record: &mut Record,
        opts: &MigrateOptions,
    ) -> Result<Cut, SetError> {
        let pipeline = step.pipeline.as_ref().expect("a data step");
        let tables = Tables::of(pipeline);
        self.observer.on_set_event(&SetEvent::Swapping {
            step: step.number,
            what: "cut-over",
            table: tables.source.clone(),
        });
        let out = (|| {
            if tables.swapped(&self.history)? {
                finish_swap(pipeline)?;
                return Ok(Cut::Swapped(None));
            }
            let plan = Plan::build(pipeline.clone())?;
            let sink = plan.open_sink()?;
            let again = must_copy_again(&Online::open(&plan, None)?);
            if again? {
                sink.finish()?;
                return Ok(Cut::Recopy);
            }
            crate::online::cutover_pipeline(&plan, sink.as_ref(), opts.lock_wait, None)
                .map(|r| Cut::Swapped(Some(Box::new(r))))
        })();
        out.or_else(|e| {
            record.state = State::Failed;
            record.error = Some(redact(&e.to_string()));
            self.save(record)?;
            Err(SetError::Step {
                step: step.label(),
                source: e,
            })
        })
    }

    /// `down`'s swap-back of an online step: the old table caught up from the reverse
    /// capture, then swapped back under the lock with its last changes drained and read
    /// back (`rowshift down PIPELINE`). A swap-back an earlier process committed is
    /// finished, not done again.
    pub(super) fn swap_back(
        &self,
        step: &Step,
        record: &mut Record,
        opts: &MigrateOptions,
    ) -> Result<Option<OnlineReport>, SetError> {
        let pipeline = step.pipeline.as_ref().expect("a data step");
        let tables = Tables::of(pipeline);
        self.observer.on_set_event(&SetEvent::Swapping {
            step: step.number,
            what: "swap-back",
            table: tables.source.clone(),
        });
        let out = (|| {
            let plan = crate::online::plan_after_cutover(pipeline)?;
            let sink = plan.open_sink()?;
            if tables.swapped_back(&self.history)? {
                remove_captures(&plan, sink.as_ref())?;
                return Ok(None);
            }
            crate::online::swap_back(&plan, sink.as_ref(), opts.lock_wait, opts.force, None)
                .map(Some)
        })();
        out.or_else(|e| {
            // Still reverting in its swap-back: the next down goes on from there.
            record.error = Some(redact(&e.to_string()));
            self.save(record)?;
            Err(SetError::Step {
                step: step.label(),
                source: e,
            })
        })
    }
}

/// Ends a cut-over whose swap committed before its process was killed: what the
/// cut-over does after the swap. MariaDB drops the forward triggers after its `RENAME
/// TABLE` (they went with the old table); and no change may have been logged after the
/// position replayed, which would be a write the new table lacks.
fn finish_swap(pipeline: &Pipeline) -> Result<()> {
    let plan = crate::online::plan_after_cutover(pipeline)?;
    let sink = plan.open_sink()?;
    let online = Online::open(&plan, None)?;
    let capture = online.capture();
    capture.drop_triggers()?;
    let at = sink.replay_position(&plan.pipeline.name)?.map(|p| p.0);
    let lag = capture.lag(at)?;
    sink.finish()?;
    if lag.rows > 0 {
        return Err(Error::Check(format!(
            "{}: the cut-over swapped, but {} changes were logged after position {}, the last replayed into the new table: they are not in it",
            capture.describe(),
            lag.rows,
            at.map_or("start".to_string(), |p| p.to_string())
        )));
    }
    Ok(())
}

/// Removes both captures of a swapped-back step and their replay positions, as the
/// swap-back does once it committed.
fn remove_captures(plan: &Plan, sink: &dyn Sink) -> Result<()> {
    if let Some(r) = Reverse::load(plan, false)? {
        r.capture().remove()?;
        sink.forget_replay(r.name())?;
    }
    Online::open(plan, None)?.capture().remove()?;
    sink.forget_replay(&plan.pipeline.name)?;
    sink.finish()
}

/// The online steps about to be reverted that cannot be swapped back, each with why:
/// checked before `down` changes anything.
pub(super) fn down_refusals(
    set: &MigrationSet,
    history: &History,
    targets: &[Record],
) -> Result<Vec<String>, SetError> {
    let mut out = Vec::new();
    for r in targets.iter().filter(|r| r.state.is_applied()) {
        let Some(step) = set.step(r.step).filter(|s| s.is_online()) else {
            continue;
        };
        let pipeline = step.pipeline.as_ref().expect("an online step moves data");
        let t = Tables::of(pipeline);
        if r.phase == Phase::Finalized {
            out.push(format!(
                "{} was finalized (`rowshift finalize`): its old table {} was dropped, so there is nothing to swap back to; revert its change with a new step instead",
                step.label(),
                t.old
            ));
            continue;
        }
        if step.reverse.is_none() {
            out.push(format!(
                "{} is an online step without a reverse pipeline ({:03}_{}.down.toml): writes made to table {} since its cut-over are not in the old table {}, so swapping back would lose them",
                step.label(),
                step.number,
                step.name,
                t.source,
                t.old
            ));
            continue;
        }
        if !history.has_table(&t.old)? {
            out.push(format!(
                "{}: its old table {} is gone (dropped since the cut-over), so there is nothing to swap back to",
                step.label(),
                t.old
            ));
            continue;
        }
        let as_step = |e: Error| SetError::Step {
            step: step.label(),
            source: e,
        };
        let plan = crate::online::plan_after_cutover(pipeline).map_err(as_step)?;
        let installed = match Reverse::load(&plan, false).map_err(as_step)? {
            Some(rev) => rev.capture().installed().map_err(as_step)?,
            None => false,
        };
        if !installed {
            out.push(format!(
                "{}: the reverse capture on table {} is gone (its triggers were dropped, or the table was made again), so writes made since it went may be missing from the old table {}: swapping back could lose them",
                step.label(),
                t.source,
                t.old
            ));
        }
    }
    Ok(out)
}

/// `rowshift finalize DIR`: drops the old table (`<table>__v1`), the change logs and the
/// reverse capture of every applied online step up to `opts.to` (all without it) that
/// is not finalized yet, and records each as `finalized`: from then on `down` refuses
/// to swap it back. Taken under the set's lock; refused while an applied step changed.
pub fn finalize(
    set: &MigrationSet,
    opts: &MigrateOptions,
    observer: &dyn SetObserver,
) -> Result<FinalizeReport, SetError> {
    let session = Session::open(set, opts, observer)?;
    let out = finalize_in(&session, opts);
    session.close();
    out
}

fn finalize_in(session: &Session<'_>, opts: &MigrateOptions) -> Result<FinalizeReport, SetError> {
    let set = session.set;
    let records = session.records()?;
    session.check_changes(&records, false, "finalize")?;
    let mut report = FinalizeReport {
        set: set.name.clone(),
        target: set.shown.clone(),
        steps: Vec::new(),
        already: Vec::new(),
    };
    for step in set.steps.iter().filter(|s| s.is_online()) {
        if opts.to.is_some_and(|to| step.number > to) {
            continue;
        }
        let Some(record) = records.get(&step.number) else {
            continue;
        };
        match (record.state, record.phase) {
            (State::Applied, Phase::Done) => {}
            (State::Applied, Phase::Finalized) => {
                report.already.push(step.number);
                continue;
            }
            _ => continue,
        }
        let pipeline = step.pipeline.as_ref().expect("an online step moves data");
        let as_step = |e: Error| SetError::Step {
            step: step.label(),
            source: e,
        };
        let old = (|| {
            let plan = crate::online::plan_after_cutover(pipeline)?;
            let sink = plan.open_sink()?;
            let old = crate::online::finalize(&plan, sink.as_ref())?;
            sink.finish()?;
            Ok(old)
        })()
        .map_err(as_step)?;
        crash_point(step.number, "finalize");
        let mut r = record.clone();
        r.phase = Phase::Finalized;
        session.save(&r)?;
        report.steps.push(Finalized {
            step: step.number,
            name: step.name.clone(),
            old_table: old,
        });
    }
    Ok(report)
}
