//! Behaviour every SQL target must have, written once and run against each of them, in
//! the manner of Vector's sink compliance tests: a scenario is a generic function over
//! [`Target`], and `scenarios!` makes one `#[test]` per (target, scenario), named
//! `scenarios::<target>::<scenario>`. What a target does differently (its SQL dialect,
//! the server's own words in an error) it says through the trait; what rowshift does is
//! asserted here, the same for every target.
//!
//! The targets: PostgreSQL ([`crate::postgres`]) and MariaDB/MySQL ([`crate::mysql`]).
//! SQLite is not one yet: its file target has no private-schema helper here, and its
//! tests of these behaviours are in `tests/suite/checkpoints.rs` and `tests/cli.rs`.
//! Behaviour only one database has stays in that database's file.

use crate::common::Workspace;

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
            "SELECT {}, name, {} FROM {}.items ORDER BY id",
            Self::text("id"),
            Self::text("qty"),
            self.q()
        ))
    }
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
        upsert_updates_changed_rows_and_replace_chunk_removes_deleted_ones,
        a_failed_chunk_leaves_nothing_and_resume_writes_each_row_once,
        text_keys_are_planned_and_read_back_in_byte_order,
    ]
);

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

    // A table dropped behind the checkpoint's back is not silently refilled in part.
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
