//! Provider administration: validated create/read/update/delete, written through to the store
//! and mirrored in memory so the token handout path never reads the store for a provider.

use super::{Error, decode, encode};
use crate::clock::Clock;
use crate::domain::{
    DEFAULT_REFERENCE_TTL, GrantKey, HandoutPolicy, MAX_REFERENCE_TTL, ProviderConfig, ProviderId,
    ProviderKind, Scopes, TokenAuthMethod, check_endpoint_url,
};
use crate::oauth::TokenEndpoint;
use crate::secret::SecretString;
use crate::store::{Cas, SecretStore};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use url::Url;

const PREFIX: &str = "providers/";

/// A provider as an operator submits it, before validation.
#[derive(Debug, Default)]
pub struct ProviderDraft {
    pub id: String,
    pub name: String,
    pub kind: Option<ProviderKind>,
    pub client_id: String,
    /// `None` on update keeps the stored secret.
    pub client_secret: Option<SecretString>,
    pub auth_url: String,
    pub token_url: String,
    pub issuer: String,
    pub revocation_url: String,
    pub default_scopes: Vec<String>,
    pub extra_auth_params: BTreeMap<String, String>,
    pub token_auth_method: TokenAuthMethod,
    pub handout_policy: HandoutPolicy,
    /// 0: the default (30 days).
    pub reference_ttl_seconds: u32,
}

pub struct ProviderRegistry {
    store: Arc<dyn SecretStore>,
    endpoint: Arc<dyn TokenEndpoint>,
    clock: Arc<dyn Clock>,
    allow_insecure_urls: bool,
    public_url: Url,
    providers: RwLock<HashMap<ProviderId, Arc<ProviderConfig>>>,
    /// False until the providers were read from the store; until then nothing is served, so an
    /// unreachable store at start-up never looks like "no such provider".
    loaded: AtomicBool,
    /// Serializes writes so the store and the in-memory mirror never disagree.
    write: tokio::sync::Mutex<()>,
}

fn key(id: &ProviderId) -> String {
    format!("{PREFIX}{}", id.as_str())
}

impl ProviderRegistry {
    pub fn new(
        store: Arc<dyn SecretStore>,
        endpoint: Arc<dyn TokenEndpoint>,
        clock: Arc<dyn Clock>,
        public_url: Url,
        allow_insecure_urls: bool,
    ) -> Self {
        Self {
            store,
            endpoint,
            clock,
            allow_insecure_urls,
            public_url,
            providers: RwLock::default(),
            loaded: AtomicBool::new(false),
            write: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads every provider from the store into memory (start-up, and when the store returns).
    pub async fn load(&self) -> Result<usize, Error> {
        let mut loaded = HashMap::new();
        for k in self.store.list(PREFIX).await? {
            if let Some(rec) = self.store.get(&k).await? {
                let p: ProviderConfig = decode(&k, &rec.value)?;
                loaded.insert(p.id.clone(), Arc::new(p));
            }
        }
        let n = loaded.len();
        *self.providers.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        self.loaded.store(true, Ordering::Release);
        Ok(n)
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    fn ensure_loaded(&self) -> Result<(), Error> {
        if self.is_loaded() {
            Ok(())
        } else {
            Err(Error::StoreUnavailable(
                "provider configuration is not loaded yet: the secret store has been unreachable since start-up".into(),
            ))
        }
    }

    pub fn get(&self, id: &ProviderId) -> Result<Arc<ProviderConfig>, Error> {
        self.ensure_loaded()?;
        self.providers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or(Error::NotFound { what: "provider" })
    }

    pub fn list(&self) -> Result<Vec<Arc<ProviderConfig>>, Error> {
        self.ensure_loaded()?;
        let mut all: Vec<_> = self
            .providers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    /// The redirect URI to register at the provider.
    pub fn redirect_uri(&self, id: &ProviderId) -> String {
        format!(
            "{}/oauth/callback/{}",
            self.public_url.as_str().trim_end_matches('/'),
            id.as_str()
        )
    }

    pub async fn create(&self, draft: ProviderDraft) -> Result<Arc<ProviderConfig>, Error> {
        let id = ProviderId::parse(&draft.id)?;
        self.ensure_loaded()?;
        let _w = self.write.lock().await;
        if self.get(&id).is_ok() {
            return Err(Error::AlreadyExists {
                what: "provider",
                id: id.to_string(),
            });
        }
        if draft.client_secret.is_none() {
            return Err(Error::invalid("client_secret", "is required"));
        }
        let now = self.clock.now_unix();
        let config = self.validate(id, draft, None, now).await?;
        self.store
            .put(&key(&config.id), encode(&config)?, Cas::Absent)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Conflict => Error::AlreadyExists {
                    what: "provider",
                    id: config.id.to_string(),
                },
                other => other.into(),
            })?;
        Ok(self.remember(config))
    }

    pub async fn update(&self, draft: ProviderDraft) -> Result<Arc<ProviderConfig>, Error> {
        let id = ProviderId::parse(&draft.id)?;
        let _w = self.write.lock().await;
        let current = self.get(&id)?;
        let now = self.clock.now_unix();
        let config = self.validate(id, draft, Some(&current), now).await?;
        self.store
            .put(&key(&config.id), encode(&config)?, Cas::Any)
            .await?;
        Ok(self.remember(config))
    }

    /// Deletes the provider and every grant made through it.
    pub async fn delete(&self, id: &ProviderId) -> Result<(), Error> {
        let _w = self.write.lock().await;
        self.get(id)?;
        for k in self.store.list(&GrantKey::provider_prefix(id)).await? {
            self.store.delete(&k).await?;
        }
        self.store.delete(&key(id)).await?;
        self.providers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        Ok(())
    }

    fn remember(&self, config: ProviderConfig) -> Arc<ProviderConfig> {
        let config = Arc::new(config);
        self.providers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(config.id.clone(), config.clone());
        config
    }

    async fn validate(
        &self,
        id: ProviderId,
        d: ProviderDraft,
        current: Option<&ProviderConfig>,
        now: i64,
    ) -> Result<ProviderConfig, Error> {
        let insecure = self.allow_insecure_urls;
        let kind = d
            .kind
            .ok_or_else(|| Error::invalid("kind", "is required (oauth2 or oidc)"))?;
        ProviderConfig::check_common(&d.name, &d.client_id, &d.extra_auth_params)?;
        let default_scopes = Scopes::parse("default_scopes", &d.default_scopes)?;
        let optional = |field, raw: &str| {
            (!raw.is_empty())
                .then(|| check_endpoint_url(field, raw, insecure))
                .transpose()
        };
        let revocation_url = optional("revocation_url", &d.revocation_url)?;
        if d.reference_ttl_seconds > MAX_REFERENCE_TTL {
            return Err(Error::invalid(
                "reference_ttl_seconds",
                format!("must be at most {MAX_REFERENCE_TTL} (one year)"),
            ));
        }
        let (auth_url, token_url, issuer) = match kind {
            ProviderKind::OAuth2 => {
                let auth = check_endpoint_url("auth_url", &d.auth_url, insecure)?;
                let token = check_endpoint_url("token_url", &d.token_url, insecure)?;
                optional("issuer", &d.issuer)?;
                (
                    auth,
                    token,
                    (!d.issuer.is_empty()).then(|| d.issuer.clone()),
                )
            }
            ProviderKind::Oidc => {
                if !d.auth_url.is_empty() || !d.token_url.is_empty() {
                    let field = if d.auth_url.is_empty() {
                        "token_url"
                    } else {
                        "auth_url"
                    };
                    return Err(Error::invalid(
                        field,
                        "is filled from the issuer's discovery document for oidc providers; leave it empty",
                    ));
                }
                check_endpoint_url("issuer", &d.issuer, insecure)?;
                let found = self.endpoint.discover(&d.issuer).await.map_err(|e| {
                    Error::invalid("issuer", format!("OpenID discovery failed: {e}"))
                })?;
                let auth = check_endpoint_url("issuer", found.auth_url.as_str(), insecure)?;
                let token = check_endpoint_url("issuer", found.token_url.as_str(), insecure)?;
                (auth, token, Some(d.issuer.clone()))
            }
        };
        let client_secret = d
            .client_secret
            .or_else(|| current.and_then(|c| c.client_secret.clone()));
        Ok(ProviderConfig {
            name: if d.name.is_empty() {
                id.to_string()
            } else {
                d.name
            },
            id,
            kind,
            client_id: d.client_id,
            client_secret,
            auth_url,
            token_url,
            issuer,
            revocation_url,
            default_scopes,
            extra_auth_params: d.extra_auth_params,
            token_auth_method: d.token_auth_method,
            handout_policy: d.handout_policy,
            reference_ttl_seconds: if d.reference_ttl_seconds == 0 {
                DEFAULT_REFERENCE_TTL
            } else {
                d.reference_ttl_seconds
            },
            created_at: current.map_or(now, |c| c.created_at),
            updated_at: now,
        })
    }
}
