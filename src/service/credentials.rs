//! The credentials use case: what the transport calls. It authorizes each call with the policy
//! and composes the parts that own state: the token broker (cache, refresh, grants), consent
//! flows, and references. None of those parts knows about another.

use super::Error;
use super::broker::ClientTarget;
use super::broker::{AccessToken, Consented, GrantInfo, GrantQuery, MAX_PAGE, TokenBroker};
use super::device::DevicePoll;
use super::flows::{Ask, Flows};
use super::kind::CallbackParams;
use super::kind::ClientGrant;
use super::kind::{self, Acquisition, ProviderRevocation};
use super::policy::{self, Action};
use super::providers::ProviderRegistry;
use super::references::References;
use crate::clock::Clock;
use crate::domain::{
    AccountId, AgentId, Applied, Caller, GrantKey, GrantStatus, Handout, HandoutPolicy,
    ProviderConfig, ProviderId, Scopes, UserId,
};
use crate::oauth::TokenEndpoint;
use crate::pending::{FlowFailure, FlowOutcome, PendingFlows};
use crate::secret::SecretString;
use crate::store::{GrantRepo, MetaRepo, ReferenceRepo, SecretStore};
use std::sync::Arc;
use std::time::Duration;

/// Bounds on caller-supplied durations.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub default_min_ttl: u32,
    pub max_min_ttl: u32,
    pub default_wait: Duration,
    pub max_wait: Duration,
}

/// What deleting a provider did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderDeleted {
    /// Grants deleted with it.
    pub grants: u32,
    /// With `revoke_at_provider`: grants whose tokens the provider revoked, and those it did not.
    pub revoked_at_provider: u32,
    pub revocation_failures: u32,
}

/// A validated Authenticate request.
#[derive(Debug)]
pub struct AuthRequest {
    pub provider: ProviderId,
    /// Required for kinds that act for a user; absent for client credentials.
    pub user: Option<UserId>,
    pub agent: Option<AgentId>,
    /// Empty: the provider's default scopes.
    pub scopes: Scopes,
    pub handout: Handout,
    /// 0: the daemon default.
    pub min_ttl: u32,
    pub force_reauth: bool,
    /// Client credentials: the `audience` parameter and the RFC 8707 resource indicator.
    pub audience: Option<String>,
    pub resource: Option<String>,
    /// On-behalf-of: a token the agent presents for exchange (RFC 8693).
    pub subject_token: Option<SubjectToken>,
    /// The scopes an API's `insufficient_scope` challenge named: asked for too, and capped
    /// (`ChallengeCap`).
    pub challenged: Scopes,
    /// The API answered the token it was given with a 401 `invalid_token` challenge: a new one
    /// is obtained (a refresh) rather than the same one handed out again.
    pub token_refused: bool,
    /// One of the user's several accounts at the provider (`None`: the default).
    pub account: Option<AccountId>,
}

/// The most grants one export holds.
const MAX_EXPORT: usize = 100_000;

/// Revocations at a provider in flight at once when a provider is deleted with
/// `revoke_at_provider`.
const REVOKE_AT_ONCE: usize = 16;

/// `WatchGrants`' stream: grant changes, or how many a slow watcher missed.
pub type GrantChanges =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<crate::audit::GrantChange, u64>> + Send>>;

/// How a callback ended.
#[derive(Debug)]
pub enum CallbackDone {
    /// The grant is stored; these scopes were not granted.
    Stored(Scopes),
    /// Consent binding: send the browser here (the operator's app, with the one-time session).
    Bind(url::Url),
}

/// A token to exchange (RFC 8693 section 2.1): the token and its type URI.
pub struct SubjectToken {
    pub token: SecretString,
    pub kind: &'static str,
}

impl std::fmt::Debug for SubjectToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectToken")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// What `Resolve` hands out: the token, and the credential applied as the provider places it.
#[derive(Debug)]
pub struct Resolved {
    pub token: AccessToken,
    pub applied: Applied,
}

/// `token` with the header its provider takes it in, when that is not `Authorization: Bearer`
/// (a `token_type` is then no scheme to write before it: none is said).
fn placed(token: AccessToken, provider: &ProviderConfig) -> AccessToken {
    match kind::token_header(&provider.kind) {
        Some(header) => AccessToken {
            header: Some(header.to_owned()),
            token_type: String::new(),
            ..token
        },
        None => token,
    }
}

/// What Authenticate and WaitForCompletion answer.
#[derive(Debug)]
pub enum Outcome {
    Token(AccessToken),
    /// An opaque reference (a bearer credential for `Resolve`, hence secret).
    Reference {
        reference: SecretString,
        expires_at: i64,
    },
    /// A flow's end when the caller asked only to wait (`WaitForCompletion` with
    /// `status_only`): the consent was given, nothing was handed out.
    Completed,
    Pending {
        auth_url: crate::pending::ConsentLink,
        auth_id: String,
        expires_at: i64,
        /// Device flow: the user code and where to enter it.
        prompt: Option<crate::pending::DevicePrompt>,
    },
}

/// The ports and settings the use case is built from.
#[derive(Debug)]
pub struct Parts {
    pub providers: Arc<ProviderRegistry>,
    pub store: Arc<dyn SecretStore>,
    pub endpoint: Arc<dyn TokenEndpoint>,
    pub clock: Arc<dyn Clock>,
    pub pending: Arc<PendingFlows>,
    pub limits: Limits,
    pub audit: Arc<crate::audit::Audit>,
    /// Verifies user assertions, when callers are configured to need them.
    pub assertions: Option<Arc<crate::assertion::UserAssertions>>,
    /// This replica's HTTP address for the others (`replica_url`): callbacks that land on
    /// another replica come here.
    pub replica_url: Option<url::Url>,
}

#[derive(Debug)]
pub struct Credentials {
    providers: Arc<ProviderRegistry>,
    broker: TokenBroker,
    flows: Flows,
    references: References,
    endpoint: Arc<dyn TokenEndpoint>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    audit: Arc<crate::audit::Audit>,
    assertions: Option<Arc<crate::assertion::UserAssertions>>,
    bindings: super::binding::Bindings,
    replica: Option<super::replicas::Replica>,
    challenges: super::challenges::ChallengeCap,
    watches: Arc<super::watches::Watches>,
}

impl Credentials {
    pub fn new(p: Parts) -> Self {
        let max_parked = p.pending.limits().max_total;
        let replica = p
            .replica_url
            .map(|url| super::replicas::Replica::new(url, MetaRepo::new(p.store.clone())));
        Self {
            broker: TokenBroker::new(
                GrantRepo::new(p.store.clone()),
                p.endpoint.clone(),
                p.clock.clone(),
                Some(p.audit.clone()),
            ),
            flows: Flows::new(
                p.pending,
                p.endpoint.clone(),
                p.clock.clone(),
                replica.as_ref().map(|r| r.tag().to_owned()),
            ),
            endpoint: p.endpoint,
            references: References::new(
                ReferenceRepo::new(p.store.clone()),
                MetaRepo::new(p.store),
                p.clock.clone(),
            ),
            clock: p.clock,
            providers: p.providers,
            limits: p.limits,
            audit: p.audit,
            assertions: p.assertions,
            bindings: super::binding::Bindings::new(max_parked),
            replica,
            challenges: super::challenges::ChallengeCap::default(),
            watches: Arc::default(),
        }
    }

    /// A place for one more watch stream of `caller`, held as long as the stream; refused
    /// (`RESOURCE_EXHAUSTED`) while it holds its `max_watches`.
    pub fn open_watch(&self, caller: &Caller) -> Result<super::WatchSlot, Error> {
        self.watches.open(caller)
    }

    /// Ends every open watch stream (at shutdown, before the calls in flight are drained).
    pub fn close_watches(&self) {
        self.watches.close_all();
    }

    /// The Client ID Metadata Document of an MCP provider registered with one.
    pub fn client_metadata_document(&self, provider: &str) -> Option<serde_json::Value> {
        let id = ProviderId::parse(provider).ok()?;
        self.providers.client_metadata_document(&id)
    }

    /// Publishes this replica's address for callback forwarding (nothing without
    /// `replica_url`).
    pub async fn register_replica(&self) -> Result<(), Error> {
        match &self.replica {
            Some(r) => r.register().await,
            None => Ok(()),
        }
    }

    /// The address of the replica that started the flow `state` names, when that is another
    /// replica: the callback belongs there. A store failure is logged and the callback is tried
    /// here (it then fails as an unknown state).
    pub async fn callback_owner(&self, state: Option<&str>) -> Option<url::Url> {
        let (replica, state) = (self.replica.as_ref()?, state?);
        match replica.owner_of(state).await {
            Ok(owner) => owner,
            Err(e) => {
                tracing::warn!("cannot look up the replica a callback belongs to: {e}");
                None
            }
        }
    }

    /// For a caller that must prove its user: the request's user assertion is valid and names
    /// `user`.
    async fn check_user(&self, caller: &Caller, user: &UserId) -> Result<(), Error> {
        if !caller.requires_user_assertion {
            return Ok(());
        }
        let Some(presented) = &caller.user_assertion else {
            return Err(Error::PermissionDenied(
                "this caller must prove the user: send a user assertion in the x-valet-user-assertion metadata",
            ));
        };
        let Some(assertions) = &self.assertions else {
            return Err(Error::internal(
                "user assertions are required but not configured",
            ));
        };
        // Boxed: the key set's fetch stays out of every call's future (allocated and moved).
        match Box::pin(assertions.user_of(&presented.0)).await {
            Ok(u) if u == user.as_str() => Ok(()),
            Ok(_) => Err(Error::PermissionDenied(
                "the user assertion is for another user than user_id",
            )),
            Err(crate::assertion::Refused(why)) => Err(Error::PermissionDenied(why)),
        }
    }

    /// Deletes expired and spent references from the store; returns how many.
    pub async fn reap_references(&self) -> Result<usize, Error> {
        self.references.reap().await
    }

    /// Consent flows waiting for their callback.
    pub fn pending_flows(&self) -> usize {
        self.flows.pending().len()
    }

    /// The audit trail every call and flow is recorded in.
    pub fn audit(&self) -> &crate::audit::Audit {
        &self.audit
    }

    /// Refreshes grants in use ahead of expiry, and idle grants of keep-alive providers, until
    /// `stop` resolves (`ahead.rs`).
    pub async fn run_background_refresh(
        self: Arc<Self>,
        settings: super::ahead::AheadSettings,
        stop: impl std::future::Future,
    ) {
        super::ahead::run(
            self.broker.clone(),
            self.providers.clone(),
            self.clock.clone(),
            settings,
            stop,
        )
        .await;
    }

    pub fn audit_arc(&self) -> Arc<crate::audit::Audit> {
        self.audit.clone()
    }

    pub fn providers(&self) -> &Arc<ProviderRegistry> {
        &self.providers
    }

    fn min_ttl(&self, requested: u32) -> Result<i64, Error> {
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

    /// Hands out a token (or a reference) for a usable grant, or starts a consent flow; for
    /// client-credentials providers, a token for the client itself.
    pub async fn authenticate(&self, caller: &Caller, req: AuthRequest) -> Result<Outcome, Error> {
        let min_ttl = self.min_ttl(req.min_ttl)?;
        // No token live that long: the cached one is not handed out again, a refresh (or a new
        // consent, for a grant without a refresh token) gets another.
        let min_ttl = if req.token_refused {
            i64::from(u32::MAX)
        } else {
            min_ttl
        };
        if let Some(user) = &req.user {
            self.check_user(caller, user).await?;
        }
        let provider = self.providers.get(&req.provider)?;
        if req.handout == Handout::Token && provider.handout_policy == HandoutPolicy::ReferenceOnly
        {
            return Err(Error::PermissionDenied(
                "this provider hands out references only: request handout REFERENCE and Resolve it",
            ));
        }
        let scopes = if req.scopes.is_empty() {
            provider.default_scopes.clone()
        } else {
            req.scopes.clone()
        };
        // The paths other than a user's grant are boxed, so the future of the common one (a
        // cached token, allocated and moved on every call) does not carry theirs.
        if !req.challenged.is_empty() {
            return Box::pin(self.challenged(caller, &provider, req, scopes, min_ttl)).await;
        }
        match kind::acquisition(&provider.kind) {
            Acquisition::Client(client) => {
                let token = self.client_token(caller, &provider, client, &req, &scopes, min_ttl);
                Ok(Outcome::Token(placed(Box::pin(token).await?, &provider)))
            }
            Acquisition::Consent(_) => self.for_user(caller, &provider, req, scopes, min_ttl).await,
            Acquisition::Stored(_) => Box::pin(self.stored(caller, &provider, req, min_ttl)).await,
        }
    }

    /// An API's scope challenge: the challenged scopes are asked for too, so a grant lacking
    /// them starts an incremental consent, at most `ChallengeCap` times per grant and scopes.
    async fn challenged(
        &self,
        caller: &Caller,
        provider: &ProviderConfig,
        req: AuthRequest,
        scopes: Scopes,
        min_ttl: i64,
    ) -> Result<Outcome, Error> {
        if !matches!(kind::acquisition(&provider.kind), Acquisition::Consent(_)) {
            return Err(Error::invalid(
                "challenge",
                "applies to providers whose users consent (oauth2, oidc, mcp)",
            ));
        }
        let scopes = scopes.union(&req.challenged);
        // Ids hold no control characters: each part stays whole.
        let slot = format!(
            "{}\0{}\0{}\0{}\0{}",
            req.provider,
            req.user.as_ref().map_or("", |u| u.as_str()),
            req.agent.as_ref().map_or("", |a| a.as_str()),
            req.account.as_ref().map_or("", |a| a.as_str()),
            scopes.join(crate::domain::Separator::Space)
        );
        // A retry (not forced) while the last consent waits joins it: not another consent.
        let pending = self.flows.pending();
        let (joins, handout) = (!req.force_reauth, req.handout);
        self.challenges.check(&slot, |auth_id| {
            joins && pending.waiting(auth_id, &caller.name, handout)
        })?;
        let outcome = self
            .for_user(caller, provider, req, scopes, min_ttl)
            .await?;
        if let Outcome::Pending { auth_id, .. } = &outcome {
            self.challenges.started(slot, auth_id);
        }
        Ok(outcome)
    }

    /// A static credential stored for the user (or agent): never a flow.
    async fn stored(
        &self,
        caller: &Caller,
        provider: &ProviderConfig,
        req: AuthRequest,
        min_ttl: i64,
    ) -> Result<Outcome, Error> {
        let key = user_key(req.provider, req.user, req.agent, req.account)?;
        policy::authorize(caller, Action::UseGrant(&key))?;
        let none = Scopes::default();
        match self
            .broker
            .usable_token(provider, &key, &none, min_ttl)
            .await?
        {
            Some(token) => {
                self.hand_out(caller, provider, &key, token, req.handout)
                    .await
            }
            None => {
                let mut slot = format!("user '{}'", key.user);
                if let Some(agent) = &key.agent {
                    slot.push_str(&format!(", agent '{agent}' (each agent has its own slot)"));
                }
                if let Some(account) = &key.account {
                    slot.push_str(&format!(", account '{account}'"));
                }
                Err(Error::CredentialMissing {
                    provider: key.provider.to_string(),
                    slot,
                })
            }
        }
    }

    /// Stores a static credential for a user (optionally one agent). Write-only: it is never
    /// returned except applied to a request.
    pub async fn put_credential(
        &self,
        caller: &Caller,
        key: &GrantKey,
        username: &str,
        value: &SecretString,
    ) -> Result<(), Error> {
        policy::authorize(caller, Action::PutCredential(key))?;
        self.check_user(caller, &key.user).await?;
        let provider = self.providers.get(&key.provider)?;
        let Acquisition::Stored(c) = kind::acquisition(&provider.kind) else {
            return Err(Error::invalid(
                "provider_id",
                "this provider obtains its credentials itself (OAuth); only api_key, http_basic and http_bearer providers take a stored value",
            ));
        };
        let stored = kind::stored_value(c, username, value)?;
        self.broker.put_static(key, stored, c.kind.as_str()).await?;
        tracing::info!(provider = %key.provider, "credential stored");
        Ok(())
    }

    /// A user's token from their grant, or a consent flow.
    async fn for_user(
        &self,
        caller: &Caller,
        provider: &ProviderConfig,
        req: AuthRequest,
        scopes: Scopes,
        min_ttl: i64,
    ) -> Result<Outcome, Error> {
        if req.subject_token.is_some() {
            return Err(Error::invalid(
                "subject_token",
                "is for on-behalf-of exchange at client_credentials providers; a user's grant is exchanged by asking for an audience or resource",
            ));
        }
        let exchange = if req.audience.is_some() || req.resource.is_some() {
            let client = provider
                .kind
                .oauth_client()
                .filter(|c| c.token_exchange)
                .ok_or_else(|| {
                    // The field the caller gave.
                    let field = if req.audience.is_some() {
                        "audience"
                    } else {
                        "resource"
                    };
                    Error::invalid(
                        field,
                        "audience and resource apply to client_credentials providers, or to providers with token_exchange (RFC 8693)",
                    )
                })?;
            if req.handout != Handout::Token {
                return Err(Error::invalid(
                    "handout",
                    "exchanged tokens are handed out directly; a reference resolves to the grant's own token",
                ));
            }
            Some(client)
        } else {
            None
        };
        let key = user_key(
            req.provider.clone(),
            req.user.clone(),
            req.agent.clone(),
            req.account.clone(),
        )?;
        policy::authorize(caller, Action::UseGrant(&key))?;
        if let Some(client) = exchange
            && !req.force_reauth
        {
            // The grant must be usable now (a revoked grant's exchanged tokens are not served).
            let none = Scopes::default();
            if let Some(grant_token) = self
                .broker
                .usable_token(provider, &key, &none, min_ttl)
                .await?
            {
                let mut target =
                    ClientTarget::parse(req.audience.as_deref(), req.resource.as_deref())?;
                // The grant it is exchanged from, each part whole (ids hold no control
                // characters), and that grant's current token: one grant's exchanged tokens are
                // never another's, nor outlive the token they came from (a new consent, a
                // refresh).
                let from = crate::secret::sha256(
                    crate::secret::ExposeSecret::expose_secret(&grant_token.token).as_bytes(),
                );
                target.subject = Some(format!(
                    "grant\0{}\0{}\0{}\0{}",
                    key.user,
                    key.agent.as_ref().map_or("", |a| a.as_str()),
                    key.account.as_ref().map_or("", |a| a.as_str()),
                    crate::secret::hex(&from)
                ));
                let source = ClientGrant::Exchange {
                    client,
                    subject_token: &grant_token.token,
                    subject_token_type: crate::oauth::ACCESS_TOKEN_TYPE,
                };
                let token = self.broker.client_token(
                    &provider.id,
                    source,
                    &scopes,
                    &target,
                    min_ttl,
                    false,
                );
                return Ok(Outcome::Token(placed(Box::pin(token).await?, provider)));
            }
        }
        if !req.force_reauth
            && let Some(token) = self
                .broker
                .usable_token(provider, &key, &scopes, min_ttl)
                .await?
        {
            return self
                .hand_out(caller, provider, &key, token, req.handout)
                .await;
        }
        let join = !req.force_reauth;
        Box::pin(self.start_flow(caller, provider, key, scopes, req.handout, join)).await
    }

    /// A token for the client (or service account) itself: no consent, no reference; a service
    /// account with delegation may act as the named user.
    async fn client_token(
        &self,
        caller: &Caller,
        provider: &ProviderConfig,
        source: ClientGrant<'_>,
        req: &AuthRequest,
        scopes: &Scopes,
        min_ttl: i64,
    ) -> Result<AccessToken, Error> {
        let refuse = |field, why| Err(Error::invalid(field, why));
        let kind = provider.kind.kind().as_str();
        if req.agent.is_some() {
            return refuse(
                "agent_id",
                "tokens for the client itself belong to no agent: leave agent_id empty",
            );
        }
        if req.user.is_some() && !source.impersonates() {
            return refuse(
                "user_id",
                match source {
                    ClientGrant::Credentials(_) => {
                        "client_credentials providers act as the client itself: leave user_id and agent_id empty"
                    }
                    ClientGrant::JwtBearer(_) => {
                        "this service_account provider does not impersonate users (subject_from_user is off): leave user_id empty"
                    }
                    ClientGrant::Exchange { .. } => "leave user_id empty",
                },
            );
        }
        if req.handout != Handout::Token {
            return Err(Error::invalid(
                "handout",
                format!(
                    "references belong to a user's grant; {kind} tokens are handed out directly"
                ),
            ));
        }
        let mut target = ClientTarget::parse(req.audience.as_deref(), req.resource.as_deref())?;
        if matches!(source, ClientGrant::JwtBearer(_)) && target != ClientTarget::default() {
            return refuse(
                "audience",
                "audience and resource apply to client_credentials providers; a service account's audience is configured (assertion_audience)",
            );
        }
        policy::authorize(caller, Action::UseClient(&provider.id))?;
        let mut source = source;
        if let Some(st) = &req.subject_token {
            let client = match source {
                ClientGrant::Credentials(c) if c.token_exchange => c,
                _ => {
                    return refuse(
                        "subject_token",
                        "on-behalf-of exchange needs a client_credentials provider with token_exchange (RFC 8693)",
                    );
                }
            };
            source = ClientGrant::Exchange {
                client,
                subject_token: &st.token,
                subject_token_type: st.kind,
            };
            // Each presented token is its own cache slot; only its digest is kept.
            let digest = crate::secret::sha256(
                crate::secret::ExposeSecret::expose_secret(&st.token).as_bytes(),
            );
            target.subject = Some(format!("obo/{}", crate::secret::hex(&digest)));
        }
        if let Some(user) = &req.user {
            // Impersonating a user is acting for them: the same rule as using their grant.
            let key = user_key(req.provider.clone(), Some(user.clone()), None, None)?;
            policy::authorize(caller, Action::UseGrant(&key))?;
            target.subject = Some(user.to_string());
        }
        self.broker
            .client_token(
                &provider.id,
                source,
                scopes,
                &target,
                min_ttl,
                req.force_reauth,
            )
            .await
    }

    /// Starts a consent flow asking for `scopes` plus whatever the existing grant has.
    async fn start_flow(
        &self,
        caller: &Caller,
        provider: &ProviderConfig,
        key: GrantKey,
        scopes: Scopes,
        handout: Handout,
        join: bool,
    ) -> Result<Outcome, Error> {
        let scopes = match self.broker.grant(&key).await? {
            Some(g) if g.status == GrantStatus::Active => scopes.union(&g.scopes),
            _ => scopes,
        };
        let redirect_uri = self.providers.redirect_uri(&provider.id);
        let ask = Ask {
            key,
            scopes,
            handout,
            redirect_uri,
            join,
        };
        let (started, polling) = self.flows.start(caller, provider, ask).await?;
        if let Some(polling) = polling {
            DevicePoll {
                endpoint: self.endpoint.clone(),
                pending: self.flows.pending(),
                broker: self.broker.clone(),
                audit: self.audit.clone(),
                provider: provider.clone(),
                polling,
            }
            .spawn();
        }
        Ok(Outcome::Pending {
            auth_url: started.auth_url,
            auth_id: started.auth_id,
            expires_at: started.expires_at,
            prompt: started.prompt,
        })
    }

    /// Turns a usable token into what the caller asked for.
    async fn hand_out(
        &self,
        caller: &Caller,
        provider: &ProviderConfig,
        key: &GrantKey,
        token: AccessToken,
        handout: Handout,
    ) -> Result<Outcome, Error> {
        self.broker.touch(key);
        match handout {
            Handout::Token => Ok(Outcome::Token(placed(token, provider))),
            Handout::Reference { single_use } => {
                // Boxed, as a store write: a token handout's future does not carry it.
                let (reference, expires_at) = Box::pin(self.references.issue(
                    &caller.name,
                    key,
                    &token.scopes,
                    provider.reference_ttl_seconds,
                    single_use,
                ))
                .await?;
                Ok(Outcome::Reference {
                    reference,
                    expires_at,
                })
            }
        }
    }

    /// Waits for the flow `auth_id` to end, up to `timeout` (0: default; capped).
    /// Waits up to `timeout` for the flow to end; hands out what the flow's request asked for,
    /// or with `status_only` nothing (`Outcome::Completed`).
    pub async fn wait_for_completion(
        &self,
        caller: &Caller,
        auth_id: &str,
        timeout: Duration,
        status_only: bool,
    ) -> Result<Outcome, Error> {
        let timeout = if timeout.is_zero() {
            self.limits.default_wait
        } else {
            timeout.min(self.limits.max_wait)
        };
        self.await_flow(caller, auth_id, Some(timeout), !status_only)
            .await
    }

    /// The flow `auth_id` now: `Pending`, or its end if it has ended (`WatchAuthorization`'s
    /// first event).
    pub async fn flow_now(&self, caller: &Caller, auth_id: &str) -> Result<Outcome, Error> {
        self.await_flow(caller, auth_id, Some(Duration::ZERO), true)
            .await
    }

    /// Waits for the flow `auth_id` to end, however long it lives (a flow always ends: the
    /// sweeper fails it at its deadline). For `WatchAuthorization`, bounded by the call's
    /// deadline.
    pub async fn flow_end(&self, caller: &Caller, auth_id: &str) -> Result<Outcome, Error> {
        self.await_flow(caller, auth_id, None, true).await
    }

    async fn await_flow(
        &self,
        caller: &Caller,
        auth_id: &str,
        timeout: Option<Duration>,
        hand_out: bool,
    ) -> Result<Outcome, Error> {
        if auth_id.is_empty() || auth_id.len() > 128 {
            return Err(Error::invalid("auth_id", "must be 1-128 characters"));
        }
        let view = self
            .flows
            .view(auth_id)
            .ok_or_else(policy::flow_not_found)?;
        policy::authorize(caller, Action::WatchFlow { owner: &view.owner })?;
        let outcome = match timeout {
            // Now: no wait at all.
            Some(t) if t.is_zero() => Some(view.outcome.get()),
            // At shutdown a long poll ends as its timeout would, the flow still pending: no
            // callback reaches a draining daemon, so waiting on would only hold the drain.
            Some(t) => tokio::select! {
                r = tokio::time::timeout(t, view.outcome.finished()) => r.ok(),
                () = self.watches.closing() => None,
            },
            None => Some(view.outcome.finished().await),
        };
        match outcome {
            None | Some(FlowOutcome::Pending) => Ok(Outcome::Pending {
                expires_at: self.flows.expires_at(&view),
                auth_url: view.auth_url,
                auth_id: auth_id.to_owned(),
                prompt: view.prompt,
            }),
            Some(FlowOutcome::Completed(_)) if !hand_out => Ok(Outcome::Completed),
            Some(FlowOutcome::Completed(key)) => {
                // The handout's audit event and metrics name the grant, as Authenticate's do.
                super::acted_on::note(&key);
                let provider = self.providers.get(&key.provider)?;
                let token = self
                    .broker
                    .usable_token(&provider, &key, &view.scopes, 0)
                    .await?
                    .ok_or(Error::internal("the new grant is not usable"))?;
                self.hand_out(caller, &provider, &key, token, view.handout)
                    .await
            }
            Some(FlowOutcome::Failed(f)) => Err(Error::Flow(f)),
        }
    }

    /// Imports a grant from an existing refresh token (admin; users moving from another
    /// broker). One refresh at the provider proves the token before anything is stored, and
    /// its answer (with any rotated refresh token) becomes the grant; a refused token stores
    /// nothing. An active grant is never overwritten.
    pub async fn import_grant(
        &self,
        caller: &Caller,
        key: GrantKey,
        refresh_token: SecretString,
        scopes: Scopes,
    ) -> Result<GrantInfo, Error> {
        policy::authorize(caller, Action::ManageProviders)?;
        let provider = self.providers.get(&key.provider)?;
        let Some(flow) = kind::consent(&provider.kind) else {
            return Err(Error::invalid(
                "provider_id",
                "grants are imported for providers whose users consent (oauth2, oidc, mcp)",
            ));
        };
        if self
            .broker
            .grant(&key)
            .await?
            .is_some_and(|g| g.status == crate::domain::GrantStatus::Active)
        {
            return Err(Error::invalid(
                "user_id",
                "already has an active grant at this provider: revoke it first to import another",
            ));
        }
        let mut tokens = self
            .endpoint
            .token(
                flow.client(),
                crate::oauth::TokenGrant::RefreshToken(&refresh_token),
            )
            .await
            .map_err(|e| match e {
                crate::oauth::OAuthError::InvalidGrant => Error::invalid(
                    "refresh_token",
                    "the provider refused it (invalid_grant): expired, revoked, or issued to another client",
                ),
                other => other.into(),
            })?;
        // A provider that does not rotate keeps honouring the imported token.
        tokens.refresh_token = tokens.refresh_token.or(Some(refresh_token));
        self.broker
            .accept_consent(Consented {
                key: key.clone(),
                tokens,
                subject: None,
                requested: scopes,
                replace_account: false,
                max_age: provider.max_grant_age_seconds,
                email: None,
            })
            .await?;
        let query = GrantQuery {
            provider: Some(key.provider.clone()),
            user: Some(key.user.clone()),
            page_size: MAX_PAGE,
            ..Default::default()
        };
        let (grants, _) = self
            .broker
            .list(Some(std::slice::from_ref(&key.provider)), &query)
            .await?;
        grants
            .into_iter()
            .find(|g| g.key == key)
            .ok_or(Error::internal("the imported grant is not stored"))
    }

    /// A provider's grants sealed to `recipient_pem` (admin; the call is audited): for leaving.
    pub async fn export_grants(
        &self,
        caller: &Caller,
        provider: &ProviderId,
        recipient_pem: &str,
    ) -> Result<(String, usize), Error> {
        policy::authorize(caller, Action::ManageProviders)?;
        self.providers.get(provider)?;
        let grants = self.broker.export(provider, MAX_EXPORT).await?;
        let exported: Vec<_> = grants
            .into_iter()
            .map(|g| crate::export::Exported {
                provider_id: g.key.provider.to_string(),
                user_id: g.key.user.to_string(),
                agent_id: g.key.agent.map(|a| a.to_string()).unwrap_or_default(),
                account: g.key.account.map(|a| a.to_string()).unwrap_or_default(),
                stored_value: g.access_token.filter(|_| g.refresh_token.is_none()),
                refresh_token: g.refresh_token,
                scopes: g.scopes.to_vec(),
                subject: g.subject,
                created_at: g.created_at,
            })
            .collect();
        let n = exported.len();
        let sealed = crate::export::seal(&exported, recipient_pem).map_err(|e| match e {
            crate::export::SealError::BadPublicKey => {
                Error::invalid("recipient_public_key", e.to_string())
            }
            other => Error::Internal {
                context: "sealing the export",
                source: Some(Box::new(other)),
            },
        })?;
        Ok((sealed, n))
    }

    /// Grant changes from now on that the caller may see and `q` selects (as `ListGrants`:
    /// an agent key must name the user). `Err(n)`: this watcher fell behind and missed `n`.
    pub async fn watch_grants(
        &self,
        caller: &Caller,
        q: GrantQuery,
    ) -> Result<GrantChanges, Error> {
        use futures::StreamExt as _;
        use tokio::sync::broadcast::error::RecvError;
        self.may_list(caller, &q).await?;
        let caller = caller.clone();
        let changes = futures::stream::unfold(self.audit.watch_grants(), |mut rx| async move {
            let item = match rx.recv().await {
                Ok(c) => Ok(c),
                Err(RecvError::Lagged(n)) => Err(n),
                Err(RecvError::Closed) => return None,
            };
            Some((item, rx))
        });
        Ok(Box::pin(changes.filter(move |item| {
            let keep = match item {
                Err(_) => true,
                Ok(c) => selects(&q, c) && visible(&caller, c),
            };
            futures::future::ready(keep)
        })))
    }

    /// Finishes the flow the callback's `state` names: stores the grant and returns the scopes
    /// the user did not grant, or with consent binding parks it and names the operator's return
    /// URL. Errors are safe to show on the page.
    pub async fn complete_callback(
        &self,
        provider_id: &str,
        params: CallbackParams,
    ) -> Result<CallbackDone, Error> {
        let provider_id = ProviderId::parse(provider_id)?;
        let taken = self.flows.take(&provider_id, &params)?;
        let provider = self.providers.get(&provider_id).ok();
        let exchanged = match &provider {
            Some(p) => self.exchange(p, &taken.flow, &params).await,
            None => Err(FlowFailure::ProviderError(
                "the provider was deleted".into(),
            )),
        };
        let consented = match exchanged {
            Ok(c) => c,
            Err(f) => {
                super::flows::report(&self.audit, &taken, &Err(f.clone()));
                return Err(Error::Flow(f));
            }
        };
        let return_url = provider
            .as_ref()
            .and_then(|p| p.kind.auth_code())
            .and_then(|c| c.consent_return_url.clone());
        if let Some(mut url) = return_url {
            let deadline = tokio::time::Instant::now() + self.flows.pending().limits().ttl;
            return match self.bindings.park(taken, consented, deadline) {
                Ok(session) => {
                    url.query_pairs_mut().append_pair("session", &session);
                    Ok(CallbackDone::Bind(url))
                }
                Err(failed) => {
                    let (taken, e) = *failed;
                    let f = FlowFailure::ExchangeFailed(e.to_string());
                    super::flows::report(&self.audit, &taken, &Err(f));
                    Err(e)
                }
            };
        }
        let result = self.store_consent(&provider_id, consented).await;
        super::flows::report(
            &self.audit,
            &taken,
            &result
                .as_ref()
                .map(|(key, _)| key.clone())
                .map_err(Clone::clone),
        );
        result
            .map(|(_, declined)| CallbackDone::Stored(declined))
            .map_err(Error::Flow)
    }

    /// Consent binding: stores the parked consent `session` names if `user` is its flow's user.
    pub async fn complete_authorization(
        &self,
        caller: &Caller,
        session: &str,
        user: &UserId,
    ) -> Result<ProviderId, Error> {
        policy::authorize(caller, Action::BindConsent)?;
        self.check_user(caller, user).await?;
        let parked = self.bindings.take(session).ok_or(Error::NotFound {
            what: "authorization session (unknown, already used, or expired)",
        })?;
        let super::binding::Parked {
            taken,
            consented,
            deadline,
        } = parked;
        let provider = taken.flow.provider.clone();
        let result = if tokio::time::Instant::now() >= deadline {
            Err(FlowFailure::Expired)
        } else if &consented.key.user != user {
            tracing::warn!(%provider, "consent binding refused: another user vouched for");
            Err(FlowFailure::UserMismatch)
        } else {
            self.store_consent(&provider, consented)
                .await
                .map(|(key, _)| key)
        };
        super::flows::report(&self.audit, &taken, &result);
        result.map(|_| provider).map_err(Error::Flow)
    }

    /// Exchanges the callback's code and verifies what came back.
    async fn exchange(
        &self,
        provider: &ProviderConfig,
        flow: &crate::pending::PendingFlow,
        params: &CallbackParams,
    ) -> Result<Consented, FlowFailure> {
        let (mut tokens, subject) = self.flows.exchange(provider, flow, params).await?;
        if let Some(client) = provider.kind.oauth_client() {
            // What came through the browser never replaces what the token endpoint said.
            let kept = params.metadata(&client.dialect.callback_metadata);
            for name in &client.dialect.callback_metadata {
                if !kept.iter().any(|(k, _)| k == name) {
                    tracing::warn!(
                        provider = %provider.id,
                        parameter = name.as_str(),
                        "the callback carried no usable value of a parameter this provider's profile keeps (callback_metadata): the grant's metadata lacks it"
                    );
                }
            }
            for (name, value) in kept {
                tokens.metadata.entry(name).or_insert(value);
            }
        }
        // Read only from an ID token that was just verified (a subject came with it).
        let email = subject
            .as_ref()
            .and(tokens.id_token.as_ref())
            .and_then(|t| crate::oauth::id_token_claim(t, "email"));
        Ok(Consented {
            email,
            key: flow.grant_key(),
            tokens,
            subject,
            requested: flow.scopes.clone(),
            replace_account: provider
                .kind
                .auth_code()
                .is_some_and(|c| c.allow_account_change),
            max_age: provider.max_grant_age_seconds,
        })
    }

    async fn store_consent(
        &self,
        provider_id: &ProviderId,
        consented: Consented,
    ) -> Result<(GrantKey, Scopes), FlowFailure> {
        let key = consented.key.clone();
        let declined = self
            .broker
            .accept_consent(consented)
            .await
            .map_err(|e| super::flows::stored_failure(provider_id, e))?;
        Ok((key, declined))
    }

    /// A fresh access token for the grant `reference` names, for the caller it was issued to.
    pub async fn resolve(
        &self,
        caller: &Caller,
        reference: &str,
        min_ttl: u32,
        target_url: &str,
    ) -> Result<Resolved, Error> {
        let min_ttl = self.min_ttl(min_ttl)?;
        let found = self.references.find(reference).await?;
        let Some(record) = &found.record else {
            return Err(policy::reference_denied());
        };
        policy::authorize(
            caller,
            Action::ResolveReference {
                owner: &record.owner,
            },
        )?;
        if !record.live_for(&caller.name, self.clock.now_unix()) {
            return Err(policy::reference_denied());
        }
        // From here on a failure is about this grant (reauthorization, egress, the provider).
        super::acted_on::note(&record.grant);
        let provider = self
            .providers
            .get(&record.grant.provider)
            .map_err(|e| match e {
                Error::NotFound { .. } | Error::UnknownProvider(_) => policy::reference_denied(),
                other => other,
            })?;
        if !target_url.is_empty() {
            let allow_http = self.providers.allows_insecure_urls();
            policy::egress(&provider.egress_hosts, target_url, allow_http)?;
        }
        let Some(token) = self
            .broker
            .usable_token(&provider, &record.grant, &record.scopes, min_ttl)
            .await?
        else {
            return match self.broker.grant(&record.grant).await? {
                // The grant is there but the provider refused it: the user must consent again.
                Some(_) => Err(Error::ReauthorizationRequired),
                // The grant was revoked: its references died with it.
                None => {
                    self.references.forget(&found.hash);
                    Err(policy::reference_denied())
                }
            };
        };
        self.broker.touch(&record.grant);
        // Spent only once a token is in hand, so a failed resolve does not use it up.
        if record.single_use {
            self.references.spend(&found.hash).await?;
        }
        let applied = kind::apply(&provider.kind, &token.token);
        Ok(Resolved {
            token: placed(token, &provider),
            applied,
        })
    }

    /// Revokes one reference. Only the caller it was issued to, or an admin, may.
    pub async fn revoke_reference(&self, caller: &Caller, reference: &str) -> Result<bool, Error> {
        let found = self.references.find(reference).await?;
        let Some(record) = &found.record else {
            return Ok(false);
        };
        policy::authorize(
            caller,
            Action::RevokeReference {
                owner: &record.owner,
            },
        )?;
        let revoked = self.references.revoke(&found).await?;
        if revoked {
            tracing::info!(provider = %record.grant.provider, "reference revoked");
        }
        Ok(revoked)
    }

    /// Revokes a grant's tokens at the provider when it has a revocation endpoint, then removes
    /// the grant, its cached token and its references (whatever the provider said). Returns
    /// whether anything existed here, and what the provider said.
    pub async fn revoke(
        &self,
        caller: &Caller,
        key: &GrantKey,
    ) -> Result<(bool, ProviderRevocation), Error> {
        policy::authorize(caller, Action::RevokeGrant(key))?;
        self.check_user(caller, &key.user).await?;
        // The trail and the grant's watchers name the grant as stored, also when the request
        // named it with an id a new grant may not have.
        super::acted_on::note(key);
        let provider = self.providers.get(&key.provider)?;
        let (refresh, access) = self.broker.tokens_of(key).await?;
        let at_provider = if refresh.is_none() && access.is_none() {
            // No such grant (or one without tokens): nothing for the provider either.
            ProviderRevocation::NothingToRevoke
        } else {
            kind::revoke_at_provider(
                &*self.endpoint,
                &provider.kind,
                refresh.as_ref(),
                access.as_ref(),
            )
            .await
        };
        if let ProviderRevocation::Failed(why) = &at_provider {
            tracing::warn!(provider = %key.provider, "revocation at the provider failed: {why}");
        }
        let existed = self.broker.revoke(key).await?;
        let refs = self.references.drop_for_grant(key).await?;
        let revoked = existed || refs > 0;
        if revoked {
            tracing::info!(provider = %key.provider, ?at_provider, "grant revoked");
        }
        Ok((revoked, at_provider))
    }

    /// Grant metadata, optionally filtered. Agents and admins alike see metadata only.
    /// One page of the grants `q` asks for that `caller` may see, and the token of the next
    /// page. A user filter without a provider reads that user's key range at each provider.
    /// Whether the caller may list (or watch) the grants `q` selects: an agent key names the
    /// user, proven when it must be.
    async fn may_list(&self, caller: &Caller, q: &GrantQuery) -> Result<(), Error> {
        policy::authorize(
            caller,
            Action::ListGrants {
                user: q.user.as_ref(),
                agent: q.agent.as_ref(),
            },
        )?;
        if let Some(user) = &q.user {
            self.check_user(caller, user).await?;
        }
        // A mistyped provider is said, not answered with an empty list (or a silent stream).
        if let Some(provider) = &q.provider {
            self.providers.get(provider)?;
        }
        Ok(())
    }

    /// One page of the grants `q` selects that `caller` may see, after the place `page_token`
    /// (empty: from the start) sealed, and the next page's token.
    pub async fn list_grants(
        &self,
        caller: &Caller,
        mut q: GrantQuery,
        page_token: &str,
    ) -> Result<(Vec<GrantInfo>, Option<String>), Error> {
        self.may_list(caller, &q).await?;
        // A page token continues only the listing it came from: the filters are sealed in it.
        let filters = [
            q.provider.as_ref().map(ProviderId::as_str),
            q.user.as_ref().map(UserId::as_str),
            q.agent.as_ref().map(AgentId::as_str),
            q.account.as_ref().map(AccountId::as_str),
            q.status.map(|s| match s {
                crate::domain::GrantStatus::Active => "active",
                crate::domain::GrantStatus::NeedsReauth => "needs_reauth",
            }),
        ]
        .map(|f| f.unwrap_or(""))
        .join("\n");
        if !page_token.is_empty() {
            q.after = Some(self.references.open_page(page_token, &filters).await?);
        }
        let providers: Option<Vec<ProviderId>> = match (&q.provider, &q.user) {
            (Some(p), _) => Some(vec![p.clone()]),
            (None, Some(_)) => Some(self.providers.ids()?),
            (None, None) => None,
        };
        let (mut grants, next) = self
            .broker
            .list_visible(providers.as_deref(), &q, |k| policy::may_see(caller, k))
            .await?;
        for g in &mut grants {
            if let Ok(p) = self.providers.get(&g.key.provider) {
                g.kind = Some(p.kind.kind());
                g.issuer = p.kind.issuer().map(str::to_owned);
                if p.max_grant_age_seconds > 0 {
                    g.needs_reauth_at = g.consented_at + i64::from(p.max_grant_age_seconds);
                    if self.clock.now_unix() >= g.needs_reauth_at {
                        g.status = crate::domain::GrantStatus::NeedsReauth;
                    }
                }
            }
        }
        Ok((grants, self.references.seal_page(next, &filters).await?))
    }

    /// Deletes a provider, its grants, their cached tokens and their references.
    /// With `revoke_at_provider`, first revokes every grant's tokens at the provider.
    pub async fn delete_provider(
        &self,
        caller: &Caller,
        id: &ProviderId,
        revoke_at_provider: bool,
    ) -> Result<ProviderDeleted, Error> {
        policy::authorize(caller, Action::ManageProviders)?;
        let (revoked_at_provider, revocation_failures) = if revoke_at_provider {
            self.revoke_all_at_provider(id).await?
        } else {
            (0, 0)
        };
        // References first, then grants, then the provider record: interrupted anywhere, the
        // provider is still there and deleting it again finishes the job.
        self.references.drop_for_provider(id).await?;
        let grants = self.providers.delete(id).await?;
        self.broker.forget_provider(id);
        tracing::info!(provider = %id, grants, "provider deleted");
        Ok(ProviderDeleted {
            grants: u32::try_from(grants).unwrap_or(u32::MAX),
            revoked_at_provider,
            revocation_failures,
        })
    }

    /// After a provider was re-bound to another MCP server (`ProviderRegistry::update`): its
    /// cached tokens and references go with the deleted grants.
    pub async fn forget_grants(&self, id: &ProviderId) -> Result<(), Error> {
        self.broker.forget_provider(id);
        self.references.drop_for_provider(id).await.map(|_| ())
    }

    /// Revokes every grant of `id` at the provider, `REVOKE_AT_ONCE` at a time.
    async fn revoke_all_at_provider(&self, id: &ProviderId) -> Result<(u32, u32), Error> {
        let provider = self.providers.get(id)?;
        if provider
            .kind
            .auth_code()
            .is_none_or(|c| c.revocation_url.is_none())
        {
            return Err(Error::invalid(
                "revoke_at_provider",
                "the provider has no revocation_url",
            ));
        }
        let (mut revoked, mut failed) = (0, 0);
        // Page by page, so a provider with a million grants never sits in memory at once.
        let mut q = GrantQuery {
            page_size: MAX_PAGE,
            ..GrantQuery::default()
        };
        loop {
            use futures::StreamExt as _;
            let (page, next) = self.broker.list(Some(std::slice::from_ref(id)), &q).await?;
            // Several at a time: a provider that answers slowly (or not at all, each call then
            // waiting out its timeout) does not make deleting many grants take hours.
            let outcomes: Vec<Result<ProviderRevocation, Error>> = futures::stream::iter(page)
                .map(|g| {
                    let provider = &provider;
                    async move {
                        let (refresh, access) = self.broker.tokens_of(&g.key).await?;
                        let outcome = kind::revoke_at_provider(
                            &*self.endpoint,
                            &provider.kind,
                            refresh.as_ref(),
                            access.as_ref(),
                        )
                        .await;
                        // Revoked there (or maybe): not handed out from the cache meanwhile.
                        self.broker.forget(&g.key);
                        Ok(outcome)
                    }
                })
                .buffer_unordered(REVOKE_AT_ONCE)
                .collect()
                .await;
            for outcome in outcomes {
                match outcome? {
                    ProviderRevocation::Revoked => revoked += 1,
                    ProviderRevocation::Failed(why) => {
                        tracing::warn!(provider = %id, "revocation at the provider failed: {why}");
                        failed += 1;
                    }
                    ProviderRevocation::NotSupported | ProviderRevocation::NothingToRevoke => {}
                }
            }
            match next {
                Some(after) => q.after = Some(after),
                None => break,
            }
        }
        Ok((revoked, failed))
    }
}

/// The grant key of a request that acts for a user.
fn user_key(
    provider: ProviderId,
    user: Option<UserId>,
    agent: Option<AgentId>,
    account: Option<AccountId>,
) -> Result<GrantKey, Error> {
    let user = user
        .ok_or_else(|| Error::invalid("user_id", "is required (the person the agent acts for)"))?;
    Ok(GrantKey {
        provider,
        user,
        agent,
        account,
    })
}

/// Whether a grant change matches a `WatchGrants` filter.
fn selects(q: &GrantQuery, c: &crate::audit::GrantChange) -> bool {
    q.provider.as_ref().is_none_or(|p| p.as_str() == c.provider)
        && q.user.as_ref().is_none_or(|u| u.as_str() == c.user)
        && q.agent.as_ref().is_none_or(|a| a.as_str() == c.agent)
}

/// Whether the caller may see the grant a change is about (as in `ListGrants`).
fn visible(caller: &Caller, c: &crate::audit::GrantChange) -> bool {
    let key = (|| {
        Some(GrantKey {
            provider: ProviderId::parse(&c.provider).ok()?,
            // As stored: a grant's ids, held to the rules they were written under.
            user: UserId::try_from(c.user.clone()).ok()?,
            agent: if c.agent.is_empty() {
                None
            } else {
                Some(AgentId::try_from(c.agent.clone()).ok()?)
            },
            account: None,
        })
    })();
    key.is_some_and(|k| policy::may_see(caller, &k))
}
