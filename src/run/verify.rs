//! `rowshift verify`: a full reconciliation of the target with the source, at any time
//! after a run. Every done chunk's source range is read and transformed again, and its
//! row count and checksum are compared with the chunk's rows in the target.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::BooleanArray;
use arrow::record_batch::RecordBatch;

use serde::Serialize;

use super::{RunOptions, Summary, checkpoint_store, process_batch};
use crate::check::readback::{compare, count_and_sum};
use crate::check::rules::Claims;
use crate::checkpoint::{CheckpointStore, ChunkState, RunLock};
use crate::chunk::Chunk;
use crate::plan::Plan;
use crate::sink::{REFUSED, Sink};
use crate::{Error, Result};

/// A chunk whose rows in the target are not what the source gives now.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkDifference {
    /// The chunk's id.
    pub chunk: usize,
    /// Its range, for humans.
    pub range: String,
    /// Rows the source and transform give.
    pub expected_rows: u64,
    /// Rows the target holds for the chunk.
    pub found_rows: u64,
    /// The first differing row and column.
    pub detail: String,
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The pipeline's name.
    pub pipeline: String,
    /// Chunks compared (the done ones).
    pub chunks_checked: usize,
    /// Chunks not done, so not compared.
    pub chunks_not_done: usize,
    /// Rows the source gives for the compared chunks.
    pub rows_expected: u64,
    /// Rows found in the target for them.
    pub rows_found: u64,
    /// The chunks that differ, by id.
    pub differences: Vec<ChunkDifference>,
    /// With `--repair`: the summary of rewriting the differing chunks.
    pub repair: Option<Summary>,
    /// Wall time, seconds.
    pub seconds: f64,
}

impl VerifyReport {
    /// 0 when every chunk is done and the target matches (or was repaired), 1 when a
    /// chunk differs or is not done (its rows are not all in the target), 2 when a repair
    /// failed.
    pub fn exit_code(&self) -> i32 {
        match &self.repair {
            Some(s) if s.chunks_failed > 0 || s.interrupted => 2,
            _ if self.chunks_not_done > 0 => 1,
            Some(_) => 0,
            None if self.differences.is_empty() => 0,
            None => 1,
        }
    }
}

/// Compares every done chunk of the pipeline's checkpoint with the target; with
/// `repair`, rewrites the chunks that differ, holding the pipeline's run lock (waiting up
/// to `lock_wait` for a run that holds it).
pub fn verify(
    plan: &Plan,
    sink: &dyn Sink,
    repair: bool,
    lock_wait: Duration,
) -> Result<VerifyReport> {
    let store = checkpoint_store(plan, sink);
    let lock = match repair {
        true => match super::take_lock(store.as_ref(), &super::NoopObserver, lock_wait) {
            Ok(lock) => Some(lock),
            Err(e) => {
                let _ = store.close();
                return Err(e);
            }
        },
        false => None,
    };
    let report = verify_with(plan, sink, &store, lock.as_ref());
    // A repair closed it already, before its run; closing again changes nothing.
    let _ = store.close();
    report
}

fn verify_with(
    plan: &Plan,
    sink: &dyn Sink,
    store: &Arc<dyn CheckpointStore>,
    lock: Option<&RunLock>,
) -> Result<VerifyReport> {
    let started = Instant::now();
    let Some(checkpoint) = store.load()? else {
        return Err(Error::Unsupported(format!(
            "no checkpoint for pipeline {} in {}; run it before verifying",
            plan.pipeline.name,
            store.describe()
        )));
    };
    // A check loosened since (to retry rejected rows) changes nothing of what was
    // written: the rows it now lets pass are compared once written.
    if checkpoint.fingerprint != plan.pipeline.fingerprint()
        && super::widened(&checkpoint, plan).is_none()
    {
        return Err(Error::Unsupported(format!(
            "the pipeline changed since its run of {}; verify compares with the transform that wrote the target, so run with --restart first",
            checkpoint.created_at
        )));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(plan.pipeline.chunks.parallel.max(1))
        .build()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let key = plan.target_key().map(|k| k.columns).unwrap_or_default();
    let mut report = VerifyReport {
        pipeline: plan.pipeline.name.clone(),
        chunks_checked: 0,
        chunks_not_done: 0,
        rows_expected: 0,
        rows_found: 0,
        differences: Vec::new(),
        repair: None,
        seconds: 0.0,
    };
    // Chunks in plan order, one claim set for the whole pass: `unique` sees the rows in
    // the order a one-worker run would.
    let mut claims = Claims::default();
    let mut selections = Vec::new();
    let mut refused = refused_keys(sink)?;
    for record in &checkpoint.chunks {
        if record.state != ChunkState::Done {
            report.chunks_not_done += 1;
            continue;
        }
        let chunk = &record.chunk;
        let mut expected = expected_rows(plan, &pool, chunk, &mut claims)?;
        if let Some(keys) = refused.get_mut(&chunk.id) {
            expected = without_keys(expected, &key, keys)?;
        }
        let selection = sink.chunk_rows(&plan.selection(chunk, &expected)?, &key, &expected)?;
        let expected = sink.as_read_back(expected)?;
        let (rows, sum) = count_and_sum(&expected)?;
        let found = sink.read_rows(chunk.id, &selection, &key)?;
        let found_rows: u64 = found.iter().map(|b| b.num_rows() as u64).sum();
        report.chunks_checked += 1;
        report.rows_expected += rows;
        report.rows_found += found_rows;
        if let Err(detail) = compare(chunk, (rows, sum, &expected), &found, &key) {
            report.differences.push(ChunkDifference {
                chunk: chunk.id,
                range: chunk.to_string(),
                expected_rows: rows,
                found_rows,
                detail: detail
                    .split_once("first difference: ")
                    .map_or(detail.clone(), |(_, d)| d.to_string()),
            });
            selections.push((chunk.id, selection));
        }
    }
    plan.checks.release(claims);
    if let Some(lock) = lock
        && !report.differences.is_empty()
    {
        let ids: Vec<usize> = report.differences.iter().map(|d| d.chunk).collect();
        // Pending first, then remove: a crash in between leaves a pending chunk whose
        // rows a later run writes, never a done chunk with rows missing.
        store.redo(&ids)?;
        // The run below opens a store of its own on the same file.
        store.close()?;
        for (id, selection) in &selections {
            sink.remove_rows(*id, selection)?;
        }
        let opts = RunOptions {
            only: Some(ids),
            ..RunOptions::default()
        };
        let store = checkpoint_store(plan, sink);
        report.repair = Some(super::run_locked(
            plan,
            sink,
            &super::NoopObserver,
            &opts,
            &store,
            lock,
        )?);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The keys of the rows the target refused, by chunk, with how many rows of each: the
/// source still gives them, but the target never held them.
fn refused_keys(sink: &dyn Sink) -> Result<HashMap<usize, HashMap<Option<String>, usize>>> {
    let mut out: HashMap<usize, HashMap<Option<String>, usize>> = HashMap::new();
    for entry in sink.read_quarantine()? {
        if entry.reason.starts_with(REFUSED) {
            *out.entry(entry.chunk)
                .or_default()
                .entry(entry.key)
                .or_default() += 1;
        }
    }
    Ok(out)
}

/// `batches` without one row per count in `keys` (target key columns `key`).
fn without_keys(
    batches: Vec<RecordBatch>,
    key: &[String],
    keys: &mut HashMap<Option<String>, usize>,
) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let keep: Vec<bool> = (0..b.num_rows())
            .map(
                |r| match keys.get_mut(&crate::chunk::key::row_key(&b, key, r)) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        false
                    }
                    _ => true,
                },
            )
            .collect();
        let b = arrow::compute::filter_record_batch(&b, &BooleanArray::from(keep))
            .map_err(|e| Error::Internal(e.to_string()))?;
        if b.num_rows() > 0 {
            out.push(b);
        }
    }
    Ok(out)
}

/// The rows `chunk` gives now: its source range, transformed and checked.
fn expected_rows(
    plan: &Plan,
    pool: &rayon::ThreadPool,
    chunk: &Chunk,
    claims: &mut Claims,
) -> Result<Vec<arrow::record_batch::RecordBatch>> {
    let source = plan.source.as_ref();
    let mut out = Vec::new();
    let mut offset = 0u64;
    // Read as a run reads it, so a row the run wrote is expected here too.
    let (batches, _) = super::read_chunk(plan, chunk)?;
    for batch in batches {
        let batch = batch?;
        let base = offset;
        let p = process_batch(
            plan,
            pool,
            &batch,
            &|row| source.locate(chunk, base + row as u64),
            chunk.id,
            claims,
        )?;
        offset += batch.num_rows() as u64;
        if p.out.batch.num_rows() > 0 {
            out.push(p.out.batch);
        }
    }
    Ok(out)
}
