//! Consent flows: starting one (a pending entry holding the state's hash, the PKCE verifier and
//! nonce, and an authorization URL from the provider's kind) and taking it back, once, when the
//! provider redirects the browser to the callback.

use super::Error;
use super::kind::{self, CallbackParams};
use crate::clock::Clock;
use crate::domain::{Caller, GrantKey, Handout, ProviderConfig, ProviderId, Scopes};
use crate::oauth::{TokenEndpoint, TokenSet};
use crate::pending::{
    ConsentLink, DevicePrompt, FlowFailure, FlowOutcome, FlowView, InsertError, Inserted,
    PendingFlow, PendingFlows, TakeError, Taken,
};
use crate::secret::{SecretString, random_token, sha256};
use std::sync::Arc;

/// Bytes of randomness in a state, PKCE verifier, nonce and auth id (256 bits).
const RANDOM_BYTES: usize = 32;
/// Longest `state` even looked up.
const MAX_STATE: usize = 128;

/// What a new flow asks for, for whom, and where the browser comes back.
#[derive(Debug)]
pub(crate) struct Ask {
    pub key: GrantKey,
    pub scopes: Scopes,
    pub handout: Handout,
    pub redirect_uri: String,
    /// Join a live flow for the same request instead of starting another.
    pub join: bool,
}

/// A flow that has just been started.
#[derive(Debug)]
pub(crate) struct Started {
    pub auth_url: ConsentLink,
    pub auth_id: String,
    pub expires_at: i64,
    /// Device flow: the user code and where to enter it.
    pub prompt: Option<DevicePrompt>,
}

/// A new device flow's polling (RFC 8628 section 3.4), for `device::poll`.
#[derive(Debug)]
pub(crate) struct Polling {
    /// Finds the pending flow; never leaves the daemon.
    pub state: SecretString,
    pub auth_id: String,
    pub device_code: SecretString,
    pub interval: std::time::Duration,
    /// The earlier of the flow's deadline and the device code's expiry.
    pub deadline: tokio::time::Instant,
}

/// Reports how a taken flow ended to whoever waits on it (failures are logged once, by the
/// callback or poller that reports them).
pub(crate) fn report(
    audit: &crate::audit::Audit,
    taken: &Taken,
    result: &Result<GrantKey, FlowFailure>,
) {
    let f = &taken.flow;
    let subject = crate::audit::Subject::of(&f.provider, &f.user, f.agent.as_ref());
    let outcome = result.as_ref().map_or_else(FlowFailure::code, |_| "ok");
    audit.record("FlowCompleted", &f.owner, subject, outcome);
    match result {
        Ok(key) => {
            tracing::info!(provider = %taken.flow.provider, "authorization flow completed");
            taken.finish(FlowOutcome::Completed(key.clone()));
        }
        Err(f) => taken.finish(FlowOutcome::Failed(f.clone())),
    }
}

/// How a consent whose grant could not be stored fails its flow.
pub(crate) fn stored_failure(provider: &ProviderId, e: Error) -> FlowFailure {
    match e {
        Error::Flow(f) => f,
        e => {
            // The flow fails with a fixed message; the cause goes to the log here, once.
            tracing::warn!(%provider, "storing a new grant failed: {}", e.chain());
            FlowFailure::ExchangeFailed(format!("could not store the grant: {e}"))
        }
    }
}

/// Who asked for what, as a digest: equal requests join one live flow.
fn request_digest(caller: &Caller, key: &GrantKey, scopes: &Scopes, handout: Handout) -> [u8; 32] {
    // Ids and scopes hold no NUL (ids refuse control characters), so NUL separates unambiguously.
    let mut s = format!(
        "{}\0{}\0{}\0{}\0{}\0{handout:?}\0",
        caller.name,
        key.provider,
        key.user,
        key.agent.as_ref().map_or("", |a| a.as_str()),
        key.account.as_ref().map_or("", |a| a.as_str()),
    );
    for scope in scopes.iter() {
        s.push_str(scope);
        s.push('\0');
    }
    sha256(s.as_bytes())
}

fn random() -> Result<String, Error> {
    random_token(RANDOM_BYTES).map_err(|_| Error::internal("the system RNG failed"))
}

#[derive(Debug)]
pub(crate) struct Flows {
    pending: Arc<PendingFlows>,
    endpoint: Arc<dyn TokenEndpoint>,
    clock: Arc<dyn Clock>,
    /// This replica's tag, put before every state it issues (`replicas.rs`).
    state_prefix: Option<String>,
}

impl Flows {
    pub(crate) fn new(
        pending: Arc<PendingFlows>,
        endpoint: Arc<dyn TokenEndpoint>,
        clock: Arc<dyn Clock>,
        state_prefix: Option<String>,
    ) -> Self {
        Self {
            pending,
            endpoint,
            clock,
            state_prefix,
        }
    }

    /// Unix seconds at the monotonic `deadline`.
    fn unix_at(&self, deadline: tokio::time::Instant) -> i64 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.clock.now_unix() + i64::try_from(left.as_secs()).unwrap_or(0)
    }

    fn joined(&self, existing: Inserted) -> Option<Started> {
        match existing {
            Inserted::New(_) => None,
            Inserted::Existing {
                auth_id,
                auth_url,
                deadline,
                prompt,
            } => Some(Started {
                auth_url,
                auth_id,
                expires_at: self.unix_at(deadline),
                prompt,
            }),
        }
    }

    /// Starts a consent flow; with `join`, the same caller asking the same again while a flow is
    /// live gets that flow. A device flow (RFC 8628) first asks the provider for a user code and
    /// also returns what its poller needs.
    pub(crate) async fn start(
        &self,
        caller: &Caller,
        provider: &ProviderConfig,
        ask: Ask,
    ) -> Result<(Started, Option<Polling>), Error> {
        let Ask {
            key,
            scopes,
            handout,
            redirect_uri,
            join,
        } = ask;
        let request = join.then(|| request_digest(caller, &key, &scopes, handout));
        if let Some(started) = request
            .and_then(|r| self.pending.live(&r))
            .and_then(|e| self.joined(e))
        {
            return Ok((started, None));
        }
        let consent = kind::consent(&provider.kind).ok_or(Error::invalid(
            "provider_id",
            "this provider's kind has no consent flow",
        ))?;
        let state = match &self.state_prefix {
            Some(tag) => format!("{tag}.{}", random()?),
            None => random()?,
        };
        let auth_id = random()?;
        let verifier = SecretString::from(random()?);
        let (auth_url, scopes, nonce, device) = match consent.device_url() {
            None => {
                let begun = consent.begin(scopes, &redirect_uri, &state, &verifier, random)?;
                (begun.auth_url, begun.scopes, begun.nonce, None)
            }
            Some(url) => {
                let scopes = consent.scopes_for(scopes)?;
                let d = self
                    .endpoint
                    .device_authorization(consent.client(), url, &scopes)
                    .await?;
                let shown = d.verification_uri_complete.clone();
                (
                    shown.unwrap_or_else(|| d.verification_uri.clone()).into(),
                    scopes,
                    None,
                    Some(d),
                )
            }
        };
        let prompt = device.as_ref().map(|d| DevicePrompt {
            user_code: d.user_code.clone(),
            verification_uri: d.verification_uri.clone(),
        });
        let flow = PendingFlow {
            provider: provider.id.clone(),
            user: key.user,
            agent: key.agent,
            account: key.account,
            scopes,
            handout,
            pkce_verifier: verifier,
            nonce,
            redirect_uri,
            owner: caller.name.clone(),
            prompt: prompt.clone(),
        };
        let inserted = self
            .pending
            .insert_or_join(&state, &auth_id, auth_url.clone(), flow, request)
            .map_err(|e| match e {
                InsertError::UserFull(_)
                | InsertError::TableFull(_)
                | InsertError::CallerFull(_)
                | InsertError::CallerTableFull(_)
                | InsertError::TooLarge(_)
                | InsertError::TableTooLarge(_) => Error::Exhausted(e.to_string()),
            })?;
        let Inserted::New(deadline) = inserted else {
            // Another call started the same flow meanwhile: that one, and its poller.
            return Ok((self.joined(inserted).ok_or(Error::internal("join"))?, None));
        };
        tracing::info!(provider = %provider.id, device = device.is_some(), "started authorization flow");
        let polling = device.map(|d| Polling {
            state: state.into(),
            auth_id: auth_id.clone(),
            device_code: d.device_code,
            interval: d.interval,
            deadline: deadline.min(tokio::time::Instant::now() + d.expires_in),
        });
        // A device code that expires first ends the flow then (its poller ends it): said so, to
        // this caller and to whoever waits on or joins the flow.
        let deadline = polling.as_ref().map_or(deadline, |p| p.deadline);
        self.pending.ends_early(&auth_id, deadline);
        let started = Started {
            auth_url,
            auth_id,
            expires_at: self.unix_at(deadline),
            prompt,
        };
        Ok((started, polling))
    }

    /// Takes the flow the callback's `state` names, once, on the provider it was issued for.
    pub(crate) fn take(
        &self,
        provider: &ProviderId,
        params: &CallbackParams,
    ) -> Result<Taken, Error> {
        let state = params
            .state
            .as_deref()
            .filter(|s| !s.is_empty() && s.len() <= MAX_STATE)
            .ok_or_else(|| Error::invalid("state", "is missing or malformed"))?;
        self.pending.take(state, provider).map_err(|e| match e {
            TakeError::Unknown => Error::NotFound {
                what: "authorization flow for this state (unknown, already used, or expired)",
            },
            TakeError::Expired => Error::Flow(FlowFailure::Expired),
            TakeError::WrongProvider => Error::Flow(FlowFailure::WrongProvider),
        })
    }

    /// Checks the callback against the taken flow and exchanges its code at the provider.
    pub(crate) async fn exchange(
        &self,
        provider: &ProviderConfig,
        flow: &PendingFlow,
        params: &CallbackParams,
    ) -> Result<(TokenSet, Option<String>), FlowFailure> {
        let consent = kind::consent(&provider.kind).ok_or_else(|| {
            FlowFailure::ProviderError("the provider no longer runs consent flows".into())
        })?;
        consent.finish(&*self.endpoint, flow, params).await
    }

    /// The pending table, for device-flow pollers.
    pub(crate) fn pending(&self) -> Arc<PendingFlows> {
        self.pending.clone()
    }

    /// The flow `auth_id`, if any.
    pub(crate) fn view(&self, auth_id: &str) -> Option<FlowView> {
        self.pending.view(auth_id)
    }

    /// Unix seconds when the viewed flow expires.
    pub(crate) fn expires_at(&self, view: &FlowView) -> i64 {
        self.unix_at(view.expires_at)
    }
}
