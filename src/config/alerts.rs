//! `alerts.yaml`: channels (Slack, Discord, e-mail), rules over events, delivery policy.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::Duration;

use super::secrets::Secrets;
use super::yaml::{Ctx, Node, Value, closest};
use crate::model::EventKind;

/// How outbox deliveries are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Tries per alert before it ends `failed`.
    pub attempts: u32,
    /// First retry delay (doubling after each failure, up to `max`).
    pub initial: Duration,
    pub max: Duration,
    /// Limit on one delivery attempt (connect, send, response).
    pub timeout: Duration,
}

pub const DEFAULT_DELIVERY: Delivery = Delivery {
    attempts: 5,
    initial: Duration::from_secs(5),
    max: Duration::from_secs(600),
    timeout: Duration::from_secs(10),
};

/// How an SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// `smtps://`: TLS from the first byte.
    Wrapper,
    /// `smtp://`: STARTTLS when the server offers it, plain otherwise.
    Opportunistic,
    /// `smtp://…?tls=required`: STARTTLS or fail.
    Required,
}

/// Where e-mail goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpTarget {
    pub tls: SmtpTls,
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelKind {
    Slack {
        webhook_url: url::Url,
    },
    Discord {
        webhook_url: url::Url,
    },
    Email {
        smtp: SmtpTarget,
        from: String,
        to: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
}

impl Channel {
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            ChannelKind::Slack { .. } => "slack",
            ChannelKind::Discord { .. } => "discord",
            ChannelKind::Email { .. } => "email",
        }
    }

    /// Where it delivers, with secrets masked: a webhook's path (its token) and an SMTP password.
    pub fn target_masked(&self) -> String {
        match &self.kind {
            ChannelKind::Slack { webhook_url } | ChannelKind::Discord { webhook_url } => {
                format!(
                    "{}://{}/***",
                    webhook_url.scheme(),
                    webhook_url.host_str().unwrap_or("")
                )
            }
            ChannelKind::Email { smtp, from, to } => {
                let scheme = if smtp.tls == SmtpTls::Wrapper {
                    "smtps"
                } else {
                    "smtp"
                };
                let auth = match (&smtp.user, &smtp.password) {
                    (Some(u), Some(_)) => format!("{u}:***@"),
                    (Some(u), None) => format!("{u}@"),
                    _ => String::new(),
                };
                format!(
                    "{scheme}://{auth}{}:{} from {from} to {}",
                    smtp.host,
                    smtp.port,
                    to.join(", ")
                )
            }
        }
    }
}

/// A rule: which events, for which jobs, go to which channels, how often.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub events: Vec<EventKind>,
    /// Glob patterns over job names, as written and compiled.
    pub jobs: Vec<(String, glob::Pattern)>,
    pub channels: Vec<String>,
    /// Per (rule, job): at most one message per window; zero is no throttling.
    pub throttle: Duration,
}

impl Rule {
    /// Whether an event of `kind` about `job` (`None`: not about a job, e.g. `config_error`)
    /// matches. Events without a job match only rules for every job (`*`).
    pub fn matches(&self, kind: EventKind, job: Option<&str>) -> bool {
        if !self.events.contains(&kind) {
            return false;
        }
        match job {
            Some(j) => self.jobs.iter().any(|(_, p)| p.matches(j)),
            None => self.jobs.iter().any(|(raw, _)| raw == "*"),
        }
    }
}

/// The alerts configuration.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    pub channels: BTreeMap<String, Channel>,
    pub rules: Vec<Rule>,
    pub delivery: Delivery,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            channels: BTreeMap::new(),
            rules: Vec::new(),
            delivery: DEFAULT_DELIVERY,
        }
    }
}

const TOP_FIELDS: &[&str] = &["channels", "rules", "delivery"];
const RULE_FIELDS: &[&str] = &["name", "events", "jobs", "channels", "throttle"];
const DELIVERY_FIELDS: &[&str] = &["attempts", "initial", "max", "timeout"];

/// Reads `alerts.yaml`. `jobs` are the job names, to catch a literal job name that does not exist.
pub fn parse_alerts(
    ctx: &mut Ctx<'_>,
    doc: &Node,
    jobs: &BTreeSet<String>,
    secrets: &mut Secrets,
) -> AlertsConfig {
    let mut out = AlertsConfig::default();
    let Some(mut top) = ctx.map(doc, "alerts.yaml") else {
        return out;
    };
    if let Some(n) = top.get("channels") {
        match &n.value {
            Value::Map(entries) => {
                for (k, v) in entries {
                    if !crate::model::is_valid_name(&k.name) {
                        ctx.error(k.pos, format!("`{}` is not a valid channel name: use lowercase letters, digits, `.`, `_`, `-`", k.name));
                        continue;
                    }
                    if let Some(kind) = parse_channel(ctx, v, secrets) {
                        out.channels.insert(
                            k.name.clone(),
                            Channel {
                                name: k.name.clone(),
                                kind,
                            },
                        );
                    }
                }
            }
            Value::Null => {}
            _ => {
                let kind = n.kind();
                ctx.error(
                    n.pos,
                    format!("channels must be a mapping of NAME: {{ type: … }}, found {kind}"),
                );
            }
        }
    }
    // Channel names as written, broken or not, so a rule naming a broken one is not also called unknown.
    let written = written_channels(doc);
    if let Some(n) = top.get("rules") {
        for item in ctx.list(n, "rules", false).unwrap_or_default() {
            if let Some(rule) = parse_rule(ctx, item, &written, jobs) {
                if out.rules.iter().any(|r| r.name == rule.name) {
                    ctx.error(
                        item.pos,
                        format!(
                            "a rule named `{}` already exists: names must be unique",
                            rule.name
                        ),
                    );
                } else {
                    out.rules.push(rule);
                }
            }
        }
    }
    if let Some(n) = top.get("delivery")
        && let Some(mut m) = ctx.map(n, "delivery")
    {
        let d = &mut out.delivery;
        if let Some(v) = m.get("attempts") {
            d.attempts = ctx
                .int(v, "delivery.attempts", 1, 100)
                .map(|a| a as u32)
                .unwrap_or(d.attempts);
        }
        for (key, slot) in [
            ("initial", &mut d.initial),
            ("max", &mut d.max),
            ("timeout", &mut d.timeout),
        ] {
            if let Some(v) = m.get(key) {
                match ctx.duration(v, &format!("delivery.{key}")) {
                    Some(x) if x.is_zero() => {
                        ctx.error(v.pos, format!("delivery.{key} must be longer than 0"))
                    }
                    Some(x) => *slot = x,
                    None => {}
                }
            }
        }
        m.finish(ctx, "delivery", DELIVERY_FIELDS);
    }
    top.finish(ctx, "alerts.yaml", TOP_FIELDS);
    out
}

/// The channel names of an `alerts.yaml` document as written, whether or not each channel is valid.
pub fn written_channels(doc: &Node) -> BTreeSet<String> {
    let Value::Map(top) = &doc.value else {
        return BTreeSet::new();
    };
    match top
        .iter()
        .find(|(k, _)| k.name == "channels")
        .map(|(_, n)| &n.value)
    {
        Some(Value::Map(entries)) => entries.iter().map(|(k, _)| k.name.clone()).collect(),
        _ => BTreeSet::new(),
    }
}

fn parse_channel(ctx: &mut Ctx<'_>, node: &Node, secrets: &mut Secrets) -> Option<ChannelKind> {
    let mut m = ctx.map(node, "a channel")?;
    let ty = match m.get("type") {
        Some(n) => ctx.choice(n, "type", &[("slack", 0), ("discord", 1), ("email", 2)]),
        None => {
            ctx.error(
                m.pos,
                "a channel needs `type: slack`, `type: discord` or `type: email`",
            );
            None
        }
    };
    let kind = match ty? {
        t @ (0 | 1) => {
            let url = match m.get("webhook_url") {
                Some(n) => webhook_url(ctx, n, secrets),
                None => {
                    ctx.error(m.pos, "a webhook channel needs `webhook_url:`");
                    None
                }
            };
            m.finish(ctx, "a webhook channel", &["type", "webhook_url"]);
            let webhook_url = url?;
            if t == 0 {
                ChannelKind::Slack { webhook_url }
            } else {
                ChannelKind::Discord { webhook_url }
            }
        }
        _ => {
            let smtp = match m.get("smtp_url") {
                Some(n) => smtp_url(ctx, n, secrets),
                None => {
                    ctx.error(m.pos, "an email channel needs `smtp_url: smtps://user:password@host:465` (or smtp://…)");
                    None
                }
            };
            let from = match m.get("from") {
                Some(n) => ctx
                    .nonempty_string(n, "from")
                    .and_then(|f| address(ctx, n.pos, "from", f)),
                None => {
                    ctx.error(m.pos, "an email channel needs `from: worker@example.com`");
                    None
                }
            };
            let to = match m.get("to") {
                Some(n) => {
                    let list = ctx.string_list(n, "to", true);
                    match list {
                        Some(l) if l.is_empty() => {
                            ctx.error(n.pos, "to must name at least one address");
                            None
                        }
                        Some(l) => {
                            let mut ok = Vec::new();
                            let mut bad = false;
                            for (a, pos) in l {
                                match address(ctx, pos, "to", a) {
                                    Some(a) => ok.push(a),
                                    None => bad = true,
                                }
                            }
                            (!bad).then_some(ok)
                        }
                        None => None,
                    }
                }
                None => {
                    ctx.error(m.pos, "an email channel needs `to: [ops@example.com]`");
                    None
                }
            };
            m.finish(ctx, "an email channel", &["type", "smtp_url", "from", "to"]);
            ChannelKind::Email {
                smtp: smtp?,
                from: from?,
                to: to?,
            }
        }
    };
    Some(kind)
}

/// An e-mail address (`ops@example.com` or `Ops <ops@example.com>`).
fn address(ctx: &mut Ctx<'_>, pos: super::Pos, what: &str, a: String) -> Option<String> {
    match lettre::message::Mailbox::from_str(&a) {
        Ok(_) => Some(a),
        Err(_) => {
            ctx.error(pos, format!("{what}: `{a}` is not an e-mail address"));
            None
        }
    }
}

/// A webhook URL. Its value is never echoed in a message: the URL is the secret.
fn webhook_url(ctx: &mut Ctx<'_>, n: &Node, secrets: &mut Secrets) -> Option<url::Url> {
    let raw = ctx.nonempty_string(n, "webhook_url")?;
    secrets.add(raw.clone());
    let parsed = url::Url::parse(&raw)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    let Some(u) = parsed else {
        ctx.error(
            n.pos,
            "webhook_url is not an http(s) URL (the value is not shown: webhook URLs are secrets)",
        );
        return None;
    };
    // The token is the URL's tail (Slack: /services/T…/B…/TOKEN; Discord: /api/webhooks/ID/TOKEN):
    // mask the path, its last segment on its own (what a job or an endpoint is likeliest to
    // print), and any query string.
    let path = u.path().trim_matches('/');
    if path.len() >= 4 {
        secrets.add(path.to_string());
    }
    if let Some(last) = path.rsplit('/').next().filter(|l| l.len() >= 8) {
        secrets.add(last.to_string());
    }
    if let Some(q) = u.query().filter(|q| q.len() >= 8) {
        secrets.add(q.to_string());
    }
    Some(u)
}

/// `smtps://user:pass@host:port` or `smtp://…[?tls=required|opportunistic]`.
fn smtp_url(ctx: &mut Ctx<'_>, n: &Node, secrets: &mut Secrets) -> Option<SmtpTarget> {
    let raw = ctx.nonempty_string(n, "smtp_url")?;
    let Ok(u) = url::Url::parse(&raw) else {
        ctx.error(
            n.pos,
            "smtp_url is not a URL: write smtps://user:password@host:465 or smtp://host:587",
        );
        return None;
    };
    if let Some(p) = u.password() {
        secrets.add(p.to_string());
        if let Ok(decoded) = percent_decode(p) {
            secrets.add(decoded);
        }
    }
    let tls_param = u
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    let tls = match (u.scheme(), tls_param.as_deref()) {
        ("smtps", None) => SmtpTls::Wrapper,
        ("smtp", None | Some("opportunistic")) => SmtpTls::Opportunistic,
        ("smtp", Some("required")) => SmtpTls::Required,
        ("smtp" | "smtps", Some(other)) => {
            ctx.error(n.pos, format!("smtp_url: unknown tls=`{other}` (use tls=required or tls=opportunistic with smtp://)"));
            return None;
        }
        (s, _) => {
            ctx.error(
                n.pos,
                format!("smtp_url: scheme `{s}` is not smtp or smtps"),
            );
            return None;
        }
    };
    let Some(host) = u.host_str().filter(|h| !h.is_empty()) else {
        ctx.error(n.pos, "smtp_url has no host");
        return None;
    };
    let port = u
        .port()
        .unwrap_or(if tls == SmtpTls::Wrapper { 465 } else { 587 });
    let user = (!u.username().is_empty())
        .then(|| percent_decode(u.username()).unwrap_or_else(|_| u.username().to_string()));
    let password = u
        .password()
        .map(|p| percent_decode(p).unwrap_or_else(|_| p.to_string()));
    Some(SmtpTarget {
        tls,
        host: host.to_string(),
        port,
        user,
        password,
    })
}

fn percent_decode(s: &str) -> Result<String, std::str::Utf8Error> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
}

fn parse_rule(
    ctx: &mut Ctx<'_>,
    node: &Node,
    channels: &BTreeSet<String>,
    jobs: &BTreeSet<String>,
) -> Option<Rule> {
    let before = ctx.diags.len();
    let mut m = ctx.map(node, "a rule")?;
    let name = match m.get("name") {
        Some(n) => ctx.nonempty_string(n, "name"),
        None => {
            ctx.error(m.pos, "a rule needs `name:`");
            None
        }
    };
    let mut events = Vec::new();
    match m.get("events") {
        Some(n) => {
            for (e, pos) in ctx.string_list(n, "events", true).unwrap_or_default() {
                match EventKind::ALL.iter().find(|(s, _)| *s == e) {
                    Some((_, k)) if !events.contains(k) => events.push(*k),
                    Some(_) => {}
                    None => {
                        let names: Vec<&str> = EventKind::ALL.iter().map(|(s, _)| *s).collect();
                        ctx.error(
                            pos,
                            format!("unknown event `{e}` (events: {})", names.join(", ")),
                        );
                    }
                }
            }
            if events.is_empty() && ctx.diags.len() == before {
                ctx.error(n.pos, "events must name at least one event");
            }
        }
        None => ctx.error(m.pos, "a rule needs `events: [dead, …]`"),
    }
    let mut job_patterns = Vec::new();
    match m.get("jobs") {
        Some(n) => {
            let known: Vec<&str> = jobs.iter().map(String::as_str).collect();
            for (j, pos) in ctx.string_list(n, "jobs", true).unwrap_or_default() {
                match glob::Pattern::new(&j) {
                    Ok(p) => {
                        let literal = !j.contains(['*', '?', '[']);
                        if literal && !jobs.contains(&j) {
                            let hint = closest(&j, &known)
                                .map(|s| format!(" (did you mean `{s}`?)"))
                                .unwrap_or_default();
                            ctx.error(pos, format!("jobs: unknown job `{j}`{hint}"));
                        } else {
                            job_patterns.push((j, p));
                        }
                    }
                    Err(e) => ctx.error(
                        pos,
                        format!("jobs: `{j}` is not a valid glob pattern: {}", e.msg),
                    ),
                }
            }
        }
        None => job_patterns.push(("*".to_string(), glob::Pattern::new("*").ok()?)),
    }
    let mut chans = Vec::new();
    match m.get("channels") {
        Some(n) => {
            let known: Vec<&str> = channels.iter().map(String::as_str).collect();
            for (c, pos) in ctx.string_list(n, "channels", true).unwrap_or_default() {
                if channels.contains(&c) {
                    chans.push(c);
                } else {
                    let hint = closest(&c, &known)
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    ctx.error(pos, format!("unknown channel `{c}`{hint}"));
                }
            }
            if chans.is_empty() && ctx.diags.len() == before {
                ctx.error(n.pos, "channels must name at least one channel");
            }
        }
        None => ctx.error(m.pos, "a rule needs `channels: [NAME, …]`"),
    }
    let throttle = match m.get("throttle") {
        Some(n) => ctx.duration(n, "throttle").unwrap_or_default(),
        None => Duration::ZERO,
    };
    m.finish(ctx, "a rule", RULE_FIELDS);
    if ctx.diags.len() > before {
        return None;
    }
    Some(Rule {
        name: name?,
        events,
        jobs: job_patterns,
        channels: chans,
        throttle,
    })
}
