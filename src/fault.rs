//! Faults injected by tests through the environment (`ROWSHIFT_FAULT`,
//! `ROWSHIFT_FAULT_SQL`): a chunk that fails, fails transiently, pauses or crashes the
//! process at a point a sink names. Nothing here acts unless a test sets the variable.

use std::time::Duration;

use crate::{Error, Result};

/// A fault for tests, from `ROWSHIFT_FAULT`.
#[derive(Default)]
struct Fault {
    /// The chunk it hits.
    chunk: Option<usize>,
    /// `transient=N`: its first N attempts fail with a transient error.
    transient: Option<u32>,
    /// `crash=POINT`: the process aborts when the chunk reaches the point a sink names.
    crash: Option<String>,
    /// `pause=MS`: the chunk (every chunk, without `chunk=`) waits this long before its
    /// commit, with its rows sent: a run that holds its lock for a while, or one killed
    /// mid-transaction.
    pause: Option<u64>,
    /// `at=claim`: the failures of `transient=N` or a permanent one hit the chunk's
    /// claim instead of its commit.
    at_claim: bool,
}

impl Fault {
    fn from_env() -> Option<Fault> {
        let spec = std::env::var("ROWSHIFT_FAULT").ok()?;
        let mut fault = Fault::default();
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("chunk", v)) => fault.chunk = v.parse().ok(),
                Some(("transient", v)) => fault.transient = v.parse().ok(),
                Some(("crash", v)) => fault.crash = Some(v.to_string()),
                Some(("pause", v)) => fault.pause = v.parse().ok(),
                Some(("at", "claim")) => fault.at_claim = true,
                _ => {}
            }
        }
        Some(fault)
    }
}

/// Fails a chunk's commit for tests: `ROWSHIFT_FAULT=chunk=3` fails chunk 3 permanently;
/// `chunk=3,transient=2` fails its first two attempts with a transient error; `pause=MS`
/// delays it.
pub fn inject_fault(chunk: usize, attempt: u32) -> Result<()> {
    inject_fault_at(chunk, attempt, false)
}

/// [`inject_fault`] at the chunk's claim (`at=claim`) or its commit.
pub fn inject_fault_at(chunk: usize, attempt: u32, claim: bool) -> Result<()> {
    let Some(fault) = Fault::from_env() else {
        return Ok(());
    };
    if fault.at_claim != claim {
        return Ok(());
    }
    if let Some(ms) = fault.pause
        && fault.chunk.is_none_or(|c| c == chunk)
    {
        std::thread::sleep(Duration::from_millis(ms));
        if fault.transient.is_none() {
            return Ok(());
        }
    }
    match (fault.chunk == Some(chunk), fault.transient, fault.crash) {
        (false, _, _) | (true, None, Some(_)) => Ok(()),
        (true, None, None) => Err(Error::Unsupported(format!(
            "injected fault in the sink for chunk {chunk} (ROWSHIFT_FAULT)"
        ))),
        (true, Some(n), _) if attempt <= n => Err(Error::db(
            "injected fault (ROWSHIFT_FAULT)",
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset",
            )),
        )),
        (true, Some(_), _) => Ok(()),
    }
}

/// Aborts the process, as a crash would, when `ROWSHIFT_FAULT=chunk=N,crash=POINT` names
/// this chunk and point: for tests of what a run that dies there leaves behind.
pub fn crash_point(chunk: usize, point: &str) {
    if let Some(fault) = Fault::from_env()
        && fault.chunk == Some(chunk)
        && fault.crash.as_deref() == Some(point)
    {
        std::process::abort();
    }
}

/// Aborts the process when `ROWSHIFT_FAULT=crash=POINT` names this point of the run
/// itself (no chunk): for tests of a run that dies after its chunks, at `post-load`
/// (before the post-load DDL) or `post-load:NAME` (just after the index or constraint
/// NAME was built).
pub fn crash_run(point: &str) {
    if let Some(fault) = Fault::from_env()
        && fault.chunk.is_none()
        && fault.crash.as_deref() == Some(point)
    {
        std::process::abort();
    }
}

/// The statement a test has run on the target when `chunk` reaches `point`:
/// `ROWSHIFT_FAULT_SQL=CHUNK:POINT:SQL`, standing in for another writer that changes a
/// committed row before its read-back. At the point `cutover-lock` (chunk 0) the cut-over
/// runs it just before it takes its lock: a writer's statement that lands after the
/// catch-up, so that the drain under the lock has changes to replay.
pub fn fault_sql(chunk: usize, point: &str) -> Option<String> {
    let spec = std::env::var("ROWSHIFT_FAULT_SQL").ok()?;
    let (at, rest) = spec.split_once(':')?;
    let (p, sql) = rest.split_once(':')?;
    (at.parse() == Ok(chunk) && p == point).then(|| sql.to_string())
}
