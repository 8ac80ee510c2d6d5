//! `[[callers]]`: who may call the daemon. Each entry names a caller, its role, and the SHA-256
//! of its API key; the key itself is never configured, so a leaked config grants nothing.

use super::raw::RawConfig;
use crate::domain::{AgentBinding, Role};
use std::fmt::Write as _;

#[derive(Debug, Clone)]
pub struct CallerConfig {
    pub name: String,
    pub role: Role,
    pub key_sha256: [u8; 32],
    pub agents: AgentBinding,
}

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
            (None, Role::Agent) => AgentBinding::Only(Vec::new()),
        };
        let mut hash = [0u8; 32];
        if hex::decode_to_slice(&c.key_sha256, &mut hash).is_err() {
            errors.push(format!(
                "callers[{i}].key_sha256 must be 64 hex characters (run `valet key new`)"
            ));
            continue;
        }
        if callers.iter().any(|k| k.name == c.name) {
            errors.push(format!("callers[{i}].name {:?} is used twice", c.name));
        }
        callers.push(CallerConfig {
            name: c.name.clone(),
            role,
            key_sha256: hash,
            agents,
        });
    }
    if callers.is_empty() && !raw.dev.unwrap_or(false) && raw.admin_key_file.is_none() {
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
            "\n[[callers]]\nname = \"{}\"\nrole = \"{role}\"\nkey_sha256 = \"{}…(redacted)\"\nagents = {agents}",
            c.name,
            &hex::encode(c.key_sha256)[..8]
        );
    }
}
