//! End-to-end benchmark: the release `rowshift` binary on generated users tables, timed
//! from the outside, next to a peer doing the same job: DuckDB (CSV -> Parquet), the
//! PostgreSQL server itself (`INSERT ... SELECT`, PostgreSQL -> PostgreSQL) and pgloader
//! (SQLite -> PostgreSQL).
//!
//! Run with `cargo bench --bench e2e`. Knobs (environment variables):
//!
//! - `ROWSHIFT_BENCH_ROWS`: rows per table, default `1000000`; a comma list such as
//!   `1000000,10000000` runs every size and compares peak memory across them.
//! - `ROWSHIFT_BENCH_SCENARIOS`: a comma list out of
//!   `csv_parquet,csv_rejects,sqlite_sqlite,pg_pg,sqlite_pg,mysql_pg,pg_mysql,pg_workers,pg_online`
//!   (default: all). `pg_workers` times the `pg_pg` job done by three processes sharing
//!   one run (`run --worker`, one chunk at a time each) against one process with
//!   `parallel = 3` (target: within 10%). `pg_online` times the `pg_pg` job with change
//!   capture on against off (target: at most 15% slower), the cut-over's lock window with
//!   a writer running (target: under 1 s) and the capture's cost to a writer's
//!   transactions per second (`benches/e2e/online.rs`).
//!   `csv_rejects` times a CSV chunk with 15% of its rows rejected by a check against the
//!   same job with none rejected (target: at most 1.5x). The DuckDB peer runs with
//!   `csv_parquet`, `INSERT ... SELECT` with `pg_pg`, pgloader with `sqlite_pg`.
//! - `ROWSHIFT_PG_URL`: the PostgreSQL server of `pg_pg`, `sqlite_pg`, `mysql_pg` and
//!   `pg_mysql`, default `postgres://postgres@127.0.0.1:5432/test`.
//! - `ROWSHIFT_MYSQL_URL`: the MySQL/MariaDB server of `mysql_pg` and `pg_mysql`, default
//!   `mysql://root@127.0.0.1:3306/test`.
//! - `ROWSHIFT_BENCH_THREADS`: `[chunks] parallel` for rowshift and `PRAGMA threads` for
//!   DuckDB, default 2.
//! - `ROWSHIFT_BENCH_READBACK_PAIRS`: pairs of runs, read-back on and off, behind each
//!   read-back figure (the median of the pairs' costs), default 9; the `INSERT ... SELECT`
//!   and pgloader peers run as many times, and their median is compared with rowshift's.
//! - `ROWSHIFT_BENCH_ONLINE_PAIRS`: `pg_online`'s pairs of copies (capture off, on) and its
//!   cut-over runs, default 5.
//!
//! Data lives in `target/bench-data/` (or `$CARGO_TARGET_DIR/bench-data/`). The CSV of a
//! given size is generated once, deterministically, and reused while its `.meta` file
//! matches; so is the SQLite copy built from it. Each measured run starts in an empty
//! directory of its own under `bench-data/runs/`. See `benches/README.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[path = "e2e/online.rs"]
mod online;

/// Bump when the generated data changes, so stale files are regenerated.
const GENERATOR_VERSION: u32 = 1;
const DEFAULT_ROWS: u64 = 1_000_000;
const DEFAULT_THREADS: usize = 2;
/// `[chunks] rows` for every rowshift pipeline.
const CHUNK_ROWS: u64 = 100_000;
/// Target: rowshift rows/s ÷ DuckDB rows/s.
const TARGET_RATIO: f64 = 1.0;
/// Target: peak RSS at the largest size ÷ at the smallest.
const TARGET_MEMORY_GROWTH: f64 = 1.10;
/// Target (`pg_pg`): rowshift rows/s ÷ the server's own `INSERT ... SELECT` rows/s.
const TARGET_PG_RATIO: f64 = 1.0;
/// Targets (`sqlite_pg`): rowshift rows/s ÷ pgloader rows/s, and rowshift peak RSS ÷
/// pgloader peak RSS.
const TARGET_PGLOADER_RATIO: f64 = 4.0;
const TARGET_PGLOADER_MEMORY: f64 = 0.5;

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Schemas on the PostgreSQL server: the source tables (`users_<rows>`, built once per
/// size and reused), then one per contender, dropped and recreated before each run.
const PG_SOURCE_SCHEMA: &str = "rowshift_bench_src";
/// The MySQL/MariaDB server of `mysql_pg` and `pg_mysql` when `ROWSHIFT_MYSQL_URL` is not set.
const MY_URL: &str = "mysql://root@127.0.0.1:3306/test";
/// MySQL databases: the source table, and the target of `pg_mysql`.
const MY_SOURCE_DB: &str = "rowshift_bench_src";
const PG_MYSQL_DB: &str = "rowshift_bench_pg_mysql";
/// The PostgreSQL schema `mysql_pg` writes into.
const MYSQL_PG_SCHEMA: &str = "rowshift_bench_mysql_pg";
const PG_PG_SCHEMA: &str = "rowshift_bench_pg_pg";
const PG_PEER_SCHEMA: &str = "rowshift_bench_pg_peer";
/// `pg_workers`: the target of one process with `parallel = 3`, and of three workers.
const PG_ONE_SCHEMA: &str = "rowshift_bench_workers_one";
const PG_SHARED_SCHEMA: &str = "rowshift_bench_workers_shared";
/// Target (`pg_workers`): three workers' rows/s ÷ one process's with `parallel = 3`.
const TARGET_WORKERS_RATIO: f64 = 0.90;
const SQLITE_PG_SCHEMA: &str = "rowshift_bench_sqlite_pg";
const PGLOADER_SCHEMA: &str = "rowshift_bench_pgloader";

const ROWSHIFT: &str = env!("CARGO_BIN_EXE_rowshift");
const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

const HEADER: &str = "id,full_name,email,created_at,deleted_at,country,score,note";

/// The five target columns and the filter both measured scenarios apply (and the DuckDB
/// peer mirrors in `benches/duckdb_peer.py`).
const TRANSFORMS: &str = r#"[target.columns]
id         = { type = "bigint", expr = "CAST(id AS BIGINT)", primary_key = true }
email      = { type = "text",   expr = "lower(trim(email))", nullable = false }
first_name = { type = "text",   expr = "split_part(full_name, ' ', 1)" }
last_name  = { type = "text",   expr = "split_part(full_name, ' ', 2)" }
signup_on  = { type = "date",   expr = "CAST(created_at AS DATE)" }

[filter]
where = "deleted_at IS NULL"
"#;

/// The in-database peer of `TRANSFORMS` (`pg_pg`): the same five expressions and filter,
/// into a table of the same column types (rowshift creates `users_v2` the same way).
const PG_PEER_TABLE: &str = "(\n  \"id\" bigint,\n  \"email\" text NOT NULL,\n  \"first_name\" text,\n  \"last_name\" text,\n  \"signup_on\" date,\n  PRIMARY KEY (\"id\")\n)";
const PG_PEER_SELECT: &str = "CAST(id AS BIGINT), lower(trim(email)), split_part(full_name, ' ', 1), split_part(full_name, ' ', 2), CAST(created_at AS DATE)";
/// Row checksums: each target row as text, hashed and summed (order does not matter).
const PG_PG_ROW: &str =
    "id::bigint, email::text, first_name::text, last_name::text, signup_on::date";
const SQLITE_PG_ROW: &str = "id::bigint, full_name::text, email::text, created_at::text, deleted_at::text, country::text, score::float8, note::text";
/// The same with `score` rounded to a 32-bit float: pgloader 3.6 reads SQLite `REAL`
/// values as single floats (551.19 arrives as 551.1900024414062).
const SQLITE_PG_ROW_F4: &str = "id::bigint, full_name::text, email::text, created_at::text, deleted_at::text, country::text, score::float4, note::text";

/// Columns of the MySQL source, built from the SQLite copy by rowshift (setup, not
/// measured): the PostgreSQL source's types.
const MY_SOURCE: &str = r#"[target.columns]
id         = { type = "bigint",    expr = "id", primary_key = true }
full_name  = { type = "text",      expr = "full_name" }
email      = { type = "text",      expr = "email" }
created_at = { type = "timestamp", expr = "CAST(created_at AS TIMESTAMP)" }
deleted_at = { type = "timestamp", expr = "CAST(deleted_at AS TIMESTAMP)" }
country    = { type = "text",      expr = "country" }
score      = { type = "double",    expr = "score" }
note       = { type = "text",      expr = "note" }
"#;

/// Identity columns for building the SQLite source from the CSV (setup, not measured).
const IDENTITY: &str = r#"[target.columns]
id         = { type = "bigint", expr = "CAST(id AS BIGINT)", primary_key = true }
full_name  = { type = "text",   expr = "full_name" }
email      = { type = "text",   expr = "email" }
created_at = { type = "text",   expr = "created_at" }
deleted_at = { type = "text",   expr = "deleted_at" }
country    = { type = "text",   expr = "country" }
score      = { type = "double", expr = "CAST(score AS DOUBLE)" }
note       = { type = "text",   expr = "note" }
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    CsvParquet,
    CsvRejects,
    SqliteSqlite,
    PgPg,
    SqlitePg,
    MysqlPg,
    PgMysql,
    PgWorkers,
    PgOnline,
}

impl Scenario {
    const ALL: [Scenario; 9] = [
        Scenario::CsvParquet,
        Scenario::CsvRejects,
        Scenario::SqliteSqlite,
        Scenario::PgPg,
        Scenario::SqlitePg,
        Scenario::MysqlPg,
        Scenario::PgMysql,
        Scenario::PgWorkers,
        Scenario::PgOnline,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::CsvParquet => "csv_parquet",
            Scenario::CsvRejects => "csv_rejects",
            Scenario::SqliteSqlite => "sqlite_sqlite",
            Scenario::PgPg => "pg_pg",
            Scenario::SqlitePg => "sqlite_pg",
            Scenario::MysqlPg => "mysql_pg",
            Scenario::PgMysql => "pg_mysql",
            Scenario::PgWorkers => "pg_workers",
            Scenario::PgOnline => "pg_online",
        }
    }

    fn needs_postgres(self) -> bool {
        matches!(
            self,
            Scenario::PgPg
                | Scenario::SqlitePg
                | Scenario::MysqlPg
                | Scenario::PgMysql
                | Scenario::PgWorkers
                | Scenario::PgOnline
        )
    }
}

struct Config {
    sizes: Vec<u64>,
    scenarios: Vec<Scenario>,
    /// Whether `ROWSHIFT_BENCH_SCENARIOS` chose them: then a scenario that cannot run
    /// (no server) fails the bench instead of being skipped.
    chosen: bool,
    threads: usize,
    data_dir: PathBuf,
    pg_url: String,
    /// The MySQL/MariaDB server of `mysql_pg` and `pg_mysql`.
    my_url: String,
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not. A test run must not
    // start a minutes-long benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        println!("e2e: skipped outside `cargo bench` (run: cargo bench --bench e2e)");
        return;
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("e2e: {msg}");
            std::process::exit(2);
        }
    };
    match run_all(&config) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(msg) => {
            eprintln!("e2e: error: {msg}");
            std::process::exit(2);
        }
    }
}

impl Config {
    fn from_env() -> Result<Config, String> {
        let sizes = match std::env::var("ROWSHIFT_BENCH_ROWS") {
            Ok(v) if !v.trim().is_empty() => {
                let mut sizes = Vec::new();
                for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let n: u64 = part.replace('_', "").parse().map_err(|_| {
                        format!("ROWSHIFT_BENCH_ROWS: `{part}` is not a row count (e.g. 1000000,10000000)")
                    })?;
                    if n == 0 {
                        return Err("ROWSHIFT_BENCH_ROWS: row counts must be at least 1".into());
                    }
                    sizes.push(n);
                }
                sizes.sort_unstable();
                sizes.dedup();
                sizes
            }
            _ => vec![DEFAULT_ROWS],
        };
        let (scenarios, chosen) = match std::env::var("ROWSHIFT_BENCH_SCENARIOS") {
            Ok(v) if !v.trim().is_empty() => {
                let mut chosen = Vec::new();
                for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let s = Scenario::ALL
                        .into_iter()
                        .find(|s| s.name() == part)
                        .ok_or_else(|| {
                            format!(
                                "ROWSHIFT_BENCH_SCENARIOS: unknown scenario `{part}`; choose from {}",
                                Scenario::ALL.map(Scenario::name).join(", ")
                            )
                        })?;
                    chosen.push(s);
                }
                chosen.sort();
                chosen.dedup();
                (chosen, true)
            }
            _ => (Scenario::ALL.to_vec(), false),
        };
        let threads = match std::env::var("ROWSHIFT_BENCH_THREADS") {
            Ok(v) if !v.trim().is_empty() => match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(format!(
                        "ROWSHIFT_BENCH_THREADS: `{v}` is not a positive number"
                    ));
                }
            },
            _ => DEFAULT_THREADS,
        };
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(MANIFEST_DIR).join("target"));
        let target = if target.is_relative() {
            Path::new(MANIFEST_DIR).join(target)
        } else {
            target
        };
        let pg_url = std::env::var("ROWSHIFT_PG_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| PG_URL.to_string());
        let my_url = std::env::var("ROWSHIFT_MYSQL_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| MY_URL.to_string());
        Ok(Config {
            sizes,
            scenarios,
            chosen,
            threads,
            data_dir: target.join("bench-data"),
            pg_url,
            my_url,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Results

/// One measured process run, as a table row.
struct Measurement {
    label: String,
    rows: u64,
    wall: f64,
    /// rowshift: the summary's `seconds` (plan + run, in-process). DuckDB: the COPY only.
    inner: Option<f64>,
    peak_rss: Option<u64>,
    cpu: Option<f64>,
    written: Option<u64>,
    /// Share of the machine's CPU time used by *other* processes during the run (for
    /// the PostgreSQL scenarios, the server is not "other": its CPU is `server_cpu`).
    noise: Option<f64>,
    /// CPU seconds the PostgreSQL server spent during the run.
    server_cpu: Option<f64>,
    /// 1-minute load average just before the run.
    load: Option<f64>,
    /// rowshift rows/s ÷ the peer's rows/s, process wall time for both.
    ratio_wall: Option<f64>,
    /// rowshift rows/s from its in-process seconds ÷ the peer's from its own timing.
    ratio_inner: Option<f64>,
}

impl Measurement {
    fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.wall.max(1e-9)
    }
}

fn run_all(config: &Config) -> Result<bool, String> {
    fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", config.data_dir.display()))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("rowshift e2e benchmark");
    println!("  binary     {ROWSHIFT}");
    println!("  data       {}", config.data_dir.display());
    println!(
        "  sizes      {}",
        config
            .sizes
            .iter()
            .map(|n| fmt_int(*n))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  scenarios  {}",
        config
            .scenarios
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  threads    {} (rowshift [chunks] parallel, DuckDB PRAGMA threads); {cores} cores",
        config.threads
    );
    if let Some(load) = load_average() {
        println!("  load avg   {load:.2} (1 min)");
        if load > 0.5 {
            println!("  WARNING    the machine is busy; timings will be noisy");
        }
    }

    let mut results: Vec<Measurement> = Vec::new();
    let mut ok = true;
    let mut skipped: Vec<String> = Vec::new();
    let pg = if config.scenarios.iter().any(|s| s.needs_postgres()) {
        match Pg::connect(&config.pg_url) {
            Ok(pg) => {
                println!("  postgres   {} ({})", redact(&config.pg_url), pg.version);
                Ok(pg)
            }
            Err(e) => {
                println!("  postgres   NOT REACHABLE: {e}");
                Err(e)
            }
        }
    } else {
        Err(String::new())
    };
    println!();
    for &rows in &config.sizes {
        println!("== {} rows ==", fmt_int(rows));
        let data = ensure_csv(&config.data_dir, rows)?;
        for &scenario in &config.scenarios {
            let outcome = match (scenario, &pg) {
                (Scenario::CsvParquet, _) => bench_csv_parquet(config, &data),
                (Scenario::CsvRejects, _) => bench_csv_rejects(config, rows),
                (Scenario::SqliteSqlite, _) => bench_sqlite_sqlite(config, &data),
                (Scenario::PgPg, Ok(pg)) => bench_pg_pg(config, pg, &data),
                (Scenario::PgWorkers, Ok(pg)) => bench_pg_workers(config, pg, &data),
                (Scenario::PgOnline, Ok(pg)) => online::bench_pg_online(config, pg, &data),
                (Scenario::SqlitePg, Ok(pg)) => bench_sqlite_pg(config, pg, &data),
                (Scenario::MysqlPg | Scenario::PgMysql, Ok(pg)) => {
                    match My::connect(&config.my_url) {
                        Ok(my) if scenario == Scenario::MysqlPg => {
                            bench_mysql_pg(config, pg, &my, &data)
                        }
                        Ok(my) => bench_pg_mysql(config, pg, &my, &data),
                        Err(e) => {
                            let why = format!(
                                "{} SKIPPED: MySQL/MariaDB is not reachable at {} ({e}); set ROWSHIFT_MYSQL_URL",
                                scenario.name(),
                                redact(&config.my_url)
                            );
                            println!("  {why}");
                            if config.chosen {
                                ok = false;
                            }
                            skipped.push(why);
                            continue;
                        }
                    }
                }
                (_, Err(e)) => {
                    let why = format!(
                        "{} SKIPPED: PostgreSQL is not reachable at {} ({e}); set ROWSHIFT_PG_URL",
                        scenario.name(),
                        redact(&config.pg_url)
                    );
                    println!("  {why}");
                    if config.chosen {
                        ok = false;
                    }
                    skipped.push(why);
                    continue;
                }
            };
            match outcome {
                Ok((list, fine)) => {
                    ok &= fine;
                    results.extend(list);
                }
                Err(msg) => {
                    ok = false;
                    println!("  {} FAILED: {msg}", scenario.name());
                }
            }
        }
        println!();
    }

    print_table(&results);
    print_memory_growth(config, &results);
    for why in &skipped {
        println!("  {why}");
    }
    Ok(ok)
}

fn print_table(results: &[Measurement]) {
    println!("Results");
    let header = format!(
        "{:<24} {:>10} {:>8} {:>10} {:>9} {:>7} {:>8} {:>9} {:>10} {:>5} {:>5} {:>8} {:>9}",
        "scenario",
        "rows",
        "wall s",
        "rows/s",
        "peak MiB",
        "CPU s",
        "srv CPU",
        "in-proc s",
        "written",
        "load",
        "noise",
        "vs peer",
        "(in-proc)"
    );
    println!("{header}");
    println!("{}", "-".repeat(header.chars().count()));
    let opt = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
    for m in results {
        println!(
            "{:<24} {:>10} {:>8.2} {:>10} {:>9} {:>7} {:>8} {:>9} {:>10} {:>5} {:>5} {:>8} {:>9}",
            m.label,
            fmt_int(m.rows),
            m.wall,
            fmt_int(m.rows_per_second().round() as u64),
            opt(m.peak_rss.map(mib), 1),
            opt(m.cpu, 2),
            opt(m.server_cpu, 2),
            opt(m.inner, 2),
            m.written.map_or("-".to_string(), fmt_int),
            opt(m.load, 2),
            m.noise
                .map_or("-".to_string(), |n| format!("{:.0}%", n * 100.0)),
            opt(m.ratio_wall, 2),
            opt(m.ratio_inner, 2),
        );
    }
    println!();
    println!("  rows        input rows (the CSV's records); rows/s = rows ÷ wall s");
    println!("  wall s      wall clock around the whole child process (start, plan, run, exit);");
    println!("              `postgres INSERT..SELECT`: the statement on an open connection");
    println!("  peak MiB    peak resident memory of the process (rowshift: its summary's");
    println!("              peak_rss_bytes; DuckDB: the python process's max RSS from wait4;");
    println!("              pgloader: its max RSS from wait4). The server's memory is not counted");
    println!(
        "  CPU s       user + system CPU time of the process; CPU s ÷ wall s = cores kept busy"
    );
    println!("  srv CPU     CPU seconds of the PostgreSQL server processes during the run");
    println!("  in-proc s   rowshift: the summary's `seconds` (plan + run, no process start-up);");
    println!("              DuckDB: the COPY statement alone, as duckdb_peer.py times it");
    println!(
        "  written     rows in the output, counted from the output (count(*), Parquet footers)"
    );
    println!("  load        1-minute load average just before the run");
    println!(
        "  noise       CPU used by other processes (not the contender, not the server) during"
    );
    println!("              the run, share of all cores");
    println!(
        "  vs peer     rowshift rows/s ÷ the peer's rows/s (the line below rowshift's), WALL TIME"
    );
    println!(
        "              for both; targets: DuckDB >= {TARGET_RATIO:.2}, INSERT..SELECT >= {TARGET_PG_RATIO:.2}, pgloader >= {TARGET_PGLOADER_RATIO:.2}"
    );
    println!("  (in-proc)   the same ratio from rowshift's in-proc s and DuckDB's COPY seconds");
    println!();
}

fn print_memory_growth(config: &Config, results: &[Measurement]) {
    if config.sizes.len() < 2 {
        return;
    }
    let (small, large) = (config.sizes[0], *config.sizes.last().expect("two sizes"));
    println!(
        "Peak memory growth ({} rows vs {} rows; target <= {TARGET_MEMORY_GROWTH:.2} for rowshift)",
        fmt_int(large),
        fmt_int(small)
    );
    let mut labels: Vec<&str> = Vec::new();
    for m in results {
        if !labels.contains(&m.label.as_str()) {
            labels.push(&m.label);
        }
    }
    for label in labels {
        let peak = |rows: u64| {
            results
                .iter()
                .find(|m| m.label == label && m.rows == rows)
                .and_then(|m| m.peak_rss)
        };
        match (peak(small), peak(large)) {
            (Some(a), Some(b)) => {
                let ratio = b as f64 / a as f64;
                let is_rowshift = !is_peer(label);
                let verdict = if !is_rowshift {
                    "(peer, for reference)"
                } else if ratio <= TARGET_MEMORY_GROWTH {
                    "ok"
                } else {
                    "ABOVE TARGET"
                };
                println!(
                    "  {label:<22} {:>9.1} MiB -> {:>9.1} MiB   x{ratio:.2}  {verdict}",
                    mib(a),
                    mib(b)
                );
            }
            _ => println!("  {label:<22} -          (not measured at both sizes)"),
        }
    }
    println!();
}

// ---------------------------------------------------------------------------------------
// Scenarios

fn bench_csv_parquet(config: &Config, data: &Dataset) -> Result<(Vec<Measurement>, bool), String> {
    let dir = fresh_run_dir(&config.data_dir, &format!("csv_parquet_{}", data.rows))?;
    let out = dir.join("out_parquet");
    let pipeline = format!(
        "name = \"bench_csv_parquet\"\n\n[source]\nurl = {}\nkey = \"id\"\n\n[target]\nurl = {}\nformat = \"parquet\"\nif_exists = \"replace\"\n\n{TRANSFORMS}\n[chunks]\nrows = {CHUNK_ROWS}\nparallel = {}\n",
        toml_string(&data.csv.to_string_lossy()),
        toml_string(&out.to_string_lossy()),
        config.threads,
    );
    let file = dir.join("pipeline.toml");
    write_file(&file, &pipeline)?;
    warm_cache(&data.csv)?;

    let mut fine = true;
    let summary = run_rowshift(&file)?;
    let mut m = summary.measurement("csv_parquet", data.rows);
    fine &= summary.check("csv_parquet", data);
    let on_disk = parquet_rows(&out)?;
    if on_disk != summary.written {
        println!(
            "  !!! MISMATCH: csv_parquet summary says {} rows written, the part files hold {}",
            fmt_int(summary.written),
            fmt_int(on_disk)
        );
        fine = false;
    }
    m.written = Some(on_disk);
    report_line(&m);
    checkpoint_costs(&file, &summary, config.threads)?;
    verify_cost(&file, &pipeline, &summary)?;

    let mut list = Vec::new();
    match run_duckdb(config, data)? {
        Peer::Skipped(why) => {
            println!("  peer skipped: {why}");
            list.push(m);
        }
        Peer::Failed(why) => {
            println!("  peer FAILED: {why}");
            list.push(m);
        }
        Peer::Done(d) => {
            if d.written != Some(on_disk) {
                println!(
                    "  !!! MISMATCH !!! rows written differ: rowshift {} vs DuckDB {} (expected {} from the generator)",
                    fmt_int(on_disk),
                    d.written.map_or("?".into(), fmt_int),
                    fmt_int(data.kept)
                );
                println!(
                    "  !!! the ratio below compares jobs that did not produce the same output"
                );
                fine = false;
            }
            m.ratio_wall = Some(m.rows_per_second() / d.rows_per_second());
            if let (Some(r), Some(p)) = (m.inner, d.inner) {
                m.ratio_inner = Some((data.rows as f64 / r) / (data.rows as f64 / p));
            }
            report_line(&d);
            println!(
                "  rowshift vs DuckDB: x{:.2} by process wall time ({:.2}s vs {:.2}s), x{:.2} in-process ({:.2}s run vs {:.2}s COPY){}",
                m.ratio_wall.unwrap_or(f64::NAN),
                m.wall,
                d.wall,
                m.ratio_inner.unwrap_or(f64::NAN),
                m.inner.unwrap_or(f64::NAN),
                d.inner.unwrap_or(f64::NAN),
                if m.ratio_wall.unwrap_or(0.0) >= TARGET_RATIO {
                    ""
                } else {
                    "  (below target 1.00)"
                }
            );
            list.push(m);
            list.push(d);
        }
    }
    Ok((list, fine))
}

/// Target (`csv_rejects`): the run with 15% of rows rejected ÷ the run with none.
const TARGET_REJECTS_RATIO: f64 = 1.5;

/// A CSV `id,v` with `v` uniform in 0..100, into Parquet in one chunk (`parallel = 1`),
/// once with the check `max = 84` (15% of rows rejected, each located in the file for the
/// quarantine) and once with `max = 100` (none): locating rejected rows must not make a
/// chunk quadratic.
fn bench_csv_rejects(config: &Config, rows: u64) -> Result<(Vec<Measurement>, bool), String> {
    let dir = fresh_run_dir(&config.data_dir, &format!("csv_rejects_{rows}"))?;
    let csv = dir.join("values.csv");
    let mut text = String::with_capacity(rows as usize * 10 + 8);
    text.push_str("id,v\n");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut rejected = 0u64;
    for id in 1..=rows {
        let v = rng.below(100);
        rejected += u64::from(v > 84);
        let _ = writeln!(text, "{id},{v}");
    }
    write_file(&csv, &text)?;
    warm_cache(&csv)?;
    let mut fine = true;
    let mut list = Vec::new();
    let mut walls = Vec::new();
    for (label, max, expect_rejected) in
        [("csv_no_rejects", 100, 0), ("csv_rejects_15", 84, rejected)]
    {
        let out = dir.join(format!("out_{label}"));
        let pipeline = format!(
            "name = \"bench_{label}\"\n\n[source]\nurl = {}\nkey = \"id\"\n\n[target]\nurl = {}\nformat = \"parquet\"\nif_exists = \"replace\"\n\n[target.columns]\nid = {{ type = \"bigint\", expr = \"id\", primary_key = true }}\nv = {{ type = \"bigint\", expr = \"v\" }}\n\n[[checks]]\ncolumn = \"v\"\nmax = {max}\n\n[chunks]\nrows = {}\nparallel = 1\n",
            toml_string(&csv.to_string_lossy()),
            toml_string(&out.to_string_lossy()),
            rows.max(1),
        );
        let file = dir.join(format!("{label}.toml"));
        write_file(&file, &pipeline)?;
        let summary = run_rowshift(&file)?;
        if summary.read != rows
            || summary.rejected != expect_rejected
            || summary.written != rows - expect_rejected
        {
            println!(
                "  !!! {label}: read {}, written {}, rejected {}; expected {rows}, {}, {expect_rejected}",
                summary.read,
                summary.written,
                summary.rejected,
                rows - expect_rejected
            );
            fine = false;
        }
        let m = summary.measurement(label, rows);
        report_line(&m);
        walls.push(m.wall);
        list.push(m);
    }
    let ratio = walls[1] / walls[0].max(1e-9);
    println!(
        "  15% rejects vs none: x{ratio:.2} ({:.2}s vs {:.2}s){}",
        walls[1],
        walls[0],
        if ratio <= TARGET_REJECTS_RATIO {
            String::new()
        } else {
            format!("  (above target {TARGET_REJECTS_RATIO:.2})")
        }
    );
    fine &= ratio <= TARGET_REJECTS_RATIO;
    Ok((list, fine))
}

fn bench_sqlite_sqlite(
    config: &Config,
    data: &Dataset,
) -> Result<(Vec<Measurement>, bool), String> {
    let source = ensure_sqlite(config, data)?;
    let dir = fresh_run_dir(&config.data_dir, &format!("sqlite_sqlite_{}", data.rows))?;
    let out = dir.join("out.sqlite");
    let pipeline = format!(
        "name = \"bench_sqlite_sqlite\"\n\n[source]\nurl = {}\ntable = \"users\"\nkey = \"id\"\n\n[target]\nurl = {}\ntable = \"users_v2\"\nif_exists = \"replace\"\n\n{TRANSFORMS}\n[chunks]\nrows = {CHUNK_ROWS}\nparallel = {}\n",
        toml_string(&format!("sqlite://{}", source.display())),
        toml_string(&format!("sqlite://{}", out.display())),
        config.threads,
    );
    let file = dir.join("pipeline.toml");
    write_file(&file, &pipeline)?;
    warm_cache(&source)?;

    let summary = run_rowshift(&file)?;
    let mut m = summary.measurement("sqlite_sqlite", data.rows);
    let mut fine = summary.check("sqlite_sqlite", data);
    let in_table = sqlite_count(&out, "users_v2")?;
    if in_table != summary.written {
        println!(
            "  !!! MISMATCH: sqlite_sqlite summary says {} rows written, users_v2 holds {}",
            fmt_int(summary.written),
            fmt_int(in_table)
        );
        fine = false;
    }
    m.written = Some(in_table);
    report_line(&m);
    verify_cost(&file, &pipeline, &summary)?;
    Ok((vec![m], fine))
}

/// The `pg_pg` job done by three processes sharing one run (`rowshift run --worker`,
/// `parallel = 1` each) against one process with `parallel = 3`: what coordinating
/// through the target's checkpoint tables costs. Runs alternate, as many pairs as
/// `ROWSHIFT_BENCH_READBACK_PAIRS`, and the medians are compared; both targets must hold
/// the same rows.
fn bench_pg_workers(
    config: &Config,
    pg: &Pg,
    data: &Dataset,
) -> Result<(Vec<Measurement>, bool), String> {
    let source = ensure_pg_source(pg, data)?;
    let dir = fresh_run_dir(&config.data_dir, &format!("pg_workers_{}", data.rows))?;
    let pipeline = |name: &str, schema: &str, parallel: usize| {
        format!(
            "name = \"{name}\"\n\n[source]\nurl = {url}\nschema = {}\ntable = {}\nkey = \"id\"\n\n[target]\nurl = {url}\nschema = {}\ntable = \"users_v2\"\n\n{TRANSFORMS}\n[chunks]\nrows = {CHUNK_ROWS}\nparallel = {parallel}\n",
            toml_string(PG_SOURCE_SCHEMA),
            toml_string(&source),
            toml_string(schema),
            url = toml_string(&config.pg_url),
        )
    };
    let one = dir.join("one.toml");
    write_file(&one, &pipeline("bench_workers_one", PG_ONE_SCHEMA, 3))?;
    let shared = dir.join("shared.toml");
    write_file(
        &shared,
        &pipeline("bench_workers_shared", PG_SHARED_SCHEMA, 1),
    )?;
    let src = format!("{}.{}", quote(PG_SOURCE_SCHEMA), quote(&source));
    pg.warm(&src)?;

    let run_one = || -> Result<(f64, RunSummary), String> {
        pg.fresh_schema(PG_ONE_SCHEMA)?;
        pg.checkpoint();
        let s = run_rowshift_on(&one, true)?;
        Ok((s.run.wall.as_secs_f64(), s))
    };
    // Three processes started together; the time is from the start to the last exit.
    let run_shared = || -> Result<(f64, Vec<serde_json::Value>), String> {
        pg.fresh_schema(PG_SHARED_SCHEMA)?;
        pg.checkpoint();
        let t0 = Instant::now();
        let children: Vec<Child> = (0..3)
            .map(|_| {
                Command::new(ROWSHIFT)
                    .arg("run")
                    .arg(&shared)
                    .args(["--worker", "--json", "--quiet"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| format!("cannot start {ROWSHIFT}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        let mut summaries = Vec::new();
        for child in children {
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!(
                    "a worker exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            summaries.push(
                serde_json::from_slice(&out.stdout)
                    .map_err(|e| format!("a worker printed no JSON summary: {e}"))?,
            );
        }
        Ok((t0.elapsed().as_secs_f64(), summaries))
    };
    let (mut ones, mut shareds) = (Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..readback_pairs() {
        let (wall, summary) = run_one()?;
        ones.push(wall);
        let (wall, workers) = run_shared()?;
        shareds.push(wall);
        last = Some((summary, workers));
    }
    let (summary, workers) = last.expect("at least one pair");
    let mut fine = summary.check("pg_workers (one process)", data);
    let (rows_one, sum_one) = pg.checksum(
        &format!("{}.{}", quote(PG_ONE_SCHEMA), quote("users_v2")),
        PG_PG_ROW,
    )?;
    let (rows_shared, sum_shared) = pg.checksum(
        &format!("{}.{}", quote(PG_SHARED_SCHEMA), quote("users_v2")),
        PG_PG_ROW,
    )?;
    if rows_one != data.kept || rows_shared != rows_one || sum_shared != sum_one {
        println!(
            "  !!! MISMATCH: one process wrote {} rows (checksum {sum_one}), three workers {} (checksum {sum_shared}), expected {}",
            fmt_int(rows_one),
            fmt_int(rows_shared),
            fmt_int(data.kept)
        );
        fine = false;
    } else {
        println!(
            "  output: one process and three workers wrote the same {} rows (checksum {sum_one})",
            fmt_int(rows_one)
        );
    }
    let chunks: Vec<u64> = workers
        .iter()
        .map(|w| w["chunks_done"].as_u64().unwrap_or(0))
        .collect();
    let bookkeeping: f64 = workers
        .iter()
        .map(|w| w["checkpoint_seconds"].as_f64().unwrap_or(0.0))
        .sum();
    let done: u64 = chunks.iter().sum();
    println!(
        "  workers' chunks {chunks:?} of {done}; claims, heartbeats and marks {bookkeeping:.3}s in all, {:.1} ms a chunk",
        1000.0 * bookkeeping / done.max(1) as f64
    );
    let shown = |v: &[f64]| {
        v.iter()
            .map(|t| format!("{t:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "  one process, parallel = 3: {}  |  three workers: {}",
        shown(&ones),
        shown(&shareds)
    );
    let (one_wall, shared_wall) = (median(&mut ones), median(&mut shareds));
    let ratio = one_wall / shared_wall;
    println!(
        "  medians of {} runs each: one process {one_wall:.2}s ({:.0} rows/s), three workers {shared_wall:.2}s ({:.0} rows/s) = x{ratio:.2}  (target >= {TARGET_WORKERS_RATIO:.2}: {})",
        ones.len(),
        data.rows as f64 / one_wall,
        data.rows as f64 / shared_wall,
        if ratio >= TARGET_WORKERS_RATIO {
            "met"
        } else {
            "NOT MET"
        }
    );
    let mut m = summary.measurement("one process, parallel 3", data.rows);
    m.wall = one_wall;
    report_line(&m);
    let w = Measurement {
        label: "three workers".into(),
        rows: data.rows,
        wall: shared_wall,
        inner: None,
        peak_rss: None,
        cpu: None,
        written: Some(rows_shared),
        noise: None,
        server_cpu: None,
        load: None,
        ratio_wall: Some(ratio),
        ratio_inner: None,
    };
    report_line(&w);
    Ok((vec![m, w], fine))
}

/// PostgreSQL -> PostgreSQL with the five transforms and the filter, source and target in
/// two schemas of one server, against the server running the same job itself:
/// `INSERT INTO <peer>.users_v2 SELECT <the same expressions> FROM <source> WHERE ...`.
fn bench_pg_pg(
    config: &Config,
    pg: &Pg,
    data: &Dataset,
) -> Result<(Vec<Measurement>, bool), String> {
    let source = ensure_pg_source(pg, data)?;
    let dir = fresh_run_dir(&config.data_dir, &format!("pg_pg_{}", data.rows))?;
    let pipeline = format!(
        "name = \"bench_pg_pg\"\n\n[source]\nurl = {url}\nschema = {}\ntable = {}\nkey = \"id\"\n\n[target]\nurl = {url}\nschema = {}\ntable = \"users_v2\"\nif_exists = \"replace\"\n\n{TRANSFORMS}\n[chunks]\nrows = {CHUNK_ROWS}\nparallel = {}\n",
        toml_string(PG_SOURCE_SCHEMA),
        toml_string(&source),
        toml_string(PG_PG_SCHEMA),
        config.threads,
        url = toml_string(&config.pg_url),
    );
    let file = dir.join("pipeline.toml");
    write_file(&file, &pipeline)?;
    let src = format!("{}.{}", quote(PG_SOURCE_SCHEMA), quote(&source));
    pg.warm(&src)?;

    pg.fresh_schema(PG_PG_SCHEMA)?;
    pg.checkpoint();
    let summary = run_rowshift_on(&file, true)?;
    let mut m = summary.measurement("pg_pg", data.rows);
    let mut fine = summary.check("pg_pg", data);
    let target = format!("{}.{}", quote(PG_PG_SCHEMA), quote("users_v2"));
    let (in_table, sum) = pg.checksum(&target, PG_PG_ROW)?;
    if in_table != summary.written || in_table != data.kept {
        println!(
            "  !!! MISMATCH: pg_pg summary says {} rows written, users_v2 holds {}, expected {}",
            fmt_int(summary.written),
            fmt_int(in_table),
            fmt_int(data.kept)
        );
        fine = false;
    }
    m.written = Some(in_table);
    report_line(&m);
    let ours = verify_cost_with(&file, &pipeline, &summary, Target::Pg(pg, PG_PG_SCHEMA))?;

    // The peer: the same job as one statement on an open connection, as many times as
    // rowshift ran with read-back on.
    let peer_table = format!("{}.{}", quote(PG_PEER_SCHEMA), quote("users_v2"));
    let sql = format!(
        "INSERT INTO {peer_table} (id, email, first_name, last_name, signup_on) SELECT {PG_PEER_SELECT} FROM {src} WHERE deleted_at IS NULL"
    );
    let peer_run = || -> Result<(Measured, u64), String> {
        pg.fresh_schema(PG_PEER_SCHEMA)?;
        pg.exec(&format!("CREATE TABLE {peer_table} {PG_PEER_TABLE}"))?;
        pg.checkpoint();
        pg.timed(&sql)
    };
    let mut walls = Vec::new();
    for _ in 1..readback_pairs() {
        walls.push(peer_run()?.0.wall.as_secs_f64());
    }
    let (run, inserted) = peer_run()?;
    walls.push(run.wall.as_secs_f64());
    let (peer_rows, peer_sum) = pg.checksum(&peer_table, PG_PG_ROW)?;
    let mut d = Measurement {
        label: "postgres INSERT..SELECT".into(),
        rows: data.rows,
        wall: run.wall.as_secs_f64(),
        inner: None,
        peak_rss: None,
        cpu: None,
        written: Some(peer_rows),
        noise: run.noise,
        server_cpu: run.server_cpu,
        load: run.load,
        ratio_wall: None,
        ratio_inner: None,
    };
    if inserted != peer_rows || peer_rows != in_table || peer_sum != sum {
        println!(
            "  !!! MISMATCH !!! INSERT..SELECT inserted {} rows ({} in its table, checksum {peer_sum}); rowshift wrote {} (checksum {sum})",
            fmt_int(inserted),
            fmt_int(peer_rows),
            fmt_int(in_table)
        );
        println!("  !!! the ratio below compares jobs that did not produce the same output");
        fine = false;
    } else {
        println!(
            "  output: rowshift's users_v2 and the INSERT..SELECT's hold the same {} rows (checksum {sum})",
            fmt_int(in_table)
        );
    }
    m.ratio_wall = Some(m.rows_per_second() / d.rows_per_second());
    d.written = Some(peer_rows);
    report_line(&d);
    let ratio = m.ratio_wall.unwrap_or(f64::NAN);
    println!(
        "  rowshift vs INSERT..SELECT: x{ratio:.2} by wall time ({:.2}s process vs {:.2}s statement){}",
        m.wall,
        d.wall,
        if ratio >= TARGET_PG_RATIO {
            format!("  (target >= {TARGET_PG_RATIO:.2}: met)")
        } else {
            format!("  (target >= {TARGET_PG_RATIO:.2}: NOT MET)")
        }
    );
    median_ratio("INSERT..SELECT", ours, &mut walls, TARGET_PG_RATIO);
    Ok((vec![m, d], fine))
}

/// MySQL -> PostgreSQL with the five transforms and the filter. No peer: it reports
/// rows/s and where the time goes (rowshift's CPU against the servers').
fn bench_mysql_pg(
    config: &Config,
    pg: &Pg,
    my: &My,
    data: &Dataset,
) -> Result<(Vec<Measurement>, bool), String> {
    let source = ensure_my_source(config, my, data)?;
    let dir = fresh_run_dir(&config.data_dir, &format!("mysql_pg_{}", data.rows))?;
    let pipeline = format!(
        "name = \"bench_mysql_pg\"\n\n[source]\nurl = {}\nschema = {}\ntable = {}\nkey = \"id\"\n\n[target]\nurl = {}\nschema = {}\ntable = \"users_v2\"\nif_exists = \"replace\"\n\n{TRANSFORMS}\n[chunks]\nrows = {CHUNK_ROWS}\nparallel = {}\n",
        toml_string(&config.my_url),
        toml_string(MY_SOURCE_DB),
        toml_string(&source),
        toml_string(&config.pg_url),
        toml_string(MYSQL_PG_SCHEMA),
        config.threads,
    );
    let file = dir.join("pipeline.toml");
    write_file(&file, &pipeline)?;
    pg.fresh_schema(MYSQL_PG_SCHEMA)?;
    pg.checkpoint();
    let summary = run_rowshift_on(&file, true)?;
    let mut m = summary.measurement("mysql_pg", data.rows);
    let mut fine = summary.check("mysql_pg", data);
    let target = format!("{}.{}", quote(MYSQL_PG_SCHEMA), quote("users_v2"));
    let (in_table, sum) = pg.checksum(&target, PG_PG_ROW)?;
    if in_table != summary.written || in_table != data.kept {
        println!(
            "  !!! MISMATCH: mysql_pg summary says {} rows written, users_v2 holds {}, expected {}",
            fmt_int(summary.written),
            fmt_int(in_table),
            fmt_int(data.kept)
        );
        fine = false;
    }
    m.written = Some(in_table);
    report_line(&m);
    println!("  output: {} rows (checksum {sum})", fmt_int(in_table));
    where_time_goes(&summary);
    verify_cost_with(&file, &pipeline, &summary, Target::Pg(pg, MYSQL_PG_SCHEMA))?;
    Ok((vec![m], fine))
}

/// PostgreSQL -> MySQL with the five transforms and the filter; like `mysql_pg`, no peer.
fn bench_pg_mysql(
    config: &Config,
    pg: &Pg,
    my: &My,
    data: &Dataset,
) -> Result<(Vec<Measurement>, bool), String> {
    let source = ensure_pg_source(pg, data)?;
    let dir = fresh_run_dir(&config.data_dir, &format!("pg_mysql_{}", data.rows))?;
    let pipeline = format!(
        "name = \"bench_pg_mysql\"\n\n[source]\nurl = {}\nschema = {}\ntable = {}\nkey = \"id\"\n\n[target]\nurl = {}\nschema = {}\ntable = \"users_v2\"\nif_exists = \"replace\"\n\n{TRANSFORMS}\n[chunks]\nrows = {CHUNK_ROWS}\nparallel = {}\n",
        toml_string(&config.pg_url),
        toml_string(PG_SOURCE_SCHEMA),
        toml_string(&source),
        toml_string(&config.my_url),
        toml_string(PG_MYSQL_DB),
        config.threads,
    );
    let file = dir.join("pipeline.toml");
    write_file(&file, &pipeline)?;
    my.exec(&format!(
        "DROP DATABASE IF EXISTS {}",
        my_quote(PG_MYSQL_DB)
    ))?;
    servers_settle();
    let summary = run_rowshift_on(&file, true)?;
    let mut m = summary.measurement("pg_mysql", data.rows);
    let mut fine = summary.check("pg_mysql", data);
    let in_table = my.count(&format!(
        "{}.{}",
        my_quote(PG_MYSQL_DB),
        my_quote("users_v2")
    ))?;
    if in_table != summary.written || in_table != data.kept {
        println!(
            "  !!! MISMATCH: pg_mysql summary says {} rows written, users_v2 holds {}, expected {}",
            fmt_int(summary.written),
            fmt_int(in_table),
            fmt_int(data.kept)
        );
        fine = false;
    }
    m.written = Some(in_table);
    report_line(&m);
    where_time_goes(&summary);
    verify_cost_with(&file, &pipeline, &summary, Target::My(my, PG_MYSQL_DB))?;
    my.exec(&format!(
        "DROP DATABASE IF EXISTS {}",
        my_quote(PG_MYSQL_DB)
    ))?;
    Ok((vec![m], fine))
}

/// Prints how a run's CPU splits between rowshift and the database servers.
fn where_time_goes(summary: &RunSummary) {
    let run = &summary.run;
    let own = run.usage.as_ref().map(|u| u.cpu.as_secs_f64());
    if let (Some(own), Some(server)) = (own, run.server_cpu) {
        println!(
            "  where the time goes: {:.2}s wall; rowshift {:.2}s CPU ({:.2}s of it reading back), database servers {:.2}s CPU ({:.0}% of all CPU)",
            run.wall.as_secs_f64(),
            own,
            summary.verify_seconds,
            server,
            100.0 * server / (server + own).max(1e-9)
        );
    }
}

/// Builds `rowshift_bench_src.users_<rows>` in MySQL from the SQLite copy with rowshift
/// itself unless the table already holds this dataset (its comment says so); returns the
/// table's name. Setup: not measured.
fn ensure_my_source(config: &Config, my: &My, data: &Dataset) -> Result<String, String> {
    let table = format!("users_{}", data.rows);
    let want = format!(
        "rowshift bench: generator={GENERATOR_VERSION} rows={} csv_bytes={}",
        data.rows, data.bytes
    );
    let have = my.text(&format!(
        "SELECT CAST(TABLE_COMMENT AS CHAR) FROM information_schema.tables WHERE TABLE_SCHEMA = '{MY_SOURCE_DB}' AND TABLE_NAME = '{table}'"
    ))?;
    if have.as_deref() == Some(want.as_str()) {
        println!("  data: reusing MySQL table {MY_SOURCE_DB}.{table}");
        return Ok(table);
    }
    let sqlite = ensure_sqlite(config, data)?;
    let dir = fresh_run_dir(&config.data_dir, &format!("setup_mysql_{}", data.rows))?;
    let file = dir.join("pipeline.toml");
    write_file(
        &file,
        &format!(
            "name = \"setup_mysql\"\n\n[source]\nurl = {}\ntable = \"users\"\nkey = \"id\"\n\n[target]\nurl = {}\nschema = {}\ntable = {}\nif_exists = \"replace\"\n\n{MY_SOURCE}\n[chunks]\nrows = {CHUNK_ROWS}\nparallel = {}\n",
            toml_string(&format!("sqlite://{}", sqlite.display())),
            toml_string(&config.my_url),
            toml_string(MY_SOURCE_DB),
            toml_string(&table),
            config.threads,
        ),
    )?;
    let t0 = Instant::now();
    let summary = run_rowshift(&file)?;
    if summary.written != data.rows {
        return Err(format!(
            "building the MySQL source wrote {} rows, the CSV has {}",
            summary.written, data.rows
        ));
    }
    my.exec(&format!(
        "ALTER TABLE {}.{} COMMENT = '{want}'",
        my_quote(MY_SOURCE_DB),
        my_quote(&table)
    ))?;
    println!(
        "  data: built MySQL table {MY_SOURCE_DB}.{table} with rowshift in {:.1}s (setup, not measured)",
        t0.elapsed().as_secs_f64()
    );
    Ok(table)
}

/// A connection to the benchmark's MySQL/MariaDB server (setup and checks).
struct My {
    rt: tokio::runtime::Runtime,
    pool: sqlx::MySqlPool,
}

impl My {
    fn connect(url: &str) -> Result<My, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let pool = rt
            .block_on(
                sqlx::mysql::MySqlPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url),
            )
            .map_err(|e| e.to_string())?;
        Ok(My { rt, pool })
    }

    fn exec(&self, sql: &str) -> Result<(), String> {
        self.rt
            .block_on(sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&self.pool))
            .map(|_| ())
            .map_err(|e| format!("{sql}: {e}"))
    }

    /// The first column of the first row (if any), as text.
    fn text(&self, sql: &str) -> Result<Option<String>, String> {
        self.rt
            .block_on(
                sqlx::query_scalar::<_, Option<String>>(sqlx::AssertSqlSafe(sql.to_string()))
                    .fetch_optional(&self.pool),
            )
            .map(Option::flatten)
            .map_err(|e| format!("{sql}: {e}"))
    }

    fn count(&self, table: &str) -> Result<u64, String> {
        let n = self.text(&format!("SELECT CAST(count(*) AS CHAR) FROM {table}"))?;
        n.and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("count(*) of {table} is not a number"))
    }
}

/// Quotes a MySQL identifier.
fn my_quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// SQLite -> PostgreSQL, the SQLite `users` table as it is (identity columns, every
/// row), against pgloader moving the same table into a schema of its own.
fn bench_sqlite_pg(
    config: &Config,
    pg: &Pg,
    data: &Dataset,
) -> Result<(Vec<Measurement>, bool), String> {
    let source = ensure_sqlite(config, data)?;
    let dir = fresh_run_dir(&config.data_dir, &format!("sqlite_pg_{}", data.rows))?;
    let pipeline = format!(
        "name = \"bench_sqlite_pg\"\n\n[source]\nurl = {}\ntable = \"users\"\nkey = \"id\"\n\n[target]\nurl = {}\nschema = {}\ntable = \"users\"\nif_exists = \"replace\"\n\n{IDENTITY}\n[chunks]\nrows = {CHUNK_ROWS}\nparallel = {}\n",
        toml_string(&format!("sqlite://{}", source.display())),
        toml_string(&config.pg_url),
        toml_string(SQLITE_PG_SCHEMA),
        config.threads,
    );
    let file = dir.join("pipeline.toml");
    write_file(&file, &pipeline)?;
    warm_cache(&source)?;

    pg.fresh_schema(SQLITE_PG_SCHEMA)?;
    pg.checkpoint();
    let summary = run_rowshift_on(&file, true)?;
    let mut m = summary.measurement("sqlite_pg", data.rows);
    let mut fine = summary.check_counts("sqlite_pg", data.rows, data.rows);
    let target = format!("{}.{}", quote(SQLITE_PG_SCHEMA), quote("users"));
    let (in_table, sum) = pg.checksum(&target, SQLITE_PG_ROW)?;
    if in_table != summary.written || in_table != data.rows {
        println!(
            "  !!! MISMATCH: sqlite_pg summary says {} rows written, the table holds {}, expected {}",
            fmt_int(summary.written),
            fmt_int(in_table),
            fmt_int(data.rows)
        );
        fine = false;
    }
    m.written = Some(in_table);
    report_line(&m);
    let ours = verify_cost_with(&file, &pipeline, &summary, Target::Pg(pg, SQLITE_PG_SCHEMA))?;

    let mut list = Vec::new();
    // pgloader as many times as rowshift ran with read-back on; the last run is checked.
    let mut walls = Vec::new();
    for _ in 1..readback_pairs() {
        if let Peer::Done(d) = run_pgloader(config, pg, &source, data)? {
            walls.push(d.wall);
        }
    }
    match run_pgloader(config, pg, &source, data)? {
        Peer::Skipped(why) => {
            println!("  peer skipped: {why}");
            list.push(m);
        }
        Peer::Failed(why) => {
            println!("  peer FAILED: {why}");
            fine = false;
            list.push(m);
        }
        Peer::Done(d) => {
            let peer_table = format!("{}.{}", quote(PGLOADER_SCHEMA), quote("users"));
            let (peer_rows, peer_sum) = pg.checksum(&peer_table, SQLITE_PG_ROW)?;
            let rounded = peer_rows == in_table
                && peer_sum != sum
                && pg.checksum(&peer_table, SQLITE_PG_ROW_F4)?
                    == pg.checksum(&target, SQLITE_PG_ROW_F4)?;
            if rounded {
                println!(
                    "  output: the same {} rows, but pgloader wrote `score` through a 32-bit float (e.g. 551.19 as 551.1900024414062); with score rounded to float4 both checksums match. Not counted as a mismatch: the difference is pgloader's",
                    fmt_int(in_table)
                );
            } else if peer_rows != in_table || peer_sum != sum {
                println!(
                    "  !!! MISMATCH !!! pgloader's table holds {} rows (checksum {peer_sum}), rowshift's {} (checksum {sum})",
                    fmt_int(peer_rows),
                    fmt_int(in_table)
                );
                println!(
                    "  !!! the ratio below compares jobs that did not produce the same output"
                );
                fine = false;
            } else {
                println!(
                    "  output: rowshift's and pgloader's tables hold the same {} rows (checksum {sum})",
                    fmt_int(in_table)
                );
            }
            m.ratio_wall = Some(m.rows_per_second() / d.rows_per_second());
            report_line(&d);
            let ratio = m.ratio_wall.unwrap_or(f64::NAN);
            println!(
                "  rowshift vs pgloader: x{ratio:.2} by process wall time ({:.2}s vs {:.2}s){}",
                m.wall,
                d.wall,
                if ratio >= TARGET_PGLOADER_RATIO {
                    format!("  (target >= {TARGET_PGLOADER_RATIO:.2}: met)")
                } else {
                    format!("  (target >= {TARGET_PGLOADER_RATIO:.2}: NOT MET)")
                }
            );
            if let (Some(a), Some(b)) = (m.peak_rss, d.peak_rss) {
                let share = a as f64 / b as f64;
                println!(
                    "  peak memory: rowshift {:.1} MiB vs pgloader {:.1} MiB = {share:.2}{}",
                    mib(a),
                    mib(b),
                    if share < TARGET_PGLOADER_MEMORY {
                        format!("  (target < {TARGET_PGLOADER_MEMORY:.2}: met)")
                    } else {
                        format!("  (target < {TARGET_PGLOADER_MEMORY:.2}: NOT MET)")
                    }
                );
            }
            walls.push(d.wall);
            median_ratio("pgloader", ours, &mut walls, TARGET_PGLOADER_RATIO);
            list.push(m);
            list.push(d);
        }
    }
    Ok((list, fine))
}

/// pgloader loading table `users` of the SQLite file into a fresh schema, with a command
/// file (`include drop, create tables, create indexes, reset sequences`, its defaults).
fn run_pgloader(config: &Config, pg: &Pg, sqlite: &Path, data: &Dataset) -> Result<Peer, String> {
    let dir = fresh_run_dir(&config.data_dir, &format!("pgloader_{}", data.rows))?;
    let load = dir.join("users.load");
    write_file(
        &load,
        &format!(
            "LOAD DATABASE\n     FROM sqlite://{}\n     INTO {}\n\n WITH include drop, create tables, create indexes, reset sequences\n\n  SET search_path TO '{PGLOADER_SCHEMA}'\n\n INCLUDING ONLY TABLE NAMES LIKE 'users';\n",
            sqlite.display(),
            config.pg_url
        ),
    )?;
    pg.fresh_schema(PGLOADER_SCHEMA)?;
    warm_cache(sqlite)?;
    pg.checkpoint();
    let mut cmd = Command::new("pgloader");
    cmd.arg("--root-dir").arg(dir.join("pgloader")).arg(&load);
    let run = match run_measured_with_server(&mut cmd) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Peer::Skipped(
                "pgloader is not installed (apt-get install pgloader)".into(),
            ));
        }
        Err(e) => return Ok(Peer::Skipped(format!("cannot run pgloader ({e})"))),
    };
    write_file(
        &dir.join("pgloader.out"),
        &format!("{}\n{}", run.stdout, run.stderr),
    )?;
    if !run.status.success() {
        return Ok(Peer::Failed(format!(
            "pgloader exited with {}: {}",
            run.status,
            run.stderr.trim()
        )));
    }
    let written = pg.count(&format!("{}.{}", quote(PGLOADER_SCHEMA), quote("users")));
    let written = match written {
        Ok(n) => n,
        Err(e) => {
            return Ok(Peer::Failed(format!(
                "pgloader exited with {} but its table cannot be counted ({e}); output in {}",
                run.status,
                dir.join("pgloader.out").display()
            )));
        }
    };
    Ok(Peer::Done(Measurement {
        label: "pgloader".into(),
        rows: data.rows,
        wall: run.wall.as_secs_f64(),
        inner: None,
        peak_rss: run.usage.map(|u| u.max_rss),
        cpu: run.usage.map(|u| u.cpu.as_secs_f64()),
        written: Some(written),
        noise: run.noise,
        server_cpu: run.server_cpu,
        load: run.load,
        ratio_wall: None,
        ratio_inner: None,
    }))
}

/// Builds `rowshift_bench_src.users_<rows>` from the CSV with `COPY` unless the table
/// already holds this dataset (its comment says so); returns the table's name. Setup: not
/// measured. `created_at` and `deleted_at` are `timestamp`, `score` `double precision`,
/// the rest `text`; empty CSV fields are NULL.
fn ensure_pg_source(pg: &Pg, data: &Dataset) -> Result<String, String> {
    let table = format!("users_{}", data.rows);
    let t = format!("{}.{}", quote(PG_SOURCE_SCHEMA), quote(&table));
    let want = format!(
        "rowshift bench: generator={GENERATOR_VERSION} rows={} csv_bytes={}",
        data.rows, data.bytes
    );
    let have = pg.text(&format!(
        "SELECT obj_description(to_regclass({}), 'pg_class')",
        pg_literal(&t)
    ))?;
    if have.as_deref() == Some(want.as_str()) {
        println!("  data: reusing PostgreSQL table {t}");
        return Ok(table);
    }
    let t0 = Instant::now();
    pg.exec(&format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        quote(PG_SOURCE_SCHEMA)
    ))?;
    pg.exec(&format!("DROP TABLE IF EXISTS {t}"))?;
    pg.exec(&format!(
        "CREATE TABLE {t} (id bigint PRIMARY KEY, full_name text, email text, created_at timestamp, deleted_at timestamp, country text, score double precision, note text)"
    ))?;
    let copied = pg.copy_csv(&t, &data.csv)?;
    if copied != data.rows {
        return Err(format!(
            "COPY into {t} loaded {copied} rows, the CSV has {}",
            data.rows
        ));
    }
    pg.exec(&format!("VACUUM (FREEZE, ANALYZE) {t}"))?;
    pg.exec(&format!("COMMENT ON TABLE {t} IS {}", pg_literal(&want)))?;
    println!(
        "  data: built PostgreSQL table {t} with COPY in {:.1}s (setup, not measured)",
        t0.elapsed().as_secs_f64()
    );
    Ok(table)
}

/// A connection to the benchmark's PostgreSQL server (setup, checks, the peer statement).
struct Pg {
    rt: tokio::runtime::Runtime,
    pool: sqlx::PgPool,
    version: String,
}

impl Pg {
    fn connect(url: &str) -> Result<Pg, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let pool = rt
            .block_on(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url),
            )
            .map_err(|e| e.to_string())?;
        let mut pg = Pg {
            rt,
            pool,
            version: String::new(),
        };
        pg.version = pg.text("SHOW server_version")?.unwrap_or_default();
        Ok(pg)
    }

    /// Runs `sql` (one or more statements); returns the rows affected.
    fn exec(&self, sql: &str) -> Result<u64, String> {
        self.rt
            .block_on(sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&self.pool))
            .map(|r| r.rows_affected())
            .map_err(|e| format!("{sql}: {e}"))
    }

    /// The first column of the first row, as text.
    fn text(&self, sql: &str) -> Result<Option<String>, String> {
        self.rt
            .block_on(
                sqlx::query_scalar::<_, Option<String>>(sqlx::AssertSqlSafe(sql.to_string()))
                    .fetch_one(&self.pool),
            )
            .map_err(|e| format!("{sql}: {e}"))
    }

    fn count(&self, table: &str) -> Result<u64, String> {
        let n = self.text(&format!("SELECT count(*)::text FROM {table}"))?;
        n.and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("count(*) of {table} is not a number"))
    }

    /// Row count and an order-independent checksum of `table`: the sum of a 64-bit hash
    /// of each row's text, the row being `row` (a list of column expressions).
    fn checksum(&self, table: &str, row: &str) -> Result<(u64, String), String> {
        let sql = format!(
            "SELECT count(*)::text || ' ' || coalesce(sum(hashtextextended(ROW({row})::text, 0)), 0)::text FROM {table}"
        );
        let v = self.text(&sql)?.unwrap_or_default();
        let (n, sum) = v.split_once(' ').unwrap_or((v.as_str(), ""));
        Ok((
            n.parse()
                .map_err(|_| format!("{sql}: unexpected result `{v}`"))?,
            sum.to_string(),
        ))
    }

    /// Drops `schema` with all it holds, and creates it empty.
    fn fresh_schema(&self, schema: &str) -> Result<(), String> {
        self.exec(&format!(
            "DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0}",
            quote(schema)
        ))
        .map(|_| ())
    }

    /// Quiets the server before a timed run, so it does not pay for an earlier one's
    /// work: vacuums and analyzes every table of the bench's schemas (else autovacuum
    /// would start on a table just loaded, in the middle of the next run, and its CPU
    /// would count as the server's), waits up to 30 s for autovacuum workers to finish,
    /// then writes dirty buffers out with `CHECKPOINT` (superuser or `pg_checkpoint`;
    /// without the right, that step is skipped).
    fn checkpoint(&self) {
        let tables = self
            .text(
                "SELECT string_agg(quote_ident(schemaname) || '.' || quote_ident(relname), ', ') \
                 FROM pg_stat_user_tables WHERE schemaname LIKE 'rowshift\\_bench\\_%'",
            )
            .ok()
            .flatten();
        if let Some(tables) = tables {
            let _ = self.exec(&format!("VACUUM (ANALYZE) {tables}"));
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            let busy = self
                .text(
                    "SELECT count(*)::text FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'",
                )
                .ok()
                .flatten();
            if busy.as_deref() == Some("0") {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.exec("CHECKPOINT");
    }

    /// Reads `table` once so every contender starts with it in shared buffers / the page
    /// cache.
    fn warm(&self, table: &str) -> Result<(), String> {
        self.text(&format!("SELECT count(*)::text FROM {table}"))
            .map(|_| ())
    }

    /// `COPY table FROM STDIN (FORMAT csv, HEADER)` with the file's bytes.
    fn copy_csv(&self, table: &str, csv: &Path) -> Result<u64, String> {
        let mut file = File::open(csv).map_err(|e| format!("{}: {e}", csv.display()))?;
        self.rt.block_on(async {
            let mut conn = self.pool.acquire().await.map_err(|e| e.to_string())?;
            let sql = format!("COPY {table} FROM STDIN (FORMAT csv, HEADER true)");
            let mut copy = conn
                .copy_in_raw(&sql)
                .await
                .map_err(|e| format!("{sql}: {e}"))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file
                    .read(&mut buf)
                    .map_err(|e| format!("{}: {e}", csv.display()))?;
                if n == 0 {
                    break;
                }
                copy.send(&buf[..n])
                    .await
                    .map_err(|e| format!("{sql}: {e}"))?;
            }
            copy.finish().await.map_err(|e| format!("{sql}: {e}"))
        })
    }

    /// Runs one statement on an open connection, timed by wall clock around it alone;
    /// also measures the server's CPU time and the rest of the machine's. Returns the
    /// rows it affected.
    fn timed(&self, sql: &str) -> Result<(Measured, u64), String> {
        self.rt.block_on(async {
            let mut conn = self.pool.acquire().await.map_err(|e| e.to_string())?;
            let load = load_average();
            let server_before = server_cpu();
            let cpu_before = machine_cpu();
            let start = Instant::now();
            let done = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                .execute(&mut *conn)
                .await
                .map_err(|e| format!("{sql}: {e}"))?;
            let wall = start.elapsed();
            let cpu_after = machine_cpu();
            let server = match (server_before, server_cpu()) {
                (Some(a), Some(b)) => Some((b - a).max(0.0)),
                _ => None,
            };
            let noise = match (cpu_before, cpu_after, server) {
                (Some(a), Some(b), Some(s)) => {
                    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
                    Some((((b - a) - s) / (wall.as_secs_f64() * cores)).max(0.0))
                }
                _ => None,
            };
            use std::os::unix::process::ExitStatusExt;
            Ok((
                Measured {
                    status: ExitStatus::from_raw(0),
                    wall,
                    stdout: String::new(),
                    stderr: String::new(),
                    usage: None,
                    noise,
                    server_cpu: server,
                    load,
                },
                done.rows_affected(),
            ))
        })
    }
}

/// A quoted PostgreSQL identifier.
fn quote(name: &str) -> String {
    rowshift::sql::quote_ident(name)
}

/// A PostgreSQL string literal.
fn pg_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The URL without its password.
fn redact(url: &str) -> String {
    rowshift::config::redact(url)
}

/// Whether a result line is a peer's rather than rowshift's.
fn is_peer(label: &str) -> bool {
    ["duckdb", "postgres", "pgloader"]
        .iter()
        .any(|p| label.starts_with(p))
}

fn report_line(m: &Measurement) {
    println!(
        "  {:<22} {:>8.2}s wall  {:>12} rows/s  peak {:>7} MiB  CPU {:>6}s  noise {}",
        m.label,
        m.wall,
        fmt_int(m.rows_per_second().round() as u64),
        m.peak_rss.map_or("?".into(), |b| format!("{:.1}", mib(b))),
        m.cpu.map_or("?".into(), |c| format!("{c:.2}")),
        m.noise.map_or("?".into(), |n| format!("{:.0}%", n * 100.0)),
    );
    if m.noise.is_some_and(|n| n > 0.10) {
        println!(
            "  WARNING: other processes used {:.0}% of the CPU during this run; its time is not trustworthy",
            m.noise.unwrap_or(0.0) * 100.0
        );
    }
}

// ---------------------------------------------------------------------------------------
// Running rowshift and the peer

/// What a `rowshift run --json` reported, plus how the process ran.
struct RunSummary {
    run: Measured,
    read: u64,
    written: u64,
    filtered: u64,
    rejected: u64,
    seconds: Option<f64>,
    peak_rss: Option<u64>,
    chunks_failed: u64,
    checkpoint_seconds: f64,
    verify_seconds: f64,
}

impl RunSummary {
    fn measurement(&self, label: &str, rows: u64) -> Measurement {
        Measurement {
            label: label.to_string(),
            rows,
            wall: self.run.wall.as_secs_f64(),
            inner: self.seconds,
            peak_rss: self.peak_rss.or(self.run.usage.map(|u| u.max_rss)),
            cpu: self.run.usage.map(|u| u.cpu.as_secs_f64()),
            written: Some(self.written),
            noise: self.run.noise,
            server_cpu: self.run.server_cpu,
            load: self.run.load,
            ratio_wall: None,
            ratio_inner: None,
        }
    }

    /// Compares the counts with what the generator knows; prints and returns false on a
    /// difference.
    fn check(&self, label: &str, data: &Dataset) -> bool {
        self.check_counts(label, data.rows, data.kept)
    }

    /// Like `check`, for a job that reads `rows` and writes `kept` of them.
    fn check_counts(&self, label: &str, rows: u64, kept: u64) -> bool {
        let data = Dataset {
            rows,
            kept,
            bytes: 0,
            csv: PathBuf::new(),
        };
        let mut fine = true;
        let mut complain = |what: String| {
            println!("  !!! {label}: {what}");
            fine = false;
        };
        if self.read != data.rows {
            complain(format!(
                "read {} rows, the CSV has {}",
                fmt_int(self.read),
                fmt_int(data.rows)
            ));
        }
        if self.written != data.kept {
            complain(format!(
                "wrote {} rows, expected {} (rows with an empty deleted_at)",
                fmt_int(self.written),
                fmt_int(data.kept)
            ));
        }
        if self.filtered != data.rows - data.kept {
            complain(format!(
                "filtered {} rows, expected {}",
                fmt_int(self.filtered),
                fmt_int(data.rows - data.kept)
            ));
        }
        if self.rejected != 0 || self.chunks_failed != 0 {
            complain(format!(
                "{} rows rejected, {} chunks failed",
                self.rejected, self.chunks_failed
            ));
        }
        fine
    }
}

fn run_rowshift(pipeline: &Path) -> Result<RunSummary, String> {
    run_rowshift_on(pipeline, false)
}

/// `run_rowshift`; with `server`, also measures the PostgreSQL server's CPU time.
fn run_rowshift_on(pipeline: &Path, server: bool) -> Result<RunSummary, String> {
    let mut cmd = Command::new(ROWSHIFT);
    cmd.arg("run")
        .arg(pipeline)
        .arg("--json")
        .arg("--quiet")
        .arg("--restart");
    let run = if server {
        run_measured_with_server(&mut cmd)
    } else {
        run_measured(&mut cmd)
    }
    .map_err(|e| format!("cannot start {ROWSHIFT}: {e}"))?;
    let json: serde_json::Value = match serde_json::from_str(run.stdout.trim()) {
        Ok(v) => v,
        Err(e) => {
            return Err(format!(
                "rowshift exited with {} and no JSON summary ({e})\nstdout: {}\nstderr: {}",
                run.status,
                run.stdout.trim(),
                run.stderr.trim()
            ));
        }
    };
    // Exit 1 with rows in the quarantine and no failed chunk is the documented outcome of
    // a run that rejected rows (the `csv_rejects` scenario), not a failure.
    let rejected_only = run.status.code() == Some(1)
        && json["rows"]["rejected"].as_u64().unwrap_or(0) > 0
        && json["chunks_failed"].as_u64().unwrap_or(0) == 0;
    if !run.status.success() && !rejected_only {
        println!(
            "  !!! rowshift exited with {}: {}",
            run.status,
            json.get("failures")
                .map_or(String::new(), |f| f.to_string())
        );
    }
    let count = |key: &str| json["rows"][key].as_u64().unwrap_or(0);
    Ok(RunSummary {
        read: count("read"),
        written: count("written"),
        filtered: count("filtered"),
        rejected: count("rejected"),
        seconds: json["seconds"].as_f64(),
        peak_rss: json["peak_rss_bytes"].as_u64(),
        chunks_failed: json["chunks_failed"].as_u64().unwrap_or(0),
        checkpoint_seconds: json["checkpoint_seconds"].as_f64().unwrap_or(0.0),
        verify_seconds: json["verify_seconds"].as_f64().unwrap_or(0.0),
        run,
    })
}

/// Checkpoint costs, from the run just measured and one more: the share of worker time
/// spent in bookkeeping (target <= 2%), and an interrupted-then-resumed run against the
/// uninterrupted one (target <= 5% plus the chunks in flight when it was killed).
fn checkpoint_costs(pipeline: &Path, full: &RunSummary, threads: usize) -> Result<(), String> {
    let wall = full.run.wall.as_secs_f64();
    if let Some(secs) = full.seconds {
        let share = full.checkpoint_seconds / (secs * threads as f64);
        println!(
            "  checkpoint bookkeeping {:.3}s of {:.2}s x {threads} workers = {:.2}% (target <= 2%)",
            full.checkpoint_seconds,
            secs,
            100.0 * share
        );
    }
    let kill_after = Duration::from_secs_f64(wall * 0.45);
    let mut child = Command::new(ROWSHIFT)
        .arg("run")
        .arg(pipeline)
        .arg("--quiet")
        .arg("--restart")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {ROWSHIFT}: {e}"))?;
    std::thread::sleep(kill_after);
    child.kill().map_err(|e| e.to_string())?; // SIGKILL
    child.wait().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(ROWSHIFT);
    cmd.arg("run").arg(pipeline).arg("--json").arg("--quiet");
    let resumed = run_measured(&mut cmd).map_err(|e| format!("cannot start {ROWSHIFT}: {e}"))?;
    let json: serde_json::Value = serde_json::from_str(resumed.stdout.trim())
        .map_err(|e| format!("resume printed no summary: {e}"))?;
    let total = kill_after.as_secs_f64() + resumed.wall.as_secs_f64();
    let chunks = json["chunks_total"].as_u64().unwrap_or(1).max(1) as f64;
    println!(
        "  resume: killed at {:.2}s ({} chunks done), resumed in {:.2}s; {:.2}s in all vs {wall:.2}s uninterrupted = {:+.1}% (one chunk is {:.1}% of the run; {threads} were in flight)",
        kill_after.as_secs_f64(),
        json["chunks_skipped"],
        resumed.wall.as_secs_f64(),
        total,
        100.0 * (total - wall) / wall,
        100.0 / chunks
    );
    Ok(())
}

/// The default checks' cost: the run just measured (read-back on, the default) against
/// the same pipeline with `verify = "off"`, in the same process of measurement. Target:
/// read-back and conservation cost at most 15% of throughput.
fn verify_cost(file: &Path, pipeline: &str, on: &RunSummary) -> Result<(), String> {
    verify_cost_with(file, pipeline, on, Target::Local).map(|_| ())
}

/// The database target of a scenario, made fresh before each run of a read-back pair.
#[derive(Clone, Copy)]
enum Target<'a> {
    /// A file or SQLite target: nothing to do.
    Local,
    /// A PostgreSQL schema: dropped, recreated and checkpointed.
    Pg(&'a Pg, &'a str),
    /// A MySQL database: dropped, so no run pays for dropping the last one's table.
    My(&'a My, &'a str),
}

/// `verify_cost`, making `target` fresh and letting the servers settle before every run
/// after the first, as before the measured one.
fn verify_cost_with(
    file: &Path,
    pipeline: &str,
    on: &RunSummary,
    target: Target<'_>,
) -> Result<f64, String> {
    let off_file = file.with_file_name("pipeline_verify_off.toml");
    write_file(&off_file, &format!("verify = \"off\"\n{pipeline}"))?;
    let server = matches!(target, Target::Pg(..));
    // One timed run, from a fresh target and idle servers.
    let run = |file: &Path| -> Result<f64, String> {
        match target {
            Target::Local => {}
            Target::Pg(pg, schema) => {
                pg.fresh_schema(schema)?;
                pg.checkpoint();
            }
            Target::My(my, database) => {
                my.exec(&format!("DROP DATABASE IF EXISTS {}", my_quote(database)))?
            }
        }
        servers_settle();
        Ok(run_rowshift_on(file, server)?.run.wall.as_secs_f64())
    };
    // One run differs from the next by up to a third on this shared 2-core machine, and
    // the machine drifts over a scenario's runs. So the figure is paired: each pair is
    // two neighbouring runs, every other pair runs the one without read-back first (a
    // drift weighs on both sides alike), and the cost is the median of the pairs' costs.
    let mut pairs = vec![(on.run.wall.as_secs_f64(), run(&off_file)?)];
    for pair in 1..readback_pairs() {
        pairs.push(if pair % 2 == 1 {
            let off = run(&off_file)?;
            (run(file)?, off)
        } else {
            let on = run(file)?;
            (on, run(&off_file)?)
        });
    }
    let mut costs: Vec<f64> = pairs.iter().map(|(on, off)| 1.0 - off / on).collect();
    costs.sort_by(f64::total_cmp);
    let mut ons: Vec<f64> = pairs.iter().map(|p| p.0).collect();
    let mut offs: Vec<f64> = pairs.iter().map(|p| p.1).collect();
    let shown = pairs
        .iter()
        .map(|(on, off)| format!("{on:.2}/{off:.2}"))
        .collect::<Vec<_>>()
        .join(" ");
    let cost = median(&mut costs);
    let (t_on, t_off) = (median(&mut ons), median(&mut offs));
    println!(
        "  read-back: {:.1}% of throughput, the median of {} pairs' costs (quartiles {:.1}%..{:.1}%; on/off s: {shown}); medians {t_on:.2}s on vs {t_off:.2}s off = {:.1}%; {:.2}s of worker time reading back in the first run; target <= 15%{}",
        100.0 * cost,
        costs.len(),
        100.0 * quartile(&costs, 1),
        100.0 * quartile(&costs, 3),
        100.0 * (1.0 - t_off / t_on),
        on.verify_seconds,
        if cost <= 0.15 { "" } else { "  (above target)" }
    );
    Ok(t_on)
}

/// Quartile `q` (1 or 3) of `sorted` (in ascending order), by the nearest rank.
fn quartile(sorted: &[f64], q: usize) -> f64 {
    let rank = (q * sorted.len()).div_ceil(4).max(1);
    sorted[rank - 1]
}

/// Prints the ratio of rowshift's median wall time (`ours`, read-back on) to the peer's
/// over the same number of runs: one run of either swings by up to 30% here (a server
/// checkpoint, the page cache), more than the targets' margins.
fn median_ratio(peer: &str, ours: f64, walls: &mut [f64], target: f64) {
    let shown = walls
        .iter()
        .map(|t| format!("{t:.2}"))
        .collect::<Vec<_>>()
        .join(" ");
    let theirs = median(walls);
    let ratio = theirs / ours;
    println!(
        "  medians of {} runs each: rowshift {ours:.2}s vs {peer} {theirs:.2}s ({shown}) = x{ratio:.2}  (target >= {target:.2}: {})",
        walls.len(),
        if ratio >= target { "met" } else { "NOT MET" }
    );
}

/// Pairs of runs (verify on, verify off) behind the read-back figure:
/// `ROWSHIFT_BENCH_READBACK_PAIRS`, default 9.
fn readback_pairs() -> usize {
    std::env::var("ROWSHIFT_BENCH_READBACK_PAIRS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(9)
}

/// The median of `v` (the mean of the middle two for an even count).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

enum Peer {
    Done(Measurement),
    Skipped(String),
    Failed(String),
}

fn run_duckdb(config: &Config, data: &Dataset) -> Result<Peer, String> {
    let dir = fresh_run_dir(&config.data_dir, &format!("duckdb_{}", data.rows))?;
    let out = dir.join("out.parquet");
    let script = Path::new(MANIFEST_DIR)
        .join("benches")
        .join("duckdb_peer.py");
    warm_cache(&data.csv)?;
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .arg(&data.csv)
        .arg(&out)
        .arg(config.threads.to_string());
    let run = match run_measured(&mut cmd) {
        Ok(r) => r,
        Err(e) => return Ok(Peer::Skipped(format!("cannot run python3 ({e})"))),
    };
    if run.status.code() == Some(3) {
        return Ok(Peer::Skipped("pip install duckdb".into()));
    }
    if !run.status.success() {
        return Ok(Peer::Failed(format!(
            "duckdb_peer.py exited with {}: {}",
            run.status,
            run.stderr.trim()
        )));
    }
    let line = run
        .stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let json: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| format!("duckdb_peer.py printed `{line}`, not JSON: {e}"))?;
    Ok(Peer::Done(Measurement {
        label: "duckdb csv_parquet".into(),
        rows: data.rows,
        wall: run.wall.as_secs_f64(),
        inner: json["seconds"].as_f64(),
        peak_rss: run.usage.map(|u| u.max_rss),
        cpu: run.usage.map(|u| u.cpu.as_secs_f64()),
        written: json["rows_written"].as_u64(),
        noise: run.noise,
        server_cpu: None,
        load: run.load,
        ratio_wall: None,
        ratio_inner: None,
    }))
}

/// A finished child process.
struct Measured {
    status: ExitStatus,
    wall: Duration,
    stdout: String,
    stderr: String,
    usage: Option<Usage>,
    noise: Option<f64>,
    /// CPU seconds of the database servers during the run, when measured.
    server_cpu: Option<f64>,
    load: Option<f64>,
}

#[derive(Debug, Clone, Copy)]
struct Usage {
    max_rss: u64,
    cpu: Duration,
}

/// Runs `cmd` to the end, timing the wall clock from just before spawn to just after reap.
fn run_measured(cmd: &mut Command) -> std::io::Result<Measured> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let load = load_average();
    let cpu_before = machine_cpu();
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let mut out_pipe = child.stdout.take().expect("piped");
    let mut err_pipe = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let (status, usage) = reap(&mut child)?;
    let wall = start.elapsed();
    let cpu_after = machine_cpu();
    let noise = match (cpu_before, cpu_after, usage) {
        (Some(a), Some(b), Some(u)) => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            let others = (b - a) - u.cpu.as_secs_f64();
            Some((others / (wall.as_secs_f64() * cores)).max(0.0))
        }
        _ => None,
    };
    Ok(Measured {
        status,
        wall,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
        usage,
        noise,
        server_cpu: None,
        load,
    })
}

/// `run_measured`, also measuring the PostgreSQL server's CPU time, which is then not
/// counted as noise.
fn run_measured_with_server(cmd: &mut Command) -> std::io::Result<Measured> {
    let before = server_cpu();
    let mut run = run_measured(cmd)?;
    // The child's backends end when it does; let the postmaster reap them first.
    std::thread::sleep(Duration::from_millis(200));
    if let (Some(a), Some(b)) = (before, server_cpu()) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let server = (b - a).max(0.0);
        run.server_cpu = Some(server);
        run.noise = run
            .noise
            .map(|n| (n - server / (run.wall.as_secs_f64() * cores)).max(0.0));
    }
    Ok(run)
}

/// Waits, at most 20 s, until the database servers are idle (at most one 10 ms tick of
/// CPU in half a second), so that no run pays for the background work the one before
/// left behind: InnoDB purging a dropped table, PostgreSQL's checkpointer, autovacuum.
fn servers_settle() {
    let start = Instant::now();
    let mut last = server_cpu();
    while start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(500));
        let now = server_cpu();
        match (last, now) {
            (Some(a), Some(b)) if b - a > 0.015 => last = now,
            _ => return,
        }
    }
}

/// CPU seconds used so far by the database servers: user + system time of every live
/// `postgres`, `mariadbd` or `mysqld` process, plus the children's time each has reaped (the postmaster's
/// `cutime` holds the backends that have exited). Linux only; None elsewhere.
fn server_cpu() -> Option<f64> {
    let mut ticks = 0u64;
    let mut found = false;
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !matches!(&stat[open + 1..close], "postgres" | "mariadbd" | "mysqld") {
            continue;
        }
        // After the command: state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime cutime cstime ...
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        for i in 11..=14 {
            ticks += fields
                .get(i)
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0);
        }
        found = true;
    }
    found.then_some(ticks as f64 / 100.0) // USER_HZ is 100 on Linux
}

/// Waits for `child` with `wait4`, which also returns the child's own peak RSS and CPU time.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn reap(child: &mut Child) -> std::io::Result<(ExitStatus, Option<Usage>)> {
    use std::os::unix::process::ExitStatusExt;

    /// `struct rusage` on 64-bit Linux: two `struct timeval` then fourteen `long`s.
    #[repr(C)]
    struct RUsage {
        utime: [i64; 2],
        stime: [i64; 2],
        maxrss_kib: i64,
        rest: [i64; 13],
    }
    unsafe extern "C" {
        fn wait4(pid: i32, status: *mut i32, options: i32, rusage: *mut RUsage) -> i32;
    }
    let pid = child.id() as i32;
    loop {
        let mut status = 0i32;
        let mut ru = RUsage {
            utime: [0; 2],
            stime: [0; 2],
            maxrss_kib: 0,
            rest: [0; 13],
        };
        // SAFETY: `pid` is our own unreaped child; both pointers are to live locals of the
        // layout the kernel writes. The `Child` is never waited on afterwards.
        let r = unsafe { wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            let tv =
                |t: [i64; 2]| Duration::from_secs(t[0] as u64) + Duration::from_micros(t[1] as u64);
            let usage = Usage {
                max_rss: ru.maxrss_kib as u64 * 1024,
                cpu: tv(ru.utime) + tv(ru.stime),
            };
            return Ok((ExitStatus::from_raw(status), Some(usage)));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn reap(child: &mut Child) -> std::io::Result<(ExitStatus, Option<Usage>)> {
    Ok((child.wait()?, None))
}

/// Busy CPU seconds of the whole machine so far, from `/proc/stat` (Linux only).
fn machine_cpu() -> Option<f64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...; idle and iowait are not busy.
    let busy: u64 = ticks.iter().take(8).sum::<u64>() - ticks.get(3)? - ticks.get(4)?;
    Some(busy as f64 / 100.0) // USER_HZ is 100 on Linux
}

fn load_average() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------
// Data

/// A generated users CSV.
struct Dataset {
    rows: u64,
    /// Rows with an empty `deleted_at`: what the filter keeps.
    kept: u64,
    bytes: u64,
    csv: PathBuf,
}

/// Returns the CSV for `rows`, generating it unless a matching one exists.
fn ensure_csv(dir: &Path, rows: u64) -> Result<Dataset, String> {
    let csv = dir.join(format!("users_{rows}.csv"));
    let meta_path = dir.join(format!("users_{rows}.csv.meta"));
    if let Some(meta) = read_meta(&meta_path) {
        let size = fs::metadata(&csv).map(|m| m.len()).ok();
        if meta.get("generator") == Some(&GENERATOR_VERSION.to_string())
            && meta.get("rows") == Some(&rows.to_string())
            && size.map(|s| s.to_string()).as_ref() == meta.get("bytes")
            && let Some(kept) = meta.get("kept").and_then(|k| k.parse().ok())
        {
            let bytes = size.unwrap_or(0);
            println!(
                "  data: reusing {} ({:.1} MiB, {:.0} bytes/row)",
                csv.display(),
                mib(bytes),
                bytes as f64 / rows as f64
            );
            return Ok(Dataset {
                rows,
                kept,
                bytes,
                csv,
            });
        }
    }
    let _ = fs::remove_file(&meta_path);
    let t0 = Instant::now();
    let tmp = dir.join(format!(".users_{rows}.csv.tmp"));
    let kept = generate_csv(&tmp, rows).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    fs::rename(&tmp, &csv).map_err(|e| format!("renaming to {}: {e}", csv.display()))?;
    let bytes = fs::metadata(&csv).map_err(|e| e.to_string())?.len();
    write_file(
        &meta_path,
        &format!("generator={GENERATOR_VERSION}\nrows={rows}\nkept={kept}\nbytes={bytes}\n"),
    )?;
    println!(
        "  data: generated {} in {:.1}s ({:.1} MiB, {:.0} bytes/row, {} rows kept by the filter)",
        csv.display(),
        t0.elapsed().as_secs_f64(),
        mib(bytes),
        bytes as f64 / rows as f64,
        fmt_int(kept)
    );
    Ok(Dataset {
        rows,
        kept,
        bytes,
        csv,
    })
}

/// Returns the SQLite copy of the dataset (table `users`), building it with rowshift from
/// the CSV unless a matching one exists. Setup: not measured.
fn ensure_sqlite(config: &Config, data: &Dataset) -> Result<PathBuf, String> {
    let db = config.data_dir.join(format!("users_{}.sqlite", data.rows));
    let meta_path = config
        .data_dir
        .join(format!("users_{}.sqlite.meta", data.rows));
    let want = format!(
        "generator={GENERATOR_VERSION}\nrows={}\ncsv_bytes={}\n",
        data.rows, data.bytes
    );
    if db.is_file() && fs::read_to_string(&meta_path).ok().as_deref() == Some(want.as_str()) {
        println!("  data: reusing {}", db.display());
        return Ok(db);
    }
    let _ = fs::remove_file(&meta_path);
    remove_sqlite(&db)?;
    let dir = fresh_run_dir(&config.data_dir, &format!("setup_sqlite_{}", data.rows))?;
    let pipeline = format!(
        "name = \"bench_setup_sqlite\"\n\n[source]\nurl = {}\nkey = \"id\"\n\n[target]\nurl = {}\ntable = \"users\"\nif_exists = \"replace\"\n\n{IDENTITY}\n[chunks]\nrows = {CHUNK_ROWS}\nparallel = {}\n",
        toml_string(&data.csv.to_string_lossy()),
        toml_string(&format!("sqlite://{}", db.display())),
        config.threads,
    );
    let file = dir.join("pipeline.toml");
    write_file(&file, &pipeline)?;
    let summary = run_rowshift(&file)?;
    let in_table = sqlite_count(&db, "users")?;
    if !summary.run.status.success() || summary.written != data.rows || in_table != data.rows {
        return Err(format!(
            "building the SQLite source failed: rowshift exited with {}, wrote {} rows, the table holds {}, expected {}\nstderr: {}",
            summary.run.status,
            summary.written,
            in_table,
            data.rows,
            summary.run.stderr.trim()
        ));
    }
    write_file(&meta_path, &want)?;
    println!(
        "  data: built {} with rowshift in {:.1}s (setup, not measured)",
        db.display(),
        summary.run.wall.as_secs_f64()
    );
    Ok(db)
}

/// Word lists: display form and the ASCII form used in e-mail addresses.
const FIRST: &[(&str, &str)] = &[
    ("Anna", "anna"),
    ("José", "jose"),
    ("Zoë", "zoe"),
    ("Łukasz", "lukasz"),
    ("Søren", "soren"),
    ("Mia", "mia"),
    ("Noah", "noah"),
    ("Émile", "emile"),
    ("Ava", "ava"),
    ("Liam", "liam"),
    ("Chloé", "chloe"),
    ("Björn", "bjorn"),
    ("Oliver", "oliver"),
    ("Sofía", "sofia"),
    ("Mateo", "mateo"),
    ("Yuki", "yuki"),
];
const LAST: &[(&str, &str)] = &[
    ("Smith", "smith"),
    ("Müller", "muller"),
    ("Núñez", "nunez"),
    ("García", "garcia"),
    ("O'Neil", "oneil"),
    ("Kowalski", "kowalski"),
    ("Dubois", "dubois"),
    ("Jensen", "jensen"),
    ("Brown", "brown"),
    ("Rossi", "rossi"),
    ("Çelik", "celik"),
    ("Novák", "novak"),
    ("Tanaka", "tanaka"),
    ("Andersson", "andersson"),
];
const DOMAINS: &[&str] = &[
    "example.com",
    "mail.test",
    "corp.example.org",
    "inbox.example.net",
    "post.test",
];
const COUNTRIES: &[&str] = &[
    "US", "DE", "FR", "PL", "DK", "ES", "GB", "IT", "SE", "CZ", "JP", "NL", "BR", "CA", "TR",
];
/// Notes; some need quoting (a comma, a double quote).
const NOTES: &[&str] = &[
    "prefers email only",
    "called twice in May",
    "VIP since the launch",
    "asked for an invoice",
    "no marketing, please",
    "moved to Berlin 2021",
    "référé par un ami",
    "said \"call me later\"",
    "pays by card, always",
    "weekend shopper only",
    "needs a callback soon",
    "gift card never used",
];

/// xorshift64*: tiny, deterministic, plenty for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Writes the users CSV; returns how many rows have an empty `deleted_at`.
fn generate_csv(path: &Path, rows: u64) -> std::io::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    writeln!(out, "{HEADER}")?;
    let mut rng = Rng(0x5EED_2026_BE9C_0001);
    let mut line = String::with_capacity(256);
    let mut field = String::with_capacity(64);
    let mut kept = 0u64;
    for id in 1..=rows {
        line.clear();
        let (first, first_ascii) = rng.pick(FIRST);
        let (last, last_ascii) = rng.pick(LAST);
        // id, full_name ("First Last"; O'Neil needs no quoting in CSV)
        let _ = write!(line, "{id},{first} {last},");
        // email: mixed case, sometimes a number, sometimes surrounding spaces (quoted)
        field.clear();
        let style = rng.below(4);
        mixed_case(&mut field, first_ascii, style, &mut rng);
        field.push('.');
        mixed_case(&mut field, last_ascii, style, &mut rng);
        if rng.below(2) == 0 {
            let _ = write!(field, "{}", rng.below(1000));
        }
        field.push('@');
        mixed_case(&mut field, rng.pick(DOMAINS), style, &mut rng);
        if rng.below(20) == 0 {
            let _ = write!(line, "\"  {field} \",");
        } else {
            let _ = write!(line, "{field},");
        }
        // created_at
        let year = timestamp(&mut line, &mut rng, 2015, 10);
        line.push(',');
        // deleted_at: empty (NULL) for ~90%
        if rng.below(10) == 0 {
            timestamp(&mut line, &mut rng, year, 2026 - year);
        } else {
            kept += 1;
        }
        // country, score, note
        let _ = write!(
            line,
            ",{},{}.{:02},",
            rng.pick(COUNTRIES),
            rng.below(1000),
            rng.below(100)
        );
        if rng.below(30) != 0 {
            let note = rng.pick(NOTES);
            if note.contains([',', '"']) {
                let _ = write!(line, "\"{}\"", note.replace('"', "\"\""));
            } else {
                line.push_str(note);
            }
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
    }
    out.flush()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(kept)
}

/// Appends `s` (ASCII) in one of four case styles: lower, Capitalised, UPPER, rAnDoM.
fn mixed_case(out: &mut String, s: &str, style: u64, rng: &mut Rng) {
    for (i, c) in s.chars().enumerate() {
        let upper = match style {
            0 => false,
            1 => i == 0,
            2 => true,
            _ => rng.below(2) == 0,
        };
        out.push(if upper { c.to_ascii_uppercase() } else { c });
    }
}

/// Appends `YYYY-MM-DD HH:MM:SS` in years `from..from + span`; returns the year.
fn timestamp(out: &mut String, rng: &mut Rng, from: u64, span: u64) -> u64 {
    let year = from + rng.below(span.max(1));
    let month = 1 + rng.below(12);
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    let _ = write!(
        out,
        "{year}-{month:02}-{:02} {:02}:{:02}:{:02}",
        1 + rng.below(days),
        rng.below(24),
        rng.below(60),
        rng.below(60)
    );
    year
}

// ---------------------------------------------------------------------------------------
// Checking outputs

/// Rows in the `part-*.parquet` files of `dir`, from their footers.
fn parquet_rows(dir: &Path) -> Result<u64, String> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let mut total = 0u64;
    let entries = fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !(name.starts_with("part-") && name.ends_with(".parquet")) {
            continue;
        }
        let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let reader =
            SerializedFileReader::new(file).map_err(|e| format!("{}: {e}", path.display()))?;
        total += reader.metadata().file_metadata().num_rows() as u64;
    }
    Ok(total)
}

/// `SELECT count(*)` of a table in a SQLite file, opened read-only.
fn sqlite_count(db: &Path, table: &str) -> Result<u64, String> {
    use sqlx::ConnectOptions;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .read_only(true)
            .connect()
            .await
            .map_err(|e| format!("opening {}: {e}", db.display()))?;
        let sql = format!("SELECT count(*) FROM {}", rowshift::sql::quote_ident(table));
        let n: i64 = sqlx::query_scalar(rowshift::sql::stmt(sql))
            .fetch_one(&mut conn)
            .await
            .map_err(|e| format!("counting {table} in {}: {e}", db.display()))?;
        Ok(n as u64)
    })
}

// ---------------------------------------------------------------------------------------
// Small helpers

/// An empty directory `bench-data/runs/<name>`, so no output or `.rowshift/` state of an
/// earlier run can change what is measured.
fn fresh_run_dir(data_dir: &Path, name: &str) -> Result<PathBuf, String> {
    let dir = data_dir.join("runs").join(name);
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
    }
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

fn remove_sqlite(db: &Path) -> Result<(), String> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("removing {}: {e}", Path::new(&p).display())),
        }
    }
    Ok(())
}

/// Reads a file once so every contender starts with it in the page cache.
fn warm_cache(path: &Path) -> Result<(), String> {
    let mut f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    while f
        .read(&mut buf)
        .map_err(|e| format!("{}: {e}", path.display()))?
        > 0
    {}
    Ok(())
}

fn read_meta(path: &Path) -> Option<BTreeMap<String, String>> {
    let text = fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect(),
    )
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `1234567` as `1,234,567`.
fn fmt_int(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
