//! The credential-kind seam: the one place a provider's kind is dispatched on. Each kind is a
//! module that validates its own configuration and says how a credential is obtained for it;
//! adding a kind means one module here, one variant in `domain::KindConfig`, and one arm in each
//! function below.

mod auth_code;
mod client_auth;
mod client_credentials;
mod mcp;
mod service_account;
mod static_credential;

pub(crate) use service_account::assertion;

pub(crate) use static_credential::stored_value;

pub(crate) use auth_code::AuthCodeFlow;

use super::Error;
use crate::domain::{KindConfig, ProviderConfig, ProviderDraft, ProviderKind};
use crate::oauth::{OAuthError, TokenEndpoint};
use crate::secret::SecretString;

/// The query parameters of `GET /oauth/callback/{provider_id}`.
#[derive(Default)]
pub struct CallbackParams {
    pub state: Option<String>,
    pub code: Option<SecretString>,
    pub error: Option<String>,
    pub iss: Option<String>,
    /// The other parameters (the query is bounded): a profile's `callback_metadata` keeps some.
    pub extra: Vec<(String, String)>,
}

impl CallbackParams {
    /// The parameters among `names` the callback carried once each, with a printable value of
    /// at most 256 bytes: metadata for the grant (Intuit's `realmId`).
    pub fn metadata(&self, names: &[String]) -> Vec<(String, String)> {
        names
            .iter()
            .filter_map(|name| {
                let mut values = self.extra.iter().filter(|(k, _)| k == name);
                match (values.next(), values.next()) {
                    (Some((_, v)), None)
                        if !v.is_empty() && v.len() <= 256 && !v.chars().any(char::is_control) =>
                    {
                        Some((name.clone(), v.clone()))
                    }
                    _ => None,
                }
            })
            .collect()
    }
}

impl std::fmt::Debug for CallbackParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let extra: Vec<&str> = self.extra.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("CallbackParams")
            .field("has_state", &self.state.is_some())
            .field("has_code", &self.code.is_some())
            .field("error", &self.error.is_some())
            .field("iss", &self.iss)
            .field("extra", &extra)
            .finish()
    }
}

/// What validating a kind needs from the deployment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KindContext<'a> {
    pub endpoint: &'a dyn TokenEndpoint,
    /// Plain-http provider URLs allowed for non-loopback hosts (dev mode).
    pub allow_insecure_urls: bool,
    /// The provider being updated, if any (for write-only fields left empty).
    pub current: Option<&'a ProviderConfig>,
    /// The SSRF-guarded client for documents fetched from operator- or server-supplied URLs.
    pub fetcher: &'a crate::mcp::Fetcher,
    /// Valet's public URL and this provider's redirect URI (registration needs them).
    pub public_url: &'a url::Url,
    pub redirect_uri: &'a str,
}

/// Validates the kind-specific part of a draft into its typed configuration.
pub(crate) async fn validate(d: &ProviderDraft, ctx: KindContext<'_>) -> Result<KindConfig, Error> {
    let consents = matches!(
        d.kind,
        Some(ProviderKind::OAuth2 | ProviderKind::Oidc | ProviderKind::Mcp)
    );
    if d.kind != Some(ProviderKind::Mcp) && !d.mcp_server_url.is_empty() {
        return Err(Error::invalid(
            "mcp_server_url",
            "applies to mcp providers only (kind mcp)",
        ));
    }
    let places_a_value = matches!(
        d.kind,
        Some(ProviderKind::ApiKey | ProviderKind::HttpBasic | ProviderKind::HttpBearer)
    );
    for (field, set) in [
        ("credential_location", d.credential_location.is_some()),
        ("credential_name", !d.credential_name.is_empty()),
        ("credential_prefix", !d.credential_prefix.is_empty()),
    ] {
        if set && !places_a_value {
            return Err(Error::invalid(
                field,
                "applies to static credentials only (api_key, http_basic, http_bearer), where a stored value is placed in the request; leave it empty",
            ));
        }
    }
    if !consents && !d.consent_return_url.is_empty() {
        return Err(Error::invalid(
            "consent_return_url",
            "consent binding applies to oauth2 and oidc providers, whose users consent",
        ));
    }
    if !consents
        && (d.consent_flow != crate::domain::ConsentFlow::Browser
            || !d.device_authorization_url.is_empty())
    {
        return Err(Error::invalid(
            "consent_flow",
            "the device flow applies to oauth2 and oidc providers, whose users consent",
        ));
    }
    match d.kind {
        Some(ProviderKind::OAuth2) => auth_code::validate_oauth2(d, ctx).map(KindConfig::OAuth2),
        Some(ProviderKind::Oidc) => auth_code::validate_oidc(d, ctx).await.map(KindConfig::Oidc),
        Some(ProviderKind::Mcp) => mcp::validate(d, ctx).await.map(KindConfig::Mcp),
        Some(ProviderKind::ClientCredentials) => {
            client_credentials::validate(d, ctx).map(KindConfig::ClientCredentials)
        }
        Some(ProviderKind::ServiceAccount) => {
            service_account::validate(d, ctx).map(KindConfig::ServiceAccount)
        }
        Some(k @ (ProviderKind::ApiKey | ProviderKind::HttpBasic | ProviderKind::HttpBearer)) => {
            static_credential::validate(d, k, ctx).map(KindConfig::Static)
        }
        None => Err(Error::invalid(
            "kind",
            "is required (oauth2, oidc, mcp, client_credentials, service_account, api_key, http_basic or http_bearer)",
        )),
    }
}

/// For kinds that buy tokens for the client itself: no authorization request, no user grant, so
/// consent settings and reference-only handout are refused, naming the field.
pub(super) fn refuse_consent_settings(d: &ProviderDraft, kind: &str) -> Result<(), Error> {
    for (field, value) in [
        ("auth_url", &d.auth_url),
        ("issuer", &d.issuer),
        ("revocation_url", &d.revocation_url),
    ] {
        if !value.is_empty() {
            return Err(Error::invalid(
                field,
                format!("is not used by {kind} providers (no user consent); leave it empty"),
            ));
        }
    }
    if !d.extra_auth_params.is_empty() {
        return Err(Error::invalid(
            "extra_auth_params",
            format!("{kind} providers have no authorization request"),
        ));
    }
    if d.handout_policy == crate::domain::HandoutPolicy::ReferenceOnly {
        return Err(Error::invalid(
            "handout_policy",
            format!("references belong to a user's grant; {kind} tokens are handed out directly"),
        ));
    }
    Ok(())
}

/// How a kind obtains a credential when none is cached.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Acquisition<'a> {
    /// A user's consent through the authorization-code flow, kept as a grant.
    Consent(AuthCodeFlow<'a>),
    /// The client's own credentials (or a service account's assertion), for itself.
    Client(ClientGrant<'a>),
    /// A value stored with `PutCredential`.
    Stored(&'a crate::domain::StaticCredential),
}

/// How a token for the client itself (no consent, no stored grant) is bought.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ClientGrant<'a> {
    /// RFC 6749 section 4.4.
    Credentials(&'a crate::domain::OAuthClient),
    /// RFC 7523 section 2.1, signed by `service_account::assertion`.
    JwtBearer(&'a crate::domain::ServiceAccount),
    /// RFC 8693: a subject token (a user's grant token, or one the agent presents) exchanged
    /// for one for the target's audience or resource.
    Exchange {
        client: &'a crate::domain::OAuthClient,
        subject_token: &'a SecretString,
        subject_token_type: &'a str,
    },
}

impl<'a> ClientGrant<'a> {
    pub(crate) fn client(self) -> &'a crate::domain::OAuthClient {
        match self {
            Self::Credentials(c) | Self::Exchange { client: c, .. } => c,
            Self::JwtBearer(s) => &s.client,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Credentials(_) => "client_credentials",
            Self::JwtBearer(_) => "jwt_bearer",
            Self::Exchange { .. } => "token_exchange",
        }
    }

    /// Whether `Authenticate` may name a user: the service account impersonates them.
    pub(crate) fn impersonates(self) -> bool {
        matches!(self, Self::JwtBearer(s) if s.subject_from_user)
    }
}

/// The one dispatch on how a provider's kind obtains credentials.
pub(crate) fn acquisition(kind: &KindConfig) -> Acquisition<'_> {
    match kind {
        KindConfig::OAuth2(c) | KindConfig::Mcp(c) => {
            Acquisition::Consent(AuthCodeFlow::new(c, false))
        }
        KindConfig::Oidc(c) => Acquisition::Consent(AuthCodeFlow::new(c, true)),
        KindConfig::ClientCredentials(c) => Acquisition::Client(ClientGrant::Credentials(c)),
        KindConfig::ServiceAccount(s) => Acquisition::Client(ClientGrant::JwtBearer(s)),
        KindConfig::Static(c) => Acquisition::Stored(c),
    }
}

/// A credential as it goes on the request: OAuth access tokens are bearer tokens (RFC 6750),
/// whatever `token_type` a provider spells, unless its profile names the header they go in as
/// they are (Shopify's `X-Shopify-Access-Token`); static ones go where configured.
pub(crate) fn apply(kind: &KindConfig, token: &SecretString) -> crate::domain::Applied {
    if let Some(header) = token_header(kind) {
        return crate::domain::Applied {
            location: crate::domain::Location::Header,
            name: header.to_owned(),
            value: token.clone(),
        };
    }
    match kind {
        KindConfig::Static(c) => static_credential::apply(c, token),
        KindConfig::OAuth2(_)
        | KindConfig::Oidc(_)
        | KindConfig::Mcp(_)
        | KindConfig::ClientCredentials(_)
        | KindConfig::ServiceAccount(_) => crate::domain::Applied {
            location: crate::domain::Location::Header,
            name: "Authorization".into(),
            value: SecretString::from(format!(
                "Bearer {}",
                crate::secret::ExposeSecret::expose_secret(token)
            )),
        },
    }
}

/// The header a provider's access tokens go in as they are, where it is not `Authorization`.
pub(crate) fn token_header(kind: &KindConfig) -> Option<&str> {
    kind.oauth_client()?.dialect.token_header.as_deref()
}

/// The consent flow a kind runs to obtain a user's credential, if it has one.
pub(crate) fn consent(kind: &KindConfig) -> Option<AuthCodeFlow<'_>> {
    match acquisition(kind) {
        Acquisition::Consent(flow) => Some(flow),
        Acquisition::Client(_) | Acquisition::Stored(_) => None,
    }
}

/// What revoking a grant's tokens at the provider (RFC 7009) came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderRevocation {
    /// The provider has no revocation endpoint configured, or the grant had only an access token
    /// of a type it cannot revoke (`unsupported_token_type`).
    NotSupported,
    /// There was no token to revoke.
    NothingToRevoke,
    Revoked,
    /// The provider refused or could not be reached (an OAuth error code or transport failure,
    /// never a body); the local grant is deleted anyway.
    Failed(String),
}

/// Revokes a grant's tokens at the provider, refresh token first (RFC 7009 section 2.1: revoking
/// it should also end the access tokens of the same grant), then the access token.
pub(crate) async fn revoke_at_provider(
    endpoint: &dyn TokenEndpoint,
    kind: &KindConfig,
    refresh: Option<&SecretString>,
    access: Option<&SecretString>,
) -> ProviderRevocation {
    let (Some(code), Some(client)) = (kind.auth_code(), kind.oauth_client()) else {
        return ProviderRevocation::NotSupported;
    };
    let Some(url) = &code.revocation_url else {
        return ProviderRevocation::NotSupported;
    };
    let tokens = [(refresh, "refresh_token"), (access, "access_token")];
    let mut outcome = ProviderRevocation::NothingToRevoke;
    for (token, hint) in tokens {
        let Some(token) = token else { continue };
        match endpoint.revoke(client, url, token, hint).await {
            Ok(()) => outcome = ProviderRevocation::Revoked,
            // An access token the provider calls invalid is already of no use: it ended with
            // the refresh token just revoked, or expired. RFC 7009 answers 200 for it; Salesforce
            // answers 400 `invalid_token`:
            // https://developer.salesforce.com/docs/platform/mobile-sdk/guide/oauth-revoking-tokens.html
            Err(OAuthError::Rejected(code))
                if hint == "access_token" && code == "invalid_token" =>
            {
                outcome = ProviderRevocation::Revoked;
            }
            // A provider that cannot revoke access tokens (self-contained JWTs; RFC 7009 section
            // 2.2.1): with the refresh token revoked the grant is over at the provider, and its
            // access token, dropped here, lives only until it expires.
            Err(OAuthError::Rejected(code))
                if hint == "access_token" && code == "unsupported_token_type" =>
            {
                if outcome != ProviderRevocation::Revoked {
                    outcome = ProviderRevocation::NotSupported;
                }
            }
            Err(e) => return ProviderRevocation::Failed(e.to_string()),
        }
    }
    outcome
}
