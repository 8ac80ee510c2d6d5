//! Grants: what a user consented to at a provider, for one agent or for all of the user's agents.

use super::{AgentId, ProviderId, Scopes, UserId};
use crate::secret::{SecretString, serde_secret};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// Who a grant belongs to. `agent: None` is the user-wide grant; an agent-scoped request never
/// falls back to it, and a user-scoped request never uses an agent's grant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GrantKey {
    pub provider: ProviderId,
    pub user: UserId,
    pub agent: Option<AgentId>,
}

/// Path segment for the user-wide grant: unpadded base64url never produces `=`, so no agent id
/// can collide with it.
const USER_WIDE: &str = "=";

impl GrantKey {
    /// The store key: ids are base64url-encoded so any user or agent id is path-safe.
    pub fn store_key(&self) -> String {
        let agent = self.agent.as_ref().map_or_else(
            || USER_WIDE.to_owned(),
            |a| URL_SAFE_NO_PAD.encode(a.as_str()),
        );
        format!(
            "{}{}/{}",
            Self::provider_prefix(&self.provider),
            URL_SAFE_NO_PAD.encode(self.user.as_str()),
            agent
        )
    }

    /// Prefix under which every grant of a provider lives.
    pub fn provider_prefix(provider: &ProviderId) -> String {
        format!("grants/{}/", provider.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantStatus {
    Active,
    /// The provider answered `invalid_grant`; only a new consent revives it.
    NeedsReauth,
}

/// A stored grant. The refresh token never leaves the daemon except to the token endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    pub key: GrantKey,
    pub scopes: Scopes,
    pub subject: Option<String>,
    #[serde(with = "serde_secret", default)]
    pub refresh_token: Option<SecretString>,
    pub status: GrantStatus,
    pub created_at: i64,
    pub updated_at: i64,
    /// Set while one daemon refreshes this grant, so replicas sharing a store never present the
    /// same refresh token twice (a rotating provider would revoke the whole grant).
    #[serde(default)]
    pub refreshing: Option<RefreshClaim>,
}

/// Which daemon instance is refreshing a grant, and until when (Unix seconds) the claim holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshClaim {
    pub owner: String,
    pub until: i64,
}

impl Grant {
    /// Whether this grant can be refreshed for `scopes` without a new consent.
    pub fn usable_for(&self, scopes: &Scopes) -> bool {
        self.status == GrantStatus::Active
            && self.refresh_token.is_some()
            && self.scopes.contains_all(scopes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_keys_are_distinct_and_path_safe() {
        let user = UserId::parse("a/b").unwrap();
        let p = ProviderId::parse("gh").unwrap();
        let wide = GrantKey {
            provider: p.clone(),
            user: user.clone(),
            agent: None,
        };
        let agent = GrantKey {
            provider: p,
            user,
            agent: Some(AgentId::parse("=").unwrap()),
        };
        assert_ne!(wide.store_key(), agent.store_key());
        assert_eq!(wide.store_key().matches('/').count(), 3);
        assert!(wide.store_key().starts_with("grants/gh/"));
    }
}
