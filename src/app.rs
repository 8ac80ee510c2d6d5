//! The composition root: opens the store, builds the services, binds both listeners, spawns the
//! background tasks and owns shutdown (health NOT_SERVING, drain within the grace period).

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, StoreKind};
use crate::lease::{LeaseLimits, LeaseTable};
use crate::oauth::{OAuth2TokenEndpoint, ProviderHttp, TokenEndpoint};
use crate::pb;
use crate::pb::credentials_server::CredentialsServer;
use crate::pb::providers_server::ProvidersServer;
use crate::secret::{random_token, sha256};
use crate::service::{Broker, BrokerLimits, ProviderRegistry, Role};
use crate::store::{EmbeddedStore, MemoryStore, SecretStore, VaultStore};
use crate::transport::grpc::{CallerAuth, CallerKey, CredentialsApi, ProvidersApi};
use crate::transport::http::{HttpState, router};
use anyhow::Context as _;
use std::future::Future;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic_health::ServingStatus;

const ADMIN_HASH_FILE: &str = "admin-key.sha256";
const SWEEP_EVERY: Duration = Duration::from_secs(1);
const STORE_CHECK_EVERY: Duration = Duration::from_secs(2);

pub struct App;

impl App {
    /// Opens the configured store. For Vault, also returns the handle that renews its token.
    pub async fn open_store(
        config: &Config,
    ) -> anyhow::Result<(Arc<dyn SecretStore>, Option<Arc<VaultStore>>)> {
        Ok(match &config.store {
            StoreKind::Embedded => (Arc::new(EmbeddedStore::open(&config.data_dir)?), None),
            StoreKind::Memory => (Arc::new(MemoryStore::new()), None),
            StoreKind::Vault(v) => {
                let vault = Arc::new(VaultStore::connect((**v).clone()).await?);
                (vault.clone(), Some(vault))
            }
        })
    }

    /// For `check-config`: opens the store and proves it can write, read and delete a probe
    /// record under its prefix (for Vault: reachable, unsealed, and the token's policy allows it).
    pub async fn check_store(config: &Config) -> anyhow::Result<()> {
        let (store, _) = Self::open_store(config).await?;
        store
            .check()
            .await
            .with_context(|| format!("the {} store is not reachable", store.backend()))?;
        let key = format!(
            "check/probe-{}",
            random_token(8).map_err(|_| anyhow::anyhow!("the system RNG failed"))?
        );
        let probe = zeroize::Zeroizing::new(b"valet check-config probe".to_vec());
        store
            .put(&key, probe.clone(), crate::store::Cas::Absent)
            .await
            .with_context(|| format!("cannot write {key} to the {} store", store.backend()))?;
        let read = store
            .get(&key)
            .await
            .with_context(|| format!("cannot read {key} back"))?;
        anyhow::ensure!(
            read.is_some_and(|r| r.value == probe),
            "{key} did not read back as written"
        );
        store
            .delete(&key)
            .await
            .with_context(|| format!("cannot delete {key}"))?;
        eprintln!(
            "configuration is valid; the {} store is reachable and can write, read and delete",
            store.backend()
        );
        Ok(())
    }

    /// Runs the daemon until `shutdown` resolves, then drains and returns.
    pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        let (store, vault) = Self::open_store(&config).await?;
        let mut keys: Vec<CallerKey> = config
            .callers
            .iter()
            .map(|c| CallerKey {
                name: c.name.clone(),
                role: c.role,
                key_sha256: c.key_sha256,
            })
            .collect();
        if let Some(admin) = admin_key(&config)? {
            keys.push(admin);
        }
        let auth = CallerAuth::new(keys);

        let grpc_listener = TcpListener::bind(config.grpc_listen)
            .await
            .with_context(|| format!("cannot bind gRPC listener on {}", config.grpc_listen))?;
        let http_listener = TcpListener::bind(config.http_listen)
            .await
            .with_context(|| format!("cannot bind HTTP listener on {}", config.http_listen))?;
        let grpc_addr = grpc_listener.local_addr()?;
        let http_addr = http_listener.local_addr()?;
        let public_url = match &config.public_url {
            Some(u) => u.clone(),
            None => url::Url::parse(&format!("http://{http_addr}"))?,
        };

        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let http = ProviderHttp::new(config.provider_connect_timeout, config.provider_timeout)?;
        let endpoint: Arc<dyn TokenEndpoint> = Arc::new(OAuth2TokenEndpoint::new(http));
        let registry = Arc::new(ProviderRegistry::new(
            store.clone(),
            endpoint.clone(),
            clock.clone(),
            public_url.clone(),
            config.allow_insecure_provider_urls,
        ));
        // An unreachable store (Vault down or sealed) does not stop the daemon: it starts
        // NOT_SERVING and `watch_store` brings it up once the store answers.
        let n = match registry.load().await {
            Ok(n) => n,
            Err(crate::service::Error::StoreUnavailable(reason)) => {
                tracing::warn!(
                    "the secret store is unavailable at start-up; serving nothing until it is back: {reason}"
                );
                0
            }
            Err(e) => anyhow::bail!("cannot load providers from the store: {e}"),
        };
        let leases = Arc::new(LeaseTable::new(LeaseLimits {
            ttl: config.flows.ttl,
            max_total: config.flows.max_pending,
            max_per_user: config.flows.max_pending_per_user,
            keep_outcome: config.flows.wait_max.max(Duration::from_secs(60)),
        }));
        let broker = Arc::new(Broker::new(
            registry.clone(),
            store.clone(),
            endpoint,
            clock,
            leases.clone(),
            BrokerLimits {
                default_min_ttl: config.default_min_ttl,
                max_min_ttl: config.max_min_ttl,
                default_wait: config.flows.wait_default,
                max_wait: config.flows.wait_max,
            },
        ));

        let (reporter, health) = tonic_health::server::health_reporter();
        set_health(&reporter, registry.is_loaded()).await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;

        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        tokio::spawn(leases.run_sweeper(SWEEP_EVERY, stopped(stop_rx.clone())));
        tokio::spawn(watch_store(
            store.clone(),
            registry.clone(),
            reporter.clone(),
            stopped(stop_rx.clone()),
        ));
        if let Some(vault) = vault {
            tokio::spawn(vault.run_renewal(stopped(stop_rx.clone())));
        }

        let grpc = tonic::transport::Server::builder()
            .add_service(health)
            .add_service(InterceptedService::new(reflection, auth.clone()))
            .add_service(ProvidersServer::with_interceptor(
                ProvidersApi::new(broker.clone()),
                auth.clone(),
            ))
            .add_service(CredentialsServer::with_interceptor(
                CredentialsApi::new(broker.clone()),
                auth,
            ))
            .serve_with_incoming_shutdown(
                // No Nagle: small gRPC frames must not wait for a delayed ACK.
                tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
                stopped(stop_rx.clone()),
            );
        let serving = Arc::new(AtomicBool::new(true));
        let http = axum::serve(
            http_listener,
            router(HttpState {
                broker,
                store: store.clone(),
                serving: serving.clone(),
            }),
        )
        .with_graceful_shutdown(stopped(stop_rx));
        let grpc = tokio::spawn(grpc);
        let http = tokio::spawn(async move { http.await });

        tracing::info!(%grpc_addr, %http_addr, %public_url, store = store.backend(), providers = n, "valet serving");
        println!("valet listening grpc={grpc_addr} http={http_addr}");
        let _ = std::io::stdout().flush();

        shutdown.await;
        tracing::info!(
            grace_seconds = config.shutdown_grace.as_secs(),
            "shutting down: draining in-flight calls"
        );
        serving.store(false, Ordering::Relaxed);
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        reporter
            .set_not_serving::<ProvidersServer<ProvidersApi>>()
            .await;
        reporter
            .set_not_serving::<CredentialsServer<CredentialsApi>>()
            .await;
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(config.shutdown_grace, async {
            let (g, h) = tokio::join!(grpc, http);
            if let Ok(Err(e)) = g {
                tracing::warn!("gRPC server ended with an error: {e}");
            }
            if let Ok(Err(e)) = h {
                tracing::warn!("HTTP server ended with an error: {e}");
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("grace period elapsed; abandoning calls still in flight");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// `valet store copy`: copies every provider and grant record from the store of the `from` config
/// to the store of the `to` config. Records already identical at the destination are skipped, so
/// running it twice is harmless; nothing is ever deleted at the destination.
pub async fn copy_store(from: &str, to: &str, dry_run: bool) -> anyhow::Result<()> {
    let load = |path: &str| {
        let overrides = crate::config::Overrides {
            config: Some(path.to_owned()),
            ..Default::default()
        };
        Config::load_from_process_env(&overrides).map_err(|e| anyhow::anyhow!("{path}: {e}"))
    };
    let (src, _) = App::open_store(&load(from)?).await?;
    let (dst, _) = App::open_store(&load(to)?).await?;
    let (mut copied, mut unchanged) = (0, 0);
    for prefix in ["providers/", "grants/"] {
        for key in src.list(prefix).await? {
            let Some(record) = src.get(&key).await? else {
                continue;
            };
            let same = dst
                .get(&key)
                .await?
                .is_some_and(|d| d.value == record.value);
            if same {
                unchanged += 1;
                continue;
            }
            println!("{} {key}", if dry_run { "would copy" } else { "copy" });
            if !dry_run {
                dst.put(&key, record.value, crate::store::Cas::Any).await?;
            }
            copied += 1;
        }
    }
    let verb = if dry_run { "would copy" } else { "copied" };
    println!(
        "{verb} {copied} records from the {} store to the {} store; {unchanged} already identical",
        src.backend(),
        dst.backend()
    );
    Ok(())
}

async fn set_health(reporter: &tonic_health::server::HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter
        .set_service_status("valet.v1.Providers", status)
        .await;
    reporter
        .set_service_status("valet.v1.Credentials", status)
        .await;
}

/// Polls the store so health follows it: NOT_SERVING while it fails (reason logged once per
/// change), providers loaded as soon as it answers after a failed start.
async fn watch_store(
    store: Arc<dyn SecretStore>,
    registry: Arc<ProviderRegistry>,
    reporter: tonic_health::server::HealthReporter,
    stop: impl Future,
) {
    tokio::pin!(stop);
    let mut serving = registry.is_loaded();
    loop {
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(STORE_CHECK_EVERY) => {}
        }
        let result = match store.check().await {
            Ok(()) if registry.is_loaded() => Ok(()),
            Ok(()) => registry
                .load()
                .await
                .map(|n| {
                    tracing::info!(
                        providers = n,
                        "secret store reachable again; providers loaded"
                    );
                })
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let now = result.is_ok();
        if now != serving {
            match &result {
                Ok(()) => tracing::info!("secret store healthy: serving"),
                Err(reason) => tracing::warn!("secret store unavailable, not serving: {reason}"),
            }
            set_health(&reporter, now).await;
            serving = now;
        }
    }
}

/// The admin key from `--admin-key-file`, or in dev mode the one created on first start.
fn admin_key(config: &Config) -> anyhow::Result<Option<CallerKey>> {
    let admin = |key_sha256| CallerKey {
        name: "admin".into(),
        role: Role::Admin,
        key_sha256,
    };
    if let Some(path) = &config.admin_key_file {
        let key = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read admin key file {}", path.display()))?;
        let key = key.trim();
        anyhow::ensure!(
            !key.is_empty(),
            "admin key file {} is empty",
            path.display()
        );
        return Ok(Some(admin(sha256(key.as_bytes()))));
    }
    if !config.dev {
        return Ok(None);
    }
    std::fs::create_dir_all(&config.data_dir)?;
    let hash_path = config.data_dir.join(ADMIN_HASH_FILE);
    if hash_path.exists() {
        let mut hash = [0u8; 32];
        let text = std::fs::read_to_string(&hash_path)?;
        hex::decode_to_slice(text.trim(), &mut hash)
            .with_context(|| format!("{} does not hold a SHA-256 hex hash", hash_path.display()))?;
        println!(
            "using the admin key created on first start (delete {} to get a new one)",
            hash_path.display()
        );
        return Ok(Some(admin(hash)));
    }
    let key = format!(
        "valet_{}",
        random_token(32).map_err(|_| anyhow::anyhow!("the system RNG failed"))?
    );
    let hash = sha256(key.as_bytes());
    write_private(&hash_path, hex::encode(hash).as_bytes())?;
    println!("admin key: {key}");
    println!(
        "  (shown once; only its hash is kept, in {})",
        hash_path.display()
    );
    Ok(Some(admin(hash)))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
