//! The `vault` store: conformance against a KV v2 double and RustyVault (KV v1), the OAuth flow
//! on both with restarts, and every failure the daemon must ride out. Multi-threaded runtimes: the
//! double is served by this process while the harness blocks on the daemon's start-up.

use crate::support::daemon::AGENT_KEY;
use crate::support::rvault::RustyVault;
use crate::support::vault::{ROOT_TOKEN, VaultDouble, options, token_auth};
use crate::support::{Fixture, ValetOptions, expect_err, pending, token};
use std::time::Duration;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use valet::pb;
use valet::secret::SecretString;
use valet::store::{KvVersion, VaultAuth, VaultConfig, VaultStore};

fn config(address: &str, kv: KvVersion, token: &str) -> VaultConfig {
    VaultConfig {
        address: address.parse().unwrap(),
        kv_version: kv,
        mount: "secret".into(),
        prefix: "valet/".into(),
        namespace: None,
        ca_cert_file: None,
        timeout: Duration::from_secs(5),
        auth: VaultAuth::Token(
            SecretString::from(token.to_owned()),
            valet::store::TokenSource::Inline,
        ),
    }
}

/// A daemon on the double with `auth`, logging at TRACE, after its first login, with a provider.
async fn traced(d: &VaultDouble, auth: &str) -> Fixture {
    let mut opts = options(&d.address, 2, auth);
    opts.log_level = "trace".into();
    let f = Fixture::with(opts).await;
    assert_eq!(d.logins(), 1);
    f.oidc_provider("idp", "basic-client").await;
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv2_double_passes_the_store_conformance_suite() {
    let d = VaultDouble::start("secret").await;
    let store = VaultStore::connect(config(&d.address, KvVersion::V2, ROOT_TOKEN))
        .await
        .unwrap();
    valet::store::conformance::run(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rustyvault_kv1_passes_the_store_conformance_suite() {
    let rv = RustyVault::start().await;
    let store = VaultStore::connect(config(&rv.address, KvVersion::V1, &rv.root_token))
        .await
        .unwrap();
    valet::store::conformance::run(&store).await;
}

async fn flow_and_restart(opts: ValetOptions) -> Fixture {
    let f = Fixture::with(opts).await;
    f.oidc_provider("idp", "basic-client").await;
    let first = f
        .authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    assert!(
        f.idp
            .userinfo(&first.access_token)
            .await
            .status()
            .is_success()
    );
    let f = f.restart();
    // Providers and the grant came back from Vault: a refresh, no consent.
    let t = token(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    assert_ne!(t.access_token, first.access_token);
    assert!(f.idp.userinfo(&t.access_token).await.status().is_success());
    assert_eq!(f.grants("alice").await.len(), 1);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oauth_flow_runs_on_vault_kv2_and_survives_a_restart() {
    let d = VaultDouble::start("secret").await;
    let mut opts = options(&d.address, 2, &token_auth(ROOT_TOKEN));
    opts.log_level = "trace".into();
    let f = flow_and_restart(opts).await;
    let dump = d.dump();
    assert!(dump.contains("valet/grants/idp/"), "grants live in Vault");
    // The refresh token is in Vault (inside the record) and nowhere in the logs.
    let store = VaultStore::connect(config(&d.address, KvVersion::V2, ROOT_TOKEN))
        .await
        .unwrap();
    use valet::store::SecretStore as _;
    let key = store.list("grants/").await.unwrap().remove(0);
    let grant: serde_json::Value =
        serde_json::from_slice(&store.get(&key).await.unwrap().unwrap().value).unwrap();
    let refresh_token = grant["refresh_token"].as_str().unwrap().to_owned();
    assert!(refresh_token.len() > 16);
    assert!(dump.contains("valet/providers/idp") || d.writes() > 0);
    let logs = f.valet.logs();
    assert!(
        !logs.contains(ROOT_TOKEN),
        "the Vault token leaked into the logs"
    );
    assert!(!logs.contains(&crate::support::idp::secret_of("basic-client")));
    assert!(
        !logs.contains(&refresh_token),
        "the refresh token leaked into the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oauth_flow_runs_on_rustyvault_kv1_and_survives_a_restart() {
    let rv = RustyVault::start().await;
    let mut opts = options(&rv.address, 1, &token_auth(&rv.root_token));
    opts.log_level = "trace".into();
    let f = flow_and_restart(opts).await;
    assert!(!f.valet.logs().contains(&rv.root_token));
}

async fn credentials_status(f: &Fixture) -> i32 {
    HealthClient::new(f.valet.raw_channel().await)
        .check(HealthCheckRequest {
            service: "valet.v1.Credentials".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_vault_at_start_is_ridden_out_and_service_resumes_when_unsealed() {
    let d = VaultDouble::start("secret").await;
    d.seal(true);
    let f = Fixture::with(options(&d.address, 2, &token_auth(ROOT_TOKEN))).await;
    assert_eq!(
        credentials_status(&f).await,
        ServingStatus::NotServing as i32
    );
    assert!(
        f.valet
            .logs_once_they_contain("sealed")
            .await
            .contains("sealed"),
        "the reason is logged"
    );
    // Over HTTP: not ready (/healthz), but alive (/livez), so a liveness probe restarts nothing.
    let get = |path: &str| reqwest::get(format!("http://{}{path}", f.valet.http_addr));
    assert_eq!(get("/healthz").await.unwrap().status(), 503);
    assert_eq!(get("/livez").await.unwrap().status(), 200);
    let s = expect_err(
        f.try_authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
        Code::Unavailable,
        "STORE_UNAVAILABLE",
    );
    use tonic_types::StatusExt;
    assert!(s.get_details_retry_info().is_some());
    d.seal(false);
    let mut serving = false;
    for _ in 0..50 {
        if credentials_status(&f).await == ServingStatus::Serving as i32 {
            serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(serving, "service resumed without a restart");
    f.oidc_provider("idp", "basic-client").await;
    f.authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_vault_token_means_a_new_approle_login_and_the_call_succeeds() {
    let d = VaultDouble::start("secret").await;
    d.enable_approle("valet-role", "secret-id-canary-789");
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret_id");
    std::fs::write(&secret_file, "secret-id-canary-789\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let auth = format!(
        "method = \"approle\"\nrole_id = \"valet-role\"\nsecret_id_file = \"{}\"",
        secret_file.display()
    );
    let f = traced(&d, &auth).await;
    d.expire_tokens();
    // Needs the store (the grant is written): 403, log in again, retry, success.
    f.authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    assert!(d.logins() >= 2, "logged in again after the 403");
    assert_eq!(f.grants("alice").await.len(), 1);
    let logs = f.valet.logs();
    assert!(!logs.contains("secret-id-canary-789") && !logs.contains("double-login-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_outlives_a_vault_outage_and_a_failed_refresh_keeps_the_grant() {
    let d = VaultDouble::start("secret").await;
    let f = Fixture::with(options(&d.address, 2, &token_auth(ROOT_TOKEN))).await;
    f.oidc_provider("idp", "basic-client").await;
    let t = f
        .authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    d.seal(true);
    let cached = token(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    assert_eq!(cached.access_token, t.access_token);
    let before = f.idp.refreshes().await;
    expect_err(
        f.try_authenticate(AGENT_KEY, Fixture::refresh_request("idp", "alice", ""))
            .await,
        Code::Unavailable,
        "STORE_UNAVAILABLE",
    );
    assert_eq!(
        f.idp.refreshes().await,
        before,
        "no refresh without the store"
    );
    d.seal(false);
    let fresh = token(
        f.authenticate(AGENT_KEY, Fixture::refresh_request("idp", "alice", ""))
            .await,
    );
    assert!(
        f.idp
            .userinfo(&fresh.access_token)
            .await
            .status()
            .is_success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_is_stored_after_transient_write_failures() {
    let d = VaultDouble::start("secret").await;
    let f = Fixture::with(options(&d.address, 2, &token_auth(ROOT_TOKEN))).await;
    f.oidc_provider("idp", "basic-client").await;
    f.authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    // The claim write succeeds, then the first two writes of the rotated token fail.
    d.fail_writes(1, 2);
    token(
        f.authenticate(AGENT_KEY, Fixture::refresh_request("idp", "alice", ""))
            .await,
    );
    // The stored token is the rotated one: the next refresh is accepted by the provider.
    token(
        f.authenticate(AGENT_KEY, Fixture::refresh_request("idp", "alice", ""))
            .await,
    );
    let stats = f.idp.stats().await;
    assert_eq!(stats["grants"]["refresh_token"], 2, "{stats}");
    f.idp.assert_no_refresh_token_reuse().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_that_cannot_be_stored_asks_for_consent_again() {
    let d = VaultDouble::start("secret").await;
    let f = Fixture::with(options(&d.address, 2, &token_auth(ROOT_TOKEN))).await;
    f.oidc_provider("idp", "basic-client").await;
    let old = f
        .authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    d.fail_writes(1, 1000);
    let s = expect_err(
        f.try_authenticate(AGENT_KEY, Fixture::refresh_request("idp", "alice", ""))
            .await,
        Code::Unavailable,
        "STORE_UNAVAILABLE",
    );
    assert!(!s.message().contains(&old.access_token));
    d.fail_writes(0, 0);
    let grants = f.grants("alice").await;
    assert_eq!(grants[0].status, pb::GrantStatus::NeedsReauth as i32);
    // Not the old refresh token again: a new consent.
    let p = pending(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    f.idp.assert_no_refresh_token_reuse().await;
    f.browser.consent(&p.auth_url, "alice").await;
    token(f.wait(&p.auth_id).await.unwrap().into_inner());
    assert_eq!(
        f.grants("alice").await[0].status,
        pb::GrantStatus::Active as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_sharing_kv2_never_present_a_refresh_token_twice() {
    let d = VaultDouble::start("secret").await;
    let (f, opts) = crate::support::vault::replica_with_grant(&d).await;
    let other = crate::support::Valet::start(opts);
    let a = f.valet.credentials(AGENT_KEY).await;
    let b = other.credentials(AGENT_KEY).await;
    let calls = (0..20).map(|i| {
        let mut c = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            c.authenticate(Fixture::refresh_request("idp", "alice", ""))
                .await
                .map(|r| token(r.into_inner()))
        }
    });
    let results = futures::future::join_all(calls).await;
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    f.idp.assert_no_refresh_token_reuse().await;
    // However the calls interleave (one shared refresh, or one per wave), none reused a token;
    // replicas.rs pins the storm to exactly one. Both still hold the newest refresh token:
    let mut a = a;
    let mut b = b;
    token(
        a.authenticate(Fixture::refresh_request("idp", "alice", ""))
            .await
            .unwrap()
            .into_inner(),
    );
    token(
        b.authenticate(Fixture::refresh_request("idp", "alice", ""))
            .await
            .unwrap()
            .into_inner(),
    );
    f.idp.assert_no_refresh_token_reuse().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_login_and_token_renewal_at_two_thirds_of_the_ttl() {
    let d = VaultDouble::start("secret").await;
    d.enable_kubernetes("valet", "k8s-jwt-canary");
    d.set_ttl(3);
    let dir = tempfile::tempdir().unwrap();
    let jwt = dir.path().join("token");
    std::fs::write(&jwt, "k8s-jwt-canary\n").unwrap();
    let auth = format!(
        "method = \"kubernetes\"\nrole = \"valet\"\njwt_file = \"{}\"",
        jwt.display()
    );
    let f = traced(&d, &auth).await;
    // A 3 s TTL is renewed after about 2 s.
    let mut renewed = false;
    for _ in 0..40 {
        if d.renewals() > 0 {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(renewed, "the token was renewed");
    // A renewal that is refused means a new login.
    d.refuse_renewals(true);
    let logins = d.logins();
    let mut relogged = false;
    for _ in 0..40 {
        if d.logins() > logins {
            relogged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(relogged, "logged in again after a refused renewal");
    assert!(!f.valet.logs().contains("k8s-jwt-canary"));
}

fn write_config(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let caller = format!(
        "[[callers]]\nname = \"ops\"\nrole = \"admin\"\nkey_sha256 = \"{}\"\n",
        "ab".repeat(32)
    );
    std::fs::write(&path, format!("{body}\n{caller}")).unwrap();
    path
}

async fn run_valet(args: Vec<std::ffi::OsString>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_valet"))
            .args(args)
            .env_remove("VALET_CONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_proves_vault_access_and_reports_a_sealed_vault() {
    let d = VaultDouble::start("secret").await;
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "store = \"vault\"\n[vault]\naddress = \"{}\"\n[vault.auth]\ntoken = \"{ROOT_TOKEN}\"\n",
        d.address
    );
    let path = write_config(dir.path(), "v.toml", &body);
    let out = run_valet(vec![
        "check-config".into(),
        "--config".into(),
        path.clone().into(),
    ])
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("can write, read and delete"), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[vault]") && text.contains("token = \"(redacted)\""),
        "{text}"
    );
    assert!(!text.contains(ROOT_TOKEN));
    assert!(d.dump() == "{}", "the probe was cleaned up: {}", d.dump());

    // A token Vault refuses is said as such, not as an unreachable store.
    let wrong = write_config(
        dir.path(),
        "wrong.toml",
        &body.replace(ROOT_TOKEN, "hvs.not-the-token"),
    );
    let out = run_valet(vec!["check-config".into(), "--config".into(), wrong.into()]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused") && err.contains("403") && !err.contains("not reachable"),
        "{err}"
    );
    assert!(!err.contains("hvs.not-the-token"), "{err}");

    d.seal(true);
    let out = run_valet(vec!["check-config".into(), "--config".into(), path.into()]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sealed"), "{err}");

    // A CA file that holds no certificate (here a key): named, exit 78.
    let ca = dir.path().join("not-a-ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let body = format!(
        "store = \"vault\"\n[vault]\naddress = \"{}\"\nca_cert_file = \"{}\"\n[vault.auth]\ntoken = \"{ROOT_TOKEN}\"\n",
        d.address,
        ca.display()
    );
    let path = write_config(dir.path(), "ca.toml", &body);
    let out = run_valet(vec!["check-config".into(), "--config".into(), path.into()]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("not-a-ca.pem") && err.contains("holds no PEM certificate"),
        "{err}"
    );
}

/// The default `kv_version = 2` against a KV v1 mount (RustyVault): not "cannot reach Vault"
/// but which setting to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_names_kv_version_on_a_kv1_mount() {
    let rv = RustyVault::start().await;
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "store = \"vault\"\n[vault]\naddress = \"{}\"\n[vault.auth]\ntoken = \"{}\"\n",
        rv.address, rv.root_token
    );
    let path = write_config(dir.path(), "v.toml", &body);
    let out = run_valet(vec!["check-config".into(), "--config".into(), path.into()]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("kv_version = 1") && !err.contains("cannot reach Vault"),
        "{err}"
    );
    assert!(!err.contains(&rv.root_token));
}

/// A `valet store copy` from a stopped embedded daemon to a Vault KV v2 double.
struct StoreMove {
    embedded: crate::support::Valet,
    idp: crate::support::Idp,
    browser: crate::support::Browser,
    vault: VaultDouble,
    from: std::path::PathBuf,
    to: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl StoreMove {
    /// Stops the embedded daemon of `f` and writes a config for a fresh Vault double.
    async fn from(f: Fixture) -> Self {
        let Fixture {
            valet: mut embedded,
            idp,
            browser,
        } = f;
        assert!(embedded.stop().success());
        let from = embedded.dir.path().join("valet.toml");
        let vault = VaultDouble::start("secret").await;
        let dir = tempfile::tempdir().unwrap();
        let body = format!(
            "store = \"vault\"\n[vault]\naddress = \"{}\"\n[vault.auth]\ntoken = \"{ROOT_TOKEN}\"\n",
            vault.address
        );
        let to = write_config(dir.path(), "to.toml", &body);
        Self {
            embedded,
            idp,
            browser,
            vault,
            from,
            to,
            _dir: dir,
        }
    }

    /// Runs the copy; returns its stdout, asserting it succeeded.
    async fn copy(&self, dry_run: bool) -> String {
        let mut args: Vec<std::ffi::OsString> = vec![
            "store".into(),
            "copy".into(),
            "--from".into(),
            self.from.clone().into(),
            "--to".into(),
            self.to.clone().into(),
        ];
        if dry_run {
            args.push("--dry-run".into());
        }
        let out = run_valet(args).await;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// A daemon on the Vault store, on the embedded one's HTTP address (same redirect URIs);
    /// the stopped embedded daemon and the copy's config directory are returned too, so both
    /// config files stay.
    fn serve_from_vault(
        self,
    ) -> (
        Fixture,
        VaultDouble,
        (crate::support::Valet, tempfile::TempDir),
    ) {
        let valet = crate::support::Valet::start(ValetOptions {
            http_listen: Some(self.embedded.http_addr),
            ..options(&self.vault.address, 2, &token_auth(ROOT_TOKEN))
        });
        let f = Fixture {
            valet,
            idp: self.idp,
            browser: self.browser,
        };
        (f, self.vault, (self.embedded, self._dir))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_moves_a_dev_store_to_vault_idempotently() {
    // A daemon on the embedded store with a provider, a grant and its audit key.
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    f.authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    let m = StoreMove::from(f).await;
    assert!(m.copy(true).await.contains("would copy 3 records"));
    assert_eq!(m.vault.writes(), 0, "a dry run writes nothing");
    assert!(m.copy(false).await.contains("copied 3 records"));
    let text = m.copy(false).await;
    assert!(
        text.contains("copied 0 records") && text.contains("3 already identical"),
        "{text}"
    );

    // A daemon on the Vault store serves the copied grant: a refresh, no consent.
    let (from, to) = (m.from.clone(), m.to.clone());
    let (f, vault, _source) = m.serve_from_vault();
    let t = token(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    assert!(f.idp.userinfo(&t.access_token).await.status().is_success());
    // Once it has served, copying again would bring back what it revoked since: refused, with
    // or without --dry-run, and nothing is written.
    assert!(f.revoke_grant("alice").await);
    let writes = vault.writes();
    for dry_run in [true, false] {
        let mut args: Vec<std::ffi::OsString> = vec!["store".into(), "copy".into()];
        args.extend(["--from".into(), from.clone().into()]);
        args.extend(["--to".into(), to.clone().into()]);
        if dry_run {
            args.push("--dry-run".into());
        }
        let out = run_valet(args).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains("has served from the destination") && err.contains("revoked"),
            "{err}"
        );
    }
    assert_eq!(vault.writes(), writes, "nothing was written");
    assert!(f.grants("alice").await.is_empty(), "the revoke holds");
}

/// Resolves `reference` as the agent key.
async fn resolve_as_agent(
    f: &Fixture,
    reference: &str,
) -> Result<tonic::Response<pb::ResolveResponse>, tonic::Status> {
    f.valet
        .credentials(AGENT_KEY)
        .await
        .resolve(pb::ResolveRequest {
            reference: reference.into(),
            min_ttl_seconds: 0,
            target_url: String::new(),
        })
        .await
}

fn reference_of(r: pb::AuthenticateResponse) -> String {
    crate::support::reference(r).reference
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_carries_references_and_their_single_use_state_to_vault() {
    // On the embedded store: a grant, a reference, and a single-use reference already spent.
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    f.authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    let request = |single_use| pb::AuthenticateRequest {
        handout: pb::Handout::Reference as i32,
        single_use,
        ..Fixture::request("idp", "alice", "")
    };
    let kept = reference_of(f.authenticate(AGENT_KEY, request(false)).await);
    let spent = reference_of(f.authenticate(AGENT_KEY, request(true)).await);
    resolve_as_agent(&f, &spent).await.unwrap();
    let m = StoreMove::from(f).await;
    let text = m.copy(false).await;
    for namespace in ["copy meta/reference-key", "copy refs/", "copy ref-index/"] {
        assert!(text.contains(namespace), "{namespace} missing: {text}");
    }
    assert!(
        !text.contains(&kept["vref_".len()..]),
        "no reference is printed"
    );

    // The daemon on Vault resolves the reference issued before the move; the spent one stays spent.
    let (f, vault, _) = m.serve_from_vault();
    let t = resolve_as_agent(&f, &kept).await.unwrap().into_inner();
    let t = t.token.unwrap();
    assert!(f.idp.userinfo(&t.access_token).await.status().is_success());
    expect_err(
        resolve_as_agent(&f, &spent).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    // Revoking the grant there finds the copied reference through the copied index.
    assert!(f.revoke_grant("alice").await);
    expect_err(
        resolve_as_agent(&f, &kept).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert!(
        !vault.dump().contains("refs/"),
        "the reference record is gone: {}",
        vault.dump()
    );
}
