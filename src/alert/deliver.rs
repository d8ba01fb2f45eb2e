//! Delivering one alert through one channel: Slack and Discord webhooks over HTTPS (reqwest with
//! rustls), e-mail over SMTP (lettre with rustls). No OpenSSL anywhere.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::Event;
use super::message::{self, Message};
use crate::config::alerts::{SmtpTarget, SmtpTls};
use crate::config::{Channel, ChannelKind, Secrets};

/// Why a delivery did not go through.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Worth trying again, not before `after` when the endpoint said so (HTTP 429 Retry-After).
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Trying again will not help (the endpoint refused the message itself).
    Permanent(String),
}

impl Failure {
    pub fn error(&self) -> &str {
        match self {
            Failure::Retry { error, .. } | Failure::Permanent(error) => error,
        }
    }
}

/// Makes rustls use ring as the process's crypto provider (once; later calls are no-ops).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Sends alerts; one per process, shared by its deliveries.
pub struct Deliverer {
    /// Built on the first webhook delivery: it loads and parses the system's CA certificates,
    /// which a daemon with no webhook to call should not carry around.
    http: std::sync::OnceLock<Result<reqwest::Client, String>>,
    timeout: Duration,
    host: String,
}

impl Deliverer {
    pub fn new(timeout: Duration) -> Result<Deliverer, String> {
        let http = std::sync::OnceLock::new();
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown".into());
        Ok(Deliverer {
            http,
            timeout,
            host,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// One delivery attempt. Error texts are masked with `secrets`.
    pub async fn send(
        &self,
        channel: &Channel,
        event: &Event,
        secrets: &Secrets,
    ) -> Result<(), Failure> {
        let m = message::render(event, &self.host);
        let result = match &channel.kind {
            ChannelKind::Slack { webhook_url } => self.post(webhook_url, &message::slack(&m)).await,
            ChannelKind::Discord { webhook_url } => {
                self.post(webhook_url, &message::discord(&m)).await
            }
            ChannelKind::Email { smtp, from, to } => {
                // A `notify` step may name its own recipients.
                let to = event.to.as_deref().filter(|t| !t.is_empty()).unwrap_or(to);
                self.mail(smtp, from, to, &m).await
            }
        };
        result.map_err(|f| match f {
            Failure::Retry { error, after } => Failure::Retry {
                error: secrets.mask(&error),
                after,
            },
            Failure::Permanent(error) => Failure::Permanent(secrets.mask(&error)),
        })
    }

    fn http(&self) -> Result<&reqwest::Client, Failure> {
        let timeout = self.timeout;
        self.http
            .get_or_init(|| {
                install_crypto();
                reqwest::Client::builder()
                    .timeout(timeout)
                    .connect_timeout(timeout)
                    .user_agent(concat!("worker/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| format!("cannot create the HTTP client: {}", chain(&e)))
            })
            .as_ref()
            .map_err(|e| Failure::Permanent(e.clone()))
    }

    async fn post(&self, url: &url::Url, body: &serde_json::Value) -> Result<(), Failure> {
        let resp = self
            .http()?
            .post(url.clone())
            .json(body)
            .send()
            .await
            .map_err(|e| Failure::Retry {
                // The URL is the secret: never part of an error.
                error: chain(&e.without_url()),
                after: None,
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = resp.text().await.unwrap_or_default();
        let snippet: String = text.chars().take(200).collect();
        let error = format!(
            "HTTP {}{}",
            status.as_u16(),
            if snippet.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", snippet.trim())
            }
        );
        match status.as_u16() {
            429 => Err(Failure::Retry {
                error,
                after: retry_after,
            }),
            408 | 500..=599 => Err(Failure::Retry {
                error,
                after: retry_after,
            }),
            _ => Err(Failure::Permanent(error)),
        }
    }

    async fn mail(
        &self,
        smtp: &SmtpTarget,
        from: &str,
        to: &[String],
        m: &Message,
    ) -> Result<(), Failure> {
        let permanent = |e: String| Failure::Permanent(e);
        let mut builder = lettre::Message::builder()
            .from(from.parse().map_err(|e| permanent(format!("from: {e}")))?)
            .subject(m.subject.clone())
            .header(ContentType::TEXT_PLAIN);
        for t in to {
            builder = builder.to(t.parse().map_err(|e| permanent(format!("to: {e}")))?);
        }
        let mail = builder
            .body(message::email_body(m))
            .map_err(|e| permanent(format!("cannot build the e-mail: {e}")))?;
        let tls_params = || {
            TlsParameters::new(smtp.host.clone())
                .map_err(|e| Failure::Permanent(format!("TLS setup: {e}")))
        };
        let tls = match smtp.tls {
            SmtpTls::Wrapper => Tls::Wrapper(tls_params()?),
            SmtpTls::Opportunistic => Tls::Opportunistic(tls_params()?),
            SmtpTls::Required => Tls::Required(tls_params()?),
        };
        let mut transport =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.clone())
                .port(smtp.port)
                .tls(tls)
                .timeout(Some(self.timeout));
        if let Some(user) = &smtp.user {
            transport = transport.credentials(Credentials::new(
                user.clone(),
                smtp.password.clone().unwrap_or_default(),
            ));
        }
        match tokio::time::timeout(self.timeout, transport.build().send(mail)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.is_permanent() => {
                Err(Failure::Permanent(format!("SMTP: {}", chain(&e))))
            }
            Ok(Err(e)) => Err(Failure::Retry {
                error: format!("SMTP: {}", chain(&e)),
                after: None,
            }),
            Err(_) => Err(Failure::Retry {
                error: format!("SMTP: no answer within {:?}", self.timeout),
                after: None,
            }),
        }
    }
}

/// An error and its sources, `a: b: c`.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// `Retry-After`: seconds, or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs >= 0.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    (when.to_utc() - chrono::Utc::now()).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(" 1.5 "),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("soon"), None);
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        let d = parse_retry_after(&later).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120));
    }
}
