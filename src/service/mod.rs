//! Use cases over the ports: provider administration (`providers`), the credential broker with
//! its token cache and single-flight refresh (`broker`, `cache`), and consent flows (`flow`).
//! `Error` is the one transport-agnostic error; its variants are decisions a caller can act on.

mod broker;
mod cache;
mod flow;
mod providers;
mod reference;
mod refresh;

pub use broker::{AccessToken, AuthRequest, Broker, BrokerLimits, GrantInfo, Outcome};
pub use flow::CallbackParams;
pub use providers::{ProviderDraft, ProviderRegistry};
pub use reference::{ReferenceError, ReferenceKeys};

use crate::domain::InvalidInput;
use crate::lease::FlowFailure;
use crate::oauth::OAuthError;
use crate::store::StoreError;
use std::time::Duration;

/// What the caller is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Providers, and every user's grants.
    Admin,
    /// Credentials for its users.
    Agent,
}

/// An authenticated caller, as the transport established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The configured key name; flows are owned by it.
    pub name: String,
    pub role: Role,
}

/// Service-tier errors. Messages are safe to show to callers: no secret ever goes in one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {0}")]
    InvalidArgument(#[from] InvalidInput),
    #[error("{what} not found")]
    NotFound { what: &'static str },
    #[error("{what} '{id}' already exists")]
    AlreadyExists { what: &'static str, id: String },
    #[error("permission denied: {0}")]
    PermissionDenied(&'static str),
    #[error("authorization failed: {0}")]
    Flow(FlowFailure),
    #[error("the provider no longer honours this grant; the user must authorize again")]
    ReauthorizationRequired,
    #[error("the provider refused the request: {0}")]
    ProviderRejected(String),
    #[error("the provider is unavailable: {0}")]
    ProviderUnavailable(String),
    #[error("the secret store is unavailable: {0}")]
    StoreUnavailable(String),
    #[error("the record changed concurrently; retry")]
    Conflict,
    #[error("limit reached: {0}")]
    Exhausted(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Stable machine-readable reason (google.rpc.ErrorInfo.reason).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "INVALID_ARGUMENT",
            Self::NotFound { .. } => "NOT_FOUND",
            Self::AlreadyExists { .. } => "ALREADY_EXISTS",
            Self::PermissionDenied(_) => "PERMISSION_DENIED",
            Self::Flow(f) => f.reason(),
            Self::ReauthorizationRequired => "REAUTHORIZATION_REQUIRED",
            Self::ProviderRejected(_) => "PROVIDER_REJECTED",
            Self::ProviderUnavailable(_) => "PROVIDER_UNAVAILABLE",
            Self::StoreUnavailable(_) => "STORE_UNAVAILABLE",
            Self::Conflict => "CONFLICT",
            Self::Exhausted(_) => "RESOURCE_EXHAUSTED",
            Self::Internal(_) => "INTERNAL",
        }
    }

    /// When retrying may succeed, after about how long.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::ProviderUnavailable(_) | Self::StoreUnavailable(_) => {
                Some(Duration::from_secs(2))
            }
            Self::Conflict => Some(Duration::from_millis(100)),
            _ => None,
        }
    }

    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument(InvalidInput::new(field, reason))
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => Self::Conflict,
            StoreError::Unavailable(..) | StoreError::Denied(_) => {
                Self::StoreUnavailable(e.to_string())
            }
            StoreError::Corrupt { .. } | StoreError::Setup(_) | StoreError::InvalidKey(_) => {
                Self::Internal(e.to_string())
            }
        }
    }
}

impl From<OAuthError> for Error {
    fn from(e: OAuthError) -> Self {
        match e {
            OAuthError::InvalidGrant => Self::ReauthorizationRequired,
            OAuthError::Unavailable(m) => Self::ProviderUnavailable(m),
            other => Self::ProviderRejected(other.to_string()),
        }
    }
}

/// Serializes a record for the store; the bytes are zeroized when dropped.
fn encode<T: serde::Serialize>(v: &T) -> Result<crate::store::SecretBytes, Error> {
    serde_json::to_vec(v)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| Error::Internal(format!("cannot encode record: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, Error> {
    // Only the error's kind and position: serde's message can quote the (secret) value.
    serde_json::from_slice(bytes).map_err(|e| {
        Error::Internal(format!(
            "store record {key} is unreadable ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}
