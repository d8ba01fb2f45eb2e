//! What an alert says, and how each channel wants it said. Pure.

use serde_json::{Value, json};

use super::Event;
use crate::units::format_duration;

/// An alert rendered once, then shaped for each channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// `[worker] EVENT JOB: headline` — the e-mail subject.
    pub subject: String,
    /// One line saying what happened.
    pub headline: String,
    /// Labelled facts: event, job, run, attempt, exit code or reason, duration, host, time…
    pub fields: Vec<(&'static str, String)>,
    /// The last lines of output, if any.
    pub output: Option<String>,
    /// Embed colour (Discord), by severity.
    pub color: u32,
    /// A workflow `notify` step's own message: sent as it is, instead of the alert layout.
    pub text: Option<String>,
}

/// Renders `e` as delivered from `host`.
pub fn render(e: &Event, host: &str) -> Message {
    let job = e.job.clone().unwrap_or_default();
    let run = e.run_id.map(|r| format!("run {r}")).unwrap_or_default();
    let attempt = match (e.attempt, e.max_attempts) {
        (Some(a), Some(m)) => format!("attempt {a}/{m}"),
        _ => String::new(),
    };
    let reason = e.reason.clone().unwrap_or_default();
    let headline = match e.event.as_str() {
        "attempt_failed" => format!("{job} {run} {attempt} failed: {reason}"),
        "dead" => format!("{job} {run} is dead: {reason}"),
        "timeout" => format!("{job} {run} {attempt} {reason}"),
        "missed" => format!(
            "{job}: a fire of schedule {} was not run: {reason}",
            e.schedule.clone().unwrap_or_default()
        ),
        "late" => format!(
            "{job}: schedule {} {reason}",
            e.schedule.clone().unwrap_or_default()
        ),
        "recovered" => format!("{job} {run} succeeded again after a dead run"),
        "config_error" => format!(
            "configuration reload rejected: {}",
            reason.lines().next().unwrap_or_default()
        ),
        "summary" => reason.clone(),
        "step_failed" => format!(
            "{job} {run}: step {} failed: {reason}",
            e.step.clone().unwrap_or_default()
        ),
        "notify" => e
            .text
            .as_deref()
            .and_then(|t| t.lines().find(|l| !l.trim().is_empty()))
            .unwrap_or_default()
            .to_string(),
        "test" => format!("test alert from worker on {host}"),
        other => format!("{other} {job} {run}"),
    };
    let headline = headline.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut fields: Vec<(&'static str, String)> = vec![("Event", e.event.clone())];
    if let Some(j) = &e.job {
        fields.push(("Job", j.clone()));
    }
    if let Some(r) = e.run_id {
        fields.push(("Run", r.to_string()));
    }
    if let Some(s) = &e.step {
        fields.push(("Step", s.clone()));
    }
    if !attempt.is_empty() {
        fields.push((
            "Attempt",
            attempt.trim_start_matches("attempt ").to_string(),
        ));
    }
    match (e.exit_code, e.signal) {
        (Some(c), _) => fields.push(("Exit code", c.to_string())),
        (None, Some(s)) => {
            fields.push(("Signal", format!("{s} ({})", crate::exec::signal_name(s))))
        }
        _ => {}
    }
    if !reason.is_empty() && e.event != "summary" {
        fields.push(("Reason", reason.clone()));
    }
    if let Some(d) = e.duration_ms {
        fields.push((
            "Duration",
            format_duration(std::time::Duration::from_millis(d.max(0) as u64)),
        ));
    }
    if let Some(s) = &e.schedule {
        fields.push(("Schedule", s.clone()));
    }
    if let Some(f) = e.fire_at {
        fields.push(("Fire time", f.to_rfc3339()));
    }
    fields.push(("Host", host.to_string()));
    fields.push((
        "Time",
        e.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    ));
    let color = match e.event.as_str() {
        "dead" | "timeout" | "config_error" => 0xD0_30_30,
        "attempt_failed" => 0xE0_80_20,
        "missed" | "late" => 0xE0_C0_20,
        "recovered" => 0x30_A0_50,
        _ => 0x60_70_80,
    };
    let subject = match (&e.subject, job.is_empty()) {
        (Some(s), _) => s.clone(),
        (None, true) => format!("[worker] {}: {headline}", e.event),
        (None, false) => format!("[worker] {} {job}: {headline}", e.event),
    };
    Message {
        subject,
        headline,
        fields,
        output: e.output.clone().filter(|o| !o.trim().is_empty()),
        color,
        text: e.text.clone().filter(|_| e.event == "notify"),
    }
}

/// Keeps the *end* of `s` within `max` bytes (the last lines of output are the useful ones).
fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max + 1;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

/// A Slack incoming-webhook payload: `text` (notifications, fallbacks) and `blocks`.
pub fn slack(m: &Message) -> Value {
    if let Some(text) = &m.text {
        return json!({"text": tail(text, 39_000)});
    }
    let facts: Vec<Value> = m
        .fields
        .iter()
        .take(10)
        .map(|(k, v)| json!({"type": "mrkdwn", "text": format!("*{k}*\n{}", tail(v, 1900))}))
        .collect();
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": tail(&m.headline, 150), "emoji": false}}),
        json!({"type": "section", "fields": facts}),
    ];
    if let Some(out) = &m.output {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Last output*\n```{}```", tail(out, 2800))}}));
    }
    json!({"text": tail(&m.subject, 3000), "blocks": blocks})
}

/// A Discord webhook payload: one embed.
pub fn discord(m: &Message) -> Value {
    if let Some(text) = &m.text {
        return json!({"username": "worker", "content": tail(text, 2000)});
    }
    let fields: Vec<Value> = m
        .fields
        .iter()
        .map(|(k, v)| json!({"name": k, "value": tail(v, 1000), "inline": v.len() < 40}))
        .collect();
    let description = match &m.output {
        Some(out) => format!("**Last output**\n```\n{}\n```", tail(out, 3900)),
        None => String::new(),
    };
    json!({
        "username": "worker",
        "embeds": [{
            "title": tail(&m.headline, 250),
            "description": description,
            "color": m.color,
            "fields": fields,
        }],
    })
}

/// A plain-text e-mail body.
pub fn email_body(m: &Message) -> String {
    if let Some(text) = &m.text {
        return text.clone();
    }
    let mut body = format!("{}\n\n", m.headline);
    let width = m.fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in &m.fields {
        body.push_str(&format!("{k:<width$}  {v}\n"));
    }
    if let Some(out) = &m.output {
        body.push_str("\nLast output:\n");
        for line in out.lines() {
            body.push_str("    ");
            body.push_str(line);
            body.push('\n');
        }
    }
    body.push_str("\n-- \nworker\n");
    body
}
