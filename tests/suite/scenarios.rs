//! Behaviour every SQL target must have, written once and run against each of them, in
//! the manner of Vector's sink compliance tests: a scenario is a generic function over
//! [`Target`], and `scenarios!` makes one `#[test]` per (target, scenario), named
//! `scenarios::<target>::<scenario>`. What a target does differently (its SQL dialect,
//! the server's own words in an error) it says through the trait; what rowshift does is
//! asserted here, the same for every target.
//!
//! The targets: PostgreSQL ([`crate::postgres`]), MariaDB/MySQL ([`crate::mysql`]) and
//! SQLite ([`SqliteFile`], below), the last for the scenarios that apply to it. Behaviour
//! only one database has stays in that database's file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::common::{Workspace, sqlite_exec, sqlite_rows};

/// A private place on a database server (a PostgreSQL schema, a MySQL database) that a
/// scenario reads and writes, dropped when it goes out of scope.
pub(crate) trait Target: Sized {
    /// A new private schema or database; `tag` is the start of its name.
    fn create(tag: &str) -> Self;
    /// Its name, quoted for SQL.
    fn q(&self) -> String;
    /// An identifier quoted for this server's SQL.
    fn quote(name: &str) -> String;
    /// The lines of a pipeline's `[source]` or `[target]` that point at this place.
    fn location(&self) -> String;
    /// Runs statements.
    fn exec(&self, sql: &str);
    /// Every row of `sql`, whose columns the query casts to text (`NULL` for NULL).
    fn rows(&self, sql: &str) -> Vec<Vec<String>>;
    /// `expr` cast to text in this server's SQL.
    fn text(expr: &str) -> String;
    /// A table `items` (id, name, price, qty, made, active, tag) with `n` rows.
    fn make_items(&self, n: i64);
    /// The target type of `items.name` in the mode pipelines.
    const NAME_TYPE: &'static str;
    /// Changes some rows of `items` and adds new ones (for upsert).
    fn change_items(&self);
    /// What the server says when an insert repeats a primary key.
    const DUPLICATE_KEY: &'static str;
    /// A table `words (w varchar(40) primary key, n int)` whose keys sort differently by
    /// bytes than by the server's collation; returns how many rows it holds.
    fn make_words(&self) -> usize;
    /// `words` ordered by the bytes of `w`, as text.
    fn words(&self) -> Vec<Vec<String>>;
    /// `expr` (text) as an integer, to order by.
    fn int(expr: &str) -> String;
    /// A table `kinds (qty)` holding 0 to 10, and an empty `items (id, name, qty)` stricter
    /// than the data: `name` unique, `qty` never 12 (a check) and one of `kinds` (a
    /// foreign key).
    fn make_strict_items(&self);
    /// What the quarantine `items_rejects` of this target says about the row with key
    /// `id`: the reason and, where the server says more, the other columns it fills.
    fn refusal(&self, id: i64) -> Vec<String>;
    /// What [`Target::refusal`] must say about rows 12 (the check), 11 (the foreign key)
    /// and 105 (the unique name) of [`Target::make_strict_items`]: the server's words.
    fn expected_refusal(&self, id: i64) -> Vec<String>;

    /// The number of tables in this schema or database.
    fn tables(&self) -> i64;
    /// What a dry run of `users` from `samples/shop.db` (id bigint primary key, email
    /// varchar(200) not null, country text, score double, name_len integer) must show
    /// of the DDL it would run, in this server's types.
    fn users_ddl(&self) -> Vec<String>;
    /// `users`' columns as the server's catalog describes them, one line each.
    fn users_types(&self) -> Vec<String>;
    /// What [`Target::users_types`] must say.
    const USERS_TYPES: &'static [&'static str];

    /// A double's text as this server prints it, in the form the comparison uses: the
    /// same text where the server prints doubles as SQLite does.
    fn double_text(text: String) -> String {
        text
    }

    /// The number of rows of `table`.
    fn count(&self, table: &str) -> i64 {
        self.rows(&format!(
            "SELECT {} FROM {}.{}",
            Self::text("count(*)"),
            self.q(),
            Self::quote(table)
        ))[0][0]
            .parse()
            .unwrap()
    }

    /// `items` (id, name, qty) in key order.
    fn items(&self) -> Vec<Vec<String>> {
        self.rows(&format!(
            // Ordered through an alias: PostgreSQL would order `id` by the text column.
            "SELECT {}, name, {} FROM {}.items i ORDER BY i.id",
            Self::text("id"),
            Self::text("qty"),
            self.q()
        ))
    }
}

/// Keys that a case-insensitive collation orders differently from their bytes, none
/// equal to another under such a collation.
pub(crate) const CASELESS_WORDS: [&str; 23] = [
    "apple", "Bpple", "APPLE2", "éclair", "Eclairs", "zebra", "Zebra2", "_under", "~tilde", "a b",
    "a-b", "ab", "ß", "Ö", "p", "Ø", "日本", "中文", "😀", "0", "10", "9", "It''s",
];

/// `(word, n)` SQL rows of [`CASELESS_WORDS`], n its position.
pub(crate) fn caseless_word_rows() -> String {
    CASELESS_WORDS
        .iter()
        .enumerate()
        .map(|(i, w)| format!("('{w}', {i})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs a pipeline quietly, asserting it succeeded; returns what it printed.
pub(crate) fn run_ok(ws: &Workspace, pipeline: &str) -> String {
    let out = ws.rowshift(&["run", pipeline, "--quiet"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    out.stdout
}

/// A pipeline from `items` in `src` to `items` in `dst` (id, name, qty; 50 rows a chunk),
/// with `extra` lines in its `[target]`.
pub(crate) fn mode_pipeline<T: Target>(
    ws: &Workspace,
    name: &str,
    src: &T,
    dst: &T,
    extra: &str,
) -> String {
    ws.write(
        &format!("pipelines/{name}.toml"),
        &format!(
            r#"name = "{name}"
[source]
{src}
table = "items"
key = "id"
[target]
{dst}
table = "items"
{extra}
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
name = {{ type = "{name_type}", expr = "name" }}
qty = {{ type = "integer", expr = "qty" }}
[chunks]
rows = 50
"#,
            src = src.location(),
            dst = dst.location(),
            name_type = T::NAME_TYPE,
        ),
    )
}

/// One `#[test]` per target and scenario: `scenarios!(target_module: Type; scenario, ...)`.
macro_rules! scenarios {
    ($($target:ident: $ty:ty),+ ; $names:tt) => {
        $(scenarios!(@one $target: $ty; $names);)+
    };
    (@one $target:ident: $ty:ty; [$($name:ident),+ $(,)?]) => {
        mod $target {
            $(
                #[test]
                fn $name() {
                    super::$name::<$ty>();
                }
            )+
        }
    };
}

scenarios!(
    postgres: crate::postgres::PgSchema,
    mysql: crate::mysql::MyDb;
    [
        sqlite_to_the_target_with_transforms_matches_rows_computed_here,
        upsert_updates_changed_rows_and_replace_chunk_removes_deleted_ones,
        a_failed_chunk_leaves_nothing_and_resume_writes_each_row_once,
        a_table_dropped_behind_the_checkpoint_s_back_is_not_refilled_in_part,
        text_keys_are_planned_and_read_back_in_byte_order,
        rows_the_target_refuses_are_quarantined_with_the_servers_reason_and_the_rest_written,
    ]
);

// SQLite targets have no upsert or replace-chunk write mode (the upsert and text-key
// scenarios use them), and enforce no foreign key unless the writing connection turns
// them on (the refused-rows scenario expects one).
scenarios!(
    sqlite: crate::scenarios::SqliteFile;
    [
        a_failed_chunk_leaves_nothing_and_resume_writes_each_row_once,
        a_table_dropped_behind_the_checkpoint_s_back_is_not_refilled_in_part,
    ]
);

/// A SQLite database file of the test's own, in a temporary folder removed when the test
/// ends. Its tables are in schema `main`.
pub(crate) struct SqliteFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Target for SqliteFile {
    fn create(tag: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{tag}.db"));
        sqlite_exec(&path, "PRAGMA user_version = 0");
        SqliteFile { _dir: dir, path }
    }

    fn q(&self) -> String {
        "main".to_string()
    }

    fn quote(name: &str) -> String {
        format!("\"{}\"", name.replace('"', "\"\""))
    }

    fn location(&self) -> String {
        format!("url = \"sqlite://{}\"", self.path.display())
    }

    fn exec(&self, sql: &str) {
        sqlite_exec(&self.path, sql)
    }

    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        sqlite_rows(&self.path, sql)
    }

    fn text(expr: &str) -> String {
        format!("CAST({expr} AS TEXT)")
    }

    fn make_items(&self, n: i64) {
        self.exec(&format!(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL, qty INTEGER, \
             made TEXT, active INTEGER, tag TEXT);
             WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {n})
             INSERT INTO items SELECT n, 'item ' || n || CASE WHEN n % 7 = 0 THEN ' ünï' ELSE '' END, \
             n * 1.25, CASE WHEN n % 5 = 0 THEN NULL ELSE n % 13 END, \
             datetime('2024-01-01 00:00:00', '+' || (n * 3601.5) || ' seconds'), n % 2 = 0, \
             CASE WHEN n % 3 = 0 THEN '' ELSE 't' || (n % 4) END FROM g"
        ));
    }

    const NAME_TYPE: &'static str = "text";

    fn change_items(&self) {
        self.exec(
            "UPDATE items SET name = name || ' v2', qty = -1 WHERE id % 9 = 0;
             WITH RECURSIVE g(n) AS (SELECT 301 UNION ALL SELECT n + 1 FROM g WHERE n < 320)
             INSERT INTO items (id, name, qty) SELECT n, 'new ' || n, n FROM g",
        );
    }

    const DUPLICATE_KEY: &'static str = "UNIQUE constraint failed";

    fn make_words(&self) -> usize {
        self.exec(&format!(
            "CREATE TABLE words (w VARCHAR(40) COLLATE NOCASE PRIMARY KEY, n INTEGER);
             INSERT INTO words VALUES {}",
            caseless_word_rows()
        ));
        CASELESS_WORDS.len()
    }

    fn words(&self) -> Vec<Vec<String>> {
        self.rows("SELECT w, CAST(n AS TEXT) FROM words ORDER BY CAST(w AS BLOB)")
    }

    fn int(expr: &str) -> String {
        format!("CAST({expr} AS INTEGER)")
    }

    fn tables(&self) -> i64 {
        unreachable!("the SQLite-source scenario does not run against a SQLite target")
    }

    fn users_ddl(&self) -> Vec<String> {
        unreachable!("the SQLite-source scenario does not run against a SQLite target")
    }

    fn users_types(&self) -> Vec<String> {
        unreachable!("the SQLite-source scenario does not run against a SQLite target")
    }

    const USERS_TYPES: &'static [&'static str] = &[];

    fn make_strict_items(&self) {
        unreachable!("the refused-rows scenario does not run against SQLite")
    }

    fn refusal(&self, _id: i64) -> Vec<String> {
        unreachable!("the refused-rows scenario does not run against SQLite")
    }

    fn expected_refusal(&self, _id: i64) -> Vec<String> {
        unreachable!("the refused-rows scenario does not run against SQLite")
    }
}

fn sqlite_to_the_target_with_transforms_matches_rows_computed_here<T: Target>() {
    let ws = Workspace::new();
    let db = T::create("rs_sqlite_to");
    let p = ws.write(
        "pipelines/to_target.toml",
        &format!(
            r#"name = "to_target"
[source]
url = "sqlite://../samples/shop.db"
table = "users_v1"
key = "id"
[target]
{target}
table = "users"
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
email = {{ type = "varchar(200)", expr = "lower(trim(email))", nullable = false }}
country = {{ type = "text", expr = "country" }}
score = {{ type = "double", expr = "score" }}
name_len = {{ type = "integer", expr = "character_length(full_name)" }}
[filter]
where = "deleted_at IS NULL"
[chunks]
rows = 97
parallel = 3
"#,
            target = db.location()
        ),
    );
    // A dry run shows the DDL with the server's types and creates nothing.
    let out = ws.rowshift(&["dry-run", &p]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    for want in db.users_ddl() {
        assert!(out.stdout.contains(&want), "{want}: {}", out.stdout);
    }
    assert_eq!(db.tables(), 0);
    run_ok(&ws, &p);
    let mut expected = BTreeMap::new();
    for r in sqlite_rows(
        &ws.path("samples/shop.db"),
        "SELECT id, email, country, score, full_name, deleted_at FROM users_v1",
    ) {
        if r[5] != "NULL" {
            continue;
        }
        let id: i64 = r[0].parse().unwrap();
        expected.insert(
            id,
            vec![
                id.to_string(),
                r[1].trim().to_lowercase(),
                r[2].clone(),
                T::double_text(r[3].clone()),
                r[4].chars().count().to_string(),
            ],
        );
    }
    let got: BTreeMap<i64, Vec<String>> = db
        .rows(&format!(
            "SELECT {}, email, country, {}, {} FROM {}.users",
            T::text("id"),
            T::text("score"),
            T::text("name_len"),
            db.q()
        ))
        .into_iter()
        .map(|mut r| {
            r[3] = T::double_text(std::mem::take(&mut r[3]));
            (r[0].parse().unwrap(), r)
        })
        .collect();
    assert!(expected.len() > 500, "{}", expected.len());
    assert_eq!(got, expected);
    // The checkpoint lives in the target and says every chunk is done.
    let states = db.rows(&format!(
        "SELECT state, {} FROM {}._rowshift_chunks WHERE pipeline = 'to_target' GROUP BY state",
        T::text("count(*)"),
        db.q()
    ));
    assert_eq!(states, vec![vec!["done".to_string(), "11".to_string()]]);
    // The column types are the server's.
    assert_eq!(db.users_types(), T::USERS_TYPES);
}

fn upsert_updates_changed_rows_and_replace_chunk_removes_deleted_ones<T: Target>() {
    let ws = Workspace::new();
    let src = T::create("rs_mode_src");
    let dst = T::create("rs_mode_dst");
    src.make_items(300);
    run_ok(&ws, &mode_pipeline(&ws, "first", &src, &dst, ""));
    assert_eq!(dst.items(), src.items());

    // Changed and new rows: upsert updates and inserts.
    src.change_items();
    let p = mode_pipeline(
        &ws,
        "upsert",
        &src,
        &dst,
        "if_exists = \"append\"\nwrite_mode = \"upsert\"",
    );
    run_ok(&ws, &p);
    assert_eq!(dst.items(), src.items());

    // Deleted rows: replace-chunk deletes each chunk's key range before writing it.
    src.exec(&format!("DELETE FROM {}.items WHERE id % 4 = 1", src.q()));
    let p = mode_pipeline(
        &ws,
        "replace",
        &src,
        &dst,
        "if_exists = \"append\"\nwrite_mode = \"replace-chunk\"",
    );
    run_ok(&ws, &p);
    assert_eq!(dst.items(), src.items());

    // Plain insert into the same rows fails on the primary key, and leaves nothing half
    // written: every chunk failed whole.
    let p = mode_pipeline(&ws, "dup", &src, &dst, "if_exists = \"append\"");
    let out = ws.rowshift(&["run", &p, "--quiet"]);
    assert_ne!(out.code, 0);
    assert!(out.stdout.contains(T::DUPLICATE_KEY), "{}", out.stdout);
    assert_eq!(dst.items(), src.items());
}

fn a_failed_chunk_leaves_nothing_and_resume_writes_each_row_once<T: Target>() {
    let ws = Workspace::new();
    let src = T::create("rs_resume_src");
    let dst = T::create("rs_resume_dst");
    src.make_items(400);
    let p = mode_pipeline(&ws, "resume", &src, &dst, "");
    let out = ws.rowshift_env(&["run", &p, "--quiet"], &[("ROWSHIFT_FAULT", "chunk=3")]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert_eq!(dst.count("items"), 350);
    let states = dst.rows(&format!(
        "SELECT {}, state FROM {}._rowshift_chunks WHERE state <> 'done'",
        T::text("id"),
        dst.q()
    ));
    assert_eq!(states, vec![vec!["3".to_string(), "failed".to_string()]]);
    // Rows and marks committed together: a resumed run redoes chunk 3 alone.
    let out = ws.rowshift(&["run", &p, "--json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(dst.items(), src.items());
    // `verify` reads every chunk back and finds it right.
    let out = ws.rowshift(&["verify", &p]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);

    // Tampering is found chunk by chunk, and --repair rewrites those chunks.
    dst.exec(&format!(
        "UPDATE {d}.items SET name = 'changed' WHERE id = 7; DELETE FROM {d}.items WHERE id = 222",
        d = dst.q()
    ));
    let out = ws.rowshift(&["verify", &p]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("id=7, column name"), "{}", out.stdout);
    let out = ws.rowshift(&["verify", &p, "--repair"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(dst.items(), src.items());
}

fn a_table_dropped_behind_the_checkpoint_s_back_is_not_refilled_in_part<T: Target>() {
    let ws = Workspace::new();
    let src = T::create("rs_dropped_src");
    let dst = T::create("rs_dropped_dst");
    src.make_items(400);
    let p2 = mode_pipeline(&ws, "resume2", &src, &dst, "if_exists = \"replace\"");
    let text = std::fs::read_to_string(ws.path(&p2)).unwrap().replace(
        "table = \"items\"\nif_exists",
        "table = \"items2\"\nif_exists",
    );
    ws.write(&p2, &text);
    let out = ws.rowshift_env(&["run", &p2, "--quiet"], &[("ROWSHIFT_FAULT", "chunk=5")]);
    assert_ne!(out.code, 0);
    dst.exec(&format!("DROP TABLE {}.items2", dst.q()));
    let out = ws.rowshift(&["run", &p2, "--quiet"]);
    assert_ne!(out.code, 0);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("the table is gone, but the checkpoint says 7 chunks were committed to it; run with --restart"),
        "{text}"
    );
    let out = ws.rowshift(&["run", &p2, "--quiet", "--restart"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(dst.count("items2"), 400);
}

fn text_keys_are_planned_and_read_back_in_byte_order<T: Target>() {
    let ws = Workspace::new();
    let src = T::create("rs_textkey_src");
    let dst = T::create("rs_textkey_dst");
    let n = src.make_words();
    let p = ws.write(
        "pipelines/words.toml",
        &format!(
            r#"name = "words"
[source]
{src}
table = "words"
key = "w"
[target]
{dst}
table = "words"
write_mode = "replace-chunk"
[target.columns]
w = {{ type = "varchar(40)", expr = "w", primary_key = true }}
n = {{ type = "integer", expr = "n" }}
[chunks]
rows = 4
"#,
            src = src.location(),
            dst = dst.location()
        ),
    );
    run_ok(&ws, &p);
    assert_eq!(src.words().len(), n);
    assert_eq!(dst.words(), src.words());
    // One chunk per 4 keys, each committed.
    let done = dst.rows(&format!(
        "SELECT {} FROM {}._rowshift_chunks WHERE state = 'done'",
        T::text("count(*)"),
        dst.q()
    ));
    assert_eq!(done[0][0], n.div_ceil(4).to_string());
    assert_eq!(dst.count("_rowshift_chunks") as usize, n.div_ceil(4));
    // The chunks' ranges cover the keys in byte order without gaps or overlaps: `verify`
    // finds every chunk's rows by its range.
    let out = ws.rowshift(&["verify", &p]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
}

fn rows_the_target_refuses_are_quarantined_with_the_servers_reason_and_the_rest_written<
    T: Target,
>() {
    let ws = Workspace::new();
    let src = T::create("rs_refuse_src");
    let dst = T::create("rs_refuse_dst");
    src.make_items(300);
    // Two rows of one chunk (ids 101-150) share a name the new schema wants unique.
    src.exec(&format!(
        "UPDATE {s}.items SET name = 'same name' WHERE id IN (104, 105)",
        s = src.q()
    ));
    // The new schema is stricter than the data: qty 12 breaks a check, qty 11 has no row
    // in `kinds`, and a name may not repeat. A server that does not say which row of a
    // statement it refused has its rows halved until each refused one is found.
    dst.make_strict_items();
    let p = mode_pipeline(&ws, "refuse", &src, &dst, "if_exists = \"append\"");
    let out = ws.rowshift(&["run", &p]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);

    let ids = |refused: &str| {
        src.rows(&format!(
            "SELECT {} FROM {}.items i WHERE {refused} ORDER BY i.id",
            T::text("id"),
            src.q()
        ))
    };
    let kept = |refused: &str| {
        src.rows(&format!(
            "SELECT {}, name, {} FROM {s}.items i
             WHERE id NOT IN (SELECT id FROM {s}.items WHERE {refused}) ORDER BY i.id",
            T::text("id"),
            T::text("qty"),
            s = src.q()
        ))
    };
    let quarantined = || {
        dst.rows(&format!(
            "SELECT row_key FROM {}.items_rejects ORDER BY {}",
            dst.q(),
            T::int("row_key")
        ))
    };
    let first = "qty IN (11, 12) OR id = 105";
    let refused = ids(first);
    assert!(refused.len() > 30, "{refused:?}");
    assert_eq!(dst.items(), kept(first));
    assert_eq!(kept(first).len() + refused.len(), 300);
    assert_eq!(quarantined(), refused);
    for id in [12, 11, 105] {
        assert_eq!(dst.refusal(id), dst.expected_refusal(id), "row {id}");
    }
    // The summary counts them by reason, with an example.
    let unique = &dst.expected_refusal(105)[0];
    assert!(out.stdout.contains(unique.as_str()), "{}", out.stdout);
    // Every chunk committed: nothing to resume, and verify finds the target as written.
    let out = ws.rowshift(&["verify", &p]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);

    // Kind 11 is added: a retry writes those rows; the others are still refused and stay
    // quarantined with the server's reason.
    dst.exec(&format!("INSERT INTO {}.kinds VALUES (11)", dst.q()));
    let out = ws.rowshift(&["retry", &p, "--rejects", "--json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let still = "qty = 12 OR id = 105";
    assert_eq!(quarantined(), ids(still));
    assert_eq!(&dst.refusal(105)[0], unique);
    assert_eq!(dst.items(), kept(still));
}
