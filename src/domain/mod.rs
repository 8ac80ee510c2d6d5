//! Pure types and rules, no I/O: identifiers, callers, scopes, provider configuration and kinds,
//! grants and reference records. Every constructor validates, so a value of these types is always within bounds.

mod caller;
mod grant;
mod ids;
mod kind;
mod provider;
mod reference;
mod scopes;

pub use caller::{AgentBinding, Caller, Credential, Presented, Role};
pub use grant::{Grant, GrantKey, GrantStatus, RefreshClaim};
pub use ids::{AccountId, AgentId, ProviderId, UserId};
pub use kind::{
    Applied, AuthCode, ConsentFlow, KindConfig, Location, McpRegistration, McpServer, OAuthClient,
    ProviderKind, Separator, ServiceAccount, StaticCredential, TokenAuthMethod, TokenDialect,
    TokenRequestFormat,
};
pub use provider::{
    DEFAULT_REFERENCE_TTL, MAX_REFERENCE_TTL, ProviderConfig, ProviderDraft, check_client,
    check_endpoint_url, check_name,
};
pub use reference::ReferenceRecord;
pub use scopes::Scopes;

/// Bad input: which field, and why. Never carries the offending value if it could be a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidInput {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidInput {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// What an agent wants handed out for a usable grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Handout {
    #[default]
    Token,
    /// An opaque reference; `single_use` ones resolve once.
    Reference { single_use: bool },
}

/// What a provider allows agents to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoutPolicy {
    #[default]
    Any,
    ReferenceOnly,
}
