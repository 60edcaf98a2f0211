//! A step's SQL split into statements, each with the line it starts on, so that each
//! statement's completion can be recorded and an error can name its place.

use std::ops::Range;

/// One SQL statement of a step's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The statement, without its terminating `;`.
    pub sql: String,
    /// The 1-based line it starts on.
    pub line: usize,
}

/// Splits `text[range]` at each `;` that is outside quotes (`'…'`, `"…"`, `` `…` ``),
/// comments (`-- …`, `/* … */`) and PostgreSQL dollar quotes (`$$…$$`, `$tag$…$tag$`).
/// Comment-only pieces are dropped. An unclosed quote or comment is an error at the
/// offset where it opens.
pub fn split(text: &str, range: Range<usize>) -> Result<Vec<Statement>, (usize, String)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = range.start;
    let end = range.end;
    // Whether the current piece holds anything but blanks and comments.
    let mut code_at: Option<usize> = None;
    while i < end {
        let c = bytes[i];
        match c {
            b'\'' | b'"' | b'`' => {
                code_at.get_or_insert(i);
                let open = i;
                i += 1;
                loop {
                    if i >= end {
                        return Err((open, format!("unclosed {} quote", c as char)));
                    }
                    if bytes[i] == c {
                        // A doubled quote stands for itself.
                        if i + 1 < end && bytes[i + 1] == c {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    if bytes[i] == b'\\' && c != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < end && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let open = i;
                match text[i + 2..end].find("*/") {
                    Some(k) => i = i + 2 + k + 2,
                    None => return Err((open, "unclosed /* comment".into())),
                }
            }
            b'$' => {
                code_at.get_or_insert(i);
                let tag_end = text[i + 1..end]
                    .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                    .map(|k| i + 1 + k);
                match tag_end {
                    Some(t) if bytes[t] == b'$' && !bytes[i + 1].is_ascii_digit() => {
                        let tag = &text[i..=t];
                        match text[t + 1..end].find(tag) {
                            Some(k) => i = t + 1 + k + tag.len(),
                            None => return Err((i, format!("unclosed {tag} quote"))),
                        }
                    }
                    _ => i += 1,
                }
            }
            b';' => {
                if let Some(at) = code_at {
                    out.push(piece(text, at, i));
                }
                code_at = None;
                i += 1;
            }
            _ => {
                if !c.is_ascii_whitespace() {
                    code_at.get_or_insert(i);
                }
                i += 1;
            }
        }
    }
    if let Some(at) = code_at {
        out.push(piece(text, at, end));
    }
    Ok(out)
}

fn piece(text: &str, from: usize, to: usize) -> Statement {
    Statement {
        sql: text[from..to].trim_end().to_string(),
        line: text[..from].matches('\n').count() + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqls(text: &str) -> Vec<(String, usize)> {
        split(text, 0..text.len())
            .unwrap()
            .into_iter()
            .map(|s| (s.sql, s.line))
            .collect()
    }

    #[test]
    fn splits_outside_quotes_comments_and_dollar_quotes() {
        let text = "-- lead; comment\nCREATE TABLE a (x text DEFAULT ';');\n/* ; */ INSERT INTO a VALUES ('it''s;');\nCREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;\n-- trailing\n";
        assert_eq!(
            sqls(text),
            [
                ("CREATE TABLE a (x text DEFAULT ';')".to_string(), 2),
                ("INSERT INTO a VALUES ('it''s;')".to_string(), 3),
                (
                    "CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql"
                        .to_string(),
                    4
                ),
            ]
        );
        assert_eq!(sqls("SELECT $1;"), [("SELECT $1".to_string(), 1)]);
        assert_eq!(
            split("x 'open", 0..7),
            Err((2, "unclosed ' quote".to_string()))
        );
    }
}
