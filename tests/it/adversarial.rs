//! The adversarial suite: what an attacker holding an agent key, a browser or a copy of the
//! daemon would try, each refused at its trust boundary. (More cases live next to the feature
//! they attack: `flow.rs` for state, issuer and nonce tampering, `references.rs` for forged and
//! foreign references, `canary.rs` for secrets in output.)

use crate::support::daemon::{ADMIN_KEY, AGENT_KEY, OTHER_AGENT_KEY};
use crate::support::idp::Idp;
use crate::support::{
    Browser, Fixture, Valet, ValetOptions, agent_caller, expect_err, pending, token, unix_channel,
};
use tonic::Code;
use valet::pb;

const PLAIN_KEY: &str = "test-plain-agent-key-canary-4";

/// A daemon with a third agent caller, `plain`, configured without an `agents` list.
async fn fixture() -> Fixture {
    Fixture::with(ValetOptions {
        extra_toml: agent_caller("plain", PLAIN_KEY, ""),
        ..Default::default()
    })
    .await
}

fn denied<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) {
    let s = expect_err(r, Code::PermissionDenied, "PERMISSION_DENIED");
    assert!(
        s.message().contains("agents"),
        "says how to allow it: {s:?}"
    );
}

#[tokio::test]
async fn an_agent_key_acts_only_as_the_agents_it_is_configured_for() {
    let f = fixture().await;
    f.oidc_provider("idp", "basic-client").await;
    // agent-a (agents: planner, writer, research-*) holds alice's planner grant.
    let mine = f
        .authorize(AGENT_KEY, Fixture::request("idp", "alice", "planner"))
        .await;
    // agent-b (agents: reviewer) and plain (no list) name that agent id: refused, no flow.
    for key in [OTHER_AGENT_KEY, PLAIN_KEY] {
        let mut creds = f.valet.credentials(key).await;
        denied(
            creds
                .authenticate(Fixture::request("idp", "alice", "planner"))
                .await,
        );
        denied(
            creds
                .revoke(pb::RevokeRequest {
                    provider_id: "idp".into(),
                    user_id: "alice".into(),
                    agent_id: "planner".into(),
                    ..Default::default()
                })
                .await,
        );
        let listed = creds
            .list_grants(pb::ListGrantsRequest {
                user_id: "alice".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            listed.grants.is_empty(),
            "another agent's grant is not listed"
        );
    }
    // Prefix patterns, and user-wide grants for everyone.
    pending(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", "research-7"))
            .await,
    );
    pending(
        f.authenticate(PLAIN_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    // The grant survived every attempt and agent-a still sees and uses it.
    let again = token(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", "planner"))
            .await,
    );
    assert_eq!(again.access_token, mine.access_token);
    let seen = f.grants("alice").await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].agent_id, "planner");
    // Admins may act for any agent.
    let admin = f
        .valet
        .credentials(ADMIN_KEY)
        .await
        .authenticate(Fixture::request("idp", "alice", "planner"))
        .await;
    assert!(admin.is_ok(), "{admin:?}");
}

#[tokio::test]
async fn a_consent_by_another_account_replaces_the_grant_only_where_allowed() {
    let f = fixture().await;
    f.oidc_provider("idp", "basic-client").await;
    let alice = f
        .authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    // Another caller forces a new consent for alice, and mallory gives it in her own browser.
    let p = pending(
        f.authenticate(
            OTHER_AGENT_KEY,
            pb::AuthenticateRequest {
                force_reauth: true,
                ..Fixture::request("idp", "alice", "")
            },
        )
        .await,
    );
    let mallory = Browser::new();
    let cb = mallory.authorize(&p.auth_url, "mallory", true).await;
    let (status, _, page) = mallory.visit(&cb).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("another account"), "{page}");
    let s = expect_err(
        f.valet
            .credentials(OTHER_AGENT_KEY)
            .await
            .wait_for_completion(pb::WaitForCompletionRequest {
                auth_id: p.auth_id,
                timeout_seconds: 5,
                status_only: false,
            })
            .await,
        Code::FailedPrecondition,
        "ACCOUNT_MISMATCH",
    );
    assert!(s.message().contains("revoke the grant first"), "{s:?}");
    // alice's grant is untouched: same subject, same token.
    let after = token(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    assert_eq!(after.access_token, alice.access_token);
    let info = f.idp.introspect("basic-client", &after.access_token).await;
    assert_eq!(info["sub"], "alice", "{info}");
    assert_eq!(f.grants("alice").await[0].subject, "alice");

    // A provider that allows it lets the new account replace the grant, and the trail says so.
    f.create(pb::Provider {
        provider_id: "idp2".into(),
        kind: pb::ProviderKind::Oidc as i32,
        client_id: "basic-client".into(),
        client_secret: crate::support::idp::secret_of("basic-client"),
        issuer: f.idp.issuer.clone(),
        default_scopes: vec!["openid".into()],
        allow_account_change: true,
        ..Default::default()
    })
    .await;
    f.authorize(AGENT_KEY, Fixture::request("idp2", "alice", ""))
        .await;
    let p = pending(
        f.authenticate(
            AGENT_KEY,
            pb::AuthenticateRequest {
                force_reauth: true,
                ..Fixture::request("idp2", "alice", "")
            },
        )
        .await,
    );
    let other = Browser::new();
    other.consent(&p.auth_url, "mallory").await;
    token(f.wait(&p.auth_id).await.unwrap().into_inner());
    let replaced = f.grants("alice").await;
    let idp2 = replaced.iter().find(|g| g.provider_id == "idp2").unwrap();
    assert_eq!(idp2.subject, "mallory");
    // The trail's writer thread logs it a moment later.
    let mut audited = false;
    for _ in 0..100 {
        audited = f.valet.logs().contains("AccountReplaced");
        if audited {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(audited, "the replacement is in the audit trail");
}

#[tokio::test]
async fn a_second_daemon_on_the_same_data_directory_is_refused() {
    let f = fixture().await;
    f.oidc_provider("idp", "basic-client").await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_valet"))
        .arg("serve")
        .arg("--config")
        .arg(f.valet.dir.path().join("valet.toml"))
        .env_remove("VALET_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Not a bad configuration (78): started again once the other process is gone, it runs.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("in use by another valet process"),
        "{stderr}"
    );
    // The first daemon is unaffected.
    let listed = f
        .valet
        .providers()
        .await
        .list_providers(pb::ListProvidersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.providers.len(), 1);
}

#[tokio::test]
async fn a_configured_caller_cannot_take_a_built_in_identity_or_an_unusable_agent_list() {
    let dir = tempfile::tempdir().unwrap();
    let hash = "ab".repeat(32);
    for (toml, want) in [
        (
            format!("[[callers]]\nname = \"admin\"\nrole = \"agent\"\nkey_sha256 = \"{hash}\"\n"),
            "reserved for the admin key",
        ),
        (
            format!(
                "[[callers]]\nname = \"bot\"\nrole = \"agent\"\nkey_sha256 = \"{hash}\"\nagents = [\"sup*port\"]\n"
            ),
            "callers[0].agents",
        ),
    ] {
        let path = dir.path().join("valet.toml");
        std::fs::write(&path, toml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_valet"))
            .arg("check-config")
            .arg("--config")
            .arg(&path)
            .env_remove("VALET_CONFIG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(want), "{want}: {stderr}");
    }
}

#[tokio::test]
async fn a_tampered_record_is_skipped_in_listings_and_named_to_nobody() {
    let f = fixture().await;
    f.oidc_provider("idp", "basic-client").await;
    f.authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    let Fixture {
        mut valet,
        idp,
        browser,
    } = f;
    valet.stop();
    tamper_record(&valet.dir.path().join("data/store.redb"), "grants/");
    let f = Fixture {
        valet: valet.start_again(),
        idp,
        browser,
    };
    f.authorize(AGENT_KEY, Fixture::request("idp", "bob", ""))
        .await;
    // bob's grant is listed; alice's unreadable one is skipped, not fatal to the listing.
    let all = f.grants_for_admin().await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].user_id, "bob");
    // Using it is an internal error that names no store key.
    let s = expect_err(
        f.try_authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
        Code::Internal,
        "INTERNAL",
    );
    assert!(!s.message().contains("grants/"), "{s:?}");
    assert!(!s.message().contains("store.redb"), "{s:?}");
}

/// Flips one byte of the sealed value of the first record whose key starts with `prefix`, as an
/// attacker with write access to the data directory could (`store.redb`, table
/// `records-by-bytes`: key bytes → (version, nonce ‖ ciphertext ‖ tag)).
fn tamper_record(store: &std::path::Path, prefix: &str) {
    use redb::ReadableTable as _;
    const RECORDS: redb::TableDefinition<&[u8], (u64, &[u8])> =
        redb::TableDefinition::new("records-by-bytes");
    let db = redb::Database::open(store).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(RECORDS).unwrap();
        let (key, version, mut sealed) = {
            let mut range = table.range(prefix.as_bytes()..).unwrap();
            let (k, v) = range.next().expect("a record").unwrap();
            let (version, sealed) = v.value();
            (k.value().to_vec(), version, sealed.to_vec())
        };
        assert!(key.starts_with(prefix.as_bytes()), "{key:?}");
        let i = sealed.len() / 2;
        sealed[i] ^= 1;
        table
            .insert(key.as_slice(), (version, sealed.as_slice()))
            .unwrap();
    }
    txn.commit().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_half_sent_requests_neither_exhaust_the_daemon_nor_hold_it() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let f = fixture().await;
    let addr = f.valet.http_addr;
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Headers that never end.
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: valet\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // The daemon holds at most its connection cap, far below the descriptor limit.
    let fds = f.valet.open_fds();
    assert!(fds < 256 + 64, "{fds} open descriptors");
    // gRPC, on its own listener, answers at once.
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(f.valet.raw_channel().await);
    let r = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, 1, "SERVING");
    // The stalled connections are cut after the idle timeout, and /healthz answers again.
    let r = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), slow[0].read(&mut buf))
        .await
        .expect("the server closed the stalled connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn the_audit_trail_records_who_did_what_and_detects_edits() {
    let logs = tempfile::tempdir().unwrap();
    let trail = logs.path().join("audit.jsonl");
    let f = Fixture::with(ValetOptions {
        extra_toml: format!("[audit]\nfile = \"{}\"\n", trail.display()),
        ..Default::default()
    })
    .await;
    f.oidc_provider("idp", "basic-client").await;
    let t = f
        .authorize(AGENT_KEY, Fixture::request("idp", "alice", "planner"))
        .await;
    denied(
        f.valet
            .credentials(OTHER_AGENT_KEY)
            .await
            .authenticate(Fixture::request("idp", "alice", "planner"))
            .await,
    );
    // A refresh (asked for more life than the token has) is recorded as the daemon's own act.
    f.authenticate(
        AGENT_KEY,
        pb::AuthenticateRequest {
            min_ttl_seconds: 7200,
            ..Fixture::request("idp", "alice", "planner")
        },
    )
    .await;
    // A reference resolved: the request names only the reference, the trail whose grant it was.
    let reference = crate::support::reference(
        f.authenticate(
            AGENT_KEY,
            pb::AuthenticateRequest {
                handout: pb::Handout::Reference as i32,
                ..Fixture::request("idp", "alice", "planner")
            },
        )
        .await,
    );
    f.valet
        .credentials(AGENT_KEY)
        .await
        .resolve(pb::ResolveRequest {
            reference: reference.reference.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Its reference, resolved while the provider is down (a refresh is needed), fails: recorded
    // against its grant; a forged one names nothing.
    f.idp.fail_token(503).await;
    for forged in [false, true] {
        let r = f
            .valet
            .credentials(AGENT_KEY)
            .await
            .resolve(pb::ResolveRequest {
                reference: if forged {
                    // A real one with one byte changed: well-formed, but never issued.
                    use base64::Engine as _;
                    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                    let mut raw = b64.decode(&reference.reference["vref_".len()..]).unwrap();
                    raw[10] ^= 0x01;
                    format!("vref_{}", b64.encode(&raw))
                } else {
                    reference.reference.clone()
                },
                min_ttl_seconds: 7200,
                ..Default::default()
            })
            .await;
        let e = r.unwrap_err();
        let expected = if forged {
            Code::InvalidArgument
        } else {
            Code::Unavailable
        };
        assert_eq!(e.code(), expected, "{forged}: {e:?}");
        assert!(!e.message().contains("vref_"), "{e:?}");
    }
    f.idp.fail_token(0).await;
    f.valet
        .credentials(AGENT_KEY)
        .await
        .revoke(pb::RevokeRequest {
            provider_id: "idp".into(),
            user_id: "alice".into(),
            agent_id: "planner".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // A call without a key is refused, and recorded too.
    let nokey = f
        .valet
        .raw_credentials()
        .await
        .list_grants(pb::ListGrantsRequest::default())
        .await;
    assert_eq!(nokey.unwrap_err().code(), Code::Unauthenticated);
    // The trail is written by its own thread: wait for the last event to land.
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&trail).unwrap_or_default();
        if text.contains("\"Refused\"") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |event: &str, caller: &str, outcome: &str| {
        events
            .iter()
            .find(|e| e["event"] == event && e["caller"] == caller && e["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {event}/{caller}/{outcome} in {text}"))
    };
    find("CreateProvider", "ops", "ok");
    let started = find("Authenticate", "agent-a", "flow_started");
    assert_eq!(started["provider"], "idp");
    assert_eq!(started["agent"], "planner");
    find("FlowCompleted", "agent-a", "ok");
    let refused = find("Authenticate", "agent-b", "PERMISSION_DENIED");
    find("Revoke", "agent-a", "revoked");
    find("Refused", "-", "UNAUTHENTICATED");
    let refreshed = find("GrantRefreshed", "valet", "ok");
    assert_eq!(refreshed["agent"], "planner");
    let resolved = find("Resolve", "agent-a", "ok");
    assert_eq!(
        (&resolved["provider"], &resolved["agent"], &resolved["user"]),
        (&started["provider"], &started["agent"], &started["user"])
    );
    let late: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "Resolve" && e["outcome"] != "ok")
        .collect();
    assert_eq!(late.len(), 2, "{text}");
    assert_eq!(
        (&late[0]["provider"], &late[0]["user"]),
        (&started["provider"], &started["user"])
    );
    assert!(late[1].get("provider").is_none_or(|p| p == ""), "{text}");
    assert!(!text.contains(&reference.reference["vref_".len()..]));
    // The user is the same keyed hash in every event, never the id.
    assert_eq!(started["user"], refused["user"]);
    assert!(
        !text.contains("alice") && !text.contains(&t.access_token),
        "{text}"
    );

    let verify = |path: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_valet"))
            .args(["audit", "verify"])
            .arg(path)
            .output()
            .unwrap()
    };
    let ok = verify(&trail);
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("chain intact"));
    // Someone removes the refused call from a copy of the trail: detected.
    let copy = logs.path().join("edited.jsonl");
    let edited: String = text
        .lines()
        .filter(|l| !l.contains("PERMISSION_DENIED"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&copy, edited).unwrap();
    let bad = verify(&copy);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("removed, reordered or inserted"),
        "{bad:?}"
    );

    // Log rotation: the file is moved away and the daemon gets SIGHUP; it lives on, writes a
    // new file, and the two verify as one trail (oldest first).
    let rotated = logs.path().join("audit.jsonl.1");
    std::fs::rename(&trail, &rotated).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &f.valet.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    for _ in 0..100 {
        if f.valet.logs().contains("audit file reopened") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    f.grants("alice").await;
    for _ in 0..100 {
        if std::fs::read_to_string(&trail).is_ok_and(|t| t.contains("\"ListGrants\"")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let both = std::process::Command::new(env!("CARGO_BIN_EXE_valet"))
        .args(["audit", "verify"])
        .args([&rotated, &trail])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&both.stdout);
    assert!(
        both.status.success() && out.contains("chain intact; last hash"),
        "{both:?}"
    );
    let alone = verify(&trail);
    assert!(
        String::from_utf8_lossy(&alone.stderr).contains("give the earlier files first"),
        "{alone:?}"
    );
}

fn bound_provider(f: &Fixture, return_url: &str) -> pb::Provider {
    pb::Provider {
        provider_id: "idp".into(),
        kind: pb::ProviderKind::Oidc as i32,
        client_id: "basic-client".into(),
        client_secret: crate::support::idp::secret_of("basic-client"),
        issuer: f.idp.issuer.clone(),
        default_scopes: vec!["openid".into()],
        consent_return_url: return_url.into(),
        ..Default::default()
    }
}

/// Consents as `login` and returns the session the callback hands to the operator's app.
async fn bound_consent(f: &Fixture, p: &pb::Pending, login: &str, return_url: &str) -> String {
    let mut cb = f.browser.authorize(&p.auth_url, login, true).await;
    // Open-redirect payloads riding along on the callback change nothing: the only place Valet
    // redirects to is the configured URL.
    for (k, v) in [
        ("next", "//evil.example"),
        ("return_url", "/\\evil.example"),
        ("redirect_uri", "https://evil.example\t"),
        ("continue", "https://app.example.evil.example/"),
    ] {
        cb.query_pairs_mut().append_pair(k, v);
    }
    let (status, headers, _) = f.browser.visit(&cb).await;
    assert_eq!(status, 303);
    let to = headers["location"].to_str().unwrap();
    assert!(to.starts_with(&format!("{return_url}&session=")), "{to}");
    url::Url::parse(to)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "session")
        .unwrap()
        .1
        .into_owned()
}

#[tokio::test]
async fn a_bound_consent_is_stored_only_for_the_user_the_operators_app_vouches_for() {
    let f = fixture().await;
    let return_url = "http://127.0.0.1:9/app/return?tenant=acme";
    f.create(bound_provider(&f, return_url)).await;
    let mut app = f.valet.credentials(OTHER_AGENT_KEY).await;
    let complete = |session: &str, user: &str| pb::CompleteAuthorizationRequest {
        session: session.into(),
        user_id: user.into(),
    };

    // mallory's app session vouches for bob, but the flow was alice's: nothing is stored.
    let p = pending(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    let session = bound_consent(&f, &p, "alice", return_url).await;
    assert!(
        f.grants("alice").await.is_empty(),
        "not stored before the app vouches"
    );
    let s = expect_err(
        app.complete_authorization(complete(&session, "bob")).await,
        Code::FailedPrecondition,
        "USER_MISMATCH",
    );
    assert!(s.message().contains("another user"), "{s:?}");
    expect_err(
        app.complete_authorization(complete(&session, "alice"))
            .await,
        Code::NotFound,
        "NOT_FOUND",
    );
    let s = expect_err(
        f.wait(&p.auth_id).await,
        Code::FailedPrecondition,
        "USER_MISMATCH",
    );
    assert!(s.message().contains("nothing was stored"), "{s:?}");
    assert!(f.grants("alice").await.is_empty());

    // The right user: stored, and the agent's wait completes with the token.
    let p = pending(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    let session = bound_consent(&f, &p, "alice", return_url).await;
    let done = app
        .complete_authorization(complete(&session, "alice"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.provider_id, "idp");
    let t = token(f.wait(&p.auth_id).await.unwrap().into_inner());
    assert_eq!(f.grants("alice").await.len(), 1);
    assert!(!f.valet.logs().contains(&session) && !f.valet.logs().contains(&t.access_token));

    // Return URLs come from config only and must be plain https (or loopback) URLs.
    let mut providers = f.valet.providers_as(ADMIN_KEY).await;
    for bad in [
        "javascript:alert(1)",
        "https://app.example/return#frag",
        "https://user:pw@app.example/",
        "http://app.example/return",
    ] {
        let p = pb::Provider {
            provider_id: "idp2".into(),
            ..bound_provider(&f, bad)
        };
        let s = expect_err(
            providers
                .create_provider(pb::CreateProviderRequest { provider: Some(p) })
                .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert!(s.message().contains("consent_return_url"), "{bad}: {s:?}");
    }
}

#[tokio::test]
async fn a_caller_beyond_its_rate_limit_is_refused_and_others_are_not() {
    const LIMITED_KEY: &str = "test-limited-agent-key-canary-6";
    let f = Fixture::with(ValetOptions {
        extra_toml: agent_caller("limited", LIMITED_KEY, "rate_limit = 3\n"),
        ..Default::default()
    })
    .await;
    let list = || pb::ListGrantsRequest {
        user_id: "alice".into(),
        ..Default::default()
    };
    let mut limited = f.valet.credentials(LIMITED_KEY).await;
    let mut outcomes = Vec::new();
    for _ in 0..12 {
        outcomes.push(limited.list_grants(list()).await);
    }
    let ok = outcomes.iter().filter(|r| r.is_ok()).count();
    assert!((6..=7).contains(&ok), "a burst of twice the rate: {ok}");
    let refused = outcomes.into_iter().find(|r| r.is_err()).unwrap();
    let s = expect_err(refused, Code::ResourceExhausted, "RESOURCE_EXHAUSTED");
    assert!(s.message().contains("rate limit"), "{s:?}");
    // When to come back: once the bucket holds a request again (1/rate seconds).
    let retry = tonic_types::StatusExt::get_details_retry_info(&s).expect("retry info");
    assert!(
        retry
            .retry_delay
            .is_some_and(|d| d > std::time::Duration::ZERO),
        "{retry:?}"
    );
    // Counted apart from the calls methods refuse with RESOURCE_EXHAUSTED (see the alert).
    let counted = f
        .valet
        .sample("valet_denied_calls_total{reason=\"RATE_LIMITED\"}")
        .await;
    assert_eq!(counted, Some((12 - ok) as f64));
    // Other callers are unaffected, and the limited one recovers.
    let mut other = f.valet.credentials(AGENT_KEY).await;
    assert!(other.list_grants(list()).await.is_ok());
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert!(limited.list_grants(list()).await.is_ok());
}

#[tokio::test]
async fn a_sidecar_on_the_unix_socket_is_its_uid_s_caller_and_no_one_else() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let dir = tempfile::tempdir().unwrap();
    let uid = std::fs::metadata(dir.path()).unwrap().uid();
    let start = |uid: u32| {
        let socket = dir.path().join(format!("valet-{uid}.sock"));
        let hash = "cd".repeat(32);
        let opts = ValetOptions {
            top_toml: format!("grpc_socket = \"{}\"", socket.display()),
            extra_toml: format!(
                "[[callers]]\nname = \"sidecar\"\nrole = \"agent\"\nkey_sha256 = \"{hash}\"\nunix_uid = {uid}\n"
            ),
            ..Default::default()
        };
        (socket, opts)
    };
    let list = || pb::ListGrantsRequest {
        user_id: "alice".into(),
        ..Default::default()
    };
    let (socket, opts) = start(uid);
    let f = Fixture::with(opts).await;
    f.oidc_provider("idp", "basic-client").await;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let mut sidecar =
        pb::credentials_client::CredentialsClient::new(unix_channel(socket.clone()).await);
    let listed = sidecar.list_grants(list()).await;
    assert!(
        listed.is_ok(),
        "no key needed for the configured uid: {listed:?}"
    );
    // The sidecar caller has no agents: another agent's grant stays out of reach.
    let s = sidecar
        .authenticate(Fixture::request("idp", "alice", "planner"))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    drop(f);

    // A socket whose configured uid is not ours: no caller without a key.
    let (socket, opts) = start(uid + 1);
    let _f = Fixture::with(opts).await;
    let mut stranger = pb::credentials_client::CredentialsClient::new(unix_channel(socket).await);
    let s = stranger.list_grants(list()).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    assert!(s.message().contains("unix_uid"), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_concurrent_waits_leave_health_answering() {
    let f = fixture().await;
    f.oidc_provider("idp", "basic-client").await;
    let p = pending(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(f.valet.credentials(AGENT_KEY).await);
    }
    let waits: Vec<_> = (0..2000)
        .map(|i| {
            let mut c = clients[i % clients.len()].clone();
            let auth_id = p.auth_id.clone();
            tokio::spawn(async move {
                c.wait_for_completion(pb::WaitForCompletionRequest {
                    auth_id,
                    timeout_seconds: 4,
                    status_only: false,
                })
                .await
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // While every wait is parked, health answers on both listeners.
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(f.valet.raw_channel().await);
    let r = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, 1, "SERVING");
    let http = reqwest::get(format!("http://{}/healthz", f.valet.http_addr))
        .await
        .unwrap();
    assert!(http.status().is_success());
    assert!(
        waits.iter().all(|w| !w.is_finished()),
        "health answered while all 2,000 waits were still parked"
    );
    let mut answered = 0;
    for w in waits {
        let r = w.await.unwrap().unwrap().into_inner();
        pending(r);
        answered += 1;
    }
    assert_eq!(answered, 2000, "every wait answered pending at its timeout");
}

/// A TLS channel to the daemon trusting the test CA, with `client` (cert, key) if given.
async fn tls_channel(
    f: &Fixture,
    client: Option<(&str, &str)>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let fixture = |name: &str| {
        std::fs::read(format!(
            "{}/tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(fixture("tls-ca.pem")))
        .domain_name("localhost");
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(fixture(cert), fixture(key)));
    }
    let url = f.valet.grpc_url.replace("http://", "https://");
    Endpoint::from_shared(url)
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

#[tokio::test]
async fn a_client_certificate_from_the_configured_ca_is_its_san_s_caller() {
    let dir = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let hash = "ef".repeat(32);
    let f = Fixture::with(ValetOptions {
        extra_toml: format!(
            "[[callers]]\nname = \"meshed\"\nrole = \"agent\"\nkey_sha256 = \"{hash}\"\ntls_identity = \"spiffe://valet.test/sidecar\"\n\n[grpc_tls]\ncert_file = \"{dir}/tls-server.pem\"\nkey_file = \"{dir}/tls-server.key\"\nclient_ca_file = \"{dir}/tls-ca.pem\"\n"
        ),
        ..Default::default()
    })
    .await;
    let list = || pb::ListGrantsRequest {
        user_id: "alice".into(),
        ..Default::default()
    };
    // The sidecar's certificate (SAN spiffe://valet.test/sidecar) is the `meshed` caller.
    let channel = tls_channel(
        &f,
        Some(("tls-client-sidecar.pem", "tls-client-sidecar.key")),
    )
    .await
    .unwrap();
    let mut meshed = pb::credentials_client::CredentialsClient::new(channel);
    let listed = meshed.list_grants(list()).await;
    assert!(listed.is_ok(), "{listed:?}");
    // Bound like any caller: no agents listed, so another agent's grant is out of reach.
    let s = meshed
        .revoke(pb::RevokeRequest {
            provider_id: "idp".into(),
            user_id: "alice".into(),
            agent_id: "planner".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");

    // The same SAN from another CA never gets past the handshake.
    let foreign = match tls_channel(
        &f,
        Some(("tls-client-foreign.pem", "tls-client-foreign.key")),
    )
    .await
    {
        Err(_) => true,
        Ok(ch) => pb::credentials_client::CredentialsClient::new(ch)
            .list_grants(list())
            .await
            .is_err(),
    };
    assert!(foreign, "a certificate from another CA is refused");

    // Without a certificate: an API key still works over TLS; nothing at all is refused.
    let plain = tls_channel(&f, None).await.unwrap();
    let mut anonymous = pb::credentials_client::CredentialsClient::new(plain.clone());
    let s = anonymous.list_grants(list()).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    let mut req = tonic::Request::new(list());
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {AGENT_KEY}").parse().unwrap(),
    );
    assert!(anonymous.list_grants(req).await.is_ok());

    // The CLI speaks mTLS too: a sidecar's certificate, no key.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_valet"))
        .args(["grants", "--user", "alice", "--server"])
        .arg(f.valet.grpc_url.replace("http://", "https://"))
        .args(["--tls-ca", &format!("{dir}/tls-ca.pem")])
        .args(["--tls-cert", &format!("{dir}/tls-client-sidecar.pem")])
        .args(["--tls-key", &format!("{dir}/tls-client-sidecar.key")])
        .env_remove("VALET_KEY")
        .env_remove("VALET_SERVER")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without --tls-ca it trusts only the system's roots: the test CA is not one of them.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_valet"))
        .args(["grants", "--user", "alice", "--server"])
        .arg(f.valet.grpc_url.replace("http://", "https://"))
        .env("VALET_KEY", AGENT_KEY)
        .env_remove("VALET_SERVER")
        .env_remove("VALET_TLS_CA")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an untrusted certificate: {err}");
    assert!(err.contains("over TLS"), "{err}");
}

/// Starts a refresh for alice that the provider holds for `delay_ms`, and returns once the
/// request has reached the token endpoint.
async fn refresh_in_flight(
    f: &Fixture,
    delay_ms: u64,
) -> tokio::task::JoinHandle<Result<tonic::Response<pb::AuthenticateResponse>, tonic::Status>> {
    f.oidc_provider("idp", "basic-client").await;
    f.authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    let before = f.idp.token_requests().await;
    f.idp.delay_token(delay_ms).await;
    let mut creds = f.valet.credentials(AGENT_KEY).await;
    let call = tokio::spawn(async move {
        creds
            .authenticate(Fixture::refresh_request("idp", "alice", ""))
            .await
    });
    while f.idp.token_requests().await == before {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    call
}

/// Starts the stopped daemon again, with the provider answering at once.
async fn started_again(valet: Valet, idp: Idp, browser: Browser) -> Fixture {
    idp.delay_token(0).await;
    Fixture {
        valet: valet.start_again(),
        idp,
        browser,
    }
}

/// Starts the stopped daemon again and checks the grant refreshes with the refresh token the
/// store holds: a live token, `refreshes` successful refreshes in all, none presented twice.
async fn refreshes_after_restart(valet: Valet, idp: Idp, browser: Browser, refreshes: u64) {
    let f = started_again(valet, idp, browser).await;
    let t = token(
        f.authenticate(AGENT_KEY, Fixture::refresh_request("idp", "alice", ""))
            .await,
    );
    assert!(f.idp.userinfo(&t.access_token).await.status().is_success());
    let stats = f.idp.stats().await;
    assert_eq!(stats["grants"]["refresh_token"], refreshes, "{stats}");
    f.idp.assert_no_refresh_token_reuse().await;
}

/// Sends the daemon SIGTERM (off the runtime: its drain takes a moment) and waits for a clean
/// exit; the peers stay up.
async fn sigterm(f: Fixture) -> (Valet, Idp, Browser) {
    let Fixture {
        mut valet,
        idp,
        browser,
    } = f;
    let valet = tokio::task::spawn_blocking(move || {
        assert!(valet.stop().success());
        valet
    })
    .await
    .unwrap();
    (valet, idp, browser)
}

/// SIGTERM while a refresh is in flight: the daemon finishes it, stores the rotated refresh
/// token, answers the caller, then exits; after a restart the grant refreshes with the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_refresh_stores_the_rotated_token_before_exiting() {
    let f = Fixture::new().await;
    let call = refresh_in_flight(&f, 800).await;
    let (valet, idp, browser) = sigterm(f).await;
    let t = token(
        call.await
            .unwrap()
            .expect("the in-flight refresh answered")
            .into_inner(),
    );
    assert!(idp.userinfo(&t.access_token).await.status().is_success());
    refreshes_after_restart(valet, idp, browser, 2).await;
}

/// SIGTERM after a consent's browser left while its code was being exchanged: the daemon
/// finishes the exchange and stores the grant before it exits (the code is spent: cut off, the
/// user would have to consent again); after a restart the grant hands out a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_after_the_browser_left_mid_exchange_still_stores_the_grant() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let p = pending(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    let callback = f.browser.authorize(&p.auth_url, "alice", true).await;
    f.idp.delay_token(800).await;
    let before = f.idp.token_requests().await;
    let visit = tokio::spawn(async move { Browser::new().visit(&callback).await });
    while f.idp.token_requests().await == before {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The browser leaves: its connection closes while the daemon waits for the provider.
    visit.abort();
    assert!(visit.await.is_err(), "the visit was cut off");
    let (valet, idp, browser) = sigterm(f).await;
    let f = started_again(valet, idp, browser).await;
    let t = token(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    assert!(f.idp.userinfo(&t.access_token).await.status().is_success());
}

/// SIGKILL while a refresh is in flight, before the provider answered: nothing was written
/// half-way, the data directory opens again, the dead process's refresh claim does not block
/// the new one, and the stored grant refreshes with the refresh token it had. (A kill after a
/// rotating provider answered and before the store write loses the rotated token; that grant
/// then asks for consent again, never silently fails: see
/// `a_reused_refresh_token_marks_the_grant_dead_and_starts_a_new_flow` and SECURITY.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_refresh_leaves_the_grant_usable_after_a_restart() {
    let f = Fixture::new().await;
    let call = refresh_in_flight(&f, 1500).await;
    let Fixture {
        mut valet,
        idp,
        browser,
    } = f;
    valet.kill();
    assert!(
        call.await.unwrap().is_err(),
        "the caller saw the daemon die"
    );
    // Past the provider's delay: the abandoned request was dropped, not processed.
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    refreshes_after_restart(valet, idp, browser, 1).await;
}
