//! `rowshift report`: writes a run's report page to stdout or a file.

use std::io::Write as _;
use std::path::Path;

use rowshift::config::Pipeline;

/// Writes the report of `pipeline`'s recorded run to `output`, or to stdout without it.
/// Exit code 0; an error (no run recorded, an unreachable target) is 2.
pub fn report(pipeline: &Path, output: Option<&Path>) -> anyhow::Result<i32> {
    let loaded = Pipeline::load(pipeline)?;
    let data = rowshift::report::report(&loaded)?;
    let page = rowshift::report::render(&data)?;
    match output {
        Some(path) => {
            std::fs::write(path, &page).map_err(|e| rowshift::Error::io(path, e))?;
            eprintln!(
                "wrote {}: {} of {} chunks done, {}",
                path.display(),
                data.chunks.done,
                data.chunks.total,
                data.state
            );
        }
        None => {
            let mut out = std::io::stdout().lock();
            match out.write_all(page.as_bytes()).and_then(|()| out.flush()) {
                // A reader that stopped (`| head`) wanted no more of it.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other?,
            }
        }
    }
    Ok(0)
}
