//! CSV files, split into chunks at record boundaries.
//!
//! Planning scans each file once: with the fast byte scan ([`fast`]) when the file is
//! plain RFC 4180, else with the strict splitter ([`strict`]), so a newline inside a
//! quoted field never starts a chunk. The scan also yields the exact record count and
//! first line number of every chunk. Chunks are decoded by the fast decoder, which hands
//! over to the strict decoder at the first record it is unsure of: quoting that RFC 4180
//! does not allow, the end of the input inside quotes, a record longer than
//! `max_record_bytes`, a wrong field count or bytes that are not text. Those records are
//! set aside for the quarantine with their exact bytes; none becomes a value.

mod fast;
mod strict;

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use self::fast::{BlockScan, FastDecoder, TextColumn, Unsure};
use self::strict::{Dialect, Records, check_record, decode_into};
use super::{
    BatchIter, POSITION_FILE, POSITION_LINE, SetAside, Source, Unreadable, check_key,
    position_fields, position_names, with_position,
};
use crate::chunk::{Chunk, ChunkRange};
use crate::config::{CsvOptions, Encoding, Quoting, SourceConfig, show_path};
use crate::types::cast::cast_batch;
use crate::{Error, Result};

/// One or more CSV files with the same columns.
pub struct CsvSource {
    files: Vec<PathBuf>,
    /// Each file as messages show it.
    shown: Arc<Vec<String>>,
    opts: CsvOptions,
    dialect: Dialect,
    /// Every column as text, the way the reader parses them.
    raw_schema: SchemaRef,
    /// After `[source.types]` casts.
    data_schema: SchemaRef,
    /// `data_schema` and the position columns (file, line).
    schema: SchemaRef,
    key: Vec<String>,
    /// The position columns' names.
    position: Vec<String>,
    /// Each file as the position column names it.
    file_names: Arc<Vec<String>>,
    /// Each column's null markers.
    nulls: Arc<Vec<Vec<String>>>,
    /// Plan with the fast byte scan where it is sure; off only in tests that compare it
    /// with the strict scan.
    fast_scan: bool,
    /// Records that could not be read, by chunk id: shared with the chunk readers, which
    /// find them, and read by `locate`, which must not count them.
    unreadable: SetAside,
    /// The line of each readable record of a chunk, by chunk id, found in one pass the
    /// first time a row of the chunk is located (a chunk with many rejects must not be
    /// scanned once per reject).
    lines: Lines,
}

/// A planned byte range: start, end, first line, rows.
type Part = (u64, u64, u64, u64);

/// The lines of readable records, by chunk id; a few chunks at a time.
#[derive(Clone, Default)]
struct Lines {
    map: Arc<Mutex<HashMap<usize, ChunkLines>>>,
    /// How many times a chunk was scanned to find them (tests check it is once a chunk).
    scans: Arc<std::sync::atomic::AtomicUsize>,
}

/// Where a chunk's readable records are.
#[derive(Clone)]
enum ChunkLines {
    /// The first `rows` records are on consecutive lines from `first` (what the fast
    /// decoder read before any record spanned lines): no scan is needed.
    Consecutive { first: u64, rows: u64 },
    /// Each record's line, from a scan of the whole chunk.
    Listed(Arc<Vec<u64>>),
}

impl Lines {
    /// Chunks whose lines are kept: a few per worker.
    const KEPT: usize = 64;

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, ChunkLines>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The line of record `row` of `chunk`, if known without a scan.
    fn get(&self, chunk: usize, row: u64) -> Option<Option<u64>> {
        match self.lock().get(&chunk)? {
            ChunkLines::Consecutive { first, rows } => (row < *rows).then_some(Some(first + row)),
            ChunkLines::Listed(lines) => Some(lines.get(row as usize).copied()),
        }
    }

    fn set(&self, chunk: usize, lines: ChunkLines) {
        let mut m = self.lock();
        if m.len() >= Self::KEPT && !m.contains_key(&chunk) {
            m.clear();
        }
        m.insert(chunk, lines);
    }

    fn clear(&self, chunk: usize) {
        self.lock().remove(&chunk);
    }
}

impl CsvSource {
    /// Opens the files and reads the first file's header.
    pub fn open(config: &SourceConfig, files: Vec<PathBuf>) -> Result<Self> {
        let opts = config.csv.clone();
        let dialect = Dialect::of(&opts);
        let names = match &opts.columns {
            Some(names) => names.clone(),
            None => read_header(&files[0], &opts, &dialect)?.0,
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
        for (c, _) in &opts.null_columns {
            if !names.contains(c) {
                return Err(Error::data(
                    show_path(&files[0]),
                    format!(
                        "[source.csv.null_columns] names column `{c}`, which the file does not have; columns are: {}",
                        names.join(", ")
                    ),
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
        let data_schema: SchemaRef = Arc::new(Schema::new(fields.clone()));
        let describe = show_path(&files[0]);
        fields.extend(position_fields(
            POSITION_LINE,
            names.iter().map(String::as_str),
            &describe,
        )?);
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let position = vec![POSITION_FILE.to_string(), POSITION_LINE.to_string()];
        let mut key = check_key(config, &schema, &describe)?;
        if key.is_empty() {
            key = position.clone();
        }
        let nulls = Arc::new(names.iter().map(|n| opts.null_of(n).to_vec()).collect());
        Ok(CsvSource {
            shown: Arc::new(files.iter().map(|f| show_path(f)).collect()),
            file_names: Arc::new(position_names(&files)),
            files,
            opts,
            dialect,
            raw_schema,
            data_schema,
            schema,
            key,
            position,
            nulls,
            fast_scan: true,
            unreadable: SetAside::default(),
            lines: Lines::default(),
        })
    }

    /// The batch of text columns cast to the declared types, with each row's position
    /// (its file, and the line its record starts on, from `lines`).
    fn cast_declared(
        &self,
        batch: RecordBatch,
        chunk: &Chunk,
        offset: u64,
        lines: Vec<i64>,
    ) -> Result<RecordBatch> {
        let batch = if self.data_schema == self.raw_schema {
            batch
        } else {
            cast_batch(batch, &self.data_schema, &self.describe(), |row| {
                self.locate(chunk, offset + row as u64)
            })?
        };
        let file = match &chunk.range {
            ChunkRange::Bytes { file, .. } => *file,
            _ => return Err(Error::Internal(format!("{chunk} is not a CSV chunk"))),
        };
        with_position(batch, &self.schema, &self.file_names[file], lines)
    }

    fn names(&self) -> Vec<String> {
        self.raw_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    /// The file a quarantined record was set aside in, from its location
    /// (`data/a.csv line 7`): the file shown so now, else the one file whose name
    /// ([`POSITION_FILE`]) ends the path (the run was in another working directory),
    /// else the only file.
    fn file_at(&self, location: &str, line: u64) -> Option<usize> {
        let path = location.strip_suffix(&format!(" line {line}"))?;
        if let Some(i) = self.shown.iter().position(|s| s == path) {
            return Some(i);
        }
        let ends: Vec<usize> = (0..self.files.len())
            .filter(|&i| {
                path.strip_suffix(self.file_names[i].as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.ends_with('/'))
            })
            .collect();
        match ends.as_slice() {
            [one] => Some(*one),
            [] if self.files.len() == 1 => Some(0),
            _ => None,
        }
    }

    /// Where the data of `path` starts: after `skip_lines` lines and the header.
    fn data_start(&self, path: &Path) -> Result<(u64, u64)> {
        if self.opts.header {
            let (fields, offset, line) = read_header(path, &self.opts, &self.dialect)?;
            let expected = self.names();
            if fields != expected {
                return Err(Error::data(
                    show_path(path),
                    format!(
                        "header differs from the first file's: expected {}, found {}",
                        expected.join(","),
                        fields.join(",")
                    ),
                ));
            }
            Ok((offset, line))
        } else {
            skip_lines(path, self.opts.skip_lines)
        }
    }

    /// The line of readable record `row` of `chunk`: known from reading it, or found
    /// with one pass over the chunk, kept for its other rows.
    fn line_of(&self, chunk: &Chunk, row: u64) -> Result<Option<u64>> {
        if let Some(line) = self.lines.get(chunk.id, row) {
            return Ok(line);
        }
        let mut decoder = SlowDecoder::new(self, chunk, 0, 0, false)?;
        while decoder.next_batch()?.is_some() {}
        self.lines
            .scans
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let lines = std::mem::take(&mut decoder.lines);
        let line = lines.get(row as usize).copied();
        self.lines
            .set(chunk.id, ChunkLines::Listed(Arc::new(lines)));
        Ok(line)
    }
}

/// Skips `n` lines of `path`: the offset and line number after them.
fn skip_lines(path: &Path, n: u64) -> Result<(u64, u64)> {
    if n == 0 {
        return Ok((0, 1));
    }
    let mut f = std::io::BufReader::new(File::open(path).map_err(|e| Error::io(path, e))?);
    let mut offset = 0u64;
    let mut line = Vec::new();
    for i in 0..n {
        line.clear();
        let k = std::io::BufRead::read_until(&mut f, b'\n', &mut line)
            .map_err(|e| Error::io(path, e))?;
        if k == 0 {
            return Err(Error::data(
                show_path(path),
                format!("skip_lines = {n}, but the file has only {i} lines"),
            ));
        }
        offset += k as u64;
    }
    Ok((offset, n + 1))
}

/// The header's names, and the offset and line where the data starts.
fn read_header(
    path: &Path,
    opts: &CsvOptions,
    dialect: &Dialect,
) -> Result<(Vec<String>, u64, u64)> {
    let (offset, line) = skip_lines(path, opts.skip_lines)?;
    let mut records = Records::open(path, dialect.clone(), offset, line)?;
    let Some(item) = records.next_item()? else {
        return Err(Error::data(
            show_path(path),
            "the file is empty: no header line",
        ));
    };
    if let Some(why) = item.bad {
        return Err(Error::data(
            format!("{} line {} (the header)", show_path(path), item.line),
            why,
        ));
    }
    let f = &records.fields;
    let mut names = Vec::with_capacity(f.len());
    for i in 0..f.len() {
        if let Some(why) = strict::decode_problem(f.get(i), opts.encoding) {
            return Err(Error::data(
                format!("{} line {} (the header)", show_path(path), item.line),
                format!("column name {} {why}", i + 1),
            ));
        }
        let mut text = Vec::new();
        decode_into(&mut text, f.get(i), opts.encoding);
        names.push(String::from_utf8(text).expect("decoded as UTF-8"));
    }
    let next_line = item.line + memchr::memchr_iter(b'\n', records.raw()).count() as u64;
    Ok((names, records.offset(), next_line))
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

    fn key(&self) -> &[String] {
        &self.key
    }

    fn position(&self) -> &[String] {
        &self.position
    }

    fn plan(&self, rows_per_chunk: u64) -> Result<Vec<Chunk>> {
        let mut chunks = Vec::new();
        for (file_index, path) in self.files.iter().enumerate() {
            let (start, line) = self.data_start(path)?;
            let fast = if self.fast_scan {
                self.fast_plan(path, start, line, rows_per_chunk)?
            } else {
                None
            };
            let parts = match fast {
                Some(parts) => parts,
                None => self.strict_plan(path, start, line, rows_per_chunk)?,
            };
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
        }
        Ok(chunks)
    }

    fn read(&self, chunk: &Chunk, batch_rows: usize) -> Result<BatchIter> {
        let ChunkRange::Bytes {
            file,
            start,
            end,
            first_line,
        } = &chunk.range
        else {
            return Err(Error::Internal(format!("{chunk} is not a CSV chunk")));
        };
        // A redone chunk finds its unreadable records again.
        self.unreadable.clear(chunk.id);
        self.lines.clear(chunk.id);
        let decode = if self.fast_decode() {
            let path = &self.files[*file];
            Decode::Fast(FastDecoder::new(
                self.open_range(path, *start, *end)?,
                self.raw_schema.clone(),
                (self.opts.quote, self.opts.delimiter),
                batch_rows,
                self.dialect.max_record_bytes,
                *first_line,
            ))
        } else {
            Decode::Slow(Box::new(SlowDecoder::new(
                self, chunk, 0, batch_rows, true,
            )?))
        };
        let this = CsvChunkReader {
            source: self.clone_handle(),
            chunk: chunk.clone(),
            decode,
            offset: 0,
            failed: false,
            batch_rows,
        };
        Ok(Box::new(this))
    }

    /// The stored bytes are read, not the file: they are what was set aside, whatever
    /// happened to the file since, and a record read on its own cannot swallow the lines
    /// after it. Under the new options the bytes must make exactly one record.
    fn reread(
        &self,
        records: &[(Vec<u8>, u64, String)],
    ) -> Result<Option<Vec<std::result::Result<RecordBatch, Unreadable>>>> {
        let names = self.names();
        let mut out = Vec::with_capacity(records.len());
        for (bytes, line, location) in records {
            let aside = |column: Option<String>, reason: String| {
                let raw = String::from_utf8_lossy(bytes).into_owned();
                let raw_bytes = (raw.as_bytes() != bytes.as_slice()).then(|| bytes.clone());
                Unreadable {
                    location: location.clone(),
                    line: *line,
                    key: None,
                    column,
                    reason,
                    raw,
                    raw_bytes,
                }
            };
            let mut f = strict::Fields::default();
            let read = match strict::split(bytes, true, &self.dialect, *line, &mut f) {
                strict::Split::Record(len)
                    if bytes[len..].iter().all(|b| matches!(b, b'\r' | b'\n')) =>
                {
                    match check_record(&f, names.len(), self.opts.encoding, &names) {
                        Some((column, reason)) => Err(aside(column, reason)),
                        // The record keeps the place it was set aside at.
                        None => match self.file_at(location, *line) {
                            Some(file) => Ok((self.one_row(&f)?, file)),
                            None => Err(aside(
                                None,
                                format!(
                                    "was set aside at {location}, which names none of the source's files now ({})",
                                    self.shown.join(", ")
                                ),
                            )),
                        },
                    }
                }
                strict::Split::Record(len) => Err(aside(
                    None,
                    format!(
                        "reads as more than one record under the options now (the first ends after {len} of its {} bytes)",
                        bytes.len()
                    ),
                )),
                strict::Split::Bad(_, why) => Err(aside(None, why)),
                _ => Err(aside(None, "holds no record".into())),
            };
            out.push(match read {
                Ok((batch, file)) => {
                    let cast = cast_batch(batch, &self.data_schema, &self.describe(), |_| {
                        location.clone()
                    })
                    .and_then(|b| {
                        with_position(b, &self.schema, &self.file_names[file], vec![*line as i64])
                    });
                    match cast {
                        Ok(b) => Ok(b),
                        Err(Error::Row(rf)) => Err(aside(
                            rf.column,
                            match rf.value {
                                Some(v) => format!("value '{v}' {}", rf.reason),
                                None => rf.reason,
                            },
                        )),
                        Err(e) => return Err(e),
                    }
                }
                Err(u) => Err(u),
            });
        }
        Ok(Some(out))
    }

    fn unreadable(&self, chunk: &Chunk) -> Vec<Unreadable> {
        self.unreadable.get(chunk.id)
    }

    fn locate(&self, chunk: &Chunk, row: u64) -> String {
        let ChunkRange::Bytes { file, .. } = &chunk.range else {
            return format!("{chunk} row {row}");
        };
        let shown = &self.shown[*file];
        match self.line_of(chunk, row).ok().flatten() {
            Some(line) => format!("{shown} line {line}"),
            None => format!("{shown} record {} of {chunk}", row + 1),
        }
    }
}

impl CsvSource {
    /// Record boundaries found with a fast byte scan (quote parity, vectorised search),
    /// for plain RFC 4180 files. Returns `None`, and the caller falls back to the strict
    /// scan, at the first thing the fast scan cannot be sure about: an escape character,
    /// a carriage return, a blank line, a quote that does not open or close a field, the
    /// end of the file inside quotes, or a record longer than `max_record_bytes`.
    fn fast_plan(
        &self,
        path: &Path,
        start: u64,
        line: u64,
        rows_per_chunk: u64,
    ) -> Result<Option<Vec<Part>>> {
        if self.opts.escape.is_some()
            || self.opts.quoting != Quoting::Strict
            || self.opts.delimiter_multi.is_some()
            || self.opts.trim
        {
            return Ok(None);
        }
        let (q, d) = (self.opts.quote, self.opts.delimiter);
        if start > 0 {
            // The header (and skipped lines) must end like the records the scan reads.
            let mut head = vec![0u8; start as usize];
            File::open(path)
                .and_then(|mut f| f.read_exact(&mut head))
                .map_err(|e| Error::io(path, e))?;
            if head.contains(&b'\r') || !head.ends_with(b"\n") {
                return Ok(None);
            }
        }
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        file.seek(SeekFrom::Start(start))
            .map_err(|e| Error::io(path, e))?;
        let mut scan = BlockScan::new(start, line, rows_per_chunk, self.opts.max_record_bytes);
        let mut buf = vec![0u8; 4 << 20];
        loop {
            // Fill the buffer, so that only the last block of the file is short.
            let mut n = 0;
            while n < buf.len() {
                match file.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::io(path, e)),
                }
            }
            for block in buf[..n].chunks(64) {
                if !scan.block(block, q, d) {
                    return Ok(None);
                }
            }
            if n < buf.len() {
                break;
            }
        }
        Ok(scan.finish())
    }

    /// Record boundaries found with the strict splitter. A span set aside counts as a
    /// record: it is read, and rejected, with its chunk.
    fn strict_plan(
        &self,
        path: &Path,
        start: u64,
        line: u64,
        rows_per_chunk: u64,
    ) -> Result<Vec<Part>> {
        let mut records = Records::open(path, self.dialect.clone(), start, line)?;
        let mut parts = Vec::new();
        let mut current: Option<(u64, u64)> = None;
        let mut rows = 0u64;
        let mut last_end = start;
        while let Some(item) = records.next_item()? {
            if current.is_none() {
                current = Some((item.offset, item.line));
            }
            rows += 1;
            last_end = item.offset + item.len as u64;
            if rows == rows_per_chunk {
                let (s, l) = current.take().expect("set above");
                parts.push((s, last_end, l, rows));
                rows = 0;
            }
        }
        if let Some((s, l)) = current {
            parts.push((s, last_end, l, rows));
        }
        Ok(parts)
    }

    /// Whether chunks are read with [`FastDecoder`]: strict quoting with doubled quotes,
    /// one delimiter byte, UTF-8, the empty unquoted field as the only null marker, and
    /// quote and delimiter distinct from newlines.
    fn fast_decode(&self) -> bool {
        let (q, d) = (self.opts.quote, self.opts.delimiter);
        self.fast_scan
            && self.opts.escape.is_none()
            && self.opts.quoting == Quoting::Strict
            && self.opts.delimiter_multi.is_none()
            && !self.opts.trim
            && self.opts.encoding == Encoding::Utf8
            && !self.opts.null_quoted
            && self.nulls.iter().all(|m| m.len() == 1 && m[0].is_empty())
            && q != d
            && ![q, d].iter().any(|b| matches!(b, b'\n' | b'\r'))
    }

    /// The bytes `start..end` of `path`.
    fn open_range(&self, path: &Path, start: u64, end: u64) -> Result<std::io::Take<File>> {
        let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
        f.seek(SeekFrom::Start(start))
            .map_err(|e| Error::io(path, e))?;
        Ok(f.take(end - start))
    }

    /// The record split into `f` as a one-row batch of text, with null markers applied as
    /// the decoders apply them.
    fn one_row(&self, f: &strict::Fields) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(f.len());
        for i in 0..f.len() {
            let mut text = Vec::new();
            decode_into(&mut text, f.get(i), self.opts.encoding);
            let null = (!f.quoted[i] || self.opts.null_quoted)
                && self.nulls[i]
                    .iter()
                    .any(|m| m.as_bytes() == text.as_slice());
            let value = (!null).then(|| String::from_utf8_lossy(&text).into_owned());
            columns.push(Arc::new(arrow::array::StringArray::from(vec![value])));
        }
        RecordBatch::try_new(self.raw_schema.clone(), columns)
            .map_err(|e| Error::Internal(e.to_string()))
    }

    fn clone_plain(&self) -> CsvSource {
        CsvSource {
            files: self.files.clone(),
            shown: self.shown.clone(),
            opts: self.opts.clone(),
            dialect: self.dialect.clone(),
            raw_schema: self.raw_schema.clone(),
            data_schema: self.data_schema.clone(),
            schema: self.schema.clone(),
            key: self.key.clone(),
            position: self.position.clone(),
            file_names: self.file_names.clone(),
            nulls: self.nulls.clone(),
            fast_scan: self.fast_scan,
            unreadable: self.unreadable.clone(),
            lines: self.lines.clone(),
        }
    }

    fn clone_handle(&self) -> Arc<CsvSource> {
        Arc::new(self.clone_plain())
    }
}

/// Decodes a chunk with the strict splitter: the reference for every record the fast
/// decoder declines. Records that cannot be read are set aside, with their exact bytes.
struct SlowDecoder {
    records: Records,
    path: PathBuf,
    chunk: usize,
    /// The chunk's end offset: records start before it.
    end: u64,
    schema: SchemaRef,
    names: Vec<String>,
    nulls: Arc<Vec<Vec<String>>>,
    encoding: Encoding,
    null_quoted: bool,
    /// Readable records still to pass over (read by the fast decoder already).
    skip: u64,
    batch_rows: usize,
    /// Whether to build columns and set records aside; off when only lines are wanted.
    build: bool,
    unreadable: SetAside,
    /// The line of each readable record.
    lines: Vec<u64>,
}

impl SlowDecoder {
    fn new(
        source: &CsvSource,
        chunk: &Chunk,
        skip: u64,
        batch_rows: usize,
        build: bool,
    ) -> Result<Self> {
        let ChunkRange::Bytes {
            file,
            start,
            end,
            first_line,
        } = &chunk.range
        else {
            return Err(Error::Internal(format!("{chunk} is not a CSV chunk")));
        };
        let path = source.files[*file].clone();
        Ok(SlowDecoder {
            records: Records::open(&path, source.dialect.clone(), *start, *first_line)?,
            path,
            chunk: chunk.id,
            end: *end,
            schema: source.raw_schema.clone(),
            names: source.names(),
            nulls: source.nulls.clone(),
            encoding: source.opts.encoding,
            null_quoted: source.opts.null_quoted,
            skip,
            batch_rows: batch_rows.max(1),
            build,
            unreadable: source.unreadable.clone(),
            lines: Vec::new(),
        })
    }

    /// The next batch of readable records; `None` at the chunk's end.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let want = self.names.len();
        let mut columns: Vec<TextColumn> =
            (0..want).map(|_| text_column(self.batch_rows)).collect();
        let mut rows = 0;
        while rows < self.batch_rows || !self.build {
            if self.records.offset() >= self.end {
                break;
            }
            let Some(item) = self.records.next_item()? else {
                break;
            };
            let problem = match item.bad {
                Some(why) => Some((None, why)),
                None => check_record(&self.records.fields, want, self.encoding, &self.names),
            };
            if let Some((column, reason)) = problem {
                if self.build {
                    self.unreadable
                        .push(self.chunk, self.set_aside(item.line, column, reason));
                }
                continue;
            }
            self.lines.push(item.line);
            if self.skip > 0 {
                self.skip -= 1;
                continue;
            }
            if !self.build {
                continue;
            }
            let f = &self.records.fields;
            for (i, column) in columns.iter_mut().enumerate() {
                let before = column.values.len();
                decode_into(&mut column.values, f.get(i), self.encoding);
                let text = &column.values[before..];
                let null = (!f.quoted[i] || self.null_quoted)
                    && self.nulls[i].iter().any(|m| m.as_bytes() == text);
                if null {
                    column.values.truncate(before);
                }
                column.nulls.append(!null);
                let end = i32::try_from(column.values.len()).map_err(|_| {
                    Error::data(
                        show_path(&self.path),
                        format!(
                            "column {} holds more than 2 GiB of text in one batch of {} rows; lower batch_rows",
                            self.names[i], self.batch_rows
                        ),
                    )
                })?;
                column.offsets.push(end);
            }
            rows += 1;
        }
        if rows == 0 {
            return Ok(None);
        }
        let arrays = columns
            .into_iter()
            .map(|mut c| {
                let offsets = arrow::buffer::OffsetBuffer::new(c.offsets.into());
                let values = arrow::buffer::Buffer::from_vec(c.values);
                arrow::array::StringArray::try_new(offsets, values, c.nulls.finish())
                    .map(|a| Arc::new(a) as ArrayRef)
                    .map_err(|e| Error::Internal(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map(Some)
            .map_err(|e| Error::Internal(e.to_string()))
    }

    /// The last item, set aside: its exact bytes (without the line end) go with it.
    fn set_aside(&self, line: u64, column: Option<String>, reason: String) -> Unreadable {
        let raw = self.records.raw();
        let raw = raw
            .strip_suffix(b"\r\n")
            .or_else(|| raw.strip_suffix(b"\n"))
            .unwrap_or(raw);
        let text = String::from_utf8_lossy(raw).into_owned();
        let raw_bytes = (text.as_bytes() != raw).then(|| raw.to_vec());
        Unreadable {
            location: format!("{} line {line}", show_path(&self.path)),
            line,
            key: None,
            column,
            reason,
            raw: text,
            raw_bytes,
        }
    }
}

fn text_column(rows: usize) -> TextColumn {
    let mut offsets = Vec::with_capacity(rows + 1);
    offsets.push(0);
    TextColumn {
        values: Vec::new(),
        offsets,
        nulls: arrow::array::NullBufferBuilder::new(rows),
    }
}

/// How a chunk's records become batches.
enum Decode {
    Fast(FastDecoder),
    Slow(Box<SlowDecoder>),
}

struct CsvChunkReader {
    source: Arc<CsvSource>,
    chunk: Chunk,
    decode: Decode,
    offset: u64,
    failed: bool,
    batch_rows: usize,
}

impl Iterator for CsvChunkReader {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let batch = match self.next_raw() {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                self.failed = true;
                return Some(Err(e));
            }
            None => {
                self.failed = true;
                return self.check_count().err().map(Err);
            }
        };
        let (batch, lines) = batch;
        let offset = self.offset;
        self.offset += batch.num_rows() as u64;
        let lines = lines.into_iter().map(|l| l as i64).collect();
        let out = self.source.cast_declared(batch, &self.chunk, offset, lines);
        self.failed = out.is_err();
        Some(out)
    }
}

impl CsvChunkReader {
    /// The next batch of text columns, with the line each of its records starts on.
    /// When the fast decoder is unsure of a batch, the strict decoder reads the chunk
    /// again from its start, passes over the records already returned, and decodes the
    /// rest, so its results and messages are the reference.
    fn next_raw(&mut self) -> Option<Result<(RecordBatch, Vec<u64>)>> {
        if let Decode::Fast(fast) = &mut self.decode {
            match fast.next_batch() {
                Ok(Some(b)) => {
                    let lines = std::mem::take(&mut fast.lines);
                    if let (false, ChunkRange::Bytes { first_line, .. }) =
                        (fast.multiline, &self.chunk.range)
                    {
                        self.source.lines.set(
                            self.chunk.id,
                            ChunkLines::Consecutive {
                                first: *first_line,
                                rows: self.offset + b.num_rows() as u64,
                            },
                        );
                    }
                    return Some(Ok((b, lines)));
                }
                Ok(None) => return None,
                Err(Unsure::Io(e)) => {
                    let path = &self.source.files[self.chunk_file()];
                    return Some(Err(Error::io(path, e)));
                }
                Err(Unsure::Data) => {
                    match SlowDecoder::new(
                        &self.source,
                        &self.chunk,
                        self.offset,
                        self.batch_rows,
                        true,
                    ) {
                        Ok(d) => self.decode = Decode::Slow(Box::new(d)),
                        Err(e) => return Some(Err(e)),
                    }
                }
            }
        }
        let Decode::Slow(slow) = &mut self.decode else {
            unreachable!("the fast decoder returned above");
        };
        let first = self.offset as usize;
        let out = slow.next_batch().transpose().map(|b| {
            b.and_then(|b| {
                let lines = slow.lines.get(first..first + b.num_rows()).ok_or_else(|| {
                    Error::Internal(format!("{}: a batch's records have no lines", self.chunk))
                })?;
                Ok((b, lines.to_vec()))
            })
        });
        if out.is_none() && slow.skip == 0 {
            // The whole chunk was read: its lines locate rows without another pass.
            self.source.lines.set(
                self.chunk.id,
                ChunkLines::Listed(Arc::new(std::mem::take(&mut slow.lines))),
            );
        } else if out.is_none() {
            return Some(Err(Error::Internal(format!(
                "{}: the strict CSV reader found fewer rows than the {} read",
                self.chunk, self.offset
            ))));
        }
        out
    }

    /// Every record the plan counted in the chunk was read or set aside: a file that
    /// changed since it was planned (a resumed run) must not lose or repeat records.
    fn check_count(&self) -> Result<()> {
        let Some(planned) = self.chunk.rows else {
            return Ok(());
        };
        let set_aside = self.source.unreadable.get(self.chunk.id).len() as u64;
        if self.offset + set_aside == planned {
            return Ok(());
        }
        let path = show_path(&self.source.files[self.chunk_file()]);
        Err(Error::data(
            format!("{path} ({})", self.chunk),
            format!(
                "the chunk was planned with {planned} records, but {} were read and {set_aside} set aside: has the file changed since the run was planned?",
                self.offset
            ),
        ))
    }

    fn chunk_file(&self) -> usize {
        match &self.chunk.range {
            ChunkRange::Bytes { file, .. } => *file,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fast::Masks;
    use super::*;
    use crate::config::{Location, Spanned};

    fn source(file: &str) -> CsvSource {
        open_at(Path::new(env!("CARGO_MANIFEST_DIR")).join(file), file)
    }

    /// A CSV source with default options over `path`, named `name` in its url.
    fn open_at(path: PathBuf, name: &str) -> CsvSource {
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
        CsvSource::open(&config, vec![path]).unwrap()
    }

    /// The fast plan of one file, after its header.
    fn fast_plan(s: &CsvSource, path: &Path, rows: u64) -> Option<Vec<Part>> {
        let (start, line) = s.data_start(path).unwrap();
        s.fast_plan(path, start, line, rows).unwrap()
    }

    /// The strict plan of one file, as the fast scan reports it.
    fn slow_plan(s: &CsvSource, rows: u64) -> Vec<Part> {
        let slow = CsvSource {
            fast_scan: false,
            unreadable: SetAside::default(),
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
    fn fast_plan_matches_the_strict_scan_on_quoted_newlines_and_doubled_quotes() {
        let s = source("samples/orders.csv");
        for rows in [1, 2, 3, 7, 64, 100, 499, 500, 10_000] {
            let fast = fast_plan(&s, &s.files[0], rows).expect("orders.csv is plain RFC 4180");
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
            let (s, path) = written(dir.path(), name, text);
            assert_eq!(fast_plan(&s, &path, 10), None, "{name}");
        }
    }

    #[test]
    fn locating_every_row_of_a_chunk_scans_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::from("a,b\n");
        for i in 0..3000 {
            text.push_str(&format!("{i},x\n"));
        }
        let (s, _) = written(dir.path(), "many.csv", &text);
        let chunks = s.plan(10_000).unwrap();
        // Before the chunk is read, a first lookup scans it, once.
        for row in 0..3000u64 {
            let at = s.locate(&chunks[0], row);
            assert!(at.ends_with(&format!("many.csv line {}", row + 2)), "{at}");
        }
        assert_eq!(s.lines.scans.load(std::sync::atomic::Ordering::Relaxed), 1);
        // Read by the fast decoder, a chunk of one-line records needs no scan at all.
        let mut text = String::from("a,b\n");
        for i in 0..3000 {
            text.push_str(&format!("{i},x\n"));
        }
        text.push_str("3000,\"two\nlines\"\n3001,y\n");
        let (s, _) = written(dir.path(), "read.csv", &text);
        let chunks = s.plan(10_000).unwrap();
        let mut reader = s.read(&chunks[0], 1000).unwrap();
        reader.next().unwrap().unwrap();
        for row in 0..1000u64 {
            assert!(
                s.locate(&chunks[0], row)
                    .ends_with(&format!("read.csv line {}", row + 2))
            );
        }
        assert_eq!(s.lines.scans.load(std::sync::atomic::Ordering::Relaxed), 0);
        for b in reader {
            b.unwrap();
        }
        // The last batch had a record on two lines: the rest is found in one scan.
        assert!(s.locate(&chunks[0], 3001).ends_with("read.csv line 3004"));
        assert!(s.locate(&chunks[0], 3000).ends_with("read.csv line 3002"));
        assert_eq!(s.lines.scans.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn an_unclosed_quote_sets_aside_its_line_whatever_the_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::from("id,name\n");
        for i in 1..=50 {
            if i == 10 {
                text.push_str("10,\"open\n");
            } else {
                text.push_str(&format!("{i},name{i}\n"));
            }
        }
        let (s, _) = written(dir.path(), "open.csv", &text);
        for rows in [1, 3, 7, 9, 10, 100] {
            let chunks = s.plan(rows).unwrap();
            assert_eq!(chunks.iter().map(|c| c.rows.unwrap()).sum::<u64>(), 50);
            let (mut ids, mut bad) = (Vec::new(), Vec::new());
            for c in &chunks {
                for b in s.read(c, 4).unwrap() {
                    let b = b.unwrap();
                    let col = b
                        .column(0)
                        .as_any()
                        .downcast_ref::<arrow::array::StringArray>()
                        .unwrap();
                    ids.extend(col.iter().map(|v| v.unwrap().parse::<u64>().unwrap()));
                }
                bad.extend(s.unreadable(c));
            }
            assert_eq!(
                ids,
                (1..=50).filter(|&i| i != 10).collect::<Vec<_>>(),
                "{rows}"
            );
            assert_eq!(bad.len(), 1, "{rows}");
            assert_eq!((bad[0].line, bad[0].raw.as_str()), (11, "10,\"open"));
            assert!(
                bad[0]
                    .reason
                    .starts_with("unterminated quoted field opened at line 11"),
                "{}",
                bad[0].reason
            );
        }
    }

    #[test]
    fn each_row_carries_the_line_its_record_starts_on_whichever_decoder_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        // Line 4's record spans three lines; line 9's quote breaks RFC 4180, so the fast
        // decoder hands over to the strict one there (and the record is set aside).
        let text = "a,b\n1,x\n2,y\n3,\"p\nq\nr\"\n4,z\n5,w\nbad,x\"y\n6,v\n7,\"s\nt\"\n8,u\n";
        let (s, _) = written(dir.path(), "lines.csv", text);
        let want: Vec<(&str, i64)> = vec![
            ("1", 2),
            ("2", 3),
            ("3", 4),
            ("4", 7),
            ("5", 8),
            ("6", 10),
            ("7", 11),
            ("8", 13),
        ];
        for fast in [true, false] {
            let s = CsvSource {
                fast_scan: fast,
                ..s.clone_plain()
            };
            for (rows, batch_rows) in [(100, 1), (100, 3), (3, 2), (1, 1)] {
                let mut got = Vec::new();
                for c in s.plan(rows).unwrap() {
                    for b in s.read(&c, batch_rows).unwrap() {
                        let b = b.unwrap();
                        let a = b
                            .column(0)
                            .as_any()
                            .downcast_ref::<arrow::array::StringArray>()
                            .unwrap();
                        let l = b
                            .column_by_name(POSITION_LINE)
                            .unwrap()
                            .as_any()
                            .downcast_ref::<arrow::array::Int64Array>()
                            .unwrap();
                        let f = b
                            .column_by_name(POSITION_FILE)
                            .unwrap()
                            .as_any()
                            .downcast_ref::<arrow::array::StringArray>()
                            .unwrap();
                        for r in 0..b.num_rows() {
                            assert_eq!(f.value(r), "lines.csv");
                            got.push((a.value(r).to_string(), l.value(r)));
                        }
                    }
                }
                let got: Vec<(&str, i64)> = got.iter().map(|(a, l)| (a.as_str(), *l)).collect();
                assert_eq!(
                    got, want,
                    "fast {fast}, chunks of {rows}, batches of {batch_rows}"
                );
            }
        }
    }

    /// A source over `text`, written to `dir/name`.
    fn written(dir: &Path, name: &str, text: &str) -> (CsvSource, PathBuf) {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        (open_at(path.clone(), name), path)
    }

    /// A field: plain text, or quoted with commas, newlines and doubled quotes, long
    /// enough that records straddle the scan's 64-byte blocks.
    fn field() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "[a-z0-9 ]{0,40}",
            "[a-z,\n]{0,70}".prop_map(|t| format!("\"{t}\"")),
            "[a-z\"\n]{0,70}".prop_map(|t| format!("\"{}\"", t.replace('"', "\"\""))),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        #[test]
        fn fast_plan_matches_the_strict_scan_on_random_files(
            records in proptest::collection::vec(proptest::collection::vec(field(), 3), 0..40),
            newline_at_end in proptest::bool::ANY,
            damage in proptest::option::of((0usize..4000, proptest::sample::select(vec!['"', '\n', '\r', 'x']))),
            rows in 1u64..6,
        ) {
            let mut text = String::from("a,b,c\n");
            let lines: Vec<String> = records.iter().map(|r| r.join(",")).collect();
            text.push_str(&lines.join("\n"));
            if newline_at_end && !lines.is_empty() {
                text.push('\n');
            }
            if let Some((at, c)) = damage {
                let at = 6 + at % (text.len() - 5);
                if text.is_char_boundary(at) {
                    text.insert(at, c);
                }
            }
            let dir = tempfile::tempdir().unwrap();
            let (s, path) = written(dir.path(), "random.csv", &text);
            if let Some(fast) = fast_plan(&s, &path, rows) {
                proptest::prop_assert_eq!(fast, slow_plan(&s, rows));
            } else {
                // Only damage may make it decline: a clean file is plain RFC 4180 ...
                // unless an empty first field makes a blank line.
                proptest::prop_assert!(
                    damage.is_some() || lines.iter().any(|l| l.is_empty()) || (lines.is_empty() && newline_at_end) || text.ends_with('"')
                );
            }
        }

        #[test]
        fn fast_decoder_reads_what_the_strict_decoder_reads(
            records in proptest::collection::vec(proptest::collection::vec(field(), 2..5), 1..40),
            newline_at_end in proptest::bool::ANY,
            damage in proptest::option::of((0usize..4000, proptest::sample::select(vec!["\"", "\n", "\r", ",", "\u{e9}", "\n\n"]))),
            rows in 1u64..30,
            batch_rows in 1usize..9,
        ) {
            // Mostly 3 fields a record; 2 or 4 make ragged records.
            let mut text = String::from("a,b,c\n");
            let lines: Vec<String> = records
                .iter()
                .enumerate()
                .map(|(i, r)| if i % 7 == 3 { r.join(",") } else { r[..2.min(r.len())].join(",") + "," + &r[r.len() - 1] })
                .collect();
            text.push_str(&lines.join("\n"));
            if newline_at_end {
                text.push('\n');
            }
            if let Some((at, piece)) = damage {
                let at = 6 + at % (text.len() - 5);
                if text.is_char_boundary(at) {
                    text.insert_str(at, piece);
                }
            }
            let dir = tempfile::tempdir().unwrap();
            let (fast, _) = written(dir.path(), "random.csv", &text);
            let slow = CsvSource {
                fast_scan: false,
                ..fast.clone_plain()
            };
            let Ok(chunks) = slow.plan(rows) else {
                return Ok(()); // csv-core cannot plan it either
            };
            let read = |s: &CsvSource, c: &Chunk| -> Vec<std::result::Result<RecordBatch, String>> {
                s.read(c, batch_rows)
                    .unwrap()
                    .map(|r| r.map_err(|e| e.to_string()))
                    .collect()
            };
            for c in &chunks {
                proptest::prop_assert_eq!(read(&fast, c), read(&slow, c), "{}", c);
            }
        }

        #[test]
        fn sse2_masks_match_the_scalar_ones(block in proptest::collection::vec(proptest::sample::select(b"ab,\"\n\r;".to_vec()), 64)) {
            proptest::prop_assert_eq!(Masks::of(&block, b'"', b','), Masks::scalar(&block, b'"', b','));
            proptest::prop_assert_eq!(Masks::of(&block, b'\'', b';'), Masks::scalar(&block, b'\'', b';'));
        }
    }
}
