//! Refreshing a grant: claim it in the store (so replicas sharing a store never use one refresh
//! token twice), call the provider, and store a rotated refresh token before anything is handed
//! out. A store that will not take the rotated token within the retry budget leaves the grant
//! needing a new consent: the old refresh token is spent at the provider, and handing out an
//! access token whose successor could never be obtained would only hide the failure.

use super::broker::{AccessToken, Broker};
use super::{Error, decode};
use crate::domain::{Grant, GrantKey, GrantStatus, ProviderConfig, RefreshClaim};
use crate::oauth::OAuthError;
use crate::store::Cas;
use std::time::Duration;

/// How long a refresh claim holds: longer than a provider call may take.
const CLAIM_SECONDS: i64 = 30;
/// How long to wait for another instance's claim before giving up.
const CLAIM_WAIT: Duration = Duration::from_secs(20);
const CLAIM_POLL: Duration = Duration::from_millis(200);
/// Attempts to store a rotated refresh token, with doubling backoff from `WRITE_BACKOFF`.
const WRITE_ATTEMPTS: u32 = 5;
const WRITE_BACKOFF: Duration = Duration::from_millis(100);

enum Claimed {
    /// We hold the claim; the grant as written, at this version.
    Ours(Grant, u64),
    /// The grant is no longer refreshable (revoked, dead, or lost its refresh token).
    Gone,
}

impl Broker {
    pub(super) fn is_unstored(&self, key: &GrantKey) -> bool {
        self.unstored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
    }

    pub(super) fn set_unstored(&self, key: &GrantKey, on: bool) {
        let mut set = self.unstored.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            set.insert(key.clone());
        } else {
            set.remove(key);
        }
    }

    /// Marks `grant` as being refreshed by this instance (check-and-set), waiting out another
    /// instance's live claim.
    async fn claim(&self, mut grant: Grant, mut version: u64) -> Result<Claimed, Error> {
        let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
        loop {
            if grant.status != GrantStatus::Active || grant.refresh_token.is_none() {
                return Ok(Claimed::Gone);
            }
            let now = self.clock.now_unix();
            let busy = grant
                .refreshing
                .as_ref()
                .is_some_and(|c| c.owner != self.instance && c.until > now);
            if !busy {
                grant.refreshing = Some(RefreshClaim {
                    owner: self.instance.clone(),
                    until: now + CLAIM_SECONDS,
                });
                match self.save_grant(&grant, Cas::Version(version)).await {
                    Ok(v) => return Ok(Claimed::Ours(grant, v)),
                    Err(Error::Conflict) => {}
                    Err(e) => return Err(e),
                }
            } else if tokio::time::Instant::now() >= deadline {
                return Err(Error::ProviderUnavailable(
                    "another Valet instance is refreshing this grant; retry".into(),
                ));
            } else {
                tokio::time::sleep(CLAIM_POLL).await;
            }
            let key = grant.key.store_key();
            match self.store.get(&key).await? {
                None => return Ok(Claimed::Gone),
                Some(rec) => {
                    grant = decode(&key, &rec.value)?;
                    version = rec.version;
                }
            }
        }
    }

    /// Writes `grant` at `version`, retrying transient store failures with backoff.
    async fn save_with_retry(&self, grant: &Grant, version: u64) -> Result<u64, Error> {
        let mut delay = WRITE_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.save_grant(grant, Cas::Version(version)).await {
                Err(Error::StoreUnavailable(reason)) if attempt < WRITE_ATTEMPTS => {
                    tracing::warn!(
                        attempt,
                        "storing the rotated refresh token failed; retrying: {reason}"
                    );
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Refreshes `grant`; the caller holds the grant's in-process lock.
    pub(super) async fn refresh_locked(
        &self,
        provider: &ProviderConfig,
        grant: Grant,
        version: u64,
    ) -> Result<Option<AccessToken>, Error> {
        let key = grant.key.clone();
        let (mut grant, version) = match self.claim(grant, version).await? {
            Claimed::Ours(g, v) => (g, v),
            Claimed::Gone => return Ok(None),
        };
        let Some(refresh_token) = grant.refresh_token.clone() else {
            return Ok(None);
        };
        let result = self.endpoint.refresh(provider, &refresh_token).await;
        grant.refreshing = None;
        grant.updated_at = self.clock.now_unix();
        match result {
            Ok(set) => {
                if let Some(rotated) = set.refresh_token.clone() {
                    grant.refresh_token = Some(rotated);
                }
                if let Some(scopes) = &set.scopes {
                    grant.scopes = scopes.clone();
                }
                match self.save_with_retry(&grant, version).await {
                    Ok(_) => {
                        tracing::info!(provider = %key.provider, "refreshed access token");
                        Ok(Some(self.cache_token(&key, set, &grant.scopes)))
                    }
                    Err(e) => {
                        // The provider has spent the old refresh token; the new one is lost
                        // with this error. Never fall back to the old one: ask for consent.
                        tracing::error!(provider = %key.provider, "the rotated refresh token could not be stored; the grant needs a new consent: {e}");
                        self.cache.remove(&key);
                        self.set_unstored(&key, true);
                        Err(e)
                    }
                }
            }
            Err(OAuthError::InvalidGrant) => {
                tracing::info!(provider = %key.provider, "refresh token refused (invalid_grant); grant needs re-consent");
                self.cache.remove(&key);
                grant.status = GrantStatus::NeedsReauth;
                grant.refresh_token = None;
                self.save_with_retry(&grant, version).await?;
                Ok(None)
            }
            Err(e) => {
                // Transient or refused: release the claim, keep the grant.
                if let Err(release) = self.save_grant(&grant, Cas::Version(version)).await {
                    tracing::warn!("could not release the refresh claim: {release}");
                }
                Err(e.into())
            }
        }
    }
}
