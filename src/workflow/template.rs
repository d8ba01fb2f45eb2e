//! `{{ … }}` templates and `if:` expressions, evaluated with minijinja when a step starts.
//!
//! Why minijinja: a maintained, dependency-light implementation of Jinja2's well-known syntax
//! (`{{ steps.fetch.outputs.id }}`, `input.plan != 'free'`, filters such as `| default`,
//! `| lower`), with an expression compiler for `if:` and, for validation, the list of variables a
//! template reads. Undefined values are errors (strict mode): a typo in a step name fails the
//! step with the expression and the reason instead of sending an empty string to an API.
//!
//! The context of a step: `input` (the run's input), `steps.NAME.outputs` and `steps.NAME.state`,
//! and `run` (`id`, `job`, `attempt`, `trigger`, `scheduled_at`).

use std::sync::OnceLock;

use minijinja::value::{Serde, Value};
use minijinja::{Environment, UndefinedBehavior};

/// The shared environment: strict about undefined values, no HTML escaping.
fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // A value ending in a newline keeps it (Jinja's default would drop it).
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        env
    })
}

/// The names a template or expression may start from.
pub const ROOTS: &[&str] = &["input", "steps", "run"];

/// Whether `name` is one of the environment's global functions (`range`, `dict`, `namespace`…),
/// which a template may call without it being part of the context.
pub fn is_global(name: &str) -> bool {
    env().globals().any(|(g, _)| g == name)
}

/// Whether `text` holds template syntax at all (most values do not: they pass through as-is).
pub fn has_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

/// Whether any string inside a JSON value holds template syntax.
pub fn json_has_template(v: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match v {
        J::String(s) => has_template(s),
        J::Array(items) => items.iter().any(json_has_template),
        J::Object(map) => map.values().any(json_has_template),
        _ => false,
    }
}

/// minijinja's message without the `(in <string>:1)` locator that means nothing to a user.
fn reason(e: &minijinja::Error) -> String {
    let mut text = e.to_string();
    if let Some(i) = text.rfind(" (in <") {
        text.truncate(i);
    }
    text
}

/// Renders `src` with `ctx`. Text without template syntax is returned unchanged.
pub fn render(src: &str, ctx: &serde_json::Value) -> Result<String, String> {
    if !has_template(src) {
        return Ok(src.to_string());
    }
    env()
        .render_str(src, Value::from(Serde(ctx)))
        .map_err(|e| format!("template `{src}`: {}", reason(&e)))
}

/// Evaluates an expression (`if:`, or the inside of `{{ }}`) to a JSON value.
pub fn eval(expr: &str, ctx: &serde_json::Value) -> Result<serde_json::Value, String> {
    let compiled = env()
        .compile_expression(expr)
        .map_err(|e| format!("expression `{expr}`: {}", reason(&e)))?;
    let v = compiled
        .eval(Value::from(Serde(ctx)))
        .map_err(|e| format!("expression `{expr}`: {}", reason(&e)))?;
    serde_json::to_value(&v).map_err(|e| format!("expression `{expr}`: {e}"))
}

/// Evaluates an `if:` expression to its truth.
pub fn eval_bool(expr: &str, ctx: &serde_json::Value) -> Result<bool, String> {
    let compiled = env()
        .compile_expression(expr)
        .map_err(|e| format!("expression `{expr}`: {}", reason(&e)))?;
    compiled
        .eval(Value::from(Serde(ctx)))
        .map(|v| v.is_true())
        .map_err(|e| format!("expression `{expr}`: {}", reason(&e)))
}

/// The expression of a string that is exactly one `{{ expression }}` (spaces around allowed).
fn sole_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner.trim())
}

/// Renders every string inside a JSON value (`json:` bodies, `sql.params`). A string that is
/// exactly one `{{ expression }}` becomes the expression's value, so numbers, booleans, objects
/// and nulls keep their type; other strings render to strings. Keys are left alone.
pub fn render_json(
    v: &serde_json::Value,
    ctx: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match v {
        J::String(s) => match sole_expression(s) {
            Some(expr) => eval(expr, ctx)?,
            None => J::String(render(s, ctx)?),
        },
        J::Array(items) => J::Array(
            items
                .iter()
                .map(|i| render_json(i, ctx))
                .collect::<Result<_, _>>()?,
        ),
        J::Object(map) => J::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_json(v, ctx)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Checks a template without rendering it: `Ok` with the variables it reads (dotted paths such
/// as `steps.fetch.outputs.id`), or why it does not parse.
pub fn check_template(src: &str) -> Result<Vec<String>, String> {
    if !has_template(src) {
        return Ok(Vec::new());
    }
    let t = env().template_from_str(src).map_err(|e| reason(&e))?;
    let mut vars: Vec<String> = t.undeclared_variables(true).into_iter().collect();
    vars.sort();
    Ok(vars)
}

/// Checks an expression (`if:`): `Ok` with the variables it reads, or why it does not parse.
pub fn check_expression(src: &str) -> Result<Vec<String>, String> {
    let e = env().compile_expression(src).map_err(|e| reason(&e))?;
    let mut vars: Vec<String> = e.undeclared_variables(true).into_iter().collect();
    vars.sort();
    Ok(vars)
}

/// In text that is never rendered (`run`, `command`, `sql.query`), the first `{{ … }}` that reads
/// `input`, `steps` or `run` — a value someone meant to splice in, which must go through `env` or
/// `params` instead. Other braces are plain text (`docker ps --format '{{.Names}}'`).
pub fn context_reference_in_literal(text: &str) -> Option<String> {
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else { break };
        let inner = &after[..close];
        if names_a_root(inner) {
            return Some(format!("{{{{{inner}}}}}"));
        }
        rest = &after[close + 2..];
    }
    None
}

/// Whether `expr` mentions `input`, `steps` or `run` as a name (not as a field after a dot).
fn names_a_root(expr: &str) -> bool {
    let bytes = expr.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if ident(bytes[i]) && (i == 0 || !ident(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && ident(bytes[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            let after_dot = expr[..start].trim_end().ends_with('.');
            if !after_dot && ROOTS.contains(&word) {
                return true;
            }
        } else {
            i += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> serde_json::Value {
        json!({
            "input": {"user_id": 42, "plan": "pro", "name": "O'Brien; rm -rf /"},
            "steps": {"fetch": {"state": "succeeded", "outputs": {"id": 7, "email": "a@b.c", "tags": ["x"]}}},
            "run": {"id": 5, "job": "onboard", "attempt": 1, "trigger": "queue", "scheduled_at": null},
        })
    }

    #[test]
    fn renders_strings_and_keeps_plain_text() {
        assert_eq!(
            render("plain $HOME {not}", &ctx()).unwrap(),
            "plain $HOME {not}"
        );
        assert_eq!(
            render(
                "user {{ input.user_id }} <{{ steps.fetch.outputs.email }}>",
                &ctx()
            )
            .unwrap(),
            "user 42 <a@b.c>"
        );
        assert_eq!(
            render("{{ input.name }}", &ctx()).unwrap(),
            "O'Brien; rm -rf /"
        );
    }

    #[test]
    fn json_values_keep_their_types() {
        let body = json!({"user": "{{ steps.fetch.outputs.id }}", "plan": "{{ input.plan }}",
            "label": "id-{{ input.user_id }}", "tags": "{{ steps.fetch.outputs.tags }}", "n": 3});
        assert_eq!(
            render_json(&body, &ctx()).unwrap(),
            json!({"user": 7, "plan": "pro", "label": "id-42", "tags": ["x"], "n": 3})
        );
    }

    #[test]
    fn conditions() {
        assert!(
            eval_bool(
                "steps.fetch.state == 'succeeded' and input.plan != 'free'",
                &ctx()
            )
            .unwrap()
        );
        assert!(!eval_bool("input.user_id > 100", &ctx()).unwrap());
    }

    #[test]
    fn failures_name_the_expression_and_the_reason() {
        let e = render("{{ steps.nope.outputs.id }}", &ctx()).unwrap_err();
        assert!(
            e.contains("steps.nope.outputs.id") && e.contains("undefined"),
            "{e}"
        );
        let e = eval_bool("input.plan >", &ctx()).unwrap_err();
        assert!(
            e.contains("input.plan >") && e.contains("syntax error"),
            "{e}"
        );
    }

    #[test]
    fn validation_lists_what_a_template_reads() {
        assert_eq!(
            check_template("{{ input.a }} and {{ steps.b.outputs.c }}").unwrap(),
            vec!["input.a".to_string(), "steps.b.outputs.c".to_string()]
        );
        assert!(check_template("{{ input.a ").is_err());
        assert_eq!(
            check_expression("run.attempt > 1").unwrap(),
            vec!["run.attempt"]
        );
    }

    #[test]
    fn context_in_literal_text_is_found_and_other_braces_are_not() {
        assert_eq!(
            context_reference_in_literal("docker ps --format '{{.Names}}'"),
            None
        );
        assert_eq!(
            context_reference_in_literal("echo {{ .Values.input }}"),
            None
        );
        assert_eq!(
            context_reference_in_literal("curl x/{{ input.user_id }}").as_deref(),
            Some("{{ input.user_id }}")
        );
        assert!(context_reference_in_literal("echo {{steps.a.outputs.x}}").is_some());
        assert!(context_reference_in_literal("echo {{ run.id }}").is_some());
        assert_eq!(context_reference_in_literal("echo {{ running }}"), None);
    }
}
