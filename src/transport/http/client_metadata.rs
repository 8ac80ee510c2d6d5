//! `GET /oauth/client-metadata/{provider_id}`: the Client ID Metadata Document of an MCP
//! provider registered with one (its URL is the client id the authorization server fetches).

use super::HttpState;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

pub(super) async fn client_metadata(
    State(s): State<HttpState>,
    Path(provider_id): Path<String>,
) -> Response {
    match s.credentials.client_metadata_document(&provider_id) {
        Some(doc) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            doc.to_string(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no client metadata document: no mcp provider with this id registered with one",
        )
            .into_response(),
    }
}
