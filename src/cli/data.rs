//! `clbench data`: find, verify and download datasets.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::data::{self, catalog, fetch};

use super::args::DataCommand;

/// `clbench data list|verify|fetch`.
pub(crate) fn data_command(cmd: DataCommand, progress: bool) -> Result<ExitCode> {
    match cmd {
        DataCommand::List => list(),
        DataCommand::Verify { name } => verify(name.as_deref()),
        DataCommand::Fetch {
            name,
            dest,
            mirrors,
            connect_timeout,
            read_timeout,
            total_timeout,
        } => fetch_dataset(
            &name,
            dest,
            mirrors,
            [connect_timeout, read_timeout, total_timeout],
            progress,
        ),
    }
}

/// `data list`: each dataset, where it was found, whether it verifies.
fn list() -> Result<ExitCode> {
    say!(
        "{:<14} {:<8} {:<14} location",
        "dataset",
        "status",
        "license"
    );
    for info in &data::DATASETS {
        let (status, location) = match catalog::locate(info) {
            None => (
                "missing",
                format!(
                    "not found (searched {})",
                    catalog::search_dirs(info)
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Some(dir) => {
                let ok = data::verify_dir(info, &dir)
                    .iter()
                    .all(|c| c.result.is_ok());
                (
                    if ok { "verified" } else { "CORRUPT" },
                    dir.display().to_string(),
                )
            }
        };
        say!(
            "{:<14} {:<8} {:<14} {}",
            info.name,
            status,
            info.license,
            location
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `data verify [name]`: every file of the named dataset (or of every dataset found) against its
/// published SHA-256; exit code 2 when one does not match.
fn verify(name: Option<&str>) -> Result<ExitCode> {
    let infos: Vec<&catalog::DatasetInfo> = match name {
        Some(n) => vec![data::find(n)?.0],
        None => data::DATASETS
            .iter()
            .filter(|i| catalog::locate(i).is_some())
            .collect(),
    };
    if infos.is_empty() {
        anyhow::bail!("no dataset found to verify; `clbench data list` shows where clbench looks");
    }
    let mut all_ok = true;
    for info in infos {
        let (_, dir) = data::find(info.name)?;
        for check in data::verify_dir(info, &dir) {
            match &check.result {
                Ok(()) => say!("ok       {}", check.path.display()),
                Err(e) => {
                    all_ok = false;
                    say!("FAILED   {e}");
                }
            }
        }
    }
    if all_ok {
        Ok(ExitCode::SUCCESS)
    } else {
        tell!("error: some files do not match their published SHA-256; fetch them again");
        Ok(ExitCode::from(2))
    }
}

/// `data fetch name`: download from the mirrors, verify, install.
fn fetch_dataset(
    name: &str,
    dest: Option<std::path::PathBuf>,
    mirrors: Vec<String>,
    [connect_timeout, read_timeout, total_timeout]: [u64; 3],
    progress: bool,
) -> Result<ExitCode> {
    for (flag, v) in [
        ("--connect-timeout", connect_timeout),
        ("--read-timeout", read_timeout),
        ("--total-timeout", total_timeout),
    ] {
        if v == 0 {
            return Err(super::settings::UsageError(format!(
                "{flag} 0: expected at least 1 second"
            ))
            .into());
        }
    }
    let info = data::dataset_info(name).ok_or_else(|| data::DataError::UnknownDataset {
        name: name.to_string(),
        known: data::dataset_names().join(", "),
    })?;
    let opts = fetch::FetchOptions {
        dest: dest.unwrap_or_else(|| catalog::default_fetch_dir(info)),
        mirrors: if mirrors.is_empty() {
            info.mirrors.iter().map(|m| m.to_string()).collect()
        } else {
            mirrors
        },
        progress,
        connect_timeout: Duration::from_secs(connect_timeout),
        read_timeout: Duration::from_secs(read_timeout),
        total_timeout: Duration::from_secs(total_timeout),
    };
    let outcomes = fetch::fetch(info, &opts)
        .with_context(|| format!("fetching {name} into {}", opts.dest.display()))?;
    for o in outcomes {
        match o {
            fetch::FetchOutcome::AlreadyPresent(p) => say!("present  {}", p.display()),
            fetch::FetchOutcome::Downloaded { path, url } => {
                say!("fetched  {} (from {url}, verified)", path.display())
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
