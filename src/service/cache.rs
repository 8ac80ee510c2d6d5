//! The in-memory access-token cache and the per-grant refresh locks (single flight).

use crate::domain::{GrantKey, ProviderId, Scopes};
use crate::secret::SecretString;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

#[derive(Debug)]
pub(super) struct CachedToken {
    pub token: SecretString,
    pub token_type: String,
    pub expires_at: i64,
    pub scopes: Scopes,
    /// Scopes the user declined: a request that lacks only these is still served.
    pub declined: Scopes,
    pub metadata: Arc<BTreeMap<String, String>>,
    /// When this token was put in the cache (monotonic).
    pub obtained: Instant,
    /// When a caller was last handed this grant's token (Unix seconds; 0: not since it was
    /// cached). The refresh-ahead task refreshes only grants in use.
    pub last_used: std::sync::atomic::AtomicI64,
    /// When the grant's maximum age lapses (Unix seconds; 0: never): not served after.
    pub reauth_at: i64,
}

impl CachedToken {
    /// Whether it serves a request for `scopes`: every scope not declined is covered.
    pub(super) fn serves(&self, scopes: &Scopes) -> bool {
        self.scopes.contains_all(scopes)
            || (!self.declined.is_empty()
                && self.scopes.contains_all(&scopes.difference(&self.declined)))
    }

    /// Whether it has at least `min_ttl` seconds left at `now` (a token without expiry always has).
    fn lasts(&self, now: i64, min_ttl: i64) -> bool {
        self.expires_at == 0 || self.expires_at - now >= min_ttl
    }
}

/// How long a client token without an expiry is kept.
const CLIENT_TOKEN_KEPT: std::time::Duration = std::time::Duration::from_secs(3600);

/// When cleanup of idle refresh locks starts.
const LOCK_SWEEP_THRESHOLD: usize = 1024;

#[derive(Debug, Default)]
pub(super) struct TokenCache {
    tokens: RwLock<HashMap<GrantKey, Arc<CachedToken>>>,
    locks: Mutex<HashMap<GrantKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl TokenCache {
    /// A cached token covering `scopes` with at least `min_ttl` seconds left at `now`, or one
    /// obtained after `fresh_since` that has not expired yet: a caller that waited on another's
    /// refresh takes its result rather than refreshing again.
    pub(super) fn usable(
        &self,
        key: &GrantKey,
        scopes: &Scopes,
        now: i64,
        min_ttl: i64,
        fresh_since: Option<Instant>,
    ) -> Option<Arc<CachedToken>> {
        let tokens = self.tokens.read().unwrap_or_else(|p| p.into_inner());
        let t = tokens.get(key)?;
        if t.reauth_at != 0 && now >= t.reauth_at {
            return None;
        }
        let just_refreshed = fresh_since.is_some_and(|s| t.obtained >= s) && t.lasts(now, 1);
        (t.serves(scopes) && (t.lasts(now, min_ttl) || just_refreshed)).then(|| t.clone())
    }

    pub(super) fn put(&self, key: GrantKey, token: CachedToken) -> Arc<CachedToken> {
        let token = Arc::new(token);
        self.tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, token.clone());
        token
    }

    /// Marks `key`'s token as just handed to a caller.
    pub(super) fn touch(&self, key: &GrantKey, now: i64) {
        if let Some(t) = self
            .tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
        {
            t.last_used.store(now, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Grants handed out since `since` whose token (with an expiry) has less than `lead`
    /// seconds left at `now`, with the scopes of that token.
    pub(super) fn due(&self, now: i64, since: i64, lead: i64) -> Vec<(GrantKey, Scopes)> {
        self.tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, t)| {
                t.last_used.load(std::sync::atomic::Ordering::Relaxed) >= since.max(1)
                    && t.expires_at != 0
                    && t.expires_at - now < lead
            })
            .map(|(k, t)| (k.clone(), t.scopes.clone()))
            .collect()
    }

    /// The cached token of `key`, whatever its scopes or lifetime.
    pub(super) fn current(&self, key: &GrantKey) -> Option<Arc<CachedToken>> {
        self.tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Drops the tokens that can serve no one: expired, or past the grant's maximum age, and a
    /// client token without an expiry an hour after it was bought (it is bought again when
    /// asked for). Client tokens take a slot per audience, resource and subject token, so
    /// without this the cache would only grow. Found under the read lock, so handouts wait only
    /// while some are dropped. Returns how many were dropped.
    pub(super) fn sweep(&self, now: i64) -> usize {
        let lapsed = |k: &GrantKey, t: &CachedToken| {
            (t.expires_at != 0 && t.expires_at <= now)
                || (t.reauth_at != 0 && now >= t.reauth_at)
                || (t.expires_at == 0
                    && k.user.is_reserved()
                    && t.obtained.elapsed() >= CLIENT_TOKEN_KEPT)
        };
        let gone: Vec<GrantKey> = self
            .tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(k, t)| lapsed(k, t))
            .map(|(k, _)| k.clone())
            .collect();
        if gone.is_empty() {
            return 0;
        }
        let mut tokens = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        // A token put since the look above is fresh: only lapsed ones go.
        let mut dropped = 0;
        for k in &gone {
            if tokens.get(k).is_some_and(|t| lapsed(k, t)) {
                tokens.remove(k);
                dropped += 1;
            }
        }
        dropped
    }

    pub(super) fn remove(&self, key: &GrantKey) {
        self.tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    pub(super) fn remove_provider(&self, provider: &ProviderId) {
        self.tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| &k.provider != provider);
    }

    /// The grant's refresh lock: one refresh (or grant write) per grant at a time.
    pub(super) async fn lock(&self, key: &GrantKey) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            if locks.len() >= LOCK_SWEEP_THRESHOLD {
                locks.retain(|_, l| Arc::strong_count(l) > 1);
            }
            locks.entry(key.clone()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;

    fn key(user: &str) -> GrantKey {
        GrantKey {
            provider: ProviderId::parse("p").unwrap(),
            user: UserId::parse(user).unwrap(),
            agent: None,
            account: None,
        }
    }

    fn token(expires_at: i64, reauth_at: i64) -> CachedToken {
        CachedToken {
            token: "t".to_owned().into(),
            token_type: "Bearer".into(),
            expires_at,
            scopes: Scopes::default(),
            declined: Scopes::default(),
            metadata: Arc::default(),
            obtained: Instant::now(),
            last_used: std::sync::atomic::AtomicI64::new(0),
            reauth_at,
        }
    }

    #[test]
    fn a_sweep_drops_what_can_serve_no_one_and_keeps_the_rest() {
        let cache = TokenCache::default();
        let now = 1_000_000;
        cache.put(key("expired"), token(now, 0));
        cache.put(key("lapsed"), token(now + 3600, now - 1));
        cache.put(key("live"), token(now + 60, 0));
        cache.put(key("forever"), token(0, 0));
        assert_eq!(cache.sweep(now), 2);
        assert!(cache.current(&key("expired")).is_none());
        assert!(cache.current(&key("lapsed")).is_none());
        assert!(cache.current(&key("live")).is_some());
        assert_eq!(cache.sweep(now + 30), 0);
        // The live one expires; a grant's token without an expiry stays until its grant goes.
        assert_eq!(cache.sweep(now + 3600 * 24), 1);
        assert!(cache.current(&key("forever")).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_token_without_an_expiry_is_kept_an_hour() {
        let cache = TokenCache::default();
        let slot = GrantKey {
            user: UserId::reserved("client/abc"),
            ..key("x")
        };
        cache.put(slot.clone(), token(0, 0));
        assert_eq!(cache.sweep(1), 0);
        tokio::time::advance(CLIENT_TOKEN_KEPT).await;
        assert_eq!(cache.sweep(1), 1);
        assert!(cache.current(&slot).is_none());
    }
}
