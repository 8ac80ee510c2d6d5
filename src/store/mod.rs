//! The secret store port: durable, versioned key/value records holding provider configs, grants,
//! references and deployment keys. Backends: `vault` (HashiCorp Vault), `embedded` (sealed single
//! file, the default), `memory` (tests). Every backend passes the same conformance suite
//! (`conformance::run`). `keyspace` owns every key; the typed repositories in `repo` are the only
//! code that reads or writes records.

pub mod conformance;
mod embedded;
mod hot;
pub mod keyspace;
mod memory;
mod metered;
mod repo;
mod vault;

pub use embedded::{DataDir, EmbeddedStore};
pub use memory::MemoryStore;
pub use metered::MeteredStore;
pub(crate) use repo::KeyBatches;
pub use repo::{GrantRepo, MetaRepo, ProviderRepo, ReferenceRepo};
pub use vault::{KvVersion, TokenSource, VaultAuth, VaultConfig, VaultStore};

use async_trait::async_trait;
use zeroize::Zeroizing;

/// Record bytes; zeroized on drop because they may hold a refresh token or client secret.
pub type SecretBytes = Zeroizing<Vec<u8>>;

/// A record and the version it was read at (for check-and-set).
pub struct Versioned {
    pub value: SecretBytes,
    pub version: u64,
}

/// The version and size only: the value is a record's plain JSON (tokens, secrets, keys).
impl std::fmt::Debug for Versioned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Versioned")
            .field("version", &self.version)
            .field("bytes", &self.value.len())
            .finish()
    }
}

/// Write precondition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cas {
    /// Write whatever is there.
    Any,
    /// Only create: fail with `Conflict` if the key exists.
    Absent,
    /// Only overwrite this version: fail with `Conflict` if the record changed since.
    Version(u64),
}

/// Store failures. Backend errors stay behind `source`; messages never contain record values.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The check-and-set precondition did not hold.
    #[error("the record changed concurrently (check-and-set conflict)")]
    Conflict,
    /// The backend cannot be reached or refuses service right now; retrying may help.
    #[error("secret store unavailable: {0}")]
    Unavailable(
        String,
        #[source] Option<Box<dyn std::error::Error + Send + Sync>>,
    ),
    /// The backend refused this caller (Vault 403: expired token or missing policy).
    #[error("secret store denied access: {0}")]
    Denied(String),
    /// A record could not be opened or parsed: tampering, a wrong key, or a bug.
    #[error("secret store record {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    /// The store could not be opened: a permission, key-file or path problem the operator must fix.
    #[error("cannot open the secret store: {0}")]
    Setup(String),
    /// The key is not a valid store key.
    #[error("invalid store key {0:?}")]
    InvalidKey(String),
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(..) | Self::Denied(_))
    }
    pub fn is_denied(&self) -> bool {
        matches!(self, Self::Denied(_))
    }
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict)
    }
}

/// Durable versioned records. Keys are `/`-separated paths of `[A-Za-z0-9_=-]` segments.
#[async_trait]
pub trait SecretStore: std::fmt::Debug + Send + Sync + 'static {
    /// Backend name for logs and health.
    fn backend(&self) -> &'static str;
    /// Whether this process is the only one using the store (the embedded store's directory
    /// lock): a record marked by another process (a refresh claim) was then left by a dead one.
    fn exclusive(&self) -> bool {
        false
    }
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;
    /// Writes `value`; returns the new version.
    async fn put(&self, key: &str, value: SecretBytes, cas: Cas) -> Result<u64, StoreError>;
    /// Removes the record; returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;
    /// Removes every record in `keys`; returns how many existed. Backends with transactions
    /// do it in one (revoking a grant with thousands of references is one commit).
    async fn delete_many(&self, keys: &[String]) -> Result<usize, StoreError> {
        let mut n = 0;
        for key in keys {
            n += usize::from(self.delete(key).await?);
        }
        Ok(n)
    }
    /// Every key starting with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// At most `limit` keys starting with `prefix` that sort after `after`, in order. Backends
    /// with ordered keys answer without listing the whole prefix.
    async fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut keys = self.list(prefix).await?;
        if let Some(after) = after {
            keys.retain(|k| k.as_str() > after);
        }
        keys.truncate(limit);
        Ok(keys)
    }
    /// Whether `list_page` reads only the page (ordered keys). Otherwise every page lists the
    /// whole prefix, so a walk over a namespace lists it once instead (`repo::KeyBatches`).
    fn pages_natively(&self) -> bool {
        false
    }
    /// Cheap liveness check for health reporting.
    async fn check(&self) -> Result<(), StoreError>;
}

/// Validates a store key so no backend ever sees `..`, empty segments or odd characters.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    let ok = !key.is_empty()
        && key.len() <= 1024
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'=')
        });
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidKey(key.to_owned()))
    }
}
