//! Grants: what a user consented to at a provider, for one agent or for all of the user's agents.

use super::{AccountId, AgentId, ProviderId, Scopes, UserId};
use crate::secret::{SecretString, serde_secret};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Who a grant belongs to. `agent: None` is the user-wide grant; an agent-scoped request never
/// falls back to it, and a user-scoped request never uses an agent's grant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GrantKey {
    pub provider: ProviderId,
    pub user: UserId,
    pub agent: Option<AgentId>,
    /// One of the user's several accounts at the provider; `None`: the default account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountId>,
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
    /// The access token, kept only when it cannot be re-obtained without the user (no refresh
    /// token): a non-expiring token survives restarts.
    #[serde(with = "serde_secret", default)]
    pub access_token: Option<SecretString>,
    #[serde(default)]
    pub token_type: Option<String>,
    /// When the kept access token expires (Unix seconds); 0: it does not.
    #[serde(default)]
    pub expires_at: i64,
    /// Scopes asked for and not granted at the last consent: asking for them again alone does not
    /// start another consent.
    #[serde(default)]
    pub declined: Scopes,
    /// Non-secret fields of the provider's answer that API calls need (e.g. `instance_url`).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The connected account's email, from the verified ID token (OpenID Connect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// When the user last consented (Unix seconds); 0 in records from before it was kept:
    /// `created_at` then.
    #[serde(default)]
    pub consented_at: i64,
}

/// Which daemon instance is refreshing a grant, and until when (Unix seconds) the claim holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshClaim {
    pub owner: String,
    pub until: i64,
}

impl Grant {
    /// When the user must consent again under a provider's maximum grant age (`max_age`
    /// seconds since the last consent); 0: never.
    pub fn reauth_at(&self, max_age: u32) -> i64 {
        if max_age == 0 {
            return 0;
        }
        let since = if self.consented_at > 0 {
            self.consented_at
        } else {
            self.created_at
        };
        since.saturating_add(i64::from(max_age))
    }

    /// Whether this grant yields a token for `scopes` without a new consent at `now`.
    pub fn usable_for(&self, scopes: &Scopes, now: i64) -> bool {
        self.status == GrantStatus::Active
            && self.scopes.contains_all(scopes)
            && (self.refresh_token.is_some() || self.kept_token_live(now))
    }

    /// Whether the kept access token (no refresh token) is there and unexpired at `now`.
    pub fn kept_token_live(&self, now: i64) -> bool {
        self.access_token.is_some() && (self.expires_at == 0 || self.expires_at > now)
    }

    /// The status an operator should see at `now`: a grant that can neither refresh nor use its
    /// kept token needs the user.
    pub fn effective_status(&self, now: i64) -> GrantStatus {
        if self.status == GrantStatus::Active
            && self.refresh_token.is_none()
            && !self.kept_token_live(now)
        {
            GrantStatus::NeedsReauth
        } else {
            self.status
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(refresh: bool, access: bool, expires_at: i64) -> Grant {
        Grant {
            key: GrantKey {
                provider: ProviderId::parse("p").unwrap(),
                user: UserId::parse("u").unwrap(),
                agent: None,
                account: None,
            },
            scopes: Scopes::parse("s", &["repo"]).unwrap(),
            subject: None,
            refresh_token: refresh.then(|| SecretString::from("rt")),
            status: GrantStatus::Active,
            created_at: 0,
            updated_at: 0,
            refreshing: None,
            access_token: access.then(|| SecretString::from("at")),
            token_type: None,
            expires_at,
            declined: Scopes::default(),
            metadata: BTreeMap::new(),
            consented_at: 0,
            email: None,
        }
    }

    #[test]
    fn a_grant_that_can_neither_refresh_nor_use_its_token_needs_the_user() {
        let repo = Scopes::parse("s", &["repo"]).unwrap();
        // A token that never expires (GitHub OAuth App) stays usable.
        assert!(grant(false, true, 0).usable_for(&repo, 1_000));
        assert_eq!(
            grant(false, true, 0).effective_status(1_000),
            GrantStatus::Active
        );
        // An expired kept token without a refresh token needs a new consent.
        assert!(!grant(false, true, 999).usable_for(&repo, 1_000));
        assert_eq!(
            grant(false, true, 999).effective_status(1_000),
            GrantStatus::NeedsReauth
        );
        assert_eq!(
            grant(false, false, 0).effective_status(1_000),
            GrantStatus::NeedsReauth
        );
        assert!(grant(true, false, 0).usable_for(&repo, 1_000));
        let more = Scopes::parse("s", &["repo", "gist"]).unwrap();
        assert!(!grant(true, false, 0).usable_for(&more, 1_000));
    }
}
