//! ID tokens that must be refused (OpenID Connect Core 3.1.3.7), from a misbehaving provider
//! double mirroring the OpenID Foundation's RP conformance modules: each fails the flow with
//! `ID_TOKEN_REJECTED` and stores nothing; the well-behaved twin proves the double itself works.

use crate::support::daemon::AGENT_KEY;
use crate::support::oidc_double::{CLIENT, Mischief, OidcDouble, SECRET};
use crate::support::{Fixture, expect_err, pending, token};
use tonic::Code;
use valet::pb;

async fn run(f: &Fixture, id: &str, mischief: Mischief) -> Result<pb::Token, tonic::Status> {
    let double = OidcDouble::start(mischief).await;
    f.create(pb::Provider {
        provider_id: id.into(),
        kind: pb::ProviderKind::Oidc as i32,
        client_id: CLIENT.into(),
        client_secret: SECRET.into(),
        issuer: double.issuer.clone(),
        default_scopes: vec!["openid".into()],
        ..Default::default()
    })
    .await;
    let p = pending(
        f.authenticate(AGENT_KEY, Fixture::request(id, "alice", ""))
            .await,
    );
    let cb = f.browser.authorize(&p.auth_url, "alice", true).await;
    f.browser.visit(&cb).await;
    f.wait(&p.auth_id).await.map(|r| token(r.into_inner()))
}

#[tokio::test]
async fn bad_id_tokens_fail_the_flow_and_store_nothing() {
    let f = Fixture::new().await;
    let good = run(&f, "good", Mischief::None).await;
    assert!(good.is_ok(), "the double works when it behaves: {good:?}");
    for (i, m) in [
        Mischief::WrongIssuer,
        Mischief::WrongAudience,
        Mischief::BadSignature,
        Mischief::AlgNone,
        Mischief::UnknownKid,
        Mischief::Expired,
        Mischief::WrongNonce,
    ]
    .into_iter()
    .enumerate()
    {
        let s = expect_err(
            run(&f, &format!("bad{i}"), m)
                .await
                .map(tonic::Response::new),
            Code::FailedPrecondition,
            "ID_TOKEN_REJECTED",
        );
        assert!(!s.message().contains("canary"), "{m:?}: {s:?}");
        let grants = f.grants("alice").await;
        assert!(
            grants.iter().all(|g| g.provider_id == "good"),
            "{m:?} stored a grant: {grants:?}"
        );
    }
}
