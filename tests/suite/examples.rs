//! The database examples in `pipelines/` run as written against the test servers: their
//! URLs come from `ROWSHIFT_PG_URL` and `ROWSHIFT_MYSQL_URL`, set here to the servers the
//! tests use, and their `schema` lines are pointed at a schema and a database of the
//! test's own, so tests run in parallel.

use std::collections::BTreeMap;

use crate::common::{MyDb, PgSchema, Workspace, my_url, pg_url, sqlite_rows, toml_str};
use crate::scenarios::Target;

/// The variables the database examples read their URLs from, set to the test servers.
pub(crate) fn example_env() -> [(&'static str, String); 2] {
    [
        ("ROWSHIFT_PG_URL", pg_url()),
        ("ROWSHIFT_MYSQL_URL", my_url()),
    ]
}

/// `text` of a pipeline with each `schema` line naming `pg` where its table's `url` is
/// `${ROWSHIFT_PG_URL}`, and `my` where it is `${ROWSHIFT_MYSQL_URL}`.
pub(crate) fn in_own_schemas(text: &str, pg: &str, my: &str) -> String {
    let mut server = None;
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with('[') {
            server = None;
        } else if line.starts_with("url") && line.contains("${ROWSHIFT_PG_URL}") {
            server = Some(pg);
        } else if line.starts_with("url") && line.contains("${ROWSHIFT_MYSQL_URL}") {
            server = Some(my);
        }
        match server {
            Some(name) if line.starts_with("schema") => {
                out.push_str(&format!("schema = {}", toml_str(name)));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Creates, in `pg` and `my`, the `users` tables that the examples reading from a server
/// expect (as `shop_sqlite_to_postgres.toml` and `shop_postgres_to_mariadb.toml` write
/// them), so that those examples validate without running the others first.
pub(crate) fn make_example_sources(pg: &PgSchema, my: &MyDb) {
    pg.exec(&users_table(&pg.q()));
    my.exec(&users_table(&my.q()));
}

/// The `users` table the examples write, in the schema or database `q`.
fn users_table(q: &str) -> String {
    format!(
        "CREATE TABLE {q}.users (id bigint PRIMARY KEY, email varchar(254) NOT NULL, \
         first_name varchar(100), last_name varchar(100), signup_on date, country varchar(2), \
         score numeric(6,2))"
    )
}

/// `users` (id, email, first_name, last_name, signup_on, country, score) of a server as
/// `id|email|...` lines by id, the form `expected_users_v2` computes.
fn server_users<T: Target>(db: &T) -> BTreeMap<i64, String> {
    db.rows(&format!(
        "SELECT {}, email, first_name, last_name, {}, country, {} FROM {}.users",
        T::text("id"),
        T::text("signup_on"),
        T::text("score"),
        db.q()
    ))
    .into_iter()
    .map(|r| (r[0].parse().unwrap(), r.join("|")))
    .collect()
}

/// Runs a pipeline of `pipelines/` in the test's own schemas with the example variables
/// set, and returns its JSON summary.
fn run_example(ws: &Workspace, file: &str, (pg, my): (&PgSchema, &MyDb)) -> serde_json::Value {
    let path = format!("pipelines/{file}");
    let text = std::fs::read_to_string(ws.path(&path)).unwrap();
    ws.write(&path, &in_own_schemas(&text, &pg.name, &my.name));
    let env = example_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = ws.rowshift_env(&["run", &path, "--json"], &env);
    assert_eq!(out.code, 0, "{file}: {}{}", out.stdout, out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

/// The three database examples in a row, as their comments say to run them: the
/// quickstart's users from SQLite into PostgreSQL, from there into MariaDB (upserted),
/// and back into a SQLite file; every hop holds the rows the quickstart computes.
#[test]
fn the_database_examples_move_the_users_sqlite_to_postgres_to_mariadb_to_sqlite() {
    let ws = Workspace::new();
    let pg = PgSchema::new("rs_examples");
    let my = MyDb::new("rs_examples");
    let expected = crate::expected_users_v2(&ws);
    assert_eq!(expected.len(), 903);

    let summary = run_example(&ws, "shop_sqlite_to_postgres.toml", (&pg, &my));
    assert_eq!(summary["rows"]["written"], 903, "{summary}");
    assert_eq!(summary["rows"]["filtered"], 97, "{summary}");
    assert_eq!(server_users(&pg), expected);

    // MariaDB already holds an older version of one user: the upserting example
    // updates it rather than repeating it.
    let id = *expected.keys().next().unwrap();
    my.exec(&users_table(&my.q()));
    my.exec(&format!(
        "INSERT INTO {}.users (id, email, first_name) VALUES ({id}, 'old@example.com', 'Old')",
        my.q()
    ));
    let summary = run_example(&ws, "shop_postgres_to_mariadb.toml", (&pg, &my));
    assert_eq!(summary["rows"]["written"], 903, "{summary}");
    assert_eq!(server_users(&my), expected);

    let summary = run_example(&ws, "shop_mariadb_to_sqlite.toml", (&pg, &my));
    assert_eq!(summary["rows"]["written"], 903, "{summary}");
    assert_eq!(summary["rows"]["rejected"], 0, "{summary}");
    let got: BTreeMap<i64, String> = sqlite_rows(
        &ws.path("out/shop_roundtrip.db"),
        "SELECT id, email, first_name, last_name, signup_on, country, score FROM users",
    )
    .into_iter()
    .map(|r| (r[0].parse().unwrap(), r.join("|")))
    .collect();
    assert_eq!(got, expected);
}
