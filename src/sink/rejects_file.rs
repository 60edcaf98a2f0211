//! A file target's quarantine for one chunk: `_rejects/part-NNNNN.ndjson`, written line
//! by line as the chunk rejects rows, under a temporary name until the chunk commits.
//!
//! Streamed rather than gathered: a chunk may reject most of its rows, and holding each
//! entry until the commit doubled the run's memory and its time (issue 30, item 11).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::check::quarantine::QuarantineEntry;
use crate::{Error, Result};

/// The open quarantine file of one chunk.
pub(super) struct RejectsFile {
    /// The final name.
    path: PathBuf,
    /// The temporary name, while the chunk is not committed.
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    line: Vec<u8>,
}

impl RejectsFile {
    /// A quarantine for the chunk whose final file is `path`; nothing is created until
    /// the first entry.
    pub(super) fn new(path: PathBuf) -> RejectsFile {
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        RejectsFile {
            path,
            tmp,
            out: None,
            line: Vec::with_capacity(512),
        }
    }

    /// Appends `entries`, one NDJSON line each.
    pub(super) fn write(&mut self, entries: &[QuarantineEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let out = match &mut self.out {
            Some(out) => out,
            None => {
                let dir = self.tmp.parent().unwrap_or(Path::new("."));
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                let f = File::create(&self.tmp).map_err(|e| Error::io(&self.tmp, e))?;
                self.out.insert(BufWriter::with_capacity(1 << 20, f))
            }
        };
        for e in entries {
            self.line.clear();
            e.write_json_line(&mut self.line)?;
            out.write_all(&self.line)
                .map_err(|e| Error::io(&self.tmp, e))?;
        }
        Ok(())
    }

    /// Makes the quarantine durable under its final name; with no entry, removes a file
    /// an earlier attempt of the chunk left there.
    pub(super) fn commit(mut self) -> Result<()> {
        let Some(out) = self.out.take() else {
            if self.path.exists() {
                std::fs::remove_file(&self.path).map_err(|e| Error::io(&self.path, e))?;
            }
            return Ok(());
        };
        let done = (|| {
            let f = out
                .into_inner()
                .map_err(|e| Error::io(&self.tmp, e.into_error()))?;
            f.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
            std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))
        })();
        if done.is_err() {
            // A partial file would hold the disk's space (a full disk is the usual cause).
            let _ = std::fs::remove_file(&self.tmp);
        }
        done
    }
}

impl Drop for RejectsFile {
    fn drop(&mut self) {
        // Not committed: the chunk failed, and its next attempt writes the file anew.
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
