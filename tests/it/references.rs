//! References end to end: the agent keeps a reference and resolves it right before each call.

use crate::support::daemon::{AGENT_KEY, OTHER_AGENT_KEY};
use crate::support::vault::{ROOT_TOKEN, VaultDouble, options, token_auth};
use crate::support::{Fixture, expect_err, reference};
use base64::Engine as _;
use tonic::Code;
use valet::pb;
use valet::store::SecretStore as _;

fn reference_request(user: &str, single_use: bool) -> pb::AuthenticateRequest {
    pb::AuthenticateRequest {
        handout: pb::Handout::Reference as i32,
        single_use,
        ..Fixture::request("idp", user, "")
    }
}

/// Consent as `user` through a REFERENCE flow; returns the reference WaitForCompletion gives.
async fn consent_for_reference(f: &Fixture, key: &str, user: &str) -> pb::Reference {
    reference(f.complete_flow(key, reference_request(user, false)).await)
}

async fn resolve(
    f: &Fixture,
    key: &str,
    reference: &str,
    min_ttl: u32,
) -> Result<pb::ResolveResponse, tonic::Status> {
    f.valet
        .credentials(key)
        .await
        .resolve(pb::ResolveRequest {
            reference: reference.into(),
            min_ttl_seconds: min_ttl,
            target_url: String::new(),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_reference_resolves_to_a_working_token_refreshes_and_survives_a_restart() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let r = consent_for_reference(&f, AGENT_KEY, "alice").await;
    assert!(r.reference.starts_with("vref_"));
    assert!(r.expires_at > 0);
    let out = resolve(&f, AGENT_KEY, &r.reference, 0).await.unwrap();
    let t = out.token.unwrap();
    let cred = out.credential.unwrap();
    assert_eq!(
        (cred.location.as_str(), cred.name.as_str()),
        ("header", "Authorization")
    );
    assert_eq!(cred.value, format!("Bearer {}", t.access_token));
    assert!(f.idp.userinfo(&t.access_token).await.status().is_success());

    // Expired for the caller's purposes: a refresh happens.
    let before = f.idp.refreshes().await;
    let fresh = resolve(&f, AGENT_KEY, &r.reference, 7200)
        .await
        .unwrap()
        .token
        .unwrap();
    assert_ne!(fresh.access_token, t.access_token);
    assert_eq!(f.idp.refreshes().await, before + 1);

    // Another reference for the same grant, straight from Authenticate (no flow this time).
    let second = reference(
        f.authenticate(AGENT_KEY, reference_request("alice", false))
            .await,
    );
    assert_ne!(second.reference, r.reference);

    let f = f.restart();
    let after = resolve(&f, AGENT_KEY, &r.reference, 0)
        .await
        .unwrap()
        .token
        .unwrap();
    assert!(
        f.idp
            .userinfo(&after.access_token)
            .await
            .status()
            .is_success()
    );

    // A grant named beside a reference is refused, not ignored: nothing is revoked.
    let mut creds = f.valet.credentials(AGENT_KEY).await;
    let s = expect_err(
        creds
            .revoke(pb::RevokeRequest {
                reference: second.reference.clone(),
                provider_id: "idp".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert!(s.message().contains("provider_id"), "{s:?}");
    resolve(&f, AGENT_KEY, &second.reference, 0).await.unwrap();

    // Revoke one reference: it dies, the other lives.
    let revoked = creds
        .revoke(pb::RevokeRequest {
            reference: second.reference.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked);
    expect_err(
        resolve(&f, AGENT_KEY, &second.reference, 0)
            .await
            .map(tonic::Response::new),
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    resolve(&f, AGENT_KEY, &r.reference, 0).await.unwrap();

    // Revoke the grant: every reference dies with it.
    assert!(f.revoke_grant("alice").await);
    expect_err(
        resolve(&f, AGENT_KEY, &r.reference, 0)
            .await
            .map(tonic::Response::new),
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );

    // Logs never carry a reference; the store holds none in clear.
    let mut valet = f.valet;
    assert!(valet.stop().success());
    let logs = valet.logs();
    for value in [&r.reference, &second.reference] {
        assert!(!logs.contains(value.as_str()));
        assert!(!logs.contains(&value["vref_".len()..]));
    }
    let store = valet::store::EmbeddedStore::open(&valet.dir.path().join("data")).unwrap();
    for key in store
        .list("")
        .await
        .unwrap_or_default()
        .into_iter()
        .chain(store.list("refs/").await.unwrap())
    {
        let rec = store.get(&key).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&rec.value);
        assert!(
            !text.contains(&r.reference["vref_".len()..]),
            "{key} holds the reference"
        );
        assert!(!key.contains(&r.reference["vref_".len()..]));
    }
}

#[tokio::test]
async fn bad_and_foreign_references_are_refused_clearly() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let r = consent_for_reference(&f, AGENT_KEY, "alice").await;
    let body = &r.reference["vref_".len()..];
    let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .unwrap();
    raw[10] ^= 0x01;
    let tampered = format!(
        "vref_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw)
    );
    let forged = format!(
        "vref_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 64])
    );
    // A reference from another deployment (its own store, its own reference key).
    let other = Fixture::new().await;
    other.oidc_provider("idp", "basic-client").await;
    let foreign = consent_for_reference(&other, AGENT_KEY, "alice")
        .await
        .reference;
    let cases = [
        ("empty", String::new()),
        ("truncated", r.reference[..40].to_owned()),
        ("oversized", format!("{}{}", r.reference, "A".repeat(300))),
        ("wrong prefix", format!("vtok_{body}")),
        ("tampered", tampered),
        ("forged", forged),
        ("other deployment", foreign),
    ];
    for (what, value) in cases {
        let s = expect_err(
            resolve(&f, AGENT_KEY, &value, 0)
                .await
                .map(tonic::Response::new),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert!(s.message().contains("reference"), "{what}: {s:?}");
        if value.len() > 10 {
            assert!(
                !s.message().contains(&value[5..]),
                "{what}: the error echoes the input"
            );
        }
    }
    // The real one still works.
    resolve(&f, AGENT_KEY, &r.reference, 0).await.unwrap();
}

#[tokio::test]
async fn only_the_caller_a_reference_was_issued_to_may_resolve_it() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let alices = consent_for_reference(&f, AGENT_KEY, "alice").await;
    let bobs = consent_for_reference(&f, OTHER_AGENT_KEY, "bob").await;
    let s = expect_err(
        resolve(&f, OTHER_AGENT_KEY, &alices.reference, 0)
            .await
            .map(tonic::Response::new),
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    expect_err(
        resolve(&f, AGENT_KEY, &bobs.reference, 0)
            .await
            .map(tonic::Response::new),
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    // The same answer as for a reference that no longer exists: nothing is learned.
    let carols = consent_for_reference(&f, AGENT_KEY, "carol")
        .await
        .reference;
    f.valet
        .credentials(AGENT_KEY)
        .await
        .revoke(pb::RevokeRequest {
            reference: carols.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let gone = expect_err(
        resolve(&f, AGENT_KEY, &carols, 0)
            .await
            .map(tonic::Response::new),
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_eq!(gone.message(), s.message());
    // Nor may another caller revoke it.
    expect_err(
        f.valet
            .credentials(OTHER_AGENT_KEY)
            .await
            .revoke(pb::RevokeRequest {
                reference: alices.reference.clone(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    resolve(&f, AGENT_KEY, &alices.reference, 0).await.unwrap();
}

#[tokio::test]
async fn a_single_use_reference_resolves_exactly_once_under_concurrency() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    consent_for_reference(&f, AGENT_KEY, "alice").await;
    let once = reference(
        f.authenticate(AGENT_KEY, reference_request("alice", true))
            .await,
    );
    let creds = f.valet.credentials(AGENT_KEY).await;
    let calls = (0..100).map(|_| {
        let mut c = creds.clone();
        let reference = once.reference.clone();
        async move {
            c.resolve(pb::ResolveRequest {
                reference,
                min_ttl_seconds: 0,
                target_url: String::new(),
            })
            .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "exactly one resolve succeeds");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), Code::PermissionDenied, "{r:?}");
    }
    // single_use without REFERENCE is refused.
    let mut bad = Fixture::request("idp", "alice", "");
    bad.single_use = true;
    expect_err(
        f.try_authenticate(AGENT_KEY, bad).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
}

#[tokio::test]
async fn a_reference_only_provider_never_hands_out_a_token() {
    let f = Fixture::new().await;
    let mut p = pb::Provider {
        provider_id: "idp".into(),
        kind: pb::ProviderKind::Oidc as i32,
        client_id: "basic-client".into(),
        client_secret: crate::support::idp::secret_of("basic-client"),
        issuer: f.idp.issuer.clone(),
        handout_policy: pb::HandoutPolicy::ReferenceOnly as i32,
        reference_ttl_seconds: 3600,
        ..Default::default()
    };
    let created = f.create(p.clone()).await;
    assert_eq!(
        created.handout_policy,
        pb::HandoutPolicy::ReferenceOnly as i32
    );
    let s = expect_err(
        f.try_authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert!(s.message().contains("REFERENCE"), "{s:?}");
    let r = consent_for_reference(&f, AGENT_KEY, "alice").await;
    let now = valet::clock::Clock::now_unix(&valet::clock::SystemClock);
    assert!(
        r.expires_at <= now + 3601,
        "the provider's reference TTL applies"
    );
    resolve(&f, AGENT_KEY, &r.reference, 0).await.unwrap();
    p.provider_id = "idp2".into();
    p.reference_ttl_seconds = 400 * 24 * 3600;
    expect_err(
        f.valet
            .providers()
            .await
            .create_provider(pb::CreateProviderRequest { provider: Some(p) })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolving_a_cached_token_never_touches_the_store() {
    let d = VaultDouble::start("secret").await;
    let f = Fixture::with(options(&d.address, 2, &token_auth(ROOT_TOKEN))).await;
    f.oidc_provider("idp", "basic-client").await;
    let r = consent_for_reference(&f, AGENT_KEY, "alice").await;
    let first = resolve(&f, AGENT_KEY, &r.reference, 0).await.unwrap();
    // With Vault sealed, a store access would fail: the cached path does not make one.
    d.seal(true);
    let again = resolve(&f, AGENT_KEY, &r.reference, 0).await.unwrap();
    assert_eq!(
        again.token.unwrap().access_token,
        first.token.unwrap().access_token
    );
    // Past the cache (a refresh is needed), the store is needed and its outage shows.
    expect_err(
        resolve(&f, AGENT_KEY, &r.reference, 7200)
            .await
            .map(tonic::Response::new),
        Code::Unavailable,
        "STORE_UNAVAILABLE",
    );
}

/// Spent single-use references are deleted from the store by the reaper (at start, then every
/// ten minutes) with their index entries; live ones stay and still resolve.
/// An app that only waits for the user's consent (a UI resuming a paused graph, whose agent then
/// asks Authenticate itself) gets `completed` and no reference it would throw away.
#[tokio::test]
async fn waiting_with_status_only_hands_out_nothing() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let mut creds = f.valet.credentials(AGENT_KEY).await;
    let p = crate::support::pending(
        f.authenticate(AGENT_KEY, reference_request("alice", false))
            .await,
    );
    let wait = |timeout_seconds| pb::WaitForCompletionRequest {
        auth_id: p.auth_id.clone(),
        timeout_seconds,
        status_only: true,
    };
    use pb::authenticate_response::Result as R;
    let before = creds.wait_for_completion(wait(1)).await.unwrap();
    assert!(
        matches!(before.get_ref().result, Some(R::Pending(_))),
        "{before:?}"
    );
    f.browser.consent(&p.auth_url, "alice").await;
    let done = creds.wait_for_completion(wait(10)).await.unwrap();
    assert!(
        matches!(done.get_ref().result, Some(R::Completed(_))),
        "{done:?}"
    );
    // Another key still cannot learn how the flow went.
    expect_err(
        f.valet
            .credentials(OTHER_AGENT_KEY)
            .await
            .wait_for_completion(wait(1))
            .await,
        Code::NotFound,
        "NOT_FOUND",
    );
    // The agent asks for its reference: the only one in the store.
    reference(
        f.authenticate(AGENT_KEY, reference_request("alice", false))
            .await,
    );
    let mut valet = f.valet;
    assert!(valet.stop().success());
    let store = valet::store::EmbeddedStore::open(&valet.dir.path().join("data")).unwrap();
    assert_eq!(store.list("refs/").await.unwrap().len(), 1);
}

#[tokio::test]
async fn spent_references_are_reaped_from_the_store_and_live_ones_kept() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let live = consent_for_reference(&f, AGENT_KEY, "alice").await;
    let once = reference(
        f.authenticate(AGENT_KEY, reference_request("alice", true))
            .await,
    );
    resolve(&f, AGENT_KEY, &once.reference, 0).await.unwrap();
    let count = |dir: &std::path::Path| {
        let dir = dir.to_owned();
        async move {
            let store = valet::store::EmbeddedStore::open(&dir).unwrap();
            (
                store.list("refs/").await.unwrap().len(),
                store.list("ref-index/").await.unwrap().len(),
            )
        }
    };
    let data = f.valet.dir.path().join("data");
    let f = {
        let Fixture {
            mut valet,
            idp,
            browser,
        } = f;
        assert!(valet.stop().success());
        assert_eq!(
            count(&data).await,
            (2, 2),
            "both stored before the reaper runs"
        );
        Fixture {
            valet: valet.start_again(),
            idp,
            browser,
        }
    };
    // The reaper's first round runs at start; wait for it to show in the log.
    for _ in 0..100 {
        if f.valet
            .logs()
            .contains("deleted expired and spent references")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    resolve(&f, AGENT_KEY, &live.reference, 0).await.unwrap();
    let Fixture { mut valet, .. } = f;
    assert!(valet.stop().success());
    assert_eq!(count(&data).await, (1, 1), "the spent one is gone");
}
