//! The web dashboard: one static page. It holds no data; it asks for the API token and then
//! calls the API like any other client.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("dashboard.html");

/// The web dashboard
///
/// A static page that asks for the API token and then calls the API. No token needed.
#[utoipa::path(
    get,
    path = "/",
    operation_id = "dashboard",
    tag = "dashboard",
    responses((
        status = 200,
        description = "the page",
        content_type = "text/html; charset=utf-8",
        body = String,
    )),
    security(()),
)]
pub(crate) async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 frame-ancestors 'none'",
            ),
            // For browsers that predate frame-ancestors: the dashboard is never framed.
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        PAGE,
    )
}
