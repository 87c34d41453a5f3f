//! Records what built the binary, for the platform every run record carries
//! (`src/platform.rs`): the git commit, the rustc version and the target triple.

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
    let commit = output(Command::new("git").args(["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CLBENCH_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves (a commit or a checkout), not on every file change.
    for path in ["HEAD", "refs/heads", "packed-refs"] {
        if let Some(p) = output(Command::new("git").args(["rev-parse", "--git-path", path])) {
            let p = PathBuf::from(p);
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
