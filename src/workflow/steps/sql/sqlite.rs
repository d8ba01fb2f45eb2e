//! SQLite through rusqlite, on a blocking thread (`spawn_blocking`): `sqlite:///abs/path` or
//! `sqlite://relative/path` (relative to the process's working directory). The file must exist;
//! it is opened read-write, with a busy timeout, and the statement is interrupted at the deadline.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags};
use serde_json::Value;

use super::{Rows, bytes, describe, float};
use crate::units::format_duration_spec;
use crate::workflow::steps::StepResult;

pub(super) async fn run(url: &str, query: &str, params: &[Value], timeout: Duration) -> StepResult {
    let path = path_of(url)?;
    let bound = params
        .iter()
        .enumerate()
        .map(|(i, v)| to_sqlite(i + 1, v))
        .collect::<Result<Vec<_>, _>>()?;
    let query = query.to_string();
    let deadline = Instant::now() + timeout;
    let task =
        tokio::task::spawn_blocking(move || execute(&path, &query, bound, deadline, timeout));
    match task.await {
        Ok(result) => result.map(Rows::into_outputs),
        Err(e) => Err(format!("SQLite: the statement's thread failed: {e}")),
    }
}

/// The file a `sqlite://` URL names.
fn path_of(url: &str) -> Result<PathBuf, String> {
    let rest = match url.get(..9) {
        Some(prefix) if prefix.eq_ignore_ascii_case("sqlite://") => &url[9..],
        _ => {
            return Err(
                "SQLite: the URL should be sqlite:///absolute/path or sqlite://relative/path"
                    .into(),
            );
        }
    };
    if rest.contains(['?', '#']) {
        return Err(format!(
            "SQLite: {url}: options after `?` are not supported (the file is opened read-write)"
        ));
    }
    if rest.is_empty() {
        return Err("SQLite: the URL names no file (sqlite:///absolute/path)".into());
    }
    Ok(PathBuf::from(rest))
}

fn to_sqlite(n: usize, v: &Value) -> Result<SqlValue, String> {
    Ok(match v {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Number(num) => {
            if let Some(i) = num.as_i64() {
                SqlValue::Integer(i)
            } else if num.is_u64() {
                return Err(format!(
                    "SQLite: parameter {n}: {} does not fit SQLite's 64-bit integers",
                    describe(v)
                ));
            } else {
                // A JSON number that is neither i64 nor u64 is an f64.
                SqlValue::Real(num.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => SqlValue::Text(s.clone()),
        Value::Array(_) | Value::Object(_) => SqlValue::Text(v.to_string()),
    })
}

fn execute(
    path: &std::path::Path,
    query: &str,
    params: Vec<SqlValue>,
    deadline: Instant,
    timeout: Duration,
) -> Result<Rows, String> {
    let shown = path.display();
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| {
        // rusqlite appends the path to SQLite's message; it is said once, before.
        let message = message(&e);
        let message = message.trim_end_matches(&format!(": {shown}")).to_string();
        format!("SQLite: cannot open {shown}: {message}")
    })?;
    let fail = |e: rusqlite::Error| {
        if is_interrupted(&e) {
            format!(
                "SQLite: the statement did not finish within {}",
                format_duration_spec(timeout)
            )
        } else {
            format!("SQLite: {}", message(&e))
        }
    };
    conn.busy_timeout(deadline.saturating_duration_since(Instant::now()))
        .map_err(fail)?;
    // Checked every thousand virtual machine instructions: returning true interrupts.
    conn.progress_handler(1000, Some(move || Instant::now() >= deadline))
        .map_err(fail)?;
    let result = statement(&conn, query, params).map_err(|e| match e {
        Failure::Sql(e) => fail(e),
        Failure::Other(s) => s,
    });
    // Closing flushes nothing that committing did not; an error here changes no outcome.
    let _ = conn.close();
    result
}

enum Failure {
    Sql(rusqlite::Error),
    Other(String),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sql(e)
    }
}

fn statement(conn: &Connection, query: &str, params: Vec<SqlValue>) -> Result<Rows, Failure> {
    let mut stmt = conn.prepare(query)?;
    let expected = stmt.parameter_count();
    if expected != params.len() {
        return Err(Failure::Other(format!(
            "SQLite: the query has {} but {} given",
            crate::units::count(expected, "parameter"),
            crate::units::count(params.len(), "value")
        )));
    }
    for (i, p) in params.into_iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, p)?;
    }
    let mut out = Rows::default();
    if stmt.column_count() == 0 {
        out.row_count = stmt.raw_execute()? as u64;
        return Ok(out);
    }
    let columns: Vec<(String, Declared)> = stmt
        .columns()
        .map(|c| (c.name().to_string(), Declared::of(c.decl_type())))
        .collect();
    let mut rows = stmt.raw_query();
    while let Some(row) = rows.next()? {
        out.row_count += 1;
        if out.has_room() {
            let mut map = serde_json::Map::new();
            for (i, (name, declared)) in columns.iter().enumerate() {
                map.insert(name.clone(), cell(row.get_ref(i)?, *declared));
            }
            out.rows.push(map);
        }
    }
    Ok(out)
}

/// What a column's declared type says beyond SQLite's storage classes.
#[derive(Clone, Copy, PartialEq)]
enum Declared {
    Bool,
    Json,
    Other,
}

impl Declared {
    fn of(decl: Option<&str>) -> Declared {
        match decl.map(str::to_ascii_uppercase).as_deref() {
            Some("BOOL" | "BOOLEAN") => Declared::Bool,
            Some("JSON" | "JSONB") => Declared::Json,
            _ => Declared::Other,
        }
    }
}

fn cell(v: ValueRef<'_>, declared: Declared) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i @ (0 | 1)) if declared == Declared::Bool => Value::Bool(i == 1),
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => float(f),
        ValueRef::Text(t) => {
            let text = String::from_utf8_lossy(t);
            if declared == Declared::Json
                && let Ok(v) = serde_json::from_str(&text)
            {
                return v;
            }
            Value::String(text.into_owned())
        }
        ValueRef::Blob(b) => bytes(b),
    }
}

fn is_interrupted(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::OperationInterrupted)
}

/// SQLite's own message (`no such table: x`), without rusqlite's wrapping.
fn message(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(f, Some(msg)) => {
            if f.code == ErrorCode::DatabaseBusy {
                format!("{msg} (another connection holds the lock)")
            } else {
                msg.clone()
            }
        }
        rusqlite::Error::SqlInputError { msg, offset, .. } => {
            format!("{msg} (at character {offset} of the query)")
        }
        rusqlite::Error::MultipleStatement => {
            "the query holds more than one statement; a step runs one".into()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::run;
    use super::super::tests::common::HOSTILE;
    use super::*;
    use serde_json::json;

    fn db() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        std::fs::File::create(&path).unwrap();
        let url = format!("sqlite://{}", path.display());
        (dir, url)
    }

    const T: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn round_trip_with_bound_parameters_and_types() {
        let (dir, url) = db();
        let out = run(
            &url,
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL, ok BOOLEAN, \
             doc JSON, at TEXT, data BLOB, n INTEGER)",
            &[],
            T,
        )
        .await
        .unwrap();
        assert_eq!(out, json!({"rows": [], "row_count": 0}));

        for (i, name) in HOSTILE.iter().enumerate() {
            let out = run(
                &url,
                "INSERT INTO t (id, name, score, ok, doc, at, n) VALUES (?, ?, ?, ?, ?, ?, ?)",
                &[
                    json!(i + 1),
                    json!(name),
                    json!(2.5),
                    json!(i == 0),
                    json!({"k": [1, "two"]}),
                    json!("2026-03-01T12:00:00Z"),
                    Value::Null,
                ],
                T,
            )
            .await
            .unwrap();
            assert_eq!(out["row_count"], 1);
        }
        run(&url, "UPDATE t SET data = X'00FF01' WHERE id = 1", &[], T)
            .await
            .unwrap();

        let out = run(&url, "SELECT * FROM t ORDER BY id", &[], T)
            .await
            .unwrap();
        assert_eq!(out["row_count"], 3);
        assert_eq!(
            out["rows"][0],
            json!({
                "id": 1, "name": "'; DROP TABLE t; --", "score": 2.5, "ok": true,
                "doc": {"k": [1, "two"]}, "at": "2026-03-01T12:00:00Z", "data": "AP8B", "n": null
            })
        );
        let names: Vec<_> = out["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, HOSTILE);
        assert_eq!(out["rows"][1]["ok"], false);
        // Nothing ran the strings: the table is whole and no file appeared.
        assert!(!dir.path().join("pwned").exists());
        assert!(!std::path::Path::new("pwned").exists());

        // Parameters in a WHERE clause, and an update's affected rows.
        let out = run(
            &url,
            "SELECT id FROM t WHERE name = ?",
            &[json!(HOSTILE[1])],
            T,
        )
        .await
        .unwrap();
        assert_eq!(out, json!({"rows": [{"id": 2}], "row_count": 1}));
        let out = run(
            &url,
            "UPDATE t SET score = score * ? WHERE id >= ?",
            &[json!(2), json!(2)],
            T,
        )
        .await
        .unwrap();
        assert_eq!(out, json!({"rows": [], "row_count": 2}));
        let out = run(&url, "DELETE FROM t WHERE id = 99", &[], T)
            .await
            .unwrap();
        assert_eq!(out["row_count"], 0);
        // RETURNING rows are rows.
        let out = run(
            &url,
            "UPDATE t SET n = 7 WHERE id = 3 RETURNING id, n",
            &[],
            T,
        )
        .await
        .unwrap();
        assert_eq!(out, json!({"rows": [{"id": 3, "n": 7}], "row_count": 1}));
    }

    #[tokio::test]
    async fn at_most_a_thousand_rows_are_kept_all_are_counted() {
        let (_dir, url) = db();
        run(&url, "CREATE TABLE t (x INTEGER)", &[], T)
            .await
            .unwrap();
        let out = run(
            &url,
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) \
             INSERT INTO t SELECT x FROM c",
            &[json!(1500)],
            T,
        )
        .await
        .unwrap();
        assert_eq!(out["row_count"], 1500);
        let out = run(&url, "SELECT x FROM t ORDER BY x", &[], T)
            .await
            .unwrap();
        assert_eq!(out["row_count"], 1500);
        let rows = out["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 1000);
        assert_eq!(rows[999], json!({"x": 1000}));
    }

    #[tokio::test]
    async fn errors_are_sqlites_own() {
        let (_dir, url) = db();
        let err = run(&url, "SELECT * FROM nope", &[], T).await.unwrap_err();
        assert_eq!(err, "SQLite: no such table: nope");
        let err = run(&url, "SELEC 1", &[], T).await.unwrap_err();
        assert!(
            err.starts_with("SQLite: near \"SELEC\": syntax error"),
            "{err}"
        );
        let err = run(&url, "SELECT ?", &[], T).await.unwrap_err();
        assert_eq!(err, "SQLite: the query has 1 parameter but 0 values given");
        let err = run(&url, "SELECT 1; SELECT 2", &[], T).await.unwrap_err();
        assert_eq!(
            err,
            "SQLite: the query holds more than one statement; a step runs one"
        );
        let err = run("sqlite:///nonexistent/dir/x.db", "SELECT 1", &[], T)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            "SQLite: cannot open /nonexistent/dir/x.db: unable to open database file"
        );
        let err = run(&format!("{url}?mode=ro"), "SELECT 1", &[], T)
            .await
            .unwrap_err();
        assert!(err.contains("options after `?` are not supported"), "{err}");
        let err = run(&url, "SELECT ?", &[json!(u64::MAX)], T)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            "SQLite: parameter 1: a number (18446744073709551615) does not fit SQLite's 64-bit integers"
        );
    }

    #[tokio::test]
    async fn a_long_statement_is_interrupted_at_the_timeout() {
        let (_dir, url) = db();
        let started = Instant::now();
        let err = run(
            &url,
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
             SELECT count(*) FROM c",
            &[],
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert_eq!(err, "SQLite: the statement did not finish within 300ms");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn a_locked_database_waits_then_fails_within_the_timeout() {
        let (dir, url) = db();
        run(&url, "CREATE TABLE t (x INTEGER)", &[], T)
            .await
            .unwrap();
        let holder = Connection::open(dir.path().join("app.db")).unwrap();
        holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let started = Instant::now();
        let err = run(
            &url,
            "INSERT INTO t VALUES (1)",
            &[],
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        let took = started.elapsed();
        assert!(err.starts_with("SQLite: database is locked"), "{err}");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "{took:?}"
        );
        holder.execute_batch("ROLLBACK").unwrap();
        run(&url, "INSERT INTO t VALUES (1)", &[], T).await.unwrap();
    }

    #[test]
    fn urls_name_files() {
        assert_eq!(
            path_of("sqlite:///var/db/a.db").unwrap(),
            PathBuf::from("/var/db/a.db")
        );
        assert_eq!(
            path_of("SQLITE://data/a.db").unwrap(),
            PathBuf::from("data/a.db")
        );
        assert!(path_of("sqlite://").is_err());
    }
}
