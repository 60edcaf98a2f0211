//! CSV input that is not plain: quotes that never close or break RFC 4180, empty strings
//! against NULL, bytes that are not UTF-8, and the options real exports need. Nothing of
//! such a file may be lost or changed without a word: every record is a row or is in
//! the quarantine with its exact bytes and its reason.

use super::common::{Workspace, sqlite_rows};
use super::invalid_pipeline;

/// The quarantine of a CSV-target run of `samples/invalid/{file}`.
fn quarantine(ws: &Workspace, file: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(ws.path(&format!("out/invalid_{file}/_rejects/part-00000.ndjson")))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn written(ws: &Workspace, file: &str) -> String {
    std::fs::read_to_string(ws.path(&format!("out/invalid_{file}/part-00000.csv"))).unwrap()
}

/// A pipeline over `csv` (written to `samples/{name}.csv`): `id|name`, no header, into a
/// SQLite table `t`, with `extra` added to `[source.csv]`.
fn pipe_pipeline(ws: &Workspace, name: &str, csv: &[u8], extra: &str) -> String {
    csv_pipeline(
        ws,
        name,
        csv,
        &format!("header = false\ndelimiter = \"|\"\ncolumns = [\"id\", \"name\"]\n{extra}"),
    )
}

/// A pipeline over `csv` with columns `id` and `name`, `[source.csv]` holding `options`.
fn csv_pipeline(ws: &Workspace, name: &str, csv: &[u8], options: &str) -> String {
    std::fs::write(ws.path(&format!("samples/{name}.csv")), csv).unwrap();
    std::fs::create_dir_all(ws.path("out")).unwrap();
    ws.write(
        &format!("pipelines/{name}.toml"),
        &format!(
            r#"name = "{name}"
[source]
url = "../samples/{name}.csv"
key = "id"
[source.csv]
{options}
[target]
url = "sqlite://../out/{name}.db"
table = "t"
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
name = {{ type = "text", expr = "name" }}
"#
        ),
    )
}

fn count(ws: &Workspace, name: &str, sql: &str) -> String {
    sqlite_rows(&ws.path(&format!("out/{name}.db")), sql)[0][0].clone()
}

/// Issue 30's reproducer: 1,000 lines `N|nameN`, line 10 `10|"opening quote`.
fn stray_quote_file(lines: u64, stray: &[(u64, &str)]) -> Vec<u8> {
    let mut text = String::new();
    for n in 1..=lines {
        match stray.iter().find(|(at, _)| *at == n) {
            Some((_, line)) => text.push_str(line),
            None => text.push_str(&format!("{n}|name{n}")),
        }
        text.push('\n');
    }
    text.into_bytes()
}

#[test]
fn an_unclosed_quote_is_quarantined_and_the_rest_of_the_file_is_read() {
    let ws = Workspace::new();
    let csv = stray_quote_file(1000, &[(10, "10|\"opening quote")]);
    // The quote runs from its byte on line 10 to the end of the file.
    let quote_at = csv.windows(2).position(|w| w == b"|\"").unwrap() + 1;
    let covered = csv.len() - quote_at;
    for chunk_rows in ["7", "100000"] {
        let p = pipe_pipeline(&ws, "unclosed", &csv, "");
        let out = ws.rowshift(&["run", &p, "--quiet", "--chunk-rows", chunk_rows]);
        assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
        assert!(
            out.stdout
                .contains("1000 read, 999 written, 0 filtered, 1 rejected"),
            "{}",
            out.stdout
        );
        assert_eq!(count(&ws, "unclosed", "SELECT count(*) FROM t"), "999");
        assert_eq!(
            count(&ws, "unclosed", "SELECT max(length(name)) FROM t"),
            "8"
        );
        let rejects = sqlite_rows(
            &ws.path("out/unclosed.db"),
            "SELECT location, reason, json_extract(source_row, '$._unreadable') FROM t_rejects",
        );
        assert_eq!(
            rejects,
            [[
                "samples/unclosed.csv line 10".to_string(),
                format!(
                    "unterminated quoted field opened at line 10: the input ends inside it, {covered} bytes later; line 10 is set aside and reading resumes at line 11"
                ),
                "10|\"opening quote".to_string(),
            ]]
        );
        // `verify` compares what was written, and the quarantine says the rest.
        let verify = ws.rowshift(&["verify", &p]);
        assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
        std::fs::remove_dir_all(ws.path("out")).unwrap();
        let _ = std::fs::remove_dir_all(ws.path("pipelines/.rowshift"));
    }
}

#[test]
fn a_stray_quote_closed_far_below_cannot_swallow_more_than_max_record_bytes() {
    let ws = Workspace::new();
    // RFC 4180 reads lines 10-500 as one record of two fields: the quote opened on line
    // 10 closes on line 500. max_record_bytes sets line 10 aside instead, and line 500,
    // read on its own, has a quote inside an unquoted field.
    let csv = stray_quote_file(1000, &[(10, "10|\"x"), (500, "500|y\"")]);
    let p = pipe_pipeline(&ws, "bounded", &csv, "max_record_bytes = 1000");
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(count(&ws, "bounded", "SELECT count(*) FROM t"), "998");
    let rejects = sqlite_rows(
        &ws.path("out/bounded.db"),
        "SELECT location, reason FROM t_rejects ORDER BY id",
    );
    assert_eq!(rejects.len(), 2, "{rejects:?}");
    assert_eq!(rejects[0][0], "samples/bounded.csv line 10");
    assert_eq!(
        rejects[0][1],
        "record longer than max_record_bytes = 1000 (from a quote opened at line 10); line 10 is set aside and reading resumes at line 11"
    );
    assert_eq!(rejects[1][0], "samples/bounded.csv line 500");
    assert!(
        rejects[1][1]
            .starts_with("malformed quoting at line 500: field 2 is not quoted but holds a quote"),
        "{}",
        rejects[1][1]
    );
}

#[test]
fn malformed_quoting_is_quarantined_with_its_reason() {
    let ws = Workspace::new();
    for (file, reason) in [
        (
            "text_after_quote.csv",
            "malformed quoting at line 3: field 2 has text after its closing quote (`by`); a quote inside a field must be doubled and the whole field quoted (RFC 4180; quoting = \"lenient\" keeps such text)",
        ),
        (
            "blank_before_quote.csv",
            "malformed quoting at line 3: field 2 has blanks before its opening quote (RFC 4180; quoting = \"lenient\" keeps such text)",
        ),
        (
            "quote_in_unquoted.csv",
            "malformed quoting at line 3: field 2 is not quoted but holds a quote (`Bo\"b,20,1985-06-15`); a field with a quote must be quoted and the quote doubled (RFC 4180; quoting = \"lenient\" keeps such text)",
        ),
    ] {
        let p = invalid_pipeline(&ws, file, "bigint");
        let out = ws.rowshift(&["run", &p, "--quiet"]);
        assert_eq!(out.code, 1, "{file}: {}{}", out.stdout, out.stderr);
        assert_eq!(
            written(&ws, file),
            "id,name,amount,born_on\n1,Alice,10,1990-01-01\n3,Carol,30,1979-12-31\n",
            "{file}"
        );
        let q = quarantine(&ws, file);
        assert_eq!(q.len(), 1, "{file}: {q:?}");
        assert_eq!(q[0]["reason"], reason, "{file}");
        assert_eq!(
            q[0]["location"],
            format!("samples/invalid/{file} line 3"),
            "{file}"
        );
    }
    // Lenient quoting is asked for, and then keeps the text as it was read.
    let p = invalid_pipeline(&ws, "text_after_quote.csv", "bigint");
    let text = std::fs::read_to_string(ws.path(&p))
        .unwrap()
        .replace("[target]", "[source.csv]\nquoting = \"lenient\"\n[target]");
    std::fs::write(ws.path(&p), text).unwrap();
    std::fs::remove_dir_all(ws.path("out/invalid_text_after_quote.csv")).unwrap();
    let _ = std::fs::remove_dir_all(ws.path("pipelines/.rowshift"));
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        written(&ws, "text_after_quote.csv").contains("\n2,Bobby,20,1985-06-15\n"),
        "{}",
        written(&ws, "text_after_quote.csv")
    );
}

#[test]
fn a_quoted_empty_field_is_an_empty_string_and_an_empty_one_is_null() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path("out")).unwrap();
    // A SQLite target keeps the empty string apart from NULL.
    let p = ws.write(
        "pipelines/quoted_empty.toml",
        r#"name = "quoted_empty"
[source]
url = "../samples/invalid/quoted_empty.csv"
key = "id"
[target]
url = "sqlite://../out/quoted_empty.db"
table = "t"
[target.columns]
id = { type = "bigint", expr = "id", primary_key = true }
name = { type = "varchar(255)", expr = "name", nullable = false }
"#,
    );
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        sqlite_rows(
            &ws.path("out/quoted_empty.db"),
            "SELECT id, name, typeof(name) FROM t ORDER BY id"
        ),
        [["1", "Alice", "text"], ["2", "", "text"]]
    );
    assert_eq!(
        sqlite_rows(
            &ws.path("out/quoted_empty.db"),
            "SELECT row_key, column_name, reason FROM t_rejects"
        ),
        [[
            "3",
            "name",
            "is NULL, but the column is declared nullable = false (varchar(255))"
        ]]
    );
}

#[test]
fn null_markers_match_unquoted_fields_unless_null_quoted() {
    let ws = Workspace::new();
    let csv = b"1|NA\n2|\"NA\"\n3|\n4|\"\"\n";
    for (extra, expected) in [
        (
            "null = [\"NA\", \"\"]",
            [["1", "NULL"], ["2", "NA"], ["3", "NULL"], ["4", ""]],
        ),
        (
            "null = [\"NA\", \"\"]\nnull_quoted = true",
            [["1", "NULL"], ["2", "NULL"], ["3", "NULL"], ["4", "NULL"]],
        ),
        (
            "[source.csv.null_columns]\nname = [\"NA\"]",
            [["1", "NULL"], ["2", "NA"], ["3", ""], ["4", ""]],
        ),
    ] {
        let p = pipe_pipeline(&ws, "markers", csv, extra);
        let out = ws.rowshift(&["run", &p, "--quiet"]);
        assert_eq!(out.code, 0, "{extra}: {}{}", out.stdout, out.stderr);
        let rows = sqlite_rows(
            &ws.path("out/markers.db"),
            "SELECT id, name FROM t ORDER BY id",
        );
        assert_eq!(
            rows,
            expected.map(|r| r.map(String::from).to_vec()),
            "{extra}"
        );
        std::fs::remove_dir_all(ws.path("out")).unwrap();
        let _ = std::fs::remove_dir_all(ws.path("pipelines/.rowshift"));
    }
}

#[test]
fn bytes_that_are_not_utf8_are_quarantined_exactly_and_read_with_their_encoding() {
    let ws = Workspace::new();
    let file = "latin1.csv";
    let p = invalid_pipeline(&ws, file, "bigint");
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let q = quarantine(&ws, file);
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0]["reason"], "is not valid UTF-8 text");
    let raw = b"2,JOURDAIN h\xe9h\xe9\xb6,20,1985-06-15";
    let stored = rowshift::check::quarantine::base64_decode(
        q[0]["row"]["_unreadable_base64"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(stored, raw);
    assert_eq!(
        q[0]["row"]["_unreadable"],
        String::from_utf8_lossy(raw).as_ref()
    );
    // Read as Latin-1, the same bytes are the text they stand for.
    let text = std::fs::read_to_string(ws.path(&p))
        .unwrap()
        .replace("[target]", "[source.csv]\nencoding = \"latin1\"\n[target]");
    std::fs::write(ws.path(&p), text).unwrap();
    std::fs::remove_dir_all(ws.path(&format!("out/invalid_{file}"))).unwrap();
    let _ = std::fs::remove_dir_all(ws.path("pipelines/.rowshift"));
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        written(&ws, file).contains("\n2,JOURDAIN héhé¶,20,1985-06-15\n"),
        "{}",
        written(&ws, file)
    );
}

#[test]
fn windows_1252_decodes_exactly_and_quarantines_undefined_bytes() {
    let ws = Workspace::new();
    let csv = b"1|\x80 \x93q\x94\n2|a\x81b\n3|ok\n";
    let p = pipe_pipeline(&ws, "cp1252", csv, "encoding = \"windows-1252\"");
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        sqlite_rows(
            &ws.path("out/cp1252.db"),
            "SELECT id, name FROM t ORDER BY id"
        ),
        [["1", "€ \u{201c}q\u{201d}"], ["3", "ok"]]
    );
    assert_eq!(
        sqlite_rows(
            &ws.path("out/cp1252.db"),
            "SELECT location, column_name, reason, json_extract(source_row, '$._unreadable_base64') FROM t_rejects"
        ),
        [[
            "samples/cp1252.csv line 2",
            "name",
            "is not windows-1252 text: byte 0x81 at offset 1 has no character",
            "MnxhgWI="
        ]]
    );
}

#[test]
fn skip_lines_trim_no_quoting_and_a_multi_byte_delimiter() {
    let ws = Workspace::new();
    let csv =
        b"exported 2024-01-01\n(c) someone\nid ~| name\n 1 ~| \"a ~| b\" \n2~|  say \"hi\"  \n";
    let p = csv_pipeline(
        &ws,
        "options",
        csv,
        "skip_lines = 2\ntrim = true\ndelimiter = \"~|\"",
    );
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    // ` say "hi" `: a quote inside an unquoted field is malformed under strict quoting.
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        sqlite_rows(
            &ws.path("out/options.db"),
            "SELECT id, name FROM t ORDER BY id"
        ),
        [["1", "a ~| b"]]
    );
    assert_eq!(
        count(&ws, "options", "SELECT location FROM t_rejects"),
        "samples/options.csv line 5"
    );
    // Without quoting, quotes are text.
    let text = std::fs::read_to_string(ws.path(&p))
        .unwrap()
        .replace("trim = true", "trim = true\nquote = \"\"");
    std::fs::write(ws.path(&p), text).unwrap();
    std::fs::remove_dir_all(ws.path("out")).unwrap();
    std::fs::create_dir_all(ws.path("out")).unwrap();
    let _ = std::fs::remove_dir_all(ws.path("pipelines/.rowshift"));
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        sqlite_rows(
            &ws.path("out/options.db"),
            "SELECT id, name FROM t ORDER BY id"
        ),
        [["2", "say \"hi\""]]
    );
    // Line 4 now has three fields: `"a`, `b"` split at the delimiter inside them.
    assert_eq!(
        sqlite_rows(
            &ws.path("out/options.db"),
            "SELECT location, reason FROM t_rejects"
        ),
        [["samples/options.csv line 4", "expected 2 fields, found 3"]]
    );
}

#[test]
fn init_reads_the_whole_csv_so_markers_outliers_and_zoned_timestamps_run_as_written() {
    let ws = Workspace::new();
    // Past the old 1,000-row sample: an `NA`, a float with more digits before the point,
    // and timestamps with zones throughout.
    let mut csv = String::from("id,n,x,at\n");
    for i in 1..=1500 {
        let n = if i == 1200 {
            "NA".to_string()
        } else {
            (i * 3).to_string()
        };
        let x = if i == 1400 {
            "1048.36"
        } else {
            "10.357019999999999"
        };
        let at = if i % 2 == 0 {
            "2024-01-01T10:00:00Z"
        } else {
            "2024-01-01 10:00:00+02:00"
        };
        csv.push_str(&format!("{i},{n},{x},{at}\n"));
    }
    std::fs::write(ws.path("samples/late.csv"), &csv).unwrap();
    let out = ws.rowshift(&[
        "init",
        "--from",
        "samples/late.csv",
        "--output",
        "pipelines/late.toml",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(ws.path("pipelines/late.toml")).unwrap();
    assert!(
        text.contains("[source.csv.null_columns]\nn = [\"\", \"NA\"]\n"),
        "{text}"
    );
    assert!(
        text.contains("n = { type = \"bigint\", expr = \"n\" }"),
        "{text}"
    );
    assert!(
        text.contains("at = { type = \"timestamptz\", expr = \"at\" }"),
        "{text}"
    );
    let validate = ws.rowshift(&["validate", "pipelines/late.toml"]);
    assert_eq!(validate.code, 0, "{}{}", validate.stdout, validate.stderr);
    let run = ws.rowshift(&["run", "pipelines/late.toml", "--quiet"]);
    assert_eq!(run.code, 0, "{text}\n{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("1500 read, 1500 written, 0 filtered, 0 rejected"),
        "{}",
        run.stdout
    );
}

/// A pipeline over `csv` (`id,d`, with a header) into SQLite table `t`, whose column `d`
/// is `column` (the inside of its `{ ... }`).
fn dated_pipeline(ws: &Workspace, name: &str, csv: &str, column: &str) -> String {
    std::fs::write(ws.path(&format!("samples/{name}.csv")), csv).unwrap();
    std::fs::create_dir_all(ws.path("out")).unwrap();
    ws.write(
        &format!("pipelines/{name}.toml"),
        &format!(
            r#"name = "{name}"
[source]
url = "../samples/{name}.csv"
key = "id"
[target]
url = "sqlite://../out/{name}.db"
table = "t"
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
d = {{ {column} }}
"#
        ),
    )
}

#[test]
fn a_column_format_reads_dates_whole_with_four_digit_years_or_rejects_the_row() {
    let ws = Workspace::new();
    let csv = "id,d\n1,03/02/2024\n2,10/7/6\n3,2024-02-03\n4,01/02/2024 x\n5,\n6,31/02/2024\n";
    let p = dated_pipeline(
        &ws,
        "dmy",
        csv,
        r#"type = "date", expr = "d", format = "%d/%m/%Y""#,
    );
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        sqlite_rows(&ws.path("out/dmy.db"), "SELECT id, d FROM t ORDER BY id"),
        [["1", "2024-02-03"], ["5", "NULL"]]
    );
    assert_eq!(
        sqlite_rows(
            &ws.path("out/dmy.db"),
            "SELECT row_key, column_name, value, reason FROM t_rejects ORDER BY row_key"
        ),
        [
            [
                "2",
                "d",
                "10/7/6",
                "value does not match format `%d/%m/%Y`: its year `6` has 1 digit, and a year is read only when written with 4, never completed by a guess"
            ],
            [
                "3",
                "d",
                "2024-02-03",
                "value does not match format `%d/%m/%Y` at `24-02-03` (input contains invalid characters)"
            ],
            [
                "4",
                "d",
                "01/02/2024 x",
                "value does not match format `%d/%m/%Y`: ` x` is left unread after it"
            ],
            [
                "6",
                "d",
                "31/02/2024",
                "value does not match format `%d/%m/%Y`: it gives no valid date (input is out of range)"
            ],
        ]
    );
}

#[test]
fn a_timestamptz_column_format_reads_wall_clock_times_in_its_zone() {
    let ws = Workspace::new();
    let csv = "id,d\n1,03/02/2024 10:30\n2,03/02/2024\n";
    let p = dated_pipeline(
        &ws,
        "dmyhm",
        csv,
        r#"type = "timestamptz", expr = "d", format = "%d/%m/%Y %H:%M", timezone = "+02:00""#,
    );
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let rows = sqlite_rows(&ws.path("out/dmyhm.db"), "SELECT id, d FROM t ORDER BY id");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][0], "1");
    assert!(
        rows[0][1].starts_with("2024-02-03 08:30:00")
            || rows[0][1].starts_with("2024-02-03T08:30:00"),
        "{rows:?}"
    );
    assert_eq!(
        sqlite_rows(
            &ws.path("out/dmyhm.db"),
            "SELECT row_key, reason FROM t_rejects"
        ),
        [[
            "2",
            "value does not match format `%d/%m/%Y %H:%M`: the text ends before the format does (premature end of input)"
        ]]
    );
}

#[test]
fn to_date_reads_its_formats_strictly_and_tries_the_next_one() {
    let ws = Workspace::new();
    // `%Y/%m/%d` first: DataFusion read `10/7/6` by it as the year 10, and `6/7/2010` never
    // reached the second format.
    let csv = "id,d\n1,2010/07/06\n2,6/7/2010\n3,10/7/6\n";
    let p = dated_pipeline(
        &ws,
        "todate",
        csv,
        r#"type = "date", expr = "to_date(d, '%Y/%m/%d', '%d/%m/%Y')""#,
    );
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        sqlite_rows(&ws.path("out/todate.db"), "SELECT id, d FROM t ORDER BY id"),
        [["1", "2010-07-06"], ["2", "2010-07-06"]]
    );
    assert_eq!(
        sqlite_rows(
            &ws.path("out/todate.db"),
            "SELECT row_key, value, reason FROM t_rejects"
        ),
        [[
            "3",
            "d=10/7/6",
            "to_date('10/7/6'): '10/7/6' does not match format `%Y/%m/%d`: its year `10` has 2 digits, and a year is read only when written with 4, never completed by a guess; it does not match format `%d/%m/%Y`: its year `6` has 1 digit, and a year is read only when written with 4, never completed by a guess"
        ]]
    );
}

#[test]
fn a_column_format_with_a_two_digit_year_or_on_a_text_column_is_refused_at_its_line() {
    let ws = Workspace::new();
    let p = dated_pipeline(
        &ws,
        "yy",
        "id,d\n1,03/02/24\n",
        r#"type = "date", expr = "d", format = "%d/%m/%y""#,
    );
    let out = ws.rowshift(&["validate", &p]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("format `%d/%m/%y` reads a two-digit year (%y or %D), whose century would be a guess; write the year with %Y"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("pipelines/yy.toml:10:43: format"),
        "{}",
        out.stderr
    );
    let p = dated_pipeline(
        &ws,
        "fmt_text",
        "id,d\n1,x\n",
        r#"type = "text", expr = "d", format = "%Y""#,
    );
    let out = ws.rowshift(&["validate", &p]);
    assert!(
        out.stderr.contains(
            "`format` applies to date, timestamp and timestamptz columns only; this one is text"
        ),
        "{}",
        out.stderr
    );
    let p = dated_pipeline(
        &ws,
        "fmt_noday",
        "id,d\n1,x\n",
        r#"type = "date", expr = "d", format = "%Y-%m""#,
    );
    let out = ws.rowshift(&["validate", &p]);
    assert!(
        out.stderr
            .contains("format `%Y-%m` does not read a whole date"),
        "{}",
        out.stderr
    );
}

#[test]
fn retry_rejects_reads_set_aside_lines_again_under_a_fixed_encoding_and_quoting() {
    let ws = Workspace::new();
    let csv: &[u8] = b"1|ann\n2|h\xe9l\xe8ne\n3|\"ab\"cd\n4|x|y\n5|bob\n";
    let p = pipe_pipeline(&ws, "reread", csv, "");
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let db = ws.path("out/reread.db");
    assert_eq!(
        sqlite_rows(&db, "SELECT id, name FROM t ORDER BY id"),
        [["1", "ann"], ["5", "bob"]]
    );
    assert_eq!(count(&ws, "reread", "SELECT count(*) FROM t_rejects"), "3");

    // The cause is fixed in the pipeline: the file is Latin-1 and its quoting is loose.
    let text = std::fs::read_to_string(ws.path(&p)).unwrap().replace(
        "[target]",
        "encoding = \"latin1\"\nquoting = \"lenient\"\n[target]",
    );
    std::fs::write(ws.path(&p), text).unwrap();
    let retry = ws.rowshift(&["retry", &p, "--rejects"]);
    assert_eq!(retry.code, 1, "{}{}", retry.stdout, retry.stderr);
    assert!(retry.stdout.contains("written  2"), "{}", retry.stdout);
    assert_eq!(
        sqlite_rows(&db, "SELECT id, name FROM t ORDER BY id"),
        [["1", "ann"], ["2", "hélène"], ["3", "abcd"], ["5", "bob"]]
    );
    // The line with a field too many stays, with its reason under the new options.
    assert_eq!(
        sqlite_rows(
            &db,
            "SELECT location, reason, json_extract(source_row, '$._unreadable') FROM t_rejects"
        ),
        [[
            "samples/reread.csv line 4",
            "expected 2 fields, found 3",
            "4|x|y"
        ]]
    );
    let again = ws.rowshift(&["run", &p]);
    assert_eq!(again.code, 1, "{}{}", again.stdout, again.stderr);
    assert!(
        again
            .stdout
            .contains("4 rows written, 1 rows in the quarantine"),
        "{}",
        again.stdout
    );
    let verify = ws.rowshift(&["verify", &p]);
    assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
}

#[test]
fn retry_rejects_refuses_a_delimiter_change_that_would_move_the_fields_already_written() {
    let ws = Workspace::new();
    let p = pipe_pipeline(&ws, "redelim", b"1|ann\n2|x|y\n", "");
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let text = std::fs::read_to_string(ws.path(&p))
        .unwrap()
        .replace("delimiter = \"|\"", "delimiter = \",\"");
    std::fs::write(ws.path(&p), text).unwrap();
    let retry = ws.rowshift(&["retry", &p, "--rejects"]);
    assert_eq!(retry.code, 2, "{}{}", retry.stdout, retry.stderr);
    assert!(
        retry
            .stderr
            .contains("[source.csv] changed since the run of")
            && retry.stderr.contains(
                "only quoting = \"lenient\" and encoding may be set for `retry --rejects`"
            ),
        "{}",
        retry.stderr
    );
    assert_eq!(
        sqlite_rows(
            &ws.path("out/redelim.db"),
            "SELECT location, reason FROM t_rejects"
        ),
        [["samples/redelim.csv line 2", "expected 2 fields, found 3"]]
    );
}

#[test]
fn verify_reports_a_row_written_under_utf8_that_an_accepted_latin1_reads_differently() {
    let ws = Workspace::new();
    let p = pipe_pipeline(&ws, "utf8then", b"1|caf\xc3\xa9\n2|h\xe9\n", "");
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let text = std::fs::read_to_string(ws.path(&p))
        .unwrap()
        .replace("[target]", "encoding = \"latin1\"\n[target]");
    std::fs::write(ws.path(&p), text).unwrap();
    let retry = ws.rowshift(&["retry", &p, "--rejects"]);
    assert_eq!(retry.code, 0, "{}{}", retry.stdout, retry.stderr);
    assert!(
        retry
            .stdout
            .contains("accepted source.csv.encoding: latin1 was added"),
        "{}",
        retry.stdout
    );
    assert_eq!(
        sqlite_rows(
            &ws.path("out/utf8then.db"),
            "SELECT id, name FROM t ORDER BY id"
        ),
        [["1", "café"], ["2", "hé"]]
    );
    let verify = ws.rowshift(&["verify", &p]);
    assert_eq!(verify.code, 1, "{}{}", verify.stdout, verify.stderr);
    assert!(
        verify
            .stdout
            .contains("first difference: id=1, column name: sent 'cafÃ©', the target holds 'café'"),
        "{}",
        verify.stdout
    );
}

#[test]
fn to_timestamp_refuses_a_short_year_and_text_left_unread() {
    let ws = Workspace::new();
    let csv = "id,d\n1,06/07/2010 10:30\n2,10/7/6 10:30\n3,06/07/2010 10:30:15\n";
    let p = dated_pipeline(
        &ws,
        "tots",
        csv,
        r#"type = "timestamp", expr = "to_timestamp(d, '%d/%m/%Y %H:%M')""#,
    );
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        sqlite_rows(&ws.path("out/tots.db"), "SELECT id, d FROM t ORDER BY id"),
        [["1", "2010-07-06 10:30:00"]]
    );
    assert_eq!(
        sqlite_rows(
            &ws.path("out/tots.db"),
            "SELECT row_key, reason FROM t_rejects ORDER BY row_key"
        ),
        [
            [
                "2",
                "to_timestamp('10/7/6 10:30'): '10/7/6 10:30' does not match format `%d/%m/%Y %H:%M`: its year `6` has 1 digit, and a year is read only when written with 4, never completed by a guess"
            ],
            [
                "3",
                "to_timestamp('06/07/2010 10:30:15'): '06/07/2010 10:30:15' does not match format `%d/%m/%Y %H:%M`: `:15` is left unread after it"
            ]
        ]
    );
}

/// A CSV target writes an empty string as `""` and NULL as an empty unquoted field, and
/// quotes what holds the delimiter, a quote or a line end; its read-back reads the part
/// with the CSV source's rules, and a CSV source reads the same values from it.
#[test]
fn a_csv_target_keeps_empty_strings_apart_from_null_and_reads_them_back() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path("out")).unwrap();
    ws.write(
        "samples/texts.csv",
        "id,v\n1,\"\"\n2,\n3,\"he said \"\"hi\"\"\"\n4,\"a,b\"\n5,\"two\nlines\"\n6,plain\n",
    );
    let p = ws.write(
        "pipelines/texts.toml",
        r#"name = "texts"
[source]
url = "../samples/texts.csv"
key = "id"
[target]
url = "../out/texts"
format = "csv"
[target.columns]
id = { type = "bigint", expr = "id" }
v = { type = "text", expr = "v" }
empty = { type = "text", expr = "CASE WHEN id = 2 THEN '' ELSE NULL END" }
"#,
    );
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        std::fs::read_to_string(ws.path("out/texts/part-00000.csv")).unwrap(),
        "id,v,empty\n1,\"\",\n2,,\"\"\n3,\"he said \"\"hi\"\"\",\n4,\"a,b\",\n5,\"two\nlines\",\n6,plain,\n"
    );
    // Read by a CSV source again, the values are the ones sent.
    let back = ws.write(
        "pipelines/back.toml",
        r#"name = "back"
[source]
url = "../out/texts/part-00000.csv"
key = "id"
[target]
url = "sqlite://../out/back.db"
table = "t"
[target.columns]
id = { type = "bigint", expr = "id", primary_key = true }
v = { type = "text", expr = "v" }
empty = { type = "text", expr = "empty" }
"#,
    );
    let out = ws.rowshift(&["run", &back, "--quiet"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        sqlite_rows(
            &ws.path("out/back.db"),
            "SELECT id, quote(v), quote(empty) FROM t ORDER BY id"
        ),
        [
            ["1", "''", "NULL"],
            ["2", "NULL", "''"],
            ["3", "'he said \"hi\"'", "NULL"],
            ["4", "'a,b'", "NULL"],
            ["5", "'two\nlines'", "NULL"],
            ["6", "'plain'", "NULL"]
        ]
    );
}

/// A declared key that repeats within one chunk fails the chunk, naming the value and
/// both lines; one that repeats across chunks fails the later chunk's read-back naming
/// the value and both places too.
#[test]
fn a_repeated_key_of_a_file_is_named_with_both_places_within_and_across_chunks() {
    let ws = Workspace::new();
    let csv = b"id,name\n1,a\n2,b\n2,c\n3,d\n";
    let p = csv_pipeline(&ws, "rep", csv, "");
    let out = ws.rowshift(&["run", &p]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(
            "the key (id) is not unique in samples/rep.csv: id=2 at rep.csv line 3 and rep.csv line 4"
        ),
        "{}{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(count(&ws, "rep", "SELECT count(*) FROM t"), "0");
    // The same with the key read as an integer.
    let p = csv_pipeline(&ws, "rep_int", csv, "");
    let text = std::fs::read_to_string(ws.path("pipelines/rep_int.toml")).unwrap();
    ws.write(
        "pipelines/rep_int.toml",
        &text.replace(
            "[source.csv]",
            "[source.types]\nid = \"bigint\"\n[source.csv]",
        ),
    );
    let out = ws.rowshift(&["run", &p]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(
            "the key (id) is not unique in samples/rep_int.csv: id=2 at rep_int.csv line 3 and rep_int.csv line 4"
        ),
        "{}{}",
        out.stdout,
        out.stderr
    );
    // Without a primary key in the target, which would refuse the second row instead.
    let p = csv_pipeline(&ws, "rep2", csv, "");
    let text = std::fs::read_to_string(ws.path("pipelines/rep2.toml")).unwrap();
    ws.write(
        "pipelines/rep2.toml",
        &text.replace(", primary_key = true", ""),
    );
    let out = ws.rowshift(&["run", &p, "--chunk-rows", "2", "--parallel", "1"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("first difference: id=2: the target holds 2 rows with this key, 1 was sent; the key (id) is not unique in samples/rep2.csv: another chunk holds a row under the same key (id=2 at rep2.csv line 3 and rep2.csv line 4)"),
        "{}{}",
        out.stdout,
        out.stderr
    );
}
