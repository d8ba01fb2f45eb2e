//! PostgreSQL through tokio-postgres. The statement is prepared first, so each parameter is
//! converted to the type the server inferred for it; results are read in the binary format and
//! converted by column type.
//!
//! TLS follows libpq's `sslmode`: `disable`, `allow`, `prefer` or none: plain TCP; `require`:
//! encrypted, the certificate not checked (as libpq does without a root certificate);
//! `verify-ca`: the chain must lead to a trusted root; `verify-full`: that, and the certificate
//! must name the host. Trusted roots: the PEM file `sslrootcert=PATH`, else the system's
//! (webpki's bundle when the system has none). rustls with ring only.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use futures_util::StreamExt;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde_json::Value;
use tokio::time::{Instant, timeout_at};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::types::{FromSql, IsNull, Kind, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Config, NoTls, Socket};

use super::{Rows, as_text, bytes as base64_bytes, describe, float, float32, naive_text, utc_text};
use crate::units::format_duration_spec;
use crate::workflow::steps::{StepResult, redact_url};

type BoxError = Box<dyn std::error::Error + Sync + Send>;

pub(super) async fn run(url: &str, query: &str, params: &[Value], timeout: Duration) -> StepResult {
    let deadline = Instant::now() + timeout;
    let target = parse(url)?;
    let job = Job {
        query,
        params,
        timeout,
        deadline,
        shown: redact_url(url),
    };
    let rows = match target.tls {
        TlsMode::Off => job.session(target.config, NoTls).await?,
        mode => {
            let config = tls_config(mode, target.root_cert.as_deref()).await?;
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config);
            job.session(target.config, tls).await?
        }
    };
    Ok(rows.into_outputs())
}

/// Connects to `url` for the store (TLS per its `sslmode`, as for a `sql` step). The
/// connection's I/O runs as a task on the current runtime until the client is dropped or the
/// server goes away; notifications (`LISTEN`) are passed to `notices`.
pub(crate) async fn connect_store(
    url: &str,
    application: &str,
    notices: Option<tokio::sync::mpsc::UnboundedSender<tokio_postgres::Notification>>,
) -> Result<Client, String> {
    let mut target = parse(url)?;
    target.config.application_name(application);
    target.config.connect_timeout(Duration::from_secs(10));
    target.config.keepalives_idle(Duration::from_secs(30));
    let shown = redact_url(url);
    match target.tls {
        TlsMode::Off => connect_with(target.config, NoTls, &shown, notices).await,
        mode => {
            let config = tls_config(mode, target.root_cert.as_deref()).await?;
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config);
            connect_with(target.config, tls, &shown, notices).await
        }
    }
}

async fn connect_with<T>(
    config: Config,
    tls: T,
    shown: &str,
    notices: Option<tokio::sync::mpsc::UnboundedSender<tokio_postgres::Notification>>,
) -> Result<Client, String>
where
    T: MakeTlsConnect<Socket> + Send + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, mut connection) = config
        .connect(tls)
        .await
        .map_err(|e| format!("PostgreSQL: cannot connect to {shown}: {}", pg_error(&e)))?;
    tokio::spawn(async move {
        while let Some(message) =
            futures_util::future::poll_fn(|cx| connection.poll_message(cx)).await
        {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if let Some(to) = &notices
                        && to.send(n).is_err()
                    {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "PostgreSQL connection ended");
                    break;
                }
            }
        }
    });
    Ok(client)
}

/// A PostgreSQL error with the server's message, code, detail and hint.
pub(crate) fn describe_error(e: &tokio_postgres::Error) -> String {
    pg_error(e)
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum TlsMode {
    Off,
    Require,
    VerifyCa,
    VerifyFull,
}

struct Target {
    config: Config,
    tls: TlsMode,
    root_cert: Option<String>,
}

/// tokio-postgres knows `sslmode` only up to `require`: the TLS options are taken out of the URL
/// here and the rest is left to it.
fn parse(url: &str) -> Result<Target, String> {
    let mut u = url::Url::parse(url)
        .map_err(|e| format!("PostgreSQL: {} is not a valid URL: {e}", redact_url(url)))?;
    let mut tls = TlsMode::Off;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for (key, value) in u.query_pairs() {
        match key.as_ref() {
            "sslmode" => {
                tls = match value.as_ref() {
                    "disable" | "allow" | "prefer" => TlsMode::Off,
                    "require" => TlsMode::Require,
                    "verify-ca" => TlsMode::VerifyCa,
                    "verify-full" => TlsMode::VerifyFull,
                    other => {
                        return Err(format!(
                            "PostgreSQL: sslmode={other} is not one of disable, allow, prefer, \
                             require, verify-ca, verify-full"
                        ));
                    }
                }
            }
            "sslrootcert" => root_cert = Some(value.into_owned()),
            "sslcert" | "sslkey" | "sslpassword" => {
                return Err(format!(
                    "PostgreSQL: {key}: client certificates are not supported"
                ));
            }
            _ => kept.push((key.into_owned(), value.into_owned())),
        }
    }
    if kept.is_empty() {
        u.set_query(None);
    } else {
        u.query_pairs_mut().clear().extend_pairs(kept);
        // Form encoding writes a space as `+` (a `+` itself as `%2B`); tokio-postgres decodes
        // only `%20`, and `options=-c name=value` needs its space.
        let query = u.query().map(|q| q.replace('+', "%20"));
        u.set_query(query.as_deref());
    }
    let config = u
        .as_str()
        .parse::<Config>()
        .map_err(|e| format!("PostgreSQL: {}: {e}", redact_url(url)))?;
    Ok(Target {
        config,
        tls,
        root_cert,
    })
}

fn ring() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

async fn tls_config(mode: TlsMode, root_cert: Option<&str>) -> Result<ClientConfig, String> {
    crate::alert::deliver::install_crypto();
    let provider = ring();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("PostgreSQL: TLS setup: {e}"))?;
    if mode == TlsMode::Require {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth());
    }
    let roots = roots(root_cert).await?;
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
        .build()
        .map_err(|e| format!("PostgreSQL: TLS setup: {e}"))?;
    Ok(if mode == TlsMode::VerifyCa {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyName(verifier)))
            .with_no_client_auth()
    } else {
        builder.with_webpki_verifier(verifier).with_no_client_auth()
    })
}

/// The roots `sslrootcert` names (a PEM file, or `system`), else the system's.
async fn roots(root_cert: Option<&str>) -> Result<Arc<RootCertStore>, String> {
    match root_cert {
        Some(path) if path != "system" => {
            let pem = tokio::fs::read(path)
                .await
                .map_err(|e| format!("PostgreSQL: cannot read sslrootcert {path}: {e}"))?;
            let mut store = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("PostgreSQL: sslrootcert {path}: {e}"))?;
                store
                    .add(cert)
                    .map_err(|e| format!("PostgreSQL: sslrootcert {path}: {e}"))?;
            }
            if store.is_empty() {
                return Err(format!(
                    "PostgreSQL: sslrootcert {path} holds no PEM certificate"
                ));
            }
            Ok(Arc::new(store))
        }
        _ => {
            static SYSTEM: tokio::sync::OnceCell<Arc<RootCertStore>> =
                tokio::sync::OnceCell::const_new();
            let store = SYSTEM
                .get_or_init(|| async {
                    // Reads files: off the runtime's thread.
                    let loaded =
                        tokio::task::spawn_blocking(rustls_native_certs::load_native_certs)
                            .await
                            .map(|r| r.certs)
                            .unwrap_or_default();
                    let mut store = RootCertStore::empty();
                    store.add_parsable_certificates(loaded);
                    if store.is_empty() {
                        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                    }
                    Arc::new(store)
                })
                .await;
            Ok(store.clone())
        }
    }
}

/// `sslmode=require`: any certificate, but the handshake's signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must lead to a trusted root; the name it is for is not checked.
/// (webpki checks the chain before the name, so a name mismatch means the chain was good.)
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

struct Job<'a> {
    query: &'a str,
    params: &'a [Value],
    timeout: Duration,
    deadline: Instant,
    /// The URL as shown in errors.
    shown: String,
}

impl Job<'_> {
    /// Connects, runs the statement, and closes. At the deadline, a statement still running is
    /// cancelled on the server (a cancel request on a connection of its own).
    async fn session<T>(&self, mut config: Config, tls: T) -> Result<Rows, String>
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let within = format_duration_spec(self.timeout);
        let left = self.deadline.saturating_duration_since(Instant::now());
        config.connect_timeout(left.max(Duration::from_millis(1)));
        let (client, connection) = timeout_at(self.deadline, config.connect(tls.clone()))
            .await
            .map_err(|_| {
                format!(
                    "PostgreSQL: no connection to {} within {within}",
                    self.shown
                )
            })?
            .map_err(|e| {
                format!(
                    "PostgreSQL: cannot connect to {}: {}",
                    self.shown,
                    pg_error(&e)
                )
            })?;
        // The connection does the socket's I/O; it ends once the client is dropped.
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        let cancel = client.cancel_token();
        let result = match timeout_at(self.deadline, self.execute(&client)).await {
            Ok(result) => result,
            Err(_) => {
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), cancel.cancel_query(tls)).await;
                Err(format!(
                    "PostgreSQL: the statement did not finish within {within} (cancelled)"
                ))
            }
        };
        drop(client);
        let _ = tokio::time::timeout(Duration::from_secs(2), connection).await;
        result
    }

    async fn execute(&self, client: &Client) -> Result<Rows, String> {
        let fail = |e: tokio_postgres::Error| format!("PostgreSQL: {}", pg_error(&e));
        let stmt = client.prepare(self.query).await.map_err(fail)?;
        let types = stmt.params();
        if types.len() != self.params.len() {
            return Err(format!(
                "PostgreSQL: the query has {} but {} given",
                crate::units::count(types.len(), "parameter"),
                crate::units::count(self.params.len(), "value")
            ));
        }
        let bound = self
            .params
            .iter()
            .zip(types)
            .enumerate()
            .map(|(i, (value, ty))| {
                Param::from_json(value, ty).map_err(|why| {
                    format!(
                        "PostgreSQL: parameter ${} has type {}; {} {why}",
                        i + 1,
                        type_name(ty),
                        describe(value)
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let stream = client.query_raw(&stmt, bound.iter()).await.map_err(fail)?;
        let mut stream = std::pin::pin!(stream);
        let mut out = Rows::default();
        while let Some(row) = stream.next().await {
            let row = row.map_err(fail)?;
            out.row_count += 1;
            if out.has_room() {
                let mut map = serde_json::Map::new();
                for (i, column) in row.columns().iter().enumerate() {
                    let value = row
                        .try_get::<_, Option<Cell>>(i)
                        .map_err(|e| {
                            format!(
                                "PostgreSQL: column {} ({}): {}",
                                column.name(),
                                type_name(column.type_()),
                                innermost(&e)
                            )
                        })?
                        .map_or(Value::Null, |c| c.0);
                    map.insert(column.name().to_string(), value);
                }
                out.rows.push(map);
            }
        }
        if stmt.columns().is_empty() {
            out.row_count = stream.rows_affected().unwrap_or(0);
        }
        Ok(out)
    }
}

/// The server's message with its SQLSTATE, detail and hint; else the client's error chain.
fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                s.push_str(&format!("; detail: {detail}"));
            }
            if let Some(hint) = db.hint() {
                s.push_str(&format!("; hint: {hint}"));
            }
            s
        }
        None => crate::alert::deliver::chain(e),
    }
}

fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(inner) = cur.source() {
        cur = inner;
    }
    cur.to_string()
}

/// `int4`, `text[]`, `myschema.mood`.
fn type_name(ty: &Type) -> String {
    match ty.kind() {
        Kind::Array(member) => format!("{}[]", type_name(member)),
        _ if ty.schema() == "pg_catalog" || ty.schema() == "public" => ty.name().to_string(),
        _ => format!("{}.{}", ty.schema(), ty.name()),
    }
}

/// A parameter, converted for the type the server inferred.
#[derive(Debug)]
enum Param {
    Null,
    Bool(bool),
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Text(String),
    Json(Value),
    Timestamptz(DateTime<Utc>),
    Timestamp(NaiveDateTime),
    Date(NaiveDate),
    /// Sent in PostgreSQL's text format, parsed by the server's input function for the type
    /// (`numeric`, `uuid`, enums and other types without a binary encoding here).
    Textual(String),
    Array(Vec<Param>),
}

impl Param {
    /// Err: why the value does not fit (the caller names the parameter and its type).
    fn from_json(v: &Value, ty: &Type) -> Result<Param, String> {
        if v.is_null() {
            return Ok(Param::Null);
        }
        let integer = |v: &Value| -> Option<i64> {
            match v {
                Value::Number(n) => n.as_i64().or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                        .map(|f| f as i64)
                }),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            }
        };
        let number = |v: &Value| -> Option<f64> {
            match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            }
        };
        let text = |v: &Value| -> Option<String> {
            match v {
                Value::String(s) => Some(s.clone()),
                _ => None,
            }
        };
        let out_of_range = || format!("is out of range for {}", type_name(ty));
        Ok(match *ty {
            Type::BOOL => match v {
                Value::Bool(b) => Param::Bool(*b),
                Value::String(s) if s.eq_ignore_ascii_case("true") => Param::Bool(true),
                Value::String(s) if s.eq_ignore_ascii_case("false") => Param::Bool(false),
                _ => return Err("is not a boolean".into()),
            },
            Type::INT2 | Type::INT4 | Type::INT8 => {
                let i = integer(v).ok_or("is not an integer")?;
                match *ty {
                    Type::INT2 => Param::I16(i16::try_from(i).map_err(|_| out_of_range())?),
                    Type::INT4 => Param::I32(i32::try_from(i).map_err(|_| out_of_range())?),
                    _ => Param::I64(i),
                }
            }
            Type::FLOAT4 => Param::F32(number(v).ok_or("is not a number")? as f32),
            Type::FLOAT8 => Param::F64(number(v).ok_or("is not a number")?),
            Type::NUMERIC => match v {
                Value::Number(n) => Param::Textual(n.to_string()),
                Value::String(s) if s.trim().parse::<f64>().is_ok() => {
                    Param::Textual(s.trim().to_string())
                }
                _ => return Err("is not a number".into()),
            },
            Type::JSON | Type::JSONB => Param::Json(v.clone()),
            Type::TIMESTAMPTZ => {
                let s = text(v).ok_or("is not an RFC 3339 string")?;
                let t = DateTime::parse_from_rfc3339(s.trim())
                    .map_err(|e| format!("is not an RFC 3339 instant ({e})"))?;
                Param::Timestamptz(t.to_utc())
            }
            Type::TIMESTAMP => {
                let s = text(v).ok_or("is not a date and time string")?;
                let s = s.trim();
                match DateTime::parse_from_rfc3339(s) {
                    Ok(t) => Param::Timestamp(t.naive_utc()),
                    Err(_) => Param::Timestamp(
                        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                            .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
                            .map_err(|_| {
                                "is neither RFC 3339 nor YYYY-MM-DDTHH:MM:SS".to_string()
                            })?,
                    ),
                }
            }
            Type::DATE => {
                let s = text(v).ok_or("is not a date string")?;
                Param::Date(
                    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                        .map_err(|_| "is not a date (YYYY-MM-DD)".to_string())?,
                )
            }
            Type::UUID => {
                let s = text(v).ok_or("is not a UUID string")?;
                let hex = s.chars().filter(char::is_ascii_hexdigit).count();
                if hex != 32
                    || !s
                        .trim()
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() || "-{}".contains(c))
                {
                    return Err("is not a UUID".into());
                }
                Param::Textual(s.trim().to_string())
            }
            _ if <String as ToSql>::accepts(ty) => Param::Text(as_text(v)),
            _ => match (ty.kind(), v) {
                (Kind::Array(member), Value::Array(items)) => {
                    let items = items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| {
                            let p = Param::from_json(item, member)
                                .map_err(|why| format!("has element {} that {why}", i + 1))?;
                            if matches!(p, Param::Textual(_)) {
                                return Err(format!(
                                    "cannot be bound: arrays of {} are not supported",
                                    type_name(member)
                                ));
                            }
                            Ok(p)
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Param::Array(items)
                }
                (Kind::Array(_), _) => return Err("is not an array".into()),
                (Kind::Domain(inner), _) => Param::from_json(v, inner)?,
                (_, Value::Array(_) | Value::Object(_)) => {
                    return Err("cannot be bound: write the value as a string".into());
                }
                (_, v) => Param::Textual(as_text(v)),
            },
        })
    }
}

impl ToSql for Param {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Param::Null => Ok(IsNull::Yes),
            Param::Bool(v) => v.to_sql(ty, out),
            Param::I16(v) => v.to_sql(ty, out),
            Param::I32(v) => v.to_sql(ty, out),
            Param::I64(v) => v.to_sql(ty, out),
            Param::F32(v) => v.to_sql(ty, out),
            Param::F64(v) => v.to_sql(ty, out),
            Param::Text(v) => v.to_sql(ty, out),
            Param::Json(v) => v.to_sql(ty, out),
            Param::Timestamptz(v) => v.to_sql(ty, out),
            Param::Timestamp(v) => v.to_sql(ty, out),
            Param::Date(v) => v.to_sql(ty, out),
            Param::Textual(v) => {
                out.extend_from_slice(v.as_bytes());
                Ok(IsNull::No)
            }
            Param::Array(v) => v.to_sql(ty, out),
        }
    }

    /// Each value was converted for its parameter's type (`from_json`), so every type is
    /// accepted here.
    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> tokio_postgres::types::Format {
        match self {
            Param::Textual(_) => tokio_postgres::types::Format::Text,
            _ => tokio_postgres::types::Format::Binary,
        }
    }

    to_sql_checked!();
}

/// A column value as JSON.
struct Cell(Value);

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        decode(ty, raw).map(Cell)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn decode(ty: &Type, raw: &[u8]) -> Result<Value, BoxError> {
    Ok(match *ty {
        Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
        Type::INT2 => i16::from_sql(ty, raw)?.into(),
        Type::INT4 => i32::from_sql(ty, raw)?.into(),
        Type::INT8 => i64::from_sql(ty, raw)?.into(),
        Type::OID => u32::from_sql(ty, raw)?.into(),
        Type::CHAR => Value::String(char::from(i8::from_sql(ty, raw)? as u8).to_string()),
        Type::FLOAT4 => float32(f32::from_sql(ty, raw)?),
        Type::FLOAT8 => float(f64::from_sql(ty, raw)?),
        Type::NUMERIC => Value::String(numeric_text(raw)?),
        Type::JSON | Type::JSONB => Value::from_sql(ty, raw)?,
        Type::TIMESTAMPTZ => Value::String(timestamp(raw, true)?),
        Type::TIMESTAMP => Value::String(timestamp(raw, false)?),
        Type::DATE => Value::String(date(raw)?),
        Type::TIME => {
            let micros = i64::from_sql(ty, raw)?;
            let t = NaiveTime::MIN + chrono::Duration::microseconds(micros);
            Value::String(t.format("%H:%M:%S%.f").to_string())
        }
        Type::UUID => {
            let b: [u8; 16] = raw.try_into().map_err(|_| "a uuid is 16 bytes")?;
            let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
            Value::String(format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            ))
        }
        Type::BYTEA => base64_bytes(raw),
        Type::XML => Value::String(String::from_utf8_lossy(raw).into_owned()),
        _ if <&str as FromSql>::accepts(ty) => Value::String(<&str>::from_sql(ty, raw)?.into()),
        _ => match ty.kind() {
            Kind::Enum(_) => Value::String(String::from_utf8_lossy(raw).into_owned()),
            Kind::Domain(inner) => decode(inner, raw)?,
            Kind::Array(_) => {
                let items: Vec<Option<Cell>> = FromSql::from_sql(ty, raw)?;
                Value::Array(
                    items
                        .into_iter()
                        .map(|c| c.map_or(Value::Null, |c| c.0))
                        .collect(),
                )
            }
            _ => {
                return Err(
                    "no JSON form for this type here; cast it in the query (e.g. `x::text`)".into(),
                );
            }
        },
    })
}

/// Microseconds since 2000-01-01, as RFC 3339 (UTC, `Z`) or without a zone; `infinity` kept.
fn timestamp(raw: &[u8], utc: bool) -> Result<String, BoxError> {
    let micros = i64::from_be_bytes(raw.try_into().map_err(|_| "a timestamp is 8 bytes")?);
    match micros {
        i64::MAX => return Ok("infinity".into()),
        i64::MIN => return Ok("-infinity".into()),
        _ => {}
    }
    let epoch = NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .ok_or("no epoch")?;
    let t = epoch
        .checked_add_signed(chrono::Duration::microseconds(micros))
        .ok_or("timestamp out of range")?;
    Ok(if utc {
        utc_text(t.and_utc())
    } else {
        naive_text(t)
    })
}

/// Days since 2000-01-01 as `YYYY-MM-DD`; `infinity` kept.
fn date(raw: &[u8]) -> Result<String, BoxError> {
    let days = i32::from_be_bytes(raw.try_into().map_err(|_| "a date is 4 bytes")?);
    match days {
        i32::MAX => return Ok("infinity".into()),
        i32::MIN => return Ok("-infinity".into()),
        _ => {}
    }
    let d = NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|e| e.checked_add_signed(chrono::Duration::days(i64::from(days))))
        .ok_or("date out of range")?;
    Ok(d.format("%Y-%m-%d").to_string())
}

/// PostgreSQL's binary `numeric` (base-10000 digits, a weight, a sign, a display scale) as its
/// exact decimal text.
fn numeric_text(raw: &[u8]) -> Result<String, BoxError> {
    let word = |i: usize| -> Result<u16, BoxError> {
        raw.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "a numeric value was cut short".into())
    };
    let ndigits = usize::from(word(0)?);
    let weight = i32::from(word(2)? as i16);
    let sign = word(4)?;
    let dscale = usize::from(word(6)?);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => return Err("a numeric value with an unknown sign".into()),
    }
    let digits = (0..ndigits)
        .map(|i| word(8 + 2 * i))
        .collect::<Result<Vec<_>, _>>()?;
    if digits.iter().any(|d| *d > 9999) {
        return Err("a numeric value with a digit over 9999".into());
    }
    let digit = |pos: i32| -> u16 {
        usize::try_from(pos)
            .ok()
            .and_then(|p| digits.get(p).copied())
            .unwrap_or(0)
    };
    let mut s = String::new();
    if sign == 0x4000 {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        s.push_str(&digit(0).to_string());
        for pos in 1..=weight {
            s.push_str(&format!("{:04}", digit(pos)));
        }
    }
    if dscale > 0 {
        let mut frac = String::new();
        let mut pos = weight + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", digit(pos)));
            pos += 1;
        }
        frac.truncate(dscale);
        s.push('.');
        s.push_str(&frac);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::super::run;
    use super::super::tests::common::{HOSTILE, reachable, table};
    use super::*;
    use serde_json::json;

    const URL: &str = "postgres://postgres@127.0.0.1:5432/test";
    const T: Duration = Duration::from_secs(20);

    async fn server() -> bool {
        if reachable("127.0.0.1:5432").await {
            true
        } else {
            println!("skipped: no PostgreSQL on 127.0.0.1:5432");
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
                "CREATE TABLE {t} (id int4 PRIMARY KEY, small int2, big int8, name text, \
                 code varchar(40), score float8, ratio float4, price numeric(12,3), ok bool, \
                 doc jsonb, raw json, at timestamptz, local timestamp, day date, \
                 uid uuid, data bytea, tags text[], nums int8[])"
            ),
            &[],
        )
        .await;
        let insert = format!(
            "INSERT INTO {t} (id, small, big, name, code, score, ratio, price, ok, doc, raw, at, \
             local, day, uid, tags, nums) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
        );
        for (i, name) in HOSTILE.iter().enumerate() {
            let out = sql(
                &insert,
                &[
                    json!(i + 1),
                    json!("7"),
                    json!(9_007_199_254_740_993_i64),
                    json!(name),
                    json!(42),
                    json!(2.5),
                    json!(1.1),
                    json!("12345.678"),
                    json!(i == 0),
                    json!({"k": [1, "two"], "n": null}),
                    json!([1, 2]),
                    json!("2026-03-01T13:00:00.25+01:00"),
                    json!("2026-03-01T12:00:00"),
                    json!("2026-03-01"),
                    json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
                    json!(["x", "y'z", null]),
                    json!([1, -2]),
                ],
            )
            .await;
            assert_eq!(out, json!({"rows": [], "row_count": 1}));
        }
        sql(
            &format!("INSERT INTO {t} (id, name, ok, doc, at) VALUES ($1, $2, $3, $4, $5)"),
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
            &format!("UPDATE {t} SET data = '\\x00ff01'::bytea WHERE id = 1"),
            &[],
        )
        .await;
        let out = sql(&format!("SELECT * FROM {t} ORDER BY id"), &[]).await;
        assert_eq!(out["row_count"], 4);
        assert_eq!(
            out["rows"][0],
            json!({
                "id": 1, "small": 7, "big": 9_007_199_254_740_993_i64,
                "name": "'; DROP TABLE t; --", "code": "42", "score": 2.5, "ratio": 1.1,
                "price": "12345.678", "ok": true, "doc": {"k": [1, "two"], "n": null},
                "raw": [1, 2], "at": "2026-03-01T12:00:00.250Z", "local": "2026-03-01T12:00:00",
                "day": "2026-03-01", "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                "data": "AP8B", "tags": ["x", "y'z", null], "nums": [1, -2]
            })
        );
        let names: Vec<_> = out["rows"].as_array().unwrap()[..3]
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, HOSTILE);
        assert_eq!(out["rows"][1]["ok"], false);
        let nulls = &out["rows"][3];
        for column in ["name", "ok", "doc", "at", "small", "data", "tags"] {
            assert_eq!(nulls[column], Value::Null, "{column}");
        }

        // Parameters in WHERE, affected rows of an UPDATE, RETURNING.
        let out = sql(
            &format!("SELECT id FROM {t} WHERE name = $1"),
            &[json!(HOSTILE[1])],
        )
        .await;
        assert_eq!(out, json!({"rows": [{"id": 2}], "row_count": 1}));
        let out = sql(
            &format!("UPDATE {t} SET score = score * $1 WHERE id >= $2"),
            &[json!(2), json!(2)],
        )
        .await;
        assert_eq!(out, json!({"rows": [], "row_count": 3}));
        let out = sql(
            &format!("DELETE FROM {t} WHERE id = $1 RETURNING id, score"),
            &[json!("3")],
        )
        .await;
        assert_eq!(
            out,
            json!({"rows": [{"id": 3, "score": 5.0}], "row_count": 1})
        );

        // Values the server computes come back typed too.
        let out = sql(
            "SELECT 1::int2 AS a, 2.5::float4 AS b, 'NaN'::float8 AS c, -0.0042::numeric AS d, \
             10000.5::numeric AS e, 'infinity'::timestamptz AS f, '12:30:01.5'::time AS g, \
             NULL::text AS h, 'x'::name AS i",
            &[],
        )
        .await;
        assert_eq!(
            out["rows"][0],
            json!({"a": 1, "b": 2.5, "c": "NaN", "d": "-0.0042", "e": "10000.5",
                   "f": "infinity", "g": "12:30:01.500", "h": null, "i": "x"})
        );
    }

    #[tokio::test]
    async fn at_most_a_thousand_rows_are_kept_all_are_counted() {
        if !server().await {
            return;
        }
        let t = table(URL);
        sql(&format!("CREATE TABLE {t} (x int4)"), &[]).await;
        let out = sql(
            &format!("INSERT INTO {t} SELECT generate_series(1, $1)"),
            &[json!(1500)],
        )
        .await;
        assert_eq!(out["row_count"], 1500);
        let out = sql(&format!("SELECT x FROM {t} ORDER BY x"), &[]).await;
        assert_eq!(out["row_count"], 1500);
        let rows = out["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 1000);
        assert_eq!(rows[999], json!({"x": 1000}));
    }

    #[tokio::test]
    async fn errors_name_the_database_the_parameter_and_the_types() {
        if !server().await {
            return;
        }
        let err = run(URL, "SELECT * FROM no_such_table_here", &[], T)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            "PostgreSQL: relation \"no_such_table_here\" does not exist (SQLSTATE 42P01)"
        );
        let err = run(
            URL,
            "SELECT $1::int4 + $2::int4",
            &[json!(1), json!("abc")],
            T,
        )
        .await
        .unwrap_err();
        assert_eq!(
            err,
            "PostgreSQL: parameter $2 has type int4; a string (\"abc\") is not an integer"
        );
        let err = run(URL, "SELECT $1::int2", &[json!(70000)], T)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            "PostgreSQL: parameter $1 has type int2; a number (70000) is out of range for int2"
        );
        let err = run(URL, "SELECT $1::timestamptz", &[json!("yesterday")], T)
            .await
            .unwrap_err();
        assert!(
            err.starts_with(
                "PostgreSQL: parameter $1 has type timestamptz; a string (\"yesterday\") is not an RFC 3339 instant"
            ),
            "{err}"
        );
        let err = run(URL, "SELECT $1::int4", &[], T).await.unwrap_err();
        assert_eq!(
            err,
            "PostgreSQL: the query has 1 parameter but 0 values given"
        );
        let err = run(URL, "SELECT '1 day'::interval AS i", &[], T)
            .await
            .unwrap_err();
        assert!(
            err.starts_with("PostgreSQL: column i (interval): no JSON form"),
            "{err}"
        );
        // A text-format parameter the server refuses.
        let err = run(URL, "SELECT $1::numeric", &[json!("1e")], T)
            .await
            .unwrap_err();
        assert!(err.contains("is not a number"), "{err}");
    }

    #[tokio::test]
    async fn connection_failures_are_clear_and_hide_the_password() {
        if !server().await {
            return;
        }
        let err = run(
            "postgres://nobody_here:pw-s3cret@127.0.0.1:5432/test",
            "SELECT 1",
            &[],
            T,
        )
        .await
        .unwrap_err();
        assert!(
            err.starts_with("PostgreSQL: cannot connect to postgres://127.0.0.1:5432/test: "),
            "{err}"
        );
        assert!(!err.contains("pw-s3cret"), "{err}");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = run(
            &format!("postgresql://u:pw-s3cret@127.0.0.1:{port}/db"),
            "SELECT 1",
            &[],
            T,
        )
        .await
        .unwrap_err();
        assert!(
            err.starts_with(&format!(
                "PostgreSQL: cannot connect to postgresql://127.0.0.1:{port}/db: "
            )),
            "{err}"
        );
        assert!(err.contains("Connection refused"), "{err}");
        assert!(!err.contains("pw-s3cret"), "{err}");
        let err = run(&format!("{URL}?sslmode=sometimes"), "SELECT 1", &[], T)
            .await
            .unwrap_err();
        assert!(
            err.starts_with("PostgreSQL: sslmode=sometimes is not one of"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_long_statement_is_cancelled_at_the_timeout() {
        if !server().await {
            return;
        }
        let started = std::time::Instant::now();
        let err = run(URL, "SELECT pg_sleep(30)", &[], Duration::from_millis(500))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            "PostgreSQL: the statement did not finish within 500ms (cancelled)"
        );
        assert!(started.elapsed() < Duration::from_secs(4));
        // The server no longer runs it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let out = sql(
            "SELECT count(*)::int4 AS n FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' \
             AND state = 'active'",
            &[],
        )
        .await;
        assert_eq!(out["rows"][0]["n"], 0);
    }

    #[tokio::test]
    async fn tls_modes() {
        if !server().await {
            return;
        }
        let ssl = sql("SELECT current_setting('ssl') AS enabled", &[]).await;
        if ssl["rows"][0]["enabled"] != "on" {
            println!("skipped: the PostgreSQL on 127.0.0.1:5432 has no TLS");
            return;
        }
        let encrypted = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
        let out = run(&format!("{URL}?sslmode=require"), encrypted, &[], T)
            .await
            .unwrap();
        assert_eq!(out["rows"][0]["ssl"], true);
        let out = run(&format!("{URL}?sslmode=disable"), encrypted, &[], T)
            .await
            .unwrap();
        assert_eq!(out["rows"][0]["ssl"], false);
        // A self-signed (snakeoil) certificate is no trusted root's.
        let err = run(&format!("{URL}?sslmode=verify-full"), encrypted, &[], T)
            .await
            .unwrap_err();
        assert!(err.starts_with("PostgreSQL: cannot connect to "), "{err}");
        assert!(err.contains("certificate"), "{err}");
        let err = run(
            &format!("{URL}?sslmode=verify-ca&sslrootcert=/nonexistent.pem"),
            encrypted,
            &[],
            T,
        )
        .await
        .unwrap_err();
        assert!(
            err.starts_with("PostgreSQL: cannot read sslrootcert /nonexistent.pem"),
            "{err}"
        );

        // Debian's server certificate is self-signed for `localhost`: as its own root, it passes
        // verify-ca from any name, and verify-full only under the name it is for.
        let snakeoil = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
        let served = sql("SELECT current_setting('ssl_cert_file') AS f", &[]).await;
        if served["rows"][0]["f"] != snakeoil || !std::path::Path::new(snakeoil).exists() {
            println!("skipped: the server's certificate is not {snakeoil}");
            return;
        }
        let out = run(
            &format!("{URL}?sslmode=verify-ca&sslrootcert={snakeoil}"),
            encrypted,
            &[],
            T,
        )
        .await
        .unwrap();
        assert_eq!(out["rows"][0]["ssl"], true);
        let err = run(
            &format!("{URL}?sslmode=verify-full&sslrootcert={snakeoil}"),
            encrypted,
            &[],
            T,
        )
        .await
        .unwrap_err();
        assert!(err.contains("certificate not valid for name"), "{err}");
        let out = run(
            &format!(
                "postgres://postgres@localhost:5432/test?sslmode=verify-full&sslrootcert={snakeoil}"
            ),
            encrypted,
            &[],
            T,
        )
        .await
        .unwrap();
        assert_eq!(out["rows"][0]["ssl"], true);
    }

    #[test]
    fn numerics_decode_digit_for_digit() {
        // (ndigits, weight, sign, dscale, digits…) → text
        let enc = |w: i16, sign: u16, dscale: u16, digits: &[u16]| {
            let mut v = Vec::new();
            for x in [digits.len() as u16, w as u16, sign, dscale]
                .into_iter()
                .chain(digits.iter().copied())
            {
                v.extend_from_slice(&x.to_be_bytes());
            }
            numeric_text(&v).unwrap()
        };
        assert_eq!(enc(0, 0, 0, &[]), "0");
        assert_eq!(enc(1, 0, 3, &[1, 2345, 6780]), "12345.678");
        assert_eq!(enc(-1, 0x4000, 4, &[42]), "-0.0042");
        assert_eq!(enc(-2, 0, 6, &[1200]), "0.000012");
        assert_eq!(enc(-2, 0, 8, &[12]), "0.00000012");
        assert_eq!(enc(2, 0, 0, &[1]), "100000000");
        assert_eq!(enc(0, 0xC000, 0, &[]), "NaN");
        assert!(numeric_text(&[0, 1]).is_err());
    }

    #[test]
    fn tls_options_are_taken_out_of_the_url() {
        let t = parse(
            "postgres://u:p@h:5433/db?sslmode=verify-full&sslrootcert=/ca.pem&application_name=w",
        )
        .unwrap();
        assert_eq!(t.tls, TlsMode::VerifyFull);
        assert_eq!(t.root_cert.as_deref(), Some("/ca.pem"));
        assert_eq!(t.config.get_application_name(), Some("w"));
        assert_eq!(t.config.get_dbname(), Some("db"));
        assert_eq!(parse("postgresql://h/db").unwrap().tls, TlsMode::Off);
        assert!(parse("postgres://h/db?sslcert=/c.pem").is_err());
    }
}
