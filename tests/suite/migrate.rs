//! Migration sets (`rowshift up`, `down`, `status`, `baseline`, `validate DIR`) on
//! SQLite, PostgreSQL and MariaDB: the same three-step set (SQL, data, SQL + data) on
//! each, kills at every kind of moment followed by `up`, the set lock, edited steps and
//! numeric order. Each server test works in a schema or database of its own.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{ServerDb, Workspace, sqlite_exec, sqlite_rows};

fn pg_url() -> String {
    std::env::var("ROWSHIFT_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

fn my_url() -> String {
    std::env::var("ROWSHIFT_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_string())
}

/// A target's tables, the rows of `items` and `notes`, and the indexes of `notes`.
type Snapshot = (Vec<String>, Vec<Vec<String>>, Vec<Vec<String>>, Vec<String>);

/// Where a test's set applies.
enum Db {
    Sqlite(PathBuf),
    Pg(ServerDb<sqlx::Postgres>),
    My(ServerDb<sqlx::MySql>),
}

/// A workspace with a source database (`src.db`: `items_src`, `notes_src`) and a target.
struct Fixture {
    ws: Workspace,
    db: Db,
}

const ITEMS: &[(i64, &str)] = &[
    (1, "apple"),
    (2, "pear"),
    (3, "fig"),
    (4, "plum"),
    (5, "kiwi"),
    (6, "lime"),
];
const NOTES: &[(i64, &str)] = &[(10, "first"), (11, "second"), (12, "third"), (13, "fourth")];

impl Fixture {
    fn new(kind: &str) -> Fixture {
        let ws = Workspace::new();
        std::fs::create_dir_all(ws.path("set")).unwrap();
        let src = ws.path("src.db");
        let mut sql = String::from(
            "CREATE TABLE items_src (id INTEGER PRIMARY KEY, label TEXT NOT NULL);
             CREATE TABLE notes_src (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
        );
        for (id, l) in ITEMS {
            sql.push_str(&format!("INSERT INTO items_src VALUES ({id}, '{l}');"));
        }
        for (id, b) in NOTES {
            sql.push_str(&format!("INSERT INTO notes_src VALUES ({id}, '{b}');"));
        }
        sqlite_exec(&src, &sql);
        let db = match kind {
            "sqlite" => Db::Sqlite(ws.path("target.db")),
            "pg" => Db::Pg(ServerDb::create(
                &pg_url(),
                "ROWSHIFT_PG_URL",
                "migrate",
                |n| format!("\"{n}\""),
                "CREATE SCHEMA {}",
                "DROP SCHEMA IF EXISTS {} CASCADE",
            )),
            _ => Db::My(ServerDb::create(
                &my_url(),
                "ROWSHIFT_MYSQL_URL",
                "migrate",
                |n| format!("`{n}`"),
                "CREATE DATABASE {} DEFAULT CHARACTER SET utf8mb4",
                "DROP DATABASE IF EXISTS {}",
            )),
        };
        let f = Fixture { ws, db };
        f.write_set();
        f
    }

    /// `url` (and `schema`) lines naming the target, for the set file and pipelines.
    fn target_lines(&self) -> String {
        match &self.db {
            Db::Sqlite(_) => "url = \"sqlite://../target.db\"\n".into(),
            Db::Pg(s) => format!("url = \"{}\"\nschema = \"{}\"\n", pg_url(), s.name),
            Db::My(s) => format!("url = \"{}\"\nschema = \"{}\"\n", my_url(), s.name),
        }
    }

    /// The type of a text column that can be indexed.
    fn text(&self) -> &'static str {
        match self.db {
            Db::My(_) => "VARCHAR(100)",
            _ => "TEXT",
        }
    }

    fn drop_index(&self, index: &str, table: &str) -> String {
        match self.db {
            Db::My(_) => format!("DROP INDEX {index} ON {table}"),
            _ => format!("DROP INDEX {index}"),
        }
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.ws.path(&format!("set/{file}")), text).unwrap();
    }

    fn pipeline(&self, name: &str, source: &str, table: &str, column: &str, expr: &str) -> String {
        format!(
            "name = \"{name}\"\n\n[source]\nurl = \"sqlite://../src.db\"\ntable = \"{source}\"\nkey = \"id\"\n\n[target]\n{}table = \"{table}\"\n\n[target.columns]\nid = {{ type = \"bigint\", expr = \"id\", primary_key = true }}\n{column} = {{ type = \"text\", expr = \"{expr}\", nullable = false }}\n\n[chunks]\nrows = 2\nparallel = 1\n",
            self.target_lines()
        )
    }

    /// The three-step set: SQL (two tables' DDL), data, SQL + data.
    fn write_set(&self) {
        let t = self.text();
        self.write(
            "rowshift.toml",
            &format!("name = \"t\"\n{}", self.target_lines()),
        );
        self.write(
            "001_create.sql",
            &format!(
                "-- rowshift:up\nCREATE TABLE IF NOT EXISTS items (id BIGINT PRIMARY KEY, label {t} NOT NULL);\nCREATE TABLE IF NOT EXISTS audit (id BIGINT PRIMARY KEY);\n\n-- rowshift:down\nDROP TABLE audit;\nDROP TABLE items;\n"
            ),
        );
        self.write(
            "002_load_items.toml",
            &self.pipeline("t_items", "items_src", "items", "label", "upper(label)"),
        );
        self.write(
            "002_load_items.sql",
            "-- rowshift:down\nDELETE FROM items;\n",
        );
        self.write(
            "003_notes.sql",
            &format!(
                "-- rowshift:up\nCREATE TABLE IF NOT EXISTS notes (id BIGINT PRIMARY KEY, body {t} NOT NULL);\n\n-- rowshift:after\nCREATE INDEX IF NOT EXISTS notes_body ON notes (body);\n\n-- rowshift:down\n{};\nDROP TABLE notes;\n",
                self.drop_index("notes_body", "notes")
            ),
        );
        self.write(
            "003_notes.toml",
            &self.pipeline("t_notes", "notes_src", "notes", "body", "concat(body, '!')"),
        );
    }

    /// Makes `up` apply one step at a time (step 3 shares no table with steps 1 and 2,
    /// so `up` would otherwise apply it beside them): for the tests of a kill at a given
    /// moment of the set's order. `steps.rs` kills steps applied at once.
    fn sequential(self) -> Fixture {
        self.write(
            "rowshift.toml",
            &format!("name = \"t\"\n{}parallel = 1\n", self.target_lines()),
        );
        self
    }

    fn rowshift(&self, args: &[&str]) -> crate::common::Output {
        self.ws.rowshift(args)
    }

    fn rowshift_env(&self, args: &[&str], env: &[(&str, &str)]) -> crate::common::Output {
        self.ws.rowshift_env(args, env)
    }

    fn query(&self, pg: &str, my: &str, lite: &str) -> Vec<Vec<String>> {
        match &self.db {
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

    /// The user's tables in the target (not rowshift's, not the quarantine's).
    fn tables(&self) -> Vec<String> {
        self.query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = '{name}' AND table_name NOT LIKE '\\_rowshift%' AND table_name NOT LIKE '%\\_rejects' ORDER BY 1",
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = '{name}' AND table_name NOT LIKE '\\_rowshift%' AND table_name NOT LIKE '%\\_rejects' ORDER BY 1",
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_rowshift%' ESCAPE '\\' AND name NOT LIKE '%\\_rejects' ESCAPE '\\' AND name <> 'sqlite_sequence' ORDER BY 1",
        )
        .into_iter()
        .map(|r| r[0].clone())
        .collect()
    }

    fn rows(&self, table: &str, col: &str) -> Vec<Vec<String>> {
        if !self.tables().contains(&table.to_string()) {
            return vec![vec!["(no table)".into()]];
        }
        self.query(
            &format!("SELECT id::text, {col}::text FROM {{}}.{table} ORDER BY id"),
            &format!("SELECT CAST(id AS CHAR), CAST({col} AS CHAR) FROM {{}}.{table} ORDER BY id"),
            &format!("SELECT id, {col} FROM {table} ORDER BY id"),
        )
    }

    /// Indexes of `notes`, by name.
    fn notes_indexes(&self) -> Vec<String> {
        if !self.tables().contains(&"notes".to_string()) {
            return Vec::new();
        }
        self.query(
            "SELECT indexname::text FROM pg_indexes WHERE schemaname = '{name}' AND tablename = 'notes' AND indexname <> 'notes_pkey' ORDER BY 1",
            "SELECT DISTINCT CAST(index_name AS CHAR) FROM information_schema.statistics WHERE table_schema = '{name}' AND table_name = 'notes' AND index_name <> 'PRIMARY' ORDER BY 1",
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'notes' AND sql IS NOT NULL ORDER BY 1",
        )
        .into_iter()
        .map(|r| r[0].clone())
        .collect()
    }

    /// Everything a comparison looks at: tables, their rows, the index made after the load.
    fn snapshot(&self) -> Snapshot {
        (
            self.tables(),
            self.rows("items", "label"),
            self.rows("notes", "body"),
            self.notes_indexes(),
        )
    }

    /// The history's (step, state, phase, rows_written) rows of set `t`.
    fn history(&self) -> Vec<Vec<String>> {
        self.query(
            "SELECT step::text, state, phase, rows_written::text FROM rowshift.history WHERE set_name = 't' AND target = '{name}' ORDER BY step",
            "SELECT CAST(step AS CHAR), CAST(state AS CHAR), CAST(phase AS CHAR), CAST(rows_written AS CHAR) FROM {}._rowshift_history WHERE set_name = 't' ORDER BY step",
            "SELECT step, state, phase, rows_written FROM _rowshift_history WHERE set_name = 't' ORDER BY step",
        )
    }

    fn up(&self) -> crate::common::Output {
        let out = self.rowshift(&["up", "set"]);
        assert_eq!(out.code, 0, "up: {}{}", out.stdout, out.stderr);
        out
    }
}

/// What a clean run of the whole set leaves.
fn full() -> Snapshot {
    (
        vec!["audit".into(), "items".into(), "notes".into()],
        ITEMS
            .iter()
            .map(|(i, l)| vec![i.to_string(), l.to_uppercase()])
            .collect(),
        NOTES
            .iter()
            .map(|(i, b)| vec![i.to_string(), format!("{b}!")])
            .collect(),
        vec!["notes_body".into()],
    )
}

fn applied_history() -> Vec<Vec<String>> {
    vec![
        vec!["1".into(), "applied".into(), "done".into(), "0".into()],
        vec!["2".into(), "applied".into(), "done".into(), "6".into()],
        vec!["3".into(), "applied".into(), "done".into(), "4".into()],
    ]
}

fn up_down_up(kind: &str) {
    let f = Fixture::new(kind);
    let out = f.rowshift(&["validate", "set"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("has 3 steps (2 with a data move)"),
        "{}",
        out.stdout
    );

    let out = f.up();
    assert!(
        out.stdout
            .contains("3 steps applied now, 0 were already applied, 0 pending; at step 3"),
        "{}",
        out.stdout
    );
    assert_eq!(f.snapshot(), full());
    assert_eq!(f.history(), applied_history());

    let status = f.rowshift(&["status", "set", "--json"]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[1]["status"], "applied");
    assert_eq!(steps[1]["kind"], "data");
    assert_eq!(steps[1]["record"]["rows_read"], 6);
    assert_eq!(steps[1]["record"]["rows_written"], 6);
    assert_eq!(steps[1]["record"]["rows_rejected"], 0);
    assert_eq!(steps[2]["kind"], "sql+data");
    assert_eq!(steps[2]["record"]["rows_written"], 4);
    assert_eq!(
        steps[2]["record"]["data_checksum"].as_str().unwrap().len(),
        16
    );

    // Nothing pending: a second up changes nothing.
    let again = f.up();
    assert!(
        again
            .stdout
            .contains("0 steps applied now, 3 were already applied"),
        "{}",
        again.stdout
    );

    let out = f.rowshift(&["down", "set", "--to", "1"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("2 steps reverted; at step 1"),
        "{}",
        out.stdout
    );
    assert_eq!(
        f.snapshot(),
        (
            vec!["audit".into(), "items".into()],
            vec![],
            vec![vec!["(no table)".to_string()]],
            vec![]
        )
    );
    let h = f.history();
    assert_eq!(h[0][1], "applied");
    assert_eq!(
        (h[1][1].as_str(), h[2][1].as_str()),
        ("reverted", "reverted")
    );
    let text = f.rowshift(&["status", "set"]);
    assert!(text.stdout.contains("at step 1"), "{}", text.stdout);
    assert_eq!(
        status_line(&text.stdout, "2"),
        ["2", "load_items", "data", "pending"]
    );

    // Up again moves the data from nothing (the old checkpoints were discarded).
    f.up();
    assert_eq!(f.snapshot(), full());
    assert_eq!(f.history(), applied_history());
}

#[test]
fn sqlite_up_down_up() {
    up_down_up("sqlite");
}

#[test]
fn postgres_up_down_up() {
    up_down_up("pg");
}

#[test]
fn mariadb_up_down_up() {
    up_down_up("my");
}

/// Runs `up` with `ROWSHIFT_FAULT=fault`, which aborts it; then `up` again, which must
/// end where a clean run ends.
fn crash_then_up(kind: &str, fault: &str, stopped: Vec<Vec<String>>) {
    let f = Fixture::new(kind).sequential();
    let out = f.rowshift_env(&["up", "set"], &[("ROWSHIFT_FAULT", fault)]);
    assert_ne!(out.code, 0, "{fault}: {}{}", out.stdout, out.stderr);
    assert_ne!(out.code, 2, "{fault} should abort: {}", out.stderr);
    assert_eq!(f.history(), stopped, "after {fault}");
    f.up();
    assert_eq!(f.snapshot(), full(), "after {fault} and up");
    assert_eq!(f.history(), applied_history());
}

fn row(step: &str, state: &str, phase: &str, written: &str) -> Vec<String> {
    vec![step.into(), state.into(), phase.into(), written.into()]
}

fn killed_in_ddl(kind: &str) {
    // Statement 2 of step 1 ran; its record (and, on PostgreSQL and SQLite, the whole
    // section's transaction) did not commit. MariaDB keeps statement 1's record.
    crash_then_up(
        kind,
        "step=1,crash=up:2",
        vec![row("1", "running", "up", "0")],
    );
    // Killed in the after section of step 3, past its data move.
    crash_then_up(
        kind,
        "step=3,crash=after:1",
        vec![
            row("1", "applied", "done", "0"),
            row("2", "applied", "done", "6"),
            row("3", "running", "after", "4"),
        ],
    );
}

#[test]
fn sqlite_killed_in_ddl_then_up() {
    killed_in_ddl("sqlite");
}

#[test]
fn postgres_killed_in_ddl_then_up() {
    killed_in_ddl("pg");
}

#[test]
fn mariadb_killed_in_ddl_then_up() {
    killed_in_ddl("my");
    // On MariaDB each statement's completion is recorded as it commits: killed after
    // statement 1's record, the history says so and up goes on from statement 2.
    let f = Fixture::new("my").sequential();
    let out = f.rowshift_env(
        &["up", "set"],
        &[("ROWSHIFT_FAULT", "step=1,crash=up-recorded:1")],
    );
    assert_eq!(out.code, -1, "{}", out.stderr);
    assert_eq!(
        f.query(
            "",
            "SELECT CAST(statements_done AS CHAR) FROM {}._rowshift_history WHERE step = 1",
            ""
        ),
        [["1"]]
    );
    assert_eq!(f.tables(), ["items"]);
    crash_then_up(
        "my",
        "step=1,crash=up-recorded:1",
        vec![vec!["1".into(), "running".into(), "up".into(), "0".into()]],
    );
}

fn killed_between_steps(kind: &str) {
    crash_then_up(
        kind,
        "step=2,crash=done",
        vec![
            row("1", "applied", "done", "0"),
            row("2", "applied", "done", "6"),
        ],
    );
}

#[test]
fn sqlite_killed_between_steps_then_up() {
    killed_between_steps("sqlite");
}

#[test]
fn postgres_killed_between_steps_then_up() {
    killed_between_steps("pg");
}

#[test]
fn mariadb_killed_between_steps_then_up() {
    killed_between_steps("my");
}

/// Starts the binary with `env`, waits until its stderr shows `marker`, waits `after`,
/// and returns the child (still running).
fn start_until(
    f: &Fixture,
    args: &[&str],
    env: &[(&str, &str)],
    marker: &str,
    after: Duration,
) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rowshift"))
        .args(args)
        .current_dir(f.ws.path("."))
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted = marker.to_string();
    std::thread::spawn(move || {
        let mut told = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if !told && line.contains(&wanted) {
                told = true;
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("`{marker}` never appeared"));
    std::thread::sleep(after);
    child
}

fn killed_in_data_move(kind: &str) {
    let f = Fixture::new(kind);
    // Each chunk (2 rows) waits 700 ms before its commit: killed in the second chunk.
    let mut child = start_until(
        &f,
        &["up", "set"],
        &[("ROWSHIFT_FAULT", "pause=700")],
        "step 2: moving data",
        Duration::from_millis(1100),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let h = f.history();
    assert_eq!(h[0], row("1", "applied", "done", "0"));
    assert_eq!(h[1][..3], row("2", "running", "data", "0")[..3]);
    let items = f.rows("items", "label");
    assert!(items.len() < 6, "the kill came too late: {items:?}");
    let out = f.up();
    assert!(
        out.stderr
            .contains("step 2 (load_items): up, continuing where an earlier run stopped"),
        "{}",
        out.stderr
    );
    assert_eq!(f.snapshot(), full());
    assert_eq!(f.history(), applied_history());
}

#[test]
fn sqlite_killed_in_data_move_then_up() {
    killed_in_data_move("sqlite");
}

#[test]
fn postgres_killed_in_data_move_then_up() {
    killed_in_data_move("pg");
}

#[test]
fn mariadb_killed_in_data_move_then_up() {
    killed_in_data_move("my");
}

fn lock_race(kind: &str) {
    let f = Fixture::new(kind);
    let mut first = start_until(
        &f,
        &["up", "set"],
        &[("ROWSHIFT_FAULT", "pause=400")],
        "step 2: moving data",
        Duration::from_millis(100),
    );
    let pid = first.id();
    let refused = f.rowshift(&["up", "set"]);
    assert_eq!(refused.code, 2, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains("pipeline migration set")
            && refused.stderr.contains(&format!(", pid {pid}, since "))
            && refused.stderr.contains("is held by another run: host "),
        "{}",
        refused.stderr
    );
    // Refused before touching anything: the first run's history goes on alone.
    let waited = f.rowshift(&["up", "set", "--lock-timeout", "60"]);
    assert_eq!(waited.code, 0, "{}{}", waited.stdout, waited.stderr);
    assert!(
        waited
            .stderr
            .contains("another process holds this target's migration lock (host "),
        "{}",
        waited.stderr
    );
    assert!(
        waited
            .stdout
            .contains("0 steps applied now, 3 were already applied"),
        "{}",
        waited.stdout
    );
    assert!(first.wait().unwrap().success());
    assert_eq!(f.snapshot(), full());
    assert_eq!(f.history(), applied_history());

    // A holder killed with SIGKILL leaves no lock behind: the next up takes it at once.
    let out = f.rowshift(&["down", "set", "--to", "0"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut killed = start_until(
        &f,
        &["up", "set"],
        &[("ROWSHIFT_FAULT", "pause=3000")],
        "step 2: moving data",
        Duration::from_millis(200),
    );
    killed.kill().unwrap();
    killed.wait().unwrap();
    let t0 = std::time::Instant::now();
    f.up();
    assert!(t0.elapsed() < Duration::from_secs(30));
    assert_eq!(f.snapshot(), full());
}

#[test]
fn sqlite_lock_race_and_takeover() {
    lock_race("sqlite");
}

#[test]
fn postgres_lock_race_and_takeover() {
    lock_race("pg");
}

#[test]
fn mariadb_lock_race_and_takeover() {
    lock_race("my");
}

fn an_applied_step_edited_is_refused_then_accepted_and_recorded(kind: &str) {
    let f = Fixture::new(kind);
    f.up();
    let path = f.ws.path("set/001_create.sql");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "audit (id BIGINT PRIMARY KEY)",
            "audit (id BIGINT PRIMARY KEY, at TEXT)",
        ),
    )
    .unwrap();
    let out = f.rowshift(&["up", "set"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    let (head, tail) = out.stderr.split_once(" was applied on ").unwrap();
    assert_eq!(head, "error: up refuses to go on: step 1 (create)");
    let tail = tail.split_once(", and since then ").unwrap().1;
    assert_eq!(
        tail,
        "001_create.sql line 3 was `CREATE TABLE IF NOT EXISTS audit (id BIGINT PRIMARY KEY);` and is now `CREATE TABLE IF NOT EXISTS audit (id BIGINT PRIMARY KEY, at TEXT);`.\nRestore the step's files as they were applied, or pass --allow-changed to accept them as they are now (the history records it)\n"
    );
    // down refuses in the same words, before changing anything.
    let down = f.rowshift(&["down", "set", "--to", "0"]);
    assert_eq!(down.code, 2);
    assert!(
        down.stderr
            .starts_with("error: down refuses to go on: step 1 (create) was applied on "),
        "{}",
        down.stderr
    );
    assert_eq!(f.snapshot(), full());

    let out = f.rowshift(&["up", "set", "--allow-changed"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.starts_with(
            "accepted (--allow-changed, recorded in the history): step 1 (create) was applied on "
        ),
        "{}",
        out.stdout
    );
    let note = f.query(
        "SELECT allowed_change FROM rowshift.history WHERE set_name = 't' AND target = '{name}' AND step = 1",
        "SELECT CAST(allowed_change AS CHAR) FROM {}._rowshift_history WHERE set_name = 't' AND step = 1",
        "SELECT allowed_change FROM _rowshift_history WHERE step = 1",
    );
    assert!(note[0][0].starts_with("accepted 20"), "{note:?}");
    assert!(
        note[0][0].contains(
            "001_create.sql line 3 was `CREATE TABLE IF NOT EXISTS audit (id BIGINT PRIMARY KEY);`"
        ),
        "{note:?}"
    );
    // Accepted once, it is the applied step now.
    let again = f.up();
    assert!(
        again
            .stdout
            .contains("0 steps applied now, 3 were already applied"),
        "{}",
        again.stdout
    );
    let status = f.rowshift(&["status", "set"]);
    assert_eq!(
        status_line(&status.stdout, "1"),
        ["1", "create", "sql", "applied"]
    );

    // Removing an applied step is caught too.
    std::fs::remove_file(f.ws.path("set/002_load_items.toml")).unwrap();
    std::fs::remove_file(f.ws.path("set/002_load_items.sql")).unwrap();
    let out = f.rowshift(&["up", "set"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("step 2 (load_items) was applied on "),
        "{}",
        out.stderr
    );
    // Step 3 follows from step 2, which is named: its chain is not listed again.
    assert!(
        out.stderr
            .contains(", but the set has no step 2 any more.\nRestore"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("step 3"), "{}", out.stderr);
}

#[test]
fn sqlite_an_applied_step_edited_is_refused_then_accepted_and_recorded() {
    an_applied_step_edited_is_refused_then_accepted_and_recorded("sqlite");
}

#[test]
fn postgres_an_applied_step_edited_is_refused_then_accepted_and_recorded() {
    an_applied_step_edited_is_refused_then_accepted_and_recorded("pg");
}

#[test]
fn mariadb_an_applied_step_edited_is_refused_then_accepted_and_recorded() {
    an_applied_step_edited_is_refused_then_accepted_and_recorded("my");
}

#[test]
fn steps_run_in_numeric_order_and_duplicate_numbers_are_refused() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path("set")).unwrap();
    ws.write("set/rowshift.toml", "url = \"sqlite://../t.db\"\n");
    ws.write("set/1_log.sql", "-- rowshift:up\nCREATE TABLE log (seq INTEGER PRIMARY KEY AUTOINCREMENT, step TEXT);\n-- rowshift:down\nDROP TABLE log;\n");
    for (file, name) in [
        ("2_b.sql", "2"),
        ("10_c.sql", "10"),
        ("9_d.sql", "9"),
        ("011_e.sql", "11"),
    ] {
        ws.write(
            &format!("set/{file}"),
            &format!("-- rowshift:up\nINSERT INTO log (step) VALUES ('{name}');\n-- rowshift:down\nDELETE FROM log WHERE step = '{name}';\n"),
        );
    }
    let out = ws.rowshift(&["up", "set", "--to", "10"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("4 steps applied now, 0 were already applied, 1 pending; at step 10"),
        "{}",
        out.stdout
    );
    assert_eq!(
        sqlite_rows(&ws.path("t.db"), "SELECT step FROM log ORDER BY seq"),
        [["2"], ["9"], ["10"]]
    );
    let out = ws.rowshift(&["up", "set"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        sqlite_rows(&ws.path("t.db"), "SELECT step FROM log ORDER BY seq"),
        [["2"], ["9"], ["10"], ["11"]]
    );
    ws.write("set/0002_again.sql", "-- rowshift:up\nSELECT 1;\n");
    let out = ws.rowshift(&["validate", "set"]);
    assert_eq!(out.code, 2);
    assert_eq!(
        out.stderr,
        "error: set/2_b.sql: two steps have the number 2: 0002_again.sql and 2_b.sql; give each step a number of its own\n"
    );
}

#[test]
fn validate_reports_every_problem_of_every_file_with_its_place() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path("set")).unwrap();
    ws.write(
        "set/rowshift.toml",
        "url = \"sqlite://../t.db\"\nnmae = \"x\"\n",
    );
    ws.write(
        "set/001_a.sql",
        "-- rowshift:up\nCREATE TABLE a (x TEXT);\n-- rowshift:upp\n",
    );
    ws.write(
        "set/002_b.sql",
        "-- rowshift:up\nCREATE TABLE b (x TEXT DEFAULT 'open);\n",
    );
    ws.write(
        "set/003_c.sql",
        "-- rowshift:after\nCREATE INDEX c ON a (x);\n",
    );
    ws.write(
        "set/004_d.toml",
        "name = \"d\"\n[source]\nurl = \"sqlite://../src.db\"\ntable = \"s\"\nkey = \"id\"\n[target]\nurl = \"sqlite://../other.db\"\ntable = \"d\"\n[target.columns]\nid = { type = \"bigint\", expr = \"id\" }\n",
    );
    ws.write("set/notes.sql", "-- a file that is not a step\n");
    let out = ws.rowshift(&["validate", "set"]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    for want in [
        "set/rowshift.toml:2:1: unknown key `nmae` in the set file",
        "help: did you mean `name`?",
        "set/001_a.sql:3:1: unknown section `upp`",
        "set/002_b.sql:2:32: unclosed ' quote",
        "set/003_c.sql:1:1: `-- rowshift:after` runs after the data move of 003_c.toml, which does not exist; put these statements under `-- rowshift:up`",
        "set/004_d.toml:7:7: this step writes to sqlite://../other.db, which is not the set's target",
        "set/notes.sql: `notes.sql` is not a step: a step's file name starts with its number and a name, as `003_add_email.sql`",
    ] {
        assert!(
            out.stderr.contains(want),
            "missing {want:?} in:\n{}",
            out.stderr
        );
    }
}

#[test]
fn down_refuses_a_step_without_down_and_foreign_rows_before_changing_anything() {
    let f = Fixture::new("sqlite");
    f.up();
    let Db::Sqlite(db) = &f.db else {
        unreachable!()
    };
    sqlite_exec(db, "INSERT INTO items VALUES (99, 'not from the set')");
    let out = f.rowshift(&["down", "set", "--to", "1"]);
    assert_eq!(out.code, 2);
    assert_eq!(
        out.stderr,
        "error: down changed nothing: step 2 (load_items): table items holds 7 rows, but this set wrote 6 (step 2); reverting could drop 1 rows it did not write. Pass --force to revert anyway\n"
    );
    assert_eq!(f.tables(), full().0);
    assert_eq!(f.rows("notes", "body"), full().2);

    std::fs::write(f.ws.path("set/003_notes.sql"), "-- rowshift:up\nCREATE TABLE IF NOT EXISTS notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL);\n\n-- rowshift:after\nCREATE INDEX IF NOT EXISTS notes_body ON notes (body);\n").unwrap();
    let out = f.rowshift(&["down", "set", "--to", "1", "--allow-changed", "--force"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("down changed nothing: step 3 (notes) has no down section, so it cannot be reverted: add `-- rowshift:down` with the statements that undo it to "),
        "{}",
        out.stderr
    );
    assert_eq!(f.tables(), full().0);

    // With the down section back, --force reverts, the foreign row too.
    f.write_set();
    let out = f.rowshift(&["down", "set", "--to", "1", "--force", "--allow-changed"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(f.rows("items", "label"), Vec::<Vec<String>>::new());
}

#[test]
fn baseline_adopts_a_database_and_up_applies_the_rest() {
    let f = Fixture::new("sqlite");
    let Db::Sqlite(db) = &f.db else {
        unreachable!()
    };
    sqlite_exec(
        db,
        "CREATE TABLE items (id BIGINT PRIMARY KEY, label TEXT NOT NULL); CREATE TABLE audit (id BIGINT PRIMARY KEY);",
    );
    let out = f.rowshift(&["baseline", "set", "--to", "1"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        format!(
            "rowshift: set t -> sqlite://../target.db: steps 1 recorded as applied (baseline); nothing ran\n"
        )
    );
    let out = f.up();
    assert!(
        out.stdout
            .contains("2 steps applied now, 1 were already applied"),
        "{}",
        out.stdout
    );
    assert_eq!(f.snapshot(), full());
    assert_eq!(f.history()[0], row("1", "baseline", "done", "0"));
    let again = f.rowshift(&["baseline", "set", "--to", "1"]);
    assert_eq!(again.code, 2);
    assert!(
        again
            .stderr
            .contains("set t already has a history in sqlite://"),
        "{}",
        again.stderr
    );
}

/// The first four words of `status`'s line for `step`.
fn status_line(text: &str, step: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            l.split_whitespace()
                .take(4)
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .find(|w| w.first().map(String::as_str) == Some(step))
        .unwrap_or_else(|| panic!("no line for step {step} in:\n{text}"))
}

#[test]
fn a_failed_statement_is_recorded_with_its_place_and_a_fixed_file_runs_without_allow_changed() {
    let f = Fixture::new("sqlite");
    f.write(
        "003_notes.sql",
        "-- rowshift:up\nCREATE TABLE IF NOT EXISTS notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL);\nCREATE TABLE notes (x TEXT);\n\n-- rowshift:down\nDROP TABLE notes;\n",
    );
    let out = f.rowshift(&["up", "set"]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr.contains(
            "\nerror: step 3 (notes): set/003_notes.sql:3: statement 2 of up failed: sqlite://"
        )
            && out.stderr.contains("table notes already exists")
            && out.stderr.contains(
                "nothing of this section was applied (it ran in one transaction); the next up runs it again"
            ),
        "{}",
        out.stderr
    );
    // Steps 1 and 2 stay applied; step 3 left nothing (its first statement rolled back).
    assert_eq!(f.tables(), ["audit", "items"]);
    assert_eq!(f.history()[2], row("3", "failed", "up", "0"));
    let status = f.rowshift(&["status", "set"]);
    assert_eq!(
        status_line(&status.stdout, "3"),
        ["3", "notes", "sql+data", "failed"]
    );
    assert!(
        status.stdout.contains("statement 2 of up failed"),
        "{}",
        status.stdout
    );
    // Nothing of it was applied, so its file may be fixed and run without --allow-changed.
    f.write_set();
    f.up();
    assert_eq!(f.snapshot(), full());
    assert_eq!(f.history(), applied_history());
}

#[test]
fn a_data_step_that_rejects_rows_stops_up_after_it_with_exit_1() {
    // One step at a time: steps applied at once as the rows are rejected end first.
    let f = Fixture::new("sqlite").sequential();
    // Labels longer than 4 characters do not fit: apple is rejected.
    f.write(
        "002_load_items.toml",
        &f.pipeline("t_items", "items_src", "items", "label", "upper(label)")
            .replace(
                "label = { type = \"text\"",
                "label = { type = \"varchar(4)\"",
            ),
    );
    let out = f.rowshift(&["up", "set"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("2 steps applied now, 0 were already applied, 1 pending; at step 2"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("6 rows read, 5 written, 0 filtered, 1 rejected"),
        "{}",
        out.stdout
    );
    assert_eq!(f.tables(), ["audit", "items"]);
    let Db::Sqlite(db) = &f.db else {
        unreachable!()
    };
    assert_eq!(
        sqlite_rows(
            db,
            "SELECT rows_read, rows_written, rows_rejected FROM _rowshift_history WHERE step = 2"
        ),
        [["6", "5", "1"]]
    );
}

#[test]
fn the_sample_set_moves_shopfront_to_v2_and_back() {
    let ws = Workspace::new();
    let out = ws.rowshift(&["validate", "pipelines/shop_v2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = ws.rowshift(&["up", "pipelines/shop_v2"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("8 steps applied now, 0 were already applied, 0 pending; at step 8"),
        "{}",
        out.stdout
    );
    let v1 = ws.path("samples/shopfront.db");
    let v2 = ws.path("out/shopfront_v2.db");
    let count = |db: &std::path::Path, t: &str| {
        sqlite_rows(db, &format!("SELECT count(*) FROM {t}"))[0][0].clone()
    };
    for t in [
        "categories",
        "products",
        "customers",
        "orders",
        "order_items",
        "payments",
    ] {
        assert_eq!(count(&v2, t), count(&v1, t), "{t}");
    }
    assert_eq!(count(&v2, "categories"), "5");
    assert_eq!(count(&v2, "order_items"), "3733");
    // The v2 rows keep every reference; the emails are normalised.
    assert!(sqlite_rows(&v2, "PRAGMA foreign_key_check").is_empty());
    assert_eq!(
        sqlite_rows(
            &v2,
            "SELECT count(*) FROM customers WHERE email <> lower(trim(email))"
        ),
        [["0"]]
    );
    assert_eq!(
        sqlite_rows(&v2, "SELECT count(*), sum(active) FROM products"),
        sqlite_rows(&v1, "SELECT count(*), sum(status = 'active') FROM products")
    );
    let before = sqlite_rows(
        &v2,
        "SELECT step, data_checksum FROM _rowshift_history ORDER BY step",
    );
    let out = ws.rowshift(&["down", "pipelines/shop_v2", "--to", "0"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        sqlite_rows(
            &v2,
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('categories', 'products', 'customers', 'orders', 'order_items', 'payments')"
        )
        .is_empty()
    );
    let out = ws.rowshift(&["up", "pipelines/shop_v2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        sqlite_rows(
            &v2,
            "SELECT step, data_checksum FROM _rowshift_history ORDER BY step"
        ),
        before
    );
}

#[test]
fn a_data_step_whose_declared_unique_index_its_rows_break_fails_and_up_builds_it_once_fixed() {
    let f = Fixture::new("sqlite");
    f.write(
        "002_load_items.toml",
        &format!(
            "{}\n[[target.indexes]]\ncolumns = [\"label\"]\nunique = true\nname = \"items_label\"\n",
            f.pipeline(
                "t_items",
                "items_src",
                "items",
                "label",
                "upper(substr(label, 1, 1))"
            )
        ),
    );
    let out = f.rowshift(&["up", "set"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("the rows were loaded, but unique index `items_label` cannot be built on items: label 'P' is held by id=2 and id=4"),
        "{text}"
    );
    let Db::Sqlite(db) = &f.db else {
        unreachable!()
    };
    let index = "SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'items_label'";
    assert!(sqlite_rows(db, index).is_empty());
    assert_eq!(
        sqlite_rows(db, "SELECT state FROM _rowshift_history WHERE step = 2"),
        [["failed"]]
    );
    sqlite_exec(db, "UPDATE items SET label = 'Q' WHERE id = 4");
    let out = f.rowshift(&["up", "set"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(sqlite_rows(db, index), [["items_label"]]);
    assert_eq!(sqlite_rows(db, "SELECT count(*) FROM items"), [["6"]]);
}
