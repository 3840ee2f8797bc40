//! The web dashboard: one static page. It holds no data; it asks for the API token and then
//! calls the API like any other client.
//!
//! Its charts are drawn by uPlot (MIT, vendored in `vendor/uplot/` from the npm package
//! `uplot`, with its license), inlined into the page once, at the first request: the page
//! loads nothing else, so its Content-Security-Policy needs no source but itself.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;

/// The page, with `/*UPLOT_CSS*/` and `/*UPLOT_JS*/` where uPlot's stylesheet and script go.
const TEMPLATE: &str = include_str!("dashboard.html");
const UPLOT_JS: &str = include_str!("vendor/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("vendor/uplot/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("vendor/uplot/LICENSE");

/// The page served: the template with uPlot inlined (its license in a comment before it).
static PAGE: LazyLock<String> = LazyLock::new(|| {
    TEMPLATE.replacen("/*UPLOT_CSS*/", UPLOT_CSS, 1).replacen(
        "/*UPLOT_JS*/",
        &format!("/*! uPlot, https://github.com/leeoniya/uPlot\n{UPLOT_LICENSE}*/\n{UPLOT_JS}"),
        1,
    )
});

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
                // Inline script and style (the page and uPlot are inlined), calls to this
                // origin only, no framing, no <base>, no form posts anywhere.
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
            // For browsers that predate frame-ancestors: the dashboard is never framed.
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        PAGE.as_str(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_inlines_uplot_once_and_nothing_closes_its_tags_early() {
        // An inlined file that held `</script` or `</style` would end its element early.
        assert!(!UPLOT_JS.to_ascii_lowercase().contains("</script"));
        assert!(!UPLOT_CSS.to_ascii_lowercase().contains("</style"));
        // The license goes in a /* */ comment.
        assert!(!UPLOT_LICENSE.contains("*/"));
        for placeholder in ["/*UPLOT_CSS*/", "/*UPLOT_JS*/"] {
            assert_eq!(TEMPLATE.matches(placeholder).count(), 1, "{placeholder}");
            assert!(!PAGE.contains(placeholder), "{placeholder}");
        }
        assert!(PAGE.starts_with("<!doctype html>"));
        assert!(PAGE.contains(UPLOT_JS) && PAGE.contains(UPLOT_CSS));
        assert!(PAGE.contains("Copyright (c) 2022 Leon Sorokin"));
        // Both go inside their own elements, the script before the page's own.
        let js = PAGE.find(UPLOT_JS).unwrap();
        assert!(PAGE[..js].trim_end().ends_with("*/"));
        assert!(PAGE[js + UPLOT_JS.len()..].starts_with("</script>"));
        let css = PAGE.find(UPLOT_CSS).unwrap();
        assert!(PAGE[..css].ends_with("<style>"));
        assert!(PAGE[css + UPLOT_CSS.len()..].starts_with("</style>"));
    }
}
