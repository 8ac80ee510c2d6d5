//! `GET /healthz`: 200 while serving and the store answers, 503 otherwise (shutting down, or the
//! store's failure classified like any other error): readiness. `GET /livez`: 200 while the
//! process serves, whatever the store: liveness, so an unreachable store restarts no pod.

use super::{HttpState, http_status};
use crate::service::Error;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;

pub(super) async fn livez(State(s): State<HttpState>) -> Response {
    if s.serving.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

pub(super) async fn healthz(State(s): State<HttpState>) -> Response {
    if !s.serving.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match s.store.check().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            let e = Error::from(e);
            // Said once, when it starts and ends, by the store watcher (`app/health.rs`); a
            // probe every few seconds would repeat it.
            tracing::debug!("health check: {}", e.chain());
            (http_status(e.class()), format!("{e}\n")).into_response()
        }
    }
}
