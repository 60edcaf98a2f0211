//! Composite keys, written once and run against every target: chunks are ranges of
//! `(region, n)` compared as tuples, so chunk boundaries fall inside a region; quarantined
//! rows keep their whole key and are read again by it; upsert, replace-chunk and `verify`
//! find rows by every key part. One SQLite-only behaviour (a NOCASE source key) is at the
//! end.

use crate::common::{Workspace, sqlite_exec, sqlite_rows};
use crate::scenarios::{Target, pipeline, run_ok, scenarios};

/// Regions in byte order `B b` < `Banana` < `Zürich` < `apple` < `b`, which no collation
/// of the servers keeps; none equal to another under a case-insensitive one (MariaDB's).
const REGIONS: [&str; 5] = ["Zürich", "apple", "Banana", "b", "B b"];

/// The plan's chunk 1 as the checkpoint keeps it: rows 8 to 14 in byte order, all in
/// region `B b`.
const CHUNK_1: &str = r#"{"id":1,"range":{"Keys":{"lo":{"Tuple":[{"Text":"B b"},{"Int":7}]},"hi":{"Tuple":[{"Text":"B b"},{"Int":14}]}}},"rows":7}"#;

scenarios!(
    postgres: crate::common::PgSchema,
    mysql: crate::common::MyDb;
    [
        a_composite_key_chunks_by_tuples_and_rejects_keep_their_whole_key,
        verify_names_a_row_by_every_part_of_its_key,
        upsert_and_replace_chunk_find_rows_by_every_part_of_a_composite_key,
        a_null_in_any_key_column_is_refused_at_planning,
        a_failed_chunk_of_a_composite_key_is_retried_from_its_checkpointed_tuple_range,
        a_csv_with_a_composite_key_is_read_back_and_verified_by_key_tuples,
    ]
);

// SQLite targets have no upsert or replace-chunk write mode.
scenarios!(
    sqlite: crate::scenarios::SqliteFile;
    [
        a_composite_key_chunks_by_tuples_and_rejects_keep_their_whole_key,
        verify_names_a_row_by_every_part_of_its_key,
        a_null_in_any_key_column_is_refused_at_planning,
        a_failed_chunk_of_a_composite_key_is_retried_from_its_checkpointed_tuple_range,
        a_csv_with_a_composite_key_is_read_back_and_verified_by_key_tuples,
    ]
);

/// A table `lines` with 300 rows keyed by `(region, n)`, 60 per region, `qty` = n % 13.
fn make_lines<T: Target>(db: &T) {
    let values: Vec<String> = REGIONS
        .iter()
        .flat_map(|r| (1..=60).map(move |n| format!("('{r}', {n}, {})", n % 13)))
        .collect();
    db.exec(&format!(
        "CREATE TABLE {s}.lines (region varchar(20) NOT NULL, n integer NOT NULL, qty integer, \
         PRIMARY KEY (region, n));
         INSERT INTO {s}.lines VALUES {}",
        values.join(", "),
        s = db.q()
    ));
}

/// A pipeline `name` moving `lines` from `src` to `dst` in chunks of 7 rows with
/// `small = qty * factor` as a smallint (qty 11 and 12 overflow it from a factor of
/// 3000); `extra` is added to `[target]`.
fn lines_pipeline<T: Target>(
    ws: &Workspace,
    name: &str,
    places: (&T, &T),
    factor: i64,
    extra: &str,
) -> String {
    pipeline(
        ws,
        name,
        places,
        (
            "table = \"lines\"\nkey = [\"region\", \"n\"]",
            &format!("table = \"lines\"\n{extra}"),
        ),
        &format!(
            r#"[target.columns]
region = {{ type = "varchar(20)", expr = "region", primary_key = true }}
n = {{ type = "integer", expr = "n", primary_key = true }}
small = {{ type = "smallint", expr = "qty * {factor}" }}
[chunks]
rows = 7
parallel = 2
"#
        ),
    )
}

/// `(region, n, value)` rows of `lines` in `db`, `value` the SQL expression `value`,
/// in key (byte) order.
fn lines<T: Target>(db: &T, value: &str) -> Vec<Vec<String>> {
    let mut rows = db.rows(&format!(
        "SELECT region, {}, {} FROM {}.lines",
        T::text("n"),
        T::text(value),
        db.q()
    ));
    rows.sort_by(|a, b| {
        (a[0].as_bytes(), a[1].parse::<i64>().unwrap())
            .cmp(&(b[0].as_bytes(), b[1].parse::<i64>().unwrap()))
    });
    rows
}

/// The rows [`make_lines`]' table moves to, in key (byte) order, `small` computed from
/// `qty` by `small`.
fn expected(small: impl Fn(i64) -> i64) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = REGIONS
        .iter()
        .flat_map(|r| {
            let small = &small;
            (1..=60i64).map(move |n| vec![r.to_string(), n.to_string(), small(n % 13).to_string()])
        })
        .collect();
    rows.sort_by(|a, b| {
        (a[0].as_bytes(), a[1].parse::<i64>().unwrap())
            .cmp(&(b[0].as_bytes(), b[1].parse::<i64>().unwrap()))
    });
    rows
}

fn a_composite_key_chunks_by_tuples_and_rejects_keep_their_whole_key<T: Target>() {
    let ws = Workspace::new();
    let src = T::create("rs_comp_src");
    let dst = T::create("rs_comp_dst");
    make_lines(&src);
    let p = lines_pipeline(&ws, "lines", (&src, &dst), 3000, "");

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
    assert_eq!(dst.count("lines"), 260);
    // Planned in byte order, the same chunks from every source.
    assert_eq!(
        dst.rows(&format!(
            "SELECT chunk FROM {}._rowshift_chunks WHERE pipeline = 'lines' AND id = 1",
            dst.q()
        )),
        [[CHUNK_1]]
    );
    for region in ["Zürich", "b"] {
        let mut keys: Vec<String> = dst
            .rows(&format!(
                "SELECT row_key FROM {}.lines_rejects WHERE row_key LIKE '[\"{region}\",%'",
                dst.q()
            ))
            .into_iter()
            .map(|r| r[0].clone())
            .collect();
        keys.sort();
        let mut want: Vec<String> = [11, 12, 24, 25, 37, 38, 50, 51]
            .iter()
            .map(|n| format!("[\"{region}\",\"{n}\"]"))
            .collect();
        want.sort();
        assert_eq!(keys, want, "{region}");
    }

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
    assert_eq!(dst.count("lines_rejects"), 40);

    // Fixed: the rejected rows (only they) are read again from the source by their
    // composite key and written.
    let p = lines_pipeline(&ws, "lines", (&src, &dst), 2000, "");
    let out = ws.rowshift(&["retry", &p, "--rejects", "--json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        lines(&dst, "small"),
        expected(|qty| if qty >= 11 { qty * 2000 } else { qty * 3000 })
    );
    assert_eq!(dst.count("lines_rejects"), 0);
}

fn verify_names_a_row_by_every_part_of_its_key<T: Target>() {
    let ws = Workspace::new();
    let src = T::create("rs_comp_verify_src");
    let dst = T::create("rs_comp_verify_dst");
    make_lines(&src);
    let p = lines_pipeline(&ws, "lines", (&src, &dst), 2000, "");
    run_ok(&ws, &p);
    assert_eq!(lines(&dst, "small"), expected(|qty| qty * 2000));

    // (Zürich, 5) is row 124 in byte order (chunk 17); (b, 60) the last (chunk 42).
    dst.exec(&format!(
        "UPDATE {d}.lines SET small = -1 WHERE region = 'Zürich' AND n = 5;
         DELETE FROM {d}.lines WHERE region = 'b' AND n = 60",
        d = dst.q()
    ));
    let out = ws.rowshift(&["verify", &p, "--json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let diffs = crate::common::verify_differences(&out.stdout);
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
    assert_eq!(lines(&dst, "small"), expected(|qty| qty * 2000));
}

fn upsert_and_replace_chunk_find_rows_by_every_part_of_a_composite_key<T: Target>() {
    let ws = Workspace::new();
    let src = T::create("rs_comp_modes_src");
    let dst = T::create("rs_comp_modes_dst");
    make_lines(&src);
    run_ok(&ws, &lines_pipeline(&ws, "lines", (&src, &dst), 2000, ""));
    assert_eq!(dst.count("lines"), 300);
    assert_eq!(lines(&dst, "small"), lines(&src, "qty * 2000"));

    // Changed and new rows, upserted by the composite primary key.
    src.exec(&format!(
        "UPDATE {s}.lines SET qty = qty + 1 WHERE n % 9 = 0;
         INSERT INTO {s}.lines VALUES ('b', 61, 2), ('Banana', 0, 3)",
        s = src.q()
    ));
    let upsert = "if_exists = \"append\"\nwrite_mode = \"upsert\"";
    run_ok(
        &ws,
        &lines_pipeline(&ws, "upsert", (&src, &dst), 2000, upsert),
    );
    assert_eq!(lines(&dst, "small"), lines(&src, "qty * 2000"));

    // Rows deleted at the source: replace-chunk deletes each chunk's tuple range, so
    // they go, and nothing outside a chunk's range is touched.
    src.exec(&format!(
        "DELETE FROM {s}.lines WHERE n % 4 = 1; UPDATE {s}.lines SET qty = 1 WHERE n = 2",
        s = src.q()
    ));
    let replace = "if_exists = \"append\"\nwrite_mode = \"replace-chunk\"";
    let p = lines_pipeline(&ws, "replace", (&src, &dst), 2000, replace);
    run_ok(&ws, &p);
    assert_eq!(lines(&dst, "small"), lines(&src, "qty * 2000"));

    // verify names a tampered row by both key parts, the first holding a space.
    dst.exec(&format!(
        "UPDATE {}.lines SET small = -1 WHERE region = 'B b' AND n = 3",
        dst.q()
    ));
    let out = ws.rowshift(&["verify", &p]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("region=B b, n=3, column small: sent '6000', the target holds '-1'"),
        "{}",
        out.stdout
    );
}

fn a_null_in_any_key_column_is_refused_at_planning<T: Target>() {
    let ws = Workspace::new();
    let src = T::create("rs_comp_null_src");
    let dst = T::create("rs_comp_null_dst");
    src.exec(&format!(
        "CREATE TABLE {s}.lines (region varchar(20), n integer, qty integer);
         INSERT INTO {s}.lines VALUES ('a', 1, 1), ('a', NULL, 2), (NULL, 3, 3)",
        s = src.q()
    ));
    let p = lines_pipeline(&ws, "lines", (&src, &dst), 1, "");
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("2 rows have a NULL key (`region`, `n`); chunks are key ranges, so they would be skipped. Choose non-null key columns"),
        "{}",
        out.stderr
    );
}

fn a_failed_chunk_of_a_composite_key_is_retried_from_its_checkpointed_tuple_range<T: Target>() {
    let ws = Workspace::new();
    let src = T::create("rs_comp_retry_src");
    let dst = T::create("rs_comp_retry_dst");
    make_lines(&src);
    let p = lines_pipeline(&ws, "lines", (&src, &dst), 2000, "");
    let out = ws.rowshift_env(&["run", &p, "--quiet"], &[("ROWSHIFT_FAULT", "chunk=17")]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    // Rows 119 to 125 in byte order: the last of `Banana` and the first six of `Zürich`.
    assert!(
        out.stdout.contains("failed  chunk 17 (('Banana', 59) < key <= ('Zürich', 6)): injected fault in the sink for chunk 17 (ROWSHIFT_FAULT)"),
        "{}",
        out.stdout
    );
    assert_eq!(dst.count("lines"), 293);
    // The range comes back from the checkpoint as a tuple range: exactly the 7 rows.
    let out = ws.rowshift(&["retry", &p, "--json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["chunks_done"], 1, "{v}");
    assert_eq!(v["rows"]["written"], 7, "{v}");
    assert_eq!(lines(&dst, "small"), expected(|qty| qty * 2000));
}

fn a_csv_with_a_composite_key_is_read_back_and_verified_by_key_tuples<T: Target>() {
    let ws = Workspace::new();
    let dst = T::create("rs_comp_csv");
    let mut csv = String::from("region,n,qty\n");
    for r in ["x", "y", "z"] {
        for n in 1..=40 {
            csv.push_str(&format!("{r},{n},{}\n", n % 7));
        }
    }
    ws.write("lines.csv", &csv);
    // A file source is chunked by bytes; its rows are found in the target by their
    // (region, n) tuples, bound as parameters.
    let p = ws.write(
        "pipelines/csv_lines.toml",
        &format!(
            r#"name = "csv_lines"
[source]
url = "../lines.csv"
key = ["region", "n"]
[source.types]
n = "bigint"
[target]
{}
table = "lines"
[target.columns]
region = {{ type = "varchar(20)", expr = "region" }}
n = {{ type = "bigint", expr = "n" }}
big = {{ type = "bigint", expr = "CAST(qty AS BIGINT) * 10" }}
[chunks]
rows = 25
"#,
            dst.location()
        ),
    );
    run_ok(&ws, &p);
    let rows = lines(&dst, "big");
    let keys: std::collections::BTreeSet<(&str, &str)> = rows
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str()))
        .collect();
    let sum: i64 = rows.iter().map(|r| r[2].parse::<i64>().unwrap()).sum();
    assert_eq!((rows.len(), keys.len(), sum), (120, 120, 3600));
    dst.exec(&format!(
        "UPDATE {}.lines SET big = -1 WHERE region = 'y' AND n = 3",
        dst.q()
    ));
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
