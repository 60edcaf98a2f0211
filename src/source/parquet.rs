//! Parquet files, split into chunks of whole row groups.

use std::fs::File;
use std::path::PathBuf;

use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};

use super::{
    BatchIter, POSITION_FILE, POSITION_ROW, Source, check_key, position_fields, position_names,
    with_position,
};
use crate::chunk::{Chunk, ChunkRange};
use crate::config::{SourceConfig, show_path};
use crate::{Error, Result};

/// One or more Parquet files with the same schema.
pub struct ParquetSource {
    files: Vec<PathBuf>,
    metas: Vec<ArrowReaderMetadata>,
    /// The files' columns.
    data_schema: SchemaRef,
    /// `data_schema` and the position columns (file, row).
    schema: SchemaRef,
    key: Vec<String>,
    /// The position columns' names.
    position: Vec<String>,
    /// Each file as the position column names it.
    file_names: Vec<String>,
}

impl ParquetSource {
    /// Reads every file's footer and checks the schemas agree.
    pub fn open(config: &SourceConfig, files: Vec<PathBuf>) -> Result<Self> {
        if let Some((name, _)) = config.types.first() {
            return Err(Error::Unsupported(format!(
                "[source.types] cannot retype Parquet columns (`{}`): Parquet files carry their own types; cast in the column's expr instead",
                name.value
            )));
        }
        let mut metas = Vec::with_capacity(files.len());
        for path in &files {
            let f = File::open(path).map_err(|e| Error::io(path, e))?;
            let meta = ArrowReaderMetadata::load(&f, ArrowReaderOptions::new())
                .map_err(|e| Error::data(show_path(path), e))?;
            metas.push(meta);
        }
        let schema = strip_metadata(metas[0].schema());
        for (path, meta) in files.iter().zip(&metas).skip(1) {
            let other = strip_metadata(meta.schema());
            if other != schema {
                return Err(Error::data(
                    show_path(path),
                    format!(
                        "schema differs from {}'s:\n  {}\nvs\n  {}",
                        show_path(&files[0]),
                        fmt_schema(&schema),
                        fmt_schema(&other)
                    ),
                ));
            }
        }
        let here = show_path(&files[0]);
        let mut fields: Vec<arrow::datatypes::Field> =
            schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.extend(position_fields(
            POSITION_ROW,
            schema.fields().iter().map(|f| f.name().as_str()),
            &here,
        )?);
        let data_schema = schema;
        let schema: SchemaRef = std::sync::Arc::new(arrow::datatypes::Schema::new(fields));
        let position = vec![POSITION_FILE.to_string(), POSITION_ROW.to_string()];
        let mut key = check_key(config, &schema, &here)?;
        if key.is_empty() {
            key = position.clone();
        }
        Ok(ParquetSource {
            file_names: position_names(&files),
            files,
            metas,
            data_schema,
            schema,
            key,
            position,
        })
    }
}

/// A chunk's batches, checked against the row count its row groups' metadata gave the
/// plan: a file whose pages hold fewer (or more) rows than its footer says must fail the
/// chunk, not lose (or add) rows without a word.
struct Counted<I> {
    batches: I,
    read: u64,
    planned: Option<u64>,
    here: String,
    done: bool,
}

impl<I: Iterator<Item = Result<arrow::record_batch::RecordBatch>>> Iterator for Counted<I> {
    type Item = Result<arrow::record_batch::RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.batches.next() {
            Some(Ok(b)) => {
                self.read += b.num_rows() as u64;
                Some(Ok(b))
            }
            Some(Err(e)) => {
                self.done = true;
                Some(Err(e))
            }
            None => {
                self.done = true;
                match self.planned {
                    Some(planned) if planned != self.read => Some(Err(Error::data(
                        &self.here,
                        format!(
                            "the footer gives these row groups {planned} rows, but {} were read: has the file changed since the run was planned?",
                            self.read
                        ),
                    ))),
                    _ => None,
                }
            }
        }
    }
}

fn strip_metadata(schema: &SchemaRef) -> SchemaRef {
    std::sync::Arc::new(arrow::datatypes::Schema::new(schema.fields().clone()))
}

fn fmt_schema(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Source for ParquetSource {
    fn describe(&self) -> String {
        if self.files.len() == 1 {
            show_path(&self.files[0])
        } else {
            format!(
                "{} Parquet files ({} ...)",
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
        for (file, meta) in self.metas.iter().enumerate() {
            let groups = meta.metadata().row_groups();
            let (mut first, mut rows, mut first_row, mut file_row) = (0usize, 0u64, 0u64, 0u64);
            for (i, rg) in groups.iter().enumerate() {
                let n = u64::try_from(rg.num_rows()).map_err(|_| {
                    Error::data(
                        show_path(&self.files[file]),
                        format!("row group {i} has {} rows in the footer", rg.num_rows()),
                    )
                })?;
                rows += n;
                file_row += n;
                if rows >= rows_per_chunk || i + 1 == groups.len() {
                    chunks.push(Chunk {
                        id: chunks.len(),
                        range: ChunkRange::RowGroups {
                            file,
                            first,
                            end: i + 1,
                            first_row,
                        },
                        rows: Some(rows),
                    });
                    first = i + 1;
                    first_row = file_row;
                    rows = 0;
                }
            }
        }
        Ok(chunks)
    }

    fn read(&self, chunk: &Chunk, batch_rows: usize) -> Result<BatchIter> {
        let ChunkRange::RowGroups {
            file,
            first,
            end,
            first_row,
        } = &chunk.range
        else {
            return Err(Error::Internal(format!("{chunk} is not a Parquet chunk")));
        };
        let path = &self.files[*file];
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        let reader =
            ParquetRecordBatchReaderBuilder::new_with_metadata(f, self.metas[*file].clone())
                .with_row_groups((*first..*end).collect())
                .with_batch_size(batch_rows)
                .build()
                .map_err(|e| Error::data(show_path(path), e))?;
        let shown = show_path(path);
        let (data_schema, schema) = (self.data_schema.clone(), self.schema.clone());
        let name = self.file_names[*file].clone();
        // The 1-based row number of the next row in its file.
        let mut next_row = *first_row as i64 + 1;
        let batches = reader.map(move |b| {
            let b = b.map_err(|e| Error::data(&shown, e))?;
            // Field metadata may differ per file; the plan's schema is the contract.
            let b = arrow::record_batch::RecordBatch::try_new(
                data_schema.clone(),
                b.columns().to_vec(),
            )
            .map_err(|e| Error::data(&shown, e))?;
            let rows = (next_row..next_row + b.num_rows() as i64).collect();
            next_row += b.num_rows() as i64;
            with_position(b, &schema, &name, rows)
        });
        Ok(Box::new(Counted {
            batches,
            read: 0,
            planned: chunk.rows,
            here: format!("{} row groups {first}..{end}", show_path(path)),
            done: false,
        }))
    }

    fn locate(&self, chunk: &Chunk, row: u64) -> String {
        match &chunk.range {
            ChunkRange::RowGroups {
                file, first_row, ..
            } => {
                format!(
                    "{} row {}",
                    show_path(&self.files[*file]),
                    first_row + row + 1
                )
            }
            _ => format!("{chunk} row {}", row + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Location, Spanned};

    #[test]
    fn a_chunk_that_reads_other_than_its_planned_rows_fails() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/events.parquet");
        let config = SourceConfig {
            url: Spanned {
                value: "events.parquet".into(),
                span: None,
            },
            location: Location::Files {
                path: path.clone(),
                format: crate::config::FileFormat::Parquet,
            },
            table: None,
            key: None,
            csv: Default::default(),
            types: Vec::new(),
            db: Default::default(),
        };
        let s = ParquetSource::open(&config, vec![path]).unwrap();
        let mut chunk = s.plan(u64::MAX).unwrap().remove(0);
        let planned = chunk.rows.unwrap();
        let read: u64 = s
            .read(&chunk, 1000)
            .unwrap()
            .map(|b| b.unwrap().num_rows() as u64)
            .sum();
        assert_eq!(read, planned);
        chunk.rows = Some(planned + 1);
        let last = s.read(&chunk, 1000).unwrap().last().unwrap();
        let err = last.unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "the footer gives these row groups {} rows, but {planned} were read",
                planned + 1
            )),
            "{err}"
        );
    }
}
