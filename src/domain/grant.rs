//! Grants: what a user consented to at a provider, for one agent or for all of the user's agents.

use super::{AgentId, ProviderId, Scopes, UserId};
use crate::secret::{SecretString, serde_secret};
use serde::{Deserialize, Serialize};

/// Who a grant belongs to. `agent: None` is the user-wide grant; an agent-scoped request never
/// falls back to it, and a user-scoped request never uses an agent's grant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GrantKey {
    pub provider: ProviderId,
    pub user: UserId,
    pub agent: Option<AgentId>,
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
