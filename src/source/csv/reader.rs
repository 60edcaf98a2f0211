//! Reading one chunk: the fast decoder while it is sure, the strict decoder
//! ([`SlowDecoder`]) from the first record it is not, and each row's line.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::fast::{FastDecoder, TextColumn, Unsure};
use super::strict::{Records, check_record, decode_into};
use super::{ChunkLines, CsvSource};
use crate::chunk::{Chunk, ChunkRange};
use crate::config::{Encoding, show_path};
use crate::source::{SetAside, Unreadable};
use crate::{Error, Result};

/// Decodes a chunk with the strict splitter: the reference for every record the fast
/// decoder declines. Records that cannot be read are set aside, with their exact bytes.
pub(super) struct SlowDecoder {
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
    pub(super) lines: Vec<u64>,
}

impl SlowDecoder {
    pub(super) fn new(
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
    pub(super) fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
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

pub(super) fn text_column(rows: usize) -> TextColumn {
    let mut offsets = Vec::with_capacity(rows + 1);
    offsets.push(0);
    TextColumn {
        values: Vec::new(),
        offsets,
        nulls: arrow::array::NullBufferBuilder::new(rows),
    }
}

/// How a chunk's records become batches.
pub(super) enum Decode {
    Fast(FastDecoder),
    Slow(Box<SlowDecoder>),
}

pub(super) struct CsvChunkReader {
    pub(super) source: Arc<CsvSource>,
    pub(super) chunk: Chunk,
    pub(super) decode: Decode,
    pub(super) offset: u64,
    pub(super) failed: bool,
    pub(super) batch_rows: usize,
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
