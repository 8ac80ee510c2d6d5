//! `valet store copy`: moves every record (providers, grants, references and the reference key)
//! between secret stores, each named by a daemon config file. Works on the stores directly, so
//! the daemon need not run (an embedded source's daemon must not: the copy takes its lock; and a
//! destination a daemon has served from is refused).

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum StoreCmd {
    /// Copy providers, grants and references from one store to another (e.g. embedded → vault).
    /// Records already identical at the destination are left alone, so it may run again until a
    /// daemon serves from the destination; a destination a daemon has served from is refused
    /// (copying again would bring back grants revoked and references spent there).
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
    let StoreCmd::Copy { from, to, dry_run } = cmd;
    let (each, total) = if dry_run {
        ("would copy", "would copy")
    } else {
        ("copy", "copied")
    };
    let r = crate::ops::copy_store(&from, &to, dry_run, |key| println!("{each} {key}")).await?;
    println!(
        "{total} {} records from the {} store to the {} store; {} already identical",
        r.done.copied, r.from, r.to, r.done.unchanged
    );
    Ok(())
}
