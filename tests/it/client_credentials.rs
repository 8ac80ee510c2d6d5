//! Kind `client_credentials` (RFC 6749 section 4.4) against the real OpenID provider: a token for
//! the client itself, cached per (provider, scopes, audience, resource), bought once however many
//! agents ask at once, and clear refusals for everything that does not apply to it.

use crate::support::daemon::{ADMIN_KEY, AGENT_KEY};
use crate::support::idp::secret_of;
use crate::support::{Fixture, expect_err, token};
use tonic::Code;
use valet::pb;

async fn client_provider(f: &Fixture, id: &str, secret: &str) {
    f.create(pb::Provider {
        provider_id: id.into(),
        kind: pb::ProviderKind::ClientCredentials as i32,
        client_id: "basic-client".into(),
        client_secret: secret.into(),
        token_url: format!("{}/token", f.idp.issuer),
        default_scopes: vec!["api.read".into()],
        ..Default::default()
    })
    .await;
}

fn request(scopes: &[&str]) -> pb::AuthenticateRequest {
    pb::AuthenticateRequest {
        provider_id: "svc".into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_client_token_is_bought_once_cached_and_works_at_the_provider() {
    let f = Fixture::new().await;
    client_provider(&f, "svc", &secret_of("basic-client")).await;
    let t = token(f.authenticate(AGENT_KEY, request(&[])).await);
    let info = f.idp.introspect("basic-client", &t.access_token).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["client_id"], "basic-client");
    assert!(t.expires_at > 0);
    let before = f.idp.token_requests().await;
    let again = token(f.authenticate(AGENT_KEY, request(&[])).await);
    assert_eq!(again.access_token, t.access_token, "served from the cache");
    assert_eq!(f.idp.token_requests().await, before);

    // Twenty agents asking for a new slot at once: one token request.
    let calls = (0..20).map(|_| f.authenticate(AGENT_KEY, request(&["api.write"])));
    let tokens: Vec<pb::Token> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(token)
        .collect();
    assert!(
        tokens
            .iter()
            .all(|t| t.access_token == tokens[0].access_token)
    );
    assert_ne!(
        tokens[0].access_token, t.access_token,
        "scopes are their own slot"
    );
    assert_eq!(f.idp.token_requests().await, before + 1);

    // Asking for more life than the cached token has buys a new one, ahead of expiry.
    let longer = pb::AuthenticateRequest {
        min_ttl_seconds: 7200,
        ..request(&[])
    };
    let fresh = token(f.authenticate(AGENT_KEY, longer).await);
    assert_ne!(fresh.access_token, t.access_token);
    assert!(f.grants_for_admin().await.is_empty(), "no grant is stored");
    assert!(!f.valet.logs().contains(&t.access_token));
}

#[tokio::test]
async fn what_does_not_apply_to_client_credentials_is_refused_by_field() {
    let f = Fixture::new().await;
    client_provider(&f, "svc", &secret_of("basic-client")).await;
    let cases = [
        (
            pb::AuthenticateRequest {
                user_id: "alice".into(),
                ..request(&[])
            },
            "user_id",
        ),
        (
            pb::AuthenticateRequest {
                handout: pb::Handout::Reference as i32,
                ..request(&[])
            },
            "handout",
        ),
        (
            pb::AuthenticateRequest {
                resource: "not a uri".into(),
                ..request(&[])
            },
            "resource",
        ),
        (
            pb::AuthenticateRequest {
                resource: "https://api.example/#frag".into(),
                ..request(&[])
            },
            "resource",
        ),
    ];
    for (req, field) in cases {
        let s = expect_err(
            f.try_authenticate(AGENT_KEY, req).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert!(s.message().contains(field), "{field}: {s:?}");
    }
    // A user-flow provider refuses audience/resource.
    f.oidc_provider("idp", "basic-client").await;
    let s = expect_err(
        f.try_authenticate(
            AGENT_KEY,
            pb::AuthenticateRequest {
                audience: "api".into(),
                ..Fixture::request("idp", "alice", "")
            },
        )
        .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert!(s.message().contains("audience"), "{s:?}");

    // Provider settings that make no sense without a user are refused, and nothing is written.
    let mut providers = f.valet.providers_as(ADMIN_KEY).await;
    for (p, field) in [
        (
            pb::Provider {
                auth_url: format!("{}/auth", f.idp.issuer),
                ..svc_provider(&f)
            },
            "auth_url",
        ),
        (
            pb::Provider {
                handout_policy: pb::HandoutPolicy::ReferenceOnly as i32,
                ..svc_provider(&f)
            },
            "handout_policy",
        ),
        (
            pb::Provider {
                token_url: String::new(),
                ..svc_provider(&f)
            },
            "token_url",
        ),
    ] {
        let s = expect_err(
            providers
                .create_provider(pb::CreateProviderRequest { provider: Some(p) })
                .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert!(s.message().contains(field), "{field}: {s:?}");
    }
    expect_err(
        providers
            .get_provider(pb::GetProviderRequest {
                provider_id: "svc2".into(),
            })
            .await,
        Code::NotFound,
        "NOT_FOUND",
    );
}

fn svc_provider(f: &Fixture) -> pb::Provider {
    pb::Provider {
        provider_id: "svc2".into(),
        kind: pb::ProviderKind::ClientCredentials as i32,
        client_id: "basic-client".into(),
        client_secret: secret_of("basic-client"),
        token_url: format!("{}/token", f.idp.issuer),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_refused_client_secret_is_a_clear_provider_rejection() {
    let f = Fixture::new().await;
    client_provider(&f, "svc", "wrong-secret-canary").await;
    let s = expect_err(
        f.try_authenticate(AGENT_KEY, request(&[])).await,
        Code::FailedPrecondition,
        "PROVIDER_REJECTED",
    );
    assert!(s.message().contains("invalid_client"), "{s:?}");
    assert!(!s.message().contains("wrong-secret-canary"));
}

#[tokio::test]
async fn a_resource_indicator_buys_a_token_for_that_api_only() {
    let f = Fixture::new().await;
    client_provider(&f, "svc", &secret_of("basic-client")).await;
    let api = "https://api.valet.test";
    let for_api = pb::AuthenticateRequest {
        resource: api.into(),
        ..request(&["api.read"])
    };
    let t = token(f.authenticate(AGENT_KEY, for_api.clone()).await);
    let info = f.idp.introspect("basic-client", &t.access_token).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(
        info["aud"], api,
        "the token is for the API named (RFC 8707)"
    );
    let plain = token(f.authenticate(AGENT_KEY, request(&["api.read"])).await);
    assert_ne!(
        plain.access_token, t.access_token,
        "each resource is its own cache slot"
    );
    let info = f.idp.introspect("basic-client", &plain.access_token).await;
    assert_ne!(info["aud"], api, "{info}");
    let again = token(f.authenticate(AGENT_KEY, for_api).await);
    assert_eq!(again.access_token, t.access_token);
    // A resource the provider does not serve is its refusal, named.
    let s = expect_err(
        f.try_authenticate(
            AGENT_KEY,
            pb::AuthenticateRequest {
                resource: "https://elsewhere.example".into(),
                ..request(&["api.read"])
            },
        )
        .await,
        Code::FailedPrecondition,
        "PROVIDER_REJECTED",
    );
    assert!(s.message().contains("invalid_target"), "{s:?}");
}

/// With `allow_private_networks` off, a token endpoint on loopback is never called, and the
/// caller is told it was Valet's setting, not the provider, that stopped the request.
#[tokio::test]
async fn a_token_endpoint_on_a_private_address_is_not_called_and_says_which_setting() {
    let f = Fixture::with(crate::support::ValetOptions {
        allow_private_networks: false,
        ..Default::default()
    })
    .await;
    client_provider(&f, "svc", &secret_of("basic-client")).await;
    let before = f.idp.token_requests().await;
    let s = expect_err(
        f.try_authenticate(AGENT_KEY, request(&[])).await,
        Code::FailedPrecondition,
        "PROVIDER_BLOCKED",
    );
    assert!(
        s.message().contains("Valet did not call the provider")
            && s.message().contains("allow_private_networks = true"),
        "{s:?}"
    );
    assert!(!s.message().contains("refused"), "{s:?}");
    assert_eq!(f.idp.token_requests().await, before, "nothing was sent");
}
