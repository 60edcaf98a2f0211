//! The chunk vocabulary every step of the flow speaks: what a chunk covers
//! ([`Chunk`], [`ChunkRange`], [`KeyValue`]), where its rows land ([`TargetKey`],
//! [`Selection`]), what it counted ([`ChunkCounts`]), and how a row's key is written in
//! messages and the quarantine ([`key`]).
//!
//! It is a leaf: it imports nothing from the flow, so every folder may use it without
//! tying itself to another step.

pub mod key;
mod selection;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use self::selection::{Selection, key_at, key_values};

/// A value of the chunking key, as stored in chunk boundaries.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum KeyValue {
    /// An integer key.
    Int(i64),
    /// A text key.
    Text(String),
    /// A composite key's value, one part per key column, compared part by part (SQL's
    /// row-value comparison). Parts are never themselves tuples.
    Tuple(Vec<KeyValue>),
}

impl KeyValue {
    /// The parts: a tuple's, or the value itself for a one-column key.
    pub fn parts(&self) -> &[KeyValue] {
        match self {
            KeyValue::Tuple(parts) => parts,
            one => std::slice::from_ref(one),
        }
    }

    /// A key value from its parts: the part itself for a one-column key.
    pub fn from_parts(mut parts: Vec<KeyValue>) -> KeyValue {
        if parts.len() == 1 {
            parts.remove(0)
        } else {
            KeyValue::Tuple(parts)
        }
    }
}

impl fmt::Display for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyValue::Int(v) => write!(f, "{v}"),
            KeyValue::Text(v) => write!(f, "'{}'", v.replace('\'', "''")),
            KeyValue::Tuple(parts) => {
                f.write_str("(")?;
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{p}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// What part of the source a chunk covers. Fixed at plan time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChunkRange {
    /// Rows with `lo < key <= hi` (an open end is unbounded).
    Keys {
        /// Exclusive lower bound; `None` for the first chunk.
        lo: Option<KeyValue>,
        /// Inclusive upper bound; `None` for the last chunk, so rows added after planning
        /// are not lost.
        hi: Option<KeyValue>,
    },
    /// Whole records between two byte offsets of a CSV file.
    Bytes {
        /// Index into the source's file list.
        file: usize,
        /// First byte of the first record.
        start: u64,
        /// One past the last byte of the last record.
        end: u64,
        /// 1-based line number of the first record.
        first_line: u64,
    },
    /// Consecutive row groups of a Parquet file.
    RowGroups {
        /// Index into the source's file list.
        file: usize,
        /// First row group.
        first: usize,
        /// One past the last row group.
        end: usize,
        /// Row number (0-based, within the file) of the chunk's first row.
        first_row: u64,
    },
}

/// One unit of work: read, transform, check and commit as a whole.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Chunk {
    /// Position in the plan, from 0.
    pub id: usize,
    /// What it covers.
    pub range: ChunkRange,
    /// Rows in the chunk when known exactly at plan time (files, key ranges).
    pub rows: Option<u64>,
}

impl fmt::Display for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.range {
            ChunkRange::Keys { lo, hi } => match (lo, hi) {
                (None, None) => write!(f, "chunk {} (all keys)", self.id),
                (Some(lo), None) => write!(f, "chunk {} (key > {lo})", self.id),
                (None, Some(hi)) => write!(f, "chunk {} (key <= {hi})", self.id),
                (Some(lo), Some(hi)) => write!(f, "chunk {} ({lo} < key <= {hi})", self.id),
            },
            ChunkRange::Bytes { start, end, .. } => {
                write!(f, "chunk {} (bytes {start}..{end})", self.id)
            }
            ChunkRange::RowGroups { first, end, .. } => {
                write!(f, "chunk {} (row groups {first}..{end})", self.id)
            }
        }
    }
}

/// The target columns that hold the source key (see [`Plan::target_key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetKey {
    /// One target column per source key column, in key order.
    pub columns: Vec<String>,
    /// Whether every one holds its key column's value unchanged, so a chunk's key range
    /// finds its rows in the target.
    pub unchanged: bool,
}

/// Row counts of one chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkCounts {
    /// Rows read from the source.
    pub read: u64,
    /// Rows written to the target.
    pub written: u64,
    /// Rows the filter dropped.
    pub filtered: u64,
    /// Rows that failed a conversion or check.
    pub rejected: u64,
}

impl std::ops::AddAssign for ChunkCounts {
    fn add_assign(&mut self, o: Self) {
        self.read += o.read;
        self.written += o.written;
        self.filtered += o.filtered;
        self.rejected += o.rejected;
    }
}
