//! Store operations that need no running daemon: open the configured store, prove it works
//! (`check-config`), and copy every namespace from one store to another (`valet store copy`).

use crate::config::{Config, ConfigError, StoreKind};
use crate::secret::random_token;
use crate::store::{
    Cas, DataDir, EmbeddedStore, KeyBatches, MemoryStore, SecretStore, StoreError, VaultStore,
    keyspace,
};
use anyhow::Context as _;
use std::sync::Arc;

/// An opened store, and for Vault the handle that renews its token.
#[derive(Debug)]
pub struct OpenStore {
    pub store: Arc<dyn SecretStore>,
    pub vault: Option<Arc<VaultStore>>,
}

/// Opens the configured store.
pub async fn open_store(config: &Config) -> anyhow::Result<OpenStore> {
    Ok(match &config.store {
        StoreKind::Embedded => OpenStore {
            store: Arc::new(EmbeddedStore::open(&config.data_dir).map_err(operator_must_fix)?),
            vault: None,
        },
        StoreKind::Memory => OpenStore {
            store: Arc::new(MemoryStore::new()),
            vault: None,
        },
        StoreKind::Vault(v) => {
            let vault = Arc::new(
                VaultStore::connect((**v).clone())
                    .await
                    .map_err(operator_must_fix)?,
            );
            OpenStore {
                store: vault.clone(),
                vault: Some(vault),
            }
        }
    })
}

/// A store that cannot open for a reason the operator must fix (a key file others may read, a
/// directory it may not create, a bad CA certificate) is a bad configuration: exit 78, which
/// systemd does not restart in a loop. One that is unreachable or in use is not.
fn operator_must_fix(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::Setup(_) => ConfigError::in_file(e),
        e => e.into(),
    }
}

/// Whether the first start could make the data directory `dir` (and its store) where it is not
/// yet: its nearest existing ancestor is a directory this process may create in, proven by
/// making and removing an empty directory there (a read-only file system, a path under a file,
/// `ProtectSystem=strict` outside the unit's StateDirectory). Leaves nothing behind.
fn creatable(dir: &std::path::Path) -> Result<(), String> {
    let refused = |why: String| {
        format!(
            "the data directory {} cannot be created: {why}",
            dir.display()
        )
    };
    let mut base = dir;
    let existing = loop {
        match std::fs::metadata(base) {
            Ok(m) if m.is_dir() => break base,
            Ok(_) => return Err(refused(format!("{} is not a directory", base.display()))),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && base != std::path::Path::new(".") =>
            {
                base = match base.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => std::path::Path::new("."),
                };
            }
            Err(e) => return Err(refused(format!("{}: {e}", base.display()))),
        }
    };
    let probe = existing.join(format!(".valet-check-{}", std::process::id()));
    std::fs::create_dir(&probe)
        .map_err(|e| refused(format!("cannot create in {}: {e}", existing.display())))?;
    let _ = std::fs::remove_dir(&probe);
    Ok(())
}

/// For `check-config`: opens the store and proves it can write, read and delete a probe record
/// (for Vault: reachable, unsealed, and the token's policy allows it).
pub async fn check_store(config: &Config) -> anyhow::Result<()> {
    if matches!(config.store, StoreKind::Embedded) {
        let dir = config.data_dir.display();
        match EmbeddedStore::data_dir(&config.data_dir).map_err(operator_must_fix)? {
            DataDir::Missing => {
                creatable(&config.data_dir).map_err(ConfigError::in_file)?;
                eprintln!(
                    "configuration is valid; there is no store in the data directory {dir} yet: the embedded store is created there on first start"
                );
                return Ok(());
            }
            DataDir::InUse => {
                eprintln!(
                    "configuration is valid; the embedded store in {dir} is in use by a running valet, so it was not opened (stop that process to check the store itself)"
                );
                return Ok(());
            }
            DataDir::Free => {}
        }
    }
    let store = open_store(config).await?.store;
    store.check().await.map_err(|e| {
        let what = if e.is_denied() {
            "refused this daemon's credentials"
        } else {
            "is not reachable"
        };
        anyhow::Error::new(e).context(format!("the {} store {what}", store.backend()))
    })?;
    let nonce = random_token(8).map_err(|_| anyhow::anyhow!("the system RNG failed"))?;
    let key = keyspace::probe(&nonce);
    let probe = zeroize::Zeroizing::new(b"valet check-config probe".to_vec());
    store
        .put(&key, probe.clone(), Cas::Absent)
        .await
        .with_context(|| format!("cannot write {key} to the {} store", store.backend()))?;
    let read = store.get(&key).await;
    if read.is_err() {
        // Leave no probe behind when it cannot be read back (a KV version mismatch writes it).
        let _ = store.delete(&key).await;
    }
    let read = read.with_context(|| format!("cannot read {key} back"))?;
    anyhow::ensure!(
        read.is_some_and(|r| r.value == probe),
        "{key} did not read back as written"
    );
    store
        .delete(&key)
        .await
        .with_context(|| format!("cannot delete {key}"))?;
    eprintln!(
        "configuration is valid; the {} store is reachable and can write, read and delete",
        store.backend()
    );
    Ok(())
}

/// What a copy did (or would do).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub copied: usize,
    pub unchanged: usize,
}

/// The reference key signs every reference: a destination that already has another one would
/// make the copied references foreign (and its own ones foreign if overwritten). Refuse.
async fn check_reference_key(src: &dyn SecretStore, dst: &dyn SecretStore) -> anyhow::Result<()> {
    let key = keyspace::reference_master_key();
    if let (Some(a), Some(b)) = (src.get(&key).await?, dst.get(&key).await?) {
        anyhow::ensure!(
            a.value == b.value,
            "the destination store already has its own reference key: references issued by either \
             deployment would stop resolving. Copy into a store no daemon has issued references from."
        );
    }
    Ok(())
}

/// Copies every record of every namespace from `src` to `dst`. Records already identical at the
/// destination are skipped, so running it twice before a daemon serves from `dst` is harmless;
/// nothing is deleted at the destination, so once a daemon has served from it (revoked grants,
/// spent references) it is refused. `report` sees each key copied (or that would be).
pub async fn copy_records(
    src: &dyn SecretStore,
    dst: &dyn SecretStore,
    dry_run: bool,
    mut report: impl FnMut(&str),
) -> anyhow::Result<Copied> {
    let served = keyspace::served_marker();
    anyhow::ensure!(
        dst.get(&served).await?.is_none(),
        "a Valet daemon has served from the destination store: copying into it again would bring \
         back the grants revoked and the references spent there since. Copy only into a store no \
         daemon has served from, before starting the daemon on it (to put an old backup back over \
         it on purpose, delete its `meta/served` record first: see Backups in docs/operations.md)."
    );
    check_reference_key(src, dst).await?;
    let mut done = Copied::default();
    for namespace in keyspace::NAMESPACES {
        // A thousand keys at a time: a million grants are never listed into memory at once.
        let mut batches = KeyBatches::new(src, namespace.to_owned());
        while let Some(keys) = batches.next().await? {
            for key in keys {
                if key == served {
                    continue;
                }
                let Some(record) = src.get(&key).await? else {
                    continue;
                };
                if dst
                    .get(&key)
                    .await?
                    .is_some_and(|d| d.value == record.value)
                {
                    done.unchanged += 1;
                    continue;
                }
                report(&key);
                if !dry_run {
                    dst.put(&key, record.value, Cas::Any).await?;
                }
                done.copied += 1;
            }
        }
    }
    Ok(done)
}

/// What `valet store copy` did, with the two backends' names.
#[derive(Debug, Clone, Copy)]
pub struct CopyReport {
    pub done: Copied,
    pub from: &'static str,
    pub to: &'static str,
}

/// Whether two configs name one store: one embedded data directory (however spelled), or one
/// place in one Vault.
fn same_store(a: &Config, b: &Config) -> bool {
    match (&a.store, &b.store) {
        (StoreKind::Embedded, StoreKind::Embedded) => {
            let dir = |c: &Config| std::fs::canonicalize(&c.data_dir).unwrap_or(c.data_dir.clone());
            dir(a) == dir(b)
        }
        (StoreKind::Vault(a), StoreKind::Vault(b)) => {
            (&a.address, &a.namespace, &a.mount, &a.prefix)
                == (&b.address, &b.namespace, &b.mount, &b.prefix)
        }
        _ => false,
    }
}

/// `valet store copy`: from the store of the `from` config file to that of the `to` one.
pub async fn copy_store(
    from: &str,
    to: &str,
    dry_run: bool,
    report: impl FnMut(&str),
) -> anyhow::Result<CopyReport> {
    let load = |path: &str| {
        // Only the store matters: a backup's config may name nothing but its data_dir.
        let overrides = crate::config::Overrides {
            config: Some(path.to_owned()),
            store_only: true,
            ..Default::default()
        };
        // Kept as a `ConfigError` under the path, so the CLI exits 78 as for any bad config.
        Config::load_from_process_env(&overrides)
            .map_err(|e| anyhow::Error::new(e).context(path.to_owned()))
    };
    let (from, to) = (load(from)?, load(to)?);
    anyhow::ensure!(
        !same_store(&from, &to),
        "--from and --to name the same store ({}): a copy needs two",
        match &from.store {
            // The host only: an address may carry credentials (`https://user:pass@…`).
            StoreKind::Vault(v) => format!(
                "Vault at {}:{} {}/{}",
                v.address.host_str().unwrap_or_default(),
                v.address.port_or_known_default().unwrap_or_default(),
                v.mount,
                v.prefix
            ),
            _ => format!("data_dir {}", from.data_dir.display()),
        }
    );
    let missing = |c: &Config| -> anyhow::Result<bool> {
        Ok(matches!(c.store, StoreKind::Embedded)
            && EmbeddedStore::data_dir(&c.data_dir)? == DataDir::Missing)
    };
    anyhow::ensure!(
        !missing(&from)?,
        "the source's data directory {} holds no store: there is nothing to copy (is data_dir right?)",
        from.data_dir.display()
    );
    let src = open_store(&from).await?.store;
    // A dry run creates nothing: an embedded destination not made yet is empty, and an empty
    // store stands in for it.
    let dst: Arc<dyn SecretStore> = if dry_run && missing(&to)? {
        Arc::new(MemoryStore::new())
    } else {
        open_store(&to).await?.store
    };
    let done = copy_records(&*src, &*dst, dry_run, report).await?;
    Ok(CopyReport {
        done,
        from: src.backend(),
        // The stand-in's name is not the destination's.
        to: match to.store {
            StoreKind::Embedded => "embedded",
            _ => dst.backend(),
        },
    })
}
