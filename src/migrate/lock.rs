//! The set lock: one per target (a PostgreSQL schema, a MySQL database, a SQLite file),
//! whatever the set, taken before anything touches the target and held until the
//! command ends.
//!
//! It is the run lock of `src/checkpoint/lock.rs`, taken through a checkpoint store of a
//! reserved pipeline name: `pg_try_advisory_lock` on a held connection, `GET_LOCK` with
//! a holder row on MySQL, a lease row renewed by a heartbeat in SQLite. So it dies with a
//! killed process on the servers, and a SQLite lease whose process is gone is taken over.

use std::sync::Arc;
use std::time::Duration;

use crate::checkpoint::{CheckpointStore, Holder, RunLock};
use crate::config::{DbOptions, Location};
use crate::db::mysql::MyClient;
use crate::db::mysql::checkpoint::MyStore;
use crate::db::mysql::dialect::MyDialect;
use crate::db::postgres::PgClient;
use crate::db::postgres::checkpoint::PgStore;
use crate::db::postgres::dialect::PgDialect;
use crate::db::sqlite::checkpoint::SqliteStore;
use crate::runtime::IoRuntime;
use crate::{Error, Result};

/// The pipeline name the set lock is kept under: no pipeline can have it (a pipeline's
/// name has no spaces).
pub const LOCK_NAME: &str = "migration set";

/// Takes the target's set lock, waiting up to `wait`; `waiting` hears once who holds it.
pub fn take(
    target: &Location,
    io: &IoRuntime,
    wait: Duration,
    waiting: &mut dyn FnMut(&Holder),
) -> Result<RunLock> {
    let store = store_for(target, LOCK_NAME, io)?;
    let lock = store.lock(wait, waiting);
    let _ = store.close();
    lock
}

/// The checkpoint store a pipeline named `pipeline` keeps in `target`, built without
/// opening the pipeline's source: the set lock's, and a data step's, which `down` and a
/// fresh `up` discard.
pub fn store_for(
    target: &Location,
    pipeline: &str,
    io: &IoRuntime,
) -> Result<Box<dyn CheckpointStore>> {
    let db = DbOptions {
        pool_size: Some(1),
        ..DbOptions::default()
    };
    Ok(match target {
        Location::Sqlite { path } => Box::new(SqliteStore::new(path, pipeline, io)),
        Location::Postgres { url, schema } => Box::new(PgStore::new(
            PgDialect,
            Arc::new(PgClient::new(url, &db, io)),
            schema,
            pipeline,
        )),
        Location::Mysql { url, schema } => Box::new(MyStore::new(
            MyDialect,
            Arc::new(MyClient::new(url, &db, io)),
            schema,
            pipeline,
        )),
        Location::Files { .. } => {
            return Err(Error::Unsupported(
                "a migration set's target is a database, not files".into(),
            ));
        }
    })
}
