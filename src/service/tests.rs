//! Service-tier tests on fakes under paused time: a memory store (optionally failing chosen
//! writes), the fake token endpoint and a manual clock. What the integration suite proves through
//! the binary, proved here in milliseconds and deterministically.

use super::Error;
use super::broker::TokenBroker;
use super::flows::{Ask, Flows};
use super::kind::CallbackParams;
use super::references::References;
use crate::clock::{Clock, ManualClock};
use crate::domain::{
    AuthCode, Caller, Grant, GrantKey, GrantStatus, Handout, HandoutPolicy, KindConfig,
    OAuthClient, ProviderConfig, ProviderId, Role, Scopes, TokenAuthMethod, UserId,
};
use crate::oauth::fake::FakeTokenEndpoint;
use crate::pending::{FlowFailure, FlowOutcome, PendingFlows, PendingLimits};
use crate::secret::{ExposeSecret, SecretString};
use crate::store::{
    Cas, GrantRepo, MemoryStore, MetaRepo, ReferenceRepo, SecretBytes, SecretStore, StoreError,
    Versioned,
};
use async_trait::async_trait;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const NOW: i64 = 1_800_000_000;

/// A memory store whose writes of a record containing `needle` fail as unavailable, `failures`
/// times (a Vault outage at exactly the wrong moment).
#[derive(Debug, Default)]
struct FlakyStore {
    inner: MemoryStore,
    needle: std::sync::Mutex<Vec<u8>>,
    failures: AtomicUsize,
}

impl FlakyStore {
    fn fail_writes_of(&self, needle: &str, times: usize) {
        *self.needle.lock().unwrap() = needle.as_bytes().to_vec();
        self.failures.store(times, Ordering::SeqCst);
    }
}

#[async_trait]
impl SecretStore for FlakyStore {
    fn backend(&self) -> &'static str {
        "flaky"
    }
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: SecretBytes, cas: Cas) -> Result<u64, StoreError> {
        let hit = {
            let needle = self.needle.lock().unwrap();
            !needle.is_empty() && value.windows(needle.len()).any(|w| w == &needle[..])
        };
        if hit
            && self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(StoreError::Unavailable("injected".into(), None));
        }
        self.inner.put(key, value, cas).await
    }
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

fn provider() -> ProviderConfig {
    let url = |p: &str| url::Url::parse(&format!("https://idp.example/{p}")).unwrap();
    ProviderConfig {
        id: ProviderId::parse("idp").unwrap(),
        name: "idp".into(),
        kind: KindConfig::OAuth2(AuthCode {
            client: OAuthClient {
                provider: "idp".into(),
                signing_key: None,
                token_exchange: false,
                client_id: "client".into(),
                client_secret: Some(SecretString::from("secret")),
                auth_method: TokenAuthMethod::ClientSecretBasic,
                token_url: url("token"),
                dialect: Default::default(),
                resource: None,
            },
            auth_url: url("auth"),
            issuer: None,
            revocation_url: None,
            extra_auth_params: Default::default(),
            scope_param: "scope".into(),
            consent_flow: Default::default(),
            device_authorization_url: None,
            iss_required: false,
            consent_return_url: None,
            allow_account_change: false,
            scope_separator: crate::domain::Separator::Space,
            mcp: None,
        }),
        profile: None,
        profile_vars: Default::default(),
        default_scopes: Scopes::default(),
        handout_policy: HandoutPolicy::Any,
        reference_ttl_seconds: 3600,
        egress_hosts: Vec::new(),
        keep_alive_seconds: 0,
        max_grant_age_seconds: 0,
        created_at: NOW,
        updated_at: NOW,
    }
}

fn key(user: &str) -> GrantKey {
    GrantKey {
        provider: ProviderId::parse("idp").unwrap(),
        user: UserId::parse(user).unwrap(),
        agent: None,
        account: None,
    }
}

struct World {
    store: Arc<FlakyStore>,
    endpoint: Arc<FakeTokenEndpoint>,
    clock: Arc<ManualClock>,
}

impl World {
    async fn new() -> Self {
        Self::with(FakeTokenEndpoint::default()).await
    }

    /// Alice's grant (refresh token `rt-0`, no access token yet) at a provider answering as
    /// `endpoint` does.
    async fn with(endpoint: FakeTokenEndpoint) -> Self {
        let w = Self {
            store: Arc::default(),
            endpoint: Arc::new(endpoint),
            clock: Arc::new(ManualClock::at(NOW)),
        };
        let grant = Grant {
            key: key("alice"),
            scopes: Scopes::default(),
            subject: None,
            refresh_token: Some(SecretString::from("rt-0")),
            status: GrantStatus::Active,
            created_at: NOW,
            updated_at: NOW,
            refreshing: None,
            access_token: None,
            token_type: None,
            expires_at: 0,
            declined: Scopes::default(),
            metadata: Default::default(),
            consented_at: 0,
            email: None,
        };
        GrantRepo::new(w.store.clone())
            .put(&grant, Cas::Absent)
            .await
            .unwrap();
        w
    }

    /// One daemon instance (replica) over the shared store and provider.
    fn broker(&self) -> TokenBroker {
        self.broker_auditing(None)
    }

    fn broker_auditing(&self, audit: Option<Arc<crate::audit::Audit>>) -> TokenBroker {
        TokenBroker::new(
            GrantRepo::new(self.store.clone()),
            self.endpoint.clone(),
            self.clock.clone(),
            audit,
        )
    }

    /// A replica recording its refreshes in an audit trail, and the grant changes it announces.
    fn audited_broker(
        &self,
    ) -> (
        TokenBroker,
        tokio::sync::broadcast::Receiver<crate::audit::GrantChange>,
    ) {
        let audit = crate::audit::Audit::open(None, self.clock.clone(), Arc::default()).unwrap();
        let changes = audit.watch_grants();
        (self.broker_auditing(Some(Arc::new(audit))), changes)
    }

    async fn stored_refresh_token(&self) -> Option<String> {
        let (g, _) = GrantRepo::new(self.store.clone())
            .get(&key("alice"))
            .await
            .unwrap()
            .unwrap();
        g.refresh_token.map(|t| t.expose_secret().to_owned())
    }
}

#[tokio::test(start_paused = true)]
async fn a_thousand_callers_on_one_expired_grant_cause_one_refresh() {
    let w = World::new().await;
    let broker = Arc::new(w.broker());
    let p = Arc::new(provider());
    let calls = (0..1000).map(|_| {
        let (broker, p) = (broker.clone(), p.clone());
        tokio::spawn(async move {
            broker
                .usable_token(&p, &key("alice"), &Scopes::default(), 60)
                .await
        })
    });
    for c in futures::future::join_all(calls).await {
        let t = c.unwrap().unwrap().expect("a token");
        assert_eq!(t.token.expose_secret(), "at-1");
    }
    assert_eq!(w.endpoint.refreshes(), 1);
    assert_eq!(w.stored_refresh_token().await.as_deref(), Some("rt-1"));
}

#[tokio::test(start_paused = true)]
async fn a_rotated_refresh_token_is_stored_through_transient_store_failures() {
    let w = World::new().await;
    w.store.fail_writes_of("rt-1", 3);
    let t = w
        .broker()
        .usable_token(&provider(), &key("alice"), &Scopes::default(), 60)
        .await
        .unwrap();
    assert!(t.is_some(), "handed out once the rotation was stored");
    assert_eq!(w.stored_refresh_token().await.as_deref(), Some("rt-1"));
    assert_eq!(w.endpoint.refreshes(), 1);
}

/// A caller that goes away (its deadline) while its refresh's rotated refresh token waits for
/// the store to take it: the refresh finishes on its own task and stores it. Cut off there, the
/// rotated token would be gone and the stored one spent at the provider: a dead grant.
#[tokio::test(start_paused = true)]
async fn a_caller_gone_mid_refresh_does_not_lose_the_rotated_refresh_token() {
    let w = World::new().await;
    w.store.fail_writes_of("rt-1", 3);
    let broker = w.broker();
    let p = provider();
    let gone = tokio::time::timeout(
        Duration::from_millis(50),
        broker.usable_token(&p, &key("alice"), &Scopes::default(), 60),
    )
    .await;
    assert!(gone.is_err(), "the caller left before the store took it");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(w.stored_refresh_token().await.as_deref(), Some("rt-1"));
    let t = broker
        .usable_token(&p, &key("alice"), &Scopes::default(), 60)
        .await
        .unwrap();
    assert!(t.is_some(), "the next call is served");
    assert_eq!(w.endpoint.reused(), 0, "the spent token is never presented");
}

/// A caller that goes away while the provider refuses its refresh (`invalid_grant`): what the
/// refresh came to is still recorded, so watchers and webhooks learn the grant needs the user.
#[tokio::test(start_paused = true)]
async fn a_caller_gone_mid_refresh_still_announces_what_it_came_to() {
    let w = World::new().await;
    let (broker, mut changes) = w.audited_broker();
    w.endpoint.fail_next(crate::oauth::OAuthError::InvalidGrant);
    let gone = tokio::time::timeout(
        Duration::from_millis(10),
        broker.usable_token(&provider(), &key("alice"), &Scopes::default(), 60),
    )
    .await;
    assert!(
        gone.is_err(),
        "the caller left before the provider answered"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let change = changes.try_recv().expect("announced");
    assert_eq!(change.kind, crate::audit::GrantChangeKind::NeedsReauth);
    assert_eq!(change.user, "alice");
}

#[tokio::test(start_paused = true)]
async fn a_lost_rotation_hands_out_nothing_and_never_reuses_the_spent_token() {
    let w = World::new().await;
    w.store.fail_writes_of("rt-1", usize::MAX);
    let broker = w.broker();
    let p = provider();
    let err = broker
        .usable_token(&p, &key("alice"), &Scopes::default(), 60)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::StoreUnavailable(_)), "{err:?}");
    // The next call needs consent: no second refresh with the spent token.
    let again = broker
        .usable_token(&p, &key("alice"), &Scopes::default(), 60)
        .await
        .unwrap();
    assert!(again.is_none());
    assert_eq!(w.endpoint.refreshes(), 1);
    assert_eq!(w.endpoint.reused(), 0);
    let query = super::GrantQuery {
        page_size: 10,
        ..Default::default()
    };
    let (listed, _) = broker.list(None, &query).await.unwrap();
    assert_eq!(listed[0].status, GrantStatus::NeedsReauth);
}

/// A provider that does not rotate (Google) leaves the stored refresh token valid: a refresh whose
/// result cannot be stored fails the call but costs no consent.
#[tokio::test(start_paused = true)]
async fn an_unstored_refresh_without_rotation_keeps_the_grant() {
    let mut endpoint = FakeTokenEndpoint::default();
    endpoint.rotate = false;
    let w = World::with(endpoint).await;
    w.store.fail_writes_of("at-1", usize::MAX);
    let broker = w.broker();
    let p = provider();
    let err = broker
        .usable_token(&p, &key("alice"), &Scopes::default(), 60)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::StoreUnavailable(_)), "{err:?}");
    // The store is back: the next call refreshes again with the same refresh token.
    w.store.fail_writes_of("", 0);
    let t = broker
        .usable_token(&p, &key("alice"), &Scopes::default(), 60)
        .await
        .unwrap()
        .expect("a token, not a new consent");
    assert_eq!(t.token.expose_secret(), "at-2");
    assert_eq!(w.endpoint.refreshes(), 2);
    assert_eq!(w.stored_refresh_token().await.as_deref(), Some("rt-0"));
    let query = super::GrantQuery {
        page_size: 10,
        ..Default::default()
    };
    let (listed, _) = broker.list(None, &query).await.unwrap();
    assert_eq!(listed[0].status, GrantStatus::Active);
}

/// Two replicas on one store, both asked at once for an expired grant: one claims and refreshes,
/// the other waits for the claim and takes the token the first stored. One provider call.
#[tokio::test(start_paused = true)]
async fn replicas_sharing_a_store_refresh_once_and_share_the_token() {
    let w = World::new().await;
    let (a, b) = (w.broker(), w.broker());
    let p = Arc::new(provider());
    let run = |broker: TokenBroker| {
        let p = p.clone();
        tokio::spawn(async move {
            broker
                .usable_token(&p, &key("alice"), &Scopes::default(), 60)
                .await
        })
    };
    let (ra, rb) = tokio::join!(run(a), run(b));
    let (ta, tb) = (ra.unwrap().unwrap().unwrap(), rb.unwrap().unwrap().unwrap());
    assert_eq!(
        w.endpoint.reused(),
        0,
        "a refresh token was presented twice"
    );
    assert_eq!(
        w.endpoint.refreshes(),
        1,
        "one refresh served both replicas"
    );
    assert_eq!(
        ta.token.expose_secret(),
        tb.token.expose_secret(),
        "the waiting replica took the stored token"
    );
    assert_eq!(w.stored_refresh_token().await.as_deref(), Some("rt-1"));
}

#[tokio::test(start_paused = true)]
async fn invalid_grant_marks_the_grant_dead_but_a_provider_outage_keeps_it() {
    let w = World::new().await;
    let broker = w.broker();
    let p = provider();
    w.endpoint
        .fail_next(crate::oauth::OAuthError::Unavailable("503".into()));
    let err = broker
        .usable_token(&p, &key("alice"), &Scopes::default(), 60)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ProviderUnavailable(_)));
    assert_eq!(w.stored_refresh_token().await.as_deref(), Some("rt-0"));
    w.endpoint.fail_next(crate::oauth::OAuthError::InvalidGrant);
    let t = broker
        .usable_token(&p, &key("alice"), &Scopes::default(), 60)
        .await
        .unwrap();
    assert!(t.is_none());
    assert_eq!(w.stored_refresh_token().await, None);
}

#[tokio::test(start_paused = true)]
async fn a_flow_taken_after_its_lease_fails_closed_as_expired() {
    let w = World::new().await;
    let pending = Arc::new(PendingFlows::new(PendingLimits {
        ttl: Duration::from_secs(60),
        max_total: 10,
        max_per_user: 10,
        keep_outcome: Duration::from_secs(60),
    }));
    let flows = Flows::new(pending, w.endpoint.clone(), w.clock.clone(), None);
    let caller = Caller::api_key("agent-a", Role::Agent);
    let started = flows
        .start(
            &caller,
            &provider(),
            Ask {
                key: key("bob"),
                scopes: Scopes::default(),
                handout: Handout::Token,
                redirect_uri: "http://127.0.0.1/oauth/callback/idp".into(),
                join: true,
            },
        )
        .await
        .unwrap();
    let (started, polling) = started;
    assert!(polling.is_none(), "a browser flow has no poller");
    assert_eq!(started.expires_at, NOW + 60);
    let state = url::Url::parse(started.auth_url.as_str())
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    let params = CallbackParams {
        state: Some(state.clone()),
        ..Default::default()
    };
    let err = flows.take(&provider().id, &params).unwrap_err();
    assert!(matches!(err, Error::Flow(FlowFailure::Expired)), "{err:?}");
    let err = flows.take(&provider().id, &params).unwrap_err();
    assert!(
        matches!(err, Error::NotFound { .. }),
        "a state is taken once"
    );
    assert_eq!(w.endpoint.exchanges(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_single_use_reference_is_spent_by_exactly_one_caller() {
    let w = World::new().await;
    let refs = Arc::new(References::new(
        ReferenceRepo::new(w.store.clone()),
        MetaRepo::new(w.store.clone()),
        w.clock.clone(),
    ));
    let (reference, expires_at) = refs
        .issue("agent-a", &key("alice"), &Scopes::default(), 3600, true)
        .await
        .unwrap();
    assert_eq!(expires_at, NOW + 3600);
    let found = refs.find(reference.expose_secret()).await.unwrap();
    let record = found.record.clone().unwrap();
    assert!(record.live_for("agent-a", w.clock.now_unix()));
    assert!(!record.live_for("agent-b", w.clock.now_unix()));
    let spends = (0..20).map(|_| {
        let (refs, hash) = (refs.clone(), found.hash.clone());
        tokio::spawn(async move { refs.spend(&hash).await })
    });
    let won = futures::future::join_all(spends)
        .await
        .into_iter()
        .filter(|r| r.as_ref().unwrap().is_ok())
        .count();
    assert_eq!(won, 1);
    let again = refs.find(reference.expose_secret()).await.unwrap();
    assert!(again.record.unwrap().used);
    // Revoking the grant's references finds them through the index.
    assert_eq!(refs.drop_for_grant(&key("alice")).await.unwrap(), 1);
    assert!(
        refs.find(reference.expose_secret())
            .await
            .unwrap()
            .record
            .is_none()
    );
    w.clock.advance(1);
}

/// A provider whose users consent with the device flow.
fn device_provider() -> ProviderConfig {
    let mut p = provider();
    if let KindConfig::OAuth2(c) = &mut p.kind {
        c.consent_flow = crate::domain::ConsentFlow::Device;
        c.device_authorization_url =
            Some(url::Url::parse("https://idp.example/device/auth").unwrap());
    }
    p
}

/// Starts a device flow for bob in a table whose flows live `ttl`: the table, the flows, and
/// what `start` answered.
async fn start_device_flow(
    w: &World,
    ttl: Duration,
) -> (
    Arc<PendingFlows>,
    Flows,
    super::flows::Started,
    Option<super::flows::Polling>,
) {
    let pending = Arc::new(PendingFlows::new(PendingLimits {
        ttl,
        max_total: 10,
        max_per_user: 10,
        keep_outcome: Duration::from_secs(60),
    }));
    let flows = Flows::new(pending.clone(), w.endpoint.clone(), w.clock.clone(), None);
    let ask = Ask {
        key: key("bob"),
        scopes: Scopes::default(),
        handout: Handout::Token,
        redirect_uri: String::new(),
        join: true,
    };
    let caller = Caller::api_key("agent-a", Role::Agent);
    let (started, polling) = flows.start(&caller, &device_provider(), ask).await.unwrap();
    (pending, flows, started, polling)
}

/// Starts a device flow for bob and its poller; returns the flow's outcome once it ends.
async fn run_device_flow(w: &World, answers: Vec<Option<crate::oauth::OAuthError>>) -> FlowOutcome {
    w.endpoint.script_device(answers);
    let (pending, _, started, polling) = start_device_flow(w, Duration::from_secs(60)).await;
    assert_eq!(
        started.prompt.as_ref().map(|p| p.user_code.as_str()),
        Some("WDJB-MJHT")
    );
    assert_eq!(started.auth_url.as_str(), "https://idp.example/device");
    let outcome = pending.view(&started.auth_id).unwrap().outcome;
    super::device::DevicePoll {
        endpoint: w.endpoint.clone(),
        pending,
        broker: w.broker(),
        audit: Arc::new(crate::audit::Audit::open(None, w.clock.clone(), Arc::default()).unwrap()),
        provider: device_provider(),
        polling: polling.expect("a device flow has a poller"),
    }
    .spawn();
    outcome.finished().await
}

/// A device code that expires (600 s, the fake's) before the flow would (900 s): the flow says
/// it ends then, to its starter and to anyone who views it, as the poller stops then.
#[tokio::test(start_paused = true)]
async fn a_device_flow_ends_when_its_device_code_does() {
    let w = World::new().await;
    let now = w.clock.now_unix();
    let (pending, flows, started, polling) = start_device_flow(&w, Duration::from_secs(900)).await;
    assert!(
        (now + 599..=now + 600).contains(&started.expires_at),
        "{}",
        started.expires_at
    );
    let view = pending.view(&started.auth_id).unwrap();
    assert_eq!(flows.expires_at(&view), started.expires_at);
    assert_eq!(polling.unwrap().deadline, view.expires_at);
}

#[tokio::test(start_paused = true)]
async fn the_device_poller_waits_slows_down_and_stores_the_grant() {
    let w = World::new().await;
    let start = tokio::time::Instant::now();
    let pending = || {
        Some(crate::oauth::OAuthError::Rejected(
            "authorization_pending".into(),
        ))
    };
    let slow_down = Some(crate::oauth::OAuthError::Rejected("slow_down".into()));
    let outcome = run_device_flow(&w, vec![pending(), slow_down, pending(), None]).await;
    assert_eq!(outcome, FlowOutcome::Completed(key("bob")));
    // Polls every 5 s; after slow_down every 10 s (RFC 8628 section 3.5). Each poll takes the
    // fake's 50 ms.
    let gaps: Vec<u64> = w
        .endpoint
        .device_polls()
        .iter()
        .scan(start, |last, t| {
            let gap = t.duration_since(*last).as_secs();
            *last = *t;
            Some(gap)
        })
        .collect();
    assert_eq!(gaps, [5, 5, 10, 10]);
    let stored = GrantRepo::new(w.store.clone())
        .get(&key("bob"))
        .await
        .unwrap();
    assert!(stored.is_some(), "the grant is stored as a callback would");
}

#[tokio::test(start_paused = true)]
async fn the_device_poller_reports_denial_and_stops_at_expiry() {
    let w = World::new().await;
    let denied = Some(crate::oauth::OAuthError::Rejected("access_denied".into()));
    let outcome = run_device_flow(&w, vec![denied]).await;
    assert_eq!(outcome, FlowOutcome::Failed(FlowFailure::AccessDenied));
    // Nobody consents: the flow fails closed at its deadline (60 s), having polled until then.
    let w = World::new().await;
    let start = tokio::time::Instant::now();
    let outcome = run_device_flow(&w, vec![]).await;
    assert_eq!(outcome, FlowOutcome::Failed(FlowFailure::Expired));
    assert!(start.elapsed() >= Duration::from_secs(60));
    assert_eq!(
        w.endpoint.device_polls().len(),
        11,
        "every 5 s until the deadline"
    );
    assert!(
        GrantRepo::new(w.store.clone())
            .get(&key("bob"))
            .await
            .unwrap()
            .is_none()
    );
}

/// The providers a background round sees: `provider()`, with a keep-alive interval.
struct OneProvider(Arc<ProviderConfig>);

impl super::ahead::Providers for OneProvider {
    fn ids(&self) -> Vec<ProviderId> {
        vec![self.0.id.clone()]
    }

    fn get(&self, id: &ProviderId) -> Option<Arc<ProviderConfig>> {
        (*id == self.0.id).then(|| self.0.clone())
    }
}

const AHEAD: super::ahead::AheadSettings = super::ahead::AheadSettings {
    lead: 300,
    window: 900,
    tick: Duration::from_secs(30),
};

#[tokio::test(start_paused = true)]
async fn a_grant_in_use_is_refreshed_ahead_and_an_idle_one_is_not() {
    let w = World::new().await;
    let broker = w.broker();
    let providers = OneProvider(Arc::new(provider()));
    let clock: Arc<dyn Clock> = w.clock.clone();
    let mut rounds = super::ahead::Rounds::default();
    // A caller takes alice's token (refresh 1: at-1, an hour of life) and uses it.
    let p = provider();
    broker
        .usable_token(&p, &key("alice"), &Scopes::default(), 60)
        .await
        .unwrap()
        .unwrap();
    broker.touch(&key("alice"));
    assert_eq!(w.endpoint.refreshes(), 1);
    // Plenty of life left: a round does nothing.
    super::ahead::round(&broker, &providers, &clock, AHEAD, &mut rounds).await;
    assert_eq!(w.endpoint.refreshes(), 1);
    // Used again 50 minutes in; four minutes before expiry, six minutes later: refreshed ahead.
    // (Both clocks move: the cache tells its own refreshes apart by monotonic time.)
    w.clock.advance(3000);
    tokio::time::advance(Duration::from_secs(3000)).await;
    broker.touch(&key("alice"));
    w.clock.advance(360);
    tokio::time::advance(Duration::from_secs(360)).await;
    super::ahead::round(&broker, &providers, &clock, AHEAD, &mut rounds).await;
    assert_eq!(w.endpoint.refreshes(), 2);
    // The next caller gets the new token without calling the provider.
    let t = broker
        .usable_token(&p, &key("alice"), &Scopes::default(), 60)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.token.expose_secret(), "at-2");
    assert_eq!(w.endpoint.refreshes(), 2);
    // Not handed out since that refresh: idle, so its expiry is left alone.
    w.clock.advance(3600 - 240);
    tokio::time::advance(Duration::from_secs(3600 - 240)).await;
    super::ahead::round(&broker, &providers, &clock, AHEAD, &mut rounds).await;
    assert_eq!(w.endpoint.refreshes(), 2, "an idle grant is not refreshed");
}

#[tokio::test(start_paused = true)]
async fn keep_alive_refreshes_an_idle_grant_at_its_interval_once_across_replicas() {
    let w = World::new().await;
    let (a, b) = (w.broker(), w.broker());
    let providers = OneProvider(Arc::new(ProviderConfig {
        keep_alive_seconds: 86_400,
        ..provider()
    }));
    let clock: Arc<dyn Clock> = w.clock.clone();
    let (mut ra, mut rb) = (
        super::ahead::Rounds::default(),
        super::ahead::Rounds::default(),
    );
    // Written just now: nothing to keep alive.
    super::ahead::round(&a, &providers, &clock, AHEAD, &mut ra).await;
    assert_eq!(w.endpoint.refreshes(), 0);
    // A day idle: both replicas look, at the same time; one refresh.
    w.clock.advance(86_400 + 1);
    tokio::join!(
        super::ahead::round(&a, &providers, &clock, AHEAD, &mut ra),
        super::ahead::round(&b, &providers, &clock, AHEAD, &mut rb),
    );
    assert_eq!(w.endpoint.refreshes(), 1);
    assert_eq!(w.endpoint.reused(), 0);
    assert_eq!(w.stored_refresh_token().await.as_deref(), Some("rt-1"));
    // The other replica's next look finds it fresh.
    w.clock.advance(10_000);
    super::ahead::round(&b, &providers, &clock, AHEAD, &mut rb).await;
    assert_eq!(w.endpoint.refreshes(), 1);
    // Another day: again.
    w.clock.advance(86_400);
    super::ahead::round(&b, &providers, &clock, AHEAD, &mut rb).await;
    assert_eq!(w.endpoint.refreshes(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failing_background_refresh_backs_off_and_keeps_the_grant() {
    let w = World::new().await;
    let broker = w.broker();
    let providers = OneProvider(Arc::new(ProviderConfig {
        keep_alive_seconds: 3600,
        ..provider()
    }));
    let clock: Arc<dyn Clock> = w.clock.clone();
    let mut rounds = super::ahead::Rounds::default();
    w.endpoint
        .fail_next(crate::oauth::OAuthError::Unavailable("down".into()));
    w.clock.advance(3601);
    super::ahead::round(&broker, &providers, &clock, AHEAD, &mut rounds).await;
    assert_eq!(w.endpoint.refreshes(), 1);
    let g = broker.grant(&key("alice")).await.unwrap().expect("kept");
    assert_eq!(
        g.status,
        GrantStatus::Active,
        "a transient failure keeps the grant"
    );
    assert_eq!(w.stored_refresh_token().await.as_deref(), Some("rt-0"));
    // Within the back-off (a minute after the first failure), no new attempt however often
    // rounds run.
    for _ in 0..5 {
        w.clock.advance(10);
        super::ahead::round(&broker, &providers, &clock, AHEAD, &mut rounds).await;
    }
    assert_eq!(w.endpoint.refreshes(), 1, "backed off");
}

#[tokio::test(start_paused = true)]
async fn a_grant_past_its_maximum_age_needs_consent_and_its_lapse_is_announced() {
    let w = World::new().await;
    let (broker, mut changes) = w.audited_broker();
    let week: u32 = 7 * 86_400;
    let p = ProviderConfig {
        max_grant_age_seconds: week,
        ..provider()
    };
    let providers = OneProvider(Arc::new(p.clone()));
    let clock: Arc<dyn Clock> = w.clock.clone();
    let mut rounds = super::ahead::Rounds::default();
    let both = |secs: i64| {
        w.clock.advance(secs);
        tokio::time::advance(Duration::from_secs(secs.unsigned_abs()))
    };
    // Six and a half days after consent (within a tenth of the age): announced, once.
    both(6 * 86_400 + 43_200).await;
    super::ahead::round(&broker, &providers, &clock, AHEAD, &mut rounds).await;
    let due = changes.try_recv().expect("announced");
    assert_eq!(due.kind, crate::audit::GrantChangeKind::ReauthDue);
    assert_eq!(due.user, "alice");
    both(600).await;
    super::ahead::round(&broker, &providers, &clock, AHEAD, &mut rounds).await;
    assert!(changes.try_recv().is_err(), "announced once");
    // Still usable just before the lapse (and cached with an hour to live)...
    both(43_200 - 600 - 60).await;
    assert!(
        broker
            .usable_token(&p, &key("alice"), &Scopes::default(), 60)
            .await
            .unwrap()
            .is_some()
    );
    // ... and not after it, cached or not: the user consents again.
    both(120).await;
    assert!(
        broker
            .usable_token(&p, &key("alice"), &Scopes::default(), 60)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(w.endpoint.refreshes(), 1);
}

/// `GetProvider`'s answer sent back: what Valet filled in is filled in again from what the
/// draft now says; a value the operator changed is left for validation.
#[test]
fn an_update_fills_in_again_what_valet_filled_in() {
    use super::providers::drop_discovered;
    use crate::domain::{McpRegistration, McpServer, ProviderDraft, ProviderKind};
    let url = |s: &str| url::Url::parse(s).unwrap();
    let KindConfig::OAuth2(mut code) = provider().kind else {
        unreachable!()
    };
    code.issuer = Some("https://a.example".into());
    code.revocation_url = Some(url("https://a.example/revoke"));
    code.device_authorization_url = Some(url("https://a.example/device"));
    let oidc = ProviderConfig {
        kind: KindConfig::Oidc(code.clone()),
        ..provider()
    };
    let shown = |kind, issuer: &str| ProviderDraft {
        id: "idp".into(),
        kind: Some(kind),
        issuer: issuer.into(),
        auth_url: "https://idp.example/auth".into(),
        token_url: "https://idp.example/token".into(),
        revocation_url: "https://a.example/revoke".into(),
        device_authorization_url: "https://a.example/device".into(),
        default_scopes: vec!["notes.read".into()],
        egress_hosts: vec!["mcp.example".into()],
        ..Default::default()
    };
    // The same issuer: its endpoints are discovered again; those it may not advertise stay.
    let same = drop_discovered(&oidc, shown(ProviderKind::Oidc, "https://a.example"));
    assert_eq!((same.auth_url.as_str(), same.token_url.as_str()), ("", ""));
    assert_eq!(same.revocation_url, "https://a.example/revoke");
    // Another issuer: none of the old one's endpoints stay.
    let moved = drop_discovered(&oidc, shown(ProviderKind::Oidc, "https://b.example"));
    assert_eq!(
        (
            moved.revocation_url.as_str(),
            moved.device_authorization_url.as_str()
        ),
        ("", "")
    );
    // A changed endpoint is left for validation (which refuses it for oidc).
    let changed = drop_discovered(
        &oidc,
        ProviderDraft {
            token_url: "https://elsewhere.example/token".into(),
            ..shown(ProviderKind::Oidc, "https://a.example")
        },
    );
    assert_eq!(changed.token_url, "https://elsewhere.example/token");
    // Another kind: nothing dropped.
    let oauth2 = drop_discovered(&oidc, shown(ProviderKind::OAuth2, "https://a.example"));
    assert_eq!(oauth2.auth_url, "https://idp.example/auth");

    // An MCP server's host and scopes, filled in when the operator named none.
    code.mcp = Some(McpServer {
        server_url: url("https://mcp.example/mcp"),
        resource: "https://mcp.example/mcp".into(),
        issuer: "https://a.example".into(),
        registration: McpRegistration::Dynamic,
        registration_endpoint: None,
        scopes_supported: vec!["notes.read".into()],
        default_scopes: vec!["notes.read".into()],
    });
    let mcp = ProviderConfig {
        kind: KindConfig::Mcp(code),
        default_scopes: Scopes::parse("default_scopes", &["notes.read"]).unwrap(),
        egress_hosts: vec!["mcp.example".into()],
        ..provider()
    };
    let again = drop_discovered(&mcp, shown(ProviderKind::Mcp, "https://a.example"));
    assert!(again.default_scopes.is_empty() && again.egress_hosts.is_empty());
    assert_eq!(
        (again.issuer.as_str(), again.revocation_url.as_str()),
        ("", "")
    );
    let kept = drop_discovered(
        &mcp,
        ProviderDraft {
            egress_hosts: vec!["api.example".into()],
            ..shown(ProviderKind::Mcp, "https://a.example")
        },
    );
    assert_eq!(kept.egress_hosts, ["api.example"]);
}
