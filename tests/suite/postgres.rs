//! PostgreSQL sources and targets, on the real server (`ROWSHIFT_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`). Each test works in schemas of its own,
//! dropped afterwards, so tests run in parallel. A server that cannot be reached fails the
//! test, in CI and outside it: a skipped test would pass without checking anything.

use std::collections::BTreeMap;

use crate::common::{PgSchema, ServerDb, Workspace, parquet_rows, pg_quote, pg_url};
use crate::scenarios::{Target, mode_pipeline, run_ok};

impl Target for PgSchema {
    fn create(tag: &str) -> Self {
        PgSchema::new(tag)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn q(&self) -> String {
        pg_quote(&self.name)
    }

    fn quote(name: &str) -> String {
        pg_quote(name)
    }

    fn location(&self) -> String {
        format!("url = \"{}\"\nschema = {}", pg_url(), self.toml())
    }

    fn exec(&self, sql: &str) {
        ServerDb::exec(self, sql)
    }

    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        ServerDb::rows(self, sql)
    }

    fn text(expr: &str) -> String {
        format!("({expr})::text")
    }

    fn make_items(&self, n: i64) {
        self.exec(&format!(
            "CREATE TABLE {s}.items (id bigint PRIMARY KEY, name text NOT NULL, price numeric(12,2), qty integer, \
             made timestamp, active boolean, tag varchar(10));
             INSERT INTO {s}.items SELECT g, 'item ' || g || CASE WHEN g % 7 = 0 THEN ' ünï' ELSE '' END, \
             (g * 1.25)::numeric(12,2), CASE WHEN g % 5 = 0 THEN NULL ELSE g % 13 END, \
             timestamp '2024-01-01 00:00:00' + g * interval '1 hour 1.5 seconds', g % 2 = 0, \
             CASE WHEN g % 3 = 0 THEN '' ELSE 't' || (g % 4) END FROM generate_series(1, {n}) g",
            s = self.q()
        ));
    }

    const NAME_TYPE: &'static str = "text";

    fn change_items(&self) {
        self.exec(&format!(
            "UPDATE {s}.items SET name = name || ' v2', qty = -1 WHERE id % 9 = 0;
             INSERT INTO {s}.items (id, name, qty) SELECT g, 'new ' || g, g FROM generate_series(301, 320) g",
            s = self.q()
        ));
    }

    const DUPLICATE_KEY: &'static str = "duplicate key";

    fn drop_items_key(&self) {
        self.exec(&format!(
            "ALTER TABLE {}.items DROP CONSTRAINT items_pkey",
            self.q()
        ));
    }

    fn make_words(&self) -> usize {
        // Mixed case, accents and symbols: byte order differs from most collations.
        self.exec(&format!(
            "CREATE TABLE {s}.words (w varchar(40) PRIMARY KEY, n int);
             INSERT INTO {s}.words SELECT w, row_number() OVER () FROM unnest(ARRAY[
               'apple','Apple','APPLE','éclair','Eclair','zebra','Zebra','_under','~tilde','a b','a-b','ab',
               'ß','ss','Ö','o','Ø','日本','中文','😀','0','10','9','It''s','\"quoted\"']) AS w",
            s = self.q()
        ));
        25
    }

    fn words(&self) -> Vec<Vec<String>> {
        self.rows(&format!(
            "SELECT w::text, n::text FROM {}.words x ORDER BY x.w COLLATE \"C\"",
            self.q()
        ))
    }

    fn int(expr: &str) -> String {
        format!("({expr})::int")
    }

    fn tables(&self) -> i64 {
        self.rows(&format!(
            "SELECT count(*)::text FROM information_schema.tables WHERE table_schema = '{}'",
            self.name.replace('\'', "''")
        ))[0][0]
            .parse()
            .unwrap()
    }

    fn users_ddl(&self) -> Vec<String> {
        vec![
            format!("CREATE TABLE {}.\"users\" (", pg_quote(&self.name)),
            "\"id\" bigint NOT NULL".to_string(),
            "\"email\" varchar(200) NOT NULL".to_string(),
            "\"score\" double precision".to_string(),
            "PRIMARY KEY (\"id\")".to_string(),
        ]
    }

    fn users_types(&self) -> Vec<String> {
        self.rows(&format!(
            "SELECT column_name::text, data_type::text, coalesce(character_maximum_length::text, '') FROM information_schema.columns \
             WHERE table_schema = '{}' AND table_name = 'users' ORDER BY ordinal_position",
            self.name
        ))
        .iter()
        .map(|r| r.join(" "))
        .collect()
    }

    const USERS_TYPES: &'static [&'static str] = &[
        "id bigint ",
        "email character varying 200",
        "country text ",
        "score double precision ",
        "name_len integer ",
    ];

    fn make_strict_items(&self) {
        // PostgreSQL names the row of the COPY that breaks the check; the foreign key is
        // checked at the end of the statement, naming no row.
        self.exec(&format!(
            "CREATE TABLE {d}.kinds (qty integer PRIMARY KEY);
             INSERT INTO {d}.kinds SELECT g FROM generate_series(0, 10) g;
             CREATE TABLE {d}.items (id bigint PRIMARY KEY, name text UNIQUE,
               qty integer CHECK (qty <> 12) REFERENCES {d}.kinds (qty))",
            d = self.q()
        ));
    }

    fn refusal(&self, id: i64) -> Vec<String> {
        self.rows(&format!(
            "SELECT reason, coalesce(value, 'NULL'), coalesce(column_name, 'NULL'), source_row::jsonb->>'name' FROM {}.items_rejects WHERE row_key = '{id}'",
            self.q()
        ))[0]
            .clone()
    }

    fn expected_refusal(&self, id: i64) -> Vec<String> {
        let row: [&str; 4] = match id {
            12 => [
                "the target refused the row: new row for relation \"items\" violates check constraint \"items_qty_check\"",
                "Failing row contains (12, item 12, 12).",
                "NULL",
                "item 12",
            ],
            11 => [
                "the target refused the row: insert or update on table \"items\" violates foreign key constraint \"items_qty_fkey\"",
                "Key (qty)=(11) is not present in table \"kinds\".",
                "NULL",
                "item 11",
            ],
            105 => [
                "the target refused the row: duplicate key value violates unique constraint \"items_name_key\"",
                "Key (name)=(same name) already exists.",
                "NULL",
                "same name",
            ],
            _ => panic!("no expected refusal for row {id}"),
        };
        row.map(String::from).to_vec()
    }

    const SCHEME: &'static str = "postgres";

    fn url_with_password(pw: &str) -> Option<String> {
        let url = pg_url().replacen("://postgres@", &format!("://postgres:{pw}@"), 1);
        url.contains(pw).then_some(url)
    }

    fn make_unmapped(&self) -> &'static [&'static str] {
        self.exec(&format!(
            "CREATE TABLE {s}.wide (id int PRIMARY KEY, span interval, big numeric(50,2));
             INSERT INTO {s}.wide VALUES (1, '1 day 02:00', 123.45)",
            s = self.q()
        ));
        &["span", "big"]
    }

    const UNMAPPED_ERRORS: &'static [&'static str] = &[
        "column `span`: rowshift cannot read its type interval without loss; declare [source.types] span = \"text\" to read its text form",
        "column `big`: its type numeric(50,2) does not fit an Arrow decimal",
    ];

    const UNMAPPED_ROWS: &'static [&'static str] = &["1|1 day 02:00:00|123.45"];

    fn make_typed_table(&self) -> usize {
        self.exec(&format!(
        r#"CREATE TABLE {s}.t (
            id integer PRIMARY KEY, i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision,
            n numeric(38,0), nf numeric(38,38), n2 numeric(12,4), nu numeric, b boolean, t text, vc varchar(5),
            d date, tm time, ts timestamp, tz timestamptz, by bytea, j json, jb jsonb, u uuid);
        INSERT INTO {s}.t VALUES
          (1, -32768, -2147483648, -9223372036854775808, -3.4028235e38, -1.7976931348623157e308,
           -99999999999999999999999999999999999999, -0.99999999999999999999999999999999999999, -12345678.1234, -1.5e-20,
           false, '', '', '0001-01-01', '00:00:00', '0001-01-01 00:00:00', '0001-01-01 00:00:00+00', '', '{{}}', '{{}}',
           '00000000-0000-0000-0000-000000000000'),
          (2, 32767, 2147483647, 9223372036854775807, 3.4028235e38, 1.7976931348623157e308,
           99999999999999999999999999999999999999, 0.99999999999999999999999999999999999999, 99999999.9999, 123456789012345678901234567890.123456789,
           true, 'Zoë ☃ 日本語 😀 "q" ''s'' \ tab	end', 'ünï☃😀', '9999-12-31', '23:59:59.999999', '9999-12-31 23:59:59.999999',
           '9999-12-31 23:59:59.999999+00', '\x00ff10', '{{"a": [1, 2.5, "x"]}}', '{{"b": null, "a": 1}}',
           'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
          (3, 0, 0, 0, 'NaN', 'Infinity', 0, 0, 0, 0, NULL, NULL, NULL, '2000-01-01', '12:00:00', '2000-01-01 00:00:00',
           '1999-12-31 23:00:00-01', '\x', 'null', '[]', NULL),
          (4, NULL, NULL, NULL, '-Infinity', 5e-324, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '1970-01-01', NULL,
           '1970-01-01 00:00:00.000001', '1969-12-31 23:59:59.999999+00', NULL, NULL, NULL, NULL),
          (5, 1, 1, 1, 1.5e-45, 2.2250738585072014e-308, 1, 0.00000000000000000000000000000000000001, 0.0001, 1e-40,
           true, 'x', 'abcde', '2024-02-29', '00:00:00.000001', '2024-02-29 12:34:56.789', '2024-02-29 12:34:56.789+05:30',
           '\x41', '"s"', '"s"', 'ffffffff-ffff-ffff-ffff-ffffffffffff')"#,
            s = self.q()
        ));
        5
    }

    const TYPED_COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("i2", "smallint"),
        ("i4", "integer"),
        ("i8", "bigint"),
        ("f4", "real"),
        ("f8", "double"),
        ("n", "numeric(38,0)"),
        ("nf", "numeric(38,38)"),
        ("n2", "numeric(12,4)"),
        ("nu", "text"),
        ("b", "boolean"),
        ("t", "text"),
        ("vc", "varchar(5)"),
        ("d", "date"),
        ("tm", "time"),
        ("ts", "timestamp"),
        ("tz", "timestamptz"),
        ("by", "bytea"),
        ("j", "text"),
        ("jb", "text"),
        ("u", "text"),
    ];

    fn typed_text(column: &str) -> String {
        format!("coalesce(({column})::text, 'NULL')")
    }

    /// The target was created with the declared types.
    fn check_typed(_rows: &[Vec<String>], dst: &Self) {
        let types = dst.rows(&format!(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = '{}.t'::regclass AND attnum > 1 ORDER BY attnum",
            dst.q()
        ));
        let types: Vec<&str> = types.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(
            types,
            [
                "smallint",
                "integer",
                "bigint",
                "real",
                "double precision",
                "numeric(38,0)",
                "numeric(38,38)",
                "numeric(12,4)",
                "text",
                "boolean",
                "text",
                "character varying(5)",
                "date",
                "time without time zone",
                "timestamp without time zone",
                "timestamp with time zone",
                "bytea",
                "text",
                "text",
                "text"
            ]
        );
    }

    fn make_shouting_items(&self) {
        self.exec(&format!(
            "CREATE TABLE {d}.items (id bigint PRIMARY KEY, name text, qty integer);
             CREATE FUNCTION {d}.shout() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN IF NEW.id = 42 THEN NEW.name := upper(NEW.name); END IF; RETURN NEW; END $$;
             CREATE TRIGGER shout BEFORE INSERT ON {d}.items FOR EACH ROW EXECUTE FUNCTION {d}.shout()",
            d = self.q()
        ));
    }

    fn make_coarse_payments(&self) {
        // PostgreSQL rounds a finer timestamp, time or numeric to the column's precision
        // without an error.
        self.exec(&format!(
            "CREATE TABLE {}.payments (id bigint PRIMARY KEY, at timestamp(0), amount numeric(10,2), took time(3),
               CONSTRAINT small CHECK (amount < 100))",
            self.q()
        ));
    }

    const COARSE_TYPES: [&'static str; 3] = [
        "timestamp(0) without time zone",
        "numeric(10,2)",
        "time(3) without time zone",
    ];

    fn coarse_check_refusal(&self) -> Vec<String> {
        [
            "6",
            "NULL",
            "Failing row contains (6, 2024-01-01 12:00:00, 500.00, 08:00:00).",
            "the target refused the row: new row for relation \"payments\" violates check constraint \"small\"",
        ]
        .map(String::from)
        .to_vec()
    }
}

#[test]
fn postgres_to_postgres_in_another_schema_matches_the_same_query_run_by_postgres() {
    let ws = Workspace::new();
    let src = PgSchema::new("rs_pg_src");
    let dst = PgSchema::new("rs_pg_dst");
    src.make_items(1234);
    let p = ws.write(
        "pipelines/pg_pg.toml",
        &format!(
            r#"name = "pg_pg"
[source]
url = "{url}"
schema = {src}
table = "items"
key = "id"
[target]
url = "{url}"
schema = {dst}
table = "items_v2"
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
label = {{ type = "text", expr = "upper(name)" }}
total = {{ type = "numeric(14,2)", expr = "price * 2" }}
qty = {{ type = "smallint", expr = "qty" }}
made_day = {{ type = "date", expr = "CAST(made AS DATE)" }}
made = {{ type = "timestamp", expr = "made" }}
active = {{ type = "boolean", expr = "NOT active" }}
tag = {{ type = "text", expr = "tag" }}
[filter]
where = "id % 10 <> 3"
[chunks]
rows = 100
parallel = 3
"#,
            url = pg_url(),
            src = src.toml(),
            dst = dst.toml()
        ),
    );
    run_ok(&ws, &p);
    let expected = src.rows(&format!(
        "SELECT id::text, upper(name), (price * 2)::numeric(14,2)::text, qty::text, made::date::text, made::text, (NOT active)::text, tag \
         FROM {}.items i WHERE id % 10 <> 3 ORDER BY i.id",
        src.q()
    ));
    let got = dst.rows(&format!(
        "SELECT id::text, label, total::text, qty::text, made_day::text, made::text, active::text, tag FROM {}.items_v2 i ORDER BY i.id",
        dst.q()
    ));
    assert_eq!(got.len(), 1234 - 124);
    assert_eq!(got, expected);
    // Chunks were planned as key ranges of 100 rows.
    assert_eq!(
        dst.rows(&format!(
            "SELECT count(*)::text FROM {}._rowshift_chunks",
            dst.q()
        ))[0][0],
        "13"
    );
}

#[test]
fn postgres_to_parquet_matches_rows_computed_by_postgres() {
    let ws = Workspace::new();
    let pg = PgSchema::new("rs_pg_parquet");
    pg.make_items(500);
    let p = ws.write(
        "pipelines/pg_parquet.toml",
        &format!(
            r#"name = "pg_parquet"
[source]
url = "{url}"
schema = {schema}
table = "items"
key = "id"
[target]
url = "../out/items"
format = "parquet"
[target.columns]
id = {{ type = "bigint", expr = "id" }}
name = {{ type = "text", expr = "concat(name, '!')" }}
price = {{ type = "numeric(12,2)", expr = "price" }}
qty = {{ type = "integer", expr = "qty * 10" }}
[chunks]
rows = 128
"#,
            url = pg_url(),
            schema = pg.toml()
        ),
    );
    // A dry run reads a sample and writes nothing.
    for args in [
        vec!["dry-run", p.as_str()],
        vec!["dry-run", p.as_str(), "--random", "--seed", "7"],
    ] {
        let out = ws.rowshift(&args);
        assert_eq!(out.code, 0, "{args:?}: {}{}", out.stdout, out.stderr);
    }
    assert!(!ws.path("out/items").exists());
    run_ok(&ws, &p);
    let got = parquet_rows(&ws.path("out/items"));
    let expected: BTreeMap<String, String> = pg
        .rows(&format!(
            "SELECT id::text, id::text || '|' || name || '!|' || price::text || '|' || coalesce((qty * 10)::text, 'NULL') FROM {}.items",
            pg.q()
        ))
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    assert_eq!(got.len(), 500);
    assert_eq!(got, expected);
}

#[test]
fn upsert_without_a_primary_key_is_a_config_error() {
    let ws = Workspace::new();
    let p = ws.write(
        "pipelines/nopk.toml",
        &format!(
            r#"name = "nopk"
[source]
url = "sqlite://../samples/shop.db"
table = "users_v1"
key = "id"
[target]
url = "{url}"
table = "users"
write_mode = "upsert"
[target.columns]
id = {{ type = "bigint", expr = "id" }}
"#,
            url = pg_url()
        ),
    );
    let out = ws.rowshift(&["validate", &p]);
    assert_ne!(out.code, 0);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("write_mode = \"upsert\" needs a primary key"),
        "{text}"
    );
}

#[test]
fn connection_options_are_for_postgresql_urls_only() {
    let ws = Workspace::new();
    let p = ws.write(
        "pipelines/opts.toml",
        r#"name = "opts"
[source]
url = "sqlite://../samples/shop.db"
table = "users_v1"
key = "id"
schema = "public"
[target]
url = "../out/x"
format = "parquet"
pool_size = 4
write_mode = "upsert"
[target.columns]
id = { type = "bigint", expr = "id", primary_key = true }
"#,
    );
    let out = ws.rowshift(&["validate", &p]);
    assert_ne!(out.code, 0);
    let text = format!("{}{}", out.stdout, out.stderr);
    for want in [
        "`schema` applies to PostgreSQL and MySQL urls only; [source] is not one",
        "`pool_size` applies to PostgreSQL and MySQL urls only; [target] is not one",
        "write_mode = \"upsert\" works for PostgreSQL and MySQL targets only",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
}

#[test]
fn lock_timeout_ms_stops_a_run_that_waits_for_a_lock() {
    let ws = Workspace::new();
    let src = PgSchema::new("rs_lock_src");
    let dst = PgSchema::new("rs_lock_dst");
    src.make_items(10);
    dst.exec(&format!(
        "CREATE TABLE {}.items (id bigint PRIMARY KEY, name text, qty integer)",
        dst.q()
    ));
    let p = mode_pipeline(
        &ws,
        "locked",
        &src,
        &dst,
        "if_exists = \"append\"\nlock_timeout_ms = 300\nstatement_timeout_ms = 20000",
    );
    // Another session holds the table while the run starts.
    let mut holder = dst.rt.block_on(dst.pool.begin()).unwrap();
    dst.rt
        .block_on(
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "LOCK TABLE {}.items IN ACCESS EXCLUSIVE MODE",
                dst.q()
            )))
            .execute(&mut *holder),
        )
        .unwrap();
    let t0 = std::time::Instant::now();
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    let waited = t0.elapsed();
    dst.rt.block_on(holder.rollback()).unwrap();
    assert_ne!(out.code, 0);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("lock timeout"), "{text}");
    assert!(waited < std::time::Duration::from_secs(15), "{waited:?}");
    // Released, the same run goes through.
    run_ok(&ws, &p);
    assert_eq!(dst.items(), src.items());
}

#[test]
fn a_view_is_read_like_a_table() {
    let ws = Workspace::new();
    let pg = PgSchema::new("rs_view");
    pg.make_items(300);
    pg.exec(&format!(
        "CREATE VIEW {s}.\"Cheap Items\" AS SELECT id, name, price FROM {s}.items WHERE price < 100",
        s = pg.q()
    ));
    let p = ws.write(
        "pipelines/view.toml",
        &format!(
            r#"name = "view"
[source]
url = "{url}"
schema = {schema}
table = "Cheap Items"
key = "id"
[target]
url = "../out/cheap"
format = "csv"
[target.columns]
id = {{ type = "bigint", expr = "id" }}
price = {{ type = "numeric(12,2)", expr = "price" }}
[chunks]
rows = 25
"#,
            url = pg_url(),
            schema = pg.toml()
        ),
    );
    run_ok(&ws, &p);
    let mut got: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(ws.path("out/cheap")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        got.extend(text.lines().skip(1).map(str::to_string));
    }
    got.sort_by_key(|l| l.split(',').next().unwrap().parse::<i64>().unwrap());
    let want: Vec<String> = pg
        .rows(&format!(
            "SELECT id::text || ',' || price::text FROM {}.items i WHERE price < 100 ORDER BY i.id",
            pg.q()
        ))
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(want.len(), 79);
    assert_eq!(got, want);
}

#[test]
fn an_integer_key_written_as_text_is_read_back_by_its_keys() {
    let ws = Workspace::new();
    let pg = PgSchema::new("rs_textid");
    for mode in ["insert", "replace-chunk"] {
        let p = ws.write(
            "pipelines/textid.toml",
            &format!(
                r#"name = "textid_{mode}"
[source]
url = "sqlite://../samples/shop.db"
table = "users_v1"
key = "id"
[target]
url = "{url}"
schema = {schema}
table = "users_{mode}"
write_mode = "{mode}"
[target.columns]
id = {{ type = "text", expr = "id", primary_key = true }}
country = {{ type = "text", expr = "country" }}
[chunks]
rows = 300
"#,
                url = pg_url(),
                schema = pg.toml()
            ),
        );
        run_ok(&ws, &p);
        assert_eq!(pg.count(&format!("users_{mode}")), 1000, "{mode}");
    }
}

#[test]
fn an_enum_is_read_as_its_label_and_written_into_an_enum_column() {
    let ws = Workspace::new();
    let src = PgSchema::new("rs_enum_src");
    let dst = PgSchema::new("rs_enum_dst");
    src.exec(&format!(
        "CREATE TYPE {s}.mood AS ENUM ('sad', 'ok', 'happy', 'très content');
         CREATE TABLE {s}.people (id int PRIMARY KEY, mood {s}.mood);
         INSERT INTO {s}.people VALUES (1, 'sad'), (2, 'très content'), (3, NULL), (4, 'happy')",
        s = src.q()
    ));
    dst.exec(&format!(
        "CREATE TYPE {d}.feeling AS ENUM ('happy', 'sad', 'très content', 'ok');
         CREATE TABLE {d}.people (id int PRIMARY KEY, mood {d}.feeling, shout text)",
        d = dst.q()
    ));
    let pipeline = |name: &str, mood: &str| {
        ws.write(
            &format!("pipelines/{name}.toml"),
            &format!(
                r#"name = "{name}"
[source]
url = "{url}"
schema = {src}
table = "people"
key = "id"
[target]
url = "{url}"
schema = {dst}
table = "people"
if_exists = "append"
[target.columns]
id = {{ type = "integer", expr = "id", primary_key = true }}
mood = {{ type = "text", expr = "{mood}" }}
shout = {{ type = "text", expr = "upper(mood)" }}
"#,
                url = pg_url(),
                src = src.toml(),
                dst = dst.toml()
            ),
        )
    };
    run_ok(&ws, &pipeline("enums", "mood"));
    assert_eq!(
        dst.rows(&format!(
            "SELECT id::text, coalesce(mood::text, 'NULL'), coalesce(shout, 'NULL') FROM {}.people ORDER BY id",
            dst.q()
        )),
        [
            ["1", "sad", "SAD"],
            ["2", "très content", "TRÈS CONTENT"],
            ["3", "NULL", "NULL"],
            ["4", "happy", "HAPPY"]
        ]
    );
    // A label the target enum does not have is refused by the server, row by row: those
    // rows are quarantined with its reason, the row without a label lands.
    dst.exec(&format!("TRUNCATE {}.people", dst.q()));
    let out = ws.rowshift(&["run", &pipeline("bad", "mood || '!'"), "--quiet"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        dst.rows(&format!("SELECT id::text FROM {}.people", dst.q())),
        [["3"]]
    );
    let reasons = dst.rows(&format!(
        "SELECT row_key, reason FROM {}.people_rejects ORDER BY row_key",
        dst.q()
    ));
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert_eq!(reasons[0][0], "1");
    assert!(
        reasons[0][1].starts_with("the target refused the row: invalid input value for enum ")
            && reasons[0][1].ends_with(": \"sad!\""),
        "{reasons:?}"
    );

    // A text source key written into an enum key column: its order is the labels'
    // declaration, not byte order, so read-back and verify find the rows by key.
    src.exec(&format!(
        "CREATE TABLE {s}.moods (label text PRIMARY KEY, n int);
         INSERT INTO {s}.moods VALUES ('sad', 1), ('ok', 2), ('happy', 3), ('très content', 4)",
        s = src.q()
    ));
    dst.exec(&format!(
        "CREATE TABLE {d}.moods (label {d}.feeling PRIMARY KEY, n int)",
        d = dst.q()
    ));
    let p = ws.write(
        "pipelines/moods.toml",
        &format!(
            r#"name = "moods"
[source]
url = "{url}"
schema = {src}
table = "moods"
key = "label"
[target]
url = "{url}"
schema = {dst}
table = "moods"
if_exists = "append"
write_mode = "replace-chunk"
[target.columns]
label = {{ type = "text", expr = "label", primary_key = true }}
n = {{ type = "integer", expr = "n" }}
[chunks]
rows = 2
"#,
            url = pg_url(),
            src = src.toml(),
            dst = dst.toml()
        ),
    );
    run_ok(&ws, &p);
    assert_eq!(
        dst.rows(&format!(
            "SELECT label::text, n::text FROM {}.moods ORDER BY n",
            dst.q()
        )),
        [
            ["sad", "1"],
            ["ok", "2"],
            ["happy", "3"],
            ["très content", "4"]
        ]
    );
    dst.exec(&format!(
        "UPDATE {}.moods SET n = 9 WHERE label = 'ok'",
        dst.q()
    ));
    let out = ws.rowshift(&["verify", &p]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("label=ok, column n: sent '2', the target holds '9'"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_char_n_key_keeps_its_padding_in_chunk_bounds() {
    let ws = Workspace::new();
    let src = PgSchema::new("rs_bpchar_src");
    let dst = PgSchema::new("rs_bpchar_dst");
    // `ab` is stored as `ab   `; a bound without the padding would sort before it in a
    // text target and leave the row outside its chunk's range.
    src.exec(&format!(
        "CREATE TABLE {s}.c (code char(5) PRIMARY KEY, n int);
         INSERT INTO {s}.c VALUES ('a', 1), ('ab', 2), ('ab!', 3), ('b', 4)",
        s = src.q()
    ));
    let p = ws.write(
        "pipelines/c.toml",
        &format!(
            r#"name = "c"
[source]
url = "{url}"
schema = {src}
table = "c"
key = "code"
[target]
url = "{url}"
schema = {dst}
table = "c"
[target.columns]
code = {{ type = "text", expr = "code", primary_key = true }}
n = {{ type = "integer", expr = "n" }}
[chunks]
rows = 1
"#,
            url = pg_url(),
            src = src.toml(),
            dst = dst.toml()
        ),
    );
    run_ok(&ws, &p);
    assert_eq!(
        dst.rows(&format!(
            "SELECT '[' || code || ']', n::text FROM {}.c ORDER BY n",
            dst.q()
        )),
        [
            ["[a    ]", "1"],
            ["[ab   ]", "2"],
            ["[ab!  ]", "3"],
            ["[b    ]", "4"]
        ]
    );
    let out = ws.rowshift(&["verify", &p]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
}

/// Sends a binary `COPY` stream into `table` and checks it copied `rows` rows.
fn copy_binary(pg: &PgSchema, table: &str, stream: &[u8], rows: u64) {
    pg.rt.block_on(async {
        let mut conn = pg.pool.acquire().await.unwrap();
        let mut copy = conn
            .copy_in_raw(&format!("COPY {table} FROM STDIN (FORMAT binary)"))
            .await
            .unwrap();
        copy.send(stream.to_vec()).await.unwrap();
        assert_eq!(copy.finish().await.unwrap(), rows);
    });
}

#[test]
fn the_server_hashes_what_it_stores_as_the_sink_hashed_it_when_sending() {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, BooleanArray, Date32Array, Float32Array, Float64Array, Int16Array, Int32Array,
        Int64Array, RecordBatch, StringArray, Time64MicrosecondArray, TimestampMicrosecondArray,
    };
    use rowshift::db::postgres::hash::RowHasher;
    use rowshift::db::postgres::{Encoder, PgKind};
    use rowshift::types::ColumnType::*;

    let pg = PgSchema::new("rs_pg_hash");
    pg.exec(&format!(
        "CREATE TABLE {}.h (a int2, b int4, c int8, d float4, e float8, f bool, g text, \
         h varchar(30), i date, j time, k timestamp)",
        pg.q()
    ));
    let types = [
        SmallInt,
        Int,
        BigInt,
        Real,
        Double,
        Boolean,
        Text,
        Varchar(30),
        Date,
        Time,
        Timestamp,
    ];
    // Edge values per column, NULLs included; 0 and -0 and NaN, empty and long text.
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int16Array::from(vec![
            Some(i16::MIN),
            Some(-1),
            Some(0),
            Some(i16::MAX),
            None,
        ])),
        Arc::new(Int32Array::from(vec![
            Some(i32::MIN),
            Some(-7),
            None,
            Some(1),
            Some(i32::MAX),
        ])),
        Arc::new(Int64Array::from(vec![
            Some(i64::MIN),
            Some(-1),
            Some(4_294_967_296),
            None,
            Some(i64::MAX),
        ])),
        Arc::new(Float32Array::from(vec![
            Some(f32::NAN),
            Some(-0.0),
            Some(1.5e-40),
            Some(f32::INFINITY),
            None,
        ])),
        Arc::new(Float64Array::from(vec![
            Some(0.0),
            Some(f64::NEG_INFINITY),
            None,
            Some(f64::NAN),
            Some(-2.5e300),
        ])),
        Arc::new(BooleanArray::from(vec![
            Some(true),
            Some(false),
            None,
            Some(true),
            Some(false),
        ])),
        Arc::new(StringArray::from(vec![
            Some(""),
            Some("a"),
            Some("José Álvarez, 李小龙 🎉"),
            None,
            Some("twelve bytes+twelve bytes+twelve bytes"),
        ])),
        Arc::new(StringArray::from(vec![
            Some("x"),
            None,
            Some("abcdefghijk"),
            Some("abcdefghijkl"),
            Some("ünï"),
        ])),
        Arc::new(Date32Array::from(vec![
            Some(-2_440_000),
            Some(0),
            Some(10_957),
            None,
            Some(2_900_000),
        ])),
        Arc::new(Time64MicrosecondArray::from(vec![
            Some(0),
            Some(86_399_999_999),
            None,
            Some(45_296_789_000),
            Some(1),
        ])),
        Arc::new(TimestampMicrosecondArray::from(vec![
            Some(-210_000_000_000_000_000),
            Some(0),
            Some(1_709_168_523_500_000),
            None,
            Some(9_000_000_000_000_000_000),
        ])),
    ];
    let batch = RecordBatch::try_from_iter(
        ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"]
            .into_iter()
            .zip(columns),
    )
    .unwrap();
    let kinds: Vec<PgKind> = types.iter().map(|t| PgKind::for_type(*t)).collect();
    let hasher = RowHasher::new(&types, None).expect("every type hashes");
    let mut enc = Encoder::hashing(hasher.clone());
    enc.rows(&batch, &kinds, "test", &[]).unwrap();
    enc.finish();
    let sent = enc.hashed.as_ref().unwrap().1;
    assert_eq!(sent.rows, 5);
    let t = format!("{}.h", pg.q());
    copy_binary(&pg, &t, &enc.buf, 5);
    let names: Vec<String> = "abcdefghijk".chars().map(|c| format!("\"{c}\"")).collect();
    let stored = |t: &str| {
        pg.rows(&format!(
            "SELECT count(*)::text, sum({})::text FROM {t}",
            hasher.sql(&names)
        ))
    };
    assert_eq!(
        stored(&t),
        [[sent.rows.to_string(), sent.sum.to_string()]],
        "the server's hashes of the stored rows differ from the sink's"
    );
    // Any one value changed, in any column, changes the sum.
    for (col, change) in [
        ("a", "a = a + 1"),
        ("d", "d = 0"),
        ("e", "e = 0"),
        ("f", "f = NOT f"),
        ("g", "g = g || ' '"),
        ("h", "h = upper(h)"),
        ("i", "i = i + 1"),
        ("j", "j = j + interval '1 microsecond'"),
        ("k", "k = k - interval '1 microsecond'"),
        ("c", "c = NULL"),
    ] {
        pg.exec(&format!(
            "DROP TABLE IF EXISTS {s}.h2; CREATE TABLE {s}.h2 AS SELECT * FROM {t}; \
             UPDATE {s}.h2 SET {change} WHERE ctid = (SELECT min(ctid) FROM {s}.h2 WHERE {col} IS NOT NULL AND {col}::text <> '0')",
            s = pg.q()
        ));
        assert_ne!(
            stored(&format!("{}.h2", pg.q()))[0][1],
            sent.sum.to_string(),
            "{change}"
        );
    }
    // Values PostgreSQL's own hashes take as one: an int8 whose halves XOR the same
    // (4294967296 and 1), a NULL date and an infinite one.
    for change in [
        "c = 1 WHERE c = 4294967296",
        "i = 'infinity' WHERE i IS NULL",
    ] {
        pg.exec(&format!(
            "DROP TABLE IF EXISTS {s}.h2; CREATE TABLE {s}.h2 AS SELECT * FROM {t}; UPDATE {s}.h2 SET {change}",
            s = pg.q()
        ));
        assert_ne!(
            stored(&format!("{}.h2", pg.q()))[0][1],
            sent.sum.to_string(),
            "{change}"
        );
    }
}

#[test]
fn the_server_hashes_text_of_every_length_as_the_sink_does_from_a_sliced_batch() {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use rowshift::db::postgres::hash::RowHasher;
    use rowshift::db::postgres::{Encoder, PgKind};
    use rowshift::types::ColumnType::*;

    let pg = PgSchema::new("rs_pg_hash_len");
    pg.exec(&format!("CREATE TABLE {}.h (k int8, t text)", pg.q()));
    // Row n holds n bytes (every tail of the 12-byte blocks, several blocks), some ending
    // in a multibyte character, every seventh NULL; then the batch is sliced, so the
    // arrays start at an offset.
    let texts: Vec<Option<String>> = (0..90)
        .map(|n: usize| {
            (n % 7 != 3).then(|| match n % 3 {
                1 if n >= 2 => format!("{}é", "a".repeat(n - 2)),
                0 => "x".repeat(n),
                _ => (0..n)
                    .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
                    .collect(),
            })
        })
        .collect();
    let keys: Vec<i64> = (0..90).map(|n| (n as i64 - 45) * 3_000_000_007).collect();
    let lengths: Vec<usize> = texts[5..85].iter().flatten().map(String::len).collect();
    let (shortest, longest) = (lengths.iter().min().unwrap(), lengths.iter().max().unwrap());
    assert!(
        (0..12).all(|tail| lengths.iter().any(|l| l % 12 == tail)),
        "{lengths:?}"
    );
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(keys)),
        Arc::new(StringArray::from(texts)),
    ];
    let batch = RecordBatch::try_from_iter(["k", "t"].into_iter().zip(columns))
        .unwrap()
        .slice(5, 80);
    let types = [BigInt, Text];
    let kinds: Vec<PgKind> = types.iter().map(|t| PgKind::for_type(*t)).collect();
    let hasher = RowHasher::new(&types, None).unwrap();
    let mut enc = Encoder::hashing(hasher.clone());
    enc.rows(&batch, &kinds, "test", &[]).unwrap();
    enc.finish();
    let sent = enc.hashed.as_ref().unwrap().1;
    assert_eq!(sent.rows, 80);
    let t = format!("{}.h", pg.q());
    copy_binary(&pg, &t, &enc.buf, 80);
    let names = ["\"k\"".to_string(), "\"t\"".to_string()];
    let sql = format!(
        "SELECT count(*)::text, sum({})::text, min(octet_length(t))::text, max(octet_length(t))::text FROM {t}",
        hasher.sql(&names)
    );
    assert_eq!(
        pg.rows(&sql),
        [[
            "80".to_string(),
            sent.sum.to_string(),
            shortest.to_string(),
            longest.to_string()
        ]]
    );
}

#[test]
fn the_server_hashes_a_char_n_column_as_the_sink_does_without_trailing_spaces() {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use rowshift::db::postgres::hash::RowHasher;
    use rowshift::db::postgres::{Encoder, PgKind};
    use rowshift::types::ColumnType::*;

    let pg = PgSchema::new("rs_pg_hash_bpchar");
    pg.exec(&format!("CREATE TABLE {}.h (k int8, c char(6))", pg.q()));
    // Shorter than 6 (padded), exactly 6, longer with only spaces past 6 (cut), with
    // and without trailing spaces, a leading space, a tab, empty, NULL, multibyte.
    let texts = [
        Some("ab"),
        Some("ab "),
        Some("abcdef"),
        Some("abcdef    "),
        Some(" ab"),
        Some("ab\t"),
        Some(""),
        None,
        Some("éé "),
    ];
    let batch = RecordBatch::try_from_iter([
        (
            "k",
            Arc::new(Int64Array::from_iter_values(0..texts.len() as i64)) as ArrayRef,
        ),
        ("c", Arc::new(StringArray::from(texts.to_vec()))),
    ])
    .unwrap();
    let types = [BigInt, Text];
    let kinds: Vec<PgKind> = types.iter().map(|t| PgKind::for_type(*t)).collect();
    let hasher = RowHasher::new(&types, Some(&[Some("int8"), Some("bpchar")])).unwrap();
    let mut enc = Encoder::hashing(hasher.clone());
    enc.rows(&batch, &kinds, "test", &[]).unwrap();
    enc.finish();
    let sent = enc.hashed.as_ref().unwrap().1;
    let t = format!("{}.h", pg.q());
    copy_binary(&pg, &t, &enc.buf, texts.len() as u64);
    let names = ["\"k\"".to_string(), "\"c\"".to_string()];
    // The server stores every text padded to 6 characters.
    let sql = format!(
        "SELECT count(*)::text, sum({})::text, bool_and(octet_length(c) >= 6)::text FROM {t}",
        hasher.sql(&names)
    );
    assert_eq!(
        pg.rows(&sql),
        [[
            texts.len().to_string(),
            sent.sum.to_string(),
            "true".to_string()
        ]]
    );
    // Hashed as plain text, the padding would differ from what was sent.
    let plain = RowHasher::new(&types, None).unwrap();
    let mut enc = Encoder::hashing(plain.clone());
    enc.rows(&batch, &kinds, "test", &[]).unwrap();
    enc.finish();
    assert_ne!(enc.hashed.as_ref().unwrap().1.sum, sent.sum);
}

#[test]
fn a_numeric_with_a_negative_scale_refuses_what_it_would_round_to_hundreds() {
    let ws = Workspace::new();
    let dst = PgSchema::new("rs_pg_negative_scale");
    // Since PostgreSQL 15 a numeric(10,-2) rounds 1250 to 1300 without an error.
    dst.exec(&format!(
        "CREATE TABLE {}.totals (id bigint PRIMARY KEY, total numeric(10,-2))",
        dst.q()
    ));
    ws.write(
        "samples/totals.csv",
        "id,total\n1,1200\n2,1250\n3,-300.00\n4,0.5\n5,\n",
    );
    let p = ws.write(
        "pipelines/totals.toml",
        &format!(
            r#"name = "totals"
verify = "off"
[source]
url = "../samples/totals.csv"
key = "id"
[source.types]
id = "bigint"
total = "numeric(12,2)"
[target]
url = "{}"
schema = {}
table = "totals"
if_exists = "append"
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
total = {{ type = "numeric(12,2)", expr = "total" }}
"#,
            pg_url(),
            dst.toml()
        ),
    );
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        dst.rows(&format!(
            "SELECT id::text, total::text FROM {}.totals ORDER BY id",
            dst.q()
        )),
        [["1", "1200"], ["3", "-300"], ["5", "NULL"]]
    );
    let reason = "the target refused the row: column total is numeric(10,-2), which keeps multiples of 100: a finer value would be rounded or cut";
    assert_eq!(
        dst.rows(&format!(
            "SELECT row_key, value, reason FROM {}.totals_rejects ORDER BY row_key",
            dst.q()
        )),
        [["2", "1250.00", reason], ["4", "0.50", reason]]
    );
}

#[test]
fn a_char_n_column_reads_back_equal_under_its_padding_and_a_varchar_n_refuses_cut_spaces() {
    // A table without a numeric column is checked by the server's hashes; one with one
    // reads its rows back and compares them.
    for (tag, extra) in [("hashed", ""), ("read", ", amount numeric(8,2)")] {
        let ws = Workspace::new();
        let dst = PgSchema::new(&format!("rs_pg_char_n_{tag}"));
        dst.exec(&format!(
            "CREATE TABLE {}.codes (id bigint PRIMARY KEY, code char(5), label varchar(4){extra})",
            dst.q()
        ));
        ws.write(
            "samples/codes.csv",
            "id,code,label\n1,ab,x\n2,abcde,y\n3,ab   ,z\n4,ab        ,w\n5,,v\n6,q,ab      \n7,\" b\",abcd\n",
        );
        let amount = match extra {
            "" => "",
            _ => "amount = { type = \"numeric(8,2)\", expr = \"CAST(id AS DECIMAL(8,2))\" }\n",
        };
        let p = ws.write(
            "pipelines/codes.toml",
            &format!(
                r#"name = "codes"
[source]
url = "../samples/codes.csv"
key = "id"
[source.types]
id = "bigint"
[target]
url = "{}"
schema = {}
table = "codes"
if_exists = "append"
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
code = {{ type = "text", expr = "code" }}
label = {{ type = "text", expr = "label" }}
{amount}"#,
                pg_url(),
                dst.toml()
            ),
        );
        // Before, every chunk failed its read-back: 'ab' was sent, 'ab   ' held.
        let out = ws.rowshift(&["run", &p, "--quiet"]);
        assert_eq!(out.code, 1, "{tag}: {}{}", out.stdout, out.stderr);
        assert_eq!(
            dst.rows(&format!(
                "SELECT id::text, '[' || code || ']', octet_length(code)::text, label FROM {}.codes ORDER BY id",
                dst.q()
            )),
            [
                ["1", "[ab]", "5", "x"],
                ["2", "[abcde]", "5", "y"],
                ["3", "[ab]", "5", "z"],
                ["4", "[ab]", "5", "w"],
                ["5", "NULL", "NULL", "v"],
                ["7", "[ b]", "5", "abcd"],
            ],
            "{tag}"
        );
        // A varchar(4) would have cut 'ab      ' to 'ab  ' without an error.
        assert_eq!(
            dst.rows(&format!(
                "SELECT row_key, value, reason FROM {}.codes_rejects ORDER BY row_key",
                dst.q()
            )),
            [[
                "6",
                "ab      ",
                "the target refused the row: column label is character varying(4), which holds 4 characters: the spaces past them would be cut"
            ]],
            "{tag}"
        );
        let out = ws.rowshift(&["verify", &p]);
        assert_eq!(out.code, 0, "{tag}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stdout.contains("1 compared, 0 differ"),
            "{}",
            out.stdout
        );
        // A changed char(n) value still differs, named with the texts as they compare.
        dst.exec(&format!(
            "UPDATE {}.codes SET code = 'ac' WHERE id = 3",
            dst.q()
        ));
        let out = ws.rowshift(&["verify", &p]);
        assert_eq!(out.code, 1, "{tag}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stdout
                .contains("id=3, column code: sent 'ab', the target holds 'ac'"),
            "{tag}: {}",
            out.stdout
        );
    }
}
