//! Saying that a sink's requests fail, without saying it at every retry.
//!
//! A sink that retries until delivered may fail for hours (an expired credential, an index
//! not created yet). [`FailureReporter`] logs the first failed attempt at once, with what
//! failed (the endpoint, the status, the start of the server's answer), then at most one line
//! per period (30 seconds) while failures go on, with the number of failed attempts since the
//! previous line; when a request succeeds again, one info line says so, with how many
//! attempts failed and for how long. Every failed attempt is counted at once in
//! `weir_request_failures_total`; the errors counter (`weir_component_errors_total`,
//! `error_kind="request_failed"`) is updated with each line. One reporter is shared by all
//! the requests a sink has in flight, so the limit holds for the sink as a whole.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_pipeline::metrics::ComponentMetrics;

/// How often a sink that keeps failing says so, at most.
pub const REPORT_PERIOD: Duration = Duration::from_secs(30);

/// The `error_kind` of the lines (and errors counter) of [`FailureReporter`].
pub const ERROR_KIND: &str = "request_failed";

/// See the module docs.
#[derive(Debug)]
pub struct FailureReporter {
    metrics: Arc<ComponentMetrics>,
    period: Duration,
    /// Whether an outage is going on: the only thing a success reads, without the lock.
    failing: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the current outage began.
    since: Option<Instant>,
    /// Failed attempts in the current outage.
    failures: u64,
    /// Failed attempts not in a line yet.
    unreported: u64,
    /// Whether the current outage was logged (then its end is too).
    reported: bool,
    /// The last line (across outages: a flapping endpoint is limited too).
    last_line: Option<Instant>,
}

/// A line [`FailureReporter::failure`] logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported {
    /// Failed attempts in the line (since the previous one).
    pub attempts: u64,
    /// Failed attempts since the outage began.
    pub total: u64,
}

impl FailureReporter {
    /// A reporter for the sink whose counters are `metrics`, with the usual period.
    pub fn new(metrics: Arc<ComponentMetrics>) -> Self {
        Self::with_period(metrics, REPORT_PERIOD)
    }

    /// A reporter with another period (tests).
    pub fn with_period(metrics: Arc<ComponentMetrics>, period: Duration) -> Self {
        Self {
            metrics,
            period,
            failing: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One failed attempt that will be retried; `what` names the request and the answer
    /// (`POST http://es:9200/_bulk: HTTP 401: {"error":…}`). Returns what was logged, if
    /// anything.
    pub fn failure(&self, what: &dyn std::fmt::Display) -> Option<Reported> {
        self.metrics.add_counter("request_failures_total", None, 1);
        let now = Instant::now();
        let mut st = self.state();
        self.failing.store(true, Ordering::Relaxed);
        let since = *st.since.get_or_insert(now);
        st.failures += 1;
        st.unreported += 1;
        if st
            .last_line
            .is_some_and(|t| now.duration_since(t) < self.period)
        {
            return None;
        }
        let r = Reported {
            attempts: std::mem::take(&mut st.unreported),
            total: st.failures,
        };
        st.last_line = Some(now);
        st.reported = true;
        drop(st);
        if r.total == 1 {
            self.metrics.error(
                ERROR_KIND,
                r.attempts,
                &format_args!("{what}; retrying (the events are held, upstream waits)"),
            );
        } else {
            self.metrics.error(
                ERROR_KIND,
                r.attempts,
                &format_args!(
                    "{what}; still failing: {} failed attempt(s) since the last report, {} in {:.0} s; retrying (the events are held, upstream waits)",
                    r.attempts,
                    r.total,
                    now.duration_since(since).as_secs_f64()
                ),
            );
        }
        Some(r)
    }

    /// A request succeeded: ends the outage, if there was one. Returns the failed attempts of
    /// the outage that ended.
    pub fn success(&self) -> Option<u64> {
        if !self.failing.load(Ordering::Relaxed) {
            return None;
        }
        let mut st = self.state();
        self.failing.store(false, Ordering::Relaxed);
        let since = st.since.take()?;
        let failures = std::mem::take(&mut st.failures);
        let reported = std::mem::take(&mut st.reported);
        drop(st);
        if reported {
            tracing::info!(
                component = %self.metrics.id,
                failed_attempts = failures,
                "requests succeed again after {failures} failed attempt(s) in {:.0} s",
                since.elapsed().as_secs_f64()
            );
        }
        Some(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_and_the_recovery() {
        let m = ComponentMetrics::detached("es");
        let r = FailureReporter::with_period(m.clone(), Duration::from_millis(200));
        assert_eq!(r.success(), None);
        assert_eq!(
            r.failure(&"HTTP 401"),
            Some(Reported {
                attempts: 1,
                total: 1
            })
        );
        for _ in 0..50 {
            assert_eq!(r.failure(&"HTTP 401"), None);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            r.failure(&"HTTP 401"),
            Some(Reported {
                attempts: 51,
                total: 52
            })
        );
        assert_eq!(r.success(), Some(52));
        assert_eq!(r.success(), None);
        assert_eq!(m.errors().get(ERROR_KIND), Some(&52));
        assert!(m
            .counters()
            .iter()
            .any(|(n, _, v)| *n == "request_failures_total" && *v == 52));
        // A new outage within the period of the last line waits for the period.
        assert_eq!(r.failure(&"HTTP 503"), None);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            r.failure(&"HTTP 503"),
            Some(Reported {
                attempts: 2,
                total: 2
            })
        );
    }

    #[test]
    fn shared_by_requests_in_flight() {
        let m = ComponentMetrics::detached("es");
        let r = Arc::new(FailureReporter::with_period(m, Duration::from_secs(3600)));
        let lines: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let r = r.clone();
                    s.spawn(move || (0..100).filter(|_| r.failure(&"x").is_some()).count())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        assert_eq!(lines, 1);
        assert_eq!(r.success(), Some(400));
    }
}
