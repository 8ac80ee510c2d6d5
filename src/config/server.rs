//! The top-level keys and `[log]`: where the daemon listens, where it keeps its data, which
//! store it uses (the `[vault]` section itself is `vault.rs`), dev mode, shutdown and logging.

use super::raw::{RawConfig, RawVault};
use super::{Config, Setting, vault};
use crate::store::VaultConfig;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

#[derive(Debug, Clone)]
pub enum StoreKind {
    Embedded,
    Memory,
    Vault(Box<VaultConfig>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

const SHUTDOWN_GRACE: Setting = Setting::new("shutdown_grace_seconds", 10, 0, 600);

/// The validated section; `Config` holds these fields flat.
pub(super) struct Server {
    pub grpc_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub public_url: Option<Url>,
    pub replica_url: Option<Url>,
    pub data_dir: PathBuf,
    pub store: StoreKind,
    pub dev: bool,
    pub admin_key_file: Option<PathBuf>,
    pub profiles_dir: Option<PathBuf>,
    pub allow_insecure_provider_urls: bool,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    pub log_level: String,
    pub otlp_endpoint: Option<Url>,
}

/// Validates the section; every problem goes to `errors`. `vault` is the `[vault]` section,
/// read only when `store = "vault"`.
pub(super) fn validate(
    raw: &RawConfig,
    vault: Option<RawVault>,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<String>,
) -> Option<Server> {
    let dev = raw.dev.unwrap_or(false);
    let grpc_listen = listen_addr(
        "grpc_listen",
        raw.grpc_listen.as_deref(),
        "127.0.0.1:50051",
        dev,
        errors,
    );
    let http_listen = listen_addr(
        "http_listen",
        raw.http_listen.as_deref(),
        "127.0.0.1:8080",
        dev,
        errors,
    );
    let public_url = raw
        .public_url
        .as_deref()
        .and_then(|u| public_url(u, errors));
    let store = store(raw.store.as_deref(), vault, env, errors);
    let replica_url = raw
        .replica_url
        .as_deref()
        .and_then(|u| replica_url(u, store.as_ref(), errors));
    let log_format = log_format(raw.log.format.as_deref(), errors);
    let log_level = log_level(raw.log.level.as_deref(), errors);
    let otlp_endpoint = raw
        .telemetry
        .otlp_endpoint
        .as_deref()
        .and_then(|u| otlp_endpoint(u, errors));
    let shutdown_grace = SHUTDOWN_GRACE.secs(raw.shutdown_grace_seconds, errors);
    Some(Server {
        grpc_listen: grpc_listen?,
        http_listen: http_listen?,
        public_url,
        replica_url,
        data_dir: PathBuf::from(raw.data_dir.as_deref().unwrap_or("./valet-data")),
        store: store?,
        dev,
        admin_key_file: raw.admin_key_file.as_ref().map(PathBuf::from),
        profiles_dir: raw.profiles_dir.as_ref().map(PathBuf::from),
        allow_insecure_provider_urls: raw.allow_insecure_provider_urls.unwrap_or(dev),
        shutdown_grace,
        log_format: log_format?,
        log_level,
        otlp_endpoint,
    })
}

/// Dev mode must not be reachable from the network: it prints an admin key and allows plain
/// http provider URLs.
fn listen_addr(
    field: &str,
    v: Option<&str>,
    default: &str,
    dev: bool,
    errors: &mut Vec<String>,
) -> Option<SocketAddr> {
    let v = v.unwrap_or(default);
    match v.parse::<SocketAddr>() {
        Ok(a) if dev && !a.ip().is_loopback() => {
            errors.push(format!(
                "{field} = {v:?}: dev mode binds loopback addresses only"
            ));
            None
        }
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(format!("{field} = {v:?} is not an IP:port address"));
            None
        }
    }
}

/// Where the other replicas reach this one's HTTP listener (a consent callback that lands on
/// another replica is forwarded here). Only a shared (Vault) store has replicas.
fn replica_url(u: &str, store: Option<&StoreKind>, errors: &mut Vec<String>) -> Option<Url> {
    if !matches!(store, Some(StoreKind::Vault(_))) {
        errors.push(format!(
            "replica_url = {u:?} needs store = \"vault\": only a shared store has replicas (the embedded store is one process per data directory)"
        ));
        return None;
    }
    match Url::parse(u) {
        Ok(url)
            if matches!(url.scheme(), "http" | "https")
                && url.host().is_some()
                && url.path() == "/"
                && url.query().is_none() =>
        {
            Some(url)
        }
        _ => {
            errors.push(format!(
                "replica_url = {u:?} must be this replica's http(s) address without a path, e.g. \"http://10.0.0.7:8080\""
            ));
            None
        }
    }
}

/// An OTLP/gRPC collector over plain http/2: an agent or sidecar next to the daemon (the
/// exporter is built without TLS).
fn otlp_endpoint(u: &str, errors: &mut Vec<String>) -> Option<Url> {
    match Url::parse(u) {
        Ok(url) if url.scheme() == "http" && url.host().is_some() => Some(url),
        _ => {
            errors.push(format!(
                "telemetry.otlp_endpoint = {u:?} must be an http URL such as \"http://127.0.0.1:4317\" (a collector next to the daemon; TLS is not supported)"
            ));
            None
        }
    }
}

/// Redirect URIs are built by appending to it, so a query would end up in the middle of one.
fn public_url(u: &str, errors: &mut Vec<String>) -> Option<Url> {
    match Url::parse(u) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.query().is_none() => Some(url),
        _ => {
            errors.push(format!(
                "public_url = {u:?} must be an http(s) URL without a query"
            ));
            None
        }
    }
}

fn store(
    kind: Option<&str>,
    vault: Option<RawVault>,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<String>,
) -> Option<StoreKind> {
    match kind.unwrap_or("embedded") {
        "embedded" => Some(StoreKind::Embedded),
        "memory" => Some(StoreKind::Memory),
        "vault" => match vault {
            Some(v) => vault::vault_config(v, env, errors).map(|v| StoreKind::Vault(Box::new(v))),
            None => {
                errors.push("store = \"vault\" needs a [vault] section (address, auth)".into());
                None
            }
        },
        other => {
            errors.push(format!(
                "store = {other:?}: expected \"embedded\", \"vault\" or \"memory\""
            ));
            None
        }
    }
}

/// Unset: text for a person at a terminal, JSON lines for a log pipeline.
fn log_format(v: Option<&str>, errors: &mut Vec<String>) -> Option<LogFormat> {
    use std::io::IsTerminal as _;
    match v {
        None if std::io::stderr().is_terminal() => Some(LogFormat::Text),
        None | Some("json") => Some(LogFormat::Json),
        Some("text") => Some(LogFormat::Text),
        Some(other) => {
            errors.push(format!(
                "log.format = {other:?}: expected \"text\" or \"json\""
            ));
            None
        }
    }
}

/// Checked with the rest: telemetry would otherwise fall back to `info` without a word.
fn log_level(v: Option<&str>, errors: &mut Vec<String>) -> String {
    let level = v.unwrap_or("info").to_owned();
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        errors.push(format!(
            "log.level = {level:?} is not a valid filter (e.g. \"info\" or \"valet=debug\")"
        ));
    }
    level
}

/// The top-level keys and `[log]`, as TOML.
pub(super) fn render(c: &Config, s: &mut String) {
    let _ = writeln!(s, "grpc_listen = \"{}\"", c.grpc_listen);
    let _ = writeln!(s, "http_listen = \"{}\"", c.http_listen);
    let _ = match &c.public_url {
        Some(u) => writeln!(s, "public_url = \"{u}\""),
        None => writeln!(s, "# public_url: derived from the bound http address"),
    };
    if let Some(u) = &c.replica_url {
        let _ = writeln!(s, "replica_url = \"{u}\"");
    }
    let _ = writeln!(s, "data_dir = \"{}\"", c.data_dir.display());
    let store = match &c.store {
        StoreKind::Embedded => "embedded",
        StoreKind::Memory => "memory",
        StoreKind::Vault(_) => "vault",
    };
    let _ = writeln!(s, "store = \"{store}\"");
    let _ = writeln!(s, "dev = {}", c.dev);
    if let Some(p) = &c.admin_key_file {
        let _ = writeln!(s, "admin_key_file = \"{}\"", p.display());
    }
    if let Some(p) = &c.profiles_dir {
        let _ = writeln!(s, "profiles_dir = \"{}\"", p.display());
    }
    let _ = writeln!(
        s,
        "allow_insecure_provider_urls = {}",
        c.allow_insecure_provider_urls
    );
    let _ = writeln!(s, "shutdown_grace_seconds = {}", c.shutdown_grace.as_secs());
    if let Some(p) = &c.grpc_socket {
        let _ = writeln!(s, "grpc_socket = \"{}\"", p.display());
    }
    let format = match c.log_format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    let _ = writeln!(
        s,
        "\n[log]\nformat = \"{format}\"\nlevel = \"{}\"",
        c.log_level
    );
    if let Some(u) = &c.otlp_endpoint {
        let _ = writeln!(s, "\n[telemetry]\notlp_endpoint = \"{u}\"");
    }
}
