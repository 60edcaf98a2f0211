use std::path::Path;
use std::sync::Arc;

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::pretty::pretty_format_batches;

use super::*;

fn source_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("full_name", DataType::Utf8, true),
        Field::new("email", DataType::Utf8, true),
        Field::new("created_at", DataType::Utf8, true),
        Field::new("deleted_at", DataType::Utf8, true),
    ]))
}

fn pipeline(columns: &str, filter: Option<&str>) -> Pipeline {
    let filter = filter
        .map(|f| format!("[filter]\nwhere = \"{f}\"\n"))
        .unwrap_or_default();
    let text = format!(
        "name = \"t\"\n[source]\nurl = \"in.csv\"\n[target]\nurl = \"out\"\nformat = \"parquet\"\n[target.columns]\n{columns}\n{filter}"
    );
    Pipeline::parse(Path::new("/p/t.toml"), &text, &|_| None).unwrap()
}

/// id, full_name, email, created_at, deleted_at.
type Row<'a> = (
    i64,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
);

fn batch(rows: Vec<Row<'_>>) -> RecordBatch {
    RecordBatch::try_new(
        source_schema(),
        vec![
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.3).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.4).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

const USERS: &str = r#"id = { type = "bigint", expr = "id", primary_key = true }
email = { type = "text", expr = "lower(trim(email))", nullable = false }
first_name = { type = "text", expr = "split_part(full_name, ' ', 1)" }
last_name = { type = "text", expr = "split_part(full_name, ' ', 2)" }
signup_on = { type = "date", expr = "CAST(created_at AS DATE)" }"#;

#[test]
fn applies_the_quickstart_transforms_and_filter() {
    let t = Transform::compile(
        &pipeline(USERS, Some("deleted_at IS NULL")),
        source_schema(),
    )
    .unwrap();
    let out = t
        .apply(&batch(vec![
            (
                1,
                Some("José Álvarez"),
                Some("  Jose@Example.COM "),
                Some("2021-03-04 10:11:12"),
                None,
            ),
            (
                2,
                Some("Cher"),
                Some("cher@x.org"),
                Some("2020-01-01 00:00:00"),
                Some("2022-01-01"),
            ),
            (
                3,
                Some("李 小龙"),
                Some("LI@x.cn"),
                Some("2019-12-31 23:59:59"),
                None,
            ),
        ]))
        .unwrap();
    assert_eq!(out.filtered, 1);
    assert!(out.rejects.is_empty());
    assert_eq!(
        pretty_format_batches(&[out.batch]).unwrap().to_string(),
        "\
+----+------------------+------------+-----------+------------+
| id | email            | first_name | last_name | signup_on  |
+----+------------------+------------+-----------+------------+
| 1  | jose@example.com | José       | Álvarez   | 2021-03-04 |
| 3  | li@x.cn          | 李         | 小龙      | 2019-12-31 |
+----+------------------+------------+-----------+------------+"
    );
}

#[test]
fn a_failing_row_is_rejected_with_its_reason_and_the_rest_pass() {
    let cols = r#"id = { type = "integer", expr = "id * 1000000" }
born = { type = "date", expr = "CAST(created_at AS DATE)" }"#;
    let t = Transform::compile(&pipeline(cols, None), source_schema()).unwrap();
    let out = t
        .apply(&batch(vec![
            (1, None, None, Some("2021-03-04"), None),
            (2, None, None, Some("not a date"), None),
            (3000, None, None, Some("2021-03-05"), None),
        ]))
        .unwrap();
    assert_eq!(out.batch.num_rows(), 1);
    assert_eq!(out.rejects.len(), 2);
    assert_eq!(out.rejects[0].row, 1);
    assert_eq!(out.rejects[0].column.as_deref(), Some("born"));
    assert!(
        out.rejects[0].reason.contains("not a date"),
        "{}",
        out.rejects[0].reason
    );
    assert_eq!(
        (
            out.rejects[1].row,
            out.rejects[1].value.as_deref(),
            out.rejects[1].reason.as_str()
        ),
        (
            2,
            Some("3000000000"),
            "value is out of range for integer (-2147483648 to 2147483647)",
        )
    );
}

#[test]
fn null_in_a_not_null_column_is_rejected() {
    let cols = r#"email = { type = "text", expr = "email", nullable = false }"#;
    let t = Transform::compile(&pipeline(cols, None), source_schema()).unwrap();
    let out = t
        .apply(&batch(vec![
            (1, None, Some("a@b"), None, None),
            (2, None, None, None, None),
        ]))
        .unwrap();
    assert_eq!(out.batch.num_rows(), 1);
    assert_eq!(
        out.rejects[0].reason,
        "is NULL, but the column is declared nullable = false (text)"
    );
}

#[test]
fn varchar_length_is_enforced_in_characters() {
    let cols = r#"name = { type = "varchar(3)", expr = "full_name" }"#;
    let t = Transform::compile(&pipeline(cols, None), source_schema()).unwrap();
    let out = t
        .apply(&batch(vec![
            (1, Some("Zoë"), None, None, None),
            (2, Some("Zoës"), None, None, None),
        ]))
        .unwrap();
    assert_eq!(out.batch.num_rows(), 1);
    assert_eq!(
        out.rejects[0].reason,
        "has 4 characters, more than varchar(3) holds"
    );
}

#[test]
fn compile_errors_name_the_line_and_suggest_columns() {
    let cols = r#"a = { type = "text", expr = "lower(emial)" }
b = { type = "date", expr = "id + " }
c = { type = "text", expr = "random()" }"#;
    let err = match Transform::compile(&pipeline(cols, Some("id")), source_schema()) {
        Err(Error::Config(d)) => d.to_string(),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("compiled"),
    };
    assert!(err.starts_with("/p/t.toml has 4 errors\n"), "{err}");
    assert!(err.contains("/p/t.toml:8:29: expression for column `a` names column `emial`, which the source does not have"), "{err}");
    assert!(err.contains("help: did you mean `email`?"), "{err}");
    assert!(
        err.contains("/p/t.toml:9:29: expression for column `b`:"),
        "{err}"
    );
    assert!(err.contains("calls a volatile function"), "{err}");
    assert!(
        err.contains("filter must be true or false for each row, but gives bigint"),
        "{err}"
    );
}

#[test]
fn input_columns_are_the_ones_expressions_and_the_filter_read() {
    // USERS reads id, full_name, email and created_at; deleted_at only through the filter.
    let with_filter = Transform::compile(
        &pipeline(USERS, Some("deleted_at IS NULL")),
        source_schema(),
    )
    .unwrap();
    assert_eq!(with_filter.input_columns(), vec![0, 1, 2, 3, 4]);
    let without = Transform::compile(&pipeline(USERS, None), source_schema()).unwrap();
    assert_eq!(without.input_columns(), vec![0, 1, 2, 3]);
    let constant = Transform::compile(
        &pipeline(r#"one = { type = "bigint", expr = "1" }"#, None),
        source_schema(),
    )
    .unwrap();
    assert_eq!(constant.input_columns(), Vec::<usize>::new());
}

/// The reasons `expr` (a `ty` column over `created_at`) gives for each of `texts`, or its
/// value as text when it passes.
fn parsed(ty: &str, expr: &str, texts: &[&str]) -> Vec<String> {
    let cols = format!("v = {{ type = \"{ty}\", expr = \"{expr}\" }}");
    let t = Transform::compile(&pipeline(&cols, None), source_schema()).unwrap();
    texts
        .iter()
        .map(|text| {
            let out = t
                .apply(&batch(vec![(1, None, None, Some(text), None)]))
                .unwrap();
            match out.rejects.first() {
                Some(r) => r.reason.clone(),
                None => crate::types::cast::value_text(out.batch.column(0).as_ref(), 0)
                    .unwrap_or_default(),
            }
        })
        .collect()
}

#[test]
fn every_date_time_parsing_function_reads_its_formats_strictly() {
    let short_year = "its year `10` has 2 digits, and a year is read only when written with 4, never completed by a guess";
    let got = parsed(
        "timestamp",
        "to_timestamp_seconds(created_at, '%d/%m/%Y %H:%M:%S%.f')",
        &[
            "06/07/2010 10:30:15",
            "6/7/10 10:30:15",
            "06/07/2010 10:30:15.5",
            "06/07/2010 10:30:15 x",
        ],
    );
    assert_eq!(got[0], "2010-07-06T10:30:15");
    assert!(got[1].contains(short_year), "{}", got[1]);
    assert!(
        got[2].contains("is read by format `%d/%m/%Y %H:%M:%S%.f` with a fraction to_timestamp_seconds keeps only whole seconds of, which it would cut"),
        "{}",
        got[2]
    );
    assert!(
        got[3].contains("` x` is left unread after it"),
        "{}",
        got[3]
    );
    for (f, kept, fine) in [
        ("to_timestamp_millis", "milliseconds", "10:30:15.123"),
        ("to_timestamp_micros", "microseconds", "10:30:15.123456"),
        ("to_timestamp_nanos", "", "10:30:15.123456789"),
    ] {
        let expr = format!("{f}(created_at, '%d/%m/%Y %H:%M:%S%.f')");
        let got = parsed(
            "text",
            &expr,
            &[
                &format!("06/07/2010 {fine}"),
                "6/7/10 10:30:15",
                if kept.is_empty() {
                    "06/07/2010 10:30:15.1234567891"
                } else {
                    "06/07/2010 10:30:15.1234567"
                },
            ],
        );
        assert_eq!(got[0], format!("2010-07-06T{fine}"), "{f}");
        assert!(got[1].contains(short_year), "{f}: {}", got[1]);
        if kept.is_empty() {
            // Nanoseconds keep nine digits; chrono would drop the tenth.
            assert!(
                got[2].contains("its fraction `.1234567891` has 10 digits, and a timestamp keeps 9 (nanoseconds); the rest would be cut"),
                "{f}: {}",
                got[2]
            );
        } else {
            assert!(
                got[2].contains(&format!("with a fraction {f} keeps only {kept} of")),
                "{f}: {}",
                got[2]
            );
        }
    }
    let got = parsed(
        "time",
        "to_time(created_at, '%H:%M', '%H:%M:%S')",
        &["10:30", "10:30:15", "10:30 pm", "1030"],
    );
    assert_eq!(got[..2], ["10:30:00", "10:30:15"]);
    assert!(
        got[2].contains("to_time('10:30 pm'): '10:30 pm' does not match format `%H:%M`: ` pm` is left unread after it; it does not match format `%H:%M:%S`"),
        "{}",
        got[2]
    );
    assert!(
        got[3].contains("does not match format `%H:%M`"),
        "{}",
        got[3]
    );
    let got = parsed(
        "bigint",
        "to_unixtime(created_at, '%d/%m/%Y %H:%M:%S')",
        &["06/07/2010 10:30:15", "6/7/10 10:30:15"],
    );
    assert_eq!(got[0], "1278412215");
    assert!(got[1].contains(short_year), "{}", got[1]);
}
