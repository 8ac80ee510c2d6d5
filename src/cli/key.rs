//! `valet key new`: makes an API key for a `[[callers]]` entry. Only the key's SHA-256 goes into
//! the config, so the daemon never holds a key it could leak. With `--name` and `--role` it
//! prints the whole entry, checked as the daemon checks its config, ready to paste.

use crate::config::{Config, Overrides};
use clap::{Args, Subcommand, ValueEnum};

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Print a new random API key and its `key_sha256`; with --name and --role, the whole
    /// `[[callers]]` entry for the config.
    New(NewKey),
}

#[derive(Debug, Args)]
pub struct NewKey {
    /// The caller's name (it appears in logs and the audit trail).
    #[arg(long, requires = "role")]
    name: Option<String>,
    /// `admin` (providers, every user's grants) or `agent` (credentials).
    #[arg(long, value_enum, requires = "name")]
    role: Option<KeyRole>,
    /// For an agent key: an agent id it may act as (exact, a prefix followed by `*`, or `*` for
    /// any); repeat for several. Without it, the key uses only user-wide grants.
    #[arg(long = "agent", requires = "name")]
    agents: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum KeyRole {
    Admin,
    Agent,
}

pub(super) fn run(cmd: KeyCmd) -> anyhow::Result<()> {
    match cmd {
        KeyCmd::New(args) => new(&args),
    }
}

fn new(args: &NewKey) -> anyhow::Result<()> {
    let key = format!(
        "valet_{}",
        crate::secret::random_token(32).map_err(|_| anyhow::anyhow!("the system RNG failed"))?
    );
    let key_sha256 = crate::secret::hex(&crate::secret::sha256(key.as_bytes()));
    // The entry is checked before the key is shown: a key for an entry the daemon would refuse
    // is no use to anyone.
    let entry = match (&args.name, args.role) {
        (Some(name), Some(role)) => Some(entry(name, role, &args.agents, &key_sha256)?),
        _ => None,
    };
    println!("key:        {key}");
    println!("key_sha256: {key_sha256}");
    match entry {
        Some(entry) => {
            println!("\n{entry}");
            println!("(add the entry to the config; give the key to the caller, and only to it)");
        }
        None => println!("(put key_sha256 in a [[callers]] entry; give the key to the caller)"),
    }
    Ok(())
}

/// The `[[callers]]` entry, refused with the daemon's own message when it would not load.
fn entry(name: &str, role: KeyRole, agents: &[String], key_sha256: &str) -> anyhow::Result<String> {
    let role = match role {
        KeyRole::Admin => "admin",
        KeyRole::Agent => "agent",
    };
    // In the order the example config lists them; values quoted and escaped as TOML.
    let value = |v: toml::Value| v.to_string();
    let mut text = format!(
        "[[callers]]\nname = {}\nrole = \"{role}\"\nkey_sha256 = \"{key_sha256}\"\n",
        value(name.into())
    );
    if !agents.is_empty() {
        text.push_str(&format!("agents = {}\n", value(agents.to_vec().into())));
    }
    Config::from_toml(
        "the new entry",
        &text,
        &Overrides::default(),
        &|_| None,
        &[],
    )
    .map_err(|e| anyhow::anyhow!("{e}\nnothing was made; change the flags and run it again"))?;
    Ok(text)
}
