//! Refresh: rotation, single flight, reuse detection (`invalid_grant`), transient failures.

use crate::support::daemon::AGENT_KEY;
use crate::support::{Fixture, expect_err, pending, token};
use tonic::Code;
use valet::pb;

#[tokio::test]
async fn refresh_rotates_and_the_newest_refresh_token_is_used_each_time() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let t0 = f
        .authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    let t1 = token(
        f.authenticate(AGENT_KEY, Fixture::refresh_request("idp", "alice", ""))
            .await,
    );
    let t2 = token(
        f.authenticate(AGENT_KEY, Fixture::refresh_request("idp", "alice", ""))
            .await,
    );
    assert_ne!(t0.access_token, t1.access_token);
    assert_ne!(t1.access_token, t2.access_token);
    // Two successful refreshes and no refused one: each used the rotated refresh token (the
    // provider revokes the whole family when a used one comes back).
    let stats = f.idp.stats().await;
    assert_eq!(stats["grants"]["refresh_token"], 2, "{stats}");
    f.idp.assert_no_refresh_token_reuse().await;
    assert!(f.idp.userinfo(&t2.access_token).await.status().is_success());
}

#[tokio::test]
async fn two_hundred_concurrent_requests_on_an_expired_grant_cause_one_refresh() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    f.authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    let creds = f.valet.credentials(AGENT_KEY).await;
    let before = f.idp.token_requests().await;
    // A slow provider keeps the refresh in flight while all 200 calls arrive.
    f.idp.delay_token(1000).await;
    let calls = (0..200).map(|_| {
        let mut c = creds.clone();
        async move {
            token(
                c.authenticate(Fixture::refresh_request("idp", "alice", ""))
                    .await
                    .unwrap()
                    .into_inner(),
            )
        }
    });
    let tokens = futures::future::join_all(calls).await;
    assert_eq!(
        f.idp.token_requests().await - before,
        1,
        "exactly one token-endpoint call"
    );
    assert!(
        tokens
            .iter()
            .all(|t| t.access_token == tokens[0].access_token)
    );
}

#[tokio::test]
async fn provider_5xx_is_unavailable_and_keeps_the_grant() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    f.authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    let mut creds = f.valet.credentials(AGENT_KEY).await;
    f.idp.fail_token(503).await;
    let s = expect_err(
        creds
            .authenticate(Fixture::refresh_request("idp", "alice", ""))
            .await,
        Code::Unavailable,
        "PROVIDER_UNAVAILABLE",
    );
    use tonic_types::StatusExt;
    assert!(s.get_details_retry_info().is_some(), "retry info: {s:?}");
    f.idp.fail_token(0).await;
    let t = token(
        f.authenticate(AGENT_KEY, Fixture::refresh_request("idp", "alice", ""))
            .await,
    );
    assert!(f.idp.userinfo(&t.access_token).await.status().is_success());
}

#[tokio::test]
async fn a_rate_limited_refresh_is_unavailable_with_the_providers_retry_after() {
    retry_after_is_passed_on(429).await;
}

#[tokio::test]
async fn a_refresh_during_maintenance_is_unavailable_with_the_providers_retry_after() {
    // RFC 9110 section 15.6.4: a 503 may say, with Retry-After, how long it will last.
    retry_after_is_passed_on(503).await;
}

async fn retry_after_is_passed_on(status: u16) {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    f.authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    let mut creds = f.valet.credentials(AGENT_KEY).await;
    f.idp.fail_token_retry_after(status, 7).await;
    let s = expect_err(
        creds
            .authenticate(Fixture::refresh_request("idp", "alice", ""))
            .await,
        Code::Unavailable,
        "PROVIDER_UNAVAILABLE",
    );
    use tonic_types::StatusExt;
    let retry = s.get_details_retry_info().expect("retry info");
    assert_eq!(retry.retry_delay, Some(std::time::Duration::from_secs(7)));
    // The grant is kept: once the provider lets us, the refresh works.
    f.idp.fail_token(0).await;
    let t = token(
        f.authenticate(AGENT_KEY, Fixture::refresh_request("idp", "alice", ""))
            .await,
    );
    assert!(f.idp.userinfo(&t.access_token).await.status().is_success());
}

#[tokio::test]
async fn a_reused_refresh_token_marks_the_grant_dead_and_starts_a_new_flow() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    f.authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    // Snapshot the store (as a restored backup would be), refresh once (rotation), stop, and
    // put the old store back: the daemon now holds a refresh token the provider saw used.
    let data = f.valet.dir.path().join("data/store.redb");
    let old = std::fs::read(&data).unwrap();
    token(
        f.authenticate(AGENT_KEY, Fixture::refresh_request("idp", "alice", ""))
            .await,
    );
    let Fixture {
        valet,
        idp,
        browser,
    } = f;
    let mut valet = valet;
    assert!(valet.stop().success());
    std::fs::write(&data, old).unwrap();
    let valet = crate::support::Valet::start_again(valet);
    let f = Fixture {
        valet,
        idp,
        browser,
    };

    let p = pending(
        f.authenticate(AGENT_KEY, Fixture::refresh_request("idp", "alice", ""))
            .await,
    );
    let stats = f.idp.stats().await;
    assert_eq!(stats["grants"]["refresh_token:invalid_grant"], 1, "{stats}");
    let grants = f.grants("alice").await;
    assert_eq!(grants[0].status, pb::GrantStatus::NeedsReauth as i32);
    assert!(!grants[0].has_refresh_token);
    // Consent again: the grant is alive again.
    f.browser.consent(&p.auth_url, "alice").await;
    token(f.wait(&p.auth_id).await.unwrap().into_inner());
}
