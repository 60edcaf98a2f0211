//! Reverse capture and `rowshift down` after a cut-over (docs/online.md), on
//! PostgreSQL, MariaDB and SQLite: a writer inserts, updates (a key too) and deletes
//! rows at a steady rate before the cut-over, after it (into the new table), through
//! the swap-back and after it (into the old table again). rowshift is killed during
//! the reverse catch-up and just before the swap-back commits, and run again. Once the
//! writer stops, the table under the source's name must hold exactly what the writer's
//! successful statements left, none lost from the time the new table was live.

use super::*;

/// The forward pipeline (the new table adds `shout`, the note in capitals) and its
/// reverse (`online.down.toml`, which drops it again).
fn pipelines(db: &Db, ws: &Workspace) -> String {
    let at = db.location();
    ws.write(
        "online.down.toml",
        &pipeline_text(
            "items-v2-down",
            (&at, "items_new"),
            (&at, "items"),
            "id = { type = \"bigint\", expr = \"id\", primary_key = true }\nqty = { type = \"int\", expr = \"qty\", nullable = false }\nnote = { type = \"varchar(40)\", expr = \"note\", nullable = false }",
            "",
        ),
    );
    ws.write(
        "online.toml",
        &pipeline_text(
            "items-v2",
            (&at, "items"),
            (&at, "items_new"),
            "id = { type = \"bigint\", expr = \"id\", primary_key = true }\nqty = { type = \"bigint\", expr = \"qty\" }\nnote = { type = \"text\", expr = \"note\" }\nshout = { type = \"text\", expr = \"upper(note)\" }",
            &format!(
                "{}reverse = \"online.down.toml\"\n",
                ONLINE.replace("max_lag_rows = 100", "max_lag_rows = 20")
            ),
        ),
    )
}

/// The names of the triggers on `table`.
fn triggers(db: &Db, table: &str) -> Vec<String> {
    let sql = match db.kind {
        Kind::Pg => format!(
            "SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '{}' AND c.relname = '{table}' AND NOT t.tgisinternal ORDER BY 1",
            db.pg.as_ref().unwrap().name
        ),
        Kind::My => format!(
            "SELECT CAST(TRIGGER_NAME AS CHAR) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{}' AND EVENT_OBJECT_TABLE = '{table}' ORDER BY 1",
            db.my.as_ref().unwrap().name
        ),
        Kind::Lite => format!(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = '{table}' ORDER BY 1"
        ),
    };
    db.rows(&sql).into_iter().map(|r| r[0].clone()).collect()
}

fn rollback(kind: Kind) {
    let ws = Workspace::new();
    let db = Db::new(kind, &ws);
    let model = Arc::new(Mutex::new(db.seed()));
    let p = pipelines(&db, &ws);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(&db, &model, &seen, &stop);
    std::thread::sleep(Duration::from_millis(300));

    let (code, text) = finish(rowshift(&ws, &["run", &p], &[]));
    assert_eq!(code, 0, "{text}");
    let (code, text) = finish(rowshift(&ws, &["cutover", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("cut-over: swapped"), "{text}");
    assert!(!text.contains("no reverse pipeline"), "{text}");
    // The new table carries the reverse capture's triggers from the swap on, the old
    // one none.
    let rev = match kind {
        Kind::Pg => vec![
            "_rowshift_capture_items_v2_down".to_string(),
            "_rowshift_capture_items_v2_down_truncate".to_string(),
        ],
        _ => ["del", "ins", "upd"]
            .iter()
            .map(|e| format!("_rowshift_capture_items_v2_down_{e}"))
            .collect(),
    };
    assert_eq!(triggers(&db, "items"), rev);
    assert_eq!(triggers(&db, "items__v1"), Vec::<String>::new());

    // Writes go on into the new table; the old one is kept current on demand.
    std::thread::sleep(Duration::from_millis(600));
    let (code, text) = finish(rowshift(&ws, &["catchup", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("reverse: the changes made since the cut-over, replayed into the old table"),
        "{text}"
    );
    let replayed: u64 = text
        .split("online: replayed ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(replayed > 0, "{text}");
    let (code, text) = finish(rowshift(&ws, &["status", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("reverse: capture on") && text.contains("is installed; replayed"),
        "{text}"
    );
    assert!(text.contains("into items__v1"), "{text}");

    // Killed during the reverse catch-up, after its first batch commits, and just
    // before the swap-back commits; then run again.
    std::thread::sleep(Duration::from_millis(400));
    let (code, text) = finish(rowshift(
        &ws,
        &["down", &p],
        &[("ROWSHIFT_FAULT", "crash=replayed")],
    ));
    assert_ne!(code, 0, "the reverse catch-up crashed: {text}");
    std::thread::sleep(Duration::from_millis(300));
    let (code, text) = finish(rowshift(
        &ws,
        &["down", &p],
        &[("ROWSHIFT_FAULT", "crash=cutover-commit")],
    ));
    assert_ne!(code, 0, "the swap-back crashed before its commit: {text}");
    assert_eq!(triggers(&db, "items"), rev, "nothing was swapped back");
    std::thread::sleep(Duration::from_millis(300));
    let (code, text) = finish(rowshift(&ws, &["down", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("swap-back: swapped after"), "{text}");
    assert!(
        text.contains("swapped back: table items is the old table again, with every write made since the cut-over; the new table is items_new again"),
        "{text}"
    );
    // The writer goes on, into the old table under its own name again.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();

    let seen = seen.lock().unwrap();
    let model = model.lock().unwrap();
    assert_writer_model(&db, &seen, &model, "after the swap-back");
    // The new table has its own name and shape back, and neither table a trigger.
    let shout = db.rows(&format!(
        "SELECT shout FROM {} WHERE id = 1",
        db.table("items_new")
    ));
    assert_eq!(shout, vec![vec!["N1".to_string()]]);
    assert_eq!(triggers(&db, "items"), Vec::<String>::new());
    assert_eq!(triggers(&db, "items_new"), Vec::<String>::new());
    assert!(seen.slowest < Duration::from_secs(5), "{:?}", seen.slowest);

    // Twice is refused, naming why, and changes nothing.
    let (code, text) = finish(rowshift(&ws, &["down", &p], &[]));
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("pipeline items-v2: no reverse capture on table items: no cut-over swapped it, it was swapped back already, or the cut-over ran without [online] reverse"),
        "{text}"
    );
}

#[test]
fn postgres_down_after_a_cutover_with_a_writer_loses_nothing() {
    rollback(Kind::Pg);
}

#[test]
fn mariadb_down_after_a_cutover_with_a_writer_loses_nothing() {
    rollback(Kind::My);
}

#[test]
fn sqlite_down_after_a_cutover_with_a_writer_loses_nothing() {
    rollback(Kind::Lite);
}

/// A row written into the new table that the reverse pipeline refuses (a `NULL` note
/// the old table does not allow) stops `down`, nothing swapped, until it is fixed; then
/// the row goes back like any other.
fn refused_row(kind: Kind) {
    let ws = Workspace::new();
    let db = Db::new(kind, &ws);
    db.seed();
    let p = pipelines(&db, &ws);
    let (code, text) = finish(rowshift(&ws, &["run", &p], &[]));
    assert_eq!(code, 0, "{text}");
    let (code, text) = finish(rowshift(&ws, &["cutover", &p], &[]));
    assert_eq!(code, 0, "{text}");
    db.exec(&format!(
        "INSERT INTO {} (id, qty, note) VALUES (900001, 5, NULL)",
        db.table("items")
    ));
    db.exec(&format!(
        "UPDATE {} SET qty = 77 WHERE id = 3",
        db.table("items")
    ));
    let (code, text) = finish(rowshift(&ws, &["down", &p], &[]));
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("1 rows written since the cut-over were rejected by the reverse pipeline")
            && text.contains("swapping back would lose them"),
        "{text}"
    );
    // Nothing swapped: the new table is still live, with the reverse capture.
    assert_eq!(
        triggers(&db, "items").len(),
        if kind == Kind::Pg { 2 } else { 3 }
    );
    assert_eq!(
        db.rows(&format!(
            "SELECT {} FROM {} WHERE id = 1",
            db.text("shout"),
            db.table("items")
        )),
        vec![vec!["N1".to_string()]]
    );
    // Fixed in the new table: replayed again, it leaves the quarantine.
    db.exec(&format!(
        "UPDATE {} SET note = 'fixed' WHERE id = 900001",
        db.table("items")
    ));
    let (code, text) = finish(rowshift(&ws, &["down", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        db.rows(&format!(
            "SELECT {}, {}, note FROM {} WHERE id IN (3, 900001) ORDER BY id",
            db.text("id"),
            db.text("qty"),
            db.table("items")
        )),
        vec![
            vec!["3".to_string(), "77".to_string(), "n3".to_string()],
            vec!["900001".to_string(), "5".to_string(), "fixed".to_string()],
        ]
    );
}

#[test]
fn sqlite_down_refuses_while_the_reverse_pipeline_rejects_a_row() {
    refused_row(Kind::Lite);
}

#[test]
fn postgres_down_refuses_while_the_reverse_pipeline_rejects_a_row() {
    refused_row(Kind::Pg);
}

/// A reverse pipeline that does not lead back where the rows came from stops the
/// cut-over at its line, nothing swapped; a missing one is an error at the key.
#[test]
fn a_reverse_pipeline_that_does_not_lead_back_stops_the_cutover() {
    let ws = Workspace::new();
    let db = Db::new(Kind::Lite, &ws);
    db.seed();
    let p = pipelines(&db, &ws);
    let (code, text) = finish(rowshift(&ws, &["run", &p], &[]));
    assert_eq!(code, 0, "{text}");
    let down = std::fs::read_to_string(ws.path("online.down.toml")).unwrap();
    ws.write(
        "online.down.toml",
        &down.replace(
            "table = \"items\"\n[target.columns]",
            "table = \"items_old\"\n[target.columns]",
        ),
    );
    let (code, text) = finish(rowshift(&ws, &["cutover", &p], &[]));
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("online.down.toml:8:9: ")
            && text
                .contains("the reverse pipeline's [target] must be the forward pipeline's source")
            && text.contains("table items (")
            && text.contains("it is SQLite file"),
        "{text}"
    );
    // Nothing swapped: the source still has its capture.
    assert_eq!(triggers(&db, "items").len(), 3);
    std::fs::remove_file(ws.path("online.down.toml")).unwrap();
    let (code, text) = finish(rowshift(&ws, &["cutover", &p], &[]));
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("online.toml:22:11: ") && text.contains("[online] reverse: no pipeline file"),
        "{text}"
    );
}

/// A new table that no longer has a column the forward pipeline reads (`note` became
/// `label`): after the cut-over the whole pipeline does not compile against the live
/// table, and `status`, `catchup`, `down` and `finalize` still work on it. The swap-back
/// drops the reverse quarantine it left empty.
#[test]
fn commands_after_a_cutover_that_renamed_a_column() {
    let ws = Workspace::new();
    let db = Db::new(Kind::Lite, &ws);
    db.seed();
    let p = pipelines(&db, &ws);
    let forward = std::fs::read_to_string(ws.path("online.toml")).unwrap();
    ws.write(
        "online.toml",
        &forward.replace(
            "note = { type = \"text\", expr = \"note\" }\nshout = { type = \"text\", expr = \"upper(note)\" }",
            "label = { type = \"text\", expr = \"note\" }",
        ),
    );
    let down = std::fs::read_to_string(ws.path("online.down.toml")).unwrap();
    ws.write(
        "online.down.toml",
        &down.replace("expr = \"note\", nullable", "expr = \"label\", nullable"),
    );
    let (code, text) = finish(rowshift(&ws, &["run", &p], &[]));
    assert_eq!(code, 0, "{text}");
    let (code, text) = finish(rowshift(&ws, &["cutover", &p], &[]));
    assert_eq!(code, 0, "{text}");
    db.exec("UPDATE items SET label = 'renamed' WHERE id = 9");
    let (code, text) = finish(rowshift(&ws, &["status", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("reverse: capture on"), "{text}");
    let (code, text) = finish(rowshift(&ws, &["catchup", &p], &[]));
    assert_eq!(code, 0, "{text}");
    let (code, text) = finish(rowshift(&ws, &["cutover", &p], &[]));
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("the capture triggers are not on the source table: an earlier cut-over swapped it already"),
        "{text}"
    );
    let (code, text) = finish(rowshift(&ws, &["down", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        db.rows("SELECT note FROM items WHERE id = 9"),
        vec![vec!["renamed".to_string()]]
    );
    assert!(!db.has_table("items__v1_rejects"));
    assert!(
        db.has_table("items_new_rejects"),
        "the forward move's quarantine stays"
    );
    let (code, text) = finish(rowshift(&ws, &["finalize", &p], &[]));
    assert_eq!(code, 0, "{text}");
}
