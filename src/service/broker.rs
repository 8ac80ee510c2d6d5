//! Token handout: access tokens from the in-memory cache, or from a single-flight refresh of the
//! stored grant; and the grant writes that go with them (a new consent, a revocation). The cached
//! path never touches the store.

use super::Error;
use super::cache::{CachedToken, TokenCache};
use super::refresher::{Refreshed, Refresher};
use crate::clock::Clock;
use crate::domain::{Grant, GrantKey, GrantStatus, ProviderConfig, ProviderId, Scopes, UserId};
use crate::oauth::{TokenEndpoint, TokenSet};
use crate::secret::SecretString;
use crate::store::{Cas, GrantRepo, StoreError};
use std::sync::Arc;
use tokio::time::Instant;

/// Lifetime assumed for an access token whose provider did not say (`expires_in` absent).
const ASSUMED_TTL: i64 = 300;
/// Most grants a listing returns.
const MAX_LISTED: usize = 1000;
/// Check-and-set retries when a consent's grant write races a replica's refresh.
const CONSENT_WRITE_ATTEMPTS: u32 = 5;

/// An access token as handed to an agent.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub token: SecretString,
    pub token_type: String,
    pub expires_at: i64,
    pub scopes: Scopes,
}

impl From<&CachedToken> for AccessToken {
    fn from(t: &CachedToken) -> Self {
        Self {
            token: t.token.clone(),
            token_type: t.token_type.clone(),
            expires_at: t.expires_at,
            scopes: t.scopes.clone(),
        }
    }
}

/// Grant metadata for listings: never a token.
#[derive(Debug, Clone)]
pub struct GrantInfo {
    pub key: GrantKey,
    pub scopes: Scopes,
    pub subject: Option<String>,
    pub status: GrantStatus,
    pub has_refresh_token: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What a completed consent brought: the tokens and, for OpenID Connect, the verified subject.
#[derive(Debug)]
pub(crate) struct Consented {
    pub key: GrantKey,
    pub tokens: TokenSet,
    pub subject: Option<String>,
    /// The scopes asked for, used when the provider does not say what it granted.
    pub requested: Scopes,
}

#[derive(Debug)]
pub(crate) struct TokenBroker {
    cache: TokenCache,
    grants: GrantRepo,
    refresher: Refresher,
    clock: Arc<dyn Clock>,
}

impl TokenBroker {
    pub(crate) fn new(
        grants: GrantRepo,
        endpoint: Arc<dyn TokenEndpoint>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            cache: TokenCache::default(),
            refresher: Refresher::new(grants.clone(), endpoint, clock.clone()),
            grants,
            clock,
        }
    }

    /// A token from the cache, or from a refresh of the stored grant. `None`: consent needed.
    pub(crate) async fn usable_token(
        &self,
        provider: &ProviderConfig,
        key: &GrantKey,
        scopes: &Scopes,
        min_ttl: i64,
    ) -> Result<Option<AccessToken>, Error> {
        // Taken before the first look, so a refresh that lands while this call waits for the
        // lock counts as fresh for it, even when the provider's lifetime is below `min_ttl`.
        let waited_since = Instant::now();
        let now = self.clock.now_unix();
        if let Some(t) = self.cache.usable(key, scopes, now, min_ttl, None) {
            return Ok(Some(AccessToken::from(&*t)));
        }
        let _guard = self.cache.lock(key).await;
        let now = self.clock.now_unix();
        if let Some(t) = self
            .cache
            .usable(key, scopes, now, min_ttl, Some(waited_since))
        {
            return Ok(Some(AccessToken::from(&*t)));
        }
        let Some((grant, version)) = self.grants.get(key).await? else {
            return Ok(None);
        };
        let Some(client) = provider.kind.oauth_client() else {
            return Ok(None);
        };
        if !grant.usable_for(scopes) || self.refresher.is_lost(key) {
            return Ok(None);
        }
        match self.refresher.refresh(client, grant, version).await {
            Ok(Refreshed::Token(set, scopes)) => Ok(Some(self.cache_token(key, set, &scopes))),
            Ok(Refreshed::Gone) => {
                self.cache.remove(key);
                Ok(None)
            }
            Err(e) => {
                if self.refresher.is_lost(key) {
                    self.cache.remove(key);
                }
                Err(e)
            }
        }
    }

    fn cache_token(&self, key: &GrantKey, set: TokenSet, scopes: &Scopes) -> AccessToken {
        let now = self.clock.now_unix();
        let ttl = set.expires_in.map_or(ASSUMED_TTL, |d| {
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
        });
        let cached = self.cache.put(
            key.clone(),
            CachedToken {
                token: set.access_token,
                token_type: set.token_type,
                expires_at: now.saturating_add(ttl),
                scopes: set.scopes.unwrap_or_else(|| scopes.clone()),
                obtained: Instant::now(),
            },
        );
        AccessToken::from(&*cached)
    }

    /// The stored grant for `key`, if any.
    pub(crate) async fn grant(&self, key: &GrantKey) -> Result<Option<Grant>, Error> {
        Ok(self.grants.get(key).await?.map(|(g, _)| g))
    }

    /// Stores the grant a consent produced and caches its access token. Check-and-set against
    /// the version read, so a replica's concurrent refresh is merged (its newer refresh token
    /// kept when the provider sent none) rather than overwritten.
    pub(crate) async fn accept_consent(&self, c: Consented) -> Result<(), Error> {
        let _guard = self.cache.lock(&c.key).await;
        let now = self.clock.now_unix();
        let scopes = c
            .tokens
            .scopes
            .clone()
            .unwrap_or_else(|| c.requested.clone());
        let mut attempts = 1;
        loop {
            let (cas, created_at, old_refresh, old_subject) = match self.grants.get(&c.key).await? {
                Some((g, version)) => (
                    Cas::Version(version),
                    g.created_at,
                    g.refresh_token.filter(|_| g.status == GrantStatus::Active),
                    g.subject,
                ),
                None => (Cas::Absent, now, None, None),
            };
            let grant = Grant {
                key: c.key.clone(),
                scopes: scopes.clone(),
                subject: c.subject.clone().or(old_subject),
                // A provider may not re-issue a refresh token on re-consent; keep the one we have.
                refresh_token: c.tokens.refresh_token.clone().or(old_refresh),
                status: GrantStatus::Active,
                created_at,
                updated_at: now,
                refreshing: None,
            };
            match self.grants.put(&grant, cas).await {
                Ok(_) => break,
                Err(StoreError::Conflict) if attempts < CONSENT_WRITE_ATTEMPTS => attempts += 1,
                Err(e) => return Err(e.into()),
            }
        }
        self.cache_token(&c.key, c.tokens, &scopes);
        self.refresher.forget_lost(&c.key);
        Ok(())
    }

    /// Removes a grant from the store and the cache. Returns whether one existed.
    pub(crate) async fn revoke(&self, key: &GrantKey) -> Result<bool, Error> {
        let _guard = self.cache.lock(key).await;
        self.cache.remove(key);
        self.refresher.forget_lost(key);
        Ok(self.grants.delete(key).await?)
    }

    /// Drops every cached token of a deleted provider.
    pub(crate) fn forget_provider(&self, id: &ProviderId) {
        self.cache.remove_provider(id);
    }

    /// Grant metadata, optionally filtered by provider and user.
    pub(crate) async fn list(
        &self,
        provider: Option<&ProviderId>,
        user: Option<&UserId>,
    ) -> Result<Vec<GrantInfo>, Error> {
        let keep = |g: &Grant| user.is_none_or(|u| &g.key.user == u);
        let grants = self.grants.list(provider, keep, MAX_LISTED).await?;
        Ok(grants
            .into_iter()
            .map(|g| GrantInfo {
                status: if self.refresher.is_lost(&g.key) {
                    GrantStatus::NeedsReauth
                } else {
                    g.status
                },
                has_refresh_token: g.refresh_token.is_some(),
                key: g.key,
                scopes: g.scopes,
                subject: g.subject,
                created_at: g.created_at,
                updated_at: g.updated_at,
            })
            .collect())
    }
}
