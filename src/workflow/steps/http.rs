//! The `http` step: one request, rendered by the engine, and its response as the step's outputs
//! (`status`, `headers`, `body`).
//!
//! Secrets stay out of errors: a request's header values never appear in one (a body that echoes
//! them is masked), and URLs are shown without userinfo, query string or fragment.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use super::{MAX_OUTPUTS, StepResult};
use crate::units::{format_duration_spec, format_size_spec};

/// What the engine sends, templates already rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    /// In order; a name may repeat.
    pub headers: Vec<(String, String)>,
    pub body: RenderedBody,
    /// Accepted statuses; empty: any 2xx.
    pub expect: Vec<u16>,
    /// Sent as `Idempotency-Key` unless `headers` has one (any case); empty: none sent.
    pub idempotency_key: String,
    /// For the whole exchange: connecting, sending, and reading the response body.
    pub timeout: Duration,
}

/// A request body.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum RenderedBody {
    #[default]
    None,
    /// Sent as JSON, with `Content-Type: application/json` unless a header gives one.
    Json(serde_json::Value),
    /// Sent as is.
    Text(String),
}

/// Redirects followed, within the request's origin only.
const MAX_REDIRECTS: usize = 10;
/// Characters of a refused response's body quoted in the error.
const SNIPPET_CHARS: usize = 200;
/// Bytes read of a refused response's body (enough for `SNIPPET_CHARS` of UTF-8).
const SNIPPET_BYTES: usize = SNIPPET_CHARS * 4;

/// The client `http` steps share: rustls with ring (the process's crypto provider is installed
/// here if it was not), `User-Agent: worker/VERSION`, redirects followed only within the
/// request's origin (scheme, host and port) so headers meant for one host never reach another;
/// a redirect elsewhere ends the exchange with the 3xx response. No timeout of its own: each
/// request has one.
pub fn client() -> Result<reqwest::Client, String> {
    crate::alert::deliver::install_crypto();
    reqwest::Client::builder()
        .user_agent(concat!("worker/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            let same = attempt
                .previous()
                .first()
                .is_some_and(|first| first.origin() == attempt.url().origin());
            if same {
                attempt.follow()
            } else {
                attempt.stop()
            }
        }))
        .build()
        .map_err(|e| {
            format!(
                "cannot create the HTTP client: {}",
                crate::alert::deliver::chain(&e)
            )
        })
}

/// Sends the request and reads the response. `Ok`: the outputs `{status, headers, body}`.
pub async fn run(client: &reqwest::Client, req: &HttpRequest) -> StepResult {
    let secrets = Secrets::of(req);
    let target = Target::of(&req.method, &req.url);
    let result = match tokio::time::timeout(req.timeout, exchange(client, req, &target)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "{target}: no complete response within {}",
            format_duration_spec(req.timeout)
        )),
    };
    result.map_err(|e| secrets.mask(&e))
}

async fn exchange(client: &reqwest::Client, req: &HttpRequest, target: &Target) -> StepResult {
    let method = reqwest::Method::from_bytes(req.method.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("{target}: `{}` is not an HTTP method", req.method.trim()))?;
    let url = reqwest::Url::parse(req.url.trim())
        .map_err(|e| format!("{target}: not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{target}: only http and https URLs can be requested, not {}",
            url.scheme()
        ));
    }
    let headers = header_map(req, target)?;
    let mut builder = client.request(method, url).headers(headers);
    builder = match &req.body {
        RenderedBody::None => builder,
        RenderedBody::Json(v) => builder.body(
            serde_json::to_vec(v).map_err(|e| format!("{target}: cannot encode the body: {e}"))?,
        ),
        RenderedBody::Text(t) => builder.body(t.clone()),
    };
    let mut resp = builder.send().await.map_err(|e| send_error(e, target))?;

    let status = resp.status();
    let accepted = if req.expect.is_empty() {
        status.is_success()
    } else {
        req.expect.contains(&status.as_u16())
    };
    let status_text = match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    };
    if !accepted {
        let (bytes, _) = read_body(&mut resp, SNIPPET_BYTES, target).await?;
        let text = String::from_utf8_lossy(&bytes);
        let snippet: String = text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(SNIPPET_CHARS)
            .collect();
        let expected = if req.expect.is_empty() {
            "2xx".to_string()
        } else {
            req.expect
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(format!(
            "{status_text} from {target} (expected {expected}){}",
            if snippet.is_empty() {
                String::new()
            } else {
                format!(": {snippet}")
            }
        ));
    }

    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in resp.headers() {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    if let Some(len) = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > MAX_OUTPUTS as u64
    {
        return Err(too_large(target, Some(len)));
    }
    let (bytes, complete) = read_body(&mut resp, MAX_OUTPUTS, target).await?;
    if !complete {
        return Err(too_large(target, None));
    }
    // JSON whether declared so or not; a body that does not parse (even one declared JSON) is
    // text, and an empty body is "".
    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) => v,
        Err(_) => serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned()),
    };
    Ok(serde_json::json!({
        "status": status.as_u16(),
        "headers": headers,
        "body": body,
    }))
}

fn too_large(target: &Target, declared: Option<u64>) -> String {
    let size = match declared {
        Some(len) => format!("{len} bytes, over"),
        None => "larger than".to_string(),
    };
    format!(
        "the response body from {target} is {size} the {} limit for outputs",
        format_size_spec(MAX_OUTPUTS as u64)
    )
}

/// Reads at most `cap` bytes of the body, chunk by chunk; `true` when the body ended within them.
async fn read_body(
    resp: &mut reqwest::Response,
    cap: usize,
    target: &Target,
) -> Result<(Vec<u8>, bool), String> {
    let mut out = Vec::new();
    loop {
        let chunk = resp.chunk().await.map_err(|e| {
            format!(
                "{target}: the response body broke off: {}",
                crate::alert::deliver::chain(&e.without_url())
            )
        })?;
        let Some(chunk) = chunk else {
            return Ok((out, true));
        };
        if out.len() + chunk.len() > cap {
            out.extend_from_slice(&chunk[..cap - out.len()]);
            return Ok((out, false));
        }
        out.extend_from_slice(&chunk);
    }
}

fn header_map(req: &HttpRequest, target: &Target) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (name, value) in &req.headers {
        let header = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("{target}: `{}` is not a valid header name", name.trim()))?;
        // The value is never quoted: it may be a secret.
        let value = HeaderValue::from_str(value.trim()).map_err(|_| {
            format!(
                "{target}: the value of header {header} is not valid in HTTP (control characters?)"
            )
        })?;
        map.append(header, value);
    }
    if !req.idempotency_key.is_empty() && !map.contains_key("idempotency-key") {
        let key = HeaderValue::from_str(&req.idempotency_key)
            .map_err(|_| format!("{target}: the idempotency key is not valid in an HTTP header"))?;
        map.insert(HeaderName::from_static("idempotency-key"), key);
    }
    if matches!(req.body, RenderedBody::Json(_)) && !map.contains_key(CONTENT_TYPE) {
        map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    Ok(map)
}

fn send_error(e: reqwest::Error, target: &Target) -> String {
    let what = if e.is_connect() {
        "cannot connect"
    } else if e.is_redirect() {
        "redirect failed"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_builder() {
        "cannot build the request"
    } else {
        "request failed"
    };
    // The innermost cause says what happened (`Connection refused (os error 111)`, a DNS or a
    // certificate failure); the layers above it only repeat "error sending request". Never the
    // error's own text: reqwest's carries the URL whole, query string included.
    let e = e.without_url();
    let mut cause: &dyn std::error::Error = &e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    format!("{target}: {what}: {cause}")
}

/// `POST https://host:port/path`: where a request went, safe to show.
struct Target(String);

impl Target {
    fn of(method: &str, url: &str) -> Target {
        let method = method.trim().to_ascii_uppercase();
        Target(format!("{method} {}", super::redact_url(url.trim())))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What must not appear in an error: the request's header values (whole, and their longer
/// words: `Bearer TOKEN` also hides a bare `TOKEN`), the URL's password and query values.
struct Secrets(Vec<String>);

impl Secrets {
    fn of(req: &HttpRequest) -> Secrets {
        let mut words: Vec<String> = Vec::new();
        let mut add = |s: &str| {
            let s = s.trim();
            if s.len() >= 4 {
                words.push(s.to_string());
            }
        };
        for (_, value) in &req.headers {
            add(value);
            for w in value.split_whitespace() {
                if w.len() >= 6 {
                    add(w);
                }
            }
        }
        if let Ok(u) = url::Url::parse(req.url.trim()) {
            if let Some(p) = u.password() {
                let user = percent_encoding::percent_decode_str(u.username()).decode_utf8_lossy();
                let pass = percent_encoding::percent_decode_str(p).decode_utf8_lossy();
                add(p);
                add(&pass);
                // reqwest sends userinfo as `Authorization: Basic base64(user:password)`.
                add(&base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")));
            }
            for (_, v) in u.query_pairs() {
                add(&v);
            }
        }
        // Longest first, so a whole value is masked before a word inside it.
        words.sort_by_key(|w| std::cmp::Reverse(w.len()));
        words.dedup();
        Secrets(words)
    }

    fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for w in &self.0 {
            if out.contains(w.as_str()) {
                out = out.replace(w.as_str(), "***");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use wiremock::matchers::{body_json, header, method, path};
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};

    fn request(method: &str, url: String) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            url,
            headers: Vec::new(),
            body: RenderedBody::None,
            expect: Vec::new(),
            idempotency_key: "worker-7-charge".into(),
            timeout: Duration::from_secs(10),
        }
    }

    fn http() -> reqwest::Client {
        client().expect("client")
    }

    fn received(server_requests: &[Request]) -> &Request {
        assert_eq!(server_requests.len(), 1, "one request reached the server");
        &server_requests[0]
    }

    #[tokio::test]
    async fn sends_method_path_headers_json_body_and_idempotency_key() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/charges"))
            .and(header("content-type", "application/json"))
            .and(header("idempotency-key", "worker-7-charge"))
            .and(header("authorization", "Bearer s3cr3t-t0ken"))
            .and(body_json(json!({"user": 42, "plan": "pro"})))
            .respond_with(
                ResponseTemplate::new(201)
                    .insert_header("x-request-id", "abc")
                    .set_body_json(json!({"id": "ch_1", "amount": 12.5, "ok": true})),
            )
            .expect(1)
            .mount(&server)
            .await;
        let mut req = request("post", format!("{}/charges", server.uri()));
        req.headers = vec![("Authorization".into(), "Bearer s3cr3t-t0ken".into())];
        req.body = RenderedBody::Json(json!({"user": 42, "plan": "pro"}));
        req.expect = vec![200, 201];
        let out = run(&http(), &req).await.expect("accepted");
        assert_eq!(out["status"], 201);
        assert_eq!(out["headers"]["x-request-id"], "abc");
        assert_eq!(out["headers"]["content-type"], "application/json");
        assert_eq!(
            out["body"],
            json!({"id": "ch_1", "amount": 12.5, "ok": true})
        );
        let reqs = server.received_requests().await.unwrap();
        let r = received(&reqs);
        let ua = r.headers.get("user-agent").unwrap().to_str().unwrap();
        assert_eq!(ua, concat!("worker/", env!("CARGO_PKG_VERSION")));
    }

    #[tokio::test]
    async fn idempotency_key_and_content_type_can_be_overridden() {
        let server = MockServer::start().await;
        Mock::given(method("PUT"))
            .respond_with(ResponseTemplate::new(204))
            .mount(&server)
            .await;
        let mut req = request("PUT", format!("{}/x", server.uri()));
        req.headers = vec![
            ("IDEMPOTENCY-KEY".into(), "mine".into()),
            ("Content-Type".into(), "application/vnd.api+json".into()),
        ];
        req.body = RenderedBody::Json(json!([1, 2]));
        let out = run(&http(), &req).await.expect("204 is 2xx");
        assert_eq!(out["status"], 204);
        assert_eq!(out["body"], "");
        let reqs = server.received_requests().await.unwrap();
        let r = received(&reqs);
        let keys: Vec<_> = r.headers.get_all("idempotency-key").iter().collect();
        assert_eq!(keys, vec!["mine"], "only the given key is sent");
        assert_eq!(
            r.headers.get("content-type").unwrap(),
            "application/vnd.api+json"
        );
        assert_eq!(r.body, b"[1,2]");
    }

    #[tokio::test]
    async fn text_body_and_text_response() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/echo"))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("content-type", "text/plain")
                    .set_body_string("plain words"),
            )
            .mount(&server)
            .await;
        let mut req = request("POST", format!("{}/echo", server.uri()));
        req.body = RenderedBody::Text("hello {not json}".into());
        req.idempotency_key = String::new();
        let out = run(&http(), &req).await.unwrap();
        assert_eq!(out["body"], "plain words");
        let reqs = server.received_requests().await.unwrap();
        let r = received(&reqs);
        assert_eq!(r.body, b"hello {not json}");
        assert!(r.headers.get("content-type").is_none());
        assert!(r.headers.get("idempotency-key").is_none());
    }

    #[tokio::test]
    async fn json_without_content_type_is_parsed_and_repeated_headers_joined() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(
                ResponseTemplate::new(200)
                    .append_header("x-multi", "a")
                    .append_header("x-multi", "b")
                    .set_body_string(r#"{"n": [1, 2]}"#),
            )
            .mount(&server)
            .await;
        let out = run(&http(), &request("GET", server.uri())).await.unwrap();
        assert_eq!(out["body"], json!({"n": [1, 2]}));
        assert_eq!(out["headers"]["x-multi"], "a, b");
    }

    #[tokio::test]
    async fn unexpected_status_fails_with_status_target_expectation_and_body() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(503)
                    .set_body_string(format!("down for\nmaintenance {}", "x".repeat(500))),
            )
            .mount(&server)
            .await;
        let mut req = request("POST", format!("{}/path?token=query-secret", server.uri()));
        req.expect = vec![200, 201];
        let err = run(&http(), &req).await.unwrap_err();
        let prefix = format!(
            "HTTP 503 Service Unavailable from POST {}/path (expected 200, 201): down for maintenance xxx",
            server.uri()
        );
        assert!(err.starts_with(&prefix), "{err}");
        assert!(!err.contains('\n'));
        assert!(!err.contains("query-secret"), "{err}");
        let snippet = err.split_once("): ").unwrap().1;
        assert_eq!(snippet.chars().count(), 200);

        // The default expectation: any 2xx.
        let req = request("POST", format!("{}/path", server.uri()));
        let err = run(&http(), &req).await.unwrap_err();
        assert!(err.contains("(expected 2xx)"), "{err}");

        // An explicit expectation may accept what 2xx would not.
        let mut req = request("POST", format!("{}/path", server.uri()));
        req.expect = vec![503];
        assert_eq!(run(&http(), &req).await.unwrap()["status"], 503);
    }

    #[tokio::test]
    async fn secrets_never_appear_in_errors() {
        let server = MockServer::start().await;
        // A server that echoes what it got, as some do in their error pages.
        Mock::given(method("GET"))
            .respond_with(|r: &Request| {
                let auth = r.headers.get("authorization").unwrap().to_str().unwrap();
                let key = r.headers.get("x-api-key").unwrap().to_str().unwrap();
                ResponseTemplate::new(401).set_body_string(format!(
                    "bad credentials {auth} / {} / {key}",
                    auth.trim_start_matches("Basic ")
                ))
            })
            .mount(&server)
            .await;
        let port = server.address().port();
        let mut req = request(
            "GET",
            format!("http://alice:pa55w0rd-xyz@127.0.0.1:{port}/p?api_key=query-secret-1"),
        );
        req.headers = vec![("X-Api-Key".into(), "header-secret-2".into())];
        let err = run(&http(), &req).await.unwrap_err();
        assert!(
            err.starts_with("HTTP 401 Unauthorized from GET http://127.0.0.1:"),
            "{err}"
        );
        for secret in [
            "pa55w0rd-xyz",
            "alice:",
            "query-secret-1",
            "header-secret-2",
        ] {
            assert!(!err.contains(secret), "{secret} in {err}");
        }
        // Nor the basic credentials reqwest made of the URL's userinfo.
        let basic = base64::engine::general_purpose::STANDARD.encode("alice:pa55w0rd-xyz");
        assert!(!err.contains(&basic), "{err}");
        assert!(
            err.ends_with("bad credentials Basic *** / *** / ***"),
            "{err}"
        );

        // A refused connection names where, without userinfo or query.
        let port = free_port().await;
        let mut req = request(
            "GET",
            format!("http://bob:hunter2-pw@127.0.0.1:{port}/x?sig=abcdef123"),
        );
        req.headers = vec![("Authorization".into(), "Bearer tok-987654".into())];
        let err = run(&http(), &req).await.unwrap_err();
        for secret in ["hunter2-pw", "bob", "abcdef123", "tok-987654"] {
            assert!(!err.contains(secret), "{secret} in {err}");
        }

        // A header whose value HTTP cannot carry is named, its value is not quoted.
        let mut req = request("GET", server.uri());
        req.headers = vec![("X-Token".into(), "line1\nsecret-line2".into())];
        let err = run(&http(), &req).await.unwrap_err();
        assert!(err.contains("x-token"), "{err}");
        assert!(!err.contains("secret-line2"), "{err}");
    }

    #[tokio::test]
    async fn timeout_fails_within_bounds() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
            .mount(&server)
            .await;
        let mut req = request("GET", format!("{}/slow", server.uri()));
        req.timeout = Duration::from_millis(300);
        let started = Instant::now();
        let err = run(&http(), &req).await.unwrap_err();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        assert_eq!(
            err,
            format!(
                "GET {}/slow: no complete response within 300ms",
                server.uri()
            )
        );
    }

    async fn free_port() -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn connection_refused_is_clear() {
        let port = free_port().await;
        let req = request("POST", format!("http://127.0.0.1:{port}/hook"));
        let err = run(&http(), &req).await.unwrap_err();
        assert!(
            err.starts_with(&format!(
                "POST http://127.0.0.1:{port}/hook: cannot connect"
            )),
            "{err}"
        );
        assert_eq!(
            err,
            format!(
                "POST http://127.0.0.1:{port}/hook: cannot connect: Connection refused (os error 111)"
            )
        );
    }

    #[tokio::test]
    async fn bad_method_and_url_are_reported() {
        let err = run(&http(), &request("GE T", "http://127.0.0.1/".into()))
            .await
            .unwrap_err();
        assert!(err.contains("`GE T` is not an HTTP method"), "{err}");
        let err = run(&http(), &request("GET", "ftp://u:pw-secret@host/f".into()))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            "GET ftp://host/f: only http and https URLs can be requested, not ftp"
        );
        let err = run(&http(), &request("GET", "not a url?key=sekrit".into()))
            .await
            .unwrap_err();
        assert!(err.starts_with("GET not a url: not a valid URL"), "{err}");
    }

    /// A raw server that streams an endless chunked body (no `Content-Length`) and counts what it
    /// managed to write before the client hung up.
    async fn endless_server(advertise: Option<u64>) -> (u16, tokio::task::JoinHandle<u64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut buf).await.unwrap();
                if n == 0 {
                    return 0;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            let head = match advertise {
                Some(len) => format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n"),
                None => "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_string(),
            };
            sock.write_all(head.as_bytes()).await.unwrap();
            let chunk = vec![b'a'; 64 * 1024];
            let framed = [
                format!("{:x}\r\n", chunk.len()).into_bytes(),
                chunk.clone(),
                b"\r\n".to_vec(),
            ]
            .concat();
            let mut written = 0u64;
            // Bounded: 256 MiB at most, however the client behaves.
            while written < 256 << 20 {
                let data = if advertise.is_some() { &chunk } else { &framed };
                match sock.write_all(data).await {
                    Ok(()) => written += data.len() as u64,
                    Err(_) => break,
                }
            }
            written
        });
        (port, task)
    }

    #[tokio::test]
    async fn body_over_the_limit_fails_without_reading_it_all() {
        let (port, server) = endless_server(None).await;
        let req = request("GET", format!("http://127.0.0.1:{port}/big"));
        let err = run(&http(), &req).await.unwrap_err();
        assert_eq!(
            err,
            format!(
                "the response body from GET http://127.0.0.1:{port}/big is larger than the 1MiB limit for outputs"
            )
        );
        let written = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server saw the client go")
            .unwrap();
        // The client stopped at the cap: what the server wrote is the cap plus socket buffers.
        assert!(written < 32 << 20, "server wrote {written} bytes");

        // A declared length over the cap fails before any of the body is read.
        let (port, server) = endless_server(Some(5 << 30)).await;
        let req = request("GET", format!("http://127.0.0.1:{port}/huge"));
        let err = run(&http(), &req).await.unwrap_err();
        assert_eq!(
            err,
            format!(
                "the response body from GET http://127.0.0.1:{port}/huge is 5368709120 bytes, over the 1MiB limit for outputs"
            )
        );
        let written = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap();
        assert!(written < 32 << 20, "server wrote {written} bytes");
    }

    #[tokio::test]
    async fn body_at_the_limit_is_accepted() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_string("b".repeat(MAX_OUTPUTS)))
            .mount(&server)
            .await;
        let out = run(&http(), &request("GET", server.uri())).await.unwrap();
        assert_eq!(out["body"].as_str().unwrap().len(), MAX_OUTPUTS);
    }

    #[tokio::test]
    async fn redirects_stay_within_the_origin() {
        let other = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_string("elsewhere"))
            .mount(&other)
            .await;
        let server = MockServer::start().await;
        Mock::given(path("/here"))
            .respond_with(ResponseTemplate::new(302).insert_header("location", "/there"))
            .mount(&server)
            .await;
        Mock::given(path("/there"))
            .respond_with(ResponseTemplate::new(200).set_body_string("same origin"))
            .mount(&server)
            .await;
        Mock::given(path("/away"))
            .respond_with(
                ResponseTemplate::new(302)
                    .insert_header("location", format!("{}/x", other.uri()).as_str()),
            )
            .mount(&server)
            .await;
        let out = run(&http(), &request("GET", format!("{}/here", server.uri())))
            .await
            .unwrap();
        assert_eq!(out["body"], "same origin");
        let mut req = request("GET", format!("{}/away", server.uri()));
        req.headers = vec![("X-Api-Key".into(), "k-123456".into())];
        let err = run(&http(), &req).await.unwrap_err();
        assert!(err.starts_with("HTTP 302 Found from GET"), "{err}");
        assert!(other.received_requests().await.unwrap().is_empty());
    }
}
