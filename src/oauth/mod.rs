//! The token endpoint port and its oauth2/openidconnect adapter, shaped by endpoint: the token
//! endpoint (one request type, the grant type as data), ID token verification and discovery.
//! Authorization URLs are built in `authorize.rs`. Provider HTTP never follows redirects, has
//! timeouts and a body cap (`http.rs`).

mod authorize;
mod client;
#[cfg(test)]
pub(crate) mod fake;
mod http;
mod metered;
mod token;

pub use authorize::{AuthorizationRequest, authorization_url};
pub use client::OAuth2TokenEndpoint;
pub use http::ProviderHttp;
pub use metered::MeteredEndpoint;
pub(crate) use token::parse as parse_token_response;
pub use token::{ACCESS_TOKEN_TYPE, safe_code};

use crate::domain::{OAuthClient, Scopes};
use crate::secret::SecretString;
use async_trait::async_trait;
use std::time::Duration;
use url::Url;

/// What a token endpoint returned. Secrets stay in `SecretString`s.
#[derive(Debug, Clone)]
pub struct TokenSet {
    pub access_token: SecretString,
    pub token_type: String,
    pub expires_in: Option<Duration>,
    pub refresh_token: Option<SecretString>,
    /// Granted scopes, when the provider said.
    pub scopes: Option<Scopes>,
    /// The raw ID token (OpenID Connect), still to be verified.
    pub id_token: Option<SecretString>,
    /// Non-secret response fields the provider's dialect keeps (e.g. `instance_url`).
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// Endpoints learned from an issuer's discovery document.
#[derive(Debug, Clone)]
pub struct Discovered {
    pub auth_url: Url,
    pub token_url: Url,
    /// RFC 7009 revocation endpoint, when advertised (RFC 8414 `revocation_endpoint`).
    pub revocation_url: Option<Url>,
    /// RFC 8628 device authorization endpoint, when advertised.
    pub device_authorization_url: Option<Url>,
    /// RFC 9207 `authorization_response_iss_parameter_supported`: every callback carries `iss`.
    pub iss_in_response: bool,
}

/// A device authorization response (RFC 8628 section 3.2): what the user is shown, and the
/// device code Valet polls with.
pub struct DeviceAuthorization {
    pub device_code: SecretString,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: Duration,
    /// Seconds between polls; 5 when the provider does not say (section 3.2).
    pub interval: Duration,
}

impl std::fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceAuthorization")
            .field("verification_uri", &self.verification_uri)
            .field("expires_in", &self.expires_in)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
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
    /// A 5xx that said when to come back (`Retry-After`, e.g. a 503 during maintenance).
    #[error("the provider is unavailable: {0}; it asks to retry in {secs} s", secs = .1.as_secs())]
    UnavailableFor(String, Duration),
    /// HTTP 429: transient; retry after the provider's `Retry-After` when it gave one.
    #[error("the provider is rate limiting requests (HTTP 429)")]
    RateLimited(Option<Duration>),
    /// The ID token failed verification (signature, issuer, audience, expiry or nonce).
    #[error("ID token verification failed: {0}")]
    IdToken(String),
    /// The provider's answer did not follow the protocol.
    #[error("unexpected provider response: {0}")]
    Protocol(String),
    /// Not sent: the provider's address is one the SSRF guard refuses (which, and the setting).
    #[error("{0}")]
    Blocked(String),
}

impl OAuthError {
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, Self::InvalidGrant)
    }
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable(_) | Self::UnavailableFor(..) | Self::RateLimited(_)
        )
    }
}

/// The grant presented at the token endpoint (RFC 6749 section 4; later kinds add client
/// credentials, JWT bearer, device code and token exchange here).
pub enum TokenGrant<'a> {
    AuthorizationCode {
        code: &'a SecretString,
        pkce_verifier: &'a SecretString,
        redirect_uri: &'a str,
    },
    RefreshToken(&'a SecretString),
    /// RFC 6749 section 4.4, with RFC 8707 `resource` and the widespread `audience`.
    ClientCredentials {
        scopes: &'a Scopes,
        audience: Option<&'a str>,
        resource: Option<&'a str>,
    },
    /// RFC 7523 section 2.1: a signed assertion; `scopes` in the request unless the
    /// assertion carries them.
    JwtBearer {
        assertion: &'a SecretString,
        scopes: Option<&'a Scopes>,
    },
    /// RFC 8628 section 3.4: polling with the device code.
    DeviceCode(&'a SecretString),
    /// RFC 8693 section 2.1: `subject_token` (of type `subject_token_type`) exchanged for an
    /// access token for `audience`/`resource` with `scopes`.
    TokenExchange {
        subject_token: &'a SecretString,
        subject_token_type: &'a str,
        scopes: &'a Scopes,
        audience: Option<&'a str>,
        resource: Option<&'a str>,
    },
}

impl std::fmt::Debug for TokenGrant<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::AuthorizationCode { .. } => "AuthorizationCode",
            Self::RefreshToken(_) => "RefreshToken",
            Self::ClientCredentials { .. } => "ClientCredentials",
            Self::JwtBearer { .. } => "JwtBearer",
            Self::DeviceCode(_) => "DeviceCode",
            Self::TokenExchange { .. } => "TokenExchange",
        })
    }
}

/// A provider's OAuth endpoints.
#[async_trait]
pub trait TokenEndpoint: std::fmt::Debug + Send + Sync + 'static {
    /// A token request at `client.token_url`.
    async fn token(
        &self,
        client: &OAuthClient,
        grant: TokenGrant<'_>,
    ) -> Result<TokenSet, OAuthError>;
    /// Verifies an ID token against the issuer's current keys; returns its `sub`. `nonce`:
    /// the one the authorization request sent (the device flow sends none).
    async fn verify_id_token(
        &self,
        issuer: &str,
        client: &OAuthClient,
        id_token: &SecretString,
        nonce: Option<&SecretString>,
    ) -> Result<String, OAuthError>;
    /// Starts a device authorization (RFC 8628 section 3.1) at `url` for `scopes`.
    async fn device_authorization(
        &self,
        client: &OAuthClient,
        url: &Url,
        scopes: &Scopes,
    ) -> Result<DeviceAuthorization, OAuthError>;
    /// The issuer's OpenID discovery document.
    async fn discover(&self, issuer: &str) -> Result<Discovered, OAuthError>;
    /// Revokes `token` at the provider's RFC 7009 endpoint `url`; `hint` is
    /// `refresh_token` or `access_token`.
    async fn revoke(
        &self,
        client: &OAuthClient,
        url: &Url,
        token: &SecretString,
        hint: &'static str,
    ) -> Result<(), OAuthError>;
}

/// A string claim of an ID token that `verify_id_token` already accepted, read from its payload
/// (at most 256 characters); `None` if absent.
pub fn id_token_claim(id_token: &SecretString, claim: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = crate::secret::ExposeSecret::expose_secret(id_token)
        .split('.')
        .nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some(v.get(claim)?.as_str()?.chars().take(256).collect())
}
