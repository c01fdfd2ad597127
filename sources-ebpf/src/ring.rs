//! Shared plumbing: reading a BPF ring buffer from tokio, and the kernel's drop counter.

use aya::maps::{MapData, PerCpuArray, RingBuf};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A ring buffer the runtime wakes us for (its fd polls readable when records are waiting).
pub struct RingReader {
    fd: AsyncFd<RingBuf<MapData>>,
}

impl RingReader {
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        // SAFETY: the RingBuf owns its map fd (MapData holds an OwnedFd) and keeps it open, and
        // as_raw_fd returns that same fd, for as long as the AsyncFd owns the RingBuf.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(Self { fd })
    }

    /// Hands the records available now (at most `max`) to `f` without waiting; returns how
    /// many were handled. For rings whose producer does not wake us for every record.
    pub fn read_now(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        let ring = self.fd.get_mut();
        let mut n = 0;
        while n < max {
            match ring.next() {
                Some(item) => {
                    f(&item);
                    n += 1;
                }
                None => break,
            }
        }
        n
    }

    /// Waits until records are available, then hands each (at most `max`) to `f`; returns how
    /// many were handled.
    pub async fn read(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> std::io::Result<usize> {
        loop {
            let mut guard = self.fd.readable_mut().await?;
            let ring = guard.get_inner_mut();
            let mut n = 0;
            while n < max {
                match ring.next() {
                    Some(item) => {
                        f(&item);
                        n += 1;
                    }
                    None => break,
                }
            }
            if n < max {
                // Drained: wait for the next wakeup.
                guard.clear_ready();
            }
            if n > 0 {
                return Ok(n);
            }
        }
    }
}

/// The sum over CPUs of slot `slot` of a per-CPU `u64` counter array (records the kernel
/// could not send).
pub fn per_cpu_slot(map: &PerCpuArray<MapData, u64>, slot: u32) -> u64 {
    match map.get(&slot, 0) {
        Ok(values) => values.iter().sum(),
        Err(_) => 0,
    }
}

/// Counts and logs what the kernel side dropped since the last report: slot `i` of
/// `dropped` counts drops of kind `drops[i].0`, meaning `drops[i].1`; `reported` holds the
/// totals already counted.
pub fn report_drops<const N: usize>(
    dropped: &PerCpuArray<MapData, u64>,
    drops: &[(&'static str, &str); N],
    reported: &mut [u64; N],
    metrics: &weir_pipeline::metrics::ComponentMetrics,
) {
    for (slot, (seen, (kind, why))) in reported.iter_mut().zip(drops).enumerate() {
        let total = per_cpu_slot(dropped, slot as u32);
        if total > *seen {
            let n = total - *seen;
            *seen = total;
            metrics.add_discarded(n);
            metrics.error(kind, n, &format_args!("{n} {why}"));
        }
    }
}
