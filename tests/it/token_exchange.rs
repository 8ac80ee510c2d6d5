//! Token exchange (RFC 8693) against an authorization server double that follows the RFC
//! (`Family::Rfc8693`, no real one runs here): a user's grant token exchanged for a narrower or
//! other-audience token, cached per (grant, audience, resource, scopes) and never served once the
//! grant is gone; and on-behalf-of, where the agent presents its own subject token.

use crate::support::daemon::AGENT_KEY;
use crate::support::providers::{CLIENT_SECRET, Family, ProviderDouble, client_id};
use crate::support::{Fixture, expect_err, pending, token};
use tonic::Code;
use valet::pb;

const B: &str = "https://api.b.example";
const C: &str = "https://api.c.example";

fn provider(d: &ProviderDouble, id: &str, kind: pb::ProviderKind, exchange: bool) -> pb::Provider {
    let consent = kind == pb::ProviderKind::Oauth2;
    pb::Provider {
        provider_id: id.into(),
        kind: kind as i32,
        client_id: client_id().into(),
        client_secret: CLIENT_SECRET.into(),
        auth_url: if consent { d.auth_url() } else { String::new() },
        token_url: d.token_url(),
        default_scopes: vec!["files.read".into(), "files.write".into()],
        token_exchange: exchange,
        ..Default::default()
    }
}

/// Follows the double's instant consent to the daemon's callback.
async fn consent(auth_url: &str) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http.get(auth_url).send().await.unwrap();
    let callback = resp.headers()["location"].to_str().unwrap().to_owned();
    let page = http.get(callback).send().await.unwrap();
    assert!(page.status().is_success());
}

fn for_audience(audience: &str, scopes: &[&str]) -> pb::AuthenticateRequest {
    pb::AuthenticateRequest {
        audience: audience.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..Fixture::request("xchg", "alice", "")
    }
}

#[tokio::test]
async fn a_grant_token_is_exchanged_per_audience_cached_and_dies_with_the_grant() {
    let f = Fixture::new().await;
    let d = ProviderDouble::start(Family::Rfc8693).await;
    f.create(provider(&d, "xchg", pb::ProviderKind::Oauth2, true))
        .await;

    // No grant yet: the user consents first (to the scopes asked), then the exchange happens.
    let p = pending(
        f.authenticate(AGENT_KEY, for_audience(B, &["files.read"]))
            .await,
    );
    consent(&p.auth_url).await;
    token(f.wait(&p.auth_id).await.unwrap().into_inner());
    assert!(
        d.exchanges().is_empty(),
        "no exchange before the grant exists"
    );

    let b = token(
        f.authenticate(AGENT_KEY, for_audience(B, &["files.read"]))
            .await,
    );
    assert!(
        b.access_token.contains("-for-https://api.b.example-"),
        "{}",
        b.access_token
    );
    assert_eq!(b.scopes, ["files.read"]);
    let again = token(
        f.authenticate(AGENT_KEY, for_audience(B, &["files.read"]))
            .await,
    );
    assert_eq!(again.access_token, b.access_token, "cached per target");
    let c = token(
        f.authenticate(AGENT_KEY, for_audience(C, &["files.read"]))
            .await,
    );
    assert_ne!(c.access_token, b.access_token);
    let exchanges = d.exchanges();
    assert_eq!(exchanges.len(), 2);
    assert!(
        exchanges[0].0.starts_with("access-"),
        "the grant's token was the subject"
    );
    assert_eq!(
        (exchanges[0].1.as_str(), exchanges[0].3.as_str()),
        (B, "files.read")
    );

    // The provider's refusals are named.
    for (req, code) in [
        (for_audience(B, &["files.admin"]), "invalid_scope"),
        (
            for_audience("https://not-served.example", &["files.read"]),
            "invalid_target",
        ),
    ] {
        let s = expect_err(
            f.try_authenticate(AGENT_KEY, req).await,
            Code::FailedPrecondition,
            "PROVIDER_REJECTED",
        );
        assert!(s.message().contains(code), "{code}: {s:?}");
    }
    let s = expect_err(
        f.try_authenticate(
            AGENT_KEY,
            pb::AuthenticateRequest {
                handout: pb::Handout::Reference as i32,
                ..for_audience(B, &["files.read"])
            },
        )
        .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert!(s.message().contains("handout"), "{s:?}");

    // Revoking the grant ends its exchanged tokens too: the next call asks for consent.
    let revoked = f
        .valet
        .credentials(AGENT_KEY)
        .await
        .revoke(pb::RevokeRequest {
            provider_id: "xchg".into(),
            user_id: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked);
    pending(
        f.authenticate(AGENT_KEY, for_audience(B, &["files.read"]))
            .await,
    );
    assert!(!f.valet.logs().contains(&b.access_token));
}

/// Each grant's exchanged tokens are its own: another account of the same user exchanges its own
/// token, and no user id a caller can name reaches the cache slot of another grant's exchange
/// (it used to be keyed by a user id `=client/<digest of audience, grant and scopes>`).
#[tokio::test]
async fn exchanged_tokens_stay_with_the_grant_they_came_from() {
    let f = Fixture::new().await;
    let d = ProviderDouble::start(Family::Rfc8693).await;
    f.create(provider(&d, "xchg", pb::ProviderKind::Oauth2, true))
        .await;
    let on = |account: &str| pb::AuthenticateRequest {
        account: account.into(),
        ..for_audience(B, &["files.read"])
    };
    for account in ["", "work"] {
        let p = pending(f.authenticate(AGENT_KEY, on(account)).await);
        consent(&p.auth_url).await;
        token(f.wait(&p.auth_id).await.unwrap().into_inner());
    }
    let default = token(f.authenticate(AGENT_KEY, on("")).await);
    let work = token(f.authenticate(AGENT_KEY, on("work")).await);
    assert_ne!(default.access_token, work.access_token);
    let subjects: Vec<String> = d.exchanges().into_iter().map(|e| e.0).collect();
    assert_eq!(subjects.len(), 2, "each account exchanged its own token");
    assert_ne!(subjects[0], subjects[1]);

    // The old slot of alice's default-account exchange, named as a user: a grant of nobody, so
    // a consent starts; the exchanged token is not handed out.
    let mut slot = String::new();
    for part in [B, "", "grant/alice/", "files.read"] {
        slot.push_str(part);
        slot.push('\0');
    }
    let digest = hex::encode(valet::secret::sha256(slot.as_bytes()));
    let spoof = pb::AuthenticateRequest {
        user_id: format!("=client/{digest}"),
        scopes: vec!["files.read".into()],
        ..Fixture::request("xchg", "alice", "")
    };
    pending(f.authenticate(AGENT_KEY, spoof).await);
}

#[tokio::test]
async fn an_agent_presented_token_is_exchanged_on_behalf_of_its_user() {
    let f = Fixture::new().await;
    let d = ProviderDouble::start(Family::Rfc8693).await;
    f.create(provider(
        &d,
        "obo",
        pb::ProviderKind::ClientCredentials,
        true,
    ))
    .await;
    f.create(provider(
        &d,
        "plain",
        pb::ProviderKind::ClientCredentials,
        false,
    ))
    .await;
    let subject = d.mint(&["files.read", "files.write"]);
    let obo = |provider: &str, subject: &str, kind: &str| pb::AuthenticateRequest {
        provider_id: provider.into(),
        subject_token: subject.into(),
        subject_token_type: kind.into(),
        audience: B.into(),
        scopes: vec!["files.read".into()],
        ..Default::default()
    };
    let t = token(f.authenticate(AGENT_KEY, obo("obo", &subject, "")).await);
    assert!(
        t.access_token.starts_with("exchanged-"),
        "{}",
        t.access_token
    );
    let again = token(f.authenticate(AGENT_KEY, obo("obo", &subject, "")).await);
    assert_eq!(
        again.access_token, t.access_token,
        "cached per subject token"
    );
    let other = d.mint(&["files.read"]);
    let t2 = token(f.authenticate(AGENT_KEY, obo("obo", &other, "")).await);
    assert_ne!(
        t2.access_token, t.access_token,
        "another subject, another token"
    );
    let exchanges = d.exchanges();
    assert_eq!(exchanges.len(), 2);
    assert_eq!(exchanges[0].0, subject);

    // A subject token the provider does not know is its refusal; bad input is ours.
    let s = expect_err(
        f.try_authenticate(AGENT_KEY, obo("obo", "forged-token", ""))
            .await,
        Code::FailedPrecondition,
        "PROVIDER_REJECTED",
    );
    assert!(s.message().contains("invalid_request"), "{s:?}");
    for (req, field) in [
        (obo("plain", &subject, ""), "subject_token"),
        (
            obo("obo", &subject, "urn:example:unknown"),
            "subject_token_type",
        ),
        (
            obo("obo", "", "urn:ietf:params:oauth:token-type:jwt"),
            "subject_token_type",
        ),
    ] {
        let s = expect_err(
            f.try_authenticate(AGENT_KEY, req).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert!(s.message().contains(field), "{field}: {s:?}");
        assert!(!s.message().contains(&subject), "never echoed");
    }
    let logs = f.valet.logs();
    assert!(!logs.contains(&subject) && !logs.contains(&t.access_token));
}
