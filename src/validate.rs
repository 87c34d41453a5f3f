//! Checked settings, one shape everywhere (in the spirit of linfa's `ParamGuard`): every block
//! of a config is deserialized into an unchecked `…Config` type whose `check()` returns the
//! validated type that constructors accept, or a [`KeyError`] naming the offending key.
//!
//! | written (unchecked) | `check()` gives | accepted by |
//! |---|---|---|
//! | [`crate::models::ModelConfig`] | [`crate::models::ModelSpec`] | [`crate::models::Network::new`] |
//! | [`crate::optim::OptimizerConfig`] | [`crate::optim::OptimizerSettings`] | [`crate::optim::OptimizerSettings::build`] |
//! | [`crate::strategy::StrategyConfig`] | [`crate::strategy::StrategySettings`] | [`crate::strategy::StrategySettings::build`] |
//! | [`crate::experiment::MethodConfig`] | [`crate::train::Method`] | [`crate::train::train_sequence`] |
//! | [`crate::experiment::TrainingConfig`] | [`crate::train::TrainSettings`] | [`crate::train::train_sequence`] |
//!
//! The value checks shared by all of them (positive, at least one, in a range) are written
//! once, here.

/// A key whose value cannot be used: the key (dotted, relative to the block that was checked)
/// and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key `{key}`: {message}")]
pub struct KeyError {
    /// The key, e.g. `lr`, or `methods[1].optimizer.lr` once placed [`within`](Self::within)
    /// its blocks.
    pub key: String,
    /// What is wrong, and what was expected.
    pub message: String,
}

impl KeyError {
    /// An error of `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> KeyError {
        KeyError {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The same error with its key placed inside the block `prefix` (`lr` within
    /// `methods[0].optimizer` is `methods[0].optimizer.lr`).
    pub fn within(mut self, prefix: &str) -> KeyError {
        if !prefix.is_empty() {
            self.key = if self.key.is_empty() {
                prefix.to_string()
            } else {
                format!("{prefix}.{}", self.key)
            };
        }
        self
    }
}

/// The result of a check.
pub type Checked<T> = Result<T, KeyError>;

/// A finite number > 0.
pub fn positive(key: &str, v: f64) -> Checked<f64> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(KeyError::new(
            key,
            format!("expected a positive number, got {v}"),
        ))
    }
}

/// A finite number ≥ 0.
pub fn non_negative(key: &str, v: f64) -> Checked<f64> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(KeyError::new(
            key,
            format!("expected a finite number ≥ 0, got {v}"),
        ))
    }
}

/// A number in `[0, 1)` (momentum, decay rates).
pub fn unit_interval(key: &str, v: f64) -> Checked<f64> {
    if (0.0..1.0).contains(&v) {
        Ok(v)
    } else {
        Err(KeyError::new(
            key,
            format!("expected a number in [0, 1), got {v}"),
        ))
    }
}

/// A number in `(0, 1]` (decays that may keep everything).
pub fn fraction(key: &str, v: f64) -> Checked<f64> {
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(KeyError::new(
            key,
            format!("expected a number in (0, 1], got {v}"),
        ))
    }
}

/// A count ≥ 1.
pub fn at_least_one(key: &str, n: usize) -> Checked<usize> {
    if n >= 1 {
        Ok(n)
    } else {
        Err(KeyError::new(key, "expected at least 1, got 0"))
    }
}

/// A count in `1..=max` (upper bounds keep a mistyped count from exhausting memory or time).
pub fn count(key: &str, n: usize, max: usize) -> Checked<usize> {
    at_least_one(key, n)?;
    if n <= max {
        Ok(n)
    } else {
        Err(KeyError::new(
            key,
            format!("expected at most {max}, got {n}"),
        ))
    }
}

/// An error when `key` is set although it does not apply to `context` (e.g. "optimizer
/// `adam`"): `does not apply to {context}`.
pub fn not_applicable(key: &str, set: bool, context: &str) -> Checked<()> {
    if set {
        Err(KeyError::new(key, format!("does not apply to {context}")))
    } else {
        Ok(())
    }
}

/// An error when `key` is set although it only applies to `what` (e.g. "`kind: cnn`"):
/// `only applies to {what}`.
pub fn only_for(key: &str, set: bool, what: &str) -> Checked<()> {
    if set {
        Err(KeyError::new(key, format!("only applies to {what}")))
    } else {
        Ok(())
    }
}

/// The longest name that may become part of a file or directory name.
pub const MAX_NAME: usize = 100;

/// The one rule for every name that becomes part of a path (experiment, stream, method, sweep
/// tag, and the table and figure files named after them): 1 to [`MAX_NAME`] characters, no
/// control characters, no `/` or `\\` (nothing can leave the folder it is written into), not
/// starting with `.` (no `..`, no hidden files that readers skip), no leading or trailing space,
/// and none of `also` (e.g. `[` and `]` in method names, which sweep tags use). `what` says what
/// the name names, for the message ("a stream name").
pub fn path_name(key: &str, what: &str, name: &str, also: &[char]) -> Checked<()> {
    let bad = |why: &str| {
        Err(KeyError::new(
            key,
            format!("`{}` cannot be {what}: {why}", short_excerpt(name)),
        ))
    };
    if name.trim().is_empty() {
        return bad("it is empty");
    }
    if name.chars().count() > MAX_NAME {
        return bad(&format!("longer than {MAX_NAME} characters"));
    }
    if name.chars().any(char::is_control) {
        return bad("it holds a control character (newline, tab, NUL, …)");
    }
    if let Some(c) = name
        .chars()
        .find(|c| ['/', '\\'].contains(c) || also.contains(c))
    {
        return bad(&format!("it holds `{c}`"));
    }
    if name.starts_with('.') {
        return bad("it starts with `.`");
    }
    if name != name.trim() {
        return bad("it starts or ends with a space");
    }
    Ok(())
}

/// At most 60 characters of `text`, escaped for one line, with `…` where it was cut: how an
/// error message quotes a value the user gave (which may be a whole file).
pub fn short_excerpt(text: &str) -> String {
    const MAX: usize = 60;
    let mut out: String = text
        .chars()
        .take(MAX)
        .collect::<String>()
        .escape_debug()
        .collect();
    if text.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

impl crate::error::InputError for KeyError {
    fn is_input_error(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_placed_within_their_blocks() {
        let e = positive("lr", 0.0)
            .unwrap_err()
            .within("methods[1].optimizer");
        assert_eq!(e.key, "methods[1].optimizer.lr");
        assert_eq!(
            e.to_string(),
            "key `methods[1].optimizer.lr`: expected a positive number, got 0"
        );
        assert_eq!(KeyError::new("", "m").within("training").key, "training");
        assert_eq!(KeyError::new("a", "m").within("").key, "a");
    }

    #[test]
    fn shared_value_checks() {
        assert!(positive("x", f64::NAN).is_err());
        assert!(positive("x", f64::INFINITY).is_err());
        assert_eq!(positive("x", 0.5), Ok(0.5));
        assert!(non_negative("x", -1e-9).is_err());
        assert_eq!(non_negative("x", 0.0), Ok(0.0));
        assert!(unit_interval("x", 1.0).is_err());
        assert_eq!(unit_interval("x", 0.0), Ok(0.0));
        assert!(fraction("x", 0.0).is_err());
        assert_eq!(fraction("x", 1.0), Ok(1.0));
        assert!(at_least_one("x", 0).is_err());
        assert!(count("x", 0, 5).is_err());
        assert_eq!(count("x", 5, 5), Ok(5));
        assert_eq!(
            count("x", 6, 5).unwrap_err().message,
            "expected at most 5, got 6"
        );
        assert_eq!(
            not_applicable("x", true, "`kind: mlp`")
                .unwrap_err()
                .message,
            "does not apply to `kind: mlp`"
        );
        assert!(not_applicable("x", false, "`kind: mlp`").is_ok());
        assert_eq!(
            only_for("x", true, "`kind: cnn`").unwrap_err().message,
            "only applies to `kind: cnn`"
        );
    }

    #[test]
    fn path_names_cannot_leave_their_folder() {
        for bad in [
            "", " ", "../../x", "a/b", "a\\b", ".hidden", "..", "a\nb", " a", "a\0",
        ] {
            assert!(
                path_name("name", "a stream name", bad, &[]).is_err(),
                "{bad:?}"
            );
        }
        assert!(path_name("name", "a method name", "sgd[1]", &['[', ']']).is_err());
        assert!(path_name("name", "a stream name", &"x".repeat(MAX_NAME + 1), &[]).is_err());
        for good in [
            "permuted-mnist-10",
            "sgd+grapes",
            "it's",
            "a b",
            "sgd[1]",
            "x.y",
        ] {
            assert_eq!(
                path_name("name", "a stream name", good, &[]),
                Ok(()),
                "{good:?}"
            );
        }
        let e = path_name("name", "a stream name", "../../../escaped", &[]).unwrap_err();
        assert_eq!(e.key, "name");
        assert_eq!(
            e.message,
            "`../../../escaped` cannot be a stream name: it holds `/`"
        );
    }

    #[test]
    fn excerpts_are_short() {
        assert_eq!(short_excerpt("abc"), "abc");
        let long = "-----BEGIN PRIVATE KEY-----\n".repeat(50);
        let e = short_excerpt(&long);
        assert!(e.chars().count() <= 61 + 10, "{e}");
        assert!(e.ends_with('…'));
        assert!(!e.contains('\n'));
    }
}
