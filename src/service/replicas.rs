//! Consent callbacks across replicas. A pending flow lives in the memory of the replica that
//! started it, while the provider's redirect reaches whichever replica the load balancer picks.
//! A replica with `replica_url` registers that address in the shared store under a tag derived
//! from it and prefixes every state it issues with the tag (`{tag}.{random}`); a callback whose
//! state carries another replica's tag is forwarded by the HTTP transport to the address that
//! replica registered. A tag read from a request only ever selects among registered addresses,
//! so a forged state cannot send Valet anywhere else.

use super::Error;
use crate::store::MetaRepo;
use url::Url;

/// Hex characters of a replica tag (64 bits of SHA-256 of its URL).
const TAG_LEN: usize = 16;

#[derive(Debug)]
pub(crate) struct Replica {
    tag: String,
    url: Url,
    meta: MetaRepo,
}

impl Replica {
    pub(crate) fn new(url: Url, meta: MetaRepo) -> Self {
        let digest = crate::secret::hex(&crate::secret::sha256(url.as_str().as_bytes()));
        Self {
            tag: digest[..TAG_LEN].to_owned(),
            url,
            meta,
        }
    }

    /// The prefix of every state this replica issues.
    pub(crate) fn tag(&self) -> &str {
        &self.tag
    }

    /// Publishes this replica's address for the others.
    pub(crate) async fn register(&self) -> Result<(), Error> {
        Ok(self.meta.register_replica(&self.tag, &self.url).await?)
    }

    /// The registered address of the replica that issued `state`, when that is another one.
    pub(crate) async fn owner_of(&self, state: &str) -> Result<Option<Url>, Error> {
        let Some((tag, _)) = state.split_once('.') else {
            return Ok(None);
        };
        if tag == self.tag || tag.len() != TAG_LEN || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        Ok(self.meta.replica(tag).await?)
    }
}
