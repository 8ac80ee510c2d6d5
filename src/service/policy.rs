//! The authorization seam: one function every use case calls with (caller, action) before it
//! touches anything. Today's rules: admins manage providers and see every user's grants; agents
//! must name the user whose grants they list; a reference serves only the caller it was issued
//! to (or an admin revoking it); a flow is visible only to the caller that started it. Binding
//! keys to agent ids, user assertions and audit add rules here.

use super::Error;
use crate::domain::{AgentId, Caller, GrantKey, ProviderId, UserId};

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
    /// Store a static credential for a user (or one of the caller's agents).
    PutCredential(&'a GrantKey),
    /// List (or watch) grant metadata, optionally for one user or agent.
    ListGrants {
        user: Option<&'a UserId>,
        agent: Option<&'a AgentId>,
    },
    /// Resolve a reference issued to `owner`.
    ResolveReference { owner: &'a str },
    /// Revoke a reference issued to `owner`.
    RevokeReference { owner: &'a str },
    /// Complete a bound consent (the session proves knowledge of it; any caller).
    BindConsent,
    /// Wait on a flow started by `owner`.
    WatchFlow { owner: &'a str },
}

/// Not yours, unknown, expired, revoked or spent: all look the same to the caller.
pub fn reference_denied() -> Error {
    Error::PermissionDenied(
        "the reference is unknown, expired, revoked, spent, or was issued to another caller",
    )
}

/// The caller's `[[callers]]` entry does not list the agent id it named.
pub fn agent_denied(agent: &crate::domain::AgentId) -> Error {
    Error::AgentDenied(agent.as_str().to_owned())
}

/// Whether `caller` may see the grant `key` in a listing (the agents it may act as, and
/// user-wide grants): as it may act on it. An admin key without `agents` may act as any; one
/// with `agents` sees what it may use and revoke, not every agent's grants.
pub fn may_see(caller: &Caller, key: &crate::domain::GrantKey) -> bool {
    caller.agents.allows(key.agent.as_ref())
}

pub fn flow_not_found() -> Error {
    Error::FlowNotFound
}

/// Allows `action` for `caller`, or says why not.
pub fn authorize(caller: &Caller, action: Action<'_>) -> Result<(), Error> {
    match action {
        Action::UseGrant(key) | Action::RevokeGrant(key) | Action::PutCredential(key)
            if !caller.agents.allows(key.agent.as_ref()) =>
        {
            // `allows` refuses only a named agent.
            Err(key.agent.as_ref().map_or(
                Error::PermissionDenied("this caller may not act as that agent_id"),
                agent_denied,
            ))
        }
        Action::ManageProviders if !caller.is_admin() => {
            Err(Error::PermissionDenied("this RPC needs an admin API key"))
        }
        // As when acting for it: an agent outside the caller's list is refused, not an empty list.
        Action::ListGrants { agent: Some(a), .. } if !caller.agents.allows(Some(a)) => {
            Err(agent_denied(a))
        }
        Action::ListGrants { user: None, .. } if !caller.is_admin() => Err(Error::invalid(
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

/// Whether `host` is on an egress allow-list (exact, or under a `*.` entry).
fn egress_allowed(list: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    list.iter().any(|h| match h.strip_prefix("*.") {
        Some(domain) => host.ends_with(&format!(".{domain}")),
        None => *h == host,
    })
}

/// Egress: a credential goes only to a host on its provider's `egress_hosts` (when it has any),
/// so an agent talked into it cannot ship a user's token to another server, and only over https
/// (plain http to a loopback address, or anywhere with `allow_http`: the operator's
/// `allow_insecure_provider_urls`), so it does not cross a network in the clear.
pub fn egress(allowed: &[String], target_url: &str, allow_http: bool) -> Result<(), Error> {
    let url = url::Url::parse(target_url)
        .map_err(|_| Error::invalid("target_url", "is not an absolute URL"))?;
    let host = url
        .host_str()
        .ok_or_else(|| Error::invalid("target_url", "has no host"))?;
    let http_ok = url.scheme() == "http" && (allow_http || crate::net::loopback_host(&url));
    if url.scheme() != "https" && !http_ok {
        return Err(Error::invalid(
            "target_url",
            "must be https (plain http only to a loopback address, or with allow_insecure_provider_urls): a credential is not sent in the clear",
        ));
    }
    if allowed.is_empty() || egress_allowed(allowed, host) {
        Ok(())
    } else {
        Err(Error::PermissionDenied(
            "the target URL's host is not on this provider's egress_hosts: the credential is not sent there (an operator can add the host to the provider's egress_hosts)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AgentBinding, Role};

    #[test]
    fn todays_rules() {
        let admin = Caller::api_key("ops", Role::Admin);
        let agent = Caller::api_key("agent-a", Role::Agent);
        assert!(authorize(&admin, Action::ManageProviders).is_ok());
        assert!(matches!(
            authorize(&agent, Action::ManageProviders),
            Err(Error::PermissionDenied(_))
        ));
        assert!(
            authorize(
                &agent,
                Action::ListGrants {
                    user: None,
                    agent: None
                }
            )
            .is_err()
        );
        assert!(
            authorize(
                &admin,
                Action::ListGrants {
                    user: None,
                    agent: None
                }
            )
            .is_ok()
        );
        let alice = UserId::parse("alice").unwrap();
        let list = |user, agent| Action::ListGrants { user, agent };
        assert!(authorize(&agent, list(Some(&alice), None)).is_ok());
        let bound = Caller::api_key("agent-a", Role::Agent)
            .with_agents(AgentBinding::parse(&["a-*".to_owned()]).unwrap());
        let (a1, b1) = (
            AgentId::parse("a-1").unwrap(),
            AgentId::parse("b-1").unwrap(),
        );
        assert!(authorize(&bound, list(Some(&alice), Some(&a1))).is_ok());
        assert!(matches!(
            authorize(&bound, list(Some(&alice), Some(&b1))),
            Err(Error::AgentDenied(a)) if a == "b-1"
        ));
        assert!(authorize(&agent, Action::ResolveReference { owner: "agent-a" }).is_ok());
        assert!(authorize(&admin, Action::ResolveReference { owner: "agent-a" }).is_err());
        assert!(authorize(&admin, Action::RevokeReference { owner: "agent-a" }).is_ok());
        assert!(authorize(&agent, Action::RevokeReference { owner: "agent-b" }).is_err());
        assert!(matches!(
            authorize(&admin, Action::WatchFlow { owner: "agent-a" }),
            Err(Error::FlowNotFound)
        ));
    }

    #[test]
    fn bound_callers_act_only_as_their_agents() {
        let key = |agent: Option<&str>| crate::domain::GrantKey {
            provider: crate::domain::ProviderId::parse("p").unwrap(),
            user: UserId::parse("alice").unwrap(),
            agent: agent.map(|a| crate::domain::AgentId::parse(a).unwrap()),
            account: None,
        };
        let patterns = ["support-*".to_owned(), "helpdesk".to_owned()];
        let bound = Caller::api_key("support", Role::Agent)
            .with_agents(AgentBinding::parse(&patterns).unwrap());
        let none =
            Caller::api_key("plain", Role::Agent).with_agents(AgentBinding::parse(&[]).unwrap());
        for (caller, agent, ok) in [
            (&bound, Some("support-1"), true),
            (&bound, Some("helpdesk"), true),
            (&bound, Some("helpdesk-2"), false),
            (&bound, Some("billing"), false),
            (&bound, None, true),
            (&none, None, true),
            (&none, Some("support-1"), false),
        ] {
            let k = key(agent);
            for action in [
                Action::UseGrant(&k),
                Action::RevokeGrant(&k),
                Action::PutCredential(&k),
            ] {
                assert_eq!(
                    authorize(caller, action).is_ok(),
                    ok,
                    "{} {agent:?}",
                    caller.name
                );
            }
            assert_eq!(may_see(caller, &k), ok);
        }
        assert_eq!(AgentBinding::parse(&["*".into()]), Ok(AgentBinding::Any));
        for bad in ["", "sup*port", "bad\nid", "**"] {
            assert!(AgentBinding::parse(&[bad.to_owned()]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn egress_is_exact_or_under_a_wildcard() {
        let list = ["api.example.com".to_owned(), "*.files.example".to_owned()];
        assert!(egress_allowed(&list, "API.example.com"));
        assert!(egress_allowed(&list, "eu.files.example"));
        assert!(!egress_allowed(&list, "files.example"));
        assert!(!egress_allowed(&list, "api.example.com.evil.test"));
        assert!(!egress_allowed(&list, "evilapi.example.com"));
        assert!(egress(&list, "https://api.example.com/v1", false).is_ok());
        assert!(egress(&list, "https://evil.test/", false).is_err());
        // Only over https: an allowed host over http or ftp is refused, naming the field.
        for clear in ["http://api.example.com/", "ftp://api.example.com/"] {
            let e = egress(&list, clear, false).unwrap_err();
            assert!(e.to_string().contains("target_url"), "{clear}: {e}");
        }
        assert!(
            egress(&[], "http://127.0.0.1:8080/", false).is_ok(),
            "loopback"
        );
        // The operator's allow_insecure_provider_urls lets http through (not ftp).
        assert!(egress(&list, "http://api.example.com/", true).is_ok());
        assert!(egress(&list, "ftp://api.example.com/", true).is_err());
        assert!(
            egress(&[], "https://evil.test/", false).is_ok(),
            "no list, no check"
        );
    }
}
