//! From an MCP server's URL to its authorization server, as the MCP authorization spec
//! (revision 2025-11-25, unchanged in 2026-07-28) orders it:
//! <https://modelcontextprotocol.io/specification/2025-11-25/basic/authorization>.
//!
//! 1. An unauthenticated request; a `401` names the protected resource metadata in its
//!    `WWW-Authenticate` `resource_metadata` (RFC 9728 section 5.1), else the well-known URLs are
//!    tried, path-inserted then root (RFC 9728 section 3.1).
//! 2. The metadata's `resource` must be this server (RFC 9728 section 3.3); its first
//!    `authorization_servers` entry is the issuer.
//! 3. The issuer's metadata: RFC 8414 path-inserted, OpenID discovery path-inserted, OpenID
//!    discovery path-appended (an issuer without a path: RFC 8414, then OpenID); its `issuer`
//!    must be exactly the one the URL was built from (RFC 8414 section 3.3).
//! 4. PKCE S256 must be advertised (`code_challenge_methods_supported`); absent is a refusal.

use super::fetch::{FetchError, Fetcher};
use crate::net::shown;
use serde_json::{Map, Value};
use url::Url;

/// What discovery learned about one MCP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// The canonical resource URI (RFC 8707 `resource`), as the server's metadata names it.
    pub resource: String,
    pub issuer: String,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    pub registration_endpoint: Option<Url>,
    pub revocation_endpoint: Option<Url>,
    /// The server's `scopes_supported` (protected resource metadata).
    pub scopes_supported: Vec<String>,
    /// The scope the server's `401` challenge asked for, if any.
    pub challenged_scope: Option<String>,
    pub client_id_metadata_document_supported: bool,
    pub iss_in_response: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{0}")]
    Refused(String),
}

fn refused(m: impl Into<String>) -> DiscoveryError {
    DiscoveryError::Refused(m.into())
}

/// The canonical form of an MCP server URL (RFC 8707 section 2; MCP "Canonical Server URI"):
/// absolute, no fragment, lowercase scheme and host (as `Url` parses), and no `/` for a root
/// path.
pub fn canonical(url: &Url) -> Result<String, DiscoveryError> {
    if url.fragment().is_some() {
        return Err(refused("an MCP server URL may not have a fragment"));
    }
    if url.host_str().is_none() || url.cannot_be_a_base() {
        return Err(refused("an MCP server URL must be an absolute http(s) URL"));
    }
    let s = url.to_string();
    Ok(if url.path() == "/" && url.query().is_none() {
        s.trim_end_matches('/').to_owned()
    } else {
        s
    })
}

/// The parameters of a `Bearer` challenge (RFC 6750 section 3, RFC 9110 section 11.6.1);
/// `None` when the header holds no Bearer challenge.
pub fn bearer_params(header: &str) -> Option<Vec<(String, String)>> {
    let at = header.to_ascii_lowercase().find("bearer")?;
    let mut rest = &header[at + "bearer".len()..];
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', ',', '\t']);
        let Some(eq) = rest.find('=') else { break };
        let name = rest[..eq].trim();
        if name.is_empty() || name.contains([' ', ',', '"']) {
            // Another challenge's scheme starts here.
            break;
        }
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            value = v;
            rest = &quoted[end.min(quoted.len())..];
        } else {
            let end = rest.find([',', ' ']).unwrap_or(rest.len());
            value = rest[..end].to_owned();
            rest = &rest[end..];
        }
        params.push((name.to_ascii_lowercase(), value));
    }
    Some(params)
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A `/.well-known/{suffix}` URL for `base`, inserted before its path (RFC 8414 section 3.1,
/// RFC 9728 section 3.1).
fn well_known_inserted(base: &Url, suffix: &str) -> Url {
    let mut u = base.clone();
    let path = base.path().trim_end_matches('/');
    u.set_path(&format!("/.well-known/{suffix}{path}"));
    u.set_query(None);
    u.set_fragment(None);
    u
}

/// A URL a server's document supplies, before it is shown in any message: an absolute URL of
/// at most 2048 characters without control characters, so an error or log line never carries a
/// remote server's arbitrary text.
fn checked_url(what: &str, raw: &str) -> Result<(), DiscoveryError> {
    if raw.len() > 2048 || raw.chars().any(char::is_control) || Url::parse(raw).is_err() {
        return Err(refused(format!(
            "the protected resource metadata gives {what} as something other than a URL"
        )));
    }
    Ok(())
}

/// [`shown`] for a URL `checked_url` accepted.
fn shown_str(raw: &str) -> String {
    crate::net::shown_text(raw).unwrap_or_else(|| "a URL".into())
}

fn parse_url(field: &str, raw: &str) -> Result<Url, DiscoveryError> {
    Url::parse(raw).map_err(|_| refused(format!("{field} is not a URL")))
}

/// Runs discovery for the MCP server at `server`.
pub async fn discover(f: &Fetcher, server: &Url) -> Result<Discovered, DiscoveryError> {
    let resource_uri = canonical(server)?;
    // 1. The unauthenticated request.
    let probe = f.get(server).await?;
    let challenge = probe
        .challenges
        .iter()
        .find_map(|h| bearer_params(h))
        .unwrap_or_default();
    let challenged_scope = param(&challenge, "scope").map(str::to_owned);
    let candidates = match param(&challenge, "resource_metadata") {
        Some(url) => vec![parse_url("the challenge's resource_metadata", url)?],
        None => {
            let mut c = vec![well_known_inserted(server, "oauth-protected-resource")];
            let mut root = server.clone();
            root.set_path("/.well-known/oauth-protected-resource");
            root.set_query(None);
            if !c.contains(&root) {
                c.push(root);
            }
            c
        }
    };
    let mut tried = Vec::new();
    let mut prm = None;
    for url in &candidates {
        let got = f.get(url).await?;
        match (got.status, got.json_object()) {
            (200, Some(doc)) => {
                prm = Some(doc);
                break;
            }
            (status, _) => tried.push(format!("{} (HTTP {status})", shown(url))),
        }
    }
    let prm = prm.ok_or_else(|| {
        refused(format!(
            "no protected resource metadata (RFC 9728) for this MCP server; tried {}",
            tried.join(", ")
        ))
    })?;
    // 2. The resource must be this server.
    let resource = prm
        .get("resource")
        .and_then(Value::as_str)
        .ok_or_else(|| refused("the protected resource metadata has no resource"))?;
    checked_url("its resource", resource)?;
    if !same_resource(resource, &resource_uri) {
        return Err(refused(format!(
            "the protected resource metadata is for {}, not for {}",
            shown_str(resource),
            shown_str(&resource_uri)
        )));
    }
    let issuer = prm
        .get("authorization_servers")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .ok_or_else(|| refused("the protected resource metadata names no authorization_servers"))?
        .to_owned();
    checked_url("its authorization server", &issuer)?;
    let scopes_supported = strings(&prm, "scopes_supported");
    // 3. The authorization server's metadata.
    let meta = authorization_server(f, &issuer).await?;
    // 4. PKCE S256.
    if !strings(&meta, "code_challenge_methods_supported")
        .iter()
        .any(|m| m == "S256")
    {
        return Err(refused(format!(
            "the authorization server {issuer} does not advertise PKCE S256 (code_challenge_methods_supported); the MCP authorization spec requires it"
        )));
    }
    let endpoint = |field: &str| -> Result<Option<Url>, DiscoveryError> {
        meta.get(field)
            .and_then(Value::as_str)
            .map(|u| parse_url(field, u))
            .transpose()
    };
    Ok(Discovered {
        resource: resource.to_owned(),
        authorization_endpoint: endpoint("authorization_endpoint")?.ok_or_else(|| {
            refused(format!(
                "the authorization server {issuer} has no authorization_endpoint"
            ))
        })?,
        token_endpoint: endpoint("token_endpoint")?.ok_or_else(|| {
            refused(format!(
                "the authorization server {issuer} has no token_endpoint"
            ))
        })?,
        registration_endpoint: endpoint("registration_endpoint")?,
        revocation_endpoint: endpoint("revocation_endpoint")?,
        client_id_metadata_document_supported: meta
            .get("client_id_metadata_document_supported")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        iss_in_response: meta
            .get("authorization_response_iss_parameter_supported")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        issuer,
        scopes_supported,
        challenged_scope,
    })
}

/// RFC 9728 section 3.3 wants the identical resource; like the SDKs, a resource that is a
/// same-origin, `/`-bounded prefix of the server URL is accepted too (one metadata document
/// for several endpoints of one server).
fn same_resource(resource: &str, server: &str) -> bool {
    let resource = resource.trim_end_matches('/');
    let server = server.trim_end_matches('/');
    resource == server
        || (server.starts_with(resource)
            && server[resource.len()..].starts_with('/')
            && Url::parse(resource).is_ok_and(|r| !r.path().is_empty()))
}

fn strings(doc: &Map<String, Value>, field: &str) -> Vec<String> {
    doc.get(field)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The authorization server metadata of `issuer`, from the first URL in the spec's order that
/// answers with a document naming exactly that issuer.
async fn authorization_server(
    f: &Fetcher,
    issuer: &str,
) -> Result<Map<String, Value>, DiscoveryError> {
    let base = parse_url("the authorization server", issuer)?;
    let mut candidates = vec![well_known_inserted(&base, "oauth-authorization-server")];
    candidates.push(well_known_inserted(&base, "openid-configuration"));
    if !base.path().trim_matches('/').is_empty() {
        let mut appended = base.clone();
        appended.set_path(&format!(
            "{}/.well-known/openid-configuration",
            base.path().trim_end_matches('/')
        ));
        candidates.push(appended);
    }
    let mut tried = Vec::new();
    for url in &candidates {
        let got = f.get(url).await?;
        match (got.status, got.json_object()) {
            (200, Some(doc)) if doc.get("issuer").and_then(Value::as_str) == Some(issuer) => {
                return Ok(doc);
            }
            (200, Some(_)) => tried.push(format!("{} (names another issuer)", shown(url))),
            (status, _) => tried.push(format!("{} (HTTP {status})", shown(url))),
        }
    }
    Err(refused(format!(
        "no authorization server metadata for {issuer}; tried {}",
        tried.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_are_parsed() {
        let p = bearer_params(
            r#"Bearer error="insufficient_scope", scope="files:read files:write", resource_metadata="https://mcp.example/.well-known/oauth-protected-resource/mcp""#,
        )
        .unwrap();
        assert_eq!(param(&p, "error"), Some("insufficient_scope"));
        assert_eq!(param(&p, "scope"), Some("files:read files:write"));
        assert_eq!(
            param(&p, "resource_metadata"),
            Some("https://mcp.example/.well-known/oauth-protected-resource/mcp")
        );
        let p = bearer_params(r#"Basic realm="x", Bearer realm=api, scope="a\"b""#).unwrap();
        assert_eq!(param(&p, "realm"), Some("api"));
        assert_eq!(param(&p, "scope"), Some("a\"b"));
        assert!(bearer_params("Basic realm=\"x\"").is_none());
        assert_eq!(bearer_params("Bearer").unwrap(), vec![]);
    }

    #[test]
    fn well_known_urls_follow_the_spec_order() {
        let u = Url::parse("https://auth.example/tenant1/").unwrap();
        assert_eq!(
            well_known_inserted(&u, "oauth-authorization-server").as_str(),
            "https://auth.example/.well-known/oauth-authorization-server/tenant1"
        );
        let root = Url::parse("https://auth.example").unwrap();
        assert_eq!(
            well_known_inserted(&root, "openid-configuration").as_str(),
            "https://auth.example/.well-known/openid-configuration"
        );
    }

    #[test]
    fn server_supplied_urls_are_checked_before_they_are_shown() {
        assert!(checked_url("x", "https://auth.example/t").is_ok());
        for bad in [
            "not a url",
            "https://a.example/\nINJECTED",
            &"h".repeat(3000),
        ] {
            let e = checked_url("its resource", bad).unwrap_err().to_string();
            assert!(!e.contains("INJECTED") && e.len() < 200, "{e}");
        }
    }

    #[test]
    fn canonical_server_uris() {
        let c = |s: &str| canonical(&Url::parse(s).unwrap());
        assert_eq!(
            c("HTTPS://MCP.Example.com").unwrap(),
            "https://mcp.example.com"
        );
        assert_eq!(
            c("https://mcp.example.com/mcp").unwrap(),
            "https://mcp.example.com/mcp"
        );
        assert!(c("https://mcp.example.com/mcp#x").is_err());
        assert!(same_resource(
            "https://a.example/mcp",
            "https://a.example/mcp"
        ));
        assert!(same_resource(
            "https://a.example/api",
            "https://a.example/api/mcp"
        ));
        assert!(!same_resource(
            "https://a.example/mc",
            "https://a.example/mcp"
        ));
        assert!(!same_resource(
            "https://b.example/mcp",
            "https://a.example/mcp"
        ));
    }
}
