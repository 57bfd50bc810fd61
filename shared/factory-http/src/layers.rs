//! What every response goes through, whichever function serves it: `Server` and `X-Request-ID`
//! headers, CORS, request logging, and Go-style 404/405 answers for paths and methods that no
//! route handles.

use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::{header, HeaderValue, Method, StatusCode, Uri};
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::{Level, Span};

use crate::cors::{cors, CorsPolicy};
use crate::{ApiError, HttpConfig};

/// The request-ID header, echoed when the client sends one, otherwise a fresh UUIDv4.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Wraps route families (one or several, merged) into a complete service: fallbacks for unknown
/// paths and methods, then the common layers. Both the Lambda functions and the local server go
/// through here, so their HTTP behaviour cannot drift apart.
pub fn with_common_layers(routes: Router, config: &HttpConfig) -> Router {
    // The name comes from our own configuration; a name that is not a valid header value is a
    // programming error, but a fixed fallback is better than refusing to serve.
    let server = HeaderValue::from_str(&config.server_name)
        .unwrap_or_else(|_| HeaderValue::from_static("Image Factory talos-factory-rs"));
    let policy = Arc::new(CorsPolicy::new(&config.allowed_origins));
    let request_id = header::HeaderName::from_static(REQUEST_ID_HEADER);

    routes
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(page_not_found)
        .layer(
            // Outermost first: the ID exists before the span opens, and every response (preflights
            // and fallbacks included) passes the header setters on its way out.
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(DefaultOnResponse::new().level(Level::INFO))
                        // 5xx details are logged once by `ApiError`; the default would log them again.
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(SetResponseHeaderLayer::overriding(header::SERVER, server))
                .layer(from_fn_with_state(policy, cors)),
        )
}

fn request_span(request: &Request) -> Span {
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = id)
}

/// No route for the path.
async fn page_not_found() -> ApiError {
    ApiError::PageNotFound
}

/// A route exists for the path but not for the method; the router adds `Allow`. A plain `OPTIONS`
/// is answered `200` with that `Allow` header, as the Go router does.
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    if method == Method::OPTIONS {
        return StatusCode::OK.into_response();
    }
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
    .into_response()
}
