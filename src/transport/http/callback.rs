//! `GET /oauth/callback/{provider_id}`: the OAuth redirect target. Finishes the flow and answers
//! with a small page. The query string is never logged: it carries the code.

use super::{HttpState, http_status};
use crate::secret::SecretString;
use crate::service::{CallbackDone, CallbackParams};
use crate::transport::{reason_name, report};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

/// Longest callback query accepted.
const MAX_QUERY: usize = 8 * 1024;

pub(crate) fn parse_query(raw: Option<&str>) -> Result<CallbackParams, &'static str> {
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
            // Every other one, for a profile's `callback_metadata` (the query is bounded).
            name => {
                p.extra.push((name.to_owned(), v.into_owned()));
                false
            }
        };
        if dup {
            return Err("The callback repeats a parameter.");
        }
    }
    Ok(p)
}

pub(super) async fn callback(
    State(s): State<HttpState>,
    headers: axum::http::HeaderMap,
    Path(provider_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match parse_query(query.as_deref()) {
        Ok(p) => p,
        Err(msg) => return page(StatusCode::BAD_REQUEST, "Authorization failed", msg),
    };
    // A flow another replica started is completed there (one hop; the owner's address comes
    // from the store, never from the request).
    if !super::forward::was_forwarded(&headers)
        && crate::domain::ProviderId::parse(&provider_id).is_ok()
        && let Some(owner) = s.credentials.callback_owner(params.state.as_deref()).await
    {
        return super::forward::to_owner(&s.replicas, &owner, &provider_id, query.as_deref())
            .await
            .unwrap_or_else(|| {
                page(
                    StatusCode::BAD_GATEWAY,
                    "Authorization failed",
                    "The Valet replica that started this authorization cannot be reached. Start again from your agent.",
                )
            });
    }
    let span = tracing::info_span!(
        "callback",
        provider = tracing::field::Empty,
        outcome = tracing::field::Empty
    );
    crate::telemetry::adopt_parent(&span, &headers);
    // Only a well-formed id is recorded; anything else is input, not a log field.
    let provider = crate::domain::ProviderId::parse(&provider_id)
        .map(|id| id.to_string())
        .unwrap_or_default();
    span.record("provider", provider.as_str());
    let started = std::time::Instant::now();
    // On its own task: a browser that goes away mid-exchange does not cut the exchange off (the
    // state is already spent; the grant is stored and the agent's waiters learn the outcome).
    let credentials = s.credentials.clone();
    let exchange = async move { credentials.complete_callback(&provider_id, params).await };
    let result = crate::service::tasks::detached(
        "the callback's task ended",
        exchange.instrument(span.clone()),
    )
    .await
    .and_then(|r| r);
    let _entered = span.enter();
    let outcome = result
        .as_ref()
        .map_or_else(|e| reason_name(e.reason()), |_| "ok");
    span.record("outcome", outcome);
    tracing::info!(
        target: "valet::request",
        method = "callback",
        provider = %provider,
        outcome,
        latency_ms = crate::telemetry::millis(started.elapsed()),
        request_id = %crate::telemetry::new_request_id(),
        "callback"
    );
    match result {
        Ok(CallbackDone::Bind(to)) => bind_redirect(&to),
        Ok(CallbackDone::Stored(declined)) if declined.is_empty() => page(
            StatusCode::OK,
            "Authorization complete",
            "Valet has the credential. You can close this window and return to your agent.",
        ),
        Ok(CallbackDone::Stored(declined)) => page(
            StatusCode::OK,
            "Authorization complete, with fewer permissions",
            &format!(
                "Valet has the credential, but these permissions were not granted: {}. \
                 Your agent may not be able to do everything it asked for. You can close this \
                 window and return to your agent.",
                declined.to_vec().join(", ")
            ),
        ),
        // A link opened twice (a reload, the back button) or after its flow ended: say what
        // that usually means, rather than only that something was not found.
        Err(e) if e.class() == crate::service::Class::NotFound => {
            report(&e);
            page(
                http_status(e.class()),
                "This authorization link is no longer valid",
                "Each link works once, for a limited time: it was already used, or it expired, \
                 or Valet restarted since it was issued. If you just granted access here and \
                 your agent now has it, there is nothing more to do; otherwise start again from \
                 your agent.",
            )
        }
        Err(e) => {
            report(&e);
            page(
                http_status(e.class()),
                "Authorization failed",
                &e.to_string(),
            )
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

/// Consent binding: 303 to the operator's configured return URL (never a URL from the request),
/// carrying the one-time session; nothing cached, no referrer leaked.
fn bind_redirect(to: &url::Url) -> Response {
    let Ok(location) = HeaderValue::from_str(to.as_str()) else {
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Authorization failed",
            "The return URL is not a valid header value.",
        );
    };
    let mut resp = StatusCode::SEE_OTHER.into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

pub(super) fn page(status: StatusCode, title: &str, message: &str) -> Response {
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

    /// Other parameters are kept for a profile's `callback_metadata` (Intuit's `realmId`): one
    /// named once, printable; a repeated one, a control character or an oversized one is not
    /// kept, and none of them fails the callback. Debug shows names only.
    #[test]
    fn other_parameters_are_kept_for_callback_metadata() {
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let p = parse_query(Some(
            "code=abc&state=s&realmId=9130357&twice=1&twice=2&ctl=a%0Ab&empty=",
        ))
        .unwrap();
        assert_eq!(
            p.metadata(&names(&["realmId", "twice", "ctl", "empty", "absent"])),
            [("realmId".to_owned(), "9130357".to_owned())]
        );
        let debug = format!("{p:?}");
        assert!(
            debug.contains("realmId") && !debug.contains("9130357"),
            "{debug}"
        );
        // However many come before it, and a repeat however late.
        let many: String = (0..40).map(|i| format!("p{i}=v&")).collect();
        let p = parse_query(Some(&format!("{many}realmId=1&twice=1&{many}twice=2"))).unwrap();
        assert_eq!(
            p.metadata(&names(&["realmId", "twice"])),
            [("realmId".to_owned(), "1".to_owned())]
        );
        let long = parse_query(Some(&format!("big={}", "x".repeat(300)))).unwrap();
        assert!(
            long.metadata(&names(&["big"])).is_empty(),
            "too long to keep"
        );
    }

    #[test]
    fn escapes_html() {
        assert_eq!(escape("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
    }

    proptest::proptest! {
        /// Whatever a browser (or attacker) puts in the query, parsing answers and never panics.
        #[test]
        fn the_callback_parser_never_panics(raw in proptest::prelude::any::<String>()) {
            crate::fuzzing::callback_query(raw.as_bytes());
        }

        /// Encoded parameters come back exactly; a repeated one is refused.
        #[test]
        fn callback_parameters_round_trip(
            state in "[ -~]{0,64}",
            code in "[ -~]{0,64}",
            iss in proptest::option::of("[ -~]{0,64}"),
            repeat in proptest::prelude::any::<bool>(),
        ) {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            q.append_pair("state", &state).append_pair("code", &code);
            if let Some(i) = &iss {
                q.append_pair("iss", i);
            }
            if repeat {
                q.append_pair("state", "again");
            }
            let parsed = parse_query(Some(&q.finish()));
            if repeat {
                proptest::prop_assert!(parsed.is_err());
            } else {
                let p = parsed.unwrap();
                proptest::prop_assert_eq!(p.state.as_deref(), Some(state.as_str()));
                proptest::prop_assert_eq!(
                    p.code.as_ref().map(crate::secret::ExposeSecret::expose_secret),
                    Some(code.as_str())
                );
                proptest::prop_assert_eq!(p.iss, iss);
            }
        }
    }
}
