//! gRPC: the `valet.v1` services, caller authentication, and the one `Error` → `Status` mapping.

mod auth;
mod credentials;
mod providers;
mod status;

pub use auth::{CallerAuth, CallerKey};
pub use credentials::CredentialsApi;
pub use providers::ProvidersApi;
pub use status::to_status;

use crate::service::{Caller, Role};
use tonic::{Request, Status};

/// The caller the interceptor attached to the request.
fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("missing caller identity"))
}

fn require_admin<T>(req: &Request<T>) -> Result<Caller, Status> {
    let c = caller(req)?;
    if c.role == Role::Admin {
        Ok(c)
    } else {
        Err(to_status(&crate::service::Error::PermissionDenied(
            "this RPC needs an admin API key",
        )))
    }
}
