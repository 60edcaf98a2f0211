//! `rowshift test-rollback DIR`: up, down and up again on a throwaway copy, to prove
//! before the real `down` that it loses nothing.
//!
//! The copy is a temporary SQLite file, PostgreSQL schema or MySQL database for the
//! target, and one for each data step's source that is not the target itself, on the
//! same server (a SQLite source: another temporary file). The first `--sample` rows of
//! each source table, by key, are copied into it; the steps' pipelines are pointed at
//! the copies; the real target and sources are only read. The copies are dropped at the
//! end, also when a step fails.
//!
//! It checks that the second `up` gives the same target as the first (every table's
//! columns and types, indexes, constraints and rows), and that each reverse pipeline
//! returns the sample it was given (down(up(x)) = x), naming the first difference.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::apply::{MigrateOptions, up};
use super::down::down;
use super::history::{History, PG_SCHEMA};
use super::set::MigrationSet;
use super::snapshot::{Snapshotter, TableSnap, first_row_difference, first_schema_difference};
use super::{SetError, SetEvent, SetObserver};
use crate::Error;
use crate::config::{Location, Pipeline};
use crate::runtime::IoRuntime;
use crate::sql::quote_ident;

/// The rows of each source table copied when `--sample` is not given.
pub const DEFAULT_SAMPLE: u64 = 10_000;

/// Knobs of test-rollback.
#[derive(Debug, Clone)]
pub struct TestRollbackOptions {
    /// Rows copied from each data step's source table (its first, by key).
    pub sample: u64,
    /// The up and down runs' options (`to` and `force` are test-rollback's own).
    pub migrate: MigrateOptions,
}

/// A table's figures after the first up, or a reverse pipeline's round trip.
#[derive(Debug, Clone, Serialize)]
pub struct TableFigures {
    /// The step, for a round trip.
    pub step: Option<u64>,
    /// The table.
    pub table: String,
    /// Its rows.
    pub rows: u64,
    /// The checksum of its rows' values as text (hex).
    pub checksum: String,
}

/// What test-rollback found.
#[derive(Debug, Clone, Serialize)]
pub struct TestRollbackReport {
    /// The set's name.
    pub set: String,
    /// The real target, redacted: never written.
    pub target: String,
    /// The throwaway copies, as they were named while they existed.
    pub scratch: Vec<String>,
    /// Rows copied per source table, at most.
    pub sample: u64,
    /// Steps each up applied.
    pub steps: usize,
    /// The target's tables after the first up (and, when nothing differs, the second).
    pub tables: Vec<TableFigures>,
    /// Each reverse pipeline's table after down, the same as the sample it was given
    /// when nothing differs.
    pub round_trips: Vec<TableFigures>,
    /// The first difference, when there is one.
    pub difference: Option<String>,
    /// What could not be dropped at the end, if anything.
    pub cleanup: Vec<String>,
    /// Wall time, seconds.
    pub seconds: f64,
}

impl TestRollbackReport {
    /// 0 when up, down and up gave the same target and every reverse pipeline its
    /// sample back; 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self.difference {
            Some(_) => 1,
            None => 0,
        }
    }
}

/// A throwaway place test-rollback made, dropped at the end.
enum Place {
    Dir(PathBuf),
    Schema(Location),
}

/// The throwaway copies: made on demand, dropped by `drop_all` (or, failing that, when
/// dropped).
struct Scratch {
    io: IoRuntime,
    tag: String,
    dir: Option<PathBuf>,
    places: Vec<Place>,
    /// Real location, its copy.
    map: Vec<(Location, Location)>,
    made: usize,
}

impl Scratch {
    fn new(io: &IoRuntime) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Scratch {
            io: io.clone(),
            tag: format!("rowshift_rollback_{}_{nanos:09}", std::process::id()),
            dir: None,
            places: Vec::new(),
            map: Vec::new(),
            made: 0,
        }
    }

    fn dir(&mut self) -> Result<PathBuf, Error> {
        if let Some(d) = &self.dir {
            return Ok(d.clone());
        }
        let d = std::env::temp_dir().join(&self.tag);
        std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        self.places.push(Place::Dir(d.clone()));
        self.dir = Some(d.clone());
        Ok(d)
    }

    /// The copy of `real`, made if it is not yet.
    fn copy_of(&mut self, real: &Location) -> Result<Location, Error> {
        if let Some((_, c)) = self.map.iter().find(|(r, _)| r == real) {
            return Ok(c.clone());
        }
        let n = self.made;
        self.made += 1;
        let copy = match real {
            Location::Sqlite { .. } => Location::Sqlite {
                path: self.dir()?.join(format!("copy_{n}.db")),
            },
            Location::Postgres { url, .. } => {
                let schema = format!("{}_{n}", self.tag);
                let loc = Location::Postgres {
                    url: url.clone(),
                    schema: schema.clone(),
                };
                let admin = History::open(&loc, "", &self.io)?;
                let made = admin.execute_raw(&format!("CREATE SCHEMA {}", quote_ident(&schema)));
                admin.close();
                made?;
                self.places.push(Place::Schema(loc.clone()));
                loc
            }
            Location::Mysql { url, .. } => {
                let db = format!("{}_{n}", self.tag);
                let loc = Location::Mysql {
                    url: url.clone(),
                    schema: db.clone(),
                };
                let admin = History::open(&loc, "", &self.io)?;
                let made = admin.execute_raw(&format!(
                    "CREATE DATABASE {} DEFAULT CHARACTER SET utf8mb4",
                    crate::db::mysql::quote(&db)
                ));
                admin.close();
                made?;
                self.places.push(Place::Schema(loc.clone()));
                loc
            }
            Location::Files { .. } => {
                return Err(Error::Unsupported(
                    "test-rollback copies database tables; a source of files is not copied".into(),
                ));
            }
        };
        self.map.push((real.clone(), copy.clone()));
        Ok(copy)
    }

    /// What the copies were, for the report.
    fn shown(&self) -> Vec<String> {
        self.map.iter().map(|(_, c)| shown(c)).collect()
    }

    /// Drops every copy; says what could not be dropped.
    fn drop_all(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for place in self.places.drain(..).rev() {
            let done = match &place {
                Place::Dir(d) => std::fs::remove_dir_all(d).map_err(|e| Error::io(d, e)),
                Place::Schema(loc) => drop_schema(loc, &self.io),
            };
            if let Err(e) = done {
                out.push(crate::config::redact(&e.to_string()));
            }
        }
        out
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.drop_all();
    }
}

fn drop_schema(loc: &Location, io: &IoRuntime) -> Result<(), Error> {
    let admin = History::open(loc, "", io)?;
    let out = match loc {
        Location::Postgres { schema, .. } => admin.execute_raw(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE; \
             DO $$ BEGIN IF to_regclass('{PG_SCHEMA}.history') IS NOT NULL THEN \
             DELETE FROM {}.history WHERE target = '{}'; END IF; END $$",
            quote_ident(schema),
            quote_ident(PG_SCHEMA),
            schema.replace('\'', "''")
        )),
        Location::Mysql { schema, .. } => admin.execute_raw(&format!(
            "DROP DATABASE IF EXISTS {}",
            crate::db::mysql::quote(schema)
        )),
        _ => Ok(()),
    };
    admin.close();
    out
}

fn shown(loc: &Location) -> String {
    match loc {
        Location::Sqlite { path } => format!("sqlite://{}", path.display()),
        Location::Postgres { url, schema } => format!("{} schema {schema}", url.shown()),
        Location::Mysql { url, schema } => format!("{} database {schema}", url.shown()),
        Location::Files { path, .. } => path.display().to_string(),
    }
}

/// The URL text a copy is shown by in messages.
fn url_text(loc: &Location) -> String {
    match loc {
        Location::Sqlite { path } => format!("sqlite://{}", path.display()),
        Location::Postgres { url, .. } | Location::Mysql { url, .. } => url.shown(),
        Location::Files { path, .. } => path.display().to_string(),
    }
}

/// Copies the first `n` rows (by `key`) of `table` from `real` into `copy`, with the
/// table's columns, types and indexes (not its foreign keys: the sample of the table it
/// references may not hold every row they need).
fn copy_sample(
    real: &Location,
    copy: &Location,
    table: &str,
    key: &[String],
    n: u64,
    io: &IoRuntime,
) -> Result<(), Error> {
    let admin = History::open(copy, "", io)?;
    let out = (|| match (real, copy) {
        (Location::Postgres { schema: from, .. }, Location::Postgres { schema: to, .. }) => {
            let (src, dst) = (pg_name(from, table), pg_name(to, table));
            let order = order_by(key, quote_ident);
            admin.execute_raw(&format!(
                "CREATE TABLE {dst} (LIKE {src} INCLUDING ALL EXCLUDING GENERATED); \
                 INSERT INTO {dst} OVERRIDING SYSTEM VALUE SELECT * FROM {src}{order} LIMIT {n}"
            ))
        }
        (Location::Mysql { schema: from, .. }, Location::Mysql { schema: to, .. }) => {
            let q = crate::db::mysql::qualified;
            let order = order_by(key, crate::db::mysql::quote);
            admin.execute_raw(&format!(
                "CREATE TABLE {dst} LIKE {src}",
                dst = q(to, table),
                src = q(from, table)
            ))?;
            admin.execute_raw(&format!(
                "INSERT INTO {dst} SELECT * FROM {src}{order} LIMIT {n}",
                dst = q(to, table),
                src = q(from, table)
            ))
        }
        (Location::Sqlite { path }, Location::Sqlite { .. }) => {
            let source = History::open_read_only(real, "", io)?;
            let ddl = source.query_texts(
                "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL AND type IN ('table', 'index') ORDER BY type = 'index', name",
                &[table.to_string()],
            );
            source.close();
            let ddl: Vec<String> = ddl?
                .into_iter()
                .filter_map(|r| r.into_iter().next().flatten())
                .collect();
            let order = order_by(key, quote_ident);
            let t = quote_ident(table);
            let file = path.display().to_string().replace('\'', "''");
            admin.execute_raw(&format!(
                "PRAGMA foreign_keys = OFF; {}; ATTACH DATABASE '{file}' AS rowshift_real; \
                 INSERT INTO main.{t} SELECT * FROM rowshift_real.{t}{order} LIMIT {n}; \
                 DETACH DATABASE rowshift_real",
                ddl.join("; ")
            ))
        }
        _ => Err(Error::Internal("a copy of another kind of database".into())),
    })();
    admin.close();
    out
}

fn pg_name(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

fn order_by(key: &[String], quote: fn(&str) -> String) -> String {
    match key.is_empty() {
        true => String::new(),
        false => format!(
            " ORDER BY {}",
            key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Points a pipeline's source and target at their copies.
fn repoint(p: &mut Pipeline, source: Location, target: Location) {
    p.source.url.value = url_text(&source);
    p.source.location = source;
    p.target.url.value = url_text(&target);
    p.target.location = target;
}

/// Runs up, down and up again on a throwaway copy of `set`'s target and sources, with
/// a sample of each source, and compares.
pub fn test_rollback(
    set: &MigrationSet,
    opts: &TestRollbackOptions,
    observer: &dyn SetObserver,
) -> Result<TestRollbackReport, SetError> {
    let t0 = Instant::now();
    let io = IoRuntime::new()?;
    let mut scratch = Scratch::new(&io);
    let out = run(set, opts, observer, &io, &mut scratch);
    let cleanup = scratch.drop_all();
    let mut report = out?;
    report.cleanup = cleanup;
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

fn stage(observer: &dyn SetObserver, what: &str) {
    observer.on_set_event(&SetEvent::Stage(what.to_string()));
}

fn run(
    set: &MigrationSet,
    opts: &TestRollbackOptions,
    observer: &dyn SetObserver,
    io: &IoRuntime,
    scratch: &mut Scratch,
) -> Result<TestRollbackReport, SetError> {
    let lib = |e: Error| SetError::Lib(e);
    // Every source must be a database: its sample is copied, and a reverse pipeline
    // writes it back.
    for step in &set.steps {
        if let Some(p) = &step.pipeline
            && matches!(p.source.location, Location::Files { .. })
        {
            return Err(SetError::Refused(format!(
                "test-rollback copies a sample of each data step's source table, and {} reads files ({}); it tests sets whose sources are databases",
                step.label(),
                crate::config::redact(&p.source.url.value)
            )));
        }
    }
    // An online step's cut-over reads its reverse pipeline from the file `[online]
    // reverse` names, which names the real target: it cannot be pointed at the copy.
    if let Some(step) = set.steps.iter().find(|s| s.is_online()) {
        return Err(SetError::Refused(format!(
            "test-rollback does not run online steps, and {} is one: its cut-over reads its reverse pipeline from its file, which names the real target, not the throwaway copy; test its way back with `up` and `down --to {}` on a copy of the database",
            step.label(),
            step.number.saturating_sub(1)
        )));
    }
    stage(observer, "copying the samples");
    let target = scratch.copy_of(&set.target).map_err(lib)?;
    let mut copied: Vec<(Location, String)> = Vec::new();
    let mut written: Vec<String> = Vec::new();
    let mut copy = set.clone();
    copy.target = target.clone();
    copy.shown = shown(&target);
    for step in copy.steps.iter_mut() {
        let label = step.label();
        let Some(p) = step.pipeline.as_mut() else {
            continue;
        };
        let real = p.source.location.clone();
        let table = p
            .source
            .table
            .as_ref()
            .map(|t| t.value.clone())
            .unwrap_or_default();
        let source = scratch.copy_of(&real).map_err(lib)?;
        // A table an earlier data step writes into the target is that step's, not a copy.
        let earlier = real == set.target && written.contains(&table);
        if !earlier && !copied.contains(&(source.clone(), table.clone())) {
            let look = Snapshotter::open(&real, io).map_err(lib)?;
            let exists = look.exists(&table);
            let key = match &exists {
                Ok(true) => look.table(&table).map(|t| t.key),
                _ => Ok(Vec::new()),
            };
            look.close();
            // A table missing from the real source is left for an earlier step to make.
            if exists.map_err(lib)? {
                let key = match &p.source.key {
                    Some(k) => k.value.clone(),
                    None => key.map_err(lib)?,
                };
                copy_sample(&real, &source, &table, &key, opts.sample, io).map_err(|e| {
                    SetError::Step {
                        step: label.clone(),
                        source: Error::Unsupported(format!(
                            "copying a sample of its source table {table}: {e}"
                        )),
                    }
                })?;
            }
            copied.push((source.clone(), table.clone()));
        }
        if let Some(t) = &p.target.table {
            written.push(t.value.clone());
        }
        repoint(p, source.clone(), target.clone());
        if let Some(r) = step.reverse.as_mut() {
            repoint(r, target.clone(), source);
        }
    }
    // The samples the reverse pipelines must give back.
    let mut samples: Vec<(u64, String, Location, Option<TableSnap>)> = Vec::new();
    for step in &copy.steps {
        if let (Some(p), Some(_)) = (&step.pipeline, &step.reverse) {
            let table = p
                .source
                .table
                .as_ref()
                .map(|t| t.value.clone())
                .unwrap_or_default();
            let look = Snapshotter::open(&p.source.location, io).map_err(lib)?;
            let snap = match look.exists(&table) {
                Ok(true) => look.table(&table).map(Some),
                Ok(false) => Ok(None),
                Err(e) => Err(e),
            };
            look.close();
            samples.push((
                step.number,
                table,
                p.source.location.clone(),
                snap.map_err(lib)?,
            ));
        }
    }
    let skip_tables: Vec<String> = copy
        .steps
        .iter()
        .filter_map(|s| s.pipeline.as_ref()?.target.table.as_ref())
        .map(|t| format!("{}_rejects", t.value))
        .collect();
    let skip = |t: &str| t.starts_with("_rowshift") || skip_tables.iter().any(|s| s == t);
    let mut report = TestRollbackReport {
        set: set.name.clone(),
        target: set.shown.clone(),
        scratch: scratch.shown(),
        sample: opts.sample,
        steps: 0,
        tables: Vec::new(),
        round_trips: Vec::new(),
        difference: None,
        cleanup: Vec::new(),
        seconds: 0.0,
    };
    let run_opts = MigrateOptions {
        to: None,
        force: false,
        ..opts.migrate.clone()
    };
    let context = |what: &'static str| {
        move |e: SetError| match e {
            SetError::Invalid(_) => e,
            e => SetError::Refused(format!(
                "test-rollback: {what} on the throwaway copy failed: {}",
                crate::config::redact(&e.to_string())
            )),
        }
    };

    stage(observer, "first up");
    let first = up(&copy, &run_opts, observer).map_err(context("the first up"))?;
    report.steps = first.steps.len();
    if let Some(s) = first.steps.iter().find(|s| s.record.rows_rejected > 0) {
        report.difference = Some(format!(
            "the first up rejected {} rows in step {} ({}): a sample that does not go up whole cannot come back whole",
            s.record.rows_rejected, s.step, s.name
        ));
        return Ok(report);
    }
    let snap = |loc: &Location| -> Result<BTreeMap<String, TableSnap>, SetError> {
        let look = Snapshotter::open(loc, io).map_err(lib)?;
        let all = look.all(&skip);
        look.close();
        all.map_err(lib)
    };
    let after_first = snap(&target)?;
    report.tables = after_first
        .values()
        .map(|t| TableFigures {
            step: None,
            table: t.name.clone(),
            rows: t.count,
            checksum: t.checksum.clone(),
        })
        .collect();

    stage(observer, "down");
    down(
        &copy,
        &MigrateOptions {
            to: Some(0),
            ..run_opts.clone()
        },
        observer,
    )
    .map_err(context("down"))?;
    for (step, table, loc, sample) in &samples {
        let label = copy.step(*step).map_or_else(String::new, |s| s.label());
        let file = copy
            .step(*step)
            .and_then(|s| s.reverse.as_ref())
            .map(super::apply::pipeline_file)
            .unwrap_or_default();
        let look = Snapshotter::open(loc, io).map_err(lib)?;
        let back = match look.exists(table) {
            Ok(true) => look.table(table).map(Some),
            Ok(false) => Ok(None),
            Err(e) => Err(e),
        };
        look.close();
        let back = back.map_err(lib)?;
        let difference = match (sample, &back) {
            (Some(x), Some(y)) => first_row_difference(x, y, "in the source sample", "after down"),
            (Some(_), None) => Some(format!("table {table} is not there after down")),
            (None, _) => None,
        };
        if let Some(d) = difference {
            report.difference = Some(format!(
                "{label}: its reverse pipeline {file} does not return the original rows (down(up(x)) != x): {d}"
            ));
            return Ok(report);
        }
        if let Some(y) = back {
            report.round_trips.push(TableFigures {
                step: Some(*step),
                table: table.clone(),
                rows: y.count,
                checksum: y.checksum,
            });
        }
    }

    stage(observer, "second up");
    up(&copy, &run_opts, observer).map_err(context("the second up"))?;
    let after_second = snap(&target)?;
    report.difference = first_schema_difference(
        &after_first,
        &after_second,
        "after the first up",
        "after the second",
    )
    .map(|d| format!("the second up does not give the target the first gave: {d}"));
    Ok(report)
}
