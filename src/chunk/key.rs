//! A row's key as text: how messages name a row (`id=42`) and how the quarantine keeps
//! its key so `retry --rejects` can read the row again.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int16Type, Int32Type, Int64Type};
use arrow::record_batch::RecordBatch;

use super::KeyValue;
use crate::{Error, Result};

/// A key's parts as one text: the part itself for a one-column key, a JSON array of the
/// parts' texts for a composite key (`["7","b"]`, unambiguous whatever they hold).
/// `None` for no parts.
pub(crate) fn join_key(parts: Vec<String>) -> Option<String> {
    match parts.len() {
        0 => None,
        1 => parts.into_iter().next(),
        _ => Some(serde_json::Value::from(parts).to_string()),
    }
}

/// A key's columns for messages: `` `id` `` or `` (`tenant`, `id`) ``.
pub(crate) fn show_key(key: &[String]) -> String {
    let names: Vec<String> = key.iter().map(|k| format!("`{k}`")).collect();
    match names.as_slice() {
        [one] => one.clone(),
        many => format!("({})", many.join(", ")),
    }
}

/// Planning found rows whose key (or a part of it) is NULL: they would fall in no chunk.
pub(crate) fn null_key_error(here: &str, nulls: i64, key: &[String]) -> Error {
    let choose = if key.len() == 1 {
        "a non-null key column"
    } else {
        "non-null key columns"
    };
    Error::data(
        here,
        format!(
            "{nulls} rows have a NULL key {}; chunks are key ranges, so they would be skipped. Choose {choose}",
            show_key(key)
        ),
    )
}

/// The key at `row` as text, the way `read_keys` receives a key's part.
pub(crate) fn key_text(a: &dyn Array, row: usize) -> String {
    match a.data_type() {
        DataType::Int16 => a.as_primitive::<Int16Type>().value(row).to_string(),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(row).to_string(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::Utf8 => a.as_string::<i32>().value(row).to_string(),
        _ => crate::types::cast::value_text(a, row).unwrap_or_default(),
    }
}

/// Row `row`'s key in `batch` as text, as the quarantine keeps it and `read_keys` takes
/// it: the value of a one-column key, a JSON array of the parts' texts for a composite
/// key (`["7","b"]`, unambiguous whatever the parts hold). `None` when the batch lacks a
/// key column or a part is NULL.
pub(crate) fn row_key(batch: &RecordBatch, key: &[String], row: usize) -> Option<String> {
    // One column, the usual key, without a list to join: a chunk may key every row.
    if let [k] = key {
        let c = batch.column_by_name(k)?;
        return (!c.is_null(row)).then(|| key_text(c.as_ref(), row));
    }
    let parts = key
        .iter()
        .map(|k| {
            let c = batch.column_by_name(k)?;
            (!c.is_null(row)).then(|| key_text(c.as_ref(), row))
        })
        .collect::<Option<Vec<String>>>()?;
    join_key(parts)
}

/// Row `row` of `batch` named by its key for messages: `id=42`, `tenant=1, id=7` (a NULL
/// part shows as `NULL`). `None` when there is no key or the batch lacks a key column.
pub(crate) fn row_label(batch: &RecordBatch, key: &[String], row: usize) -> Option<String> {
    let parts = key
        .iter()
        .map(|k| {
            let c = batch.column_by_name(k)?;
            let v = crate::types::cast::value_text(c.as_ref(), row);
            Some(format!("{k}={}", v.as_deref().unwrap_or("NULL")))
        })
        .collect::<Option<Vec<_>>>()?;
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The parts of a key as [`row_key`] writes it, for a key of `n` columns.
pub(crate) fn key_parts(text: &str, n: usize) -> Option<Vec<String>> {
    if n == 1 {
        return Some(vec![text.to_string()]);
    }
    let parts: Vec<String> = serde_json::from_str(text).ok()?;
    (parts.len() == n).then_some(parts)
}

/// A key given as text parts (see [`key_parts`]) as a value to bind, each part an
/// integer where its column is (`int[i]`), else text. `None` when an integer part does
/// not parse: no row can have that key.
pub(crate) fn key_from_text(parts: &[String], int: &[bool]) -> Option<KeyValue> {
    let values = parts
        .iter()
        .zip(int)
        .map(|(p, &is_int)| {
            if is_int {
                p.parse().ok().map(KeyValue::Int)
            } else {
                Some(KeyValue::Text(p.clone()))
            }
        })
        .collect::<Option<Vec<_>>>()?;
    Some(KeyValue::from_parts(values))
}

/// The keys of quarantined rows (texts as [`row_key`] writes them; `None` entries are
/// skipped) as values to look up, for a key of columns `key` (`int` marks the integer
/// ones), and for each key text the index of its entry. A text that cannot be a key of
/// this source (written under another `key`, say) is an error naming it: the entry must
/// not be taken for a row that is gone.
pub(crate) fn parse_keys<'k>(
    keys: &'k [Option<String>],
    key: &[String],
    int: &[bool],
    here: &str,
) -> Result<(std::collections::HashMap<&'k str, usize>, Vec<KeyValue>)> {
    let mut wanted = std::collections::HashMap::new();
    let mut values = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let Some(k) = k.as_deref() else { continue };
        let Some(v) = key_parts(k, key.len()).and_then(|p| key_from_text(&p, int)) else {
            let example: Vec<&str> = int.iter().map(|i| if *i { "7" } else { "abc" }).collect();
            let expected = match example.as_slice() {
                [_] => "an integer".to_string(),
                _ => format!(
                    "a JSON array of {} texts, like {}",
                    key.len(),
                    serde_json::Value::from(example)
                ),
            };
            return Err(Error::data(
                here,
                format!(
                    "quarantined row key {k:?} cannot be a value of key {}: expected {expected}; was the pipeline's `key` changed since the row was rejected?",
                    show_key(key)
                ),
            ));
        };
        if wanted.insert(k, i).is_none() {
            values.push(v);
        }
    }
    Ok((wanted, values))
}

/// A key value as the text [`row_key`] gives, so a row read back by key finds the entry
/// that asked for it.
pub(crate) fn key_value_text(k: &KeyValue) -> String {
    let part = |p: &KeyValue| match p {
        KeyValue::Int(i) => i.to_string(),
        KeyValue::Text(t) => t.clone(),
        KeyValue::Tuple(_) => p.to_string(),
    };
    join_key(k.parts().iter().map(part).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantined_keys_parse_back_or_say_what_they_should_be() {
        let key = ["tenant".to_string(), "code".to_string()];
        let keys = [Some(r#"["7","a b"]"#.to_string()), None];
        let (wanted, values) = parse_keys(&keys, &key, &[true, false], "here").unwrap();
        assert_eq!(wanted.get(r#"["7","a b"]"#), Some(&0));
        assert_eq!(
            values,
            [KeyValue::Tuple(vec![
                KeyValue::Int(7),
                KeyValue::Text("a b".into())
            ])]
        );
        assert_eq!(key_value_text(&values[0]), r#"["7","a b"]"#);
        for bad in ["7", r#"["x","a"]"#, r#"["7"]"#] {
            let e = parse_keys(&[Some(bad.to_string())], &key, &[true, false], "here").unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "here: quarantined row key {bad:?} cannot be a value of key (`tenant`, `code`): expected a JSON array of 2 texts, like [\"7\",\"abc\"]; was the pipeline's `key` changed since the row was rejected?"
                )
            );
        }
        let e = parse_keys(&[Some("x".into())], &key[..1], &[true], "here").unwrap_err();
        assert!(e.to_string().contains("expected an integer"), "{e}");
    }
}
