//! Refreshing a grant: claim it in the store (so replicas sharing a store never use one refresh
//! token twice), call the provider, and store a rotated refresh token before anything is handed
//! out. A store that will not take the rotated token within the retry budget leaves the grant
//! needing a new consent (a "lost rotation"): the old refresh token is spent at the provider, and
//! handing out an access token whose successor could never be obtained would only hide the failure.

use super::Error;
use crate::clock::Clock;
use crate::domain::{Grant, GrantKey, GrantStatus, OAuthClient, RefreshClaim};
use crate::oauth::{OAuthError, TokenEndpoint, TokenGrant, TokenSet};
use crate::secret::ExposeSecret as _;
use crate::store::{Cas, GrantRepo, StoreError};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
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
    Ours(Box<Grant>, u64),
    /// Another instance refreshed while this call waited: its token is in the grant.
    Shared(Box<Grant>),
    /// The grant is no longer refreshable (revoked, dead, or lost its refresh token).
    Gone,
}

/// The result of a refresh.
#[derive(Debug)]
pub(crate) enum Refreshed {
    /// A new access token; the grant (with any rotated refresh token) as stored.
    Token(TokenSet, Box<Grant>),
    /// Another instance sharing the store refreshed it while this call waited: the grant holds
    /// that access token, which serves this call too (one provider call for all replicas).
    Shared(Box<Grant>),
    /// The grant cannot be refreshed (revoked, or the provider said `invalid_grant`).
    Gone,
}

#[derive(Debug)]
pub(crate) struct Refresher {
    grants: GrantRepo,
    endpoint: Arc<dyn TokenEndpoint>,
    clock: Arc<dyn Clock>,
    /// Names this process in refresh claims.
    instance: String,
    /// Grants whose rotated refresh token could not be stored: they need a new consent.
    lost: Mutex<HashSet<GrantKey>>,
}

impl Refresher {
    pub(crate) fn new(
        grants: GrantRepo,
        endpoint: Arc<dyn TokenEndpoint>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            grants,
            endpoint,
            clock,
            instance: crate::secret::random_token(12).unwrap_or_else(|_| "valet".into()),
            lost: Mutex::default(),
        }
    }

    /// Whether the grant's latest refresh token was lost (it needs a new consent).
    pub(crate) fn is_lost(&self, key: &GrantKey) -> bool {
        self.lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
    }

    /// Forgets a lost rotation: the grant was replaced by a new consent or revoked.
    pub(crate) fn forget_lost(&self, key: &GrantKey) {
        self.lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    fn mark_lost(&self, key: &GrantKey) {
        self.lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
    }

    /// Marks `grant` as being refreshed by this instance (check-and-set), waiting out another
    /// instance's live claim; when that instance stored a new access token meanwhile, that token
    /// is the answer (a refresh that lands while a call waits is fresh for it). On a store no
    /// other process uses, another instance's claim was left by a killed predecessor and is
    /// taken over at once.
    async fn claim(&self, mut grant: Grant, mut version: u64) -> Result<Claimed, Error> {
        let shared = !self.grants.exclusive();
        let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
        // The access token (its digest) the grant held when another instance's claim was first
        // seen; `None` until this call waits.
        let mut before_wait: Option<Option<[u8; 32]>> = None;
        loop {
            if grant.status != GrantStatus::Active || grant.refresh_token.is_none() {
                return Ok(Claimed::Gone);
            }
            let now = self.clock.now_unix();
            if grant.refreshing.is_none()
                && before_wait.is_some_and(|before| access_digest(&grant) != before)
                && grant.kept_token_live(now)
            {
                return Ok(Claimed::Shared(Box::new(grant)));
            }
            let busy = grant
                .refreshing
                .as_ref()
                .is_some_and(|c| shared && c.owner != self.instance && c.until > now);
            if !busy {
                grant.refreshing = Some(RefreshClaim {
                    owner: self.instance.clone(),
                    until: now + CLAIM_SECONDS,
                });
                match self.grants.put(&grant, Cas::Version(version)).await {
                    Ok(v) => return Ok(Claimed::Ours(Box::new(grant), v)),
                    Err(StoreError::Conflict) => {}
                    Err(e) => return Err(e.into()),
                }
            } else if tokio::time::Instant::now() >= deadline {
                return Err(Error::RefreshBusy);
            } else {
                before_wait.get_or_insert_with(|| access_digest(&grant));
                tokio::time::sleep(CLAIM_POLL).await;
            }
            match self.grants.get(&grant.key).await? {
                None => return Ok(Claimed::Gone),
                Some((g, v)) => (grant, version) = (g, v),
            }
        }
    }

    /// Writes `grant` at `version`, retrying transient store failures with backoff.
    async fn save_with_retry(&self, grant: &Grant, version: u64) -> Result<u64, Error> {
        let mut delay = WRITE_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.grants.put(grant, Cas::Version(version)).await {
                Err(e) if e.is_unavailable() && attempt < WRITE_ATTEMPTS => {
                    tracing::debug!(
                        attempt,
                        "storing the rotated refresh token failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                other => return other.map_err(Error::from),
            }
        }
    }

    /// Refreshes `grant` (read at `version`); the caller holds the grant's in-process lock, on a
    /// task of its own (`TokenBroker`), so that a caller going away does not cut the refresh off
    /// between the provider's answer and the store's write, where a rotated refresh token would
    /// be lost.
    pub(crate) async fn refresh(
        &self,
        client: &OAuthClient,
        grant: Grant,
        version: u64,
    ) -> Result<Refreshed, Error> {
        let (mut grant, version) = match self.claim(grant, version).await? {
            Claimed::Ours(g, v) => (*g, v),
            Claimed::Shared(g) => return Ok(Refreshed::Shared(g)),
            Claimed::Gone => return Ok(Refreshed::Gone),
        };
        let Some(refresh_token) = grant.refresh_token.clone() else {
            return Ok(Refreshed::Gone);
        };
        let result = self
            .endpoint
            .token(client, TokenGrant::RefreshToken(&refresh_token))
            .await;
        grant.refreshing = None;
        grant.updated_at = self.clock.now_unix();
        match result {
            Ok(set) => self.store_rotation(grant, version, set).await,
            Err(OAuthError::InvalidGrant) => {
                tracing::info!(provider = %grant.key.provider, "refresh token refused (invalid_grant); grant needs re-consent");
                grant.status = GrantStatus::NeedsReauth;
                grant.refresh_token = None;
                self.save_with_retry(&grant, version).await?;
                Ok(Refreshed::Gone)
            }
            Err(e) => {
                // Transient or refused: release the claim, keep the grant.
                if let Err(release) = self.grants.put(&grant, Cas::Version(version)).await {
                    tracing::debug!("could not release the refresh claim: {release}");
                }
                Err(e.into())
            }
        }
    }

    async fn store_rotation(
        &self,
        mut grant: Grant,
        version: u64,
        set: TokenSet,
    ) -> Result<Refreshed, Error> {
        // Some providers send the same refresh token back: that is no rotation.
        let rotated = set.refresh_token.as_ref().is_some_and(|new| {
            grant
                .refresh_token
                .as_ref()
                .is_none_or(|old| old.expose_secret() != new.expose_secret())
        });
        if let Some(rotated) = set.refresh_token.clone() {
            grant.refresh_token = Some(rotated);
        }
        // The access token is kept (sealed) with the grant: replicas waiting on this refresh,
        // and this process after a restart, use it instead of calling the provider again.
        grant.access_token = Some(set.access_token.clone());
        grant.token_type = Some(set.token_type.clone());
        grant.expires_at = set.expires_in.map_or(0, |d| {
            grant
                .updated_at
                .saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        });
        // The scopes the refresh answers, and the OpenID Connect ones the consent granted:
        // a refresh that does not repeat `openid` or `offline_access` has not taken them away,
        // and narrowing the grant by them would send its user to consent again.
        if let Some(scopes) = &set.scopes {
            grant.scopes = scopes.union(&grant.scopes.oidc());
        }
        // Merged, not replaced: a refresh may answer fewer of the fields kept (Slack's says
        // nothing of `authed_user`), and the ones it does answer are the newest.
        grant
            .metadata
            .extend(set.metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
        match self.save_with_retry(&grant, version).await {
            Ok(_) => {
                tracing::info!(provider = %grant.key.provider, "refreshed access token");
                Ok(Refreshed::Token(set, Box::new(grant)))
            }
            Err(e) if rotated => {
                // The provider has spent the old refresh token; the new one is lost with this
                // error. Never fall back to the old one: ask for consent.
                tracing::warn!(provider = %grant.key.provider, "the rotated refresh token could not be stored; the grant needs a new consent");
                self.mark_lost(&grant.key);
                Err(e)
            }
            Err(e) => {
                // The stored refresh token is still the provider's: this call fails, the next
                // one refreshes again (the claim is this instance's, or lapses for the others).
                tracing::warn!(provider = %grant.key.provider, "the refreshed access token could not be stored; the grant is kept");
                Err(e)
            }
        }
    }
}

/// A digest of the grant's stored access token, to tell a new one from the one seen before.
fn access_digest(grant: &Grant) -> Option<[u8; 32]> {
    grant
        .access_token
        .as_ref()
        .map(|t| crate::secret::sha256(t.expose_secret().as_bytes()))
}
