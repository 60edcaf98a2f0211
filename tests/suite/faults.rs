//! Fault injection: terminated backends, a held lock and a full disk, against each
//! database where the fault applies. Each test ends by running the pipeline until it is
//! done (a bounded number of times) and checks that the target then equals what a clean
//! run writes: every source row once, nothing else, an empty quarantine, every chunk
//! done. No test is skipped: a server that cannot be reached, or a tmpfs that cannot be
//! mounted, fails it and says why.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{
    MyDb, PgSchema, Workspace, my_quote, pg_quote, pg_url, sqlite_exec, sqlite_rows,
};

/// A SQLite source `items` (id, name, qty, note) of `n` rows, `note` `width` bytes.
fn make_source(ws: &Workspace, n: i64, width: usize) -> PathBuf {
    let path = ws.path("samples/faults.db");
    sqlite_exec(
        &path,
        &format!(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER, note TEXT);
             WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {n})
             INSERT INTO items SELECT i, 'item ' || i, i % 97, substr(printf('%0{width}d', i) || hex(randomblob({width})), 1, {width}) FROM g;"
        ),
    );
    path
}

/// The source rows as text, in key order.
fn source_rows(source: &Path) -> Vec<Vec<String>> {
    sqlite_rows(source, "SELECT id, name, qty, note FROM items ORDER BY id")
}

/// A pipeline from the source to `target` (its `[target]` lines besides the columns).
fn pipeline(ws: &Workspace, name: &str, target: &str, rows: u64, parallel: usize) -> String {
    ws.write(
        &format!("pipelines/{name}.toml"),
        &format!(
            r#"name = "{name}"
[source]
url = "sqlite://../samples/faults.db"
table = "items"
key = "id"
[target]
{target}
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
name = {{ type = "text", expr = "name" }}
qty = {{ type = "integer", expr = "qty" }}
note = {{ type = "text", expr = "note" }}
[chunks]
rows = {rows}
parallel = {parallel}
"#
        ),
    )
}

/// Runs the pipeline until a run ends with exit 0, at most `tries` times; returns the
/// runs' exit codes.
fn run_until_done(ws: &Workspace, p: &str, tries: usize) -> Vec<i32> {
    let mut codes = Vec::new();
    for _ in 0..tries {
        let out = ws.rowshift(&["run", p, "--quiet"]);
        codes.push(out.code);
        if out.code == 0 {
            return codes;
        }
        eprintln!("run ended {}: {}{}", out.code, out.stdout, out.stderr);
    }
    panic!("the pipeline did not finish in {tries} runs: {codes:?}");
}

/// `status --json` says every chunk is done and nothing is quarantined.
fn assert_all_done(ws: &Workspace, p: &str) {
    let out = ws.rowshift(&["status", p, "--json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let total = v["chunks_total"].as_u64().unwrap();
    assert_eq!(v["chunks"]["done"].as_u64(), Some(total), "{}", out.stdout);
    assert_eq!(v["rows"]["rejected"].as_u64(), Some(0), "{}", out.stdout);
    let verify = ws.rowshift(&["verify", p]);
    assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
}

/// Runs `p` until it finishes (at most `tries` runs), then checks that the target holds
/// exactly the source's rows (`stored` reads them), every chunk is done and `verify` agrees.
fn ends_as_a_clean_run(
    ws: &Workspace,
    p: &str,
    tries: usize,
    source: &Path,
    stored: impl FnOnce() -> Vec<Vec<String>>,
) {
    run_until_done(ws, p, tries);
    assert_eq!(stored(), source_rows(source));
    assert_all_done(ws, p);
}

/// The `items` rows of a PostgreSQL target, as text in key order.
fn pg_items(pg: &PgSchema) -> Vec<Vec<String>> {
    pg.rows(&format!(
        "SELECT i.id::text, name, qty::text, note FROM {}.items i ORDER BY i.id",
        pg_quote(&pg.name)
    ))
}

/// The `items` rows of a MariaDB target, as text in key order.
fn my_items(my: &MyDb) -> Vec<Vec<String>> {
    my.rows(&format!(
        "SELECT CAST(id AS CHAR), name, CAST(qty AS CHAR), note FROM {}.items ORDER BY id",
        my_quote(&my.name)
    ))
}

/// Runs `kill` every `every` while the run of `p` goes on; returns how many times it
/// killed something and the run's output.
fn run_while(
    ws: &Workspace,
    p: &str,
    every: Duration,
    mut kill: impl FnMut() -> usize,
) -> (usize, crate::common::Output) {
    let bin = env!("CARGO_BIN_EXE_rowshift");
    let mut child = Command::new(bin)
        .args(["run", p, "--quiet"])
        .current_dir(ws.path("."))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut killed = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        std::thread::sleep(every);
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the run hangs");
        // A few faults, then the run may finish: what is checked is the end state.
        if killed < 3 {
            killed += kill();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        killed,
        crate::common::Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
    )
}

#[test]
fn backends_terminated_mid_run_on_postgres_end_as_a_clean_run() {
    let ws = Workspace::new();
    let source = make_source(&ws, 40_000, 40);
    let pg = PgSchema::new("rs_fault_term");
    let p = pipeline(
        &ws,
        "term_pg",
        &format!(
            "url = \"{}\"\nschema = \"{}\"\ntable = \"items\"\nif_exists = \"replace\"",
            pg_url(),
            pg.name
        ),
        2_000,
        2,
    );
    let (killed, out) = run_while(&ws, &p, Duration::from_millis(150), || {
        // Only this test's run: its statements name its schema (other tests run
        // rowshift on the same server at the same time).
        let n = pg.rows(&format!(
            "SELECT count(pg_terminate_backend(pid))::text FROM pg_stat_activity \
             WHERE application_name = 'rowshift' AND pid <> pg_backend_pid() \
             AND strpos(query, '{}') > 0",
            pg.name
        ));
        n[0][0].parse().unwrap()
    });
    eprintln!("terminated {killed} backends; the run ended {}", out.code);
    assert!(
        killed > 0,
        "no backend was terminated: {}{}",
        out.stdout,
        out.stderr
    );
    assert!(
        !out.stderr.contains("at line"),
        "a server source line in: {}",
        out.stderr
    );
    ends_as_a_clean_run(&ws, &p, 5, &source, || pg_items(&pg));
}

#[test]
fn connections_killed_mid_run_on_mariadb_end_as_a_clean_run() {
    let ws = Workspace::new();
    let source = make_source(&ws, 40_000, 40);
    let my = MyDb::new("rs_fault_kill");
    let p = pipeline(
        &ws,
        "kill_my",
        &format!(
            "url = \"{}\"\ntable = \"items\"\nif_exists = \"replace\"",
            my.url()
        ),
        2_000,
        2,
    );
    let (killed, out) = run_while(&ws, &p, Duration::from_millis(150), || {
        let ids = my.rows(&format!(
            "SELECT CAST(id AS CHAR) FROM information_schema.processlist WHERE db = '{}' AND id <> CONNECTION_ID()",
            my.name
        ));
        let mut n = 0;
        for id in ids {
            let killed = my.rt.block_on(
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("KILL {}", id[0]))).execute(&my.pool),
            );
            n += usize::from(killed.is_ok());
        }
        n
    });
    eprintln!("killed {killed} connections; the run ended {}", out.code);
    assert!(
        killed > 0,
        "no connection was killed: {}{}",
        out.stdout,
        out.stderr
    );
    ends_as_a_clean_run(&ws, &p, 5, &source, || my_items(&my));
}

/// Holds a lock on `table` from another connection for `hold` while `p` runs with a
/// short lock timeout: the run waits or fails the chunks that meet the lock, never
/// writes a chunk twice, and a rerun ends as a clean run.
#[test]
fn a_lock_held_past_lock_timeout_on_postgres_ends_as_a_clean_run() {
    let ws = Workspace::new();
    let source = make_source(&ws, 10_000, 20);
    let pg = PgSchema::new("rs_fault_lock");
    pg.exec(&format!(
        "CREATE TABLE {}.items (id bigint PRIMARY KEY, name text, qty integer, note text)",
        pg_quote(&pg.name)
    ));
    let p = pipeline(
        &ws,
        "lock_pg",
        &format!(
            "url = \"{}\"\nschema = \"{}\"\ntable = \"items\"\nif_exists = \"append\"\nlock_timeout_ms = 300",
            pg_url(),
            pg.name
        ),
        1_000,
        2,
    );
    let hold = {
        let q = pg_quote(&pg.name);
        let url = pg_url();
        std::thread::spawn(move || {
            crate::common::block_on(async move {
                use sqlx::Connection;
                let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                let mut tx = c.begin().await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "LOCK TABLE {q}.items IN ACCESS EXCLUSIVE MODE"
                )))
                .execute(&mut *tx)
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_secs(3)).await;
                tx.rollback().await.unwrap();
            })
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let first = ws.rowshift(&["run", &p, "--quiet"]);
    hold.join().unwrap();
    eprintln!(
        "with the lock held the run ended {} after {:?}: {}",
        first.code,
        t0.elapsed(),
        first.stderr
    );
    if first.code != 0 {
        // The server's reason once, without its source line.
        assert!(!first.stderr.contains(" at line "), "{}", first.stderr);
        assert_eq!(
            first
                .stderr
                .matches("canceling statement due to lock timeout")
                .count(),
            1,
            "{}",
            first.stderr
        );
        assert!(
            first.stderr.contains("lock") || first.stdout.contains("lock"),
            "{}{}",
            first.stdout,
            first.stderr
        );
    }
    ends_as_a_clean_run(&ws, &p, 3, &source, || pg_items(&pg));
}

#[test]
fn a_lock_held_past_lock_timeout_on_mariadb_ends_as_a_clean_run() {
    let ws = Workspace::new();
    let source = make_source(&ws, 10_000, 20);
    let my = MyDb::new("rs_fault_lock");
    my.exec(&format!(
        "CREATE TABLE {}.items (id BIGINT PRIMARY KEY, name LONGTEXT, qty INT, note LONGTEXT) DEFAULT CHARSET utf8mb4 COLLATE utf8mb4_bin",
        my_quote(&my.name)
    ));
    let p = pipeline(
        &ws,
        "lock_my",
        &format!(
            "url = \"{}\"\ntable = \"items\"\nif_exists = \"append\"\nlock_timeout_ms = 1000",
            my.url()
        ),
        1_000,
        2,
    );
    let hold = {
        let q = my_quote(&my.name);
        let url = my.url();
        std::thread::spawn(move || {
            crate::common::block_on(async move {
                use sqlx::Connection;
                let mut c = sqlx::MySqlConnection::connect(&url).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("LOCK TABLES {q}.items WRITE")))
                    .execute(&mut c)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_secs(4)).await;
                sqlx::raw_sql("UNLOCK TABLES")
                    .execute(&mut c)
                    .await
                    .unwrap();
            })
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let first = ws.rowshift(&["run", &p, "--quiet"]);
    hold.join().unwrap();
    eprintln!(
        "with the lock held the run ended {}: {}",
        first.code, first.stderr
    );
    ends_as_a_clean_run(&ws, &p, 3, &source, || my_items(&my));
}

/// A tmpfs of `size` mounted on `dir`, unmounted when dropped. Mounting needs root (or
/// CAP_SYS_ADMIN); where it is refused the test fails and says so, never skips.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount ({e}); this test needs a small tmpfs"));
        assert!(
            out.status.success(),
            "cannot mount a {size} tmpfs on {} (CI={}): {}; this test needs root or CAP_SYS_ADMIN to fill a real disk",
            dir.display(),
            std::env::var("CI").unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// Grows (or shrinks) the file system, keeping its files: freeing space.
    pub fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).output();
    }
}

/// The reproducer of issue 30 item 17: SQLite -> SQLite, chunks of 10k, parallel 2, into
/// a 5 MB tmpfs. The run stops within seconds saying the disk is full (not "database is
/// locked"), the target holds only whole done chunks, and once space is freed the run
/// resumes and ends as a clean run.
#[test]
fn a_full_disk_under_a_sqlite_target_stops_the_run_and_it_resumes_once_space_is_freed() {
    let ws = Workspace::new();
    let source = make_source(&ws, 200_000, 30);
    let disk = Tmpfs::mount(&ws.path("disk"), "5m");
    let p = pipeline(
        &ws,
        "full_sqlite",
        "url = \"sqlite://../disk/t.db\"\ntable = \"items\"\nif_exists = \"replace\"",
        10_000,
        2,
    );
    let t0 = Instant::now();
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    let took = t0.elapsed();
    eprintln!(
        "full disk: exit {} after {took:?}\n{}{}",
        out.code, out.stdout, out.stderr
    );
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(took < Duration::from_secs(60), "the run took {took:?}");
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("database or disk is full"), "{all}");
    assert!(all.contains("the disk is full"), "{all}");
    assert!(!all.contains("database is locked"), "{all}");
    // Only whole chunks are visible: every chunk's key range holds all of its rows or
    // none (a chunk written and read back but not yet marked done is deleted and redone
    // by the next run, which the message says), each row as the source has it.
    let t = ws.path("disk/t.db");
    let per_chunk = sqlite_rows(
        &t,
        "SELECT (id - 1) / 10000, count(*), count(DISTINCT id) FROM items GROUP BY 1",
    );
    for c in &per_chunk {
        assert_eq!(
            (c[1].as_str(), c[2].as_str()),
            ("10000", "10000"),
            "{per_chunk:?}"
        );
    }
    let done = sqlite_rows(
        &t,
        "SELECT count(*) FROM _rowshift_chunks WHERE state = 'done'",
    );
    assert!(
        done[0][0].parse::<usize>().unwrap() <= per_chunk.len(),
        "{done:?} {per_chunk:?}"
    );
    let want = source_rows(&source);
    let got = sqlite_rows(&t, "SELECT id, name, qty, note FROM items ORDER BY id");
    let by_id: std::collections::BTreeMap<&str, &Vec<String>> =
        want.iter().map(|r| (r[0].as_str(), r)).collect();
    assert!(got.iter().all(|r| by_id.get(r[0].as_str()) == Some(&r)));
    disk.resize("200m");
    run_until_done(&ws, &p, 2);
    assert_eq!(
        sqlite_rows(&t, "SELECT id, name, qty, note FROM items ORDER BY id"),
        want
    );
    assert_all_done(&ws, &p);
}

/// A full disk under a Parquet target: the run stops saying so, and no temporary part
/// file is left holding the space; freed, the run resumes and writes every row once.
#[test]
fn a_full_disk_under_a_parquet_target_leaves_no_temporary_file() {
    let ws = Workspace::new();
    let source = make_source(&ws, 100_000, 200);
    let disk = Tmpfs::mount(&ws.path("disk"), "2m");
    let p = pipeline(
        &ws,
        "full_parquet",
        "url = \"../disk/out\"\nformat = \"parquet\"\nif_exists = \"replace\"",
        10_000,
        2,
    );
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    eprintln!("full disk: exit {}\n{}{}", out.code, out.stdout, out.stderr);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("No space left on device (os error 28) (the disk is full: free space, then run again; the run resumes where it stopped)"),
        "{all}"
    );
    let left: Vec<String> = std::fs::read_dir(ws.path("disk/out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "temporary files stay behind");
    disk.resize("200m");
    run_until_done(&ws, &p, 2);
    let rows = crate::common::parquet_rows(&ws.path("disk/out"));
    assert_eq!(rows.len(), source_rows(&source).len());
}

// Hostile pipeline files: what `validate` must catch before anything is created.

/// A SQLite source `users` (id, email) for the validation tests.
fn users_db(ws: &Workspace) {
    sqlite_exec(
        &ws.path("samples/users.db"),
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT);
         INSERT INTO users VALUES (1, 'a@x'), (2, 'b@x');",
    );
}

fn two_emails(target: &str) -> String {
    format!(
        "name = \"dup\"\n[source]\nurl = \"sqlite://../samples/users.db\"\ntable = \"users\"\nkey = \"id\"\n[target]\n{target}\ntable = \"users\"\n[target.columns]\nid = {{ type = \"bigint\", expr = \"id\", primary_key = true }}\nemail = {{ type = \"text\", expr = \"email\" }}\nEMAIL = {{ type = \"text\", expr = \"upper(email)\" }}\n"
    )
}

#[test]
fn columns_one_name_apart_by_case_fail_validate_for_sqlite_and_mariadb_and_create_nothing() {
    let ws = Workspace::new();
    users_db(&ws);
    let p = ws.write(
        "pipelines/dup.toml",
        &two_emails("url = \"sqlite://../out/dup.db\""),
    );
    for cmd in ["validate", "run"] {
        let out = ws.rowshift(&[cmd, &p]);
        assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
        assert_eq!(
            out.stderr.trim(),
            "error: pipelines/dup.toml has 1 error\npipelines/dup.toml:12:1: column `EMAIL` and column `email` (line 11) are one column to SQLite, which compares column names without case\n    EMAIL = { type = \"text\", expr = \"upper(email)\" }\n    ^\n    help: rename one of them"
        );
    }
    assert!(!ws.path("out/dup.db").exists(), "run created the target");

    let my = MyDb::new("rs_dup_case");
    let fresh = format!("{}_new", my.name);
    let url = my.url().replace(&my.name, &fresh);
    let p = ws.write(
        "pipelines/dup.toml",
        &two_emails(&format!("url = \"{url}\"")),
    );
    let out = ws.rowshift(&["run", &p]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("pipelines/dup.toml:12:1: column `EMAIL` and column `email` (line 11) are one column to MySQL and MariaDB"),
        "{}",
        out.stderr
    );
    let left = my.rows(&format!(
        "SELECT CAST(count(*) AS CHAR) FROM information_schema.schemata WHERE schema_name = '{fresh}'"
    ));
    assert_eq!(left[0][0], "0", "run created the database");

    // PostgreSQL keeps quoted names apart: the same columns are fine there.
    let pg = PgSchema::new("rs_dup_case");
    let p = ws.write(
        "pipelines/dup.toml",
        &two_emails(&format!("url = \"{}\"\nschema = \"{}\"", pg_url(), pg.name)),
    );
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        pg.rows(&format!(
            "SELECT email, \"EMAIL\" FROM {}.users ORDER BY id",
            pg_quote(&pg.name)
        )),
        [["a@x", "A@X"], ["b@x", "B@X"]]
    );
}

#[test]
fn a_file_that_is_not_utf8_is_reported_once_at_its_line_and_column() {
    let ws = Workspace::new();
    users_db(&ws);
    let mut bytes = b"name = \"latin\"\n[source]\nurl = \"sqlite://../samples/caf".to_vec();
    bytes.push(0xE9);
    bytes.extend_from_slice(b".db\"\n");
    std::fs::write(ws.path("pipelines/latin.toml"), bytes).unwrap();
    let out = ws.rowshift(&["validate", "pipelines/latin.toml"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        out.stderr.trim(),
        "error: pipelines/latin.toml has 1 error\npipelines/latin.toml:3:31: the file is not UTF-8: byte 0xE9 cannot start or continue a character\n    url = \"sqlite://../samples/caf\u{FFFD}.db\"\n                                  ^\n    help: save the file as UTF-8 (Latin-1 and Windows-1252 text must be converted)"
    );
}

#[test]
fn a_table_of_the_wrong_type_is_reported_as_such_not_as_missing() {
    let ws = Workspace::new();
    users_db(&ws);
    let p = ws.write(
        "pipelines/arr.toml",
        "name = \"arr\"\n[source]\nurl = \"sqlite://../samples/users.db\"\ntable = [\"users\"]\nkey = \"id\"\n[target]\nurl = \"sqlite://../out/a.db\"\ntable = [\"t\"]\n[target.columns]\nid = { type = \"bigint\", expr = \"id\" }\n",
    );
    let out = ws.rowshift(&["validate", &p]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(!out.stderr.contains("missing"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("pipelines/arr.toml:4:9: `source.table` must be a string, not array")
            && out
                .stderr
                .contains("pipelines/arr.toml:8:9: `target.table` must be a string, not array"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_file_with_a_byte_order_mark_and_crlf_line_ends_runs_and_points_at_the_right_column() {
    let ws = Workspace::new();
    users_db(&ws);
    let text = "name = \"bom\"\n[source]\nurl = \"sqlite://../samples/users.db\"\ntable = \"users\"\nkey = \"id\"\n[target]\nurl = \"sqlite://../out/bom.db\"\ntable = \"users\"\n[target.columns]\nid = { type = \"bigint\", expr = \"id\", primary_key = true }\nemail = { type = \"text\", expr = \"email\" }\n";
    let crlf = format!("\u{FEFF}{}", text.replace('\n', "\r\n"));
    std::fs::write(ws.path("pipelines/bom.toml"), &crlf).unwrap();
    let out = ws.rowshift(&["run", "pipelines/bom.toml", "--quiet"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        sqlite_rows(
            &ws.path("out/bom.db"),
            "SELECT id, email FROM users ORDER BY id"
        ),
        [["1", "a@x"], ["2", "b@x"]]
    );
    // An error on the first line is at column 1, not after the mark.
    let bad = format!(
        "\u{FEFF}{}",
        text.replace("name = ", "nme = ").replace('\n', "\r\n")
    );
    std::fs::write(ws.path("pipelines/bom.toml"), &bad).unwrap();
    let out = ws.rowshift(&["validate", "pipelines/bom.toml"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("pipelines/bom.toml:1:1: unknown key `nme`"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_key_column_whose_name_holds_a_quote_is_recognised_as_the_key() {
    let ws = Workspace::new();
    sqlite_exec(
        &ws.path("samples/q.db"),
        "CREATE TABLE t (\"we\"\"ird\" INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < 30)
         INSERT INTO t SELECT i, 'v' || i FROM g;",
    );
    let pg = PgSchema::new("rs_quote_key");
    let p = ws.write(
        "pipelines/q.toml",
        &format!(
            "name = \"q\"\n[source]\nurl = \"sqlite://../samples/q.db\"\ntable = \"t\"\nkey = 'we\"ird'\n[target]\nurl = \"{}\"\nschema = \"{}\"\ntable = \"t\"\nif_exists = \"append\"\nwrite_mode = \"replace-chunk\"\n[target.columns]\n'we\"ird' = {{ type = \"bigint\", expr = '\"we\"\"ird\"', primary_key = true }}\nv = {{ type = \"text\", expr = \"v\" }}\n[chunks]\nrows = 10\n",
            pg_url(),
            pg.name
        ),
    );
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let out = ws.rowshift(&["verify", &p]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        pg.rows(&format!(
            "SELECT count(*)::text FROM {}.t",
            pg_quote(&pg.name)
        )),
        [["30"]]
    );
}

/// The reproducer of issue 33 item 2: an `append` of a 50,000-row chunk into a table that
/// already holds every key. Before, the search for refused rows sent one COPY per row,
/// each resending the rest, for many minutes; now it stops past its bound and the chunk
/// fails naming the first refused rows and the server's reason, leaving no backend in a
/// transaction.
#[test]
fn a_50k_row_chunk_whose_every_row_is_refused_fails_fast_naming_the_rows() {
    let ws = Workspace::new();
    make_source(&ws, 50_000, 10);
    let pg = PgSchema::new("rs_refuse_all");
    pg.exec(&format!(
        "CREATE TABLE {s}.items (id bigint PRIMARY KEY, name text, qty integer, note text);
         INSERT INTO {s}.items SELECT g, 'old', 0, '' FROM generate_series(1, 50000) g",
        s = pg_quote(&pg.name)
    ));
    let p = pipeline(
        &ws,
        "refuse_all",
        &format!(
            "url = \"{}\"\nschema = \"{}\"\ntable = \"items\"\nif_exists = \"append\"",
            pg_url(),
            pg.name
        ),
        50_000,
        1,
    );
    let t0 = Instant::now();
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    let took = t0.elapsed();
    eprintln!("50k refused: exit {} after {took:?}", out.code);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("the target refused 101 of the first 101 of the chunk's 50000 rows, so it refuses the chunk rather than some rows (rows are found one by one only while fewer than 1 in 10 of them, or 100, are refused, and not every row tried); nothing of the chunk was written. The first refused, counted among the rows sent: row 1 (id='1'): duplicate key value violates unique constraint \"items_pkey\" (Key (id)=(1) already exists.); row 2 (id='2'): duplicate key value violates unique constraint \"items_pkey\" (Key (id)=(2) already exists.); row 3 (id='3')"),
        "{all}"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert_eq!(
        pg.rows(&format!(
            "SELECT count(*)::text, count(*) FILTER (WHERE name = 'old')::text FROM {}.items",
            pg_quote(&pg.name)
        )),
        [["50000", "50000"]]
    );
    assert_eq!(
        pg.rows(
            "SELECT count(*)::text FROM pg_stat_activity WHERE application_name = 'rowshift' AND state LIKE 'idle in transaction%'"
        ),
        [["0"]]
    );
}
