//! The `rowshift` command line. The only place that prints, draws progress bars or
//! decides exit codes.
//!
//! Exit codes: 0 success; 1 a check failed or rows were rejected; 2 an error (bad
//! pipeline file, unreachable source or target, I/O).

mod init;
mod migrate;
mod online;
mod progress;
mod report;
mod run_report;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};

use rowshift::config::Pipeline;
use rowshift::plan::Plan;
use rowshift::run::{self, RunOptions, Summary};

const EXIT_CODES: &str = "Exit codes: 0 success, 1 a check failed or rows were rejected, 2 error.";

/// Move large tables between schema versions: chunked, parallel, checked.
#[derive(Debug, Parser)]
#[command(
    name = "rowshift",
    version,
    after_help = "Example:\n  rowshift validate pipelines/quickstart.toml\n  rowshift run pipelines/quickstart.toml\n\nExit codes: 0 success, 1 a check failed or rows were rejected, 2 error."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline: plan chunks, transform and write them in parallel, check each.
    #[command(
        after_help = "Example:\n  rowshift run pipelines/quickstart.toml --json\n\nExit codes: 0 success, 1 a check failed or rows were rejected, 2 error."
    )]
    Run {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Chunks in flight at once (overrides [chunks] parallel).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        parallel: Option<u64>,
        /// Rows per chunk (overrides [chunks] rows).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        chunk_rows: Option<u64>,
        /// Stop starting new chunks after the first failure.
        #[arg(long)]
        fail_fast: bool,
        /// No progress output, only the summary.
        #[arg(long, short)]
        quiet: bool,
        /// Discard the checkpoint and what the earlier run wrote, and start over.
        #[arg(long)]
        restart: bool,
        /// Wait up to this many seconds for another run of the pipeline that holds its
        /// lock; without it, such a run refuses at once, naming the one that holds it.
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        lock_timeout: u64,
        /// Join a run shared by several processes, on this machine or others: chunks are
        /// taken from the target's checkpoint tables under leases (PostgreSQL and
        /// MySQL/MariaDB targets). The first worker plans; start as many as you like.
        #[arg(long)]
        worker: bool,
        /// With --worker: seconds a chunk's lease lasts without a heartbeat (overrides
        /// [chunks] lease_seconds).
        #[arg(long, value_name = "SECONDS", requires = "worker", value_parser = clap::value_parser!(u64).range(2..))]
        lease_seconds: Option<u64>,
    },
    /// Run the failed chunks again (or the ones named with --chunk), or with --rejects,
    /// the quarantined rows.
    #[command(
        after_help = "Example:\n  rowshift retry pipelines/quickstart.toml\n  rowshift retry pipelines/quickstart.toml --chunk 3 --chunk 7\n  rowshift retry pipelines/quickstart.toml --rejects\n\nExit codes: 0 success, 1 rows still rejected or a check failed, 2 error."
    )]
    Retry {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// Run this chunk (repeatable); it must not be done.
        #[arg(long, value_name = "ID", conflicts_with = "rejects")]
        chunk: Vec<usize>,
        /// Re-process the quarantined rows: those that now pass are written and leave the
        /// quarantine, the rest stay with their new reason.
        #[arg(long)]
        rejects: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        /// No progress output, only the summary.
        #[arg(long, short)]
        quiet: bool,
        /// Wait up to this many seconds for another run of the pipeline that holds its
        /// lock; without it, such a run refuses at once, naming the one that holds it.
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        lock_timeout: u64,
    },
    /// Show a pipeline's progress: chunk states, row counts, last errors, rejects by
    /// reason; or, for a migration set's directory, each step: applied, pending, changed,
    /// failed, with rows moved, rejects and checksum. Reads only; changes nothing.
    #[command(
        after_help = "Example:\n  rowshift status pipelines/quickstart.toml --json\n  rowshift status pipelines/shop_v2\n\nExit codes: 0 shown, 2 error."
    )]
    Status {
        /// The pipeline file (TOML), or a migration set's directory.
        pipeline: PathBuf,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a run's report as one self-contained HTML page: throughput per worker over
    /// time, chunk durations and the slowest chunks, rejected rows by reason over time,
    /// the read-back's cost, and retries with their errors. Works during a run too.
    /// Reads only; the page loads nothing from the network.
    #[command(
        after_help = "Example:\n  rowshift report pipelines/quickstart.toml > report.html\n  rowshift report pipelines/quickstart.toml -o report.html\n\nExit codes: 0 written, 2 error (for example, no run recorded)."
    )]
    Report {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// Write the page to this file (default: stdout).
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Swap an online move's new table into the source table's place: catch up, lock
    /// the source against writes (bounded, retried), drain the last changes, rename the
    /// old table to `<table>__v1` and the new one into its name, drop the capture
    /// triggers. Between two databases: catch up until no change waits and say the
    /// log position the target is current as of. See docs/online.md.
    #[command(
        after_help = "Example:\n  rowshift cutover pipelines/users_v2.toml\n\nExit codes: 0 swapped (or caught up), 1 swapped but a foreign key referencing the table failed its validation (left NOT VALID), 2 error (a lock not had changes nothing)."
    )]
    Cutover {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for a run of the pipeline that holds its lock (0: refuse at
        /// once).
        #[arg(long, default_value_t = 0)]
        lock_timeout: u64,
    },
    /// Replay the changes an online move has logged, until fewer than `[online]
    /// max_lag_rows` wait: before the cut-over into
    /// the new table (as a run's catch-up does), after it back into the old table
    /// through the reverse pipeline, which keeps the old table current for `rowshift
    /// down`. See docs/online.md.
    #[command(
        after_help = "Example:\n  rowshift catchup pipelines/users_v2.toml\n\nExit codes: 0 caught up, 2 error."
    )]
    Catchup {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for a run of the pipeline that holds its lock (0: refuse at
        /// once).
        #[arg(long, default_value_t = 0)]
        lock_timeout: u64,
    },
    /// Pause an online move's catch-up between two batches, keeping its place: sets the
    /// flag file `<pipeline file>.paused`, which the catch-up looks for before each batch
    /// (`touch` works too). The copy of chunks is not paused. See docs/online.md.
    #[command(
        after_help = "Example:\n  rowshift pause pipelines/users_v2.toml\n\nExit codes: 0 paused, 2 error."
    )]
    Pause {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
    },
    /// Resume a paused online move: removes the flag file `rowshift pause` set; the
    /// catch-up goes on from the position it kept.
    #[command(
        after_help = "Example:\n  rowshift resume pipelines/users_v2.toml\n\nExit codes: 0 resumed (or was not paused), 2 error."
    )]
    Resume {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
    },
    /// Drop what an online move kept after its cut-over: the old table (`<table>__v1`)
    /// and the change log. Between two databases: the capture triggers and the log.
    #[command(
        after_help = "Example:\n  rowshift finalize pipelines/users_v2.toml\n  rowshift finalize migrations/shop\n\nExit codes: 0 dropped, 2 error."
    )]
    Finalize {
        /// The pipeline file (TOML), or a migration set's directory: every applied
        /// online step of the set is finalized.
        pipeline: PathBuf,
    },
    /// Reconcile the target with the source: re-read every done chunk's source range,
    /// transform it again, and compare row count and checksum with the chunk's rows in
    /// the target. Lists the chunks that differ, with the first differing row and column.
    #[command(
        after_help = "Example:\n  rowshift verify pipelines/quickstart.toml\n  rowshift verify pipelines/quickstart.toml --repair\n\nExit codes: 0 the target matches (or was repaired), 1 chunks differ, 2 error."
    )]
    Verify {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// Rewrite the chunks that differ.
        #[arg(long)]
        repair: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Wait up to this many seconds for another run of the pipeline that holds its
        /// lock; without it, such a run refuses at once, naming the one that holds it.
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        lock_timeout: u64,
    },
    /// Run the transforms and checks on a sample of the source and show what would be
    /// written, rejected and executed. Writes nothing: no table, file or state.
    #[command(
        after_help = "Example:\n  rowshift dry-run pipelines/quickstart.toml --sample 200 --random\n  rowshift dry-run pipelines/orders_csv_to_parquet.toml --sample-file my_sample.csv --json\n\nExit codes: 0 the sample passes, 1 the sample has rejected rows (run would fail), 2 error."
    )]
    DryRun {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// Rows in the sample.
        #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
        sample: u64,
        /// Take a uniform random sample of the whole source instead of the first rows.
        #[arg(long, conflicts_with = "sample_file")]
        random: bool,
        /// Seed for --random (default: from the clock).
        #[arg(long, requires = "random")]
        seed: Option<u64>,
        /// Use the rows of this local CSV or Parquet file instead of the source.
        #[arg(long, value_name = "FILE")]
        sample_file: Option<PathBuf>,
        /// Rows to show before and after.
        #[arg(long, value_name = "N", default_value_t = 3)]
        preview: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a starter pipeline from an existing table, CSV or Parquet file: one identity
    /// expression per column, with the types found, and for a database table into a
    /// database its keys, indexes, checks, foreign keys, defaults and identity columns.
    /// With --set, a migration set that moves every table of a database or schema.
    #[command(
        after_help = "Example:\n  rowshift init --from sqlite://samples/shop.db --table users_v1 --output pipelines/users.toml\n  rowshift init --from samples/orders.csv\n  rowshift init --from mysql://root@db/shop --set migrations/shop --target postgres://pg/app --target-schema shop\n\nExit codes: 0 written, 2 error (for example, no key found)."
    )]
    Init {
        /// The source: sqlite://PATH, postgres://..., mysql://..., or a .csv or .parquet
        /// file.
        #[arg(long, value_name = "URL|FILE")]
        from: String,
        /// The table, for a database source.
        #[arg(long, conflicts_with = "set")]
        table: Option<String>,
        /// Write a migration set into this directory: one data step per table of the
        /// source's database or schema, in foreign-key order. Needs --target.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["output", "key", "name"], requires = "target")]
        set: Option<PathBuf>,
        /// The source's PostgreSQL schema or MySQL database (default: public / the URL's).
        #[arg(long, value_name = "NAME")]
        schema: Option<String>,
        /// The target's PostgreSQL schema or MySQL database (default: public / the URL's).
        #[arg(long, value_name = "NAME")]
        target_schema: Option<String>,
        /// The key column to chunk by, overriding the one init finds; repeat it for a
        /// composite key (`--key tenant_id --key id`).
        #[arg(long)]
        key: Vec<String>,
        /// The pipeline's name (default: the table or file name).
        #[arg(long)]
        name: Option<String>,
        /// The target url (default: a Parquet directory out/<name> beside the pipeline).
        #[arg(long, value_name = "URL")]
        target: Option<String>,
        /// Write the pipeline to this file (default: print it).
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Overwrite --output if it exists; with --set, replace the set files of DIR.
        #[arg(long)]
        force: bool,
    },
    /// Check a pipeline file: every error at once, each with its line. Reads the source's
    /// schema, writes nothing.
    #[command(
        after_help = "Example:\n  rowshift validate pipelines/quickstart.toml\n\nExit codes: 0 valid, 2 invalid."
    )]
    Validate {
        /// The pipeline file (TOML), or a migration set's directory (every file of the
        /// set is checked; a data step's source is not opened, as it may be made by an
        /// earlier step).
        pipeline: PathBuf,
    },
    /// Apply a migration set's pending steps in order (steps that share no table or
    /// foreign key at the same time, up to --parallel), under the target's migration
    /// lock; continues a step an interrupted run left where the history says it stopped.
    #[command(
        after_help = "Example:\n  rowshift up pipelines/shop_v2\n  rowshift up pipelines/shop_v2 --to 3\n  rowshift up pipelines/shop_v2 --parallel 1\n\nExit codes: 0 applied, 1 a data step rejected rows (up started no step after it), 2 error (the history records where it stopped)."
    )]
    Up {
        /// The migration set's directory.
        dir: PathBuf,
        /// Apply the steps up to this number only.
        #[arg(long, value_name = "N")]
        to: Option<u64>,
        /// Accept applied steps whose files changed since they ran (recorded in the
        /// history).
        #[arg(long)]
        allow_changed: bool,
        /// Wait up to this many seconds for another process that holds the target's
        /// migration lock; without it, refuse at once, naming the holder.
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        lock_timeout: u64,
        /// Apply at most this many independent steps at once (steps whose tables share
        /// no table or foreign key); 1 applies them one after the other. Default: the
        /// set file's `parallel`, or 4.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        parallel: Option<u64>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// No chunk lines, only step lines and the summary.
        #[arg(long, short)]
        quiet: bool,
        /// Print each statement on stderr as it was executed, with the lock it takes
        /// (as `rowshift plan` shows them).
        #[arg(long)]
        print_sql: bool,
    },
    /// Revert a migration set's applied steps after step N, last first, by each step's
    /// down SQL. Checks every step first and changes nothing if one cannot be reverted.
    /// Given an online pipeline's file instead, swap its cut-over back: the old table,
    /// kept current by reverse capture, takes the source's name again, with every write
    /// made since the cut-over (docs/online.md).
    #[command(
        after_help = "Example:\n  rowshift down pipelines/shop_v2 --to 1\n  rowshift down pipelines/users_v2.toml\n\nExit codes: 0 reverted (swapped back), 2 refused or error (the history records where it stopped; a swap-back that is refused changes nothing)."
    )]
    Down {
        /// The migration set's directory, or an online pipeline's file.
        dir: PathBuf,
        /// The step to go back to (0: revert every step). Required for a set; not taken
        /// for a pipeline.
        #[arg(long, value_name = "N")]
        to: Option<u64>,
        /// Revert data steps even when their rows could not be had again: their tables
        /// hold rows the set did not write, or their source is gone or changed since.
        /// For a pipeline: swap back although rows written since the cut-over stand
        /// in the reverse pipeline's quarantine (the old table lacks them).
        #[arg(long)]
        force: bool,
        /// Accept applied steps whose files changed since they ran (recorded).
        #[arg(long)]
        allow_changed: bool,
        /// Wait up to this many seconds for the target's migration lock.
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        lock_timeout: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Print each statement on stderr as it was executed, with the lock it takes.
        #[arg(long)]
        print_sql: bool,
    },
    /// Prove a migration set's rollback: up, down and up again on a throwaway copy (a
    /// temporary SQLite file, PostgreSQL schema or MySQL database, dropped after) with
    /// a sample of each data step's source. Checks that the second up gives the target
    /// the first gave (tables, columns and types, indexes, constraints, rows) and that
    /// each reverse pipeline gives back the rows it was given. Never touches the real
    /// target or sources, but to read them.
    #[command(after_help = "Example:
  rowshift test-rollback pipelines/shop_v2 --sample 500

Exit codes: 0 nothing lost, 1 a difference (named), 2 an error.")]
    TestRollback {
        /// The migration set's directory.
        dir: PathBuf,
        /// Rows copied from each data step's source table (its first, by key).
        #[arg(long, value_name = "N", default_value_t = rowshift::migrate::DEFAULT_SAMPLE)]
        sample: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// No chunk lines, only step lines and the summary.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Print every statement `up` (or `down --to N`) of a migration set would execute, or
    /// one run of a pipeline, in order, with the lock each takes and the rows and chunks
    /// of each data move. Connects read-only (or not at all with --offline); changes
    /// nothing.
    #[command(
        after_help = "Example:\n  rowshift plan pipelines/shop_v2\n  rowshift plan pipelines/shop_v2 --down --to 1\n  rowshift plan pipelines/shop_v2 --offline --json\n  rowshift plan pipelines/quickstart.toml\n\nExit codes: 0 planned, 1 the command would refuse (the plan says why), 2 error."
    )]
    Plan {
        /// The migration set's directory, or a pipeline file.
        path: PathBuf,
        /// Plan `down --to N` rather than `up`.
        #[arg(long, requires = "to")]
        down: bool,
        /// `up`: the steps up to this number only; `down`: the step to go back to.
        #[arg(long, value_name = "N")]
        to: Option<u64>,
        /// Connect to nothing: plan every step as pending, without row estimates.
        #[arg(long)]
        offline: bool,
        /// Print the plan as JSON (one object per statement: step, phase, sql, lock,
        /// estimate).
        #[arg(long)]
        json: bool,
    },
    /// Adopt an existing database at step N: record the steps up to N as applied without
    /// running them.
    #[command(
        after_help = "Example:\n  rowshift baseline pipelines/shop_v2 --to 2\n\nExit codes: 0 recorded, 2 refused or error."
    )]
    Baseline {
        /// The migration set's directory.
        dir: PathBuf,
        /// The step the database is at.
        #[arg(long, value_name = "N")]
        to: u64,
        /// Wait up to this many seconds for the target's migration lock.
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        lock_timeout: u64,
    },
}

/// Parses the arguments, runs the command, and returns the process exit code.
pub fn main() -> i32 {
    quiet_on_a_closed_pipe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match execute(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "error: {}",
                rowshift::config::redact(&rowshift::chain_text(e.chain()))
            );
            2
        }
    }
}

/// What `rowshift … | head` does once `head` has gone: the exit of a Unix tool whose
/// reader closed the pipe (128 + SIGPIPE), without a panic message. Rust ignores
/// SIGPIPE, so that the database connections see a closed socket as an error to retry,
/// and `println!` panics on the closed stdout instead. Output is written after the work
/// it reports is committed, so nothing is lost by stopping there.
fn quiet_on_a_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if text.starts_with("failed printing to stdout") && text.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn execute(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Validate { pipeline } if migrate::is_set(&pipeline) => {
            migrate::validate(&pipeline)
        }
        Command::Status { pipeline, json } if migrate::is_set(&pipeline) => {
            migrate::status(&pipeline, json)
        }
        Command::Up {
            dir,
            to,
            allow_changed,
            lock_timeout,
            parallel,
            json,
            quiet,
            print_sql,
        } => migrate::up(
            &dir,
            migrate::UpArgs {
                to,
                allow_changed,
                lock_timeout,
                parallel: parallel.map(|n| n as usize),
                json,
                quiet,
                print_sql,
            },
        ),
        Command::Down {
            dir,
            to,
            force,
            allow_changed,
            lock_timeout,
            json,
            print_sql,
        } if dir.is_file() => {
            if to.is_some() || allow_changed || print_sql {
                anyhow::bail!(
                    "{} is a pipeline file: `rowshift down` swaps its cut-over back and takes no --to, --allow-changed or --print-sql (those are for a migration set's directory)",
                    dir.display()
                );
            }
            online::down(&dir, json, force, lock_timeout)
        }
        Command::Down {
            dir,
            to,
            force,
            allow_changed,
            lock_timeout,
            json,
            print_sql,
        } => {
            let Some(to) = to else {
                anyhow::bail!(
                    "rowshift down {}: name the step to go back to with --to N (0 reverts every step)",
                    dir.display()
                );
            };
            migrate::down(
                &dir,
                to,
                force,
                allow_changed,
                lock_timeout,
                json,
                print_sql,
            )
        }
        Command::TestRollback {
            dir,
            sample,
            json,
            quiet,
        } => migrate::test_rollback(&dir, sample, json, quiet),
        Command::Plan {
            path,
            down,
            to,
            offline,
            json,
        } => migrate::plan(&path, down, to, offline, json),
        Command::Baseline {
            dir,
            to,
            lock_timeout,
        } => migrate::baseline(&dir, to, lock_timeout),
        Command::Validate { pipeline } => {
            let plan = load(&pipeline)?;
            let sink = plan.open_sink()?;
            plan.check_target_table()?;
            println!(
                "ok: {} reads {} and writes {} ({} columns)",
                pipeline.display(),
                plan.source.describe(),
                sink.describe(),
                plan.transform.output_schema().fields().len()
            );
            Ok(0)
        }
        Command::Init {
            from,
            table,
            set: Some(dir),
            schema,
            target_schema,
            target,
            force,
            ..
        } => init::init_set(
            rowshift::init::InitOptions {
                from,
                table,
                key: Vec::new(),
                name: None,
                target,
                pipeline_dir: dir,
                schema,
                target_schema,
            },
            force,
        ),
        Command::Init {
            from,
            table,
            key,
            name,
            target,
            output,
            force,
            schema,
            target_schema,
            set: None,
        } => {
            let pipeline_dir = match output.as_ref().and_then(|o| o.parent()) {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let opts = rowshift::init::InitOptions {
                from,
                table,
                key,
                name,
                target,
                pipeline_dir,
                schema,
                target_schema,
            };
            let starter = rowshift::init::starter(&opts)?;
            for note in &starter.notes {
                eprintln!("note: {note}");
            }
            init::print_lost(&starter.lost);
            let text = &starter.text;
            let Some(out) = output else {
                print!("{text}");
                return Ok(0);
            };
            if out.exists() && !force {
                anyhow::bail!(
                    "{} already exists; pass --force to overwrite it",
                    out.display()
                );
            }
            // What init writes must validate as written.
            starter.validate(&out).map_err(|e| {
                anyhow::anyhow!(
                    "the pipeline init made for {} does not validate, so it was not written: {e}",
                    out.display()
                )
            })?;
            std::fs::write(&out, text).map_err(|e| rowshift::Error::io(&out, e))?;
            println!(
                "wrote {}; next: rowshift dry-run {}",
                out.display(),
                out.display()
            );
            Ok(0)
        }
        Command::DryRun {
            pipeline,
            sample,
            random,
            seed,
            sample_file,
            preview,
            json,
        } => {
            let mode = match (sample_file, random) {
                (Some(f), _) => run::SampleMode::File(f),
                (None, true) => run::SampleMode::Random(seed.unwrap_or_else(clock_seed)),
                (None, false) => run::SampleMode::First,
            };
            let opts = run::DryRunOptions {
                sample: sample as usize,
                mode,
                preview,
            };
            let report = run::dry_run(Pipeline::load(&pipeline)?, &opts)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report::dry_run_text(&report));
            }
            Ok(if report.would_fail { 1 } else { 0 })
        }
        Command::Run {
            pipeline,
            json,
            parallel,
            chunk_rows,
            fail_fast,
            quiet,
            restart,
            lock_timeout,
            worker,
            lease_seconds,
        } => {
            let opts = RunOptions {
                parallel: parallel.map(|p| p as usize),
                chunk_rows,
                fail_fast,
                restart,
                lock_wait: Duration::from_secs(lock_timeout),
                worker,
                lease: lease_seconds.map(Duration::from_secs),
                ..RunOptions::default()
            };
            run_command(&pipeline, json, quiet, opts)
        }
        Command::Retry {
            pipeline,
            chunk,
            rejects,
            json,
            quiet,
            lock_timeout,
        } => {
            let lock_wait = Duration::from_secs(lock_timeout);
            if rejects {
                let plan = load(&pipeline)?;
                let sink = plan.open_sink()?;
                let report = run::requeue_rejects(&plan, sink.as_ref(), lock_wait)?;
                for failure in &report.failures {
                    eprintln!("error: {}", rowshift::config::redact(failure));
                }
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    println!(
                        "rowshift: {} quarantined rows retried -> {}\n  written  {}\n  filtered {}\n  still rejected {} (kept with their new reason)\n  gone from the source {}",
                        report.rows,
                        sink.quarantine(),
                        report.written,
                        report.filtered,
                        report.still_rejected,
                        report.gone
                    );
                    for change in &report.accepted_changes {
                        println!(
                            "  accepted {change} (it only widens what passes; recorded in the checkpoint)"
                        );
                    }
                    if report.unmatched > 0 {
                        println!(
                            "  kept: {} under a key that names several source rows, none equal to the row as stored",
                            report.unmatched
                        );
                    }
                    if !report.failures.is_empty() {
                        println!(
                            "  chunks whose retry failed a check {} (nothing of them changed; errors above)",
                            report.failures.len()
                        );
                    }
                }
                return Ok(
                    if report.still_rejected > 0 || !report.failures.is_empty() {
                        1
                    } else {
                        0
                    },
                );
            }
            let opts = RunOptions {
                only: (!chunk.is_empty()).then_some(chunk),
                failed_only: true,
                lock_wait,
                ..RunOptions::default()
            };
            run_command(&pipeline, json, quiet, opts)
        }
        Command::Verify {
            pipeline,
            repair,
            json,
            lock_timeout,
        } => {
            let plan = load(&pipeline)?;
            let sink = plan.open_sink()?;
            let report = run::verify(
                &plan,
                sink.as_ref(),
                repair,
                Duration::from_secs(lock_timeout),
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report::verify_text(&report, &sink.describe()));
            }
            Ok(report.exit_code())
        }
        Command::Status { pipeline, json } => {
            let loaded = Pipeline::load(&pipeline)?;
            let report = run::status(&loaded)?;
            let capture = if loaded.online.enabled {
                let plan = rowshift::online::plan_for_commands(loaded)?;
                let sink = plan.open_sink()?;
                Some(rowshift::online::status(&plan, sink.as_ref())?)
            } else {
                None
            };
            if json {
                let mut value = serde_json::to_value(&report)?;
                if let (Some(c), Some(map)) = (&capture, value.as_object_mut()) {
                    map.insert("online".into(), serde_json::to_value(c)?);
                }
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print!("{}", report::status_text(&report));
                if let Some(c) = &capture {
                    print!("{}", online::status_text(c));
                }
            }
            Ok(0)
        }
        Command::Cutover {
            pipeline,
            json,
            lock_timeout,
        } => online::cutover(&pipeline, json, lock_timeout),
        Command::Finalize { pipeline } if migrate::is_set(&pipeline) => {
            migrate::finalize(&pipeline)
        }
        Command::Finalize { pipeline } => online::finalize(&pipeline),
        Command::Catchup {
            pipeline,
            json,
            lock_timeout,
        } => online::catch_up(&pipeline, json, lock_timeout),
        Command::Pause { pipeline } => online::pause(&pipeline),
        Command::Resume { pipeline } => online::resume(&pipeline),
        Command::Report { pipeline, output } => run_report::report(&pipeline, output.as_deref()),
    }
}

fn run_command(
    pipeline: &Path,
    json: bool,
    quiet: bool,
    mut opts: RunOptions,
) -> anyhow::Result<i32> {
    let cancel = Arc::new(AtomicBool::new(false));
    opts.cancel = Some(cancel.clone());
    // First Ctrl-C: start no new chunk, let those in flight commit. Second: stop at once;
    // uncommitted chunks roll back and are redone on resume.
    let presses = Arc::new(AtomicUsize::new(0));
    let _ = ctrlc::set_handler(move || {
        if presses.fetch_add(1, Ordering::SeqCst) == 0 {
            cancel.store(true, Ordering::SeqCst);
            // Long operations inside a chunk (the search for refused rows) stop too.
            rowshift::runtime::request_cancel();
            eprintln!(
                "stopping: chunks in flight will finish (Ctrl-C again to abort at once; the run can be resumed)"
            );
        } else {
            eprintln!("aborted; run again to resume");
            std::process::exit(130);
        }
    });
    let plan = load(pipeline)?;
    let sink = plan.open_sink()?;
    let observer: Box<dyn run::Observer> = if quiet {
        Box::new(run::NoopObserver)
    } else if std::io::stderr().is_terminal() {
        Box::new(progress::Bars::new())
    } else {
        Box::new(progress::Lines)
    };
    let online = if plan.pipeline.online.enabled {
        let o = Arc::new(rowshift::online::Online::open(&plan, opts.cancel.clone())?);
        opts.hooks = Some(o.clone());
        Some(o)
    } else {
        None
    };
    let summary = run::run(&plan, sink.as_ref(), observer.as_ref(), &opts)?;
    let online = online.map(|o| o.report());
    if json {
        let mut value = serde_json::to_value(&summary)?;
        if let (Some(o), Some(map)) = (&online, value.as_object_mut()) {
            map.insert("online".into(), serde_json::to_value(o)?);
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_summary(&summary, sink.describe());
        if let Some(o) = &online {
            print!("{}", online::report_text(o));
        }
    }
    Ok(summary.exit_code())
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

fn load(path: &Path) -> rowshift::Result<Plan> {
    Plan::build(Pipeline::load(path)?)
}

fn print_summary(s: &Summary, target: String) {
    let status = match (s.interrupted, s.failures.is_empty(), s.state.quarantined) {
        (true, _, _) => "INTERRUPTED",
        (_, false, _) => "FAILED",
        _ if s.state.chunks_done < s.state.chunks_total => "not done",
        _ if !s.post_load.is_empty() => "loaded, but its declared indexes or constraints failed",
        (_, true, 0) => "done",
        _ => "done with rejected rows",
    };
    println!("rowshift: {} {status} -> {target}", s.pipeline);
    println!(
        "  chunks  {} done, {} failed, {} pending, {} skipped as done by an earlier run, {} planned",
        s.chunks_done, s.chunks_failed, s.chunks_pending, s.chunks_skipped, s.chunks_total
    );
    println!(
        "  rows    {} read, {} written, {} filtered, {} rejected by this run",
        s.rows.read, s.rows.written, s.rows.filtered, s.rows.rejected
    );
    println!("  state   {}", s.state);
    for change in &s.accepted_changes {
        println!("  accepted {change} (it only widens what passes; recorded in the checkpoint)");
    }
    println!(
        "  time    {:.2}s, {:.0} rows/s",
        s.seconds, s.rows_per_second
    );
    if let Some(rss) = s.peak_rss_bytes {
        println!("  memory  {:.1} MiB peak", rss as f64 / (1024.0 * 1024.0));
    }
    let checksum = format!(
        "checksum {} over the {} done chunks",
        s.checksum, s.state.chunks_done
    );
    if s.verified {
        println!(
            "  checks  conservation on every chunk; read-back of every chunk took {:.2}s of worker time ({checksum})",
            s.verify_seconds
        );
    } else {
        println!(
            "  checks  conservation on every chunk; read-back off (verify = \"off\") ({checksum})"
        );
    }
    for w in &s.warnings {
        println!(
            "  warning {} × {} (written anyway: policy = \"warn\")\n      e.g. {}",
            w.count, w.reason, w.example
        );
    }
    for r in &s.rejects {
        println!(
            "  rejected {} × {}\n      e.g. {}",
            r.count, r.reason, r.example
        );
    }
    if s.state.quarantined > 0 {
        println!(
            "  rejected rows are kept in {}; fix and run `rowshift retry --rejects`",
            s.quarantine
        );
    }
    for f in &s.failures {
        println!("  failed  {}: {}", f.range, f.line());
    }
    for p in &s.post_load {
        println!("  not built {p}");
    }
    if !s.post_load.is_empty() {
        println!(
            "  the rows stay loaded; fix them (or the declaration) and run the same command again to build the rest"
        );
    }
    if s.chunks_pending > 0 || !s.failures.is_empty() {
        println!(
            "  run the same command again to resume, or `rowshift retry` for the failed chunks"
        );
    }
    if !s.failures.is_empty() || !s.post_load.is_empty() {
        println!("{EXIT_CODES}");
    }
}
