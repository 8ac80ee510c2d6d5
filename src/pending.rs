//! The pending-flow table: consent flows waiting for their callback, in memory only. Bounded in total and per user; each
//! `state` is taken at most once and only before its lease expires; a sweeper fails expired flows
//! closed. Finished flows keep their outcome for a while so `WaitForCompletion` can collect it.
//! Time is `tokio::time`, so tests can pause it.

use crate::domain::{AccountId, AgentId, GrantKey, Handout, ProviderId, Scopes, UserId};
use crate::secret::{SecretString, sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// A pending authorization: everything the callback needs to finish it.
#[derive(Debug)]
pub struct PendingFlow {
    pub provider: ProviderId,
    pub user: UserId,
    pub agent: Option<AgentId>,
    /// One of the user's several accounts (`None`: the default).
    pub account: Option<AccountId>,
    pub scopes: Scopes,
    pub handout: Handout,
    pub pkce_verifier: SecretString,
    pub nonce: Option<SecretString>,
    pub redirect_uri: String,
    /// The caller (API key name) that started it; only it may wait on it.
    pub owner: String,
    /// Device flow: what the user is shown.
    pub prompt: Option<DevicePrompt>,
}

/// What a device flow (RFC 8628) shows the user: the code to enter and where.
#[derive(Clone, PartialEq, Eq)]
pub struct DevicePrompt {
    pub user_code: String,
    pub verification_uri: String,
}

impl std::fmt::Debug for DevicePrompt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The user code binds an account to the flow until it is used: not for logs.
        f.debug_struct("DevicePrompt")
            .field("verification_uri", &self.verification_uri)
            .finish_non_exhaustive()
    }
}

impl PendingFlow {
    pub fn grant_key(&self) -> GrantKey {
        GrantKey {
            provider: self.provider.clone(),
            user: self.user.clone(),
            agent: self.agent.clone(),
            account: self.account.clone(),
        }
    }
}

/// Why a flow failed. Every variant's message is safe to show to users and agents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowFailure {
    #[error("the authorization flow expired before consent was given")]
    Expired,
    #[error("the user denied access at the provider")]
    AccessDenied,
    #[error("the provider returned an error: {0}")]
    ProviderError(String),
    #[error("the callback came from the wrong provider for this flow")]
    WrongProvider,
    #[error("the issuer in the callback is missing or does not match the provider (RFC 9207)")]
    IssuerMismatch,
    #[error("the ID token was rejected: {0}")]
    IdTokenRejected(String),
    #[error("the code exchange failed: {0}")]
    ExchangeFailed(String),
    /// Account substitution: another provider account consented than the grant's.
    #[error(
        "the consent was given by another account than the one this grant belongs to; nothing was stored (revoke the grant first to connect another account)"
    )]
    AccountMismatch,
    /// Consent binding: the operator's app vouched for another user than the flow's.
    #[error(
        "the consent was completed by another user than the one the flow was started for; nothing was stored"
    )]
    UserMismatch,
}

impl FlowFailure {
    /// The stable reason name (as in the proto's `ErrorReason`), for the audit trail.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Expired => "FLOW_EXPIRED",
            Self::AccessDenied => "ACCESS_DENIED",
            Self::ProviderError(_) => "PROVIDER_ERROR",
            Self::WrongProvider => "WRONG_PROVIDER",
            Self::IssuerMismatch => "ISSUER_MISMATCH",
            Self::IdTokenRejected(_) => "ID_TOKEN_REJECTED",
            Self::ExchangeFailed(_) => "EXCHANGE_FAILED",
            Self::AccountMismatch => "ACCOUNT_MISMATCH",
            Self::UserMismatch => "USER_MISMATCH",
        }
    }
}

/// Where a flow stands, as watchers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowOutcome {
    Pending,
    Completed(GrantKey),
    Failed(FlowFailure),
}

/// A flow's outcome as it changes, for its waiters: far smaller than a watch channel (a pending
/// flow holds one, and a table holds 100,000 of them).
#[derive(Debug)]
pub struct OutcomeCell {
    value: Mutex<FlowOutcome>,
    changed: Notify,
}

impl OutcomeCell {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            value: Mutex::new(FlowOutcome::Pending),
            changed: Notify::new(),
        })
    }

    /// The outcome now.
    pub fn get(&self) -> FlowOutcome {
        self.value
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, outcome: FlowOutcome) {
        *self
            .value
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = outcome;
        self.changed.notify_waiters();
    }

    /// Resolves once the flow is no longer pending, with its outcome.
    pub async fn finished(&self) -> FlowOutcome {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check: a change between the two is not missed.
            changed.as_mut().enable();
            let now = self.get();
            if now != FlowOutcome::Pending {
                return now;
            }
            changed.await;
        }
    }
}

/// Why `take` refused a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TakeError {
    #[error("unknown or already used state")]
    Unknown,
    #[error("the flow expired")]
    Expired,
    #[error("the state was issued for another provider")]
    WrongProvider,
}

/// Why `insert` refused a flow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    #[error("too many pending authorization flows for this user (limit {0})")]
    UserFull(usize),
    /// One caller may hold at most half of a user's pending flows, so it cannot lock others out.
    #[error(
        "this caller has too many pending authorization flows for this user (limit {0}); finish or let one expire"
    )]
    CallerFull(usize),
    #[error("too many pending authorization flows in total (limit {0})")]
    TableFull(usize),
    /// One caller may hold at most half of the table, so it cannot lock other callers out (by
    /// starting flows for made-up users).
    #[error(
        "this caller has too many pending authorization flows (limit {0}, half of all); finish or let some expire"
    )]
    CallerTableFull(usize),
    /// The flows' size, for flows asking for many long scopes.
    #[error(
        "this caller's pending authorization flows take too much memory (limit {0} KiB; they ask for many long scopes): finish or let some expire, or ask for fewer scopes"
    )]
    TooLarge(usize),
    #[error(
        "pending authorization flows take too much memory in all (limit {0} KiB); finish or let some expire"
    )]
    TableTooLarge(usize),
}

/// What the table may hold per flow on average: twice the design's bound on a pending flow's
/// memory, so ordinary flows meet the count limit first.
const BYTES_PER_FLOW: usize = 4096;
/// The smallest memory budget, so a small table still takes a flow of the largest request.
const MIN_BUDGET: usize = 256 << 10;

/// A flow's footprint as the table counts it: a fixed part, and what grows with the request (its
/// consent link, scopes, caller and user).
fn footprint(auth_url: &ConsentLink, scopes: &Scopes, owner: &str, user: &UserId) -> usize {
    const FIXED: usize = 768;
    let scope_bytes: usize = scopes.iter().map(|s| s.len() + 32).sum();
    FIXED + auth_url.as_str().len() + 2 * scope_bytes + owner.len() + user.as_str().len()
}

#[derive(Debug, Clone, Copy)]
pub struct PendingLimits {
    pub ttl: Duration,
    pub max_total: usize,
    pub max_per_user: usize,
    /// How long a finished flow's outcome stays collectable.
    pub keep_outcome: Duration,
}

/// A consent link: handed to the caller that started the flow, for its user to follow. Its
/// query holds the flow's `state`, so `Debug` shows it without one.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsentLink(Box<str>);

impl ConsentLink {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0.into_string()
    }
}

impl From<String> for ConsentLink {
    fn from(s: String) -> Self {
        Self(s.into_boxed_str())
    }
}

impl From<&str> for ConsentLink {
    fn from(s: &str) -> Self {
        Self(s.into())
    }
}

impl std::fmt::Debug for ConsentLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match crate::net::shown_text(&self.0) {
            Some(u) => write!(f, "ConsentLink({u})"),
            None => f.write_str("ConsentLink(..)"),
        }
    }
}

/// What a caller may see of a flow it owns.
#[derive(Debug, Clone)]
pub struct FlowView {
    /// The caller that started it.
    pub owner: String,
    pub auth_url: ConsentLink,
    pub expires_at: Instant,
    pub outcome: Arc<OutcomeCell>,
    pub handout: Handout,
    pub scopes: Scopes,
    pub prompt: Option<DevicePrompt>,
}

/// The part of a `PendingFlow` its entry does not already hold (the rest is put back by `take`):
/// each field is kept once.
#[derive(Debug)]
struct Parked {
    provider: ProviderId,
    agent: Option<AgentId>,
    account: Option<AccountId>,
    pkce_verifier: SecretString,
    nonce: Option<SecretString>,
    redirect_uri: String,
}

/// A flow the sweeper failed at its deadline (no callback came): who started it, for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub owner: String,
    pub provider: ProviderId,
    pub user: UserId,
    pub agent: Option<AgentId>,
}

#[derive(Debug)]
struct Entry {
    /// Taken once, by the callback (or failed by the sweeper).
    flow: Option<Parked>,
    user: UserId,
    owner: String,
    handout: Handout,
    scopes: Scopes,
    /// Boxed: no spare capacity kept for the table's lifetime.
    auth_url: ConsentLink,
    deadline: Instant,
    forget_at: Instant,
    outcome: Arc<OutcomeCell>,
    /// The digest of the request that started it, for joining repeats.
    request: Option<[u8; 32]>,
    prompt: Option<DevicePrompt>,
}

/// What `insert_or_join` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    New(Instant),
    /// The same request already has a live flow: this one.
    Existing {
        auth_id: String,
        auth_url: ConsentLink,
        deadline: Instant,
        prompt: Option<DevicePrompt>,
    },
}

#[derive(Debug, Default)]
struct Inner {
    /// sha256(state) → auth_id; the state is not kept as a key (only inside the consent link).
    by_state: HashMap<[u8; 32], Arc<str>>,
    /// One allocation of each auth id, shared by the three maps.
    by_auth: HashMap<Arc<str>, Entry>,
    /// request digest → auth_id of its live flow.
    by_request: HashMap<[u8; 32], Arc<str>>,
    per_user: HashMap<UserId, usize>,
    /// (owner, user) → live flows.
    per_caller: HashMap<(String, UserId), usize>,
    /// owner → live flows, for any user, and their footprint in bytes.
    per_owner: HashMap<String, (usize, usize)>,
    /// The footprint of every live flow.
    bytes: usize,
    pending: usize,
    /// Flows that end before their deadline says (a device code that expires first; its poller
    /// ends the flow then): when they end, for every view of them. Few, so not a field of every
    /// entry.
    ends_early: HashMap<Arc<str>, Instant>,
    /// Flows failed at their deadline and not yet handed to the sweeper's caller for their
    /// audit events (a sweep making room for a new flow queues them here too).
    expired: Vec<Expired>,
}

/// A taken flow plus the handle to report its outcome.
#[derive(Debug)]
pub struct Taken {
    pub flow: PendingFlow,
    pub auth_id: String,
    reporter: Arc<OutcomeCell>,
}

impl Drop for Taken {
    /// Never left pending: a callback cut off before it finished (the browser gone mid-exchange,
    /// the daemon stopping) fails the flow, so its waiters learn it now, not at its expiry (its
    /// state is spent, so it could not finish later).
    fn drop(&mut self) {
        if matches!(self.reporter.get(), FlowOutcome::Pending) {
            self.reporter
                .set(FlowOutcome::Failed(FlowFailure::ExchangeFailed(
                    "the callback ended before the code exchange finished; start the flow again"
                        .into(),
                )));
        }
    }
}

impl Taken {
    pub fn finish(&self, outcome: FlowOutcome) {
        self.reporter.set(outcome);
    }
}

#[derive(Debug)]
pub struct PendingFlows {
    limits: PendingLimits,
    inner: Mutex<Inner>,
}

impl PendingFlows {
    /// Flows waiting for their callback.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).pending
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn new(limits: PendingLimits) -> Self {
        Self {
            limits,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn limits(&self) -> PendingLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a flow under `state` and `auth_id`; `auth_url` is what the owner is shown again.
    pub fn insert(
        &self,
        state: &str,
        auth_id: &str,
        auth_url: ConsentLink,
        flow: PendingFlow,
    ) -> Result<Instant, InsertError> {
        match self.insert_or_join(state, auth_id, auth_url, flow, None)? {
            Inserted::New(deadline) | Inserted::Existing { deadline, .. } => Ok(deadline),
        }
    }

    /// Like `insert`, but when a live flow was started for the same `request` (a digest of who
    /// asked for what), returns that one instead: a retried or resumed call never multiplies
    /// consent links.
    pub fn insert_or_join(
        &self,
        state: &str,
        auth_id: &str,
        auth_url: ConsentLink,
        flow: PendingFlow,
        request: Option<[u8; 32]>,
    ) -> Result<Inserted, InsertError> {
        let now = Instant::now();
        let mut inner = self.lock();
        if let Some(existing) = request.and_then(|r| Self::live_for(&inner, &r, now)) {
            return Ok(existing);
        }
        if inner.pending >= self.limits.max_total {
            Self::sweep_locked(&mut inner, now);
            if inner.pending >= self.limits.max_total {
                return Err(InsertError::TableFull(self.limits.max_total));
            }
        }
        let user_count = inner.per_user.get(&flow.user).copied().unwrap_or(0);
        if user_count >= self.limits.max_per_user {
            return Err(InsertError::UserFull(self.limits.max_per_user));
        }
        let caller_limit = self.limits.max_per_user.div_ceil(2);
        let slot = (flow.owner.clone(), flow.user.clone());
        let caller_count = inner.per_caller.get(&slot).copied().unwrap_or(0);
        if caller_count >= caller_limit {
            return Err(InsertError::CallerFull(caller_limit));
        }
        let owner_limit = self.limits.max_total.div_ceil(2);
        let (owner_count, owner_bytes) =
            inner.per_owner.get(&flow.owner).copied().unwrap_or((0, 0));
        if owner_count >= owner_limit {
            return Err(InsertError::CallerTableFull(owner_limit));
        }
        // Memory as well as numbers: flows asking for many long scopes are far larger than
        // the table's budget per flow, so they are counted by size too.
        let size = footprint(&auth_url, &flow.scopes, &flow.owner, &flow.user);
        let budget = self
            .limits
            .max_total
            .saturating_mul(BYTES_PER_FLOW)
            .max(MIN_BUDGET);
        if inner.bytes + size > budget {
            return Err(InsertError::TableTooLarge(budget >> 10));
        }
        if owner_bytes + size > budget / 2 {
            return Err(InsertError::TooLarge((budget / 2) >> 10));
        }
        inner.per_caller.insert(slot, caller_count + 1);
        inner
            .per_owner
            .insert(flow.owner.clone(), (owner_count + 1, owner_bytes + size));
        inner.bytes += size;
        let deadline = now + self.limits.ttl;
        inner.per_user.insert(flow.user.clone(), user_count + 1);
        inner.pending += 1;
        let auth_id: Arc<str> = Arc::from(auth_id);
        inner
            .by_state
            .insert(sha256(state.as_bytes()), auth_id.clone());
        if let Some(r) = request {
            inner.by_request.insert(r, auth_id.clone());
        }
        let PendingFlow {
            provider,
            user,
            agent,
            account,
            scopes,
            handout,
            pkce_verifier,
            nonce,
            redirect_uri,
            owner,
            prompt,
        } = flow;
        inner.by_auth.insert(
            auth_id,
            Entry {
                user,
                owner,
                handout,
                scopes,
                prompt,
                flow: Some(Parked {
                    provider,
                    agent,
                    account,
                    pkce_verifier,
                    nonce,
                    redirect_uri,
                }),
                auth_url,
                deadline,
                forget_at: deadline + self.limits.keep_outcome,
                outcome: OutcomeCell::new(),
                request,
            },
        );
        Ok(Inserted::New(deadline))
    }

    /// The live flow started for `request`, if any.
    fn live_for(inner: &Inner, request: &[u8; 32], now: Instant) -> Option<Inserted> {
        let auth_id = inner.by_request.get(request)?;
        let e = inner.by_auth.get(auth_id)?;
        (e.flow.is_some() && now < e.deadline).then(|| Inserted::Existing {
            auth_id: auth_id.to_string(),
            auth_url: e.auth_url.clone(),
            deadline: Self::ends(inner, auth_id, e),
            prompt: e.prompt.clone(),
        })
    }

    /// The live flow started for `request`, if any (`Inserted::Existing`).
    pub fn live(&self, request: &[u8; 32]) -> Option<Inserted> {
        Self::live_for(&self.lock(), request, Instant::now())
    }

    /// Takes the flow for `state` once, before its deadline, on the provider it was issued for.
    /// A state presented at the wrong provider is consumed and its flow fails closed.
    pub fn take(&self, state: &str, provider: &ProviderId) -> Result<Taken, TakeError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let auth_id = inner
            .by_state
            .remove(&sha256(state.as_bytes()))
            .ok_or(TakeError::Unknown)?;
        let (flow, reporter, expired, request, size) = {
            let entry = inner.by_auth.get_mut(&auth_id).ok_or(TakeError::Unknown)?;
            let size = footprint(&entry.auth_url, &entry.scopes, &entry.owner, &entry.user);
            let parked = entry.flow.take().ok_or(TakeError::Unknown)?;
            let flow = PendingFlow {
                provider: parked.provider,
                user: entry.user.clone(),
                agent: parked.agent,
                account: parked.account,
                scopes: entry.scopes.clone(),
                handout: entry.handout,
                pkce_verifier: parked.pkce_verifier,
                nonce: parked.nonce,
                redirect_uri: parked.redirect_uri,
                owner: entry.owner.clone(),
                prompt: entry.prompt.clone(),
            };
            entry.forget_at = now + self.limits.keep_outcome;
            (
                flow,
                entry.outcome.clone(),
                now >= entry.deadline,
                entry.request,
                size,
            )
        };
        if let Some(r) = request {
            inner.by_request.remove(&r);
        }
        Self::release_locked(&mut inner, &flow.owner, &flow.user, size);
        if expired {
            reporter.set(FlowOutcome::Failed(FlowFailure::Expired));
            return Err(TakeError::Expired);
        }
        if &flow.provider != provider {
            reporter.set(FlowOutcome::Failed(FlowFailure::WrongProvider));
            return Err(TakeError::WrongProvider);
        }
        Ok(Taken {
            flow,
            auth_id: auth_id.to_string(),
            reporter,
        })
    }

    /// Says that the flow `auth_id` ends at `ends`, before its deadline (a device code that
    /// expires first: its poller ends the flow then). Only what the flow's views say changes; the
    /// table keeps its deadline, so the poller, not the sweeper, ends it.
    pub fn ends_early(&self, auth_id: &str, ends: Instant) {
        let mut inner = self.lock();
        if let Some((key, entry)) = inner.by_auth.get_key_value(auth_id)
            && ends < entry.deadline
        {
            let key = key.clone();
            inner.ends_early.insert(key, ends);
        }
    }

    /// When the flow of `entry` ends, as its views say.
    fn ends(inner: &Inner, auth_id: &str, entry: &Entry) -> Instant {
        inner
            .ends_early
            .get(auth_id)
            .copied()
            .unwrap_or(entry.deadline)
    }

    /// The flow `auth_id`, if it exists; the policy decides who may see it (`FlowView::owner`).
    pub fn view(&self, auth_id: &str) -> Option<FlowView> {
        let inner = self.lock();
        let entry = inner.by_auth.get(auth_id)?;
        Some(FlowView {
            owner: entry.owner.clone(),
            auth_url: entry.auth_url.clone(),
            expires_at: Self::ends(&inner, auth_id, entry),
            outcome: entry.outcome.clone(),
            handout: entry.handout,
            scopes: entry.scopes.clone(),
            prompt: entry.prompt.clone(),
        })
    }

    /// Whether the flow `auth_id` still waits for its consent (its callback has not come) and
    /// `owner` asking for `handout` would join it.
    pub fn waiting(&self, auth_id: &str, owner: &str, handout: Handout) -> bool {
        let inner = self.lock();
        inner.by_auth.get(auth_id).is_some_and(|e| {
            e.flow.is_some()
                && e.deadline > Instant::now()
                && e.owner == owner
                && e.handout == handout
        })
    }

    /// Number of flows still waiting for a callback.
    pub fn pending(&self) -> usize {
        self.lock().pending
    }

    /// Fails expired flows closed and forgets old outcomes; returns the flows it failed (and
    /// those a sweep making room for a new flow failed since), for their audit events.
    pub fn sweep(&self) -> Vec<Expired> {
        let mut inner = self.lock();
        Self::sweep_locked(&mut inner, Instant::now());
        std::mem::take(&mut inner.expired)
    }

    fn release_locked(inner: &mut Inner, owner: &str, user: &UserId, size: usize) {
        inner.pending = inner.pending.saturating_sub(1);
        if let Some(n) = inner.per_user.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                inner.per_user.remove(user);
            }
        }
        let slot = (owner.to_owned(), user.clone());
        if let Some(n) = inner.per_caller.get_mut(&slot) {
            *n -= 1;
            if *n == 0 {
                inner.per_caller.remove(&slot);
            }
        }
        inner.bytes = inner.bytes.saturating_sub(size);
        if let Some((n, bytes)) = inner.per_owner.get_mut(owner) {
            *n -= 1;
            *bytes = bytes.saturating_sub(size);
            if *n == 0 {
                inner.per_owner.remove(owner);
            }
        }
    }

    fn sweep_locked(inner: &mut Inner, now: Instant) {
        let mut expired = Vec::new();
        for entry in inner.by_auth.values_mut() {
            if now < entry.deadline {
                continue;
            }
            if let Some(parked) = entry.flow.take() {
                entry.outcome.set(FlowOutcome::Failed(FlowFailure::Expired));
                let size = footprint(&entry.auth_url, &entry.scopes, &entry.owner, &entry.user);
                expired.push((
                    Expired {
                        owner: entry.owner.clone(),
                        provider: parked.provider,
                        user: entry.user.clone(),
                        agent: parked.agent,
                    },
                    size,
                ));
            }
        }
        for (e, size) in &expired {
            Self::release_locked(inner, &e.owner, &e.user, *size);
        }
        inner.expired.extend(expired.into_iter().map(|(e, _)| e));
        inner.by_auth.retain(|_, e| now < e.forget_at);
        let live = &inner.by_auth;
        inner
            .by_state
            .retain(|_, auth_id| live.get(auth_id).is_some_and(|e| e.flow.is_some()));
        inner
            .by_request
            .retain(|_, auth_id| live.get(auth_id).is_some_and(|e| e.flow.is_some()));
        inner
            .ends_early
            .retain(|auth_id, _| live.contains_key(auth_id));
    }

    /// Runs `sweep` every `every` until `stop` resolves; `ended` is told of each flow it failed.
    pub async fn run_sweeper(
        self: Arc<Self>,
        every: Duration,
        stop: impl std::future::Future,
        ended: impl Fn(&Expired),
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {
                    let expired = self.sweep();
                    if !expired.is_empty() {
                        tracing::debug!(expired = expired.len(), "swept expired authorization flows");
                    }
                    for e in &expired {
                        ended(e);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(user: &str, provider: &str) -> PendingFlow {
        PendingFlow {
            provider: ProviderId::parse(provider).unwrap(),
            user: UserId::parse(user).unwrap(),
            agent: None,
            account: None,
            scopes: Scopes::default(),
            handout: Handout::Token,
            pkce_verifier: SecretString::from("v"),
            nonce: None,
            redirect_uri: "http://127.0.0.1/cb".into(),
            owner: "agent".into(),
            prompt: None,
        }
    }

    fn table(max_total: usize, max_per_user: usize) -> PendingFlows {
        PendingFlows::new(PendingLimits {
            ttl: Duration::from_secs(60),
            max_total,
            max_per_user,
            keep_outcome: Duration::from_secs(30),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn state_is_taken_once() {
        let t = table(10, 10);
        t.insert("s1", "a1", "url".into(), flow("u", "p")).unwrap();
        let p = ProviderId::parse("p").unwrap();
        assert!(t.take("s1", &p).is_ok());
        assert_eq!(t.take("s1", &p).err(), Some(TakeError::Unknown));
        assert_eq!(t.pending(), 0);
    }

    /// Flows are bounded by size as well as number: one asking for many long scopes takes its
    /// caller's share of the table's memory budget (4 KiB a flow) sooner, and is refused with
    /// nothing added; released ones free it.
    #[tokio::test(start_paused = true)]
    async fn flows_are_bounded_by_size_too() {
        // A budget of 1000 x 4 KiB, half of it per caller: three flows with 600 KiB consent
        // links fit one caller's share, a fourth does not (though far below every count).
        let t = table(1000, 16);
        let link = || {
            ConsentLink::from(format!(
                "https://idp.example/auth?x={}",
                "l".repeat(600 << 10)
            ))
        };
        for i in 0..3 {
            t.insert(
                &format!("s{i}"),
                &format!("a{i}"),
                link(),
                flow(&format!("u{i}"), "p"),
            )
            .unwrap();
        }
        assert!(matches!(
            t.insert("s3", "a3", link(), flow("u3", "p")),
            Err(InsertError::TooLarge(_))
        ));
        assert_eq!(t.pending(), 3, "nothing was added");
        // Another caller has its own share; a small flow of the first still fits.
        let other = PendingFlow {
            owner: "agent-b".into(),
            ..flow("u4", "p")
        };
        t.insert("s4", "a4", link(), other).unwrap();
        t.insert("s5", "a5", "url".into(), flow("u5", "p")).unwrap();
        // Released: the share is free again.
        let p = ProviderId::parse("p").unwrap();
        drop(t.take("s0", &p).unwrap());
        t.insert("s3", "a3", link(), flow("u3", "p")).unwrap();
    }

    /// A taken flow whose callback ends without finishing it (the exchange cut off) fails at once:
    /// its waiters do not wait for its expiry. One that finished keeps its outcome.
    #[tokio::test(start_paused = true)]
    async fn a_taken_flow_never_stays_pending() {
        let t = table(10, 10);
        let p = ProviderId::parse("p").unwrap();
        t.insert("s1", "a1", "url".into(), flow("u", "p")).unwrap();
        let view = t.view("a1").unwrap();
        drop(t.take("s1", &p).unwrap());
        assert!(
            matches!(
                view.outcome.get(),
                FlowOutcome::Failed(FlowFailure::ExchangeFailed(_))
            ),
            "{:?}",
            view.outcome.get()
        );
        t.insert("s2", "a2", "url".into(), flow("u", "p")).unwrap();
        let view = t.view("a2").unwrap();
        let taken = t.take("s2", &p).unwrap();
        taken.finish(FlowOutcome::Failed(FlowFailure::AccessDenied));
        drop(taken);
        assert_eq!(
            view.outcome.get(),
            FlowOutcome::Failed(FlowFailure::AccessDenied)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn expired_state_is_refused_and_reported() {
        let t = table(10, 10);
        t.insert("s1", "a1", "url".into(), flow("u", "p")).unwrap();
        let view = t.view("a1").unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        let p = ProviderId::parse("p").unwrap();
        assert_eq!(t.take("s1", &p).err(), Some(TakeError::Expired));
        assert_eq!(
            view.outcome.get(),
            FlowOutcome::Failed(FlowFailure::Expired)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sweeper_fails_expired_flows_closed() {
        let t = table(10, 10);
        t.insert("s1", "a1", "url".into(), flow("u", "p")).unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(t.sweep().len(), 1);
        assert_eq!(t.pending(), 0);
        let p = ProviderId::parse("p").unwrap();
        assert_eq!(t.take("s1", &p).err(), Some(TakeError::Unknown));
        assert!(t.view("a1").is_some(), "outcome kept for a while");
        tokio::time::advance(Duration::from_secs(31)).await;
        t.sweep();
        assert!(t.view("a1").is_none(), "then forgotten");
    }

    /// A full table sweeps to make room for a new flow: what that sweep failed is still handed
    /// to the sweeper's caller (for its audit event), once.
    #[tokio::test(start_paused = true)]
    async fn flows_a_full_table_swept_are_reported_by_the_next_sweep() {
        let t = table(1, 10);
        t.insert("s1", "a1", "url".into(), flow("u", "p")).unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        t.insert("s2", "a2", "url".into(), flow("v", "p")).unwrap();
        let swept = t.sweep();
        assert_eq!(
            swept.iter().map(|e| e.user.as_str()).collect::<Vec<_>>(),
            ["u"]
        );
        assert!(t.sweep().is_empty(), "reported once");
    }

    #[tokio::test(start_paused = true)]
    async fn wrong_provider_consumes_the_state() {
        let t = table(10, 10);
        t.insert("s1", "a1", "url".into(), flow("u", "p")).unwrap();
        let other = ProviderId::parse("q").unwrap();
        assert_eq!(t.take("s1", &other).err(), Some(TakeError::WrongProvider));
        let p = ProviderId::parse("p").unwrap();
        assert_eq!(t.take("s1", &p).err(), Some(TakeError::Unknown));
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_per_user_per_caller_and_in_total() {
        let by = |owner: &str, user: &str| PendingFlow {
            owner: owner.into(),
            ..flow(user, "p")
        };
        let t = table(3, 2);
        t.insert("s1", "a1", "u".into(), by("agent-a", "alice"))
            .unwrap();
        // One caller holds at most half of a user's flows: another can still start one.
        assert_eq!(
            t.insert("s2", "a2", "u".into(), by("agent-a", "alice")),
            Err(InsertError::CallerFull(1))
        );
        t.insert("s2", "a2", "u".into(), by("agent-b", "alice"))
            .unwrap();
        assert_eq!(
            t.insert("s3", "a3", "u".into(), by("agent-c", "alice")),
            Err(InsertError::UserFull(2))
        );
        t.insert("s4", "a4", "u".into(), flow("bob", "p")).unwrap();
        assert_eq!(
            t.insert("s5", "a5", "u".into(), flow("carol", "p")),
            Err(InsertError::TableFull(3))
        );
        // One caller holds at most half of the table, whatever users it names; released flows
        // free its share.
        let t = table(4, 4);
        t.insert("s1", "a1", "u".into(), by("agent-a", "u1"))
            .unwrap();
        t.insert("s2", "a2", "u".into(), by("agent-a", "u2"))
            .unwrap();
        assert_eq!(
            t.insert("s3", "a3", "u".into(), by("agent-a", "u3")),
            Err(InsertError::CallerTableFull(2))
        );
        t.insert("s3", "a3", "u".into(), by("agent-b", "u3"))
            .unwrap();
        assert_eq!(t.pending(), 3, "nothing was added for the refused flow");
        tokio::time::advance(Duration::from_secs(3600)).await;
        t.sweep();
        t.insert("s4", "a4", "u".into(), by("agent-a", "u4"))
            .unwrap();
    }

    #[test]
    fn a_consent_link_debugs_without_its_state() {
        let link = ConsentLink::from("https://idp.example/auth?client_id=c&state=st-canary-1");
        let out = format!(
            "{:?}",
            Inserted::Existing {
                auth_id: "a".into(),
                auth_url: link.clone(),
                deadline: Instant::now(),
                prompt: None,
            }
        );
        assert!(
            !out.contains("canary") && out.contains("https://idp.example/auth"),
            "{out}"
        );
        assert!(
            link.as_str().contains("state=st-canary-1"),
            "the link itself is whole"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_request_joins_its_live_flow_until_it_ends() {
        let t = table(10, 10);
        let same = Some([7u8; 32]);
        let first = t.insert_or_join("s1", "a1", "u1".into(), flow("u", "p"), same);
        assert!(matches!(first, Ok(Inserted::New(_))));
        match t.insert_or_join("s2", "a2", "u2".into(), flow("u", "p"), same) {
            Ok(Inserted::Existing {
                auth_id, auth_url, ..
            }) => {
                assert_eq!((auth_id.as_str(), auth_url.as_str()), ("a1", "u1"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t.pending(), 1, "nothing was added");
        assert!(matches!(
            t.take("s2", &ProviderId::parse("p").unwrap()),
            Err(TakeError::Unknown)
        ));
        tokio::time::advance(Duration::from_secs(61)).await;
        let again = t.insert_or_join("s3", "a3", "u3".into(), flow("u", "p"), same);
        assert!(
            matches!(again, Ok(Inserted::New(_))),
            "an expired flow is not joined"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_view_names_its_owner() {
        let t = table(10, 10);
        t.insert("s1", "a1", "url".into(), flow("u", "p")).unwrap();
        assert_eq!(t.view("a1").unwrap().owner, "agent");
        assert!(t.view("nope").is_none());
    }
}
