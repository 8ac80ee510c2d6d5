//! Caller authentication: `authorization: Bearer <api key>` metadata, checked against configured
//! SHA-256 hashes in constant time. The interceptor attaches a `Caller` to the request; mTLS and
//! agent-id binding can attach the same type later without touching the services.

use crate::domain::{AgentBinding, Caller, Presented, Role};
use crate::secret::SecretString;

/// The gRPC metadata carrying a user assertion (a JWT from the operator's identity provider).
pub const USER_ASSERTION: &str = "x-valet-user-assertion";
use crate::secret::sha256;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// A configured API key: its hash, never the key.
#[derive(Debug, Clone)]
pub struct CallerKey {
    pub name: String,
    pub role: Role,
    pub key_sha256: [u8; 32],
    pub agents: AgentBinding,
    pub require_user_assertion: bool,
}

#[derive(Debug, Clone)]
pub struct CallerAuth {
    keys: Arc<[CallerKey]>,
}

impl CallerAuth {
    pub fn new(keys: Vec<CallerKey>) -> Self {
        Self { keys: keys.into() }
    }

    /// The caller whose key hashes to the presented key's hash. Every configured key is compared,
    /// so the time taken does not depend on which one matched.
    pub fn identify(&self, presented: &str) -> Option<Caller> {
        let hash = sha256(presented.as_bytes());
        let mut found = None;
        for k in self.keys.iter() {
            if bool::from(k.key_sha256.ct_eq(&hash)) {
                let mut caller =
                    Caller::api_key(k.name.clone(), k.role).with_agents(k.agents.clone());
                caller.requires_user_assertion = k.require_user_assertion;
                found = Some(caller);
            }
        }
        found
    }
}

impl tonic::service::Interceptor for CallerAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let header = req.metadata().get("authorization").ok_or_else(|| {
            Status::unauthenticated("missing API key: send metadata `authorization: Bearer <key>`")
        })?;
        let key = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("malformed authorization metadata: expected `Bearer <key>`")
            })?;
        let mut caller = self
            .identify(key.trim())
            .ok_or_else(|| Status::unauthenticated("unknown API key"))?;
        caller.user_assertion = req
            .metadata()
            .get(USER_ASSERTION)
            .and_then(|v| v.to_str().ok())
            .map(|v| Presented(SecretString::from(v.trim().to_owned())));
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_by_hash() {
        let auth = CallerAuth::new(vec![CallerKey {
            name: "ops".into(),
            role: Role::Admin,
            key_sha256: sha256(b"k1"),
            agents: AgentBinding::Any,
            require_user_assertion: false,
        }]);
        assert_eq!(auth.identify("k1").unwrap().name, "ops");
        assert!(auth.identify("k2").is_none());
        assert!(auth.identify("").is_none());
    }
}
