//! Online moves (docs/online.md) on PostgreSQL, MariaDB and SQLite: a writer inserts,
//! updates (a key too) and deletes rows at a steady rate during the whole copy, the
//! catch-up and the cut-over, while rowshift is killed during the copy and during the
//! catch-up and resumed. After the swap, the table under the source's name must hold
//! exactly what the writer's successful statements left, and the writer must never
//! have seen an error.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

#[path = "online_crossdb.rs"]
mod crossdb;
#[path = "online_dependents.rs"]
mod dependents;
#[path = "online_replica.rs"]
mod replica;
#[path = "online_rollback.rs"]
mod rollback;
#[path = "online_sets.rs"]
mod sets;
#[path = "online_throttle.rs"]
mod throttle;
#[path = "online_truncate.rs"]
mod truncate;

/// The `[chunks]` and `[online]` sections of the tests' online moves.
const ONLINE: &str = "[chunks]
rows = 2000
parallel = 2
[online]
enabled = true
max_lag_rows = 100
batch_rows = 200
lock_timeout_ms = 3000
";

/// A pipeline file's text: `name` moves `source` into `target` (each its section's
/// `url`/`schema` lines and its table; the key is `id`), with the `[target.columns]`
/// lines `columns`, and `rest` after them.
fn pipeline_text(
    name: &str,
    (from, source): (&str, &str),
    (to, target): (&str, &str),
    columns: &str,
    rest: &str,
) -> String {
    format!(
        "name = \"{name}\"\n[source]\n{from}table = \"{source}\"\nkey = \"id\"\n[target]\n{to}table = \"{target}\"\n[target.columns]\n{columns}\n{rest}"
    )
}

/// Rows in the source before the copy.
const ROWS: i64 = 20_000;

/// The table as the writer left it: id -> (qty, note).
type Model = BTreeMap<i64, (i64, String)>;

/// A statement and what it does to the [`Model`] when it succeeds.
type Op = (String, Box<dyn FnOnce(&mut Model)>);

/// What the writer saw.
#[derive(Default)]
struct Seen {
    ops: u64,
    errors: Vec<String>,
    slowest: Duration,
}

/// One database under test: how the writer connects and runs a statement, and how the
/// test reads a table.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Pg,
    My,
    Lite,
}

struct Db {
    kind: Kind,
    pg: Option<PgSchema>,
    my: Option<MyDb>,
    lite: Option<std::path::PathBuf>,
}

impl Db {
    fn new(kind: Kind, ws: &Workspace) -> Db {
        Db {
            kind,
            pg: (kind == Kind::Pg).then(|| PgSchema::new("online")),
            my: (kind == Kind::My).then(|| MyDb::new("online")),
            lite: (kind == Kind::Lite).then(|| ws.path("shop.db")),
        }
    }

    fn table(&self, t: &str) -> String {
        match self.kind {
            Kind::Pg => format!("{}.{}", pg_quote(&self.pg.as_ref().unwrap().name), t),
            Kind::My => format!("{}.{}", my_quote(&self.my.as_ref().unwrap().name), t),
            Kind::Lite => t.to_string(),
        }
    }

    fn exec(&self, sql: &str) {
        match self.kind {
            Kind::Pg => self.pg.as_ref().unwrap().exec(sql),
            Kind::My => self.my.as_ref().unwrap().exec(sql),
            Kind::Lite => sqlite_exec(self.lite.as_ref().unwrap(), sql),
        }
    }

    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        match self.kind {
            Kind::Pg => self.pg.as_ref().unwrap().rows(sql),
            Kind::My => self.my.as_ref().unwrap().rows(sql),
            Kind::Lite => sqlite_rows(self.lite.as_ref().unwrap(), sql),
        }
    }

    fn text(&self, column: &str) -> String {
        match self.kind {
            Kind::Pg => format!("{column}::text"),
            Kind::My => format!("CAST({column} AS CHAR)"),
            Kind::Lite => format!("CAST({column} AS TEXT)"),
        }
    }

    /// Every row of `table`, by id.
    fn table_rows(&self, table: &str) -> Model {
        let sql = format!(
            "SELECT {}, {}, note FROM {} ORDER BY id",
            self.text("id"),
            self.text("qty"),
            self.table(table)
        );
        self.rows(&sql)
            .into_iter()
            .map(|r| (r[0].parse().unwrap(), (r[1].parse().unwrap(), r[2].clone())))
            .collect()
    }

    /// The `url` (and `schema`) lines of a pipeline section that names this database.
    fn location(&self) -> String {
        match self.kind {
            Kind::Pg => format!(
                "url = {}\nschema = {}\n",
                toml_str(&pg_url()),
                self.pg.as_ref().unwrap().toml()
            ),
            Kind::My => format!("url = {}\n", toml_str(&self.my.as_ref().unwrap().url())),
            Kind::Lite => "url = \"sqlite://shop.db\"\n".into(),
        }
    }

    /// `online.toml`: `items` into `items_new` in this database, online.
    fn pipeline(&self, ws: &Workspace) -> String {
        ws.write(
            "online.toml",
            &pipeline_text(
                "items-v2",
                (&self.location(), "items"),
                (&self.location(), "items_new"),
                "id = { type = \"bigint\", expr = \"id\", primary_key = true }\nqty = { type = \"bigint\", expr = \"qty\" }\nnote = { type = \"text\", expr = \"note\" }",
                ONLINE,
            ),
        )
    }

    /// Creates `items` with [`ROWS`] rows; returns them.
    fn seed(&self) -> Model {
        let ty = if self.kind == Kind::Lite {
            "INTEGER"
        } else {
            "BIGINT"
        };
        self.exec(&format!(
            "CREATE TABLE {} (id {ty} PRIMARY KEY, qty INT NOT NULL, note VARCHAR(40) NOT NULL)",
            self.table("items")
        ));
        let mut model = Model::new();
        for start in (1..=ROWS).step_by(1000) {
            let values: Vec<String> = (start..start + 1000)
                .map(|i| {
                    model.insert(i, (i % 97, format!("n{i}")));
                    format!("({i}, {}, 'n{i}')", i % 97)
                })
                .collect();
            self.exec(&format!(
                "INSERT INTO {} (id, qty, note) VALUES {}",
                self.table("items"),
                values.join(", ")
            ));
        }
        model
    }
}

/// A connection of the writer's own, which runs one statement at a time (autocommit).
trait Writer {
    fn run(&mut self, sql: &str) -> Result<u64, String>;
}

struct SqlxWriter<DB: sqlx::Database> {
    rt: tokio::runtime::Runtime,
    conn: DB::Connection,
}

impl<DB: sqlx::Database> Writer for SqlxWriter<DB>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::QueryResult: Affected,
{
    fn run(&mut self, sql: &str) -> Result<u64, String> {
        self.rt
            .block_on(sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&mut self.conn))
            .map(|r| r.rows())
            .map_err(|e| e.to_string())
    }
}

trait Affected {
    fn rows(&self) -> u64;
}
impl Affected for sqlx::postgres::PgQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}
impl Affected for sqlx::mysql::MySqlQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}
impl Affected for sqlx::sqlite::SqliteQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

fn connect<DB: sqlx::Database>(url: &str) -> SqlxWriter<DB> {
    use sqlx::Connection;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let conn = rt.block_on(DB::Connection::connect(url)).unwrap();
    SqlxWriter { rt, conn }
}

fn writer_for(db: &Db) -> Box<dyn Writer + Send> {
    match db.kind {
        Kind::Pg => Box::new(connect::<sqlx::Postgres>(&pg_url())),
        Kind::My => Box::new(connect::<sqlx::MySql>(&db.my.as_ref().unwrap().url())),
        Kind::Lite => {
            let w = connect::<sqlx::Sqlite>(&format!(
                "sqlite://{}",
                db.lite.as_ref().unwrap().display()
            ));
            let mut w: Box<dyn Writer + Send> = Box::new(w);
            // Writers wait for the cut-over's lock rather than fail.
            w.run("PRAGMA busy_timeout = 30000").unwrap();
            w
        }
    }
}

/// Starts [`write_steadily`] on `db`'s `items` in a thread of its own.
fn spawn_writer(
    db: &Db,
    model: &Arc<Mutex<Model>>,
    seen: &Arc<Mutex<Seen>>,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let (w, t) = (writer_for(db), db.table("items"));
    let (m, s, st) = (model.clone(), seen.clone(), stop.clone());
    std::thread::spawn(move || write_steadily(w, t, m, s, st))
}

/// Runs inserts, updates (one in ten changes the key) and deletes on `items` every few
/// milliseconds until `stop`, keeping `model` as what the statements that succeeded
/// left.
fn write_steadily(
    mut w: Box<dyn Writer + Send>,
    table: String,
    model: Arc<Mutex<Model>>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) {
    let mut next = ROWS + 1;
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut random = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n.max(1)
    };
    while !stop.load(Ordering::SeqCst) {
        let mut m = model.lock().unwrap();
        let ids: Vec<i64> = if m.is_empty() {
            vec![]
        } else {
            let nth = random(m.len() as u64) as usize;
            m.keys().nth(nth).copied().into_iter().collect()
        };
        let op = random(10);
        let t0 = Instant::now();
        let (sql, apply): Op = match (op, ids.first()) {
            (0..=3, _) | (_, None) => {
                let (id, qty) = (next, random(1000) as i64);
                next += 1;
                (
                    format!("INSERT INTO {table} (id, qty, note) VALUES ({id}, {qty}, 'i{id}')"),
                    Box::new(move |m: &mut Model| {
                        m.insert(id, (qty, format!("i{id}")));
                    }),
                )
            }
            (4..=6, Some(&id)) => {
                let qty = random(1000) as i64;
                (
                    format!("UPDATE {table} SET qty = {qty}, note = 'u{qty}' WHERE id = {id}"),
                    Box::new(move |m: &mut Model| {
                        m.insert(id, (qty, format!("u{qty}")));
                    }),
                )
            }
            (7, Some(&id)) => {
                let to = next + 1_000_000;
                next += 1;
                (
                    format!("UPDATE {table} SET id = {to} WHERE id = {id}"),
                    Box::new(move |m: &mut Model| {
                        let row = m.remove(&id).unwrap();
                        m.insert(to, row);
                    }),
                )
            }
            (_, Some(&id)) => (
                format!("DELETE FROM {table} WHERE id = {id}"),
                Box::new(move |m: &mut Model| {
                    m.remove(&id);
                }),
            ),
        };
        let done = w.run(&sql);
        let took = t0.elapsed();
        let mut s = seen.lock().unwrap();
        s.ops += 1;
        s.slowest = s.slowest.max(took);
        match done {
            Ok(_) => apply(&mut m),
            Err(e) => s.errors.push(format!("{sql}: {e}")),
        }
        drop(s);
        drop(m);
        std::thread::sleep(Duration::from_millis(3));
    }
}

fn rowshift(ws: &Workspace, args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_rowshift"))
        .args(args)
        .current_dir(ws.path("."))
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: std::process::Child) -> (i32, String) {
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The writer saw no error and ran throughout, and table `items` holds exactly what its
/// successful statements left: row by row, and by a count and checksum the server
/// computes. `when` says where the test stands, for messages.
fn assert_writer_model(db: &Db, seen: &Seen, model: &Model, when: &str) {
    assert!(
        seen.errors.is_empty(),
        "the writer saw errors: {:?}",
        seen.errors
    );
    // The writer ran throughout (a few seconds at one statement every few ms); on a
    // machine shared with other builds it manages 230 to 330, so the bound is loose.
    assert!(seen.ops > 150, "the writer ran {} statements", seen.ops);
    assert_model(db, "items", model, when);
}

/// The table under `table` equals the writer's model (compared row by row, then by a
/// count and checksum the server computes), while the writer may still run: the
/// writer's own checks come at the end ([`assert_writer_model`]).
fn assert_model(db: &Db, table: &str, model: &Model, when: &str) {
    // Each time in words of its own: a server caches a statement's plan by its text, and
    // the table under this name changes its columns' types between two looks.
    let now: Model = db
        .rows(&format!(
            "SELECT {}, {}, note FROM {} /* {when} */ ORDER BY id",
            db.text("id"),
            db.text("qty"),
            db.table(table)
        ))
        .into_iter()
        .map(|r| (r[0].parse().unwrap(), (r[1].parse().unwrap(), r[2].clone())))
        .collect();
    assert_same_rows(&now, model, when);
    let sum = db.rows(&format!(
        "SELECT {}, {} FROM (SELECT count(*) AS n, sum(id * 7 + qty * 3 + length(note)) AS s FROM {}) t /* {when} */",
        db.text("n"),
        db.text("s"),
        db.table(table)
    ));
    let expected: i64 = model
        .iter()
        .map(|(k, (q, n))| k * 7 + q * 3 + n.len() as i64)
        .sum();
    assert_eq!(
        sum,
        vec![vec![model.len().to_string(), expected.to_string()]],
        "{when}"
    );
}

/// `now` holds exactly the rows of `expected`; the message names up to five rows that
/// differ or should not be there.
fn assert_same_rows(now: &Model, expected: &Model, when: &str) {
    let differing: Vec<_> = expected
        .iter()
        .filter(|(k, v)| now.get(k) != Some(v))
        .take(5)
        .collect();
    let extra: Vec<_> = now
        .iter()
        .filter(|(k, _)| !expected.contains_key(k))
        .take(5)
        .collect();
    assert!(
        differing.is_empty() && extra.is_empty(),
        "{when}: {} rows, expected {}; differing {differing:?}, not expected {extra:?}",
        now.len(),
        expected.len()
    );
}

fn online_move(kind: Kind) {
    let ws = Workspace::new();
    let db = Db::new(kind, &ws);
    let model = Arc::new(Mutex::new(db.seed()));
    let p = db.pipeline(&ws);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(&db, &model, &seen, &stop);
    std::thread::sleep(Duration::from_millis(300));

    // Killed (SIGKILL) during the copy: every chunk pauses before its commit.
    let mut child = rowshift(&ws, &["run", &p], &[("ROWSHIFT_FAULT", "pause=400")]);
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    let (code, _) = finish(child);
    assert_ne!(code, 0, "the run was killed");

    // Killed during the catch-up: after its first replayed batch commits.
    let (code, text) = finish(rowshift(
        &ws,
        &["run", &p],
        &[("ROWSHIFT_FAULT", "crash=replayed")],
    ));
    assert_ne!(code, 0, "the catch-up crashed: {text}");

    // Resumed: the copy is done, the catch-up goes on from the recorded position.
    let (code, text) = finish(rowshift(&ws, &["run", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("online: replayed"), "{text}");
    let (code, text) = finish(rowshift(&ws, &["status", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("capture lag: "), "{text}");

    let (code, text) = finish(rowshift(&ws, &["cutover", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("cut-over: swapped"), "{text}");
    assert!(
        text.contains("note: this pipeline has no reverse pipeline ([online] reverse), so `rowshift down` cannot swap its cut-over back: the old table stays as items__v1 until `rowshift finalize`, but writes made after the cut-over do not reach it"),
        "{text}"
    );
    eprintln!("{text}");
    // Writes go on into the new table for a while, then stop.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();

    let seen = seen.lock().unwrap();
    let model = model.lock().unwrap();
    assert_writer_model(&db, &seen, &model, "after the swap");
    // The old table is kept, without triggers: the writer's later statements did not
    // reach it.
    let old = db.table_rows("items__v1");
    assert!(old.len() as i64 >= ROWS / 2, "{}", old.len());
    eprintln!(
        "{}: {} writer statements, the slowest {:?}",
        match kind {
            Kind::Pg => "postgres",
            Kind::My => "mariadb",
            Kind::Lite => "sqlite",
        },
        seen.ops,
        seen.slowest
    );
    assert!(seen.slowest < Duration::from_secs(5), "{:?}", seen.slowest);

    let (code, text) = finish(rowshift(&ws, &["finalize", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("dropped the old table items__v1"), "{text}");
    let (code, text) = finish(rowshift(&ws, &["cutover", &p], &[]));
    assert_eq!(code, 2, "{text}");
}

#[test]
fn postgres_online_move_with_a_writer_kills_and_cutover() {
    online_move(Kind::Pg);
}

#[test]
fn mariadb_online_move_with_a_writer_kills_and_cutover() {
    online_move(Kind::My);
}

#[test]
fn sqlite_online_move_with_a_writer_kills_and_cutover() {
    online_move(Kind::Lite);
}

impl Db {
    /// The test's own schema or database, as a string literal (SQLite: none).
    fn schema_literal(&self) -> String {
        match self.kind {
            Kind::Pg => format!("'{}'", self.pg.as_ref().unwrap().name),
            Kind::My => format!("'{}'", self.my.as_ref().unwrap().name),
            Kind::Lite => String::new(),
        }
    }

    /// Triggers on any table of the test's schema.
    fn triggers(&self) -> i64 {
        let sql = match self.kind {
            Kind::Pg => format!(
                "SELECT count(*)::text FROM information_schema.triggers WHERE trigger_schema = {}",
                self.schema_literal()
            ),
            Kind::My => format!(
                "SELECT CAST(count(*) AS CHAR) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {}",
                self.schema_literal()
            ),
            Kind::Lite => {
                "SELECT CAST(count(*) AS TEXT) FROM sqlite_master WHERE type = 'trigger'".into()
            }
        };
        self.rows(&sql)[0][0].parse().unwrap()
    }

    /// Whether `table` exists in the test's schema.
    fn has_table(&self, table: &str) -> bool {
        let sql = match self.kind {
            Kind::Pg | Kind::My => format!(
                "SELECT {} FROM information_schema.tables WHERE table_schema = {} AND table_name = '{table}'",
                self.text("count(*)"),
                self.schema_literal()
            ),
            Kind::Lite => format!(
                "SELECT CAST(count(*) AS TEXT) FROM sqlite_master WHERE type = 'table' AND name = '{table}'"
            ),
        };
        self.rows(&sql)[0][0] == "1"
    }

    /// A trigger on the target that changes the row of id 105 after the drain wrote it,
    /// as another writer would: the drain's read-back must catch it.
    fn tamper(&self, on: bool) {
        let t = self.table("items_new");
        let sql = match (self.kind, on) {
            (Kind::Lite, true) => format!(
                "CREATE TRIGGER tamper AFTER INSERT ON {t} WHEN NEW.id = 105 BEGIN UPDATE {t} SET qty = qty + 1000 WHERE id = 105; END"
            ),
            (Kind::Lite, false) => "DROP TRIGGER tamper".into(),
            (Kind::Pg, true) => {
                let f = self.table("tamper");
                format!(
                    "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.qty := NEW.qty + 1000; RETURN NEW; END $$; \
                     CREATE TRIGGER tamper BEFORE INSERT ON {t} FOR EACH ROW WHEN (NEW.id = 105) EXECUTE FUNCTION {f}()"
                )
            }
            (Kind::Pg, false) => format!("DROP TRIGGER tamper ON {t}"),
            (Kind::My, true) => format!(
                "CREATE TRIGGER {} BEFORE INSERT ON {t} FOR EACH ROW BEGIN IF NEW.id = 105 THEN SET NEW.qty = NEW.qty + 1000; END IF; END",
                self.table("tamper")
            ),
            (Kind::My, false) => format!("DROP TRIGGER {}", self.table("tamper")),
        };
        self.exec(&sql);
    }
}

/// How the cut-over of [`cutover_case`] goes.
#[derive(Clone, Copy, PartialEq)]
enum Case {
    /// Straight through.
    Clean,
    /// A trigger on the target changes a drained row: the read-back stops the cut-over.
    Mismatch,
    /// Killed (abort) at `cutover-commit`, the last step before the swap commits.
    Crash,
}

/// A cut-over whose lock finds 20 changes to drain (a writer's statement lands just
/// before the lock): the drained keys are read back and compared, and the end state is
/// the source's final rows under its name, whatever happened on the way.
fn cutover_case(kind: Kind, case: Case) {
    let ws = Workspace::new();
    let db = Db::new(kind, &ws);
    let mut model = db.seed();
    let p = db.pipeline(&ws);
    let (code, text) = finish(rowshift(&ws, &["run", &p], &[]));
    assert_eq!(code, 0, "{text}");

    // Changes the cut-over's catch-up replays before the lock.
    let items = db.table("items");
    db.exec(&format!("UPDATE {items} SET qty = 500 WHERE id <= 5"));
    db.exec(&format!("DELETE FROM {items} WHERE id = 6"));
    db.exec(&format!(
        "INSERT INTO {items} (id, qty, note) VALUES (30001, 1, 'new')"
    ));
    for id in 1..=5 {
        model.get_mut(&id).unwrap().0 = 500;
    }
    model.remove(&6);
    model.insert(30001, (1, "new".into()));
    // The changes the drain replays under the lock: 20 rows, one statement.
    let late =
        format!("0:cutover-lock:UPDATE {items} SET qty = qty + 1 WHERE id BETWEEN 100 AND 119");
    for id in 100..=119 {
        model.get_mut(&id).unwrap().0 += 1;
    }
    let fault_sql = ("ROWSHIFT_FAULT_SQL", late.as_str());

    match case {
        Case::Clean => {}
        Case::Mismatch => {
            db.tamper(true);
            let (code, text) = finish(rowshift(&ws, &["cutover", &p], &[fault_sql]));
            assert_ne!(code, 0, "{text}");
            assert!(
                text.contains("the cut-over's drained changes (keys 100, ")
                    && text.contains("id=105, column qty: sent '9', the target holds '1009'")
                    && text.contains("the cut-over stopped, nothing was swapped"),
                "{text}"
            );
            assert!(!db.has_table("items__v1"), "nothing swapped");
            assert!(db.has_table("items_new"));
            assert!(db.triggers() > 1, "the capture triggers stay");
            db.tamper(false);
            // On PostgreSQL and MariaDB the drain committed the changed row: a change of
            // the source row replays it again.
            db.exec(&format!("UPDATE {items} SET qty = qty WHERE id = 105"));
        }
        Case::Crash => {
            let (code, text) = finish(rowshift(
                &ws,
                &["cutover", &p],
                &[fault_sql, ("ROWSHIFT_FAULT", "crash=cutover-commit")],
            ));
            assert_ne!(code, 0, "the cut-over crashed: {text}");
            assert!(db.has_table("items_new"), "nothing swapped");
            // MariaDB's empty sentry stays under the old table's name (it kept the
            // waiting rename from swapping); the next cut-over drops it.
            assert_eq!(db.has_table("items__v1"), kind == Kind::My);
        }
    }
    let env: &[(&str, &str)] = if case == Case::Clean {
        &[fault_sql]
    } else {
        &[]
    };
    let (code, text) = finish(rowshift(&ws, &["cutover", &p, "--json"], env));
    assert_eq!(code, 0, "{text}");
    let report: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let cut = &report["cutover"];
    assert_eq!(cut["swapped"], true, "{text}");
    if case == Case::Clean {
        assert_eq!(cut["drained"], 20, "{text}");
        assert_eq!(cut["read_back"], 20, "{text}");
    }

    assert_eq!(
        db.table_rows("items"),
        model,
        "the new table under the source's name"
    );
    assert_eq!(db.table_rows("items__v1"), model, "the old table");
    assert!(!db.has_table("items_new"));
    assert_eq!(db.triggers(), 0, "the capture triggers are gone");
    let (code, text) = finish(rowshift(&ws, &["status", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("is removed (cut over)") && text.contains("capture lag: 0 changes"),
        "{text}"
    );
    let (code, text) = finish(rowshift(&ws, &["cutover", &p], &[]));
    assert_eq!(code, 2, "a second cut-over has nothing to do: {text}");
}

// Not on MariaDB: in the parallel suite, its cut-over's drain of the changes logged just
// before the lock waited out its 30 s bound and stopped with nothing swapped
// (docs/online.md, limits); alone these cases pass there too.
#[test]
fn sqlite_cutover_reads_back_the_drained_keys() {
    cutover_case(Kind::Lite, Case::Clean);
}

#[test]
fn postgres_cutover_reads_back_the_drained_keys() {
    cutover_case(Kind::Pg, Case::Clean);
}

#[test]
fn sqlite_cutover_stops_on_a_drained_row_that_reads_back_different() {
    cutover_case(Kind::Lite, Case::Mismatch);
}

#[test]
fn postgres_cutover_stops_on_a_drained_row_that_reads_back_different() {
    cutover_case(Kind::Pg, Case::Mismatch);
}

#[test]
fn sqlite_cutover_killed_before_its_commit_then_run_again() {
    cutover_case(Kind::Lite, Case::Crash);
}

#[test]
fn postgres_cutover_killed_before_its_commit_then_run_again() {
    cutover_case(Kind::Pg, Case::Crash);
}

/// A replayed batch of the catch-up is read back once it commits; a row that reads back
/// different (a trigger on the target changes it) stops the catch-up and sets its
/// position back, so that no later catch-up or cut-over passes over it. Once the target
/// no longer changes it, the batch is replayed again and the row is right.
fn catch_up_reads_back(kind: Kind) {
    let ws = Workspace::new();
    let db = Db::new(kind, &ws);
    db.seed();
    let p = db.pipeline(&ws);
    let (code, text) = finish(rowshift(&ws, &["run", &p], &[]));
    assert_eq!(code, 0, "{text}");
    let items = db.table("items");
    db.tamper(true);
    db.exec(&format!("UPDATE {items} SET qty = 4242 WHERE id = 105"));
    let (code, text) = finish(rowshift(&ws, &["catchup", &p], &[]));
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("a replayed batch (keys 105)")
            && text.contains("the catch-up stopped, and its position is set back before the batch"),
        "{text}"
    );
    let (code, text) = finish(rowshift(&ws, &["status", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("replayed 0 changes, up to none yet"),
        "{text}"
    );
    // The cut-over catches up first, and stops on the same batch: nothing swapped.
    let (code, text) = finish(rowshift(&ws, &["cutover", &p], &[]));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("a replayed batch (keys 105)"), "{text}");
    assert!(db.has_table("items_new"), "nothing was swapped");
    db.tamper(false);
    let (code, text) = finish(rowshift(&ws, &["cutover", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        db.rows(&format!(
            "SELECT {} FROM {items} WHERE id = 105",
            db.text("qty")
        )),
        vec![vec!["4242".to_string()]]
    );
}

#[test]
fn sqlite_catch_up_reads_back_each_replayed_batch() {
    catch_up_reads_back(Kind::Lite);
}

#[test]
fn postgres_catch_up_reads_back_each_replayed_batch() {
    catch_up_reads_back(Kind::Pg);
}

/// A run killed before it installed its capture leaves no change log: `status` says the
/// capture is not installed yet (it used to fail on the missing log table), and the next
/// run installs it and moves every row.
fn killed_before_the_capture(kind: Kind) {
    let ws = Workspace::new();
    let db = Db::new(kind, &ws);
    let model = db.seed();
    let p = db.pipeline(&ws);
    let (code, text) = finish(rowshift(
        &ws,
        &["run", &p],
        &[("ROWSHIFT_FAULT", "crash=before-capture")],
    ));
    assert_ne!(code, 0, "the run was killed: {text}");
    assert_eq!(db.triggers(), 0, "no capture was installed");
    let (code, text) = finish(rowshift(&ws, &["status", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(
            "is not installed yet (a run installs it before its copy); replayed 0 changes, up to none yet\ncapture lag: 0 changes, the oldest 0.0s old"
        ),
        "{text}"
    );
    let (code, text) = finish(rowshift(&ws, &["run", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert_eq!(db.triggers(), 3, "the next run installed the capture");
    let (code, text) = finish(rowshift(&ws, &["status", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("is installed; replayed"), "{text}");
    let new = db.table("items_new");
    let rows = db.rows(&format!("SELECT {} FROM {new}", db.text("count(*)")));
    assert_eq!(rows, vec![vec![model.len().to_string()]]);
}

#[test]
fn sqlite_status_after_a_run_killed_before_its_capture() {
    killed_before_the_capture(Kind::Lite);
}

#[test]
fn postgres_status_after_a_run_killed_before_its_capture() {
    killed_before_the_capture(Kind::Pg);
}

#[test]
fn mariadb_status_after_a_run_killed_before_its_capture() {
    killed_before_the_capture(Kind::My);
}
