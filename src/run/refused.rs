//! Rows the target refused: taken out of the chunk, quarantined with the reason, and
//! the whole source rows read again for the quarantine.

use super::*;

/// One batch of a chunk as read and as written, for a target that may refuse rows.
pub(super) struct Kept {
    /// The batch as read.
    pub(super) source: arrow::record_batch::RecordBatch,
    /// The rows before it in the chunk, to locate its rows.
    pub(super) base: u64,
    /// The batch as written.
    pub(super) out: arrow::record_batch::RecordBatch,
    /// For each row of `out`, its row in `source`.
    pub(super) rows: Vec<usize>,
}

/// Counts `entry` under its reason for the summary, the first one as the example.
pub(super) fn count_reason(
    by_reason: &mut std::collections::BTreeMap<String, (u64, RowFailure)>,
    entry: &QuarantineEntry,
) {
    let example = || {
        let failure = RowFailure {
            location: entry.location.clone(),
            column: entry.column.clone(),
            value: entry.value.clone(),
            reason: entry.reason.clone(),
        };
        (0, failure)
    };
    by_reason
        .entry(entry.grouped_reason())
        .or_insert_with(example)
        .0 += 1;
}

/// How a row the target refused (found at `location`) is kept in the quarantine: the
/// server's message as the reason, its detail as the value.
pub(crate) fn refusal_failure(r: &crate::sink::Refusal, location: String) -> RowFailure {
    RowFailure {
        location,
        column: r.column.clone(),
        value: r.detail.clone(),
        reason: format!("{}{}", crate::sink::REFUSED, r.reason),
    }
}

/// Takes rows `drop` (positions in `out`) out of a written batch and out of `rows`, its
/// map to the rows as read; returns the rows taken out.
pub(crate) fn take_out(
    out: &mut arrow::record_batch::RecordBatch,
    rows: &mut Vec<usize>,
    drop: &[usize],
) -> Result<arrow::record_batch::RecordBatch> {
    let mut keep = vec![true; out.num_rows()];
    for &d in drop {
        keep[d] = false;
    }
    let filter = |batch: &arrow::record_batch::RecordBatch, mask: Vec<bool>| {
        arrow::compute::filter_record_batch(batch, &arrow::array::BooleanArray::from(mask))
            .map_err(|e| Error::Internal(e.to_string()))
    };
    let taken = filter(out, keep.iter().map(|k| !k).collect())?;
    *out = filter(out, keep.clone())?;
    let mut kept = keep.into_iter();
    rows.retain(|_| kept.next().unwrap_or(false));
    Ok(taken)
}

/// Quarantine entries for the rows the target refused (counted across `kept`'s written
/// rows), which are taken out of `kept`; the `unique` values they claimed are given back.
pub(super) fn refused_entries(
    plan: &Plan,
    chunk: &Chunk,
    kept: &mut [Kept],
    refused: &[crate::sink::Refusal],
    left_out: Option<&[bool]>,
    claims: &mut Claims,
) -> Result<Vec<QuarantineEntry>> {
    let source = plan.source.as_ref();
    let mut entries = Vec::with_capacity(refused.len());
    let mut refused: Vec<&crate::sink::Refusal> = refused.iter().collect();
    refused.sort_by_key(|r| r.row);
    let mut next = refused.into_iter().peekable();
    let mut start = 0;
    // The refused rows as written, whose `unique` values are given back.
    let mut gone = Vec::new();
    for k in kept.iter_mut() {
        let end = start + k.out.num_rows();
        let mut here = Vec::new();
        while let Some(r) = next.next_if(|r| r.row < end) {
            here.push(r);
        }
        if here.is_empty() {
            start = end;
            continue;
        }
        let rows: Vec<usize> = here.iter().map(|r| k.rows[r.row - start]).collect();
        let whole = match left_out {
            Some(used) => Some(whole_rows(plan, chunk, &k.source, &rows, used)?),
            None => None,
        };
        let json = RowJsonWriter::new(match &whole {
            Some(whole) => whole.schema_ref(),
            None => k.source.schema_ref(),
        });
        for (i, (r, &row)) in here.iter().zip(&rows).enumerate() {
            let failure = refusal_failure(
                r,
                locate_row(source, &k.source, row, &|row| {
                    source.locate(chunk, k.base + row as u64)
                }),
            );
            entries.push(match &whole {
                Some(whole) => {
                    QuarantineEntry::new(chunk.id, whole, i, source.key(), failure, &json)
                }
                None => {
                    QuarantineEntry::new(chunk.id, &k.source, row, source.key(), failure, &json)
                }
            });
        }
        let drop: Vec<usize> = here.iter().map(|r| r.row - start).collect();
        gone.push(take_out(&mut k.out, &mut k.rows, &drop)?);
        start = end;
    }
    if next.peek().is_some() {
        return Err(Error::Internal(format!(
            "{chunk}: the target refused a row past the {start} rows written"
        )));
    }
    let written: Vec<_> = kept.iter().map(|k| k.out.clone()).collect();
    plan.checks.release_rows(claims, &gone, &written)?;
    Ok(entries)
}
