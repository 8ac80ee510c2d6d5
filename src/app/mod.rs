//! The composition root. `App::build` validates nothing (the config already is), opens the store,
//! builds the services and binds both listeners, returning their addresses; `App::serve` spawns
//! the background tasks, serves until the shutdown future resolves, then turns health
//! NOT_SERVING and drains within the grace period.

mod admin_key;
mod health;

use crate::audit::Audit;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigError};
use crate::oauth::{OAuth2TokenEndpoint, ProviderHttp, TokenEndpoint};
use crate::ops::{OpenStore, open_store};
use crate::pb;
use crate::pb::credentials_server::CredentialsServer;
use crate::pb::providers_server::ProvidersServer;
use crate::pending::{PendingFlows, PendingLimits};
use crate::profile::Catalogue;
use crate::service::{Credentials, Limits, Parts, ProviderRegistry};
use crate::store::{SecretStore, VaultStore};
use crate::transport::grpc::{CallerAuth, CallerKey, CredentialsApi, ProvidersApi};
use crate::transport::http::{ConnectionLimits, GuardedListener, HttpState, router};
use anyhow::Context as _;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A built daemon: services wired, listeners bound, nothing served yet.
#[derive(Debug)]
pub struct App {
    config: Config,
    grpc: TcpListener,
    http: TcpListener,
    unix: Option<tokio::net::UnixListener>,
    store: Arc<dyn SecretStore>,
    vault: Option<Arc<VaultStore>>,
    registry: Arc<ProviderRegistry>,
    pending: Arc<PendingFlows>,
    credentials: Arc<Credentials>,
    auth: CallerAuth,
    /// A dev admin key made on this start, shown once the daemon is about to serve.
    first_key: Option<admin_key::FirstKey>,
    /// SIGHUP, handled from the start of `build` (a reload while the store is opened must not
    /// kill the daemon); it reopens the audit file once serving.
    hangups: Option<tokio::signal::unix::Signal>,
}

/// A future that resolves once `rx` says stop.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

impl App {
    /// Builds and serves until `shutdown` resolves.
    pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        Self::build(config).await?.serve(shutdown).await
    }

    /// Opens the store, builds the services and binds both listeners.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let hangups = crate::signal::hangups();
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let OpenStore { store, vault } = open_store(&config).await?;
        // Which store, where: an environment variable (VALET_DATA_DIR in a systemd unit) may
        // have overridden the config file's setting.
        match &config.store {
            crate::config::StoreKind::Embedded => {
                tracing::info!(data_dir = %config.data_dir.display(), "embedded store opened");
            }
            crate::config::StoreKind::Memory => tracing::warn!(
                "the memory store keeps nothing on disk: every provider, grant and reference is lost when the daemon stops"
            ),
            crate::config::StoreKind::Vault(_) => tracing::info!("Vault store opened"),
        }
        let store: Arc<dyn SecretStore> =
            Arc::new(crate::store::MeteredStore::new(store, metrics.clone()));
        // Bound before the dev admin key is made: a first start that cannot bind must not show
        // (and keep the hash of) a key nobody will see again.
        let grpc = bind(config.grpc_listen, "gRPC", "--grpc-listen or grpc_listen").await?;
        let http = bind(config.http_listen, "HTTP", "--http-listen or http_listen").await?;
        let (auth, first_key) = Self::callers(&config)?;
        let unix = config.grpc_socket.as_deref().map(bind_socket).transpose()?;
        let public_url = match &config.public_url {
            Some(u) => u.clone(),
            None => url::Url::parse(&format!("http://{}", http.local_addr()?))?,
        };
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let provider_http = ProviderHttp::new(
            config.provider_connect_timeout,
            config.provider_timeout,
            config.allow_private_networks,
        )?;
        let endpoint: Arc<dyn TokenEndpoint> = Arc::new(crate::oauth::MeteredEndpoint::new(
            Arc::new(OAuth2TokenEndpoint::new(
                provider_http.clone(),
                clock.clone(),
            )),
            metrics.clone(),
        ));
        let catalogue = Self::catalogue(&config)?;
        let registry = Arc::new(ProviderRegistry::new(
            store.clone(),
            endpoint.clone(),
            clock.clone(),
            public_url,
            config.allow_insecure_provider_urls,
            Arc::new(catalogue),
            crate::mcp::Fetcher::new(crate::mcp::FetchPolicy {
                allow_private: config.allow_private_networks,
                allow_http: config.allow_insecure_provider_urls,
                connect_timeout: config.provider_connect_timeout,
                timeout: config.provider_timeout,
            })?,
        ));
        let pending = Arc::new(PendingFlows::new(PendingLimits {
            ttl: config.flows.ttl,
            max_total: config.flows.max_pending,
            max_per_user: config.flows.max_pending_per_user,
            keep_outcome: config.flows.wait_max.max(Duration::from_secs(60)),
        }));
        // A trail the daemon cannot open (a missing directory, no permission) is the operator's
        // to fix: a bad configuration (exit 78).
        let audit = Arc::new(
            Audit::open(config.audit_file.as_deref(), clock.clone(), metrics).map_err(|e| {
                ConfigError::in_file(format_args!(
                    "cannot open the audit file {}: {e}",
                    config
                        .audit_file
                        .as_deref()
                        .unwrap_or(std::path::Path::new(""))
                        .display()
                ))
            })?,
        );
        load_audit_key(&audit, &store).await;
        let auth = auth.with_audit(audit.clone());
        let assertions = config.user_assertions.clone().map(|a| {
            Arc::new(crate::assertion::UserAssertions::new(
                a,
                provider_http.clone(),
                clock.clone(),
            ))
        });
        let credentials = Arc::new(Credentials::new(Parts {
            providers: registry.clone(),
            store: store.clone(),
            endpoint,
            clock,
            pending: pending.clone(),
            limits: Limits {
                default_min_ttl: config.default_min_ttl,
                max_min_ttl: config.max_min_ttl,
                default_wait: config.flows.wait_default,
                max_wait: config.flows.wait_max,
            },
            audit,
            assertions,
            replica_url: config.replica_url.clone(),
        }));
        if let Err(e) = credentials.register_replica().await {
            tracing::warn!(
                "this replica's address is not registered (the store is unavailable): consent callbacks for its flows that land on another replica will fail until it restarts: {e}"
            );
        }
        Ok(Self {
            config,
            grpc,
            http,
            unix,
            store,
            vault,
            registry,
            pending,
            credentials,
            auth,
            first_key,
            hangups,
        })
    }

    /// The configured callers plus the admin key (file or dev mode), and a dev admin key made
    /// on this start.
    fn callers(config: &Config) -> anyhow::Result<(CallerAuth, Option<admin_key::FirstKey>)> {
        let mut keys: Vec<CallerKey> = Vec::new();
        for c in &config.callers {
            let key = CallerKey {
                name: c.name.clone(),
                role: c.role,
                key_sha256: c.key_sha256,
                agents: c.agents.clone(),
                require_user_assertion: c.require_user_assertion,
                rate_limit: c.rate_limit,
                max_watches: c.max_watches,
                unix_uid: c.unix_uid,
                tls_identity: c.tls_identity.clone(),
                previous: false,
            };
            // A key being rotated out: the same caller (name, so references and rate bucket),
            // by its old key only.
            if let Some(previous) = c.previous_key_sha256 {
                keys.push(CallerKey {
                    key_sha256: previous,
                    unix_uid: None,
                    tls_identity: None,
                    previous: true,
                    ..key.clone()
                });
            }
            keys.push(key);
        }
        let (admin, first_key) = admin_key::admin_key(config)?;
        keys.extend(admin);
        Ok((CallerAuth::new(keys), first_key))
    }

    /// The provider profiles: built in, and those in `profiles_dir`. One that does not load is a
    /// bad configuration.
    fn catalogue(config: &Config) -> anyhow::Result<Catalogue> {
        match &config.profiles_dir {
            Some(dir) => Catalogue::with_dir(dir),
            None => Catalogue::builtin().map_err(Into::into),
        }
        .map_err(|e| ConfigError(e.0.iter().map(ToString::to_string).collect()).into())
    }

    /// For `check-config`: the files the configuration names that the daemon reads at start. The
    /// profiles load, the gRPC TLS files can be read, and the admin key file, if one is configured and on this machine, is one
    /// the daemon accepts. One that is not here (a Kubernetes Secret mounted only in the pod) is
    /// noted, not refused.
    pub fn check_files(config: &Config) -> anyhow::Result<()> {
        Self::catalogue(config)?;
        if let Some(t) = &config.grpc_tls {
            tls_config(t)?;
        }
        let Some(path) = &config.admin_key_file else {
            return Ok(());
        };
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!(
                    "note: the admin key file {} is not on this machine: the daemon needs it at start",
                    path.display()
                );
                Ok(())
            }
            _ => admin_key::key_file_hash(path).map(drop),
        }
    }

    pub fn grpc_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.grpc.local_addr()?)
    }

    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.http.local_addr()?)
    }

    /// Loads providers (riding out an unavailable store), spawns the background tasks and
    /// serves until `shutdown` resolves; then drains.
    pub async fn serve(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let first_key = self.first_key.take();
        let (grpc_addr, http_addr) = (self.grpc_addr()?, self.http_addr()?);
        let providers = load_providers(&self.registry).await?;
        let marked = self.registry.is_loaded() && health::mark_served(&self.store).await;
        let (reporter, health) = tonic_health::server::health_reporter();
        health::set_health(&reporter, self.registry.is_loaded()).await;
        let (stop_tx, stop_rx) = watch::channel(false);
        if let Some(hangups) = self.hangups.take() {
            tokio::spawn(crate::signal::reopen_audit_on_hangup(
                hangups,
                self.credentials.audit_arc(),
                stopped(stop_rx.clone()),
            ));
        }
        self.spawn_background(&reporter, marked, &stop_rx);
        let serving = Arc::new(AtomicBool::new(true));
        let state = HttpState {
            credentials: self.credentials.clone(),
            store: self.store.clone(),
            serving: serving.clone(),
            replicas: crate::transport::http::replica_client()?,
        };
        let (grace, backend) = (self.config.shutdown_grace, self.store.backend());
        // The longest call is a WaitForCompletion long poll.
        let timeout = self.config.flows.wait_max + Duration::from_secs(30);
        let routes = || {
            grpc_routes(
                self.credentials.clone(),
                self.auth.clone(),
                health.clone(),
                timeout,
                None,
            )
        };
        let tls = match &self.config.grpc_tls {
            Some(t) => Some(tls_config(t)?),
            None => None,
        };
        let tcp = grpc_routes(
            self.credentials.clone(),
            self.auth.clone(),
            health.clone(),
            timeout,
            tls,
        )?
        .serve_with_incoming_shutdown(
            // No Nagle: small gRPC frames must not wait for a delayed ACK.
            tonic::transport::server::TcpIncoming::from(self.grpc).with_nodelay(Some(true)),
            stopped(stop_rx.clone()),
        );
        let unix = match self.unix {
            Some(l) => Some(
                routes()?.serve_with_incoming_shutdown(unix_incoming(l), stopped(stop_rx.clone())),
            ),
            None => None,
        };
        let grpc = async move {
            match unix {
                Some(unix) => {
                    let (a, b) = tokio::join!(tcp, unix);
                    a.and(b)
                }
                None => tcp.await,
            }
        };
        let http = GuardedListener::new(self.http, ConnectionLimits::default());
        let http = axum::serve(http, router(state)).with_graceful_shutdown(stopped(stop_rx));
        // Nothing can fail from here on: the first dev admin key is kept and shown now.
        if let Some(key) = first_key {
            key.keep_and_show()?;
        }
        let grpc = tokio::spawn(grpc);
        let http = tokio::spawn(async move { http.await });
        tracing::info!(%grpc_addr, %http_addr, store = backend, providers, "valet serving");
        announce(grpc_addr, http_addr);

        shutdown.await;
        tracing::info!(
            grace_seconds = grace.as_secs(),
            "shutting down: draining in-flight calls"
        );
        serving.store(false, Ordering::Relaxed);
        set_not_serving(&reporter).await;
        self.credentials.close_watches();
        let _ = stop_tx.send(true);
        drain(grace, grpc, http).await;
        self.credentials.audit().flush();
        tracing::info!("stopped");
        Ok(())
    }

    fn spawn_background(
        &self,
        reporter: &HealthReporter,
        marked: bool,
        stop: &watch::Receiver<bool>,
    ) {
        // A flow no callback ended is a finished flow too: audited and counted
        // (`valet_flows_expired_total`), as a callback's failure is.
        let credentials = self.credentials.clone();
        tokio::spawn(self.pending.clone().run_sweeper(
            SWEEP_EVERY,
            stopped(stop.clone()),
            move |e| {
                let subject = crate::audit::Subject::of(&e.provider, &e.user, e.agent.as_ref());
                credentials
                    .audit()
                    .record("FlowCompleted", &e.owner, subject, "FLOW_EXPIRED");
            },
        ));
        tokio::spawn(health::watch_store(
            self.store.clone(),
            self.registry.clone(),
            reporter.clone(),
            marked,
            stopped(stop.clone()),
        ));
        if let Some(vault) = &self.vault {
            tokio::spawn(vault.clone().run_renewal(stopped(stop.clone())));
        }
        tokio::spawn(reap_references(
            self.credentials.clone(),
            stopped(stop.clone()),
        ));
        tokio::spawn(self.credentials.clone().run_background_refresh(
            crate::service::AheadSettings {
                lead: i64::from(self.config.refresh_ahead),
                window: i64::from(self.config.refresh_ahead_window),
                tick: AHEAD_EVERY,
            },
            stopped(stop.clone()),
        ));
        if !self.config.webhooks.is_empty() {
            let audit = self.credentials.audit_arc();
            tokio::spawn(crate::webhooks::run(
                self.config
                    .webhooks
                    .iter()
                    .map(|w| w.hook.clone())
                    .collect(),
                audit.watch_grants(),
                audit,
                Arc::new(SystemClock),
                stopped(stop.clone()),
            ));
        }
    }
}

/// How often the background refresh looks for grants to refresh.
const AHEAD_EVERY: Duration = Duration::from_secs(30);

/// How often dead references are deleted (once at start, then at this interval).
const REAP_EVERY: Duration = Duration::from_secs(600);

/// Deletes expired and spent references at start and every `REAP_EVERY`, so the store does not
/// grow with every agent session ever started (30-day references, one per session). Replicas
/// each reap; deleting twice is harmless. A failure is logged and retried next round.
async fn reap_references(credentials: Arc<Credentials>, stop: impl Future) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => match credentials.reap_references().await {
                Ok(0) => {}
                Ok(reaped) => tracing::info!(reaped, "deleted expired and spent references"),
                Err(e) => tracing::warn!("reaping references failed; retrying later: {e}"),
            },
        }
    }
}

/// The audit trail's user-hash key from the store (shared by replicas). With the store down, the
/// trail records users as `unkeyed` until a restart; it never falls back to clear ids.
async fn load_audit_key(audit: &Audit, store: &Arc<dyn crate::store::SecretStore>) {
    let fresh = match crate::secret::random_token(32) {
        Ok(k) => zeroize::Zeroizing::new(k.into_bytes()),
        Err(_) => return,
    };
    match crate::store::MetaRepo::new(store.clone())
        .audit_user_key(fresh)
        .await
    {
        Ok(key) => audit.set_user_key(&key),
        Err(e) => tracing::warn!("the audit trail cannot hash users yet (store unavailable): {e}"),
    }
}

/// An unreachable store (Vault down or sealed) does not stop the daemon: it starts NOT_SERVING
/// and `watch_store` brings it up once the store answers.
async fn load_providers(registry: &ProviderRegistry) -> anyhow::Result<usize> {
    match registry.load().await {
        Ok(n) => Ok(n),
        Err(e @ crate::service::Error::StoreUnavailable(_)) => {
            tracing::warn!(
                "the secret store is unavailable at start-up; serving nothing until it is back: {}",
                e.chain()
            );
            Ok(0)
        }
        // Records that do not open under store.key: a restore that paired a store with another
        // key. The operator must fix it, so exit 78 (systemd does not restart it in a loop).
        Err(crate::service::Error::Internal {
            source: Some(source),
            ..
        }) if source
            .downcast_ref::<crate::store::StoreError>()
            .is_some_and(|s| matches!(s, crate::store::StoreError::Corrupt { reason, .. } if reason.contains("sealed under another key"))) =>
        {
            Err(ConfigError::in_file(format!(
                "the store's records do not open with its key ({source}): if the store was restored, restore the store.key that was backed up with this store.redb (or the store.redb that goes with this store.key); otherwise the file was altered: restore both from a backup"
            )))
        }
        Err(e) => anyhow::bail!("cannot load providers from the store: {}", e.chain()),
    }
}

/// The gRPC listener's TLS: its certificate, and with a client CA, optional client certificates
/// (a caller may still use an API key; a certificate names a caller by `tls_identity`).
fn tls_config(t: &crate::config::GrpcTls) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    // A file the configuration names: one that cannot be read is a bad configuration.
    let read = |p: &std::path::Path| {
        std::fs::read(p)
            .map_err(|e| ConfigError::in_file(format_args!("cannot read {}: {e}", p.display())))
    };
    let mut tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(read(&t.cert_file)?, read(&t.key_file)?));
    if let Some(ca) = &t.client_ca_file {
        tls = tls
            .client_ca_root(Certificate::from_pem(read(ca)?))
            .client_auth_optional(true);
    }
    Ok(tls)
}

/// Accepted Unix-socket connections; accept errors (out of descriptors) back off, never spin.
fn unix_incoming(
    listener: tokio::net::UnixListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::UnixStream>> {
    futures::stream::unfold(listener, |l| async move {
        loop {
            match l.accept().await {
                Ok((s, _)) => return Some((Ok(s), l)),
                Err(e) => {
                    tracing::warn!("accepting on the gRPC socket failed: {e}; backing off");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// Binds the Unix socket (mode 0660), replacing a stale socket file but nothing else.
fn bind_socket(path: &std::path::Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        anyhow::ensure!(
            meta.file_type().is_socket(),
            "grpc_socket {} exists and is not a socket; refusing to replace it",
            path.display()
        );
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("cannot bind the gRPC socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// The gRPC routes: health, reflection and the two `valet.v1` services behind the caller check.
fn grpc_routes(
    credentials: Arc<Credentials>,
    auth: CallerAuth,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    request_timeout: Duration,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> anyhow::Result<tonic::transport::server::Router> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    // Requests are small: a provider with a private key is a few KiB, everything else less.
    let providers = ProvidersServer::new(ProvidersApi::new(credentials.clone()))
        .max_decoding_message_size(MAX_PROVIDER_MESSAGE);
    let creds = CredentialsServer::new(CredentialsApi::new(credentials))
        .max_decoding_message_size(MAX_MESSAGE);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    Ok(builder
        .timeout(request_timeout)
        .trace_fn(crate::telemetry::request_span)
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .add_service(health)
        .add_service(InterceptedService::new(reflection, auth.clone()))
        .add_service(InterceptedService::new(providers, auth.clone()))
        .add_service(InterceptedService::new(creds, auth)))
}

/// Largest `valet.v1.Credentials` request accepted (tokens, references and ids are far smaller).
const MAX_MESSAGE: usize = 32 * 1024;
/// Largest `valet.v1.Providers` request (a PEM or JSON private key is the biggest field).
const MAX_PROVIDER_MESSAGE: usize = 64 * 1024;
// Above the 1,000 concurrent callers a single-flight refresh is measured with (the bench).
const MAX_STREAMS_PER_CONNECTION: u32 = 1024;

/// Binds a listener; a busy or forbidden address says which setting picks another.
async fn bind(addr: SocketAddr, what: &str, setting: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot bind the {what} listener on {addr} (choose another address with {setting})")
    })
}

/// The line scripts and tests wait for, on stdout.
#[allow(
    clippy::print_stdout,
    reason = "the listening line is the daemon's one stdout output"
)]
fn announce(grpc: SocketAddr, http: SocketAddr) {
    println!("valet listening grpc={grpc} http={http}");
    let _ = std::io::stdout().flush();
}

async fn set_not_serving(reporter: &HealthReporter) {
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    reporter
        .set_not_serving::<ProvidersServer<ProvidersApi>>()
        .await;
    reporter
        .set_not_serving::<CredentialsServer<CredentialsApi>>()
        .await;
}

/// Waits for both servers to finish their in-flight calls, and for the work those calls began
/// that must finish (`service::tasks`), at most `grace`.
async fn drain(
    grace: Duration,
    grpc: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let drained = tokio::time::timeout(grace, async {
        let (g, h) = tokio::join!(grpc, http);
        if let Ok(Err(e)) = g {
            tracing::warn!("gRPC server ended with an error: {e}");
        }
        if let Ok(Err(e)) = h {
            tracing::warn!("HTTP server ended with an error: {e}");
        }
        crate::service::tasks::settled().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("grace period elapsed; abandoning calls still in flight");
    }
}
