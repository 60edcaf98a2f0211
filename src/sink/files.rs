//! A directory of part files, one per chunk, each written under a temporary name and
//! renamed into place once complete, so a half-written file never looks finished.
//! Rejected rows go to `_rejects/part-NNNNN.ndjson` in the same directory (readers of
//! the data set skip folders whose name starts with `_`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use std::time::Instant;

use super::csv_part::{self, CsvPart};
use super::rejects_file::RejectsFile;
use super::{ChunkWriter, Committed, Prepare, Sink};
use crate::check::quarantine::QuarantineEntry;
use crate::check::readback::ReadBack;
use crate::checkpoint::DoneMark;
use crate::chunk::Chunk;
use crate::chunk::Selection;
use crate::config::{CsvOptions, FileFormat, IfExists, ParquetOptions, TargetConfig, show_path};
use crate::{Error, Result};

/// Writes `part-NNNNN.<ext>` files into a directory.
pub struct FileSink {
    dir: PathBuf,
    format: FileFormat,
    schema: SchemaRef,
    csv: CsvOptions,
    parquet: ParquetOptions,
    if_exists: IfExists,
}

impl FileSink {
    /// A sink for `dir`. Touches nothing until [`Sink::prepare`].
    pub fn new(config: &TargetConfig, dir: &Path, format: FileFormat, schema: SchemaRef) -> Self {
        FileSink {
            dir: dir.to_path_buf(),
            format,
            schema,
            csv: config.csv.clone(),
            parquet: config.parquet.clone(),
            if_exists: config.if_exists,
        }
    }

    /// The final name of a chunk's part file.
    pub fn part_path(&self, chunk_id: usize) -> PathBuf {
        self.dir
            .join(format!("part-{chunk_id:05}.{}", self.format.extension()))
    }

    fn rejects_dir(&self) -> PathBuf {
        self.dir.join("_rejects")
    }

    fn rejects_path(&self, chunk_id: usize) -> PathBuf {
        self.rejects_dir()
            .join(format!("part-{chunk_id:05}.ndjson"))
    }

    /// Files in `dir` whose names satisfy `keep`.
    fn list(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(dir, e)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            if keep(&entry.file_name().to_string_lossy()) {
                found.push(entry.path());
            }
        }
        found.sort();
        Ok(found)
    }

    fn parts(&self) -> Result<Vec<PathBuf>> {
        Self::list(&self.dir, |n| n.starts_with("part-"))
    }

    fn remove(paths: &[PathBuf]) -> Result<()> {
        for p in paths {
            std::fs::remove_file(p).map_err(|e| Error::io(p, e))?;
        }
        Ok(())
    }

    /// Removes temporary files an interrupted run left behind.
    fn remove_temporaries(&self) -> Result<()> {
        let tmp = |n: &str| n.starts_with(".part-") && n.ends_with(".tmp");
        Self::remove(&Self::list(&self.dir, tmp)?)?;
        Self::remove(&Self::list(&self.rejects_dir(), tmp)?)
    }

    fn remove_all(&self) -> Result<()> {
        Self::remove(&self.parts()?)?;
        Self::remove(&Self::list(&self.rejects_dir(), |n| {
            n.starts_with("part-")
        })?)?;
        self.remove_temporaries()
    }

    fn new_writer(&self, out: BufWriter<File>, shown: &str) -> Result<Format> {
        Ok(match self.format {
            FileFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(self.parquet.compression)
                    .set_max_row_group_row_count(Some(self.parquet.row_group_rows))
                    .build();
                Format::Parquet(Box::new(
                    ArrowWriter::try_new(out, self.schema.clone(), Some(props))
                        .map_err(|e| Error::data(shown, e))?,
                ))
            }
            FileFormat::Csv => Format::Csv(CsvPart::new(out, &self.csv, &self.schema, shown)?),
        })
    }

    /// Reads a part file back into the target schema.
    fn read_part(&self, path: &Path) -> Result<Vec<RecordBatch>> {
        let shown = show_path(path);
        if self.format == FileFormat::Csv {
            return csv_part::read_back(path, &self.csv, &self.schema);
        }
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let batches: std::result::Result<Vec<RecordBatch>, arrow::error::ArrowError> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|b| b.with_batch_size(8192).build())
                .map_err(|e| Error::data(&shown, format!("cannot be read back: {e}")))?
                .collect();
        let batches =
            batches.map_err(|e| Error::data(&shown, format!("cannot be read back: {e}")))?;
        // Parquet keeps the schema it was written with, field metadata included; compare
        // values under the target schema.
        batches
            .into_iter()
            .map(|b| {
                RecordBatch::try_new(self.schema.clone(), b.columns().to_vec()).map_err(|e| {
                    Error::data(&shown, format!("reads back with another schema: {e}"))
                })
            })
            .collect()
    }

    /// A chunk's part files: its own, and those `retry --rejects` added.
    fn chunk_parts(&self, chunk: usize) -> Result<Vec<PathBuf>> {
        let own = format!("part-{chunk:05}.");
        let requeued = format!("part-{chunk:05}-r");
        Self::list(&self.dir, |n| {
            n.starts_with(&own) || n.starts_with(&requeued)
        })
    }

    /// Writes `batches` to the part file `path` atomically (a temporary file, fsync,
    /// rename); with `verify`, reads it back before it takes its name.
    fn write_part(
        &self,
        path: &Path,
        batches: &[RecordBatch],
        verify: Option<&ReadBack>,
    ) -> Result<u64> {
        let mut w = PartWriter::create(self, path)?;
        for b in batches {
            w.write(b)?;
        }
        w.finish_checked(|tmp| self.read_back(tmp, verify))
    }

    /// Reads the finished part file `tmp` back and compares it with what was sent.
    fn read_back(&self, tmp: &Path, verify: Option<&ReadBack>) -> Result<()> {
        match verify {
            Some(v) => {
                let t0 = Instant::now();
                let back = self.read_part(tmp)?;
                v.verify(&back, t0)
            }
            None => Ok(()),
        }
    }
}

/// Writes `text` to `path` atomically.
fn write_atomic(path: &Path, text: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(text).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if written.is_err() {
        // A partial file would hold the disk's space (a full disk is the usual cause).
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn ndjson(entries: &[QuarantineEntry]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(entries.len() * 256);
    for e in entries {
        e.write_json_line(&mut out)?;
    }
    Ok(out)
}

impl Sink for FileSink {
    fn describe(&self) -> String {
        format!(
            "{} ({} part files)",
            show_path(&self.dir),
            self.format.extension()
        )
    }

    fn planned_ddl(&self) -> Result<Vec<String>> {
        let parts = self.parts()?;
        let mut out = Vec::new();
        if !self.dir.exists() {
            out.push(format!("create directory {}", show_path(&self.dir)));
        }
        match (parts.len(), self.if_exists) {
            (0, _) => {}
            (n, IfExists::Replace) => out.push(format!("delete {n} part files left by an earlier run")),
            (n, _) => out.push(format!("-- none: the directory holds {n} part files and if_exists = \"fail\"; run would stop")),
        }
        let codec = match self.format {
            FileFormat::Parquet => format!(", compression {}", self.parquet.compression),
            FileFormat::Csv => String::new(),
        };
        out.push(format!(
            "write one part-NNNNN.{} file per chunk into {}{codec}",
            self.format.extension(),
            show_path(&self.dir)
        ));
        Ok(out)
    }

    fn prepare(&self, how: Prepare) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        match how {
            Prepare::Resume => self.remove_temporaries(),
            Prepare::Restart => self.remove_all(),
            Prepare::Fresh => {
                let parts = self.parts()?;
                match (parts.len(), self.if_exists) {
                    (0, _) => self.remove_all(),
                    (_, IfExists::Replace) => self.remove_all(),
                    (n, _) => Err(Error::data(
                        show_path(&self.dir),
                        format!(
                            "the target directory already holds {n} part files from an earlier run; set if_exists = \"replace\" in [target] to overwrite them"
                        ),
                    )),
                }
            }
        }
    }

    fn check_done(&self, chunks: &[usize]) -> Result<()> {
        let missing: Vec<String> = chunks
            .iter()
            .map(|&c| self.part_path(c))
            .filter(|p| !p.exists())
            .map(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::Check(format!(
            "{}: the checkpoint says {} chunks are done but their part files are missing ({}{}); run with --restart to write everything again",
            show_path(&self.dir),
            missing.len(),
            missing
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            if missing.len() > 3 { ", ..." } else { "" }
        )))
    }

    fn open_chunk(&self, chunk: &Chunk) -> Result<Box<dyn ChunkWriter + '_>> {
        let part = PartWriter::create(self, &self.part_path(chunk.id))?;
        Ok(Box::new(FileChunk {
            sink: self,
            part,
            rejects: RejectsFile::new(self.rejects_path(chunk.id)),
        }))
    }

    fn read_rows(
        &self,
        chunk: usize,
        _selection: &Selection,
        _key: &[String],
    ) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for p in self.chunk_parts(chunk)? {
            out.extend(self.read_part(&p)?);
        }
        Ok(out)
    }

    fn remove_rows(&self, chunk: usize, _selection: &Selection) -> Result<()> {
        Self::remove(&self.chunk_parts(chunk)?)
    }

    fn scan(&self, f: &mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<()> {
        for p in self.parts()? {
            for b in self.read_part(&p)? {
                f(b)?;
            }
        }
        Ok(())
    }

    fn quarantine(&self) -> String {
        show_path(&self.rejects_dir())
    }

    fn read_quarantine(&self) -> Result<Vec<QuarantineEntry>> {
        let mut out = Vec::new();
        for path in Self::list(&self.rejects_dir(), |n| {
            n.starts_with("part-") && n.ends_with(".ndjson")
        })? {
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
                out.push(
                    serde_json::from_str(line).map_err(|e| {
                        Error::data(format!("{} line {}", show_path(&path), i + 1), e)
                    })?,
                );
            }
        }
        Ok(out)
    }

    fn requeue(
        &self,
        chunk: usize,
        passing: &[RecordBatch],
        remaining: &[QuarantineEntry],
        verify: Option<&ReadBack>,
    ) -> Result<u64> {
        let rows: usize = passing.iter().map(RecordBatch::num_rows).sum();
        let mut written = 0;
        if rows > 0 {
            // Named after its content, so a repeat after a crash rewrites the same file.
            let mut hasher = blake3::Hasher::new();
            for b in passing {
                let json = crate::check::quarantine::RowJsonWriter::new(b.schema_ref());
                for r in 0..b.num_rows() {
                    hasher.update(json.row(b, r).as_str().as_bytes());
                }
            }
            let tag = &hasher.finalize().to_hex()[..12];
            let path = self.dir.join(format!(
                "part-{chunk:05}-r{tag}.{}",
                self.format.extension()
            ));
            written = self.write_part(&path, passing, verify)?;
        }
        let path = self.rejects_path(chunk);
        if remaining.is_empty() {
            if path.exists() {
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
        } else {
            write_atomic(&path, &ndjson(remaining)?)?;
        }
        Ok(written)
    }
}

enum Format {
    Parquet(Box<ArrowWriter<BufWriter<File>>>),
    Csv(CsvPart),
}

/// One part file being written under a temporary name.
struct PartWriter {
    tmp: PathBuf,
    path: PathBuf,
    writer: Option<Format>,
    rows: u64,
    /// Set once the file has its final name; until then dropping the writer, whatever
    /// failed (a Parquet footer, a flush, an fsync on a full disk), removes it.
    renamed: bool,
}

impl PartWriter {
    fn create(sink: &FileSink, path: &Path) -> Result<Self> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = sink.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let writer =
            match sink.new_writer(BufWriter::with_capacity(1 << 20, file), &show_path(&tmp)) {
                Ok(w) => w,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            };
        Ok(PartWriter {
            tmp,
            path: path.to_path_buf(),
            writer: Some(writer),
            rows: 0,
            renamed: false,
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let shown = show_path(&self.tmp);
        match self.writer.as_mut() {
            Some(Format::Parquet(w)) => w.write(batch).map_err(|e| Error::data(shown, e))?,
            Some(Format::Csv(w)) => w.write(batch, &shown)?,
            None => return Err(Error::Internal("write after commit".into())),
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Closes and syncs the file, lets `check` read the temporary file, then renames it
    /// into place. If `check` fails, the temporary file is removed.
    fn finish_checked(mut self, check: impl FnOnce(&Path) -> Result<()>) -> Result<u64> {
        let shown = show_path(&self.tmp);
        let file = match self.writer.take() {
            Some(Format::Parquet(w)) => w
                .into_inner()
                .map_err(|e| Error::data(&shown, e))?
                .into_inner()
                .map_err(|e| Error::io(&self.tmp, e.into_error()))?,
            Some(Format::Csv(w)) => w.into_inner().map_err(|e| Error::io(&self.tmp, e))?,
            None => return Err(Error::Internal("commit twice".into())),
        };
        file.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        drop(file);
        check(&self.tmp)?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        self.renamed = true;
        Ok(self.rows)
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        if !self.renamed {
            // Close the file first (a Parquet writer holds it), then remove it.
            self.writer = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

struct FileChunk<'a> {
    sink: &'a FileSink,
    part: PartWriter,
    rejects: RejectsFile,
}

impl ChunkWriter for FileChunk<'_> {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.part.write(batch)
    }

    fn reject(&mut self, entries: Vec<QuarantineEntry>) -> Result<()> {
        self.rejects.write(&entries)
    }

    fn commit(self: Box<Self>, _mark: &DoneMark, verify: Option<&ReadBack>) -> Result<Committed> {
        // Rejects first: a crash between the two renames redoes the chunk, which rewrites
        // both files under the same names.
        let FileChunk {
            sink,
            part,
            rejects,
        } = *self;
        rejects.commit()?;
        // Read the finished file back before it takes its final name.
        let rows = part.finish_checked(|tmp| sink.read_back(tmp, verify))?;
        Ok(Committed {
            rows,
            marked: false,
        })
    }
}
