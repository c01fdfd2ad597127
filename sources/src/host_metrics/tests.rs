use std::collections::BTreeMap;
use std::path::Path;

use weir_pipeline::event::MetricValue;

use super::collect::parse_socket;
use super::utmp::{self, LoginLog, Record, DEAD_PROCESS, LOGIN_PROCESS, USER_PROCESS};
use super::*;

fn config(toml_text: &str) -> HostMetricsConfig {
    toml::from_str(toml_text).unwrap()
}

fn value(m: &Metric) -> f64 {
    match m.value {
        MetricValue::Counter { value } | MetricValue::Gauge { value } => value,
        _ => panic!("not a counter or gauge: {m:?}"),
    }
}

/// The value of the one series `name` with exactly these tags (among possibly more).
fn find(ms: &[Metric], name: &str, tags: &[(&str, &str)]) -> Option<f64> {
    let hits: Vec<&Metric> = ms
        .iter()
        .filter(|m| {
            m.name == name
                && tags
                    .iter()
                    .all(|(k, v)| m.tags.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert!(hits.len() <= 1, "{name} {tags:?} matches {hits:?}");
    hits.first().map(|m| value(m))
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn record(kind: i16, line: &str, user: &str, host: &str, time: i64) -> Record {
    Record {
        kind,
        pid: 1000 + time as i32 % 1000,
        line: line.into(),
        user: user.into(),
        host: host.into(),
        time,
    }
}

fn utmp_record(kind: i16, line: &str, user: &str, host: &str) -> Vec<u8> {
    record(kind, line, user, host, 1_700_000_000)
        .to_bytes()
        .to_vec()
}

fn records(rs: &[Record]) -> Vec<u8> {
    rs.iter().flat_map(|r| r.to_bytes()).collect()
}

/// A wtmp: a boot, a getty, remote logins of alice (twice) and dave, a local login of bob,
/// logouts.
fn wtmp_records() -> Vec<Record> {
    vec![
        record(2, "~", "reboot", "6.1.0-13-amd64", 1_700_000_000),
        record(LOGIN_PROCESS, "tty1", "LOGIN", "", 1_700_000_010),
        record(USER_PROCESS, "pts/0", "alice", "10.0.0.1", 1_700_000_100),
        record(USER_PROCESS, "tty1", "bob", "", 1_700_000_200),
        record(DEAD_PROCESS, "pts/0", "", "", 1_700_000_300),
        record(USER_PROCESS, "pts/1", "dave", "2001:db8::7", 1_700_000_400),
        record(USER_PROCESS, "pts/0", "alice", "192.168.1.5", 1_700_000_500),
        record(USER_PROCESS, "pts/2", "erin", ":0", 1_700_000_600),
    ]
}

/// A small but complete fake machine: /proc files, utmp, a cgroup v2 tree.
fn fake_machine(root: &Path) {
    let p = |rel: &str| format!("proc/{rel}");
    write(
        root,
        &p("stat"),
        "cpu  300 6 90 1200 15 0 3 0 0 0\n\
         cpu0 100 2 30 400 5 0 1 0 0 0\n\
         cpu1 200 4 60 800 10 0 2 0 0 0\n\
         intr 12345 1 2 3\n\
         ctxt 999\n\
         btime 1700000000\n\
         processes 4242\n\
         procs_running 3\n\
         procs_blocked 1\n",
    );
    write(
        root,
        &p("meminfo"),
        "MemTotal:       16384 kB\nMemFree:         8192 kB\nMemAvailable:   12000 kB\n\
         Active(anon):     100 kB\nHugePages_Total:       0\nSwapTotal:       2048 kB\n\
         SwapFree:        1024 kB\n",
    );
    write(
        root,
        &p("vmstat"),
        "nr_free_pages 5\npswpin 10\npswpout 20\n",
    );
    write(root, &p("loadavg"), "0.50 1.25 2.00 3/400 12345\n");
    write(
        root,
        &p("diskstats"),
        "   8       0 sda 100 10 2000 50 200 20 4000 70 0 90 130 0 0 0 0\n\
            8       1 sda1 90 9 1800 45 180 18 3600 60 0 80 110 0 0 0 0\n\
            7       0 loop0 1 0 8 0 0 0 0 0 0 0 0 0 0 0 0\n\
          259       0 nvme0n1 5 0 40 1 6 0 48 2 1 3 3\n",
    );
    write(
        root,
        &p("net/dev"),
        "Inter-|   Receive                                                |  Transmit\n \
         face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
         lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n  \
         eth0: 123456 789 1 2 0 0 0 5 654321 987 3 4 0 0 0 0\n",
    );
    write(
        root,
        &p("net/tcp"),
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
         0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   \
         1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n   \
         2: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1\n   \
         3: 0100007F:C351 0100007F:1F90 06 00000000:00000000 00:00000000 00000000     0        0 0 1 0 20 4 30 10 -1\n",
    );
    write(
        root,
        &p("net/tcp6"),
        "  sl  local_address                         remote_address                        st\n   \
         0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0\n",
    );
    let stat = |pid: u32, comm: &str, state: char, threads: u32| {
        format!("{pid} ({comm}) {state} 0 1 1 0 -1 4194560 1 0 0 0 1 1 0 0 20 0 {threads} 0 10 1000 100 1\n")
    };
    write(root, &p("1/stat"), &stat(1, "init", 'S', 1));
    write(root, &p("42/stat"), &stat(42, "a (weird) name", 'R', 4));
    write(root, &p("43/stat"), &stat(43, "worker", 'D', 2));
    write(root, &p("self/stat"), &stat(43, "not a pid dir", 'R', 9));
    write(root, &p("uptime"), "12345.67 23456.78\n");
    write(
        root,
        &p("mounts"),
        "/dev/root / ext4 rw,relatime 0 0\nproc /proc proc rw 0 0\n\
         tmpfs /run/with\\040space tmpfs ro,nosuid 0 0\nsysfs /sys sysfs rw 0 0\n\
         /dev/root / ext4 rw 0 0\n",
    );
    let mut utmp = Vec::new();
    utmp.extend(utmp_record(2, "~", "reboot", "6.1.0"));
    utmp.extend(utmp_record(7, "pts/0", "alice", "10.0.0.1"));
    utmp.extend(utmp_record(7, "pts/1", "alice", "10.0.0.2"));
    utmp.extend(utmp_record(7, "tty1", "bob", ""));
    utmp.extend(utmp_record(8, "pts/2", "carol", "10.0.0.3"));
    utmp.extend(&[0u8; 100]); // a partial record (being written) is ignored
    std::fs::write(root.join("utmp"), utmp).unwrap();
    std::fs::write(root.join("wtmp"), records(&wtmp_records())).unwrap();
    let btmp = [
        record(
            LOGIN_PROCESS,
            "ssh:notty",
            "root",
            "203.0.113.9",
            1_700_000_700,
        ),
        record(
            LOGIN_PROCESS,
            "ssh:notty",
            "admin",
            "203.0.113.9",
            1_700_000_701,
        ),
        record(LOGIN_PROCESS, "tty1", "bob", "", 1_700_000_702),
    ];
    std::fs::write(root.join("btmp"), records(&btmp)).unwrap();
    let cg = |rel: &str| format!("cgroup/{rel}");
    write(root, &cg("cgroup.controllers"), "cpu memory\n");
    write(
        root,
        &cg("cpu.stat"),
        "usage_usec 5000000\nuser_usec 3000000\nsystem_usec 2000000\n",
    );
    write(root, &cg("memory.current"), "1048576\n");
    let c = "system.slice/docker-abc.scope";
    write(
        root,
        &cg(&format!("{c}/cpu.stat")),
        "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\nnr_periods 10\n\
         nr_throttled 2\nthrottled_usec 250000\n",
    );
    write(root, &cg(&format!("{c}/memory.current")), "4096\n");
    write(root, &cg(&format!("{c}/memory.max")), "8192\n");
    write(root, &cg("system.slice/memory.max"), "max\n");
    write(
        root,
        &cg("system.slice/a/b/c/too-deep/memory.current"),
        "1\n",
    );
    std::fs::create_dir_all(root.join("rootfs/run/with space")).unwrap();
}

fn fake_config(root: &Path, extra: &str) -> HostMetricsConfig {
    config(&format!(
        "proc_root = \"{r}/proc\"\nrootfs = \"{r}/rootfs\"\nutmp_path = \"{r}/utmp\"\nwtmp_path = \"{r}/wtmp\"\nbtmp_path = \"{r}/btmp\"\ncgroup_root = \"{r}/cgroup\"\n{extra}",
        r = root.display()
    ))
}

#[test]
fn every_collector_reads_the_fake_machine() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fake_machine(root);
    let cfg = fake_config(root, "");
    let mut host = cfg.host().unwrap();
    host.ticks_per_sec = 100.0;
    let collectors = cfg.collectors().unwrap();
    assert!(collectors.contains(&Collector::Cgroups));
    let (ms, errors) = scrape(&host, &collectors);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(ms.iter().all(|m| m.timestamp.is_some()));

    // cpu, per cpu and mode, in seconds (USER_HZ = 100).
    assert_eq!(
        find(
            &ms,
            "node_cpu_seconds_total",
            &[("cpu", "1"), ("mode", "user")]
        ),
        Some(2.0)
    );
    assert_eq!(
        find(
            &ms,
            "node_cpu_seconds_total",
            &[("cpu", "0"), ("mode", "idle")]
        ),
        Some(4.0)
    );
    assert_eq!(
        ms.iter()
            .filter(|m| m.name == "node_cpu_seconds_total")
            .count(),
        16,
        "2 CPUs x 8 modes, no machine-wide line"
    );
    assert_eq!(find(&ms, "node_context_switches_total", &[]), Some(999.0));
    assert_eq!(find(&ms, "node_boot_time_seconds", &[]), Some(1.7e9));
    assert_eq!(find(&ms, "node_forks_total", &[]), Some(4242.0));
    assert_eq!(find(&ms, "node_procs_running", &[]), Some(3.0));
    assert_eq!(find(&ms, "node_procs_blocked", &[]), Some(1.0));
    assert_eq!(find(&ms, "node_intr_total", &[]), Some(12345.0));
    // memory and swap.
    assert_eq!(
        find(&ms, "node_memory_MemTotal_bytes", &[]),
        Some(16384.0 * 1024.0)
    );
    assert_eq!(
        find(&ms, "node_memory_Active_anon_bytes", &[]),
        Some(102400.0)
    );
    assert_eq!(find(&ms, "node_memory_HugePages_Total", &[]), Some(0.0));
    assert_eq!(
        find(&ms, "node_memory_SwapFree_bytes", &[]),
        Some(1024.0 * 1024.0)
    );
    assert_eq!(find(&ms, "node_vmstat_pswpout", &[]), Some(20.0));
    // load.
    assert_eq!(find(&ms, "node_load1", &[]), Some(0.5));
    assert_eq!(find(&ms, "node_load15", &[]), Some(2.0));
    // disks: partitions and loop devices left out.
    assert_eq!(
        find(&ms, "node_disk_read_bytes_total", &[("device", "sda")]),
        Some(2000.0 * 512.0)
    );
    assert_eq!(
        find(&ms, "node_disk_io_time_seconds_total", &[("device", "sda")]),
        Some(0.09)
    );
    assert_eq!(
        find(
            &ms,
            "node_disk_writes_completed_total",
            &[("device", "nvme0n1")]
        ),
        Some(6.0)
    );
    assert!(find(&ms, "node_disk_read_bytes_total", &[("device", "sda1")]).is_none());
    assert!(find(&ms, "node_disk_read_bytes_total", &[("device", "loop0")]).is_none());
    // filesystems: pseudo ones and duplicates left out, octal escapes undone.
    let fs: Vec<&str> = ms
        .iter()
        .filter(|m| m.name == "node_filesystem_size_bytes")
        .map(|m| m.tags["mountpoint"].as_str())
        .collect();
    assert_eq!(fs, ["/", "/run/with space"]);
    assert_eq!(
        find(
            &ms,
            "node_filesystem_readonly",
            &[("mountpoint", "/run/with space")]
        ),
        Some(1.0)
    );
    assert_eq!(
        find(&ms, "node_filesystem_readonly", &[("mountpoint", "/")]),
        Some(0.0)
    );
    // The same filesystem as the temp dir, measured through statvfs of the rootfs prefix.
    let size = find(&ms, "node_filesystem_size_bytes", &[("mountpoint", "/")]).unwrap();
    let avail = find(&ms, "node_filesystem_avail_bytes", &[("mountpoint", "/")]).unwrap();
    assert!(size > 0.0 && avail <= size, "{size} {avail}");
    // network.
    assert_eq!(
        find(
            &ms,
            "node_network_receive_bytes_total",
            &[("device", "eth0")]
        ),
        Some(123456.0)
    );
    assert_eq!(
        find(
            &ms,
            "node_network_transmit_drop_total",
            &[("device", "eth0")]
        ),
        Some(4.0)
    );
    assert_eq!(
        find(
            &ms,
            "node_network_receive_multicast_total",
            &[("device", "eth0")]
        ),
        Some(5.0)
    );
    // tcp.
    let st = |s| find(&ms, "node_tcp_connection_states", &[("state", s)]);
    assert_eq!(
        (
            st("listen"),
            st("established"),
            st("time_wait"),
            st("close_wait")
        ),
        (Some(2.0), Some(2.0), Some(1.0), Some(0.0))
    );
    assert_eq!(
        find(
            &ms,
            "node_tcp_listening_port",
            &[
                ("family", "ipv4"),
                ("address", "127.0.0.1"),
                ("port", "8080")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        find(
            &ms,
            "node_tcp_listening_port",
            &[("family", "ipv6"), ("address", "::"), ("port", "22")]
        ),
        Some(1.0)
    );
    // processes.
    assert_eq!(find(&ms, "node_processes_pids", &[]), Some(3.0));
    assert_eq!(find(&ms, "node_processes_threads", &[]), Some(7.0));
    assert_eq!(
        find(&ms, "node_processes_state", &[("state", "R")]),
        Some(1.0)
    );
    assert_eq!(
        find(&ms, "node_processes_state", &[("state", "D")]),
        Some(1.0)
    );
    // users: only USER_PROCESS records.
    assert_eq!(find(&ms, "node_logged_in_users", &[]), Some(2.0));
    assert_eq!(find(&ms, "node_logged_in_sessions", &[]), Some(3.0));
    assert_eq!(
        find(&ms, "node_logged_in_user_sessions", &[("user", "alice")]),
        Some(2.0)
    );
    assert!(find(&ms, "node_logged_in_user_sessions", &[("user", "carol")]).is_none());
    // logins: remote logins from wtmp (not bob's console, not erin's X display), failed
    // remote logins from btmp.
    assert_eq!(
        find(&ms, "node_ssh_logins_total", &[("user", "alice")]),
        Some(2.0)
    );
    assert_eq!(
        find(
            &ms,
            "node_ssh_last_login_timestamp_seconds",
            &[("user", "alice")]
        ),
        Some(1_700_000_500.0)
    );
    assert_eq!(
        find(&ms, "node_ssh_logins_total", &[("user", "dave")]),
        Some(1.0)
    );
    let users: Vec<&str> = ms
        .iter()
        .filter(|m| m.name == "node_ssh_logins_total")
        .map(|m| m.tags["user"].as_str())
        .collect();
    assert_eq!(users, ["alice", "dave"]);
    assert_eq!(find(&ms, "node_ssh_failed_logins_total", &[]), Some(2.0));
    // uptime.
    assert_eq!(find(&ms, "node_uptime_seconds", &[]), Some(12345.67));
    // cgroups, down to the configured depth.
    assert_eq!(
        find(&ms, "container_cpu_usage_seconds_total", &[("cgroup", "/")]),
        Some(5.0)
    );
    let c = "/system.slice/docker-abc.scope";
    assert_eq!(
        find(&ms, "container_cpu_usage_seconds_total", &[("cgroup", c)]),
        Some(1.5)
    );
    assert_eq!(
        find(
            &ms,
            "container_cpu_cfs_throttled_seconds_total",
            &[("cgroup", c)]
        ),
        Some(0.25)
    );
    assert_eq!(
        find(&ms, "container_memory_usage_bytes", &[("cgroup", c)]),
        Some(4096.0)
    );
    assert_eq!(
        find(&ms, "container_spec_memory_limit_bytes", &[("cgroup", c)]),
        Some(8192.0)
    );
    assert!(
        find(
            &ms,
            "container_spec_memory_limit_bytes",
            &[("cgroup", "/system.slice")]
        )
        .is_none(),
        "`max` is no limit"
    );
    assert!(
        !ms.iter()
            .any(|m| m.tags.get("cgroup").is_some_and(|c| c.contains("too-deep"))),
        "deeper than cgroup_max_depth"
    );
}

#[test]
fn machine_wide_cpu_and_a_subset_of_collectors() {
    let dir = tempfile::tempdir().unwrap();
    fake_machine(dir.path());
    let cfg = fake_config(
        dir.path(),
        "cpu_per_cpu = false\ncollectors = [\"cpu\", \"load\"]",
    );
    let mut host = cfg.host().unwrap();
    host.ticks_per_sec = 100.0;
    let (ms, errors) = scrape(&host, &cfg.collectors().unwrap());
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        find(&ms, "node_cpu_seconds_total", &[("mode", "user")]),
        Some(3.0)
    );
    assert!(ms.iter().all(|m| !m.tags.contains_key("cpu")));
    let names: std::collections::BTreeSet<&str> = ms.iter().map(|m| m.name.as_str()).collect();
    assert!(names.contains("node_load5"));
    assert!(!names.iter().any(|n| n.starts_with("node_memory")));
}

#[test]
fn a_failing_collector_is_reported_and_the_others_still_report() {
    let dir = tempfile::tempdir().unwrap();
    fake_machine(dir.path());
    std::fs::remove_file(dir.path().join("proc/loadavg")).unwrap();
    std::fs::write(dir.path().join("proc/uptime"), "garbage").unwrap();
    std::fs::remove_file(dir.path().join("utmp")).unwrap();
    let cfg = fake_config(dir.path(), "");
    let (ms, errors) = scrape(&cfg.host().unwrap(), &cfg.collectors().unwrap());
    let failed: Vec<&str> = errors.iter().map(|e| e.collector).collect();
    assert_eq!(failed, ["load", "users", "uptime"], "{errors:?}");
    assert!(errors[0].to_string().contains("loadavg"), "{}", errors[0]);
    assert!(find(&ms, "node_memory_MemTotal_bytes", &[]).is_some());
}

#[test]
fn config_errors() {
    assert!(toml::from_str::<HostMetricsConfig>("collectors = [\"gpu\"]").is_err());
    assert!(toml::from_str::<HostMetricsConfig>("proc = \"/x\"").is_err());
    let c = config("collectors = [\"cgroups\"]");
    assert!(c.collectors().unwrap_err().contains("cgroup_root"));
    assert!(config("collectors = []").collectors().is_err());
    let c = config("disks_exclude = \"(\"");
    assert!(c.host().unwrap_err().contains("disks_exclude"));
    let d = config("");
    assert_eq!(d.collectors().unwrap().len(), 12);
    assert!(!d.collectors().unwrap().contains(&Collector::Cgroups));
}

#[test]
fn socket_addresses_decode() {
    assert_eq!(
        parse_socket("0100007F:1F90"),
        Some(("127.0.0.1".into(), 8080))
    );
    assert_eq!(
        parse_socket("00000000000000000000000001000000:0016"),
        Some(("::1".into(), 22))
    );
    assert_eq!(parse_socket("zz:1"), None);
    assert_eq!(parse_socket("0100007F"), None);
}

#[test]
fn utmp_keeps_user_processes_only() {
    let mut data = utmp_record(7, "pts/0", "root", "host");
    data.extend(utmp_record(6, "tty2", "LOGIN", ""));
    let s = utmp::sessions(&data);
    assert_eq!(s.len(), 1);
    assert_eq!(
        (s[0].user.as_str(), s[0].line.as_str(), s[0].host.as_str()),
        ("root", "pts/0", "host")
    );
}

#[test]
fn utmp_records_decode_field_by_field() {
    // A record built byte by byte at the offsets of glibc's `struct utmp`, with a user name
    // that fills its 32 bytes (no NUL) and a time past 2038 in a signed int32.
    let mut r = vec![0u8; utmp::RECORD_SIZE];
    r[0..2].copy_from_slice(&7i16.to_ne_bytes());
    r[4..8].copy_from_slice(&4242i32.to_ne_bytes());
    r[8..13].copy_from_slice(b"pts/9");
    r[40..44].copy_from_slice(b"ts/9");
    r[44..76].copy_from_slice(&[b'u'; 32]);
    r[76..84].copy_from_slice(b"10.1.2.3");
    r[340..344].copy_from_slice(&(3_000_000_000u32 as i32).to_ne_bytes());
    let got: Vec<Record> = utmp::records(&r).collect();
    assert_eq!(
        got,
        [Record {
            kind: 7,
            pid: 4242,
            line: "pts/9".into(),
            user: "u".repeat(32),
            host: "10.1.2.3".into(),
            time: 3_000_000_000,
        }]
    );
    assert_eq!(got[0].to_bytes().to_vec(), r);
}

#[test]
fn wtmp_is_read_on_from_where_it_stopped_and_starts_over_when_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wtmp");
    let rs = wtmp_records();
    let mut data = records(&rs[..3]);
    // Half of the next record: being written.
    data.extend(&rs[3].to_bytes()[..200]);
    std::fs::write(&path, &data).unwrap();
    let mut log = LoginLog::default();
    log.update(&path).unwrap();
    assert_eq!(log.users["alice"].count, 1);
    // The rest of the file: the partial record is read whole this time.
    std::fs::write(&path, records(&rs)).unwrap();
    log.update(&path).unwrap();
    log.update(&path).unwrap();
    assert_eq!(
        log.users["alice"],
        utmp::UserLogins {
            count: 2,
            last: 1_700_000_500
        }
    );
    assert_eq!(log.users["dave"].count, 1);
    assert_eq!(log.users.len(), 2);
    // Rotated: a new, shorter file starts the counts over.
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, records(&rs[5..6])).unwrap();
    log.update(&path).unwrap();
    assert!(!log.users.contains_key("alice"));
    assert_eq!(log.users["dave"].count, 1);
    // A file that is gone is an error (the collector adds the file's name).
    std::fs::remove_file(&path).unwrap();
    assert!(log.update(&path).is_err());
}

fn run(cmd: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = std::process::Command::new(cmd)
        .args(args)
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| {
            panic!("`{cmd}` (coreutils/util-linux, installed by scripts/install-test-deps.sh): {e}")
        });
    assert!(out.status.success(), "{cmd}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn who_lists_the_sessions_this_parser_finds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("utmp");
    let mut data = records(&wtmp_records());
    data.extend(utmp_record(DEAD_PROCESS, "pts/5", "", ""));
    std::fs::write(&path, &data).unwrap();
    // `who FILE`: `user line <login time> [(host)]`, one line per session.
    let text = run("who", &[path.as_os_str()]);
    let mut theirs: Vec<(String, String, String)> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let host = f
                .last()
                .filter(|h| h.starts_with('(') && h.ends_with(')'))
                .map(|h| h[1..h.len() - 1].to_string())
                .unwrap_or_default();
            (f[0].to_string(), f[1].to_string(), host)
        })
        .collect();
    let mut ours: Vec<(String, String, String)> = utmp::sessions(&data)
        .into_iter()
        .map(|s| (s.user, s.line, s.host))
        .collect();
    theirs.sort();
    ours.sort();
    assert_eq!(ours.len(), 5, "{ours:?}");
    assert_eq!(ours, theirs, "who printed:\n{text}");
}

#[test]
fn last_lists_the_remote_logins_this_parser_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wtmp");
    std::fs::write(&path, records(&wtmp_records())).unwrap();
    let mut log = LoginLog::default();
    log.update(&path).unwrap();
    // `last -w -f FILE --time-format iso`: `user line [host] login-time ...`, newest first;
    // a line without a host has the time in the third column.
    let text = run(
        "last",
        &[
            "-w".as_ref(),
            "--time-format".as_ref(),
            "iso".as_ref(),
            "-f".as_ref(),
            path.as_os_str(),
        ],
    );
    let mut theirs: BTreeMap<String, utmp::UserLogins> = BTreeMap::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 4 || f[0] == "reboot" || f[0] == "LOGIN" {
            continue;
        }
        let Ok(time) = chrono::DateTime::parse_from_rfc3339(f[3]) else {
            continue; // no host: not a remote login
        };
        if f[2].starts_with(':') {
            continue; // an X display
        }
        let u = theirs.entry(f[0].to_string()).or_default();
        u.count += 1;
        u.last = u.last.max(time.timestamp());
    }
    assert_eq!(log.users, theirs, "last printed:\n{text}");
}

// Cross-checks against this machine, through independent interfaces (libc, sockets).

fn real() -> (Vec<Metric>, Vec<CollectError>) {
    let cfg = config("");
    scrape(&cfg.host().unwrap(), &cfg.collectors().unwrap())
}

#[test]
fn memory_total_matches_sysinfo() {
    let (ms, _) = real();
    let mut si = std::mem::MaybeUninit::<libc::sysinfo>::uninit();
    // SAFETY: sysinfo(2) fills the struct it is given.
    assert_eq!(unsafe { libc::sysinfo(si.as_mut_ptr()) }, 0);
    // SAFETY: it returned 0, so the struct is initialised.
    let si = unsafe { si.assume_init() };
    let total = si.totalram as f64 * f64::from(si.mem_unit);
    assert_eq!(find(&ms, "node_memory_MemTotal_bytes", &[]), Some(total));
}

#[test]
fn cpu_count_matches_the_online_processors() {
    let (ms, _) = real();
    let cpus: std::collections::BTreeSet<&str> = ms
        .iter()
        .filter(|m| m.name == "node_cpu_seconds_total")
        .map(|m| m.tags["cpu"].as_str())
        .collect();
    // SAFETY: sysconf has no memory effects.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    assert_eq!(cpus.len() as i64, online as i64);
    let modes: BTreeMap<&str, usize> = ms
        .iter()
        .filter(|m| m.name == "node_cpu_seconds_total")
        .fold(BTreeMap::new(), |mut acc, m| {
            *acc.entry(m.tags["mode"].as_str()).or_default() += 1;
            acc
        });
    assert_eq!(modes.len(), 8, "{modes:?}");
    assert!(modes.values().all(|n| *n == cpus.len()));
}

#[test]
fn a_tcp_listener_of_the_test_appears_in_the_listening_ports() {
    let l4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p4 = l4.local_addr().unwrap().port().to_string();
    let l6 = std::net::TcpListener::bind("[::1]:0").ok();
    let (ms, errors) = real();
    assert!(!errors.iter().any(|e| e.collector == "tcp"), "{errors:?}");
    assert_eq!(
        find(
            &ms,
            "node_tcp_listening_port",
            &[("family", "ipv4"), ("address", "127.0.0.1"), ("port", &p4)]
        ),
        Some(1.0)
    );
    if let Some(l6) = l6 {
        let p6 = l6.local_addr().unwrap().port().to_string();
        assert_eq!(
            find(
                &ms,
                "node_tcp_listening_port",
                &[("family", "ipv6"), ("address", "::1"), ("port", &p6)]
            ),
            Some(1.0)
        );
    }
    assert!(find(&ms, "node_tcp_connection_states", &[("state", "listen")]).unwrap() >= 1.0);
    drop(l4);
    let (ms, _) = real();
    assert!(find(
        &ms,
        "node_tcp_listening_port",
        &[("family", "ipv4"), ("address", "127.0.0.1"), ("port", &p4)]
    )
    .is_none());
}

#[test]
fn this_process_is_counted_and_its_threads_too() {
    let (ms, _) = real();
    assert!(find(&ms, "node_processes_pids", &[]).unwrap() >= 1.0);
    // This test binary runs several threads (the harness's own at least).
    assert!(find(&ms, "node_processes_threads", &[]).unwrap() >= 2.0);
    let boot = find(&ms, "node_boot_time_seconds", &[]).unwrap();
    let up = find(&ms, "node_uptime_seconds", &[]).unwrap();
    let now = chrono::Utc::now().timestamp() as f64;
    // btime + uptime is now (both are whole-machine clocks; seconds of slack for rounding
    // and suspend accounting).
    assert!((boot + up - now).abs() < 120.0, "{boot} + {up} vs {now}");
}
