//! MCP servers as providers, against the real OpenID provider acting as the authorization
//! server (dynamic registration, resource indicators, JWT access tokens) and the MCP server
//! doubles the same peer serves (`tests/peers/oidc/provider.mjs`: they answer as the MCP
//! authorization spec 2025-11-25 and RFC 9728 say, and accept only tokens whose audience is
//! their own resource).

use crate::support::daemon::AGENT_KEY;
use crate::support::{Fixture, ValetOptions, expect_err, pending, reference, token};
use tonic::Code;
use valet::pb;

/// The daemon may fetch from the loopback peer (the harness's default, said here).
fn allow_loopback() -> ValetOptions {
    ValetOptions {
        allow_private_networks: true,
        ..Default::default()
    }
}

fn mcp_provider(id: &str, url: &str) -> pb::Provider {
    pb::Provider {
        provider_id: id.into(),
        kind: pb::ProviderKind::Mcp as i32,
        mcp_server_url: url.into(),
        ..Default::default()
    }
}

async fn create(f: &Fixture, p: pb::Provider) -> Result<pb::Provider, tonic::Status> {
    f.valet
        .providers()
        .await
        .create_provider(pb::CreateProviderRequest { provider: Some(p) })
        .await
        .map(tonic::Response::into_inner)
}

/// Refused with INVALID_ARGUMENT naming `mcp_server_url`, and nothing stored.
async fn refused(f: &Fixture, id: &str, url: &str, needle: &str) {
    let s = expect_err(
        f.valet
            .providers()
            .await
            .create_provider(pb::CreateProviderRequest {
                provider: Some(mcp_provider(id, url)),
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert!(s.message().contains(needle), "{needle:?} in {s:?}");
    assert!(!s.message().contains("canary"), "{s:?}");
    let got = f
        .valet
        .providers()
        .await
        .get_provider(pb::GetProviderRequest {
            provider_id: id.into(),
        })
        .await;
    assert_eq!(got.unwrap_err().code(), Code::NotFound, "nothing stored");
}

#[tokio::test]
async fn from_an_mcp_server_url_to_a_token_that_server_accepts_and_no_other() {
    let f = Fixture::with(allow_loopback()).await;
    let notes = create(&f, mcp_provider("notes", &f.idp.mcp_url("mcp")))
        .await
        .unwrap();
    let m = notes.mcp.clone().expect("discovered metadata");
    assert_eq!(m.resource, f.idp.mcp_url("mcp"));
    assert_eq!(m.issuer, f.idp.issuer);
    assert_eq!(m.registration, pb::McpRegistration::Dynamic as i32);
    assert_eq!(m.registration_endpoint, format!("{}/reg", f.idp.issuer));
    assert_eq!(m.scopes_supported, ["mcp.read", "mcp.write"]);
    assert!(!notes.client_id.is_empty(), "registered dynamically");
    assert_eq!(
        notes.default_scopes,
        ["mcp.read"],
        "the 401 challenge's scope"
    );
    assert_eq!(notes.egress_hosts, ["127.0.0.1"], "the server's host");

    let first = f
        .authorize(AGENT_KEY, Fixture::request("notes", "alice", ""))
        .await;
    assert_eq!(
        f.idp.call_mcp("mcp", &first.access_token).await.status(),
        200
    );
    // Bound to its resource: the other MCP server refuses it.
    assert_eq!(
        f.idp.call_mcp("mcp2", &first.access_token).await.status(),
        401
    );

    // Refreshed with `resource`: the new token is still the server's.
    let refreshed = token(
        f.authenticate(AGENT_KEY, Fixture::refresh_request("notes", "alice", ""))
            .await,
    );
    assert_ne!(refreshed.access_token, first.access_token);
    assert_eq!(
        f.idp
            .call_mcp("mcp", &refreshed.access_token)
            .await
            .status(),
        200
    );

    // A second MCP server: its own registration, grant and tokens.
    let other = create(&f, mcp_provider("notes2", &f.idp.mcp_url("mcp2")))
        .await
        .unwrap();
    assert_ne!(other.client_id, notes.client_id);
    let second = f
        .authorize(AGENT_KEY, Fixture::request("notes2", "alice", ""))
        .await;
    assert_eq!(
        f.idp.call_mcp("mcp2", &second.access_token).await.status(),
        200
    );
    assert_eq!(
        f.idp.call_mcp("mcp", &second.access_token).await.status(),
        401
    );
    let again = token(
        f.authenticate(AGENT_KEY, Fixture::request("notes", "alice", ""))
            .await,
    );
    assert_eq!(
        again.access_token, refreshed.access_token,
        "each server its own token"
    );
    // The server refuses a token with a 401 invalid_token challenge (here one it never issued):
    // passed back, it gets a new token (a refresh), not the cached one again.
    let refused = f.idp.call_mcp("mcp", "not-a-token").await;
    assert_eq!(refused.status(), 401);
    let challenge = refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.contains("invalid_token"), "{challenge}");
    let renewed = token(
        f.authenticate(
            AGENT_KEY,
            pb::AuthenticateRequest {
                challenge,
                ..Fixture::request("notes", "alice", "")
            },
        )
        .await,
    );
    assert_ne!(renewed.access_token, again.access_token);
    assert_eq!(
        f.idp.call_mcp("mcp", &renewed.access_token).await.status(),
        200
    );

    // An update sending back what GetProvider showed keeps the registration.
    let updated = f
        .valet
        .providers()
        .await
        .update_provider(pb::UpdateProviderRequest {
            provider: Some(pb::Provider {
                name: "Notes".into(),
                ..notes.clone()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.client_id, notes.client_id);
    assert_eq!(
        updated.mcp.unwrap().registration,
        pb::McpRegistration::Dynamic as i32
    );
    // `valet provider get` says what Valet did: a public client it registered itself, with its
    // redirect URI already there (not "register this at the provider").
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_valet"))
        .args(["provider", "get", "notes"])
        .env("VALET_SERVER", &f.valet.grpc_url)
        .env("VALET_KEY", crate::support::daemon::ADMIN_KEY)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("token_auth_method: none (a public client: it names itself)")
            && text.contains("(registered by Valet with the authorization server)")
            && !text.contains("register this at the provider"),
        "{text}"
    );

    // Revoked at the authorization server: the refresh token is, and the access token (a JWT
    // for the resource) is of a type it cannot revoke (`unsupported_token_type`, RFC 7009
    // section 2.2.1): the grant is over there all the same, not a failed revocation.
    let r = f.revoke_at("notes", "alice").await;
    assert!(r.revoked);
    assert_eq!(
        (r.provider_revocation, r.provider_error.as_str()),
        (pb::ProviderRevocation::Revoked as i32, ""),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_challenge_without_resource_metadata_falls_back_to_the_well_known_url() {
    let f = Fixture::with(allow_loopback()).await;
    f.idp.mcp_settings("no_header=1").await;
    let p = create(&f, mcp_provider("notes", &f.idp.mcp_url("mcp")))
        .await
        .unwrap();
    assert_eq!(p.mcp.unwrap().resource, f.idp.mcp_url("mcp"));
    assert_eq!(
        p.default_scopes,
        ["mcp.read", "mcp.write"],
        "scopes_supported"
    );
    f.idp.mcp_settings("reset=1").await;
}

#[tokio::test]
async fn servers_and_authorization_servers_that_break_the_rules_are_refused() {
    let f = Fixture::with(allow_loopback()).await;
    let url = |n: &str| f.idp.mcp_url(n);
    refused(&f, "a", &url("mcp-nopkce"), "does not advertise PKCE S256").await;
    refused(&f, "b", &url("mcp-plain"), "does not advertise PKCE S256").await;
    refused(&f, "c", &url("mcp-redirect"), "redirects are not followed").await;
    refused(&f, "d", &url("mcp-big"), "is larger than").await;
    refused(
        &f,
        "e",
        &url("mcp-wrong-resource"),
        "is for https://elsewhere.example/mcp",
    )
    .await;
    refused(&f, "f", "https://mcp.example/mcp#frag", "fragment").await;
    refused(&f, "g", "ftp://mcp.example/mcp", "is not an https URL").await;
    // Credentials in the URL: refused, and not echoed.
    refused(
        &f,
        "i",
        "https://user:pw-canary@mcp.example/mcp",
        "user name or password",
    )
    .await;
    let s = expect_err(
        f.valet
            .providers()
            .await
            .create_provider(pb::CreateProviderRequest {
                provider: Some(pb::Provider {
                    token_url: "https://elsewhere.example/token".into(),
                    ..mcp_provider("h", &url("mcp"))
                }),
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert!(s.message().contains("token_url"), "{s:?}");
}

#[tokio::test]
async fn discovery_never_reaches_a_private_address_unless_allowed() {
    let f = Fixture::with(ValetOptions {
        allow_private_networks: false,
        ..Default::default()
    })
    .await;
    refused(&f, "notes", &f.idp.mcp_url("mcp"), "allow_private_networks").await;
    // OpenID discovery goes through the same guard.
    let s = expect_err(
        f.valet
            .providers()
            .await
            .create_provider(pb::CreateProviderRequest {
                provider: Some(pb::Provider {
                    provider_id: "idp".into(),
                    kind: pb::ProviderKind::Oidc as i32,
                    client_id: "basic-client".into(),
                    client_secret: "s".into(),
                    issuer: f.idp.issuer.clone(),
                    ..Default::default()
                }),
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert!(s.message().contains("allow_private_networks"), "{s:?}");
    refused(
        &f,
        "meta",
        "https://169.254.169.254/latest/meta-data",
        "allow_private_networks",
    )
    .await;
}

#[tokio::test]
async fn a_token_is_resolved_only_for_a_host_on_the_egress_list() {
    let f = Fixture::with(allow_loopback()).await;
    create(&f, mcp_provider("notes", &f.idp.mcp_url("mcp")))
        .await
        .unwrap();
    f.authorize(AGENT_KEY, Fixture::request("notes", "alice", ""))
        .await;
    let reference = reference(
        f.authenticate(
            AGENT_KEY,
            pb::AuthenticateRequest {
                handout: pb::Handout::Reference as i32,
                ..Fixture::request("notes", "alice", "")
            },
        )
        .await,
    )
    .reference;
    let mut creds = f.valet.credentials(AGENT_KEY).await;
    let resolve = |target: &str| pb::ResolveRequest {
        reference: reference.clone(),
        min_ttl_seconds: 0,
        target_url: target.into(),
    };
    let s = expect_err(
        creds
            .resolve(resolve("https://attacker.example/collect"))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert!(s.message().contains("egress_hosts"), "{s:?}");
    assert!(
        !s.message().contains("attacker"),
        "input is not echoed: {s:?}"
    );
    expect_err(
        creds.resolve(resolve("not a url")).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    let ok = creds
        .resolve(resolve(&f.idp.mcp_url("mcp")))
        .await
        .unwrap()
        .into_inner();
    let t = ok.token.unwrap();
    assert_eq!(f.idp.call_mcp("mcp", &t.access_token).await.status(), 200);
}

#[tokio::test]
async fn an_insufficient_scope_challenge_runs_an_incremental_consent_with_a_cap() {
    let f = Fixture::with(allow_loopback()).await;
    create(&f, mcp_provider("notes", &f.idp.mcp_url("mcp")))
        .await
        .unwrap();
    let read = f
        .authorize(AGENT_KEY, Fixture::request("notes", "alice", ""))
        .await;
    f.idp.mcp_settings("require_scope=mcp.read+mcp.write").await;
    let answer = f.idp.call_mcp("mcp", &read.access_token).await;
    assert_eq!(answer.status(), 403);
    let challenge = answer.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
    let with_challenge = |challenge: &str| pb::AuthenticateRequest {
        challenge: challenge.into(),
        ..Fixture::request("notes", "alice", "")
    };
    let both = token(f.complete_flow(AGENT_KEY, with_challenge(&challenge)).await);
    let mut scopes = both.scopes.clone();
    scopes.sort();
    assert_eq!(scopes, ["mcp.read", "mcp.write"]);
    assert_eq!(
        f.idp.call_mcp("mcp", &both.access_token).await.status(),
        200
    );
    f.idp.mcp_settings("reset=1").await;

    // Retries while the consent waits join it: one consent, one link.
    let never = r#"Bearer error="insufficient_scope", scope="mcp.read mcp.admin""#;
    let first = pending(f.authenticate(AGENT_KEY, with_challenge(never)).await);
    for _ in 0..3 {
        let again = pending(f.authenticate(AGENT_KEY, with_challenge(never)).await);
        assert_eq!(again.auth_id, first.auth_id);
    }
    // The consent gives no mcp.admin: asked again, the token is handed out naming what is
    // missing rather than sending the user through consent again.
    f.browser.consent(&first.auth_url, "alice").await;
    token(f.wait(&first.auth_id).await.unwrap().into_inner());
    let served = token(f.authenticate(AGENT_KEY, with_challenge(never)).await);
    assert_eq!(served.missing_scopes, ["mcp.admin"]);
    // Consents started again and again (forced): three in all, then refused.
    let forced = || pb::AuthenticateRequest {
        force_reauth: true,
        ..with_challenge(never)
    };
    for _ in 0..2 {
        pending(f.authenticate(AGENT_KEY, forced()).await);
    }
    let s = expect_err(
        f.try_authenticate(AGENT_KEY, forced()).await,
        Code::ResourceExhausted,
        "RESOURCE_EXHAUSTED",
    );
    assert!(s.message().contains("3 times"), "{s:?}");

    for (bad, needle) in [
        ("Basic realm=\"api\"", "no Bearer challenge"),
        ("Bearer realm=\"api\"", "names no scope"),
    ] {
        let s = expect_err(
            f.try_authenticate(AGENT_KEY, with_challenge(bad)).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert!(s.message().contains(needle), "{needle}: {s:?}");
    }
}

#[tokio::test]
async fn with_an_https_public_url_valet_is_a_client_by_its_metadata_document() {
    let f = Fixture::with(ValetOptions {
        top_toml: "public_url = \"https://valet.example\"".into(),
        ..allow_loopback()
    })
    .await;
    let p = create(&f, mcp_provider("notes", &f.idp.mcp_url("mcp")))
        .await
        .unwrap();
    let url = "https://valet.example/oauth/client-metadata/notes";
    assert_eq!(p.client_id, url, "the client id is the document's URL");
    assert_eq!(
        p.mcp.unwrap().registration,
        pb::McpRegistration::MetadataDocument as i32
    );
    // What the authorization server fetches from that URL (served by Valet's HTTP listener).
    let http = reqwest::Client::new();
    let served = http
        .get(format!(
            "http://{}/oauth/client-metadata/notes",
            f.valet.http_addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    let doc: serde_json::Value = served.json().await.unwrap();
    assert_eq!(doc["client_id"], url);
    assert_eq!(
        doc["redirect_uris"],
        serde_json::json!(["https://valet.example/oauth/callback/notes"])
    );
    assert_eq!(doc["token_endpoint_auth_method"], "none");
    assert_eq!(doc["application_type"], "web");
    assert!(doc.get("client_secret").is_none());
    let missing = http
        .get(format!(
            "http://{}/oauth/client-metadata/other",
            f.valet.http_addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn a_server_that_moves_to_another_authorization_server_is_registered_there_anew() {
    let f = Fixture::with(allow_loopback()).await;
    let before = create(&f, mcp_provider("notes", &f.idp.mcp_url("mcp")))
        .await
        .unwrap();
    let old = f
        .authorize(AGENT_KEY, Fixture::request("notes", "alice", ""))
        .await;
    // The same kind of server, behind another authorization server (a second peer).
    let other_as = crate::support::idp::Idp::start(&[]);
    let moved = f
        .valet
        .providers()
        .await
        .update_provider(pb::UpdateProviderRequest {
            provider: Some(pb::Provider {
                mcp_server_url: other_as.mcp_url("mcp"),
                client_id: before.client_id.clone(),
                ..mcp_provider("notes", "")
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let m = moved.mcp.unwrap();
    assert_eq!(m.issuer, other_as.issuer);
    assert_eq!(m.registration, pb::McpRegistration::Dynamic as i32);
    assert_eq!(m.registration_endpoint, format!("{}/reg", other_as.issuer));
    assert_ne!(
        moved.client_id, before.client_id,
        "a registration is never reused at another authorization server"
    );
    // The grant and token minted for the old server are gone: consent again.
    assert!(f.grants("alice").await.is_empty());
    let again = f
        .authenticate(AGENT_KEY, Fixture::request("notes", "alice", ""))
        .await;
    assert!(
        matches!(
            again.result,
            Some(pb::authenticate_response::Result::Pending(_))
        ),
        "not the old server's token {}: {again:?}",
        old.access_token.len()
    );
}
