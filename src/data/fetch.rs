//! `clbench data fetch`: download a dataset from its mirrors, verify it, and install it atomically.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::catalog::{file_in, DataFile, DatasetInfo};
use super::{read_verified, DataError};

/// How to fetch a dataset.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The directory that receives the four `.gz` files.
    pub dest: PathBuf,
    /// Base URLs tried in order; each file is `<mirror><file>.gz`.
    pub mirrors: Vec<String>,
    /// Show a progress bar per file.
    pub progress: bool,
    /// Give up on a mirror after this long without completing the connection.
    pub connect_timeout: Duration,
    /// Give up on a mirror that sends nothing for this long (no response, or a stalled body):
    /// a server that accepts the connection and never answers would otherwise hang the fetch.
    pub read_timeout: Duration,
    /// Give up on one file's download from one mirror after this long in all.
    pub total_timeout: Duration,
}

impl FetchOptions {
    /// Seconds without a byte after which a mirror is given up (`data fetch --read-timeout`).
    pub const DEFAULT_READ_TIMEOUT_S: u64 = 30;
    /// Seconds one file may take from one mirror (`data fetch --total-timeout`).
    pub const DEFAULT_TOTAL_TIMEOUT_S: u64 = 1800;
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// It was already there and verified; nothing was downloaded.
    AlreadyPresent(PathBuf),
    /// It was downloaded from the given URL, verified and installed.
    Downloaded { path: PathBuf, url: String },
}

/// Downloads every file of `info` that is not already present and verified in `opts.dest`.
///
/// Each download goes to a temporary file in the destination directory, is checked against the
/// published SHA-256 of its decompressed content, and only then renamed into place, so an
/// interrupted or corrupt download never leaves a file that looks valid.
pub fn fetch(info: &DatasetInfo, opts: &FetchOptions) -> Result<Vec<FetchOutcome>, DataError> {
    fs::create_dir_all(&opts.dest).map_err(|source| DataError::Io {
        path: opts.dest.clone(),
        source,
    })?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(opts.connect_timeout))
        .timeout_recv_response(Some(opts.read_timeout))
        .timeout_per_read(Some(opts.read_timeout))
        .timeout_global(Some(opts.total_timeout))
        .build()
        .into();
    info.files
        .iter()
        .map(|file| {
            if let Some(existing) = file_in(&opts.dest, file) {
                if read_verified(&existing, file.sha256).is_ok() {
                    return Ok(FetchOutcome::AlreadyPresent(existing));
                }
            }
            fetch_file(&agent, file, opts)
        })
        .collect()
}

fn fetch_file(
    agent: &ureq::Agent,
    file: &DataFile,
    opts: &FetchOptions,
) -> Result<FetchOutcome, DataError> {
    let target = opts.dest.join(format!("{}.gz", file.name));
    let temp = opts
        .dest
        .join(format!(".{}.gz.part-{}", file.name, std::process::id()));
    let mut failures = Vec::new();
    for mirror in &opts.mirrors {
        let url = format!("{}{}.gz", with_slash(mirror), file.name);
        let attempt = download(agent, &url, &temp, opts.progress)
            .and_then(|()| read_verified(&temp, file.sha256).map(|_| ()));
        match attempt {
            Ok(()) => {
                fs::rename(&temp, &target).map_err(|source| DataError::Io {
                    path: target.clone(),
                    source,
                })?;
                // A raw file of the same name shadows nothing (`.gz` is preferred); a damaged
                // one is the user's to remove, not ours: say so.
                let raw = opts.dest.join(file.name);
                if raw.is_file() && read_verified(&raw, file.sha256).is_err() {
                    tracing::warn!(
                        "{}: does not verify and is not used ({} is); remove it",
                        raw.display(),
                        target.display()
                    );
                }
                return Ok(FetchOutcome::Downloaded { path: target, url });
            }
            Err(e) => {
                let _ = fs::remove_file(&temp);
                failures.push(format!("{url}: {e}"));
            }
        }
    }
    Err(DataError::Download {
        file: format!("{}.gz", file.name),
        reason: format!(
            "every mirror failed ({}). If this machine is offline, copy the files by hand into {}",
            failures.join("; "),
            opts.dest.display()
        ),
    })
}

fn with_slash(base: &str) -> String {
    if base.ends_with('/') {
        base.to_string()
    } else {
        format!("{base}/")
    }
}

fn download(agent: &ureq::Agent, url: &str, temp: &Path, progress: bool) -> Result<(), DataError> {
    let fail = |reason: String| DataError::Download {
        file: url.to_string(),
        reason,
    };
    let mut response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let total = response.body().content_length();
    let bar = if progress {
        let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_message(url.rsplit('/').next().unwrap_or(url).to_string());
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut reader = response
        .body_mut()
        .with_config()
        .limit(512 * 1024 * 1024)
        .reader();
    let mut out = fs::File::create(temp).map_err(|source| DataError::Io {
        path: temp.to_path_buf(),
        source,
    })?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| fail(format!("connection lost: {e}")))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(|source| DataError::Io {
            path: temp.to_path_buf(),
            source,
        })?;
        bar.inc(n as u64);
    }
    out.sync_all().map_err(|source| DataError::Io {
        path: temp.to_path_buf(),
        source,
    })?;
    bar.finish_and_clear();
    Ok(())
}
