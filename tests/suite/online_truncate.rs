//! A `TRUNCATE` of the source during an online move is never missed (docs/online.md):
//! PostgreSQL logs it with a statement trigger, MariaDB detects it by the table's new
//! InnoDB id, and both refuse the cut-over until the table is copied again. SQLite has
//! no `TRUNCATE`: its `DELETE FROM t` deletes row by row while the capture's triggers
//! are on the table, and is replayed like any delete.

use super::*;

/// Three updates, then a `TRUNCATE`, then two new rows: the catch-up stops and the
/// cut-over is refused; a restarted run copies
/// the two rows and cuts over (not on MariaDB, whose cut-over's drain is left out of
/// the parallel suite, see online.rs).
fn truncated_during_the_move(kind: Kind, truncate: &str, seen: &str) {
    let ws = Workspace::new();
    let db = Db::new(kind, &ws);
    db.seed();
    let p = db.pipeline(&ws);
    let (code, text) = finish(rowshift(&ws, &["run", &p], &[]));
    assert_eq!(code, 0, "{text}");
    let items = db.table("items");
    db.exec(&format!("UPDATE {items} SET qty = 1 WHERE id <= 3"));
    db.exec(&format!("{truncate} {items}"));
    db.exec(&format!(
        "INSERT INTO {items} (id, qty, note) VALUES (1, 10, 'a'), (2, 20, 'b')"
    ));

    let (code, text) = finish(rowshift(&ws, &["run", &p], &[]));
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains(seen)
            && text.contains("the target cannot follow a TRUNCATE by key, so nothing after it was replayed and the cut-over is refused, nothing swapped; run `rowshift run --restart` to copy the table again"),
        "{text}"
    );
    if kind == Kind::My {
        assert!(
            text.contains("since the capture began: it was truncated (TRUNCATE fires no trigger, so the rows it removed are not in the change log) or rebuilt (OPTIMIZE TABLE, ALTER TABLE ... FORCE), which cannot be told apart"),
            "{text}"
        );
    }
    let (code, text) = finish(rowshift(&ws, &["cutover", &p], &[]));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains(seen), "{text}");
    assert!(!db.has_table("items__v1"), "nothing swapped");
    let (code, text) = finish(rowshift(&ws, &["status", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("capture: {seen}"))
            && text.contains("the cut-over will be refused (run with --restart to copy again)"),
        "{text}"
    );

    let (code, text) = finish(rowshift(&ws, &["run", &p, "--restart"], &[]));
    assert_eq!(code, 0, "{text}");
    let (code, text) = finish(rowshift(&ws, &["status", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(
        !text.contains("capture: "),
        "the restart began again: {text}"
    );
    let want: Model = [(1, (10, "a".to_string())), (2, (20, "b".to_string()))].into();
    assert_eq!(db.table_rows("items_new"), want);
    if kind != Kind::My {
        let (code, text) = finish(rowshift(&ws, &["cutover", &p], &[]));
        assert_eq!(code, 0, "{text}");
        assert_eq!(db.table_rows("items"), want);
    }
}

#[test]
fn postgres_truncate_during_an_online_move_refuses_the_cutover() {
    truncated_during_the_move(Kind::Pg, "TRUNCATE", "the source table was truncated at ");
}

#[test]
fn mariadb_truncate_during_an_online_move_refuses_the_cutover() {
    truncated_during_the_move(
        Kind::My,
        "TRUNCATE TABLE",
        "the source table's InnoDB table id changed from ",
    );
}

/// SQLite's `DELETE FROM items` (its `TRUNCATE`) is captured row by row: the cut-over
/// swaps in exactly what the source holds after it.
#[test]
fn sqlite_delete_of_every_row_during_an_online_move_is_replayed() {
    let ws = Workspace::new();
    let db = Db::new(Kind::Lite, &ws);
    db.seed();
    let p = db.pipeline(&ws);
    let (code, text) = finish(rowshift(&ws, &["run", &p], &[]));
    assert_eq!(code, 0, "{text}");
    db.exec("DELETE FROM items");
    db.exec("INSERT INTO items (id, qty, note) VALUES (1, 10, 'a'), (2, 20, 'b')");
    let logged = db.rows("SELECT CAST(count(*) AS TEXT) FROM \"_rowshift_changes_items_v2\"");
    assert_eq!(
        logged[0][0],
        (ROWS + 2).to_string(),
        "every row's delete was logged"
    );
    let (code, text) = finish(rowshift(&ws, &["cutover", &p], &[]));
    assert_eq!(code, 0, "{text}");
    let want: Model = [(1, (10, "a".to_string())), (2, (20, "b".to_string()))].into();
    assert_eq!(db.table_rows("items"), want);
}

/// A source table dropped and created again loses the capture's triggers: the cut-over
/// is refused, naming it.
#[test]
fn sqlite_source_table_created_again_refuses_the_cutover() {
    let ws = Workspace::new();
    let db = Db::new(Kind::Lite, &ws);
    db.seed();
    let p = db.pipeline(&ws);
    let (code, text) = finish(rowshift(&ws, &["run", &p], &[]));
    assert_eq!(code, 0, "{text}");
    db.exec("DROP TABLE items");
    db.exec(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, qty INT NOT NULL, note VARCHAR(40) NOT NULL)",
    );
    let (code, text) = finish(rowshift(&ws, &["cutover", &p], &[]));
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("the capture triggers are not on the source table: an earlier cut-over swapped it already, or the table was dropped and created again"),
        "{text}"
    );
    assert!(!db.has_table("items__v1"));
}
