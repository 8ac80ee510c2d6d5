//! User assertions: a caller configured with `require_user_assertion` gets nothing for a user
//! without a JWT from the operator's identity provider naming that user. The identity provider is
//! a loopback JWKS endpoint serving `tests/fixtures/test-jwks.json`; assertions are signed with
//! the matching test keys.

use crate::support::daemon::AGENT_KEY;
use crate::support::{Fixture, ValetOptions, agent_caller, expect_err, pending};
use tonic::Code;
use valet::jwt::SigningKey;
use valet::pb;

const ASSERTED_KEY: &str = "test-asserted-agent-key-canary-5";
const ISSUER: &str = "https://login.operator.test";
const EC: &str = include_str!("../fixtures/test-ec-p256.pem");
const RSA: &str = include_str!("../fixtures/test-rsa-2048.pem");
const RSA_OTHER: &str = include_str!("../fixtures/test-rsa-other.pem");
const JWKS: &str = include_str!("../fixtures/test-jwks.json");

async fn jwks_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(|| async { ([("content-type", "application/json")], JWKS) }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn fixture() -> Fixture {
    let jwks = jwks_server().await;
    let f = Fixture::with(ValetOptions {
        extra_toml: agent_caller(
            "asserted",
            ASSERTED_KEY,
            &format!(
                "agents = [\"*\"]\nrequire_user_assertion = true\n\n[user_assertions]\nissuer = \"{ISSUER}\"\naudience = \"valet\"\njwks_url = \"{jwks}\"\n"
            ),
        ),
        ..Default::default()
    })
    .await;
    f.oidc_provider("idp", "basic-client").await;
    f
}

fn now() -> i64 {
    valet::clock::Clock::now_unix(&valet::clock::SystemClock)
}

/// An assertion signed with `pem` (header kid `kid`).
fn assertion(pem: &str, kid: &str, iss: &str, sub: &str, aud: &str, at: i64) -> String {
    let key = SigningKey::from_pem(&pem.into(), Some(kid.into())).unwrap();
    let claims = valet::jwt::claims(iss, sub, aud, at, &[]).unwrap();
    valet::secret::ExposeSecret::expose_secret(&key.sign(&claims).unwrap()).to_owned()
}

fn with_assertion<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(t) = token {
        req.metadata_mut()
            .insert("x-valet-user-assertion", t.parse().unwrap());
    }
    req
}

#[tokio::test]
async fn a_caller_that_must_prove_its_user_gets_nothing_without_a_valid_assertion() {
    let f = fixture().await;
    let mut creds = f.valet.credentials(ASSERTED_KEY).await;
    let alice = || Fixture::request("idp", "alice", "");
    let good_ec = assertion(EC, "ec-1", ISSUER, "alice", "valet", now());
    let good_rsa = assertion(RSA, "rsa-1", ISSUER, "alice", "valet", now());
    for token in [&good_ec, &good_rsa] {
        let r = creds
            .authenticate(with_assertion(alice(), Some(token)))
            .await;
        pending(r.unwrap().into_inner());
    }
    let none = format!(
        "{}.{}.",
        base64_url(r#"{"alg":"none"}"#),
        base64_url(&format!(
            r#"{{"iss":"{ISSUER}","sub":"alice","aud":"valet","exp":{}}}"#,
            now() + 300
        ))
    );
    let cases = [
        (None, "x-valet-user-assertion"),
        (
            Some(assertion(EC, "ec-1", ISSUER, "bob", "valet", now())),
            "another user",
        ),
        (
            Some(assertion(
                EC,
                "ec-1",
                ISSUER,
                "alice",
                "valet",
                now() - 1000,
            )),
            "expired",
        ),
        (
            Some(assertion(EC, "ec-1", ISSUER, "alice", "other-app", now())),
            "audience",
        ),
        (
            Some(assertion(
                EC,
                "ec-1",
                "https://evil.example",
                "alice",
                "valet",
                now(),
            )),
            "issuer",
        ),
        (
            Some(assertion(
                RSA_OTHER,
                "rsa-1",
                ISSUER,
                "alice",
                "valet",
                now(),
            )),
            "signature",
        ),
        (Some(none), "RS256 or ES256"),
        (Some("not-a-jwt".into()), "well-formed"),
    ];
    for (token, want) in cases {
        let s = expect_err(
            creds
                .authenticate(with_assertion(alice(), token.as_deref()))
                .await,
            Code::PermissionDenied,
            "PERMISSION_DENIED",
        );
        assert!(s.message().contains(want), "{want}: {s:?}");
    }
    // Listing and revoking a user's grants need the assertion too.
    expect_err(
        creds
            .list_grants(with_assertion(
                pb::ListGrantsRequest {
                    user_id: "alice".into(),
                    ..Default::default()
                },
                None,
            ))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let listed = creds
        .list_grants(with_assertion(
            pb::ListGrantsRequest {
                user_id: "alice".into(),
                ..Default::default()
            },
            Some(&good_ec),
        ))
        .await;
    assert!(listed.is_ok(), "{listed:?}");
    expect_err(
        creds
            .revoke(with_assertion(
                pb::RevokeRequest {
                    provider_id: "idp".into(),
                    user_id: "alice".into(),
                    ..Default::default()
                },
                Some(&assertion(EC, "ec-1", ISSUER, "mallory", "valet", now())),
            ))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    // Callers without the requirement are unaffected; no assertion reaches the log.
    pending(f.authenticate(AGENT_KEY, alice()).await);
    assert!(!f.valet.logs().contains(&good_ec));
}

fn base64_url(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[test]
fn require_user_assertion_without_an_identity_provider_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("valet.toml");
    let hash = "ab".repeat(32);
    std::fs::write(
        &path,
        format!("[[callers]]\nname = \"bot\"\nrole = \"agent\"\nkey_sha256 = \"{hash}\"\nrequire_user_assertion = true\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_valet"))
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .env_remove("VALET_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[user_assertions]"));
}
