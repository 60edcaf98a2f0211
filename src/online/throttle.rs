//! The catch-up's brakes (docs/online.md): a pace of `[online] max_rows_per_second`
//! logged changes, and `rowshift pause` / `rowshift resume`, whose flag is a file beside
//! the pipeline (`<pipeline file>.paused`). A file, as gh-ost's throttle flag is: it
//! costs the loop one `stat` per batch, it can be made and removed by hand (`touch`,
//! `rm`) when rowshift itself cannot be run, and it asks nothing of a server that may
//! be the reason for pausing. The replay position stays in the target, so a paused
//! catch-up, or one killed while paused, goes on from where it stood.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Paces batches so that no more than `rate` changes a second are replayed: a batch
/// of `n` changes that starts at `t` lets the next start at `t + n / rate` at the
/// earliest. Time left unused is not saved up, so an idle spell allows no burst.
#[derive(Debug)]
pub(super) struct Pacer {
    rate: u64,
    next: Instant,
}

impl Pacer {
    /// A pace of `rate` changes a second (0: none).
    pub(super) fn new(rate: u64) -> Pacer {
        Pacer {
            rate,
            next: Instant::now(),
        }
    }

    /// The most changes a batch may take: `batch_rows`, or one second's worth when that
    /// is fewer, so that the pace is kept within each second rather than on average.
    pub(super) fn batch(&self, batch_rows: usize) -> usize {
        match self.rate {
            0 => batch_rows,
            r => batch_rows.min(r as usize).max(1),
        }
    }

    /// Waits until the next batch may start (or `stop` says to stop); returns when it
    /// started.
    pub(super) fn wait(&self, stop: &dyn Fn() -> bool) -> Instant {
        while self.rate > 0 && !stop() {
            let now = Instant::now();
            if now >= self.next {
                return now;
            }
            std::thread::sleep((self.next - now).min(Duration::from_millis(100)));
        }
        Instant::now()
    }

    /// Records that a batch of `n` changes started at `start`.
    pub(super) fn done(&mut self, start: Instant, n: usize) {
        if self.rate > 0 && n > 0 {
            self.next = start.max(self.next) + Duration::from_secs_f64(n as f64 / self.rate as f64);
        }
    }
}

/// The pause flag of the pipeline in `file`.
pub fn flag(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".paused");
    PathBuf::from(name)
}

/// What the pause flag of the pipeline in `file` says (when and by what it was set), if
/// it is there.
pub fn paused(file: &Path) -> Option<String> {
    let f = flag(file);
    match std::fs::read_to_string(&f) {
        Ok(text) => {
            let said = text.trim();
            Some(if said.is_empty() {
                format!("paused by {}", f.display())
            } else {
                format!("{said} ({})", f.display())
            })
        }
        // Present but unreadable still pauses: the flag is its existence.
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Some(format!("paused by {}", f.display()))
        }
        Err(_) => None,
    }
}

/// Sets the pause flag of the pipeline in `file`; returns its path.
pub fn pause(file: &Path) -> Result<PathBuf> {
    let f = flag(file);
    let text = format!(
        "paused at {} by rowshift pause\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
    );
    std::fs::write(&f, text).map_err(|e| {
        Error::Unsupported(format!("cannot write the pause flag {}: {e}", f.display()))
    })?;
    Ok(f)
}

/// Removes the pause flag of the pipeline in `file`; returns its path if it was there.
pub fn resume(file: &Path) -> Result<Option<PathBuf>> {
    let f = flag(file);
    match std::fs::remove_file(&f) {
        Ok(()) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Unsupported(format!(
            "cannot remove the pause flag {}: {e}",
            f.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pace_spaces_batches_by_their_size() {
        let mut p = Pacer::new(1000);
        assert_eq!(p.batch(5000), 1000);
        assert_eq!(p.batch(200), 200);
        let t0 = p.wait(&|| false);
        p.done(t0, 100);
        let t1 = p.wait(&|| false);
        assert!(t1 - t0 >= Duration::from_millis(100), "{:?}", t1 - t0);
        assert_eq!(Pacer::new(0).batch(5000), 5000);
    }

    #[test]
    fn the_flag_is_a_file_beside_the_pipeline() {
        let dir = std::env::temp_dir().join(format!("rowshift-pause-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("users_v2.toml");
        assert_eq!(flag(&file), dir.join("users_v2.toml.paused"));
        assert_eq!(paused(&file), None);
        pause(&file).unwrap();
        assert!(paused(&file).unwrap().starts_with("paused at "));
        assert_eq!(
            resume(&file).unwrap(),
            Some(dir.join("users_v2.toml.paused"))
        );
        assert_eq!(resume(&file).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
