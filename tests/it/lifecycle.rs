//! The daemon as a process: restart keeps everything durable, health, graceful shutdown, config
//! validation before any port is bound, dev mode's one-time admin key, and the revoke path.

use crate::support::daemon::AGENT_KEY;
use crate::support::{Fixture, expect_err, pending, token};
use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;
use std::time::Duration;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use valet::pb;

#[tokio::test]
async fn a_restart_keeps_providers_and_grants() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    f.oauth2_provider("oauth").await;
    f.authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    let f = f.restart();
    let list = f
        .valet
        .providers()
        .await
        .list_providers(pb::ListProvidersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.providers.len(), 2);
    // The access token cache is gone; the stored refresh token gets a new one, no consent.
    let before = f.idp.refreshes().await;
    let t = token(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    assert_eq!(f.idp.refreshes().await, before + 1);
    assert!(f.idp.userinfo(&t.access_token).await.status().is_success());
}

#[tokio::test]
async fn revoke_removes_the_grant_and_the_cached_token() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    f.authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    let mut creds = f.valet.credentials(AGENT_KEY).await;
    let revoke = || pb::RevokeRequest {
        provider_id: "idp".into(),
        user_id: "alice".into(),
        ..Default::default()
    };
    assert!(creds.revoke(revoke()).await.unwrap().into_inner().revoked);
    assert!(!creds.revoke(revoke()).await.unwrap().into_inner().revoked);
    pending(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    assert!(f.grants("alice").await.is_empty());
    expect_err(
        creds
            .revoke(pb::RevokeRequest {
                user_id: String::new(),
                ..revoke()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
}

#[tokio::test]
async fn health_reports_serving_and_sigterm_exits_cleanly() {
    let f = Fixture::new().await;
    let mut health = HealthClient::new(f.valet.raw_channel().await);
    for service in ["", "valet.v1.Credentials", "valet.v1.Providers"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service}");
    }
    let healthz = reqwest::get(format!("http://{}/healthz", f.valet.http_addr))
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    let mut valet = f.valet;
    let status = valet.stop();
    assert!(status.success(), "exit status {status}");
    assert!(valet.logs().contains("shutting down"));
}

fn valet_bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_valet"));
    c.env_remove("VALET_CONFIG");
    c
}

#[test]
fn a_bad_config_exits_78_listing_every_problem_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "grpc_listen = \"nowhere\"\nstore = \"mysql\"\n[flows]\nttl_seconds = 0\n",
    )
    .unwrap();
    let out = valet_bin()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in ["grpc_listen", "store", "flows.ttl_seconds", "no callers"] {
        assert!(err.contains(needle), "{needle} missing: {err}");
    }
    assert!(out.stdout.is_empty(), "nothing listened");
}

#[test]
fn check_config_prints_the_effective_config_with_hashes_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.toml");
    let hash = "ab".repeat(32);
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{}\"\n[[callers]]\nname = \"ops\"\nrole = \"admin\"\nkey_sha256 = \"{hash}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = valet_bin()
        .args(["check-config", "--config"])
        .arg(&path)
        .args(["--grpc-listen", "127.0.0.1:7000"])
        .env("VALET_HTTP_LISTEN", "127.0.0.1:7001")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("grpc_listen = \"127.0.0.1:7000\""), "{text}");
    assert!(text.contains("http_listen = \"127.0.0.1:7001\""), "{text}");
    assert!(
        text.contains("(redacted)") && !text.contains(&hash),
        "{text}"
    );
}

/// `check-config` and `valet store copy` make no store: a data directory that is not there is
/// reported, not created; a store a running daemon holds is reported, not opened; a dry run
/// into a destination not made yet writes nothing; a copy from a source that is not there is
/// refused.
#[test]
fn check_config_and_store_copy_create_no_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = |name: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "data_dir = \"{}\"\n[[callers]]\nname = \"ops\"\nrole = \"admin\"\nkey_sha256 = \"{}\"\n",
                dir.path().join(name).display(),
                "ab".repeat(32)
            ),
        )
        .unwrap();
        path
    };
    let (a, b, c) = (config("a"), config("b"), config("c"));
    let valet = |args: &[&std::ffi::OsStr]| {
        let out = valet_bin().args(args).output().unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let check = |path: &std::path::Path| {
        valet(&[
            "check-config".as_ref(),
            "--config".as_ref(),
            path.as_os_str(),
        ])
    };
    let copy = |from: &std::path::Path, to: &std::path::Path| {
        valet(&[
            "store".as_ref(),
            "copy".as_ref(),
            "--from".as_ref(),
            from.as_os_str(),
            "--to".as_ref(),
            to.as_os_str(),
            "--dry-run".as_ref(),
        ])
    };

    let (ok, _, err) = check(&a);
    assert!(
        ok && err.contains("no store in the data directory"),
        "{err}"
    );
    assert!(!dir.path().join("a").exists(), "check-config made no store");
    // An empty directory (a fresh volume, a systemd StateDirectory) is no store either.
    std::fs::create_dir(dir.path().join("c")).unwrap();
    let (ok, _, err) = check(&c);
    assert!(
        ok && err.contains("no store in the data directory"),
        "{err}"
    );
    let (ok, _, err) = copy(&c, &b);
    assert!(!ok && err.contains("there is nothing to copy"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("c")).unwrap().count(),
        0,
        "nothing was made in it"
    );
    std::fs::remove_dir(dir.path().join("c")).unwrap();

    let (child, _) = serve_dev(dir.path(), &["--config".as_ref(), a.as_os_str()]);
    let (ok, _, err) = check(&a);
    assert!(ok && err.contains("in use by a running valet"), "{err}");
    terminate(child);

    let (ok, out, err) = copy(&a, &b);
    assert!(
        ok && out.contains("would copy") && out.contains("to the embedded store"),
        "{out}{err}"
    );
    assert!(!dir.path().join("b").exists(), "a dry run made no store");
    // One store named twice (here by a second config with the same data_dir, spelled another
    // way) is said as such, not as a store in use by another process.
    let twin = dir.path().join("twin.toml");
    let body = format!("data_dir = \"{}/./a\"\n", dir.path().display());
    std::fs::write(&twin, body).unwrap();
    for (from, to) in [(&a, &a), (&a, &twin)] {
        let (ok, _, err) = copy(from, to);
        assert!(!ok && err.contains("name the same store"), "{err}");
    }

    let (ok, _, err) = copy(&c, &b);
    assert!(!ok && err.contains("there is nothing to copy"), "{err}");
    assert!(!dir.path().join("c").exists() && !dir.path().join("b").exists());

    // A backup's config names only its data_dir: no callers needed to copy into it.
    let backup = dir.path().join("backup.toml");
    let body = format!("data_dir = \"{}\"\n", dir.path().join("backup").display());
    std::fs::write(&backup, body).unwrap();
    let (ok, out, err) = copy(&a, &backup);
    assert!(ok && out.contains("would copy"), "{out}{err}");
    // A bad config file exits 78, as the daemon's does.
    std::fs::write(&backup, "data_dri = \"/tmp\"\n").unwrap();
    let out = valet_bin()
        .args(["store", "copy", "--dry-run", "--from"])
        .arg(&a)
        .arg("--to")
        .arg(&backup)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("backup.toml") && err.contains("data_dri"),
        "{err}"
    );
}

/// Starts `valet serve --dev` on loopback port 0 in `dir`; returns the child and the stdout
/// lines up to and including `valet listening …`.
fn serve_dev(
    dir: &std::path::Path,
    extra: &[&std::ffi::OsStr],
) -> (std::process::Child, Vec<String>) {
    let mut child = valet_bin()
        .args([
            "serve",
            "--dev",
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(extra)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut seen = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line.starts_with("valet listening");
        seen.push(line);
        if done {
            break;
        }
    }
    (child, seen)
}

fn terminate(mut child: std::process::Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    assert!(child.wait().unwrap().success());
}

/// check-config refuses (exit 78, as the daemon's start would) a data directory the first start
/// could not create: under a regular file, or where nothing may be created (/proc).
#[test]
fn check_config_refuses_a_data_directory_that_cannot_be_created() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    for (data_dir, why) in [
        (file.join("data"), "cannot inspect"),
        (
            std::path::PathBuf::from("/proc/valet-nowhere/data"),
            "cannot be created",
        ),
    ] {
        let out = valet_bin()
            .args(["check-config", "--dev", "--data-dir"])
            .arg(&data_dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{}: {err}", data_dir.display());
        assert!(err.contains(why), "{err}");
    }
    // One that can be created passes, and check-config leaves nothing there: not the data
    // directory, not its probe.
    let fresh = dir.path().join("new/data");
    let out = valet_bin()
        .args(["check-config", "--dev", "--data-dir"])
        .arg(&fresh)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["a-file"], "nothing was left behind");
}

/// A restore that pairs the store with another store.key: the start is refused with exit 78
/// (systemd does not restart it in a loop) and says which files go together.
#[test]
fn a_store_restored_with_another_key_exits_78_naming_the_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let (child, seen) = serve_dev(dir.path(), &[]);
    let key = seen
        .iter()
        .find_map(|l| l.strip_prefix("admin key: "))
        .unwrap()
        .to_owned();
    let grpc = seen
        .last()
        .and_then(|l| l.strip_prefix("valet listening grpc="))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    let created = valet_bin()
        .args(["provider", "create", "k", "--kind", "api-key"])
        .args(["--location", "header", "--credential-name", "X-Key"])
        .env("VALET_SERVER", format!("http://{grpc}"))
        .env("VALET_KEY", &key)
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    terminate(child);
    // Another store's key, put in place of this one's.
    let other = tempfile::tempdir().unwrap();
    terminate(serve_dev(other.path(), &[]).0);
    std::fs::copy(
        other.path().join("valet-data/store.key"),
        dir.path().join("valet-data/store.key"),
    )
    .unwrap();
    let (_, err, code) = serve_dev_fails(dir.path(), &["--grpc-listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("do not open with its key") && err.contains("restore the store.key"),
        "{err}"
    );
}

#[test]
fn dev_mode_prints_an_admin_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let (child, seen) = serve_dev(dir.path(), &[]);
        terminate(child);
        seen
    };
    let first = run();
    let key_line = first
        .iter()
        .find(|l| l.starts_with("admin key: "))
        .expect("a key line");
    assert!(key_line.len() > "admin key: ".len() + 40);
    assert!(
        dir.path().join("valet-data/store.key").exists(),
        "embedded store under ./valet-data"
    );
    let second = run();
    assert!(
        second.iter().all(|l| !l.starts_with("admin key: ")),
        "{second:?}"
    );
}

/// `valet serve --dev` in `dir` with `extra` arguments, expected to fail (within a minute; a
/// daemon that starts instead is killed and the test fails): its stdout, stderr and exit code.
fn serve_dev_fails(dir: &std::path::Path, extra: &[&str]) -> (String, String, Option<i32>) {
    let mut child = valet_bin()
        .args(["serve", "--dev", "--http-listen", "127.0.0.1:0"])
        .args(extra)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon started: {:?}", child.wait_with_output());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!stdout.contains("valet listening"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (stdout, stderr, out.status.code())
}

/// `text` written as `dir/valet.toml`: its path, for `--config`.
fn config_file(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("valet.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// `valet check-config` with `extra` arguments (data directory `dir/data`), expected to refuse a
/// bad configuration (exit 78) without showing it as if it were valid: its stderr.
fn check_config_refuses(dir: &std::path::Path, extra: &[&str]) -> String {
    let out = valet_bin()
        .arg("check-config")
        .args(extra)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(78), "{err}");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.is_empty(), "shown as valid: {shown}");
    err
}

#[test]
fn a_short_or_readable_admin_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("admin.key");
    let path = key_file.to_str().unwrap();
    let grpc = ["--grpc-listen", "127.0.0.1:0", "--admin-key-file", path];
    std::fs::write(&key_file, "short-canary\n").unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A bad configuration (78), which systemd does not restart in a loop.
    let (_, err, code) = serve_dev_fails(dir.path(), &grpc);
    assert!(
        err.contains("holds a 12-character key") && err.contains("valet key new"),
        "{err}"
    );
    assert_eq!(code, Some(78), "{err}");
    assert!(!err.contains("short-canary"), "not echoed: {err}");
    std::fs::write(&key_file, "long-enough-admin-key-canary-0123456789\n").unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, err, code) = serve_dev_fails(dir.path(), &grpc);
    assert!(
        err.contains("open to others or writable by its group (mode 644)")
            && err.contains("chmod 600"),
        "{err}"
    );
    assert_eq!(code, Some(78), "{err}");
    assert!(!err.contains("long-enough"), "the key is not echoed: {err}");
    // check-config finds it too, before an upgrade stops the running daemon.
    let err = check_config_refuses(dir.path(), &["--admin-key-file", path]);
    assert!(err.contains("open to others"), "{err}");
    // A file that is not on this machine (a Secret mounted in the pod only) is noted.
    let out = valet_bin()
        .args(["check-config", "--admin-key-file", "/nonexistent/admin-key"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("is not on this machine"), "{err}");
}

/// A store key file others may read, or an audit file the daemon cannot open: the operator's to
/// fix, so a bad configuration (78, which systemd does not restart in a loop), naming the fix.
#[test]
fn a_readable_store_key_or_an_audit_file_that_cannot_open_is_a_bad_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let (child, _) = serve_dev(dir.path(), &[]);
    terminate(child);
    let key = dir.path().join("valet-data/store.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, err, code) = serve_dev_fails(dir.path(), &["--grpc-listen", "127.0.0.1:0"]);
    assert!(
        err.contains("readable by group or others (mode 644)") && err.contains("chmod 600"),
        "{err}"
    );
    assert_eq!(code, Some(78), "{err}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = config_file(dir.path(), "[audit]\nfile = \"/nonexistent/audit.jsonl\"\n");
    let (_, err, code) = serve_dev_fails(
        dir.path(),
        &["--grpc-listen", "127.0.0.1:0", "--config", &config],
    );
    assert!(
        err.contains("cannot open the audit file /nonexistent/audit.jsonl"),
        "{err}"
    );
    assert_eq!(code, Some(78), "{err}");
}

/// TLS files the configuration names that cannot be read: a bad configuration (78) at start
/// and in check-config, naming the file.
#[test]
fn an_unreadable_tls_file_is_a_bad_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        "[grpc_tls]\ncert_file = \"/nonexistent/tls.pem\"\nkey_file = \"/nonexistent/tls.key\"\n",
    );
    let config = config.as_str();
    let err = check_config_refuses(dir.path(), &["--dev", "--config", config]);
    assert!(err.contains("cannot read /nonexistent/tls.pem"), "{err}");
    let (_, err, code) = serve_dev_fails(
        dir.path(),
        &["--grpc-listen", "127.0.0.1:0", "--config", config],
    );
    assert!(err.contains("/nonexistent/tls.pem"), "{err}");
    assert_eq!(code, Some(78), "{err}");
}

/// A first dev start that fails (its port busy, a broken profile) shows no admin key and keeps
/// no hash of one, so the start that succeeds shows the key.
#[test]
fn a_first_start_that_fails_shows_no_admin_key() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let (stdout, err, _) = serve_dev_fails(dir.path(), &["--grpc-listen", &addr]);
    assert!(!stdout.contains("admin key"), "{stdout}");
    assert!(
        err.contains(&addr) && err.contains("--grpc-listen"),
        "{err}"
    );
    assert!(!dir.path().join("valet-data/admin-key.sha256").exists());
    // A profile that does not parse fails the start after the listeners are bound.
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    std::fs::write(profiles.join("broken.toml"), "not = [toml").unwrap();
    let config = config_file(
        dir.path(),
        &format!("profiles_dir = \"{}\"\n", profiles.display()),
    );
    let config = config.as_str();
    let (stdout, err, code) = serve_dev_fails(
        dir.path(),
        &["--grpc-listen", "127.0.0.1:0", "--config", config],
    );
    assert!(!stdout.contains("admin key"), "{stdout}");
    assert!(err.contains("broken"), "{err}");
    assert_eq!(code, Some(78), "a bad configuration: {err}");
    assert!(!dir.path().join("valet-data/admin-key.sha256").exists());
    // check-config finds it, and every other profile that does not load, in one run.
    std::fs::write(
        profiles.join("mygh.toml"),
        "name = \"mygh\"\nkind = \"oauth3\"\n",
    )
    .unwrap();
    let checked = check_config_refuses(dir.path(), &["--dev", "--config", config]);
    assert!(
        checked.contains("broken") && checked.contains("mygh"),
        "{checked}"
    );
    std::fs::remove_file(profiles.join("mygh.toml")).unwrap();
    let (child, seen) = serve_dev(dir.path(), &[]);
    terminate(child);
    assert!(
        seen.iter().any(|l| l.starts_with("admin key: ")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn an_admin_key_file_replaces_the_generated_key() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("admin.key");
    std::fs::write(&key_file, "file-admin-key-canary-42-0123456789abcdef\n").unwrap();
    // Group read is allowed: Kubernetes mounts a Secret this way for a pod with fsGroup.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o440)).unwrap();
    let (child, seen) = serve_dev(
        dir.path(),
        &["--admin-key-file".as_ref(), key_file.as_os_str()],
    );
    assert!(
        seen.iter().all(|l| !l.starts_with("admin key: ")),
        "no key is generated: {seen:?}"
    );
    let grpc = seen
        .last()
        .and_then(|l| l.strip_prefix("valet listening grpc="))
        .and_then(|rest| rest.split(' ').next())
        .unwrap();
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut req = tonic::Request::new(pb::ListProvidersRequest {});
    req.metadata_mut().insert(
        "authorization",
        "Bearer file-admin-key-canary-42-0123456789abcdef"
            .parse()
            .unwrap(),
    );
    pb::providers_client::ProvidersClient::new(channel)
        .list_providers(req)
        .await
        .expect("the key from the file is the admin key");
    // Off the runtime, so the client's connection can close and the daemon drains at once.
    tokio::task::spawn_blocking(move || terminate(child))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_call_finish() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    let p = pending(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    let mut creds = f.valet.credentials(AGENT_KEY).await;
    let call = tokio::spawn(async move {
        creds
            .wait_for_completion(pb::WaitForCompletionRequest {
                auth_id: p.auth_id,
                timeout_seconds: 2,
                status_only: false,
            })
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut valet = f.valet;
    let status = tokio::task::spawn_blocking(move || valet.stop())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    // The wait was answered (pending at its timeout), not cut off by the shutdown.
    pending(
        call.await
            .unwrap()
            .expect("the in-flight call completed")
            .into_inner(),
    );
}

/// Revoke a grant as the agent key; returns the response.
async fn revoke_alice(f: &Fixture) -> pb::RevokeResponse {
    f.revoke_at("idp", "alice").await
}

#[tokio::test]
async fn revoking_a_grant_revokes_its_tokens_at_the_provider_rfc_7009() {
    let f = Fixture::new().await;
    oidc_with_revocation(&f, format!("{}/token/revocation", f.idp.issuer)).await;
    let t = f
        .authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    assert_eq!(
        f.idp.introspect("basic-client", &t.access_token).await["active"],
        true
    );
    let g = &f.grants("alice").await[0];
    assert_eq!(
        (
            g.kind,
            g.issuer.as_str(),
            g.has_refresh_token,
            g.has_stored_value
        ),
        (
            pb::ProviderKind::Oidc as i32,
            f.idp.issuer.as_str(),
            true,
            false
        )
    );
    assert!(!g.subject.is_empty());
    let r = revoke_alice(&f).await;
    assert!(r.revoked);
    assert_eq!(
        r.provider_revocation,
        pb::ProviderRevocation::Revoked as i32,
        "{r:?}"
    );
    assert_eq!(
        f.idp.introspect("basic-client", &t.access_token).await["active"],
        false,
        "the provider no longer honours the token"
    );
    assert!(f.grants("alice").await.is_empty());
    assert!(!f.valet.logs().contains(&t.access_token));
    // Again: nothing here, nothing sent to the provider, and the answer says so.
    let again = revoke_alice(&f).await;
    assert!(!again.revoked);
    assert_eq!(
        again.provider_revocation,
        pb::ProviderRevocation::NothingToRevoke as i32,
        "{again:?}"
    );
}

/// A caller whose deadline passes while the provider revokes: the revoke finishes without it.
/// Cut off there, the tokens would be dead at the provider and the grant still here, its token
/// handed out. The revocation endpoint is a loopback double of RFC 7009's (section 2.2: 200 for
/// any well-formed request) that answers after a second.
#[tokio::test]
async fn a_revoke_whose_caller_gave_up_still_finishes() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/revoke", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut seen = 0;
                while seen == 0 || !buf[..seen].windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf[seen..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen += n,
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    let f = Fixture::new().await;
    oidc_with_revocation(&f, url).await;
    f.authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    let mut req = tonic::Request::new(pb::RevokeRequest {
        provider_id: "idp".into(),
        user_id: "alice".into(),
        ..Default::default()
    });
    req.set_timeout(Duration::from_millis(300));
    let gave_up = f.valet.credentials(AGENT_KEY).await.revoke(req).await;
    assert_eq!(
        gave_up.unwrap_err().code(),
        Code::Cancelled,
        "the caller's deadline passed first"
    );
    let mut left = f.grants("alice").await;
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = f.grants("alice").await;
    }
    assert!(left.is_empty(), "revoked all the same: {left:?}");
    pending(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
}

#[tokio::test]
async fn a_provider_that_cannot_revoke_is_reported_and_the_grant_is_gone_anyway() {
    let f = Fixture::new().await;
    // A revocation endpoint nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/revoke", closed.local_addr().unwrap());
    drop(closed);
    oidc_with_revocation(&f, dead).await;
    f.authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    let r = revoke_alice(&f).await;
    assert!(r.revoked);
    assert_eq!(r.provider_revocation, pb::ProviderRevocation::Failed as i32);
    assert!(r.provider_error.contains("unreachable"), "{r:?}");
    assert!(
        f.grants("alice").await.is_empty(),
        "the local grant is gone"
    );
    pending(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
}

#[tokio::test]
async fn deleting_a_provider_can_revoke_every_grant_at_the_provider_first() {
    let f = Fixture::new().await;
    oidc_with_revocation(&f, format!("{}/token/revocation", f.idp.issuer)).await;
    let mut tokens = Vec::new();
    for user in ["alice", "bob"] {
        tokens.push(
            f.authorize(AGENT_KEY, Fixture::request("idp", user, ""))
                .await,
        );
    }
    let r = delete_idp_revoking(&f).await;
    assert_eq!(
        (
            r.grants_deleted,
            r.revoked_at_provider,
            r.revocation_failures
        ),
        (2, 2, 0)
    );
    for t in tokens {
        assert_eq!(
            f.idp.introspect("basic-client", &t.access_token).await["active"],
            false
        );
    }
    assert!(f.grants_for_admin().await.is_empty());
}

/// Deleting a provider revokes its grants at the provider several at a time, so a slow provider
/// does not make it take hours. The revocation endpoint here (a loopback double of RFC 7009's:
/// any well-formed request gets 200) holds each answer until a second request is open, or for
/// two seconds: revoked one at a time, no two would ever be open together.
#[tokio::test]
async fn deleting_a_provider_revokes_at_the_provider_several_at_a_time() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/revoke", listener.local_addr().unwrap());
    let (open, most) = (
        std::sync::Arc::new(AtomicUsize::new(0)),
        std::sync::Arc::new(AtomicUsize::new(0)),
    );
    let (o, m) = (open.clone(), most.clone());
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let (open, most) = (o.clone(), m.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut seen = 0;
                // The headers and the form body (small: it fits one read or two).
                while seen == 0 || !buf[..seen].windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf[seen..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen += n,
                    }
                }
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
                while open.load(Ordering::SeqCst) < 2 && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    let f = Fixture::new().await;
    oidc_with_revocation(&f, url).await;
    for user in ["alice", "bob", "carol"] {
        f.authorize(AGENT_KEY, Fixture::request("idp", user, ""))
            .await;
    }
    let r = delete_idp_revoking(&f).await;
    assert_eq!((r.grants_deleted, r.revoked_at_provider), (3, 3), "{r:?}");
    assert!(most.load(Ordering::SeqCst) >= 2, "revoked one at a time");
    assert!(f.grants_for_admin().await.is_empty());
}

#[tokio::test]
async fn an_oidc_provider_revokes_through_the_endpoint_its_discovery_advertises() {
    let f = Fixture::new().await;
    let p = f.oidc_provider("idp", "basic-client").await;
    assert_eq!(
        p.revocation_url,
        format!("{}/token/revocation", f.idp.issuer)
    );
    let t = f
        .authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    let r = revoke_alice(&f).await;
    assert_eq!(
        r.provider_revocation,
        pb::ProviderRevocation::Revoked as i32
    );
    assert_eq!(
        f.idp.introspect("basic-client", &t.access_token).await["active"],
        false
    );
}

/// Deletes the `idp` provider, revoking its grants at the provider first.
async fn delete_idp_revoking(f: &Fixture) -> pb::DeleteProviderResponse {
    f.valet
        .providers()
        .await
        .delete_provider(pb::DeleteProviderRequest {
            provider_id: "idp".into(),
            revoke_at_provider: true,
        })
        .await
        .unwrap()
        .into_inner()
}

/// The `idp` OIDC provider with an explicit revocation endpoint.
async fn oidc_with_revocation(f: &Fixture, revocation_url: String) {
    f.create(pb::Provider {
        provider_id: "idp".into(),
        kind: pb::ProviderKind::Oidc as i32,
        client_id: "basic-client".into(),
        client_secret: crate::support::idp::secret_of("basic-client"),
        issuer: f.idp.issuer.clone(),
        revocation_url,
        default_scopes: vec!["openid".into(), "email".into()],
        ..Default::default()
    })
    .await;
}
