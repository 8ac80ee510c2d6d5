//! Watching instead of polling: `WatchAuthorization` streams a flow's state then its end;
//! `WatchGrants` streams grant lifecycle events (metadata only).

use crate::support::daemon::{ADMIN_KEY, AGENT_KEY, OTHER_AGENT_KEY};
use crate::support::{Fixture, ValetOptions, agent_caller, expect_err, pending};
use std::time::Duration;
use tonic::Code;
use valet::pb;
use valet::pb::authorization_event::Event;

async fn watch(f: &Fixture, auth_id: &str) -> tonic::Streaming<pb::AuthorizationEvent> {
    f.valet
        .credentials(AGENT_KEY)
        .await
        .watch_authorization(pb::WatchAuthorizationRequest {
            auth_id: auth_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn next<T>(s: &mut tonic::Streaming<T>) -> Option<T> {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("an event or the end within 10 s")
        .unwrap()
}

async fn started(f: &Fixture, user: &str) -> pb::Pending {
    pending(
        f.authenticate(AGENT_KEY, Fixture::request("idp", user, ""))
            .await,
    )
}

#[tokio::test]
async fn a_watched_flow_is_pending_then_completed_with_the_token_then_the_stream_ends() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let p = started(&f, "alice").await;
    let mut s = watch(&f, &p.auth_id).await;
    match next(&mut s).await.unwrap().event {
        Some(Event::Pending(now)) => assert_eq!(now.auth_url, p.auth_url),
        other => panic!("pending first: {other:?}"),
    }
    f.browser.consent(&p.auth_url, "alice").await;
    let token = match next(&mut s).await.unwrap().event {
        Some(Event::Completed(r)) => crate::support::token(r),
        other => panic!("completed: {other:?}"),
    };
    assert!(
        f.idp
            .userinfo(&token.access_token)
            .await
            .status()
            .is_success()
    );
    assert!(next(&mut s).await.is_none(), "the stream ends");
    // The token handed out on the stream is counted (and audited) for its provider, as one
    // handed out by WaitForCompletion is.
    assert_eq!(
        f.valet
            .sample("valet_handouts_total{provider=\"idp\",kind=\"token\"}")
            .await,
        Some(1.0)
    );
    // Watching a finished flow: its end at once.
    let mut again = watch(&f, &p.auth_id).await;
    assert!(matches!(
        next(&mut again).await.unwrap().event,
        Some(Event::Completed(_))
    ));
    assert!(next(&mut again).await.is_none());
}

#[tokio::test]
async fn denied_and_expired_flows_end_the_stream_with_the_reason() {
    let f = Fixture::with(ValetOptions {
        flow_ttl_seconds: 1,
        ..Default::default()
    })
    .await;
    f.oidc_provider("idp", "basic-client").await;
    let failure = |e: Option<pb::AuthorizationEvent>| match e.and_then(|e| e.event) {
        Some(Event::Failed(why)) => why,
        other => panic!("failed: {other:?}"),
    };
    // Denied at the provider.
    let p = started(&f, "alice").await;
    let mut s = watch(&f, &p.auth_id).await;
    assert!(matches!(
        next(&mut s).await.unwrap().event,
        Some(Event::Pending(_))
    ));
    let cb = f.browser.authorize(&p.auth_url, "alice", false).await;
    f.browser.visit(&cb).await;
    let why = failure(next(&mut s).await);
    assert_eq!(why.reason, pb::ErrorReason::AccessDenied as i32);
    assert!(why.message.contains("denied"), "{why:?}");
    assert!(next(&mut s).await.is_none());
    // Left to expire.
    let p = started(&f, "bob").await;
    let mut s = watch(&f, &p.auth_id).await;
    assert!(matches!(
        next(&mut s).await.unwrap().event,
        Some(Event::Pending(_))
    ));
    let why = failure(next(&mut s).await);
    assert_eq!(why.reason, pb::ErrorReason::FlowExpired as i32);
    assert!(next(&mut s).await.is_none());
    // Someone else's flow, or none: NOT_FOUND, as WaitForCompletion.
    let p = started(&f, "carol").await;
    let s = f
        .valet
        .credentials(OTHER_AGENT_KEY)
        .await
        .watch_authorization(pb::WatchAuthorizationRequest {
            auth_id: p.auth_id.clone(),
        })
        .await;
    expect_err(s, Code::NotFound, "NOT_FOUND");
}

/// The daemon's `valet_watch_streams` gauge.
async fn open_streams(f: &Fixture) -> i64 {
    let value = f.valet.sample("valet_watch_streams").await;
    value.expect("the gauge is exported") as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_watches_leave_health_answering_and_cancelled_ones_are_released() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let p = started(&f, "alice").await;
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(f.valet.credentials(AGENT_KEY).await);
    }
    let opened = futures::future::join_all((0..5000).map(|i| {
        let mut c = clients[i % clients.len()].clone();
        let auth_id = p.auth_id.clone();
        async move {
            let mut s = c
                .watch_authorization(pb::WatchAuthorizationRequest { auth_id })
                .await
                .unwrap()
                .into_inner();
            let first = s.message().await.unwrap().unwrap();
            assert!(matches!(first.event, Some(Event::Pending(_))));
            s
        }
    }))
    .await;
    assert_eq!(open_streams(&f).await, 5000);
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(f.valet.raw_channel().await);
    let t = std::time::Instant::now();
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "health answered");
    drop(opened);
    drop(clients);
    let mut left = open_streams(&f).await;
    for _ in 0..50 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = open_streams(&f).await;
    }
    assert_eq!(left, 0, "cancelled streams are released");
}

#[tokio::test]
async fn a_stream_ends_at_the_callers_deadline() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let p = started(&f, "alice").await;
    let mut req = tonic::Request::new(pb::WatchAuthorizationRequest {
        auth_id: p.auth_id.clone(),
    });
    req.set_timeout(Duration::from_millis(800));
    let mut s = f
        .valet
        .credentials(AGENT_KEY)
        .await
        .watch_authorization(req)
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        s.message().await.unwrap().unwrap().event,
        Some(Event::Pending(_))
    ));
    let t = std::time::Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("the stream ends at the deadline");
    assert!(
        matches!(end, Ok(None))
            || matches!(&end, Err(st) if st.code() == Code::DeadlineExceeded || st.code() == Code::Cancelled),
        "{end:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(3));
}

async fn watch_grants(
    f: &Fixture,
    key: &str,
    user: &str,
) -> Result<tonic::Streaming<pb::GrantEvent>, tonic::Status> {
    f.valet
        .credentials(key)
        .await
        .watch_grants(pb::WatchGrantsRequest {
            user_id: user.into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn grant_events_are_streamed_to_those_who_may_see_them_without_tokens() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let mut ops = watch_grants(&f, ADMIN_KEY, "").await.unwrap();
    let mut agent = watch_grants(&f, AGENT_KEY, "alice").await.unwrap();
    let mut other = watch_grants(&f, OTHER_AGENT_KEY, "alice").await.unwrap();
    // A provider that is not there is said at once, not watched in silence.
    let typo = f
        .valet
        .credentials(ADMIN_KEY)
        .await
        .watch_grants(pb::WatchGrantsRequest {
            provider_id: "ipd".into(),
            ..Default::default()
        })
        .await;
    let typo = expect_err(typo, Code::NotFound, "NOT_FOUND");
    assert!(typo.message().contains("no provider 'ipd'"), "{typo:?}");
    let kind = |e: &pb::GrantEvent| pb::GrantEventKind::try_from(e.kind).unwrap();

    f.authorize(AGENT_KEY, Fixture::request("idp", "alice", "planner"))
        .await;
    f.authenticate(
        AGENT_KEY,
        Fixture::refresh_request("idp", "alice", "planner"),
    )
    .await;
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
    for s in [&mut ops, &mut agent] {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let e = next(s).await.unwrap();
            assert_eq!(
                (
                    e.provider_id.as_str(),
                    e.user_id.as_str(),
                    e.agent_id.as_str()
                ),
                ("idp", "alice", "planner")
            );
            assert!(e.at > 0);
            seen.push(kind(&e));
        }
        assert_eq!(
            seen,
            [
                pb::GrantEventKind::Created,
                pb::GrantEventKind::Refreshed,
                pb::GrantEventKind::Revoked
            ]
        );
    }
    // Agent b may not act as planner: it sees none of this.
    let nothing = tokio::time::timeout(Duration::from_millis(500), other.message()).await;
    assert!(nothing.is_err(), "agent b saw {nothing:?}");
    // An agent key must name the user, as for ListGrants.
    expect_err(
        watch_grants(&f, AGENT_KEY, "")
            .await
            .map(tonic::Response::new),
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
}

#[tokio::test]
async fn a_providers_maximum_grant_age_shows_when_each_grant_needs_the_user_again() {
    let f = Fixture::new().await;
    let base = pb::Provider {
        provider_id: "idp".into(),
        kind: pb::ProviderKind::Oidc as i32,
        client_id: "basic-client".into(),
        client_secret: crate::support::idp::secret_of("basic-client"),
        issuer: f.idp.issuer.clone(),
        default_scopes: vec!["openid".into()],
        ..Default::default()
    };
    let refused = f
        .valet
        .providers()
        .await
        .create_provider(pb::CreateProviderRequest {
            provider: Some(pb::Provider {
                max_grant_age_seconds: 60,
                ..base.clone()
            }),
        })
        .await;
    let s = expect_err(refused, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert!(s.message().contains("max_grant_age_seconds"), "{s:?}");
    let p = f
        .create(pb::Provider {
            max_grant_age_seconds: 86_400,
            ..base
        })
        .await;
    assert_eq!(p.max_grant_age_seconds, 86_400);
    f.authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    let g = &f.grants("alice").await[0];
    assert_eq!(g.needs_reauth_at, g.created_at + 86_400);
    assert_eq!(g.status, pb::GrantStatus::Active as i32);
}

#[tokio::test]
async fn a_caller_holds_at_most_its_max_watches_open_and_a_closed_one_frees_its_place() {
    const WATCHER_KEY: &str = "test-watcher-agent-key-canary-5";
    let f = Fixture::with(ValetOptions {
        extra_toml: agent_caller("watcher", WATCHER_KEY, "max_watches = 2\n"),
        ..Default::default()
    })
    .await;
    f.oidc_provider("idp", "basic-client").await;
    let first = watch_grants(&f, WATCHER_KEY, "alice").await.unwrap();
    let _second = watch_grants(&f, WATCHER_KEY, "alice").await.unwrap();
    let refused = expect_err(
        watch_grants(&f, WATCHER_KEY, "alice")
            .await
            .map(tonic::Response::new),
        Code::ResourceExhausted,
        "RESOURCE_EXHAUSTED",
    );
    assert!(refused.message().contains("max_watches"), "{refused:?}");
    // WatchAuthorization counts too; other callers' streams are their own.
    let p = pending(
        f.authenticate(WATCHER_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    let mut watcher = f.valet.credentials(WATCHER_KEY).await;
    let s = watcher
        .watch_authorization(pb::WatchAuthorizationRequest {
            auth_id: p.auth_id.clone(),
        })
        .await;
    expect_err(s, Code::ResourceExhausted, "RESOURCE_EXHAUSTED");
    let _theirs = watch_grants(&f, AGENT_KEY, "alice").await.unwrap();
    assert_eq!(open_streams(&f).await, 3);
    // A stream its caller dropped frees its place.
    drop(first);
    let mut again = watch_grants(&f, WATCHER_KEY, "alice").await;
    for _ in 0..50 {
        if again.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        again = watch_grants(&f, WATCHER_KEY, "alice").await;
    }
    again.unwrap();
}

/// At shutdown an open watch ends at once, saying the daemon is shutting down (the watcher
/// reconnects), instead of holding the drain for the whole grace period and ending in a
/// transport error.
#[tokio::test]
async fn a_watch_open_at_shutdown_ends_saying_so() {
    let f = Fixture::new().await;
    let mut s = watch_grants(&f, AGENT_KEY, "alice").await.unwrap();
    let t = std::time::Instant::now();
    f.valet.terminate();
    let end = tokio::time::timeout(Duration::from_secs(8), s.message())
        .await
        .expect("the stream ends before the grace period (10 s) would");
    let st = end.expect_err("ends with a status");
    assert_eq!(st.code(), Code::Unavailable, "{st:?}");
    assert!(st.message().contains("shutting down"), "{st:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

/// A `WaitForCompletion` long poll waiting at shutdown answers at once that the flow is still
/// pending, as its timeout would, instead of holding the drain for the whole grace period.
#[tokio::test]
async fn a_long_poll_waiting_at_shutdown_ends_at_once() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let p = pending(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    let mut client = f.valet.credentials(AGENT_KEY).await;
    let wait = tokio::spawn(async move {
        client
            .wait_for_completion(pb::WaitForCompletionRequest {
                auth_id: p.auth_id,
                timeout_seconds: 60,
                status_only: false,
            })
            .await
    });
    // The call is waiting before the signal.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = std::time::Instant::now();
    f.valet.terminate();
    let answer = tokio::time::timeout(Duration::from_secs(8), wait)
        .await
        .expect("the long poll ends before the grace period (10 s) would")
        .unwrap()
        .unwrap()
        .into_inner();
    assert!(
        matches!(
            answer.result,
            Some(pb::authenticate_response::Result::Pending(_))
        ),
        "{answer:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}
