//! `valet provider create|get|list|update|delete`: provider configuration over the admin API.
//! The client secret goes one way only, from a file or an environment variable to the daemon.

use super::Conn;
use super::print::{explain, kind_name, print_provider};
use crate::pb;
use crate::pb::providers_client::ProvidersClient;
use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};

#[derive(Debug, Subcommand)]
pub enum ProviderCmd {
    /// Add a provider (`--profile` fills in a known one's endpoints); prints its redirect URI.
    Create(Box<ProviderArgs>),
    /// Show one provider's settings (secrets never shown).
    Get { id: String },
    /// List the providers.
    List,
    /// Change the given fields; the rest keep their values.
    Update(Box<ProviderArgs>),
    /// Delete a provider with its grants and references.
    Delete {
        id: String,
        /// First revoke every grant's tokens at the provider (needs its revocation_url).
        #[arg(long)]
        revoke_at_provider: bool,
    },
    /// List the provider profiles (GitHub, Google, Slack, …) `create --profile` can start from,
    /// or show what one does.
    Profiles {
        /// Show this profile: its endpoints and how the provider departs from the RFCs.
        name: Option<String>,
        /// Also read the operator's own profiles from this directory (the daemon's `profiles_dir`).
        #[arg(long)]
        dir: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    Oauth2,
    Oidc,
    /// A token for the client itself (no user, no consent).
    #[value(alias = "client_credentials")]
    ClientCredentials,
    /// A static API key per user (`valet credential put`), placed per --location/--credential-name.
    #[value(alias = "api_key")]
    ApiKey,
    /// Authorization: Basic from a stored username and password.
    #[value(alias = "http_basic")]
    HttpBasic,
    /// Authorization: Bearer with a stored static token.
    #[value(alias = "http_bearer")]
    HttpBearer,
    /// The JWT bearer grant (RFC 7523): a signed assertion buys the token (--private-key-file).
    #[value(alias = "service_account")]
    ServiceAccount,
    /// An OAuth-protected MCP server, discovered from --mcp-server.
    Mcp,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Flow {
    /// The browser comes back to Valet's callback.
    Browser,
    /// The user enters a code at the provider (RFC 8628).
    Device,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Handout {
    /// Agents may receive access tokens or references.
    Any,
    /// Agents only ever receive references (`valet resolve` turns one into the token right
    /// before each call).
    ReferenceOnly,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Place {
    Header,
    Query,
    Cookie,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AuthMethod {
    Basic,
    Post,
    /// A JWT signed with --private-key-file (RFC 7523 section 2.2).
    PrivateKeyJwt,
}

#[derive(Debug, Args)]
pub struct ProviderArgs {
    pub id: String,
    #[arg(long)]
    pub kind: Option<Kind>,
    /// A display name (default: the id).
    #[arg(long)]
    pub name: Option<String>,
    /// The OAuth client id registered at the provider.
    #[arg(long)]
    pub client_id: Option<String>,
    /// File holding the client secret.
    #[arg(long, conflicts_with = "client_secret_env")]
    pub client_secret_file: Option<String>,
    /// Name of an environment variable holding the client secret.
    #[arg(long)]
    pub client_secret_env: Option<String>,
    /// oauth2: the provider's authorization endpoint (where users consent).
    #[arg(long)]
    pub auth_url: Option<String>,
    /// oauth2, client_credentials, service_account: the provider's token endpoint.
    #[arg(long)]
    pub token_url: Option<String>,
    /// OIDC issuer; discovery fills the endpoints.
    #[arg(long)]
    pub issuer: Option<String>,
    /// An MCP server's URL (kind mcp, implied): Valet discovers its authorization server and
    /// registers itself there.
    #[arg(long)]
    pub mcp_server: Option<String>,
    /// A host this provider's tokens may be sent to (`valet resolve --target-url`); repeat for
    /// more; `*.example.com` for subdomains. mcp providers default to the server's host.
    #[arg(long = "egress-host", conflicts_with = "no_egress_hosts")]
    pub egress_hosts: Vec<String>,
    /// update: drop the egress list (tokens may again be resolved for any host; mcp providers
    /// go back to the server's host).
    #[arg(long)]
    pub no_egress_hosts: bool,
    /// Refresh idle grants in the background after this many seconds (providers that revoke
    /// unused refresh tokens); 0: off.
    #[arg(long)]
    pub keep_alive_seconds: Option<u32>,
    /// Re-attestation: users consent again this many seconds after their last consent; 0: never.
    #[arg(long)]
    pub max_grant_age_seconds: Option<u32>,
    /// What agents may receive for this provider's grants.
    #[arg(long)]
    pub handout: Option<Handout>,
    /// Lifetime of the references issued for this provider; 0: the default (30 days).
    #[arg(long)]
    pub reference_ttl_seconds: Option<u32>,
    #[arg(long)]
    pub revocation_url: Option<String>,
    /// Default scope (repeat).
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// Extra authorization parameter `name=value` (repeat), e.g. `prompt=consent`.
    #[arg(long = "param")]
    pub params: Vec<String>,
    /// update: remove the extra authorization parameter `name` (repeat).
    #[arg(long = "unset-param")]
    pub unset_params: Vec<String>,
    #[arg(long)]
    pub auth_method: Option<AuthMethod>,
    /// Start from a provider profile (`valet provider profiles`): it fills endpoints, auth
    /// method, scopes, parameters and the provider's quirks; flags given here win.
    #[arg(long)]
    pub profile: Option<String>,
    /// A profile variable `name=value` (repeat), e.g. `tenant=contoso.onmicrosoft.com`.
    #[arg(long = "var")]
    pub vars: Vec<String>,
    /// api_key: where the key goes.
    #[arg(long)]
    pub location: Option<Place>,
    /// api_key: the header, query parameter or cookie name, e.g. X-API-Key.
    #[arg(long)]
    pub credential_name: Option<String>,
    /// api_key: text before the key, e.g. "token ".
    #[arg(long)]
    pub credential_prefix: Option<String>,
    /// The token endpoint does token exchange (RFC 8693): `valet auth --audience` exchanges the
    /// user's grant token (oauth2, oidc) or an agent's token (client_credentials).
    #[arg(long)]
    pub token_exchange: Option<bool>,
    /// oauth2 and oidc: consent binding. After consent the browser goes to this URL (your app)
    /// with a one-time `session`; your app calls CompleteAuthorization(session, user_id).
    #[arg(long)]
    pub consent_return_url: Option<String>,
    /// oauth2 and oidc: a re-consent by another provider account replaces the grant (audited)
    /// instead of being refused.
    #[arg(long)]
    pub allow_account_change: Option<bool>,
    /// oauth2 and oidc: how users consent (device: RFC 8628 user codes, no browser callback).
    #[arg(long)]
    pub consent_flow: Option<Flow>,
    /// The RFC 8628 device authorization endpoint (oidc discovers it).
    #[arg(long)]
    pub device_authorization_url: Option<String>,
    /// service_account and --auth-method private-key-jwt: a PEM private key or a Google
    /// service-account JSON key file.
    #[arg(long)]
    pub private_key_file: Option<String>,
    /// The `kid` of signed assertions (a JSON key's private_key_id otherwise).
    #[arg(long)]
    pub key_id: Option<String>,
    /// service_account: the assertion's iss (default: the JSON key's client_email or client id).
    #[arg(long)]
    pub assertion_issuer: Option<String>,
    /// service_account: the assertion's sub (default: the issuer).
    #[arg(long)]
    pub assertion_subject: Option<String>,
    /// service_account: the assertion's aud (default: the token URL).
    #[arg(long)]
    pub assertion_audience: Option<String>,
    /// service_account: `--user` of `valet auth` becomes the assertion's sub (impersonation,
    /// e.g. Google domain-wide delegation).
    #[arg(long)]
    pub subject_from_user: Option<bool>,
}

type Providers = ProvidersClient<crate::client::AuthedChannel>;

pub(super) async fn run(cmd: ProviderCmd, conn: &Conn) -> anyhow::Result<()> {
    if let ProviderCmd::Profiles { name, dir } = &cmd {
        return profiles(name.as_deref(), dir.as_deref());
    }
    let mut providers = conn.connect().await?.providers();
    match cmd {
        ProviderCmd::Create(a) => create(&mut providers, *a).await,
        ProviderCmd::Get { id } => get(&mut providers, id).await,
        ProviderCmd::List => list(&mut providers).await,
        ProviderCmd::Update(a) => update(&mut providers, *a).await,
        ProviderCmd::Delete {
            id,
            revoke_at_provider,
        } => delete(&mut providers, id, revoke_at_provider).await,
        // Read locally, before connecting (above).
        ProviderCmd::Profiles { .. } => Ok(()),
    }
}

/// `valet provider profiles`: the built-in catalogue, plus an operator directory.
pub(super) fn profiles(name: Option<&str>, dir: Option<&str>) -> anyhow::Result<()> {
    let catalogue = match dir {
        Some(d) => crate::profile::Catalogue::with_dir(std::path::Path::new(d))?,
        None => crate::profile::Catalogue::builtin()?,
    };
    if let Some(name) = name {
        let p = catalogue
            .get(name)
            .with_context(|| catalogue.unknown(name))?;
        super::print::profile(p);
        return Ok(());
    }
    for p in catalogue.iter() {
        let vars = if p.variables.is_empty() {
            String::new()
        } else {
            format!(
                "  (--var {})",
                p.variables
                    .iter()
                    .map(|v| format!("{v}=…"))
                    .collect::<Vec<_>>()
                    .join(" --var ")
            )
        };
        println!(
            "{:<14} {}{vars}\n               {}",
            p.name, p.title, p.docs
        );
    }
    Ok(())
}

async fn create(providers: &mut Providers, a: ProviderArgs) -> anyhow::Result<()> {
    let provider = Some(provider_message(a, None)?);
    let p = providers
        .create_provider(pb::CreateProviderRequest { provider })
        .await
        .map_err(explain)?;
    println!("created:");
    print_provider(p.get_ref());
    Ok(())
}

async fn get(providers: &mut Providers, id: String) -> anyhow::Result<()> {
    let p = providers
        .get_provider(pb::GetProviderRequest { provider_id: id })
        .await
        .map_err(explain)?;
    print_provider(p.get_ref());
    Ok(())
}

async fn list(providers: &mut Providers) -> anyhow::Result<()> {
    let list = providers
        .list_providers(pb::ListProvidersRequest {})
        .await
        .map_err(explain)?;
    let providers = &list.get_ref().providers;
    if providers.is_empty() {
        println!("no providers; create one with `valet provider create`");
        return Ok(());
    }
    let rows: Vec<[&str; 4]> = providers
        .iter()
        .map(|p| {
            let redirect = if p.redirect_uri.is_empty() {
                "-"
            } else {
                p.redirect_uri.as_str()
            };
            [&p.provider_id, kind_name(p.kind), &p.name, redirect]
        })
        .collect();
    let header = ["PROVIDER", "KIND", "NAME", "REDIRECT URI"];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let (a, b, c) = (width(0), width(1), width(2));
    for [id, kind, name, redirect] in std::iter::once(header).chain(rows) {
        println!("{id:<a$}  {kind:<b$}  {name:<c$}  {redirect}");
    }
    Ok(())
}

/// Read, change the given fields, write back: the API replaces the whole provider.
async fn update(providers: &mut Providers, a: ProviderArgs) -> anyhow::Result<()> {
    let current = providers
        .get_provider(pb::GetProviderRequest {
            provider_id: a.id.clone(),
        })
        .await
        .map_err(explain)?
        .into_inner();
    let id = a.id.clone();
    let unset = a.unset_params.clone();
    let unchanged = current.clone();
    let provider = provider_message(a, Some(current))?;
    if provider == unchanged {
        println!(
            "nothing to change for provider {id}: pass the settings to change (`valet provider update --help`)"
        );
        return Ok(());
    }
    let provider = Some(provider);
    let p = providers
        .update_provider(pb::UpdateProviderRequest { provider })
        .await
        .map_err(explain)?;
    println!("updated:");
    print_provider(p.get_ref());
    // An operator's own profile (profiles_dir) may set it: back with the update.
    for name in unset
        .iter()
        .filter(|n| p.get_ref().extra_auth_params.contains_key(*n))
    {
        eprintln!(
            "warning: --unset-param {name:?}: the provider's profile sets it, so it stays (give it another value with --param {name}=...)"
        );
    }
    Ok(())
}

async fn delete(providers: &mut Providers, id: String, revoke: bool) -> anyhow::Result<()> {
    let r = providers
        .delete_provider(pb::DeleteProviderRequest {
            provider_id: id.clone(),
            revoke_at_provider: revoke,
        })
        .await
        .map_err(explain)?
        .into_inner();
    let grants = match r.grants_deleted {
        1 => "its 1 grant".to_owned(),
        n => format!("its {n} grants"),
    };
    println!("deleted provider {id} and {grants}");
    if revoke {
        println!(
            "the provider revoked the tokens of {} grant(s); {} failed (see the daemon log)",
            r.revoked_at_provider, r.revocation_failures
        );
    }
    Ok(())
}

/// The provider to send: `base` (the current one, for update) with the given flags applied.
fn provider_message(a: ProviderArgs, base: Option<pb::Provider>) -> anyhow::Result<pb::Provider> {
    let mut p = base.unwrap_or_default();
    p.provider_id = a.id;
    // Write-only: the daemon never returns it, and an empty one keeps the stored secret.
    p.client_secret = String::new();
    if let Some(k) = a.kind {
        p.kind = match k {
            Kind::Oauth2 => pb::ProviderKind::Oauth2,
            Kind::Oidc => pb::ProviderKind::Oidc,
            Kind::ClientCredentials => pb::ProviderKind::ClientCredentials,
            Kind::ApiKey => pb::ProviderKind::ApiKey,
            Kind::HttpBasic => pb::ProviderKind::HttpBasic,
            Kind::HttpBearer => pb::ProviderKind::HttpBearer,
            Kind::ServiceAccount => pb::ProviderKind::ServiceAccount,
            Kind::Mcp => pb::ProviderKind::Mcp,
        } as i32;
    }
    if let Some(url) = a.mcp_server {
        p.mcp_server_url = url;
        if a.kind.is_none() {
            p.kind = pb::ProviderKind::Mcp as i32;
        }
    }
    if !a.egress_hosts.is_empty() {
        p.egress_hosts = a.egress_hosts;
    }
    if a.no_egress_hosts {
        p.egress_hosts.clear();
    }
    if let Some(s) = a.keep_alive_seconds {
        p.keep_alive_seconds = s;
    }
    if let Some(s) = a.max_grant_age_seconds {
        p.max_grant_age_seconds = s;
    }
    if let Some(h) = a.handout {
        p.handout_policy = match h {
            Handout::Any => pb::HandoutPolicy::Any,
            Handout::ReferenceOnly => pb::HandoutPolicy::ReferenceOnly,
        } as i32;
    }
    if let Some(s) = a.reference_ttl_seconds {
        p.reference_ttl_seconds = s;
    }
    if p.kind == pb::ProviderKind::Mcp as i32 {
        // Discovery refills these; sending them back would be refused.
        p.auth_url.clear();
        p.token_url.clear();
        p.issuer.clear();
        p.revocation_url.clear();
        p.mcp = None;
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
    let profile = a.profile.clone().unwrap_or_else(|| p.profile.clone());
    let builtin = crate::profile::Catalogue::builtin().ok();
    for name in a.unset_params {
        // A profile's parameter comes back with every update: said, not seemingly removed.
        let from_profile = builtin
            .as_ref()
            .and_then(|c| c.get(&profile))
            .is_some_and(|pr| pr.extra_auth_params.contains_key(&name));
        anyhow::ensure!(
            !from_profile,
            "--unset-param {name:?}: the profile {profile:?} sets it, and it cannot be removed (give it another value with --param {name}=...)"
        );
        anyhow::ensure!(
            p.extra_auth_params.remove(&name).is_some(),
            "--unset-param {name:?}: the provider has no such parameter"
        );
    }
    if let Some(m) = a.auth_method {
        p.token_auth_method = match m {
            AuthMethod::Basic => pb::TokenAuthMethod::ClientSecretBasic,
            AuthMethod::Post => pb::TokenAuthMethod::ClientSecretPost,
            AuthMethod::PrivateKeyJwt => pb::TokenAuthMethod::PrivateKeyJwt,
        } as i32;
    }
    set(&mut p.profile, a.profile);
    set(&mut p.credential_name, a.credential_name);
    set(&mut p.credential_prefix, a.credential_prefix);
    if let Some(l) = a.location {
        p.credential_location = match l {
            Place::Header => pb::CredentialLocation::Header,
            Place::Query => pb::CredentialLocation::Query,
            Place::Cookie => pb::CredentialLocation::Cookie,
        } as i32;
    }
    let mut given = std::collections::HashSet::new();
    for kv in a.vars {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--var {kv:?} must be name=value"))?;
        if !given.insert(k.to_owned()) {
            anyhow::bail!("--var {k} is given twice: give each variable once");
        }
        p.profile_vars.insert(k.to_owned(), v.to_owned());
    }
    if let Some(flow) = a.consent_flow {
        p.consent_flow = match flow {
            Flow::Browser => pb::ConsentFlow::Browser,
            Flow::Device => pb::ConsentFlow::Device,
        } as i32;
    }
    set(&mut p.device_authorization_url, a.device_authorization_url);
    set(&mut p.consent_return_url, a.consent_return_url);
    if let Some(on) = a.allow_account_change {
        p.allow_account_change = on;
    }
    if let Some(on) = a.token_exchange {
        p.token_exchange = on;
    }
    set(&mut p.key_id, a.key_id);
    set(&mut p.assertion_issuer, a.assertion_issuer);
    set(&mut p.assertion_subject, a.assertion_subject);
    set(&mut p.assertion_audience, a.assertion_audience);
    if let Some(on) = a.subject_from_user {
        p.subject_from_user = on;
    }
    p.client_secret = client_secret(a.client_secret_file, a.client_secret_env)?;
    // Write-only like the secret: read from a file, never a flag value.
    p.private_key = match a.private_key_file {
        Some(path) => super::read_secret_file("--private-key-file", &path)?,
        None => String::new(),
    };
    Ok(p)
}

/// The client secret from a file (trimmed) or an environment variable; empty when neither is
/// given. Never a flag value: flags show up in `ps`.
fn client_secret(file: Option<String>, env: Option<String>) -> anyhow::Result<String> {
    let secret = if let Some(path) = &file {
        super::read_secret_file("--client-secret-file", path)?
            .trim()
            .to_owned()
    } else if let Some(var) = &env {
        super::read_secret_env("--client-secret-env", var)?
    } else {
        return Ok(String::new());
    };
    // Empty would mean "keep the stored one" to the daemon: say what was given instead.
    anyhow::ensure!(
        !secret.is_empty(),
        "the client secret is empty: {}",
        file.map_or_else(
            || format!(
                "environment variable {} holds nothing",
                env.unwrap_or_default()
            ),
            |p| format!("{p} holds nothing")
        )
    );
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    /// Kinds as the daemon's messages spell them (`api_key`) are taken as well as the
    /// command line's own (`api-key`).
    #[test]
    fn kinds_are_taken_in_either_spelling() {
        for (given, kind) in [
            ("api-key", "ApiKey"),
            ("api_key", "ApiKey"),
            ("client_credentials", "ClientCredentials"),
            ("service_account", "ServiceAccount"),
        ] {
            let cli = crate::cli::Cli::try_parse_from([
                "valet", "provider", "--key", "k", "create", "p", "--kind", given,
            ])
            .unwrap();
            let crate::cli::Command::Provider {
                cmd: ProviderCmd::Create(args),
                ..
            } = cli.command
            else {
                panic!("not a provider create");
            };
            assert_eq!(
                format!("{:?}", args.kind),
                format!("Some({kind})"),
                "{given}"
            );
        }
    }

    fn create_args(extra: &[&str]) -> ProviderArgs {
        let mut argv = vec!["valet", "provider", "--key", "k", "create", "shop"];
        argv.extend_from_slice(extra);
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        let crate::cli::Command::Provider {
            cmd: ProviderCmd::Create(args),
            ..
        } = cli.command
        else {
            panic!("not a provider create");
        };
        *args
    }

    /// A variable given twice is refused (the last one used to win, silently); one given again
    /// on an update replaces the stored value.
    #[test]
    fn a_profile_variable_given_twice_is_refused() {
        let twice = create_args(&["--var", "shop=a", "--var", "shop=b"]);
        let e = provider_message(twice, None).unwrap_err();
        assert!(e.to_string().contains("--var shop is given twice"), "{e}");
        let stored = pb::Provider {
            profile_vars: [("shop".to_owned(), "old".to_owned())].into(),
            ..Default::default()
        };
        let update = provider_message(create_args(&["--var", "shop=new"]), Some(stored)).unwrap();
        assert_eq!(update.profile_vars["shop"], "new");
    }
}
