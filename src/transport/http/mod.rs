//! The HTTP listener: the OAuth callback (`callback.rs`), MCP providers' client metadata
//! documents (`client_metadata.rs`) and `/healthz` (`health.rs`). Status
//! codes come from the one error classification.

mod callback;
mod client_metadata;
mod forward;
mod health;
mod listener;
mod metrics;

pub(crate) use callback::parse_query as parse_callback_query;
pub use forward::client as replica_client;
pub use listener::{ConnectionLimits, GuardedListener};

use crate::service::{Class, Credentials};
use crate::store::SecretStore;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

#[derive(Debug, Clone)]
pub struct HttpState {
    pub credentials: Arc<Credentials>,
    pub store: Arc<dyn SecretStore>,
    /// Cleared when shutdown starts, so load balancers stop sending traffic.
    pub serving: Arc<AtomicBool>,
    /// Forwards consent callbacks to the replica that started their flow.
    pub replicas: reqwest::Client,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/oauth/callback/{provider_id}", get(callback::callback))
        .route(
            "/oauth/client-metadata/{provider_id}",
            get(client_metadata::client_metadata),
        )
        .route("/healthz", get(health::healthz))
        .route("/livez", get(health::livez))
        .route("/metrics", get(metrics::metrics))
        .with_state(state)
}

/// HTTP's view of the one classification.
fn http_status(class: Class) -> StatusCode {
    match class {
        Class::BadInput | Class::Precondition => StatusCode::BAD_REQUEST,
        Class::NotFound => StatusCode::NOT_FOUND,
        Class::Denied => StatusCode::FORBIDDEN,
        Class::AlreadyExists | Class::Conflict => StatusCode::CONFLICT,
        Class::Exhausted => StatusCode::TOO_MANY_REQUESTS,
        Class::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Class::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
