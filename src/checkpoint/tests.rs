//! A model-based test: random sequences of claim, finish, fail, crash (drop and reopen)
//! and reload, compared with an in-memory model of what must have been stored.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::chunk::{ChunkRange, KeyValue};
use crate::db::sqlite::checkpoint::SqliteStore;
use crate::runtime::IoRuntime;

#[derive(Debug, Clone)]
enum Op {
    Claim(usize),
    /// Marks done under the chunk's latest claim.
    Finish(usize, u64),
    /// Marks done under a claim another run took over (a loser's mark).
    FinishStale(usize, u64),
    Fail(usize),
    /// Marks failed under a claim another run took over.
    FailStale(usize),
    Reset(usize),
    Crash,
}

fn op(n: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..n).prop_map(Op::Claim),
        (0..n, 0u64..1000).prop_map(|(c, r)| Op::Finish(c, r)),
        (0..n, 0u64..1000).prop_map(|(c, r)| Op::FinishStale(c, r)),
        (0..n).prop_map(Op::Fail),
        (0..n).prop_map(Op::FailStale),
        (0..n).prop_map(Op::Reset),
        Just(Op::Crash),
    ]
}

fn chunks(n: usize) -> Vec<Chunk> {
    (0..n)
        .map(|id| Chunk {
            id,
            range: ChunkRange::Keys {
                lo: (id > 0).then(|| KeyValue::Int(id as i64 * 10)),
                hi: (id + 1 < n).then(|| KeyValue::Text(format!("k'{id}"))),
            },
            rows: Some(10),
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
struct Model {
    state: ChunkState,
    attempts: u32,
    written: u64,
    error: Option<String>,
    /// The latest claim's token, and the one before it (a loser's).
    claim: u64,
    stale: u64,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_the_model_across_crashes(ops in proptest::collection::vec(op(5), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let io = IoRuntime::new().unwrap();
        let plan = chunks(5);
        let settings = vec![("a".to_string(), "1".to_string())];
        let mut store = SqliteStore::new(&path, "p", &io);
        store.create("fp", &settings, &plan).unwrap();
        let mut model: BTreeMap<usize, Model> =
            (0..5).map(|i| (i, Model { state: ChunkState::Pending, attempts: 0, written: 0, error: None, claim: 0, stale: 0 })).collect();
        for op in ops {
            match op {
                Op::Claim(c) => {
                    let token = new_claim();
                    let claimed = store.claim(c, token).unwrap();
                    let m = model.get_mut(&c).unwrap();
                    // A done chunk is never claimed again.
                    prop_assert_eq!(claimed, m.state != ChunkState::Done);
                    if claimed {
                        m.state = ChunkState::Running;
                        m.attempts += 1;
                        m.stale = m.claim;
                        m.claim = token;
                    }
                }
                Op::Finish(c, rows) | Op::FinishStale(c, rows) => {
                    let m = model.get_mut(&c).unwrap();
                    let stale = matches!(op, Op::FinishStale(..));
                    let claim = if stale { m.stale } else { m.claim };
                    let counts = ChunkCounts { read: rows, written: rows, filtered: 0, rejected: 0 };
                    let done = store.finish(&DoneMark { chunk: c, counts, seconds: 0.5, checksum: rows * 7, claim, verify_seconds: 0.0, finished_ms: 0 });
                    // Only the chunk's latest claim, while it runs, marks it done.
                    if m.state == ChunkState::Running && !stale {
                        prop_assert!(done.is_ok(), "{:?}", done);
                        m.state = ChunkState::Done;
                        m.written = rows;
                        m.error = None;
                    } else {
                        let e = done.unwrap_err();
                        prop_assert!(is_claim_lost(&e), "{}", e);
                    }
                }
                Op::Fail(c) | Op::FailStale(c) => {
                    let m = model.get_mut(&c).unwrap();
                    let stale = matches!(op, Op::FailStale(..));
                    let claim = if stale { m.stale } else { m.claim };
                    store.fail(c, claim, &format!("boom {c}")).unwrap();
                    if m.state == ChunkState::Running && !stale {
                        m.state = ChunkState::Failed;
                        m.error = Some(format!("boom {c}"));
                    }
                }
                Op::Reset(c) => {
                    let m = model.get_mut(&c).unwrap();
                    if m.state == ChunkState::Done {
                        prop_assert!(store.reset(&[c]).is_err(), "a done chunk is never reset");
                    } else {
                        store.reset(&[c]).unwrap();
                        m.state = ChunkState::Pending;
                    }
                }
                Op::Crash => {
                    drop(store);
                    store = SqliteStore::new(&path, "p", &io);
                }
            }
            let loaded = store.load().unwrap().unwrap();
            prop_assert_eq!(&loaded.fingerprint, "fp");
            prop_assert_eq!(&loaded.settings, &settings);
            prop_assert_eq!(loaded.chunks.len(), 5);
            for r in &loaded.chunks {
                let m = &model[&r.chunk.id];
                prop_assert_eq!(&r.chunk, &plan[r.chunk.id]);
                prop_assert_eq!(r.state, m.state);
                prop_assert_eq!(r.attempts, m.attempts);
                prop_assert_eq!(&r.last_error, &m.error);
                                if m.state == ChunkState::Done {
                    prop_assert_eq!(r.counts.written, m.written);
                    prop_assert_eq!(r.checksum, m.written * 7);
                }
            }
        }
    }
}

#[test]
fn load_creates_nothing_and_discard_forgets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let io = IoRuntime::new().unwrap();
    let store = SqliteStore::new(&path, "p", &io);
    assert_eq!(store.load().unwrap(), None);
    assert!(!path.exists(), "loading must not create the store");
    store.create("fp", &[], &chunks(2)).unwrap();
    assert_eq!(store.load().unwrap().unwrap().chunks.len(), 2);
    // Another pipeline's run in the same file is separate.
    assert_eq!(SqliteStore::new(&path, "other", &io).load().unwrap(), None);
    store.discard().unwrap();
    assert_eq!(store.load().unwrap(), None);
}

#[test]
fn says_what_changed() {
    let old = vec![
        ("filter".to_string(), "\"a\"".to_string()),
        ("x".to_string(), "1".to_string()),
    ];
    let new = vec![
        ("filter".to_string(), "\"b\"".to_string()),
        ("y".to_string(), "2".to_string()),
    ];
    assert_eq!(
        diff_settings(&old, &new),
        [
            "filter: \"a\" → \"b\"",
            "x: 1 was removed",
            "y: 2 was added"
        ]
    );
}

#[test]
fn check_changes_are_shown_as_the_pipeline_writes_them_and_widening_ones_are_told_apart() {
    let check = |v: &str| vec![("checks.v range".to_string(), v.to_string())];
    let max8 = r#"Some("v") Range { min: None, max: Some("8") } Reject"#;
    let max100 = r#"Some("v") Range { min: None, max: Some("100") } Reject"#;
    let c = changes(&check(max8), &check(max100));
    assert_eq!(
        c,
        [Change {
            line: "check v range: max 8 → 100".into(),
            widens: true
        }]
    );
    let narrower = changes(&check(max100), &check(max8));
    assert!(!narrower[0].widens);
    let with_min = r#"Some("v") Range { min: Some("0"), max: Some("100") } Reject"#;
    assert_eq!(
        changes(&check(max100), &check(with_min)),
        [Change {
            line: "check v range: min = 0 was added".into(),
            widens: false
        }]
    );
    let warn = r#"Some("v") Range { min: None, max: Some("8") } Warn"#;
    assert!(changes(&check(max8), &check(warn))[0].widens);
    assert!(!changes(&check(warn), &check(max8))[0].widens);
    let a = r#"Some("c") Accepted(["'a'", "'b'"]) Reject"#;
    let ab = r#"Some("c") Accepted(["'a'", "'b'", "'c'"]) Reject"#;
    let ch = |v: &str| vec![("checks.c accepted".to_string(), v.to_string())];
    assert_eq!(
        changes(&ch(a), &ch(ab)),
        [Change {
            line: "check c accepted: accepted ['a', 'b'] → ['a', 'b', 'c']".into(),
            widens: true
        }]
    );
    // A removed check widens; an added one does not.
    assert_eq!(
        changes(&check(max8), &[]),
        [Change {
            line: "check v range: column = \"v\", max = 8, policy = \"reject\" was removed".into(),
            widens: true
        }]
    );
    assert!(!changes(&[], &check(max8))[0].widens);
}

#[test]
fn a_store_from_before_the_checksum_column_is_read_and_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let io = IoRuntime::new().unwrap();
    // The first released layout, without `checksum`, holding one done chunk.
    let pool = crate::db::sqlite::connect(&io, &path, crate::db::sqlite::Access::Write, 1).unwrap();
    let chunk = serde_json::to_string(&chunks(1)[0]).unwrap();
    io.block_on(async {
        for sql in [
            "CREATE TABLE \"_rowshift_runs\" (pipeline TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, settings TEXT NOT NULL, created_at TEXT NOT NULL)".to_string(),
            "CREATE TABLE \"_rowshift_chunks\" (pipeline TEXT NOT NULL, id INTEGER NOT NULL, chunk TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, rows_read INTEGER NOT NULL DEFAULT 0, rows_written INTEGER NOT NULL DEFAULT 0, rows_filtered INTEGER NOT NULL DEFAULT 0, rows_rejected INTEGER NOT NULL DEFAULT 0, seconds REAL NOT NULL DEFAULT 0, last_error TEXT, PRIMARY KEY (pipeline, id))".to_string(),
            "INSERT INTO \"_rowshift_runs\" VALUES ('p', 'fp', '[]', '2026-11-01T00:00:00Z')".to_string(),
            format!("INSERT INTO \"_rowshift_chunks\" (pipeline, id, chunk, state, rows_read, rows_written) VALUES ('p', 0, '{chunk}', 'done', 5, 5)"),
        ] {
            sqlx::query(crate::sql::stmt(sql)).execute(&pool).await.unwrap();
        }
    });
    io.block_on(pool.close());
    let store = SqliteStore::new(&path, "p", &io);
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.chunks[0].state, ChunkState::Done);
    assert_eq!(loaded.chunks[0].counts.written, 5);
    assert_eq!(loaded.chunks[0].checksum, 0);
    // Writing adds the columns and keeps the rows.
    store.redo(&[0]).unwrap();
    assert!(store.claim(0, 7).unwrap());
    store
        .finish(&DoneMark {
            chunk: 0,
            counts: ChunkCounts {
                read: 5,
                written: 5,
                filtered: 0,
                rejected: 0,
            },
            seconds: 0.1,
            checksum: 0xabc,
            claim: 7,
            verify_seconds: 0.25,
            finished_ms: 1_700_000_000_000,
        })
        .unwrap();
    let loaded = store.load().unwrap().unwrap();
    let c = &loaded.chunks[0];
    assert_eq!(c.checksum, 0xabc);
    // The columns added since read back what the claim and the mark wrote.
    assert_eq!(c.verify_seconds, 0.25);
    assert_eq!(c.finished_ms, Some(1_700_000_000_000));
    assert_eq!(
        c.worker.as_deref(),
        Some(crate::checkpoint::Worker::me().id.as_str())
    );
    assert!(
        c.started_ms.unwrap() > 1_700_000_000_000,
        "{:?}",
        c.started_ms
    );
    assert_eq!(c.lease_ms, None);
}

#[test]
fn a_losers_marks_never_overwrite_the_winners() {
    let dir = tempfile::tempdir().unwrap();
    let io = IoRuntime::new().unwrap();
    let store = SqliteStore::new(&dir.path().join("state.db"), "p", &io);
    store.create("fp", &[], &chunks(2)).unwrap();
    let mark = |claim, written| DoneMark {
        chunk: 0,
        counts: ChunkCounts {
            read: written,
            written,
            filtered: 0,
            rejected: 0,
        },
        seconds: 0.1,
        checksum: written,
        claim,
        verify_seconds: 0.0,
        finished_ms: 0,
    };
    // The loser claims first; the winner takes the chunk over (it holds the run lock, so
    // a running chunk is one whose run is gone) and commits.
    assert!(store.claim(0, 11).unwrap());
    assert!(store.claim(0, 22).unwrap());
    store.finish(&mark(22, 10)).unwrap();
    // The loser's done mark is refused, its failed mark changes nothing, and a done
    // chunk cannot be claimed again.
    let e = store.finish(&mark(11, 99)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "chunk 0: another run took this chunk over (its claim in the checkpoint is no longer this run's); nothing of this attempt is committed"
    );
    store.fail(0, 11, "the loser failed").unwrap();
    assert!(!store.claim(0, 33).unwrap());
    store.reset(&[1]).unwrap();
    assert!(store.reset(&[0]).is_err(), "a done chunk is never reset");
    let c = store.load().unwrap().unwrap();
    assert_eq!(c.chunks[0].state, ChunkState::Done);
    assert_eq!(c.chunks[0].counts.written, 10);
    assert_eq!(c.chunks[0].attempts, 2);
    assert_eq!(c.chunks[0].last_error, None);
    // Only `verify --repair` puts a done chunk back.
    store.redo(&[0]).unwrap();
    assert_eq!(
        store.load().unwrap().unwrap().chunks[0].state,
        ChunkState::Pending
    );
}

#[test]
fn a_second_lock_is_refused_naming_the_holder_and_a_dead_holders_lease_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let io = IoRuntime::new().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteStore::new(&path, "p", &io);
    let held = store.lock(std::time::Duration::ZERO, &mut |_| {}).unwrap();
    let holder = store.holder().unwrap().expect("a live holder");
    assert_eq!(holder.pid, Some(std::process::id()));
    let other = SqliteStore::new(&path, "p", &io);
    let e = other
        .lock(std::time::Duration::ZERO, &mut |_| {})
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "is held by another run: host {}, pid {}, since ",
            holder.host,
            std::process::id()
        )),
        "{text}"
    );
    // Waiting: told once, then refused after the bound.
    let mut told = Vec::new();
    let t0 = std::time::Instant::now();
    let e = other
        .lock(std::time::Duration::from_millis(600), &mut |h| {
            told.push(h.clone())
        })
        .unwrap_err();
    assert!(t0.elapsed() >= std::time::Duration::from_millis(600));
    assert_eq!(told, std::slice::from_ref(&holder));
    assert!(e.to_string().contains("(waited 0."), "{e}");
    // Another pipeline in the same file is not held.
    drop(
        SqliteStore::new(&path, "q", &io)
            .lock(std::time::Duration::ZERO, &mut |_| {})
            .unwrap(),
    );
    drop(held);
    assert_eq!(store.holder().unwrap(), None);
    // A lease whose process is gone (killed: it never released it) is taken over.
    let pool = crate::db::sqlite::connect(&io, &path, crate::db::sqlite::Access::Write, 1).unwrap();
    io.block_on(async {
        sqlx::query("INSERT INTO \"_rowshift_locks\" VALUES ('p', 'aa', ?, 4194304, 1, '2026-01-01T00:00:00Z', ?)")
            .bind(crate::checkpoint::lock::host_name())
            .bind(crate::checkpoint::lock::unix_now())
            .execute(&pool)
            .await
            .unwrap();
    });
    io.block_on(pool.close());
    assert_eq!(
        store.holder().unwrap(),
        None,
        "a dead process holds nothing"
    );
    drop(other.lock(std::time::Duration::ZERO, &mut |_| {}).unwrap());
}
