//! Who is calling: the typed identity the transport establishes and every use case hands to the
//! policy (`service::policy`). Nothing here checks a key; that is the transport's job.

use serde::{Deserialize, Serialize};

/// What a caller is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Providers, and every user's grants.
    Admin,
    /// Credentials for its users.
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Agent => "agent",
        }
    }
}

/// Which agent ids a caller may act as (the `agents` of its `[[callers]]` entry).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AgentBinding {
    /// Admins, and callers configured with `agents = ["*"]`.
    #[default]
    Any,
    /// These agent ids (exact, or a prefix ending in `*`); none: user-wide grants only.
    Only(std::sync::Arc<[String]>),
}

impl AgentBinding {
    /// Reads `agents` patterns: agent ids, or prefixes followed by `*` (`*` alone: any).
    pub fn parse(patterns: &[String]) -> Result<Self, String> {
        if patterns.iter().any(|p| p == "*") {
            return Ok(Self::Any);
        }
        for p in patterns {
            let id = p.strip_suffix('*').unwrap_or(p);
            if id.is_empty() || id.contains('*') || super::AgentId::parse(id).is_err() {
                return Err(format!(
                    "{p:?} is not an agent id or a prefix followed by `*` (e.g. \"support-*\")"
                ));
            }
        }
        Ok(Self::Only(patterns.into()))
    }

    /// Whether a grant for `agent` (none: user-wide) may be used.
    pub fn allows(&self, agent: Option<&super::AgentId>) -> bool {
        let (Self::Only(patterns), Some(agent)) = (self, agent) else {
            return true;
        };
        let agent = agent.as_str();
        patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => agent.starts_with(prefix),
            None => p == agent,
        })
    }
}

/// How the caller proved who it is: an API key, or its uid on the Unix socket (mTLS would add a
/// variant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Credential {
    #[default]
    ApiKey,
    /// A process on the Unix socket whose uid is configured for the caller.
    UnixPeer,
    /// A client certificate (mTLS) whose SAN is configured for the caller.
    ClientCertificate,
}

/// A user assertion as presented (a JWT; secret: never printed).
#[derive(Clone)]
pub struct Presented(pub crate::secret::SecretString);

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Presented(<redacted>)")
    }
}

impl PartialEq for Presented {
    fn eq(&self, other: &Self) -> bool {
        use crate::secret::ExposeSecret as _;
        self.0.expose_secret() == other.0.expose_secret()
    }
}

impl Eq for Presented {}

/// An authenticated caller, as the transport established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The configured caller name; flows and references are owned by it.
    pub name: String,
    pub role: Role,
    pub agents: AgentBinding,
    pub credential: Credential,
    /// Requests naming a user must carry an assertion for that user.
    pub requires_user_assertion: bool,
    /// The user assertion sent with this request, if any.
    pub user_assertion: Option<Presented>,
    /// This request's id in the logs: the client's `x-request-id` when well-formed, else one
    /// made up by the transport.
    pub request_id: String,
    /// Watch streams this caller may hold open at once; 0: no limit.
    pub max_watches: u32,
}

impl Caller {
    /// A caller identified by an API key.
    pub fn api_key(name: impl Into<String>, role: Role) -> Self {
        Self {
            name: name.into(),
            role,
            agents: AgentBinding::Any,
            credential: Credential::ApiKey,
            requires_user_assertion: false,
            user_assertion: None,
            request_id: String::new(),
            max_watches: 0,
        }
    }

    /// Bound to `agents`.
    pub fn with_agents(self, agents: AgentBinding) -> Self {
        Self { agents, ..self }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}
