//! What the history says of an applied step against the step as the set holds it now:
//! the chain checksum that catches an edit, a removal or a reorder of an applied step,
//! the step's files as the history keeps them, and what changed in them.

use std::collections::BTreeMap;

use super::history::{Phase, Record, State};
use super::set::{MigrationSet, Step};
use crate::config::redact;

/// The chain checksum of each step: over its own checksum and every step's before it.
pub(crate) fn chains(set: &MigrationSet) -> BTreeMap<u64, String> {
    let mut prev = String::new();
    let mut out = BTreeMap::new();
    for step in &set.steps {
        let mut h = blake3::Hasher::new();
        h.update(prev.as_bytes());
        h.update(&step.number.to_be_bytes());
        h.update(step.checksum.as_bytes());
        prev = h.finalize().to_hex().to_string();
        out.insert(step.number, prev.clone());
    }
    out
}

/// The step's files as the history keeps them.
pub(crate) fn applied_text(step: &Step) -> String {
    step.texts
        .iter()
        .map(|(f, t)| format!("== {f} ==\n{t}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `applied_text` back into (file, text) pairs.
fn split_applied(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches('\n');
        if let Some(file) = bare.strip_prefix("== ").and_then(|r| r.strip_suffix(" ==")) {
            out.push((file.to_string(), String::new()));
        } else if let Some(last) = out.last_mut() {
            last.1.push_str(line);
        }
    }
    // The separator between two files added one newline.
    let n = out.len();
    for (i, (_, t)) in out.iter_mut().enumerate() {
        if i + 1 < n && t.ends_with('\n') {
            t.pop();
        }
    }
    out
}

/// How an applied step's files differ from what ran: the first file and line.
pub(crate) fn what_changed(record: &Record, step: &Step) -> String {
    let old = split_applied(&record.applied_text);
    let new = &step.texts;
    for (file, text) in new {
        let number_free = |f: &str| f.split_once('_').map_or(f.to_string(), |(_, r)| r.into());
        let Some((_, was)) = old
            .iter()
            .find(|(f, _)| number_free(f) == number_free(file))
        else {
            return format!("{file} was added");
        };
        if was == text {
            continue;
        }
        let (a, b): (Vec<&str>, Vec<&str>) = (was.lines().collect(), text.lines().collect());
        let line = (0..a.len().max(b.len()))
            .find(|&i| a.get(i) != b.get(i))
            .unwrap_or(0);
        let show = |l: Option<&&str>| match l {
            Some(l) => format!("`{}`", redact(l.trim())),
            None => "nothing".to_string(),
        };
        return format!(
            "{file} line {} was {} and is now {}",
            line + 1,
            show(a.get(line)),
            show(b.get(line))
        );
    }
    for (file, _) in &old {
        let number_free = |f: &str| f.split_once('_').map_or(f.to_string(), |(_, r)| r.into());
        if !new.iter().any(|(f, _)| number_free(f) == number_free(file)) {
            return format!("{file} was removed");
        }
    }
    "its files are the same, but a step before it changed, was removed or was inserted".into()
}

/// Applied (or started) steps whose files no longer match the history: each as (step
/// number, message).
pub(crate) fn changes(set: &MigrationSet, records: &[Record]) -> Vec<(u64, String)> {
    let chains = chains(set);
    let mut out = Vec::new();
    let last_applied = records
        .iter()
        .filter(|r| r.state != State::Reverted)
        .map(|r| r.step)
        .max();
    for r in records
        .iter()
        .filter(|r| r.state != State::Reverted && !untouched(r))
    {
        let when = match &r.ended_at {
            Some(t) => format!("applied on {t}"),
            None => format!("started on {t}", t = r.started_at),
        };
        let what = match set.step(r.step) {
            None => Some(format!(
                "step {} ({}) was {when}, but the set has no step {} any more",
                r.step, r.name, r.step
            )),
            Some(s) if s.name != r.name => Some(format!(
                "step {} ({}) was {when}, but the set's step {} is now `{}`",
                r.step, r.name, r.step, s.name
            )),
            Some(s) if s.checksum != r.checksum => Some(format!(
                "step {} ({}) was {when}, and since then {}",
                r.step,
                r.name,
                what_changed(r, s)
            )),
            // The cause is named already, at the earlier step.
            Some(_) if !out.is_empty() => None,
            Some(s) if chains.get(&s.number) != Some(&r.chain) => Some(format!(
                "step {} ({}) was {when}, and a step before it changed, was removed or was inserted since",
                r.step, r.name
            )),
            Some(_) => None,
        };
        if let Some(w) = what {
            out.push((r.step, w));
        }
    }
    if let Some(last) = last_applied {
        for s in set.steps.iter().filter(|s| s.number < last) {
            let recorded = records
                .iter()
                .any(|r| r.step == s.number && r.state != State::Reverted);
            // A step left pending beside later ones that `up` applied at the same time
            // was in the set when they ran: their chains cover it. One inserted since
            // changes the chain of every live step after it.
            let inserted = records.iter().any(|r| {
                r.step > s.number
                    && r.state != State::Reverted
                    && chains.get(&r.step) != Some(&r.chain)
            });
            if !recorded && inserted {
                out.push((
                    s.number,
                    format!(
                        "{} is new, but step {last} after it is already applied: number a new step after the last applied one",
                        s.label()
                    ),
                ));
            }
        }
    }
    out.sort_by_key(|(n, _)| *n);
    out.dedup();
    out
}

/// Whether a started step has changed nothing yet (it failed or was killed in its first
/// section before any statement's record): its files may change before it runs again.
pub(crate) fn untouched(r: &Record) -> bool {
    matches!(r.state, State::Running | State::Failed)
        && r.phase == Phase::Up
        && r.statements_done == 0
}
