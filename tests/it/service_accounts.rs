//! Kind `service_account` (the JWT bearer grant, RFC 7523) against a loopback authorization
//! server that verifies every assertion (`support::jwt_bearer`, a double written to the RFC): a
//! generic PEM key and a Google-format JSON key, impersonation, caching, and refusals.

use crate::support::daemon::AGENT_KEY;
use crate::support::jwt_bearer::JwtBearerServer;
use crate::support::{Fixture, expect_err, token};
use tonic::Code;
use valet::jwt::SigningKey;
use valet::pb;

const RSA: &str = include_str!("../fixtures/test-rsa-2048.pem");
const RSA_OTHER: &str = include_str!("../fixtures/test-rsa-other.pem");
const EC: &str = include_str!("../fixtures/test-ec-p256.pem");
const EC_SEC1: &str = include_str!("../fixtures/test-ec-p256-sec1.pem");
const ISSUER: &str = "robot@valet-test.iam.example";

fn key(pem: &str) -> SigningKey {
    SigningKey::from_pem(&pem.into(), None).unwrap()
}

/// A service account with a PEM key, signing for `server`.
fn pem_provider(id: &str, pem: &str, server: &JwtBearerServer) -> pb::Provider {
    pb::Provider {
        provider_id: id.into(),
        kind: pb::ProviderKind::ServiceAccount as i32,
        private_key: pem.into(),
        key_id: "test-kid".into(),
        assertion_issuer: ISSUER.into(),
        token_url: server.token_url.clone(),
        default_scopes: vec!["api.read".into()],
        ..Default::default()
    }
}

/// A Google service-account JSON key whose `token_uri` is `server`'s.
fn google_json_key(server: &JwtBearerServer) -> String {
    serde_json::json!({
        "type": "service_account",
        "project_id": "valet-test",
        "private_key_id": "0123abcd",
        "private_key": RSA,
        "client_email": ISSUER,
        "client_id": "1234567890",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": server.token_url,
    })
    .to_string()
}

fn request(provider: &str, user: &str) -> pb::AuthenticateRequest {
    Fixture::request(provider, user, "")
}

#[tokio::test]
async fn a_pem_service_account_signs_assertions_the_server_verifies_and_caches_the_token() {
    for (pem, alg) in [(RSA, "RS256"), (EC, "ES256")] {
        let f = Fixture::new().await;
        let server = JwtBearerServer::start(&key(pem), ISSUER).await;
        let created = f.create(pem_provider("sa", pem, &server)).await;
        assert!(created.has_private_key);
        assert_eq!(created.key_algorithm, alg);
        assert!(created.private_key.is_empty(), "the key is write-only");
        assert_eq!(
            created.assertion_audience, server.token_url,
            "aud defaults to token_url"
        );

        let t = token(f.authenticate(AGENT_KEY, request("sa", "")).await);
        assert_eq!(t.access_token, format!("sa-token-{ISSUER}-1-canary"));
        assert_eq!(t.scopes, ["api.read"], "scopes sent in the request");
        let again = token(f.authenticate(AGENT_KEY, request("sa", "")).await);
        assert_eq!(again.access_token, t.access_token, "cached");
        assert_eq!(server.issued(), 1);
        let claims = &server.accepted()[0];
        assert_eq!(claims["iss"], ISSUER);
        assert_eq!(claims["sub"], ISSUER, "sub defaults to the issuer");
        assert_eq!(claims["aud"], server.token_url.as_str());
        assert!(
            claims.get("scope").is_none(),
            "generic keys send scope in the request"
        );

        let logs = f.valet.logs();
        assert!(!logs.contains(&t.access_token));
        let key_line = pem.lines().nth(1).unwrap();
        assert!(!logs.contains(key_line), "no key material in the log");
        assert!(f.grants_for_admin().await.is_empty(), "no grant is stored");
    }
}

#[tokio::test]
async fn a_google_json_key_fills_the_account_and_impersonates_users_when_allowed() {
    let f = Fixture::new().await;
    let server = JwtBearerServer::start(&key(RSA), ISSUER).await;
    let created = f
        .create(pb::Provider {
            provider_id: "google-sa".into(),
            kind: pb::ProviderKind::ServiceAccount as i32,
            private_key: google_json_key(&server),
            subject_from_user: true,
            default_scopes: vec!["https://www.googleapis.com/auth/drive.readonly".into()],
            ..Default::default()
        })
        .await;
    assert_eq!(created.assertion_issuer, ISSUER, "from client_email");
    assert_eq!(created.key_id, "0123abcd", "from private_key_id");
    assert_eq!(created.token_url, server.token_url, "from token_uri");

    let own = token(f.authenticate(AGENT_KEY, request("google-sa", "")).await);
    let alice = token(
        f.authenticate(AGENT_KEY, request("google-sa", "alice@corp.example"))
            .await,
    );
    let bob = token(
        f.authenticate(AGENT_KEY, request("google-sa", "bob@corp.example"))
            .await,
    );
    assert!(own.access_token.contains(ISSUER));
    assert!(alice.access_token.contains("alice@corp.example"));
    assert!(bob.access_token.contains("bob@corp.example"));
    let alice_again = token(
        f.authenticate(AGENT_KEY, request("google-sa", "alice@corp.example"))
            .await,
    );
    assert_eq!(
        alice_again.access_token, alice.access_token,
        "cached per subject"
    );
    assert_eq!(server.issued(), 3);
    let claims = server.accepted();
    assert_eq!(claims[1]["sub"], "alice@corp.example");
    assert_eq!(claims[1]["iss"], ISSUER);
    assert_eq!(
        claims[1]["scope"], "https://www.googleapis.com/auth/drive.readonly",
        "a Google key puts the scopes in the assertion"
    );

    // A token for a user belongs to no agent; agent_id is refused.
    let s = expect_err(
        f.try_authenticate(
            AGENT_KEY,
            Fixture::request("google-sa", "alice@corp.example", "a1"),
        )
        .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert!(s.message().contains("agent_id"), "{s:?}");

    // Survives a restart: the key was stored sealed and is read back.
    let f = f.restart();
    let after = token(
        f.authenticate(AGENT_KEY, request("google-sa", "carol@corp.example"))
            .await,
    );
    assert!(after.access_token.contains("carol@corp.example"));
}

#[tokio::test]
async fn assertions_the_server_refuses_are_clear_provider_rejections() {
    let f = Fixture::new().await;
    let server = JwtBearerServer::start(&key(RSA), ISSUER).await;
    // Signed with a key the server does not know.
    f.create(pem_provider("wrong-key", RSA_OTHER, &server))
        .await;
    // For another audience.
    f.create(pb::Provider {
        assertion_audience: "https://elsewhere.example/token".into(),
        ..pem_provider("wrong-aud", RSA, &server)
    })
    .await;
    // As another issuer.
    f.create(pb::Provider {
        assertion_issuer: "someone-else@example".into(),
        ..pem_provider("wrong-iss", RSA, &server)
    })
    .await;
    for id in ["wrong-key", "wrong-aud", "wrong-iss"] {
        let s = expect_err(
            f.try_authenticate(AGENT_KEY, request(id, "")).await,
            Code::FailedPrecondition,
            "PROVIDER_REJECTED",
        );
        assert!(s.message().contains("invalid_grant"), "{id}: {s:?}");
        assert!(s.message().contains("service account"), "{id}: {s:?}");
    }
    assert_eq!(server.issued(), 0);

    // The server refuses an expired assertion and accepts a fresh one with the same key.
    let k = key(RSA);
    let now = valet::clock::Clock::now_unix(&valet::clock::SystemClock);
    let stale = valet::jwt::claims(ISSUER, ISSUER, &server.token_url, now - 7200, &[]).unwrap();
    let (status, body) = server
        .post_assertion(valet::secret::ExposeSecret::expose_secret(
            &k.sign(&stale).unwrap(),
        ))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let fresh = valet::jwt::claims(ISSUER, ISSUER, &server.token_url, now, &[]).unwrap();
    let (status, _) = server
        .post_assertion(valet::secret::ExposeSecret::expose_secret(
            &k.sign(&fresh).unwrap(),
        ))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn bad_keys_and_settings_are_refused_by_field_and_nothing_is_written() {
    let f = Fixture::new().await;
    let server = JwtBearerServer::start(&key(RSA), ISSUER).await;
    let base = || pem_provider("sa", RSA, &server);
    let not_a_service_account = serde_json::json!({"type": "authorized_user", "client_id": "x"});
    let cases = [
        (
            pb::Provider {
                private_key: "not a key".into(),
                ..base()
            },
            "private_key",
        ),
        (
            pb::Provider {
                private_key: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----".into(),
                ..base()
            },
            "private_key",
        ),
        (
            pb::Provider {
                private_key: EC_SEC1.into(),
                ..base()
            },
            "openssl pkcs8",
        ),
        (
            pb::Provider {
                private_key: "{\"type\": ".into(),
                ..base()
            },
            "private_key",
        ),
        (
            pb::Provider {
                private_key: not_a_service_account.to_string(),
                ..base()
            },
            "service_account",
        ),
        (
            pb::Provider {
                private_key: String::new(),
                ..base()
            },
            "private_key",
        ),
        (
            pb::Provider {
                token_url: String::new(),
                ..base()
            },
            "token_url",
        ),
        (
            pb::Provider {
                auth_url: "https://idp.example/auth".into(),
                ..base()
            },
            "auth_url",
        ),
        (
            pb::Provider {
                assertion_issuer: String::new(),
                ..base()
            },
            "assertion_issuer",
        ),
        (
            pb::Provider {
                token_auth_method: pb::TokenAuthMethod::PrivateKeyJwt as i32,
                ..base()
            },
            "token_auth_method",
        ),
        (pb::Provider { kind: 99, ..base() }, "kind"),
        // A private key on a kind that does not sign anything.
        (
            pb::Provider {
                kind: pb::ProviderKind::ClientCredentials as i32,
                client_id: "c".into(),
                client_secret: "s".into(),
                ..base()
            },
            "private_key",
        ),
        // private_key_jwt without a key.
        (
            pb::Provider {
                kind: pb::ProviderKind::ClientCredentials as i32,
                client_id: "c".into(),
                private_key: String::new(),
                token_auth_method: pb::TokenAuthMethod::PrivateKeyJwt as i32,
                ..base()
            },
            "private_key",
        ),
    ];
    let (refusals, count) = f.refused_providers(cases.to_vec()).await;
    for s in refusals {
        assert!(
            !s.message().contains("AAAA"),
            "no key material echoed: {s:?}"
        );
    }
    assert_eq!(count, 0, "nothing was written");

    // Without subject_from_user a user cannot be named; audience does not apply.
    f.create(base()).await;
    for (req, field) in [
        (request("sa", "alice"), "user_id"),
        (
            pb::AuthenticateRequest {
                audience: "api".into(),
                ..request("sa", "")
            },
            "audience",
        ),
        (
            pb::AuthenticateRequest {
                handout: pb::Handout::Reference as i32,
                ..request("sa", "")
            },
            "handout",
        ),
    ] {
        let s = expect_err(
            f.try_authenticate(AGENT_KEY, req).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert!(s.message().contains(field), "{field}: {s:?}");
    }
    assert_eq!(server.issued(), 0);
}
