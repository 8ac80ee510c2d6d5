//! Wire ⇄ domain: request messages into validated domain values (bad input named by field),
//! domain results into response messages. No logic beyond the mapping.

use crate::domain::ProviderDraft;
use crate::domain::{
    AccountId, AgentId, Applied, ConsentFlow, GrantKey, GrantStatus, Handout, HandoutPolicy,
    KindConfig, Location, McpRegistration, ProviderConfig, ProviderId, ProviderKind, Scopes,
    TokenAuthMethod, UserId,
};
use crate::pb;
use crate::secret::{ExposeSecret, SecretString};
use crate::service::{
    AccessToken, AuthRequest, Error, GrantInfo, GrantQuery, MAX_PAGE, Outcome, ProviderRevocation,
    SubjectToken,
};
use std::time::Duration;
use tonic::Request;

/// The grant a request names to act on one that may be stored (a revoke): its ids as an older
/// version may have stored them.
pub(super) fn grant_key(
    provider: &str,
    user: &str,
    agent: &str,
    account: &str,
) -> Result<GrantKey, Error> {
    Ok(GrantKey {
        provider: ProviderId::parse(provider)?,
        user: UserId::existing(user)?,
        agent: optional(agent, AgentId::existing)?,
        account: optional(account, AccountId::existing)?,
    })
}

/// The grant a request stores (an import, a static credential): its ids held to today's rules.
pub(super) fn new_grant_key(
    provider: &str,
    user: &str,
    agent: &str,
    account: &str,
) -> Result<GrantKey, Error> {
    Ok(GrantKey {
        provider: ProviderId::parse(provider)?,
        user: UserId::parse(user)?,
        agent: optional(agent, AgentId::parse)?,
        account: optional_account(account)?,
    })
}

/// An optional id; empty: none.
fn optional<T>(
    s: &str,
    parse: impl FnOnce(&str) -> Result<T, crate::domain::InvalidInput>,
) -> Result<Option<T>, Error> {
    Ok(if s.is_empty() { None } else { Some(parse(s)?) })
}

/// An account label; empty: the default account.
fn optional_account(account: &str) -> Result<Option<AccountId>, Error> {
    optional(account, AccountId::parse)
}

pub(super) fn token(t: AccessToken) -> pb::Token {
    pb::Token {
        access_token: t.token.expose_secret().to_owned(),
        token_type: t.token_type,
        expires_at: t.expires_at,
        scopes: t.scopes.to_vec(),
        missing_scopes: t.missing_scopes.to_vec(),
        metadata: t
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        header: t.header.unwrap_or_default(),
    }
}

pub(super) fn outcome(o: Outcome) -> pb::AuthenticateResponse {
    use pb::authenticate_response::Result as R;
    let result = match o {
        Outcome::Token(t) => R::Token(token(t)),
        Outcome::Completed => R::Completed(pb::Completed {}),
        Outcome::Reference {
            reference,
            expires_at,
        } => R::Reference(pb::Reference {
            reference: reference.expose_secret().to_owned(),
            expires_at,
        }),
        Outcome::Pending {
            auth_url,
            auth_id,
            expires_at,
            prompt,
        } => {
            let (user_code, verification_uri) =
                prompt.map_or_else(Default::default, |p| (p.user_code, p.verification_uri));
            R::Pending(pb::Pending {
                auth_url: auth_url.into_string(),
                auth_id,
                expires_at,
                user_code,
                verification_uri,
            })
        }
    };
    pb::AuthenticateResponse {
        result: Some(result),
    }
}

/// The deadline the client set (`grpc-timeout`), so a wait never outlives its caller.
pub(super) fn grpc_deadline<T>(req: &Request<T>) -> Option<Duration> {
    let raw = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = raw.split_at(raw.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// An Authenticate request as validated domain input.
pub(super) fn auth_request(r: &pb::AuthenticateRequest) -> Result<AuthRequest, Error> {
    let handout = match pb::Handout::try_from(r.handout) {
        Ok(pb::Handout::Unspecified | pb::Handout::Token) if r.single_use => {
            return Err(Error::invalid(
                "single_use",
                "applies to REFERENCE handouts only",
            ));
        }
        Ok(pb::Handout::Unspecified | pb::Handout::Token) => Handout::Token,
        Ok(pb::Handout::Reference) => Handout::Reference {
            single_use: r.single_use,
        },
        Err(_) => return Err(Error::invalid("handout", "unknown handout")),
    };
    let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Ok(AuthRequest {
        provider: ProviderId::parse(&r.provider_id)?,
        user: optional(&r.user_id, UserId::parse)?,
        agent: optional(&r.agent_id, AgentId::parse)?,
        scopes: Scopes::parse("scopes", &r.scopes)?,
        handout,
        min_ttl: r.min_ttl_seconds,
        force_reauth: r.force_reauth,
        audience: text(&r.audience),
        resource: text(&r.resource),
        subject_token: subject_token(&r.subject_token, &r.subject_token_type)?,
        challenged: challenged_scopes(&r.challenge)?.unwrap_or_default(),
        token_refused: refused_token(&r.challenge),
        account: optional_account(&r.account)?,
    })
}

/// Whether a `WWW-Authenticate` Bearer challenge says the token was refused (RFC 6750 section
/// 3.1: `invalid_token`, "expired, revoked, malformed, or invalid").
fn refused_token(header: &str) -> bool {
    crate::mcp::bearer_params(header).is_some_and(|params| {
        params
            .iter()
            .any(|(k, v)| k == "error" && v == "invalid_token")
    })
}

/// The scopes a `WWW-Authenticate` Bearer challenge names (RFC 6750 section 3: `scope`); `None`
/// for an `invalid_token` challenge without them (answered with a new token, not a consent).
fn challenged_scopes(header: &str) -> Result<Option<Scopes>, Error> {
    if header.is_empty() {
        return Ok(None);
    }
    if header.len() > 8192 || header.chars().any(char::is_control) {
        return Err(Error::invalid(
            "challenge",
            "must be at most 8192 characters without control characters",
        ));
    }
    let params = crate::mcp::bearer_params(header).ok_or_else(|| {
        Error::invalid(
            "challenge",
            "holds no Bearer challenge: pass the WWW-Authenticate header value, e.g. Bearer error=\"insufficient_scope\", scope=\"files:read\"",
        )
    })?;
    let scope = params
        .iter()
        .find(|(k, _)| k == "scope")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    if scope.trim().is_empty() {
        if refused_token(header) {
            return Ok(None);
        }
        return Err(Error::invalid(
            "challenge",
            "names no scope: only an insufficient_scope challenge with scope=\"...\" (answered with a consent) or an invalid_token one (answered with a new token) can be answered",
        ));
    }
    Ok(Some(Scopes::parse_spaced("challenge", scope)?))
}

/// An agent-presented RFC 8693 subject token and its type.
fn subject_token(token: &str, kind: &str) -> Result<Option<SubjectToken>, Error> {
    const TYPES: [&str; 3] = [
        "urn:ietf:params:oauth:token-type:access_token",
        "urn:ietf:params:oauth:token-type:id_token",
        "urn:ietf:params:oauth:token-type:jwt",
    ];
    if token.is_empty() {
        if !kind.is_empty() {
            return Err(Error::invalid(
                "subject_token_type",
                "is given without a subject_token",
            ));
        }
        return Ok(None);
    }
    if token.len() > 16384 || token.chars().any(char::is_control) {
        return Err(Error::invalid(
            "subject_token",
            "must be at most 16384 characters without control characters",
        ));
    }
    let kind = if kind.is_empty() { TYPES[0] } else { kind };
    let kind = TYPES.into_iter().find(|t| *t == kind).ok_or_else(|| {
        Error::invalid(
            "subject_token_type",
            format!("must be one of {}", TYPES.join(", ")),
        )
    })?;
    Ok(Some(SubjectToken {
        token: SecretString::from(token.to_owned()),
        kind,
    }))
}

/// ListGrants filters (empty: no filter) and page.
/// The filter of `WatchGrants`: `ListGrants`' without status or paging.
pub(super) fn watch_query(r: &pb::WatchGrantsRequest) -> Result<GrantQuery, Error> {
    grant_query(&pb::ListGrantsRequest {
        provider_id: r.provider_id.clone(),
        user_id: r.user_id.clone(),
        agent_id: r.agent_id.clone(),
        ..Default::default()
    })
}

/// A grant change on the wire; `Err(n)`: `n` changes this watcher missed.
pub(super) fn grant_event(c: Result<crate::audit::GrantChange, u64>) -> pb::GrantEvent {
    use crate::audit::GrantChangeKind as K;
    match c {
        Ok(c) => pb::GrantEvent {
            kind: match c.kind {
                K::Created => pb::GrantEventKind::Created,
                K::Refreshed => pb::GrantEventKind::Refreshed,
                K::NeedsReauth => pb::GrantEventKind::NeedsReauth,
                K::Revoked => pb::GrantEventKind::Revoked,
                K::RefreshFailed => pb::GrantEventKind::RefreshFailed,
                K::ReauthDue => pb::GrantEventKind::ReauthDue,
            } as i32,
            provider_id: c.provider,
            user_id: c.user,
            agent_id: c.agent,
            at: c.at,
            missed: 0,
        },
        Err(missed) => pb::GrantEvent {
            missed,
            ..Default::default()
        },
    }
}

/// A `WatchAuthorization` event: the flow pending, completed, or failed with its reason (the
/// message as a status would carry it).
pub(super) fn authorization_event(r: Result<Outcome, Error>) -> pb::AuthorizationEvent {
    use pb::authorization_event::Event;
    let event = match r {
        Ok(o) => match outcome(o).result {
            Some(pb::authenticate_response::Result::Pending(p)) => Event::Pending(p),
            result => Event::Completed(pb::AuthenticateResponse { result }),
        },
        Err(e) => Event::Failed(pb::AuthorizationFailure {
            reason: crate::transport::wire_reason(e.reason()) as i32,
            message: super::to_status(&e).message().to_owned(),
        }),
    };
    pb::AuthorizationEvent { event: Some(event) }
}

pub(super) fn grant_query(r: &pb::ListGrantsRequest) -> Result<GrantQuery, Error> {
    let provider = optional(&r.provider_id, ProviderId::parse)?;
    // Filters: ids as an older version may have stored them.
    let user = optional(&r.user_id, UserId::existing)?;
    let agent = optional(&r.agent_id, AgentId::existing)?;
    let account = optional(&r.account, AccountId::existing)?;
    let status = match pb::GrantStatus::try_from(r.status) {
        Ok(pb::GrantStatus::Unspecified) => None,
        Ok(pb::GrantStatus::Active) => Some(GrantStatus::Active),
        Ok(pb::GrantStatus::NeedsReauth) => Some(GrantStatus::NeedsReauth),
        Err(_) => return Err(Error::invalid("status", "is not a GrantStatus")),
    };
    let page_size = match r.page_size {
        0 => 100,
        n => usize::try_from(n).unwrap_or(MAX_PAGE).min(MAX_PAGE),
    };
    Ok(GrantQuery {
        provider,
        user,
        agent,
        account,
        status,
        page_size,
        // The page token is opened by the use case (it is sealed).
        after: None,
    })
}

pub(super) fn grant(g: GrantInfo) -> pb::Grant {
    pb::Grant {
        provider_id: g.key.provider.to_string(),
        user_id: g.key.user.to_string(),
        agent_id: g.key.agent.map(|a| a.to_string()).unwrap_or_default(),
        account: g.key.account.map(|a| a.to_string()).unwrap_or_default(),
        email: g.email.unwrap_or_default(),
        scopes: g.scopes.to_vec(),
        subject: g.subject.unwrap_or_default(),
        created_at: g.created_at,
        updated_at: g.updated_at,
        status: match g.status {
            GrantStatus::Active => pb::GrantStatus::Active,
            GrantStatus::NeedsReauth => pb::GrantStatus::NeedsReauth,
        } as i32,
        has_refresh_token: g.has_refresh_token,
        declined_scopes: g.declined.to_vec(),
        metadata: g.metadata.into_iter().collect(),
        kind: g.kind.map_or(pb::ProviderKind::Unspecified, wire_kind) as i32,
        issuer: g.issuer.unwrap_or_default(),
        has_stored_value: g.has_stored_value,
        needs_reauth_at: g.needs_reauth_at,
    }
}

/// The credential ready to put on an HTTP request (the kind decided where and how).
pub(super) fn credential(a: &Applied) -> pb::Credential {
    pb::Credential {
        location: a.location.as_str().into(),
        name: a.name.clone(),
        value: a.value.expose_secret().to_owned(),
    }
}

/// A provider for operators: the kind's settings flattened, the client secret never included.
pub(super) fn provider(p: &ProviderConfig, redirect_uri: String) -> pb::Provider {
    let mut wire = pb::Provider {
        provider_id: p.id.to_string(),
        name: p.name.clone(),
        kind: wire_kind(p.kind.kind()) as i32,
        default_scopes: p.default_scopes.to_vec(),
        redirect_uri,
        handout_policy: match p.handout_policy {
            HandoutPolicy::Any => pb::HandoutPolicy::Any,
            HandoutPolicy::ReferenceOnly => pb::HandoutPolicy::ReferenceOnly,
        } as i32,
        reference_ttl_seconds: p.reference_ttl_seconds,
        profile: p.profile.clone().unwrap_or_default(),
        profile_vars: p.profile_vars.clone().into_iter().collect(),
        egress_hosts: p.egress_hosts.clone(),
        keep_alive_seconds: p.keep_alive_seconds,
        max_grant_age_seconds: p.max_grant_age_seconds,
        ..Default::default()
    };
    if let KindConfig::Static(c) = &p.kind {
        wire.credential_location = match c.location {
            Location::Header => pb::CredentialLocation::Header,
            Location::Query => pb::CredentialLocation::Query,
            Location::Cookie => pb::CredentialLocation::Cookie,
        } as i32;
        wire.credential_name.clone_from(&c.name);
        wire.credential_prefix.clone_from(&c.prefix);
    }
    if let Some(client) = p.kind.oauth_client() {
        wire.client_id = client.client_id.clone();
        wire.has_client_secret = client.client_secret.is_some();
        wire.token_url = client.token_url.to_string();
        wire.token_auth_method = match client.auth_method {
            TokenAuthMethod::ClientSecretBasic => pb::TokenAuthMethod::ClientSecretBasic,
            TokenAuthMethod::ClientSecretPost => pb::TokenAuthMethod::ClientSecretPost,
            TokenAuthMethod::PrivateKeyJwt => pb::TokenAuthMethod::PrivateKeyJwt,
        } as i32;
        signing_key(&mut wire, client.signing_key.as_ref());
        wire.token_exchange = client.token_exchange;
    }
    if let KindConfig::ServiceAccount(s) = &p.kind {
        signing_key(&mut wire, Some(&s.key));
        wire.assertion_issuer.clone_from(&s.issuer);
        wire.assertion_subject = s.subject.clone().unwrap_or_default();
        wire.assertion_audience.clone_from(&s.audience);
        wire.subject_from_user = s.subject_from_user;
    }
    let Some(c) = p.kind.auth_code() else {
        // No redirect for a kind without consent.
        wire.redirect_uri.clear();
        return wire;
    };
    wire.auth_url = c.auth_url.to_string();
    wire.issuer = c.issuer.clone().unwrap_or_default();
    wire.revocation_url = c
        .revocation_url
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    wire.extra_auth_params = c.extra_auth_params.clone().into_iter().collect();
    wire.consent_flow = match c.consent_flow {
        ConsentFlow::Browser => pb::ConsentFlow::Browser,
        ConsentFlow::Device => pb::ConsentFlow::Device,
    } as i32;
    wire.allow_account_change = c.allow_account_change;
    wire.consent_return_url = c
        .consent_return_url
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    wire.device_authorization_url = c
        .device_authorization_url
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    if let Some(m) = &c.mcp {
        wire.mcp_server_url = m.server_url.to_string();
        wire.mcp = Some(pb::McpServer {
            resource: m.resource.clone(),
            issuer: m.issuer.clone(),
            authorization_endpoint: c.auth_url.to_string(),
            token_endpoint: c.client.token_url.to_string(),
            registration_endpoint: m
                .registration_endpoint
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            scopes_supported: m.scopes_supported.clone(),
            registration: match m.registration {
                McpRegistration::PreRegistered => pb::McpRegistration::PreRegistered,
                McpRegistration::MetadataDocument => pb::McpRegistration::MetadataDocument,
                McpRegistration::Dynamic => pb::McpRegistration::Dynamic,
            } as i32,
        });
    }
    wire
}

/// What may be shown of a private key: that it is there, its algorithm and key id.
fn signing_key(wire: &mut pb::Provider, key: Option<&crate::jwt::SigningKey>) {
    if let Some(k) = key {
        wire.has_private_key = true;
        wire.key_algorithm = k.algorithm().into();
        wire.key_id = k.key_id().unwrap_or_default().into();
    }
}

pub(super) fn draft(p: Option<pb::Provider>) -> Result<ProviderDraft, Error> {
    let p = p.ok_or_else(|| Error::invalid("provider", "is required"))?;
    let kind = match pb::ProviderKind::try_from(p.kind) {
        Ok(pb::ProviderKind::Oauth2) => Some(ProviderKind::OAuth2),
        Ok(pb::ProviderKind::Oidc) => Some(ProviderKind::Oidc),
        Ok(pb::ProviderKind::ClientCredentials) => Some(ProviderKind::ClientCredentials),
        Ok(pb::ProviderKind::ApiKey) => Some(ProviderKind::ApiKey),
        Ok(pb::ProviderKind::HttpBasic) => Some(ProviderKind::HttpBasic),
        Ok(pb::ProviderKind::HttpBearer) => Some(ProviderKind::HttpBearer),
        Ok(pb::ProviderKind::ServiceAccount) => Some(ProviderKind::ServiceAccount),
        Ok(pb::ProviderKind::Mcp) => Some(ProviderKind::Mcp),
        Ok(pb::ProviderKind::Unspecified) => None,
        Err(_) => return Err(Error::invalid("kind", "unknown provider kind")),
    };
    let token_auth_method = match pb::TokenAuthMethod::try_from(p.token_auth_method) {
        Ok(pb::TokenAuthMethod::Unspecified) => None,
        Ok(pb::TokenAuthMethod::ClientSecretBasic) => Some(TokenAuthMethod::ClientSecretBasic),
        Ok(pb::TokenAuthMethod::ClientSecretPost) => Some(TokenAuthMethod::ClientSecretPost),
        Ok(pb::TokenAuthMethod::PrivateKeyJwt) => Some(TokenAuthMethod::PrivateKeyJwt),
        Err(_) => return Err(Error::invalid("token_auth_method", "unknown method")),
    };
    let handout_policy = match pb::HandoutPolicy::try_from(p.handout_policy) {
        Ok(pb::HandoutPolicy::Unspecified | pb::HandoutPolicy::Any) => HandoutPolicy::Any,
        Ok(pb::HandoutPolicy::ReferenceOnly) => HandoutPolicy::ReferenceOnly,
        Err(_) => return Err(Error::invalid("handout_policy", "unknown policy")),
    };
    if p.client_secret.len() > 4096 {
        return Err(Error::invalid("client_secret", "is longer than 4096 bytes"));
    }
    // It goes into a header or a form field: a newline or NUL in it is a pasting mistake.
    if p.client_secret.chars().any(char::is_control) {
        return Err(Error::invalid(
            "client_secret",
            "must not contain control characters (a trailing newline from a file?)",
        ));
    }
    if p.private_key.len() > 16384 {
        return Err(Error::invalid("private_key", "is longer than 16384 bytes"));
    }
    Ok(ProviderDraft {
        id: p.provider_id,
        name: p.name,
        kind,
        client_id: p.client_id,
        client_secret: (!p.client_secret.is_empty()).then(|| SecretString::from(p.client_secret)),
        auth_url: p.auth_url,
        token_url: p.token_url,
        issuer: p.issuer,
        revocation_url: p.revocation_url,
        default_scopes: p.default_scopes,
        extra_auth_params: p.extra_auth_params.into_iter().collect(),
        token_auth_method,
        handout_policy,
        reference_ttl_seconds: p.reference_ttl_seconds,
        profile: p.profile,
        profile_vars: p.profile_vars.into_iter().collect(),
        credential_location: match pb::CredentialLocation::try_from(p.credential_location) {
            Ok(pb::CredentialLocation::Unspecified) => None,
            Ok(pb::CredentialLocation::Header) => Some(Location::Header),
            Ok(pb::CredentialLocation::Query) => Some(Location::Query),
            Ok(pb::CredentialLocation::Cookie) => Some(Location::Cookie),
            Err(_) => return Err(Error::invalid("credential_location", "unknown location")),
        },
        credential_name: p.credential_name,
        credential_prefix: p.credential_prefix,
        private_key: (!p.private_key.is_empty()).then(|| SecretString::from(p.private_key)),
        key_id: p.key_id,
        assertion_issuer: p.assertion_issuer,
        assertion_subject: p.assertion_subject,
        assertion_audience: p.assertion_audience,
        subject_from_user: p.subject_from_user,
        consent_flow: match pb::ConsentFlow::try_from(p.consent_flow) {
            Ok(pb::ConsentFlow::Unspecified | pb::ConsentFlow::Browser) => ConsentFlow::Browser,
            Ok(pb::ConsentFlow::Device) => ConsentFlow::Device,
            Err(_) => return Err(Error::invalid("consent_flow", "unknown consent flow")),
        },
        device_authorization_url: p.device_authorization_url,
        token_exchange: p.token_exchange,
        consent_return_url: p.consent_return_url,
        allow_account_change: p.allow_account_change,
        mcp_server_url: p.mcp_server_url,
        egress_hosts: p.egress_hosts,
        keep_alive_seconds: p.keep_alive_seconds,
        max_grant_age_seconds: p.max_grant_age_seconds,
        ..ProviderDraft::default()
    })
}

/// What the provider said about revoking a grant's tokens.
pub(super) fn provider_revocation(r: ProviderRevocation) -> (pb::ProviderRevocation, String) {
    match r {
        ProviderRevocation::NotSupported => (pb::ProviderRevocation::NotSupported, String::new()),
        ProviderRevocation::NothingToRevoke => {
            (pb::ProviderRevocation::NothingToRevoke, String::new())
        }
        ProviderRevocation::Revoked => (pb::ProviderRevocation::Revoked, String::new()),
        ProviderRevocation::Failed(why) => (pb::ProviderRevocation::Failed, why),
    }
}

fn wire_kind(k: ProviderKind) -> pb::ProviderKind {
    match k {
        ProviderKind::OAuth2 => pb::ProviderKind::Oauth2,
        ProviderKind::Oidc => pb::ProviderKind::Oidc,
        ProviderKind::ClientCredentials => pb::ProviderKind::ClientCredentials,
        ProviderKind::ApiKey => pb::ProviderKind::ApiKey,
        ProviderKind::HttpBasic => pb::ProviderKind::HttpBasic,
        ProviderKind::HttpBearer => pb::ProviderKind::HttpBearer,
        ProviderKind::ServiceAccount => pb::ProviderKind::ServiceAccount,
        ProviderKind::Mcp => pb::ProviderKind::Mcp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_an_older_version_stored_may_be_named_to_look_up_but_not_to_store() {
        let old = "alice\u{200b}";
        // Revoke and the list filters take ids as an older version may have stored them.
        let key = grant_key("idp", old, old, old).unwrap();
        assert_eq!(key.user.as_str(), old);
        assert_eq!(key.agent.unwrap().as_str(), old);
        assert_eq!(key.account.unwrap().as_str(), old);
        let q = grant_query(&pb::ListGrantsRequest {
            user_id: old.into(),
            agent_id: old.into(),
            account: old.into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(q.user.unwrap().as_str(), old);
        assert_eq!(q.agent.unwrap().as_str(), old);
        assert_eq!(q.account.unwrap().as_str(), old);
        // What stores a grant, or asks for one, holds it to today's rule.
        for (user, agent, account, field) in [
            (old, "", "", "user_id"),
            ("alice", old, "", "agent_id"),
            ("alice", "", old, "account"),
        ] {
            let e = new_grant_key("idp", user, agent, account).unwrap_err();
            assert!(e.to_string().contains(field), "{e}");
            let asked = auth_request(&pb::AuthenticateRequest {
                provider_id: "idp".into(),
                user_id: user.into(),
                agent_id: agent.into(),
                account: account.into(),
                ..Default::default()
            });
            assert!(asked.unwrap_err().to_string().contains(field));
        }
        // Control characters are refused either way.
        assert!(grant_key("idp", "a\u{0}b", "", "").is_err());
    }
}
