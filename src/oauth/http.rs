//! The HTTP client Valet uses toward providers: no redirects, connect and total timeouts, and a
//! cap on response bodies. 5xx answers become transport errors so they classify as transient.

use std::time::Duration;

/// Largest provider response body accepted.
const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("request failed: {0}")]
    Transport(#[source] reqwest::Error),
    /// HTTP 5xx, with the `Retry-After` it gave in seconds (a 503 during maintenance may).
    #[error("provider answered HTTP {0}")]
    ServerError(u16, Option<u64>),
    /// HTTP 429, with the `Retry-After` it gave in seconds (capped at an hour).
    #[error("provider is rate limiting (HTTP 429)")]
    RateLimited(Option<u64>),
    #[error("response body larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The SSRF guard: the host is (or resolves only to) a non-public address.
    #[error(
        "{0} is a private, loopback or link-local address; set [provider_http] allow_private_networks = true to reach it"
    )]
    Private(String),
}

#[derive(Debug, Clone)]
pub struct ProviderHttp {
    client: reqwest::Client,
    /// Private, loopback and link-local addresses may be reached (`crate::net`).
    allow_private: bool,
}

impl ProviderHttp {
    pub fn new(
        connect_timeout: Duration,
        timeout: Duration,
        allow_private: bool,
    ) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .user_agent(concat!("valet/", env!("CARGO_PKG_VERSION")));
        if !allow_private {
            builder = builder.dns_resolver(std::sync::Arc::new(crate::net::PublicOnly));
        }
        Ok(Self {
            client: builder.build()?,
            allow_private,
        })
    }

    /// Sends an oauth2-crate request; usable as that crate's async HTTP client.
    pub async fn send(&self, req: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, HttpError> {
        let (parts, body) = req.into_parts();
        let url = parts.uri.to_string();
        let host = || parts.uri.host().unwrap_or_default().to_owned();
        if !self.allow_private && !url::Url::parse(&url).is_ok_and(|u| crate::net::public_host(&u))
        {
            return Err(HttpError::Private(host()));
        }
        let mut resp = self
            .client
            .request(parts.method, url)
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if crate::net::refused_as_private(&e) {
                    HttpError::Private(host())
                } else {
                    HttpError::Transport(e.without_url())
                }
            })?;
        let status = resp.status();
        if status == http::StatusCode::TOO_MANY_REQUESTS {
            return Err(HttpError::RateLimited(retry_after(resp.headers())));
        }
        if status.is_server_error() {
            return Err(HttpError::ServerError(
                status.as_u16(),
                retry_after(resp.headers()),
            ));
        }
        let mut buf = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| HttpError::Transport(e.without_url()))?
        {
            if buf.len() + chunk.len() > MAX_BODY {
                return Err(HttpError::TooLarge);
            }
            buf.extend_from_slice(&chunk);
        }
        let mut builder = http::Response::builder().status(status);
        for (name, value) in resp.headers() {
            builder = builder.header(name, value);
        }
        builder
            .body(buf)
            .map_err(|e| HttpError::Malformed(e.to_string()))
    }
}

/// A `Retry-After` in seconds, from a second (a 0 would have every caller retry at once
/// against a failing provider) to an hour (RFC 9110 section 10.2.3, sent with 429 and 503);
/// only the delay-seconds form is read.
fn retry_after(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| s.clamp(1, 3600))
}

impl<'c> oauth2::AsyncHttpClient<'c> for ProviderHttp {
    type Error = HttpError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, HttpError>> + Send + 'c>,
    >;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_in_seconds_from_one_to_an_hour() {
        let after = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::RETRY_AFTER, v.parse().unwrap());
            retry_after(&h)
        };
        assert_eq!(after("7"), Some(7));
        assert_eq!(after(" 120 "), Some(120));
        assert_eq!(after("0"), Some(1), "never an immediate retry storm");
        assert_eq!(after("86400"), Some(3600));
        assert_eq!(after("Wed, 21 Oct 2026 07:28:00 GMT"), None);
        assert_eq!(retry_after(&http::HeaderMap::new()), None);
    }
}
