//! tracing set-up: text or JSON lines on stderr (stdout carries the `valet listening` line and the
//! one-time admin key, which scripts read), and, with `[telemetry] otlp_endpoint`, the `grpc`,
//! `rpc` and `callback` spans exported as OpenTelemetry traces over OTLP/gRPC, each request a
//! child of the caller's W3C `traceparent` when it sends one.

mod json;

use crate::config::LogFormat;
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, Registry};

/// Whether spans are exported: request spans are only made (and `traceparent` read) then.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The log writer and trace pipeline, flushed by `shutdown`.
#[derive(Debug, Default)]
#[must_use]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// Dropping it writes out the log lines still queued.
    log_writer: Option<LogFlusher>,
}

impl Telemetry {
    /// Sends the spans still queued (waits up to 5 s) and writes the queued log lines. Call it
    /// outside the runtime's workers.
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown_with_timeout(Duration::from_secs(5))
        {
            tracing::warn!("could not flush the trace export: {e}");
        }
        drop(self.log_writer);
    }
}

/// Installs the global subscriber. `otlp_endpoint`: where traces go (OTLP/gRPC); building the
/// exporter needs the Tokio runtime entered.
pub fn init(format: LogFormat, level: &str, otlp_endpoint: Option<&url::Url>) -> Telemetry {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, log_writer) = batched(std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(true);
    let fmt: Box<dyn tracing_subscriber::Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => fmt.boxed(),
        // Event fields at the top level of each line, where log pipelines look for them.
        LogFormat::Json => fmt
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(json::JsonLines)
            .boxed(),
    };
    let provider = otlp_endpoint.and_then(|e| match tracer_provider(e) {
        Ok(p) => Some(p),
        Err(err) => {
            eprintln!("valet: trace export disabled: {err}");
            None
        }
    });
    // Valet's own spans only, whatever the log level: a quiet log still traces every call.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("valet"))
            .with_location(false)
            .with_threads(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                m.is_span() && m.target().starts_with("valet")
            }))
    });
    EXPORTING.store(provider.is_some(), Ordering::Relaxed);
    // Err: a subscriber is already installed (tests embedding the app); keep that one.
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init();
    Telemetry {
        provider,
        log_writer: Some(log_writer),
    }
}

/// Log lines, formatted on the calling thread, are appended to a shared buffer that one flusher
/// thread writes to stderr in batches: a request costs a copy under a short lock, never a
/// system call or a thread wake-up (the flusher is woken once per batch, when the buffer was
/// empty). Lossless: past `HIGH_WATER` queued bytes a writer waits for the flusher.
#[derive(Debug, Clone)]
pub struct BatchWriter {
    shared: Arc<LogBuffer>,
}

#[derive(Debug, Default)]
struct LogBuffer {
    state: Mutex<LogState>,
    /// Signalled when the buffer gets its first bytes, and at shutdown.
    filled: Condvar,
    /// Signalled when the flusher has taken the buffer.
    drained: Condvar,
}

#[derive(Debug, Default)]
struct LogState {
    bytes: Vec<u8>,
    closed: bool,
}

/// Queued bytes beyond which writers wait for the flusher.
const HIGH_WATER: usize = 4 << 20;
/// How long the flusher lets lines gather after the first one of a batch (as the audit writer's
/// window: at 5 ms a lone caller woke the flusher every few dozen lines).
const BATCH_WINDOW: Duration = Duration::from_millis(50);

/// Writes the buffered lines when dropped (and stops the flusher).
#[derive(Debug)]
pub struct LogFlusher {
    shared: Arc<LogBuffer>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LogFlusher {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.filled.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock(m: &Mutex<LogState>) -> std::sync::MutexGuard<'_, LogState> {
    // A writer that panicked mid-append leaves whole lines behind; keep logging.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A batching writer over `out` and the guard that flushes it.
pub fn batched<W: std::io::Write + Send + 'static>(mut out: W) -> (BatchWriter, LogFlusher) {
    let shared = Arc::new(LogBuffer::default());
    let buffer = shared.clone();
    let thread = std::thread::Builder::new()
        .name("valet-log".into())
        .spawn(move || {
            let mut batch = Vec::new();
            loop {
                let mut state = lock(&buffer.state);
                while state.bytes.is_empty() && !state.closed {
                    state = buffer
                        .filled
                        .wait(state)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                let closed = state.closed;
                if !closed {
                    // Let the lines of a burst gather into one write.
                    drop(state);
                    std::thread::sleep(BATCH_WINDOW);
                    state = lock(&buffer.state);
                }
                std::mem::swap(&mut batch, &mut state.bytes);
                drop(state);
                buffer.drained.notify_all();
                // Nowhere left to report a failed write to stderr.
                let _ = out.write_all(&batch).and_then(|()| out.flush());
                batch.clear();
                if closed && lock(&buffer.state).bytes.is_empty() {
                    return;
                }
            }
        })
        .ok();
    if thread.is_none() {
        eprintln!("valet: cannot start the log writer thread; logging synchronously");
        lock(&shared.state).closed = true;
    }
    let writer = BatchWriter {
        shared: shared.clone(),
    };
    (writer, LogFlusher { shared, thread })
}

impl std::io::Write for BatchWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut state = lock(&self.shared.state);
        while state.bytes.len() > HIGH_WATER && !state.closed {
            state = self
                .shared
                .drained
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if state.closed {
            // Past shutdown (or no flusher thread): write through.
            drop(state);
            return std::io::stderr().write(buf);
        }
        let was_empty = state.bytes.is_empty();
        state.bytes.extend_from_slice(buf);
        drop(state);
        if was_empty {
            self.shared.filled.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn tracer_provider(
    endpoint: &url::Url,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.as_str())
        .with_timeout(Duration::from_secs(3))
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_resource(
            opentelemetry_sdk::Resource::builder_empty()
                .with_service_name("valet")
                .build(),
        )
        .with_batch_exporter(exporter)
        .build())
}

/// A duration in milliseconds to the microsecond, for the request log's `latency_ms`: `0.401`,
/// not `0.40101600000000004`.
pub fn millis(d: std::time::Duration) -> f64 {
    // Microseconds fit an f64 exactly for any latency a request has.
    #[allow(
        clippy::cast_precision_loss,
        reason = "exact below 2^53 microseconds (285 years)"
    )]
    let micros = d.as_micros() as f64;
    micros / 1000.0
}

/// A request id for a request that brought none: 16 hex digits, unique within this run (a
/// counter under a per-process random keyed hash, so ids do not reveal how many requests came
/// between two). Not a secret, so no system call per request.
pub fn new_request_id() -> String {
    use std::hash::BuildHasher as _;
    static KEY: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let id = KEY.get_or_init(std::hash::RandomState::new).hash_one(n);
    crate::secret::hex(&id.to_be_bytes())
}

/// Whether spans are exported (`otlp_endpoint` set and its exporter built).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The span one gRPC request runs in (the transport's `trace_fn`), a child of the caller's
/// trace when it sent a valid W3C `traceparent`. No span when nothing is exported.
pub fn request_span(req: &http::Request<()>) -> tracing::Span {
    if !EXPORTING.load(Ordering::Relaxed) {
        return tracing::Span::none();
    }
    let span = tracing::info_span!("grpc", path = %req.uri().path());
    adopt_parent(&span, req.headers());
    span
}

/// Makes `span` a child of the trace named by `headers`' `traceparent`, if any. Call it before
/// the span is first entered.
pub fn adopt_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    if !EXPORTING.load(Ordering::Relaxed) {
        return;
    }
    let cx = TraceContextPropagator::new()
        .extract_with_context(&opentelemetry::Context::new(), &Headers(headers));
    if cx.span().span_context().is_valid() {
        // Err: no OpenTelemetry layer on this subscriber (an embedding test); nothing to adopt.
        let _ = span.set_parent(cx);
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn latencies_are_logged_to_the_microsecond() {
        let ms = |nanos| super::millis(std::time::Duration::from_nanos(nanos)).to_string();
        assert_eq!(ms(401_016), "0.401");
        assert_eq!(ms(1_250_999), "1.25");
        assert_eq!(ms(3_000_000_000), "3000");
    }

    #[test]
    fn made_up_request_ids_are_16_hex_digits_and_do_not_repeat() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| super::new_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(
            ids.iter()
                .all(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        );
    }
}
