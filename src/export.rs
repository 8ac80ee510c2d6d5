//! Grant export for leaving Valet: a provider's grants (refresh tokens, or the stored value of a
//! grant without one) sealed to a recipient's RSA public key, so the export is readable only
//! with the matching private key (`valet grant open`), never in transit or at rest.
//!
//! The envelope, JSON: `{"valet_export": 1, "alg": "RSA-OAEP-256+A256GCM", "key", "nonce",
//! "ciphertext"}` (base64url): a fresh AES-256-GCM key, wrapped with RSA-OAEP (SHA-256), seals
//! the grants' JSON.

use crate::secret::{ExposeSecret as _, SecretString};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::aead;
use rsa::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use serde::{Deserialize, Serialize};

const ALG: &str = "RSA-OAEP-256+A256GCM";

/// One exported grant (its secret included: this only ever leaves sealed).
#[derive(Debug, Serialize, Deserialize)]
pub struct Exported {
    pub provider_id: String,
    pub user_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub account: String,
    #[serde(default, with = "crate::secret::serde_secret")]
    pub refresh_token: Option<SecretString>,
    /// A grant without a refresh token: its stored value (a static credential, a non-expiring
    /// token).
    #[serde(default, with = "crate::secret::serde_secret")]
    pub stored_value: Option<SecretString>,
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub created_at: i64,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    valet_export: u32,
    alg: String,
    key: String,
    nonce: String,
    ciphertext: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(
        "the recipient key is not a PEM RSA public key (SubjectPublicKeyInfo, `openssl pkey -pubout`) of at least 2048 bits"
    )]
    BadPublicKey,
    #[error("the private key is not a PEM PKCS#8 RSA private key")]
    BadPrivateKey,
    #[error("not a Valet export (or another version)")]
    NotAnExport,
    #[error(
        "this private key cannot open this export (another recipient, or the export was altered)"
    )]
    CannotOpen,
    #[error("sealing failed")]
    Crypto,
}

/// Seals `grants` to the RSA public key in `recipient_pem`.
pub fn seal(grants: &[Exported], recipient_pem: &str) -> Result<String, SealError> {
    let public = rsa::RsaPublicKey::from_public_key_pem(recipient_pem.trim())
        .map_err(|_| SealError::BadPublicKey)?;
    if rsa::traits::PublicKeyParts::size(&public) < 256 {
        return Err(SealError::BadPublicKey);
    }
    let rng = ring::rand::SystemRandom::new();
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    let mut nonce = [0u8; 12];
    ring::rand::SecureRandom::fill(&rng, key.as_mut()).map_err(|_| SealError::Crypto)?;
    ring::rand::SecureRandom::fill(&rng, &mut nonce).map_err(|_| SealError::Crypto)?;
    let mut data =
        zeroize::Zeroizing::new(serde_json::to_vec(grants).map_err(|_| SealError::Crypto)?);
    let sealing = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::AES_256_GCM, key.as_ref()).map_err(|_| SealError::Crypto)?,
    );
    sealing
        .seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(ALG.as_bytes()),
            &mut *data,
        )
        .map_err(|_| SealError::Crypto)?;
    let wrapped = public
        .encrypt(
            &mut rsa::rand_core::OsRng,
            rsa::Oaep::new::<sha2_010::Sha256>(),
            key.as_ref(),
        )
        .map_err(|_| SealError::Crypto)?;
    serde_json::to_string_pretty(&Envelope {
        valet_export: 1,
        alg: ALG.into(),
        key: B64.encode(wrapped),
        nonce: B64.encode(nonce),
        ciphertext: B64.encode(&*data),
    })
    .map_err(|_| SealError::Crypto)
}

/// Opens an export with the recipient's PKCS#8 PEM private key.
pub fn open(sealed: &str, private_pem: &SecretString) -> Result<Vec<Exported>, SealError> {
    let private = rsa::RsaPrivateKey::from_pkcs8_pem(private_pem.expose_secret().trim())
        .map_err(|_| SealError::BadPrivateKey)?;
    let env: Envelope = serde_json::from_str(sealed).map_err(|_| SealError::NotAnExport)?;
    if env.valet_export != 1 || env.alg != ALG {
        return Err(SealError::NotAnExport);
    }
    let b64 = |s: &str| B64.decode(s).map_err(|_| SealError::NotAnExport);
    let key = zeroize::Zeroizing::new(
        private
            .decrypt(rsa::Oaep::new::<sha2_010::Sha256>(), &b64(&env.key)?)
            .map_err(|_| SealError::CannotOpen)?,
    );
    let nonce: [u8; 12] = b64(&env.nonce)?
        .try_into()
        .map_err(|_| SealError::NotAnExport)?;
    let opening = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::AES_256_GCM, &key).map_err(|_| SealError::CannotOpen)?,
    );
    let mut data = zeroize::Zeroizing::new(b64(&env.ciphertext)?);
    let plain = opening
        .open_in_place(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(ALG.as_bytes()),
            &mut data,
        )
        .map_err(|_| SealError::CannotOpen)?;
    serde_json::from_slice(plain).map_err(|_| SealError::NotAnExport)
}
