//! Grants are reachable only by the caller they belong to: agent-scoped and user-scoped grants
//! never mix, users never see each other's, and wider scopes need a new consent.

use crate::support::daemon::{AGENT_KEY, OTHER_AGENT_KEY};
use crate::support::{Fixture, pending, token};
use valet::pb;

#[tokio::test]
async fn agent_and_user_grants_are_isolated() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let mine = f
        .authorize(AGENT_KEY, Fixture::request("idp", "alice", "planner"))
        .await;
    // Same agent id, same user: the cached token.
    let again = token(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", "planner"))
            .await,
    );
    assert_eq!(again.access_token, mine.access_token);
    // Another agent of the same user, the user-wide grant, and another user: each a new flow.
    for (key, user, agent) in [
        (AGENT_KEY, "alice", "writer"),
        (AGENT_KEY, "alice", ""),
        (AGENT_KEY, "bob", "planner"),
        (OTHER_AGENT_KEY, "bob", ""),
    ] {
        let p = pending(
            f.authenticate(key, Fixture::request("idp", user, agent))
                .await,
        );
        assert!(
            !p.auth_url.is_empty(),
            "{user}/{agent} must consent on its own"
        );
    }
    // A user-wide grant is not handed to an agent-scoped request either.
    let wide = f
        .authorize(AGENT_KEY, Fixture::request("idp", "carol", ""))
        .await;
    let p = pending(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "carol", "planner"))
            .await,
    );
    assert!(!p.auth_url.contains(&wide.access_token));
}

#[tokio::test]
async fn scopes_beyond_the_grant_start_a_consent_for_the_union() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    f.authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    let wider = pb::AuthenticateRequest {
        scopes: vec!["profile".into()],
        ..Fixture::request("idp", "alice", "")
    };
    let p = pending(f.authenticate(AGENT_KEY, wider.clone()).await);
    let url = url::Url::parse(&p.auth_url).unwrap();
    let scope = url.query_pairs().find(|(k, _)| k == "scope").unwrap().1;
    let mut scopes: Vec<&str> = scope.split(' ').collect();
    scopes.sort_unstable();
    assert_eq!(scopes, ["email", "openid", "profile"]);
    // Until the wider consent succeeds, the existing grant keeps serving what it covers.
    token(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    // A refused wider consent leaves it alone too.
    let cb = f.browser.authorize(&p.auth_url, "alice", false).await;
    f.browser.visit(&cb).await;
    token(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    let p = pending(f.authenticate(AGENT_KEY, wider.clone()).await);
    f.browser.consent(&p.auth_url, "alice").await;
    // Now both the old and the new scopes are served from the one grant.
    let t = token(f.authenticate(AGENT_KEY, wider).await);
    assert!(t.scopes.contains(&"profile".to_owned()) && t.scopes.contains(&"email".to_owned()));
}
