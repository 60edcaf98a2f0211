//! Invariants checked on every chunk before it is committed.

pub mod quarantine;
pub mod readback;
pub mod rules;

use crate::chunk::{Chunk, ChunkCounts, ChunkRange};
use crate::{Error, Result};

/// An order-independent checksum of a batch's rows: the wrapping sum of a fixed-seed hash
/// of each row. Chunk size, batch size and thread count cannot change it; it is stable
/// for a given rowshift version.
pub fn checksum(batch: &arrow::record_batch::RecordBatch) -> Result<u64> {
    use datafusion_common::hash_utils::{RandomState, create_hashes};
    if batch.num_rows() == 0 {
        return Ok(0);
    }
    let mut hashes = vec![0u64; batch.num_rows()];
    create_hashes(
        batch.columns(),
        &RandomState::with_seed(0x726f_7773_6869_6674),
        &mut hashes,
    )
    .map_err(|e| Error::Internal(format!("checksum: {e}")))?;
    Ok(hashes.iter().fold(0u64, |acc, h| acc.wrapping_add(*h)))
}

/// Conservation: every row read is written, filtered or rejected, exactly once. For file
/// chunks, whose row count is fixed when planned, the rows read must also match the plan.
pub fn conservation(chunk: &Chunk, c: &ChunkCounts) -> Result<()> {
    let accounted = c.written + c.filtered + c.rejected;
    if c.read != accounted {
        return Err(Error::Check(format!(
            "{chunk}: read {} rows but accounted for {accounted} ({} written + {} filtered + {} rejected)",
            c.read, c.written, c.filtered, c.rejected
        )));
    }
    let exact = matches!(
        chunk.range,
        ChunkRange::Bytes { .. } | ChunkRange::RowGroups { .. }
    );
    if let (true, Some(planned)) = (exact, chunk.rows)
        && planned != c.read
    {
        return Err(Error::Check(format!(
            "{chunk}: the plan counted {planned} rows but {} were read",
            c.read
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_chunk(rows: u64) -> Chunk {
        Chunk {
            id: 7,
            range: ChunkRange::RowGroups {
                file: 0,
                first: 0,
                end: 1,
                first_row: 0,
            },
            rows: Some(rows),
        }
    }

    #[test]
    fn holds_when_every_row_is_accounted_for() {
        let c = ChunkCounts {
            read: 10,
            written: 7,
            filtered: 2,
            rejected: 1,
        };
        assert!(conservation(&file_chunk(10), &c).is_ok());
    }

    #[test]
    fn fails_when_a_row_is_missing() {
        let c = ChunkCounts {
            read: 10,
            written: 6,
            filtered: 2,
            rejected: 1,
        };
        assert_eq!(
            conservation(&file_chunk(10), &c).unwrap_err().to_string(),
            "check failed: chunk 7 (row groups 0..1): read 10 rows but accounted for 9 (6 written + 2 filtered + 1 rejected)"
        );
    }

    #[test]
    fn fails_when_a_file_chunk_reads_other_than_planned() {
        let c = ChunkCounts {
            read: 9,
            written: 9,
            filtered: 0,
            rejected: 0,
        };
        assert_eq!(
            conservation(&file_chunk(10), &c).unwrap_err().to_string(),
            "check failed: chunk 7 (row groups 0..1): the plan counted 10 rows but 9 were read"
        );
    }
}
