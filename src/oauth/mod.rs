//! The token endpoint port and its oauth2/openidconnect adapter: authorization URLs, code
//! exchange (with ID token verification for OIDC), refresh and discovery. Provider HTTP never
//! follows redirects, has timeouts and a body cap (`http.rs`).

mod client;
mod http;

pub use client::{OAuth2TokenEndpoint, authorization_url};
pub use http::ProviderHttp;

use crate::domain::{ProviderConfig, Scopes};
use crate::secret::SecretString;
use async_trait::async_trait;
use std::time::Duration;
use url::Url;

/// What a token endpoint returned. Secrets stay in `SecretString`s.
#[derive(Debug)]
pub struct TokenSet {
    pub access_token: SecretString,
    pub token_type: String,
    pub expires_in: Option<Duration>,
    pub refresh_token: Option<SecretString>,
    /// Granted scopes, when the provider said.
    pub scopes: Option<Scopes>,
    /// The ID token's `sub`, for OIDC code exchanges.
    pub subject: Option<String>,
}

/// Endpoints learned from an issuer's discovery document.
#[derive(Debug, Clone)]
pub struct Discovered {
    pub auth_url: Url,
    pub token_url: Url,
}

/// Failures talking to a provider. Messages never include a response body (it may hold tokens).
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The provider no longer honours the grant (`invalid_grant`).
    #[error("the provider rejected the grant (invalid_grant)")]
    InvalidGrant,
    /// The provider answered with another OAuth error code, e.g. `invalid_client`.
    #[error("the provider refused the request: {0}")]
    Rejected(String),
    /// Network failure, timeout or 5xx: transient, worth retrying.
    #[error("the provider is unreachable or failing: {0}")]
    Unavailable(String),
    /// The ID token failed verification (signature, issuer, audience, expiry or nonce).
    #[error("ID token verification failed: {0}")]
    IdToken(String),
    /// The provider's answer did not follow the protocol.
    #[error("unexpected provider response: {0}")]
    Protocol(String),
}

impl OAuthError {
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, Self::InvalidGrant)
    }
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Inputs of an authorization-code exchange.
pub struct CodeExchange<'a> {
    pub code: &'a SecretString,
    pub pkce_verifier: &'a SecretString,
    pub nonce: Option<&'a SecretString>,
    pub redirect_uri: &'a str,
}

/// A provider's token endpoint.
#[async_trait]
pub trait TokenEndpoint: Send + Sync + 'static {
    async fn exchange_code(
        &self,
        provider: &ProviderConfig,
        exchange: CodeExchange<'_>,
    ) -> Result<TokenSet, OAuthError>;
    async fn refresh(
        &self,
        provider: &ProviderConfig,
        refresh_token: &SecretString,
    ) -> Result<TokenSet, OAuthError>;
    async fn discover(&self, issuer: &str) -> Result<Discovered, OAuthError>;
}
