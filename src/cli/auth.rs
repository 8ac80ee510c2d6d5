//! `valet auth`, `resolve`, `grants` and `revoke`: what an agent or an operator does with
//! credentials. `auth` walks a person through consent: it prints the URL and waits for the
//! browser to come back.

use super::Conn;
use super::print::{explain, print_grant, span, when};
use crate::client::AuthedChannel;
use crate::pb;
use crate::pb::authenticate_response::Result as Answer;
use crate::pb::credentials_client::CredentialsClient;
use anyhow::bail;
use clap::{Args, ValueEnum};
use std::time::Duration;

#[derive(Debug, Args)]
pub struct AuthArgs {
    /// The provider's id (`valet provider list`).
    #[arg(long)]
    pub provider: String,
    /// The person the agent acts for (not for client_credentials providers).
    #[arg(long)]
    pub user: Option<String>,
    /// The grant of this agent only (absent: the user's grant for every agent).
    #[arg(long)]
    pub agent: Option<String>,
    /// One of the user's several accounts at the provider (e.g. work); absent: the default.
    #[arg(long)]
    pub account: Option<String>,
    /// client_credentials providers (or token_exchange ones): the `audience` parameter.
    #[arg(long)]
    pub audience: Option<String>,
    /// client_credentials providers (or token_exchange ones): the RFC 8707 resource (an absolute URI).
    #[arg(long)]
    pub resource: Option<String>,
    /// The WWW-Authenticate header an MCP server (or any API) answered a 401/403 with: the
    /// scopes its challenge names are asked for too (incremental consent).
    #[arg(long)]
    pub challenge: Option<String>,
    /// A scope to ask for (repeat); absent: the provider's default scopes.
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// Minimum seconds of life the token must have; longer than the provider's tokens live,
    /// every call gets a new token: a refresh (the way to force one), or a new consent for a
    /// grant without a refresh token.
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

/// What `valet revoke` removes: a grant (provider, user, agent) or one reference.
pub(super) struct RevokeTarget {
    pub provider: Option<String>,
    pub user: Option<String>,
    pub agent: Option<String>,
    pub reference: Option<String>,
    pub account: Option<String>,
}

pub(super) async fn auth(a: AuthArgs, conn: &Conn) -> anyhow::Result<()> {
    let min_ttl = a.min_ttl;
    // The grant asked for, to say why a consent is asked for (not with --force: that is why).
    let slot = (!a.force).then(|| pb::ListGrantsRequest {
        provider_id: a.provider.clone(),
        user_id: a.user.clone().unwrap_or_default(),
        agent_id: a.agent.clone().unwrap_or_default(),
        account: a.account.clone().unwrap_or_default(),
        status: pb::GrantStatus::NeedsReauth as i32,
        ..Default::default()
    });
    let mut creds = conn.connect().await?.credentials();
    let mut resp = creds
        .authenticate(pb::AuthenticateRequest {
            subject_token: String::new(),
            subject_token_type: String::new(),
            provider_id: a.provider,
            scopes: a.scopes,
            user_id: a.user.unwrap_or_default(),
            agent_id: a.agent.unwrap_or_default(),
            audience: a.audience.unwrap_or_default(),
            resource: a.resource.unwrap_or_default(),
            handout: if a.reference {
                pb::Handout::Reference
            } else {
                pb::Handout::Token
            } as i32,
            min_ttl_seconds: a.min_ttl,
            force_reauth: a.force,
            single_use: a.single_use,
            challenge: a.challenge.unwrap_or_default(),
            account: a.account.unwrap_or_default(),
        })
        .await
        .map_err(explain)?
        .into_inner();
    let mut shown = false;
    loop {
        match resp.result {
            Some(Answer::Token(t)) => {
                println!("access_token: {}", t.access_token);
                if !t.token_type.is_empty() {
                    println!("token_type:   {}", t.token_type);
                }
                if !t.header.is_empty() {
                    println!(
                        "header:       {}  (the token as it is, not Authorization: Bearer)",
                        t.header
                    );
                }
                println!("expires_at:   {}", when(t.expires_at));
                print_token_details(&t, min_ttl);
                return Ok(());
            }
            Some(Answer::Reference(r)) => {
                println!("reference:  {}", r.reference);
                println!("expires_at: {}", when(r.expires_at));
                return Ok(());
            }
            Some(Answer::Pending(p)) => {
                if !shown {
                    if let Some(slot) = &slot {
                        note_dead_grant(&mut creds, slot).await;
                    }
                    show_consent(&p);
                    shown = true;
                }
                resp = wait(&mut creds, p.auth_id).await?;
            }
            Some(Answer::Completed(_)) | None => bail!("unexpected answer from the daemon"),
        }
    }
}

/// When the grant asked for is there but needs a new consent, says so (on stderr) before the
/// link: a person would otherwise see only a link where a token came before. Quiet when it
/// cannot tell (a listing this key may not make).
async fn note_dead_grant(
    creds: &mut CredentialsClient<AuthedChannel>,
    slot: &pb::ListGrantsRequest,
) {
    let Ok(page) = creds.list_grants(slot.clone()).await else {
        return;
    };
    // The listing's agent and account filters are "any" when empty: this grant's are exact.
    let dead = page
        .into_inner()
        .grants
        .iter()
        .any(|g| g.agent_id == slot.agent_id && g.account == slot.account);
    if dead {
        eprintln!(
            "note: this grant needs a new consent: the provider no longer honours it (its refresh token was refused or revoked, or it reached the provider's maximum age)\n"
        );
    }
}

/// The consent prompt, on stderr: stdout carries only the answer, so a script capturing it gets
/// the answer while the person running it still sees the link.
fn show_consent(p: &pb::Pending) {
    if p.user_code.is_empty() {
        eprintln!(
            "Open this URL in a browser to grant access:\n\n  {}\n",
            p.auth_url
        );
    } else {
        eprintln!(
            "On any device, open {}\nand enter the code {}\n(or open {} directly)\n",
            p.verification_uri, p.user_code, p.auth_url
        );
    }
    eprintln!(
        "Waiting for consent (the flow expires at {})...",
        when(p.expires_at)
    );
}

/// One long poll. The daemon answers within 30 s; the deadline leaves it room to do so.
async fn wait(
    creds: &mut CredentialsClient<AuthedChannel>,
    auth_id: String,
) -> anyhow::Result<pb::AuthenticateResponse> {
    let mut req = tonic::Request::new(pb::WaitForCompletionRequest {
        auth_id,
        timeout_seconds: 30,
        status_only: false,
    });
    req.set_timeout(Duration::from_secs(40));
    Ok(creds
        .wait_for_completion(req)
        .await
        .map_err(explain)?
        .into_inner())
}

/// Which grants `valet grants` lists; every filter narrows, none lists all the caller may see.
#[derive(Debug, Args)]
pub struct GrantFilter {
    /// Only this provider's grants.
    #[arg(long)]
    pub provider: Option<String>,
    /// Only this user's grants.
    #[arg(long)]
    pub user: Option<String>,
    /// Only grants scoped to this agent (user-wide grants have none).
    #[arg(long)]
    pub agent: Option<String>,
    /// Only grants of this account label.
    #[arg(long)]
    pub account: Option<String>,
    /// Only grants in this status.
    #[arg(long, value_enum)]
    pub status: Option<GrantStatus>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GrantStatus {
    /// Usable: the daemon refreshes them as needed.
    Active,
    /// The provider refused the refresh token; the user must consent again.
    NeedsReauth,
}

pub(super) async fn grants(filter: GrantFilter, conn: &Conn) -> anyhow::Result<()> {
    let status = match filter.status {
        None => pb::GrantStatus::Unspecified,
        Some(GrantStatus::Active) => pb::GrantStatus::Active,
        Some(GrantStatus::NeedsReauth) => pb::GrantStatus::NeedsReauth,
    };
    let mut credentials = conn.connect().await?.credentials();
    let (mut page_token, mut shown) = (String::new(), 0);
    loop {
        let page = credentials
            .list_grants(pb::ListGrantsRequest {
                provider_id: filter.provider.clone().unwrap_or_default(),
                user_id: filter.user.clone().unwrap_or_default(),
                agent_id: filter.agent.clone().unwrap_or_default(),
                account: filter.account.clone().unwrap_or_default(),
                status: status as i32,
                page_size: 1000,
                page_token,
            })
            .await
            .map_err(explain)?
            .into_inner();
        for g in &page.grants {
            print_grant(g);
        }
        shown += page.grants.len();
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if shown == 0 {
        println!("no grants");
    }
    Ok(())
}

pub(super) async fn resolve(
    reference: String,
    min_ttl: u32,
    target_url: Option<String>,
    conn: &Conn,
) -> anyhow::Result<()> {
    let reference = if reference == "-" {
        let text = anyhow::Context::context(
            std::io::read_to_string(std::io::stdin()),
            "cannot read standard input",
        )?;
        text.trim().to_owned()
    } else {
        reference
    };
    let r = conn
        .connect()
        .await?
        .credentials()
        .resolve(pb::ResolveRequest {
            reference,
            min_ttl_seconds: min_ttl,
            target_url: target_url.unwrap_or_default(),
        })
        .await
        .map_err(explain)?
        .into_inner();
    if let Some(t) = r.token {
        println!("access_token: {}", t.access_token);
        println!("expires_at:   {}", when(t.expires_at));
        print_token_details(&t, min_ttl);
    }
    if let Some(c) = r.credential {
        // As it is sent: `Name: value` in a header, `name=value` in a query or a cookie.
        let separator = if c.location == "header" { ": " } else { "=" };
        let label = format!("{}:", c.location);
        println!("{label:<14}{}{separator}{}", c.name, c.value);
    }
    Ok(())
}

pub(super) async fn revoke(t: RevokeTarget, conn: &Conn) -> anyhow::Result<()> {
    let by_reference = t.reference.is_some();
    // What "no such grant" was looked up by, to say so.
    let user = t.user.clone().unwrap_or_default();
    let agent = t.agent.clone();
    let r = conn
        .connect()
        .await?
        .credentials()
        .revoke(pb::RevokeRequest {
            provider_id: t.provider.unwrap_or_default(),
            user_id: t.user.unwrap_or_default(),
            agent_id: t.agent.unwrap_or_default(),
            reference: t.reference.unwrap_or_default(),
            account: t.account.unwrap_or_default(),
        })
        .await
        .map_err(explain)?;
    let r = r.into_inner();
    if !r.revoked {
        // A failure, so a script does not take a mistyped id for a revoked grant.
        if by_reference {
            anyhow::bail!("no such reference (unknown, or already revoked, expired or spent)");
        }
        if agent.is_none() {
            anyhow::bail!(
                "no such grant (an agent's own grant needs --agent; `valet grants --user {user}` lists them)"
            );
        }
        anyhow::bail!("no such grant (`valet grants --user {user}` lists them)");
    }
    println!("revoked");
    match pb::ProviderRevocation::try_from(r.provider_revocation) {
        Ok(pb::ProviderRevocation::Revoked) => println!("the provider revoked the tokens too"),
        Ok(pb::ProviderRevocation::NotSupported) => {
            println!(
                "(nothing was sent to the provider, which has no revocation endpoint: removed from Valet only; a stored key or password is deleted, `valet credential put` stores one again)"
            );
        }
        Ok(pb::ProviderRevocation::Failed) => println!(
            "warning: the provider did not revoke the tokens ({}); the grant is gone from Valet",
            r.provider_error
        ),
        _ => {}
    }
    Ok(())
}

/// Scopes, what the user did not grant, the provider's metadata, and a note when the token
/// lives less than the `--min-ttl` asked for.
fn print_token_details(t: &pb::Token, min_ttl: u32) {
    let left = t.expires_at - crate::clock::Clock::now_unix(&crate::clock::SystemClock);
    if min_ttl > 0 && t.expires_at > 0 && left < i64::from(min_ttl) {
        eprintln!(
            "note: this token lives {} (less than --min-ttl {min_ttl}s): the provider's tokens do not live that long, so a --min-ttl this long refreshes the token on every call",
            span(u64::try_from(left).unwrap_or(0))
        );
    }
    // A stored static credential has none.
    if !t.scopes.is_empty() {
        println!("scopes:       {}", t.scopes.join(" "));
    }
    if !t.missing_scopes.is_empty() {
        println!(
            "missing:      {}  (not granted; --force asks again)",
            t.missing_scopes.join(" ")
        );
    }
    if t.missing_scopes.iter().any(|s| s == "offline_access") {
        // OpenID Connect Core 1.0 section 11: offline_access is ignored without prompt=consent.
        eprintln!(
            "hint: an OpenID provider may drop offline_access (and give no refresh token) unless the request has prompt=consent: `valet provider update <id> --param prompt=consent`, then `valet auth --force`"
        );
    }
    let mut metadata: Vec<_> = t.metadata.iter().collect();
    metadata.sort();
    for (k, v) in metadata {
        println!("metadata:     {k}={v}");
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum GrantCmd {
    /// Store a grant from a refresh token issued elsewhere (another broker, a script): Valet
    /// refreshes it once at the provider first, and stores nothing if the provider refuses it.
    Import {
        #[arg(long)]
        provider: String,
        #[arg(long)]
        user: String,
        /// The grant belongs to this agent only.
        #[arg(long)]
        agent: Option<String>,
        /// One of the user's several accounts at the provider; absent: the default.
        #[arg(long)]
        account: Option<String>,
        /// File holding the refresh token (never a flag value: flags show up in `ps`).
        #[arg(long)]
        refresh_token_file: std::path::PathBuf,
        /// The scopes the token was granted (when the provider does not say on refresh).
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// Every grant of a provider, refresh tokens included, sealed to a recipient's RSA public
    /// key (admin, audited): printed as a JSON envelope only that key's owner can open.
    Export {
        #[arg(long)]
        provider: String,
        /// PEM RSA public key (`openssl pkey -in key.pem -pubout`), at least 2048 bits.
        #[arg(long)]
        recipient_key_file: std::path::PathBuf,
    },
    /// Opens an export (from a file, or stdin) with the recipient's PKCS#8 PEM private key and
    /// prints the grants as JSON, secrets included: keep the output where the key is.
    Open {
        #[arg(long)]
        private_key_file: std::path::PathBuf,
        /// The export; absent: stdin.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
}

pub(super) async fn grant(cmd: GrantCmd, conn: &Conn) -> anyhow::Result<()> {
    let (provider, user, agent, account, refresh_token_file, scopes) = match cmd {
        GrantCmd::Import {
            provider,
            user,
            agent,
            account,
            refresh_token_file,
            scopes,
        } => (provider, user, agent, account, refresh_token_file, scopes),
        GrantCmd::Export {
            provider,
            recipient_key_file,
        } => return export(provider, &recipient_key_file, conn).await,
        GrantCmd::Open {
            private_key_file,
            file,
        } => return open(&private_key_file, file.as_deref()),
    };
    let refresh_token = super::read_secret_file("--refresh-token-file", &refresh_token_file)?
        .trim()
        .to_owned();
    let r = conn
        .connect()
        .await?
        .credentials()
        .import_grant(pb::ImportGrantRequest {
            provider_id: provider,
            user_id: user,
            agent_id: agent.unwrap_or_default(),
            refresh_token,
            scopes,
            account: account.unwrap_or_default(),
        })
        .await
        .map_err(explain)?
        .into_inner();
    println!("imported (the provider accepted the refresh token):");
    if let Some(g) = &r.grant {
        print_grant(g);
    }
    Ok(())
}

async fn export(
    provider: String,
    recipient_key_file: &std::path::Path,
    conn: &Conn,
) -> anyhow::Result<()> {
    let recipient = std::fs::read_to_string(recipient_key_file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", recipient_key_file.display()))?;
    let r = conn
        .connect()
        .await?
        .credentials()
        .export_grants(pb::ExportGrantsRequest {
            provider_id: provider,
            recipient_public_key: recipient,
        })
        .await
        .map_err(explain)?
        .into_inner();
    println!("{}", r.sealed);
    eprintln!(
        "exported {} grant(s), sealed to that key; open with `valet grant open`",
        r.grants
    );
    Ok(())
}

fn open(private_key_file: &std::path::Path, file: Option<&std::path::Path>) -> anyhow::Result<()> {
    use std::io::Read as _;
    let key = super::read_secret_file("--private-key-file", private_key_file)?;
    let sealed = match file {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?,
        None => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        }
    };
    let grants = crate::export::open(&sealed, &key.into()).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{}", serde_json::to_string_pretty(&grants)?);
    Ok(())
}
