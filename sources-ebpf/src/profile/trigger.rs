//! Triggered profiling: `ebpf_profile` records only while a condition on the machine's load
//! (or a process's CPU use) holds. User space checks it every `check_interval_secs` and
//! pauses or resumes the kernel programs through the `paused` map; each event carries the
//! condition and the highest value measured while recording.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use weir_pipeline::config::Secs;
use weir_pipeline::event::{ObjectMap, Value};

/// What a trigger measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerMetric {
    /// The 1-minute load average (`/proc/loadavg`, first field).
    Load1,
    /// Tasks runnable right now, on a CPU or waiting for one (`/proc/loadavg`, fourth field;
    /// Weir's own reading thread is one of them).
    Runnable,
    /// The CPU share of process `pid` since the previous check, in CPUs (1.0: one CPU busy),
    /// from `/proc/<pid>/stat`.
    ProcessCpu,
}

impl TriggerMetric {
    fn name(self) -> &'static str {
        match self {
            Self::Load1 => "load1",
            Self::Runnable => "runnable",
            Self::ProcessCpu => "process_cpu",
        }
    }
}

/// `trigger`: record only while `metric` is above `above`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileTrigger {
    /// What is measured: `load1` (the 1-minute load average), `runnable` (tasks runnable now)
    /// or `process_cpu` (the CPU share of process `pid`, in CPUs).
    pub metric: TriggerMetric,
    /// Record while the measure is strictly above this.
    pub above: f64,
    /// `process_cpu`: the process measured. Default: the source's `pid`.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Seconds between two checks of the condition. Default: 1.
    #[serde(default = "default_check")]
    pub check_interval_secs: Secs,
}

fn default_check() -> Secs {
    Secs::from_secs(1)
}

/// A trigger being checked.
pub(super) struct Trigger {
    metric: TriggerMetric,
    above: f64,
    pid: u32,
    /// `process_cpu`: the process's CPU ticks at the previous check, and when.
    last_ticks: Option<(u64, Instant)>,
    ticks_per_sec: f64,
    /// `metric > above`, as each event shows it.
    condition: Value,
    /// Recording now.
    pub recording: bool,
    /// The highest value measured while recording since the last drain.
    max: f64,
    /// The last value measured.
    last: f64,
}

/// A change of the recording state.
#[derive(Debug, PartialEq)]
pub(super) enum Change {
    Start(f64),
    Stop(f64),
}

impl Trigger {
    pub(super) fn new(cfg: &ProfileTrigger, source_pid: Option<u32>) -> Result<Self, String> {
        if !cfg.above.is_finite() {
            return Err("`trigger.above` must be a finite number".into());
        }
        let pid = match (cfg.metric, cfg.pid.or(source_pid)) {
            (TriggerMetric::ProcessCpu, None | Some(0)) => return Err(
                "`trigger.metric = \"process_cpu\"` needs `trigger.pid` (or the source's `pid`)"
                    .into(),
            ),
            (_, p) => p.unwrap_or(0),
        };
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let name = match cfg.metric {
            TriggerMetric::ProcessCpu => format!("process_cpu(pid {pid}) > {}", cfg.above),
            m => format!("{} > {}", m.name(), cfg.above),
        };
        Ok(Self {
            metric: cfg.metric,
            above: cfg.above,
            pid,
            last_ticks: None,
            ticks_per_sec: if hz > 0 { hz as f64 } else { 100.0 },
            condition: Value::from(name),
            recording: false,
            max: 0.0,
            last: 0.0,
        })
    }

    /// Measures now; `Err` when it cannot (the process is gone, /proc unreadable): the
    /// condition is then taken as not holding.
    fn measure(&mut self, proc_root: &Path) -> Result<f64, String> {
        match self.metric {
            TriggerMetric::Load1 | TriggerMetric::Runnable => {
                let text = std::fs::read_to_string(proc_root.join("loadavg"))
                    .map_err(|e| format!("reading /proc/loadavg: {e}"))?;
                parse_loadavg(&text, self.metric)
                    .ok_or_else(|| format!("unexpected /proc/loadavg: {text:?}"))
            }
            TriggerMetric::ProcessCpu => {
                let path = proc_root.join(self.pid.to_string()).join("stat");
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("reading {}: {e}", path.display()))?;
                let ticks = parse_stat_ticks(&text)
                    .ok_or_else(|| format!("unexpected {}", path.display()))?;
                let now = Instant::now();
                let share = match self.last_ticks {
                    Some((t0, at)) => {
                        let secs = now.duration_since(at).as_secs_f64();
                        if secs > 0.0 {
                            ticks.saturating_sub(t0) as f64 / self.ticks_per_sec / secs
                        } else {
                            0.0
                        }
                    }
                    None => 0.0,
                };
                self.last_ticks = Some((ticks, now));
                Ok(share)
            }
        }
    }

    /// Checks the condition; says when recording must start or stop, and any measuring error.
    pub(super) fn check(&mut self, proc_root: &Path) -> (Option<Change>, Option<String>) {
        let (value, error) = match self.measure(proc_root) {
            Ok(v) => (v, None),
            Err(e) => {
                self.last_ticks = None;
                (f64::NEG_INFINITY, Some(e))
            }
        };
        self.last = value;
        let holds = value > self.above;
        let change = match (self.recording, holds) {
            (false, true) => {
                self.recording = true;
                self.max = value;
                Some(Change::Start(value))
            }
            (true, false) => {
                self.recording = false;
                Some(Change::Stop(value))
            }
            (true, true) => {
                self.max = self.max.max(value);
                None
            }
            (false, false) => None,
        };
        (change, error)
    }

    /// The `trigger` field of the events of a drain: the condition and the highest value
    /// measured while recording since the previous drain (starting over from here).
    pub(super) fn field(&mut self) -> Value {
        let mut m = ObjectMap::new();
        m.insert("condition".into(), self.condition.clone());
        m.insert("value".into(), Value::from_f64_or_zero(self.max));
        self.max = if self.recording { self.last } else { 0.0 };
        Value::Object(m)
    }
}

/// The 1-minute load average or the runnable count from the text of /proc/loadavg
/// (`0.52 0.58 0.59 3/1001 12345`).
fn parse_loadavg(text: &str, metric: TriggerMetric) -> Option<f64> {
    let mut f = text.split_whitespace();
    match metric {
        TriggerMetric::Load1 => f.next()?.parse().ok(),
        _ => f.nth(3)?.split('/').next()?.parse().ok(),
    }
}

/// utime + stime (clock ticks) from the text of /proc/<pid>/stat: fields 14 and 15, counted
/// after the command, which is in parentheses and may hold spaces and parentheses.
fn parse_stat_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    // rest starts at field 3 (state).
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg_and_stat_are_parsed() {
        let l = "2.52 0.58 0.59 3/1001 12345\n";
        assert_eq!(parse_loadavg(l, TriggerMetric::Load1), Some(2.52));
        assert_eq!(parse_loadavg(l, TriggerMetric::Runnable), Some(3.0));
        let stat = "42 (a (b) c) R 1 42 42 0 -1 4194304 100 0 0 0 150 25 0 0 20 0 1 0 1000 \
                    1000000 100 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(175));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn recording_starts_above_and_stops_at_or_below_the_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let cfg: ProfileTrigger = toml::from_str("metric = \"load1\"\nabove = 2").unwrap();
        let mut t = Trigger::new(&cfg, None).unwrap();
        let set = |v: &str| std::fs::write(dir.path().join("loadavg"), v).unwrap();
        set("1.5 1 1 1/100 1");
        assert_eq!(t.check(dir.path()), (None, None));
        set("2.5 1 1 1/100 1");
        assert_eq!(t.check(dir.path()), (Some(Change::Start(2.5)), None));
        set("3.5 1 1 1/100 1");
        assert_eq!(t.check(dir.path()), (None, None));
        set("3 1 1 1/100 1");
        assert_eq!(t.check(dir.path()), (None, None));
        let Value::Object(f) = t.field() else {
            panic!()
        };
        assert_eq!(f["condition"], Value::from("load1 > 2"));
        assert_eq!(f["value"], Value::from_f64_or_zero(3.5));
        // The next drain starts from the last value.
        let Value::Object(f) = t.field() else {
            panic!()
        };
        assert_eq!(f["value"], Value::from_f64_or_zero(3.0));
        set("2 1 1 1/100 1");
        assert_eq!(t.check(dir.path()), (Some(Change::Stop(2.0)), None));
        // Unreadable: not holding, and said.
        std::fs::remove_file(dir.path().join("loadavg")).unwrap();
        let (change, err) = t.check(dir.path());
        assert_eq!(change, None);
        assert!(err.unwrap().contains("loadavg"));
    }

    #[test]
    fn process_cpu_needs_a_pid() {
        let cfg: ProfileTrigger = toml::from_str("metric = \"process_cpu\"\nabove = 0.5").unwrap();
        assert!(Trigger::new(&cfg, None).is_err());
        assert!(Trigger::new(&cfg, Some(7)).is_ok());
        assert!(toml::from_str::<ProfileTrigger>("metric = \"load5\"\nabove = 1").is_err());
        assert!(toml::from_str::<ProfileTrigger>("metric = \"load1\"").is_err());
    }
}
