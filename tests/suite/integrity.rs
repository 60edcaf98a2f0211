//! Integrity: read-back verification, declared checks and their policies, the
//! timestamptz zone rule, and `rowshift verify [--repair]`.

use crate::common::{Workspace, sqlite_exec, sqlite_rows};
use crate::scenarios::{Target, scenarios};

/// A pipeline from the sample users table into `out/users.db`, 1000 rows in chunks of
/// 100, with `extra` appended (checks, options).
fn users_pipeline(ws: &Workspace, name: &str, columns: &str, extra: &str) -> String {
    ws.write(
        &format!("pipelines/{name}.toml"),
        &format!(
            r#"name = "{name}"
[source]
url = "sqlite://../samples/shop.db"
table = "users_v1"
key = "id"
[target]
url = "sqlite://../out/{name}.db"
table = "users"
[target.columns]
{columns}
[chunks]
rows = 100
parallel = 2
{extra}
"#
        ),
    )
}

const COLUMNS: &str = r#"id = { type = "bigint", expr = "id" }
email = { type = "text", expr = "lower(trim(email))" }
country = { type = "text", expr = "country" }
score = { type = "double", expr = "score" }"#;

fn count(ws: &Workspace, db: &str, sql: &str) -> i64 {
    sqlite_rows(&ws.path(db), sql)[0][0].parse().unwrap()
}

#[test]
fn a_sqlite_column_whose_affinity_would_convert_values_is_refused_before_writing() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path("out")).unwrap();
    // A target the user created: `country` has INTEGER affinity, so SQLite would turn
    // the text '007' into the integer 7, without an error, read-back on or off.
    let p = users_pipeline(
        &ws,
        "affinity",
        r#"id = { type = "bigint", expr = "id" }
country = { type = "text", expr = "CASE WHEN id = 250 THEN '007' ELSE country END" }"#,
        "",
    );
    sqlite_exec(
        &ws.path("out/affinity.db"),
        "CREATE TABLE users (id INTEGER PRIMARY KEY, country INTEGER)",
    );
    let text = std::fs::read_to_string(ws.path(&p)).unwrap().replace(
        "table = \"users\"",
        "table = \"users\"\nif_exists = \"append\"",
    );
    for pipeline in [
        text.clone(),
        text.replacen(
            "name = \"affinity\"",
            "name = \"affinity\"\nverify = \"off\"",
            1,
        ),
    ] {
        ws.write(&p, &pipeline);
        let out = ws.rowshift(&["run", &p, "--quiet"]);
        assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains(
                "sqlite://out/affinity.db table users: column country is INTEGER in the existing table, and its INTEGER affinity stores text that looks like a number as that number ('007' becomes 7); declare a type of its kind or let rowshift create the table (it makes text columns TEXT)"
            ),
            "{}",
            out.stderr
        );
        assert_eq!(
            count(&ws, "out/affinity.db", "SELECT count(*) FROM users"),
            0
        );
    }
    // An integer into a REAL column would be rounded beyond 2^53.
    sqlite_exec(
        &ws.path("out/affinity.db"),
        "DROP TABLE users; CREATE TABLE users (id REAL PRIMARY KEY, country VARCHAR(20))",
    );
    ws.write(&p, &text);
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(
            "column id is REAL in the existing table, and its REAL affinity stores integers as floats, rounding those beyond 2^53"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn a_chunk_read_back_after_its_commit_is_deleted_again_when_it_differs() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path("out")).unwrap();
    // An empty table of the user's, written into with the default if_exists: the run
    // owns every key range, so chunks are read back after their commit. Between chunk
    // 2's commit and its read-back, another writer (the fault hook) changes a value.
    let p = users_pipeline(
        &ws,
        "late",
        r#"id = { type = "bigint", expr = "id" }
country = { type = "text", expr = "CASE WHEN id = 250 THEN '007' ELSE country END" }"#,
        "[[checks]]\nexpr = \"id % 50 <> 7\"\nname = \"not 7 mod 50\"\n",
    );
    sqlite_exec(
        &ws.path("out/late.db"),
        "CREATE TABLE users (id INTEGER PRIMARY KEY, country TEXT)",
    );
    let out = ws.rowshift_env(
        &["run", &p, "--quiet"],
        &[(
            "ROWSHIFT_FAULT_SQL",
            "2:committed:UPDATE users SET country = '7' WHERE id = 250",
        )],
    );
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(
            "failed  chunk 2 (201 < key <= 301): check failed: chunk 2 (201 < key <= 301): the target does not hold what was written: 98 rows sent"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("first difference: id=250, column country: sent '007', the target holds '7'"),
        "{}",
        out.stdout
    );
    // The failed chunk's rows and rejects were committed, read back, and deleted again;
    // the other chunks landed whole, with their rejected rows (21 ids are 7 mod 50).
    let db = "out/late.db";
    assert_eq!(
        count(
            &ws,
            db,
            "SELECT count(*) FROM users WHERE id > 201 AND id <= 301"
        ),
        0
    );
    assert_eq!(count(&ws, db, "SELECT count(*) FROM users"), 1000 - 21 - 98);
    assert_eq!(
        count(
            &ws,
            db,
            "SELECT count(*) FROM users_rejects WHERE chunk = 2"
        ),
        0
    );
    assert_eq!(count(&ws, db, "SELECT count(*) FROM users_rejects"), 21 - 2);
    assert_eq!(
        sqlite_rows(
            &ws.path(db),
            "SELECT id, state FROM _rowshift_chunks WHERE state <> 'done'"
        ),
        [["2", "failed"]]
    );
}

#[test]
fn a_run_that_dies_between_a_commit_and_its_read_back_redoes_the_chunk_once() {
    let ws = Workspace::new();
    // `unique` spans the run, so a resumed run that counted the dead attempt's rows
    // as written would reject the chunk's own emails as duplicates.
    let checks =
        "[[checks]]\ncolumn = \"email\"\nunique = true\n\n[[checks]]\nexpr = \"id % 50 <> 7\"\n";
    let reference = users_pipeline(&ws, "whole", COLUMNS, checks);
    let out = ws.rowshift(&["run", &reference, "--quiet"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let crashed = users_pipeline(&ws, "crashed", COLUMNS, checks);
    let out = ws.rowshift_env(
        &["run", &crashed, "--quiet", "--parallel", "1"],
        &[("ROWSHIFT_FAULT", "chunk=3,crash=committed")],
    );
    assert_eq!(out.code, -1, "aborted: {}{}", out.stdout, out.stderr);
    // The crash came after chunk 3's commit and before its read-back: its rows and
    // rejects are in the target (ids 307 and 357, and 335 whose email repeats id
    // 22's), and the checkpoint still calls it running.
    let db = "out/crashed.db";
    assert_eq!(
        count(
            &ws,
            db,
            "SELECT count(*) FROM users WHERE id > 301 AND id <= 401"
        ),
        97
    );
    assert_eq!(
        count(
            &ws,
            db,
            "SELECT count(*) FROM users_rejects WHERE chunk = 3"
        ),
        3
    );
    assert_eq!(
        sqlite_rows(
            &ws.path(db),
            "SELECT id, state FROM _rowshift_chunks WHERE id <= 3 ORDER BY id"
        ),
        [
            ["0", "done"],
            ["1", "done"],
            ["2", "done"],
            ["3", "running"]
        ]
    );
    let out = ws.rowshift(&["run", &crashed, "--json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["chunks_skipped"], 3, "{json}");
    assert_eq!(json["chunks_done"], 7, "{json}");
    let all = "SELECT * FROM users ORDER BY id";
    let expected = sqlite_rows(&ws.path("out/whole.db"), all);
    // 21 ids are 7 mod 50; of the four emails that repeat an earlier one, 608's first
    // use (607) is one of them, so three are duplicates.
    assert_eq!(expected.len(), 1000 - 21 - 3);
    assert!(
        sqlite_rows(&ws.path(db), all) == expected,
        "the resumed target differs from the uninterrupted one"
    );
    // The same rows rejected by the same checks; a resumed run names the earlier rows
    // a duplicate repeats as "a row the target already holds".
    let rejects = "SELECT chunk, row_key, substr(reason, 1, instr(reason, ':')) FROM users_rejects ORDER BY chunk, row_key";
    assert_eq!(
        sqlite_rows(&ws.path(db), rejects),
        sqlite_rows(&ws.path("out/whole.db"), rejects)
    );
}

#[test]
fn read_back_catches_a_trigger_that_rewrites_rows_in_a_csv_sourced_load() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path("out")).unwrap();
    sqlite_exec(
        &ws.path("out/trig.db"),
        "CREATE TABLE orders (order_id INTEGER PRIMARY KEY, customer TEXT);
         CREATE TRIGGER shorten AFTER INSERT ON orders WHEN NEW.order_id = 7
         BEGIN UPDATE orders SET customer = substr(customer, 1, 3) WHERE order_id = 7; END;",
    );
    ws.write(
        "pipelines/trig.toml",
        r#"name = "trig"
[source]
url = "../samples/orders.csv"
key = "order_id"
[target]
url = "sqlite://../out/trig.db"
table = "orders"
if_exists = "append"
[target.columns]
order_id = { type = "bigint", expr = "CAST(order_id AS BIGINT)" }
customer = { type = "text", expr = "customer_email" }
"#,
    );
    let out = ws.rowshift(&["run", "pipelines/trig.toml", "--quiet", "--json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let error = json["failures"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("first difference: order_id=7, column customer: sent '"),
        "{error}"
    );
    assert_eq!(count(&ws, "out/trig.db", "SELECT count(*) FROM orders"), 0);
}

#[test]
fn read_back_cost_is_in_the_summary_and_a_clean_run_passes_it() {
    let ws = Workspace::new();
    let p = users_pipeline(&ws, "clean", COLUMNS, "");
    let out = ws.rowshift(&["run", &p, "--json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["verified"], true);
    assert!(json["verify_seconds"].as_f64().unwrap() > 0.0, "{json}");
    assert_eq!(json["rows"]["written"], 1000);
}

#[test]
fn a_database_target_without_the_source_key_needs_verify_off() {
    let ws = Workspace::new();
    let p = users_pipeline(
        &ws,
        "nokey",
        r#"email = { type = "text", expr = "email" }"#,
        "",
    );
    let out = ws.rowshift(&["validate", &p]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("read-back verification cannot find a chunk's rows in the target table: no target column holds the source key `id`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("pipelines/nokey.toml:8:9:"),
        "{}",
        out.stderr
    );
    let text = std::fs::read_to_string(ws.path(&p)).unwrap();
    ws.write(
        &p,
        &text.replacen("name = \"nokey\"", "name = \"nokey\"\nverify = \"off\"", 1),
    );
    assert_eq!(ws.rowshift(&["validate", &p]).code, 0);
}

const CHECKS: &str = r#"
[[checks]]
column = "score"
min = 10
max = 90

[[checks]]
column = "country"
accepted = ["GB", "CA", "US", "DE", "FR", "NL", "IT", "JP", "CN", "ES"]
policy = "warn"

[[checks]]
column = "email"
regex = '@example\.(com|net)$'
name = "company mail"

[[checks]]
expr = "id % 97 <> 0"
name = "no multiples of 97"
"#;

#[test]
fn declared_checks_reject_or_warn_each_row_with_its_reason() {
    let ws = Workspace::new();
    let p = users_pipeline(&ws, "checks", COLUMNS, CHECKS);
    let out = ws.rowshift(&["run", &p, "--json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    // Expected, computed from the source with SQL.
    let rows = sqlite_rows(
        &ws.path("samples/shop.db"),
        "SELECT id, score, lower(trim(email)), country FROM users_v1",
    );
    let mut range = 0;
    let mut mail = 0;
    let mut ninety_seven = 0;
    let mut warned = 0;
    let mut written = 0;
    let accepted = ["GB", "CA", "US", "DE", "FR", "NL", "IT", "JP", "CN", "ES"];
    for r in &rows {
        let id: i64 = r[0].parse().unwrap();
        let score: Option<f64> = r[1].parse().ok();
        let bad_range = score.is_some_and(|s| !(10.0..=90.0).contains(&s));
        let bad_mail = !(r[2].ends_with("@example.com") || r[2].ends_with("@example.net"));
        let bad_97 = id % 97 == 0;
        // The first failing check in file order names the row's reason.
        if bad_range {
            range += 1;
        } else if bad_mail {
            mail += 1;
        } else if bad_97 {
            ninety_seven += 1;
        } else {
            written += 1;
            if r[3] != "NULL" && !accepted.contains(&r[3].as_str()) {
                warned += 1;
            }
        }
    }
    assert!(range > 0 && mail > 0 && ninety_seven > 0 && warned > 0);
    let reasons: std::collections::BTreeMap<String, u64> = json["rejects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["reason"].as_str().unwrap().to_string(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            (
                "column score: check `score range`: is out of range: expected from 10 to 90"
                    .to_string(),
                range
            ),
            (
                "column email: check `company mail`: does not match regex `@example\\.(com|net)$`"
                    .to_string(),
                mail
            ),
            (
                "check `no multiples of 97`: row fails id % 97 <> 0".to_string(),
                ninety_seven
            ),
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(json["rows"]["written"], written);
    assert_eq!(json["warnings"][0]["count"], warned);
    assert!(
        json["warnings"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("column country: check `country accepted`: is not one of the accepted values: GB, CA, US"),
        "{}",
        json["warnings"]
    );
    assert_eq!(
        count(&ws, "out/checks.db", "SELECT count(*) FROM users"),
        written as i64
    );
    assert_eq!(
        count(&ws, "out/checks.db", "SELECT count(*) FROM users_rejects"),
        (range + mail + ninety_seven) as i64
    );
    assert_eq!(
        sqlite_rows(
            &ws.path("out/checks.db"),
            "SELECT reason, source_row LIKE '%\"id\":97%' FROM users_rejects WHERE row_key = '97'"
        ),
        [["check `no multiples of 97`: row fails id % 97 <> 0", "1"]]
    );
}

#[test]
fn a_fail_policy_fails_the_chunk_naming_row_column_and_value() {
    let ws = Workspace::new();
    let p = users_pipeline(
        &ws,
        "failing",
        COLUMNS,
        "[[checks]]\ncolumn = \"score\"\nmax = 99.5\npolicy = \"fail\"\n",
    );
    let out = ws.rowshift(&["run", &p, "--json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let over = sqlite_rows(
        &ws.path("samples/shop.db"),
        "SELECT min(id), count(DISTINCT (id - 1) / 100), CAST(score AS TEXT) FROM users_v1 WHERE score > 99.5 GROUP BY id ORDER BY id LIMIT 1",
    );
    let first = &over[0];
    let failures = json["failures"].as_array().unwrap();
    let expected_chunks = count(
        &ws,
        "samples/shop.db",
        "SELECT count(DISTINCT (id - 1) / 100) FROM users_v1 WHERE score > 99.5",
    );
    assert_eq!(failures.len() as i64, expected_chunks);
    assert_eq!(
        failures[0]["error"].as_str().unwrap(),
        format!(
            "check failed: sqlite://samples/shop.db table users_v1, id={}, column score, value '{}': check `score range`: is out of range: expected at most 99.5 (policy = \"fail\" stops the chunk)",
            first[0], first[2]
        )
    );
}

#[test]
fn references_look_values_up_in_the_source_database() {
    let ws = Workspace::new();
    let columns = r#"id = { type = "bigint", expr = "id" }
customer_id = { type = "bigint", expr = "id % 60" }"#;
    let p = users_pipeline(
        &ws,
        "refs",
        columns,
        "[[checks]]\ncolumn = \"customer_id\"\nreferences = \"customers.id\"\n",
    );
    let out = ws.rowshift(&["run", &p, "--json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let known = count(
        &ws,
        "samples/shop.db",
        "SELECT count(*) FROM users_v1 WHERE id % 60 IN (SELECT id FROM customers)",
    );
    assert!(known > 0 && known < 1000);
    assert_eq!(
        count(&ws, "out/refs.db", "SELECT count(*) FROM users"),
        known
    );
    assert_eq!(
        count(
            &ws,
            "out/refs.db",
            "SELECT count(*) FROM users_rejects WHERE reason = 'check `customer_id references`: has no match in customers.id'"
        ),
        1000 - known
    );
    // A table that exists nowhere is an error at validate time, at the check's line.
    let text = std::fs::read_to_string(ws.path(&p))
        .unwrap()
        .replace("customers.id", "clients.id");
    ws.write(&p, &text);
    let out = ws.rowshift(&["validate", &p]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("pipelines/refs.toml:17:1:"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("referenced table `clients` does not exist in sqlite://"),
        "{}",
        out.stderr
    );
}

#[test]
fn check_mistakes_are_config_errors_at_their_lines() {
    let ws = Workspace::new();
    let p = users_pipeline(
        &ws,
        "badchecks",
        COLUMNS,
        r#"[[checks]]
column = "emial"
not_null = true

[[checks]]
column = "score"
min = 1
regex = "x"

[[checks]]
column = "email"
regex = "(unclosed"
policy = "sometimes"
"#,
    );
    let out = ws.rowshift(&["validate", &p]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    let e = &out.stderr;
    for expected in [
        "has 4 errors",
        "pipelines/badchecks.toml:18:10: check names column `emial`, which [target.columns] does not declare",
        "did you mean `email`?",
        "pipelines/badchecks.toml:23:1: a check has one rule, this one has min, regex",
        "pipelines/badchecks.toml:28:9: invalid regex",
        "pipelines/badchecks.toml:29:10: unknown policy `sometimes`; expected \"reject\", \"fail\" or \"warn\"",
    ] {
        assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
    }
    // A SQL check is compiled against the target columns, at its line.
    let p = users_pipeline(
        &ws,
        "exprcheck",
        COLUMNS,
        "[[checks]]\nexpr = \"score + 1\"\n",
    );
    let out = ws.rowshift(&["validate", &p]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr.contains("pipelines/exprcheck.toml:18:1: check `check 1` must be true or false for each row, but gives Float64"),
        "{}",
        out.stderr
    );
}

#[test]
fn zone_less_timestamps_into_timestamptz_are_rejected_unless_a_zone_is_declared() {
    let ws = Workspace::new();
    let columns = r#"id = { type = "bigint", expr = "id" }
created = { type = "timestamptz", expr = "created_at" }"#;
    let p = users_pipeline(&ws, "tz", columns, "");
    let out = ws.rowshift(&["run", &p, "--json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["rows"]["rejected"], 1000);
    assert_eq!(
        json["rejects"][0]["reason"],
        "column created: value has no time zone, and the timestamptz column declares none to read it in; set timezone = \"...\" on the column"
    );
    let with_zone = columns.replace(
        "expr = \"created_at\"",
        "expr = \"created_at\", timezone = \"+05:30\"",
    );
    let p = users_pipeline(&ws, "tz2", &with_zone, "");
    let out = ws.rowshift(&["run", &p, "--json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let src = sqlite_rows(
        &ws.path("samples/shop.db"),
        "SELECT created_at FROM users_v1 WHERE id = 1",
    );
    let got = sqlite_rows(
        &ws.path("out/tz2.db"),
        "SELECT created FROM users WHERE id = 1",
    );
    // 2019-03-06 06:15:10 at +05:30 is 00:45:10 UTC.
    assert_eq!(src, [["2019-03-06 06:15:10"]]);
    assert_eq!(got, [["2019-03-06 00:45:10+00:00"]]);
}

#[test]
fn verify_reports_exactly_the_tampered_chunks_and_repair_fixes_them() {
    let ws = Workspace::new();
    let p = users_pipeline(&ws, "recon", COLUMNS, "");
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let clean = ws.rowshift(&["verify", &p]);
    assert_eq!(clean.code, 0, "{}{}", clean.stdout, clean.stderr);
    assert!(
        clean.stdout.contains("10 compared, 0 differ"),
        "{}",
        clean.stdout
    );

    // Change a value in chunk 1, delete a row in chunk 4, duplicate a row in chunk 8.
    sqlite_exec(
        &ws.path("out/recon.db"),
        "UPDATE users SET email = 'changed@example.com' WHERE id = 150;
         DELETE FROM users WHERE id = 420;
         INSERT INTO users SELECT * FROM users WHERE id = 810;",
    );
    let out = ws.rowshift(&["verify", &p, "--json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let diffs = crate::common::verify_differences(&out.stdout);
    let email_150 = sqlite_rows(
        &ws.path("samples/shop.db"),
        "SELECT lower(trim(email)) FROM users_v1 WHERE id = 150",
    );
    assert_eq!(
        diffs,
        [
            (
                1,
                format!(
                    "id=150, column email: sent '{}', the target holds 'changed@example.com'",
                    email_150[0][0]
                )
            ),
            (4, "id=420: missing from the target".to_string()),
            (
                8,
                "id=810: the target holds 2 rows with this key, 1 was sent".to_string()
            ),
        ]
    );
    let text = ws.rowshift(&["verify", &p]);
    assert!(
        text.stdout.contains("10 compared, 3 differ"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("rewrite them with: rowshift verify --repair"),
        "{}",
        text.stdout
    );

    let out = ws.rowshift(&["verify", &p, "--repair"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("repaired 3 of 3 chunks (300 rows written)"),
        "{}",
        out.stdout
    );
    let again = ws.rowshift(&["verify", &p]);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert_eq!(
        sqlite_rows(
            &ws.path("out/recon.db"),
            "SELECT count(*), count(DISTINCT id) FROM users"
        ),
        [["1000", "1000"]]
    );
}

#[test]
fn verify_finds_a_changed_parquet_part() {
    let ws = Workspace::new();
    let out = ws.rowshift(&[
        "run",
        "pipelines/orders_csv_to_parquet.toml",
        "--quiet",
        "--chunk-rows",
        "20",
    ]);
    assert!(out.code <= 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        ws.rowshift(&["verify", "pipelines/orders_csv_to_parquet.toml"])
            .code,
        0
    );
    // Swap two part files: each still holds valid rows, but not its chunk's.
    let dir = ws.path("out/orders_parquet");
    let a = dir.join("part-00000.parquet");
    let b = dir.join("part-00001.parquet");
    let tmp = dir.join("swap");
    std::fs::rename(&a, &tmp).unwrap();
    std::fs::rename(&b, &a).unwrap();
    std::fs::rename(&tmp, &b).unwrap();
    let out = ws.rowshift(&["verify", "pipelines/orders_csv_to_parquet.toml", "--json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let chunks: Vec<u64> = json["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["chunk"].as_u64().unwrap())
        .collect();
    assert_eq!(chunks, [0, 1]);
}

#[test]
fn a_source_value_that_does_not_fit_its_column_is_quarantined_whole() {
    let ws = Workspace::new();
    // SQLite stores whatever it is given: a text in the REAL column, and bytes that are
    // not UTF-8 in a TEXT column.
    sqlite_exec(
        &ws.path("samples/shop.db"),
        "UPDATE users_v1 SET score = 'lots' WHERE id = 42;
         UPDATE users_v1 SET country = CAST(x'46ff' AS TEXT) WHERE id = 778;",
    );
    let p = users_pipeline(&ws, "stored", COLUMNS, "");
    let out = ws.rowshift(&["run", &p, "--json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["rows"]["read"], 1000, "{}", out.stdout);
    assert_eq!(json["rows"]["written"], 998, "{}", out.stdout);
    assert_eq!(json["rows"]["rejected"], 2, "{}", out.stdout);
    assert_eq!(
        count(
            &ws,
            "out/stored.db",
            "SELECT count(*) FROM users WHERE id IN (42, 778)"
        ),
        0
    );
    assert_eq!(
        count(&ws, "out/stored.db", "SELECT count(*) FROM users"),
        998
    );
    let rejects = sqlite_rows(
        &ws.path("out/stored.db"),
        "SELECT row_key, column_name, value LIKE '{%', reason, json_extract(json_extract(source_row, '$._unreadable'), '$.id') = CAST(row_key AS INTEGER)
         FROM users_rejects ORDER BY CAST(row_key AS INTEGER)",
    );
    assert_eq!(
        rejects,
        [
            [
                "42",
                "score",
                "1",
                "a TEXT value in a column read as REAL; [source.types] score = \"text\" (or another type) reads the column as that type",
                "1"
            ],
            [
                "778",
                "country",
                "1",
                "is not valid UTF-8 text; [source.types] country = \"bytea\" reads the column's bytes",
                "1"
            ],
        ]
    );
    let stored = sqlite_rows(
        &ws.path("out/stored.db"),
        "SELECT json_extract(json_extract(source_row, '$._unreadable'), '$.score') FROM users_rejects WHERE row_key = '42'",
    );
    assert_eq!(stored, [["lots"]]);
}

#[test]
fn rows_a_sqlite_target_refuses_are_quarantined_and_the_rest_of_their_chunk_written() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path("out")).unwrap();
    let p = users_pipeline(&ws, "refused", COLUMNS, "");
    let text = std::fs::read_to_string(ws.path(&p)).unwrap().replace(
        "table = \"users\"",
        "table = \"users\"\nif_exists = \"append\"",
    );
    ws.write(&p, &text);
    // The new table is stricter than the data: a check no German row meets, and a
    // trigger that refuses one id.
    sqlite_exec(
        &ws.path("out/refused.db"),
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, country TEXT CHECK (country <> 'DE'), score REAL);
         CREATE TRIGGER reserved BEFORE INSERT ON users WHEN NEW.id = 7
           BEGIN SELECT RAISE(ABORT, 'id 7 is reserved'); END;",
    );
    let out = ws.rowshift(&["run", &p]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let german = sqlite_rows(
        &ws.path("samples/shop.db"),
        "SELECT group_concat(id) FROM (SELECT id FROM users_v1 WHERE country = 'DE' ORDER BY id)",
    );
    assert_eq!(german[0][0].split(',').count(), 63);
    let db = "out/refused.db";
    assert_eq!(count(&ws, db, "SELECT count(*) FROM users"), 1000 - 63 - 1);
    assert_eq!(
        sqlite_rows(
            &ws.path(db),
            "SELECT group_concat(row_key) FROM (SELECT row_key FROM users_rejects WHERE reason LIKE '%DE%' ORDER BY CAST(row_key AS INTEGER))"
        ),
        german
    );
    assert_eq!(
        sqlite_rows(
            &ws.path(db),
            "SELECT reason, count(*) FROM users_rejects GROUP BY reason ORDER BY reason"
        ),
        [
            [
                "the target refused the row: CHECK constraint failed: country <> 'DE'",
                "63"
            ],
            ["the target refused the row: id 7 is reserved", "1"]
        ]
    );
    // The whole source row is kept, as for any rejected row.
    assert_eq!(
        sqlite_rows(
            &ws.path(db),
            "SELECT chunk, json_extract(source_row, '$.country'), json_extract(source_row, '$.full_name') IS NOT NULL FROM users_rejects WHERE row_key = '7'"
        ),
        [["0", "IN", "1"]]
    );
    assert_eq!(
        count(
            &ws,
            db,
            "SELECT count(*) FROM users WHERE country = 'DE' OR id = 7"
        ),
        0
    );
    assert!(
        out.stdout
            .contains("the target refused the row: CHECK constraint failed: country <> '…'"),
        "{}",
        out.stdout
    );
    // verify does not expect the refused rows in the target.
    let out = ws.rowshift(&["verify", &p]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    // Retried before the table changed, every row is refused again: they all stay.
    let out = ws.rowshift(&["retry", &p, "--rejects"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(count(&ws, db, "SELECT count(*) FROM users_rejects"), 64);
    assert_eq!(count(&ws, db, "SELECT count(*) FROM users"), 1000 - 63 - 1);
}

#[test]
fn retry_rejects_under_a_non_unique_key_writes_only_the_quarantined_row() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path("out")).unwrap();
    sqlite_exec(
        &ws.path("out/dup_src.db"),
        "CREATE TABLE t (id INTEGER, qty INTEGER);
         INSERT INTO t VALUES (1, 5), (1, 500), (2, 7), (3, 9), (3, 900), (3, 11);",
    );
    let pipeline = |max: i64| {
        format!(
            r#"name = "dupkey"
[source]
url = "sqlite://../out/dup_src.db"
table = "t"
key = "id"
[target]
url = "sqlite://../out/dup_dst.db"
table = "t"
[target.columns]
id = {{ type = "bigint", expr = "id" }}
qty = {{ type = "bigint", expr = "qty" }}
[[checks]]
column = "qty"
max = {max}
"#
        )
    };
    let p = ws.write("pipelines/dupkey.toml", &pipeline(100));
    let out = ws.rowshift(&["run", &p]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let rows = |sql: &str| sqlite_rows(&ws.path("out/dup_dst.db"), sql);
    assert_eq!(
        rows("SELECT id, qty FROM t ORDER BY id, qty"),
        [["1", "5"], ["2", "7"], ["3", "9"], ["3", "11"]]
    );
    assert_eq!(
        rows("SELECT row_key FROM t_rejects ORDER BY row_key"),
        [["1"], ["3"]]
    );
    // Fixed: each key names several source rows, and only the quarantined one is
    // written again, not its twin that is already in the target.
    ws.write(&p, &pipeline(1000));
    let out = ws.rowshift(&["retry", &p, "--rejects"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        rows("SELECT id, qty FROM t ORDER BY id, qty"),
        [
            ["1", "5"],
            ["1", "500"],
            ["2", "7"],
            ["3", "9"],
            ["3", "11"],
            ["3", "900"]
        ]
    );
    assert_eq!(rows("SELECT count(*) FROM t_rejects"), [["0"]]);
}

#[test]
fn a_refused_row_gives_back_its_unique_value_to_a_later_row() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path("out")).unwrap();
    // Row 1 and row 150 share an email; the target refuses row 1 (a German row).
    sqlite_exec(
        &ws.path("out/uniq_src.db"),
        "CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT, country TEXT);
         WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 200)
         INSERT INTO t SELECT n, 'user' || n || '@example.com', 'FR' FROM g;
         UPDATE t SET email = 'shared@example.com', country = 'DE' WHERE id = 1;
         UPDATE t SET email = 'shared@example.com' WHERE id = 150;",
    );
    sqlite_exec(
        &ws.path("out/uniq_dst.db"),
        "CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT, country TEXT CHECK (country <> 'DE'))",
    );
    let p = ws.write(
        "pipelines/uniq.toml",
        r#"name = "uniq"
[source]
url = "sqlite://../out/uniq_src.db"
table = "t"
key = "id"
[target]
url = "sqlite://../out/uniq_dst.db"
table = "t"
if_exists = "append"
[target.columns]
id = { type = "bigint", expr = "id" }
email = { type = "text", expr = "email" }
country = { type = "text", expr = "country" }
[[checks]]
column = "email"
unique = true
[chunks]
rows = 100
parallel = 1
"#,
    );
    let out = ws.rowshift(&["run", &p]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let rows = |sql: &str| sqlite_rows(&ws.path("out/uniq_dst.db"), sql);
    // Row 1 never landed, so row 150 is the only one with the email and is written.
    assert_eq!(
        rows("SELECT row_key, reason FROM t_rejects"),
        [[
            "1",
            "the target refused the row: CHECK constraint failed: country <> 'DE'"
        ]]
    );
    assert_eq!(
        rows("SELECT id FROM t WHERE email = 'shared@example.com'"),
        [["150"]]
    );
    assert_eq!(rows("SELECT count(*) FROM t"), [["199"]]);
}

scenarios!(
    postgres: crate::common::PgSchema,
    mysql: crate::common::MyDb,
    sqlite: crate::scenarios::SqliteFile;
    [unique_holds_across_chunks_and_a_resumed_run]
);

fn unique_holds_across_chunks_and_a_resumed_run<T: Target>() {
    let ws = Workspace::new();
    let dst = T::create("rs_unique");
    // Tags repeat every 300 ids, so duplicates land in other chunks; a resumed run reads
    // the committed chunks' tags back from the target, streaming.
    let p = ws.write(
        "pipelines/uniq.toml",
        &format!(
            r#"name = "uniq"
[source]
url = "sqlite://../samples/shop.db"
table = "users_v1"
key = "id"
[target]
{}
table = "users"
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
tag = {{ type = "text", expr = "CAST(id % 300 AS TEXT)" }}
[chunks]
rows = 100
parallel = 2
[[checks]]
column = "tag"
unique = true
"#,
            dst.location()
        ),
    );
    let out = ws.rowshift_env(
        &["run", &p, "--json", "--parallel", "2"],
        &[("ROWSHIFT_FAULT", "chunk=5")],
    );
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    let out = ws.rowshift(&["run", &p, "--json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["chunks_skipped"], 9, "{json}");
    // Every tag value is written exactly once over both runs; the other 700 rows are
    // in the quarantine as duplicates.
    assert_eq!(
        dst.rows(&format!(
            "SELECT {}, {} FROM {}.users",
            T::text("count(*)"),
            T::text("count(DISTINCT tag)"),
            dst.q()
        )),
        [["300", "300"]]
    );
    assert_eq!(dst.count("users_rejects"), 700);
    assert_eq!(
        dst.rows(&format!(
            "SELECT DISTINCT substr(reason, 1, 40) FROM {}.users_rejects",
            dst.q()
        )),
        [["check `tag unique`: is not unique: a row"]]
    );
}
