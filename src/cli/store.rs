//! `valet store copy`: moves providers and grants between secret stores, each named by a daemon
//! config file. Works on the stores directly, so the daemon need not run.

use clap::Subcommand;

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

pub(super) async fn run(cmd: StoreCmd) -> anyhow::Result<()> {
    match cmd {
        StoreCmd::Copy { from, to, dry_run } => crate::app::copy_store(&from, &to, dry_run).await?,
    }
    Ok(())
}
