//! Secret-holding types and the few places a secret may be turned back into bytes.
//!
//! Secrets are `secrecy::SecretString` (zeroized on drop, redacting `Debug`, no `Display` or
//! `Serialize`). The store needs to write them inside sealed records, which `serde_secret` allows
//! explicitly; nothing else serializes a secret.

pub use secrecy::{ExposeSecret, SecretString};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

/// Returns `n` bytes from the OS CSPRNG, base64url-encoded without padding.
pub fn random_token(n: usize) -> Result<String, ring::error::Unspecified> {
    let mut buf = vec![0u8; n];
    SystemRandom::new().fill(&mut buf)?;
    let s = URL_SAFE_NO_PAD.encode(&buf);
    zeroize::Zeroize::zeroize(&mut buf);
    Ok(s)
}

/// A secret kept in a file only its owner (and its group) may read (an AppRole secret id, the
/// admin key), trimmed. A file others may read, or its group may write, is refused, with the
/// command that fixes it. Group read is allowed: Kubernetes mounts a Secret volume's files
/// `root:<fsGroup>` 0440 for a pod that runs as another user.
pub fn read_private_file(path: &std::path::Path, what: &str) -> Result<SecretString, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let cannot = |e: std::io::Error| format!("cannot read {what} file {}: {e}", path.display());
    let mode = std::fs::metadata(path)
        .map_err(cannot)?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o027 != 0 {
        return Err(format!(
            "{what} file {} is open to others or writable by its group (mode {mode:o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(cannot)?);
    Ok(SecretString::from(text.trim().to_owned()))
}

/// What went wrong parsing JSON that may hold secrets: the kind and position only, since serde's
/// message can quote the value it did not expect (a token, a record's field).
pub fn json_error_at(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {}, column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

/// An error's chain as text, each serde JSON error in it cut to [`json_error_at`]: for errors of
/// clients that parse answers holding secrets and keep serde's error as a source.
pub fn chain_without_values(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut next = Some(e);
    while let Some(e) = next {
        if !out.is_empty() {
            out.push_str(": ");
        }
        match e.downcast_ref::<serde_json::Error>() {
            Some(json) => out.push_str(&json_error_at(json)),
            None => out.push_str(&e.to_string()),
        }
        next = e.source();
    }
    out
}

/// SHA-256 of `data`, as raw bytes.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// `bytes` as lowercase hex (the hex crate's `encode`, without its character iterator: digests
/// are encoded on every call's audit event and `Resolve`).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Serde helpers for `SecretString` fields of records that are only ever written sealed.
pub mod serde_secret {
    use super::{ExposeSecret, SecretString};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(secret) => s.serialize_some(secret.expose_secret()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(SecretString::from))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lowercase_and_two_digits_a_byte() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(super::hex(&bytes), hex::encode(&bytes));
        assert_eq!(super::hex(&[0x0a, 0xf0]), "0af0");
        assert_eq!(super::hex(&[]), "");
    }
}
