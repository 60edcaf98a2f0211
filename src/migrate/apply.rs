//! `up`, `down` and `baseline`: the target's set lock first, then the history, then the
//! steps in order, each recorded as it goes so that a kill at any moment leaves the
//! history saying where it stopped, and the next command continues from there.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::changes::{applied_text, chains, changes, untouched};
use super::history::{History, Phase, Record, State};
use super::online::{self as online_step, Cut, OnlineOutcome, Tables};
use super::set::{MigrationSet, Step};
use super::statements::Statement;
use super::{SetError, SetEvent, SetObserver, crash_point, deps, lock, plan, rollback};
use crate::checkpoint::{ChunkState, RunLock};
use crate::chunk::ChunkCounts;
use crate::config::redact;
use crate::plan::Plan;
use crate::run::{RunOptions, Summary};
use crate::runtime::IoRuntime;
use crate::sql::dialect::Locks;
use crate::sql::trace;

/// Knobs of `up`, `down` and `baseline`.
#[derive(Debug, Clone, Default)]
pub struct MigrateOptions {
    /// `up`: apply steps up to this number (default: all). `down`: revert the steps after
    /// it. `baseline`: adopt the steps up to it.
    pub to: Option<u64>,
    /// Accept applied steps whose files changed since, and record that.
    pub allow_changed: bool,
    /// `down`: revert data steps even when their tables hold rows the set did not write.
    pub force: bool,
    /// How long to wait for the target's set lock.
    pub lock_wait: Duration,
    /// Chunks in flight in a data move (overrides the pipeline's `parallel`).
    pub parallel: Option<usize>,
    /// `up`: how many independent steps are applied at once at most (overrides the set
    /// file's `parallel`; 1 applies them one after the other).
    pub parallel_steps: Option<usize>,
}

/// What one step did.
#[derive(Debug, Clone, Serialize)]
pub struct StepOutcome {
    /// The step's number.
    pub step: u64,
    /// Its name.
    pub name: String,
    /// `sql`, `data` or `sql+data`.
    pub kind: String,
    /// `up` or `down`.
    pub direction: &'static str,
    /// Whether an interrupted attempt was continued.
    pub resumed: bool,
    /// Statements run by this process.
    pub statements: usize,
    /// The history row after the step.
    pub record: Record,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Seconds spent writing the history (the step's own rows; a record committed in
    /// the statements' transaction counts with them).
    pub history_seconds: f64,
    /// The data move's summary, for a data step.
    pub data: Option<Summary>,
    /// An online step's catch-up and cut-over (`up`) or swap-back (`down`).
    pub online: Option<OnlineOutcome>,
}

/// What `up` did.
#[derive(Debug, Clone, Serialize)]
pub struct UpReport {
    /// The set's name.
    pub set: String,
    /// The target, redacted.
    pub target: String,
    /// Steps that were already applied.
    pub already_applied: usize,
    /// The steps this run applied, in order.
    pub steps: Vec<StepOutcome>,
    /// Applied steps whose change `--allow-changed` accepted, each with what changed.
    pub accepted_changes: Vec<String>,
    /// Steps left pending (after `--to`, or not started once a step rejected rows or
    /// failed).
    pub pending: Vec<u64>,
    /// The highest step applied now, if any.
    pub at: Option<u64>,
    /// Seconds to take the set lock.
    pub lock_seconds: f64,
    /// Wall time, seconds.
    pub seconds: f64,
}

impl UpReport {
    /// 0 when every step ran clean; 1 when a data step rejected rows (they are in the
    /// quarantine, and `up` started no step after it; those running then ended).
    pub fn exit_code(&self) -> i32 {
        match self.steps.iter().any(|s| s.record.rows_rejected > 0) {
            true => 1,
            false => 0,
        }
    }
}

/// What `down` did.
#[derive(Debug, Clone, Serialize)]
pub struct DownReport {
    /// The set's name.
    pub set: String,
    /// The target, redacted.
    pub target: String,
    /// The steps reverted, last first.
    pub steps: Vec<StepOutcome>,
    /// The step the target is at now.
    pub at: u64,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// What `baseline` recorded.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    /// The set's name.
    pub set: String,
    /// The target, redacted.
    pub target: String,
    /// The steps recorded as already applied.
    pub steps: Vec<u64>,
}

/// Who runs the command, as the history records it.
struct Who {
    user: String,
    host: String,
    pid: u32,
}

impl Who {
    fn now() -> Who {
        Who {
            user: std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .unwrap_or_else(|_| "unknown".into()),
            host: crate::checkpoint::lock::host_name(),
            pid: std::process::id(),
        }
    }
}

pub(super) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An open session on the target: the set lock held, the history ready.
pub(super) struct Session<'a> {
    pub(super) set: &'a MigrationSet,
    /// Shared with an online step's run, whose catch-up records its phase.
    pub(super) history: std::sync::Arc<History>,
    /// The target's locks, to show beside the statements reported as executed.
    locks: Box<dyn Locks>,
    pub(super) io: IoRuntime,
    who: Who,
    pub(super) observer: &'a dyn SetObserver,
    lock: RunLock,
    lock_seconds: f64,
    /// Held by a data move from the start of its run until its chunks are planned.
    starting: Gate,
}

/// Lets one data move at a time through the start of its run: its run lock, its table's
/// DDL, the checkpoint tables' DDL and the recording of its chunk plan. Steps applied at
/// the same time then never create the bookkeeping tables at once (a race some servers
/// lose), and never insert their plans at once: on MySQL and MariaDB two such inserts,
/// each after deleting its pipeline's missing rows, take gap locks that deadlock. Their
/// chunks, the bulk of the time, run side by side.
#[derive(Default)]
struct Gate {
    busy: std::sync::Mutex<bool>,
    free: std::sync::Condvar,
}

impl Gate {
    fn enter(&self) {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while *busy {
            busy = self.free.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        *busy = true;
    }

    fn leave(&self) {
        *self.busy.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.free.notify_one();
    }
}

impl<'a> Session<'a> {
    pub(super) fn open(
        set: &'a MigrationSet,
        opts: &MigrateOptions,
        observer: &'a dyn SetObserver,
    ) -> Result<Session<'a>, SetError> {
        let io = IoRuntime::new()?;
        let t0 = Instant::now();
        // The lock comes before anything touches the target, the history table too.
        let lock = lock::take(&set.target, &io, opts.lock_wait, &mut |holder| {
            observer.on_set_event(&SetEvent::WaitingForLock {
                holder: holder.clone(),
                limit: opts.lock_wait,
            })
        })?;
        let lock_seconds = t0.elapsed().as_secs_f64();
        let locks = plan::locks_for(&set.target)?;
        // A connection for each step applied at once, and one for the set's own writes.
        let connections = width(set, opts) as u32 + 1;
        let history = std::sync::Arc::new(History::open_with(
            &set.target,
            &set.name,
            &io,
            connections,
        )?);
        // From here on, every statement this thread executes is reported.
        trace::start();
        let session = Session {
            set,
            history,
            locks,
            io,
            who: Who::now(),
            observer,
            lock,
            lock_seconds,
            starting: Gate::default(),
        };
        let taken = session
            .locks
            .run_lock(&plan::schema_of(&set.target), lock::LOCK_NAME);
        session.report(None, "lock", vec![taken]);
        let ensured = session.history.ensure();
        session.flush(None, "history");
        if let Err(e) = ensured {
            session.close();
            return Err(e.into());
        }
        Ok(session)
    }

    /// Reports `statements` as executed in `phase` of `step`; the history's own writes
    /// are reported as `history`.
    fn report(&self, step: Option<u64>, phase: &str, statements: Vec<String>) {
        let writes = self.history.sql().writes();
        for sql in statements {
            let phase = match writes.contains(&sql) {
                true => "history",
                false => phase,
            };
            self.observer
                .on_set_event(&SetEvent::Executed(Box::new(plan::Entry {
                    step,
                    phase: phase.into(),
                    lock: self.locks.lock_of(&sql),
                    sql,
                    estimate: None,
                })));
        }
    }

    /// Reports the statements executed since the last report.
    fn flush(&self, step: Option<u64>, phase: &str) {
        self.report(step, phase, trace::take());
    }

    /// Reports a data move's statements: the table's DDL before its load, the load as
    /// one entry with what it moved, and the post-load DDL after it.
    fn flush_data(&self, step: u64, load: &str, moved: Option<String>) {
        let all = trace::take();
        let at = all.iter().position(|s| s == load);
        let (before, after) = match at {
            Some(i) => (all[..i].to_vec(), all[i + 1..].to_vec()),
            None => (all, Vec::new()),
        };
        self.report(Some(step), "ddl", before);
        if at.is_some() {
            self.observer
                .on_set_event(&SetEvent::Executed(Box::new(plan::Entry {
                    step: Some(step),
                    phase: "load".into(),
                    sql: load.to_string(),
                    lock: self.locks.lock_of(load),
                    estimate: moved,
                })));
        }
        self.report(Some(step), "post-load", after);
    }

    /// Saves `record`, reporting the statements.
    pub(super) fn save(&self, record: &Record) -> Result<(), SetError> {
        let out = self.history.save(record);
        self.flush(Some(record.step), "history");
        Ok(out?)
    }

    /// Ends the session: the history's connections closed, the lock released.
    pub(super) fn close(self) {
        trace::stop();
        self.history.close();
        drop(self.lock);
    }

    pub(super) fn records(&self) -> Result<BTreeMap<u64, Record>, SetError> {
        Ok(self
            .history
            .load()?
            .into_iter()
            .map(|r| (r.step, r))
            .collect())
    }

    /// Refuses when an applied step changed, unless `allow`: then returns what changed,
    /// for [`Session::accept`] to record once nothing else refuses.
    pub(super) fn check_changes(
        &self,
        records: &BTreeMap<u64, Record>,
        allow: bool,
        command: &str,
    ) -> Result<Vec<(u64, String)>, SetError> {
        let list: Vec<Record> = records.values().cloned().collect();
        let found = changes(self.set, &list);
        if !found.is_empty() && !allow {
            let lines: Vec<String> = found.iter().map(|(_, m)| m.clone()).collect();
            return Err(SetError::Refused(format!(
                "{command} refuses to go on: {}.\nRestore the step's files as they were applied, or pass --allow-changed to accept them as they are now (the history records it)",
                lines.join(";\n")
            )));
        }
        Ok(found)
    }

    /// Records `--allow-changed`: the changed steps take their files as they are now,
    /// with what changed, and every later step's chain follows.
    pub(super) fn accept(
        &self,
        records: &mut BTreeMap<u64, Record>,
        found: &[(u64, String)],
    ) -> Result<Vec<String>, SetError> {
        let chains = chains(self.set);
        let stamp = format!("accepted {} by {}@{}", now(), self.who.user, self.who.host);
        for (n, message) in found {
            let (Some(r), Some(step)) = (records.get_mut(n), self.set.step(*n)) else {
                continue;
            };
            r.name = step.name.clone();
            r.checksum = step.checksum.clone();
            r.applied_text = applied_text(step);
            r.allowed_change = Some(format!("{stamp}: {message}"));
        }
        for r in records.values_mut().filter(|r| r.state != State::Reverted) {
            let changed = found.iter().any(|(n, _)| *n == r.step);
            if let Some(chain) = chains.get(&r.step)
                && (changed || *chain != r.chain)
            {
                r.chain = chain.clone();
                self.save(r)?;
            }
        }
        Ok(found.iter().map(|(_, m)| m.clone()).collect())
    }

    fn fresh_record(&self, step: &Step, chain: &str) -> Record {
        Record {
            step: step.number,
            name: step.name.clone(),
            kind: step.kind().into(),
            checksum: step.checksum.clone(),
            chain: chain.into(),
            state: State::Running,
            phase: Phase::Up,
            statements_done: 0,
            run_by: self.who.user.clone(),
            host: self.who.host.clone(),
            pid: self.who.pid,
            started_at: now(),
            ended_at: None,
            rows_read: 0,
            rows_written: 0,
            rows_filtered: 0,
            rows_rejected: 0,
            data_checksum: None,
            source_rows: None,
            source_checksum: None,
            allowed_change: None,
            error: None,
            applied_text: applied_text(step),
        }
    }

    /// Forgets a reverse pipeline's checkpoint (kept in its target, the step's source),
    /// so that a revert started fresh moves every row back.
    pub(super) fn discard_reverse_checkpoint(
        &self,
        step: &Step,
        reverse: &crate::config::Pipeline,
    ) -> Result<(), SetError> {
        let as_step = |e: crate::Error| SetError::Step {
            step: step.label(),
            source: e,
        };
        let store =
            lock::store_for(&reverse.target.location, &reverse.name, &self.io).map_err(as_step)?;
        let out = match store.load() {
            Ok(Some(_)) => store.discard(),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        let _ = store.close();
        out.map_err(as_step)
    }

    /// Forgets a data step's checkpoint, so that its next move starts from nothing.
    pub(super) fn discard_checkpoint(&self, step: &Step) -> Result<(), SetError> {
        let Some(p) = &step.pipeline else {
            return Ok(());
        };
        let store = lock::store_for(&self.set.target, &p.name, &self.io)?;
        let out = match store.load() {
            Ok(Some(_)) => store.discard(),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        let _ = store.close();
        out.map_err(|e| SetError::Step {
            step: step.label(),
            source: e,
        })
    }

    /// Runs `statements[from..]` of `step` and moves its record to `next`: in one
    /// transaction on PostgreSQL and SQLite, one recorded statement at a time on MySQL.
    pub(super) fn run_statements(
        &self,
        step: &Step,
        section: &str,
        statements: &[Statement],
        record: &mut Record,
        next: impl Fn(&mut Record),
        history_nanos: &mut u128,
    ) -> Result<usize, SetError> {
        let out = self.run_statements_in(step, section, statements, record, next, history_nanos);
        self.flush(Some(step.number), section);
        out
    }

    fn run_statements_in(
        &self,
        step: &Step,
        section: &str,
        statements: &[Statement],
        record: &mut Record,
        next: impl Fn(&mut Record),
        history_nanos: &mut u128,
    ) -> Result<usize, SetError> {
        let from = (record.statements_done as usize).min(statements.len());
        let todo = &statements[from..];
        let file = step
            .sql
            .as_ref()
            .map(|s| s.path.display().to_string())
            .unwrap_or_default();
        let fail = |record: &mut Record, k: usize, e: crate::Error, note: &str| {
            let s = &todo[k];
            let text = format!(
                "{file}:{}: statement {} of {section} failed: {}; {note}",
                s.line,
                from + k + 1,
                redact(&e.to_string())
            );
            record.state = match section {
                "down" => State::Reverting,
                _ => State::Failed,
            };
            record.error = Some(text.clone());
            let _ = self.history.save(record);
            SetError::Step {
                step: step.label(),
                source: crate::Error::Unsupported(text),
            }
        };
        if !self.history.per_statement() {
            let mut done = record.clone();
            next(&mut done);
            let n = step.number;
            let out = self.history.apply(todo, &done, &mut |i| {
                crash_point(n, &format!("{section}:{}", from + i + 1))
            });
            match out {
                Ok(()) => {
                    *record = done;
                    Ok(todo.len())
                }
                Err((Some(k), e)) => Err(fail(
                    record,
                    k,
                    e,
                    "nothing of this section was applied (it ran in one transaction); the next up runs it again",
                )),
                Err((None, e)) => Err(SetError::Step {
                    step: step.label(),
                    source: e,
                }),
            }
        } else {
            for (k, s) in todo.iter().enumerate() {
                if let Err(e) = self.history.execute_alone(s) {
                    return Err(fail(
                        record,
                        k,
                        e,
                        "the statements before it are applied and recorded; the next up continues with this one",
                    ));
                }
                let at = from + k + 1;
                crash_point(step.number, &format!("{section}:{at}"));
                record.statements_done = at as u64;
                let t0 = Instant::now();
                self.history.save(record)?;
                *history_nanos += t0.elapsed().as_nanos();
                crash_point(step.number, &format!("{section}-recorded:{at}"));
            }
            next(record);
            let t0 = Instant::now();
            self.history.save(record)?;
            *history_nanos += t0.elapsed().as_nanos();
            Ok(todo.len())
        }
    }

    /// Moves a data step's rows through the run machinery (checked, resumable).
    fn move_data(
        &self,
        step: &Step,
        record: &mut Record,
        opts: &MigrateOptions,
    ) -> Result<(Summary, Option<crate::online::OnlineReport>), SetError> {
        let pipeline = step.pipeline.clone().expect("a data step");
        self.move_rows(step, pipeline, record, opts, Direction::Up)
    }

    /// Moves the rows of `pipeline` (the step's data move, or with `Direction::Down` its
    /// reverse pipeline) and checks the run ended clean. Up records the counts in
    /// `record`; a failure is recorded as the direction's failed state. An online step's
    /// move runs with its capture and ends with its catch-up, whose report comes back.
    pub(super) fn move_rows(
        &self,
        step: &Step,
        pipeline: crate::config::Pipeline,
        record: &mut Record,
        opts: &MigrateOptions,
        direction: Direction,
    ) -> Result<(Summary, Option<crate::online::OnlineReport>), SetError> {
        let failed = match direction {
            Direction::Up => State::Failed,
            Direction::Down => State::Reverting,
        };
        let as_step = |e: crate::Error| SetError::Step {
            step: step.label(),
            source: e,
        };
        self.observer.on_set_event(&SetEvent::DataStarted {
            step: step.number,
            pipeline: pipeline.name.clone(),
        });
        crash_point(step.number, "data");
        let load = plan::load_sql(self.locks.as_ref(), &pipeline);
        let file = pipeline_file(&pipeline);
        // A pipeline that cannot be planned or whose target cannot be opened (a source
        // table gone, a server down) fails the step as a failed run does: recorded.
        let opened = Plan::build(pipeline).and_then(|plan| {
            let sink = plan.open_sink()?;
            Ok((plan, sink))
        });
        let online = direction == Direction::Up && step.is_online();
        let opened = opened.and_then(|(plan, sink)| {
            let joined = match online {
                true => Some(online_step::join(
                    &self.history,
                    &plan,
                    sink.as_ref(),
                    record,
                )?),
                false => None,
            };
            Ok((plan, sink, joined))
        });
        let (plan, sink, joined) = match opened {
            Ok(o) => o,
            Err(e) => {
                record.state = failed;
                record.error = Some(redact(&e.to_string()));
                self.save(record)?;
                return Err(as_step(e));
            }
        };
        let run_opts = RunOptions {
            parallel: opts.parallel,
            lock_wait: opts.lock_wait,
            cancel: None,
            // The capture is gone since the copy began: changes may be missing, so the
            // copy is made again with a new capture.
            restart: joined.as_ref().is_some_and(|(_, restart)| *restart),
            hooks: joined
                .as_ref()
                .map(|(h, _)| h.clone() as std::sync::Arc<dyn crate::run::RunHooks>),
            ..RunOptions::default()
        };
        self.starting.enter();
        let tap = LoadTap {
            set: self.observer,
            step: step.number,
            load: &load,
            moved: std::sync::Mutex::new(None),
            gate: &self.starting,
            inside: std::sync::atomic::AtomicBool::new(true),
        };
        let summary = crate::run::run(&plan, sink.as_ref(), &tap, &run_opts);
        tap.leave();
        let moved = tap.moved.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.flush_data(step.number, &load, moved);
        // The catch-up recorded its phase in the history from the run's hooks.
        let caught_up = joined.map(|(h, _)| {
            record.phase = h.phase();
            h.report()
        });
        let summary = match summary {
            Ok(s) => s,
            Err(e) => {
                record.state = failed;
                record.error = Some(redact(&e.to_string()));
                self.save(record)?;
                return Err(as_step(e));
            }
        };
        if direction == Direction::Down {
            // The reverse move writes the old table: every row it read must be there.
            let s = &summary;
            if s.exit_code() != 0 || s.rows.rejected > 0 || !s.post_load.is_empty() {
                let why = match s.failures.first() {
                    Some(f) => format!("chunk {} failed: {}", f.chunk, redact(&f.line())),
                    None if s.rows.rejected > 0 => format!(
                        "it rejected {} rows (they are in its quarantine), which the old table would lose",
                        s.rows.rejected
                    ),
                    None if !s.post_load.is_empty() => format!(
                        "the rows were loaded, but {}",
                        redact(&s.post_load.join("; "))
                    ),
                    None => format!("the reverse move ended with {}", s.state),
                };
                let why = format!(
                    "the reverse pipeline {file}: {why}; down stopped before the step's down section, so nothing was dropped, and the next down resumes the reverse move"
                );
                record.state = failed;
                record.error = Some(why.clone());
                self.save(record)?;
                return Err(as_step(crate::Error::Unsupported(why)));
            }
            return Ok((summary, None));
        }
        // The counts over every done chunk, whichever process moved it.
        let store = crate::run::checkpoint_store(&plan, sink.as_ref());
        let checkpoint = store.load();
        let _ = store.close();
        let mut counts = ChunkCounts::default();
        if let Some(c) = checkpoint.map_err(as_step)? {
            for chunk in c.chunks.iter().filter(|c| c.state == ChunkState::Done) {
                counts += chunk.counts;
            }
        }
        record.rows_read = counts.read;
        record.rows_written = counts.written;
        record.rows_filtered = counts.filtered;
        record.rows_rejected = counts.rejected;
        record.data_checksum = Some(summary.checksum.clone());
        // A declared index or constraint the rows did not allow fails the step, not just
        // counts against it: an applied step is never run again, and the next up must
        // retry what the data move left unbuilt.
        // A chunk that failed (its rows refused whole, say) left rows unmoved: the step
        // is not applied, however the run's exit code counts it.
        if summary.exit_code() == 2 || !summary.failures.is_empty() || !summary.post_load.is_empty()
        {
            let why = match summary.failures.first() {
                Some(f) => format!("chunk {} failed: {}", f.chunk, redact(&f.line())),
                None if summary.interrupted => "the data move was interrupted".into(),
                None if !summary.post_load.is_empty() => format!(
                    "the rows were loaded, but {}",
                    redact(&summary.post_load.join("; "))
                ),
                None => format!("the data move ended with {}", summary.state),
            };
            record.state = State::Failed;
            record.error = Some(why.clone());
            self.save(record)?;
            return Err(as_step(crate::Error::Unsupported(format!(
                "{why}; the history records the step as failed in its data move, and the next up resumes it"
            ))));
        }
        Ok((summary, caught_up))
    }
}

/// The run observer of a data move: hears its chunk events for the set's observer, and
/// reports the load as executed where the run starts its chunks (after the table's DDL,
/// before the post-load DDL), with the rows and chunks it plans to move.
struct LoadTap<'a> {
    set: &'a dyn SetObserver,
    step: u64,
    load: &'a str,
    moved: std::sync::Mutex<Option<String>>,
    /// The session's gate, which this move holds until its chunks are planned.
    gate: &'a Gate,
    inside: std::sync::atomic::AtomicBool,
}

impl LoadTap<'_> {
    /// Lets the next data move start (once).
    fn leave(&self) {
        if self.inside.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.gate.leave();
        }
    }
}

impl crate::run::Observer for LoadTap<'_> {
    fn on_event(&self, event: &crate::run::Event) {
        if let crate::run::Event::Planned { chunks, rows, .. } = event {
            // The run's own thread: the statements around it are reported on it too.
            trace::executed(self.load);
            *self.moved.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(plan::rows_in_chunks(*rows, *chunks));
            self.leave();
        }
        self.set.on_run_event(self.step, event);
    }
}

/// Applies the set's pending steps in order, up to `opts.to`, continuing a step an
/// earlier run left unfinished from where the history says it stopped.
pub fn up(
    set: &MigrationSet,
    opts: &MigrateOptions,
    observer: &dyn SetObserver,
) -> Result<UpReport, SetError> {
    let t0 = Instant::now();
    let session = Session::open(set, opts, observer)?;
    let out = up_in(&session, opts, t0);
    session.close();
    out
}

fn up_in(session: &Session<'_>, opts: &MigrateOptions, t0: Instant) -> Result<UpReport, SetError> {
    let set = session.set;
    let mut records = session.records()?;
    if let Some((_, r)) = records.iter().find(|(_, r)| r.state == State::Reverting) {
        return Err(SetError::Refused(format!(
            "step {} ({}) was being reverted by down when it stopped ({} statements of its down section recorded); run `rowshift down` again to finish reverting it before up",
            r.step, r.name, r.statements_done
        )));
    }
    let found = session.check_changes(&records, opts.allow_changed, "up")?;
    let accepted = session.accept(&mut records, &found)?;
    let chains = chains(set);
    let mut report = UpReport {
        set: set.name.clone(),
        target: set.shown.clone(),
        already_applied: 0,
        steps: Vec::new(),
        accepted_changes: accepted,
        pending: Vec::new(),
        at: None,
        lock_seconds: session.lock_seconds,
        seconds: 0.0,
    };
    let mut todo: Vec<&Step> = Vec::new();
    for step in &set.steps {
        if records
            .get(&step.number)
            .is_some_and(|r| r.state.is_applied())
        {
            report.already_applied += 1;
        } else if opts.to.is_some_and(|to| step.number > to) {
            report.pending.push(step.number);
        } else {
            todo.push(step);
        }
    }
    let width = width(set, opts);
    let waits = match (width, todo.len()) {
        // One at a time, or one to do: the set's order is the whole schedule.
        (1, _) | (_, 0 | 1) => todo.iter().map(|s| (s.number, Vec::new())).collect(),
        _ => {
            let catalog = session.history.foreign_keys()?;
            deps::plan_waits(set, &todo, &catalog).0
        }
    };
    let outcome = schedule(session, &todo, &waits, width, &records, &chains, opts);
    let mut outcomes = outcome.done;
    outcomes.sort_by_key(|o| o.step);
    report.pending.extend(outcome.not_started);
    report.pending.sort_unstable();
    report.steps = outcomes;
    if let Some(e) = outcome.error {
        return Err(e);
    }
    // The last step of the applied run from the set's first: a step applied beside an
    // earlier one that is still pending does not make the target "at" it.
    let now_applied: Vec<u64> = report.steps.iter().map(|o| o.step).collect();
    for step in &set.steps {
        let applied = now_applied.contains(&step.number)
            || records
                .get(&step.number)
                .is_some_and(|r| r.state.is_applied());
        match applied {
            true => report.at = Some(step.number),
            false => break,
        }
    }
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// How many steps `up` applies at once at most.
fn width(set: &MigrationSet, opts: &MigrateOptions) -> usize {
    opts.parallel_steps
        .or(set.parallel)
        .unwrap_or(super::set::DEFAULT_PARALLEL)
        .max(1)
}

/// What [`schedule`] did.
struct Scheduled {
    /// The steps applied, in the order they ended.
    done: Vec<StepOutcome>,
    /// Steps not started (up stopped before them).
    not_started: Vec<u64>,
    /// The error of the first step (by number) that failed.
    error: Option<SetError>,
}

/// Applies `todo` (in the set's order), at most `width` at once, each once every step
/// it waits for is applied. The steps that wait for nothing pending start in the set's
/// order, so with `width` 1 this is the sequential `up`. After a failure or a step that
/// rejected rows no step starts; those running end first (each records itself).
fn schedule(
    session: &Session<'_>,
    todo: &[&Step],
    waits: &BTreeMap<u64, Vec<u64>>,
    width: usize,
    records: &BTreeMap<u64, Record>,
    chains: &BTreeMap<u64, String>,
    opts: &MigrateOptions,
) -> Scheduled {
    #[derive(Clone, Copy, PartialEq)]
    enum At {
        Waiting,
        Running,
        Applied,
        Failed,
    }
    let mut at: BTreeMap<u64, At> = todo.iter().map(|s| (s.number, At::Waiting)).collect();
    let mut out = Scheduled {
        done: Vec::new(),
        not_started: Vec::new(),
        error: None,
    };
    let mut errors: Vec<(u64, SetError)> = Vec::new();
    let mut stop = false;
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel::<(u64, Result<StepOutcome, SetError>)>();
        let mut running = 0usize;
        loop {
            if !stop && session.lock.lost() {
                errors.push((
                    0,
                    SetError::Refused(format!(
                        "the target's migration lock was lost (another process took it over, or the server ended its session); up started no more steps. {}",
                        "The history records each step where it stopped; run `rowshift up` again"
                    )),
                ));
                stop = true;
            }
            while !stop && running < width {
                let ready = todo.iter().find(|s| {
                    at[&s.number] == At::Waiting
                        && waits[&s.number].iter().all(|w| at[w] == At::Applied)
                });
                let Some(step) = ready.copied() else { break };
                at.insert(step.number, At::Running);
                running += 1;
                let tx = tx.clone();
                let existing = records.get(&step.number);
                let chain = &chains[&step.number];
                std::thread::Builder::new()
                    .name(format!("rowshift-step-{}", step.number))
                    .spawn_scoped(scope, move || {
                        // Each step reports the statements its own thread executes.
                        trace::start();
                        // A panic is reported as the step's error, so that the scheduler,
                        // waiting for each running step's end, is never left waiting.
                        let outcome =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                apply_step(session, step, existing, chain, opts)
                            }))
                            .unwrap_or_else(|p| {
                                let why = p
                                    .downcast_ref::<&str>()
                                    .map(|s| s.to_string())
                                    .or_else(|| p.downcast_ref::<String>().cloned())
                                    .unwrap_or_default();
                                Err(SetError::Step {
                                    step: step.label(),
                                    source: crate::Error::Internal(format!(
                                        "the step's thread panicked: {why}"
                                    )),
                                })
                            });
                        if let Ok(o) = &outcome {
                            session
                                .observer
                                .on_set_event(&SetEvent::StepDone(Box::new(o.clone())));
                            crash_point(step.number, "done");
                        }
                        trace::stop();
                        let _ = tx.send((step.number, outcome));
                    })
                    .expect("a thread for a step");
            }
            if running == 0 {
                break;
            }
            let (n, outcome) = rx.recv().expect("a running step reports its end");
            running -= 1;
            match outcome {
                Ok(o) => {
                    at.insert(n, At::Applied);
                    // Rows in the quarantine: up stops after this step.
                    stop |= o.record.rows_rejected > 0;
                    out.done.push(o);
                }
                Err(e) => {
                    at.insert(n, At::Failed);
                    errors.push((n, e));
                    stop = true;
                }
            }
        }
    });
    out.not_started = at
        .iter()
        .filter(|(_, a)| **a == At::Waiting)
        .map(|(n, _)| *n)
        .collect();
    errors.sort_by_key(|(n, _)| *n);
    out.error = errors.into_iter().next().map(|(_, e)| e);
    out
}

fn apply_step(
    session: &Session<'_>,
    step: &Step,
    existing: Option<&Record>,
    chain: &str,
    opts: &MigrateOptions,
) -> Result<StepOutcome, SetError> {
    let t0 = Instant::now();
    let mut history_nanos = 0u128;
    let resumed = existing.is_some_and(|r| r.state != State::Reverted && !untouched(r));
    session.observer.on_set_event(&SetEvent::StepStarted {
        step: step.number,
        name: step.name.clone(),
        direction: "up",
        resumed,
    });
    let mut record = match existing {
        Some(r) if resumed => {
            let mut r = r.clone();
            r.state = State::Running;
            r.error = None;
            r.pid = session.who.pid;
            r.host = session.who.host.clone();
            r.run_by = session.who.user.clone();
            r
        }
        _ => {
            // A step applied, reverted and applied again moves its data from nothing.
            session.discard_checkpoint(step)?;
            session.fresh_record(step, chain)
        }
    };
    let h0 = Instant::now();
    session.save(&record)?;
    history_nanos += h0.elapsed().as_nanos();
    let (up, after) = step.up_statements();
    let has_data = step.pipeline.is_some();
    let online = step.is_online();
    // After the data move and its `after` section: an online step cuts over, the new
    // table (indexed by then) taking the source table's name.
    let last = if online { Phase::Cutover } else { Phase::Done };
    let mut statements = 0;
    let mut data = None;
    let mut caught_up = None;
    let mut swap = None;
    loop {
        match record.phase {
            Phase::Up => {
                let next_phase = match (has_data, after.is_empty()) {
                    (true, _) => Phase::Data,
                    (false, false) => Phase::After,
                    (false, true) => Phase::Done,
                };
                statements += session.run_statements(
                    step,
                    "up",
                    up,
                    &mut record,
                    |r| advance(r, next_phase),
                    &mut history_nanos,
                )?;
            }
            Phase::Data | Phase::CatchUp => {
                let (summary, report) = session.move_data(step, &mut record, opts)?;
                caught_up = report.or(caught_up);
                // What the source held when its rows were moved, for down to compare. An
                // online step's source goes on changing, and down swaps it back instead.
                let pipeline = step.pipeline.as_ref().expect("a data step");
                let figures = match online {
                    true => Ok(None),
                    false => rollback::source_figures(pipeline, &session.io),
                };
                let figures = match figures {
                    Ok(f) => f,
                    Err(e) => {
                        record.state = State::Failed;
                        record.error = Some(redact(&e.to_string()));
                        session.save(&record)?;
                        return Err(SetError::Step {
                            step: step.label(),
                            source: e,
                        });
                    }
                };
                record.source_rows = figures.as_ref().map(|f| f.rows);
                record.source_checksum = figures.map(|f| f.checksum);
                advance(
                    &mut record,
                    if after.is_empty() { last } else { Phase::After },
                );
                let h0 = Instant::now();
                session.save(&record)?;
                history_nanos += h0.elapsed().as_nanos();
                data = Some(summary);
            }
            Phase::After => {
                statements += session.run_statements(
                    step,
                    "after",
                    after,
                    &mut record,
                    |r| advance(r, last),
                    &mut history_nanos,
                )?;
            }
            Phase::Cutover => {
                // A step that is not online (any more: its files changed and were
                // accepted) has nothing to cut over.
                let cut = match online {
                    true => session.cut_over(step, &mut record, opts)?,
                    false => Cut::Swapped(None),
                };
                match cut {
                    Cut::Swapped(report) => {
                        swap = report.map(|r| *r);
                        crash_point(step.number, "cutover");
                        advance(&mut record, Phase::Done);
                    }
                    // The capture went before the swap: copied again, with a new one.
                    Cut::Recopy => advance(&mut record, Phase::Data),
                }
                let h0 = Instant::now();
                session.save(&record)?;
                history_nanos += h0.elapsed().as_nanos();
            }
            Phase::Done | Phase::Finalized => break,
            Phase::Down | Phase::Reverse | Phase::SwapBack => {
                return Err(SetError::Refused(format!(
                    "{} is recorded mid-down; run `rowshift down` again to finish it",
                    step.label()
                )));
            }
        }
    }
    Ok(StepOutcome {
        step: step.number,
        name: step.name.clone(),
        kind: step.kind().into(),
        direction: "up",
        resumed,
        statements,
        record,
        seconds: t0.elapsed().as_secs_f64(),
        history_seconds: history_nanos as f64 / 1e9,
        data,
        online: online.then(|| {
            let t = Tables::of(step.pipeline.as_ref().expect("an online step moves data"));
            OnlineOutcome {
                catch_up: caught_up,
                swap,
                table: t.source,
                kept: t.old,
                reverse: step.reverse.is_some(),
            }
        }),
    })
}

/// Which way a data move goes: a step's pipeline (`up`) or its reverse pipeline (`down`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    Up,
    Down,
}

/// A pipeline's file, as messages name it.
pub(super) fn pipeline_file(p: &crate::config::Pipeline) -> String {
    p.file.file_name().map_or_else(
        || p.file.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    )
}

/// Moves a record to `phase`; at `Done` the step is applied.
fn advance(r: &mut Record, phase: Phase) {
    r.phase = phase;
    r.statements_done = 0;
    if phase == Phase::Done {
        r.state = State::Applied;
        r.ended_at = Some(now());
        r.error = None;
    }
}

/// Records the steps up to `opts.to` as applied without running them: for a database
/// already at that step. Refused when the set already has a history in the target.
pub fn baseline(
    set: &MigrationSet,
    opts: &MigrateOptions,
    observer: &dyn SetObserver,
) -> Result<BaselineReport, SetError> {
    let Some(to) = opts.to else {
        return Err(SetError::Refused(
            "baseline needs --to N, the step the database is at".into(),
        ));
    };
    let session = Session::open(set, opts, observer)?;
    let out = (|| {
        let records = session.records()?;
        let live: Vec<String> = records
            .values()
            .filter(|r| r.state != State::Reverted)
            .map(|r| format!("{} ({})", r.step, r.name))
            .collect();
        if !live.is_empty() {
            return Err(SetError::Refused(format!(
                "set {} already has a history in {}: steps {}; baseline is for a database the set has never run on",
                set.name,
                session.history.shown(),
                live.join(", ")
            )));
        }
        let steps: Vec<&Step> = set.steps.iter().filter(|s| s.number <= to).collect();
        if steps.is_empty() {
            return Err(SetError::Refused(format!(
                "the set has no step numbered {to} or lower"
            )));
        }
        let chains = chains(set);
        let mut done = Vec::new();
        for step in steps {
            let mut r = session.fresh_record(step, &chains[&step.number]);
            r.state = State::Baseline;
            r.phase = Phase::Done;
            r.ended_at = Some(r.started_at.clone());
            session.save(&r)?;
            done.push(step.number);
        }
        Ok(BaselineReport {
            set: set.name.clone(),
            target: set.shown.clone(),
            steps: done,
        })
    })();
    session.close();
    out
}
