//! Composite keys on the embedded default: chunks are ranges of `(region, n)` compared
//! as tuples, so chunk boundaries fall inside a region; quarantined rows keep their whole
//! key and are read again by it; `verify` names rows by every key part.

use crate::common::{Workspace, sqlite_exec, sqlite_rows};

const REGIONS: [&str; 5] = ["Zürich", "apple", "Apple", "b", "B b"];

/// The plan's chunk 1 as the checkpoint keeps it: rows 8 to 14 in byte order, all in
/// region `Apple`.
pub const CHUNK_1: &str = r#"{"id":1,"range":{"Keys":{"lo":{"Tuple":[{"Text":"Apple"},{"Int":7}]},"hi":{"Tuple":[{"Text":"Apple"},{"Int":14}]}}},"rows":7}"#;

/// `src.db` with 300 rows keyed by `(region, n)`, and a pipeline moving them in chunks
/// of 7 rows with `small = qty * factor`.
fn setup(ws: &Workspace) {
    let mut values = Vec::new();
    for r in REGIONS {
        for n in 1..=60 {
            values.push(format!("('{r}', {n}, {})", n % 13));
        }
    }
    sqlite_exec(
        &ws.path("src.db"),
        &format!(
            "CREATE TABLE lines (region TEXT NOT NULL, n INTEGER NOT NULL, qty INTEGER, PRIMARY KEY (region, n));
             INSERT INTO lines VALUES {};",
            values.join(", ")
        ),
    );
    std::fs::create_dir_all(ws.path("out")).unwrap();
}

fn pipeline(ws: &Workspace, factor: i64) -> String {
    ws.write(
        "pipelines/lines.toml",
        &format!(
            r#"name = "lines"
[source]
url = "sqlite://../src.db"
table = "lines"
key = ["region", "n"]
[target]
url = "sqlite://../out/lines.db"
table = "lines"
[target.columns]
region = {{ type = "text", expr = "region" }}
n = {{ type = "bigint", expr = "n" }}
small = {{ type = "smallint", expr = "qty * {factor}" }}
[chunks]
rows = 7
parallel = 2
"#
        ),
    )
}

/// The rows the target should hold, in key (byte) order, `small` computed by `small`.
fn expected(small: impl Fn(i64) -> i64) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for r in REGIONS {
        for n in 1..=60i64 {
            rows.push(vec![
                r.to_string(),
                n.to_string(),
                small(n % 13).to_string(),
            ]);
        }
    }
    rows.sort_by(|a, b| {
        (a[0].as_bytes(), a[1].parse::<i64>().unwrap())
            .cmp(&(b[0].as_bytes(), b[1].parse::<i64>().unwrap()))
    });
    rows
}

fn target(ws: &Workspace) -> Vec<Vec<String>> {
    sqlite_rows(
        &ws.path("out/lines.db"),
        "SELECT region, n, small FROM lines ORDER BY region, n",
    )
}

#[test]
fn a_composite_key_chunks_by_tuples_and_every_row_lands_once() {
    let ws = Workspace::new();
    setup(&ws);
    let p = pipeline(&ws, 3000);

    // The plan: 300 rows in chunks of 7, boundaries inside regions, in byte order.
    // The sample already has rows that will be rejected: exit 1.
    let out = ws.rowshift(&["dry-run", &p, "--json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["plan"]["chunks"], 43, "{v}");

    // qty * 3000 overflows a smallint for qty 11 and 12: 8 rows per region rejected,
    // each kept with its whole key.
    let out = ws.rowshift(&["run", &p, "--json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["rows"]["written"], 260, "{v}");
    assert_eq!(v["rows"]["rejected"], 40, "{v}");
    assert_eq!(
        sqlite_rows(
            &ws.path("out/lines.db"),
            "SELECT chunk FROM _rowshift_chunks WHERE pipeline = 'lines' AND id = 1"
        ),
        [[CHUNK_1]]
    );
    let keys = sqlite_rows(
        &ws.path("out/lines.db"),
        "SELECT row_key FROM lines_rejects WHERE row_key LIKE '[\"Zürich\",%' ORDER BY id",
    );
    let mut keys: Vec<String> = keys.into_iter().map(|r| r[0].clone()).collect();
    keys.sort();
    let mut want: Vec<String> = [11, 12, 24, 25, 37, 38, 50, 51]
        .iter()
        .map(|n| format!("[\"Zürich\",\"{n}\"]"))
        .collect();
    want.sort();
    assert_eq!(keys, want);

    // Under another key the quarantined keys would name other rows, or none: refused,
    // and the quarantine stays whole.
    let text = std::fs::read_to_string(ws.path(&p)).unwrap();
    ws.write(
        &p,
        &text.replace("key = [\"region\", \"n\"]", "key = \"region\""),
    );
    let out = ws.rowshift(&["retry", &p, "--rejects"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("source.key changed since the run of ")
            && out.stderr.contains("(Some([\"region\", \"n\"]) then, Some(\"region\") now); quarantined rows are named by that source and key, so restore it to retry them"),
        "{}",
        out.stderr
    );
    assert_eq!(
        sqlite_rows(
            &ws.path("out/lines.db"),
            "SELECT count(*) FROM lines_rejects"
        ),
        [["40"]]
    );

    // Fixed: the rejected rows (only they) are read again from the source by their
    // composite key and written.
    let p = pipeline(&ws, 2000);
    let out = ws.rowshift(&["retry", &p, "--rejects", "--json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        target(&ws),
        expected(|qty| if qty >= 11 { qty * 2000 } else { qty * 3000 })
    );
    assert_eq!(
        sqlite_rows(
            &ws.path("out/lines.db"),
            "SELECT count(*) FROM lines_rejects"
        ),
        [["0"]]
    );
}

#[test]
fn verify_names_a_row_by_every_part_of_its_key() {
    let ws = Workspace::new();
    setup(&ws);
    let p = pipeline(&ws, 2000);
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(target(&ws), expected(|qty| qty * 2000));

    // (Zürich, 5) is row 124 in byte order (chunk 17); (b, 60) the last (chunk 42).
    sqlite_exec(
        &ws.path("out/lines.db"),
        "UPDATE lines SET small = -1 WHERE region = 'Zürich' AND n = 5;
         DELETE FROM lines WHERE region = 'b' AND n = 60;",
    );
    let out = ws.rowshift(&["verify", &p, "--json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let diffs: Vec<(u64, String)> = json["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["chunk"].as_u64().unwrap(),
                d["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        diffs,
        [
            (
                17,
                "region=Zürich, n=5, column small: sent '10000', the target holds '-1'".to_string()
            ),
            (42, "region=b, n=60: missing from the target".to_string()),
        ]
    );
    let out = ws.rowshift(&["verify", &p, "--repair"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(target(&ws), expected(|qty| qty * 2000));
}

#[test]
fn a_null_in_any_key_column_is_refused_at_planning() {
    let ws = Workspace::new();
    sqlite_exec(
        &ws.path("src.db"),
        "CREATE TABLE lines (region TEXT, n INTEGER, qty INTEGER);
         INSERT INTO lines VALUES ('a', 1, 1), ('a', NULL, 2), (NULL, 3, 3);",
    );
    let p = pipeline(&ws, 1);
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("2 rows have a NULL key (`region`, `n`); chunks are key ranges, so they would be skipped. Choose non-null key columns"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_nocase_text_key_is_planned_in_byte_order_like_every_target() {
    let ws = Workspace::new();
    // In NOCASE order a < B < c < D; in byte order B < D < a < c. Chunks are planned in
    // byte order, the order the target's read-back compares in.
    sqlite_exec(
        &ws.path("src.db"),
        "CREATE TABLE codes (code TEXT COLLATE NOCASE PRIMARY KEY, n INTEGER);
         INSERT INTO codes VALUES ('a', 1), ('B', 2), ('c', 3), ('D', 4), ('e', 5);",
    );
    std::fs::create_dir_all(ws.path("out")).unwrap();
    let p = ws.write(
        "pipelines/codes.toml",
        r#"name = "codes"
[source]
url = "sqlite://../src.db"
table = "codes"
key = "code"
[target]
url = "sqlite://../out/codes.db"
table = "codes"
[target.columns]
code = { type = "text", expr = "code" }
n = { type = "bigint", expr = "n" }
[chunks]
rows = 2
"#,
    );
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        sqlite_rows(
            &ws.path("out/codes.db"),
            "SELECT chunk FROM _rowshift_chunks WHERE id = 0"
        ),
        [[r#"{"id":0,"range":{"Keys":{"lo":null,"hi":{"Text":"D"}}},"rows":2}"#]]
    );
    assert_eq!(
        sqlite_rows(
            &ws.path("out/codes.db"),
            "SELECT code, n FROM codes ORDER BY n"
        ),
        [["a", "1"], ["B", "2"], ["c", "3"], ["D", "4"], ["e", "5"]]
    );
    let out = ws.rowshift(&["verify", &p]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
}

#[test]
fn a_csv_with_a_composite_key_is_read_back_and_verified_by_key_tuples() {
    let ws = Workspace::new();
    let mut csv = String::from("region,n,qty\n");
    for r in ["x", "y", "z"] {
        for n in 1..=40 {
            csv.push_str(&format!("{r},{n},{}\n", n % 7));
        }
    }
    ws.write("lines.csv", &csv);
    std::fs::create_dir_all(ws.path("out")).unwrap();
    // A file source is chunked by bytes; its rows are found in the target by their
    // (region, n) tuples, bound as parameters.
    let p = ws.write(
        "pipelines/csv_lines.toml",
        r#"name = "csv_lines"
[source]
url = "../lines.csv"
key = ["region", "n"]
[source.types]
n = "bigint"
[target]
url = "sqlite://../out/csv_lines.db"
table = "lines"
[target.columns]
region = { type = "text", expr = "region" }
n = { type = "bigint", expr = "n" }
big = { type = "bigint", expr = "CAST(qty AS BIGINT) * 10" }
[chunks]
rows = 25
"#,
    );
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        sqlite_rows(
            &ws.path("out/csv_lines.db"),
            "SELECT count(*), count(DISTINCT region || '/' || n), sum(big) FROM lines"
        ),
        [["120", "120", "3600"]]
    );
    sqlite_exec(
        &ws.path("out/csv_lines.db"),
        "UPDATE lines SET big = -1 WHERE region = 'y' AND n = 3",
    );
    let out = ws.rowshift(&["verify", &p]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("region=y, n=3, column big: sent '30', the target holds '-1'"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_failed_chunk_of_a_composite_key_is_retried_from_its_checkpointed_tuple_range() {
    let ws = Workspace::new();
    setup(&ws);
    let p = pipeline(&ws, 2000);
    let out = ws.rowshift_env(&["run", &p, "--quiet"], &[("ROWSHIFT_FAULT", "chunk=17")]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    // Rows 119 to 125 in byte order: the last of `B b` and the first six of `Zürich`.
    assert!(
        out.stdout.contains("failed  chunk 17 (('B b', 59) < key <= ('Zürich', 6)): injected fault in the sink for chunk 17 (ROWSHIFT_FAULT)"),
        "{}",
        out.stdout
    );
    assert_eq!(
        sqlite_rows(&ws.path("out/lines.db"), "SELECT count(*) FROM lines"),
        [["293"]]
    );
    // The range comes back from the checkpoint as a tuple range: exactly the 7 rows.
    let out = ws.rowshift(&["retry", &p, "--json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["chunks_done"], 1, "{v}");
    assert_eq!(v["rows"]["written"], 7, "{v}");
    assert_eq!(target(&ws), expected(|qty| qty * 2000));
}
