//! The credential-kind seam in the domain: a provider is common settings plus exactly one
//! validated, kind-specific configuration. Adding a kind adds a variant here and one module under
//! `service::kind`; nothing else matches on it.

use crate::secret::SecretString;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use url::Url;

/// The kinds Valet implements (the tag of `KindConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    #[serde(rename = "oauth2")]
    OAuth2,
    Oidc,
    /// The client credentials grant (RFC 6749 section 4.4): a token for the client itself.
    ClientCredentials,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OAuth2 => "oauth2",
            Self::Oidc => "oidc",
            Self::ClientCredentials => "client_credentials",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuthMethod {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
}

/// How scopes are separated in a provider's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Separator {
    Space,
    Comma,
    /// Spaces or commas (what a granted `scope` is split on unless a profile says otherwise).
    #[default]
    Any,
}

/// How a token request is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenRequestFormat {
    /// `application/x-www-form-urlencoded` (RFC 6749).
    #[default]
    Form,
    /// A JSON object (Notion).
    Json,
}

/// How a provider's token endpoint deviates from RFC 6749 (set from its profile).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenDialect {
    #[serde(default)]
    pub request: TokenRequestFormat,
    /// The object in the response holding the token fields (Slack user tokens: `authed_user`).
    #[serde(default)]
    pub token_path: Option<String>,
    /// A boolean that is false on errors sent with HTTP 200 (Slack: `ok`).
    #[serde(default)]
    pub ok_field: Option<String>,
    /// How the granted `scope` is split.
    #[serde(default)]
    pub granted_scope_separator: Separator,
    /// Non-secret response fields (dotted paths) kept with the grant and given to agents.
    #[serde(default)]
    pub metadata: Vec<String>,
    /// Lifetime of access tokens whose response has no `expires_in`; 0: they do not expire.
    #[serde(default)]
    pub token_lifetime_seconds: u32,
}

/// A client registered at a provider's token endpoint.
#[derive(Debug, Clone)]
pub struct OAuthClient {
    pub client_id: String,
    /// Write-only at the API; only ever sent to the token endpoint.
    pub client_secret: Option<SecretString>,
    pub auth_method: TokenAuthMethod,
    pub token_url: Url,
    pub dialect: TokenDialect,
}

/// The authorization-code grant (RFC 6749 section 4.1) with PKCE; OpenID Connect adds an issuer
/// whose ID tokens are verified.
#[derive(Debug, Clone)]
pub struct AuthCode {
    pub client: OAuthClient,
    pub auth_url: Url,
    /// Kept verbatim: ID tokens and RFC 9207 `iss` must match it exactly.
    pub issuer: Option<String>,
    pub revocation_url: Option<Url>,
    pub extra_auth_params: BTreeMap<String, String>,
    /// The authorization parameter carrying scopes (Slack user tokens: `user_scope`).
    pub scope_param: String,
    /// How scopes are joined in the authorization request.
    pub scope_separator: Separator,
}

/// One validated, kind-specific configuration.
#[derive(Debug, Clone)]
pub enum KindConfig {
    OAuth2(AuthCode),
    Oidc(AuthCode),
    /// No user and no consent: the client's own credentials buy the token.
    ClientCredentials(OAuthClient),
}

impl KindConfig {
    pub fn kind(&self) -> ProviderKind {
        match self {
            Self::OAuth2(_) => ProviderKind::OAuth2,
            Self::Oidc(_) => ProviderKind::Oidc,
            Self::ClientCredentials(_) => ProviderKind::ClientCredentials,
        }
    }

    /// The token-endpoint client, for kinds that have one.
    pub fn oauth_client(&self) -> Option<&OAuthClient> {
        match self {
            Self::OAuth2(c) | Self::Oidc(c) => Some(&c.client),
            Self::ClientCredentials(c) => Some(c),
        }
    }

    /// The authorization-code settings, for kinds that run a consent flow.
    pub fn auth_code(&self) -> Option<&AuthCode> {
        match self {
            Self::OAuth2(c) | Self::Oidc(c) => Some(c),
            Self::ClientCredentials(_) => None,
        }
    }

    /// The issuer the provider names itself by, if any.
    pub fn issuer(&self) -> Option<&str> {
        self.auth_code().and_then(|c| c.issuer.as_deref())
    }
}
