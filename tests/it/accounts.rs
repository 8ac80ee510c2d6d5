//! Several accounts per user at one provider: each its own consent, grant and token, the
//! connected identity shown for each.

use crate::support::daemon::AGENT_KEY;
use crate::support::{Fixture, expect_err, pending, token};
use tonic::Code;
use valet::pb;

fn for_account(account: &str) -> pb::AuthenticateRequest {
    pb::AuthenticateRequest {
        account: account.into(),
        ..Fixture::request("idp", "alice", "")
    }
}

async fn subject_of(f: &Fixture, access_token: &str) -> String {
    let info: serde_json::Value = f.idp.userinfo(access_token).await.json().await.unwrap();
    info["sub"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn two_accounts_of_one_user_each_resolve_to_their_own_token_and_identity() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let mut creds = f.valet.credentials(AGENT_KEY).await;
    // Each account consents with its own login at the provider.
    let mut connect = async |account: &str, login: &str| {
        let p = pending(
            creds
                .authenticate(for_account(account))
                .await
                .unwrap()
                .into_inner(),
        );
        // A browser of its own: another sign-in at the provider.
        crate::support::Browser::new()
            .consent(&p.auth_url, login)
            .await;
        token(
            creds
                .wait_for_completion(pb::WaitForCompletionRequest {
                    auth_id: p.auth_id,
                    timeout_seconds: 10,
                    status_only: false,
                })
                .await
                .unwrap()
                .into_inner(),
        )
    };
    let work = connect("work", "alice-work").await;
    let home = connect("personal", "alice-home").await;
    assert_ne!(work.access_token, home.access_token);
    assert_eq!(subject_of(&f, &work.access_token).await, "alice-work");
    assert_eq!(subject_of(&f, &home.access_token).await, "alice-home");
    // Asked again, each account answers with its own token; the default account has none.
    let again = token(f.authenticate(AGENT_KEY, for_account("work")).await);
    assert_eq!(again.access_token, work.access_token);
    pending(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );

    // Which account is which: the label, the subject and the email per grant.
    let mut grants = f.grants("alice").await;
    grants.sort_by(|a, b| a.account.cmp(&b.account));
    let shown: Vec<_> = grants
        .iter()
        .map(|g| (g.account.as_str(), g.subject.as_str(), g.email.as_str()))
        .collect();
    assert_eq!(
        shown,
        [
            ("personal", "alice-home", "alice-home@example.test"),
            ("work", "alice-work", "alice-work@example.test")
        ]
    );
    let only_work = f
        .valet
        .credentials(AGENT_KEY)
        .await
        .list_grants(pb::ListGrantsRequest {
            user_id: "alice".into(),
            account: "work".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .grants;
    assert_eq!(only_work.len(), 1);
    assert_eq!(only_work[0].subject, "alice-work");

    // Revoking one account leaves the other.
    let revoked = f
        .valet
        .credentials(AGENT_KEY)
        .await
        .revoke(pb::RevokeRequest {
            provider_id: "idp".into(),
            user_id: "alice".into(),
            account: "work".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked);
    let left = f.grants("alice").await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].account, "personal");
    let still = token(f.authenticate(AGENT_KEY, for_account("personal")).await);
    assert_eq!(still.access_token, home.access_token);

    let s = expect_err(
        f.try_authenticate(AGENT_KEY, for_account("bad\nlabel"))
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert!(s.message().contains("account"), "{s:?}");
}
