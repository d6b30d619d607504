//! The standard `process_*` series of `/metrics` (the names every Prometheus
//! client library exports, so existing dashboards and alerts apply): CPU time,
//! resident and virtual memory, open and allowed file descriptors, threads and
//! the start time, read from `/proc/self` at scrape time. On a system without
//! `/proc` the series are left out.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::metrics::gauge;

/// The `process_*` collector.
#[derive(Debug)]
pub struct Process;

impl Collector for Process {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let Some(stat) = Stat::read() else {
            return Ok(());
        };
        let cpu = enc.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent in seconds.",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        ConstCounter::new(stat.cpu_seconds).encode(cpu)?;
        let bytes = Some(&Unit::Bytes);
        gauge(
            &mut enc,
            "process_resident_memory",
            "Resident memory size in bytes.",
            bytes,
            stat.rss_bytes,
        )?;
        gauge(
            &mut enc,
            "process_virtual_memory",
            "Virtual memory size in bytes.",
            bytes,
            stat.vsize_bytes,
        )?;
        gauge(
            &mut enc,
            "process_threads",
            "Number of OS threads in the process.",
            None,
            stat.threads,
        )?;
        if let Some(start) = stat.start_time {
            gauge(
                &mut enc,
                "process_start_time",
                "Start time of the process since unix epoch in seconds.",
                Some(&Unit::Seconds),
                start,
            )?;
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                &mut enc,
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                fds.count() as u64,
            )?;
        }
        gauge(
            &mut enc,
            "process_max_fds",
            "Maximum number of open file descriptors.",
            None,
            super::listen::nofile_limit(),
        )
    }
}

/// What `/proc/self/stat` (and `/proc/stat`'s boot time) say.
struct Stat {
    cpu_seconds: f64,
    threads: u64,
    vsize_bytes: f64,
    rss_bytes: f64,
    start_time: Option<f64>,
}

impl Stat {
    fn read() -> Option<Stat> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        // SAFETY: sysconf only reads a system constant.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
        parse_stat(&text, ticks as f64, page as f64, boot)
    }
}

/// Parses `/proc/self/stat`: the fields after the command name (which may hold
/// spaces and parentheses, so the split is at the last `)`), counted from 3 as
/// proc(5) numbers them.
fn parse_stat(text: &str, ticks: f64, page: f64, boot: Option<f64>) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    if ticks <= 0.0 {
        return None;
    }
    Some(Stat {
        cpu_seconds: (field(14)? + field(15)?) / ticks,
        threads: field(20)? as u64,
        start_time: boot.zip(field(22)).map(|(b, s)| b + s / ticks),
        vsize_bytes: field(23)?,
        rss_bytes: field(24)? * page,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        // proc(5) field numbers: 14 utime, 15 stime, 20 num_threads, 22 starttime,
        // 23 vsize, 24 rss. The command name holds a space and a `)`.
        let text = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 1000 \
                    123456789 300 18446744073709551615";
        let s = parse_stat(text, 100.0, 4096.0, Some(1_700_000_000.0)).unwrap();
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.threads, 7);
        assert_eq!(s.start_time, Some(1_700_000_010.0));
        assert_eq!(s.vsize_bytes, 123_456_789.0);
        assert_eq!(s.rss_bytes, 300.0 * 4096.0);
    }

    #[test]
    fn this_process_has_a_start_time_and_some_memory() {
        let s = Stat::read().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = s.start_time.unwrap();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
        assert!(s.rss_bytes > 1e6 && s.threads >= 1);
    }
}
