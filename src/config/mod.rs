//! Configuration: defaults, then the TOML file, then `VALET_*` environment variables, then flags.
//! `Config::load` validates everything before any port is bound and reports every problem at
//! once. The environment is passed in as a function so tests never touch the process env.

mod raw;
mod vault;

pub use raw::{CLIENT_ENV_VARS, ENV_VARS, Overrides, RawConfig, RawVault};

use crate::service::Role;
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

#[derive(Debug, Clone)]
pub struct CallerConfig {
    pub name: String,
    pub role: Role,
    pub key_sha256: [u8; 32],
}

#[derive(Debug, Clone)]
pub struct FlowConfig {
    pub ttl: Duration,
    pub max_pending: usize,
    pub max_pending_per_user: usize,
    pub wait_default: Duration,
    pub wait_max: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub grpc_listen: SocketAddr,
    pub http_listen: SocketAddr,
    /// `None`: derived from the bound HTTP address.
    pub public_url: Option<Url>,
    pub data_dir: PathBuf,
    pub store: StoreKind,
    pub dev: bool,
    pub admin_key_file: Option<PathBuf>,
    pub allow_insecure_provider_urls: bool,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    pub log_level: String,
    pub flows: FlowConfig,
    pub default_min_ttl: u32,
    pub max_min_ttl: u32,
    pub provider_connect_timeout: Duration,
    pub provider_timeout: Duration,
    pub callers: Vec<CallerConfig>,
    /// Non-fatal findings (unknown `VALET_*` variables), logged once telemetry is up.
    pub warnings: Vec<String>,
}

/// Every problem found in the configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

impl Config {
    /// Loads and validates. `env` looks up an environment variable; `env_names` lists the
    /// `VALET_*` names present (for unknown-variable warnings).
    pub fn load(
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
        env_names: &[String],
    ) -> Result<Self, ConfigError> {
        let mut errors = Vec::new();
        let path = overrides.config.clone().or_else(|| env("VALET_CONFIG"));
        let mut raw = match &path {
            None => RawConfig::default(),
            Some(p) => match std::fs::read_to_string(p) {
                Err(e) => {
                    return Err(ConfigError(vec![format!(
                        "cannot read config file {p}: {e}"
                    )]));
                }
                Ok(text) => match toml::from_str::<RawConfig>(&text) {
                    Ok(raw) => raw,
                    // The message and line only: toml's own rendering quotes the source line,
                    // which may hold a token.
                    Err(e) => {
                        let line = e
                            .span()
                            .map(|sp| text[..sp.start.min(text.len())].lines().count().max(1));
                        let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
                        return Err(ConfigError(vec![format!("{p}{at}: {}", e.message())]));
                    }
                },
            },
        };
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

    fn validate(
        mut raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
        warnings: Vec<String>,
        errors: &mut Vec<String>,
    ) -> Option<Self> {
        let dev = raw.dev.unwrap_or(false);
        let addr = |field: &str, v: Option<String>, default: &str, errors: &mut Vec<String>| {
            let v = v.unwrap_or_else(|| default.to_owned());
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
        };
        let grpc_listen = addr("grpc_listen", raw.grpc_listen, "127.0.0.1:50051", errors);
        let http_listen = addr("http_listen", raw.http_listen, "127.0.0.1:8080", errors);
        let public_url = raw.public_url.and_then(|u| match Url::parse(&u) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.query().is_none() => {
                Some(url)
            }
            _ => {
                errors.push(format!(
                    "public_url = {u:?} must be an http(s) URL without a query"
                ));
                None
            }
        });
        let store = match raw.store.as_deref().unwrap_or("embedded") {
            "embedded" => Some(StoreKind::Embedded),
            "memory" => Some(StoreKind::Memory),
            "vault" => match raw.vault.take() {
                Some(v) => {
                    vault::vault_config(v, env, errors).map(|v| StoreKind::Vault(Box::new(v)))
                }
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
        };
        let log_format = match raw.log.format.as_deref().unwrap_or("text") {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            other => {
                errors.push(format!(
                    "log.format = {other:?}: expected \"text\" or \"json\""
                ));
                None
            }
        };
        let log_level = raw.log.level.unwrap_or_else(|| "info".to_owned());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            errors.push(format!(
                "log.level = {log_level:?} is not a valid filter (e.g. \"info\" or \"valet=debug\")"
            ));
        }
        let mut range = |field: &str, v: Option<u64>, default: u64, min: u64, max: u64| -> u64 {
            let v = v.unwrap_or(default);
            if v < min || v > max {
                errors.push(format!("{field} = {v} must be between {min} and {max}"));
            }
            v
        };
        let flows = FlowConfig {
            ttl: Duration::from_secs(range(
                "flows.ttl_seconds",
                raw.flows.ttl_seconds,
                600,
                1,
                3600,
            )),
            max_pending: usize::try_from(range(
                "flows.max_pending",
                raw.flows.max_pending,
                100_000,
                1,
                10_000_000,
            ))
            .unwrap_or(usize::MAX),
            max_pending_per_user: usize::try_from(range(
                "flows.max_pending_per_user",
                raw.flows.max_pending_per_user,
                16,
                1,
                10_000,
            ))
            .unwrap_or(usize::MAX),
            wait_default: Duration::from_secs(range(
                "flows.wait_default_seconds",
                raw.flows.wait_default_seconds,
                30,
                1,
                3600,
            )),
            wait_max: Duration::from_secs(range(
                "flows.wait_max_seconds",
                raw.flows.wait_max_seconds,
                300,
                1,
                3600,
            )),
        };
        let default_min_ttl = range(
            "tokens.default_min_ttl_seconds",
            raw.tokens.default_min_ttl_seconds,
            60,
            0,
            86_400,
        );
        let max_min_ttl = range(
            "tokens.max_min_ttl_seconds",
            raw.tokens.max_min_ttl_seconds,
            86_400,
            1,
            31_536_000,
        );
        let shutdown_grace = Duration::from_secs(range(
            "shutdown_grace_seconds",
            raw.shutdown_grace_seconds,
            10,
            0,
            600,
        ));
        let provider_connect_timeout = Duration::from_secs(range(
            "provider_http.connect_timeout_seconds",
            raw.provider_http.connect_timeout_seconds,
            5,
            1,
            120,
        ));
        let provider_timeout = Duration::from_secs(range(
            "provider_http.timeout_seconds",
            raw.provider_http.timeout_seconds,
            15,
            1,
            300,
        ));

        let mut callers = Vec::new();
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
            let mut hash = [0u8; 32];
            if hex::decode_to_slice(&c.key_sha256, &mut hash).is_err() {
                errors.push(format!(
                    "callers[{i}].key_sha256 must be 64 hex characters (run `valet key new`)"
                ));
                continue;
            }
            if callers.iter().any(|k: &CallerConfig| k.name == c.name) {
                errors.push(format!("callers[{i}].name {:?} is used twice", c.name));
            }
            callers.push(CallerConfig {
                name: c.name.clone(),
                role,
                key_sha256: hash,
            });
        }
        let admin_key_file = raw.admin_key_file.map(PathBuf::from);
        if callers.is_empty() && !dev && admin_key_file.is_none() {
            errors.push("no callers are configured: add [[callers]] entries, pass --admin-key-file, or run with --dev".into());
        }
        Some(Self {
            grpc_listen: grpc_listen?,
            http_listen: http_listen?,
            public_url,
            data_dir: PathBuf::from(raw.data_dir.unwrap_or_else(|| "./valet-data".to_owned())),
            store: store?,
            dev,
            admin_key_file,
            allow_insecure_provider_urls: raw.allow_insecure_provider_urls.unwrap_or(dev),
            shutdown_grace,
            log_format: log_format?,
            log_level,
            flows,
            default_min_ttl: u32::try_from(default_min_ttl).unwrap_or(u32::MAX),
            max_min_ttl: u32::try_from(max_min_ttl).unwrap_or(u32::MAX),
            provider_connect_timeout,
            provider_timeout,
            callers,
            warnings,
        })
    }

    /// The effective configuration as TOML, for `valet check-config`. Key hashes are shortened;
    /// no key is ever configured in clear.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "grpc_listen = \"{}\"", self.grpc_listen);
        let _ = writeln!(s, "http_listen = \"{}\"", self.http_listen);
        match &self.public_url {
            Some(u) => {
                let _ = writeln!(s, "public_url = \"{u}\"");
            }
            None => {
                let _ = writeln!(s, "# public_url: derived from the bound http address");
            }
        }
        let _ = writeln!(s, "data_dir = \"{}\"", self.data_dir.display());
        let store = match &self.store {
            StoreKind::Embedded => "embedded",
            StoreKind::Memory => "memory",
            StoreKind::Vault(_) => "vault",
        };
        let _ = writeln!(s, "store = \"{store}\"");
        let _ = writeln!(s, "dev = {}", self.dev);
        if let Some(p) = &self.admin_key_file {
            let _ = writeln!(s, "admin_key_file = \"{}\"", p.display());
        }
        let _ = writeln!(
            s,
            "allow_insecure_provider_urls = {}",
            self.allow_insecure_provider_urls
        );
        let _ = writeln!(
            s,
            "shutdown_grace_seconds = {}",
            self.shutdown_grace.as_secs()
        );
        let _ = writeln!(
            s,
            "\n[log]\nformat = \"{}\"\nlevel = \"{}\"",
            match self.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            },
            self.log_level
        );
        let f = &self.flows;
        let _ = writeln!(
            s,
            "\n[flows]\nttl_seconds = {}\nmax_pending = {}\nmax_pending_per_user = {}\nwait_default_seconds = {}\nwait_max_seconds = {}",
            f.ttl.as_secs(),
            f.max_pending,
            f.max_pending_per_user,
            f.wait_default.as_secs(),
            f.wait_max.as_secs()
        );
        let _ = writeln!(
            s,
            "\n[tokens]\ndefault_min_ttl_seconds = {}\nmax_min_ttl_seconds = {}",
            self.default_min_ttl, self.max_min_ttl
        );
        let _ = writeln!(
            s,
            "\n[provider_http]\nconnect_timeout_seconds = {}\ntimeout_seconds = {}",
            self.provider_connect_timeout.as_secs(),
            self.provider_timeout.as_secs()
        );
        if let StoreKind::Vault(v) = &self.store {
            vault::render(v, &mut s);
        }
        for c in &self.callers {
            let role = match c.role {
                Role::Admin => "admin",
                Role::Agent => "agent",
            };
            let _ = writeln!(
                s,
                "\n[[callers]]\nname = \"{}\"\nrole = \"{role}\"\nkey_sha256 = \"{}…(redacted)\"",
                c.name,
                &hex::encode(c.key_sha256)[..8]
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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

[provider_http]
connect_timeout_seconds = 2
timeout_seconds = 9

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

[[callers]]
name = "bot"
role = "agent"
key_sha256 = "abababab…(redacted)"
"#;
        assert_eq!(c.render(), expected);
    }

    #[test]
    fn renders_the_dev_defaults_exactly() {
        let dev = Overrides {
            dev: true,
            ..Overrides::default()
        };
        let c = load("", &[], dev).unwrap();
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

[provider_http]
connect_timeout_seconds = 5
timeout_seconds = 15
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
    fn render_redacts_key_hashes() {
        let c = load(CALLER, &[], Overrides::default()).unwrap();
        let out = c.render();
        assert!(out.contains("(redacted)"));
        assert!(!out.contains(&"0".repeat(64)));
    }
}
