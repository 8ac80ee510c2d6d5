//! Token requests and responses, as real providers speak them. RFC 6749 section 4 and 5 is the
//! default; a provider's `TokenDialect` (from its profile) covers the documented deviations: JSON
//! requests (Notion), errors sent with HTTP 200 (`error` field, Slack's `ok: false`), token fields
//! nested in an object (Slack's `authed_user`), comma-separated scopes (GitHub, Slack),
//! form-encoded responses (GitHub without `Accept`), absent `expires_in`, and non-secret response
//! fields the agent needs (`instance_url`, team ids). Error messages never carry the body.

use super::{OAuthError, TokenGrant, TokenSet};
use crate::domain::{OAuthClient, Scopes, TokenAuthMethod, TokenDialect, TokenRequestFormat};
use crate::secret::{ExposeSecret, SecretString};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use zeroize::Zeroizing;

/// The body parameters of a token request, secrets included (zeroized when dropped).
fn params(
    client: &OAuthClient,
    grant: &TokenGrant<'_>,
    assertion: Option<&SecretString>,
) -> Vec<(&'static str, Zeroizing<String>)> {
    let s = |v: &str| Zeroizing::new(v.to_owned());
    // RFC 8707: a client bound to one resource (an MCP server) names it on the code exchange
    // and every refresh, so no token is ever minted for anything else.
    let bound = client.resource.as_deref().filter(|_| {
        matches!(
            grant,
            TokenGrant::AuthorizationCode { .. } | TokenGrant::RefreshToken(_)
        )
    });
    let mut p = match grant {
        TokenGrant::AuthorizationCode {
            code,
            pkce_verifier,
            redirect_uri,
        } => vec![
            ("grant_type", s("authorization_code")),
            ("code", s(code.expose_secret())),
            ("redirect_uri", s(redirect_uri)),
            ("code_verifier", s(pkce_verifier.expose_secret())),
        ],
        TokenGrant::RefreshToken(t) => vec![
            ("grant_type", s("refresh_token")),
            ("refresh_token", s(t.expose_secret())),
        ],
        TokenGrant::ClientCredentials {
            scopes,
            audience,
            resource,
        } => {
            let mut p = vec![("grant_type", s("client_credentials"))];
            if !scopes.is_empty() {
                p.push(("scope", s(&scopes.join(crate::domain::Separator::Space))));
            }
            if let Some(a) = audience {
                p.push(("audience", s(a)));
            }
            if let Some(r) = resource {
                p.push(("resource", s(r)));
            }
            p
        }
        TokenGrant::TokenExchange {
            subject_token,
            subject_token_type,
            scopes,
            audience,
            resource,
        } => {
            let mut p = vec![
                ("grant_type", s(TOKEN_EXCHANGE)),
                ("subject_token", s(subject_token.expose_secret())),
                ("subject_token_type", s(subject_token_type)),
                ("requested_token_type", s(ACCESS_TOKEN_TYPE)),
            ];
            if !scopes.is_empty() {
                p.push(("scope", s(&scopes.join(crate::domain::Separator::Space))));
            }
            if let Some(a) = audience {
                p.push(("audience", s(a)));
            }
            if let Some(r) = resource {
                p.push(("resource", s(r)));
            }
            p
        }
        TokenGrant::DeviceCode(code) => vec![
            ("grant_type", s(DEVICE_CODE)),
            ("device_code", s(code.expose_secret())),
        ],
        TokenGrant::JwtBearer { assertion, scopes } => {
            let mut p = vec![
                ("grant_type", s(JWT_BEARER)),
                ("assertion", s(assertion.expose_secret())),
            ];
            if let Some(scopes) = scopes.filter(|s| !s.is_empty()) {
                p.push(("scope", s(&scopes.join(crate::domain::Separator::Space))));
            }
            p
        }
    };
    if let Some(r) = bound {
        p.push(("resource", s(r)));
    }
    client_params(client, assertion, &mut p);
    p
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 section 3: the token type of an OAuth access token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// An RFC 8628 device authorization request for `scopes` at `url`.
pub(super) fn device_request(
    client: &OAuthClient,
    url: &str,
    scopes: &Scopes,
    assertion: Option<&SecretString>,
) -> Result<oauth2::HttpRequest, OAuthError> {
    let mut p = Vec::new();
    if !scopes.is_empty() {
        p.push((
            "scope",
            Zeroizing::new(scopes.join(crate::domain::Separator::Space)),
        ));
    }
    client_params(client, assertion, &mut p);
    // RFC 8628 section 3.1: a public client names itself; a confidential one authenticates as
    // at the token endpoint.
    if !p.iter().any(|(k, _)| *k == "client_id") && client.client_secret.is_none() {
        p.push(("client_id", Zeroizing::new(client.client_id.clone())));
    }
    post(client, url, &p)
}

/// Parses a device authorization response (RFC 8628 section 3.2).
pub(super) fn parse_device(
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Result<super::DeviceAuthorization, OAuthError> {
    let root = body_object(content_type, body).ok_or_else(|| {
        OAuthError::Protocol(format!(
            "the device authorization endpoint answered HTTP {status} with a body that is not JSON"
        ))
    })?;
    if let Some(e) = body_error(&root, &TokenDialect::default()) {
        return Err(e);
    }
    if !(200..300).contains(&status) {
        return Err(OAuthError::Protocol(format!(
            "the device authorization endpoint answered HTTP {status} without an OAuth error"
        )));
    }
    let field = |k: &str| {
        string(root.get(k))
            .filter(|v| !v.is_empty() && v.len() <= 2048)
            .ok_or_else(|| {
                OAuthError::Protocol(format!("the device authorization response has no {k}"))
            })
    };
    let seconds = |k: &str| match root.get(k) {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    Ok(super::DeviceAuthorization {
        device_code: SecretString::from(field("device_code")?),
        user_code: field("user_code")?,
        verification_uri: field("verification_uri")?,
        verification_uri_complete: field("verification_uri_complete").ok(),
        expires_in: Duration::from_secs(seconds("expires_in").ok_or_else(|| {
            OAuthError::Protocol("the device authorization response has no expires_in".into())
        })?),
        interval: Duration::from_secs(seconds("interval").unwrap_or(5).clamp(1, 300)),
    })
}
const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A `private_key_jwt` client assertion (RFC 7523 section 3, OpenID Connect Core section 9):
/// `iss` and `sub` the client id, `aud` the endpoint it is sent to.
pub(super) fn client_assertion(
    client: &OAuthClient,
    audience: &str,
    now: i64,
) -> Result<Option<SecretString>, OAuthError> {
    let Some(key) = client
        .signing_key
        .as_ref()
        .filter(|_| client.auth_method == TokenAuthMethod::PrivateKeyJwt)
    else {
        return Ok(None);
    };
    let failed = |e: crate::jwt::KeyError| OAuthError::Protocol(format!("client assertion: {e}"));
    let claims = crate::jwt::claims(&client.client_id, &client.client_id, audience, now, &[])
        .map_err(failed)?;
    key.sign(&claims).map(Some).map_err(failed)
}

/// The client's credentials in the body, where its auth method puts them there.
fn client_params(
    client: &OAuthClient,
    assertion: Option<&SecretString>,
    p: &mut Vec<(&'static str, Zeroizing<String>)>,
) {
    let s = |v: &str| Zeroizing::new(v.to_owned());
    if let Some(a) = assertion {
        p.push(("client_id", s(&client.client_id)));
        p.push(("client_assertion_type", s(CLIENT_ASSERTION_TYPE)));
        p.push(("client_assertion", s(a.expose_secret())));
        return;
    }
    match (&client.client_secret, client.auth_method) {
        (Some(secret), TokenAuthMethod::ClientSecretPost) => {
            p.push(("client_id", s(&client.client_id)));
            p.push(("client_secret", s(secret.expose_secret())));
        }
        // Basic sends the secret in the header; a public client names itself in the body
        // (a service account without a client names nothing).
        (Some(_), TokenAuthMethod::ClientSecretBasic) => {}
        (None, _) | (_, TokenAuthMethod::PrivateKeyJwt) => {
            if !client.client_id.is_empty() {
                p.push(("client_id", s(&client.client_id)));
            }
        }
    }
}

/// RFC 6749 section 2.3.1: both halves form-encoded, then base64.
fn basic_auth(client: &OAuthClient, secret: &SecretString) -> Zeroizing<String> {
    let enc = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    let pair = Zeroizing::new(format!(
        "{}:{}",
        enc(&client.client_id),
        enc(secret.expose_secret())
    ));
    Zeroizing::new(format!("Basic {}", STANDARD.encode(pair.as_bytes())))
}

/// The HTTP request for `grant` at the client's token endpoint; `assertion` authenticates a
/// `private_key_jwt` client.
pub(super) fn request(
    client: &OAuthClient,
    grant: &TokenGrant<'_>,
    assertion: Option<&SecretString>,
) -> Result<oauth2::HttpRequest, OAuthError> {
    let mut p: Vec<(&str, Zeroizing<String>)> = params(client, grant, assertion);
    if matches!(grant, TokenGrant::AuthorizationCode { .. }) {
        p.extend(
            client
                .dialect
                .exchange_params
                .iter()
                .map(|(k, v)| (k.as_str(), Zeroizing::new(v.clone()))),
        );
    }
    post(client, client.token_url.as_str(), &p)
}

/// An RFC 7009 revocation request for `token` at `url`.
pub(super) fn revocation(
    client: &OAuthClient,
    url: &str,
    token: &SecretString,
    hint: &'static str,
    assertion: Option<&SecretString>,
) -> Result<oauth2::HttpRequest, OAuthError> {
    let s = |v: &str| Zeroizing::new(v.to_owned());
    let mut p = vec![
        ("token", s(token.expose_secret())),
        ("token_type_hint", s(hint)),
    ];
    client_params(client, assertion, &mut p);
    post(client, url, &p)
}

/// RFC 7009 section 2.2: 200 means revoked (or already invalid), as does any 2xx (204 from
/// Reddit); anything else is an error.
pub(super) fn parse_revocation(status: u16, body: &[u8]) -> Result<(), OAuthError> {
    // RFC 7009 says 200; some answer 204 No Content (Reddit), which says the same.
    if (200..300).contains(&status) {
        return Ok(());
    }
    let code = body_object("application/json", body)
        .and_then(|root| string(root.get("error")))
        .map_or_else(|| format!("HTTP {status}"), |c| safe_code(&c));
    Err(OAuthError::Rejected(code))
}

/// A POST of `params` to `url`, encoded and authenticated as the client is configured.
fn post(
    client: &OAuthClient,
    url: &str,
    params: &[(&str, Zeroizing<String>)],
) -> Result<oauth2::HttpRequest, OAuthError> {
    let (content_type, body) = match client.dialect.request {
        TokenRequestFormat::Form => {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in params {
                form.append_pair(k, v);
            }
            (
                "application/x-www-form-urlencoded",
                form.finish().into_bytes(),
            )
        }
        TokenRequestFormat::Json => {
            let object: Map<String, Value> = params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::from(v.as_str())))
                .collect();
            (
                "application/json",
                Value::Object(object).to_string().into_bytes(),
            )
        }
    };
    let mut builder = http::Request::builder()
        .method(http::Method::POST)
        .uri(url)
        .header(http::header::CONTENT_TYPE, content_type)
        // Said even when 0: an empty POST without a length is refused by some servers
        // (oidc-provider answers `invalid_request`).
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::ACCEPT, "application/json");
    if let (Some(secret), TokenAuthMethod::ClientSecretBasic) =
        (&client.client_secret, client.auth_method)
    {
        builder = builder.header(
            http::header::AUTHORIZATION,
            basic_auth(client, secret).as_str(),
        );
    }
    builder
        .body(body)
        .map_err(|_| OAuthError::Protocol("cannot build the request to the provider".into()))
}

/// An OAuth error code from a provider, reduced to characters safe to echo and log.
pub fn safe_code(raw: &str) -> String {
    let code: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect();
    if code.is_empty() {
        "unknown_error".into()
    } else {
        code
    }
}

/// The response body as a JSON object; form-encoded bodies become an object of strings.
fn body_object(content_type: &str, body: &[u8]) -> Option<Map<String, Value>> {
    let form = || -> Map<String, Value> {
        url::form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), Value::from(v.into_owned())))
            .collect()
    };
    if content_type.starts_with("application/x-www-form-urlencoded") {
        return Some(form());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(o)) => Some(o),
        Ok(_) => None,
        // A form under another label (`text/plain`, or even `application/json`), as some token
        // endpoints answer (GitHub's form answer behind a proxy that relabels it, Facebook's
        // `text/plain`): taken when it names a token or an error and holds no markup, so an
        // HTML page is not (not even one linking to `…&error=…`).
        Err(_) if !body.contains(&b'<') => {
            Some(form()).filter(|o| o.contains_key("access_token") || o.contains_key("error"))
        }
        Err(_) => None,
    }
}

/// The value at a dotted path.
fn at<'a>(root: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut v = root.get(parts.next()?)?;
    for p in parts {
        v = v.as_object()?.get(p)?;
    }
    Some(v)
}

fn string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A provider error in the body (whatever the HTTP status said), mapped.
fn body_error(root: &Map<String, Value>, dialect: &TokenDialect) -> Option<OAuthError> {
    let said_not_ok = dialect
        .ok_field
        .as_deref()
        .and_then(|f| root.get(f))
        .is_some_and(|v| v == &Value::Bool(false));
    let code = string(root.get("error"))
        .or_else(|| {
            // Notion names a refused request in `code`, with `"object": "error"` and a
            // `message`, `invalid_grant` among them:
            // https://developers.notion.com/reference/status-codes. Only in that shape: another
            // body's `code` may be the authorization code the request sent, echoed.
            let notion_style = root.get("object") == Some(&Value::from("error"));
            notion_style
                .then(|| root.get("code")?.as_str().map(str::to_owned))
                .flatten()
        })
        .filter(|c| !c.is_empty());
    if code.is_none() && !said_not_ok {
        return None;
    }
    let code = safe_code(code.as_deref().unwrap_or("unknown_error"));
    Some(match code.as_str() {
        // Slack and GitHub spell a dead refresh token their own ways.
        "invalid_grant" | "invalid_refresh_token" | "bad_refresh_token" => OAuthError::InvalidGrant,
        _ => OAuthError::Rejected(code),
    })
}

/// Whether a refused refresh's `code` (and `error_description`) is one the provider's profile
/// names as its word for a dead refresh token: `code`, or `code: text` when the description
/// must hold `text` too (X's `invalid_request` also refuses malformed requests).
fn says_dead_grant(dialect: &TokenDialect, code: &str, root: &Map<String, Value>) -> bool {
    let description = string(root.get("error_description")).unwrap_or_default();
    dialect
        .invalid_grant_errors
        .iter()
        .any(|e| match e.split_once(": ") {
            Some((c, text)) => c == code && description.contains(text),
            None => e == code,
        })
}

/// Parses a token endpoint's answer (the transport already turned 5xx into `Unavailable`) to a
/// request that was a refresh or not.
pub(crate) fn parse(
    status: u16,
    content_type: &str,
    body: &[u8],
    dialect: &TokenDialect,
    refresh: bool,
) -> Result<TokenSet, OAuthError> {
    let root = body_object(content_type, body).ok_or_else(|| {
        OAuthError::Protocol(format!(
            "the token endpoint answered HTTP {status} with a body that is neither JSON nor a form"
        ))
    })?;
    if let Some(e) = body_error(&root, dialect) {
        return Err(match e {
            // The provider's own word for a dead refresh token (X: `invalid_request`), only
            // where it answers a refresh.
            OAuthError::Rejected(code) if refresh && says_dead_grant(dialect, &code, &root) => {
                tracing::info!(
                    code = code.as_str(),
                    "the provider's answer to a refresh is its word for a dead refresh token (its profile's invalid_grant_errors)"
                );
                OAuthError::InvalidGrant
            }
            e => e,
        });
    }
    if !(200..300).contains(&status) {
        return Err(OAuthError::Protocol(format!(
            "the token endpoint answered HTTP {status} without an OAuth error"
        )));
    }
    let token = match dialect.token_path.as_deref() {
        None => &root,
        // A refresh answers with the token at the top: Slack nests the user token under
        // `authed_user` in the code exchange only, and a rotated one comes back flat with
        // `"token_type": "user"` (`OAuthV2TokenRefreshResponse` in Slack's own SDK,
        // https://docs.slack.dev/tools/node-slack-sdk/reference/oauth/interfaces/OAuthV2TokenRefreshResponse).
        // The refresh token sent was the user's, so the token answered is the user's.
        Some(path) if refresh && at(&root, path).and_then(Value::as_object).is_none() => &root,
        Some(path) => at(&root, path).and_then(Value::as_object).ok_or_else(|| {
            OAuthError::Protocol(format!("the token response has no `{path}` object"))
        })?,
    };
    let access_token = string(token.get("access_token"))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OAuthError::Protocol("the token response has no access_token".into()))?;
    let expires_in = match token.get("expires_in") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .filter(|s| *s > 0)
    .or((dialect.token_lifetime_seconds > 0).then_some(u64::from(dialect.token_lifetime_seconds)))
    .map(Duration::from_secs);
    let secret = |k: &str| string(token.get(k).or_else(|| root.get(k))).filter(|t| !t.is_empty());
    let refresh_token = secret("refresh_token").map(SecretString::from);
    let mut scopes = granted_scopes(token, dialect);
    if refresh_token.is_some()
        && !dialect.unlisted_scopes.is_empty()
        && let Some(listed) = &scopes
    {
        let unlisted = Scopes::parse_granted(
            &dialect.unlisted_scopes.join(" "),
            crate::domain::Separator::Space,
        );
        scopes = Some(listed.union(&unlisted));
    }
    Ok(TokenSet {
        access_token: SecretString::from(access_token),
        token_type: string(token.get("token_type")).unwrap_or_else(|| "Bearer".into()),
        expires_in,
        refresh_token,
        scopes,
        id_token: secret("id_token").map(SecretString::from),
        metadata: metadata(&root, dialect),
    })
}

/// The granted scopes: `scope` as the provider separates it, or a `scopes` array (HubSpot).
fn granted_scopes(token: &Map<String, Value>, dialect: &TokenDialect) -> Option<Scopes> {
    let granted = if let Some(s) = string(token.get("scope")) {
        Scopes::parse_granted(&s, dialect.granted_scope_separator)
    } else {
        let items = token.get("scopes")?.as_array()?;
        let items: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
        Scopes::parse_granted(&items.join(" "), crate::domain::Separator::Space)
    };
    if dialect.scope_aliases.is_empty() {
        return Some(granted);
    }
    // Both names count as granted, so neither looks declined.
    let asked: Vec<&str> = granted
        .iter()
        .filter_map(|s| dialect.scope_aliases.get(s).map(String::as_str))
        .collect();
    Some(granted.union(&Scopes::parse_granted(
        &asked.join(" "),
        crate::domain::Separator::Space,
    )))
}

/// The response fields the dialect keeps; a field that looks like a secret is never kept.
fn metadata(root: &Map<String, Value>, dialect: &TokenDialect) -> BTreeMap<String, String> {
    dialect
        .metadata
        .iter()
        .filter(|path| !path.ends_with("token") && !path.contains("secret"))
        .filter_map(|path| {
            let v = string(at(root, path))?;
            (v.len() <= 2048).then(|| (path.clone(), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Separator;

    const JSON: &str = "application/json";

    #[test]
    fn github_comma_scopes_and_no_expiry() {
        // https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps
        let body = br#"{"access_token":"gho_x","scope":"gist,repo","token_type":"bearer"}"#;
        let t = parse(200, JSON, body, &TokenDialect::default(), false).unwrap();
        assert_eq!(t.scopes.unwrap().to_vec(), ["gist", "repo"]);
        assert!(t.expires_in.is_none() && t.refresh_token.is_none());
        let form = b"access_token=gho_x&scope=repo%2Cgist&token_type=bearer";
        let t = parse(
            200,
            "application/x-www-form-urlencoded",
            form,
            &TokenDialect::default(),
            false,
        )
        .unwrap();
        assert_eq!(t.scopes.unwrap().to_vec(), ["gist", "repo"]);
        // The same form labelled as something else is still read; a page that is neither is not.
        for label in [JSON, "text/plain", ""] {
            let t = parse(200, label, form, &TokenDialect::default(), false).unwrap();
            assert_eq!(t.access_token.expose_secret(), "gho_x");
            assert!(matches!(
                parse(
                    400,
                    label,
                    b"error=invalid_grant&error_description=gone",
                    &TokenDialect::default(),
                    false,
                ),
                Err(OAuthError::InvalidGrant)
            ));
            for page in [
                &b"<html><body>access_token=1</body></html>"[..],
                b"<a href='/x?y=1&error=x'>",
                b"[1]",
                b"",
            ] {
                let err = parse(200, label, page, &TokenDialect::default(), false).unwrap_err();
                assert!(err.to_string().contains("neither JSON nor a form"), "{err}");
            }
        }
        // Entra never lists `offline_access`; its refresh token shows it was granted.
        let entra = TokenDialect {
            unlisted_scopes: vec!["offline_access".into()],
            ..TokenDialect::default()
        };
        let with_rt = br#"{"access_token":"t","refresh_token":"r","scope":"openid User.Read"}"#;
        let scopes = parse(200, JSON, with_rt, &entra, false)
            .unwrap()
            .scopes
            .unwrap();
        assert_eq!(scopes.to_vec(), ["User.Read", "offline_access", "openid"]);
        let without = br#"{"access_token":"t","scope":"openid User.Read"}"#;
        let scopes = parse(200, JSON, without, &entra, false)
            .unwrap()
            .scopes
            .unwrap();
        assert_eq!(scopes.to_vec(), ["User.Read", "openid"]);
        // A revocation is done on any 2xx (204 included), refused with the error it names.
        assert!(parse_revocation(200, b"").is_ok());
        assert!(parse_revocation(204, b"").is_ok());
        assert!(matches!(
            parse_revocation(400, br#"{"error":"unsupported_token_type"}"#),
            Err(OAuthError::Rejected(c)) if c == "unsupported_token_type"
        ));
        assert!(matches!(
            parse_revocation(404, b"not here"),
            Err(OAuthError::Rejected(c)) if c == "HTTP 404"
        ));
        // X's answer to a dead refresh token is `invalid_request`: with the x profile's
        // `invalid_grant_errors`, a dead grant on a refresh, and still a refusal of a code
        // exchange (or anywhere without the profile).
        let x = TokenDialect {
            invalid_grant_errors: vec![
                "invalid_request: Value passed for the token was invalid".into(),
            ],
            ..TokenDialect::default()
        };
        let dead = br#"{"error":"invalid_request","error_description":"Value passed for the token was invalid."}"#;
        let malformed = br#"{"error":"invalid_request","error_description":"Missing required parameter [grant_type]."}"#;
        assert!(matches!(
            parse(400, JSON, malformed, &x, true),
            Err(OAuthError::Rejected(c)) if c == "invalid_request"
        ));
        assert!(matches!(
            parse(400, JSON, dead, &x, true),
            Err(OAuthError::InvalidGrant)
        ));
        assert!(matches!(
            parse(400, JSON, dead, &x, false),
            Err(OAuthError::Rejected(c)) if c == "invalid_request"
        ));
        assert!(matches!(
            parse(400, JSON, dead, &TokenDialect::default(), true),
            Err(OAuthError::Rejected(c)) if c == "invalid_request"
        ));
        // Notion's shape: `code` and `message`, HTTP 400 (https://developers.notion.com/reference/status-codes).
        let notion = br#"{"object":"error","status":400,"code":"invalid_grant","message":"Invalid code: this code has been revoked."}"#;
        assert!(matches!(
            parse(400, JSON, notion, &TokenDialect::default(), true),
            Err(OAuthError::InvalidGrant)
        ));
        let notion = br#"{"object":"error","status":401,"code":"unauthorized","message":"API token is invalid."}"#;
        assert!(matches!(
            parse(401, JSON, notion, &TokenDialect::default(), false),
            Err(OAuthError::Rejected(c)) if c == "unauthorized"
        ));
        // A `code` in a successful answer is not an error (nor a numeric one in a refusal).
        let ok = br#"{"access_token":"t","code":"x"}"#;
        assert!(parse(200, JSON, ok, &TokenDialect::default(), false).is_ok());
        for other in [
            &br#"{"code":400,"message":"bad"}"#[..],
            br#"{"code":"an-echoed-authorization-code","message":"bad"}"#,
        ] {
            let err = parse(400, JSON, other, &TokenDialect::default(), false).unwrap_err();
            assert!(err.to_string().contains("without an OAuth error"), "{err}");
        }
        // GitHub reports errors with HTTP 200.
        let err = br#"{"error":"bad_verification_code","error_description":"The code passed is incorrect or expired."}"#;
        assert!(matches!(
            parse(200, JSON, err, &TokenDialect::default(), false),
            Err(OAuthError::Rejected(c)) if c == "bad_verification_code"
        ));
    }

    #[test]
    fn slack_nested_user_token_ok_false_and_metadata() {
        // https://api.slack.com/methods/oauth.v2.access
        let dialect = TokenDialect {
            token_path: Some("authed_user".into()),
            ok_field: Some("ok".into()),
            granted_scope_separator: Separator::Comma,
            metadata: vec![
                "team.id".into(),
                "authed_user.id".into(),
                "authed_user.access_token".into(),
            ],
            ..TokenDialect::default()
        };
        let body = br#"{"ok":true,"access_token":"xoxb-bot","token_type":"bot","scope":"commands",
            "team":{"id":"T1","name":"Acme"},
            "authed_user":{"id":"U1","scope":"chat:write,channels:history","access_token":"xoxp-user","token_type":"user"}}"#;
        let t = parse(200, JSON, body, &dialect, false).unwrap();
        assert_eq!(t.access_token.expose_secret(), "xoxp-user");
        assert_eq!(
            t.scopes.unwrap().to_vec(),
            ["channels:history", "chat:write"]
        );
        assert_eq!(t.metadata.get("team.id").map(String::as_str), Some("T1"));
        assert_eq!(
            t.metadata.get("authed_user.id").map(String::as_str),
            Some("U1")
        );
        assert!(
            !t.metadata.contains_key("authed_user.access_token"),
            "never a token"
        );
        let err = br#"{"ok":false,"error":"invalid_code"}"#;
        assert!(
            matches!(parse(200, JSON, err, &dialect, false), Err(OAuthError::Rejected(c)) if c == "invalid_code")
        );
        let refused = br#"{"ok":false,"error":"invalid_refresh_token"}"#;
        assert!(matches!(
            parse(200, JSON, refused, &dialect, true),
            Err(OAuthError::InvalidGrant)
        ));
        // A refresh of the user token answers it at the top, with its rotated refresh token
        // (`OAuthV2TokenRefreshResponse` in Slack's SDK); the team is still there, the user not.
        let refreshed = br#"{"ok":true,"app_id":"A1","scope":"chat:write,channels:history",
            "token_type":"user","access_token":"xoxe.xoxp-new","refresh_token":"xoxe-1-new",
            "expires_in":43200,"team":{"id":"T1","name":"Acme"},"enterprise":null,
            "is_enterprise_install":false}"#;
        let t = parse(200, JSON, refreshed, &dialect, true).unwrap();
        assert_eq!(t.access_token.expose_secret(), "xoxe.xoxp-new");
        assert_eq!(t.refresh_token.unwrap().expose_secret(), "xoxe-1-new");
        assert_eq!(t.expires_in, Some(Duration::from_secs(43200)));
        assert_eq!(t.token_type, "user");
        assert_eq!(t.metadata.get("team.id").map(String::as_str), Some("T1"));
        assert!(!t.metadata.contains_key("authed_user.id"));
        // A code exchange without the user's token (a bot-only install) is not taken for one.
        let bot_only =
            br#"{"ok":true,"access_token":"xoxb-bot","token_type":"bot","team":{"id":"T1"}}"#;
        let err = parse(200, JSON, bot_only, &dialect, false).unwrap_err();
        assert!(err.to_string().contains("no `authed_user` object"), "{err}");
    }

    #[test]
    fn renamed_scopes_count_as_the_ones_asked_for() {
        // https://developers.google.com/identity/protocols/oauth2/scopes: `email` is granted as
        // https://www.googleapis.com/auth/userinfo.email.
        let body = br#"{"access_token":"a","scope":"openid https://www.googleapis.com/auth/userinfo.email"}"#;
        let d = TokenDialect {
            scope_aliases: [(
                "https://www.googleapis.com/auth/userinfo.email".to_owned(),
                "email".to_owned(),
            )]
            .into(),
            ..TokenDialect::default()
        };
        let granted = parse(200, JSON, body, &d, false).unwrap().scopes.unwrap();
        let asked = Scopes::parse("s", &["openid", "email"]).unwrap();
        assert!(granted.contains_all(&asked), "{granted:?}");
    }

    #[test]
    fn a_scopes_array_is_read_too() {
        // https://developers.hubspot.com/docs/api/oauth/tokens
        let body = br#"{"access_token":"a","refresh_token":"r","expires_in":1800,"scopes":["oauth","crm.objects.contacts.read"],"hub_id":62515}"#;
        let d = TokenDialect {
            metadata: vec!["hub_id".into()],
            ..TokenDialect::default()
        };
        let t = parse(200, JSON, body, &d, false).unwrap();
        assert_eq!(
            t.scopes.unwrap().to_vec(),
            ["crm.objects.contacts.read", "oauth"]
        );
        assert_eq!(t.metadata.get("hub_id").map(String::as_str), Some("62515"));
    }

    #[test]
    fn invalid_grant_and_hostile_bodies() {
        let d = TokenDialect::default();
        assert!(matches!(
            parse(400, JSON, br#"{"error":"invalid_grant"}"#, &d, false),
            Err(OAuthError::InvalidGrant)
        ));
        let long = format!(r#"{{"error":"{}\nforged log line"}}"#, "x".repeat(100_000));
        match parse(400, JSON, long.as_bytes(), &d, false) {
            Err(OAuthError::Rejected(c)) => assert!(c.len() <= 64 && !c.contains('\n')),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(200, JSON, b"<html>", &d, false),
            Err(OAuthError::Protocol(_))
        ));
        assert!(matches!(
            parse(200, JSON, br#"{"token_type":"bearer"}"#, &d, false),
            Err(OAuthError::Protocol(_))
        ));
        assert!(matches!(
            parse(401, JSON, b"{}", &d, false),
            Err(OAuthError::Protocol(_))
        ));
    }

    #[test]
    fn lifetimes_come_from_the_response_or_the_profile_never_invented() {
        let body = br#"{"access_token":"a","instance_url":"https://na1.salesforce.com","id":"https://login.salesforce.com/id/00D/005"}"#;
        let d = TokenDialect {
            metadata: vec!["instance_url".into()],
            ..TokenDialect::default()
        };
        let t = parse(200, JSON, body, &d, false).unwrap();
        assert!(t.expires_in.is_none());
        assert_eq!(
            t.metadata.get("instance_url").map(String::as_str),
            Some("https://na1.salesforce.com")
        );
        let d = TokenDialect {
            token_lifetime_seconds: 7200,
            ..TokenDialect::default()
        };
        assert_eq!(
            parse(200, JSON, body, &d, false).unwrap().expires_in,
            Some(Duration::from_secs(7200))
        );
        let with = br#"{"access_token":"a","expires_in":"3600"}"#;
        assert_eq!(
            parse(200, JSON, with, &d, false).unwrap().expires_in,
            Some(Duration::from_secs(3600))
        );
    }

    #[test]
    fn requests_authenticate_the_client_as_configured() {
        let mut client = OAuthClient {
            provider: "idp".into(),
            client_id: "id:1".into(),
            client_secret: Some(SecretString::from("s&cret")),
            auth_method: TokenAuthMethod::ClientSecretBasic,
            signing_key: None,
            token_exchange: false,
            token_url: url::Url::parse("https://idp.example/token").unwrap(),
            dialect: TokenDialect::default(),
            resource: None,
        };
        let rt = SecretString::from("rt");
        let req = request(&client, &TokenGrant::RefreshToken(&rt), None).unwrap();
        let auth = req.headers()[http::header::AUTHORIZATION].to_str().unwrap();
        assert_eq!(
            auth,
            format!("Basic {}", STANDARD.encode("id%3A1:s%26cret"))
        );
        assert!(!String::from_utf8_lossy(req.body()).contains("client_secret"));
        client.auth_method = TokenAuthMethod::ClientSecretPost;
        client.dialect.request = TokenRequestFormat::Json;
        let req = request(&client, &TokenGrant::RefreshToken(&rt), None).unwrap();
        let body: Value = serde_json::from_slice(req.body()).unwrap();
        assert_eq!(body["grant_type"], "refresh_token");
        assert_eq!(body["client_secret"], "s&cret");
        assert!(req.headers().get(http::header::AUTHORIZATION).is_none());
        client.dialect.request = TokenRequestFormat::Form;
        let scopes = Scopes::parse("s", &["a", "b"]).unwrap();
        let grant = TokenGrant::ClientCredentials {
            scopes: &scopes,
            audience: Some("api://x"),
            resource: Some("https://api.example/v1"),
        };
        let req = request(&client, &grant, None).unwrap();
        let form: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(req.body())
                .into_owned()
                .collect();
        assert_eq!(form["grant_type"], "client_credentials");
        assert_eq!(form["scope"], "a b");
        assert_eq!(form["audience"], "api://x");
        assert_eq!(form["resource"], "https://api.example/v1");
        // A profile's exchange parameters go with the code exchange only (Shopify's
        // `expiring=1`), not with refreshes.
        client.dialect.exchange_params = [("expiring".to_owned(), "1".to_owned())].into();
        let (code, verifier) = (SecretString::from("c"), SecretString::from("v"));
        let exchange = TokenGrant::AuthorizationCode {
            code: &code,
            pkce_verifier: &verifier,
            redirect_uri: "https://valet.example/cb",
        };
        let form = form_of(&request(&client, &exchange, None).unwrap());
        assert_eq!(form.get("expiring").map(String::as_str), Some("1"));
        assert_eq!(form["grant_type"], "authorization_code");
        let form = form_of(&request(&client, &TokenGrant::RefreshToken(&rt), None).unwrap());
        assert!(!form.contains_key("expiring"), "{form:?}");
    }

    fn form_of(req: &oauth2::HttpRequest) -> std::collections::HashMap<String, String> {
        url::form_urlencoded::parse(req.body())
            .into_owned()
            .collect()
    }

    #[test]
    fn private_key_jwt_sends_a_signed_assertion_and_no_secret() {
        let pem = include_str!("../../tests/fixtures/test-ec-p256.pem");
        let key = crate::jwt::SigningKey::from_pem(&pem.into(), Some("k1".into())).unwrap();
        let client = OAuthClient {
            provider: "idp".into(),
            client_id: "pk-client".into(),
            client_secret: None,
            auth_method: TokenAuthMethod::PrivateKeyJwt,
            signing_key: Some(key),
            token_exchange: false,
            token_url: url::Url::parse("https://idp.example/token").unwrap(),
            dialect: TokenDialect::default(),
            resource: None,
        };
        let assertion = client_assertion(&client, "https://idp.example/token", 1_000)
            .unwrap()
            .expect("an assertion for private_key_jwt");
        let rt = SecretString::from("rt");
        let req = request(&client, &TokenGrant::RefreshToken(&rt), Some(&assertion)).unwrap();
        assert!(req.headers().get(http::header::AUTHORIZATION).is_none());
        let form = form_of(&req);
        assert_eq!(form["client_id"], "pk-client");
        assert_eq!(form["client_assertion_type"], CLIENT_ASSERTION_TYPE);
        let claims = form["client_assertion"].split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(claims)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["iss"], "pk-client");
        assert_eq!(claims["sub"], "pk-client");
        assert_eq!(claims["aud"], "https://idp.example/token");
        let basic = OAuthClient {
            auth_method: TokenAuthMethod::ClientSecretBasic,
            ..client
        };
        assert!(client_assertion(&basic, "aud", 0).unwrap().is_none());
    }

    #[test]
    fn jwt_bearer_requests_carry_the_assertion_and_scopes_only_when_asked() {
        let client = OAuthClient {
            provider: "idp".into(),
            client_id: String::new(),
            client_secret: None,
            auth_method: TokenAuthMethod::ClientSecretBasic,
            signing_key: None,
            token_exchange: false,
            token_url: url::Url::parse("https://idp.example/token").unwrap(),
            dialect: TokenDialect::default(),
            resource: None,
        };
        let assertion = SecretString::from("a.b.c");
        let scopes = Scopes::parse("s", &["x"]).unwrap();
        for (scopes, want) in [(Some(&scopes), Some("x")), (None, None)] {
            let grant = TokenGrant::JwtBearer {
                assertion: &assertion,
                scopes,
            };
            let form = form_of(&request(&client, &grant, None).unwrap());
            assert_eq!(form["grant_type"], JWT_BEARER);
            assert_eq!(form["assertion"], "a.b.c");
            assert_eq!(form.get("scope").map(String::as_str), want);
            assert!(!form.contains_key("client_id"), "no client to name");
        }
    }

    proptest::proptest! {
        /// Whatever a provider sends, parsing answers (a token or an error) and never panics,
        /// and no error text is longer than the cap or holds a line break.
        #[test]
        fn the_token_response_parser_never_panics(
            answer in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
        ) {
            crate::fuzzing::token_response(&answer);
        }

        #[test]
        fn json_shaped_answers_never_panic(
            error in proptest::option::of(".{0,80}"),
            token in proptest::option::of("[ -~]{0,40}"),
            expires in proptest::option::of(proptest::prelude::any::<i64>()),
            scope in proptest::option::of("[ -~]{0,80}"),
        ) {
            let mut v = serde_json::Map::new();
            if let Some(e) = error { v.insert("error".into(), e.into()); }
            if let Some(t) = token { v.insert("access_token".into(), t.into()); }
            if let Some(x) = expires { v.insert("expires_in".into(), x.into()); }
            if let Some(s) = scope { v.insert("scope".into(), s.into()); }
            let body = Value::Object(v).to_string();
            if let Ok(t) = parse(200, JSON, body.as_bytes(), &TokenDialect::default(), false) {
                proptest::prop_assert!(!t.access_token.expose_secret().is_empty());
                proptest::prop_assert!(t.expires_in.is_none_or(|d| d.as_secs() > 0));
            }
        }
    }
}
