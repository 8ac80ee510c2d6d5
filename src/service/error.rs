//! The one service error and its one classification. Every edge (gRPC status, the callback page,
//! `/healthz`) maps `Class` and `Reason`; nothing else decides what a failure means to a caller.
//! Internal and unavailable errors keep their source chain for the log and show callers a fixed
//! message: no store key, serde position or backend text ever reaches a caller.

use crate::domain::InvalidInput;
use crate::oauth::OAuthError;
use crate::pending::FlowFailure;
use crate::store::StoreError;
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Service-tier errors. `Display` is what callers see; secrets never go in one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {0}")]
    InvalidArgument(#[from] InvalidInput),
    #[error("{what} not found")]
    NotFound { what: &'static str },
    #[error(
        "authorization flow not found: it ended a while ago, is another caller's, or began before the daemon restarted; call Authenticate again for a new one"
    )]
    FlowNotFound,
    #[error(
        "no provider '{0}' is configured: ListProviders (`valet provider list`) shows those that are"
    )]
    UnknownProvider(String),
    #[error("{what} '{id}' already exists")]
    AlreadyExists { what: &'static str, id: String },
    #[error("permission denied: {0}")]
    PermissionDenied(&'static str),
    /// The caller's `[[callers]]` entry does not list the agent id the request named (a
    /// well-formed id, so it may be said back).
    #[error(
        "permission denied: this caller may not act as agent_id {0:?}: add it (or a prefix pattern) to the caller's `agents` in [[callers]]"
    )]
    AgentDenied(String),
    #[error("authorization failed: {0}")]
    Flow(FlowFailure),
    #[error("the provider no longer honours this grant; the user must authorize again")]
    ReauthorizationRequired,
    #[error(
        "no credential is stored for provider '{provider}' and {slot}: store one with PutCredential (`valet credential put`)"
    )]
    CredentialMissing {
        provider: String,
        /// Whose credential was looked for: `user 'alice'`, with the agent and account if any.
        slot: String,
    },
    /// An OAuth error code from the provider (e.g. `invalid_client`): safe to show.
    #[error("the provider refused the request: {0}")]
    ProviderRejected(String),
    /// The SSRF guard kept the request from the provider: an operator's setting, not the
    /// provider's doing.
    #[error("Valet did not call the provider: {0}")]
    ProviderBlocked(String),
    #[error("the provider is unreachable or failing; retry shortly")]
    ProviderUnavailable(#[source] BoxError),
    /// Another replica holds the grant's refresh claim.
    #[error("another Valet instance is refreshing this grant; retry")]
    RefreshBusy,
    #[error("the secret store is unavailable; retry shortly")]
    StoreUnavailable(#[source] BoxError),
    #[error("the record changed concurrently; retry")]
    Conflict,
    #[error("limit reached: {0}")]
    Exhausted(String),
    #[error("internal error; the daemon log has the details")]
    Internal {
        context: &'static str,
        #[source]
        source: Option<BoxError>,
    },
}

/// How a failure classifies: each edge maps this to its own status space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    BadInput,
    NotFound,
    AlreadyExists,
    Denied,
    /// The request is fine but the state of the world refuses it (a failed flow, a dead grant).
    Precondition,
    Unavailable,
    Conflict,
    Exhausted,
    Internal,
}

/// The stable, machine-readable reason (google.rpc.ErrorInfo; `ErrorReason` in the proto).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    FlowExpired,
    AccessDenied,
    ProviderError,
    WrongProvider,
    IssuerMismatch,
    IdTokenRejected,
    ExchangeFailed,
    ReauthorizationRequired,
    CredentialMissing,
    AccountMismatch,
    UserMismatch,
    ProviderRejected,
    ProviderBlocked,
    ProviderUnavailable,
    StoreUnavailable,
    Conflict,
    ResourceExhausted,
    Internal,
}

impl Error {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument(InvalidInput::new(field, reason))
    }

    pub fn internal(context: &'static str) -> Self {
        Self::Internal {
            context,
            source: None,
        }
    }

    pub fn class(&self) -> Class {
        match self {
            Self::InvalidArgument(_) => Class::BadInput,
            Self::NotFound { .. } | Self::FlowNotFound | Self::UnknownProvider(_) => {
                Class::NotFound
            }
            Self::AlreadyExists { .. } => Class::AlreadyExists,
            Self::PermissionDenied(_) | Self::AgentDenied(_) => Class::Denied,
            Self::Flow(_)
            | Self::ReauthorizationRequired
            | Self::CredentialMissing { .. }
            | Self::ProviderRejected(_)
            | Self::ProviderBlocked(_) => Class::Precondition,
            Self::ProviderUnavailable(_) | Self::RefreshBusy | Self::StoreUnavailable(_) => {
                Class::Unavailable
            }
            Self::Conflict => Class::Conflict,
            Self::Exhausted(_) => Class::Exhausted,
            Self::Internal { .. } => Class::Internal,
        }
    }

    pub fn reason(&self) -> Reason {
        match self {
            Self::InvalidArgument(_) => Reason::InvalidArgument,
            Self::NotFound { .. } | Self::FlowNotFound | Self::UnknownProvider(_) => {
                Reason::NotFound
            }
            Self::AlreadyExists { .. } => Reason::AlreadyExists,
            Self::PermissionDenied(_) | Self::AgentDenied(_) => Reason::PermissionDenied,
            Self::Flow(f) => match f {
                FlowFailure::Expired => Reason::FlowExpired,
                FlowFailure::AccessDenied => Reason::AccessDenied,
                FlowFailure::ProviderError(_) => Reason::ProviderError,
                FlowFailure::WrongProvider => Reason::WrongProvider,
                FlowFailure::IssuerMismatch => Reason::IssuerMismatch,
                FlowFailure::IdTokenRejected(_) => Reason::IdTokenRejected,
                FlowFailure::ExchangeFailed(_) => Reason::ExchangeFailed,
                FlowFailure::AccountMismatch => Reason::AccountMismatch,
                FlowFailure::UserMismatch => Reason::UserMismatch,
            },
            Self::ReauthorizationRequired => Reason::ReauthorizationRequired,
            Self::CredentialMissing { .. } => Reason::CredentialMissing,
            Self::ProviderRejected(_) => Reason::ProviderRejected,
            Self::ProviderBlocked(_) => Reason::ProviderBlocked,
            Self::ProviderUnavailable(_) | Self::RefreshBusy => Reason::ProviderUnavailable,
            Self::StoreUnavailable(_) => Reason::StoreUnavailable,
            Self::Conflict => Reason::Conflict,
            Self::Exhausted(_) => Reason::ResourceExhausted,
            Self::Internal { .. } => Reason::Internal,
        }
    }

    /// When retrying may succeed, after about how long.
    pub fn retry_after(&self) -> Option<Duration> {
        // The provider's own Retry-After, when it rate limits or is down for a while.
        if let Self::ProviderUnavailable(source) = self
            && let Some(OAuthError::RateLimited(Some(after)) | OAuthError::UnavailableFor(_, after)) =
                source.downcast_ref::<OAuthError>()
        {
            return Some(*after);
        }
        match self.class() {
            Class::Unavailable => Some(Duration::from_secs(2)),
            Class::Conflict => Some(Duration::from_millis(100)),
            _ => None,
        }
    }

    /// Whether this is the daemon's or a dependency's fault (logged as a warning with its chain)
    /// rather than the caller's (logged at debug).
    pub fn is_fault(&self) -> bool {
        matches!(self.class(), Class::Unavailable | Class::Internal)
    }

    /// The message and every source below it, for the log only (never for callers).
    pub fn chain(&self) -> String {
        let mut out = match self {
            Self::Internal { context, .. } => format!("internal error: {context}"),
            other => other.to_string(),
        };
        let mut next = std::error::Error::source(self);
        while let Some(e) = next {
            out.push_str(": ");
            out.push_str(&e.to_string());
            next = e.source();
        }
        out
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => Self::Conflict,
            StoreError::Unavailable(..) | StoreError::Denied(_) => {
                Self::StoreUnavailable(Box::new(e))
            }
            StoreError::Corrupt { .. } | StoreError::Setup(_) | StoreError::InvalidKey(_) => {
                Self::Internal {
                    context: "secret store",
                    source: Some(Box::new(e)),
                }
            }
        }
    }
}

impl From<OAuthError> for Error {
    fn from(e: OAuthError) -> Self {
        match e {
            OAuthError::InvalidGrant => Self::ReauthorizationRequired,
            OAuthError::Unavailable(_)
            | OAuthError::UnavailableFor(..)
            | OAuthError::RateLimited(_) => Self::ProviderUnavailable(Box::new(e)),
            OAuthError::Rejected(code) => Self::ProviderRejected(code),
            OAuthError::Blocked(why) => Self::ProviderBlocked(why),
            other => Self::ProviderRejected(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_details_reach_the_log_but_not_the_caller() {
        let e = Error::from(StoreError::Corrupt {
            key: "grants/idp/YWxpY2U/=".into(),
            reason: "Syntax error at line 1, column 9".into(),
        });
        assert_eq!(e.class(), Class::Internal);
        assert!(!e.to_string().contains("grants/"), "{e}");
        assert!(!e.to_string().contains("line 1"), "{e}");
        assert!(e.chain().contains("grants/idp/YWxpY2U/="), "{}", e.chain());
        let e = Error::from(OAuthError::Unavailable("provider answered HTTP 503".into()));
        assert_eq!(e.reason(), Reason::ProviderUnavailable);
        assert!(e.retry_after().is_some());
        assert!(e.chain().contains("HTTP 503"));
    }
}
