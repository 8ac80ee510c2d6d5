//! The zero-setup store: one JSON file in the data directory whose every value is sealed with
//! AES-256-GCM (ring) under a 256-bit key file created 0600 on first start. The record key and
//! version are the AEAD's associated data, so records cannot be swapped or rolled back one by one.
//! Writes replace the file atomically (write, fsync, rename), so a crash never leaves half a file.

use super::memory::{apply_put, keys_with_prefix};
use super::{Cas, SecretBytes, SecretStore, StoreError, Versioned, check_key};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::sync::Mutex;
use zeroize::Zeroizing;

const KEY_FILE: &str = "store.key";
const DATA_FILE: &str = "store.json";
const LOCK_FILE: &str = "valet.lock";
const FORMAT: &str = "valet-embedded-v1";

#[derive(Serialize, Deserialize)]
struct FileImage {
    format: String,
    records: BTreeMap<String, Record>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Record {
    version: u64,
    /// base64(nonce || ciphertext || tag)
    sealed: String,
}

pub struct EmbeddedStore {
    path: PathBuf,
    key: LessSafeKey,
    rng: SystemRandom,
    records: Mutex<BTreeMap<String, (u64, String)>>,
    /// Held while the store is open: one process per data directory, so two daemons never
    /// overwrite each other's writes (a rotated refresh token lost is a dead grant).
    _lock: fs::File,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn setup(what: impl std::fmt::Display) -> StoreError {
    StoreError::Setup(what.to_string())
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
        Err(fs::TryLockError::WouldBlock) => Err(setup(format!(
            "the data directory {} is in use by another valet process (a running daemon, or `valet store copy`); stop it first: two processes on one embedded store overwrite each other's writes",
            dir.display()
        ))),
        Err(fs::TryLockError::Error(e)) => {
            Err(setup(format!("cannot lock {}: {e}", path.display())))
        }
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`. Refuses a key file readable by group or others.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
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
        let records = match fs::read(&path) {
            Ok(bytes) => {
                let image: FileImage = serde_json::from_slice(&bytes).map_err(|e| {
                    setup(format!("{} is not a Valet store file: {e}", path.display()))
                })?;
                if image.format != FORMAT {
                    return Err(setup(format!(
                        "{} has format {:?}, expected {FORMAT:?}",
                        path.display(),
                        image.format
                    )));
                }
                image
                    .records
                    .into_iter()
                    .map(|(k, r)| (k, (r.version, r.sealed)))
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(setup(format!("cannot read {}: {e}", path.display()))),
        };
        Ok(Self {
            path,
            key: LessSafeKey::new(unbound),
            rng,
            _lock: lock,
            records: Mutex::new(records),
        })
    }

    fn aad(key: &str, version: u64) -> Vec<u8> {
        let mut aad = key.as_bytes().to_vec();
        aad.push(0);
        aad.extend_from_slice(&version.to_be_bytes());
        aad
    }

    fn seal(&self, key: &str, version: u64, plain: &[u8]) -> Result<String, StoreError> {
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
        Ok(STANDARD.encode(out))
    }

    fn open_record(
        &self,
        key: &str,
        version: u64,
        sealed: &str,
    ) -> Result<SecretBytes, StoreError> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        let raw = STANDARD.decode(sealed).map_err(|_| corrupt("not base64"))?;
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

    async fn persist(&self, records: &BTreeMap<String, (u64, String)>) -> Result<(), StoreError> {
        let image = FileImage {
            format: FORMAT.to_owned(),
            records: records
                .iter()
                .map(|(k, (version, sealed))| {
                    (
                        k.clone(),
                        Record {
                            version: *version,
                            sealed: sealed.clone(),
                        },
                    )
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&image)
            .map_err(|e| StoreError::Unavailable(format!("encoding failed: {e}"), None))?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| StoreError::Unavailable(format!("write task failed: {e}"), None))?
            .map_err(|e| {
                StoreError::Unavailable("cannot write the store file".into(), Some(Box::new(e)))
            })
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
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

    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        check_key(key)?;
        let records = self.records.lock().await;
        match records.get(key) {
            None => Ok(None),
            Some((version, sealed)) => Ok(Some(Versioned {
                value: self.open_record(key, *version, sealed)?,
                version: *version,
            })),
        }
    }

    async fn put(&self, key: &str, value: SecretBytes, cas: Cas) -> Result<u64, StoreError> {
        check_key(key)?;
        let mut records = self.records.lock().await;
        let mut next = records.clone();
        let version = apply_put(&mut next, key, String::new(), cas)?;
        let sealed = self.seal(key, version, &value)?;
        next.insert(key.to_owned(), (version, sealed));
        // Memory changes only after the file is durably replaced: a failed write changes nothing.
        self.persist(&next).await?;
        *records = next;
        Ok(version)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        let mut records = self.records.lock().await;
        if !records.contains_key(key) {
            return Ok(false);
        }
        let mut next = records.clone();
        next.remove(key);
        self.persist(&next).await?;
        *records = next;
        Ok(true)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(keys_with_prefix(&*self.records.lock().await, prefix))
    }

    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        super::super::conformance::run(&EmbeddedStore::open(dir.path()).unwrap()).await;
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
        let raw = fs::read_to_string(dir.path().join(DATA_FILE)).unwrap();
        assert!(!raw.contains("canary-refresh-token"));
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
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

        // Move a record under another key: the AAD binding makes it unreadable.
        let data = dir.path().join(DATA_FILE);
        let raw = fs::read_to_string(&data).unwrap();
        fs::write(&data, raw.replace("\"k\"", "\"j\"")).unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert!(matches!(
            store.get("j").await,
            Err(StoreError::Corrupt { .. })
        ));
    }
}
