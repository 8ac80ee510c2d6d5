//! Kinds `api_key`, `http_basic` and `http_bearer`: a value an operator or agent stores per user
//! (or agent) with `PutCredential`, write-only, applied where the provider says: an API key in a
//! header, query parameter or cookie with an optional prefix (OpenAPI `apiKey`), `Authorization:
//! Basic` (RFC 7617) or `Authorization: Bearer` (RFC 6750). No consent, no refresh.

use super::KindContext;
use crate::domain::{Applied, Location, ProviderDraft, ProviderKind, StaticCredential};
use crate::secret::{ExposeSecret, SecretString};
use crate::service::Error;
use base64::Engine as _;

/// Longest stored value.
const MAX_VALUE: usize = 4096;

/// An HTTP token (RFC 9110 section 5.6.2): what a header, parameter or cookie name may be.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub(super) fn validate(
    d: &ProviderDraft,
    kind: ProviderKind,
    _ctx: KindContext<'_>,
) -> Result<StaticCredential, Error> {
    for (field, set) in [
        ("client_id", !d.client_id.is_empty()),
        ("client_secret", d.client_secret.is_some()),
        ("auth_url", !d.auth_url.is_empty()),
        ("token_url", !d.token_url.is_empty()),
        ("issuer", !d.issuer.is_empty()),
        ("extra_auth_params", !d.extra_auth_params.is_empty()),
    ] {
        if set {
            return Err(Error::invalid(
                field,
                "is not used by static credentials (api_key, http_basic, http_bearer): store the value with PutCredential",
            ));
        }
    }
    if d.credential_prefix.len() > 64 || d.credential_prefix.chars().any(char::is_control) {
        return Err(Error::invalid(
            "credential_prefix",
            "must be at most 64 characters without control characters",
        ));
    }
    if kind != ProviderKind::ApiKey {
        if d.credential_location.is_some_and(|l| l != Location::Header)
            || !(d.credential_name.is_empty() || d.credential_name == "Authorization")
            || !d.credential_prefix.is_empty()
        {
            return Err(Error::invalid(
                "credential_location",
                "http_basic and http_bearer always use the Authorization header",
            ));
        }
        return Ok(StaticCredential {
            kind,
            location: Location::Header,
            name: "Authorization".into(),
            prefix: String::new(),
        });
    }
    if !is_token(&d.credential_name) {
        let what = if d.credential_name.is_empty() {
            "is required for api_key providers"
        } else {
            "is not an HTTP token (letters, digits and !#$%&'*+-.^_`|~, no spaces or ':')"
        };
        return Err(Error::invalid(
            "credential_name",
            format!(
                "{what}: the header, query parameter or cookie name the key goes in, e.g. X-API-Key"
            ),
        ));
    }
    Ok(StaticCredential {
        kind,
        location: d.credential_location.unwrap_or_default(),
        name: d.credential_name.clone(),
        prefix: d.credential_prefix.clone(),
    })
}

/// Checks a value before it is stored: bounded, no control characters (it goes into headers),
/// and for `http_basic` a username without `:` (RFC 7617 section 2). Returns what is stored.
pub(crate) fn stored_value(
    c: &StaticCredential,
    username: &str,
    value: &SecretString,
) -> Result<SecretString, Error> {
    let v = value.expose_secret();
    let problem = if v.trim().is_empty() {
        Some("is empty (or only spaces): pass the credential itself".to_owned())
    } else if v.len() > MAX_VALUE {
        Some(format!("is {} bytes; at most {MAX_VALUE}", v.len()))
    } else if v.chars().any(char::is_control) {
        Some("holds a control character (a newline inside?): it is sent in an HTTP header, query or cookie".to_owned())
    } else {
        None
    };
    if let Some(problem) = problem {
        return Err(Error::invalid("value", problem));
    }
    match c.kind {
        ProviderKind::HttpBasic => {
            // Said as it is: "is required" for a username given with a ':' misleads.
            let problem = if username.is_empty() {
                Some("is required for http_basic")
            } else if username.len() > 256 {
                Some("is longer than 256 bytes")
            } else if username.contains(':') {
                Some("holds a ':', which HTTP Basic cannot carry in a username (RFC 7617)")
            } else if username.chars().any(char::is_control) {
                Some("holds a control character")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(Error::invalid("username", problem));
            }
            Ok(SecretString::from(format!("{username}:{v}")))
        }
        _ if !username.is_empty() => Err(Error::invalid(
            "username",
            "applies to http_basic providers only",
        )),
        _ => Ok(value.clone()),
    }
}

/// The stored value, applied where the provider says.
pub(crate) fn apply(c: &StaticCredential, stored: &SecretString) -> Applied {
    let v = stored.expose_secret();
    let value = match c.kind {
        ProviderKind::HttpBasic => format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(v.as_bytes())
        ),
        ProviderKind::HttpBearer => format!("Bearer {v}"),
        _ => format!("{}{v}", c.prefix),
    };
    Applied {
        location: c.location,
        name: c.name.clone(),
        value: SecretString::from(value),
    }
}
