//! gRPC's view of the one classification: code, ErrorInfo reason, BadRequest and RetryInfo.

use crate::service::{Class, Error};
use std::collections::HashMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

const DOMAIN: &str = "valet.dev";

pub(super) fn code(class: Class) -> Code {
    match class {
        Class::BadInput => Code::InvalidArgument,
        Class::NotFound => Code::NotFound,
        Class::AlreadyExists => Code::AlreadyExists,
        Class::Denied => Code::PermissionDenied,
        Class::Precondition => Code::FailedPrecondition,
        Class::Unavailable => Code::Unavailable,
        Class::Conflict => Code::Aborted,
        Class::Exhausted => Code::ResourceExhausted,
        Class::Internal => Code::Internal,
    }
}

/// The status a caller sees for `e`; logged once, here.
pub fn to_status(e: &Error) -> Status {
    with_retry(e, e.retry_after())
}

/// `to_status`, with `after` as the RetryInfo when the error itself does not know when to retry
/// (a caller's rate limit: when its bucket has a request again).
pub(super) fn with_retry(e: &Error, after: Option<std::time::Duration>) -> Status {
    super::super::report(e);
    let mut details = ErrorDetails::new();
    details.set_error_info(
        super::super::reason_name(e.reason()),
        DOMAIN,
        HashMap::new(),
    );
    if let Error::InvalidArgument(i) = e {
        details.add_bad_request_violation(i.field, i.reason.clone());
    }
    if let Some(after) = after {
        details.set_retry_info(Some(after));
    }
    Status::with_error_details(code(e.class()), e.to_string(), details)
}
