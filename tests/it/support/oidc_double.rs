//! A misbehaving OpenID provider, written for these tests (the real `oidc-provider` peer cannot be
//! made to sign bad ID tokens). It follows OpenID Connect Core and Discovery everywhere except in
//! the one way a `Mischief` says, mirroring the OpenID Foundation's relying-party conformance
//! modules (e.g. `oidcc-client-test-invalid-iss`, `-invalid-aud`, `-invalid-sig-rs256`,
//! `-idtoken-sig-none`, `-kid-absent-multiple-jwks`, `-expired`). ID tokens are signed RS256 with
//! `tests/fixtures/test-rsa-2048.pem` (kid `rsa-1`), whose public key `/jwks` serves.

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use valet::secret::ExposeSecret as _;

const RSA: &str = include_str!("../../fixtures/test-rsa-2048.pem");
const RSA_OTHER: &str = include_str!("../../fixtures/test-rsa-other.pem");
const JWKS: &str = include_str!("../../fixtures/test-jwks.json");
pub(crate) const CLIENT: &str = "double-oidc-client";
pub(crate) const SECRET: &str = "double-oidc-secret-canary";

/// What is wrong with the ID token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mischief {
    None,
    WrongIssuer,
    WrongAudience,
    BadSignature,
    AlgNone,
    UnknownKid,
    Expired,
    WrongNonce,
}

#[derive(Debug)]
struct Inner {
    base: String,
    mischief: Mischief,
    /// code → nonce
    codes: HashMap<String, String>,
    issued: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct OidcDouble {
    pub issuer: String,
}

impl OidcDouble {
    pub(crate) async fn start(mischief: Mischief) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let inner = Arc::new(Mutex::new(Inner {
            base: issuer.clone(),
            mischief,
            codes: HashMap::new(),
            issued: 0,
        }));
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route(
                "/jwks",
                get(|| async { ([("content-type", "application/json")], JWKS) }),
            )
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(inner);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { issuer }
    }
}

async fn discovery(State(s): State<Arc<Mutex<Inner>>>) -> Response {
    let base = s.lock().unwrap().base.clone();
    axum::Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
    .into_response()
}

/// Consents at once: back to the redirect URI with a code (and `iss`, RFC 9207).
async fn authorize(State(s): State<Arc<Mutex<Inner>>>, RawQuery(q): RawQuery) -> Response {
    let q: HashMap<String, String> = url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let mut inner = s.lock().unwrap();
    inner.issued += 1;
    let code = format!("code-{}", inner.issued);
    inner
        .codes
        .insert(code.clone(), q.get("nonce").cloned().unwrap_or_default());
    let mut to = url::Url::parse(&q["redirect_uri"]).unwrap();
    to.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &q["state"])
        .append_pair("iss", &inner.base);
    Redirect::to(to.as_str()).into_response()
}

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

async fn token(State(s): State<Arc<Mutex<Inner>>>, body: axum::body::Bytes) -> Response {
    let p: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let mut inner = s.lock().unwrap();
    let Some(nonce) = p.get("code").and_then(|c| inner.codes.remove(c)) else {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    };
    let now = valet::clock::Clock::now_unix(&valet::clock::SystemClock);
    let m = inner.mischief;
    let claims = json!({
        "iss": if m == Mischief::WrongIssuer { "https://evil.example".to_owned() } else { inner.base.clone() },
        "sub": "alice",
        "aud": if m == Mischief::WrongAudience { "someone-else" } else { CLIENT },
        "iat": now - 10,
        "exp": if m == Mischief::Expired { now - 3600 } else { now + 600 },
        "nonce": if m == Mischief::WrongNonce { "another-nonce".to_owned() } else { nonce },
    });
    let id_token = match m {
        Mischief::AlgNone => format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims)),
        _ => {
            let (pem, kid) = match m {
                Mischief::BadSignature => (RSA_OTHER, "rsa-1"),
                Mischief::UnknownKid => (RSA, "nobody-knows-me"),
                _ => (RSA, "rsa-1"),
            };
            let key = valet::jwt::SigningKey::from_pem(&pem.into(), Some(kid.into())).unwrap();
            key.sign(&claims).unwrap().expose_secret().to_owned()
        }
    };
    inner.issued += 1;
    axum::Json(json!({
        "access_token": format!("double-access-{}-canary", inner.issued),
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": format!("double-refresh-{}-canary", inner.issued),
        "id_token": id_token,
        "scope": "openid",
    }))
    .into_response()
}
