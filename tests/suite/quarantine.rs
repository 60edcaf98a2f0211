//! Rows a transform rejects, on every target: they go to the target's quarantine whole,
//! with the columns no expression reads, under their key; `retry --rejects` reads them
//! again from the source by key once the pipeline is fixed, and into an upsert target
//! replaces the rows already there.

use std::collections::BTreeMap;

use crate::common::Workspace;
use crate::scenarios::{Target, items_pipeline, scenarios};

scenarios!(
    postgres: crate::common::PgSchema,
    mysql: crate::common::MyDb;
    [
        rejected_rows_are_kept_whole_and_retry_reads_them_again_by_key,
        retry_rejects_into_an_upsert_target_replaces_the_rows_already_there,
    ]
);

// SQLite targets have no upsert write mode.
scenarios!(
    sqlite: crate::scenarios::SqliteFile;
    [rejected_rows_are_kept_whole_and_retry_reads_them_again_by_key]
);

/// `items` into `items` with `small = qty * factor` as a smallint (qty is 0 to 12, so a
/// large factor overflows some rows); `target` is added to `[target]`, `tail` at the end.
fn small_pipeline<T: Target>(
    ws: &Workspace,
    name: &str,
    (src, dst): (&T, &T),
    factor: i64,
    target: &str,
    tail: &str,
) -> String {
    let columns = format!(
        r#"[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
small = {{ type = "smallint", expr = "qty * {factor}" }}
{tail}"#
    );
    items_pipeline(ws, name, (src, dst), target, &columns)
}

/// `(id, qty)` of the source's rows whose qty is 11 or more: those whose `qty * 3000`
/// overflows a smallint.
fn overflowing<T: Target>(src: &T) -> BTreeMap<i64, i64> {
    src.rows(&format!(
        "SELECT {}, {} FROM {}.items WHERE qty >= 11",
        T::text("id"),
        T::text("qty"),
        src.q()
    ))
    .into_iter()
    .map(|r| (r[0].parse().unwrap(), r[1].parse().unwrap()))
    .collect()
}

/// A JSON value as the text of its source column (`NULL` for null).
fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "NULL".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn rejected_rows_are_kept_whole_and_retry_reads_them_again_by_key<T: Target>() {
    let ws = Workspace::new();
    let src = T::create("rs_rejects_src");
    let dst = T::create("rs_rejects_dst");
    src.make_items(300);
    let p = small_pipeline(
        &ws,
        "rejects",
        (&src, &dst),
        3000,
        "",
        "[chunks]\nrows = 40\n",
    );
    let out = ws.rowshift(&["run", &p, "--json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let bad = overflowing(&src);
    assert!(bad.len() > 20, "{bad:?}");
    assert_eq!(dst.count("items_rejects"), bad.len() as i64);
    assert_eq!(dst.count("items"), 300 - bad.len() as i64);
    // The run read only id and qty; each quarantined row was read again whole, with the
    // columns no expression uses, and is kept under its key.
    let kept: BTreeMap<i64, Vec<String>> = dst
        .rows(&format!(
            "SELECT row_key, source_row FROM {}.items_rejects",
            dst.q()
        ))
        .into_iter()
        .map(|r| {
            let row: serde_json::Value = serde_json::from_str(&r[1]).unwrap();
            let cells = ["name", "tag", "qty"].map(|c| json_text(&row[c])).to_vec();
            (r[0].parse().unwrap(), cells)
        })
        .collect();
    let want: BTreeMap<i64, Vec<String>> = src
        .rows(&format!(
            "SELECT {}, name, tag, {} FROM {}.items WHERE qty >= 11",
            T::text("id"),
            T::text("qty"),
            src.q()
        ))
        .into_iter()
        .map(|r| (r[0].parse().unwrap(), r[1..].to_vec()))
        .collect();
    assert_eq!(kept, want);
    assert_eq!(kept[&63], ["item 63 ünï", "", "11"]);

    // Fixed: the quarantined rows are read again from the source by key and written.
    let p = small_pipeline(
        &ws,
        "rejects",
        (&src, &dst),
        2000,
        "",
        "[chunks]\nrows = 40\n",
    );
    let out = ws.rowshift(&["retry", &p, "--rejects", "--json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(dst.count("items_rejects"), 0);
    let got: BTreeMap<i64, i64> = dst
        .rows(&format!(
            "SELECT {}, {} FROM {}.items",
            T::text("id"),
            T::text("small"),
            dst.q()
        ))
        .into_iter()
        .map(|r| (r[0].parse().unwrap(), r[1].parse().unwrap_or(i64::MIN)))
        .filter(|(id, _)| bad.contains_key(id))
        .collect();
    let want: BTreeMap<i64, i64> = bad.iter().map(|(id, qty)| (*id, qty * 2000)).collect();
    assert_eq!(got, want);
}

fn retry_rejects_into_an_upsert_target_replaces_the_rows_already_there<T: Target>() {
    let ws = Workspace::new();
    let src = T::create("rs_upretry_src");
    let dst = T::create("rs_upretry_dst");
    src.make_items(100);
    // The target already holds an older version of every row.
    let old: Vec<String> = (1..=100).map(|id| format!("({id}, -1)")).collect();
    dst.exec(&format!(
        "CREATE TABLE {d}.items (id bigint PRIMARY KEY, small smallint);
         INSERT INTO {d}.items VALUES {}",
        old.join(", "),
        d = dst.q()
    ));
    let upsert = "if_exists = \"append\"\nwrite_mode = \"upsert\"";
    // qty is 0 to 12: times 3000, 11 and 12 overflow a smallint and keep their old row.
    let p = small_pipeline(&ws, "upretry", (&src, &dst), 3000, upsert, "");
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let olds = || {
        dst.rows(&format!(
            "SELECT {} FROM {}.items WHERE small = -1",
            T::text("count(*)"),
            dst.q()
        ))
    };
    assert_ne!(olds(), [["0"]]);
    // Fixed: the retried rows replace their old versions, and the read-back expects
    // only them under their keys.
    let p = small_pipeline(&ws, "upretry", (&src, &dst), 2000, upsert, "");
    let out = ws.rowshift(&["retry", &p, "--rejects"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(olds(), [["0"]]);
    assert_eq!(dst.count("items_rejects"), 0);
    assert_eq!(dst.count("items"), 100);
}
