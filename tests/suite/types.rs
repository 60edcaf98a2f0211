//! Types across sources and targets: what a declared type means in each database, and
//! that a value reads back as a reader of the target sees it.

use crate::common::{MyDb, Workspace, parquet_rows, sqlite_exec, sqlite_rows};
use crate::scenarios::{Target, run_ok, scenarios};

/// Writes `pipelines/<name>.toml`: `source` (the `[source]` table's lines) into the SQLite
/// table `t` of `out/<name>.db`, with `columns` as `[target.columns]` and `extra` after.
fn sqlite_pipeline(ws: &Workspace, name: &str, source: &str, columns: &str, extra: &str) -> String {
    ws.write(
        &format!("pipelines/{name}.toml"),
        &format!(
            r#"name = "{name}"
[source]
{source}
[target]
url = "sqlite://../out/{name}.db"
table = "t"
[target.columns]
{columns}
[chunks]
rows = 2
parallel = 2
{extra}
"#
        ),
    )
}

/// Item 4 of issue 30: `real` into SQLite stored the float32 widened to double, so
/// `-2.1` read back as `-2.09999990463257`, and the read-back passed.
#[test]
fn a_real_in_sqlite_holds_the_double_of_its_shortest_decimal() {
    let ws = Workspace::new();
    let src = ws.path("out/reals_src.db");
    std::fs::create_dir_all(ws.path("out")).unwrap();
    sqlite_exec(
        &src,
        "CREATE TABLE m (id INTEGER PRIMARY KEY, v REAL, s TEXT);
         INSERT INTO m VALUES (1, -2.1, '-2.1'), (2, 0.1, '0.1'), (3, 3.4028235e38, '3.4028235e38'),
                              (4, 9e999, NULL), (5, -9e999, NULL), (6, NULL, NULL),
                              (7, 16777217, NULL), (8, -0.0, NULL);",
    );
    let p = sqlite_pipeline(
        &ws,
        "reals",
        "url = \"sqlite://../out/reals_src.db\"\ntable = \"m\"\nkey = \"id\"",
        "id = { type = \"bigint\", expr = \"id\", primary_key = true }\n\
         x = { type = \"real\", expr = \"v\" }\n\
         y = { type = \"real\", expr = \"s\" }",
        "",
    );
    let out = ws.rowshift(&["run", &p]);
    // 16777217 is no float32: it is refused, not rounded to 16777216.
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let db = ws.path("out/reals.db");
    assert_eq!(
        sqlite_rows(
            &db,
            "SELECT id, typeof(x), CAST(x AS TEXT), x = -2.1, x = 0.1 FROM t ORDER BY id"
        ),
        [
            ["1", "real", "-2.1", "1", "0"],
            ["2", "real", "0.1", "0", "1"],
            ["3", "real", "3.4028235e+38", "0", "0"],
            ["4", "real", "Inf", "0", "0"],
            ["5", "real", "-Inf", "0", "0"],
            ["6", "null", "NULL", "NULL", "NULL"],
            ["8", "real", "0.0", "0", "0"],
        ]
    );
    // The same from text (a CSV's, say), as PostgreSQL's real reads and prints it.
    assert_eq!(
        sqlite_rows(
            &db,
            "SELECT id, CAST(y AS TEXT) FROM t WHERE y IS NOT NULL ORDER BY id"
        ),
        [["1", "-2.1"], ["2", "0.1"], ["3", "3.4028235e+38"]]
    );
    assert_eq!(
        sqlite_rows(
            &db,
            "SELECT row_key, column_name, value, reason FROM t_rejects"
        ),
        [[
            "7",
            "x",
            "16777217",
            "value would change to '16777216' in real, which keeps about 7 significant digits"
        ]]
    );
    let verified = ws.rowshift(&["verify", &p]);
    assert_eq!(verified.code, 0, "{}{}", verified.stdout, verified.stderr);

    // The read-back compares what a reader sees: the float32 widened bit for bit is
    // another value, and `verify` names it.
    sqlite_exec(&db, "UPDATE t SET x = -2.0999999046325684 WHERE id = 1");
    let verified = ws.rowshift(&["verify", &p]);
    assert_eq!(verified.code, 1, "{}{}", verified.stdout, verified.stderr);
    assert!(
        verified
            .stdout
            .contains("id=1, column x: sent '-2.1', the target holds '-2.0999999046325684'"),
        "{}",
        verified.stdout
    );
}

/// Item 8 of issue 30: SQLite keeps 'NA' in an INTEGER column (as `.import` does), and
/// `[source.types] n = "text"` did not change how the column was decoded, so such rows
/// could only be rejected.
#[test]
fn source_types_decide_how_a_sqlite_column_is_read_whatever_it_stores() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path("out")).unwrap();
    sqlite_exec(
        &ws.path("out/mixed_src.db"),
        "CREATE TABLE m (id INTEGER PRIMARY KEY, n INTEGER, r REAL, s TEXT);
         INSERT INTO m VALUES (1, 10, 1.5, '42'), (2, 'NA', 'NA', '7'), (3, 20, 2.25, '4.5'),
                              (4, 3000000000, 7, '9'), (5, NULL, 'NA', '-3'), (6, 30, 0.1, '+8');",
    );
    let source = "url = \"sqlite://../out/mixed_src.db\"\ntable = \"m\"\nkey = \"id\"";
    // Read as text, every row passes, each value as the text of what is stored.
    let p = sqlite_pipeline(
        &ws,
        "mixed_text",
        &format!("{source}\n[source.types]\nn = \"text\"\nr = \"text\""),
        "id = { type = \"bigint\", expr = \"id\", primary_key = true }\n\
         n = { type = \"text\", expr = \"n\" }\n\
         r = { type = \"text\", expr = \"r\" }",
        "",
    );
    let out = ws.rowshift(&["run", &p]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        sqlite_rows(
            &ws.path("out/mixed_text.db"),
            "SELECT id, n, r FROM t ORDER BY id"
        ),
        [
            ["1", "10", "1.5"],
            ["2", "NA", "NA"],
            ["3", "20", "2.25"],
            ["4", "3000000000", "7"],
            ["5", "NULL", "NA"],
            ["6", "30", "0.1"],
        ]
    );

    // Read as numbers, a value converts only where nothing is lost; the others go to
    // the quarantine with their value and why, and the rest of the chunk is written.
    let p = sqlite_pipeline(
        &ws,
        "mixed_numbers",
        &format!("{source}\n[source.types]\nn = \"integer\"\nr = \"double\"\ns = \"bigint\""),
        "id = { type = \"bigint\", expr = \"id\", primary_key = true }\n\
         n = { type = \"integer\", expr = \"n\" }\n\
         r = { type = \"double\", expr = \"r\" }\n\
         s = { type = \"bigint\", expr = \"s\" }",
        "",
    );
    let out = ws.rowshift(&["run", &p]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let db = ws.path("out/mixed_numbers.db");
    assert_eq!(
        sqlite_rows(&db, "SELECT id, n, r, s FROM t ORDER BY id"),
        [["1", "10", "1.5", "42"], ["6", "30", "0.1", "8"]]
    );
    assert_eq!(
        sqlite_rows(
            &db,
            "SELECT row_key, column_name, reason, json_extract(json_extract(source_row, '$._unreadable'), '$.' || column_name)
             FROM t_rejects ORDER BY CAST(row_key AS INTEGER)"
        ),
        [
            [
                "2",
                "n",
                "value 'NA': is not a number, so it cannot be read as an integer",
                "NA"
            ],
            [
                "3",
                "s",
                "value '4.5': has a fraction, which an integer cannot hold (it takes whole numbers)",
                "4.5"
            ],
            [
                "4",
                "n",
                "value '3000000000': is out of range for integer (-2147483648 to 2147483647)",
                "3000000000"
            ],
            [
                "5",
                "r",
                "value 'NA': is not a number, so it cannot be read as double",
                "NA"
            ],
        ]
    );
}

/// Item 14 of issue 30: `validate` suggested `[source.types] location = "text"` for a
/// MariaDB geometry column, and `run` then failed with `Illegal parameter data type
/// geometry for operation 'cast_as_char'`.
#[test]
fn a_geometry_column_reads_as_wkt_text_or_wkb_bytes_as_validate_suggests() {
    let ws = Workspace::new();
    let src = MyDb::new("rs_geo");
    let url = src.url();
    src.exec(&format!(
        "CREATE TABLE `{s}`.places (id INT PRIMARY KEY, location GEOMETRY, pt POINT);
         INSERT INTO `{s}`.places VALUES
           (1, ST_GeomFromText('POINT(1.5 2.25)'), ST_GeomFromText('POINT(3 4)')),
           (2, ST_GeomFromText('LINESTRING(0 0,1 1)', 4326), NULL),
           (3, NULL, ST_GeomFromText('POINT(-0.5 1e-3)'));",
        s = src.name
    ));
    let pipeline = |types: &str| {
        format!(
            r#"name = "geo"
[source]
url = "{url}"
table = "places"
key = "id"
{types}
[target]
url = "sqlite://../out/geo.db"
table = "places"
[target.columns]
id = {{ type = "integer", expr = "id", primary_key = true }}
location = {{ type = "text", expr = "location" }}
pt = {{ type = "bytea", expr = "pt" }}
"#
        )
    };
    let p = ws.write("pipelines/geo.toml", &pipeline(""));
    let out = ws.rowshift(&["validate", &p]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(
            "column `location`: rowshift cannot read its type geometry without loss; declare [source.types] location = \"text\" to read it as WKT (EWKT when it has an SRID), or \"bytea\" to read it as WKB"
        ),
        "{}",
        out.stderr
    );
    ws.write(
        &p,
        &pipeline("[source.types]\nlocation = \"text\"\npt = \"bytea\""),
    );
    let out = ws.rowshift(&["validate", &p]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let out = ws.rowshift(&["run", &p]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        sqlite_rows(
            &ws.path("out/geo.db"),
            "SELECT id, location, hex(pt) FROM places ORDER BY id"
        ),
        [
            [
                "1",
                "POINT(1.5 2.25)",
                "010100000000000000000008400000000000001040"
            ],
            ["2", "SRID=4326;LINESTRING(0 0,1 1)", ""],
            ["3", "NULL", "0101000000000000000000E0BFFCA9F1D24D62503F"],
        ]
    );
    // The WKB is the server's own, and the WKT reads back as the same geometry.
    assert_eq!(
        src.rows(&format!(
            "SELECT CAST(id AS CHAR), HEX(ST_AsBinary(pt)), \
             CAST(ST_Equals(location, ST_GeomFromText('POINT(1.5 2.25)')) AS CHAR) \
             FROM `{}`.places WHERE id = 1",
            src.name
        )),
        [["1", "010100000000000000000008400000000000001040", "1"]]
    );
}

/// Item 15 of issue 30: `numeric(p,s)` into SQLite became TEXT, so `max()` and
/// `ORDER BY` used text order without a word. `dry-run` now says so, and a table
/// created with a REAL column keeps numeric order without losing a digit.
#[test]
fn a_numeric_in_sqlite_is_exact_text_by_default_and_a_double_in_a_real_column() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path("out")).unwrap();
    sqlite_exec(
        &ws.path("out/prices_src.db"),
        "CREATE TABLE m (id INTEGER PRIMARY KEY, price TEXT);
         INSERT INTO m VALUES (1, '994.6'), (2, '1010.7'), (3, '12.50'), (4, '0.1'),
                              (5, '9999999999999.99'), (6, NULL), (7, '-0.07');",
    );
    let source = "url = \"sqlite://../out/prices_src.db\"\ntable = \"m\"\nkey = \"id\"";
    let columns = "id = { type = \"bigint\", expr = \"id\", primary_key = true }\n\
                   price = { type = \"numeric(15,2)\", expr = \"price\" }";

    // The default: exact text, which SQL compares as text. dry-run warns.
    let p = sqlite_pipeline(&ws, "prices_text", source, columns, "");
    let dry = ws.rowshift(&["dry-run", &p]);
    assert_eq!(dry.code, 0, "{}{}", dry.stdout, dry.stderr);
    assert!(
        dry.stdout.contains(
            "-- warning: column price is numeric(15,2), stored as its exact text (TEXT): max(), min(), ORDER BY and comparisons in SQL compare it as text ('994.6' > '1010.7'); for numeric order, create the table beforehand with \"price\" REAL"
        ),
        "{}",
        dry.stdout
    );
    let out = ws.rowshift(&["run", &p]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let db = ws.path("out/prices_text.db");
    assert_eq!(
        sqlite_rows(&db, "SELECT typeof(price), price FROM t WHERE id = 3"),
        [["text", "12.50"]]
    );
    // Text order: '994.60' sorts after '1010.70'.
    assert_eq!(
        sqlite_rows(&db, "SELECT max(price) FROM t WHERE id IN (1, 2)"),
        [["994.60"]]
    );

    // A table created beforehand with a REAL column: the double whose shortest decimal
    // is the value, in numeric order, read back exactly.
    let p = sqlite_pipeline(&ws, "prices_real", source, columns, "");
    let db = ws.path("out/prices_real.db");
    sqlite_exec(&db, "CREATE TABLE t (id INTEGER PRIMARY KEY, price REAL)");
    let dry = ws.rowshift(&["dry-run", &p]);
    assert_eq!(dry.code, 0, "{}{}", dry.stdout, dry.stderr);
    assert!(!dry.stdout.contains("-- warning"), "{}", dry.stdout);
    let out = ws.rowshift(&["run", &p]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        sqlite_rows(
            &db,
            "SELECT id, typeof(price), CAST(price AS TEXT) FROM t ORDER BY price, id"
        ),
        [
            ["6", "null", "NULL"],
            ["7", "real", "-0.07"],
            ["4", "real", "0.1"],
            ["3", "real", "12.5"],
            ["1", "real", "994.6"],
            ["2", "real", "1010.7"],
            ["5", "real", "9999999999999.99"],
        ]
    );
    assert_eq!(
        sqlite_rows(&db, "SELECT max(price) FROM t"),
        [["9999999999999.99"]]
    );
    let verified = ws.rowshift(&["verify", &p]);
    assert_eq!(verified.code, 0, "{}{}", verified.stdout, verified.stderr);
    // The read-back compares the values: another double is another value, named.
    sqlite_exec(&db, "UPDATE t SET price = 994.7 WHERE id = 1");
    let verified = ws.rowshift(&["verify", &p]);
    assert_eq!(verified.code, 1, "{}{}", verified.stdout, verified.stderr);
    assert!(
        verified
            .stdout
            .contains("id=1, column price: sent '994.60', the target holds '994.70'"),
        "{}",
        verified.stdout
    );
    // A double between two values of the scale is no value of the column at all.
    sqlite_exec(&db, "UPDATE t SET price = 994.6000000000001 WHERE id = 1");
    let verified = ws.rowshift(&["verify", &p]);
    assert_ne!(verified.code, 0, "{}{}", verified.stdout, verified.stderr);
    assert!(
        format!("{}{}", verified.stdout, verified.stderr).contains("994.6000000000001"),
        "{}{}",
        verified.stdout,
        verified.stderr
    );

    // More digits than a double holds cannot go into a REAL column.
    let p = sqlite_pipeline(
        &ws,
        "prices_wide",
        source,
        "id = { type = \"bigint\", expr = \"id\", primary_key = true }\n\
         price = { type = \"numeric(16,2)\", expr = \"price\" }",
        "",
    );
    sqlite_exec(
        &ws.path("out/prices_wide.db"),
        "CREATE TABLE t (id INTEGER PRIMARY KEY, price REAL)",
    );
    let out = ws.rowshift(&["run", &p]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("column price is REAL in the existing table, and its REAL affinity stores numbers as doubles, which hold 15 significant digits without rounding"),
        "{}",
        out.stderr
    );
}

/// Item 13 of issue 30: `validate` did not look at an existing target table, so a
/// missing column passed `validate` and failed `run`.
#[test]
fn validate_compares_the_declared_columns_with_an_existing_sqlite_table() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path("out")).unwrap();
    sqlite_exec(
        &ws.path("out/existing.db"),
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score TEXT)",
    );
    let p = sqlite_pipeline(
        &ws,
        "existing",
        "url = \"sqlite://../samples/shop.db\"\ntable = \"users_v1\"\nkey = \"id\"",
        "id = { type = \"bigint\", expr = \"id\", primary_key = true }\n\
         name = { type = \"text\", expr = \"full_name\" }\n\
         score = { type = \"double\", expr = \"score\" }\n\
         email = { type = \"text\", expr = \"email\" }",
        "",
    );
    let out = ws.rowshift(&["validate", &p]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("existing.toml:13:1: target column `email` is not in the existing table t"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("the table's columns are: id, name, score"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "existing.toml:12:18: target column `score` is double but the existing table t declares it TEXT: its TEXT affinity stores floats as text of 15 significant digits"
        ),
        "{}",
        out.stderr
    );
    // `replace` drops the table, so it is not compared.
    let text = std::fs::read_to_string(ws.path(&p))
        .unwrap()
        .replace("table = \"t\"", "table = \"t\"\nif_exists = \"replace\"");
    ws.write(&p, &text);
    let out = ws.rowshift(&["validate", &p]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
}

/// Item 13 of issue 30: a check naming a source column said "the source does not have"
/// it and listed the target's columns; a failing expression kept no value.
#[test]
fn a_check_on_a_source_column_says_checks_see_target_columns_and_failures_keep_inputs() {
    let ws = Workspace::new();
    let p = sqlite_pipeline(
        &ws,
        "check_scope",
        "url = \"sqlite://../samples/shop.db\"\ntable = \"users_v1\"\nkey = \"id\"",
        "id = { type = \"bigint\", expr = \"id\", primary_key = true }\n\
         name = { type = \"text\", expr = \"full_name\" }",
        "[[checks]]\nname = \"mail\"\nexpr = \"email IS NOT NULL\"",
    );
    let out = ws.rowshift(&["validate", &p]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(
            "check `mail` names column `email`, which is not a target column: checks see the target columns, not the source's"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "`email` is a source column; to check it, add a target column with expr = \"email\" and check that. target columns are: id, name; source columns are: id,"
        ),
        "{}",
        out.stderr
    );

    // An expression that fails on a row keeps the inputs it read as the value.
    std::fs::create_dir_all(ws.path("out")).unwrap();
    sqlite_exec(
        &ws.path("out/inputs_src.db"),
        "CREATE TABLE m (id INTEGER PRIMARY KEY, a TEXT, b TEXT);
         INSERT INTO m VALUES (1, '12', 'x'), (2, 'zz', NULL);",
    );
    let p = sqlite_pipeline(
        &ws,
        "inputs",
        "url = \"sqlite://../out/inputs_src.db\"\ntable = \"m\"\nkey = \"id\"",
        "id = { type = \"bigint\", expr = \"id\", primary_key = true }\n\
         n = { type = \"bigint\", expr = \"CAST(a AS BIGINT) + length(b)\" }",
        "",
    );
    let out = ws.rowshift(&["run", &p]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        sqlite_rows(
            &ws.path("out/inputs.db"),
            "SELECT row_key, column_name, value FROM t_rejects"
        ),
        [["2", "n", "a=zz, b=NULL"]]
    );
}

/// A float NaN has no SQLite value (SQLite stores it as NULL): its row goes to the
/// quarantine, and the rest of its chunk is written.
#[test]
fn a_nan_into_sqlite_is_quarantined_and_the_rest_of_its_chunk_written() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path("out")).unwrap();
    sqlite_exec(
        &ws.path("out/nan_src.db"),
        "CREATE TABLE m (id INTEGER PRIMARY KEY, v REAL);
         INSERT INTO m VALUES (1, 1.5), (2, 4), (3, -2.1), (4, 9);",
    );
    let p = sqlite_pipeline(
        &ws,
        "nan",
        "url = \"sqlite://../out/nan_src.db\"\ntable = \"m\"\nkey = \"id\"",
        "id = { type = \"bigint\", expr = \"id\", primary_key = true }\n\
         x = { type = \"real\", expr = \"CASE WHEN id = 2 THEN (v - v) / (v - v) ELSE v END\" }",
        "",
    );
    let dry = ws.rowshift(&["dry-run", &p]);
    assert_eq!(dry.code, 1, "{}{}", dry.stdout, dry.stderr);
    assert!(
        dry.stdout
            .contains("SQLite stores NaN as NULL, which would change the value"),
        "{}",
        dry.stdout
    );
    let out = ws.rowshift(&["run", &p]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let db = ws.path("out/nan.db");
    assert_eq!(
        sqlite_rows(&db, "SELECT id, CAST(x AS TEXT) FROM t ORDER BY id"),
        [["1", "1.5"], ["3", "-2.1"], ["4", "9.0"]]
    );
    assert_eq!(
        sqlite_rows(
            &db,
            "SELECT row_key, column_name, value, reason FROM t_rejects"
        ),
        [[
            "2",
            "x",
            "NaN",
            "the target refused the row: SQLite stores NaN as NULL, which would change the value"
        ]]
    );
}

scenarios!(
    postgres: crate::common::PgSchema,
    mysql: crate::common::MyDb;
    [
        every_mapped_type_round_trips_its_edge_values,
        a_type_that_cannot_be_mapped_is_an_error_naming_the_column_and_text_reads_it,
        validate_compares_the_declared_columns_with_an_existing_table,
    ]
);

fn every_mapped_type_round_trips_its_edge_values<T: Target>() {
    let ws = Workspace::new();
    let src = T::create("rs_types_src");
    let dst = T::create("rs_types_dst");
    let n = src.make_typed_table();
    let mut columns =
        String::from("id = { type = \"integer\", expr = \"id\", primary_key = true }\n");
    for (c, ty) in T::TYPED_COLUMNS {
        columns.push_str(&format!("{c} = {{ type = \"{ty}\", expr = \"{c}\" }}\n"));
    }
    let p = ws.write(
        "pipelines/types.toml",
        &format!(
            r#"name = "types"
[source]
{src}
table = "t"
key = "id"
[target]
{dst}
table = "t"
[target.columns]
{columns}
[chunks]
rows = 2
"#,
            src = src.location(),
            dst = dst.location()
        ),
    );
    run_ok(&ws, &p);
    // Every value reads back as the same text from source and target.
    let list: Vec<String> = std::iter::once("id")
        .chain(T::TYPED_COLUMNS.iter().map(|(c, _)| *c))
        .map(T::typed_text)
        .collect();
    let select = |db: &T| {
        db.rows(&format!(
            "SELECT {} FROM {}.t ORDER BY id",
            list.join(", "),
            db.q()
        ))
    };
    let want = select(&src);
    assert_eq!(want.len(), n);
    assert_eq!(select(&dst), want);
    T::check_typed(&want, &dst);
}

fn a_type_that_cannot_be_mapped_is_an_error_naming_the_column_and_text_reads_it<T: Target>() {
    let ws = Workspace::new();
    let src = T::create("rs_unmapped");
    let unmapped = src.make_unmapped();
    let pipeline = |types: &str| {
        let columns: String = unmapped
            .iter()
            .map(|c| format!("{c} = {{ type = \"text\", expr = \"{c}\" }}\n"))
            .collect();
        format!(
            r#"name = "unmapped"
[source]
{src}
table = "wide"
key = "id"
{types}
[target]
url = "../out/wide.parquet"
[target.columns]
id = {{ type = "integer", expr = "id" }}
{columns}"#,
            src = src.location()
        )
    };
    let p = ws.write("pipelines/unmapped.toml", &pipeline(""));
    let out = ws.rowshift(&["validate", &p]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    for error in T::UNMAPPED_ERRORS {
        assert!(out.stderr.contains(error), "{error}: {}", out.stderr);
    }
    let types: String = unmapped
        .iter()
        .map(|c| format!("{c} = \"text\"\n"))
        .collect();
    ws.write(&p, &pipeline(&format!("[source.types]\n{types}")));
    run_ok(&ws, &p);
    let rows = parquet_rows(&ws.path("out/wide.parquet"));
    assert_eq!(rows.values().cloned().collect::<Vec<_>>(), T::UNMAPPED_ROWS);
}

/// Item 13 of issue 30, on the servers: `validate` reads an existing target table's
/// columns and names what `run` would trip on, at its line and column.
fn validate_compares_the_declared_columns_with_an_existing_table<T: Target>() {
    let ws = Workspace::new();
    let db = T::create("rs_validate");
    db.exec(&format!(
        "CREATE TABLE {}.t (id bigint PRIMARY KEY, name integer)",
        db.q()
    ));
    let p = ws.write(
        "pipelines/v.toml",
        &format!(
            r#"name = "v"
[source]
url = "sqlite://../samples/shop.db"
table = "users_v1"
key = "id"
[target]
{}
table = "t"
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
name = {{ type = "text", expr = "full_name" }}
email = {{ type = "text", expr = "email" }}
"#,
            db.location()
        ),
    );
    let out = ws.rowshift(&["validate", &p]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    let line = 10 + db.location().lines().count();
    assert!(
        out.stderr.contains(&format!(
            "v.toml:{}:1: target column `email` is not in the existing table t",
            line + 1
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "v.toml:{line}:17: target column `name` is text but the existing table t declares it"
        )),
        "{}",
        out.stderr
    );
}
