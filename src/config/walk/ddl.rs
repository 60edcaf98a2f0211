//! The table declarations of `[target]` beyond its columns: `default` and `identity` on a
//! column, `[[target.indexes]]`, `[[target.foreign_keys]]` and `[[target.constraints]]`.
//! None of them decides which rows are written, so none enters the fingerprint: a run
//! whose post-load DDL failed may be rerun with a changed declaration.

use super::*;
use crate::config::{ConstraintDecl, ForeignKeyDecl, IndexDecl};

/// What [`Walker::declarations`] read.
#[derive(Default)]
pub(super) struct Decls {
    pub(super) indexes: Vec<IndexDecl>,
    pub(super) foreign_keys: Vec<ForeignKeyDecl>,
    pub(super) constraints: Vec<ConstraintDecl>,
}

/// The referential actions `on_delete` and `on_update` take, as TOML and as SQL.
const ACTIONS: [(&str, &str); 5] = [
    ("no action", "NO ACTION"),
    ("restrict", "RESTRICT"),
    ("cascade", "CASCADE"),
    ("set null", "SET NULL"),
    ("set default", "SET DEFAULT"),
];

impl Walker<'_> {
    /// A column's `default`: a string is a SQL expression; a number or boolean its literal.
    pub(super) fn default(&mut self, c: &Section<'_>) -> Option<Spanned<String>> {
        let item = c.table.get("default")?;
        let span = item.span();
        let value = match item.as_value() {
            Some(toml_edit::Value::String(s)) if !s.value().trim().is_empty() => {
                Some(s.value().to_string())
            }
            Some(toml_edit::Value::Integer(i)) => Some(i.value().to_string()),
            Some(toml_edit::Value::Float(f)) if f.value().is_finite() => {
                Some(format!("{:?}", f.value()))
            }
            Some(toml_edit::Value::Boolean(b)) => Some(b.value().to_string()),
            _ => None,
        };
        if value.is_none() {
            self.error(
                span.clone(),
                format!(
                    "`{}.default` must be a SQL expression (\"'active'\", \"CURRENT_TIMESTAMP\"), a number or a boolean",
                    c.path
                ),
            );
        }
        value.map(|value| Spanned { value, span })
    }

    /// `[[target.indexes]]`, `[[target.foreign_keys]]` and `[[target.constraints]]`.
    pub(super) fn declarations(
        &mut self,
        s: &Section<'_>,
        table: &str,
        location: &Location,
        columns: &[TargetColumn],
    ) -> Decls {
        let mut out = Decls::default();
        let names: Vec<&str> = columns.iter().map(|c| c.name.value.as_str()).collect();
        let database = !matches!(location, Location::Files { .. });
        if !database {
            for key in ["indexes", "foreign_keys", "constraints"] {
                if s.table.contains_key(key) {
                    self.error(
                        s.key_span(key),
                        format!(
                            "`target.{key}` works for database targets only; a file has no {key}"
                        ),
                    );
                }
            }
            for c in columns {
                if c.default.is_some() || c.identity {
                    self.error(
                        c.name.span.clone(),
                        format!("column `{}` declares `default` or `identity`, which only a database target holds", c.name.value),
                    );
                }
            }
            return out;
        }
        let keys = columns.iter().filter(|c| c.primary_key).count();
        for c in columns.iter().filter(|c| c.identity && keys > 1) {
            self.error(
                c.name.span.clone(),
                format!("`identity` column `{}` must be the whole primary key; this one has {keys} columns", c.name.value),
            );
        }
        let mut taken: Vec<(String, Option<Range<usize>>)> = Vec::new();
        for e in self.entries(s, "indexes") {
            self.check_keys(&e, &["columns", "unique", "name"]);
            let unique = self.bool(&e, "unique", false);
            let Some(cols) = self.column_list(&e, "columns", &names) else {
                continue;
            };
            let name = self.decl_name(&e, &mut taken, || {
                format!(
                    "{table}_{}_{}",
                    cols.join("_"),
                    if unique { "key" } else { "idx" }
                )
            });
            out.indexes.push(IndexDecl {
                name,
                columns: cols,
                unique,
            });
        }
        for e in self.entries(s, "foreign_keys") {
            self.check_keys(
                &e,
                &["columns", "references", "on_delete", "on_update", "name"],
            );
            let cols = self.column_list(&e, "columns", &names);
            let refs =
                self.string(&e, "references", true)
                    .and_then(|r| match parse_reference(&r.value) {
                        Ok(parsed) => Some((parsed, r.span)),
                        Err(msg) => {
                            self.error(r.span, msg);
                            None
                        }
                    });
            let on_delete = self.action(&e, "on_delete");
            let on_update = self.action(&e, "on_update");
            let (Some(cols), Some(((ref_table, ref_cols), span))) = (cols, refs) else {
                continue;
            };
            if ref_cols.len() != cols.len() {
                self.error(
                    span,
                    format!(
                        "the foreign key has {} column(s) ({}) but references {} ({})",
                        cols.len(),
                        cols.join(", "),
                        ref_cols.len(),
                        ref_cols.join(", ")
                    ),
                );
                continue;
            }
            let name = self.decl_name(&e, &mut taken, || {
                format!("{table}_{}_fkey", cols.join("_"))
            });
            out.foreign_keys.push(ForeignKeyDecl {
                name,
                columns: cols,
                table: ref_table,
                references: ref_cols,
                on_delete,
                on_update,
            });
        }
        for (i, e) in self.entries(s, "constraints").into_iter().enumerate() {
            self.check_keys(&e, &["check", "name"]);
            let Some(check) = self.string(&e, "check", true) else {
                continue;
            };
            if check.value.trim().is_empty() {
                self.error(check.span, "`check` is empty; write a SQL boolean expression over the table's columns, such as \"price >= 0\"");
                continue;
            }
            let name = self.decl_name(&e, &mut taken, || format!("{table}_check{}", i + 1));
            out.constraints.push(ConstraintDecl {
                name,
                check: check.value,
            });
        }
        out
    }

    /// The entries of `[[target.<key>]]`, each as a section.
    fn entries<'t>(&mut self, s: &Section<'t>, key: &str) -> Vec<Section<'t>> {
        let Some(item) = s.table.get(key) else {
            return Vec::new();
        };
        let Some(array) = item.as_array_of_tables() else {
            self.diags.push(
                Diagnostic::at(
                    item.span().or(s.key_span(key)),
                    format!("`target.{key}` must be an array of tables"),
                )
                .with_help(format!(
                    "write each entry as [[target.{key}]] followed by its keys"
                )),
            );
            return Vec::new();
        };
        array
            .iter()
            .enumerate()
            .map(|(i, table)| Section {
                table,
                path: format!("target.{key}.{i}"),
                span: table.span().or(s.key_span(key)),
            })
            .collect()
    }

    /// A non-empty list of distinct declared target columns.
    fn column_list(&mut self, e: &Section<'_>, key: &str, names: &[&str]) -> Option<Vec<String>> {
        let Some(item) = e.table.get(key) else {
            self.missing(e, key);
            return None;
        };
        let span = item.span();
        let cols = self.string_list(e, key)?;
        if cols.is_empty() {
            self.error(
                span,
                format!("`{}.{key}` is empty; name at least one column", e.path),
            );
            return None;
        }
        let mut ok = true;
        for (i, c) in cols.iter().enumerate() {
            if cols[..i].contains(c) {
                self.error(
                    span.clone(),
                    format!("`{}.{key}` names column `{c}` twice", e.path),
                );
                ok = false;
            } else if !names.contains(&c.as_str()) {
                let d = Diagnostic::at(
                    span.clone(),
                    format!(
                        "`{}.{key}` names column `{c}`, which [target.columns] does not declare",
                        e.path
                    ),
                );
                self.diags.push(match suggest(c, names.iter().copied()) {
                    Some(best) => d.with_help(format!("did you mean `{best}`?")),
                    None => d.with_help(format!("target columns are: {}", names.join(", "))),
                });
                ok = false;
            }
        }
        ok.then_some(cols)
    }

    /// The entry's `name`, or the default one; a name another declaration took is an error.
    fn decl_name(
        &mut self,
        e: &Section<'_>,
        taken: &mut Vec<(String, Option<Range<usize>>)>,
        default: impl FnOnce() -> String,
    ) -> String {
        let declared = self.string(e, "name", false);
        let (name, span) = match declared {
            Some(n) if !n.value.is_empty() => (n.value, n.span),
            Some(n) => {
                self.error(n.span, format!("`{}.name` is empty", e.path));
                (default(), e.span.clone())
            }
            None => (default(), e.span.clone()),
        };
        if let Some((_, first)) = taken.iter().find(|(n, _)| *n == name) {
            let line = first.as_ref().map_or(String::new(), |sp| {
                format!(" (line {})", self.diags.line_col(sp.start).0)
            });
            self.diags.push(
                Diagnostic::at(
                    span.clone(),
                    format!("the name `{name}` is declared twice{line}; an index, foreign key or constraint needs a name of its own"),
                )
                .with_help("set `name` on one of them"),
            );
        }
        taken.push((name.clone(), span));
        name
    }

    /// `on_delete` / `on_update`, as SQL words.
    fn action(&mut self, e: &Section<'_>, key: &str) -> Option<&'static str> {
        let v = self.string(e, key, false)?;
        let wanted = v.value.trim().to_ascii_lowercase().replace('_', " ");
        match ACTIONS.iter().find(|(toml, _)| *toml == wanted) {
            Some((_, sql)) => Some(sql),
            None => {
                let all: Vec<String> = ACTIONS.iter().map(|(t, _)| format!("\"{t}\"")).collect();
                self.error(
                    v.span,
                    format!("unknown {key} `{}`; expected {}", v.value, all.join(", ")),
                );
                None
            }
        }
    }
}

/// `references = "table(col, ...)"`: the table and its columns.
fn parse_reference(text: &str) -> std::result::Result<(String, Vec<String>), String> {
    let bad = || format!("`references` must be written \"table(column, ...)\", not \"{text}\"");
    let (table, rest) = text.split_once('(').ok_or_else(bad)?;
    let cols = rest.trim_end().strip_suffix(')').ok_or_else(bad)?;
    let table = table.trim();
    let cols: Vec<String> = cols.split(',').map(|c| c.trim().to_string()).collect();
    if table.is_empty() || cols.iter().any(String::is_empty) {
        return Err(bad());
    }
    Ok((table.to_string(), cols))
}
