//! MySQL/MariaDB sources and targets, on the real server (`ROWSHIFT_MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306/test`). Each test works in databases of its own, dropped
//! afterwards, so tests run in parallel. A server that cannot be reached fails the test,
//! in CI and outside it: a skipped test would pass without checking anything.

use crate::common::{MyDb, ServerDb, Workspace, my_quote, my_url, pg_url, sqlite_rows, toml_str};
use crate::scenarios::{CASELESS_WORDS, Target, caseless_word_rows, mode_pipeline, run_ok};

impl Target for MyDb {
    fn create(tag: &str) -> Self {
        MyDb::new(tag)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn q(&self) -> String {
        my_quote(&self.name)
    }

    fn quote(name: &str) -> String {
        my_quote(name)
    }

    fn location(&self) -> String {
        format!("url = \"{}\"", self.url())
    }

    fn exec(&self, sql: &str) {
        ServerDb::exec(self, sql)
    }

    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        ServerDb::rows(self, sql)
    }

    fn text(expr: &str) -> String {
        format!("CAST({expr} AS CHAR)")
    }

    fn make_items(&self, n: i64) {
        self.exec(&format!(
            "CREATE TABLE {s}.items (id BIGINT PRIMARY KEY, name VARCHAR(100) NOT NULL, price DECIMAL(12,2), \
             qty INT, made DATETIME(6), active BOOLEAN, tag VARCHAR(10)) DEFAULT CHARSET utf8mb4",
            s = self.q()
        ));
        let mut rows = Vec::new();
        for g in 1..=n {
            let name = if g % 7 == 0 {
                format!("item {g} ünï")
            } else {
                format!("item {g}")
            };
            let qty = if g % 5 == 0 {
                "NULL".to_string()
            } else {
                (g % 13).to_string()
            };
            let tag = if g % 3 == 0 {
                String::new()
            } else {
                format!("t{}", g % 4)
            };
            rows.push(format!(
                "({g}, '{name}', {}.{:02}, {qty}, TIMESTAMPADD(MICROSECOND, {g} * 3601500000, '2024-01-01 00:00:00'), {}, '{tag}')",
                g * 5 / 4,
                (g * 25) % 100,
                g % 2 == 0
            ));
        }
        for part in rows.chunks(500) {
            self.exec(&format!(
                "INSERT INTO {}.items VALUES {}",
                self.q(),
                part.join(", ")
            ));
        }
    }

    const NAME_TYPE: &'static str = "varchar(100)";

    fn change_items(&self) {
        self.exec(&format!(
            "UPDATE {s}.items SET name = CONCAT(name, ' v2'), qty = -1 WHERE id % 9 = 0;
             INSERT INTO {s}.items (id, name, qty) VALUES (301, 'new 301', 301), (302, 'new 302', NULL)",
            s = self.q()
        ));
    }

    const DUPLICATE_KEY: &'static str = "Duplicate entry";

    fn drop_items_key(&self) {
        self.exec(&format!("ALTER TABLE {}.items DROP PRIMARY KEY", self.q()));
    }

    fn make_words(&self) -> usize {
        // A case-insensitive collation orders these differently from their bytes.
        self.exec(&format!(
            "CREATE TABLE {s}.words (w VARCHAR(40) PRIMARY KEY, n INT) DEFAULT CHARSET utf8mb4 COLLATE utf8mb4_general_ci;
             INSERT INTO {s}.words VALUES {}",
            caseless_word_rows(),
            s = self.q()
        ));
        CASELESS_WORDS.len()
    }

    fn words(&self) -> Vec<Vec<String>> {
        self.rows(&format!(
            "SELECT w, CAST(n AS CHAR) FROM {}.words ORDER BY CAST(w AS BINARY)",
            self.q()
        ))
    }

    fn int(expr: &str) -> String {
        format!("CAST({expr} AS SIGNED)")
    }

    fn tables(&self) -> i64 {
        self.rows(&format!(
            "SELECT CAST(count(*) AS CHAR) FROM information_schema.tables WHERE table_schema = '{}'",
            self.name
        ))[0][0]
            .parse()
            .unwrap()
    }

    fn users_ddl(&self) -> Vec<String> {
        vec![
            format!("CREATE TABLE {}.`users` (", self.q()),
            "`id` BIGINT NOT NULL".to_string(),
            "`email` VARCHAR(200) NOT NULL".to_string(),
            "`country` LONGTEXT".to_string(),
            "`score` DOUBLE".to_string(),
            "PRIMARY KEY (`id`)".to_string(),
        ]
    }

    fn users_types(&self) -> Vec<String> {
        self.rows(&format!(
            "SELECT CAST(column_name AS CHAR), CAST(column_type AS CHAR) FROM information_schema.columns \
             WHERE table_schema = '{}' AND table_name = 'users' ORDER BY ordinal_position",
            self.name
        ))
        .iter()
        .map(|r| r.join(" "))
        .collect()
    }

    const USERS_TYPES: &'static [&'static str] = &[
        "id bigint(20)",
        "email varchar(200)",
        "country longtext",
        "score double",
        "name_len int(11)",
    ];

    /// Doubles as Rust prints them, to compare with SQLite's REAL text exactly.
    fn double_text(text: String) -> String {
        if text == "NULL" {
            return text;
        }
        text.parse::<f64>().unwrap().to_string()
    }

    fn make_strict_items(&self) {
        // MySQL does not say which row of a multi-row INSERT it refused.
        let d = self.q();
        self.exec(&format!(
            "CREATE TABLE {d}.kinds (qty INT PRIMARY KEY) ENGINE=InnoDB"
        ));
        self.exec(&format!(
            "INSERT INTO {d}.kinds VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9),(10)"
        ));
        self.exec(&format!(
            "CREATE TABLE {d}.items (id BIGINT PRIMARY KEY, name VARCHAR(100) UNIQUE, qty INT,
               CONSTRAINT not_twelve CHECK (qty <> 12),
               CONSTRAINT known_kind FOREIGN KEY (qty) REFERENCES {d}.kinds (qty))
               ENGINE=InnoDB DEFAULT CHARSET utf8mb4"
        ));
    }

    fn refusal(&self, id: i64) -> Vec<String> {
        self.rows(&format!(
            "SELECT reason FROM {}.items_rejects WHERE row_key = '{id}'",
            self.q()
        ))[0]
            .clone()
    }

    fn expected_refusal(&self, id: i64) -> Vec<String> {
        let d = &self.name;
        vec![match id {
            12 => format!(
                "the target refused the row: CONSTRAINT `not_twelve` failed for `{d}`.`items`"
            ),
            11 => format!(
                "the target refused the row: Cannot add or update a child row: a foreign key constraint fails (`{d}`.`items`, CONSTRAINT `known_kind` FOREIGN KEY (`qty`) REFERENCES `kinds` (`qty`))"
            ),
            105 => {
                "the target refused the row: Duplicate entry 'same name' for key 'name'".to_string()
            }
            _ => panic!("no expected refusal for row {id}"),
        }]
    }

    fn location_by_name(&self) -> String {
        format!("url = \"{}\"\nschema = {}", my_url(), toml_str(&self.name))
    }

    const SCHEME: &'static str = "mysql";

    fn url_with_password(pw: &str) -> Option<String> {
        let url = my_url().replacen("://root@", &format!("://nobody:{pw}@"), 1);
        url.contains(pw).then_some(url)
    }

    const PASSWORD_REFUSED: Option<&'static str> = Some("Access denied for user 'nobody'");

    fn make_unmapped(&self) -> &'static [&'static str] {
        self.exec(&format!(
            "CREATE TABLE {s}.wide (id INT PRIMARY KEY, amount DECIMAL(50,2));
             INSERT INTO {s}.wide VALUES (1, 123456789012345678901234567890123456789012345678.25), (2, NULL)",
            s = self.q()
        ));
        &["amount"]
    }

    const UNMAPPED_ERRORS: &'static [&'static str] = &[
        "column `amount`: its type decimal(50,2) does not fit an Arrow decimal (precision up to 38); declare [source.types] amount = \"text\" to read its text form",
    ];

    const UNMAPPED_ROWS: &'static [&'static str] = &[
        "1|123456789012345678901234567890123456789012345678.25",
        "2|NULL",
    ];

    fn make_typed_table(&self) -> usize {
        self.exec(&format!(
        "CREATE TABLE {s}.t (id INT PRIMARY KEY, ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED, \
           mi MEDIUMINT, i INT, iu INT UNSIGNED, bi BIGINT, f FLOAT, d DOUBLE, dec1 DECIMAL(38,10), dec2 DECIMAL(5,0), \
           b BOOLEAN, vc VARCHAR(20), tx TEXT, ch CHAR(3), js JSON, en ENUM('x','y z'), \
           bl BLOB, vb VARBINARY(8), dt DATE, tm TIME(6), ts DATETIME(6), tz TIMESTAMP(6) NULL, yr YEAR) DEFAULT CHARSET utf8mb4;
         INSERT INTO {s}.t VALUES
          (1, -128, 255, -32768, 65535, -8388608, -2147483648, 4294967295, -9223372036854775808, -3.40282e38, -1.7976931348623157e308,
           '-9999999999999999999999999999.9999999999', -99999, 0, '', '', '', '{{}}', 'x', x'', x'00', '1000-01-01', '00:00:00', '1000-01-01 00:00:00', '1970-01-01 00:00:01', 1901),
          (2, 127, 0, 32767, 0, 8388607, 2147483647, 0, 9223372036854775807, 1.17549e-38, 2.2250738585072014e-308,
           '9999999999999999999999999999.9999999999', 99999, 1, 'ünïcödé 😀', 'line1\nline2', 'abc', '{{\"k\": [1, 2.5, null]}}', 'y z',
           x'00ff10', x'ffffffffffffffff', '9999-12-31', '23:59:59.999999', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999999', 2155),
          (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL),
          (4, 0, 1, 0, 1, 0, 0, 1, 0, 0.1, 0.1, '0.0000000001', 0, 1, 'It''s \"q\"', ' lead', 'a', '[]', 'x',
           x'61', x'', '2024-02-29', '12:34:56.5', '2024-02-29 12:34:56.000001', '2024-02-29 12:34:56.000001', 2024)",
            s = self.q()
        ));
        4
    }

    const TYPED_COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("ti", "smallint"),
        ("tu", "smallint"),
        ("si", "smallint"),
        ("su", "integer"),
        ("mi", "integer"),
        ("i", "integer"),
        ("iu", "bigint"),
        ("bi", "bigint"),
        ("f", "real"),
        ("d", "double"),
        ("dec1", "numeric(38,10)"),
        ("dec2", "numeric(5,0)"),
        ("b", "smallint"),
        ("vc", "varchar(20)"),
        ("tx", "text"),
        ("ch", "varchar(3)"),
        ("js", "text"),
        ("en", "text"),
        ("bl", "bytea"),
        ("vb", "bytea"),
        ("dt", "date"),
        ("tm", "time"),
        ("ts", "timestamp"),
        ("tz", "timestamptz"),
        ("yr", "smallint"),
    ];

    /// Blobs as hex.
    fn typed_text(column: &str) -> String {
        match column {
            "bl" | "vb" => format!("HEX({column})"),
            _ => format!("CAST({column} AS CHAR)"),
        }
    }

    fn check_typed(rows: &[Vec<String>], _dst: &Self) {
        assert_eq!(rows[1][14], "ünïcödé 😀");
        assert_eq!(rows[1][24], "2038-01-19 03:14:07.999999");
    }

    fn make_shouting_items(&self) {
        self.exec(&format!(
            "CREATE TABLE {d}.items (id BIGINT PRIMARY KEY, name VARCHAR(100), qty INT);
             CREATE TRIGGER {d}.shout BEFORE INSERT ON {d}.items FOR EACH ROW
               SET NEW.name = IF(NEW.id = 42, UPPER(NEW.name), NEW.name)",
            d = self.q()
        ));
    }

    fn make_coarse_payments(&self) {
        // Even in strict mode MariaDB cuts a finer datetime or time and rounds a finer
        // decimal without an error.
        self.exec(&format!(
            "CREATE TABLE {}.payments (id BIGINT PRIMARY KEY, at DATETIME, amount DECIMAL(10,2), took TIME(3),
               CONSTRAINT small CHECK (amount < 100))",
            self.q()
        ));
    }

    const COARSE_TYPES: [&'static str; 3] = ["datetime", "decimal(10,2)", "time(3)"];

    fn coarse_check_refusal(&self) -> Vec<String> {
        vec![
            "6".into(),
            "NULL".into(),
            "NULL".into(),
            format!(
                "the target refused the row: CONSTRAINT `small` failed for `{}`.`payments`",
                self.name
            ),
        ]
    }
}

fn items_text(db: &MyDb, table: &str) -> Vec<Vec<String>> {
    db.rows(&format!(
        "SELECT CAST(id AS CHAR), name, CAST(price AS CHAR), CAST(qty AS CHAR), CAST(made AS CHAR), \
         CAST(active AS CHAR), tag FROM {}.{} ORDER BY id",
        db.q(),
        my_quote(table)
    ))
}

#[test]
fn mysql_to_postgres_and_back_with_transforms_matches_the_same_query_run_by_mysql() {
    let ws = Workspace::new();
    let src = MyDb::new("rs_my_pg_src");
    let dst = MyDb::new("rs_my_pg_dst");
    let pg_schema = format!("rs_my_pg_{}", std::process::id());
    src.make_items(1234);
    let there = ws.write(
        "pipelines/my_pg.toml",
        &format!(
            r#"name = "my_pg"
[source]
url = "{src}"
table = "items"
key = "id"
[source.types]
active = "boolean"
[target]
url = "{pg}"
schema = "{pg_schema}"
table = "items"
if_exists = "replace"
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
name = {{ type = "text", expr = "upper(name)" }}
price = {{ type = "numeric(14,2)", expr = "price * 2" }}
qty = {{ type = "integer", expr = "qty" }}
made = {{ type = "timestamp", expr = "made" }}
active = {{ type = "boolean", expr = "NOT active" }}
tag = {{ type = "text", expr = "tag" }}
[filter]
where = "id % 10 <> 3"
[chunks]
rows = 100
parallel = 3
"#,
            src = src.url(),
            pg = pg_url()
        ),
    );
    run_ok(&ws, &there);
    let back = ws.write(
        "pipelines/pg_my.toml",
        &format!(
            r#"name = "pg_my"
[source]
url = "{pg}"
schema = "{pg_schema}"
table = "items"
key = "id"
[target]
url = "{dst}"
table = "items"
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
name = {{ type = "varchar(100)", expr = "name", nullable = false }}
price = {{ type = "numeric(12,2)", expr = "price" }}
qty = {{ type = "integer", expr = "qty" }}
made = {{ type = "timestamp", expr = "made" }}
active = {{ type = "boolean", expr = "active" }}
tag = {{ type = "varchar(10)", expr = "tag" }}
[chunks]
rows = 300
parallel = 2
"#,
            dst = dst.url(),
            pg = pg_url()
        ),
    );
    run_ok(&ws, &back);
    let expected = src.rows(&format!(
        "SELECT CAST(id AS CHAR), upper(name), CAST(price * 2 AS CHAR), CAST(qty AS CHAR), CAST(made AS CHAR), \
         CAST(NOT active AS CHAR), tag FROM {}.items WHERE id % 10 <> 3 ORDER BY id",
        src.q()
    ));
    let got = items_text(&dst, "items");
    assert_eq!(got.len(), 1234 - 124);
    assert_eq!(got, expected);
    // The text of a non-ASCII name survived both moves; so did the microseconds.
    assert_eq!(got.iter().find(|r| r[0] == "7").unwrap()[1], "ITEM 7 ÜNÏ");
    assert_eq!(got[0][4], "2024-01-01 01:00:01.500000");
    // Clean up the PostgreSQL schema (MySQL databases drop themselves).
    let pg = rowshift_pg_drop(&pg_schema);
    assert!(pg.is_ok(), "{pg:?}");
}

/// Drops a PostgreSQL schema a test made.
fn rowshift_pg_drop(schema: &str) -> Result<(), String> {
    crate::common::block_on(async {
        let pool = sqlx::PgPool::connect(&pg_url())
            .await
            .map_err(|e| e.to_string())?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        )))
        .execute(&pool)
        .await
        .map_err(|e| e.to_string())?;
        pool.close().await;
        Ok(())
    })
}

#[test]
fn mysql_to_sqlite_matches_the_source_rows() {
    let ws = Workspace::new();
    let src = MyDb::new("rs_my_sqlite");
    src.make_items(500);
    let p = ws.write(
        "pipelines/my_sqlite.toml",
        &format!(
            r#"name = "my_sqlite"
[source]
url = "{src}"
table = "items"
key = "id"
[target]
url = "sqlite://../out/items.db"
table = "items"
[target.columns]
id = {{ type = "bigint", expr = "id" }}
name = {{ type = "text", expr = "name" }}
price = {{ type = "numeric(12,2)", expr = "price" }}
qty = {{ type = "integer", expr = "qty + 1" }}
day = {{ type = "date", expr = "CAST(made AS DATE)" }}
[chunks]
rows = 64
"#,
            src = src.url()
        ),
    );
    std::fs::create_dir_all(ws.path("out")).unwrap();
    run_ok(&ws, &p);
    let expected = src.rows(&format!(
        "SELECT CAST(id AS CHAR), name, CAST(price AS CHAR), CAST(qty + 1 AS CHAR), CAST(CAST(made AS DATE) AS CHAR) FROM {}.items ORDER BY id",
        src.q()
    ));
    let got = sqlite_rows(
        &ws.path("out/items.db"),
        "SELECT id, name, price, qty, day FROM items ORDER BY id",
    );
    assert_eq!(got.len(), 500);
    assert_eq!(got, expected);
}

#[test]
fn strict_mode_refuses_what_the_server_would_truncate() {
    let ws = Workspace::new();
    let src = MyDb::new("rs_my_strict_src");
    let dst = MyDb::new("rs_my_strict_dst");
    src.make_items(100);
    // A column too short for the names: non-strict MySQL would cut them and warn.
    dst.exec(&format!(
        "CREATE TABLE {d}.items (id BIGINT PRIMARY KEY, name VARCHAR(7), qty INT)",
        d = dst.q()
    ));
    let p = mode_pipeline(&ws, "strict", &src, &dst, "if_exists = \"append\"");
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    // Each name that does not fit is refused on its own and quarantined with the
    // server's reason; the names that fit are written.
    let long = src.rows(&format!(
        "SELECT CAST(id AS CHAR) FROM {}.items WHERE CHAR_LENGTH(name) > 7 ORDER BY id",
        src.q()
    ));
    assert_eq!(long.len(), 15);
    assert_eq!(dst.count("items"), 85);
    assert_eq!(
        dst.rows(&format!(
            "SELECT row_key FROM {}.items_rejects ORDER BY CAST(row_key AS SIGNED)",
            dst.q()
        )),
        long
    );
    assert_eq!(
        dst.rows(&format!(
            "SELECT DISTINCT reason FROM {}.items_rejects",
            dst.q()
        )),
        [["the target refused the row: Data too long for column 'name' at row 1"]]
    );
    assert_eq!(
        dst.rows(&format!(
            "SELECT CAST(count(*) AS CHAR) FROM {}.items WHERE CHAR_LENGTH(name) > 7",
            dst.q()
        )),
        [["0"]]
    );
}

/// A pipeline moving `table` of `src`, keyed by `id`, to a table of the same name in
/// `dst` with the `[target.columns]` lines `columns`.
fn table_pipeline(ws: &Workspace, table: &str, src: &MyDb, dst: &MyDb, columns: &str) -> String {
    ws.write(
        &format!("pipelines/{table}.toml"),
        &format!(
            "name = \"{table}\"\n[source]\nurl = \"{}\"\ntable = \"{table}\"\nkey = \"id\"\n[target]\nurl = \"{}\"\ntable = \"{table}\"\n[target.columns]\n{columns}",
            src.url(),
            dst.url()
        ),
    )
}

#[test]
fn a_source_value_outside_arrow_s_range_is_quarantined_and_the_chunk_goes_on() {
    let ws = Workspace::new();
    let src = MyDb::new("rs_my_unreadable_src");
    let dst = MyDb::new("rs_my_unreadable_dst");
    src.exec(&format!(
        "CREATE TABLE {s}.shifts (id INT PRIMARY KEY, took TIME, big BIGINT UNSIGNED);
         INSERT INTO {s}.shifts VALUES (1, '08:00:00', 1), (2, '30:15:00', 2), (3, '-01:00:00', 3),
           (4, '23:59:59', 18446744073709551615), (5, NULL, NULL)",
        s = src.q()
    ));
    let p = table_pipeline(
        &ws,
        "shifts",
        &src,
        &dst,
        r#"id = { type = "integer", expr = "id", primary_key = true }
took = { type = "time", expr = "took" }
big = { type = "bigint", expr = "big" }
"#,
    );
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let got = dst.rows(&format!(
        "SELECT CAST(id AS CHAR), CAST(took AS CHAR), CAST(big AS CHAR) FROM {}.shifts ORDER BY id",
        dst.q()
    ));
    assert_eq!(
        got,
        [
            ["1", "08:00:00.000000", "1"].map(String::from).to_vec(),
            ["5", "NULL", "NULL"].map(String::from).to_vec(),
        ]
    );
    let rejects = dst.rows(&format!(
        "SELECT row_key, column_name, reason, JSON_UNQUOTE(JSON_EXTRACT(source_row, '$._unreadable')) FROM {}.shifts_rejects ORDER BY row_key",
        dst.q()
    ));
    assert_eq!(
        rejects,
        [
            [
                "2",
                "took",
                "30:15:00 is not a time of day (00:00:00 to 23:59:59.999999)",
                r#"{"big":2,"id":2,"took":"30:15:00"}"#
            ]
            .map(String::from)
            .to_vec(),
            [
                "3",
                "took",
                "-01:00:00 is not a time of day (00:00:00 to 23:59:59.999999)",
                r#"{"big":3,"id":3,"took":"-01:00:00"}"#
            ]
            .map(String::from)
            .to_vec(),
            [
                "4",
                "big",
                "18446744073709551615 is out of range for bigint",
                r#"{"big":"18446744073709551615","id":4,"took":"23:59:59"}"#
            ]
            .map(String::from)
            .to_vec(),
        ]
    );
}

#[test]
fn a_zero_date_in_the_source_is_quarantined_never_read_as_null() {
    let ws = Workspace::new();
    let src = MyDb::new("rs_my_zero_date_src");
    let dst = MyDb::new("rs_my_zero_date_dst");
    // Legacy tables hold zero dates, which only a non-strict session can still write.
    src.exec(&format!(
        "SET SESSION sql_mode = '';
         CREATE TABLE {s}.events (id INT PRIMARY KEY, happened DATE, at DATETIME);
         INSERT INTO {s}.events VALUES (1, '2024-02-29', '2024-02-29 12:00:00'),
           (2, '0000-00-00', '2024-01-01 00:00:00'), (3, '2024-01-02', '0000-00-00 00:00:00'),
           (4, NULL, NULL)",
        s = src.q()
    ));
    let p = table_pipeline(
        &ws,
        "events",
        &src,
        &dst,
        r#"id = { type = "integer", expr = "id", primary_key = true }
happened = { type = "date", expr = "happened" }
at = { type = "timestamp", expr = "at" }
"#,
    );
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let got = dst.rows(&format!(
        "SELECT CAST(id AS CHAR), CAST(happened AS CHAR), CAST(at AS CHAR) FROM {}.events ORDER BY id",
        dst.q()
    ));
    assert_eq!(
        got,
        [
            ["1", "2024-02-29", "2024-02-29 12:00:00.000000"]
                .map(String::from)
                .to_vec(),
            ["4", "NULL", "NULL"].map(String::from).to_vec(),
        ]
    );
    let rejects = dst.rows(&format!(
        "SELECT row_key, column_name, reason, JSON_UNQUOTE(JSON_EXTRACT(source_row, '$._unreadable')) FROM {}.events_rejects ORDER BY row_key",
        dst.q()
    ));
    assert_eq!(
        rejects,
        [
            [
                "2",
                "happened",
                "the zero date 0000-00-00 is not a date",
                r#"{"at":"2024-01-01 00:00:00","happened":"0000-00-00","id":2}"#
            ]
            .map(String::from)
            .to_vec(),
            [
                "3",
                "at",
                "the zero date 0000-00-00 is not a date",
                r#"{"at":"0000-00-00 00:00:00","happened":"2024-01-02","id":3}"#
            ]
            .map(String::from)
            .to_vec(),
        ]
    );
}

#[test]
fn a_bigint_unsigned_key_above_the_signed_range_is_refused_at_planning() {
    let ws = Workspace::new();
    let db = MyDb::new("rs_my_unsigned");
    db.exec(&format!(
        "CREATE TABLE {s}.u (id BIGINT UNSIGNED PRIMARY KEY, v INT)",
        s = db.q()
    ));
    db.exec(&format!(
        "INSERT INTO {s}.u VALUES (1, 1), (2, 2), (3, 3)",
        s = db.q()
    ));
    let p = ws.write(
        "pipelines/u.toml",
        &format!(
            r#"name = "u"
[source]
url = "{url}"
table = "u"
key = "id"
[target]
url = "sqlite://../out/u.db"
table = "u"
[target.columns]
id = {{ type = "bigint", expr = "id" }}
v = {{ type = "integer", expr = "v" }}
[chunks]
rows = 1
"#,
            url = db.url()
        ),
    );
    std::fs::create_dir_all(ws.path("out")).unwrap();
    // Values in the signed range plan and move as usual.
    run_ok(&ws, &p);
    assert_eq!(
        sqlite_rows(&ws.path("out/u.db"), "SELECT id, v FROM u ORDER BY id"),
        [["1", "1"], ["2", "2"], ["3", "3"]]
    );
    db.exec(&format!(
        "INSERT INTO {s}.u VALUES (18446744073709551615, 4)",
        s = db.q()
    ));
    let out = ws.rowshift(&["run", &p, "--restart", "--quiet"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("1 rows have key `id` (bigint unsigned) above 9223372036854775807; chunk bounds are signed 64-bit integers, so these rows cannot be planned. Chunk by another key"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_lock_wait_timeout_is_retried_until_the_lock_is_released() {
    let ws = Workspace::new();
    let src = MyDb::new("rs_my_lockwait_src");
    let dst = MyDb::new("rs_my_lockwait_dst");
    src.make_items(10);
    dst.exec(&format!(
        "CREATE TABLE {}.items (id BIGINT PRIMARY KEY, name VARCHAR(100), qty INT) ENGINE=InnoDB",
        dst.q()
    ));
    let p = mode_pipeline(
        &ws,
        "lockwait",
        &src,
        &dst,
        "if_exists = \"append\"\nlock_timeout_ms = 1000",
    );
    // Another session inserts row 5 and holds it uncommitted: the run's insert of row 5
    // waits for it, times out after a second (error 1205), and is tried again.
    let mut holder = dst.rt.block_on(dst.pool.begin()).unwrap();
    dst.rt
        .block_on(
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {}.items VALUES (5, 'held', 0)",
                dst.q()
            )))
            .execute(&mut *holder),
        )
        .unwrap();
    let out = std::thread::scope(|s| {
        let run = s.spawn(|| ws.rowshift(&["run", &p, "--quiet"]));
        std::thread::sleep(std::time::Duration::from_millis(2500));
        dst.rt.block_on(holder.rollback()).unwrap();
        run.join().unwrap()
    });
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(dst.items(), src.items());
    let attempts = dst.rows(&format!(
        "SELECT CAST(attempts AS CHAR) FROM {}._rowshift_chunks",
        dst.q()
    ));
    assert!(attempts[0][0].parse::<u32>().unwrap() >= 2, "{attempts:?}");
}

#[test]
fn rows_read_back_digest_as_the_rows_sent_and_any_changed_value_changes_the_digest() {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, BinaryArray, BooleanArray, Date32Array, Int16Array, Int32Array, Int64Array,
        RecordBatch, StringArray,
    };
    use futures::TryStreamExt;
    use rowshift::db::mysql::{DigestLayout, MyColumn, RowDigest, table_columns};
    use rowshift::types::ColumnType::*;

    let db = MyDb::new("rs_my_digest");
    db.exec(&format!(
        "CREATE TABLE {}.d (a SMALLINT, b INT, c BIGINT, e BOOLEAN, f LONGTEXT, g VARCHAR(30), \
         h LONGBLOB, i DATE) DEFAULT CHARSET utf8mb4 COLLATE utf8mb4_bin;
         INSERT INTO {0}.d VALUES
          (-32768, -2147483648, -9223372036854775808, 1, '', 'x', x'', '0001-01-01'),
          (0, 0, 0, 0, 'José Álvarez, 李小龙 🎉', NULL, x'ff00ff', '9999-12-31'),
          (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
          (32767, 2147483647, 4294967296, NULL, 'a\nb', 'ünï', x'3a', '2024-02-29')",
        db.q()
    ));
    let types = [
        SmallInt,
        Int,
        BigInt,
        Boolean,
        Text,
        Varchar(30),
        Bytes,
        Date,
    ];
    let day = |y, m, d| {
        (chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap()
            - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap())
        .num_days() as i32
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int16Array::from(vec![
            Some(i16::MIN),
            Some(0),
            None,
            Some(i16::MAX),
        ])),
        Arc::new(Int32Array::from(vec![
            Some(i32::MIN),
            Some(0),
            None,
            Some(i32::MAX),
        ])),
        Arc::new(Int64Array::from(vec![
            Some(i64::MIN),
            Some(0),
            None,
            Some(1 << 32),
        ])),
        Arc::new(BooleanArray::from(vec![
            Some(true),
            Some(false),
            None,
            None,
        ])),
        Arc::new(StringArray::from(vec![
            Some(""),
            Some("José Álvarez, 李小龙 🎉"),
            None,
            Some("a\nb"),
        ])),
        Arc::new(StringArray::from(vec![Some("x"), None, None, Some("ünï")])),
        Arc::new(BinaryArray::from(vec![
            Some(&b""[..]),
            Some(&b"\xff\x00\xff"[..]),
            None,
            Some(&b":"[..]),
        ])),
        Arc::new(Date32Array::from(vec![
            Some(day(1, 1, 1)),
            Some(day(9999, 12, 31)),
            None,
            Some(day(2024, 2, 29)),
        ])),
    ];
    let names = ["a", "b", "c", "e", "f", "g", "h", "i"];
    let batch = RecordBatch::try_from_iter(names.into_iter().zip(columns)).unwrap();
    let stored: Vec<MyColumn> = db
        .rt
        .block_on(table_columns(&db.pool, &db.name, "d", "test"))
        .unwrap()
        .unwrap();
    let stored: Vec<&MyColumn> = stored.iter().collect();
    let layout = DigestLayout::new(&types, Some(&stored)).expect("every type digests");
    assert_eq!(DigestLayout::new(&types, None), Some(layout.clone()));
    let mut sent = RowDigest::default();
    assert!(sent.add_sent(&layout, &batch));
    assert_eq!(sent.rows, 4);
    let read = |t: &str| {
        db.rt.block_on(async {
            let mut digest = RowDigest::default();
            let sql = format!("SELECT a, b, c, e, f, g, h, i FROM {}.{t}", db.q());
            let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch(&db.pool);
            while let Some(row) = rows.try_next().await.unwrap() {
                digest.add_row(&row).unwrap();
            }
            digest
        })
    };
    assert_eq!(
        read("d"),
        sent,
        "the rows read back digest other than the rows sent"
    );
    // Any one value changed, a NULL for a value or an empty one for a NULL, values that
    // trade rows: the digest changes.
    for change in [
        "a = a + 1 WHERE a = 0",
        "b = NULL WHERE b = 0",
        "c = c - 1 WHERE c = 4294967296",
        "e = NOT e WHERE e = 1",
        "f = CONCAT(f, ' ') WHERE f = ''",
        "g = UPPER(g) WHERE g = 'x'",
        "g = '' WHERE g IS NULL AND a = 0",
        "h = CONCAT(h, x'00') WHERE h = x'3a'",
        "i = i + INTERVAL 1 DAY WHERE i = '2024-02-29'",
        "a = IF(a = 0, -32768, 0) WHERE a IN (0, -32768)",
    ] {
        db.exec(&format!(
            "DROP TABLE IF EXISTS {s}.d2; CREATE TABLE {s}.d2 LIKE {s}.d; INSERT INTO {s}.d2 SELECT * FROM {s}.d; \
             UPDATE {s}.d2 SET {change}",
            s = db.q()
        ));
        let got = read("d2");
        assert_eq!(got.rows, 4, "{change}");
        assert_ne!(got.sum, sent.sum, "{change}");
    }
    // A stored type that returns other bytes for the same values is not digested.
    let mut wider = stored[0].clone();
    wider.data_type = "int".into();
    let mut other = stored.clone();
    other[0] = &wider;
    assert!(DigestLayout::new(&types, Some(&other)).is_none());
    assert!(DigestLayout::new(&[BigInt, Double], None).is_none());
}

/// Appends `csv` (as `samples/<table>.csv`) to the existing `table` of `dst` with
/// read-back off: `types` are `[source.types]` lines besides `id`'s, `columns` the target
/// columns besides `id`. The run must end with rows rejected (exit 1).
fn append_with_rejects(
    ws: &Workspace,
    dst: &MyDb,
    table: &str,
    csv: &str,
    types: &str,
    columns: &str,
) {
    ws.write(&format!("samples/{table}.csv"), csv);
    let p = ws.write(
        &format!("pipelines/{table}.toml"),
        &format!(
            r#"name = "{table}"
verify = "off"
[source]
url = "../samples/{table}.csv"
key = "id"
[source.types]
id = "bigint"
{types}
[target]
url = "{}"
table = "{table}"
if_exists = "append"
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
{columns}
"#,
            dst.url()
        ),
    );
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
}

/// `row_key`, `column_name`, `value` and `reason` of `table`'s quarantine, by key.
fn rejects(dst: &MyDb, table: &str) -> Vec<Vec<String>> {
    dst.rows(&format!(
        "SELECT row_key, column_name, value, reason FROM {}.{} ORDER BY row_key",
        dst.q(),
        my_quote(&format!("{table}_rejects"))
    ))
}

/// The quarantine row of a value the sink refused for column `column` of type `shown`.
fn refused(key: &str, column: &str, value: &str, shown: &str, why: &str) -> Vec<String> {
    vec![
        key.into(),
        column.into(),
        value.into(),
        format!("the target refused the row: column {column} is {shown}, which {why}"),
    ]
}

#[test]
fn float_digits_and_char_trailing_spaces_an_existing_table_would_change_are_quarantined() {
    let ws = Workspace::new();
    let dst = MyDb::new("rs_my_float_char");
    // MariaDB rounds a double into a float(m,d) or double(m,d) column to d places, and
    // a char(n) gives text back without its trailing spaces, with no error even in
    // strict mode; with verify = "off" nothing would notice.
    dst.exec(&format!(
        "CREATE TABLE {}.prices (id BIGINT PRIMARY KEY, label CHAR(8), price DOUBLE(10,2), ratio FLOAT(7,2), share FLOAT(6,2))",
        dst.q()
    ));
    append_with_rejects(
        &ws,
        &dst,
        "prices",
        "id,label,price,ratio,share\n1,ok,1.5,0.25,1.23\n2,\"trail \",1.5,0.25,1.23\n3,ok,12.345,0.25,1.23\n4,ok,2,0.1,1.23\n5,ok,3,0.125,1.23\n6,\" lead\",4.25,0.5,0.1\n7,,,,\n",
        "price = \"double\"\nratio = \"double\"\nshare = \"real\"",
        "label = { type = \"text\", expr = \"label\" }\nprice = { type = \"double\", expr = \"price\" }\nratio = { type = \"double\", expr = \"ratio\" }\nshare = { type = \"real\", expr = \"share\" }",
    );
    assert_eq!(
        dst.rows(&format!(
            "SELECT CAST(id AS CHAR), CONCAT('[', label, ']'), CAST(price AS CHAR), CAST(ratio AS CHAR), CAST(share AS CHAR) FROM {}.prices ORDER BY id",
            dst.q()
        )),
        // A real into a float(6,2) is kept as the float it is (1.23, 0.1 in single
        // precision).
        [
            ["1", "[ok]", "1.50", "0.25", "1.23"],
            ["6", "[ lead]", "4.25", "0.50", "0.10"],
            ["7", "NULL", "NULL", "NULL", "NULL"],
        ]
    );
    let finer = "keeps 2 decimal places: a finer value would be rounded or cut";
    let single =
        "keeps 2 decimal places in single precision: a finer value would be rounded or cut";
    assert_eq!(
        rejects(&dst, "prices"),
        [
            refused(
                "2",
                "label",
                "trail ",
                "char(8)",
                "gives text back without its trailing spaces: they would be lost"
            ),
            refused("3", "price", "12.345", "double(10,2)", finer),
            refused("4", "ratio", "0.1", "float(7,2)", single),
            refused("5", "ratio", "0.125", "float(7,2)", single),
        ]
    );
}

#[test]
fn enum_set_and_uuid_text_an_existing_table_would_rewrite_is_quarantined() {
    let ws = Workspace::new();
    let dst = MyDb::new("rs_my_enum_set");
    // In strict mode too, MariaDB stores 'open' in enum('Open') as 'Open', 'z,x' in a
    // set as 'x,z', an uppercase UUID in lowercase, and 'ab   ' in a varchar(4) as
    // 'ab  ', with no error.
    dst.exec(&format!(
        "CREATE TABLE {}.tags (id BIGINT PRIMARY KEY, state ENUM('Open','it''s'), flags SET('x','Y','z'), ref UUID, code VARCHAR(4))",
        dst.q()
    ));
    append_with_rejects(
        &ws,
        &dst,
        "tags",
        "id,state,flags,ref,code\n1,Open,\"x,z\",a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,ab\n2,open,x,,\n3,it's,\"z,x\",,\n4,,Y,A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11,\n5,,,,\n6,,,,\"ab   \"\n7,,,,éééé\n",
        "",
        "state = { type = \"text\", expr = \"state\" }\nflags = { type = \"text\", expr = \"flags\" }\nref = { type = \"text\", expr = \"ref\" }\ncode = { type = \"text\", expr = \"code\" }",
    );
    assert_eq!(
        dst.rows(&format!(
            "SELECT CAST(id AS CHAR), state, flags, CAST(ref AS CHAR), code FROM {}.tags ORDER BY id",
            dst.q()
        )),
        // Four two-byte characters fit a varchar(4).
        [
            ["1", "Open", "x,z", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "ab"],
            ["5", "NULL", "NULL", "NULL", "NULL"],
            ["7", "NULL", "NULL", "NULL", "éééé"],
        ]
    );
    assert_eq!(
        rejects(&dst, "tags"),
        [
            refused(
                "2",
                "state",
                "open",
                "enum('Open','it''s')",
                "stores only its members, spelled as declared: another text would be changed or refused"
            ),
            refused(
                "3",
                "flags",
                "z,x",
                "set('x','Y','z')",
                "stores its members in their declared order and spelling, each once: this text would be changed or refused"
            ),
            refused(
                "4",
                "ref",
                "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
                "uuid",
                "stores a UUID in its lowercase, dashed form: this text would be changed or refused"
            ),
            refused(
                "6",
                "code",
                "ab   ",
                "varchar(4)",
                "holds 4 characters: the spaces past them would be cut"
            ),
        ]
    );
}
