//! `status DIR`: each step of a set with where the history says it stands. Reads only:
//! no lock, and a target without a history shows every step pending.

use serde::Serialize;

use super::SetError;
use super::changes::changes;
use super::history::{History, Phase, Record, State};
use super::set::{MigrationSet, Step};
use crate::config::Location;
use crate::runtime::IoRuntime;

/// One step's line in `status`.
#[derive(Debug, Clone, Serialize)]
pub struct StepStatus {
    /// The step's number.
    pub step: u64,
    /// Its name (the history's, for a step whose file is gone).
    pub name: String,
    /// `sql`, `data` or `sql+data`.
    pub kind: String,
    /// `applied`, `baseline`, `pending`, `changed`, `failed`, `running` (or interrupted),
    /// `reverting`, or `missing` (in the history, not in the set).
    pub status: String,
    /// What changed, for a changed step; where it stopped, for one not finished.
    pub note: Option<String>,
    /// The history's row, when there is one.
    pub record: Option<Record>,
}

/// What `status DIR` shows.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The set's name.
    pub set: String,
    /// The target, redacted.
    pub target: String,
    /// Every step of the set and of the history, in order.
    pub steps: Vec<StepStatus>,
}

impl StatusReport {
    /// The last step of the applied run from the set's first, if any: `up` applies
    /// independent steps at once, so a later step can be applied while an earlier one is
    /// still pending, and the target is not "at" it then. Steps in the history but not in
    /// the set (`missing`) are passed over.
    pub fn at(&self) -> Option<u64> {
        let mut at = None;
        for s in self.steps.iter().filter(|s| s.status != "missing") {
            match s.status.as_str() {
                "applied" | "baseline" => at = Some(s.step),
                _ => break,
            }
        }
        at
    }
}

/// Reads the set's history in its target.
pub fn status(set: &MigrationSet) -> Result<StatusReport, SetError> {
    let records = match &set.target {
        // Opening a missing SQLite file would create it.
        Location::Sqlite { path } if !path.exists() => Vec::new(),
        _ => {
            let io = IoRuntime::new()?;
            let history = History::open(&set.target, &set.name, &io)?;
            let out = match history.exists()? {
                true => history.load(),
                false => Ok(Vec::new()),
            };
            history.close();
            out?
        }
    };
    let changed = changes(set, &records);
    let mut steps = Vec::new();
    let mut numbers: Vec<u64> = set.steps.iter().map(|s| s.number).collect();
    numbers.extend(records.iter().map(|r| r.step));
    numbers.sort_unstable();
    numbers.dedup();
    for n in numbers {
        let step = set.step(n);
        let record = records.iter().find(|r| r.step == n).cloned();
        let change = changed
            .iter()
            .find(|(c, _)| *c == n)
            .map(|(_, m)| m.clone());
        let live = record.as_ref().filter(|r| r.state != State::Reverted);
        let (status, note) = match (step, live) {
            (None, Some(_)) => ("missing", change),
            (None, None) => continue,
            (Some(_), _) if change.is_some() && live.is_some() => ("changed", change),
            (Some(_), None) => ("pending", change),
            (Some(step), Some(r)) => match r.state {
                State::Applied => {
                    let notes: Vec<String> = r
                        .allowed_change
                        .clone()
                        .into_iter()
                        .chain(online_note(step, r))
                        .collect();
                    ("applied", (!notes.is_empty()).then(|| notes.join("; ")))
                }
                State::Baseline => ("baseline", None),
                State::Failed => ("failed", r.error.clone()),
                State::Running => (
                    "running",
                    Some(format!(
                        "started {} by {}@{} pid {}; stopped in its {} section after {} recorded statements, unless that process still runs: the next up continues from there",
                        r.started_at,
                        r.run_by,
                        r.host,
                        r.pid,
                        r.phase.as_str(),
                        r.statements_done
                    )),
                ),
                State::Reverting if r.phase == Phase::SwapBack => (
                    "reverting",
                    Some(format!(
                        "down stopped in its swap-back of the cut-over{}; the next down continues from there",
                        r.error
                            .as_ref()
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default()
                    )),
                ),
                State::Reverting => (
                    "reverting",
                    Some(format!(
                        "down stopped after {} recorded statements of its down section; the next down continues from there",
                        r.statements_done
                    )),
                ),
                State::Reverted => ("pending", None),
            },
        };
        steps.push(StepStatus {
            step: n,
            name: step.map_or_else(
                || record.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
                |s| s.name.clone(),
            ),
            kind: step.map_or_else(
                || record.as_ref().map(|r| r.kind.clone()).unwrap_or_default(),
                |s| s.kind().to_string(),
            ),
            status: status.into(),
            note,
            record,
        });
    }
    Ok(StatusReport {
        set: set.name.clone(),
        target: set.shown.clone(),
        steps,
    })
}

/// Where an applied online step's old table stands.
fn online_note(step: &Step, r: &Record) -> Option<String> {
    let p = step.pipeline.as_ref().filter(|p| p.online.enabled)?;
    let t = super::online::Tables::of(p);
    Some(match (r.phase, &step.reverse) {
        (Phase::Finalized, _) => format!(
            "online: cut over, then finalized: the old table {} and the captures were dropped, so down cannot swap it back",
            t.old
        ),
        (_, Some(_)) => format!(
            "online: cut over; the old table is kept as {} until `rowshift finalize`, and the reverse capture logs the writes made since (down replays them into it and swaps it back)",
            t.old
        ),
        (_, None) => format!(
            "online: cut over; the old table is kept as {} until `rowshift finalize`, without the writes made since (no reverse pipeline: down cannot swap it back)",
            t.old
        ),
    })
}
