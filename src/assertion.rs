//! User assertions: a JWT from the operator's identity provider proving which user a request is
//! for. A caller configured with `require_user_assertion` must send one (gRPC metadata
//! `x-valet-user-assertion`) with every request naming a user; its signature is verified with the
//! provider's JWKS (RS256 or ES256; `none` and HMAC algorithms are refused), its `iss`, `aud`,
//! `exp` and `nbf` checked (60 s leeway), and the configured claim (default `sub`) must equal the
//! `user_id`. A stolen agent key alone then yields no user's token.

use crate::clock::Clock;
use crate::oauth::ProviderHttp;
use crate::secret::{ExposeSecret, SecretString};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents, UnparsedPublicKey,
};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use url::Url;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY: i64 = 60;
/// Keys are fetched again after this long, or when a token names an unknown `kid` (at most
/// once per `REFETCH_AFTER`).
const KEYS_TTL: Duration = Duration::from_secs(300);
const REFETCH_AFTER: Duration = Duration::from_secs(30);
const MAX_TOKEN: usize = 16 * 1024;

/// The operator's identity provider, as `[user_assertions]` configures it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionConfig {
    pub issuer: String,
    pub audience: String,
    pub jwks_url: Url,
    /// The claim holding the user id.
    pub claim: String,
}

#[derive(Debug, Clone)]
enum Key {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ec(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Jwk {
    kid: Option<String>,
    key: Key,
}

#[derive(Debug, Default)]
struct KeyCache {
    keys: Vec<Jwk>,
    fetched: Option<Instant>,
}

/// Verifies user assertions against the configured issuer.
#[derive(Debug)]
pub struct UserAssertions {
    config: AssertionConfig,
    http: ProviderHttp,
    clock: Arc<dyn Clock>,
    cache: tokio::sync::Mutex<KeyCache>,
}

/// Why an assertion was refused: safe to show (no token content).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub &'static str);

fn b64json(part: &str) -> Option<Value> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
}

fn parse_jwks(body: &[u8]) -> Vec<Jwk> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let bytes = |k: &Value, f: &str| k[f].as_str().and_then(|s| URL_SAFE_NO_PAD.decode(s).ok());
    v["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| k["use"].as_str().is_none_or(|u| u == "sig"))
        .filter_map(|k| {
            let key = match k["kty"].as_str()? {
                "RSA" => Key::Rsa {
                    n: bytes(k, "n")?,
                    e: bytes(k, "e")?,
                },
                "EC" if k["crv"] == "P-256" => {
                    let (x, y) = (bytes(k, "x")?, bytes(k, "y")?);
                    if x.len() != 32 || y.len() != 32 {
                        return None;
                    }
                    Key::Ec([&[4u8][..], &x, &y].concat())
                }
                _ => return None,
            };
            Some(Jwk {
                kid: k["kid"].as_str().map(str::to_owned),
                key,
            })
        })
        .collect()
}

impl UserAssertions {
    pub fn new(config: AssertionConfig, http: ProviderHttp, clock: Arc<dyn Clock>) -> Self {
        Self {
            config,
            http,
            clock,
            cache: tokio::sync::Mutex::default(),
        }
    }

    async fn fetch(&self) -> Result<Vec<Jwk>, Refused> {
        let unavailable = Refused("the identity provider's keys (jwks_url) cannot be fetched");
        let req = http::Request::builder()
            .method(http::Method::GET)
            .uri(self.config.jwks_url.as_str())
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|_| unavailable.clone())?;
        match self.http.send(req).await {
            Ok(resp) if resp.status().is_success() => Ok(parse_jwks(resp.body())),
            Ok(resp) => {
                tracing::warn!(
                    "fetching the user-assertion JWKS failed: HTTP {}",
                    resp.status()
                );
                Err(unavailable)
            }
            Err(e) => {
                tracing::warn!("fetching the user-assertion JWKS failed: {e}");
                Err(unavailable)
            }
        }
    }

    /// The keys that may have signed a token naming `kid`.
    async fn keys_for(&self, kid: Option<&str>) -> Result<Vec<Jwk>, Refused> {
        let mut cache = self.cache.lock().await;
        let age = cache.fetched.map(|t| t.elapsed());
        let known = cache
            .keys
            .iter()
            .any(|k| kid.is_none() || k.kid.as_deref() == kid);
        let stale = age.is_none_or(|a| a > KEYS_TTL);
        let may_refetch = age.is_none_or(|a| a > REFETCH_AFTER);
        if stale || (!known && may_refetch) {
            cache.keys = self.fetch().await?;
            cache.fetched = Some(Instant::now());
        }
        Ok(cache
            .keys
            .iter()
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
            .cloned()
            .collect())
    }

    /// Verifies `token` and returns the user it is for (the configured claim).
    pub async fn user_of(&self, token: &SecretString) -> Result<String, Refused> {
        let token = token.expose_secret();
        if token.len() > MAX_TOKEN {
            return Err(Refused("the user assertion is too long"));
        }
        let malformed = Refused("the user assertion is not a well-formed JWT");
        let (input, sig) = token.rsplit_once('.').ok_or(malformed.clone())?;
        let (header, claims) = input.split_once('.').ok_or(malformed.clone())?;
        let (Some(header), Some(claims), Ok(sig)) = (
            b64json(header),
            b64json(claims),
            URL_SAFE_NO_PAD.decode(sig),
        ) else {
            return Err(malformed);
        };
        let alg = header["alg"].as_str().unwrap_or_default();
        if alg != "RS256" && alg != "ES256" {
            return Err(Refused(
                "the user assertion must be signed with RS256 or ES256",
            ));
        }
        let keys = self.keys_for(header["kid"].as_str()).await?;
        let verified = keys.iter().any(|k| match (&k.key, alg) {
            (Key::Rsa { n, e }, "RS256") => RsaPublicKeyComponents { n, e }
                .verify(&RSA_PKCS1_2048_8192_SHA256, input.as_bytes(), &sig)
                .is_ok(),
            (Key::Ec(point), "ES256") => UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                .verify(input.as_bytes(), &sig)
                .is_ok(),
            _ => false,
        });
        if !verified {
            return Err(Refused(
                "the user assertion's signature does not verify with the identity provider's keys",
            ));
        }
        if claims["iss"].as_str() != Some(self.config.issuer.as_str()) {
            return Err(Refused("the user assertion is from another issuer"));
        }
        let aud_ok = match &claims["aud"] {
            Value::String(a) => *a == self.config.audience,
            Value::Array(a) => a.iter().any(|v| v.as_str() == Some(&self.config.audience)),
            _ => false,
        };
        if !aud_ok {
            return Err(Refused("the user assertion is for another audience"));
        }
        let now = self.clock.now_unix();
        match claims["exp"].as_i64() {
            Some(exp) if exp + LEEWAY > now => {}
            _ => return Err(Refused("the user assertion has expired (or has no exp)")),
        }
        if claims["nbf"].as_i64().is_some_and(|nbf| nbf - LEEWAY > now) {
            return Err(Refused("the user assertion is not valid yet"));
        }
        claims[self.config.claim.as_str()]
            .as_str()
            .map(str::to_owned)
            .ok_or(Refused(
                "the user assertion lacks the configured user claim",
            ))
    }
}
