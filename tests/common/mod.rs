//! Test helpers: a scratch copy of the repository's samples and pipelines, running the
//! binary, and reading targets back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// A temporary folder holding copies of `samples/` and `pipelines/`, so every test writes
/// its own `out/` and tests can run in parallel.
pub struct Workspace {
    dir: tempfile::TempDir,
}

/// What a run of the binary printed and returned.
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Workspace {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for sub in ["samples", "pipelines"] {
            copy_dir(&root.join(sub), &dir.path().join(sub));
        }
        Workspace { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file and returns its path relative to the workspace.
    pub fn write(&self, rel: &str, text: &str) -> String {
        std::fs::write(self.path(rel), text).unwrap();
        rel.to_string()
    }

    pub fn rowshift(&self, args: &[&str]) -> Output {
        self.rowshift_full(".", args, &[])
    }

    pub fn rowshift_in(&self, cwd: &str, args: &[&str]) -> Output {
        self.rowshift_full(cwd, args, &[])
    }

    pub fn rowshift_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.rowshift_full(".", args, env)
    }

    fn rowshift_full(&self, cwd: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_rowshift"))
            .args(args)
            .current_dir(self.path(cwd))
            .envs(env.iter().copied())
            .output()
            .unwrap();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_name() == ".rowshift" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The `(chunk, detail)` of each difference that `verify --json` printed in `stdout`.
pub fn verify_differences(stdout: &str) -> Vec<(u64, String)> {
    let json: serde_json::Value = serde_json::from_str(stdout).unwrap();
    json["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["chunk"].as_u64().unwrap(),
                d["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every row of a query, each value as text (`NULL` for NULL).
pub fn sqlite_rows(db: &Path, sql: &str) -> Vec<Vec<String>> {
    use sqlx::{Row, TypeInfo, ValueRef};
    block_on(async {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .read_only(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_all(&pool)
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                (0..r.columns().len())
                    .map(|i| {
                        let raw = r.try_get_raw(i).unwrap();
                        if raw.is_null() {
                            return "NULL".to_string();
                        }
                        match raw.type_info().name() {
                            "INTEGER" => r.get::<i64, _>(i).to_string(),
                            "REAL" => r.get::<f64, _>(i).to_string(),
                            _ => r.get::<String, _>(i),
                        }
                    })
                    .collect()
            })
            .collect()
    })
}

/// Every row of a Parquet file or a directory of part files, keyed by the first column,
/// each row as `a|b|c` text.
pub fn parquet_rows(path: &Path) -> BTreeMap<String, String> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut f: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        f.sort();
        f
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = BTreeMap::new();
    for f in files {
        let file = std::fs::File::open(&f).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            for (key, row) in batch_rows(&batch.unwrap()) {
                assert!(
                    out.insert(key.clone(), row).is_none(),
                    "duplicate row {key} in {}",
                    f.display()
                );
            }
        }
    }
    out
}

fn batch_rows(batch: &RecordBatch) -> Vec<(String, String)> {
    let opts = FormatOptions::default().with_null("NULL");
    let fmts: Vec<_> = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
        .collect();
    (0..batch.num_rows())
        .map(|i| {
            let cells: Vec<String> = fmts.iter().map(|f| f.value(i).to_string()).collect();
            (cells[0].clone(), cells.join("|"))
        })
        .collect()
}

/// Executes statements on a SQLite database (tests that tamper with a target).
pub fn sqlite_exec(db: &Path, sql: &str) {
    block_on(async {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    })
}

/// Runs a future to completion on a fresh single-threaded runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The PostgreSQL server the tests use: `ROWSHIFT_PG_URL`, by default the local one
/// (trust authentication, database `test`).
pub fn pg_url() -> String {
    std::env::var("ROWSHIFT_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// The MySQL/MariaDB server the tests use: `ROWSHIFT_MYSQL_URL`, by default the local one
/// (user root without a password, database `test`).
pub fn my_url() -> String {
    std::env::var("ROWSHIFT_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_string())
}

/// An identifier quoted for PostgreSQL (and SQLite).
pub fn pg_quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An identifier quoted for MySQL/MariaDB.
pub fn my_quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `s` as a TOML basic string.
pub fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A schema of a test's own on the PostgreSQL server ([`pg_url`]).
pub type PgSchema = ServerDb<sqlx::Postgres>;

/// A database of a test's own on the MySQL/MariaDB server ([`my_url`]).
pub type MyDb = ServerDb<sqlx::MySql>;

impl PgSchema {
    /// A new schema named from `tag`, dropped with everything in it when the test ends.
    pub fn new(tag: &str) -> Self {
        ServerDb::create(
            &pg_url(),
            "ROWSHIFT_PG_URL",
            tag,
            pg_quote,
            "CREATE SCHEMA {}",
            "DROP SCHEMA IF EXISTS {} CASCADE",
        )
    }

    /// The schema name as a TOML string value.
    pub fn toml(&self) -> String {
        toml_str(&self.name)
    }
}

impl MyDb {
    /// A new database named from `tag`, dropped when the test ends.
    pub fn new(tag: &str) -> Self {
        ServerDb::create(
            &my_url(),
            "ROWSHIFT_MYSQL_URL",
            tag,
            my_quote,
            "CREATE DATABASE {} DEFAULT CHARACTER SET utf8mb4",
            "DROP DATABASE IF EXISTS {}",
        )
    }

    /// A URL naming this database.
    pub fn url(&self) -> String {
        let base = my_url();
        let root = base.rsplit_once('/').map_or(base.as_str(), |(r, _)| r);
        format!("{root}/{}", self.name)
    }
}

/// A schema (PostgreSQL) or database (MySQL) of a test's own on a real server, dropped
/// when the test ends, so tests run in parallel.
pub struct ServerDb<DB: sqlx::Database> {
    /// Its name, `<tag>_<unique>`.
    pub name: String,
    /// The runtime its statements run on, for tests that hold a transaction open.
    pub rt: tokio::runtime::Runtime,
    /// A pool of two connections to the server.
    pub pool: sqlx::Pool<DB>,
    /// Drops what `create` made (it needs the bounds `Drop` cannot have).
    drop: Option<DropFn>,
}

type DropFn = Box<dyn FnOnce(&tokio::runtime::Runtime)>;

impl<DB: sqlx::Database> ServerDb<DB>
where
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'r> String: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    /// Connects to `url` (which `env` can change) and runs `create` for a new name made
    /// from `tag` (any characters); `{}` in `create` and `drop` stands for the name as
    /// `quote` quotes it. A server that cannot be reached fails the test: a skipped test
    /// would pass without checking anything.
    pub fn create(
        url: &str,
        env: &str,
        tag: &str,
        quote: fn(&str) -> String,
        create: &str,
        drop: &str,
    ) -> Self {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "{tag}_{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let pool = rt
            .block_on(
                sqlx::pool::PoolOptions::<DB>::new()
                    .max_connections(2)
                    .acquire_timeout(std::time::Duration::from_secs(10))
                    .connect(url),
            )
            .unwrap_or_else(|e| {
                panic!(
                    "no database server is reachable at {} ({e}); these tests need it (CI={}). \
                     Start it (`.ci/run` does) or point {env} at a server",
                    rowshift::config::redact(url),
                    std::env::var("CI").unwrap_or_default()
                )
            });
        let quoted = quote(&name);
        let drop_sql = drop.replace("{}", &quoted);
        let drop_pool = pool.clone();
        let db = ServerDb {
            drop: Some(Box::new(move |rt: &tokio::runtime::Runtime| {
                let _ =
                    rt.block_on(sqlx::raw_sql(sqlx::AssertSqlSafe(drop_sql)).execute(&drop_pool));
            })),
            name,
            rt,
            pool,
        };
        db.exec(&create.replace("{}", &quoted));
        db
    }

    /// Runs statements.
    pub fn exec(&self, sql: &str) {
        self.rt
            .block_on(sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&self.pool))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Every row of `sql`, whose columns the query casts to text (`NULL` for NULL).
    pub fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        use sqlx::Row;
        let rows = self
            .rt
            .block_on(sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).fetch_all(&self.pool))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| {
                        r.try_get::<Option<String>, _>(i)
                            .unwrap_or_else(|e| panic!("{sql}: column {i}: {e}"))
                            .unwrap_or_else(|| "NULL".into())
                    })
                    .collect()
            })
            .collect()
    }
}

impl<DB: sqlx::Database> Drop for ServerDb<DB> {
    fn drop(&mut self) {
        if let Some(f) = self.drop.take() {
            f(&self.rt);
        }
    }
}

/// Appends `samples/coarse.csv` (`extra` rows after its five) to the table `payments` of
/// `target` (its `[target]` lines besides `table`), read-back off, and returns the
/// pipeline's path. Rows 2, 3 and 4 hold a value finer than a table of `at` in whole
/// seconds, `amount` in 2 decimal places and `took` in milliseconds keeps.
pub fn coarse_pipeline(ws: &Workspace, extra: &str, target: &str) -> String {
    ws.write(
        "samples/coarse.csv",
        &format!(
            "id,at,amount,took\n1,2024-01-01 12:00:00,1.50,08:00:00.123\n2,2024-01-01 12:00:00.6,2.00,08:00:00\n3,2024-01-01 12:00:00,1.005,08:00:00\n4,2024-01-01 12:00:00,4.00,08:00:00.1234\n5,,,\n{extra}"
        ),
    );
    ws.write(
        "pipelines/coarse.toml",
        &format!(
            r#"name = "coarse"
verify = "off"
[source]
url = "../samples/coarse.csv"
key = "id"
[source.types]
id = "bigint"
at = "timestamp"
amount = "numeric(10,4)"
took = "time"
[target]
{target}
table = "payments"
if_exists = "append"
[target.columns]
id = {{ type = "bigint", expr = "id", primary_key = true }}
at = {{ type = "timestamp", expr = "at" }}
amount = {{ type = "numeric(10,4)", expr = "amount" }}
took = {{ type = "time", expr = "took" }}
"#
        ),
    )
}

/// The quarantine rows (`row_key`, `column_name`, `value`, `reason`) that
/// [`coarse_pipeline`]'s rows 2 to 4 leave, with the table's column types as its catalog
/// shows them.
pub fn coarse_rejects(at: &str, amount: &str, took: &str) -> Vec<Vec<String>> {
    let reason = |name: &str, shown: &str, keeps: &str| {
        format!(
            "the target refused the row: column {name} is {shown}, which keeps {keeps}: a finer value would be rounded or cut"
        )
    };
    vec![
        vec![
            "2".into(),
            "at".into(),
            "2024-01-01T12:00:00.600".into(),
            reason("at", at, "whole seconds"),
        ],
        vec![
            "3".into(),
            "amount".into(),
            "1.0050".into(),
            reason("amount", amount, "2 decimal places"),
        ],
        vec![
            "4".into(),
            "took".into(),
            "08:00:00.123400".into(),
            reason("took", took, "3 digits of a second"),
        ],
    ]
}
