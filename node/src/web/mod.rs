//! The web page every node serves at `/`: plain HTML, CSS and JavaScript compiled into the
//! binary (no build step, no npm), talking to the same public API as any client.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const STYLE_CSS: &str = include_str!("style.css");

/// Assets change with the binary; browsers must revalidate rather than keep an old page
/// after an upgrade.
const CACHE: (header::HeaderName, &str) = (header::CACHE_CONTROL, "no-cache");

/// The page loads only its own script and style and talks only to its own node; nobody
/// may frame it (clickjacking a vote button).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            CACHE,
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        INDEX_HTML,
    )
}

pub async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), CACHE], APP_JS)
}

pub async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), CACHE], STYLE_CSS)
}
