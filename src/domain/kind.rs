//! The credential-kind seam in the domain: a provider is common settings plus exactly one
//! validated, kind-specific configuration. Adding a kind adds a variant here and one module under
//! `service::kind`; nothing else matches on it.

use crate::jwt::SigningKey;
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
    /// A static API key placed in a header, query parameter or cookie (OpenAPI `apiKey`).
    ApiKey,
    /// `Authorization: Basic` from a stored username and password (RFC 7617).
    HttpBasic,
    /// `Authorization: Bearer` with a stored static token (RFC 6750).
    HttpBearer,
    /// The JWT bearer grant (RFC 7523 section 2.1): a signed assertion buys a token for a
    /// service account, optionally impersonating a user (Google domain-wide delegation).
    ServiceAccount,
    /// An OAuth-protected MCP server: the authorization-code grant against the authorization
    /// server it names, every token bound to it (RFC 8707 `resource`).
    Mcp,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OAuth2 => "oauth2",
            Self::Oidc => "oidc",
            Self::ClientCredentials => "client_credentials",
            Self::ApiKey => "api_key",
            Self::HttpBasic => "http_basic",
            Self::HttpBearer => "http_bearer",
            Self::ServiceAccount => "service_account",
            Self::Mcp => "mcp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuthMethod {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
    /// A JWT signed with the client's private key (RFC 7523 section 2.2, OpenID Connect Core 9).
    PrivateKeyJwt,
}

impl TokenAuthMethod {
    /// As configuration and profiles spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }
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
    /// The object in the response holding the token fields (Slack user tokens: `authed_user`);
    /// the answer to a refresh that has no such object holds them at its top.
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
    /// Granted scope → the scope that was asked for, where the provider renames them.
    #[serde(default)]
    pub scope_aliases: std::collections::BTreeMap<String, String>,
    /// Granted without being listed in `scope`, shown by the refresh token that comes with them
    /// (Entra: `offline_access`).
    #[serde(default)]
    pub unlisted_scopes: Vec<String>,
    /// Callback query parameters kept with the grant and given to agents, as `metadata` is
    /// (Intuit: `realmId`, the company every QuickBooks API URL names).
    #[serde(default)]
    pub callback_metadata: Vec<String>,
    /// Error codes that, answering a refresh, say the refresh token is dead, besides
    /// `invalid_grant` (X: `invalid_request`).
    #[serde(default)]
    pub invalid_grant_errors: Vec<String>,
    /// Parameters added to the authorization-code exchange (Shopify: `expiring=1`, for an
    /// expiring offline token that comes with a refresh token).
    #[serde(default)]
    pub exchange_params: std::collections::BTreeMap<String, String>,
    /// The header an access token goes in, as it is, instead of `Authorization: Bearer`
    /// (Shopify: `X-Shopify-Access-Token`).
    #[serde(default)]
    pub token_header: Option<String>,
}

/// A client registered at a provider's token endpoint.
#[derive(Debug, Clone)]
pub struct OAuthClient {
    /// The provider this client belongs to (a metrics label, never sent anywhere).
    pub provider: String,
    /// Empty for a service account whose token endpoint wants no client authentication.
    pub client_id: String,
    /// Write-only at the API; only ever sent to the token endpoint.
    pub client_secret: Option<SecretString>,
    pub auth_method: TokenAuthMethod,
    /// The key signing `private_key_jwt` client assertions (write-only, like the secret).
    pub signing_key: Option<SigningKey>,
    /// The token endpoint does token exchange (RFC 8693).
    pub token_exchange: bool,
    pub token_url: Url,
    pub dialect: TokenDialect,
    /// RFC 8707: the resource every authorization-code and refresh request names (an MCP
    /// server's canonical URI), so its tokens are only good there.
    pub resource: Option<String>,
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
    /// Where the user consents: in a browser that comes back to the callback, or on another
    /// device with a user code (RFC 8628).
    pub consent_flow: ConsentFlow,
    /// RFC 8628 device authorization endpoint (configured or discovered).
    pub device_authorization_url: Option<Url>,
    /// The issuer advertises RFC 9207 `iss` in authorization responses, so a callback without
    /// one is refused (RFC 9207 section 2.4).
    pub iss_required: bool,
    /// Consent binding: where the browser goes after consent, with a one-time session, for the
    /// operator's app to confirm the user (`CompleteAuthorization`) before the grant is stored.
    pub consent_return_url: Option<Url>,
    /// A re-consent by another provider account replaces the grant (audited) instead of being
    /// refused with `ACCOUNT_MISMATCH`.
    pub allow_account_change: bool,
    /// Kind `mcp`: the server this provider is, as discovery found it.
    pub mcp: Option<McpServer>,
}

/// An MCP server as discovery found it (kind `mcp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpServer {
    /// The URL the operator gave.
    pub server_url: Url,
    /// The canonical resource URI from its protected resource metadata (RFC 9728).
    pub resource: String,
    /// The authorization server the client is registered at; a different one on update means
    /// registering again (a registration is never reused across authorization servers).
    pub issuer: String,
    pub registration: McpRegistration,
    pub registration_endpoint: Option<Url>,
    pub scopes_supported: Vec<String>,
    /// What a consent asks for when neither the request nor the provider names scopes: the
    /// server's `401` challenge scope, else `scopes_supported` (the spec's order).
    #[serde(default)]
    pub default_scopes: Vec<String>,
}

/// How Valet became a client of an MCP server's authorization server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum McpRegistration {
    /// The operator gave the client id (and secret).
    PreRegistered,
    /// The client id is the URL of Valet's Client ID Metadata Document for the provider.
    MetadataDocument,
    /// RFC 7591 dynamic client registration.
    Dynamic,
}

impl McpRegistration {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreRegistered => "pre_registered",
            Self::MetadataDocument => "metadata_document",
            Self::Dynamic => "dynamic",
        }
    }
}

/// How a user's consent is collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentFlow {
    /// The authorization-code flow: the browser comes back to Valet's callback.
    #[default]
    Browser,
    /// The device authorization grant (RFC 8628): a user code entered at the provider while
    /// Valet polls; for agents and providers without a browser callback.
    Device,
}

/// A service account: the JWT bearer grant (RFC 7523 section 2.1) with a signed assertion.
#[derive(Debug, Clone)]
pub struct ServiceAccount {
    /// The token endpoint, and client authentication if the provider wants it.
    pub client: OAuthClient,
    /// Signs the assertions; write-only at the API.
    pub key: SigningKey,
    /// The assertion's `iss` (a Google key's `client_email`).
    pub issuer: String,
    /// The assertion's `sub` when no user is impersonated; `None`: the issuer.
    pub subject: Option<String>,
    /// The assertion's `aud`: the token endpoint unless configured.
    pub audience: String,
    /// Scopes go in the assertion's `scope` claim (Google) rather than the request.
    pub scope_in_assertion: bool,
    /// `Authenticate`'s `user_id` becomes the assertion's `sub` (domain-wide delegation).
    pub subject_from_user: bool,
}

/// Where a credential goes on an HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    #[default]
    Header,
    Query,
    Cookie,
}

impl Location {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Query => "query",
            Self::Cookie => "cookie",
        }
    }
}

/// A static credential's kind and where it is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticCredential {
    pub kind: ProviderKind,
    pub location: Location,
    /// Header, query parameter or cookie name.
    pub name: String,
    /// Put before the value (an API key scheme such as `token `).
    #[serde(default)]
    pub prefix: String,
}

/// A credential ready to put on an HTTP request.
#[derive(Debug, Clone)]
pub struct Applied {
    pub location: Location,
    pub name: String,
    pub value: SecretString,
}

/// One validated, kind-specific configuration.
#[derive(Debug, Clone)]
pub enum KindConfig {
    OAuth2(AuthCode),
    Oidc(AuthCode),
    /// An MCP server: `AuthCode::mcp` is set, and the client's `resource`.
    Mcp(AuthCode),
    /// No user and no consent: the client's own credentials buy the token.
    ClientCredentials(OAuthClient),
    /// A value stored per user (or agent) with `PutCredential`, applied as configured.
    Static(StaticCredential),
    /// A signed assertion buys the token; no consent, no grant in the store.
    ServiceAccount(ServiceAccount),
}

impl KindConfig {
    pub fn kind(&self) -> ProviderKind {
        match self {
            Self::OAuth2(_) => ProviderKind::OAuth2,
            Self::Oidc(_) => ProviderKind::Oidc,
            Self::Mcp(_) => ProviderKind::Mcp,
            Self::ClientCredentials(_) => ProviderKind::ClientCredentials,
            Self::Static(s) => s.kind,
            Self::ServiceAccount(_) => ProviderKind::ServiceAccount,
        }
    }

    /// The token-endpoint client, for kinds that have one.
    pub fn oauth_client(&self) -> Option<&OAuthClient> {
        match self {
            Self::OAuth2(c) | Self::Oidc(c) | Self::Mcp(c) => Some(&c.client),
            Self::ClientCredentials(c) => Some(c),
            Self::ServiceAccount(s) => Some(&s.client),
            Self::Static(_) => None,
        }
    }

    /// The authorization-code settings, for kinds that run a consent flow.
    pub fn auth_code(&self) -> Option<&AuthCode> {
        match self {
            Self::OAuth2(c) | Self::Oidc(c) | Self::Mcp(c) => Some(c),
            Self::ClientCredentials(_) | Self::Static(_) | Self::ServiceAccount(_) => None,
        }
    }

    /// The issuer the provider names itself by, if any.
    pub fn issuer(&self) -> Option<&str> {
        self.auth_code().and_then(|c| c.issuer.as_deref())
    }
}
