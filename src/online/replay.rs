//! One batch of logged changes taken through the pipeline: the keys' rows read again
//! from the source as they are now, transformed and checked like a chunk's, and handed
//! to the target with the rows of every key to delete first.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::datatypes::DataType;

use crate::check::quarantine::{QuarantineEntry, RowJsonWriter};
use crate::check::rules::Claims;
use crate::chunk::key::join_key;
use crate::chunk::{Chunk, ChunkRange, KeyValue, Selection};
use crate::plan::Plan;
use crate::run::process_batch;
use crate::sink::replay::Replayed;
use crate::source::capture::Change;
use crate::{Error, Result};

/// What a replayed batch wrote.
pub(super) struct Done {
    pub(super) written: u64,
    pub(super) rejected: u64,
}

/// The CPU pool the transform runs on.
pub(super) fn cpu_pool() -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .thread_name(|_| "rowshift-replay".to_string())
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the CPU pool: {e}")))
}

/// Checks that every key column is an integer or text: the change log keeps keys as
/// text, and the target's rows are found by them.
pub(super) fn check_key_types(plan: &Plan) -> Result<()> {
    let schema = plan.source.schema();
    for k in plan.source.key() {
        let f = schema
            .field_with_name(k)
            .map_err(|e| Error::Internal(e.to_string()))?;
        if !(f.data_type().is_integer() || f.data_type() == &DataType::Utf8) {
            return Err(Error::Unsupported(format!(
                "{}: key column `{k}` is {}; an online move needs integer or text key columns",
                plan.source.describe(),
                f.data_type()
            )));
        }
    }
    Ok(())
}

/// Replays `changes` (in log order) through `plan` and hands the result to `write`.
pub(super) fn replay(
    plan: &Plan,
    pool: &rayon::ThreadPool,
    chunks: &[Chunk],
    changes: &[Change],
    write: &mut dyn FnMut(&Replayed<'_>) -> Result<u64>,
) -> Result<Done> {
    let source = plan.source.as_ref();
    let key = source.key();
    let schema = source.schema();
    let target_key = plan
        .target_key()
        .ok_or_else(|| Error::Internal("an online move without a target key".into()))?;
    // Each key once: its row is read as it is now, whichever change logged it.
    let mut seen = std::collections::HashSet::new();
    let mut texts = Vec::new();
    let mut parts = Vec::new();
    for c in changes {
        let Some(text) = join_key(c.key.clone()) else {
            continue;
        };
        if seen.insert(text.clone()) {
            texts.push(text);
            parts.push(c.key.clone());
        }
    }
    let wanted: Vec<Option<String>> = texts.iter().cloned().map(Some).collect();
    let (batch, _) = source.read_keys(&wanted)?.ok_or_else(|| {
        Error::Unsupported(format!("{}: cannot read rows by key", source.describe()))
    })?;
    let mut claims = Claims::default();
    let here = format!("{} (replayed change)", source.describe());
    let p = process_batch(
        plan,
        pool,
        &batch,
        &|row| format!("{here} row {}", row + 1),
        0,
        &mut claims,
    )?;
    let json = RowJsonWriter::new(batch.schema_ref());
    let mut rejects = Vec::with_capacity(p.rejects.len());
    for (&row, failure) in p.reject_rows.iter().zip(p.rejects) {
        let owner = crate::chunk::key::row_key(&batch, key, row)
            .and_then(|_| key_value(&batch, key, row))
            .map_or(0, |k| owner(chunks, &k));
        rejects.push(QuarantineEntry::new(
            owner, &batch, row, key, failure, &json,
        ));
    }
    // The target rows of every key: one array per key column, typed like the key.
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(key.len());
    for (i, k) in key.iter().enumerate() {
        let ty = schema
            .field_with_name(k)
            .map_err(|e| Error::Internal(e.to_string()))?
            .data_type()
            .clone();
        let column: Vec<&str> = parts.iter().map(|p| p[i].as_str()).collect();
        arrays.push(if ty.is_integer() {
            let values = column
                .iter()
                .map(|v| {
                    v.parse::<i64>().map_err(|_| {
                        Error::data(
                            &here,
                            format!("logged key `{v}` of `{k}` is not an integer"),
                        )
                    })
                })
                .collect::<Result<Vec<i64>>>()?;
            Arc::new(Int64Array::from(values))
        } else {
            Arc::new(StringArray::from(column))
        });
    }
    let rows = [p.out.batch];
    let written = write(&Replayed {
        pipeline: &plan.pipeline.name,
        delete: Selection::Keys {
            columns: target_key.columns,
            keys: arrays,
        },
        rows: &rows,
        keys: &texts,
        rejects: &rejects,
        at: changes.last().map(|c| c.at).unwrap_or_default(),
        changes: changes.len() as u64,
    })?;
    Ok(Done {
        written,
        rejected: rejects.len() as u64,
    })
}

/// Row `row`'s key as a chunk bound compares it.
fn key_value(
    batch: &arrow::record_batch::RecordBatch,
    key: &[String],
    row: usize,
) -> Option<KeyValue> {
    let parts = key
        .iter()
        .map(|k| {
            let c = batch.column_by_name(k)?;
            let text = crate::chunk::key::key_text(c.as_ref(), row);
            Some(if c.data_type().is_integer() {
                KeyValue::Int(text.parse().ok()?)
            } else {
                KeyValue::Text(text)
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(KeyValue::from_parts(parts))
}

/// The chunk whose key range holds `k` (0 when none does).
fn owner(chunks: &[Chunk], k: &KeyValue) -> usize {
    chunks
        .iter()
        .find(|c| match &c.range {
            ChunkRange::Keys { lo, hi } => {
                lo.as_ref().is_none_or(|lo| lo < k) && hi.as_ref().is_none_or(|hi| k <= hi)
            }
            _ => false,
        })
        .map_or(0, |c| c.id)
}
