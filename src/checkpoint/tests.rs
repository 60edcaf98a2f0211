//! A model-based test: random sequences of claim, finish, fail, crash (drop and reopen)
//! and reload, compared with an in-memory model of what must have been stored.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::db::IoRuntime;
use crate::plan::{ChunkRange, KeyValue};

#[derive(Debug, Clone)]
enum Op {
    Claim(usize),
    Finish(usize, u64),
    Fail(usize),
    Reset(usize),
    Crash,
}

fn op(n: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..n).prop_map(Op::Claim),
        (0..n, 0u64..1000).prop_map(|(c, r)| Op::Finish(c, r)),
        (0..n).prop_map(Op::Fail),
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
            (0..5).map(|i| (i, Model { state: ChunkState::Pending, attempts: 0, written: 0, error: None })).collect();
        for op in ops {
            match op {
                Op::Claim(c) => {
                    store.claim(c).unwrap();
                    let m = model.get_mut(&c).unwrap();
                    m.state = ChunkState::Running;
                    m.attempts += 1;
                }
                Op::Finish(c, rows) => {
                    let counts = ChunkCounts { read: rows, written: rows, filtered: 0, rejected: 0 };
                    store.finish(&DoneMark { chunk: c, counts, seconds: 0.5, checksum: rows * 7 }).unwrap();
                    let m = model.get_mut(&c).unwrap();
                    m.state = ChunkState::Done;
                    m.written = rows;
                    m.error = None;
                }
                Op::Fail(c) => {
                    store.fail(c, &format!("boom {c}")).unwrap();
                    let m = model.get_mut(&c).unwrap();
                    m.state = ChunkState::Failed;
                    m.error = Some(format!("boom {c}"));
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
            "filter: \"a\" -> \"b\"",
            "x: 1 was removed",
            "y: 2 was added"
        ]
    );
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
            sqlx::query(crate::db::stmt(sql)).execute(&pool).await.unwrap();
        }
    });
    io.block_on(pool.close());
    let store = SqliteStore::new(&path, "p", &io);
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.chunks[0].state, ChunkState::Done);
    assert_eq!(loaded.chunks[0].counts.written, 5);
    assert_eq!(loaded.chunks[0].checksum, 0);
    // Writing adds the column and keeps the rows.
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
        })
        .unwrap();
    assert_eq!(store.load().unwrap().unwrap().chunks[0].checksum, 0xabc);
}
