//! The HTTP surface: one `router()` per resource module, merged here, and the layers every
//! request passes (request id, tracing, body limit, panic catcher, error envelope).

pub mod client_ip;
pub mod context;
mod cors;
pub mod extract;
pub mod guard;
mod health;
pub mod server;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::error::AppError;
use crate::state::AppState;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Largest JSON body any route accepts (document uploads get their own limit).
pub const MAX_JSON_BODY: usize = 256 * 1024;

/// The whole API with its layers.
pub fn app(state: AppState) -> Router {
    finish(api(), state)
}

/// The routes without state, so tests can add routes before [`finish`].
pub fn api() -> Router<AppState> {
    Router::new()
        .merge(health::router())
        .merge(crate::metrics::router())
        .merge(crate::auth::router())
        .merge(crate::leads::admin_router())
        .merge(crate::leads::landing_router())
        .merge(crate::licenses::admin_router())
        .merge(crate::licenses::devices::admin_router())
        .merge(crate::licenses::devices::desktop_router())
        .merge(crate::licenses::certificate::router())
        .merge(crate::live::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// Adds the state and the layers every request passes.
///
/// Two groups. Around each route (`Router::layer`, after routing, where `MatchedPath` is
/// known): the body limit, the panic net, the timeout, the two request checks and the
/// metrics. Around the whole router (`ServiceBuilder`, listed outermost first): the request
/// id, tracing, security headers, CORS and the envelope for bare errors. Layers around each
/// route clone that route's stack for every request they pass on; around the router they
/// clone one `Arc`. With every layer around each route, the stack cost a request as much
/// CPU as the bare handler's whole request (`ops/bench`, verify phase).
pub fn finish(routes: Router<AppState>, state: AppState) -> Router {
    let cors = cors::layer(&state.config);
    let routed = routes
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(CatchPanicLayer::custom(|_panic| {
            AppError::internal("handler panicked").into_response()
        }))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(middleware::from_fn(guard::check_request))
        .layer(middleware::from_fn(crate::metrics::track_http));
    let around = ServiceBuilder::new()
        .layer(middleware::from_fn(guard::sanitise_request_id))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MintRequestId))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<Body>| {
                let request_id = request
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!(
                    "http",
                    http.method = %request.method(),
                    http.path = %request.uri().path(),
                    request.id = %request_id,
                )
            }),
        )
        .layer(middleware::from_fn(guard::security_headers))
        // Before routing, so preflights are answered for any route of the group.
        .layer(cors)
        .layer(middleware::from_fn(envelope_bare_errors))
        .service(routed);
    Router::new().fallback_service(around)
}

/// A random (v4) UUID for a request without a plain id of its own, drawn from the thread's
/// generator: `uuid`'s own `new_v4` asks the kernel (one system call per request).
#[derive(Clone, Copy)]
struct MintRequestId;

impl MakeRequestId for MintRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        let mut text = uuid::Uuid::encode_buffer();
        axum::http::HeaderValue::from_str(id.hyphenated().encode_lower(&mut text))
            .ok()
            .map(RequestId::new)
    }
}

async fn not_found() -> AppError {
    AppError::not_found()
}

async fn method_not_allowed() -> AppError {
    AppError::method_not_allowed()
}

/// A safety net: error responses made outside our handlers (layers, axum defaults) arrive
/// without a JSON body; give them the envelope so clients see one shape only.
async fn envelope_bare_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let mut enveloped = AppError::from_status(status).into_response();
        for name in [header::RETRY_AFTER, header::ALLOW] {
            if let Some(value) = response.headers().get(&name) {
                enveloped.headers_mut().insert(name, value.clone());
            }
        }
        return enveloped;
    }
    response
}
