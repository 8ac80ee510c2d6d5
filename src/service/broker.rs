//! The credential broker: hands out cached access tokens, refreshes them single-flight, keeps
//! grants in the store, and starts a consent flow when no usable grant exists.

use super::cache::{CachedToken, TokenCache};
use super::{Caller, Error, Role, decode, encode};
use crate::clock::Clock;
use crate::domain::{
    Grant, GrantKey, GrantStatus, Handout, HandoutPolicy, ProviderConfig, ProviderId, Scopes,
    UserId,
};
use crate::lease::{FlowOutcome, LeaseTable};
use crate::oauth::{TokenEndpoint, TokenSet};
use crate::secret::SecretString;
use crate::store::{Cas, SecretStore};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use super::providers::ProviderRegistry;

/// Lifetime assumed for an access token whose provider did not say (`expires_in` absent).
const ASSUMED_TTL: i64 = 300;
/// Most grants `ListGrants` returns.
const MAX_LISTED: usize = 1000;

#[derive(Debug, Clone, Copy)]
pub struct BrokerLimits {
    pub default_min_ttl: u32,
    pub max_min_ttl: u32,
    pub default_wait: Duration,
    pub max_wait: Duration,
}

/// A validated Authenticate request.
#[derive(Debug)]
pub struct AuthRequest {
    pub key: GrantKey,
    /// Empty: the provider's default scopes.
    pub scopes: Scopes,
    pub handout: Handout,
    /// 0: the daemon default.
    pub min_ttl: u32,
    pub force_reauth: bool,
}

/// An access token as handed to an agent.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub token: SecretString,
    pub token_type: String,
    pub expires_at: i64,
    pub scopes: Scopes,
}

#[derive(Debug)]
pub enum Outcome {
    Token(AccessToken),
    /// An opaque reference (a bearer credential for `Resolve`, hence secret).
    Reference {
        reference: SecretString,
        expires_at: i64,
    },
    Pending {
        auth_url: String,
        auth_id: String,
        expires_at: i64,
    },
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

pub struct Broker {
    pub(super) providers: Arc<ProviderRegistry>,
    pub(super) store: Arc<dyn SecretStore>,
    pub(super) endpoint: Arc<dyn TokenEndpoint>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) leases: Arc<LeaseTable>,
    pub(super) cache: TokenCache,
    pub(super) limits: BrokerLimits,
    /// Names this process in refresh claims.
    pub(super) instance: String,
    /// Grants whose rotated refresh token could not be stored: they need a new consent.
    pub(super) unstored: std::sync::Mutex<std::collections::HashSet<GrantKey>>,
    pub(super) reference_keys: tokio::sync::OnceCell<super::ReferenceKeys>,
    /// Reference records by lookup hash: the Resolve hot path.
    pub(super) references: std::sync::RwLock<
        std::collections::HashMap<String, Arc<super::reference::ReferenceRecord>>,
    >,
    /// Serializes spending single-use references within this process.
    pub(super) spend_lock: tokio::sync::Mutex<()>,
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

impl Broker {
    pub fn new(
        providers: Arc<ProviderRegistry>,
        store: Arc<dyn SecretStore>,
        endpoint: Arc<dyn TokenEndpoint>,
        clock: Arc<dyn Clock>,
        leases: Arc<LeaseTable>,
        limits: BrokerLimits,
    ) -> Self {
        Self {
            providers,
            store,
            endpoint,
            clock,
            leases,
            cache: TokenCache::default(),
            limits,
            instance: crate::secret::random_token(12).unwrap_or_else(|_| "valet".into()),
            unstored: std::sync::Mutex::default(),
            reference_keys: tokio::sync::OnceCell::new(),
            references: std::sync::RwLock::default(),
            spend_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn providers(&self) -> &Arc<ProviderRegistry> {
        &self.providers
    }

    /// Hands out a token (or a reference) for a usable grant, or starts a consent flow.
    pub async fn authenticate(&self, caller: &Caller, req: AuthRequest) -> Result<Outcome, Error> {
        let min_ttl = self.min_ttl(req.min_ttl)?;
        let provider = self.providers.get(&req.key.provider)?;
        if req.handout == Handout::Token && provider.handout_policy == HandoutPolicy::ReferenceOnly
        {
            return Err(Error::PermissionDenied(
                "this provider hands out references only: request handout REFERENCE and Resolve it",
            ));
        }
        let scopes = if req.scopes.is_empty() {
            provider.default_scopes.clone()
        } else {
            req.scopes
        };
        if !req.force_reauth
            && let Some(token) = self
                .usable_token(&provider, &req.key, &scopes, min_ttl)
                .await?
        {
            return self.hand_out(caller, &req.key, token, req.handout).await;
        }
        self.start_flow(caller, &provider, req.key, scopes, req.handout)
            .await
    }

    /// Turns a usable token into what the caller asked for.
    async fn hand_out(
        &self,
        caller: &Caller,
        key: &GrantKey,
        token: AccessToken,
        handout: Handout,
    ) -> Result<Outcome, Error> {
        match handout {
            Handout::Token => Ok(Outcome::Token(token)),
            Handout::Reference { single_use } => {
                let (reference, expires_at) = self
                    .issue_reference(caller, key, &token, single_use)
                    .await?;
                Ok(Outcome::Reference {
                    reference: SecretString::from(reference),
                    expires_at,
                })
            }
        }
    }

    pub(super) fn min_ttl(&self, requested: u32) -> Result<i64, Error> {
        if requested > self.limits.max_min_ttl {
            return Err(Error::invalid(
                "min_ttl_seconds",
                format!("must be at most {}", self.limits.max_min_ttl),
            ));
        }
        let ttl = if requested == 0 {
            self.limits.default_min_ttl
        } else {
            requested
        };
        Ok(i64::from(ttl))
    }

    /// A token from the cache, or from a refresh of the stored grant. `None`: consent needed.
    pub(super) async fn usable_token(
        &self,
        provider: &ProviderConfig,
        key: &GrantKey,
        scopes: &Scopes,
        min_ttl: i64,
    ) -> Result<Option<AccessToken>, Error> {
        // Taken before the first look, so a refresh that lands while this call waits for the
        // lock counts as fresh for it, even when the provider's lifetime is below `min_ttl`.
        let waited_since = Instant::now();
        // Hot path: memory only.
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
        let Some((grant, version)) = self.load_grant(key).await? else {
            return Ok(None);
        };
        if !grant.usable_for(scopes) || self.is_unstored(key) {
            return Ok(None);
        }
        self.refresh_locked(provider, grant, version).await
    }

    pub(super) fn cache_token(
        &self,
        key: &GrantKey,
        set: TokenSet,
        scopes: &Scopes,
    ) -> AccessToken {
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

    pub(super) async fn save_grant(&self, grant: &Grant, cas: Cas) -> Result<u64, Error> {
        Ok(self
            .store
            .put(&grant.key.store_key(), encode(grant)?, cas)
            .await?)
    }

    pub(super) async fn load_grant(&self, key: &GrantKey) -> Result<Option<(Grant, u64)>, Error> {
        let k = key.store_key();
        match self.store.get(&k).await? {
            None => Ok(None),
            Some(rec) => Ok(Some((decode(&k, &rec.value)?, rec.version))),
        }
    }

    /// Waits for the flow `auth_id` to end, up to `timeout` (0: default; capped).
    pub async fn wait_for_completion(
        &self,
        caller: &Caller,
        auth_id: &str,
        timeout: Duration,
    ) -> Result<Outcome, Error> {
        if auth_id.is_empty() || auth_id.len() > 128 {
            return Err(Error::invalid("auth_id", "must be 1-128 characters"));
        }
        let timeout = if timeout.is_zero() {
            self.limits.default_wait
        } else {
            timeout.min(self.limits.max_wait)
        };
        let view = self
            .leases
            .view(auth_id, &caller.name)
            .ok_or(Error::NotFound {
                what: "authorization flow",
            })?;
        let mut rx = view.outcome.clone();
        let outcome = match tokio::time::timeout(
            timeout,
            rx.wait_for(|o| *o != FlowOutcome::Pending),
        )
        .await
        {
            Err(_) => None,
            Ok(Ok(o)) => Some(o.clone()),
            Ok(Err(_)) => {
                return Err(Error::NotFound {
                    what: "authorization flow",
                });
            }
        };
        match outcome {
            None => {
                let left = view.expires_at.saturating_duration_since(Instant::now());
                Ok(Outcome::Pending {
                    auth_url: view.auth_url,
                    auth_id: auth_id.to_owned(),
                    expires_at: self.clock.now_unix() + i64::try_from(left.as_secs()).unwrap_or(0),
                })
            }
            Some(FlowOutcome::Completed(key)) => {
                let provider = self.providers.get(&key.provider)?;
                let token = self
                    .usable_token(&provider, &key, &view.scopes, 0)
                    .await?
                    .ok_or_else(|| Error::Internal("the new grant is not usable".into()))?;
                self.hand_out(caller, &key, token, view.handout).await
            }
            Some(FlowOutcome::Failed(f)) => Err(Error::Flow(f)),
            Some(FlowOutcome::Pending) => Err(Error::Internal("flow still pending".into())),
        }
    }

    /// Deletes a provider, its grants, and their cached tokens.
    pub async fn delete_provider(&self, id: &ProviderId) -> Result<(), Error> {
        self.providers.delete(id).await?;
        self.cache.remove_provider(id);
        self.drop_references(|g| &g.provider == id).await?;
        Ok(())
    }

    /// Removes a grant from the store and the cache. Returns whether one existed.
    pub async fn revoke(&self, _caller: &Caller, key: &GrantKey) -> Result<bool, Error> {
        self.providers.get(&key.provider)?;
        let _guard = self.cache.lock(key).await;
        self.cache.remove(key);
        self.set_unstored(key, false);
        let existed = self.store.delete(&key.store_key()).await?;
        let refs = self.drop_references(|g| g == key).await?;
        Ok(existed || refs > 0)
    }

    /// Grant metadata, optionally filtered. Agents and admins alike see metadata only.
    pub async fn list_grants(
        &self,
        caller: &Caller,
        provider: Option<&ProviderId>,
        user: Option<&UserId>,
    ) -> Result<Vec<GrantInfo>, Error> {
        if caller.role != Role::Admin && user.is_none() {
            return Err(Error::invalid(
                "user_id",
                "is required for agent callers (only admins list every user's grants)",
            ));
        }
        let prefix = provider.map_or_else(|| "grants/".to_owned(), GrantKey::provider_prefix);
        let mut out = Vec::new();
        for k in self.store.list(&prefix).await? {
            let Some(rec) = self.store.get(&k).await? else {
                continue;
            };
            let g: Grant = decode(&k, &rec.value)?;
            if user.is_some_and(|u| &g.key.user != u) {
                continue;
            }
            let status = if self.is_unstored(&g.key) {
                GrantStatus::NeedsReauth
            } else {
                g.status
            };
            out.push(GrantInfo {
                has_refresh_token: g.refresh_token.is_some(),
                key: g.key,
                scopes: g.scopes,
                subject: g.subject,
                status,
                created_at: g.created_at,
                updated_at: g.updated_at,
            });
            if out.len() >= MAX_LISTED {
                break;
            }
        }
        Ok(out)
    }
}
