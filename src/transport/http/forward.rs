//! Forwarding a consent callback to the replica that started its flow (`service/replicas.rs`):
//! the same path and query, one hop (marked, never forwarded again), no redirects followed, and
//! the owner's page handed back to the browser as it came.

use axum::body::Body;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use std::time::Duration;
use url::Url;

/// Set on a forwarded callback: the replica that receives it answers it itself.
pub(super) const FORWARDED: &str = "x-valet-forwarded";
/// Larger than any page Valet writes.
const MAX_PAGE: usize = 64 * 1024;
/// The headers of the owner's answer that reach the browser.
const RELAYED: [header::HeaderName; 6] = [
    header::CONTENT_TYPE,
    header::LOCATION,
    header::CACHE_CONTROL,
    header::REFERRER_POLICY,
    header::X_CONTENT_TYPE_OPTIONS,
    header::CONTENT_SECURITY_POLICY,
];

/// The client replicas reach each other with.
pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .build()
}

/// Whether this request was forwarded by another replica.
pub(super) fn was_forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED)
}

/// Sends the callback to `owner` and answers with its page; `None` when the owner cannot be
/// reached (the caller shows its own page).
pub(super) async fn to_owner(
    client: &reqwest::Client,
    owner: &Url,
    provider: &str,
    query: Option<&str>,
) -> Option<Response> {
    let mut url = owner.join(&format!("oauth/callback/{provider}")).ok()?;
    url.set_query(query);
    let answer = match client.get(url).header(FORWARDED, "1").send().await {
        Ok(a) => a,
        Err(e) => {
            // Without the URL: its query holds the authorization code and state.
            tracing::warn!(
                "forwarding a callback to its replica failed: {}",
                e.without_url()
            );
            return None;
        }
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let body = answer.bytes().await.ok().filter(|b| b.len() <= MAX_PAGE)?;
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    for name in RELAYED {
        if let Some(v) = headers.get(&name) {
            resp.headers_mut().insert(name, v.clone());
        }
    }
    Some(resp)
}
