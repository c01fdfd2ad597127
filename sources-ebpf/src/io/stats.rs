//! The kernel's counts (`stats` in bpf/io.bpf.c) and the metrics made of them.

use std::sync::Arc;

use weir_pipeline::event::{Bucket, Metric, MetricKind, MetricValue};

/// Latency slots (`IO_SLOTS` in bpf/io.h).
pub(super) const SLOTS: usize = 28;

/// The key of bpf/io.h (`struct weir_io_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct RawKey {
    pub cgroup_id: u64,
    pub pid: u32,
    /// The kernel's dev_t: major << 20 | minor.
    pub dev: u32,
    pub op: u32,
    pub _pad: u32,
}

const _: () = assert!(std::mem::size_of::<RawKey>() == 24);

// SAFETY: repr(C), u64 then four u32, no padding; every bit pattern is valid.
unsafe impl aya::Pod for RawKey {}

/// The value of bpf/io.h (`struct weir_io_value`): totals since the key was created.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct RawValue {
    pub ops: u64,
    pub bytes: u64,
    pub errors: u64,
    pub latency_ns: u64,
    pub slots: [u64; SLOTS],
    pub comm: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<RawValue>() == 32 + 8 * SLOTS + 16);

// SAFETY: repr(C), u64s then 16 bytes, no padding; every bit pattern is valid.
unsafe impl aya::Pod for RawValue {}

impl Default for RawValue {
    fn default() -> Self {
        Self {
            ops: 0,
            bytes: 0,
            errors: 0,
            latency_ns: 0,
            slots: [0; SLOTS],
            comm: [0; 16],
        }
    }
}

/// The name of an operation (`IO_OP_*` in bpf/io.h).
pub(super) fn op_name(op: u32) -> &'static str {
    match op {
        0 => "read",
        1 => "write",
        2 => "flush",
        3 => "discard",
        _ => "other",
    }
}

/// The upper bound, in seconds, of latency slot `slot`: 1 us for slot 0, 2^slot us for the
/// others, +Inf for the last (everything slower).
pub(super) fn slot_upper_secs(slot: usize) -> f64 {
    if slot + 1 >= SLOTS {
        f64::INFINITY
    } else {
        (1u64 << slot) as f64 * 1e-6
    }
}

/// The major and minor numbers of a kernel dev_t (MINORBITS = 20).
pub(super) fn major_minor(dev: u32) -> (u32, u32) {
    (dev >> 20, dev & ((1 << 20) - 1))
}

/// The metrics of one key: operations, bytes, errors (counters) and the latency histogram,
/// all totals since the key was created (absolute), tagged with `tags`.
pub(super) fn metrics(
    v: &RawValue,
    tags: &[(&'static str, Arc<str>)],
    out: &mut Vec<Metric>,
) -> usize {
    let tagged = |mut m: Metric| {
        for (k, val) in tags {
            m.tags.insert((*k).to_string(), val.to_string());
        }
        m
    };
    let counter = |name: &str, value: u64| {
        tagged(Metric::new(
            name,
            MetricKind::Absolute,
            MetricValue::Counter {
                value: value as f64,
            },
        ))
    };
    let buckets: Vec<Bucket> = v
        .slots
        .iter()
        .enumerate()
        .map(|(i, &count)| Bucket {
            upper_limit: slot_upper_secs(i),
            count,
        })
        .collect();
    // The buckets' own total: they and `ops` are read at slightly different moments while
    // requests complete, and a histogram must agree with itself.
    let count = v.slots.iter().sum();
    out.push(counter("block_io_operations_total", v.ops));
    out.push(counter("block_io_bytes_total", v.bytes));
    out.push(counter("block_io_errors_total", v.errors));
    out.push(tagged(Metric::new(
        "block_io_latency_seconds",
        MetricKind::Absolute,
        MetricValue::AggregatedHistogram {
            buckets,
            count,
            sum: v.latency_ns as f64 / 1e9,
        },
    )));
    4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_powers_of_two_microseconds_and_the_last_is_unbounded() {
        assert_eq!(slot_upper_secs(0), 1e-6);
        assert_eq!(slot_upper_secs(1), 2e-6);
        assert_eq!(slot_upper_secs(10), 1024e-6);
        assert_eq!(slot_upper_secs(SLOTS - 2), (1u64 << 26) as f64 * 1e-6);
        assert_eq!(slot_upper_secs(SLOTS - 1), f64::INFINITY);
    }

    #[test]
    fn dev_t_is_split_as_the_kernel_packs_it() {
        assert_eq!(major_minor((254 << 20) | 3), (254, 3));
        assert_eq!(major_minor((8 << 20) | 0xfffff), (8, 0xfffff));
    }

    #[test]
    fn one_key_makes_three_counters_and_a_histogram() {
        let mut v = RawValue {
            ops: 3,
            bytes: 12288,
            errors: 1,
            latency_ns: 1_500_000,
            ..RawValue::default()
        };
        v.slots[9] = 2;
        v.slots[10] = 1;
        let tags = [("pid", Arc::from("42")), ("op", Arc::from("read"))];
        let mut out = Vec::new();
        assert_eq!(metrics(&v, &tags, &mut out), 4);
        let names: Vec<&str> = out.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "block_io_operations_total",
                "block_io_bytes_total",
                "block_io_errors_total",
                "block_io_latency_seconds"
            ]
        );
        assert!(out.iter().all(|m| m.kind == MetricKind::Absolute
            && m.tags["pid"] == "42"
            && m.tags["op"] == "read"));
        assert_eq!(out[1].value, MetricValue::Counter { value: 12288.0 });
        let MetricValue::AggregatedHistogram {
            buckets,
            count,
            sum,
        } = &out[3].value
        else {
            panic!("{:?}", out[3].value)
        };
        assert_eq!(*count, 3);
        assert_eq!(*sum, 0.0015);
        assert_eq!(buckets.len(), SLOTS);
        assert_eq!(buckets[9].count, 2);
        assert_eq!(buckets[9].upper_limit, 512e-6);
    }
}
