//! CSV files, split into chunks at record boundaries.
//!
//! Planning scans each file once with `csv-core`, the same state machine the Arrow reader
//! uses, so a newline inside a quoted field never starts a chunk. The scan also yields the
//! exact record count and first line number of every chunk.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use csv_core::{ReadRecordResult, Reader as CoreReader, ReaderBuilder as CoreBuilder};

use std::collections::HashMap;
use std::sync::Mutex;

use super::{BatchIter, Source, Unreadable, check_key};
use crate::config::{CsvOptions, SourceConfig, show_path};
use crate::plan::{Chunk, ChunkRange};
use crate::transform::cast::cast_lossless;
use crate::{Error, Result, RowFailure};

/// One or more CSV files with the same columns.
pub struct CsvSource {
    files: Vec<PathBuf>,
    opts: CsvOptions,
    /// Every column as text, the way the reader parses them.
    raw_schema: SchemaRef,
    /// After `[source.types]` casts.
    schema: SchemaRef,
    key: Option<String>,
    null_regex: regex::Regex,
    /// Plan with the fast byte scan where it is sure; off only in tests that compare it
    /// with the csv-core scan.
    fast_scan: bool,
    /// Records that could not be read, by chunk id: shared with the chunk readers, which
    /// find them, and read by `locate`, which must not count them.
    unreadable: Arc<Mutex<HashMap<usize, Vec<Unreadable>>>>,
}

/// A planned byte range: start, end, first line, rows.
type Part = (u64, u64, u64, u64);

/// Where a record starts and how many fields it has, from a `csv-core` scan.
struct RecordInfo {
    line: u64,
    fields: usize,
}

impl CsvSource {
    /// Opens the files and reads the first file's header.
    pub fn open(config: &SourceConfig, files: Vec<PathBuf>) -> Result<Self> {
        let opts = config.csv.clone();
        let names = match &opts.columns {
            Some(names) => names.clone(),
            None => {
                let mut header = None;
                scan(&files[0], &opts, 0, |fields, _, _| {
                    header = Some(
                        fields
                            .iter()
                            .map(|f| f.to_string())
                            .collect::<Vec<String>>(),
                    );
                    false
                })?;
                header.ok_or_else(|| {
                    Error::data(show_path(&files[0]), "the file is empty: no header line")
                })?
            }
        };
        let mut seen = std::collections::HashSet::new();
        for n in &names {
            if !seen.insert(n.as_str()) {
                return Err(Error::data(
                    show_path(&files[0]),
                    format!("column `{n}` appears twice in the header"),
                ));
            }
        }
        let raw_schema = Arc::new(Schema::new(
            names
                .iter()
                .map(|n| Field::new(n, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let mut fields: Vec<Field> = raw_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        for (name, ty) in &config.types {
            match fields.iter_mut().find(|f| f.name() == &name.value) {
                Some(f) => *f = Field::new(&name.value, ty.value.arrow_type(), true),
                None => {
                    return Err(Error::data(
                        show_path(&files[0]),
                        format!(
                            "[source.types] names column `{}`, which the file does not have; columns are: {}",
                            name.value,
                            names.join(", ")
                        ),
                    ));
                }
            }
        }
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let describe = show_path(&files[0]);
        let key = check_key(config, &schema, &describe)?;
        let null_regex = null_regex(&opts.null);
        Ok(CsvSource {
            files,
            opts,
            raw_schema,
            schema,
            key,
            null_regex,
            fast_scan: true,
            unreadable: Arc::default(),
        })
    }

    fn cast_declared(&self, batch: RecordBatch, chunk: &Chunk, offset: u64) -> Result<RecordBatch> {
        if self.schema == self.raw_schema {
            return Ok(batch);
        }
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
        for (i, field) in self.schema.fields().iter().enumerate() {
            let col = batch.column(i);
            let (cast, failures) = cast_lossless(col, field.data_type())
                .map_err(|e| Error::data(self.describe(), e))?;
            if let Some(f) = failures.first() {
                return Err(Error::Row(RowFailure {
                    location: self.locate(chunk, offset + f.row as u64),
                    column: Some(field.name().clone()),
                    value: f.value.clone(),
                    reason: f.reason.clone(),
                }));
            }
            columns.push(cast);
        }
        RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| Error::Internal(e.to_string()))
    }

    /// Finds the first record of `chunk` whose field count is wrong, for a precise message.
    fn find_ragged(&self, chunk: &Chunk) -> Result<Option<(u64, usize)>> {
        let ChunkRange::Bytes {
            file,
            start,
            end,
            first_line,
        } = &chunk.range
        else {
            return Ok(None);
        };
        let want = self.raw_schema.fields().len();
        let mut found = None;
        scan_range(
            &self.files[*file],
            &self.opts,
            *start,
            *end,
            *first_line,
            |_, info: RecordInfo| {
                if info.fields != want {
                    found = Some((info.line, info.fields));
                    return false;
                }
                true
            },
        )?;
        Ok(found)
    }
}

impl Source for CsvSource {
    fn describe(&self) -> String {
        if self.files.len() == 1 {
            show_path(&self.files[0])
        } else {
            format!(
                "{} CSV files ({} ...)",
                self.files.len(),
                show_path(&self.files[0])
            )
        }
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    fn plan(&self, rows_per_chunk: u64) -> Result<Vec<Chunk>> {
        let mut chunks = Vec::new();
        for (file_index, path) in self.files.iter().enumerate() {
            let fast = if self.fast_scan {
                self.fast_plan(path, rows_per_chunk)?
            } else {
                None
            };
            if let Some(parts) = fast {
                for (start, end, first_line, rows) in parts {
                    chunks.push(Chunk {
                        id: chunks.len(),
                        range: ChunkRange::Bytes {
                            file: file_index,
                            start,
                            end,
                            first_line,
                        },
                        rows: Some(rows),
                    });
                }
                continue;
            }
            let skip = usize::from(self.opts.header);
            let mut header_checked = !self.opts.header;
            let mut chunk_start: Option<(u64, u64)> = None;
            let mut rows = 0u64;
            let mut last_end = 0u64;
            let expected: Vec<&str> = self
                .raw_schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            let mut header_error = None;
            scan(path, &self.opts, 0, |fields, end, line| {
                if !header_checked {
                    header_checked = true;
                    if fields != expected.as_slice() {
                        header_error = Some(format!(
                            "header differs from the first file's: expected {}, found {}",
                            expected.join(","),
                            fields.join(",")
                        ));
                        return false;
                    }
                    last_end = end;
                    return true;
                }
                let _ = skip;
                if chunk_start.is_none() {
                    chunk_start = Some((last_end, line));
                }
                rows += 1;
                last_end = end;
                if rows == rows_per_chunk {
                    let (start, first_line) = chunk_start.take().expect("set above");
                    chunks.push(Chunk {
                        id: chunks.len(),
                        range: ChunkRange::Bytes {
                            file: file_index,
                            start,
                            end,
                            first_line,
                        },
                        rows: Some(rows),
                    });
                    rows = 0;
                }
                true
            })?;
            if let Some(msg) = header_error {
                return Err(Error::data(show_path(path), msg));
            }
            if let Some((start, first_line)) = chunk_start {
                chunks.push(Chunk {
                    id: chunks.len(),
                    range: ChunkRange::Bytes {
                        file: file_index,
                        start,
                        end: last_end,
                        first_line,
                    },
                    rows: Some(rows),
                });
            }
        }
        Ok(chunks)
    }

    fn read(&self, chunk: &Chunk, batch_rows: usize) -> Result<BatchIter> {
        let ChunkRange::Bytes {
            file, start, end, ..
        } = &chunk.range
        else {
            return Err(Error::Internal(format!("{chunk} is not a CSV chunk")));
        };
        let path = &self.files[*file];
        // A redone chunk finds its unreadable records again.
        self.unreadable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&chunk.id);
        let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
        f.seek(SeekFrom::Start(*start))
            .map_err(|e| Error::io(path, e))?;
        let reader = self
            .arrow_reader(batch_rows)
            .build(BufReader::with_capacity(1 << 20, f.take(end - start)))
            .map_err(|e| Error::data(show_path(path), e))?;
        let this = CsvChunkReader {
            source: self.clone_handle(),
            chunk: chunk.clone(),
            reader: Box::new(reader),
            offset: 0,
            failed: false,
            salvaged: false,
            batch_rows,
        };
        Ok(Box::new(this))
    }

    fn unreadable(&self, chunk: &Chunk) -> Vec<Unreadable> {
        self.unreadable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&chunk.id)
            .cloned()
            .unwrap_or_default()
    }

    fn locate(&self, chunk: &Chunk, row: u64) -> String {
        let ChunkRange::Bytes {
            file,
            start,
            end,
            first_line,
        } = &chunk.range
        else {
            return format!("{chunk} row {row}");
        };
        let path = &self.files[*file];
        let skipped: std::collections::HashSet<u64> = self
            .unreadable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&chunk.id)
            .map(|u| u.iter().map(|u| u.line).collect())
            .unwrap_or_default();
        let mut n = 0u64;
        let mut line = None;
        let _ = scan_range(path, &self.opts, *start, *end, *first_line, |_, info| {
            if skipped.contains(&info.line) {
                return true;
            }
            if n == row {
                line = Some(info.line);
                return false;
            }
            n += 1;
            true
        });
        match line {
            Some(line) => format!("{} line {line}", show_path(path)),
            None => format!("{} record {} of {chunk}", show_path(path), row + 1),
        }
    }
}

impl CsvSource {
    /// Record boundaries found with a fast byte scan (quote parity, vectorised search),
    /// for plain RFC 4180 files. Returns `None`, and the caller falls back to the csv-core
    /// scan, at the first thing the fast scan cannot be sure about: an escape character,
    /// a carriage return, a blank line, or a quote that does not open or close a field.
    fn fast_plan(&self, path: &Path, rows_per_chunk: u64) -> Result<Option<Vec<Part>>> {
        if self.opts.escape.is_some() {
            return Ok(None);
        }
        let (q, d) = (self.opts.quote, self.opts.delimiter);
        // The header, if any, is read and checked by csv-core; the scan starts after it.
        let (mut boundary, mut line) = if self.opts.header {
            let expected: Vec<&str> = self
                .raw_schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            let mut header: Option<(Vec<String>, u64)> = None;
            scan(path, &self.opts, 0, |fields, end, _| {
                header = Some((fields.iter().map(|f| f.to_string()).collect(), end));
                false
            })?;
            let Some((fields, end)) = header else {
                return Ok(Some(Vec::new()));
            };
            if fields != expected {
                return Ok(None); // the csv-core path reports the mismatch
            }
            let mut head = vec![0u8; end as usize];
            File::open(path)
                .and_then(|mut f| f.read_exact(&mut head))
                .map_err(|e| Error::io(path, e))?;
            if head.contains(&b'\r') || !head.ends_with(b"\n") {
                return Ok(None);
            }
            (end, 1 + head.iter().filter(|&&b| b == b'\n').count() as u64)
        } else {
            (0, 1)
        };
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        file.seek(SeekFrom::Start(boundary))
            .map_err(|e| Error::io(path, e))?;
        let mut parts = Vec::new();
        let (mut chunk_start, mut chunk_line, mut rows) = (boundary, line, 0u64);
        let mut in_quotes = false;
        // A quote seen inside quotes whose meaning depends on the next byte.
        let mut pending_quote = false;
        let mut skip_quote_at = u64::MAX;
        let mut prev: u8 = b'\n';
        let mut pos = boundary;
        let mut buf = vec![0u8; 4 << 20];
        loop {
            let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
            let block = &buf[..n];
            if n == 0 {
                break;
            }
            let check_next = |next: u8, at: u64, in_quotes: &mut bool, skip: &mut u64| -> bool {
                if next == q {
                    *skip = at;
                    true
                } else if next == d || next == b'\n' {
                    *in_quotes = false;
                    true
                } else {
                    false
                }
            };
            if pending_quote {
                pending_quote = false;
                if !check_next(block[0], pos, &mut in_quotes, &mut skip_quote_at) {
                    return Ok(None);
                }
            }
            for i in memchr::memchr3_iter(q, b'\n', b'\r', block) {
                let at = pos + i as u64;
                let b = block[i];
                if b == b'\r' {
                    return Ok(None);
                }
                if b == q {
                    if at == skip_quote_at {
                        continue;
                    }
                    if !in_quotes {
                        let before = if i > 0 { block[i - 1] } else { prev };
                        if !(before == d || before == b'\n' || at == boundary) {
                            return Ok(None);
                        }
                        in_quotes = true;
                    } else if i + 1 < block.len() {
                        if !check_next(block[i + 1], at + 1, &mut in_quotes, &mut skip_quote_at) {
                            return Ok(None);
                        }
                    } else {
                        pending_quote = true;
                    }
                    continue;
                }
                // A newline.
                line += 1;
                if in_quotes {
                    continue;
                }
                if at == boundary {
                    return Ok(None); // a blank line
                }
                rows += 1;
                boundary = at + 1;
                if rows == rows_per_chunk {
                    parts.push((chunk_start, boundary, chunk_line, rows));
                    (chunk_start, chunk_line, rows) = (boundary, line, 0);
                }
            }
            prev = block[n - 1];
            pos += n as u64;
        }
        if in_quotes || pending_quote {
            return Ok(None);
        }
        if pos > boundary {
            rows += 1; // a last record without a newline
            boundary = pos;
        }
        if rows > 0 {
            parts.push((chunk_start, boundary, chunk_line, rows));
        }
        Ok(Some(parts))
    }

    fn clone_plain(&self) -> CsvSource {
        CsvSource {
            files: self.files.clone(),
            opts: self.opts.clone(),
            raw_schema: self.raw_schema.clone(),
            schema: self.schema.clone(),
            key: self.key.clone(),
            null_regex: self.null_regex.clone(),
            fast_scan: self.fast_scan,
            unreadable: self.unreadable.clone(),
        }
    }

    fn clone_handle(&self) -> Arc<CsvSource> {
        Arc::new(self.clone_plain())
    }

    fn arrow_reader(&self, batch_rows: usize) -> arrow::csv::ReaderBuilder {
        let mut builder = arrow::csv::ReaderBuilder::new(self.raw_schema.clone())
            .with_header(false)
            .with_delimiter(self.opts.delimiter)
            .with_quote(self.opts.quote)
            .with_null_regex(self.null_regex.clone())
            .with_batch_size(batch_rows);
        if let Some(e) = self.opts.escape {
            builder = builder.with_escape(e);
        }
        builder
    }

    /// Reads `chunk`'s byte range record by record with csv-core and splits it into the
    /// records after the first `skip` readable ones (returned, one per line, for the
    /// arrow reader) and the records that cannot be read: a wrong number of fields, or
    /// bytes that are not UTF-8. Those are recorded for the quarantine.
    fn salvage(&self, chunk: &Chunk, skip: u64) -> Result<(Vec<u8>, usize)> {
        let ChunkRange::Bytes {
            file,
            start,
            end,
            first_line,
        } = &chunk.range
        else {
            return Err(Error::Internal(format!("{chunk} is not a CSV chunk")));
        };
        let path = &self.files[*file];
        let mut bytes = Vec::with_capacity((end - start) as usize);
        let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
        f.seek(SeekFrom::Start(*start))
            .map_err(|e| Error::io(path, e))?;
        f.take(end - start)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(path, e))?;
        let want = self.raw_schema.fields().len();
        let mut rdr = core_reader(&self.opts);
        let mut out = vec![0u8; bytes.len() + 1];
        let mut ends = vec![0usize; want + 16];
        let (mut pos, mut line, mut skip) = (0usize, *first_line, skip);
        let mut good = Vec::with_capacity(bytes.len());
        let mut bad = Vec::new();
        while pos < bytes.len() {
            // Blank lines between records belong to no record.
            if bytes[pos] == b'\n' || bytes[pos] == b'\r' {
                line += u64::from(bytes[pos] == b'\n');
                pos += 1;
                continue;
            }
            let (record_start, record_line) = (pos, line);
            let (mut nout, mut nend) = (0usize, 0usize);
            loop {
                let input = &bytes[pos..];
                let (res, nin, o, e) = rdr.read_record(input, &mut out[nout..], &mut ends[nend..]);
                pos += nin;
                nout += o;
                nend += e;
                match res {
                    ReadRecordResult::Record => break,
                    ReadRecordResult::OutputEndsFull => ends.resize(ends.len() * 2, 0),
                    ReadRecordResult::OutputFull => out.resize(out.len() * 2, 0),
                    // The input ended inside the record: one call with no input ends it.
                    ReadRecordResult::InputEmpty if input.is_empty() || pos >= bytes.len() => {
                        let (res, _, o, e) =
                            rdr.read_record(&[], &mut out[nout..], &mut ends[nend..]);
                        nout += o;
                        nend += e;
                        if matches!(res, ReadRecordResult::Record | ReadRecordResult::End) {
                            break;
                        }
                    }
                    ReadRecordResult::InputEmpty | ReadRecordResult::End => break,
                }
            }
            let raw = &bytes[record_start..pos];
            line += raw.iter().filter(|&&b| b == b'\n').count() as u64;
            let mut field_start = 0;
            let bad_utf8 = ends[..nend].iter().position(|&e| {
                let ok = std::str::from_utf8(&out[field_start..e]).is_ok();
                field_start = e;
                !ok
            });
            let text = String::from_utf8_lossy(raw)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            let problem = if nend != want {
                Some((None, format!("expected {want} fields, found {nend}")))
            } else {
                bad_utf8.map(|i| {
                    (
                        Some(self.raw_schema.field(i).name().clone()),
                        "is not valid UTF-8 text".to_string(),
                    )
                })
            };
            match problem {
                Some((column, reason)) => bad.push(Unreadable {
                    location: format!("{} line {record_line}", show_path(path)),
                    line: record_line,
                    column,
                    reason,
                    raw: text,
                }),
                None if skip > 0 => skip -= 1,
                None => {
                    good.extend_from_slice(raw);
                    if !raw.ends_with(b"\n") {
                        good.push(b'\n');
                    }
                }
            }
        }
        let found = bad.len();
        self.unreadable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(chunk.id, bad);
        Ok((good, found))
    }
}

struct CsvChunkReader {
    source: Arc<CsvSource>,
    chunk: Chunk,
    reader: Box<dyn Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>> + Send>,
    offset: u64,
    failed: bool,
    /// Whether the rest of the chunk is read from the records `salvage` kept.
    salvaged: bool,
    batch_rows: usize,
}

impl Iterator for CsvChunkReader {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let batch = match self.reader.next()? {
            Ok(b) => b,
            Err(e) if !self.salvaged => {
                // A record arrow cannot read: set the unreadable ones aside for the
                // quarantine and read the rest of the chunk without them.
                match self.source.salvage(&self.chunk, self.offset) {
                    Ok((good, found)) if found > 0 => {
                        self.salvaged = true;
                        match self
                            .source
                            .arrow_reader(self.batch_rows)
                            .build(std::io::Cursor::new(good))
                        {
                            Ok(r) => self.reader = Box::new(r),
                            Err(e) => {
                                self.failed = true;
                                return Some(Err(Error::Internal(e.to_string())));
                            }
                        }
                        return self.next();
                    }
                    Ok(_) => {
                        self.failed = true;
                        return Some(Err(self.parse_error(e)));
                    }
                    Err(err) => {
                        self.failed = true;
                        return Some(Err(err));
                    }
                }
            }
            Err(e) => {
                self.failed = true;
                return Some(Err(self.parse_error(e)));
            }
        };
        let offset = self.offset;
        self.offset += batch.num_rows() as u64;
        let out = self.source.cast_declared(batch, &self.chunk, offset);
        self.failed = out.is_err();
        Some(out)
    }
}

impl CsvChunkReader {
    fn parse_error(&self, e: arrow::error::ArrowError) -> Error {
        let ChunkRange::Bytes {
            file, first_line, ..
        } = &self.chunk.range
        else {
            return Error::Internal("csv chunk without byte range".into());
        };
        let path = show_path(&self.source.files[*file]);
        match self.source.find_ragged(&self.chunk) {
            Ok(Some((line, found))) => Error::Row(RowFailure {
                location: format!("{path} line {line}"),
                column: None,
                value: None,
                reason: format!(
                    "expected {} fields, found {found}",
                    self.source.raw_schema.fields().len()
                ),
            }),
            _ => match invalid_utf8(&e.to_string()) {
                // arrow counts records from the chunk's start and fields from 1.
                Some((record, field)) => Error::Row(RowFailure {
                    location: self.source.locate(&self.chunk, record.saturating_sub(1)),
                    column: self
                        .source
                        .raw_schema
                        .fields()
                        .get(field.saturating_sub(1))
                        .map(|f| f.name().clone()),
                    value: None,
                    reason: "is not valid UTF-8 text".into(),
                }),
                None => Error::data(format!("{path} (chunk starting at line {first_line})"), e),
            },
        }
    }
}

/// The record (from 1, within the chunk) and field (from 1) of arrow's invalid UTF-8 error.
fn invalid_utf8(message: &str) -> Option<(u64, usize)> {
    let rest = message.split("invalid UTF-8 data for line ").nth(1)?;
    let (record, rest) = rest.split_once(" and field ")?;
    let field: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((record.trim().parse().ok()?, field.parse().ok()?))
}

/// A regex matching exactly the configured null markers (and nothing if there are none).
fn null_regex(markers: &[String]) -> regex::Regex {
    let pattern = if markers.is_empty() {
        r"[^\s\S]".to_string()
    } else {
        let alts: Vec<String> = markers.iter().map(|m| regex::escape(m)).collect();
        format!("^(?:{})$", alts.join("|"))
    };
    regex::Regex::new(&pattern).expect("escaped markers form a valid regex")
}

fn core_reader(opts: &CsvOptions) -> CoreReader {
    let mut b = CoreBuilder::new();
    b.delimiter(opts.delimiter).quote(opts.quote);
    if let Some(e) = opts.escape {
        b.escape(Some(e)).double_quote(false);
    }
    b.build()
}

/// Scans a whole file from `start`, calling `on_record(fields, end_offset, first_line)` for
/// every record until it returns false. Fields are decoded only for the first record of a
/// file (the header); later calls get an empty slice.
fn scan(
    path: &Path,
    opts: &CsvOptions,
    start: u64,
    mut on_record: impl FnMut(&[&str], u64, u64) -> bool,
) -> Result<()> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    let mut first = true;
    let mut header: Vec<String> = Vec::new();
    scan_inner(path, opts, start, len, 1, true, |raw_fields, end, info| {
        if first {
            first = false;
            header = raw_fields
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect();
            let refs: Vec<&str> = header.iter().map(String::as_str).collect();
            return on_record(&refs, end, info.line);
        }
        on_record(&[], end, info.line)
    })
}

/// Scans records in `start..end`, whose first record starts on `first_line`.
fn scan_range(
    path: &Path,
    opts: &CsvOptions,
    start: u64,
    end: u64,
    first_line: u64,
    mut on_record: impl FnMut(u64, RecordInfo) -> bool,
) -> Result<()> {
    scan_inner(path, opts, start, end, first_line, false, |_, end, info| {
        on_record(end, info)
    })
}

fn scan_inner(
    path: &Path,
    opts: &CsvOptions,
    start: u64,
    end: u64,
    first_line: u64,
    decode_first: bool,
    mut on_record: impl FnMut(&[Vec<u8>], u64, RecordInfo) -> bool,
) -> Result<()> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    file.seek(SeekFrom::Start(start))
        .map_err(|e| Error::io(path, e))?;
    let mut input = file.take(end - start);
    let mut rdr = core_reader(opts);
    let mut buf = vec![0u8; 1 << 20];
    let mut out = vec![0u8; 1 << 16];
    let mut ends = vec![0usize; 1024];
    let mut pos = start;
    let mut line = first_line;
    let mut record_line = first_line;
    let mut record_started = false;
    let mut fields = 0usize;
    let mut decode = decode_first;
    let mut field_bytes: Vec<u8> = Vec::new();
    let mut field_ends: Vec<usize> = Vec::new();
    let mut eof = false;
    while !eof {
        let n = input.read(&mut buf).map_err(|e| Error::io(path, e))?;
        eof = n == 0;
        let mut data = &buf[..n];
        loop {
            // Blank lines before a record belong to no record; its line is the first
            // non-newline byte's.
            if !record_started {
                let skip = data
                    .iter()
                    .take_while(|&&b| b == b'\n' || b == b'\r')
                    .count();
                line += data[..skip].iter().filter(|&&b| b == b'\n').count() as u64;
                pos += skip as u64;
                data = &data[skip..];
                if data.is_empty() && !eof {
                    break;
                }
                record_line = line;
                record_started = true;
            }
            let (res, nin, nout, nend) = rdr.read_record(data, &mut out, &mut ends);
            line += data[..nin].iter().filter(|&&b| b == b'\n').count() as u64;
            pos += nin as u64;
            data = &data[nin..];
            fields += nend;
            if decode {
                field_bytes.extend_from_slice(&out[..nout]);
                let base = field_ends.last().copied().unwrap_or(0);
                field_ends.extend(ends[..nend].iter().map(|e| e + base));
            }
            match res {
                ReadRecordResult::InputEmpty => break,
                ReadRecordResult::OutputFull | ReadRecordResult::OutputEndsFull => {}
                ReadRecordResult::Record => {
                    let decoded: Vec<Vec<u8>> = if decode {
                        let mut prev = 0;
                        field_ends
                            .iter()
                            .map(|&e| {
                                let f = field_bytes[prev..e].to_vec();
                                prev = e;
                                f
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    decode = false;
                    let info = RecordInfo {
                        line: record_line,
                        fields,
                    };
                    fields = 0;
                    record_started = false;
                    if !on_record(&decoded, pos, info) {
                        return Ok(());
                    }
                }
                ReadRecordResult::End => return Ok(()),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Location, Spanned};

    fn source(file: &str) -> CsvSource {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let config = SourceConfig {
            url: Spanned {
                value: file.into(),
                span: None,
            },
            location: Location::Files {
                path: path.clone(),
                format: crate::config::FileFormat::Csv,
            },
            table: None,
            key: None,
            csv: CsvOptions::default(),
            types: Vec::new(),
            db: Default::default(),
        };
        CsvSource::open(&config, vec![path]).unwrap()
    }

    /// The slow, csv-core plan of one file, as the fast scan reports it.
    fn slow_plan(s: &CsvSource, rows: u64) -> Vec<Part> {
        let slow = CsvSource {
            fast_scan: false,
            unreadable: Arc::default(),
            ..s.clone_plain()
        };
        slow.plan(rows)
            .unwrap()
            .into_iter()
            .map(|c| match c.range {
                ChunkRange::Bytes {
                    start,
                    end,
                    first_line,
                    ..
                } => (start, end, first_line, c.rows.unwrap()),
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn fast_plan_matches_csv_core_on_quoted_newlines_and_doubled_quotes() {
        let s = source("samples/orders.csv");
        for rows in [1, 2, 3, 7, 64, 100, 499, 500, 10_000] {
            let fast = s
                .fast_plan(&s.files[0], rows)
                .unwrap()
                .expect("orders.csv is plain RFC 4180");
            assert_eq!(fast, slow_plan(&s, rows), "chunk size {rows}");
            assert_eq!(fast.iter().map(|p| p.3).sum::<u64>(), 500);
        }
    }

    #[test]
    fn fast_plan_declines_what_it_cannot_be_sure_of() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("stray.csv", "a,b\n1,x\"y\n"),
            ("crlf.csv", "a,b\r\n1,2\r\n"),
            ("blank.csv", "a,b\n1,2\n\n3,4\n"),
            ("open.csv", "a,b\n1,\"never closed\n"),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let config = SourceConfig {
                url: Spanned {
                    value: name.into(),
                    span: None,
                },
                location: Location::Files {
                    path: path.clone(),
                    format: crate::config::FileFormat::Csv,
                },
                table: None,
                key: None,
                csv: CsvOptions::default(),
                types: Vec::new(),
                db: Default::default(),
            };
            let s = CsvSource::open(&config, vec![path.clone()]).unwrap();
            assert_eq!(s.fast_plan(&path, 10).unwrap(), None, "{name}");
        }
    }
}
