//! Progress output: bars on a terminal, plain log lines otherwise.

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

use rowshift::run::{Event, Observer, fmt_duration};

/// Plain log lines on stderr, for CI logs and pipes.
pub struct Lines;

impl Observer for Lines {
    fn on_event(&self, event: &Event) {
        match event {
            Event::Planned {
                chunks,
                rows,
                skipped,
            } => {
                let rows = rows.map(|r| format!(", {r} rows")).unwrap_or_default();
                let resumed = if *skipped > 0 {
                    format!(" ({skipped} done by an earlier run)")
                } else {
                    String::new()
                };
                eprintln!("{chunks} chunks to run{rows}{resumed}");
            }
            Event::ChunkDone {
                chunk,
                counts,
                elapsed,
            } => eprintln!(
                "chunk {chunk} done: {} read, {} written, {} filtered in {}",
                counts.read,
                counts.written,
                counts.filtered,
                fmt_duration(*elapsed)
            ),
            Event::ChunkFailed { chunk, error } => eprintln!("chunk {chunk} FAILED: {error}"),
            Event::ChunkLost { chunk, reason } => eprintln!("{}", lost(*chunk, reason)),
            Event::WaitingForLock { holder, limit } => eprintln!("{}", waiting(holder, *limit)),
            _ => {}
        }
    }
}

/// An indicatif bar: chunks done of total, rows/s, ETA.
pub struct Bars {
    bar: Mutex<Option<ProgressBar>>,
    rows: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
}

impl Bars {
    /// A bar that appears once the plan is known.
    pub fn new() -> Self {
        Bars {
            bar: Mutex::new(None),
            rows: 0.into(),
            started: std::time::Instant::now(),
        }
    }
}

impl Observer for Bars {
    fn on_event(&self, event: &Event) {
        let mut guard = self.bar.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Planned { chunks, .. } => {
                let bar = ProgressBar::new(*chunks as u64);
                bar.set_style(
                    ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} chunks  {msg}  ETA {eta}")
                        .expect("valid template"),
                );
                *guard = Some(bar);
            }
            Event::ChunkDone { counts, .. } => {
                let rows = self
                    .rows
                    .fetch_add(counts.read, std::sync::atomic::Ordering::Relaxed)
                    + counts.read;
                if let Some(bar) = guard.as_ref() {
                    let rate = rows as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
                    bar.set_message(format!("{rows} rows, {rate:.0} rows/s"));
                    bar.inc(1);
                }
            }
            Event::ChunkFailed { chunk, error } => {
                if let Some(bar) = guard.as_ref() {
                    bar.println(format!("chunk {chunk} FAILED: {error}"));
                    bar.inc(1);
                }
            }
            Event::ChunkLost { chunk, reason } => match guard.as_ref() {
                Some(bar) => bar.println(lost(*chunk, reason)),
                None => eprintln!("{}", lost(*chunk, reason)),
            },
            Event::WaitingForLock { holder, limit } => eprintln!("{}", waiting(holder, *limit)),
            Event::Finished(_) => {
                if let Some(bar) = guard.take() {
                    bar.finish_and_clear();
                }
            }
            _ => {}
        }
    }
}

/// What a worker of a shared run says when it gives a chunk up.
fn lost(chunk: usize, reason: &str) -> String {
    format!("chunk {chunk} given up: its lease ran out and another worker takes it ({reason})")
}

/// What a run waiting for the pipeline's lock says.
pub fn waiting(holder: &rowshift::checkpoint::Holder, limit: std::time::Duration) -> String {
    format!(
        "another run holds this pipeline ({holder}); waiting up to {} for it to end (--lock-timeout)",
        fmt_duration(limit)
    )
}
