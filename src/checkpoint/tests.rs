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
