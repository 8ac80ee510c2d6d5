//! MCP servers as providers: the OAuth half of an MCP client. From a server's URL, discovery
//! (`discovery.rs`) finds its authorization server; `register` makes Valet a client there (a
//! Client ID Metadata Document, else RFC 7591 dynamic registration); every fetch goes through
//! the SSRF guard (`fetch.rs`).

pub mod discovery;
pub mod fetch;

pub use discovery::{Discovered, DiscoveryError, bearer_params, discover};
pub use fetch::{FetchError, FetchPolicy, Fetcher};

use serde_json::{Value, json};
use url::Url;

/// Where Valet serves a provider's Client ID Metadata Document; the URL is the client id.
pub fn metadata_document_url(public_url: &Url, provider_id: &str) -> String {
    format!(
        "{}/oauth/client-metadata/{provider_id}",
        public_url.as_str().trim_end_matches('/')
    )
}

/// OpenID Connect Registration `application_type`: `native` for a loopback redirect (the
/// authorization server then accepts any port), `web` otherwise.
fn application_type(redirect_uri: &str) -> &'static str {
    match Url::parse(redirect_uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
    {
        Some(h) if h == "127.0.0.1" || h == "[::1]" || h == "localhost" => "native",
        _ => "web",
    }
}

/// The Client ID Metadata Document for a provider (draft-ietf-oauth-client-id-metadata-document;
/// MCP authorization spec 2025-11-25, "Client ID Metadata Documents"): a public client (no
/// secret) whose only redirect is the provider's callback.
pub fn client_metadata_document(client_id: &str, provider_name: &str, redirect_uri: &str) -> Value {
    let mut doc = client_metadata(provider_name, redirect_uri);
    doc["client_id"] = Value::from(client_id);
    doc
}

/// What Valet says about itself as a client, in a metadata document or a registration request.
fn client_metadata(provider_name: &str, redirect_uri: &str) -> Value {
    json!({
        "client_name": format!("Valet ({provider_name})"),
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "application_type": application_type(redirect_uri),
    })
}

/// A client registered dynamically.
#[derive(Debug)]
pub struct Registered {
    pub client_id: String,
    /// Present when the authorization server made a confidential client.
    pub client_secret: Option<crate::secret::SecretString>,
    /// `client_secret_post` when the server said so; otherwise Basic (or none, without secret).
    pub secret_in_body: bool,
}

/// RFC 7591 dynamic client registration: a public client with the provider's callback, the
/// authorization-code and refresh grants, and `application_type` (MCP 2026-07-28 requires it).
pub async fn register(
    f: &Fetcher,
    endpoint: &Url,
    provider_name: &str,
    redirect_uri: &str,
    scope: Option<&str>,
) -> Result<Registered, DiscoveryError> {
    let mut body = client_metadata(provider_name, redirect_uri);
    if let Some(s) = scope.filter(|s| !s.is_empty()) {
        body["scope"] = Value::from(s);
    }
    let answer = f.post_json(endpoint, &body).await?;
    let refused = |why: String| DiscoveryError::Refused(why);
    let doc = match (answer.status, answer.json_object()) {
        (200 | 201, Some(doc)) => doc,
        (status, doc) => {
            // RFC 7591 section 3.2.2: an error code (never echo the rest of the body).
            let code = doc
                .as_ref()
                .and_then(|d| d.get("error"))
                .and_then(Value::as_str)
                .map(crate::oauth::safe_code)
                .unwrap_or_default();
            return Err(refused(format!(
                "dynamic client registration at {} was refused (HTTP {status}{}{code})",
                crate::net::shown(endpoint),
                if code.is_empty() { "" } else { ": " }
            )));
        }
    };
    let client_id = doc
        .get("client_id")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| refused("the registration answer has no client_id".into()))?
        .to_owned();
    let client_secret = doc
        .get("client_secret")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(crate::secret::SecretString::from);
    let secret_in_body = doc
        .get("token_endpoint_auth_method")
        .and_then(Value::as_str)
        == Some("client_secret_post");
    Ok(Registered {
        client_id,
        client_secret,
        secret_in_body,
    })
}
