//! Provider administration, caller authentication, and every bad input refused with a clear
//! error that names the field, with nothing written.

use crate::support::daemon::{ADMIN_KEY, AGENT_KEY, OTHER_AGENT_KEY};
use crate::support::{Fixture, expect_err, reason};
use tonic::Code;
use valet::pb;

fn oauth2(f: &Fixture, id: &str) -> pb::Provider {
    pb::Provider {
        provider_id: id.into(),
        kind: pb::ProviderKind::Oauth2 as i32,
        client_id: "post-client".into(),
        client_secret: "s3cret-canary".into(),
        auth_url: format!("{}/auth", f.idp.issuer),
        token_url: format!("{}/token", f.idp.issuer),
        ..Default::default()
    }
}

/// A stored client secret is kept on update only while every endpoint it is sent to (token,
/// revocation, device authorization) stays on a server it went to before: it is never sent to a
/// server it was not given for.
#[tokio::test]
async fn a_kept_client_secret_does_not_follow_the_token_endpoint_elsewhere() {
    let f = Fixture::new().await;
    f.create(oauth2(&f, "oauth")).await;
    let mut admin = f.valet.providers().await;
    // Revoking (or a device flow) would send it, with every grant's tokens, to another server.
    for (field, url) in [
        ("revocation_url", "https://evil.example/revoke"),
        ("device_authorization_url", "https://evil.example/device"),
    ] {
        let mut p = pb::Provider {
            client_secret: String::new(),
            ..oauth2(&f, "oauth")
        };
        match field {
            "revocation_url" => p.revocation_url = url.into(),
            _ => {
                p.device_authorization_url = url.into();
                p.consent_flow = pb::ConsentFlow::Device as i32;
            }
        }
        let s = expect_err(
            admin
                .update_provider(pb::UpdateProviderRequest { provider: Some(p) })
                .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert!(
            s.message().contains("client_secret") && s.message().contains("evil.example"),
            "{field}: {s:?}"
        );
    }
    let unchanged = admin
        .get_provider(pb::GetProviderRequest {
            provider_id: "oauth".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(unchanged.revocation_url.is_empty() && unchanged.device_authorization_url.is_empty());
    // On the token endpoint's own server, it is kept.
    let same_server = admin
        .update_provider(pb::UpdateProviderRequest {
            provider: Some(pb::Provider {
                client_secret: String::new(),
                revocation_url: format!("{}/token/revocation", f.idp.issuer),
                ..oauth2(&f, "oauth")
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(same_server.has_client_secret, "{same_server:?}");
    let moved = |secret: &str| pb::Provider {
        client_secret: secret.into(),
        auth_url: "https://login.elsewhere.example/auth".into(),
        token_url: "https://login.elsewhere.example/token".into(),
        ..oauth2(&f, "oauth")
    };
    let s = expect_err(
        admin
            .update_provider(pb::UpdateProviderRequest {
                provider: Some(moved("")),
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert!(
        s.message().contains("client_secret") && s.message().contains("login.elsewhere.example"),
        "{s:?}"
    );
    assert!(!s.message().contains("canary"), "{s:?}");
    let get = pb::GetProviderRequest {
        provider_id: "oauth".into(),
    };
    let kept = admin.get_provider(get.clone()).await.unwrap().into_inner();
    assert_eq!(
        kept.token_url,
        format!("{}/token", f.idp.issuer),
        "nothing changed"
    );
    // With the secret for the new server, or on the same host, the update goes through.
    let updated = admin
        .update_provider(pb::UpdateProviderRequest {
            provider: Some(moved("new-secret-canary")),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(updated.has_client_secret && updated.token_url.contains("elsewhere"));
    let back = pb::Provider {
        client_secret: String::new(),
        name: "Same host".into(),
        ..moved("")
    };
    let same = admin
        .update_provider(pb::UpdateProviderRequest {
            provider: Some(back),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(same.has_client_secret && same.name == "Same host");
}

/// `GetProvider`'s answer, changed and sent back, updates an oidc provider: the endpoints it
/// shows from discovery are taken as they were, and any other endpoint is still refused.
#[tokio::test]
async fn an_oidc_provider_updates_from_what_get_provider_showed() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let mut admin = f.valet.providers().await;
    let shown = admin
        .get_provider(pb::GetProviderRequest {
            provider_id: "idp".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!shown.auth_url.is_empty() && !shown.token_url.is_empty());
    let updated = admin
        .update_provider(pb::UpdateProviderRequest {
            provider: Some(pb::Provider {
                name: "Renamed".into(),
                ..shown.clone()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.name, "Renamed");
    assert_eq!(
        (
            &updated.auth_url,
            &updated.token_url,
            updated.has_client_secret
        ),
        (&shown.auth_url, &shown.token_url, true)
    );
    let s = expect_err(
        admin
            .update_provider(pb::UpdateProviderRequest {
                provider: Some(pb::Provider {
                    name: "Elsewhere".into(),
                    token_url: "https://elsewhere.example/token".into(),
                    ..shown.clone()
                }),
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert!(s.message().contains("token_url"), "{s:?}");
    let kept = admin
        .get_provider(pb::GetProviderRequest {
            provider_id: "idp".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (kept.name.as_str(), kept.token_url),
        ("Renamed", shown.token_url)
    );
}

#[tokio::test]
async fn provider_crud_never_returns_the_client_secret() {
    let f = Fixture::new().await;
    let mut admin = f.valet.providers().await;
    let created = f.create(oauth2(&f, "oauth")).await;
    assert!(created.client_secret.is_empty() && created.has_client_secret);
    assert_eq!(created.redirect_uri, f.valet.callback_url("oauth"));
    assert_eq!(created.name, "oauth");

    let mut changed = oauth2(&f, "oauth");
    changed.client_secret.clear(); // keep the stored secret
    changed.name = "Renamed".into();
    changed.default_scopes = vec!["api.read".into()];
    let updated = admin
        .update_provider(pb::UpdateProviderRequest {
            provider: Some(changed),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.name, "Renamed");
    assert!(
        updated.has_client_secret,
        "an empty secret on update keeps the old one"
    );

    let got = admin
        .get_provider(pb::GetProviderRequest {
            provider_id: "oauth".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.default_scopes, vec!["api.read"]);
    assert!(got.client_secret.is_empty());
    let list = admin
        .list_providers(pb::ListProvidersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.providers.len(), 1);

    let deleted = admin
        .delete_provider(pb::DeleteProviderRequest {
            provider_id: "oauth".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.grants_deleted, 0, "it had no grants");
    let gone = expect_err(
        admin
            .get_provider(pb::GetProviderRequest {
                provider_id: "oauth".into(),
            })
            .await,
        Code::NotFound,
        "NOT_FOUND",
    );
    // It says which provider, and where the configured ones are listed.
    assert_eq!(
        gone.message(),
        "no provider 'oauth' is configured: ListProviders (`valet provider list`) shows those that are"
    );
}

#[tokio::test]
async fn bad_provider_input_is_refused_naming_the_field_and_nothing_is_written() {
    let f = Fixture::new().await;
    let mut admin = f.valet.providers().await;
    type Edit = fn(&mut pb::Provider);
    let cases: Vec<(&str, Edit)> = vec![
        ("provider_id", |p| p.provider_id = "Bad Id".into()),
        ("provider_id", |p| p.provider_id = "../etc".into()),
        ("provider_id", |p| p.provider_id.clear()),
        ("kind", |p| p.kind = 0),
        ("client_id", |p| p.client_id.clear()),
        ("client_secret", |p| p.client_secret.clear()),
        ("auth_url", |p| {
            p.auth_url = "http://idp.example.com/auth".into()
        }),
        ("token_url", |p| {
            p.token_url = "ftp://127.0.0.1/token".into()
        }),
        ("token_url", |p| p.token_url.clear()),
        ("auth_url", |p| p.auth_url = "not a url".into()),
        ("default_scopes", |p| {
            p.default_scopes = vec!["has space".into()]
        }),
        ("extra_auth_params", |p| {
            p.extra_auth_params.insert("state".into(), "x".into());
        }),
        ("extra_auth_params", |p| {
            p.extra_auth_params.insert("a".into(), "b\r\nc".into());
        }),
        ("client_secret", |p| {
            p.client_secret = "s3cret-canary\n".into()
        }),
        ("issuer", |p| {
            p.kind = pb::ProviderKind::Oidc as i32;
            p.auth_url.clear();
            p.token_url.clear();
            p.issuer = "http://127.0.0.1:1".into();
        }),
        ("auth_url", |p| {
            p.kind = pb::ProviderKind::Oidc as i32;
            p.issuer = "http://127.0.0.1:1".into();
        }),
        // Where a stored value goes: static credentials only, never silently ignored.
        ("credential_location", |p| {
            p.credential_location = pb::CredentialLocation::Query as i32;
        }),
        ("credential_name", |p| {
            p.credential_name = "X-Api-Key".into()
        }),
        ("credential_prefix", |p| {
            p.credential_prefix = "token ".into()
        }),
        ("profile_vars", |p| {
            p.profile_vars.insert("tenant".into(), "contoso".into());
        }),
    ];
    for (field, edit) in cases {
        let mut p = oauth2(&f, "oauth");
        edit(&mut p);
        let s = expect_err(
            admin
                .create_provider(pb::CreateProviderRequest { provider: Some(p) })
                .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        use tonic_types::StatusExt;
        let violations = s.get_details_bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, field, "{s:?}");
        assert!(
            s.message().contains(field),
            "the message names the field: {s:?}"
        );
        assert!(!s.message().contains("s3cret-canary"));
    }
    expect_err(
        admin
            .create_provider(pb::CreateProviderRequest { provider: None })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    let list = admin
        .list_providers(pb::ListProvidersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(list.providers.is_empty(), "nothing written: {list:?}");

    f.create(oauth2(&f, "oauth")).await;
    expect_err(
        admin
            .create_provider(pb::CreateProviderRequest {
                provider: Some(oauth2(&f, "oauth")),
            })
            .await,
        Code::AlreadyExists,
        "ALREADY_EXISTS",
    );
    expect_err(
        admin
            .update_provider(pb::UpdateProviderRequest {
                provider: Some(oauth2(&f, "nope")),
            })
            .await,
        Code::NotFound,
        "NOT_FOUND",
    );
}

#[tokio::test]
async fn callers_are_authenticated_and_agents_cannot_administer() {
    let f = Fixture::new().await;
    let mut raw = f.valet.raw_credentials().await;
    let s = raw
        .authenticate(Fixture::request("idp", "alice", ""))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    assert!(
        s.message().contains("authorization"),
        "says what to send: {s:?}"
    );

    let mut wrong = f.valet.credentials("not-a-key").await;
    let s = wrong
        .authenticate(Fixture::request("idp", "alice", ""))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);

    let mut as_agent = f.valet.providers_as(AGENT_KEY).await;
    let s = as_agent
        .create_provider(pb::CreateProviderRequest {
            provider: Some(oauth2(&f, "oauth")),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);
    assert_eq!(reason(&s), "PERMISSION_DENIED");
    let s = as_agent
        .list_providers(pb::ListProvidersRequest {})
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);
    // The admin key works for both services.
    let mut admin_creds = f.valet.credentials(ADMIN_KEY).await;
    admin_creds
        .list_grants(pb::ListGrantsRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_authenticate_input_is_refused_and_starts_no_flow() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let mut creds = f.valet.credentials(AGENT_KEY).await;
    type Edit = fn(&mut pb::AuthenticateRequest);
    let cases: Vec<(&str, Edit)> = vec![
        ("user_id", |r| r.user_id.clear()),
        ("user_id", |r| r.user_id = "x".repeat(300)),
        ("user_id", |r| r.user_id = "a\u{0}b".into()),
        ("agent_id", |r| r.agent_id = "line\nbreak".into()),
        // Looks like `alice` (a zero-width space) or reads reversed (an override).
        ("user_id", |r| r.user_id = "alice\u{200b}".into()),
        ("agent_id", |r| r.agent_id = "planner\u{202e}".into()),
        ("provider_id", |r| r.provider_id = "Not/Valid".into()),
        ("scopes", |r| r.scopes = vec!["two words".into()]),
        ("scopes", |r| r.scopes = vec![String::new()]),
        ("scopes", |r| {
            r.scopes = (0..65).map(|i| format!("s{i}")).collect()
        }),
        ("scopes", |r| r.scopes = vec!["x".repeat(257)]),
        ("min_ttl_seconds", |r| r.min_ttl_seconds = 100_000_000),
        ("handout", |r| r.handout = 42),
    ];
    for (field, edit) in cases {
        let mut req = Fixture::request("idp", "alice", "");
        edit(&mut req);
        let s = expect_err(
            creds.authenticate(req).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert!(s.message().contains(field), "{field}: {s:?}");
    }
    expect_err(
        creds
            .authenticate(Fixture::request("nope", "alice", ""))
            .await,
        Code::NotFound,
        "NOT_FOUND",
    );
    expect_err(
        creds
            .wait_for_completion(pb::WaitForCompletionRequest {
                auth_id: "unknown".into(),
                timeout_seconds: 1,
                status_only: false,
            })
            .await,
        Code::NotFound,
        "NOT_FOUND",
    );
    expect_err(
        creds
            .wait_for_completion(pb::WaitForCompletionRequest::default())
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert!(f.grants("alice").await.is_empty());
    assert_eq!(
        f.valet.sample("valet_pending_flows").await,
        Some(0.0),
        "no flow started"
    );
    // Agents must name the user whose grants they list.
    expect_err(
        creds.list_grants(pb::ListGrantsRequest::default()).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
}

#[tokio::test]
async fn per_user_pending_flows_are_bounded() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let mut creds = f.valet.credentials(AGENT_KEY).await;
    // Identical requests share one flow; force_reauth asks for a new one each time.
    let fresh = || pb::AuthenticateRequest {
        force_reauth: true,
        ..Fixture::request("idp", "alice", "")
    };
    // One caller may hold half of a user's 16 pending flows, so it cannot lock others out.
    for _ in 0..8 {
        creds.authenticate(fresh()).await.unwrap();
    }
    let s = expect_err(
        creds.authenticate(fresh()).await,
        Code::ResourceExhausted,
        "RESOURCE_EXHAUSTED",
    );
    assert!(s.message().contains("this caller"), "{s:?}");
    let mut other = f.valet.credentials(OTHER_AGENT_KEY).await;
    for _ in 0..8 {
        other.authenticate(fresh()).await.unwrap();
    }
    let s = expect_err(
        other.authenticate(fresh()).await,
        Code::ResourceExhausted,
        "RESOURCE_EXHAUSTED",
    );
    assert!(s.message().contains("for this user (limit 16)"), "{s:?}");
    // Other users are unaffected.
    creds
        .authenticate(Fixture::request("idp", "bob", ""))
        .await
        .unwrap();
}

/// ListGrants pages through the store's key order: page tokens chain with no grant twice and an
/// empty token at the end; filters by user (across providers), agent and status read only what
/// they name; a token that is not one of ours, and a bad status, are refused by field.
#[tokio::test]
async fn list_grants_pages_and_filters() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    for (user, agent) in [("u1", ""), ("u1", "planner"), ("u2", ""), ("u3", "")] {
        f.authorize(AGENT_KEY, Fixture::request("idp", user, agent))
            .await;
    }
    let mut admin = f.valet.credentials(ADMIN_KEY).await;
    let list = |req: pb::ListGrantsRequest| {
        let mut c = admin.clone();
        async move { c.list_grants(req).await.map(tonic::Response::into_inner) }
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = Vec::new();
    loop {
        let page = list(pb::ListGrantsRequest {
            page_size: 3,
            page_token: token.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        pages.push(page.grants.len());
        seen.extend(
            page.grants
                .iter()
                .map(|g| format!("{}/{}", g.user_id, g.agent_id)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages[0], 3, "{pages:?}");
    seen.sort();
    assert_eq!(seen, ["u1/", "u1/planner", "u2/", "u3/"], "each grant once");
    // A page token continues only the listing it came from: with other filters it is refused,
    // not read as a place in another listing (which skipped grants).
    let first = list(pb::ListGrantsRequest {
        page_size: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let elsewhere = list(pb::ListGrantsRequest {
        page_size: 1,
        user_id: "u3".into(),
        page_token: first.next_page_token,
        ..Default::default()
    })
    .await
    .map(tonic::Response::new);
    let s = expect_err(elsewhere, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert!(s.message().contains("with these filters"), "{s:?}");

    let users = |r: pb::ListGrantsResponse| {
        r.grants
            .iter()
            .map(|g| format!("{}/{}", g.user_id, g.agent_id))
            .collect::<Vec<_>>()
    };
    let u1 = pb::ListGrantsRequest {
        user_id: "u1".into(),
        ..Default::default()
    };
    assert_eq!(users(list(u1.clone()).await.unwrap()).len(), 2);
    let planner = pb::ListGrantsRequest {
        agent_id: "planner".into(),
        ..u1.clone()
    };
    assert_eq!(users(list(planner).await.unwrap()), ["u1/planner"]);
    let reauth = pb::ListGrantsRequest {
        status: pb::GrantStatus::NeedsReauth as i32,
        ..Default::default()
    };
    assert!(users(list(reauth).await.unwrap()).is_empty());
    let huge = pb::ListGrantsRequest {
        page_size: 1_000_000,
        ..Default::default()
    };
    assert_eq!(
        users(list(huge).await.unwrap()).len(),
        4,
        "coerced to the maximum"
    );

    use base64::Engine as _;
    let foreign = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("refs/abc");
    // A grant's key in the clear, as page tokens were before they were sealed: a caller can no
    // longer forge (or read) one.
    let plain = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("grants/idp/YWxpY2U/_");
    for bad in ["not a token", foreign.as_str(), plain.as_str()] {
        let s = expect_err(
            admin
                .list_grants(pb::ListGrantsRequest {
                    page_token: bad.into(),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert!(s.message().contains("page_token"), "{s:?}");
    }
    let s = expect_err(
        admin
            .list_grants(pb::ListGrantsRequest {
                status: 42,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert!(s.message().contains("status"), "{s:?}");
    let s = expect_err(
        admin
            .list_grants(pb::ListGrantsRequest {
                provider_id: "nope".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "NOT_FOUND",
    );
    assert!(s.message().contains("no provider 'nope'"), "{s:?}");
}

#[tokio::test]
async fn an_id_with_invisible_characters_may_be_named_to_revoke_or_list_but_not_stored() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    // What an older version stored: looked up, not refused (here nothing is there).
    let old = "alice\u{200b}";
    let mut admin = f.valet.credentials(ADMIN_KEY).await;
    let revoked = admin
        .revoke(pb::RevokeRequest {
            provider_id: "idp".into(),
            user_id: old.into(),
            agent_id: old.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!revoked.revoked);
    let listed = admin
        .list_grants(pb::ListGrantsRequest {
            user_id: old.into(),
            account: old.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.grants.is_empty());
    // Storing a grant under one is refused, naming the field, and stores nothing.
    let s = expect_err(
        admin
            .import_grant(pb::ImportGrantRequest {
                provider_id: "idp".into(),
                user_id: old.into(),
                refresh_token: "an-imported-refresh-token".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert!(s.message().contains("user_id"), "{s:?}");
    assert!(f.grants(old).await.is_empty());
}
