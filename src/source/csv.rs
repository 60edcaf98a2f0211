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

use super::{BatchIter, SetAside, Source, Unreadable, check_key};
use crate::config::{CsvOptions, SourceConfig, show_path};
use crate::plan::{Chunk, ChunkRange};
use crate::transform::cast::cast_batch;
use crate::{Error, Result, RowFailure};

/// One or more CSV files with the same columns.
pub struct CsvSource {
    files: Vec<PathBuf>,
    opts: CsvOptions,
    /// Every column as text, the way the reader parses them.
    raw_schema: SchemaRef,
    /// After `[source.types]` casts.
    schema: SchemaRef,
    key: Vec<String>,
    /// `None` when the only null marker is the empty string, which is the Arrow reader's
    /// own rule and spares a regex call per field.
    null_regex: Option<regex::Regex>,
    /// Plan with the fast byte scan where it is sure; off only in tests that compare it
    /// with the csv-core scan.
    fast_scan: bool,
    /// Records that could not be read, by chunk id: shared with the chunk readers, which
    /// find them, and read by `locate`, which must not count them.
    unreadable: SetAside,
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
            unreadable: SetAside::default(),
        })
    }

    fn cast_declared(&self, batch: RecordBatch, chunk: &Chunk, offset: u64) -> Result<RecordBatch> {
        if self.schema == self.raw_schema {
            return Ok(batch);
        }
        cast_batch(batch, &self.schema, &self.describe(), |row| {
            self.locate(chunk, offset + row as u64)
        })
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

    fn key(&self) -> &[String] {
        &self.key
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
        let decode = if self.fast_decode() {
            let ChunkRange::Bytes {
                file, start, end, ..
            } = &chunk.range
            else {
                return Err(Error::Internal(format!("{chunk} is not a CSV chunk")));
            };
            let path = &self.files[*file];
            Decode::Fast(FastDecoder::new(
                self.open_range(path, *start, *end)?,
                self.raw_schema.clone(),
                self.opts.quote,
                self.opts.delimiter,
                batch_rows,
            ))
        } else {
            Decode::Arrow(self.arrow_reader(chunk, batch_rows)?)
        };
        // A redone chunk finds its unreadable records again.
        self.unreadable.clear(chunk.id);
        let this = CsvChunkReader {
            source: self.clone_handle(),
            chunk: chunk.clone(),
            decode,
            offset: 0,
            failed: false,
            salvaged: false,
            batch_rows,
        };
        Ok(Box::new(this))
    }

    fn unreadable(&self, chunk: &Chunk) -> Vec<Unreadable> {
        self.unreadable.get(chunk.id)
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
            .get(chunk.id)
            .iter()
            .map(|u| u.line)
            .collect();
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
        let (boundary, line) = if self.opts.header {
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
        let mut scan = BlockScan::new(boundary, line, rows_per_chunk);
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

    /// Whether chunks are read with [`FastDecoder`]: quotes are doubled, the empty field
    /// is the only null marker, and quote and delimiter are distinct from newlines.
    fn fast_decode(&self) -> bool {
        let (q, d) = (self.opts.quote, self.opts.delimiter);
        self.fast_scan
            && self.opts.escape.is_none()
            && self.null_regex.is_none()
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

    /// The Arrow CSV reader over a chunk.
    fn arrow_reader(&self, chunk: &Chunk, batch_rows: usize) -> Result<ArrowCsv> {
        let ChunkRange::Bytes {
            file, start, end, ..
        } = &chunk.range
        else {
            return Err(Error::Internal(format!("{chunk} is not a CSV chunk")));
        };
        let path = &self.files[*file];
        let reader = self
            .arrow_builder(batch_rows)
            .build(BufReader::with_capacity(
                1 << 20,
                self.open_range(path, *start, *end)?,
            ))
            .map_err(|e| Error::data(show_path(path), e))?;
        Ok(Box::new(reader))
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

    /// The Arrow CSV reader's settings for this source.
    fn arrow_builder(&self, batch_rows: usize) -> arrow::csv::ReaderBuilder {
        let mut builder = arrow::csv::ReaderBuilder::new(self.raw_schema.clone())
            .with_header(false)
            .with_delimiter(self.opts.delimiter)
            .with_quote(self.opts.quote)
            .with_batch_size(batch_rows);
        if let Some(r) = &self.null_regex {
            builder = builder.with_null_regex(r.clone());
        }
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
                    key: None,
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
        self.unreadable.set(chunk.id, bad);
        Ok((good, found))
    }
}

/// The planning scan's state between 64-byte blocks. Each block becomes bit masks (bit
/// `i` for byte `i`) of quotes, newlines, carriage returns and delimiters; the prefix XOR
/// of the quote mask says which bytes are inside quotes, because in a plain RFC 4180 file
/// every quote opens or closes a field or is half of a doubled quote, which flips the
/// state twice. The checks below decline every file in which that is not so.
struct BlockScan {
    rows_per_chunk: u64,
    parts: Vec<Part>,
    /// File offset of the next block.
    pos: u64,
    /// Line number at `pos`.
    line: u64,
    /// One past the last record's newline.
    boundary: u64,
    chunk_start: u64,
    chunk_line: u64,
    rows: u64,
    /// All ones when `pos` is inside quotes.
    in_quotes: u64,
    /// Bit 0 set when the byte before `pos` is a newline (or `pos` starts the scan), a
    /// delimiter, or a closing quote.
    after_newline: u64,
    after_delimiter: u64,
    after_close: u64,
}

impl BlockScan {
    fn new(start: u64, line: u64, rows_per_chunk: u64) -> Self {
        BlockScan {
            rows_per_chunk,
            parts: Vec::new(),
            pos: start,
            line,
            boundary: start,
            chunk_start: start,
            chunk_line: line,
            rows: 0,
            in_quotes: 0,
            after_newline: 1,
            after_delimiter: 0,
            after_close: 0,
        }
    }

    /// Scans up to 64 bytes; false when the file is not plain RFC 4180 as far as the scan
    /// can tell.
    fn block(&mut self, block: &[u8], q: u8, d: u8) -> bool {
        let valid = if block.len() == 64 {
            u64::MAX
        } else {
            (1u64 << block.len()) - 1
        };
        let m = Masks::of(block, q, d);
        let (quotes, newlines, delims) = (m.quote & valid, m.newline & valid, m.delim & valid);
        if m.cr & valid != 0 {
            return false;
        }
        // Inside quotes after byte i, and before it.
        let inside = prefix_xor(quotes) ^ self.in_quotes;
        let inside_before = (inside << 1) | (self.in_quotes & 1);
        let open = quotes & !inside_before;
        let close = quotes & inside_before;
        let after_newline = (newlines << 1) | self.after_newline;
        let after_delim = (delims << 1) | self.after_delimiter;
        let after_close = (close << 1) | self.after_close;
        // A quote opens a field: after a delimiter, a record's end, or a closing quote
        // (a doubled quote inside a quoted field).
        if open & !(after_newline | after_delim | after_close) != 0 {
            return false;
        }
        // A closing quote ends the field, or is the first half of a doubled quote.
        if after_close & valid & !(quotes | delims | newlines) != 0 {
            return false;
        }
        let ends = newlines & !inside;
        // A record's end right after another's (or the scan's start) is a blank line.
        if ends & after_newline != 0 {
            return false;
        }
        let mut left = ends;
        while left != 0 {
            let need = self.rows_per_chunk - self.rows;
            let count = u64::from(left.count_ones());
            if count < need {
                self.rows += count;
                break;
            }
            for _ in 1..need {
                left &= left - 1;
            }
            let bit = left.trailing_zeros();
            left &= left - 1;
            let through = if bit == 63 {
                u64::MAX
            } else {
                (1u64 << (bit + 1)) - 1
            };
            let end = self.pos + u64::from(bit) + 1;
            self.parts
                .push((self.chunk_start, end, self.chunk_line, self.rows_per_chunk));
            self.chunk_start = end;
            self.chunk_line = self.line + u64::from((newlines & through).count_ones());
            self.rows = 0;
        }
        if ends != 0 {
            self.boundary = self.pos + u64::from(64 - ends.leading_zeros());
        }
        self.line += u64::from(newlines.count_ones());
        self.pos += block.len() as u64;
        let top = block.len() - 1;
        self.in_quotes = if inside >> top & 1 == 1 { u64::MAX } else { 0 };
        self.after_newline = newlines >> top & 1;
        self.after_delimiter = delims >> top & 1;
        self.after_close = close >> top & 1;
        true
    }

    /// The planned parts; `None` if the file ends inside quotes or right after a closing
    /// quote (which the scan leaves to csv-core).
    fn finish(mut self) -> Option<Vec<Part>> {
        if self.in_quotes != 0 || self.after_close != 0 {
            return None;
        }
        if self.pos > self.boundary {
            self.rows += 1; // a last record without a newline
            self.boundary = self.pos;
        }
        if self.rows > 0 {
            self.parts
                .push((self.chunk_start, self.boundary, self.chunk_line, self.rows));
        }
        Some(self.parts)
    }
}

/// Bit `i` set when byte `i` of `x` flips the quote state: the XOR of bits `0..=i`.
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// Which bytes of a block of at most 64 are quotes, newlines, carriage returns and
/// delimiters (bits past the block's end are zero).
#[derive(Debug, Default, PartialEq, Eq)]
struct Masks {
    quote: u64,
    newline: u64,
    cr: u64,
    delim: u64,
}

impl Masks {
    fn of(block: &[u8], q: u8, d: u8) -> Masks {
        #[cfg(target_arch = "x86_64")]
        if let Ok(full) = <&[u8; 64]>::try_from(block) {
            return Masks::sse2(full, q, d);
        }
        Masks::scalar(block, q, d)
    }

    fn scalar(block: &[u8], q: u8, d: u8) -> Masks {
        let mut m = Masks::default();
        for (i, &b) in block.iter().enumerate() {
            m.quote |= u64::from(b == q) << i;
            m.newline |= u64::from(b == b'\n') << i;
            m.cr |= u64::from(b == b'\r') << i;
            m.delim |= u64::from(b == d) << i;
        }
        m
    }

    #[cfg(target_arch = "x86_64")]
    fn sse2(block: &[u8; 64], q: u8, d: u8) -> Masks {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
        };
        let mut m = Masks::default();
        // SAFETY: SSE2 is part of every x86_64 target, and each unaligned load reads bytes
        // 16k..16k+16 of a 64-byte array.
        unsafe {
            let (vq, vn, vr, vd) = (
                _mm_set1_epi8(q as i8),
                _mm_set1_epi8(b'\n' as i8),
                _mm_set1_epi8(b'\r' as i8),
                _mm_set1_epi8(d as i8),
            );
            for k in 0..4 {
                let v = _mm_loadu_si128(block.as_ptr().add(16 * k).cast::<__m128i>());
                let bits =
                    |c| u64::from(_mm_movemask_epi8(_mm_cmpeq_epi8(v, c)) as u16) << (16 * k);
                m.quote |= bits(vq);
                m.newline |= bits(vn);
                m.cr |= bits(vr);
                m.delim |= bits(vd);
            }
        }
        m
    }
}

/// Why [`FastDecoder`] gave up.
enum Unsure {
    /// Something it leaves to the Arrow reader: not plain RFC 4180, a wrong field count,
    /// invalid UTF-8.
    Data,
    /// Reading the file failed.
    Io(std::io::Error),
}

impl From<std::io::Error> for Unsure {
    fn from(e: std::io::Error) -> Self {
        Unsure::Io(e)
    }
}

/// Decodes plain RFC 4180 records (the planning scan's test) straight into Arrow string
/// columns, finding quotes, delimiters and newlines 64 bytes at a time. A field is NULL
/// when it is empty, quoted or not, as with the Arrow reader.
struct FastDecoder {
    input: std::io::Take<File>,
    /// Bytes read; `buf[start..len]` are not decoded yet and start a record.
    buf: Vec<u8>,
    start: usize,
    len: usize,
    eof: bool,
    schema: SchemaRef,
    quote: u8,
    delim: u8,
    batch_rows: usize,
    /// End offsets (in `buf`) of the current record's fields.
    ends: Vec<usize>,
}

/// One text column being built.
struct TextColumn {
    values: Vec<u8>,
    offsets: Vec<i32>,
    nulls: arrow::array::NullBufferBuilder,
}

impl FastDecoder {
    fn new(
        input: std::io::Take<File>,
        schema: SchemaRef,
        quote: u8,
        delim: u8,
        batch_rows: usize,
    ) -> Self {
        FastDecoder {
            input,
            buf: vec![0; 1 << 20],
            start: 0,
            len: 0,
            eof: false,
            schema,
            quote,
            delim,
            batch_rows: batch_rows.max(1),
            ends: Vec::new(),
        }
    }

    /// The next batch, `None` at the chunk's end.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, Unsure> {
        let n = self.schema.fields().len();
        let mut columns: Vec<TextColumn> = (0..n)
            .map(|_| {
                let mut offsets = Vec::with_capacity(self.batch_rows + 1);
                offsets.push(0);
                TextColumn {
                    values: Vec::new(),
                    offsets,
                    nulls: arrow::array::NullBufferBuilder::new(self.batch_rows),
                }
            })
            .collect();
        let mut rows = 0;
        loop {
            rows += self.decode(&mut columns, self.batch_rows - rows)?;
            if rows == self.batch_rows {
                break;
            }
            if self.eof {
                if self.start < self.len {
                    return Err(Unsure::Data); // ends inside quotes
                }
                break;
            }
            self.refill()?;
        }
        if rows == 0 {
            return Ok(None);
        }
        let arrays = columns
            .into_iter()
            .map(|mut c| {
                if i32::try_from(c.values.len()).is_err() {
                    return Err(Unsure::Data);
                }
                let offsets = arrow::buffer::OffsetBuffer::new(c.offsets.into());
                let values = arrow::buffer::Buffer::from_vec(c.values);
                // Checks UTF-8, and that every value starts on a character boundary.
                arrow::array::StringArray::try_new(offsets, values, c.nulls.finish())
                    .map(|a| Arc::new(a) as ArrayRef)
                    .map_err(|_| Unsure::Data)
            })
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map(Some)
            .map_err(|_| Unsure::Data)
    }

    /// Moves the undecoded bytes to the front and reads more. At the end of the input a
    /// last record without a newline gets one.
    fn refill(&mut self) -> Result<(), Unsure> {
        self.buf.copy_within(self.start..self.len, 0);
        self.len -= self.start;
        self.start = 0;
        if self.len == self.buf.len() {
            // One record fills the buffer.
            self.buf.resize(self.buf.len() * 2, 0);
        }
        while self.len < self.buf.len() {
            match self.input.read(&mut self.buf[self.len..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(k) => self.len += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        if self.eof && self.len > 0 && self.buf[self.len - 1] != b'\n' {
            if self.len == self.buf.len() {
                self.buf.push(0);
            }
            self.buf[self.len] = b'\n';
            self.len += 1;
        }
        Ok(())
    }

    /// Decodes up to `max` whole records from `buf[start..len]` into `columns`; returns how
    /// many. `start` moves past them.
    fn decode(&mut self, columns: &mut [TextColumn], max: usize) -> Result<usize, Unsure> {
        let (q, d) = (self.quote, self.delim);
        let mut rows = 0;
        let mut pos = self.start;
        // The scan state at `pos`, a record's start: outside quotes, after a newline.
        let (mut in_quotes, mut after_nl, mut after_d, mut after_c) = (0u64, 1u64, 0u64, 0u64);
        self.ends.clear();
        while pos < self.len && rows < max {
            let block = &self.buf[pos..self.len.min(pos + 64)];
            let top = block.len() - 1;
            let valid = if block.len() == 64 {
                u64::MAX
            } else {
                (1u64 << block.len()) - 1
            };
            let m = Masks::of(block, q, d);
            let (quotes, newlines, delims) = (m.quote & valid, m.newline & valid, m.delim & valid);
            let inside = prefix_xor(quotes) ^ in_quotes;
            let inside_before = (inside << 1) | (in_quotes & 1);
            let open = quotes & !inside_before;
            let close = quotes & inside_before;
            let after_newline = (newlines << 1) | after_nl;
            let after_delim = (delims << 1) | after_d;
            let after_close = (close << 1) | after_c;
            if m.cr & valid != 0
                || open & !(after_newline | after_delim | after_close) != 0
                || after_close & valid & !(quotes | delims | newlines) != 0
                || newlines & !inside & after_newline != 0
            {
                return Err(Unsure::Data);
            }
            let mut seps = (delims | newlines) & !inside;
            while seps != 0 {
                let bit = seps.trailing_zeros();
                seps &= seps - 1;
                let at = pos + bit as usize;
                self.ends.push(at);
                if newlines >> bit & 1 == 0 {
                    continue;
                }
                if self.ends.len() != columns.len() {
                    return Err(Unsure::Data);
                }
                let mut field_start = self.start;
                for (column, &end) in columns.iter_mut().zip(&self.ends) {
                    push_field(column, &self.buf[field_start..end], q);
                    field_start = end + 1;
                }
                self.ends.clear();
                self.start = at + 1;
                rows += 1;
                if rows == max {
                    return Ok(rows);
                }
            }
            in_quotes = if inside >> top & 1 == 1 { u64::MAX } else { 0 };
            after_nl = newlines >> top & 1;
            after_d = delims >> top & 1;
            after_c = close >> top & 1;
            pos += block.len();
        }
        Ok(rows)
    }
}

/// Appends one raw field: quotes removed and doubled quotes undone; empty is NULL.
fn push_field(column: &mut TextColumn, raw: &[u8], q: u8) {
    if raw.first() == Some(&q) {
        // The scan checked that a quoted field ends with its closing quote.
        let inner = &raw[1..raw.len() - 1];
        let mut rest = inner;
        while let Some(i) = memchr::memchr(q, rest) {
            // A doubled quote: keep one.
            column.values.extend_from_slice(&rest[..=i]);
            rest = &rest[i + 2..];
        }
        column.values.extend_from_slice(rest);
        column.nulls.append(!inner.is_empty());
    } else {
        column.values.extend_from_slice(raw);
        column.nulls.append(!raw.is_empty());
    }
    // Exact unless the batch's values pass 2 GiB, which `next_batch` declines.
    column.offsets.push(column.values.len() as i32);
}

/// An Arrow CSV reader over a chunk's bytes, or over the records `salvage` kept.
type ArrowCsv = Box<dyn Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>> + Send>;

/// How a chunk's records become batches.
enum Decode {
    Fast(FastDecoder),
    Arrow(ArrowCsv),
}

struct CsvChunkReader {
    source: Arc<CsvSource>,
    chunk: Chunk,
    decode: Decode,
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
        let batch = match self.next_raw()? {
            Ok(b) => b,
            Err(e) if !self.salvaged => {
                // A record arrow cannot read: set the unreadable ones aside for the
                // quarantine and read the rest of the chunk without them.
                match self.source.salvage(&self.chunk, self.offset) {
                    Ok((good, found)) if found > 0 => {
                        self.salvaged = true;
                        match self
                            .source
                            .arrow_builder(self.batch_rows)
                            .build(std::io::Cursor::new(good))
                        {
                            Ok(r) => self.decode = Decode::Arrow(Box::new(r)),
                            Err(e) => {
                                self.failed = true;
                                return Some(Err(Error::Internal(e.to_string())));
                            }
                        }
                        return self.next();
                    }
                    Ok(_) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                    Err(err) => {
                        self.failed = true;
                        return Some(Err(err));
                    }
                }
            }
            Err(e) => {
                self.failed = true;
                return Some(Err(e));
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
    /// The next batch of text columns. When the fast decoder is unsure of a batch, the
    /// Arrow reader reads the chunk again from its start, skips the batches already
    /// returned, and decodes the rest, so its results and messages are the reference.
    fn next_raw(&mut self) -> Option<Result<RecordBatch>> {
        if let Decode::Fast(fast) = &mut self.decode {
            match fast.next_batch() {
                Ok(Some(b)) => return Some(Ok(b)),
                Ok(None) => return None,
                Err(Unsure::Io(e)) => {
                    let path = &self.source.files[self.chunk_file()];
                    return Some(Err(Error::io(path, e)));
                }
                Err(Unsure::Data) => {
                    let mut reader = match self.source.arrow_reader(&self.chunk, self.batch_rows) {
                        Ok(r) => r,
                        Err(e) => return Some(Err(e)),
                    };
                    // Only whole batches were returned before the last one.
                    let mut skipped = 0u64;
                    while skipped < self.offset {
                        match reader.next() {
                            Some(Ok(b)) => skipped += b.num_rows() as u64,
                            Some(Err(e)) => return Some(Err(self.parse_error(e))),
                            None => break,
                        }
                    }
                    if skipped != self.offset {
                        return Some(Err(Error::Internal(format!(
                            "{}: the CSV reader found {skipped} rows where {} were read",
                            self.chunk, self.offset
                        ))));
                    }
                    self.decode = Decode::Arrow(reader);
                }
            }
        }
        let Decode::Arrow(reader) = &mut self.decode else {
            unreachable!("the fast decoder returned above");
        };
        Some(reader.next()?.map_err(|e| self.parse_error(e)))
    }

    fn chunk_file(&self) -> usize {
        match &self.chunk.range {
            ChunkRange::Bytes { file, .. } => *file,
            _ => 0,
        }
    }

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

/// A regex matching exactly the configured null markers (and nothing if there are none);
/// `None` for the empty string alone, which the Arrow reader already reads as NULL.
fn null_regex(markers: &[String]) -> Option<regex::Regex> {
    if markers.iter().all(String::is_empty) && !markers.is_empty() {
        return None;
    }
    let pattern = if markers.is_empty() {
        r"[^\s\S]".to_string()
    } else {
        let alts: Vec<String> = markers.iter().map(|m| regex::escape(m)).collect();
        format!("^(?:{})$", alts.join("|"))
    };
    Some(regex::Regex::new(&pattern).expect("escaped markers form a valid regex"))
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

    /// The slow, csv-core plan of one file, as the fast scan reports it.
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
            let (s, path) = written(dir.path(), name, text);
            assert_eq!(s.fast_plan(&path, 10).unwrap(), None, "{name}");
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
        fn fast_plan_matches_csv_core_on_random_files(
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
            if let Some(fast) = s.fast_plan(&path, rows).unwrap() {
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
        fn fast_decoder_reads_what_the_arrow_reader_reads(
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
