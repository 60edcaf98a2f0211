//! One chunk's life: claim, read, transform, check, commit, with retries of
//! transient failures.

use super::*;

/// A committed chunk's counts, and its rejects by reason and `warn` check failures by
/// check (count and first example).
pub(super) struct ChunkDone {
    pub(super) counts: ChunkCounts,
    pub(super) checksum: u64,
    /// Seconds spent reading the chunk's rows back.
    pub(super) verify_seconds: f64,
    pub(super) rejects: Vec<(String, u64, RowFailure)>,
    pub(super) warnings: Vec<(String, u64, RowFailure)>,
}

/// How a chunk's work ended well.
pub(super) enum Outcome {
    /// This run committed it.
    Done(ChunkDone),
    /// Another run had committed it when this one claimed it.
    DoneElsewhere,
}

/// A chunk that failed.
pub(super) struct Failed {
    pub(super) error: Box<Error>,
    /// Whether the whole run must stop (the run-wide reject limit was passed).
    pub(super) stop: bool,
    /// Attempts made.
    pub(super) attempts: u32,
    /// The last attempt's claim, under which the failure is recorded.
    pub(super) claim: u64,
    /// How long transient errors were retried, when the last one was transient.
    pub(super) retried: Option<Duration>,
}

/// Runs a chunk, every statement of it (the claim, the rows, the done mark), retrying
/// transient errors with exponential backoff and jitter for up to `[chunks]
/// retry_seconds`. `leased` is the token of a shared run's claim, taken from its queue:
/// every attempt runs under it while the lease lasts; a run's own claim is taken anew by
/// each attempt.
pub(super) fn run_with_retries(
    shared: &Shared<'_>,
    chunk: &Chunk,
    leased: Option<u64>,
) -> Result<Outcome, Failed> {
    let budget = Duration::from_secs(shared.plan.pipeline.chunks.retry_seconds);
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let claim = leased.unwrap_or_else(crate::checkpoint::new_claim);
        let e = match attempt_chunk(shared, chunk, attempt, claim, leased.is_some()) {
            Ok(outcome) => return Ok(outcome),
            Err(e) => e,
        };
        let transient = e.is_transient() && !crate::checkpoint::is_claim_lost(&e);
        let pause = backoff(attempt);
        // After Ctrl-C or SIGTERM no transient error is waited out: the chunk fails with
        // it at once, and the next run redoes it.
        if transient
            && started.elapsed() + pause <= budget
            && !shared.lost(Some(chunk.id))
            && !crate::runtime::cancel_requested()
        {
            std::thread::sleep(pause);
            if !crate::runtime::cancel_requested() {
                continue;
            }
        }
        // Past the reject limit, or on a full disk, no chunk may start.
        let stop = e.stops_run();
        return Err(Failed {
            error: Box::new(e),
            stop,
            attempts: attempt,
            claim,
            retried: transient.then(|| started.elapsed()),
        });
    }
}

/// The pause before attempt `attempt + 1`: doubling from [`FIRST_BACKOFF`] up to
/// [`MAX_BACKOFF`], of which a random part up to half is left out.
pub(super) fn backoff(attempt: u32) -> Duration {
    let full = FIRST_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let half = full.as_millis() as u64 / 2;
    let jitter = crate::checkpoint::new_claim() % (half + 1);
    full - Duration::from_millis(jitter)
}

/// One attempt of a chunk under the claim `claim` (`leased`: a shared run's, already
/// taken from its queue).
pub(super) fn attempt_chunk(
    shared: &Shared<'_>,
    chunk: &Chunk,
    attempt: u32,
    claim: u64,
    leased: bool,
) -> Result<Outcome> {
    crate::fault::inject_fault_at(chunk.id, attempt, true)?;
    if leased {
        if shared.lost(Some(chunk.id)) {
            return Err(crate::checkpoint::sql::claim_lost(chunk.id));
        }
    } else if !shared.timed(|| shared.store.claim(chunk.id, claim))? {
        return Ok(Outcome::DoneElsewhere);
    }
    let t0 = Instant::now();
    let (done, committed) = run_chunk(shared, chunk, attempt, claim)?;
    if !committed.marked {
        let mark = DoneMark {
            chunk: chunk.id,
            counts: done.counts,
            seconds: t0.elapsed().as_secs_f64(),
            checksum: done.checksum,
            claim,
            verify_seconds: done.verify_seconds,
            finished_ms: crate::checkpoint::unix_ms(),
        };
        shared.timed(|| shared.store.finish(&mark))?;
    }
    Ok(Outcome::Done(done))
}

/// Reads, transforms, checks and commits one chunk. `unique` values it claims are given
/// back if it does not commit.
pub(super) fn run_chunk(
    shared: &Shared<'_>,
    chunk: &Chunk,
    attempt: u32,
    claim: u64,
) -> Result<(ChunkDone, Committed)> {
    let mut claims = Claims::default();
    // The chunk's read-back time, for its done mark; the run's total counts it too.
    let verify_nanos = AtomicU64::new(0);
    let out = run_chunk_claiming(shared, chunk, attempt, claim, &mut claims, &verify_nanos);
    shared
        .verify_nanos
        .fetch_add(verify_nanos.load(Ordering::Relaxed), Ordering::Relaxed);
    if out.is_err() {
        shared.plan.checks.release(claims);
    }
    out
}

pub(super) fn run_chunk_claiming(
    shared: &Shared<'_>,
    chunk: &Chunk,
    attempt: u32,
    claim: u64,
    claims: &mut Claims,
    verify_nanos: &AtomicU64,
) -> Result<(ChunkDone, Committed)> {
    let wrap = |e: Error| Error::Chunk {
        chunk: chunk.id,
        source: Box::new(e),
    };
    let plan = shared.plan;
    let limits = &plan.pipeline.limits;
    let source = plan.source.as_ref();
    let verify = plan.pipeline.verify == Verify::ReadBack;
    let t0 = Instant::now();
    let mut writer = shared.sink.open_chunk(chunk).map_err(wrap)?;
    let mut counts = ChunkCounts::default();
    let mut offset = 0u64;
    let mut by_reason: std::collections::BTreeMap<String, (u64, RowFailure)> = Default::default();
    let mut by_check: std::collections::BTreeMap<String, (u64, RowFailure)> = Default::default();
    let mut sum = 0u64;
    // What was sent, kept for read-back (batches share their buffers; nothing is copied).
    let mut sent = Vec::new();
    // For a target that may refuse rows: every batch as read and as written, and the
    // quarantine so far, to quarantine refused rows and write the chunk again.
    let refusable = shared.sink.refuses_rows();
    let mut kept: Vec<Kept> = Vec::new();
    let mut quarantined: Vec<QuarantineEntry> = Vec::new();
    let (batches, left_out) = read_chunk(plan, chunk).map_err(wrap)?;
    let mut seen = key_places(source, chunk);
    for batch in batches {
        // A shared run's lease found gone: another worker takes the chunk, and nothing
        // of this attempt may commit.
        if shared.lost(Some(chunk.id)) {
            return Err(wrap(crate::checkpoint::sql::claim_lost(chunk.id)));
        }
        let batch = batch.map_err(wrap)?;
        let base = offset;
        if let Some(seen) = seen.as_mut() {
            check_repeats(source, chunk, &batch, seen).map_err(wrap)?;
        }
        let p = process_batch(
            plan,
            &shared.pool,
            &batch,
            &|row| source.locate(chunk, base + row as u64),
            chunk.id,
            claims,
        )
        .map_err(wrap)?;
        counts += p.counts;
        if !p.rejects.is_empty() {
            let rows = &p.reject_rows;
            let whole = match &left_out {
                Some(used) => Some(whole_rows(plan, chunk, &batch, rows, used).map_err(wrap)?),
                None => None,
            };
            let (from, json) = match &whole {
                Some(whole) => (whole, RowJsonWriter::new(whole.schema_ref())),
                None => (&batch, RowJsonWriter::new(batch.schema_ref())),
            };
            let mut entries = Vec::with_capacity(p.rejects.len());
            // A check rejects many rows for one reason: its group is found again without
            // building the grouped text for each row.
            let mut last: Option<(Option<String>, String, String)> = None;
            for (i, (&row, failure)) in rows.iter().zip(p.rejects).enumerate() {
                let at = if whole.is_some() { i } else { row };
                let same = last
                    .as_ref()
                    .is_some_and(|(c, r, _)| *c == failure.column && *r == failure.reason);
                if !same {
                    let grouped = grouped_reason(failure.column.as_deref(), &failure.reason);
                    by_reason
                        .entry(grouped.clone())
                        .or_insert_with(|| (0, failure.clone()));
                    last = Some((failure.column.clone(), failure.reason.clone(), grouped));
                }
                if let Some((_, _, grouped)) = &last
                    && let Some(slot) = by_reason.get_mut(grouped)
                {
                    slot.0 += 1;
                }
                entries.push(QuarantineEntry::new(
                    chunk.id,
                    from,
                    at,
                    source.key(),
                    failure,
                    &json,
                ));
            }
            if refusable {
                quarantined.extend(entries.iter().cloned());
            }
            writer.reject(entries).map_err(wrap)?;
        }
        for (check, failure) in p.warnings {
            by_check.entry(check).or_insert((0, failure)).0 += 1;
        }
        sum = sum.wrapping_add(crate::check::checksum(&p.out.batch).map_err(wrap)?);
        writer.write(&p.out.batch).map_err(wrap)?;
        if verify && p.out.batch.num_rows() > 0 {
            sent.push(p.out.batch.clone());
        }
        if refusable {
            kept.push(Kept {
                rows: p
                    .out
                    .rows
                    .unwrap_or_else(|| (0..p.out.batch.num_rows()).collect()),
                out: p.out.batch,
                source: batch.clone(),
                base,
            });
        }
        offset += batch.num_rows() as u64;
    }
    let unreadable = source.unreadable(chunk);
    if !unreadable.is_empty() {
        let entries: Vec<QuarantineEntry> = unreadable
            .into_iter()
            .map(|u| {
                let entry = QuarantineEntry::unreadable(chunk.id, u);
                count_reason(&mut by_reason, &entry);
                entry
            })
            .collect();
        counts.read += entries.len() as u64;
        counts.rejected += entries.len() as u64;
        if refusable {
            quarantined.extend(entries.iter().cloned());
        }
        writer.reject(entries).map_err(wrap)?;
    }
    conservation(chunk, &counts).map_err(wrap)?;
    let key = plan.target_key().map(|k| k.columns).unwrap_or_default();
    // Rejects this chunk added to the run's total so far; given back if it fails.
    let mut counted = 0;
    let mut rounds = 0;
    let committed = loop {
        let total = shared
            .rejected_total
            .fetch_add(counts.rejected - counted, Ordering::SeqCst)
            + (counts.rejected - counted);
        counted = counts.rejected;
        let limit = match (limits.max_reject_ratio, limits.max_rejects) {
            (Some(max), _)
                if counts.read > 0 && counts.rejected as f64 / counts.read as f64 > max =>
            {
                Some(Error::Check(format!(
                    "{chunk}: {} of {} rows rejected, more than max_reject_ratio = {max}",
                    counts.rejected, counts.read
                )))
            }
            (_, Some(max)) if total > max => Some(Error::RejectLimit(format!(
                "{total} rows rejected so far, more than max_rejects = {max}; the run stops"
            ))),
            _ => None,
        };
        let readback = match (limit, verify) {
            (Some(e), _) => Err(e),
            (None, true) => plan.selection(chunk, &sent).map(|selection| {
                Some(ReadBack {
                    chunk,
                    rows: counts.written,
                    checksum: sum,
                    sent: &sent,
                    key: &key,
                    selection,
                    nanos: verify_nanos,
                })
            }),
            (None, false) => Ok(None),
        };
        let result = readback.and_then(|readback| {
            crate::fault::inject_fault(chunk.id, attempt)?;
            if shared.lost(Some(chunk.id)) {
                return Err(crate::checkpoint::sql::claim_lost(chunk.id));
            }
            writer.commit(
                &DoneMark {
                    chunk: chunk.id,
                    counts,
                    seconds: t0.elapsed().as_secs_f64(),
                    checksum: sum,
                    claim,
                    verify_seconds: 0.0,
                    finished_ms: crate::checkpoint::unix_ms(),
                },
                readback.as_ref(),
            )
        });
        let refused = match result {
            Ok(c) => break c,
            // The rows the target refused join the quarantine, and the chunk is written
            // again without them. The sink may refuse values a column cannot keep before
            // sending anything, and the server what it refuses in the next round; one
            // more only happens if the table changed under the run (another writer's
            // rows), and a fourth is not tried.
            Err(Error::Refused(refused)) if refusable && rounds < 3 => refused,
            Err(e) => {
                shared.rejected_total.fetch_sub(counted, Ordering::SeqCst);
                return Err(wrap(repeated_key(source, chunk, e)));
            }
        };
        rounds += 1;
        let mut again = || -> Result<_> {
            let entries = refused_entries(
                plan,
                chunk,
                &mut kept,
                &refused,
                left_out.as_deref(),
                claims,
            )?;
            for entry in &entries {
                count_reason(&mut by_reason, entry);
            }
            counts.written -= entries.len() as u64;
            counts.rejected += entries.len() as u64;
            quarantined.extend(entries);
            sum = 0;
            sent.clear();
            let mut writer = shared.sink.open_chunk(chunk)?;
            writer.reject(quarantined.clone())?;
            for k in &kept {
                sum = sum.wrapping_add(crate::check::checksum(&k.out)?);
                writer.write(&k.out)?;
                if verify && k.out.num_rows() > 0 {
                    sent.push(k.out.clone());
                }
            }
            Ok(writer)
        };
        writer = match again() {
            Ok(w) => w,
            Err(e) => {
                shared.rejected_total.fetch_sub(counted, Ordering::SeqCst);
                return Err(wrap(e));
            }
        };
    };
    if committed.rows != counts.written {
        return Err(wrap(Error::Check(format!(
            "{chunk}: {} rows were sent to the target but it reports {} written",
            counts.written, committed.rows
        ))));
    }
    let flatten = |m: std::collections::BTreeMap<String, (u64, RowFailure)>| {
        m.into_iter()
            .map(|(reason, (n, example))| (reason, n, example))
            .collect()
    };
    Ok((
        ChunkDone {
            counts,
            rejects: flatten(by_reason),
            warnings: flatten(by_check),
            checksum: sum,
            verify_seconds: verify_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        },
        committed,
    ))
}
