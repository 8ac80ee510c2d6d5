//! The consent flow end to end against the real OpenID provider, and every way a callback can go
//! wrong.

use crate::support::daemon::AGENT_KEY;
use crate::support::{Fixture, ValetOptions, expect_err, pending, token};
use tonic::Code;
use valet::pb;

#[tokio::test]
async fn oidc_flow_with_basic_auth_hands_out_a_working_token_then_caches_it() {
    let f = Fixture::new().await;
    let p = f.oidc_provider("idp", "basic-client").await;
    assert_eq!(p.redirect_uri, f.valet.callback_url("idp"));
    assert!(
        p.auth_url.ends_with("/auth"),
        "discovery filled auth_url: {p:?}"
    );

    let t = f
        .authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    assert_eq!(t.token_type.to_lowercase(), "bearer");
    assert!(t.scopes.contains(&"openid".to_owned()), "{:?}", t.scopes);
    let info = f.idp.userinfo(&t.access_token).await;
    assert!(info.status().is_success(), "provider refused the token");
    let info: serde_json::Value = info.json().await.unwrap();
    assert_eq!(info["sub"], "alice");

    // Second call: the cached token, no flow, no call to the provider.
    let before = f.idp.token_requests().await;
    let again = token(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    assert_eq!(again.access_token, t.access_token);
    assert_eq!(f.idp.token_requests().await, before);

    // The grant records the ID token's subject.
    let grants = f.grants("alice").await;
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].subject, "alice");
    assert!(grants[0].has_refresh_token);
}

#[tokio::test]
async fn oauth2_flow_with_post_auth_hands_out_a_working_token() {
    let f = Fixture::new().await;
    f.oauth2_provider("oauth").await;
    let t = f
        .authorize(AGENT_KEY, Fixture::request("oauth", "bob", ""))
        .await;
    let intro = f.idp.introspect("post-client", &t.access_token).await;
    assert_eq!(intro["active"], true, "{intro}");
    assert_eq!(intro["sub"], "bob");
    assert!(intro["scope"].as_str().unwrap().contains("api.read"));
    assert!(t.expires_at > 0);
}

#[tokio::test]
async fn wait_returns_pending_at_the_timeout() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let mut creds = f.valet.credentials(AGENT_KEY).await;
    let p = pending(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    let again = pending(
        creds
            .wait_for_completion(pb::WaitForCompletionRequest {
                auth_id: p.auth_id.clone(),
                timeout_seconds: 1,
                status_only: false,
            })
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(again.auth_id, p.auth_id);
    assert_eq!(again.auth_url, p.auth_url);
    // A gRPC deadline shorter than the timeout wins: pending, not DEADLINE_EXCEEDED.
    let mut req = tonic::Request::new(pb::WaitForCompletionRequest {
        auth_id: p.auth_id.clone(),
        timeout_seconds: 60,
        status_only: false,
    });
    req.set_timeout(std::time::Duration::from_millis(500));
    pending(creds.wait_for_completion(req).await.unwrap().into_inner());
    // Another caller cannot wait on it.
    let mut other = f
        .valet
        .credentials(crate::support::daemon::OTHER_AGENT_KEY)
        .await;
    let s = expect_err(
        other
            .wait_for_completion(pb::WaitForCompletionRequest {
                auth_id: p.auth_id,
                timeout_seconds: 1,
                status_only: false,
            })
            .await,
        Code::NotFound,
        "NOT_FOUND",
    );
    assert!(
        s.message().contains("call Authenticate again"),
        "says what to do: {s:?}"
    );
}

#[tokio::test]
async fn callback_page_is_not_cached_and_a_replayed_state_is_refused() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let p = pending(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    let cb = f.browser.authorize(&p.auth_url, "alice", true).await;
    assert!(
        cb.query().unwrap().contains("iss="),
        "the provider sends iss (RFC 9207)"
    );
    let (status, headers, body) = f.browser.visit(&cb).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["referrer-policy"], "no-referrer");

    let (status, _, body) = f.browser.visit(&cb).await;
    assert_eq!(status, 404);
    assert!(
        body.contains("no longer valid")
            && body.contains("already used")
            && body.contains("start again from your agent"),
        "{body}"
    );
    let code = cb
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    assert!(!body.contains(&code));
    // The first use still completed the flow.
    token(f.wait(&p.auth_id).await.unwrap().into_inner());
}

/// Starts a flow and returns (auth_id, callback URL) without visiting the callback.
async fn callback_for(f: &Fixture, provider: &str) -> (String, url::Url) {
    let p = pending(
        f.authenticate(AGENT_KEY, Fixture::request(provider, "alice", ""))
            .await,
    );
    (
        p.auth_id,
        f.browser.authorize(&p.auth_url, "alice", true).await,
    )
}

async fn wait_err(f: &Fixture, auth_id: String, reason: &str) -> tonic::Status {
    let mut creds = f.valet.credentials(AGENT_KEY).await;
    expect_err(
        creds
            .wait_for_completion(pb::WaitForCompletionRequest {
                auth_id,
                timeout_seconds: 5,
                status_only: false,
            })
            .await,
        Code::FailedPrecondition,
        reason,
    )
}

async fn no_grants(f: &Fixture) {
    let grants = f.grants("alice").await;
    assert!(grants.is_empty(), "nothing may be written: {grants:?}");
}

#[tokio::test]
async fn a_state_presented_at_another_provider_fails_the_flow() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    f.oidc_provider("idp2", "basic-client").await;
    let (auth_id, cb) = callback_for(&f, "idp").await;
    let mut wrong = cb.clone();
    wrong.set_path("/oauth/callback/idp2");
    let (status, _, body) = f.browser.visit(&wrong).await;
    assert_eq!(status, 400);
    assert!(body.contains("wrong provider"), "{body}");
    // The state is spent: the right provider cannot use it any more.
    let (status, _, _) = f.browser.visit(&cb).await;
    assert_eq!(status, 404);
    wait_err(&f, auth_id, "WRONG_PROVIDER").await;
    no_grants(&f).await;
}

#[tokio::test]
async fn a_callback_with_a_foreign_issuer_is_refused() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let (auth_id, cb) = callback_for(&f, "idp").await;
    let mut forged = cb.clone();
    let pairs: Vec<(String, String)> = cb
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "iss" {
                "https://evil.example".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    forged.query_pairs_mut().clear().extend_pairs(pairs);
    let (status, _, body) = f.browser.visit(&forged).await;
    assert_eq!(status, 400);
    assert!(body.contains("issuer"), "{body}");
    wait_err(&f, auth_id, "ISSUER_MISMATCH").await;
    no_grants(&f).await;
}

#[tokio::test]
async fn a_callback_without_the_issuer_the_provider_always_sends_is_refused() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let (auth_id, cb) = callback_for(&f, "idp").await;
    assert!(
        cb.query_pairs().any(|(k, _)| k == "iss"),
        "the peer sends iss"
    );
    let mut stripped = cb.clone();
    let pairs: Vec<(String, String)> = cb
        .query_pairs()
        .filter(|(k, _)| k != "iss")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    stripped.query_pairs_mut().clear().extend_pairs(pairs);
    let (status, _, body) = f.browser.visit(&stripped).await;
    assert_eq!(status, 400);
    assert!(body.contains("issuer"), "{body}");
    wait_err(&f, auth_id, "ISSUER_MISMATCH").await;
    no_grants(&f).await;
}

#[tokio::test]
async fn access_denied_fails_the_flow_with_that_reason() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let p = pending(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    let cb = f.browser.authorize(&p.auth_url, "alice", false).await;
    assert!(cb.query().unwrap().contains("error=access_denied"));
    let (status, _, body) = f.browser.visit(&cb).await;
    assert_eq!(status, 400);
    assert!(body.contains("denied"), "{body}");
    let s = wait_err(&f, p.auth_id, "ACCESS_DENIED").await;
    assert!(s.message().contains("denied"), "{s:?}");
    no_grants(&f).await;
}

#[tokio::test]
async fn an_id_token_with_the_wrong_nonce_is_rejected() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    f.idp.tamper_nonce(true).await;
    let (auth_id, cb) = callback_for(&f, "idp").await;
    let (status, _, body) = f.browser.visit(&cb).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("ID token"), "{body}");
    let s = wait_err(&f, auth_id, "ID_TOKEN_REJECTED").await;
    assert!(s.message().to_lowercase().contains("nonce"), "{s:?}");
    no_grants(&f).await;
}

#[tokio::test]
async fn an_expired_flow_fails_closed() {
    let f = Fixture::with(ValetOptions {
        flow_ttl_seconds: 1,
        ..Default::default()
    })
    .await;
    f.oidc_provider("idp", "basic-client").await;
    let p = pending(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let cb = f.browser.authorize(&p.auth_url, "alice", true).await;
    let (status, _, body) = f.browser.visit(&cb).await;
    assert!(status == 400 || status == 404, "{status}: {body}");
    assert!(body.contains("expired"), "{body}");
    wait_err(&f, p.auth_id, "FLOW_EXPIRED").await;
    no_grants(&f).await;
    // A flow no callback ended is audited and counted as expired (the alert on unanswered
    // flows counts these).
    assert_eq!(
        f.valet
            .sample("valet_flows_expired_total{provider=\"idp\"}")
            .await,
        Some(1.0)
    );
}
