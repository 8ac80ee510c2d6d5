//! Kind `client_credentials` (RFC 6749 section 4.4): the client's own credentials buy a token for
//! the client itself. No user, no consent, no grant in the store: the token is cached in memory
//! per (provider, scopes, audience, resource) and bought again when it runs short.

use super::KindContext;
use crate::domain::{OAuthClient, ProviderDraft, check_client, check_endpoint_url};
use crate::service::Error;

pub(super) fn validate(d: &ProviderDraft, ctx: KindContext<'_>) -> Result<OAuthClient, Error> {
    check_client(&d.client_id, &d.extra_auth_params)?;
    super::refuse_consent_settings(d, "client_credentials")?;
    let token_url = check_endpoint_url("token_url", &d.token_url, ctx.allow_insecure_urls)?;
    let auth = super::client_auth::client_auth(d, ctx.current, &[&token_url])?;
    Ok(OAuthClient {
        provider: d.id.clone(),
        client_id: d.client_id.clone(),
        client_secret: auth.secret,
        auth_method: auth.method,
        signing_key: auth.key,
        token_exchange: d.token_exchange,
        token_url,
        dialect: d.dialect.clone(),
        resource: None,
    })
}
