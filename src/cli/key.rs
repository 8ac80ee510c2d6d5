//! `valet key new`: makes an API key for a `[[callers]]` entry. Only the key's SHA-256 goes into
//! the config, so the daemon never holds a key it could leak.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Print a new random API key and the `key_sha256` line for the config.
    New,
}

pub(super) fn run(cmd: KeyCmd) -> anyhow::Result<()> {
    match cmd {
        KeyCmd::New => new(),
    }
}

fn new() -> anyhow::Result<()> {
    let key = format!(
        "valet_{}",
        crate::secret::random_token(32).map_err(|_| anyhow::anyhow!("the system RNG failed"))?
    );
    println!("key:        {key}");
    println!(
        "key_sha256: {}",
        hex::encode(crate::secret::sha256(key.as_bytes()))
    );
    println!("(put key_sha256 in a [[callers]] entry; give the key to the caller)");
    Ok(())
}
