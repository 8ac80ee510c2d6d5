//! Lifecycle notifications: optional webhooks the deployment configures (`[[webhooks]]`), told
//! when a consent stores a grant, a grant needs the user again, a grant is revoked, or its
//! refresh keeps failing. Payloads carry ids and the kind of event, never a token.
//!
//! The signature scheme (what receivers check, `valet webhook verify` does it):
//!
//! - `Valet-Webhook-Id`: the event's id, the same on every retry (deduplicate on it);
//! - `Valet-Webhook-Timestamp`: Unix seconds when this attempt was sent;
//! - `Valet-Webhook-Signature`: `v1=` and the hex HMAC-SHA256, under the webhook's secret, of
//!   the timestamp, a `.`, and the exact request body.
//!
//! A receiver recomputes the HMAC over the bytes it received, compares in constant time, and
//! refuses a timestamp more than `TOLERANCE` away from its clock (a replayed request).
//! Deliveries are retried with back-off (1, 2, 4, 8, 16 s) until a 2xx; each outcome is an
//! audit event (`WebhookDelivered`: `ok` or `failed`).

use crate::audit::{Audit, GrantChange, GrantChangeKind, Subject};
use crate::clock::Clock;
use crate::secret::{ExposeSecret, SecretString};
use ring::hmac;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How far a timestamp may be from the receiver's clock.
pub const TOLERANCE: Duration = Duration::from_secs(300);
/// Attempts per delivery (the first and four retries).
const ATTEMPTS: u32 = 5;
/// Consecutive failed refreshes of one grant before `grant.refresh_failing` is sent (once, until
/// a refresh succeeds).
const FAILING_AFTER: u32 = 3;

/// The events a webhook can be told about.
pub const EVENTS: [&str; 5] = [
    "grant.created",
    "grant.needs_reauth",
    "grant.revoked",
    "grant.refresh_failing",
    "grant.reauth_due",
];

/// One configured receiver.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: url::Url,
    pub secret: SecretString,
    /// Empty: every event.
    pub events: Vec<String>,
}

/// `v1=` and the hex HMAC-SHA256 of `timestamp.body` under `secret`.
pub fn sign(secret: &SecretString, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose_secret().as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("v1={}", crate::secret::hex(ctx.sign().as_ref()))
}

/// Why a webhook request is not Valet's.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature is not of the form v1=<64 hex digits>")]
    Malformed,
    #[error("the signature does not match the body and timestamp under this secret")]
    Mismatch,
    #[error("the timestamp is more than {} seconds from now (a replay?)", TOLERANCE.as_secs())]
    Stale,
}

/// Checks a received request: the signature over the exact body, then the timestamp's age.
pub fn verify(
    secret: &SecretString,
    timestamp: i64,
    signature: &str,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    let given = signature
        .strip_prefix("v1=")
        .and_then(|h| hex::decode(h).ok())
        .filter(|b| b.len() == 32)
        .ok_or(VerifyError::Malformed)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose_secret().as_bytes());
    let mut message = timestamp.to_string().into_bytes();
    message.push(b'.');
    message.extend_from_slice(body);
    hmac::verify(&key, &message, &given).map_err(|_| VerifyError::Mismatch)?;
    if now.abs_diff(timestamp) > TOLERANCE.as_secs() {
        return Err(VerifyError::Stale);
    }
    Ok(())
}

/// The event a grant change is, if webhooks hear of it; `failing` counts consecutive refresh
/// failures per grant.
fn event_of(c: &GrantChange, failing: &mut HashMap<String, u32>) -> Option<&'static str> {
    let grant = format!("{}/{}/{}", c.provider, c.user, c.agent);
    match c.kind {
        GrantChangeKind::Created => {
            failing.remove(&grant);
            Some("grant.created")
        }
        GrantChangeKind::Refreshed => {
            failing.remove(&grant);
            None
        }
        GrantChangeKind::NeedsReauth => {
            failing.remove(&grant);
            Some("grant.needs_reauth")
        }
        GrantChangeKind::Revoked => {
            failing.remove(&grant);
            Some("grant.revoked")
        }
        GrantChangeKind::ReauthDue => Some("grant.reauth_due"),
        GrantChangeKind::RefreshFailed => {
            if failing.len() > 100_000 {
                failing.clear();
            }
            let n = failing.entry(grant).or_insert(0);
            *n += 1;
            (*n == FAILING_AFTER).then_some("grant.refresh_failing")
        }
    }
}

/// Delivers grant changes to the webhooks until `stop` resolves.
pub async fn run(
    hooks: Vec<Webhook>,
    mut changes: tokio::sync::broadcast::Receiver<GrantChange>,
    audit: Arc<Audit>,
    clock: Arc<dyn Clock>,
    stop: impl Future,
) {
    use tokio::sync::broadcast::error::RecvError;
    let http = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("valet/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("webhooks disabled: cannot build their HTTP client: {e}");
            return;
        }
    };
    let mut failing = HashMap::new();
    tokio::pin!(stop);
    loop {
        let change = tokio::select! {
            _ = &mut stop => return,
            c = changes.recv() => c,
        };
        let change = match change {
            Ok(c) => c,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "webhooks fell behind; {n} grant events were not sent"
                );
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let Some(event) = event_of(&change, &mut failing) else {
            continue;
        };
        let Ok(id) = crate::secret::random_token(16) else {
            tracing::error!("no randomness for a webhook id; event not sent");
            continue;
        };
        let body = serde_json::json!({
            "id": id,
            "type": event,
            "at": change.at,
            "provider_id": change.provider,
            "user_id": change.user,
            "agent_id": change.agent,
        })
        .to_string();
        for hook in hooks
            .iter()
            .filter(|h| h.events.is_empty() || h.events.iter().any(|e| e == event))
        {
            tokio::spawn(deliver(
                http.clone(),
                hook.clone(),
                id.clone(),
                body.clone(),
                change.clone(),
                audit.clone(),
                clock.clone(),
            ));
        }
    }
}

/// One delivery with its retries; its outcome goes to the audit trail.
async fn deliver(
    http: reqwest::Client,
    hook: Webhook,
    id: String,
    body: String,
    change: GrantChange,
    audit: Arc<Audit>,
    clock: Arc<dyn Clock>,
) {
    let host = hook.url.host_str().unwrap_or_default().to_owned();
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
        }
        let ts = clock.now_unix();
        let sent = http
            .post(hook.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("Valet-Webhook-Id", &id)
            .header("Valet-Webhook-Timestamp", ts.to_string())
            .header(
                "Valet-Webhook-Signature",
                sign(&hook.secret, ts, body.as_bytes()),
            )
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                record(&audit, &change, "ok");
                return;
            }
            Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
            Err(e) if e.is_timeout() => last = "timed out".into(),
            Err(_) => last = "could not connect".into(),
        }
    }
    tracing::warn!(
        host = %host,
        "a webhook delivery failed after {ATTEMPTS} attempts ({last}); the event is dropped"
    );
    record(&audit, &change, "failed");
}

fn record(audit: &Audit, c: &GrantChange, outcome: &str) {
    let subject = Subject {
        provider: &c.provider,
        user: &c.user,
        agent: &c.agent,
    };
    audit.record("WebhookDelivered", "valet", subject, outcome);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_over_the_same_body_timestamp_and_secret() {
        let secret = SecretString::from("whsec-test");
        let body = br#"{"type":"grant.revoked"}"#;
        let sig = sign(&secret, 1_760_000_000, body);
        assert!(sig.starts_with("v1=") && sig.len() == 67);
        assert_eq!(
            verify(&secret, 1_760_000_000, &sig, body, 1_760_000_100),
            Ok(())
        );
        assert_eq!(
            verify(&secret, 1_760_000_000, &sig, b"{}", 1_760_000_000),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(&secret, 1_760_000_001, &sig, body, 1_760_000_000),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(
                &SecretString::from("other"),
                1_760_000_000,
                &sig,
                body,
                1_760_000_000
            ),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(&secret, 1_760_000_000, &sig, body, 1_760_000_000 + 301),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify(&secret, 1_760_000_000, "v1=zz", body, 1_760_000_000),
            Err(VerifyError::Malformed)
        );
    }

    #[test]
    fn refresh_failing_is_sent_once_after_three_failures_in_a_row() {
        let change = |kind| GrantChange {
            kind,
            provider: "idp".into(),
            user: "alice".into(),
            agent: String::new(),
            at: 0,
        };
        let mut failing = HashMap::new();
        let mut events = Vec::new();
        for kind in [
            GrantChangeKind::RefreshFailed,
            GrantChangeKind::RefreshFailed,
            GrantChangeKind::RefreshFailed,
            GrantChangeKind::RefreshFailed,
            GrantChangeKind::Refreshed,
            GrantChangeKind::RefreshFailed,
        ] {
            events.push(event_of(&change(kind), &mut failing));
        }
        assert_eq!(
            events,
            [None, None, Some("grant.refresh_failing"), None, None, None]
        );
    }
}
