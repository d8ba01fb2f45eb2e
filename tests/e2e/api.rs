//! The HTTP API over real HTTP: authentication, every documented route served, status codes,
//! idempotent enqueue, followed logs, the event stream, schedules, limits.

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::{Value, json};

use crate::common::*;

/// A client of one daemon's API.
pub struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub token: String,
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
}

impl Http {
    /// The client of the daemon running on `e` (its address and token from `worker ui`).
    pub fn of(e: &Env) -> Http {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = e.ok(&["ui"]).trim().to_string();
        let (base, token) = url
            .split_once("/login?token=")
            .unwrap_or_else(|| panic!("worker ui printed {url}"));
        Http {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_string(),
            token: token.to_string(),
        }
    }

    pub fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut r = self.client.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", self.base),
        );
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b);
        }
        self.rt.block_on(async {
            let resp = r
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            Reply {
                status: resp.status().as_u16(),
                headers: resp.headers().clone(),
                text: resp.text().await.unwrap(),
            }
        })
    }

    pub fn get(&self, path: &str) -> Reply {
        self.send("GET", path, Some(&self.token), &[], None)
    }

    pub fn post(&self, path: &str, body: Value) -> Reply {
        self.send(
            "POST",
            path,
            Some(&self.token),
            &[],
            Some(body.to_string().into_bytes()),
        )
    }

    /// Reads a streamed response until it ends or `until` says it has seen enough; returns
    /// what arrived.
    pub fn stream(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        mut until: impl FnMut(&str) -> bool,
    ) -> String {
        let mut r = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        self.rt.block_on(async {
            let mut resp = r.send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 200, "{path}");
            let mut seen = String::new();
            let deadline = tokio::time::Instant::now() + PATIENCE;
            loop {
                let chunk = tokio::time::timeout_at(deadline, resp.chunk())
                    .await
                    .unwrap_or_else(|_| panic!("{path}: timed out; so far:\n{seen}"))
                    .unwrap();
                match chunk {
                    Some(c) => {
                        seen.push_str(&String::from_utf8_lossy(&c));
                        if until(&seen) {
                            return seen;
                        }
                    }
                    None => return seen,
                }
            }
        })
    }
}

/// A configuration with the HTTP server on a free loopback port.
pub fn http_env() -> Env {
    let e = Env::new();
    e.file("scheduler.yaml", "http:\n  listen: 127.0.0.1:0\n");
    e
}

/// `scheduler.yaml` with the HTTP server and a schedule `nightly` of `job` (03:00 UTC).
pub fn with_nightly(e: &Env, job: &str) {
    e.file(
        "scheduler.yaml",
        &format!(
            "http:\n  listen: 127.0.0.1:0\nschedules:\n  - job: {job}\n    name: nightly\n    cron: \"0 3 * * *\"\n"
        ),
    );
}

#[test]
fn every_route_needs_a_token_but_health_and_cookies_need_the_same_origin() {
    let e = http_env();
    e.job("hello", "run: echo hi\n");
    let _d = e.daemon();
    let h = Http::of(&e);
    // The generated token is private.
    let meta = std::fs::metadata(e.data.join("api-token")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    let health = h.send("GET", "/healthz", None, &[], None);
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), json!({"status": "ok"}));

    let doc = h.get("/api/v1/openapi.json").json();
    let paths = doc["paths"].as_object().unwrap();
    let mut probed = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{job}", "hello")
                .replace("{id}", "1")
                .replace("{name}", "nightly")
                .replace("{signal}", "go");
            let m = method.to_uppercase();
            for token in [None, Some("not-the-token-0123456789")] {
                let r = h.send(&m, &concrete, token, &[], None);
                if path == "/healthz" {
                    assert_eq!(r.status, 200);
                    continue;
                }
                assert_eq!(r.status, 401, "{m} {concrete} with {token:?}: {}", r.text);
                assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
                assert_eq!(r.json(), json!({"error": "unauthorized"}), "no detail");
            }
            probed += 1;
        }
    }
    assert!(probed >= 18, "only {probed} routes documented");

    // The login address gives a session cookie and sends the browser on without the token.
    let login = h.send("GET", &format!("/login?token={}", h.token), None, &[], None);
    assert_eq!(login.status, 303);
    assert_eq!(login.header("location").as_deref(), Some("/"));
    let cookie = login.header("set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let bad = h.send(
        "GET",
        "/login?token=wrong-token-0123456789",
        None,
        &[],
        None,
    );
    assert_eq!(bad.status, 401);
    assert!(bad.header("set-cookie").is_none());

    let host = h.base.trim_start_matches("http://").to_string();
    let with_cookie = |method: &str, path: &str, extra: &[(&str, &str)]| {
        let mut headers = vec![("cookie", pair.as_str())];
        headers.extend_from_slice(extra);
        h.send(method, path, None, &headers, None)
    };
    assert_eq!(with_cookie("GET", "/api/v1/jobs", &[]).status, 200);
    // A cross-site form or fetch carries the cookie but not our origin: refused.
    let id = e.add(&["hello", "--in", "1h"]);
    let cancel = format!("/api/v1/runs/{id}/cancel");
    for extra in [
        vec![("origin", "http://evil.example")],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site")],
        vec![],
    ] {
        let r = with_cookie("POST", &cancel, &extra);
        assert_eq!(r.status, 403, "{extra:?}: {}", r.text);
    }
    assert_eq!(e.state(id), "delayed", "nothing was cancelled");
    let origin = format!("http://{host}");
    let r = with_cookie("POST", &cancel, &[("origin", origin.as_str())]);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["state"], "cancelled");
    // Logging out ends the session for this browser.
    let out = with_cookie("POST", "/logout", &[]);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
}

#[test]
fn every_documented_route_is_served() {
    let e = http_env();
    e.job("hello", "run: echo hi\n");
    with_nightly(&e, "hello");
    let _d = e.daemon();
    let h = Http::of(&e);
    let doc = h.get("/api/v1/openapi.json").json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let id = e.add(&["hello"]);
    e.wait_state(id, &["succeeded"]);
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{job}", "hello")
                .replace("{id}", &id.to_string())
                .replace("{name}", "nightly")
                .replace("{signal}", "go");
            let m = method.to_uppercase();
            if path.ends_with("/events") {
                let got = h.stream(&concrete, &[], |_| true);
                assert!(got.is_empty() || got.starts_with(':') || got.contains("event"));
                continue;
            }
            let r = h.send(&m, &concrete, Some(&h.token), &[], None);
            // A route that exists answers in its own terms: not 404 "no such route", not 405.
            assert_ne!(r.status, 405, "{m} {concrete}");
            assert!(
                !r.text.contains("no such route"),
                "{m} {concrete} is documented but not served"
            );
            assert!(r.status < 500, "{m} {concrete}: {} {}", r.status, r.text);
        }
    }
    // And what is not documented is not served.
    let r = h.get("/api/v1/nothing");
    assert_eq!(r.status, 404);
}

#[test]
fn enqueue_is_idempotent_and_answers_with_the_cli_objects() {
    let e = http_env();
    e.job("hello", "run: echo hi\ninput:\n  who: { required: true }\n");
    let _d = e.daemon();
    let h = Http::of(&e);
    let r = h.post(
        "/api/v1/jobs/hello/runs",
        json!({"input": {"who": "ada"}, "priority": "high", "env": {"COLOR": "red"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let run = r.json();
    let id = run["id"].as_i64().unwrap();
    assert_eq!(
        r.header("location").as_deref(),
        Some(format!("/api/v1/runs/{id}").as_str())
    );
    assert_eq!(run["priority"], "high");
    assert_eq!(run["trigger"], "queue");
    assert_eq!(
        run["env"],
        json!(["COLOR"]),
        "names only: values may be secrets"
    );
    e.wait_state(id, &["succeeded"]);
    // The same object as the command line's, field for field.
    let api = h.get(&format!("/api/v1/runs/{id}")).json();
    let cli = e.run_obj(id);
    assert_eq!(api, cli);

    // Idempotency: by header or by body key, 201 once then 200 with the same run.
    let first = h.send(
        "POST",
        "/api/v1/jobs/hello/runs",
        Some(&h.token),
        &[("idempotency-key", "order-42")],
        Some(br#"{"input": {"who": "bob"}}"#.to_vec()),
    );
    assert_eq!(first.status, 201, "{}", first.text);
    let again = h.post(
        "/api/v1/jobs/hello/runs",
        json!({"key": "order-42", "input": {"who": "bob"}}),
    );
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json()["id"], first.json()["id"]);
    assert_eq!(first.json()["key"], "order-42");

    // Status codes.
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("/api/v1/jobs/nope/runs", b"{}".to_vec(), 404),
        ("/api/v1/jobs/hello/runs", b"{\"input\": {}}".to_vec(), 422),
        (
            "/api/v1/jobs/hello/runs",
            b"{\"priority\": \"urgent\"}".to_vec(),
            400,
        ),
        (
            "/api/v1/jobs/hello/runs",
            b"{\"in\": \"1.5h\"}".to_vec(),
            400,
        ),
        ("/api/v1/jobs/hello/runs", b"{\"colour\": 1}".to_vec(), 400),
        ("/api/v1/jobs/hello/runs", b"{not json".to_vec(), 400),
        (
            "/api/v1/jobs/hello/runs",
            b"{\"env\": {\"WORKER_X\": \"1\"}}".to_vec(),
            400,
        ),
        (
            "/api/v1/jobs/hello/runs",
            b"{\"after\": [999999]}".to_vec(),
            422,
        ),
    ];
    for (path, body, status) in cases {
        let r = h.send("POST", path, Some(&h.token), &[], Some(body.clone()));
        assert_eq!(
            r.status,
            status,
            "{path} {}: {}",
            String::from_utf8_lossy(&body),
            r.text
        );
        assert!(r.json()["error"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let differ = h.send(
        "POST",
        "/api/v1/jobs/hello/runs",
        Some(&h.token),
        &[("idempotency-key", "a")],
        Some(br#"{"key": "b"}"#.to_vec()),
    );
    assert_eq!(differ.status, 400);
    // Over 1 MiB: 413, as soon as the head declares it. Sent by hand, without the body: the
    // server answers and closes before reading one, so a client still writing a body there
    // may see the connection reset instead of the answer.
    let addr = h.base.trim_start_matches("http://").to_string();
    let mut sock = std::net::TcpStream::connect(&addr).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    use std::io::{Read, Write};
    write!(
        sock,
        "POST /api/v1/jobs/hello/runs HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        h.token,
        1024 * 1024 + 10
    )
    .unwrap();
    let mut head = [0u8; 12];
    sock.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 413", "{}", String::from_utf8_lossy(&head));
}

#[test]
fn runs_are_listed_newest_first_filtered_and_paged() {
    let e = http_env();
    e.job("a", "run: \"true\"\n");
    e.job("b", "run: \"true\"\n");
    let _d = e.daemon();
    let h = Http::of(&e);
    let ids: Vec<i64> = (0..5)
        .map(|i| e.add(&[if i % 2 == 0 { "a" } else { "b" }]))
        .collect();
    for id in &ids {
        e.wait_state(*id, &["succeeded"]);
    }
    let page = h.get("/api/v1/runs?limit=2");
    let got: Vec<i64> = page
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(got, vec![ids[4], ids[3]]);
    let link = page.header("link").unwrap();
    let next = link
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_string();
    let got: Vec<i64> = h
        .get(&next)
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(got, vec![ids[2], ids[1]]);
    let only_a: Vec<i64> = h
        .get("/api/v1/runs?job=a&state=succeeded,dead")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(only_a, vec![ids[4], ids[2], ids[0]]);
    assert_eq!(h.get("/api/v1/runs?state=sleeping").status, 400);
    assert_eq!(h.get("/api/v1/runs?limit=5000").status, 400);
    assert_eq!(h.get("/api/v1/runs?limit=x").status, 400);
    assert_eq!(h.get("/api/v1/runs/abc").status, 400);
    assert_eq!(h.get("/api/v1/runs/999999").status, 404);
    // Queue statistics, as the command's.
    assert_eq!(
        h.get("/api/v1/queue/stats").json(),
        e.json(&["queue:stats"])
    );
}

#[test]
fn cancel_retry_signal_and_the_dead_letter_queue() {
    let e = http_env();
    e.job("fail", "run: exit 3\nretry: { attempts: 1 }\n");
    e.job("slow", "run: sleep 30\n");
    e.job(
        "flow",
        "steps:\n  - name: wait\n    wait_for: { signal: go }\n  - name: after\n    run: echo done\n",
    );
    let h;
    let dead;
    {
        let _d = e.daemon();
        h = Http::of(&e);
        dead = h.post("/api/v1/jobs/fail/runs", json!({})).json()["id"]
            .as_i64()
            .unwrap();
        e.wait_state(dead, &["dead"]);
        // Running: 202, being stopped.
        let slow = h.post("/api/v1/jobs/slow/runs", json!({})).json()["id"]
            .as_i64()
            .unwrap();
        e.wait_state(slow, &["running"]);
        let r = h.post(&format!("/api/v1/runs/{slow}/cancel"), json!({}));
        assert_eq!(r.status, 202, "{}", r.text);
        e.wait_state(slow, &["cancelled"]);
        // Finished: 409.
        let r = h.post(&format!("/api/v1/runs/{slow}/cancel"), json!({}));
        assert_eq!(r.status, 409, "{}", r.text);
        assert_eq!(h.post("/api/v1/runs/999999/cancel", json!({})).status, 404);

        // Signals.
        let flow = h.post("/api/v1/jobs/flow/runs", json!({})).json()["id"]
            .as_i64()
            .unwrap();
        e.wait_state(flow, &["suspended"]);
        let r = h.post(
            &format!("/api/v1/runs/{flow}/signals/go"),
            json!({"data": {"ok": true}}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json()["waiting"], true);
        let done = e.wait_state(flow, &["succeeded"]);
        assert_eq!(done["steps"][0]["outputs"], json!({"data": {"ok": true}}));
        assert_eq!(
            h.post(&format!("/api/v1/runs/{flow}/signals/go"), json!({}))
                .status,
            409
        );
        assert_eq!(
            h.post(
                &format!("/api/v1/runs/{flow}/signals/bad%20name"),
                json!({})
            )
            .status,
            400
        );
        assert_eq!(
            h.post(&format!("/api/v1/runs/{dead}/signals/go"), json!({}))
                .status,
            409
        );
    }
    // A new daemon (on another free port) sees the same store.
    let _d = e.daemon();
    let h = Http::of(&e);
    let dlq = h.get("/api/v1/dlq");
    assert_eq!(dlq.header("x-total-count").as_deref(), Some("1"));
    assert_eq!(dlq.json()[0]["id"], dead);
    assert_eq!(dlq.json(), e.json(&["queue:dlq"]));
    // Retrying what is not dead: 409; the dead one: 201 with the new run.
    let not_dead = e.add(&["slow", "--in", "1h"]);
    assert_eq!(
        h.post(&format!("/api/v1/runs/{not_dead}/retry"), json!({}))
            .status,
        409
    );
    let r = h.post(&format!("/api/v1/runs/{dead}/retry"), json!({}));
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["trigger"], "retry");
    let retried = r.json()["id"].as_i64().unwrap();
    e.wait_state(retried, &["dead"]);
    let r = h.post("/api/v1/dlq/retry?job=fail", json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["retried"].as_array().unwrap().len(), 1);
    assert_eq!(h.post("/api/v1/dlq/retry?job=nope", json!({})).status, 404);
    let alerts = h.get("/api/v1/alerts?limit=5");
    assert_eq!(alerts.status, 200);
    assert_eq!(alerts.json(), e.json(&["alert:history", "--limit", "5"]));
}

#[test]
fn followed_logs_stream_while_the_attempt_runs_and_end_with_it() {
    let e = http_env();
    let gate = e.path("gate");
    e.job(
        "talk",
        &format!(
            "run: |\n  echo first\n  while [ ! -e {} ]; do sleep 0.05; done\n  echo second\n",
            gate.display()
        ),
    );
    e.job(
        "flow",
        "steps:\n  - name: one\n    run: echo from-one\n  - name: two\n    needs: [one]\n    run: echo from-two\n",
    );
    let _d = e.daemon();
    let h = Http::of(&e);
    let id = h.post("/api/v1/jobs/talk/runs", json!({})).json()["id"]
        .as_i64()
        .unwrap();
    // The first line arrives while the job still runs (it waits for the gate, which only
    // opens once the line was seen), then the rest, then the response ends.
    let mut opened = false;
    let got = h.stream(&format!("/api/v1/runs/{id}/logs?follow=1"), &[], |seen| {
        if seen.contains("first") && !opened {
            assert_eq!(e.state(id), "running");
            std::fs::write(&gate, "").unwrap();
            opened = true;
        }
        false
    });
    assert_eq!(got, "first\nsecond\n");
    assert_eq!(e.state(id), "succeeded");
    let plain = h.get(&format!("/api/v1/runs/{id}/logs"));
    assert_eq!(plain.text, "first\nsecond\n");
    assert!(
        plain
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(
        h.get(&format!("/api/v1/runs/{id}/logs?attempt=2")).status,
        404
    );

    let flow = h.post("/api/v1/jobs/flow/runs", json!({})).json()["id"]
        .as_i64()
        .unwrap();
    let got = h.stream(&format!("/api/v1/runs/{flow}/logs?follow=1"), &[], |_| {
        false
    });
    assert_eq!(
        got,
        "[worker: step one]\nfrom-one\n[worker: step two]\nfrom-two\n"
    );
    let step = h.get(&format!("/api/v1/runs/{flow}/logs?step=two"));
    assert_eq!(step.text, "from-two\n");
    assert_eq!(
        h.get(&format!("/api/v1/runs/{flow}/logs?step=three"))
            .status,
        404
    );
}

/// The events of a stream's text: (id, event, data).
fn events(text: &str) -> Vec<(i64, String, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut id = None;
            let mut event = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.parse().ok();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).ok();
                }
            }
            Some((id?, event?, data?))
        })
        .collect()
}

#[test]
fn the_event_stream_replays_from_the_last_event_id() {
    let e = http_env();
    e.job(
        "flow",
        "steps:\n  - name: one\n    run: echo 1\n  - name: two\n    needs: [one]\n    run: echo 2\n",
    );
    let _d = e.daemon();
    let h = Http::of(&e);
    let base = h.base.clone();
    let token = h.token.clone();
    std::thread::scope(|s| {
        // A stream open while the run progresses (from the first event kept, so that it cannot
        // miss the run however late it connects) ends once it saw the run succeed.
        let live = s.spawn(move || {
            let h2 = Http {
                rt: tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap(),
                client: reqwest::Client::new(),
                base,
                token,
            };
            h2.stream("/api/v1/events", &[("last-event-id", "0")], |seen| {
                events(seen)
                    .iter()
                    .any(|(_, ev, d)| ev == "run" && d["state"] == "succeeded")
            })
        });
        let id = h.post("/api/v1/jobs/flow/runs", json!({})).json()["id"]
            .as_i64()
            .unwrap();
        e.wait_state(id, &["succeeded"]);
        let got = live.join().unwrap();
        assert!(got.contains("event: run"), "{got}");
    });
    // Everything, in order, through a fresh connection that replays from the start.
    let all = h.stream("/api/v1/events", &[("last-event-id", "0")], |seen| {
        events(seen)
            .iter()
            .any(|(_, ev, d)| ev == "run" && d["state"] == "succeeded")
    });
    let evs = events(&all);
    let runs: Vec<&str> = evs
        .iter()
        .filter(|(_, ev, _)| ev == "run")
        .map(|(_, _, d)| d["state"].as_str().unwrap())
        .collect();
    assert_eq!(runs, vec!["queued", "running", "succeeded"], "{all}");
    let steps: Vec<(String, String)> = evs
        .iter()
        .filter(|(_, ev, _)| ev == "step")
        .map(|(_, _, d)| {
            (
                d["name"].as_str().unwrap().to_string(),
                d["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        steps.contains(&("one".into(), "succeeded".into()))
            && steps.contains(&("two".into(), "succeeded".into())),
        "{steps:?}"
    );
    let ids: Vec<i64> = evs.iter().map(|(id, _, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    // Reconnecting after the second event misses nothing after it.
    let after = ids[1];
    let rest = h.stream(
        "/api/v1/events",
        &[("last-event-id", &after.to_string())],
        |seen| events(seen).len() >= evs.len() - 2,
    );
    let rest_ids: Vec<i64> = events(&rest).iter().map(|(id, _, _)| *id).collect();
    assert_eq!(rest_ids, ids[2..].to_vec());
    // An id from the future (another store): a reset.
    let reset = h.stream("/api/v1/events", &[("last-event-id", "99999999")], |seen| {
        seen.contains("event: reset")
    });
    assert!(reset.contains("event: reset"));
}

#[test]
fn schedules_pause_and_resume_over_http_and_it_sticks() {
    let e = http_env();
    e.job("hello", "run: echo hi\n");
    with_nightly(&e, "hello");
    {
        let _d = e.daemon();
        let h = Http::of(&e);
        let r = h.post("/api/v1/schedules/nightly/pause", json!({}));
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json()["paused"], true);
        assert_eq!(r.json()["next"], json!([]));
        assert_eq!(
            h.post("/api/v1/schedules/nope/pause", json!({})).status,
            404
        );
        let t = h.post("/api/v1/schedules/nightly/trigger", json!({}));
        assert_eq!(t.status, 201, "{}", t.text);
        assert_eq!(t.json()["trigger"], "manual");
    }
    // Across a restart, and as the commands see it.
    let s = e.json(&["schedules"]);
    assert_eq!(s[0]["paused"], true);
    assert!(e.ok(&["list"]).contains("paused"));
    let _d = e.daemon();
    let h = Http::of(&e);
    assert_eq!(h.get("/api/v1/schedules").json()[0]["paused"], true);
    let r = h.post("/api/v1/schedules/nightly/resume", json!({}));
    assert_eq!(r.json()["paused"], false);
    assert_eq!(
        h.get("/api/v1/schedules?next=3").json()[0]["next"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(e.json(&["schedules"])[0]["paused"], false);
}

#[test]
fn a_port_in_use_stops_the_daemon_with_the_address_and_why() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let e = Env::new();
    e.file("scheduler.yaml", &format!("http:\n  listen: {addr}\n"));
    let out = e.run(&["daemon"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&addr.to_string()) && err.contains("in use"),
        "{err}"
    );
}

#[test]
fn hostile_clients_delay_neither_runs_nor_the_api() {
    let e = http_env();
    let marks = e.path("marks");
    e.job("tick", &format!("run: echo x >> {}\n", marks.display()));
    e.file(
        "scheduler.yaml",
        "http:\n  listen: 127.0.0.1:0\nschedules:\n  - job: tick\n    cron: \"@every 1s\"\n    catch_up: none\n",
    );
    let _d = e.daemon();
    let h = Http::of(&e);
    let addr = h.base.trim_start_matches("http://").to_string();
    // 2,000 idle connections (fewer where this process may not open that many files), some
    // sending half a request head, and one announcing a 1 GiB body.
    let want = open_files_limit().saturating_sub(200).min(2_000);
    let mut idle: Vec<TcpStream> = (0..want)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    assert!(
        idle.len() >= want * 9 / 10,
        "only {} of {want} connections",
        idle.len()
    );
    for s in idle.iter_mut().take(50) {
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHo");
    }
    let mut big = TcpStream::connect(&addr).unwrap();
    big.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        big,
        "POST /api/v1/jobs/tick/runs HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n{{",
        h.token
    )
    .unwrap();
    let mut head = [0u8; 12];
    big.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");
    // Fires keep firing and runs keep running.
    let before = std::fs::read_to_string(&marks)
        .unwrap_or_default()
        .lines()
        .count();
    wait_for("three more fires to run", || {
        let n = std::fs::read_to_string(&marks)
            .unwrap_or_default()
            .lines()
            .count();
        (n >= before + 3).then_some(())
    });
    // And the API answers beside them (the daemon raised its open-files limit: its cap on
    // connections, a quarter of it, is above 2,000 wherever the hard limit allows).
    assert_eq!(h.get("/healthz").status, 200);
    assert_eq!(h.get("/api/v1/jobs").status, 200);
    drop(idle);
}

/// Raises this process's soft limit on open files to its hard limit; returns the new limit.
fn open_files_limit() -> usize {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid struct of our own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return 1024;
        }
        l.rlim_cur = l.rlim_max.min(65_536);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        }
    }
    l.rlim_cur as usize
}

/// With every connection slot held by idle clients, a new client is served at once: the
/// connection silent the longest is closed to make room (not after its 60 s idle timeout).
#[test]
fn idle_connections_make_room_for_new_clients() {
    use std::os::unix::process::CommandExt;
    let e = http_env();
    e.job("hello", "run: echo hi\n");
    // 256 open files: the daemon serves at most 64 connections at once.
    let _d = e.daemon_with(|c| {
        // SAFETY: setrlimit is async-signal-safe; it runs in the child before exec.
        unsafe {
            c.pre_exec(|| {
                let l = libc::rlimit {
                    rlim_cur: 256,
                    rlim_max: 256,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let h = Http::of(&e);
    let addr = h.base.trim_start_matches("http://").to_string();
    // 100 clients each make a request and keep their connection open, idle.
    let ask = |s: &mut TcpStream| {
        s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        write!(s, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while !String::from_utf8_lossy(&got).contains("\"ok\"}") {
            let n = s.read(&mut buf).expect("an answer");
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    };
    let idle: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            ask(&mut s);
            s
        })
        .collect();
    // A plain request on a fresh connection, with a deadline well below the idle timeout.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply)
        .expect("an answer before the idle connections time out");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    drop(idle);
}
