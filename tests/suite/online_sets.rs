//! Online steps inside migration sets (docs/migrations.md, "Online steps"), on
//! PostgreSQL, MariaDB and SQLite: a set whose one step moves `items` online, with a
//! writer inserting, updating (a key too) and deleting rows at a steady rate through
//! the whole `up` and `down`. `up` is killed during the copy, during the catch-up, just
//! before the cut-over commits and just after it (before the history records it), and
//! run again; `down --to 0` is killed during its reverse catch-up and just after the
//! swap-back commits, and run again. The history says where each kill left the step,
//! and at the end the table under the source's name holds exactly what the writer's
//! successful statements left, with the new table live after `up` and the old one after
//! `down`. Then the refusals: what `validate` and `down` say, with exact texts.

use super::*;

/// The set's name in `rowshift.toml`.
const SET: &str = "shop";

/// The set `set/`: one online step, `001_items`, whose new table drops the old table's
/// `legacy` column (its pipeline reads it, for `shout`: after the cut-over the pipeline
/// no longer compiles against the live table, which `down` must not need), its reverse
/// pipeline, and its SQL (an index on the new table after the copy; `down` drops the new
/// table).
fn write_set(db: &Db, ws: &Workspace, online: &str) -> String {
    let (url, extra) = set_location(db);
    let url = toml_str(&url);
    std::fs::create_dir_all(ws.path("set")).unwrap();
    ws.write(
        "set/rowshift.toml",
        &format!("name = \"{SET}\"\nurl = {url}\n{extra}"),
    );
    ws.write(
        "set/001_items.toml",
        &format!(
            r#"name = "items-v2"
[source]
url = {url}
{extra}table = "items"
key = "id"
[target]
url = {url}
{extra}table = "items_new"
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
qty = {{ type = "bigint", expr = "qty" }}
note = {{ type = "text", expr = "note" }}
shout = {{ type = "text", expr = "upper(note) || legacy" }}
[chunks]
rows = 2000
parallel = 2
[online]
enabled = true
max_lag_rows = 100
batch_rows = 200
lock_timeout_ms = 3000
{online}"#
        ),
    );
    ws.write(
        "set/001_items.down.toml",
        &format!(
            r#"name = "items-v2-down"
[source]
url = {url}
{extra}table = "items_new"
key = "id"
[target]
url = {url}
{extra}table = "items"
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
qty = {{ type = "int", expr = "qty", nullable = false }}
note = {{ type = "varchar(40)", expr = "note", nullable = false }}
"#
        ),
    );
    ws.write(
        "set/001_items.sql",
        "-- rowshift:after\nCREATE INDEX items_new_qty ON items_new (qty);\n\n-- rowshift:down\nDROP TABLE items_new;\n",
    );
    "set".to_string()
}

/// The set's target as its files name it (the test's SQLite file seen from `set/`, or
/// its server schema or database), and the `schema` line a server's needs.
fn set_location(db: &Db) -> (String, String) {
    match db.kind {
        Kind::Pg => (
            pg_url(),
            format!("schema = {}\n", db.pg.as_ref().unwrap().toml()),
        ),
        Kind::My => (db.my.as_ref().unwrap().url(), String::new()),
        Kind::Lite => ("sqlite://../shop.db".to_string(), String::new()),
    }
}

/// The old table gets a column the new one drops.
fn add_legacy(db: &Db) {
    db.exec(&format!(
        "ALTER TABLE {} ADD COLUMN legacy VARCHAR(10) NOT NULL DEFAULT 'x'",
        db.table("items")
    ));
}

/// The step's history row: (state, phase, rows_written, error).
fn history(db: &Db) -> Vec<String> {
    let sql = match db.kind {
        Kind::Pg => format!(
            "SELECT state, phase, rows_written::text, coalesce(error, '-') FROM rowshift.history WHERE set_name = '{SET}' AND target = '{}' AND step = 1",
            db.pg.as_ref().unwrap().name
        ),
        Kind::My => format!(
            "SELECT CAST(state AS CHAR), CAST(phase AS CHAR), CAST(rows_written AS CHAR), CAST(coalesce(error, '-') AS CHAR) FROM {} WHERE set_name = '{SET}' AND step = 1",
            db.table("_rowshift_history")
        ),
        Kind::Lite => format!(
            "SELECT state, phase, CAST(rows_written AS TEXT), coalesce(error, '-') FROM _rowshift_history WHERE set_name = '{SET}' AND step = 1"
        ),
    };
    let rows = db.rows(&sql);
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows[0].clone()
}

/// (state, phase) of the step.
fn at(db: &Db) -> (String, String) {
    let h = history(db);
    (h[0].clone(), h[1].clone())
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

fn online_set(kind: Kind) {
    let ws = Workspace::new();
    let db = Db::new(kind, &ws);
    let model = Arc::new(Mutex::new(db.seed()));
    add_legacy(&db);
    let set = write_set(&db, &ws, "");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(&db, &model, &seen, &stop);
    std::thread::sleep(Duration::from_millis(300));

    // Killed (SIGKILL) during the copy: every chunk pauses before its commit.
    let mut child = rowshift(&ws, &["up", &set], &[("ROWSHIFT_FAULT", "pause=400")]);
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    let (code, _) = finish(child);
    assert_ne!(code, 0, "up was killed");
    assert_eq!(at(&db), pair("running", "data"));

    // Killed during the catch-up, after its first replayed batch commits.
    let (code, text) = finish(rowshift(
        &ws,
        &["up", &set],
        &[("ROWSHIFT_FAULT", "crash=replayed")],
    ));
    assert_ne!(code, 0, "the catch-up crashed: {text}");
    assert_eq!(at(&db), pair("running", "catchup"));

    // Killed just before the cut-over's swap commits: nothing swapped.
    let (code, text) = finish(rowshift(
        &ws,
        &["up", &set],
        &[("ROWSHIFT_FAULT", "crash=cutover-commit")],
    ));
    assert_ne!(code, 0, "the cut-over crashed before its commit: {text}");
    assert_eq!(at(&db), pair("running", "cutover"));
    assert!(db.has_table("items_new"), "nothing swapped");

    // Killed just after the swap commits, before the history records it.
    let (code, text) = finish(rowshift(
        &ws,
        &["up", &set],
        &[("ROWSHIFT_FAULT", "step=1,crash=cutover")],
    ));
    assert_ne!(code, 0, "up crashed after its swap: {text}");
    assert_eq!(at(&db), pair("running", "cutover"));
    assert!(
        !db.has_table("items_new") && db.has_table("items__v1"),
        "swapped"
    );

    // Run again: the swap is found made, not made twice.
    let (code, text) = finish(rowshift(&ws, &["up", &set], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("step 1: cut-over of table items: catching up, then the lock, the drain of the last changes and the renames\n"),
        "{text}"
    );
    assert!(
        text.contains("step 1 (items) applied: 0 statements, ")
            && text.contains("; cut-over: swapped by an earlier up; table items is the new table, the old one is kept as items__v1 (down swaps back; `rowshift finalize` drops it)"),
        "{text}"
    );
    let h = history(&db);
    assert_eq!(
        (h[0].as_str(), h[1].as_str(), h[3].as_str()),
        ("applied", "done", "-")
    );
    assert!(h[2].parse::<i64>().unwrap() >= ROWS - 200, "{h:?}");
    let (code, text) = finish(rowshift(&ws, &["status", &set], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("online: cut over; the old table is kept as items__v1 until `rowshift finalize`, and the reverse capture logs the writes made since (down replays them into it and swaps it back)"),
        "{text}"
    );
    // The new table is live, with its own shape and the `after` section's index.
    let shout = db.rows(&format!(
        "SELECT shout FROM {} WHERE id = (SELECT min(id) FROM {})",
        db.table("items"),
        db.table("items")
    ));
    assert_eq!(shout.len(), 1);
    assert!(shout[0][0].ends_with('x'), "{shout:?}");

    // Writes go on into the new table; then down, killed during its reverse catch-up
    // and just after its swap-back commits.
    std::thread::sleep(Duration::from_millis(600));
    {
        let m = model.lock().unwrap();
        assert_model(&db, "items", &m, "after up");
    }
    let (code, text) = finish(rowshift(
        &ws,
        &["down", &set, "--to", "0"],
        &[("ROWSHIFT_FAULT", "crash=replayed")],
    ));
    assert_ne!(code, 0, "the reverse catch-up crashed: {text}");
    assert_eq!(at(&db), pair("reverting", "swapback"));
    assert!(db.has_table("items__v1"), "nothing swapped back");
    std::thread::sleep(Duration::from_millis(300));
    let (code, text) = finish(rowshift(
        &ws,
        &["down", &set, "--to", "0"],
        &[("ROWSHIFT_FAULT", "step=1,crash=swapback")],
    ));
    assert_ne!(code, 0, "down crashed after its swap-back: {text}");
    assert_eq!(at(&db), pair("reverting", "swapback"));
    assert!(
        db.has_table("items_new") && !db.has_table("items__v1"),
        "swapped back"
    );
    std::thread::sleep(Duration::from_millis(300));
    let (code, text) = finish(rowshift(&ws, &["down", &set, "--to", "0"], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("step 1: swap-back of table items: catching up, then the lock, the drain of the last changes and the renames\n"),
        "{text}"
    );
    assert!(
        text.contains("step 1 (items) reverted: 1 statements; swap-back: swapped back by an earlier down; table items is the old table again, with every write made since the cut-over; the new table is items_new again"),
        "{text}"
    );
    let h = history(&db);
    assert_eq!(
        (h[0].as_str(), h[1].as_str(), h[3].as_str()),
        ("reverted", "done", "-")
    );
    assert!(
        !db.has_table("items_new"),
        "the down section dropped the new table"
    );
    assert_eq!(db.triggers(), 0, "no capture is left");

    // The writer goes on, into the old table under its own name again.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let seen = seen.lock().unwrap();
    let model = model.lock().unwrap();
    assert_writer_model(&db, &seen, &model, "after down");
    // The old table's own column is there again, as it was.
    assert_eq!(
        db.rows(&format!(
            "SELECT DISTINCT legacy FROM {}",
            db.table("items")
        )),
        vec![vec!["x".to_string()]]
    );
    eprintln!(
        "{}: {} writer statements, the slowest {:?}",
        match kind {
            Kind::Pg => "postgres",
            Kind::My => "mariadb",
            Kind::Lite => "sqlite",
        },
        seen.ops,
        seen.slowest
    );
    assert!(seen.slowest < Duration::from_secs(5), "{:?}", seen.slowest);
}

#[test]
fn postgres_online_step_with_a_writer_kills_up_and_down() {
    online_set(Kind::Pg);
}

#[test]
fn mariadb_online_step_with_a_writer_kills_up_and_down() {
    online_set(Kind::My);
}

#[test]
fn sqlite_online_step_with_a_writer_kills_up_and_down() {
    online_set(Kind::Lite);
}

/// The triggers on `table` (SQLite).
fn lite_triggers(db: &Db, table: &str) -> Vec<String> {
    db.rows(&format!(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = '{table}' ORDER BY 1"
    ))
    .into_iter()
    .map(|r| r[0].clone())
    .collect()
}

/// `validate` checks an online step, every problem at its line: a source in another
/// database, `cutover = false`, a `reverse` that is not the step's own, a target that
/// does not hold the key unchanged, a reverse pipeline keyed otherwise.
#[test]
fn validate_checks_online_steps() {
    let ws = Workspace::new();
    let db = Db::new(Kind::Lite, &ws);
    let set = write_set(
        &db,
        &ws,
        "cutover = false\nreverse = \"../other.down.toml\"\n",
    );
    std::fs::copy(
        ws.path("set/001_items.down.toml"),
        ws.path("other.down.toml"),
    )
    .unwrap();
    let forward = std::fs::read_to_string(ws.path("set/001_items.toml")).unwrap();
    ws.write(
        "set/001_items.toml",
        &forward
            .replacen(
                "url = \"sqlite://../shop.db\"",
                "url = \"sqlite://../v1.db\"",
                1,
            )
            .replace("expr = \"id\"", "expr = \"id + 0\""),
    );
    let out = ws.rowshift(&["validate", &set]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    let expected = [
        "set/001_items.toml:3:7: an online step reads a table of the set's target, and this one reads sqlite://../v1.db: its cut-over renames the new table into the source table's place, which cannot be done between two databases",
        "help: move the table between databases with the pipeline alone (`rowshift run`, `rowshift cutover`; see docs/online.md), or give [source] the set's url (and schema)",
        "set/001_items.toml:22:11: a set applies an online step by cutting it over (its new table takes the source table's name): `cutover = false` cannot hold in a set",
        "set/001_items.toml:23:11: [online] reverse names ../other.down.toml, but in a set an online step's reverse pipeline is the step's own, 001_items.down.toml: `down` swaps the cut-over back through it",
        "help: remove `reverse` (the step's 001_items.down.toml is used), or move the reverse pipeline to that file",
        "set/001_items.toml:8:9: an online step's target columns hold the source key unchanged (expr = the key column), and no target column's expr is `id`: a replayed change finds its row by them",
    ];
    for e in expected {
        assert!(out.stderr.contains(e), "{e}\n---\n{}", out.stderr);
    }

    // The reverse pipeline reads the new table by the columns that hold the key.
    let set = write_set(&db, &ws, "");
    let down = std::fs::read_to_string(ws.path("set/001_items.down.toml")).unwrap();
    ws.write(
        "set/001_items.down.toml",
        &down.replace("key = \"id\"", "key = \"qty\""),
    );
    let out = ws.rowshift(&["validate", &set]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("set/001_items.down.toml:5:7: the reverse pipeline of an online step reads the new table by the columns that hold the step's source key, id (001_items.toml); its [source] key is qty"),
        "{}",
        out.stderr
    );

    // Without a reverse pipeline the set is valid, and validate says what that means.
    std::fs::remove_file(ws.path("set/001_items.down.toml")).unwrap();
    let out = ws.rowshift(&["validate", &set]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        out.stdout.trim(),
        "ok: set shop in set has 1 steps (1 with a data move, 1 online) for sqlite://../shop.db"
    );
    assert_eq!(
        out.stderr.trim(),
        "note: step 1 (items) is an online step without a reverse pipeline (001_items.down.toml): after its cut-over, down cannot swap it back"
    );
}

/// `down` refuses, changing nothing, an online step it cannot swap back: one without a
/// reverse pipeline, one whose reverse capture is gone, one finalized; `--force` does
/// not pass over it. `finalize DIR` drops the old table and the captures, and records
/// the step `finalized`.
#[test]
fn down_refuses_an_online_step_it_cannot_swap_back_and_finalize_drops_the_old_table() {
    let ws = Workspace::new();
    let db = Db::new(Kind::Lite, &ws);
    let model = db.seed();
    add_legacy(&db);
    let set = write_set(&db, &ws, "");
    let down = std::fs::read_to_string(ws.path("set/001_items.down.toml")).unwrap();
    std::fs::remove_file(ws.path("set/001_items.down.toml")).unwrap();

    // No reverse pipeline: the cut-over says so, and down refuses.
    let out = ws.rowshift(&["up", &set]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("; table items is the new table, the old one is kept as items__v1 until `rowshift finalize`, but without a reverse pipeline writes from now on do not reach it, so down cannot swap back"),
        "{}",
        out.stdout
    );
    assert_eq!(lite_triggers(&db, "items"), Vec::<String>::new());
    for args in [
        &["down", &set, "--to", "0"][..],
        &["down", &set, "--to", "0", "--force"],
    ] {
        let out = ws.rowshift(args);
        assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
        assert_eq!(
            out.stderr.trim(),
            "error: down changed nothing: step 1 (items) is an online step without a reverse pipeline (001_items.down.toml): writes made to table items since its cut-over are not in the old table items__v1, so swapping back would lose them"
        );
    }
    assert_eq!(at(&db), pair("applied", "done"));
    assert!(db.has_table("items__v1") && !db.has_table("items_new"));

    // With its reverse pipeline (accepted as a change of the applied step), but the
    // reverse capture is gone: there was none at this cut-over.
    ws.write("set/001_items.down.toml", &down);
    let out = ws.rowshift(&["down", &set, "--to", "0", "--allow-changed"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        out.stderr.trim(),
        "error: down changed nothing: step 1 (items): the reverse capture on table items is gone (its triggers were dropped, or the table was made again), so writes made since it went may be missing from the old table items__v1: swapping back could lose them"
    );
    assert_eq!(at(&db), pair("applied", "done"));

    // finalize drops the old table, the change logs and the captures.
    let out = ws.rowshift(&["finalize", &set]);
    assert_eq!(out.code, 2, "a changed step is refused: {}", out.stderr);
    assert!(
        out.stderr
            .contains("error: finalize refuses to go on: step 1 (items) was applied on "),
        "{}",
        out.stderr
    );
    std::fs::remove_file(ws.path("set/001_items.down.toml")).unwrap();
    let out = ws.rowshift(&["finalize", &set]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        out.stdout,
        "rowshift: set shop -> sqlite://../shop.db: 1 online steps finalized now\n  step 1 (items): dropped the old table items__v1, the change logs and the reverse capture; down can no longer swap it back\n"
    );
    assert!(!db.has_table("items__v1"));
    assert!(!db.has_table("_rowshift_changes_items_v2"));
    assert_eq!(at(&db), pair("applied", "finalized"));
    assert_eq!(
        db.table_rows("items"),
        model,
        "the new table keeps every row"
    );
    let out = ws.rowshift(&["status", &set]);
    assert!(
        out.stdout.contains("online: cut over, then finalized: the old table items__v1 and the captures were dropped, so down cannot swap it back"),
        "{}",
        out.stdout
    );
    let out = ws.rowshift(&["finalize", &set]);
    assert_eq!(
        out.stdout,
        "rowshift: set shop -> sqlite://../shop.db: 0 online steps finalized now, 1 were already\n"
    );
    let out = ws.rowshift(&["down", &set, "--to", "0", "--force"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        out.stderr.trim(),
        "error: down changed nothing: step 1 (items) was finalized (`rowshift finalize`): its old table items__v1 was dropped, so there is nothing to swap back to; revert its change with a new step instead"
    );
}

/// A cut-over with the reverse pipeline whose reverse capture was dropped by hand since:
/// down refuses, naming why, and the new table stays live with its rows.
#[test]
fn down_refuses_an_online_step_whose_reverse_capture_is_gone() {
    let ws = Workspace::new();
    let db = Db::new(Kind::Lite, &ws);
    let model = db.seed();
    add_legacy(&db);
    let set = write_set(&db, &ws, "");
    let out = ws.rowshift(&["up", &set]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    // Nothing was written meanwhile: nothing to replay or drain.
    let line = out.stdout.lines().nth(1).unwrap_or_default();
    assert!(
        line.starts_with("  step 1 (items) applied: 1 statements, 20000 rows read, 20000 written, 0 filtered, 0 rejected, checksum ")
            && line.contains("; catch-up: 0 changes replayed; cut-over: 0 changes replayed, then writes waited ")
            && line.contains(" ms while 0 were drained and read back; table items is the new table, the old one is kept as items__v1 (down swaps back; `rowshift finalize` drops it) in "),
        "{}",
        out.stdout
    );
    let rev: Vec<String> = ["del", "ins", "upd"]
        .iter()
        .map(|e| format!("_rowshift_capture_items_v2_down_{e}"))
        .collect();
    assert_eq!(lite_triggers(&db, "items"), rev);
    db.exec("DROP TRIGGER _rowshift_capture_items_v2_down_upd");
    let out = ws.rowshift(&["down", &set, "--to", "0"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        out.stderr.trim(),
        "error: down changed nothing: step 1 (items): the reverse capture on table items is gone (its triggers were dropped, or the table was made again), so writes made since it went may be missing from the old table items__v1: swapping back could lose them"
    );
    assert_eq!(at(&db), pair("applied", "done"));
    assert!(db.has_table("items__v1") && !db.has_table("items_new"));
    assert_eq!(db.table_rows("items"), model);
}

/// The phases of step 1's statements in a plan, each once in a row.
fn plan_phases(plan: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in plan["statements"].as_array().unwrap() {
        if s["step"] != 1 {
            continue;
        }
        let phase = s["phase"].as_str().unwrap().to_string();
        if out.last() != Some(&phase) {
            out.push(phase);
        }
    }
    out
}

/// Step 1's statements of `phase` as (sql, lock).
fn plan_entries(plan: &serde_json::Value, phase: &str) -> Vec<(String, String)> {
    plan["statements"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step"] == 1 && s["phase"] == phase)
        .map(|s| {
            (
                s["sql"].as_str().unwrap().to_string(),
                s["lock"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `plan` shows an online step's capture, catch-up and cut-over with their locks, and
/// `plan --down` its swap-back before its down section.
fn plan_online_step(kind: Kind) {
    let ws = Workspace::new();
    let db = Db::new(kind, &ws);
    db.seed();
    add_legacy(&db);
    let set = write_set(&db, &ws, "");
    let out = ws.rowshift(&["plan", &set, "--json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    // PostgreSQL runs even an empty section with its search_path, in the transaction
    // that records its end.
    let mut phases = vec![
        "history", "up", "history", "ddl", "capture", "load", "catch-up",
    ];
    if kind != Kind::Pg {
        phases.drain(1..3);
    }
    phases.extend(["history", "after", "history", "cutover", "history"]);
    assert_eq!(plan_phases(&plan), phases);
    let catch_up = &plan_entries(&plan, "catch-up");
    assert_eq!(catch_up.len(), 1);
    let cut = plan_entries(&plan, "cutover");
    let sql: Vec<&str> = cut.iter().map(|(s, _)| s.as_str()).collect();
    let capture = plan_entries(&plan, "capture");
    match kind {
        Kind::Pg => {
            let s = db.pg.as_ref().unwrap().name.clone();
            let q = |t: &str| format!("\"{s}\".\"{t}\"");
            assert_eq!(
                cut[1],
                (
                    format!("LOCK TABLE {} IN EXCLUSIVE MODE", q("items")),
                    "EXCLUSIVE on items: writes wait from here to the commit, reads go on; each attempt waits at most 3000 ms ([online] lock_timeout_ms), 5 attempts (lock_attempts)".to_string()
                )
            );
            assert!(
                sql.contains(
                    &format!("ALTER TABLE {} RENAME TO \"items__v1\"", q("items")).as_str()
                ) && sql.contains(
                    &format!("ALTER TABLE {} RENAME TO \"items\"", q("items_new")).as_str()
                ),
                "{sql:?}"
            );
            let trigger = capture
                .iter()
                .find(|(s, _)| s.starts_with("CREATE TRIGGER"))
                .unwrap();
            assert!(
                trigger.0.contains(&format!(
                    "AFTER INSERT OR UPDATE OR DELETE ON {}",
                    q("items")
                )),
                "{trigger:?}"
            );
            assert_eq!(
                trigger.1,
                "SHARE ROW EXCLUSIVE on items: reads go on; writes wait while the trigger is created or dropped (a moment)"
            );
            // The reverse capture is installed in the swap, on the new table under the
            // source's name, before the commit.
            let reverse = sql
                .iter()
                .position(|s| s.starts_with("CREATE TRIGGER \"_rowshift_capture_items_v2_down\""))
                .unwrap();
            assert!(
                reverse
                    > sql
                        .iter()
                        .position(|s| s.contains("RENAME TO \"items\""))
                        .unwrap()
            );
            assert_eq!(sql.last(), Some(&"COMMIT"));
        }
        _ => {
            assert_eq!(
                cut[0],
                (
                    "BEGIN IMMEDIATE".to_string(),
                    "the database write lock, from here to the commit: writers wait in their busy handler, readers go on (WAL)".to_string()
                )
            );
            assert_eq!(
                sql[1..],
                [
                    "INSERT INTO \"items_new\" (\"id\", \"qty\", \"note\", \"shout\") VALUES (?, ?, ?, ?)",
                    "DROP TRIGGER IF EXISTS \"_rowshift_capture_items_v2_ins\"",
                    "DROP TRIGGER IF EXISTS \"_rowshift_capture_items_v2_upd\"",
                    "DROP TRIGGER IF EXISTS \"_rowshift_capture_items_v2_del\"",
                    "PRAGMA legacy_alter_table = ON",
                    "ALTER TABLE \"items\" RENAME TO \"items__v1\"",
                    "ALTER TABLE \"items_new\" RENAME TO \"items\"",
                    "PRAGMA legacy_alter_table = OFF",
                    "CREATE TABLE IF NOT EXISTS \"_rowshift_changes_items_v2_down\" (pos INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now')), k0)",
                    "DELETE FROM \"_rowshift_changes_items_v2_down\"",
                    "DROP TRIGGER IF EXISTS \"_rowshift_capture_items_v2_down_ins\"",
                    "CREATE TRIGGER IF NOT EXISTS \"_rowshift_capture_items_v2_down_ins\" AFTER INSERT ON \"items\" FOR EACH ROW BEGIN INSERT INTO \"_rowshift_changes_items_v2_down\" (k0) SELECT NEW.\"id\"; END",
                    "DROP TRIGGER IF EXISTS \"_rowshift_capture_items_v2_down_upd\"",
                    "CREATE TRIGGER IF NOT EXISTS \"_rowshift_capture_items_v2_down_upd\" AFTER UPDATE ON \"items\" FOR EACH ROW BEGIN INSERT INTO \"_rowshift_changes_items_v2_down\" (k0) SELECT OLD.\"id\"; INSERT INTO \"_rowshift_changes_items_v2_down\" (k0) SELECT NEW.\"id\" WHERE OLD.\"id\" IS NOT NEW.\"id\"; END",
                    "DROP TRIGGER IF EXISTS \"_rowshift_capture_items_v2_down_del\"",
                    "CREATE TRIGGER IF NOT EXISTS \"_rowshift_capture_items_v2_down_del\" AFTER DELETE ON \"items\" FOR EACH ROW BEGIN INSERT INTO \"_rowshift_changes_items_v2_down\" (k0) SELECT OLD.\"id\"; END",
                    "COMMIT",
                ]
            );
        }
    }

    // Applied: plan --down swaps back, then runs the down section.
    let out = ws.rowshift(&["up", &set]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let out = ws.rowshift(&["plan", &set, "--down", "--to", "0", "--json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(plan["refusal"], serde_json::Value::Null, "{plan}");
    assert_eq!(
        plan_phases(&plan),
        ["history", "swap-back", "history", "down", "history"]
    );
    let back = plan_entries(&plan, "swap-back");
    let renames: Vec<&str> = back
        .iter()
        .map(|(s, _)| s.as_str())
        .filter(|s| s.starts_with("ALTER TABLE"))
        .collect();
    match kind {
        Kind::Pg => {
            let s = db.pg.as_ref().unwrap().name.clone();
            assert_eq!(
                renames,
                [
                    format!("ALTER TABLE \"{s}\".\"items\" RENAME TO \"items_new\""),
                    format!("ALTER TABLE \"{s}\".\"items__v1\" RENAME TO \"items\""),
                ]
            );
        }
        _ => assert_eq!(
            renames,
            [
                "ALTER TABLE \"items\" RENAME TO \"items_new\"",
                "ALTER TABLE \"items__v1\" RENAME TO \"items\""
            ]
        ),
    }
    // Without its reverse capture, plan --down says down would refuse, and why.
    db.exec(&match kind {
        Kind::Pg => format!(
            "DROP TRIGGER \"_rowshift_capture_items_v2_down\" ON {}",
            db.table("items")
        ),
        _ => "DROP TRIGGER _rowshift_capture_items_v2_down_upd".to_string(),
    });
    let out = ws.rowshift(&["plan", &set, "--down", "--to", "0"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("-- refused: down would refuse, changing nothing: step 1 (items): the reverse capture on table items is gone"),
        "{}",
        out.stdout
    );
    // The change logs go (on PostgreSQL they are outside the test's schema).
    let out = ws.rowshift(&["finalize", &set]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
}

#[test]
fn sqlite_plan_shows_an_online_step_capture_cutover_and_swap_back() {
    plan_online_step(Kind::Lite);
}

#[test]
fn postgres_plan_shows_an_online_step_capture_cutover_and_swap_back() {
    plan_online_step(Kind::Pg);
}

/// test-rollback refuses a set with an online step, naming it, and touches nothing.
#[test]
fn test_rollback_refuses_an_online_step() {
    let ws = Workspace::new();
    let db = Db::new(Kind::Lite, &ws);
    db.seed();
    let set = write_set(&db, &ws, "");
    let out = ws.rowshift(&["test-rollback", &set]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        out.stderr.trim(),
        "error: test-rollback does not run online steps, and step 1 (items) is one: its cut-over reads its reverse pipeline from its file, which names the real target, not the throwaway copy; test its way back with `up` and `down --to 0` on a copy of the database"
    );
    assert!(db.has_table("items") && !db.has_table("items_new"));
    assert_eq!(db.triggers(), 0);
}

/// A step whose copy can no longer be trusted when `up` resumes it is copied again from
/// nothing: on PostgreSQL a `TRUNCATE` of the source since the capture began (its
/// removed rows are in no change log), on SQLite a capture trigger dropped by hand
/// (changes since are not logged). The new table ends as the source is.
fn copies_again(kind: Kind) {
    let ws = Workspace::new();
    let db = Db::new(kind, &ws);
    db.seed();
    add_legacy(&db);
    let set = write_set(&db, &ws, "");
    // Writes during the copy give the catch-up a batch to be killed after.
    let model = Arc::new(Mutex::new(Model::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (w, t, m, st) = (
            writer_for(&db),
            db.table("items"),
            model.clone(),
            stop.clone(),
        );
        let seen = Arc::new(Mutex::new(Seen::default()));
        *m.lock().unwrap() = db.table_rows("items");
        std::thread::spawn(move || write_steadily(w, t, m, seen, st))
    };
    std::thread::sleep(Duration::from_millis(200));
    let (code, text) = finish(rowshift(
        &ws,
        &["up", &set],
        &[("ROWSHIFT_FAULT", "crash=replayed")],
    ));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert_ne!(code, 0, "{text}");
    assert_eq!(at(&db), pair("running", "catchup"));
    let items = db.table("items");
    match kind {
        Kind::Pg => db.exec(&format!("TRUNCATE {items}")),
        _ => db.exec("DROP TRIGGER _rowshift_capture_items_v2_del"),
    }
    if kind != Kind::Pg {
        db.exec(&format!("DELETE FROM {items}"));
    }
    db.exec(&format!(
        "INSERT INTO {items} (id, qty, note) VALUES (1, 10, 'a'), (2, 20, 'b'), (3, 30, 'c')"
    ));
    let (code, text) = finish(rowshift(&ws, &["up", &set], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(
            "step 1 (items) applied: 1 statements, 3 rows read, 3 written, 0 filtered, 0 rejected"
        ),
        "{text}"
    );
    let model: Model = [(1, (10, "a")), (2, (20, "b")), (3, (30, "c"))]
        .into_iter()
        .map(|(k, (q, n))| (k, (q, n.to_string())))
        .collect();
    assert_model(&db, "items", &model, "after the copy made again");
    assert_eq!(at(&db), pair("applied", "done"));
    let out = ws.rowshift(&["finalize", &set]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(at(&db), pair("applied", "finalized"));
}

#[test]
fn postgres_an_online_step_truncated_mid_move_is_copied_again() {
    copies_again(Kind::Pg);
}

#[test]
fn sqlite_an_online_step_whose_capture_went_mid_move_is_copied_again() {
    copies_again(Kind::Lite);
}
