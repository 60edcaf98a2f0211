//! The run lock: one live run per pipeline and target, so that two runs started at once
//! never both write a chunk.
//!
//! PostgreSQL and MySQL hold a session-level lock on a connection kept for the run
//! (`pg_try_advisory_lock`, `GET_LOCK`): the server drops it with the session, so a run
//! killed with SIGKILL never leaves it behind. SQLite has no such lock, so a lease row
//! stands in: it names the host, the process and its start time, and a heartbeat renews
//! it; a lease whose process is gone from this host, or whose heartbeat stopped, is
//! taken over.
//!
//! A keeper thread checks the lock every few seconds for as long as the run holds it. If
//! it is gone (the server ended the session), [`RunLock::lost`] says so and the run
//! starts no more chunks; a commit of a chunk another run took over meanwhile is refused
//! by its claim (see [`super::DoneMark::claim`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::sql::dialect::Conn;
use crate::{Error, Result};

/// How often a held lock is checked (and a lease renewed).
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(5);

/// A lease whose heartbeat is older than this is taken over, whoever holds it: a run on
/// another host cannot be checked any other way.
pub(crate) const LEASE_EXPIRY: Duration = Duration::from_secs(60);

/// How often a run waiting for the lock (`--lock-timeout`) tries again.
const POLL: Duration = Duration::from_millis(250);

/// Who holds a pipeline's run lock.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Holder {
    /// The host the holding process runs on, as it named itself.
    pub host: String,
    /// Its process id, when known.
    pub pid: Option<u32>,
    /// Since when it holds the lock (UTC, RFC 3339, or the server's timestamp).
    pub since: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "host {}, pid {pid}, since {}", self.host, self.since),
            None => write!(f, "{}, since {}", self.host, self.since),
        }
    }
}

/// A held run lock. Dropping it releases the lock.
pub struct RunLock {
    lost: Arc<AtomicBool>,
    stop: Option<mpsc::Sender<()>>,
    keeper: Option<std::thread::JoinHandle<()>>,
}

impl RunLock {
    /// Whether the lock was found gone since it was taken (the server ended its session,
    /// or another run took the lease over): the run must start no more chunks.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// A lock, held through `state` (a connection), that `beat` checks (or renews) every
    /// [`HEARTBEAT`], returning `false` once it is gone, and that `release` gives up when
    /// dropped. Both run on a thread of the lock's own.
    pub(crate) fn kept<S: Send + 'static>(
        mut state: S,
        mut beat: impl FnMut(&mut S) -> bool + Send + 'static,
        release: impl FnOnce(S) + Send + 'static,
    ) -> RunLock {
        let lost = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = mpsc::channel::<()>();
        let flag = Arc::clone(&lost);
        let keeper = std::thread::Builder::new()
            .name("rowshift-lock".into())
            .spawn(move || {
                // Ends when the lock is dropped (the sender goes away).
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(HEARTBEAT) {
                    if !flag.load(Ordering::SeqCst) && !beat(&mut state) {
                        flag.store(true, Ordering::SeqCst);
                    }
                }
                release(state);
            })
            .expect("spawning the lock's keeper thread");
        RunLock {
            lost,
            stop: Some(stop),
            keeper: Some(keeper),
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

impl std::fmt::Debug for RunLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RunLock {{ lost: {} }}", self.lost())
    }
}

/// How a server holds a run lock: on a session of its own, which the server ends (and
/// with it the lock) when the process dies. PostgreSQL takes an advisory lock, MySQL a
/// named lock; [`super::store::SqlStore::lock`] does the rest, the same for both.
///
/// The contract: `open` prepares the lock's own connection (it may name the process
/// there, for `holder`); `try_lock` takes the lock without waiting and says whether it
/// did; `announce`, called once it is taken, records whatever `holder` needs to name this
/// run; `holder` reads who holds the lock now, from any connection of the pool, or
/// `None` when nobody does; `still_held` says whether the lock's session still holds it
/// (for the heartbeat); `unlock` gives it up, ignoring errors (the session closes next).
/// `schema` and `pipeline` name the lock (see [`lock_key`]).
pub trait SessionLock: crate::sql::dialect::Dialect {
    /// Prepares `conn`, the lock's own connection, before the first try.
    fn open(
        &self,
        conn: &mut Conn<Self>,
        since: &str,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;

    /// One try at the lock, not waiting.
    fn try_lock(
        &self,
        conn: &mut Conn<Self>,
        schema: &str,
        pipeline: &str,
    ) -> impl Future<Output = sqlx::Result<bool>> + Send;

    /// Records who holds the lock, once it is taken.
    fn announce(
        &self,
        _conn: &mut Conn<Self>,
        _schema: &str,
        _pipeline: &str,
    ) -> impl Future<Output = sqlx::Result<()>> + Send {
        async { Ok(()) }
    }

    /// Who holds the lock now.
    fn holder(
        &self,
        pool: &sqlx::Pool<Self::Db>,
        schema: &str,
        pipeline: &str,
    ) -> impl Future<Output = sqlx::Result<Option<Holder>>> + Send;

    /// Whether `conn` still holds the lock.
    fn still_held(
        &self,
        conn: &mut Conn<Self>,
        schema: &str,
        pipeline: &str,
    ) -> impl Future<Output = bool> + Send;

    /// Gives the lock up.
    fn unlock(
        &self,
        conn: &mut Conn<Self>,
        schema: &str,
        pipeline: &str,
    ) -> impl Future<Output = ()> + Send;
}

/// What one try at the lock found.
pub(crate) enum Try<T> {
    /// Taken.
    Taken(T),
    /// Held by a live run.
    Held(Holder),
}

/// Tries `attempt` until it takes the lock or `wait` has passed since the first try.
/// `waiting` hears once who holds it, when the caller waits. The refusal names the
/// holder and how long this run waited.
pub(crate) fn acquire<T>(
    what: &str,
    wait: Duration,
    waiting: &mut dyn FnMut(&Holder),
    mut attempt: impl FnMut() -> Result<Try<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut told = false;
    loop {
        let holder = match attempt()? {
            Try::Taken(t) => return Ok(t),
            Try::Held(h) => h,
        };
        let waited = start.elapsed();
        if waited >= wait {
            let after = match wait.is_zero() {
                true => String::new(),
                false => format!(" (waited {})", crate::error::diag::fmt_duration(waited)),
            };
            return Err(Error::Unsupported(format!(
                "{what} is held by another run: {holder}{after}; it runs this pipeline now, so this run stops before touching anything. Wait for it to end, or pass --lock-timeout SECONDS to wait for it"
            )));
        }
        if !told {
            told = true;
            waiting(&holder);
        }
        // Ctrl-C or SIGTERM while waiting: this run has touched nothing yet.
        if crate::runtime::cancel_requested() {
            return Err(Error::Unsupported(format!(
                "interrupted while waiting for {what}, which another run holds ({holder}); this run touched nothing"
            )));
        }
        std::thread::sleep(POLL.min(wait - waited));
    }
}

/// This process, as a lock holder names it.
#[derive(Debug, Clone)]
pub(crate) struct Me {
    pub host: String,
    pub pid: u32,
    /// The process's start time in clock ticks since boot (Linux), which tells a live
    /// holder from a later process that reuses its pid.
    pub started: Option<u64>,
}

impl Me {
    pub fn now() -> Me {
        let pid = std::process::id();
        Me {
            host: host_name(),
            pid,
            started: process_start(pid),
        }
    }
}

/// The host's name: the kernel's, else `$HOSTNAME`.
pub(crate) fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "an unnamed host".into())
}

/// When process `pid` started, in clock ticks since boot (`/proc/PID/stat`, field 22);
/// `None` where there is no `/proc`.
pub(crate) fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether process `pid` (started at `started`) is alive on this host: `None` when this
/// host cannot tell (no `/proc`).
pub(crate) fn alive(pid: u32, started: Option<u64>) -> Option<bool> {
    if !std::path::Path::new("/proc/self/stat").exists() {
        return None;
    }
    match (process_start(pid), started) {
        (None, _) => Some(false),
        (Some(now), Some(then)) => Some(now == then),
        (Some(_), None) => Some(true),
    }
}

/// A random token naming one claim of a chunk (or one lease): another run's token is
/// never the same.
pub(crate) fn token() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    // Never 0, which older stores hold for "no claim".
    h.finish().max(1)
}

/// A 64-bit key for a server-side lock on `pipeline` in `schema` (a PostgreSQL advisory
/// lock, a MySQL named lock): the same in every process.
/// The key of the lock under which sessions create tables in `schema`: the checkpoint
/// tables, and a sink's schema and tables, so that runs of different pipelines started
/// at once into one schema never race on `CREATE SCHEMA` or `CREATE TABLE` (see
/// [`crate::sql::dialect::Dialect::ddl_lock`]).
pub(crate) fn schema_ddl_key(schema: &str) -> i64 {
    lock_key(schema, "\0checkpoint tables")
}

pub(crate) fn lock_key(schema: &str, pipeline: &str) -> i64 {
    // The schema's length keeps ("a b", "c") apart from ("a", "b c").
    let text = format!("rowshift run lock {} {schema} {pipeline}", schema.len());
    let hash = blake3::hash(text.as_bytes());
    let bytes: [u8; 8] = hash.as_bytes()[..8].try_into().expect("8 bytes");
    i64::from_be_bytes(bytes)
}

/// Seconds since the Unix epoch, for heartbeats.
pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        let me = Me::now();
        assert!(me.started.is_some());
        assert_eq!(alive(me.pid, me.started), Some(true));
        // The same pid with another start time is a later process that reused it.
        assert_eq!(alive(me.pid, me.started.map(|s| s + 1)), Some(false));
        assert_eq!(alive(u32::MAX - 1, None), Some(false));
        assert_ne!(token(), token());
        assert_eq!(lock_key("s", "p"), lock_key("s", "p"));
        assert_ne!(lock_key("s", "p"), lock_key("s", "q"));
        assert_ne!(lock_key("s p", ""), lock_key("s", "p "));
    }
}
