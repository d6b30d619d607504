//! Request metrics and the Prometheus text exposition of `/metrics`.
//!
//! Counts and latency histograms are kept per (route, status) behind one std
//! `Mutex`: the critical section is a hash lookup and a few additions, far shorter
//! than anything that would justify a lock-free structure, and no `.await` happens
//! while it is held.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
pub const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default, Clone)]
struct Series {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Counters the handlers and the middleware update.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<HashMap<String, HashMap<u16, Series>>>,
    /// The connection layer's counters.
    pub connections: std::sync::Arc<super::listen::ConnStats>,
}

impl Metrics {
    /// Records one answered request.
    pub fn observe(&self, route: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let Ok(mut map) = self.requests.lock() else {
            return;
        };
        let by_status = match map.get_mut(route) {
            Some(m) => m,
            None => map.entry(route.to_string()).or_default(),
        };
        let s = by_status.entry(status).or_default();
        s.count += 1;
        s.sum += secs;
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            s.buckets[i] += 1;
        }
    }

    /// Appends the request series in Prometheus text format.
    pub fn render_requests(&self, out: &mut String) {
        let map = match self.requests.lock() {
            Ok(m) => m.clone(),
            Err(_) => return,
        };
        let mut routes: Vec<_> = map.iter().collect();
        routes.sort_by(|a, b| a.0.cmp(b.0));
        out.push_str(
            "# HELP steward_http_requests_total HTTP requests answered, by route and status.\n",
        );
        out.push_str("# TYPE steward_http_requests_total counter\n");
        for (route, by_status) in &routes {
            let mut statuses: Vec<_> = by_status.iter().collect();
            statuses.sort_by_key(|s| *s.0);
            for (status, s) in statuses {
                let _ = writeln!(
                    out,
                    "steward_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {}",
                    s.count
                );
            }
        }
        out.push_str(
            "# HELP steward_http_request_duration_seconds Time to answer, by route and status.\n",
        );
        out.push_str("# TYPE steward_http_request_duration_seconds histogram\n");
        for (route, by_status) in &routes {
            let mut statuses: Vec<_> = by_status.iter().collect();
            statuses.sort_by_key(|s| *s.0);
            for (status, s) in statuses {
                let labels = format!("route=\"{route}\",status=\"{status}\"");
                let mut cumulative = 0;
                for (b, n) in BUCKETS.iter().zip(s.buckets) {
                    cumulative += n;
                    let _ = writeln!(out, "steward_http_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {cumulative}");
                }
                let _ = writeln!(
                    out,
                    "steward_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    s.count
                );
                let _ = writeln!(
                    out,
                    "steward_http_request_duration_seconds_sum{{{labels}}} {}",
                    s.sum
                );
                let _ = writeln!(
                    out,
                    "steward_http_request_duration_seconds_count{{{labels}}} {}",
                    s.count
                );
            }
        }
    }
}

/// Appends one metric with its HELP and TYPE lines.
pub fn push(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    labels: &str,
    value: impl std::fmt::Display,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// Reads an atomic counter.
pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_match() {
        let m = Metrics::default();
        m.observe("/v1/predict", 200, Duration::from_micros(80));
        m.observe("/v1/predict", 200, Duration::from_millis(3));
        m.observe("/v1/predict", 422, Duration::from_millis(3));
        let mut out = String::new();
        m.render_requests(&mut out);
        assert!(
            out.contains("steward_http_requests_total{route=\"/v1/predict\",status=\"200\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("status=\"200\",le=\"0.0001\"} 1\n"), "{out}");
        assert!(out.contains("status=\"200\",le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("status=\"422\",le=\"+Inf\"} 1\n"), "{out}");
    }
}
