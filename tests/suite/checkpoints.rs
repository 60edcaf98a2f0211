//! Checkpoints: resume after SIGKILL and Ctrl-C, failed chunks and retry, transient
//! faults, a changed pipeline, and re-processing the quarantine.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{Workspace, parquet_rows, sqlite_exec, sqlite_rows};

const ROWS: usize = 200_000;

/// Writes a 200,000-row CSV and loads it into `samples/big.db` table `people` with rowshift.
fn big_source(ws: &Workspace) {
    let mut csv = String::with_capacity(ROWS * 80);
    csv.push_str("id,name,email,created_at,score\n");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for id in 1..=ROWS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let first = ["Ana", "Bo", "Zoë", "Li", "Sam"][(x % 5) as usize];
        let last = ["Smith", "Øvergård", "Nguyen", "Okafor"][(x / 5 % 4) as usize];
        csv.push_str(&format!(
            "{id},{first} {last},{first}.{last}{}@Example.com,20{:02}-{:02}-{:02} 10:00:00,{}.{:02}\n",
            x % 1000,
            10 + x % 14,
            1 + x / 7 % 12,
            1 + x / 11 % 28,
            x % 500,
            x / 3 % 100
        ));
    }
    ws.write("samples/big.csv", &csv);
    ws.write(
        "pipelines/load_big.toml",
        r#"name = "load_big"
[source]
url = "../samples/big.csv"
key = "id"
[target]
url = "sqlite://../samples/big.db"
table = "people"
[target.columns]
id = { type = "bigint", expr = "id", primary_key = true }
name = { type = "text", expr = "name" }
email = { type = "text", expr = "email" }
created_at = { type = "text", expr = "created_at" }
score = { type = "double", expr = "score" }
"#,
    );
    let out = ws.rowshift(&["run", "pipelines/load_big.toml", "--quiet"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
}

fn move_pipeline(ws: &Workspace, name: &str, target: &str) -> String {
    ws.write(
        &format!("pipelines/{name}.toml"),
        &format!(
            r#"name = "{name}"
[source]
url = "sqlite://../samples/big.db"
table = "people"
key = "id"
[target]
{target}
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
email = {{ type = "text", expr = "lower(email)", nullable = false }}
first_name = {{ type = "text", expr = "split_part(name, ' ', 1)" }}
last_name = {{ type = "text", expr = "split_part(name, ' ', 2)" }}
signup_on = {{ type = "date", expr = "CAST(created_at AS DATE)" }}
score = {{ type = "numeric(8,2)", expr = "score" }}
[filter]
where = "id % 10 <> 3"
[chunks]
rows = 5000
parallel = 2
"#
        ),
    )
}

fn spawn(ws: &Workspace, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_rowshift"))
        .args(args)
        .current_dir(ws.path("."))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Kills `rowshift run` with SIGKILL at pseudo-random moments 20 times, resuming each
/// time, then lets it finish. `full` is how long an uninterrupted run takes and `startup`
/// how long one with nothing to do takes, so the kills land while chunks are in flight.
///
/// The delays follow how far each killed run got: under the load of the other tests the
/// machine is faster or slower than when the reference runs were timed, and a delay
/// that lets every run commit many chunks would finish the work within a few kills.
fn crash_and_resume(ws: &Workspace, pipeline: &str, full: Duration, startup: Duration) {
    let mut x: u64 = 42;
    let mut done_before = 0;
    let mut mid_work = 0;
    let mut scale = 1.0f64;
    let mut progress = Vec::new();
    // Kills of a run that committed chunks and left work: the ones that test a resume
    // with chunks both done and in flight.
    let mut mid_progress = 0;
    for _ in 0..20 {
        let mut child = spawn(ws, &["run", pipeline, "--quiet"]);
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // A kill lands from half the start-up time (planning, opening the target) to
        // 1/40 of the reference run past it, so 20 kills leave work to do even when a
        // resumed run starts faster than the no-op reference run, or the machine got
        // faster since it was timed: the kills must hit work in flight, not a finished
        // run.
        let window = (full.as_millis() as u64 / 40).max(1);
        let delay = startup.mul_f64(0.5) + Duration::from_millis((x >> 33) % window);
        std::thread::sleep(delay.mul_f64(scale));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let status = ws.rowshift(&["status", pipeline, "--json"]);
        let done = serde_json::from_str::<serde_json::Value>(&status.stdout).unwrap_or_else(|e| {
            panic!(
                "status after a kill is not JSON ({e}), exit {}: {}{}",
                status.code, status.stdout, status.stderr
            )
        })["chunks"]["done"]
            .as_u64()
            .unwrap_or(0);
        assert!(
            done >= done_before,
            "a committed chunk was lost: {done} < {done_before}"
        );
        if done < 40 {
            mid_work += 1;
        }
        // Aim at one to three chunks a run: more, and the next delay is shorter; none
        // (killed while starting), and it is longer.
        progress.push(done - done_before);
        if done > done_before && done < 40 {
            mid_progress += 1;
        }
        match done - done_before {
            0 => scale = (scale * 1.3).min(8.0),
            1..=3 => {}
            _ => scale = (scale * 0.6).max(0.05),
        }
        done_before = done;
    }
    assert!(
        mid_work >= 10,
        "only {mid_work} of 20 kills hit a run with work left (chunks done by each killed run: {progress:?})"
    );
    assert!(
        mid_progress >= 5,
        "only {mid_progress} of 20 killed runs committed a chunk and left work (chunks done by each: {progress:?})"
    );
    let out = ws.rowshift(&["run", pipeline, "--json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let summary: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(summary["chunks_total"], 40);
    assert_eq!(summary["chunks_failed"], 0);
    assert_eq!(summary["chunks_skipped"].as_u64().unwrap(), done_before);
}

/// Runs `pipeline` to the end and again (nothing left), returning both wall times.
fn timed_reference(ws: &Workspace, pipeline: &str) -> (Duration, Duration) {
    let t0 = std::time::Instant::now();
    assert_eq!(ws.rowshift(&["run", pipeline, "--quiet"]).code, 0);
    let full = t0.elapsed();
    let t1 = std::time::Instant::now();
    assert_eq!(ws.rowshift(&["run", pipeline, "--quiet"]).code, 0);
    (full, t1.elapsed())
}

#[test]
fn sigkill_at_random_moments_then_resume_writes_exactly_the_uninterrupted_result() {
    let ws = Workspace::new();
    big_source(&ws);

    // SQLite target: rows and the done mark commit in one transaction.
    let reference = move_pipeline(
        &ws,
        "reference",
        "url = \"sqlite://../out/reference.db\"\ntable = \"people_v2\"",
    );
    let (full, startup) = timed_reference(&ws, &reference);
    let crashed = move_pipeline(
        &ws,
        "crashed",
        "url = \"sqlite://../out/crashed.db\"\ntable = \"people_v2\"",
    );
    crash_and_resume(&ws, &crashed, full, startup);
    let expected = sqlite_rows(
        &ws.path("out/reference.db"),
        "SELECT * FROM people_v2 ORDER BY id",
    );
    assert_eq!(expected.len(), ROWS - ROWS / 10);
    let got = sqlite_rows(
        &ws.path("out/crashed.db"),
        "SELECT * FROM people_v2 ORDER BY id",
    );
    assert_eq!(got.len(), expected.len(), "no row lost or written twice");
    assert!(
        got == expected,
        "the resumed target differs from the uninterrupted one"
    );

    // Parquet target: part files renamed into place, the mark in the state directory.
    let reference = move_pipeline(
        &ws,
        "reference_files",
        "url = \"../out/reference_parquet\"\nformat = \"parquet\"",
    );
    let (full, startup) = timed_reference(&ws, &reference);
    let crashed = move_pipeline(
        &ws,
        "crashed_files",
        "url = \"../out/crashed_parquet\"\nformat = \"parquet\"",
    );
    crash_and_resume(&ws, &crashed, full, startup);
    let expected = parquet_rows(&ws.path("out/reference_parquet"));
    let got = parquet_rows(&ws.path("out/crashed_parquet")); // panics on a duplicate key
    assert_eq!(got.len(), expected.len());
    assert!(
        got == expected,
        "the resumed part files differ from the uninterrupted ones"
    );
    // A deleted part file is never silently skipped on resume.
    std::fs::remove_file(ws.path("out/crashed_parquet/part-00007.parquet")).unwrap();
    let out = ws.rowshift(&["run", &crashed, "--quiet"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("the checkpoint says 1 chunks are done but their part files are missing (part-00007.parquet); run with --restart"), "{}", out.stderr);
    assert_eq!(
        ws.rowshift(&["run", &crashed, "--quiet", "--restart"]).code,
        0
    );
    assert!(parquet_rows(&ws.path("out/crashed_parquet")) == expected);
    let leftovers: Vec<_> = std::fs::read_dir(ws.path("out/crashed_parquet"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn ctrl_c_finishes_chunks_in_flight_and_the_run_resumes() {
    let ws = Workspace::new();
    big_source(&ws);
    let pipeline = move_pipeline(
        &ws,
        "interrupted",
        "url = \"sqlite://../out/interrupted.db\"\ntable = \"people_v2\"",
    );
    let child = Command::new(env!("CARGO_BIN_EXE_rowshift"))
        .args(["run", &pipeline, "--json"])
        .current_dir(ws.path("."))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the run has committed its first chunk, so it is surely under way.
    for _ in 0..400 {
        let status = ws.rowshift(&["status", &pipeline, "--json"]);
        let done = serde_json::from_str::<serde_json::Value>(&status.stdout)
            .ok()
            .and_then(|v| v["chunks"]["done"].as_u64());
        if done.unwrap_or(0) >= 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    assert_eq!(summary["interrupted"], true, "{stderr}");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("stopping: chunks in flight will finish"),
        "{stderr}"
    );
    assert!(summary["chunks_pending"].as_u64().unwrap() > 0);
    let status = ws.rowshift(&["status", &pipeline, "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(
        status["chunks"]["running"], 0,
        "Ctrl-C lets chunks in flight commit"
    );
    let done_before = status["chunks"]["done"].as_u64().unwrap();

    let out = ws.rowshift(&["run", &pipeline, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let summary: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(summary["chunks_skipped"].as_u64().unwrap(), done_before);
    assert_eq!(summary["chunks_done"].as_u64().unwrap() + done_before, 40);
    let n = sqlite_rows(
        &ws.path("out/interrupted.db"),
        "SELECT count(*), count(DISTINCT id) FROM people_v2",
    );
    assert_eq!(
        n[0],
        vec![
            (ROWS - ROWS / 10).to_string(),
            (ROWS - ROWS / 10).to_string()
        ]
    );
}

#[test]
fn a_chunk_that_fails_permanently_is_shown_by_status_and_finished_by_retry() {
    let ws = Workspace::new();
    let out = ws.rowshift_env(
        &["run", "pipelines/quickstart.toml", "--quiet"],
        &[("ROWSHIFT_FAULT", "chunk=2")],
    );
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("chunks  4 done, 1 failed, 0 pending"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("failed  chunk 2 (401 < key <= 606): injected fault in the sink for chunk 2 (ROWSHIFT_FAULT)"), "{}", out.stdout);

    let status = ws.rowshift(&["status", "pipelines/quickstart.toml"]);
    assert_eq!(status.code, 0);
    assert!(
        status
            .stdout
            .contains("chunks   4 of 5 done (80.0%): 4 done, 1 failed, 0 pending, 0 running"),
        "{}",
        status.stdout
    );
    assert!(status.stdout.contains("failed   chunk 2 (401 < key <= 606) after 1 attempts: injected fault in the sink for chunk 2"), "{}", status.stdout);

    // The fault is fixed (the variable is gone); retry runs only the failed chunk.
    let retry = ws.rowshift(&["retry", "pipelines/quickstart.toml", "--json"]);
    assert_eq!(retry.code, 0, "{}{}", retry.stdout, retry.stderr);
    let summary: serde_json::Value = serde_json::from_str(&retry.stdout).unwrap();
    assert_eq!(summary["chunks_done"], 1);
    assert_eq!(summary["chunks_skipped"], 4);
    let rows = sqlite_rows(
        &ws.path("out/shop_v2.db"),
        "SELECT count(*), count(DISTINCT id) FROM users_v2",
    );
    assert_eq!(rows[0], ["903", "903"]);
    let again = ws.rowshift(&["retry", "pipelines/quickstart.toml", "--chunk", "2"]);
    assert_eq!(again.code, 2);
    assert!(
        again
            .stderr
            .contains("chunk 2 is done; only pending, running or failed chunks can be retried"),
        "{}",
        again.stderr
    );
}

#[test]
fn transient_errors_are_retried_with_backoff() {
    let ws = Workspace::new();
    let out = ws.rowshift_env(
        &["run", "pipelines/quickstart.toml", "--quiet"],
        &[("ROWSHIFT_FAULT", "chunk=1,transient=2")],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let attempts = sqlite_rows(
        &ws.path("out/shop_v2.db"),
        "SELECT id, attempts, state FROM _rowshift_chunks ORDER BY id",
    );
    assert_eq!(attempts[1], ["1", "3", "done"]);
    assert_eq!(attempts[0], ["0", "1", "done"]);
}

#[test]
fn a_changed_pipeline_is_refused_until_restart() {
    let ws = Workspace::new();
    assert_eq!(
        ws.rowshift(&["run", "pipelines/quickstart.toml", "--quiet"])
            .code,
        0
    );
    let text = std::fs::read_to_string(ws.path("pipelines/quickstart.toml")).unwrap();
    ws.write(
        "pipelines/quickstart.toml",
        &text.replace("lower(trim(email))", "upper(trim(email))"),
    );
    let out = ws.rowshift(&["run", "pipelines/quickstart.toml", "--quiet"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("the pipeline changed since its checkpoint"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("target.columns.email.expr: \"lower(trim(email))\" → \"upper(trim(email))\""),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("run with --restart to start over"),
        "{}",
        out.stderr
    );
    let out = ws.rowshift(&["run", "pipelines/quickstart.toml", "--quiet", "--restart"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = sqlite_rows(
        &ws.path("out/shop_v2.db"),
        "SELECT count(*), sum(email = upper(email)) FROM users_v2",
    );
    assert_eq!(rows[0], ["903", "903"]);
}

/// Runs the quickstart pipeline with `score` into numeric(4,1), which rejects every
/// score with a second decimal (score REAL has two). Returns the workspace, the
/// quickstart pipeline's text and the run's JSON summary.
fn run_rejecting_scores() -> (Workspace, String, serde_json::Value) {
    let ws = Workspace::new();
    let text = std::fs::read_to_string(ws.path("pipelines/quickstart.toml")).unwrap();
    ws.write(
        "pipelines/scores.toml",
        &text.replace(
            "\"numeric(6,2)\", expr = \"score\"",
            "\"numeric(4,1)\", expr = \"score\"",
        ),
    );
    let out = ws.rowshift(&["run", "pipelines/scores.toml", "--json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let summary: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        summary["rows"]["rejected"].as_u64().unwrap() > 100,
        "{summary}"
    );
    (ws, text, summary)
}

#[test]
fn retried_rows_are_read_back_and_a_target_that_changes_them_keeps_them_quarantined() {
    let (ws, text, summary) = run_rejecting_scores();
    let rejected = summary["rows"]["rejected"].as_u64().unwrap();
    // From now on the target rewrites every row inserted into it.
    sqlite_exec(
        &ws.path("out/shop_v2.db"),
        "CREATE TRIGGER shout AFTER INSERT ON users_v2
         BEGIN UPDATE users_v2 SET email = upper(email) WHERE id = NEW.id; END;",
    );
    let fixed = text.replace(
        "\"numeric(6,2)\", expr = \"score\"",
        "\"numeric(4,1)\", expr = \"round(score, 1)\"",
    );
    ws.write("pipelines/scores.toml", &fixed);
    let out = ws.rowshift(&["retry", "pipelines/scores.toml", "--rejects", "--json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let failures = report["failures"].as_array().unwrap();
    assert!(!failures.is_empty(), "{report}");
    let first = failures[0].as_str().unwrap();
    assert!(
        first.starts_with("chunk 0's retried rows: the target does not hold what was written: ")
            && first.contains("column email: sent '"),
        "{first}"
    );
    assert!(out.stderr.contains(first), "{}", out.stderr);
    assert_eq!(report["written"], 0, "{report}");
    assert_eq!(report["still_rejected"].as_u64().unwrap(), rejected);
    // Every chunk's retry rolled back whole: nothing written, nothing left the
    // quarantine.
    let counts = sqlite_rows(
        &ws.path("out/shop_v2.db"),
        "SELECT (SELECT count(*) FROM users_v2), (SELECT count(*) FROM users_v2_rejects), (SELECT count(*) FROM users_v2 WHERE email <> lower(email))",
    );
    assert_eq!(
        counts[0],
        [
            (903 - rejected).to_string(),
            rejected.to_string(),
            "0".into()
        ]
    );
}

#[test]
fn retry_rejects_writes_rows_that_now_pass_and_keeps_the_rest_with_their_new_reason() {
    let (ws, text, summary) = run_rejecting_scores();
    let rejected = summary["rows"]["rejected"].as_u64().unwrap();
    assert_eq!(summary["rows"]["written"].as_u64().unwrap() + rejected, 903);
    assert_eq!(
        summary["rejects"][0]["reason"],
        "column score: value would change to '…' in numeric(4,1)"
    );
    let q = sqlite_rows(
        &ws.path("out/shop_v2.db"),
        "SELECT count(*) FROM users_v2_rejects",
    );
    assert_eq!(q[0][0], rejected.to_string());

    // Fix the transform for most rows: scores at or above 90 still do not fit numeric(4,1)
    // once doubled.
    let fixed = text.replace("\"numeric(6,2)\", expr = \"score\"", "\"numeric(4,1)\", expr = \"CASE WHEN score >= 90 THEN score * 20 ELSE round(score, 1) END\"");
    ws.write("pipelines/scores.toml", &fixed);
    let out = ws.rowshift(&["retry", "pipelines/scores.toml", "--rejects", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let still = report["still_rejected"].as_u64().unwrap();
    assert_eq!(report["rows"].as_u64().unwrap(), rejected);
    assert_eq!(report["written"].as_u64().unwrap() + still, rejected);
    assert!(still > 0 && out.code == 1, "{report}");
    let counts = sqlite_rows(
        &ws.path("out/shop_v2.db"),
        "SELECT (SELECT count(*) FROM users_v2), (SELECT count(*) FROM users_v2_rejects), (SELECT count(DISTINCT id) FROM users_v2)",
    );
    assert_eq!(counts[0][0], (903 - still).to_string());
    assert_eq!(counts[0][1], still.to_string());
    assert_eq!(counts[0][2], counts[0][0], "no row written twice");
    let reasons = sqlite_rows(
        &ws.path("out/shop_v2.db"),
        "SELECT DISTINCT reason FROM users_v2_rejects",
    );
    assert_eq!(reasons.len(), 1);
    assert!(
        reasons[0][0].contains("does not fit in numeric(4,1)"),
        "{reasons:?}"
    );
}

/// A SQLite source of 30 rows, `v` = `id`, and a pipeline whose check rejects `v > 25`:
/// three chunks of ten rows, five rows quarantined.
fn rejecting_pipeline(ws: &Workspace) -> String {
    sqlite_exec(
        &ws.path("samples/vals.db"),
        "CREATE TABLE src (id INTEGER PRIMARY KEY, v INTEGER NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30)
         INSERT INTO src SELECT i, i FROM n;",
    );
    ws.write(
        "pipelines/vals.toml",
        r#"name = "vals"
[source]
url = "sqlite://../samples/vals.db"
table = "src"
key = "id"
[target]
url = "sqlite://../out/vals.db"
table = "vals"
[target.columns]
id = { type = "bigint", expr = "id", primary_key = true }
v = { type = "bigint", expr = "v" }
[[checks]]
column = "v"
max = 25
[chunks]
rows = 10
parallel = 2
"#,
    )
}

#[test]
fn a_rerun_reports_the_state_of_the_run_not_only_its_own_work() {
    let ws = Workspace::new();
    let p = rejecting_pipeline(&ws);
    let first = ws.rowshift(&["run", &p, "--json"]);
    assert_eq!(first.code, 1, "{}{}", first.stdout, first.stderr);
    let first: serde_json::Value = serde_json::from_str(&first.stdout).unwrap();
    assert_eq!(first["state"]["quarantined"], 5, "{first}");
    let checksum = first["checksum"].as_str().unwrap().to_string();
    assert_ne!(checksum, "0000000000000000");

    // Every chunk is done: the rerun does nothing, and still says where the run stands
    // and exits 1, with the checksum of the rows the target holds.
    let again = ws.rowshift(&["run", &p]);
    assert_eq!(again.code, 1, "{}{}", again.stdout, again.stderr);
    assert!(
        again
            .stdout
            .contains("rowshift: vals done with rejected rows -> ")
            && again.stdout.contains(
                "  state   all 3 chunks done, 25 rows written, 5 rows in the quarantine\n"
            )
            && again
                .stdout
                .contains(&format!("(checksum {checksum} over the 3 done chunks)"))
            && again
                .stdout
                .contains("fix and run `rowshift retry --rejects`"),
        "{}",
        again.stdout
    );

    // Three of the five rows are fixed in the source; `retry --rejects` writes them, and
    // `status` and the next run count them as written.
    sqlite_exec(
        &ws.path("samples/vals.db"),
        "UPDATE src SET v = 1 WHERE id > 27",
    );
    let retry = ws.rowshift(&["retry", &p, "--rejects"]);
    assert_eq!(retry.code, 1, "{}{}", retry.stdout, retry.stderr);
    assert!(retry.stdout.contains("written  3"), "{}", retry.stdout);
    let status: serde_json::Value =
        serde_json::from_str(&ws.rowshift(&["status", &p, "--json"]).stdout).unwrap();
    assert_eq!(status["rows"]["written"], 28, "{status}");
    assert_eq!(status["rows"]["rejected"], 2, "{status}");
    let again = ws.rowshift(&["run", &p]);
    assert_eq!(again.code, 1, "{}", again.stdout);
    assert!(
        again
            .stdout
            .contains("all 3 chunks done, 28 rows written, 2 rows in the quarantine"),
        "{}",
        again.stdout
    );
    assert_eq!(
        sqlite_rows(&ws.path("out/vals.db"), "SELECT count(*) FROM vals")[0],
        ["28"]
    );
    // With the other two fixed too, the quarantine is empty and the run exits 0.
    sqlite_exec(&ws.path("samples/vals.db"), "UPDATE src SET v = 1");
    assert_eq!(ws.rowshift(&["retry", &p, "--rejects"]).code, 0);
    let done = ws.rowshift(&["run", &p]);
    assert_eq!(done.code, 0, "{}", done.stdout);
    assert!(
        done.stdout
            .contains("all 3 chunks done, 30 rows written, the quarantine is empty"),
        "{}",
        done.stdout
    );
}

#[test]
fn verify_exits_1_while_a_chunk_is_not_done() {
    let ws = Workspace::new();
    let out = ws.rowshift_env(
        &["run", "pipelines/quickstart.toml", "--quiet"],
        &[("ROWSHIFT_FAULT", "chunk=2")],
    );
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    let verify = ws.rowshift(&["verify", "pipelines/quickstart.toml"]);
    assert_eq!(verify.code, 1, "{}{}", verify.stdout, verify.stderr);
    assert_eq!(ws.rowshift(&["retry", "pipelines/quickstart.toml"]).code, 0);
    let verify = ws.rowshift(&["verify", "pipelines/quickstart.toml"]);
    assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
}

#[test]
fn every_statement_of_a_chunk_is_retried_within_a_time_budget_and_failures_count_attempts() {
    let ws = Workspace::new();
    // The claim fails twice with a dropped connection: it is retried like the rest.
    let out = ws.rowshift_env(
        &["run", "pipelines/quickstart.toml", "--json"],
        &[("ROWSHIFT_FAULT", "chunk=2,transient=2,at=claim")],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let rows = sqlite_rows(&ws.path("out/shop_v2.db"), "SELECT count(*) FROM users_v2");
    assert_eq!(rows[0], ["903"]);

    // A transient error that does not end: retried for `retry_seconds`, then the chunk
    // fails, saying how often and for how long it was tried.
    let p = std::fs::read_to_string(ws.path("pipelines/quickstart.toml")).unwrap();
    ws.write(
        "pipelines/budget.toml",
        &p.replace("users_v1_to_v2", "budget")
            .replace("shop_v2.db", "budget.db")
            .replace("parallel = 2", "parallel = 2\nretry_seconds = 2"),
    );
    let t0 = std::time::Instant::now();
    let out = ws.rowshift_env(
        &["run", "pipelines/budget.toml", "--quiet"],
        &[("ROWSHIFT_FAULT", "chunk=2,transient=1000")],
    );
    let took = t0.elapsed();
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(took < Duration::from_secs(10), "{took:?}");
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("  failed  chunk 2"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(
        line.contains("connection reset (after ")
            && line.contains(" attempts: transient errors were retried for ")
            && line.ends_with(" of the 2s that [chunks] retry_seconds allows)"),
        "{line}"
    );
    // A permanent error is tried once, and says so.
    let out = ws.rowshift_env(
        &["run", "pipelines/budget.toml", "--restart", "--quiet"],
        &[("ROWSHIFT_FAULT", "chunk=1")],
    );
    assert!(
        out.stdout.contains(
            "injected fault in the sink for chunk 1 (ROWSHIFT_FAULT) (after 1 attempt)\n"
        ),
        "{}",
        out.stdout
    );
}

#[test]
fn a_dry_run_whose_sample_has_no_readable_row_says_why() {
    let ws = Workspace::new();
    ws.write("samples/bad.csv", "id,name\n1,a,x\n2,b,y\n3,c,z\n");
    let p = ws.write(
        "pipelines/bad.toml",
        r#"name = "bad"
[source]
url = "../samples/bad.csv"
key = "id"
[target]
url = "sqlite://../out/bad.db"
table = "bad"
[target.columns]
id = { type = "bigint", expr = "id", primary_key = true }
name = { type = "text", expr = "name" }
"#,
    );
    let out = ws.rowshift(&["dry-run", &p]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(
            "no row of the sample could be read: all 3 records were unreadable; the first: "
        ),
        "{}",
        out.stdout
    );
}

#[test]
fn a_check_loosened_for_retry_rejects_is_accepted_and_recorded() {
    let ws = Workspace::new();
    let p = rejecting_pipeline(&ws);
    assert_eq!(ws.rowshift(&["run", &p, "--quiet"]).code, 1);
    let text = std::fs::read_to_string(ws.path(&p)).unwrap();
    ws.write(&p, &text.replace("max = 25", "max = 28"));
    let retry = ws.rowshift(&["retry", &p, "--rejects"]);
    assert_eq!(retry.code, 1, "{}{}", retry.stdout, retry.stderr);
    assert!(
        retry.stdout.contains(
            "  accepted check v range: max 25 → 28 (it only widens what passes; recorded in the checkpoint)"
        ) && retry.stdout.contains("written  3"),
        "{}",
        retry.stdout
    );
    // The run and verify go on under the recorded change.
    let run = ws.rowshift(&["run", &p]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("all 3 chunks done, 28 rows written, 2 rows in the quarantine"),
        "{}",
        run.stdout
    );
    let verify = ws.rowshift(&["verify", &p]);
    assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
    let status: serde_json::Value =
        serde_json::from_str(&ws.rowshift(&["status", &p, "--json"]).stdout).unwrap();
    assert_eq!(status["changes"], serde_json::json!([]), "{status}");
    assert_eq!(status["rows"]["written"], 28, "{status}");
    // Narrowing it again is a change the run refuses, said in the pipeline's terms.
    ws.write(&p, &text.replace("max = 25", "max = 20"));
    let out = ws.rowshift(&["run", &p]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("check v range: max 28 → 20"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_key_that_is_not_unique_is_named_by_dry_run_and_by_the_chunk_that_fails() {
    let ws = Workspace::new();
    ws.write("samples/dup.csv", "id,name\n1,a\n2,b\n2,c\n3,d\n4,e\n");
    let p = ws.write(
        "pipelines/dup.toml",
        r#"name = "dup"
[source]
url = "../samples/dup.csv"
key = "id"
[target]
url = "sqlite://../out/dup.db"
table = "t"
[target.columns]
id = { type = "bigint", expr = "id" }
name = { type = "text", expr = "name" }
"#,
    );
    let out = ws.rowshift(&["dry-run", &p]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(
            "the key is not unique: the sample holds these values more than once:\n  id=2 ("
        ) && out.stdout.contains("dup.csv line 3 (id=2); ")
            && out.stdout.contains("dup.csv line 4 (id=2))\n"),
        "{}",
        out.stdout
    );
    let out = ws.rowshift(&["run", &p, "--chunk-rows", "2"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(
            "first difference: id=2: the target holds 2 rows with this key, 1 was sent; the key (id) is not unique in "
        ) && out.stdout.contains("dup.csv: another chunk holds a row under the same key"),
        "{}",
        out.stdout
    );
    // verify does not pass while that chunk is not done.
    let verify = ws.rowshift(&["verify", &p]);
    assert_eq!(verify.code, 1, "{}{}", verify.stdout, verify.stderr);
}

/// Ctrl-C (here SIGINT) while a chunk waits out a transient error that does not end: the
/// chunk stops retrying within a backoff pause instead of using its whole 60 s budget, the
/// run exits 2 with the chunk failed, and the next run writes every row once.
#[test]
fn ctrl_c_ends_a_chunk_s_retries_at_once_and_the_next_run_redoes_it() {
    let ws = Workspace::new();
    let child = Command::new(env!("CARGO_BIN_EXE_rowshift"))
        .args(["run", "pipelines/quickstart.toml", "--quiet"])
        .current_dir(ws.path("."))
        .env("ROWSHIFT_FAULT", "chunk=2,transient=100000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let sent = std::time::Instant::now();
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let took = sent.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        took < Duration::from_secs(8),
        "stopped after {took:?}: {text}"
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("connection reset (after "), "{text}");
    let out = ws.rowshift(&["run", "pipelines/quickstart.toml", "--quiet"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let rows = sqlite_rows(
        &ws.path("out/shop_v2.db"),
        "SELECT count(*), count(DISTINCT id) FROM users_v2",
    );
    assert_eq!(rows[0], ["903", "903"]);
}
