//! The built front-end files: `/widget.js` (the loader; short cache, its URL is in customers' pages) and
//! `/assets/*` (content-hashed; cached forever). Precompressed `.br`/`.gz` siblings are served when accepted.

use axum::Router;
use axum::http::HeaderValue;
use axum::http::header::CACHE_CONTROL;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::state::AppState;

pub fn router(assets: &std::path::Path) -> Router<AppState> {
    let loader = ServeFile::new(assets.join("widget.js")).precompressed_br().precompressed_gzip();
    let hashed = ServeDir::new(assets.join("assets")).precompressed_br().precompressed_gzip();
    Router::new()
        .route_service(
            "/widget.js",
            tower::ServiceBuilder::new()
                .layer(SetResponseHeaderLayer::overriding(
                    CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=300"),
                ))
                .layer(SetResponseHeaderLayer::overriding(
                    axum::http::HeaderName::from_static("cross-origin-resource-policy"),
                    HeaderValue::from_static("cross-origin"),
                ))
                .service(loader),
        )
        .nest_service(
            "/assets",
            tower::ServiceBuilder::new()
                .layer(SetResponseHeaderLayer::overriding(
                    CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                ))
                .service(hashed),
        )
}
