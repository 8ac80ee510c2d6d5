//! `valet.v1.Credentials`: what agents call. Each RPC maps the wire request to domain input,
//! calls the credentials use case inside its span, and maps the answer back.

use super::{Named, caller, convert, rpc, rpc_detached};
use crate::audit::Subject;
use crate::pb;
use crate::secret::SecretString;
use crate::service::{Credentials, ProviderRevocation};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

#[derive(Debug)]
pub struct CredentialsApi {
    credentials: Arc<Credentials>,
}

impl CredentialsApi {
    pub fn new(credentials: Arc<Credentials>) -> Self {
        Self { credentials }
    }

    fn audit(&self) -> &crate::audit::Audit {
        self.credentials.audit()
    }
}

fn subject<'a>(provider: &'a str, user: &'a str, agent: &'a str) -> Subject<'a> {
    Subject {
        provider,
        user,
        agent,
    }
}

/// The wait a caller asked for, shortened to answer `pending` a little before its deadline.
fn wait_timeout<T>(req: &Request<T>, asked_seconds: u32) -> Duration {
    let mut timeout = Duration::from_secs(u64::from(asked_seconds));
    if let Some(deadline) = convert::grpc_deadline(req) {
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
    timeout
}

type Events<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

/// Ends a watch stream at the call's deadline (the caller gave up waiting by then), or at
/// shutdown with `UNAVAILABLE` "shutting down". `slot`, the stream's place among its caller's,
/// and the metrics' count of open streams are held as long as it.
fn until_deadline<T: Send + 'static>(
    events: impl futures::Stream<Item = Result<T, Status>> + Send + 'static,
    deadline: Option<Duration>,
    guard: crate::metrics::StreamGuard,
    slot: crate::service::WatchSlot,
) -> Events<T> {
    use futures::StreamExt as _;
    let closing = slot.closing();
    let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let end = {
        let closed = closed.clone();
        async move {
            tokio::select! {
                () = async {
                    match deadline {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                } => {}
                () = closing => closed.store(true, std::sync::atomic::Ordering::Relaxed),
            }
        }
    };
    // At shutdown the stream ends saying so (a watcher reconnects), rather than holding the
    // drain for its whole grace period and ending in a transport error.
    let shut = futures::stream::iter([()]).filter_map(move |()| {
        let closed = closed.load(std::sync::atomic::Ordering::Relaxed);
        std::future::ready(closed.then(|| {
            Err(Status::unavailable(
                "valet is shutting down: watch again (another replica, or once it is back)",
            ))
        }))
    });
    // They live as long as the stream: dropped when it ends or the caller cancels.
    Box::pin(events.take_until(end).chain(shut).map(move |e| {
        let _ = (&guard, &slot);
        e
    }))
}

#[tonic::async_trait]
impl pb::credentials_server::Credentials for CredentialsApi {
    type WatchAuthorizationStream = Events<pb::AuthorizationEvent>;
    type WatchGrantsStream = Events<pb::GrantEvent>;

    async fn watch_authorization(
        &self,
        mut req: Request<pb::WatchAuthorizationRequest>,
    ) -> Result<Response<Self::WatchAuthorizationStream>, Status> {
        use futures::StreamExt as _;
        let caller = caller(&mut req)?;
        let deadline = convert::grpc_deadline(&req);
        let auth_id = req.into_inner().auth_id;
        let (now, slot) = rpc(
            self.audit(),
            "WatchAuthorization",
            &caller,
            Subject::default(),
            async {
                let slot = self.credentials.open_watch(&caller)?;
                Ok((self.credentials.flow_now(&caller, &auth_id).await?, slot))
            },
        )
        .await?;
        let pending = matches!(now, crate::service::Outcome::Pending { .. });
        let first = futures::stream::once(std::future::ready(Ok(convert::authorization_event(
            Ok(now),
        ))));
        let credentials = self.credentials.clone();
        // While pending, one more event: how the flow ends.
        let end = futures::stream::iter(pending.then_some(())).then(move |()| {
            let (credentials, caller, auth_id) =
                (credentials.clone(), caller.clone(), auth_id.clone());
            async move {
                let (end, found) =
                    crate::service::acted_on::track(credentials.flow_end(&caller, &auth_id)).await;
                // A token or reference handed out on this stream is recorded (and counted) as
                // one handed out by WaitForCompletion is.
                if let (Ok(outcome), Some(k)) = (&end, &found) {
                    let label = super::Labelled::label(outcome);
                    if matches!(label, "token" | "reference") {
                        let subject = Subject::of(&k.provider, &k.user, k.agent.as_ref());
                        credentials.audit().record(
                            "WatchAuthorization",
                            &caller.name,
                            subject,
                            label,
                        );
                    }
                }
                Ok(convert::authorization_event(end))
            }
        });
        let guard = self.audit().stream_opened();
        Ok(Response::new(until_deadline(
            first.chain(end),
            deadline,
            guard,
            slot,
        )))
    }

    async fn import_grant(
        &self,
        mut req: Request<pb::ImportGrantRequest>,
    ) -> Result<Response<pb::ImportGrantResponse>, Status> {
        let caller = caller(&mut req)?;
        let r = req.into_inner();
        // The import refreshes the token once, and a provider that rotates spends it then: a
        // caller that gave up before the new one was stored could not import again.
        let named = Named::of(&r.provider_id, &r.user_id, &r.agent_id);
        let grant = rpc_detached(
            &self.credentials,
            "ImportGrant",
            caller,
            named,
            |credentials, caller| async move {
                let key =
                    convert::new_grant_key(&r.provider_id, &r.user_id, &r.agent_id, &r.account)?;
                if r.refresh_token.is_empty() || r.refresh_token.len() > 16384 {
                    return Err(crate::service::Error::invalid(
                        "refresh_token",
                        "is required (at most 16384 characters)",
                    ));
                }
                let scopes = crate::domain::Scopes::parse("scopes", &r.scopes)?;
                let token = SecretString::from(r.refresh_token);
                credentials.import_grant(&caller, key, token, scopes).await
            },
        )
        .await?;
        Ok(Response::new(pb::ImportGrantResponse {
            grant: Some(convert::grant(grant)),
        }))
    }

    async fn export_grants(
        &self,
        mut req: Request<pb::ExportGrantsRequest>,
    ) -> Result<Response<pb::ExportGrantsResponse>, Status> {
        let caller = caller(&mut req)?;
        let r = req.get_ref();
        let (sealed, n) = rpc(
            self.audit(),
            "ExportGrants",
            &caller,
            subject(&r.provider_id, "", ""),
            async {
                let provider = crate::domain::ProviderId::parse(&r.provider_id)?;
                self.credentials
                    .export_grants(&caller, &provider, &r.recipient_public_key)
                    .await
            },
        )
        .await?;
        Ok(Response::new(pb::ExportGrantsResponse {
            sealed,
            grants: u32::try_from(n).unwrap_or(u32::MAX),
        }))
    }

    async fn watch_grants(
        &self,
        mut req: Request<pb::WatchGrantsRequest>,
    ) -> Result<Response<Self::WatchGrantsStream>, Status> {
        use futures::StreamExt as _;
        let caller = caller(&mut req)?;
        let deadline = convert::grpc_deadline(&req);
        let r = req.get_ref();
        let (changes, slot) = rpc(
            self.audit(),
            "WatchGrants",
            &caller,
            subject(&r.provider_id, &r.user_id, &r.agent_id),
            async {
                let slot = self.credentials.open_watch(&caller)?;
                let changes = self
                    .credentials
                    .watch_grants(&caller, convert::watch_query(r)?)
                    .await?;
                Ok((changes, slot))
            },
        )
        .await?;
        let guard = self.audit().stream_opened();
        let events = changes.map(|c| Ok(convert::grant_event(c)));
        Ok(Response::new(until_deadline(events, deadline, guard, slot)))
    }

    async fn authenticate(
        &self,
        mut req: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let caller = caller(&mut req)?;
        let r = req.get_ref();
        let subject = subject(&r.provider_id, &r.user_id, &r.agent_id);
        let o = rpc(self.audit(), "Authenticate", &caller, subject, async {
            self.credentials
                .authenticate(&caller, convert::auth_request(r)?)
                .await
        })
        .await?;
        Ok(Response::new(convert::outcome(o)))
    }

    async fn wait_for_completion(
        &self,
        mut req: Request<pb::WaitForCompletionRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let caller = caller(&mut req)?;
        let timeout = wait_timeout(&req, req.get_ref().timeout_seconds);
        let (auth_id, status_only) = (&req.get_ref().auth_id, req.get_ref().status_only);
        let o = rpc(
            self.audit(),
            "WaitForCompletion",
            &caller,
            Subject::default(),
            async {
                self.credentials
                    .wait_for_completion(&caller, auth_id, timeout, status_only)
                    .await
            },
        )
        .await?;
        Ok(Response::new(convert::outcome(o)))
    }

    async fn resolve(
        &self,
        mut req: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::ResolveResponse>, Status> {
        let caller = caller(&mut req)?;
        let r = req.get_ref();
        let t = rpc(
            self.audit(),
            "Resolve",
            &caller,
            Subject::default(),
            async {
                self.credentials
                    .resolve(&caller, &r.reference, r.min_ttl_seconds, &r.target_url)
                    .await
            },
        )
        .await?;
        Ok(Response::new(pb::ResolveResponse {
            credential: Some(convert::credential(&t.applied)),
            token: Some(convert::token(t.token)),
        }))
    }

    async fn revoke(
        &self,
        mut req: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        let caller = caller(&mut req)?;
        let r = req.into_inner();
        // Not half done (revoked at the provider but still handed out here, or its references
        // left live) when the caller gives up.
        let named = Named::of(&r.provider_id, &r.user_id, &r.agent_id);
        let (revoked, at_provider) = rpc_detached(
            &self.credentials,
            "Revoke",
            caller,
            named,
            |credentials, caller| async move {
                if r.reference.is_empty() {
                    let key =
                        convert::grant_key(&r.provider_id, &r.user_id, &r.agent_id, &r.account)?;
                    credentials.revoke(&caller, &key).await
                } else {
                    // One thing at a time: a grant named beside a reference is not ignored.
                    for (field, given) in [
                        ("provider_id", &r.provider_id),
                        ("user_id", &r.user_id),
                        ("agent_id", &r.agent_id),
                        ("account", &r.account),
                    ] {
                        if !given.is_empty() {
                            return Err(crate::service::Error::invalid(
                                field,
                                "revokes a grant; with a reference, name nothing else",
                            ));
                        }
                    }
                    let revoked = credentials.revoke_reference(&caller, &r.reference).await?;
                    Ok((revoked, ProviderRevocation::NothingToRevoke))
                }
            },
        )
        .await?;
        let (provider_revocation, provider_error) = convert::provider_revocation(at_provider);
        Ok(Response::new(pb::RevokeResponse {
            revoked,
            provider_revocation: provider_revocation as i32,
            provider_error,
        }))
    }

    async fn list_grants(
        &self,
        mut req: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        let caller = caller(&mut req)?;
        let r = req.get_ref();
        let (grants, next) = rpc(
            self.audit(),
            "ListGrants",
            &caller,
            subject(&r.provider_id, &r.user_id, &r.agent_id),
            async {
                self.credentials
                    .list_grants(&caller, convert::grant_query(r)?, &r.page_token)
                    .await
            },
        )
        .await?;
        Ok(Response::new(pb::ListGrantsResponse {
            grants: grants.into_iter().map(convert::grant).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn complete_authorization(
        &self,
        mut req: Request<pb::CompleteAuthorizationRequest>,
    ) -> Result<Response<pb::CompleteAuthorizationResponse>, Status> {
        let caller = caller(&mut req)?;
        let r = req.into_inner();
        // The session is spent once taken: a caller that gave up while the grant was stored
        // could not make the call again.
        let named = Named::of("", &r.user_id, "");
        let provider = rpc_detached(
            &self.credentials,
            "CompleteAuthorization",
            caller,
            named,
            |credentials, caller| async move {
                let user = crate::domain::UserId::parse(&r.user_id)?;
                credentials
                    .complete_authorization(&caller, &r.session, &user)
                    .await
            },
        )
        .await?;
        Ok(Response::new(pb::CompleteAuthorizationResponse {
            provider_id: provider.to_string(),
        }))
    }

    async fn put_credential(
        &self,
        mut req: Request<pb::PutCredentialRequest>,
    ) -> Result<Response<pb::PutCredentialResponse>, Status> {
        let caller = caller(&mut req)?;
        let r = req.into_inner();
        // Stored with its cached predecessor dropped and its audit event, or not at all.
        let named = Named::of(&r.provider_id, &r.user_id, &r.agent_id);
        rpc_detached(
            &self.credentials,
            "PutCredential",
            caller,
            named,
            |credentials, caller| async move {
                let key =
                    convert::new_grant_key(&r.provider_id, &r.user_id, &r.agent_id, &r.account)?;
                let value = SecretString::from(r.value);
                credentials
                    .put_credential(&caller, &key, &r.username, &value)
                    .await
            },
        )
        .await?;
        Ok(Response::new(pb::PutCredentialResponse {}))
    }
}
