//! The report's model from a made-up checkpoint: counts, the slowest chunks, retries,
//! rejects by reason and over time, throughput per worker.

use super::*;
use crate::chunk::{Chunk, ChunkRange, KeyValue};

/// Chunk `id` of a plan over keys in hundreds, in `state`, with `read` rows.
fn record(id: usize, state: ChunkState, read: u64, seconds: f64) -> ChunkRecord {
    ChunkRecord {
        chunk: Chunk {
            id,
            range: ChunkRange::Keys {
                lo: (id > 0).then(|| KeyValue::Int(id as i64 * 100)),
                hi: Some(KeyValue::Int((id as i64 + 1) * 100)),
            },
            rows: None,
        },
        state,
        attempts: 1,
        counts: ChunkCounts {
            read,
            written: read.saturating_sub(2),
            filtered: 1,
            rejected: read.min(1),
        },
        seconds,
        checksum: 0x10 + id as u64,
        last_error: None,
        worker: None,
        started_ms: None,
        finished_ms: None,
        verify_seconds: 0.0,
        lease_ms: None,
    }
}

/// `record` done by `worker` from `from` to `to` (epoch ms), `verify` of it reading back.
fn timed(id: usize, worker: &str, read: u64, from: i64, to: i64, verify: f64) -> ChunkRecord {
    let mut r = record(id, ChunkState::Done, read, (to - from) as f64 / 1000.0);
    r.worker = Some(worker.into());
    r.started_ms = Some(from);
    r.finished_ms = Some(to);
    r.verify_seconds = verify;
    r
}

fn inputs(checkpoint: &Checkpoint) -> Inputs<'_> {
    Inputs {
        pipeline: "p".into(),
        source: "sqlite://src.db table t".into(),
        target: "postgres://u:***@h/db table t".into(),
        checkpoint_at: "checkpoint".into(),
        quarantine_at: "t_rejects".into(),
        verify: true,
        live: false,
        checkpoint,
        workers: Vec::new(),
        rejects: BTreeMap::new(),
    }
}

fn checkpoint(chunks: Vec<ChunkRecord>) -> Checkpoint {
    Checkpoint {
        fingerprint: "f".into(),
        settings: Vec::new(),
        created_at: "2026-12-07T10:00:00Z".into(),
        chunks,
    }
}

#[test]
fn counts_states_and_the_checksum_are_over_the_done_chunks() {
    let mut failed = record(2, ChunkState::Failed, 0, 0.0);
    failed.attempts = 3;
    failed.last_error = Some("connect to postgres://u:secret@h/db: refused".into());
    let c = checkpoint(vec![
        record(0, ChunkState::Done, 100, 1.0),
        record(1, ChunkState::Done, 50, 4.0),
        failed,
        record(3, ChunkState::Pending, 0, 0.0),
        record(4, ChunkState::Running, 0, 0.0),
    ]);
    let r = build(inputs(&c));
    assert_eq!(
        r.chunks,
        ChunkTally {
            total: 5,
            done: 2,
            failed: 1,
            pending: 1,
            running: 1
        }
    );
    assert_eq!(
        r.rows,
        ChunkCounts {
            read: 150,
            written: 146,
            filtered: 2,
            rejected: 2
        }
    );
    assert_eq!(r.checksum, format!("{:016x}", 0x10 + 0x11));
    assert_eq!(r.state, "interrupted");
    assert_eq!(r.planned_at, "2026-12-07T10:00:00Z");
    // The slowest first; only done chunks.
    let slow: Vec<usize> = r.slowest.iter().map(|c| c.id).collect();
    assert_eq!(slow, [1, 0]);
    assert_eq!(r.slowest[0].range, "chunk 1 (100 < key <= 200)");
    assert_eq!(r.durations.counts.iter().sum::<u64>(), 2);
    // The failed chunk is listed with its error, its password hidden.
    assert_eq!(r.retries.retried, 1);
    assert_eq!(r.retries.extra_attempts, 2);
    assert_eq!(r.retries.listed.len(), 1);
    let error = r.retries.listed[0].last_error.as_deref().unwrap();
    assert!(
        !error.contains("secret") && error.contains("u:***@h"),
        "{error}"
    );
    // No times recorded: nothing over time.
    assert_eq!(r.axis, None);
    assert!(r.throughput.is_empty());
}

#[test]
fn a_live_run_is_running_and_a_finished_one_done() {
    let c = checkpoint(vec![record(0, ChunkState::Done, 10, 1.0)]);
    assert_eq!(build(inputs(&c)).state, "done");
    let mut i = inputs(&c);
    i.live = true;
    assert_eq!(build(i).state, "running");
    let c = checkpoint(vec![
        record(0, ChunkState::Done, 10, 1.0),
        record(1, ChunkState::Pending, 0, 0.0),
    ]);
    assert_eq!(build(inputs(&c)).state, "not done");
}

#[test]
fn rejects_are_counted_by_reason_most_first() {
    let c = checkpoint(vec![
        record(0, ChunkState::Done, 10, 1.0),
        record(1, ChunkState::Done, 10, 1.0),
    ]);
    let mut i = inputs(&c);
    i.rejects = BTreeMap::from([
        ((0, "column a: is null".to_string()), 2),
        ((1, "column a: is null".to_string()), 3),
        ((1, "column b: above the maximum 8".to_string()), 7),
    ]);
    let r = build(i);
    let got: Vec<(&str, u64)> = r
        .rejects
        .reasons
        .iter()
        .map(|g| (g.reason.as_str(), g.count))
        .collect();
    assert_eq!(
        got,
        [
            ("column b: above the maximum 8", 7),
            ("column a: is null", 5)
        ]
    );
    assert_eq!(r.rejects.untimed, 12);
}

#[test]
fn retries_beyond_the_listed_ones_are_counted() {
    let chunks = (0..LISTED_RETRIES + 5)
        .map(|id| {
            let mut r = record(id, ChunkState::Done, 1, 0.1);
            r.attempts = 2;
            r
        })
        .collect();
    let r = build(inputs(&checkpoint(chunks)));
    assert_eq!(r.retries.listed.len(), LISTED_RETRIES);
    assert_eq!(r.retries.more, 5);
    assert_eq!(r.retries.retried, LISTED_RETRIES + 5);
}

#[test]
fn throughput_is_rows_per_second_per_worker_over_round_buckets() {
    let t0 = 1_765_000_000_000;
    let c = checkpoint(vec![
        // Worker a: 1000 rows over the first 10 s, then 500 over the next 10 s.
        timed(0, "h1:10", 1000, t0, t0 + 10_000, 0.5),
        timed(1, "h1:10", 500, t0 + 10_000, t0 + 20_000, 1.5),
        // Worker b: 3000 rows from 30 s to 60 s.
        timed(2, "h2:20", 3000, t0 + 30_000, t0 + 60_000, 2.0),
    ]);
    let r = build(inputs(&c));
    let axis = r.axis.unwrap();
    assert_eq!(
        (axis.start_ms, axis.bucket_ms, axis.buckets),
        (t0, 1000, 60)
    );
    let names: Vec<&str> = r.throughput.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["h1:10", "h2:20"]);
    let a = &r.throughput[0].values;
    assert_eq!(
        (a[0], a[9], a[10], a[19], a[20]),
        (100.0, 100.0, 50.0, 50.0, 0.0)
    );
    let b = &r.throughput[1].values;
    assert_eq!((b[29], b[30], b[59]), (0.0, 100.0, 100.0));
    // The slowest chunk names its worker; read-back's cost is a share of chunk time.
    assert_eq!(r.slowest[0].id, 2);
    assert_eq!(r.slowest[0].worker.as_deref(), Some("h2:20"));
    assert_eq!(r.readback.seconds, 4.0);
    assert_eq!(r.readback.chunk_seconds, 50.0);
    assert_eq!(r.readback.share, 0.08);
    assert_eq!(r.readback.max_seconds, 2.0);
}

#[test]
fn rejects_over_time_count_when_their_chunk_was_done() {
    let t0 = 1_765_000_000_000;
    let mut c = checkpoint(vec![
        timed(0, "h:1", 100, t0, t0 + 1_000, 0.0),
        timed(1, "h:1", 100, t0 + 1_000, t0 + 59_000, 0.0),
        record(2, ChunkState::Done, 100, 1.0),
    ]);
    c.chunks[2].worker = None;
    let mut i = inputs(&c);
    i.rejects = BTreeMap::from([
        ((0, "r1".to_string()), 2),
        ((1, "r1".to_string()), 3),
        ((1, "r2".to_string()), 4),
        // Chunk 2 has no times: counted in the totals, not over time.
        ((2, "r2".to_string()), 6),
    ]);
    let r = build(i);
    let axis = r.axis.unwrap();
    assert_eq!(axis.buckets, 59);
    let by_name: BTreeMap<&str, &Vec<f64>> = r
        .rejects
        .over_time
        .iter()
        .map(|s| (s.name.as_str(), &s.values))
        .collect();
    assert_eq!(by_name["r1"][1], 2.0);
    assert_eq!(by_name["r1"][58], 3.0);
    assert_eq!(by_name["r2"][58], 4.0);
    assert_eq!(r.rejects.untimed, 6);
    // Most rows first, in the totals and in the series.
    assert_eq!(r.rejects.reasons[0].reason, "r2");
    assert_eq!(r.rejects.over_time[0].name, "r2");
}

#[test]
fn fold_rest_keeps_the_largest_series_and_adds_up_the_others() {
    let s = |name: &str, v: f64| Series {
        name: name.into(),
        values: vec![v, v],
    };
    let out = fold_rest(vec![s("a", 1.0), s("b", 5.0), s("c", 3.0)], 2, "rest");
    let names: Vec<&str> = out.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["b", "c", "rest"]);
    assert_eq!(out[2].values, vec![1.0, 1.0]);
}

#[test]
fn ten_thousand_chunks_of_fourteen_workers_give_a_page_under_200_kilobytes() {
    let t0 = 1_765_000_000_000;
    let chunks: Vec<ChunkRecord> = (0..10_000)
        .map(|id| {
            let from = t0 + id as i64 * 360;
            let mut r = timed(id, &format!("h{}:1", id % 14), 1000, from, from + 700, 0.01);
            r.attempts = 1 + (id % 97 == 0) as u32;
            r
        })
        .collect();
    let c = checkpoint(chunks);
    let mut i = inputs(&c);
    i.rejects = (0..10_000)
        .map(|id| ((id, format!("reason {}", id % 11)), 3))
        .collect();
    let r = build(i);
    let axis = r.axis.unwrap();
    assert!(axis.buckets <= TIME_BUCKETS as usize);
    // 14 workers: the 12 with the most rows apart, the others together.
    assert_eq!(r.throughput.len(), WORKERS_DRAWN + 1);
    assert_eq!(r.throughput.last().unwrap().name, "other workers");
    assert_eq!(r.rejects.over_time.len(), REASONS_DRAWN + 1);
    assert!(r.durations.counts.len() <= MAX_BINS);
    assert_eq!(r.durations.counts.iter().sum::<u64>(), 10_000);
    assert_eq!(r.slowest.len(), SLOWEST);
    assert_eq!(r.retries.retried, 104);
    assert_eq!(r.retries.listed.len() + r.retries.more, 104);
    let page = render(&r).unwrap();
    assert!(page.len() < 200_000, "{} bytes", page.len());
}
