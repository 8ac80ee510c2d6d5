//! `valet.v1.Providers`: operator RPCs (admin keys only).

use super::{require_admin, to_status};
use crate::domain::{HandoutPolicy, ProviderConfig, ProviderId, ProviderKind, TokenAuthMethod};
use crate::pb;
use crate::secret::SecretString;
use crate::service::{Broker, Error, ProviderDraft, ProviderRegistry};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct ProvidersApi {
    registry: Arc<ProviderRegistry>,
    broker: Arc<Broker>,
}

impl ProvidersApi {
    pub fn new(broker: Arc<Broker>) -> Self {
        Self {
            registry: broker.providers().clone(),
            broker,
        }
    }

    fn to_wire(&self, p: &ProviderConfig) -> pb::Provider {
        pb::Provider {
            provider_id: p.id.to_string(),
            name: p.name.clone(),
            kind: match p.kind {
                ProviderKind::OAuth2 => pb::ProviderKind::Oauth2,
                ProviderKind::Oidc => pb::ProviderKind::Oidc,
            } as i32,
            client_id: p.client_id.clone(),
            client_secret: String::new(),
            auth_url: p.auth_url.to_string(),
            token_url: p.token_url.to_string(),
            issuer: p.issuer.clone().unwrap_or_default(),
            revocation_url: p
                .revocation_url
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            default_scopes: p.default_scopes.to_vec(),
            extra_auth_params: p.extra_auth_params.clone().into_iter().collect(),
            token_auth_method: match p.token_auth_method {
                TokenAuthMethod::ClientSecretBasic => pb::TokenAuthMethod::ClientSecretBasic,
                TokenAuthMethod::ClientSecretPost => pb::TokenAuthMethod::ClientSecretPost,
            } as i32,
            redirect_uri: self.registry.redirect_uri(&p.id),
            has_client_secret: p.client_secret.is_some(),
            handout_policy: match p.handout_policy {
                HandoutPolicy::Any => pb::HandoutPolicy::Any,
                HandoutPolicy::ReferenceOnly => pb::HandoutPolicy::ReferenceOnly,
            } as i32,
            reference_ttl_seconds: p.reference_ttl_seconds,
        }
    }
}

fn draft(p: Option<pb::Provider>) -> Result<ProviderDraft, Error> {
    let p = p.ok_or_else(|| Error::invalid("provider", "is required"))?;
    let kind = match pb::ProviderKind::try_from(p.kind) {
        Ok(pb::ProviderKind::Oauth2) => Some(ProviderKind::OAuth2),
        Ok(pb::ProviderKind::Oidc) => Some(ProviderKind::Oidc),
        Ok(pb::ProviderKind::Unspecified) => None,
        Err(_) => return Err(Error::invalid("kind", "unknown provider kind")),
    };
    let token_auth_method = match pb::TokenAuthMethod::try_from(p.token_auth_method) {
        Ok(pb::TokenAuthMethod::Unspecified | pb::TokenAuthMethod::ClientSecretBasic) => {
            TokenAuthMethod::ClientSecretBasic
        }
        Ok(pb::TokenAuthMethod::ClientSecretPost) => TokenAuthMethod::ClientSecretPost,
        Err(_) => return Err(Error::invalid("token_auth_method", "unknown method")),
    };
    let handout_policy = match pb::HandoutPolicy::try_from(p.handout_policy) {
        Ok(pb::HandoutPolicy::Unspecified | pb::HandoutPolicy::Any) => HandoutPolicy::Any,
        Ok(pb::HandoutPolicy::ReferenceOnly) => HandoutPolicy::ReferenceOnly,
        Err(_) => return Err(Error::invalid("handout_policy", "unknown policy")),
    };
    if p.client_secret.len() > 4096 {
        return Err(Error::invalid("client_secret", "is longer than 4096 bytes"));
    }
    Ok(ProviderDraft {
        id: p.provider_id,
        name: p.name,
        kind,
        client_id: p.client_id,
        client_secret: (!p.client_secret.is_empty()).then(|| SecretString::from(p.client_secret)),
        auth_url: p.auth_url,
        token_url: p.token_url,
        issuer: p.issuer,
        revocation_url: p.revocation_url,
        default_scopes: p.default_scopes,
        extra_auth_params: p.extra_auth_params.into_iter().collect(),
        token_auth_method,
        handout_policy,
        reference_ttl_seconds: p.reference_ttl_seconds,
    })
}

#[tonic::async_trait]
impl pb::providers_server::Providers for ProvidersApi {
    async fn create_provider(
        &self,
        req: Request<pb::CreateProviderRequest>,
    ) -> Result<Response<pb::Provider>, Status> {
        require_admin(&req)?;
        let d = draft(req.into_inner().provider).map_err(|e| to_status(&e))?;
        let p = self.registry.create(d).await.map_err(|e| to_status(&e))?;
        tracing::info!(provider = %p.id, "provider created");
        Ok(Response::new(self.to_wire(&p)))
    }

    async fn get_provider(
        &self,
        req: Request<pb::GetProviderRequest>,
    ) -> Result<Response<pb::Provider>, Status> {
        require_admin(&req)?;
        let p = ProviderId::parse(&req.get_ref().provider_id)
            .map_err(Error::from)
            .and_then(|id| self.registry.get(&id))
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(self.to_wire(&p)))
    }

    async fn list_providers(
        &self,
        req: Request<pb::ListProvidersRequest>,
    ) -> Result<Response<pb::ListProvidersResponse>, Status> {
        require_admin(&req)?;
        let providers = self
            .registry
            .list()
            .map_err(|e| to_status(&e))?
            .iter()
            .map(|p| self.to_wire(p))
            .collect();
        Ok(Response::new(pb::ListProvidersResponse { providers }))
    }

    async fn update_provider(
        &self,
        req: Request<pb::UpdateProviderRequest>,
    ) -> Result<Response<pb::Provider>, Status> {
        require_admin(&req)?;
        let d = draft(req.into_inner().provider).map_err(|e| to_status(&e))?;
        let p = self.registry.update(d).await.map_err(|e| to_status(&e))?;
        tracing::info!(provider = %p.id, "provider updated");
        Ok(Response::new(self.to_wire(&p)))
    }

    async fn delete_provider(
        &self,
        req: Request<pb::DeleteProviderRequest>,
    ) -> Result<Response<pb::DeleteProviderResponse>, Status> {
        require_admin(&req)?;
        let id = ProviderId::parse(&req.get_ref().provider_id).map_err(|e| to_status(&e.into()))?;
        self.broker
            .delete_provider(&id)
            .await
            .map_err(|e| to_status(&e))?;
        tracing::info!(provider = %id, "provider deleted");
        Ok(Response::new(pb::DeleteProviderResponse {}))
    }
}
