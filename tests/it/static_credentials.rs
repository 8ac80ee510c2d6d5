//! Static credentials (api_key, http_basic, http_bearer): stored write-only per user or agent with
//! PutCredential, resolved into the right place, isolated, refused clearly, never logged.

use crate::support::daemon::{AGENT_KEY, OTHER_AGENT_KEY};
use crate::support::{Fixture, expect_err, token};
use base64::Engine as _;
use tonic::Code;
use valet::pb;

const KEY_VALUE: &str = "sk-static-canary-0123456789";

async fn static_provider(f: &Fixture, id: &str, kind: pb::ProviderKind, place: (i32, &str, &str)) {
    f.create(pb::Provider {
        provider_id: id.into(),
        kind: kind as i32,
        credential_location: place.0,
        credential_name: place.1.into(),
        credential_prefix: place.2.into(),
        ..Default::default()
    })
    .await;
}

fn put(
    provider: &str,
    user: &str,
    agent: &str,
    value: &str,
    username: &str,
) -> pb::PutCredentialRequest {
    pb::PutCredentialRequest {
        provider_id: provider.into(),
        user_id: user.into(),
        agent_id: agent.into(),
        value: value.into(),
        username: username.into(),
        account: String::new(),
    }
}

/// The credential a reference resolves to, for `user` (and `agent`) at `provider`.
async fn applied(
    f: &Fixture,
    key: &str,
    provider: &str,
    user: &str,
    agent: &str,
) -> pb::Credential {
    f.resolved_credential(key, Fixture::request(provider, user, agent))
        .await
}

#[tokio::test]
async fn stored_values_resolve_into_header_query_cookie_basic_and_bearer() {
    let f = Fixture::new().await;
    let h = pb::CredentialLocation::Header as i32;
    static_provider(&f, "hdr", pb::ProviderKind::ApiKey, (h, "X-API-Key", "")).await;
    static_provider(
        &f,
        "qry",
        pb::ProviderKind::ApiKey,
        (pb::CredentialLocation::Query as i32, "api_key", ""),
    )
    .await;
    static_provider(
        &f,
        "ck",
        pb::ProviderKind::ApiKey,
        (pb::CredentialLocation::Cookie as i32, "session", ""),
    )
    .await;
    static_provider(
        &f,
        "pre",
        pb::ProviderKind::ApiKey,
        (h, "Authorization", "token "),
    )
    .await;
    static_provider(&f, "basic", pb::ProviderKind::HttpBasic, (0, "", "")).await;
    static_provider(&f, "bearer", pb::ProviderKind::HttpBearer, (0, "", "")).await;
    let mut creds = f.valet.credentials(AGENT_KEY).await;
    for p in ["hdr", "qry", "ck", "pre", "bearer"] {
        creds
            .put_credential(put(p, "alice", "", KEY_VALUE, ""))
            .await
            .unwrap();
    }
    creds
        .put_credential(put("basic", "alice", "", "pa55word", "alice@acme"))
        .await
        .unwrap();
    let expect = [
        ("hdr", "header", "X-API-Key", KEY_VALUE.to_owned()),
        ("qry", "query", "api_key", KEY_VALUE.to_owned()),
        ("ck", "cookie", "session", KEY_VALUE.to_owned()),
        (
            "pre",
            "header",
            "Authorization",
            format!("token {KEY_VALUE}"),
        ),
        (
            "bearer",
            "header",
            "Authorization",
            format!("Bearer {KEY_VALUE}"),
        ),
        (
            "basic",
            "header",
            "Authorization",
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("alice@acme:pa55word")
            ),
        ),
    ];
    for (p, location, name, value) in expect {
        let c = applied(&f, AGENT_KEY, p, "alice", "").await;
        assert_eq!(
            (c.location.as_str(), c.name.as_str(), c.value.as_str()),
            (location, name, value.as_str()),
            "{p}"
        );
    }
    // The raw value where the handout policy allows tokens; it survives a restart.
    let f = f.restart();
    let t = token(
        f.authenticate(AGENT_KEY, Fixture::request("hdr", "alice", ""))
            .await,
    );
    assert_eq!((t.access_token.as_str(), t.expires_at), (KEY_VALUE, 0));
    // Listings show that a value is set, never the value.
    let grants = f.grants("alice").await;
    assert_eq!(grants.len(), 6);
    assert!(
        grants
            .iter()
            .all(|g| g.has_stored_value && !g.has_refresh_token && g.updated_at > 0)
    );
    let basic = grants.iter().find(|g| g.provider_id == "basic").unwrap();
    assert_eq!(basic.kind, pb::ProviderKind::HttpBasic as i32);
    assert!(!format!("{grants:?}").contains(KEY_VALUE));
    assert!(!f.valet.logs().contains(KEY_VALUE) && !f.valet.logs().contains("pa55word"));
}

#[tokio::test]
async fn a_missing_value_is_a_clear_precondition_and_values_are_isolated() {
    let f = Fixture::new().await;
    static_provider(&f, "hdr", pb::ProviderKind::ApiKey, (0, "X-API-Key", "")).await;
    let s = expect_err(
        f.try_authenticate(AGENT_KEY, Fixture::request("hdr", "alice", ""))
            .await,
        Code::FailedPrecondition,
        "CREDENTIAL_MISSING",
    );
    assert!(
        s.message().contains("hdr")
            && s.message().contains("alice")
            && s.message().contains("PutCredential"),
        "{s:?}"
    );
    let mut creds = f.valet.credentials(AGENT_KEY).await;
    creds
        .put_credential(put("hdr", "alice", "planner", "agent-only-value", ""))
        .await
        .unwrap();
    // The agent's value is not the user's, and another user has none.
    expect_err(
        f.try_authenticate(AGENT_KEY, Fixture::request("hdr", "alice", ""))
            .await,
        Code::FailedPrecondition,
        "CREDENTIAL_MISSING",
    );
    expect_err(
        f.try_authenticate(AGENT_KEY, Fixture::request("hdr", "bob", "planner"))
            .await,
        Code::FailedPrecondition,
        "CREDENTIAL_MISSING",
    );
    let t = token(
        f.authenticate(AGENT_KEY, Fixture::request("hdr", "alice", "planner"))
            .await,
    );
    assert_eq!(t.access_token, "agent-only-value");
    // A reference issued to one key is refused to another.
    let c = applied(&f, AGENT_KEY, "hdr", "alice", "planner").await;
    assert_eq!(c.value, "agent-only-value");
    let r = f
        .authenticate(
            AGENT_KEY,
            pb::AuthenticateRequest {
                handout: pb::Handout::Reference as i32,
                ..Fixture::request("hdr", "alice", "planner")
            },
        )
        .await;
    let Some(pb::authenticate_response::Result::Reference(r)) = r.result else {
        panic!("{r:?}");
    };
    expect_err(
        f.valet
            .credentials(OTHER_AGENT_KEY)
            .await
            .resolve(pb::ResolveRequest {
                reference: r.reference,
                min_ttl_seconds: 0,
                target_url: String::new(),
            })
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
}

#[tokio::test]
async fn a_value_stored_for_one_account_is_that_accounts_only() {
    let f = Fixture::new().await;
    static_provider(&f, "hdr", pb::ProviderKind::ApiKey, (0, "X-API-Key", "")).await;
    let mut creds = f.valet.credentials(AGENT_KEY).await;
    let at = |account: &str| pb::AuthenticateRequest {
        account: account.into(),
        ..Fixture::request("hdr", "alice", "")
    };
    creds
        .put_credential(pb::PutCredentialRequest {
            account: "work".into(),
            ..put("hdr", "alice", "", "work-key-canary", "")
        })
        .await
        .unwrap();
    let t = token(f.authenticate(AGENT_KEY, at("work")).await);
    assert_eq!(t.access_token, "work-key-canary");
    // The default account and another account have none; the error names the slot.
    expect_err(
        f.try_authenticate(AGENT_KEY, at("")).await,
        Code::FailedPrecondition,
        "CREDENTIAL_MISSING",
    );
    let s = expect_err(
        f.try_authenticate(AGENT_KEY, at("home")).await,
        Code::FailedPrecondition,
        "CREDENTIAL_MISSING",
    );
    assert!(s.message().contains("account 'home'"), "{s:?}");
    let grants = f.grants("alice").await;
    assert_eq!(
        grants
            .iter()
            .map(|g| g.account.as_str())
            .collect::<Vec<_>>(),
        ["work"]
    );
    // A bad label is refused by field, and nothing is written.
    let s = expect_err(
        creds
            .put_credential(pb::PutCredentialRequest {
                account: "a\nb".into(),
                ..put("hdr", "alice", "", "v", "")
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert!(s.message().contains("account"), "{s:?}");
    assert_eq!(f.grants("alice").await.len(), 1, "nothing more was written");
    // Revoking that account's value leaves no value behind.
    creds
        .revoke(pb::RevokeRequest {
            provider_id: "hdr".into(),
            user_id: "alice".into(),
            account: "work".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(f.grants("alice").await.is_empty());
    assert!(!f.valet.logs().contains("work-key-canary"));
}

#[tokio::test]
async fn bad_values_and_placements_are_refused_by_field_and_write_nothing() {
    let f = Fixture::new().await;
    static_provider(&f, "hdr", pb::ProviderKind::ApiKey, (0, "X-API-Key", "")).await;
    static_provider(&f, "basic", pb::ProviderKind::HttpBasic, (0, "", "")).await;
    f.oidc_provider("idp", "basic-client").await;
    let mut creds = f.valet.credentials(AGENT_KEY).await;
    let cases = [
        (put("hdr", "alice", "", "", ""), "value: is empty"),
        (put("hdr", "alice", "", "   ", ""), "value: is empty"),
        (
            put("hdr", "alice", "", "a\nb", ""),
            "value: holds a control character",
        ),
        (
            put("hdr", "alice", "", &"x".repeat(5000), ""),
            "value: is 5000 bytes",
        ),
        (put("hdr", "alice", "", "v", "someone"), "username"),
        (
            put("basic", "alice", "", "pw", ""),
            "username: is required for http_basic",
        ),
        (
            put("basic", "alice", "", "pw", "a:b"),
            "username: holds a ':'",
        ),
        (
            put("basic", "alice", "", "pw", "a\tb"),
            "username: holds a control character",
        ),
        (put("idp", "alice", "", "v", ""), "provider_id"),
        (put("hdr", "", "", "v", ""), "user_id"),
    ];
    for (req, field) in cases {
        let s = expect_err(
            creds.put_credential(req).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert!(s.message().contains(field), "{field}: {s:?}");
    }
    assert!(f.grants("alice").await.is_empty(), "nothing was written");
    let cases = vec![
        (
            pb::Provider {
                provider_id: "k1".into(),
                kind: pb::ProviderKind::ApiKey as i32,
                ..Default::default()
            },
            "credential_name: is required",
        ),
        (
            pb::Provider {
                provider_id: "k2".into(),
                kind: pb::ProviderKind::ApiKey as i32,
                credential_name: "bad name".into(),
                ..Default::default()
            },
            "credential_name: is not an HTTP token",
        ),
        (
            pb::Provider {
                provider_id: "k3".into(),
                kind: pb::ProviderKind::HttpBearer as i32,
                credential_location: pb::CredentialLocation::Query as i32,
                ..Default::default()
            },
            "credential_location",
        ),
        (
            pb::Provider {
                provider_id: "k4".into(),
                kind: pb::ProviderKind::ApiKey as i32,
                credential_name: "X-K".into(),
                client_secret: "s".into(),
                ..Default::default()
            },
            "client_secret",
        ),
    ];
    let (_, count) = f.refused_providers(cases).await;
    assert_eq!(count, 3, "nothing more was written");
}

/// A key rotated with `previous_key_sha256`: both keys are the one caller while the agent
/// moves, so a reference issued under the old key resolves with the new one (references are
/// bound to the caller's name), and still for no other caller.
#[tokio::test]
async fn a_key_rotated_in_its_entry_keeps_the_callers_references() {
    const OLD: &str = "valet_rotating-old-key-0123456789abcdef";
    const NEW: &str = "valet_rotating-new-key-0123456789abcdef";
    let previous = hex::encode(valet::secret::sha256(OLD.as_bytes()));
    let f = Fixture::with(crate::support::daemon::ValetOptions {
        extra_toml: crate::support::agent_caller(
            "rotating",
            NEW,
            &format!("previous_key_sha256 = \"{previous}\"\n"),
        ),
        ..Default::default()
    })
    .await;
    static_provider(&f, "hdr", pb::ProviderKind::ApiKey, (0, "X-API-Key", "")).await;
    f.valet
        .credentials(OLD)
        .await
        .put_credential(put("hdr", "alice", "", KEY_VALUE, ""))
        .await
        .unwrap();
    let r = f
        .authenticate(
            OLD,
            pb::AuthenticateRequest {
                handout: pb::Handout::Reference as i32,
                ..Fixture::request("hdr", "alice", "")
            },
        )
        .await;
    let Some(pb::authenticate_response::Result::Reference(r)) = r.result else {
        panic!("expected a reference, got {r:?}");
    };
    let resolve = |key: &'static str| {
        let (f, reference) = (&f, r.reference.clone());
        async move {
            f.valet
                .credentials(key)
                .await
                .resolve(pb::ResolveRequest {
                    reference,
                    min_ttl_seconds: 0,
                    target_url: String::new(),
                })
                .await
        }
    };
    let c = resolve(NEW).await.unwrap().into_inner().credential.unwrap();
    assert_eq!(c.value, KEY_VALUE);
    expect_err(
        resolve(AGENT_KEY).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    // The operator sees the old key still in use (two calls made with it, the new key's call not
    // counted), and is told once in the log; neither shows the key.
    let previous_calls = "valet_previous_key_calls_total{caller=\"rotating\"} 2\n";
    assert!(
        f.valet.metrics().await.contains(previous_calls),
        "{}",
        f.valet.metrics().await
    );
    let said = "previous key (previous_key_sha256)";
    let logs = f.valet.logs_once_they_contain(said).await;
    assert_eq!(logs.matches(said).count(), 1, "{logs}");
    assert!(!logs.contains(OLD) && !logs.contains(&previous), "{logs}");
}

/// An admin key with an `agents` list lists what it may act on, as it uses and revokes: the
/// user-wide grants and its agents' own, not another agent's (it used to list every grant
/// and refuse a filter naming one of them).
#[tokio::test]
async fn an_admin_key_bound_to_agents_lists_what_it_may_act_on() {
    const SCOPED: &str = "valet_scoped-admin-key-0123456789abcdef";
    let hash = hex::encode(valet::secret::sha256(SCOPED.as_bytes()));
    let f = Fixture::with(crate::support::daemon::ValetOptions {
        extra_toml: format!(
            "[[callers]]\nname = \"scoped-ops\"\nrole = \"admin\"\nkey_sha256 = \"{hash}\"\nagents = [\"planner\"]\n"
        ),
        ..Default::default()
    })
    .await;
    static_provider(&f, "hdr", pb::ProviderKind::ApiKey, (0, "X-API-Key", "")).await;
    // aaron's grant sorts first and is another agent's.
    for (key, user, agent) in [
        (OTHER_AGENT_KEY, "aaron", "reviewer"),
        (AGENT_KEY, "alice", ""),
        (AGENT_KEY, "alice", "planner"),
        (OTHER_AGENT_KEY, "alice", "reviewer"),
    ] {
        f.valet
            .credentials(key)
            .await
            .put_credential(put("hdr", user, agent, KEY_VALUE, ""))
            .await
            .unwrap();
    }
    let listed = |agent: &str, page_size: u32, page_token: String| {
        let (f, agent) = (&f, agent.to_owned());
        async move {
            f.valet
                .credentials(SCOPED)
                .await
                .list_grants(pb::ListGrantsRequest {
                    provider_id: "hdr".into(),
                    agent_id: agent,
                    page_size,
                    page_token,
                    ..Default::default()
                })
                .await
        }
    };
    let mut agents: Vec<String> = listed("", 0, String::new())
        .await
        .unwrap()
        .into_inner()
        .grants
        .into_iter()
        .map(|g| g.agent_id)
        .collect();
    agents.sort();
    assert_eq!(agents, ["", "planner"]);
    // Pages are filled with what it may see (the other agent's grants used to leave them short,
    // the first one empty).
    let (mut pages, mut token) = (Vec::new(), String::new());
    loop {
        let page = listed("", 1, token).await.unwrap().into_inner();
        pages.push(
            page.grants
                .iter()
                .map(|g| g.agent_id.clone())
                .collect::<Vec<_>>(),
        );
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(pages[0], [""], "{pages:?}");
    assert_eq!(pages[1], ["planner"], "{pages:?}");
    assert!(pages[2..].iter().all(Vec::is_empty), "{pages:?}");
    expect_err(
        listed("reviewer", 0, String::new()).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
}
