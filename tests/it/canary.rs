//! Secret canary: the whole flow, a refresh and some failures with TRACE logging captured; no
//! token, code, verifier, state, client secret or API key may appear in the logs or the metrics.

use crate::support::daemon::{ADMIN_KEY, AGENT_KEY};
use crate::support::idp::secret_of;
use crate::support::{Fixture, ValetOptions, pending, token};
use valet::pb;
use valet::store::SecretStore as _;

#[tokio::test]
async fn no_secret_reaches_the_logs_at_trace_level() {
    let f = Fixture::with(ValetOptions {
        log_level: "trace".into(),
        ..Default::default()
    })
    .await;
    f.oidc_provider("idp", "basic-client").await;
    let mut creds = f.valet.credentials(AGENT_KEY).await;
    let p = pending(
        f.authenticate(AGENT_KEY, Fixture::request("idp", "alice", ""))
            .await,
    );
    let auth_url = url::Url::parse(&p.auth_url).unwrap();
    let param = |u: &url::Url, name: &str| {
        u.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap()
    };
    let state = param(&auth_url, "state");
    let nonce = param(&auth_url, "nonce");
    let challenge = param(&auth_url, "code_challenge");
    let cb = f.browser.authorize(&p.auth_url, "alice", true).await;
    let code = param(&cb, "code");
    f.browser.visit(&cb).await;
    let first = token(
        creds
            .wait_for_completion(pb::WaitForCompletionRequest {
                auth_id: p.auth_id.clone(),
                timeout_seconds: 5,
                status_only: false,
            })
            .await
            .unwrap()
            .into_inner(),
    );
    let refreshed = token(
        creds
            .authenticate(pb::AuthenticateRequest {
                min_ttl_seconds: 7200,
                ..Fixture::request("idp", "alice", "")
            })
            .await
            .unwrap()
            .into_inner(),
    );
    // A replay and a failing refresh also log.
    f.browser.visit(&cb).await;
    f.idp.fail_token(503).await;
    let _ = creds
        .authenticate(pb::AuthenticateRequest {
            min_ttl_seconds: 7200,
            ..Fixture::request("idp", "alice", "")
        })
        .await;

    let metrics = f.valet.metrics().await;
    assert!(metrics.contains("valet_refreshes_total"), "{metrics}");
    let mut valet = f.valet;
    assert!(valet.stop().success());
    let logs = valet.logs();
    assert!(logs.contains("TRACE"), "trace logging was on");
    assert!(logs.contains("authorization flow completed"));

    // The refresh token only exists inside the sealed store: open it to learn the canary.
    let store = valet::store::EmbeddedStore::open(&valet.dir.path().join("data")).unwrap();
    let keys = store.list("grants/").await.unwrap();
    let rec = store.get(&keys[0]).await.unwrap().unwrap();
    let grant: serde_json::Value = serde_json::from_slice(&rec.value).unwrap();
    let refresh_token = grant["refresh_token"].as_str().unwrap().to_owned();

    let secrets = [
        ("access token", first.access_token.as_str()),
        ("refreshed access token", refreshed.access_token.as_str()),
        ("refresh token", refresh_token.as_str()),
        ("authorization code", code.as_str()),
        ("state", state.as_str()),
        ("nonce", nonce.as_str()),
        ("PKCE challenge", challenge.as_str()),
        ("client secret", &secret_of("basic-client")),
        ("admin key", ADMIN_KEY),
        ("agent key", AGENT_KEY),
    ];
    for (what, value) in secrets {
        assert!(value.len() >= 8, "{what} is a real value");
        assert!(!logs.contains(value), "the {what} leaked into the logs");
        assert!(
            !metrics.contains(value),
            "the {what} leaked into the metrics"
        );
    }
    assert!(
        !logs.contains("code_verifier"),
        "a PKCE verifier parameter leaked"
    );
    // And the store file itself holds none of them in clear.
    let raw = std::fs::read(valet.dir.path().join("data/store.redb")).unwrap();
    for secret in [
        refresh_token.as_bytes(),
        secret_of("basic-client").as_bytes(),
    ] {
        assert!(!raw.windows(secret.len()).any(|w| w == secret));
    }
}

#[tokio::test]
async fn debug_output_of_secret_carrying_messages_is_redacted() {
    let t = pb::Token {
        access_token: "at-canary-123".into(),
        ..Default::default()
    };
    let p = pb::Provider {
        client_secret: "cs-canary-456".into(),
        ..Default::default()
    };
    let r = pb::AuthenticateResponse {
        result: Some(pb::authenticate_response::Result::Token(t.clone())),
    };
    for out in [format!("{t:?}"), format!("{p:?}"), format!("{r:?}")] {
        assert!(!out.contains("canary"), "{out}");
        assert!(out.contains("redacted"), "{out}");
    }
    let s = valet::secret::SecretString::from("plain-canary");
    assert!(!format!("{s:?}").contains("plain-canary"));
    // A consent link: its query holds the flow's state.
    let pending = pb::Pending {
        auth_url: "https://idp.example/authorize?client_id=c&state=st-canary-789".into(),
        auth_id: "id-canary-012".into(),
        user_code: "uc-canary-345".into(),
        ..Default::default()
    };
    let out = format!("{pending:?}");
    assert!(!out.contains("canary"), "{out}");
    assert!(out.contains("https://idp.example/authorize"), "{out}");
    // A store record: its value is the record's plain JSON.
    let record = valet::store::Versioned {
        value: zeroize::Zeroizing::new(b"{\"refresh_token\":\"rt-canary-678\"}".to_vec()),
        version: 3,
    };
    let store = valet::store::MemoryStore::new();
    store
        .put("grants/x", record.value.clone(), valet::store::Cas::Any)
        .await
        .unwrap();
    for out in [format!("{record:?}"), format!("{store:?}")] {
        assert!(
            !out.contains("canary") && !out.contains("114, 116"),
            "{out}"
        );
    }
}
