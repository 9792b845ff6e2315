//! The agent's own log output: text for people (the default), or one JSON object per line
//! for log pipelines (`--log-format json`) with a stable field set: `timestamp` (RFC 3339,
//! UTC, microseconds), `level`, `target`, `namespace` and `pod` (from the pod worker's span,
//! else from the event's own `namespace`/`ns` and `pod` fields; null when neither names
//! one), `message`, and `fields` (the event's other fields).

use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value, json};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The value `RUST_LIB_BACKTRACE` gets when unset: library backtraces off. Wasmtime
/// builds an error value as it drops each HTTP request's store, and with backtraces on
/// (`RUST_BACKTRACE=1` turns them on for libraries too) every such error walks the
/// stack: measured at 7% of the server's CPU under load. Panics still print backtraces
/// with `RUST_BACKTRACE`; `RUST_LIB_BACKTRACE=1` turns library backtraces back on.
pub const LIB_BACKTRACE_DEFAULT: &str = "0";

/// Sets `RUST_LIB_BACKTRACE` to [`LIB_BACKTRACE_DEFAULT`] unless it is set. Call it
/// first thing in `main`, before any thread exists.
pub fn default_lib_backtrace() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: called before the process starts any other thread (see above), so no
        // one reads the environment concurrently.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", LIB_BACKTRACE_DEFAULT) };
    }
}

/// Sets up the global subscriber: `RUST_LOG` filters (default `info`), output on stderr.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        let format = tracing_subscriber::fmt::layer().event_format(JsonLines).with_writer(std::io::stderr);
        registry.with(PodFields).with(format).init();
    } else {
        let format = tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr);
        registry.with(format).init();
    }
}

/// Collects fields as JSON values.
#[derive(Default)]
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), json!(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), json!(value));
    }
}

/// The namespace and pod of a pod worker's span (`ns`, `pod`), kept in its extensions.
struct PodSpan {
    namespace: Option<String>,
    pod: Option<String>,
}

/// Records [`PodSpan`] on every span that has `ns` or `pod` fields.
struct PodFields;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for PodFields {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let text = |k: &str| fields.0.get(k).and_then(Value::as_str).map(String::from);
        let (namespace, pod) = (text("ns"), text("pod"));
        if let (Some(span), true) = (ctx.span(id), namespace.is_some() || pod.is_some()) {
            span.extensions_mut().insert(PodSpan { namespace, pod });
        }
    }
}

/// One JSON object per event.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let message = fields.0.remove("message").unwrap_or(Value::Null);
        let (mut namespace, mut pod) = (None, None);
        for span in ctx.event_scope().into_iter().flat_map(|s| s.from_root()) {
            if let Some(p) = span.extensions().get::<PodSpan>() {
                namespace = p.namespace.clone().or(namespace);
                pod = p.pod.clone().or(pod);
            }
        }
        // Outside a pod's span, an event that names its pod says so in its own fields.
        let mut own = |keys: &[&str]| {
            let found =
                keys.iter().find_map(|k| fields.0.get(*k).and_then(Value::as_str).filter(|v| !v.is_empty()));
            let found = found.map(String::from);
            for k in keys {
                if fields.0.get(*k).and_then(Value::as_str) == found.as_deref()
                    || fields.0.get(*k) == Some(&json!(""))
                {
                    fields.0.remove(*k);
                }
            }
            found
        };
        let namespace = namespace.or_else(|| own(&["namespace", "ns"]));
        let pod = pod.or_else(|| own(&["pod"]));
        let meta = event.metadata();
        let line = json!({
            "timestamp": timestamp(&k8s_openapi::jiff::Timestamp::now()),
            "level": meta.level().as_str(),
            "target": meta.target(),
            "namespace": namespace,
            "pod": pod,
            "message": message,
            "fields": fields.0,
        });
        writeln!(writer, "{line}")
    }
}

/// RFC 3339, UTC, always six fractional digits (microseconds).
fn timestamp(t: &k8s_openapi::jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_utc_with_microseconds() {
        let t: k8s_openapi::jiff::Timestamp = "2026-01-02T03:04:05.678901234+02:00".parse().unwrap();
        assert_eq!(super::timestamp(&t), "2026-01-02T01:04:05.678901Z");
        let whole: k8s_openapi::jiff::Timestamp = "2026-01-02T03:04:05Z".parse().unwrap();
        assert_eq!(super::timestamp(&whole), "2026-01-02T03:04:05.000000Z");
    }
}
