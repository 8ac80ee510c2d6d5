//! The one classification of service errors into gRPC status codes with rich details
//! (google.rpc.ErrorInfo, BadRequest, RetryInfo). Logged here, once, at the edge.

use crate::service::Error;
use std::collections::HashMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

const DOMAIN: &str = "valet.dev";

pub fn code(e: &Error) -> Code {
    match e {
        Error::InvalidArgument(_) => Code::InvalidArgument,
        Error::NotFound { .. } => Code::NotFound,
        Error::AlreadyExists { .. } => Code::AlreadyExists,
        Error::PermissionDenied(_) => Code::PermissionDenied,
        Error::Flow(_) | Error::ReauthorizationRequired | Error::ProviderRejected(_) => {
            Code::FailedPrecondition
        }
        Error::ProviderUnavailable(_) | Error::StoreUnavailable(_) => Code::Unavailable,
        Error::Conflict => Code::Aborted,
        Error::Exhausted(_) => Code::ResourceExhausted,
        Error::Internal(_) => Code::Internal,
    }
}

pub fn to_status(e: &Error) -> Status {
    let code = code(e);
    match code {
        Code::Internal | Code::Unavailable => {
            tracing::warn!(reason = e.reason(), "request failed: {e}")
        }
        _ => tracing::debug!(reason = e.reason(), "request refused: {e}"),
    }
    let mut details = ErrorDetails::new();
    details.set_error_info(e.reason(), DOMAIN, HashMap::new());
    if let Error::InvalidArgument(i) = e {
        details.add_bad_request_violation(i.field, i.reason.clone());
    }
    if let Some(after) = e.retry_after() {
        details.set_retry_info(Some(after));
    }
    Status::with_error_details(code, e.to_string(), details)
}
