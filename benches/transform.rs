//! The transform step alone: one 8192-row batch of the users table through the five
//! target-column expressions and the filter of the end-to-end benchmark.
//!
//! Run with `cargo bench --bench transform`. The batch is built once, in memory, so the
//! number is the cost of `Transform::apply` only (no reading, no writing).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rowshift::config::Pipeline;
use rowshift::transform::Transform;

/// Rows in the benchmarked batch: rowshift's default `batch_rows`.
const ROWS: usize = 8192;

/// The same transforms and filter as the CSV -> Parquet scenario of `benches/e2e.rs`. The
/// source file is never opened: only the expressions are compiled.
const PIPELINE: &str = r#"
name = "bench_transform"
[source]
url = "x.csv"
key = "id"
[target]
url = "out_parquet"
format = "parquet"
if_exists = "replace"
[target.columns]
id         = { type = "bigint", expr = "CAST(id AS BIGINT)", primary_key = true }
email      = { type = "text",   expr = "lower(trim(email))", nullable = false }
first_name = { type = "text",   expr = "split_part(full_name, ' ', 1)" }
last_name  = { type = "text",   expr = "split_part(full_name, ' ', 2)" }
signup_on  = { type = "date",   expr = "CAST(created_at AS DATE)" }
[filter]
where = "deleted_at IS NULL"
"#;

/// xorshift64*: deterministic, good enough to make varied test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const FIRST: &[&str] = &[
    "Anna", "José", "Zoë", "Łukasz", "Søren", "Mia", "Noah", "Émile", "Ava", "Liam", "Chloé",
    "Björn",
];
const LAST: &[&str] = &[
    "Smith", "Müller", "Núñez", "García", "O'Neil", "Kowalski", "Dubois", "Jensen", "Brown",
    "Rossi", "Çelik", "Novák",
];
const DOMAINS: &[&str] = &["Example.com", "mail.TEST", "corp.example.org", "Inbox.net"];
const COUNTRIES: &[&str] = &["US", "DE", "FR", "PL", "DK", "ES", "GB", "IT", "SE", "CZ"];
const NOTES: &[&str] = &[
    "prefers email only",
    "called twice in May",
    "VIP since launch",
    "asked for invoice",
    "no marketing please",
];

/// The users batch: `id` is Int64, every other column Utf8, as a CSV source with a
/// `[source.types] id = "bigint"` would give it. `deleted_at` is NULL for ~90% of rows.
fn users_batch(rows: usize) -> RecordBatch {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut full_name = Vec::with_capacity(rows);
    let mut email = Vec::with_capacity(rows);
    let mut created_at = Vec::with_capacity(rows);
    let mut deleted_at = Vec::with_capacity(rows);
    let mut country = Vec::with_capacity(rows);
    let mut score = Vec::with_capacity(rows);
    let mut note = Vec::with_capacity(rows);
    let timestamp = |rng: &mut Rng| {
        format!(
            "{}-{:02}-{:02} {:02}:{:02}:{:02}",
            2015 + rng.below(10),
            1 + rng.below(12),
            1 + rng.below(28),
            rng.below(24),
            rng.below(60),
            rng.below(60)
        )
    };
    for i in 0..rows {
        let (first, last) = (rng.pick(FIRST), rng.pick(LAST));
        full_name.push(Some(format!("{first} {last}")));
        let pad = if rng.below(20) == 0 { "  " } else { "" };
        email.push(Some(format!(
            "{pad}{}.{}{}@{}{pad}",
            first.to_uppercase(),
            last.to_lowercase(),
            i % 100,
            rng.pick(DOMAINS)
        )));
        created_at.push(Some(timestamp(&mut rng)));
        deleted_at.push((rng.below(10) == 0).then(|| timestamp(&mut rng)));
        country.push(Some(rng.pick(COUNTRIES).to_string()));
        score.push(Some(format!("{}.{:02}", rng.below(1000), rng.below(100))));
        note.push(Some(rng.pick(NOTES).to_string()));
    }
    let text = |v: Vec<Option<String>>| Arc::new(StringArray::from(v)) as ArrayRef;
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("full_name", DataType::Utf8, true),
        Field::new("email", DataType::Utf8, true),
        Field::new("created_at", DataType::Utf8, true),
        Field::new("deleted_at", DataType::Utf8, true),
        Field::new("country", DataType::Utf8, true),
        Field::new("score", DataType::Utf8, true),
        Field::new("note", DataType::Utf8, true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from_iter_values(1..=rows as i64)),
            text(full_name),
            text(email),
            text(created_at),
            text(deleted_at),
            text(country),
            text(score),
            text(note),
        ],
    )
    .expect("the batch matches its schema")
}

fn bench_apply(c: &mut Criterion) {
    let batch = users_batch(ROWS);
    let pipeline = Pipeline::parse(Path::new("bench_transform.toml"), PIPELINE, &|_| None)
        .expect("the benchmark pipeline parses");
    let transform =
        Transform::compile(&pipeline, batch.schema()).expect("the benchmark transforms compile");

    // Sanity check once, outside the measurement: a silently rejecting transform would be
    // fast for the wrong reason.
    let out = transform.apply(&batch).expect("apply succeeds");
    assert!(
        out.rejects.is_empty(),
        "the benchmark batch should have no rejects, got {} (first: {:?})",
        out.rejects.len(),
        out.rejects.first()
    );
    assert_eq!(out.batch.num_rows() + out.filtered, ROWS);
    assert!(out.filtered > 0 && out.batch.num_rows() > 0);

    let mut group = c.benchmark_group("transform");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(20);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    group.bench_function("apply_users_8192", |b| {
        b.iter(|| transform.apply(black_box(&batch)).expect("apply succeeds"))
    });
    group.finish();
}

criterion_group!(benches, bench_apply);
criterion_main!(benches);
