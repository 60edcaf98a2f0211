//! `rowshift init --from URL --set DIR --target URL`: a migration set that moves every
//! table of a SQLite file, a MySQL database or a PostgreSQL schema, one data step per
//! table in foreign-key order (parents first), each with the table's declarations.
//!
//! Foreign keys that form a cycle cannot all be built after their own table's load: the
//! referenced table is not loaded yet. Init breaks the cycle at the table with the fewest
//! such keys, and adds those keys in a SQL step after every table is loaded.

use std::path::Path;

use super::catalog::{self, FkInfo, TableInfo};
use super::decl::Names;
use super::expr::Engine;
use super::{InSet, InitOptions, generate, relative_to, toml_str, url_text};
use crate::config::{Location, redact};
use crate::runtime::IoRuntime;
use crate::{Error, Result};

/// A generated migration set.
#[derive(Debug, Clone)]
pub struct SetStarter {
    /// The files, `(name, text)`: the set file first, then the steps in order.
    pub files: Vec<(String, String)>,
    /// Lines to print beside it.
    pub notes: Vec<String>,
    /// What the source holds that the set does not carry over, each in words; each is
    /// also a comment in its step (or, for objects of the schema, in the set file).
    pub lost: Vec<String>,
    /// The tables the set moves, in the order of its steps.
    pub tables: Vec<String>,
    /// `${VAR}`s the files use for URLs with a password, with their URLs.
    vars: Vec<(String, String)>,
}

impl SetStarter {
    /// The value of `${name}` for checking the files: the environment's, else the URL
    /// it stands for.
    pub fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().or_else(|| {
            self.vars
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        })
    }

    /// Whether a `${VAR}` the files use is not set in the environment.
    pub fn unset_vars(&self) -> bool {
        self.vars.iter().any(|(n, _)| std::env::var(n).is_err())
    }

    /// Checks each data step as if the set were in `dir`: it must validate and plan (its
    /// source is opened) as written.
    pub fn validate(&self, dir: &Path) -> Result<()> {
        for (file, text) in self.files.iter().filter(|(f, _)| f.ends_with(".toml")) {
            if file == "rowshift.toml" {
                continue;
            }
            crate::config::Pipeline::parse(&dir.join(file), text, &|n| self.var(n))
                .and_then(crate::plan::Plan::build)?;
        }
        Ok(())
    }
}

/// Reads the source's schema and writes a migration set for it (see the module's
/// documentation). `opts.pipeline_dir` is the set's directory; `opts.target` is required.
pub fn starter_set(opts: &InitOptions) -> Result<SetStarter> {
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    let location = Location::parse(&opts.from, &cwd, None).map_err(Error::Unsupported)?;
    let Some(target_url) = &opts.target else {
        return Err(Error::Unsupported(
            "a migration set needs its target: pass --target URL (sqlite://FILE, postgres://..., mysql://...)".into(),
        ));
    };
    let mut target = Location::parse(target_url, &cwd, None).map_err(Error::Unsupported)?;
    if let (Location::Postgres { schema, .. } | Location::Mysql { schema, .. }, Some(s)) =
        (&mut target, &opts.target_schema)
    {
        *schema = s.clone();
    }
    let (Some(source), Some(target_engine)) =
        (catalog::engine(&location), catalog::engine(&target))
    else {
        return Err(Error::Unsupported(
            "a migration set moves a database into a database: --from and --target are sqlite://, postgres:// or mysql:// URLs".into(),
        ));
    };
    let schema = match (&location, &opts.schema) {
        (Location::Sqlite { .. }, _) => String::new(),
        (_, Some(s)) => s.clone(),
        (Location::Postgres { schema, .. } | Location::Mysql { schema, .. }, None) => {
            schema.clone()
        }
        (Location::Files { .. }, None) => unreachable!("not a database"),
    };
    let mut source_at = location.clone();
    if let Location::Postgres { schema: s, .. } | Location::Mysql { schema: s, .. } = &mut source_at
    {
        *s = schema.clone();
    }
    if source_at == target {
        return Err(Error::Unsupported(format!(
            "the target is the source's own {}: a set that moves every table needs another schema or database (--target-schema)",
            if source == Engine::Sqlite {
                "file"
            } else {
                "schema"
            }
        )));
    }
    let io = IoRuntime::new()?;
    let (all, mut lost_objects) = catalog::schema_tables(&location, &schema, &io)?;
    let mut notes = Vec::new();
    let mut lost = Vec::new();
    let mut infos = Vec::new();
    for table in all {
        if table.starts_with("_rowshift") {
            notes.push(format!(
                "table `{table}` is rowshift's own bookkeeping: it is not moved"
            ));
            continue;
        }
        let info = catalog::table_info(&location, &schema, &table, &io)?;
        if info.primary_key.is_empty() {
            lost.push(format!(
                "table `{table}` has no primary key, which rowshift needs to split it into ranges: it is not moved; write its step by hand with `key = ...` naming unique, non-null columns"
            ));
            continue;
        }
        infos.push(info);
    }
    if infos.is_empty() {
        return Err(Error::Unsupported(format!(
            "{} has no table with a primary key to move",
            where_(&location, &schema)
        )));
    }
    let names_moved: Vec<String> = infos.iter().map(|i| i.name.clone()).collect();
    // What other tables reference gets a length in MySQL as the referencing side does.
    let referenced: Vec<(String, Vec<String>)> = infos
        .iter()
        .flat_map(|i| i.foreign_keys.iter())
        .map(|fk| (fk.table.clone(), fk.references.clone()))
        .collect();
    for info in infos.iter_mut() {
        info.referenced = referenced
            .iter()
            .filter(|(t, _)| t == &info.name)
            .map(|(_, c)| c.clone())
            .collect();
    }
    let (order, deferred) = fk_order(&infos, &names_moved);
    if !deferred.is_empty() && target_engine == Engine::Sqlite {
        let cycle: Vec<String> = deferred
            .iter()
            .map(|(child, fk)| format!("{child}({}) -> {}", fk.columns.join(", "), fk.table))
            .collect();
        return Err(Error::Unsupported(format!(
            "the foreign keys of tables {} form a cycle ({}); SQLite takes a foreign key only in CREATE TABLE and checks it after the table's load, so one of them cannot be added after both tables are loaded. Move these tables by hand, or into PostgreSQL or MySQL",
            and_list(&deferred_tables(&deferred)),
            cycle.join(", ")
        )));
    }

    let set_dir = &opts.pipeline_dir;
    let set_name = set_dir
        .file_name()
        .map_or("set".to_string(), |n| safe(&n.to_string_lossy()));
    let width = (order.len() + 1).to_string().len().max(3);
    let mut names = Names::default();
    names.reserve(names_moved.iter().map(String::as_str));
    let mut vars = Vec::new();
    let mut files = Vec::new();
    let mut tables = Vec::new();
    for (i, &ix) in order.iter().enumerate() {
        let info = &infos[ix];
        let step = format!("{:0width$}_{}", i + 1, safe(&info.name));
        let table_deferred: Vec<FkInfo> = deferred
            .iter()
            .filter(|(child, _)| child == &info.name)
            .map(|(_, fk)| fk.clone())
            .collect();
        let table_opts = InitOptions {
            from: opts.from.clone(),
            table: Some(info.name.clone()),
            key: Vec::new(),
            name: Some(format!("{set_name}_{}", safe(&info.name))),
            target: opts.target.clone(),
            pipeline_dir: set_dir.clone(),
            schema: (source != Engine::Sqlite).then(|| schema.clone()),
            target_schema: opts.target_schema.clone(),
        };
        let starter = generate(
            &table_opts,
            Some(InSet {
                info,
                tables: &names_moved,
                deferred: &table_deferred,
                names: &mut names,
            }),
        )?;
        for v in starter.vars {
            if !vars.contains(&v) {
                vars.push(v);
            }
        }
        for n in starter.notes {
            if !notes.contains(&n) {
                notes.push(n);
            }
        }
        lost.extend(starter.lost);
        files.push((format!("{step}.toml"), starter.text));
        files.push((
            format!("{step}.sql"),
            format!(
                "-- Step {}: the data of table {} (the .toml beside this file).\n-- rowshift:down\nDROP TABLE {};\n",
                i + 1,
                info.name,
                target_engine.quote(&info.name)
            ),
        ));
        tables.push(info.name.clone());
    }
    if !deferred.is_empty() {
        let step = format!("{:0width$}_foreign_keys", order.len() + 1);
        files.push((
            format!("{step}.sql"),
            deferred_step(&deferred, target_engine, &mut names),
        ));
        notes.push(format!(
            "the foreign keys of tables {} form a cycle: {} added in step {} ({step}.sql), after every table is loaded",
            and_list(&deferred_tables(&deferred)),
            deferred
                .iter()
                .map(|(child, fk)| format!("{child}({}) -> {}", fk.columns.join(", "), fk.table))
                .collect::<Vec<_>>()
                .join(", "),
            order.len() + 1
        ));
    }

    let mut head = format!(
        "# Migration set made by `rowshift init --from {} --set ...`: one data step per table\n# of {}, in foreign-key order (parents first). See docs/migrations.md.\n#\n#   rowshift validate DIR\n#   rowshift up DIR\n",
        redact(&opts.from),
        where_(&location, &schema)
    );
    for (var, shown) in &vars {
        head.push_str(&format!(
            "# ${{{var}}}: set it to {} with its password; the password is not written into these files.\n",
            redact(shown)
        ));
    }
    if !lost_objects.is_empty() {
        head.push_str("#\n# Not carried over from the source:\n");
        for l in &lost_objects {
            head.push_str(&format!("# - {l}\n"));
        }
    }
    let target_text = match &target {
        Location::Sqlite { path } => format!("sqlite://{}", relative_to(path, set_dir).display()),
        _ => url_text(target_url, "ROWSHIFT_TARGET_URL", &mut vars, &mut notes),
    };
    head.push_str(&format!(
        "name = {}\nurl = {}\n",
        toml_str(&set_name),
        toml_str(&target_text)
    ));
    if let Some(s) = &opts.target_schema {
        head.push_str(&format!("schema = {}\n", toml_str(s)));
    }
    files.insert(0, ("rowshift.toml".to_string(), head));
    lost_objects.extend(lost);
    Ok(SetStarter {
        files,
        notes,
        lost: lost_objects,
        tables,
        vars,
    })
}

/// The tables in foreign-key order (indexes into `infos`), and the foreign keys a cycle
/// leaves to a later step, each with its table.
fn fk_order(infos: &[TableInfo], moved: &[String]) -> (Vec<usize>, Vec<(String, FkInfo)>) {
    let mut placed: Vec<usize> = Vec::new();
    let mut deferred = Vec::new();
    let is_placed = |placed: &[usize], name: &str| placed.iter().any(|&p| infos[p].name == name);
    while placed.len() < infos.len() {
        let waiting = |placed: &[usize], i: usize| -> Vec<FkInfo> {
            infos[i]
                .foreign_keys
                .iter()
                .filter(|fk| {
                    fk.table != infos[i].name
                        && moved.contains(&fk.table)
                        && !is_placed(placed, &fk.table)
                })
                .cloned()
                .collect()
        };
        let pending: Vec<usize> = (0..infos.len()).filter(|i| !placed.contains(i)).collect();
        if let Some(&ready) = pending.iter().find(|&&i| waiting(&placed, i).is_empty()) {
            placed.push(ready);
            continue;
        }
        // A cycle: the table with the fewest keys to tables not yet placed goes next,
        // and those keys wait for the last step.
        let &next = pending
            .iter()
            .min_by_key(|&&i| waiting(&placed, i).len())
            .expect("a table is pending");
        for fk in waiting(&placed, next) {
            deferred.push((infos[next].name.clone(), fk));
        }
        placed.push(next);
    }
    (placed, deferred)
}

/// The SQL step that adds the foreign keys a cycle deferred, and drops them on `down`.
fn deferred_step(deferred: &[(String, FkInfo)], target: Engine, names: &mut Names) -> String {
    let mut up = String::new();
    let mut down = Vec::new();
    for (child, fk) in deferred {
        let name = names.take_constraint(
            child,
            fk.name
                .clone()
                .unwrap_or_else(|| format!("{child}_{}_fkey", fk.columns.join("_"))),
        );
        let list = |cols: &[String]| {
            cols.iter()
                .map(|c| target.quote(c))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut sql = format!(
            "ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({})",
            target.quote(child),
            target.quote(&name),
            list(&fk.columns),
            target.quote(&fk.table),
            list(&fk.references)
        );
        if let Some(a) = fk.on_delete {
            sql.push_str(&format!(" ON DELETE {a}"));
        }
        if let Some(a) = fk.on_update {
            sql.push_str(&format!(" ON UPDATE {a}"));
        }
        up.push_str(&format!("{sql};\n"));
        let drop = match target {
            Engine::Mysql => "DROP FOREIGN KEY",
            _ => "DROP CONSTRAINT",
        };
        down.push(format!(
            "ALTER TABLE {} {drop} {};\n",
            target.quote(child),
            target.quote(&name)
        ));
    }
    down.reverse();
    format!(
        "-- Foreign keys that form a cycle between tables: added once every table is loaded.\n-- rowshift:up\n{up}\n-- rowshift:down\n{}",
        down.concat()
    )
}

fn deferred_tables(deferred: &[(String, FkInfo)]) -> Vec<String> {
    let mut t: Vec<String> = deferred
        .iter()
        .flat_map(|(c, fk)| [c.clone(), fk.table.clone()])
        .collect();
    t.sort();
    t.dedup();
    t
}

/// `a`, `a and b`, `a, b and c`, each in backticks.
fn and_list(items: &[String]) -> String {
    let q: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    match q.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// The source's schema in words.
fn where_(location: &Location, schema: &str) -> String {
    match location {
        Location::Sqlite { path } => format!("sqlite://{}", crate::config::show_path(path)),
        Location::Postgres { .. } => format!("PostgreSQL schema {schema}"),
        Location::Mysql { .. } => format!("MySQL database {schema}"),
        Location::Files { .. } => "the files".into(),
    }
}

/// A name for files and pipelines: letters, digits and `_`, lower case.
fn safe(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "table".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, parents: &[&str]) -> TableInfo {
        TableInfo {
            name: name.into(),
            primary_key: vec!["id".into()],
            foreign_keys: parents
                .iter()
                .map(|p| FkInfo {
                    name: None,
                    columns: vec![format!("{p}_id")],
                    table: p.to_string(),
                    references: vec!["id".into()],
                    on_delete: None,
                    on_update: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn orders_parents_first_and_breaks_a_cycle_once() {
        let infos = vec![
            table("items", &["orders", "products"]),
            table("orders", &["customers"]),
            table("customers", &["customers"]),
            table("products", &[]),
        ];
        let moved: Vec<String> = infos.iter().map(|i| i.name.clone()).collect();
        let (order, deferred) = fk_order(&infos, &moved);
        let names: Vec<&str> = order.iter().map(|&i| infos[i].name.as_str()).collect();
        assert_eq!(names, ["customers", "orders", "products", "items"]);
        assert!(deferred.is_empty());

        let infos = vec![table("a", &["b"]), table("b", &["a"]), table("c", &["a"])];
        let moved: Vec<String> = infos.iter().map(|i| i.name.clone()).collect();
        let (order, deferred) = fk_order(&infos, &moved);
        let names: Vec<&str> = order.iter().map(|&i| infos[i].name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(deferred.len(), 1);
        assert_eq!(deferred[0].0, "a");
        assert_eq!(deferred[0].1.table, "b");
    }
}
