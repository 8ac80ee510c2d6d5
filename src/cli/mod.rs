//! The command line: `serve` and `check-config` for operators, and client commands that call a
//! running daemon over gRPC. This module holds the clap tree and the dispatch; each command group
//! lives in its own module (`provider`, `auth`, `key`, `store`) and prints through `print`.
#![allow(clippy::print_stdout, reason = "the CLI's output is its interface")]

// The CLI's `println!` (it shadows std's in this module and those below it): when the reader of
// the output has gone (`valet grants | head`), the command ends quietly, as Unix tools do,
// instead of panicking with a backtrace.
macro_rules! println {
    () => {
        $crate::cli::out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod auth;
mod credential;
mod key;
mod print;
mod provider;
mod store;

pub use auth::AuthArgs;
pub use key::KeyCmd;
pub use provider::{AuthMethod, Kind, ProviderArgs, ProviderCmd};
pub use store::StoreCmd;

/// A secret from the file at `path`, given with `flag`. The path is not echoed in the error: a
/// secret pasted where its path belongs would be, onto a terminal or into a CI log.
fn read_secret_file(flag: &str, path: impl AsRef<std::path::Path>) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "{flag}: cannot read that file: {e} (the flag takes a file's path, not the secret itself)"
        )
    })
}

/// A secret from the environment variable named with `flag`; the name is not echoed either.
fn read_secret_env(flag: &str, var: &str) -> anyhow::Result<String> {
    std::env::var(var).map_err(|e| match e {
        std::env::VarError::NotPresent => anyhow::anyhow!(
            "{flag}: no environment variable of that name is set (the flag takes the variable's name, not the secret itself)"
        ),
        std::env::VarError::NotUnicode(_) => {
            anyhow::anyhow!("{flag}: that environment variable does not hold UTF-8 text")
        }
    })
}

/// Writes CLI output to stdout. A closed pipe ends the process with success (the reader took
/// what it wanted); any other failure to write is said on stderr and fails it.
pub fn out(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("valet: cannot write the output: {e}");
        std::process::exit(1);
    }
}

use crate::client::Client;
use crate::config::Overrides;
use anyhow::{Context as _, bail};
use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "valet",
    version,
    about = "Credential vault daemon for AI agents"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve(ServeArgs),
    /// Validate the configuration and print it, secrets redacted.
    CheckConfig(ServeArgs),
    /// Manage providers (admin key).
    Provider {
        #[command(subcommand)]
        cmd: ProviderCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Get a token for a user: prints the consent URL, waits, prints the token.
    Auth {
        #[command(flatten)]
        args: AuthArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// List grants (metadata only).
    Grants {
        #[command(flatten)]
        filter: auth::GrantFilter,
        #[command(flatten)]
        conn: Conn,
    },
    /// Move grants in and out (admin): `import` a refresh token issued elsewhere, `export` a
    /// provider's grants sealed to a recipient key, `open` such an export.
    Grant {
        #[command(subcommand)]
        cmd: auth::GrantCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Turn a reference into a fresh access token (as an agent would right before an API call).
    Resolve {
        /// The reference; `-`: read from stdin (an argument shows in `ps` to every user of the
        /// machine, and a reference is a credential).
        reference: String,
        /// Minimum seconds of life the token must have; longer than the provider's tokens
        /// live, every call refreshes (the way to force a refresh), and a grant without a
        /// refresh token cannot meet it.
        #[arg(long, default_value_t = 0)]
        min_ttl: u32,
        /// The URL the credential is for: refused unless its host is on the provider's
        /// egress_hosts.
        #[arg(long)]
        target_url: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove a grant, or with --reference one reference.
    /// Exits 1 when there was nothing to revoke (a mistyped id is not taken for success).
    Revoke {
        #[arg(long, required_unless_present = "reference", value_parser = NonEmptyStringValueParser::new())]
        provider: Option<String>,
        #[arg(long, required_unless_present = "reference", value_parser = NonEmptyStringValueParser::new())]
        user: Option<String>,
        #[arg(long, value_parser = NonEmptyStringValueParser::new())]
        agent: Option<String>,
        /// The grant of this account label (absent: the default account).
        #[arg(long, value_parser = NonEmptyStringValueParser::new())]
        account: Option<String>,
        /// Revoke this reference instead of a grant.
        #[arg(long, conflicts_with_all = ["provider", "user", "agent", "account"], value_parser = NonEmptyStringValueParser::new())]
        reference: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Static credentials (api_key, http_basic, http_bearer providers).
    Credential {
        #[command(subcommand)]
        cmd: credential::CredentialCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// API keys for the `[[callers]]` config.
    Key {
        #[command(subcommand)]
        cmd: KeyCmd,
    },
    /// Operate on secret stores directly, without a daemon (an embedded store's daemon must be
    /// stopped: the command takes the store's lock).
    Store {
        #[command(subcommand)]
        cmd: StoreCmd,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Webhook helpers for receivers.
    Webhook {
        #[command(subcommand)]
        cmd: WebhookCmd,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhookCmd {
    /// Check a received webhook: the body (a file, or stdin) against its
    /// Valet-Webhook-Timestamp and Valet-Webhook-Signature headers under the webhook's secret.
    /// Exit 0 when it is Valet's and fresh, 1 otherwise.
    Verify {
        /// The file holding the webhook's secret (as in `[[webhooks]] secret_file`).
        #[arg(long)]
        secret_file: std::path::PathBuf,
        /// The Valet-Webhook-Timestamp header.
        #[arg(long)]
        timestamp: i64,
        /// The Valet-Webhook-Signature header.
        #[arg(long)]
        signature: String,
        /// The exact request body; `-` or absent: stdin.
        #[arg(long)]
        body_file: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Check an audit trail's hash chain: a removed, reordered or edited line is reported. A
    /// trail rotated into several files is checked as one: give them oldest first. Prints the
    /// last line's hash: keep it elsewhere and check later that the trail still reaches it.
    Verify {
        /// The trail's files (`[audit] file` and its rotated copies), oldest first.
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
        /// The last hash of the file before the first one given, when the older files are gone
        /// (printed by an earlier verify of them).
        #[arg(long)]
        after: Option<String>,
    },
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// TOML config file (env VALET_CONFIG).
    #[arg(long, short)]
    pub config: Option<String>,
    /// Development mode: loopback only, a one-time admin key on first start, the embedded store
    /// unless the config names another.
    #[arg(long)]
    pub dev: bool,
    /// gRPC listen address, for agents and the CLI (default 127.0.0.1:50051; env
    /// VALET_GRPC_LISTEN).
    #[arg(long)]
    pub grpc_listen: Option<String>,
    /// HTTP listen address: OAuth callbacks, health, metrics (default 127.0.0.1:8080; env
    /// VALET_HTTP_LISTEN).
    #[arg(long)]
    pub http_listen: Option<String>,
    /// Base URL the browser reaches the HTTP listener at; decides the redirect URI.
    #[arg(long)]
    pub public_url: Option<String>,
    /// Where the embedded store and the dev admin key's hash live (default ./valet-data; env
    /// VALET_DATA_DIR).
    #[arg(long)]
    pub data_dir: Option<String>,
    /// Read the admin API key from this file instead of generating one.
    #[arg(long)]
    pub admin_key_file: Option<String>,
    /// `embedded`, `vault` (with a `[vault]` section) or `memory` (env VALET_STORE).
    #[arg(long)]
    pub store: Option<String>,
    /// `text` or `json`.
    #[arg(long)]
    pub log_format: Option<String>,
    /// A tracing filter, e.g. `info` or `valet=debug`.
    #[arg(long)]
    pub log_level: Option<String>,
}

impl From<&ServeArgs> for Overrides {
    fn from(a: &ServeArgs) -> Self {
        Overrides {
            config: a.config.clone(),
            dev: a.dev,
            grpc_listen: a.grpc_listen.clone(),
            http_listen: a.http_listen.clone(),
            public_url: a.public_url.clone(),
            data_dir: a.data_dir.clone(),
            admin_key_file: a.admin_key_file.clone(),
            store: a.store.clone(),
            log_format: a.log_format.clone(),
            log_level: a.log_level.clone(),
            store_only: false,
        }
    }
}

/// How to reach the daemon: accepted before or after a group's subcommand (`valet provider
/// --key K list` and `valet provider list --key K`).
#[derive(Args, Clone)]
pub struct Conn {
    /// The daemon's gRPC address.
    #[arg(
        long,
        global = true,
        env = "VALET_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// API key (prefer the env var: flags show up in `ps`).
    #[arg(long, global = true, env = "VALET_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// For an https:// server: the CA certificate (PEM) that signed the daemon's certificate
    /// (absent: the system's trusted roots).
    #[arg(long, global = true, env = "VALET_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// mTLS: this client certificate (PEM), whose SAN is a caller's tls_identity (no key needed).
    #[arg(long, global = true, env = "VALET_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// mTLS: the client certificate's private key (PEM).
    #[arg(long, global = true, env = "VALET_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

/// Whether a key is set, never the key.
impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("server", &self.server)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .finish()
    }
}

impl Conn {
    async fn connect(&self) -> anyhow::Result<Client> {
        // An https:// server without --tls-ca is trusted through the system's roots (a daemon
        // behind a publicly trusted certificate), as the Python client does.
        if self.tls_ca.is_none() && !self.server.starts_with("https://") {
            if self.tls_cert.is_some() {
                bail!("--tls-cert is for an https:// server (the daemon's grpc_tls)");
            }
            return Client::connect(&self.server, self.key.as_deref()).await;
        }
        let tls = crate::client::TlsFiles {
            ca: self.tls_ca.clone(),
            identity: self.tls_cert.clone().zip(self.tls_key.clone()),
        };
        Client::connect_tls(&self.server, self.key.as_deref(), &tls).await
    }
}

/// Runs a client command against a daemon (or, for `key` and `store`, without one).
pub async fn run_client(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Provider { cmd, conn } => provider::run(cmd, &conn).await,
        Command::Auth { args, conn } => auth::auth(args, &conn).await,
        Command::Grants { filter, conn } => auth::grants(filter, &conn).await,
        Command::Grant { cmd, conn } => auth::grant(cmd, &conn).await,
        Command::Resolve {
            reference,
            min_ttl,
            target_url,
            conn,
        } => auth::resolve(reference, min_ttl, target_url, &conn).await,
        Command::Revoke {
            provider,
            user,
            agent,
            account,
            reference,
            conn,
        } => {
            let target = auth::RevokeTarget {
                provider,
                user,
                agent,
                reference,
                account,
            };
            auth::revoke(target, &conn).await
        }
        Command::Credential { cmd, conn } => credential::run(cmd, &conn).await,
        Command::Key { cmd } => key::run(cmd),
        Command::Store { cmd } => store::run(cmd).await,
        Command::Audit {
            cmd: AuditCmd::Verify { files, after },
        } => {
            let paths: Vec<&std::path::Path> = files.iter().map(|f| f.as_path()).collect();
            let v = crate::audit::verify(&paths, after.as_deref())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            println!(
                "{}: {} event(s), chain intact; last hash {}",
                names.join(", "),
                v.events,
                v.last_hash
            );
            for file in &v.new_chains {
                println!(
                    "note: {} starts a new chain (the daemon started on a new file), so nothing links it to the file before",
                    file.display()
                );
            }
            Ok(())
        }
        Command::Webhook {
            cmd:
                WebhookCmd::Verify {
                    secret_file,
                    timestamp,
                    signature,
                    body_file,
                },
        } => {
            use std::io::Read as _;
            let secret = read_secret_file("--secret-file", &secret_file)?;
            let body = match body_file.filter(|p| p.as_os_str() != "-") {
                Some(p) => {
                    std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?
                }
                None => {
                    let mut b = Vec::new();
                    std::io::stdin().read_to_end(&mut b)?;
                    b
                }
            };
            let now = crate::clock::Clock::now_unix(&crate::clock::SystemClock);
            crate::webhooks::verify(&secret.trim().into(), timestamp, &signature, &body, now)
                .map_err(|e| anyhow::anyhow!("not a valid Valet webhook: {e}"))?;
            println!("valid: signed by this secret, {}s old", now - timestamp);
            Ok(())
        }
        Command::Serve(_) | Command::CheckConfig(_) => bail!("not a client command"),
    }
}
