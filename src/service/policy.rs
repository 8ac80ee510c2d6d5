//! The authorization seam: one function every use case calls with (caller, action) before it
//! touches anything. Today's rules: admins manage providers and see every user's grants; agents
//! must name the user whose grants they list; a reference serves only the caller it was issued
//! to (or an admin revoking it); a flow is visible only to the caller that started it. Binding
//! keys to agent ids, user assertions and audit add rules here.

use super::Error;
use crate::domain::{Caller, GrantKey, ProviderId, UserId};

/// What a caller is about to do.
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    /// Create, read, update or delete providers.
    ManageProviders,
    /// Obtain a credential from (or start a flow for) a grant.
    UseGrant(&'a GrantKey),
    /// Obtain a client-credentials token of a provider (no user).
    UseClient(&'a ProviderId),
    /// Remove a grant.
    RevokeGrant(&'a GrantKey),
    /// Store a static credential for a user (today any caller may; issue-10 binding narrows it).
    PutCredential(&'a GrantKey),
    /// List grant metadata, optionally for one user.
    ListGrants { user: Option<&'a UserId> },
    /// Resolve a reference issued to `owner`.
    ResolveReference { owner: &'a str },
    /// Revoke a reference issued to `owner`.
    RevokeReference { owner: &'a str },
    /// Wait on a flow started by `owner`.
    WatchFlow { owner: &'a str },
}

/// Not yours, unknown, expired, revoked or spent: all look the same to the caller.
pub fn reference_denied() -> Error {
    Error::PermissionDenied(
        "the reference is unknown, expired, revoked, spent, or was issued to another caller",
    )
}

pub fn flow_not_found() -> Error {
    Error::NotFound {
        what: "authorization flow",
    }
}

/// Allows `action` for `caller`, or says why not.
pub fn authorize(caller: &Caller, action: Action<'_>) -> Result<(), Error> {
    match action {
        Action::ManageProviders if !caller.is_admin() => {
            Err(Error::PermissionDenied("this RPC needs an admin API key"))
        }
        Action::ListGrants { user: None } if !caller.is_admin() => Err(Error::invalid(
            "user_id",
            "is required for agent callers (only admins list every user's grants)",
        )),
        Action::ResolveReference { owner } if owner != caller.name => Err(reference_denied()),
        Action::RevokeReference { owner } if owner != caller.name && !caller.is_admin() => {
            Err(reference_denied())
        }
        // Another caller's flow does not exist as far as this one can tell.
        Action::WatchFlow { owner } if owner != caller.name => Err(flow_not_found()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    #[test]
    fn todays_rules() {
        let admin = Caller::api_key("ops", Role::Admin);
        let agent = Caller::api_key("agent-a", Role::Agent);
        assert!(authorize(&admin, Action::ManageProviders).is_ok());
        assert!(matches!(
            authorize(&agent, Action::ManageProviders),
            Err(Error::PermissionDenied(_))
        ));
        assert!(authorize(&agent, Action::ListGrants { user: None }).is_err());
        assert!(authorize(&admin, Action::ListGrants { user: None }).is_ok());
        let alice = UserId::parse("alice").unwrap();
        assert!(authorize(&agent, Action::ListGrants { user: Some(&alice) }).is_ok());
        assert!(authorize(&agent, Action::ResolveReference { owner: "agent-a" }).is_ok());
        assert!(authorize(&admin, Action::ResolveReference { owner: "agent-a" }).is_err());
        assert!(authorize(&admin, Action::RevokeReference { owner: "agent-a" }).is_ok());
        assert!(authorize(&agent, Action::RevokeReference { owner: "agent-b" }).is_err());
        assert!(matches!(
            authorize(&admin, Action::WatchFlow { owner: "agent-a" }),
            Err(Error::NotFound { .. })
        ));
    }
}
