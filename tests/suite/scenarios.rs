//! Behaviour every SQL target must have, written once and run against each of them, in
//! the manner of Vector's sink compliance tests: a scenario is a generic function over
//! [`Target`], and `scenarios!` makes one `#[test]` per (target, scenario), named
//! `<file>::<target>::<scenario>`. What a target does differently (its SQL dialect,
//! the server's own words in an error) it says through the trait; what rowshift does is
//! asserted in the scenario, the same for every target.
//!
//! The targets: PostgreSQL ([`crate::common::PgSchema`], implemented in
//! [`crate::postgres`]), MariaDB/MySQL ([`crate::common::MyDb`], in [`crate::mysql`])
//! and SQLite ([`SqliteFile`], below), the last for the scenarios that apply to it. This
//! file holds the trait, the macro and the core scenarios (write modes, resume, verify,
//! refused rows, identifiers); `composite.rs`, `quarantine.rs`, `readback.rs`,
//! `integrity.rs`, `types.rs` and `secrets.rs` hold more. Behaviour only one database
//! has stays in that database's file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::common::{Workspace, sqlite_exec, sqlite_rows};

/// A private place on a database server (a PostgreSQL schema, a MySQL database) that a
/// scenario reads and writes, dropped when it goes out of scope.
pub(crate) trait Target: Sized {
    /// A new private schema or database; `tag` is the start of its name.
    fn create(tag: &str) -> Self;
    /// Its name.
    fn name(&self) -> &str;
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

    /// The lines of a pipeline's `[source]` or `[target]` that point at this place by a
    /// `schema` line, where its name may hold any character.
    fn location_by_name(&self) -> String {
        self.location()
    }

    /// The scheme of this server's URLs.
    const SCHEME: &'static str = "";
    /// This server's URL with a user and the password `pw`; `None` where the URL the
    /// tests use names no user to give one to.
    fn url_with_password(_pw: &str) -> Option<String> {
        unreachable!("this target has no passwords")
    }
    /// What the server says to [`Target::url_with_password`], or `None` where it lets
    /// the user in whatever the password (trust authentication).
    const PASSWORD_REFUSED: Option<&'static str> = None;

    /// A table `wide` (`id` and columns of types no pipeline type holds) with rows;
    /// returns the names of those columns.
    fn make_unmapped(&self) -> &'static [&'static str] {
        unreachable!("this target has no unmapped types")
    }
    /// What `validate` says of each of the columns [`Target::make_unmapped`] names.
    const UNMAPPED_ERRORS: &'static [&'static str] = &[];
    /// The rows of `wide`, those columns read as text, each as `id|value|...`.
    const UNMAPPED_ROWS: &'static [&'static str] = &[];

    /// A table `t` (`id integer` and a column of each mapped type) with rows at the edges
    /// of each type; returns how many.
    fn make_typed_table(&self) -> usize {
        unreachable!("the type round trip does not run against this target")
    }
    /// The columns of [`Target::make_typed_table`] besides `id`, each with the pipeline
    /// type that holds it.
    const TYPED_COLUMNS: &'static [(&'static str, &'static str)] = &[];
    /// A column of `t` as text, to compare source and target with.
    fn typed_text(column: &str) -> String {
        Self::text(column)
    }
    /// What else this server must show of the round trip: `rows` the source's text of
    /// `t`, `dst` the target.
    fn check_typed(_rows: &[Vec<String>], _dst: &Self) {}

    /// An empty `items (id, name, qty)` whose trigger turns row 42's name upper case.
    fn make_shouting_items(&self) {
        unreachable!("the trigger scenario does not run against this target")
    }

    /// An empty `payments` coarser than `common::coarse_pipeline`'s rows 2 to 4: `at`
    /// in whole seconds, `amount` with 2 decimals, `took` in milliseconds; and
    /// `CHECK (amount < 100)`.
    fn make_coarse_payments(&self) {
        unreachable!("the coarse-values scenario does not run against this target")
    }
    /// `payments`' column types as the catalog shows them: at, amount, took.
    const COARSE_TYPES: [&'static str; 3] = ["", "", ""];
    /// The quarantine row (`row_key`, `column_name`, `value`, `reason`) of row 6, which
    /// breaks the `CHECK`: the server's words.
    fn coarse_check_refusal(&self) -> Vec<String> {
        unreachable!("the coarse-values scenario does not run against this target")
    }

    /// Drops the primary key of `items` in this place, so that a row can be repeated.
    fn drop_items_key(&self);

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

/// Writes `pipelines/<name>.toml`, a pipeline from `src` to `dst`: `source` and `target`
/// are the lines of `[source]` and `[target]` besides the location, `rest` what follows
/// (`[target.columns]`, `[chunks]`, ...).
pub(crate) fn pipeline<T: Target>(
    ws: &Workspace,
    name: &str,
    (src, dst): (&T, &T),
    (source, target): (&str, &str),
    rest: &str,
) -> String {
    ws.write(
        &format!("pipelines/{name}.toml"),
        &format!(
            "name = \"{name}\"\n[source]\n{}\n{source}\n[target]\n{}\n{target}\n{rest}",
            src.location(),
            dst.location()
        ),
    )
}

/// A pipeline from `items` in `src` to `items` in `dst`, with `extra` lines in its
/// `[target]` and `rest` after it.
pub(crate) fn items_pipeline<T: Target>(
    ws: &Workspace,
    name: &str,
    places: (&T, &T),
    extra: &str,
    rest: &str,
) -> String {
    let target = format!("table = \"items\"\n{extra}");
    let source = "table = \"items\"\nkey = \"id\"";
    pipeline(ws, name, places, (source, &target), rest)
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
    let columns = format!(
        r#"[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
name = {{ type = "{}", expr = "name" }}
qty = {{ type = "integer", expr = "qty" }}
[chunks]
rows = 50
"#,
        T::NAME_TYPE
    );
    items_pipeline(ws, name, (src, dst), extra, &columns)
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
pub(crate) use scenarios;

scenarios!(
    postgres: crate::common::PgSchema,
    mysql: crate::common::MyDb;
    [
        sqlite_to_the_target_with_transforms_matches_rows_computed_here,
        csv_to_the_target_matches_rows_computed_here,
        upsert_updates_changed_rows_and_replace_chunk_removes_deleted_ones,
        a_failed_chunk_leaves_nothing_and_resume_writes_each_row_once,
        a_table_dropped_behind_the_checkpoint_s_back_is_not_refilled_in_part,
        text_keys_are_planned_and_read_back_in_byte_order,
        rows_the_target_refuses_are_quarantined_with_the_servers_reason_and_the_rest_written,
        verify_finds_tampered_chunks_and_repair_rewrites_them,
        identifiers_with_spaces_quotes_backticks_mixed_case_and_reserved_words_work,
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
        verify_finds_tampered_chunks_and_repair_rewrites_them,
        identifiers_with_spaces_quotes_backticks_mixed_case_and_reserved_words_work,
        csv_to_the_target_matches_rows_computed_here,
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
        // The tag may hold any character; the file's folder is the test's own anyway.
        let stem: String = tag.chars().filter(char::is_ascii_alphanumeric).collect();
        let path = dir.path().join(format!("{stem}.db"));
        sqlite_exec(&path, "PRAGMA user_version = 0");
        SqliteFile { _dir: dir, path }
    }

    fn name(&self) -> &str {
        "main"
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

    fn drop_items_key(&self) {
        // SQLite cannot drop a primary key: the table is made again without one.
        self.exec(
            "CREATE TABLE keyless AS SELECT * FROM items; DROP TABLE items;
             ALTER TABLE keyless RENAME TO items",
        );
    }

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

fn identifiers_with_spaces_quotes_backticks_mixed_case_and_reserved_words_work<T: Target>() {
    let ws = Workspace::new();
    let src = T::create("rs my `odd` \"Src\" Schema");
    let dst = T::create("select");
    let q = T::quote;
    // Row 3 has no user name.
    let values: Vec<String> = (1..=50)
        .map(|g| {
            let user = if g == 3 {
                "NULL".into()
            } else {
                format!("'u{g}'")
            };
            format!("({g}, {user}, 'it''s {g}', 'M{g}', {})", g * 10)
        })
        .collect();
    src.exec(&format!(
        "CREATE TABLE {s}.{table} ({key} bigint PRIMARY KEY, {user} varchar(20), {here} varchar(20), \
         {mixed} varchar(20), {spaced} integer);
         INSERT INTO {s}.{table} VALUES {}",
        values.join(", "),
        s = src.q(),
        table = q("Order Lines \"x\""),
        key = q("select"),
        user = q("user name"),
        here = q("it's `here`"),
        mixed = q("MixedCase"),
        spaced = q("Mixed Case"),
    ));
    let p = ws.write(
        "pipelines/weird.toml",
        &format!(
            r#"name = "weird"
[source]
{src}
table = 'Order Lines "x"'
key = "select"
[target]
{dst}
table = 'from "t" Table'
[target.columns]
"where" = {{ type = "bigint", expr = '"select"', primary_key = true }}
"user name" = {{ type = "text", expr = '"user name"' }}
"it's `here`" = {{ type = "text", expr = "\"it's `here`\"" }}
'a "quoted" Col' = {{ type = "text", expr = '"MixedCase"' }}
"Group By" = {{ type = "integer", expr = '"Mixed Case" * 2 + 1' }}
[chunks]
rows = 7
"#,
            src = src.location_by_name(),
            dst = dst.location_by_name()
        ),
    );
    run_ok(&ws, &p);
    let mut got = dst.rows(&format!(
        "SELECT {}, {}, {}, {}, {} FROM {}.{}",
        T::text(&q("where")),
        q("user name"),
        q("it's `here`"),
        q("a \"quoted\" Col"),
        T::text(&q("Group By")),
        dst.q(),
        q("from \"t\" Table")
    ));
    got.sort_by_key(|r| r[0].parse::<i64>().unwrap());
    let expected: Vec<Vec<String>> = (1..=50)
        .map(|g| {
            vec![
                g.to_string(),
                if g == 3 {
                    "NULL".into()
                } else {
                    format!("u{g}")
                },
                format!("it's {g}"),
                format!("M{g}"),
                (g * 20 + 1).to_string(),
            ]
        })
        .collect();
    assert_eq!(got, expected);
    assert_eq!(dst.count("from \"t\" Table_rejects"), 0);
}

fn verify_finds_tampered_chunks_and_repair_rewrites_them<T: Target>() {
    let ws = Workspace::new();
    let src = T::create("rs_verify_src");
    let dst = T::create("rs_verify_dst");
    src.make_items(400);
    let p = mode_pipeline(&ws, "recon", &src, &dst, "");
    run_ok(&ws, &p);
    let clean = ws.rowshift(&["verify", &p]);
    assert_eq!(clean.code, 0, "{}{}", clean.stdout, clean.stderr);
    assert!(
        clean.stdout.contains("8 compared, 0 differ"),
        "{}",
        clean.stdout
    );
    // A changed value in chunk 1, a deleted row in chunk 4, an extra row in chunk 6 (no
    // primary key stops it once dropped).
    dst.exec(&format!(
        "UPDATE {d}.items SET name = 'changed' WHERE id = 75;
         DELETE FROM {d}.items WHERE id = 220",
        d = dst.q()
    ));
    dst.drop_items_key();
    dst.exec(&format!(
        "INSERT INTO {d}.items SELECT * FROM {d}.items WHERE id = 333",
        d = dst.q()
    ));
    let out = ws.rowshift(&["verify", &p]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("8 compared, 3 differ"),
        "{}",
        out.stdout
    );
    let out = ws.rowshift(&["verify", &p, "--repair"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("repaired 3 of 3 chunks (150 rows written)"),
        "{}",
        out.stdout
    );
    assert_eq!(dst.items(), src.items());
    let again = ws.rowshift(&["verify", &p]);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
}

fn csv_to_the_target_matches_rows_computed_here<T: Target>() {
    let ws = Workspace::new();
    let db = T::create("rs_csv_to");
    let mut csv = String::from("id,name,amount,day\n");
    let mut expected = Vec::new();
    for i in 1..=300i64 {
        let name = match i % 4 {
            0 => format!("\"Zoë, \"\"the\"\" {i}\""),
            1 => String::new(),
            _ => format!("name {i}"),
        };
        csv.push_str(&format!(
            "{i},{name},{}.{:02},2024-03-{:02}\n",
            i * 3,
            i % 100,
            i % 28 + 1
        ));
        let shown = match i % 4 {
            0 => format!("ZOË, \"THE\" {i}"),
            1 => "NULL".into(),
            _ => format!("NAME {i}"),
        };
        expected.push(vec![
            i.to_string(),
            shown,
            format!("{}.{:02}", i * 3 + 1, i % 100),
            format!("2024-03-{:02}", i % 28 + 1),
        ]);
    }
    ws.write("samples/pay.csv", &csv);
    let p = ws.write(
        "pipelines/csv_to.toml",
        &format!(
            r#"name = "csv_to"
[source]
url = "../samples/pay.csv"
key = "id"
[source.types]
id = "bigint"
amount = "numeric(10,2)"
day = "date"
[target]
{target}
table = "payments"
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
name = {{ type = "text", expr = "upper(name)" }}
amount = {{ type = "numeric(10,2)", expr = "amount + 1" }}
day = {{ type = "date", expr = "day" }}
[chunks]
rows = 64
"#,
            target = db.location()
        ),
    );
    run_ok(&ws, &p);
    let mut got = db.rows(&format!(
        "SELECT {}, name, {}, {} FROM {}.payments",
        T::text("id"),
        T::text("amount"),
        T::text("day"),
        db.q()
    ));
    got.sort_by_key(|r| r[0].parse::<i64>().unwrap());
    assert_eq!(got, expected);
}
