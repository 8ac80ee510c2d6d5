//! Leaving Valet: a provider's grants sealed to a recipient's RSA key (the test-only keys in
//! `tests/fixtures`), readable with that key only.

use crate::support::daemon::{ADMIN_KEY, AGENT_KEY};
use crate::support::{Fixture, expect_err};
use rsa::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _};
use tonic::Code;
use valet::pb;

fn fixture_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The public half of a fixture's PKCS#8 RSA key, as PEM.
fn public_pem(name: &str) -> String {
    let private = std::fs::read_to_string(fixture_path(name)).unwrap();
    rsa::RsaPrivateKey::from_pkcs8_pem(&private)
        .unwrap()
        .to_public_key()
        .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap()
}

fn export(recipient: &str) -> pb::ExportGrantsRequest {
    pb::ExportGrantsRequest {
        provider_id: "idp".into(),
        recipient_public_key: recipient.into(),
    }
}

#[tokio::test]
async fn grants_leave_sealed_to_the_recipient_key_and_only_an_admin_may_export() {
    let f = Fixture::new().await;
    f.oidc_provider("idp", "basic-client").await;
    f.authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    f.authorize(AGENT_KEY, Fixture::request("idp", "bob", "planner"))
        .await;
    let mut admin = f.valet.credentials(ADMIN_KEY).await;
    let r = admin
        .export_grants(export(&public_pem("test-rsa-2048.pem")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.grants, 2);
    assert!(!r.sealed.contains("alice"), "sealed, not readable");

    // `valet grant open` with the matching key: the grants, refresh tokens included.
    let dir = tempfile::tempdir().unwrap();
    let sealed = dir.path().join("export.json");
    std::fs::write(&sealed, &r.sealed).unwrap();
    let open = |key: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_valet"))
            .args(["grant", "open", "--private-key-file"])
            .arg(fixture_path(key))
            .arg("--file")
            .arg(&sealed)
            .output()
            .unwrap()
    };
    let out = open("test-rsa-2048.pem");
    assert!(out.status.success(), "{out:?}");
    let grants: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut users: Vec<_> = grants
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            assert!(
                g["refresh_token"].as_str().is_some_and(|t| !t.is_empty()),
                "{g}"
            );
            (
                g["user_id"].as_str().unwrap().to_owned(),
                g["agent_id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    users.sort();
    assert_eq!(
        users,
        [
            ("alice".to_owned(), String::new()),
            ("bob".to_owned(), "planner".to_owned())
        ]
    );
    // Another key cannot open it.
    let wrong = open("test-rsa-other.pem");
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("cannot open this export"),
        "{wrong:?}"
    );

    // Refusals: an agent key, a key that is not an RSA public key; both audited, neither leaks.
    expect_err(
        f.valet
            .credentials(AGENT_KEY)
            .await
            .export_grants(export(&public_pem("test-rsa-2048.pem")))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let s = expect_err(
        admin.export_grants(export("not a key")).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert!(s.message().contains("recipient_public_key"), "{s:?}");
    let logs = f.valet.logs_once_they_contain("ExportGrants").await;
    assert!(logs.contains("\"caller\":\"ops\""), "the export is audited");
}
