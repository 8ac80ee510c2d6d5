//! Replicas: several daemons on one Vault KV v2 store (the replica model; the embedded store is
//! single-replica by its directory lock). A refresh storm over three of them costs the provider
//! one refresh, and a replica killed while it holds a refresh claim loses nothing.

use crate::support::daemon::AGENT_KEY;
use crate::support::vault::{ROOT_TOKEN, VaultDouble, options, token_auth};
use crate::support::{Fixture, Valet, ValetOptions, token};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_over_three_replicas_cost_one_provider_refresh() {
    let d = VaultDouble::start("secret").await;
    let (f, opts) = crate::support::vault::replica_with_grant(&d).await;
    let (b, c) = (Valet::start(opts.clone()), Valet::start(opts));
    let replicas = [
        f.valet.credentials(AGENT_KEY).await,
        b.credentials(AGENT_KEY).await,
        c.credentials(AGENT_KEY).await,
    ];
    let before = f.idp.token_requests().await;
    // A slow provider keeps the one refresh in flight while every call arrives.
    f.idp.delay_token(1500).await;
    let calls = (0..1000).map(|i| {
        let mut creds = replicas[i % 3].clone();
        async move {
            creds
                .authenticate(Fixture::refresh_request("idp", "alice", ""))
                .await
                .map(|r| token(r.into_inner()))
        }
    });
    let tokens: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("every caller gets a token"))
        .collect();
    assert_eq!(
        f.idp.token_requests().await - before,
        1,
        "one provider refresh for three replicas"
    );
    assert!(
        tokens
            .iter()
            .all(|t| t.access_token == tokens[0].access_token)
    );
    f.idp.delay_token(0).await;
    assert!(
        f.idp
            .userinfo(&tokens[0].access_token)
            .await
            .status()
            .is_success()
    );
    f.idp.assert_no_refresh_token_reuse().await;
}

/// SIGKILL of the replica holding the refresh claim, before the provider answered: the other
/// replica is told to retry (UNAVAILABLE with retry info) while the claim holds, takes over once
/// it lapses (30 s), and refreshes with the stored refresh token, presented once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_holding_the_claim_is_taken_over_after_the_claims_timeout() {
    let d = VaultDouble::start("secret").await;
    let (f, opts) = crate::support::vault::replica_with_grant(&d).await;
    let survivor = Valet::start(opts);
    let before = f.idp.token_requests().await;
    f.idp.delay_token(3000).await;
    let mut doomed = f.valet.credentials(AGENT_KEY).await;
    let call = tokio::spawn(async move {
        doomed
            .authenticate(Fixture::refresh_request("idp", "alice", ""))
            .await
    });
    while f.idp.token_requests().await == before {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let crate::support::Fixture { mut valet, idp, .. } = f;
    valet.kill();
    assert!(
        call.await.unwrap().is_err(),
        "the caller saw its replica die"
    );
    // Past the provider's delay: the abandoned request was dropped unprocessed.
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    idp.delay_token(0).await;

    let mut creds = survivor.credentials(AGENT_KEY).await;
    let started = std::time::Instant::now();
    let mut told_to_retry = 0;
    let t = loop {
        match creds
            .authenticate(Fixture::refresh_request("idp", "alice", ""))
            .await
        {
            Ok(r) => break token(r.into_inner()),
            Err(s) => {
                assert_eq!(s.code(), Code::Unavailable, "{s:?}");
                use tonic_types::StatusExt as _;
                assert!(s.get_details_retry_info().is_some(), "{s:?}");
                told_to_retry += 1;
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(60),
                    "the claim never lapsed"
                );
            }
        }
    };
    assert!(told_to_retry >= 1, "the live claim was respected first");
    assert!(idp.userinfo(&t.access_token).await.status().is_success());
    let stats = idp.stats().await;
    assert_eq!(stats["grants"]["refresh_token"], 1, "{stats}");
    idp.assert_no_refresh_token_reuse().await;
}

/// A free loopback address (bound and released), so a replica's `replica_url` is known before
/// it starts.
fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn replica(d: &VaultDouble) -> ValetOptions {
    let addr = free_addr();
    ValetOptions {
        http_listen: Some(addr),
        top_toml: format!("replica_url = \"http://{addr}\"\n"),
        ..options(&d.address, 2, &token_auth(ROOT_TOKEN))
    }
}

/// A consent started on replica A whose callback the load balancer sends to replica B: B
/// forwards it to A (the address A registered in the store), A completes the flow, and the
/// browser gets A's page through B. A state naming an unregistered replica is not forwarded; a
/// callback for A while A is down gets a clear 502 page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_that_lands_on_another_replica_completes_the_flow_where_it_started() {
    let d = VaultDouble::start("secret").await;
    let f = Fixture::with(replica(&d)).await;
    f.oidc_provider("idp", "basic-client").await;
    let b = Valet::start(replica(&d));
    let p = crate::support::pending(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    let cb = f.browser.authorize(&p.auth_url, "alice", true).await;
    let state = cb
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert!(state.contains('.'), "the state carries A's tag: {state}");
    let mut at_b = cb.clone();
    at_b.set_port(Some(b.http_addr.port())).unwrap();
    let (status, _, page) = f.browser.visit(&at_b).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{page}");
    assert!(page.contains("Authorization complete"), "{page}");
    let t = token(
        f.valet
            .credentials(AGENT_KEY)
            .await
            .wait_for_completion(valet::pb::WaitForCompletionRequest {
                auth_id: p.auth_id,
                timeout_seconds: 5,
                status_only: false,
            })
            .await
            .unwrap()
            .into_inner(),
    );
    assert!(f.idp.userinfo(&t.access_token).await.status().is_success());

    // A tag no replica registered: B answers it itself (an unknown state), nothing forwarded.
    let mut forged = at_b.clone();
    forged
        .query_pairs_mut()
        .clear()
        .append_pair("state", "0123456789abcdef.forged")
        .append_pair("code", "x");
    let (status, _, page) = f.browser.visit(&forged).await;
    assert!(status.is_client_error(), "{status}: {page}");
    assert!(
        !b.logs().contains("forwarding a callback"),
        "no forwarding attempt"
    );

    // A callback for A's flow while A is down: B cannot reach it and says so.
    let Fixture {
        mut valet, browser, ..
    } = f;
    tokio::task::spawn_blocking(move || assert!(valet.stop().success()))
        .await
        .unwrap();
    let (status, _, page) = browser.visit(&at_b).await;
    assert_eq!(status, reqwest::StatusCode::BAD_GATEWAY, "{page}");
    assert!(page.contains("cannot be reached"), "{page}");
    // The failure is logged without the URL, whose query holds the code and the state.
    let logs = b.logs_once_they_contain("forwarding a callback").await;
    assert!(
        logs.contains("forwarding a callback"),
        "the failure is logged"
    );
    let code = cb
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert!(!logs.contains(&state) && !logs.contains(&code), "{logs}");
}
