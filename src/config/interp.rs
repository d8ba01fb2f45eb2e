//! `${VAR}` and `${VAR:-default}` interpolation of configuration values.
//!
//! Values are expanded from the environment of the process that loads the configuration (the
//! daemon's, for runs it starts). `$${` writes a literal `${`; a `$` not followed by `{` is left
//! alone, so shell text such as `"$WORKER_SCHEDULED_AT"` in a `run:` line passes through intact.

use thiserror::Error;

/// Why a value could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InterpError {
    #[error("environment variable `{0}` is not set (set it, or give a default: `${{{0}:-value}}`)")]
    Missing(String),
    #[error("unterminated `${{` (close it with `}}`, or write `$${{` for a literal `${{`)")]
    Unterminated,
    #[error(
        "`{0}` is not a valid variable name in `${{…}}` (letters, digits and `_`, not starting with a digit)"
    )]
    BadName(String),
}

/// The result of expanding one value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expanded {
    pub value: String,
    /// The values that came from the environment (not defaults), so callers can treat them as
    /// secrets and mask them in output.
    pub from_env: Vec<String>,
}

/// Expands `${VAR}` / `${VAR:-default}` in `input`, looking variables up with `lookup`.
///
/// `${VAR:-default}` uses the default when `VAR` is unset or empty, as the shell does.
pub fn expand(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Expanded, InterpError> {
    if !input.contains("${") {
        return Ok(Expanded {
            value: input.to_string(),
            from_env: Vec::new(),
        });
    }
    let mut out = Expanded::default();
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.value.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.value.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail.find('}').ok_or(InterpError::Unterminated)?;
            let body = &tail[..end];
            let (name, default) = match body.find(":-") {
                Some(j) => (&body[..j], Some(&body[j + 2..])),
                None => (body, None),
            };
            if !is_var_name(name) {
                return Err(InterpError::BadName(name.to_string()));
            }
            match (lookup(name), default) {
                (Some(v), _) if !v.is_empty() => {
                    out.value.push_str(&v);
                    out.from_env.push(v);
                }
                (_, Some(d)) => out.value.push_str(d),
                (Some(v), None) => out.value.push_str(&v),
                (None, None) => return Err(InterpError::Missing(name.to_string())),
            }
            rest = &tail[end + 1..];
        } else {
            out.value.push('$');
            rest = &after[1..];
        }
    }
    out.value.push_str(rest);
    Ok(out)
}

/// Whether `name` is a portable environment variable name.
pub fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/ops".into()),
            "EMPTY" => Some(String::new()),
            "TOKEN" => Some("s3cret".into()),
            _ => None,
        }
    }

    fn ex(s: &str) -> Result<String, InterpError> {
        expand(s, &env).map(|e| e.value)
    }

    #[test]
    fn plain_text_and_shell_dollars_pass_through() {
        assert_eq!(
            ex("echo $HOME \"$WORKER_SCHEDULED_AT\" $$").unwrap(),
            "echo $HOME \"$WORKER_SCHEDULED_AT\" $$"
        );
        assert_eq!(ex("cost: 5$").unwrap(), "cost: 5$");
    }

    #[test]
    fn variables_and_defaults() {
        assert_eq!(ex("${HOME}/x").unwrap(), "/home/ops/x");
        assert_eq!(ex("${NOPE:-fallback}").unwrap(), "fallback");
        assert_eq!(ex("${EMPTY:-fallback}").unwrap(), "fallback");
        assert_eq!(ex("${EMPTY}").unwrap(), "");
        assert_eq!(ex("${NOPE:-}").unwrap(), "");
        assert_eq!(ex("a${HOME}b${NOPE:-c}d").unwrap(), "a/home/opsbcd");
        assert_eq!(ex("${NOPE:-with:-colon}").unwrap(), "with:-colon");
    }

    #[test]
    fn escapes_and_errors() {
        assert_eq!(ex("$${HOME}").unwrap(), "${HOME}");
        assert_eq!(ex("${NOPE}"), Err(InterpError::Missing("NOPE".into())));
        assert_eq!(ex("${HOME"), Err(InterpError::Unterminated));
        assert_eq!(ex("${1X}"), Err(InterpError::BadName("1X".into())));
        assert_eq!(ex("${}"), Err(InterpError::BadName(String::new())));
    }

    #[test]
    fn records_values_from_the_environment() {
        let e = expand("https://x/${TOKEN}/${NOPE:-d}", &env).unwrap();
        assert_eq!(e.value, "https://x/s3cret/d");
        assert_eq!(e.from_env, vec!["s3cret".to_string()]);
    }
}
