//! rowshift moves large tables between schema versions.
//!
//! A pipeline file (TOML) names a source, a target and, per target column, a SQL
//! expression over the source columns. rowshift plans the source as a list of
//! [`plan::Chunk`]s up front, runs them in parallel, checks each one, and writes
//! the result to the target.
//!
//! The flow, and the module that owns each step:
//!
//! | step | module |
//! |---|---|
//! | parse and validate the pipeline file | [`config`] |
//! | compile expressions, plan chunks | [`plan`] |
//! | read one chunk as Arrow batches | [`source`] |
//! | evaluate expressions, lossless casts | [`transform`] |
//! | write one chunk, commit it atomically | [`sink`] |
//! | per-chunk invariants | [`check`] |
//! | the parallel executor, progress events | [`run`] |
//! | a run's report as one HTML page | [`report`] |
//!
//! The `rowshift` command line is not part of the library: it lives in the binary
//! (`src/main.rs`, `src/cli/`), built with the default feature `cli`. A program that
//! uses rowshift as a library can turn that feature off
//! (`default-features = false`) and compile neither clap, indicatif, ctrlc nor anyhow.
#![warn(missing_docs)]

pub mod check;
pub mod checkpoint;
pub mod chunk;
pub mod config;
pub mod db;
mod error;
pub mod fault;
pub mod init;
pub mod migrate;
pub mod online;
pub mod plan;
pub mod report;
pub mod run;
pub mod runtime;
pub mod secret;
pub mod sink;
pub mod source;
pub mod sql;
pub mod transform;
pub mod types;

pub use error::{Error, Result, RowFailure, chain_text};
