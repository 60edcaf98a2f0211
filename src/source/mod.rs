//! Sources: something that declares a schema, plans itself into chunks, and reads one
//! chunk as Arrow batches.

mod csv;
mod mysql;
mod parquet;
mod postgres;
mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int16Type, Int32Type, Int64Type, SchemaRef};
use arrow::record_batch::RecordBatch;

pub use self::csv::CsvSource;
pub use self::mysql::MysqlSource;
pub use self::parquet::ParquetSource;
pub use self::postgres::PostgresSource;
pub use self::sqlite::SqliteSource;
use crate::config::{FileFormat, Location, SourceConfig};
use crate::db::IoRuntime;
use crate::plan::{Chunk, KeyValue};
use crate::{Error, Result};

/// The batches of one chunk, in source order.
pub type BatchIter = Box<dyn Iterator<Item = Result<RecordBatch>> + Send>;

/// A source record that could not be read into a row at all: a CSV line with the wrong
/// number of fields, bytes that are not UTF-8, a database value whose storage does not fit
/// its column. It is counted as read and rejected, and kept whole in the quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// Where it is: `orders.csv line 17`.
    pub location: String,
    /// Its first line in the file (0 for a table row).
    pub line: u64,
    /// Its key, for a table row.
    pub key: Option<String>,
    /// The column whose value is at fault, when one is.
    pub column: Option<String>,
    /// What is wrong.
    pub reason: String,
    /// The record as it is in the source (invalid bytes replaced by U+FFFD); a table row
    /// as a JSON object of its stored values.
    pub raw: String,
    /// The record's exact bytes, when they are not UTF-8 text (so `raw` is not them):
    /// kept in the quarantine beside `raw`.
    pub raw_bytes: Option<Vec<u8>>,
}

/// The unreadable records of each chunk, found while it was read and kept for
/// [`Source::unreadable`]. Shared between a source and its chunk readers.
#[derive(Debug, Clone, Default)]
pub(crate) struct SetAside(
    Arc<std::sync::Mutex<std::collections::HashMap<usize, Vec<Unreadable>>>>,
);

impl SetAside {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut std::collections::HashMap<usize, Vec<Unreadable>>) -> T,
    ) -> T {
        // A reader that panicked left whole entries behind: the map stays usable.
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Forgets `chunk`'s records: a redone chunk finds them again.
    pub(crate) fn clear(&self, chunk: usize) {
        self.with(|m| m.remove(&chunk));
    }

    /// Adds a record of `chunk`.
    pub(crate) fn push(&self, chunk: usize, u: Unreadable) {
        self.with(|m| m.entry(chunk).or_default().push(u));
    }

    /// `chunk`'s records.
    pub(crate) fn get(&self, chunk: usize) -> Vec<Unreadable> {
        self.with(|m| m.get(&chunk).cloned().unwrap_or_default())
    }
}

/// A table or set of files to read.
///
/// Implementations are synchronous and shared between chunk workers; a database source
/// runs its queries on the [`IoRuntime`] and hands batches over a channel.
pub trait Source: Send + Sync {
    /// Where the data comes from, redacted, for messages: `sqlite://shop.db table users`.
    fn describe(&self) -> String;

    /// The schema every batch has.
    fn schema(&self) -> SchemaRef;

    /// Splits the source into chunks of about `rows_per_chunk` rows. The chunks cover every
    /// row exactly once.
    fn plan(&self, rows_per_chunk: u64) -> Result<Vec<Chunk>>;

    /// Reads one chunk in batches of at most `batch_rows` rows.
    fn read(&self, chunk: &Chunk, batch_rows: usize) -> Result<BatchIter>;

    /// Reads one chunk like [`Source::read`], but only the columns `used` marks (by
    /// position in [`Source::schema`]) hold their values; the others are NULL, and
    /// nullable in the batches' schema. The server then neither formats nor sends them.
    /// A value in a column left out is not read, so it cannot make its row unreadable.
    /// `None` when the source reads whole rows only; read with [`Source::read`] then.
    fn read_used(
        &self,
        _chunk: &Chunk,
        _batch_rows: usize,
        _used: &[bool],
    ) -> Result<Option<BatchIter>> {
        Ok(None)
    }

    /// The records of `chunk` that could not be read into rows, found while its batches
    /// were read; they are in no batch. Call after the chunk's batches are read.
    fn unreadable(&self, _chunk: &Chunk) -> Vec<Unreadable> {
        Vec::new()
    }

    /// Names row `row` (0-based within `chunk`) for messages, e.g. `orders.csv line 17`.
    fn locate(&self, chunk: &Chunk, row: u64) -> String;

    /// The column(s) that identify rows, in key order; empty when there are none.
    fn key(&self) -> &[String];

    /// Reads the rows with these key values again (keys as text, see [`row_key`];
    /// `None` entries are skipped), for `retry --rejects`. Returns the rows found and,
    /// for each, the index of the key it matched. `None` when the source cannot look
    /// rows up by key.
    fn read_keys(&self, _keys: &[Option<String>]) -> Result<Option<(RecordBatch, Vec<usize>)>> {
        Ok(None)
    }

    /// Reads records that were set aside again from their exact bytes, under the
    /// source's options now, for `retry --rejects`: each of `records` is the bytes, the
    /// line they started on and where they were. For each, a one-row batch in
    /// [`Source::schema`], or why it still cannot be read. `None` when the source cannot
    /// read its records apart from its files.
    #[allow(clippy::type_complexity)]
    fn reread(
        &self,
        _records: &[(Vec<u8>, u64, String)],
    ) -> Result<Option<Vec<std::result::Result<RecordBatch, Unreadable>>>> {
        Ok(None)
    }

    /// Whether messages name a row by its key alone (databases) rather than by its
    /// position in a file.
    fn names_rows_by_key(&self) -> bool {
        false
    }

    /// The columns a file source adds to every row for its place in the source
    /// ([`POSITION_FILE`] and [`POSITION_LINE`] or [`POSITION_ROW`]); empty for a
    /// database. With no declared `key` they are the key: a row is known by where it is.
    fn position(&self) -> &[String] {
        &[]
    }
}

/// The column a file source adds to each row for the file it comes from: its path below
/// the folder all of the source's files share (the file name alone for one file).
pub const POSITION_FILE: &str = "_rowshift_file";
/// The column a CSV source adds to each row for the 1-based line its record starts on (a
/// quoted field can span lines).
pub const POSITION_LINE: &str = "_rowshift_line";
/// The column a Parquet source adds to each row for its 1-based row number in its file.
pub const POSITION_ROW: &str = "_rowshift_row";

/// Each file's name as [`POSITION_FILE`] holds it: its path below the folder all of
/// `files` share, with `/` between folders, so it does not depend on the working
/// directory or where the pipeline file is.
pub(crate) fn position_names(files: &[PathBuf]) -> Vec<String> {
    let mut common: Option<&std::path::Path> = files.first().and_then(|f| f.parent());
    for f in files {
        while let Some(c) = common {
            if f.starts_with(c) {
                break;
            }
            common = c.parent();
        }
    }
    files
        .iter()
        .map(|f| {
            let rel = common.and_then(|c| f.strip_prefix(c).ok()).unwrap_or(f);
            rel.components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect()
}

/// The position columns of a file source whose second one is `place`
/// ([`POSITION_LINE`] or [`POSITION_ROW`]): the file as text, the place as bigint. A
/// source column with either name is refused, naming both: the two must not be
/// confused.
pub(crate) fn position_fields<'n>(
    place: &str,
    mut columns: impl Iterator<Item = &'n str>,
    here: &str,
) -> Result<Vec<arrow::datatypes::Field>> {
    if let Some(clash) = columns.find(|c| *c == POSITION_FILE || *c == place) {
        let what = if clash == POSITION_FILE {
            "the file each row comes from"
        } else if place == POSITION_LINE {
            "the line each record starts on"
        } else {
            "each row's number in its file"
        };
        return Err(Error::data(
            here,
            format!(
                "source column `{clash}` has the name of the column rowshift adds for {what} (`{POSITION_FILE}`, `{place}`); rename the source column (for a CSV file: header = false with columns = [...], and skip_lines = 1 to pass over the header)"
            ),
        ));
    }
    Ok(vec![
        arrow::datatypes::Field::new(POSITION_FILE, DataType::Utf8, false),
        arrow::datatypes::Field::new(place, DataType::Int64, false),
    ])
}

/// Where row `row` of `batch` is in the source, from its position columns:
/// `dup.csv line 3`, `events.parquet row 7`. `None` for a source without them.
pub(crate) fn place(source: &dyn Source, batch: &RecordBatch, row: usize) -> Option<String> {
    let [file, at] = source.position() else {
        return None;
    };
    let file = batch.column_by_name(file)?;
    let at = batch.column_by_name(at)?;
    let word = if source.position()[1] == POSITION_LINE {
        "line"
    } else {
        "row"
    };
    Some(format!(
        "{} {word} {}",
        crate::transform::cast::value_text(file.as_ref(), row)?,
        crate::transform::cast::value_text(at.as_ref(), row)?
    ))
}

/// The key values of a file source's `chunk` that other rows of the source hold too (up
/// to three), each with every place that holds it: `id=2 at dup.csv line 3 and dup.csv
/// line 4`. Reads the whole source, so it is for a chunk that failed. Empty for a source
/// without a declared key.
pub(crate) fn repeated_places(source: &dyn Source, chunk: &Chunk) -> Result<Vec<String>> {
    let key = source.key();
    if key.is_empty() || key == source.position() || source.position().is_empty() {
        return Ok(Vec::new());
    }
    // Chunk ids of their own: a file source keeps per-chunk state under a chunk's id,
    // which a run's workers may be using.
    const SCAN_IDS: usize = usize::MAX / 2;
    let mut mine = chunk.clone();
    mine.id = SCAN_IDS;
    let mut places: std::collections::HashMap<String, (String, Vec<String>)> = Default::default();
    let mut order = Vec::new();
    for b in source.read(&mine, 8192)? {
        let b = b?;
        for row in 0..b.num_rows() {
            if let Some(k) = row_key(&b, key, row)
                && !places.contains_key(&k)
            {
                let label = row_label(&b, key, row).unwrap_or_else(|| k.clone());
                places.insert(k.clone(), (label, Vec::new()));
                order.push(k);
            }
        }
    }
    for (i, mut c) in source.plan(1 << 20)?.into_iter().enumerate() {
        c.id = SCAN_IDS + 1 + i;
        for b in source.read(&c, 8192)? {
            let b = b?;
            for row in 0..b.num_rows() {
                if let Some((_, at)) = row_key(&b, key, row).and_then(|k| places.get_mut(&k))
                    && let Some(p) = place(source, &b, row)
                {
                    at.push(p);
                }
            }
        }
    }
    Ok(order
        .iter()
        .filter_map(|k| {
            let (label, at) = &places[k];
            (at.len() > 1).then(|| {
                let (last, rest) = at.split_last().expect("more than one");
                format!("{label} at {} and {last}", rest.join(", "))
            })
        })
        .take(3)
        .collect())
}

/// `batch` with the position columns of `schema` (its last two) appended: `file` on
/// every row, and each row's line or row number from `places`.
pub(crate) fn with_position(
    batch: RecordBatch,
    schema: &SchemaRef,
    file: &str,
    places: Vec<i64>,
) -> Result<RecordBatch> {
    if places.len() != batch.num_rows() {
        return Err(Error::Internal(format!(
            "{} row positions for {} rows",
            places.len(),
            batch.num_rows()
        )));
    }
    let mut columns = batch.columns().to_vec();
    let files: arrow::array::ArrayRef = Arc::new(arrow::array::StringArray::from_iter_values(
        std::iter::repeat_n(file, places.len()),
    ));
    columns.push(files);
    columns.push(Arc::new(arrow::array::Int64Array::from(places)));
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::Internal(e.to_string()))
}

/// Opens the source a pipeline names.
pub fn open(config: &SourceConfig, io: &IoRuntime) -> Result<Arc<dyn Source>> {
    Ok(match &config.location {
        Location::Sqlite { path } => Arc::new(SqliteSource::open(config, path, io)?),
        Location::Postgres { url, schema } => {
            Arc::new(PostgresSource::open(config, url, schema, io)?)
        }
        Location::Mysql { url, schema } => Arc::new(MysqlSource::open(config, url, schema, io)?),
        Location::Files { path, format } => {
            let files = expand_glob(path)?;
            match format {
                FileFormat::Csv => Arc::new(CsvSource::open(config, files)?),
                FileFormat::Parquet => Arc::new(ParquetSource::open(config, files)?),
            }
        }
    })
}

/// The files a path or glob names, sorted so the plan is the same on every run.
fn expand_glob(pattern: &std::path::Path) -> Result<Vec<PathBuf>> {
    let text = pattern.to_string_lossy();
    if !text.contains(['*', '?', '[']) {
        if !pattern.is_file() {
            return Err(Error::io(
                pattern,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        return Ok(vec![pattern.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = glob::glob(&text)
        .map_err(|e| Error::data(text.to_string(), format!("invalid glob: {e}")))?
        .filter_map(|p| p.ok())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::data(text.to_string(), "the glob matches no file"));
    }
    Ok(files)
}

/// Checks that the declared key columns exist in `schema`.
fn check_key(config: &SourceConfig, schema: &SchemaRef, describe: &str) -> Result<Vec<String>> {
    let Some(key) = &config.key else {
        return Ok(Vec::new());
    };
    key_positions(
        &key.value,
        schema.fields().iter().map(|f| f.name().as_str()),
        describe,
    )?;
    Ok(key.value.clone())
}

/// Where each key column stands among a table's `columns`; an error naming the first
/// one that is not there, and the columns that are.
pub(crate) fn key_positions<'c>(
    key: &[String],
    columns: impl Iterator<Item = &'c str> + Clone,
    here: &str,
) -> Result<Vec<usize>> {
    key.iter()
        .map(|k| {
            columns.clone().position(|c| c == k).ok_or_else(|| {
                let names: Vec<&str> = columns.clone().collect();
                Error::data(
                    here,
                    format!(
                        "key column `{k}` does not exist; columns are: {}",
                        names.join(", ")
                    ),
                )
            })
        })
        .collect()
}

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
        _ => crate::transform::cast::value_text(a, row).unwrap_or_default(),
    }
}

/// Row `row`'s key in `batch` as text, as the quarantine keeps it and `read_keys` takes
/// it: the value of a one-column key, a JSON array of the parts' texts for a composite
/// key (`["7","b"]`, unambiguous whatever the parts hold). `None` when the batch lacks a
/// key column or a part is NULL.
pub(crate) fn row_key(batch: &RecordBatch, key: &[String], row: usize) -> Option<String> {
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
            let v = crate::transform::cast::value_text(c.as_ref(), row);
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

/// Casts batches decoded in a database's own types to the declared schema (on the task
/// that reads them).
pub(crate) struct SchemaCast {
    raw: SchemaRef,
    schema: SchemaRef,
}

impl SchemaCast {
    pub(crate) fn new(raw: &SchemaRef, schema: &SchemaRef) -> Self {
        SchemaCast {
            raw: raw.clone(),
            schema: schema.clone(),
        }
    }

    pub(crate) fn cast(&self, batch: RecordBatch, here: &str) -> Result<RecordBatch> {
        if self.raw == self.schema {
            return Ok(batch);
        }
        crate::transform::cast::cast_batch(batch, &self.schema, here, |row| {
            format!("{here}, batch row {}", row + 1)
        })
    }
}

/// What a database source reads when only some columns need values (see
/// [`Source::read_used`]): its select list with `NULL` in place of the others, and its
/// schemas with those columns nullable.
pub(crate) struct Projection {
    /// `a, NULL, c`.
    pub(crate) list: String,
    /// The schema the rows decode into.
    pub(crate) raw: SchemaRef,
    /// The schema of the batches handed out.
    pub(crate) schema: SchemaRef,
}

impl Projection {
    /// `exprs` selects each column of `raw` (and of `schema`, its declared types).
    pub(crate) fn new(
        exprs: &[String],
        raw: &SchemaRef,
        schema: &SchemaRef,
        used: &[bool],
    ) -> Result<Projection> {
        if used.len() != exprs.len() {
            return Err(Error::Internal(format!(
                "{} columns marked used or not, the source has {}",
                used.len(),
                exprs.len()
            )));
        }
        let nullable = |s: &SchemaRef| -> SchemaRef {
            let fields: Vec<arrow::datatypes::Field> = s
                .fields()
                .iter()
                .zip(used)
                .map(|(f, &u)| f.as_ref().clone().with_nullable(f.is_nullable() || !u))
                .collect();
            Arc::new(arrow::datatypes::Schema::new(fields))
        };
        let list = exprs
            .iter()
            .zip(used)
            .map(|(e, &u)| if u { e.as_str() } else { "NULL" })
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Projection {
            list,
            raw: nullable(raw),
            schema: nullable(schema),
        })
    }
}

/// The batches a reading task sends, received on a chunk worker's thread.
pub(crate) struct ChannelIter(pub(crate) tokio::sync::mpsc::Receiver<Result<RecordBatch>>);

impl Iterator for ChannelIter {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.blocking_recv()
    }
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
