//! `rowshift up` applying independent steps at the same time, on SQLite, PostgreSQL and
//! MariaDB: a set whose data steps share no table overlap in time (their history rows'
//! start and end say so), a step whose table references another's waits for it, the end
//! state is a sequential run's, a kill -9 while several steps move data leaves each one's
//! record saying where it stands, and the next `up` ends where a clean run ends. Each
//! server test works in a schema or database of its own.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{ServerDb, Workspace, my_url, pg_url, sqlite_exec, sqlite_rows};

/// Where a test's set applies.
enum Db {
    Sqlite(PathBuf),
    Pg(ServerDb<sqlx::Postgres>),
    My(ServerDb<sqlx::MySql>),
}

/// Rows of each source table: `alpha`, `beta` and `parent` are independent; `child`
/// references `parent`.
const ALPHA: &[(i64, &str)] = &[
    (1, "a1"),
    (2, "a2"),
    (3, "a3"),
    (4, "a4"),
    (5, "a5"),
    (6, "a6"),
];
const BETA: &[(i64, &str)] = &[(1, "b1"), (2, "b2"), (3, "b3"), (4, "b4"), (5, "b5")];
const PARENT: &[(i64, &str)] = &[(10, "p10"), (11, "p11"), (12, "p12"), (13, "p13")];
const CHILD: &[(i64, i64, &str)] = &[
    (100, 10, "c100"),
    (101, 10, "c101"),
    (102, 11, "c102"),
    (103, 12, "c103"),
    (104, 13, "c104"),
];

/// A workspace with the source `src.db` and one target, holding a set `set/` (and,
/// for comparisons, a second set `seq/` into a second target).
struct Fixture {
    ws: Workspace,
    dbs: Vec<Db>,
}

/// The tables the set fills, each with its columns as text, by key.
const TABLES: &[(&str, &str)] = &[
    ("alpha", "id, label"),
    ("beta", "id, label"),
    ("parent", "id, label"),
    ("child", "id, parent_id, label"),
];

impl Fixture {
    /// A source and `targets` targets of `kind`, each with its set (`set`, `seq`, ...).
    fn new(kind: &str, targets: usize) -> Fixture {
        let ws = Workspace::new();
        let mut sql = String::from(
            "CREATE TABLE alpha_src (id INTEGER PRIMARY KEY, label TEXT NOT NULL);
             CREATE TABLE beta_src (id INTEGER PRIMARY KEY, label TEXT NOT NULL);
             CREATE TABLE parent_src (id INTEGER PRIMARY KEY, label TEXT NOT NULL);
             CREATE TABLE child_src (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL, label TEXT NOT NULL);",
        );
        for (id, l) in ALPHA {
            sql.push_str(&format!("INSERT INTO alpha_src VALUES ({id}, '{l}');"));
        }
        for (id, l) in BETA {
            sql.push_str(&format!("INSERT INTO beta_src VALUES ({id}, '{l}');"));
        }
        for (id, l) in PARENT {
            sql.push_str(&format!("INSERT INTO parent_src VALUES ({id}, '{l}');"));
        }
        for (id, p, l) in CHILD {
            sql.push_str(&format!("INSERT INTO child_src VALUES ({id}, {p}, '{l}');"));
        }
        sqlite_exec(&ws.path("src.db"), &sql);
        let dbs = (0..targets)
            .map(|i| match kind {
                "sqlite" => Db::Sqlite(ws.path(&format!("target{i}.db"))),
                "pg" => Db::Pg(ServerDb::create(
                    &pg_url(),
                    "ROWSHIFT_PG_URL",
                    "steps",
                    |n| format!("\"{n}\""),
                    "CREATE SCHEMA {}",
                    "DROP SCHEMA IF EXISTS {} CASCADE",
                )),
                _ => Db::My(ServerDb::create(
                    &my_url(),
                    "ROWSHIFT_MYSQL_URL",
                    "steps",
                    |n| format!("`{n}`"),
                    "CREATE DATABASE {} DEFAULT CHARACTER SET utf8mb4",
                    "DROP DATABASE IF EXISTS {}",
                )),
            })
            .collect();
        let f = Fixture { ws, dbs };
        for i in 0..targets {
            f.write_set(i);
        }
        f
    }

    fn dir(i: usize) -> String {
        format!("set{i}")
    }

    /// `url` (and `schema`) lines naming target `i`.
    fn target_lines(&self, i: usize) -> String {
        match &self.dbs[i] {
            Db::Sqlite(_) => format!("url = \"sqlite://../target{i}.db\"\n"),
            Db::Pg(s) => format!("url = \"{}\"\nschema = \"{}\"\n", pg_url(), s.name),
            Db::My(s) => format!("url = \"{}\"\nschema = \"{}\"\n", my_url(), s.name),
        }
    }

    fn write(&self, i: usize, file: &str, text: &str) {
        let dir = self.ws.path(&Self::dir(i));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), text).unwrap();
    }

    /// A data step: `table` from `<table>_src`, 2 rows a chunk, one chunk at a time.
    fn pipeline(&self, i: usize, table: &str, extra_columns: &str) -> String {
        format!(
            "name = \"s_{table}\"\n\n[source]\nurl = \"sqlite://../src.db\"\ntable = \"{table}_src\"\nkey = \"id\"\n\n[target]\n{}table = \"{table}\"\n\n[target.columns]\nid = {{ type = \"bigint\", expr = \"id\", primary_key = true }}\n{extra_columns}label = {{ type = \"text\", expr = \"upper(label)\", nullable = false }}\n\n[chunks]\nrows = 2\nparallel = 1\n",
            self.target_lines(i)
        )
    }

    /// The set: SQL making the four tables (child references parent), then a data step
    /// for each table.
    fn write_set(&self, i: usize) {
        self.write(
            i,
            "rowshift.toml",
            &format!("name = \"p\"\n{}", self.target_lines(i)),
        );
        self.write(
            i,
            "001_tables.sql",
            "-- rowshift:up
CREATE TABLE alpha (id BIGINT PRIMARY KEY, label VARCHAR(100) NOT NULL);
CREATE TABLE beta (id BIGINT PRIMARY KEY, label VARCHAR(100) NOT NULL);
CREATE TABLE parent (id BIGINT PRIMARY KEY, label VARCHAR(100) NOT NULL);
CREATE TABLE child (id BIGINT PRIMARY KEY, parent_id BIGINT NOT NULL, label VARCHAR(100) NOT NULL,
    FOREIGN KEY (parent_id) REFERENCES parent (id));

-- rowshift:down
DROP TABLE child;
DROP TABLE parent;
DROP TABLE beta;
DROP TABLE alpha;
",
        );
        self.write(i, "002_alpha.toml", &self.pipeline(i, "alpha", ""));
        self.write(i, "003_beta.toml", &self.pipeline(i, "beta", ""));
        self.write(i, "004_parent.toml", &self.pipeline(i, "parent", ""));
        self.write(
            i,
            "005_child.toml",
            &self.pipeline(
                i,
                "child",
                "parent_id = { type = \"bigint\", expr = \"parent_id\", nullable = false }\n",
            ),
        );
    }

    fn query(&self, i: usize, pg: &str, my: &str, lite: &str) -> Vec<Vec<String>> {
        match &self.dbs[i] {
            Db::Sqlite(p) => match p.exists() {
                true => sqlite_rows(p, lite),
                false => Vec::new(),
            },
            Db::Pg(s) => s.rows(
                &pg.replace("{}", &format!("\"{}\"", s.name))
                    .replace("{name}", &s.name),
            ),
            Db::My(s) => s.rows(
                &my.replace("{}", &format!("`{}`", s.name))
                    .replace("{name}", &s.name),
            ),
        }
    }

    /// Every row of the set's four tables, as text, by table and key.
    fn contents(&self, i: usize) -> Vec<(String, Vec<Vec<String>>)> {
        TABLES
            .iter()
            .map(|(t, cols)| {
                let text_cols = |cast: &dyn Fn(&str) -> String| {
                    cols.split(", ").map(cast).collect::<Vec<_>>().join(", ")
                };
                let rows = self.query(
                    i,
                    &format!(
                        "SELECT {} FROM {{}}.{t} ORDER BY id",
                        text_cols(&|c| format!("{c}::text"))
                    ),
                    &format!(
                        "SELECT {} FROM {{}}.{t} ORDER BY id",
                        text_cols(&|c| format!("CAST({c} AS CHAR)"))
                    ),
                    &format!("SELECT {cols} FROM {t} ORDER BY id"),
                );
                (t.to_string(), rows)
            })
            .collect()
    }

    /// The history's (step, state, phase, rows_written, data_checksum, started_at,
    /// ended_at) rows.
    fn history(&self, i: usize) -> Vec<Vec<String>> {
        self.query(
            i,
            "SELECT step::text, state, phase, rows_written::text, coalesce(data_checksum, '-'), started_at, coalesce(ended_at, '-') FROM rowshift.history WHERE set_name = 'p' AND target = '{name}' ORDER BY step",
            "SELECT CAST(step AS CHAR), CAST(state AS CHAR), CAST(phase AS CHAR), CAST(rows_written AS CHAR), CAST(coalesce(data_checksum, '-') AS CHAR), CAST(started_at AS CHAR), CAST(coalesce(ended_at, '-') AS CHAR) FROM {}._rowshift_history WHERE set_name = 'p' ORDER BY step",
            "SELECT step, state, phase, rows_written, coalesce(data_checksum, '-'), started_at, coalesce(ended_at, '-') FROM _rowshift_history WHERE set_name = 'p' ORDER BY step",
        )
    }

    fn up(&self, i: usize, args: &[&str], env: &[(&str, &str)]) -> crate::common::Output {
        let dir = Self::dir(i);
        let mut all = vec!["up", dir.as_str()];
        all.extend(args);
        let out = self.ws.rowshift_env(&all, env);
        assert_eq!(out.code, 0, "up {args:?}: {}{}", out.stdout, out.stderr);
        out
    }
}

/// What the set leaves in every table, computed from the sources.
fn expected() -> Vec<(String, Vec<Vec<String>>)> {
    let two = |rows: &[(i64, &str)]| -> Vec<Vec<String>> {
        rows.iter()
            .map(|(i, l)| vec![i.to_string(), l.to_uppercase()])
            .collect()
    };
    vec![
        ("alpha".into(), two(ALPHA)),
        ("beta".into(), two(BETA)),
        ("parent".into(), two(PARENT)),
        (
            "child".into(),
            CHILD
                .iter()
                .map(|(i, p, l)| vec![i.to_string(), p.to_string(), l.to_uppercase()])
                .collect(),
        ),
    ]
}

/// A history row's (start, end).
fn span(row: &[String]) -> (&str, &str) {
    (row[5].as_str(), row[6].as_str())
}

/// Whether two steps' [start, end] overlap in time.
fn overlap(a: &[String], b: &[String]) -> bool {
    let ((s1, e1), (s2, e2)) = (span(a), span(b));
    s1 < e2 && s2 < e1
}

/// Steps 2, 3 and 4 (alpha, beta, parent: no table or foreign key in common) move their
/// data at the same time; step 5 (child, which references parent) starts only once
/// step 4 is applied; the tables and each step's verified checksum are those of a
/// sequential run (`--parallel 1`), whose steps never overlap.
fn independent_steps_overlap(kind: &str) {
    let f = Fixture::new(kind, 2);
    // Each chunk waits 300 ms before its commit: every data move lasts ~1 s.
    let slow = [("ROWSHIFT_FAULT", "pause=300")];
    let out = f.up(0, &["--json"], &slow);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let steps: Vec<u64> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4, 5], "{}", out.stdout);
    assert_eq!(report["at"], 5);
    assert_eq!(report["steps"][1]["record"]["rows_written"], 6);
    assert_eq!(report["steps"][4]["record"]["rows_written"], 5);
    assert_eq!(report["steps"][4]["data"]["rows"]["written"], 5);

    let h = f.history(0);
    assert_eq!(h.len(), 5, "{h:?}");
    for r in &h {
        assert_eq!((r[1].as_str(), r[2].as_str()), ("applied", "done"), "{h:?}");
    }
    let (alpha, beta, parent, child) = (&h[1], &h[2], &h[3], &h[4]);
    assert!(
        overlap(alpha, beta),
        "alpha and beta did not overlap: {h:?}"
    );
    assert!(
        overlap(alpha, parent),
        "alpha and parent did not overlap: {h:?}"
    );
    assert!(
        overlap(beta, parent),
        "beta and parent did not overlap: {h:?}"
    );
    assert!(
        span(child).0 >= span(parent).1,
        "child started before parent was applied: {h:?}"
    );
    // Every data step waited for step 1, which creates its table.
    for r in &h[1..] {
        assert!(span(r).0 >= span(&h[0]).1, "{h:?}");
    }
    assert_eq!(f.contents(0), expected());

    // The same set one step at a time: the same rows and checksums, no overlap.
    f.up(1, &["--parallel", "1"], &slow);
    let seq = f.history(1);
    for w in seq.windows(2) {
        assert!(
            span(&w[1]).0 >= span(&w[0]).1,
            "sequential steps overlap: {seq:?}"
        );
    }
    assert_eq!(f.contents(1), f.contents(0));
    let figures =
        |h: &[Vec<String>]| -> Vec<Vec<String>> { h.iter().map(|r| r[..5].to_vec()).collect() };
    assert_eq!(figures(&seq), figures(&h));
}

#[test]
fn sqlite_independent_steps_overlap_and_a_dependent_pair_does_not() {
    independent_steps_overlap("sqlite");
}

#[test]
fn postgres_independent_steps_overlap_and_a_dependent_pair_does_not() {
    independent_steps_overlap("pg");
}

#[test]
fn mariadb_independent_steps_overlap_and_a_dependent_pair_does_not() {
    independent_steps_overlap("my");
}

/// Starts `up` with `env`, waits until its stderr has shown every one of `markers`, waits
/// `after`, and kills it (SIGKILL).
fn kill_after(f: &Fixture, env: &[(&str, &str)], markers: &[&str], after: Duration) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rowshift"))
        .args(["up", "set0"])
        .current_dir(f.ws.path("."))
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted: Vec<String> = markers.iter().map(|m| m.to_string()).collect();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let mut left = wanted;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            log.lock().unwrap().push_str(&format!("{line}\n"));
            left.retain(|m| !line.contains(m.as_str()));
            if left.is_empty() {
                let _ = tx.send(());
                left.push("\u{0}never".into());
            }
        }
    });
    let shown = rx.recv_timeout(Duration::from_secs(60));
    if shown.is_err() {
        let _ = child.kill();
        panic!("{markers:?} never all appeared:\n{}", seen.lock().unwrap());
    }
    std::thread::sleep(after);
    child.kill().unwrap();
    child.wait().unwrap();
    seen.lock().unwrap().clone()
}

/// A kill -9 while steps 2, 3 and 4 move data at once: the history says step 1 is
/// applied, each of 2, 3 and 4 is running in its data move, and nothing of step 5; the
/// next `up` continues each move from its checkpoint and ends where a clean run ends.
fn killed_in_a_parallel_phase(kind: &str) {
    let f = Fixture::new(kind, 2);
    let log = kill_after(
        &f,
        &[("ROWSHIFT_FAULT", "pause=700")],
        &[
            "step 2: moving data",
            "step 3: moving data",
            "step 4: moving data",
            "step 2: chunk 0 done",
        ],
        Duration::from_millis(300),
    );
    let h = f.history(0);
    let states: Vec<[&str; 3]> = h
        .iter()
        .map(|r| [r[0].as_str(), r[1].as_str(), r[2].as_str()])
        .collect();
    assert_eq!(
        states,
        [
            ["1", "applied", "done"],
            ["2", "running", "data"],
            ["3", "running", "data"],
            ["4", "running", "data"],
        ],
        "{log}"
    );
    let alpha = f.contents(0)[0].1.len();
    assert!(
        (1..ALPHA.len()).contains(&alpha),
        "the kill should land mid-move, alpha has {alpha} rows\n{log}"
    );
    let status = f.ws.rowshift(&["status", "set0"]);
    assert!(status.stdout.contains("at step 1"), "{}", status.stdout);

    let out = f.up(0, &[], &[]);
    assert!(
        out.stderr
            .contains("step 2 (alpha): up, continuing where an earlier run stopped"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("done by an earlier run"),
        "{}",
        out.stderr
    );
    assert_eq!(f.contents(0), expected());
    f.up(1, &[], &[]);
    let figures =
        |h: &[Vec<String>]| -> Vec<Vec<String>> { h.iter().map(|r| r[..5].to_vec()).collect() };
    assert_eq!(figures(&f.history(0)), figures(&f.history(1)));
    assert_eq!(
        f.history(0)
            .iter()
            .map(|r| r[3].clone())
            .collect::<Vec<_>>(),
        ["0", "6", "5", "4", "5"]
    );
}

#[test]
fn sqlite_killed_in_a_parallel_phase_then_up() {
    killed_in_a_parallel_phase("sqlite");
}

#[test]
fn postgres_killed_in_a_parallel_phase_then_up() {
    killed_in_a_parallel_phase("pg");
}

#[test]
fn mariadb_killed_in_a_parallel_phase_then_up() {
    killed_in_a_parallel_phase("my");
}

/// `plan` says which step waits for which; each running step's chunk lines name it.
#[test]
fn plan_lists_what_each_step_waits_for_and_progress_names_the_step() {
    let f = Fixture::new("sqlite", 1);
    let plan = f.ws.rowshift(&["plan", "set0", "--offline"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let line = |n: &str| {
        plan.stdout
            .lines()
            .find(|l| l.starts_with(&format!("--   step {n:>4} ")))
            .unwrap_or_else(|| panic!("{}", plan.stdout))
            .split_whitespace()
            .skip(5)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("1"), "planned");
    assert_eq!(line("2"), "planned (after 1)");
    assert_eq!(line("3"), "planned (after 1)");
    assert_eq!(line("4"), "planned (after 1)");
    assert_eq!(line("5"), "planned (after 1, 4)");
    assert!(
        plan.stdout.contains("up applies up to 4 steps at once"),
        "{}",
        plan.stdout
    );

    let out = f.up(0, &[], &[]);
    for step in 2..=5 {
        assert!(
            out.stderr.contains(&format!("step {step}: chunk 0 done: ")),
            "{}",
            out.stderr
        );
    }
}

/// A SQL step whose statements rowshift cannot attribute to tables waits for every step
/// before it, and every later step waits for it; `parallel` in the set file bounds the
/// steps at once, and a bad value is reported at its place.
#[test]
fn a_sql_step_it_cannot_read_is_a_barrier_and_parallel_is_checked() {
    let f = Fixture::new("sqlite", 1);
    f.write(
        0,
        "003_beta.sql",
        "-- rowshift:up\nPRAGMA user_version = 3;\n",
    );
    let plan = f.ws.rowshift(&["plan", "set0", "--offline"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let after: Vec<&str> = plan
        .stdout
        .lines()
        .filter(|l| l.starts_with("--   step"))
        .map(|l| l.split_once(" planned").map_or("", |(_, a)| a))
        .collect();
    assert_eq!(
        after,
        [
            "",
            " (after 1)",
            " (after 1, 2)",
            " (after 1, 3)",
            " (after 1, 3, 4)"
        ],
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("step 3 waits for every step before it, and every later step for it: `PRAGMA user_version = 3`: rowshift does not know what tables such a statement touches"),
        "{}",
        plan.stdout
    );

    f.write(
        0,
        "rowshift.toml",
        &format!("name = \"p\"\n{}parallel = 0\n", f.target_lines(0)),
    );
    let bad = f.ws.rowshift(&["validate", "set0"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("rowshift.toml:3:12")
            && bad
                .stderr
                .contains("`parallel` must be a whole number, 1 or more"),
        "{}",
        bad.stderr
    );
    f.write(
        0,
        "rowshift.toml",
        &format!("name = \"p\"\n{}parallel = 1\n", f.target_lines(0)),
    );
    let plan = f.ws.rowshift(&["plan", "set0", "--offline"]);
    assert!(!plan.stdout.contains("steps at once"), "{}", plan.stdout);
    f.up(0, &[], &[("ROWSHIFT_FAULT", "pause=100")]);
    let h = f.history(0);
    for w in h.windows(2) {
        assert!(
            span(&w[1]).0 >= span(&w[0]).1,
            "parallel = 1 overlapped: {h:?}"
        );
    }
    assert_eq!(f.contents(0), expected());
}

/// A step that fails beside others: those already running end and are applied, no step
/// starts after the failure, the history says which steps are applied, failed and
/// pending (status is "at" the last step of the applied run from the first), and the
/// next `up`, once the cause is gone, applies the rest without taking the steps left
/// pending below an applied one for steps inserted since.
#[test]
fn a_step_failing_beside_others_leaves_them_applied_and_up_finishes_the_rest() {
    let f = Fixture::new("sqlite", 1);
    let src = f.ws.path("src.db");
    sqlite_exec(&src, "ALTER TABLE alpha_src RENAME TO alpha_away");
    let dir = Fixture::dir(0);
    let out = f.ws.rowshift(&["up", dir.as_str()]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("error: step 2 (alpha): ") && out.stderr.contains("alpha_src"),
        "{}",
        out.stderr
    );
    let states: Vec<[String; 2]> = f
        .history(0)
        .iter()
        .map(|r| [r[0].clone(), r[1].clone()])
        .collect();
    let expect = |rows: &[(&str, &str)]| -> Vec<[String; 2]> {
        rows.iter()
            .map(|(a, b)| [a.to_string(), b.to_string()])
            .collect()
    };
    assert_eq!(
        states,
        expect(&[
            ("1", "applied"),
            ("2", "failed"),
            ("3", "applied"),
            ("4", "applied")
        ])
    );
    let status = f.ws.rowshift(&["status", dir.as_str()]);
    assert!(status.stdout.contains(": at step 1\n"), "{}", status.stdout);
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.split_whitespace().take(4).collect::<Vec<_>>()
                == ["5", "child", "data", "pending"]),
        "{}",
        status.stdout
    );

    sqlite_exec(&src, "ALTER TABLE alpha_away RENAME TO alpha_src");
    let out = f.up(0, &[], &[]);
    assert!(
        out.stdout
            .contains("2 steps applied now, 3 were already applied, 0 pending; at step 5"),
        "{}",
        out.stdout
    );
    assert_eq!(f.contents(0), expected());
}
