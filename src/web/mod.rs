//! The dashboard: server-rendered pages (askama templates compiled into the binary) over the
//! same store queries and JSON objects as the API, and a small script of our own that keeps
//! them live from `/api/v1/events` and sends the actions to the API.
//!
//! Every page reads and shows; nothing here changes anything. Buttons post to the JSON API
//! (same-origin `fetch`, which the auth layer requires of cookie-authenticated changes), so
//! there is one way in for a change and its rules. Pages are complete without JavaScript (the
//! script only converts times, follows output, updates in place and runs the actions), and carry
//! a strict Content-Security-Policy: our own script and style only, nothing inline, nothing from
//! elsewhere.
//!
//! Architecture invariant: the dashboard never reaches the data another way than the API does:
//! store queries in a read transaction, [`crate::objects`] for what they mean.

mod graph;
mod pages;
mod views;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::Shared;

/// The script and the style sheet, compiled in.
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// What pages may load: our own script, style and requests; no inline code, no frames, forms
/// posting only here.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

/// The dashboard's routes (authenticated by the API's layer, see [`crate::api::app`]).
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(pages::overview))
        .route("/jobs", get(pages::jobs))
        .route("/runs", get(pages::runs))
        .route("/runs/{id}", get(pages::run))
        .route("/schedules", get(pages::schedules))
        .route("/dlq", get(pages::dlq))
        .route("/alerts", get(pages::alerts))
        .route("/fragments/run-row/{id}", get(pages::run_row))
        .route("/fragments/run/{id}", get(pages::run_live))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
}

/// A short digest of the assets: their addresses carry it, so they can be cached for long and
/// a new binary's are fetched anew.
pub fn asset_version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        let d = ring::digest::digest(
            &ring::digest::SHA256,
            format!("{APP_JS}\0{APP_CSS}").as_bytes(),
        );
        d.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect()
    })
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            // Addressed by content (`?v=`): a changed file has a new address.
            (header::CACHE_CONTROL, "private, max-age=86400"),
        ],
        body,
    )
        .into_response()
}

/// An HTML page (or fragment) with the dashboard's headers.
fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    // Pages show live data, and may be behind a login.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
