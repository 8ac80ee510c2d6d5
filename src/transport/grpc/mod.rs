//! gRPC: the `valet.v1` services, caller authentication, wire ⇄ domain conversion, and the
//! status mapping. Each RPC runs in one span (`skip_all`: method, caller, provider, outcome).

mod auth;
mod convert;
mod credentials;
mod providers;
mod status;

pub use auth::{CallerAuth, CallerKey};
pub use credentials::CredentialsApi;
pub use providers::ProvidersApi;
pub use status::to_status;

use crate::domain::{Caller, ProviderId};
use crate::service::Error;
use std::future::Future;
use tonic::{Request, Status};
use tracing::Instrument as _;

/// The caller the interceptor attached to the request.
fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("missing caller identity"))
}

/// Runs one RPC in its span and maps its error to a status (logged once, there).
async fn rpc<T>(
    method: &'static str,
    caller: &Caller,
    provider: &str,
    call: impl Future<Output = Result<T, Error>>,
) -> Result<T, Status> {
    // Only a well-formed provider id is recorded; anything else is input, not a label.
    let provider = ProviderId::parse(provider)
        .map(|p| p.to_string())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "rpc",
        method,
        caller = %caller.name,
        provider = %provider,
        outcome = tracing::field::Empty,
    );
    async move {
        let result = call.await;
        let outcome = match &result {
            Ok(_) => "OK",
            Err(e) => crate::transport::reason_name(e.reason()),
        };
        tracing::Span::current().record("outcome", outcome);
        result.map_err(|e| to_status(&e))
    }
    .instrument(span)
    .await
}
