//! Prometheus metrics (SPEC §7): `GET /metrics`.
//!
//! Counters and histograms are recorded where things happen (HTTP middleware here, appends
//! in `eventstore`, pages in the projection runner). Gauges that describe the database —
//! projection lag, the fence that holds catch-up readers back — are measured when scraped,
//! so they are true at that moment and cost nothing in between.

use std::sync::OnceLock;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::AppResult;
use crate::state::AppState;

/// Lag beyond this many events is reported as this many: a scrape stays cheap when a
/// projection is far behind (rebuilding), and "a million" tells no more than "100 000".
const LAG_COUNT_CAP: i64 = 100_000;

/// Buckets of the HTTP latency histogram, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The process-wide recorder; several servers in one process (tests) share it.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("http_request_duration_seconds".into()),
                LATENCY_BUCKETS,
            )
            .expect("static bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a test harness); then ours only renders
        // what is recorded through it, which is nothing — acceptable outside production.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(get_metrics))
}

/// Times every request by its route template (not the raw path: ids would explode the
/// label set).
pub async fn track_http(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route, "status" => status)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Methods as a closed set of labels: a made-up method must not mint a new series.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

async fn get_metrics(State(state): State<AppState>) -> AppResult<Response> {
    sample_database(&state).await?;
    let body = handle().render();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}

/// Projection lag (events and seconds behind the log) and the catch-up fence.
async fn sample_database(state: &AppState) -> AppResult<()> {
    for projection in state.projections.iter() {
        let name = projection.name();
        let lag = projections::lag(&state.pool, name, LAG_COUNT_CAP).await?;
        metrics::gauge!("projection_lag_events", "projection" => name).set(lag.events as f64);
        metrics::gauge!("projection_lag_seconds", "projection" => name).set(lag.seconds);
        metrics::gauge!("projection_failed", "projection" => name).set(if lag.failed() {
            1.0
        } else {
            0.0
        });
    }
    let live = state.live.status();
    // Events committed after the live feed's position that the fence still holds back: a
    // long transaction somewhere in the cluster is stalling every reader.
    let fence = state.store.fence_status(live.position).await?;
    metrics::gauge!("eventstore_oldest_xact_age_seconds").set(fence.oldest_xact_age_seconds);
    metrics::gauge!("eventstore_events_held_by_fence").set(fence.held_back as f64);
    // A prepared transaction left behind holds the fence with no session to show for it.
    metrics::gauge!("eventstore_prepared_xacts").set(fence.prepared_xacts as f64);
    metrics::gauge!("websocket_connections").set(live.sockets as f64);
    metrics::gauge!("verify_view_entries").set(state.licenses.view.len() as f64);
    Ok(())
}
