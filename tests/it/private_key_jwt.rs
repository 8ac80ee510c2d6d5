//! `private_key_jwt` client authentication (RFC 7523 section 2.2) against the real OpenID
//! provider, whose `pkjwt-client` trusts the public half of `tests/fixtures/test-ec-p256.pem`:
//! client credentials, a consent flow with refresh, and revocation all authenticate with a
//! signed assertion and never a secret.

use crate::support::daemon::AGENT_KEY;
use crate::support::{Fixture, expect_err, token};
use tonic::Code;
use valet::pb;

const EC: &str = include_str!("../fixtures/test-ec-p256.pem");
const RSA: &str = include_str!("../fixtures/test-rsa-2048.pem");

fn pkjwt(f: &Fixture, id: &str, kind: pb::ProviderKind, key: &str) -> pb::Provider {
    let (issuer, token_url) = match kind {
        pb::ProviderKind::Oidc => (f.idp.issuer.clone(), String::new()),
        _ => (String::new(), format!("{}/token", f.idp.issuer)),
    };
    pb::Provider {
        provider_id: id.into(),
        kind: kind as i32,
        client_id: "pkjwt-client".into(),
        token_auth_method: pb::TokenAuthMethod::PrivateKeyJwt as i32,
        private_key: key.into(),
        key_id: "valet-test-ec".into(),
        issuer,
        token_url,
        default_scopes: vec!["api.read".into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn client_credentials_and_consent_flows_authenticate_with_a_signed_assertion() {
    let f = Fixture::new().await;
    let created = f
        .create(pkjwt(&f, "svc", pb::ProviderKind::ClientCredentials, EC))
        .await;
    assert!(created.has_private_key && !created.has_client_secret);
    assert_eq!(created.key_algorithm, "ES256");
    let t = token(
        f.authenticate(
            AGENT_KEY,
            pb::AuthenticateRequest {
                provider_id: "svc".into(),
                ..Default::default()
            },
        )
        .await,
    );
    let info = f.idp.introspect("basic-client", &t.access_token).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["client_id"], "pkjwt-client");

    // An OpenID Connect consent flow: code exchange, refresh and revocation all sign.
    f.create(pb::Provider {
        default_scopes: vec!["openid".into(), "email".into()],
        ..pkjwt(&f, "idp", pb::ProviderKind::Oidc, EC)
    })
    .await;
    let user = f
        .authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    let info = f.idp.introspect("basic-client", &user.access_token).await;
    assert_eq!(info["active"], true, "{info}");
    let refreshed = token(
        f.authenticate(AGENT_KEY, Fixture::refresh_request("idp", "alice", ""))
            .await,
    );
    assert_ne!(
        refreshed.access_token, user.access_token,
        "refreshed with an assertion"
    );
    let revoked = f
        .valet
        .credentials(AGENT_KEY)
        .await
        .revoke(pb::RevokeRequest {
            provider_id: "idp".into(),
            user_id: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        revoked.provider_revocation,
        pb::ProviderRevocation::Revoked as i32,
        "{revoked:?}"
    );
    let info = f
        .idp
        .introspect("basic-client", &refreshed.access_token)
        .await;
    assert_eq!(info["active"], false, "{info}");
}

#[tokio::test]
async fn an_assertion_signed_with_an_unregistered_key_is_refused_by_the_provider() {
    let f = Fixture::new().await;
    f.create(pkjwt(&f, "svc", pb::ProviderKind::ClientCredentials, RSA))
        .await;
    let s = expect_err(
        f.try_authenticate(
            AGENT_KEY,
            pb::AuthenticateRequest {
                provider_id: "svc".into(),
                ..Default::default()
            },
        )
        .await,
        Code::FailedPrecondition,
        "PROVIDER_REJECTED",
    );
    assert!(s.message().contains("invalid_client"), "{s:?}");
}
