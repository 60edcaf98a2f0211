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
            retry_seconds: 60
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
