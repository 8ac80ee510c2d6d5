//! Configuration: defaults, then the TOML file, then `VALET_*` environment variables, then flags.
//! `Config::load` validates everything before any port is bound and reports every problem at
//! once. The environment is passed in as a function so tests never touch the process env.
//!
//! Each section validates and renders itself: `server` (top-level keys, `[log]`), `flows`
//! (`[flows]`, `[tokens]`), `provider_http`, `vault` and `callers`; `raw` is the TOML mirror.

mod callers;
mod flows;
mod provider_http;
mod raw;
mod server;
mod vault;
mod webhooks;

pub use callers::{CallerConfig, GrpcTls};
pub use flows::FlowConfig;
pub use raw::{CLIENT_ENV_VARS, ENV_VARS, Overrides, RawConfig, RawVault};
pub use server::{LogFormat, StoreKind};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

#[derive(Debug, Clone)]
pub struct Config {
    pub grpc_listen: SocketAddr,
    pub http_listen: SocketAddr,
    /// `None`: derived from the bound HTTP address.
    pub public_url: Option<Url>,
    /// This replica's HTTP address for the other replicas (callback forwarding); Vault only.
    pub replica_url: Option<Url>,
    pub data_dir: PathBuf,
    pub store: StoreKind,
    pub dev: bool,
    pub admin_key_file: Option<PathBuf>,
    /// Operator provider profiles (`*.toml`), added to the built-in catalogue.
    pub profiles_dir: Option<PathBuf>,
    pub allow_insecure_provider_urls: bool,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    /// Where spans are exported (OTLP/gRPC); none: no trace export.
    pub otlp_endpoint: Option<url::Url>,
    pub log_level: String,
    /// TLS (and mTLS callers) on the gRPC listener.
    pub grpc_tls: Option<callers::GrpcTls>,
    /// A Unix socket serving gRPC as well.
    pub grpc_socket: Option<PathBuf>,
    /// The audit trail's file; `None`: the log.
    pub audit_file: Option<PathBuf>,
    /// The identity provider user assertions are verified against.
    pub user_assertions: Option<crate::assertion::AssertionConfig>,
    pub flows: FlowConfig,
    pub default_min_ttl: u32,
    /// Background refresh of grants in use when this little is left (seconds); 0: off.
    pub refresh_ahead: u32,
    pub refresh_ahead_window: u32,
    pub max_min_ttl: u32,
    pub provider_connect_timeout: Duration,
    pub provider_timeout: Duration,
    /// Discovery and registration fetches may reach private, loopback and link-local addresses.
    pub allow_private_networks: bool,
    pub callers: Vec<CallerConfig>,
    /// Where lifecycle notifications go.
    pub webhooks: Vec<webhooks::WebhookConfig>,
    /// Non-fatal findings (unknown `VALET_*` variables), logged once telemetry is up.
    pub warnings: Vec<String>,
}

/// Every problem found in the configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

impl ConfigError {
    /// A problem with a file the configuration names (the admin key, a profile), found when the
    /// daemon reads it: still a bad configuration, so `valet` exits 78 and systemd does not
    /// restart it in a loop.
    pub fn in_file(problem: impl std::fmt::Display) -> anyhow::Error {
        anyhow::Error::new(Self(vec![problem.to_string()]))
    }
}

/// serde's message without the string it did not expect (`invalid type: string "…", expected
/// u64`): a secret put in the wrong setting is not echoed.
fn without_string(message: &str) -> String {
    match message.split_once("string \"") {
        Some((before, rest)) => match rest.rsplit_once("\", expected") {
            Some((_, after)) => format!("{before}a string, expected{after}"),
            None => format!("{before}a string"),
        },
        None => message.to_owned(),
    }
}

/// The most settings of the wrong type or name reported at once.
const MAX_PARSE_ERRORS: usize = 32;

/// Parses a config file's text. On error, the message and line only: toml's own rendering quotes
/// the source line, which may hold a token. Every unknown key and value of the wrong type is
/// reported at once: each one's line is blanked (line numbers stay) and the text read again,
/// until it reads or an error is not on a `key = value` line (a syntax error, a missing setting),
/// which ends the list.
fn parse_toml(source: &str, text: &str) -> Result<RawConfig, ConfigError> {
    let mut lines: Vec<&str> = text.split('\n').collect();
    let mut errors = Vec::new();
    loop {
        let current = lines.join("\n");
        let e = match toml::from_str::<RawConfig>(&current) {
            Ok(raw) if errors.is_empty() => return Ok(raw),
            Ok(_) => break,
            Err(e) => e,
        };
        // A setting of the wrong type left out may leave a required one "missing": that is the
        // same problem, already reported.
        if !errors.is_empty() && e.message().starts_with("missing field") {
            break;
        }
        let start = e.span().map(|sp| sp.start.min(current.len()));
        // Newlines before the error, plus one: right at a line's first column too.
        let line = start.map(|s| current[..s].matches('\n').count());
        let setting = start.and_then(|s| setting_at(&current, s));
        let at = match (line, &setting) {
            (Some(l), Some(k)) => format!(" (line {}, {k})", l + 1),
            (Some(l), None) => format!(" (line {})", l + 1),
            _ => String::new(),
        };
        errors.push((
            line.unwrap_or(usize::MAX),
            format!("{source}{at}: {}", without_string(e.message().trim_end())),
        ));
        // Only a `key = value` line is left out to read on; a multi-line value cut this way
        // fails to parse, which ends the list too.
        let Some(l) = line.filter(|_| setting.is_some() && errors.len() < MAX_PARSE_ERRORS) else {
            break;
        };
        lines[l] = "";
        if toml::from_str::<toml::Table>(&lines.join("\n")).is_err() {
            break;
        }
    }
    // In the file's order, as the reader fixes them.
    errors.sort();
    let mut errors: Vec<String> = errors.into_iter().map(|(_, e)| e).collect();
    // Nothing past these was checked (the values the settings' rules apply to).
    errors.push("the rest of the file is checked once these are fixed".into());
    Err(ConfigError(errors))
}

impl Config {
    /// Loads and validates. `env` looks up an environment variable; `env_names` lists the
    /// `VALET_*` names present (for unknown-variable warnings).
    pub fn load(
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
        env_names: &[String],
    ) -> Result<Self, ConfigError> {
        let raw = match overrides.config.clone().or_else(|| env("VALET_CONFIG")) {
            None => RawConfig::default(),
            Some(p) => {
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| ConfigError(vec![format!("cannot read config file {p}: {e}")]))?;
                parse_toml(&p, &text)?
            }
        };
        Self::finish(raw, overrides, env, env_names)
    }

    /// What `load` does with a config file's text once read (`source` names it in errors).
    pub fn from_toml(
        source: &str,
        text: &str,
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
        env_names: &[String],
    ) -> Result<Self, ConfigError> {
        Self::finish(parse_toml(source, text)?, overrides, env, env_names)
    }

    fn finish(
        mut raw: RawConfig,
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
        env_names: &[String],
    ) -> Result<Self, ConfigError> {
        let mut errors = Vec::new();
        raw.apply_env(env, &mut errors);
        raw.apply_overrides(overrides);
        let warnings = env_names
            .iter()
            .filter(|n| n.starts_with("VALET_"))
            .filter(|n| {
                !ENV_VARS.iter().any(|(k, _)| k == n) && !CLIENT_ENV_VARS.contains(&n.as_str())
            })
            .map(|n| format!("unknown environment variable {n} ignored"))
            .collect();
        let config = Self::validate(raw, env, warnings, &mut errors);
        match config {
            Some(c) if errors.is_empty() => Ok(c),
            _ => Err(ConfigError(errors)),
        }
    }

    /// `load` with this process's environment (the daemon and the CLI; tests pass their own).
    pub fn load_from_process_env(overrides: &Overrides) -> Result<Self, ConfigError> {
        let names: Vec<String> = std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .collect();
        Self::load(overrides, &|k| std::env::var(k).ok(), &names)
    }

    /// Validates every section, so that every problem is listed at once.
    fn validate(
        mut raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
        mut warnings: Vec<String>,
        errors: &mut Vec<String>,
    ) -> Option<Self> {
        let vault = raw.vault.take();
        let server = server::validate(&raw, vault, env, errors);
        let flows = flows::validate(&raw.flows, &raw.tokens, errors);
        let provider_http =
            provider_http::validate(&raw.provider_http, raw.dev.unwrap_or(false), errors);
        let callers = callers::validate(&raw, errors);
        let webhooks = webhooks::validate(&raw.webhooks, raw.dev.unwrap_or(false), errors);
        let user_assertions = callers::validate_assertions(&raw, &callers, errors);
        let grpc_tls = callers::validate_tls(&raw, &callers, errors);
        let server = server?;
        if let StoreKind::Vault(v) = &server.store
            && v.address.scheme() == "http"
            && !crate::net::loopback_host(&v.address)
        {
            warnings.push(format!(
                "vault.address {} is plain http to another host: the Vault token and every secret \
                 Valet stores cross the network in clear; use https (plain http is for a Vault \
                 agent on this host)",
                v.address
            ));
        }
        Some(Self {
            grpc_listen: server.grpc_listen,
            http_listen: server.http_listen,
            public_url: server.public_url,
            replica_url: server.replica_url,
            data_dir: server.data_dir,
            store: server.store,
            dev: server.dev,
            admin_key_file: server.admin_key_file,
            profiles_dir: server.profiles_dir,
            allow_insecure_provider_urls: server.allow_insecure_provider_urls,
            shutdown_grace: server.shutdown_grace,
            log_format: server.log_format,
            log_level: server.log_level,
            otlp_endpoint: server.otlp_endpoint,
            audit_file: raw.audit.file.as_ref().map(PathBuf::from),
            grpc_socket: raw.grpc_socket.as_ref().map(PathBuf::from),
            user_assertions,
            grpc_tls,
            flows: flows.flows,
            default_min_ttl: flows.default_min_ttl,
            refresh_ahead: flows.refresh_ahead,
            refresh_ahead_window: flows.refresh_ahead_window,
            max_min_ttl: flows.max_min_ttl,
            provider_connect_timeout: provider_http.connect_timeout,
            provider_timeout: provider_http.timeout,
            allow_private_networks: provider_http.allow_private_networks,
            callers,
            webhooks,
            warnings,
        })
    }

    /// The effective configuration as TOML, for `valet check-config`. Key hashes are shortened;
    /// no key is ever configured in clear.
    pub fn render(&self) -> String {
        let mut s = String::new();
        server::render(self, &mut s);
        flows::render(self, &mut s);
        provider_http::render(self, &mut s);
        if let StoreKind::Vault(v) = &self.store {
            vault::render(v, &mut s);
        }
        if let Some(t) = &self.grpc_tls {
            s.push_str(&format!(
                "\n[grpc_tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                t.cert_file.display(),
                t.key_file.display()
            ));
            if let Some(ca) = &t.client_ca_file {
                s.push_str(&format!("client_ca_file = \"{}\"\n", ca.display()));
            }
        }
        if let Some(f) = &self.audit_file {
            s.push_str(&format!("\n[audit]\nfile = \"{}\"\n", f.display()));
        }
        if let Some(a) = &self.user_assertions {
            callers::render_assertions(a, &mut s);
        }
        callers::render(&self.callers, &mut s);
        webhooks::render(&self.webhooks, &mut s);
        s
    }
}

/// The setting (`section.key`) on the line holding byte `offset`, when it is a plain `key = …`
/// line: names only, never the value (it may be a secret).
fn setting_at(text: &str, offset: usize) -> Option<String> {
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?;
    let key = line.split_once('=')?.0.trim();
    let bare = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    };
    if !bare(key) {
        return None;
    }
    let section = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim())
        .filter(|s| bare(s));
    Some(match section {
        Some(s) => format!("{s}.{key}"),
        None => key.to_owned(),
    })
}

/// A numeric setting: its name in the file, its default, and the values it may take.
struct Setting {
    name: &'static str,
    default: u64,
    min: u64,
    max: u64,
}

impl Setting {
    const fn new(name: &'static str, default: u64, min: u64, max: u64) -> Self {
        Self {
            name,
            default,
            min,
            max,
        }
    }

    /// `v`, or the default when unset; a value out of bounds is a problem named by the setting.
    fn check(&self, v: Option<u64>, errors: &mut Vec<String>) -> u64 {
        let v = v.unwrap_or(self.default);
        if v < self.min || v > self.max {
            errors.push(format!(
                "{} = {v} must be between {} and {}",
                self.name, self.min, self.max
            ));
        }
        v
    }

    fn secs(&self, v: Option<u64>, errors: &mut Vec<String>) -> Duration {
        Duration::from_secs(self.check(v, errors))
    }

    // The conversions below saturate: an out-of-range value is already an error, so this only
    // keeps them total.

    fn count(&self, v: Option<u64>, errors: &mut Vec<String>) -> usize {
        usize::try_from(self.check(v, errors)).unwrap_or(usize::MAX)
    }

    fn secs_u32(&self, v: Option<u64>, errors: &mut Vec<String>) -> u32 {
        u32::try_from(self.check(v, errors)).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;
    use std::collections::HashMap;

    #[test]
    fn the_raw_config_debug_shows_no_vault_token() {
        let raw = parse_toml("t.toml", "[vault.auth]\ntoken = \"hvs.canary-token\"\n").unwrap();
        let out = format!("{raw:?}");
        assert!(
            !out.contains("canary") && out.contains("<redacted>"),
            "{out}"
        );
    }

    fn load(toml: &str, env: &[(&str, &str)], o: Overrides) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("valet.toml");
        std::fs::write(&path, toml).unwrap();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let names: Vec<String> = env.keys().cloned().collect();
        let o = Overrides {
            config: Some(path.display().to_string()),
            ..o
        };
        Config::load(&o, &|k| env.get(k).cloned(), &names)
    }

    const CALLER: &str = "[[callers]]\nname = \"ops\"\nrole = \"admin\"\nkey_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n";

    #[test]
    fn layers_file_env_and_flags() {
        let toml = format!(
            "grpc_listen = \"127.0.0.1:1\"\nhttp_listen = \"127.0.0.1:2\"\n[flows]\nttl_seconds = 5\n{CALLER}"
        );
        let c = load(
            &toml,
            &[
                ("VALET_HTTP_LISTEN", "127.0.0.1:3"),
                ("VALET_FLOW_TTL_SECONDS", "7"),
            ],
            Overrides {
                grpc_listen: Some("127.0.0.1:4".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(c.grpc_listen.port(), 4);
        assert_eq!(c.http_listen.port(), 3);
        assert_eq!(c.flows.ttl.as_secs(), 7);
        assert_eq!(c.callers[0].role, Role::Admin);
    }

    #[test]
    fn lists_every_problem() {
        let toml = "grpc_listen = \"nope\"\nstore = \"mysql\"\n[flows]\nttl_seconds = 0\n[[callers]]\nname = \"x\"\nrole = \"root\"\nkey_sha256 = \"zz\"\n";
        let err = load(
            toml,
            &[("VALET_FLOW_TTL_SECONDS", "soon")],
            Overrides::default(),
        )
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "grpc_listen",
            "store",
            "VALET_FLOW_TTL_SECONDS",
            "flows.ttl_seconds",
            "callers[0].role",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }

    #[test]
    fn refuses_unknown_keys_and_warns_on_unknown_env() {
        let err = load("grpc_lisen = \"x\"\n", &[], Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("grpc_lisen"), "{err}");
        // The line of the unknown key itself, whether or not it starts the file.
        let text = format!("{CALLER}\n[flows]\nbogus = 1\n");
        let bogus = text.lines().position(|l| l.starts_with("bogus")).unwrap() + 1;
        let err = load(&text, &[], Overrides::default()).unwrap_err();
        assert!(err.to_string().contains(&format!("(line {bogus}")), "{err}");
        let err = load("\n\ngrpc_lisen = \"x\"\n", &[], Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("(line 3"), "{err}");
        // The rest of the file is checked once it reads, and the message says so.
        assert!(err.to_string().contains("once these are fixed"), "{err}");
        // Every unknown key and value of the wrong type at once, each on its own line.
        let text = "grpc_lisen = \"x\"\n[flows]\nttl_seconds = -5\nbogus = 1\n";
        let err = load(text, &[], Overrides::default()).unwrap_err();
        assert_eq!(err.0.len(), 4, "{err}");
        assert!(
            err.0[0].contains("(line 1, grpc_lisen)"),
            "in the file's order: {err}"
        );
        // A required setting of the wrong type is reported once, not also as missing.
        let text = "[[webhooks]]\nurl = 5\nsecret_file = \"x\"\n";
        let once = load(text, &[], Overrides::default()).unwrap_err();
        assert!(once.to_string().contains("webhooks.url"), "{once}");
        assert!(!once.to_string().contains("missing field"), "{once}");
        for needle in [
            "(line 1, grpc_lisen)",
            "(line 3, flows.ttl_seconds)",
            "(line 4, flows.bogus)",
        ] {
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
        let c = load(CALLER, &[("VALET_GRPC_LISTN", "x")], Overrides::default()).unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("VALET_GRPC_LISTN")));
    }

    #[test]
    fn dev_mode_binds_loopback_only_and_needs_no_callers() {
        let c = load(
            "",
            &[],
            Overrides {
                dev: true,
                ..Overrides::default()
            },
        )
        .unwrap();
        assert!(c.dev && c.callers.is_empty());
        // Outside dev mode, callers that are all refused are not reported as missing as well.
        let bad = "[[callers]]\nname = \"bot\"\nrole = \"agnet\"\nkey_sha256 = \"00\"\n";
        let err = load(bad, &[], Overrides::default()).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert!(err.0[0].contains("callers[0].role"), "{err}");
        let err = load("", &[], Overrides::default()).unwrap_err();
        assert!(
            err.to_string().contains("no callers are configured"),
            "{err}"
        );
        let err = load(
            "",
            &[],
            Overrides {
                dev: true,
                grpc_listen: Some("0.0.0.0:1".into()),
                ..Overrides::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("loopback"));
        let err = load("", &[], Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("no callers"));
    }

    #[test]
    fn toml_errors_do_not_quote_the_source() {
        let err = load(
            "[vault]\naddress = \"x\"\n[vault.auth]\ntoken = \"hvs.canary\" junk\n",
            &[],
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line"), "{err}");
        assert!(!err.contains("hvs.canary"), "{err}");
        // Nor a secret put in a setting of another type.
        let err = load(
            "[flows]\nttl_seconds = \"hvs.canary\"\n",
            &[],
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("flows.ttl_seconds") && err.contains("a string, expected"),
            "{err}"
        );
        assert!(!err.contains("hvs.canary"), "{err}");
    }

    /// A config that sets every key the renderer shows, with a Vault store.
    const FULL: &str = r#"grpc_listen = "127.0.0.1:1"
http_listen = "127.0.0.1:2"
public_url = "https://valet.example.com"
data_dir = "/var/lib/valet"
store = "vault"
admin_key_file = "/run/secrets/admin"
shutdown_grace_seconds = 3

[log]
format = "json"
level = "valet=debug"

[flows]
ttl_seconds = 60
max_pending = 10
max_pending_per_user = 2
wait_default_seconds = 5
wait_max_seconds = 50

[tokens]
default_min_ttl_seconds = 30
max_min_ttl_seconds = 3600
refresh_ahead_seconds = 300
refresh_ahead_window_seconds = 900

[provider_http]
connect_timeout_seconds = 2
timeout_seconds = 9

[vault]
address = "https://vault.example:8200"
kv_version = 1
mount = "kv"
prefix = "team/valet"
namespace = "ns1"
ca_cert_file = "/etc/ca.pem"
timeout_seconds = 7

[vault.auth]
method = "approle"
role_id = "r-1"
secret_id_file = "/run/secrets/sid"

[[callers]]
name = "ops"
role = "admin"
key_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"

[[callers]]
name = "bot"
role = "agent"
key_sha256 = "abababababababababababababababababababababababababababababababab"
max_watches = 5
"#;

    // check-config output is read by operators and diffed by scripts: pinned byte for byte.
    #[test]
    fn renders_a_full_config_exactly() {
        let c = load(FULL, &[], Overrides::default()).unwrap();
        let expected = r#"grpc_listen = "127.0.0.1:1"
http_listen = "127.0.0.1:2"
public_url = "https://valet.example.com/"
data_dir = "/var/lib/valet"
store = "vault"
dev = false
admin_key_file = "/run/secrets/admin"
allow_insecure_provider_urls = false
shutdown_grace_seconds = 3

[log]
format = "json"
level = "valet=debug"

[flows]
ttl_seconds = 60
max_pending = 10
max_pending_per_user = 2
wait_default_seconds = 5
wait_max_seconds = 50

[tokens]
default_min_ttl_seconds = 30
max_min_ttl_seconds = 3600
refresh_ahead_seconds = 300
refresh_ahead_window_seconds = 900

[provider_http]
connect_timeout_seconds = 2
timeout_seconds = 9
allow_private_networks = false

[vault]
address = "https://vault.example:8200/"
kv_version = 1
mount = "kv"
prefix = "team/valet/"
timeout_seconds = 7
namespace = "ns1"
ca_cert_file = "/etc/ca.pem"

[vault.auth]
method = "approle"
mount = "approle"
role_id = "r-1"
secret_id_file = "/run/secrets/sid"

[[callers]]
name = "ops"
role = "admin"
key_sha256 = "00000000…(redacted)"
agents = ["*"]

[[callers]]
name = "bot"
role = "agent"
key_sha256 = "abababab…(redacted)"
agents = []
max_watches = 5
"#;
        assert_eq!(c.render(), expected);
    }

    #[test]
    fn renders_the_dev_defaults_exactly() {
        let dev = Overrides {
            dev: true,
            ..Overrides::default()
        };
        // The log format's default follows the terminal; pinned so the rendering is stable.
        let c = load("", &[("VALET_LOG_FORMAT", "text")], dev).unwrap();
        let expected = r#"grpc_listen = "127.0.0.1:50051"
http_listen = "127.0.0.1:8080"
# public_url: derived from the bound http address
data_dir = "./valet-data"
store = "embedded"
dev = true
allow_insecure_provider_urls = true
shutdown_grace_seconds = 10

[log]
format = "text"
level = "info"

[flows]
ttl_seconds = 600
max_pending = 100000
max_pending_per_user = 16
wait_default_seconds = 30
wait_max_seconds = 300

[tokens]
default_min_ttl_seconds = 60
max_min_ttl_seconds = 86400
refresh_ahead_seconds = 300
refresh_ahead_window_seconds = 900

[provider_http]
connect_timeout_seconds = 5
timeout_seconds = 15
allow_private_networks = true
"#;
        assert_eq!(c.render(), expected);
    }

    // The reference config must load as shipped, and every value it shows must be the default,
    // as its header claims; otherwise it rots as settings change.
    #[test]
    fn the_example_config_validates_and_shows_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/valet.example.toml");
        // It leaves every [[callers]] entry commented out; dev mode needs none.
        let as_shipped = Overrides {
            config: Some(path.to_owned()),
            dev: true,
            ..Overrides::default()
        };
        if let Err(e) = Config::load(&as_shipped, &|_| None, &[]) {
            panic!("{path} does not validate: {e}");
        }
        let example = std::fs::read_to_string(path).unwrap();
        let c = load(&format!("{example}\n{CALLER}"), &[], Overrides::default()).unwrap();
        let defaults = load(CALLER, &[], Overrides::default()).unwrap();
        assert_eq!(c.render(), defaults.render());
    }

    #[test]
    fn one_key_for_two_callers_is_refused_and_names_render_as_toml_strings() {
        let caller = |name: &str, digit: &str| {
            format!(
                "[[callers]]\nname = {}\nrole = \"agent\"\nkey_sha256 = \"{}\"\n",
                toml::Value::from(name),
                digit.repeat(64)
            )
        };
        let twice = format!("{}{}", caller("planner", "1"), caller("copy", "1"));
        let e = load(&twice, &[], Overrides::default()).unwrap_err();
        assert!(
            e.0.iter().any(|m| m.starts_with("callers[1].key_sha256")
                && m.contains("\"planner\"")
                && m.contains("valet key new")),
            "{:?}",
            e.0
        );
        // A key being rotated: its old hash is checked as the key is (hex, not another
        // caller's, not the new one), and shown redacted.
        let rotating = |previous: &str| {
            format!(
                "{}previous_key_sha256 = \"{previous}\"\n{}",
                caller("planner", "5"),
                caller("copy", "6")
            )
        };
        for (previous, says) in [
            (
                "zz".to_owned(),
                "callers[0].previous_key_sha256 must be 64 hex",
            ),
            (
                "5".repeat(64),
                "callers[0].previous_key_sha256 is its key_sha256",
            ),
            (
                "6".repeat(64),
                "callers[1].key_sha256 is also the key of caller \"planner\"",
            ),
        ] {
            let e = load(&rotating(&previous), &[], Overrides::default()).unwrap_err();
            assert!(e.0.iter().any(|m| m.starts_with(says)), "{says}: {:?}", e.0);
        }
        let ok = load(&rotating(&"7".repeat(64)), &[], Overrides::default()).unwrap();
        assert_eq!(ok.callers[0].previous_key_sha256, Some([0x77; 32]));
        let shown = ok.render();
        assert!(
            shown.contains("previous_key_sha256 = \"77777777…(redacted)\"")
                && !shown.contains(&"7".repeat(64)),
            "{shown}"
        );
        // Nor one client certificate identity.
        let cert =
            |name: &str, digit: &str| format!("{}tls_identity = \"bot\"\n", caller(name, digit));
        let e = load(
            &format!("{}{}", cert("a", "3"), cert("b", "4")),
            &[],
            Overrides::default(),
        )
        .unwrap_err();
        assert!(
            e.0.iter()
                .any(|m| m.starts_with("callers[1].tls_identity \"bot\" is used twice")),
            "{:?}",
            e.0
        );
        // A name with a quote and a backslash reads back the same from the printed config.
        let name = r#"say "hi" \o/"#;
        let out = load(&caller(name, "2"), &[], Overrides::default())
            .unwrap()
            .render();
        let line = out.lines().find(|l| l.starts_with("name = ")).unwrap();
        let back: toml::Table = toml::from_str(line).unwrap();
        assert_eq!(back["name"].as_str(), Some(name), "{line}");
    }

    #[test]
    fn render_redacts_key_hashes() {
        let c = load(CALLER, &[], Overrides::default()).unwrap();
        let out = c.render();
        assert!(out.contains("(redacted)"));
        assert!(!out.contains(&"0".repeat(64)));
    }

    #[test]
    fn a_vault_token_file_open_to_others_is_refused_and_plain_http_to_another_host_warned() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vault-token");
        std::fs::write(&file, "hvs.token-file-canary\n").unwrap();
        let toml = format!(
            "store = \"vault\"\n[vault]\naddress = \"http://127.0.0.1:8200\"\n[vault.auth]\ntoken_file = \"{}\"\n",
            file.display()
        );
        let dev = || Overrides {
            dev: true,
            ..Overrides::default()
        };
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&toml, &[], dev()).unwrap_err();
        assert!(
            e.0.iter()
                .any(|m| m.contains("vault.auth.token_file") && m.contains("chmod 600")),
            "{:?}",
            e.0
        );
        assert!(!format!("{:?}", e.0).contains("canary"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = load(&toml, &[], dev()).unwrap();
        assert!(c.warnings.is_empty(), "loopback: {:?}", c.warnings);
        // check-config says where the token comes from, as configured, never the token.
        let shown = c.render();
        assert!(
            shown.contains(&format!("token_file = \"{}\"", file.display())),
            "{shown}"
        );
        assert!(
            !shown.contains("canary") && !shown.contains("token = "),
            "{shown}"
        );
        let by_env = toml.replace(
            &format!("token_file = \"{}\"", file.display()),
            "token_env = \"VAULT_TOKEN_FOR_VALET\"",
        );
        let c = load(
            &by_env,
            &[("VAULT_TOKEN_FOR_VALET", "hvs.env-canary")],
            dev(),
        )
        .unwrap();
        let shown = c.render();
        assert!(
            shown.contains("token_env = \"VAULT_TOKEN_FOR_VALET\""),
            "{shown}"
        );
        assert!(!shown.contains("canary"), "{shown}");
        let inline = toml.replace(
            &format!("token_file = \"{}\"", file.display()),
            "token = \"hvs.inline-canary\"",
        );
        let shown = load(&inline, &[], dev()).unwrap().render();
        assert!(shown.contains("token = \"(redacted)\""), "{shown}");
        assert!(!shown.contains("canary"), "{shown}");
        // An empty token, from any source, is a configuration error naming the source (it was
        // sent to Vault, which answered 403).
        std::fs::write(&file, "\n").unwrap();
        let e = load(&toml, &[], dev()).unwrap_err();
        assert!(
            e.0.iter()
                .any(|m| m.contains("token_file") && m.contains("is empty")),
            "{:?}",
            e.0
        );
        let e = load(&by_env, &[("VAULT_TOKEN_FOR_VALET", " ")], dev()).unwrap_err();
        assert!(
            e.0.iter()
                .any(|m| m.contains("VAULT_TOKEN_FOR_VALET is empty")),
            "{:?}",
            e.0
        );
        let blank = toml.replace(
            &format!("token_file = \"{}\"", file.display()),
            "token = \"\"",
        );
        let e = load(&blank, &[], dev()).unwrap_err();
        assert!(
            e.0.iter().any(|m| m.contains("vault.auth.token is empty")),
            "{:?}",
            e.0
        );
        std::fs::write(&file, "hvs.token-file-canary\n").unwrap();
        let remote = toml.replace("127.0.0.1", "10.0.0.5");
        let c = load(&remote, &[], dev()).unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("plain http") && w.contains("in clear")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn a_replica_url_needs_the_vault_store_and_no_path() {
        let dev = || Overrides {
            dev: true,
            ..Overrides::default()
        };
        let e = load("replica_url = \"http://10.0.0.7:8080\"\n", &[], dev()).unwrap_err();
        assert!(
            e.0.iter()
                .any(|m| m.contains("replica_url") && m.contains("vault")),
            "{:?}",
            e.0
        );
    }

    #[test]
    fn an_otlp_endpoint_must_be_an_http_url() {
        let dev = || Overrides {
            dev: true,
            ..Overrides::default()
        };
        let e = load(
            "[telemetry]\notlp_endpoint = \"collector:4317\"\n",
            &[],
            dev(),
        )
        .unwrap_err();
        assert!(
            e.0.iter().any(|m| m.contains("telemetry.otlp_endpoint")),
            "{:?}",
            e.0
        );
        let c = load(
            "",
            &[("VALET_OTLP_ENDPOINT", "http://127.0.0.1:4317")],
            dev(),
        )
        .unwrap();
        assert_eq!(
            c.otlp_endpoint.as_ref().map(url::Url::as_str),
            Some("http://127.0.0.1:4317/")
        );
        assert!(c.render().contains("[telemetry]\notlp_endpoint"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Any file content loads or is refused with every problem listed; nothing panics.
        #[test]
        fn the_config_loader_never_panics(text in "[ -~\n]{0,300}") {
            crate::fuzzing::config(text.as_bytes());
        }

        /// A numeric setting loads to its value, or is refused naming the setting.
        #[test]
        fn flow_settings_load_or_name_themselves(ttl in proptest::prelude::any::<i64>()) {
            let text = format!("dev = true\n[flows]\nttl_seconds = {ttl}\n");
            match load(&text, &[], Overrides::default()) {
                Ok(c) => proptest::prop_assert_eq!(c.flows.ttl.as_secs() as i64, ttl),
                Err(e) => proptest::prop_assert!(
                    e.0.iter().any(|m| m.contains("ttl_seconds")),
                    "{:?}",
                    e.0
                ),
            }
        }
    }
}
