//! Test harness: the real daemon binary on 127.0.0.1:0, the real OpenID provider (node), and a
//! cookie-jar browser that fills the provider's login and consent forms.

pub(crate) mod browser;
pub(crate) mod daemon;
pub(crate) mod idp;
pub(crate) mod jwt_bearer;
pub(crate) mod oidc_double;
pub(crate) mod providers;
pub(crate) mod rvault;
pub(crate) mod vault;

pub(crate) use browser::Browser;
pub(crate) use daemon::{Valet, ValetOptions};
pub(crate) use idp::Idp;

use tonic::Code;
use valet::pb;

/// The stable reason (google.rpc.ErrorInfo) of a status.
pub(crate) fn reason(s: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    s.get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

/// Asserts a call failed with `code` and `reason`, returning the status for more checks.
#[track_caller]
pub(crate) fn expect_err<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    reason_: &str,
) -> tonic::Status {
    let s = r.expect_err("call should have failed");
    assert_eq!(s.code(), code, "unexpected status: {s:?}");
    assert_eq!(reason(&s), reason_, "unexpected reason: {s:?}");
    s
}

pub(crate) fn token(r: pb::AuthenticateResponse) -> pb::Token {
    match r.result {
        Some(pb::authenticate_response::Result::Token(t)) => t,
        other => panic!("expected a token, got {other:?}"),
    }
}

pub(crate) fn reference(r: pb::AuthenticateResponse) -> pb::Reference {
    match r.result {
        Some(pb::authenticate_response::Result::Reference(r)) => r,
        other => panic!("expected a reference, got {other:?}"),
    }
}

pub(crate) fn pending(r: pb::AuthenticateResponse) -> pb::Pending {
    match r.result {
        Some(pb::authenticate_response::Result::Pending(p)) => p,
        other => panic!("expected a pending flow, got {other:?}"),
    }
}

/// Provider ids whose redirect URIs the test provider accepts.
pub(crate) const PROVIDER_IDS: &[&str] = &["idp", "idp2", "oauth"];

/// A daemon, a provider peer that knows the daemon's redirect URIs, and a browser.
pub(crate) struct Fixture {
    pub valet: Valet,
    pub idp: Idp,
    pub browser: Browser,
}

impl Fixture {
    pub(crate) async fn new() -> Self {
        Self::with(ValetOptions::default()).await
    }

    pub(crate) async fn with(opts: ValetOptions) -> Self {
        valet::install_crypto_provider();
        let valet = Valet::start(opts);
        let uris: Vec<String> = PROVIDER_IDS.iter().map(|p| valet.callback_url(p)).collect();
        let idp = Idp::start(&uris);
        Self {
            valet,
            idp,
            browser: Browser::new(),
        }
    }

    /// Restarts the daemon on the same data directory and HTTP address; the peers stay up.
    pub(crate) fn restart(self) -> Self {
        Self {
            valet: self.valet.restart(),
            ..self
        }
    }

    /// An `oidc` provider at the peer, using `client` with client_secret_basic.
    pub(crate) async fn oidc_provider(&self, id: &str, client: &str) -> pb::Provider {
        self.create(pb::Provider {
            provider_id: id.into(),
            kind: pb::ProviderKind::Oidc as i32,
            client_id: client.into(),
            client_secret: idp::secret_of(client),
            issuer: self.idp.issuer.clone(),
            default_scopes: vec!["openid".into(), "email".into()],
            ..Default::default()
        })
        .await
    }

    /// An `oauth2` provider with explicit endpoints, using `client_secret_post`.
    pub(crate) async fn oauth2_provider(&self, id: &str) -> pb::Provider {
        self.create(pb::Provider {
            provider_id: id.into(),
            kind: pb::ProviderKind::Oauth2 as i32,
            client_id: idp::POST_CLIENT.into(),
            client_secret: idp::secret_of(idp::POST_CLIENT),
            auth_url: format!("{}/auth", self.idp.issuer),
            token_url: format!("{}/token", self.idp.issuer),
            token_auth_method: pb::TokenAuthMethod::ClientSecretPost as i32,
            default_scopes: vec!["api.read".into()],
            extra_auth_params: [("prompt".to_owned(), "consent".to_owned())].into(),
            ..Default::default()
        })
        .await
    }

    pub(crate) async fn create(&self, p: pb::Provider) -> pb::Provider {
        self.valet
            .providers()
            .await
            .create_provider(pb::CreateProviderRequest { provider: Some(p) })
            .await
            .unwrap()
            .into_inner()
    }

    pub(crate) fn request(provider: &str, user: &str, agent: &str) -> pb::AuthenticateRequest {
        pb::AuthenticateRequest {
            provider_id: provider.into(),
            user_id: user.into(),
            agent_id: agent.into(),
            ..Default::default()
        }
    }

    /// `request` asking for a token that outlives the one held: the OpenID provider peer's
    /// access tokens live 3600 s, so this forces a refresh.
    pub(crate) fn refresh_request(
        provider: &str,
        user: &str,
        agent: &str,
    ) -> pb::AuthenticateRequest {
        pb::AuthenticateRequest {
            min_ttl_seconds: 7200,
            ..Self::request(provider, user, agent)
        }
    }

    /// Runs the whole flow as `key`: Authenticate → consent in the browser → WaitForCompletion.
    pub(crate) async fn complete_flow(
        &self,
        key: &str,
        req: pb::AuthenticateRequest,
    ) -> pb::AuthenticateResponse {
        let mut creds = self.valet.credentials(key).await;
        let login = req.user_id.clone();
        let p = pending(creds.authenticate(req).await.unwrap().into_inner());
        self.browser.consent(&p.auth_url, &login).await;
        creds
            .wait_for_completion(pb::WaitForCompletionRequest {
                auth_id: p.auth_id,
                timeout_seconds: 10,
                status_only: false,
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// `complete_flow` for a token handout.
    pub(crate) async fn authorize(&self, key: &str, req: pb::AuthenticateRequest) -> pb::Token {
        token(self.complete_flow(key, req).await)
    }
}

impl Fixture {
    /// `Authenticate` as `key`, expecting success.
    pub(crate) async fn authenticate(
        &self,
        key: &str,
        req: pb::AuthenticateRequest,
    ) -> pb::AuthenticateResponse {
        self.valet
            .credentials(key)
            .await
            .authenticate(req)
            .await
            .unwrap()
            .into_inner()
    }

    /// `Authenticate` as `key`, for calls expected to fail.
    pub(crate) async fn try_authenticate(
        &self,
        key: &str,
        req: pb::AuthenticateRequest,
    ) -> Result<tonic::Response<pb::AuthenticateResponse>, tonic::Status> {
        self.valet.credentials(key).await.authenticate(req).await
    }

    /// `WaitForCompletion` as the agent key, up to five seconds.
    pub(crate) async fn wait(
        &self,
        auth_id: &str,
    ) -> Result<tonic::Response<pb::AuthenticateResponse>, tonic::Status> {
        self.valet
            .credentials(daemon::AGENT_KEY)
            .await
            .wait_for_completion(pb::WaitForCompletionRequest {
                auth_id: auth_id.into(),
                timeout_seconds: 5,
                status_only: false,
            })
            .await
    }

    /// The user's grants, as the agent key sees them.
    pub(crate) async fn grants(&self, user: &str) -> Vec<pb::Grant> {
        self.valet
            .credentials(daemon::AGENT_KEY)
            .await
            .list_grants(pb::ListGrantsRequest {
                user_id: user.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .grants
    }

    /// Revokes `user`'s user-wide grant at `idp` as the agent key; returns whether one existed.
    pub(crate) async fn revoke_grant(&self, user: &str) -> bool {
        self.revoke_at("idp", user).await.revoked
    }

    /// Revokes `user`'s user-wide grant at `provider` as the agent key: the answer.
    pub(crate) async fn revoke_at(&self, provider: &str, user: &str) -> pb::RevokeResponse {
        self.valet
            .credentials(daemon::AGENT_KEY)
            .await
            .revoke(pb::RevokeRequest {
                provider_id: provider.into(),
                user_id: user.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Creates each provider expecting `INVALID_ARGUMENT` whose message names its field; returns
    /// the refusals (for further checks) and how many providers exist afterwards, so callers can
    /// show a refusal wrote nothing.
    pub(crate) async fn refused_providers(
        &self,
        cases: Vec<(pb::Provider, &str)>,
    ) -> (Vec<tonic::Status>, usize) {
        let mut providers = self.valet.providers_as(daemon::ADMIN_KEY).await;
        let mut refusals = Vec::new();
        for (p, field) in cases {
            let s = expect_err(
                providers
                    .create_provider(pb::CreateProviderRequest { provider: Some(p) })
                    .await,
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
            );
            assert!(s.message().contains(field), "{field}: {s:?}");
            refusals.push(s);
        }
        let listed = providers
            .list_providers(pb::ListProvidersRequest {})
            .await
            .unwrap()
            .into_inner();
        (refusals, listed.providers.len())
    }

    /// Every grant, as the admin key sees them.
    pub(crate) async fn grants_for_admin(&self) -> Vec<pb::Grant> {
        self.valet
            .credentials(daemon::ADMIN_KEY)
            .await
            .list_grants(pb::ListGrantsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .grants
    }

    /// `Authenticate` for a reference as `key`, then `Resolve` it: the applied credential.
    pub(crate) async fn resolved_credential(
        &self,
        key: &str,
        req: pb::AuthenticateRequest,
    ) -> pb::Credential {
        self.resolved(key, req).await.credential.unwrap()
    }

    /// What `Resolve` answers for a reference `req` (as a reference handout) gets.
    pub(crate) async fn resolved(
        &self,
        key: &str,
        req: pb::AuthenticateRequest,
    ) -> pb::ResolveResponse {
        let req = pb::AuthenticateRequest {
            handout: pb::Handout::Reference as i32,
            ..req
        };
        let r = self.authenticate(key, req).await;
        let Some(pb::authenticate_response::Result::Reference(r)) = r.result else {
            panic!("expected a reference, got {r:?}");
        };
        self.valet
            .credentials(key)
            .await
            .resolve(pb::ResolveRequest {
                reference: r.reference,
                min_ttl_seconds: 0,
                target_url: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
    }
}

/// A gRPC channel over the Unix socket at `path`.
pub(crate) async fn unix_channel(path: std::path::PathBuf) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_static("http://valet.sock")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .unwrap()
}

/// A `[[callers]]` entry: the agent caller `name`, whose API key is `key`, and `more` lines of
/// its entry (or TOML after it).
pub(crate) fn agent_caller(name: &str, key: &str, more: &str) -> String {
    let hash = hex::encode(valet::secret::sha256(key.as_bytes()));
    format!("[[callers]]\nname = \"{name}\"\nrole = \"agent\"\nkey_sha256 = \"{hash}\"\n{more}")
}

/// Resident memory of process `pid` in KiB (Linux), for the benchmarks.
#[allow(
    dead_code,
    reason = "used by benches/handout.rs, which shares this harness"
)]
pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time all threads of process `pid` (`None`: this process) have run so far, and how many
/// times they were put on a CPU (Linux `schedstat`), for the benchmarks' per-call figures.
#[allow(
    dead_code,
    reason = "used by benches/handout.rs, which shares this harness"
)]
pub(crate) fn cpu_time(pid: Option<u32>) -> (std::time::Duration, u64) {
    let dir = pid.map_or_else(
        || "/proc/self/task".to_owned(),
        |p| format!("/proc/{p}/task"),
    );
    // Per thread: nanoseconds on a CPU, nanoseconds waiting for one, times put on one.
    let (ns, slices) = std::fs::read_dir(dir)
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
                .filter_map(|s| {
                    let mut f = s.split_whitespace().map(|x| x.parse::<u64>().ok());
                    Some((f.next()??, f.nth(1)??))
                })
                .fold((0, 0), |(ns, n), (a, b)| (ns + a, n + b))
        })
        .unwrap_or((0, 0));
    (std::time::Duration::from_nanos(ns), slices)
}
