//! Sources: something that declares a schema, plans itself into chunks, and reads one
//! chunk as Arrow batches.

pub mod capture;
mod csv;
mod parquet;

use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

pub use self::csv::CsvSource;
pub use self::parquet::ParquetSource;
use crate::chunk::Chunk;
use crate::config::{FileFormat, SourceConfig};
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
        arrow::datatypes::Field::new(POSITION_FILE, arrow::datatypes::DataType::Utf8, false),
        arrow::datatypes::Field::new(place, arrow::datatypes::DataType::Int64, false),
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
        crate::types::cast::value_text(file.as_ref(), row)?,
        crate::types::cast::value_text(at.as_ref(), row)?
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
            if let Some(k) = crate::chunk::key::row_key(&b, key, row)
                && !places.contains_key(&k)
            {
                let label = crate::chunk::key::row_label(&b, key, row).unwrap_or_else(|| k.clone());
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
                if let Some((_, at)) =
                    crate::chunk::key::row_key(&b, key, row).and_then(|k| places.get_mut(&k))
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

/// Opens a file source: the CSV or Parquet files `path` (a file or a glob) names.
pub fn open_files(
    config: &SourceConfig,
    path: &std::path::Path,
    format: FileFormat,
) -> Result<Arc<dyn Source>> {
    let files = expand_glob(path)?;
    Ok(match format {
        FileFormat::Csv => Arc::new(CsvSource::open(config, files)?),
        FileFormat::Parquet => Arc::new(ParquetSource::open(config, files)?),
    })
}

/// The error for a source table `table` that does not exist, at `shown`: the closest
/// of the `names` there are, or all of them. `within` (`("schema", "public")`) qualifies
/// the table in the message, and names where it was looked for when there are none.
pub(crate) fn no_such_table(
    shown: &str,
    within: Option<(&str, &str)>,
    table: &str,
    names: &[String],
) -> Error {
    let hint = match crate::config::suggest(table, names.iter().map(String::as_str)) {
        Some(best) => format!("did you mean `{best}`?"),
        None if names.is_empty() => match within {
            Some((kind, name)) => format!("{kind} `{name}` has no tables"),
            None => "it has no tables".to_string(),
        },
        None => format!("tables are: {}", names.join(", ")),
    };
    let shown_table = match within {
        Some((_, name)) => format!("{name}.{table}"),
        None => table.to_string(),
    };
    Error::data(
        shown,
        format!("table `{shown_table}` does not exist; {hint}"),
    )
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
        crate::types::cast::cast_batch(batch, &self.schema, here, |row| {
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
