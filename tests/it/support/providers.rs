//! Loopback doubles of real OAuth providers (none of them can be reached from here). Each answers
//! as that provider's public documentation describes, cited per family below; they are doubles,
//! not the providers. The authorization endpoint consents at once (redirecting to the callback
//! with a code), the token endpoint speaks the family's dialect, and `/api/me` accepts a live
//! access token sent as `Authorization: Bearer`. Knobs grant fewer scopes or kill refresh tokens.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// GitHub OAuth App: https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps
    /// Tokens never expire, no refresh token, `scope` comma-separated, errors with HTTP 200.
    GitHubOAuthApp,
    /// GitHub App user tokens: https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/refreshing-user-access-tokens
    /// `expires_in` 28800, rotating refresh tokens, `bad_refresh_token` with HTTP 200.
    GitHubApp,
    /// Slack `oauth.v2.access` user tokens: https://api.slack.com/methods/oauth.v2.access and
    /// https://api.slack.com/authentication/rotation — the user token under `authed_user` in
    /// the code exchange, at the top of a refresh's answer (rotating), `token_type: "user"`,
    /// comma scopes, `{"ok": false}` errors with HTTP 200.
    Slack,
    /// Salesforce web-server flow: https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_web_server_flow.htm
    /// and the refresh token flow (…remoteaccess_oauth_refresh_token_flow.htm): no `expires_in`,
    /// `instance_url` and `id` in the response, the refresh response has no refresh token.
    Salesforce,
    /// Notion: https://developers.notion.com/docs/authorization — a JSON token request with
    /// HTTP Basic client authentication; `workspace_id`, `bot_id` in the response; no expiry.
    Notion,
    /// No single provider: an authorization server following RFC 6749 that also does token
    /// exchange as RFC 8693 section 2 specifies (https://www.rfc-editor.org/rfc/rfc8693#section-2):
    /// `subject_token` must be one of its live access tokens with `subject_token_type`
    /// `…:access_token`, requested scopes must be within the subject token's (`invalid_scope`),
    /// an audience it does not serve is `invalid_target`, and the response carries
    /// `issued_token_type`. Written for these tests; no real one runs here.
    Rfc8693,
    /// Microsoft Entra ID v2.0 (https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-auth-code-flow):
    /// `offline_access` is never echoed in `scope`, though a refresh token comes (a Microsoft
    /// answer: https://learn.microsoft.com/en-us/answers/questions/806413), and the OpenID
    /// scopes may be left out (MSAL drops them before comparing "if the default scopes are not
    /// returned from the server": `removeOIDCScopes`, microsoft-authentication-library-for-js
    /// ScopeSet.ts); this double leaves them out of every refresh's `scope`. A new refresh
    /// token with every refresh; `ext_expires_in` beside `expires_in`.
    Entra,
    /// Intuit (QuickBooks Online):
    /// https://developer.intuit.com/app/developer/qbo/docs/develop/authentication-and-authorization/oauth-2.0
    /// — the callback carries `realmId`, the connected company's id (nothing else does); the
    /// token response has `x_refresh_token_expires_in`; a refresh may answer a new refresh token
    /// (this double always does); `invalid_grant` for a dead one.
    Intuit,
    /// X API v2, OAuth 2.0 user context:
    /// https://docs.x.com/fundamentals/authentication/oauth-2-0/user-access-token — Basic client
    /// authentication, `expires_in` 7200, refresh tokens with `offline.access`, rotated on every
    /// refresh. A refresh token it no longer honours is answered HTTP 400 `invalid_request`
    /// "Value passed for the token was invalid." (undocumented; what clients report).
    X,
    /// Shopify Admin API offline access tokens:
    /// https://shopify.dev/docs/apps/build/authentication-authorization/access-tokens/authorization-code-grant
    /// — comma scopes, the client credentials in the body; without `expiring=1` a token that
    /// never expires and no refresh token, with it `expires_in` 3600, a `refresh_token` replaced
    /// at every refresh and `refresh_token_expires_in`
    /// (https://shopify.dev/changelog/offline-access-tokens-now-support-expiry-and-refresh). The
    /// API takes the token in `X-Shopify-Access-Token`, not `Authorization`.
    Shopify,
}

const CLIENT_ID: &str = "double-client";
/// The QuickBooks company the Intuit double's user connects.
pub(crate) const INTUIT_REALM: &str = "9130357208474";
pub(crate) const CLIENT_SECRET: &str = "double-client-secret-canary";

#[derive(Debug, Default)]
struct Inner {
    /// code → granted scopes
    codes: HashMap<String, Vec<String>>,
    /// live refresh token → the scopes it was granted
    refresh: HashMap<String, Vec<String>>,
    /// live access tokens
    access: HashSet<String>,
    /// scopes the user will refuse at the next consent
    decline: Vec<String>,
    issued: u32,
    refreshes: u32,
    refresh_reuse: u32,
    spent: HashSet<String>,
    /// access token → its scopes
    scopes_of: HashMap<String, Vec<String>>,
    /// Token exchanges answered: (subject token, audience, resource, scope).
    exchanges: Vec<(String, String, String, String)>,
    /// Intuit: the next consents' callbacks carry no `realmId`.
    no_realm: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct ProviderDouble {
    pub family: Family,
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

fn query_map(raw: Option<String>) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

impl ProviderDouble {
    pub(crate) async fn start(family: Family) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let double = Self {
            family,
            base,
            inner: Arc::default(),
        };
        let app = Router::new()
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/api/me", get(me))
            .route("/revoke", post(revoke))
            .with_state(double.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        double
    }

    pub(crate) fn auth_url(&self) -> String {
        format!("{}/authorize", self.base)
    }

    pub(crate) fn token_url(&self) -> String {
        format!("{}/token", self.base)
    }

    pub(crate) fn revocation_url(&self) -> String {
        format!("{}/revoke", self.base)
    }

    /// Whether a refresh token is live.
    pub(crate) fn has_live_refresh_token(&self) -> bool {
        !self.inner.lock().unwrap().refresh.is_empty()
    }

    /// The user refuses these scopes at the next consent.
    pub(crate) fn decline(&self, scopes: &[&str]) {
        self.inner.lock().unwrap().decline = scopes.iter().map(|s| (*s).to_owned()).collect();
    }

    /// Intuit: callbacks from now on carry no `realmId`.
    pub(crate) fn drop_realm(&self) {
        self.inner.lock().unwrap().no_realm = true;
    }

    /// Every refresh token stops working (the user revoked the app).
    pub(crate) fn revoke_refresh_tokens(&self) {
        self.inner.lock().unwrap().refresh.clear();
    }

    pub(crate) fn refreshes(&self) -> u32 {
        self.inner.lock().unwrap().refreshes
    }

    /// Refresh tokens presented after they were spent.
    pub(crate) fn refresh_reuse(&self) -> u32 {
        self.inner.lock().unwrap().refresh_reuse
    }

    /// Whether `/api/me` accepts `header` as the Authorization header.
    pub(crate) async fn api_accepts(&self, authorization: &str) -> bool {
        self.api_accepts_header("authorization", authorization)
            .await
    }

    /// Whether `/api/me` accepts `value` in the header `name`.
    pub(crate) async fn api_accepts_header(&self, name: &str, value: &str) -> bool {
        reqwest::Client::new()
            .get(format!("{}/api/me", self.base))
            .header(name, value)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    }

    /// An access token for `scopes`, as if a user had consented elsewhere (a subject token an
    /// agent holds, for on-behalf-of exchange).
    pub(crate) fn mint(&self, scopes: &[&str]) -> String {
        let mut inner = self.inner.lock().unwrap();
        inner.issued += 1;
        let token = format!("minted-{}-canary", inner.issued);
        inner.access.insert(token.clone());
        let scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
        inner.scopes_of.insert(token.clone(), scopes);
        token
    }

    /// The token exchanges answered: (subject token, audience, resource, scope).
    pub(crate) fn exchanges(&self) -> Vec<(String, String, String, String)> {
        self.inner.lock().unwrap().exchanges.clone()
    }

    fn scope_param(&self) -> &'static str {
        match self.family {
            Family::Slack => "user_scope",
            _ => "scope",
        }
    }
}

/// Consents at once: redirects to `redirect_uri` with a code for the scopes not declined.
async fn authorize(State(d): State<ProviderDouble>, RawQuery(q): RawQuery) -> Response {
    let q = query_map(q);
    if q.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return (StatusCode::BAD_REQUEST, "unknown client_id").into_response();
    }
    let sep = if matches!(d.family, Family::Slack | Family::Shopify) {
        ','
    } else {
        ' '
    };
    let asked: Vec<String> = q
        .get(d.scope_param())
        .map(|s| {
            s.split(sep)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let mut inner = d.inner.lock().unwrap();
    let decline = std::mem::take(&mut inner.decline);
    let granted = asked.into_iter().filter(|s| !decline.contains(s)).collect();
    inner.issued += 1;
    let code = format!("code-{}", inner.issued);
    inner.codes.insert(code.clone(), granted);
    let mut target = url::Url::parse(&q["redirect_uri"]).unwrap();
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &q["state"]);
    if d.family == Family::Intuit && !inner.no_realm {
        target
            .query_pairs_mut()
            .append_pair("realmId", INTUIT_REALM);
    }
    Redirect::to(target.as_str()).into_response()
}

/// The request body as key/value pairs (form, or JSON for Notion) and the client it names.
fn token_params(
    d: &ProviderDouble,
    headers: &HeaderMap,
    body: &Bytes,
) -> Option<BTreeMap<String, String>> {
    let mut p: BTreeMap<String, String> = if d.family == Family::Notion {
        let v: Value = serde_json::from_slice(body).ok()?;
        v.as_object()?
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect()
    } else {
        url::form_urlencoded::parse(body).into_owned().collect()
    };
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(basic)
            .ok()?;
        let (id, secret) = String::from_utf8(raw)
            .ok()?
            .split_once(':')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))?;
        p.insert("client_id".into(), id);
        p.insert("client_secret".into(), secret);
    }
    Some(p)
}

/// A provider error, in the family's shape.
fn error(d: &ProviderDouble, code: &str) -> Response {
    match d.family {
        Family::GitHubOAuthApp | Family::GitHubApp => {
            axum::Json(json!({ "error": code, "error_description": "double" })).into_response()
        }
        Family::Slack => axum::Json(json!({ "ok": false, "error": code })).into_response(),
        // https://developers.notion.com/reference/status-codes: `code` and `message`.
        Family::Notion => (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({ "object": "error", "status": 400, "code": code, "message": "double" }),
            ),
        )
            .into_response(),
        // X says which value was refused in `error_description`.
        Family::X => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({
                "error": code, "error_description": "Value passed for the token was invalid."
            })),
        )
            .into_response(),
        Family::Salesforce | Family::Rfc8693 | Family::Entra | Family::Intuit | Family::Shopify => {
            (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({ "error": code })),
            )
                .into_response()
        }
    }
}

async fn token(State(d): State<ProviderDouble>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(p) = token_params(&d, &headers, &body) else {
        return (StatusCode::BAD_REQUEST, "unreadable token request").into_response();
    };
    if p.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || p.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
    {
        return error(&d, "invalid_client");
    }
    let mut inner = d.inner.lock().unwrap();
    match p.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let Some(scopes) = p.get("code").and_then(|c| inner.codes.remove(c)) else {
                let code = match d.family {
                    Family::GitHubOAuthApp | Family::GitHubApp => "bad_verification_code",
                    Family::Slack => "invalid_code",
                    Family::X => "invalid_request",
                    _ => "invalid_grant",
                };
                return error(&d, code);
            };
            if d.family == Family::Shopify && p.get("expiring").map(String::as_str) != Some("1") {
                return shopify_non_expiring(&mut inner, &scopes);
            }
            issue(&d, &mut inner, &scopes, Issued::Code)
        }
        Some("refresh_token") => {
            inner.refreshes += 1;
            let rt = p.get("refresh_token").cloned().unwrap_or_default();
            if inner.spent.contains(&rt) {
                inner.refresh_reuse += 1;
            }
            let Some(scopes) = inner.refresh.get(&rt).cloned() else {
                let code = match d.family {
                    Family::GitHubApp => "bad_refresh_token",
                    Family::Slack => "invalid_refresh_token",
                    Family::X => "invalid_request",
                    _ => "invalid_grant",
                };
                return error(&d, code);
            };
            // GitHub Apps and Slack rotate; Salesforce keeps the refresh token.
            let rotate = matches!(
                d.family,
                Family::GitHubApp
                    | Family::Slack
                    | Family::Entra
                    | Family::Intuit
                    | Family::X
                    | Family::Shopify
            );
            if rotate {
                inner.refresh.remove(&rt);
                inner.spent.insert(rt);
            }
            issue(&d, &mut inner, &scopes, Issued::Refresh { rotate })
        }
        Some("urn:ietf:params:oauth:grant-type:token-exchange") if d.family == Family::Rfc8693 => {
            exchange(&d, &mut inner, &p)
        }
        _ => error(&d, "unsupported_grant_type"),
    }
}

const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// RFC 8693 section 2.1 to 2.3.
fn exchange(d: &ProviderDouble, inner: &mut Inner, p: &BTreeMap<String, String>) -> Response {
    let get = |k: &str| p.get(k).cloned().unwrap_or_default();
    let subject = get("subject_token");
    if get("subject_token_type") != ACCESS_TOKEN_TYPE || !inner.access.contains(&subject) {
        return error(d, "invalid_request");
    }
    let audience = get("audience");
    if audience == "https://not-served.example" {
        return error(d, "invalid_target");
    }
    let held = inner.scopes_of.get(&subject).cloned().unwrap_or_default();
    let asked: Vec<String> = get("scope")
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if asked.iter().any(|s| !held.contains(s)) {
        return error(d, "invalid_scope");
    }
    let scopes = if asked.is_empty() { held } else { asked };
    inner
        .exchanges
        .push((subject, audience.clone(), get("resource"), scopes.join(" ")));
    inner.issued += 1;
    let access = format!("exchanged-{}-for-{audience}-canary", inner.issued);
    inner.access.insert(access.clone());
    inner.scopes_of.insert(access.clone(), scopes.clone());
    axum::Json(json!({
        "access_token": access,
        "issued_token_type": ACCESS_TOKEN_TYPE,
        "token_type": "Bearer",
        "expires_in": 3600,
        "scope": scopes.join(" "),
    }))
    .into_response()
}

/// What a token response answers.
#[derive(Clone, Copy)]
enum Issued {
    /// A code exchange (a new refresh token where the family has them).
    Code,
    /// A refresh, rotating the refresh token or not.
    Refresh { rotate: bool },
}

/// A token response in the family's shape.
fn issue(d: &ProviderDouble, inner: &mut Inner, scopes: &[String], issued: Issued) -> Response {
    let new_refresh = matches!(issued, Issued::Code | Issued::Refresh { rotate: true });
    inner.issued += 1;
    let n = inner.issued;
    let access = format!("access-{n}-canary");
    inner.access.insert(access.clone());
    inner.scopes_of.insert(access.clone(), scopes.to_vec());
    let refresh = format!("refresh-{n}-canary");
    let has_refresh =
        new_refresh && d.family != Family::GitHubOAuthApp && d.family != Family::Notion;
    if has_refresh {
        inner.refresh.insert(refresh.clone(), scopes.to_vec());
    }
    let body = match d.family {
        Family::GitHubOAuthApp => json!({
            "access_token": access, "scope": scopes.join(","), "token_type": "bearer"
        }),
        Family::GitHubApp => json!({
            "access_token": access, "expires_in": 28800, "refresh_token": refresh,
            "refresh_token_expires_in": 15897600, "scope": "", "token_type": "bearer"
        }),
        // A refresh answers the rotated user token at the top, `token_type` "user", no
        // `authed_user` (`OAuthV2TokenRefreshResponse` in Slack's SDK:
        // https://docs.slack.dev/tools/node-slack-sdk/reference/oauth/interfaces/OAuthV2TokenRefreshResponse).
        Family::Slack if matches!(issued, Issued::Refresh { .. }) => json!({
            "ok": true, "app_id": "A0001", "scope": scopes.join(","), "token_type": "user",
            "access_token": access, "refresh_token": refresh, "expires_in": 43200,
            "team": { "id": "T0001", "name": "Acme" }, "enterprise": null,
            "is_enterprise_install": false
        }),
        Family::Slack => json!({
            "ok": true, "app_id": "A0001", "team": { "id": "T0001", "name": "Acme" },
            "enterprise": null, "is_enterprise_install": false,
            "authed_user": {
                "id": "U0001", "scope": scopes.join(","), "access_token": access,
                "token_type": "user", "expires_in": 43200, "refresh_token": refresh
            }
        }),
        Family::Salesforce => {
            let mut v = json!({
                "access_token": access, "signature": "c2lnbmF0dXJl", "scope": "api refresh_token",
                "instance_url": "https://acme.my.salesforce.com",
                "id": "https://login.salesforce.com/id/00Dx0000000BV7z/005x00000012Q9P",
                "token_type": "Bearer", "issued_at": "1278448101416"
            });
            if has_refresh {
                v["refresh_token"] = refresh.into();
            }
            v
        }
        Family::Entra => {
            let oidc = ["openid", "profile", "email", "offline_access"];
            let answered: Vec<&str> = scopes
                .iter()
                .map(String::as_str)
                .filter(|s| match issued {
                    Issued::Code => *s != "offline_access",
                    Issued::Refresh { .. } => !oidc.contains(s),
                })
                .collect();
            json!({
                "token_type": "Bearer", "scope": answered.join(" "), "expires_in": 3599,
                "ext_expires_in": 3599, "access_token": access, "refresh_token": refresh
            })
        }
        Family::Rfc8693 => json!({
            "access_token": access, "token_type": "Bearer", "expires_in": 3600,
            "refresh_token": refresh, "scope": scopes.join(" ")
        }),
        Family::Intuit => json!({
            "token_type": "bearer", "expires_in": 3600, "refresh_token": refresh,
            "x_refresh_token_expires_in": 8_726_400, "access_token": access
        }),
        Family::X => json!({
            "token_type": "bearer", "expires_in": 7200, "access_token": access,
            "scope": scopes.join(" "), "refresh_token": refresh
        }),
        Family::Shopify => json!({
            "access_token": access, "scope": scopes.join(","), "expires_in": 3600,
            "refresh_token": refresh, "refresh_token_expires_in": 7_776_000
        }),
        Family::Notion => json!({
            "access_token": access, "token_type": "bearer", "bot_id": "b-0001",
            "workspace_name": "Acme", "workspace_icon": null, "workspace_id": "w-0001",
            "owner": { "type": "user" }, "duplicated_template_id": null
        }),
    };
    axum::Json(body).into_response()
}

/// Shopify's answer to a code exchange without `expiring=1`: a token that never expires, no
/// refresh token.
fn shopify_non_expiring(inner: &mut Inner, scopes: &[String]) -> Response {
    inner.issued += 1;
    let access = format!("shpat-{}-canary", inner.issued);
    inner.access.insert(access.clone());
    axum::Json(json!({ "access_token": access, "scope": scopes.join(",") })).into_response()
}

/// The revocation endpoint. Salesforce's
/// (https://developer.salesforce.com/docs/platform/mobile-sdk/guide/oauth-revoking-tokens.html):
/// a refresh token is revoked with every access token issued from it (the double has one grant
/// at a time: all of them), an access token alone; 200 when revoked, and for every error 400
/// with `unsupported_token_type` or `invalid_token`, a token no longer valid included. The other
/// families answer as RFC 7009 section 2.2 says: 200, also for a token already invalid.
async fn revoke(State(d): State<ProviderDouble>, body: Bytes) -> Response {
    let token: String = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let mut inner = d.inner.lock().unwrap();
    let known = if inner.refresh.remove(&token).is_some() {
        inner.access.clear();
        true
    } else {
        inner.access.remove(&token)
    };
    if known || d.family != Family::Salesforce {
        return StatusCode::OK.into_response();
    }
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": "invalid_token", "error_description": "double" })),
    )
        .into_response()
}

/// A resource: 200 for a live access token as a bearer token (Shopify: as it is, in
/// `X-Shopify-Access-Token`).
async fn me(State(d): State<ProviderDouble>, headers: HeaderMap) -> StatusCode {
    let token = if d.family == Family::Shopify {
        headers
            .get("x-shopify-access-token")
            .and_then(|v| v.to_str().ok())
    } else {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
    };
    match token {
        Some(t) if d.inner.lock().unwrap().access.contains(t) => StatusCode::OK,
        _ => StatusCode::UNAUTHORIZED,
    }
}

/// The client id the doubles know.
pub(crate) fn client_id() -> &'static str {
    CLIENT_ID
}
