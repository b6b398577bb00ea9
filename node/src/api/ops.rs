//! Liveness, readiness, metrics and the OpenAPI document.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use tally_api::v1::{HealthBody, ReadyBody};
use utoipa::OpenApi;

use crate::{App, Replica};

/// How far this node's applied index may trail its log before it calls itself not ready.
const READY_APPLY_LAG_MAX: u64 = 1_000;

pub async fn health(State(Replica(node)): State<Replica>) -> impl IntoResponse {
    match node.failure() {
        None => (StatusCode::OK, Json(HealthBody { status: "ok".to_string(), reason: None })),
        // The process still serves, but it is no longer a working member: a supervisor
        // probing liveness should restart it (it also exits by itself, see
        // --storage-failure-exit-ms).
        Some(reason) => {
            let failed = HealthBody { status: "failed".to_string(), reason: Some(reason) };
            (StatusCode::SERVICE_UNAVAILABLE, Json(failed))
        }
    }
}

pub async fn ready(State(Replica(node)): State<Replica>) -> impl IntoResponse {
    let metrics = node.metrics();
    let applied = node.sm.applied_index();
    let lag = metrics.last_log_index.unwrap_or(0).saturating_sub(applied);
    let failure = node.failure();
    let ready = failure.is_none() && metrics.current_leader.is_some() && lag <= READY_APPLY_LAG_MAX;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    // A failed store may be wedged holding the state's lock: /ready must still answer.
    let alarms: Vec<_> = match failure {
        None => node.sm.read().state.alarms.iter().copied().collect(),
        Some(_) => Vec::new(),
    };
    let body = ReadyBody {
        ready,
        leader_id: metrics.current_leader,
        applied_index: applied,
        apply_lag: lag,
        storage_failed: failure,
        no_space_alarms: alarms,
    };
    (status, Json(body))
}

pub async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let text = app.metrics.render(&app);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

pub async fn openapi() -> impl IntoResponse {
    Json(super::ApiDoc::openapi())
}
