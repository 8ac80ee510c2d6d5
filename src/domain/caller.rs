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

/// Which agent ids a caller may act as. Today every caller may name any agent id; binding a key
/// to its agents adds a variant here and a rule in the policy, nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AgentBinding {
    #[default]
    Any,
}

/// How the caller proved who it is. API keys today; mTLS adds a variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Credential {
    #[default]
    ApiKey,
}

/// An authenticated caller, as the transport established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The configured caller name; flows and references are owned by it.
    pub name: String,
    pub role: Role,
    pub agents: AgentBinding,
    pub credential: Credential,
}

impl Caller {
    /// A caller identified by an API key.
    pub fn api_key(name: impl Into<String>, role: Role) -> Self {
        Self {
            name: name.into(),
            role,
            agents: AgentBinding::Any,
            credential: Credential::ApiKey,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}
