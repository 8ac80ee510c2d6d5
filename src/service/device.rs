//! The device authorization grant's polling (RFC 8628 sections 3.4 and 3.5): one task per device
//! flow asks the token endpoint at the provider's interval, waits on `authorization_pending` and
//! on transient failures, slows down by five seconds on `slow_down`, and stops at the device
//! code's expiry. The outcome reaches `WaitForCompletion` through the pending table, exactly as a
//! callback's does, and the grant is stored the same way.

use super::broker::{Consented, TokenBroker};
use super::flows::{Polling, report};
use super::kind;
use crate::domain::ProviderConfig;
use crate::oauth::{OAuthError, TokenEndpoint, TokenGrant, TokenSet};
use crate::pending::{FlowFailure, FlowOutcome, PendingFlows, Taken};
use crate::secret::ExposeSecret as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, sleep_until};

/// RFC 8628 section 3.5: on `slow_down` the interval grows by 5 seconds for good.
const SLOW_DOWN: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(crate) struct DevicePoll {
    pub endpoint: Arc<dyn TokenEndpoint>,
    pub pending: Arc<PendingFlows>,
    pub broker: TokenBroker,
    pub audit: Arc<crate::audit::Audit>,
    pub provider: ProviderConfig,
    pub polling: Polling,
}

impl DevicePoll {
    /// Polls on a task of its own until the user acts (minutes: shutdown does not wait for
    /// that), then stores the grant as work shutdown waits for (`tasks`): the device code is
    /// spent once the provider answered with tokens.
    pub(crate) fn spawn(self) {
        tokio::spawn(async move {
            let result = self.wait().await;
            let _ =
                super::tasks::detached("the device flow's task ended", self.finish(result)).await;
        });
    }

    async fn finish(self, result: Result<TokenSet, FlowFailure>) {
        // Expired, swept or taken already: the table has failed it closed.
        let Ok(taken) = self
            .pending
            .take(self.polling.state.expose_secret(), &self.provider.id)
        else {
            return;
        };
        let result = match result {
            Ok(tokens) => self.accept(&taken, tokens).await,
            Err(f) => Err(f),
        };
        if let Err(f) = &result {
            tracing::info!(provider = %self.provider.id, "device authorization failed: {f}");
        }
        report(&self.audit, &taken, &result);
    }

    /// Whether anyone can still collect the flow's outcome.
    fn abandoned(&self) -> bool {
        self.pending
            .view(&self.polling.auth_id)
            .is_none_or(|v| v.outcome.get() != FlowOutcome::Pending)
    }

    async fn wait(&self) -> Result<TokenSet, FlowFailure> {
        let consent = kind::consent(&self.provider.kind).ok_or_else(|| {
            FlowFailure::ProviderError("the provider no longer runs consent flows".into())
        })?;
        let grant = || TokenGrant::DeviceCode(&self.polling.device_code);
        let mut interval = self.polling.interval;
        loop {
            let next = Instant::now() + interval;
            if next >= self.polling.deadline {
                sleep_until(self.polling.deadline).await;
                return Err(FlowFailure::Expired);
            }
            sleep_until(next).await;
            if self.abandoned() {
                return Err(FlowFailure::Expired);
            }
            match self.endpoint.token(consent.client(), grant()).await {
                Ok(tokens) => return Ok(tokens),
                Err(OAuthError::Rejected(code)) => match code.as_str() {
                    "authorization_pending" => {}
                    "slow_down" => interval += SLOW_DOWN,
                    "access_denied" => return Err(FlowFailure::AccessDenied),
                    "expired_token" => return Err(FlowFailure::Expired),
                    other => return Err(FlowFailure::ProviderError(other.to_owned())),
                },
                // Rate limited: back off as for slow_down.
                Err(OAuthError::RateLimited(_)) => interval += SLOW_DOWN,
                // Transient: keep polling until the code expires.
                Err(OAuthError::Unavailable(e) | OAuthError::UnavailableFor(e, _)) => {
                    tracing::debug!(provider = %self.provider.id, "device poll failed: {e}");
                }
                Err(e) => return Err(FlowFailure::ExchangeFailed(e.to_string())),
            }
        }
    }

    /// Verifies the tokens (OpenID Connect: the ID token) and stores the grant.
    async fn accept(
        &self,
        taken: &Taken,
        tokens: TokenSet,
    ) -> Result<crate::domain::GrantKey, FlowFailure> {
        let consent = kind::consent(&self.provider.kind).ok_or_else(|| {
            FlowFailure::ProviderError("the provider no longer runs consent flows".into())
        })?;
        let subject = consent.device_subject(&*self.endpoint, &tokens).await?;
        let key = taken.flow.grant_key();
        let consented = Consented {
            key: key.clone(),
            tokens,
            subject,
            requested: taken.flow.scopes.clone(),
            replace_account: self
                .provider
                .kind
                .auth_code()
                .is_some_and(|c| c.allow_account_change),
            max_age: self.provider.max_grant_age_seconds,
            email: None,
        };
        self.broker
            .accept_consent(consented)
            .await
            .map_err(|e| super::flows::stored_failure(&self.provider.id, e))?;
        Ok(key)
    }
}
