//! Kinds `oauth2` and `oidc`: the authorization-code grant with PKCE S256, and for OpenID Connect
//! discovery, a nonce, and ID token verification. Validation, the authorization request, and
//! the callback's exchange live here; the pending table and grant storage are the callers'.

use super::{CallbackParams, KindContext};
use crate::domain::{
    AuthCode, ConsentFlow, OAuthClient, ProviderDraft, Scopes, check_client, check_endpoint_url,
};
use crate::oauth::{
    AuthorizationRequest, OAuthError, TokenEndpoint, TokenGrant, TokenSet, authorization_url,
    safe_code,
};
use crate::pending::{FlowFailure, PendingFlow};
use crate::secret::SecretString;
use crate::service::Error;

fn optional_url(field: &'static str, raw: &str, insecure: bool) -> Result<Option<url::Url>, Error> {
    Ok((!raw.is_empty())
        .then(|| check_endpoint_url(field, raw, insecure))
        .transpose()?)
}

/// Endpoints an issuer's discovery document advertised beyond the authorization and token ones.
#[derive(Debug, Default)]
struct Advertised {
    revocation: Option<url::Url>,
    device_authorization: Option<url::Url>,
    iss_in_response: bool,
}

fn auth_code(
    d: &ProviderDraft,
    ctx: KindContext<'_>,
    auth_url: url::Url,
    token_url: url::Url,
    issuer: Option<String>,
    advertised: Advertised,
) -> Result<AuthCode, Error> {
    check_client(&d.client_id, &d.extra_auth_params)?;
    let device_authorization_url = optional_url(
        "device_authorization_url",
        &d.device_authorization_url,
        ctx.allow_insecure_urls,
    )?
    .or(advertised.device_authorization);
    if d.consent_flow == ConsentFlow::Device && device_authorization_url.is_none() {
        return Err(Error::invalid(
            "device_authorization_url",
            "is required for consent_flow device: the provider's RFC 8628 device authorization endpoint (the issuer does not advertise one)",
        ));
    }
    // The operator's setting wins over the issuer's advertised endpoint.
    let revocation_url =
        optional_url("revocation_url", &d.revocation_url, ctx.allow_insecure_urls)?
            .or(advertised.revocation);
    // The device endpoint gets the client's credentials only when users consent there.
    let device = device_authorization_url
        .as_ref()
        .filter(|_| d.consent_flow == ConsentFlow::Device);
    let sent_to: Vec<&url::Url> = std::iter::once(&token_url)
        .chain(&revocation_url)
        .chain(device)
        .collect();
    let auth = super::client_auth::client_auth(d, ctx.current, &sent_to)?;
    Ok(AuthCode {
        client: OAuthClient {
            provider: d.id.clone(),
            client_id: d.client_id.clone(),
            client_secret: auth.secret,
            auth_method: auth.method,
            signing_key: auth.key,
            token_exchange: d.token_exchange,
            token_url,
            dialect: d.dialect.clone(),
            resource: None,
        },
        auth_url,
        issuer,
        revocation_url,
        extra_auth_params: d.extra_auth_params.clone(),
        scope_param: if d.scope_param.is_empty() {
            "scope".into()
        } else {
            d.scope_param.clone()
        },
        scope_separator: d.scope_separator,
        consent_flow: d.consent_flow,
        device_authorization_url,
        iss_required: advertised.iss_in_response,
        allow_account_change: d.allow_account_change,
        consent_return_url: optional_url(
            "consent_return_url",
            &d.consent_return_url,
            ctx.allow_insecure_urls,
        )?,
        mcp: None,
    })
}

pub(super) fn validate_oauth2(d: &ProviderDraft, ctx: KindContext<'_>) -> Result<AuthCode, Error> {
    let insecure = ctx.allow_insecure_urls;
    check_client(&d.client_id, &d.extra_auth_params)?;
    let auth = check_endpoint_url("auth_url", &d.auth_url, insecure)?;
    let token = check_endpoint_url("token_url", &d.token_url, insecure)?;
    optional_url("issuer", &d.issuer, insecure)?;
    let issuer = (!d.issuer.is_empty()).then(|| d.issuer.clone());
    auth_code(d, ctx, auth, token, issuer, Advertised::default())
}

pub(super) async fn validate_oidc(
    d: &ProviderDraft,
    ctx: KindContext<'_>,
) -> Result<AuthCode, Error> {
    let insecure = ctx.allow_insecure_urls;
    check_client(&d.client_id, &d.extra_auth_params)?;
    if !d.auth_url.is_empty() || !d.token_url.is_empty() {
        let field = if d.auth_url.is_empty() {
            "token_url"
        } else {
            "auth_url"
        };
        return Err(Error::invalid(
            field,
            "is filled from the issuer's discovery document for oidc providers; leave it empty",
        ));
    }
    check_endpoint_url("issuer", &d.issuer, insecure)?;
    let found = ctx
        .endpoint
        .discover(&d.issuer)
        .await
        .map_err(|e| Error::invalid("issuer", format!("OpenID discovery failed: {e}")))?;
    let auth = check_endpoint_url("issuer", found.auth_url.as_str(), insecure)?;
    let token = check_endpoint_url("issuer", found.token_url.as_str(), insecure)?;
    let advertised = |u: Option<url::Url>| {
        u.map(|u| check_endpoint_url("issuer", u.as_str(), insecure))
            .transpose()
    };
    let advertised = Advertised {
        revocation: advertised(found.revocation_url)?,
        device_authorization: advertised(found.device_authorization_url)?,
        iss_in_response: found.iss_in_response,
    };
    auth_code(d, ctx, auth, token, Some(d.issuer.clone()), advertised)
}

/// The authorization request of a flow about to start.
#[derive(Debug)]
pub(crate) struct Begun {
    pub auth_url: crate::pending::ConsentLink,
    /// What is asked for (OpenID Connect adds `openid`).
    pub scopes: Scopes,
    pub nonce: Option<SecretString>,
}

/// One provider's authorization-code flow.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AuthCodeFlow<'a> {
    config: &'a AuthCode,
    openid: bool,
}

impl<'a> AuthCodeFlow<'a> {
    pub(super) fn new(config: &'a AuthCode, openid: bool) -> Self {
        Self { config, openid }
    }

    /// The RFC 8628 endpoint, when this provider's users consent on another device.
    pub(crate) fn device_url(&self) -> Option<&'a url::Url> {
        match self.config.consent_flow {
            ConsentFlow::Device => self.config.device_authorization_url.as_ref(),
            ConsentFlow::Browser => None,
        }
    }

    pub(crate) fn client(&self) -> &'a OAuthClient {
        &self.config.client
    }

    /// What is asked for: OpenID Connect adds `openid`.
    pub(crate) fn scopes_for(&self, scopes: Scopes) -> Result<Scopes, Error> {
        Ok(if self.openid {
            scopes.union(&Scopes::parse("scopes", &["openid"])?)
        } else {
            scopes
        })
    }

    /// The subject of a device flow's tokens: for OpenID Connect, the verified ID token's (no
    /// nonce was sent, so none is checked).
    pub(crate) async fn device_subject(
        &self,
        endpoint: &dyn TokenEndpoint,
        tokens: &TokenSet,
    ) -> Result<Option<String>, FlowFailure> {
        let Some(issuer) = self.config.issuer.as_deref().filter(|_| self.openid) else {
            return Ok(None);
        };
        self.verify(endpoint, issuer, None, tokens).await.map(Some)
    }

    /// Builds the authorization URL for `scopes`; `fresh` supplies 256-bit random values.
    pub(crate) fn begin(
        &self,
        scopes: Scopes,
        redirect_uri: &str,
        state: &str,
        pkce_verifier: &SecretString,
        fresh: impl FnOnce() -> Result<String, Error>,
    ) -> Result<Begun, Error> {
        let scopes = self.scopes_for(scopes)?;
        let nonce = self
            .openid
            .then(|| fresh().map(SecretString::from))
            .transpose()?;
        let url = authorization_url(
            self.config,
            &AuthorizationRequest {
                redirect_uri,
                state,
                pkce_verifier,
                nonce: nonce.as_ref(),
                scopes: &scopes,
            },
        )
        .map_err(|e| Error::Internal {
            context: "building the authorization URL",
            source: Some(Box::new(e)),
        })?;
        Ok(Begun {
            auth_url: url.to_string().into(),
            scopes,
            nonce,
        })
    }

    /// Checks the callback and exchanges its code; returns the tokens and the verified subject.
    pub(crate) async fn finish(
        &self,
        endpoint: &dyn TokenEndpoint,
        flow: &PendingFlow,
        params: &CallbackParams,
    ) -> Result<(TokenSet, Option<String>), FlowFailure> {
        // RFC 9207: when the provider names itself, it must be the issuer we expect.
        if let (Some(iss), Some(expected)) = (&params.iss, &self.config.issuer)
            && iss != expected
        {
            return Err(FlowFailure::IssuerMismatch);
        }
        // Section 2.4: a provider that says it sends `iss` always does; a callback without it
        // may be a mix-up attack.
        if params.iss.is_none() && self.config.iss_required {
            return Err(FlowFailure::IssuerMismatch);
        }
        if let Some(err) = &params.error {
            return Err(match err.as_str() {
                "access_denied" => FlowFailure::AccessDenied,
                other => FlowFailure::ProviderError(safe_code(other)),
            });
        }
        let code = params
            .code
            .as_ref()
            .ok_or_else(|| FlowFailure::ProviderError("the callback carries no code".into()))?;
        let grant = TokenGrant::AuthorizationCode {
            code,
            pkce_verifier: &flow.pkce_verifier,
            redirect_uri: &flow.redirect_uri,
        };
        let tokens = endpoint
            .token(&self.config.client, grant)
            .await
            .map_err(|e| FlowFailure::ExchangeFailed(e.to_string()))?;
        let subject = match (&self.config.issuer, &flow.nonce) {
            (Some(issuer), Some(nonce)) if self.openid => {
                Some(self.verify(endpoint, issuer, Some(nonce), &tokens).await?)
            }
            _ => None,
        };
        Ok((tokens, subject))
    }

    async fn verify(
        &self,
        endpoint: &dyn TokenEndpoint,
        issuer: &str,
        nonce: Option<&SecretString>,
        tokens: &TokenSet,
    ) -> Result<String, FlowFailure> {
        let id_token = tokens.id_token.as_ref().ok_or_else(|| {
            FlowFailure::IdTokenRejected("the token response has no id_token".into())
        })?;
        endpoint
            .verify_id_token(issuer, &self.config.client, id_token, nonce)
            .await
            .map_err(|e| match e {
                OAuthError::IdToken(m) => FlowFailure::IdTokenRejected(m),
                other => FlowFailure::ExchangeFailed(other.to_string()),
            })
    }
}
