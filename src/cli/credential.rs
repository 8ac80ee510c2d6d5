//! `valet credential put`: stores a static credential (api_key, http_basic, http_bearer
//! providers) for a user or one agent. The value comes from a file or an environment variable,
//! never a flag (flags show up in `ps`), and is never shown again.

use super::Conn;
use super::print::explain;
use crate::pb;
use anyhow::Context as _;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum CredentialCmd {
    /// Store (or replace) the value for a user, optionally for one agent only.
    #[command(group(clap::ArgGroup::new("value").required(true).args(["value_env", "value_file"])))]
    Put {
        /// The static-credential provider (`valet provider list`).
        #[arg(long)]
        provider: String,
        /// The person the credential belongs to.
        #[arg(long)]
        user: String,
        /// The agent whose own slot it is: only calls naming that agent get it; absent: the
        /// user's slot, which calls naming no agent get.
        #[arg(long)]
        agent: Option<String>,
        /// One of the user's accounts at the provider (as `valet auth --account`); absent: the
        /// default account.
        #[arg(long)]
        account: Option<String>,
        /// http_basic: the username (the value is the password).
        #[arg(long)]
        username: Option<String>,
        /// Name of an environment variable holding the value.
        #[arg(long)]
        value_env: Option<String>,
        /// File holding the value (trailing newline trimmed); `-` reads standard input.
        #[arg(long)]
        value_file: Option<String>,
    },
}

pub(super) async fn run(cmd: CredentialCmd, conn: &Conn) -> anyhow::Result<()> {
    let CredentialCmd::Put {
        provider,
        user,
        agent,
        account,
        username,
        value_env,
        value_file,
    } = cmd;
    let value = match (value_env, value_file) {
        (Some(var), _) => super::read_secret_env("--value-env", &var)?,
        (None, Some(path)) => {
            let text = if path == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
            } else {
                super::read_secret_file("--value-file", &path)?
            };
            text.trim_end_matches(['\r', '\n']).to_owned()
        }
        (None, None) => anyhow::bail!("give the value with --value-env or --value-file"),
    };
    let agent_shown = agent.clone();
    conn.connect()
        .await?
        .credentials()
        .put_credential(pb::PutCredentialRequest {
            provider_id: provider.clone(),
            user_id: user.clone(),
            agent_id: agent.unwrap_or_default(),
            value,
            username: username.unwrap_or_default(),
            account: account.clone().unwrap_or_default(),
        })
        .await
        .map_err(explain)?;
    let which: Vec<String> = [
        account.map(|a| format!("account {a}")),
        agent_shown.map(|a| format!("agent {a} only")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let slot = if which.is_empty() {
        String::new()
    } else {
        format!(" ({})", which.join(", "))
    };
    println!(
        "stored the credential for {user}{slot} at {provider} (its value is never shown: `valet grants` lists the credential, not the value; agents get it through auth and resolve)"
    );
    Ok(())
}
