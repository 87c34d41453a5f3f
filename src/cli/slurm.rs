//! `clbench slurm`: an sbatch array script that runs an experiment in shards on a Slurm cluster.
//!
//! Every array task runs `clbench run` on the same config; `--shard` defaults to Slurm's
//! `SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT`, so each task trains its share of the runs, and
//! the run store's claims and atomic writes let the tasks share one results directory (or, with
//! `--separate-outs`, one each, merged by `clbench report`). A task that fails or is cancelled
//! leaves no run that looks complete; resubmitting the script trains exactly what is missing.

use std::path::Path;
use std::process::ExitCode;

use crate::experiment::{self, Experiment};
use anyhow::{Context, Result};

use super::args::SlurmArgs;
use super::settings::{check_slurm_args, UsageError};

/// `clbench slurm`.
pub(crate) fn slurm_command(args: SlurmArgs) -> Result<ExitCode> {
    check_slurm_args(&args)?;
    let exp = Experiment::load(&args.config)?;
    let runs = experiment::plan(&exp, None).len();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("results").join(&exp.name));
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let script = array_script(&args, &exp.name, runs, &out, &cwd)?;
    // Slurm opens each task's log before the script runs: the folder must exist already.
    let logs = out.join("slurm");
    std::fs::create_dir_all(&logs)
        .with_context(|| format!("creating the array's log folder {}", logs.display()))?;
    let shards = shard_count(&args, runs);
    match &args.script {
        Some(path) => {
            refuse_overwrite(path, &args.config)?;
            crate::experiment::store::write_atomic(path, script.as_bytes())?;
            tell!(
                "wrote {} ({runs} runs in {shards} array tasks; logs in {}); submit with: sbatch {}",
                path.display(),
                logs.display(),
                path.display()
            );
        }
        None => super::write_stdout(format_args!("{script}"))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The words that mark a script as one `clbench slurm` wrote (its second line).
const SCRIPT_MARK: &str = "written by `clbench slurm`";

/// `--script` may replace a script that `clbench slurm` wrote, never the config or any other
/// file.
fn refuse_overwrite(path: &Path, config: &Path) -> Result<(), UsageError> {
    let same_as_config = matches!(
        (path.canonicalize(), config.canonicalize()),
        (Ok(a), Ok(b)) if a == b
    );
    if same_as_config {
        return Err(UsageError(format!(
            "--script {}: is the experiment's config; write the batch script to another file \
             (e.g. {}.sbatch)",
            path.display(),
            path.with_extension("").display()
        )));
    }
    match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(UsageError(format!(
            "--script {}: exists and cannot be read ({e}); not overwritten",
            path.display()
        ))),
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let ours = text.starts_with("#!/bin/bash\n")
                && text.lines().nth(1).is_some_and(|l| l.contains(SCRIPT_MARK));
            if ours {
                Ok(())
            } else {
                Err(UsageError(format!(
                    "--script {}: exists and is not a script written by `clbench slurm`; not \
                     overwritten (remove it first, or choose another file)",
                    path.display()
                )))
            }
        }
    }
}

fn shard_count(args: &SlurmArgs, runs: usize) -> usize {
    args.shards.unwrap_or(runs).clamp(1, runs.max(1))
}

/// The script's text for the experiment `name` of `runs` runs, results in `out`, submitted from
/// `cwd` (the job's working directory: relative paths in the script are relative to it).
pub(crate) fn array_script(
    args: &SlurmArgs,
    name: &str,
    runs: usize,
    out: &Path,
    cwd: &Path,
) -> Result<String> {
    let shards = shard_count(args, runs);
    let config = args.config.display().to_string();
    let out_text = out.display().to_string();
    // A plugin crate's binary (`clbench::plugin`) writes scripts that run itself.
    let bin = args.bin.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "clbench".into())
    });
    let report = if args.separate_outs {
        format!(
            "{bin} report {}/shard-* --out {}",
            shell_quote(&out_text),
            shell_quote(&out_text)
        )
    } else {
        format!("{bin} report {}", shell_quote(&out_text))
    };
    let mut s = String::from("#!/bin/bash\n");
    s.push_str(&format!(
        "# {runs} runs of {} in {shards} array tasks, {SCRIPT_MARK} ({} {}).\n\
         # Submit with `sbatch <this file>`. Each task trains its share of the runs (clbench run\n\
         # --shard defaults to SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT) and skips runs already\n\
         # complete: after a failed or cancelled task, submit the same script again. Afterwards:\n\
         #   {report}\n",
        one_line(&config),
        env!("CARGO_PKG_NAME"),
        env!("CARGO_PKG_VERSION"),
    ));
    let mut sbatch = |option: &str, value: &str| -> Result<()> {
        s.push_str(&format!(
            "#SBATCH --{option}={}\n",
            sbatch_value(option, value)?
        ));
        Ok(())
    };
    sbatch("job-name", &format!("clbench-{name}"))?;
    sbatch("array", &format!("0-{}", shards - 1))?;
    sbatch("cpus-per-task", &args.cpus_per_task.to_string())?;
    sbatch("time", &args.time)?;
    for (option, value) in [
        ("partition", &args.partition),
        ("account", &args.account),
        ("qos", &args.qos),
        ("mem", &args.mem),
        ("gres", &args.gres),
    ] {
        if let Some(v) = value {
            sbatch(option, v)?;
        }
    }
    sbatch("chdir", &cwd.display().to_string())?;
    sbatch("output", &format!("{out_text}/slurm/%A_%a.out"))?;
    for extra in &args.sbatch {
        if !extra.starts_with('-') || extra.chars().any(char::is_control) {
            return Err(UsageError(format!(
                "--sbatch `{}`: expected one sbatch option such as --mail-type=END",
                extra.escape_debug()
            ))
            .into());
        }
        // sbatch must read it as one option, all of it: no open quote, no `#` that would cut
        // the rest off as a comment (then a word after it is lost too), no second word.
        let whole = sbatch_words(extra).map(|w| w.len()) == Ok(1)
            && sbatch_words(&format!("{extra} x")).map(|w| w.len()) == Ok(2);
        if !whole {
            return Err(UsageError(format!(
                "--sbatch `{}`: sbatch would not read this as one option (an open quote, an \
                 unquoted `#` or a space); quote the value, e.g. --sbatch='--comment=\"a #1\"'",
                extra.escape_debug()
            ))
            .into());
        }
        s.push_str(&format!("#SBATCH {extra}\n"));
    }
    s.push_str("\nset -euo pipefail\n");
    for line in &args.setup {
        if line.chars().any(char::is_control) {
            return Err(UsageError(format!(
                "--setup `{}`: expected one line of shell",
                line.escape_debug()
            ))
            .into());
        }
        s.push_str(line);
        s.push('\n');
    }
    let target = if args.separate_outs {
        format!("{}/shard-\"$SLURM_ARRAY_TASK_ID\"", shell_quote(&out_text))
    } else {
        shell_quote(&out_text)
    };
    let extra: String = args
        .run_args
        .iter()
        .flat_map(|a| a.split_whitespace())
        .map(|w| format!(" {}", shell_quote(w)))
        .collect();
    s.push_str(&format!(
        "srun {} run {} --out {target} --threads \"$SLURM_CPUS_PER_TASK\" -q{extra}\n",
        shell_quote(&bin),
        shell_quote(&config),
    ));
    Ok(s)
}

/// `text` for a comment line: control characters escaped.
fn one_line(text: &str) -> String {
    text.escape_debug().to_string()
}

/// `value` as a word of the shell: in single quotes, each `'` written as `'\''`, so that nothing
/// in it (spaces, `$`, backquotes) is interpreted when the job starts.
pub(crate) fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// A value of an `#SBATCH` line. sbatch reads these lines itself, without a shell
/// (`_get_argument` in Slurm's `src/sbatch/opt.c`): words end at white space, `"` or `'` quote
/// (the quotes are dropped), a backslash makes the next character literal, and an unquoted `#`
/// ends the line. A value holding any of these is written in double quotes with `\` and `"`
/// escaped, so that sbatch reads back exactly the value; control characters cannot be written
/// on one line and are refused.
fn sbatch_value(option: &str, value: &str) -> Result<String> {
    if value.chars().any(char::is_control) {
        return Err(UsageError(format!(
            "the {option} `{}` cannot be written in an #SBATCH line (control character)",
            value.escape_debug()
        ))
        .into());
    }
    let special = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | '#');
    Ok(if value.contains(special) {
        let mut quoted = String::with_capacity(value.len() + 2);
        quoted.push('"');
        for c in value.chars() {
            if matches!(c, '"' | '\\') {
                quoted.push('\\');
            }
            quoted.push(c);
        }
        quoted.push('"');
        quoted
    } else {
        value.to_string()
    })
}

/// The arguments sbatch reads from the text after `#SBATCH` (as `_get_argument` in Slurm's
/// `src/sbatch/opt.c` splits it), or `Err` with the quote left open (sbatch stops there).
pub(crate) fn sbatch_words(line: &str) -> Result<Vec<String>, char> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(words);
        }
        let (mut word, mut quote, mut escape, mut any) = (String::new(), None, false, false);
        while let Some(&c) = chars.peek() {
            if quote.is_none() && c.is_ascii_whitespace() {
                break;
            }
            chars.next();
            if escape {
                escape = false;
            } else if c == '\\' {
                escape = true;
                continue;
            } else if let Some(q) = quote {
                if c == q {
                    quote = None;
                    continue;
                }
            } else if c == '"' || c == '\'' {
                quote = Some(c);
                continue;
            } else if c == '#' {
                // The rest of the line is a comment.
                if any {
                    words.push(word);
                }
                return Ok(words);
            }
            any = true;
            word.push(c);
        }
        if let Some(q) = quote {
            return Err(q);
        }
        if any {
            words.push(word);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted() {
        assert_eq!(shell_quote("r/$(id)"), "'r/$(id)'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(
            sbatch_value("output", "a b/%A.out").unwrap(),
            "\"a b/%A.out\""
        );
        assert!(sbatch_value("output", "a\nb").is_err());
    }

    /// Every value, written into an `#SBATCH` line, reads back as itself by sbatch's own rules.
    #[test]
    fn sbatch_lines_read_back_as_written() {
        for value in [
            "plain",
            "a b/%A.out",
            "/home/me/exp#1",
            "/home/me/exp #1",
            "clbench-it's",
            "say \"hi\"",
            "back\\slash",
            "'both' \"kinds\" #",
            "ends with \\",
        ] {
            let line = format!("--chdir={}", sbatch_value("chdir", value).unwrap());
            assert_eq!(
                sbatch_words(&line),
                Ok(vec![format!("--chdir={value}")]),
                "{line}"
            );
        }
        // What sbatch does with the lines clbench used to write.
        assert_eq!(
            sbatch_words("--chdir=/home/me/exp#1"),
            Ok(vec!["--chdir=/home/me/exp".to_string()])
        );
        assert_eq!(sbatch_words("--job-name=clbench-it's"), Err('\''));
    }
}
