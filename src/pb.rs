//! The generated `valet.v1` protobuf types and gRPC stubs, plus hand-written `Debug` for every
//! message that carries a secret (the build skips the derived one for those).

#![allow(
    clippy::all,
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    clippy::allow_attributes_without_reason,
    reason = "generated code"
)]

use std::fmt;

tonic::include_proto!("valet.v1");

/// Encoded descriptor set served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("valet_descriptor");

/// A secret field as `Debug` shows it: `""` when empty, else its length only (unquoted, so it
/// is not read as the value).
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            f.write_str("\"\"")
        } else {
            write!(f, "<redacted {} bytes>", self.0)
        }
    }
}

fn redacted(s: &str) -> Redacted {
    Redacted(s.len())
}

/// A URL as [`crate::net::shown`] shows it; a consent link's query holds the flow's `state`.
fn shown_url(s: &str) -> String {
    crate::net::shown_text(s).unwrap_or_else(|| format!("{:?}", redacted(s)))
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("auth_url", &shown_url(&self.auth_url))
            .field("auth_id", &redacted(&self.auth_id))
            .field("expires_at", &self.expires_at)
            .field("user_code", &redacted(&self.user_code))
            .field("verification_uri", &self.verification_uri)
            .finish()
    }
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("provider_id", &self.provider_id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("client_id", &self.client_id)
            .field("client_secret", &redacted(&self.client_secret))
            .field("auth_url", &self.auth_url)
            .field("token_url", &self.token_url)
            .field("issuer", &self.issuer)
            .field("revocation_url", &self.revocation_url)
            .field("default_scopes", &self.default_scopes)
            .field("extra_auth_params", &self.extra_auth_params)
            .field("token_auth_method", &self.token_auth_method)
            .field("redirect_uri", &self.redirect_uri)
            .field("has_client_secret", &self.has_client_secret)
            .field("handout_policy", &self.handout_policy)
            .field("reference_ttl_seconds", &self.reference_ttl_seconds)
            .field("profile", &self.profile)
            .field("profile_vars", &self.profile_vars)
            .field("credential_location", &self.credential_location)
            .field("credential_name", &self.credential_name)
            .field("credential_prefix", &self.credential_prefix)
            .field("private_key", &redacted(&self.private_key))
            .field("key_id", &self.key_id)
            .field("assertion_issuer", &self.assertion_issuer)
            .field("assertion_subject", &self.assertion_subject)
            .field("assertion_audience", &self.assertion_audience)
            .field("subject_from_user", &self.subject_from_user)
            .field("has_private_key", &self.has_private_key)
            .field("key_algorithm", &self.key_algorithm)
            .field("consent_flow", &self.consent_flow)
            .field("device_authorization_url", &self.device_authorization_url)
            .field("token_exchange", &self.token_exchange)
            .field("consent_return_url", &self.consent_return_url)
            .field("allow_account_change", &self.allow_account_change)
            .finish()
    }
}

impl fmt::Debug for AuthenticateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthenticateRequest")
            .field("provider_id", &self.provider_id)
            .field("scopes", &self.scopes)
            .field("user_id", &self.user_id)
            .field("agent_id", &self.agent_id)
            .field("handout", &self.handout)
            .field("min_ttl_seconds", &self.min_ttl_seconds)
            .field("force_reauth", &self.force_reauth)
            .field("single_use", &self.single_use)
            .field("audience", &self.audience)
            .field("resource", &self.resource)
            .field("subject_token", &redacted(&self.subject_token))
            .field("subject_token_type", &self.subject_token_type)
            .field("challenge", &self.challenge)
            .field("account", &self.account)
            .finish()
    }
}

impl fmt::Debug for CompleteAuthorizationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompleteAuthorizationRequest")
            .field("session", &redacted(&self.session))
            .field("user_id", &self.user_id)
            .finish()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &redacted(&self.access_token))
            .field("token_type", &self.token_type)
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .field("missing_scopes", &self.missing_scopes)
            .field("metadata", &self.metadata)
            .finish()
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reference")
            .field("reference", &redacted(&self.reference))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl fmt::Debug for ImportGrantRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportGrantRequest")
            .field("provider_id", &self.provider_id)
            .field("user_id", &self.user_id)
            .field("agent_id", &self.agent_id)
            .field("refresh_token", &redacted(&self.refresh_token))
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl fmt::Debug for ResolveRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolveRequest")
            .field("reference", &redacted(&self.reference))
            .field("min_ttl_seconds", &self.min_ttl_seconds)
            .field("target_url", &redacted(&self.target_url))
            .finish()
    }
}

impl fmt::Debug for RevokeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevokeRequest")
            .field("provider_id", &self.provider_id)
            .field("user_id", &self.user_id)
            .field("agent_id", &self.agent_id)
            .field("reference", &redacted(&self.reference))
            .field("account", &self.account)
            .finish()
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("location", &self.location)
            .field("name", &self.name)
            .field("value", &redacted(&self.value))
            .finish()
    }
}

impl fmt::Debug for PutCredentialRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutCredentialRequest")
            .field("provider_id", &self.provider_id)
            .field("user_id", &self.user_id)
            .field("agent_id", &self.agent_id)
            .field("value", &redacted(&self.value))
            .field("username", &self.username)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_show_as_their_length_and_empty_fields_as_empty() {
        let shown = format!(
            "{:?}",
            Pending {
                auth_id: "auth-id-canary".into(),
                ..Pending::default()
            }
        );
        assert!(!shown.contains("canary"), "{shown}");
        assert!(
            shown.contains("auth_id: <redacted 14 bytes>") && shown.contains("user_code: \"\","),
            "{shown}"
        );
    }
}
