//! Records what built the binary, for the platform every run record carries
//! (`src/platform.rs`): the git commit (`-dirty` when the sources differ from it), the rustc
//! version and the target triple.

use std::path::PathBuf;
use std::process::Command;

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = output(Command::new(rustc).arg("--version")).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CLBENCH_RUSTC_VERSION={version}");
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=CLBENCH_TARGET={target}");
    // The commit, `-dirty` when the sources that make the binary differ from it.
    let sources = ["src", "Cargo.toml", "Cargo.lock", "build.rs"];
    let commit = output(Command::new("git").args(["rev-parse", "--short=12", "HEAD"]))
        .map(|c| {
            let status = output(
                Command::new("git")
                    .args(["status", "--porcelain", "--untracked-files=no", "--"])
                    .args(sources),
            );
            if status.is_some() {
                format!("{c}-dirty")
            } else {
                c
            }
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CLBENCH_GIT_COMMIT={commit}");
    // Rerun when the sources change or HEAD moves (a commit, a checkout), not when results or
    // other files of the repository change.
    for source in sources {
        println!("cargo:rerun-if-changed={source}");
    }
    for path in ["HEAD", "refs/heads", "packed-refs"] {
        if let Some(p) = output(Command::new("git").args(["rev-parse", "--git-path", path])) {
            let p = PathBuf::from(p);
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
}
