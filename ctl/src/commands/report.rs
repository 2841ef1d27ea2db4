//! `parleyctl report JOB [--out FILE]`: a job's result as one self-contained HTML page with
//! charts (see [`crate::report`]); prints the path written. Exit 0 if the job succeeded, 2 if
//! not (the page then says why it has no result).

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;

use super::{Session, exit_code_for};
use crate::report::job_report;

/// Runs `report`.
pub async fn run(
    connection: &crate::ConnectionArgs,
    id: &str,
    path: &Path,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<i32> {
    let mut session = Session::open(connection).await?;
    let job = session.get_job(id).await?;
    let page = job_report(&job, &[]).with_context(|| format!("report of job '{id}'"))?;
    write_file(path, page.as_bytes())?;
    writeln!(out, "wrote {}", path.display())?;
    Ok(exit_code_for(&job))
}

/// Writes `bytes` to `path` whole or not at all: into a temporary file beside it, then renamed
/// over it.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("'{}' is not a file name", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::write(&tmp, bytes).with_context(|| {
        format!(
            "cannot write '{}' (does the directory exist and may you write to it?)",
            tmp.display()
        )
    })?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move '{}' to '{}'", tmp.display(), path.display()))?;
    Ok(())
}
