//! What lands is what was sent, or nothing, on every server target: a trigger that
//! rewrites a value fails its chunk's read-back and the chunk leaves nothing; a value
//! finer than an existing column keeps (which the server would round or cut without an
//! error) is quarantined, not stored changed, beside a row the server itself refuses.

use crate::common::{Workspace, coarse_pipeline, coarse_rejects};
use crate::scenarios::{Target, mode_pipeline, scenarios};

scenarios!(
    postgres: crate::common::PgSchema,
    mysql: crate::common::MyDb;
    [
        read_back_catches_a_trigger_that_rewrites_values_and_the_chunk_leaves_nothing,
        values_finer_than_an_existing_column_keeps_are_quarantined_not_rounded,
    ]
);

fn read_back_catches_a_trigger_that_rewrites_values_and_the_chunk_leaves_nothing<T: Target>() {
    let ws = Workspace::new();
    let src = T::create("rs_trigger_src");
    let dst = T::create("rs_trigger_dst");
    src.make_items(100);
    dst.make_shouting_items();
    let p = mode_pipeline(&ws, "trigger", &src, &dst, "if_exists = \"append\"");
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("the target does not hold what was written: 50 rows sent")
            && out
                .stdout
                .contains("first difference: id=42, column name: sent 'item 42 ünï', the target holds 'ITEM 42 ÜNÏ'"),
        "{}",
        out.stdout
    );
    // Chunk 0 (keys up to 50) rolled back whole; chunk 1 landed.
    let got = dst.rows(&format!(
        "SELECT {}, {}, {} FROM {}.items",
        T::text("min(id)"),
        T::text("max(id)"),
        T::text("count(*)"),
        dst.q()
    ));
    assert_eq!(got, vec![vec!["51".to_string(), "100".into(), "50".into()]]);
}

fn values_finer_than_an_existing_column_keeps_are_quarantined_not_rounded<T: Target>() {
    let ws = Workspace::new();
    let dst = T::create("rs_coarse");
    // The server would round or cut rows 2 to 4 without an error, so rowshift refuses
    // them itself, read-back or not.
    dst.make_coarse_payments();
    let [at, amount, took] = T::COARSE_TYPES;
    let p = coarse_pipeline(&ws, "", &dst.location());
    // A dry run shows the same refusals and writes nothing.
    let dry = ws.rowshift(&["dry-run", &p]);
    assert_eq!(dry.code, 1, "{}{}", dry.stdout, dry.stderr);
    assert!(
        dry.stdout
            .contains("sample: 5 rows read, 2 would be written, 0 filtered out, 3 rejected"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains(&format!("coarse.csv line 3 (id=2), column at, value '2024-01-01T12:00:00.600': the target refused the row: column at is {at}, which keeps whole seconds: a finer value would be rounded or cut")),
        "{}",
        dry.stdout
    );
    assert_eq!(dst.count("payments"), 0);

    // Row 6 is one the server refuses, by the CHECK, in the same chunk.
    let p = coarse_pipeline(
        &ws,
        "6,2024-01-01 12:00:00,500.00,08:00:00\n",
        &dst.location(),
    );
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        dst.rows(&format!(
            "SELECT {}, {}, {}, {} FROM {}.payments ORDER BY id",
            T::text("id"),
            T::text("at"),
            T::text("amount"),
            T::text("took"),
            dst.q()
        )),
        [
            ["1", "2024-01-01 12:00:00", "1.50", "08:00:00.123"],
            ["5", "NULL", "NULL", "NULL"],
        ]
    );
    let mut expected = coarse_rejects(at, amount, took);
    expected.push(dst.coarse_check_refusal());
    assert_eq!(
        dst.rows(&format!(
            "SELECT row_key, column_name, value, reason FROM {}.payments_rejects ORDER BY row_key",
            dst.q()
        )),
        expected
    );
}
