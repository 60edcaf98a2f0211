//! CSV part files. They are written so that an empty string and NULL stay apart (`""`
//! quoted, NULL as the null marker unquoted), and read back with the rules the CSV
//! source reads files with, so a read-back compares what a reader of the file gets.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::config::{CsvOptions, FileFormat, Location, SourceConfig, Spanned, show_path};
use crate::source::{CsvSource, Source};
use crate::{Error, Result};

/// Writes CSV records. NULL is the first null marker, unquoted; a text is quoted when it
/// is empty, equals a null marker, or holds the delimiter, the quote or a line end, so
/// no text reads back as NULL or as another text.
pub(super) struct CsvPart {
    out: BufWriter<File>,
    delimiter: u8,
    quote: u8,
    null: String,
    markers: Vec<String>,
    record: Vec<u8>,
}

impl CsvPart {
    /// A writer into `out`, which writes the header (when `opts.header`) at once, so an
    /// empty part has one too.
    pub(super) fn new(
        out: BufWriter<File>,
        opts: &CsvOptions,
        schema: &SchemaRef,
        shown: &str,
    ) -> Result<Self> {
        let mut w = CsvPart {
            out,
            delimiter: opts.delimiter,
            quote: opts.quote,
            null: opts.null.first().cloned().unwrap_or_default(),
            markers: opts.null.clone(),
            record: Vec::new(),
        };
        if opts.header {
            let names: Vec<Option<&str>> = schema
                .fields()
                .iter()
                .map(|f| Some(f.name().as_str()))
                .collect();
            w.write_record(&names)
                .map_err(|e| Error::data(shown, e.to_string()))?;
        }
        Ok(w)
    }

    /// Writes `batch`'s rows, each value as arrow displays it (the text CSV readers
    /// parse); binary values as hex.
    pub(super) fn write(&mut self, batch: &RecordBatch, shown: &str) -> Result<()> {
        let options = FormatOptions::default();
        let formatters = batch
            .columns()
            .iter()
            .map(|a| ArrayFormatter::try_new(a.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::data(shown, e))?;
        let mut texts: Vec<String> = vec![String::new(); formatters.len()];
        for row in 0..batch.num_rows() {
            for (text, f) in texts.iter_mut().zip(&formatters) {
                text.clear();
                std::fmt::Write::write_fmt(text, format_args!("{}", f.value(row)))
                    .map_err(|e| Error::data(shown, e.to_string()))?;
            }
            let fields: Vec<Option<&str>> = batch
                .columns()
                .iter()
                .zip(&texts)
                .map(|(c, t)| (!c.is_null(row)).then_some(t.as_str()))
                .collect();
            self.write_record(&fields)
                .map_err(|e| Error::data(shown, e.to_string()))?;
        }
        Ok(())
    }

    fn write_record(&mut self, fields: &[Option<&str>]) -> std::io::Result<()> {
        self.record.clear();
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                self.record.push(self.delimiter);
            }
            match field {
                None => self.record.extend_from_slice(self.null.as_bytes()),
                Some(t) => {
                    let special = |b: &u8| {
                        *b == self.delimiter || *b == self.quote || *b == b'\n' || *b == b'\r'
                    };
                    let quoted = t.is_empty()
                        || t.as_bytes().iter().any(special)
                        || self.markers.iter().any(|m| m == t);
                    if !quoted {
                        self.record.extend_from_slice(t.as_bytes());
                        continue;
                    }
                    self.record.push(self.quote);
                    for &b in t.as_bytes() {
                        if b == self.quote {
                            self.record.push(b);
                        }
                        self.record.push(b);
                    }
                    self.record.push(self.quote);
                }
            }
        }
        self.record.push(b'\n');
        self.out.write_all(&self.record)
    }

    /// The file, flushed.
    pub(super) fn into_inner(self) -> std::result::Result<File, std::io::Error> {
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

/// Reads a CSV part file back into `schema` with the CSV source's strict rules: a quoted
/// empty field is the empty string, an unquoted null marker is NULL, and a record that
/// the source could not read fails the read-back.
pub(super) fn read_back(
    path: &Path,
    opts: &CsvOptions,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    let shown = show_path(path);
    let mut csv = opts.clone();
    // Columns by position: a target column may have any name, even one the source
    // keeps for itself.
    csv.columns = Some(
        (0..schema.fields().len())
            .map(|i| format!("c{i}"))
            .collect(),
    );
    if csv.header {
        csv.header = false;
        csv.skip_lines = 1;
    }
    let config = SourceConfig {
        url: Spanned {
            value: shown.clone(),
            span: None,
        },
        location: Location::Files {
            path: path.to_path_buf(),
            format: FileFormat::Csv,
        },
        table: None,
        key: None,
        csv,
        types: Vec::new(),
        db: Default::default(),
    };
    let source = CsvSource::open(&config, vec![path.to_path_buf()])?;
    let mut out = Vec::new();
    for chunk in source.plan(u64::MAX)? {
        for batch in source.read(&chunk, 8192)? {
            let batch = batch?;
            let columns = schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| typed(batch.column(i), f.data_type(), &shown))
                .collect::<Result<Vec<_>>>()?;
            out.push(RecordBatch::try_new(schema.clone(), columns).map_err(|e| {
                Error::data(&shown, format!("reads back with another schema: {e}"))
            })?);
        }
        if let Some(bad) = source.unreadable(&chunk).first() {
            return Err(Error::data(
                &bad.location,
                format!("cannot be read back: {}", bad.reason),
            ));
        }
    }
    Ok(out)
}

/// A column of text as `ty`, as it was written: hex for binary, else arrow's parse.
fn typed(text: &ArrayRef, ty: &DataType, shown: &str) -> Result<ArrayRef> {
    let fail = |e: String| Error::data(shown, format!("cannot be read back: {e}"));
    match ty {
        DataType::Utf8 => Ok(text.clone()),
        DataType::Binary => {
            let t = text.as_string::<i32>();
            let values = t
                .iter()
                .map(|v| v.map(hex).transpose())
                .collect::<std::result::Result<Vec<_>, String>>()
                .map_err(fail)?;
            Ok(Arc::new(BinaryArray::from_iter(values)))
        }
        _ => {
            let options = arrow::compute::CastOptions {
                safe: false,
                ..Default::default()
            };
            arrow::compute::cast_with_options(text, ty, &options).map_err(|e| fail(e.to_string()))
        }
    }
}

fn hex(t: &str) -> std::result::Result<Vec<u8>, String> {
    if !t.len().is_multiple_of(2) || !t.is_ascii() {
        return Err(format!("'{t}' is not hex"));
    }
    (0..t.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&t[i..i + 2], 16).map_err(|_| format!("'{t}' is not hex")))
        .collect()
}
