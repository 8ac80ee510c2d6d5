//! The store keyspace: every record key and namespace Valet writes, and nothing else builds one.
//!
//! ```text
//! providers/{provider_id}                          provider configuration (with its client secret)
//! grants/{provider_id}/{b64 user}/{b64 agent | =}[={b64 account}]
//!                                                  a grant (with its refresh token)
//! refs/{lookup hash}                               a reference record (never the reference)
//! ref-index/{provider_id}/{b64 user}/{b64 agent | =}/{lookup hash}
//!                                                  empty marker: finds a grant's references
//! meta/reference-key                               the deployment's reference master key
//! meta/reference-index-v1                          marker: every reference has its index entry
//! meta/replicas/{tag}                              a replica's HTTP address (callback forwarding)
//! meta/served                                      marker: a daemon has served from this store
//!                                                  (`valet store copy` refuses it as destination)
//! check/probe-{random}                             check-config's write probe, deleted at once
//! ```
//!
//! User and agent ids are base64url-encoded so any id is path-safe; unpadded base64url never
//! produces `=`, so no agent id can collide with the user-wide segment.

use crate::domain::{GrantKey, ProviderId, UserId};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const PROVIDERS: &str = "providers/";
const GRANTS: &str = "grants/";
const REFERENCES: &str = "refs/";
const REFERENCE_INDEX: &str = "ref-index/";
const META: &str = "meta/";
const USER_WIDE: &str = "=";

/// Every namespace holding durable state, in the order a copy writes them (the reference key
/// before the references it signs).
pub const NAMESPACES: [&str; 5] = [META, PROVIDERS, GRANTS, REFERENCE_INDEX, REFERENCES];

pub fn provider(id: &ProviderId) -> String {
    format!("{PROVIDERS}{}", id.as_str())
}

pub fn providers() -> &'static str {
    PROVIDERS
}

/// The grant's path below a namespace: `{provider}/{b64 user}/{b64 agent | =}`.
fn grant_path(key: &GrantKey) -> String {
    let agent = key.agent.as_ref().map_or_else(
        || USER_WIDE.to_owned(),
        |a| URL_SAFE_NO_PAD.encode(a.as_str()),
    );
    // Another account than the default: `=` and its id after the agent segment (unpadded
    // base64url never holds `=`, so no id collides).
    let account = key.account.as_ref().map_or_else(String::new, |a| {
        format!("={}", URL_SAFE_NO_PAD.encode(a.as_str()))
    });
    format!(
        "{}/{}/{agent}{account}",
        key.provider.as_str(),
        URL_SAFE_NO_PAD.encode(key.user.as_str())
    )
}

pub fn grant(key: &GrantKey) -> String {
    format!("{GRANTS}{}", grant_path(key))
}

/// Prefix of one user's grants at one provider (user-wide and agent-scoped).
pub fn grants_of_user(provider: &ProviderId, user: &UserId) -> String {
    format!(
        "{GRANTS}{}/{}/",
        provider.as_str(),
        URL_SAFE_NO_PAD.encode(user.as_str())
    )
}

/// Whether `key` is a grant record's key (a listing cursor must be one).
pub fn is_grant(key: &str) -> bool {
    key.starts_with(GRANTS)
}

/// Prefix of every grant, or of one provider's grants.
pub fn grants(provider: Option<&ProviderId>) -> String {
    provider.map_or_else(|| GRANTS.to_owned(), |p| format!("{GRANTS}{}/", p.as_str()))
}

pub fn reference(hash: &str) -> String {
    format!("{REFERENCES}{hash}")
}

pub fn references() -> &'static str {
    REFERENCES
}

/// The index entry that finds reference `hash` from its grant.
pub fn reference_index(grant: &GrantKey, hash: &str) -> String {
    format!("{REFERENCE_INDEX}{}/{hash}", grant_path(grant))
}

/// Prefix of the index entries of one grant's references.
pub fn reference_index_of_grant(grant: &GrantKey) -> String {
    format!("{REFERENCE_INDEX}{}/", grant_path(grant))
}

/// Prefix of the index entries of every reference to one provider's grants.
pub fn reference_index_of_provider(provider: &ProviderId) -> String {
    format!("{REFERENCE_INDEX}{}/", provider.as_str())
}

/// The reference lookup hash an index entry points at.
pub fn indexed_hash(index_key: &str) -> Option<&str> {
    index_key
        .strip_prefix(REFERENCE_INDEX)
        .and_then(|rest| rest.rsplit('/').next())
}

/// The reference lookup hash of a reference record key.
pub fn reference_hash(reference_key: &str) -> Option<&str> {
    reference_key.strip_prefix(REFERENCES)
}

pub fn reference_master_key() -> String {
    format!("{META}reference-key")
}

/// The key users are hashed under in the audit trail.
pub fn audit_user_key() -> String {
    format!("{META}audit-user-key")
}

/// Where replica `tag` (hex) registers its HTTP address.
pub fn replica(tag: &str) -> String {
    format!("{META}replicas/{tag}")
}

pub fn reference_index_marker() -> String {
    format!("{META}reference-index-v1")
}

/// Written by every daemon that serves from the store, never copied: a store a daemon has
/// served from has revoked grants and spent references a copy would bring back.
pub fn served_marker() -> String {
    format!("{META}served")
}

/// check-config's probe record.
pub fn probe(nonce: &str) -> String {
    format!("check/probe-{nonce}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AgentId, UserId};

    #[test]
    fn grant_keys_are_distinct_and_path_safe() {
        let user = UserId::parse("a/b").unwrap();
        let p = ProviderId::parse("gh").unwrap();
        let wide = GrantKey {
            provider: p.clone(),
            user: user.clone(),
            agent: None,
            account: None,
        };
        let agent = GrantKey {
            provider: p.clone(),
            user,
            agent: Some(AgentId::parse("=").unwrap()),
            account: None,
        };
        assert_ne!(grant(&wide), grant(&agent));
        assert_eq!(grant(&wide).matches('/').count(), 3);
        assert!(grant(&wide).starts_with(&grants(Some(&p))));
        for k in [grant(&wide), reference_index(&agent, "ab12"), probe("x")] {
            super::super::check_key(&k).unwrap();
        }
    }

    #[test]
    fn index_entries_lead_back_to_their_reference() {
        let key = GrantKey {
            provider: ProviderId::parse("gh").unwrap(),
            user: UserId::parse("alice").unwrap(),
            agent: None,
            account: None,
        };
        let entry = reference_index(&key, "cafe");
        assert!(entry.starts_with(&reference_index_of_grant(&key)));
        assert!(entry.starts_with(&reference_index_of_provider(&key.provider)));
        assert_eq!(indexed_hash(&entry), Some("cafe"));
        assert_eq!(reference_hash(&reference("cafe")), Some("cafe"));
    }
}
