//! Who may use the server: a bearer token (`Authorization: Bearer TOKEN`, compared in constant
//! time), or the dashboard's session cookie, which the login page gives for a token.
//!
//! The tokens are `http.tokens` of `scheduler.yaml`; without any (allowed on a loopback address
//! only), one the daemon generated once and keeps in `DATA/api-token` (mode 0600). A session
//! cookie carries its expiry and an HMAC of it keyed by the token it was given for: it needs no
//! state on the server, outlives restarts, and dies with its token. Requests that change
//! something and come with the cookie (not a token) must come from the dashboard's own origin
//! (`Origin`, or `Sec-Fetch-Site: same-origin`): cross-site requests are refused (403).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Mutex;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ring::hmac;
use subtle::ConstantTimeEq;

use super::Shared;
use crate::config::Config;
use crate::datadir::DataDir;

/// How long a dashboard session lasts.
pub const SESSION_SECS: i64 = 7 * 24 * 3600;

/// Where the generated token is kept.
pub fn token_path(data: &DataDir) -> PathBuf {
    data.root().join("api-token")
}

/// The generated token: read from `DATA/api-token`, or made (32 random bytes) and written there
/// with mode 0600 the first time.
pub fn load_or_create_token(data: &DataDir) -> std::io::Result<String> {
    let path = token_path(data);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| std::io::Error::other("no random numbers from the system"))?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(token.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(token)
}

pub struct Auth {
    data: DataDir,
    /// The generated token, once read or made.
    generated: Mutex<Option<String>>,
    /// The session cookie's name: with the port in it, so that two daemons on one host do not
    /// overwrite each other's (cookies are shared across ports).
    pub cookie: String,
}

/// How a request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    Token,
    Cookie,
}

impl Auth {
    pub fn new(data: DataDir, port: u16) -> Auth {
        Auth {
            data,
            generated: Mutex::new(None),
            cookie: format!("worker_session_{port}"),
        }
    }

    /// The tokens accepted now.
    pub fn tokens(&self, config: &Config) -> Vec<String> {
        if let Some(http) = &config.settings.http
            && !http.tokens.is_empty()
        {
            return http.tokens.clone();
        }
        let Ok(mut g) = self.generated.lock() else {
            return Vec::new();
        };
        if g.is_none() {
            match load_or_create_token(&self.data) {
                Ok(t) => {
                    // A token in a log line would be a key left in the door.
                    let mut s = crate::config::Secrets::default();
                    s.add(t.clone());
                    crate::config::secrets::publish(&s);
                    *g = Some(t)
                }
                Err(e) => {
                    tracing::error!(error = %e, path = %token_path(&self.data).display(),
                        "cannot read or create the API token: every request is refused");
                }
            }
        }
        g.iter().cloned().collect()
    }

    /// Whether `presented` is one of the tokens (each compared in constant time).
    pub fn token_ok(&self, config: &Config, presented: &str) -> bool {
        let mut ok = subtle::Choice::from(0);
        for t in self.tokens(config) {
            ok |= t.as_bytes().ct_eq(presented.as_bytes());
        }
        ok.into()
    }

    /// A session cookie's value for `token`, valid until `now + SESSION_SECS`.
    pub fn session(token: &str, now: i64) -> String {
        let expires = now + SESSION_SECS;
        let key = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
        let tag = hmac::sign(&key, session_message(expires).as_bytes());
        format!(
            "{expires}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    }

    /// Whether a session cookie's value is unexpired and was given for a current token.
    pub fn session_ok(&self, config: &Config, value: &str, now: i64) -> bool {
        let Some((expires, tag)) = value.split_once('.') else {
            return false;
        };
        let Ok(expires) = expires.parse::<i64>() else {
            return false;
        };
        if expires <= now || expires > now + SESSION_SECS {
            return false;
        }
        let Ok(tag) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tag) else {
            return false;
        };
        let msg = session_message(expires);
        self.tokens(config).iter().any(|t| {
            let key = hmac::Key::new(hmac::HMAC_SHA256, t.as_bytes());
            hmac::verify(&key, msg.as_bytes(), &tag).is_ok()
        })
    }

    /// The `Set-Cookie` value that starts a session for `token`.
    pub fn set_cookie(&self, token: &str, now: i64) -> String {
        format!(
            "{}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECS}",
            self.cookie,
            Self::session(token, now)
        )
    }

    /// The `Set-Cookie` value that ends the session.
    pub fn clear_cookie(&self) -> String {
        format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
            self.cookie
        )
    }

    /// How the request proves who it is, if it does.
    pub fn check(&self, config: &Config, headers: &HeaderMap) -> Option<Proof> {
        if let Some(h) = headers.get(header::AUTHORIZATION) {
            let presented = h.to_str().ok()?.strip_prefix("Bearer ")?.trim();
            return self.token_ok(config, presented).then_some(Proof::Token);
        }
        let value = cookie(headers, &self.cookie)?;
        self.session_ok(config, value, chrono::Utc::now().timestamp())
            .then_some(Proof::Cookie)
    }
}

fn session_message(expires: i64) -> String {
    format!("worker-session\0{expires}")
}

/// The value of cookie `name`.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether a request comes from a page of this server: its `Origin` names the host it was sent
/// to, or (no `Origin`) the browser says it is same-origin.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match headers.get(header::ORIGIN).map(|o| o.to_str()) {
        Some(Ok(origin)) => host.is_some_and(|h| {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|rest| rest == h)
        }),
        Some(Err(_)) => false,
        None => headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"same-origin"),
    }
}

/// Refuses requests without a valid token or session (401), and cross-site requests that would
/// change something on the strength of the cookie alone (403).
pub async fn require(
    State(s): State<std::sync::Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    let config = s.config();
    match s.auth.check(&config, req.headers()) {
        Some(Proof::Token) => next.run(req).await,
        Some(Proof::Cookie) => {
            let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
            if safe || same_origin(req.headers()) {
                next.run(req).await
            } else {
                forbidden()
            }
        }
        None => unauthorized(req.headers()),
    }
}

/// 401 without detail; a browser asking for a page gets a link to the login page.
pub fn unauthorized(headers: &HeaderMap) -> Response {
    let html = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    let mut r = if html {
        (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            Body::from(
                "<!doctype html><meta charset=utf-8><title>worker: log in</title>\
                 <p>Log in: open the address <code>worker ui</code> prints, or \
                 <a href=\"/login\">enter a token</a>.</p>",
            ),
        )
            .into_response()
    } else {
        super::error::ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized").into_response()
    };
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

fn forbidden() -> Response {
    super::error::ApiError::new(
        StatusCode::FORBIDDEN,
        "cross-site request refused: send a bearer token, or use the dashboard itself",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(tokens: &[&str]) -> Config {
        let mut c = Config::empty(std::path::Path::new("/nonexistent"));
        c.settings.http = Some(crate::config::scheduler::HttpSettings {
            listen: "127.0.0.1:7878".parse().unwrap(),
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
        });
        c
    }

    fn auth() -> (tempfile::TempDir, Auth) {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        (dir, Auth::new(data, 7878))
    }

    #[test]
    fn tokens_match_exactly() {
        let (_d, a) = auth();
        let c = config_with(&["0123456789abcdef-one", "0123456789abcdef-two"]);
        assert!(a.token_ok(&c, "0123456789abcdef-one"));
        assert!(a.token_ok(&c, "0123456789abcdef-two"));
        assert!(!a.token_ok(&c, "0123456789abcdef-on"));
        assert!(!a.token_ok(&c, "0123456789abcdef-one "));
        assert!(!a.token_ok(&c, ""));
    }

    #[test]
    fn generated_token_is_kept_private_and_reused() {
        let (d, a) = auth();
        let c = Config::empty(std::path::Path::new("/nonexistent"));
        let t = a.tokens(&c);
        assert_eq!(t.len(), 1);
        assert!(t[0].len() >= 40, "{}", t[0]);
        let path = d.path().join("api-token");
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let again = Auth::new(DataDir::open(d.path()).unwrap(), 7878);
        assert_eq!(again.tokens(&c), t);
    }

    #[test]
    fn sessions_expire_and_die_with_their_token() {
        let (_d, a) = auth();
        let c = config_with(&["0123456789abcdef-one"]);
        let v = Auth::session("0123456789abcdef-one", 1_000);
        assert!(a.session_ok(&c, &v, 1_001));
        assert!(!a.session_ok(&c, &v, 1_000 + SESSION_SECS));
        let other = config_with(&["0123456789abcdef-new"]);
        assert!(!a.session_ok(&other, &v, 1_001));
        // A forged expiry does not carry the tag with it.
        let (_, tag) = v.split_once('.').unwrap();
        assert!(!a.session_ok(&c, &format!("{}.{tag}", 1_000 + 60), 1_001));
        assert!(!a.session_ok(&c, "garbage", 1_001));
    }

    #[test]
    fn same_origin_compares_origin_with_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:7878".parse().unwrap());
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, "http://127.0.0.1:7878".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
        h.insert(
            header::ORIGIN,
            "http://127.0.0.1:7878.evil.example".parse().unwrap(),
        );
        assert!(!same_origin(&h));
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", "same-origin".parse().unwrap());
        assert!(same_origin(&h));
    }
}
