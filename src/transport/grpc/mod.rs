//! gRPC: the `valet.v1` services, caller authentication, wire ⇄ domain conversion, and the
//! status mapping. Each RPC runs in one span (`skip_all`: method, caller, provider, outcome).

mod auth;
mod convert;
mod credentials;
mod providers;
mod status;

pub use auth::{CallerAuth, CallerKey, USER_ASSERTION};
pub use credentials::CredentialsApi;
pub use providers::ProvidersApi;
pub use status::to_status;

use crate::domain::{Caller, ProviderId};
use crate::service::{Credentials, Error};
use std::future::Future;
use std::sync::Arc;
use tonic::{Request, Status};
use tracing::Instrument as _;

/// The caller the interceptor attached to the request (taken from it, not copied).
fn caller<T>(req: &mut Request<T>) -> Result<Caller, Status> {
    req.extensions_mut()
        .remove::<Caller>()
        .ok_or_else(|| Status::unauthenticated("missing caller identity"))
}

/// What an RPC's success is called in the audit trail.
trait Labelled {
    fn label(&self) -> &'static str {
        "ok"
    }
}

impl Labelled for crate::service::Resolved {}

impl Labelled for () {}
impl Labelled for crate::service::ProviderDeleted {}
impl Labelled for (String, usize) {}
impl<T> Labelled for Vec<T> {}
impl<T> Labelled for (Vec<T>, Option<String>) {}
impl<A, B> Labelled for (crate::service::AccessToken, A, B) {}
impl<A> Labelled for (crate::service::AccessToken, A) {}
impl Labelled for crate::domain::ProviderConfig {}
impl Labelled for crate::domain::ProviderId {}
impl Labelled for crate::service::GrantInfo {}
impl<T> Labelled for std::sync::Arc<T> {}
impl<T: ?Sized> Labelled for std::pin::Pin<Box<T>> {}
impl<T: ?Sized> Labelled for (std::pin::Pin<Box<T>>, crate::service::WatchSlot) {}

impl Labelled for (crate::service::Outcome, crate::service::WatchSlot) {
    fn label(&self) -> &'static str {
        self.0.label()
    }
}

impl Labelled for crate::service::Outcome {
    fn label(&self) -> &'static str {
        match self {
            Self::Token(_) => "token",
            Self::Reference { .. } => "reference",
            Self::Pending { .. } => "flow_started",
            Self::Completed => "completed",
        }
    }
}

impl Labelled for (bool, crate::service::ProviderRevocation) {
    fn label(&self) -> &'static str {
        if self.0 {
            "revoked"
        } else {
            "nothing_to_revoke"
        }
    }
}

fn rpc_span(method: &'static str, caller: &Caller, provider: &str) -> tracing::Span {
    tracing::info_span!(
        "rpc",
        method,
        caller = %caller.name,
        provider = %provider,
        outcome = tracing::field::Empty,
    )
}

/// `raw` when it is a well-formed id, else empty.
fn valid(raw: &str, is_valid: fn(&str) -> bool) -> &str {
    if is_valid(raw) { raw } else { "" }
}

/// Runs one RPC in its span, records it in the audit trail, and maps its error to a status
/// (logged once, there). `subject` names the provider, user and agent as the request did.
fn rpc<T: Labelled>(
    audit: &crate::audit::Audit,
    method: &'static str,
    caller: &Caller,
    subject: crate::audit::Subject<'_>,
    call: impl Future<Output = Result<T, Error>>,
) -> impl Future<Output = Result<T, Status>> {
    // Boxed once, here: each future that holds it and awaits it keeps a copy of its space
    // (argument and awaited value), so a use case's future carried through this wrapper and
    // `track` came to 9 KiB, moved twice on every call (measured with callgrind).
    let call = Box::pin(call);
    // Only well-formed ids are logged and reach the trail; anything else is input, not a label.
    let provider = valid(subject.provider, ProviderId::is_valid);
    // The span is made only when traces are exported: the request line below carries the same
    // fields, and a span on every call costs the log formatter more than the call itself. A
    // failure is still logged inside one (`in_span`).
    let span = if crate::telemetry::exporting() {
        rpc_span(method, caller, provider)
    } else {
        tracing::Span::none()
    };
    async move {
        let started = std::time::Instant::now();
        // The grant a call found when its request named none (`Resolve`), or acted on
        // (`Revoke`), success or not: its ids as stored (an older version's may hold characters
        // a new id may not).
        let (result, found) = crate::service::acted_on::track(call).await;
        let took = started.elapsed();
        let found = found.as_ref();
        let named = found.map_or(provider, |k| k.provider.as_str());
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => crate::transport::reason_name(e.reason()),
        };
        tracing::Span::current().record("outcome", outcome);
        let denied = result.as_ref().err().is_some_and(|e| {
            matches!(
                e.class(),
                crate::service::Class::Denied | crate::service::Class::Exhausted
            )
        });
        audit.metrics().rpc(method, outcome, denied, took);
        tracing::info!(
            target: "valet::request",
            method,
            // Strings, not `%` (Display): a JSON line writes them without formatting first.
            caller = caller.name.as_str(),
            provider = named,
            outcome,
            latency_ms = crate::telemetry::millis(took),
            request_id = caller.request_id.as_str(),
            "rpc"
        );
        let audited = match found {
            Some(k) => crate::audit::Subject::of(&k.provider, &k.user, k.agent.as_ref()),
            None => crate::audit::Subject {
                provider,
                user: valid(subject.user, crate::domain::UserId::is_valid),
                agent: valid(subject.agent, crate::domain::AgentId::is_valid),
            },
        };
        let label = result.as_ref().map_or(outcome, Labelled::label);
        audit.record(method, &caller.name, audited, label);
        result.map_err(|e| {
            if tracing::Span::current().is_none() {
                let span = rpc_span(method, caller, provider);
                span.record("outcome", outcome);
                span.in_scope(|| to_status(&e))
            } else {
                to_status(&e)
            }
        })
    }
    .instrument(span)
}

/// The provider, user and agent a request named, kept for its audit event and request line
/// while the call runs on a task of its own (`rpc_detached`).
#[derive(Debug, Default)]
struct Named {
    provider: String,
    user: String,
    agent: String,
}

impl Named {
    fn of(provider: &str, user: &str, agent: &str) -> Self {
        Self {
            provider: provider.to_owned(),
            user: user.to_owned(),
            agent: agent.to_owned(),
        }
    }
}

/// `rpc` on a task of its own, audit event and request line included, for the calls that change
/// what is stored or spend something at a provider: a caller that gives up (its deadline) leaves
/// the change neither half made nor made without a record, and shutdown waits for it
/// (`service::tasks`). `call` gets the use case and the caller.
async fn rpc_detached<T, F>(
    credentials: &Arc<Credentials>,
    method: &'static str,
    caller: Caller,
    named: Named,
    call: impl FnOnce(Arc<Credentials>, Caller) -> F,
) -> Result<T, Status>
where
    T: Labelled + Send + 'static,
    F: Future<Output = Result<T, Error>> + Send + 'static,
{
    let work = call(credentials.clone(), caller.clone());
    let credentials = credentials.clone();
    crate::service::tasks::detached("the call's task ended", async move {
        let subject = crate::audit::Subject {
            provider: &named.provider,
            user: &named.user,
            agent: &named.agent,
        };
        rpc(credentials.audit(), method, &caller, subject, work).await
    })
    .await
    .map_err(|e| to_status(&e))?
}
