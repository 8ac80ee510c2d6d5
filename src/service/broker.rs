//! Token handout: access tokens from the in-memory cache, or from a single-flight refresh of the
//! stored grant; and the grant writes that go with them (a new consent, a revocation). The cached
//! path never touches the store.

use super::Error;
use super::cache::{CachedToken, TokenCache};
use super::kind::{self, ClientGrant};
use super::refresher::{Refreshed, Refresher};
use crate::clock::Clock;
use crate::domain::{
    AgentId, Grant, GrantKey, GrantStatus, OAuthClient, ProviderConfig, ProviderId, Scopes, UserId,
};
use crate::oauth::{OAuthError, TokenEndpoint, TokenGrant, TokenSet};
use crate::secret::SecretString;
use crate::store::{Cas, GrantRepo, StoreError};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

/// Most grants a listing returns.
/// Check-and-set retries when a consent's grant write races a replica's refresh.
const CONSENT_WRITE_ATTEMPTS: u32 = 5;

/// An access token as handed to an agent.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub token: SecretString,
    pub token_type: String,
    /// Unix seconds; 0: no expiry.
    pub expires_at: i64,
    pub scopes: Scopes,
    /// Asked for, not granted.
    pub missing_scopes: Scopes,
    pub metadata: Arc<BTreeMap<String, String>>,
    /// The header the token goes in as it is; `None`: `Authorization: Bearer`.
    pub header: Option<String>,
}

impl AccessToken {
    /// The cached token as handed out for a request of `requested` scopes.
    fn handed(t: &CachedToken, requested: &Scopes) -> Self {
        Self {
            token: t.token.clone(),
            token_type: t.token_type.clone(),
            expires_at: t.expires_at,
            scopes: t.scopes.clone(),
            missing_scopes: if t.scopes.contains_all(requested) {
                Scopes::default()
            } else {
                requested.difference(&t.scopes)
            },
            metadata: t.metadata.clone(),
            header: None,
        }
    }
}

/// Which grants `ListGrants` wants (`None`: any) and which page.
#[derive(Debug, Clone, Default)]
pub struct GrantQuery {
    pub provider: Option<ProviderId>,
    pub user: Option<UserId>,
    pub agent: Option<AgentId>,
    /// Only this account label's grants.
    pub account: Option<crate::domain::AccountId>,
    pub status: Option<GrantStatus>,
    /// Grants per page, 1 to `MAX_PAGE`.
    pub page_size: usize,
    /// Where the previous page stopped (decoded from its token).
    pub after: Option<String>,
}

/// The most grants one `ListGrants` page holds.
pub const MAX_PAGE: usize = 1000;

/// Grant metadata for listings. Never a token.
#[derive(Debug, Clone)]
pub struct GrantInfo {
    pub key: GrantKey,
    pub scopes: Scopes,
    pub subject: Option<String>,
    pub status: GrantStatus,
    pub has_refresh_token: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub declined: Scopes,
    pub metadata: BTreeMap<String, String>,
    pub has_stored_value: bool,
    /// When the user last consented.
    pub consented_at: i64,
    /// The connected account's email (OpenID Connect).
    pub email: Option<String>,
    /// Filled by the use case from the provider: when the grant lapses (0: never).
    pub needs_reauth_at: i64,
    /// Filled by the use case from the provider.
    pub kind: Option<crate::domain::ProviderKind>,
    pub issuer: Option<String>,
}

/// What a completed consent brought: the tokens and, for OpenID Connect, the verified subject.
#[derive(Debug)]
pub(crate) struct Consented {
    pub key: GrantKey,
    pub tokens: TokenSet,
    pub subject: Option<String>,
    /// The scopes asked for, used when the provider does not say what it granted.
    pub requested: Scopes,
    /// The provider lets a re-consent by another account replace the grant (audited).
    pub replace_account: bool,
    /// The provider's maximum grant age (seconds; 0: none).
    pub max_age: u32,
    /// The account's email from the verified ID token, if any.
    pub email: Option<String>,
}

/// Where a client token is for: the `audience` parameter and the RFC 8707 resource; for a
/// service account, the user it impersonates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClientTarget {
    pub audience: Option<String>,
    pub resource: Option<String>,
    pub subject: Option<String>,
}

impl ClientTarget {
    pub(crate) fn parse(audience: Option<&str>, resource: Option<&str>) -> Result<Self, Error> {
        if let Some(a) = audience
            && (a.len() > 512 || a.chars().any(char::is_control))
        {
            return Err(Error::invalid(
                "audience",
                "must be at most 512 characters without control characters",
            ));
        }
        if let Some(r) = resource {
            // RFC 8707 section 2: an absolute URI without a fragment.
            let ok = r.len() <= 2048
                && url::Url::parse(r)
                    .is_ok_and(|u| u.fragment().is_none() && !u.cannot_be_a_base());
            if !ok {
                return Err(Error::invalid(
                    "resource",
                    "must be an absolute URI without a fragment (RFC 8707), at most 2048 characters",
                ));
            }
        }
        Ok(Self {
            audience: audience.map(str::to_owned),
            resource: resource.map(str::to_owned),
            subject: None,
        })
    }

    /// The cache slot of a client token: per provider, scopes, audience, resource and subject.
    /// Its user is a reserved id, which no request can name: an exchanged token is reached
    /// only through the grant it was exchanged from.
    fn cache_key(&self, provider: &ProviderId, scopes: &Scopes) -> GrantKey {
        let mut s = String::new();
        for part in [
            self.audience.as_deref(),
            self.resource.as_deref(),
            self.subject.as_deref(),
        ] {
            s.push_str(part.unwrap_or(""));
            s.push('\0');
        }
        for scope in scopes.iter() {
            s.push_str(scope);
            s.push('\0');
        }
        let digest = crate::secret::hex(&crate::secret::sha256(s.as_bytes()));
        GrantKey {
            provider: provider.clone(),
            user: UserId::reserved(&format!("client/{digest}")),
            agent: None,
            account: None,
        }
    }
}

/// Cloned cheaply (its parts are shared), so a refresh can run on a task of its own.
#[derive(Debug, Clone)]
pub(crate) struct TokenBroker(Arc<Parts>);

#[derive(Debug)]
pub(crate) struct Parts {
    cache: TokenCache,
    grants: GrantRepo,
    refresher: Refresher,
    endpoint: Arc<dyn TokenEndpoint>,
    clock: Arc<dyn Clock>,
    /// Where refreshes are recorded (the daemon's trail; none in service tests).
    audit: Option<Arc<crate::audit::Audit>>,
}

impl std::ops::Deref for TokenBroker {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

impl TokenBroker {
    /// Records every refresh in `audit` when there is one.
    pub(crate) fn new(
        grants: GrantRepo,
        endpoint: Arc<dyn TokenEndpoint>,
        clock: Arc<dyn Clock>,
        audit: Option<Arc<crate::audit::Audit>>,
    ) -> Self {
        Self(Arc::new(Parts {
            cache: TokenCache::default(),
            refresher: Refresher::new(grants.clone(), endpoint.clone(), clock.clone()),
            endpoint,
            grants,
            clock,
            audit,
        }))
    }

    /// A change to a grant the daemon made itself (a refresh, an account replaced), in the
    /// audit trail.
    fn audit_grant(&self, key: &GrantKey, event: &str, outcome: &str) {
        if let Some(audit) = &self.audit {
            let subject = crate::audit::Subject {
                provider: key.provider.as_str(),
                user: key.user.as_str(),
                agent: key.agent.as_ref().map_or("", |a| a.as_str()),
            };
            audit.record(event, "valet", subject, outcome);
        }
    }

    fn audit_refresh(&self, key: &GrantKey, outcome: &str) {
        self.audit_grant(key, "GrantRefreshed", outcome);
    }

    /// A token from the cache, the grant's kept token, or a refresh of the stored grant.
    /// `None`: consent needed.
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
            return Ok(Some(AccessToken::handed(&t, scopes)));
        }
        // Boxed: the lock, the store and a refresh stay out of the cached path's future, which
        // every call allocates and moves.
        Box::pin(self.usable_token_uncached(provider, key, scopes, min_ttl, waited_since)).await
    }

    /// `usable_token` past a cache miss: under the grant's lock, the cache again, then the store.
    async fn usable_token_uncached(
        &self,
        provider: &ProviderConfig,
        key: &GrantKey,
        scopes: &Scopes,
        min_ttl: i64,
        waited_since: Instant,
    ) -> Result<Option<AccessToken>, Error> {
        let guard = self.cache.lock(key).await;
        let now = self.clock.now_unix();
        if let Some(t) = self
            .cache
            .usable(key, scopes, now, min_ttl, Some(waited_since))
        {
            return Ok(Some(AccessToken::handed(&t, scopes)));
        }
        let Some((grant, version)) = self.grants.get(key).await? else {
            return Ok(None);
        };
        let needed = scopes.difference(&grant.declined);
        let max_age = provider.max_grant_age_seconds;
        // Past the provider's maximum grant age: the user consents again (re-attestation).
        let lapsed = max_age > 0 && now >= grant.reauth_at(max_age);
        if lapsed || !grant.usable_for(&needed, now) || self.refresher.is_lost(key) {
            return Ok(None);
        }
        if grant.refresh_token.is_none() {
            return Ok(self.kept_token(grant, scopes, now, min_ttl, max_age));
        }
        // The access token the last refresh stored (by this process before a restart, or by a
        // replica) serves while it lives long enough.
        if grant.access_token.is_some()
            && grant.refreshing.is_none()
            && let Some(t) = self.kept_token(grant.clone(), scopes, now, min_ttl, max_age)
        {
            return Ok(Some(t));
        }
        let Some(client) = provider.kind.oauth_client() else {
            return Ok(None);
        };
        self.refresh_settled(guard, client, grant, version, scopes, max_age)
            .await
    }

    /// Refreshes `grant` (read at `version`) and records what it came to (`settle`) on a task of
    /// its own that holds the grant's lock (`guard`) to the end: a caller that goes away (its
    /// deadline, a cancelled call) cuts off neither the store's write of a rotated refresh token
    /// nor the audit event and cache update after it, no other call of this process presents the
    /// same refresh token meanwhile, and shutdown waits for it (`tasks`).
    async fn refresh_settled(
        &self,
        guard: OwnedMutexGuard<()>,
        client: &OAuthClient,
        grant: Grant,
        version: u64,
        scopes: &Scopes,
        max_age: u32,
    ) -> Result<Option<AccessToken>, Error> {
        let (this, client, scopes) = (self.clone(), client.clone(), scopes.clone());
        super::tasks::detached("the refresh's task ended", async move {
            let _guard = guard;
            let key = grant.key.clone();
            let started = std::time::Instant::now();
            let refreshed = this.refresher.refresh(&client, grant, version).await;
            if let Some(audit) = &this.audit {
                audit
                    .metrics()
                    .refresh_took(key.provider.as_str(), started.elapsed());
            }
            let now = this.clock.now_unix();
            this.settle(&key, refreshed, &scopes, now, max_age)
        })
        .await?
    }

    /// What a refresh came to, recorded (audit, cache): the token it yields, if any.
    fn settle(
        &self,
        key: &GrantKey,
        refreshed: Result<Refreshed, Error>,
        scopes: &Scopes,
        now: i64,
        max_age: u32,
    ) -> Result<Option<AccessToken>, Error> {
        match refreshed {
            Ok(Refreshed::Token(set, grant)) => {
                self.audit_refresh(key, "ok");
                Ok(Some(self.cache_token(&grant, set, scopes, max_age)))
            }
            // Refreshed by another replica after this call began: fresh for it whatever its
            // `min_ttl`, as a refresh by this process would be.
            Ok(Refreshed::Shared(grant)) => Ok(self.kept_token(*grant, scopes, now, 0, max_age)),
            Ok(Refreshed::Gone) => {
                self.audit_refresh(key, "REAUTHORIZATION_REQUIRED");
                self.cache.remove(key);
                Ok(None)
            }
            Err(e) => {
                let transient = e.class() == super::Class::Unavailable;
                self.audit_refresh(key, if transient { "unavailable" } else { "failed" });
                if self.refresher.is_lost(key) {
                    self.cache.remove(key);
                }
                Err(e)
            }
        }
    }

    /// Every grant of `provider`, secrets included (for a sealed export); more than `max` is
    /// refused.
    pub(crate) async fn export(
        &self,
        provider: &ProviderId,
        max: usize,
    ) -> Result<Vec<Grant>, Error> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (page, next) = self
                .grants
                .page(
                    Some(std::slice::from_ref(provider)),
                    None,
                    after.as_deref(),
                    MAX_PAGE,
                    |_| true,
                )
                .await?;
            all.extend(page);
            if all.len() > max {
                return Err(Error::Exhausted(format!(
                    "the provider has more than {max} grants: too many for one export"
                )));
            }
            match next {
                Some(n) => after = Some(n),
                None => return Ok(all),
            }
        }
    }

    /// Marks `key`'s cached token as handed to a caller now (the refresh-ahead task's "in use").
    pub(crate) fn touch(&self, key: &GrantKey) {
        self.cache.touch(key, self.clock.now_unix());
    }

    /// Grants handed out in the last `window` seconds whose token has less than `lead` seconds
    /// left, with the token's scopes.
    pub(crate) fn due_ahead(&self, window: i64, lead: i64) -> Vec<(GrantKey, Scopes)> {
        let now = self.clock.now_unix();
        self.cache.due(now, now - window, lead)
    }

    /// Drops cached tokens that can serve no one (`TokenCache::sweep`).
    pub(crate) fn sweep_cache(&self) -> usize {
        self.cache.sweep(self.clock.now_unix())
    }

    /// Tells the audit trail (and so `WatchGrants` and webhooks) that `key` reaches its
    /// provider's maximum age soon.
    pub(crate) fn reauth_due(&self, key: &GrantKey) {
        self.audit_grant(key, "GrantReauthDue", "ok");
    }

    /// Keep-alive: refreshes `key` if its grant was last written before `stale_before`, so a
    /// provider that revokes idle refresh tokens keeps it. Checked again under the grant's lock
    /// and claim, so replicas sharing the store refresh it once. `true`: it was refreshed here.
    pub(crate) async fn keep_alive(
        &self,
        provider: &ProviderConfig,
        key: &GrantKey,
        stale_before: i64,
    ) -> Result<bool, Error> {
        let guard = self.cache.lock(key).await;
        let Some((grant, version)) = self.grants.get(key).await? else {
            return Ok(false);
        };
        let idle = grant.updated_at < stale_before
            && grant.refresh_token.is_some()
            && grant.status == crate::domain::GrantStatus::Active
            && !self.refresher.is_lost(key);
        let Some(client) = provider.kind.oauth_client().filter(|_| idle) else {
            return Ok(false);
        };
        let scopes = grant.scopes.clone();
        // `Shared`: another replica refreshed it meanwhile; counted as done all the same.
        let max_age = provider.max_grant_age_seconds;
        self.refresh_settled(guard, client, grant, version, &scopes, max_age)
            .await
            .map(|t| t.is_some())
    }

    /// A token for the client itself from the cache, or bought from the token endpoint (one
    /// request per cache slot at a time). `fresh`: never the cached one.
    pub(crate) async fn client_token(
        &self,
        provider: &ProviderId,
        source: ClientGrant<'_>,
        scopes: &Scopes,
        target: &ClientTarget,
        min_ttl: i64,
        fresh: bool,
    ) -> Result<AccessToken, Error> {
        let key = target.cache_key(provider, scopes);
        let waited_since = Instant::now();
        if !fresh
            && let Some(t) = self
                .cache
                .usable(&key, scopes, self.clock.now_unix(), min_ttl, None)
        {
            return Ok(AccessToken::handed(&t, scopes));
        }
        let _guard = self.cache.lock(&key).await;
        // Whoever held the lock may just have bought one: take it.
        let now = self.clock.now_unix();
        if let Some(t) = self
            .cache
            .usable(&key, scopes, now, min_ttl, Some(waited_since))
            && (!fresh || t.obtained >= waited_since)
        {
            return Ok(AccessToken::handed(&t, scopes));
        }
        let assertion;
        let grant = match source {
            ClientGrant::Credentials(_) => TokenGrant::ClientCredentials {
                scopes,
                audience: target.audience.as_deref(),
                resource: target.resource.as_deref(),
            },
            ClientGrant::Exchange {
                subject_token,
                subject_token_type,
                ..
            } => TokenGrant::TokenExchange {
                subject_token,
                subject_token_type,
                scopes,
                audience: target.audience.as_deref(),
                resource: target.resource.as_deref(),
            },
            ClientGrant::JwtBearer(sa) => {
                let user = target.subject.as_deref();
                assertion = kind::assertion(sa, scopes, user, self.clock.now_unix())?;
                TokenGrant::JwtBearer {
                    assertion: &assertion,
                    scopes: (!sa.scope_in_assertion).then_some(scopes),
                }
            }
        };
        let set = self
            .endpoint
            .token(source.client(), grant)
            .await
            .map_err(|e| match e {
                // No user grant died: the client's own credentials or assertion were refused.
                OAuthError::InvalidGrant => Error::ProviderRejected(format!(
                    "the provider refused the {} request (invalid_grant): check the client's credentials, or the service account's key, issuer, subject and audience",
                    source.name()
                )),
                other => other.into(),
            })?;
        let granted = set.scopes.clone().unwrap_or_else(|| scopes.clone());
        let cached = self.cache.put(
            key,
            CachedToken {
                token: set.access_token,
                token_type: set.token_type,
                expires_at: self.expiry(set.expires_in),
                declined: scopes.difference(&granted),
                scopes: granted,
                metadata: Arc::new(set.metadata),
                obtained: Instant::now(),
                last_used: std::sync::atomic::AtomicI64::new(0),
                reauth_at: 0,
            },
        );
        tracing::info!(%provider, grant = source.name(), "obtained a token for the client itself");
        Ok(AccessToken::handed(&cached, scopes))
    }

    /// The access token kept with a grant that has no refresh token, if it lasts `min_ttl`.
    fn kept_token(
        &self,
        grant: Grant,
        scopes: &Scopes,
        now: i64,
        min_ttl: i64,
        max_age: u32,
    ) -> Option<AccessToken> {
        let reauth_at = grant.reauth_at(max_age);
        let token = grant.access_token?;
        if grant.expires_at != 0 && grant.expires_at - now < min_ttl {
            return None;
        }
        let cached = self.cache.put(
            grant.key.clone(),
            CachedToken {
                token,
                token_type: grant.token_type.unwrap_or_else(|| "Bearer".into()),
                expires_at: grant.expires_at,
                scopes: grant.scopes,
                declined: grant.declined,
                metadata: Arc::new(grant.metadata),
                obtained: Instant::now(),
                last_used: std::sync::atomic::AtomicI64::new(0),
                reauth_at,
            },
        );
        Some(AccessToken::handed(&cached, scopes))
    }

    /// Caches a fresh token for `grant` (as stored) and hands it out for `requested`.
    fn cache_token(
        &self,
        grant: &Grant,
        set: TokenSet,
        requested: &Scopes,
        max_age: u32,
    ) -> AccessToken {
        let cached = self.cache.put(
            grant.key.clone(),
            CachedToken {
                token: set.access_token,
                token_type: set.token_type,
                expires_at: self.expiry(set.expires_in),
                scopes: grant.scopes.clone(),
                declined: grant.declined.clone(),
                metadata: Arc::new(grant.metadata.clone()),
                obtained: Instant::now(),
                last_used: std::sync::atomic::AtomicI64::new(0),
                reauth_at: grant.reauth_at(max_age),
            },
        );
        AccessToken::handed(&cached, requested)
    }

    /// Unix seconds `lifetime` from now; 0 (no expiry) when the provider gave no lifetime: Valet
    /// never invents one.
    fn expiry(&self, lifetime: Option<std::time::Duration>) -> i64 {
        lifetime.map_or(0, |d| {
            self.clock
                .now_unix()
                .saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        })
    }

    /// The stored grant for `key`, if any.
    pub(crate) async fn grant(&self, key: &GrantKey) -> Result<Option<Grant>, Error> {
        Ok(self.grants.get(key).await?.map(|(g, _)| g))
    }

    /// Stores the grant a consent produced and caches its access token; returns the scopes
    /// asked for and not granted. Check-and-set against the version read, so a replica's
    /// concurrent refresh is merged (its newer refresh token kept when the provider sent none)
    /// rather than overwritten.
    pub(crate) async fn accept_consent(&self, c: Consented) -> Result<Scopes, Error> {
        let _guard = self.cache.lock(&c.key).await;
        let granted = c
            .tokens
            .scopes
            .clone()
            .unwrap_or_else(|| c.requested.clone());
        let mut attempts = 1;
        let grant = loop {
            let previous = self.grants.get(&c.key).await?;
            // The grant keeps its account: a consent by another subject never replaces it.
            if let (Some((old, _)), Some(new)) = (&previous, &c.subject)
                && old.status == GrantStatus::Active
                && old.subject.as_ref().is_some_and(|s| s != new)
            {
                if !c.replace_account {
                    tracing::warn!(provider = %c.key.provider, "refused a consent by another account than the grant's");
                    return Err(Error::Flow(crate::pending::FlowFailure::AccountMismatch));
                }
                tracing::warn!(provider = %c.key.provider, "a consent by another account replaces the grant's (allow_account_change)");
                self.audit_grant(&c.key, "AccountReplaced", "ok");
            }
            let cas = previous
                .as_ref()
                .map_or(Cas::Absent, |(_, v)| Cas::Version(*v));
            let grant = self.consented_grant(&c, granted.clone(), previous.map(|(g, _)| g));
            match self.grants.put(&grant, cas).await {
                Ok(_) => break grant,
                Err(StoreError::Conflict) if attempts < CONSENT_WRITE_ATTEMPTS => attempts += 1,
                Err(e) => return Err(e.into()),
            }
        };
        self.cache_token(&grant, c.tokens, &c.requested, c.max_age);
        self.refresher.forget_lost(&c.key);
        Ok(grant.declined)
    }

    /// The grant a consent leaves, given what was stored before.
    fn consented_grant(&self, c: &Consented, granted: Scopes, previous: Option<Grant>) -> Grant {
        let now = self.clock.now_unix();
        let (created_at, old_refresh, old_subject, old_metadata, old_email) = match previous {
            Some(g) => (
                g.created_at,
                g.refresh_token.filter(|_| g.status == GrantStatus::Active),
                g.subject,
                g.metadata,
                g.email,
            ),
            None => (now, None, None, BTreeMap::new(), None),
        };
        // A provider may not re-issue a refresh token on re-consent; keep the one we have.
        let refresh_token = c.tokens.refresh_token.clone().or(old_refresh);
        // Without a refresh token the access token cannot be re-obtained: keep it (sealed).
        let kept = refresh_token.is_none();
        Grant {
            key: c.key.clone(),
            declined: c.requested.difference(&granted),
            scopes: granted,
            subject: c.subject.clone().or(old_subject),
            refresh_token,
            status: GrantStatus::Active,
            created_at,
            updated_at: now,
            refreshing: None,
            access_token: kept.then(|| c.tokens.access_token.clone()),
            token_type: kept.then(|| c.tokens.token_type.clone()),
            expires_at: if kept {
                self.expiry(c.tokens.expires_in)
            } else {
                0
            },
            metadata: if c.tokens.metadata.is_empty() {
                old_metadata
            } else {
                c.tokens.metadata.clone()
            },
            consented_at: now,
            email: c.email.clone().or(old_email),
        }
    }

    /// The grant's refresh token and its current access token (cached or kept), for revoking
    /// them at the provider before the grant is deleted.
    pub(crate) async fn tokens_of(
        &self,
        key: &GrantKey,
    ) -> Result<(Option<SecretString>, Option<SecretString>), Error> {
        let Some((grant, _)) = self.grants.get(key).await? else {
            return Ok((None, None));
        };
        let cached = self.cache.current(key).map(|t| t.token.clone());
        Ok((grant.refresh_token, cached.or(grant.access_token)))
    }

    /// Stores a static credential as the grant's kept token (no refresh, no expiry).
    pub(crate) async fn put_static(
        &self,
        key: &GrantKey,
        value: SecretString,
        kind: &str,
    ) -> Result<(), Error> {
        let _guard = self.cache.lock(key).await;
        let now = self.clock.now_unix();
        let mut attempts = 1;
        loop {
            let previous = self.grants.get(key).await?;
            let (cas, created_at) = previous.as_ref().map_or((Cas::Absent, now), |(g, v)| {
                (Cas::Version(*v), g.created_at)
            });
            let grant = Grant {
                key: key.clone(),
                scopes: Scopes::default(),
                subject: None,
                refresh_token: None,
                status: GrantStatus::Active,
                created_at,
                updated_at: now,
                refreshing: None,
                access_token: Some(value.clone()),
                token_type: Some(kind.to_owned()),
                expires_at: 0,
                declined: Scopes::default(),
                metadata: BTreeMap::new(),
                consented_at: now,
                email: None,
            };
            match self.grants.put(&grant, cas).await {
                Ok(_) => break,
                Err(StoreError::Conflict) if attempts < CONSENT_WRITE_ATTEMPTS => attempts += 1,
                Err(e) => return Err(e.into()),
            }
        }
        self.cache.remove(key);
        self.refresher.forget_lost(key);
        Ok(())
    }

    /// Removes a grant from the store and the cache. Returns whether one existed.
    pub(crate) async fn revoke(&self, key: &GrantKey) -> Result<bool, Error> {
        let _guard = self.cache.lock(key).await;
        self.cache.remove(key);
        self.refresher.forget_lost(key);
        Ok(self.grants.delete(key).await?)
    }

    /// Drops `key`'s cached token (its tokens were revoked at the provider).
    pub(crate) fn forget(&self, key: &GrantKey) {
        self.cache.remove(key);
    }

    /// Drops every cached token of a deleted provider.
    pub(crate) fn forget_provider(&self, id: &ProviderId) {
        self.cache.remove_provider(id);
    }

    /// One page of grant metadata: the grants of `providers` (`None`: all) matching `q`.
    pub(crate) async fn list(
        &self,
        providers: Option<&[ProviderId]>,
        q: &GrantQuery,
    ) -> Result<(Vec<GrantInfo>, Option<String>), Error> {
        self.list_visible(providers, q, |_| true).await
    }

    /// One page of those grants `visible` keeps: filtered as the page fills, so a caller that
    /// may see only some grants still gets full pages.
    pub(crate) async fn list_visible(
        &self,
        providers: Option<&[ProviderId]>,
        q: &GrantQuery,
        visible: impl Fn(&GrantKey) -> bool,
    ) -> Result<(Vec<GrantInfo>, Option<String>), Error> {
        let now = self.clock.now_unix();
        let status = |g: &Grant| {
            if self.refresher.is_lost(&g.key) {
                GrantStatus::NeedsReauth
            } else {
                g.effective_status(now)
            }
        };
        let keep = |g: &Grant| {
            visible(&g.key)
                && q.user.as_ref().is_none_or(|u| &g.key.user == u)
                && q.agent
                    .as_ref()
                    .is_none_or(|a| g.key.agent.as_ref() == Some(a))
                && q.account
                    .as_ref()
                    .is_none_or(|a| g.key.account.as_ref() == Some(a))
                && q.status.is_none_or(|s| status(g) == s)
        };
        let (grants, next) = self
            .grants
            .page(
                providers,
                q.user.as_ref(),
                q.after.as_deref(),
                q.page_size,
                keep,
            )
            .await?;
        let grants = grants
            .into_iter()
            .map(|g| GrantInfo {
                status: status(&g),
                declined: g.declined,
                metadata: g.metadata,
                // A token that cannot be re-obtained without the user; the access token a
                // refresh keeps for replicas is not a stored value in this sense.
                has_stored_value: g.access_token.is_some() && g.refresh_token.is_none(),
                consented_at: if g.consented_at > 0 {
                    g.consented_at
                } else {
                    g.created_at
                },
                needs_reauth_at: 0,
                email: g.email,
                kind: None,
                issuer: None,
                has_refresh_token: g.refresh_token.is_some(),
                key: g.key,
                scopes: g.scopes,
                subject: g.subject,
                created_at: g.created_at,
                updated_at: g.updated_at,
            })
            .collect();
        Ok((grants, next))
    }
}
