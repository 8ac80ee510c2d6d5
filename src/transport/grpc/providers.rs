//! `valet.v1.Providers`: operator RPCs (the policy admits admin keys only).

use super::{Named, caller, convert, rpc, rpc_detached};
use crate::domain::ProviderId;
use crate::pb;
use crate::service::policy::{self, Action};
use crate::service::{Credentials, Error, ProviderRegistry};
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Debug)]
pub struct ProvidersApi {
    registry: Arc<ProviderRegistry>,
    credentials: Arc<Credentials>,
}

impl ProvidersApi {
    pub fn new(credentials: Arc<Credentials>) -> Self {
        Self {
            registry: credentials.providers().clone(),
            credentials,
        }
    }

    fn wire(&self, p: &crate::domain::ProviderConfig) -> pb::Provider {
        convert::provider(p, self.registry.redirect_uri(&p.id))
    }
}

fn for_provider(provider: &str) -> crate::audit::Subject<'_> {
    crate::audit::Subject {
        provider,
        ..Default::default()
    }
}

fn provider_id(p: &Option<pb::Provider>) -> &str {
    p.as_ref().map_or("", |p| p.provider_id.as_str())
}

#[tonic::async_trait]
impl pb::providers_server::Providers for ProvidersApi {
    async fn create_provider(
        &self,
        mut req: Request<pb::CreateProviderRequest>,
    ) -> Result<Response<pb::Provider>, Status> {
        let caller = caller(&mut req)?;
        let r = req.into_inner();
        let named = Named::of(provider_id(&r.provider), "", "");
        let p = rpc_detached(
            &self.credentials,
            "CreateProvider",
            caller,
            named,
            |credentials, caller| async move {
                // Refused callers learn nothing about their input.
                policy::authorize(&caller, Action::ManageProviders)?;
                let draft = convert::draft(r.provider)?;
                credentials.providers().create(&caller, draft).await
            },
        )
        .await?;
        Ok(Response::new(self.wire(&p)))
    }

    async fn get_provider(
        &self,
        mut req: Request<pb::GetProviderRequest>,
    ) -> Result<Response<pb::Provider>, Status> {
        let caller = caller(&mut req)?;
        let id = &req.get_ref().provider_id;
        let p = rpc(
            self.credentials.audit(),
            "GetProvider",
            &caller,
            for_provider(id),
            async {
                policy::authorize(&caller, Action::ManageProviders)?;
                self.registry.describe(&caller, &ProviderId::parse(id)?)
            },
        )
        .await?;
        Ok(Response::new(self.wire(&p)))
    }

    async fn list_providers(
        &self,
        mut req: Request<pb::ListProvidersRequest>,
    ) -> Result<Response<pb::ListProvidersResponse>, Status> {
        let caller = caller(&mut req)?;
        let all = rpc(
            self.credentials.audit(),
            "ListProviders",
            &caller,
            for_provider(""),
            async { self.registry.list(&caller) },
        )
        .await?;
        let providers = all.iter().map(|p| self.wire(p)).collect();
        Ok(Response::new(pb::ListProvidersResponse { providers }))
    }

    async fn update_provider(
        &self,
        mut req: Request<pb::UpdateProviderRequest>,
    ) -> Result<Response<pb::Provider>, Status> {
        let caller = caller(&mut req)?;
        let r = req.into_inner();
        let named = Named::of(provider_id(&r.provider), "", "");
        let p = rpc_detached(
            &self.credentials,
            "UpdateProvider",
            caller,
            named,
            |credentials, caller| async move {
                policy::authorize(&caller, Action::ManageProviders)?;
                let draft = convert::draft(r.provider)?;
                let (p, rebound) = credentials.providers().update(&caller, draft).await?;
                if rebound {
                    credentials.forget_grants(&p.id).await?;
                }
                Ok(p)
            },
        )
        .await?;
        Ok(Response::new(self.wire(&p)))
    }

    async fn delete_provider(
        &self,
        mut req: Request<pb::DeleteProviderRequest>,
    ) -> Result<Response<pb::DeleteProviderResponse>, Status> {
        let caller = caller(&mut req)?;
        let pb::DeleteProviderRequest {
            provider_id: id,
            revoke_at_provider: revoke,
        } = req.into_inner();
        // Not half done (its grants revoked at the provider but still here) when the caller
        // gives up.
        let named = Named::of(&id, "", "");
        let deleted = rpc_detached(
            &self.credentials,
            "DeleteProvider",
            caller,
            named,
            |credentials, caller| async move {
                policy::authorize(&caller, Action::ManageProviders)?;
                let id = ProviderId::parse(&id).map_err(Error::from)?;
                credentials.delete_provider(&caller, &id, revoke).await
            },
        )
        .await?;
        Ok(Response::new(pb::DeleteProviderResponse {
            revoked_at_provider: deleted.revoked_at_provider,
            revocation_failures: deleted.revocation_failures,
            grants_deleted: deleted.grants,
        }))
    }
}
