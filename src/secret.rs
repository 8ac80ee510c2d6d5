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

/// SHA-256 of `data`, as raw bytes.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
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
