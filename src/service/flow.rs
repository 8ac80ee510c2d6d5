//! Consent flows: starting one (a lease with state, PKCE verifier and nonce) and finishing it
//! when the provider redirects the browser to the callback.

use super::broker::{Broker, Outcome};
use super::{Caller, Error};
use crate::domain::{
    Grant, GrantKey, GrantStatus, Handout, ProviderConfig, ProviderId, ProviderKind, Scopes,
};
use crate::lease::{FlowFailure, FlowOutcome, InsertError, PendingFlow, TakeError};
use crate::oauth::{CodeExchange, OAuthError, authorization_url};
use crate::secret::{SecretString, random_token};
use crate::store::Cas;

/// Bytes of randomness in a state, PKCE verifier, nonce and auth id (256 bits).
const RANDOM_BYTES: usize = 32;

/// The query parameters of `GET /oauth/callback/{provider_id}`.
#[derive(Default)]
pub struct CallbackParams {
    pub state: Option<String>,
    pub code: Option<SecretString>,
    pub error: Option<String>,
    pub iss: Option<String>,
}

fn random() -> Result<String, Error> {
    random_token(RANDOM_BYTES).map_err(|_| Error::Internal("the system RNG failed".into()))
}

/// An OAuth error code from the provider, reduced to characters safe to echo.
fn error_code(raw: &str) -> String {
    let code: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect();
    if code.is_empty() {
        "unknown_error".into()
    } else {
        code
    }
}

impl Broker {
    /// Starts a consent flow for `key`, asking for `scopes` plus whatever the existing grant has.
    pub(super) async fn start_flow(
        &self,
        caller: &Caller,
        provider: &ProviderConfig,
        key: GrantKey,
        scopes: Scopes,
        handout: Handout,
    ) -> Result<Outcome, Error> {
        let mut scopes = match self.load_grant(&key).await? {
            Some((g, _)) if g.status == GrantStatus::Active => scopes.union(&g.scopes),
            _ => scopes,
        };
        if provider.kind == ProviderKind::Oidc {
            scopes = scopes.union(&Scopes::parse("scopes", &["openid"])?);
        }
        let state = random()?;
        let auth_id = random()?;
        let verifier = SecretString::from(random()?);
        let nonce = match provider.kind {
            ProviderKind::Oidc => Some(SecretString::from(random()?)),
            ProviderKind::OAuth2 => None,
        };
        let redirect_uri = self.providers.redirect_uri(&provider.id);
        let url = authorization_url(
            provider,
            &redirect_uri,
            &state,
            &verifier,
            nonce.as_ref(),
            &scopes,
        )
        .map_err(|e| Error::Internal(format!("cannot build the authorization URL: {e}")))?;
        let auth_url = url.to_string();
        let flow = PendingFlow {
            provider: provider.id.clone(),
            user: key.user,
            agent: key.agent,
            scopes,
            handout,
            pkce_verifier: verifier,
            nonce,
            redirect_uri,
            owner: caller.name.clone(),
        };
        let deadline = self
            .leases
            .insert(&state, &auth_id, auth_url.clone(), flow)
            .map_err(|e| match e {
                InsertError::UserFull(_) | InsertError::TableFull(_) => {
                    Error::Exhausted(e.to_string())
                }
            })?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        tracing::info!(provider = %provider.id, "started authorization flow");
        Ok(Outcome::Pending {
            auth_url,
            auth_id,
            expires_at: self.clock.now_unix() + i64::try_from(left.as_secs()).unwrap_or(0),
        })
    }

    /// Finishes the flow the callback's `state` names. Errors are safe to show on the page.
    pub async fn complete_callback(
        &self,
        provider_id: &str,
        params: CallbackParams,
    ) -> Result<(), Error> {
        let provider_id = ProviderId::parse(provider_id)?;
        let state = params
            .state
            .as_deref()
            .filter(|s| !s.is_empty() && s.len() <= 128)
            .ok_or_else(|| Error::invalid("state", "is missing or malformed"))?;
        let taken = self.leases.take(state, &provider_id).map_err(|e| match e {
            TakeError::Unknown => Error::NotFound {
                what: "authorization flow for this state (unknown, already used, or expired)",
            },
            TakeError::Expired => Error::Flow(FlowFailure::Expired),
            TakeError::WrongProvider => Error::Flow(FlowFailure::WrongProvider),
        })?;
        let result = self.finish(&provider_id, &taken.flow, params).await;
        match &result {
            Ok(key) => {
                tracing::info!(provider = %provider_id, "authorization flow completed");
                taken.finish(FlowOutcome::Completed(key.clone()));
            }
            Err(f) => {
                tracing::warn!(provider = %provider_id, reason = f.reason(), "authorization flow failed: {f}");
                taken.finish(FlowOutcome::Failed(f.clone()));
            }
        }
        result.map(|_| ()).map_err(Error::Flow)
    }

    async fn finish(
        &self,
        provider_id: &ProviderId,
        flow: &PendingFlow,
        params: CallbackParams,
    ) -> Result<GrantKey, FlowFailure> {
        let provider = self
            .providers
            .get(provider_id)
            .map_err(|_| FlowFailure::ProviderError("the provider was deleted".into()))?;
        // RFC 9207: when the provider names itself, it must be the issuer we expect.
        if let (Some(iss), Some(expected)) = (&params.iss, &provider.issuer)
            && iss != expected
        {
            return Err(FlowFailure::IssuerMismatch);
        }
        if let Some(err) = &params.error {
            return Err(match err.as_str() {
                "access_denied" => FlowFailure::AccessDenied,
                other => FlowFailure::ProviderError(error_code(other)),
            });
        }
        let code = params
            .code
            .as_ref()
            .ok_or_else(|| FlowFailure::ProviderError("the callback carries no code".into()))?;
        let set = self
            .endpoint
            .exchange_code(
                &provider,
                CodeExchange {
                    code,
                    pkce_verifier: &flow.pkce_verifier,
                    nonce: flow.nonce.as_ref(),
                    redirect_uri: &flow.redirect_uri,
                },
            )
            .await
            .map_err(|e| match e {
                OAuthError::IdToken(m) => FlowFailure::IdTokenRejected(m),
                other => FlowFailure::ExchangeFailed(other.to_string()),
            })?;
        let key = flow.grant_key();
        let _guard = self.cache.lock(&key).await;
        let stored =
            |e: Error| FlowFailure::ExchangeFailed(format!("could not store the grant: {e}"));
        let now = self.clock.now_unix();
        let scopes = set.scopes.clone().unwrap_or_else(|| flow.scopes.clone());
        // Check-and-set against the version read, so a replica's concurrent refresh is merged
        // (its newer refresh token kept when the provider sent none) rather than overwritten.
        let mut attempts = 0;
        loop {
            let previous = self.load_grant(&key).await.map_err(stored)?;
            let (cas, created_at, old_refresh, old_subject) = match previous {
                Some((g, version)) => (
                    Cas::Version(version),
                    g.created_at,
                    g.refresh_token.filter(|_| g.status == GrantStatus::Active),
                    g.subject,
                ),
                None => (Cas::Absent, now, None, None),
            };
            let grant = Grant {
                key: key.clone(),
                scopes: scopes.clone(),
                subject: set.subject.clone().or(old_subject),
                // A provider may not re-issue a refresh token on re-consent; keep the one we have.
                refresh_token: set.refresh_token.clone().or(old_refresh),
                status: GrantStatus::Active,
                created_at,
                updated_at: now,
                refreshing: None,
            };
            match self.save_grant(&grant, cas).await {
                Ok(_) => break,
                Err(Error::Conflict) if attempts < 4 => attempts += 1,
                Err(e) => return Err(stored(e)),
            }
        }
        self.cache_token(&key, set, &scopes);
        self.set_unstored(&key, false);
        Ok(key)
    }
}
