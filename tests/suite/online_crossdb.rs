//! Online moves between two databases (docs/online.md, "Between two databases"): a
//! writer inserts, updates (a key too) and deletes rows of the source at a steady rate
//! during the whole copy and catch-up, while rowshift is killed once in each and resumed.
//! Nothing can be renamed across databases, so `rowshift cutover` stops the catch-up at a
//! recorded log position and reports that the target is current as of it (issue 29); it
//! must end while the writer still runs. Once the writer has stopped, a second cut-over
//! leaves the target equal to the source through the transform. `finalize` then removes
//! the capture from the source.

use super::*;

/// A move of `items` from `src` to `dst`, with `note` upper-cased on the way.
struct Move {
    ws: Workspace,
    src: Db,
    dst: Db,
    name: String,
}

impl Move {
    fn new(from: Kind, to: Kind) -> Move {
        let ws = Workspace::new();
        let (src, dst) = (Db::new(from, &ws), Db::new(to, &ws));
        let name = format!("xdb-{}-{}", short(from), short(to));
        Move { ws, src, dst, name }
    }

    fn pipeline(&self) -> String {
        self.ws.write(
            "crossdb.toml",
            &format!(
                r#"name = "{name}"
[source]
{src}table = "items"
key = "id"
[target]
{dst}table = "items"
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
qty = {{ type = "bigint", expr = "qty" }}
note = {{ type = "text", expr = "upper(note)" }}
[chunks]
rows = 2000
parallel = 2
[online]
enabled = true
max_lag_rows = 100
batch_rows = 200
"#,
                name = self.name,
                src = self.src.location(),
                dst = self.dst.location(),
            ),
        )
    }

    /// The change log of the source as `rowshift status` names it (PostgreSQL's carries a
    /// hash of the source schema and table).
    fn log(&self, status: &str) -> String {
        match self.src.kind {
            Kind::Pg => status
                .split_once("(change log ")
                .and_then(|(_, rest)| rest.split_once(") is "))
                .map(|(log, _)| log.to_string())
                .unwrap_or_else(|| panic!("no change log named: {status}")),
            Kind::My | Kind::Lite => format!("_rowshift_changes_{}", self.name.replace('-', "_")),
        }
    }

    /// What of the capture is on the source, by its catalog: the triggers on the source
    /// table (PostgreSQL: its row trigger and its `TRUNCATE` trigger, which
    /// `information_schema.triggers` does not list), whether the change log `log` exists,
    /// and on PostgreSQL whether the trigger function beside it does.
    fn capture_objects(&self, log: &str) -> (i64, bool, bool) {
        match self.src.kind {
            Kind::Pg => {
                let items = self.src.table("items");
                let function = log.replacen("changes_", "capture_", 1);
                let row = &self.src.rows(&format!(
                    "SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = '{items}'::regclass AND NOT tgisinternal)::text, \
                     (to_regclass('{log}') IS NOT NULL)::text, (to_regproc('{function}') IS NOT NULL)::text"
                ))[0];
                (row[0].parse().unwrap(), row[1] == "true", row[2] == "true")
            }
            Kind::My | Kind::Lite => (self.src.triggers(), self.src.has_table(log), false),
        }
    }
}

fn short(kind: Kind) -> &'static str {
    match kind {
        Kind::Pg => "pg",
        Kind::My => "my",
        Kind::Lite => "lite",
    }
}

/// The code of the first character of `expr`.
fn first_code(kind: Kind, expr: &str) -> String {
    match kind {
        Kind::Pg => format!("ascii({expr})"),
        Kind::My => format!("ORD({expr})"),
        Kind::Lite => format!("unicode({expr})"),
    }
}

/// Row count and an order-independent checksum of `table` in `db`, its note being `note`
/// (an expression over the table's `note`), computed by the server. Between PostgreSQL
/// and MariaDB a row's hash is the first 60 bits of the MD5 of `id:qty:note` (both have
/// `md5`); with SQLite, which has none, it is a weighted sum of the id, the quantity, the
/// note's length and its first character.
fn checksum(db: &Db, table: &str, note: &str, md5: bool) -> Vec<Vec<String>> {
    let t = db.table(table);
    let hash = match (db.kind, md5) {
        (Kind::Pg, true) => format!(
            "('x' || substr(md5(id::text || ':' || qty::text || ':' || {note}), 1, 15))::bit(60)::bigint"
        ),
        (Kind::My, true) => format!(
            "CAST(CONV(SUBSTR(MD5(CONCAT(id, ':', qty, ':', {note})), 1, 15), 16, 10) AS UNSIGNED)"
        ),
        (kind, _) => format!(
            "id * 7 + qty * 3 + length({note}) * 5 + {} * 11",
            first_code(kind, note)
        ),
    };
    db.rows(&format!(
        "SELECT {}, {} FROM (SELECT count(*) AS n, sum({hash}) AS s FROM {t}) x",
        db.text("n"),
        db.text("s")
    ))
}

/// Waits for `child` at most `limit`; kills it and returns `None` beyond.
fn finish_within(mut child: std::process::Child, limit: Duration) -> Option<(i32, String)> {
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > limit {
            child.kill().unwrap();
            finish(child);
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(finish(child))
}

/// `log position P` as `rowshift` shows the position `p` of its JSON.
fn shown_position(p: &serde_json::Value) -> String {
    match (p["a"].as_i64(), p["b"].as_i64()) {
        (Some(0), Some(b)) => b.to_string(),
        (Some(a), Some(b)) => format!("{a}/{b}"),
        _ => panic!("not a log position: {p}"),
    }
}

/// `chunks   D of P done` of `rowshift status`: (D, P).
fn chunks_done(text: &str) -> (u64, u64) {
    let line = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("chunks "))
        .unwrap_or_else(|| panic!("no chunks line in: {text}"));
    let mut words = line.split_whitespace();
    let done = words.next().and_then(|w| w.parse().ok());
    let planned = words.nth(1).and_then(|w| w.parse().ok());
    match (done, planned) {
        (Some(d), Some(p)) => (d, p),
        _ => panic!("not `D of P done`: {line}"),
    }
}

/// The replay position `rowshift status` shows: `replayed N changes, up to log position P`.
fn status_position(text: &str) -> String {
    text.split_once("up to log position ")
        .and_then(|(_, rest)| rest.lines().next())
        .unwrap_or_else(|| panic!("no replay position in: {text}"))
        .to_string()
}

/// Sets its flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn crossdb_move(from: Kind, to: Kind) {
    let mv = Move::new(from, to);
    let ws = &mv.ws;
    let model = Arc::new(Mutex::new(mv.src.seed()));
    let p = mv.pipeline();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    // A failed assertion stops the writer too, rather than leave it writing into a
    // database being dropped.
    let _stop = StopOnDrop(stop.clone());
    let writer = spawn_writer(&mv.src, &model, &seen, &stop);
    std::thread::sleep(Duration::from_millis(300));

    // Killed (SIGKILL) during the copy: every chunk pauses before its commit.
    let mut child = rowshift(ws, &["run", &p], &[("ROWSHIFT_FAULT", "pause=400")]);
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    let (code, _) = finish(child);
    assert_ne!(code, 0, "the run was killed");
    let (code, text) = finish(rowshift(ws, &["status", &p], &[]));
    let (done, planned) = chunks_done(&text);
    assert!(
        done < planned,
        "the kill came during the copy ({code}): {text}"
    );

    // Killed during the catch-up: after its first replayed batch commits.
    let (code, text) = finish(rowshift(
        ws,
        &["run", &p],
        &[("ROWSHIFT_FAULT", "crash=replayed")],
    ));
    assert_ne!(code, 0, "the catch-up crashed: {text}");

    // Resumed: the copy is done, the catch-up goes on from the recorded position.
    let (code, text) = finish(rowshift(ws, &["run", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("online: replayed"), "{text}");

    // The cut-over while the writer runs: nothing renamed, a position reported. A writer
    // never pauses long enough for "no change waits" to hold, so a cut-over that waits for
    // that never ends.
    let child = rowshift(ws, &["cutover", &p, "--json"], &[]);
    let Some((code, text)) = finish_within(child, Duration::from_secs(60)) else {
        let (_, status) = finish(rowshift(ws, &["status", &p], &[]));
        stop.store(true, Ordering::SeqCst);
        writer.join().unwrap();
        let ops = seen.lock().unwrap().ops;
        panic!(
            "`rowshift cutover` between two databases did not end within 60 s with the writer running ({ops} statements so far); killed. `rowshift status` after: {status}"
        );
    };
    assert_eq!(code, 0, "{text}");
    let report: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let cut = &report["cutover"];
    assert_eq!(cut["swapped"], false, "{text}");
    assert_eq!(cut["old_table"], serde_json::Value::Null, "{text}");
    assert_eq!(cut["lock_ms"], 0.0, "{text}");
    let during = shown_position(&cut["position"]);
    assert_eq!(shown_position(&report["position"]), during, "{text}");
    // The position is the one recorded in the target.
    let (code, text) = finish(rowshift(ws, &["status", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert_eq!(status_position(&text), during, "{text}");

    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let seen = seen.lock().unwrap();
    assert!(
        seen.errors.is_empty(),
        "the writer saw errors: {:?}",
        seen.errors
    );
    // The writer ran throughout (several seconds at one statement every few ms).
    assert!(seen.ops > 150, "the writer ran {} statements", seen.ops);

    // Writes stopped: the second cut-over ends with nothing waiting.
    let (code, text) = finish(rowshift(ws, &["cutover", &p], &[]));
    assert_eq!(code, 0, "{text}");
    let (code, status) = finish(rowshift(ws, &["status", &p], &[]));
    assert_eq!(code, 0, "{status}");
    assert!(status.contains("capture lag: 0 changes"), "{status}");
    let last = status_position(&status);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("online: replayed ")
            && lines[0].ends_with(&format!(
                "; the target is current as of log position {last}"
            )),
        "{text}"
    );
    assert_eq!(
        lines[1],
        format!(
            "cut-over: source and target are different databases, so nothing was renamed: the target holds every change up to log position {last} (at least all logged when the cut-over began); once writes to the source stop, run the cut-over again, point the application at the target, then run rowshift finalize to drop the capture"
        )
    );
    assert_ne!(last, during, "the writer wrote after the first cut-over");

    // The target holds what the writer left, transformed: every row once, updates, key
    // changes and deletes applied.
    let model = model.lock().unwrap();
    let expected: Model = model
        .iter()
        .map(|(k, (q, n))| (*k, (*q, n.to_uppercase())))
        .collect();
    let now = mv.dst.table_rows("items");
    assert_same_rows(&now, &expected, "the target");
    assert_eq!(mv.src.table_rows("items"), *model, "the source");
    // The servers agree: the source through the transform, the target as it is.
    let md5 = from != Kind::Lite && to != Kind::Lite;
    let ours = checksum(&mv.src, "items", "upper(note)", md5);
    assert_eq!(ours, checksum(&mv.dst, "items", "note", md5));
    assert_eq!(ours[0][0], model.len().to_string());
    eprintln!(
        "{} -> {}: {} writer statements, the slowest {:?}; {} rows, checksum {}",
        short(from),
        short(to),
        seen.ops,
        seen.slowest,
        ours[0][0],
        ours[0][1]
    );

    // Finalize removes the triggers and the change log from the source.
    let log = mv.log(&status);
    let installed = match from {
        Kind::Pg => (2, true, true),
        Kind::My | Kind::Lite => (3, true, false),
    };
    assert_eq!(
        mv.capture_objects(&log),
        installed,
        "before finalize: {log}"
    );
    let (code, text) = finish(rowshift(ws, &["finalize", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        text,
        format!(
            "dropped the capture triggers and the change log of pipeline {}\n",
            mv.name
        )
    );
    assert_eq!(
        mv.capture_objects(&log),
        (0, false, false),
        "after finalize: {log}"
    );
    assert_eq!(mv.src.table_rows("items"), *model, "the source stays");
    assert_eq!(mv.dst.table_rows("items"), expected, "the target stays");
}

#[test]
fn crossdb_mariadb_to_postgres_online_move_with_a_writer() {
    crossdb_move(Kind::My, Kind::Pg);
}

#[test]
fn crossdb_postgres_to_mariadb_online_move_with_a_writer() {
    crossdb_move(Kind::Pg, Kind::My);
}

#[test]
fn crossdb_sqlite_to_postgres_online_move_with_a_writer() {
    crossdb_move(Kind::Lite, Kind::Pg);
}
