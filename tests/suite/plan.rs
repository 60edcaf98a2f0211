//! `rowshift plan` on SQLite, PostgreSQL and MariaDB: the statements it lists are the
//! statements `up` and `down` then execute (as the library reports them), in the same
//! order, with the same text; the load is one entry; the target is unchanged by a plan;
//! `--offline` lists the same statements without touching anything; a pipeline's plan is
//! what its run executes; and each statement carries its database's lock.

use std::path::Path;
use std::sync::Mutex;

use rowshift::migrate::{self, Entry, MigrateOptions, MigrationSet, SetEvent, SetObserver};
use rowshift::run::Observer;

use crate::common::{Workspace, sqlite_exec};
use crate::scenarios::{Target, scenarios};

/// Hears a set command's events and keeps the statements it reports as executed.
#[derive(Default)]
struct Executed(Mutex<Vec<Entry>>);

impl SetObserver for Executed {
    fn on_set_event(&self, event: &SetEvent) {
        if let SetEvent::Executed(e) = event {
            self.0.lock().unwrap().push((**e).clone());
        }
    }

    fn run_observer(&self) -> &dyn Observer {
        &rowshift::run::NoopObserver
    }
}

fn is<T>(name: &str) -> bool {
    std::any::type_name::<T>().contains(name)
}

/// A source `src.db` (`users`, `notes`) and a three-step set into `dst`: SQL that makes
/// and fills `teams`; a data step whose sink creates `users` with an identity column, two
/// indexes, a check and a foreign key, and an `after` index; SQL that creates `notes`,
/// its data move, and an `after` index.
fn write_set<T: Target>(ws: &Workspace, dst: &T) {
    sqlite_exec(
        &ws.path("src.db"),
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, age INTEGER, team INTEGER);
         INSERT INTO users VALUES (1, 'a@x', 30, 1), (2, 'b@x', 41, 2), (5, 'c@x', 7, 1), (9, 'd@x', 0, NULL);
         CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
         INSERT INTO notes VALUES (10, 'first'), (11, 'second'), (12, 'third');",
    );
    std::fs::create_dir_all(ws.path("set")).unwrap();
    let drop_index = |index: &str, table: &str| match is::<T>("MySql") {
        true => format!("DROP INDEX {index} ON {table}"),
        false => format!("DROP INDEX {index}"),
    };
    ws.write(
        "set/rowshift.toml",
        &format!("name = \"p\"\n{}\n", dst.location()),
    );
    ws.write(
        "set/001_teams.sql",
        "-- rowshift:up\nCREATE TABLE teams (id INT PRIMARY KEY, name VARCHAR(50) NOT NULL);\nINSERT INTO teams VALUES (1, 'red'), (2, 'blue');\n\n-- rowshift:down\nDROP TABLE teams;\n",
    );
    let src = ws.path("src.db");
    ws.write(
        "set/002_users.toml",
        &format!(
            r#"name = "p_users"
[source]
url = "sqlite://{}"
table = "users"
key = "id"
[target]
{}
table = "users"
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true, identity = true }}
email = {{ type = "varchar(100)", expr = "email" }}
age = {{ type = "integer", expr = "age" }}
team = {{ type = "integer", expr = "team" }}
status = {{ type = "varchar(20)", expr = "'moved'", default = "'new'" }}
[[target.indexes]]
columns = ["email"]
unique = true
name = "users_email"
[[target.indexes]]
columns = ["team", "age"]
[[target.constraints]]
name = "users_age_check"
check = "age >= 0"
[[target.foreign_keys]]
name = "users_team_fkey"
columns = ["team"]
references = "teams(id)"
[chunks]
rows = 2
parallel = 1
"#,
            src.display(),
            dst.location()
        ),
    );
    ws.write(
        "set/002_users.sql",
        &format!(
            "-- rowshift:after\nCREATE INDEX users_status ON users (status);\n\n-- rowshift:down\n{};\nDROP TABLE users;\n",
            drop_index("users_status", "users")
        ),
    );
    ws.write(
        "set/003_notes.sql",
        &format!(
            "-- rowshift:up\nCREATE TABLE IF NOT EXISTS notes (id BIGINT PRIMARY KEY, body VARCHAR(100) NOT NULL);\n\n-- rowshift:after\nCREATE INDEX IF NOT EXISTS notes_body ON notes (body);\n\n-- rowshift:down\n{};\nDROP TABLE notes;\n",
            drop_index("notes_body", "notes")
        ),
    );
    ws.write(
        "set/003_notes.toml",
        &format!(
            "name = \"p_notes\"\n[source]\nurl = \"sqlite://{}\"\ntable = \"notes\"\nkey = \"id\"\n[target]\n{}\ntable = \"notes\"\n[target.columns]\nid = {{ type = \"bigint\", expr = \"id\", primary_key = true }}\nbody = {{ type = \"text\", expr = \"concat(body, '!')\", nullable = false }}\n[chunks]\nrows = 2\nparallel = 1\n",
            src.display(),
            dst.location()
        ),
    );
}

/// Everything in the target that a command could change: every table and index
/// (rowshift's too) with each table's row count, and the set's history rows.
fn everything<T: Target>(dst: &T) -> Vec<Vec<String>> {
    let name = dst.name();
    let (objects, tables, history) = match () {
        _ if is::<T>("Sqlite") => (
            "SELECT type || ' ' || name FROM sqlite_master ORDER BY 1".to_string(),
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1".to_string(),
            None,
        ),
        _ if is::<T>("Postgres") => (
            format!(
                "SELECT c.relkind::text || ' ' || c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '{name}' ORDER BY 1"
            ),
            format!(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = '{name}' ORDER BY 1"
            ),
            // The history of every PostgreSQL target is in one shared table.
            Some(format!(
                "SELECT count(*)::text FROM rowshift.history WHERE target = '{name}'"
            )),
        ),
        _ => (
            format!(
                "SELECT CAST(CONCAT(table_name, ' ', index_name) AS CHAR) FROM information_schema.statistics WHERE table_schema = '{name}' UNION ALL SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = '{name}' ORDER BY 1"
            ),
            format!(
                "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = '{name}' ORDER BY 1"
            ),
            None,
        ),
    };
    let mut out = dst.rows(&objects);
    for t in dst.rows(&tables).into_iter().map(|r| r[0].clone()) {
        out.extend(dst.rows(&format!(
            "SELECT {} FROM {}.{}",
            T::text("count(*)"),
            dst.q(),
            T::quote(&t)
        )));
    }
    if let Some(h) = history {
        let exists = dst.rows("SELECT count(*)::text FROM information_schema.tables WHERE table_schema = 'rowshift' AND table_name = 'history'");
        if exists[0][0] != "0" {
            out.extend(dst.rows(&h));
        }
    }
    out
}

fn load_set(ws: &Workspace) -> MigrationSet {
    MigrationSet::load(&ws.path("set")).unwrap_or_else(|e| panic!("{e}"))
}

/// `rowshift plan` through the command line, as JSON.
fn plan_cli(ws: &Workspace, args: &[&str]) -> (serde_json::Value, Vec<Entry>) {
    let mut all = vec!["plan", "set", "--json"];
    all.extend(args);
    let out = ws.rowshift(&all);
    assert_eq!(out.code, 0, "plan {args:?}: {}{}", out.stdout, out.stderr);
    let v: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    let entries = v["statements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| Entry {
            step: e["step"].as_u64(),
            phase: e["phase"].as_str().unwrap().to_string(),
            sql: e["sql"].as_str().unwrap().to_string(),
            lock: e["lock"].as_str().unwrap().to_string(),
            estimate: e["estimate"].as_str().map(str::to_string),
        })
        .collect();
    (v, entries)
}

fn up(set: &MigrationSet, to: Option<u64>) -> Vec<Entry> {
    let seen = Executed::default();
    let opts = MigrateOptions {
        to,
        ..MigrateOptions::default()
    };
    migrate::up(set, &opts, &seen).unwrap_or_else(|e| panic!("up: {e}"));
    // Steps that share no table run at the same time, and their statements interleave;
    // the plan lists them step by step, in the set's order. Each step's own keep theirs.
    let mut executed = seen.0.into_inner().unwrap();
    executed.sort_by_key(|e| e.step);
    executed
}

fn down(set: &MigrationSet, to: u64) -> Vec<Entry> {
    let seen = Executed::default();
    let opts = MigrateOptions {
        to: Some(to),
        ..MigrateOptions::default()
    };
    migrate::down(set, &opts, &seen).unwrap_or_else(|e| panic!("down: {e}"));
    seen.0.into_inner().unwrap()
}

/// The statements of a plan and of a run, side by side, equal: exactly, but for the
/// load (one entry each, compared by its statement) and the value an identity counter
/// restarts at (known only after the load).
fn assert_same(planned: &[Entry], executed: &[Entry], what: &str) {
    let show = |l: &[Entry]| {
        l.iter()
            .map(|e| format!("{:?} {}: {}", e.step, e.phase, e.sql))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let context = || {
        format!(
            "{what}\n--- planned:\n{}\n--- executed:\n{}",
            show(planned),
            show(executed)
        )
    };
    assert_eq!(planned.len(), executed.len(), "{}", context());
    for (p, e) in planned.iter().zip(executed) {
        assert_eq!((p.step, &p.phase), (e.step, &e.phase), "{}", context());
        match p.sql.split_once("<MAX(") {
            Some((head, _)) => {
                let rest = e
                    .sql
                    .strip_prefix(head)
                    .unwrap_or_else(|| panic!("{}", context()));
                assert!(rest.parse::<i64>().is_ok(), "{}", context());
            }
            None => assert_eq!(p.sql, e.sql, "{}", context()),
        }
        assert_eq!(p.lock, e.lock, "{}", context());
        assert!(!p.lock.is_empty());
    }
}

/// The statements of `phase`.
fn of<'a>(entries: &'a [Entry], phase: &str) -> Vec<&'a Entry> {
    entries.iter().filter(|e| e.phase == phase).collect()
}

/// `plan` before `up`, `up` after it (nothing left), `down --to 1`, `up --to 2`: each
/// plan lists exactly the statements the command then executes, and no plan changes
/// the target.
fn a_plan_lists_exactly_what_up_and_down_then_execute<T: Target>() {
    let ws = Workspace::new();
    let dst = T::create("plan_exact");
    write_set(&ws, &dst);
    let set = load_set(&ws);
    let before = everything(&dst);
    let (json, planned) = plan_cli(&ws, &[]);
    assert_eq!(everything(&dst), before, "plan changed the target");
    assert_eq!(json["connected"], "read-only", "{json}");
    let (_, offline) = plan_cli(&ws, &["--offline"]);
    assert_eq!(
        everything(&dst),
        before,
        "plan --offline changed the target"
    );

    // The plan's shape: the set's lock and history first, every step, the loads.
    assert_eq!(planned[0].phase, "lock");
    assert_eq!(planned[0].step, None);
    assert!(
        of(&planned, "history")
            .iter()
            .any(|e| e.sql.starts_with("CREATE TABLE IF NOT EXISTS"))
    );
    let loads = of(&planned, "load");
    assert_eq!(loads.len(), 2, "{planned:#?}");
    assert_eq!(
        loads[0].estimate.as_deref(),
        Some("4 rows in 2 chunks (the source's chunk plan)")
    );
    assert_eq!(
        loads[1].estimate.as_deref(),
        Some("3 rows in 2 chunks (the source's chunk plan)")
    );
    assert!(loads[0].sql.contains("users"), "{}", loads[0].sql);
    let ddl = of(&planned, "ddl");
    assert!(
        ddl.iter().any(|e| e.step == Some(2)
            && e.sql.starts_with("CREATE TABLE")
            && e.sql.contains("users")),
        "the sink creates users: {ddl:#?}"
    );
    assert!(
        !ddl.iter().any(|e| e.step == Some(3)
            && e.sql.starts_with("CREATE TABLE")
            && !e.sql.contains("notes_rejects")),
        "notes is created by step 3's up section, not by its sink: {ddl:#?}"
    );
    let post = of(&planned, "post-load");
    assert!(
        post.iter()
            .any(|e| e.sql.starts_with("CREATE UNIQUE INDEX \"users_email\"")
                || e.sql.starts_with("CREATE UNIQUE INDEX `users_email`")),
        "{post:#?}"
    );
    // Offline: the same statements, no estimates.
    let strip = |l: &[Entry]| -> Vec<(Option<u64>, String, String)> {
        l.iter()
            .map(|e| (e.step, e.phase.clone(), e.sql.clone()))
            .collect()
    };
    assert_eq!(strip(&offline), strip(&planned));
    assert_eq!(
        of(&offline, "load")[0].estimate.as_deref(),
        Some("not estimated (offline)")
    );

    let executed = up(&set, None);
    assert_same(&planned, &executed, "up of every step");
    assert_eq!(dst.count("users"), 4);
    assert_eq!(dst.count("notes"), 3);

    // Everything applied: the lock and the history table, nothing else.
    let before = everything(&dst);
    let (json, planned) = plan_cli(&ws, &[]);
    assert_eq!(everything(&dst), before, "plan changed the target");
    let statuses: Vec<&str> = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["applied", "applied", "applied"]);
    assert_same(&planned, &up(&set, None), "up with every step applied");

    let before = everything(&dst);
    let (_, planned) = plan_cli(&ws, &["--down", "--to", "1"]);
    assert_eq!(everything(&dst), before, "plan --down changed the target");
    assert!(
        of(&planned, "down")
            .iter()
            .any(|e| e.sql == "DROP TABLE notes")
    );
    assert_same(&planned, &down(&set, 1), "down --to 1");

    let before = everything(&dst);
    let (json, planned) = plan_cli(&ws, &["--to", "2"]);
    assert_eq!(everything(&dst), before, "plan --to changed the target");
    let statuses: Vec<&str> = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["applied", "planned", "pending"]);
    assert_same(&planned, &up(&set, Some(2)), "up --to 2 after down");
}

/// Each statement carries the lock its database takes, in that database's terms.
fn each_statement_carries_its_database_s_lock<T: Target>() {
    let ws = Workspace::new();
    let dst = T::create("plan_locks");
    write_set(&ws, &dst);
    let (_, planned) = plan_cli(&ws, &[]);
    let lock = |phase: &str, starts: &str| -> String {
        planned
            .iter()
            .find(|e| e.phase == phase && e.sql.starts_with(starts))
            .unwrap_or_else(|| panic!("no {phase} statement {starts}: {planned:#?}"))
            .lock
            .clone()
    };
    let create_index = lock("post-load", "CREATE INDEX");
    let create_table = lock("ddl", "CREATE TABLE");
    let load = of(&planned, "load")[0].lock.clone();
    let insert = lock("up", "INSERT INTO teams");
    if is::<T>("Sqlite") {
        for l in [&create_index, &create_table, &load, &insert] {
            assert!(l.starts_with("the database write lock"), "{l}");
        }
        assert!(
            planned[0].sql.contains("\"_rowshift_locks\""),
            "{}",
            planned[0].sql
        );
    } else if is::<T>("Postgres") {
        assert!(
            create_index.starts_with("SHARE on users:"),
            "{create_index}"
        );
        assert!(
            create_table.starts_with("ACCESS EXCLUSIVE on users:"),
            "{create_table}"
        );
        assert!(load.starts_with("ROW EXCLUSIVE on users:"), "{load}");
        assert!(insert.starts_with("ROW EXCLUSIVE on teams:"), "{insert}");
        let validate = lock("post-load", "ALTER TABLE \"");
        assert!(
            validate.starts_with("ACCESS EXCLUSIVE on users"),
            "{validate}"
        );
        let v = planned
            .iter()
            .find(|e| e.sql.contains("VALIDATE CONSTRAINT \"users_team_fkey\""))
            .unwrap();
        assert!(
            v.lock.starts_with("SHARE UPDATE EXCLUSIVE on users:"),
            "{}",
            v.lock
        );
        let fk = planned
            .iter()
            .find(|e| e.sql.contains("ADD CONSTRAINT \"users_team_fkey\""))
            .unwrap();
        assert!(fk.sql.ends_with("NOT VALID"), "{}", fk.sql);
        assert!(fk.lock.starts_with("SHARE ROW EXCLUSIVE"), "{}", fk.lock);
        let restart = planned
            .iter()
            .find(|e| e.sql.contains("RESTART WITH"))
            .unwrap();
        assert!(
            restart.lock.starts_with("ACCESS EXCLUSIVE on users"),
            "{}",
            restart.lock
        );
        assert!(
            planned[0].sql.starts_with("SELECT pg_try_advisory_lock("),
            "{}",
            planned[0].sql
        );
        assert!(
            planned[0].lock.starts_with("session advisory lock"),
            "{}",
            planned[0].lock
        );
    } else {
        assert!(
            create_index.starts_with("ALGORITHM=INPLACE, LOCK=NONE on users"),
            "{create_index}"
        );
        assert!(
            create_table.starts_with("exclusive metadata lock on the new table users"),
            "{create_table}"
        );
        assert!(
            load.starts_with("shared write metadata lock on users"),
            "{load}"
        );
        let fk = planned
            .iter()
            .find(|e| e.sql.contains("ADD CONSTRAINT `users_team_fkey`"))
            .unwrap();
        assert!(
            fk.lock.starts_with("ALGORITHM=COPY, LOCK=SHARED"),
            "{}",
            fk.lock
        );
        let restart = planned
            .iter()
            .find(|e| e.sql.contains("AUTO_INCREMENT ="))
            .unwrap();
        assert!(
            restart.lock.starts_with("ALGORITHM=INPLACE, LOCK=NONE"),
            "{}",
            restart.lock
        );
        assert!(
            planned[0].sql.starts_with("SELECT GET_LOCK('rowshift:"),
            "{}",
            planned[0].sql
        );
        assert!(
            planned[0].lock.starts_with("named lock (GET_LOCK)"),
            "{}",
            planned[0].lock
        );
    }
}

/// A pipeline's plan is one run's statements: its table's DDL, the load, the post-load
/// DDL; the run then executes exactly those DDL statements.
fn a_pipeline_s_plan_is_what_its_run_executes<T: Target>() {
    let ws = Workspace::new();
    let dst = T::create("plan_pipeline");
    write_set(&ws, &dst);
    dst.exec(&format!(
        "CREATE TABLE {}.teams (id INT PRIMARY KEY); INSERT INTO {}.teams VALUES (1), (2)",
        dst.q(),
        dst.q()
    ));
    let pipeline = ws.path("set/002_users.toml");
    let before = everything(&dst);
    let out = ws.rowshift(&["plan", pipeline.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("-- set, load; lock: "),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("--   rows: 4 rows in 2 chunks (the source's chunk plan)\n"),
        "{}",
        out.stdout
    );
    let p = rowshift::config::Pipeline::load(&pipeline).unwrap();
    let planned = migrate::plan_pipeline(&p, false).unwrap();
    assert_eq!(everything(&dst), before, "plan changed the target");
    let statements: Vec<String> = planned
        .statements
        .iter()
        .filter(|e| e.phase == "ddl" || e.phase == "post-load")
        .map(|e| e.sql.clone())
        .collect();
    rowshift::sql::trace::start();
    let plan = rowshift::plan::Plan::build(p).unwrap();
    let sink = plan.open_sink().unwrap();
    let summary = rowshift::run::run(
        &plan,
        sink.as_ref(),
        &rowshift::run::NoopObserver,
        &rowshift::run::RunOptions::default(),
    )
    .unwrap();
    let executed = rowshift::sql::trace::take();
    rowshift::sql::trace::stop();
    assert_eq!(summary.exit_code(), 0);
    let planned_entries: Vec<Entry> = statements
        .iter()
        .map(|s| Entry {
            step: None,
            phase: "x".into(),
            sql: s.clone(),
            lock: "x".into(),
            estimate: None,
        })
        .collect();
    let executed_entries: Vec<Entry> = executed
        .iter()
        .map(|s| Entry {
            step: None,
            phase: "x".into(),
            sql: s.clone(),
            lock: "x".into(),
            estimate: None,
        })
        .collect();
    assert_same(&planned_entries, &executed_entries, "one run of a pipeline");
    assert!(statements.len() >= 4, "{statements:#?}");
}

/// With `--offline` nothing is opened, not even a SQLite file that does not exist yet,
/// and the plan says so.
#[test]
fn an_offline_plan_opens_nothing_and_says_so() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path("set")).unwrap();
    ws.write(
        "set/rowshift.toml",
        "name = \"o\"\nurl = \"sqlite://../nowhere/t.db\"\n",
    );
    ws.write(
        "set/001_a.sql",
        "-- rowshift:up\nCREATE TABLE a (id INTEGER PRIMARY KEY);\n-- rowshift:down\nDROP TABLE a;\n",
    );
    let out = ws.rowshift(&["plan", "set", "--offline"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("(SQLite, offline)"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("-- note: offline: the history was not read"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("-- step 1, up; lock: the database write lock: other writers wait until the commit; readers go on (WAL)\nCREATE TABLE a (id INTEGER PRIMARY KEY);\n"),
        "{}",
        out.stdout
    );
    let online = ws.rowshift(&["plan", "set"]);
    assert_eq!(online.code, 0, "{}{}", online.stdout, online.stderr);
    assert!(
        online
            .stdout
            .contains("(SQLite, nothing there (the SQLite file does not exist yet))"),
        "{}",
        online.stdout
    );
    assert!(
        !Path::new(&ws.path("nowhere")).exists(),
        "plan created the target's folder"
    );
    // `up --print-sql` shows the statements as they run, in the plan's words.
    let up = ws.rowshift(&["up", "set", "--print-sql"]);
    assert_eq!(up.code, 0, "{}{}", up.stdout, up.stderr);
    assert!(
        up.stderr.contains("-- step 1, up; lock: the database write lock: other writers wait until the commit; readers go on (WAL)\nCREATE TABLE a (id INTEGER PRIMARY KEY);\n"),
        "{}",
        up.stderr
    );
}

/// A plan says when the command would refuse (an applied step edited since), and why,
/// with exit code 1; the statements it lists stop where the command would stop.
#[test]
fn a_plan_says_when_up_would_refuse_and_why() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path("set")).unwrap();
    ws.write(
        "set/rowshift.toml",
        "name = \"r\"\nurl = \"sqlite://../t.db\"\n",
    );
    ws.write(
        "set/001_a.sql",
        "-- rowshift:up\nCREATE TABLE a (id INTEGER PRIMARY KEY);\n-- rowshift:down\nDROP TABLE a;\n",
    );
    let up = ws.rowshift(&["up", "set"]);
    assert_eq!(up.code, 0, "{}{}", up.stdout, up.stderr);
    ws.write(
        "set/001_a.sql",
        "-- rowshift:up\nCREATE TABLE a (id INTEGER PRIMARY KEY, b TEXT);\n-- rowshift:down\nDROP TABLE a;\n",
    );
    ws.write(
        "set/002_b.sql",
        "-- rowshift:up\nCREATE TABLE b (id INTEGER PRIMARY KEY);\n",
    );
    let out = ws.rowshift(&["plan", "set", "--json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let refusal = v["refusal"].as_str().unwrap();
    assert!(
        refusal.starts_with("up would refuse to go on: step 1 (a) was applied on ")
            && refusal.contains("and since then 001_a.sql line 2 was `CREATE TABLE a (id INTEGER PRIMARY KEY);` and is now `CREATE TABLE a (id INTEGER PRIMARY KEY, b TEXT);`"),
        "{refusal}"
    );
    let phases: Vec<&str> = v["statements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["lock", "history"]);
    let steps: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["applied", "pending"]);
    let text = ws.rowshift(&["plan", "set"]);
    assert_eq!(text.code, 1);
    assert!(
        text.stdout
            .contains("-- refused: up would refuse to go on: step 1 (a)"),
        "{}",
        text.stdout
    );
    // The up it describes refuses as it said.
    let up = ws.rowshift(&["up", "set"]);
    assert_eq!(up.code, 2, "{}{}", up.stdout, up.stderr);
    assert!(
        up.stderr
            .contains("up refuses to go on: step 1 (a) was applied on "),
        "{}",
        up.stderr
    );
}

scenarios!(
    postgres: crate::common::PgSchema,
    mysql: crate::common::MyDb,
    sqlite: crate::scenarios::SqliteFile;
    [
        a_plan_lists_exactly_what_up_and_down_then_execute,
        each_statement_carries_its_database_s_lock,
        a_pipeline_s_plan_is_what_its_run_executes,
    ]
);
