//! Opaque references: what an agent keeps in session state instead of a token.
//!
//! A reference is `vref_` + base64url(id ‖ tag): a 256-bit random id from ring's `SystemRandom`
//! and an HMAC-SHA256 tag over it under this deployment's reference key, so a forged, altered or
//! foreign reference is refused before any lookup. It carries no user, provider or token data.
//! The store keeps only HMAC(lookup key, id) as the record key, never the reference itself.
//! Records survive restarts, expire, can be revoked one by one and die with their grant (found
//! through the store's per-grant index). Finding a record already seen is an in-memory lookup
//! keyed by that hash. This module owns the keys, the record cache and spending; whether a
//! token is usable is the broker's business, composed by `credentials`.

use super::Error;
use super::policy::reference_denied;
use crate::clock::Clock;
use crate::domain::{GrantKey, ProviderId, ReferenceRecord, Scopes};
use crate::secret::SecretString;
use crate::store::{MetaRepo, ReferenceRepo, StoreError};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{aead, hmac};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use zeroize::Zeroizing;

pub(super) const PREFIX: &str = "vref_";
const ID_LEN: usize = 32;
const TAG_LEN: usize = 32;
/// Longest input even looked at: anything longer is refused unparsed.
const MAX_INPUT: usize = 256;
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
pub(crate) struct ReferenceKeys {
    tag: hmac::Key,
    lookup: hmac::Key,
    /// Seals `ListGrants` page tokens (AES-256-GCM).
    page: Zeroizing<Vec<u8>>,
}

/// Binds a sealed page token to its use and to the listing's filters.
fn page_aad(filters: &str) -> Vec<u8> {
    [
        b"valet ListGrants page token v1\n".as_slice(),
        filters.as_bytes(),
    ]
    .concat()
}
const NONCE_LEN: usize = 12;
/// Longest page token taken: a grant key of the longest ids (provider, user, agent, account),
/// sealed and encoded, is under 2 KiB.
const MAX_PAGE_TOKEN: usize = 4096;

impl ReferenceKeys {
    pub(crate) fn from_master(master: &[u8]) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, master);
        let derive =
            |label: &[u8]| hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&root, label).as_ref());
        Self {
            tag: derive(b"valet reference tag v1"),
            lookup: derive(b"valet reference lookup v1"),
            page: Zeroizing::new(hmac::sign(&root, b"valet page token v1").as_ref().to_vec()),
        }
    }

    fn page_key(&self) -> Result<aead::LessSafeKey, Error> {
        aead::UnboundKey::new(&aead::AES_256_GCM, &self.page)
            .map(aead::LessSafeKey::new)
            .map_err(|_| Error::internal("the page-token key is not an AES-256 key"))
    }

    /// A `ListGrants` page token: where a listing stopped, sealed with the listing's `filters`,
    /// so the caller learns nothing from it (the place may be a grant it may not see), cannot
    /// forge one, and cannot continue another listing with it. Replicas share the key, so any
    /// of them continues the listing.
    pub(crate) fn seal_cursor(&self, cursor: &str, filters: &str) -> Result<String, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| Error::internal("the system RNG failed"))?;
        let mut sealed = cursor.as_bytes().to_vec();
        self.page_key()?
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(page_aad(filters)),
                &mut sealed,
            )
            .map_err(|_| Error::internal("sealing a page token failed"))?;
        let mut raw = nonce.to_vec();
        raw.extend_from_slice(&sealed);
        Ok(URL_SAFE_NO_PAD.encode(raw))
    }

    /// The place a page token sealed, if this deployment sealed it for a listing with `filters`.
    pub(crate) fn open_cursor(&self, token: &str, filters: &str) -> Option<String> {
        if token.len() > MAX_PAGE_TOKEN {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let mut buf = sealed.to_vec();
        let plain = self
            .page_key()
            .ok()?
            .open_in_place(
                aead::Nonce::try_assume_unique_for_key(nonce).ok()?,
                aead::Aad::from(page_aad(filters)),
                &mut buf,
            )
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }

    /// A new reference and its lookup hash.
    pub(super) fn mint(&self) -> Result<(String, String), Error> {
        let mut id = Zeroizing::new([0u8; ID_LEN]);
        SystemRandom::new()
            .fill(&mut *id)
            .map_err(|_| Error::internal("the system RNG failed"))?;
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
        crate::secret::hex(hmac::sign(&self.lookup, id).as_ref())
    }

    /// Checks a presented reference and returns its lookup hash. The tag is verified in
    /// constant time (ring) before anything is looked up.
    pub(crate) fn parse(&self, s: &str) -> Result<String, ReferenceError> {
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

impl std::fmt::Debug for ReferenceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReferenceKeys(<redacted>)")
    }
}

fn invalid(e: ReferenceError) -> Error {
    Error::invalid("reference", e.to_string())
}

/// A presented reference: its lookup hash and its record, if there is one.
#[derive(Debug)]
pub(crate) struct Found {
    pub hash: String,
    pub record: Option<Arc<ReferenceRecord>>,
}

#[derive(Debug)]
pub(crate) struct References {
    repo: ReferenceRepo,
    meta: MetaRepo,
    clock: Arc<dyn Clock>,
    keys: tokio::sync::OnceCell<ReferenceKeys>,
    /// Records by lookup hash: the Resolve hot path.
    records: RwLock<HashMap<String, Arc<ReferenceRecord>>>,
    /// Serializes spending single-use references within this process.
    spend_lock: tokio::sync::Mutex<()>,
}

impl References {
    pub(crate) fn new(repo: ReferenceRepo, meta: MetaRepo, clock: Arc<dyn Clock>) -> Self {
        Self {
            repo,
            meta,
            clock,
            keys: tokio::sync::OnceCell::new(),
            records: RwLock::default(),
            spend_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The deployment's reference keys: created in the store on first use, shared by replicas.
    /// References issued before the per-grant index existed are indexed on the way.
    async fn keys(&self) -> Result<&ReferenceKeys, Error> {
        self.keys
            .get_or_try_init(|| async {
                let mut fresh = Zeroizing::new(vec![0u8; 32]);
                SystemRandom::new()
                    .fill(&mut fresh)
                    .map_err(|_| Error::internal("the system RNG failed"))?;
                let master = self.meta.reference_key(fresh).await?;
                let indexed = self.repo.ensure_indexed().await?;
                if indexed > 0 {
                    tracing::info!(indexed, "indexed references by grant");
                }
                Ok(ReferenceKeys::from_master(&master))
            })
            .await
    }

    /// The page token for a listing with `filters` that stopped at `cursor`.
    pub(crate) async fn seal_page(
        &self,
        cursor: Option<String>,
        filters: &str,
    ) -> Result<Option<String>, Error> {
        match cursor {
            Some(c) => Ok(Some(self.keys().await?.seal_cursor(&c, filters)?)),
            None => Ok(None),
        }
    }

    /// Where the listing a page token continues stopped; refused unless a replica of this
    /// deployment sealed it for a grant listing with the same `filters`.
    pub(crate) async fn open_page(&self, token: &str, filters: &str) -> Result<String, Error> {
        self.keys()
            .await?
            .open_cursor(token, filters)
            .filter(|c| crate::store::GrantRepo::is_cursor(c))
            .ok_or_else(|| {
                Error::invalid(
                    "page_token",
                    "is not a next_page_token from a ListGrants response with these filters (start the listing again)",
                )
            })
    }

    /// Issues a reference to `owner` for `grant`, covering `scopes`, living `ttl_seconds`.
    pub(crate) async fn issue(
        &self,
        owner: &str,
        grant: &GrantKey,
        scopes: &Scopes,
        ttl_seconds: u32,
        single_use: bool,
    ) -> Result<(SecretString, i64), Error> {
        let (reference, hash) = self.keys().await?.mint()?;
        let now = self.clock.now_unix();
        let record = ReferenceRecord {
            grant: grant.clone(),
            scopes: scopes.clone(),
            owner: owner.to_owned(),
            created_at: now,
            expires_at: now + i64::from(ttl_seconds),
            single_use,
            used: false,
        };
        self.repo.create(&hash, &record).await?;
        let expires_at = record.expires_at;
        self.remember(hash, record);
        tracing::info!(provider = %grant.provider, single_use, "issued a reference");
        Ok((SecretString::from(reference), expires_at))
    }

    fn remember(&self, hash: String, record: ReferenceRecord) {
        let mut records = self.records.write().unwrap_or_else(|p| p.into_inner());
        if records.len() >= MAX_CACHED {
            records.clear();
        }
        records.insert(hash, Arc::new(record));
    }

    /// Deletes the references that can never resolve again (expired or spent) from the store;
    /// the background reaper's round.
    pub(crate) async fn reap(&self) -> Result<usize, Error> {
        Ok(self.repo.reap(self.clock.now_unix()).await?)
    }

    /// Drops a record from memory (revoked, spent, or its grant is gone).
    pub(crate) fn forget(&self, hash: &str) {
        self.records
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(hash);
    }

    /// The record for `hash`: memory first, then the store (which fills memory).
    async fn record(&self, hash: &str) -> Result<Option<Arc<ReferenceRecord>>, Error> {
        let cached = self
            .records
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
            .cloned();
        if let Some(r) = cached {
            return Ok(Some(r));
        }
        let Some((record, _)) = self.repo.get(hash).await? else {
            return Ok(None);
        };
        self.remember(hash.to_owned(), record.clone());
        Ok(Some(Arc::new(record)))
    }

    /// Checks a presented reference (refused before any lookup when forged) and finds its record.
    pub(crate) async fn find(&self, reference: &str) -> Result<Found, Error> {
        let hash = self.keys().await?.parse(reference).map_err(invalid)?;
        let record = self.record(&hash).await?;
        Ok(Found { hash, record })
    }

    /// Marks a single-use reference spent; exactly one caller wins (check-and-set).
    pub(crate) async fn spend(&self, hash: &str) -> Result<(), Error> {
        let _guard = self.spend_lock.lock().await;
        let Some((mut record, version)) = self.repo.get(hash).await? else {
            return Err(reference_denied());
        };
        if record.used {
            return Err(reference_denied());
        }
        record.used = true;
        match self.repo.update(hash, &record, version).await {
            Ok(_) => {
                self.forget(hash);
                Ok(())
            }
            Err(StoreError::Conflict) => Err(reference_denied()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes one reference.
    pub(crate) async fn revoke(&self, found: &Found) -> Result<bool, Error> {
        let Some(record) = &found.record else {
            return Ok(false);
        };
        self.forget(&found.hash);
        Ok(self.repo.delete(&found.hash, &record.grant).await?)
    }

    /// Deletes every reference to `grant` (revocation).
    pub(crate) async fn drop_for_grant(&self, grant: &GrantKey) -> Result<usize, Error> {
        self.forget_where(|g| g == grant);
        Ok(self.repo.delete_for_grant(grant).await?)
    }

    /// Deletes every reference to a grant of `provider` (provider deletion).
    pub(crate) async fn drop_for_provider(&self, provider: &ProviderId) -> Result<usize, Error> {
        self.forget_where(|g| &g.provider == provider);
        Ok(self.repo.delete_for_provider(provider).await?)
    }

    fn forget_where(&self, dead: impl Fn(&GrantKey) -> bool) {
        self.records
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, r| !dead(&r.grant));
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
    fn page_tokens_are_sealed_and_only_this_deployments_open() {
        let k = keys();
        let cursor = "grants/hdr/YWxpY2U/cmV2aWV3ZXI";
        let filters = "provider=hdr";
        let token = k.seal_cursor(cursor, filters).unwrap();
        assert_eq!(k.open_cursor(&token, filters).as_deref(), Some(cursor));
        assert_eq!(
            k.open_cursor(&token, "provider=other"),
            None,
            "continues only the listing it came from"
        );
        let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        assert!(
            !String::from_utf8_lossy(&raw).contains("grants/"),
            "the place is not readable in the token"
        );
        assert_ne!(
            k.seal_cursor(cursor, filters).unwrap(),
            token,
            "a fresh nonce each time"
        );
        let other = ReferenceKeys::from_master(b"another deployment's master key!");
        assert_eq!(other.open_cursor(&token, filters), None);
        let mut flipped = raw.clone();
        flipped[NONCE_LEN] ^= 1;
        assert_eq!(
            k.open_cursor(&URL_SAFE_NO_PAD.encode(&flipped), filters),
            None
        );
        // What a page token used to be: the key in base64.
        assert_eq!(
            k.open_cursor(&URL_SAFE_NO_PAD.encode(cursor), filters),
            None
        );
        for junk in ["", "not base64!", "AAAA", &"A".repeat(MAX_PAGE_TOKEN + 1)] {
            assert_eq!(k.open_cursor(junk, filters), None, "{junk:?}");
        }
        // The place of a grant with the longest ids still makes a token that opens.
        let long = format!(
            "grants/{}/{}/{}/{}",
            "p".repeat(64),
            "u".repeat(342),
            "a".repeat(342),
            "c".repeat(342)
        );
        let token = k.seal_cursor(&long, filters).unwrap();
        assert_eq!(
            k.open_cursor(&token, filters).as_deref(),
            Some(long.as_str())
        );
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
            crate::fuzzing::reference(s.as_bytes());
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
