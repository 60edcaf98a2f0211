//! File sources without a `key`: a row is known by its place in the source (its file and
//! the line its record starts on), which the target keeps in columns of its own. Chunks,
//! read-back, `verify`, resumes and `retry --rejects` all find rows by it, so identical
//! lines both land and a CSV is verified into a database like any other source.

use crate::common::{Workspace, sqlite_rows};
use crate::scenarios::Target;

/// Two CSV files without a unique column: `a.csv` repeats a line exactly (lines 3 and
/// 4) and has a quoted field over two lines (the record of line 5), so the records after
/// it start a line further down; `b.csv` repeats `a.csv`'s first record.
fn write_files(ws: &Workspace) {
    std::fs::create_dir_all(ws.path("samples/pos")).unwrap();
    ws.write(
        "samples/pos/a.csv",
        "name,qty\npen,1\ncup,2\ncup,2\n\"two\nlines\",3\nink,4\nink,4\n",
    );
    ws.write("samples/pos/b.csv", "name,qty\npen,1\nmug,5\n");
}

/// Every row the two files hold, as (file, line, name, qty).
fn expected() -> Vec<Vec<String>> {
    [
        ("a.csv", 2, "pen", 1),
        ("a.csv", 3, "cup", 2),
        ("a.csv", 4, "cup", 2),
        ("a.csv", 5, "two\nlines", 3),
        ("a.csv", 7, "ink", 4),
        ("a.csv", 8, "ink", 4),
        ("b.csv", 2, "pen", 1),
        ("b.csv", 3, "mug", 5),
    ]
    .iter()
    .map(|(f, l, n, q)| vec![f.to_string(), l.to_string(), n.to_string(), q.to_string()])
    .collect()
}

/// The pipeline of the two files into table `t` of `target`, chunks of two rows, with
/// `extra` after its columns.
fn pipeline<T: Target>(ws: &Workspace, target: &T, name: &str, extra: &str) -> String {
    write_files(ws);
    ws.write(
        &format!("pipelines/{name}.toml"),
        &format!(
            r#"name = "{name}"
[source]
url = "../samples/pos/*.csv"
[target]
{}
table = "t"
[target.columns]
source_file = {{ type = "varchar(100)", expr = "_rowshift_file", primary_key = true }}
source_line = {{ type = "bigint", expr = "_rowshift_line", primary_key = true }}
name = {{ type = "text", expr = "name" }}
qty = {{ type = "bigint", expr = "qty" }}
[chunks]
rows = 2
{extra}
"#,
            target.location()
        ),
    )
}

fn rows<T: Target>(target: &T) -> Vec<Vec<String>> {
    target.rows(&format!(
        "SELECT source_file, {}, name, {} FROM {}.t ORDER BY source_file, source_line",
        T::text("source_line"),
        T::text("qty"),
        target.q()
    ))
}

/// Identical lines both land, read back and verified by their place; a row deleted from
/// the target fails `verify`, named by its file and line.
fn identical_lines_all_land_and_verify_names_a_missing_one_by_file_and_line<T: Target>() {
    let ws = Workspace::new();
    let target = T::create("pos_land");
    let p = pipeline(&ws, &target, "land", "");
    let out = ws.rowshift(&["run", &p, "--json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["rows"]["written"], 8, "{json}");
    assert_eq!(rows(&target), expected());
    let verify = ws.rowshift(&["verify", &p]);
    assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
    target.exec(&format!(
        "DELETE FROM {}.t WHERE source_file = 'a.csv' AND source_line = 4",
        target.q()
    ));
    let verify = ws.rowshift(&["verify", &p]);
    assert_eq!(verify.code, 1, "{}{}", verify.stdout, verify.stderr);
    assert!(
        verify
            .stdout
            .contains("source_file=a.csv, source_line=4: missing from the target"),
        "{}",
        verify.stdout
    );
}

/// A run that fails a chunk (an injected fault) writes nothing of it; the next run
/// writes it, and every row is in the target once.
fn a_failed_chunk_is_redone_with_no_row_lost_or_doubled<T: Target>() {
    let ws = Workspace::new();
    let target = T::create("pos_resume");
    let p = pipeline(&ws, &target, "resume", "");
    let out = ws.rowshift_env(&["run", &p, "--quiet"], &[("ROWSHIFT_FAULT", "chunk=1")]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    let mut without = expected();
    // Chunk 1 is a.csv's records of lines 4 and 5.
    without.drain(2..4);
    assert_eq!(rows(&target), without);
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(rows(&target), expected());
    let verify = ws.rowshift(&["verify", &p]);
    assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
}

/// Rows a check rejected are found again by their place: once the check is fixed,
/// `retry --rejects` writes them (both of two identical lines), and `verify` passes.
fn retry_rejects_finds_quarantined_rows_by_their_place<T: Target>() {
    let ws = Workspace::new();
    let target = T::create("pos_retry");
    let checks = "[[checks]]\ncolumn = \"qty\"\nmax = 3\n";
    let p = pipeline(&ws, &target, "retry", checks);
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let held = target.rows(&format!(
        "SELECT row_key, location FROM {}.t_rejects ORDER BY location",
        target.q()
    ));
    assert_eq!(
        held,
        [
            [r#"["a.csv","7"]"#, "samples/pos/a.csv line 7"],
            [r#"["a.csv","8"]"#, "samples/pos/a.csv line 8"],
            [r#"["b.csv","3"]"#, "samples/pos/b.csv line 3"]
        ]
    );
    let mut passing = expected();
    passing.retain(|r| r[3].parse::<i64>().unwrap() <= 3);
    assert_eq!(rows(&target), passing);
    let text = std::fs::read_to_string(ws.path("pipelines/retry.toml")).unwrap();
    ws.write("pipelines/retry.toml", &text.replace("max = 3", "max = 5"));
    let out = ws.rowshift(&["retry", &p, "--rejects"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(rows(&target), expected());
    assert_eq!(
        target.rows(&format!(
            "SELECT {} FROM {}.t_rejects",
            T::text("count(*)"),
            target.q()
        )),
        [["0"]]
    );
    let verify = ws.rowshift(&["verify", &p]);
    assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
}

/// A run killed with SIGKILL while a chunk's rows are sent and not committed resumes
/// with every row in the target once.
fn a_run_killed_mid_chunk_resumes_with_every_row_once<T: Target>() {
    let ws = Workspace::new();
    let target = T::create("pos_kill");
    let p = pipeline(&ws, &target, "kill", "");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rowshift"))
        .args(["run", &p, "--quiet", "--parallel", "1"])
        .env("ROWSHIFT_FAULT", "chunk=2,pause=60000")
        .current_dir(ws.path("."))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let done = format!(
        "SELECT {} FROM {}._rowshift_chunks WHERE state = 'done'",
        T::text("count(*)"),
        target.q()
    );
    let started = std::time::Instant::now();
    // Chunks 0 and 1 commit; chunk 2 then holds its rows, uncommitted, for a minute.
    while std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target.rows(&done)))
        .ok()
        .is_none_or(|r| r != [["2"]])
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "chunks 0 and 1 were not done within 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(rows(&target), expected()[..4].to_vec());
    let out = ws.rowshift(&["run", &p, "--json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["chunks_skipped"], 2, "{json}");
    assert_eq!(rows(&target), expected());
    let verify = ws.rowshift(&["verify", &p]);
    assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
}

macro_rules! on_each_database {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name::<crate::scenarios::SqliteFile>(); })+
        }
        mod postgres {
            $(#[test] fn $name() { super::$name::<crate::common::PgSchema>(); })+
        }
        mod mysql {
            $(#[test] fn $name() { super::$name::<crate::common::MyDb>(); })+
        }
    };
}

on_each_database!(
    identical_lines_all_land_and_verify_names_a_missing_one_by_file_and_line,
    a_failed_chunk_is_redone_with_no_row_lost_or_doubled,
    a_run_killed_mid_chunk_resumes_with_every_row_once,
    retry_rejects_finds_quarantined_rows_by_their_place,
);

/// Without a target column for the place, read-back cannot find a chunk's rows: the
/// error gives the lines to paste, and with them the pipeline runs verified.
#[test]
fn the_error_gives_the_target_columns_to_paste() {
    let ws = Workspace::new();
    write_files(&ws);
    std::fs::create_dir_all(ws.path("out")).unwrap();
    let text = r#"name = "paste"
[source]
url = "../samples/pos/a.csv"
[target]
url = "sqlite://../out/paste.db"
table = "t"
[target.columns]
name = { type = "text", expr = "name" }
qty = { type = "bigint", expr = "qty" }
"#;
    let p = ws.write("pipelines/paste.toml", text);
    let out = ws.rowshift(&["validate", &p]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    let lines = "source_file = { type = \"text\", expr = \"_rowshift_file\" }\nsource_line = { type = \"bigint\", expr = \"_rowshift_line\" }";
    assert!(
        out.stderr.contains("read-back verification cannot find a chunk's rows in the target table: [source] names no `key`, so a row is known by its place in the source (`_rowshift_file`, `_rowshift_line`), and no target column holds `_rowshift_file` or `_rowshift_line`")
            && out.stderr.contains(&format!("help: add these lines under [target.columns]:\n{lines}\n")),
        "{}",
        out.stderr
    );
    ws.write("pipelines/paste.toml", &format!("{text}{lines}\n"));
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        sqlite_rows(
            &ws.path("out/paste.db"),
            "SELECT source_file, source_line, name FROM t ORDER BY source_line"
        ),
        [
            ["a.csv", "2", "pen"],
            ["a.csv", "3", "cup"],
            ["a.csv", "4", "cup"],
            ["a.csv", "5", "two\nlines"],
            ["a.csv", "7", "ink"],
            ["a.csv", "8", "ink"]
        ]
    );
}

/// A header that holds a position column's name is refused, naming both.
#[test]
fn a_csv_column_named_like_a_position_column_is_refused() {
    let ws = Workspace::new();
    ws.write("samples/clash.csv", "id,_rowshift_line\n1,x\n");
    std::fs::create_dir_all(ws.path("out")).unwrap();
    let p = ws.write(
        "pipelines/clash.toml",
        r#"name = "clash"
[source]
url = "../samples/clash.csv"
key = "id"
[target]
url = "../out/clash"
format = "csv"
[target.columns]
id = { type = "bigint", expr = "id" }
"#,
    );
    let out = ws.rowshift(&["validate", &p]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("source column `_rowshift_line` has the name of the column rowshift adds for the line each record starts on (`_rowshift_file`, `_rowshift_line`)"),
        "{}",
        out.stderr
    );
}

/// `init` on a CSV with no unique column, into a database, keeps each row's place: the
/// pipeline it writes validates and runs with read-back on.
#[test]
fn init_on_a_csv_without_a_unique_column_writes_a_pipeline_that_runs_verified() {
    let ws = Workspace::new();
    write_files(&ws);
    std::fs::create_dir_all(ws.path("out")).unwrap();
    let out = ws.rowshift_in(
        "pipelines",
        &[
            "init",
            "--from",
            "../samples/pos/a.csv",
            "--target",
            "sqlite://../out/init.db",
            "-o",
            "init.toml",
        ],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let text = std::fs::read_to_string(ws.path("pipelines/init.toml")).unwrap();
    assert!(
        text.contains("source_file = { type = \"text\", expr = \"_rowshift_file\", primary_key = true }\nsource_line = { type = \"bigint\", expr = \"_rowshift_line\", primary_key = true }\n"),
        "{text}"
    );
    assert!(!text.contains("verify"), "{text}");
    let p = ws.path("pipelines/init.toml").display().to_string();
    let out = ws.rowshift(&["validate", &p]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        sqlite_rows(
            &ws.path("out/init.db"),
            "SELECT count(*), count(DISTINCT source_line) FROM a"
        ),
        [["6", "6"]]
    );
    let verify = ws.rowshift(&["verify", &p]);
    assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
}

/// A Parquet file without a key: each row is known by its number in the file, from 1,
/// across row groups; a deleted row fails `verify`, named by file and row.
#[test]
fn parquet_rows_without_a_key_are_known_by_their_row_number() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path("out")).unwrap();
    let p = ws.write(
        "pipelines/pq.toml",
        r#"name = "pq"
[source]
url = "../samples/events.parquet"
[target]
url = "sqlite://../out/pq.db"
table = "e"
[target.columns]
source_file = { type = "text", expr = "_rowshift_file", primary_key = true }
source_row = { type = "bigint", expr = "_rowshift_row", primary_key = true }
event_id = { type = "bigint", expr = "event_id" }
[chunks]
rows = 1
"#,
    );
    let out = ws.rowshift(&["run", &p, "--json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(json["chunks_total"].as_u64().unwrap() > 1, "{json}");
    let db = ws.path("out/pq.db");
    let n = sqlite_rows(&db, "SELECT count(*) FROM e")[0][0].clone();
    assert_eq!(
        sqlite_rows(
            &db,
            "SELECT min(source_row), max(source_row), count(DISTINCT source_row), min(source_file), max(source_file) FROM e"
        ),
        [[
            "1",
            n.as_str(),
            n.as_str(),
            "events.parquet",
            "events.parquet"
        ]]
    );
    let verify = ws.rowshift(&["verify", &p]);
    assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
    crate::common::sqlite_exec(&db, "DELETE FROM e WHERE source_row = 7");
    let verify = ws.rowshift(&["verify", &p]);
    assert_eq!(verify.code, 1, "{}{}", verify.stdout, verify.stderr);
    assert!(
        verify
            .stdout
            .contains("source_file=events.parquet, source_row=7: missing from the target"),
        "{}",
        verify.stdout
    );
}

/// A record set aside as unreadable keeps its place when `retry --rejects` reads it again
/// under a fixed `encoding`, even from another working directory, where its file shows
/// under another path.
#[test]
fn a_record_read_again_by_retry_keeps_its_file_and_line() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path("out")).unwrap();
    std::fs::write(
        ws.path("samples/latin.csv"),
        b"name,qty\npen,1\nh\xe9h\xe9,2\npen,1\n",
    )
    .unwrap();
    let text = r#"name = "latin"
[source]
url = "../samples/latin.csv"
[source.csv]
encoding = "utf-8"
[target]
url = "sqlite://../out/latin.db"
table = "t"
[target.columns]
source_file = { type = "text", expr = "_rowshift_file", primary_key = true }
source_line = { type = "bigint", expr = "_rowshift_line", primary_key = true }
name = { type = "text", expr = "name" }
"#;
    let p = ws.write("pipelines/latin.toml", text);
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    ws.write(
        "pipelines/latin.toml",
        &text.replace("\"utf-8\"", "\"latin1\""),
    );
    let out = ws.rowshift_in("pipelines", &["retry", "latin.toml", "--rejects"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        sqlite_rows(
            &ws.path("out/latin.db"),
            "SELECT source_file, source_line, name FROM t ORDER BY source_line"
        ),
        [
            ["latin.csv", "2", "pen"],
            ["latin.csv", "3", "héhé"],
            ["latin.csv", "4", "pen"]
        ]
    );
    let verify = ws.rowshift(&["verify", &p]);
    assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
}
