//! A directory of part files, one per chunk, each written under a temporary name and
//! renamed into place once complete, so a half-written file never looks finished.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use super::{ChunkWriter, Sink};
use crate::config::{CsvOptions, FileFormat, IfExists, ParquetOptions, TargetConfig, show_path};
use crate::plan::Chunk;
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

    /// Part files and leftover temporary files already in the directory.
    fn existing_parts(&self) -> Result<Vec<PathBuf>> {
        let mut found = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("part-") || (name.starts_with(".part-") && name.ends_with(".tmp")) {
                found.push(entry.path());
            }
        }
        found.sort();
        Ok(found)
    }
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
        let parts = self.existing_parts()?;
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

    fn prepare(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let parts = self.existing_parts()?;
        if parts.is_empty() {
            return Ok(());
        }
        match self.if_exists {
            IfExists::Replace => {
                for p in parts {
                    std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
                }
                Ok(())
            }
            _ => Err(Error::data(
                show_path(&self.dir),
                format!(
                    "the target directory already holds {} part files from an earlier run; set if_exists = \"replace\" in [target] to overwrite them",
                    parts.len()
                ),
            )),
        }
    }

    fn open_chunk(&self, chunk: &Chunk) -> Result<Box<dyn ChunkWriter>> {
        let path = self.part_path(chunk.id);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let out = BufWriter::with_capacity(1 << 20, file);
        let writer = match self.format {
            FileFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(self.parquet.compression)
                    .set_max_row_group_row_count(Some(self.parquet.row_group_rows))
                    .build();
                let w = ArrowWriter::try_new(out, self.schema.clone(), Some(props))
                    .map_err(|e| Error::data(show_path(&tmp), e))?;
                Format::Parquet(w)
            }
            FileFormat::Csv => {
                let mut b = arrow::csv::WriterBuilder::new()
                    .with_header(self.csv.header)
                    .with_delimiter(self.csv.delimiter)
                    .with_quote(self.csv.quote);
                if let Some(null) = self.csv.null.first() {
                    b = b.with_null(null.clone());
                }
                Format::Csv(b.build(out))
            }
        };
        Ok(Box::new(PartWriter {
            tmp,
            path,
            writer: Some(writer),
            rows: 0,
            schema: self.schema.clone(),
        }))
    }
}

enum Format {
    Parquet(ArrowWriter<BufWriter<File>>),
    Csv(arrow::csv::Writer<BufWriter<File>>),
}

struct PartWriter {
    tmp: PathBuf,
    path: PathBuf,
    writer: Option<Format>,
    rows: u64,
    schema: SchemaRef,
}

impl ChunkWriter for PartWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let shown = show_path(&self.tmp);
        match self.writer.as_mut() {
            Some(Format::Parquet(w)) => w.write(batch).map_err(|e| Error::data(shown, e))?,
            Some(Format::Csv(w)) => w.write(batch).map_err(|e| Error::data(shown, e))?,
            None => return Err(Error::Internal("write after commit".into())),
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<u64> {
        let shown = show_path(&self.tmp);
        let file = match self.writer.take() {
            Some(Format::Parquet(w)) => w.into_inner().map_err(|e| Error::data(&shown, e))?,
            Some(Format::Csv(w)) => {
                let mut w = w;
                if self.rows == 0 {
                    // arrow writes the header with the first batch; an empty part still gets one.
                    w.write(&RecordBatch::new_empty(self.schema.clone()))
                        .map_err(|e| Error::data(&shown, e))?;
                }
                w.into_inner()
            }
            None => return Err(Error::Internal("commit twice".into())),
        };
        let file = file
            .into_inner()
            .map_err(|e| Error::io(&self.tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(self.rows)
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
