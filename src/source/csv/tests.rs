//! The CSV source's planning and decoding, against the strict reference.

use super::fast::Masks;
use super::*;
use crate::config::{Location, Spanned};

fn source(file: &str) -> CsvSource {
    open_at(Path::new(env!("CARGO_MANIFEST_DIR")).join(file), file)
}

/// A CSV source with default options over `path`, named `name` in its url.
fn open_at(path: PathBuf, name: &str) -> CsvSource {
    let config = SourceConfig {
        url: Spanned {
            value: name.into(),
            span: None,
        },
        location: Location::Files {
            path: path.clone(),
            format: crate::config::FileFormat::Csv,
        },
        table: None,
        key: None,
        csv: CsvOptions::default(),
        types: Vec::new(),
        db: Default::default(),
    };
    CsvSource::open(&config, vec![path]).unwrap()
}

/// The fast plan of one file, after its header.
fn fast_plan(s: &CsvSource, path: &Path, rows: u64) -> Option<Vec<Part>> {
    let (start, line) = s.data_start(path).unwrap();
    s.fast_plan(path, start, line, rows).unwrap()
}

/// The strict plan of one file, as the fast scan reports it.
fn slow_plan(s: &CsvSource, rows: u64) -> Vec<Part> {
    let slow = CsvSource {
        fast_scan: false,
        unreadable: SetAside::default(),
        ..s.clone_plain()
    };
    slow.plan(rows)
        .unwrap()
        .into_iter()
        .map(|c| match c.range {
            ChunkRange::Bytes {
                start,
                end,
                first_line,
                ..
            } => (start, end, first_line, c.rows.unwrap()),
            _ => unreachable!(),
        })
        .collect()
}

#[test]
fn fast_plan_matches_the_strict_scan_on_quoted_newlines_and_doubled_quotes() {
    let s = source("samples/orders.csv");
    for rows in [1, 2, 3, 7, 64, 100, 499, 500, 10_000] {
        let fast = fast_plan(&s, &s.files[0], rows).expect("orders.csv is plain RFC 4180");
        assert_eq!(fast, slow_plan(&s, rows), "chunk size {rows}");
        assert_eq!(fast.iter().map(|p| p.3).sum::<u64>(), 500);
    }
}

#[test]
fn fast_plan_declines_what_it_cannot_be_sure_of() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("stray.csv", "a,b\n1,x\"y\n"),
        ("crlf.csv", "a,b\r\n1,2\r\n"),
        ("blank.csv", "a,b\n1,2\n\n3,4\n"),
        ("open.csv", "a,b\n1,\"never closed\n"),
    ] {
        let (s, path) = written(dir.path(), name, text);
        assert_eq!(fast_plan(&s, &path, 10), None, "{name}");
    }
}

#[test]
fn locating_every_row_of_a_chunk_scans_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("a,b\n");
    for i in 0..3000 {
        text.push_str(&format!("{i},x\n"));
    }
    let (s, _) = written(dir.path(), "many.csv", &text);
    let chunks = s.plan(10_000).unwrap();
    // Before the chunk is read, a first lookup scans it, once.
    for row in 0..3000u64 {
        let at = s.locate(&chunks[0], row);
        assert!(at.ends_with(&format!("many.csv line {}", row + 2)), "{at}");
    }
    assert_eq!(s.lines.scans.load(std::sync::atomic::Ordering::Relaxed), 1);
    // Read by the fast decoder, a chunk of one-line records needs no scan at all.
    let mut text = String::from("a,b\n");
    for i in 0..3000 {
        text.push_str(&format!("{i},x\n"));
    }
    text.push_str("3000,\"two\nlines\"\n3001,y\n");
    let (s, _) = written(dir.path(), "read.csv", &text);
    let chunks = s.plan(10_000).unwrap();
    let mut reader = s.read(&chunks[0], 1000).unwrap();
    reader.next().unwrap().unwrap();
    for row in 0..1000u64 {
        assert!(
            s.locate(&chunks[0], row)
                .ends_with(&format!("read.csv line {}", row + 2))
        );
    }
    assert_eq!(s.lines.scans.load(std::sync::atomic::Ordering::Relaxed), 0);
    for b in reader {
        b.unwrap();
    }
    // The last batch had a record on two lines: the rest is found in one scan.
    assert!(s.locate(&chunks[0], 3001).ends_with("read.csv line 3004"));
    assert!(s.locate(&chunks[0], 3000).ends_with("read.csv line 3002"));
    assert_eq!(s.lines.scans.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn an_unclosed_quote_sets_aside_its_line_whatever_the_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("id,name\n");
    for i in 1..=50 {
        if i == 10 {
            text.push_str("10,\"open\n");
        } else {
            text.push_str(&format!("{i},name{i}\n"));
        }
    }
    let (s, _) = written(dir.path(), "open.csv", &text);
    for rows in [1, 3, 7, 9, 10, 100] {
        let chunks = s.plan(rows).unwrap();
        assert_eq!(chunks.iter().map(|c| c.rows.unwrap()).sum::<u64>(), 50);
        let (mut ids, mut bad) = (Vec::new(), Vec::new());
        for c in &chunks {
            for b in s.read(c, 4).unwrap() {
                let b = b.unwrap();
                let col = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::StringArray>()
                    .unwrap();
                ids.extend(col.iter().map(|v| v.unwrap().parse::<u64>().unwrap()));
            }
            bad.extend(s.unreadable(c));
        }
        assert_eq!(
            ids,
            (1..=50).filter(|&i| i != 10).collect::<Vec<_>>(),
            "{rows}"
        );
        assert_eq!(bad.len(), 1, "{rows}");
        assert_eq!((bad[0].line, bad[0].raw.as_str()), (11, "10,\"open"));
        assert!(
            bad[0]
                .reason
                .starts_with("unterminated quoted field opened at line 11"),
            "{}",
            bad[0].reason
        );
    }
}

#[test]
fn each_row_carries_the_line_its_record_starts_on_whichever_decoder_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    // Line 4's record spans three lines; line 9's quote breaks RFC 4180, so the fast
    // decoder hands over to the strict one there (and the record is set aside).
    let text = "a,b\n1,x\n2,y\n3,\"p\nq\nr\"\n4,z\n5,w\nbad,x\"y\n6,v\n7,\"s\nt\"\n8,u\n";
    let (s, _) = written(dir.path(), "lines.csv", text);
    let want: Vec<(&str, i64)> = vec![
        ("1", 2),
        ("2", 3),
        ("3", 4),
        ("4", 7),
        ("5", 8),
        ("6", 10),
        ("7", 11),
        ("8", 13),
    ];
    for fast in [true, false] {
        let s = CsvSource {
            fast_scan: fast,
            ..s.clone_plain()
        };
        for (rows, batch_rows) in [(100, 1), (100, 3), (3, 2), (1, 1)] {
            let mut got = Vec::new();
            for c in s.plan(rows).unwrap() {
                for b in s.read(&c, batch_rows).unwrap() {
                    let b = b.unwrap();
                    let a = b
                        .column(0)
                        .as_any()
                        .downcast_ref::<arrow::array::StringArray>()
                        .unwrap();
                    let l = b
                        .column_by_name(POSITION_LINE)
                        .unwrap()
                        .as_any()
                        .downcast_ref::<arrow::array::Int64Array>()
                        .unwrap();
                    let f = b
                        .column_by_name(POSITION_FILE)
                        .unwrap()
                        .as_any()
                        .downcast_ref::<arrow::array::StringArray>()
                        .unwrap();
                    for r in 0..b.num_rows() {
                        assert_eq!(f.value(r), "lines.csv");
                        got.push((a.value(r).to_string(), l.value(r)));
                    }
                }
            }
            let got: Vec<(&str, i64)> = got.iter().map(|(a, l)| (a.as_str(), *l)).collect();
            assert_eq!(
                got, want,
                "fast {fast}, chunks of {rows}, batches of {batch_rows}"
            );
        }
    }
}

/// A source over `text`, written to `dir/name`.
fn written(dir: &Path, name: &str, text: &str) -> (CsvSource, PathBuf) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    (open_at(path.clone(), name), path)
}

/// A field: plain text, or quoted with commas, newlines and doubled quotes, long
/// enough that records straddle the scan's 64-byte blocks.
fn field() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        "[a-z0-9 ]{0,40}",
        "[a-z,\n]{0,70}".prop_map(|t| format!("\"{t}\"")),
        "[a-z\"\n]{0,70}".prop_map(|t| format!("\"{}\"", t.replace('"', "\"\""))),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    #[test]
    fn fast_plan_matches_the_strict_scan_on_random_files(
        records in proptest::collection::vec(proptest::collection::vec(field(), 3), 0..40),
        newline_at_end in proptest::bool::ANY,
        damage in proptest::option::of((0usize..4000, proptest::sample::select(vec!['"', '\n', '\r', 'x']))),
        rows in 1u64..6,
    ) {
        let mut text = String::from("a,b,c\n");
        let lines: Vec<String> = records.iter().map(|r| r.join(",")).collect();
        text.push_str(&lines.join("\n"));
        if newline_at_end && !lines.is_empty() {
            text.push('\n');
        }
        if let Some((at, c)) = damage {
            let at = 6 + at % (text.len() - 5);
            if text.is_char_boundary(at) {
                text.insert(at, c);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let (s, path) = written(dir.path(), "random.csv", &text);
        if let Some(fast) = fast_plan(&s, &path, rows) {
            proptest::prop_assert_eq!(fast, slow_plan(&s, rows));
        } else {
            // Only damage may make it decline: a clean file is plain RFC 4180 ...
            // unless an empty first field makes a blank line.
            proptest::prop_assert!(
                damage.is_some() || lines.iter().any(|l| l.is_empty()) || (lines.is_empty() && newline_at_end) || text.ends_with('"')
            );
        }
    }

    #[test]
    fn fast_decoder_reads_what_the_strict_decoder_reads(
        records in proptest::collection::vec(proptest::collection::vec(field(), 2..5), 1..40),
        newline_at_end in proptest::bool::ANY,
        damage in proptest::option::of((0usize..4000, proptest::sample::select(vec!["\"", "\n", "\r", ",", "\u{e9}", "\n\n"]))),
        rows in 1u64..30,
        batch_rows in 1usize..9,
    ) {
        // Mostly 3 fields a record; 2 or 4 make ragged records.
        let mut text = String::from("a,b,c\n");
        let lines: Vec<String> = records
            .iter()
            .enumerate()
            .map(|(i, r)| if i % 7 == 3 { r.join(",") } else { r[..2.min(r.len())].join(",") + "," + &r[r.len() - 1] })
            .collect();
        text.push_str(&lines.join("\n"));
        if newline_at_end {
            text.push('\n');
        }
        if let Some((at, piece)) = damage {
            let at = 6 + at % (text.len() - 5);
            if text.is_char_boundary(at) {
                text.insert_str(at, piece);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let (fast, _) = written(dir.path(), "random.csv", &text);
        let slow = CsvSource {
            fast_scan: false,
            ..fast.clone_plain()
        };
        let Ok(chunks) = slow.plan(rows) else {
            return Ok(()); // csv-core cannot plan it either
        };
        let read = |s: &CsvSource, c: &Chunk| -> Vec<std::result::Result<RecordBatch, String>> {
            s.read(c, batch_rows)
                .unwrap()
                .map(|r| r.map_err(|e| e.to_string()))
                .collect()
        };
        for c in &chunks {
            proptest::prop_assert_eq!(read(&fast, c), read(&slow, c), "{}", c);
        }
    }

    #[test]
    fn sse2_masks_match_the_scalar_ones(block in proptest::collection::vec(proptest::sample::select(b"ab,\"\n\r;".to_vec()), 64)) {
        proptest::prop_assert_eq!(Masks::of(&block, b'"', b','), Masks::scalar(&block, b'"', b','));
        proptest::prop_assert_eq!(Masks::of(&block, b'\'', b';'), Masks::scalar(&block, b'\'', b';'));
    }
}
