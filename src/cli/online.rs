//! `rowshift cutover`, `catchup`, `down PIPELINE`, `pause`, `resume` and `finalize`, and
//! the online lines of `run` and `status` (docs/online.md).

use std::path::Path;
use std::time::Duration;

use rowshift::online::{self, CaptureStatus, OnlineReport};

/// The pipeline in `path` as the online commands need it: after a cut-over, the whole
/// pipeline may not compile against the new table under the source's name
/// ([`online::plan_for_commands`]).
fn load(path: &Path) -> rowshift::Result<rowshift::plan::Plan> {
    online::plan_for_commands(rowshift::config::Pipeline::load(path)?)
}

/// `rowshift cutover PIPELINE`.
pub fn cutover(pipeline: &Path, json: bool, lock_timeout: u64) -> anyhow::Result<i32> {
    let plan = load(pipeline)?;
    let sink = plan.open_sink()?;
    if !json && online::same_database(&plan) && plan.pipeline.online.reverse.is_none() {
        // Said before the swap, so that it can still be stopped (issue: a move without
        // a way back says so before its cut-over).
        let table = plan
            .pipeline
            .source
            .table
            .as_ref()
            .map_or(String::new(), |t| t.value.clone());
        eprintln!(
            "note: this pipeline has no reverse pipeline ([online] reverse), so `rowshift down` cannot swap its cut-over back: the old table stays as {table}{} until `rowshift finalize`, but writes made after the cut-over do not reach it; rolling back would mean renaming by hand while writes are stopped, losing those writes",
            online::OLD_SUFFIX
        );
    }
    let report = online::cutover_pipeline(
        &plan,
        sink.as_ref(),
        Duration::from_secs(lock_timeout),
        None,
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report_text(&report));
    }
    Ok(warned(&report))
}

/// Exit 1 when the swap committed but a foreign key failed its validation and stays
/// `NOT VALID`, else 0.
fn warned(report: &OnlineReport) -> i32 {
    i32::from(
        report
            .cutover
            .as_ref()
            .is_some_and(|c| !c.warnings.is_empty()),
    )
}

/// `rowshift down PIPELINE`: swaps an online move's cut-over back.
pub fn down(pipeline: &Path, json: bool, force: bool, lock_timeout: u64) -> anyhow::Result<i32> {
    let plan = load(pipeline)?;
    let sink = plan.open_sink()?;
    let report = online::swap_back(
        &plan,
        sink.as_ref(),
        Duration::from_secs(lock_timeout),
        force,
        None,
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    let name = |t: Option<&rowshift::config::Spanned<String>>| {
        t.map_or(String::new(), |t| t.value.clone())
    };
    let (table, new) = (
        name(plan.pipeline.source.table.as_ref()),
        name(plan.pipeline.target.table.as_ref()),
    );
    println!(
        "reverse: replayed {} changes made since the cut-over into the old table in {} transactions ({} rows written, {} quarantined) in {:.2}s",
        report.replayed, report.batches, report.rows_written, report.rejected, report.seconds
    );
    if let Some(c) = &report.cutover {
        println!(
            "swap-back: swapped after {} lock attempt(s); writes waited {:.1} ms, {} changes drained under the lock and {} rows of their keys read back and found as written",
            c.attempts, c.lock_ms, c.drained, c.read_back
        );
        for m in &c.moved {
            println!("swap-back: {m}");
        }
        for w in &c.warnings {
            println!("warning: {w}");
        }
    }
    println!(
        "swapped back: table {table} is the old table again, with every write made since the cut-over; the new table is {new} again (it takes no more writes); the capture is removed, so moving again starts with `rowshift run --restart`"
    );
    Ok(warned(&report))
}

/// `rowshift catchup PIPELINE`.
pub fn catch_up(pipeline: &Path, json: bool, lock_timeout: u64) -> anyhow::Result<i32> {
    let plan = load(pipeline)?;
    let sink = plan.open_sink()?;
    let done = online::catch_up_pipeline(
        &plan,
        sink.as_ref(),
        Duration::from_secs(lock_timeout),
        None,
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    } else {
        if done.direction == "reverse" {
            println!("reverse: the changes made since the cut-over, replayed into the old table");
        }
        print!("{}", report_text(&done.report));
    }
    Ok(0)
}

/// `rowshift finalize PIPELINE`.
pub fn finalize(pipeline: &Path) -> anyhow::Result<i32> {
    let plan = load(pipeline)?;
    let sink = plan.open_sink()?;
    let old = online::finalize(&plan, sink.as_ref())?;
    sink.finish()?;
    if online::same_database(&plan) {
        println!(
            "dropped the old table {old} and the change log of pipeline {}",
            plan.pipeline.name
        );
    } else {
        println!(
            "dropped the capture triggers and the change log of pipeline {}",
            plan.pipeline.name
        );
    }
    Ok(0)
}

/// The pipeline in `path`, which must be an online move.
fn online_pipeline(path: &Path) -> anyhow::Result<rowshift::config::Pipeline> {
    let p = rowshift::config::Pipeline::load(path)?;
    if !p.online.enabled {
        anyhow::bail!(
            "{}: pipeline {} is not an online move ([online] enabled = true): there is no catch-up to pause",
            path.display(),
            p.name
        );
    }
    Ok(p)
}

/// `rowshift pause PIPELINE`.
pub fn pause(pipeline: &Path) -> anyhow::Result<i32> {
    let p = online_pipeline(pipeline)?;
    let flag = online::throttle::pause(&p.file)?;
    println!(
        "paused pipeline {}: its catch-up stops before its next batch and keeps its place (flag file {}); `rowshift resume` goes on",
        p.name,
        flag.display()
    );
    Ok(0)
}

/// `rowshift resume PIPELINE`.
pub fn resume(pipeline: &Path) -> anyhow::Result<i32> {
    let p = online_pipeline(pipeline)?;
    match online::throttle::resume(&p.file)? {
        Some(flag) => println!(
            "resumed pipeline {}: removed {}; its catch-up goes on from where it stopped",
            p.name,
            flag.display()
        ),
        None => println!("pipeline {} was not paused", p.name),
    }
    Ok(0)
}

/// What an online run's catch-up and cut-over did, as text.
pub fn report_text(r: &OnlineReport) -> String {
    let mut out = String::new();
    let pos = |p: Option<rowshift::source::capture::Position>| {
        p.map_or("the start of the log".to_string(), |p| {
            format!("log position {p}")
        })
    };
    out.push_str(&format!(
        "online: replayed {} changes in {} transactions ({} rows written, {} quarantined, {} read back as written) in {:.2}s; the target is current as of {}\n",
        r.replayed,
        r.batches,
        r.rows_written,
        r.rejected,
        r.read_back,
        r.seconds,
        pos(r.position)
    ));
    if r.paused_seconds > 0.0 || r.throttled_seconds > 0.0 {
        out.push_str(&format!(
            "online: the catch-up waited {:.1}s paused (rowshift pause) and {:.1}s on a busy source server\n",
            r.paused_seconds, r.throttled_seconds
        ));
    }
    match &r.cutover {
        Some(c) if c.swapped => out.push_str(&format!(
            "cut-over: swapped after {} lock attempt(s); writes waited {:.1} ms, {} changes drained under the lock and {} rows of their keys read back and found as written; the old table is {} (rowshift finalize drops it)\n",
            c.attempts,
            c.lock_ms,
            c.drained,
            c.read_back,
            c.old_table.as_deref().unwrap_or("")
        )),
        Some(c) => out.push_str(&format!(
            "cut-over: source and target are different databases, so nothing was renamed: the target holds every change up to {} (at least all logged when the cut-over began); once writes to the source stop, run the cut-over again, point the application at the target, then run rowshift finalize to drop the capture\n",
            pos(c.position)
        )),
        None => out.push_str(&format!(
            "capture lag: {} changes, the oldest {:.1}s old\n",
            r.lag.rows, r.lag.oldest_seconds
        )),
    }
    if let Some(c) = &r.cutover {
        for m in &c.moved {
            out.push_str(&format!("cut-over: {m}\n"));
        }
        for w in &c.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
    }
    out
}

/// The capture's lines of `rowshift status`.
pub fn status_text(s: &CaptureStatus) -> String {
    let mut out = format!(
        "online: capture on {} is {}; replayed {} changes, up to {}\ncapture lag: {} changes, the oldest {:.1}s old\n",
        s.capture,
        match (s.installed, s.logged, s.position) {
            (true, _, _) => "installed",
            (false, true, _) => "removed (cut over)",
            (false, false, None) => "not installed yet (a run installs it before its copy)",
            (false, false, Some(_)) => "removed, with its change log",
        },
        s.replayed,
        s.position
            .map_or("none yet".to_string(), |p| format!("log position {p}")),
        s.lag.rows,
        s.lag.oldest_seconds
    );
    if let Some(p) = &s.paused {
        out.push_str(&format!(
            "capture: {p}; the catch-up waits (rowshift resume goes on)\n"
        ));
    }
    if let Some(t) = &s.throttled {
        out.push_str(&format!("capture: throttled: {t}; the catch-up waits\n"));
    }
    if let Some(t) = &s.truncated {
        out.push_str(&format!(
            "capture: {t}; the cut-over will be refused (run with --restart to copy again)\n"
        ));
    }
    if let Some(r) = &s.reverse {
        out.push_str(&format!(
            "reverse: capture on {} is {}; replayed {} changes into {}, up to {}\nreverse lag: {} changes, the oldest {:.1}s old (rowshift catchup replays them, rowshift down swaps back)\n",
            r.capture,
            if r.installed { "installed" } else { "removed" },
            r.replayed,
            r.old_table,
            r.position
                .map_or("none yet".to_string(), |p| format!("log position {p}")),
            r.lag.rows,
            r.lag.oldest_seconds
        ));
    }
    out
}
