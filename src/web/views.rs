//! What the templates show, made from the JSON objects of [`crate::objects`] — the very objects
//! the API and `--json` give — so a page never says something the API would not. Only
//! presentation happens here: durations in words, times kept as RFC 3339 for `<time>`.

use serde_json::Value;

/// A string field (`None` for null or absent).
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn int(v: &Value) -> Option<i64> {
    v.as_i64()
}

/// `1.2 s`, `3 m 04 s`, `2 h 05 m`, `3 d 4 h`: how long something took, for people.
pub fn duration_ms(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        return format!("{ms} ms");
    }
    if ms < 60_000 {
        return format!("{:.1} s", ms as f64 / 1000.0);
    }
    let s = ms / 1000;
    if s < 3600 {
        return format!("{} m {:02} s", s / 60, s % 60);
    }
    if s < 86_400 {
        return format!("{} h {:02} m", s / 3600, (s % 3600) / 60);
    }
    format!("{} d {} h", s / 86_400, (s % 86_400) / 3600)
}

/// A time as the page prints it before the script turns it into the viewer's zone: UTC,
/// to the second (`2026-03-08 08:00:00 UTC`); a time with its own offset keeps it.
pub fn human_time(rfc3339: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) if t.offset().local_minus_utc() == 0 => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        Ok(t) => t.format("%Y-%m-%d %H:%M:%S %:z").to_string(),
        Err(_) => rfc3339.to_string(),
    }
}

/// A moment on the page: `<time datetime=…>` holds `iso`.
#[derive(Debug, Clone, PartialEq)]
pub struct When {
    pub iso: String,
    pub human: String,
}

impl When {
    pub fn of(v: &Value) -> Option<When> {
        v.as_str().map(|s| When {
            iso: s.to_string(),
            human: human_time(s),
        })
    }
}

/// A run, as its row and its page show it.
#[derive(Debug, Clone)]
pub struct RunView {
    pub id: i64,
    pub job: String,
    pub state: String,
    pub priority: String,
    pub trigger: String,
    pub attempt: i64,
    pub max_attempts: i64,
    pub key: Option<String>,
    pub created_at: Option<When>,
    pub due_at: Option<When>,
    pub started_at: Option<When>,
    pub finished_at: Option<When>,
    pub duration: Option<String>,
    pub exit_code: Option<i64>,
    pub signal: Option<i64>,
    pub error: Option<String>,
    pub schedule: Option<String>,
    pub scheduled_at: Option<When>,
    pub env: Vec<String>,
    pub depends_on: Vec<i64>,
    pub retry_of: Option<i64>,
    pub retried_by: Option<i64>,
    /// The input, pretty-printed.
    pub input: Option<String>,
    pub has_steps: bool,
}

impl RunView {
    /// From `objects::run_json`.
    pub fn of(o: &Value) -> RunView {
        RunView {
            id: int(&o["id"]).unwrap_or(0),
            job: text(&o["job"]).unwrap_or_default(),
            state: text(&o["state"]).unwrap_or_default(),
            priority: text(&o["priority"]).unwrap_or_default(),
            trigger: text(&o["trigger"]).unwrap_or_default(),
            attempt: int(&o["attempt"]).unwrap_or(0),
            max_attempts: int(&o["max_attempts"]).unwrap_or(0),
            key: text(&o["key"]),
            created_at: When::of(&o["created_at"]),
            due_at: When::of(&o["due_at"]),
            started_at: When::of(&o["started_at"]),
            finished_at: When::of(&o["finished_at"]),
            duration: int(&o["duration_ms"]).map(duration_ms),
            exit_code: int(&o["exit_code"]),
            signal: int(&o["signal"]),
            error: text(&o["error"]),
            schedule: text(&o["schedule"]),
            scheduled_at: When::of(&o["scheduled_at"]),
            env: o["env"]
                .as_array()
                .map(|a| a.iter().filter_map(text).collect())
                .unwrap_or_default(),
            depends_on: o["depends_on"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_default(),
            retry_of: int(&o["retry_of"]),
            retried_by: int(&o["retried_by"]),
            input: match &o["input"] {
                Value::Null => None,
                v => serde_json::to_string_pretty(v).ok(),
            },
            has_steps: o["steps"].is_array(),
        }
    }

    /// Not finished for good: it may still be cancelled or signalled.
    pub fn unfinished(&self) -> bool {
        !matches!(self.state.as_str(), "succeeded" | "dead" | "cancelled")
    }

    /// The time shown in a list: when it finished, started, or was created.
    pub fn last_time(&self) -> Option<&When> {
        self.finished_at
            .as_ref()
            .or(self.started_at.as_ref())
            .or(self.created_at.as_ref())
    }
}

/// An attempt of a run (`objects::attempt_json`).
#[derive(Debug, Clone)]
pub struct AttemptView {
    pub number: i64,
    pub started_at: Option<When>,
    pub finished_at: Option<When>,
    pub duration: Option<String>,
    pub outcome: Option<String>,
    pub exit_code: Option<i64>,
    pub signal: Option<i64>,
    pub error: Option<String>,
    pub output_bytes: Option<i64>,
}

impl AttemptView {
    pub fn of(o: &Value) -> AttemptView {
        AttemptView {
            number: int(&o["attempt"]).unwrap_or(0),
            started_at: When::of(&o["started_at"]),
            finished_at: When::of(&o["finished_at"]),
            duration: int(&o["duration_ms"]).map(duration_ms),
            outcome: text(&o["outcome"]),
            exit_code: int(&o["exit_code"]),
            signal: int(&o["signal"]),
            error: text(&o["error"]),
            output_bytes: int(&o["output_bytes"]),
        }
    }

    /// The outcome as a state for its badge (`running` while it has none).
    pub fn badge(&self) -> String {
        self.outcome.clone().unwrap_or_else(|| "running".into())
    }
}

/// A step of a workflow run (`objects::step_json`).
#[derive(Debug, Clone)]
pub struct StepView {
    pub name: String,
    pub kind: String,
    pub state: String,
    pub attempts: i64,
    pub started_at: Option<When>,
    pub duration: Option<String>,
    pub error: Option<String>,
    pub waiting_for: Option<String>,
    pub wake_at: Option<When>,
    pub reused_from: Option<i64>,
    /// Its outputs, pretty-printed.
    pub outputs: Option<String>,
    /// The names of the steps it needs.
    pub needs: Vec<String>,
}

impl StepView {
    pub fn of(o: &Value, needs: Vec<String>) -> StepView {
        StepView {
            name: text(&o["name"]).unwrap_or_default(),
            kind: text(&o["kind"]).unwrap_or_default(),
            state: text(&o["state"]).unwrap_or_default(),
            attempts: int(&o["attempts"]).unwrap_or(0),
            started_at: When::of(&o["started_at"]),
            duration: int(&o["duration_ms"]).map(duration_ms),
            error: text(&o["error"]),
            waiting_for: text(&o["waiting_for"]),
            wake_at: When::of(&o["wake_at"]),
            reused_from: int(&o["reused_from"]),
            outputs: match &o["outputs"] {
                Value::Null => None,
                Value::Object(m) if m.is_empty() => None,
                v => serde_json::to_string_pretty(v).ok(),
            },
            needs,
        }
    }
}

/// A job (`objects::jobs`).
#[derive(Debug, Clone)]
pub struct JobView {
    pub name: String,
    pub description: Option<String>,
    pub priority: String,
    pub depends_on: Vec<String>,
    pub schedules: Vec<String>,
    pub steps: usize,
    pub last_state: Option<String>,
    pub last_at: Option<When>,
    pub next_fire: Option<When>,
    /// `input:` fields: (name, required, default as JSON).
    pub input: Vec<(String, bool, Option<String>)>,
    /// A JSON object to start from when typing an input: the defaults, and `null` for the
    /// required fields.
    pub input_skeleton: String,
}

impl JobView {
    pub fn of(o: &Value) -> JobView {
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().filter_map(text).collect())
                .unwrap_or_default()
        };
        let mut input = Vec::new();
        let mut skeleton = serde_json::Map::new();
        if let Some(fields) = o["input"].as_object() {
            for (k, f) in fields {
                let required = f["required"].as_bool().unwrap_or(false);
                let default = (!f["default"].is_null()).then(|| f["default"].to_string());
                skeleton.insert(k.clone(), f["default"].clone());
                input.push((k.clone(), required, default));
            }
        }
        JobView {
            name: text(&o["name"]).unwrap_or_default(),
            description: text(&o["description"]),
            priority: text(&o["priority"]).unwrap_or_default(),
            depends_on: strings(&o["depends_on"]),
            schedules: strings(&o["schedules"]),
            steps: o["steps"].as_array().map_or(0, Vec::len),
            last_state: text(&o["last_run"]["state"]),
            last_at: When::of(&o["last_run"]["finished_at"]),
            next_fire: When::of(&o["next_fire"]),
            input,
            input_skeleton: if skeleton.is_empty() {
                String::new()
            } else {
                serde_json::to_string_pretty(&Value::Object(skeleton)).unwrap_or_default()
            },
        }
    }
}

/// A schedule (`objects::schedules`).
#[derive(Debug, Clone)]
pub struct ScheduleView {
    pub name: String,
    pub job: String,
    pub cron: String,
    pub timezone: String,
    pub catch_up: String,
    pub overlap: String,
    pub enabled: bool,
    pub paused: bool,
    pub paused_at: Option<When>,
    pub deadline: Option<String>,
    pub last_fire: Option<When>,
    pub last_outcome: Option<String>,
    pub last_run: Option<i64>,
    pub next: Vec<When>,
}

impl ScheduleView {
    pub fn of(o: &Value) -> ScheduleView {
        ScheduleView {
            name: text(&o["name"]).unwrap_or_default(),
            job: text(&o["job"]).unwrap_or_default(),
            cron: text(&o["cron"]).unwrap_or_default(),
            timezone: text(&o["timezone"]).unwrap_or_default(),
            catch_up: text(&o["catch_up"]).unwrap_or_default(),
            overlap: text(&o["overlap"]).unwrap_or_default(),
            enabled: o["enabled"].as_bool().unwrap_or(false),
            paused: o["paused"].as_bool().unwrap_or(false),
            paused_at: When::of(&o["paused_at"]),
            deadline: text(&o["deadline"]),
            last_fire: When::of(&o["last_fire"]),
            last_outcome: text(&o["last_fire_outcome"]),
            last_run: int(&o["last_fire_run"]),
            next: o["next"]
                .as_array()
                .map(|a| a.iter().filter_map(When::of).collect())
                .unwrap_or_default(),
        }
    }

    /// `paused`, `disabled` or `active`: the word of its status badge.
    pub fn status(&self) -> &'static str {
        if !self.enabled {
            "disabled"
        } else if self.paused {
            "paused"
        } else {
            "active"
        }
    }
}

/// An alert (`objects::alert`).
#[derive(Debug, Clone)]
pub struct AlertView {
    pub id: i64,
    pub time: Option<When>,
    pub rule: String,
    pub channel: String,
    pub job: Option<String>,
    pub event: String,
    pub run_id: Option<i64>,
    pub status: String,
    pub attempts: i64,
    pub error: Option<String>,
    pub sent_at: Option<When>,
    pub next_attempt_at: Option<When>,
}

impl AlertView {
    pub fn of(o: &Value) -> AlertView {
        AlertView {
            id: int(&o["id"]).unwrap_or(0),
            time: When::of(&o["time"]),
            rule: text(&o["rule"]).unwrap_or_default(),
            channel: text(&o["channel"]).unwrap_or_default(),
            job: text(&o["job"]),
            event: text(&o["event"]).unwrap_or_default(),
            run_id: int(&o["run_id"]),
            status: text(&o["status"]).unwrap_or_default(),
            attempts: int(&o["attempts"]).unwrap_or(0),
            error: text(&o["error"]),
            sent_at: When::of(&o["sent_at"]),
            next_attempt_at: When::of(&o["next_attempt_at"]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_read_like_a_person_wrote_them() {
        assert_eq!(duration_ms(-5), "0 ms");
        assert_eq!(duration_ms(250), "250 ms");
        assert_eq!(duration_ms(1_250), "1.2 s");
        assert_eq!(duration_ms(184_000), "3 m 04 s");
        assert_eq!(duration_ms(7_500_000), "2 h 05 m");
        assert_eq!(duration_ms(3 * 86_400_000 + 4 * 3_600_000), "3 d 4 h");
    }

    #[test]
    fn times_keep_their_offset_until_the_browser_converts_them() {
        assert_eq!(
            human_time("2026-03-08T08:00:00.000Z"),
            "2026-03-08 08:00:00 UTC"
        );
        assert_eq!(
            human_time("2026-03-08T03:00:00-04:00"),
            "2026-03-08 03:00:00 -04:00"
        );
        assert_eq!(human_time("not a time"), "not a time");
    }

    #[test]
    fn a_job_without_input_has_no_skeleton_and_one_with_input_has_its_defaults() {
        let plain = JobView::of(&json!({"name": "a", "input": null}));
        assert!(plain.input.is_empty() && plain.input_skeleton.is_empty());
        let j = JobView::of(&json!({"name": "onboard", "input": {
            "user_id": {"required": true, "default": null},
            "plan": {"required": false, "default": "free"}}}));
        let sk: Value = serde_json::from_str(&j.input_skeleton).unwrap();
        assert_eq!(sk, json!({"user_id": null, "plan": "free"}));
        assert!(j.input.iter().any(|(k, req, _)| k == "user_id" && *req));
    }

    #[test]
    fn a_schedule_says_paused_disabled_or_active() {
        let s = |enabled, paused| {
            ScheduleView::of(&json!({"enabled": enabled, "paused": paused})).status()
        };
        assert_eq!(s(true, false), "active");
        assert_eq!(s(true, true), "paused");
        assert_eq!(s(false, true), "disabled");
    }
}
