//! The `[vault]` section: validated into a `store::VaultConfig`, and rendered for check-config
//! with the token redacted.

use super::RawVault;
use crate::secret::{ExposeSecret as _, SecretString};
use crate::store::{KvVersion, TokenSource, VaultAuth, VaultConfig};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

fn path_ok(s: &str) -> bool {
    !s.is_empty()
        && s.split('/').all(|p| {
            !p.is_empty()
                && p != ".."
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        })
}

fn token_auth(
    a: &super::raw::RawVaultAuth,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<String>,
) -> Option<VaultAuth> {
    let sources = [&a.token, &a.token_file, &a.token_env];
    if sources.iter().filter(|s| s.is_some()).count() != 1 {
        errors.push("vault.auth: set exactly one of token, token_file or token_env".into());
        return None;
    }
    let token = if let Some(t) = &a.token {
        if t.trim().is_empty() {
            errors.push(
                "vault.auth.token is empty: give the Vault token (better: token_file or token_env)"
                    .into(),
            );
            return None;
        }
        t.clone()
    } else if let Some(f) = &a.token_file {
        // As strict as every other secret file: not open to others.
        match crate::secret::read_private_file(std::path::Path::new(f), "vault.auth.token_file") {
            Ok(t) if t.expose_secret().trim().is_empty() => {
                errors.push(format!(
                    "vault.auth.token_file: {f} is empty: write the Vault token into it"
                ));
                return None;
            }
            Ok(t) => return Some(VaultAuth::Token(t, TokenSource::File(PathBuf::from(f)))),
            Err(e) => {
                errors.push(e);
                return None;
            }
        }
    } else {
        let name = a.token_env.clone().unwrap_or_default();
        match env(&name) {
            Some(t) if t.trim().is_empty() => {
                errors.push(format!(
                    "vault.auth.token_env: environment variable {name} is empty: set it to the Vault token"
                ));
                return None;
            }
            Some(t) => t,
            None => {
                errors.push(format!(
                    "vault.auth.token_env: environment variable {name} is not set"
                ));
                return None;
            }
        }
    };
    let from = match &a.token_env {
        Some(name) => TokenSource::Env(name.clone()),
        None => TokenSource::Inline,
    };
    Some(VaultAuth::Token(SecretString::from(token), from))
}

fn address(raw: Option<&str>, errors: &mut Vec<String>) -> Option<url::Url> {
    match raw.map(url::Url::parse) {
        Some(Ok(u)) if matches!(u.scheme(), "http" | "https") => Some(u),
        Some(_) => {
            errors.push("vault.address must be an http(s) URL".into());
            None
        }
        None => {
            errors.push("vault.address is required (e.g. \"https://vault.example:8200\")".into());
            None
        }
    }
}

fn kv_version(raw: Option<u8>, errors: &mut Vec<String>) -> KvVersion {
    match raw.unwrap_or(2) {
        1 => KvVersion::V1,
        2 => KvVersion::V2,
        n => {
            errors.push(format!("vault.kv_version = {n}: expected 1 or 2"));
            KvVersion::V2
        }
    }
}

/// The mount and the key prefix (always ending in `/` when set).
fn paths(
    mount: Option<String>,
    prefix: Option<String>,
    errors: &mut Vec<String>,
) -> (String, String) {
    let mount = mount.unwrap_or_else(|| "secret".into());
    if !path_ok(&mount) {
        errors.push(format!("vault.mount = {mount:?} is not a valid mount path"));
    }
    let mut prefix = prefix.unwrap_or_else(|| "valet/".into());
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    if !prefix.is_empty() && !path_ok(prefix.trim_end_matches('/')) {
        errors.push(format!(
            "vault.prefix = {prefix:?} is not a valid path prefix"
        ));
    }
    (mount, prefix)
}

fn auth(
    a: super::raw::RawVaultAuth,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<String>,
) -> Option<VaultAuth> {
    match a.method.as_deref().unwrap_or("token") {
        "token" => token_auth(&a, env, errors),
        "approle" => match (a.role_id, a.secret_id_file) {
            (Some(role_id), Some(file)) => Some(VaultAuth::AppRole {
                mount: a.mount.unwrap_or_else(|| "approle".into()),
                role_id,
                secret_id_file: PathBuf::from(file),
            }),
            _ => {
                errors.push("vault.auth: approle needs role_id and secret_id_file".into());
                None
            }
        },
        "kubernetes" => match a.role {
            Some(role) => Some(VaultAuth::Kubernetes {
                mount: a.mount.unwrap_or_else(|| "kubernetes".into()),
                role,
                jwt_file: PathBuf::from(a.jwt_file.unwrap_or_else(|| {
                    "/var/run/secrets/kubernetes.io/serviceaccount/token".into()
                })),
            }),
            None => {
                errors.push("vault.auth: kubernetes needs role".into());
                None
            }
        },
        other => {
            errors.push(format!(
                "vault.auth.method = {other:?}: expected \"token\", \"approle\" or \"kubernetes\""
            ));
            None
        }
    }
}

/// Validates the `[vault]` section; every problem goes to `errors`.
pub(super) fn vault_config(
    v: RawVault,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<String>,
) -> Option<VaultConfig> {
    let before = errors.len();
    let address = address(v.address.as_deref(), errors);
    let kv_version = kv_version(v.kv_version, errors);
    let (mount, prefix) = paths(v.mount, v.prefix, errors);
    let timeout = Duration::from_secs(v.timeout_seconds.unwrap_or(10).clamp(1, 300));
    let auth = auth(v.auth, env, errors);
    if errors.len() > before {
        return None;
    }
    Some(VaultConfig {
        address: address?,
        kv_version,
        mount,
        prefix,
        namespace: v.namespace.filter(|n| !n.is_empty()),
        ca_cert_file: v.ca_cert_file.filter(|f| !f.is_empty()).map(PathBuf::from),
        timeout,
        auth: auth?,
    })
}

/// The `[vault]` section as TOML, token redacted.
pub(super) fn render(v: &VaultConfig, s: &mut String) {
    let kv = match v.kv_version {
        KvVersion::V1 => 1,
        KvVersion::V2 => 2,
    };
    let _ = writeln!(
        s,
        "\n[vault]\naddress = \"{}\"\nkv_version = {kv}\nmount = \"{}\"\nprefix = \"{}\"\ntimeout_seconds = {}",
        v.address,
        v.mount,
        v.prefix,
        v.timeout.as_secs()
    );
    if let Some(ns) = &v.namespace {
        let _ = writeln!(s, "namespace = \"{ns}\"");
    }
    if let Some(ca) = &v.ca_cert_file {
        let _ = writeln!(s, "ca_cert_file = \"{}\"", ca.display());
    }
    let _ = match &v.auth {
        // Where the token came from, as configured: a file or variable is named, not shown.
        VaultAuth::Token(_, from) => writeln!(
            s,
            "\n[vault.auth]\nmethod = \"token\"\n{}",
            match from {
                TokenSource::Inline => "token = \"(redacted)\"".to_owned(),
                TokenSource::File(f) => format!("token_file = \"{}\"", f.display()),
                TokenSource::Env(name) => format!("token_env = \"{name}\""),
            }
        ),
        VaultAuth::AppRole {
            mount,
            role_id,
            secret_id_file,
        } => writeln!(
            s,
            "\n[vault.auth]\nmethod = \"approle\"\nmount = \"{mount}\"\nrole_id = \"{role_id}\"\nsecret_id_file = \"{}\"",
            secret_id_file.display()
        ),
        VaultAuth::Kubernetes {
            mount,
            role,
            jwt_file,
        } => writeln!(
            s,
            "\n[vault.auth]\nmethod = \"kubernetes\"\nmount = \"{mount}\"\nrole = \"{role}\"\njwt_file = \"{}\"",
            jwt_file.display()
        ),
    };
}
