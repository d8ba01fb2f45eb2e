//! The `sql` step: one statement against PostgreSQL, MySQL/MariaDB or SQLite, chosen by the URL's
//! scheme, its parameters always bound (`$1, $2` for PostgreSQL, `?` for MySQL and SQLite), never
//! spliced into the text. One connection per call, closed before returning.
//!
//! Outputs: `{"rows": [{column: value, …}, …], "row_count": N}` — at most [`MAX_ROWS`] rows (the
//! rest are counted, not kept); `row_count` is the number of rows a statement returned, or, for
//! one that returns none (INSERT, UPDATE, DELETE without RETURNING), the number it affected.
//! A row's columns are keyed by name (when two share a name, the last one wins).
//!
//! Column values as JSON:
//! - integers, floats: numbers (a float that JSON cannot hold — NaN, ±infinity — as the string
//!   `"NaN"`, `"Infinity"`, `"-Infinity"`); booleans: `true`/`false`; NULL: `null`.
//! - exact decimals (PostgreSQL `numeric`, MySQL `DECIMAL`): strings, digit for digit.
//! - text of every kind, enums, UUIDs: strings.
//! - PostgreSQL `json`/`jsonb`, MySQL `JSON`: the JSON value itself. (MariaDB's `JSON` is an alias
//!   of `LONGTEXT` and comes back as a string; SQLite columns declared `JSON` are parsed when
//!   their text is JSON.)
//! - instants with a zone (PostgreSQL `timestamptz`, MySQL `TIMESTAMP`): RFC 3339 in UTC,
//!   `2026-03-01T12:00:00Z`, fractions only when non-zero; times without a zone (`timestamp`,
//!   `DATETIME`): the same without the offset; dates `2026-03-01`; times of day `12:00:00`.
//! - bytes (`bytea`, `BLOB`, `VARBINARY`): **base64** (standard alphabet, padded).
//! - PostgreSQL arrays (one dimension): JSON arrays. Types with no JSON form here (intervals,
//!   network addresses, geometry…) fail the step with a hint to cast them to `text` in the query.
//!
//! Parameters from JSON: PostgreSQL prepares the statement first and converts each value to the
//! type the server inferred for its `$N` (numbers and numeric strings for integer, float and
//! numeric types; booleans; RFC 3339 strings for `timestamptz`, also plain `2026-03-01T12:00:00`
//! for `timestamp`, `2026-03-01` for `date`; any JSON for `json`/`jsonb`; anything for text;
//! other types such as `uuid` or enums as their text form, parsed by the server), failing with
//! the parameter's number and types when it cannot. MySQL and SQLite take no declared types:
//! strings are bound as text, integers as integers, other numbers as doubles, booleans as 1/0,
//! arrays and objects as their JSON text; for MySQL, a string that is an RFC 3339 instant
//! (`2026-03-01T12:00:00Z`) is bound as a DATETIME in UTC (the session's time zone is UTC), which
//! MySQL and MariaDB would otherwise refuse. `null` is NULL everywhere.
//!
//! Errors name the database kind and carry the server's message; the URL's password never
//! appears in them (URLs are shown without userinfo and options).

mod mysql;
pub(crate) mod postgres;
mod sqlite;

use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use super::{StepResult, redact_url};

/// The most rows a step keeps in its outputs.
pub const MAX_ROWS: usize = 1000;

/// Runs `query` with `params` bound on the database `url` names, within `timeout` (connecting
/// included).
pub async fn run(url: &str, query: &str, params: &[Value], timeout: Duration) -> StepResult {
    let url = url.trim();
    let scheme = url
        .split_once(':')
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    let work = async {
        match scheme.as_str() {
            "postgres" | "postgresql" => postgres::run(url, query, params, timeout).await,
            "mysql" => mysql::run(url, query, params, timeout, "MySQL").await,
            "mariadb" => mysql::run(url, query, params, timeout, "MariaDB").await,
            "sqlite" => sqlite::run(url, query, params, timeout).await,
            _ => Err(format!(
                "sql: cannot tell the database from the URL {}: it should start with \
                 postgres://, mysql://, mariadb:// or sqlite://",
                redact_url(url)
            )),
        }
    };
    // Each kind keeps its own deadline (and stops the statement on the server when it passes);
    // this only guards against a peer that ignores even that.
    let result = match tokio::time::timeout(timeout + Duration::from_secs(5), work).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "sql: no answer from {} within {}",
            redact_url(url),
            crate::units::format_duration_spec(timeout)
        )),
    };
    result.map_err(|e| mask_password(url, &one_line(&e)))
}

/// The outputs of a statement.
#[derive(Default)]
struct Rows {
    rows: Vec<serde_json::Map<String, Value>>,
    row_count: u64,
}

impl Rows {
    /// Whether a returned row is still kept (each is counted either way).
    fn has_room(&self) -> bool {
        self.rows.len() < MAX_ROWS
    }

    fn into_outputs(self) -> Value {
        serde_json::json!({ "rows": self.rows, "row_count": self.row_count })
    }
}

/// A float as JSON: a number, or a string for what JSON cannot hold.
fn float(f: f64) -> Value {
    match serde_json::Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None if f.is_nan() => Value::String("NaN".into()),
        None if f > 0.0 => Value::String("Infinity".into()),
        None => Value::String("-Infinity".into()),
    }
}

/// A 4-byte float as JSON, by its shortest decimal form (`1.1`, not `1.100000023841858`).
fn float32(f: f32) -> Value {
    if f.is_finite() {
        f.to_string()
            .parse::<f64>()
            .map(float)
            .unwrap_or(Value::Null)
    } else {
        float(f64::from(f))
    }
}

fn bytes(b: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(b))
}

/// `2026-03-01T12:00:00.5Z`.
fn utc_text(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// `2026-03-01T12:00:00.5`.
fn naive_text(t: chrono::NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.f").to_string()
}

/// A JSON value as quoted in an error: its type and a bounded rendering.
fn describe(v: &Value) -> String {
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let mut text = v.to_string();
    if text.chars().count() > 60 {
        text = text.chars().take(57).collect::<String>() + "...";
    }
    format!("{kind} ({text})")
}

/// Text for a text parameter: a string as is, anything else as its JSON.
fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An error text on one line.
fn one_line(s: &str) -> String {
    if s.contains(['\n', '\r']) {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    } else {
        s.to_string()
    }
}

/// Replaces the URL's password (as written, and percent-decoded) with `***`.
fn mask_password(url: &str, text: &str) -> String {
    let Some(password) = url::Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(str::to_string))
        .filter(|p| !p.is_empty())
    else {
        return text.to_string();
    };
    let decoded = percent_encoding::percent_decode_str(&password)
        .decode_utf8_lossy()
        .into_owned();
    let mut out = text.to_string();
    for secret in [decoded, password] {
        if !secret.is_empty() {
            out = out.replace(&secret, "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_scheme_is_reported_without_the_password() {
        let err = run(
            "oracle://scott:tiger-pw@db/x",
            "select 1",
            &[],
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err,
            "sql: cannot tell the database from the URL oracle://db/x: it should start with \
             postgres://, mysql://, mariadb:// or sqlite://"
        );
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_password(
                "postgres://u:p%40ss-w0rd@h/db",
                "bad p@ss-w0rd and p%40ss-w0rd"
            ),
            "bad *** and ***"
        );
        assert_eq!(mask_password("postgres://u@h/db", "nothing"), "nothing");
    }

    #[test]
    fn json_forms_of_awkward_values() {
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(float(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(float32(1.1), serde_json::json!(1.1));
        assert_eq!(bytes(&[0, 255, 1]), "AP8B");
        assert_eq!(
            describe(&Value::String("x".repeat(100))),
            format!("a string (\"{}...)", "x".repeat(56))
        );
    }

    /// Test helpers shared by the three databases' tests.
    pub(super) mod common {
        use std::time::Duration;

        /// Whether something listens on `addr` (a refused or silent port within 2 s: no).
        pub async fn reachable(addr: &str) -> bool {
            matches!(
                tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
                    .await,
                Ok(Ok(_))
            )
        }

        /// A table name no other test (or test run) uses, dropped from the database at `url`
        /// when the test ends, whether it passed or not.
        pub struct Table {
            pub name: String,
            url: &'static str,
        }

        pub fn table(url: &'static str) -> Table {
            Table {
                name: format!("t_{:016x}", fastrand::u64(..)),
                url,
            }
        }

        impl Drop for Table {
            fn drop(&mut self) {
                let (url, drop) = (self.url, format!("DROP TABLE IF EXISTS {}", self.name));
                // A runtime of its own: the test's may be the one unwinding.
                let dropped = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(super::super::run(url, &drop, &[], Duration::from_secs(10)))
                })
                .join();
                if !matches!(dropped, Ok(Ok(_))) {
                    eprintln!("could not drop {}: {dropped:?}", self.name);
                }
            }
        }

        impl std::fmt::Display for Table {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.name)
            }
        }

        /// Strings that would do harm if they were ever spliced into SQL or a shell.
        pub const HOSTILE: [&str; 3] = [
            "'; DROP TABLE t; --",
            "$(touch pwned)",
            "Robert'); DROP TABLE students;--",
        ];
    }
}
