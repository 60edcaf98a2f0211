//! Migration sets: a directory of numbered steps (SQL with up and down, data pipelines,
//! or both) applied to one target in order, with a history in the target, one lock per
//! target, and a record of every statement's completion, so that a set is never
//! half-applied without the history saying exactly where it stopped.
//!
//! - `set.rs` reads and checks a set's directory; `statements.rs` splits SQL.
//! - `history.rs` is the history table, and runs a step's statements with its record.
//! - `lock.rs` takes the target's set lock.
//! - `apply.rs` is `up`, `down` and `baseline`; `status.rs` is `status`.
//! - `online.rs` is what an online step adds to them (capture, catch-up and cut-over in
//!   `up`, the swap-back in `down`) and `finalize`.
//! - `deps.rs` says which steps depend on which: `up` applies independent steps at the
//!   same time.
//! - `plan.rs` is `plan`: the statements `up` or `down` would execute, with their locks;
//!   `online_plan.rs` what an online step adds to them.
//! - `rollback.rs` is what `down` checks of a data step's source before it drops rows;
//!   `test_rollback.rs` is `test-rollback`, up, down and up on a throwaway copy, compared
//!   by `snapshot.rs`.
//!
//! The format is described in `docs/migrations.md`.

mod apply;
mod changes;
mod deps;
mod down;
mod history;
mod lock;
mod online;
mod online_plan;
mod plan;
mod rollback;
mod set;
mod snapshot;
mod statements;
mod status;
mod test_rollback;

use std::time::Duration;

pub use self::apply::{
    BaselineReport, DownReport, MigrateOptions, StepOutcome, UpReport, baseline, up,
};
pub use self::down::down;
pub use self::history::{PG_SCHEMA, Phase, Record, State};
pub use self::online::{FinalizeReport, Finalized, OnlineOutcome, finalize};
pub use self::plan::{Entry, PipelinePlan, PlanOptions, SetPlan, StepPlan, plan, plan_pipeline};
pub use self::set::{DEFAULT_PARALLEL, MigrationSet, SET_FILE, SqlFile, Step};
pub use self::statements::Statement;
pub use self::status::{StatusReport, StepStatus, status};
pub use self::test_rollback::{
    DEFAULT_SAMPLE, TableFigures, TestRollbackOptions, TestRollbackReport, test_rollback,
};
use crate::checkpoint::Holder;
use crate::config::Diagnostics;
use crate::run::Observer;

/// What went wrong with a set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetError {
    /// The set's files are invalid: every problem of every file.
    #[error("{}", invalid_text(.0))]
    Invalid(Vec<Diagnostics>),
    /// The command refuses to go on, and says why; nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// A step failed; the history records where.
    #[error("{step}: {source}")]
    Step {
        /// `step 2 (add_email)`.
        step: String,
        /// Why.
        #[source]
        source: crate::Error,
    },
    /// A library error outside any step (connecting, the lock, the history).
    #[error(transparent)]
    Lib(#[from] crate::Error),
}

fn invalid_text(all: &[Diagnostics]) -> String {
    all.iter()
        .map(|d| {
            let text = d.to_string();
            // A file with no text (a misnamed or duplicate step) has no location to show.
            text.split_once('\n')
                .map_or(text.clone(), |(_, rest)| rest.to_string())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Progress of a set, as the library reports it; the CLI draws it.
#[derive(Debug, Clone)]
pub enum SetEvent {
    /// Waiting for the target's set lock, which `holder` holds, up to `limit`.
    WaitingForLock {
        /// Who holds it.
        holder: Holder,
        /// How long this process waits.
        limit: Duration,
    },
    /// A step starts (or resumes, when `resumed`).
    StepStarted {
        /// The step's number.
        step: u64,
        /// Its name.
        name: String,
        /// `up` or `down`.
        direction: &'static str,
        /// Whether an earlier, interrupted attempt is continued.
        resumed: bool,
    },
    /// A step's data move starts; its chunks report through the run observer.
    DataStarted {
        /// The step's number.
        step: u64,
        /// The pipeline's name.
        pipeline: String,
    },
    /// An online step starts its cut-over (`up`) or its swap-back (`down`): a last
    /// catch-up, then the lock, the drain and the renames.
    Swapping {
        /// The step's number.
        step: u64,
        /// `cut-over` or `swap-back`.
        what: &'static str,
        /// The table whose name changes hands.
        table: String,
    },
    /// A step ended.
    StepDone(Box<StepOutcome>),
    /// test-rollback starts a stage (`first up`, `down`, `second up`).
    Stage(String),
    /// A statement was executed: the set's lock and history, a step's SQL, a data move's
    /// table DDL, its load as one entry, and its post-load DDL. Reported in the order
    /// they ran, once the operation they belong to (a section, a history write, a data
    /// move) ended; `rowshift plan` lists the same entries beforehand.
    Executed(Box<Entry>),
}

/// Hears a set's progress. `run_observer` hears the data moves' chunk events.
///
/// `up` applies independent steps at the same time: events come from several threads,
/// in order per step.
pub trait SetObserver: Send + Sync {
    /// One event.
    fn on_set_event(&self, event: &SetEvent);
    /// The observer for the data moves.
    fn run_observer(&self) -> &dyn Observer;
    /// A chunk event of step `step`'s data move. By default `run_observer` hears it; an
    /// observer that shows several steps' moves at once tells them apart here.
    fn on_run_event(&self, step: u64, event: &crate::run::Event) {
        let _ = step;
        self.run_observer().on_event(event);
    }
}

/// A [`SetObserver`] that ignores everything.
pub struct NoopSetObserver;

impl SetObserver for NoopSetObserver {
    fn on_set_event(&self, _: &SetEvent) {}
    fn run_observer(&self) -> &dyn Observer {
        &crate::run::NoopObserver
    }
}

/// Aborts the process, as a crash would, when `ROWSHIFT_FAULT` holds `step=N` and
/// `crash=POINT` for this step and point: for tests of what a kill there leaves behind.
/// The points are `SECTION:K` (statement K of the step's `up`, `after` or `down` section
/// ran, its record is not yet committed), `SECTION-recorded:K` (statement K's record
/// committed, MySQL), `data` (before the data move starts), `reverse` (down's reverse
/// move is done, the record still says it runs) and `done` (the step's record is
/// committed, the next step has not started). An online step adds `catchup` (the
/// catch-up is recorded, not begun), `cutover` (the swap committed, the record still
/// says it runs), `swapback` (down's swap-back committed, likewise) and `finalize`
/// (the old table dropped, the step not yet recorded finalized).
pub(crate) fn crash_point(step: u64, point: &str) {
    let Ok(spec) = std::env::var("ROWSHIFT_FAULT") else {
        return;
    };
    let mut at_step = None;
    let mut crash = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("step", v)) => at_step = v.parse::<u64>().ok(),
            Some(("crash", v)) => crash = Some(v),
            _ => {}
        }
    }
    if at_step == Some(step) && crash == Some(point) {
        std::process::abort();
    }
}
