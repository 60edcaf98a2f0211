//! A table's declarations as a pipeline's `[target]` writes them: the `default` and
//! `identity` of its columns, `[[target.indexes]]`, `[[target.constraints]]` (checks, and
//! an enum's labels as `col IN (...)`) and `[[target.foreign_keys]]`, as far as the
//! target holds them; the rest in words, for a comment and init's list.

use std::collections::HashSet;

use super::catalog::{FkInfo, TableInfo};
use super::expr::{self, Engine};
use super::{Column, toml_str};
use crate::types::ColumnType;

/// The longest name every target keeps whole (PostgreSQL cuts at 63 bytes).
const MAX_NAME: usize = 63;

/// The names declarations take, so that none is given twice where the target would
/// refuse it: index names are a schema's own in PostgreSQL and SQLite (beside its
/// tables), constraint names a database's in MySQL; one pipeline takes each name once.
#[derive(Debug, Default)]
pub(crate) struct Names {
    global: HashSet<String>,
    table: HashSet<String>,
}

impl Names {
    /// Names no declaration may take: the tables', and in the source's own schema, its
    /// declarations'.
    pub(crate) fn reserve<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        self.global
            .extend(names.into_iter().map(|n| n.to_lowercase()));
    }

    /// A constraint name for a statement outside any pipeline (a deferred foreign key).
    pub(crate) fn take_constraint(&mut self, table: &str, wanted: String) -> String {
        self.table.clear();
        self.take(table, &wanted)
    }

    /// Starts a new table's pipeline.
    fn next_table(&mut self) {
        self.table.clear();
    }

    /// `wanted`, or when it is taken, `<table>_<wanted>`, then with a number.
    fn take(&mut self, table: &str, wanted: &str) -> String {
        let fits = |s: String| -> String {
            if s.len() <= MAX_NAME {
                return s;
            }
            let mut cut = MAX_NAME - 9;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            let hash = blake3::hash(s.as_bytes()).to_hex();
            format!("{}_{}", &s[..cut], &hash[..8])
        };
        let candidates = std::iter::once(wanted.to_string())
            .chain(std::iter::once(format!("{table}_{wanted}")))
            .chain((2..).map(|i| format!("{table}_{wanted}_{i}")))
            .map(fits);
        for c in candidates {
            let key = c.to_lowercase();
            if !self.global.contains(&key) && !self.table.contains(&key) {
                self.global.insert(key.clone());
                self.table.insert(key);
                return c;
            }
        }
        unreachable!("an unbounded list of names")
    }
}

/// What a table's pipeline declares beyond its column types.
#[derive(Debug, Default)]
pub(crate) struct TableDecl {
    /// Fields added to a column's line: `identity = true`, `default = "..."`.
    pub fields: Vec<(String, Vec<String>)>,
    /// The `[[target.*]]` entries.
    pub body: String,
    /// What is not carried over, in words.
    pub lost: Vec<String>,
    /// What the author should know about what is.
    pub notes: Vec<String>,
}

/// How a table's declarations are made.
pub(crate) struct DeclContext<'a> {
    pub source: Engine,
    pub target: Engine,
    /// The target table's name (defaults of names use it).
    pub table: &'a str,
    /// The tables a foreign key may reference: the set's (`None`: any, for one pipeline).
    pub tables: Option<&'a [String]>,
    /// Foreign keys the set adds in a later step, after both tables are loaded.
    pub deferred: &'a [FkInfo],
}

/// The declarations of `info` for a pipeline with `columns` and primary `key`. Text
/// columns that MySQL must index get a length (`varchar(255)`).
pub(crate) fn declare(
    info: &TableInfo,
    columns: &mut [Column],
    key: &[String],
    cx: &DeclContext<'_>,
    names: &mut Names,
) -> TableDecl {
    names.next_table();
    let mut out = TableDecl {
        lost: info.lost.clone(),
        ..Default::default()
    };
    let copied: HashSet<String> = columns.iter().map(|c| c.name.clone()).collect();
    let all_copied = |cols: &[String]| cols.iter().all(|c| copied.contains(c));
    let table = cx.table;
    let fks: Vec<&FkInfo> = info
        .foreign_keys
        .iter()
        .filter(|fk| {
            !cx.deferred
                .iter()
                .any(|d| d.columns == fk.columns && d.table == fk.table)
        })
        .collect();

    // MySQL keys and indexes no unbounded text.
    if cx.target == Engine::Mysql {
        let mut keyed: HashSet<&str> = key.iter().map(String::as_str).collect();
        for ix in &info.indexes {
            keyed.extend(ix.columns.iter().map(String::as_str));
        }
        for fk in &info.foreign_keys {
            keyed.extend(fk.columns.iter().map(String::as_str));
        }
        for fk in info.referenced.iter() {
            keyed.extend(fk.iter().map(String::as_str));
        }
        for c in columns.iter_mut() {
            if c.ty == ColumnType::Text && keyed.contains(c.name.as_str()) {
                c.ty = ColumnType::Varchar(255);
                out.notes.push(format!(
                    "column `{table}.{}` is varchar(255) rather than text: MySQL indexes text only with a length. A longer value is rejected with its row, never cut",
                    c.name
                ));
            }
        }
    }

    let mut constraints = String::new();
    let mut foreign = String::new();
    let mut indexes = String::new();

    for ci in &info.columns {
        let Some(col) = columns.iter().find(|c| c.name == ci.name) else {
            continue;
        };
        let mut fields = Vec::new();
        let integer = matches!(
            col.ty,
            ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt
        );
        let mut identity = false;
        if ci.identity {
            if key == [ci.name.clone()] && integer {
                fields.push("identity = true".to_string());
                identity = true;
            } else {
                out.lost.push(format!(
                    "column `{table}.{}` numbers new rows in the source, but is not the table's whole integer primary key, which an `identity` column must be: its numbering is not carried over",
                    ci.name
                ));
            }
        }
        if let (Some(d), false) = (&ci.default, identity) {
            match expr::default(d, cx.source, cx.target, col.ty) {
                Ok(Some(text)) => fields.push(format!("default = {}", toml_str(&text))),
                Ok(None) => {}
                Err(_) if cx.source == cx.target && !d.contains("nextval(") => {
                    fields.push(format!("default = {}", toml_str(d)));
                }
                Err(why) => out.lost.push(format!(
                    "the default of column `{table}.{}` ({d}) is not carried over: {why}",
                    ci.name
                )),
            }
        }
        if !fields.is_empty() {
            out.fields.push((ci.name.clone(), fields));
        }
        if let Some(labels) = &ci.labels {
            let list: Vec<String> = labels
                .iter()
                .map(|l| format!("'{}'", l.replace('\'', "''")))
                .collect();
            let check = format!("{} IN ({})", cx.target.ident(&ci.name), list.join(", "));
            let name = names.take(table, &format!("{table}_{}_check", ci.name));
            constraints.push_str(&format!(
                "\n[[target.constraints]]  # the source's enum labels\nname = {}\ncheck = {}\n",
                toml_str(&name),
                toml_str(&check)
            ));
        }
    }

    for (i, c) in info.checks.iter().enumerate() {
        let translated = match expr::check(&c.expr, cx.source, cx.target) {
            Ok(t) => Ok(t),
            Err(_) if cx.source == cx.target => Ok((c.expr.clone(), Vec::new())),
            Err(why) => Err(why),
        };
        let (text, used) = match translated {
            Ok(t) => t,
            Err(why) => {
                out.lost.push(format!(
                    "check {}on `{table}` ({}) is not carried over: {why}",
                    c.name
                        .as_deref()
                        .map_or(String::new(), |n| format!("`{n}` ")),
                    c.expr
                ));
                continue;
            }
        };
        if let Some(missing) = used.iter().find(|u| !copied.contains(*u)) {
            out.lost.push(format!(
                "check on `{table}` ({}) is not carried over: column `{missing}` is not copied",
                c.expr
            ));
            continue;
        }
        // MariaDB names a column's check after the column.
        let wanted = match &c.name {
            Some(n) if !info.columns.iter().any(|ci| &ci.name == n) => n.clone(),
            Some(n) => format!("{table}_{n}_check"),
            None => format!("{table}_check{}", i + 1),
        };
        let name = names.take(table, &wanted);
        constraints.push_str(&format!(
            "\n[[target.constraints]]\nname = {}\ncheck = {}\n",
            toml_str(&name),
            toml_str(&text)
        ));
    }

    for fk in &fks {
        let cols = fk.columns.join(", ");
        if !all_copied(&fk.columns) {
            out.lost.push(format!(
                "foreign key on `{table}` ({cols}) referencing `{}` is not carried over: a column of it is not copied",
                fk.table
            ));
            continue;
        }
        if let Some(tables) = cx.tables
            && !tables.contains(&fk.table)
        {
            out.lost.push(format!(
                "foreign key on `{table}` ({cols}) is not carried over: it references `{}`, which the set does not move",
                fk.table
            ));
            continue;
        }
        let plain = |n: &str| !n.contains(['(', ')', ',']) && n.trim() == n;
        if !plain(&fk.table) || !fk.references.iter().all(|r| plain(r)) {
            out.lost.push(format!(
                "foreign key on `{table}` ({cols}) is not carried over: `references` cannot spell `{}({})`",
                fk.table,
                fk.references.join(", ")
            ));
            continue;
        }
        if cx.tables.is_none() && fk.table != info.name {
            out.notes.push(format!(
                "foreign key on `{table}` ({cols}) references `{}`, which must be in the target before this pipeline's load ends",
                fk.table
            ));
        }
        let wanted = fk
            .name
            .clone()
            .unwrap_or_else(|| format!("{table}_{}_fkey", fk.columns.join("_")));
        let name = names.take(table, &wanted);
        let list: Vec<String> = fk.columns.iter().map(|c| toml_str(c)).collect();
        foreign.push_str(&format!(
            "\n[[target.foreign_keys]]\nname = {}\ncolumns = [{}]\nreferences = {}\n",
            toml_str(&name),
            list.join(", "),
            toml_str(&format!("{}({})", fk.table, fk.references.join(", ")))
        ));
        if let Some(a) = fk.on_delete {
            foreign.push_str(&format!("on_delete = \"{}\"\n", a.to_lowercase()));
        }
        if let Some(a) = fk.on_update {
            foreign.push_str(&format!("on_update = \"{}\"\n", a.to_lowercase()));
        }
    }

    for ix in &info.indexes {
        if !all_copied(&ix.columns) {
            out.lost.push(format!(
                "index `{}` on `{table}` ({}) is not carried over: a column of it is not copied",
                ix.name,
                ix.columns.join(", ")
            ));
            continue;
        }
        if ix.unique && ix.columns == key {
            // The primary key already holds it.
            continue;
        }
        let name = names.take(table, &ix.name);
        let list: Vec<String> = ix.columns.iter().map(|c| toml_str(c)).collect();
        indexes.push_str(&format!(
            "\n[[target.indexes]]\nname = {}\ncolumns = [{}]\n{}",
            toml_str(&name),
            list.join(", "),
            if ix.unique { "unique = true\n" } else { "" }
        ));
    }

    out.body = format!("{indexes}{constraints}{foreign}");
    out
}
