//! Real providers' deviations, end to end through the daemon, against loopback doubles that
//! answer as each provider documents (`support::providers`): a profile names the dialect, the
//! flow completes, the token works at the provider's API with `Authorization: Bearer`, it
//! survives a restart, refreshes where the provider refreshes, and errors are clear.

use crate::support::daemon::AGENT_KEY;
use crate::support::providers::{CLIENT_SECRET, Family, INTUIT_REALM, ProviderDouble, client_id};
use crate::support::{Fixture, expect_err, pending, token};
use reqwest::StatusCode;
use tonic::Code;
use valet::pb;

/// Far above any lifetime the doubles give: forces a refresh.
const FORCE_REFRESH: u32 = 86_400;

async fn provider_for(f: &Fixture, id: &str, profile: &str, d: &ProviderDouble, secret: &str) {
    f.create(pb::Provider {
        provider_id: id.into(),
        profile: profile.into(),
        client_id: client_id().into(),
        client_secret: secret.into(),
        // The profile's real endpoints, pointed at the double.
        auth_url: d.auth_url(),
        token_url: d.token_url(),
        ..Default::default()
    })
    .await;
}

/// Follows the provider's redirect to the daemon's callback; returns the page.
async fn consent(auth_url: &str) -> (StatusCode, String) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http.get(auth_url).send().await.unwrap();
    assert!(resp.status().is_redirection(), "{:?}", resp.status());
    let callback = resp.headers()["location"].to_str().unwrap().to_owned();
    let page = http.get(callback).send().await.unwrap();
    (page.status(), page.text().await.unwrap())
}

fn request(provider: &str, scopes: &[&str]) -> pb::AuthenticateRequest {
    pb::AuthenticateRequest {
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..Fixture::request(provider, "alice", "")
    }
}

/// Authenticate → consent at the double → WaitForCompletion.
async fn flow(f: &Fixture, req: pb::AuthenticateRequest) -> pb::Token {
    let p = pending(f.authenticate(AGENT_KEY, req).await);
    let (status, page) = consent(&p.auth_url).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    token(f.wait(&p.auth_id).await.unwrap().into_inner())
}

async fn resolve_header(f: &Fixture, provider: &str, scopes: &[&str]) -> String {
    let c = f
        .resolved_credential(AGENT_KEY, request(provider, scopes))
        .await;
    assert_eq!(
        (c.location.as_str(), c.name.as_str()),
        ("header", "Authorization")
    );
    c.value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_oauth_app_comma_scopes_and_a_token_that_never_expires_survive_a_restart() {
    let d = ProviderDouble::start(Family::GitHubOAuthApp).await;
    let f = Fixture::new().await;
    provider_for(&f, "github", "github", &d, CLIENT_SECRET).await;
    let t = flow(&f, request("github", &["repo", "gist"])).await;
    assert_eq!(
        t.scopes,
        ["gist", "repo"],
        "the comma-separated grant was understood"
    );
    assert!(t.missing_scopes.is_empty());
    assert_eq!(t.expires_at, 0, "no invented lifetime");
    // The same request is served, without a new consent, even with a long min_ttl.
    let again = token(
        f.authenticate(
            AGENT_KEY,
            pb::AuthenticateRequest {
                min_ttl_seconds: FORCE_REFRESH,
                ..request("github", &["repo", "gist"])
            },
        )
        .await,
    );
    assert_eq!(again.access_token, t.access_token);
    let f = f.restart();
    let after = token(
        f.authenticate(AGENT_KEY, request("github", &["repo"]))
            .await,
    );
    assert_eq!(
        after.access_token, t.access_token,
        "kept with the grant across a restart"
    );
    assert!(
        d.api_accepts(&resolve_header(&f, "github", &["repo"]).await)
            .await
    );
    let g = &f.grants("alice").await[0];
    assert_eq!(g.status, pb::GrantStatus::Active as i32);
    assert!(!g.has_refresh_token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_app_rotates_refresh_tokens_and_a_revoked_app_needs_consent() {
    let d = ProviderDouble::start(Family::GitHubApp).await;
    let f = Fixture::new().await;
    provider_for(&f, "gh-app", "github-app", &d, CLIENT_SECRET).await;
    let t = flow(&f, request("gh-app", &[])).await;
    assert!(t.expires_at > 0);
    let f = f.restart();
    let force = pb::AuthenticateRequest {
        min_ttl_seconds: FORCE_REFRESH - 1,
        ..request("gh-app", &[])
    };
    let refreshed = token(f.authenticate(AGENT_KEY, force.clone()).await);
    assert_ne!(refreshed.access_token, t.access_token);
    token(f.authenticate(AGENT_KEY, force.clone()).await);
    assert_eq!(d.refreshes(), 2);
    assert_eq!(
        d.refresh_reuse(),
        0,
        "every rotated refresh token was stored and used once"
    );
    // `bad_refresh_token` (HTTP 200) marks the grant dead: the next request starts a consent.
    d.revoke_refresh_tokens();
    pending(f.authenticate(AGENT_KEY, force).await);
    assert_eq!(
        f.grants("alice").await[0].status,
        pb::GrantStatus::NeedsReauth as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_user_tokens_nested_under_authed_user_and_refreshed_flat_keep_scopes_and_metadata() {
    let d = ProviderDouble::start(Family::Slack).await;
    let f = Fixture::new().await;
    provider_for(&f, "slack", "slack", &d, CLIENT_SECRET).await;
    let t = flow(&f, request("slack", &["chat:write", "channels:history"])).await;
    assert_eq!(t.token_type, "user");
    assert_eq!(t.scopes, ["channels:history", "chat:write"]);
    assert_eq!(t.metadata.get("team.id").map(String::as_str), Some("T0001"));
    assert_eq!(
        t.metadata.get("authed_user.id").map(String::as_str),
        Some("U0001")
    );
    assert!(
        t.metadata.values().all(|v| !v.contains("canary")),
        "never a token"
    );
    let header = resolve_header(&f, "slack", &["chat:write"]).await;
    assert!(header.starts_with("Bearer "), "{header}");
    assert!(d.api_accepts(&header).await);
    let refresh = || async {
        let forced = pb::AuthenticateRequest {
            min_ttl_seconds: FORCE_REFRESH - 1,
            ..request("slack", &["chat:write"])
        };
        token(f.authenticate(AGENT_KEY, forced).await)
    };
    let refreshed = refresh().await;
    assert_ne!(refreshed.access_token, t.access_token);
    // A refresh answers the user token at the top, not under `authed_user`: the user's token,
    // its scopes and the user's id (kept from the consent) as before.
    assert_eq!(refreshed.token_type, "user");
    assert!(
        refreshed.scopes.iter().any(|s| s == "chat:write"),
        "{:?}",
        refreshed.scopes
    );
    for m in [&refreshed.metadata, &f.grants("alice").await[0].metadata] {
        assert_eq!(m.get("team.id").map(String::as_str), Some("T0001"));
        assert_eq!(m.get("authed_user.id").map(String::as_str), Some("U0001"));
    }
    assert!(
        d.api_accepts(&format!("Bearer {}", refreshed.access_token))
            .await
    );
    // And again, with the rotated refresh token.
    let again = refresh().await;
    assert_ne!(again.access_token, refreshed.access_token);
    assert_eq!((d.refreshes(), d.refresh_reuse()), (2, 0));
    let g = &f.grants("alice").await[0];
    assert_eq!(g.scopes, ["channels:history", "chat:write"]);
    let logs = f.valet.logs();
    for secret in [
        t.access_token.as_str(),
        &refreshed.access_token,
        CLIENT_SECRET,
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}

/// QuickBooks: the company the user connected (`realmId`) comes only on the callback; the
/// quickbooks profile keeps it with the grant, so the agent can build its API URLs, through a
/// restart and refreshes (rotated refresh tokens, each used once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickbooks_realm_id_from_the_callback_reaches_the_agent_and_outlives_refreshes() {
    let d = ProviderDouble::start(Family::Intuit).await;
    let f = Fixture::new().await;
    provider_for(&f, "qbo", "quickbooks", &d, CLIENT_SECRET).await;
    let realm = |m: &std::collections::HashMap<String, String>| m.get("realmId").cloned();
    let t = flow(&f, request("qbo", &[])).await;
    assert_eq!(realm(&t.metadata).as_deref(), Some(INTUIT_REALM));
    assert_eq!(t.scopes, ["com.intuit.quickbooks.accounting"]);
    let f = f.restart();
    let force = pb::AuthenticateRequest {
        min_ttl_seconds: FORCE_REFRESH - 1,
        ..request("qbo", &[])
    };
    for _ in 0..2 {
        let r = token(f.authenticate(AGENT_KEY, force.clone()).await);
        assert_eq!(realm(&r.metadata).as_deref(), Some(INTUIT_REALM));
        assert!(d.api_accepts(&format!("Bearer {}", r.access_token)).await);
    }
    assert_eq!((d.refreshes(), d.refresh_reuse()), (2, 0));
    let g = &f.grants("alice").await[0];
    assert_eq!(realm(&g.metadata).as_deref(), Some(INTUIT_REALM));
    // A callback without it: the flow completes, and the operator is told what the grant lacks.
    d.drop_realm();
    let bob = flow(
        &f,
        pb::AuthenticateRequest {
            user_id: "bob".into(),
            ..request("qbo", &[])
        },
    )
    .await;
    assert_eq!(realm(&bob.metadata), None);
    let said = "callback_metadata";
    let logs = f.valet.logs_once_they_contain(said).await;
    assert!(logs.contains(said) && logs.contains("realmId"), "{logs}");
}

/// X answers a refresh token it no longer honours with `invalid_request`, not `invalid_grant`:
/// the x profile reads it as a dead grant (the user consents again) instead of failing every
/// request at X with the spent token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_rotates_refresh_tokens_and_its_invalid_request_for_a_dead_one_asks_for_consent() {
    let d = ProviderDouble::start(Family::X).await;
    let f = Fixture::new().await;
    provider_for(&f, "x", "x", &d, CLIENT_SECRET).await;
    let t = flow(&f, request("x", &[])).await;
    assert_eq!(t.scopes, ["offline.access", "tweet.read", "users.read"]);
    let force = pb::AuthenticateRequest {
        min_ttl_seconds: FORCE_REFRESH - 1,
        ..request("x", &[])
    };
    let refreshed = token(f.authenticate(AGENT_KEY, force.clone()).await);
    assert_ne!(refreshed.access_token, t.access_token);
    assert!(
        d.api_accepts(&format!("Bearer {}", refreshed.access_token))
            .await
    );
    d.revoke_refresh_tokens();
    pending(f.authenticate(AGENT_KEY, force).await);
    assert_eq!((d.refreshes(), d.refresh_reuse()), (2, 0));
    assert_eq!(
        f.grants("alice").await[0].status,
        pb::GrantStatus::NeedsReauth as i32
    );
    // `valet auth` says why it shows a consent link where a token came before.
    let said = cli_prompt(&f, &["auth", "--provider", "x", "--user", "alice"]);
    assert!(said.contains("this grant needs a new consent"), "{said}");
    let fresh = cli_prompt(&f, &["auth", "--provider", "x", "--user", "bob"]);
    assert!(!fresh.contains("needs a new consent"), "{fresh}");
}

/// What a `valet` command waiting for consent printed on stderr up to its link; it is then
/// stopped.
fn cli_prompt(f: &Fixture, args: &[&str]) -> String {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_valet"))
        .env("VALET_SERVER", &f.valet.grpc_url)
        .env("VALET_KEY", AGENT_KEY)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        said.push_str(&line);
        said.push('\n');
        if line.trim().starts_with("http") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    said
}

/// Shopify: the shopify profile asks for an expiring offline token (`expiring=1`), so a refresh
/// token comes and is used; the Admin API takes the token as it is in `X-Shopify-Access-Token`,
/// which the token handout and the resolved credential both say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopify_expiring_offline_tokens_refresh_and_go_in_their_own_header() {
    const HEADER: &str = "X-Shopify-Access-Token";
    let d = ProviderDouble::start(Family::Shopify).await;
    let f = Fixture::new().await;
    f.create(pb::Provider {
        provider_id: "shop".into(),
        profile: "shopify".into(),
        profile_vars: [("shop".to_owned(), "acme".to_owned())].into(),
        client_id: client_id().into(),
        client_secret: CLIENT_SECRET.into(),
        auth_url: d.auth_url(),
        token_url: d.token_url(),
        ..Default::default()
    })
    .await;
    let t = flow(&f, request("shop", &["read_products", "write_orders"])).await;
    assert_eq!(t.header, HEADER);
    assert_eq!(t.token_type, "", "no scheme is written before it");
    assert!(t.expires_at > 0, "an expiring token: expiring=1 was sent");
    assert_eq!(t.scopes, ["read_products", "write_orders"]);
    assert!(d.api_accepts_header(HEADER, &t.access_token).await);
    let resolved = f
        .resolved(AGENT_KEY, request("shop", &["read_products"]))
        .await;
    let c = resolved.credential.unwrap();
    assert_eq!((c.location.as_str(), c.name.as_str()), ("header", HEADER));
    assert!(d.api_accepts_header(HEADER, &c.value).await);
    assert_eq!(
        resolved.token.unwrap().header,
        HEADER,
        "Resolve's token says so too"
    );
    // The CLI says so too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_valet"))
        .env("VALET_SERVER", &f.valet.grpc_url)
        .env("VALET_KEY", AGENT_KEY)
        .args(["auth", "--provider", "shop", "--user", "alice"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains(&format!("header:       {HEADER}  (the token as it is")),
        "{shown}"
    );
    assert!(!shown.contains("token_type"), "{shown}");
    // `provider get` shows the profile with the variables it was given.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_valet"))
        .env("VALET_SERVER", &f.valet.grpc_url)
        .env("VALET_KEY", crate::support::daemon::ADMIN_KEY)
        .args(["provider", "get", "shop"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("profile:           shopify (shop=acme)"),
        "{shown}"
    );
    let force = pb::AuthenticateRequest {
        min_ttl_seconds: FORCE_REFRESH - 1,
        ..request("shop", &["read_products"])
    };
    for _ in 0..2 {
        let r = token(f.authenticate(AGENT_KEY, force.clone()).await);
        assert_eq!(r.header, HEADER);
        assert!(d.api_accepts_header(HEADER, &r.access_token).await);
    }
    assert_eq!((d.refreshes(), d.refresh_reuse()), (2, 0));
    assert!(f.grants("alice").await[0].has_refresh_token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_instance_url_reaches_the_agent_and_refresh_keeps_the_refresh_token() {
    let d = ProviderDouble::start(Family::Salesforce).await;
    let f = Fixture::new().await;
    provider_for(&f, "sf", "salesforce", &d, CLIENT_SECRET).await;
    let t = flow(&f, request("sf", &["api", "refresh_token"])).await;
    assert_eq!(
        t.metadata.get("instance_url").map(String::as_str),
        Some("https://acme.my.salesforce.com")
    );
    let f = f.restart();
    let r1 = token(f.authenticate(AGENT_KEY, request("sf", &["api"])).await);
    assert_eq!(
        r1.metadata.get("instance_url").map(String::as_str),
        Some("https://acme.my.salesforce.com")
    );
    let force = pb::AuthenticateRequest {
        min_ttl_seconds: FORCE_REFRESH,
        ..request("sf", &["api"])
    };
    // No expires_in and no rotated refresh token: the old one keeps working, refresh by refresh.
    let before = d.refreshes();
    token(f.authenticate(AGENT_KEY, force.clone()).await);
    assert!(d.refreshes() > before);
    assert!(f.grants("alice").await[0].has_refresh_token);
}

/// Revoked at Salesforce: the refresh token first, which ends its access tokens, so the access
/// token sent next is `invalid_token` (400): revoked all the same, not a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_revocation_ends_the_access_token_with_the_refresh_token_and_says_revoked() {
    let d = ProviderDouble::start(Family::Salesforce).await;
    let f = Fixture::new().await;
    f.create(pb::Provider {
        provider_id: "sf-revoking".into(),
        profile: "salesforce".into(),
        client_id: client_id().into(),
        client_secret: CLIENT_SECRET.into(),
        auth_url: d.auth_url(),
        token_url: d.token_url(),
        revocation_url: d.revocation_url(),
        ..Default::default()
    })
    .await;
    let live = flow(&f, request("sf-revoking", &["api"])).await;
    assert!(
        d.api_accepts(&format!("Bearer {}", live.access_token))
            .await
    );
    let r = f.revoke_at("sf-revoking", "alice").await;
    assert!(r.revoked);
    assert_eq!(
        r.provider_revocation,
        pb::ProviderRevocation::Revoked as i32,
        "{r:?}"
    );
    assert!(!d.has_live_refresh_token());
    assert!(
        !d.api_accepts(&format!("Bearer {}", live.access_token))
            .await
    );
}

/// A refresh that leaves out the OpenID scopes (as Entra's may) does not count as the user
/// taking them back: the grant keeps serving without a new consent, also from a restarted
/// daemon (no cached token). (A provider without the microsoft profile does not know that
/// Entra never lists `offline_access`: shown missing; the profile's `unlisted_scopes` does.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_without_the_openid_scopes_keeps_the_grant_and_asks_no_new_consent() {
    let d = ProviderDouble::start(Family::Entra).await;
    let f = Fixture::new().await;
    f.create(pb::Provider {
        provider_id: "entra".into(),
        kind: pb::ProviderKind::Oauth2 as i32,
        client_id: client_id().into(),
        client_secret: CLIENT_SECRET.into(),
        auth_url: d.auth_url(),
        token_url: d.token_url(),
        token_auth_method: pb::TokenAuthMethod::ClientSecretPost as i32,
        default_scopes: ["openid", "profile", "offline_access", "User.Read"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    })
    .await;
    let granted = ["User.Read", "openid", "profile"];
    let t = flow(&f, request("entra", &[])).await;
    assert_eq!(
        (t.scopes.as_slice(), t.missing_scopes.as_slice()),
        (
            &granted.map(String::from)[..],
            &["offline_access".to_owned()][..]
        )
    );
    let refreshed = token(
        f.authenticate(
            AGENT_KEY,
            pb::AuthenticateRequest {
                min_ttl_seconds: FORCE_REFRESH - 1,
                ..request("entra", &[])
            },
        )
        .await,
    );
    assert_ne!(refreshed.access_token, t.access_token);
    assert_eq!(
        refreshed.missing_scopes,
        ["offline_access"],
        "{refreshed:?}"
    );
    assert_eq!(f.grants("alice").await[0].scopes, granted);
    // A restarted daemon reads the grant: served, no consent.
    let f = f.restart();
    let again = token(f.authenticate(AGENT_KEY, request("entra", &[])).await);
    assert_eq!(again.missing_scopes, ["offline_access"], "{again:?}");
    assert_eq!(d.refreshes(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notion_json_token_requests_and_workspace_metadata() {
    let d = ProviderDouble::start(Family::Notion).await;
    let f = Fixture::new().await;
    provider_for(&f, "notion", "notion", &d, CLIENT_SECRET).await;
    let t = flow(&f, request("notion", &[])).await;
    assert_eq!(
        t.metadata.get("workspace_id").map(String::as_str),
        Some("w-0001")
    );
    assert_eq!(t.expires_at, 0);
    let f = f.restart();
    let after = token(f.authenticate(AGENT_KEY, request("notion", &[])).await);
    assert_eq!(after.access_token, t.access_token);
    assert!(
        d.api_accepts(&resolve_header(&f, "notion", &[]).await)
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_sent_with_http_200_fail_the_flow_clearly() {
    for (family, profile, code) in [
        (Family::GitHubOAuthApp, "github", "invalid_client"),
        (Family::Slack, "slack", "invalid_client"),
        (Family::Notion, "notion", "invalid_client"),
    ] {
        let d = ProviderDouble::start(family).await;
        let f = Fixture::new().await;
        provider_for(&f, "p", profile, &d, "wrong-secret").await;
        let p = pending(f.authenticate(AGENT_KEY, request("p", &[])).await);
        let (status, page) = consent(&p.auth_url).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{profile}: {page}");
        assert!(page.contains(code), "{profile}: {page}");
        let s = expect_err(
            f.wait(&p.auth_id).await,
            Code::FailedPrecondition,
            "EXCHANGE_FAILED",
        );
        assert!(s.message().contains(code), "{profile}: {s:?}");
        assert!(f.grants("alice").await.is_empty(), "nothing was written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_consent_completes_with_missing_scopes_and_asks_no_second_time() {
    let d = ProviderDouble::start(Family::GitHubOAuthApp).await;
    let f = Fixture::new().await;
    provider_for(&f, "github", "github", &d, CLIENT_SECRET).await;
    d.decline(&["gist"]);
    let p = pending(
        f.authenticate(AGENT_KEY, request("github", &["repo", "gist"]))
            .await,
    );
    let (status, page) = consent(&p.auth_url).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("not granted: gist"), "{page}");
    let t = token(f.wait(&p.auth_id).await.unwrap().into_inner());
    assert_eq!(
        (t.scopes.as_slice(), t.missing_scopes.as_slice()),
        (&["repo".to_owned()][..], &["gist".to_owned()][..])
    );
    // Asking again for the declined scope is answered, not a new consent; a new scope is.
    let again = token(
        f.authenticate(AGENT_KEY, request("github", &["repo", "gist"]))
            .await,
    );
    assert_eq!(again.missing_scopes, ["gist"]);
    let g = &f.grants("alice").await[0];
    assert_eq!(g.declined_scopes, ["gist"]);
    pending(
        f.authenticate(AGENT_KEY, request("github", &["repo", "user"]))
            .await,
    );
    let forced = pb::AuthenticateRequest {
        force_reauth: true,
        ..request("github", &["repo", "gist"])
    };
    pending(f.authenticate(AGENT_KEY, forced).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_consent_at_the_real_openid_provider_drops_offline_access_without_a_loop() {
    // oidc-provider grants offline_access only with prompt=consent; without it the scope is
    // dropped from the grant: a partial consent from a real, certified provider.
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let req = request("idp", &["openid", "email", "offline_access"]);
    let p = pending(f.authenticate(AGENT_KEY, req.clone()).await);
    let cb = f.browser.authorize(&p.auth_url, "alice", true).await;
    let (status, _, page) = f.browser.visit(&cb).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("not granted: offline_access"), "{page}");
    let t = token(f.wait(&p.auth_id).await.unwrap().into_inner());
    assert_eq!(t.missing_scopes, ["offline_access"]);
    assert!(t.scopes.contains(&"email".to_owned()));
    let again = token(f.authenticate(AGENT_KEY, req).await);
    assert_eq!(again.access_token, t.access_token, "no second flow");
    assert!(f.idp.userinfo(&t.access_token).await.status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_identical_requests_while_consent_is_pending_share_one_flow() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let calls = (0..10).map(|_| f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", "")));
    let flows: Vec<pb::Pending> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(pending)
        .collect();
    assert!(
        flows
            .iter()
            .all(|p| p.auth_id == flows[0].auth_id && p.auth_url == flows[0].auth_url)
    );
    // Another agent key, another user or force_reauth gets its own flow.
    let other = pending(
        f.authenticate(
            crate::support::daemon::OTHER_AGENT_KEY,
            Fixture::request("idp", "alice", ""),
        )
        .await,
    );
    assert_ne!(other.auth_id, flows[0].auth_id);
    let forced = pending(
        f.authenticate(
            AGENT_KEY,
            pb::AuthenticateRequest {
                force_reauth: true,
                ..Fixture::request("idp", "alice", "")
            },
        )
        .await,
    );
    assert_ne!(forced.auth_id, flows[0].auth_id);
    // Completing the shared flow serves every waiter.
    f.browser.consent(&flows[0].auth_url, "alice").await;
    token(f.wait(&flows[0].auth_id).await.unwrap().into_inner());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_profiles_and_variables_are_refused_naming_the_field_and_write_nothing() {
    let f = Fixture::new().await;
    let mut providers = f.valet.providers().await;
    let cases = [
        ("nope", vec![], "profile"),
        ("microsoft", vec![], "profile_vars"),
        ("microsoft", vec![("tenant", "a/../b")], "profile_vars"),
        ("github", vec![("tenant", "x")], "profile_vars"),
    ];
    for (profile, vars, field) in cases {
        let s = expect_err(
            providers
                .create_provider(pb::CreateProviderRequest {
                    provider: Some(pb::Provider {
                        provider_id: "p".into(),
                        profile: profile.into(),
                        profile_vars: vars
                            .iter()
                            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                            .collect(),
                        client_id: client_id().into(),
                        client_secret: CLIENT_SECRET.into(),
                        ..Default::default()
                    }),
                })
                .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert!(s.message().contains(field), "{profile}: {s:?}");
        assert!(!s.message().contains(CLIENT_SECRET));
    }
    let listed = providers
        .list_providers(pb::ListProvidersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.providers.is_empty(), "nothing was written");
}

/// An OIDC profile against the real OpenID provider standing in for the provider's issuer:
/// the profile's authorization parameters reach the provider, the flow completes, the grant
/// survives a restart and refreshes, and a failing token endpoint is a retryable UNAVAILABLE.
async fn oidc_profile_round_trip(profile: &str, vars: &[(&str, &str)]) -> Fixture {
    let f = Fixture::new().await;
    let p = f
        .create(pb::Provider {
            provider_id: "idp".into(),
            profile: profile.into(),
            profile_vars: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            issuer: f.idp.issuer.clone(),
            client_id: "basic-client".into(),
            client_secret: crate::support::idp::secret_of("basic-client"),
            default_scopes: vec!["openid".into(), "email".into()],
            ..Default::default()
        })
        .await;
    assert_eq!(p.profile, profile);
    let pend = pending(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    let url = url::Url::parse(&pend.auth_url).unwrap();
    let params: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    for (k, v) in &p.extra_auth_params {
        assert_eq!(
            params.get(k),
            Some(v),
            "{profile}: {k} reaches the provider"
        );
    }
    f.browser.consent(&pend.auth_url, "alice").await;
    let t = token(f.wait(&pend.auth_id).await.unwrap().into_inner());
    assert!(f.idp.userinfo(&t.access_token).await.status().is_success());
    let f = f.restart();
    let force = pb::AuthenticateRequest {
        min_ttl_seconds: 7200,
        ..Fixture::request("idp", "alice", "")
    };
    let refreshed = token(f.authenticate(AGENT_KEY, force.clone()).await);
    assert_ne!(refreshed.access_token, t.access_token);
    assert_eq!(f.idp.refreshes().await, 1);
    f.idp.fail_token(503).await;
    let s = expect_err(
        f.try_authenticate(AGENT_KEY, force).await,
        Code::Unavailable,
        "PROVIDER_UNAVAILABLE",
    );
    assert!(tonic_types::StatusExt::get_details_retry_info(&s).is_some());
    f.idp.fail_token(0).await;
    assert!(
        f.grants("alice").await[0].has_refresh_token,
        "the grant survived"
    );
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_google_profile_runs_against_a_real_openid_provider() {
    let f = oidc_profile_round_trip("google", &[]).await;
    let p = f
        .valet
        .providers()
        .await
        .get_provider(pb::GetProviderRequest {
            provider_id: "idp".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        p.extra_auth_params.get("access_type").map(String::as_str),
        Some("offline")
    );
    assert_eq!(
        p.extra_auth_params
            .get("include_granted_scopes")
            .map(String::as_str),
        Some("true")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_microsoft_profile_with_a_tenant_runs_against_a_real_openid_provider() {
    let f = oidc_profile_round_trip("microsoft", &[("tenant", "contoso.onmicrosoft.com")]).await;
    // GetProvider shows the variables, so its answer sent back updates the provider.
    let mut admin = f.valet.providers().await;
    let get = pb::GetProviderRequest {
        provider_id: "idp".into(),
    };
    let shown = admin.get_provider(get.clone()).await.unwrap().into_inner();
    assert_eq!(
        shown.profile_vars.get("tenant").map(String::as_str),
        Some("contoso.onmicrosoft.com")
    );
    let updated = admin
        .update_provider(pb::UpdateProviderRequest {
            provider: Some(pb::Provider {
                name: "Contoso".into(),
                ..shown.clone()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            updated.name.as_str(),
            &updated.issuer,
            &updated.profile_vars
        ),
        ("Contoso", &shown.issuer, &shown.profile_vars)
    );
}
