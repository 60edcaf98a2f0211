//! One folder per database. Each holds everything that knows its database: connecting
//! and the catalog, the wire codec, its [`crate::source::Source`], its
//! [`crate::sink::Sink`], its [`crate::checkpoint::CheckpointStore`], how its errors are
//! classified and how its types map to rowshift's.
//!
//! A database's folder may use the shared steps (source, transform, check, checkpoint,
//! sink, sql) but never another database's folder; `crate::plan` picks the folder for a
//! [`crate::config::Location`]. docs/ARCHITECTURE.md has the checklist for adding one.

pub mod mysql;
pub mod postgres;
pub mod sqlite;
