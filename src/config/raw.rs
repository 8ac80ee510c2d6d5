//! The raw configuration: a serde mirror of the TOML file (unknown keys refused), then layered
//! with `VALET_*` environment variables and command-line flags. Nothing here is validated yet.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub grpc_listen: Option<String>,
    /// A Unix socket serving gRPC too (mode 0660), for sidecars; callers may match by uid.
    pub grpc_socket: Option<String>,
    pub http_listen: Option<String>,
    pub public_url: Option<String>,
    /// This replica's HTTP address as the other replicas reach it (Vault store only).
    pub replica_url: Option<String>,
    pub data_dir: Option<String>,
    pub store: Option<String>,
    pub dev: Option<bool>,
    /// Not a file key: set by `Overrides::store_only`.
    #[serde(skip)]
    pub store_only: bool,
    pub admin_key_file: Option<String>,
    pub profiles_dir: Option<String>,
    pub allow_insecure_provider_urls: Option<bool>,
    pub shutdown_grace_seconds: Option<u64>,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub telemetry: RawTelemetry,
    #[serde(default)]
    pub audit: RawAudit,
    pub grpc_tls: Option<RawGrpcTls>,
    pub user_assertions: Option<RawUserAssertions>,
    #[serde(default)]
    pub flows: RawFlows,
    #[serde(default)]
    pub tokens: RawTokens,
    #[serde(default)]
    pub provider_http: RawProviderHttp,
    #[serde(default)]
    pub callers: Vec<RawCaller>,
    pub vault: Option<RawVault>,
    #[serde(default)]
    pub webhooks: Vec<RawWebhook>,
}

/// `[[webhooks]]`: a receiver of lifecycle notifications.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub url: String,
    pub secret_file: String,
    #[serde(default)]
    pub events: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVault {
    pub address: Option<String>,
    pub kv_version: Option<u8>,
    pub mount: Option<String>,
    pub prefix: Option<String>,
    pub namespace: Option<String>,
    pub ca_cert_file: Option<String>,
    pub timeout_seconds: Option<u64>,
    #[serde(default)]
    pub auth: RawVaultAuth,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVaultAuth {
    /// `token` (default), `approle` or `kubernetes`.
    pub method: Option<String>,
    /// Token auth: exactly one of the value, a file holding it, or an environment variable.
    pub token: Option<String>,
    pub token_file: Option<String>,
    pub token_env: Option<String>,
    /// AppRole and Kubernetes: the auth mount (default `approle` / `kubernetes`).
    pub mount: Option<String>,
    pub role_id: Option<String>,
    pub secret_id_file: Option<String>,
    pub role: Option<String>,
    pub jwt_file: Option<String>,
}

/// Whether a token is set, never the token.
impl std::fmt::Debug for RawVaultAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawVaultAuth")
            .field("method", &self.method)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("token_env", &self.token_env)
            .field("mount", &self.mount)
            .field("role_id", &self.role_id)
            .field("secret_id_file", &self.secret_id_file)
            .field("role", &self.role)
            .field("jwt_file", &self.jwt_file)
            .finish()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// OTLP/gRPC collector the spans are exported to, e.g. `http://127.0.0.1:4317`.
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUserAssertions {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub jwks_url: Option<String>,
    pub claim: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrpcTls {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    /// Client certificates signed by this CA identify callers by `tls_identity` (mTLS).
    pub client_ca_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// A JSON-lines file (append-only, 0600); absent: the log, target `valet::audit`.
    pub file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFlows {
    pub ttl_seconds: Option<u64>,
    pub max_pending: Option<u64>,
    pub max_pending_per_user: Option<u64>,
    pub wait_default_seconds: Option<u64>,
    pub wait_max_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokens {
    pub default_min_ttl_seconds: Option<u64>,
    pub max_min_ttl_seconds: Option<u64>,
    /// Background refresh of grants in use once their token has less than this left; 0: off.
    pub refresh_ahead_seconds: Option<u64>,
    /// "In use": handed out within this many seconds.
    pub refresh_ahead_window_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProviderHttp {
    pub connect_timeout_seconds: Option<u64>,
    pub timeout_seconds: Option<u64>,
    /// MCP discovery and registration may fetch from private, loopback and link-local addresses.
    pub allow_private_networks: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCaller {
    pub name: String,
    pub role: String,
    /// Hex SHA-256 of the API key; the key itself is never configured.
    pub key_sha256: String,
    /// While a key is rotated: the old key's hash, accepted as this caller too.
    #[serde(default)]
    pub previous_key_sha256: Option<String>,
    /// Agent ids this caller may act as (exact, or a prefix followed by `*`; `*`: any). Absent:
    /// user-wide grants only (admins: any).
    #[serde(default)]
    pub agents: Option<Vec<String>>,
    /// Requests naming a user must carry a user assertion (`[user_assertions]`).
    #[serde(default)]
    pub require_user_assertion: bool,
    /// Requests per second this caller may make (bursts of twice that); 0: unlimited.
    pub rate_limit: Option<u32>,
    /// Watch streams (`WatchAuthorization`, `WatchGrants`) this caller may hold open at once;
    /// 0: unlimited.
    pub max_watches: Option<u32>,
    /// On the Unix socket, a peer process running as this uid is this caller without a key.
    pub unix_uid: Option<u32>,
    /// With `[grpc_tls] client_ca_file`: a client certificate whose URI or DNS SAN is this
    /// (e.g. a SPIFFE id) is this caller without a key.
    pub tls_identity: Option<String>,
}

/// Command-line flags that override everything else.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<String>,
    pub dev: bool,
    pub grpc_listen: Option<String>,
    pub http_listen: Option<String>,
    pub public_url: Option<String>,
    pub data_dir: Option<String>,
    pub admin_key_file: Option<String>,
    pub store: Option<String>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    /// The config is read for its store only (`valet store copy`): no caller is required.
    pub store_only: bool,
}

/// Environment variables the daemon reads, with the setting each one overrides.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("VALET_CONFIG", "path of the TOML config file"),
    ("VALET_GRPC_LISTEN", "grpc_listen"),
    ("VALET_HTTP_LISTEN", "http_listen"),
    ("VALET_PUBLIC_URL", "public_url"),
    ("VALET_REPLICA_URL", "replica_url"),
    ("VALET_DATA_DIR", "data_dir"),
    ("VALET_STORE", "store"),
    ("VALET_DEV", "dev"),
    ("VALET_ADMIN_KEY_FILE", "admin_key_file"),
    ("VALET_LOG_FORMAT", "log.format"),
    ("VALET_LOG_LEVEL", "log.level"),
    ("VALET_OTLP_ENDPOINT", "telemetry.otlp_endpoint"),
    ("VALET_FLOW_TTL_SECONDS", "flows.ttl_seconds"),
    ("VALET_SHUTDOWN_GRACE_SECONDS", "shutdown_grace_seconds"),
    ("VALET_VAULT_ADDR", "vault.address"),
    ("VALET_VAULT_TOKEN_FILE", "vault.auth.token_file"),
];

/// Variables the CLI client reads; not daemon settings, but not unknown either.
pub const CLIENT_ENV_VARS: &[&str] = &[
    "VALET_SERVER",
    "VALET_KEY",
    "VALET_TLS_CA",
    "VALET_TLS_CERT",
    "VALET_TLS_KEY",
];

impl RawConfig {
    /// Applies `VALET_*` variables from `env`; parse problems go to `errors`.
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>, errors: &mut Vec<String>) {
        let set_str = |name: &str, slot: &mut Option<String>| {
            if let Some(v) = env(name) {
                *slot = Some(v);
            }
        };
        set_str("VALET_GRPC_LISTEN", &mut self.grpc_listen);
        set_str("VALET_HTTP_LISTEN", &mut self.http_listen);
        set_str("VALET_PUBLIC_URL", &mut self.public_url);
        set_str("VALET_REPLICA_URL", &mut self.replica_url);
        set_str("VALET_DATA_DIR", &mut self.data_dir);
        set_str("VALET_STORE", &mut self.store);
        set_str("VALET_ADMIN_KEY_FILE", &mut self.admin_key_file);
        set_str("VALET_LOG_FORMAT", &mut self.log.format);
        set_str("VALET_OTLP_ENDPOINT", &mut self.telemetry.otlp_endpoint);
        set_str("VALET_LOG_LEVEL", &mut self.log.level);
        if env("VALET_VAULT_ADDR").is_some() || env("VALET_VAULT_TOKEN_FILE").is_some() {
            let vault = self.vault.get_or_insert_with(RawVault::default);
            set_str("VALET_VAULT_ADDR", &mut vault.address);
            set_str("VALET_VAULT_TOKEN_FILE", &mut vault.auth.token_file);
        }
        let mut set_num = |name: &str, slot: &mut Option<u64>| {
            if let Some(v) = env(name) {
                match v.parse() {
                    Ok(n) => *slot = Some(n),
                    Err(_) => errors.push(format!("{name}={v:?} is not a non-negative integer")),
                }
            }
        };
        set_num("VALET_FLOW_TTL_SECONDS", &mut self.flows.ttl_seconds);
        set_num(
            "VALET_SHUTDOWN_GRACE_SECONDS",
            &mut self.shutdown_grace_seconds,
        );
        if let Some(v) = env("VALET_DEV") {
            match v.as_str() {
                "1" | "true" => self.dev = Some(true),
                "0" | "false" => self.dev = Some(false),
                _ => errors.push(format!("VALET_DEV={v:?} must be true or false")),
            }
        }
    }

    pub fn apply_overrides(&mut self, o: &Overrides) {
        if o.dev {
            self.dev = Some(true);
        }
        self.store_only |= o.store_only;
        let pairs = [
            (&o.grpc_listen, &mut self.grpc_listen),
            (&o.http_listen, &mut self.http_listen),
            (&o.public_url, &mut self.public_url),
            (&o.data_dir, &mut self.data_dir),
            (&o.admin_key_file, &mut self.admin_key_file),
            (&o.store, &mut self.store),
            (&o.log_format, &mut self.log.format),
            (&o.log_level, &mut self.log.level),
        ];
        for (from, to) in pairs {
            if let Some(v) = from {
                *to = Some(v.clone());
            }
        }
    }
}
