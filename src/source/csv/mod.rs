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
mod reader;
mod strict;

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use self::fast::{BlockScan, FastDecoder};
use self::reader::{CsvChunkReader, Decode, SlowDecoder};
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
            Some(line) => {
                // Sized for what a caller adds (the row's key): a chunk may name every
                // one of its rows.
                let mut at = String::with_capacity(shown.len() + 48);
                at.push_str(shown);
                at.push_str(" line ");
                at.push_str(itoa::Buffer::new().format(line));
                at
            }
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

#[cfg(test)]
mod tests;
