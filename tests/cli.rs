//! End-to-end tests: the `rowshift` binary and the library on the files in `samples/`
//! and `pipelines/`, checked against independently computed expectations.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{Workspace, parquet_rows, sqlite_rows};
use proptest::prelude::*;
use rowshift::config::Pipeline;
use rowshift::plan::Plan;
use rowshift::run::{NoopObserver, RunOptions, run};

/// Every example validates as the user would run it; the database examples with
/// `ROWSHIFT_PG_URL` and `ROWSHIFT_MYSQL_URL` set to the test servers, in a schema and a
/// database of this test's own that hold the tables they read.
#[test]
fn every_pipeline_in_pipelines_validates() {
    let ws = Workspace::new();
    let pg = common::PgSchema::new("rs_examples_validate");
    let my = common::MyDb::new("rs_examples_validate");
    examples::make_example_sources(&pg, &my);
    let env = examples::example_env();
    let lookup = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
    let (mut seen, mut on_servers) = (0, 0);
    for entry in std::fs::read_dir(ws.path("pipelines")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            if text.contains("${ROWSHIFT_") {
                on_servers += 1;
            }
            let text = examples::in_own_schemas(&text, &pg.name, &my.name);
            let pipeline = Pipeline::parse(&path, &text, &lookup)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let plan = Plan::build(pipeline).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            plan.open_sink()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 7, "expected at least 7 pipelines, found {seen}");
    assert!(
        on_servers >= 3,
        "expected at least 3 database examples, found {on_servers}"
    );
}

#[test]
fn reference_pipeline_sets_every_option() {
    let ws = Workspace::new();
    let text = std::fs::read_to_string(ws.path("pipelines/reference.toml")).unwrap();
    for key in [
        "name",
        "url",
        "table",
        "key",
        "header",
        "delimiter",
        "quote",
        "escape",
        "null",
        "quoting",
        "null_quoted",
        "null_columns",
        "max_record_bytes",
        "encoding",
        "skip_lines",
        "trim",
        "[source.types]",
        "format",
        "if_exists",
        "[target.csv]",
        "compression",
        "row_group_rows",
        "primary_key",
        "nullable",
        "where",
        "rows",
        "parallel",
        "batch_rows",
        "max_rejects",
        "max_reject_ratio",
        "verify",
        "[[checks]]",
        "not_null",
        "unique",
        "min",
        "max",
        "regex",
        "accepted",
        "references",
        "expr",
        "policy",
        "timezone",
        "schema",
        "write_mode",
        "pool_size",
        "statement_timeout_ms",
        "lock_timeout_ms",
    ] {
        assert!(
            text.contains(key),
            "reference.toml does not mention `{key}`"
        );
    }
}

/// users_v1 as the quickstart should write it, computed in Rust from the source rows.
fn expected_users_v2(ws: &Workspace) -> BTreeMap<i64, String> {
    let rows = sqlite_rows(
        &ws.path("samples/shop.db"),
        "SELECT id, email, full_name, created_at, country, score FROM users_v1 WHERE deleted_at IS NULL",
    );
    rows.into_iter()
        .map(|r| {
            let id: i64 = r[0].parse().unwrap();
            let mut names = r[2].split(' ');
            let first = names.next().unwrap_or("").to_string();
            let last = names.next().unwrap_or("").to_string();
            let country = if r[4].is_empty() || r[4] == "NULL" {
                "NULL".to_string()
            } else {
                r[4].to_uppercase()
            };
            let score = if r[5] == "NULL" {
                "NULL".to_string()
            } else {
                format!("{:.2}", r[5].parse::<f64>().unwrap())
            };
            (
                id,
                format!(
                    "{id}|{}|{first}|{last}|{}|{country}|{score}",
                    r[1].trim().to_lowercase(),
                    &r[3][..10]
                ),
            )
        })
        .collect()
}

#[test]
fn quickstart_moves_every_live_row_with_its_transforms() {
    let ws = Workspace::new();
    let out = ws.rowshift(&["run", "pipelines/quickstart.toml", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let summary: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(summary["rows"]["read"], 1000);
    assert_eq!(summary["rows"]["written"], 903);
    assert_eq!(summary["rows"]["filtered"], 97);
    assert_eq!(summary["rows"]["rejected"], 0);
    assert_eq!(summary["chunks_failed"], 0);

    let got: BTreeMap<i64, String> = sqlite_rows(
        &ws.path("out/shop_v2.db"),
        "SELECT id, email, first_name, last_name, signup_on, country, score FROM users_v2",
    )
    .into_iter()
    .map(|r| (r[0].parse().unwrap(), r.join("|")))
    .collect();
    assert_eq!(got, expected_users_v2(&ws));
}

#[test]
fn a_pipeline_runs_the_same_from_any_working_directory() {
    let ws = Workspace::new();
    let out = ws.rowshift_in("pipelines", &["run", "quickstart.toml", "--quiet"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("1000 read, 903 written, 97 filtered, 0 rejected"),
        "{}",
        out.stdout
    );
    assert!(ws.path("out/shop_v2.db").exists());
}

#[test]
fn csv_to_parquet_keeps_quoted_newlines_and_reads_three_date_formats() {
    let ws = Workspace::new();
    let out = ws.rowshift(&["run", "pipelines/orders_csv_to_parquet.toml", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let summary: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(summary["rows"]["read"], 500);
    assert_eq!(summary["rows"]["filtered"], 57);
    assert_eq!(summary["rows"]["written"], 443);

    let rows = parquet_rows(&ws.path("out/orders_parquet"));
    assert_eq!(rows.len(), 443);
    assert!(
        !rows.contains_key("2"),
        "order 2 is cancelled and must be filtered out"
    );
    // Row 1: a note with an embedded newline, a timestamp-formatted date.
    assert_eq!(
        rows["1"],
        "1|uma.dubois@mail.example.org|118.59|GBP|2024-12-17|line one\nline two|false"
    );
    let parts: Vec<_> = std::fs::read_dir(ws.path("out/orders_parquet"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        parts.len(),
        5,
        "one part file per chunk, no temporary files: {parts:?}"
    );
    assert!(
        parts
            .iter()
            .all(|p| p.to_string_lossy().starts_with("part-"))
    );
}

#[test]
fn parquet_to_sqlite_splits_by_row_group_and_derives_columns() {
    let ws = Workspace::new();
    let out = ws.rowshift(&[
        "run",
        "pipelines/events_parquet_to_sqlite.toml",
        "--json",
        "--chunk-rows",
        "1",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let summary: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(summary["chunks_total"], 4, "4 row groups make 4 chunks");
    assert_eq!(summary["rows"]["written"], 2000);
    let counts = sqlite_rows(
        &ws.path("out/events.db"),
        "SELECT count(*), sum(is_purchase), count(amount), count(DISTINCT payload_md5) FROM events",
    );
    let source = parquet_rows(&ws.path("samples/events.parquet"));
    let purchases = source
        .values()
        .filter(|r| r.split('|').nth(2) == Some("purchase"))
        .count();
    assert_eq!(counts[0][0], "2000");
    assert_eq!(counts[0][1], purchases.to_string());
}

#[test]
fn a_rejected_row_goes_to_the_quarantine_with_file_line_column_value_and_type() {
    let ws = Workspace::new();
    let cases = [
        (
            "int_overflow.csv",
            "bigint",
            "column amount: value is out of range for bigint (-9223372036854775808 to 9223372036854775807)",
            "samples/invalid/int_overflow.csv line 3 (id=2), column amount, value '99999999999999999999': value is out of range for bigint (-9223372036854775808 to 9223372036854775807)",
        ),
        (
            "float_to_int_fraction.csv",
            "bigint",
            "column amount: value has a fraction, which bigint cannot hold (it takes whole numbers)",
            "samples/invalid/float_to_int_fraction.csv line 4 (id=3), column amount, value '12.5': value has a fraction, which bigint cannot hold (it takes whole numbers)",
        ),
        (
            "decimal_scale.csv",
            "numeric(10,2)",
            "column amount: value has more than 2 digits after the point, which numeric(10,2) would round",
            "samples/invalid/decimal_scale.csv line 4 (id=3), column amount, value '1.005': value has more than 2 digits after the point, which numeric(10,2) would round",
        ),
        (
            "bad_date.csv",
            "bigint",
            "column born_on: value cannot be read as date",
            "samples/invalid/bad_date.csv line 3 (id=2), column born_on, value '2023-02-30': value cannot be read as date",
        ),
        (
            "null_in_not_null.csv",
            "bigint",
            "column name: is NULL, but the column is declared nullable = false (varchar(255))",
            "samples/invalid/null_in_not_null.csv line 4 (id=3), column name: is NULL, but the column is declared nullable = false (varchar(255))",
        ),
        (
            "timestamp_without_zone.csv",
            "bigint",
            "column born_on: value has no time zone, and the timestamptz column declares none to read it in; set timezone = \"...\" on the column",
            "samples/invalid/timestamp_without_zone.csv line 3 (id=2), column born_on, value '1985-06-15 09:30:00': value has no time zone, and the timestamptz column declares none to read it in; set timezone = \"...\" on the column",
        ),
        (
            "too_long.csv",
            "bigint",
            "column name: has 300 characters, more than varchar(255) holds",
            "column name, value '",
        ),
    ];
    for (file, amount_type, reason, example) in cases {
        let pipeline = invalid_pipeline(&ws, file, amount_type);
        let out = ws.rowshift(&["run", &pipeline, "--quiet"]);
        assert_eq!(out.code, 1, "{file}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stdout
                .contains(&format!("rejected 1 × {reason}\n      e.g. ")),
            "{file}:\n{}",
            out.stdout
        );
        assert!(out.stdout.contains(example), "{file}:\n{}", out.stdout);
        // The rejected row is kept whole in the quarantine; the others are written.
        let quarantine = std::fs::read_to_string(
            ws.path(&format!("out/invalid_{file}/_rejects/part-00000.ndjson")),
        )
        .unwrap();
        let lines: Vec<serde_json::Value> = quarantine
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{file}: {quarantine}");
        assert_eq!(
            lines[0]["row"]["id"],
            lines[0]["key"]
                .as_str()
                .unwrap()
                .parse::<i64>()
                .map(|_| lines[0]["row"]["id"].clone())
                .unwrap()
        );
        let source_rows = std::fs::read_to_string(ws.path(&format!("samples/invalid/{file}")))
            .unwrap()
            .lines()
            .count()
            - 1;
        let written =
            std::fs::read_to_string(ws.path(&format!("out/invalid_{file}/part-00000.csv")))
                .unwrap()
                .lines()
                .count()
                - 1;
        assert_eq!(written, source_rows - 1, "{file}");
    }
    // A ragged line, and bytes that are not UTF-8, cannot be read into a row at all: the
    // record goes to the quarantine as its raw text, and the rest of the chunk is written.
    for (file, reason, example) in [
        (
            "ragged_row.csv",
            "expected 4 fields, found 5",
            "samples/invalid/ragged_row.csv line 3, value '2,Bob,20,1985-06-15,extra': expected 4 fields, found 5",
        ),
        (
            "invalid_utf8.csv",
            "column name: is not valid UTF-8 text",
            "samples/invalid/invalid_utf8.csv line 3, column name, value '2,B\u{fffd}ob,20,1985-06-15': is not valid UTF-8 text",
        ),
    ] {
        let pipeline = invalid_pipeline(&ws, file, "bigint");
        let dry = ws.rowshift(&["dry-run", &pipeline]);
        assert_eq!(dry.code, 1, "{}{}", dry.stdout, dry.stderr);
        assert!(
            dry.stdout
                .contains(&format!("  1 × {reason}\n      {example}\n")),
            "{file}: {}",
            dry.stdout
        );
        let out = ws.rowshift(&["run", &pipeline, "--quiet"]);
        assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
        assert!(
            out.stdout
                .contains(&format!("rejected 1 × {reason}\n      e.g. {example}\n")),
            "{file}: {}",
            out.stdout
        );
        let written =
            std::fs::read_to_string(ws.path(&format!("out/invalid_{file}/part-00000.csv")))
                .unwrap();
        assert_eq!(
            written, "id,name,amount,born_on\n1,Alice,10,1990-01-01\n3,Carol,30,1979-12-31\n",
            "{file}"
        );
        let quarantined = std::fs::read_to_string(
            ws.path(&format!("out/invalid_{file}/_rejects/part-00000.ndjson")),
        )
        .unwrap();
        let entry: serde_json::Value = serde_json::from_str(quarantined.trim()).unwrap();
        assert_eq!(
            entry["row"]["_unreadable"],
            example.split('\'').nth(1).unwrap()
        );
        // retry --rejects cannot read it either; it stays.
        let out = ws.rowshift(&["retry", &pipeline, "--rejects"]);
        assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("still rejected 1"), "{}", out.stdout);
    }
}

#[test]
fn unreadable_lines_mid_chunk_are_set_aside_without_losing_or_repeating_a_row() {
    let ws = Workspace::new();
    let mut csv = String::from("id,name,amount,born_on\n");
    for id in 1..=60 {
        match id {
            // Ragged, in the second batch of the first chunk and in the second chunk.
            13 | 41 => csv.push_str(&format!("{id},X,1,2000-01-01,extra\n")),
            // A bad date after a ragged line: its location must still be right.
            45 => csv.push_str("45,\"multi\nline\",5,2000-02-30\n"),
            _ => csv.push_str(&format!("{id},\"N{id}\",{id},2000-01-01\n")),
        }
    }
    ws.write("samples/mid.csv", &csv);
    let pipeline = invalid_pipeline(&ws, "mid", "bigint").to_string();
    let text = std::fs::read_to_string(ws.path(&pipeline))
        .unwrap()
        .replace("../samples/invalid/mid", "../samples/mid.csv")
        + "[chunks]\nrows = 30\nbatch_rows = 4\n";
    ws.write(&pipeline, &text);
    let out = ws.rowshift(&["run", &pipeline, "--json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["rows"]["read"], 60);
    assert_eq!(json["rows"]["written"], 57);
    assert_eq!(json["rows"]["rejected"], 3);
    let mut written: Vec<i64> = Vec::new();
    for part in std::fs::read_dir(ws.path("out/invalid_mid")).unwrap() {
        let p = part.unwrap().path();
        if p.extension().is_some_and(|e| e == "csv") {
            for line in std::fs::read_to_string(&p).unwrap().lines().skip(1) {
                if let Ok(id) = line.split(',').next().unwrap().parse() {
                    written.push(id);
                }
            }
        }
    }
    written.sort();
    let expected: Vec<i64> = (1..=60).filter(|i| ![13, 41, 45].contains(i)).collect();
    assert_eq!(written, expected);
    let examples: Vec<String> = json["rejects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["example"]["location"].as_str().unwrap().to_string())
        .collect();
    assert!(
        examples.contains(&"samples/mid.csv line 46 (id=45)".to_string()),
        "{examples:?}"
    );
}

fn invalid_pipeline(ws: &Workspace, file: &str, amount_type: &str) -> String {
    let born_on = match file {
        "timestamp_without_zone.csv" => "timestamptz",
        _ => "date",
    };
    ws.write(
        &format!("pipelines/invalid_{file}.toml"),
        &format!(
            r#"name = "invalid_{}"
[source]
url = "../samples/invalid/{file}"
key = "id"
[target]
url = "../out/invalid_{file}"
format = "csv"
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
name = {{ type = "varchar(255)", expr = "name", nullable = false }}
amount = {{ type = "{amount_type}", expr = "amount" }}
born_on = {{ type = "{born_on}", expr = "born_on" }}
"#,
            file.replace('.', "_")
        ),
    )
}

#[test]
fn validate_reports_all_errors_with_lines_and_exits_2() {
    let ws = Workspace::new();
    let pipeline = ws.write(
        "pipelines/broken.toml",
        r#"name = "broken"
[source]
url = "sqlite://../samples/shop.db"
table = "users_v1"
key = "id"
[target]
url = "sqlite://../out/x.db"
table = "x"
[target.columns]
id = { type = "bigint", expr = "id" }
mail = { type = "text", expr = "lower(emial)" }
when = { type = "date", expr = "full_name + 1" }
[filter]
where = "country"
"#,
    );
    let out = ws.rowshift(&["validate", &pipeline]);
    assert_eq!(out.code, 2);
    let err = out.stderr;
    assert!(err.contains("has 3 errors"), "{err}");
    assert!(err.contains("broken.toml:11:32: expression for column `mail` names column `emial`, which the source does not have"), "{err}");
    assert!(err.contains("help: did you mean `email`?"), "{err}");
    assert!(
        err.contains("broken.toml:12:32: expression for column `when`"),
        "{err}"
    );
    assert!(
        err.contains("broken.toml:14:9: filter must be true or false for each row, but gives text"),
        "{err}"
    );
    assert!(!ws.path("out/x.db").exists(), "validate writes nothing");
}

/// `rowshift run … | head` after `head` has gone: the run's work is committed, and the
/// summary that finds its reader gone ends the process as a Unix tool does (128 +
/// SIGPIPE), without a panic message.
#[test]
fn a_summary_whose_reader_is_gone_ends_quietly_after_the_work() {
    let ws = Workspace::new();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rowshift"))
        .args(["run", "pipelines/quickstart.toml", "--quiet"])
        .current_dir(ws.path("."))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before anything is printed.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The work was done: every chunk of the quickstart is committed.
    let status = ws.rowshift(&["status", "pipelines/quickstart.toml", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(v["chunks"]["done"], v["chunks_total"], "{v}");
    assert!(v["chunks_total"].as_u64().unwrap() > 0, "{v}");
}

#[test]
fn validate_accepts_a_good_pipeline() {
    let ws = Workspace::new();
    let out = ws.rowshift(&["validate", "pipelines/quickstart.toml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with(
            "ok: pipelines/quickstart.toml reads sqlite://samples/shop.db table users_v1"
        ),
        "{}",
        out.stdout
    );
}

#[test]
fn passwords_never_appear_in_messages() {
    let ws = Workspace::new();
    let pipeline = ws.write(
        "pipelines/secret.toml",
        "name = \"s\"\n[source]\nurl = \"${SECRET_URL}\"\ntable = \"t\"\nkey = \"id\"\n[target]\nurl = \"out/x\"\nformat = \"csv\"\n[target.columns]\nid = { type = \"bigint\", expr = \"id\" }\n",
    );
    let out = ws.rowshift_env(
        &["validate", &pipeline],
        &[("SECRET_URL", "postgres://app:hunter2@127.0.0.1:1/db")],
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("postgres://app:***@127.0.0.1:1/db")
            || out.stderr.contains("PostgreSQL"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("hunter2") && !out.stdout.contains("hunter2"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_existing_target_is_never_mixed_into_by_default() {
    let ws = Workspace::new();
    let text = std::fs::read_to_string(ws.path("pipelines/quickstart.toml"))
        .unwrap()
        .replace("if_exists = \"replace\"", "");
    let pipeline = ws.write("pipelines/no_replace.toml", &text);
    assert_eq!(ws.rowshift(&["run", &pipeline, "--quiet"]).code, 0);
    // The same pipeline resumes its finished checkpoint: nothing to do, nothing written.
    let resumed = ws.rowshift(&["run", &pipeline, "--quiet"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert!(
        resumed
            .stdout
            .contains("0 done, 0 failed, 0 pending, 5 skipped as done by an earlier run"),
        "{}",
        resumed.stdout
    );
    // Another pipeline writing into the same table is refused.
    let other = ws.write(
        "pipelines/other.toml",
        &text.replace("users_v1_to_v2", "another_move"),
    );
    let again = ws.rowshift(&["run", &other, "--quiet"]);
    assert_eq!(again.code, 2);
    assert!(
        again.stderr.contains("table users_v2: the target table already holds 903 rows; set if_exists = \"replace\" or \"append\" in [target]"),
        "{}",
        again.stderr
    );
    let n = sqlite_rows(&ws.path("out/shop_v2.db"), "SELECT count(*) FROM users_v2");
    assert_eq!(n[0][0], "903", "the refused run wrote nothing");
}

#[test]
fn help_shows_examples_and_exit_codes() {
    let ws = Workspace::new();
    for args in [&["--help"][..], &["run", "--help"], &["validate", "--help"]] {
        let out = ws.rowshift(args);
        assert_eq!(out.code, 0);
        assert!(out.stdout.contains("Example:"), "{args:?}: {}", out.stdout);
        assert!(
            out.stdout.contains("Exit codes: 0"),
            "{args:?}: {}",
            out.stdout
        );
    }
    let out = ws.rowshift(&["run", "pipelines/quickstart.toml", "--no-such-flag"]);
    assert_eq!(out.code, 2);
    assert!(
        !ws.path("out/shop_v2.db").exists(),
        "an unknown flag never runs anything"
    );
}

/// Runs a pipeline through the library with a given chunk size and parallelism.
fn run_with(path: &Path, chunk_rows: u64, parallel: usize) -> String {
    let plan = Plan::build(Pipeline::load(path).unwrap()).unwrap();
    let sink = plan.open_sink().unwrap();
    let opts = RunOptions {
        parallel: Some(parallel),
        chunk_rows: Some(chunk_rows),
        restart: true,
        ..RunOptions::default()
    };
    let summary = run(&plan, sink.as_ref(), &NoopObserver, &opts).unwrap();
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    summary.checksum
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// The rows written, and their values, do not depend on chunk size or thread count.
    #[test]
    fn output_does_not_depend_on_chunk_size_or_threads(chunk_rows in 1u64..700, parallel in 1usize..5) {
        let ws = Workspace::new();
        let csv = ws.path("pipelines/orders_csv_to_parquet.toml");
        let db = ws.path("pipelines/quickstart.toml");
        let csv_sum = run_with(&csv, 100_000, 1);
        let csv_baseline = parquet_rows(&ws.path("out/orders_parquet"));
        let db_sum = run_with(&db, 100_000, 1);
        let db_baseline = sqlite_rows(&ws.path("out/shop_v2.db"), "SELECT * FROM users_v2 ORDER BY id");

        prop_assert_eq!(run_with(&csv, chunk_rows, parallel), csv_sum);
        prop_assert_eq!(parquet_rows(&ws.path("out/orders_parquet")), csv_baseline);
        prop_assert_eq!(run_with(&db, chunk_rows, parallel), db_sum);
        prop_assert_eq!(sqlite_rows(&ws.path("out/shop_v2.db"), "SELECT * FROM users_v2 ORDER BY id"), db_baseline);
    }
}

/// Every file under the workspace with its bytes.
fn snapshot(ws: &Workspace) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.insert(
                    format!("{}/", p.strip_prefix(root).unwrap().display()),
                    Vec::new(),
                );
                walk(&p, root, out);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&ws.path(""), &ws.path(""), &mut out);
    out
}

#[test]
fn dry_run_writes_nothing_not_even_on_error() {
    let ws = Workspace::new();
    // A finished target exists for one pipeline; the other has never run.
    assert_eq!(
        ws.rowshift(&["run", "pipelines/quickstart.toml", "--quiet"])
            .code,
        0
    );
    // The run folded its write-ahead log into the file, which alone is what the dry run
    // looks at (it opens it as unchanging, to leave not even a lock file).
    assert!(!ws.path("out/shop_v2.db-wal").exists());
    let broken = ws.write(
        "pipelines/broken_dry.toml",
        &std::fs::read_to_string(ws.path("pipelines/quickstart.toml"))
            .unwrap()
            .replace("lower(trim(email))", "lower(emial)"),
    );
    let before = snapshot(&ws);
    let runs: [(&[&str], i32); 6] = [
        (&["dry-run", "pipelines/quickstart.toml"], 0),
        (
            &[
                "dry-run",
                "pipelines/quickstart.toml",
                "--random",
                "--seed",
                "3",
                "--sample",
                "50",
                "--json",
            ],
            0,
        ),
        (&["dry-run", "pipelines/orders_csv_to_parquet.toml"], 0),
        (
            &[
                "dry-run",
                "pipelines/events_parquet_to_sqlite.toml",
                "--sample",
                "10",
            ],
            0,
        ),
        (&["dry-run", &broken], 2),
        (&["dry-run", "pipelines/quickstart.toml", "--bogus-flag"], 2),
    ];
    for (args, code) in runs {
        let out = ws.rowshift(args);
        assert_eq!(out.code, code, "{args:?}: {}{}", out.stdout, out.stderr);
    }
    assert_eq!(snapshot(&ws), before, "a dry run changed the workspace");
    assert!(!ws.path("out/orders_parquet").exists());
    assert!(!ws.path("out/events.db").exists());
    assert!(!ws.path("pipelines/.rowshift").exists());
}

#[test]
fn dry_run_reports_schema_ddl_preview_and_plan() {
    let ws = Workspace::new();
    let out = ws.rowshift(&["dry-run", "pipelines/quickstart.toml", "--preview", "2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = out.stdout;
    assert!(
        text.contains(
            "dry run of users_v1_to_v2 on a first sample of sqlite://samples/shop.db table users_v1"
        ),
        "{text}"
    );
    assert!(
        text.contains("  email       varchar(254)   not null\n"),
        "{text}"
    );
    assert!(
        text.contains("CREATE TABLE \"users_v2\" (\n    \"id\" INTEGER NOT NULL,"),
        "{text}"
    );
    assert!(text.contains("  sqlite://samples/shop.db table users_v1, id=1\n    before: id='1'  full_name='Kofi Kim'"), "{text}");
    assert!(text.contains("    after:  id='1'  email='kofi.kim@mail.example.org'  first_name='Kofi'  last_name='Kim'  signup_on='2019-03-06'"), "{text}");
    assert!(
        text.contains("sample: 1000 rows read, 903 would be written, 97 filtered out, 0 rejected"),
        "{text}"
    );
    assert!(
        text.contains(
            "rows the filter drops (first 5):\n  sqlite://samples/shop.db table users_v1, id=11:"
        ),
        "{text}"
    );
    assert!(
        text.contains("plan for the full source: 5 chunks of up to 200 rows, 1000 rows in all"),
        "{text}"
    );

    let json = ws.rowshift(&[
        "dry-run",
        "pipelines/quickstart.toml",
        "--sample",
        "100",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["rows"]["read"], 100);
    assert_eq!(
        v["rows"]["written"].as_u64().unwrap() + v["rows"]["filtered"].as_u64().unwrap(),
        100
    );
    assert_eq!(v["plan"]["chunks"], 5);
    assert_eq!(v["plan"]["total_rows"], 1000);
    assert_eq!(v["columns"][0]["name"], "id");
    assert_eq!(v["would_fail"], false);
}

#[test]
fn random_dry_run_is_a_seeded_uniform_sample_of_the_requested_size() {
    let ws = Workspace::new();
    let ids = |seed: &str| -> Vec<String> {
        let out = ws.rowshift(&[
            "dry-run",
            "pipelines/events_parquet_to_sqlite.toml",
            "--random",
            "--seed",
            seed,
            "--sample",
            "40",
            "--preview",
            "40",
            "--json",
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["rows"]["read"], 40);
        v["preview"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["target"][0][1].as_str().unwrap().to_string())
            .collect()
    };
    let a = ids("11");
    assert_eq!(a, ids("11"), "the same seed gives the same sample");
    assert_ne!(a, ids("12"));
    // The file has 2000 rows; a uniform sample of 40 is very unlikely to stay in the first 1000.
    assert!(
        a.iter().any(|id| id.parse::<i64>().unwrap() > 1000),
        "{a:?}"
    );
}

#[test]
fn a_random_dry_run_estimates_from_every_row_it_read_not_the_few_it_kept() {
    let ws = Workspace::new();
    let started = std::time::Instant::now();
    let out = ws.rowshift(&[
        "dry-run",
        "pipelines/quickstart.toml",
        "--random",
        "--sample",
        "5",
        "--json",
    ]);
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    // Drawing the sample read all 1000 rows, so running them all takes about as long
    // again; an estimate from the 5 rows kept would be 200 times that.
    let estimate = v["plan"]["estimated_seconds"].as_f64().unwrap();
    assert!(
        estimate > 0.0 && estimate < wall,
        "{estimate} s vs {wall} s: {v}"
    );
}

#[test]
fn dry_run_groups_rejects_by_reason_and_exits_1() {
    let ws = Workspace::new();
    let pipeline = ws.write(
        "pipelines/people.toml",
        r#"name = "people"
[source]
url = "../samples/invalid/bad_date.csv"
key = "id"
[target]
url = "../out/people"
format = "parquet"
[target.columns]
id = { type = "bigint", expr = "id", primary_key = true }
name = { type = "varchar(255)", expr = "name", nullable = false }
born_on = { type = "date", expr = "born_on" }
"#,
    );
    // Its own source has one bad date; a sample file with more of them groups them.
    let out = ws.rowshift(&["dry-run", &pipeline]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stdout.contains("rejected rows by reason:\n  1 × column born_on: value cannot be read as date\n      samples/invalid/bad_date.csv line 3 (id=2), column born_on, value '2023-02-30': value cannot be read as date"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("rejected rows exceed the pipeline's [limits]"),
        "{}",
        out.stdout
    );

    ws.write("sample.csv", "id,name,amount,born_on\n1,Ann,1,2024-13-01\n2,,2,2024-01-01\n3,Bob,3,2024-02-31\n4,Cy,4,2024-02-28\n");
    let out = ws.rowshift(&[
        "dry-run",
        &pipeline,
        "--sample-file",
        "sample.csv",
        "--json",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["sample_mode"], "file");
    assert_eq!(v["rows"]["rejected"], 3);
    assert_eq!(v["rows"]["written"], 1);
    assert_eq!(
        v["rejects"][0]["reason"],
        "column born_on: value cannot be read as date"
    );
    assert_eq!(v["rejects"][0]["count"], 2);
    assert_eq!(
        v["rejects"][0]["examples"][0]["location"],
        "sample.csv line 2 (id=1)"
    );
    assert_eq!(
        v["rejects"][1]["reason"],
        "column name: is NULL, but the column is declared nullable = false (varchar(255))"
    );
    assert_eq!(v["plan"]["total_rows"], 3, "the plan is the real source's");
    assert!(!ws.path("out/people").exists());
}

#[test]
fn init_writes_a_starter_pipeline_that_validates_and_runs() {
    let ws = Workspace::new();
    let out = ws.rowshift(&[
        "init",
        "--from",
        "samples/orders.csv",
        "--output",
        "pipelines/orders_init.toml",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(ws.path("pipelines/orders_init.toml")).unwrap();
    assert!(
        text.contains("url = \"../samples/orders.csv\"\nkey = \"order_id\"\n"),
        "{text}"
    );
    assert!(
        text.contains("order_id = { type = \"bigint\", expr = \"order_id\", primary_key = true }"),
        "{text}"
    );
    assert!(
        text.contains("amount = { type = \"numeric(18,2)\", expr = \"amount\" }"),
        "{text}"
    );
    assert!(
        text.contains("ordered_at = { type = \"text\", expr = \"ordered_at\" }"),
        "three date formats stay text: {text}"
    );

    let run = ws.rowshift(&["run", "pipelines/orders_init.toml", "--json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let rows = parquet_rows(&ws.path("pipelines/out/orders"));
    assert_eq!(rows.len(), 500);
    assert_eq!(
        rows["2"],
        "2|lena.andersson@example.com|367.60|GBP|2024-04-05|ring bell, then knock|cancelled"
    );

    let out = ws.rowshift(&[
        "init",
        "--from",
        "sqlite://samples/shop.db",
        "--table",
        "users_v1",
        "--output",
        "pipelines/users_init.toml",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(ws.path("pipelines/users_init.toml")).unwrap();
    assert!(
        text.contains("table = \"users_v1\"\nkey = \"id\"\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "created_at = { type = \"timestamp\", expr = \"created_at\", nullable = false }"
        ),
        "{text}"
    );
    assert_eq!(
        ws.rowshift(&["run", "pipelines/users_init.toml", "--quiet"])
            .code,
        0
    );
    assert_eq!(parquet_rows(&ws.path("pipelines/out/users_v1")).len(), 1000);
}

#[test]
fn init_says_when_no_key_was_found_and_what_to_do() {
    let ws = Workspace::new();
    let db = ws.path("nokey.db");
    common::sqlite_exec(&db, "CREATE TABLE logs (at TEXT, line TEXT)");
    let out = ws.rowshift(&["init", "--from", "sqlite://nokey.db", "--table", "logs"]);
    assert_eq!(out.code, 2);
    assert_eq!(
        out.stderr.trim(),
        "error: no key found: table `logs` has no primary key. rowshift splits a table into ranges of a unique, non-null key; pass --key COLUMN (repeat it for a composite key) to name it"
    );
}

#[path = "suite/checkpoints.rs"]
mod checkpoints;

#[path = "suite/composite.rs"]
mod composite;

#[path = "suite/integrity.rs"]
mod integrity;

#[path = "suite/postgres.rs"]
mod postgres;

#[path = "suite/mysql.rs"]
mod mysql;

#[path = "suite/collisions.rs"]
mod collisions;

#[path = "suite/types.rs"]
mod types;

#[path = "suite/csv_input.rs"]
mod csv_input;

#[path = "suite/scenarios.rs"]
mod scenarios;

#[path = "suite/layout.rs"]
mod layout;

#[path = "suite/secrets.rs"]
mod secrets;

#[path = "suite/faults.rs"]
mod faults;

#[path = "suite/init.rs"]
mod init;

#[path = "suite/init_set.rs"]
mod init_set;

#[path = "suite/position.rs"]
mod position;

#[path = "suite/readback.rs"]
mod readback;

#[path = "suite/quarantine.rs"]
mod quarantine;

#[path = "suite/examples.rs"]
mod examples;

#[path = "suite/package.rs"]
mod package;

#[path = "suite/migrate.rs"]
mod migrate;

#[path = "suite/steps.rs"]
mod steps;

#[path = "suite/ddl.rs"]
mod ddl;

#[path = "suite/plan.rs"]
mod plan;

#[path = "suite/rollback.rs"]
mod rollback;

#[path = "suite/online.rs"]
mod online;

#[path = "suite/workers.rs"]
mod workers;

#[path = "suite/report.rs"]
mod report;
