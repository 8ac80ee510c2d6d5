//! `TokenEndpoint` on the oauth2 crate, with the openidconnect crate for discovery and ID token
//! verification (signature via the issuer's JWKS, `iss`, `aud`, `exp`, `nonce`).

use super::http::{HttpError, ProviderHttp};
use super::{CodeExchange, Discovered, OAuthError, TokenEndpoint, TokenSet};
use crate::domain::{ProviderConfig, ProviderKind, Scopes, TokenAuthMethod};
use crate::secret::{ExposeSecret, SecretString};
use async_trait::async_trait;
use oauth2::basic::{
    BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
    BasicTokenIntrospectionResponse,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError,
    Scope, StandardRevocableToken, TokenResponse, TokenUrl,
};
use openidconnect::core::{CoreIdTokenVerifier, CoreProviderMetadata, CoreTokenResponse};
use openidconnect::{IssuerUrl, Nonce};
use url::Url;

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

fn base_client(p: &ProviderConfig) -> Client<EndpointNotSet, EndpointNotSet> {
    let mut c = oauth2::Client::new(ClientId::new(p.client_id.clone())).set_auth_type(
        match p.token_auth_method {
            TokenAuthMethod::ClientSecretBasic => AuthType::BasicAuth,
            TokenAuthMethod::ClientSecretPost => AuthType::RequestBody,
        },
    );
    if let Some(secret) = &p.client_secret {
        c = c.set_client_secret(ClientSecret::new(secret.expose_secret().to_owned()));
    }
    c
}

fn token_client(p: &ProviderConfig) -> Client<EndpointNotSet, EndpointSet> {
    base_client(p).set_token_uri(TokenUrl::from_url(p.token_url.clone()))
}

/// Builds the authorization URL: PKCE S256 always, the OIDC nonce when given, then the
/// provider's extra parameters (which cannot override the ones above; config validation
/// refuses reserved names).
pub fn authorization_url(
    p: &ProviderConfig,
    redirect_uri: &str,
    state: &str,
    pkce_verifier: &SecretString,
    nonce: Option<&SecretString>,
    scopes: &Scopes,
) -> Result<Url, url::ParseError> {
    let client = base_client(p)
        .set_auth_uri(AuthUrl::from_url(p.auth_url.clone()))
        .set_redirect_uri(RedirectUrl::new(redirect_uri.to_owned())?);
    let verifier = PkceCodeVerifier::new(pkce_verifier.expose_secret().to_owned());
    let state = state.to_owned();
    let mut req = client
        .authorize_url(move || CsrfToken::new(state))
        .add_scopes(scopes.iter().map(|s| Scope::new(s.to_owned())))
        .set_pkce_challenge(PkceCodeChallenge::from_code_verifier_sha256(&verifier));
    if let Some(nonce) = nonce {
        req = req.add_extra_param("nonce", nonce.expose_secret().to_owned());
    }
    for (k, v) in &p.extra_auth_params {
        req = req.add_extra_param(k.clone(), v.clone());
    }
    Ok(req.url().0)
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
        subject: None,
    }
}

#[async_trait]
impl TokenEndpoint for OAuth2TokenEndpoint {
    async fn exchange_code(
        &self,
        p: &ProviderConfig,
        x: CodeExchange<'_>,
    ) -> Result<TokenSet, OAuthError> {
        // OIDC: fetch the metadata (and current JWKS) first, so a key rotation is picked up.
        let metadata = match (p.kind, &p.issuer) {
            (ProviderKind::Oidc, Some(issuer)) => Some(self.metadata(issuer).await?),
            _ => None,
        };
        let client = token_client(p).set_redirect_uri(
            RedirectUrl::new(x.redirect_uri.to_owned())
                .map_err(|e| OAuthError::Protocol(format!("bad redirect URI: {e}")))?,
        );
        let resp = client
            .exchange_code(AuthorizationCode::new(x.code.expose_secret().to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(
                x.pkce_verifier.expose_secret().to_owned(),
            ))
            .request_async(&self.http)
            .await
            .map_err(classify)?;
        let mut set = token_set(&resp);
        if let Some(metadata) = metadata {
            let id_token = resp
                .extra_fields()
                .id_token()
                .ok_or_else(|| OAuthError::IdToken("the token response has no id_token".into()))?;
            let keys = metadata.jwks().clone();
            let issuer = metadata.issuer().clone();
            let client_id = ClientId::new(p.client_id.clone());
            let verifier = match &p.client_secret {
                Some(s) => CoreIdTokenVerifier::new_confidential_client(
                    client_id,
                    ClientSecret::new(s.expose_secret().to_owned()),
                    issuer,
                    keys,
                ),
                None => CoreIdTokenVerifier::new_public_client(client_id, issuer, keys),
            };
            let nonce = Nonce::new(
                x.nonce
                    .map(|n| n.expose_secret().to_owned())
                    .unwrap_or_default(),
            );
            let claims = id_token
                .claims(&verifier, &nonce)
                .map_err(|e| OAuthError::IdToken(e.to_string()))?;
            set.subject = Some(claims.subject().as_str().to_owned());
        }
        Ok(set)
    }

    async fn refresh(
        &self,
        p: &ProviderConfig,
        refresh_token: &SecretString,
    ) -> Result<TokenSet, OAuthError> {
        let client = token_client(p);
        let token = RefreshToken::new(refresh_token.expose_secret().to_owned());
        let resp = client
            .exchange_refresh_token(&token)
            .request_async(&self.http)
            .await
            .map_err(classify)?;
        Ok(token_set(&resp))
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
