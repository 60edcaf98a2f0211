use super::*;

fn parse(text: &str) -> Result<Pipeline> {
    let env = |name: &str| match name {
        "DB_PATH" => Some("data/shop.db".to_string()),
        _ => None,
    };
    Pipeline::parse(Path::new("/p/move.toml"), text, &env)
}

fn errors(text: &str) -> String {
    match parse(text) {
        Err(Error::Config(d)) => d.to_string(),
        Err(other) => panic!("expected config errors, got {other}"),
        Ok(_) => panic!("expected config errors, got a valid pipeline"),
    }
}

const GOOD: &str = r#"
name = "users_v1_to_v2"
[source]
url = "sqlite://${DB_PATH}"
table = "users_v1"
key = "id"
[target]
url = "out/users"
format = "parquet"
[target.parquet]
compression = "zstd(3)"
[target.columns]
id = { type = "bigint", expr = "id", primary_key = true }
email = { type = "varchar(200)", expr = "lower(email)", nullable = false }
[filter]
where = "deleted_at IS NULL"
[chunks]
rows = 500
parallel = 3
"#;

#[test]
fn parses_a_full_pipeline_and_resolves_paths_against_its_folder() {
    let p = parse(GOOD).unwrap();
    assert_eq!(p.name, "users_v1_to_v2");
    assert_eq!(
        p.source.location,
        Location::Sqlite {
            path: "/p/data/shop.db".into()
        }
    );
    assert_eq!(
        p.target.location,
        Location::Files {
            path: "/p/out/users".into(),
            format: FileFormat::Parquet
        }
    );
    let names: Vec<_> = p
        .target
        .columns
        .iter()
        .map(|c| c.name.value.as_str())
        .collect();
    assert_eq!(names, ["id", "email"]);
    assert!(!p.target.columns[0].nullable);
    assert_eq!(p.target.columns[1].ty.value, ColumnType::Varchar(200));
    assert_eq!(p.filter.unwrap().value, "deleted_at IS NULL");
    assert_eq!(
        p.chunks,
        ChunkConfig {
            rows: 500,
            parallel: 3,
            batch_rows: 8192,
            retry_seconds: 60,
            lease_seconds: 30
        }
    );
}

#[test]
fn fingerprint_ignores_comments_and_parallelism_but_not_expressions() {
    let base = parse(GOOD).unwrap().fingerprint();
    let commented = GOOD
        .replace("[filter]", "# a comment\n[filter]")
        .replace("parallel = 3", "parallel = 1");
    assert_eq!(parse(&commented).unwrap().fingerprint(), base);
    let changed = GOOD.replace("lower(email)", "upper(email)");
    assert_ne!(parse(&changed).unwrap().fingerprint(), base);
}

#[test]
fn reports_every_error_with_its_line_and_a_suggestion() {
    let text = r#"name = "x"
[source]
ulr = "sqlite://a.db"
table = "t"
[target]
url = "out/x.parquet"
[target.columns]
id = { type = "bigint", exp = "id" }
n = { type = "numeric", expr = "n" }
[chunks]
rows = 0
"#;
    assert_eq!(
        errors(text),
        "/p/move.toml has 6 errors
/p/move.toml:2:1: missing `url` in [source]
    [source]
    ^
/p/move.toml:3:1: unknown key `ulr` in [source]
    ulr = \"sqlite://a.db\"
    ^
    help: did you mean `url`?
/p/move.toml:8:6: missing `expr` in [target.columns.id]
    id = { type = \"bigint\", exp = \"id\" }
         ^
/p/move.toml:8:25: unknown key `exp` in [target.columns.id]
    id = { type = \"bigint\", exp = \"id\" }
                            ^
    help: did you mean `expr`?
/p/move.toml:9:14: type `numeric` needs a precision and scale, e.g. numeric(12,2)
    n = { type = \"numeric\", expr = \"n\" }
                 ^
/p/move.toml:11:8: `chunks.rows` must be an integer of at least 1
    rows = 0
           ^"
    );
}

#[test]
fn unset_environment_variable_is_an_error_at_its_line() {
    let text = GOOD.replace("${DB_PATH}", "${NOPE}");
    let e = errors(&text);
    assert!(
        e.contains("/p/move.toml:4:7: environment variable `NOPE` is not set"),
        "{e}"
    );
}

#[test]
fn database_urls_are_redacted_in_errors() {
    let text = GOOD.replace("sqlite://${DB_PATH}", "mariadb://app:hunter2@db");
    let e = errors(&text);
    assert!(!e.contains("hunter2"), "{e}");
    assert!(
        e.contains("the MySQL url `mariadb://app:***@db` names no database"),
        "{e}"
    );
    let text = GOOD.replace("sqlite://${DB_PATH}", "postgres://app:hunter2@db");
    let e = errors(&text);
    assert!(!e.contains("hunter2"), "{e}");
    assert!(
        e.contains("the PostgreSQL url `postgres://app:***@db` names no database"),
        "{e}"
    );
}

#[test]
fn invalid_toml_points_at_the_syntax_error() {
    let e = errors("name = \"x\"\n[source\n");
    assert!(
        e.starts_with("/p/move.toml has 1 error\n/p/move.toml:2:"),
        "{e}"
    );
    assert!(e.contains("invalid TOML"), "{e}");
}

#[test]
fn expands_env_and_rejects_unclosed_references() {
    let env = |n: &str| (n == "A").then(|| "1".to_string());
    assert_eq!(expand_env("x${A}y${A}", &env).unwrap(), "x1y1");
    assert_eq!(
        expand_env("x${A", &env).unwrap_err(),
        "unclosed `${` in \"x${A\""
    );
}

#[test]
fn a_composite_key_is_a_list_of_distinct_column_names() {
    let p = parse(&GOOD.replace("key = \"id\"", "key = [\"tenant\", \"id\"]")).unwrap();
    assert_eq!(
        p.source.key.as_ref().map(|k| k.value.clone()),
        Some(vec!["tenant".to_string(), "id".to_string()])
    );
    // A one-column key keeps the fingerprint it had before composite keys.
    let one = parse(GOOD).unwrap();
    let setting = one
        .settings()
        .into_iter()
        .find(|(k, _)| k == "source.key")
        .map(|(_, v)| v);
    assert_eq!(setting.as_deref(), Some("Some(\"id\")"));

    let e = errors(&GOOD.replace("key = \"id\"", "key = []"));
    assert!(
        e.contains("/p/move.toml:6:7: `source.key` is an empty list; name at least one column"),
        "{e}"
    );
    assert!(!e.contains("missing `key`"), "{e}");
    let e = errors(&GOOD.replace("key = \"id\"", "key = [\"id\", \"id\"]"));
    assert!(
        e.contains("/p/move.toml:6:7: `source.key` names column `id` twice"),
        "{e}"
    );
    let e = errors(&GOOD.replace("key = \"id\"", "key = 7"));
    assert!(
        e.contains("/p/move.toml:6:7: `source.key` must be a string or a list of strings"),
        "{e}"
    );
}

#[test]
fn a_database_pool_holds_a_connection_for_every_chunk_in_flight() {
    let pg = GOOD.replace("sqlite://${DB_PATH}", "postgres://app@db/shop");
    // parallel = 3 in GOOD: the default pool stays 8; parallel = 12 raises it.
    let p = parse(&pg).unwrap();
    assert_eq!(p.source.db.pool_size, Some(8));
    let p = parse(&pg.replace("parallel = 3", "parallel = 12")).unwrap();
    assert_eq!(p.source.db.pool_size, Some(12));
    // A file target has no pool.
    assert_eq!(p.target.db.pool_size, None);
    let e = errors(&pg.replace(
        "table = \"users_v1\"",
        "table = \"users_v1\"\npool_size = 2",
    ));
    assert!(
        e.contains("/p/move.toml:6:13: pool_size = 2 is less than [chunks] parallel = 3: each chunk in flight holds a connection, so chunks would wait for one"),
        "{e}"
    );
    assert!(
        e.contains("set pool_size = 3 or more, or lower parallel"),
        "{e}"
    );
}

const DDL: &str = r#"name = "users"
[source]
url = "sqlite://src.db"
table = "users"
key = "id"
[target]
url = "sqlite://dst.db"
table = "users"
[target.columns]
id = { type = "bigint", expr = "id", primary_key = true, identity = true }
email = { type = "text", expr = "email" }
team = { type = "integer", expr = "team", default = 1 }
status = { type = "text", expr = "'x'", default = "'new'" }
[[target.indexes]]
columns = ["email"]
unique = true
[[target.indexes]]
columns = ["team", "email"]
name = "by_team"
[[target.foreign_keys]]
columns = ["team"]
references = "teams (id)"
on_delete = "set null"
[[target.constraints]]
check = "length(email) > 3"
"#;

#[test]
fn parses_the_table_declarations_with_their_default_names() {
    let p = parse(DDL).unwrap();
    let t = &p.target;
    assert!(t.columns[0].identity);
    assert_eq!(t.columns[2].default.as_ref().unwrap().value, "1");
    assert_eq!(t.columns[3].default.as_ref().unwrap().value, "'new'");
    assert_eq!(
        t.indexes,
        vec![
            IndexDecl {
                name: "users_email_key".into(),
                columns: vec!["email".into()],
                unique: true
            },
            IndexDecl {
                name: "by_team".into(),
                columns: vec!["team".into(), "email".into()],
                unique: false
            },
        ]
    );
    assert_eq!(
        t.foreign_keys,
        vec![ForeignKeyDecl {
            name: "users_team_fkey".into(),
            columns: vec!["team".into()],
            table: "teams".into(),
            references: vec!["id".into()],
            on_delete: Some("SET NULL"),
            on_update: None,
        }]
    );
    assert_eq!(
        t.constraints,
        vec![ConstraintDecl {
            name: "users_check1".into(),
            check: "length(email) > 3".into()
        }]
    );
    // None of them decides which rows are written: the fingerprint ignores them.
    let bare = DDL
        .split("[[target.indexes]]")
        .next()
        .unwrap()
        .replace(", identity = true", "");
    assert_eq!(parse(&bare).unwrap().fingerprint(), p.fingerprint());
}

#[test]
fn mistakes_in_the_table_declarations_are_reported_at_their_place() {
    let bad = DDL
        .replace("identity = true", "identity = \"yes\"")
        .replace(
            "email = { type = \"text\", expr = \"email\" }",
            "email = { type = \"text\", expr = \"email\", identity = true }",
        )
        .replace("[\"team\", \"email\"]", "[\"team\", \"mail\"]")
        .replace("teams (id)", "teams")
        .replace("set null", "nullify")
        .replace("expr = \"team\",", "expr = \"team\", primary_key = true,")
        .replace("> 3\"", "> 3\"\nname = \"users_email_key\"");
    let text = errors(&bad);
    for want in [
        "/p/move.toml:10:69: `target.columns.id.identity` must be true or false, not string",
        "/p/move.toml:11:42: `identity` applies to an integer primary key column (smallint, int or bigint with primary_key = true); `email` is not one",
        "/p/move.toml:11:1: `identity` column `email` must be the whole primary key; this one has 2 columns",
        "/p/move.toml:18:11: `target.indexes.1.columns` names column `mail`, which [target.columns] does not declare",
        "/p/move.toml:26:8: the name `users_email_key` is declared twice (line 14); an index, foreign key or constraint needs a name of its own",
        "/p/move.toml:22:14: `references` must be written \"table(column, ...)\", not \"teams\"",
        "/p/move.toml:23:13: unknown on_delete `nullify`; expected \"no action\", \"restrict\", \"cascade\", \"set null\", \"set default\"",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn a_file_target_takes_no_table_declarations() {
    let bad = DDL.replace(
        "url = \"sqlite://dst.db\"",
        "url = \"out/users\"\nformat = \"csv\"",
    );
    let text = errors(&bad);
    assert!(
        text.contains("/p/move.toml:15:10: `target.indexes` works for database targets only; a file has no indexes"),
        "{text}"
    );
    assert!(
        text.contains(
            "column `id` declares `default` or `identity`, which only a database target holds"
        ),
        "{text}"
    );
}

#[test]
fn the_catch_up_throttle_is_checked_against_the_source_database() {
    let online = "[online]\nenabled = true\nmax_rows_per_second = 500\nmax_threads_running = 20\nmax_active_backends = -1\n";
    let text = errors(&format!("{GOOD}{online}"));
    for want in [
        "/p/move.toml:23:1: [online] max_threads_running applies to a MySQL/MariaDB source (its Threads_running); this source is SQLite",
        "/p/move.toml:24:23: `online.max_active_backends` must be an integer of at least 0",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let pg = GOOD.replace(
        "url = \"sqlite://${DB_PATH}\"",
        "url = \"postgres://app@db/shop\"",
    );
    let p = parse(&format!(
        "{pg}[online]\nenabled = true\nmax_rows_per_second = 500\nmax_active_backends = 8\nmax_replica_lag_ms = 1500\n"
    ))
    .unwrap();
    assert_eq!(
        (
            p.online.max_rows_per_second,
            p.online.max_active_backends,
            p.online.max_replica_lag_ms,
            p.online.max_threads_running
        ),
        (500, 8, 1500, 0)
    );
    let text = errors(&format!("{pg}[online]\nmax_threads_running = 4\n"));
    assert!(
        text.contains("/p/move.toml:21:1: [online] max_threads_running applies to a MySQL/MariaDB source (its Threads_running); this source is PostgreSQL"),
        "{text}"
    );
}
