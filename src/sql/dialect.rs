//! The small interface behind which the SQL databases differ, so that the bookkeeping
//! every SQL target keeps (the checkpoint tables, the quarantine table) is written once.
//!
//! A [`Dialect`] says how its database spells what differs: quoting, placeholders, the
//! types and table options of the bookkeeping tables' DDL, creating a schema, its catalog
//! query, and what its error codes mean (through the database's own `errors.rs`).
//! [`Driver`] runs a statement with bound [`Value`]s on any sqlx database, so that the
//! shared code names no driver. Each database implements both in its own folder
//! (`db/<name>/dialect.rs`); the run lock, which needs the checkpoint's vocabulary, is
//! `checkpoint::lock::SessionLock`.

use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Row, Type};

use crate::Error;
use crate::runtime::IoRuntime;

/// How a database writes bound parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marks {
    /// `$1, $2, …` (PostgreSQL).
    Numbered,
    /// `?` (SQLite, MySQL).
    Question,
}

impl Marks {
    /// Replaces each `?` of `sql` (none of which is inside a literal or a quoted
    /// identifier) with this style's parameter, numbered in order.
    pub fn apply(self, sql: &str) -> String {
        match self {
            Marks::Question => sql.to_string(),
            Marks::Numbered => {
                let mut out = String::with_capacity(sql.len() + 8);
                let mut n = 0;
                for c in sql.chars() {
                    if c == '?' {
                        n += 1;
                        out.push_str(&format!("${n}"));
                    } else {
                        out.push(c);
                    }
                }
                out
            }
        }
    }
}

/// A column type of a bookkeeping table, which each dialect spells its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ddl {
    /// Text that is (part of) a primary key: MySQL cannot index unbounded text.
    KeyText,
    /// Unbounded text.
    Text,
    /// Text of at most 16 characters (states, hex tokens).
    ShortText,
    /// A 64-bit integer.
    BigInt,
    /// A double-precision float.
    Double,
    /// A 64-bit integer primary key that numbers inserted rows in order.
    Serial,
    /// When a row was inserted, filled in by the database (SQLite has no such
    /// default: its inserts bind the time as text).
    InsertedAt,
}

/// What differs between the SQL databases for the code they share.
///
/// The contract:
/// - `quote` makes any name safe in a statement (it doubles the quote character), and
///   `qualified` names a table in a schema (MySQL: a database; SQLite: the file, so the
///   schema is left out).
/// - Statements are written with `?` and `params` turns them into the database's
///   placeholders; a `?` never stands inside a literal or a quoted name there.
/// - `ddl` and `table_options` give the bookkeeping tables types the three databases
///   read back alike: text as `String`, integers as `i64`, doubles as `f64`.
/// - `create_schema` creates the schema the tables live in, if the database has one,
///   and does nothing when it exists.
/// - `columns_sql` lists a table's column names (one text column a row, binds the schema
///   and the table): no rows means no such table. It never fails on a missing table.
/// - `error` classifies a driver error (transient, disk full, refused row) exactly as the
///   database's `errors.rs` does for its own statements, naming `here`.
/// - `ddl_lock` and `is_create_race`: concurrent `CREATE ... IF NOT EXISTS` of the same
///   schema or table can fail in the loser on some servers. `ddl_lock` is a statement
///   that serializes such creations inside a transaction, and `is_create_race` says
///   whether an error is the loser's, to be tried again.
pub trait Dialect: Clone + Send + Sync + 'static {
    /// The sqlx database.
    type Db: Driver;

    /// Quotes an identifier.
    fn quote(&self, name: &str) -> String;

    /// `table` in `schema`, quoted.
    fn qualified(&self, schema: &str, table: &str) -> String {
        format!("{}.{}", self.quote(schema), self.quote(table))
    }

    /// How bound parameters are written.
    fn marks(&self) -> Marks;

    /// `sql`, written with `?`, in this database's placeholders.
    fn params(&self, sql: &str) -> String {
        self.marks().apply(sql)
    }

    /// How a bookkeeping column of type `ty` is declared.
    fn ddl(&self, ty: Ddl) -> &'static str;

    /// Whether an insert binds the time of a [`Ddl::InsertedAt`] column (as RFC 3339
    /// text), the column having no default that fills it.
    fn binds_inserted_at(&self) -> bool {
        false
    }

    /// What follows a bookkeeping table's column list (engine, character set).
    fn table_options(&self) -> &'static str {
        ""
    }

    /// The word for what `qualified` puts a table in, in messages (`schema`, `database`).
    fn schema_word(&self) -> &'static str;

    /// The statement that creates `schema` if it is not there, if the database has
    /// schemas.
    fn create_schema(&self, schema: &str) -> Option<String>;

    /// The catalog query that lists the column names of a table (binds the schema and
    /// the table name, unquoted).
    fn columns_sql(&self) -> &'static str;

    /// An index on `column` declared inside a bookkeeping table's column list, where the
    /// database wants one on the column that statements select and delete by.
    fn index(&self, _column: &str) -> Option<String> {
        None
    }

    /// A driver error at `here`, classified by the database's own codes.
    fn error(&self, here: &str, e: sqlx::Error) -> Error;

    /// A statement, run first in the transaction that creates bookkeeping tables, that
    /// keeps other sessions from creating them at the same moment (`key` names the
    /// tables).
    fn ddl_lock(&self, _key: i64) -> Option<String> {
        None
    }

    /// Whether `e` is what a session gets when another created the same schema or table
    /// at the same moment.
    fn is_create_race(&self, _e: &sqlx::Error) -> bool {
        false
    }

    /// An expression for the database's clock in milliseconds since 1970 (UTC): leases
    /// of a run shared by several processes are measured on it, so that the workers'
    /// own clocks never need to agree.
    fn now_ms(&self) -> &'static str;

    /// What ends a `SELECT` that locks the row it finds and passes over rows other
    /// sessions hold (`FOR UPDATE SKIP LOCKED`); `None` where the database has no row
    /// locks to skip (SQLite, whose writers take the whole file).
    fn skip_locked(&self) -> Option<&'static str> {
        None
    }
}

/// The locks statements take, in a database's own terms: what `rowshift plan` shows
/// beside each statement. Each database implements it in its `dialect.rs`, from what its
/// documentation says a statement locks; [`crate::sql::locks::classify`] reads what a
/// statement does.
pub trait Locks: Send + Sync {
    /// The database's name in messages (`PostgreSQL`).
    fn database(&self) -> &'static str;

    /// The lock `op` takes, and what it lets others do meanwhile.
    fn lock(&self, op: &crate::sql::locks::Op) -> String;

    /// The statement that takes the run lock of `pipeline` in `schema` (a migration
    /// set's lock too), as the checkpoint store runs it, with its values in place.
    fn run_lock(&self, schema: &str, pipeline: &str) -> String;

    /// How a data move writes its rows into `table` of `schema`, shown as one statement
    /// for all of its chunks.
    fn load(&self, schema: &str, table: &str, columns: &[String]) -> String;

    /// The lock `sql` takes.
    fn lock_of(&self, sql: &str) -> String {
        self.lock(&crate::sql::locks::classify(sql))
    }
}

/// A connection of dialect `D`'s database.
pub type Conn<D> = <<D as Dialect>::Db as Database>::Connection;

/// A lazily opened pool on one server, with the runtime its I/O runs on.
pub trait Pooled: Send + Sync + 'static {
    /// The sqlx database.
    type Db: Database;
    /// The pool, connected on first use.
    fn pool(&self) -> crate::Result<&sqlx::Pool<Self::Db>>;
    /// The runtime the pool's I/O runs on.
    fn io(&self) -> &IoRuntime;
    /// The server's redacted URL, for messages.
    fn shown(&self) -> &str;
}

/// A bound parameter, or a value read.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// NULL (bound as text).
    Null,
    /// An integer.
    Int(i64),
    /// A double.
    Real(f64),
    /// Text.
    Text(String),
}

impl Value {
    /// The text, or `None` for NULL (or another kind).
    pub fn text(self) -> Option<String> {
        match self {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The integer, or 0 for NULL (or another kind).
    pub fn int(&self) -> i64 {
        match self {
            Value::Int(i) => *i,
            _ => 0,
        }
    }

    /// The integer, or `None` for NULL (or another kind).
    pub fn opt_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The double, or 0 for NULL (or another kind).
    pub fn real(&self) -> f64 {
        match self {
            Value::Real(r) => *r,
            _ => 0.0,
        }
    }
}

impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        v.map_or(Value::Null, Value::Text)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}

/// How a column of a query's result is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// As an `i64`.
    Int,
    /// As an `f64`.
    Real,
    /// As text.
    Text,
}

/// A statement and its bound values.
#[derive(Debug, Clone, PartialEq)]
pub struct Stmt {
    /// The statement, in its database's placeholders.
    pub sql: String,
    /// The values, in order.
    pub binds: Vec<Value>,
}

/// The count of rows a statement changed, which each driver reports its own way.
pub trait Affected {
    /// Rows changed.
    fn affected(&self) -> u64;
}

/// Runs statements with bound [`Value`]s on a connection of any sqlx database whose
/// driver encodes and decodes `i64`, `f64` and text (every one rowshift uses).
pub trait Driver: Database {
    /// Runs `stmt`; the rows it changed.
    fn execute(conn: &mut Self::Connection, stmt: Stmt) -> BoxFuture<'_, sqlx::Result<u64>>;

    /// Runs `sql` with no parameters, unprepared (DDL that some servers do not
    /// prepare).
    fn execute_raw(conn: &mut Self::Connection, sql: String) -> BoxFuture<'_, sqlx::Result<()>>;

    /// The rows `stmt` selects, each column read as `kinds` says (NULL as
    /// [`Value::Null`]).
    fn fetch<'c>(
        conn: &'c mut Self::Connection,
        stmt: Stmt,
        kinds: &'c [Kind],
    ) -> BoxFuture<'c, sqlx::Result<Vec<Vec<Value>>>>;
}

impl<DB> Driver for DB
where
    DB: Database,
    DB::QueryResult: Affected,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    fn execute(conn: &mut Self::Connection, stmt: Stmt) -> BoxFuture<'_, sqlx::Result<u64>> {
        async move {
            let r = query::<DB>(stmt).execute(conn).await?;
            Ok(r.affected())
        }
        .boxed()
    }

    fn execute_raw(conn: &mut Self::Connection, sql: String) -> BoxFuture<'_, sqlx::Result<()>> {
        async move {
            sqlx::raw_sql(super::stmt(sql)).execute(conn).await?;
            Ok(())
        }
        .boxed()
    }

    fn fetch<'c>(
        conn: &'c mut Self::Connection,
        stmt: Stmt,
        kinds: &'c [Kind],
    ) -> BoxFuture<'c, sqlx::Result<Vec<Vec<Value>>>> {
        async move {
            let rows = query::<DB>(stmt).fetch_all(conn).await?;
            rows.iter()
                .map(|r| {
                    kinds
                        .iter()
                        .enumerate()
                        .map(|(i, k)| {
                            Ok(match k {
                                Kind::Int => r.try_get::<Option<i64>, _>(i)?.map(Value::Int),
                                Kind::Real => r.try_get::<Option<f64>, _>(i)?.map(Value::Real),
                                Kind::Text => r.try_get::<Option<String>, _>(i)?.map(Value::Text),
                            }
                            .unwrap_or(Value::Null))
                        })
                        .collect()
                })
                .collect()
        }
        .boxed()
    }
}

/// Runs `sql` (written with `?`) with `binds` on `conn`; the rows it changed, or the
/// error classified by `d`, naming `here`.
pub async fn run<D: Dialect>(
    d: &D,
    conn: &mut Conn<D>,
    here: &str,
    sql: &str,
    binds: Vec<Value>,
) -> crate::Result<u64> {
    let stmt = Stmt {
        sql: d.params(sql),
        binds,
    };
    D::Db::execute(conn, stmt)
        .await
        .map_err(|e| d.error(here, e))
}

/// [`run`] on a connection of `client`'s pool.
pub fn run_on<D: Dialect, C: Pooled<Db = D::Db>>(
    d: &D,
    client: &C,
    here: &str,
    sql: &str,
    binds: Vec<Value>,
) -> crate::Result<u64> {
    let pool = client.pool()?;
    client.io().block_on(async {
        let mut conn = pool.acquire().await.map_err(|e| d.error(here, e))?;
        run(d, &mut conn, here, sql, binds).await
    })
}

/// `stmt` as a sqlx query with its values bound.
fn query<DB>(stmt: Stmt) -> sqlx::query::Query<'static, DB, DB::Arguments>
where
    DB: Database,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
{
    let mut q = sqlx::query::<DB>(super::stmt(stmt.sql));
    for v in stmt.binds {
        q = match v {
            Value::Null => q.bind(None::<String>),
            Value::Int(i) => q.bind(i),
            Value::Real(r) => q.bind(r),
            Value::Text(t) => q.bind(t),
        };
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order_for_postgres() {
        let sql = "UPDATE t SET a = ? WHERE b = ? AND c = ?";
        assert_eq!(
            Marks::Numbered.apply(sql),
            "UPDATE t SET a = $1 WHERE b = $2 AND c = $3"
        );
        assert_eq!(Marks::Question.apply(sql), sql);
    }
}
