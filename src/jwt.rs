//! Signed JWTs for RFC 7523: the assertion of the JWT bearer grant (service accounts, section 2.1)
//! and of `private_key_jwt` client authentication (section 2.2). Keys come as PEM (PKCS#8 RSA or
//! EC P-256, or PKCS#1 RSA) or inside a Google service-account JSON key, and are signed with ring:
//! RS256 for RSA, ES256 for P-256. Nothing here ever prints key material; errors name the problem
//! only.

use crate::secret::{ExposeSecret, SecretString};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair,
};
use std::sync::Arc;
use zeroize::Zeroizing;

/// Why a key or an assertion could not be made. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

fn key_error(why: impl Into<String>) -> KeyError {
    KeyError(why.into())
}

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// A private key that signs assertions, with the PEM it was read from (kept for the sealed
/// store record) and the key id (`kid`) the verifier looks it up by.
#[derive(Clone)]
pub struct SigningKey {
    pem: SecretString,
    key_id: Option<String>,
    pair: Arc<Pair>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.algorithm())
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The body of the first PEM block and its label.
fn pem_block(pem: &str) -> Result<(String, Zeroizing<Vec<u8>>), KeyError> {
    let not_pem = || key_error("is not a PEM private key (-----BEGIN PRIVATE KEY----- ...)");
    let start = pem.find("-----BEGIN ").ok_or_else(not_pem)?;
    let rest = &pem[start + "-----BEGIN ".len()..];
    let label_end = rest.find("-----").ok_or_else(not_pem)?;
    let label = rest[..label_end].to_owned();
    let body = &rest[label_end + 5..];
    let end = body
        .find(&format!("-----END {label}-----"))
        .ok_or_else(not_pem)?;
    let b64: Zeroizing<String> = Zeroizing::new(
        body[..end]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect(),
    );
    let der = STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| key_error("is not a PEM private key: its body is not valid base64"))?;
    Ok((label, Zeroizing::new(der)))
}

impl SigningKey {
    /// Reads a PEM private key. Encrypted and SEC1 EC keys are refused with the conversion to
    /// run; RSA keys must be 2048 bits or more.
    pub fn from_pem(pem: &SecretString, key_id: Option<String>) -> Result<Self, KeyError> {
        let (label, der) = pem_block(pem.expose_secret())?;
        let pair = match label.as_str() {
            "PRIVATE KEY" => match RsaKeyPair::from_pkcs8(&der) {
                Ok(k) => Pair::Rsa(k),
                Err(rsa) => {
                    let rng = SystemRandom::new();
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
                        .map(Pair::Ec)
                        .map_err(|_| {
                            key_error(format!(
                                "is neither an RSA key ({rsa}) nor an EC P-256 key in PKCS#8"
                            ))
                        })?
                }
            },
            "RSA PRIVATE KEY" => Pair::Rsa(
                RsaKeyPair::from_der(&der)
                    .map_err(|e| key_error(format!("is not a usable RSA key: {e}")))?,
            ),
            "EC PRIVATE KEY" => {
                return Err(key_error(
                    "is an EC key in SEC1 form; convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt -in KEY`",
                ));
            }
            "ENCRYPTED PRIVATE KEY" => {
                return Err(key_error(
                    "is encrypted; give the unencrypted key (it is stored sealed)",
                ));
            }
            other => {
                return Err(key_error(format!(
                    "is a PEM '{}' block, not a private key",
                    other.chars().take(40).collect::<String>()
                )));
            }
        };
        if let Some(kid) = &key_id
            && (kid.len() > 256 || kid.chars().any(char::is_control))
        {
            return Err(key_error(
                "key_id must be at most 256 characters without control characters",
            ));
        }
        Ok(Self {
            pem: pem.clone(),
            key_id,
            pair: Arc::new(pair),
        })
    }

    /// The JWS algorithm this key signs with.
    pub fn algorithm(&self) -> &'static str {
        match *self.pair {
            Pair::Rsa(_) => "RS256",
            Pair::Ec(_) => "ES256",
        }
    }

    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// The PEM the key was read from, for the sealed store record only.
    pub fn pem(&self) -> &SecretString {
        &self.pem
    }

    /// The public key: PKCS#1 `RSAPublicKey` DER for RSA, the uncompressed point for EC.
    pub fn public_key(&self) -> Vec<u8> {
        match &*self.pair {
            Pair::Rsa(k) => k.public().as_ref().to_vec(),
            Pair::Ec(k) => k.public_key().as_ref().to_vec(),
        }
    }

    /// A compact JWS of `claims` (header `alg`, `typ: JWT`, and `kid` when known).
    pub fn sign(&self, claims: &serde_json::Value) -> Result<SecretString, KeyError> {
        let mut header = serde_json::json!({ "alg": self.algorithm(), "typ": "JWT" });
        if let Some(kid) = &self.key_id {
            header["kid"] = serde_json::Value::from(kid.as_str());
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let signature = match &*self.pair {
            Pair::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                    .map_err(|_| key_error("RSA signing failed"))?;
                sig
            }
            Pair::Ec(k) => k
                .sign(&rng, input.as_bytes())
                .map_err(|_| key_error("ECDSA signing failed"))?
                .as_ref()
                .to_vec(),
        };
        Ok(SecretString::from(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        )))
    }
}

/// The claims of an RFC 7523 assertion: `iss`, `sub`, `aud`, `iat`, `exp` (five minutes on),
/// a random `jti`, and any extra claims (Google's `scope`).
pub fn claims(
    iss: &str,
    sub: &str,
    aud: &str,
    now: i64,
    extra: &[(&str, String)],
) -> Result<serde_json::Value, KeyError> {
    let mut jti = [0u8; 16];
    SystemRandom::new()
        .fill(&mut jti)
        .map_err(|_| key_error("no randomness for the assertion id"))?;
    let mut c = serde_json::json!({
        "iss": iss,
        "sub": sub,
        "aud": aud,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME,
        "jti": crate::secret::hex(&jti),
    });
    for (k, v) in extra {
        c[*k] = serde_json::Value::from(v.as_str());
    }
    Ok(c)
}

/// How long an assertion is valid: long enough for clock skew, short against replay.
pub const ASSERTION_LIFETIME: i64 = 300;

/// The fields Valet uses from a Google service-account JSON key
/// (<https://cloud.google.com/iam/docs/keys-create-delete>, `"type": "service_account"`).
#[derive(Debug)]
pub struct GoogleKey {
    pub client_email: String,
    pub private_key_id: Option<String>,
    pub private_key: SecretString,
    pub token_uri: Option<String>,
}

/// Whether `raw` looks like a JSON key rather than PEM.
pub fn is_json_key(raw: &str) -> bool {
    raw.trim_start().starts_with('{')
}

/// Parses a Google service-account JSON key.
pub fn parse_google_key(raw: &SecretString) -> Result<GoogleKey, KeyError> {
    #[derive(serde::Deserialize)]
    struct Raw {
        #[serde(rename = "type")]
        kind: Option<String>,
        client_email: Option<String>,
        private_key_id: Option<String>,
        private_key: Option<String>,
        token_uri: Option<String>,
    }
    let r: Raw = serde_json::from_str(raw.expose_secret()).map_err(|e| {
        key_error(format!(
            "is not a valid service-account JSON key ({})",
            crate::secret::json_error_at(&e)
        ))
    })?;
    if r.kind.as_deref() != Some("service_account") {
        return Err(key_error(
            "is a JSON key without \"type\": \"service_account\"",
        ));
    }
    let missing = |f: &str| key_error(format!("is a service-account JSON key without {f}"));
    Ok(GoogleKey {
        client_email: r.client_email.ok_or_else(|| missing("client_email"))?,
        private_key_id: r.private_key_id,
        private_key: SecretString::from(r.private_key.ok_or_else(|| missing("private_key"))?),
        token_uri: r.token_uri,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    const RSA: &str = include_str!("../tests/fixtures/test-rsa-2048.pem");
    const EC: &str = include_str!("../tests/fixtures/test-ec-p256.pem");
    const EC_SEC1: &str = include_str!("../tests/fixtures/test-ec-p256-sec1.pem");

    fn verify(key: &SigningKey, jws: &SecretString) -> serde_json::Value {
        let jws = jws.expose_secret();
        let (input, sig) = jws.rsplit_once('.').expect("three parts");
        let sig = URL_SAFE_NO_PAD.decode(sig).expect("base64url signature");
        let public = key.public_key();
        let ok = match key.algorithm() {
            "RS256" => UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public)
                .verify(input.as_bytes(), &sig),
            _ => UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &public)
                .verify(input.as_bytes(), &sig),
        };
        assert!(ok.is_ok(), "the signature verifies with the public key");
        let (header, body) = input.split_once('.').expect("header.claims");
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("b64")).expect("json");
        assert_eq!(header["alg"], key.algorithm());
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).expect("b64")).expect("json")
    }

    #[test]
    fn rsa_and_ec_keys_sign_verifiable_assertions() {
        for (pem, alg) in [(RSA, "RS256"), (EC, "ES256")] {
            let key = SigningKey::from_pem(&pem.into(), Some("k1".into())).expect("key");
            assert_eq!(key.algorithm(), alg);
            let c = claims(
                "iss",
                "sub",
                "https://as/token",
                1000,
                &[("scope", "a b".into())],
            )
            .expect("claims");
            let got = verify(&key, &key.sign(&c).expect("signed"));
            assert_eq!(got["aud"], "https://as/token");
            assert_eq!(got["exp"], 1000 + ASSERTION_LIFETIME);
            assert_eq!(got["scope"], "a b");
            assert_eq!(got["jti"].as_str().map(str::len), Some(32));
        }
    }

    #[test]
    fn bad_keys_are_refused_without_echoing_them() {
        let cases = [
            ("not a key at all", "is not a PEM private key"),
            (
                "-----BEGIN PRIVATE KEY-----\n@@@\n-----END PRIVATE KEY-----",
                "not valid base64",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
                "neither an RSA key",
            ),
            (EC_SEC1, "openssl pkcs8 -topk8"),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
                "not a private key",
            ),
        ];
        for (pem, want) in cases {
            let err = SigningKey::from_pem(&pem.into(), None).expect_err(pem);
            assert!(err.0.contains(want), "{pem}: {err}");
            assert!(!err.0.contains("AAAA") && !err.0.contains("@@@"), "{err}");
        }
    }

    #[test]
    fn google_json_keys_are_parsed_and_checked() {
        let json = serde_json::json!({
            "type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com",
            "private_key_id": "abc", "private_key": RSA, "token_uri": "https://oauth2.googleapis.com/token",
        })
        .to_string();
        assert!(is_json_key(&json));
        let k = parse_google_key(&json.as_str().into()).expect("parsed");
        assert_eq!(k.client_email, "sa@p.iam.gserviceaccount.com");
        assert!(SigningKey::from_pem(&k.private_key, k.private_key_id).is_ok());
        let user = serde_json::json!({"type": "authorized_user", "client_id": "x"}).to_string();
        let err = parse_google_key(&user.as_str().into()).expect_err("not a service account");
        assert!(err.0.contains("service_account"));
        let err = parse_google_key(&"{\"type\": ".into()).expect_err("truncated");
        assert!(err.0.contains("not a valid service-account JSON key"));
    }
}
