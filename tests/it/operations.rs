//! Operating Valet: `/metrics` after a consent flow, a refresh and a denied call, read with a
//! Prometheus text-format parser; request logs as JSON lines with the documented fields; neither
//! names a user, a token or a secret; and spans exported over OTLP to a collector double.

use crate::support::daemon::{ADMIN_KEY, AGENT_KEY, OTHER_AGENT_KEY};
use crate::support::idp::secret_of;
use crate::support::{Fixture, ValetOptions, expect_err, token};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use tonic::Code;
use valet::pb;

/// The value of the sample `name` whose labels include `labels` (0 when absent: a counter that
/// never moved is not exported).
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{name} is not a plain sample"),
        })
        .sum()
}

async fn scrape(f: &Fixture) -> (String, prometheus_parse::Scrape) {
    let resp = reqwest::get(format!("http://{}/metrics", f.valet.http_addr))
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = resp.text().await.unwrap();
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("the exposition parses");
    (text, parsed)
}

#[tokio::test]
async fn metrics_and_request_logs_follow_a_flow_a_refresh_and_a_denied_call() {
    // The default log format: stderr is a pipe here, so JSON lines.
    let f = Fixture::with(ValetOptions {
        log_format: "",
        ..Default::default()
    })
    .await;
    f.oidc_provider("idp", "basic-client").await;
    let (_, before) = scrape(&f).await;
    assert_eq!(sample(&before, "valet_build_info", &[]), 1.0);
    assert_eq!(sample(&before, "valet_flows_started_total", &[]), 0.0);

    let first = f
        .authorize(AGENT_KEY, Fixture::request("idp", "alice", ""))
        .await;
    let refreshed = token(
        f.authenticate(AGENT_KEY, Fixture::refresh_request("idp", "alice", ""))
            .await,
    );
    assert_ne!(first.access_token, refreshed.access_token);
    let mut other = f.valet.credentials(OTHER_AGENT_KEY).await;
    expect_err(
        other
            .authenticate(Fixture::request("idp", "alice", "planner"))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );

    let (text, after) = scrape(&f).await;
    let idp = [("provider", "idp")];
    assert_eq!(sample(&after, "valet_flows_started_total", &idp), 1.0);
    assert_eq!(sample(&after, "valet_flows_completed_total", &idp), 1.0);
    assert_eq!(
        sample(
            &after,
            "valet_refreshes_total",
            &[("provider", "idp"), ("outcome", "ok")]
        ),
        1.0
    );
    assert!(sample(&after, "valet_refresh_duration_seconds_count", &idp) >= 1.0);
    // The code exchange and the refresh.
    assert!(sample(&after, "valet_token_endpoint_duration_seconds_count", &idp) >= 2.0);
    assert!(
        sample(
            &after,
            "valet_handouts_total",
            &[("provider", "idp"), ("kind", "token")]
        ) >= 1.0
    );
    assert_eq!(
        sample(
            &after,
            "valet_denied_calls_total",
            &[("reason", "PERMISSION_DENIED")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "valet_rpc_requests_total",
            &[("method", "Authenticate"), ("outcome", "PERMISSION_DENIED")]
        ),
        1.0
    );
    assert!(
        sample(
            &after,
            "valet_store_operation_duration_seconds_count",
            &[("backend", "embedded"), ("operation", "put")]
        ) >= 2.0,
        "the grant was written, then its rotation"
    );
    assert_eq!(sample(&after, "valet_pending_flows", &[]), 0.0);
    for secret in [
        "alice",
        "planner",
        first.access_token.as_str(),
        refreshed.access_token.as_str(),
        AGENT_KEY,
        &secret_of("basic-client"),
    ] {
        assert!(!text.contains(secret), "the exposition names {secret:?}");
    }

    // One JSON line per RPC with the documented fields, and every line is JSON.
    let logs = f
        .valet
        .logs_once_they_contain("\"outcome\":\"PERMISSION_DENIED\"")
        .await;
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let requests: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "valet::request")
        .collect();
    let denied = requests
        .iter()
        .find(|l| l["outcome"] == "PERMISSION_DENIED")
        .expect("the denied call's request line");
    assert_eq!(denied["method"], "Authenticate");
    assert_eq!(denied["caller"], "agent-b");
    assert_eq!(denied["provider"], "idp");
    assert!(denied["latency_ms"].as_f64().is_some(), "{denied}");
    assert!(
        denied["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{denied}"
    );
    assert!(denied["timestamp"].is_string() && denied["level"] == "INFO");
    assert!(
        requests.len() >= 4,
        "create provider, two Authenticates before consent and after, the refresh, the denial"
    );
}

#[tokio::test]
async fn a_clients_request_id_is_logged_and_a_malformed_one_replaced() {
    let f = Fixture::with(ValetOptions {
        log_format: "json",
        ..Default::default()
    })
    .await;
    let mut providers = f.valet.providers().await;
    for id in ["trace-0123456789abcdef", "bad id with spaces", "trace-last"] {
        let mut req = tonic::Request::new(pb::ListProvidersRequest {});
        req.metadata_mut()
            .insert("x-request-id", id.parse().unwrap());
        providers.list_providers(req).await.unwrap();
    }
    // Lines are written in order: once the last call's line is there, so are the others.
    let logs = f.valet.logs_once_they_contain("trace-last").await;
    let ids: Vec<String> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["target"] == "valet::request" && l["method"] == "ListProviders")
        .map(|l| l["request_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3, "{logs}");
    assert_eq!(ids[0], "trace-0123456789abcdef");
    assert!(
        !ids[1].contains(' ') && !ids[1].is_empty(),
        "replaced: {}",
        ids[1]
    );
    // A call with a wrong key has its request line too (the runbook looks for it there), with
    // no trace of the key.
    let wrong = "valet_wrong-key-canary-0123456789";
    let mut stranger = f.valet.providers_as(wrong).await;
    let mut req = tonic::Request::new(pb::ListProvidersRequest {});
    req.metadata_mut()
        .insert("x-request-id", "trace-wrong-key".parse().unwrap());
    let refused = stranger.list_providers(req).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let logs = f.valet.logs_once_they_contain("trace-wrong-key").await;
    let line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["target"] == "valet::request" && l["request_id"] == "trace-wrong-key")
        .unwrap_or_else(|| panic!("{logs}"));
    assert_eq!(
        (&line["caller"], &line["outcome"]),
        (
            &serde_json::json!("-"),
            &serde_json::json!("UNAUTHENTICATED")
        )
    );
    assert!(!logs.contains("wrong-key-canary"), "{logs}");
    // SIGHUP without an [audit] file: said, not "audit file reopened".
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &f.valet.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let logs = f.valet.logs_once_they_contain("nothing to reopen").await;
    assert!(!logs.contains("audit file reopened"), "{logs}");
    // The start said which store, where (an environment variable may override the file).
    let opened = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "embedded store opened")
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(
        opened["data_dir"]
            .as_str()
            .is_some_and(|d| d.ends_with("data")),
        "{opened}"
    );
}

/// A collector double: the OpenTelemetry protocol's own `TraceService` (opentelemetry-proto) on
/// 127.0.0.1:0, keeping every span it is sent.
struct Collector(tokio::sync::mpsc::UnboundedSender<Span>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        for span in spans {
            let _ = self.0.send(span);
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn start_collector() -> (String, tokio::sync::mpsc::UnboundedReceiver<Span>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(tx)))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (endpoint, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_otlp_collector_as_children_of_the_callers_traceparent() {
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT: &str = "00f067aa0ba902b7";
    let (endpoint, mut received) = start_collector().await;
    let f = Fixture::with(ValetOptions {
        extra_toml: format!("[telemetry]\notlp_endpoint = \"{endpoint}\"\n"),
        ..Default::default()
    })
    .await;
    let mut req = tonic::Request::new(pb::ListProvidersRequest {});
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE}-{PARENT}-01").parse().unwrap(),
    );
    f.valet.providers().await.list_providers(req).await.unwrap();
    // A call that runs on a task of its own (it changes what is stored) stays in its trace.
    let mut req = tonic::Request::new(pb::RevokeRequest {
        provider_id: "idp".into(),
        user_id: "alice".into(),
        ..Default::default()
    });
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE}-{PARENT}-01").parse().unwrap(),
    );
    let _ = f.valet.credentials(AGENT_KEY).await.revoke(req).await;
    // Stopping flushes what the batch processor still holds.
    let mut valet = f.valet;
    tokio::task::spawn_blocking(move || assert!(valet.stop().success()))
        .await
        .unwrap();
    let mut spans = Vec::new();
    while let Ok(Some(span)) =
        tokio::time::timeout(std::time::Duration::from_secs(5), received.recv()).await
    {
        spans.push(span);
        let count = |name: &str| spans.iter().filter(|s| s.name == name).count();
        if count("rpc") >= 2 && count("grpc") >= 2 {
            break;
        }
    }
    let grpc = spans
        .iter()
        .find(|s| s.name == "grpc" && hex::encode(&s.trace_id) == TRACE)
        .unwrap_or_else(|| panic!("the request span in the caller's trace: {spans:?}"));
    assert_eq!(hex::encode(&grpc.parent_span_id), PARENT);
    let rpcs: Vec<_> = spans.iter().filter(|s| s.name == "rpc").collect();
    assert_eq!(rpcs.len(), 2, "{spans:?}");
    for rpc in rpcs {
        assert_eq!(hex::encode(&rpc.trace_id), TRACE);
        assert!(
            spans
                .iter()
                .any(|g| g.name == "grpc" && g.span_id == rpc.parent_span_id),
            "the rpc span is a child of its request's: {spans:?}"
        );
    }
    let exported = format!("{spans:?}");
    assert!(
        exported.contains("ListProviders") && exported.contains("Revoke"),
        "{exported}"
    );
    assert!(!exported.contains(ADMIN_KEY), "no key in a span");
}
