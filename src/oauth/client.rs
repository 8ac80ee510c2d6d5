//! `TokenEndpoint` for real providers: token requests and responses in `token.rs` (RFC 6749 plus
//! the provider's dialect), the openidconnect crate for discovery and ID token verification
//! (signature via the issuer's JWKS, `iss`, `aud`, `exp`, `nonce`).

use super::http::{HttpError, ProviderHttp};
use super::{Discovered, OAuthError, TokenEndpoint, TokenGrant, TokenSet, token};
use crate::clock::Clock;
use crate::domain::OAuthClient;
use crate::secret::{ExposeSecret, SecretString};
use async_trait::async_trait;
use oauth2::{ClientId, ClientSecret};
use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreGrantType,
    CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm, CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{IssuerUrl, Nonce};
use std::str::FromStr as _;
use std::sync::Arc;

/// Discovery fields beyond OpenID Connect Discovery 1.0 that Valet uses (RFC 8414).
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
struct ExtraMetadata {
    #[serde(default)]
    revocation_endpoint: Option<String>,
    #[serde(default)]
    device_authorization_endpoint: Option<String>,
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}

impl openidconnect::AdditionalProviderMetadata for ExtraMetadata {}

type ProviderMetadata = openidconnect::ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// The production token endpoint.
#[derive(Debug, Clone)]
pub struct OAuth2TokenEndpoint {
    http: ProviderHttp,
    /// Dates `private_key_jwt` client assertions.
    clock: Arc<dyn Clock>,
}

impl OAuth2TokenEndpoint {
    pub fn new(http: ProviderHttp, clock: Arc<dyn Clock>) -> Self {
        Self { http, clock }
    }

    async fn metadata(&self, issuer: &str) -> Result<ProviderMetadata, OAuthError> {
        let issuer = IssuerUrl::new(issuer.to_owned())
            .map_err(|e| OAuthError::Protocol(format!("invalid issuer URL: {e}")))?;
        ProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| match e {
                openidconnect::DiscoveryError::Request(e) => unavailable(&e),
                other => OAuthError::Protocol(format!("discovery failed: {other}")),
            })
    }
}

fn content_type(resp: &oauth2::HttpResponse) -> String {
    resp.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned()
}

fn unavailable(e: &HttpError) -> OAuthError {
    match e {
        HttpError::TooLarge | HttpError::Malformed(_) => OAuthError::Protocol(e.to_string()),
        HttpError::Private(_) => OAuthError::Blocked(e.to_string()),
        HttpError::ServerError(_, Some(after)) => {
            OAuthError::UnavailableFor(e.to_string(), std::time::Duration::from_secs(*after))
        }
        // With its causes: "error sending request" alone does not say the connection was refused.
        HttpError::Transport(inner) => OAuthError::Unavailable(format!(
            "request failed: {}",
            crate::secret::chain_without_values(inner)
        )),
        HttpError::ServerError(_, None) => OAuthError::Unavailable(e.to_string()),
        HttpError::RateLimited(after) => {
            OAuthError::RateLimited(after.map(std::time::Duration::from_secs))
        }
    }
}

#[async_trait]
impl TokenEndpoint for OAuth2TokenEndpoint {
    async fn token(
        &self,
        client: &OAuthClient,
        grant: TokenGrant<'_>,
    ) -> Result<TokenSet, OAuthError> {
        let assertion =
            token::client_assertion(client, client.token_url.as_str(), self.clock.now_unix())?;
        let req = token::request(client, &grant, assertion.as_ref())?;
        let resp = self.http.send(req).await.map_err(|e| unavailable(&e))?;
        token::parse(
            resp.status().as_u16(),
            &content_type(&resp),
            resp.body(),
            &client.dialect,
            matches!(grant, TokenGrant::RefreshToken(_)),
        )
    }

    async fn verify_id_token(
        &self,
        issuer: &str,
        client: &OAuthClient,
        id_token: &SecretString,
        nonce: Option<&SecretString>,
    ) -> Result<String, OAuthError> {
        // Fetched now, so a key rotation at the provider is picked up.
        let metadata = self.metadata(issuer).await?;
        let id_token = CoreIdToken::from_str(id_token.expose_secret())
            .map_err(|_| OAuthError::IdToken("the id_token is not a well-formed JWT".into()))?;
        let keys = metadata.jwks().clone();
        let issuer = metadata.issuer().clone();
        let client_id = ClientId::new(client.client_id.clone());
        let verifier = match &client.client_secret {
            Some(s) => CoreIdTokenVerifier::new_confidential_client(
                client_id,
                ClientSecret::new(s.expose_secret().to_owned()),
                issuer,
                keys,
            ),
            None => CoreIdTokenVerifier::new_public_client(client_id, issuer, keys),
        };
        let claims = match nonce {
            Some(n) => id_token.claims(&verifier, &Nonce::new(n.expose_secret().to_owned())),
            // No authorization request carried a nonce (the device flow), so none is checked.
            None => id_token.claims(&verifier, |_: Option<&Nonce>| Ok(())),
        }
        .map_err(|e| OAuthError::IdToken(e.to_string()))?;
        Ok(claims.subject().as_str().to_owned())
    }

    async fn device_authorization(
        &self,
        client: &OAuthClient,
        url: &url::Url,
        scopes: &crate::domain::Scopes,
    ) -> Result<super::DeviceAuthorization, OAuthError> {
        let assertion = token::client_assertion(client, url.as_str(), self.clock.now_unix())?;
        let req = token::device_request(client, url.as_str(), scopes, assertion.as_ref())?;
        let resp = self.http.send(req).await.map_err(|e| unavailable(&e))?;
        token::parse_device(resp.status().as_u16(), &content_type(&resp), resp.body())
    }

    async fn revoke(
        &self,
        client: &OAuthClient,
        url: &url::Url,
        token: &SecretString,
        hint: &'static str,
    ) -> Result<(), OAuthError> {
        // Revocation is idempotent (RFC 7009 section 2.2), so a request lost on a pooled
        // connection the provider had closed is simply sent again, once.
        let mut attempt = 0;
        loop {
            let assertion = token::client_assertion(client, url.as_str(), self.clock.now_unix())?;
            let req = token::revocation(client, url.as_str(), token, hint, assertion.as_ref())?;
            match self.http.send(req).await {
                Ok(resp) => return token::parse_revocation(resp.status().as_u16(), resp.body()),
                Err(HttpError::Transport(e)) if attempt == 0 => {
                    tracing::debug!("revocation request failed; retrying once: {e}");
                    attempt += 1;
                }
                Err(e) => return Err(unavailable(&e)),
            }
        }
    }

    async fn discover(&self, issuer: &str) -> Result<Discovered, OAuthError> {
        let m = self.metadata(issuer).await?;
        let token_url = m
            .token_endpoint()
            .ok_or_else(|| OAuthError::Protocol("discovery document has no token_endpoint".into()))?
            .url()
            .clone();
        let extra = m.additional_metadata();
        let parse = |u: &Option<String>| u.as_deref().and_then(|u| url::Url::parse(u).ok());
        Ok(Discovered {
            auth_url: m.authorization_endpoint().url().clone(),
            token_url,
            revocation_url: parse(&extra.revocation_endpoint),
            device_authorization_url: parse(&extra.device_authorization_endpoint),
            iss_in_response: extra.authorization_response_iss_parameter_supported,
        })
    }
}
