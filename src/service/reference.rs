//! Opaque references: what an agent keeps in session state instead of a token.
//!
//! A reference is `vref_` + base64url(id ‖ tag): a 256-bit random id from ring's `SystemRandom`
//! and an HMAC-SHA256 tag over it under this deployment's reference key, so a forged, altered or
//! foreign reference is refused before any lookup. It carries no user, provider or token data.
//! The store keeps only HMAC(lookup key, id) as the record key, never the reference itself.
//! Records live under `refs/`, survive restarts, expire, can be revoked one by one and die with
//! their grant. Resolving a cached token is an in-memory lookup keyed by that hash.

use super::broker::{AccessToken, Broker};
use super::{Caller, Error, Role, decode, encode};
use crate::domain::GrantKey;
use crate::store::Cas;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use zeroize::Zeroizing;

pub const PREFIX: &str = "vref_";
const ID_LEN: usize = 32;
const TAG_LEN: usize = 32;
/// Longest input even looked at: anything longer is refused unparsed.
const MAX_INPUT: usize = 256;
const MASTER_KEY: &str = "meta/reference-key";
const REFS: &str = "refs/";
/// Above this many cached reference records the cache starts over (it refills from the store).
const MAX_CACHED: usize = 100_000;

/// Why a string is not a reference of this deployment. Messages never echo the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("is empty")]
    Empty,
    #[error("is longer than any reference")]
    TooLong,
    #[error("does not start with \"vref_\"")]
    WrongPrefix,
    #[error("is not a well-formed reference (truncated or corrupted)")]
    Malformed,
    #[error("was not issued by this Valet deployment, or was altered")]
    Foreign,
}

/// The keys derived from the deployment's reference master key.
pub struct ReferenceKeys {
    tag: hmac::Key,
    lookup: hmac::Key,
}

impl ReferenceKeys {
    pub fn from_master(master: &[u8]) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, master);
        let derive =
            |label: &[u8]| hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&root, label).as_ref());
        Self {
            tag: derive(b"valet reference tag v1"),
            lookup: derive(b"valet reference lookup v1"),
        }
    }

    /// A new reference and its lookup hash.
    pub fn mint(&self) -> Result<(String, String), Error> {
        let mut id = Zeroizing::new([0u8; ID_LEN]);
        SystemRandom::new()
            .fill(&mut *id)
            .map_err(|_| Error::Internal("the system RNG failed".into()))?;
        let tag = hmac::sign(&self.tag, &*id);
        let mut raw = Zeroizing::new(Vec::with_capacity(ID_LEN + TAG_LEN));
        raw.extend_from_slice(&*id);
        raw.extend_from_slice(tag.as_ref());
        Ok((
            format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&*raw)),
            self.lookup_hash(&*id),
        ))
    }

    fn lookup_hash(&self, id: &[u8]) -> String {
        hex::encode(hmac::sign(&self.lookup, id).as_ref())
    }

    /// Checks a presented reference and returns its lookup hash. The tag is verified in
    /// constant time (ring) before anything is looked up.
    pub fn parse(&self, s: &str) -> Result<String, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if s.len() > MAX_INPUT {
            return Err(ReferenceError::TooLong);
        }
        let body = s.strip_prefix(PREFIX).ok_or(ReferenceError::WrongPrefix)?;
        let raw = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(body)
                .map_err(|_| ReferenceError::Malformed)?,
        );
        if raw.len() != ID_LEN + TAG_LEN {
            return Err(ReferenceError::Malformed);
        }
        let (id, tag) = raw.split_at(ID_LEN);
        hmac::verify(&self.tag, id, tag).map_err(|_| ReferenceError::Foreign)?;
        Ok(self.lookup_hash(id))
    }
}

/// A reference as stored (under `refs/{lookup hash}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ReferenceRecord {
    pub grant: GrantKey,
    pub scopes: crate::domain::Scopes,
    /// The caller (API key name) it was issued to.
    pub owner: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub single_use: bool,
    #[serde(default)]
    pub used: bool,
}

/// Not yours, unknown, expired, revoked or spent: all look the same to the caller.
fn denied() -> Error {
    Error::PermissionDenied(
        "the reference is unknown, expired, revoked, spent, or was issued to another caller",
    )
}

fn invalid(e: ReferenceError) -> Error {
    Error::invalid("reference", e.to_string())
}

impl Broker {
    /// The deployment's reference keys: created in the store on first use, shared by replicas.
    async fn reference_keys(&self) -> Result<&ReferenceKeys, Error> {
        self.reference_keys
            .get_or_try_init(|| async {
                if let Some(rec) = self.store.get(MASTER_KEY).await? {
                    return Ok(ReferenceKeys::from_master(&rec.value));
                }
                let mut master = Zeroizing::new(vec![0u8; 32]);
                SystemRandom::new()
                    .fill(&mut master)
                    .map_err(|_| Error::Internal("the system RNG failed".into()))?;
                match self
                    .store
                    .put(MASTER_KEY, master.clone(), Cas::Absent)
                    .await
                {
                    Ok(_) => Ok(ReferenceKeys::from_master(&master)),
                    // Another replica created it first: use theirs.
                    Err(crate::store::StoreError::Conflict) => {
                        let rec =
                            self.store.get(MASTER_KEY).await?.ok_or_else(|| {
                                Error::Internal("the reference key vanished".into())
                            })?;
                        Ok(ReferenceKeys::from_master(&rec.value))
                    }
                    Err(e) => Err(e.into()),
                }
            })
            .await
    }

    /// Issues a reference to `caller` for `key` (whose token is usable now).
    pub(super) async fn issue_reference(
        &self,
        caller: &Caller,
        key: &GrantKey,
        token: &AccessToken,
        single_use: bool,
    ) -> Result<(String, i64), Error> {
        let provider = self.providers.get(&key.provider)?;
        let keys = self.reference_keys().await?;
        let (reference, hash) = keys.mint()?;
        let now = self.clock.now_unix();
        let record = ReferenceRecord {
            grant: key.clone(),
            scopes: token.scopes.clone(),
            owner: caller.name.clone(),
            created_at: now,
            expires_at: now + i64::from(provider.reference_ttl_seconds),
            single_use,
            used: false,
        };
        self.store
            .put(&format!("{REFS}{hash}"), encode(&record)?, Cas::Absent)
            .await?;
        let expires_at = record.expires_at;
        self.remember_reference(hash, record);
        tracing::info!(provider = %key.provider, single_use, "issued a reference");
        Ok((reference, expires_at))
    }

    fn remember_reference(&self, hash: String, record: ReferenceRecord) {
        let mut refs = self.references.write().unwrap_or_else(|p| p.into_inner());
        if refs.len() >= MAX_CACHED {
            refs.clear();
        }
        refs.insert(hash, Arc::new(record));
    }

    fn forget_reference(&self, hash: &str) {
        self.references
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(hash);
    }

    /// The record for `hash`: memory first, then the store (which fills memory).
    async fn reference_record(&self, hash: &str) -> Result<Option<Arc<ReferenceRecord>>, Error> {
        let cached = self
            .references
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
            .cloned();
        if let Some(r) = cached {
            return Ok(Some(r));
        }
        let key = format!("{REFS}{hash}");
        let Some(rec) = self.store.get(&key).await? else {
            return Ok(None);
        };
        let record: ReferenceRecord = decode(&key, &rec.value)?;
        self.remember_reference(hash.to_owned(), record.clone());
        Ok(Some(Arc::new(record)))
    }

    /// The lookup hash of a presented reference, and its record if there is one.
    async fn find_reference(
        &self,
        reference: &str,
    ) -> Result<(String, Option<Arc<ReferenceRecord>>), Error> {
        let hash = self
            .reference_keys()
            .await?
            .parse(reference)
            .map_err(invalid)?;
        let record = self.reference_record(&hash).await?;
        Ok((hash, record))
    }

    /// A fresh access token for the grant `reference` names, for the caller it was issued to.
    pub async fn resolve(
        &self,
        caller: &Caller,
        reference: &str,
        min_ttl: u32,
    ) -> Result<AccessToken, Error> {
        let min_ttl = self.min_ttl(min_ttl)?;
        let (hash, Some(record)) = self.find_reference(reference).await? else {
            return Err(denied());
        };
        let now = self.clock.now_unix();
        if record.owner != caller.name || record.expires_at <= now || record.used {
            return Err(denied());
        }
        let provider = self
            .providers
            .get(&record.grant.provider)
            .map_err(|e| match e {
                Error::NotFound { .. } => denied(),
                other => other,
            })?;
        let token = match self
            .usable_token(&provider, &record.grant, &record.scopes, min_ttl)
            .await?
        {
            Some(t) => t,
            None => {
                return match self.load_grant(&record.grant).await? {
                    // The grant is there but the provider refused it: the user must consent again.
                    Some(_) => Err(Error::ReauthorizationRequired),
                    // The grant was revoked: its references died with it.
                    None => {
                        self.forget_reference(&hash);
                        Err(denied())
                    }
                };
            }
        };
        // Spent only once a token is in hand, so a failed resolve does not use it up.
        if record.single_use {
            self.spend(&hash).await?;
        }
        Ok(token)
    }

    /// Marks a single-use reference spent; exactly one caller wins (check-and-set).
    async fn spend(&self, hash: &str) -> Result<(), Error> {
        let _guard = self.spend_lock.lock().await;
        let key = format!("{REFS}{hash}");
        let Some(rec) = self.store.get(&key).await? else {
            return Err(denied());
        };
        let mut record: ReferenceRecord = decode(&key, &rec.value)?;
        if record.used {
            return Err(denied());
        }
        record.used = true;
        match self
            .store
            .put(&key, encode(&record)?, Cas::Version(rec.version))
            .await
        {
            Ok(_) => {
                self.forget_reference(hash);
                Ok(())
            }
            Err(crate::store::StoreError::Conflict) => Err(denied()),
            Err(e) => Err(e.into()),
        }
    }

    /// Revokes one reference. Only the caller it was issued to, or an admin, may.
    pub async fn revoke_reference(&self, caller: &Caller, reference: &str) -> Result<bool, Error> {
        let (hash, Some(record)) = self.find_reference(reference).await? else {
            return Ok(false);
        };
        if record.owner != caller.name && caller.role != Role::Admin {
            return Err(denied());
        }
        self.forget_reference(&hash);
        Ok(self.store.delete(&format!("{REFS}{hash}")).await?)
    }

    /// Deletes every reference to a grant matching `dead` (revocation, provider deletion).
    pub(super) async fn drop_references(
        &self,
        dead: impl Fn(&GrantKey) -> bool,
    ) -> Result<usize, Error> {
        self.references
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, r| !dead(&r.grant));
        let mut n = 0;
        for key in self.store.list(REFS).await? {
            let Some(rec) = self.store.get(&key).await? else {
                continue;
            };
            let record: ReferenceRecord = decode(&key, &rec.value)?;
            if dead(&record.grant) {
                self.store.delete(&key).await?;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys() -> ReferenceKeys {
        ReferenceKeys::from_master(b"test master key 0123456789abcdef")
    }

    #[test]
    fn minted_references_parse_to_their_hash() {
        let k = keys();
        let (r, hash) = k.mint().unwrap();
        assert!(r.starts_with(PREFIX));
        assert_eq!(k.parse(&r).unwrap(), hash);
        assert!(
            !hash.contains(&r[PREFIX.len()..]),
            "the hash is not the reference"
        );
        let (r2, _) = k.mint().unwrap();
        assert_ne!(r, r2);
    }

    #[test]
    fn bad_references_are_refused() {
        let k = keys();
        let (r, _) = k.mint().unwrap();
        assert_eq!(k.parse(""), Err(ReferenceError::Empty));
        assert_eq!(k.parse(&"x".repeat(300)), Err(ReferenceError::TooLong));
        assert_eq!(
            k.parse(&r.replacen("vref_", "vtok_", 1)),
            Err(ReferenceError::WrongPrefix)
        );
        assert_eq!(k.parse(&r[..r.len() - 4]), Err(ReferenceError::Malformed));
        assert_eq!(k.parse(&format!("{r}AAAA")), Err(ReferenceError::Malformed));
        assert_eq!(k.parse("vref_!!!"), Err(ReferenceError::Malformed));
        let other = ReferenceKeys::from_master(b"another deployment's master key!");
        assert_eq!(other.parse(&r), Err(ReferenceError::Foreign));
        // One flipped bit anywhere in the body.
        let mut raw = URL_SAFE_NO_PAD.decode(&r[PREFIX.len()..]).unwrap();
        for i in [0, 31, 32, 63] {
            raw[i] ^= 1;
            let flipped = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&raw));
            assert_eq!(
                k.parse(&flipped),
                Err(ReferenceError::Foreign),
                "bit in byte {i}"
            );
            raw[i] ^= 1;
        }
    }

    proptest! {
        #[test]
        fn the_parser_never_panics_and_accepts_nothing_forged(s in ".{0,300}") {
            let k = keys();
            prop_assert!(k.parse(&s).is_err());
            let _ = k.parse(&format!("{PREFIX}{s}"));
        }

        #[test]
        fn random_bodies_of_the_right_length_are_foreign(body in proptest::collection::vec(any::<u8>(), 64)) {
            let k = keys();
            let s = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&body));
            prop_assert_eq!(k.parse(&s), Err(ReferenceError::Foreign));
        }
    }
}
