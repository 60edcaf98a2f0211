//! The table DDL a pipeline declares beyond its columns, for the SQL targets: the
//! column clauses of `CREATE TABLE` (`default`, `identity`), and the post-load DDL run
//! once every chunk is done: indexes, check constraints and foreign keys, each built
//! only after the data it covers has been checked, and identity counters set past the
//! largest value loaded.
//!
//! The catalog is the record of what was done: each statement is skipped when the
//! catalog already holds what it makes, so a run killed before or during the post-load
//! DDL, or one that reported violations, does the rest when it is run again (MySQL
//! commits each DDL statement on its own; the catalog then has every one done so far).

use crate::config::{ConstraintDecl, ForeignKeyDecl, IndexDecl, TargetConfig};
use crate::error::diag::quote_value;
use crate::sink::table::DeclaredColumn;
use crate::sql::dialect::{Conn, Dialect, Driver, Kind, Stmt, Value};
use crate::{Error, Result};

/// Rows a violation message names at most.
const SHOWN: usize = 5;

/// What a database spells its own way in the declared DDL.
pub trait TableDdl: Dialect {
    /// The words after a column's type that make it an identity column (empty when the
    /// integer primary key numbers itself, as SQLite's does).
    fn identity_words(&self) -> &'static str;

    /// `expr` as text, for messages.
    fn text(&self, expr: &str) -> String;

    /// Whether foreign keys and checks are added after the load with `ALTER TABLE`
    /// (false for SQLite, which takes them only in `CREATE TABLE`).
    fn alters_constraints(&self) -> bool {
        true
    }

    /// Whether a constraint is added `NOT VALID`, then validated (PostgreSQL), so that
    /// its check of the existing rows does not hold the table's strongest lock.
    fn not_valid(&self) -> bool {
        false
    }

    /// A query counting the indexes named `name` (binds the schema, table and name).
    fn index_exists(&self, schema: &str, table: &str, name: &str) -> Stmt;

    /// A query giving one row per constraint named `name` of the table: 1 if it still
    /// needs validating, 2 if it holds (binds the schema, table and name).
    fn constraint_state(&self, schema: &str, table: &str, name: &str) -> Stmt;

    /// The statement that makes the identity `column` of `table` (quoted) number on
    /// from `next` (a number, or in a plan the expression it will be); `None` when the
    /// target needs none.
    fn restart_identity(&self, table: &str, column: &str, next: &str) -> Option<String>;
}

/// What the pipeline declares for the table beyond its columns.
#[derive(Debug, Clone, Default)]
pub struct Declared {
    /// `[[target.indexes]]`.
    pub indexes: Vec<IndexDecl>,
    /// `[[target.foreign_keys]]`.
    pub foreign_keys: Vec<ForeignKeyDecl>,
    /// `[[target.constraints]]`.
    pub constraints: Vec<ConstraintDecl>,
}

impl Declared {
    /// The declarations of `config`.
    pub fn of(config: &TargetConfig) -> Self {
        Declared {
            indexes: config.indexes.clone(),
            foreign_keys: config.foreign_keys.clone(),
            constraints: config.constraints.clone(),
        }
    }
}

/// The clauses after a column's type and `NOT NULL` for its `default` and `identity`.
pub fn column_clauses<D: TableDdl>(d: &D, c: &DeclaredColumn) -> String {
    let mut out = String::new();
    if c.identity && !d.identity_words().is_empty() {
        out.push(' ');
        out.push_str(d.identity_words());
    }
    if let Some(default) = &c.default {
        out.push_str(&format!(" DEFAULT ({default})"));
    }
    out
}

/// The table constraints SQLite needs in `CREATE TABLE` (it cannot add them later):
/// checks and foreign keys, each `CONSTRAINT name ...`.
pub fn inline_constraints<D: TableDdl>(d: &D, schema: &str, declared: &Declared) -> Vec<String> {
    let mut out: Vec<String> = declared
        .constraints
        .iter()
        .map(|c| format!("CONSTRAINT {} CHECK ({})", d.quote(&c.name), c.check))
        .collect();
    out.extend(declared.foreign_keys.iter().map(|fk| {
        format!(
            "CONSTRAINT {} {}",
            d.quote(&fk.name),
            fk_clause(d, schema, fk)
        )
    }));
    out
}

/// `FOREIGN KEY (...) REFERENCES table (...) [ON DELETE ...] [ON UPDATE ...]`.
fn fk_clause<D: TableDdl>(d: &D, schema: &str, fk: &ForeignKeyDecl) -> String {
    let mut s = format!(
        "FOREIGN KEY ({}) REFERENCES {} ({})",
        list(d, &fk.columns),
        d.qualified(schema, &fk.table),
        list(d, &fk.references)
    );
    if let Some(a) = fk.on_delete {
        s.push_str(&format!(" ON DELETE {a}"));
    }
    if let Some(a) = fk.on_update {
        s.push_str(&format!(" ON UPDATE {a}"));
    }
    s
}

fn list<D: TableDdl>(d: &D, names: &[String]) -> String {
    names
        .iter()
        .map(|n| d.quote(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table whose post-load DDL runs, and how its rows are named in messages.
pub struct PostLoad<'a, D: TableDdl> {
    /// The database's spelling.
    pub d: &'a D,
    /// The schema or database ("" for SQLite).
    pub schema: &'a str,
    /// The table.
    pub table: &'a str,
    /// The table's columns as declared.
    pub columns: &'a [DeclaredColumn],
    /// The columns that name a row in messages (the primary key).
    pub key: Vec<String>,
    /// The declarations.
    pub declared: &'a Declared,
    /// The target, for errors.
    pub here: &'a str,
}

impl<D: TableDdl> PostLoad<'_, D> {
    /// Runs the post-load DDL on `conn`. Returns the declarations the data does not
    /// allow, each naming the rows in the way; those are left undone, and the rest is
    /// done. A database error stops at once.
    pub async fn run(&self, conn: &mut Conn<D>) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        for ix in &self.declared.indexes {
            if self
                .count(conn, self.d.index_exists(self.schema, self.table, &ix.name))
                .await?
                > 0
            {
                continue;
            }
            if ix.unique
                && let Some(p) = self.duplicates(conn, ix).await?
            {
                problems.push(p);
                continue;
            }
            self.exec(conn, self.index_sql(ix)).await?;
            crate::fault::crash_run(&format!("post-load:{}", ix.name));
        }
        for c in &self.declared.constraints {
            if !self.d.alters_constraints() {
                break;
            }
            let state = self.state(conn, &c.name).await?;
            if state == Some(2) {
                continue;
            }
            if let Some(p) = self.failing_check(conn, c).await? {
                problems.push(p);
                continue;
            }
            let add = format!("CHECK ({})", c.check);
            self.add_constraint(conn, &c.name, state, add).await?;
            crate::fault::crash_run(&format!("post-load:{}", c.name));
        }
        for fk in &self.declared.foreign_keys {
            let state = if self.d.alters_constraints() {
                self.state(conn, &fk.name).await?
            } else {
                // SQLite holds the key since CREATE TABLE but checks it only with
                // `PRAGMA foreign_keys`, which the load does not set: the rows are checked
                // here all the same.
                Some(1)
            };
            if state == Some(2) {
                continue;
            }
            if let Some(p) = self.orphans(conn, fk).await? {
                problems.push(p);
                continue;
            }
            if self.d.alters_constraints() {
                let add = fk_clause(self.d, self.schema, fk);
                self.add_constraint(conn, &fk.name, state, add).await?;
            }
        }
        for c in self.columns.iter().filter(|c| c.identity) {
            let col = self.d.quote(&c.name);
            // As text: the column's own integer type (PostgreSQL's int4 too) reads as
            // that, whatever its width.
            let max = self.d.text(&format!("COALESCE(MAX({col}), 0) + 1"));
            let rows = self
                .fetch(
                    conn,
                    Stmt {
                        sql: format!("SELECT {max} FROM {}", self.t()),
                        binds: Vec::new(),
                    },
                    &[Kind::Text],
                )
                .await?;
            let text = rows
                .first()
                .and_then(|r| r.first())
                .and_then(|v| v.clone().text())
                .unwrap_or_default();
            let next: i64 = text.parse().map_err(|_| {
                Error::Internal(format!(
                    "{}: the next value of identity column {col} read as {text:?}",
                    self.here
                ))
            })?;
            if let Some(sql) = self.d.restart_identity(&self.t(), &col, &next.to_string()) {
                self.exec(conn, sql).await?;
            }
        }
        Ok(problems)
    }

    fn t(&self) -> String {
        self.d.qualified(self.schema, self.table)
    }

    async fn exec(&self, conn: &mut Conn<D>, sql: String) -> Result<()> {
        <D::Db as Driver>::execute_raw(conn, sql.clone())
            .await
            .map_err(|e| self.d.error(&format!("{}: {sql}", self.here), e))?;
        crate::sql::trace::executed(&sql);
        Ok(())
    }

    /// The statements [`PostLoad::run`] would run on rows that allow every declaration,
    /// in its order, running none: `catalog` runs a catalog query (in the database's
    /// placeholders) and gives its integers, so that what the catalog holds is skipped
    /// as the run skips it. An identity counter's next value is shown as the expression
    /// the run computes after the load.
    pub fn planned(
        &self,
        catalog: &mut dyn FnMut(Stmt) -> Result<Vec<i64>>,
    ) -> Result<Vec<String>> {
        let mut ask = |stmt: Stmt| {
            catalog(Stmt {
                sql: self.d.params(&stmt.sql),
                binds: stmt.binds,
            })
        };
        let mut out = Vec::new();
        for ix in &self.declared.indexes {
            let found = ask(self.d.index_exists(self.schema, self.table, &ix.name))?;
            if found.first().copied().unwrap_or(0) == 0 {
                out.push(self.index_sql(ix));
            }
        }
        let alters = self.d.alters_constraints();
        let mut constraint = |name: &str, clause: String, out: &mut Vec<String>| -> Result<()> {
            let state = ask(self.d.constraint_state(self.schema, self.table, name))?
                .into_iter()
                .max();
            if state != Some(2) {
                out.extend(self.constraint_sql(name, state, clause));
            }
            Ok(())
        };
        for c in self.declared.constraints.iter().filter(|_| alters) {
            constraint(&c.name, format!("CHECK ({})", c.check), &mut out)?;
        }
        for fk in self.declared.foreign_keys.iter().filter(|_| alters) {
            constraint(&fk.name, fk_clause(self.d, self.schema, fk), &mut out)?;
        }
        for c in self.columns.iter().filter(|c| c.identity) {
            let col = self.d.quote(&c.name);
            let next = format!("<MAX({col}) + 1 after the load>");
            out.extend(self.d.restart_identity(&self.t(), &col, &next));
        }
        Ok(out)
    }

    fn index_sql(&self, ix: &IndexDecl) -> String {
        format!(
            "CREATE {}INDEX {} ON {} ({})",
            if ix.unique { "UNIQUE " } else { "" },
            self.d.quote(&ix.name),
            self.t(),
            list(self.d, &ix.columns)
        )
    }

    /// The statements that add constraint `name` (`clause`) in `state` (see
    /// [`PostLoad::state`]): added `NOT VALID` then validated where the database can.
    fn constraint_sql(&self, name: &str, state: Option<i64>, clause: String) -> Vec<String> {
        let t = self.t();
        let q = self.d.quote(name);
        let mut out = Vec::new();
        if state.is_none() {
            let not_valid = if self.d.not_valid() { " NOT VALID" } else { "" };
            out.push(format!(
                "ALTER TABLE {t} ADD CONSTRAINT {q} {clause}{not_valid}"
            ));
        }
        if self.d.not_valid() {
            out.push(format!("ALTER TABLE {t} VALIDATE CONSTRAINT {q}"));
        }
        out
    }

    async fn fetch(
        &self,
        conn: &mut Conn<D>,
        stmt: Stmt,
        kinds: &[Kind],
    ) -> Result<Vec<Vec<Value>>> {
        let stmt = Stmt {
            sql: self.d.params(&stmt.sql),
            binds: stmt.binds,
        };
        <D::Db as Driver>::fetch(conn, stmt, kinds)
            .await
            .map_err(|e| self.d.error(self.here, e))
    }

    async fn count(&self, conn: &mut Conn<D>, stmt: Stmt) -> Result<i64> {
        let rows = self.fetch(conn, stmt, &[Kind::Int]).await?;
        Ok(rows.first().and_then(|r| r.first()).map_or(0, Value::int))
    }

    /// The constraint's state: `None` absent, 1 not yet validated, 2 holds.
    async fn state(&self, conn: &mut Conn<D>, name: &str) -> Result<Option<i64>> {
        let stmt = self.d.constraint_state(self.schema, self.table, name);
        let rows = self.fetch(conn, stmt, &[Kind::Int]).await?;
        Ok(rows.iter().filter_map(|r| r.first()).map(Value::int).max())
    }

    async fn add_constraint(
        &self,
        conn: &mut Conn<D>,
        name: &str,
        state: Option<i64>,
        clause: String,
    ) -> Result<()> {
        for sql in self.constraint_sql(name, state, clause) {
            self.exec(conn, sql).await?;
        }
        Ok(())
    }

    /// The key columns as text, then `cols` as text.
    fn select(&self, alias: &str, cols: &[String]) -> (String, Vec<Kind>) {
        let exprs: Vec<String> = self
            .key
            .iter()
            .chain(cols)
            .map(|c| self.d.text(&format!("{alias}{}", self.d.quote(c))))
            .collect();
        let kinds = vec![Kind::Text; exprs.len()];
        (exprs.join(", "), kinds)
    }

    /// A row's key, as `id=3` or `(a=1, b=2)`.
    fn key_of(&self, row: &[Value]) -> String {
        let parts: Vec<String> = self
            .key
            .iter()
            .zip(row)
            .map(|(k, v)| format!("{k}={}", shown(v, false)))
            .collect();
        match parts.len() {
            0 => "a row".to_string(),
            1 => parts[0].clone(),
            _ => format!("({})", parts.join(", ")),
        }
    }

    /// `cols` and their values in `row` after the key: `email 'a@x'`.
    fn values_of(&self, cols: &[String], row: &[Value]) -> String {
        let vals: Vec<String> = row[self.key.len()..]
            .iter()
            .map(|v| shown(v, true))
            .collect();
        if cols.len() == 1 {
            format!("{} {}", cols[0], vals[0])
        } else {
            format!("({}) ({})", cols.join(", "), vals.join(", "))
        }
    }

    fn order(&self, alias: &str, cols: &[String]) -> String {
        cols.iter()
            .chain(&self.key)
            .map(|c| format!("{alias}{}", self.d.quote(c)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The rows that share values of a unique index, grouped by value.
    async fn duplicates(&self, conn: &mut Conn<D>, ix: &IndexDecl) -> Result<Option<String>> {
        let cols = list(self.d, &ix.columns);
        let not_null = ix
            .columns
            .iter()
            .map(|c| format!("{} IS NOT NULL", self.d.quote(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let (select, kinds) = self.select("", &ix.columns);
        let sql = format!(
            "SELECT {select} FROM {t} WHERE ({cols}) IN (SELECT {cols} FROM {t} WHERE {not_null} GROUP BY {cols} HAVING COUNT(*) > 1) ORDER BY {order}",
            t = self.t(),
            order = self.order("", &ix.columns)
        );
        let rows = self
            .fetch(
                conn,
                Stmt {
                    sql,
                    binds: Vec::new(),
                },
                &kinds,
            )
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for r in &rows {
            let value = self.values_of(&ix.columns, r);
            let key = self.key_of(r);
            match groups.last_mut() {
                Some((v, keys)) if *v == value => keys.push(key),
                _ => groups.push((value, vec![key])),
            }
        }
        let shown_groups: Vec<String> = groups
            .iter()
            .take(SHOWN)
            .map(|(v, keys)| format!("{v} is held by {}", and_list(keys)))
            .collect();
        let more = match groups.len().saturating_sub(SHOWN) {
            0 => String::new(),
            n => format!(" (and {n} more values)"),
        };
        Ok(Some(format!(
            "unique index `{}` cannot be built on {}: {}{more}",
            ix.name,
            self.table,
            shown_groups.join("; ")
        )))
    }

    /// The rows a check constraint does not hold for (a NULL result holds, as in SQL).
    async fn failing_check(
        &self,
        conn: &mut Conn<D>,
        c: &ConstraintDecl,
    ) -> Result<Option<String>> {
        let (select, kinds) = self.select("", &[]);
        let select = if select.is_empty() {
            "1".to_string()
        } else {
            select
        };
        let sql = format!(
            "SELECT {select} FROM {} WHERE NOT ({}) ORDER BY {}",
            self.t(),
            c.check,
            if self.key.is_empty() {
                "1".to_string()
            } else {
                self.order("", &[])
            }
        );
        let kinds = if kinds.is_empty() {
            vec![Kind::Text]
        } else {
            kinds
        };
        let rows = self
            .fetch(
                conn,
                Stmt {
                    sql,
                    binds: Vec::new(),
                },
                &kinds,
            )
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let keys: Vec<String> = rows.iter().take(SHOWN).map(|r| self.key_of(r)).collect();
        let more = match rows.len().saturating_sub(SHOWN) {
            0 => String::new(),
            n => format!(" and {n} more rows"),
        };
        Ok(Some(format!(
            "check constraint `{}` ({}) cannot be added to {}: it fails for {}{more}",
            c.name,
            c.check,
            self.table,
            keys.join(", ")
        )))
    }

    /// The rows whose foreign-key values the referenced table lacks.
    async fn orphans(&self, conn: &mut Conn<D>, fk: &ForeignKeyDecl) -> Result<Option<String>> {
        let (select, kinds) = self.select("c.", &fk.columns);
        let not_null = fk
            .columns
            .iter()
            .map(|c| format!("c.{} IS NOT NULL", self.d.quote(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let matches = fk
            .columns
            .iter()
            .zip(&fk.references)
            .map(|(c, r)| format!("r.{} = c.{}", self.d.quote(r), self.d.quote(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let sql = format!(
            "SELECT {select} FROM {} c WHERE {not_null} AND NOT EXISTS (SELECT 1 FROM {} r WHERE {matches}) ORDER BY {}",
            self.t(),
            self.d.qualified(self.schema, &fk.table),
            self.order("c.", &fk.columns)
        );
        let rows = self
            .fetch(
                conn,
                Stmt {
                    sql,
                    binds: Vec::new(),
                },
                &kinds,
            )
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let shown_rows: Vec<String> = rows
            .iter()
            .take(SHOWN)
            .map(|r| format!("{} ({})", self.values_of(&fk.columns, r), self.key_of(r)))
            .collect();
        let more = match rows.len().saturating_sub(SHOWN) {
            0 => String::new(),
            n => format!(" and {n} more rows"),
        };
        Ok(Some(format!(
            "foreign key `{}` cannot be added to {}: {}({}) has no row for {}{more}",
            fk.name,
            self.table,
            fk.table,
            fk.references.join(", "),
            shown_rows.join(", ")
        )))
    }
}

/// A value in a message: quoted when `quoted` (the data), bare for keys; NULL as NULL.
fn shown(v: &Value, quoted: bool) -> String {
    match v.clone().text() {
        None => "NULL".to_string(),
        Some(t) if quoted => quote_value(&t),
        Some(t) => t,
    }
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// The post-load DDL's problems as the error of a run that cannot finish them.
pub fn problems_error(here: &str, problems: &[String]) -> Error {
    Error::Check(format!("{here}: {}", problems.join("; ")))
}
