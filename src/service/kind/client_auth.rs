//! How a client authenticates at a token endpoint, shared by every OAuth kind: a client secret
//! (HTTP Basic or in the body), or a private key signing `private_key_jwt` assertions (RFC 7523
//! section 2.2). Keys are read here from PEM or a Google service-account JSON key. Write-only
//! fields left empty on update keep the stored ones.

use crate::domain::{ProviderConfig, ProviderDraft, TokenAuthMethod};
use crate::jwt::{self, GoogleKey, KeyError, SigningKey};
use crate::secret::{ExposeSecret, SecretString};
use crate::service::Error;

/// The longest `kid` a signed assertion's header may carry.
const MAX_KEY_ID: usize = 256;

/// A client's credentials at the token endpoint.
#[derive(Debug)]
pub(super) struct ClientAuth {
    pub secret: Option<SecretString>,
    pub key: Option<SigningKey>,
    pub method: TokenAuthMethod,
}

/// The draft's client secret, or on update the stored one, which is kept only while every
/// endpoint it is sent to (`sent_to`: the token endpoint, and the revocation and device
/// authorization endpoints of a consent flow) is on a server (scheme, host and port) it was sent
/// to before: a secret is never sent to a server it was not given for.
pub(super) fn client_secret(
    d: &ProviderDraft,
    current: Option<&ProviderConfig>,
    sent_to: &[&url::Url],
) -> Result<Option<SecretString>, Error> {
    if d.client_secret.is_some() {
        return Ok(d.client_secret.clone());
    }
    let Some((stored, kind)) = current.and_then(|c| c.kind.oauth_client().map(|o| (o, &c.kind)))
    else {
        return Ok(None);
    };
    let Some(secret) = &stored.client_secret else {
        return Ok(None);
    };
    let before = secret_endpoints(kind, &stored.token_url);
    match sent_to.iter().find(|u| !before.contains(&u.origin())) {
        Some(new) => Err(Error::invalid(
            "client_secret",
            format!(
                "is needed again: it would be sent to {}, which it was not sent to before (the stored secret only goes where it was given for)",
                new.origin().ascii_serialization()
            ),
        )),
        None => Ok(Some(secret.clone())),
    }
}

/// The servers a provider's client secret is sent to: its token endpoint, its revocation
/// endpoint, and its device authorization endpoint when users consent there.
fn secret_endpoints(kind: &crate::domain::KindConfig, token_url: &url::Url) -> Vec<url::Origin> {
    let flow = kind.auth_code();
    let others = flow.iter().flat_map(|c| {
        let device = (c.consent_flow == crate::domain::ConsentFlow::Device)
            .then_some(&c.device_authorization_url)
            .into_iter()
            .flatten();
        c.revocation_url.iter().chain(device)
    });
    std::iter::once(token_url)
        .chain(others)
        .map(url::Url::origin)
        .collect()
}

/// The client authentication an OAuth kind needs: a secret, or a key for `private_key_jwt`.
/// `sent_to`: the endpoints the secret goes to, the token endpoint first.
pub(super) fn client_auth(
    d: &ProviderDraft,
    current: Option<&ProviderConfig>,
    sent_to: &[&url::Url],
) -> Result<ClientAuth, Error> {
    let method = d.token_auth_method.unwrap_or_default();
    if method != TokenAuthMethod::PrivateKeyJwt {
        if d.private_key.is_some() {
            return Err(Error::invalid(
                "private_key",
                "is used by service_account providers and token_auth_method private_key_jwt only",
            ));
        }
        let secret = client_secret(d, current, sent_to)?
            .ok_or_else(|| Error::invalid("client_secret", "is required"))?;
        return Ok(ClientAuth {
            secret: Some(secret),
            key: None,
            method,
        });
    }
    if d.client_secret.is_some() {
        return Err(Error::invalid(
            "client_secret",
            "is not used with token_auth_method private_key_jwt (the private key signs instead); leave it empty",
        ));
    }
    let key = match &d.private_key {
        Some(raw) => read_key(raw, &d.key_id)?.0,
        None => current
            .and_then(|c| c.kind.oauth_client())
            .and_then(|c| c.signing_key.clone())
            .ok_or_else(|| {
                Error::invalid(
                    "private_key",
                    "is required with token_auth_method private_key_jwt: the PEM private key whose public key the provider has registered",
                )
            })?,
    };
    Ok(ClientAuth {
        secret: None,
        key: Some(key),
        method,
    })
}

/// A private key from PEM, or from a Google service-account JSON key (returned too, for the
/// defaults it carries). `key_id` empty: the JSON key's `private_key_id`, else none.
pub(super) fn read_key(
    raw: &SecretString,
    key_id: &str,
) -> Result<(SigningKey, Option<GoogleKey>), Error> {
    let bad = |e: KeyError| Error::invalid("private_key", e.0);
    if key_id.len() > MAX_KEY_ID || key_id.chars().any(char::is_control) {
        return Err(Error::invalid(
            "key_id",
            format!("must be at most {MAX_KEY_ID} bytes without control characters"),
        ));
    }
    let kid = (!key_id.is_empty()).then(|| key_id.to_owned());
    if jwt::is_json_key(raw.expose_secret()) {
        let google = jwt::parse_google_key(raw).map_err(bad)?;
        let kid = kid.or_else(|| google.private_key_id.clone());
        let key = SigningKey::from_pem(&google.private_key, kid).map_err(bad)?;
        return Ok((key, Some(google)));
    }
    Ok((SigningKey::from_pem(raw, kid).map_err(bad)?, None))
}
