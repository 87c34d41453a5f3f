//! Reading YAML with errors a person can act on: file, line, column and a "did you mean" hint.

/// The largest text file clbench reads as input (configs, stream files, matrices): far above
/// any real one, small enough that a wrong path (`/dev/zero`, a data file) fails at once.
pub const MAX_INPUT_BYTES: u64 = 1 << 20;

/// Reads a text input file: at most [`MAX_INPUT_BYTES`], UTF-8, with a leading byte-order mark
/// (as some editors write) removed.
pub fn read_input(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "larger than {} KiB: not a clbench input file",
                MAX_INPUT_BYTES / 1024
            ),
        ));
    }
    let text = String::from_utf8(bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let depth = flow_depth(&text);
    if depth > MAX_FLOW_DEPTH {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "brackets nested {depth} deep (at most {MAX_FLOW_DEPTH}): not a clbench input file"
            ),
        ));
    }
    Ok(strip_bom(&text).to_string())
}

/// The deepest nesting of `[`/`{` that an input may have (real configs stay below 5).
pub const MAX_FLOW_DEPTH: usize = 64;

/// The deepest nesting of flow brackets in `text` (quotes are not parsed: a bound, not a
/// parser; the YAML parser itself is slow on deep nesting).
fn flow_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for c in text.chars() {
        match c {
            '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// `text` without a leading UTF-8 byte-order mark.
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Formats a `serde_yaml` error, adding a suggestion when the error is an unknown key close to a
/// key of the same block (serde's "expected one of" list; `known_keys` when it gives none). A
/// key that is valid only in another block is said to be so, rather than suggested.
pub fn describe_error(err: &serde_yaml::Error, known_keys: &[&str]) -> String {
    let message = shorten_quoted(&err.to_string());
    let Some(field) = unknown_field(&message) else {
        return message;
    };
    if message.contains("there are no fields") {
        return format!("{message} (this block takes no other keys)");
    }
    let here = expected_fields(&message);
    let candidates: Vec<&str> = if here.is_empty() {
        known_keys.to_vec()
    } else {
        here.iter().map(String::as_str).collect()
    };
    if !here.is_empty() && known_keys.contains(&field.as_str()) {
        return format!("{message} (`{field}` is a key of another block, not of this one)");
    }
    match did_you_mean(&field, &candidates) {
        Some(suggestion) => format!("{message} (did you mean `{suggestion}`?)"),
        None => message,
    }
}

/// The longest quoted value an error message repeats whole.
const MAX_QUOTED: usize = 60;

/// `message` with every `"…"` literal longer than [`MAX_QUOTED`] characters cut short (`…`):
/// serde quotes a value of the wrong type whole (`invalid type: string "…"`), and a file that
/// is not YAML at all (a key, a binary) would be echoed into the terminal entire.
fn shorten_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(1024));
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '"' {
            continue;
        }
        let (mut kept, mut escaped, mut closed) = (0usize, false, false);
        for c in chars.by_ref() {
            let end = !escaped && c == '"';
            escaped = !escaped && c == '\\';
            if end {
                closed = true;
                break;
            }
            if kept < MAX_QUOTED {
                out.push(c);
            } else if kept == MAX_QUOTED {
                out.push('…');
            }
            kept += 1;
        }
        if closed {
            out.push('"');
        }
    }
    out
}

/// The keys of serde's "unknown field `x`, expected one of `a`, `b`" (also "expected `a` or
/// `b`", "expected `a`") message.
fn expected_fields(message: &str) -> Vec<String> {
    let Some(rest) = message.split("`, expected ").nth(1) else {
        return Vec::new();
    };
    let rest = rest.strip_prefix("one of ").unwrap_or(rest);
    let list = rest.split(" at line ").next().unwrap_or(rest);
    list.split(", ")
        .flat_map(|k| k.split(" or "))
        .map(|k| k.trim())
        .filter(|k| k.starts_with('`') && k.ends_with('`') && k.len() > 2)
        .map(|k| k.trim_matches('`').to_string())
        .collect()
}

/// The field named in a serde "unknown field `x`" message.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    Some(rest.split('`').next()?.to_string())
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1) || normalized_eq(word, c))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn normalized_eq(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.to_lowercase().replace(['-', '_'], "");
    norm(a) == norm(b)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_bounded_before_they_are_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("deep.yaml");
        std::fs::write(
            &deep,
            format!("a: {}{}", "[".repeat(100_000), "]".repeat(100_000)),
        )
        .unwrap();
        let e = read_input(&deep).unwrap_err().to_string();
        assert!(e.contains("nested 100000 deep"), "{e}");
        let bom = dir.path().join("bom.yaml");
        std::fs::write(&bom, "\u{feff}a: [1, {b: 2}]").unwrap();
        assert_eq!(read_input(&bom).unwrap(), "a: [1, {b: 2}]");
        let e = read_input(std::path::Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("larger than 1024 KiB"), "{e}");
    }

    #[test]
    fn suggests_keys_of_the_same_block_only() {
        let err = serde_yaml::from_str::<Training>("{batch_size: 1, lr: 0.1}").unwrap_err();
        let m = describe_error(&err, &["lr", "batch_size", "epochs"]);
        assert!(m.contains("`lr` is a key of another block"), "{m}");
        assert!(!m.contains("did you mean"), "{m}");
        let err = serde_yaml::from_str::<Training>("{batch_size: 1, epoch: 2}").unwrap_err();
        let m = describe_error(&err, &["lr", "batch_size", "epochs"]);
        assert!(m.contains("did you mean `epochs`?"), "{m}");
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Training {
        batch_size: usize,
        epochs: Option<usize>,
    }

    #[test]
    fn suggests_close_keys_only() {
        let keys = ["tasks", "groups", "first_identity", "batch_size"];
        assert_eq!(did_you_mean("taks", &keys), Some("tasks"));
        assert_eq!(
            did_you_mean("first-identity", &keys),
            Some("first_identity")
        );
        assert_eq!(did_you_mean("batchsize", &keys), Some("batch_size"));
        assert_eq!(did_you_mean("colour", &keys), None);
    }
}

/// A value written either as a YAML boolean or as a name (`fisher: true` or `fisher: exact`,
/// `reset_optimizer: false` or `reset_optimizer: never`): YAML reads an unquoted `true` as a
/// boolean, so keys whose names include one accept both. Any other scalar (a number) is read as
/// a name, so the key's own message says what it expects.
#[derive(Debug, Clone)]
pub enum BoolOrName {
    /// `true` or `false`.
    Bool(bool),
    /// Any other value, as text.
    Name(String),
}

impl<'de> serde::Deserialize<'de> for BoolOrName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::Bool(b) => BoolOrName::Bool(b),
            serde_yaml::Value::String(s) => BoolOrName::Name(s),
            other => BoolOrName::Name(crate::validate::short_excerpt(
                serde_yaml::to_string(&other).unwrap_or_default().trim(),
            )),
        })
    }
}
