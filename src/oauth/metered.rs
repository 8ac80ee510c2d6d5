//! A token-endpoint decorator that times every token request for the metrics, by provider.

use super::{DeviceAuthorization, Discovered, OAuthError, TokenEndpoint, TokenGrant, TokenSet};
use crate::domain::{OAuthClient, Scopes};
use crate::metrics::Metrics;
use crate::secret::SecretString;
use async_trait::async_trait;
use std::sync::Arc;
use url::Url;

#[derive(Debug)]
pub struct MeteredEndpoint {
    inner: Arc<dyn TokenEndpoint>,
    metrics: Arc<Metrics>,
}

impl MeteredEndpoint {
    pub fn new(inner: Arc<dyn TokenEndpoint>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

#[async_trait]
impl TokenEndpoint for MeteredEndpoint {
    async fn token(
        &self,
        client: &OAuthClient,
        grant: TokenGrant<'_>,
    ) -> Result<TokenSet, OAuthError> {
        let started = std::time::Instant::now();
        let result = self.inner.token(client, grant).await;
        self.metrics
            .token_endpoint_took(&client.provider, started.elapsed());
        result
    }

    async fn verify_id_token(
        &self,
        issuer: &str,
        client: &OAuthClient,
        id_token: &SecretString,
        nonce: Option<&SecretString>,
    ) -> Result<String, OAuthError> {
        self.inner
            .verify_id_token(issuer, client, id_token, nonce)
            .await
    }

    async fn device_authorization(
        &self,
        client: &OAuthClient,
        url: &Url,
        scopes: &Scopes,
    ) -> Result<DeviceAuthorization, OAuthError> {
        self.inner.device_authorization(client, url, scopes).await
    }

    async fn discover(&self, issuer: &str) -> Result<Discovered, OAuthError> {
        self.inner.discover(issuer).await
    }

    async fn revoke(
        &self,
        client: &OAuthClient,
        url: &Url,
        token: &SecretString,
        hint: &'static str,
    ) -> Result<(), OAuthError> {
        self.inner.revoke(client, url, token, hint).await
    }
}
