//! Which steps of a set depend on which: what lets `up` move the data of independent
//! steps at the same time, and keeps every other pair in the set's order.
//!
//! Each step touches tables: a data step the table it writes, its source table when the
//! source is the set's target, and the tables its `references` checks look values up
//! in; a SQL section every table its statements name (created, altered, indexed,
//! written or read, and the tables a foreign key it declares references). A statement
//! whose tables cannot be read from it (a function, a `DROP INDEX` without its table,
//! SQL the parser does not know) makes its step a barrier: it waits for every step before
//! it, and every step after it waits for it.
//!
//! Two steps depend on each other when one touches a table the other touches, or a
//! table joined to one the other touches by a foreign key, in either direction (declared
//! by the set's SQL, by a pipeline's `[[target.foreign_keys]]`, or already in the target's
//! catalog). A step waits for every earlier step it depends on; the graph has only edges
//! from earlier to later steps, so it has no cycle, and every dependent pair keeps the
//! order a sequential `up` gives it.

use std::collections::{BTreeMap, BTreeSet};

use datafusion_sql::sqlparser::ast::{
    AlterTable, AlterTableOperation, ColumnDef, ColumnOption, CreateIndex, CreateTable, ObjectName,
    ObjectType, RenameTableNameKind, Statement as Ast, TableConstraint, visit_relations,
};
use datafusion_sql::sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use datafusion_sql::sqlparser::parser::Parser;

use super::set::{MigrationSet, Step};
use crate::config::{CheckKind, Location, Pipeline};

/// The tables a step touches, or why it cannot be known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Touches {
    /// Table names, lower case, `schema.table` for a table outside the target's schema.
    pub tables: BTreeSet<String>,
    /// Foreign keys it declares, as (referencing table, referenced table).
    pub foreign_keys: Vec<(String, String)>,
    /// Why the step is a barrier, when it is one.
    pub barrier: Option<String>,
}

/// Reads SQL and names the way the target does.
struct Reader<'a> {
    dialect: Box<dyn Dialect>,
    /// The target's schema (PostgreSQL), database (MySQL) or `main` (SQLite), lower case.
    schema: String,
    target: &'a Location,
}

impl<'a> Reader<'a> {
    fn new(target: &'a Location) -> Reader<'a> {
        let (dialect, schema): (Box<dyn Dialect>, String) = match target {
            Location::Postgres { schema, .. } => (Box::new(PostgreSqlDialect {}), schema.clone()),
            Location::Mysql { schema, .. } => (Box::new(MySqlDialect {}), schema.clone()),
            _ => (Box::new(SQLiteDialect {}), "main".into()),
        };
        Reader {
            dialect,
            schema: schema.to_lowercase(),
            target,
        }
    }

    /// A table's name as the dependencies compare it. Case is folded whatever the
    /// quoting: two names that differ only in case are taken as one table, which can
    /// only add a dependency, never lose one.
    fn name(&self, n: &ObjectName) -> Option<String> {
        let parts: Vec<String> =
            n.0.iter()
                .map(|p| p.as_ident().map(|i| i.value.to_lowercase()))
                .collect::<Option<_>>()?;
        match parts.as_slice() {
            [table] => Some(table.clone()),
            [.., schema, table] if *schema == self.schema => Some(table.clone()),
            [.., schema, table] => Some(format!("{schema}.{table}")),
            [] => None,
        }
    }

    /// A plain table name from a pipeline (in the target's schema).
    fn plain(&self, table: &str) -> String {
        table.to_lowercase()
    }

    /// Adds what `sql` touches to `out`; a statement it cannot read makes `out` a barrier.
    fn statement(&self, sql: &str, out: &mut Touches) {
        let parsed = match Parser::parse_sql(self.dialect.as_ref(), sql) {
            Ok(p) => p,
            Err(_) => return barrier(out, sql, "its SQL is not read by rowshift's parser"),
        };
        for stmt in &parsed {
            if let Err(why) = self.one(stmt, out) {
                return barrier(out, sql, why);
            }
        }
    }

    fn one(&self, stmt: &Ast, out: &mut Touches) -> Result<(), &'static str> {
        let mut named = Vec::new();
        match stmt {
            Ast::CreateTable(CreateTable {
                name,
                columns,
                constraints,
                ..
            }) => {
                let table = self.name(name).ok_or("a table name it cannot read")?;
                for fk in fks_of(columns, constraints) {
                    let to = self.name(fk).ok_or("a foreign key it cannot read")?;
                    out.foreign_keys.push((table.clone(), to));
                }
            }
            Ast::CreateIndex(CreateIndex { .. })
            | Ast::Insert(_)
            | Ast::Update(_)
            | Ast::Delete(_)
            | Ast::Truncate(_)
            | Ast::CreateView(_) => {}
            Ast::AlterTable(AlterTable {
                name, operations, ..
            }) => {
                let table = self.name(name).ok_or("a table name it cannot read")?;
                for op in operations {
                    match op {
                        AlterTableOperation::AddConstraint {
                            constraint: TableConstraint::ForeignKey(fk),
                            ..
                        } => {
                            let to = self
                                .name(&fk.foreign_table)
                                .ok_or("a foreign key it cannot read")?;
                            out.foreign_keys.push((table.clone(), to));
                        }
                        AlterTableOperation::AddColumn { column_def, .. } => {
                            for fk in fks_of(std::slice::from_ref(column_def), &[]) {
                                let to = self.name(fk).ok_or("a foreign key it cannot read")?;
                                out.foreign_keys.push((table.clone(), to));
                            }
                        }
                        AlterTableOperation::RenameTable {
                            table_name: RenameTableNameKind::As(n) | RenameTableNameKind::To(n),
                        } => named.push(self.name(n).ok_or("a table name it cannot read")?),
                        _ => {}
                    }
                }
            }
            Ast::Drop {
                object_type: ObjectType::Table | ObjectType::View,
                names,
                ..
            } => {
                for n in names {
                    named.push(self.name(n).ok_or("a table name it cannot read")?);
                }
            }
            Ast::Drop {
                object_type: ObjectType::Index,
                table: Some(t),
                ..
            } => named.push(self.name(t).ok_or("a table name it cannot read")?),
            Ast::Drop {
                object_type: ObjectType::Index,
                ..
            } => return Err("a DROP INDEX does not name its table"),
            _ => return Err("rowshift does not know what tables such a statement touches"),
        }
        let mut unreadable = false;
        let _ = visit_relations(stmt, |n| {
            match self.name(n) {
                Some(t) => named.push(t),
                None => unreadable = true,
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        if unreadable {
            return Err("a table name it cannot read");
        }
        out.tables.extend(named);
        let fk_tables: Vec<String> = out
            .foreign_keys
            .iter()
            .flat_map(|(a, b)| [a.clone(), b.clone()])
            .collect();
        out.tables.extend(fk_tables);
        Ok(())
    }

    /// What a data step's pipeline touches in the target.
    fn pipeline(&self, p: &Pipeline, out: &mut Touches) {
        let Some(table) = p.target.table.as_ref().map(|t| self.plain(&t.value)) else {
            return barrier(out, &p.name, "its pipeline names no target table");
        };
        out.tables.insert(table.clone());
        for fk in &p.target.foreign_keys {
            let to = self.plain(&fk.table);
            out.tables.insert(to.clone());
            out.foreign_keys.push((table.clone(), to));
        }
        if &p.source.location == self.target {
            match &p.source.table {
                Some(t) => {
                    out.tables.insert(self.plain(&t.value));
                }
                None => barrier(out, &p.name, "it reads the target without naming a table"),
            }
        }
        for check in &p.checks {
            if let CheckKind::References { table, .. } = &check.kind.value {
                // Looked up in the target (or, without such a table there, the source).
                let to = self.plain(table);
                out.tables.insert(to.clone());
                out.foreign_keys.push((table.clone(), to));
            }
        }
    }
}

fn barrier(out: &mut Touches, what: &str, why: &str) {
    if out.barrier.is_none() {
        let what = what.split_whitespace().collect::<Vec<_>>().join(" ");
        let what: String = match what.chars().count() > 60 {
            true => format!("{}…", what.chars().take(60).collect::<String>()),
            false => what,
        };
        out.barrier = Some(format!("`{what}`: {why}"));
    }
}

/// The tables the foreign keys of a table's columns and constraints reference.
fn fks_of<'a>(
    columns: &'a [ColumnDef],
    constraints: &'a [TableConstraint],
) -> impl Iterator<Item = &'a ObjectName> {
    let from_columns = columns
        .iter()
        .flat_map(|c| c.options.iter())
        .filter_map(|o| match &o.option {
            ColumnOption::ForeignKey(fk) => Some(&fk.foreign_table),
            _ => None,
        });
    let from_constraints = constraints.iter().filter_map(|c| match c {
        TableConstraint::ForeignKey(fk) => Some(&fk.foreign_table),
        _ => None,
    });
    from_columns.chain(from_constraints)
}

/// What `step` touches when `up` applies it: its `up` and `after` sections and its data
/// move.
pub(crate) fn touches(step: &Step, target: &Location) -> Touches {
    let reader = Reader::new(target);
    let mut out = Touches::default();
    let (up, after) = step.up_statements();
    for s in up.iter().chain(after) {
        reader.statement(&s.sql, &mut out);
    }
    if let Some(p) = &step.pipeline {
        reader.pipeline(p, &mut out);
    }
    out
}

/// For each step of `todo` (in the set's order), the earlier steps of `todo` it waits
/// for. `catalog` holds the foreign keys the target has already, as (referencing table,
/// referenced table), lower case. `touched` gives each step's tables (from [`touches`]).
pub(crate) fn waits(
    todo: &[(u64, Touches)],
    catalog: &[(String, String)],
) -> BTreeMap<u64, Vec<u64>> {
    // Every foreign key any step declares, and the catalog's, both ways.
    let mut joined: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let edges = todo
        .iter()
        .flat_map(|(_, t)| t.foreign_keys.iter())
        .chain(catalog);
    for (a, b) in edges {
        joined.entry(a).or_default().insert(b);
        joined.entry(b).or_default().insert(a);
    }
    // A step's reach: its tables and the tables joined to them by a foreign key.
    let reach = |t: &Touches| -> BTreeSet<String> {
        let mut out = t.tables.clone();
        for table in &t.tables {
            if let Some(next) = joined.get(table.as_str()) {
                out.extend(next.iter().map(|s| s.to_string()));
            }
        }
        out
    };
    let reaches: Vec<BTreeSet<String>> = todo.iter().map(|(_, t)| reach(t)).collect();
    let mut out = BTreeMap::new();
    for (i, (n, t)) in todo.iter().enumerate() {
        let mut wait = Vec::new();
        for (j, (m, earlier)) in todo[..i].iter().enumerate() {
            let dependent = t.barrier.is_some()
                || earlier.barrier.is_some()
                || !t.tables.is_disjoint(&reaches[j])
                || !earlier.tables.is_disjoint(&reaches[i]);
            if dependent {
                wait.push(*m);
            }
        }
        out.insert(*n, wait);
    }
    out
}

/// For each pending step of `set` (`todo`, in order), the earlier ones it waits for,
/// with `catalog`'s foreign keys; and each barrier step with why it is one.
pub(crate) fn plan_waits(
    set: &MigrationSet,
    todo: &[&Step],
    catalog: &[(String, String)],
) -> (BTreeMap<u64, Vec<u64>>, BTreeMap<u64, String>) {
    let touched: Vec<(u64, Touches)> = todo
        .iter()
        .map(|s| (s.number, touches(s, &set.target)))
        .collect();
    let barriers = touched
        .iter()
        .filter_map(|(n, t)| t.barrier.clone().map(|b| (*n, b)))
        .collect();
    (waits(&touched, catalog), barriers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite() -> Location {
        Location::Sqlite {
            path: "/tmp/t.db".into(),
        }
    }

    fn sql(text: &str) -> Touches {
        let target = sqlite();
        let reader = Reader::new(&target);
        let mut out = Touches::default();
        for s in super::super::statements::split(text, 0..text.len()).unwrap() {
            reader.statement(&s.sql, &mut out);
        }
        out
    }

    fn set(tables: &[&str]) -> BTreeSet<String> {
        tables.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_statement_touches_the_tables_it_names_and_references() {
        let t = sql(
            "CREATE TABLE \"Orders\" (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers (id));
             CREATE TABLE order_items (order_id INTEGER, product_id INTEGER, FOREIGN KEY (product_id) REFERENCES main.products (id));
             CREATE UNIQUE INDEX items_sku ON items (sku);
             INSERT INTO notes SELECT id, body FROM notes_old WHERE id IN (SELECT id FROM keep);
             ALTER TABLE payments ADD CONSTRAINT p_fk FOREIGN KEY (order_id) REFERENCES orders (id);
             DROP TABLE old_stuff;",
        );
        assert_eq!(t.barrier, None);
        assert_eq!(
            t.tables,
            set(&[
                "customers",
                "items",
                "keep",
                "notes",
                "notes_old",
                "old_stuff",
                "order_items",
                "orders",
                "payments",
                "products"
            ])
        );
        assert_eq!(
            t.foreign_keys,
            vec![
                ("orders".to_string(), "customers".to_string()),
                ("order_items".into(), "products".into()),
                ("payments".into(), "orders".into()),
            ]
        );
    }

    #[test]
    fn a_statement_whose_tables_cannot_be_read_is_a_barrier() {
        for text in [
            "DROP INDEX customers_email;",
            "CREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1; END;",
            "PRAGMA foreign_keys = ON;",
            "this is not SQL;",
        ] {
            let t = sql(text);
            assert!(t.barrier.is_some(), "{text}: {t:?}");
        }
        // MySQL's DROP INDEX names its table.
        assert_eq!(
            sql("DROP INDEX x ON customers;").tables,
            set(&["customers"])
        );
        let t = sql("CREATE INDEX a ON x (y); SELECT 1;");
        assert!(
            t.barrier
                .as_deref()
                .is_some_and(|b| b.starts_with("`SELECT 1`")),
            "{t:?}"
        );
    }

    fn step(tables: &[&str], fks: &[(&str, &str)]) -> Touches {
        Touches {
            tables: set(tables),
            foreign_keys: fks
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            barrier: None,
        }
    }

    #[test]
    fn steps_wait_for_earlier_steps_that_share_a_table_or_a_foreign_key() {
        let todo = vec![
            (1, step(&["categories"], &[])),
            (2, step(&["customers"], &[])),
            // products references categories (in the catalog already).
            (3, step(&["products"], &[])),
            // orders references customers (declared by its pipeline).
            (
                4,
                step(&["orders", "customers"], &[("orders", "customers")]),
            ),
            (5, step(&["tags"], &[])),
            (6, step(&["products"], &[])),
        ];
        let catalog = vec![("products".to_string(), "categories".to_string())];
        let w = waits(&todo, &catalog);
        assert_eq!(w[&1], Vec::<u64>::new());
        assert_eq!(w[&2], Vec::<u64>::new());
        assert_eq!(w[&3], vec![1]);
        assert_eq!(w[&4], vec![2]);
        assert_eq!(w[&5], Vec::<u64>::new());
        assert_eq!(w[&6], vec![1, 3]);
        // A barrier waits for everything before it, and everything after waits for it.
        let mut todo = todo;
        todo[2].1.barrier = Some("`x`".into());
        let w = waits(&todo, &catalog);
        assert_eq!(w[&3], vec![1, 2]);
        assert_eq!(w[&5], vec![3]);
    }
}
