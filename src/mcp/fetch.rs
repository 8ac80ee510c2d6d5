//! The SSRF guard for every document Valet fetches from a URL an operator or a remote server
//! supplied (MCP protected resource and authorization server metadata, dynamic registration):
//! https only outside dev, no redirects, no proxy, private, loopback and link-local addresses
//! refused unless `[provider_http] allow_private_networks` is set (checked on the addresses the
//! connection actually uses, through the resolver, so DNS cannot rebind around it), and caps on
//! size and time.

use crate::net::{PRIVATE_ONLY, PublicOnly, public_host, shown};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Largest metadata document or registration answer accepted.
pub const MAX_DOCUMENT: usize = 256 * 1024;

/// What the guard allows.
#[derive(Debug, Clone, Copy)]
pub struct FetchPolicy {
    /// Private, loopback, link-local and other non-public addresses may be fetched.
    pub allow_private: bool,
    /// Plain http may be fetched (dev mode).
    pub allow_http: bool,
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0} is not an https URL (plain http is only fetched in dev mode)")]
    NotHttps(String),
    #[error(
        "{0} is a private, loopback or link-local address; set [provider_http] allow_private_networks = true to fetch from it"
    )]
    Private(String),
    #[error("{url} answered with a redirect (HTTP {status}); redirects are not followed")]
    Redirect { url: String, status: u16 },
    #[error("the answer from {0} is larger than {MAX_DOCUMENT} bytes")]
    TooLarge(String),
    #[error("fetching {url} failed: {reason}")]
    Transport { url: String, reason: String },
    #[error(
        "{0} has a user name or password in it: a URL with credentials is never fetched (and would be shown to users as the MCP resource)"
    )]
    Credentials(String),
}

/// One fetched answer.
pub struct Fetched {
    pub status: u16,
    /// Every `WWW-Authenticate` header.
    pub challenges: Vec<String>,
    /// May hold a secret: a dynamic client registration's answer holds the client secret.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched")
            .field("status", &self.status)
            .field("challenges", &self.challenges)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl Fetched {
    /// The body as a JSON object, if it is one.
    pub fn json_object(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        match serde_json::from_slice(&self.body) {
            Ok(serde_json::Value::Object(m)) => Some(m),
            _ => None,
        }
    }
}

/// The guarded HTTP client.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    policy: FetchPolicy,
}

impl Fetcher {
    pub fn new(policy: FetchPolicy) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(policy.connect_timeout)
            .timeout(policy.timeout)
            .user_agent(concat!("valet/", env!("CARGO_PKG_VERSION")));
        if !policy.allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(Self {
            client: builder.build()?,
            policy,
        })
    }

    pub fn policy(&self) -> FetchPolicy {
        self.policy
    }

    /// Refuses a URL the guard never fetches, before any connection.
    pub fn check(&self, url: &Url) -> Result<(), FetchError> {
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FetchError::Credentials(shown(url)));
        }
        // Plain http: in dev mode, or to a loopback server where private addresses are allowed
        // (as provider endpoints may be loopback http).
        let loopback = crate::net::loopback_host(url);
        if !self.policy.allow_private && !public_host(url) {
            return Err(FetchError::Private(
                url.host_str().unwrap_or_default().to_owned(),
            ));
        }
        match url.scheme() {
            "https" => Ok(()),
            "http" if self.policy.allow_http || (self.policy.allow_private && loopback) => Ok(()),
            _ => Err(FetchError::NotHttps(shown(url))),
        }
    }

    /// GET `url` (JSON accepted).
    pub async fn get(&self, url: &Url) -> Result<Fetched, FetchError> {
        self.check(url)?;
        let req = self
            .client
            .get(url.clone())
            .header(http::header::ACCEPT, "application/json");
        self.send(url, req).await
    }

    /// POST a JSON body to `url`.
    pub async fn post_json(
        &self,
        url: &Url,
        body: &serde_json::Value,
    ) -> Result<Fetched, FetchError> {
        self.check(url)?;
        let req = self
            .client
            .post(url.clone())
            .header(http::header::ACCEPT, "application/json")
            .json(body);
        self.send(url, req).await
    }

    async fn send(&self, url: &Url, req: reqwest::RequestBuilder) -> Result<Fetched, FetchError> {
        let transport = |e: reqwest::Error| FetchError::Transport {
            url: shown(url),
            reason: reason(&e),
        };
        let mut resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(FetchError::Redirect {
                url: shown(url),
                status: status.as_u16(),
            });
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT as u64)
        {
            return Err(FetchError::TooLarge(shown(url)));
        }
        let challenges = resp
            .headers()
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                return Err(FetchError::TooLarge(shown(url)));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            status: status.as_u16(),
            challenges,
            body,
        })
    }
}

/// What a transport error was, without its URL (already named) or any body.
fn reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if crate::net::refused_as_private(e) {
        // The resolver's refusal (a private address) surfaces as a connect error.
        format!(
            "the host resolves only to {PRIVATE_ONLY}; set [provider_http] allow_private_networks = true to fetch from it"
        )
    } else if e.is_connect() {
        "could not connect (the name does not resolve, or nothing answers there)".into()
    } else {
        "the connection failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_refuses_before_connecting() {
        let f = Fetcher::new(FetchPolicy {
            allow_private: false,
            allow_http: false,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        })
        .unwrap();
        let check = |u: &str| f.check(&Url::parse(u).unwrap());
        assert!(matches!(
            check("http://mcp.example/"),
            Err(FetchError::NotHttps(_))
        ));
        assert!(matches!(
            check("https://127.0.0.1/x"),
            Err(FetchError::Private(_))
        ));
        assert!(matches!(
            check("https://[::1]/x"),
            Err(FetchError::Private(_))
        ));
        assert!(matches!(
            check("https://localhost/x"),
            Err(FetchError::Private(_))
        ));
        assert!(matches!(
            check("https://metadata.google.internal/x"),
            Err(FetchError::Private(_))
        ));
        // `url` normalizes numeric hosts: 2130706433 is 127.0.0.1.
        assert!(matches!(
            check("https://2130706433/"),
            Err(FetchError::Private(_))
        ));
        assert!(check("https://mcp.example/mcp").is_ok());
    }
}
