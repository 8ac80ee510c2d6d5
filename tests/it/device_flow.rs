//! The device authorization grant (RFC 8628) end to end against the real OpenID provider: the
//! agent gets a user code to show, the user enters it at the provider's own verification page
//! (filled over HTTP below), Valet polls and stores the grant, and `WaitForCompletion` answers as
//! for a browser flow.

use crate::support::daemon::AGENT_KEY;
use crate::support::idp::secret_of;
use crate::support::{Fixture, pending, token};
use valet::pb;

fn device_provider(f: &Fixture, id: &str) -> pb::Provider {
    pb::Provider {
        provider_id: id.into(),
        kind: pb::ProviderKind::Oidc as i32,
        client_id: "basic-client".into(),
        client_secret: secret_of("basic-client"),
        issuer: f.idp.issuer.clone(),
        default_scopes: vec!["openid".into(), "email".into()],
        consent_flow: pb::ConsentFlow::Device as i32,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_device_flow_shows_a_user_code_polls_and_completes_like_a_browser_flow() {
    let f = Fixture::new().await;
    let created = f.create(device_provider(&f, "idp")).await;
    assert_eq!(
        created.device_authorization_url,
        format!("{}/device/auth", f.idp.issuer),
        "discovered"
    );
    assert_eq!(created.consent_flow, pb::ConsentFlow::Device as i32);

    let req = Fixture::request("idp", "alice", "");
    let p = pending(f.authenticate(AGENT_KEY, req.clone()).await);
    assert!(!p.user_code.is_empty());
    assert_eq!(p.verification_uri, format!("{}/device", f.idp.issuer));
    assert!(
        p.auth_url.starts_with(&p.verification_uri),
        "{}",
        p.auth_url
    );
    assert!(
        p.auth_url.contains("user_code="),
        "the complete URI: {}",
        p.auth_url
    );
    // Asking again while it is pending joins it: one code to show, one poller.
    let again = pending(f.authenticate(AGENT_KEY, req.clone()).await);
    assert_eq!(
        (again.auth_id.as_str(), again.user_code.as_str()),
        (p.auth_id.as_str(), p.user_code.as_str())
    );

    // Before the user acts, waiting answers pending again.
    let waited = f.wait(&p.auth_id).await.unwrap().into_inner();
    assert_eq!(crate::support::pending(waited).user_code, p.user_code);

    let page = f.browser.device_consent(&p.auth_url, "alice").await;
    assert!(page.contains("Sign-in Success"), "{page}");
    let mut creds = f.valet.credentials(AGENT_KEY).await;
    let done = creds
        .wait_for_completion(pb::WaitForCompletionRequest {
            auth_id: p.auth_id.clone(),
            timeout_seconds: 30,
            status_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    let t = token(done);
    let info = f.idp.introspect("basic-client", &t.access_token).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["sub"], "alice", "{info}");

    // The grant is stored as any other: the next Authenticate is served without a flow.
    let cached = token(f.authenticate(AGENT_KEY, req).await);
    assert_eq!(cached.access_token, t.access_token);
    let grants = f.grants("alice").await;
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].subject, "alice", "the ID token was verified");
    let logs = f.valet.logs();
    assert!(!logs.contains(&t.access_token));
    assert!(
        !logs.contains(&p.user_code),
        "the user code stays out of the log"
    );
}

#[tokio::test]
async fn a_device_flow_needs_an_endpoint_and_a_kind_with_users() {
    let f = Fixture::new().await;
    let oauth2 = pb::Provider {
        provider_id: "dev".into(),
        kind: pb::ProviderKind::Oauth2 as i32,
        client_id: "basic-client".into(),
        client_secret: secret_of("basic-client"),
        auth_url: format!("{}/auth", f.idp.issuer),
        token_url: format!("{}/token", f.idp.issuer),
        consent_flow: pb::ConsentFlow::Device as i32,
        ..Default::default()
    };
    let cases = [
        (oauth2.clone(), "device_authorization_url"),
        (
            pb::Provider {
                device_authorization_url: "not a url".into(),
                ..oauth2.clone()
            },
            "device_authorization_url",
        ),
        (
            pb::Provider {
                kind: pb::ProviderKind::ClientCredentials as i32,
                auth_url: String::new(),
                ..oauth2.clone()
            },
            "consent_flow",
        ),
        (
            pb::Provider {
                consent_flow: 7,
                ..oauth2.clone()
            },
            "consent_flow",
        ),
    ];
    let (_, count) = f.refused_providers(cases.to_vec()).await;
    assert_eq!(count, 0, "nothing was written");
    // With the endpoint given, an oauth2 provider runs the device flow.
    let created = f
        .create(pb::Provider {
            device_authorization_url: format!("{}/device/auth", f.idp.issuer),
            ..oauth2
        })
        .await;
    assert_eq!(created.consent_flow, pb::ConsentFlow::Device as i32);
    let p = pending(
        f.authenticate(AGENT_KEY, Fixture::request("dev", "bob", ""))
            .await,
    );
    assert!(!p.user_code.is_empty());
}
