//! `TokenEndpoint` on the oauth2 crate, with the openidconnect crate for discovery and ID token
//! verification (signature via the issuer's JWKS, `iss`, `aud`, `exp`, `nonce`).

use super::http::{HttpError, ProviderHttp};
use super::{Discovered, OAuthError, TokenEndpoint, TokenGrant, TokenSet};
use crate::domain::{OAuthClient, Scopes, TokenAuthMethod};
use crate::secret::{ExposeSecret, SecretString};
use async_trait::async_trait;
use oauth2::basic::{
    BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
    BasicTokenIntrospectionResponse,
};
use oauth2::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, EndpointNotSet, EndpointSet,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, StandardRevocableToken,
    TokenResponse, TokenUrl,
};
use openidconnect::core::{
    CoreIdToken, CoreIdTokenVerifier, CoreProviderMetadata, CoreTokenResponse,
};
use openidconnect::{IssuerUrl, Nonce};
use std::str::FromStr as _;

/// An oauth2 client whose token responses may carry an OIDC ID token.
type Client<HasAuth, HasToken> = oauth2::Client<
    BasicErrorResponse,
    CoreTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    HasAuth,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    HasToken,
>;

fn token_client(c: &OAuthClient) -> Client<EndpointNotSet, EndpointSet> {
    let mut client = oauth2::Client::new(ClientId::new(c.client_id.clone()))
        .set_auth_type(match c.auth_method {
            TokenAuthMethod::ClientSecretBasic => AuthType::BasicAuth,
            TokenAuthMethod::ClientSecretPost => AuthType::RequestBody,
        })
        .set_token_uri(TokenUrl::from_url(c.token_url.clone()));
    if let Some(secret) = &c.client_secret {
        client = client.set_client_secret(ClientSecret::new(secret.expose_secret().to_owned()));
    }
    client
}

/// The production token endpoint.
#[derive(Debug, Clone)]
pub struct OAuth2TokenEndpoint {
    http: ProviderHttp,
}

impl OAuth2TokenEndpoint {
    pub fn new(http: ProviderHttp) -> Self {
        Self { http }
    }

    async fn metadata(&self, issuer: &str) -> Result<CoreProviderMetadata, OAuthError> {
        let issuer = IssuerUrl::new(issuer.to_owned())
            .map_err(|e| OAuthError::Protocol(format!("invalid issuer URL: {e}")))?;
        CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| match e {
                openidconnect::DiscoveryError::Request(e) => unavailable(&e),
                other => OAuthError::Protocol(format!("discovery failed: {other}")),
            })
    }
}

fn unavailable(e: &HttpError) -> OAuthError {
    match e {
        HttpError::TooLarge | HttpError::Malformed(_) => OAuthError::Protocol(e.to_string()),
        HttpError::Transport(_) | HttpError::ServerError(_) => {
            OAuthError::Unavailable(e.to_string())
        }
    }
}

/// Maps the oauth2 crate's error without ever including the response body.
fn classify(e: RequestTokenError<HttpError, BasicErrorResponse>) -> OAuthError {
    match e {
        RequestTokenError::ServerResponse(r) => match r.error() {
            BasicErrorResponseType::InvalidGrant => OAuthError::InvalidGrant,
            other => OAuthError::Rejected(other.as_ref().to_owned()),
        },
        RequestTokenError::Request(e) => unavailable(&e),
        RequestTokenError::Parse(_, _) => OAuthError::Protocol(
            "the token response is not valid JSON of the expected shape".into(),
        ),
        RequestTokenError::Other(_) => {
            OAuthError::Protocol("the token endpoint answered with an unexpected status".into())
        }
    }
}

fn token_set(r: &CoreTokenResponse) -> TokenSet {
    TokenSet {
        access_token: SecretString::from(r.access_token().secret().clone()),
        token_type: r.token_type().as_ref().to_owned(),
        expires_in: r.expires_in(),
        refresh_token: r
            .refresh_token()
            .map(|t| SecretString::from(t.secret().clone())),
        scopes: r.scopes().and_then(|s| {
            let items: Vec<&str> = s.iter().map(|s| s.as_str()).collect();
            Scopes::parse("scope", &items).ok()
        }),
        id_token: r
            .extra_fields()
            .id_token()
            .map(|t| SecretString::from(t.to_string())),
    }
}

#[async_trait]
impl TokenEndpoint for OAuth2TokenEndpoint {
    async fn token(
        &self,
        client: &OAuthClient,
        grant: TokenGrant<'_>,
    ) -> Result<TokenSet, OAuthError> {
        let resp = match grant {
            TokenGrant::AuthorizationCode {
                code,
                pkce_verifier,
                redirect_uri,
            } => {
                let redirect = RedirectUrl::new(redirect_uri.to_owned())
                    .map_err(|e| OAuthError::Protocol(format!("bad redirect URI: {e}")))?;
                token_client(client)
                    .set_redirect_uri(redirect)
                    .exchange_code(AuthorizationCode::new(code.expose_secret().to_owned()))
                    .set_pkce_verifier(PkceCodeVerifier::new(
                        pkce_verifier.expose_secret().to_owned(),
                    ))
                    .request_async(&self.http)
                    .await
            }
            TokenGrant::RefreshToken(refresh_token) => {
                let token = RefreshToken::new(refresh_token.expose_secret().to_owned());
                token_client(client)
                    .exchange_refresh_token(&token)
                    .request_async(&self.http)
                    .await
            }
        };
        Ok(token_set(&resp.map_err(classify)?))
    }

    async fn verify_id_token(
        &self,
        issuer: &str,
        client: &OAuthClient,
        id_token: &SecretString,
        nonce: &SecretString,
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
        let nonce = Nonce::new(nonce.expose_secret().to_owned());
        let claims = id_token
            .claims(&verifier, &nonce)
            .map_err(|e| OAuthError::IdToken(e.to_string()))?;
        Ok(claims.subject().as_str().to_owned())
    }

    async fn discover(&self, issuer: &str) -> Result<Discovered, OAuthError> {
        let m = self.metadata(issuer).await?;
        let token_url = m
            .token_endpoint()
            .ok_or_else(|| OAuthError::Protocol("discovery document has no token_endpoint".into()))?
            .url()
            .clone();
        Ok(Discovered {
            auth_url: m.authorization_endpoint().url().clone(),
            token_url,
        })
    }
}
