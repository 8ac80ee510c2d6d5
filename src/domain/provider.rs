//! Provider configuration and its validation rules.

use super::{
    HandoutPolicy, InvalidInput, KindConfig, ProviderId, ProviderKind, Scopes, Separator,
    TokenAuthMethod, TokenDialect,
};
use crate::secret::SecretString;
use std::collections::BTreeMap;
use std::net::IpAddr;
use url::Url;

/// Authorization request parameters a provider config may not override: Valet sets them itself.
const RESERVED_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
];
const MAX_EXTRA_PARAMS: usize = 32;

/// A provider as an operator submits it, before validation.
#[derive(Debug, Default)]
pub struct ProviderDraft {
    pub id: String,
    pub name: String,
    pub kind: Option<ProviderKind>,
    pub client_id: String,
    /// `None` on update keeps the stored secret.
    pub client_secret: Option<SecretString>,
    pub auth_url: String,
    pub token_url: String,
    pub issuer: String,
    pub revocation_url: String,
    pub default_scopes: Vec<String>,
    pub extra_auth_params: BTreeMap<String, String>,
    /// `None`: the profile's, else client_secret_basic.
    pub token_auth_method: Option<TokenAuthMethod>,
    pub handout_policy: HandoutPolicy,
    /// 0: the default (30 days).
    pub reference_ttl_seconds: u32,
    /// A profile from the catalogue filling every field left empty.
    pub profile: String,
    /// Values for the profile's template variables (e.g. `tenant`).
    pub profile_vars: BTreeMap<String, String>,
    /// Set from the profile: how the provider's messages deviate from the RFCs.
    pub dialect: TokenDialect,
    /// Static credentials: where the value goes (default header), under which name, after
    /// which prefix.
    pub credential_location: Option<super::Location>,
    pub credential_name: String,
    pub credential_prefix: String,
    /// `service_account` and `private_key_jwt`: a PEM private key or a Google service-account
    /// JSON key. `None` on update keeps the stored one.
    pub private_key: Option<SecretString>,
    /// The `kid` put in signed assertions (a JSON key's `private_key_id` otherwise).
    pub key_id: String,
    /// `service_account`: the assertion's `iss`, `sub` and `aud` (defaults: the JSON key's
    /// `client_email` or the client id; the issuer; the token endpoint).
    pub assertion_issuer: String,
    pub assertion_subject: String,
    pub assertion_audience: String,
    /// `service_account`: `Authenticate`'s `user_id` becomes the assertion's `sub`.
    pub subject_from_user: bool,
    /// The token endpoint does token exchange (RFC 8693).
    pub token_exchange: bool,
    /// oauth2 and oidc: consent binding's return URL (the operator's app).
    pub consent_return_url: String,
    /// oauth2 and oidc: a re-consent by another account replaces the grant.
    pub allow_account_change: bool,
    /// mcp: the MCP server's URL; the rest is discovered.
    pub mcp_server_url: String,
    /// The hosts a token may be sent to (`Resolve` with a target URL).
    pub egress_hosts: Vec<String>,
    /// Background refresh of idle grants after this long; 0: off.
    pub keep_alive_seconds: u32,
    /// The user consents again this long after the last consent; 0: never.
    pub max_grant_age_seconds: u32,
    /// oauth2 and oidc: browser (default) or device (RFC 8628).
    pub consent_flow: super::ConsentFlow,
    /// RFC 8628 device authorization endpoint; oidc discovers it.
    pub device_authorization_url: String,
    /// Set from the profile; empty: `scope`.
    pub scope_param: String,
    pub scope_separator: Separator,
}

/// A provider: common settings plus one kind-specific configuration. The client secret (inside
/// the kind) is write-only at the API and only serialized into the sealed store record.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub id: ProviderId,
    pub name: String,
    pub kind: KindConfig,
    /// The profile it was created from, if any.
    pub profile: Option<String>,
    /// The values its profile's variables were given (e.g. `tenant`).
    pub profile_vars: BTreeMap<String, String>,
    pub default_scopes: Scopes,
    pub handout_policy: HandoutPolicy,
    /// Lifetime of references issued for this provider's grants.
    pub reference_ttl_seconds: u32,
    /// The hosts this provider's tokens may be sent to (exact, or `*.` for subdomains); empty:
    /// unchecked.
    pub egress_hosts: Vec<String>,
    /// Idle grants are refreshed in the background after this many seconds (providers that
    /// revoke unused refresh tokens); 0: never.
    pub keep_alive_seconds: u32,
    /// Re-attestation: a grant lapses this many seconds after the user's last consent, and the
    /// user must consent again; 0: never.
    pub max_grant_age_seconds: u32,
    pub created_at: i64,
    pub updated_at: i64,
}

/// 30 days.
pub const DEFAULT_REFERENCE_TTL: u32 = 30 * 24 * 3600;
/// One year.
pub const MAX_REFERENCE_TTL: u32 = 365 * 24 * 3600;

/// Checks a provider's display name.
pub fn check_name(name: &str) -> Result<(), InvalidInput> {
    if name.len() > 256 || name.chars().any(char::is_control) {
        return Err(InvalidInput::new(
            "name",
            "must be at most 256 characters without control characters",
        ));
    }
    Ok(())
}

/// Checks a client id and the extra authorization parameters of an OAuth kind.
pub fn check_client(client_id: &str, extra: &BTreeMap<String, String>) -> Result<(), InvalidInput> {
    if client_id.is_empty() {
        return Err(InvalidInput::new("client_id", "is required"));
    }
    if client_id.len() > 512 || client_id.chars().any(char::is_control) {
        return Err(InvalidInput::new(
            "client_id",
            "must be at most 512 characters without control characters",
        ));
    }
    if extra.len() > MAX_EXTRA_PARAMS {
        return Err(InvalidInput::new(
            "extra_auth_params",
            format!("at most {MAX_EXTRA_PARAMS} parameters are allowed"),
        ));
    }
    for (k, v) in extra {
        if RESERVED_PARAMS.contains(&k.as_str()) {
            return Err(InvalidInput::new(
                "extra_auth_params",
                format!("'{k}' is set by Valet and cannot be overridden"),
            ));
        }
        if k.is_empty() || k.len() > 128 || v.len() > 1024 {
            return Err(InvalidInput::new(
                "extra_auth_params",
                "names must be 1-128 characters and values at most 1024",
            ));
        }
        if k.chars().chain(v.chars()).any(char::is_control) {
            return Err(InvalidInput::new(
                "extra_auth_params",
                "names and values must not contain control characters",
            ));
        }
    }
    Ok(())
}

/// Parses an endpoint URL. HTTPS is required unless the host is a loopback address or
/// `allow_insecure` (dev mode) is set, so a misconfigured provider cannot leak codes in clear text.
pub fn check_endpoint_url(
    field: &'static str,
    raw: &str,
    allow_insecure: bool,
) -> Result<Url, InvalidInput> {
    if raw.is_empty() {
        return Err(InvalidInput::new(field, "is required"));
    }
    if raw.len() > 2048 {
        return Err(InvalidInput::new(field, "is longer than 2048 characters"));
    }
    let url = Url::parse(raw)
        .map_err(|e| InvalidInput::new(field, format!("is not a valid URL: {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(InvalidInput::new(field, "must not contain credentials"));
    }
    if url.fragment().is_some() {
        return Err(InvalidInput::new(field, "must not contain a fragment"));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if allow_insecure || is_loopback_host(&url) => Ok(url),
        "http" => Err(InvalidInput::new(
            field,
            "must use https (plain http is only allowed for loopback hosts or in dev mode)",
        )),
        other => Err(InvalidInput::new(
            field,
            format!("scheme '{other}' is not allowed; use https"),
        )),
    }
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls() {
        assert!(check_endpoint_url("token_url", "https://idp.example/token", false).is_ok());
        assert!(check_endpoint_url("token_url", "http://127.0.0.1:8080/token", false).is_ok());
        assert!(check_endpoint_url("token_url", "http://localhost/token", false).is_ok());
        assert!(check_endpoint_url("token_url", "http://idp.example/token", true).is_ok());
        let err = check_endpoint_url("token_url", "http://idp.example/token", false).unwrap_err();
        assert_eq!(err.field, "token_url");
        assert!(err.reason.contains("https"));
        for bad in [
            "",
            "not a url",
            "ftp://x/",
            "https://u:p@x/",
            "https://x/#f",
        ] {
            assert!(check_endpoint_url("auth_url", bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn reserved_params_refused() {
        let mut extra = BTreeMap::new();
        extra.insert("state".to_owned(), "x".to_owned());
        let err = check_client("c", &extra).unwrap_err();
        assert_eq!(err.field, "extra_auth_params");
        assert_eq!(
            check_client("", &BTreeMap::new()).unwrap_err().field,
            "client_id"
        );
    }
}
