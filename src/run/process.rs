//! Reading a chunk's batches, and one batch through the transform and the declared
//! checks: what `run` and `dry-run` share.

use super::*;

/// Reads `chunk` for a run or `verify`: without the source columns nothing uses, where
/// the source can leave them out (see [`Plan::used_columns`]). Also returns which
/// columns were read when some were left out.
pub(crate) fn read_chunk(
    plan: &Plan,
    chunk: &Chunk,
) -> Result<(crate::source::BatchIter, Option<Vec<bool>>)> {
    let batch_rows = plan.pipeline.chunks.batch_rows;
    if let Some(used) = plan.used_columns()
        && let Some(batches) = plan.source.read_used(chunk, batch_rows, &used)?
    {
        return Ok((batches, Some(used)));
    }
    Ok((plan.source.read(chunk, batch_rows)?, None))
}

/// Rows `rows` of `batch`, which was read with only the `used` columns, read again whole
/// by key for the quarantine: one row per entry of `rows`, in that order. The row read
/// again must hold the values the run saw in every used column; a row the source no
/// longer has, or that changed since, fails the chunk rather than quarantining a row
/// the reason does not fit.
pub(super) fn whole_rows(
    plan: &Plan,
    chunk: &Chunk,
    batch: &arrow::record_batch::RecordBatch,
    rows: &[usize],
    used: &[bool],
) -> Result<arrow::record_batch::RecordBatch> {
    let source = plan.source.as_ref();
    let keys: Vec<Option<String>> = rows
        .iter()
        .map(|&r| crate::chunk::key::row_key(batch, source.key(), r))
        .collect();
    // A key need not be unique: each is looked up once, and each row takes a row read
    // again under its key that matches it.
    let mut distinct: Vec<Option<String>> = Vec::new();
    let mut slot = std::collections::HashMap::new();
    for k in &keys {
        slot.entry(k.clone()).or_insert_with(|| {
            distinct.push(k.clone());
            distinct.len() - 1
        });
    }
    let Some((found, origin)) = source.read_keys(&distinct)? else {
        return Err(Error::Internal(format!(
            "{} left columns out but cannot read rows again by key",
            source.describe()
        )));
    };
    let mut under: Vec<Vec<usize>> = vec![Vec::new(); distinct.len()];
    for (again, &o) in origin.iter().enumerate() {
        under[o].push(again);
    }
    let same = |row: usize, again: usize| {
        used.iter().enumerate().filter(|(_, u)| **u).all(|(c, _)| {
            batch.column(c).slice(row, 1).to_data() == found.column(c).slice(again, 1).to_data()
        })
    };
    let mut take = Vec::with_capacity(rows.len());
    // Rows alike in every used column are interchangeable, but each is taken once: two
    // rejected rows never stand for one source row.
    let mut taken = vec![false; found.num_rows()];
    for (&row, key) in rows.iter().zip(&keys) {
        let candidates = &under[slot[key]];
        let again = candidates
            .iter()
            .copied()
            .find(|&j| !taken[j] && same(row, j));
        let Some(again) = again else {
            let why = match candidates.is_empty() {
                true => "the source no longer has it",
                false => "it changed since the chunk read it",
            };
            return Err(Error::Check(format!(
                "{chunk}: rejected row {} of {} could not be read again whole for the quarantine: {why}; the chunk is not committed, run again to redo it",
                key.as_deref().unwrap_or("(no key)"),
                source.describe()
            )));
        };
        taken[again] = true;
        take.push(again as u32);
    }
    arrow::compute::take_record_batch(&found, &arrow::array::UInt32Array::from(take))
        .map_err(|e| Error::Internal(e.to_string()))
}

/// One source batch after the transform and the declared checks: what would be written,
/// and every rejected row with its location. `run` and `dry-run` both go through here.
pub(crate) struct Processed {
    /// The transform's output, less the rows a check rejected.
    pub out: crate::transform::Transformed,
    /// Counts for this batch (written = rows that passed).
    pub counts: ChunkCounts,
    /// Rejected rows, located in the source (the transform's rejects and the checks',
    /// in row order; `out.rejects` is left empty).
    pub rejects: Vec<RowFailure>,
    /// The input row of each of `rejects`.
    pub reject_rows: Vec<usize>,
    /// Rows written although a `warn` check failed, with the reason as summaries group it.
    pub warnings: Vec<(String, RowFailure)>,
}

/// Transforms `batch` on the CPU pool, applies the declared checks, and locates the
/// rejects. `locate` names a row of the batch (by its index) in the source; `unique`
/// values are claimed for `chunk` in `claims`.
pub(crate) fn process_batch(
    plan: &Plan,
    pool: &rayon::ThreadPool,
    batch: &arrow::record_batch::RecordBatch,
    locate: &dyn Fn(usize) -> String,
    chunk: usize,
    claims: &mut Claims,
) -> Result<Processed> {
    let source = plan.source.as_ref();
    let mut out = pool.install(|| plan.transform.apply(batch))?;
    let mut warnings = Vec::new();
    if !plan.checks.is_empty() {
        let violations = pool.install(|| plan.checks.apply(&out.batch, chunk, claims))?;
        if !violations.is_empty() {
            let input_row = |row: usize| out.rows.as_ref().map_or(row, |r| r[row]);
            let failure = |v: &Violation| RowFailure {
                location: locate_row(source, batch, input_row(v.row), locate),
                column: v.column.clone(),
                value: v.value.clone(),
                reason: v.reason.clone(),
            };
            if let Some(v) = violations.iter().find(|v| v.policy == Policy::Fail) {
                return Err(Error::Check(format!(
                    "{} (policy = \"fail\" stops the chunk)",
                    failure(v)
                )));
            }
            let mut drop = vec![false; out.batch.num_rows()];
            for v in &violations {
                if v.policy != Policy::Warn {
                    drop[v.row] = true;
                }
            }
            // Each violation moves into what it becomes: a chunk may reject every row.
            let mut rejected = vec![false; out.batch.num_rows()];
            for v in violations {
                if v.policy != Policy::Warn {
                    if !rejected[v.row] {
                        rejected[v.row] = true;
                        out.rejects.push(crate::transform::Reject {
                            row: input_row(v.row),
                            column: v.column,
                            value: v.value,
                            reason: v.reason,
                        });
                    }
                } else if !drop[v.row] {
                    // Warnings count rows that are written, once per check.
                    let grouped = grouped_reason(v.column.as_deref(), &v.reason);
                    warnings.push((grouped, failure(&v)));
                }
            }
            if drop.iter().any(|d| *d) {
                let keep =
                    arrow::array::BooleanArray::from(drop.iter().map(|d| !d).collect::<Vec<_>>());
                let rows: Vec<usize> = (0..drop.len())
                    .filter(|&i| !drop[i])
                    .map(input_row)
                    .collect();
                out.batch = arrow::compute::filter_record_batch(&out.batch, &keep)
                    .map_err(|e| Error::Internal(e.to_string()))?;
                out.rows = Some(rows);
                out.rejects.sort_by_key(|r| r.row);
            }
        }
    }
    let mut reject_rows = Vec::with_capacity(out.rejects.len());
    let rejects = std::mem::take(&mut out.rejects)
        .into_iter()
        .map(|r| {
            reject_rows.push(r.row);
            RowFailure {
                location: locate_row(source, batch, r.row, locate),
                column: r.column,
                value: r.value,
                reason: r.reason,
            }
        })
        .collect::<Vec<_>>();
    let counts = ChunkCounts {
        read: batch.num_rows() as u64,
        written: out.batch.num_rows() as u64,
        filtered: out.filtered as u64,
        rejected: rejects.len() as u64,
    };
    Ok(Processed {
        out,
        counts,
        rejects,
        reject_rows,
        warnings,
    })
}

/// Names a row of `batch` for messages: by key for databases (`sqlite://x table t, id=42`),
/// by position plus key for files (`orders.csv line 17 (order_id=16)`).
pub(crate) fn locate_row(
    source: &dyn crate::source::Source,
    batch: &arrow::record_batch::RecordBatch,
    row: usize,
    locate: &dyn Fn(usize) -> String,
) -> String {
    // A row known by its place: the location says it all.
    if source.key() == source.position() {
        return locate(row);
    }
    // Built in one string: a chunk may name every one of its rows in the quarantine.
    let schema = batch.schema_ref();
    let mut key = String::new();
    for (n, k) in source.key().iter().enumerate() {
        let text = schema
            .index_of(k)
            .ok()
            .and_then(|i| cell_text(batch, i, row));
        let Some(text) = text else {
            return locate(row);
        };
        if n > 0 {
            key.push_str(", ");
        }
        key.push_str(k);
        key.push('=');
        key.push_str(&text);
    }
    if key.is_empty() {
        return locate(row);
    }
    if source.names_rows_by_key() {
        return format!("{}, {key}", source.describe());
    }
    let mut at = locate(row);
    at.reserve(key.len() + 3);
    at.push_str(" (");
    at.push_str(&key);
    at.push(')');
    at
}
