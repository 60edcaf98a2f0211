//! The fast paths: the planning scan and the decoder for plain RFC 4180 files, 64 bytes
//! at a time. Each declines what it cannot be sure of, and the strict splitter
//! ([`super::strict`]) handles it.

use std::fs::File;
use std::io::Read;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::Part;

/// The planning scan's state between 64-byte blocks. Each block becomes bit masks (bit
/// `i` for byte `i`) of quotes, newlines, carriage returns and delimiters; the prefix XOR
/// of the quote mask says which bytes are inside quotes, because in a plain RFC 4180 file
/// every quote opens or closes a field or is half of a doubled quote, which flips the
/// state twice. The checks below decline every file in which that is not so.
pub(super) struct BlockScan {
    rows_per_chunk: u64,
    /// The longest record the scan accepts: a longer one is left to the strict splitter,
    /// which sets it aside.
    max_record_bytes: u64,
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
    pub(super) fn new(start: u64, line: u64, rows_per_chunk: u64, max_record_bytes: u64) -> Self {
        BlockScan {
            rows_per_chunk,
            max_record_bytes,
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
    pub(super) fn block(&mut self, block: &[u8], q: u8, d: u8) -> bool {
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
        // A record longer than the bound spans a block end at least `bound - 64` bytes
        // past its start.
        if self.pos - self.boundary > self.max_record_bytes.saturating_sub(64) {
            return false;
        }
        let top = block.len() - 1;
        self.in_quotes = if inside >> top & 1 == 1 { u64::MAX } else { 0 };
        self.after_newline = newlines >> top & 1;
        self.after_delimiter = delims >> top & 1;
        self.after_close = close >> top & 1;
        true
    }

    /// The planned parts; `None` if the file ends inside quotes or right after a closing
    /// quote (which the scan leaves to csv-core).
    pub(super) fn finish(mut self) -> Option<Vec<Part>> {
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
pub(super) struct Masks {
    quote: u64,
    newline: u64,
    cr: u64,
    delim: u64,
}

impl Masks {
    pub(super) fn of(block: &[u8], q: u8, d: u8) -> Masks {
        #[cfg(target_arch = "x86_64")]
        if let Ok(full) = <&[u8; 64]>::try_from(block) {
            return Masks::sse2(full, q, d);
        }
        Masks::scalar(block, q, d)
    }

    pub(super) fn scalar(block: &[u8], q: u8, d: u8) -> Masks {
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
pub(super) enum Unsure {
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
/// columns, finding quotes, delimiters and newlines 64 bytes at a time. An empty unquoted
/// field is NULL and a quoted one (`""`) the empty string, as with the strict decoder.
pub(super) struct FastDecoder {
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
    /// A record longer than this is left to the strict decoder, which sets it aside.
    max_record_bytes: usize,
    /// Whether a record read so far spans lines (a quoted newline); until one does, the
    /// chunk's records are on consecutive lines (the decoder declines blank lines).
    pub(super) multiline: bool,
    /// The line the next record starts on.
    next_line: u64,
    /// The line each record of the batch being decoded starts on.
    pub(super) lines: Vec<u64>,
    /// End offsets (in `buf`) of the current record's fields.
    ends: Vec<usize>,
}

/// One text column being built.
pub(super) struct TextColumn {
    pub(super) values: Vec<u8>,
    pub(super) offsets: Vec<i32>,
    pub(super) nulls: arrow::array::NullBufferBuilder,
}

impl FastDecoder {
    pub(super) fn new(
        input: std::io::Take<File>,
        schema: SchemaRef,
        (quote, delim): (u8, u8),
        batch_rows: usize,
        max_record_bytes: usize,
        first_line: u64,
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
            max_record_bytes,
            multiline: false,
            next_line: first_line,
            lines: Vec::new(),
            ends: Vec::new(),
        }
    }

    /// The next batch, `None` at the chunk's end.
    pub(super) fn next_batch(&mut self) -> Result<Option<RecordBatch>, Unsure> {
        let n = self.schema.fields().len();
        self.lines.clear();
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
            if self.len >= self.max_record_bytes {
                return Err(Unsure::Data);
            }
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
            // A newline inside quotes: records no longer start one line apart.
            self.multiline |= newlines & inside != 0;
            let mut seps = (delims | newlines) & !inside;
            while seps != 0 {
                let bit = seps.trailing_zeros();
                seps &= seps - 1;
                let at = pos + bit as usize;
                self.ends.push(at);
                if newlines >> bit & 1 == 0 {
                    continue;
                }
                if at - self.start >= self.max_record_bytes {
                    return Err(Unsure::Data); // the strict decoder sets it aside
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
                self.lines.push(self.next_line);
                // A record's quoted newlines move the next one down as many lines.
                self.next_line += 1 + if self.multiline {
                    memchr::memchr_iter(b'\n', &self.buf[self.start..at]).count() as u64
                } else {
                    0
                };
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

/// Appends one raw field: quotes removed and doubled quotes undone; an empty unquoted field
/// is NULL, a quoted one the empty string.
pub(super) fn push_field(column: &mut TextColumn, raw: &[u8], q: u8) {
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
        column.nulls.append(true);
    } else {
        column.values.extend_from_slice(raw);
        column.nulls.append(!raw.is_empty());
    }
    // Exact unless the batch's values pass 2 GiB, which `next_batch` declines.
    column.offsets.push(column.values.len() as i32);
}
