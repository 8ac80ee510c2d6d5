//! The edges: gRPC services for agents and operators, and the HTTP listener for the OAuth
//! callback and health. Thin: map wire ⇄ domain, call a service, map the error once. Every
//! error is logged here, once, through `report`.

pub mod grpc;
pub mod http;

use crate::pb;
use crate::service::{Error, Reason};

/// The wire name of a reason (`ErrorReason` in the proto), e.g. `REAUTHORIZATION_REQUIRED`.
pub fn reason_name(r: Reason) -> &'static str {
    wire_reason(r).as_str_name()
}

/// A reason as the proto's `ErrorReason`.
pub fn wire_reason(r: Reason) -> pb::ErrorReason {
    match r {
        Reason::InvalidArgument => pb::ErrorReason::InvalidArgument,
        Reason::NotFound => pb::ErrorReason::NotFound,
        Reason::AlreadyExists => pb::ErrorReason::AlreadyExists,
        Reason::PermissionDenied => pb::ErrorReason::PermissionDenied,
        Reason::FlowExpired => pb::ErrorReason::FlowExpired,
        Reason::AccessDenied => pb::ErrorReason::AccessDenied,
        Reason::ProviderError => pb::ErrorReason::ProviderError,
        Reason::WrongProvider => pb::ErrorReason::WrongProvider,
        Reason::IssuerMismatch => pb::ErrorReason::IssuerMismatch,
        Reason::IdTokenRejected => pb::ErrorReason::IdTokenRejected,
        Reason::ExchangeFailed => pb::ErrorReason::ExchangeFailed,
        Reason::ReauthorizationRequired => pb::ErrorReason::ReauthorizationRequired,
        Reason::CredentialMissing => pb::ErrorReason::CredentialMissing,
        Reason::AccountMismatch => pb::ErrorReason::AccountMismatch,
        Reason::UserMismatch => pb::ErrorReason::UserMismatch,
        Reason::ProviderRejected => pb::ErrorReason::ProviderRejected,
        Reason::ProviderBlocked => pb::ErrorReason::ProviderBlocked,
        Reason::ProviderUnavailable => pb::ErrorReason::ProviderUnavailable,
        Reason::StoreUnavailable => pb::ErrorReason::StoreUnavailable,
        Reason::Conflict => pb::ErrorReason::Conflict,
        Reason::ResourceExhausted => pb::ErrorReason::ResourceExhausted,
        Reason::Internal => pb::ErrorReason::Internal,
    }
}

/// Logs a failed request, once: faults (the daemon's or a dependency's) with their source chain
/// at warn, the caller's mistakes at debug.
fn report(e: &Error) {
    let reason = reason_name(e.reason());
    if e.is_fault() {
        tracing::warn!(reason, "request failed: {}", e.chain());
    } else {
        tracing::debug!(reason, "request refused: {e}");
    }
}
