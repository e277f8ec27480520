//! The dashboard: plain HTML, CSS and JavaScript modules compiled into the binary (no build
//! step), served at `/` on the TCP address. The page holds no data: it reads `/v1/stream` and
//! the other API routes with the token the user gives it, so these assets need no token.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// `(path, content type, body)` of every asset.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/dashboard/style.css",
        "text/css; charset=utf-8",
        include_str!("dashboard/style.css"),
    ),
    (
        "/dashboard/app.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/app.js"),
    ),
    (
        "/dashboard/api.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/api.js"),
    ),
    (
        "/dashboard/render.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/render.js"),
    ),
    (
        "/dashboard/format.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/format.js"),
    ),
];

const INDEX: &str = include_str!("dashboard/index.html");

/// Scripts and styles only from the daemon itself; no framing by other sites.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn routes() -> Router {
    let mut router = Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route("/dashboard/config.js", get(config));
    for (path, kind, body) in ASSETS {
        router = router.route(path, get(move || async move { asset(kind, body) }));
    }
    router
}

/// The wire protocol the page must announce, from the same binary that serves it.
async fn config() -> Response {
    let body = format!(
        "export const PROTOCOL = {};\nexport const VERSION = {:?};\n",
        jarfleet_api::PROTOCOL,
        env!("CARGO_PKG_VERSION")
    );
    with_headers("text/javascript; charset=utf-8", body)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    with_headers(kind, body)
}

fn with_headers(kind: &'static str, body: impl IntoResponse) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}
