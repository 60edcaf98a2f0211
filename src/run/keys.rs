//! A file source's keys that repeat, named with their places.

use super::*;

/// `e`, saying why, when a chunk of a file read back more rows under a key than it sent:
/// the key is not unique in the file, and another chunk (a range of lines) holds the
/// same key. The repeated values are named with every place that holds them.
pub(super) fn repeated_key(source: &dyn crate::source::Source, chunk: &Chunk, e: Error) -> Error {
    match e {
        Error::Check(m)
            if !source.names_rows_by_key() && m.contains(" rows with this key, 1 was sent") =>
        {
            let repeats = match crate::source::repeated_places(source, chunk) {
                Ok(r) if !r.is_empty() => format!(" ({})", r.join("; ")),
                _ => String::new(),
            };
            Error::Check(format!(
                "{m}; the key ({}) is not unique in {}: another chunk holds a row under the same key{repeats}. A file is split into chunks by position and each chunk's rows are found in the target by their keys, so the key must be unique",
                source.key().join(", "),
                source.describe()
            ))
        }
        other => other,
    }
}

/// The key values a file source's chunk has read so far, as 128-bit hashes of the key's
/// columns, each with the line (or row) it was first read at, to fail the chunk at a
/// value it holds twice: its read-back could not tell the two rows apart from one row
/// written twice. Hashing the key's arrays is vectorised and allocates nothing per row,
/// so a chunk of a million rows pays milliseconds; two values share a hash about once in
/// 2^64 pairs, which would fail the chunk naming both rows, never pass it wrongly.
pub(super) struct KeyPlaces(std::collections::HashMap<u128, i64, foldhash::fast::FixedState>);

/// The [`KeyPlaces`] of a chunk of `source`, or `None` for a source whose key is unique
/// by nature (a database's, or a file's position).
pub(super) fn key_places(source: &dyn crate::source::Source, chunk: &Chunk) -> Option<KeyPlaces> {
    let key = source.key();
    // A file chunk's row count is known from its plan: sized once, the map never grows
    // (growing a map of a million keys rehashes it about twenty times).
    let rows = chunk.rows.unwrap_or(0).min(1 << 24) as usize;
    (!source.names_rows_by_key() && !key.is_empty() && key != source.position()).then(|| {
        KeyPlaces(std::collections::HashMap::with_capacity_and_hasher(
            rows,
            Default::default(),
        ))
    })
}

/// Fails when a row of `batch` repeats a key value `seen` holds (see [`key_places`]),
/// naming the value and both places (a chunk is one file: they differ by line).
pub(super) fn check_repeats(
    source: &dyn crate::source::Source,
    chunk: &Chunk,
    batch: &arrow::record_batch::RecordBatch,
    seen: &mut KeyPlaces,
) -> Result<()> {
    use arrow::array::{Array, AsArray};
    use datafusion_common::hash_utils::{RandomState, create_hashes};
    let key = source.key();
    let [_, at] = source.position() else {
        return Ok(());
    };
    let Some(at) = batch.column_by_name(at) else {
        return Ok(());
    };
    let at = arrow::compute::cast(at, &arrow::datatypes::DataType::Int64)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let at = at.as_primitive::<arrow::datatypes::Int64Type>();
    let columns = key
        .iter()
        .map(|k| {
            batch
                .column_by_name(k)
                .cloned()
                .ok_or_else(|| Error::Internal(format!("no key column `{k}`")))
        })
        .collect::<Result<Vec<_>>>()?;
    let rows = batch.num_rows();
    let (mut a, mut b) = (vec![0u64; rows], vec![0u64; rows]);
    create_hashes(&columns, &RandomState::with_seed(0x6b65_7973_0001), &mut a)
        .and_then(|_| create_hashes(&columns, &RandomState::with_seed(0x6b65_7973_0002), &mut b))
        .map_err(|e| Error::Internal(format!("hashing the key: {e}")))?;
    for row in 0..rows {
        // A row with a NULL key part falls in no key; the read-back names it.
        if columns.iter().any(|c| c.is_null(row)) {
            continue;
        }
        let hash = (u128::from(a[row]) << 64) | u128::from(b[row]);
        if let Some(first) = seen.0.insert(hash, at.value(row)) {
            let here = crate::source::place(source, batch, row)
                .unwrap_or_else(|| source.locate(chunk, row as u64));
            // The first place is in the same file, at another line or row.
            let first_place = here
                .rsplit_once(' ')
                .map_or_else(|| first.to_string(), |(file, _)| format!("{file} {first}"));
            let label = crate::chunk::key::row_label(batch, key, row).unwrap_or_default();
            return Err(Error::Check(format!(
                "{chunk}: the key ({}) is not unique in {}: {label} at {first_place} and {here}. A file's rows are found in the target by their keys, so the key must be unique; name a unique column as `key`, or leave `key` out and rows are known by their place in the file",
                key.join(", "),
                source.describe()
            )));
        }
    }
    Ok(())
}
