//! The production store: HashiCorp Vault (or any Vault-API server) through vaultrs.
//!
//! KV v2 (default): every record is one secret under `{mount}/data/{prefix}{key}`; its Vault
//! version is the record version and writes use Vault's check-and-set (`cas`), so two daemons
//! sharing a mount never overwrite each other's newer refresh token. KV v1 (for servers without
//! v2, such as RustyVault): the version lives inside the record and check-and-set is enforced by
//! an in-process lock, which is only safe for a single replica (multi-replica deployments need
//! KV v2). KV v1 reads and lists go through a tolerant response type, because some servers omit
//! fields (`request_id`) that vaultrs's typed KV v1 responses require.
//!
//! Authentication: token, AppRole or Kubernetes. A 403 triggers one re-login and retry;
//! `run_renewal` renews the token at about two thirds of its TTL and logs in again when that
//! fails. The token is never logged.

use super::{Cas, SecretBytes, SecretStore, StoreError, Versioned, check_key};
use crate::secret::{ExposeSecret, SecretString};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use url::Url;
use vaultrs::api::kv2::requests::{ReadSecretRequest, SetSecretRequestOptions};
use vaultrs::client::{Client as _, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use zeroize::Zeroizing;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvVersion {
    V1,
    V2,
}

/// Where a Vault token was configured (`check-config` says which, never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `token`, in the file.
    Inline,
    /// `token_file`: read at start.
    File(PathBuf),
    /// `token_env`: the variable's name.
    Env(String),
}

/// How the daemon logs in to Vault.
#[derive(Debug, Clone)]
pub enum VaultAuth {
    Token(SecretString, TokenSource),
    AppRole {
        mount: String,
        role_id: String,
        /// A file (mode 0600) holding the secret_id; read at every login, so it can rotate.
        secret_id_file: PathBuf,
    },
    Kubernetes {
        mount: String,
        role: String,
        /// The service-account JWT, read at every login (projected tokens rotate).
        jwt_file: PathBuf,
    },
}

#[derive(Debug, Clone)]
pub struct VaultConfig {
    pub address: Url,
    pub kv_version: KvVersion,
    pub mount: String,
    /// Prepended to every key, e.g. `valet/`.
    pub prefix: String,
    pub namespace: Option<String>,
    pub ca_cert_file: Option<PathBuf>,
    pub timeout: Duration,
    pub auth: VaultAuth,
}

pub struct VaultStore {
    cfg: VaultConfig,
    client: RwLock<Arc<VaultClient>>,
    /// One login at a time; callers that raced a 403 reuse the fresh token.
    login: tokio::sync::Mutex<u64>,
    /// KV v1 only: serializes read-compare-write so check-and-set holds within this process.
    v1_write: tokio::sync::Mutex<()>,
    raw: reqwest::Client,
}

impl std::fmt::Debug for VaultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultStore")
            .field("address", &self.cfg.address.as_str())
            .field("mount", &self.cfg.mount)
            .field("prefix", &self.cfg.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(msg: impl Into<String>) -> StoreError {
    StoreError::Unavailable(msg.into(), None)
}

/// A client error kept as the source of a store error: its chain as text, without the values
/// serde's messages quote from Vault's answer (the body of a read is a record or a token).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ClientFault(String);

fn fault(
    e: &(dyn std::error::Error + 'static),
) -> Option<Box<dyn std::error::Error + Send + Sync>> {
    Some(Box::new(ClientFault(crate::secret::chain_without_values(
        e,
    ))))
}

/// Maps a vaultrs error; never includes a request or response body, nor a value quoted from one.
fn classify(e: ClientError) -> StoreError {
    match e {
        ClientError::APIError { code: 400, errors }
            if errors.iter().any(|m| m.contains("check-and-set")) =>
        {
            StoreError::Conflict
        }
        ClientError::APIError { code: 403, .. } => StoreError::Denied(
            "Vault answered 403: the token expired or its policy does not cover this path".into(),
        ),
        ClientError::APIError { code: 503, errors }
            if errors.iter().any(|m| m.contains("sealed")) =>
        {
            unavailable("Vault is sealed (503)")
        }
        // A path under no mount: the setting to check is the mount's.
        ClientError::APIError { code: 404, errors } if no_route(&errors) => unavailable(
            "Vault answered 404 (no route to that path): is vault.mount the KV engine's path?",
        ),
        ClientError::APIError { code, .. } => unavailable(format!("Vault answered HTTP {code}")),
        // A 2xx whose body is not what the KV engine answers: most often a KV v1 mount under
        // a client set for v2 (the default), which v1 takes as a plain path and answers empty.
        ClientError::RestClientError {
            source: source @ rustify::errors::ClientError::ResponseParseError { .. },
        } => StoreError::Unavailable(
            "Vault answered with a body the KV client cannot read: is vault.kv_version the \
             mount's KV version? (2 by default; set kv_version = 1 for a KV version 1 mount)"
                .into(),
            fault(&source),
        ),
        ClientError::RestClientError { source } => {
            StoreError::Unavailable("cannot reach Vault".into(), fault(&source))
        }
        other => StoreError::Unavailable("unexpected Vault client error".into(), fault(&other)),
    }
}

fn is_status(e: &ClientError, status: u16) -> bool {
    matches!(e, ClientError::APIError { code, .. } if *code == status)
}

/// Vault's 404 for a path under no mount ("no handler for route …"), not for a missing key.
fn no_route(errors: &[String]) -> bool {
    errors
        .iter()
        .any(|m| m.contains("mount") || m.contains("route"))
}

/// A 404 for a key that is not there (a wrong mount is an error, not an empty store: it would
/// start the daemon with no providers).
fn is_absent(e: &ClientError) -> bool {
    matches!(e, ClientError::APIError { code: 404, errors } if !no_route(errors))
}

/// Record bytes as stored in Vault: base64 under `value` (KV v1 adds the record version).
#[derive(Deserialize)]
struct Stored {
    value: String,
    #[serde(default)]
    version: u64,
}

#[derive(Deserialize)]
struct V1Envelope {
    data: Option<Stored>,
}

#[derive(Deserialize)]
struct ListEnvelope {
    data: Option<ListKeys>,
}

#[derive(Deserialize)]
struct ListKeys {
    #[serde(default)]
    keys: Vec<String>,
}

/// A login file that is not there may be written later (an agent sidecar's AppRole secret, a
/// projected service-account token): unavailable, so the login is retried (and a start is not
/// refused as a bad configuration) instead of failing for good.
/// Any other failure to read it (permissions) is the operator's to fix, and said when it is read.
fn not_yet_written(path: &std::path::Path, what: &str) -> Result<(), StoreError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::Unavailable(
            format!("the {what} file {} is not there (yet)", path.display()),
            None,
        )),
        _ => Ok(()),
    }
}

impl VaultStore {
    /// Builds the client and, for AppRole and Kubernetes, tries to log in. An unreachable Vault
    /// is not an error here: the daemon starts and reports itself unavailable until it answers.
    pub async fn connect(cfg: VaultConfig) -> Result<Self, StoreError> {
        let initial = match &cfg.auth {
            VaultAuth::Token(t, _) => t.clone(),
            _ => SecretString::from(String::new()),
        };
        let mut raw = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none());
        // Read first, so a file that is not a CA certificate is named (the KV client's own
        // error says only "Error configuring REST client").
        if let Some(ca) = &cfg.ca_cert_file {
            let pem = std::fs::read(ca).map_err(|e| {
                StoreError::Setup(format!("cannot read CA certificate {}: {e}", ca.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    StoreError::Setup(format!(
                        "vault.ca_cert_file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                        ca.display()
                    ))
                })?;
            for cert in certs {
                raw = raw.add_root_certificate(cert);
            }
        }
        let client = Self::build_client(&cfg, &initial)?;
        let store = Self {
            client: RwLock::new(Arc::new(client)),
            login: tokio::sync::Mutex::new(0),
            v1_write: tokio::sync::Mutex::new(()),
            raw: raw
                .build()
                .map_err(|e| StoreError::Setup(format!("cannot build HTTP client: {e}")))?,
            cfg,
        };
        let needs_login = !matches!(store.cfg.auth, VaultAuth::Token(..));
        if needs_login && let Err(e) = store.relogin(0).await {
            if !e.is_unavailable() {
                return Err(e);
            }
            tracing::warn!("Vault login failed; will retry: {e}");
        }
        Ok(store)
    }

    fn build_client(cfg: &VaultConfig, token: &SecretString) -> Result<VaultClient, StoreError> {
        let mut b = VaultClientSettingsBuilder::default();
        b.address(cfg.address.as_str())
            .token(token.expose_secret())
            .timeout(Some(cfg.timeout))
            .verify(true);
        if let Some(ns) = &cfg.namespace {
            b.namespace(Some(ns.clone()));
        }
        if let Some(ca) = &cfg.ca_cert_file {
            b.ca_certs(vec![ca.display().to_string()]);
        }
        let settings = b
            .build()
            .map_err(|e| StoreError::Setup(format!("bad Vault settings: {e}")))?;
        VaultClient::new(settings)
            .map_err(|e| StoreError::Setup(format!("cannot build the Vault client: {e}")))
    }

    fn client(&self) -> Arc<VaultClient> {
        self.client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn path(&self, key: &str) -> String {
        format!("{}{key}", self.cfg.prefix)
    }

    /// Logs in again (AppRole/Kubernetes) unless another caller already did since `seen`.
    async fn relogin(&self, seen: u64) -> Result<(), StoreError> {
        let mut generation = self.login.lock().await;
        if *generation != seen {
            return Ok(());
        }
        let client = self.client();
        let auth = match &self.cfg.auth {
            VaultAuth::Token(..) => {
                return Err(unavailable(
                    "Vault rejected the configured token (403); give Valet a valid token",
                ));
            }
            VaultAuth::AppRole {
                mount,
                role_id,
                secret_id_file,
            } => {
                not_yet_written(secret_id_file, "AppRole secret_id")?;
                let secret_id =
                    crate::secret::read_private_file(secret_id_file, "AppRole secret_id")
                        .map_err(StoreError::Setup)?;
                vaultrs::auth::approle::login(&*client, mount, role_id, secret_id.expose_secret())
                    .await
            }
            VaultAuth::Kubernetes {
                mount,
                role,
                jwt_file,
            } => {
                not_yet_written(jwt_file, "service-account token")?;
                let jwt = std::fs::read_to_string(jwt_file).map_err(|e| {
                    StoreError::Setup(format!(
                        "cannot read service-account token {}: {e}",
                        jwt_file.display()
                    ))
                })?;
                vaultrs::auth::kubernetes::login(&*client, mount, role, jwt.trim()).await
            }
        }
        .map_err(|e| match e {
            // Not a KV answer: classify's kv_version hint would send the operator to the wrong
            // setting.
            ClientError::RestClientError {
                source: source @ rustify::errors::ClientError::ResponseParseError { .. },
            } => StoreError::Unavailable(
                "Vault answered the login with a body the client cannot read (is vault.auth's mount and method the auth engine's?)".into(),
                fault(&source),
            ),
            other => classify(other),
        })?;
        let token = SecretString::from(auth.client_token);
        let fresh = Self::build_client(&self.cfg, &token)?;
        *self.client.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        *generation += 1;
        tracing::info!(lease_seconds = auth.lease_duration, "logged in to Vault");
        Ok(())
    }

    /// Runs `op`; on a 403 logs in again once and retries.
    async fn call<T, F, Fut>(&self, op: F) -> Result<T, ClientError>
    where
        F: Fn(Arc<VaultClient>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let seen = *self.login.lock().await;
        match op(self.client()).await {
            Err(e) if is_status(&e, 403) && !matches!(self.cfg.auth, VaultAuth::Token(..)) => {
                if let Err(login) = self.relogin(seen).await {
                    tracing::warn!("Vault re-login failed: {login}");
                    return Err(e);
                }
                op(self.client()).await
            }
            other => other,
        }
    }

    /// Renews the token at about two thirds of its TTL (with jitter) until `stop` resolves;
    /// logs in again when renewal fails.
    pub async fn run_renewal(self: Arc<Self>, stop: impl Future) {
        tokio::pin!(stop);
        loop {
            let ttl = match self.lookup_ttl().await {
                Ok(ttl) => ttl,
                Err(e) => {
                    tracing::warn!("Vault token lookup failed: {e}");
                    Duration::ZERO
                }
            };
            // ttl 0: a non-expiring token, or Vault unreachable; look again in a minute.
            let wait = if ttl.is_zero() {
                Duration::from_secs(60)
            } else {
                let jitter = 0.9 + 0.2 * f64::from(rand_u8()) / 255.0;
                ttl.mul_f64(2.0 / 3.0 * jitter).max(Duration::from_secs(1))
            };
            tokio::select! {
                _ = &mut stop => return,
                () = tokio::time::sleep(wait) => {}
            }
            if ttl.is_zero() {
                continue;
            }
            match self.call(|c| async move { c.renew(None).await }).await {
                Ok(_) => tracing::debug!("renewed the Vault token"),
                Err(e) => {
                    tracing::warn!(
                        "Vault token renewal failed ({}); logging in again",
                        classify(e)
                    );
                    let seen = *self.login.lock().await;
                    if let Err(e) = self.relogin(seen).await {
                        tracing::warn!("Vault login failed: {e}");
                    }
                }
            }
        }
    }

    fn decode(key: &str, stored: &Stored) -> Result<SecretBytes, StoreError> {
        STANDARD
            .decode(&stored.value)
            .map(Zeroizing::new)
            .map_err(|_| StoreError::Corrupt {
                key: key.to_owned(),
                reason: "value is not base64".into(),
            })
    }

    /// A request through the tolerant path: the raw JSON body, or `None` on 404.
    async fn raw_json(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let client = self.client();
        let url = format!("{}v1/{path}", self.cfg.address);
        let mut req = self
            .raw
            .request(method, url)
            .header("X-Vault-Token", client.settings.token.as_str());
        if let Some(ns) = &self.cfg.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        let resp = req.send().await.map_err(|e| {
            StoreError::Unavailable("cannot reach Vault".into(), Some(Box::new(e.without_url())))
        })?;
        match resp.status().as_u16() {
            200 => resp
                .json()
                .await
                .map(Some)
                .map_err(|_| unavailable("Vault answered with a body that is not JSON")),
            code => {
                let errors = resp
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| serde_json::from_value::<Vec<String>>(v["errors"].clone()).ok())
                    .unwrap_or_default();
                let e = ClientError::APIError { code, errors };
                if is_absent(&e) {
                    return Ok(None);
                }
                Err(classify(e))
            }
        }
    }

    /// `auth/token/lookup-self` through the tolerant path (some servers omit fields vaultrs
    /// requires); returns the token's remaining TTL.
    async fn lookup_ttl(&self) -> Result<Duration, StoreError> {
        let body = self
            .raw_json(reqwest::Method::GET, "auth/token/lookup-self")
            .await?
            .ok_or_else(|| unavailable("Vault has no token lookup endpoint"))?;
        Ok(Duration::from_secs(
            body["data"]["ttl"].as_u64().unwrap_or(0),
        ))
    }

    /// Runs `op` on the tolerant path; on a 403 logs in again once and retries.
    async fn retry_denied<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let seen = *self.login.lock().await;
        match op().await {
            Err(e) if e.is_denied() && !matches!(self.cfg.auth, VaultAuth::Token(..)) => {
                self.relogin(seen).await?;
                op().await
            }
            other => other,
        }
    }

    /// `raw_json`, with one re-login and retry on a 403.
    async fn raw_json_retry(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        self.retry_denied(|| self.raw_json(method.clone(), path))
            .await
    }

    async fn v1_get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let path = format!("{}/{}", self.cfg.mount, self.path(key));
        let Some(body) = self.raw_json_retry(reqwest::Method::GET, &path).await? else {
            return Ok(None);
        };
        let env: V1Envelope = serde_json::from_value(body).map_err(|_| StoreError::Corrupt {
            key: key.to_owned(),
            reason: "unexpected KV v1 response".into(),
        })?;
        let Some(stored) = env.data else {
            return Ok(None);
        };
        Ok(Some(Versioned {
            value: Self::decode(key, &stored)?,
            version: stored.version,
        }))
    }

    async fn list_dir(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        let path = self.path(dir);
        let keys = match self.cfg.kv_version {
            KvVersion::V2 => {
                let mount = self.cfg.mount.clone();
                match self
                    .call(|c| {
                        let (mount, path) = (mount.clone(), path.clone());
                        async move { vaultrs::kv2::list(&*c, &mount, &path).await }
                    })
                    .await
                {
                    Ok(keys) => keys,
                    Err(e) if is_absent(&e) => Vec::new(),
                    Err(e) => return Err(classify(e)),
                }
            }
            KvVersion::V1 => {
                let method =
                    reqwest::Method::from_bytes(b"LIST").map_err(|_| unavailable("LIST method"))?;
                let body = self
                    .raw_json_retry(method, &format!("{}/{path}", self.cfg.mount))
                    .await?;
                match body {
                    None => Vec::new(),
                    Some(b) => serde_json::from_value::<ListEnvelope>(b)
                        .map_err(|_| unavailable("unexpected KV v1 list response"))?
                        .data
                        .map(|d| d.keys)
                        .unwrap_or_default(),
                }
            }
        };
        Ok(keys)
    }
}

/// A byte of OS randomness, for jitter.
fn rand_u8() -> u8 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 1];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b[0]
}

#[async_trait]
impl SecretStore for VaultStore {
    fn backend(&self) -> &'static str {
        match self.cfg.kv_version {
            KvVersion::V1 => "vault-kv1",
            KvVersion::V2 => "vault-kv2",
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        check_key(key)?;
        if self.cfg.kv_version == KvVersion::V1 {
            return self.v1_get(key).await;
        }
        let (mount, path) = (self.cfg.mount.clone(), self.path(key));
        let res = self
            .call(|c| {
                let (mount, path) = (mount.clone(), path.clone());
                async move {
                    let endpoint = ReadSecretRequest::builder()
                        .mount(mount)
                        .path(path)
                        .build()
                        .map_err(|_| ClientError::InvalidUpdateParameter)?;
                    vaultrs::api::exec_with_result(&*c, endpoint).await
                }
            })
            .await;
        match res {
            Ok(r) => {
                let stored: Stored =
                    serde_json::from_value(r.data).map_err(|_| StoreError::Corrupt {
                        key: key.to_owned(),
                        reason: "not a Valet record".into(),
                    })?;
                Ok(Some(Versioned {
                    value: Self::decode(key, &stored)?,
                    version: r.metadata.version,
                }))
            }
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    async fn put(&self, key: &str, value: SecretBytes, cas: Cas) -> Result<u64, StoreError> {
        check_key(key)?;
        let encoded = Zeroizing::new(STANDARD.encode(&*value));
        let (mount, path) = (self.cfg.mount.clone(), self.path(key));
        match self.cfg.kv_version {
            KvVersion::V2 => {
                let cas = match cas {
                    Cas::Any => None,
                    Cas::Absent => Some(0),
                    Cas::Version(v) => Some(u32::try_from(v).map_err(|_| StoreError::Conflict)?),
                };
                let meta = self
                    .call(|c| {
                        let (mount, path) = (mount.clone(), path.clone());
                        let data = serde_json::json!({ "value": encoded.as_str() });
                        async move {
                            match cas {
                                Some(cas) => {
                                    vaultrs::kv2::set_with_options(
                                        &*c,
                                        &mount,
                                        &path,
                                        &data,
                                        SetSecretRequestOptions { cas },
                                    )
                                    .await
                                }
                                None => vaultrs::kv2::set(&*c, &mount, &path, &data).await,
                            }
                        }
                    })
                    .await
                    .map_err(classify)?;
                Ok(meta.version)
            }
            KvVersion::V1 => {
                let _w = self.v1_write.lock().await;
                let current = self.v1_get(key).await?.map(|v| v.version);
                let ok = match cas {
                    Cas::Any => true,
                    Cas::Absent => current.is_none(),
                    Cas::Version(v) => current == Some(v),
                };
                if !ok {
                    return Err(StoreError::Conflict);
                }
                let version = current.unwrap_or(0) + 1;
                self.call(|c| {
                    let (mount, path) = (mount.clone(), path.clone());
                    let data: std::collections::HashMap<&str, serde_json::Value> = [
                        ("value", serde_json::Value::from(encoded.as_str())),
                        ("version", serde_json::Value::from(version)),
                    ]
                    .into();
                    async move { vaultrs::kv1::set(&*c, &mount, &path, &data).await }
                })
                .await
                .map_err(classify)?;
                Ok(version)
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        let _w = match self.cfg.kv_version {
            KvVersion::V1 => Some(self.v1_write.lock().await),
            KvVersion::V2 => None,
        };
        if self.get(key).await?.is_none() {
            return Ok(false);
        }
        let (mount, path) = (self.cfg.mount.clone(), self.path(key));
        let v2 = self.cfg.kv_version == KvVersion::V2;
        self.call(|c| {
            let (mount, path) = (mount.clone(), path.clone());
            async move {
                if v2 {
                    vaultrs::kv2::delete_metadata(&*c, &mount, &path).await
                } else {
                    vaultrs::kv1::delete(&*c, &mount, &path).await
                }
            }
        })
        .await
        .map_err(classify)?;
        Ok(true)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        // Vault lists one level at a time; walk down from the prefix's directory.
        let dir = prefix.rfind('/').map_or("", |i| &prefix[..=i]);
        let mut pending = vec![dir.to_owned()];
        let mut out = Vec::new();
        while let Some(d) = pending.pop() {
            for k in self.list_dir(&d).await? {
                let full = format!("{d}{k}");
                if !full.starts_with(prefix) && !prefix.starts_with(&full) {
                    continue;
                }
                if full.ends_with('/') {
                    pending.push(full);
                } else if full.starts_with(prefix) {
                    out.push(full);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.retry_denied(|| self.lookup_ttl()).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A login file a sidecar has not written yet is a login to retry, not a bad configuration.
    #[test]
    fn a_login_file_not_there_yet_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret-id");
        let missing = not_yet_written(&file, "AppRole secret_id").unwrap_err();
        assert!(missing.is_unavailable(), "{missing}");
        assert!(
            missing.to_string().contains("is not there (yet)"),
            "{missing}"
        );
        std::fs::write(&file, "x").unwrap();
        assert!(not_yet_written(&file, "AppRole secret_id").is_ok());
    }

    /// A serde error that quotes the value it did not expect, as it does for a wrong type.
    fn quoting(canary: &str) -> serde_json::Error {
        let e = serde_json::from_str::<u64>(&format!("\"{canary}\"")).unwrap_err();
        assert!(
            e.to_string().contains(canary),
            "serde no longer quotes: {e}"
        );
        e
    }

    #[test]
    fn a_path_under_no_mount_names_the_mount_setting() {
        let e = classify(ClientError::APIError {
            code: 404,
            errors: vec![
                "no handler for route \"nosuchmount/valet/x\". route entry not found.".into(),
            ],
        });
        assert!(
            e.to_string()
                .contains("is vault.mount the KV engine's path"),
            "{e}"
        );
        let plain = classify(ClientError::APIError {
            code: 404,
            errors: vec![],
        });
        assert!(!plain.to_string().contains("vault.mount"), "{plain}");
    }

    #[test]
    fn an_unreadable_answer_is_logged_without_the_values_it_holds() {
        let canary = "hvs.canary-token-0123456789";
        let parse = ClientError::RestClientError {
            source: rustify::errors::ClientError::ResponseParseError {
                source: quoting(canary).into(),
                content: Some(format!("{{\"data\":{{\"value\":\"{canary}\"}}}}")),
            },
        };
        let json = ClientError::JsonParseError {
            source: quoting(canary),
        };
        for (e, says) in [
            (parse, "kv_version = 1"),
            (json, "unexpected Vault client error"),
        ] {
            let e = classify(e);
            let debug = format!("{e:?}");
            let logged = crate::service::Error::from(e).chain();
            assert!(logged.contains(says), "{logged}");
            assert!(
                logged.contains("Data error at line 1, column 29"),
                "{logged}"
            );
            for out in [&logged, &debug] {
                assert!(!out.contains("canary"), "{out}");
            }
        }
    }
}
