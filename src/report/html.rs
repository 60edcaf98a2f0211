//! The report as one HTML page: the template (`page.html`) with its stylesheet
//! (`page.css`), the data as JSON and the script that draws it (`page.js`) put in. The
//! page loads nothing: no network, no other file.

use super::ReportData;
use crate::{Error, Result};

const TEMPLATE: &str = include_str!("page.html");
const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

/// The page of `data`.
pub fn render(data: &ReportData) -> Result<String> {
    let json = serde_json::to_string(data)
        .map_err(|e| Error::Internal(format!("the report's data as JSON: {e}")))?;
    Ok(fill(TEMPLATE, |name| match name {
        "title" => Some(escape_html(&data.pipeline)),
        "style" => Some(STYLE.to_string()),
        "script" => Some(SCRIPT.to_string()),
        "data" => Some(script_json(&json)),
        _ => None,
    }))
}

/// `template` with each `{{name}}` replaced by `value(name)`, in one pass: what a value
/// holds (a pipeline named `{{data}}`) is never read as a placeholder. An unknown name
/// stays as written.
fn fill(template: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len() + SCRIPT.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        match after
            .find("}}")
            .and_then(|close| Some((close, value(&after[..close])?)))
        {
            Some((close, v)) => {
                out.push_str(&v);
                rest = &after[close + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// JSON that can sit inside a `<script>` element: `<`, `>` and `&` are written as
/// `\u` escapes, so no `</script>` or `<!--` in a reason or an error can end the element
/// or change how it is read. In JSON they can only occur inside strings, where the
/// escapes mean the same characters. U+2028 and U+2029 are escaped too, for older
/// script parsers that end a line at them.
fn script_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Text made safe for HTML's text and attributes.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_in_a_script_element_cannot_end_it() {
        let json = serde_json::to_string("</script><!-- & \u{2028}").unwrap();
        let safe = script_json(&json);
        assert!(!safe.contains('<') && !safe.contains('>'), "{safe}");
        let back: String = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, "</script><!-- & \u{2028}");
    }

    #[test]
    fn fill_replaces_each_placeholder_once_and_never_inside_a_value() {
        let out = fill("<t>{{title}}</t>{{data}}{{other}}", |name| match name {
            "title" => Some("{{data}}".into()),
            "data" => Some("D".into()),
            _ => None,
        });
        assert_eq!(out, "<t>{{data}}</t>D{{other}}");
    }

    #[test]
    fn the_page_assets_hold_nothing_that_loads_or_ends_the_script() {
        for (name, text) in [
            ("page.html", TEMPLATE),
            ("page.css", STYLE),
            ("page.js", SCRIPT),
        ] {
            for bad in ["http://", "https://", "@import", "url(", "src="] {
                assert!(!text.contains(bad), "{name} holds {bad}");
            }
        }
        assert!(
            !SCRIPT.contains("</script"),
            "page.js would end its element"
        );
        assert!(!STYLE.contains("</style"), "page.css would end its element");
        // Every placeholder of the template is one `render` fills.
        let mut rest = TEMPLATE;
        while let Some(i) = rest.find("{{") {
            let name = &rest[i + 2..i + 2 + rest[i + 2..].find("}}").unwrap()];
            assert!(
                ["title", "style", "script", "data"].contains(&name),
                "{name}"
            );
            rest = &rest[i + 2..];
        }
    }
}
