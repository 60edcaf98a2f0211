//! `rowshift init --set DIR`: writing a migration set, checked before it is in place.

use std::path::{Path, PathBuf};

use rowshift::init::{InitOptions, starter_set};
use rowshift::migrate::MigrationSet;

/// Prints what init did not carry over, one line each.
pub fn print_lost(lost: &[String]) {
    if lost.is_empty() {
        return;
    }
    eprintln!("not carried over ({}):", lost.len());
    for l in lost {
        eprintln!("  - {l}");
    }
}

/// Whether `name` is a file a migration set is made of: the set file or a step.
fn set_file(name: &str) -> bool {
    name == "rowshift.toml"
        || ((name.ends_with(".sql") || name.ends_with(".toml"))
            && name.chars().next().is_some_and(|c| c.is_ascii_digit()))
}

/// `rowshift init --from URL --set DIR --target URL`.
pub fn init_set(opts: InitOptions, force: bool) -> anyhow::Result<i32> {
    let dir = opts.pipeline_dir.clone();
    let existing: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    let ours: Vec<&PathBuf> = existing
        .iter()
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(set_file))
        .collect();
    if !ours.is_empty() && !force {
        anyhow::bail!(
            "{} already holds a migration set ({} files); pass --force to replace its set files",
            dir.display(),
            ours.len()
        );
    }
    let set = starter_set(&opts)?;
    // The files are written beside the directory first and checked there: the same
    // parent keeps every relative path the same.
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dir
        .file_name()
        .map_or("set".into(), |n| n.to_string_lossy().into_owned());
    let staging = parent.join(format!(".{name}.rowshift-init"));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| rowshift::Error::io(&staging, e))?;
    let checked = write_and_check(&set, &staging);
    if let Err(e) = checked {
        let _ = std::fs::remove_dir_all(&staging);
        anyhow::bail!(
            "the migration set init made for {} does not validate, so it was not written: {e}",
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir).map_err(|e| rowshift::Error::io(&dir, e))?;
    for p in ours {
        std::fs::remove_file(p).map_err(|e| rowshift::Error::io(p, e))?;
    }
    for (file, _) in &set.files {
        let to = dir.join(file);
        std::fs::rename(staging.join(file), &to).map_err(|e| rowshift::Error::io(&to, e))?;
    }
    let _ = std::fs::remove_dir_all(&staging);
    for note in &set.notes {
        eprintln!("note: {note}");
    }
    print_lost(&set.lost);
    println!(
        "wrote {}: {} steps moving {} tables ({}); next: rowshift up {}",
        dir.display(),
        set.tables.len()
            + usize::from(
                set.files
                    .iter()
                    .any(|(f, _)| f.ends_with("_foreign_keys.sql"))
            ),
        set.tables.len(),
        set.tables.join(", "),
        dir.display()
    );
    Ok(0)
}

/// Writes the set into `dir` and checks it as `rowshift validate` would, with the
/// set's password variables standing for their URLs.
fn write_and_check(set: &rowshift::init::SetStarter, dir: &Path) -> anyhow::Result<()> {
    for (file, text) in &set.files {
        let to = dir.join(file);
        std::fs::write(&to, text).map_err(|e| rowshift::Error::io(&to, e))?;
    }
    set.validate(dir)?;
    // The set's own checks read a step's variables from the environment only.
    if !set.unset_vars() {
        MigrationSet::load_with(dir, &|n| set.var(n))?;
    }
    Ok(())
}
