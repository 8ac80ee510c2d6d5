//! The zero-setup store: one redb database file in the data directory (`store.redb`: ACID,
//! copy-on-write B-trees, crash-safe commits), whose every value is sealed with AES-256-GCM (ring)
//! under a 256-bit key file created 0600 on first start. The record key and version are the
//! AEAD's associated data, so records cannot be swapped or rolled back one by one. A write is one
//! transaction touching O(log n) pages, whatever the number of records. A `store.json` left by an
//! earlier version is migrated into the database on first open and kept as
//! `store.json.migrated` until the operator deletes it.

use super::hot::HotRecords;
use super::memory::next_version;
use super::{Cas, SecretBytes, SecretStore, StoreError, Versioned, check_key};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use redb::{ReadableTable as _, ReadableTableMetadata as _, TableDefinition};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

const KEY_FILE: &str = "store.key";
const DATA_FILE: &str = "store.redb";
const LEGACY_FILE: &str = "store.json";
const LEGACY_BACKUP: &str = "store.json.migrated";
const LOCK_FILE: &str = "valet.lock";
const LEGACY_FORMAT: &str = "valet-embedded-v1";

/// Record key (UTF-8 bytes) → (version, nonce ‖ ciphertext ‖ tag). Keyed by bytes, not `&str`:
/// redb validates a `&str` key as UTF-8 on every comparison of a lookup, about a tenth of a read
/// at a million records; the byte order is the same (UTF-8 sorts by code point). Keys are `&str` on
/// the way in and checked UTF-8 on the way out (`list`).
const RECORDS: TableDefinition<&[u8], (u64, &[u8])> = TableDefinition::new("records-by-bytes");
/// The same records keyed by `&str`, as stores before the byte-keyed table held them: moved
/// into `RECORDS` on first open (`migrate_str_keys`).
const STR_KEYED_RECORDS: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("records");

/// The file format of the JSON store this one replaces (read only, to migrate it).
#[derive(Deserialize)]
struct LegacyImage {
    format: String,
    records: BTreeMap<String, LegacyRecord>,
}

#[derive(Deserialize)]
struct LegacyRecord {
    version: u64,
    /// base64(nonce || ciphertext || tag)
    sealed: String,
}

pub struct EmbeddedStore {
    inner: Arc<Inner>,
    /// Held while the store is open: one process per data directory, so two daemons never
    /// overwrite each other's writes (a rotated refresh token lost is a dead grant).
    _lock: fs::File,
}

struct Inner {
    path: PathBuf,
    db: redb::Database,
    key: LessSafeKey,
    rng: SystemRandom,
    /// Sealed records in use, so their reads do not grow with the database (`hot.rs`).
    hot: HotRecords,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

fn setup(what: impl std::fmt::Display) -> StoreError {
    StoreError::Setup(what.to_string())
}

/// A database failure on a request path: the caller may retry; the cause goes to the log.
fn unavailable(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Unavailable(
        "the embedded store's database failed".into(),
        Some(Box::new(e.into())),
    )
}

/// What can be said of a data directory without opening (or creating) the store in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDir {
    /// Not there, or there with no store in it (an empty directory, as a fresh volume or a
    /// systemd StateDirectory is): the store is created in it on first start.
    Missing,
    /// A valet process (a daemon, `valet store copy`) holds its lock.
    InUse,
    /// There, and no process holds it.
    Free,
}

/// Takes the data directory's exclusive lock (`valet.lock`), or says who to stop.
fn lock_dir(dir: &Path) -> Result<fs::File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| setup(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        // Not `Setup`: the other process may be about to exit (a restart), so trying again helps.
        Err(fs::TryLockError::WouldBlock) => Err(StoreError::Unavailable(
            format!(
                "the data directory {} is in use by another valet process (a running daemon, or `valet store copy`); stop it first: two processes on one embedded store overwrite each other's writes",
                dir.display()
            ),
            None,
        )),
        Err(fs::TryLockError::Error(e)) => {
            Err(setup(format!("cannot lock {}: {e}", path.display())))
        }
    }
}

impl EmbeddedStore {
    /// Whether `dir` exists and whether a valet process holds it; creates and changes nothing.
    pub fn data_dir(dir: &Path) -> Result<DataDir, StoreError> {
        let cannot = |e: std::io::Error| setup(format!("cannot inspect {}: {e}", dir.display()));
        match fs::metadata(dir) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DataDir::Missing),
            Err(e) => return Err(cannot(e)),
        }
        let mut holds_a_store = false;
        for file in [DATA_FILE, LEGACY_FILE, KEY_FILE] {
            holds_a_store |= fs::exists(dir.join(file)).map_err(cannot)?;
        }
        if !holds_a_store {
            return Ok(DataDir::Missing);
        }
        let lock = match fs::File::open(dir.join(LOCK_FILE)) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DataDir::Free),
            Err(e) => return Err(cannot(e)),
        };
        // Shared: it works on a read-only descriptor (also where flock is emulated, as on NFS)
        // and still conflicts with a holder's exclusive lock. Released when `lock` drops.
        match lock.try_lock_shared() {
            Ok(()) => Ok(DataDir::Free),
            Err(fs::TryLockError::WouldBlock) => Ok(DataDir::InUse),
            Err(fs::TryLockError::Error(e)) => Err(cannot(e)),
        }
    }

    /// Opens (or creates) the store in `dir`, migrating a `store.json` found there. Refuses a
    /// key file readable by group or others.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(
            dir,
            HotRecords::new(super::hot::CAPACITY, super::hot::BYTES),
        )
    }

    /// `open` without the cache of records in use: every read walks the database. What the
    /// benchmark measures the database's own reads with; the daemon always keeps the cache.
    pub fn open_without_record_cache(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, HotRecords::new(0, 0))
    }

    fn open_with(dir: &Path, hot: HotRecords) -> Result<Self, StoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                setup(format!(
                    "cannot create data directory {}: {e}",
                    dir.display()
                ))
            })?;
        let lock = lock_dir(dir)?;
        let rng = SystemRandom::new();
        let key_bytes = load_or_create_key(&dir.join(KEY_FILE), &rng)?;
        let unbound = UnboundKey::new(&AES_256_GCM, &key_bytes)
            .map_err(|_| setup("the store key is not a valid AES-256 key"))?;
        let path = dir.join(DATA_FILE);
        // Created 0600 before redb initialises it (redb would use the umask).
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| setup(format!("cannot create {}: {e}", path.display())))?;
        let db = redb::Database::create(&path).map_err(|e| {
            setup(format!(
                "{} is not a Valet store database: {e}",
                path.display()
            ))
        })?;
        let store = Self {
            inner: Arc::new(Inner {
                path,
                db,
                key: LessSafeKey::new(unbound),
                rng,
                hot,
            }),
            _lock: lock,
        };
        store.create_table()?;
        store.migrate_str_keys()?;
        store.migrate_legacy(dir)?;
        Ok(store)
    }

    /// The records table exists from the first open on, so readers never meet its absence.
    fn create_table(&self) -> Result<(), StoreError> {
        let fail = |e: redb::Error| setup(format!("cannot initialise the store database: {e}"));
        let txn = self.inner.db.begin_write().map_err(|e| fail(e.into()))?;
        txn.open_table(RECORDS).map_err(|e| fail(e.into()))?;
        txn.commit().map_err(|e| fail(e.into()))
    }

    /// Moves the records of the `&str`-keyed table of earlier versions into the byte-keyed one,
    /// unchanged (sealed under the same key and AAD), and drops it: one transaction, so a crash
    /// leaves either the old table or the new one. Both holding records means an older Valet
    /// ran on the upgraded store (on what it saw as an empty store, with a new reference key):
    /// that is refused, not merged.
    fn migrate_str_keys(&self) -> Result<(), StoreError> {
        use redb::TableHandle as _;
        let fail = |e: redb::Error| {
            setup(format!(
                "cannot migrate {} to byte keys: {e}",
                self.inner.path.display()
            ))
        };
        let txn = self.inner.db.begin_write().map_err(|e| fail(e.into()))?;
        let old = txn
            .list_tables()
            .map_err(|e| fail(e.into()))?
            .any(|t| t.name() == STR_KEYED_RECORDS.name());
        if !old {
            return Ok(());
        }
        let mut moved = 0_u64;
        {
            let from = txn
                .open_table(STR_KEYED_RECORDS)
                .map_err(|e| fail(e.into()))?;
            let mut to = txn.open_table(RECORDS).map_err(|e| fail(e.into()))?;
            if !from.is_empty().map_err(|e| fail(e.into()))?
                && !to.is_empty().map_err(|e| fail(e.into()))?
            {
                return Err(setup(format!(
                    "{} holds records in both the current layout and the one of earlier versions: an older Valet was run on it after the upgrade, and the two are not merged; restore the backup taken before the upgrade",
                    self.inner.path.display()
                )));
            }
            for entry in from.iter().map_err(|e| fail(e.into()))? {
                let (key, value) = entry.map_err(|e| fail(e.into()))?;
                let (version, sealed) = value.value();
                to.insert(key.value().as_bytes(), (version, sealed))
                    .map_err(|e| fail(e.into()))?;
                moved += 1;
            }
        }
        txn.delete_table(STR_KEYED_RECORDS)
            .map_err(|e| fail(e.into()))?;
        txn.commit().map_err(|e| fail(e.into()))?;
        tracing::info!(
            records = moved,
            "moved the embedded store's records to byte keys"
        );
        Ok(())
    }

    /// Moves the records of a `store.json` (the earlier file format, sealed the same way under
    /// the same key) into the database in one transaction, then renames the file out of the way.
    fn migrate_legacy(&self, dir: &Path) -> Result<(), StoreError> {
        let legacy = dir.join(LEGACY_FILE);
        let bytes = match fs::read(&legacy) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(setup(format!("cannot read {}: {e}", legacy.display()))),
        };
        let image: LegacyImage = serde_json::from_slice(&bytes).map_err(|e| {
            setup(format!(
                "{} is not a Valet store file: {}",
                legacy.display(),
                crate::secret::json_error_at(&e)
            ))
        })?;
        if image.format != LEGACY_FORMAT {
            return Err(setup(format!(
                "{} has format {:?}, expected {LEGACY_FORMAT:?}",
                legacy.display(),
                image.format
            )));
        }
        let fail = |e: redb::Error| setup(format!("cannot migrate {}: {e}", legacy.display()));
        let txn = self.inner.db.begin_write().map_err(|e| fail(e.into()))?;
        {
            let mut table = txn.open_table(RECORDS).map_err(|e| fail(e.into()))?;
            if !table.is_empty().map_err(|e| fail(e.into()))? {
                return Err(setup(format!(
                    "{} holds records and {} is there too: move one of them out of the data directory (an old store.json restored next to the database is not merged)",
                    self.inner.path.display(),
                    legacy.display()
                )));
            }
            for (key, record) in &image.records {
                let sealed = STANDARD.decode(&record.sealed).map_err(|_| {
                    setup(format!("{}: record {key} is not base64", legacy.display()))
                })?;
                table
                    .insert(key.as_bytes(), (record.version, sealed.as_slice()))
                    .map_err(|e| fail(e.into()))?;
            }
        }
        txn.commit().map_err(|e| fail(e.into()))?;
        let backup = dir.join(LEGACY_BACKUP);
        fs::rename(&legacy, &backup)
            .map_err(|e| setup(format!("cannot rename {}: {e}", legacy.display())))?;
        tracing::warn!(
            records = image.records.len(),
            backup = %backup.display(),
            "migrated the embedded store from store.json; delete the backup once the daemon runs well"
        );
        Ok(())
    }

    /// Writes many records (each as `Cas::Any`) in one transaction: bulk imports and the
    /// benchmark's million-record store.
    pub async fn put_many(&self, records: Vec<(String, SecretBytes)>) -> Result<(), StoreError> {
        for (key, _) in &records {
            check_key(key)?;
        }
        self.blocking(move |s| s.put_many(&records)).await
    }

    /// Runs a blocking database call off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}"), None))?
    }
}

impl Inner {
    fn aad(key: &str, version: u64) -> Vec<u8> {
        let mut aad = key.as_bytes().to_vec();
        aad.push(0);
        aad.extend_from_slice(&version.to_be_bytes());
        aad
    }

    fn seal(&self, key: &str, version: u64, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| StoreError::Unavailable("the system RNG failed".into(), None))?;
        let mut buf = Zeroizing::new(plain.to_vec());
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(key, version)),
                &mut *buf,
            )
            .map_err(|_| StoreError::Unavailable("sealing failed".into(), None))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    fn open_record(&self, key: &str, version: u64, raw: &[u8]) -> Result<SecretBytes, StoreError> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        if raw.len() < NONCE_LEN {
            return Err(corrupt("too short"));
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| corrupt("bad nonce"))?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(Self::aad(key, version)), &mut buf)
            .map_err(|_| {
                corrupt("authentication failed (tampered, or sealed under another key)")
            })?;
        Ok(Zeroizing::new(plain.to_vec()))
    }

    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let miss = match self.hot.get(key.as_bytes()) {
            Ok((version, sealed)) => {
                return Ok(Some(Versioned {
                    value: self.open_record(key, version, &sealed)?,
                    version,
                }));
            }
            Err(miss) => miss,
        };
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(RECORDS).map_err(unavailable)?;
        let Some(found) = table.get(key.as_bytes()).map_err(unavailable)? else {
            return Ok(None);
        };
        let (version, sealed) = found.value();
        let value = self.open_record(key, version, sealed)?;
        self.hot.fill(miss, key.as_bytes(), version, sealed);
        Ok(Some(Versioned { value, version }))
    }

    /// Check-and-set, seal and commit in one write transaction (redb runs one at a time).
    fn put(&self, key: &str, value: &[u8], cas: Cas) -> Result<u64, StoreError> {
        let keys = [key.as_bytes()];
        let _writing = self.hot.writing(&keys);
        let txn = self.db.begin_write().map_err(unavailable)?;
        let version = {
            let mut table = txn.open_table(RECORDS).map_err(unavailable)?;
            let current = table
                .get(key.as_bytes())
                .map_err(unavailable)?
                .map(|found| found.value().0);
            let version = next_version(current, cas)?;
            let sealed = self.seal(key, version, value)?;
            table
                .insert(key.as_bytes(), (version, sealed.as_slice()))
                .map_err(unavailable)?;
            version
        };
        txn.commit().map_err(unavailable)?;
        Ok(version)
    }

    /// Writes `records` (each as `Cas::Any`) in one transaction.
    fn put_many(&self, records: &[(String, SecretBytes)]) -> Result<(), StoreError> {
        let keys: Vec<&[u8]> = records.iter().map(|(key, _)| key.as_bytes()).collect();
        let _writing = self.hot.writing(&keys);
        let txn = self.db.begin_write().map_err(unavailable)?;
        {
            let mut table = txn.open_table(RECORDS).map_err(unavailable)?;
            for (key, value) in records {
                let current = table
                    .get(key.as_bytes())
                    .map_err(unavailable)?
                    .map(|found| found.value().0);
                let version = next_version(current, Cas::Any)?;
                let sealed = self.seal(key, version, value)?;
                table
                    .insert(key.as_bytes(), (version, sealed.as_slice()))
                    .map_err(unavailable)?;
            }
        }
        txn.commit().map_err(unavailable)
    }

    /// Removes `keys` in one transaction; returns how many existed.
    fn delete(&self, keys: &[String]) -> Result<usize, StoreError> {
        let bytes: Vec<&[u8]> = keys.iter().map(|key| key.as_bytes()).collect();
        let _writing = self.hot.writing(&bytes);
        let txn = self.db.begin_write().map_err(unavailable)?;
        let mut existed = 0;
        {
            let mut table = txn.open_table(RECORDS).map_err(unavailable)?;
            for key in keys {
                existed +=
                    usize::from(table.remove(key.as_bytes()).map_err(unavailable)?.is_some());
            }
        }
        txn.commit().map_err(unavailable)?;
        Ok(existed)
    }

    /// Keys under `prefix` after `after`, at most `limit`: one B-tree range walk.
    fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        use std::ops::Bound;
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(RECORDS).map_err(unavailable)?;
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a.as_bytes()),
            _ => Bound::Included(prefix.as_bytes()),
        };
        let mut keys = Vec::new();
        for entry in table
            .range::<&[u8]>((start, Bound::Unbounded))
            .map_err(unavailable)?
        {
            let (key, _) = entry.map_err(unavailable)?;
            let key = key.value();
            if !key.starts_with(prefix.as_bytes()) || keys.len() >= limit {
                break;
            }
            // Every key was a `&str` on the way in; one that is not is a damaged file.
            let key = std::str::from_utf8(key).map_err(|_| StoreError::Corrupt {
                key: String::from_utf8_lossy(key).into_owned(),
                reason: "the record key is not UTF-8".into(),
            })?;
            keys.push(key.to_owned());
        }
        Ok(keys)
    }
}

fn load_or_create_key(path: &Path, rng: &SystemRandom) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    match fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(setup(format!(
                    "key file {} is readable by group or others (mode {mode:o}); run `chmod 600 {}`",
                    path.display(),
                    path.display()
                )));
            }
            let key = Zeroizing::new(
                fs::read(path)
                    .map_err(|e| setup(format!("cannot read key file {}: {e}", path.display())))?,
            );
            if key.len() != 32 {
                return Err(setup(format!(
                    "key file {} must hold exactly 32 bytes",
                    path.display()
                )));
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = Zeroizing::new(vec![0u8; 32]);
            rng.fill(&mut key)
                .map_err(|_| setup("the system RNG failed"))?;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| setup(format!("cannot create key file {}: {e}", path.display())))?;
            f.write_all(&key)
                .and_then(|()| f.sync_all())
                .map_err(|e| setup(format!("cannot write key file {}: {e}", path.display())))?;
            Ok(key)
        }
        Err(e) => Err(setup(format!(
            "cannot stat key file {}: {e}",
            path.display()
        ))),
    }
}

#[async_trait]
impl SecretStore for EmbeddedStore {
    fn exclusive(&self) -> bool {
        true
    }

    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn pages_natively(&self) -> bool {
        true
    }

    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        check_key(key)?;
        // Inline, not on the blocking pool: one read is a B-tree lookup in redb's page cache
        // and an AES-GCM open (microseconds), less than handing it to another thread and back.
        // Writes, which wait for fsync, and scans go to the pool.
        self.inner.get(key)
    }

    async fn put(&self, key: &str, value: SecretBytes, cas: Cas) -> Result<u64, StoreError> {
        check_key(key)?;
        let key = key.to_owned();
        self.blocking(move |s| s.put(&key, &value, cas)).await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        let keys = vec![key.to_owned()];
        Ok(self.blocking(move |s| s.delete(&keys)).await? == 1)
    }

    async fn delete_many(&self, keys: &[String]) -> Result<usize, StoreError> {
        for key in keys {
            check_key(key)?;
        }
        let keys = keys.to_vec();
        self.blocking(move |s| s.delete(&keys)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let prefix = prefix.to_owned();
        self.blocking(move |s| s.list(&prefix, None, usize::MAX))
            .await
    }

    async fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let (prefix, after) = (prefix.to_owned(), after.map(str::to_owned));
        self.blocking(move |s| s.list(&prefix, after.as_deref(), limit))
            .await
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.blocking(|s| s.db.begin_read().map(drop).map_err(unavailable))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_many_writes_every_record_in_one_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store
            .put("bulk/0", Zeroizing::new(b"old".to_vec()), Cas::Absent)
            .await
            .unwrap();
        let records = (0..100)
            .map(|i| {
                (
                    format!("bulk/{i}"),
                    Zeroizing::new(format!("v{i}").into_bytes()),
                )
            })
            .collect();
        store.put_many(records).await.unwrap();
        assert_eq!(store.list("bulk/").await.unwrap().len(), 100);
        let first = store.get("bulk/0").await.unwrap().unwrap();
        assert_eq!((&first.value[..], first.version), (&b"v0"[..], 2));
        assert!(
            store
                .put_many(vec![("../x".into(), Zeroizing::new(vec![]))])
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        super::super::conformance::run(&EmbeddedStore::open(dir.path()).unwrap()).await;
    }

    /// Reads served from the cache of records in use (`hot.rs`) while one writer rewrites the
    /// record: the writer reads back each version it wrote, readers never go back to an older
    /// one and never see a value with another version's number, and a delete is seen at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn reads_through_the_cache_follow_every_write() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let value = |i: u64| Zeroizing::new(i.to_be_bytes().to_vec());
        let written = |v: &Versioned| u64::from_be_bytes(v.value[..].try_into().unwrap());
        assert_eq!(store.put("k", value(0), Cas::Absent).await.unwrap(), 1);
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (store, done) = (store.clone(), done.clone());
                tokio::spawn(async move {
                    let (mut last, mut reads) = (0, 0_u64);
                    while !done.load(Ordering::Relaxed) {
                        let got = store.get("k").await.unwrap().unwrap();
                        assert!(
                            got.version >= last,
                            "went back from {last} to {}",
                            got.version
                        );
                        assert_eq!(written(&got) + 1, got.version);
                        last = got.version;
                        reads += 1;
                        tokio::task::yield_now().await;
                    }
                    reads
                })
            })
            .collect();
        for i in 1..=200 {
            let version = store.put("k", value(i), Cas::Any).await.unwrap();
            let got = store.get("k").await.unwrap().unwrap();
            assert_eq!((got.version, written(&got)), (version, i));
        }
        done.store(true, Ordering::Relaxed);
        for reader in readers {
            assert!(reader.await.unwrap() > 0);
        }
        // Read twice with no write under way: served from the cache the second time.
        store.get("k").await.unwrap().unwrap();
        assert_eq!(store.inner.hot.size().0, 1);
        assert_eq!(written(&store.get("k").await.unwrap().unwrap()), 200);
        assert!(store.delete("k").await.unwrap());
        assert_eq!(store.inner.hot.size(), (0, 0));
        assert!(store.get("k").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn without_the_record_cache_every_read_is_from_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_without_record_cache(dir.path()).unwrap();
        let v = store
            .put("k", Zeroizing::new(b"one".to_vec()), Cas::Absent)
            .await
            .unwrap();
        for _ in 0..3 {
            let got = store.get("k").await.unwrap().unwrap();
            assert_eq!((got.version, got.value.as_slice()), (v, &b"one"[..]));
        }
        assert_eq!(store.inner.hot.size(), (0, 0), "nothing was cached");
    }

    #[tokio::test]
    async fn survives_reopen_and_seals_values() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let v = store
            .put(
                "a/b",
                Zeroizing::new(b"canary-refresh-token".to_vec()),
                Cas::Absent,
            )
            .await
            .unwrap();
        drop(store);
        let raw = fs::read(dir.path().join(DATA_FILE)).unwrap();
        assert!(
            !raw.windows(20).any(|w| w == b"canary-refresh-token"),
            "sealed on disk"
        );
        for file in [KEY_FILE, DATA_FILE] {
            let mode = fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let got = store.get("a/b").await.unwrap().unwrap();
        assert_eq!(&got.value[..], b"canary-refresh-token");
        assert_eq!(got.version, v);
    }

    #[tokio::test]
    async fn refuses_readable_key_file_and_detects_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store
            .put("k", Zeroizing::new(b"v".to_vec()), Cas::Any)
            .await
            .unwrap();
        drop(store);
        let key_path = dir.path().join(KEY_FILE);
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = EmbeddedStore::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).unwrap();

        // Copy a record under another key: the AAD binding makes it unreadable.
        {
            let db = redb::Database::create(dir.path().join(DATA_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut table = txn.open_table(RECORDS).unwrap();
                let (version, sealed) = {
                    let found = table.get(&b"k"[..]).unwrap().unwrap();
                    let (v, s) = found.value();
                    (v, s.to_vec())
                };
                table
                    .insert(&b"j"[..], (version, sealed.as_slice()))
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert!(matches!(
            store.get("j").await,
            Err(StoreError::Corrupt { .. })
        ));
        assert_eq!(&store.get("k").await.unwrap().unwrap().value[..], b"v");
    }

    /// A data directory from before the database: its records, sealed as they were, are moved
    /// in once, readable, and the old file is kept aside; a second open changes nothing.
    #[tokio::test]
    async fn a_store_json_is_migrated_once_and_kept_as_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        // Seal two records the way the JSON store did, under the key the directory will use.
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let sealed = |key: &str, version: u64, value: &[u8]| {
            STANDARD.encode(store.inner.seal(key, version, value).unwrap())
        };
        let legacy = serde_json::json!({
            "format": LEGACY_FORMAT,
            "records": {
                "grants/g1": { "version": 3, "sealed": sealed("grants/g1", 3, b"grant one") },
                "providers/p": { "version": 1, "sealed": sealed("providers/p", 1, b"provider") },
            }
        });
        drop(store);
        fs::remove_file(dir.path().join(DATA_FILE)).unwrap();
        fs::write(dir.path().join(LEGACY_FILE), legacy.to_string()).unwrap();

        let store = EmbeddedStore::open(dir.path()).unwrap();
        let g1 = store.get("grants/g1").await.unwrap().unwrap();
        assert_eq!((&g1.value[..], g1.version), (&b"grant one"[..], 3));
        assert_eq!(
            store.list("").await.unwrap(),
            vec!["grants/g1".to_owned(), "providers/p".to_owned()]
        );
        // The next write continues the version; the JSON file is kept aside, not read again.
        let v = store
            .put(
                "grants/g1",
                Zeroizing::new(b"rotated".to_vec()),
                Cas::Version(3),
            )
            .await
            .unwrap();
        assert_eq!(v, 4);
        assert!(!dir.path().join(LEGACY_FILE).exists());
        assert!(dir.path().join(LEGACY_BACKUP).exists());
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(
            &store.get("grants/g1").await.unwrap().unwrap().value[..],
            b"rotated"
        );
        // An old file put back next to a database with records is refused, not merged.
        drop(store);
        fs::copy(dir.path().join(LEGACY_BACKUP), dir.path().join(LEGACY_FILE)).unwrap();
        let err = EmbeddedStore::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("move one of them"), "{err}");
    }

    /// A database from before the byte-keyed table: its records move over once, unchanged and
    /// readable, and the `&str`-keyed table is gone.
    #[tokio::test]
    async fn a_str_keyed_table_is_moved_to_byte_keys_once() {
        use redb::TableHandle as _;
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let records = [("grants/g1", 3, &b"grant one"[..]), ("refs/r", 1, b"ref")];
        let sealed: Vec<_> = records
            .iter()
            .map(|(k, v, plain)| (*k, *v, store.inner.seal(k, *v, plain).unwrap()))
            .collect();
        drop(store);
        {
            let db = redb::Database::create(dir.path().join(DATA_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.delete_table(RECORDS).unwrap();
            {
                let mut old = txn.open_table(STR_KEYED_RECORDS).unwrap();
                for (key, version, sealed) in &sealed {
                    old.insert(*key, (*version, sealed.as_slice())).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        for _ in 0..2 {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let g1 = store.get("grants/g1").await.unwrap().unwrap();
            assert_eq!((&g1.value[..], g1.version), (&b"grant one"[..], 3));
            assert_eq!(
                store.list("").await.unwrap(),
                vec!["grants/g1".to_owned(), "refs/r".to_owned()]
            );
            let tables: Vec<String> = store
                .inner
                .db
                .begin_read()
                .unwrap()
                .list_tables()
                .unwrap()
                .map(|t| t.name().to_owned())
                .collect();
            assert_eq!(tables, vec![RECORDS.name().to_owned()]);
        }

        // An older Valet run on the upgraded store writes to the old table again: refused, and
        // neither table is touched.
        {
            let db = redb::Database::create(dir.path().join(DATA_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(STR_KEYED_RECORDS)
                .unwrap()
                .insert("meta/reference-key", (1, &b"new key"[..]))
                .unwrap();
            txn.commit().unwrap();
        }
        let err = EmbeddedStore::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("restore the backup"), "{err}");
        let db = redb::Database::create(dir.path().join(DATA_FILE)).unwrap();
        let txn = db.begin_read().unwrap();
        assert_eq!(txn.open_table(RECORDS).unwrap().len().unwrap(), 2);
        assert_eq!(txn.open_table(STR_KEYED_RECORDS).unwrap().len().unwrap(), 1);
    }

    #[tokio::test]
    async fn a_legacy_file_that_is_not_a_store_is_refused_and_nothing_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(LEGACY_FILE),
            "{\"format\":\"something-else\",\"records\":{}}",
        )
        .unwrap();
        let err = EmbeddedStore::open(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("expected \"valet-embedded-v1\""),
            "{err}"
        );
        assert!(dir.path().join(LEGACY_FILE).exists(), "left in place");
    }
}
