//! `[[callers]]`: who may call the daemon. Each entry names a caller, its role, and the SHA-256
//! of its API key; the key itself is never configured, so a leaked config grants nothing.

use super::raw::RawConfig;
use crate::assertion::AssertionConfig;
use crate::domain::{AgentBinding, Role};
use std::fmt::Write as _;

#[derive(Debug, Clone)]
pub struct CallerConfig {
    pub name: String,
    pub role: Role,
    pub key_sha256: [u8; 32],
    /// While its key is rotated: the old key's hash, accepted as this caller too.
    pub previous_key_sha256: Option<[u8; 32]>,
    pub agents: AgentBinding,
    pub require_user_assertion: bool,
    /// Requests per second (bursts of twice that); 0: unlimited.
    pub rate_limit: u32,
    /// Watch streams open at once; 0: unlimited.
    pub max_watches: u32,
    /// On the Unix socket, the peer uid that is this caller.
    pub unix_uid: Option<u32>,
    /// The client-certificate SAN (URI or DNS) that is this caller.
    pub tls_identity: Option<String>,
}

/// `[grpc_tls]`: the gRPC listener's certificate, and the CA client certificates are checked
/// against (mTLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcTls {
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
    pub client_ca_file: Option<std::path::PathBuf>,
}

/// The default per-caller rate: far above any agent's need, low enough to blunt a runaway loop.
const DEFAULT_RATE_LIMIT: u32 = 200;

/// The default number of watch streams a caller may hold open: far above one per pending flow of
/// a busy agent, low enough that a loop opening streams without a deadline cannot pile up
/// memory until the daemon is killed.
const DEFAULT_MAX_WATCHES: u32 = 10_000;

/// Names Valet gives its own identities (the admin key of `--admin-key-file` and dev mode).
const RESERVED_NAMES: &[&str] = &["admin"];

/// Validates the list; every problem goes to `errors`, and an entry with a bad role or hash is
/// left out. Outside dev mode a daemon with no caller (and no admin key file) could never be
/// used, so that is a problem too.
pub(super) fn validate(raw: &RawConfig, errors: &mut Vec<String>) -> Vec<CallerConfig> {
    let mut callers: Vec<CallerConfig> = Vec::new();
    for (i, c) in raw.callers.iter().enumerate() {
        let role = match c.role.as_str() {
            "admin" => Role::Admin,
            "agent" => Role::Agent,
            other => {
                errors.push(format!(
                    "callers[{i}].role = {other:?}: expected \"admin\" or \"agent\""
                ));
                continue;
            }
        };
        if c.name.is_empty() || c.name.len() > 64 || c.name.chars().any(char::is_control) {
            errors.push(format!("callers[{i}].name must be 1-64 characters"));
        }
        if RESERVED_NAMES.contains(&c.name.as_str()) {
            errors.push(format!(
                "callers[{i}].name {:?} is reserved for the admin key (--admin-key-file or dev mode); choose another",
                c.name
            ));
        }
        let agents = match (&c.agents, role) {
            (Some(patterns), _) => match AgentBinding::parse(patterns) {
                Ok(b) => b,
                Err(e) => {
                    errors.push(format!("callers[{i}].agents: {e}"));
                    continue;
                }
            },
            (None, Role::Admin) => AgentBinding::Any,
            (None, Role::Agent) => AgentBinding::Only(std::sync::Arc::default()),
        };
        let mut hash = [0u8; 32];
        if hex::decode_to_slice(&c.key_sha256, &mut hash).is_err() {
            errors.push(format!(
                "callers[{i}].key_sha256 must be 64 hex characters (run `valet key new`)"
            ));
            continue;
        }
        if let Some(uid) = c.unix_uid
            && callers.iter().any(|k| k.unix_uid == Some(uid))
        {
            errors.push(format!("callers[{i}].unix_uid {uid} is used twice"));
        }
        // One certificate identity would be two callers: the first would win, whatever its role.
        if let Some(identity) = &c.tls_identity
            && callers
                .iter()
                .any(|k| k.tls_identity.as_ref() == Some(identity))
        {
            errors.push(format!(
                "callers[{i}].tls_identity {identity:?} is used twice; give each caller its own client certificate"
            ));
        }
        let mut previous = None;
        if let Some(text) = &c.previous_key_sha256 {
            let mut old = [0u8; 32];
            if hex::decode_to_slice(text, &mut old).is_err() {
                errors.push(format!(
                    "callers[{i}].previous_key_sha256 must be 64 hex characters (the key_sha256 being replaced)"
                ));
            } else if old == hash {
                errors.push(format!(
                    "callers[{i}].previous_key_sha256 is its key_sha256: give the new key's hash as key_sha256 (`valet key new`)"
                ));
            } else {
                previous = Some(old);
            }
        }
        let holds =
            |k: &CallerConfig, h: [u8; 32]| k.key_sha256 == h || k.previous_key_sha256 == Some(h);
        if let Some(same) = callers
            .iter()
            .find(|k| holds(k, hash) || previous.is_some_and(|p| holds(k, p)))
        {
            errors.push(format!(
                "callers[{i}].key_sha256 is also the key of caller {:?}: one key would be two callers; give each its own (`valet key new`)",
                same.name
            ));
        }
        if callers.iter().any(|k| k.name == c.name) {
            errors.push(format!("callers[{i}].name {:?} is used twice", c.name));
        }
        callers.push(CallerConfig {
            name: c.name.clone(),
            role,
            key_sha256: hash,
            previous_key_sha256: previous,
            agents,
            require_user_assertion: c.require_user_assertion,
            rate_limit: c.rate_limit.unwrap_or(DEFAULT_RATE_LIMIT),
            max_watches: c.max_watches.unwrap_or(DEFAULT_MAX_WATCHES),
            unix_uid: c.unix_uid,
            tls_identity: c.tls_identity.clone(),
        });
    }
    // Entries that are there but refused above are not "no callers".
    if raw.callers.is_empty()
        && !raw.dev.unwrap_or(false)
        && !raw.store_only
        && raw.admin_key_file.is_none()
    {
        errors.push("no callers are configured: add [[callers]] entries, pass --admin-key-file, or run with --dev".into());
    }
    callers
}

/// `[[callers]]`, as TOML. Only a prefix of each hash is shown: enough to tell entries apart.
pub(super) fn render(callers: &[CallerConfig], s: &mut String) {
    for c in callers {
        let role = match c.role {
            Role::Admin => "admin",
            Role::Agent => "agent",
        };
        let agents = match &c.agents {
            AgentBinding::Any => "[\"*\"]".to_owned(),
            AgentBinding::Only(p) => format!("{p:?}"),
        };
        let _ = writeln!(
            s,
            "\n[[callers]]\nname = {}\nrole = \"{role}\"\nkey_sha256 = \"{}…(redacted)\"\nagents = {agents}",
            toml::Value::from(c.name.as_str()),
            &crate::secret::hex(&c.key_sha256)[..8]
        );
        if let Some(previous) = &c.previous_key_sha256 {
            let _ = writeln!(
                s,
                "previous_key_sha256 = \"{}…(redacted)\"",
                &crate::secret::hex(previous)[..8]
            );
        }
        if c.require_user_assertion {
            let _ = writeln!(s, "require_user_assertion = true");
        }
        if let Some(uid) = c.unix_uid {
            let _ = writeln!(s, "unix_uid = {uid}");
        }
        if let Some(id) = &c.tls_identity {
            let _ = writeln!(s, "tls_identity = {}", toml::Value::from(id.as_str()));
        }
        if c.rate_limit != DEFAULT_RATE_LIMIT {
            let _ = writeln!(s, "rate_limit = {}", c.rate_limit);
        }
        if c.max_watches != DEFAULT_MAX_WATCHES {
            let _ = writeln!(s, "max_watches = {}", c.max_watches);
        }
    }
}

/// `[user_assertions]`: the operator's identity provider, required when a caller needs
/// assertions.
pub(super) fn validate_assertions(
    raw: &RawConfig,
    callers: &[CallerConfig],
    errors: &mut Vec<String>,
) -> Option<AssertionConfig> {
    let needed = callers.iter().any(|c| c.require_user_assertion);
    let Some(a) = &raw.user_assertions else {
        if needed {
            errors.push(
                "a caller has require_user_assertion but [user_assertions] (issuer, audience, jwks_url) is not configured".into(),
            );
        }
        return None;
    };
    let mut field = |name: &str, v: &Option<String>| match v.as_deref() {
        Some(v) if !v.is_empty() && v.len() <= 2048 && !v.chars().any(char::is_control) => {
            Some(v.to_owned())
        }
        _ => {
            errors.push(format!("user_assertions.{name} is required"));
            None
        }
    };
    let (issuer, audience, jwks) = (
        field("issuer", &a.issuer),
        field("audience", &a.audience),
        field("jwks_url", &a.jwks_url),
    );
    let insecure = raw.dev.unwrap_or(false) || raw.allow_insecure_provider_urls.unwrap_or(false);
    let jwks_url = match jwks.map(|u| crate::domain::check_endpoint_url("jwks_url", &u, insecure)) {
        Some(Ok(u)) => Some(u),
        Some(Err(e)) => {
            errors.push(format!("user_assertions.{e}"));
            None
        }
        None => None,
    };
    Some(AssertionConfig {
        issuer: issuer?,
        audience: audience?,
        jwks_url: jwks_url?,
        claim: a.claim.clone().unwrap_or_else(|| "sub".into()),
    })
}

pub(super) fn render_assertions(a: &AssertionConfig, s: &mut String) {
    let _ = writeln!(
        s,
        "\n[user_assertions]\nissuer = \"{}\"\naudience = \"{}\"\njwks_url = \"{}\"\nclaim = \"{}\"",
        a.issuer, a.audience, a.jwks_url, a.claim
    );
}

/// `[grpc_tls]`, when given: certificate and key are required; callers with `tls_identity` need
/// the client CA.
pub(super) fn validate_tls(
    raw: &RawConfig,
    callers: &[CallerConfig],
    errors: &mut Vec<String>,
) -> Option<GrpcTls> {
    let needs_ca = callers.iter().any(|c| c.tls_identity.is_some());
    let Some(t) = &raw.grpc_tls else {
        if needs_ca {
            errors.push(
                "a caller has tls_identity but [grpc_tls] client_ca_file is not configured".into(),
            );
        }
        return None;
    };
    let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) else {
        errors.push("grpc_tls needs cert_file and key_file".into());
        return None;
    };
    if needs_ca && t.client_ca_file.is_none() {
        errors.push("a caller has tls_identity but grpc_tls.client_ca_file is not set".into());
    }
    Some(GrpcTls {
        cert_file: cert.into(),
        key_file: key.into(),
        client_ca_file: t.client_ca_file.as_ref().map(Into::into),
    })
}
