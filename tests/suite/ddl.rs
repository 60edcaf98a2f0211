//! Target DDL from the declarations: `default` and `identity` columns in the table
//! rowshift creates, and `[[target.indexes]]`, `[[target.constraints]]` and
//! `[[target.foreign_keys]]` built after the load, once the rows allow them, on SQLite,
//! PostgreSQL and MariaDB.

use crate::common::{Workspace, sqlite_exec};
use crate::scenarios::{Target, scenarios};

/// What a target's catalog says of the table `users`.
pub(crate) trait Catalog: Target {
    /// The indexes besides the primary key's, each `name unique|plain`, sorted.
    fn indexes(&self) -> Vec<String>;
    /// The check constraints and foreign keys, each `name kind`, sorted.
    fn constraints(&self) -> Vec<String>;
}

impl Catalog for crate::scenarios::SqliteFile {
    fn indexes(&self) -> Vec<String> {
        let rows = self.rows(
            "SELECT name, CAST(\"unique\" AS TEXT) FROM pragma_index_list('users') WHERE origin = 'c' ORDER BY name",
        );
        rows.iter()
            .map(|r| format!("{} {}", r[0], if r[1] == "1" { "unique" } else { "plain" }))
            .collect()
    }

    fn constraints(&self) -> Vec<String> {
        let sql = &self.rows("SELECT sql FROM sqlite_master WHERE name = 'users'")[0][0];
        let mut out: Vec<String> = Vec::new();
        for (name, kind) in [
            ("users_age_check", "CHECK"),
            ("users_team_fkey", "FOREIGN KEY"),
        ] {
            if sql.contains(&format!("CONSTRAINT \"{name}\" {kind}")) {
                out.push(format!("{name} {kind}"));
            }
        }
        out
    }
}

impl Catalog for crate::common::PgSchema {
    fn indexes(&self) -> Vec<String> {
        let rows = self.rows(&format!(
            "SELECT i.relname::text, x.indisunique::text FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = '{}' AND t.relname = 'users' AND NOT x.indisprimary ORDER BY 1",
            self.name()
        ));
        rows.iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r[0],
                    if r[1] == "true" { "unique" } else { "plain" }
                )
            })
            .collect()
    }

    fn constraints(&self) -> Vec<String> {
        let rows = self.rows(&format!(
            "SELECT c.conname::text, CASE c.contype WHEN 'c' THEN 'CHECK' ELSE 'FOREIGN KEY' END, c.convalidated::text FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = '{}' AND t.relname = 'users' AND c.contype IN ('c', 'f') ORDER BY 1",
            self.name()
        ));
        rows.iter()
            .map(|r| {
                assert_eq!(r[2], "true", "{} left NOT VALID", r[0]);
                format!("{} {}", r[0], r[1])
            })
            .collect()
    }
}

impl Catalog for crate::common::MyDb {
    fn indexes(&self) -> Vec<String> {
        // A foreign key's own index (named after it) is MariaDB's, not a declared one.
        let rows = self.rows(&format!(
            "SELECT DISTINCT index_name, CAST(non_unique AS CHAR) FROM information_schema.statistics WHERE table_schema = '{}' AND table_name = 'users' AND index_name NOT IN ('PRIMARY', 'users_team_fkey') ORDER BY 1",
            self.name()
        ));
        rows.iter()
            .map(|r| format!("{} {}", r[0], if r[1] == "0" { "unique" } else { "plain" }))
            .collect()
    }

    fn constraints(&self) -> Vec<String> {
        let rows = self.rows(&format!(
            "SELECT constraint_name, constraint_type FROM information_schema.table_constraints WHERE constraint_schema = '{}' AND table_name = 'users' AND constraint_type IN ('CHECK', 'FOREIGN KEY') ORDER BY 1",
            self.name()
        ));
        rows.iter().map(|r| format!("{} {}", r[0], r[1])).collect()
    }
}

/// A SQLite source `users` with `rows` (`id, email, age, team`), and the pipeline that
/// moves it into `dst`'s `users` with every declaration; `dst` gets `teams` (1, 2).
fn setup<T: Catalog>(ws: &Workspace, dst: &T, rows: &str) -> String {
    let src = ws.path("src.db");
    sqlite_exec(
        &src,
        &format!(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, age INTEGER, team INTEGER);
             INSERT INTO users VALUES {rows};"
        ),
    );
    dst.exec(&format!(
        "CREATE TABLE {}.teams (id INT PRIMARY KEY); INSERT INTO {}.teams VALUES (1), (2)",
        dst.q(),
        dst.q()
    ));
    ws.write(
        "pipelines/users.toml",
        &format!(
            r#"name = "users"
[source]
url = "sqlite://{}"
table = "users"
key = "id"
[target]
{}
table = "users"
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true, identity = true }}
email = {{ type = "varchar(100)", expr = "email" }}
age = {{ type = "integer", expr = "age" }}
team = {{ type = "integer", expr = "team" }}
status = {{ type = "varchar(20)", expr = "'moved'", default = "'new'" }}
[[target.indexes]]
columns = ["email"]
unique = true
name = "users_email"
[[target.indexes]]
columns = ["team", "age"]
[[target.constraints]]
name = "users_age_check"
check = "age >= 0"
[[target.foreign_keys]]
name = "users_team_fkey"
columns = ["team"]
references = "teams(id)"
on_delete = "cascade"
[chunks]
rows = 3
"#,
            src.display(),
            dst.location()
        ),
    )
}

const CLEAN: &str = "(1, 'a@x', 30, 1), (2, 'b@x', 41, 2), (5, 'c@x', 7, 1), (9, 'd@x', 0, NULL)";

fn declared_ddl<T: Catalog>(dst: &T) -> (Vec<String>, Vec<String>) {
    (dst.indexes(), dst.constraints())
}

fn expected() -> (Vec<String>, Vec<String>) {
    (
        vec![
            "users_email unique".into(),
            "users_team_age_idx plain".into(),
        ],
        vec![
            "users_age_check CHECK".into(),
            "users_team_fkey FOREIGN KEY".into(),
        ],
    )
}

/// After `run`, the catalog holds every declared index and constraint, an INSERT
/// without an id gets the largest loaded id plus one, and `status` its default.
fn declared_indexes_constraints_defaults_and_identity_exist_after_the_run<T: Catalog>() {
    let ws = Workspace::new();
    let dst = T::create("ddl_all");
    let p = setup(&ws, &dst, CLEAN);
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(dst.count("users"), 4);
    assert_eq!(declared_ddl(&dst), expected());
    dst.exec(&format!(
        "INSERT INTO {}.users (email, age, team) VALUES ('new@x', 3, 2)",
        dst.q()
    ));
    let rows = dst.rows(&format!(
        "SELECT {}, status FROM {}.users WHERE email = 'new@x'",
        T::text("id"),
        dst.q()
    ));
    assert_eq!(rows, vec![vec!["10".to_string(), "new".to_string()]]);
    // A rerun of the finished run finds everything built and changes nothing.
    let again = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert_eq!(declared_ddl(&dst), expected());
}

/// A duplicate in a unique column is named with its keys, exit 1, the rows stay; once
/// the row is fixed, the same command builds the index.
fn a_duplicate_in_a_unique_column_is_reported_with_its_keys_and_a_rerun_builds_it<T: Catalog>() {
    let ws = Workspace::new();
    let dst = T::create("ddl_dup");
    let p = setup(
        &ws,
        &dst,
        "(3, 'a@x', 30, 1), (4, 'b@x', 41, 2), (9, 'a@x', 7, 1), (12, 'e@x', -1, 2)",
    );
    let out = ws.rowshift(&["run", &p]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(
            "not built unique index `users_email` cannot be built on users: email 'a@x' is held by id=3 and id=9\n"
        ),
        "{}",
        out.stdout
    );
    if std::any::type_name::<T>().contains("Sqlite") {
        // SQLite has its checks from CREATE TABLE: the row with age -1 was refused.
        assert_eq!(dst.count("users"), 3);
        assert_eq!(dst.count("users_rejects"), 1);
    } else {
        assert!(
            out.stdout.contains(
                "not built check constraint `users_age_check` (age >= 0) cannot be added to users: it fails for id=12\n"
            ),
            "{}",
            out.stdout
        );
        assert_eq!(dst.count("users"), 4);
        dst.exec(&format!(
            "UPDATE {}.users SET age = 1 WHERE id = 12",
            dst.q()
        ));
    }
    let (indexes, constraints) = declared_ddl(&dst);
    assert_eq!(indexes, vec!["users_team_age_idx plain".to_string()]);
    assert!(constraints.contains(&"users_team_fkey FOREIGN KEY".to_string()));
    dst.exec(&format!(
        "UPDATE {}.users SET email = 'c@x' WHERE id = 9",
        dst.q()
    ));
    let again = ws.rowshift(&["run", &p, "--quiet"]);
    let expected_code = if std::any::type_name::<T>().contains("Sqlite") {
        1
    } else {
        0
    };
    assert_eq!(
        again.code, expected_code,
        "{}{}",
        again.stdout, again.stderr
    );
    assert_eq!(declared_ddl(&dst), expected());
}

/// A run killed after its last chunk, before the post-load DDL, leaves the rows and a
/// checkpoint with every chunk done; the next run builds the indexes and constraints.
fn a_kill_before_the_post_load_ddl_then_a_rerun_ends_with_the_indexes<T: Catalog>() {
    let ws = Workspace::new();
    let dst = T::create("ddl_kill");
    let p = setup(&ws, &dst, CLEAN);
    let out = ws.rowshift_env(
        &["run", &p, "--quiet"],
        &[("ROWSHIFT_FAULT", "crash=post-load")],
    );
    assert_ne!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(dst.count("users"), 4);
    let (indexes, _) = declared_ddl(&dst);
    assert_eq!(indexes, Vec::<String>::new());
    let again = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert_eq!(dst.count("users"), 4);
    assert_eq!(declared_ddl(&dst), expected());
}

/// A run killed in the middle of its post-load DDL, just after the unique index was
/// built, has the next run build the rest, skipping what is there.
fn a_kill_during_the_post_load_ddl_then_a_rerun_builds_the_rest<T: Catalog>() {
    let ws = Workspace::new();
    let dst = T::create("ddl_mid");
    let p = setup(&ws, &dst, CLEAN);
    let out = ws.rowshift_env(
        &["run", &p, "--quiet"],
        &[("ROWSHIFT_FAULT", "crash=post-load:users_email")],
    );
    assert_ne!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let (indexes, _) = declared_ddl(&dst);
    assert_eq!(indexes, vec!["users_email unique".to_string()]);
    let again = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert_eq!(dst.count("users"), 4);
    assert_eq!(declared_ddl(&dst), expected());
}

/// A row whose foreign-key value the referenced table lacks is named with its key, exit
/// 1, and the key is not added; once the referenced row exists, the same command adds it.
fn a_row_without_its_referenced_row_is_named_and_the_key_added_once_it_exists<T: Catalog>() {
    let ws = Workspace::new();
    let dst = T::create("ddl_fk");
    let p = setup(
        &ws,
        &dst,
        "(1, 'a@x', 30, 1), (4, 'b@x', 41, 7), (6, 'c@x', 2, NULL)",
    );
    let out = ws.rowshift(&["run", &p]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    if std::any::type_name::<T>().contains("Sqlite") {
        // SQLite's key is part of CREATE TABLE and enforced as rows are written (sqlx
        // turns foreign keys on): the row is refused at the load and quarantined.
        assert!(
            out.stdout
                .contains("rejected 1 × the target refused the row: FOREIGN KEY constraint failed"),
            "{}",
            out.stdout
        );
        assert_eq!(dst.count("users"), 2);
        assert_eq!(dst.count("users_rejects"), 1);
        assert_eq!(declared_ddl(&dst), expected());
        return;
    }
    assert!(
        out.stdout.contains(
            "not built foreign key `users_team_fkey` cannot be added to users: teams(id) has no row for team '7' (id=4)\n"
        ),
        "{}",
        out.stdout
    );
    assert_eq!(dst.count("users"), 3);
    let (indexes, constraints) = declared_ddl(&dst);
    assert_eq!(indexes, expected().0);
    assert_eq!(constraints, vec!["users_age_check CHECK".to_string()]);
    dst.exec(&format!("INSERT INTO {}.teams VALUES (7)", dst.q()));
    let again = ws.rowshift(&["run", &p, "--quiet"]);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert_eq!(declared_ddl(&dst), expected());
}

scenarios!(
    postgres: crate::common::PgSchema,
    mysql: crate::common::MyDb,
    sqlite: crate::scenarios::SqliteFile;
    [
        declared_indexes_constraints_defaults_and_identity_exist_after_the_run,
        a_duplicate_in_a_unique_column_is_reported_with_its_keys_and_a_rerun_builds_it,
        a_kill_before_the_post_load_ddl_then_a_rerun_ends_with_the_indexes,
        a_kill_during_the_post_load_ddl_then_a_rerun_builds_the_rest,
        a_row_without_its_referenced_row_is_named_and_the_key_added_once_it_exists,
    ]
);
