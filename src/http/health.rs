//! Liveness and readiness (SPEC §7).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use crate::error::{AppError, AppResult};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(get_health))
        .route("/ready", get(get_ready))
}

/// Liveness: answers as long as the process serves HTTP; touches nothing else.
async fn get_health() -> Json<Value> {
    Json(json!({
        "status": "healthy",
        "service": "domizan-gateway",
        "timestamp": crate::time::rfc3339(chrono::Utc::now()),
    }))
}

/// Readiness: the database answers, every migration is applied, and no projection has
/// failed or fallen too far behind.
async fn get_ready(State(state): State<AppState>) -> AppResult<Json<Value>> {
    let report = state.readiness().await;
    if report.ready {
        Ok(Json(json!({"success": true, "data": report.checks})))
    } else {
        Err(AppError::not_ready(report.checks))
    }
}
