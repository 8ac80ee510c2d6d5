//! The admin API key: from `--admin-key-file`, or in dev mode created on first start and shown
//! once (only its hash is kept, in the data directory).

use crate::config::{Config, ConfigError};
use crate::domain::Role;
use crate::secret::{ExposeSecret as _, random_token, read_private_file, sha256};
use crate::transport::grpc::CallerKey;
use anyhow::Context as _;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const ADMIN_HASH_FILE: &str = "admin-key.sha256";

/// The shortest admin key a file may hold: a guessable key is every credential in the store.
/// (`valet key new` makes 49 characters, 256 random bits.)
const MIN_ADMIN_KEY_CHARS: usize = 32;

/// A dev admin key made on this start: its hash is kept and the key shown only once the daemon
/// is about to serve (`keep_and_show`), so a start that fails before shows no key nobody could
/// use again.
pub(super) struct FirstKey {
    key: crate::secret::SecretString,
    hash: [u8; 32],
    hash_path: std::path::PathBuf,
}

impl std::fmt::Debug for FirstKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirstKey")
            .field("hash_path", &self.hash_path)
            .finish_non_exhaustive()
    }
}

impl FirstKey {
    /// Writes the key's hash to the data directory, then shows the key, once.
    #[allow(
        clippy::print_stdout,
        reason = "the one-time dev admin key is shown to the operator on stdout"
    )]
    pub(super) fn keep_and_show(self) -> anyhow::Result<()> {
        write_private(&self.hash_path, crate::secret::hex(&self.hash).as_bytes())?;
        println!("admin key: {}", self.key.expose_secret());
        println!(
            "  (shown once; only its hash is kept, in {})",
            self.hash_path.display()
        );
        Ok(())
    }
}

/// The admin key from `--admin-key-file`, or in dev mode the one kept from the first start, or
/// a new one (shown when the daemon serves).
#[allow(
    clippy::print_stdout,
    reason = "the operator is told which dev admin key is in use, on stdout"
)]
pub(super) fn admin_key(config: &Config) -> anyhow::Result<(Option<CallerKey>, Option<FirstKey>)> {
    let admin = |key_sha256| CallerKey {
        name: "admin".into(),
        role: Role::Admin,
        key_sha256,
        agents: crate::domain::AgentBinding::Any,
        require_user_assertion: false,
        rate_limit: 0,
        max_watches: 0,
        unix_uid: None,
        tls_identity: None,
        previous: false,
    };
    if let Some(path) = &config.admin_key_file {
        return Ok((Some(admin(key_file_hash(path)?)), None));
    }
    if !config.dev {
        return Ok((None, None));
    }
    // 0700, as the embedded store makes it (with the memory store this comes first).
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&config.data_dir)?;
    let hash_path = config.data_dir.join(ADMIN_HASH_FILE);
    if hash_path.exists() {
        let mut hash = [0u8; 32];
        let text = std::fs::read_to_string(&hash_path)?;
        hex::decode_to_slice(text.trim(), &mut hash)
            .with_context(|| format!("{} does not hold a SHA-256 hex hash", hash_path.display()))?;
        println!(
            "using the admin key created on first start (delete {} to get a new one)",
            hash_path.display()
        );
        return Ok((Some(admin(hash)), None));
    }
    let key = format!(
        "valet_{}",
        random_token(32).map_err(|_| anyhow::anyhow!("the system RNG failed"))?
    );
    let hash = sha256(key.as_bytes());
    let first = FirstKey {
        key: key.into(),
        hash,
        hash_path,
    };
    Ok((Some(admin(hash)), Some(first)))
}

/// The hash of the admin key in `path`; refused when others may read the file or the key is short.
pub(super) fn key_file_hash(path: &Path) -> anyhow::Result<[u8; 32]> {
    let key = read_private_file(path, "admin key").map_err(ConfigError::in_file)?;
    let key = key.expose_secret();
    let length = key.chars().count();
    if length < MIN_ADMIN_KEY_CHARS {
        return Err(ConfigError::in_file(format_args!(
            "admin key file {} holds a {length}-character key; the admin key must be at least {MIN_ADMIN_KEY_CHARS} random characters (`valet key new` makes one)",
            path.display()
        )));
    }
    Ok(sha256(key.as_bytes()))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
