//! A password, in every form a connection URL can carry one, shows nowhere: not in any
//! output of any command (text or JSON, success or error), not in any table rowshift
//! writes (settings, checkpoint, quarantine) and not in any file. The URLs come from
//! the environment (`url = "${SRC_URL}"`), so no file of the test holds the secret and
//! the whole workspace can be searched for it. The password still reaches the driver:
//! on MariaDB the user has one and the run connects with it.

use crate::common::{MyDb, PgSchema, ServerDb, Workspace, my_quote, my_url, pg_quote, pg_url};
use crate::scenarios::{Target, scenarios};

/// The password: letters and digits only, so it reads the same percent-encoded.
const SECRET: &str = "Hx7Qpw9SeCrEt";

/// `base` (`scheme://user@host:port/db`) with the user `user` and the secret put in
/// every form: the user-info, `password` in the query (alone, after another parameter,
/// percent-encoded as drivers decode it), and keys a driver ignores but a reader would
/// not (`sslpassword`, `ssl-password`, `PASSWORD`). Each form carries a password the
/// driver uses, so that every one connects.
fn forms(base: &str, user: &str) -> Vec<(&'static str, String)> {
    let (scheme, rest) = base.split_once("://").unwrap();
    let after_user = rest.split_once('@').map_or(rest, |(_, h)| h);
    let plain = format!("{scheme}://{user}@{after_user}");
    let info = format!("{scheme}://{user}:{SECRET}@{after_user}");
    vec![
        ("user-info", info.clone()),
        ("password", format!("{plain}?password={SECRET}")),
        (
            "password after another key",
            format!("{plain}?connect_timeout=10&password={SECRET}"),
        ),
        (
            "percent-encoded key",
            format!("{plain}?pass%77ord={SECRET}"),
        ),
        (
            "ssl passwords and a capitalised key",
            format!("{info}?sslpassword={SECRET}&ssl-password={SECRET}&PASSWORD={SECRET}"),
        ),
    ]
}

/// Fails if `text` holds the secret, naming where.
fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.contains(SECRET),
        "the password shows in {what}:\n{text}"
    );
}

/// Every file under `dir` (state files, checkpoint databases, SQLite targets), as bytes.
fn assert_files_clean(dir: &std::path::Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            assert_files_clean(&path);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            let found = bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes());
            assert!(!found, "the password is in the file {}", path.display());
        }
    }
}

/// The pipeline: `items` (id, qty) from `${SRC_URL}` to `${DST_URL}`; a check rejects
/// qty 7, so the quarantine has rows.
fn pipeline(ws: &Workspace, src: &str, dst: &str) -> String {
    ws.write(
        "pipelines/secret.toml",
        &format!(
            r#"name = "secret"
[source]
url = "${{SRC_URL}}"
{src}
table = "items"
key = "id"
[target]
url = "${{DST_URL}}"
{dst}
table = "items_out"
if_exists = "replace"
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
qty = {{ type = "integer", expr = "qty" }}
[[checks]]
column = "qty"
max = 6
[chunks]
rows = 10
"#
        ),
    )
}

/// Runs every command on the pipeline with `env`, and checks that none prints the
/// secret. Returns the run's stdout, to check the run did what it should.
fn every_output(ws: &Workspace, p: &str, env: &[(&str, &str)]) -> String {
    let mut run_out = String::new();
    for args in [
        vec!["validate", p],
        vec!["dry-run", p],
        vec!["dry-run", p, "--json"],
        vec!["run", p, "--json"],
        vec!["run", p],
        vec!["status", p],
        vec!["status", p, "--json"],
        vec!["verify", p],
        vec!["verify", p, "--json"],
        vec!["retry", p, "--rejects", "--json"],
        vec!["run", p, "--restart"],
    ] {
        let out = ws.rowshift_env(&args, env);
        assert!(out.code <= 1, "{args:?}: {}{}", out.stdout, out.stderr);
        assert_clean(&format!("the stdout of {args:?}"), &out.stdout);
        assert_clean(&format!("the stderr of {args:?}"), &out.stderr);
        if args == ["run", p, "--json"] {
            run_out = out.stdout;
        }
    }
    run_out
}

/// A server that cannot be reached: every command fails, and its message keeps the
/// password hidden.
fn unreachable_outputs(ws: &Workspace, p: &str, env: &[(&str, &str)]) {
    for args in [
        vec!["validate", p],
        vec!["dry-run", p, "--json"],
        vec!["run", p, "--json"],
        vec!["status", p, "--json"],
    ] {
        let out = ws.rowshift_env(&args, env);
        // `run` needs both ends; the others may not touch the one that is down.
        if args[0] == "run" {
            assert_eq!(out.code, 2, "{args:?}: {}{}", out.stdout, out.stderr);
            assert!(out.stderr.contains("error"), "{args:?}: {}", out.stderr);
        }
        assert_clean(
            &format!("the stderr of {args:?} (unreachable)"),
            &out.stderr,
        );
        assert_clean(
            &format!("the stdout of {args:?} (unreachable)"),
            &out.stdout,
        );
    }
}

/// `url` pointed at a port nobody listens on.
fn unreachable(url: &str, port: &str) -> String {
    url.replacen(&format!(":{port}/"), ":1/", 1)
}

/// Every row of every table in the schema, as text.
fn pg_dump(pg: &PgSchema) -> String {
    let tables = pg.rows(&format!(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = '{}'",
        pg.name
    ));
    assert!(tables.len() >= 2, "{tables:?}");
    let mut out = String::new();
    for t in tables {
        for r in pg.rows(&format!(
            "SELECT t::text FROM {}.{} t",
            pg_quote(&pg.name),
            pg_quote(&t[0])
        )) {
            out.push_str(&r[0]);
            out.push('\n');
        }
    }
    out
}

/// Every row of every table in the database, as text.
fn my_dump(my: &MyDb) -> String {
    let columns = my.rows(&format!(
        "SELECT CAST(table_name AS CHAR), CAST(column_name AS CHAR) FROM information_schema.columns \
         WHERE table_schema = '{}' ORDER BY table_name, ordinal_position",
        my.name
    ));
    let mut by_table: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for c in columns {
        by_table.entry(c[0].clone()).or_default().push(format!(
            "COALESCE(CAST({} AS CHAR), 'NULL')",
            my_quote(&c[1])
        ));
    }
    assert!(by_table.len() >= 2, "{by_table:?}");
    let mut out = String::new();
    for (t, cols) in by_table {
        for r in my.rows(&format!(
            "SELECT CONCAT_WS('|', {}) FROM {}.{}",
            cols.join(", "),
            my_quote(&my.name),
            my_quote(&t)
        )) {
            out.push_str(&r[0]);
            out.push('\n');
        }
    }
    out
}

/// Fills `items` with 25 rows, qty = id % 10 (so qty 7, 8 and 9 are quarantined: 6 rows).
fn items_sql(table: &str) -> String {
    let rows: Vec<String> = (1..=25).map(|i| format!("({i}, {})", i % 10)).collect();
    format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, qty integer); INSERT INTO {table} VALUES {}",
        rows.join(", ")
    )
}

#[test]
fn a_password_in_any_url_form_shows_nowhere_with_a_postgres_source_and_target() {
    let src = PgSchema::new("rs_secret_src");
    let dst = PgSchema::new("rs_secret_dst");
    src.exec(&items_sql(&format!("{}.items", pg_quote(&src.name))));
    for (form, url) in forms(&pg_url(), "postgres") {
        let ws = Workspace::new();
        let p = pipeline(
            &ws,
            &format!("schema = \"{}\"", src.name),
            &format!("schema = \"{}\"", dst.name),
        );
        let env = [("SRC_URL", url.as_str()), ("DST_URL", url.as_str())];
        let run = every_output(&ws, &p, &env);
        assert!(run.contains("\"written\": 19"), "{form}: {run}");
        let dump = pg_dump(&dst);
        assert_clean(&format!("the target tables ({form})"), &dump);
        assert!(
            dump.contains("qty"),
            "{form}: the quarantine holds rows: {dump}"
        );
        assert_files_clean(&ws.path(""));
        let port = pg_url()
            .rsplit_once(':')
            .and_then(|(_, r)| r.split_once('/'))
            .map(|(p, _)| p.to_string())
            .unwrap();
        let down = unreachable(&url, &port);
        unreachable_outputs(
            &ws,
            &p,
            &[("SRC_URL", url.as_str()), ("DST_URL", down.as_str())],
        );
        unreachable_outputs(
            &ws,
            &p,
            &[("SRC_URL", down.as_str()), ("DST_URL", url.as_str())],
        );
        dst.exec(&format!(
            "DROP TABLE IF EXISTS {s}.items_out, {s}.items_out_rejects, {s}._rowshift_runs, {s}._rowshift_chunks",
            s = pg_quote(&dst.name)
        ));
    }
}

#[test]
fn a_password_in_any_url_form_shows_nowhere_with_a_sqlite_target() {
    let src = PgSchema::new("rs_secret_lite");
    src.exec(&items_sql(&format!("{}.items", pg_quote(&src.name))));
    for (form, url) in forms(&pg_url(), "postgres") {
        let ws = Workspace::new();
        let p = pipeline(&ws, &format!("schema = \"{}\"", src.name), "");
        let env = [
            ("SRC_URL", url.as_str()),
            ("DST_URL", "sqlite://../out/t.db"),
        ];
        let run = every_output(&ws, &p, &env);
        assert!(run.contains("\"written\": 19"), "{form}: {run}");
        let quarantine = crate::common::sqlite_rows(
            &ws.path("out/t.db"),
            "SELECT location, reason FROM items_out_rejects",
        );
        assert_eq!(quarantine.len(), 6, "{form}: {quarantine:?}");
        assert!(
            quarantine[0][0].contains("postgres://postgres"),
            "{form}: the location names the source: {quarantine:?}"
        );
        // The target file, its checkpoint and state: raw bytes.
        assert_files_clean(&ws.path(""));
        let port = pg_url()
            .rsplit_once(':')
            .and_then(|(_, r)| r.split_once('/'))
            .map(|(p, _)| p.to_string())
            .unwrap();
        let down = unreachable(&url, &port);
        unreachable_outputs(
            &ws,
            &p,
            &[
                ("SRC_URL", down.as_str()),
                ("DST_URL", "sqlite://../out/t.db"),
            ],
        );
    }
}

#[test]
fn a_password_in_any_url_form_shows_nowhere_with_a_mariadb_source_and_target() {
    let src = ServerDb::<sqlx::MySql>::create(
        &my_url(),
        "ROWSHIFT_MYSQL_URL",
        "rs_secret_my",
        my_quote,
        "CREATE DATABASE {} DEFAULT CHARACTER SET utf8mb4",
        "DROP DATABASE IF EXISTS {}",
    );
    // A user of the test's own, with the secret as its password: a form whose password
    // did not reach the driver could not connect.
    let user = format!("rs_secret_{}", std::process::id());
    src.exec(&format!(
        "DROP USER IF EXISTS '{user}'@'%'; CREATE USER '{user}'@'%' IDENTIFIED BY '{SECRET}'; \
         GRANT ALL ON {db}.* TO '{user}'@'%'; \
         DROP USER IF EXISTS '{user}'@'localhost'; CREATE USER '{user}'@'localhost' IDENTIFIED BY '{SECRET}'; \
         GRANT ALL ON {db}.* TO '{user}'@'localhost'",
        db = my_quote(&src.name)
    ));
    struct DropUser<'a>(&'a MyDb, String);
    impl Drop for DropUser<'_> {
        fn drop(&mut self) {
            let u = &self.1;
            let _ = self.0.rt.block_on(
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP USER IF EXISTS '{u}'@'%'; DROP USER IF EXISTS '{u}'@'localhost'"
                )))
                .execute(&self.0.pool),
            );
        }
    }
    let _drop_user = DropUser(&src, user.clone());
    src.exec(&items_sql(&format!("{}.items", my_quote(&src.name))));
    let base = {
        let b = my_url();
        let root = b.rsplit_once('/').map_or(b.clone(), |(r, _)| r.to_string());
        format!("{root}/{}", src.name)
    };
    for (form, url) in forms(&base, &user) {
        let ws = Workspace::new();
        let p = pipeline(&ws, "", "");
        let env = [("SRC_URL", url.as_str()), ("DST_URL", url.as_str())];
        let run = every_output(&ws, &p, &env);
        assert!(run.contains("\"written\": 19"), "{form}: {run}");
        let dump = my_dump(&src);
        assert_clean(&format!("the tables ({form})"), &dump);
        assert!(
            dump.contains("qty"),
            "{form}: the quarantine holds rows: {dump}"
        );
        assert_files_clean(&ws.path(""));
        let port = base
            .rsplit_once(':')
            .and_then(|(_, r)| r.split_once('/'))
            .map(|(p, _)| p.to_string())
            .unwrap();
        let down = unreachable(&url, &port);
        unreachable_outputs(
            &ws,
            &p,
            &[("SRC_URL", url.as_str()), ("DST_URL", down.as_str())],
        );
        // A wrong password: the server's refusal, without the password.
        let wrong = url.replace(SECRET, &format!("{SECRET}x"));
        let out = ws.rowshift_env(&["run", &p], &[("SRC_URL", &wrong), ("DST_URL", &wrong)]);
        assert_eq!(out.code, 2, "{form}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains("Access denied"),
            "{form}: {}",
            out.stderr
        );
        assert_clean(&format!("a wrong password's error ({form})"), &out.stderr);
        src.exec(&format!(
            "DROP TABLE IF EXISTS {d}.items_out, {d}.items_out_rejects, {d}._rowshift_runs, {d}._rowshift_chunks",
            d = my_quote(&src.name)
        ));
    }
}

scenarios!(
    postgres: crate::common::PgSchema,
    mysql: crate::common::MyDb;
    [a_password_in_the_url_is_never_printed]
);

fn a_password_in_the_url_is_never_printed<T: Target>() {
    let ws = Workspace::new();
    // Port 1: nothing listens, so connecting fails and the error names the url.
    let unreachable = |pw: &str| format!("{}://app:{pw}@127.0.0.1:1/test", T::SCHEME);
    let p = ws.write(
        "pipelines/secret.toml",
        &format!(
            r#"name = "secret"
[source]
url = "sqlite://../samples/shop.db"
table = "users_v1"
key = "id"
[target]
url = "{}"
table = "users"
[target.columns]
id = {{ type = "bigint", expr = "id" }}
"#,
            unreachable("sup3r-s3cret")
        ),
    );
    for args in [
        vec!["run", p.as_str()],
        vec!["run", p.as_str(), "--json"],
        vec!["validate", p.as_str()],
        vec!["status", p.as_str()],
        vec!["dry-run", p.as_str()],
    ] {
        let out = ws.rowshift(&args);
        let text = format!("{}{}", out.stdout, out.stderr);
        assert!(!text.contains("sup3r"), "{args:?}: {text}");
        if args[0] == "run" && args.len() == 2 {
            assert_ne!(out.code, 0);
            assert!(text.contains(&unreachable("***")), "{text}");
        }
    }

    // The server itself, as source and as target: it ignores the password (trust
    // authentication) and the run succeeds, or refuses the user and says so; either
    // way no output shows the password.
    let Some(url) = T::url_with_password("sup3r-s3cret") else {
        return;
    };
    let db = T::create("rs_secret");
    db.make_items(10);
    let as_source = format!(
        r#"name = "secret_src"
[source]
url = "{url}"
schema = {schema}
table = "items"
key = "id"
[target]
url = "../out/items.parquet"
[target.columns]
id = {{ type = "bigint", expr = "id" }}
"#,
        schema = crate::common::toml_str(db.name())
    );
    let as_target = format!(
        r#"name = "secret_dst"
[source]
url = "sqlite://../samples/shop.db"
table = "users_v1"
key = "id"
[target]
url = "{url}"
schema = {schema}
table = "users"
[target.columns]
id = {{ type = "bigint", expr = "id" }}
"#,
        schema = crate::common::toml_str(db.name())
    );
    for text in [as_source, as_target] {
        let p = ws.write("pipelines/secret.toml", &text);
        let out = ws.rowshift(&["run", &p, "--json"]);
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(!all.contains("sup3r"), "{all}");
        match T::PASSWORD_REFUSED {
            None => assert_eq!(out.code, 0, "{all}"),
            Some(refusal) => {
                assert_eq!(out.code, 2, "{all}");
                assert!(all.contains(&T::url_with_password("***").unwrap()), "{all}");
                assert!(all.contains(refusal), "{all}");
            }
        }
    }
    if T::PASSWORD_REFUSED.is_none() {
        assert_eq!(
            crate::common::parquet_rows(&ws.path("out/items.parquet")).len(),
            10
        );
        assert_eq!(db.count("users"), 1000);
    }
}
