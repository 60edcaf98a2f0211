//! `rowshift plan`: every statement `up` (or `down --to N`) would execute, in the order
//! it would execute them, each with the lock it takes in the target's own terms, and the
//! data moves with their row and chunk estimates. Nothing is written: the target is read
//! in read-only sessions (the history, the tables' row counts, the catalog), or not at
//! all with `offline`.
//!
//! The plan follows the same path as `apply.rs` (the history's statements come from the
//! same [`HistorySql`], a sink's from the same builders), and a run reports what it
//! executed as [`Entry`]s of the same shape ([`super::SetEvent::Executed`]), so that
//! the two can be compared statement by statement.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema};
use serde::Serialize;

use super::changes::{changes, untouched};
use super::history::{History, HistorySql, Phase, Record, State};
use super::lock::LOCK_NAME;
use super::online_plan::{self, Planned};
use super::set::{MigrationSet, Step};
use super::statements::Statement;
use super::{SetError, deps};
use crate::chunk::TargetKey;
use crate::config::{Location, Pipeline};
use crate::db::mysql::dialect::MyDialect;
use crate::db::postgres::dialect::PgDialect;
use crate::db::sqlite::dialect::SqliteDialect;
use crate::plan::Plan;
use crate::runtime::IoRuntime;
use crate::sink::Sink;
use crate::sql::dialect::{Locks, Stmt};
use crate::sql::locks::{Op, classify};
use crate::{Error, Result};

/// One statement of a plan, or one a run executed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// The step it belongs to; `None` for the set's own bookkeeping (lock, history table).
    pub step: Option<u64>,
    /// Where it runs: `lock`, `history` (the bookkeeping), `up`, `ddl` (the table a data
    /// move creates), `load` (the data move's rows, one entry for all of its chunks),
    /// `post-load` (declared indexes, constraints, identity counters), `after`, `down`.
    pub phase: String,
    /// The statement.
    pub sql: String,
    /// The lock it takes, in the target database's terms.
    pub lock: String,
    /// For a load: rows and chunks (estimated in a plan, as moved in a run).
    pub estimate: Option<String>,
}

/// A step as the plan finds it.
#[derive(Debug, Clone, Serialize)]
pub struct StepPlan {
    /// The step's number.
    pub step: u64,
    /// Its name.
    pub name: String,
    /// `sql`, `data` or `sql+data`.
    pub kind: String,
    /// `applied` (not planned), `planned`, `continued` (an interrupted attempt is
    /// continued from where the history says it stopped), `pending` (left for later:
    /// after `--to`), `reverted` (down: planned to be reverted), `kept` (down: stays).
    pub status: String,
    /// `up`: the planned steps this one waits for (they share a table or a foreign key
    /// with it, or one of them is a barrier); steps that do not wait for each other are
    /// applied at the same time. `None` for a step not planned, and in a plan of `down`.
    pub after: Option<Vec<u64>>,
}

/// What `up` or `down` would do.
#[derive(Debug, Clone, Serialize)]
pub struct SetPlan {
    /// The set's name.
    pub set: String,
    /// The target, redacted.
    pub target: String,
    /// `up` or `down`.
    pub command: String,
    /// The target database (`PostgreSQL`).
    pub database: String,
    /// How the plan looked at the target: `read-only`, `offline`, or `nothing there`
    /// (a SQLite file that does not exist yet).
    pub connected: String,
    /// The steps, in the set's order.
    pub steps: Vec<StepPlan>,
    /// Every statement, in order.
    pub statements: Vec<Entry>,
    /// What the plan could not know, or why the command would refuse.
    pub notes: Vec<String>,
    /// Why the command would refuse to run, changing nothing.
    pub refusal: Option<String>,
}

/// Knobs of a plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Plan `down --to N` rather than `up`.
    pub down: bool,
    /// `up --to N` / `down --to N`.
    pub to: Option<u64>,
    /// Connect to nothing: every step is planned as pending, with no estimates.
    pub offline: bool,
}

/// The locks of the target's database.
pub(crate) fn locks_for(location: &Location) -> Result<Box<dyn Locks>> {
    Ok(match location {
        Location::Sqlite { .. } => Box::new(SqliteDialect),
        Location::Postgres { .. } => Box::new(PgDialect),
        Location::Mysql { .. } => Box::new(MyDialect),
        Location::Files { .. } => {
            return Err(Error::Unsupported(
                "a plan of statements needs a database target, not files".into(),
            ));
        }
    })
}

/// The schema (PostgreSQL), database (MySQL) or nothing (SQLite) tables are named in.
pub(crate) fn schema_of(location: &Location) -> String {
    match location {
        Location::Postgres { schema, .. } | Location::Mysql { schema, .. } => schema.clone(),
        _ => String::new(),
    }
}

/// The statement a data move's load is shown as, in `target`.
pub(crate) fn load_sql(locks: &dyn Locks, pipeline: &Pipeline) -> String {
    let columns: Vec<String> = pipeline
        .target
        .columns
        .iter()
        .map(|c| c.name.value.clone())
        .collect();
    let table = pipeline
        .target
        .table
        .as_ref()
        .map(|t| t.value.clone())
        .unwrap_or_default();
    locks.load(&schema_of(&pipeline.target.location), &table, &columns)
}

/// `n rows in m chunks`.
pub(crate) fn rows_in_chunks(rows: Option<u64>, chunks: usize) -> String {
    let rows = rows.map_or("an unknown number of".to_string(), |r| r.to_string());
    format!(
        "{rows} rows in {chunks} chunk{}",
        if chunks == 1 { "" } else { "s" }
    )
}

/// The target as the plan reads it: in read-only sessions, or not at all.
struct Look {
    history: Option<History>,
    /// Tables the planned statements create (`Some(0)`) or drop (`None`), by name, over
    /// what the catalog says.
    changed: BTreeMap<String, Option<u64>>,
}

impl Look {
    fn open(
        location: &Location,
        set: &str,
        offline: bool,
        io: &IoRuntime,
    ) -> Result<(Look, String)> {
        let nothing = Look {
            history: None,
            changed: BTreeMap::new(),
        };
        if offline {
            return Ok((nothing, "offline".into()));
        }
        if let Location::Sqlite { path } = location
            && !path.exists()
        {
            // Opening it would create it.
            return Ok((
                nothing,
                "nothing there (the SQLite file does not exist yet)".into(),
            ));
        }
        let history = History::open_read_only(location, set, io)?;
        Ok((
            Look {
                history: Some(history),
                changed: BTreeMap::new(),
            },
            "read-only".into(),
        ))
    }

    fn records(&self) -> Result<Vec<Record>> {
        match &self.history {
            Some(h) if h.exists()? => h.load(),
            _ => Ok(Vec::new()),
        }
    }

    /// Rows of `table` once the statements planned so far ran (`None`: no table).
    fn rows(&self, table: &str) -> Result<Option<u64>> {
        if let Some(planned) = self.changed.get(table) {
            return Ok(*planned);
        }
        match &self.history {
            Some(h) => h.count_rows(table),
            None => Ok(None),
        }
    }

    /// Whether `table` is in the catalog now, as the plan found it (not created by a
    /// planned statement).
    fn in_catalog(&self, table: &str) -> Result<bool> {
        if self.changed.contains_key(table) {
            return Ok(false);
        }
        Ok(self.rows(table)?.is_some())
    }

    /// Follows what a planned statement does to the tables.
    fn follow(&mut self, sql: &str) -> Result<()> {
        match classify(sql) {
            Op::CreateTable { table, .. } if self.rows(&table)?.is_none() => {
                self.changed.insert(table, Some(0));
            }
            Op::DropTable { tables } => {
                for t in tables {
                    self.changed.insert(t, None);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn close(&self) {
        if let Some(h) = &self.history {
            h.close();
        }
    }
}

/// Builds the list of statements.
struct Planner<'a> {
    locks: &'a dyn Locks,
    hsql: HistorySql,
    out: Vec<Entry>,
    notes: Vec<String>,
}

impl Planner<'_> {
    /// A statement an online step adds ([`online_plan`]), with its own lock when it says one.
    fn push_planned(&mut self, step: Option<u64>, p: Planned) {
        let lock = p.lock.unwrap_or_else(|| self.locks.lock_of(&p.sql));
        self.out.push(Entry {
            step,
            phase: p.phase.into(),
            sql: p.sql,
            lock,
            estimate: p.estimate,
        });
    }

    fn push(&mut self, step: Option<u64>, phase: &str, sql: String, estimate: Option<String>) {
        let lock = self.locks.lock_of(&sql);
        self.out.push(Entry {
            step,
            phase: phase.into(),
            sql,
            lock,
            estimate,
        });
    }

    /// `History::save`: the step's row replaced, in a transaction of its own.
    fn save(&mut self, step: u64) {
        if let Some(p) = self.hsql.prelude() {
            self.push(Some(step), "history", p, None);
        }
        self.writes(step);
    }

    fn writes(&mut self, step: u64) {
        for w in self.hsql.writes() {
            self.push(Some(step), "history", w, None);
        }
    }

    /// `Session::run_statements`: `statements[from..]` of `section`, then the record
    /// of the section's end.
    fn section(
        &mut self,
        step: u64,
        section: &str,
        statements: &[Statement],
        from: usize,
        look: &mut Look,
    ) -> Result<()> {
        let todo = &statements[from.min(statements.len())..];
        if self.hsql.per_statement() {
            for s in todo {
                self.push(Some(step), section, self.hsql.use_target(), None);
                look.follow(&s.sql)?;
                self.push(Some(step), section, s.sql.clone(), None);
                self.writes(step);
            }
            self.writes(step);
        } else {
            if let Some(p) = self.hsql.prelude() {
                self.push(Some(step), section, p, None);
            }
            for s in todo {
                look.follow(&s.sql)?;
                self.push(Some(step), section, s.sql.clone(), None);
            }
            self.writes(step);
        }
        Ok(())
    }

    /// A data move: the sink's DDL, the load, the post-load DDL; an online step's
    /// capture before its load and catch-up after it.
    fn data(
        &mut self,
        step: Option<u64>,
        pipeline: &Pipeline,
        look: &mut Look,
        offline: bool,
    ) -> Result<()> {
        let online = match step.is_some() && pipeline.online.enabled {
            true => Some(online_plan::data(
                pipeline,
                &load_sql(self.locks, pipeline),
                offline,
                &mut self.notes,
            )),
            false => None,
        };
        let table = pipeline
            .target
            .table
            .as_ref()
            .map(|t| t.value.clone())
            .unwrap_or_default();
        let label = step.map_or_else(String::new, |n| format!("step {n}: "));
        let io = IoRuntime::new()?;
        // The source is opened (read-only by nature) for its chunk plan, unless offline or
        // unreadable yet (an earlier step may create it).
        let (sink, estimate) = match offline {
            true => (
                offline_sink(pipeline, &io)?,
                "not estimated (offline)".to_string(),
            ),
            false => match Plan::build(pipeline.clone()) {
                Ok(plan) => {
                    let sink = plan.open_sink()?;
                    let estimate = match plan.source.plan(pipeline.chunks.rows) {
                        Ok(chunks) => format!(
                            "{} (the source's chunk plan)",
                            rows_in_chunks(chunks.iter().map(|c| c.rows).sum(), chunks.len())
                        ),
                        Err(e) => format!("not estimated: {e}"),
                    };
                    (sink, estimate)
                }
                Err(e) => {
                    self.notes.push(format!(
                        "{label}the source of pipeline {} cannot be read now, so its rows are not estimated: {}",
                        pipeline.name,
                        crate::config::redact(&e.to_string())
                    ));
                    (
                        offline_sink(pipeline, &io)?,
                        "not estimated: the source cannot be read yet".to_string(),
                    )
                }
            },
        };
        let existing = look.rows(&table)?.map(|n| n as i64);
        for sql in sink.planned_prepare(existing) {
            if let Some(note) = sql.strip_prefix("--") {
                self.notes.push(format!("{label}{}", note.trim()));
                continue;
            }
            look.follow(&sql)?;
            self.push(step, "ddl", sql, None);
        }
        let (capture, catch_up) = match online {
            Some((c, u)) => (c, Some(u)),
            None => (Vec::new(), None),
        };
        for c in capture {
            self.push_planned(step, c);
        }
        let locks = self.locks;
        self.push(step, "load", load_sql(locks, pipeline), Some(estimate));
        if let Some(u) = catch_up {
            self.push_planned(step, u);
        }
        let read_catalog = !offline && look.in_catalog(&table)?;
        let history = look.history.as_ref();
        let mut catalog = |stmt: Stmt| -> Result<Vec<i64>> {
            match history {
                Some(h) if read_catalog => h.query_ints(&stmt),
                _ => Ok(Vec::new()),
            }
        };
        for sql in sink.planned_post_load(&mut catalog)? {
            self.push(step, "post-load", sql, None);
        }
        Ok(())
    }
}

/// A pipeline's sink opened without its source: the batches' schema from the declared
/// types, the key from the declared source key where a target column holds it as is.
fn offline_sink(pipeline: &Pipeline, io: &IoRuntime) -> Result<Arc<dyn Sink>> {
    let fields: Vec<Field> = pipeline
        .target
        .columns
        .iter()
        .map(|c| Field::new(&c.name.value, c.ty.value.arrow_type(), c.nullable))
        .collect();
    let key = pipeline.source.key.as_ref().and_then(|k| {
        let columns: Option<Vec<String>> = k
            .value
            .iter()
            .map(|k| {
                pipeline
                    .target
                    .columns
                    .iter()
                    .find(|c| c.expr.value.trim() == k)
                    .map(|c| c.name.value.clone())
            })
            .collect();
        columns.map(|columns| TargetKey {
            columns,
            unchanged: true,
        })
    });
    crate::plan::open_sink(&pipeline.target, Arc::new(Schema::new(fields)), key, io)
}

/// Plans `up` (or with `opts.down`, `down --to N`) of `set`.
pub fn plan(set: &MigrationSet, opts: &PlanOptions) -> Result<SetPlan, SetError> {
    let io = IoRuntime::new()?;
    let locks = locks_for(&set.target)?;
    let (mut look, connected) = Look::open(&set.target, &set.name, opts.offline, &io)?;
    let out = plan_in(set, opts, &mut look, locks.as_ref(), connected);
    look.close();
    out
}

fn plan_in(
    set: &MigrationSet,
    opts: &PlanOptions,
    look: &mut Look,
    locks: &dyn Locks,
    connected: String,
) -> Result<SetPlan, SetError> {
    let mut p = Planner {
        locks,
        hsql: HistorySql::of(&set.target)?,
        out: Vec::new(),
        notes: Vec::new(),
    };
    if opts.offline {
        p.notes.push(
            "offline: the history was not read, so every step is planned as pending; no row estimates".into(),
        );
    }
    let mut report = SetPlan {
        set: set.name.clone(),
        target: set.shown.clone(),
        command: if opts.down { "down" } else { "up" }.into(),
        database: locks.database().into(),
        connected,
        steps: Vec::new(),
        statements: Vec::new(),
        notes: Vec::new(),
        refusal: None,
    };
    // The set lock, then the history table, whatever follows.
    let schema = schema_of(&set.target);
    p.push(None, "lock", locks.run_lock(&schema, LOCK_NAME), None);
    for sql in p.hsql.ensure() {
        look.follow(&sql)?;
        p.push(None, "history", sql, None);
    }
    let records: BTreeMap<u64, Record> = look.records()?.into_iter().map(|r| (r.step, r)).collect();
    let list: Vec<Record> = records.values().cloned().collect();
    let changed = changes(set, &list);
    if !changed.is_empty() {
        let lines: Vec<String> = changed.iter().map(|(_, m)| m.clone()).collect();
        report.refusal = Some(format!(
            "{} would refuse to go on: {}; restore the step's files, or pass --allow-changed to the command",
            report.command,
            lines.join("; ")
        ));
    }
    if opts.down {
        plan_down(set, opts, look, &mut p, &records, &mut report)?;
    } else {
        plan_up(set, opts, look, &mut p, &records, &mut report)?;
    }
    report.statements = p.out;
    report.notes = p.notes;
    Ok(report)
}

fn plan_up(
    set: &MigrationSet,
    opts: &PlanOptions,
    look: &mut Look,
    p: &mut Planner<'_>,
    records: &BTreeMap<u64, Record>,
    report: &mut SetPlan,
) -> Result<(), SetError> {
    if let Some(r) = records.values().find(|r| r.state == State::Reverting) {
        report.refusal.get_or_insert(format!(
            "up would refuse: step {} ({}) was being reverted by down when it stopped; run `rowshift down` again first",
            r.step, r.name
        ));
    }
    for step in &set.steps {
        let existing = records.get(&step.number);
        let status = if existing.is_some_and(|r| r.state.is_applied()) {
            "applied"
        } else if opts.to.is_some_and(|to| step.number > to) || report.refusal.is_some() {
            "pending"
        } else if existing.is_some_and(|r| r.state != State::Reverted && !untouched(r)) {
            "continued"
        } else {
            "planned"
        };
        report.steps.push(StepPlan {
            step: step.number,
            name: step.name.clone(),
            kind: step.kind().into(),
            status: status.into(),
            after: None,
        });
        if matches!(status, "planned" | "continued") {
            let resumed = existing.filter(|_| status == "continued");
            plan_step(step, resumed, look, p, opts.offline)?;
        }
    }
    plan_waits(set, look, p, report)
}

/// Says which planned steps wait for which, as `up` schedules them.
fn plan_waits(
    set: &MigrationSet,
    look: &Look,
    p: &mut Planner<'_>,
    report: &mut SetPlan,
) -> Result<(), SetError> {
    let todo: Vec<&Step> = report
        .steps
        .iter()
        .filter(|s| matches!(s.status.as_str(), "planned" | "continued"))
        .filter_map(|s| set.step(s.step))
        .collect();
    let catalog = match &look.history {
        Some(h) => h.foreign_keys()?,
        None => Vec::new(),
    };
    let (waits, barriers) = deps::plan_waits(set, &todo, &catalog);
    for s in &mut report.steps {
        s.after = waits.get(&s.step).cloned();
    }
    let width = set.parallel.unwrap_or(super::set::DEFAULT_PARALLEL);
    if todo.len() > 1 && width > 1 {
        p.notes.push(format!(
            "up applies up to {width} steps at once (the set's `parallel`, or up --parallel N): a step starts once every planned step it waits for (after, in the list) is applied; the statements below are in the set's order, and those of steps that do not wait for each other may run at the same time"
        ));
        if look.history.is_none() {
            p.notes.push(
                "the target's catalog was not read: foreign keys already there do not show in `after`, though up follows them".into(),
            );
        }
        for (n, why) in barriers {
            p.notes.push(format!(
                "step {n} waits for every step before it, and every later step for it: {why}"
            ));
        }
    }
    Ok(())
}

/// One step of `up`, from where `resumed` stopped (or from the start).
fn plan_step(
    step: &Step,
    resumed: Option<&Record>,
    look: &mut Look,
    p: &mut Planner<'_>,
    offline: bool,
) -> Result<(), SetError> {
    let n = step.number;
    let (up, after) = step.up_statements();
    let last = match step.is_online() {
        true => Phase::Cutover,
        false => Phase::Done,
    };
    let (mut phase, mut from) = match resumed {
        Some(r) => (r.phase, r.statements_done as usize),
        None => (Phase::Up, 0),
    };
    if resumed.is_some_and(|r| matches!(r.phase, Phase::Data | Phase::CatchUp)) {
        p.notes.push(format!(
            "{}: its data move continues its checkpoint; the chunks done stay done and only the others are moved",
            step.label()
        ));
    }
    p.save(n);
    let as_step = |e: Error| SetError::Step {
        step: step.label(),
        source: e,
    };
    loop {
        match phase {
            Phase::Up => {
                p.section(n, "up", up, from, look).map_err(as_step)?;
                phase = match (step.pipeline.is_some(), after.is_empty()) {
                    (true, _) => Phase::Data,
                    (false, false) => Phase::After,
                    (false, true) => Phase::Done,
                };
            }
            Phase::Data | Phase::CatchUp => {
                let pipeline = step.pipeline.as_ref().expect("a data step");
                p.data(Some(n), pipeline, look, offline).map_err(as_step)?;
                p.save(n);
                phase = if after.is_empty() { last } else { Phase::After };
            }
            Phase::After => {
                p.section(n, "after", after, from, look).map_err(as_step)?;
                phase = last;
            }
            Phase::Cutover => {
                if let Some(pipeline) = step.pipeline.as_ref().filter(|_| step.is_online()) {
                    let mut notes = Vec::new();
                    let planned =
                        online_plan::cutover(pipeline, step.reverse.as_ref(), offline, &mut notes);
                    for e in planned {
                        p.push_planned(Some(n), e);
                    }
                    for note in notes {
                        p.notes.push(format!("{}: {note}", step.label()));
                    }
                    p.save(n);
                }
                phase = Phase::Done;
            }
            _ => break,
        }
        from = 0;
    }
    Ok(())
}

fn plan_down(
    set: &MigrationSet,
    opts: &PlanOptions,
    look: &mut Look,
    p: &mut Planner<'_>,
    records: &BTreeMap<u64, Record>,
    report: &mut SetPlan,
) -> Result<(), SetError> {
    let to = opts.to.unwrap_or(0);
    let reverted: Vec<&Record> = records
        .values()
        .rev()
        .filter(|r| r.step > to && r.state != State::Reverted)
        .collect();
    let mut refusals = Vec::new();
    for r in &reverted {
        match set.step(r.step) {
            None => refusals.push(format!(
                "step {} ({}) has no file in the set, so it has no down section",
                r.step, r.name
            )),
            Some(step) => {
                if matches!(r.state, State::Running | State::Failed) {
                    refusals.push(format!(
                        "{} is not wholly applied (it is {}); run `rowshift up` to finish it first",
                        step.label(),
                        r.state.as_str()
                    ));
                }
                if step.down_statements().is_none() {
                    refusals.push(format!("{} has no down section", step.label()));
                }
            }
        }
    }
    refusals.extend(foreign_rows(set, look, records, &reverted)?);
    if !opts.offline {
        let io = IoRuntime::new()?;
        let targets: Vec<Record> = reverted.iter().map(|r| (*r).clone()).collect();
        if let Some(h) = &look.history {
            refusals.extend(super::online::down_refusals(set, h, &targets)?);
        }
        refusals.extend(super::rollback::source_refusals(set, &targets, &io)?);
    }
    if !refusals.is_empty() {
        report.refusal.get_or_insert(format!(
            "down would refuse, changing nothing: {}",
            refusals.join("; ")
        ));
    }
    for step in &set.steps {
        let status = match records.get(&step.number) {
            Some(r) if r.step > to && r.state != State::Reverted => "reverted",
            Some(r) if r.state != State::Reverted => "kept",
            _ => "pending",
        };
        report.steps.push(StepPlan {
            step: step.number,
            name: step.name.clone(),
            kind: step.kind().into(),
            status: status.into(),
            after: None,
        });
    }
    if report.refusal.is_some() {
        return Ok(());
    }
    let mut others: Vec<(Location, Look)> = Vec::new();
    let out = plan_reverts(set, opts, look, p, reverted, &mut others);
    for (_, other) in &others {
        other.close();
    }
    out
}

/// The statements of `down` for the steps it reverts, last first.
fn plan_reverts(
    set: &MigrationSet,
    opts: &PlanOptions,
    look: &mut Look,
    p: &mut Planner<'_>,
    reverted: Vec<&Record>,
    others: &mut Vec<(Location, Look)>,
) -> Result<(), SetError> {
    for r in reverted {
        let step = set.step(r.step).expect("checked above");
        let from = match r.state {
            State::Reverting => r.statements_done as usize,
            _ => 0,
        };
        p.save(step.number);
        let swap_back =
            step.is_online() && (r.state != State::Reverting || r.phase == Phase::SwapBack);
        if let (true, Some(pipeline), Some(reverse)) = (swap_back, &step.pipeline, &step.reverse) {
            let mut notes = Vec::new();
            for e in online_plan::swap_back(pipeline, reverse, &mut notes) {
                p.push_planned(Some(step.number), e);
            }
            for note in notes {
                p.notes.push(format!("{}: {note}", step.label()));
            }
            p.save(step.number);
        } else if let Some(reverse) = &step.reverse
            && !step.is_online()
            && super::rollback::reverse_pending(r, true)
        {
            let as_step = |e: Error| SetError::Step {
                step: step.label(),
                source: e,
            };
            // The reverse move writes the step's source, which may be another database:
            // its tables are looked at there, and followed through the plan.
            let at = &reverse.target.location;
            let planned = if *at == set.target {
                p.data(Some(step.number), reverse, look, opts.offline)
            } else {
                if !others.iter().any(|(l, _)| l == at) {
                    let io = IoRuntime::new()?;
                    let (other, _) = Look::open(at, "", opts.offline, &io)?;
                    others.push((at.clone(), other));
                }
                let other = &mut others.iter_mut().find(|(l, _)| l == at).expect("added").1;
                p.data(Some(step.number), reverse, other, opts.offline)
            };
            planned.map_err(as_step)?;
            p.save(step.number);
        }
        let from = match r.phase {
            Phase::Down => from,
            _ => 0,
        };
        let stmts = step.down_statements().unwrap_or(&[]);
        p.section(step.number, "down", stmts, from, look)
            .map_err(|e| SetError::Step {
                step: step.label(),
                source: e,
            })?;
    }
    Ok(())
}

/// The data steps about to be reverted whose tables hold more rows than the set's
/// applied data steps wrote into them (as `down` checks them).
fn foreign_rows(
    set: &MigrationSet,
    look: &Look,
    records: &BTreeMap<u64, Record>,
    reverted: &[&Record],
) -> Result<Vec<String>> {
    let table_of = |n: u64| {
        set.step(n)
            .and_then(|s| s.pipeline.as_ref())
            .and_then(|p| p.target.table.as_ref())
            .map(|t| t.value.clone())
    };
    let mut written: BTreeMap<String, u64> = BTreeMap::new();
    for r in records.values().filter(|r| r.state.is_applied()) {
        if let Some(t) = table_of(r.step) {
            *written.entry(t).or_default() += r.rows_written;
        }
    }
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for r in reverted {
        let Some(table) = table_of(r.step) else {
            continue;
        };
        if seen.contains(&table) {
            continue;
        }
        seen.push(table.clone());
        let wrote = written.get(&table).copied().unwrap_or(0);
        if let Some(now) = look.rows(&table)?
            && now > wrote
        {
            out.push(format!(
                "step {} ({}): table {table} holds {now} rows, but this set wrote {wrote}; pass --force to revert anyway",
                r.step, r.name
            ));
        }
    }
    Ok(out)
}

/// What one run of a pipeline would execute.
#[derive(Debug, Clone, Serialize)]
pub struct PipelinePlan {
    /// The pipeline's name.
    pub pipeline: String,
    /// The target, redacted.
    pub target: String,
    /// The target database.
    pub database: String,
    /// How the plan looked at the target.
    pub connected: String,
    /// Every statement, in order.
    pub statements: Vec<Entry>,
    /// What the plan could not know.
    pub notes: Vec<String>,
}

/// Plans one run of `pipeline` into a database target: its run lock, the table's DDL,
/// the load, the post-load DDL.
pub fn plan_pipeline(pipeline: &Pipeline, offline: bool) -> Result<PipelinePlan> {
    let target = &pipeline.target.location;
    let locks = locks_for(target)?;
    let io = IoRuntime::new()?;
    let (mut look, connected) = Look::open(target, "", offline, &io)?;
    let mut p = Planner {
        locks: locks.as_ref(),
        hsql: HistorySql::of(target)?,
        out: Vec::new(),
        notes: Vec::new(),
    };
    if offline {
        p.notes
            .push("offline: the target and the source were not read; no row estimates".into());
    }
    p.push(
        None,
        "lock",
        locks.run_lock(&schema_of(target), &pipeline.name),
        None,
    );
    let out = p.data(None, pipeline, &mut look, offline);
    look.close();
    out?;
    Ok(PipelinePlan {
        pipeline: pipeline.name.clone(),
        target: crate::config::redact(&pipeline.target.url.value),
        database: locks.database().into(),
        connected,
        statements: p.out,
        notes: p.notes,
    })
}
