//! Authorization URLs (RFC 6749 section 4.1.1): PKCE S256 always, the OIDC nonce when given, then
//! the provider's extra parameters (which cannot override the ones above; provider validation
//! refuses reserved names).

use crate::domain::{AuthCode, Scopes};
use crate::secret::{ExposeSecret, SecretString};
use oauth2::{AuthUrl, ClientId, CsrfToken, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl};
use url::Url;

/// What goes into one authorization URL.
pub struct AuthorizationRequest<'a> {
    pub redirect_uri: &'a str,
    pub state: &'a str,
    pub pkce_verifier: &'a SecretString,
    pub nonce: Option<&'a SecretString>,
    pub scopes: &'a Scopes,
}

impl std::fmt::Debug for AuthorizationRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationRequest")
            .field("redirect_uri", &self.redirect_uri)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

pub fn authorization_url(
    c: &AuthCode,
    r: &AuthorizationRequest<'_>,
) -> Result<Url, url::ParseError> {
    let client = oauth2::basic::BasicClient::new(ClientId::new(c.client.client_id.clone()))
        .set_auth_uri(AuthUrl::from_url(c.auth_url.clone()))
        .set_redirect_uri(RedirectUrl::new(r.redirect_uri.to_owned())?);
    let verifier = PkceCodeVerifier::new(r.pkce_verifier.expose_secret().to_owned());
    let state = r.state.to_owned();
    let mut req = client
        .authorize_url(move || CsrfToken::new(state))
        .set_pkce_challenge(PkceCodeChallenge::from_code_verifier_sha256(&verifier));
    // Scopes as the provider reads them: its parameter name and separator.
    if !r.scopes.is_empty() {
        req = req.add_extra_param(c.scope_param.clone(), r.scopes.join(c.scope_separator));
    }
    if let Some(nonce) = r.nonce {
        req = req.add_extra_param("nonce", nonce.expose_secret().to_owned());
    }
    // RFC 8707 section 2.1: the resource the token is for (an MCP server).
    if let Some(resource) = &c.client.resource {
        req = req.add_extra_param("resource", resource.clone());
    }
    for (k, v) in &c.extra_auth_params {
        req = req.add_extra_param(k.clone(), v.clone());
    }
    Ok(req.url().0)
}
