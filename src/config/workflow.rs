//! A job's `steps:` and `input:`: the workflow read from its file and checked as a whole —
//! step names, kinds, the `needs` graph (unknown names, cycles), every template and expression —
//! with each problem reported at the value it concerns.
//!
//! The model it produces is [`crate::workflow::model`]; templates are checked with
//! [`crate::workflow::template`] and kept as written, to be rendered when a step starts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use super::diag::Pos;
use super::job::{parse_command, parse_retry, parse_workdir, positive_duration};
use super::yaml::{Ctx, Key, MapReader, Node, Value, closest};
use crate::config::Exec;
use crate::queue::retry::{DEFAULT_RETRY_POLICY, RetryPolicy};
use crate::workflow::model::{
    HttpBody, HttpStep, InputField, InputSpec, NotifyStep, ProcessStep, SleepStep, SqlStep,
    StepDef, StepKind, WaitStep,
};
use crate::workflow::template;

/// The channel a `notify` step names, checked against `alerts.yaml` once that is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRef {
    pub channel: String,
    /// Where the channel is named.
    pub pos: Pos,
    /// Where `to:` and `subject:` are written, if they are (e-mail channels only).
    pub to: Option<Pos>,
    pub subject: Option<Pos>,
}

/// The keys that say what a step does; a step has exactly one.
const KIND_KEYS: &[&str] = &[
    "run",
    "command",
    "http",
    "sql",
    "notify",
    "sleep",
    "sleep_until",
    "wait_for",
];
/// Keys every step may have.
const COMMON_FIELDS: &[&str] = &["name", "needs", "if", "allow_failure", "retry", "timeout"];
/// Keys only process steps (`run`, `command`) have.
const PROCESS_FIELDS: &[&str] = &["env", "workdir"];
const HTTP_FIELDS: &[&str] = &[
    "method", "url", "headers", "json", "body", "expect", "timeout",
];
const HTTP_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
const SQL_FIELDS: &[&str] = &["url", "query", "params"];
const SQL_SCHEMES: &[&str] = &[
    "postgres://",
    "postgresql://",
    "mysql://",
    "mariadb://",
    "sqlite://",
];
const NOTIFY_FIELDS: &[&str] = &["channel", "text", "to", "subject"];
const WAIT_FIELDS: &[&str] = &["signal", "timeout"];
const INPUT_FIELD_FIELDS: &[&str] = &["required", "default"];

/// An `http` step's timeout when none is given.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// What is known of the job's steps while one of them is read: every name as written (for
/// `needs` and `steps.NAME` references, with did-you-mean).
struct Names<'a> {
    all: &'a [&'a str],
}

/// One step as read, before its `needs` are resolved.
struct Partial {
    kind: Option<StepKind>,
    needs: Option<Vec<(String, Pos)>>,
    condition: Option<String>,
    allow_failure: bool,
    retry: RetryPolicy,
    timeout: Option<Duration>,
}

/// Reads `steps:`. `job_timeout` is what a process step's `timeout` defaults to; the channels
/// `notify` steps name and the secrets found (database passwords) are added to `channels` and
/// `secrets` whether or not the steps are valid. `None` when anything is wrong (reported).
pub fn parse_steps(
    ctx: &mut Ctx<'_>,
    node: &Node,
    config_dir: &Path,
    job_timeout: Option<Duration>,
    channels: &mut Vec<ChannelRef>,
    secrets: &mut Vec<String>,
) -> Option<Vec<StepDef>> {
    let before = ctx.diags.len();
    let items = ctx.list(node, "steps", false)?;
    if items.is_empty() {
        ctx.error(
            node.pos,
            "steps must list at least one step, e.g. `steps: [{ name: first, run: ./first }]`",
        );
        return None;
    }

    // First every step's name, so that references to later steps can be checked.
    let mut readers: Vec<Option<MapReader<'_>>> = Vec::with_capacity(items.len());
    let mut names: Vec<Option<String>> = Vec::with_capacity(items.len());
    let mut name_lines: BTreeMap<String, u32> = BTreeMap::new();
    for item in &items {
        let Some(mut m) = ctx.map(item, "a step") else {
            readers.push(None);
            names.push(None);
            continue;
        };
        let name = match m.get("name") {
            Some(n) => ctx.nonempty_string(n, "name").inspect(|name| {
                if !is_step_name(name) {
                    ctx.error(
                        n.pos,
                        format!("step name `{name}` must be lowercase letters, digits and `_`, starting with a letter (it is read as `steps.NAME` in templates)"),
                    );
                } else if let Some(line) = name_lines.get(name) {
                    ctx.error(
                        n.pos,
                        format!("a step named `{name}` already exists (line {line}): step names must be unique in a job"),
                    );
                }
                name_lines.entry(name.clone()).or_insert(n.pos.line);
            }),
            None => {
                ctx.error(
                    m.pos,
                    "a step needs `name:` (lowercase letters, digits and `_`, unique in the job)",
                );
                None
            }
        };
        readers.push(Some(m));
        names.push(name);
    }
    let all: Vec<&str> = names.iter().flatten().map(String::as_str).collect();
    let known = Names { all: &all };

    let mut partials: Vec<Option<Partial>> = Vec::with_capacity(items.len());
    for m in readers {
        partials.push(
            m.map(|m| parse_step(ctx, m, config_dir, job_timeout, &known, channels, secrets)),
        );
    }

    // `needs`, resolved to indices (the previous step by default), each with where it is written.
    let index: BTreeMap<&str, usize> = names
        .iter()
        .enumerate()
        .rev()
        .filter_map(|(i, n)| n.as_deref().map(|n| (n, i)))
        .collect();
    let mut edges: Vec<Vec<(usize, Option<Pos>)>> = Vec::with_capacity(items.len());
    for (i, p) in partials.iter().enumerate() {
        let mut mine: Vec<(usize, Option<Pos>)> = Vec::new();
        match p.as_ref().and_then(|p| p.needs.as_ref()) {
            Some(written) => {
                for (need, pos) in written {
                    let Some(&j) = index.get(need.as_str()) else {
                        let hint = closest(need, &all)
                            .map(|s| format!(" (did you mean `{s}`?)"))
                            .unwrap_or_default();
                        ctx.error(
                            *pos,
                            format!("needs: unknown step `{need}`: no step of this job has that name{hint}"),
                        );
                        continue;
                    };
                    if j == i {
                        ctx.error(*pos, format!("step `{need}` cannot need itself"));
                    } else if mine.iter().any(|(k, _)| *k == j) {
                        ctx.error(*pos, format!("`{need}` is listed twice in needs"));
                    } else {
                        mine.push((j, Some(*pos)));
                    }
                }
            }
            None if i > 0 && p.is_some() => mine.push((i - 1, None)),
            None => {}
        }
        edges.push(mine);
    }
    report_cycles(ctx, &edges, &names);

    if ctx.diags.len() > before {
        return None;
    }
    let mut steps = Vec::with_capacity(items.len());
    for ((p, name), needs) in partials.into_iter().zip(names).zip(edges) {
        let p = p?;
        steps.push(StepDef {
            name: name?,
            kind: p.kind?,
            needs: needs.into_iter().map(|(j, _)| j).collect(),
            condition: p.condition,
            allow_failure: p.allow_failure,
            retry: p.retry,
            timeout: p.timeout,
        });
    }
    Some(steps)
}

/// `[a-z][a-z0-9_]*`.
fn is_step_name(name: &str) -> bool {
    let mut b = name.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_lowercase())
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

fn parse_step(
    ctx: &mut Ctx<'_>,
    mut m: MapReader<'_>,
    config_dir: &Path,
    job_timeout: Option<Duration>,
    names: &Names<'_>,
    channels: &mut Vec<ChannelRef>,
    secrets: &mut Vec<String>,
) -> Partial {
    let needs = m
        .get("needs")
        .map(|n| ctx.string_list(n, "needs", true).unwrap_or_default());
    let condition = m.get("if").and_then(|n| {
        let expr = ctx.nonempty_string(n, "if")?;
        check_condition(ctx, n.pos, &expr, names);
        Some(expr)
    });
    let allow_failure = m
        .get("allow_failure")
        .and_then(|n| ctx.bool(n, "allow_failure"))
        .unwrap_or(false);
    let retry = match m.get("retry") {
        Some(n) => parse_retry(ctx, n),
        None => DEFAULT_RETRY_POLICY,
    };
    let timeout_node = m.get_entry("timeout");
    let mut timeout = timeout_node
        .and_then(|(_, n)| positive_duration(ctx, n, "timeout", "leave it out for the default"));

    // Exactly one kind key.
    let mut kinds: Vec<(&Key, &Node)> = KIND_KEYS.iter().filter_map(|k| m.get_entry(k)).collect();
    kinds.sort_by_key(|(k, _)| (k.pos.line, k.pos.col));
    let mut known: Vec<&str> = COMMON_FIELDS.to_vec();
    known.extend(kinds.iter().map(|(k, _)| k.name.as_str()));
    let what = match kinds.as_slice() {
        [(k, _)] if k.name == "http" => "an `http` step".to_string(),
        [(k, _)] => format!("a `{}` step", k.name),
        _ => "a step".to_string(),
    };
    match kinds.as_slice() {
        [] => {
            ctx.error(
                m.pos,
                "a step needs one of `run`, `command`, `http`, `sql`, `notify`, `sleep`, `sleep_until` or `wait_for` (what the step does)",
            );
            known.extend(KIND_KEYS);
            known.extend(PROCESS_FIELDS);
        }
        [_] => {}
        [(first, _), rest @ ..] => {
            let also: Vec<String> = rest.iter().map(|(k, _)| format!("`{}`", k.name)).collect();
            ctx.error(
                rest[0].0.pos,
                format!(
                    "a step does exactly one thing: this one has `{}` and {} (keep one of `run`, `command`, `http`, `sql`, `notify`, `sleep`, `sleep_until`, `wait_for`, and make the others steps of their own)",
                    first.name,
                    also.join(" and ")
                ),
            );
        }
    }
    // Every kind given is read, so that its own problems are reported too; the step has a kind
    // only when it has exactly one.
    let single = kinds.len() == 1;
    let mut kind = None;
    let mut process_read = false;
    for (k, n) in &kinds {
        let read = match k.name.as_str() {
            "run" | "command" => {
                if single && timeout_node.is_none() {
                    timeout = job_timeout;
                }
                // `env` and `workdir` belong to the step: read once, even with `run` and `command`.
                let with_env = !process_read;
                if with_env {
                    known.extend(PROCESS_FIELDS);
                }
                process_read = true;
                parse_process(ctx, &mut m, k, n, config_dir, names, with_env)
            }
            "http" => {
                let (http, own_timeout) = parse_http(ctx, n, names);
                match (own_timeout, timeout_node) {
                    (Some((pos, _)), Some(_)) => ctx.error(
                        pos,
                        "give the timeout once: either the step's `timeout` or `http.timeout`",
                    ),
                    (Some((_, t)), None) if single => timeout = t,
                    (None, None) if single => timeout = Some(DEFAULT_HTTP_TIMEOUT),
                    _ => {}
                }
                http.map(StepKind::Http)
            }
            "sql" => parse_sql(ctx, n, config_dir, names, secrets).map(StepKind::Sql),
            "notify" => parse_notify(ctx, n, names, channels).map(StepKind::Notify),
            "sleep" => positive_duration(ctx, n, "sleep", "leave the step out for no delay")
                .map(|d| StepKind::Sleep(SleepStep::For(d))),
            "sleep_until" => {
                parse_sleep_until(ctx, n, names).map(|t| StepKind::Sleep(SleepStep::Until(t)))
            }
            _ => parse_wait(ctx, n).map(StepKind::WaitFor),
        };
        if single {
            kind = read;
        }
    }
    m.finish(ctx, &what, &known);
    Partial {
        kind,
        needs,
        condition,
        allow_failure,
        retry,
        timeout,
    }
}

/// `run:` or `command:`, with `env` and `workdir`.
fn parse_process(
    ctx: &mut Ctx<'_>,
    m: &mut MapReader<'_>,
    key: &Key,
    n: &Node,
    config_dir: &Path,
    names: &Names<'_>,
    with_env: bool,
) -> Option<StepKind> {
    let exec = if key.name == "run" {
        ctx.nonempty_string(n, "run").inspect(|line| {
            if let Some(found) = template::context_reference_in_literal(line) {
                let var = env_name_for(&found);
                ctx.error(
                    n.pos,
                    format!("run is never rendered: `{found}` would reach the shell as written; pass the value through `env` instead (`env: {{ {var}: \"{found}\" }}`) and write \"${var}\" in the shell line"),
                );
            }
        }).map(Exec::Shell)
    } else {
        parse_command(ctx, n, "command").map(|argv| {
            for (i, (arg, pos)) in argv.iter().enumerate() {
                if let Some(found) = template::context_reference_in_literal(arg) {
                    let var = env_name_for(&found);
                    ctx.error(
                        *pos,
                        format!("command[{i}] is never rendered: `{found}` would reach the program as written; pass the value through `env` instead (`env: {{ {var}: \"{found}\" }}`), which the program reads from its environment"),
                    );
                }
            }
            Exec::Argv(argv.into_iter().map(|(s, _)| s).collect())
        })
    };
    let env = match m.get("env").filter(|_| with_env) {
        Some(n) => {
            let env = ctx.env_map(n, "env");
            if let (Some(env), Value::Map(entries)) = (&env, &n.value) {
                for (k, v) in entries {
                    if let Some(value) = env.get(&k.name) {
                        check_template(ctx, v.pos, &format!("env.{}", k.name), value, names);
                    }
                }
            }
            env
        }
        None => Some(BTreeMap::new()),
    };
    let workdir = match m.get("workdir").filter(|_| with_env) {
        Some(n) => parse_workdir(ctx, n, config_dir).map(Some),
        None => Some(None),
    };
    Some(StepKind::Process(ProcessStep {
        exec: exec?,
        env: env?,
        workdir: workdir?,
    }))
}

/// An environment variable name to suggest for the value of `{{ … }}` found in a command: the
/// last name of its path in capitals (`{{ input.user_id }}` → `USER_ID`), else `VALUE`.
fn env_name_for(found: &str) -> String {
    let inner = found.trim_start_matches('{').trim_end_matches('}').trim();
    let path: String = inner
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
        .collect();
    let last = path
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    if super::interp::is_var_name(&last) && !last.starts_with("WORKER_") {
        last
    } else {
        "VALUE".to_string()
    }
}

/// `http:`. Also returns `http.timeout` with its position, when given.
fn parse_http(
    ctx: &mut Ctx<'_>,
    node: &Node,
    names: &Names<'_>,
) -> (Option<HttpStep>, Option<(Pos, Option<Duration>)>) {
    let Some(mut m) = ctx.map(node, "http") else {
        return (None, None);
    };
    let before = ctx.diags.len();
    let url = match m.get("url") {
        Some(n) => ctx.nonempty_string(n, "http.url").inspect(|u| {
            check_http_url(ctx, n.pos, u);
            check_template(ctx, n.pos, "http.url", u, names);
        }),
        None => {
            ctx.error(
                m.pos,
                "an http step needs `url:` (e.g. `url: https://api.example.com/v1/items`)",
            );
            None
        }
    };
    let method = match m.get("method") {
        Some(n) => ctx.string(n, "http.method").and_then(|s| {
            let upper = s.trim().to_ascii_uppercase();
            if HTTP_METHODS.contains(&upper.as_str()) {
                Some(upper)
            } else {
                ctx.error(
                    n.pos,
                    format!(
                        "http.method must be one of {}, found `{s}`",
                        HTTP_METHODS.join(", ")
                    ),
                );
                None
            }
        }),
        None => Some("GET".to_string()),
    };
    let mut headers = BTreeMap::new();
    if let Some(n) = m.get("headers") {
        match &n.value {
            Value::Map(entries) => {
                for (k, v) in entries {
                    let what = format!("http.headers.{}", k.name);
                    if reqwest::header::HeaderName::from_bytes(k.name.as_bytes()).is_err() {
                        ctx.error(
                            k.pos,
                            format!("http.headers: `{}` is not a valid header name (letters, digits and `-`, e.g. `Content-Type`)", k.name),
                        );
                        continue;
                    }
                    let Some(value) = ctx.string(v, &what) else {
                        continue;
                    };
                    if template::has_template(&value) {
                        check_template(ctx, v.pos, &what, &value, names);
                    } else if reqwest::header::HeaderValue::from_str(&value).is_err() {
                        ctx.error(
                            v.pos,
                            format!("{what}: the value holds characters a header cannot carry (such as a line break)"),
                        );
                    }
                    headers.insert(k.name.clone(), value);
                }
            }
            Value::Null => {}
            _ => {
                let kind = n.kind();
                ctx.error(
                    n.pos,
                    format!("http.headers must be a mapping of Name: value, found {kind}"),
                );
            }
        }
    }
    let json = m.get_entry("json");
    let text = m.get_entry("body");
    let body = match (json, text) {
        (Some((jk, _)), Some((bk, _))) => {
            let later = if (bk.pos.line, bk.pos.col) > (jk.pos.line, jk.pos.col) {
                bk
            } else {
                jk
            };
            ctx.error(
                later.pos,
                "http: give either `json` (a JSON body) or `body` (text), not both",
            );
            None
        }
        (Some((_, n)), None) => {
            let mut ok = true;
            let v = to_json(ctx, n, "http.json", Some(names), &mut ok);
            ok.then_some(HttpBody::Json(v))
        }
        (None, Some((_, n))) => ctx.string(n, "http.body").map(|b| {
            check_template(ctx, n.pos, "http.body", &b, names);
            HttpBody::Text(b)
        }),
        (None, None) => Some(HttpBody::None),
    };
    let mut expect = Vec::new();
    if let Some(n) = m.get("expect") {
        let items = ctx.list(n, "http.expect", true).unwrap_or_default();
        if items.is_empty() && matches!(n.value, Value::Seq(_) | Value::Null) {
            ctx.error(
                n.pos,
                "http.expect must name at least one status (leave it out to accept any 2xx)",
            );
        }
        for item in items {
            if let Some(code) = ctx.int(item, "http.expect", 100, 599) {
                let code = code as u16;
                if !expect.contains(&code) {
                    expect.push(code);
                }
            }
        }
    }
    let timeout = m.get_entry("timeout").map(|(k, n)| {
        (
            k.pos,
            positive_duration(
                ctx,
                n,
                "http.timeout",
                "leave it out for the default of 30s",
            ),
        )
    });
    m.finish(ctx, "http", HTTP_FIELDS);
    if ctx.diags.len() > before {
        return (None, timeout);
    }
    let step = match (url, method, body) {
        (Some(url), Some(method), Some(body)) => Some(HttpStep {
            method,
            url,
            headers,
            body,
            expect,
        }),
        _ => None,
    };
    (step, timeout)
}

/// An absolute http(s) URL; a templated one must at least start with `http://` or `https://`.
fn check_http_url(ctx: &mut Ctx<'_>, pos: Pos, u: &str) {
    let template_at = [u.find("{{"), u.find("{%")].into_iter().flatten().min();
    if let Some(i) = template_at {
        let head = u[..i].trim_start().to_ascii_lowercase();
        if !(head.starts_with("http://") || head.starts_with("https://")) {
            ctx.error(
                pos,
                format!("http.url `{u}` must start with `http://` or `https://` before any template (e.g. `https://api.example.com/users/{{{{ input.user_id }}}}`)"),
            );
        }
        return;
    }
    match url::Url::parse(u.trim()) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {}
        Ok(parsed) => ctx.error(
            pos,
            format!(
                "http.url `{u}` must be an http or https URL, not `{}` (e.g. `https://api.example.com/v1/items`)",
                parsed.scheme()
            ),
        ),
        Err(e) => ctx.error(
            pos,
            format!("http.url `{u}` is not an absolute URL ({e}): write e.g. `https://api.example.com/v1/items`"),
        ),
    }
}

/// `sql:`.
fn parse_sql(
    ctx: &mut Ctx<'_>,
    node: &Node,
    config_dir: &Path,
    names: &Names<'_>,
    secrets: &mut Vec<String>,
) -> Option<SqlStep> {
    let mut m = ctx.map(node, "sql")?;
    let before = ctx.diags.len();
    let url = match m.get("url") {
        Some(n) => ctx
            .nonempty_string(n, "sql.url")
            .and_then(|u| sql_url(ctx, n.pos, u.trim(), config_dir, secrets)),
        None => {
            ctx.error(
                m.pos,
                "a sql step needs `url:` (e.g. `url: \"${APP_DATABASE_URL}\"`, `postgres://user:password@host/db` or `sqlite:///var/lib/app.db`)",
            );
            None
        }
    };
    let placeholder = match url.as_deref() {
        Some(u) if u.starts_with("postgres") => "`$1`",
        _ => "`?`",
    };
    let query = match m.get("query") {
        Some(n) => ctx.nonempty_string(n, "sql.query").inspect(|q| {
            if let Some(found) = template::context_reference_in_literal(q) {
                ctx.error(
                    n.pos,
                    format!("sql.query is never rendered: `{found}` would reach the database as written; pass the value through `params` instead (`params: [\"{found}\"]`) and write a placeholder such as {placeholder} in the query"),
                );
            }
        }),
        None => {
            ctx.error(
                m.pos,
                "a sql step needs `query:` (values go in `params:`, e.g. `query: \"UPDATE users SET plan = $1 WHERE id = $2\"`)",
            );
            None
        }
    };
    let mut params = Vec::new();
    if let Some(n) = m.get("params") {
        for (i, item) in ctx
            .list(n, "sql.params", false)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            if matches!(item.value, Value::Seq(_) | Value::Map(_)) {
                let kind = item.kind();
                ctx.error(
                    item.pos,
                    format!("sql.params[{i}] must be a single value (a string, number, boolean, null or template), found {kind}"),
                );
                continue;
            }
            let mut ok = true;
            params.push(to_json(
                ctx,
                item,
                &format!("sql.params[{i}]"),
                Some(names),
                &mut ok,
            ));
        }
    }
    m.finish(ctx, "sql", SQL_FIELDS);
    if ctx.diags.len() > before {
        return None;
    }
    Some(SqlStep {
        url: url?,
        query: query?,
        params,
    })
}

/// A database URL: its scheme checked, its password (if any) recorded as a secret, a relative
/// SQLite path resolved against the config directory. The value is never echoed in a message:
/// it may hold a password.
fn sql_url(
    ctx: &mut Ctx<'_>,
    pos: Pos,
    u: &str,
    config_dir: &Path,
    secrets: &mut Vec<String>,
) -> Option<String> {
    if template::context_reference_in_literal(u).is_some() {
        ctx.error(
            pos,
            "sql.url is not a template (it is read when the configuration loads): take it from the environment with `${VAR}` instead",
        );
        return None;
    }
    let Some(scheme) = SQL_SCHEMES.iter().find(|s| u.starts_with(**s)) else {
        ctx.error(
            pos,
            format!("sql.url must start with {} (e.g. `postgres://user:password@host/db` or `sqlite:///var/lib/app.db`; the value is not shown: it may hold a password)", SQL_SCHEMES.join(", ")),
        );
        return None;
    };
    if *scheme == "sqlite://" {
        let rest = &u[scheme.len()..];
        let (path, query) = match rest.find('?') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if path.is_empty() {
            ctx.error(
                pos,
                "sql.url: a sqlite URL needs a file: `sqlite:///absolute/path.db` or `sqlite://path/relative/to/the/config.db`",
            );
            return None;
        }
        if path.starts_with('/') || path == ":memory:" {
            return Some(u.to_string());
        }
        let joined = config_dir.join(path);
        let absolute = std::path::absolute(&joined).unwrap_or(joined);
        return Some(format!("sqlite://{}{query}", absolute.display()));
    }
    match url::Url::parse(u) {
        Ok(parsed) => {
            if let Some(p) = parsed.password() {
                secrets.push(p.to_string());
                if let Ok(decoded) = percent_encoding::percent_decode_str(p).decode_utf8() {
                    secrets.push(decoded.into_owned());
                }
            }
            Some(u.to_string())
        }
        Err(e) => {
            ctx.error(
                pos,
                format!("sql.url is not a valid URL ({e}); the value is not shown: it may hold a password"),
            );
            None
        }
    }
}

/// `notify:`. The channel is recorded in `channels`, to be checked against `alerts.yaml`.
fn parse_notify(
    ctx: &mut Ctx<'_>,
    node: &Node,
    names: &Names<'_>,
    channels: &mut Vec<ChannelRef>,
) -> Option<NotifyStep> {
    let mut m = ctx.map(node, "notify")?;
    let before = ctx.diags.len();
    let channel = match m.get("channel") {
        Some(n) => ctx.nonempty_string(n, "notify.channel").map(|c| (c, n.pos)),
        None => {
            ctx.error(
                m.pos,
                "a notify step needs `channel:` (a channel of alerts.yaml)",
            );
            None
        }
    };
    let text = match m.get("text") {
        Some(n) => ctx.nonempty_string(n, "notify.text").inspect(|t| {
            check_template(ctx, n.pos, "notify.text", t, names);
        }),
        None => {
            ctx.error(m.pos, "a notify step needs `text:` (the message)");
            None
        }
    };
    let to_entry = m.get_entry("to");
    let mut to = Vec::new();
    if let Some((_, n)) = to_entry {
        for (i, (addr, pos)) in ctx
            .string_list(n, "notify.to", true)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let what = format!("notify.to[{i}]");
            if template::has_template(&addr) {
                check_template(ctx, pos, &what, &addr, names);
            } else if addr.parse::<lettre::message::Mailbox>().is_err() {
                ctx.error(pos, format!("{what}: `{addr}` is not an e-mail address"));
            }
            to.push(addr);
        }
    }
    let subject_entry = m.get_entry("subject");
    let subject = subject_entry.and_then(|(_, n)| {
        ctx.string(n, "notify.subject").inspect(|s| {
            check_template(ctx, n.pos, "notify.subject", s, names);
        })
    });
    m.finish(ctx, "notify", NOTIFY_FIELDS);
    let (channel, pos) = channel?;
    channels.push(ChannelRef {
        channel: channel.clone(),
        pos,
        to: to_entry.map(|(k, _)| k.pos),
        subject: subject_entry.map(|(k, _)| k.pos),
    });
    if ctx.diags.len() > before {
        return None;
    }
    Some(NotifyStep {
        channel,
        text: text?,
        to,
        subject,
    })
}

/// `sleep_until:` a template, or an RFC 3339 time.
fn parse_sleep_until(ctx: &mut Ctx<'_>, n: &Node, names: &Names<'_>) -> Option<String> {
    let t = ctx.nonempty_string(n, "sleep_until")?;
    if template::has_template(&t) {
        check_template(ctx, n.pos, "sleep_until", &t, names);
    } else if chrono::DateTime::parse_from_rfc3339(t.trim()).is_err() {
        ctx.error(
            n.pos,
            format!("sleep_until: `{t}` is not an RFC 3339 time (write e.g. `2030-06-01T09:00:00Z`, or a template such as `{{{{ input.send_at }}}}`)"),
        );
        return None;
    }
    Some(t)
}

/// `wait_for: { signal: NAME, timeout: DUR }`.
fn parse_wait(ctx: &mut Ctx<'_>, node: &Node) -> Option<WaitStep> {
    let mut m = ctx.map(node, "wait_for")?;
    let signal = match m.get("signal") {
        Some(n) => ctx.nonempty_string(n, "wait_for.signal").and_then(|s| {
            let ok = s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if ok {
                Some(s)
            } else {
                ctx.error(
                    n.pos,
                    format!("wait_for.signal `{s}` may hold only letters, digits, `_`, `.` and `-` (it is named on the command line: `worker signal RUN NAME`)"),
                );
                None
            }
        }),
        None => {
            ctx.error(
                m.pos,
                "a wait_for step needs `signal:` (the name given to `worker signal RUN NAME`)",
            );
            None
        }
    };
    let timeout = match m.get("timeout") {
        Some(n) => Some(positive_duration(
            ctx,
            n,
            "wait_for.timeout",
            "leave it out to wait without limit",
        )?),
        None => None,
    };
    m.finish(ctx, "wait_for", WAIT_FIELDS);
    Some(WaitStep {
        signal: signal?,
        timeout,
    })
}

/// `input:`: field name → `{ required: bool, default: any }`.
pub fn parse_input(ctx: &mut Ctx<'_>, node: &Node) -> Option<InputSpec> {
    let entries: &[(Key, Node)] = match &node.value {
        Value::Map(entries) => entries,
        Value::Null => &[],
        _ => {
            let kind = node.kind();
            ctx.error(
                node.pos,
                format!("input must be a mapping of field: {{ required: true }} or field: {{ default: VALUE }}, found {kind}"),
            );
            return None;
        }
    };
    let before = ctx.diags.len();
    let mut spec = InputSpec::default();
    for (k, v) in entries {
        if !super::interp::is_var_name(&k.name) {
            ctx.error(
                k.pos,
                format!("input: `{}` is not a valid field name (letters, digits and `_`, not starting with a digit)", k.name),
            );
            continue;
        }
        if !matches!(v.value, Value::Map(_) | Value::Null) {
            let kind = v.kind();
            ctx.error(
                v.pos,
                format!(
                    "input.{} must be {{ required: true }} or {{ default: VALUE }}, found {kind}",
                    k.name
                ),
            );
            continue;
        }
        let Some(mut m) = ctx.map(v, "an input field") else {
            continue;
        };
        let mut field = InputField::default();
        if let Some(n) = m.get("required") {
            field.required = ctx
                .bool(n, &format!("input.{}.required", k.name))
                .unwrap_or(false);
        }
        if let Some((dk, n)) = m.get_entry("default") {
            let mut ok = true;
            field.default = Some(to_json(
                ctx,
                n,
                &format!("input.{}.default", k.name),
                None,
                &mut ok,
            ));
            if field.required {
                ctx.error(
                    dk.pos,
                    format!("input.{}: a field is either `required: true` or has a `default`, not both (remove one)", k.name),
                );
            }
        }
        m.finish(ctx, "an input field", INPUT_FIELD_FIELDS);
        spec.fields.insert(k.name.clone(), field);
    }
    (ctx.diags.len() == before).then_some(spec)
}

/// A YAML value as JSON, keeping its types; strings are `${VAR}`-expanded and, with `names`,
/// checked as templates. Problems are reported and clear `ok`.
fn to_json(
    ctx: &mut Ctx<'_>,
    n: &Node,
    what: &str,
    names: Option<&Names<'_>>,
    ok: &mut bool,
) -> serde_json::Value {
    use serde_json::Value as J;
    match &n.value {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Float(f) => match serde_json::Number::from_f64(*f) {
            Some(x) => J::Number(x),
            None => {
                ctx.error(n.pos, format!("{what}: `{f}` has no JSON form"));
                *ok = false;
                J::Null
            }
        },
        Value::Str(_) => match ctx.string(n, what) {
            Some(s) => {
                if let Some(names) = names
                    && !check_template(ctx, n.pos, what, &s, names)
                {
                    *ok = false;
                }
                J::String(s)
            }
            None => {
                *ok = false;
                J::Null
            }
        },
        Value::Seq(items) => J::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| to_json(ctx, item, &format!("{what}[{i}]"), names, ok))
                .collect(),
        ),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let value = to_json(ctx, v, &format!("{what}.{}", k.name), names, ok);
                    (k.name.clone(), value)
                })
                .collect(),
        ),
    }
}

/// Checks a templated value: it parses, and every variable it reads is in the context (a
/// `steps.NAME` naming a step of this job). Returns whether it is fine (problems are reported).
fn check_template(ctx: &mut Ctx<'_>, pos: Pos, what: &str, text: &str, names: &Names<'_>) -> bool {
    if !template::has_template(text) {
        return true;
    }
    match template::check_template(text) {
        Ok(vars) => check_variables(ctx, pos, what, &vars, names),
        Err(reason) => {
            ctx.error(
                pos,
                format!("{what}: the template does not parse: {reason}"),
            );
            false
        }
    }
}

/// Checks an `if:` expression like a template.
fn check_condition(ctx: &mut Ctx<'_>, pos: Pos, expr: &str, names: &Names<'_>) -> bool {
    let trimmed = expr.trim();
    if let Some(inner) = trimmed
        .strip_prefix("{{")
        .and_then(|t| t.strip_suffix("}}"))
    {
        ctx.error(
            pos,
            format!(
                "if: write a bare expression, without `{{{{ }}}}`: `if: \"{}\"`",
                inner.trim()
            ),
        );
        return false;
    }
    match template::check_expression(expr) {
        Ok(vars) => check_variables(ctx, pos, "if", &vars, names),
        Err(reason) => {
            ctx.error(
                pos,
                format!("if: `{expr}` is not a valid expression: {reason}"),
            );
            false
        }
    }
}

/// Every variable read must start from `input`, `steps` or `run`, and `steps.NAME` must name a
/// step of the job.
fn check_variables(
    ctx: &mut Ctx<'_>,
    pos: Pos,
    what: &str,
    vars: &[String],
    names: &Names<'_>,
) -> bool {
    let mut ok = true;
    for var in vars {
        let mut parts = var.split('.');
        let root = parts.next().unwrap_or_default();
        if template::ROOTS.contains(&root) {
            if root == "steps"
                && let Some(step) = parts.next()
                && !names.all.contains(&step)
            {
                let hint = closest(step, names.all)
                    .map(|s| format!(" (did you mean `steps.{s}`?)"))
                    .unwrap_or_default();
                ctx.error(
                    pos,
                    format!("{what}: `{var}` names no step of this job{hint}"),
                );
                ok = false;
            }
            continue;
        }
        if template::is_global(root) {
            continue;
        }
        let hint = closest(root, template::ROOTS)
            .map(|s| format!("did you mean `{s}`? "))
            .unwrap_or_default();
        ctx.error(
            pos,
            format!("{what}: `{var}` is not in a template's context ({hint}names start with `input`, `steps` or `run`)"),
        );
        ok = false;
    }
    ok
}

/// Unknown channels of `notify` steps, and `to`/`subject` given for a channel that is not e-mail.
/// `written` are the channel names of `alerts.yaml` as written, broken or not (a step naming a
/// broken channel is not also told that it does not exist).
pub fn check_channels(
    alerts: &super::AlertsConfig,
    written: &BTreeSet<String>,
    references: &[(String, ChannelRef)],
    diags: &mut super::Diagnostics,
) {
    let known: Vec<&str> = written.iter().map(String::as_str).collect();
    for (file, r) in references {
        if !written.contains(&r.channel) {
            let hint = closest(&r.channel, &known)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            diags.push(
                file,
                r.pos,
                format!(
                    "notify.channel: unknown channel `{}`: alerts.yaml defines no such channel{hint}",
                    r.channel
                ),
            );
            continue;
        }
        let Some(channel) = alerts.channels.get(&r.channel) else {
            continue;
        };
        if matches!(channel.kind, super::ChannelKind::Email { .. }) {
            continue;
        }
        for (field, pos) in [("to", r.to), ("subject", r.subject)] {
            if let Some(pos) = pos {
                diags.push(
                    file,
                    pos,
                    format!(
                        "notify.{field} is only for e-mail channels; `{}` is a {} channel (remove `{field}`)",
                        r.channel,
                        channel.type_name()
                    ),
                );
            }
        }
    }
}

/// Reports each cycle of the `needs` graph once, at the explicit `needs` entry that closes it,
/// with its path (`a -> b -> a`: each step needs the next).
fn report_cycles(ctx: &mut Ctx<'_>, edges: &[Vec<(usize, Option<Pos>)>], names: &[Option<String>]) {
    let name = |i: usize| names[i].as_deref().unwrap_or("?");
    for cycle in find_cycles(edges) {
        let k = cycle.len();
        // The closing edge goes from the last step to the first.
        let closing = edges[cycle[k - 1]]
            .iter()
            .find(|(j, _)| *j == cycle[0])
            .and_then(|(_, p)| *p)
            .unwrap_or(Pos::NONE);
        let implicit = (0..k).any(|i| {
            edges[cycle[i]]
                .iter()
                .any(|(j, p)| *j == cycle[(i + 1) % k] && p.is_none())
        });
        let mut path: Vec<&str> = cycle.iter().map(|&i| name(i)).collect();
        path.push(name(cycle[0]));
        let note = if implicit {
            "; a step without `needs` needs the step listed before it"
        } else {
            ""
        };
        ctx.error(
            closing,
            format!(
                "needs: cycle {} (each step needs the next{note}): a step cannot wait for itself",
                path.join(" -> ")
            ),
        );
    }
}

/// The cycles found by a depth-first walk of `edges` (one per back edge, each once), each as
/// the steps in order (each needs the next, the last needs the first), rotated so that the edge
/// from the last to the first is written in the file (an implicit "the step before" edge always
/// points backwards, so every cycle has a written one) and, among those, the first step is the
/// earliest in the file.
fn find_cycles(edges: &[Vec<(usize, Option<Pos>)>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let n = edges.len();
    let mut marks = vec![Mark::New; n];
    let mut found: BTreeSet<Vec<usize>> = BTreeSet::new();
    for root in 0..n {
        if marks[root] != Mark::New {
            continue;
        }
        // An explicit stack (step, next edge to follow): a chain of thousands of steps must not
        // exhaust the thread's stack.
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        marks[root] = Mark::Active;
        while let Some(top) = stack.last_mut() {
            let (v, e) = *top;
            if e == edges[v].len() {
                marks[v] = Mark::Done;
                stack.pop();
                continue;
            }
            top.1 += 1;
            let w = edges[v][e].0;
            match marks[w] {
                Mark::New => {
                    marks[w] = Mark::Active;
                    stack.push((w, 0));
                }
                Mark::Active => {
                    let start = stack.iter().position(|(s, _)| *s == w).unwrap_or(0);
                    let cycle: Vec<usize> = stack[start..].iter().map(|(s, _)| *s).collect();
                    found.insert(canonical(cycle, edges));
                }
                Mark::Done => {}
            }
        }
    }
    found.into_iter().collect()
}

fn canonical(cycle: Vec<usize>, edges: &[Vec<(usize, Option<Pos>)>]) -> Vec<usize> {
    let k = cycle.len();
    let written = |from: usize, to: usize| edges[from].iter().any(|(j, p)| *j == to && p.is_some());
    let best = (0..k)
        .filter(|&r| written(cycle[(r + k - 1) % k], cycle[r]))
        .min_by_key(|&r| cycle[r])
        .unwrap_or(0);
    let mut c = cycle;
    c.rotate_left(best);
    c
}
