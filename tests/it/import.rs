//! Importing a grant from a refresh token issued outside Valet: minted here at the real
//! OpenID provider by a code flow this test runs itself, then imported, refreshed once by Valet
//! to prove it, and used.

use crate::support::daemon::{ADMIN_KEY, AGENT_KEY};
use crate::support::{Fixture, expect_err, idp, token};
use base64::Engine as _;
use tonic::Code;
use valet::pb;

/// A refresh token for `login` from the peer, by a code flow run outside Valet (client
/// basic-client, its registered redirect URI, PKCE).
async fn minted_refresh_token(f: &Fixture, login: &str) -> String {
    let verifier = "an-outside-verifier-0123456789-0123456789-abcdef";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(valet::secret::sha256(verifier.as_bytes()));
    let redirect = f.valet.callback_url("idp");
    let mut auth = url::Url::parse(&format!("{}/auth", f.idp.issuer)).unwrap();
    auth.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", "basic-client")
        .append_pair("redirect_uri", &redirect)
        .append_pair("scope", "openid email")
        .append_pair("state", "outside-state-0123456789")
        .append_pair("nonce", "outside-nonce-0123456789")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let callback = f.browser.authorize(auth.as_str(), login, true).await;
    let code = callback
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("a code");
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/token", f.idp.issuer))
        .basic_auth("basic-client", Some(idp::secret_of("basic-client")))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_owned()
}

fn import(user: &str, refresh_token: &str) -> pb::ImportGrantRequest {
    pb::ImportGrantRequest {
        provider_id: "idp".into(),
        user_id: user.into(),
        refresh_token: refresh_token.into(),
        scopes: vec!["openid".into(), "email".into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn a_refresh_token_from_elsewhere_is_proved_by_one_refresh_then_used() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let outside = minted_refresh_token(&f, "bob").await;
    let before = f.idp.refreshes().await;
    let mut admin = f.valet.credentials(ADMIN_KEY).await;
    let imported = admin
        .import_grant(import("bob", &outside))
        .await
        .unwrap()
        .into_inner()
        .grant
        .unwrap();
    assert_eq!(f.idp.refreshes().await - before, 1, "proved by one refresh");
    assert_eq!(
        (imported.provider_id.as_str(), imported.user_id.as_str()),
        ("idp", "bob")
    );
    assert!(imported.has_refresh_token);
    // An agent gets a token for bob without any consent flow.
    let t = token(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "bob", ""))
            .await,
    );
    assert!(f.idp.userinfo(&t.access_token).await.status().is_success());
    f.idp.assert_no_refresh_token_reuse().await;
    // The imported token never shows up in the daemon's output.
    assert!(!f.valet.logs().contains(&outside));

    // An active grant is not overwritten.
    let s = expect_err(
        admin.import_grant(import("bob", &outside)).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert!(s.message().contains("revoke it first"), "{s:?}");
}

#[tokio::test]
async fn a_refused_or_unauthorized_import_stores_nothing() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let mut admin = f.valet.credentials(ADMIN_KEY).await;
    let s = expect_err(
        admin
            .import_grant(import("carol", "not-a-refresh-token-canary-9"))
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert!(s.message().contains("refused it"), "{s:?}");
    assert!(!s.message().contains("canary-9"), "not echoed: {s:?}");
    assert!(f.grants("carol").await.is_empty(), "nothing stored");
    for (req, field) in [
        (import("carol", ""), "refresh_token"),
        (
            pb::ImportGrantRequest {
                provider_id: "nope".into(),
                ..import("carol", "x")
            },
            "",
        ),
    ] {
        let s = admin.import_grant(req).await.unwrap_err();
        assert!(
            matches!(s.code(), Code::InvalidArgument | Code::NotFound),
            "{s:?}"
        );
        assert!(s.message().contains(field), "{s:?}");
    }
    // Agents may not import.
    let outside = minted_refresh_token(&f, "dave").await;
    expect_err(
        f.valet
            .credentials(AGENT_KEY)
            .await
            .import_grant(import("dave", &outside))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert!(f.grants("dave").await.is_empty());
    assert!(f.grants("carol").await.is_empty());
}
