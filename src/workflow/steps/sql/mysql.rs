//! MySQL and MariaDB through mysql_async (prepared statements: the binary protocol, `?`
//! placeholders). The session's time zone is UTC, so `TIMESTAMP` columns read and write instants
//! in UTC.
//!
//! TLS: off unless asked. mysql_async's own URL options work (`require_ssl=true`, `verify_ca`,
//! `verify_identity`), and so does MySQL's `ssl-mode=DISABLED|PREFERRED|REQUIRED|VERIFY_CA|
//! VERIFY_IDENTITY` (`PREFERRED` connects without TLS here). rustls with ring, webpki's roots.

use std::time::Duration;

use mysql_async::consts::ColumnType;
use mysql_async::prelude::Queryable;
use mysql_async::{Column, Conn, Opts, OptsBuilder, Params, Value as MyValue};
use serde_json::Value;
use tokio::time::{Instant, timeout_at};

use super::{Rows, bytes, float, float32, naive_text, utc_text};
use crate::units::format_duration_spec;
use crate::workflow::steps::{StepResult, redact_url};

/// The character set number of binary strings (`BLOB`, `BINARY`, `VARBINARY`).
const BINARY_CHARSET: u16 = 63;

pub(super) async fn run(
    url: &str,
    query: &str,
    params: &[Value],
    timeout: Duration,
    kind: &'static str,
) -> StepResult {
    let deadline = Instant::now() + timeout;
    let within = format_duration_spec(timeout);
    let shown = redact_url(url);
    let opts = opts(url, kind)?;
    let values: Vec<MyValue> = params.iter().map(to_mysql).collect();

    crate::alert::deliver::install_crypto();
    let mut conn = timeout_at(deadline, Conn::new(opts.clone()))
        .await
        .map_err(|_| format!("{kind}: no connection to {shown} within {within}"))?
        .map_err(|e| format!("{kind}: cannot connect to {shown}: {}", message(&e)))?;
    let id = conn.id();
    let result = timeout_at(deadline, execute(&mut conn, query, values, kind)).await;
    match result {
        Ok(result) => {
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.disconnect()).await;
            result.map(Rows::into_outputs)
        }
        Err(_) => {
            // The server goes on with a statement whose client left: stop it from a second
            // connection, then drop this one.
            drop(conn);
            let kill = async {
                let mut other = Conn::new(opts).await?;
                other.query_drop(format!("KILL QUERY {id}")).await?;
                other.disconnect().await
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), kill).await;
            Err(format!(
                "{kind}: the statement did not finish within {within} (killed)"
            ))
        }
    }
}

/// mysql_async's options from the URL: `mariadb://` read as `mysql://`, `ssl-mode` translated.
fn opts(url: &str, kind: &str) -> Result<Opts, String> {
    let mut u = url::Url::parse(url)
        .map_err(|e| format!("{kind}: {} is not a valid URL: {e}", redact_url(url)))?;
    if u.scheme() != "mysql" && u.set_scheme("mysql").is_err() {
        return Err(format!("{kind}: {} is not a valid URL", redact_url(url)));
    }
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (key, value) in u.query_pairs() {
        if key.eq_ignore_ascii_case("ssl-mode") || key.eq_ignore_ascii_case("sslmode") {
            let tls: &[(&str, &str)] = match value.to_ascii_uppercase().replace('-', "_").as_str() {
                "DISABLED" | "DISABLE" | "PREFERRED" | "PREFER" => &[],
                "REQUIRED" | "REQUIRE" => &[
                    ("require_ssl", "true"),
                    ("verify_ca", "false"),
                    ("verify_identity", "false"),
                ],
                "VERIFY_CA" => &[("require_ssl", "true"), ("verify_identity", "false")],
                "VERIFY_IDENTITY" | "VERIFY_FULL" => &[("require_ssl", "true")],
                _ => {
                    return Err(format!(
                        "{kind}: ssl-mode={value} is not one of DISABLED, PREFERRED, REQUIRED, \
                         VERIFY_CA, VERIFY_IDENTITY"
                    ));
                }
            };
            pairs.extend(tls.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        } else {
            pairs.push((key.into_owned(), value.into_owned()));
        }
    }
    if pairs.is_empty() {
        u.set_query(None);
    } else {
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    let opts =
        Opts::from_url(u.as_str()).map_err(|e| format!("{kind}: {}: {e}", redact_url(url)))?;
    Ok(OptsBuilder::from_opts(opts)
        .init(vec!["SET time_zone = '+00:00'"])
        .into())
}

/// JSON to a MySQL value: see the module documentation of `sql` for the rules.
fn to_mysql(v: &Value) -> MyValue {
    match v {
        Value::Null => MyValue::NULL,
        Value::Bool(b) => MyValue::Int(i64::from(*b)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                MyValue::Int(i)
            } else if let Some(u) = n.as_u64() {
                MyValue::UInt(u)
            } else {
                MyValue::Double(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => match chrono::DateTime::parse_from_rfc3339(s.trim()) {
            Ok(t) => {
                use chrono::{Datelike, Timelike};
                let t = t.naive_utc();
                match u16::try_from(t.year()) {
                    Ok(year) => MyValue::Date(
                        year,
                        t.month() as u8,
                        t.day() as u8,
                        t.hour() as u8,
                        t.minute() as u8,
                        t.second() as u8,
                        t.nanosecond() / 1000,
                    ),
                    Err(_) => MyValue::Bytes(s.clone().into_bytes()),
                }
            }
            Err(_) => MyValue::Bytes(s.clone().into_bytes()),
        },
        Value::Array(_) | Value::Object(_) => MyValue::Bytes(v.to_string().into_bytes()),
    }
}

async fn execute(
    conn: &mut Conn,
    query: &str,
    values: Vec<MyValue>,
    kind: &str,
) -> Result<Rows, String> {
    let fail = |e: mysql_async::Error| format!("{kind}: {}", message(&e));
    let stmt = conn.prep(query).await.map_err(fail)?;
    let expected = usize::from(stmt.num_params());
    if expected != values.len() {
        return Err(format!(
            "{kind}: the query has {} but {} given",
            crate::units::count(expected, "parameter"),
            crate::units::count(values.len(), "value")
        ));
    }
    let params = if values.is_empty() {
        Params::Empty
    } else {
        Params::Positional(values)
    };
    let mut result = conn.exec_iter(&stmt, params).await.map_err(fail)?;
    let columns = result.columns();
    let mut out = Rows::default();
    while let Some(mut row) = result.next().await.map_err(fail)? {
        out.row_count += 1;
        if out.has_room() {
            let mut map = serde_json::Map::new();
            let cols = row.columns();
            for (i, column) in cols.iter().enumerate() {
                let value = row.take::<MyValue, usize>(i).unwrap_or(MyValue::NULL);
                map.insert(column.name_str().into_owned(), cell(value, column));
            }
            out.rows.push(map);
        }
    }
    if columns.as_deref().is_none_or(<[Column]>::is_empty) {
        out.row_count = result.affected_rows();
    }
    result.drop_result().await.map_err(fail)?;
    Ok(out)
}

fn cell(v: MyValue, column: &Column) -> Value {
    let ty = column.column_type();
    match v {
        MyValue::NULL => Value::Null,
        MyValue::Int(i) => i.into(),
        MyValue::UInt(u) => u.into(),
        MyValue::Float(f) => float32(f),
        MyValue::Double(f) => float(f),
        MyValue::Date(y, mo, d, h, mi, s, us) => {
            let date = chrono::NaiveDate::from_ymd_opt(i32::from(y), u32::from(mo), u32::from(d));
            if ty == ColumnType::MYSQL_TYPE_DATE {
                return Value::String(match date {
                    Some(date) => date.format("%Y-%m-%d").to_string(),
                    None => format!("{y:04}-{mo:02}-{d:02}"),
                });
            }
            let t = date.and_then(|date| {
                date.and_hms_micro_opt(u32::from(h), u32::from(mi), u32::from(s), us)
            });
            Value::String(match t {
                Some(t) if ty == ColumnType::MYSQL_TYPE_TIMESTAMP => utc_text(t.and_utc()),
                Some(t) => naive_text(t),
                // A zero date (`0000-00-00 00:00:00`) is no date chrono knows.
                None => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}"),
            })
        }
        MyValue::Time(negative, days, h, mi, s, us) => {
            let hours = u64::from(days) * 24 + u64::from(h);
            let sign = if negative { "-" } else { "" };
            let frac = if us == 0 {
                String::new()
            } else {
                format!(".{us:06}")
            };
            Value::String(format!("{sign}{hours:02}:{mi:02}:{s:02}{frac}"))
        }
        MyValue::Bytes(b) => match ty {
            ColumnType::MYSQL_TYPE_JSON => serde_json::from_slice(&b)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&b).into_owned())),
            ColumnType::MYSQL_TYPE_BIT if b.len() <= 8 => {
                Value::from(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
            }
            ColumnType::MYSQL_TYPE_DECIMAL | ColumnType::MYSQL_TYPE_NEWDECIMAL => {
                Value::String(String::from_utf8_lossy(&b).into_owned())
            }
            _ if column.character_set() == BINARY_CHARSET => bytes(&b),
            _ => Value::String(String::from_utf8_lossy(&b).into_owned()),
        },
    }
}

/// The server's message with its codes; else what went wrong on the way.
fn message(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => {
            format!("{} (error {}, SQLSTATE {})", s.message, s.code, s.state)
        }
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => io.to_string(),
        mysql_async::Error::Io(other) => other.to_string(),
        mysql_async::Error::Driver(d) => d.to_string(),
        mysql_async::Error::Url(u) => u.to_string(),
        other => crate::alert::deliver::chain(other),
    }
}

#[cfg(test)]
mod tests {
    use super::super::run;
    use super::super::tests::common::{HOSTILE, reachable, table};
    use super::*;
    use serde_json::json;

    const URL: &str = "mysql://root@127.0.0.1:3306/test";
    const T: Duration = Duration::from_secs(20);

    async fn server() -> bool {
        if reachable("127.0.0.1:3306").await {
            true
        } else {
            println!("skipped: no MariaDB on 127.0.0.1:3306");
            false
        }
    }

    async fn sql(query: &str, params: &[Value]) -> Value {
        run(URL, query, params, T)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"))
    }

    #[tokio::test]
    async fn round_trip_with_bound_parameters_and_types() {
        if !server().await {
            return;
        }
        let t = table(URL);
        sql(
            &format!(
                "CREATE TABLE {t} (id INT PRIMARY KEY, big BIGINT UNSIGNED, name TEXT, \
                 code VARCHAR(40), score DOUBLE, ratio FLOAT, price DECIMAL(12,3), ok BOOLEAN, \
                 doc JSON, at TIMESTAMP(3) NULL, local DATETIME(6), day DATE, dur TIME, \
                 data VARBINARY(16), bits BIT(8))"
            ),
            &[],
        )
        .await;
        let insert = format!(
            "INSERT INTO {t} (id, big, name, code, score, ratio, price, ok, doc, at, local, day, \
             dur, bits) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, b'101')"
        );
        for (i, name) in HOSTILE.iter().enumerate() {
            let out = sql(
                &insert,
                &[
                    json!(i + 1),
                    json!(u64::MAX),
                    json!(name),
                    json!(42),
                    json!(2.5),
                    json!(1.1),
                    json!("12345.678"),
                    json!(i == 0),
                    json!({"k": [1, "two"]}),
                    json!("2026-03-01T13:00:00.25+01:00"),
                    json!("2026-03-01T12:00:00.000001Z"),
                    json!("2026-03-01"),
                    json!("-25:30:00"),
                ],
            )
            .await;
            assert_eq!(out, json!({"rows": [], "row_count": 1}));
        }
        sql(
            &format!("INSERT INTO {t} (id, name, ok, doc, at) VALUES (?, ?, ?, ?, ?)"),
            &[
                json!(10),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
            ],
        )
        .await;
        sql(
            &format!("UPDATE {t} SET data = X'00FF01' WHERE id = 1"),
            &[],
        )
        .await;
        let out = sql(&format!("SELECT * FROM {t} ORDER BY id"), &[]).await;
        assert_eq!(out["row_count"], 4);
        assert_eq!(
            out["rows"][0],
            json!({
                "id": 1, "big": u64::MAX, "name": "'; DROP TABLE t; --", "code": "42",
                "score": 2.5, "ratio": 1.1, "price": "12345.678",
                // BOOLEAN is TINYINT(1): it comes back as stored.
                "ok": 1, "doc": out["rows"][0]["doc"],
                "at": "2026-03-01T12:00:00.250Z", "local": "2026-03-01T12:00:00.000001",
                "day": "2026-03-01", "dur": "-25:30:00", "data": "AP8B", "bits": 5
            })
        );
        let names: Vec<_> = out["rows"].as_array().unwrap()[..3]
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, HOSTILE);
        assert_eq!(out["rows"][1]["ok"], 0);
        // MySQL's JSON type comes back as JSON; MariaDB's is LONGTEXT, a string.
        let doc = &out["rows"][0]["doc"];
        let parsed = match doc {
            Value::String(s) => serde_json::from_str(s).unwrap(),
            other => other.clone(),
        };
        assert_eq!(parsed, json!({"k": [1, "two"]}), "{doc}");
        for column in ["name", "ok", "doc", "at", "data", "score"] {
            assert_eq!(out["rows"][3][column], Value::Null, "{column}");
        }

        let out = sql(
            &format!("SELECT id FROM {t} WHERE name = ?"),
            &[json!(HOSTILE[1])],
        )
        .await;
        assert_eq!(out, json!({"rows": [{"id": 2}], "row_count": 1}));
        let out = sql(
            &format!("UPDATE {t} SET score = score * ? WHERE id >= ?"),
            &[json!(2), json!(2)],
        )
        .await;
        assert_eq!(out, json!({"rows": [], "row_count": 2}));
        let out = sql(&format!("DELETE FROM {t} WHERE id = ?"), &[json!("3")]).await;
        assert_eq!(out, json!({"rows": [], "row_count": 1}));
        let out = sql(
            "SELECT CAST(? AS SIGNED) AS a, ? AS b, ? IS NULL AS c, JSON_EXTRACT(?, '$.x') AS d",
            &[json!("-7"), json!(true), Value::Null, json!({"x": [1]})],
        )
        .await;
        assert_eq!(out["rows"][0]["a"], -7);
        assert_eq!(out["rows"][0]["b"], 1);
        assert_eq!(out["rows"][0]["c"], 1);
        assert!(
            out["rows"][0]["d"] == json!([1]) || out["rows"][0]["d"] == "[1]",
            "{out}"
        );
    }

    #[tokio::test]
    async fn at_most_a_thousand_rows_are_kept_all_are_counted() {
        if !server().await {
            return;
        }
        let t = table(URL);
        sql(&format!("CREATE TABLE {t} (x INT)"), &[]).await;
        // 1,500 rows in one statement, every value a bound parameter.
        let marks = vec!["(?)"; 1500].join(", ");
        let values: Vec<Value> = (1..=1500).map(|x| json!(x)).collect();
        let out = sql(&format!("INSERT INTO {t} (x) VALUES {marks}"), &values).await;
        assert_eq!(out["row_count"], 1500);
        let out = sql(&format!("SELECT x FROM {t} ORDER BY x"), &[]).await;
        assert_eq!(out["row_count"], 1500);
        let rows = out["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 1000);
        assert_eq!(rows[999], json!({"x": 1000}));
    }

    #[tokio::test]
    async fn errors_name_the_database_and_hide_the_password() {
        if !server().await {
            return;
        }
        let err = run(URL, "SELECT * FROM no_such_table_here", &[], T)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            "MySQL: Table 'test.no_such_table_here' doesn't exist (error 1146, SQLSTATE 42S02)"
        );
        let err = run("mariadb://root@127.0.0.1:3306/test", "SELECT ?", &[], T)
            .await
            .unwrap_err();
        assert_eq!(err, "MariaDB: the query has 1 parameter but 0 values given");
        let err = run(
            "mariadb://nobody_here:pw-s3cret@127.0.0.1:3306/test",
            "SELECT 1",
            &[],
            T,
        )
        .await
        .unwrap_err();
        assert!(
            err.starts_with(
                "MariaDB: cannot connect to mariadb://127.0.0.1:3306/test: Access denied"
            ),
            "{err}"
        );
        assert!(!err.contains("pw-s3cret"), "{err}");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = run(
            &format!("mysql://u:pw-s3cret@127.0.0.1:{port}/db"),
            "SELECT 1",
            &[],
            T,
        )
        .await
        .unwrap_err();
        assert_eq!(
            err,
            format!(
                "MySQL: cannot connect to mysql://127.0.0.1:{port}/db: Connection refused (os error 111)"
            )
        );
        let err = run(&format!("{URL}?ssl-mode=sometimes"), "SELECT 1", &[], T)
            .await
            .unwrap_err();
        assert!(
            err.starts_with("MySQL: ssl-mode=sometimes is not one of"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_long_statement_is_killed_at_the_timeout() {
        if !server().await {
            return;
        }
        let started = std::time::Instant::now();
        let err = run(URL, "SELECT SLEEP(30)", &[], Duration::from_millis(500))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            "MySQL: the statement did not finish within 500ms (killed)"
        );
        assert!(started.elapsed() < Duration::from_secs(4));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let out = sql(
            "SELECT COUNT(*) AS n FROM information_schema.processlist \
             WHERE info = 'SELECT SLEEP(30)'",
            &[],
        )
        .await;
        assert_eq!(out["rows"][0]["n"], 0);
    }

    #[test]
    fn ssl_mode_is_translated() {
        let o = opts("mariadb://u:p@h:3307/db?ssl-mode=VERIFY_CA", "MariaDB").unwrap();
        assert_eq!(o.ip_or_hostname(), "h");
        assert_eq!(o.tcp_port(), 3307);
        let ssl = o.ssl_opts().expect("TLS required");
        assert!(ssl.skip_domain_validation());
        assert!(!ssl.accept_invalid_certs());
        let o = opts("mysql://h/db?ssl-mode=REQUIRED", "MySQL").unwrap();
        assert!(o.ssl_opts().unwrap().accept_invalid_certs());
        let o = opts("mysql://h/db?ssl-mode=DISABLED", "MySQL").unwrap();
        assert!(o.ssl_opts().is_none());
    }
}
