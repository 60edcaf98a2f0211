//! `rowshift report`: the page of a real run holds the run's numbers (read back out of
//! the JSON it embeds), loads nothing from the network, never shows a password, and its
//! charts draw in a real browser (Debian's headless chromium) without a script error.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{PgSchema, Workspace, pg_url, sqlite_rows};

/// The quickstart's move of `users_v1` with two checks that reject rows: a country
/// that is missing, and a score above 90. `target` is the `[target]` lines before
/// `table`. Returns the pipeline's path.
fn pipeline(ws: &Workspace, name: &str, target: &str) -> String {
    ws.write(
        &format!("pipelines/{name}.toml"),
        &format!(
            r#"name = "{name}"
[source]
url = "sqlite://../samples/shop.db"
table = "users_v1"
key = "id"
[target]
{target}
table = "users_v2"
if_exists = "replace"
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
email = {{ type = "varchar(254)", expr = "lower(trim(email))", nullable = false }}
country = {{ type = "varchar(2)", expr = "nullif(upper(country), '')" }}
score = {{ type = "numeric(6,2)", expr = "score" }}
[filter]
where = "deleted_at IS NULL"
[[checks]]
column = "country"
not_null = true
[[checks]]
column = "score"
max = 90
[chunks]
rows = 200
parallel = 2
"#
        ),
    )
}

/// What the source says the run must find, counted with SQL on `samples/shop.db`:
/// (rows read, filtered, rejected for a missing country, rejected for the score).
/// A row that fails both checks counts under the first.
fn expected(ws: &Workspace) -> (u64, u64, u64, u64) {
    let n = |sql: &str| -> u64 {
        sqlite_rows(&ws.path("samples/shop.db"), sql)[0][0]
            .parse()
            .unwrap()
    };
    let live = "FROM users_v1 WHERE deleted_at IS NULL";
    let no_country = "nullif(upper(country), '') IS NULL";
    (
        n("SELECT count(*) FROM users_v1"),
        n("SELECT count(*) FROM users_v1 WHERE deleted_at IS NOT NULL"),
        n(&format!("SELECT count(*) {live} AND {no_country}")),
        n(&format!(
            "SELECT count(*) {live} AND NOT ({no_country}) AND score > 90"
        )),
    )
}

/// The JSON the page embeds, parsed back.
fn embedded(page: &str) -> Value {
    let open = r#"<script type="application/json" id="report-data">"#;
    let start = page.find(open).expect("the page embeds its data") + open.len();
    let end = start + page[start..].find("</script>").unwrap();
    serde_json::from_str(&page[start..end]).unwrap()
}

/// The page loads nothing: no URL of a network resource, no external stylesheet,
/// script, font or image.
fn assert_self_contained(page: &str) {
    for bad in [
        "http://",
        "https://",
        "<link",
        " src=",
        "@import",
        "url(",
        "@font-face",
    ] {
        assert!(!page.contains(bad), "the page holds {bad:?}");
    }
}

/// Asserts the report's numbers: chunks, rows, reasons and their counts, as the
/// source's SQL and the run's own summary say.
fn assert_report(ws: &Workspace, data: &Value, summary: &Value, name: &str) {
    let (read, filtered, no_country, high_score) = expected(ws);
    assert_eq!(data["pipeline"], name);
    assert_eq!(data["state"], "done");
    assert_eq!(data["chunks"]["total"], 5, "{}", data["chunks"]);
    assert_eq!(data["chunks"]["done"], 5);
    assert_eq!(data["chunks"]["failed"], 0);
    assert_eq!(data["chunks"]["pending"], 0);
    assert_eq!(data["rows"]["read"], read);
    assert_eq!(data["rows"]["filtered"], filtered);
    assert_eq!(data["rows"]["rejected"], no_country + high_score);
    assert_eq!(
        data["rows"]["written"],
        read - filtered - no_country - high_score
    );
    assert_eq!(data["checksum"], summary["checksum"]);
    let reasons: Vec<(String, u64)> = data["rejects"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["reason"].as_str().unwrap().to_string(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    let said: Vec<(String, u64)> = summary["rejects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["reason"].as_str().unwrap().to_string(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    let count_of = |needle: &str| {
        reasons
            .iter()
            .find(|(r, _)| r.starts_with(needle))
            .unwrap_or_else(|| panic!("no reason {needle}: {reasons:?}"))
            .1
    };
    assert_eq!(count_of("column country:"), no_country);
    assert_eq!(count_of("column score:"), high_score);
    let mut sorted_said = said.clone();
    sorted_said.sort();
    let mut sorted = reasons.clone();
    sorted.sort();
    assert_eq!(sorted, sorted_said, "the run's summary");
    // Every done chunk is in the durations' histogram; every rejected row of a timed
    // chunk in the rejects over time.
    let binned: u64 = data["durations"]["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(binned, 5);
    let over_time: f64 = data["rejects"]["over_time"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["values"].as_array().unwrap().iter())
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert_eq!(
        over_time as u64 + data["rejects"]["untimed"].as_u64().unwrap(),
        no_country + high_score
    );
    assert_eq!(data["slowest"].as_array().unwrap().len(), 5);
}

#[test]
fn report_of_a_sqlite_run_holds_its_chunks_rows_and_rejects_and_loads_nothing() {
    let ws = Workspace::new();
    let p = pipeline(&ws, "report_sqlite", r#"url = "sqlite://../out/report.db""#);
    // Chunk 2 fails twice with a transient error, then commits: a retried chunk.
    let out = ws.rowshift_env(
        &["run", &p, "--json"],
        &[("ROWSHIFT_FAULT", "chunk=2,transient=2")],
    );
    assert_eq!(out.code, 1, "rows were rejected: {}", out.stderr);
    let summary: Value = serde_json::from_str(&out.stdout).unwrap();

    let page = ws.rowshift(&["report", &p]);
    assert_eq!(page.code, 0, "{}", page.stderr);
    assert_self_contained(&page.stdout);
    let data = embedded(&page.stdout);
    assert_report(&ws, &data, &summary, "report_sqlite");
    // One process, so one series of throughput, over round time buckets.
    assert_eq!(data["throughput"].as_array().unwrap().len(), 1);
    assert!(data["axis"]["buckets"].as_u64().unwrap() >= 1);
    // The retried chunk is named with its attempts and its last error.
    let retries = &data["retries"];
    assert_eq!(retries["retried"], 1, "{retries}");
    assert_eq!(retries["extra_attempts"], 2);
    assert_eq!(retries["listed"][0]["id"], 2);
    assert_eq!(retries["listed"][0]["attempts"], 3);
    assert!(
        retries["listed"][0]["range"]
            .as_str()
            .unwrap()
            .starts_with("chunk 2 ("),
        "{retries}"
    );
    // Read-back is on by default; its cost is part of the chunks' time.
    assert_eq!(data["readback"]["on"], true);
    let share = data["readback"]["share"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&share), "{share}");

    // -o writes the same page to a file.
    let to_file = ws.rowshift(&["report", &p, "-o", "report.html"]);
    assert_eq!(to_file.code, 0, "{}", to_file.stderr);
    assert_eq!(to_file.stdout, "");
    let written = std::fs::read_to_string(ws.path("report.html")).unwrap();
    assert_eq!(embedded(&written), data);
}

#[test]
fn report_of_a_postgres_run_holds_its_numbers_and_never_the_password() {
    const SECRET: &str = "r3port-s3cret";
    let ws = Workspace::new();
    let pg = PgSchema::new("rs_report");
    // The test server trusts its clients: the password is accepted and ignored.
    let mut url = url::Url::parse(&pg_url()).unwrap();
    if url.password().is_none() {
        url.set_password(Some(SECRET)).unwrap();
    }
    let secret = url.password().unwrap().to_string();
    let p = pipeline(
        &ws,
        "report_pg",
        &format!("url = \"{url}\"\nschema = {}", pg.toml()),
    );
    let out = ws.rowshift(&["run", &p, "--json"]);
    assert_eq!(out.code, 1, "rows were rejected: {}", out.stderr);
    let summary: Value = serde_json::from_str(&out.stdout).unwrap();

    let page = ws.rowshift(&["report", &p, "-o", "pg.html"]);
    assert_eq!(page.code, 0, "{}", page.stderr);
    let text = std::fs::read_to_string(ws.path("pg.html")).unwrap();
    assert_self_contained(&text);
    assert!(!text.contains(&secret), "the page shows the password");
    assert!(!page.stderr.contains(&secret), "{}", page.stderr);
    let data = embedded(&text);
    assert_report(&ws, &data, &summary, "report_pg");
    assert!(
        data["target"].as_str().unwrap().contains(":***@"),
        "{}",
        data["target"]
    );
    // The checkpoint is in the target.
    assert!(
        data["checkpoint"].as_str().unwrap().contains(&pg.name),
        "{}",
        data["checkpoint"]
    );
}

#[test]
fn report_without_a_recorded_run_is_an_error() {
    let ws = Workspace::new();
    let p = pipeline(&ws, "report_none", r#"url = "sqlite://../out/none.db""#);
    let out = ws.rowshift(&["report", &p]);
    assert_eq!(out.code, 2);
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr
            .starts_with("error: no checkpoint for pipeline report_none in "),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.trim_end().ends_with("; run it before reporting"),
        "{}",
        out.stderr
    );
}

#[test]
fn report_of_a_run_in_progress_shows_it_running() {
    let ws = Workspace::new();
    let p = pipeline(&ws, "report_live", r#"url = "sqlite://../out/live.db""#);
    // Chunk 4 waits 6 s before its commit: the run holds its lock meanwhile.
    let mut run = Command::new(env!("CARGO_BIN_EXE_rowshift"))
        .args(["run", &p, "--quiet"])
        .current_dir(ws.path("."))
        .env("ROWSHIFT_FAULT", "chunk=4,pause=6000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the other chunks to be done.
    let started = Instant::now();
    let data = loop {
        let out = ws.rowshift(&["report", &p]);
        if out.code == 0 {
            let data = embedded(&out.stdout);
            if data["chunks"]["done"] == 4 {
                break data;
            }
            assert_ne!(
                data["chunks"]["done"], 5,
                "the run ended before a report saw it in progress"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run did not get to chunk 4's pause"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(data["state"], "running", "{}", data["state"]);
    assert_eq!(data["chunks"]["running"], 1);
    assert_eq!(data["chunks"]["total"], 5);
    assert_eq!(
        data["durations"]["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .sum::<u64>(),
        4
    );
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(1), "rows were rejected");
    let done = embedded(&ws.rowshift(&["report", &p]).stdout);
    assert_eq!(done["state"], "done");
    assert_eq!(done["chunks"]["done"], 5);
}

/// Debian's chromium, which the browser test needs: `.ci/run` installs it.
fn chromium() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("chromium"))
        .chain([PathBuf::from("/usr/bin/chromium")])
        .find(|p| p.is_file());
    match found {
        Some(p) => p,
        None => panic!(
            "the report's browser test needs chromium, which is not installed: \
             run `apt-get install -y chromium` (as .ci/run does)"
        ),
    }
}

/// The DOM of `page` after its scripts ran, as headless chromium dumps it.
fn rendered_dom(page: &Path, profile: &Path) -> String {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "chromium failed: {:?}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

/// The markup of the element whose `id` is given, up to the next drawn box after it.
fn part<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element {id} in the page"));
    // Past the element's own tag, which may name its box.
    let inside = start + dom[start..].find('>').unwrap();
    let end = dom[inside..]
        .find("data-chart=")
        .map_or(dom.len(), |e| inside + e);
    &dom[start..end]
}

/// Values that are not zero: the bars a chart draws.
fn nonzero(values: &Value) -> usize {
    values
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v.as_f64().unwrap() > 0.0)
        .count()
}

#[test]
fn report_charts_render_in_headless_chromium_without_errors() {
    let browser = chromium();
    let ws = Workspace::new();
    let p = pipeline(
        &ws,
        "report_browser",
        r#"url = "sqlite://../out/browser.db""#,
    );
    let out = ws.rowshift_env(
        &["run", &p, "--quiet"],
        &[("ROWSHIFT_FAULT", "chunk=1,transient=1")],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let written = ws.rowshift(&["report", &p, "-o", "report.html"]);
    assert_eq!(written.code, 0, "{}", written.stderr);
    let page = ws.path("report.html");
    let data = embedded(&std::fs::read_to_string(&page).unwrap());
    let dom = rendered_dom(&page, &ws.path("chromium-profile"));
    // What the script drew, without the scripts themselves (whose text names the same
    // attributes).
    let dom = match dom.find("<script") {
        Some(end) => &dom[..end],
        None => panic!("{} dumped no page: {dom}", browser.display()),
    };

    // No script error: the box that shows them stayed empty and hidden.
    assert!(
        dom.contains(r#"<pre id="errors" class="errors" hidden=""></pre>"#),
        "the page shows script errors: {}",
        part(dom, "errors")
    );
    // Every box drew.
    let boxes = dom.matches("data-chart=").count();
    assert_eq!(boxes, 9, "{dom}");
    assert_eq!(
        dom.matches(r#"data-rendered="true""#).count(),
        boxes,
        "a box did not draw: {dom}"
    );

    // Throughput: one band per worker, one point pair per time bucket.
    let buckets = data["axis"]["buckets"].as_u64().unwrap();
    let throughput = part(dom, "chart-throughput");
    assert_eq!(
        throughput.matches(r#"<path class="area""#).count(),
        data["throughput"].as_array().unwrap().len()
    );
    assert!(
        throughput.contains(&format!(r#"data-points="{buckets}""#)),
        "{throughput}"
    );
    assert!(throughput.contains("rows read per second"));
    assert!(throughput.contains("time since the first chunk was claimed ("));

    // Durations: a bar per bin that holds chunks, and a row per slowest chunk.
    let durations = part(dom, "chart-durations");
    assert_eq!(
        durations.matches(r#"<rect class="bar""#).count(),
        nonzero(&data["durations"]["counts"])
    );
    assert!(durations.contains("chunk duration (s)"));
    assert_eq!(
        part(dom, "table-slowest")
            .matches(r#"<tr class="slow">"#)
            .count(),
        5
    );

    // Rejects: a bar per (bucket, reason) that holds rows; a row per reason.
    let bars: usize = data["rejects"]["over_time"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| nonzero(&s["values"]))
        .sum();
    assert!(bars >= 1);
    assert_eq!(
        part(dom, "chart-rejects")
            .matches(r#"<rect class="bar""#)
            .count(),
        bars
    );
    assert_eq!(
        part(dom, "table-reasons")
            .matches(r#"<tr class="reason">"#)
            .count(),
        2
    );

    // Read-back: its histogram's bars, when chunks recorded its time.
    let readback = part(dom, "chart-readback");
    assert!(readback.contains("share of chunk time"), "{readback}");
    if data["readback"]["seconds"].as_f64().unwrap() > 0.0 {
        assert_eq!(
            readback.matches(r#"<rect class="bar""#).count(),
            nonzero(&data["readback"]["per_chunk"]["counts"])
        );
    }

    // Retries: the chunk that failed once, with its error.
    let retries = part(dom, "table-retries");
    assert_eq!(retries.matches(r#"<tr class="retry">"#).count(), 1);
    assert!(retries.contains("chunk 1 ("), "{retries}");
}

#[test]
fn report_of_a_run_shared_by_two_workers_draws_a_band_per_worker() {
    let ws = Workspace::new();
    let pg = PgSchema::new("rs_report_workers");
    let p = pipeline(
        &ws,
        "report_workers",
        &format!("url = \"{}\"\nschema = {}", pg_url(), pg.toml()),
    );
    // Each chunk waits 400 ms before its commit, so that both workers take chunks.
    let worker = || {
        Command::new(env!("CARGO_BIN_EXE_rowshift"))
            .args(["run", &p, "--worker", "--quiet"])
            .current_dir(ws.path("."))
            .env("ROWSHIFT_FAULT", "pause=400")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = worker();
    std::thread::sleep(Duration::from_millis(300));
    let second = worker();
    for w in [first, second] {
        let out = w.wait_with_output().unwrap();
        assert!(
            out.status.code().is_some_and(|c| c <= 1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let written = ws.rowshift(&["report", &p, "-o", "workers.html"]);
    assert_eq!(written.code, 0, "{}", written.stderr);
    let page = ws.path("workers.html");
    let data = embedded(&std::fs::read_to_string(&page).unwrap());
    assert_eq!(data["state"], "done");
    assert_eq!(data["chunks"]["done"], 5);
    let workers = data["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{workers:?}");
    let mut ids: Vec<&str> = workers.iter().map(|w| w["id"].as_str().unwrap()).collect();
    ids.sort();
    let done: u64 = workers
        .iter()
        .map(|w| w["chunks_done"].as_u64().unwrap())
        .sum();
    let read: u64 = workers
        .iter()
        .map(|w| w["rows_read"].as_u64().unwrap())
        .sum();
    assert_eq!((done, read), (5, expected(&ws).0));
    assert!(
        workers
            .iter()
            .all(|w| w["state"] == "finished" && w["chunks_done"].as_u64().unwrap() >= 1),
        "{workers:?}"
    );
    // One throughput series per worker, named by it, adding up to the rows read.
    let series = data["throughput"].as_array().unwrap();
    let names: Vec<&str> = series.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ids);
    let bucket_seconds = data["axis"]["bucket_ms"].as_f64().unwrap() / 1000.0;
    let rows: f64 = series
        .iter()
        .flat_map(|s| s["values"].as_array().unwrap().iter())
        .map(|v| v.as_f64().unwrap() * bucket_seconds)
        .sum();
    assert!(
        (rows - read as f64).abs() < 0.5,
        "{rows} rows drawn, {read} read"
    );

    let dom = rendered_dom(&page, &ws.path("chromium-profile"));
    let dom = &dom[..dom.find("<script").expect("a page")];
    assert!(dom.contains(r#"<pre id="errors" class="errors" hidden=""></pre>"#));
    assert_eq!(
        part(dom, "chart-throughput")
            .matches(r#"<path class="area""#)
            .count(),
        2
    );
    let table = part(dom, "table-workers");
    assert_eq!(table.matches(r#"<tr class="worker">"#).count(), 2);
    for id in ids {
        assert!(table.contains(id), "{table}");
    }
}
