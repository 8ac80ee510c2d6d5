//! `valet.v1.Credentials`: what agents call.

use super::{caller, to_status};
use crate::domain::{AgentId, GrantKey, GrantStatus, Handout, ProviderId, Scopes, UserId};
use crate::pb;
use crate::secret::ExposeSecret;
use crate::service::{AccessToken, AuthRequest, Broker, Error, Outcome};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

pub struct CredentialsApi {
    broker: Arc<Broker>,
}

impl CredentialsApi {
    pub fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
    }
}

fn grant_key(provider: &str, user: &str, agent: &str) -> Result<GrantKey, Error> {
    Ok(GrantKey {
        provider: ProviderId::parse(provider)?,
        user: UserId::parse(user)?,
        agent: if agent.is_empty() {
            None
        } else {
            Some(AgentId::parse(agent)?)
        },
    })
}

fn token(t: AccessToken) -> pb::Token {
    pb::Token {
        access_token: t.token.expose_secret().to_owned(),
        token_type: t.token_type,
        expires_at: t.expires_at,
        scopes: t.scopes.to_vec(),
    }
}

fn outcome(o: Outcome) -> pb::AuthenticateResponse {
    use pb::authenticate_response::Result as R;
    let result = match o {
        Outcome::Token(t) => R::Token(token(t)),
        Outcome::Reference {
            reference,
            expires_at,
        } => R::Reference(pb::Reference {
            reference: reference.expose_secret().to_owned(),
            expires_at,
        }),
        Outcome::Pending {
            auth_url,
            auth_id,
            expires_at,
        } => R::Pending(pb::Pending {
            auth_url,
            auth_id,
            expires_at,
        }),
    };
    pb::AuthenticateResponse {
        result: Some(result),
    }
}

/// The HTTP authentication scheme for a token type (RFC 6750 spells it `Bearer`).
fn scheme(token_type: &str) -> String {
    if token_type.eq_ignore_ascii_case("bearer") {
        "Bearer".into()
    } else {
        token_type.to_owned()
    }
}

/// The deadline the client set (`grpc-timeout`), so a wait never outlives its caller.
fn grpc_deadline<T>(req: &Request<T>) -> Option<Duration> {
    let raw = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = raw.split_at(raw.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[tonic::async_trait]
impl pb::credentials_server::Credentials for CredentialsApi {
    async fn authenticate(
        &self,
        req: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let parsed = (|| {
            Ok::<_, Error>(AuthRequest {
                key: grant_key(&r.provider_id, &r.user_id, &r.agent_id)?,
                scopes: Scopes::parse("scopes", &r.scopes)?,
                handout: match pb::Handout::try_from(r.handout) {
                    Ok(pb::Handout::Unspecified | pb::Handout::Token) if r.single_use => {
                        return Err(Error::invalid(
                            "single_use",
                            "applies to REFERENCE handouts only",
                        ));
                    }
                    Ok(pb::Handout::Unspecified | pb::Handout::Token) => Handout::Token,
                    Ok(pb::Handout::Reference) => Handout::Reference {
                        single_use: r.single_use,
                    },
                    Err(_) => return Err(Error::invalid("handout", "unknown handout")),
                },
                min_ttl: r.min_ttl_seconds,
                force_reauth: r.force_reauth,
            })
        })()
        .map_err(|e| to_status(&e))?;
        let o = self
            .broker
            .authenticate(&caller, parsed)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(outcome(o)))
    }

    async fn wait_for_completion(
        &self,
        req: Request<pb::WaitForCompletionRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let caller = caller(&req)?;
        let mut timeout = Duration::from_secs(u64::from(req.get_ref().timeout_seconds));
        if let Some(deadline) = grpc_deadline(&req) {
            // Answer `pending` a little before the client gives up, rather than not at all.
            let margin = deadline.saturating_sub(deadline / 10);
            timeout = if timeout.is_zero() {
                margin
            } else {
                timeout.min(margin)
            };
            if timeout.is_zero() {
                timeout = Duration::from_millis(1);
            }
        }
        let o = self
            .broker
            .wait_for_completion(&caller, &req.get_ref().auth_id, timeout)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(outcome(o)))
    }

    async fn resolve(
        &self,
        req: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::ResolveResponse>, Status> {
        let caller = caller(&req)?;
        let r = req.get_ref();
        let t = self
            .broker
            .resolve(&caller, &r.reference, r.min_ttl_seconds)
            .await
            .map_err(|e| to_status(&e))?;
        let credential = pb::Credential {
            location: "header".into(),
            name: "Authorization".into(),
            value: format!("{} {}", scheme(&t.token_type), t.token.expose_secret()),
        };
        Ok(Response::new(pb::ResolveResponse {
            token: Some(token(t)),
            credential: Some(credential),
        }))
    }

    async fn revoke(
        &self,
        req: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        let caller = caller(&req)?;
        let r = req.get_ref();
        if !r.reference.is_empty() {
            let revoked = self
                .broker
                .revoke_reference(&caller, &r.reference)
                .await
                .map_err(|e| to_status(&e))?;
            if revoked {
                tracing::info!("reference revoked");
            }
            return Ok(Response::new(pb::RevokeResponse { revoked }));
        }
        let key = grant_key(&r.provider_id, &r.user_id, &r.agent_id).map_err(|e| to_status(&e))?;
        let revoked = self
            .broker
            .revoke(&caller, &key)
            .await
            .map_err(|e| to_status(&e))?;
        if revoked {
            tracing::info!(provider = %key.provider, "grant revoked");
        }
        Ok(Response::new(pb::RevokeResponse { revoked }))
    }

    async fn list_grants(
        &self,
        req: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        let caller = caller(&req)?;
        let r = req.get_ref();
        let filters = (|| {
            let provider = (!r.provider_id.is_empty())
                .then(|| ProviderId::parse(&r.provider_id))
                .transpose()?;
            let user = (!r.user_id.is_empty())
                .then(|| UserId::parse(&r.user_id))
                .transpose()?;
            Ok::<_, Error>((provider, user))
        })()
        .map_err(|e| to_status(&e))?;
        let grants = self
            .broker
            .list_grants(&caller, filters.0.as_ref(), filters.1.as_ref())
            .await
            .map_err(|e| to_status(&e))?
            .into_iter()
            .map(|g| pb::Grant {
                provider_id: g.key.provider.to_string(),
                user_id: g.key.user.to_string(),
                agent_id: g.key.agent.map(|a| a.to_string()).unwrap_or_default(),
                scopes: g.scopes.to_vec(),
                subject: g.subject.unwrap_or_default(),
                created_at: g.created_at,
                updated_at: g.updated_at,
                status: match g.status {
                    GrantStatus::Active => pb::GrantStatus::Active,
                    GrantStatus::NeedsReauth => pb::GrantStatus::NeedsReauth,
                } as i32,
                has_refresh_token: g.has_refresh_token,
            })
            .collect();
        Ok(Response::new(pb::ListGrantsResponse { grants }))
    }
}
