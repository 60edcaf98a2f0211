//! Dry runs: the real transform and checks on a sample of the source, with every write
//! left out. Nothing is created or changed: no table, no file, no state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::compute::{interleave_record_batch, take_record_batch};
use serde::Serialize;

use super::{Processed, locate_row, process_batch};
use crate::check::quarantine::strip_quoted;
use crate::check::rules::Claims;
use crate::chunk::Chunk;
use crate::chunk::ChunkCounts;
use crate::config::{FileFormat, Location, Pipeline};
use crate::plan::Plan;
use crate::runtime::IoRuntime;
use crate::source::Source;
use crate::types::cast::value_text;
use crate::{Error, Result, RowFailure};

/// How to take the sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SampleMode {
    /// The first rows, in plan order.
    First,
    /// A uniform random sample over the whole source (reservoir sampling), with a seed.
    Random(u64),
    /// All rows of a local CSV or Parquet file instead of the source.
    File(PathBuf),
}

/// Options of `rowshift dry-run`.
#[derive(Debug, Clone)]
pub struct DryRunOptions {
    /// Rows in the sample. Default 1,000.
    pub sample: usize,
    /// How to take it.
    pub mode: SampleMode,
    /// Rows to show before and after. Default 3.
    pub preview: usize,
}

impl Default for DryRunOptions {
    fn default() -> Self {
        DryRunOptions {
            sample: 1000,
            mode: SampleMode::First,
            preview: 3,
        }
    }
}

/// A target column as the run would create it.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnInfo {
    /// Name.
    pub name: String,
    /// Declared type.
    pub r#type: String,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// Part of the primary key.
    pub primary_key: bool,
}

/// One row before and after, as `(column, value)` pairs (`None` is NULL).
#[derive(Debug, Clone, Serialize)]
pub struct PreviewRow {
    /// Where the row is in the source.
    pub location: String,
    /// Source columns.
    pub source: Vec<(String, Option<String>)>,
    /// Target columns.
    pub target: Vec<(String, Option<String>)>,
}

/// Rejected rows that share a reason.
#[derive(Debug, Clone, Serialize)]
pub struct RejectGroup {
    /// The column (if any) and the reason, with values left out.
    pub reason: String,
    /// How many rows of the sample.
    pub count: u64,
    /// Up to three of them.
    pub examples: Vec<RowFailure>,
}

/// A row the filter would drop.
#[derive(Debug, Clone, Serialize)]
pub struct FilteredRow {
    /// Where the row is in the source.
    pub location: String,
    /// Its source columns.
    pub source: Vec<(String, Option<String>)>,
}

/// The chunk plan of the full source and a duration estimate.
#[derive(Debug, Clone, Serialize)]
pub struct PlanEstimate {
    /// Chunks the run would process.
    pub chunks: usize,
    /// The configured rows per chunk.
    pub rows_per_chunk: u64,
    /// Total rows, when the plan knows every chunk's count.
    pub total_rows: Option<u64>,
    /// Chunks in flight.
    pub parallel: usize,
    /// Seconds the run would take at the sample's read and transform speed (writes not
    /// included), when the total is known.
    pub estimated_seconds: Option<f64>,
}

/// Everything a dry run found.
#[derive(Debug, Clone, Serialize)]
pub struct DryRunReport {
    /// The pipeline's name.
    pub pipeline: String,
    /// What was sampled.
    pub source: String,
    /// `first`, `random` or `file`.
    pub sample_mode: String,
    /// Where the run would write.
    pub target: String,
    /// The target's columns.
    pub columns: Vec<ColumnInfo>,
    /// What the run would execute before writing rows.
    pub ddl: Vec<String>,
    /// Counts over the sample (`written` = would be written).
    pub rows: ChunkCounts,
    /// A few rows before and after.
    pub preview: Vec<PreviewRow>,
    /// Rejected rows grouped by reason, largest group first.
    pub rejects: Vec<RejectGroup>,
    /// Rows that would be written although a `warn` check fails, grouped the same way.
    pub warnings: Vec<RejectGroup>,
    /// A few of the rows the filter would drop.
    pub filtered: Vec<FilteredRow>,
    /// The full source's chunk plan, when the source could be planned.
    pub plan: Option<PlanEstimate>,
    /// Why there is no plan, when there is none.
    pub plan_error: Option<String>,
    /// Whether the run would fail on this sample: it stops a chunk at its first rejected row.
    pub would_fail: bool,
    /// When no row of the sample could be read: why (and so no speed, and no estimate).
    pub nothing_read: Option<String>,
    /// Key values the sample holds more than once, each with where (for a source chunked
    /// by position, a file: a run fails the chunks that hold them).
    pub repeated_keys: Vec<String>,
}

/// Runs the pipeline's transforms and checks on a sample, writing nothing.
pub fn dry_run(pipeline: Pipeline, opts: &DryRunOptions) -> Result<DryRunReport> {
    let started = Instant::now();
    let (plan, real, plan_error) = match &opts.mode {
        SampleMode::File(path) => {
            let io = IoRuntime::new()?;
            let sample = open_sample_file(&pipeline, path, &io)?;
            let sample_plan = Plan::with_source(pipeline.clone(), sample, io)?;
            match Plan::build(pipeline) {
                Ok(real) => (sample_plan, Some(real), None),
                Err(e) => (
                    sample_plan,
                    None,
                    Some(crate::config::redact(&e.to_string())),
                ),
            }
        }
        _ => (Plan::build(pipeline)?, None, None),
    };
    let planning = real.as_ref().unwrap_or(&plan);
    let cfg = &plan.pipeline.chunks;
    let chunks = match planning.source.plan(cfg.rows) {
        Ok(c) => Some(c),
        Err(e) if matches!(opts.mode, SampleMode::File(_)) => {
            let _ = e;
            None
        }
        Err(e) => return Err(e),
    };
    let sink = plan.open_sink()?;
    let ddl = sink.planned_ddl()?;

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.parallel.max(1))
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the CPU pool: {e}")))?;
    let sample_started = Instant::now();
    let (batch, locations, rows_read) = match &opts.mode {
        SampleMode::First => first_rows(
            plan.source.as_ref(),
            chunks.as_deref().unwrap_or(&[]),
            opts.sample,
            cfg.batch_rows,
        )?,
        SampleMode::Random(seed) => reservoir(
            plan.source.as_ref(),
            chunks.as_deref().unwrap_or(&[]),
            opts.sample,
            cfg.batch_rows,
            *seed,
        )?,
        SampleMode::File(_) => {
            let file_chunks = plan.source.plan(u64::MAX)?;
            first_rows(
                plan.source.as_ref(),
                &file_chunks,
                opts.sample,
                cfg.batch_rows,
            )?
        }
    };
    let positional = |row: usize| locations[row].clone();
    // Claims are dropped with the process: a dry run leaves no state behind.
    let mut claims = Claims::default();
    let mut p: Processed = process_batch(&plan, &pool, &batch, &positional, 0, &mut claims)?;
    // Records the sampler could not read into rows (in the chunks it read) would be
    // rejected by a run too.
    let sampled_chunks = match &opts.mode {
        SampleMode::File(_) => Vec::new(),
        _ => chunks.clone().unwrap_or_default(),
    };
    for chunk in &sampled_chunks {
        for u in plan.source.unreadable(chunk) {
            p.counts.read += 1;
            p.counts.rejected += 1;
            p.rejects.push(RowFailure {
                location: u.location,
                column: u.column,
                value: Some(u.raw),
                reason: u.reason,
            });
        }
    }
    let location = |row: usize| locate_row(plan.source.as_ref(), &batch, row, &positional);
    // Rows the target would refuse before they are sent (values finer than an existing
    // column keeps) are rejects in a run too.
    let refused = sink.refusals_before_sending(std::slice::from_ref(&p.out.batch))?;
    let mut refused_rows = std::collections::HashSet::new();
    if !refused.is_empty() {
        let mut rows = p
            .out
            .rows
            .clone()
            .unwrap_or_else(|| (0..p.out.batch.num_rows()).collect());
        for r in &refused {
            refused_rows.insert(rows[r.row]);
            p.rejects
                .push(super::refusal_failure(r, location(rows[r.row])));
        }
        let drop: Vec<usize> = refused.iter().map(|r| r.row).collect();
        super::take_out(&mut p.out.batch, &mut rows, &drop)?;
        p.out.rows = Some(rows);
        p.counts.written -= refused.len() as u64;
        p.counts.rejected += refused.len() as u64;
    }
    let elapsed = sample_started.elapsed().as_secs_f64();
    // Rows read, not rows kept: a random sample reads every row to keep a few, and the
    // estimate is for reading them all.
    let rate = if elapsed > 0.0 {
        rows_read as f64 / elapsed
    } else {
        f64::INFINITY
    };

    let source_row = |row: usize| -> Vec<(String, Option<String>)> {
        batch
            .schema()
            .fields()
            .iter()
            .enumerate()
            .map(|(c, f)| (f.name().clone(), value_text(batch.column(c).as_ref(), row)))
            .collect()
    };
    let input_rows: Vec<usize> = p
        .out
        .rows
        .clone()
        .unwrap_or_else(|| (0..batch.num_rows()).collect());
    let preview = input_rows
        .iter()
        .take(opts.preview)
        .enumerate()
        .map(|(out_row, &in_row)| PreviewRow {
            location: location(in_row),
            source: source_row(in_row),
            target: p
                .out
                .batch
                .schema()
                .fields()
                .iter()
                .enumerate()
                .map(|(c, f)| {
                    (
                        f.name().clone(),
                        value_text(p.out.batch.column(c).as_ref(), out_row),
                    )
                })
                .collect(),
        })
        .collect();
    let mut rejected: std::collections::HashSet<usize> = p.reject_rows.iter().copied().collect();
    rejected.extend(refused_rows);
    let passed: std::collections::HashSet<usize> = input_rows.iter().copied().collect();
    let filtered = (0..batch.num_rows())
        .filter(|r| !passed.contains(r) && !rejected.contains(r))
        .take(5)
        .map(|r| FilteredRow {
            location: location(r),
            source: source_row(r),
        })
        .collect();

    // A file is chunked by position, and each chunk's rows are found in the target by
    // their keys: a key two chunks share is read back twice. A database source keeps
    // the rows of one key in one chunk.
    let repeated_keys = match plan.source.names_rows_by_key() {
        true => Vec::new(),
        false => repeated_keys(plan.source.as_ref(), &batch, &location),
    };
    // No row read gives no speed: the sample says why instead of an estimate.
    let nothing_read = (rows_read == 0).then(|| match p.rejects.first() {
        Some(first) => format!(
            "no row of the sample could be read: all {} records were unreadable; the first: {first}",
            p.rejects.len()
        ),
        None => "no row of the sample could be read: the source gave no rows".to_string(),
    });
    let plan_estimate = chunks.map(|chunks| {
        let total_rows: Option<u64> = chunks.iter().map(|c| c.rows).sum();
        let parallel = cfg.parallel.clamp(1, chunks.len().max(1));
        PlanEstimate {
            chunks: chunks.len(),
            rows_per_chunk: cfg.rows,
            total_rows,
            parallel,
            estimated_seconds: total_rows
                .filter(|_| rate.is_finite() && rate > 0.0)
                .map(|t| t as f64 / (rate * parallel as f64)),
        }
    });
    let _ = started;
    Ok(DryRunReport {
        pipeline: plan.pipeline.name.clone(),
        source: plan.source.describe(),
        sample_mode: match opts.mode {
            SampleMode::First => "first",
            SampleMode::Random(_) => "random",
            SampleMode::File(_) => "file",
        }
        .into(),
        target: sink.describe(),
        columns: plan
            .pipeline
            .target
            .columns
            .iter()
            .map(|c| ColumnInfo {
                name: c.name.value.clone(),
                r#type: c.ty.value.to_string(),
                nullable: c.nullable,
                primary_key: c.primary_key,
            })
            .collect(),
        ddl,
        would_fail: beyond_limits(&plan.pipeline.limits, &p.counts) || !repeated_keys.is_empty(),
        repeated_keys,
        rows: p.counts,
        preview,
        rejects: group_rejects(p.rejects),
        warnings: group_rejects(p.warnings.into_iter().map(|(_, f)| f).collect()),
        filtered,
        plan: plan_estimate,
        plan_error,
        nothing_read,
    })
}

/// Whether the sample's rejects pass the pipeline's limits; with no limit set, any
/// rejected row does (the run would exit 1).
fn beyond_limits(limits: &crate::config::Limits, c: &ChunkCounts) -> bool {
    let ratio = if c.read == 0 {
        0.0
    } else {
        c.rejected as f64 / c.read as f64
    };
    match (limits.max_rejects, limits.max_reject_ratio) {
        (None, None) => c.rejected > 0,
        (max, ratio_limit) => {
            max.is_some_and(|m| c.rejected > m) || ratio_limit.is_some_and(|r| ratio > r)
        }
    }
}

fn open_sample_file(
    pipeline: &Pipeline,
    path: &std::path::Path,
    io: &IoRuntime,
) -> Result<Arc<dyn Source>> {
    let format = FileFormat::from_extension(&path.to_string_lossy()).ok_or_else(|| {
        Error::Unsupported(format!(
            "--sample-file {}: expected a .csv or .parquet file",
            path.display()
        ))
    })?;
    let mut config = pipeline.source.clone();
    config.location = Location::Files {
        path: std::path::absolute(path).map_err(|e| Error::io(path, e))?,
        format,
    };
    if format == FileFormat::Parquet {
        config.types.clear();
    }
    crate::plan::open_source(&config, io)
}

/// The first `n` rows in plan order, as one batch, with each row's location.
fn first_rows(
    source: &dyn Source,
    chunks: &[Chunk],
    n: usize,
    batch_rows: usize,
) -> Result<Sampled> {
    let mut batches = Vec::new();
    let mut locations = Vec::new();
    'chunks: for chunk in chunks {
        let mut offset = 0u64;
        for batch in source.read(chunk, batch_rows)? {
            let batch = batch?;
            let want = (n - locations.len()).min(batch.num_rows());
            locations.extend((0..want).map(|r| source.locate(chunk, offset + r as u64)));
            batches.push(batch.slice(0, want));
            offset += batch.num_rows() as u64;
            if locations.len() == n {
                break 'chunks;
            }
        }
    }
    let batch = arrow::compute::concat_batches(&source.schema(), &batches)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let read = batch.num_rows() as u64;
    Ok((batch, locations, read))
}

/// A sample: its rows as one batch, each row's location, and how many source rows were
/// read to draw it (all of them for a random sample).
type Sampled = (RecordBatch, Vec<String>, u64);

/// A uniform sample of `n` rows over every chunk (Algorithm R), as one batch.
fn reservoir(
    source: &dyn Source,
    chunks: &[Chunk],
    n: usize,
    batch_rows: usize,
    seed: u64,
) -> Result<Sampled> {
    let mut rng = XorShift(seed | 1);
    let mut kept: Vec<RecordBatch> = Vec::new();
    // slot -> (kept batch, row in it, location)
    let mut slots: Vec<(usize, usize, String)> = Vec::with_capacity(n.min(1 << 20));
    let mut seen = 0u64;
    for chunk in chunks {
        let mut offset = 0u64;
        for batch in source.read(chunk, batch_rows)? {
            let batch = batch?;
            let mut picks: Vec<(usize, u32)> = Vec::new();
            for row in 0..batch.num_rows() {
                let slot = if (seen as usize) < n {
                    Some(seen as usize)
                } else {
                    Some(rng.below(seen + 1) as usize).filter(|j| *j < n)
                };
                if let Some(slot) = slot {
                    picks.push((slot, row as u32));
                }
                seen += 1;
            }
            if !picks.is_empty() {
                let indices =
                    arrow::array::UInt32Array::from(picks.iter().map(|p| p.1).collect::<Vec<_>>());
                kept.push(
                    take_record_batch(&batch, &indices)
                        .map_err(|e| Error::Internal(e.to_string()))?,
                );
                let b = kept.len() - 1;
                for (i, (slot, row)) in picks.into_iter().enumerate() {
                    let loc = source.locate(chunk, offset + row as u64);
                    if slot == slots.len() {
                        slots.push((b, i, loc));
                    } else {
                        slots[slot] = (b, i, loc);
                    }
                }
            }
            offset += batch.num_rows() as u64;
            if kept.len() > 64 {
                compact(&mut kept, &mut slots)?;
            }
        }
    }
    compact(&mut kept, &mut slots)?;
    let batch = kept
        .pop()
        .unwrap_or_else(|| RecordBatch::new_empty(source.schema()));
    Ok((batch, slots.into_iter().map(|s| s.2).collect(), seen))
}

/// Rebuilds the kept rows as one batch in slot order, dropping evicted rows.
fn compact(kept: &mut Vec<RecordBatch>, slots: &mut [(usize, usize, String)]) -> Result<()> {
    if kept.is_empty() {
        return Ok(());
    }
    let refs: Vec<&RecordBatch> = kept.iter().collect();
    let idx: Vec<(usize, usize)> = slots.iter().map(|s| (s.0, s.1)).collect();
    let one = interleave_record_batch(&refs, &idx).map_err(|e| Error::Internal(e.to_string()))?;
    *kept = vec![one];
    for (i, s) in slots.iter_mut().enumerate() {
        s.0 = 0;
        s.1 = i;
    }
    Ok(())
}

struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Groups rejects by column and reason, with quoted values taken out of the reason.
fn group_rejects(rejects: Vec<RowFailure>) -> Vec<RejectGroup> {
    let mut groups: BTreeMap<String, RejectGroup> = BTreeMap::new();
    for r in rejects {
        let reason = strip_quoted(&r.reason);
        let key = match &r.column {
            Some(c) => format!("column {c}: {reason}"),
            None => reason,
        };
        let g = groups.entry(key.clone()).or_insert_with(|| RejectGroup {
            reason: key,
            count: 0,
            examples: Vec::new(),
        });
        g.count += 1;
        if g.examples.len() < 3 {
            g.examples.push(r);
        }
    }
    let mut out: Vec<RejectGroup> = groups.into_values().collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
    out
}

/// The key values `batch` holds more than once (up to ten), each with the rows that hold
/// it: `id=2 (dup.csv line 3, dup.csv line 4)`.
fn repeated_keys(
    source: &dyn Source,
    batch: &arrow::record_batch::RecordBatch,
    location: &dyn Fn(usize) -> String,
) -> Vec<String> {
    let key = source.key();
    if key.is_empty() {
        return Vec::new();
    }
    let mut rows: std::collections::HashMap<String, Vec<usize>> = Default::default();
    let mut order = Vec::new();
    for row in 0..batch.num_rows() {
        let Some(k) = crate::chunk::key::row_key(batch, key, row) else {
            continue;
        };
        let seen = rows.entry(k.clone()).or_default();
        if seen.len() == 1 {
            order.push(k);
        }
        seen.push(row);
    }
    order
        .into_iter()
        .take(10)
        .map(|k| {
            let at: Vec<String> = rows[&k].iter().map(|&r| location(r)).collect();
            format!("{}={k} ({})", key.join(", "), at.join("; "))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_rejects_by_column_and_reason_without_values() {
        let f = |col: &str, reason: &str| RowFailure {
            location: "x".into(),
            column: Some(col.into()),
            value: None,
            reason: reason.into(),
        };
        let groups = group_rejects(vec![
            f(
                "d",
                "Cast error: Cannot cast string 'a' to value of Date32 type",
            ),
            f(
                "d",
                "Cast error: Cannot cast string 'b' to value of Date32 type",
            ),
            f("n", "is NULL"),
        ]);
        assert_eq!(groups.len(), 2);
        assert_eq!(
            groups[0].reason,
            "column d: Cast error: Cannot cast string '…' to value of Date32 type"
        );
        assert_eq!(groups[0].count, 2);
        assert_eq!(groups[1].reason, "column n: is NULL");
    }
}
