//! Kind `service_account`: the JWT bearer grant (RFC 7523 section 2.1). Valet signs an assertion
//! (`iss` the service account, `sub` itself or the impersonated user, `aud` the token endpoint)
//! with the stored private key and exchanges it for a token, cached in memory like a
//! client-credentials token. A Google service-account JSON key fills the issuer, key id and token
//! endpoint, and puts the scopes in the assertion as Google wants
//! (<https://developers.google.com/identity/protocols/oauth2/service-account#httprest>).

use super::KindContext;
use super::client_auth::{client_secret, read_key};
use crate::domain::{
    KindConfig, OAuthClient, ProviderDraft, Scopes, Separator, ServiceAccount, TokenAuthMethod,
    check_endpoint_url,
};
use crate::jwt;
use crate::secret::SecretString;
use crate::service::Error;

fn text(field: &'static str, value: &str) -> Result<Option<String>, Error> {
    if value.len() > 512 || value.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            "must be at most 512 characters without control characters",
        ));
    }
    Ok((!value.is_empty()).then(|| value.to_owned()))
}

pub(super) fn validate(d: &ProviderDraft, ctx: KindContext<'_>) -> Result<ServiceAccount, Error> {
    super::refuse_consent_settings(d, "service_account")?;
    if d.token_auth_method == Some(TokenAuthMethod::PrivateKeyJwt) {
        return Err(Error::invalid(
            "token_auth_method",
            "a service account proves itself with its assertion; private_key_jwt is for the other OAuth kinds",
        ));
    }
    let current = ctx.current.and_then(|c| match &c.kind {
        KindConfig::ServiceAccount(s) => Some(s),
        _ => None,
    });
    let (key, google) = match &d.private_key {
        Some(raw) => read_key(raw, &d.key_id)?,
        None => (
            current.map(|s| s.key.clone()).ok_or_else(|| {
                Error::invalid(
                    "private_key",
                    "is required: a PEM private key or a Google service-account JSON key",
                )
            })?,
            None,
        ),
    };
    let google_token_uri = google.as_ref().and_then(|g| g.token_uri.clone());
    let token_url = [Some(d.token_url.clone()), google_token_uri]
        .into_iter()
        .flatten()
        .find(|u| !u.is_empty())
        .or_else(|| current.map(|s| s.client.token_url.to_string()))
        .unwrap_or_default();
    let token_url = check_endpoint_url("token_url", &token_url, ctx.allow_insecure_urls)?;
    let issuer = text("assertion_issuer", &d.assertion_issuer)?
        .or_else(|| google.as_ref().map(|g| g.client_email.clone()))
        .or_else(|| (!d.client_id.is_empty()).then(|| d.client_id.clone()))
        .or_else(|| current.map(|s| s.issuer.clone()))
        .ok_or_else(|| {
            Error::invalid(
                "assertion_issuer",
                "is required: the service account's identity (a JSON key's client_email, or client_id)",
            )
        })?;
    text("client_id", &d.client_id)?;
    let audience =
        text("assertion_audience", &d.assertion_audience)?.unwrap_or_else(|| token_url.to_string());
    let scope_in_assertion = match &d.private_key {
        Some(_) => google.is_some(),
        None => current.is_some_and(|s| s.scope_in_assertion),
    };
    Ok(ServiceAccount {
        client: OAuthClient {
            provider: d.id.clone(),
            client_id: d.client_id.clone(),
            client_secret: client_secret(d, ctx.current, &[&token_url])?,
            auth_method: d.token_auth_method.unwrap_or_default(),
            signing_key: None,
            token_exchange: false,
            token_url,
            dialect: d.dialect.clone(),
            resource: None,
        },
        key,
        issuer,
        subject: text("assertion_subject", &d.assertion_subject)?,
        audience,
        scope_in_assertion,
        subject_from_user: d.subject_from_user,
    })
}

/// The signed assertion asking for `scopes`, as the impersonated `user` if there is one.
pub(crate) fn assertion(
    sa: &ServiceAccount,
    scopes: &Scopes,
    user: Option<&str>,
    now: i64,
) -> Result<SecretString, Error> {
    let sub = user.or(sa.subject.as_deref()).unwrap_or(&sa.issuer);
    let mut extra = Vec::new();
    if sa.scope_in_assertion && !scopes.is_empty() {
        extra.push(("scope", scopes.join(Separator::Space)));
    }
    let failed = |e: jwt::KeyError| Error::Internal {
        context: "signing the service-account assertion",
        source: Some(Box::new(e)),
    };
    let claims = jwt::claims(&sa.issuer, sub, &sa.audience, now, &extra).map_err(failed)?;
    sa.key.sign(&claims).map_err(failed)
}
