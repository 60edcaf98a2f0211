//! The one place that turns a [`Location`] into the code of its database or file format.
//! Adding a database means one arm in each function here (and its folder in `crate::db`).

use std::sync::Arc;

use arrow::datatypes::SchemaRef;

use crate::Result;
use crate::chunk::TargetKey;
use crate::config::{Location, SourceConfig, TargetConfig};
use crate::db::{mysql, postgres, sqlite};
use crate::runtime::IoRuntime;
use crate::sink::{FileSink, Sink};
use crate::source::capture::Capture;
use crate::source::{self, Source};

/// Opens the source a pipeline names.
pub fn open_source(config: &SourceConfig, io: &IoRuntime) -> Result<Arc<dyn Source>> {
    Ok(match &config.location {
        Location::Sqlite { path } => {
            Arc::new(sqlite::source::SqliteSource::open(config, path, io)?)
        }
        Location::Postgres { url, schema } => Arc::new(postgres::source::PostgresSource::open(
            config, url, schema, io,
        )?),
        Location::Mysql { url, schema } => {
            Arc::new(mysql::source::MysqlSource::open(config, url, schema, io)?)
        }
        Location::Files { path, format } => source::open_files(config, path, *format)?,
    })
}

/// Opens the target a pipeline names, for batches of `schema`. Touches nothing.
///
/// `key` is the target columns that hold the source key (see
/// [`crate::plan::Plan::target_key`]); `write_mode = "replace-chunk"` finds a chunk's rows
/// by them.
pub fn open_sink(
    config: &TargetConfig,
    schema: SchemaRef,
    key: Option<TargetKey>,
    io: &IoRuntime,
) -> Result<Arc<dyn Sink>> {
    Ok(match &config.location {
        Location::Sqlite { path } => Arc::new(sqlite::sink::SqliteSink::open(
            config, path, schema, key, io,
        )?),
        Location::Postgres { url, schema: pg } => Arc::new(postgres::sink::PostgresSink::open(
            config, url, pg, schema, key, io,
        )?),
        Location::Mysql { url, schema: db } => Arc::new(mysql::sink::MysqlSink::open(
            config, url, db, schema, key, io,
        )?),
        Location::Files { path, format } => Arc::new(FileSink::new(config, path, *format, schema)),
    })
}

/// Opens change capture on the source table a pipeline names (`[online]`); `None` for a
/// file source, which has no triggers.
pub fn open_capture(
    config: &SourceConfig,
    pipeline: &str,
    io: &IoRuntime,
) -> Result<Option<Box<dyn Capture>>> {
    let table = config
        .table
        .as_ref()
        .map(|t| t.value.as_str())
        .unwrap_or("");
    let key: &[String] = config.key.as_ref().map_or(&[], |k| k.value.as_slice());
    Ok(Some(match &config.location {
        Location::Sqlite { path } => Box::new(sqlite::capture::SqliteCapture::new(
            path, io, table, key, pipeline,
        )),
        Location::Postgres { url, schema } => Box::new(postgres::capture::PgCapture::new(
            url, &config.db, io, schema, table, key, pipeline,
        )),
        Location::Mysql { url, schema } => Box::new(mysql::capture::MyCapture::new(
            url, &config.db, io, schema, table, key, pipeline,
        )),
        Location::Files { .. } => return Ok(None),
    }))
}
