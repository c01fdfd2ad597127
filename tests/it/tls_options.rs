//! One `tls` table for every client and every server: a table of every component type that
//! has one, each given the same broken `tls` options, must fail with the same error text —
//! from `weir validate` (the config checks, which read the components' files) and from
//! building the component (what `weir run` does at start). Old option names are refused with
//! the new name in the message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use weir_pipeline::component::{SinkContext, SourceContext, SourceSender};
use weir_pipeline::config::{load_str, resolve_graph};
use weir_pipeline::metrics::{ComponentMetrics, MetricsRegistry};
use weir_pipeline::shutdown::ShutdownToken;

use crate::harness::{free_addr, make_certs, weir};
use crate::testkit::full_registry;

/// Client or server: servers need a certificate, so the ones under test get a good one
/// next to the broken option.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Client,
    Server,
}

/// A component with a `tls` table: its id in the config (`sinks.es`), its side, and its
/// section with `{tls}` where the `tls` lines go (`{tls_prefix}` is where the table sits:
/// `tls.` or `grpc.tls.`).
struct Component {
    id: &'static str,
    side: Side,
    tls_prefix: &'static str,
    section: &'static str,
}

/// Every component type with a `tls` table, named explicitly.
fn components() -> Vec<Component> {
    use Side::*;
    vec![
        Component {
            id: "sinks.elasticsearch",
            side: Client,
            tls_prefix: "tls.",
            section: "type = \"elasticsearch\"\ninputs = [\"metrics_in\"]\nendpoints = [\"https://127.0.0.1:9200\"]\n",
        },
        Component {
            id: "sinks.otlp_grpc",
            side: Client,
            tls_prefix: "tls.",
            section: "type = \"otlp\"\ninputs = [\"metrics_in\"]\nendpoint = \"https://127.0.0.1:4317\"\n",
        },
        Component {
            id: "sinks.otlp_http",
            side: Client,
            tls_prefix: "tls.",
            section: "type = \"otlp\"\ninputs = [\"metrics_in\"]\nprotocol = \"http\"\nendpoint = \"https://127.0.0.1:4318\"\n",
        },
        Component {
            id: "sinks.prometheus_remote_write",
            side: Client,
            tls_prefix: "tls.",
            section: "type = \"prometheus_remote_write\"\ninputs = [\"metrics_in\"]\nendpoint = \"https://127.0.0.1:9090/api/v1/write\"\n",
        },
        Component {
            id: "sinks.nats_sink",
            side: Client,
            tls_prefix: "tls.",
            section: "type = \"nats\"\ninputs = [\"metrics_in\"]\nurl = \"nats://127.0.0.1:4222\"\nsubject = \"s\"\n",
        },
        Component {
            id: "sinks.kafka_sink",
            side: Client,
            tls_prefix: "tls.",
            section: "type = \"kafka\"\ninputs = [\"metrics_in\"]\nbootstrap_servers = \"127.0.0.1:9092\"\ntopic = \"t\"\n",
        },
        Component {
            id: "sources.hubble",
            side: Client,
            tls_prefix: "tls.",
            section: "type = \"hubble\"\naddress = \"127.0.0.1:4245\"\n",
        },
        Component {
            id: "sources.nats_source",
            side: Client,
            tls_prefix: "tls.",
            section: "type = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nsubject = \"s\"\n",
        },
        Component {
            id: "sources.kafka_source",
            side: Client,
            tls_prefix: "tls.",
            section: "type = \"kafka\"\nbootstrap_servers = \"127.0.0.1:9092\"\ngroup_id = \"g\"\ntopics = [\"t\"]\n",
        },
        Component {
            id: "sinks.prometheus_exporter",
            side: Server,
            tls_prefix: "tls.",
            section: "type = \"prometheus_exporter\"\ninputs = [\"metrics_in\"]\naddress = \"{addr}\"\n",
        },
        Component {
            id: "sources.otlp_grpc_source",
            side: Server,
            tls_prefix: "grpc.tls.",
            section: "type = \"otlp\"\ngrpc.address = \"{addr}\"\nhttp.enabled = false\n",
        },
        Component {
            id: "sources.otlp_http_source",
            side: Server,
            tls_prefix: "http.tls.",
            section: "type = \"otlp\"\nhttp.address = \"{addr}\"\ngrpc.enabled = false\n",
        },
    ]
}

/// A whole config with `c` given the `tls` lines `tls` (keys without the prefix), plus
/// what it needs to be a valid pipeline.
fn config_text(c: &Component, data: &Path, tls: &[(&str, String)]) -> String {
    let (kind, id) = c.id.split_once('.').unwrap();
    let mut section = c.section.replace("{addr}", &free_addr().to_string());
    for (k, v) in tls {
        section.push_str(&format!("{}{k} = {v}\n", c.tls_prefix));
    }
    let mut text = format!("data_dir = \"{}\"\n", data.display());
    if kind == "sinks" {
        text.push_str("[sources.metrics_in]\ntype = \"internal_metrics\"\n");
        text.push_str(&format!("[sinks.{id}]\n{section}"));
    } else {
        text.push_str(&format!("[sources.{id}]\n{section}"));
        text.push_str(&format!(
            "[sinks.out]\ntype = \"blackhole\"\ninputs = [\"{id}*\"]\n"
        ));
    }
    text
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// The errors `weir validate` gives (loading, then the checks with the environment);
/// `None` for a valid config.
fn validate_errors(text: &str) -> Option<Vec<String>> {
    let reg = full_registry();
    match load_str("f.toml", text, &reg, &no_env) {
        Err(e) => Some(e.0.iter().map(|e| e.to_string()).collect()),
        Ok(config) => match resolve_graph(&config, true) {
            Err(e) => Some(e.0.iter().map(|e| e.to_string()).collect()),
            Ok(_) => None,
        },
    }
}

/// Builds the component under test from a config that passed loading (without the
/// environment checks), as `weir run` does; the build error's text.
async fn build_error(c: &Component, text: &str, data: &Path) -> String {
    let reg = full_registry();
    let config = load_str("f.toml", text, &reg, &no_env).expect("the config loads");
    let (kind, id) = c.id.split_once('.').unwrap();
    let metrics = ComponentMetrics::detached(id);
    let registry = Arc::new(MetricsRegistry::default());
    let built = if kind == "sinks" {
        config.sinks[id]
            .config
            .build(SinkContext {
                id: Arc::from(id),
                data_dir: data.to_path_buf(),
                metrics: metrics.clone(),
                registry,
                outputs: Default::default(),
                stop: Default::default(),
            })
            .await
            .map(|_| ())
    } else {
        config.sources[id]
            .config
            .build(SourceContext {
                id: Arc::from(id),
                out: SourceSender::new(None, BTreeMap::new(), metrics.clone()),
                shutdown: ShutdownToken::new(),
                acknowledgements: false,
                data_dir: data.to_path_buf(),
                metrics: metrics.clone(),
                registry,
            })
            .await
            .map(|_| ())
    };
    match built {
        Err(e) => e.to_string(),
        Ok(()) => panic!("{}: built with broken `tls` options:\n{text}", c.id),
    }
}

fn q(p: &Path) -> String {
    format!("\"{}\"", p.display())
}

struct Certs {
    _dir: tempfile::TempDir,
    crt: PathBuf,
    key: PathBuf,
    /// A key that is not `crt`'s.
    other_key: PathBuf,
}

fn certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let (_ca, crt, key) = make_certs(dir.path());
    let other_key = dir.path().join("ca.key");
    Certs {
        _dir: dir,
        crt,
        key,
        other_key,
    }
}

/// One broken `tls` case: the lines for a client and for a server, and the message.
struct Case {
    name: &'static str,
    client: Vec<(&'static str, String)>,
    server: Vec<(&'static str, String)>,
    message: String,
}

fn cases(c: &Certs) -> Vec<Case> {
    let missing_crt = PathBuf::from("/nonexistent/weir-tls/client.crt");
    let missing_ca = PathBuf::from("/nonexistent/weir-tls/ca.pem");
    vec![
        Case {
            name: "missing tls.crt_file",
            client: vec![("crt_file", q(&missing_crt)), ("key_file", q(&c.key))],
            server: vec![("crt_file", q(&missing_crt)), ("key_file", q(&c.key))],
            message: format!(
                "`tls.crt_file` {}: No such file or directory",
                missing_crt.display()
            ),
        },
        Case {
            name: "missing tls.ca_file",
            client: vec![("ca_file", q(&missing_ca))],
            server: vec![
                ("ca_file", q(&missing_ca)),
                ("crt_file", q(&c.crt)),
                ("key_file", q(&c.key)),
            ],
            message: format!(
                "`tls.ca_file` {}: No such file or directory",
                missing_ca.display()
            ),
        },
        Case {
            name: "a key that is not the certificate's",
            client: vec![("crt_file", q(&c.crt)), ("key_file", q(&c.other_key))],
            server: vec![("crt_file", q(&c.crt)), ("key_file", q(&c.other_key))],
            message: format!(
                "`tls.key_file` {}: is not the key of the certificate in `tls.crt_file` {}",
                c.other_key.display(),
                c.crt.display()
            ),
        },
        Case {
            name: "a CA file that is not PEM",
            client: vec![("ca_file", q(&c.key))],
            server: vec![
                ("ca_file", q(&c.key)),
                ("crt_file", q(&c.crt)),
                ("key_file", q(&c.key)),
            ],
            message: format!(
                "`tls.ca_file` {}: no PEM certificate in the file",
                c.key.display()
            ),
        },
        Case {
            name: "crt_file without key_file",
            client: vec![("crt_file", q(&c.crt))],
            server: vec![("crt_file", q(&c.crt))],
            message: "`tls.crt_file` and `tls.key_file` go together".into(),
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tls_table_gives_the_same_error_for_the_same_mistake() {
    let certs = certs();
    let data = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for case in cases(&certs) {
        for c in components() {
            let tls = match c.side {
                Side::Client => &case.client,
                Side::Server => &case.server,
            };
            let text = config_text(&c, data.path(), tls);
            // `weir validate`: one error, at the component, ending with the message.
            match validate_errors(&text) {
                Some(errors) => {
                    let ok = errors.len() == 1
                        && errors[0].contains(&format!(": {}: ", c.id))
                        && errors[0].ends_with(&case.message);
                    if !ok {
                        failures.push(format!(
                            "{} / {} / validate: {errors:?}, expected one ending with {:?}",
                            case.name, c.id, case.message
                        ));
                    }
                }
                None => failures.push(format!("{} / {} / validate: no error", case.name, c.id)),
            }
            // Building it (`weir run`): the same message.
            let e = build_error(&c, &text, data.path()).await;
            if !e.ends_with(&case.message) {
                failures.push(format!(
                    "{} / {} / build: {e:?}, expected it to end with {:?}",
                    case.name, c.id, case.message
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The old names (`cert_file`, `key_password`, the ways to say "do not verify") are refused,
/// naming the new option, in every component.
#[test]
fn old_tls_option_names_tell_the_new_name() {
    let data = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let old: [(&str, &str, &str, &[Side]); 4] = [
        (
            "cert_file",
            "\"/x.crt\"",
            "unknown field `cert_file`: renamed `crt_file`",
            &[Side::Client, Side::Server],
        ),
        (
            "key_password",
            "\"p\"",
            "unknown field `key_password`: renamed `key_pass`",
            &[Side::Client, Side::Server],
        ),
        (
            "insecure_skip_verify",
            "true",
            "unknown field `insecure_skip_verify`: write `verify_certificate = false`",
            &[Side::Client],
        ),
        (
            "verify",
            "false",
            "unknown field `verify`: renamed `verify_certificate`",
            &[Side::Client],
        ),
    ];
    for (name, value, message, sides) in old {
        for c in components().into_iter().filter(|c| sides.contains(&c.side)) {
            let text = config_text(&c, data.path(), &[(name, value.to_string())]);
            match validate_errors(&text) {
                Some(errors) if errors.len() == 1 && errors[0].contains(message) => {
                    let field = format!("{}{name}", c.tls_prefix);
                    if !errors[0].contains(&format!(".{field}: ")) {
                        failures.push(format!("{name} / {}: no `{field}` in {errors:?}", c.id));
                    }
                }
                other => failures.push(format!("{name} / {}: {other:?}", c.id)),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `weir validate` (the binary) prints the error of every component of one file, each with
/// the same text, and fails.
#[test]
fn weir_validate_prints_the_same_tls_error_for_every_component() {
    let certs = certs();
    let data = tempfile::tempdir().unwrap();
    let missing = "/nonexistent/weir-tls/client.crt";
    let mut text = format!("data_dir = \"{}\"\n", data.path().display());
    text.push_str("[sources.metrics_in]\ntype = \"internal_metrics\"\n");
    let mut ids = Vec::new();
    for c in components() {
        let (kind, id) = c.id.split_once('.').unwrap();
        let mut section = c.section.replace("{addr}", &free_addr().to_string());
        section.push_str(&format!(
            "{p}crt_file = \"{missing}\"\n{p}key_file = {}\n",
            q(&certs.key),
            p = c.tls_prefix
        ));
        text.push_str(&format!("[{kind}.{id}]\n{section}"));
        if kind == "sources" {
            text.push_str(&format!(
                "[sinks.out_{id}]\ntype = \"blackhole\"\ninputs = [\"{id}*\"]\n"
            ));
        }
        ids.push(c.id);
    }
    let file = data.path().join("weir.toml");
    std::fs::write(&file, &text).unwrap();
    let out = weir().arg("validate").arg(&file).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    let tail = format!("`tls.crt_file` {missing}: No such file or directory");
    for id in ids {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&format!(": {id}: ")) && l.ends_with(&tail)),
            "{id}: no `{tail}` in:\n{stderr}"
        );
    }
    assert!(
        stderr.contains(&format!("{} errors found", components().len())),
        "{stderr}"
    );
}

/// A client certificate (and key) signed by the CA `make_certs` wrote into `dir`.
fn client_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let run = |args: &[&str]| crate::harness::openssl(dir, args);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-subj",
        "/CN=weir-agent",
    ]);
    std::fs::write(
        dir.join("client.cnf"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "client.crt",
        "-days",
        "2",
        "-extfile",
        "client.cnf",
    ]);
    (dir.join("client.crt"), dir.join("client.key"))
}

/// The servers' side and the clients' options, end to end in one process: the `otlp` source
/// serves gRPC and HTTP over mutual TLS (`ca_file`: clients must show a certificate the CA
/// signed); `otlp` sinks, gRPC and HTTP, send to it with the `tls` options. The ones that
/// should get through do (every event), the others are refused (nothing arrives from them):
///
/// | sink | `tls` | expected |
/// |---|---|---|
/// | grpc_mtls, http_mtls | `ca_file`, `crt_file`, `key_file` | delivered |
/// | grpc_no_verify | `verify_certificate = false`, client certificate, no CA | delivered |
/// | http_no_hostname | `ca_file`, `server_name = "wrong.example"`, `verify_hostname = false`, client certificate | delivered |
/// | grpc_no_client_cert | `ca_file` only | refused by the server (mutual TLS) |
/// | http_wrong_name | `ca_file`, `server_name = "wrong.example"`, client certificate | refused by the client (name) |
/// | http_unknown_ca | client certificate, no CA | refused by the client (issuer) |
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_server_and_the_verify_options_of_grpc_and_http_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, srv_crt, srv_key) = make_certs(dir.path());
    let (crt, key) = client_cert(dir.path());
    let (grpc, http) = (free_addr(), free_addr());
    let ident = format!("tls.crt_file = {}\ntls.key_file = {}\n", q(&crt), q(&key));
    let trust = format!("tls.ca_file = {}\n", q(&ca));
    let wrong_name = "tls.server_name = \"wrong.example\"\n";
    let sinks: Vec<(&str, &str, String, bool)> = vec![
        ("grpc_mtls", "grpc", format!("{trust}{ident}"), true),
        ("http_mtls", "http", format!("{trust}{ident}"), true),
        (
            "grpc_no_verify",
            "grpc",
            format!("tls.verify_certificate = false\n{ident}"),
            true,
        ),
        (
            "http_no_hostname",
            "http",
            format!("{trust}{wrong_name}tls.verify_hostname = false\n{ident}"),
            true,
        ),
        ("grpc_no_client_cert", "grpc", trust.clone(), false),
        (
            "http_wrong_name",
            "http",
            format!("{trust}{wrong_name}{ident}"),
            false,
        ),
        ("http_unknown_ca", "http", ident.clone(), false),
    ];
    const EVENTS: u64 = 20;
    let mut toml = format!(
        r#"
data_dir = "{data}"
[api]
enabled = false
[sources.gen]
type = "demo"
count = {EVENTS}
[sources.otel]
type = "otlp"
grpc.address = "{grpc}"
grpc.tls.crt_file = {srv_crt}
grpc.tls.key_file = {srv_key}
grpc.tls.ca_file = {ca}
http.address = "{http}"
http.tls.crt_file = {srv_crt}
http.tls.key_file = {srv_key}
http.tls.ca_file = {ca}
[sinks.received]
type = "blackhole"
inputs = ["otel.logs"]
"#,
        data = dir.path().display(),
        srv_crt = q(&srv_crt),
        srv_key = q(&srv_key),
        ca = q(&ca),
    );
    for (id, protocol, tls, _) in &sinks {
        let endpoint = match *protocol {
            "grpc" => format!("https://localhost:{}", grpc.port()),
            _ => format!("https://localhost:{}", http.port()),
        };
        toml.push_str(&format!(
            "[sinks.{id}]\ntype = \"otlp\"\ninputs = [\"gen\"]\nprotocol = \"{protocol}\"\nendpoint = \"{endpoint}\"\nbatch.timeout_secs = 0.05\nrequest.retry_initial_backoff_secs = 0.05\nrequest.retry_max_duration_secs = 0.2\nrequest.retry_attempts = 3\n{tls}"
        ));
    }
    let reg = full_registry();
    let config = load_str("t.toml", &toml, &reg, &no_env).unwrap_or_else(|e| panic!("{e}"));
    let graph = resolve_graph(&config, true).unwrap_or_else(|e| panic!("{e}"));
    let running = weir_pipeline::topology::start(config, &graph)
        .await
        .expect("start");
    let metrics = |id: &str| running.registry.get(id).unwrap();
    let good = sinks.iter().filter(|s| s.3).count() as u64;
    let settled = || {
        metrics("received").received_events() >= good * EVENTS
            && sinks
                .iter()
                .filter(|s| !s.3)
                .all(|(id, ..)| metrics(id).errors_total() > 0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !settled() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut report = Vec::new();
    for (id, _, _, ok) in &sinks {
        let m = metrics(id);
        let pass = if *ok {
            m.sent_events() == EVENTS
        } else {
            m.sent_events() == 0 && m.errors_total() > 0
        };
        if !pass {
            report.push(format!(
                "{id}: sent {} errors {:?} (expected {})",
                m.sent_events(),
                m.errors(),
                if *ok { "delivered" } else { "refused" }
            ));
        }
    }
    assert_eq!(
        metrics("received").received_events(),
        good * EVENTS,
        "only the good clients' events arrive; {report:?}"
    );
    assert!(report.is_empty(), "{}", report.join("\n"));
    // The client without a certificate failed its handshake with the server.
    assert!(
        metrics("otel").errors().get("tls").is_some_and(|n| *n >= 1),
        "{:?}",
        metrics("otel").errors()
    );
    running.shutdown_token().cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), running.wait()).await;
}

/// NATS over mutual TLS against the real `nats-server` (`--tlsverify`: it refuses clients
/// without a certificate its CA signed): `demo` -> `nats` sink -> server -> `nats` source ->
/// `blackhole`, both sides with the shared `tls` table (`ca_file`, `crt_file`, `key_file`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_source_and_sink_over_mutual_tls_with_nats_server() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, srv_crt, srv_key) = make_certs(dir.path());
    let (crt, key) = client_cert(dir.path());
    let addr = free_addr();
    let log = dir.path().join("nats-server.log");
    let server_bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("nats-server");
    let mut server = std::process::Command::new(server_bin)
        .args([
            "-a",
            "127.0.0.1",
            "-p",
            &addr.port().to_string(),
            "--tlsverify",
        ])
        .arg("--tlscert")
        .arg(&srv_crt)
        .arg("--tlskey")
        .arg(&srv_key)
        .arg("--tlscacert")
        .arg(&ca)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("nats-server.err")).unwrap())
        .spawn()
        .expect("start nats-server (apt-get install nats-server)");
    let up = crate::harness::wait_until(std::time::Duration::from_secs(10), || {
        std::net::TcpStream::connect(addr).is_ok()
    });
    assert!(up, "nats-server listens");
    let tls = format!(
        "tls.ca_file = {}\ntls.crt_file = {}\ntls.key_file = {}\n",
        q(&ca),
        q(&crt),
        q(&key)
    );
    let toml = format!(
        r#"
data_dir = "{data}"
[api]
enabled = false
[sources.gen]
type = "demo"
rate = 200
[sinks.to_nats]
type = "nats"
inputs = ["gen"]
url = "nats://{addr}"
subject = "weir.tls"
{tls}
[sources.from_nats]
type = "nats"
url = "nats://{addr}"
subject = "weir.tls"
{tls}
[sinks.received]
type = "blackhole"
inputs = ["from_nats"]
"#,
        data = dir.path().display(),
    );
    let reg = full_registry();
    let config = load_str("t.toml", &toml, &reg, &no_env).unwrap_or_else(|e| panic!("{e}"));
    let graph = resolve_graph(&config, true).unwrap_or_else(|e| panic!("{e}"));
    let running = weir_pipeline::topology::start(config, &graph)
        .await
        .expect("start");
    let received = running.registry.get("received").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while received.received_events() < 50 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let got = received.received_events();
    running.shutdown_token().cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), running.wait()).await;
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        got >= 50,
        "{got} messages made the round trip over mutual TLS; nats-server said: {}",
        std::fs::read_to_string(dir.path().join("nats-server.err")).unwrap_or_default()
    );
}
