//! In-memory store for tests and throwaway runs. Nothing survives the process.

use super::{Cas, SecretBytes, SecretStore, StoreError, Versioned, check_key};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct MemoryStore {
    records: Mutex<BTreeMap<String, (u64, SecretBytes)>>,
}

/// How many records, never what they hold.
impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("records", &self.lock().len())
            .finish()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (u64, SecretBytes)>> {
        // A panic while holding this lock cannot leave a record half-written, so poison is moot.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The version a check-and-set write gets over a record at `current` (none: absent), or
/// `Conflict`; shared by the in-process backends.
pub(super) fn next_version(current: Option<u64>, cas: Cas) -> Result<u64, StoreError> {
    let allowed = match cas {
        Cas::Any => true,
        Cas::Absent => current.is_none(),
        Cas::Version(v) => current == Some(v),
    };
    if !allowed {
        return Err(StoreError::Conflict);
    }
    Ok(current.unwrap_or(0) + 1)
}

/// Applies a check-and-set write to a versioned map.
fn apply_put<V>(
    map: &mut BTreeMap<String, (u64, V)>,
    key: &str,
    value: V,
    cas: Cas,
) -> Result<u64, StoreError> {
    let version = next_version(map.get(key).map(|(v, _)| *v), cas)?;
    map.insert(key.to_owned(), (version, value));
    Ok(version)
}

/// Keys of a map under `prefix`, in order.
fn keys_with_prefix<V>(map: &BTreeMap<String, V>, prefix: &str) -> Vec<String> {
    map.range(prefix.to_owned()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, _)| k.clone())
        .collect()
}

#[async_trait]
impl SecretStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        check_key(key)?;
        Ok(self.lock().get(key).map(|(version, value)| Versioned {
            value: value.clone(),
            version: *version,
        }))
    }

    async fn put(&self, key: &str, value: SecretBytes, cas: Cas) -> Result<u64, StoreError> {
        check_key(key)?;
        apply_put(&mut self.lock(), key, value, cas)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        Ok(self.lock().remove(key).is_some())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(keys_with_prefix(&self.lock(), prefix))
    }

    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn conformance() {
        super::super::conformance::run(&super::MemoryStore::new()).await;
    }
}
