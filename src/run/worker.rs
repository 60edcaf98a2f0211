//! A run shared by several processes (`rowshift run --worker`): the checkpoint tables
//! of a PostgreSQL or MySQL target are the work queue, and each process takes chunks
//! from it under leases that it keeps alive with heartbeats (see
//! [`crate::checkpoint::WorkQueue`] for the contract and docs/workers.md for the
//! picture).
//!
//! Exactly one process plans: the first to take the pipeline's run lock finds no plan,
//! prepares the target and records the chunks; the others, waiting on the lock, find
//! the plan and join. The lock is held only while joining, never while chunks run.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::checkpoint::{WorkQueue, Worker, WorkerCounts};

/// How long a process waits for the run lock to join a shared run, when
/// `--lock-timeout` does not say: the process that plans holds it while it reads the
/// source's key ranges, which for a large table takes a while.
const JOIN_WAIT: Duration = Duration::from_secs(600);

/// How long a worker waits for the run lock: `--lock-timeout`, or [`JOIN_WAIT`].
fn join_wait(opts: &RunOptions) -> Duration {
    if opts.lock_wait.is_zero() {
        JOIN_WAIT
    } else {
        opts.lock_wait
    }
}

/// This process's leases in a shared run.
pub(super) struct Lease<'a> {
    queue: &'a dyn WorkQueue,
    me: Worker,
    /// How long a lease lasts without a heartbeat.
    length: Duration,
    /// Chunks held, with their claim's token.
    held: Mutex<BTreeMap<usize, u64>>,
    /// Chunks whose lease a heartbeat found gone: their attempt stops, uncommitted.
    lost: Mutex<BTreeSet<usize>>,
    /// What this process committed, for its heartbeat.
    counts: Mutex<WorkerCounts>,
}

impl<'a> Lease<'a> {
    fn new(queue: &'a dyn WorkQueue, length: Duration) -> Self {
        Lease {
            queue,
            me: Worker::me(),
            length,
            held: Mutex::default(),
            lost: Mutex::default(),
            counts: Mutex::default(),
        }
    }

    /// Takes the next chunk from the queue, with its claim's token.
    pub(super) fn claim_next(&self) -> Result<Option<(usize, u64)>> {
        let token = crate::checkpoint::new_claim();
        let Some(chunk) = self.queue.claim_next(&self.me, token, self.length)? else {
            return Ok(None);
        };
        lock(&self.lost).remove(&chunk);
        lock(&self.held).insert(chunk, token);
        Ok(Some((chunk, token)))
    }

    /// How long a worker that found no chunk to claim waits before it looks again,
    /// while others hold chunks: a fifth of a second (one count on an index), so that it
    /// ends soon after the last chunk is done rather than up to a poll later; a lease
    /// that ran out is taken within that too.
    pub(super) fn poll(&self) -> Duration {
        (self.length / 4).min(Duration::from_millis(200))
    }

    /// How many chunks are pending or running under anyone's lease.
    pub(super) fn open_chunks(&self) -> Result<u64> {
        self.queue.open_chunks()
    }

    /// Whether the lease on `chunk` was found gone.
    pub(super) fn is_lost(&self, chunk: usize) -> bool {
        lock(&self.lost).contains(&chunk)
    }

    /// Forgets `chunk` once its attempt ended; `done` counts a commit.
    pub(super) fn release(&self, chunk: usize, done: Option<&ChunkCounts>) {
        lock(&self.held).remove(&chunk);
        if let Some(c) = done {
            let mut counts = lock(&self.counts);
            counts.chunks += 1;
            counts.read += c.read;
            counts.written += c.written;
        }
    }

    /// The chunks held with their tokens, and what this process committed.
    fn snapshot(&self) -> (Vec<(usize, u64)>, WorkerCounts) {
        let held = lock(&self.held).iter().map(|(c, t)| (*c, *t)).collect();
        (held, *lock(&self.counts))
    }

    /// Extends the leases held and records the heartbeat; leases found gone stop their
    /// chunks.
    fn beat(&self) -> Result<()> {
        let (held, counts) = self.snapshot();
        let lost = self
            .queue
            .heartbeat(&self.me, &held, self.length, &counts)?;
        lock(&self.lost).extend(lost);
        Ok(())
    }

    /// Marks every chunk held as lost: heartbeats failed for longer than a lease, so
    /// another process may hold them now.
    fn lose_all(&self) {
        let held: Vec<usize> = lock(&self.held).keys().copied().collect();
        lock(&self.lost).extend(held);
    }

    /// Records that this process ended, giving up what it still holds.
    fn leave(&self, state: &str) -> Result<()> {
        let (held, counts) = self.snapshot();
        self.queue.leave(&self.me, state, &held, &counts)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keeps `lease`'s chunks alive until `stop` is set: a heartbeat every third of the
/// lease. A heartbeat that fails is tried again at the next; once none has got through
/// for a whole lease, every chunk held is given up as lost.
pub(super) fn heartbeats(lease: &Lease<'_>, stop: &AtomicBool) {
    let every = lease.length / 3;
    let mut last_ok = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let next = Instant::now() + every;
        while !stop.load(Ordering::SeqCst) && Instant::now() < next {
            std::thread::sleep(Duration::from_millis(50).min(every));
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match lease.beat() {
            Ok(()) => last_ok = Instant::now(),
            Err(_) if last_ok.elapsed() >= lease.length => lease.lose_all(),
            Err(_) => {}
        }
    }
}

/// Runs `plan` as one process of a shared run: joins it (planning it if no process
/// has), takes chunks until none is left, and builds the declared indexes and
/// constraints if it finds every chunk done.
pub(super) fn run_worker(
    plan: &Plan,
    sink: &dyn Sink,
    observer: &dyn Observer,
    opts: &RunOptions,
    store: &Arc<dyn CheckpointStore>,
) -> Result<Summary> {
    let summary = run_worker_with(plan, sink, observer, opts, store);
    let closed = store.close().and_then(|()| sink.finish());
    let summary = summary?;
    closed?;
    observer.on_event(&Event::Finished(Box::new(summary.clone())));
    Ok(summary)
}

/// What a shared run refuses before it touches anything, and why.
fn refuse(plan: &Plan, opts: &RunOptions) -> Result<()> {
    let no = |why: String| Err(Error::Unsupported(format!("--worker: {why}")));
    if opts.restart {
        return no("--restart would remove what the other workers wrote; run it once without --worker, then start the workers".into());
    }
    if opts.only.is_some() || opts.failed_only {
        return no("retry runs in one process; run `rowshift retry` without --worker".into());
    }
    if opts.hooks.is_some() {
        return no("an online move ([online]) runs in one process".into());
    }
    if plan.checks.has_unique() {
        return no(format!(
            "pipeline {} has a `unique` check, which one process keeps in memory and several could not; declare a unique index on the target column instead (rows it refuses are quarantined)",
            plan.pipeline.name
        ));
    }
    Ok(())
}

fn run_worker_with(
    plan: &Plan,
    sink: &dyn Sink,
    observer: &dyn Observer,
    opts: &RunOptions,
    store: &Arc<dyn CheckpointStore>,
) -> Result<Summary> {
    let started = Instant::now();
    let Some(queue) = store.queue() else {
        return Err(Error::Unsupported(format!(
            "--worker: {} cannot be shared by several processes: workers share a run through the checkpoint tables of a PostgreSQL or MySQL/MariaDB target, and a SQLite file or a file target is written by one process only; run without --worker ([chunks] parallel sets that process's threads)",
            sink.describe()
        )));
    };
    refuse(plan, opts)?;
    let cfg = &plan.pipeline.chunks;
    let length = opts.lease.unwrap_or(Duration::from_secs(cfg.lease_seconds));
    let me = Worker::me();
    let fingerprint = plan.pipeline.fingerprint();
    let settings = plan.pipeline.settings();
    let wait = join_wait(opts);
    // Joining happens under the run lock, so that exactly one process plans; the lock
    // is let go before any chunk runs.
    let run_lock = take_lock(store.as_ref(), observer, wait)?;
    let joined = (|| -> Result<(Vec<Chunk>, Vec<usize>, Prepare)> {
        let existing = store.load()?;
        let others = store
            .workers()?
            .into_iter()
            .filter(|w| w.id != me.id && w.live(length))
            .count();
        let how = match &existing {
            Some(c) if c.fingerprint != fingerprint => {
                return Err(Error::Unsupported(format!(
                    "--worker: the pipeline differs from the one the shared run was planned with on {} ({}):\n  {}\nevery worker must run the same pipeline file",
                    c.created_at,
                    store.describe(),
                    diff_settings(&c.settings, &settings).join("\n  ")
                )));
            }
            Some(_) => Prepare::Resume,
            None => Prepare::Fresh,
        };
        sink.prepare(how)?;
        let (chunks, todo) = match existing {
            Some(c) => {
                if others == 0 {
                    // The first worker of a resumed run: what the last one called done
                    // must still be there, as for any resumed run.
                    let done: Vec<usize> = c
                        .chunks
                        .iter()
                        .filter(|r| r.state == ChunkState::Done)
                        .map(|r| r.chunk.id)
                        .collect();
                    sink.check_done(&done)?;
                }
                let todo = c
                    .chunks
                    .iter()
                    .filter(|r| r.state != ChunkState::Done)
                    .map(|r| r.chunk.id)
                    .collect();
                (c.chunks.into_iter().map(|r| r.chunk).collect(), todo)
            }
            None => {
                let chunks = plan.source.plan(opts.chunk_rows.unwrap_or(cfg.rows))?;
                store.create(&fingerprint, &settings, &chunks)?;
                let todo = (0..chunks.len()).collect();
                (chunks, todo)
            }
        };
        if others == 0 {
            // No live worker: chunks left running or failed belong to processes that
            // are gone, and this run does them again.
            queue.reopen()?;
        }
        queue.join(&me)?;
        Ok((chunks, todo, how))
    })();
    drop(run_lock);
    let (chunks, todo, how) = joined?;
    let skipped = chunks.len() - todo.len();
    let lease = Lease::new(queue, length);
    let out = execute(
        plan,
        sink,
        observer,
        opts,
        store,
        Work {
            chunks: &chunks,
            todo,
            skipped,
            queue: Some(&lease),
            how,
            accepted: Vec::new(),
            started,
            lock: None,
        },
    );
    let state = match &out {
        Ok(s) if s.failures.is_empty() && !s.interrupted => "finished",
        _ => "stopped",
    };
    let left = lease.leave(state);
    let summary = out?;
    left?;
    Ok(summary)
}

/// Builds the declared indexes and constraints once every chunk of a shared run is
/// done, under the run lock: the workers that find it so do it one after another, and
/// the later ones find them built.
pub(super) fn post_load_shared(
    sink: &dyn Sink,
    observer: &dyn Observer,
    store: &dyn CheckpointStore,
    opts: &RunOptions,
) -> Result<Vec<String>> {
    let _lock = take_lock(store, observer, join_wait(opts))?;
    crate::fault::crash_run("post-load");
    sink.post_load()
}
