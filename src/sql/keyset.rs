//! Keyset SQL shared by the database sources and targets: conditions on a key of one or
//! more columns.
//!
//! A composite key is compared as a row value, `(a, b) > (1, 'x')`, which SQLite,
//! PostgreSQL and MySQL/MariaDB all evaluate part by part and serve from an index on
//! `(a, b)`. A one-column key is written plainly, `a > 1`, so plans and statements for it
//! stay what they were before composite keys.

use crate::chunk::{Chunk, ChunkRange, KeyValue};
use crate::{Error, Result};

/// Renders a key value's part as SQL: a literal, or a placeholder that binds it.
pub(crate) type Render<'r> = &'r mut dyn FnMut(&KeyValue) -> Result<String>;

/// The key columns of one table, in one database's SQL.
#[derive(Debug, Clone)]
pub(crate) struct KeySql {
    /// Each column, quoted.
    quoted: Vec<String>,
    /// Each column as compared with bounds (text in byte order), quoted.
    compared: Vec<String>,
}

impl KeySql {
    /// Key columns `quoted`, compared as `compared` (same length, same order).
    pub(crate) fn new(quoted: Vec<String>, compared: Vec<String>) -> KeySql {
        debug_assert_eq!(quoted.len(), compared.len());
        KeySql { quoted, compared }
    }

    /// The same key compared as stored, for equality lookups: the columns' own
    /// collations keep their indexes usable, and equal text is equal in any
    /// deterministic collation.
    pub(crate) fn plain(&self) -> KeySql {
        KeySql::new(self.quoted.clone(), self.quoted.clone())
    }

    /// How many columns the key has.
    pub(crate) fn len(&self) -> usize {
        self.quoted.len()
    }

    /// The key as compared: `a` or `(a, b)`.
    pub(crate) fn lhs(&self) -> String {
        row(&self.compared)
    }

    /// `ORDER BY` list in key order.
    pub(crate) fn order_by(&self) -> String {
        self.compared.join(", ")
    }

    /// Every key column is set.
    pub(crate) fn not_null(&self) -> String {
        self.quoted
            .iter()
            .map(|c| format!("{c} IS NOT NULL"))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// Some key column is NULL: the rows no chunk range holds.
    pub(crate) fn any_null(&self) -> String {
        self.quoted
            .iter()
            .map(|c| format!("{c} IS NULL"))
            .collect::<Vec<_>>()
            .join(" OR ")
    }

    /// `value` as the right-hand side of a comparison with [`Self::lhs`].
    pub(crate) fn rhs(&self, value: &KeyValue, render: Render<'_>) -> Result<String> {
        let parts = value.parts();
        if parts.len() != self.len() {
            return Err(Error::Internal(format!(
                "key value {value} has {} parts, the key has {} columns",
                parts.len(),
                self.len()
            )));
        }
        let parts = parts.iter().map(&mut *render).collect::<Result<Vec<_>>>()?;
        Ok(row(&parts))
    }

    /// Conditions for `lo < key <= hi` (a missing bound is open), NULL keys excluded,
    /// joined with `AND`.
    pub(crate) fn range(
        &self,
        lo: Option<&KeyValue>,
        hi: Option<&KeyValue>,
        render: Render<'_>,
    ) -> Result<String> {
        let mut conds = vec![self.not_null()];
        let k = self.lhs();
        if let Some(lo) = lo {
            conds.push(format!("{k} > {}", self.rhs(lo, render)?));
        }
        if let Some(hi) = hi {
            conds.push(format!("{k} <= {}", self.rhs(hi, render)?));
        }
        Ok(conds.join(" AND "))
    }

    /// `key IN (...)` for `keys` (not empty).
    pub(crate) fn one_of(&self, keys: &[KeyValue], render: Render<'_>) -> Result<String> {
        let values = keys
            .iter()
            .map(|k| self.rhs(k, render))
            .collect::<Result<Vec<_>>>()?;
        Ok(format!("{} IN ({})", self.lhs(), values.join(", ")))
    }

    /// A query for the key of the row `offset` rows past `lo` in key order (from the
    /// start without `lo`), as the key columns: the next chunk boundary. It walks the
    /// key's index without sorting, like the chunk reads.
    pub(crate) fn boundary(
        &self,
        table: &str,
        selected: &[String],
        lo: Option<&KeyValue>,
        offset: u64,
        render: Render<'_>,
    ) -> Result<String> {
        // Aliased, so that `ORDER BY "id"` sorts by the column, served by its index, and
        // not by a selected `"id"::int8` that PostgreSQL would otherwise take it for.
        let selected: Vec<String> = selected
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s} AS _rowshift_k{i}"))
            .collect();
        Ok(format!(
            "SELECT {} FROM {table} WHERE {} ORDER BY {} LIMIT 1 OFFSET {offset}",
            selected.join(", "),
            self.range(lo, None, render)?,
            self.order_by()
        ))
    }
}

/// The chunks keyset planning finds, boundary by boundary: each full chunk ends at the
/// key `rows_per_chunk` rows past the previous boundary, the last one takes the rest and
/// is left open-ended, so rows added after planning are not lost.
pub(crate) struct KeyChunks {
    chunks: Vec<Chunk>,
    lo: Option<KeyValue>,
    rows_per_chunk: u64,
}

impl KeyChunks {
    pub(crate) fn new(rows_per_chunk: u64) -> KeyChunks {
        KeyChunks {
            chunks: Vec::new(),
            lo: None,
            rows_per_chunk,
        }
    }

    /// The previous boundary (`None` before the first).
    pub(crate) fn lo(&self) -> Option<&KeyValue> {
        self.lo.as_ref()
    }

    /// A full chunk ends at `hi`.
    pub(crate) fn boundary(&mut self, hi: KeyValue) {
        self.chunks.push(Chunk {
            id: self.chunks.len(),
            range: ChunkRange::Keys {
                lo: self.lo.clone(),
                hi: Some(hi.clone()),
            },
            rows: Some(self.rows_per_chunk),
        });
        self.lo = Some(hi);
    }

    /// No boundary past the last one: `tail` rows are left after it.
    pub(crate) fn finish(mut self, tail: u64) -> Vec<Chunk> {
        if tail > 0 {
            self.chunks.push(Chunk {
                id: self.chunks.len(),
                range: ChunkRange::Keys {
                    lo: self.lo,
                    hi: None,
                },
                rows: Some(tail),
            });
        } else if let Some(ChunkRange::Keys { hi, .. }) =
            self.chunks.last_mut().map(|c| &mut c.range)
        {
            *hi = None;
        }
        self.chunks
    }
}

/// Renders each key part as a `?` placeholder, collecting the part in `binds` to bind
/// in order.
pub(crate) fn marks(binds: &mut Vec<KeyValue>) -> impl FnMut(&KeyValue) -> Result<String> + '_ {
    |v| {
        binds.push(v.clone());
        Ok("?".to_string())
    }
}

/// `a` for one item, `(a, b)` for several.
fn row(items: &[String]) -> String {
    match items {
        [one] => one.clone(),
        many => format!("({})", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literal(v: &KeyValue) -> Result<String> {
        Ok(match v {
            KeyValue::Int(i) => i.to_string(),
            KeyValue::Text(t) => format!("'{t}'"),
            KeyValue::Tuple(_) => unreachable!(),
        })
    }

    #[test]
    fn one_column_keys_are_compared_plainly_and_composite_keys_as_row_values() {
        let one = KeySql::new(vec!["\"id\"".into()], vec!["\"id\"".into()]);
        assert_eq!(
            one.range(
                Some(&KeyValue::Int(5)),
                Some(&KeyValue::Int(9)),
                &mut literal
            )
            .unwrap(),
            "\"id\" IS NOT NULL AND \"id\" > 5 AND \"id\" <= 9"
        );
        let two = KeySql::new(
            vec!["\"t\"".into(), "\"n\"".into()],
            vec!["\"t\"".into(), "\"n\" COLLATE \"C\"".into()],
        );
        let lo = KeyValue::Tuple(vec![KeyValue::Int(1), KeyValue::Text("b".into())]);
        assert_eq!(
            two.range(Some(&lo), None, &mut literal).unwrap(),
            "\"t\" IS NOT NULL AND \"n\" IS NOT NULL AND (\"t\", \"n\" COLLATE \"C\") > (1, 'b')"
        );
        assert_eq!(
            two.one_of(&[lo.clone(), lo.clone()], &mut literal).unwrap(),
            "(\"t\", \"n\" COLLATE \"C\") IN ((1, 'b'), (1, 'b'))"
        );
        let err = two
            .range(None, Some(&KeyValue::Int(1)), &mut literal)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "internal error (this is a bug in rowshift): key value 1 has 1 parts, the key has 2 columns"
        );
    }

    #[test]
    fn planned_chunks_cover_every_key_and_the_last_is_open_ended() {
        let keys = |chunks: &[Chunk]| -> Vec<(Option<KeyValue>, Option<KeyValue>, Option<u64>)> {
            chunks
                .iter()
                .map(|c| match &c.range {
                    ChunkRange::Keys { lo, hi } => (lo.clone(), hi.clone(), c.rows),
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        let int = |i| Some(KeyValue::Int(i));
        // 25 rows in chunks of 10: two boundaries, 5 rows after them.
        let mut p = KeyChunks::new(10);
        p.boundary(KeyValue::Int(10));
        p.boundary(KeyValue::Int(20));
        assert_eq!(p.lo(), int(20).as_ref());
        assert_eq!(
            keys(&p.finish(5)),
            [
                (None, int(10), Some(10)),
                (int(10), int(20), Some(10)),
                (int(20), None, Some(5))
            ]
        );
        // Exactly 20 rows: the last full chunk becomes open-ended.
        let mut p = KeyChunks::new(10);
        p.boundary(KeyValue::Int(10));
        p.boundary(KeyValue::Int(20));
        assert_eq!(
            keys(&p.finish(0)),
            [(None, int(10), Some(10)), (int(10), None, Some(10))]
        );
        // An empty table plans no chunk; a small one plans one open chunk.
        assert!(KeyChunks::new(10).finish(0).is_empty());
        assert_eq!(keys(&KeyChunks::new(10).finish(3)), [(None, None, Some(3))]);
    }
}
