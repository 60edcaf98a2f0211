//! `pg_online`: what an online move (docs/online.md) costs on PostgreSQL, in one run:
//!
//! - the copy of the `pg_pg` job with `[online] enabled = true` against the same job
//!   without, in alternating pairs (target: at most 15% slower by the medians);
//! - the cut-over's lock window (`cutover.lock_ms` of `rowshift cutover --json`) while a
//!   writer updates a few hundred rows a second (target: under 1 s by the median), and
//!   the writer's slowest statement while the cut-over ran;
//! - the capture's cost to a writer: one-row updates by key from two connections for a
//!   fixed time, with the capture's trigger on the table against without.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use sqlx::Connection as _;

use super::*;

/// The target of the copies.
const COPY_SCHEMA: &str = "rowshift_bench_online";
/// The cut-over's source table `items` and its target `items_v2`: one schema, so that the
/// cut-over swaps them.
const CUT_SCHEMA: &str = "rowshift_bench_online_cut";
/// Rows of `items`: the lock window does not grow with the table (what is drained under
/// the lock is what the writer wrote since the last catch-up), so a small one keeps the
/// scenario short.
const CUT_ROWS: i64 = 100_000;
/// Target: the copy with capture on at most this much slower than without.
const TARGET_CAPTURE_SLOWDOWN: f64 = 0.15;
/// Target: the cut-over's lock window, median, in milliseconds.
const TARGET_LOCK_MS: f64 = 1000.0;
/// The writer during the cut-over: one statement, then this pause (a few hundred a
/// second).
const STEADY_PAUSE: Duration = Duration::from_millis(2);
/// The writer whose transactions per second are counted: connections, and how long.
const POUND_CLIENTS: usize = 2;
const POUND_FOR: Duration = Duration::from_secs(5);

/// Pairs of copies (capture off, on) and cut-over runs: `ROWSHIFT_BENCH_ONLINE_PAIRS`,
/// default 5.
fn online_pairs() -> usize {
    std::env::var("ROWSHIFT_BENCH_ONLINE_PAIRS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(5)
}

/// Triggers (not internal ones) on `table`, a quoted qualified name.
fn triggers_on(pg: &Pg, table: &str) -> Result<u64, String> {
    pg.text(&format!(
        "SELECT count(*)::text FROM pg_trigger WHERE tgrelid = {}::regclass AND NOT tgisinternal",
        pg_literal(table)
    ))?
    .and_then(|n| n.parse().ok())
    .ok_or_else(|| format!("no trigger count for {table}"))
}

/// `rowshift <args>` to the end; its stdout, or why it failed.
fn rowshift_ok(args: &[&str]) -> Result<String, String> {
    let out = Command::new(ROWSHIFT)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot start {ROWSHIFT}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "rowshift {} exited with {}: {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The PostgreSQL scenario of online moves; see the module's comment.
pub(super) fn bench_pg_online(
    config: &Config,
    pg: &Pg,
    data: &Dataset,
) -> Result<(Vec<Measurement>, bool), String> {
    let dir = fresh_run_dir(&config.data_dir, &format!("pg_online_{}", data.rows))?;
    let (measured, mut fine) = copy_with_capture(config, pg, data, &dir)?;
    fine &= cutover_with_writer(config, pg, &dir)?;
    Ok((measured, fine))
}

/// The `pg_pg` job with capture off and on, alternating; both must write the same rows,
/// and the capture's triggers are on the source during an "on" run only (`finalize`
/// removes them after it).
fn copy_with_capture(
    config: &Config,
    pg: &Pg,
    data: &Dataset,
    dir: &Path,
) -> Result<(Vec<Measurement>, bool), String> {
    let source = ensure_pg_source(pg, data)?;
    let src = format!("{}.{}", quote(PG_SOURCE_SCHEMA), quote(&source));
    let pipeline = |name: &str, online: &str| {
        format!(
            "name = \"{name}\"\n\n[source]\nurl = {url}\nschema = {}\ntable = {}\nkey = \"id\"\n\n[target]\nurl = {url}\nschema = {}\ntable = \"users_v2\"\n\n{TRANSFORMS}\n[chunks]\nrows = {CHUNK_ROWS}\nparallel = {}\n{online}",
            toml_string(PG_SOURCE_SCHEMA),
            toml_string(&source),
            toml_string(COPY_SCHEMA),
            config.threads,
            url = toml_string(&config.pg_url),
        )
    };
    let off = dir.join("capture_off.toml");
    write_file(&off, &pipeline("bench_online_off", ""))?;
    let on = dir.join("capture_on.toml");
    write_file(
        &on,
        &pipeline("bench_online_on", "\n[online]\nenabled = true\n"),
    )?;
    if triggers_on(pg, &src)? != 0 {
        return Err(format!(
            "{src} has triggers before the scenario: an earlier run left its capture? (`rowshift finalize` on its pipeline, or drop them)"
        ));
    }
    pg.warm(&src)?;
    let target = format!("{}.{}", quote(COPY_SCHEMA), quote("users_v2"));
    let mut fine = true;
    let mut output: Option<(u64, String)> = None;
    let mut run = |file: &Path, label: &str, capture: bool| -> Result<(f64, RunSummary), String> {
        pg.fresh_schema(COPY_SCHEMA)?;
        pg.checkpoint();
        let s = run_rowshift_on(file, true)?;
        fine &= s.run.status.success() && s.check(label, data);
        let triggers = triggers_on(pg, &src)?;
        if capture {
            // The row trigger and the TRUNCATE trigger; then `finalize` drops them and
            // the change log, so the other contender reads a table without them.
            if triggers != 2 {
                println!("  !!! {label}: {triggers} triggers on {src} after the run, expected 2");
                fine = false;
            }
            let file = file.to_string_lossy();
            rowshift_ok(&["finalize", &file])?;
        }
        if triggers_on(pg, &src)? != 0 {
            return Err(format!(
                "{label}: the capture's triggers are still on {src}"
            ));
        }
        let got = pg.checksum(&target, PG_PG_ROW)?;
        match &output {
            None => output = Some(got),
            Some(first) if *first != got => {
                println!(
                    "  !!! MISMATCH: {label} wrote {} rows (checksum {}), an earlier run {} ({})",
                    fmt_int(got.0),
                    got.1,
                    fmt_int(first.0),
                    first.1
                );
                fine = false;
            }
            Some(_) => {}
        }
        Ok((s.run.wall.as_secs_f64(), s))
    };
    let (mut offs, mut ons) = (Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..online_pairs() {
        let (wall, off_summary) = run(&off, "capture off", false)?;
        offs.push(wall);
        let (wall, on_summary) = run(&on, "capture on", true)?;
        ons.push(wall);
        last = Some((off_summary, on_summary));
    }
    let (off_summary, on_summary) = last.expect("at least one pair");
    if let Some((rows, sum)) = &output {
        if *rows == data.kept {
            println!(
                "  output: every run, capture on or off, wrote the same {} rows (checksum {sum})",
                fmt_int(*rows)
            );
        } else {
            println!(
                "  !!! MISMATCH: the runs wrote {} rows, expected {}",
                fmt_int(*rows),
                fmt_int(data.kept)
            );
            fine = false;
        }
    }
    let shown = |v: &[f64]| {
        v.iter()
            .map(|t| format!("{t:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "  copy, capture off: {}  |  capture on: {}",
        shown(&offs),
        shown(&ons)
    );
    // Taken before `median` sorts them: the pairs in the order they ran.
    let mut pairs: Vec<f64> = ons.iter().zip(&offs).map(|(on, off)| on / off).collect();
    let (off_wall, on_wall) = (median(&mut offs), median(&mut ons));
    let ratio = on_wall / off_wall;
    println!(
        "  medians of {} pairs: capture off {off_wall:.2}s ({} rows/s), capture on {on_wall:.2}s ({} rows/s) = x{ratio:.2} the time, {:+.1}%  (target <= +{:.0}%: {})",
        offs.len(),
        fmt_int((data.rows as f64 / off_wall).round() as u64),
        fmt_int((data.rows as f64 / on_wall).round() as u64),
        100.0 * (ratio - 1.0),
        100.0 * TARGET_CAPTURE_SLOWDOWN,
        if ratio <= 1.0 + TARGET_CAPTURE_SLOWDOWN {
            "met"
        } else {
            "NOT MET"
        }
    );
    println!(
        "  each pair's capture on / off: {}; median x{:.2}",
        shown(&pairs),
        median(&mut pairs)
    );
    let mut m_off = off_summary.measurement("capture off", data.rows);
    m_off.wall = off_wall;
    report_line(&m_off);
    let mut m_on = on_summary.measurement("capture on", data.rows);
    m_on.wall = on_wall;
    m_on.ratio_wall = Some(off_wall / on_wall);
    report_line(&m_on);
    Ok((vec![m_off, m_on], fine))
}

/// One statement of the steady writer: when it started, how long it took.
type Timed = (Instant, Duration);

/// A writer thread on its own connection: `UPDATE <table> SET n = n + 1 WHERE id = $1`
/// for random ids in `1..=rows`, with `pause` between statements (none: as fast as it
/// goes), until `stop`. Returns every statement's start and duration, or the first
/// error.
fn spawn_writer(
    url: &str,
    table: &str,
    rows: i64,
    seed: u64,
    pause: Option<Duration>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Result<Vec<Timed>, String>> {
    let (url, sql) = (
        url.to_string(),
        format!("UPDATE {table} SET n = n + 1 WHERE id = $1"),
    );
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&url)
                .await
                .map_err(|e| format!("the writer cannot connect: {e}"))?;
            let mut rng = Rng(seed);
            let mut done = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let id = 1 + rng.below(rows as u64) as i64;
                let t0 = Instant::now();
                let r = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(id)
                    .execute(&mut conn)
                    .await
                    .map_err(|e| format!("{sql} (id {id}): {e}"))?;
                if r.rows_affected() != 1 {
                    return Err(format!(
                        "{sql} (id {id}) updated {} rows",
                        r.rows_affected()
                    ));
                }
                done.push((t0, t0.elapsed()));
                if let Some(p) = pause {
                    tokio::time::sleep(p).await;
                }
            }
            Ok(done)
        })
    })
}

/// Single-row updates by key on `table` from [`POUND_CLIENTS`] connections for
/// [`POUND_FOR`]: the statements run, the transactions per second, and the share of the
/// machine's CPU that other processes (not the server, not this one) used meanwhile.
fn pound(url: &str, table: &str) -> Result<(u64, f64, Option<f64>), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let (machine, server, own) = (machine_cpu(), server_cpu(), own_cpu());
    let t0 = Instant::now();
    let writers: Vec<_> = (0..POUND_CLIENTS)
        .map(|i| {
            spawn_writer(
                url,
                table,
                CUT_ROWS,
                0x9e37_79b9 + i as u64,
                None,
                stop.clone(),
            )
        })
        .collect();
    std::thread::sleep(POUND_FOR);
    stop.store(true, Ordering::SeqCst);
    let mut n = 0;
    for w in writers {
        n += w
            .join()
            .map_err(|_| "a writer thread panicked".to_string())??
            .len() as u64;
    }
    let wall = t0.elapsed().as_secs_f64();
    let noise = match (machine, machine_cpu(), server, server_cpu(), own, own_cpu()) {
        (Some(m0), Some(m1), Some(s0), Some(s1), Some(o0), Some(o1)) => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            Some((((m1 - m0) - (s1 - s0) - (o1 - o0)) / (wall * cores)).max(0.0))
        }
        _ => None,
    };
    Ok((n, n as f64 / wall, noise))
}

/// CPU seconds this process has used (user + system, `/proc/self/stat`). Linux only.
fn own_cpu() -> Option<f64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are the 14th and 15th fields, the 12th and 13th after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// What one cut-over run measured.
struct Cut {
    lock_ms: f64,
    /// The writer's slowest statement among those running while `rowshift cutover` ran.
    slowest_ms: f64,
    /// The writer's median statement over its whole run, for comparison.
    typical_ms: f64,
    /// Attempts at the lock (`cutover.attempts`).
    attempts: u64,
    /// The writer's statements a second over its whole run.
    rate: f64,
    tps_without: f64,
    tps_with: f64,
    /// Other processes' share of the CPU during the two writer measurements.
    noise: (Option<f64>, Option<f64>),
}

/// Runs of: a fresh `items` table; the writer's transactions per second without the
/// capture; `rowshift run` (copy with capture); the same with the capture's trigger on
/// the table; `rowshift cutover --json` while a steady writer runs; `finalize`. Checks
/// that the table under the name `items` holds every update of every writer.
fn cutover_with_writer(config: &Config, pg: &Pg, dir: &Path) -> Result<bool, String> {
    let file = dir.join("cutover.toml");
    write_file(
        &file,
        &format!(
            "name = \"bench_online_cut\"\n\n[source]\nurl = {url}\nschema = {schema}\ntable = \"items\"\nkey = \"id\"\n\n[target]\nurl = {url}\nschema = {schema}\ntable = \"items_v2\"\n\n[target.columns]\nid   = {{ type = \"bigint\", expr = \"id\", primary_key = true }}\nn    = {{ type = \"bigint\", expr = \"n\", nullable = false }}\nnote = {{ type = \"text\",   expr = \"upper(note)\" }}\n\n[chunks]\nrows = {CHUNK_ROWS}\nparallel = {}\n\n[online]\nenabled = true\n",
            config.threads,
            url = toml_string(&config.pg_url),
            schema = toml_string(CUT_SCHEMA),
        ),
    )?;
    let file_arg = file.to_string_lossy().into_owned();
    let items = format!("{}.{}", quote(CUT_SCHEMA), quote("items"));
    let mut fine = true;
    let mut cuts = Vec::new();
    for run in 0..online_pairs() {
        // A run killed before its finalize leaves its change log behind; a fresh run
        // empties it, and the schema goes here.
        pg.fresh_schema(CUT_SCHEMA)?;
        pg.exec(&format!(
            "CREATE TABLE {items} (id bigint PRIMARY KEY, n bigint NOT NULL, note text NOT NULL); \
             INSERT INTO {items} SELECT g, g % 1000, 'note ' || g FROM generate_series(1, {CUT_ROWS}) g"
        ))?;
        // Alone: VACUUM cannot run in the transaction block of a multi-statement query.
        pg.exec(&format!("VACUUM (ANALYZE) {items}"))?;
        let initial: i64 = (1..=CUT_ROWS).map(|g| g % 1000).sum();
        // Each writer measurement starts on a quiet server: the copy before the second
        // leaves autovacuum and the checkpointer work to do.
        pg.checkpoint();
        servers_settle();
        let (without, tps_without, noise_without) = pound(&config.pg_url, &items)?;
        let summary = run_rowshift_on(&file, true)?;
        if !summary.run.status.success() || summary.written != CUT_ROWS as u64 {
            return Err(format!(
                "the copy of {items} exited with {} and wrote {} rows, expected {CUT_ROWS}: {}",
                summary.run.status,
                summary.written,
                summary.run.stderr.trim()
            ));
        }
        pg.checkpoint();
        servers_settle();
        let (with, tps_with, noise_with) = pound(&config.pg_url, &items)?;

        let stop = Arc::new(AtomicBool::new(false));
        let writer = spawn_writer(
            &config.pg_url,
            &items,
            CUT_ROWS,
            0x51_7cc1_b727 + run as u64,
            Some(STEADY_PAUSE),
            stop.clone(),
        );
        let w0 = Instant::now();
        std::thread::sleep(Duration::from_millis(500));
        let c0 = Instant::now();
        let cut = run_measured(Command::new(ROWSHIFT).args(["cutover", &file_arg, "--json"]))
            .map_err(|e| format!("cannot start {ROWSHIFT}: {e}"))?;
        let c1 = Instant::now();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        let statements = writer
            .join()
            .map_err(|_| "the writer thread panicked".to_string())??;
        let rate = statements.len() as f64 / w0.elapsed().as_secs_f64();
        if !cut.status.success() {
            return Err(format!(
                "rowshift cutover exited with {}: {}{}",
                cut.status,
                cut.stdout.trim(),
                cut.stderr.trim()
            ));
        }
        let report: serde_json::Value = serde_json::from_str(cut.stdout.trim())
            .map_err(|e| format!("rowshift cutover printed no JSON ({e}): {}", cut.stdout))?;
        let c = &report["cutover"];
        if c["swapped"] != true {
            println!("  !!! the cut-over did not swap: {c}");
            fine = false;
        }
        let lock_ms = c["lock_ms"].as_f64().unwrap_or(f64::NAN);
        let attempts = c["attempts"].as_u64().unwrap_or(0);
        if statements.is_empty() {
            return Err("the writer ran no statement during the cut-over run".into());
        }
        let typical_ms = median(
            &mut statements
                .iter()
                .map(|(_, took)| took.as_secs_f64() * 1000.0)
                .collect::<Vec<_>>(),
        );
        let slowest_ms = statements
            .iter()
            .filter(|(start, took)| *start < c1 && *start + *took > c0)
            .map(|(_, took)| took.as_secs_f64() * 1000.0)
            .fold(0.0, f64::max);

        // Every update of every writer is in the table now named `items`: the ones before
        // the copy were copied, the later ones replayed or drained, or made in it after
        // the swap.
        let updates = without + with + statements.len() as u64;
        let got = pg
            .text(&format!(
                "SELECT count(*)::text || ' ' || sum(n)::text FROM {items}"
            ))?
            .unwrap_or_default();
        let want = format!("{CUT_ROWS} {}", initial + updates as i64);
        if got != want {
            println!(
                "  !!! MISMATCH: after the cut-over {items} holds (rows, sum of n) {got}, expected {want} ({updates} updates)"
            );
            fine = false;
        }
        let old = format!("{}.{}", quote(CUT_SCHEMA), quote("items__v1"));
        if pg
            .text(&format!("SELECT to_regclass({})::text", pg_literal(&old)))?
            .is_none()
        {
            println!("  !!! no {old} after the cut-over");
            fine = false;
        }
        rowshift_ok(&["finalize", &file_arg])?;
        cuts.push(Cut {
            lock_ms,
            slowest_ms,
            typical_ms,
            attempts,
            rate,
            tps_without,
            tps_with,
            noise: (noise_without, noise_with),
        });
    }

    let pick = |f: fn(&Cut) -> f64| -> (Vec<f64>, f64) {
        let v: Vec<f64> = cuts.iter().map(f).collect();
        let m = median(&mut v.clone());
        (v, m)
    };
    let shown = |v: &[f64], digits: usize| {
        v.iter()
            .map(|x| format!("{x:.digits$}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (locks, lock) = pick(|c| c.lock_ms);
    let (slow, slowest) = pick(|c| c.slowest_ms);
    let (_, rate) = pick(|c| c.rate);
    let (withouts, without) = pick(|c| c.tps_without);
    let (withs, with) = pick(|c| c.tps_with);
    // Each pair ran within seconds of each other, so the ratio of a pair is less exposed
    // to the machine's load than either figure.
    let (_, kept) = pick(|c| c.tps_with / c.tps_without);
    println!(
        "  cut-over of {} rows with a writer ({rate:.0} one-row updates a second): lock window {} ms, median {lock:.1} ms  (target < {TARGET_LOCK_MS:.0} ms: {})",
        fmt_int(CUT_ROWS as u64),
        shown(&locks, 1),
        if lock < TARGET_LOCK_MS {
            "met"
        } else {
            "NOT MET"
        }
    );
    let (_, typical) = pick(|c| c.typical_ms);
    let attempts: Vec<String> = cuts.iter().map(|c| c.attempts.to_string()).collect();
    println!(
        "  the writer's slowest statement while `rowshift cutover` ran: {} ms, median {slowest:.1} ms (its median statement {typical:.2} ms); lock attempts {}",
        shown(&slow, 1),
        attempts.join(" ")
    );
    let noise = |n: Option<f64>| n.map_or("?".into(), |n| format!("{:.0}%", 100.0 * n));
    let noises: Vec<String> = cuts
        .iter()
        .map(|c| format!("{}/{}", noise(c.noise.0), noise(c.noise.1)))
        .collect();
    println!(
        "  writer, {POUND_CLIENTS} connections, one-row updates by key for {}s: without the capture {} tps, with it {} tps (noise {}); medians {without:.0} and {with:.0} tps; median of the pairs' ratios x{kept:.2} = {:.1}% fewer with the capture",
        POUND_FOR.as_secs(),
        shown(&withouts, 0),
        shown(&withs, 0),
        noises.join(" "),
        100.0 * (1.0 - kept)
    );
    if cuts
        .iter()
        .any(|c| c.noise.0.is_some_and(|n| n > 0.10) || c.noise.1.is_some_and(|n| n > 0.10))
    {
        println!(
            "  WARNING: other processes used over 10% of the CPU during a writer measurement; its figures are not trustworthy"
        );
    }
    Ok(fine)
}
