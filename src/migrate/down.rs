//! `rowshift down DIR --to N`: reverts the applied steps after step N, last first, each
//! checked before anything changes (docs/migrations.md, "`down`").

use std::collections::BTreeMap;
use std::time::Instant;

use super::apply::{Direction, DownReport, MigrateOptions, Session, StepOutcome, now};
use super::history::{Phase, Record, State};
use super::online::{self as online_step, OnlineOutcome, Tables};
use super::set::MigrationSet;
use super::{SetError, SetEvent, SetObserver, crash_point, rollback};

/// Reverts the applied steps after `opts.to`, last first, by each step's down SQL.
/// Everything is checked before anything changes: every step to revert has a down
/// section, none changed, and (without `force`) no data step's table holds rows the set
/// did not write.
pub fn down(
    set: &MigrationSet,
    opts: &MigrateOptions,
    observer: &dyn SetObserver,
) -> Result<DownReport, SetError> {
    let t0 = Instant::now();
    let to = opts.to.unwrap_or(0);
    let session = Session::open(set, opts, observer)?;
    let out = down_in(&session, opts, to, t0);
    session.close();
    out
}

fn down_in(
    session: &Session<'_>,
    opts: &MigrateOptions,
    to: u64,
    t0: Instant,
) -> Result<DownReport, SetError> {
    let set = session.set;
    let mut records = session.records()?;
    let found = session.check_changes(&records, opts.allow_changed, "down")?;
    let targets: Vec<Record> = records
        .values()
        .rev()
        .filter(|r| r.step > to && r.state != State::Reverted)
        .cloned()
        .collect();
    let mut refusals = Vec::new();
    for r in &targets {
        let Some(step) = set.step(r.step) else {
            refusals.push(format!(
                "step {} ({}) has no file in the set, so it has no down section",
                r.step, r.name
            ));
            continue;
        };
        if matches!(r.state, State::Running | State::Failed) {
            refusals.push(format!(
                "{} is not wholly applied (it is {} in its {} section); run `rowshift up` to finish it first",
                step.label(),
                r.state.as_str(),
                r.phase.as_str()
            ));
        }
        if step.down_statements().is_none() {
            let file = format!("{:03}_{}.sql", step.number, step.name);
            refusals.push(format!(
                "{} has no down section, so it cannot be reverted: add `-- rowshift:down` with the statements that undo it to {}",
                step.label(),
                step.sql
                    .as_ref()
                    .map_or(file, |s| s.path.display().to_string())
            ));
        }
    }
    // Whether an online step can be swapped back is not a matter of rows: --force
    // does not pass over it.
    refusals.extend(online_step::down_refusals(set, &session.history, &targets)?);
    if !opts.force {
        refusals.extend(foreign_rows(session, &records, &targets)?);
        refusals.extend(rollback::source_refusals(set, &targets, &session.io)?);
    }
    if !refusals.is_empty() {
        return Err(SetError::Refused(format!(
            "down changed nothing: {}",
            refusals.join(";\n")
        )));
    }
    session.accept(&mut records, &found)?;
    let mut report = DownReport {
        set: set.name.clone(),
        target: set.shown.clone(),
        steps: Vec::new(),
        at: to,
        seconds: 0.0,
    };
    for r in targets {
        let step = set.step(r.step).expect("checked above");
        let t1 = Instant::now();
        let mut history_nanos = 0u128;
        let resumed = r.state == State::Reverting;
        session.observer.on_set_event(&SetEvent::StepStarted {
            step: step.number,
            name: step.name.clone(),
            direction: "down",
            resumed,
        });
        let mut record = r.clone();
        if !resumed {
            record.state = State::Reverting;
            record.phase = match (step.is_online(), &step.reverse) {
                (true, _) => Phase::SwapBack,
                (false, Some(_)) => Phase::Reverse,
                (false, None) => Phase::Down,
            };
            record.statements_done = 0;
        }
        record.error = None;
        let h0 = Instant::now();
        session.save(&record)?;
        history_nanos += h0.elapsed().as_nanos();
        let mut data = None;
        let mut online = None;
        if record.phase == Phase::SwapBack {
            let swap = session.swap_back(step, &mut record, opts)?;
            crash_point(step.number, "swapback");
            let t = Tables::of(step.pipeline.as_ref().expect("an online step moves data"));
            online = Some(OnlineOutcome {
                catch_up: None,
                swap,
                table: t.source,
                kept: t.target,
                reverse: true,
            });
            record.phase = Phase::Down;
            record.statements_done = 0;
            record.error = None;
            let h0 = Instant::now();
            session.save(&record)?;
            history_nanos += h0.elapsed().as_nanos();
        }
        if record.phase == Phase::Reverse
            && let Some(reverse) = &step.reverse
        {
            // A revert started fresh moves the rows back from nothing; a resumed one
            // continues its checkpoint.
            if !resumed {
                session.discard_reverse_checkpoint(step, reverse)?;
            }
            data = Some(
                session
                    .move_rows(step, reverse.clone(), &mut record, opts, Direction::Down)?
                    .0,
            );
            crash_point(step.number, "reverse");
            record.phase = Phase::Down;
            record.statements_done = 0;
            let h0 = Instant::now();
            session.save(&record)?;
            history_nanos += h0.elapsed().as_nanos();
        }
        let stmts = step.down_statements().unwrap_or(&[]);
        let statements = session.run_statements(
            step,
            "down",
            stmts,
            &mut record,
            |r| {
                r.state = State::Reverted;
                r.phase = Phase::Done;
                r.statements_done = 0;
                r.ended_at = Some(now());
            },
            &mut history_nanos,
        )?;
        session.discard_checkpoint(step)?;
        let outcome = StepOutcome {
            step: step.number,
            name: step.name.clone(),
            kind: step.kind().into(),
            direction: "down",
            resumed,
            statements,
            record,
            seconds: t1.elapsed().as_secs_f64(),
            history_seconds: history_nanos as f64 / 1e9,
            data,
            online,
        };
        session
            .observer
            .on_set_event(&SetEvent::StepDone(Box::new(outcome.clone())));
        report.steps.push(outcome);
        crash_point(step.number, "done");
    }
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// The data steps about to be reverted whose tables hold more rows than the set's
/// applied data steps wrote into them.
fn foreign_rows(
    session: &Session<'_>,
    records: &BTreeMap<u64, Record>,
    targets: &[Record],
) -> Result<Vec<String>, SetError> {
    let set = session.set;
    // Rows the set's applied data steps wrote, by table.
    let mut written: BTreeMap<String, (u64, Vec<u64>)> = BTreeMap::new();
    for r in records.values().filter(|r| r.state.is_applied()) {
        if let Some(table) = set
            .step(r.step)
            .and_then(|s| s.pipeline.as_ref())
            .and_then(|p| p.target.table.as_ref())
        {
            let e = written.entry(table.value.clone()).or_default();
            e.0 += r.rows_written;
            e.1.push(r.step);
        }
    }
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for r in targets {
        // A reverse pipeline moves every row of the table back, the set's or not.
        // An online step is swapped back, its table's rows untouched.
        let Some(table) = set
            .step(r.step)
            .filter(|s| s.reverse.is_none() && !s.is_online())
            .and_then(|s| s.pipeline.as_ref())
            .and_then(|p| p.target.table.as_ref())
        else {
            continue;
        };
        if seen.contains(&table.value) {
            continue;
        }
        seen.push(table.value.clone());
        let (wrote, steps) = written.get(&table.value).cloned().unwrap_or_default();
        if let Some(now) = session.history.count_rows(&table.value)?
            && now > wrote
        {
            let steps: Vec<String> = steps.iter().map(u64::to_string).collect();
            out.push(format!(
                "step {} ({}): table {} holds {now} rows, but this set wrote {wrote} (step {}); reverting could drop {} rows it did not write. Pass --force to revert anyway",
                r.step,
                r.name,
                table.value,
                steps.join(", "),
                now - wrote
            ));
        }
    }
    Ok(out)
}
