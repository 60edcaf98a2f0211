//! The migration-set commands: `up`, `down`, `baseline`, and `status` and `validate` on a
//! set's directory. Draws the library's `SetEvent`s and prints the reports.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use rowshift::config::Pipeline;
use rowshift::migrate::{
    self, Entry, MigrateOptions, MigrationSet, OnlineOutcome, PlanOptions, SetEvent, SetObserver,
    StatusReport, StepOutcome, TestRollbackOptions,
};
use rowshift::run::{self, Event, Observer, fmt_duration};

use super::progress;

/// Step lines on stderr, with the data moves' chunk progress (unless quiet) and, with
/// `--print-sql`, each statement as it was executed. `up` applies independent steps at
/// the same time, so each chunk line names its step; on a terminal each running step has
/// a bar of its own.
struct StepLines {
    quiet: bool,
    print_sql: bool,
    /// The running steps' bars, on a terminal.
    bars: Option<Mutex<StepBars>>,
}

struct StepBars {
    all: MultiProgress,
    /// Each step's name, from its start, to label its bar.
    names: HashMap<u64, String>,
    bars: HashMap<u64, ProgressBar>,
    /// Rows read by each step's chunks so far, and when its move started.
    rows: HashMap<u64, (u64, Instant)>,
}

impl StepLines {
    /// A line on stderr, above the bars when there are some.
    fn say(&self, line: String) {
        match &self.bars {
            Some(b) => {
                let b = b.lock().unwrap_or_else(|p| p.into_inner());
                let _ = b.all.println(line);
            }
            None => eprintln!("{line}"),
        }
    }
}

impl SetObserver for StepLines {
    fn on_set_event(&self, event: &SetEvent) {
        match event {
            SetEvent::WaitingForLock { holder, limit } => self.say(format!(
                "another process holds this target's migration lock ({holder}); waiting up to {} for it (--lock-timeout)",
                fmt_duration(*limit)
            )),
            SetEvent::StepStarted {
                step,
                name,
                direction,
                resumed,
            } => {
                if let Some(b) = &self.bars {
                    let mut b = b.lock().unwrap_or_else(|p| p.into_inner());
                    b.names.insert(*step, name.clone());
                }
                self.say(format!(
                    "step {step} ({name}): {direction}{}",
                    if *resumed {
                        ", continuing where an earlier run stopped"
                    } else {
                        ""
                    }
                ))
            }
            SetEvent::DataStarted { step, pipeline } => {
                self.say(format!("step {step}: moving data (pipeline {pipeline})"))
            }
            SetEvent::Swapping { step, what, table } => self.say(format!(
                "step {step}: {what} of table {table}: catching up, then the lock, the drain of the last changes and the renames"
            )),
            SetEvent::StepDone(o) => self.say(step_line(o)),
            SetEvent::Stage(what) => self.say(format!("test-rollback: {what}")),
            SetEvent::Executed(e) if self.print_sql => {
                let text = entry_text(e);
                self.say(text.trim_end().to_string())
            }
            SetEvent::Executed(_) => {}
        }
    }

    fn run_observer(&self) -> &dyn Observer {
        &run::NoopObserver
    }

    fn on_run_event(&self, step: u64, event: &Event) {
        if let Event::WaitingForLock { holder, limit } = event {
            return self.say(format!(
                "step {step}: {}",
                progress::waiting(holder, *limit)
            ));
        }
        if self.quiet {
            return;
        }
        let Some(bars) = &self.bars else {
            return chunk_line(step, event);
        };
        let mut b = bars.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Planned { chunks, .. } => {
                let bar = b.all.add(ProgressBar::new(*chunks as u64));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:<28} [{elapsed_precise}] {bar:30} {pos}/{len} chunks  {msg}",
                    )
                    .expect("valid template"),
                );
                let name = b.names.get(&step).cloned().unwrap_or_default();
                bar.set_prefix(format!("step {step} ({name})"));
                b.bars.insert(step, bar);
                b.rows.insert(step, (0, Instant::now()));
            }
            Event::ChunkDone { counts, .. } => {
                let (rows, since) = b.rows.get(&step).copied().unwrap_or((0, Instant::now()));
                let rows = rows + counts.read;
                b.rows.insert(step, (rows, since));
                if let Some(bar) = b.bars.get(&step) {
                    let rate = rows as f64 / since.elapsed().as_secs_f64().max(1e-9);
                    bar.set_message(format!("{rows} rows, {rate:.0} rows/s"));
                    bar.inc(1);
                }
            }
            Event::ChunkFailed { chunk, error } => {
                let _ = b
                    .all
                    .println(format!("step {step}: chunk {chunk} FAILED: {error}"));
                if let Some(bar) = b.bars.get(&step) {
                    bar.inc(1);
                }
            }
            Event::Finished(_) => {
                if let Some(bar) = b.bars.remove(&step) {
                    bar.finish_and_clear();
                    b.all.remove(&bar);
                }
            }
            _ => {}
        }
    }
}

/// A data move's chunk event as a log line naming its step.
fn chunk_line(step: u64, event: &Event) {
    match event {
        Event::Planned {
            chunks,
            rows,
            skipped,
        } => {
            let rows = rows.map(|r| format!(", {r} rows")).unwrap_or_default();
            let resumed = match skipped {
                0 => String::new(),
                n => format!(" ({n} done by an earlier run)"),
            };
            eprintln!("step {step}: {chunks} chunks to run{rows}{resumed}");
        }
        Event::ChunkDone {
            chunk,
            counts,
            elapsed,
        } => eprintln!(
            "step {step}: chunk {chunk} done: {} read, {} written, {} filtered in {}",
            counts.read,
            counts.written,
            counts.filtered,
            fmt_duration(*elapsed)
        ),
        Event::ChunkFailed { chunk, error } => {
            eprintln!("step {step}: chunk {chunk} FAILED: {error}")
        }
        _ => {}
    }
}

fn observer(quiet: bool, print_sql: bool) -> StepLines {
    let terminal = std::io::stderr().is_terminal();
    StepLines {
        quiet,
        print_sql,
        bars: (terminal && !quiet).then(|| {
            Mutex::new(StepBars {
                all: MultiProgress::new(),
                names: HashMap::new(),
                bars: HashMap::new(),
                rows: HashMap::new(),
            })
        }),
    }
}

/// A statement as a plan or `--print-sql` shows it: a comment line saying where it runs,
/// the lock it takes and, for a load, its rows; then the statement.
pub fn entry_text(e: &Entry) -> String {
    let at = match e.step {
        Some(n) => format!("step {n}"),
        None => "set".to_string(),
    };
    let estimate = e
        .estimate
        .as_ref()
        .map(|r| format!("\n--   rows: {r}"))
        .unwrap_or_default();
    format!(
        "-- {at}, {}; lock: {}{estimate}\n{};\n",
        e.phase, e.lock, e.sql
    )
}

fn step_line(o: &StepOutcome) -> String {
    let r = &o.record;
    let data = match o.kind.as_str() {
        "sql" => String::new(),
        _ if o.direction == "down" => match &o.data {
            Some(d) => format!(
                ", reverse pipeline {}: {} rows moved back, checksum {}",
                d.pipeline, d.rows.written, d.checksum
            ),
            None => String::new(),
        },
        _ => format!(
            ", {} rows read, {} written, {} filtered, {} rejected, checksum {}",
            r.rows_read,
            r.rows_written,
            r.rows_filtered,
            r.rows_rejected,
            r.data_checksum.as_deref().unwrap_or("-")
        ),
    };
    format!(
        "step {} ({}) {}: {} statements{data}{} in {}",
        o.step,
        o.name,
        match o.direction {
            "up" => "applied",
            _ => "reverted",
        },
        o.statements,
        o.online
            .as_ref()
            .map(|x| online_text(o.direction, x))
            .unwrap_or_default(),
        fmt_duration(Duration::from_secs_f64(o.seconds))
    )
}

/// What an online step's catch-up and cut-over, or its swap-back, did: appended to its
/// step line.
fn online_text(direction: &str, o: &OnlineOutcome) -> String {
    let mut out = String::new();
    if let Some(c) = &o.catch_up {
        out.push_str(&format!("; catch-up: {} changes replayed", c.replayed));
    }
    let swap = o
        .swap
        .as_ref()
        .and_then(|s| s.cutover.as_ref().map(|c| (s, c)));
    match (direction, swap) {
        ("up", Some((s, c))) => out.push_str(&format!(
            "; cut-over: {} changes replayed, then writes waited {:.1} ms while {} were drained and read back",
            s.replayed - c.drained,
            c.lock_ms,
            c.drained
        )),
        ("up", None) => out.push_str("; cut-over: swapped by an earlier up"),
        (_, Some((s, c))) => out.push_str(&format!(
            "; swap-back: {} changes replayed into the old table, then writes waited {:.1} ms while {} were drained and read back",
            s.replayed - c.drained,
            c.lock_ms,
            c.drained
        )),
        (_, None) => out.push_str("; swap-back: swapped back by an earlier down"),
    }
    match direction {
        "up" if o.reverse => out.push_str(&format!(
            "; table {} is the new table, the old one is kept as {} (down swaps back; `rowshift finalize` drops it)",
            o.table, o.kept
        )),
        "up" => out.push_str(&format!(
            "; table {} is the new table, the old one is kept as {} until `rowshift finalize`, but without a reverse pipeline writes from now on do not reach it, so down cannot swap back",
            o.table, o.kept
        )),
        _ => out.push_str(&format!(
            "; table {} is the old table again, with every write made since the cut-over; the new table is {} again",
            o.table, o.kept
        )),
    }
    out
}

/// Whether `path` is a migration set's directory.
pub fn is_set(path: &Path) -> bool {
    path.is_dir()
}

fn options(to: Option<u64>, allow_changed: bool, force: bool, lock_timeout: u64) -> MigrateOptions {
    MigrateOptions {
        to,
        allow_changed,
        force,
        lock_wait: Duration::from_secs(lock_timeout),
        parallel: None,
        parallel_steps: None,
    }
}

/// What `rowshift up DIR` was asked.
pub struct UpArgs {
    /// `--to N`.
    pub to: Option<u64>,
    /// `--allow-changed`.
    pub allow_changed: bool,
    /// `--lock-timeout SECONDS`.
    pub lock_timeout: u64,
    /// `--parallel N`: steps applied at once.
    pub parallel: Option<usize>,
    /// `--json`.
    pub json: bool,
    /// `--quiet`.
    pub quiet: bool,
    /// `--print-sql`.
    pub print_sql: bool,
}

/// `rowshift up DIR`.
pub fn up(dir: &Path, args: UpArgs) -> anyhow::Result<i32> {
    let set = MigrationSet::load(dir)?;
    let json = args.json;
    let opts = MigrateOptions {
        parallel_steps: args.parallel,
        ..options(args.to, args.allow_changed, false, args.lock_timeout)
    };
    let report = migrate::up(&set, &opts, &observer(args.quiet, args.print_sql))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(report.exit_code());
    }
    for change in &report.accepted_changes {
        println!("accepted (--allow-changed, recorded in the history): {change}");
    }
    println!(
        "rowshift: set {} -> {}: {} steps applied now, {} were already applied, {} pending{}",
        report.set,
        report.target,
        report.steps.len(),
        report.already_applied,
        report.pending.len(),
        report
            .at
            .map(|a| format!("; at step {a}"))
            .unwrap_or_default()
    );
    for s in &report.steps {
        println!("  {}", step_line(s));
    }
    if report.exit_code() == 1 {
        println!(
            "  rows were rejected (they are in the quarantine); up started no step after it: fix the data or the pipeline, run `rowshift retry --rejects` on it, then `rowshift up` again"
        );
    }
    Ok(report.exit_code())
}

/// `rowshift down DIR --to N`.
pub fn down(
    dir: &Path,
    to: u64,
    force: bool,
    allow_changed: bool,
    lock_timeout: u64,
    json: bool,
    print_sql: bool,
) -> anyhow::Result<i32> {
    let set = MigrationSet::load(dir)?;
    let report = migrate::down(
        &set,
        &options(Some(to), allow_changed, force, lock_timeout),
        &observer(true, print_sql),
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    println!(
        "rowshift: set {} -> {}: {} steps reverted; at step {}",
        report.set,
        report.target,
        report.steps.len(),
        report.at
    );
    for s in &report.steps {
        println!("  {}", step_line(s));
    }
    Ok(0)
}

/// `rowshift test-rollback DIR`.
pub fn test_rollback(dir: &Path, sample: u64, json: bool, quiet: bool) -> anyhow::Result<i32> {
    let set = MigrationSet::load(dir)?;
    let report = migrate::test_rollback(
        &set,
        &TestRollbackOptions {
            sample,
            migrate: options(None, false, false, 0),
        },
        &observer(quiet, false),
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(report.exit_code());
    }
    for c in &report.cleanup {
        eprintln!("warning: test-rollback could not drop its copy: {c}");
    }
    match &report.difference {
        Some(d) => println!("test-rollback: set {}: {d}", report.set),
        None => {
            println!(
                "test-rollback: set {}: up, down and up again on a throwaway copy with a sample of {} rows per source: the second up gave the same target, and every reverse pipeline gave back its rows, in {}",
                report.set,
                report.sample,
                fmt_duration(Duration::from_secs_f64(report.seconds))
            );
            for t in &report.tables {
                println!(
                    "  table {}: {} rows, checksum {}",
                    t.table, t.rows, t.checksum
                );
            }
            for t in &report.round_trips {
                println!(
                    "  step {}: down(up(x)) = x for table {}: {} rows, checksum {}",
                    t.step.unwrap_or(0),
                    t.table,
                    t.rows,
                    t.checksum
                );
            }
        }
    }
    Ok(report.exit_code())
}

/// `rowshift baseline DIR --to N`.
pub fn baseline(dir: &Path, to: u64, lock_timeout: u64) -> anyhow::Result<i32> {
    let set = MigrationSet::load(dir)?;
    let report = migrate::baseline(
        &set,
        &options(Some(to), false, false, lock_timeout),
        &observer(true, false),
    )?;
    let steps: Vec<String> = report.steps.iter().map(u64::to_string).collect();
    println!(
        "rowshift: set {} -> {}: steps {} recorded as applied (baseline); nothing ran",
        report.set,
        report.target,
        steps.join(", ")
    );
    Ok(0)
}

/// `rowshift finalize DIR`.
pub fn finalize(dir: &Path) -> anyhow::Result<i32> {
    let set = MigrationSet::load(dir)?;
    let report = migrate::finalize(
        &set,
        &options(None, false, false, 0),
        &observer(true, false),
    )?;
    println!(
        "rowshift: set {} -> {}: {} online steps finalized now{}",
        report.set,
        report.target,
        report.steps.len(),
        match report.already.len() {
            0 => String::new(),
            n => format!(", {n} were already"),
        }
    );
    for s in &report.steps {
        println!(
            "  step {} ({}): dropped the old table {}, the change logs and the reverse capture; down can no longer swap it back",
            s.step, s.name, s.old_table
        );
    }
    Ok(0)
}

/// `rowshift validate DIR`.
pub fn validate(dir: &Path) -> anyhow::Result<i32> {
    let set = MigrationSet::load(dir)?;
    let data = set.steps.iter().filter(|s| s.pipeline.is_some()).count();
    let online = set.steps.iter().filter(|s| s.is_online()).count();
    println!(
        "ok: set {} in {} has {} steps ({} with a data move{}) for {}",
        set.name,
        dir.display(),
        set.steps.len(),
        data,
        match online {
            0 => String::new(),
            n => format!(", {n} online"),
        },
        set.shown
    );
    for s in set
        .steps
        .iter()
        .filter(|s| s.is_online() && s.reverse.is_none())
    {
        eprintln!(
            "note: {} is an online step without a reverse pipeline ({:03}_{}.down.toml): after its cut-over, down cannot swap it back",
            s.label(),
            s.number,
            s.name
        );
    }
    Ok(0)
}

/// `rowshift status DIR`.
pub fn status(dir: &Path, json: bool) -> anyhow::Result<i32> {
    let set = MigrationSet::load(dir)?;
    let report = migrate::status(&set)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", status_text(&report));
    }
    Ok(0)
}

fn status_text(r: &StatusReport) -> String {
    let mut out = format!(
        "set {} -> {}: {}\n",
        r.set,
        r.target,
        match r.at() {
            Some(n) => format!("at step {n}"),
            None => "no step applied".into(),
        }
    );
    for s in &r.steps {
        out.push_str(&format!(
            "  {:>4} {:<24} {:<8} {:<9}",
            s.step, s.name, s.kind, s.status
        ));
        if let Some(rec) = &s.record
            && s.kind != "sql"
            && rec.state.is_applied()
        {
            out.push_str(&format!(
                " rows {} read, {} written, {} filtered, {} rejected; checksum {}",
                rec.rows_read,
                rec.rows_written,
                rec.rows_filtered,
                rec.rows_rejected,
                rec.data_checksum.as_deref().unwrap_or("-")
            ));
        }
        if let Some(rec) = &s.record
            && rec.state.is_applied()
        {
            out.push_str(&format!(
                " ({} by {}@{})",
                rec.ended_at.as_deref().unwrap_or("-"),
                rec.run_by,
                rec.host
            ));
        }
        out.push('\n');
        if let Some(note) = &s.note {
            out.push_str(&format!("       {note}\n"));
        }
    }
    out
}

/// `rowshift plan DIR` (`--down --to N`, `--to N`) or `rowshift plan PIPELINE`.
pub fn plan(
    path: &Path,
    down: bool,
    to: Option<u64>,
    offline: bool,
    json: bool,
) -> anyhow::Result<i32> {
    if !is_set(path) {
        if down || to.is_some() {
            anyhow::bail!(
                "--down and --to plan a migration set's directory; {} is a pipeline file, planned as one run",
                path.display()
            );
        }
        let plan = migrate::plan_pipeline(&Pipeline::load(path)?, offline)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
            return Ok(0);
        }
        println!(
            "-- plan: one run of pipeline {} -> {} ({}, {})",
            plan.pipeline, plan.target, plan.database, plan.connected
        );
        for note in &plan.notes {
            println!("-- note: {note}");
        }
        for e in &plan.statements {
            print!("\n{}", entry_text(e));
        }
        return Ok(0);
    }
    if down && to.is_none() {
        anyhow::bail!("plan --down needs --to N, the step to go back to (0: every step)");
    }
    let set = MigrationSet::load(path)?;
    let plan = migrate::plan(&set, &PlanOptions { down, to, offline })?;
    let code = if plan.refusal.is_some() { 1 } else { 0 };
    if json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(code);
    }
    println!(
        "-- plan: {} of set {} -> {} ({}, {})",
        plan.command, plan.set, plan.target, plan.database, plan.connected
    );
    for s in &plan.steps {
        let after = match &s.after {
            Some(a) if !a.is_empty() => {
                let a: Vec<String> = a.iter().map(u64::to_string).collect();
                format!(" (after {})", a.join(", "))
            }
            _ => String::new(),
        };
        println!(
            "--   step {:>4} {:<24} {:<8} {}{after}",
            s.step, s.name, s.kind, s.status
        );
    }
    if let Some(why) = &plan.refusal {
        println!("-- refused: {why}");
    }
    for note in &plan.notes {
        println!("-- note: {note}");
    }
    for e in &plan.statements {
        print!("\n{}", entry_text(e));
    }
    Ok(code)
}
