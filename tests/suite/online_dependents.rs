//! PostgreSQL's cut-over carries the source table's dependents to the new table
//! (docs/online.md): the sequence of a `serial` or identity key, the views built on the
//! table (and the view built on one of them), and the foreign keys of other tables;
//! and it refuses, with nothing swapped, what it cannot carry.

use super::*;

/// A source table `items` (2,000 rows whose keys came from its sequence), views on it,
/// and `orders`, whose foreign key references it. Returns the schema and the pipeline.
fn dependents_source(ws: &Workspace, key: &str, note_in_target: bool) -> (PgSchema, String) {
    let pg = PgSchema::new("online_deps");
    let s = pg_quote(&pg.name);
    pg.exec(&format!(
        "CREATE TABLE {s}.items (id {key} PRIMARY KEY, qty INT NOT NULL, note VARCHAR(40) NOT NULL);
         INSERT INTO {s}.items (qty, note) SELECT g % 97, 'n' || g FROM generate_series(1, 2000) g;
         CREATE VIEW {s}.item_ids AS SELECT id FROM {s}.items;
         CREATE VIEW {s}.item_ids_odd AS SELECT id FROM {s}.item_ids WHERE id % 2 = 1;
         CREATE VIEW {s}.cheap AS SELECT id, qty, note FROM {s}.items WHERE qty < 10;
         GRANT SELECT ON {s}.cheap TO PUBLIC;
         COMMENT ON VIEW {s}.cheap IS 'items under 10';
         CREATE TABLE {s}.orders (no serial PRIMARY KEY, item_id bigint NOT NULL REFERENCES {s}.items (id));
         INSERT INTO {s}.orders (item_id) SELECT g FROM generate_series(1, 50) g;"
    ));
    let note = if note_in_target {
        "note = { type = \"text\", expr = \"note\" }\n"
    } else {
        ""
    };
    let p = ws.write(
        "deps.toml",
        &format!(
            r#"name = "items-deps"
[source]
url = {url}
schema = {schema}
table = "items"
key = "id"
[target]
url = {url}
schema = {schema}
table = "items_new"
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
qty = {{ type = "bigint", expr = "qty" }}
{note}[online]
enabled = true
max_lag_rows = 0
"#,
            url = toml_str(&pg_url()),
            schema = pg.toml(),
        ),
    );
    (pg, p)
}

/// What relations the rules of view `view` read, besides itself.
fn view_reads(pg: &PgSchema, view: &str) -> Vec<Vec<String>> {
    let s = pg_quote(&pg.name);
    pg.rows(&format!(
        "SELECT DISTINCT c.relname::text FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class c ON c.oid = d.refobjid \
         WHERE r.ev_class = '{s}.{view}'::regclass AND d.refobjid <> r.ev_class AND d.refclassid = 'pg_class'::regclass ORDER BY 1"
    ))
}

fn carries_dependents(key: &str) {
    let ws = Workspace::new();
    let (pg, p) = dependents_source(&ws, key, true);
    let s = pg_quote(&pg.name);
    let (code, text) = finish(rowshift(&ws, &["run", &p], &[]));
    assert_eq!(code, 0, "{text}");
    // Changes the cut-over replays, made through the sequence.
    pg.exec(&format!(
        "INSERT INTO {s}.items (qty, note) VALUES (3, 'late'), (4, 'later'); UPDATE {s}.items SET qty = 5 WHERE id = 10"
    ));
    let (code, text) = finish(rowshift(&ws, &["cutover", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("cut-over: swapped"), "{text}");
    eprintln!("{text}");
    assert!(
        text.contains("cut-over: view ")
            && text.contains("item_ids reads the new table")
            && text.contains("cheap created again on the new table (its column types changed)")
            && text.contains("cut-over: foreign key orders_item_id_fkey of table "),
        "{text}"
    );

    // The views read the new table: its rows, and the catalog says so.
    assert_eq!(view_reads(&pg, "item_ids"), vec![vec!["items".to_string()]]);
    assert_eq!(view_reads(&pg, "cheap"), vec![vec!["items".to_string()]]);
    assert_eq!(
        view_reads(&pg, "item_ids_odd"),
        vec![vec!["item_ids".to_string()]]
    );
    let old_readers = pg.rows(&format!(
        "SELECT count(*)::text FROM pg_depend d WHERE d.refobjid = '{s}.items__v1'::regclass AND d.classid = 'pg_rewrite'::regclass \
         AND d.objid NOT IN (SELECT oid FROM pg_rewrite WHERE ev_class = '{s}.items__v1'::regclass)"
    ));
    assert_eq!(
        old_readers,
        vec![vec!["0".to_string()]],
        "no view reads the old table"
    );
    // The view made again kept its privileges and comment; its column is the new type.
    assert_eq!(
        pg.rows(&format!(
            "SELECT has_table_privilege('public', '{s}.cheap', 'SELECT')::text, obj_description('{s}.cheap'::regclass, 'pg_class'), \
             format_type(a.atttypid, a.atttypmod) FROM pg_attribute a WHERE a.attrelid = '{s}.cheap'::regclass AND a.attname = 'qty'"
        )),
        vec![vec!["true".to_string(), "items under 10".into(), "bigint".into()]]
    );

    // The key continues past the largest: the sequence moved with the column.
    let max: i64 = pg.rows(&format!("SELECT max(id)::text FROM {s}.items"))[0][0]
        .parse()
        .unwrap();
    assert_eq!(max, 2002, "2,000 seeded and 2 late rows");
    let id: i64 = pg.rows(&format!(
        "INSERT INTO {s}.items (qty, note) VALUES (1, 'after') RETURNING id::text"
    ))[0][0]
        .parse()
        .unwrap();
    assert_eq!(id, max + 1);
    let new_view = pg.rows(&format!(
        "SELECT id::text, qty::text, note FROM {s}.cheap WHERE id >= 2001 ORDER BY id"
    ));
    assert_eq!(
        new_view,
        vec![
            vec!["2001".to_string(), "3".into(), "late".into()],
            vec!["2002".to_string(), "4".into(), "later".into()],
            vec![id.to_string(), "1".into(), "after".into()],
        ]
    );
    let identity = pg.rows(&format!(
        "SELECT attidentity::text, COALESCE(pg_get_serial_sequence('{s}.items', 'id'), '') FROM pg_attribute WHERE attrelid = '{s}.items'::regclass AND attname = 'id'"
    ));
    let want_identity = if key.contains("IDENTITY") { "d" } else { "" };
    assert_eq!(identity[0][0], want_identity, "{identity:?}");
    assert!(identity[0][1].ends_with("items_id_seq"), "{identity:?}");

    // The foreign key references the new table, valid, and is enforced.
    assert_eq!(
        pg.rows(&format!(
            "SELECT confrelid::regclass::text, convalidated::text FROM pg_constraint WHERE conrelid = '{s}.orders'::regclass AND contype = 'f'"
        )),
        vec![vec![format!("{}.items", pg.name), "true".to_string()]]
    );
    pg.exec(&format!("INSERT INTO {s}.orders (item_id) VALUES ({id})"));
    let refused = pg.rt.block_on(
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {s}.orders (item_id) VALUES (999999)"
        )))
        .execute(&pg.pool),
    );
    let err = refused
        .expect_err("a child row without its parent")
        .to_string();
    assert!(
        err.contains("violates foreign key constraint \"orders_item_id_fkey\""),
        "{err}"
    );

    // The old table goes without taking the sequence with it.
    let (code, text) = finish(rowshift(&ws, &["finalize", &p], &[]));
    assert_eq!(code, 0, "{text}");
    let next: i64 = pg.rows(&format!(
        "INSERT INTO {s}.items (qty, note) VALUES (1, 'final') RETURNING id::text"
    ))[0][0]
        .parse()
        .unwrap();
    assert_eq!(next, id + 1);
}

#[test]
fn postgres_cutover_carries_a_serial_key_views_and_foreign_keys() {
    carries_dependents("bigserial");
}

#[test]
fn postgres_cutover_carries_an_identity_key_views_and_foreign_keys() {
    carries_dependents("bigint GENERATED BY DEFAULT AS IDENTITY");
}

/// A materialized view, a view that reads a column the new table lacks, and a view that
/// must be created again but has a view built on it, each refuse the cut-over with
/// nothing swapped; once they are gone it swaps, and a foreign key that
/// no longer holds against the new table is reported and left `NOT VALID`.
#[test]
fn postgres_cutover_refuses_dependents_it_cannot_carry() {
    let ws = Workspace::new();
    let (pg, p) = dependents_source(&ws, "bigserial", false);
    let s = pg_quote(&pg.name);
    pg.exec(&format!(
        "CREATE MATERIALIZED VIEW {s}.totals AS SELECT count(*) AS n FROM {s}.items;
         CREATE VIEW {s}.qtys AS SELECT id, qty FROM {s}.items;
         CREATE VIEW {s}.big_qtys AS SELECT id FROM {s}.qtys WHERE qty > 50"
    ));
    let (code, text) = finish(rowshift(&ws, &["run", &p], &[]));
    assert_eq!(code, 0, "{text}");
    let swapped = |pg: &PgSchema| {
        pg.rows(&format!(
            "SELECT count(*)::text FROM pg_class WHERE relnamespace = '{s}'::regnamespace AND relname = 'items__v1'"
        ))[0][0]
            == "1"
    };

    let (code, text) = finish(rowshift(&ws, &["cutover", &p], &[]));
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains(&format!(
            "materialized view {}.totals depends on table {s}.\"items\": it cannot be moved to the new table",
            pg.name
        )) && text.contains("the cut-over was refused and nothing was swapped"),
        "{text}"
    );
    assert!(!swapped(&pg));
    pg.exec(&format!("DROP MATERIALIZED VIEW {s}.totals"));

    // `cheap` reads `note`, which the new table does not have.
    let (code, text) = finish(rowshift(&ws, &["cutover", &p], &[]));
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains(&format!(
            "view {}.cheap depends on table {s}.\"items\" and could not be moved to the new table: column items.note does not exist",
            pg.name
        )),
        "{text}"
    );
    assert!(!swapped(&pg));
    assert_eq!(view_reads(&pg, "cheap"), vec![vec!["items".to_string()]]);
    pg.exec(&format!("DROP VIEW {s}.cheap"));

    // `qtys`'s column `qty` becomes bigint, so it must be dropped, and `big_qtys` is
    // built on it.
    let (code, text) = finish(rowshift(&ws, &["cutover", &p], &[]));
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains(&format!(
            "view {n}.qtys depends on table {s}.\"items\" and could not be moved to the new table: cannot drop view {n}.qtys because other objects depend on it (view {n}.big_qtys depends on view {n}.qtys)",
            n = pg.name
        )),
        "{text}"
    );
    assert!(!swapped(&pg));
    pg.exec(&format!("DROP VIEW {s}.big_qtys"));

    // Order 7's item leaves the new table behind the capture's back.
    pg.exec(&format!("DELETE FROM {s}.items_new WHERE id = 7"));
    let (code, text) = finish(rowshift(&ws, &["cutover", &p], &[]));
    assert_eq!(code, 1, "swapped, with a key left NOT VALID: {text}");
    assert!(swapped(&pg));
    assert_eq!(view_reads(&pg, "qtys"), vec![vec!["items".to_string()]]);
    assert!(
        text.contains("warning: foreign key orders_item_id_fkey of table ")
            && text.contains("did not validate against the new table")
            && text.contains("Key (item_id)=(7) is not present in table \"items\"")
            && text.contains("it stays NOT VALID"),
        "{text}"
    );
    assert_eq!(
        pg.rows(&format!(
            "SELECT confrelid::regclass::text, convalidated::text FROM pg_constraint WHERE conrelid = '{s}.orders'::regclass AND contype = 'f'"
        )),
        vec![vec![format!("{}.items", pg.name), "false".to_string()]]
    );
}
