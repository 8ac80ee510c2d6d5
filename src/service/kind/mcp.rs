//! Kind `mcp`: an OAuth-protected MCP server, from its URL alone. Discovery and registration
//! (`crate::mcp`) run when the provider is created or updated; consent, refresh and storage are
//! the authorization-code grant's, with the server's canonical URI as the RFC 8707 `resource` of
//! every request so its tokens are good only there.

use super::KindContext;
use crate::domain::{
    AuthCode, ConsentFlow, McpRegistration, McpServer, OAuthClient, ProviderDraft, Separator,
    TokenAuthMethod, check_endpoint_url,
};
use crate::mcp::{self, Discovered};
use crate::service::Error;

const FIELD: &str = "mcp_server_url";

pub(super) async fn validate(d: &ProviderDraft, ctx: KindContext<'_>) -> Result<AuthCode, Error> {
    for (field, value) in [
        ("auth_url", &d.auth_url),
        ("token_url", &d.token_url),
        ("issuer", &d.issuer),
        ("revocation_url", &d.revocation_url),
        ("device_authorization_url", &d.device_authorization_url),
    ] {
        if !value.is_empty() {
            return Err(Error::invalid(
                field,
                "is discovered from the MCP server (mcp_server_url) for mcp providers; leave it empty",
            ));
        }
    }
    if d.consent_flow != ConsentFlow::Browser {
        return Err(Error::invalid(
            "consent_flow",
            "mcp providers use the browser flow (the MCP authorization spec has no device flow)",
        ));
    }
    if d.mcp_server_url.is_empty() {
        return Err(Error::invalid(
            FIELD,
            "is required for mcp providers: the MCP server's URL, e.g. https://mcp.example.com/mcp",
        ));
    }
    let server = url::Url::parse(&d.mcp_server_url)
        .map_err(|_| Error::invalid(FIELD, "is not an absolute URL"))?;
    ctx.fetcher
        .check(&server)
        .map_err(|e| Error::invalid(FIELD, e.to_string()))?;
    let found = mcp::discover(ctx.fetcher, &server)
        .await
        .map_err(|e| Error::invalid(FIELD, format!("MCP discovery failed: {e}")))?;
    let insecure = ctx.allow_insecure_urls;
    let auth_url = check_endpoint_url(FIELD, found.authorization_endpoint.as_str(), insecure)?;
    let token_url = check_endpoint_url(FIELD, found.token_endpoint.as_str(), insecure)?;
    let (client_id, client_secret, auth_method, registration) = client(d, ctx, &found).await?;
    Ok(AuthCode {
        client: OAuthClient {
            provider: d.id.clone(),
            client_id,
            client_secret,
            auth_method,
            signing_key: None,
            token_exchange: false,
            token_url,
            dialect: d.dialect.clone(),
            resource: Some(found.resource.clone()),
        },
        auth_url,
        issuer: Some(found.issuer.clone()),
        revocation_url: found
            .revocation_endpoint
            .as_ref()
            .map(|u| check_endpoint_url(FIELD, u.as_str(), insecure))
            .transpose()?,
        extra_auth_params: d.extra_auth_params.clone(),
        scope_param: "scope".into(),
        scope_separator: Separator::Space,
        consent_flow: ConsentFlow::Browser,
        device_authorization_url: None,
        iss_required: found.iss_in_response,
        consent_return_url: (!d.consent_return_url.is_empty())
            .then(|| check_endpoint_url("consent_return_url", &d.consent_return_url, insecure))
            .transpose()?,
        allow_account_change: d.allow_account_change,
        mcp: Some(McpServer {
            server_url: server,
            resource: found.resource,
            issuer: found.issuer,
            registration,
            registration_endpoint: found.registration_endpoint,
            default_scopes: found.challenged_scope.as_deref().map_or_else(
                || found.scopes_supported.clone(),
                |s| s.split_whitespace().map(str::to_owned).collect(),
            ),
            scopes_supported: found.scopes_supported,
        }),
    })
}

type Client = (
    String,
    Option<crate::secret::SecretString>,
    TokenAuthMethod,
    McpRegistration,
);

/// The registration ladder (MCP authorization spec 2025-11-25, "Client Registration
/// Approaches"): the operator's client; else the one registered before at this same
/// authorization server (never reused at another); else a Client ID Metadata Document when the
/// server supports it and Valet's public URL is https; else dynamic registration.
async fn client(
    d: &ProviderDraft,
    ctx: KindContext<'_>,
    found: &Discovered,
) -> Result<Client, Error> {
    let by_valet = ctx
        .current
        .and_then(|c| c.kind.auth_code())
        .and_then(|c| c.mcp.as_ref().map(|m| (c, m)))
        .filter(|(_, m)| m.registration != McpRegistration::PreRegistered);
    // The client id Valet registered, sent back on an update, is not an operator's client.
    let echoed = by_valet.is_some_and(|(c, _)| c.client.client_id == d.client_id);
    if !d.client_id.is_empty() && !echoed {
        crate::domain::check_client(&d.client_id, &d.extra_auth_params)?;
        let sent_to: Vec<&url::Url> = std::iter::once(&found.token_endpoint)
            .chain(&found.revocation_endpoint)
            .collect();
        let secret = super::client_auth::client_secret(d, ctx.current, &sent_to)?;
        return Ok((
            d.client_id.clone(),
            secret,
            d.token_auth_method.unwrap_or_default(),
            McpRegistration::PreRegistered,
        ));
    }
    if d.client_secret.is_some() {
        return Err(Error::invalid(
            "client_secret",
            "goes with a client_id registered at the authorization server; leave both empty to let Valet register",
        ));
    }
    // Registered at this same authorization server before: kept. Another one: registered
    // again (a registration is never reused across authorization servers).
    if let Some((c, m)) = by_valet.filter(|(_, m)| m.issuer == found.issuer) {
        return Ok((
            c.client.client_id.clone(),
            c.client.client_secret.clone(),
            c.client.auth_method,
            m.registration,
        ));
    }
    if found.client_id_metadata_document_supported && ctx.public_url.scheme() == "https" {
        return Ok((
            mcp::metadata_document_url(ctx.public_url, &d.id),
            None,
            TokenAuthMethod::ClientSecretBasic,
            McpRegistration::MetadataDocument,
        ));
    }
    let Some(endpoint) = &found.registration_endpoint else {
        return Err(Error::invalid(
            "client_id",
            format!(
                "the authorization server {} offers neither client ID metadata documents (which also need an https public_url) nor dynamic registration: register a client there and pass its client_id",
                found.issuer
            ),
        ));
    };
    // Every scope the server names (a narrower registration would make a later step-up
    // `invalid_scope`), else none.
    let mut scopes = found.scopes_supported.clone();
    for s in found
        .challenged_scope
        .iter()
        .flat_map(|s| s.split_whitespace())
    {
        if !scopes.iter().any(|k| k == s) {
            scopes.push(s.to_owned());
        }
    }
    let scope = (!scopes.is_empty()).then(|| scopes.join(" "));
    let registered = mcp::register(
        ctx.fetcher,
        endpoint,
        &d.id,
        ctx.redirect_uri,
        scope.as_deref(),
    )
    .await
    .map_err(|e| Error::invalid(FIELD, format!("client registration failed: {e}")))?;
    let method = if registered.secret_in_body {
        TokenAuthMethod::ClientSecretPost
    } else {
        TokenAuthMethod::ClientSecretBasic
    };
    Ok((
        registered.client_id,
        registered.client_secret,
        method,
        McpRegistration::Dynamic,
    ))
}
