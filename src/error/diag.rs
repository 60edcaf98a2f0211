//! Config diagnostics that point at a line of the pipeline file.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

/// One problem in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Byte range in the file, when the problem belongs to a place in it.
    pub span: Option<Range<usize>>,
    /// What is wrong.
    pub message: String,
    /// A hint: the valid names, or what to write instead.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A problem at `span`.
    pub fn at(span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        Diagnostic {
            span,
            message: message.into(),
            help: None,
        }
    }

    /// Adds a hint.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Every problem found in one pipeline file, rendered as `file:line:column: message`.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    /// The pipeline file, as the user named it.
    pub file: PathBuf,
    text: Arc<str>,
    /// The problems, in file order.
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// An empty list for `file` with contents `text`.
    pub fn new(file: PathBuf, text: Arc<str>) -> Self {
        Diagnostics {
            file,
            text,
            items: Vec::new(),
        }
    }

    /// Adds a problem.
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.items.push(diagnostic);
    }

    /// Whether no problem was found.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    /// Turns a non-empty list into an error, sorted by position.
    pub fn into_result(mut self) -> crate::Result<()> {
        if self.items.is_empty() {
            return Ok(());
        }
        self.items
            .sort_by_key(|d| d.span.as_ref().map_or(usize::MAX, |s| s.start));
        Err(crate::Error::Config(self))
    }
}

impl std::fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.items.len();
        write!(
            f,
            "{} has {n} error{}",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for d in &self.items {
            match &d.span {
                Some(span) => {
                    let (line, col) = self.line_col(span.start);
                    write!(f, "\n{}:{line}:{col}: {}", self.file.display(), d.message)?;
                    // The quoted line may hold a URL with a password.
                    let text = crate::secret::redact(self.text.lines().nth(line - 1).unwrap_or(""));
                    write!(f, "\n    {text}\n    {:>width$}^", "", width = col - 1)?;
                }
                None => write!(f, "\n{}: {}", self.file.display(), d.message)?,
            }
            if let Some(help) = &d.help {
                write!(f, "\n    help: {help}")?;
            }
        }
        Ok(())
    }
}

/// The closest of `candidates` to `name`, if any is close enough to be a likely typo.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::osa_distance(&name.to_lowercase(), &c.to_lowercase()),
                c,
            )
        })
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// Formats a duration as `1.23s` or `2m03s`.
pub fn fmt_duration(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.2}s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

/// A value shown in a message: quoted, and shortened when very long.
pub fn quote_value(value: &str) -> String {
    const MAX: usize = 120;
    let n = value.chars().count();
    if n <= MAX {
        format!("'{value}'")
    } else {
        let head: String = value.chars().take(MAX).collect();
        format!("'{head}…' ({n} characters)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_line_column_and_caret() {
        let text: Arc<str> = "name = \"x\"\n[source]\nulr = 1\n".into();
        let mut d = Diagnostics::new("p.toml".into(), text);
        d.push(
            Diagnostic::at(Some(20..23), "unknown key `ulr` in [source]")
                .with_help("did you mean `url`?"),
        );
        assert_eq!(
            d.to_string(),
            "p.toml has 1 error\np.toml:3:1: unknown key `ulr` in [source]\n    ulr = 1\n    ^\n    help: did you mean `url`?"
        );
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(suggest("ulr", ["url", "table", "key"]), Some("url"));
        assert_eq!(suggest("zzz", ["url", "table", "key"]), None);
    }
}
