//! Background refresh, so a burst of agent calls never waits on the provider and idle grants
//! survive providers that revoke unused refresh tokens:
//!
//! - refresh ahead: a grant handed out in the last `window` whose token has less than `lead`
//!   left is refreshed now (`TokenBroker::usable_token` with that `min_ttl`: the usual single
//!   flight, store claim and rotation; a replica that finds the token another stored takes it);
//! - keep-alive: a provider's grants not written for its `keep_alive_seconds` are refreshed
//!   (`TokenBroker::keep_alive` re-checks under the lock and claim, so replicas refresh once).
//!
//! Each round waits `tick` plus up to a tenth of it at random; at most `PER_PROVIDER` refreshes
//! per provider per round; a grant whose refresh failed waits 1, 2, 4 … 60 minutes before the
//! next try. A failure never deletes a grant (only the provider's `invalid_grant`, or its
//! own spelling of it, marks one).

use super::broker::{GrantQuery, TokenBroker};
use super::providers::ProviderRegistry;
use crate::clock::Clock;
use crate::domain::{GrantKey, GrantStatus, ProviderConfig, ProviderId};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Refreshes per provider per round.
const PER_PROVIDER: usize = 20;
/// The longest back-off after failures (seconds).
const MAX_BACKOFF: i64 = 3600;

#[derive(Debug, Clone, Copy)]
pub struct AheadSettings {
    /// Refresh when less than this many seconds are left; 0 turns refresh-ahead off.
    pub lead: i64,
    /// "Used recently": handed out within this many seconds.
    pub window: i64,
    pub tick: Duration,
}

/// The providers a round looks at (the registry; a fixed set in tests).
pub(super) trait Providers: Send + Sync {
    fn ids(&self) -> Vec<ProviderId>;
    fn get(&self, id: &ProviderId) -> Option<Arc<ProviderConfig>>;
}

impl Providers for ProviderRegistry {
    fn ids(&self) -> Vec<ProviderId> {
        ProviderRegistry::ids(self).unwrap_or_default()
    }

    fn get(&self, id: &ProviderId) -> Option<Arc<ProviderConfig>> {
        ProviderRegistry::get(self, id).ok()
    }
}

/// What one background task remembers between rounds.
#[derive(Debug, Default)]
pub(super) struct Rounds {
    backoff: Backoff,
    /// When each provider's grants were last looked at for keep-alive and maximum age.
    kept_alive: HashMap<ProviderId, i64>,
    /// Grants (with the time they lapse) whose coming lapse was announced.
    announced: std::collections::HashSet<(GrantKey, i64)>,
}

/// Failed grants and when each may be tried again.
#[derive(Debug, Default)]
struct Backoff(HashMap<GrantKey, (u32, i64)>);

impl Backoff {
    fn ready(&self, key: &GrantKey, now: i64) -> bool {
        self.0.get(key).is_none_or(|(_, next)| *next <= now)
    }

    fn record<T>(&mut self, key: GrantKey, now: i64, result: &Result<T, super::Error>) {
        match result {
            Ok(_) => {
                self.0.remove(&key);
            }
            Err(e) => {
                let n = self.0.get(&key).map_or(0, |(n, _)| n + 1);
                let wait = (60i64 << n.min(6)).min(MAX_BACKOFF);
                tracing::warn!(
                    provider = %key.provider,
                    "background refresh failed; next try in {wait}s (the grant is kept): {e}"
                );
                self.0.insert(key, (n, now + wait));
            }
        }
    }
}

pub(super) async fn run(
    broker: TokenBroker,
    providers: Arc<ProviderRegistry>,
    clock: Arc<dyn Clock>,
    s: AheadSettings,
    stop: impl Future,
) {
    tokio::pin!(stop);
    let mut rounds = Rounds::default();
    loop {
        let jitter = rand_fraction() * s.tick.as_secs_f64() / 10.0;
        // A round is dropped at shutdown too: no refresh starts after it, and the ones under
        // way finish on their own tasks, which shutdown waits for.
        let next = async {
            tokio::time::sleep(s.tick + Duration::from_secs_f64(jitter)).await;
            round(&broker, &*providers, &clock, s, &mut rounds).await;
        };
        tokio::select! {
            biased;
            _ = &mut stop => return,
            () = next => {}
        }
    }
}

/// One round: refresh-ahead, then keep-alive, then the cache is swept.
pub(super) async fn round(
    broker: &TokenBroker,
    providers: &dyn Providers,
    clock: &Arc<dyn Clock>,
    s: AheadSettings,
    rounds: &mut Rounds,
) {
    if s.lead > 0 {
        ahead(broker, providers, clock, s, &mut rounds.backoff).await;
    }
    keep_alive(broker, providers, clock, rounds).await;
    broker.sweep_cache();
}

async fn ahead(
    broker: &TokenBroker,
    providers: &dyn Providers,
    clock: &Arc<dyn Clock>,
    s: AheadSettings,
    backoff: &mut Backoff,
) {
    let mut per_provider: HashMap<ProviderId, usize> = HashMap::new();
    // Enough life left to outlast the next round.
    let min_ttl = s.lead + i64::try_from(s.tick.as_secs()).unwrap_or(i64::MAX / 4);
    for (key, scopes) in broker.due_ahead(s.window, s.lead) {
        let now = clock.now_unix();
        let done = per_provider.entry(key.provider.clone()).or_default();
        if *done >= PER_PROVIDER || !backoff.ready(&key, now) {
            continue;
        }
        *done += 1;
        let Some(provider) = providers.get(&key.provider) else {
            continue;
        };
        let result = broker.usable_token(&provider, &key, &scopes, min_ttl).await;
        backoff.record(key, now, &result);
    }
}

/// Keep-alive and maximum age: each provider with either looks at its grants ten times per
/// interval (at most once a minute), refreshes the idle ones and announces the ones about to
/// lapse (a tenth of the maximum age, at most three days, before).
async fn keep_alive(
    broker: &TokenBroker,
    providers: &dyn Providers,
    clock: &Arc<dyn Clock>,
    rounds: &mut Rounds,
) {
    let Rounds {
        backoff,
        kept_alive: last,
        announced,
    } = rounds;
    for id in providers.ids() {
        let Some(provider) = providers.get(&id) else {
            continue;
        };
        let every = i64::from(provider.keep_alive_seconds);
        let max_age = i64::from(provider.max_grant_age_seconds);
        let pace = [every, max_age]
            .into_iter()
            .filter(|s| *s > 0)
            .min()
            .map(|s| (s / 10).max(60));
        let now = clock.now_unix();
        let Some(pace) = pace else { continue };
        if last.get(&id).is_some_and(|t| now - t < pace) {
            continue;
        }
        last.insert(id.clone(), now);
        let notice = (max_age / 10).min(3 * 86_400);
        let mut query = GrantQuery {
            status: Some(GrantStatus::Active),
            page_size: 100,
            ..Default::default()
        };
        let mut refreshed = 0;
        loop {
            let Ok((page, next)) = broker.list(Some(std::slice::from_ref(&id)), &query).await
            else {
                break;
            };
            for g in page {
                let lapses = g.consented_at + max_age;
                if max_age > 0
                    && now >= lapses - notice
                    && now < lapses
                    && announced.insert((g.key.clone(), lapses))
                {
                    broker.reauth_due(&g.key);
                }
                if every == 0
                    || refreshed >= PER_PROVIDER
                    || g.updated_at >= now - every
                    || !g.has_refresh_token
                    || !backoff.ready(&g.key, now)
                {
                    continue;
                }
                let result = broker.keep_alive(&provider, &g.key, now - every).await;
                if matches!(result, Ok(true)) {
                    refreshed += 1;
                }
                backoff.record(g.key, now, &result);
            }
            match next {
                Some(after) => query.after = Some(after),
                None => break,
            }
        }
    }
}

/// A fraction in [0, 1) for jitter (spread, not secrecy).
fn rand_fraction() -> f64 {
    let mut b = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    f64::from(u16::from_le_bytes(b)) / 65536.0
}
