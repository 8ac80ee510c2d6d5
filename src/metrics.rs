//! Prometheus metrics, served as OpenMetrics text at `GET /metrics` (the HTTP listener, or
//! `metrics_listen`). Counters follow the audit trail: every event `Audit::record` takes is
//! counted here from its name, provider and outcome, so the two never disagree; durations are
//! observed where the work happens (the gRPC `rpc` helper, the refresh, the token endpoint and
//! the store decorators). Every label value comes from a closed set: method, event, reason and
//! outcome names from the code, store backends and operations, provider ids, which only an
//! operator creates and only a call that found its provider reports, and configured callers'
//! names. No user id, agent id, token,
//! reference or secret is ever a label.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rpc {
    method: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Method {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Provider {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Handout {
    provider: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderReason {
    provider: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderOutcome {
    provider: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReferenceEvent {
    provider: String,
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Delivery {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

/// A configured caller's name (an operator's closed set, as provider ids are).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallerName {
    caller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreCall {
    backend: &'static str,
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Build {
    version: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// 1 ms to about 33 s: a cached handout, a store round trip, a slow provider.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Outcomes of refreshes, as the broker records them in the audit trail.
const REFRESH_OUTCOMES: [(&str, &str); 4] = [
    ("ok", "ok"),
    ("REAUTHORIZATION_REQUIRED", "reauth"),
    ("unavailable", "unavailable"),
    ("failed", "error"),
];

/// One open watch stream (see `Metrics::stream_opened`).
#[derive(Debug)]
pub struct StreamGuard(std::sync::Arc<Metrics>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.watch_streams.dec();
    }
}

/// Every metric Valet exports, and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    rpc_requests: Family<Rpc, Counter>,
    rpc_duration: Histograms<Method>,
    handouts: Family<Handout, Counter>,
    flows_started: Family<Provider, Counter>,
    flows_completed: Family<Provider, Counter>,
    flows_failed: Family<ProviderReason, Counter>,
    flows_expired: Family<Provider, Counter>,
    pending_flows: Gauge,
    watch_streams: Gauge,
    webhook_deliveries: Family<Delivery, Counter>,
    refreshes: Family<ProviderOutcome, Counter>,
    refresh_duration: Histograms<Provider>,
    token_endpoint_duration: Histograms<Provider>,
    store_duration: Histograms<StoreCall>,
    store_errors: Family<StoreCall, Counter>,
    grants_needing_reauth: Family<Provider, Counter>,
    references: Family<ReferenceEvent, Counter>,
    denied_calls: Family<Reason, Counter>,
    previous_key_calls: Family<CallerName, Counter>,
    audit_events_lost: Counter,
    audit_file_failing: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("valet");
        let build = Family::<Build, Gauge>::default();
        build
            .get_or_create(&Build {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "Valet's version (always 1)", build);
        let m = Self {
            rpc_requests: Family::default(),
            rpc_duration: Histograms::new_with_constructor(latency),
            handouts: Family::default(),
            flows_started: Family::default(),
            flows_completed: Family::default(),
            flows_failed: Family::default(),
            flows_expired: Family::default(),
            pending_flows: Gauge::default(),
            watch_streams: Gauge::default(),
            webhook_deliveries: Family::default(),
            refreshes: Family::default(),
            refresh_duration: Histograms::new_with_constructor(latency),
            token_endpoint_duration: Histograms::new_with_constructor(latency),
            store_duration: Histograms::new_with_constructor(latency),
            store_errors: Family::default(),
            grants_needing_reauth: Family::default(),
            references: Family::default(),
            denied_calls: Family::default(),
            previous_key_calls: Family::default(),
            audit_events_lost: Counter::default(),
            audit_file_failing: Gauge::default(),
            registry,
        };
        m.register()
    }

    fn register(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "rpc_requests",
            "gRPC calls by method and outcome (OK or the ErrorInfo reason)",
            self.rpc_requests.clone(),
        );
        r.register_with_unit(
            "rpc_duration",
            "gRPC call latency by method",
            Unit::Seconds,
            self.rpc_duration.clone(),
        );
        r.register(
            "handouts",
            "Credentials handed to agents by provider and kind (token, reference, credential)",
            self.handouts.clone(),
        );
        r.register(
            "flows_started",
            "Consent flows started",
            self.flows_started.clone(),
        );
        r.register(
            "flows_completed",
            "Consent flows completed with a stored grant",
            self.flows_completed.clone(),
        );
        r.register(
            "flows_failed",
            "Consent flows that failed, by reason",
            self.flows_failed.clone(),
        );
        r.register(
            "flows_expired",
            "Consent flows that expired unanswered",
            self.flows_expired.clone(),
        );
        r.register(
            "pending_flows",
            "Consent flows waiting for their callback",
            self.pending_flows.clone(),
        );
        r.register(
            "webhook_deliveries",
            "Webhook deliveries by outcome (ok, or failed after every retry)",
            self.webhook_deliveries.clone(),
        );
        r.register(
            "watch_streams",
            "Open WatchAuthorization and WatchGrants streams",
            self.watch_streams.clone(),
        );
        r.register(
            "refreshes",
            "Grant refreshes by outcome (ok, reauth, unavailable, error)",
            self.refreshes.clone(),
        );
        r.register_with_unit(
            "refresh_duration",
            "Grant refresh latency, claim to stored rotation",
            Unit::Seconds,
            self.refresh_duration.clone(),
        );
        r.register_with_unit(
            "token_endpoint_duration",
            "Provider token endpoint latency",
            Unit::Seconds,
            self.token_endpoint_duration.clone(),
        );
        r.register_with_unit(
            "store_operation_duration",
            "Secret store call latency by backend and operation",
            Unit::Seconds,
            self.store_duration.clone(),
        );
        r.register(
            "store_errors",
            "Secret store calls that failed (not conflicts or missing records)",
            self.store_errors.clone(),
        );
        r.register(
            "grants_needing_reauth",
            "Grants that became unusable and need the user's consent again",
            self.grants_needing_reauth.clone(),
        );
        r.register(
            "references",
            "References issued, resolved and refused",
            self.references.clone(),
        );
        r.register(
            "denied_calls",
            "Calls refused for who made them (permission, rate, user, quota), by reason",
            self.denied_calls.clone(),
        );
        r.register(
            "previous_key_calls",
            "Calls made with a caller's previous key (previous_key_sha256), by caller: once this \
             stops growing, no agent uses the old key and it can be removed",
            self.previous_key_calls.clone(),
        );
        r.register(
            "audit_events_lost",
            "Audit events the audit file did not take (a full disk, an I/O error): the trail's \
             chain breaks there",
            self.audit_events_lost.clone(),
        );
        r.register(
            "audit_file_failing",
            "1 while the audit file refuses writes (events wait in a small buffer, then are lost)",
            self.audit_file_failing.clone(),
        );
        self
    }

    /// The exposition, OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// One audit event (see `audit.rs`): `event` is an RPC method or a daemon event,
    /// `provider` empty unless the call found its provider, `outcome` "ok", a success label
    /// (`token`, `reference`, `flow_started`, …) or an ErrorInfo reason.
    pub fn event(&self, event: &str, provider: &str, outcome: &str) {
        let provider = provider.to_owned();
        match (event, outcome) {
            ("FlowCompleted", "ok") => {
                self.flows_completed
                    .get_or_create(&Provider { provider })
                    .inc();
            }
            ("FlowCompleted", "FLOW_EXPIRED") => {
                self.flows_expired
                    .get_or_create(&Provider { provider })
                    .inc();
            }
            ("FlowCompleted", reason) => {
                let reason = reason.to_owned();
                self.flows_failed
                    .get_or_create(&ProviderReason { provider, reason })
                    .inc();
            }
            ("GrantRefreshed", outcome) => {
                let outcome = REFRESH_OUTCOMES
                    .iter()
                    .find(|(audited, _)| *audited == outcome)
                    .map_or("error", |(_, label)| label);
                if outcome == "reauth" {
                    self.grants_needing_reauth
                        .get_or_create(&Provider {
                            provider: provider.clone(),
                        })
                        .inc();
                }
                self.refreshes
                    .get_or_create(&ProviderOutcome { provider, outcome })
                    .inc();
            }
            (
                "Authenticate" | "WaitForCompletion" | "WatchAuthorization",
                "token" | "reference",
            ) => {
                let kind = if outcome == "token" {
                    "token"
                } else {
                    "reference"
                };
                if kind == "reference" {
                    self.references
                        .get_or_create(&ReferenceEvent {
                            provider: provider.clone(),
                            event: "issued",
                        })
                        .inc();
                }
                self.handouts
                    .get_or_create(&Handout { provider, kind })
                    .inc();
            }
            ("Refused", reason) => self.denied(reason),
            ("WebhookDelivered", outcome) => {
                let outcome = if outcome == "ok" { "ok" } else { "failed" };
                self.webhook_deliveries
                    .get_or_create(&Delivery { outcome })
                    .inc();
            }
            ("Authenticate", "flow_started") => {
                self.flows_started
                    .get_or_create(&Provider { provider })
                    .inc();
            }
            ("Resolve", "ok") => {
                self.references
                    .get_or_create(&ReferenceEvent {
                        provider: provider.clone(),
                        event: "resolved",
                    })
                    .inc();
                self.handouts
                    .get_or_create(&Handout {
                        provider,
                        kind: "credential",
                    })
                    .inc();
            }
            _ => {}
        }
    }

    /// A finished gRPC call. `outcome` is "ok" or the ErrorInfo reason; `denied` says whether
    /// it was refused for who asked.
    pub fn rpc(&self, method: &'static str, outcome: &'static str, denied: bool, took: Duration) {
        self.rpc_requests
            .get_or_create(&Rpc { method, outcome })
            .inc();
        self.rpc_duration
            .get_or_create(&Method { method })
            .observe(took.as_secs_f64());
        if denied {
            self.denied(outcome);
        }
        if method == "Resolve" && outcome != "ok" {
            self.references
                .get_or_create(&ReferenceEvent {
                    provider: String::new(),
                    event: "denied",
                })
                .inc();
        }
    }

    /// A call refused before it reached a method (no key, rate limit) or by policy.
    pub fn denied(&self, reason: &str) {
        self.denied_calls
            .get_or_create(&Reason {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// A call made with `caller`'s previous key.
    pub fn previous_key_call(&self, caller: &str) {
        self.previous_key_calls
            .get_or_create(&CallerName {
                caller: caller.to_owned(),
            })
            .inc();
    }

    /// Audit events the audit file did not take.
    pub fn audit_events_lost(&self, n: u64) {
        self.audit_events_lost.inc_by(n);
    }

    /// Whether the audit file refuses writes now.
    pub fn audit_file_failing(&self, failing: bool) {
        self.audit_file_failing.set(i64::from(failing));
    }

    /// Counts an open watch stream until the guard is dropped (the stream ended or its caller
    /// went away).
    pub fn stream_opened(self: &std::sync::Arc<Self>) -> StreamGuard {
        self.watch_streams.inc();
        StreamGuard(self.clone())
    }

    pub fn set_pending_flows(&self, n: usize) {
        self.pending_flows.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn refresh_took(&self, provider: &str, took: Duration) {
        self.refresh_duration
            .get_or_create(&Provider {
                provider: provider.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn token_endpoint_took(&self, provider: &str, took: Duration) {
        self.token_endpoint_duration
            .get_or_create(&Provider {
                provider: provider.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// One store call; `failed` for errors other than a conflict or a missing record.
    pub fn store_call(
        &self,
        backend: &'static str,
        operation: &'static str,
        failed: bool,
        took: Duration,
    ) {
        let call = StoreCall { backend, operation };
        self.store_duration
            .get_or_create(&call)
            .observe(took.as_secs_f64());
        if failed {
            self.store_errors.get_or_create(&call).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_events_move_their_counters_and_labels_stay_closed() {
        let m = Metrics::new();
        m.event("Authenticate", "idp", "flow_started");
        m.event("FlowCompleted", "idp", "ok");
        m.event("FlowCompleted", "idp", "FLOW_EXPIRED");
        m.event("FlowCompleted", "idp", "ACCESS_DENIED");
        m.event("Authenticate", "idp", "reference");
        m.event("Resolve", "idp", "ok");
        m.event("GrantRefreshed", "idp", "REAUTHORIZATION_REQUIRED");
        m.rpc(
            "Authenticate",
            "PERMISSION_DENIED",
            true,
            Duration::from_millis(3),
        );
        let text = m.render();
        for line in [
            "valet_flows_started_total{provider=\"idp\"} 1",
            "valet_flows_completed_total{provider=\"idp\"} 1",
            "valet_flows_expired_total{provider=\"idp\"} 1",
            "valet_flows_failed_total{provider=\"idp\",reason=\"ACCESS_DENIED\"} 1",
            "valet_handouts_total{provider=\"idp\",kind=\"reference\"} 1",
            "valet_handouts_total{provider=\"idp\",kind=\"credential\"} 1",
            "valet_references_total{provider=\"idp\",event=\"issued\"} 1",
            "valet_references_total{provider=\"idp\",event=\"resolved\"} 1",
            "valet_refreshes_total{provider=\"idp\",outcome=\"reauth\"} 1",
            "valet_grants_needing_reauth_total{provider=\"idp\"} 1",
            "valet_denied_calls_total{reason=\"PERMISSION_DENIED\"} 1",
            "valet_rpc_requests_total{method=\"Authenticate\",outcome=\"PERMISSION_DENIED\"} 1",
            "valet_build_info{version=\"",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
