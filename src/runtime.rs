//! The process-wide pieces every step shares: the tokio runtime database I/O runs on,
//! and the stop request (Ctrl-C, SIGTERM) that long operations poll.

use std::future::Future;
use std::sync::Arc;

/// Set once the run is asked to stop (Ctrl-C, SIGTERM): see [`request_cancel`].
static CANCEL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks every long operation of the process (a sink's search for refused rows, a wait
/// for a busy database) to stop at its next check and fail its chunk, rolled back, with
/// [`crate::Error::Cancelled`]. The command line calls it on Ctrl-C and SIGTERM; the run
/// stops starting chunks through its own flag.
pub fn request_cancel() {
    CANCEL.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether [`request_cancel`] was called. Loops that can run for more than a second
/// poll it between statements.
pub fn cancel_requested() -> bool {
    CANCEL.load(std::sync::atomic::Ordering::SeqCst)
}

/// The tokio runtime database I/O runs on.
///
/// Chunk workers are plain threads, never rayon workers, so blocking one of them on a
/// database future cannot starve the CPU pool.
#[derive(Clone)]
pub struct IoRuntime(Arc<tokio::runtime::Runtime>);

impl IoRuntime {
    /// A runtime with two I/O threads.
    pub fn new() -> crate::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rowshift-io")
            .enable_all()
            .build()
            .map_err(|e| crate::Error::Internal(format!("cannot start the I/O runtime: {e}")))?;
        Ok(IoRuntime(Arc::new(rt)))
    }

    /// Runs `fut` to completion from a non-async thread.
    ///
    /// The future reaches tokio boxed, as one type: handed over as it is, each of the
    /// crate's ~180 calls would compile tokio's whole `block_on` machinery once more
    /// (an eighth of the crate's machine code, and of its release build time). The box
    /// costs one allocation per call, and no call is made per row.
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        let mut out = None;
        let slot = &mut out;
        let erased: std::pin::Pin<Box<dyn Future<Output = ()> + '_>> = Box::pin(async move {
            *slot = Some(fut.await);
        });
        self.0.block_on(erased);
        out.expect("a future that block_on ran to completion has stored its output")
    }

    /// Starts `fut` on the runtime.
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.0.spawn(fut);
    }
}

impl std::fmt::Debug for IoRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IoRuntime")
    }
}
