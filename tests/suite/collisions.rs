//! Two runs of one pipeline at once, runs killed with SIGKILL, and the checkpoint's state
//! changes under them: rows are written exactly once whatever else runs, a second run is
//! refused naming the one that holds the pipeline, and a loser's marks never overwrite a
//! winner's. Each test works in a target of its own (a schema, a database, a temporary
//! folder), so tests run in parallel.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    MyDb, PgSchema, ServerDb, Workspace, my_quote, pg_quote, pg_url, sqlite_exec, sqlite_rows,
};

/// Tries per scenario: the issue's bar. Each try is small (60 rows).
const TRIES: usize = 20;

/// Rows in the source.
const ROWS: usize = 60;

/// Where a test's runs write.
enum Target {
    Sqlite,
    Postgres(PgSchema),
    Mysql(MyDb),
}

impl Target {
    fn postgres(tag: &str) -> Target {
        Target::Postgres(PgSchema::new(tag))
    }

    /// A schema that does not exist yet (dropped when the test ends): runs that start
    /// together all create it.
    fn postgres_new(tag: &str) -> Target {
        Target::Postgres(ServerDb::create(
            &pg_url(),
            "ROWSHIFT_PG_URL",
            tag,
            pg_quote,
            "SELECT 1",
            "DROP SCHEMA IF EXISTS {} CASCADE",
        ))
    }

    fn mysql(tag: &str) -> Target {
        Target::Mysql(MyDb::new(tag))
    }

    /// The `[target]` lines for table `table` (file `<table>.db` for SQLite).
    fn toml(&self, table: &str) -> String {
        match self {
            Target::Sqlite => format!("url = \"sqlite://../out/{table}.db\"\ntable = \"{table}\""),
            Target::Postgres(pg) => format!(
                "url = \"{}\"\nschema = \"{}\"\ntable = \"{table}\"",
                pg_url(),
                pg.name
            ),
            Target::Mysql(my) => format!("url = \"{}\"\ntable = \"{table}\"", my.url()),
        }
    }

    /// Rows, and distinct ids, in `table`.
    fn counts(&self, ws: &Workspace, table: &str) -> (usize, usize) {
        let rows = match self {
            Target::Sqlite => sqlite_rows(
                &ws.path(&format!("out/{table}.db")),
                &format!("SELECT count(*), count(DISTINCT id) FROM \"{table}\""),
            ),
            Target::Postgres(pg) => pg.rows(&format!(
                "SELECT count(*)::text, count(DISTINCT id)::text FROM {}.\"{table}\"",
                pg_quote(&pg.name)
            )),
            Target::Mysql(my) => my.rows(&format!(
                "SELECT CAST(count(*) AS CHAR), CAST(count(DISTINCT id) AS CHAR) FROM {}.`{table}`",
                my_quote(&my.name)
            )),
        };
        (rows[0][0].parse().unwrap(), rows[0][1].parse().unwrap())
    }
}

/// A SQLite source of [`ROWS`] rows, `id` 1 to 60 and a name.
fn source(ws: &Workspace) {
    sqlite_exec(
        &ws.path("samples/collide.db"),
        &format!(
            "CREATE TABLE src (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
             INSERT INTO src SELECT i, 'name ' || i FROM n;"
        ),
    );
}

/// A pipeline `name` writing table `name`: chunks of 10 rows, a target with or without a
/// primary key, replaced when a fresh run starts (as in the issue's reproducer).
fn pipeline(ws: &Workspace, target: &Target, name: &str, pk: bool) -> String {
    ws.write(
        &format!("pipelines/{name}.toml"),
        &format!(
            r#"name = "{name}"
[source]
url = "sqlite://../samples/collide.db"
table = "src"
key = "id"
[target]
{target}
if_exists = "replace"
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = {pk} }}
name = {{ type = "text", expr = "name" }}
[chunks]
rows = 10
parallel = 2
"#,
            target = target.toml(name)
        ),
    )
}

/// Starts `rowshift run` of `pipeline`, each chunk pausing `pause_ms` before its commit.
fn start(ws: &Workspace, pipeline: &str, pause_ms: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rowshift"))
        .args(["run", pipeline, "--quiet"])
        .current_dir(ws.path("."))
        .env("ROWSHIFT_FAULT", format!("pause={pause_ms}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A finished run: exit code and what it printed.
struct Ended {
    pid: u32,
    code: i32,
    text: String,
}

/// Waits for `child`, which must end within a minute: a run never hangs.
fn wait(mut child: Child) -> Ended {
    let pid = child.id();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("run {pid} still running after 60s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    Ended {
        pid,
        code: out.status.code().unwrap_or(-1),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn status(ws: &Workspace, pipeline: &str) -> serde_json::Value {
    let out = ws.rowshift(&["status", pipeline, "--json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

/// Runs `pipeline` and kills it with SIGKILL once a chunk is done and the next is in
/// flight: it leaves a checkpoint with done chunks and a running one.
fn kill_midway(ws: &Workspace, pipeline: &str) {
    let mut child = start(ws, pipeline, 150);
    let t0 = Instant::now();
    loop {
        let s = status(ws, pipeline);
        if s["chunks"]["done"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no chunk done after 30s: {s}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Nothing holds the pipeline now: running chunks are those of a dead run. A database
    // server may still be finishing what the dead process sent last (a COMMIT already in
    // its socket), so the checkpoint is read once it has stopped changing.
    let t0 = Instant::now();
    let mut s = status(ws, pipeline);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let again = status(ws, pipeline);
        if again == s && again["running"]["state"] != "live" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the checkpoint still changes 15 s after the kill: {again}"
        );
        s = again;
    }
    assert_ne!(s["running"]["state"], "live", "{s}");
    if s["chunks"]["running"].as_u64().unwrap() > 0 {
        assert_eq!(s["running"]["state"], "interrupted", "{s}");
        let text = ws.rowshift(&["status", pipeline]).stdout;
        assert!(text.contains("interrupted (no live process)"), "{text}");
    }
}

/// Starts two runs of `pipeline` at the same moment, each holding the pipeline for a
/// while, and checks that one does the work and the other is refused naming it (or, if
/// they did not overlap, finds it done), and that every row is written exactly once.
/// Returns whether one was refused.
fn collide(ws: &Workspace, target: &Target, pipeline: &str, table: &str) -> bool {
    let a = start(ws, pipeline, 60);
    let b = start(ws, pipeline, 60);
    let (a, b) = (wait(a), wait(b));
    let mut refused = false;
    for (me, other) in [(&a, &b), (&b, &a)] {
        match me.code {
            0 => assert!(me.text.contains(" done -> "), "{}", me.text),
            _ => {
                refused = true;
                assert_eq!(me.code, 2, "{}\n---\n{}", me.text, other.text);
                let want = format!(
                    "is held by another run: host {}, pid {}, since ",
                    host(),
                    other.pid
                );
                assert!(me.text.contains(&want), "{want}: {}", me.text);
                assert!(
                    me.text
                        .contains("pass --lock-timeout SECONDS to wait for it"),
                    "{}",
                    me.text
                );
                assert_eq!(other.code, 0, "{}", other.text);
            }
        }
    }
    assert_eq!(
        target.counts(ws, table),
        (ROWS, ROWS),
        "{}\n---\n{}",
        a.text,
        b.text
    );
    let s = status(ws, pipeline);
    assert_eq!(s["chunks"]["done"], 6, "{s}");
    assert_eq!(s["running"]["state"], "idle", "{s}");
    refused
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// [`TRIES`] collisions of two runs, fresh (`resume` false: both start a new run) or
/// resuming a run killed with SIGKILL, into a table with or without a primary key.
/// `target` gives each try's target: a PostgreSQL schema of a fresh try's own, which
/// the runs create, or one target for all.
fn never_duplicates(target: &dyn Fn(bool) -> Target, pk: bool, resume: bool) {
    let ws = Workspace::new();
    source(&ws);
    std::fs::create_dir_all(ws.path("out")).unwrap();
    let shared = target(false);
    let mut refusals = 0;
    for i in 0..TRIES {
        let own = (!resume).then(|| target(true));
        let target = own.as_ref().unwrap_or(&shared);
        let name = format!("c{}{}_{i}", u8::from(pk), u8::from(resume));
        let p = pipeline(&ws, target, &name, pk);
        if resume {
            kill_midway(&ws, &p);
        }
        refusals += usize::from(collide(&ws, target, &p, &name));
    }
    // Two runs started together overlap: most tries see a refusal.
    assert!(
        refusals >= TRIES / 2,
        "only {refusals} refusals in {TRIES} tries"
    );
}

fn sqlite(_fresh: bool) -> Target {
    Target::Sqlite
}

fn postgres(fresh: bool) -> Target {
    match fresh {
        true => Target::postgres_new("rs_collide_new"),
        false => Target::postgres("rs_collide"),
    }
}

/// One database for every try: the runs' URL names it, so it exists before they start.
fn mariadb(_fresh: bool) -> Target {
    Target::mysql("rs_collide")
}

#[test]
fn two_fresh_runs_at_once_on_sqlite_write_every_row_once() {
    never_duplicates(&sqlite, true, false);
    never_duplicates(&sqlite, false, false);
}

#[test]
fn two_resuming_runs_at_once_on_sqlite_write_every_row_once() {
    never_duplicates(&sqlite, true, true);
    never_duplicates(&sqlite, false, true);
}

#[test]
fn two_fresh_runs_at_once_on_postgres_write_every_row_once() {
    never_duplicates(&postgres, true, false);
    never_duplicates(&postgres, false, false);
}

#[test]
fn two_resuming_runs_at_once_on_postgres_write_every_row_once() {
    never_duplicates(&postgres, true, true);
    never_duplicates(&postgres, false, true);
}

#[test]
fn two_fresh_runs_at_once_on_mariadb_write_every_row_once() {
    never_duplicates(&mariadb, true, false);
    never_duplicates(&mariadb, false, false);
}

#[test]
fn two_resuming_runs_at_once_on_mariadb_write_every_row_once() {
    never_duplicates(&mariadb, true, true);
    never_duplicates(&mariadb, false, true);
}

/// A run that waits for the lock says so, and runs once the holder is gone.
#[test]
fn a_run_waits_for_the_lock_with_a_bound_and_says_so() {
    let ws = Workspace::new();
    source(&ws);
    let target = Target::postgres("rs_lockwait");
    let p = pipeline(&ws, &target, "w", true);
    let holder = start(&ws, &p, 300);
    std::thread::sleep(Duration::from_millis(200));
    let out = ws.rowshift(&["run", &p, "--lock-timeout", "30"]);
    let holder = wait(holder);
    assert_eq!(holder.code, 0, "{}", holder.text);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "another run holds this pipeline (host {}, pid {}, since ",
            host(),
            holder.pid
        )) && out
            .stderr
            .contains("waiting up to 30.00s for it to end (--lock-timeout)"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("all 6 chunks done"), "{}", out.stdout);
    assert_eq!(target.counts(&ws, "w"), (ROWS, ROWS));
}

/// Ctrl-C (here SIGINT) while a run waits for the lock ends the wait within a poll: the
/// waiter exits 2 saying what it waited for, and the holder goes on undisturbed.
#[test]
fn a_run_waiting_for_the_lock_stops_at_ctrl_c() {
    let ws = Workspace::new();
    source(&ws);
    let target = Target::postgres("rs_lockint");
    let p = pipeline(&ws, &target, "w", true);
    let holder = start(&ws, &p, 1500);
    std::thread::sleep(Duration::from_millis(500));
    let waiter = Command::new(env!("CARGO_BIN_EXE_rowshift"))
        .args(["run", &p, "--lock-timeout", "120"])
        .current_dir(ws.path("."))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let sent = Instant::now();
    let status = Command::new("kill")
        .args(["-INT", &waiter.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let waiter = wait(waiter);
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "the waiter took {:?} to stop",
        sent.elapsed()
    );
    assert_eq!(waiter.code, 2, "{}", waiter.text);
    assert!(
        waiter.text.contains("interrupted while waiting for")
            && waiter.text.contains("which another run holds (host ")
            && waiter.text.contains("this run touched nothing"),
        "{}",
        waiter.text
    );
    let holder = wait(holder);
    assert_eq!(holder.code, 0, "{}", holder.text);
    assert_eq!(target.counts(&ws, "w"), (ROWS, ROWS));
}

/// The loser's done and failed marks change nothing of the winner's, in the stores of
/// PostgreSQL and MariaDB targets (the SQLite store has a unit test of its own).
fn losers_marks(target: Target) {
    use rowshift::checkpoint::{ChunkState, DoneMark, is_claim_lost};
    let ws = Workspace::new();
    source(&ws);
    let p = pipeline(&ws, &target, "marks", true);
    let plan = rowshift::plan::Plan::build(rowshift::config::Pipeline::load(&ws.path(&p)).unwrap())
        .unwrap();
    let sink = plan.open_sink().unwrap();
    let store = sink.checkpoint_store("marks").unwrap();
    let chunks = plan.source.plan(10).unwrap();
    store.create("fp", &[], &chunks).unwrap();
    let mark = |claim, written| DoneMark {
        chunk: 0,
        counts: rowshift::chunk::ChunkCounts {
            read: written,
            written,
            filtered: 0,
            rejected: 0,
        },
        seconds: 0.1,
        checksum: written,
        claim,
        verify_seconds: 0.0,
        finished_ms: 0,
    };
    assert!(store.claim(0, 11).unwrap());
    assert!(store.claim(0, 22).unwrap());
    store.finish(&mark(22, 10)).unwrap();
    let e = store.finish(&mark(11, 99)).unwrap_err();
    assert!(is_claim_lost(&e), "{e}");
    store.fail(0, 11, "the loser failed").unwrap();
    assert!(
        !store.claim(0, 33).unwrap(),
        "a done chunk is never claimed again"
    );
    let c = store.load().unwrap().unwrap();
    assert_eq!(c.chunks[0].state, ChunkState::Done);
    assert_eq!(c.chunks[0].counts.written, 10);
    assert_eq!(c.chunks[0].last_error, None);
    assert_eq!(c.chunks[1].state, ChunkState::Pending);
    store.close().unwrap();
}

#[test]
fn a_losers_marks_never_overwrite_the_winners_on_postgres() {
    losers_marks(Target::postgres("rs_marks"));
}

#[test]
fn a_losers_marks_never_overwrite_the_winners_on_mariadb() {
    losers_marks(Target::mysql("rs_marks"));
}

/// A SQLite target commits a chunk's rows before it reads them back and marks the chunk
/// done: when another run took the chunk over in between, the mark is refused, the run
/// says so, and the next run redoes the chunk without writing its rows twice.
#[test]
fn a_sqlite_chunk_taken_over_after_its_commit_is_not_marked_done_and_is_redone() {
    let ws = Workspace::new();
    let out = ws.rowshift_env(
        &["run", "pipelines/quickstart.toml", "--quiet"],
        &[(
            "ROWSHIFT_FAULT_SQL",
            "2:committed:UPDATE _rowshift_chunks SET claim = 'another run' WHERE id = 2",
        )],
    );
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(
            "chunks 2 were written and read back, but another run took this chunk over (its claim in the checkpoint is no longer this run's), so they were not marked done"
        ),
        "{}",
        out.stderr
    );
    let s = status(&ws, "pipelines/quickstart.toml");
    assert_eq!(s["chunks"]["done"], 4, "{s}");
    let out = ws.rowshift(&["run", "pipelines/quickstart.toml", "--quiet"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        sqlite_rows(
            &ws.path("out/shop_v2.db"),
            "SELECT count(*), count(DISTINCT id) FROM users_v2"
        )[0],
        ["903", "903"]
    );
}
