//! The in-process step kinds: each runs as a task and reports its outputs (a JSON object) or why
//! it failed, like a process attempt reports its exit.
//!
//! `http` sends one request, `sql` runs one statement. Both are self-contained: they take what
//! the engine rendered, never touch the store, never block the runtime's thread, honour their
//! timeout, and fail with one line a person can act on, free of secrets.

pub mod http;
pub mod sql;

/// What an in-process step ends with: its outputs, or the error that failed it.
pub type StepResult = Result<serde_json::Value, String>;

/// The most a step may store as outputs (and the most an `http` step reads of a body).
pub const MAX_OUTPUTS: usize = 1 << 20;

/// A URL without userinfo, query string or fragment. One that does not parse is cut the same way
/// by hand (everything up to the last `@` of its authority, and from the first `?` or `#`).
pub fn redact_url(url: &str) -> String {
    if let Ok(mut u) = url::Url::parse(url)
        && u.has_host()
    {
        let _ = u.set_username("");
        let _ = u.set_password(None);
        u.set_query(None);
        u.set_fragment(None);
        return u.to_string();
    }
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..cut];
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}{}", &rest[at + 1..]),
        None => format!("{scheme}{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("https://u:p@host:8443/a/b?x=1#f"),
            "https://host:8443/a/b"
        );
        assert_eq!(
            redact_url("postgres://u:p@db/app?sslmode=require"),
            "postgres://db/app"
        );
        assert_eq!(redact_url("weird://u:p@ho st/x?y"), "weird://ho st/x");
        assert_eq!(redact_url("no scheme?q"), "no scheme");
    }

    /// The engine may spawn these on any runtime: their futures must be `Send`.
    #[test]
    fn step_futures_are_send() {
        fn send<T: Send>(_: &T) {}
        let client = http::client().expect("client");
        let req = http::HttpRequest {
            method: "GET".into(),
            url: "http://127.0.0.1/".into(),
            headers: Vec::new(),
            body: http::RenderedBody::None,
            expect: Vec::new(),
            idempotency_key: String::new(),
            timeout: std::time::Duration::from_secs(1),
        };
        send(&http::run(&client, &req));
        send(&sql::run(
            "sqlite:///x",
            "",
            &[],
            std::time::Duration::from_secs(1),
        ));
    }
}
