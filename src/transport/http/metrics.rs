//! `GET /metrics`: the Prometheus exposition (OpenMetrics text).

use super::HttpState;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

pub(super) async fn metrics(State(state): State<HttpState>) -> Response {
    let metrics = state.credentials.audit().metrics();
    metrics.set_pending_flows(state.credentials.pending_flows());
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}
