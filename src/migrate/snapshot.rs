//! A database's tables as test-rollback compares them: each table's columns with their
//! types, its indexes and constraints from the catalog, and its rows as text by key,
//! with a checksum per table; and the first difference between two such snapshots.
//! The rows are read whole, so this is for the samples test-rollback works on.

use std::collections::BTreeMap;

use super::history::History;
use crate::config::Location;
use crate::runtime::IoRuntime;
use crate::sql::quote_ident;
use crate::{Error, Result};

/// One table as a snapshot holds it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TableSnap {
    /// The table's name.
    pub name: String,
    /// Column name and definition (type, NOT NULL, default, identity), in order.
    pub columns: Vec<(String, String)>,
    /// Index name and definition.
    pub indexes: Vec<(String, String)>,
    /// Constraint name and definition (SQLite: the table's `CREATE TABLE`).
    pub constraints: Vec<(String, String)>,
    /// The primary key's columns (empty: the whole row is its key).
    pub key: Vec<String>,
    /// Each row's values as text, by the row's key as messages show it (`id=3`).
    pub rows: BTreeMap<String, Vec<Vec<Option<String>>>>,
    /// Rows.
    pub count: u64,
    /// The order-independent checksum of the rows' text (hex).
    pub checksum: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Pg,
    My,
}

/// The catalog and row queries of one database.
pub(crate) struct Snapshotter {
    look: History,
    kind: Kind,
    schema: String,
}

impl Snapshotter {
    /// Connects to `location` (its schema or database).
    pub(crate) fn open(location: &Location, io: &IoRuntime) -> Result<Snapshotter> {
        let (kind, schema) = match location {
            Location::Sqlite { .. } => (Kind::Sqlite, "main".to_string()),
            Location::Postgres { schema, .. } => (Kind::Pg, schema.clone()),
            Location::Mysql { schema, .. } => (Kind::My, schema.clone()),
            Location::Files { .. } => {
                return Err(Error::Unsupported(
                    "test-rollback compares database tables, not files".into(),
                ));
            }
        };
        Ok(Snapshotter {
            look: History::open(location, "", io)?,
            kind,
            schema,
        })
    }

    /// Closes the connection.
    pub(crate) fn close(self) {
        self.look.close();
    }

    fn texts(&self, sql: &str, binds: &[&str]) -> Result<Vec<Vec<Option<String>>>> {
        let binds: Vec<String> = binds.iter().map(|s| s.to_string()).collect();
        self.look.query_texts(sql, &binds)
    }

    fn pairs(&self, sql: &str, binds: &[&str]) -> Result<Vec<(String, String)>> {
        Ok(self
            .texts(sql, binds)?
            .into_iter()
            .map(|r| {
                let a = r.first().cloned().flatten().unwrap_or_default();
                let b = r.get(1).cloned().flatten().unwrap_or_default();
                (a, b)
            })
            .collect())
    }

    fn firsts(&self, sql: &str, binds: &[&str]) -> Result<Vec<String>> {
        Ok(self
            .texts(sql, binds)?
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect())
    }

    /// The schema's tables (base tables, not views), by name.
    pub(crate) fn tables(&self) -> Result<Vec<String>> {
        let s = self.schema.as_str();
        match self.kind {
            Kind::Pg => self.firsts(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 AND table_type = 'BASE TABLE' ORDER BY 1",
                &[s],
            ),
            Kind::My => self.firsts(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ? AND table_type = 'BASE TABLE' ORDER BY 1",
                &[s],
            ),
            Kind::Sqlite => self.firsts(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND ? <> '' ORDER BY 1",
                &[s],
            ),
        }
    }

    /// Whether `table` exists.
    pub(crate) fn exists(&self, table: &str) -> Result<bool> {
        Ok(self.tables()?.iter().any(|t| t == table))
    }

    fn qualified(&self, table: &str) -> String {
        match self.kind {
            Kind::Pg => format!("{}.{}", quote_ident(&self.schema), quote_ident(table)),
            Kind::My => crate::db::mysql::qualified(&self.schema, table),
            Kind::Sqlite => quote_ident(table),
        }
    }

    fn quote(&self, name: &str) -> String {
        match self.kind {
            Kind::My => crate::db::mysql::quote(name),
            _ => quote_ident(name),
        }
    }

    /// One table: its catalog and its rows.
    pub(crate) fn table(&self, table: &str) -> Result<TableSnap> {
        let (s, t) = (self.schema.as_str(), table);
        let (columns, indexes, constraints, key) = match self.kind {
            Kind::Pg => {
                const REL: &str = "(quote_ident($1) || '.' || quote_ident($2))::regclass";
                (
                    self.pairs(
                        &format!(
                            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
                             || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END \
                             || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '') \
                             || CASE a.attidentity WHEN 'a' THEN ' GENERATED ALWAYS AS IDENTITY' WHEN 'd' THEN ' GENERATED BY DEFAULT AS IDENTITY' ELSE '' END \
                             FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
                             WHERE a.attrelid = {REL} AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
                        ),
                        &[s, t],
                    )?,
                    self.pairs(
                        "SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 ORDER BY 1",
                        &[s, t],
                    )?,
                    self.pairs(
                        &format!(
                            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = {REL} ORDER BY 1"
                        ),
                        &[s, t],
                    )?,
                    self.firsts(
                        &format!(
                            "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                             WHERE i.indrelid = {REL} AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)"
                        ),
                        &[s, t],
                    )?,
                )
            }
            Kind::My => (
                self.pairs(
                    "SELECT column_name, CONCAT(column_type, IF(is_nullable = 'NO', ' NOT NULL', ''), \
                     IFNULL(CONCAT(' DEFAULT ', column_default), ''), IF(extra = '', '', CONCAT(' ', extra))) \
                     FROM information_schema.columns WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                    &[s, t],
                )?,
                self.pairs(
                    "SELECT index_name, CONCAT(IF(non_unique = 0, 'UNIQUE ', ''), '(', \
                     GROUP_CONCAT(column_name ORDER BY seq_in_index SEPARATOR ', '), ')') \
                     FROM information_schema.statistics WHERE table_schema = ? AND table_name = ? \
                     GROUP BY index_name, non_unique ORDER BY 1",
                    &[s, t],
                )?,
                self.pairs(
                    "SELECT tc.constraint_name, CONCAT(tc.constraint_type, \
                     IFNULL(CONCAT(' ', GROUP_CONCAT(DISTINCT cc.check_clause ORDER BY cc.check_clause SEPARATOR ' | ')), ''), \
                     IFNULL((SELECT CONCAT(' (', GROUP_CONCAT(k.column_name ORDER BY k.ordinal_position SEPARATOR ', '), ') REFERENCES ', \
                       MAX(k.referenced_table_name), ' (', GROUP_CONCAT(k.referenced_column_name ORDER BY k.ordinal_position SEPARATOR ', '), ')') \
                       FROM information_schema.key_column_usage k WHERE k.constraint_schema = tc.constraint_schema \
                       AND k.table_name = tc.table_name AND k.constraint_name = tc.constraint_name AND k.referenced_table_name IS NOT NULL), '')) \
                     FROM information_schema.table_constraints tc LEFT JOIN information_schema.check_constraints cc \
                     ON cc.constraint_schema = tc.constraint_schema AND cc.constraint_name = tc.constraint_name \
                     WHERE tc.table_schema = ? AND tc.table_name = ? \
                     GROUP BY tc.constraint_schema, tc.table_name, tc.constraint_name, tc.constraint_type ORDER BY 1",
                    &[s, t],
                )?,
                self.firsts(
                    "SELECT column_name FROM information_schema.key_column_usage WHERE table_schema = ? AND table_name = ? \
                     AND constraint_name = 'PRIMARY' ORDER BY ordinal_position",
                    &[s, t],
                )?,
            ),
            Kind::Sqlite => (
                self.pairs(
                    "SELECT name, type || CASE WHEN \"notnull\" THEN ' NOT NULL' ELSE '' END \
                     || IFNULL(' DEFAULT ' || dflt_value, '') FROM pragma_table_info(?) ORDER BY cid",
                    &[t],
                )?,
                self.pairs(
                    "SELECT name, IFNULL(sql, 'implicit') FROM sqlite_master WHERE type = 'index' AND tbl_name = ? ORDER BY 1",
                    &[t],
                )?,
                self.pairs(
                    "SELECT 'the table''s definition', sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                    &[t],
                )?,
                self.firsts(
                    "SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk",
                    &[t],
                )?,
            ),
        };
        let exprs: Vec<String> = columns
            .iter()
            .map(|(c, _)| {
                let q = self.quote(c);
                match self.kind {
                    Kind::Pg => format!("{q}::text"),
                    Kind::My => format!("QUOTE({q})"),
                    Kind::Sqlite => format!("quote({q})"),
                }
            })
            .collect();
        let raw = match exprs.is_empty() {
            true => Vec::new(),
            false => self.texts(
                &format!("SELECT {} FROM {}", exprs.join(", "), self.qualified(table)),
                &[],
            )?,
        };
        let at: Vec<usize> = key
            .iter()
            .filter_map(|k| columns.iter().position(|(c, _)| c == k))
            .collect();
        let mut rows: BTreeMap<String, Vec<Vec<Option<String>>>> = BTreeMap::new();
        let mut sum = 0u64;
        for row in raw {
            let text = row_text(&row);
            sum = sum.wrapping_add(crate::sql::hash_bytes(text.as_bytes()));
            let key_text = match at.is_empty() {
                true => format!("({})", shown_values(&row)),
                false => at
                    .iter()
                    .map(|&i| format!("{}={}", columns[i].0, shown(&row[i])))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            rows.entry(key_text).or_default().push(row);
        }
        let count = rows.values().map(|r| r.len() as u64).sum();
        Ok(TableSnap {
            name: table.to_string(),
            columns,
            indexes,
            constraints,
            key,
            rows,
            count,
            checksum: format!("{sum:016x}"),
        })
    }

    /// Every table of the schema but those `skip` names.
    pub(crate) fn all(&self, skip: &dyn Fn(&str) -> bool) -> Result<BTreeMap<String, TableSnap>> {
        let mut out = BTreeMap::new();
        for t in self.tables()? {
            if !skip(&t) {
                out.insert(t.clone(), self.table(&t)?);
            }
        }
        Ok(out)
    }
}

fn row_text(row: &[Option<String>]) -> String {
    row.iter()
        .map(|v| match v {
            Some(v) => format!("v{v}"),
            None => "n".into(),
        })
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

fn shown(v: &Option<String>) -> String {
    match v {
        Some(v) => v.clone(),
        None => "NULL".into(),
    }
}

fn shown_values(row: &[Option<String>]) -> String {
    row.iter().map(shown).collect::<Vec<_>>().join(", ")
}

/// The first difference between two snapshots of one database's tables, `a` described
/// by `la` (`after the first up`) and `b` by `lb`.
pub(crate) fn first_schema_difference(
    a: &BTreeMap<String, TableSnap>,
    b: &BTreeMap<String, TableSnap>,
    la: &str,
    lb: &str,
) -> Option<String> {
    let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for name in names {
        let (x, y) = match (a.get(name), b.get(name)) {
            (Some(x), Some(y)) => (x, y),
            (Some(_), None) => return Some(format!("table {name} is there {la}, not {lb}")),
            (None, _) => return Some(format!("table {name} is there {lb}, not {la}")),
        };
        let parts = [
            ("column", &x.columns, &y.columns),
            ("index", &x.indexes, &y.indexes),
            ("constraint", &x.constraints, &y.constraints),
        ];
        for (what, xs, ys) in parts {
            if let Some(d) = first_pair_difference(what, xs, ys, la, lb) {
                return Some(format!("table {name}: {d}"));
            }
        }
        if let Some(d) = first_row_difference(x, y, la, lb) {
            return Some(d);
        }
    }
    None
}

fn first_pair_difference(
    what: &str,
    xs: &[(String, String)],
    ys: &[(String, String)],
    la: &str,
    lb: &str,
) -> Option<String> {
    for (n, def) in xs {
        match ys.iter().find(|(m, _)| m == n) {
            None => return Some(format!("{what} {n} (`{def}`) is there {la}, not {lb}")),
            Some((_, other)) if other != def => {
                return Some(format!("{what} {n} is `{def}` {la}, `{other}` {lb}"));
            }
            Some(_) => {}
        }
    }
    ys.iter()
        .find(|(m, _)| !xs.iter().any(|(n, _)| n == m))
        .map(|(m, def)| format!("{what} {m} (`{def}`) is there {lb}, not {la}"))
}

/// The first row of table `a` that `b` does not hold the same, by the rows' keys, the
/// columns matched by name (`b`'s extra columns are a difference, their order is not).
pub(crate) fn first_row_difference(
    a: &TableSnap,
    b: &TableSnap,
    la: &str,
    lb: &str,
) -> Option<String> {
    let t = &a.name;
    for (c, _) in &a.columns {
        if !b.columns.iter().any(|(d, _)| d == c) {
            return Some(format!(
                "table {t}: column {c} is there {la}, not {lb} (its values are lost)"
            ));
        }
    }
    if let Some((c, _)) = b
        .columns
        .iter()
        .find(|(c, _)| !a.columns.iter().any(|(d, _)| d == c))
    {
        return Some(format!("table {t}: column {c} is there {lb}, not {la}"));
    }
    if a.checksum == b.checksum && a.count == b.count && a.columns == b.columns {
        return None;
    }
    // b's values in a's column order.
    let order: Vec<usize> = a
        .columns
        .iter()
        .map(|(c, _)| b.columns.iter().position(|(d, _)| d == c).expect("checked"))
        .collect();
    let reorder = |row: &Vec<Option<String>>| -> Vec<Option<String>> {
        order.iter().map(|&i| row[i].clone()).collect()
    };
    for (key, xs) in &a.rows {
        let Some(ys) = b.rows.get(key) else {
            return Some(format!("table {t}: row {key} is there {la}, not {lb}"));
        };
        let ys: Vec<Vec<Option<String>>> = ys.iter().map(reorder).collect();
        if xs.len() != ys.len() {
            return Some(format!(
                "table {t}: row {key} is there {} times {la}, {} times {lb}",
                xs.len(),
                ys.len()
            ));
        }
        for (x, y) in xs.iter().zip(&ys) {
            if let Some(i) = (0..x.len()).find(|&i| x[i] != y[i]) {
                return Some(format!(
                    "table {t}: row {key}, column {}: {} {la}, {} {lb}",
                    a.columns[i].0,
                    shown(&x[i]),
                    shown(&y[i])
                ));
            }
        }
    }
    if let Some(key) = b.rows.keys().find(|k| !a.rows.contains_key(*k)) {
        return Some(format!("table {t}: row {key} is there {lb}, not {la}"));
    }
    None
}
