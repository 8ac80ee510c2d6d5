//! The command line: `serve` and `check-config` for operators, and client commands that call a
//! running daemon over gRPC (`provider`, `auth`, `grants`, `revoke`, `key new`).

use crate::config::Overrides;
use crate::pb;
use crate::pb::credentials_client::CredentialsClient;
use crate::pb::providers_client::ProvidersClient;
use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

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
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Turn a reference into a fresh access token (as an agent would right before an API call).
    Resolve {
        reference: String,
        #[arg(long, default_value_t = 0)]
        min_ttl: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove a grant, or with --reference one reference.
    Revoke {
        #[arg(long, required_unless_present = "reference")]
        provider: Option<String>,
        #[arg(long, required_unless_present = "reference")]
        user: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        /// Revoke this reference instead of a grant.
        #[arg(long, conflicts_with_all = ["provider", "user", "agent"])]
        reference: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// API keys for the `[[callers]]` config.
    Key {
        #[command(subcommand)]
        cmd: KeyCmd,
    },
    /// Operate on secret stores directly (the daemon need not run).
    Store {
        #[command(subcommand)]
        cmd: StoreCmd,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCmd {
    /// Copy providers and grants from one store to another (e.g. embedded → vault). Idempotent:
    /// records already identical at the destination are left alone.
    Copy {
        /// Config file of the source daemon.
        #[arg(long)]
        from: String,
        /// Config file of the destination daemon.
        #[arg(long)]
        to: String,
        /// Show what would be copied; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// TOML config file (env VALET_CONFIG).
    #[arg(long, short)]
    pub config: Option<String>,
    /// Development mode: loopback only, embedded store, a one-time admin key on first start.
    #[arg(long)]
    pub dev: bool,
    #[arg(long)]
    pub grpc_listen: Option<String>,
    #[arg(long)]
    pub http_listen: Option<String>,
    /// Base URL the browser reaches the HTTP listener at; decides the redirect URI.
    #[arg(long)]
    pub public_url: Option<String>,
    #[arg(long)]
    pub data_dir: Option<String>,
    /// Read the admin API key from this file instead of generating one.
    #[arg(long)]
    pub admin_key_file: Option<String>,
    /// `embedded` or `memory`.
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
        }
    }
}

#[derive(Debug, Args, Clone)]
pub struct Conn {
    /// The daemon's gRPC address.
    #[arg(long, env = "VALET_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// API key (prefer the env var: flags show up in `ps`).
    #[arg(long, env = "VALET_KEY", hide_env_values = true)]
    pub key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ProviderCmd {
    Create(ProviderArgs),
    Get {
        id: String,
    },
    List,
    /// Change the given fields; the rest keep their values.
    Update(ProviderArgs),
    Delete {
        id: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    Oauth2,
    Oidc,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AuthMethod {
    Basic,
    Post,
}

#[derive(Debug, Args)]
pub struct ProviderArgs {
    pub id: String,
    #[arg(long)]
    pub kind: Option<Kind>,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub client_id: Option<String>,
    /// File holding the client secret.
    #[arg(long)]
    pub client_secret_file: Option<String>,
    /// Name of an environment variable holding the client secret.
    #[arg(long)]
    pub client_secret_env: Option<String>,
    #[arg(long)]
    pub auth_url: Option<String>,
    #[arg(long)]
    pub token_url: Option<String>,
    /// OIDC issuer; discovery fills the endpoints.
    #[arg(long)]
    pub issuer: Option<String>,
    #[arg(long)]
    pub revocation_url: Option<String>,
    /// Default scope (repeat).
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// Extra authorization parameter `name=value` (repeat), e.g. `prompt=consent`.
    #[arg(long = "param")]
    pub params: Vec<String>,
    #[arg(long)]
    pub auth_method: Option<AuthMethod>,
}

#[derive(Debug, Args)]
pub struct AuthArgs {
    #[arg(long)]
    pub provider: String,
    #[arg(long)]
    pub user: String,
    #[arg(long)]
    pub agent: Option<String>,
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// Minimum seconds of life the token must have.
    #[arg(long, default_value_t = 0)]
    pub min_ttl: u32,
    /// Start a new consent even if a grant exists.
    #[arg(long)]
    pub force: bool,
    /// Print a reference (for session state) instead of a token; `valet resolve` turns it into one.
    #[arg(long)]
    pub reference: bool,
    /// With --reference: the reference resolves once.
    #[arg(long, requires = "reference")]
    pub single_use: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Print a new random API key and the `key_sha256` line for the config.
    New,
}

type Authed = InterceptedService<Channel, AddKey>;

#[derive(Clone)]
pub struct AddKey(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for AddKey {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

async fn connect(
    conn: &Conn,
) -> anyhow::Result<(ProvidersClient<Authed>, CredentialsClient<Authed>)> {
    let channel = Channel::from_shared(conn.server.clone())
        .context("--server must be a URL like http://127.0.0.1:50051")?
        .connect()
        .await
        .with_context(|| {
            format!(
                "cannot reach valet at {} (is `valet serve` running?)",
                conn.server
            )
        })?;
    let key = match &conn.key {
        Some(k) => Some(
            format!("Bearer {k}")
                .parse()
                .context("the API key holds characters not allowed in metadata")?,
        ),
        None => None,
    };
    let add = AddKey(key);
    Ok((
        ProvidersClient::with_interceptor(channel.clone(), add.clone()),
        CredentialsClient::with_interceptor(channel, add),
    ))
}

/// Renders a gRPC error for a person: the message, and what to do for the common cases.
fn explain(s: tonic::Status) -> anyhow::Error {
    let hint = match s.code() {
        tonic::Code::Unauthenticated => "\nhint: pass the API key with --key or VALET_KEY",
        tonic::Code::PermissionDenied => "\nhint: this needs an admin key",
        tonic::Code::Unavailable => "\nhint: retry shortly",
        _ => "",
    };
    anyhow::anyhow!("{:?}: {}{hint}", s.code(), s.message())
}

fn when(unix: i64) -> String {
    if unix == 0 {
        return "unknown".into();
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0);
    format!("{unix} (in {}s)", unix - now)
}

fn print_provider(p: &pb::Provider) {
    let kind = match pb::ProviderKind::try_from(p.kind) {
        Ok(pb::ProviderKind::Oidc) => "oidc",
        _ => "oauth2",
    };
    let method = match pb::TokenAuthMethod::try_from(p.token_auth_method) {
        Ok(pb::TokenAuthMethod::ClientSecretPost) => "client_secret_post",
        _ => "client_secret_basic",
    };
    println!("provider_id:       {}", p.provider_id);
    println!("name:              {}", p.name);
    println!("kind:              {kind}");
    println!("client_id:         {}", p.client_id);
    println!(
        "client_secret:     {}",
        if p.has_client_secret {
            "(set)"
        } else {
            "(none)"
        }
    );
    if !p.issuer.is_empty() {
        println!("issuer:            {}", p.issuer);
    }
    println!("auth_url:          {}", p.auth_url);
    println!("token_url:         {}", p.token_url);
    println!("token_auth_method: {method}");
    println!("default_scopes:    {}", p.default_scopes.join(" "));
    for (k, v) in &p.extra_auth_params {
        println!("param:             {k}={v}");
    }
    println!(
        "redirect_uri:      {}  (register this at the provider)",
        p.redirect_uri
    );
}

fn provider_message(a: ProviderArgs, base: Option<pb::Provider>) -> anyhow::Result<pb::Provider> {
    let mut p = base.unwrap_or_default();
    p.provider_id = a.id;
    p.client_secret = String::new();
    if let Some(k) = a.kind {
        p.kind = match k {
            Kind::Oauth2 => pb::ProviderKind::Oauth2,
            Kind::Oidc => pb::ProviderKind::Oidc,
        } as i32;
    }
    if p.kind == pb::ProviderKind::Oidc as i32 {
        // Discovery refills these; sending them back would be refused.
        p.auth_url.clear();
        p.token_url.clear();
    }
    let set = |slot: &mut String, v: Option<String>| {
        if let Some(v) = v {
            *slot = v;
        }
    };
    set(&mut p.name, a.name);
    set(&mut p.client_id, a.client_id);
    set(&mut p.auth_url, a.auth_url);
    set(&mut p.token_url, a.token_url);
    set(&mut p.issuer, a.issuer);
    set(&mut p.revocation_url, a.revocation_url);
    if !a.scopes.is_empty() {
        p.default_scopes = a.scopes;
    }
    for kv in a.params {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--param {kv:?} must be name=value"))?;
        p.extra_auth_params.insert(k.to_owned(), v.to_owned());
    }
    if let Some(m) = a.auth_method {
        p.token_auth_method = match m {
            AuthMethod::Basic => pb::TokenAuthMethod::ClientSecretBasic,
            AuthMethod::Post => pb::TokenAuthMethod::ClientSecretPost,
        } as i32;
    }
    if let Some(path) = a.client_secret_file {
        p.client_secret = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {path}"))?
            .trim()
            .to_owned();
    } else if let Some(var) = a.client_secret_env {
        p.client_secret = std::env::var(&var)
            .with_context(|| format!("environment variable {var} is not set"))?;
    }
    Ok(p)
}

/// Runs a client command against a daemon.
pub async fn run_client(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Provider { cmd, conn } => {
            let (mut providers, _) = connect(&conn).await?;
            match cmd {
                ProviderCmd::Create(a) => {
                    let provider = Some(provider_message(a, None)?);
                    let p = providers
                        .create_provider(pb::CreateProviderRequest { provider })
                        .await
                        .map_err(explain)?;
                    println!("created:");
                    print_provider(p.get_ref());
                }
                ProviderCmd::Get { id } => {
                    let p = providers
                        .get_provider(pb::GetProviderRequest { provider_id: id })
                        .await
                        .map_err(explain)?;
                    print_provider(p.get_ref());
                }
                ProviderCmd::List => {
                    let list = providers
                        .list_providers(pb::ListProvidersRequest {})
                        .await
                        .map_err(explain)?;
                    if list.get_ref().providers.is_empty() {
                        println!("no providers; create one with `valet provider create`");
                    }
                    for p in &list.get_ref().providers {
                        println!("{}\t{}\t{}", p.provider_id, p.name, p.redirect_uri);
                    }
                }
                ProviderCmd::Update(a) => {
                    let current = providers
                        .get_provider(pb::GetProviderRequest {
                            provider_id: a.id.clone(),
                        })
                        .await
                        .map_err(explain)?
                        .into_inner();
                    let provider = Some(provider_message(a, Some(current))?);
                    let p = providers
                        .update_provider(pb::UpdateProviderRequest { provider })
                        .await
                        .map_err(explain)?;
                    println!("updated:");
                    print_provider(p.get_ref());
                }
                ProviderCmd::Delete { id } => {
                    providers
                        .delete_provider(pb::DeleteProviderRequest {
                            provider_id: id.clone(),
                        })
                        .await
                        .map_err(explain)?;
                    println!("deleted provider {id} and its grants");
                }
            }
        }
        Command::Auth { args, conn } => auth(args, &conn).await?,
        Command::Grants {
            provider,
            user,
            conn,
        } => {
            let (_, mut creds) = connect(&conn).await?;
            let list = creds
                .list_grants(pb::ListGrantsRequest {
                    provider_id: provider.unwrap_or_default(),
                    user_id: user.unwrap_or_default(),
                })
                .await
                .map_err(explain)?;
            if list.get_ref().grants.is_empty() {
                println!("no grants");
            }
            for g in &list.get_ref().grants {
                let status = match pb::GrantStatus::try_from(g.status) {
                    Ok(pb::GrantStatus::NeedsReauth) => "needs-reauth",
                    _ => "active",
                };
                let agent = if g.agent_id.is_empty() {
                    "(all agents)"
                } else {
                    &g.agent_id
                };
                println!(
                    "{}\tuser={}\tagent={agent}\t{status}\tscopes={}\tupdated_at={}",
                    g.provider_id,
                    g.user_id,
                    g.scopes.join(" "),
                    g.updated_at
                );
            }
        }
        Command::Resolve {
            reference,
            min_ttl,
            conn,
        } => {
            let (_, mut creds) = connect(&conn).await?;
            let r = creds
                .resolve(pb::ResolveRequest {
                    reference,
                    min_ttl_seconds: min_ttl,
                })
                .await
                .map_err(explain)?
                .into_inner();
            if let Some(t) = r.token {
                println!("access_token: {}", t.access_token);
                println!("expires_at:   {}", when(t.expires_at));
            }
            if let Some(c) = r.credential {
                println!("{}:       {}: {}", c.location, c.name, c.value);
            }
        }
        Command::Revoke {
            provider,
            user,
            agent,
            reference,
            conn,
        } => {
            let (_, mut creds) = connect(&conn).await?;
            let r = creds
                .revoke(pb::RevokeRequest {
                    provider_id: provider.unwrap_or_default(),
                    user_id: user.unwrap_or_default(),
                    agent_id: agent.unwrap_or_default(),
                    reference: reference.unwrap_or_default(),
                })
                .await
                .map_err(explain)?;
            println!(
                "{}",
                if r.get_ref().revoked {
                    "revoked"
                } else {
                    "no such grant"
                }
            );
        }
        Command::Key { cmd: KeyCmd::New } => {
            let key = format!(
                "valet_{}",
                crate::secret::random_token(32)
                    .map_err(|_| anyhow::anyhow!("the system RNG failed"))?
            );
            println!("key:        {key}");
            println!(
                "key_sha256: {}",
                hex::encode(crate::secret::sha256(key.as_bytes()))
            );
            println!("(put key_sha256 in a [[callers]] entry; give the key to the caller)");
        }
        Command::Store {
            cmd: StoreCmd::Copy { from, to, dry_run },
        } => crate::ops::copy_store(&from, &to, dry_run).await?,
        Command::Serve(_) | Command::CheckConfig(_) => bail!("not a client command"),
    }
    Ok(())
}

async fn auth(a: AuthArgs, conn: &Conn) -> anyhow::Result<()> {
    use pb::authenticate_response::Result as R;
    let (_, mut creds) = connect(conn).await?;
    let mut resp = creds
        .authenticate(pb::AuthenticateRequest {
            provider_id: a.provider,
            scopes: a.scopes,
            user_id: a.user,
            agent_id: a.agent.unwrap_or_default(),
            handout: if a.reference {
                pb::Handout::Reference
            } else {
                pb::Handout::Token
            } as i32,
            min_ttl_seconds: a.min_ttl,
            force_reauth: a.force,
            single_use: a.single_use,
        })
        .await
        .map_err(explain)?
        .into_inner();
    let mut shown = false;
    loop {
        match resp.result {
            Some(R::Token(t)) => {
                println!("access_token: {}", t.access_token);
                println!("token_type:   {}", t.token_type);
                println!("expires_at:   {}", when(t.expires_at));
                println!("scopes:       {}", t.scopes.join(" "));
                return Ok(());
            }
            Some(R::Pending(p)) => {
                if !shown {
                    println!(
                        "Open this URL in a browser to grant access:\n\n  {}\n",
                        p.auth_url
                    );
                    println!(
                        "Waiting for consent (the flow expires at {})...",
                        when(p.expires_at)
                    );
                    shown = true;
                }
                let mut req = tonic::Request::new(pb::WaitForCompletionRequest {
                    auth_id: p.auth_id,
                    timeout_seconds: 30,
                });
                req.set_timeout(Duration::from_secs(40));
                resp = creds
                    .wait_for_completion(req)
                    .await
                    .map_err(explain)?
                    .into_inner();
            }
            Some(R::Reference(r)) => {
                println!("reference:  {}", r.reference);
                println!("expires_at: {}", when(r.expires_at));
                return Ok(());
            }
            None => bail!("unexpected answer from the daemon"),
        }
    }
}
