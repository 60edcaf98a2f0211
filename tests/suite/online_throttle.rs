//! The catch-up's brakes (docs/online.md): `[online] max_rows_per_second`, measured
//! from the times the target's transactions recorded; `rowshift pause` and `resume`
//! with a writer running; and a wait on a busy source server, provoked with a low
//! threshold and sessions that keep the server busy for a known time.

use super::*;

/// Appends `keys` to the `[online]` section (its last) of the pipeline [`Db::pipeline`]
/// wrote.
pub(super) fn with_online(ws: &Workspace, keys: &str) {
    let path = ws.path("online.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(keys);
    std::fs::write(&path, text).unwrap();
}

impl Db {
    /// A trigger on the target that records, for every row written, the time its
    /// transaction began (`now()`; MySQL: the statement's start): one time per replayed
    /// batch.
    pub(super) fn record_writes(&self) {
        let (t, log) = (self.table("items_new"), self.table("written"));
        match self.kind {
            Kind::Pg => {
                let f = self.table("record_write");
                self.exec(&format!(
                    "CREATE TABLE {log} (at timestamptz NOT NULL, id bigint NOT NULL);
                     CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO {log} VALUES (now(), NEW.id); RETURN NULL; END $$;
                     CREATE TRIGGER record_write AFTER INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION {f}()"
                ));
            }
            Kind::My => {
                self.exec(&format!(
                    "CREATE TABLE {log} (at DATETIME(6) NOT NULL, id BIGINT NOT NULL)"
                ));
                self.exec(&format!(
                    "CREATE TRIGGER {} AFTER INSERT ON {t} FOR EACH ROW INSERT INTO {log} VALUES (NOW(6), NEW.id)",
                    self.table("record_write")
                ));
            }
            Kind::Lite => unreachable!("SQLite has no server to throttle on"),
        }
    }

    /// The batches the recording trigger saw: (seconds since the epoch, rows), in order.
    pub(super) fn written_batches(&self) -> Vec<(f64, u64)> {
        let sql = match self.kind {
            Kind::Pg => format!(
                "SELECT EXTRACT(EPOCH FROM at)::text, count(*)::text FROM {} GROUP BY at ORDER BY at",
                self.table("written")
            ),
            _ => format!(
                "SELECT CAST(UNIX_TIMESTAMP(at) AS CHAR), CAST(count(*) AS CHAR) FROM {} GROUP BY at ORDER BY at",
                self.table("written")
            ),
        };
        self.rows(&sql)
            .into_iter()
            .map(|r| (r[0].parse().unwrap(), r[1].parse().unwrap()))
            .collect()
    }

    /// The server's clock, in seconds since the epoch.
    pub(super) fn clock(&self) -> f64 {
        let sql = match self.kind {
            Kind::Pg => "SELECT EXTRACT(EPOCH FROM clock_timestamp())::text",
            _ => "SELECT CAST(UNIX_TIMESTAMP(NOW(6)) AS CHAR)",
        };
        self.rows(sql)[0][0].parse().unwrap()
    }
}

/// 1,200 changes replayed under `max_rows_per_second = 300`: by the times the target's
/// transactions began, no stretch of batches went faster than the limit (5% for the
/// time a transaction takes to begin after its batch was let go).
#[test]
fn postgres_catch_up_keeps_under_max_rows_per_second() {
    let ws = Workspace::new();
    let db = Db::new(Kind::Pg, &ws);
    db.seed();
    let p = db.pipeline(&ws);
    // The replica lag limit runs its query too, set so high that the replica another
    // test starts (online_replica.rs) never holds this catch-up.
    with_online(
        &ws,
        "max_rows_per_second = 300\nmax_replica_lag_ms = 600000\n",
    );
    let (code, text) = finish(rowshift(&ws, &["run", &p], &[]));
    assert_eq!(code, 0, "{text}");
    db.record_writes();
    db.exec(&format!(
        "UPDATE {} SET qty = qty + 1 WHERE id <= 1200",
        db.table("items")
    ));
    let (code, text) = finish(rowshift(&ws, &["run", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("online: replayed 1200 changes"), "{text}");

    let batches = db.written_batches();
    let total: u64 = batches.iter().map(|b| b.1).sum();
    assert_eq!(total, 1200, "{batches:?}");
    assert!(
        batches.len() >= 6,
        "batches of at most 200 (batch_rows): {batches:?}"
    );
    let t0 = batches[0].0;
    let mut before = 0;
    for (at, rows) in &batches {
        if *at > t0 {
            let rate = before as f64 / (at - t0);
            assert!(
                rate <= 300.0 * 1.05,
                "{before} rows replayed in the {:.3}s before a batch: {rate:.0} a second; {batches:?}",
                at - t0
            );
        }
        before += rows;
    }
    let (first, last) = (batches[0].0, batches[batches.len() - 1].0);
    eprintln!(
        "max_rows_per_second = 300: {} rows in {:.2}s between the first and the last batch ({:.0} a second)",
        total - batches[batches.len() - 1].1,
        last - first,
        (total - batches[batches.len() - 1].1) as f64 / (last - first)
    );
}

/// `rowshift pause` while a writer runs: the catch-up of a resumed run replays nothing
/// while the lag grows, `status` says it is paused; `rowshift resume` lets it go on
/// from its place, and the cut-over leaves exactly what the writer's statements left.
#[test]
fn postgres_pause_and_resume_by_command_with_a_writer_running() {
    let ws = Workspace::new();
    let db = Db::new(Kind::Pg, &ws);
    let model = Arc::new(Mutex::new(db.seed()));
    let p = db.pipeline(&ws);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(&db, &model, &seen, &stop);
    let (code, text) = finish(rowshift(&ws, &["run", &p], &[]));
    assert_eq!(code, 0, "{text}");

    let (code, text) = finish(rowshift(&ws, &["pause", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("paused pipeline items-v2"), "{text}");
    assert!(ws.path("online.toml.paused").exists());
    let mut run = rowshift(&ws, &["run", &p], &[]);
    let status = |ws: &Workspace| {
        let (code, text) = finish(rowshift(ws, &["status", &p, "--json"], &[]));
        assert_eq!(code, 0, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["online"].clone()
    };
    std::thread::sleep(Duration::from_millis(1500));
    let a = status(&ws);
    std::thread::sleep(Duration::from_millis(1500));
    let b = status(&ws);
    assert!(run.try_wait().unwrap().is_none(), "the paused run waits");
    assert!(
        a["paused"]
            .as_str()
            .is_some_and(|p| p.starts_with("paused at ") && p.ends_with("online.toml.paused)")),
        "{a}"
    );
    assert_eq!(
        a["replayed"], b["replayed"],
        "nothing replayed while paused: {a} {b}"
    );
    assert_eq!(a["position"], b["position"]);
    assert!(
        b["lag"]["rows"].as_u64() > a["lag"]["rows"].as_u64(),
        "the writer's changes wait: {a} {b}"
    );
    let (code, text) = finish(rowshift(&ws, &["cutover", &p], &[]));
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("is paused at ")
            && text.contains("run `rowshift resume` before the cut-over"),
        "{text}"
    );

    let (code, text) = finish(rowshift(&ws, &["resume", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("resumed pipeline items-v2"), "{text}");
    let t0 = Instant::now();
    while run.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the resumed run ends"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, text) = finish(run);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("online: the catch-up waited ") && text.contains("s paused (rowshift pause)"),
        "{text}"
    );
    let c = status(&ws);
    assert!(c["replayed"].as_u64() > b["replayed"].as_u64(), "{b} {c}");

    let (code, text) = finish(rowshift(&ws, &["cutover", &p], &[]));
    assert_eq!(code, 0, "{text}");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let seen = seen.lock().unwrap();
    assert!(seen.errors.is_empty(), "{:?}", seen.errors);
    assert_eq!(db.table_rows("items"), *model.lock().unwrap());
}

/// Three sessions keep the source server busy for 3 s (`pg_sleep`, `SLEEP`) over a
/// threshold of 2: the catch-up replays nothing until at least one has ended, and
/// `status` says why it waits.
fn busy_server_pause(kind: Kind, limit: &str, said: &str) {
    let ws = Workspace::new();
    let db = Db::new(kind, &ws);
    db.seed();
    let p = db.pipeline(&ws);
    with_online(&ws, &format!("{limit} = 2\n"));
    let (code, text) = finish(rowshift(&ws, &["run", &p], &[]));
    assert_eq!(code, 0, "{text}");
    db.record_writes();
    db.exec(&format!(
        "UPDATE {} SET qty = qty + 1 WHERE id <= 300",
        db.table("items")
    ));

    let began = db.clock();
    let sleepers: Vec<_> = (0..3)
        .map(|_| {
            let mut w = writer_for(&db);
            let sql = if kind == Kind::Pg {
                "SELECT pg_sleep(3)"
            } else {
                "SELECT SLEEP(3)"
            };
            std::thread::spawn(move || w.run(sql).unwrap())
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let run = rowshift(&ws, &["run", &p, "--json"], &[]);
    let (code, text) = finish(rowshift(&ws, &["status", &p], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("capture: throttled: ")
            && text.contains(said)
            && text.contains("the catch-up waits"),
        "{text}"
    );
    for s in sleepers {
        s.join().unwrap();
    }
    let out = run.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(v["online"]["replayed"], 300, "{text}");
    assert!(
        v["online"]["throttled_seconds"].as_f64().unwrap() >= 1.0,
        "{text}"
    );
    let batches = db.written_batches();
    assert_eq!(batches.iter().map(|b| b.1).sum::<u64>(), 300);
    // Every sleeper began after `began` and slept 3 s: until then, three were busy.
    assert!(
        batches[0].0 >= began + 3.0 - 0.05,
        "the first batch was written {:.2}s after the sleepers began",
        batches[0].0 - began
    );
}

#[test]
fn postgres_catch_up_waits_while_the_server_has_too_many_active_backends() {
    busy_server_pause(
        Kind::Pg,
        "max_active_backends",
        "active backends on the server, over [online] max_active_backends = 2",
    );
}

#[test]
fn mariadb_catch_up_waits_while_threads_running_is_over_its_limit() {
    busy_server_pause(Kind::My, "max_threads_running", "Threads_running is ");
}
