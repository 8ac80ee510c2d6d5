//! A loopback authorization server for the JWT bearer grant, written for these tests: no real one
//! can run here. It follows RFC 7523 section 3 (<https://www.rfc-editor.org/rfc/rfc7523#section-3>)
//! and section 3.1's errors: the assertion's signature must verify with the one public key it
//! trusts (RS256 or ES256), `iss` must be the service account, `aud` its token endpoint, `exp` in
//! the future and `iat` not far in the past; anything else is `invalid_grant` with HTTP 400
//! (RFC 6749 section 5.2). Scopes come from the request's `scope` or, as Google takes them
//! (<https://developers.google.com/identity/protocols/oauth2/service-account#authorizingrequests>),
//! from the assertion's `scope` claim. Access tokens name the subject, so tests can see who a
//! token is for.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

#[derive(Debug)]
struct Trust {
    public_key: Vec<u8>,
    alg: &'static str,
    issuer: String,
    token_url: String,
    issued: u32,
    /// The claims of every accepted assertion, oldest first.
    accepted: Vec<Value>,
}

#[derive(Debug, Clone)]
pub(crate) struct JwtBearerServer {
    pub token_url: String,
    trust: Arc<Mutex<Trust>>,
}

fn refuse(why: &str) -> Response {
    let body = json!({ "error": "invalid_grant", "error_description": why });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

fn now() -> i64 {
    valet::clock::Clock::now_unix(&valet::clock::SystemClock)
}

fn decode(part: &str) -> Option<Value> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
}

impl JwtBearerServer {
    /// Trusts `key`'s public half for assertions issued by `issuer`.
    pub(crate) async fn start(key: &valet::jwt::SigningKey, issuer: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let token_url = format!("http://{}/token", listener.local_addr().unwrap());
        let trust = Arc::new(Mutex::new(Trust {
            public_key: key.public_key(),
            alg: key.algorithm(),
            issuer: issuer.into(),
            token_url: token_url.clone(),
            issued: 0,
            accepted: Vec::new(),
        }));
        let app = Router::new()
            .route("/token", post(token))
            .with_state(trust.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { token_url, trust }
    }

    /// Tokens issued so far.
    pub(crate) fn issued(&self) -> u32 {
        self.trust.lock().unwrap().issued
    }

    /// The claims of the assertions accepted so far.
    pub(crate) fn accepted(&self) -> Vec<Value> {
        self.trust.lock().unwrap().accepted.clone()
    }

    /// Posts `assertion` directly, as a client would: (HTTP status, body).
    pub(crate) async fn post_assertion(&self, assertion: &str) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(&self.token_url)
            .form(&[("grant_type", JWT_BEARER), ("assertion", assertion)])
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
}

async fn token(State(trust): State<Arc<Mutex<Trust>>>, body: Bytes) -> Response {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some(JWT_BEARER) {
        let body = json!({ "error": "unsupported_grant_type" });
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    let Some(assertion) = form.get("assertion") else {
        let body = json!({ "error": "invalid_request", "error_description": "no assertion" });
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    };
    let mut t = trust.lock().unwrap();
    let Some((input, sig)) = assertion.rsplit_once('.') else {
        return refuse("not a JWS");
    };
    let (Some((header, claims)), Ok(sig)) = (input.split_once('.'), URL_SAFE_NO_PAD.decode(sig))
    else {
        return refuse("not a JWS");
    };
    let (Some(header), Some(claims)) = (decode(header), decode(claims)) else {
        return refuse("header or claims are not base64url JSON");
    };
    if header["alg"] != t.alg {
        return refuse("unexpected alg");
    }
    let verified = match t.alg {
        "RS256" => UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &t.public_key)
            .verify(input.as_bytes(), &sig),
        _ => UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &t.public_key)
            .verify(input.as_bytes(), &sig),
    };
    if verified.is_err() {
        return refuse("signature does not verify with the registered key");
    }
    if claims["iss"] != t.issuer.as_str() {
        return refuse("unknown issuer");
    }
    if claims["aud"] != t.token_url.as_str() {
        return refuse("aud is not this token endpoint");
    }
    let now = now();
    match (claims["exp"].as_i64(), claims["iat"].as_i64()) {
        (Some(exp), Some(iat)) if exp > now && iat > now - 3600 && exp - iat <= 3600 => {}
        _ => return refuse("assertion expired or not yet valid"),
    }
    let Some(sub) = claims["sub"].as_str().map(str::to_owned) else {
        return refuse("no sub");
    };
    let scope = form
        .get("scope")
        .cloned()
        .or_else(|| claims["scope"].as_str().map(str::to_owned))
        .unwrap_or_default();
    t.issued += 1;
    t.accepted.push(claims);
    let body = json!({
        "access_token": format!("sa-token-{sub}-{}-canary", t.issued),
        "token_type": "Bearer",
        "expires_in": 3600,
        "scope": scope,
    });
    axum::Json(body).into_response()
}
