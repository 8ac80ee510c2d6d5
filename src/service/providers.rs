//! Provider administration: validated create/read/update/delete, written through to the store
//! and mirrored in memory so the token handout path never reads the store for a provider. The
//! common settings are validated here; the kind-specific ones by the provider's kind.

use super::Error;
use super::kind::{self, KindContext};
use super::policy::{self, Action};
use crate::clock::Clock;
use crate::domain::{
    Caller, DEFAULT_REFERENCE_TTL, KindConfig, MAX_REFERENCE_TTL, ProviderConfig, ProviderDraft,
    ProviderId, ProviderKind, Scopes, Separator, TokenDialect, check_name,
};
use crate::oauth::TokenEndpoint;
use crate::profile::{Catalogue, ProfileKind, Separator as ProfileSeparator, TokenRequestFormat};
use crate::store::{Cas, GrantRepo, ProviderRepo, SecretStore, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use url::Url;

/// The shortest keep-alive interval (seconds): refreshing more often buys nothing.
const MIN_KEEP_ALIVE: u32 = 600;

#[derive(Debug)]
pub struct ProviderRegistry {
    /// Provider profiles `CreateProvider` may start from.
    catalogue: Arc<Catalogue>,
    repo: ProviderRepo,
    grants: GrantRepo,
    endpoint: Arc<dyn TokenEndpoint>,
    clock: Arc<dyn Clock>,
    allow_insecure_urls: bool,
    public_url: Url,
    /// The SSRF guard for discovery and registration fetches (MCP providers).
    fetcher: crate::mcp::Fetcher,
    providers: RwLock<HashMap<ProviderId, Arc<ProviderConfig>>>,
    /// False until the providers were read from the store; until then nothing is served, so an
    /// unreachable store at start-up never looks like "no such provider".
    loaded: AtomicBool,
    /// Serializes writes so the store and the in-memory mirror never disagree.
    write: tokio::sync::Mutex<()>,
}

/// A provider as `GetProvider` showed it, changed and sent back: what Valet filled in (from a
/// profile's variables, an `oidc` issuer's or an MCP server's discovery, an MCP server's host and
/// scopes) is dropped where it is still what was filled in, so it is filled in again from what
/// the draft now says (a new issuer, server or variable). Any other value is left for
/// validation to take or refuse.
pub(crate) fn drop_discovered(current: &ProviderConfig, mut d: ProviderDraft) -> ProviderDraft {
    let same_kind = d.kind.is_none_or(|k| k == current.kind.kind());
    let Some(c) = current.kind.auth_code().filter(|_| same_kind) else {
        return d;
    };
    let text = |u: Option<&Url>| u.map(Url::as_str).map(str::to_owned);
    let drop = |field: &mut String, filled: Option<String>| {
        if filled.as_deref() == Some(field.as_str()) {
            field.clear();
        }
    };
    let revocation = text(c.revocation_url.as_ref());
    let device = text(c.device_authorization_url.as_ref());
    // A profile's template, given other variables: filled again from them.
    if current.profile.as_deref() == Some(d.profile.as_str())
        && d.profile_vars != current.profile_vars
    {
        drop(&mut d.issuer, c.issuer.clone());
        drop(&mut d.revocation_url, revocation.clone());
        if matches!(current.kind, KindConfig::OAuth2(_)) {
            drop(&mut d.auth_url, text(Some(&c.auth_url)));
            drop(&mut d.token_url, text(Some(&c.client.token_url)));
        }
    }
    match &current.kind {
        KindConfig::Oidc(_) => {
            drop(&mut d.auth_url, text(Some(&c.auth_url)));
            drop(&mut d.token_url, text(Some(&c.client.token_url)));
            // Another issuer: the old one's endpoints are not this one's.
            if c.issuer.as_deref() != Some(d.issuer.as_str()) {
                drop(&mut d.revocation_url, revocation);
                drop(&mut d.device_authorization_url, device);
            }
        }
        KindConfig::Mcp(_) => {
            drop(&mut d.auth_url, text(Some(&c.auth_url)));
            drop(&mut d.token_url, text(Some(&c.client.token_url)));
            drop(&mut d.issuer, c.issuer.clone());
            drop(&mut d.revocation_url, revocation);
            drop(&mut d.device_authorization_url, device);
            if let Some(m) = &c.mcp {
                if d.default_scopes == m.default_scopes
                    && current.default_scopes.iter().eq(m.default_scopes.iter())
                {
                    d.default_scopes.clear();
                }
                let host = m.server_url.host_str().map(str::to_ascii_lowercase);
                if host.is_some_and(|h| d.egress_hosts == [h])
                    && d.egress_hosts == current.egress_hosts
                {
                    d.egress_hosts.clear();
                }
            }
        }
        _ => {}
    }
    d
}

impl ProviderRegistry {
    pub fn new(
        store: Arc<dyn SecretStore>,
        endpoint: Arc<dyn TokenEndpoint>,
        clock: Arc<dyn Clock>,
        public_url: Url,
        allow_insecure_urls: bool,
        catalogue: Arc<Catalogue>,
        fetcher: crate::mcp::Fetcher,
    ) -> Self {
        Self {
            catalogue,
            repo: ProviderRepo::new(store.clone()),
            grants: GrantRepo::new(store),
            endpoint,
            clock,
            allow_insecure_urls,
            public_url,
            fetcher,
            providers: RwLock::default(),
            loaded: AtomicBool::new(false),
            write: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads every provider from the store into memory (start-up, and when the store returns).
    pub async fn load(&self) -> Result<usize, Error> {
        let loaded: HashMap<_, _> = self
            .repo
            .all()
            .await?
            .into_iter()
            .map(|p| (p.id.clone(), Arc::new(p)))
            .collect();
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

    /// A provider, for an operator.
    pub fn describe(&self, caller: &Caller, id: &ProviderId) -> Result<Arc<ProviderConfig>, Error> {
        policy::authorize(caller, Action::ManageProviders)?;
        self.get(id)
    }

    /// Every provider, for an operator.
    pub fn list(&self, caller: &Caller) -> Result<Vec<Arc<ProviderConfig>>, Error> {
        policy::authorize(caller, Action::ManageProviders)?;
        self.all()
    }

    /// A provider from memory (the handout path).
    pub fn get(&self, id: &ProviderId) -> Result<Arc<ProviderConfig>, Error> {
        self.ensure_loaded()?;
        self.providers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| Error::UnknownProvider(id.as_str().to_owned()))
    }

    /// Every provider id, sorted.
    pub fn ids(&self) -> Result<Vec<ProviderId>, Error> {
        Ok(self.all()?.iter().map(|p| p.id.clone()).collect())
    }

    fn all(&self) -> Result<Vec<Arc<ProviderConfig>>, Error> {
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

    pub async fn create(
        &self,
        caller: &Caller,
        draft: ProviderDraft,
    ) -> Result<Arc<ProviderConfig>, Error> {
        policy::authorize(caller, Action::ManageProviders)?;
        let id = ProviderId::parse(&draft.id)?;
        self.ensure_loaded()?;
        let _w = self.write.lock().await;
        if self.get(&id).is_ok() {
            return Err(Error::AlreadyExists {
                what: "provider",
                id: id.to_string(),
            });
        }
        let now = self.clock.now_unix();
        let config = self.validate(id, draft, None, now).await?;
        self.repo
            .put(&config, Cas::Absent)
            .await
            .map_err(|e| match e {
                StoreError::Conflict => Error::AlreadyExists {
                    what: "provider",
                    id: config.id.to_string(),
                },
                other => other.into(),
            })?;
        tracing::info!(provider = %config.id, "provider created");
        Ok(self.remember(config))
    }

    /// Replaces a provider's configuration. `true` with it: the provider now stands for another
    /// MCP server or authorization server, so its grants (minted for the old one) were deleted
    /// and the caller drops their cached tokens and references (`Credentials::forget_grants`).
    pub async fn update(
        &self,
        caller: &Caller,
        draft: ProviderDraft,
    ) -> Result<(Arc<ProviderConfig>, bool), Error> {
        policy::authorize(caller, Action::ManageProviders)?;
        let id = ProviderId::parse(&draft.id)?;
        let _w = self.write.lock().await;
        let current = self.get(&id)?;
        let now = self.clock.now_unix();
        let draft = drop_discovered(&current, draft);
        let config = self.validate(id, draft, Some(&current), now).await?;
        let bound = |p: &ProviderConfig| {
            p.kind
                .auth_code()
                .and_then(|c| c.mcp.as_ref())
                .map(|m| (m.resource.clone(), m.issuer.clone()))
        };
        // A token minted for one MCP server is never handed out for another.
        let rebound = bound(&current).is_some() && bound(&current) != bound(&config);
        if rebound {
            self.grants.delete_provider(&config.id).await?;
        }
        self.repo.put(&config, Cas::Any).await?;
        tracing::info!(provider = %config.id, rebound, "provider updated");
        Ok((self.remember(config), rebound))
    }

    /// Deletes the provider and every grant made through it (the caller authorized it; see
    /// `Credentials::delete_provider`, which also drops cached tokens and references); returns
    /// how many grants went.
    pub(crate) async fn delete(&self, id: &ProviderId) -> Result<usize, Error> {
        let _w = self.write.lock().await;
        self.get(id)?;
        let grants = self.grants.delete_provider(id).await?;
        self.repo.delete(id).await?;
        self.providers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        Ok(grants)
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
        let d = self.apply_profile(d)?;
        check_name(&d.name)?;
        let default_scopes = Scopes::parse("default_scopes", &d.default_scopes)?;
        if d.reference_ttl_seconds > MAX_REFERENCE_TTL {
            return Err(Error::invalid(
                "reference_ttl_seconds",
                format!("must be at most {MAX_REFERENCE_TTL} (one year)"),
            ));
        }
        if d.keep_alive_seconds != 0 && d.keep_alive_seconds < MIN_KEEP_ALIVE {
            return Err(Error::invalid(
                "keep_alive_seconds",
                format!("must be 0 (off) or at least {MIN_KEEP_ALIVE}"),
            ));
        }
        if d.max_grant_age_seconds != 0 && d.max_grant_age_seconds < 3600 {
            return Err(Error::invalid(
                "max_grant_age_seconds",
                "must be 0 (no maximum) or at least 3600",
            ));
        }
        let redirect_uri = self.redirect_uri(&id);
        let ctx = KindContext {
            endpoint: &*self.endpoint,
            allow_insecure_urls: self.allow_insecure_urls,
            current,
            fetcher: &self.fetcher,
            public_url: &self.public_url,
            redirect_uri: &redirect_uri,
        };
        let kind = kind::validate(&d, ctx).await?;
        let mcp = kind.auth_code().and_then(|c| c.mcp.as_ref());
        // An MCP server's own scopes when the operator names none.
        let default_scopes = match mcp {
            Some(m) if default_scopes.is_empty() => {
                Scopes::parse("default_scopes", &m.default_scopes)?
            }
            _ => default_scopes,
        };
        let mut egress_hosts = check_egress_hosts(&d.egress_hosts)?;
        if egress_hosts.is_empty()
            && let Some(host) = mcp.and_then(|m| m.server_url.host_str())
        {
            // An MCP server's tokens go to the MCP server.
            egress_hosts.push(host.to_ascii_lowercase());
        }
        Ok(ProviderConfig {
            name: if d.name.is_empty() {
                id.to_string()
            } else {
                d.name
            },
            id,
            kind,
            profile: (!d.profile.is_empty()).then(|| d.profile.clone()),
            profile_vars: d.profile_vars.clone(),
            default_scopes,
            handout_policy: d.handout_policy,
            reference_ttl_seconds: if d.reference_ttl_seconds == 0 {
                DEFAULT_REFERENCE_TTL
            } else {
                d.reference_ttl_seconds
            },
            egress_hosts,
            keep_alive_seconds: d.keep_alive_seconds,
            max_grant_age_seconds: d.max_grant_age_seconds,
            created_at: current.map_or(now, |c| c.created_at),
            updated_at: now,
        })
    }

    /// Whether the operator lets provider URLs (and so an agent's `target_url`) be plain http.
    pub fn allows_insecure_urls(&self) -> bool {
        self.allow_insecure_urls
    }

    /// The client ID Metadata Document Valet serves for an MCP provider registered with one.
    pub fn client_metadata_document(&self, id: &ProviderId) -> Option<serde_json::Value> {
        let p = self.get(id).ok()?;
        let code = p.kind.auth_code()?;
        let m = code.mcp.as_ref()?;
        (m.registration == crate::domain::McpRegistration::MetadataDocument).then(|| {
            crate::mcp::client_metadata_document(
                &code.client.client_id,
                id.as_str(),
                &self.redirect_uri(id),
            )
        })
    }

    /// Fills every field the draft leaves empty from its profile, if it names one.
    fn apply_profile(&self, mut d: ProviderDraft) -> Result<ProviderDraft, Error> {
        if d.profile.is_empty() {
            if !d.profile_vars.is_empty() {
                return Err(Error::invalid(
                    "profile_vars",
                    "fill in a profile's endpoints: name the profile (profile), or leave them empty",
                ));
            }
            return Ok(d);
        }
        let profile = self
            .catalogue
            .get(&d.profile)
            .ok_or_else(|| Error::invalid("profile", self.catalogue.unknown(&d.profile)))?;
        let p = profile
            .instantiate(&d.profile_vars)
            .map_err(|e| Error::invalid("profile_vars", e.to_string()))?;
        let fill = |slot: &mut String, v: &Option<String>| {
            if slot.is_empty()
                && let Some(v) = v
            {
                slot.clone_from(v);
            }
        };
        d.kind = d.kind.or(Some(match p.kind {
            ProfileKind::OAuth2 => ProviderKind::OAuth2,
            ProfileKind::Oidc => ProviderKind::Oidc,
        }));
        fill(&mut d.issuer, &p.issuer);
        if d.kind == Some(ProviderKind::OAuth2) {
            fill(&mut d.auth_url, &p.auth_url);
            fill(&mut d.token_url, &p.token_url);
        }
        fill(&mut d.revocation_url, &p.revocation_url);
        d.token_auth_method = d.token_auth_method.or(Some(p.token_auth_method));
        if d.default_scopes.is_empty() {
            d.default_scopes.clone_from(&p.default_scopes);
        }
        for (k, v) in &p.extra_auth_params {
            d.extra_auth_params
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
        if d.keep_alive_seconds == 0 {
            d.keep_alive_seconds = p.keep_alive_seconds;
        }
        if d.name.is_empty() {
            d.name.clone_from(&p.title);
        }
        d.scope_param.clone_from(&p.scope_param);
        d.scope_separator = separator(p.scope_separator);
        d.dialect = TokenDialect {
            request: match p.token_request {
                TokenRequestFormat::Form => crate::domain::TokenRequestFormat::Form,
                TokenRequestFormat::Json => crate::domain::TokenRequestFormat::Json,
            },
            token_path: p.token_path.clone(),
            ok_field: p.ok_field.clone(),
            granted_scope_separator: separator(p.granted_scope_separator),
            metadata: p.metadata.clone(),
            token_lifetime_seconds: p.token_lifetime_seconds,
            scope_aliases: p.scope_aliases.clone(),
            unlisted_scopes: p.unlisted_scopes.clone(),
            callback_metadata: p.callback_metadata.clone(),
            invalid_grant_errors: p.invalid_grant_errors.clone(),
            exchange_params: p.extra_exchange_params.clone(),
            token_header: p.token_header.clone(),
        };
        Ok(d)
    }
}

fn separator(s: ProfileSeparator) -> Separator {
    match s {
        ProfileSeparator::Space => Separator::Space,
        ProfileSeparator::Comma => Separator::Comma,
        ProfileSeparator::Any => Separator::Any,
    }
}

/// Validates an egress allow-list: host names (lowercased), or `*.` and a domain for its
/// subdomains; no scheme, port, path or wildcard elsewhere.
fn check_egress_hosts(hosts: &[String]) -> Result<Vec<String>, Error> {
    if hosts.len() > 64 {
        return Err(Error::invalid(
            "egress_hosts",
            "at most 64 hosts are allowed",
        ));
    }
    hosts
        .iter()
        .map(|h| {
            let bare = h.strip_prefix("*.").unwrap_or(h);
            let ok = !bare.is_empty()
                && bare.len() <= 253
                && bare
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                && !bare.starts_with('.')
                && !bare.ends_with('.');
            if ok {
                Ok(h.to_ascii_lowercase())
            } else {
                Err(Error::invalid(
                    "egress_hosts",
                    format!(
                        "{h:?} is not a host name (give hosts such as api.example.com or *.example.com, without scheme, port or path)"
                    ),
                ))
            }
        })
        .collect()
}
