//! Text rendering of dry-run reports for a terminal.

use std::fmt::Write;

use rowshift::run::{DryRunReport, fmt_duration};

fn cell(value: &Option<String>) -> String {
    match value {
        None => "NULL".into(),
        Some(v) => {
            let flat = v.replace('\n', "\\n");
            let n = flat.chars().count();
            if n > 40 {
                format!("'{}…'", flat.chars().take(40).collect::<String>())
            } else {
                format!("'{flat}'")
            }
        }
    }
}

fn row(cells: &[(String, Option<String>)]) -> String {
    cells
        .iter()
        .map(|(k, v)| format!("{k}={}", cell(v)))
        .collect::<Vec<_>>()
        .join("  ")
}

/// Renders a status report as readable text.
pub fn status_text(r: &rowshift::run::StatusReport) -> String {
    let mut s = String::new();
    if !r.recorded {
        let _ = writeln!(s, "{}: no run recorded in {}", r.pipeline, r.checkpoint);
        return s;
    }
    let _ = writeln!(
        s,
        "{}: planned {} ({})",
        r.pipeline,
        r.created_at.as_deref().unwrap_or("?"),
        r.checkpoint
    );
    let states: Vec<String> = r
        .chunks
        .iter()
        .map(|(k, v)| match (k.as_str(), &r.running) {
            ("running", rowshift::run::RunningState::Interrupted) => {
                format!("{v} interrupted (no live process)")
            }
            _ => format!("{v} {k}"),
        })
        .collect();
    let _ = writeln!(
        s,
        "  chunks   {} of {} done ({:.1}%): {}",
        r.chunks["done"],
        r.chunks_total,
        r.progress_percent,
        states.join(", ")
    );
    let c = &r.rows;
    let _ = writeln!(
        s,
        "  rows     {} read, {} written, {} filtered, {} rejected (done chunks)",
        c.read, c.written, c.filtered, c.rejected
    );
    if let rowshift::run::RunningState::Live { holder } = &r.running {
        let _ = writeln!(s, "  running  now, by {holder}");
    }
    if !r.workers.is_empty() {
        let _ = writeln!(s, "  workers  {}", r.workers.len());
        for w in &r.workers {
            let holds = match w.holds.as_slice() {
                [] => String::new(),
                ids => format!(
                    ", holds chunk {}",
                    ids.iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let _ = writeln!(
                s,
                "    {} {}: {} chunks, {} rows read ({:.0} rows/s), last heartbeat {:.1}s ago{holds}",
                w.id,
                w.state,
                w.chunks_done,
                w.rows_read,
                w.rows_per_second,
                w.heartbeat_seconds_ago
            );
        }
    }
    for f in &r.failed {
        let _ = writeln!(
            s,
            "  failed   {} after {} attempts: {}",
            f.range, f.attempts, f.error
        );
    }
    if r.rejects.is_empty() {
        let _ = writeln!(s, "  rejects  none in {}", r.quarantine);
    } else {
        let total: u64 = r.rejects.iter().map(|g| g.count).sum();
        let _ = writeln!(s, "  rejects  {total} in {}", r.quarantine);
        for g in &r.rejects {
            let _ = writeln!(
                s,
                "    {} × {}\n        e.g. {}",
                g.count, g.reason, g.example
            );
        }
    }
    if !r.changes.is_empty() {
        let _ = writeln!(
            s,
            "  the pipeline file changed since the plan:\n    {}",
            r.changes.join("\n    ")
        );
    }
    s
}

/// Renders a dry-run report as readable text.
pub fn dry_run_text(r: &DryRunReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "dry run of {} on a {} sample of {} (nothing is written)",
        r.pipeline, r.sample_mode, r.source
    );
    let _ = writeln!(s, "\ntarget: {}", r.target);
    let width = r.columns.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in &r.columns {
        let _ = writeln!(
            s,
            "  {:width$}  {:14} {}{}",
            c.name,
            c.r#type,
            if c.nullable { "null" } else { "not null" },
            if c.primary_key { "  primary key" } else { "" }
        );
    }
    let _ = writeln!(s, "\nrun would execute:");
    for d in &r.ddl {
        for line in d.lines() {
            let _ = writeln!(s, "  {line}");
        }
    }
    let _ = writeln!(
        s,
        "\npreview ({} of the rows that would be written):",
        r.preview.len()
    );
    for p in &r.preview {
        let _ = writeln!(
            s,
            "  {}\n    before: {}\n    after:  {}",
            p.location,
            row(&p.source),
            row(&p.target)
        );
    }
    let c = &r.rows;
    let _ = writeln!(
        s,
        "\nsample: {} rows read, {} would be written, {} filtered out, {} rejected",
        c.read, c.written, c.filtered, c.rejected
    );
    if let Some(why) = &r.nothing_read {
        let _ = writeln!(s, "{why}");
    }
    if !r.rejects.is_empty() {
        let _ = writeln!(s, "\nrejected rows by reason:");
        for g in &r.rejects {
            let _ = writeln!(s, "  {} × {}", g.count, g.reason);
            for e in &g.examples {
                let _ = writeln!(s, "      {e}");
            }
        }
    }
    if !r.warnings.is_empty() {
        let _ = writeln!(s, "\nrows written with a warning (policy = \"warn\"):");
        for g in &r.warnings {
            let _ = writeln!(s, "  {} × {}", g.count, g.reason);
            for e in &g.examples {
                let _ = writeln!(s, "      {e}");
            }
        }
    }
    if !r.filtered.is_empty() {
        let _ = writeln!(s, "\nrows the filter drops (first {}):", r.filtered.len());
        for f in &r.filtered {
            let _ = writeln!(s, "  {}: {}", f.location, row(&f.source));
        }
    }
    match (&r.plan, &r.plan_error) {
        (Some(p), _) => {
            let total = p
                .total_rows
                .map_or("an unknown number of".to_string(), |t| t.to_string());
            let _ = write!(
                s,
                "\nplan for the full source: {} chunks of up to {} rows, {total} rows in all",
                p.chunks, p.rows_per_chunk
            );
            if let Some(secs) = p.estimated_seconds.filter(|s| s.is_finite() && *s >= 0.0) {
                let _ = write!(
                    s,
                    "; about {} with {} in parallel at the sample's read+transform speed (writes not included)",
                    fmt_duration(std::time::Duration::from_secs_f64(secs)),
                    p.parallel
                );
            }
            let _ = writeln!(s);
        }
        (None, Some(e)) => {
            let _ = writeln!(s, "\nplan for the full source: unavailable ({e})");
        }
        (None, None) => {}
    }
    if !r.repeated_keys.is_empty() {
        let _ = writeln!(
            s,
            "\nthe key is not unique: the sample holds these values more than once:\n  {}\na file is split into chunks by position and each chunk is found in the target by its keys, so a run fails the chunks that share a key; use a unique key; exit code 1",
            r.repeated_keys.join("\n  ")
        );
    } else if r.would_fail {
        let _ = writeln!(
            s,
            "\nthe sample's rejected rows exceed the pipeline's [limits] (none set: any rejected row counts); exit code 1"
        );
    }
    s
}

/// Renders a verify report as readable text.
pub fn verify_text(r: &rowshift::run::VerifyReport, target: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "rowshift verify: {} against {} ({})",
        r.pipeline,
        target,
        fmt_duration(std::time::Duration::from_secs_f64(r.seconds))
    );
    let _ = writeln!(
        s,
        "  chunks   {} compared, {} differ{}",
        r.chunks_checked,
        r.differences.len(),
        if r.chunks_not_done > 0 {
            format!(", {} not done (not compared)", r.chunks_not_done)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        s,
        "  rows     {} expected from the source, {} found in the target",
        r.rows_expected, r.rows_found
    );
    for d in &r.differences {
        let _ = writeln!(
            s,
            "  differs  {}: {} rows expected, {} found; first difference: {}",
            d.range, d.expected_rows, d.found_rows, d.detail
        );
    }
    match &r.repair {
        Some(sum) => {
            let _ = writeln!(
                s,
                "  repaired {} of {} chunks ({} rows written){}",
                sum.chunks_done,
                r.differences.len(),
                sum.rows.written,
                if sum.chunks_failed > 0 {
                    format!(
                        "; {} failed: {}",
                        sum.chunks_failed,
                        sum.failures
                            .iter()
                            .map(|f| f.line())
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                } else {
                    String::new()
                }
            );
        }
        None if !r.differences.is_empty() => {
            let _ = writeln!(s, "  rewrite them with: rowshift verify --repair");
        }
        None => {}
    }
    s
}
