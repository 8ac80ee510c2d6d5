//! The JSON log line, written straight into the line buffer: the shape of tracing-subscriber's
//! flattened JSON (`timestamp`, `level`, the event's fields, `target`, and the enclosing `span`
//! and `spans`), without its per-field serializer and map. A request writes one of these lines
//! and the trail another, so this is on every call's path.

use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event format for `[log] format = "json"` (with `JsonFields` for the spans' fields).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        w.write_str("{\"timestamp\":\"")?;
        #[allow(
            clippy::disallowed_methods,
            reason = "a log line is stamped with the wall clock, as tracing-subscriber stamps it"
        )]
        let now = std::time::SystemTime::now();
        timestamp(&mut w, now)?;
        w.write_str("\",\"level\":\"")?;
        w.write_str(meta.level().as_str())?;
        w.write_char('"')?;
        let mut fields = Fields {
            w: &mut w,
            result: Ok(()),
            audit: meta.target() == crate::audit::LOG_TARGET,
        };
        event.record(&mut fields);
        fields.result?;
        w.write_str(",\"target\":")?;
        string(&mut w, meta.target())?;
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<String> = scope
                .from_root()
                .map(|span| {
                    let ext = span.extensions();
                    let fields = ext
                        .get::<FormattedFields<N>>()
                        .map_or("", |f| f.fields.as_str());
                    span_object(span.name(), fields)
                })
                .collect();
            if let Some(current) = spans.last() {
                write!(w, ",\"span\":{current},\"spans\":[{}]", spans.join(","))?;
            }
        }
        w.write_str("}\n")
    }
}

/// A span as `{<its fields>,"name":…}`, from its fields as `JsonFields` recorded them.
fn span_object(name: &str, fields: &str) -> String {
    let inner = fields
        .trim()
        .strip_prefix('{')
        .and_then(|f| f.strip_suffix('}'))
        .unwrap_or("")
        .trim();
    let mut out = String::with_capacity(inner.len() + name.len() + 12);
    out.push('{');
    if !inner.is_empty() {
        out.push_str(inner);
        out.push(',');
    }
    out.push_str("\"name\":");
    let _ = string(&mut out, name);
    out.push('}');
    out
}

/// The event's fields as `,"name":value` members (`log.*` fields of bridged `log` records are
/// folded into the level and target instead).
struct Fields<'a, 'w> {
    w: &'a mut Writer<'w>,
    result: fmt::Result,
    /// An audit event: its message is the trail's line, written as the object it is.
    audit: bool,
}

impl Fields<'_, '_> {
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if field.name().starts_with("log.") {
            return;
        }
        self.named(field.name(), value);
    }

    fn named(&mut self, name: &str, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            self.w.write_char(',')?;
            string(self.w, name)?;
            self.w.write_char(':')?;
            value(self.w)
        })();
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        // An audit event's message is the trail's line, JSON the audit writer serialized: the
        // object itself, as `audit`, not escaped into a string (readable, and escaping it was
        // most of the line's cost). A text log line shows it as the message it is.
        if self.audit && field.name() == "message" && value.starts_with('{') && value.ends_with('}')
        {
            self.named("audit", |w| w.write_str(value));
            return;
        }
        self.member(field, |w| string(w, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity (serde_json writes null too).
        self.member(field, |w| {
            if value.is_finite() {
                write!(w, "{value}")
            } else {
                w.write_str("null")
            }
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// `s` as a JSON string.
fn string(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(w).write_str(s)?;
    w.write_char('"')
}

/// Writes what it is given JSON-escaped (as serde_json does: quote, backslash, control
/// characters), copying the runs between escapes whole.
struct Escaped<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let bytes = s.as_bytes();
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            // Eight bytes at a time past those that need no escape (most of a line).
            while let Some(word) = bytes.get(i..i + 8)
                && !needs_escape(word)
            {
                i += 8;
            }
            let Some(&b) = bytes.get(i) else {
                break;
            };
            i += 1;
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[start..i - 1])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            start = i;
        }
        self.0.write_str(&s[start..])
    }
}

/// Whether any of these eight bytes is a quote, a backslash or a control character (the
/// zero-byte and less-than tests on a word of bytes, exact for whether any byte matches).
fn needs_escape(word: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    let mut eight = [0; 8];
    eight.copy_from_slice(word);
    let w = u64::from_ne_bytes(eight);
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let quote = zero_byte(w ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(w ^ (ONES * u64::from(b'\\')));
    control | quote | backslash != 0
}

/// `at` in RFC 3339, UTC, with microseconds: `2026-12-03T08:00:00.123456Z`.
fn timestamp(w: &mut impl fmt::Write, at: std::time::SystemTime) -> fmt::Result {
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    crate::clock::write_rfc3339(w, since.as_secs(), Some(since.subsec_micros()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt as _;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    fn lines(buf: &Buffer) -> Vec<serde_json::Value> {
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// The events both formats are given: every kind of field, odd characters, spans.
    fn events() {
        let odd = "quote\" back\\ nl\n tab\t nul\u{0} bell\u{7} é 🦀";
        tracing::info!(
            target: "valet::request",
            method = "Authenticate",
            caller = odd,
            n = -3_i64,
            big = 7_u64,
            yes = true,
            latency_ms = 1.25,
            shown = %odd,
            debugged = ?vec!["a"],
            "rpc"
        );
        tracing::warn!("plain {} message", 42);
        let span = tracing::info_span!(
            "rpc",
            method = "Resolve",
            caller = odd,
            outcome = tracing::field::Empty
        );
        span.record("outcome", "NOT_FOUND");
        span.in_scope(|| {
            tracing::info_span!("inner", step = 2)
                .in_scope(|| tracing::error!(why = odd, "failed"));
        });
    }

    #[test]
    fn a_line_is_what_tracing_subscribers_json_writes_but_for_the_time() {
        let ours = Buffer::default();
        let theirs = Buffer::default();
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .event_format(JsonLines)
                    .with_writer(ours.clone()),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(theirs.clone()),
            );
        tracing::subscriber::with_default(subscriber, events);
        let (mut ours, mut theirs) = (lines(&ours), lines(&theirs));
        assert_eq!(ours.len(), 3);
        for (a, b) in ours.iter_mut().zip(theirs.iter_mut()) {
            let at = a.as_object_mut().unwrap().remove("timestamp").unwrap();
            let at = at.as_str().unwrap();
            assert_eq!(at.len(), "2026-12-03T08:00:00.123456Z".len(), "{at}");
            assert!(at.ends_with('Z') && at.as_bytes()[10] == b'T', "{at}");
            b.as_object_mut().unwrap().remove("timestamp");
            assert_eq!(a, b);
        }
        assert_eq!(ours[2]["span"]["name"], "inner");
        assert_eq!(ours[2]["spans"][0]["name"], "rpc");
        assert_eq!(ours[2]["spans"][0]["outcome"], "NOT_FOUND");
    }

    #[test]
    fn an_audit_event_carries_the_trails_line_as_an_object() {
        let buf = Buffer::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .event_format(JsonLines)
                .with_writer(buf.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            let line = r#"{"caller":"a\"b","event":"Resolve"}"#;
            tracing::info!(target: crate::audit::LOG_TARGET, message = line);
            // Another target's message, or one that is no object: a string.
            tracing::info!(target: "valet::request", message = line);
            tracing::info!(target: crate::audit::LOG_TARGET, message = "not {an object");
        });
        let lines = lines(&buf);
        assert_eq!(lines[0]["audit"]["caller"], "a\"b");
        assert_eq!(lines[0]["audit"]["event"], "Resolve");
        assert_eq!(lines[0]["target"], "valet::audit");
        assert!(lines[0].get("message").is_none(), "{}", lines[0]);
        assert_eq!(
            lines[1]["message"],
            r#"{"caller":"a\"b","event":"Resolve"}"#
        );
        assert_eq!(lines[2]["message"], "not {an object");
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them_wherever_the_escape_falls() {
        // Every character that needs an escape (and some that do not: DEL, non-ASCII) at every
        // offset in strings longer and shorter than the eight bytes looked at at once.
        let odd = [
            '"', '\\', '\n', '\r', '\t', '\u{8}', '\u{c}', '\0', '\u{1f}', '\u{7f}', 'é', '🦀',
        ];
        for len in 0..20 {
            for at in 0..=len {
                for c in odd {
                    let s: String = (0..len)
                        .map(|i| if i == at { c } else { 'a' })
                        .chain((at == len).then_some(c))
                        .collect();
                    let mut ours = String::new();
                    string(&mut ours, &s).unwrap();
                    assert_eq!(ours, serde_json::to_string(&s).unwrap(), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn timestamps_are_rfc_3339_utc() {
        let at = |secs: u64, micros: u32| {
            let mut s = String::new();
            let t = std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(secs)
                + std::time::Duration::from_micros(u64::from(micros));
            timestamp(&mut s, t).unwrap();
            s
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(
            at(1_796_256_000 + 8 * 3600 + 123, 123_456),
            "2026-12-03T08:02:03.123456Z"
        );
        assert_eq!(at(4_102_444_799, 999_999), "2099-12-31T23:59:59.999999Z");
    }
}
