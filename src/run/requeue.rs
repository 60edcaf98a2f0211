//! `rowshift retry --rejects`: runs quarantined rows through the (fixed) transform again.
//! Rows that now pass are written and leave the quarantine; the rest stay with their new
//! reason.

use std::collections::BTreeMap;

use arrow::record_batch::RecordBatch;
use serde::Serialize;

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::{checkpoint_store, locate_row, process_batch};
use crate::check::quarantine::{QuarantineEntry, RowJsonWriter, rows_from_json};
use crate::check::readback::{ReadBack, count_and_sum};
use crate::check::rules::Claims;
use crate::checkpoint::{Checkpoint, CheckpointStore};
use crate::chunk::Selection;
use crate::chunk::{Chunk, ChunkRange};
use crate::config::{Location, Verify};
use crate::plan::Plan;
use crate::sink::Sink;
use crate::{Error, Result};

/// What `retry --rejects` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequeueReport {
    /// Quarantined rows looked at.
    pub rows: u64,
    /// Rows that now pass and were written.
    pub written: u64,
    /// Rows the filter now drops; they leave the quarantine.
    pub filtered: u64,
    /// Rows that still fail, kept with their new reason.
    pub still_rejected: u64,
    /// Rows whose key is no longer in the source; they leave the quarantine.
    pub gone: u64,
    /// Rows kept in the quarantine (counted in `still_rejected` too) because their key
    /// names several source rows and none of them equals the row as it was stored: which
    /// one it was cannot be told, and its twins are already written.
    pub unmatched: u64,
    /// Chunks whose retry failed a check (the rows written did not read back as sent),
    /// with why: their rows and quarantine stay as they were, and other chunks go on.
    pub failures: Vec<String>,
    /// Changes to the pipeline since its run that only widen what passes, recorded in
    /// the checkpoint so that the run and `verify` go on under them.
    pub accepted_changes: Vec<String>,
}

/// Re-processes every quarantined row. A database source is read again by key, so rows
/// fixed in the source are picked up; file sources use the row as it was stored. Holds
/// the pipeline's run lock (waiting up to `lock_wait` for a run that holds it), and
/// moves the rows that left the quarantine out of their chunks' rejected counts.
pub fn requeue_rejects(plan: &Plan, sink: &dyn Sink, lock_wait: Duration) -> Result<RequeueReport> {
    let store = checkpoint_store(plan, sink);
    let lock = match super::take_lock(store.as_ref(), &super::NoopObserver, lock_wait) {
        Ok(lock) => lock,
        Err(e) => {
            let _ = store.close();
            return Err(e);
        }
    };
    let report = store
        .load()
        .and_then(|c| requeue_with(plan, sink, store.as_ref(), c));
    // However it ended, the store closes before the sink (see `run`).
    let closed = store.close().and_then(|()| sink.finish());
    drop(lock);
    let report = report?;
    closed?;
    Ok(report)
}

/// [`requeue_rejects`] with the checkpoint of the run that quarantined the rows.
fn requeue_with(
    plan: &Plan,
    sink: &dyn Sink,
    store: &dyn CheckpointStore,
    checkpoint: Option<Checkpoint>,
) -> Result<RequeueReport> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(plan.pipeline.chunks.parallel.max(1))
        .build()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let mut report = RequeueReport::default();
    if let Some(c) = &checkpoint {
        refuse_changed_key(plan, c)?;
        // A check loosened to let rows pass: the run goes on under it, so what follows
        // (`run`, `verify`) accepts it too.
        if c.fingerprint != plan.pipeline.fingerprint()
            && let Some(changes) = super::widened(c, plan)
        {
            store.record_settings(&plan.pipeline.fingerprint(), &plan.pipeline.settings())?;
            report.accepted_changes = changes;
        }
    }
    let verify_nanos = AtomicU64::new(0);
    let key = plan.target_key().map(|k| k.columns).unwrap_or_default();
    let mut by_chunk: BTreeMap<usize, Vec<QuarantineEntry>> = BTreeMap::new();
    for e in sink.read_quarantine()? {
        by_chunk.entry(e.chunk).or_default().push(e);
    }
    let source = plan.source.as_ref();
    let schema = source.schema();
    if !by_chunk.is_empty() && plan.checks.has_unique() {
        // A requeued row must be unique against everything already written.
        sink.scan(&mut |b| plan.checks.seed(&b))?;
    }
    for (chunk, all) in by_chunk {
        report.rows += all.len() as u64;
        // A record that could not be read stays until the file is fixed and re-run; so
        // does a row of a database source whose key is unknown (a key part was NULL):
        // it cannot be read again, and must not be taken for a row that is gone.
        let (mut kept, mut entries): (Vec<QuarantineEntry>, Vec<QuarantineEntry>) = all
            .into_iter()
            .partition(|e| e.is_unreadable() || (source.names_rows_by_key() && e.key.is_none()));
        reread_records(source, chunk, &mut kept, &mut entries)?;
        if entries.is_empty() {
            report.still_rejected += kept.len() as u64;
            continue;
        }
        let (batch, origin, gone, entries) =
            match source.read_keys(&entries.iter().map(|e| e.key.clone()).collect::<Vec<_>>())? {
                Some((batch, origin)) => {
                    let standing = standing_rows(&schema, &entries, &batch, &origin)?;
                    report.unmatched += standing.ambiguous.iter().filter(|a| **a).count() as u64;
                    // Entries are numbered anew without the ambiguous ones, which stay.
                    let mut index = vec![usize::MAX; entries.len()];
                    let mut left = Vec::with_capacity(entries.len());
                    for (i, e) in entries.into_iter().enumerate() {
                        if standing.ambiguous[i] {
                            kept.push(e);
                        } else {
                            index[i] = left.len();
                            left.push(e);
                        }
                    }
                    let origin = standing.origin.iter().map(|&o| index[o]).collect();
                    (standing.batch, origin, standing.gone, left)
                }
                None => (
                    rows_from_json(
                        &schema,
                        &entries.iter().map(|e| e.row.clone()).collect::<Vec<_>>(),
                    )?,
                    (0..entries.len()).collect::<Vec<usize>>(),
                    0,
                    entries,
                ),
            };
        report.still_rejected += kept.len() as u64;
        if entries.is_empty() {
            continue;
        }
        let locate = |row: usize| entries[origin[row]].location.clone();
        let mut claims = Claims::default();
        let p = process_batch(plan, &pool, &batch, &locate, chunk, &mut claims)?;
        let kept_count = kept.len();
        let json = RowJsonWriter::new(batch.schema_ref());
        let mut remaining: Vec<QuarantineEntry> = kept
            .into_iter()
            .chain(p.reject_rows.iter().zip(p.rejects).map(|(&row, failure)| {
                let mut e = QuarantineEntry::new(chunk, &batch, row, source.key(), failure, &json);
                e.location = locate_row(source, &batch, row, &locate);
                e
            }))
            .collect();
        // The retried rows are checked as a chunk's are: read back, by their keys, in the
        // transaction that writes them.
        let planned = checkpoint
            .as_ref()
            .and_then(|c| c.chunks.iter().find(|r| r.chunk.id == chunk))
            .map(|r| r.chunk.clone())
            .unwrap_or(Chunk {
                id: chunk,
                range: ChunkRange::Keys { lo: None, hi: None },
                rows: None,
            });
        let mut out = p.out.batch.clone();
        // For each row of `out`, its row in `batch`.
        let mut rows: Vec<usize> = p
            .out
            .rows
            .clone()
            .unwrap_or_else(|| (0..out.num_rows()).collect());
        let mut rounds = 0;
        loop {
            let sent = std::slice::from_ref(&out);
            let readback = if plan.pipeline.verify == Verify::ReadBack && out.num_rows() > 0 {
                let (rows, checksum) = count_and_sum(sent)?;
                Some(ReadBack {
                    chunk: &planned,
                    rows,
                    checksum,
                    sent,
                    key: &key,
                    selection: retried_rows(plan, &key, sent)?,
                    nanos: &verify_nanos,
                })
            } else {
                None
            };
            match sink.requeue(chunk, sent, &remaining, readback.as_ref()) {
                Ok(written) => {
                    report.written += written;
                    report.filtered += p.counts.filtered;
                    report.still_rejected += (remaining.len() - kept_count) as u64;
                    report.gone += gone;
                    // Not in the sink's transaction: a crash in between leaves the
                    // chunk's counts as they were, while its rows moved.
                    store.requeued(chunk, written, p.counts.filtered, gone)?;
                }
                // Rows the target still refuses stay in the quarantine with its reason;
                // the others are written. As in a run: the sink's own refusals, the
                // server's, and one more round if the table changed meanwhile.
                Err(Error::Refused(refused)) if rounds < 3 => {
                    rounds += 1;
                    for r in &refused {
                        let row = rows[r.row];
                        let failure =
                            super::refusal_failure(r, locate_row(source, &batch, row, &locate));
                        remaining.push(QuarantineEntry::new(
                            chunk,
                            &batch,
                            row,
                            source.key(),
                            failure,
                            &json,
                        ));
                    }
                    let drop: Vec<usize> = refused.iter().map(|r| r.row).collect();
                    super::take_out(&mut out, &mut rows, &drop)?;
                    continue;
                }
                // The target refuses every retried row (or says so for the rows as a
                // whole): the quarantine stays as it was.
                Err(e) if crate::sink::is_refusal(&e) => {
                    report.still_rejected += entries.len() as u64;
                    report.failures.push(format!(
                        "chunk {chunk}'s retried rows: the target still refuses them: {e}"
                    ));
                }
                Err(e) if e.is_data_failure() => {
                    // Only the retried rows were compared, not the chunk's range.
                    let why = match &e {
                        Error::Check(m) => m
                            .strip_prefix(&format!("{planned}: "))
                            .unwrap_or(m)
                            .to_string(),
                        other => other.to_string(),
                    };
                    report.still_rejected += entries.len() as u64;
                    report
                        .failures
                        .push(format!("chunk {chunk}'s retried rows: {why}"));
                }
                Err(e) => return Err(e),
            }
            break;
        }
    }
    Ok(report)
}

/// Reads the unreadable records among `kept` again, from their stored bytes, when the
/// source can (a CSV file, under its options now: a fixed `encoding` or `quoting`). A
/// record that now reads becomes an entry of `entries`, to be processed like any
/// quarantined row; one that still cannot be read stays in `kept` with its new reason.
fn reread_records(
    source: &dyn crate::source::Source,
    chunk: usize,
    kept: &mut Vec<QuarantineEntry>,
    entries: &mut Vec<QuarantineEntry>,
) -> Result<()> {
    let (unreadable, others): (Vec<QuarantineEntry>, Vec<QuarantineEntry>) =
        std::mem::take(kept).into_iter().partition(|e| {
            e.is_unreadable() && e.unreadable_bytes().is_some() && !source.names_rows_by_key()
        });
    *kept = others;
    if unreadable.is_empty() {
        return Ok(());
    }
    let records: Vec<(Vec<u8>, u64, String)> = unreadable
        .iter()
        .map(|e| {
            let line = e
                .location
                .rsplit_once(" line ")
                .and_then(|(_, n)| n.parse().ok())
                .unwrap_or(0);
            (
                e.unreadable_bytes().unwrap_or_default(),
                line,
                e.location.clone(),
            )
        })
        .collect();
    let Some(read) = source.reread(&records)? else {
        kept.extend(unreadable);
        return Ok(());
    };
    for (e, r) in unreadable.into_iter().zip(read) {
        match r {
            Ok(batch) => entries.push(QuarantineEntry {
                chunk,
                key: crate::chunk::key::row_key(&batch, source.key(), 0),
                location: e.location,
                column: None,
                value: None,
                reason: e.reason,
                row: crate::check::quarantine::row_json(&batch, 0),
            }),
            Err(u) => kept.push(QuarantineEntry::unreadable(chunk, u)),
        }
    }
    Ok(())
}

/// The rows read again under quarantined keys that stand for the quarantined rows, with
/// the entry each stands for (`origin`), the entries whose row the source no longer has
/// (`gone`), and, by entry, those that cannot be told apart (`ambiguous`).
struct Standing {
    batch: RecordBatch,
    origin: Vec<usize>,
    gone: u64,
    ambiguous: Vec<bool>,
}

/// Picks, of the rows `read_keys` found (`batch`, each with the entry whose key found it
/// in `origin`), those that stand for the quarantined `entries`. A key need not be
/// unique, and the run wrote the other rows under it: an entry first takes a row equal
/// to its stored source row in every column. Then, under a key with no more rows than
/// entries, each row left stands for an entry left (a row fixed in the source), and the
/// entries beyond are gone; under a key with more rows, an entry left is `ambiguous`.
fn standing_rows(
    schema: &arrow::datatypes::SchemaRef,
    entries: &[QuarantineEntry],
    batch: &RecordBatch,
    origin: &[usize],
) -> Result<Standing> {
    let mut rows_under: BTreeMap<Option<String>, Vec<usize>> = BTreeMap::new();
    for (row, &o) in origin.iter().enumerate() {
        rows_under
            .entry(entries[o].key.clone())
            .or_default()
            .push(row);
    }
    let mut entries_under: BTreeMap<Option<String>, Vec<usize>> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        entries_under.entry(e.key.clone()).or_default().push(i);
    }
    // Each stored row on its own: one that no longer reads into the schema matches no
    // row, and spoils no other.
    let stored: Vec<Option<RecordBatch>> = entries
        .iter()
        .map(|e| rows_from_json(schema, std::slice::from_ref(&e.row)).ok())
        .collect();
    let same = |row: usize, i: usize| {
        stored[i].as_ref().is_some_and(|st| {
            (0..batch.num_columns()).all(|c| {
                batch.column(c).slice(row, 1).to_data() == st.column(c).slice(0, 1).to_data()
            })
        })
    };
    let mut picked: Vec<(usize, usize)> = Vec::new();
    let mut gone = 0;
    let mut ambiguous = vec![false; entries.len()];
    for (key, under) in &entries_under {
        let rows = rows_under.get(key).map_or(&[][..], Vec::as_slice);
        let mut taken = vec![false; rows.len()];
        let mut left = Vec::new();
        for &i in under {
            match (0..rows.len()).find(|&j| !taken[j] && same(rows[j], i)) {
                Some(j) => {
                    taken[j] = true;
                    picked.push((rows[j], i));
                }
                None => left.push(i),
            }
        }
        let free: Vec<usize> = (0..rows.len()).filter(|&j| !taken[j]).collect();
        if rows.len() <= under.len() {
            for (&j, &i) in free.iter().zip(&left) {
                picked.push((rows[j], i));
            }
            gone += left.len().saturating_sub(free.len()) as u64;
        } else {
            for i in left {
                ambiguous[i] = true;
            }
        }
    }
    picked.sort_unstable();
    let take = arrow::array::UInt32Array::from(
        picked
            .iter()
            .map(|(row, _)| *row as u32)
            .collect::<Vec<_>>(),
    );
    Ok(Standing {
        batch: arrow::compute::take_record_batch(batch, &take)
            .map_err(|e| Error::Internal(e.to_string()))?,
        origin: picked.into_iter().map(|(_, i)| i).collect(),
        gone,
        ambiguous,
    })
}

/// Where the retried rows `sent` are in the target: their own files, or their keys (a
/// chunk's key range holds the chunk's other rows too). A database target has the key
/// columns whenever read-back is on: the plan refuses it otherwise.
fn retried_rows(plan: &Plan, key: &[String], sent: &[RecordBatch]) -> Result<Selection> {
    if matches!(plan.pipeline.target.location, Location::Files { .. }) {
        return Ok(Selection::Files);
    }
    Selection::of_keys(key, sent)
}

/// Quarantined rows are named by the source key of the run that rejected them: under
/// another key (or another source) their keys name other rows, or none, and a row that
/// seems gone would leave the quarantine. The expressions may change (that is how rows
/// get fixed); the source and its key may not.
fn refuse_changed_key(plan: &Plan, checkpoint: &Checkpoint) -> Result<()> {
    let now = plan.pipeline.settings();
    let setting = |all: &[(String, String)], name: &str| {
        all.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    };
    for name in ["source.url", "source.table", "source.key"] {
        let (was, is) = (setting(&checkpoint.settings, name), setting(&now, name));
        if was != is {
            return Err(Error::Unsupported(format!(
                "{name} changed since the run of {} that rejected these rows ({} then, {} now); quarantined rows are named by that source and key, so restore it to retry them",
                checkpoint.created_at,
                was.unwrap_or_else(|| "unset".into()),
                is.unwrap_or_else(|| "unset".into())
            )));
        }
    }
    // Records set aside are read again from their bytes under the options now; the
    // records already written were read under the old ones. Only options that read the
    // same text from those have keys of their own (see `Pipeline::csv_settings`).
    let (was, is) = (
        setting(&checkpoint.settings, "source.csv"),
        setting(&now, "source.csv"),
    );
    if was != is {
        return Err(Error::Unsupported(format!(
            "[source.csv] changed since the run of {} that rejected these rows in a way that would read the records already written differently ({} then, {} now); only quoting = \"lenient\" and encoding may be set for `retry --rejects`, so restore the other options, or run the pipeline again from the start",
            checkpoint.created_at,
            was.unwrap_or_else(|| "unset".into()),
            is.unwrap_or_else(|| "unset".into())
        )));
    }
    Ok(())
}
