//! The workflow model: a job's `steps:` as loaded from its file, and as pinned with each run
//! (serialized into the run, so that a reload never changes the graph of a run in flight).
//!
//! Templates (`{{ … }}`) are kept as written; they are rendered when a step starts
//! (see [`super::template`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Exec;
use crate::queue::retry::RetryPolicy;

/// A job's steps, in file order, with the graph resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    pub steps: Vec<StepDef>,
    /// Steps of one run executing at once (`None`: no cap).
    pub parallel: Option<u32>,
}

impl Workflow {
    pub fn step(&self, name: &str) -> Option<(usize, &StepDef)> {
        self.steps.iter().enumerate().find(|(_, s)| s.name == name)
    }

    /// The steps downstream of step `i` (those that need it, transitively), `i` included.
    pub fn downstream(&self, i: usize) -> Vec<usize> {
        let mut out = vec![i];
        let mut k = 0;
        while k < out.len() {
            let cur = out[k];
            for (j, s) in self.steps.iter().enumerate() {
                if s.needs.contains(&cur) && !out.contains(&j) {
                    out.push(j);
                }
            }
            k += 1;
        }
        out.sort_unstable();
        out
    }
}

/// One step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDef {
    /// `[a-z][a-z0-9_]*`, unique in the job.
    pub name: String,
    pub kind: StepKind,
    /// Indices of the steps it runs after (resolved: the previous step by default, none for
    /// `needs: []`).
    pub needs: Vec<usize>,
    /// `if:`: an expression; the step is skipped when it is false.
    #[serde(default)]
    pub condition: Option<String>,
    /// A failure of this step does not fail the run.
    #[serde(default)]
    pub allow_failure: bool,
    /// The step's own retries, in place (default: one attempt).
    #[serde(with = "retry_serde")]
    pub retry: RetryPolicy,
    /// For process steps the job's `timeout` when not given; for `http` 30 s.
    #[serde(default, with = "opt_ms")]
    pub timeout: Option<Duration>,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// `run:` / `command:` — a process, as a job's.
    Process(ProcessStep),
    Http(HttpStep),
    Sql(SqlStep),
    Notify(NotifyStep),
    /// `sleep:` / `sleep_until:`.
    Sleep(SleepStep),
    WaitFor(WaitStep),
}

impl StepKind {
    /// The name shown for the kind (`kind` in the step object).
    pub fn as_str(&self) -> &'static str {
        match self {
            StepKind::Process(p) => match p.exec {
                Exec::Shell(_) => "run",
                Exec::Argv(_) => "command",
            },
            StepKind::Http(_) => "http",
            StepKind::Sql(_) => "sql",
            StepKind::Notify(_) => "notify",
            StepKind::Sleep(_) => "sleep",
            StepKind::WaitFor(_) => "wait_for",
        }
    }

    /// Whether it runs a process (and so takes a slot of the global `concurrency`).
    pub fn is_process(&self) -> bool {
        matches!(self, StepKind::Process(_))
    }
}

/// A process step. `exec` is never rendered: values reach it through `env`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessStep {
    pub exec: Exec,
    /// Values may hold templates.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `None`: the job's workdir.
    #[serde(default)]
    pub workdir: Option<PathBuf>,
}

/// An `http` step. Every string (url, header values, the body, strings inside `json`) may hold
/// templates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpStep {
    /// `GET` by default.
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: HttpBody,
    /// Accepted statuses; empty: any 2xx.
    #[serde(default)]
    pub expect: Vec<u16>,
}

/// What an `http` step sends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpBody {
    #[default]
    None,
    /// `json:` — any JSON value; strings in it are templates, and a string that is exactly one
    /// `{{ expression }}` becomes the expression's value (a number stays a number).
    Json(serde_json::Value),
    /// `body:` — text.
    Text(String),
}

/// A `sql` step: `query` is never rendered; `params` are templates, bound as parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SqlStep {
    /// `postgres://…`, `mysql://…`, `sqlite:///path` (a configuration value, not a template).
    pub url: String,
    pub query: String,
    #[serde(default)]
    pub params: Vec<serde_json::Value>,
}

/// A `notify` step: a message through a channel of `alerts.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyStep {
    pub channel: String,
    pub text: String,
    /// E-mail only: recipients (default: the channel's).
    #[serde(default)]
    pub to: Vec<String>,
    /// E-mail only.
    #[serde(default)]
    pub subject: Option<String>,
}

/// A durable delay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SleepStep {
    /// `sleep: 30m`.
    For(#[serde(with = "ms")] Duration),
    /// `sleep_until: "{{ input.send_at }}"` — a template rendering an RFC 3339 time.
    Until(String),
}

/// Waits for `worker signal RUN SIGNAL`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitStep {
    pub signal: String,
    #[serde(default, with = "opt_ms")]
    pub timeout: Option<Duration>,
}

/// A job's `input:`: the fields of a run's JSON input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    pub fields: BTreeMap<String, InputField>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InputField {
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<serde_json::Value>,
}

impl InputSpec {
    /// Checks `input` (a JSON object) and fills in defaults. Unknown fields and missing required
    /// ones are refused, each named. Without a spec, any object is accepted as it is.
    pub fn check(
        spec: Option<&InputSpec>,
        input: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let serde_json::Value::Object(mut map) = input else {
            return Err("the input must be a JSON object, e.g. {\"user_id\": 42}".into());
        };
        let Some(spec) = spec else {
            return Ok(serde_json::Value::Object(map));
        };
        let unknown: Vec<&String> = map
            .keys()
            .filter(|k| !spec.fields.contains_key(*k))
            .collect();
        if !unknown.is_empty() {
            let known: Vec<&str> = spec.fields.keys().map(String::as_str).collect();
            return Err(format!(
                "unknown input field{} {} (the job's input has: {})",
                if unknown.len() == 1 { "" } else { "s" },
                unknown
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
        let missing: Vec<&str> = spec
            .fields
            .iter()
            .filter(|(k, f)| f.required && !map.contains_key(*k))
            .map(|(k, _)| k.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "missing required input field{} {}",
                if missing.len() == 1 { "" } else { "s" },
                missing
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for (k, f) in &spec.fields {
            if let Some(d) = &f.default
                && !map.contains_key(k)
            {
                map.insert(k.clone(), d.clone());
            }
        }
        Ok(serde_json::Value::Object(map))
    }
}

/// Durations as milliseconds.
mod ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

mod opt_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// A retry policy as `{attempts, backoff, initial_ms, max_ms, jitter}`.
mod retry_serde {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::time::Duration;

    use crate::queue::retry::{Backoff, RetryPolicy};

    #[derive(Serialize, Deserialize)]
    struct Wire {
        attempts: u32,
        exponential: bool,
        initial_ms: u64,
        max_ms: u64,
        jitter: bool,
    }

    pub fn serialize<S: Serializer>(p: &RetryPolicy, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            attempts: p.attempts,
            exponential: p.backoff == Backoff::Exponential,
            initial_ms: p.initial.as_millis() as u64,
            max_ms: p.max.as_millis() as u64,
            jitter: p.jitter,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<RetryPolicy, D::Error> {
        let w = Wire::deserialize(d)?;
        Ok(RetryPolicy {
            attempts: w.attempts,
            backoff: if w.exponential {
                Backoff::Exponential
            } else {
                Backoff::Fixed
            },
            initial: Duration::from_millis(w.initial_ms),
            max: Duration::from_millis(w.max_ms),
            jitter: w.jitter,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn input_is_checked_and_defaults_filled() {
        let spec = InputSpec {
            fields: BTreeMap::from([
                (
                    "user_id".to_string(),
                    InputField {
                        required: true,
                        default: None,
                    },
                ),
                (
                    "plan".to_string(),
                    InputField {
                        required: false,
                        default: Some(json!("free")),
                    },
                ),
            ]),
        };
        assert_eq!(
            InputSpec::check(Some(&spec), json!({"user_id": 7})).unwrap(),
            json!({"user_id": 7, "plan": "free"})
        );
        let e = InputSpec::check(Some(&spec), json!({"plan": "pro"})).unwrap_err();
        assert!(e.contains("missing required input field `user_id`"), "{e}");
        let e = InputSpec::check(Some(&spec), json!({"user_id": 1, "pln": 2})).unwrap_err();
        assert!(e.contains("unknown input field `pln`"), "{e}");
        assert!(InputSpec::check(None, json!({"anything": [1]})).is_ok());
        assert!(InputSpec::check(None, json!([1])).is_err());
    }

    #[test]
    fn a_workflow_survives_being_pinned() {
        let wf = Workflow {
            parallel: Some(2),
            steps: vec![
                StepDef {
                    name: "a".into(),
                    kind: StepKind::Sleep(SleepStep::For(Duration::from_millis(1500))),
                    needs: vec![],
                    condition: None,
                    allow_failure: false,
                    retry: RetryPolicy::default(),
                    timeout: None,
                },
                StepDef {
                    name: "b".into(),
                    kind: StepKind::Http(HttpStep {
                        method: "POST".into(),
                        url: "http://127.0.0.1/{{ input.x }}".into(),
                        headers: BTreeMap::new(),
                        body: HttpBody::Json(json!({"n": "{{ steps.a.state }}"})),
                        expect: vec![201],
                    }),
                    needs: vec![0],
                    condition: Some("input.x > 1".into()),
                    allow_failure: true,
                    retry: RetryPolicy {
                        attempts: 3,
                        ..RetryPolicy::default()
                    },
                    timeout: Some(Duration::from_secs(5)),
                },
            ],
        };
        let text = serde_json::to_string(&wf).unwrap();
        assert_eq!(serde_json::from_str::<Workflow>(&text).unwrap(), wf);
        assert_eq!(wf.downstream(0), vec![0, 1]);
        assert_eq!(wf.downstream(1), vec![1]);
    }
}
