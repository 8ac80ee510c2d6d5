//! A fake token endpoint for service-tier tests: counts calls, rotates refresh tokens, refuses a
//! refresh token presented twice (as rotating providers do), and fails or stalls on demand.

use super::{Discovered, OAuthError, TokenEndpoint, TokenGrant, TokenSet};
use crate::domain::OAuthClient;
use crate::secret::{ExposeSecret, SecretString};
use async_trait::async_trait;
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Default)]
struct State {
    issued: usize,
    refreshes: usize,
    exchanges: usize,
    presented: HashSet<String>,
    reused: usize,
    failures: VecDeque<OAuthError>,
    /// Scripted device-code poll answers (`None`: tokens), and when each poll came.
    device_answers: VecDeque<Option<OAuthError>>,
    device_polls: Vec<tokio::time::Instant>,
}

#[derive(Debug)]
pub(crate) struct FakeTokenEndpoint {
    state: Mutex<State>,
    /// Lifetime of every access token issued.
    pub expires_in: Option<Duration>,
    /// Whether refreshes return a new refresh token.
    pub rotate: bool,
    /// How long each token request takes (tests pause time).
    pub delay: Duration,
}

impl Default for FakeTokenEndpoint {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            expires_in: Some(Duration::from_secs(3600)),
            rotate: true,
            delay: Duration::from_millis(50),
        }
    }
}

impl FakeTokenEndpoint {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next token request fails with `e`.
    pub(crate) fn fail_next(&self, e: OAuthError) {
        self.state().failures.push_back(e);
    }

    pub(crate) fn refreshes(&self) -> usize {
        self.state().refreshes
    }

    pub(crate) fn exchanges(&self) -> usize {
        self.state().exchanges
    }

    /// The next device-code polls answer these (`None`: the tokens); once they run out, every
    /// poll answers `authorization_pending`.
    pub(crate) fn script_device(&self, answers: Vec<Option<OAuthError>>) {
        self.state().device_answers = answers.into();
    }

    /// When each device-code poll came.
    pub(crate) fn device_polls(&self) -> Vec<tokio::time::Instant> {
        self.state().device_polls.clone()
    }

    /// Refresh tokens presented a second time.
    pub(crate) fn reused(&self) -> usize {
        self.state().reused
    }

    fn issue(&self, st: &mut State, refresh: bool) -> TokenSet {
        st.issued += 1;
        let n = st.issued;
        TokenSet {
            access_token: SecretString::from(format!("at-{n}")),
            token_type: "Bearer".into(),
            expires_in: self.expires_in,
            refresh_token: refresh.then(|| SecretString::from(format!("rt-{n}"))),
            scopes: None,
            id_token: None,
            metadata: Default::default(),
        }
    }
}

#[async_trait]
impl TokenEndpoint for FakeTokenEndpoint {
    async fn token(
        &self,
        _client: &OAuthClient,
        grant: TokenGrant<'_>,
    ) -> Result<TokenSet, OAuthError> {
        tokio::time::sleep(self.delay).await;
        let mut st = self.state();
        let refresh = match grant {
            TokenGrant::AuthorizationCode { .. } => {
                st.exchanges += 1;
                true
            }
            TokenGrant::DeviceCode(_) => {
                st.device_polls.push(tokio::time::Instant::now());
                let pending = || Some(OAuthError::Rejected("authorization_pending".into()));
                if let Some(e) = st.device_answers.pop_front().unwrap_or_else(pending) {
                    return Err(e);
                }
                true
            }
            TokenGrant::ClientCredentials { .. }
            | TokenGrant::JwtBearer { .. }
            | TokenGrant::TokenExchange { .. } => {
                st.exchanges += 1;
                false
            }
            TokenGrant::RefreshToken(rt) => {
                st.refreshes += 1;
                if !st.presented.insert(rt.expose_secret().to_owned()) && self.rotate {
                    st.reused += 1;
                    return Err(OAuthError::InvalidGrant);
                }
                self.rotate
            }
        };
        if let Some(e) = st.failures.pop_front() {
            return Err(e);
        }
        Ok(self.issue(&mut st, refresh))
    }

    async fn verify_id_token(
        &self,
        _issuer: &str,
        _client: &OAuthClient,
        _id_token: &SecretString,
        _nonce: Option<&SecretString>,
    ) -> Result<String, OAuthError> {
        Ok("subject".into())
    }

    async fn device_authorization(
        &self,
        _client: &OAuthClient,
        _url: &url::Url,
        _scopes: &crate::domain::Scopes,
    ) -> Result<super::DeviceAuthorization, OAuthError> {
        Ok(super::DeviceAuthorization {
            device_code: SecretString::from("device-code"),
            user_code: "WDJB-MJHT".into(),
            verification_uri: "https://idp.example/device".into(),
            verification_uri_complete: None,
            expires_in: Duration::from_secs(600),
            interval: Duration::from_secs(5),
        })
    }

    async fn revoke(
        &self,
        _client: &OAuthClient,
        _url: &url::Url,
        _token: &SecretString,
        _hint: &'static str,
    ) -> Result<(), OAuthError> {
        Ok(())
    }

    async fn discover(&self, issuer: &str) -> Result<Discovered, OAuthError> {
        let base = url::Url::parse(issuer).map_err(|e| OAuthError::Protocol(e.to_string()))?;
        let join = |p: &str| {
            base.join(p)
                .map_err(|e| OAuthError::Protocol(e.to_string()))
        };
        Ok(Discovered {
            auth_url: join("auth")?,
            token_url: join("token")?,
            revocation_url: None,
            device_authorization_url: None,
            iss_in_response: false,
        })
    }
}
