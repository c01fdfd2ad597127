//! The records `bpf/sched.bpf.c` shares with user space, and their metrics.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use weir_pipeline::event::{Bucket, Metric, MetricKind, MetricValue};

use crate::env::c_str;

/// Why a thread was off the CPU, in the order of `blocked_ns` (`SCHED_SLEEP`... in
/// bpf/sched.h): the `reason` tag.
pub(super) const REASONS: [&str; 5] = ["sleep", "disk", "lock", "futex", "other"];

/// Run-queue latency buckets (`SCHED_HIST_BUCKETS`): `[0]` under 1 us, `[i]` from 2^(i-1)
/// to 2^i us, the last one everything above.
pub(super) const HIST_BUCKETS: usize = 32;

/// The key of `stats` (`struct weir_sched_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct RawKey {
    pub pid: u32,
    pub _pad: u32,
    pub cgroup_id: u64,
}

const _: () = assert!(std::mem::size_of::<RawKey>() == 16);

// SAFETY: repr(C), u32 + u32 + u64 (no padding), every bit pattern valid.
unsafe impl aya::Pod for RawKey {}

/// The value of `stats` (`struct weir_sched_stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct RawStats {
    pub voluntary: u64,
    pub involuntary: u64,
    pub cpu_ns: u64,
    pub runq_ns: u64,
    pub runq_count: u64,
    pub blocked_ns: [u64; 5],
    pub blocked_count: [u64; 5],
    pub futex_wait_ns: u64,
    pub futex_waits: u64,
    pub exited: u32,
    pub _pad: u32,
    pub comm: [u8; 16],
    pub runq_hist: [u64; HIST_BUCKETS],
}

const _: () = assert!(std::mem::size_of::<RawStats>() == 416);

// SAFETY: repr(C), u64s, two u32 and a byte array in an order that leaves no padding; every
// bit pattern valid.
unsafe impl aya::Pod for RawStats {}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The upper bound, in seconds, of run-queue latency bucket `i`.
fn bucket_limit(i: usize) -> f64 {
    if i + 1 >= HIST_BUCKETS {
        f64::INFINITY
    } else {
        (1u64 << i) as f64 * 1e-6
    }
}

/// The metrics of one process: every counter since the source started (absolute), tagged
/// with `tags` (pid, comm, cgroup id, container). Without `futex` (futex waits not followed)
/// there is no `futex` reason and no futex wait metric.
pub(super) fn metrics(
    s: &RawStats,
    tags: BTreeMap<String, String>,
    futex: bool,
    ts: DateTime<Utc>,
    out: &mut Vec<Metric>,
) {
    let counter = |name: &str, value: f64, extra: Option<(&str, &str)>| {
        let mut m = Metric::new(name, MetricKind::Absolute, MetricValue::Counter { value })
            .with_timestamp(ts);
        m.tags = tags.clone();
        if let Some((k, v)) = extra {
            m.tags.insert(k.into(), v.into());
        }
        m
    };
    out.push(counter(
        "sched_context_switches_total",
        s.voluntary as f64,
        Some(("kind", "voluntary")),
    ));
    out.push(counter(
        "sched_context_switches_total",
        s.involuntary as f64,
        Some(("kind", "involuntary")),
    ));
    out.push(counter("sched_cpu_seconds_total", secs(s.cpu_ns), None));
    for (i, reason) in REASONS.iter().enumerate() {
        if *reason == "futex" && !futex {
            continue;
        }
        out.push(counter(
            "sched_blocked_seconds_total",
            secs(s.blocked_ns[i]),
            Some(("reason", reason)),
        ));
        out.push(counter(
            "sched_blocks_total",
            s.blocked_count[i] as f64,
            Some(("reason", reason)),
        ));
    }
    if futex {
        out.push(counter(
            "sched_futex_wait_seconds_total",
            secs(s.futex_wait_ns),
            None,
        ));
        out.push(counter(
            "sched_futex_waits_total",
            s.futex_waits as f64,
            None,
        ));
    }
    let buckets: Vec<Bucket> = s
        .runq_hist
        .iter()
        .enumerate()
        .map(|(i, &count)| Bucket {
            upper_limit: bucket_limit(i),
            count,
        })
        .collect();
    // The buckets' own total: the kernel may add to the count between the two reads.
    let count = s.runq_hist.iter().sum();
    let mut m = Metric::new(
        "sched_runqueue_latency_seconds",
        MetricKind::Absolute,
        MetricValue::AggregatedHistogram {
            buckets,
            count,
            sum: secs(s.runq_ns),
        },
    )
    .with_timestamp(ts);
    m.tags = tags;
    out.push(m);
}

/// The tags of a process: `pid`, `comm`, `cgroup_id`, and `container_id` / `pod_uid` when
/// known.
pub(super) fn tags(
    k: &RawKey,
    s: &RawStats,
    container: Option<(Option<String>, Option<String>)>,
) -> BTreeMap<String, String> {
    let mut t = BTreeMap::new();
    t.insert("pid".into(), k.pid.to_string());
    t.insert("comm".into(), c_str(&s.comm));
    t.insert("cgroup_id".into(), k.cgroup_id.to_string());
    if let Some((container_id, pod_uid)) = container {
        if let Some(c) = container_id {
            t.insert("container_id".into(), c);
        }
        if let Some(p) = pod_uid {
            t.insert("pod_uid".into(), p);
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zero() -> RawStats {
        // SAFETY: plain integers and bytes: all zeroes is valid.
        unsafe { std::mem::zeroed() }
    }

    #[test]
    fn metrics_of_a_process() {
        let mut s = zero();
        s.voluntary = 7;
        s.involuntary = 3;
        s.cpu_ns = 1_500_000_000;
        s.blocked_ns[3] = 2_000_000_000;
        s.blocked_count[3] = 1;
        s.runq_hist[0] = 2;
        s.runq_hist[5] = 1;
        s.runq_hist[31] = 1;
        s.runq_ns = 40_000;
        s.comm[..4].copy_from_slice(b"test");
        let k = RawKey {
            pid: 42,
            _pad: 0,
            cgroup_id: 9,
        };
        let mut out = Vec::new();
        metrics(&s, tags(&k, &s, None), false, Utc::now(), &mut out);
        assert_eq!(out.len(), 2 + 1 + 8 + 1, "futex waits not followed");
        assert!(out.iter().all(|m| !m.name.contains("futex")
            && m.tags.get("reason").map(String::as_str) != Some("futex")));
        let mut out = Vec::new();
        metrics(&s, tags(&k, &s, None), true, Utc::now(), &mut out);
        assert_eq!(out.len(), 2 + 1 + 10 + 2 + 1);
        let find = |name: &str, tag: Option<(&str, &str)>| {
            out.iter()
                .find(|m| m.name == name && tag.is_none_or(|(k, v)| m.tags[k] == v))
                .unwrap()
        };
        let value = |m: &Metric| match m.value {
            MetricValue::Counter { value } => value,
            _ => panic!("not a counter"),
        };
        let vol = find("sched_context_switches_total", Some(("kind", "voluntary")));
        assert_eq!(value(vol), 7.0);
        assert_eq!(vol.tags["pid"], "42");
        assert_eq!(vol.tags["comm"], "test");
        assert_eq!(vol.tags["cgroup_id"], "9");
        assert!(!vol.tags.contains_key("container_id"));
        assert_eq!(value(find("sched_cpu_seconds_total", None)), 1.5);
        let futex = find("sched_blocked_seconds_total", Some(("reason", "futex")));
        assert_eq!(value(futex), 2.0);
        let h = find("sched_runqueue_latency_seconds", None);
        let MetricValue::AggregatedHistogram {
            buckets,
            count,
            sum,
        } = &h.value
        else {
            panic!("not a histogram")
        };
        assert_eq!(*count, 4);
        assert_eq!(*sum, 40e-6);
        assert_eq!(buckets.len(), HIST_BUCKETS);
        assert_eq!(buckets[0].upper_limit, 1e-6);
        assert_eq!(buckets[5].upper_limit, 32e-6);
        assert_eq!(buckets[31].upper_limit, f64::INFINITY);
    }
}
