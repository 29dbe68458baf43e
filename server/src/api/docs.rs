//! The OpenAPI document and Swagger UI. The UI's assets are vendored in
//! `server/assets/swagger-ui` and compiled in: `/docs` needs no network, ever.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

/// The OpenAPI 3 description of the contract (checked in; a test keeps it in step with
/// the router).
pub const OPENAPI_JSON: &str = include_str!("../../assets/openapi.json");
const BUNDLE_JS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js");
const UI_CSS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui.css");

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

pub async fn ui() -> Html<&'static str> {
    Html(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Wiber API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>"##,
    )
}

pub async fn bundle_js() -> Response {
    (
        [(header::CONTENT_TYPE, "application/javascript")],
        BUNDLE_JS,
    )
        .into_response()
}

pub async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css")], UI_CSS).into_response()
}
