//! A migration set on disk: the set file (`rowshift.toml`) and its numbered steps, read
//! and checked as a whole, every problem reported with its `file:line:column`.
//!
//! A step is the files of a directory that share a leading number and a name:
//! `NNN_name.sql` (SQL with `-- rowshift:up`, `-- rowshift:after` and `-- rowshift:down`
//! sections) and `NNN_name.toml` (a pipeline whose target is the set's target). Steps are
//! ordered by the number's value, so `10_` comes after `9_` and `002_` after `1_`.
//! A data step may have a reverse pipeline, `NNN_name.down.toml`: its data moved from the
//! step's target table back to its source table, which `down` runs before the step's
//! down section.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::SetError;
use super::statements::{Statement, split};
use crate::config::{Diagnostic, Diagnostics, Location, Pipeline, expand_env, redact, suggest};

/// The set file's name inside a set's directory.
pub const SET_FILE: &str = "rowshift.toml";

/// What ends a reverse pipeline's stem: `002_items.down.toml`.
const REVERSE_SUFFIX: &str = ".down";

/// A migration set, read from its directory and checked.
#[derive(Debug, Clone)]
pub struct MigrationSet {
    /// The directory, as the user named it.
    pub dir: PathBuf,
    /// The set's name (`name` in the set file; default: the directory's name). The history
    /// keeps each set's steps apart by it.
    pub name: String,
    /// Where the steps apply.
    pub target: Location,
    /// The target URL as written in the set file, expanded and redacted.
    pub shown: String,
    /// The steps, in order of their numbers.
    pub steps: Vec<Step>,
    /// `parallel` in the set file: how many steps `up` applies at once at most (steps
    /// that depend on each other never overlap); `None`: [`DEFAULT_PARALLEL`].
    pub parallel: Option<usize>,
}

/// How many independent steps `up` applies at once when neither the set file nor
/// `up --parallel` says.
pub const DEFAULT_PARALLEL: usize = 4;

/// One step of a set.
#[derive(Debug, Clone)]
pub struct Step {
    /// The leading number.
    pub number: u64,
    /// The name after the number (`add_email` for `002_add_email.sql`).
    pub name: String,
    /// The SQL file, when the step has one.
    pub sql: Option<SqlFile>,
    /// The data pipeline, when the step moves data.
    pub pipeline: Option<Pipeline>,
    /// The reverse pipeline (`NNN_name.down.toml`), when the step declares how its data
    /// goes back from the new schema to the old: `down` runs it before the step's down
    /// section drops anything.
    pub reverse: Option<Pipeline>,
    /// The step's files as `(file name, text)`, in a fixed order: what the history keeps,
    /// to say what changed in an applied step.
    pub texts: Vec<(String, String)>,
    /// A checksum over the step's files (hex).
    pub checksum: String,
}

/// The sections of a step's SQL file.
#[derive(Debug, Clone, Default)]
pub struct SqlFile {
    /// The file.
    pub path: PathBuf,
    /// `-- rowshift:up`: run first (before the data move).
    pub up: Vec<Statement>,
    /// `-- rowshift:after`: run after the data move.
    pub after: Vec<Statement>,
    /// `-- rowshift:down`: run by `down`; `None` when the file has no such section.
    pub down: Option<Vec<Statement>>,
}

impl Step {
    /// `step 2 (add_email)`.
    pub fn label(&self) -> String {
        format!("step {} ({})", self.number, self.name)
    }

    /// What the step does: `sql`, `data` or `sql+data`.
    pub fn kind(&self) -> &'static str {
        match (&self.sql, &self.pipeline) {
            (Some(s), Some(_)) if !s.up.is_empty() || !s.after.is_empty() => "sql+data",
            (_, Some(_)) => "data",
            _ => "sql",
        }
    }

    /// The statements `up` runs before the data move, then after it.
    pub fn up_statements(&self) -> (&[Statement], &[Statement]) {
        match &self.sql {
            Some(s) => (&s.up, &s.after),
            None => (&[], &[]),
        }
    }

    /// Whether the step's data move is online (`[online] enabled = true`): `up`
    /// captures the source table's changes during the copy, catches up and cuts over;
    /// `down` swaps back.
    pub fn is_online(&self) -> bool {
        self.pipeline.as_ref().is_some_and(|p| p.online.enabled)
    }

    /// The statements `down` runs, when the step has a down section.
    pub fn down_statements(&self) -> Option<&[Statement]> {
        self.sql.as_ref().and_then(|s| s.down.as_deref())
    }
}

impl MigrationSet {
    /// Reads and checks the set in `dir`, with `${VAR}`s from the environment. Every
    /// problem of every file is reported at once.
    pub fn load(dir: &Path) -> Result<MigrationSet, SetError> {
        Self::load_with(dir, &|name| std::env::var(name).ok())
    }

    /// [`MigrationSet::load`] with `${VAR}`s from `env`.
    pub fn load_with(
        dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<MigrationSet, SetError> {
        let mut problems: Vec<Diagnostics> = Vec::new();
        let set_path = dir.join(SET_FILE);
        let set_text = read(&set_path)?;
        let mut set_diags = Diagnostics::new(set_path.clone(), set_text.clone());
        let head = parse_set_file(dir, &set_text, env, &mut set_diags);

        let mut entries: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| crate::Error::io(dir, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        entries.sort();

        // number -> (name, files)
        let mut by_number: BTreeMap<u64, Vec<(String, String)>> = BTreeMap::new();
        for file in entries {
            if file == SET_FILE || file.starts_with('.') {
                continue;
            }
            let Some((stem, ext)) = file.rsplit_once('.') else {
                continue;
            };
            if ext != "sql" && ext != "toml" {
                continue;
            }
            // `NNN_name.down.toml` is the reverse pipeline of step NNN's data move.
            let stem = match ext {
                "toml" => stem.strip_suffix(REVERSE_SUFFIX).unwrap_or(stem),
                _ => stem,
            };
            match step_name(stem) {
                Some((number, name)) => by_number
                    .entry(number)
                    .or_default()
                    .push((name.to_string(), file)),
                None => {
                    let mut d = Diagnostics::new(dir.join(&file), Arc::from(""));
                    d.push(Diagnostic::at(
                        None,
                        format!("`{file}` is not a step: a step's file name starts with its number and a name, as `003_add_email.{ext}`"),
                    ));
                    problems.push(d);
                }
            }
        }

        let mut steps = Vec::new();
        for (number, files) in by_number {
            let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
            if names.iter().any(|n| *n != names[0]) {
                let list: Vec<&str> = files.iter().map(|(_, f)| f.as_str()).collect();
                let mut d = Diagnostics::new(dir.join(&files[1].1), Arc::from(""));
                d.push(Diagnostic::at(
                    None,
                    format!(
                        "two steps have the number {number}: {}; give each step a number of its own",
                        list.join(" and ")
                    ),
                ));
                problems.push(d);
                continue;
            }
            match read_step(
                dir,
                number,
                &files,
                head.as_ref().map(|h| &h.target),
                &mut problems,
            ) {
                Some(step) => steps.push(step),
                None => continue,
            }
        }
        if steps.is_empty() && problems.is_empty() && set_diags.is_empty() {
            set_diags.push(Diagnostic::at(
                None,
                format!(
                    "{} holds no step; add one, as `001_create.sql` or `001_load.toml`",
                    dir.display()
                ),
            ));
        }
        if !set_diags.is_empty() {
            problems.insert(0, set_diags);
        }
        if !problems.is_empty() {
            return Err(SetError::Invalid(problems));
        }
        let head = head.expect("no diagnostics, so the set file parsed");
        Ok(MigrationSet {
            dir: dir.to_path_buf(),
            name: head.name,
            target: head.target,
            shown: head.shown,
            steps,
            parallel: head.parallel,
        })
    }

    /// The step numbered `n`.
    pub fn step(&self, n: u64) -> Option<&Step> {
        self.steps.iter().find(|s| s.number == n)
    }
}

fn read(path: &Path) -> Result<Arc<str>, SetError> {
    let bytes = std::fs::read(path).map_err(|e| crate::Error::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        let mut d = Diagnostics::new(path.to_path_buf(), Arc::from(""));
        d.push(Diagnostic::at(None, "the file is not UTF-8"));
        SetError::Invalid(vec![d])
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    Ok(Arc::from(text.replace("\r\n", "\n")))
}

/// `003_add_email` as (3, "add_email").
fn step_name(stem: &str) -> Option<(u64, &str)> {
    let digits = stem.chars().take_while(char::is_ascii_digit).count();
    let (num, rest) = stem.split_at(digits);
    let name = rest.strip_prefix('_')?;
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    (digits > 0 && ok).then(|| num.parse().ok().map(|n| (n, name)))?
}

/// What the set file says.
struct Head {
    target: Location,
    /// The target URL, redacted.
    shown: String,
    name: String,
    parallel: Option<usize>,
}

/// The set file: `name`, `url`, `schema` and `parallel`.
fn parse_set_file(
    dir: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diagnostics,
) -> Option<Head> {
    let doc = match toml_edit::Document::parse(text.to_string()) {
        Ok(doc) => doc,
        Err(e) => {
            diags.push(Diagnostic::at(
                e.span(),
                format!("invalid TOML: {}", e.message()),
            ));
            return None;
        }
    };
    let root = doc.as_table();
    const KEYS: &[&str] = &["name", "url", "schema", "parallel"];
    for (key, item) in root.iter() {
        if !KEYS.contains(&key) {
            let span = root
                .get_key_value(key)
                .and_then(|(k, _)| k.span())
                .or_else(|| item.span());
            let mut d = Diagnostic::at(span, format!("unknown key `{key}` in the set file"));
            d = match suggest(key, KEYS.iter().copied()) {
                Some(s) => d.with_help(format!("did you mean `{s}`?")),
                None => d.with_help("the set file knows `name`, `url`, `schema` and `parallel`"),
            };
            diags.push(d);
        }
    }
    let string = |key: &str, diags: &mut Diagnostics| -> Option<(String, Option<Range<usize>>)> {
        let item = root.get(key)?;
        match item.as_str() {
            Some(s) => Some((s.to_string(), item.span())),
            None => {
                diags.push(Diagnostic::at(
                    item.span(),
                    format!("`{key}` must be a string"),
                ));
                None
            }
        }
    };
    let name = match string("name", diags) {
        Some((n, span)) => {
            if n.is_empty()
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            {
                diags.push(
                    Diagnostic::at(span, format!("invalid name `{n}`"))
                        .with_help("use letters, digits, `_`, `-` and `.`: the history keeps the set's steps by it"),
                );
            }
            n
        }
        None => std::path::absolute(dir)
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "set".into()),
    };
    let schema = string("schema", diags);
    let parallel = root.get("parallel").and_then(|item| {
        match item.as_integer() {
            Some(n) if n >= 1 => Some(n as usize),
            _ => {
                diags.push(
                    Diagnostic::at(item.span(), "`parallel` must be a whole number, 1 or more")
                        .with_help("how many independent steps `up` applies at once; 1 applies them one after the other"),
                );
                None
            }
        }
    });
    let Some((url, span)) = string("url", diags) else {
        if root.get("url").is_none() {
            diags.push(
                Diagnostic::at(Some(0..0), "the set file names no `url`")
                    .with_help("write the target as `url = \"${ROWSHIFT_TARGET_URL}\"`, `sqlite://app.db`, a postgres:// or a mysql:// URL"),
            );
        }
        return None;
    };
    let url = match expand_env(&url, env) {
        Ok(u) => u,
        Err(e) => {
            diags.push(Diagnostic::at(span, e));
            return None;
        }
    };
    let base = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut location = match Location::parse(&url, &base, None) {
        Ok(l) => l,
        Err(e) => {
            diags.push(Diagnostic::at(span, e));
            return None;
        }
    };
    match (&mut location, schema) {
        (Location::Postgres { schema, .. } | Location::Mysql { schema, .. }, Some((s, _))) => {
            *schema = s
        }
        (Location::Sqlite { .. }, Some((_, span))) => {
            diags.push(Diagnostic::at(
                span,
                "`schema` is for a PostgreSQL or MySQL target; a SQLite file has none",
            ));
        }
        (Location::Files { .. }, _) => {
            diags.push(
                Diagnostic::at(span, "a migration set's target is a database")
                    .with_help("use sqlite://FILE, postgres://… or mysql://…"),
            );
            return None;
        }
        _ => {}
    }
    Some(Head {
        target: location,
        shown: redact(&url),
        name,
        parallel,
    })
}

/// Reads the files of step `number` and checks them; problems go to `problems`.
fn read_step(
    dir: &Path,
    number: u64,
    files: &[(String, String)],
    target: Option<&Location>,
    problems: &mut Vec<Diagnostics>,
) -> Option<Step> {
    let name = files[0].0.clone();
    let mut sql = None;
    let mut pipeline = None;
    let mut reverse: Option<(Pipeline, Arc<str>)> = None;
    let mut texts = Vec::new();
    let mut ok = true;
    for (_, file) in files {
        let path = dir.join(file);
        let text = match read(&path) {
            Ok(t) => t,
            Err(SetError::Invalid(mut d)) => {
                problems.append(&mut d);
                ok = false;
                continue;
            }
            Err(e) => {
                let mut d = Diagnostics::new(path.clone(), Arc::from(""));
                d.push(Diagnostic::at(None, e.to_string()));
                problems.push(d);
                ok = false;
                continue;
            }
        };
        texts.push((file.clone(), text.to_string()));
        if file.ends_with(".sql") {
            let mut diags = Diagnostics::new(path.clone(), text.clone());
            let parsed = parse_sql(&path, &text, &mut diags);
            if diags.is_empty() {
                sql = Some(parsed);
            } else {
                problems.push(diags);
                ok = false;
            }
        } else if file.ends_with(".down.toml") {
            match Pipeline::parse(&path, &text, &|n| std::env::var(n).ok()) {
                Ok(p) => reverse = Some((p, text.clone())),
                Err(e) => {
                    problems.push(pipeline_problem(&path, &text, e));
                    ok = false;
                }
            }
        } else {
            match Pipeline::parse(&path, &text, &|n| std::env::var(n).ok()) {
                Ok(p) => {
                    if let Some(target) = target
                        && &p.target.location != target
                    {
                        let mut diags = Diagnostics::new(path.clone(), text.clone());
                        diags.push(
                            Diagnostic::at(
                                p.target.url.span.clone(),
                                format!(
                                    "this step writes to {}, which is not the set's target",
                                    p.target.url.value
                                ),
                            )
                            .with_help(format!(
                                "a data step writes to the target that {} names (url and schema), so that its history and lock cover it",
                                SET_FILE
                            )),
                        );
                        problems.push(diags);
                        ok = false;
                    }
                    if p.target.table.is_none() {
                        let mut diags = Diagnostics::new(path.clone(), text.clone());
                        diags.push(Diagnostic::at(
                            p.target.url.span.clone(),
                            "a data step's [target] names its `table`",
                        ));
                        problems.push(diags);
                        ok = false;
                    }
                    pipeline = Some(p);
                }
                Err(e) => {
                    problems.push(pipeline_problem(&path, &text, e));
                    ok = false;
                }
            }
        }
    }
    if let Some(p) = pipeline.as_mut().filter(|p| p.online.enabled) {
        let text = texts
            .iter()
            .find(|(f, _)| f.ends_with(".toml") && !f.ends_with(".down.toml"))
            .map(|(_, t)| Arc::from(t.as_str()))
            .unwrap_or_else(|| Arc::from(""));
        let reverse_file = files
            .iter()
            .find(|(_, f)| f.ends_with(".down.toml"))
            .map(|(_, f)| dir.join(f));
        let found = check_online(p, reverse_file.as_deref(), &text, target);
        if !found.is_empty() {
            let mut diags = Diagnostics::new(p.file.clone(), text);
            for d in found {
                diags.push(d);
            }
            problems.push(diags);
            ok = false;
        }
    }
    let reverse = match reverse {
        Some((r, text)) => {
            let mut found = check_reverse(&r, pipeline.as_ref(), target, number, &name);
            if let Some(p) = pipeline.as_ref().filter(|p| p.online.enabled) {
                found.extend(check_online_reverse(&r, p, number, &name));
            }
            if !found.is_empty() {
                let mut diags = Diagnostics::new(r.file.clone(), text);
                for d in found {
                    diags.push(d);
                }
                problems.push(diags);
                ok = false;
            }
            Some(r)
        }
        None => None,
    };
    if let (Some(s), None) = (&sql, &pipeline)
        && (!s.after.is_empty() || s.up.is_empty())
    {
        let text: Arc<str> = texts
            .iter()
            .find(|(f, _)| f.ends_with(".sql"))
            .map(|(_, t)| Arc::from(t.as_str()))
            .unwrap_or_else(|| Arc::from(""));
        let mut diags = Diagnostics::new(s.path.clone(), text.clone());
        let after = !s.after.is_empty();
        let message = match after {
            false => "a SQL step without a data pipeline needs a `-- rowshift:up` section with at least one statement".to_string(),
            true => format!(
                "`-- rowshift:after` runs after the data move of {number:03}_{name}.toml, which does not exist; put these statements under `-- rowshift:up`"
            ),
        };
        let at = marker_span(&text, if after { "after" } else { "up" });
        diags.push(Diagnostic::at(at, message));
        problems.push(diags);
        ok = false;
    }
    if !ok {
        return None;
    }
    let mut hasher = blake3::Hasher::new();
    for (file, text) in &texts {
        // The name's number is left out: renumbering a step shows in the chain.
        hasher.update(
            file.split_once('_')
                .map_or(file.as_str(), |(_, r)| r)
                .as_bytes(),
        );
        hasher.update(&[0]);
        hasher.update(text.as_bytes());
        hasher.update(&[0]);
    }
    Some(Step {
        number,
        name,
        sql,
        pipeline,
        reverse,
        texts,
        checksum: hasher.finalize().to_hex().to_string(),
    })
}

/// A pipeline file's error as the file's diagnostics.
fn pipeline_problem(path: &Path, text: &Arc<str>, e: crate::Error) -> Diagnostics {
    match e {
        crate::Error::Config(d) => d,
        e => {
            let mut d = Diagnostics::new(path.to_path_buf(), text.clone());
            d.push(Diagnostic::at(None, redact(&e.to_string())));
            d
        }
    }
}

/// What is wrong with a reverse pipeline: it must read the table its step's data move
/// writes, in the set's target, and write the table that move reads, where it reads it,
/// so that `down` brings the step's rows back to where they came from.
fn check_reverse(
    reverse: &Pipeline,
    forward: Option<&Pipeline>,
    target: Option<&Location>,
    number: u64,
    name: &str,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let file = format!("{number:03}_{name}.toml");
    let Some(forward) = forward else {
        out.push(
            Diagnostic::at(
                reverse.source.url.span.clone(),
                format!("a reverse pipeline undoes a data step's move, and step {number} has no data pipeline ({file} does not exist)"),
            )
            .with_help("name it after the step whose data it brings back: `NNN_name.down.toml` beside `NNN_name.toml`"),
        );
        return out;
    };
    let table_of = |t: &Option<crate::config::Spanned<String>>| t.as_ref().map(|t| t.value.clone());
    if let Some(target) = target
        && &reverse.source.location != target
    {
        out.push(
            Diagnostic::at(
                reverse.source.url.span.clone(),
                format!(
                    "the reverse pipeline reads {}, which is not the set's target",
                    redact(&reverse.source.url.value)
                ),
            )
            .with_help(format!(
                "it reads the rows {file} wrote: its [source] is the set's target (url and schema)"
            )),
        );
    }
    let wrote = table_of(&forward.target.table);
    if table_of(&reverse.source.table) != wrote {
        let span = reverse
            .source
            .table
            .as_ref()
            .map_or(reverse.source.url.span.clone(), |t| t.span.clone());
        out.push(Diagnostic::at(
            span,
            format!(
                "the reverse pipeline reads table {}, but {file} writes table {}: it reads the rows the step wrote",
                show_table(&reverse.source.table),
                show_table(&forward.target.table)
            ),
        ));
    }
    if reverse.target.location != forward.source.location {
        out.push(
            Diagnostic::at(
                reverse.target.url.span.clone(),
                format!(
                    "the reverse pipeline writes to {}, but {file} reads from {}: it brings the rows back where they came from",
                    redact(&reverse.target.url.value),
                    redact(&forward.source.url.value)
                ),
            )
            .with_help("give its [target] the url (and schema) of the step's [source]"),
        );
    }
    if matches!(reverse.target.location, Location::Files { .. }) {
        out.push(Diagnostic::at(
            reverse.target.url.span.clone(),
            "a reverse pipeline writes a database table; down does not write files",
        ));
    }
    if table_of(&reverse.target.table) != table_of(&forward.source.table) {
        let span = reverse
            .target
            .table
            .as_ref()
            .map_or(reverse.target.url.span.clone(), |t| t.span.clone());
        out.push(Diagnostic::at(
            span,
            format!(
                "the reverse pipeline writes table {}, but {file} reads table {}",
                show_table(&reverse.target.table),
                show_table(&forward.source.table)
            ),
        ));
    }
    if reverse.name == forward.name {
        out.push(
            Diagnostic::at(
                reverse.source.url.span.clone(),
                format!(
                    "the reverse pipeline has the name `{}` of {file}: each keeps its own checkpoint by its name",
                    reverse.name
                ),
            )
            .with_help("give it a `name` of its own, as `<name>_down`"),
        );
    }
    out
}

/// What is wrong with an online step's pipeline (`[online] enabled = true`), which a
/// set applies by capturing, copying, catching up and cutting over in its target. Its
/// reverse pipeline is the step's `NNN_name.down.toml`: when the pipeline names none,
/// `[online] reverse` is set to it here.
fn check_online(
    p: &mut Pipeline,
    reverse_file: Option<&Path>,
    text: &str,
    target: Option<&Location>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if let Some(target) = target
        && &p.source.location != target
    {
        out.push(
            Diagnostic::at(
                p.source.url.span.clone(),
                format!(
                    "an online step reads a table of the set's target, and this one reads {}: its cut-over renames the new table into the source table's place, which cannot be done between two databases",
                    redact(&p.source.url.value)
                ),
            )
            .with_help("move the table between databases with the pipeline alone (`rowshift run`, `rowshift cutover`; see docs/online.md), or give [source] the set's url (and schema)"),
        );
    }
    // `cutover = false` written out says the step must not cut over, but a set applies
    // an online step by cutting it over: refused rather than ignored.
    if let Ok(doc) = toml_edit::Document::parse(text.to_string())
        && let Some(item) = doc.get("online").and_then(|o| o.get("cutover"))
        && item.as_bool() == Some(false)
    {
        out.push(
            Diagnostic::at(
                item.span(),
                "a set applies an online step by cutting it over (its new table takes the source table's name): `cutover = false` cannot hold in a set",
            )
            .with_help("remove the key; to copy and catch up without cutting over, run the pipeline alone"),
        );
    }
    match (&p.online.reverse, reverse_file) {
        (None, Some(file)) => {
            p.online.reverse = Some(crate::config::Spanned {
                value: file.to_path_buf(),
                span: None,
            });
        }
        (Some(named), found) => {
            let same = found.is_some_and(|f| {
                std::fs::canonicalize(f).ok() == std::fs::canonicalize(&named.value).ok()
            });
            if !same {
                let stem = p
                    .file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.push(
                    Diagnostic::at(
                        named.span.clone(),
                        format!(
                            "[online] reverse names {}, but in a set an online step's reverse pipeline is the step's own, {stem}{REVERSE_SUFFIX}.toml{}: `down` swaps the cut-over back through it",
                            named
                                .value
                                .strip_prefix(&p.base_dir)
                                .unwrap_or(&named.value)
                                .display(),
                            match found {
                                Some(_) => "",
                                None => ", which does not exist",
                            }
                        ),
                    )
                    .with_help(format!(
                        "remove `reverse` (the step's {stem}{REVERSE_SUFFIX}.toml is used), or move the reverse pipeline to that file"
                    )),
                );
            }
        }
        (None, None) => {}
    }
    let table = p.target.table.as_ref().and_then(|t| t.span.clone());
    if let Some(key) = &p.source.key {
        let missing: Vec<&String> = key
            .value
            .iter()
            .filter(|k| !p.target.columns.iter().any(|c| c.expr.value.trim() == *k))
            .collect();
        if !missing.is_empty() {
            out.push(Diagnostic::at(
                table.or(p.target.url.span.clone()),
                format!(
                    "an online step's target columns hold the source key unchanged (expr = the key column), and no target column's expr is {}: a replayed change finds its row by them",
                    missing.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    out
}

/// What is wrong with an online step's reverse pipeline beyond what every reverse
/// pipeline must hold: it reads the new table by the columns that hold the forward
/// source key, since its capture logs the new table's keys.
fn check_online_reverse(
    reverse: &Pipeline,
    forward: &Pipeline,
    number: u64,
    name: &str,
) -> Vec<Diagnostic> {
    let Some(key) = &forward.source.key else {
        return Vec::new();
    };
    let held: Vec<String> = key
        .value
        .iter()
        .filter_map(|k| {
            forward
                .target
                .columns
                .iter()
                .find(|c| c.expr.value.trim() == k)
                .map(|c| c.name.value.clone())
        })
        .collect();
    let has = reverse.source.key.as_ref().map(|k| k.value.clone());
    if has.as_ref() == Some(&held) || held.len() != key.value.len() {
        return Vec::new();
    }
    let span = reverse
        .source
        .key
        .as_ref()
        .and_then(|k| k.span.clone())
        .or_else(|| reverse.source.table.as_ref().and_then(|t| t.span.clone()));
    vec![Diagnostic::at(
        span,
        format!(
            "the reverse pipeline of an online step reads the new table by the columns that hold the step's source key, {} ({number:03}_{name}.toml); its [source] key is {}",
            held.join(", "),
            has.map_or("not set".to_string(), |k| k.join(", "))
        ),
    )]
}

fn show_table(t: &Option<crate::config::Spanned<String>>) -> String {
    match t {
        Some(t) => format!("`{}`", t.value),
        None => "(none)".into(),
    }
}

/// Where `-- rowshift:<section>` is written, if it is.
fn marker_span(text: &str, section: &str) -> Option<Range<usize>> {
    let marker = format!("-- rowshift:{section}");
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim() == marker {
            return Some(offset..offset + line.trim_end().len());
        }
        offset += line.len();
    }
    Some(0..0)
}

/// Splits a step's SQL file into its sections and statements.
fn parse_sql(path: &Path, text: &str, diags: &mut Diagnostics) -> SqlFile {
    let mut file = SqlFile {
        path: path.to_path_buf(),
        ..SqlFile::default()
    };
    // (section, start offset of its body)
    let mut sections: Vec<(String, usize, Range<usize>)> = Vec::new();
    let mut offset = 0;
    let mut first_code: Option<usize> = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if let Some(section) = trimmed.strip_prefix("-- rowshift:") {
            let span = offset..offset + line.trim_end().len();
            let section = section.trim().to_string();
            if !["up", "after", "down"].contains(&section.as_str()) {
                diags.push(
                    Diagnostic::at(Some(span.clone()), format!("unknown section `{section}`"))
                        .with_help("the sections are `-- rowshift:up`, `-- rowshift:after` and `-- rowshift:down`"),
                );
            } else if sections.iter().any(|(s, _, _)| *s == section) {
                diags.push(Diagnostic::at(
                    Some(span.clone()),
                    format!("a second `-- rowshift:{section}` section; a file has one of each"),
                ));
            }
            sections.push((section, offset + line.len(), span));
        } else if sections.is_empty()
            && first_code.is_none()
            && !trimmed.is_empty()
            && !trimmed.starts_with("--")
        {
            first_code = Some(offset);
        }
        offset += line.len();
    }
    if let Some(at) = first_code {
        diags.push(
            Diagnostic::at(Some(at..at), "SQL before the first section").with_help(
                "start the file with `-- rowshift:up`; `down` goes under `-- rowshift:down`",
            ),
        );
    }
    if sections.is_empty() && first_code.is_none() {
        diags.push(Diagnostic::at(
            Some(0..0),
            "no section: a step's SQL goes under `-- rowshift:up` (and `-- rowshift:after`, `-- rowshift:down`)",
        ));
    }
    for (i, (section, start, _)) in sections.iter().enumerate() {
        let end = sections.get(i + 1).map_or(text.len(), |s| s.2.start);
        let statements = match split(text, *start..end) {
            Ok(s) => s,
            Err((at, message)) => {
                diags.push(Diagnostic::at(Some(at..at), message));
                continue;
            }
        };
        match section.as_str() {
            "up" => file.up = statements,
            "after" => file.after = statements,
            "down" => file.down = Some(statements),
            _ => {}
        }
    }
    file
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_are_read_by_their_number() {
        assert_eq!(step_name("002_add_email"), Some((2, "add_email")));
        assert_eq!(step_name("10_x"), Some((10, "x")));
        assert_eq!(step_name("add_email"), None);
        assert_eq!(step_name("003_"), None);
        assert_eq!(step_name("003add"), None);
    }
}
