//! The HTTP listener: `GET /oauth/callback/{provider_id}` (the OAuth redirect target, answering
//! with a small page) and `GET /healthz`. The query string is never logged: it carries the code.

use crate::secret::SecretString;
use crate::service::{Broker, CallbackParams, Error};
use crate::store::SecretStore;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Longest callback query accepted.
const MAX_QUERY: usize = 8 * 1024;

#[derive(Clone)]
pub struct HttpState {
    pub broker: Arc<Broker>,
    pub store: Arc<dyn SecretStore>,
    /// Cleared when shutdown starts, so load balancers stop sending traffic.
    pub serving: Arc<AtomicBool>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/oauth/callback/{provider_id}", get(callback))
        .route("/healthz", get(healthz))
        .with_state(state)
}

async fn healthz(State(s): State<HttpState>) -> Response {
    if !s.serving.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match s.store.check().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            tracing::warn!("health check: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "secret store unavailable\n",
            )
                .into_response()
        }
    }
}

fn parse_query(raw: Option<&str>) -> Result<CallbackParams, &'static str> {
    let raw = raw.unwrap_or("");
    if raw.len() > MAX_QUERY {
        return Err("The callback query is too long.");
    }
    let mut p = CallbackParams::default();
    for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
        let dup = match k.as_ref() {
            "state" => p.state.replace(v.into_owned()).is_some(),
            "code" => p.code.replace(SecretString::from(v.into_owned())).is_some(),
            "error" => p.error.replace(v.into_owned()).is_some(),
            "iss" => p.iss.replace(v.into_owned()).is_some(),
            _ => false,
        };
        if dup {
            return Err("The callback repeats a parameter.");
        }
    }
    Ok(p)
}

async fn callback(
    State(s): State<HttpState>,
    Path(provider_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match parse_query(query.as_deref()) {
        Ok(p) => p,
        Err(msg) => return page(StatusCode::BAD_REQUEST, "Authorization failed", msg),
    };
    match s.broker.complete_callback(&provider_id, params).await {
        Ok(()) => page(
            StatusCode::OK,
            "Authorization complete",
            "Valet has the credential. You can close this window and return to your agent.",
        ),
        Err(e) => {
            let status = match &e {
                Error::NotFound { .. } => StatusCode::NOT_FOUND,
                Error::InvalidArgument(_) | Error::Flow(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::BAD_GATEWAY,
            };
            tracing::info!(reason = e.reason(), "callback refused: {e}");
            page(status, "Authorization failed", &e.to_string())
        }
    }
}

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Valet: {t}</title></head>\
         <body style=\"font-family:sans-serif;max-width:36em;margin:4em auto\">\
         <h1>{t}</h1><p>{m}</p></body></html>\n",
        t = escape(title),
        m = escape(message)
    );
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        let p = parse_query(Some("code=abc&state=s&iss=http%3A%2F%2Fx")).unwrap();
        assert_eq!(p.state.as_deref(), Some("s"));
        assert_eq!(p.iss.as_deref(), Some("http://x"));
        assert!(parse_query(Some("state=a&state=b")).is_err());
        assert!(parse_query(Some(&"a".repeat(MAX_QUERY + 1))).is_err());
        assert!(parse_query(None).unwrap().state.is_none());
    }

    #[test]
    fn escapes_html() {
        assert_eq!(escape("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
    }
}
