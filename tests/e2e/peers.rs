//! Real peers for alert tests, on 127.0.0.1 only: an HTTP server (wiremock) receiving Slack and
//! Discord webhooks, and an SMTP server (the `mailin` protocol engine behind a TCP listener).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailin::{AuthMechanism, Handler, Response, SessionBuilder, response};
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// An HTTP server and the runtime that keeps it serving while the test runs synchronously.
pub struct Http {
    pub rt: tokio::runtime::Runtime,
    pub server: MockServer,
}

impl Http {
    pub fn start() -> Http {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(MockServer::start());
        assert!(server.address().ip().is_loopback());
        Http { rt, server }
    }

    /// The URL of `p` on this server.
    pub fn url(&self, p: &str) -> String {
        format!("{}{p}", self.server.uri())
    }

    /// Answers POSTs to `p` with `status`, at most `times` times (all if `None`), with
    /// `priority` (lower first).
    pub fn respond(&self, p: &str, template: ResponseTemplate, times: Option<u64>, priority: u8) {
        let mut m = Mock::given(method("POST"))
            .and(path(p))
            .respond_with(template)
            .with_priority(priority);
        if let Some(n) = times {
            m = m.up_to_n_times(n);
        }
        self.rt.block_on(m.mount(&self.server));
    }

    pub fn ok(&self, p: &str) {
        self.respond(p, ResponseTemplate::new(200), None, 5);
    }

    /// JSON bodies received on `p`.
    pub fn bodies(&self, p: &str) -> Vec<Value> {
        let reqs = self
            .rt
            .block_on(self.server.received_requests())
            .unwrap_or_default();
        reqs.iter()
            .filter(|r| r.url.path() == p)
            .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
            .collect()
    }
}

/// One e-mail as the SMTP server received it.
#[derive(Debug, Clone, Default)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
    pub auth: Option<(String, String)>,
}

impl Mail {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let mut lines = head.split("\r\n").peekable();
        while let Some(line) = lines.next() {
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case(name)
            {
                let mut value = v.trim().to_string();
                while lines.peek().is_some_and(|l| l.starts_with([' ', '\t'])) {
                    value.push(' ');
                    value.push_str(lines.next().unwrap_or("").trim());
                }
                return Some(value);
            }
        }
        None
    }

    pub fn body(&self) -> String {
        self.data
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.replace("\r\n", "\n"))
            .unwrap_or_default()
    }
}

#[derive(Clone)]
struct Collector {
    inbox: Arc<Mutex<Vec<Mail>>>,
    current: Mail,
    password: Option<String>,
}

impl Handler for Collector {
    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.current.from = from.to_string();
        self.current.to = to.to_vec();
        self.current.data.clear();
        response::OK
    }
    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.data.push_str(&String::from_utf8_lossy(buf));
        Ok(())
    }
    fn data_end(&mut self) -> Response {
        self.inbox.lock().unwrap().push(self.current.clone());
        response::OK
    }
    fn auth_plain(&mut self, _authz: &str, user: &str, password: &str) -> Response {
        if self.password.as_deref() == Some(password) {
            self.current.auth = Some((user.to_string(), password.to_string()));
            response::AUTH_OK
        } else {
            response::INVALID_CREDENTIALS
        }
    }
}

/// An SMTP server on 127.0.0.1; accepts AUTH PLAIN with `password` when given.
pub struct Smtp {
    pub port: u16,
    inbox: Arc<Mutex<Vec<Mail>>>,
}

impl Smtp {
    pub fn start(password: Option<&str>) -> Smtp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let mut builder = SessionBuilder::new("test-smtp.local");
        if password.is_some() {
            builder
                .enable_auth(AuthMechanism::Plain)
                .insecure_enable_plaintext_auth();
        }
        let handler = Collector {
            inbox: inbox.clone(),
            current: Mail::default(),
            password: password.map(String::from),
        };
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let builder = builder.clone();
                let handler = handler.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                    let mut writer = stream.try_clone().unwrap();
                    let remote: IpAddr = stream
                        .peer_addr()
                        .map(|a| a.ip())
                        .unwrap_or([127, 0, 0, 1].into());
                    let mut session = builder.build(remote, handler);
                    let _ = session.greeting().write_to(&mut writer);
                    let mut reader = BufReader::new(stream);
                    let mut line = Vec::new();
                    loop {
                        line.clear();
                        match reader.read_until(b'\n', &mut line) {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                        let res = session.process(&line);
                        match res.action {
                            mailin::Action::Reply | mailin::Action::Close => {
                                let _ = res.write_to(&mut writer);
                                let _ = writer.flush();
                                if matches!(res.action, mailin::Action::Close) {
                                    break;
                                }
                            }
                            _ => {}
                        }
                    }
                });
            }
        });
        Smtp { port, inbox }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.inbox.lock().unwrap().clone()
    }
}
