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
