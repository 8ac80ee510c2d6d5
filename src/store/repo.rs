//! Typed repositories over the `SecretStore` port: each owns one kind of record's key (from
//! `keyspace`), its encoding and decoding, and its check-and-set rules. Record bytes are zeroized
//! when dropped; decode errors report kind and position only, never the (secret) value.

use super::{Cas, SecretBytes, SecretStore, StoreError, keyspace};
use crate::domain::{
    AuthCode, Grant, GrantKey, HandoutPolicy, KindConfig, OAuthClient, ProviderConfig, ProviderId,
    ProviderKind, ReferenceRecord, Scopes, Separator, StaticCredential, TokenAuthMethod,
    TokenDialect, UserId,
};
use crate::domain::{ConsentFlow, McpServer, ServiceAccount};
use crate::jwt::SigningKey;
use crate::secret::{SecretString, serde_secret};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use url::Url;
use zeroize::Zeroizing;

fn encode<T: Serialize>(key: &str, v: &T) -> Result<SecretBytes, StoreError> {
    serde_json::to_vec(v)
        .map(Zeroizing::new)
        .map_err(|e| StoreError::Corrupt {
            key: key.to_owned(),
            reason: format!("cannot encode ({:?} error)", e.classify()),
        })
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        reason: crate::secret::json_error_at(&e),
    })
}

/// How many keys a walk over a namespace holds at once, and deletes in one batch.
const BATCH: usize = 1000;

/// The keys under a prefix in batches of at most `BATCH`, in key order, so that deleting or
/// scanning a namespace of a million keys never holds them all. On a store that pages natively
/// (the embedded one) each batch is one `list_page`; on one that does not (Vault, whose LIST
/// answers a whole directory) the prefix is listed once and handed out in batches.
pub(crate) struct KeyBatches<'a> {
    store: &'a dyn SecretStore,
    prefix: String,
    /// Paging natively: the last key handed out.
    after: Option<String>,
    /// Listed once: the keys not yet handed out, last first.
    rest: Option<Vec<String>>,
    done: bool,
}

impl<'a> KeyBatches<'a> {
    pub(crate) fn new(store: &'a dyn SecretStore, prefix: String) -> Self {
        Self {
            store,
            prefix,
            after: None,
            rest: None,
            done: false,
        }
    }

    /// The next batch; `None` once every key was handed out.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<String>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let batch = if self.store.pages_natively() {
            let keys = self
                .store
                .list_page(&self.prefix, self.after.as_deref(), BATCH)
                .await?;
            self.after = keys.last().cloned();
            self.done = keys.len() < BATCH;
            keys
        } else {
            if self.rest.is_none() {
                let mut all = self.store.list(&self.prefix).await?;
                all.reverse();
                self.rest = Some(all);
            }
            let rest = self.rest.get_or_insert_default();
            let mut batch = rest.split_off(rest.len().saturating_sub(BATCH));
            batch.reverse();
            self.done = rest.is_empty();
            batch
        };
        Ok((!batch.is_empty()).then_some(batch))
    }
}

async fn read<T: serde::de::DeserializeOwned>(
    store: &dyn SecretStore,
    key: &str,
) -> Result<Option<(T, u64)>, StoreError> {
    match store.get(key).await? {
        None => Ok(None),
        Some(rec) => Ok(Some((decode(key, &rec.value)?, rec.version))),
    }
}

/// A provider as stored: the flat record every version of Valet has written.
#[derive(Serialize, Deserialize)]
struct ProviderRecord {
    id: ProviderId,
    name: String,
    kind: ProviderKind,
    client_id: String,
    #[serde(with = "serde_secret", default)]
    client_secret: Option<SecretString>,
    /// Absent for kinds without an authorization endpoint (client credentials).
    #[serde(default)]
    auth_url: Option<Url>,
    /// Absent for static credentials.
    #[serde(default)]
    token_url: Option<Url>,
    issuer: Option<String>,
    revocation_url: Option<Url>,
    default_scopes: Scopes,
    extra_auth_params: BTreeMap<String, String>,
    token_auth_method: TokenAuthMethod,
    #[serde(default)]
    handout_policy: HandoutPolicy,
    #[serde(default = "default_reference_ttl")]
    reference_ttl_seconds: u32,
    created_at: i64,
    updated_at: i64,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    profile_vars: BTreeMap<String, String>,
    #[serde(default)]
    dialect: TokenDialect,
    #[serde(default)]
    scope_param: Option<String>,
    #[serde(default)]
    scope_separator: Option<Separator>,
    /// Static credentials: where the value goes.
    #[serde(default)]
    credential: Option<StaticCredential>,
    /// `private_key_jwt` and service accounts: the PEM private key and its `kid`.
    #[serde(with = "serde_secret", default)]
    private_key: Option<SecretString>,
    #[serde(default)]
    key_id: Option<String>,
    /// Service accounts: how the assertion is made.
    #[serde(default)]
    assertion: Option<AssertionRecord>,
    #[serde(default)]
    token_exchange: bool,
    #[serde(default)]
    consent_flow: ConsentFlow,
    #[serde(default)]
    device_authorization_url: Option<Url>,
    #[serde(default)]
    iss_required: bool,
    #[serde(default)]
    consent_return_url: Option<Url>,
    #[serde(default)]
    allow_account_change: bool,
    /// RFC 8707 resource bound into every token request (MCP servers).
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    mcp: Option<McpServer>,
    #[serde(default)]
    egress_hosts: Vec<String>,
    #[serde(default)]
    keep_alive_seconds: u32,
    #[serde(default)]
    max_grant_age_seconds: u32,
}

#[derive(Serialize, Deserialize)]
struct AssertionRecord {
    issuer: String,
    subject: Option<String>,
    audience: String,
    scope_in_assertion: bool,
    subject_from_user: bool,
}

fn default_reference_ttl() -> u32 {
    crate::domain::DEFAULT_REFERENCE_TTL
}

impl From<&ProviderConfig> for ProviderRecord {
    fn from(p: &ProviderConfig) -> Self {
        let (client, code, credential) = match &p.kind {
            KindConfig::OAuth2(c) | KindConfig::Oidc(c) | KindConfig::Mcp(c) => {
                (Some(&c.client), Some(c), None)
            }
            KindConfig::ClientCredentials(c) => (Some(c), None, None),
            KindConfig::ServiceAccount(s) => (Some(&s.client), None, None),
            KindConfig::Static(s) => (None, None, Some(s.clone())),
        };
        let (key, assertion) = match &p.kind {
            KindConfig::ServiceAccount(s) => (
                Some(&s.key),
                Some(AssertionRecord {
                    issuer: s.issuer.clone(),
                    subject: s.subject.clone(),
                    audience: s.audience.clone(),
                    scope_in_assertion: s.scope_in_assertion,
                    subject_from_user: s.subject_from_user,
                }),
            ),
            _ => (client.and_then(|c| c.signing_key.as_ref()), None),
        };
        Self {
            id: p.id.clone(),
            name: p.name.clone(),
            kind: p.kind.kind(),
            client_id: client.map(|c| c.client_id.clone()).unwrap_or_default(),
            client_secret: client.and_then(|c| c.client_secret.clone()),
            auth_url: code.map(|c| c.auth_url.clone()),
            token_url: client.map(|c| c.token_url.clone()),
            issuer: code.and_then(|c| c.issuer.clone()),
            revocation_url: code.and_then(|c| c.revocation_url.clone()),
            default_scopes: p.default_scopes.clone(),
            extra_auth_params: code
                .map(|c| c.extra_auth_params.clone())
                .unwrap_or_default(),
            token_auth_method: client.map(|c| c.auth_method).unwrap_or_default(),
            handout_policy: p.handout_policy,
            reference_ttl_seconds: p.reference_ttl_seconds,
            created_at: p.created_at,
            updated_at: p.updated_at,
            profile: p.profile.clone(),
            profile_vars: p.profile_vars.clone(),
            dialect: client.map(|c| c.dialect.clone()).unwrap_or_default(),
            scope_param: code.map(|c| c.scope_param.clone()),
            scope_separator: code.map(|c| c.scope_separator),
            credential,
            token_exchange: client.is_some_and(|c| c.token_exchange),
            consent_flow: code.map(|c| c.consent_flow).unwrap_or_default(),
            device_authorization_url: code.and_then(|c| c.device_authorization_url.clone()),
            iss_required: code.is_some_and(|c| c.iss_required),
            consent_return_url: code.and_then(|c| c.consent_return_url.clone()),
            allow_account_change: code.is_some_and(|c| c.allow_account_change),
            resource: client.and_then(|c| c.resource.clone()),
            mcp: code.and_then(|c| c.mcp.clone()),
            egress_hosts: p.egress_hosts.clone(),
            keep_alive_seconds: p.keep_alive_seconds,
            max_grant_age_seconds: p.max_grant_age_seconds,
            private_key: key.map(|k| k.pem().clone()),
            key_id: key.and_then(|k| k.key_id().map(str::to_owned)),
            assertion,
        }
    }
}

impl TryFrom<ProviderRecord> for ProviderConfig {
    type Error = &'static str;

    fn try_from(r: ProviderRecord) -> Result<Self, Self::Error> {
        let key = r
            .private_key
            .as_ref()
            .map(|pem| SigningKey::from_pem(pem, r.key_id.clone()))
            .transpose()
            .map_err(|_| "a private key that no longer parses")?;
        let client = |token_url: Option<Url>| -> Result<OAuthClient, &'static str> {
            Ok(OAuthClient {
                provider: r.id.to_string(),
                client_id: r.client_id.clone(),
                client_secret: r.client_secret.clone(),
                auth_method: r.token_auth_method,
                signing_key: key.clone().filter(|_| r.assertion.is_none()),
                token_exchange: r.token_exchange,
                token_url: token_url.ok_or("an OAuth provider without token_url")?,
                dialect: r.dialect.clone(),
                resource: r.resource.clone(),
            })
        };
        let auth_code = |auth_url: Option<Url>| -> Result<AuthCode, &'static str> {
            Ok(AuthCode {
                client: client(r.token_url.clone())?,
                auth_url: auth_url.ok_or("an authorization-code provider without auth_url")?,
                issuer: r.issuer.clone(),
                revocation_url: r.revocation_url.clone(),
                extra_auth_params: r.extra_auth_params.clone(),
                scope_param: r.scope_param.clone().unwrap_or_else(|| "scope".into()),
                scope_separator: r.scope_separator.unwrap_or(Separator::Space),
                consent_flow: r.consent_flow,
                device_authorization_url: r.device_authorization_url.clone(),
                iss_required: r.iss_required,
                consent_return_url: r.consent_return_url.clone(),
                allow_account_change: r.allow_account_change,
                mcp: r.mcp.clone(),
            })
        };
        let kind = match r.kind {
            ProviderKind::OAuth2 => KindConfig::OAuth2(auth_code(r.auth_url)?),
            ProviderKind::Oidc => KindConfig::Oidc(auth_code(r.auth_url)?),
            ProviderKind::Mcp => KindConfig::Mcp(auth_code(r.auth_url)?),
            ProviderKind::ClientCredentials => {
                KindConfig::ClientCredentials(client(r.token_url.clone())?)
            }
            ProviderKind::ServiceAccount => {
                let a = r
                    .assertion
                    .as_ref()
                    .ok_or("a service account without assertion settings")?;
                KindConfig::ServiceAccount(ServiceAccount {
                    client: client(r.token_url.clone())?,
                    key: key
                        .clone()
                        .ok_or("a service account without a private key")?,
                    issuer: a.issuer.clone(),
                    subject: a.subject.clone(),
                    audience: a.audience.clone(),
                    scope_in_assertion: a.scope_in_assertion,
                    subject_from_user: a.subject_from_user,
                })
            }
            ProviderKind::ApiKey | ProviderKind::HttpBasic | ProviderKind::HttpBearer => {
                KindConfig::Static(
                    r.credential
                        .clone()
                        .ok_or("a static provider without placement")?,
                )
            }
        };
        Ok(Self {
            id: r.id,
            name: r.name,
            kind,
            profile: r.profile,
            profile_vars: r.profile_vars,
            default_scopes: r.default_scopes,
            handout_policy: r.handout_policy,
            reference_ttl_seconds: r.reference_ttl_seconds,
            egress_hosts: r.egress_hosts,
            keep_alive_seconds: r.keep_alive_seconds,
            max_grant_age_seconds: r.max_grant_age_seconds,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// Provider configurations.
#[derive(Debug, Clone)]
pub struct ProviderRepo {
    store: Arc<dyn SecretStore>,
}

impl ProviderRepo {
    pub fn new(store: Arc<dyn SecretStore>) -> Self {
        Self { store }
    }

    pub async fn all(&self) -> Result<Vec<ProviderConfig>, StoreError> {
        let mut out = Vec::new();
        for key in self.store.list(keyspace::providers()).await? {
            if let Some((r, _)) = read::<ProviderRecord>(&*self.store, &key).await? {
                let p = ProviderConfig::try_from(r).map_err(|reason| StoreError::Corrupt {
                    key: key.clone(),
                    reason: reason.into(),
                })?;
                out.push(p);
            }
        }
        Ok(out)
    }

    pub async fn put(&self, p: &ProviderConfig, cas: Cas) -> Result<u64, StoreError> {
        let key = keyspace::provider(&p.id);
        let bytes = encode(&key, &ProviderRecord::from(p))?;
        self.store.put(&key, bytes, cas).await
    }

    pub async fn delete(&self, id: &ProviderId) -> Result<bool, StoreError> {
        self.store.delete(&keyspace::provider(id)).await
    }
}

/// Grants, at most one per (provider, user, agent).
#[derive(Debug, Clone)]
pub struct GrantRepo {
    store: Arc<dyn SecretStore>,
}

impl GrantRepo {
    pub fn new(store: Arc<dyn SecretStore>) -> Self {
        Self { store }
    }

    /// Whether no other process uses the store (see `SecretStore::exclusive`).
    pub fn exclusive(&self) -> bool {
        self.store.exclusive()
    }

    /// The grant and the version it was read at.
    pub async fn get(&self, key: &GrantKey) -> Result<Option<(Grant, u64)>, StoreError> {
        read(&*self.store, &keyspace::grant(key)).await
    }

    pub async fn put(&self, grant: &Grant, cas: Cas) -> Result<u64, StoreError> {
        let key = keyspace::grant(&grant.key);
        self.store.put(&key, encode(&key, grant)?, cas).await
    }

    pub async fn delete(&self, key: &GrantKey) -> Result<bool, StoreError> {
        self.store.delete(&keyspace::grant(key)).await
    }

    /// Whether `cursor` can resume a listing (it is a grant's key).
    pub fn is_cursor(cursor: &str) -> bool {
        keyspace::is_grant(cursor)
    }

    /// One page of the grants of `providers` (sorted; `None`: every grant) and, within them, of
    /// `user`, whose keys sort after `after`; those `keep` accepts, at most `size`. Only the
    /// key ranges of those providers and that user are read, and at most ten pages' worth of
    /// records, so a selective filter cannot make one call read the whole store. Returns the
    /// grants and the key to resume after when more may follow.
    pub async fn page(
        &self,
        providers: Option<&[ProviderId]>,
        user: Option<&UserId>,
        after: Option<&str>,
        size: usize,
        keep: impl Fn(&Grant) -> bool,
    ) -> Result<(Vec<Grant>, Option<String>), StoreError> {
        let prefixes: Vec<String> = match providers {
            None => vec![keyspace::grants(None)],
            Some(ids) => ids
                .iter()
                .map(|p| match user {
                    Some(u) => keyspace::grants_of_user(p, u),
                    None => keyspace::grants(Some(p)),
                })
                .collect(),
        };
        let size = size.max(1);
        let budget = size.saturating_mul(10);
        let (mut out, mut scanned) = (Vec::new(), 0);
        for prefix in prefixes {
            let mut cursor = match after {
                Some(a) if a.starts_with(prefix.as_str()) => Some(a.to_owned()),
                // The resume point lies beyond this prefix's keys.
                Some(a) if a > prefix.as_str() => continue,
                _ => None,
            };
            loop {
                let keys = self
                    .store
                    .list_page(prefix.as_str(), cursor.as_deref(), size)
                    .await?;
                let more = keys.len() == size;
                for key in keys {
                    scanned += 1;
                    match read::<Grant>(&*self.store, &key).await {
                        // One unreadable record (tampered, or from a newer version) is reported
                        // and skipped; it never takes the listing down for everyone.
                        Err(StoreError::Corrupt { key, reason }) => {
                            tracing::warn!(%key, "skipping an unreadable grant record: {reason}");
                        }
                        Err(e) => return Err(e),
                        Ok(Some((g, _))) if keep(&g) => out.push(g),
                        Ok(_) => {}
                    }
                    if out.len() >= size || scanned >= budget {
                        return Ok((out, Some(key)));
                    }
                    cursor = Some(key);
                }
                if !more {
                    break;
                }
            }
        }
        Ok((out, None))
    }

    /// Deletes every grant of `provider` a batch at a time (one transaction each on the
    /// embedded store); returns how many. Interrupted, it leaves whole grants, and a second
    /// call deletes the rest.
    pub async fn delete_provider(&self, provider: &ProviderId) -> Result<usize, StoreError> {
        let mut batches = KeyBatches::new(&*self.store, keyspace::grants(Some(provider)));
        let mut n = 0;
        while let Some(keys) = batches.next().await? {
            n += self.store.delete_many(&keys).await?;
        }
        Ok(n)
    }
}

/// Reference records by lookup hash, each with an index entry under its grant so a grant's
/// references are found without reading every reference.
#[derive(Debug, Clone)]
pub struct ReferenceRepo {
    store: Arc<dyn SecretStore>,
}

impl ReferenceRepo {
    pub fn new(store: Arc<dyn SecretStore>) -> Self {
        Self { store }
    }

    pub async fn get(&self, hash: &str) -> Result<Option<(ReferenceRecord, u64)>, StoreError> {
        read(&*self.store, &keyspace::reference(hash)).await
    }

    /// Writes a new record: the index entry first, so a record never exists unindexed (a crash
    /// in between leaves an entry pointing at nothing, which revocation skips).
    pub async fn create(&self, hash: &str, r: &ReferenceRecord) -> Result<(), StoreError> {
        self.index(&r.grant, hash).await?;
        let key = keyspace::reference(hash);
        self.store.put(&key, encode(&key, r)?, Cas::Absent).await?;
        Ok(())
    }

    async fn index(&self, grant: &GrantKey, hash: &str) -> Result<(), StoreError> {
        let entry = keyspace::reference_index(grant, hash);
        self.store
            .put(&entry, Zeroizing::new(Vec::new()), Cas::Any)
            .await
            .map(|_| ())
    }

    /// Overwrites a record at `version` (spending a single-use reference).
    pub async fn update(
        &self,
        hash: &str,
        r: &ReferenceRecord,
        version: u64,
    ) -> Result<u64, StoreError> {
        let key = keyspace::reference(hash);
        self.store
            .put(&key, encode(&key, r)?, Cas::Version(version))
            .await
    }

    /// Deletes one reference and its index entry; returns whether the record existed.
    pub async fn delete(&self, hash: &str, grant: &GrantKey) -> Result<bool, StoreError> {
        let existed = self.store.delete(&keyspace::reference(hash)).await?;
        self.store
            .delete(&keyspace::reference_index(grant, hash))
            .await?;
        Ok(existed)
    }

    /// Deletes every reference to `grant`; returns how many records existed.
    pub async fn delete_for_grant(&self, grant: &GrantKey) -> Result<usize, StoreError> {
        self.delete_indexed(&keyspace::reference_index_of_grant(grant))
            .await
    }

    /// Deletes every reference to a grant of `provider`.
    pub async fn delete_for_provider(&self, provider: &ProviderId) -> Result<usize, StoreError> {
        self.delete_indexed(&keyspace::reference_index_of_provider(provider))
            .await
    }

    /// Deletes the references the index entries under `prefix` point at, then the entries:
    /// two batched deletes (one transaction each on the embedded store) per `BATCH` entries.
    async fn delete_indexed(&self, prefix: &str) -> Result<usize, StoreError> {
        let mut batches = KeyBatches::new(&*self.store, prefix.to_owned());
        let mut n = 0;
        while let Some(entries) = batches.next().await? {
            let references: Vec<String> = entries
                .iter()
                .filter_map(|e| keyspace::indexed_hash(e))
                .map(keyspace::reference)
                .collect();
            n += self.store.delete_many(&references).await?;
            self.store.delete_many(&entries).await?;
        }
        Ok(n)
    }

    /// Deletes the references that can never resolve again (expired at `now`, or single-use
    /// and spent) with their index entries; returns how many. An unreadable record is left for
    /// an operator (listings report it).
    pub async fn reap(&self, now: i64) -> Result<usize, StoreError> {
        let mut n = 0;
        let mut batches = KeyBatches::new(&*self.store, keyspace::references().to_owned());
        while let Some(keys) = batches.next().await? {
            for key in keys {
                let Some(hash) = keyspace::reference_hash(&key) else {
                    continue;
                };
                match read::<ReferenceRecord>(&*self.store, &key).await {
                    Ok(Some((r, _))) if r.expires_at <= now || r.used => {
                        if self.delete(hash, &r.grant).await? {
                            n += 1;
                        }
                    }
                    Ok(_) | Err(StoreError::Corrupt { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(n)
    }

    /// Indexes references written before the index existed; once per store (a marker records it).
    pub async fn ensure_indexed(&self) -> Result<usize, StoreError> {
        let marker = keyspace::reference_index_marker();
        if self.store.get(&marker).await?.is_some() {
            return Ok(0);
        }
        let mut n = 0;
        let mut batches = KeyBatches::new(&*self.store, keyspace::references().to_owned());
        while let Some(keys) = batches.next().await? {
            for key in keys {
                let Some(hash) = keyspace::reference_hash(&key) else {
                    continue;
                };
                if let Some((r, _)) = read::<ReferenceRecord>(&*self.store, &key).await? {
                    self.index(&r.grant, hash).await?;
                    n += 1;
                }
            }
        }
        match self
            .store
            .put(&marker, Zeroizing::new(b"1".to_vec()), Cas::Absent)
            .await
        {
            Ok(_) | Err(StoreError::Conflict) => Ok(n),
            Err(e) => Err(e),
        }
    }
}

/// Deployment-wide values: the reference master key.
#[derive(Debug, Clone)]
pub struct MetaRepo {
    store: Arc<dyn SecretStore>,
}

impl MetaRepo {
    pub fn new(store: Arc<dyn SecretStore>) -> Self {
        Self { store }
    }

    /// The reference master key, created from `fresh` on first use; a replica that lost the race
    /// takes the winner's.
    pub async fn reference_key(&self, fresh: SecretBytes) -> Result<SecretBytes, StoreError> {
        self.deployment_key(keyspace::reference_master_key(), fresh)
            .await
    }

    /// Records that a daemon serves from this store (`keyspace::served_marker`): `valet store
    /// copy` refuses it as a destination.
    pub async fn mark_served(&self) -> Result<(), StoreError> {
        self.store
            .put(
                &keyspace::served_marker(),
                Zeroizing::new(b"1".to_vec()),
                Cas::Any,
            )
            .await
            .map(|_| ())
    }

    /// Records that replica `tag` answers at `url` (written by the replica itself at start).
    pub async fn register_replica(&self, tag: &str, url: &Url) -> Result<(), StoreError> {
        self.store
            .put(
                &keyspace::replica(tag),
                Zeroizing::new(url.as_str().as_bytes().to_vec()),
                Cas::Any,
            )
            .await
            .map(|_| ())
    }

    /// The HTTP address replica `tag` registered, if any.
    pub async fn replica(&self, tag: &str) -> Result<Option<Url>, StoreError> {
        let key = keyspace::replica(tag);
        let Some(rec) = self.store.get(&key).await? else {
            return Ok(None);
        };
        let text = std::str::from_utf8(&rec.value).map_err(|_| StoreError::Corrupt {
            key: key.clone(),
            reason: "not UTF-8".into(),
        })?;
        Url::parse(text).map(Some).map_err(|_| StoreError::Corrupt {
            key,
            reason: "not a URL".into(),
        })
    }

    /// The audit trail's user-hash key, created from `fresh` on first use like the reference key.
    pub async fn audit_user_key(&self, fresh: SecretBytes) -> Result<SecretBytes, StoreError> {
        self.deployment_key(keyspace::audit_user_key(), fresh).await
    }

    async fn deployment_key(
        &self,
        key: String,
        fresh: SecretBytes,
    ) -> Result<SecretBytes, StoreError> {
        if let Some(rec) = self.store.get(&key).await? {
            return Ok(rec.value);
        }
        match self.store.put(&key, fresh.clone(), Cas::Absent).await {
            Ok(_) => Ok(fresh),
            Err(StoreError::Conflict) => match self.store.get(&key).await? {
                Some(rec) => Ok(rec.value),
                None => Err(StoreError::Conflict),
            },
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ProviderId, Scopes, UserId};

    fn reference(user: &str, expires_at: i64, used: bool) -> ReferenceRecord {
        ReferenceRecord {
            grant: GrantKey {
                provider: ProviderId::parse("idp").unwrap(),
                user: UserId::parse(user).unwrap(),
                agent: None,
                account: None,
            },
            scopes: Scopes::default(),
            owner: "agent-a".into(),
            created_at: 0,
            expires_at,
            single_use: used,
            used,
        }
    }

    fn grant(provider: &str, user: &str) -> Grant {
        Grant {
            key: GrantKey {
                provider: ProviderId::parse(provider).unwrap(),
                user: UserId::parse(user).unwrap(),
                agent: None,
                account: None,
            },
            scopes: Scopes::default(),
            subject: None,
            refresh_token: None,
            status: crate::domain::GrantStatus::Active,
            created_at: 0,
            updated_at: 0,
            refreshing: None,
            access_token: None,
            token_type: None,
            expires_at: 0,
            declined: Scopes::default(),
            metadata: BTreeMap::new(),
            consented_at: 0,
            email: None,
        }
    }

    /// A user's grants across providers come one page at a time, resuming across the
    /// providers' key ranges, and only that user's records are read.
    #[tokio::test]
    async fn pages_resume_across_providers_and_read_only_the_users_range() {
        let store = Arc::new(crate::store::MemoryStore::default());
        let repo = GrantRepo::new(store.clone());
        for (p, u) in [
            ("a", "alice"),
            ("a", "bob"),
            ("ab", "alice"),
            ("b", "alice"),
        ] {
            repo.put(&grant(p, u), Cas::Absent).await.unwrap();
        }
        let ids: Vec<ProviderId> = ["a", "ab", "b"]
            .iter()
            .map(|p| ProviderId::parse(p).unwrap())
            .collect();
        let alice = UserId::parse("alice").unwrap();
        let read = std::sync::atomic::AtomicUsize::new(0);
        let keep = |_: &Grant| {
            read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            true
        };
        let mut after = None;
        let mut providers = Vec::new();
        loop {
            let (page, next) = repo
                .page(Some(&ids), Some(&alice), after.as_deref(), 1, &keep)
                .await
                .unwrap();
            providers.extend(page.iter().map(|g| g.key.provider.to_string()));
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(providers, ["a", "ab", "b"]);
        assert_eq!(read.into_inner(), 3, "bob's grant is never read");
    }

    /// Revoking a grant deletes all of its references in two batched deletes (one
    /// transaction each on the embedded store) and leaves other grants' references alone.
    #[tokio::test]
    async fn a_grants_references_go_in_one_batch_and_only_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn SecretStore> =
            Arc::new(crate::store::EmbeddedStore::open(dir.path()).unwrap());
        let repo = ReferenceRepo::new(store.clone());
        for i in 0..300 {
            repo.create(&format!("a{i}"), &reference("alice", 10, false))
                .await
                .unwrap();
        }
        repo.create("b0", &reference("bob", 10, false))
            .await
            .unwrap();
        let alice = reference("alice", 10, false).grant;
        assert_eq!(repo.delete_for_grant(&alice).await.unwrap(), 300);
        assert_eq!(
            store.list(keyspace::references()).await.unwrap(),
            vec![keyspace::reference("b0")]
        );
        assert_eq!(store.list("ref-index/").await.unwrap().len(), 1);
    }

    /// Expired and spent references go with their index entries; live ones and their entries
    /// stay.
    #[tokio::test]
    async fn the_reaper_deletes_dead_references_and_their_index_entries() {
        let store: Arc<dyn SecretStore> = Arc::new(crate::store::MemoryStore::default());
        let repo = ReferenceRepo::new(store.clone());
        let now = 1_000;
        for (hash, r) in [
            ("expired", reference("alice", now, false)),
            ("spent", reference("bob", now + 60, true)),
            ("live", reference("carol", now + 60, false)),
        ] {
            repo.create(hash, &r).await.unwrap();
        }
        assert_eq!(repo.reap(now).await.unwrap(), 2);
        assert_eq!(
            store.list(keyspace::references()).await.unwrap(),
            vec![keyspace::reference("live")]
        );
        let index = store.list("ref-index/").await.unwrap();
        assert_eq!(index.len(), 1, "{index:?}");
        assert!(index[0].ends_with("/live"), "{index:?}");
        assert_eq!(repo.reap(now).await.unwrap(), 0, "nothing left to reap");
    }

    /// What a walk asks of its store: listings of a whole prefix, pages, and batched deletes.
    #[derive(Debug)]
    struct Spy {
        inner: Arc<crate::store::EmbeddedStore>,
        native: bool,
        full_lists: std::sync::atomic::AtomicUsize,
        pages: std::sync::atomic::AtomicUsize,
        deletes: std::sync::Mutex<Vec<usize>>,
    }

    #[async_trait::async_trait]
    impl SecretStore for Spy {
        fn backend(&self) -> &'static str {
            "spy"
        }
        fn pages_natively(&self) -> bool {
            self.native
        }
        async fn get(&self, key: &str) -> Result<Option<super::super::Versioned>, StoreError> {
            self.inner.get(key).await
        }
        async fn put(&self, key: &str, value: SecretBytes, cas: Cas) -> Result<u64, StoreError> {
            self.inner.put(key, value, cas).await
        }
        async fn delete(&self, key: &str) -> Result<bool, StoreError> {
            self.delete_many(&[key.to_owned()]).await.map(|n| n == 1)
        }
        async fn delete_many(&self, keys: &[String]) -> Result<usize, StoreError> {
            self.deletes.lock().unwrap().push(keys.len());
            self.inner.delete_many(keys).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
            self.full_lists
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.inner.list(prefix).await
        }
        async fn list_page(
            &self,
            prefix: &str,
            after: Option<&str>,
            limit: usize,
        ) -> Result<Vec<String>, StoreError> {
            self.pages
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.inner.list_page(prefix, after, limit).await
        }
        async fn check(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    /// Deleting a provider with 2,500 grants deletes them in batches of at most `BATCH`, on a
    /// store that pages (a page per batch, never the whole listing) and on one that does not
    /// (one listing), and leaves other providers' grants, even one whose id extends it.
    #[tokio::test]
    async fn a_providers_grants_go_in_bounded_batches_on_either_kind_of_store() {
        for native in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let embedded = Arc::new(crate::store::EmbeddedStore::open(dir.path()).unwrap());
            let key = |p: &str, u: &str| keyspace::grant(&grant(p, u).key);
            let mut records: Vec<_> = (0..2_500)
                .map(|i| {
                    (
                        key("big", &format!("u{i:04}")),
                        Zeroizing::new(b"{}".to_vec()),
                    )
                })
                .collect();
            records.push((key("bigger", "alice"), Zeroizing::new(b"{}".to_vec())));
            records.push((key("other", "alice"), Zeroizing::new(b"{}".to_vec())));
            embedded.put_many(records).await.unwrap();
            let spy = Arc::new(Spy {
                inner: embedded.clone(),
                native,
                full_lists: Default::default(),
                pages: Default::default(),
                deletes: Default::default(),
            });
            let repo = GrantRepo::new(spy.clone());
            let big = ProviderId::parse("big").unwrap();
            assert_eq!(repo.delete_provider(&big).await.unwrap(), 2_500);
            assert_eq!(
                embedded.list("grants/").await.unwrap(),
                vec![key("bigger", "alice"), key("other", "alice")]
            );
            assert_eq!(*spy.deletes.lock().unwrap(), vec![1000, 1000, 500]);
            let count =
                |c: &std::sync::atomic::AtomicUsize| c.load(std::sync::atomic::Ordering::Relaxed);
            let (full_lists, pages) = (count(&spy.full_lists), count(&spy.pages));
            if native {
                assert_eq!((full_lists, pages), (0, 3));
            } else {
                assert_eq!((full_lists, pages), (1, 0));
            }
            assert_eq!(repo.delete_provider(&big).await.unwrap(), 0, "nothing left");
        }
    }
}
