//! Lifecycle webhooks, delivered to a receiver double in this test (an HTTP server that records
//! what it is sent and fails the first delivery with a 500): signed as documented in
//! `src/webhooks.rs`, retried, recorded, and never carrying a token.

use crate::support::daemon::AGENT_KEY;
use crate::support::{Fixture, ValetOptions};
use ring::hmac;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Received {
    requests: Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>>,
}

/// A receiver answering 500 to its first request and 200 after.
async fn receiver() -> (String, Received) {
    let got = Received::default();
    let state = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let state = state.clone();
            async move {
                let mut r = state.requests.lock().unwrap();
                r.push((headers, body));
                if r.len() == 1 {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), got)
}

impl Received {
    /// Waits until `n` requests arrived; returns them.
    async fn at_least(&self, n: usize) -> Vec<(axum::http::HeaderMap, String)> {
        for _ in 0..100 {
            {
                let r = self.requests.lock().unwrap();
                if r.len() >= n {
                    return r.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("fewer than {n} webhook requests arrived");
    }
}

const SECRET: &str = "whsec-test-0123456789abcdef";

#[tokio::test]
async fn lifecycle_webhooks_are_signed_retried_recorded_and_carry_no_token() {
    let (url, got) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("webhook.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let f = Fixture::with(ValetOptions {
        extra_toml: format!(
            "[[webhooks]]\nurl = \"{url}\"\nsecret_file = \"{}\"\n",
            secret_file.display()
        ),
        ..Default::default()
    })
    .await;
    f.oidc_provider("idp", "basic-client").await;
    let granted = f
        .authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    // grant.created: refused once with a 500, then delivered again with the same id.
    let first_two = got.at_least(2).await;
    let (h1, b1) = &first_two[0];
    let (h2, b2) = &first_two[1];
    assert_eq!(b1, b2);
    assert_eq!(h1["valet-webhook-id"], h2["valet-webhook-id"]);
    let event: serde_json::Value = serde_json::from_str(b2).unwrap();
    assert_eq!(event["type"], "grant.created");
    assert_eq!(event["provider_id"], "idp");
    assert_eq!(event["user_id"], "alice");
    assert_eq!(event["id"], h2["valet-webhook-id"].to_str().unwrap());
    // The documented scheme, checked independently of Valet's code: v1= hex HMAC-SHA256 of
    // "timestamp.body".
    let ts = h2["valet-webhook-timestamp"].to_str().unwrap().to_owned();
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
    let expected = hex::encode(hmac::sign(&key, format!("{ts}.{b2}").as_bytes()).as_ref());
    assert_eq!(
        h2["valet-webhook-signature"].to_str().unwrap(),
        format!("v1={expected}")
    );
    // `valet webhook verify` agrees, and refuses a changed body.
    let body_file = dir.path().join("body.json");
    let verify = |body: &str| {
        std::fs::write(&body_file, body).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_valet"))
            .args(["webhook", "verify", "--secret-file"])
            .arg(&secret_file)
            .args(["--timestamp", &ts, "--signature"])
            .arg(h2["valet-webhook-signature"].to_str().unwrap())
            .arg("--body-file")
            .arg(&body_file)
            .output()
            .unwrap()
    };
    let ok = verify(b2);
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("valid"));
    let bad = verify(&b2.replace("alice", "mallory"));
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("does not match"));

    assert!(f.revoke_grant("alice").await);
    let all = got.at_least(3).await;
    let revoked: serde_json::Value = serde_json::from_str(&all[2].1).unwrap();
    assert_eq!(revoked["type"], "grant.revoked");
    // No token in any payload or header.
    for (headers, body) in &all {
        assert!(!body.contains(&granted.access_token));
        assert!(!body.contains("token"), "{body}");
        assert!(
            headers
                .values()
                .all(|v| !v.to_str().unwrap_or("").contains(&granted.access_token))
        );
    }
    // Each delivery's outcome is in the audit trail.
    let logs = f.valet.logs_once_they_contain("WebhookDelivered").await;
    assert!(
        logs.lines()
            .any(|l| l.contains("WebhookDelivered") && l.contains("\"outcome\":\"ok\"")),
        "{logs}"
    );
}

#[tokio::test]
async fn a_webhook_without_a_usable_secret_or_url_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "tooshort").unwrap();
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Long enough, but anyone on the machine may read it.
    let open = dir.path().join("open");
    std::fs::write(&open, "open-secret-canary-0123456789").unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.path().join("valet.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"embedded\"\ndata_dir = \"{}\"\n[[webhooks]]\nurl = \"http://hooks.example/x\"\nsecret_file = \"{}\"\nevents = [\"grant.exploded\"]\n[[webhooks]]\nurl = \"https://hooks.example/y\"\nsecret_file = \"{}\"\n",
            dir.path().join("data").display(),
            short.display(),
            open.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_valet"))
        .args(["check-config", "--config"])
        .arg(&config)
        .env_remove("VALET_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "webhooks[0].url must be https",
        "fewer than 16 characters",
        "\"grant.exploded\" is not an event",
        "webhooks[1] secret file",
        "is open to others",
        "chmod 600",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(
        !err.contains("tooshort") && !err.contains("canary"),
        "the secret is not echoed: {err}"
    );
    assert!(!dir.path().join("data").exists(), "nothing written");
}
