//! `/metrics`: one prometheus-client [`Registry`] for every series the daemon
//! exports, encoded in the Prometheus text format (0.0.4).
//!
//! Two kinds of series live in it. The request counters and latency histograms
//! (by route and status) and the inference histogram are prometheus-client
//! metrics updated on the request path. Everything else already exists as an
//! atomic or a snapshot inside a service (the log writer's counters, the last
//! drift check, the learner's counters, the outbox counts), so a [`Collector`]
//! per area reads it at scrape time rather than mirroring it into a second set
//! of counters: `status` (predictions, feedback, connections, log, model),
//! `drift` (checks, drift, anomalies), `learning` (swaps, online learner,
//! retrains), `alerts` (outbox) and `process` (the `process_*` series).
//!
//! Names follow Prometheus' conventions: the unit as a suffix (`_seconds`,
//! `_ratio`, `_bytes`), `_total` on counters (the encoder adds it), `_info` on
//! series whose labels carry the value (`steward_build_info`,
//! `steward_model_info`), `_timestamp_seconds` for moments.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::app::App;

/// Upper bounds of the request latency buckets, in seconds.
pub const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The labels of the request series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

type Histograms = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// What the request path updates: requests and their latency by route and
/// status, and the connection layer's counters.
#[derive(Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    durations: Histograms,
    /// The connection layer's counters.
    pub connections: Arc<super::listen::ConnStats>,
    /// The outbox counts, read from the database by the handler just before
    /// encoding (a collector cannot wait for a query).
    pub(super) alert_counts: Mutex<Vec<(String, u64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            durations: Family::new_with_constructor(|| Histogram::new(BUCKETS)),
            connections: Arc::default(),
            alert_counts: Mutex::default(),
        }
    }
}

impl Metrics {
    /// Records one answered request.
    pub fn observe(&self, route: &str, status: u16, elapsed: Duration) {
        let labels = RequestLabels {
            route: route.to_owned(),
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }
}

/// The registry `/metrics` encodes: the request series of `metrics`, the
/// services' collectors, the build info and the process series.
pub fn registry(app: &Arc<App>, metrics: &Arc<Metrics>) -> Registry {
    let mut root = Registry::default();
    root.register_collector(Box::new(super::process::Process));
    let r = root.sub_registry_with_prefix("steward");
    r.register(
        "build",
        "The running build: version and the integer kernel this CPU runs (value is always 1)",
        Info::new([
            ("version", env!("CARGO_PKG_VERSION")),
            ("kernel", crate::model::quant::Kernel::detect().as_str()),
        ]),
    );
    r.register(
        "http_requests",
        "HTTP requests answered, by route and status",
        metrics.requests.clone(),
    );
    r.register_with_unit(
        "http_request_duration",
        "Time to answer, by route and status",
        Unit::Seconds,
        metrics.durations.clone(),
    );
    r.register_with_unit(
        "inference_duration",
        "Model time per instance: encoding, forward pass and anomaly score (no parsing, \
         logging or HTTP)",
        Unit::Seconds,
        app.predictions().inference_histogram(),
    );
    r.register_collector(Box::new(super::status::Collect {
        app: app.clone(),
        metrics: metrics.clone(),
    }));
    r.register_collector(Box::new(super::drift::Collect(app.clone())));
    r.register_collector(Box::new(super::learning::Collect(app.clone())));
    r.register_collector(Box::new(super::alerts::Collect(
        metrics.clone(),
        app.alerts().counters(),
    )));
    root
}

/// Encodes `registry` in the Prometheus text format.
pub fn encode(registry: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?;
    Ok(out)
}

/// Writes one unlabelled counter (`name` without `_total`).
pub fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    ConstCounter::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// Writes one unlabelled gauge (`u64` for counts, which then print without a
/// fraction; `f64` otherwise).
pub fn gauge<N>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: N,
) -> fmt::Result
where
    ConstGauge<N>: EncodeMetric,
{
    ConstGauge::new(v).encode(enc.encode_descriptor(name, help, unit, MetricType::Gauge)?)
}

/// Writes a counter with one label, one series per `(label value, count)`.
pub fn counters_by(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    series: &[(&str, u64)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in series {
        ConstCounter::new(*n).encode(m.encode_family(&[(label, *value)])?)?;
    }
    Ok(())
}

/// Writes one info series (`name` without `_info`): the labels carry the value.
pub fn info(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: &[(&str, &str)],
) -> fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Info)?
        .encode_info(&labels)
}

/// A moment as seconds since the Unix epoch, from Unix milliseconds; `None`
/// for 0 (never happened), so the series is left out rather than exported as
/// 1970.
pub fn timestamp_seconds(ms: i64) -> Option<f64> {
    (ms > 0).then(|| ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_histogram_is_cumulative_and_counts_match() {
        let m = Arc::new(Metrics::default());
        m.observe("/v1/predict", 200, Duration::from_micros(80));
        m.observe("/v1/predict", 200, Duration::from_millis(3));
        m.observe("/v1/predict", 422, Duration::from_millis(3));
        let mut r = Registry::default();
        r.register("http_requests", "Requests", m.requests.clone());
        r.register_with_unit(
            "http_request_duration",
            "Time",
            Unit::Seconds,
            m.durations.clone(),
        );
        let out = encode(&r).unwrap();
        assert!(
            out.contains("http_requests_total{route=\"/v1/predict\",status=\"200\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("# TYPE http_request_duration_seconds histogram"),
            "{out}"
        );
        assert!(out.contains("status=\"200\",le=\"0.0001\"} 1\n"), "{out}");
        assert!(out.contains("status=\"200\",le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("status=\"422\",le=\"+Inf\"} 1\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut r = Registry::default();
        #[derive(Debug)]
        struct C;
        impl prometheus_client::collector::Collector for C {
            fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
                info(&mut enc, "x", "X.", &[("feature", "a\"b\\c\nd")])
            }
        }
        r.register_collector(Box::new(C));
        let out = encode(&r).unwrap();
        assert!(out.contains(r#"x_info{feature="a\"b\\c\nd"} 1"#), "{out}");
    }

    #[test]
    fn a_moment_that_never_happened_is_left_out() {
        assert_eq!(timestamp_seconds(0), None);
        assert_eq!(timestamp_seconds(1_500), Some(1.5));
    }
}
