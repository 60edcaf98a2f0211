//! The import direction between the folders of `src/`. After the leaves (`secret`,
//! `error`, `types`, `chunk`, `runtime`, `fault`, `sql`), the code flows
//! config → source → transform → check → checkpoint → sink → db → plan → run → cli, and a
//! folder may use the folders before it, never one after it: an import against the flow
//! ties a step to what consumes it and, with the forward one, makes a circle. A
//! database's folder (`db/<name>/`) uses no other database's. `cargo test --test cli
//! layout` lists every such import, and one fails the test.

use std::collections::BTreeSet;
use std::path::Path;

/// The folders (or top-level files) of `src/` in the order of the flow. A folder may
/// use those with a lower rank or its own. The leaves come first: passwords hidden in
/// text (`secret`), errors and diagnostics, declared types and lossless casts, the chunk
/// vocabulary, the runtime and injected faults, and the SQL core that no database owns.
/// The database folders (`db/<name>/`) implement the source, checkpoint and sink traits,
/// so they come after them; `plan` picks a database's code for a location, so it comes
/// after `db`.
const RANK: &[(&str, u8)] = &[
    ("secret", 0),
    ("error", 1),
    ("types", 2),
    ("chunk", 3),
    ("runtime", 3),
    ("fault", 4),
    ("sql", 5),
    ("config", 6),
    ("source", 7),
    ("transform", 8),
    ("check", 9),
    ("checkpoint", 10),
    ("sink", 11),
    ("db", 12),
    ("plan", 13),
    ("run", 14),
    // `init` reads a source the way a run does, to write a pipeline: it may use all of it.
    ("init", 14),
    // `report` reads what a run recorded (checkpoint, workers, quarantine) into one page.
    ("report", 15),
    // `online` captures a source's changes during a run and replays them through the
    // run's transform and checks (`run::process_batch`), so it comes after `run`.
    ("online", 15),
    // `migrate` applies sets of steps, moving each step's data through `run`.
    ("migrate", 16),
];

/// Imports against the flow that exist today (file, folder it uses). Remove a line when
/// its import goes; never add one.
const KNOWN: &[(&str, &str)] = &[];

fn rank(folder: &str) -> Option<u8> {
    RANK.iter().find(|(f, _)| *f == folder).map(|(_, r)| *r)
}

/// The top-level modules a file names through `crate::`: `crate::run::x`,
/// `use crate::{plan::Chunk, sink}`. Comments and the trailing `mod tests` are left out:
/// a unit test may reach anywhere.
fn crate_modules(text: &str) -> BTreeSet<String> {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The first name of each item at depth 1 of the group.
            let mut depth = 1;
            let mut expect_name = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => expect_name = true,
                    c if expect_name && depth == 1 && !c.is_whitespace() => {
                        out.insert(ident(&group[j..]));
                        expect_name = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `(file, folder)` where a library file of `src/` uses a folder after its own.
fn imports_against_the_flow() -> BTreeSet<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all = Vec::new();
    files(&root.join("src"), &mut all);
    let mut found = BTreeSet::new();
    for path in all {
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let first = rel["src/".len()..].split('/').next().unwrap();
        let folder = first.trim_end_matches(".rs");
        // The binary (main.rs, cli/) is last in the flow; lib.rs only declares modules;
        // a tests.rs file is a unit test.
        if rel.ends_with("/tests.rs") {
            continue;
        }
        let Some(own) = rank(folder) else { continue };
        let text = std::fs::read_to_string(&path).unwrap();
        for module in crate_modules(&text) {
            if rank(&module).is_some_and(|r| r > own) {
                found.insert((rel.clone(), module));
            }
        }
    }
    found
}

#[test]
fn no_new_import_runs_against_the_flow_between_folders_of_src() {
    let found = imports_against_the_flow();
    let known: BTreeSet<(String, String)> = KNOWN
        .iter()
        .map(|(f, m)| (f.to_string(), m.to_string()))
        .collect();
    for (file, module) in &found {
        let mark = if known.contains(&(file.clone(), module.clone())) {
            "known"
        } else {
            "NEW"
        };
        println!("{mark}: {file} uses crate::{module}");
    }
    for (file, module) in known.difference(&found) {
        println!("gone (remove it from KNOWN): {file} uses crate::{module}");
    }
    let new: Vec<_> = found.difference(&known).collect();
    assert!(
        new.is_empty(),
        "imports against the flow secret → error → types → chunk → runtime → fault → sql → config → source → \
         transform → check → checkpoint → sink → db → plan → run → cli: {new:?}"
    );
}

/// Every `(file, database)` where a file of one database's folder uses another's.
fn imports_between_databases() -> BTreeSet<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all = Vec::new();
    files(&root.join("src/db"), &mut all);
    let mut found = BTreeSet::new();
    for path in all {
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let Some(own) = rel["src/db/".len()..]
            .split('/')
            .next()
            .filter(|d| !d.ends_with(".rs"))
        else {
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap();
        let code = match text.find("#[cfg(test)]\nmod tests") {
            Some(i) => &text[..i],
            None => &text,
        };
        for (i, _) in code.match_indices("crate::db::") {
            let other: String = code[i + "crate::db::".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !other.is_empty() && other != own {
                found.insert((rel.clone(), other));
            }
        }
    }
    found
}

#[test]
fn no_database_folder_uses_another_database() {
    let found = imports_between_databases();
    assert!(
        found.is_empty(),
        "a database folder uses another's: {found:?}"
    );
}

#[test]
fn the_import_scan_sees_paths_groups_and_nested_groups() {
    let text = "use crate::plan::Chunk;\n\
                use crate::{sink::{Sink, Refusal}, types, run::x};\n\
                // crate::checkpoint in a comment\n\
                fn f() { crate::db::open(); }\n\
                #[cfg(test)]\nmod tests { use crate::cli; }\n";
    let got: Vec<String> = crate_modules(text).into_iter().collect();
    assert_eq!(got, ["db", "plan", "run", "sink", "types"]);
}
