//! The `request` table of a sink, and the state of one retry loop.
//!
//! ```toml
//! [sinks.out.request]
//! concurrency = 4                   # requests (or messages) in flight at once
//! timeout_secs = 30                 # one request; then it counts as failed and is retried
//! retry_initial_backoff_secs = 0.1  # the first wait before a retry; it doubles...
//! retry_max_duration_secs = 30      # ...up to this (and a server's Retry-After is capped here)
//! retry_attempts = 5                # give up after this many retries; unset: retry forever
//! retry_statuses = [409]            # also retry these HTTP statuses (default: see below)
//! reject_statuses = [401]           # treat these as a verdict on the data: not retried
//! ```
//!
//! What an answer means is the toolkit's refusal policy ([`crate::toolkit::retry`]), the same
//! for every sink: 401, 403, 404, 407, 408, 429 and 5xx (and connection errors, timeouts) are
//! retried, 413 splits the request in halves, any other 4xx rejects its events.
//! `retry_statuses` and `reject_statuses` move single statuses from one side to the other
//! (a status may be in only one of them; `413` in either stops the splitting).
//!
//! Each sink chooses its defaults ([`RequestDefaults`]) and may say that an option does not
//! apply to it ([`RequestDefaults::NOT_HERE`]); both are applied when the configuration is
//! read, so a wrong value is an error at its file:line:col.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use weir_pipeline::config::{Concurrency, Secs};
use weir_pipeline::retry::Backoff;
use weir_pipeline::shutdown::ShutdownToken;

use super::retry::RefusalPolicy;

/// A sink's defaults for its `request` table.
pub trait RequestDefaults: 'static {
    const CONCURRENCY: Concurrency;
    const TIMEOUT: Secs;
    const RETRY_INITIAL_BACKOFF: Secs = Secs::from_millis(100);
    const RETRY_MAX_DURATION: Secs = Secs::from_secs(30);
    /// Options of the table this sink does not have, each with what to use instead.
    const NOT_HERE: &'static [(&'static str, &'static str)] = &[];
}

/// `request`: how a sink sends. See the module docs; the defaults are the sink's.
#[derive(Serialize)]
#[serde(bound = "")]
pub struct RequestConfig<D> {
    /// Requests in flight at once. Default: per sink.
    pub concurrency: Concurrency,
    /// How long one request may take before it counts as failed (and is retried), in
    /// seconds. Default: per sink.
    pub timeout_secs: Secs,
    /// The first wait before a retry, in seconds; it doubles (with jitter) after each failed
    /// attempt. Default: 0.1.
    pub retry_initial_backoff_secs: Secs,
    /// The longest wait between two attempts, in seconds (a server's `Retry-After` is capped
    /// to it too). Default: 30.
    pub retry_max_duration_secs: Secs,
    /// Give up after this many retries (the events are then finalized as errored, counted
    /// and logged). Default: unset (retry until delivered; backpressure meanwhile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_attempts: Option<u32>,
    /// HTTP statuses retried (with backoff, until delivered) whatever the default policy
    /// says, e.g. `[409]`. Default: none (401, 403, 404, 407, 408, 429 and 5xx are retried
    /// anyway). gRPC codes follow their usual HTTP status.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retry_statuses: Vec<u16>,
    /// HTTP statuses that reject the events of the request (a verdict on the data, not
    /// retried) whatever the default policy says, e.g. `[401, 403]` to drop rather than wait
    /// for credentials, or `[413]` to reject rather than split. Default: none (any 4xx but
    /// 401, 403, 404, 407, 408, 413 and 429 rejects anyway).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reject_statuses: Vec<u16>,
    #[serde(skip)]
    defaults: PhantomData<fn() -> D>,
}

/// Inlined in each sink's schema, with that sink's defaults and without the options it refuses.
impl<D: RequestDefaults> schemars::JsonSchema for RequestConfig<D> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("RequestConfig<{}>", std::any::type_name::<D>()).into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let max = weir_pipeline::config::MAX_SECS;
        let secs = |description: &str, default: Secs| {
            serde_json::json!({
                "description": description,
                "type": "number", "exclusiveMinimum": 0, "maximum": max,
                "default": default.as_f64()
            })
        };
        let mut properties = serde_json::Map::new();
        properties.insert(
            "concurrency".into(),
            serde_json::json!({
                "description": "Requests in flight at once.",
                "type": "integer", "minimum": 1,
                "maximum": weir_pipeline::config::MAX_CONCURRENCY,
                "default": D::CONCURRENCY.get()
            }),
        );
        properties.insert(
            "timeout_secs".into(),
            secs(
                "How long one request may take before it counts as failed (and is retried), in seconds.",
                D::TIMEOUT,
            ),
        );
        properties.insert(
            "retry_initial_backoff_secs".into(),
            secs(
                "The first wait before a retry, in seconds; it doubles (with jitter) after each failed attempt.",
                D::RETRY_INITIAL_BACKOFF,
            ),
        );
        properties.insert(
            "retry_max_duration_secs".into(),
            secs(
                "The longest wait between two attempts, in seconds (a server's `Retry-After` is capped to it too).",
                D::RETRY_MAX_DURATION,
            ),
        );
        properties.insert(
            "retry_attempts".into(),
            serde_json::json!({
                "description": "Give up after this many retries (the events are then finalized as errored, counted and logged). Default: unset (retry until delivered; backpressure meanwhile).",
                "type": "integer", "minimum": 0
            }),
        );
        let statuses = |description: &str| {
            serde_json::json!({
                "description": description,
                "type": "array",
                "items": {"type": "integer", "minimum": 100, "maximum": 599},
                "uniqueItems": true,
                "default": []
            })
        };
        properties.insert(
            "retry_statuses".into(),
            statuses("HTTP statuses retried (with backoff, until delivered) whatever the default policy says, e.g. `[409]`. By default 401, 403, 404, 407, 408, 429 and 5xx are retried, 413 splits the request in halves, any other 4xx rejects. gRPC codes follow their usual HTTP status."),
        );
        properties.insert(
            "reject_statuses".into(),
            statuses("HTTP statuses that reject the events of the request (a verdict on the data, not retried) whatever the default policy says, e.g. `[401, 403]`, or `[413]` to reject rather than split."),
        );
        for (name, _) in D::NOT_HERE {
            properties.remove(*name);
        }
        schemars::json_schema!({
            "description": "`request`: how the sink sends (the defaults are this sink's).",
            "type": "object",
            "additionalProperties": false,
            "properties": properties
        })
    }
}

impl<D> Clone for RequestConfig<D> {
    fn clone(&self) -> Self {
        Self {
            concurrency: self.concurrency,
            timeout_secs: self.timeout_secs,
            retry_initial_backoff_secs: self.retry_initial_backoff_secs,
            retry_max_duration_secs: self.retry_max_duration_secs,
            retry_attempts: self.retry_attempts,
            retry_statuses: self.retry_statuses.clone(),
            reject_statuses: self.reject_statuses.clone(),
            defaults: PhantomData,
        }
    }
}

impl<D> fmt::Debug for RequestConfig<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestConfig")
            .field("concurrency", &self.concurrency)
            .field("timeout_secs", &self.timeout_secs)
            .field(
                "retry_initial_backoff_secs",
                &self.retry_initial_backoff_secs,
            )
            .field("retry_max_duration_secs", &self.retry_max_duration_secs)
            .field("retry_attempts", &self.retry_attempts)
            .field("retry_statuses", &self.retry_statuses)
            .field("reject_statuses", &self.reject_statuses)
            .finish()
    }
}

impl<D: RequestDefaults> Default for RequestConfig<D> {
    fn default() -> Self {
        Self {
            concurrency: D::CONCURRENCY,
            timeout_secs: D::TIMEOUT,
            retry_initial_backoff_secs: D::RETRY_INITIAL_BACKOFF,
            retry_max_duration_secs: D::RETRY_MAX_DURATION,
            retry_attempts: None,
            retry_statuses: Vec::new(),
            reject_statuses: Vec::new(),
            defaults: PhantomData,
        }
    }
}

/// The table as written: every option may be left out.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    concurrency: Option<Concurrency>,
    timeout_secs: Option<Secs>,
    retry_initial_backoff_secs: Option<Secs>,
    retry_max_duration_secs: Option<Secs>,
    retry_attempts: Option<u32>,
    retry_statuses: Option<Vec<u16>>,
    reject_statuses: Option<Vec<u16>>,
}

/// Checks a list of statuses: real HTTP statuses, not successes.
fn check_statuses(name: &str, list: &[u16]) -> Result<(), String> {
    for s in list {
        if !(100..=599).contains(s) {
            return Err(format!("`request.{name}`: {s} is not an HTTP status"));
        }
        if (200..300).contains(s) {
            return Err(format!("`request.{name}`: {s} is a success"));
        }
    }
    Ok(())
}

impl<'de, D: RequestDefaults> Deserialize<'de> for RequestConfig<D> {
    fn deserialize<De: Deserializer<'de>>(d: De) -> Result<Self, De::Error> {
        let raw = Raw::deserialize(d)?;
        let set = [
            ("concurrency", raw.concurrency.is_some()),
            ("timeout_secs", raw.timeout_secs.is_some()),
            (
                "retry_initial_backoff_secs",
                raw.retry_initial_backoff_secs.is_some(),
            ),
            (
                "retry_max_duration_secs",
                raw.retry_max_duration_secs.is_some(),
            ),
            ("retry_attempts", raw.retry_attempts.is_some()),
            ("retry_statuses", raw.retry_statuses.is_some()),
            ("reject_statuses", raw.reject_statuses.is_some()),
        ];
        for (name, instead) in D::NOT_HERE {
            if set.iter().any(|(n, s)| n == name && *s) {
                return Err(serde::de::Error::custom(format!(
                    "`request.{name}` does not apply to this sink: {instead}"
                )));
            }
        }
        let retry_statuses = raw.retry_statuses.unwrap_or_default();
        let reject_statuses = raw.reject_statuses.unwrap_or_default();
        check_statuses("retry_statuses", &retry_statuses).map_err(serde::de::Error::custom)?;
        check_statuses("reject_statuses", &reject_statuses).map_err(serde::de::Error::custom)?;
        if let Some(s) = retry_statuses.iter().find(|s| reject_statuses.contains(s)) {
            return Err(serde::de::Error::custom(format!(
                "`request.retry_statuses` and `request.reject_statuses` both name {s}"
            )));
        }
        let def = Self::default();
        Ok(Self {
            concurrency: raw.concurrency.unwrap_or(def.concurrency),
            timeout_secs: raw.timeout_secs.unwrap_or(def.timeout_secs),
            retry_initial_backoff_secs: raw
                .retry_initial_backoff_secs
                .unwrap_or(def.retry_initial_backoff_secs),
            retry_max_duration_secs: raw
                .retry_max_duration_secs
                .unwrap_or(def.retry_max_duration_secs),
            retry_attempts: raw.retry_attempts,
            retry_statuses,
            reject_statuses,
            defaults: PhantomData,
        })
    }
}

impl<D> RequestConfig<D> {
    pub fn concurrency(&self) -> usize {
        self.concurrency.get()
    }

    pub fn timeout(&self) -> Duration {
        self.timeout_secs.duration()
    }

    /// The longest wait between attempts.
    pub fn max_backoff(&self) -> Duration {
        self.retry_max_duration_secs.duration()
    }

    /// What answers mean for this sink ([`crate::toolkit::retry`]).
    pub fn policy(&self) -> RefusalPolicy {
        RefusalPolicy {
            retry: self.retry_statuses.clone(),
            reject: self.reject_statuses.clone(),
        }
    }

    /// A fresh retry loop for one request.
    pub fn retries(&self) -> Retries {
        Retries {
            backoff: Backoff::new(
                self.retry_initial_backoff_secs.duration(),
                self.max_backoff(),
            ),
            max: self.max_backoff(),
            failed: 0,
            limit: self.retry_attempts,
        }
    }
}

/// The retry loop of one request: how long to wait after each failure, and when to give up.
#[derive(Debug, Clone)]
pub struct Retries {
    backoff: Backoff,
    max: Duration,
    failed: u32,
    limit: Option<u32>,
}

impl Retries {
    /// After a failed attempt worth retrying: the wait before the next attempt (at least the
    /// server's `Retry-After`, capped at `retry_max_duration_secs`), or `None` when
    /// `retry_attempts` are used up.
    pub fn next_delay(&mut self, server_delay: Option<Duration>) -> Option<Duration> {
        self.failed = self.failed.saturating_add(1);
        if self.limit.is_some_and(|m| self.failed > m) {
            return None;
        }
        let d = self.backoff.next_delay();
        Some(server_delay.map_or(d, |s| s.min(self.max).max(d)))
    }

    /// Attempts made so far that failed.
    pub fn failed(&self) -> u32 {
        self.failed
    }

    /// Whether the next failure ends the loop (for sinks that must decide before sending).
    pub fn is_last(&self) -> bool {
        self.limit.is_some_and(|m| self.failed >= m)
    }

    /// After a failed attempt worth retrying: waits before the next attempt (see
    /// [`Retries::next_delay`]), unless `stop` fires first. [`Wait::Again`]: send again;
    /// [`Wait::GaveUp`]: `retry_attempts` are used up; [`Wait::Stopped`]: the sink must give
    /// up at once (the grace period of a shutdown expired), leaving its events unacknowledged.
    pub async fn wait(&mut self, server_delay: Option<Duration>, stop: &ShutdownToken) -> Wait {
        if stop.is_cancelled() {
            return Wait::Stopped;
        }
        let Some(d) = self.next_delay(server_delay) else {
            return Wait::GaveUp;
        };
        if sleep_or_stop(d, stop).await {
            Wait::Again
        } else {
            Wait::Stopped
        }
    }

    /// Call after a success (loops that send several requests keep one `Retries`).
    pub fn reset(&mut self) {
        self.failed = 0;
        self.backoff.reset();
    }
}

/// What [`Retries::wait`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Waited: send again.
    Again,
    /// `request.retry_attempts` are used up.
    GaveUp,
    /// The sink was told to stop: give up now, leaving the events unacknowledged (errored).
    Stopped,
}

/// Sleeps for `d` unless `stop` fires first; returns whether it slept the whole time.
pub async fn sleep_or_stop(d: Duration, stop: &ShutdownToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.cancelled() => false,
    }
}

/// Runs `fut` unless `stop` fires first (`None` then): for a request in flight when the sink
/// must give up.
pub async fn unless_stopped<F: std::future::Future>(
    fut: F,
    stop: &ShutdownToken,
) -> Option<F::Output> {
    tokio::select! {
        out = fut => Some(out),
        _ = stop.cancelled() => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_pipeline::config::Concurrency;

    struct D;
    impl RequestDefaults for D {
        const CONCURRENCY: Concurrency = Concurrency::of(2);
        const TIMEOUT: Secs = Secs::from_secs(10);
        const NOT_HERE: &'static [(&'static str, &'static str)] =
            &[("timeout_secs", "use `other_option`")];
    }

    #[test]
    fn defaults_are_the_sinks_and_options_may_not_apply() {
        let r: RequestConfig<D> = toml::from_str("").unwrap();
        assert_eq!(r.concurrency(), 2);
        assert_eq!(r.max_backoff(), Duration::from_secs(30));
        let r: RequestConfig<D> = toml::from_str("concurrency = 7\nretry_attempts = 0").unwrap();
        assert_eq!((r.concurrency(), r.retry_attempts), (7, Some(0)));
        let e = toml::from_str::<RequestConfig<D>>("timeout_secs = 1").unwrap_err();
        assert_eq!(
            e.message(),
            "`request.timeout_secs` does not apply to this sink: use `other_option`"
        );
        assert!(toml::from_str::<RequestConfig<D>>("bogus = 1").is_err());
    }

    #[test]
    fn status_lists() {
        use crate::toolkit::retry::Verdict;
        let r: RequestConfig<D> =
            toml::from_str("retry_statuses = [409]\nreject_statuses = [401, 413]").unwrap();
        let p = r.policy();
        assert_eq!(
            (p.http(409), p.http(401), p.http(413), p.http(403)),
            (
                Verdict::Retry,
                Verdict::Reject,
                Verdict::Reject,
                Verdict::Retry
            )
        );
        for bad in [
            "retry_statuses = [200]",
            "reject_statuses = [600]",
            "retry_statuses = [401]\nreject_statuses = [401]",
            "retry_statuses = 401",
        ] {
            assert!(toml::from_str::<RequestConfig<D>>(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_wait_ends_when_the_sink_is_stopped() {
        let r: RequestConfig<D> = toml::from_str("retry_initial_backoff_secs = 3600").unwrap();
        let mut x = r.retries();
        let stop = ShutdownToken::new();
        let s2 = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            s2.cancel();
        });
        let started = std::time::Instant::now();
        assert_eq!(x.wait(None, &stop).await, Wait::Stopped);
        assert!(started.elapsed() < Duration::from_secs(600));
        assert_eq!(x.wait(None, &stop).await, Wait::Stopped);
        let r: RequestConfig<D> =
            toml::from_str("retry_initial_backoff_secs = 0.001\nretry_attempts = 1").unwrap();
        let mut x = r.retries();
        let stop = ShutdownToken::new();
        assert_eq!(x.wait(None, &stop).await, Wait::Again);
        assert_eq!(x.wait(None, &stop).await, Wait::GaveUp);
    }

    #[test]
    fn retries_give_up_after_the_attempts() {
        let r: RequestConfig<D> = toml::from_str("retry_attempts = 2").unwrap();
        let mut x = r.retries();
        assert!(x.next_delay(None).is_some());
        assert!(x.next_delay(Some(Duration::from_secs(3600))).unwrap() <= Duration::from_secs(30));
        assert!(x.next_delay(None).is_none());
        let r: RequestConfig<D> = toml::from_str("").unwrap();
        let mut x = r.retries();
        assert!((0..100).all(|_| x.next_delay(None).is_some()));
    }
}
