//! The `kubernetes_logs` source: real files laid out as the kubelet lays them out
//! (`<root>/<namespace>_<pod>_<uid>/<container>/<n>.log`), in the CRI and Docker json-file
//! formats, read by the real `weir` binary into a JSON `file` sink; pod metadata from a local
//! HTTP server that answers `/api/v1/pods` list and watch requests as the API server does
//! (the same JSON shapes: `PodList`, chunked newline-delimited watch events, `Status`).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio_rustls::rustls;

use crate::harness::{free_addr, http_get, sigterm, wait_until, wait_with_timeout, weir};

struct Setup {
    dir: tempfile::TempDir,
    runs: usize,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pods")).unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        Self { dir, runs: 0 }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("pods")
    }

    /// The log file of a container (its directories created).
    fn log(&self, ns: &str, pod: &str, uid: &str, container: &str) -> PathBuf {
        let d = self
            .root()
            .join(format!("{ns}_{pod}_{uid}"))
            .join(container);
        std::fs::create_dir_all(&d).unwrap();
        d.join("0.log")
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.json"))
    }

    fn config(&self, text: &str) -> PathBuf {
        let p = self.dir.path().join("weir.toml");
        let text = format!(
            "data_dir = \"{}\"\n{text}",
            self.dir.path().join("data").display()
        );
        std::fs::write(&p, text).unwrap();
        p
    }

    fn start(&mut self, cfg: &Path) -> Child {
        self.start_env(cfg, &[])
    }

    /// Starts weir with these environment variables (as a pod has them) set.
    fn start_env(&mut self, cfg: &Path, env: &[(&str, String)]) -> Child {
        self.runs += 1;
        let log = File::create(self.dir.path().join(format!("weir-{}.log", self.runs))).unwrap();
        weir()
            .args(["run", "--config"])
            .arg(cfg)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .env_remove("NODE_NAME")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn weir_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("weir-{}.log", self.runs)))
            .unwrap_or_default()
    }

    fn stop(&self, child: Child) -> String {
        sigterm(&child);
        let out = wait_with_timeout(child, Duration::from_secs(60));
        let log = self.weir_log();
        assert_eq!(
            out.status.code(),
            Some(0),
            "weir did not stop cleanly:\n{log}"
        );
        log
    }

    fn events(&self, name: &str) -> Vec<Value> {
        match std::fs::read_to_string(self.out(name)) {
            Ok(t) => t
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn wait_for(&self, name: &str, n: usize) {
        let ok = wait_until(Duration::from_secs(30), || self.events(name).len() >= n);
        assert!(
            ok,
            "{name}: expected {n} events, got {:?}\nweir log:\n{}",
            self.events(name),
            self.weir_log()
        );
    }
}

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// The event without the fields whose value depends on the run (`timestamp` is kept: it is
/// the runtime's).
fn summary(e: &Value) -> Value {
    let mut e = e.clone();
    if let Some(o) = e.as_object_mut() {
        o.remove("file");
    }
    e
}

#[test]
fn cri_partial_lines_are_joined_and_docker_lines_decoded() {
    let mut s = Setup::new();
    let cri = s.log(
        "shop",
        "web-7d4b9c-x2x9z",
        "1b2c3d4e-0000-4000-8000-000000000001",
        "nginx",
    );
    let docker = s.log(
        "shop",
        "legacy-0",
        "1b2c3d4e-0000-4000-8000-000000000002",
        "app",
    );
    append(
        &cri,
        concat!(
            "2024-05-01T10:00:00.000000001Z stdout F GET /index.html 200\n",
            "2024-05-01T10:00:01.5Z stdout P first piece, \n",
            "2024-05-01T10:00:01.6Z stdout P second piece, \n",
            "2024-05-01T10:00:01.7Z stdout F last piece\n",
            "2024-05-01T10:00:02Z stderr F warn: slow upstream\n",
            "2024-05-01T10:00:03Z stdout F {\"level\":\"info\",\"msg\":\"json in cri\"}\n",
            "2024-05-01T10:00:04Z stdout F\n",
        ),
    );
    append(
        &docker,
        concat!(
            r#"{"log":"plain docker line\n","stream":"stdout","time":"2024-05-01T11:00:00.123456789Z"}"#,
            "\n",
            r#"{"log":"{\"a\":1}\n","stream":"stdout","time":"2024-05-01T11:00:01Z"}"#,
            "\n",
            r#"{"log":"split by the 16k ","stream":"stderr","time":"2024-05-01T11:00:02Z"}"#,
            "\n",
            r#"{"log":"limit\n","stream":"stderr","time":"2024-05-01T11:00:02.1Z"}"#,
            "\n",
        ),
    );
    let cfg = s.config(&format!(
        r#"
[api]
enabled = false
[sources.pods]
type = "kubernetes_logs"
root = "{root}"
acknowledgements = true
glob_minimum_cooldown_ms = 200
api.enabled = false
[sources.pods_json]
type = "kubernetes_logs"
root = "{root}"
glob_minimum_cooldown_ms = 200
decoding.codec = "json"
api.enabled = false
[sinks.out]
type = "file"
inputs = ["pods"]
path = "{out}"
encoding.codec = "json"
[sinks.out_json]
type = "file"
inputs = ["pods_json"]
path = "{out_json}"
encoding.codec = "json"
"#,
        root = s.root().display(),
        out = s.out("out").display(),
        out_json = s.out("out_json").display(),
    ));
    let child = s.start(&cfg);
    s.wait_for("out", 8);
    s.wait_for("out_json", 8);
    // A partial line at the end of a file waits for its last piece, which comes later.
    append(&cri, "2024-05-01T10:00:05Z stdout P held \n");
    std::thread::sleep(Duration::from_millis(1000));
    append(&cri, "2024-05-01T10:00:06Z stdout F until now\n");
    s.wait_for("out", 9);
    std::thread::sleep(Duration::from_millis(500));
    s.stop(child);

    let k8s = |pod: &str, uid: &str, c: &str| json!({"pod_namespace": "shop", "pod_name": pod, "pod_uid": uid, "container_name": c});
    let web = k8s(
        "web-7d4b9c-x2x9z",
        "1b2c3d4e-0000-4000-8000-000000000001",
        "nginx",
    );
    let legacy = k8s("legacy-0", "1b2c3d4e-0000-4000-8000-000000000002", "app");
    let ev = |msg: &str, stream: &str, ts: &str, k: &Value| json!({"message": msg, "stream": stream, "timestamp": ts, "kubernetes": k});
    let mut got: Vec<Value> = s.events("out").iter().map(summary).collect();
    // Files are read one after the other: order by file, then as written.
    got.sort_by_key(|e| {
        e["kubernetes"]["pod_name"]
            .as_str()
            .unwrap_or("")
            .to_string()
    });
    assert_eq!(
        got,
        vec![
            ev(
                "plain docker line",
                "stdout",
                "2024-05-01T11:00:00.123456789Z",
                &legacy
            ),
            ev("{\"a\":1}", "stdout", "2024-05-01T11:00:01Z", &legacy),
            ev(
                "split by the 16k limit",
                "stderr",
                "2024-05-01T11:00:02Z",
                &legacy
            ),
            ev(
                "GET /index.html 200",
                "stdout",
                "2024-05-01T10:00:00.000000001Z",
                &web
            ),
            ev(
                "first piece, second piece, last piece",
                "stdout",
                "2024-05-01T10:00:01.500Z",
                &web
            ),
            ev(
                "warn: slow upstream",
                "stderr",
                "2024-05-01T10:00:02Z",
                &web
            ),
            ev(
                "{\"level\":\"info\",\"msg\":\"json in cri\"}",
                "stdout",
                "2024-05-01T10:00:03Z",
                &web
            ),
            ev("", "stdout", "2024-05-01T10:00:04Z", &web),
            ev("held until now", "stdout", "2024-05-01T10:00:05Z", &web),
        ],
        "bytes codec"
    );
    for e in s.events("out") {
        let f = e["file"].as_str().unwrap();
        assert!(
            f.starts_with(&s.root().display().to_string()) && f.ends_with("/0.log"),
            "{f}"
        );
    }
    // With the JSON codec, a wrapped JSON message becomes fields; others stay as `message`
    // and are counted as decode errors.
    let j: Vec<Value> = s.events("out_json").iter().map(summary).collect();
    let wrapped = j
        .iter()
        .find(|e| e.get("a").is_some())
        .unwrap_or_else(|| panic!("no decoded wrapped line in {j:?}"));
    assert_eq!(
        wrapped,
        &json!({"a": 1, "stream": "stdout", "timestamp": "2024-05-01T11:00:01Z", "kubernetes": legacy})
    );
    assert!(j
        .iter()
        .any(|e| e["level"] == "info" && e["msg"] == "json in cri"));
    assert!(j.iter().any(|e| e["message"] == "plain docker line"));
}

/// A realistic `Pod` object, as `kubectl get pod -o json` shows it.
fn pod(ns: &str, name: &str, uid: &str, rv: u64, labels: Value, annotations: Value) -> Value {
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "generateName": format!("{}-", name.rsplit_once('-').map(|x| x.0).unwrap_or(name)),
            "namespace": ns,
            "uid": uid,
            "resourceVersion": rv.to_string(),
            "creationTimestamp": "2024-05-01T09:59:00Z",
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": name.rsplit_once('-').map(|x| x.0).unwrap_or(name),
                "uid": "5a6b7c8d-1111-4222-8333-444455556666",
                "controller": true,
                "blockOwnerDeletion": true
            }],
            "managedFields": [{
                "manager": "kube-controller-manager",
                "operation": "Update",
                "apiVersion": "v1",
                "time": "2024-05-01T09:59:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}}
            }]
        },
        "spec": {
            "volumes": [{"name": "kube-api-access-abcde", "projected": {"defaultMode": 420, "sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}],
            "containers": [{
                "name": "nginx",
                "image": "nginx:1.27.0",
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "50m"}},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent"
            }],
            "initContainers": [{"name": "init-config", "image": "busybox:1.36", "command": ["sh", "-c", "true"]}],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "nodeName": "node-1",
            "schedulerName": "default-scheduler",
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
            "priority": 0,
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority"
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2024-05-01T09:59:05Z"}],
            "hostIP": "192.0.2.10",
            "hostIPs": [{"ip": "192.0.2.10"}],
            "podIP": "10.244.1.17",
            "podIPs": [{"ip": "10.244.1.17"}],
            "startTime": "2024-05-01T09:59:00Z",
            "containerStatuses": [{
                "name": "nginx",
                "state": {"running": {"startedAt": "2024-05-01T09:59:04Z"}},
                "lastState": {},
                "ready": true,
                "restartCount": 0,
                "image": "docker.io/library/nginx:1.27.0",
                "imageID": "docker.io/library/nginx@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "containerID": "containerd://1111111111111111111111111111111111111111111111111111111111111111",
                "started": true
            }],
            "qosClass": "Burstable"
        }
    })
}

/// A stand-in API server: answers the pod and namespace lists, and streams watch events that
/// the test pushes (chunked, one JSON object per line), over plain HTTP or HTTPS. Records
/// every request's head; refuses (401, as the API does) a request without the bearer token
/// `s3cr3t-token`.
struct ApiServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    pod_events: Sender<Value>,
    namespace_events: Sender<Value>,
    collections: Arc<Collections>,
}

/// What the double serves: the list of each collection (the test may replace it) and the
/// receiver of its watch events. A `Null` list is refused with 403, as for a service account
/// whose RBAC does not grant it.
struct Collections {
    pods: (Mutex<Value>, Mutex<Receiver<Value>>),
    namespaces: (Mutex<Value>, Mutex<Receiver<Value>>),
}

/// The API's answer when RBAC does not allow listing `resource` cluster-wide.
fn forbidden(resource: &str) -> String {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("{resource} is forbidden: User \"system:serviceaccount:weir:weir-agent\" cannot list resource \"{resource}\" in API group \"\" at the cluster scope"),
        "reason": "Forbidden", "details": {"kind": resource}, "code": 403
    })
    .to_string()
}

/// A connection of the double: plain TCP or TLS over it.
trait Conn: Read + Write {
    fn set_nonblocking(&self, on: bool) -> std::io::Result<()>;
}

impl Conn for TcpStream {
    fn set_nonblocking(&self, on: bool) -> std::io::Result<()> {
        TcpStream::set_nonblocking(self, on)
    }
}

type TlsConn = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

impl Conn for TlsConn {
    fn set_nonblocking(&self, on: bool) -> std::io::Result<()> {
        self.sock.set_nonblocking(on)
    }
}

/// An empty `NamespaceList`, for tests about pods only.
fn no_namespaces() -> Value {
    json!({"kind": "NamespaceList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []})
}

impl ApiServer {
    fn start(pods: Value) -> ApiServer {
        Self::start_with(pods, no_namespaces(), None)
    }

    /// `tls`: the server's certificate and key (PEM) to serve HTTPS with.
    fn start_with(pods: Value, namespaces: Value, tls: Option<(&Path, &Path)>) -> ApiServer {
        let tls = tls.map(|(cert, key)| {
            use rustls::pki_types::pem::PemObject;
            use rustls::pki_types::{CertificateDer, PrivateKeyDer};
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(key).unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let cfg = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
            Arc::new(cfg)
        });
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (pod_events, pod_rx) = channel::<Value>();
        let (namespace_events, ns_rx) = channel::<Value>();
        let collections = Arc::new(Collections {
            pods: (Mutex::new(pods), Mutex::new(pod_rx)),
            namespaces: (Mutex::new(namespaces), Mutex::new(ns_rx)),
        });
        let reqs = requests.clone();
        let served = collections.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { return };
                let (reqs, collections, tls) = (reqs.clone(), collections.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    None => serve(conn, &reqs, &collections),
                    Some(cfg) => {
                        let Ok(server) = rustls::ServerConnection::new(cfg) else {
                            return;
                        };
                        // The handshake happens on the first read; a client that does not
                        // trust the certificate ends it there, before any request.
                        serve(rustls::StreamOwned::new(server, conn), &reqs, &collections)
                    }
                });
            }
        });
        ApiServer {
            addr,
            requests,
            pod_events,
            namespace_events,
            collections: served,
        }
    }

    /// What later lists of namespaces answer.
    fn set_namespaces(&self, list: Value) {
        *self.collections.namespaces.0.lock().unwrap() = list;
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(mut w: impl Conn, reqs: &Mutex<Vec<String>>, collections: &Collections) {
    let mut head = String::new();
    {
        let mut r = BufReader::new(&mut w);
        loop {
            let mut l = String::new();
            if r.read_line(&mut l).unwrap_or(0) == 0 {
                return;
            }
            if l == "\r\n" {
                break;
            }
            head.push_str(&l);
        }
    }
    reqs.lock().unwrap().push(head.clone());
    let target = head.split(' ').nth(1).unwrap_or("").to_string();
    if !head
        .to_ascii_lowercase()
        .contains("authorization: bearer s3cr3t-token\r\n")
    {
        let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401}).to_string();
        let _ = write!(w, "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let _ = w.flush();
        return;
    }
    let (list, rx) = if target.starts_with("/api/v1/pods?") {
        &collections.pods
    } else if target.starts_with("/api/v1/namespaces?") {
        &collections.namespaces
    } else {
        let _ = write!(w, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        let _ = w.flush();
        return;
    };
    let list = list.lock().unwrap().clone();
    if list.is_null() {
        let resource = target[8..].split('?').next().unwrap_or("");
        let body = forbidden(resource);
        let _ = write!(w, "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let _ = w.flush();
        return;
    }
    if !target.contains("watch=1") {
        let body = list.to_string();
        let _ = write!(
            w,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = w.flush();
        return;
    }
    let _ = write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let _ = w.flush();
    // One watch of a collection at a time takes its pushed events.
    let rx = rx.lock().unwrap();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(ev) => {
                let line = format!("{ev}\n");
                if write!(w, "{:x}\r\n{line}\r\n", line.len()).is_err() {
                    return;
                }
                let _ = w.flush();
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // Is the client still there?
                let mut probe = [0u8; 1];
                w.set_nonblocking(true).unwrap();
                let gone = match w.read(&mut probe) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                };
                w.set_nonblocking(false).unwrap();
                if gone {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

fn metric_value(api: SocketAddr, name: &str) -> Option<f64> {
    let (_, body) = http_get(api, "/metrics").ok()?;
    body.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn pod_metadata_comes_from_the_api_list_and_watch() {
    let mut s = Setup::new();
    let web_uid = "7f1e2d3c-aaaa-4bbb-8ccc-000000000001";
    let quiet_uid = "7f1e2d3c-aaaa-4bbb-8ccc-000000000002";
    let ghost_uid = "7f1e2d3c-aaaa-4bbb-8ccc-000000000003";
    let web = pod(
        "shop",
        "web-7d4b9c-x2x9z",
        web_uid,
        1001,
        json!({"app": "web", "pod-template-hash": "7d4b9c"}),
        json!({"kubectl.kubernetes.io/restartedAt": "2024-05-01T09:58:00Z"}),
    );
    let list = json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "1005"},
        "items": [web.clone()]
    });
    let server = ApiServer::start(list);
    let token = s.dir.path().join("token");
    std::fs::write(&token, "s3cr3t-token\n").unwrap();
    let web_log = s.log("shop", "web-7d4b9c-x2x9z", web_uid, "nginx");
    let quiet_log = s.log("shop", "quiet-5f5f5f-aaaaa", quiet_uid, "nginx");
    let ghost_log = s.log("shop", "ghost-0", ghost_uid, "main");
    append(&web_log, "2024-05-01T10:00:00Z stdout F first\n");
    let api = free_addr();
    let cfg = s.config(&format!(
        r#"
[api]
address = "{api}"
[sources.pods]
type = "kubernetes_logs"
root = "{root}"
exclude_self = false
glob_minimum_cooldown_ms = 200
[sources.pods.api]
endpoint = "http://{server}"
token_file = "{token}"
allow_plaintext_credentials = true
node_name = "node-1"
delay_deletion_ms = 60000
[sinks.out]
type = "file"
inputs = ["pods"]
path = "{out}"
encoding.codec = "json"
"#,
        root = s.root().display(),
        server = server.addr,
        token = token.display(),
        out = s.out("out").display(),
    ));
    let child = s.start(&cfg);
    s.wait_for("out", 1);
    let first = &s.events("out")[0];
    assert_eq!(
        first["kubernetes"],
        json!({
            "pod_namespace": "shop",
            "pod_name": "web-7d4b9c-x2x9z",
            "pod_uid": web_uid,
            "container_name": "nginx",
            "container_image": "nginx:1.27.0",
            "pod_labels": {"app": "web", "pod-template-hash": "7d4b9c"},
            "pod_annotations": {"kubectl.kubernetes.io/restartedAt": "2024-05-01T09:58:00Z"},
            "pod_node_name": "node-1",
            "pod_owner": "ReplicaSet/web-7d4b9c",
            "pod_ip": "10.244.1.17"
        })
    );
    // The watch: web gets a new label, a pod that opts out appears, a bookmark passes.
    let mut web2 = pod(
        "shop",
        "web-7d4b9c-x2x9z",
        web_uid,
        1010,
        json!({"app": "web", "pod-template-hash": "7d4b9c", "tier": "frontend"}),
        json!({}),
    );
    server
        .pod_events
        .send(json!({"type": "MODIFIED", "object": web2.clone()}))
        .unwrap();
    server
        .pod_events
        .send(json!({"type": "ADDED", "object": pod("shop", "quiet-5f5f5f-aaaaa", quiet_uid, 1011, json!({"app": "quiet"}), json!({"weir.io/exclude": "true"}))}))
        .unwrap();
    server
        .pod_events
        .send(json!({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "1012", "annotations": {"k8s.io/initial-events-end": "true"}}}}))
        .unwrap();
    // The watch events reach the cache before these lines are read.
    std::thread::sleep(Duration::from_millis(1500));
    append(&web_log, "2024-05-01T10:00:01Z stdout F second\n");
    append(
        &quiet_log,
        "2024-05-01T10:00:01Z stdout F must not be shipped\n",
    );
    append(
        &ghost_log,
        "2024-05-01T10:00:01Z stdout F unknown to the API\n",
    );
    s.wait_for("out", 3);
    // The web pod is deleted: lines written after still carry its metadata (delay_deletion).
    web2["metadata"]["deletionTimestamp"] = json!("2024-05-01T10:00:02Z");
    server
        .pod_events
        .send(json!({"type": "DELETED", "object": web2}))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    append(&web_log, "2024-05-01T10:00:02Z stdout F last words\n");
    s.wait_for("out", 4);
    assert!(wait_until(Duration::from_secs(10), || metric_value(
        api,
        "weir_kubernetes_logs_excluded_events_total"
    ) == Some(1.0)));
    std::thread::sleep(Duration::from_millis(500));
    s.stop(child);
    let evs = s.events("out");
    let by_msg: BTreeMap<String, Value> = evs
        .iter()
        .map(|e| {
            (
                e["message"].as_str().unwrap().to_string(),
                e["kubernetes"].clone(),
            )
        })
        .collect();
    assert_eq!(
        by_msg.keys().cloned().collect::<Vec<_>>(),
        vec!["first", "last words", "second", "unknown to the API"],
        "the opted-out pod's line is left out: {evs:?}"
    );
    assert_eq!(by_msg["second"]["pod_labels"]["tier"], "frontend");
    assert_eq!(by_msg["second"]["pod_annotations"], json!({}));
    assert_eq!(by_msg["last words"]["pod_labels"]["tier"], "frontend");
    assert_eq!(by_msg["last words"]["pod_owner"], "ReplicaSet/web-7d4b9c");
    assert_eq!(
        by_msg["unknown to the API"],
        json!({"pod_namespace": "shop", "pod_name": "ghost-0", "pod_uid": ghost_uid, "container_name": "main"})
    );
    // The client asked for this node's pods, listed then watched from the list's version.
    let reqs: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /api/v1/pods"))
        .collect();
    assert!(
        reqs[0].starts_with(
            "GET /api/v1/pods?limit=500&fieldSelector=spec.nodeName%3Dnode-1 HTTP/1.1"
        ),
        "{reqs:?}"
    );
    assert!(
        reqs[1].starts_with("GET /api/v1/pods?watch=1&allowWatchBookmarks=true&timeoutSeconds=290&resourceVersion=1005&fieldSelector=spec.nodeName%3Dnode-1 HTTP/1.1"),
        "{reqs:?}"
    );
}

#[test]
fn without_api_access_path_metadata_is_used_and_said_once() {
    let mut s = Setup::new();
    let log = s.log(
        "ops",
        "batch-1",
        "9e8d7c6b-0000-4000-8000-00000000000a",
        "job",
    );
    append(&log, "2024-05-01T10:00:00Z stdout F one\n");
    // An endpoint nobody listens on.
    let nobody = free_addr();
    let cfg = s.config(&format!(
        r#"
[api]
enabled = false
[sources.pods]
type = "kubernetes_logs"
root = "{root}"
glob_minimum_cooldown_ms = 200
api.endpoint = "http://{nobody}"
[sinks.out]
type = "file"
inputs = ["pods"]
path = "{out}"
encoding.codec = "json"
"#,
        root = s.root().display(),
        out = s.out("out").display(),
    ));
    let child = s.start(&cfg);
    s.wait_for("out", 1);
    std::thread::sleep(Duration::from_millis(2500));
    append(&log, "2024-05-01T10:00:01Z stdout F two\n");
    s.wait_for("out", 2);
    let log = s.stop(child);
    let evs = s.events("out");
    assert_eq!(evs[1]["message"], "two");
    assert_eq!(
        evs[1]["kubernetes"],
        json!({"pod_namespace": "ops", "pod_name": "batch-1", "pod_uid": "9e8d7c6b-0000-4000-8000-00000000000a", "container_name": "job"})
    );
    assert_eq!(
        log.matches("no Kubernetes API access").count(),
        1,
        "said once, although retried:\n{log}"
    );
}

/// A realistic `Namespace` object, as `kubectl get namespace -o json` shows it.
fn namespace(name: &str, rv: u64, labels: Value) -> Value {
    let mut all = json!({"kubernetes.io/metadata.name": name});
    if let (Some(all), Some(extra)) = (all.as_object_mut(), labels.as_object()) {
        all.extend(extra.clone());
    }
    json!({
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": format!("0a0b0c0d-{:04x}-4000-8000-000000000000", rv % 0xffff),
            "resourceVersion": rv.to_string(),
            "creationTimestamp": "2024-04-01T08:00:00Z",
            "labels": all,
            "managedFields": [{
                "manager": "kubectl-create",
                "operation": "Update",
                "apiVersion": "v1",
                "time": "2024-04-01T08:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:kubernetes.io/metadata.name": {}}}}
            }]
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"}
    })
}

fn pod_list(rv: u64, items: Vec<Value>) -> Value {
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()}, "items": items})
}

/// A pipeline of the `kubernetes_logs` source into a JSON file, with its API options.
fn api_config(s: &Setup, api: &str) -> PathBuf {
    s.config(&format!(
        r#"
[api]
enabled = false
[sources.pods]
type = "kubernetes_logs"
root = "{root}"
exclude_self = false
glob_minimum_cooldown_ms = 200
[sources.pods.api]
node_name = "node-1"
{api}
[sinks.out]
type = "file"
inputs = ["pods"]
path = "{out}"
encoding.codec = "json"
"#,
        root = s.root().display(),
        out = s.out("out").display(),
    ))
}

/// Namespace labels from the list, then from watch events (MODIFIED, ADDED, BOOKMARK), then
/// from a new list after the watch is told its version is gone (410); a pod whose namespace
/// the API does not know keeps its pod fields.
#[test]
fn namespace_labels_come_from_the_api_list_and_watch() {
    let mut s = Setup::new();
    let web_uid = "7f1e2d3c-aaaa-4bbb-8ccc-0000000000a1";
    let job_uid = "7f1e2d3c-aaaa-4bbb-8ccc-0000000000a2";
    // The job's pod is known to the API, its namespace (`batch`) not yet.
    let pods = pod_list(
        3000,
        vec![
            pod(
                "shop",
                "web-7d4b9c-x2x9z",
                web_uid,
                2990,
                json!({"app": "web"}),
                json!({}),
            ),
            pod(
                "batch",
                "job-1",
                job_uid,
                2991,
                json!({"app": "job"}),
                json!({}),
            ),
        ],
    );
    let namespaces = json!({
        "kind": "NamespaceList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "4005"},
        "items": [namespace("shop", 4001, json!({"team": "web", "env": "prod"})), namespace("default", 10, json!({}))]
    });
    let server = ApiServer::start_with(pods, namespaces, None);
    let token = s.dir.path().join("token");
    std::fs::write(&token, "s3cr3t-token\n").unwrap();
    let web_log = s.log("shop", "web-7d4b9c-x2x9z", web_uid, "nginx");
    let job_log = s.log("batch", "job-1", job_uid, "main");
    append(&web_log, "2024-05-01T10:00:00Z stdout F listed\n");
    append(
        &job_log,
        "2024-05-01T10:00:00Z stdout F namespace not known yet\n",
    );
    let cfg = api_config(
        &s,
        &format!(
            "endpoint = \"http://{}\"\ntoken_file = \"{}\"\nallow_plaintext_credentials = true",
            server.addr,
            token.display()
        ),
    );
    let child = s.start(&cfg);
    s.wait_for("out", 2);
    // The watch: shop's labels change, a new namespace appears, a bookmark passes.
    server
        .namespace_events
        .send(json!({"type": "MODIFIED", "object": namespace("shop", 4010, json!({"team": "storefront"}))}))
        .unwrap();
    server
        .namespace_events
        .send(json!({"type": "ADDED", "object": namespace("batch", 4011, json!({"team": "data"}))}))
        .unwrap();
    server
        .namespace_events
        .send(json!({"type": "BOOKMARK", "object": {"kind": "Namespace", "apiVersion": "v1", "metadata": {"resourceVersion": "4012"}}}))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    append(&web_log, "2024-05-01T10:00:01Z stdout F watched\n");
    append(&job_log, "2024-05-01T10:00:01Z stdout F namespace added\n");
    s.wait_for("out", 4);
    // The watch's version is too old (410 Gone, as an ERROR event): the namespaces are listed
    // again, and what the new list says counts.
    server.set_namespaces(json!({
        "kind": "NamespaceList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "4100"},
        "items": [
            namespace("shop", 4090, json!({"team": "checkout"})),
            namespace("batch", 4095, json!({"team": "data", "tier": "2"})),
        ]
    }));
    server
        .namespace_events
        .send(json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "too old resource version: 4012 (4090)", "reason": "Expired", "code": 410}}))
        .unwrap();
    let relisted = wait_until(Duration::from_secs(10), || {
        server
            .requests()
            .iter()
            .any(|r| r.contains("/api/v1/namespaces?watch=1&allowWatchBookmarks=true&timeoutSeconds=290&resourceVersion=4100 "))
    });
    assert!(relisted, "{:?}", server.requests());
    append(&web_log, "2024-05-01T10:00:02Z stdout F relisted\n");
    append(&job_log, "2024-05-01T10:00:02Z stdout F batch relisted\n");
    s.wait_for("out", 6);
    let log = s.stop(child);
    let by_msg: BTreeMap<String, Value> = s
        .events("out")
        .iter()
        .map(|e| {
            (
                e["message"].as_str().unwrap().to_string(),
                e["kubernetes"].clone(),
            )
        })
        .collect();
    assert_eq!(
        by_msg["listed"]["namespace_labels"],
        json!({"kubernetes.io/metadata.name": "shop", "team": "web", "env": "prod"})
    );
    assert_eq!(by_msg["listed"]["pod_labels"], json!({"app": "web"}));
    // A namespace the API does not know: no namespace labels, the pod's fields all there.
    let unknown = &by_msg["namespace not known yet"];
    assert!(unknown.get("namespace_labels").is_none(), "{by_msg:?}");
    assert_eq!(unknown["pod_labels"], json!({"app": "job"}), "{by_msg:?}");
    assert_eq!(unknown["pod_namespace"], "batch");
    assert_eq!(unknown["pod_owner"], "ReplicaSet/job");
    assert_eq!(
        by_msg["watched"]["namespace_labels"],
        json!({"kubernetes.io/metadata.name": "shop", "team": "storefront"})
    );
    assert_eq!(
        by_msg["namespace added"]["namespace_labels"],
        json!({"kubernetes.io/metadata.name": "batch", "team": "data"})
    );
    assert_eq!(
        by_msg["relisted"]["namespace_labels"],
        json!({"kubernetes.io/metadata.name": "shop", "team": "checkout"})
    );
    assert_eq!(
        by_msg["batch relisted"]["namespace_labels"],
        json!({"kubernetes.io/metadata.name": "batch", "team": "data", "tier": "2"})
    );
    assert_eq!(
        by_msg["batch relisted"]["pod_labels"],
        json!({"app": "job"})
    );
    // Namespaces are listed (all of them: no node selector), then watched from the list's
    // version.
    let reqs = server.requests();
    let ns: Vec<&String> = reqs
        .iter()
        .filter(|r| r.starts_with("GET /api/v1/namespaces"))
        .collect();
    assert!(
        ns[0].starts_with("GET /api/v1/namespaces?limit=500 HTTP/1.1"),
        "{reqs:?}"
    );
    assert!(
        ns[1].starts_with("GET /api/v1/namespaces?watch=1&allowWatchBookmarks=true&timeoutSeconds=290&resourceVersion=4005 HTTP/1.1"),
        "{reqs:?}"
    );
    assert!(!log.contains("no namespace labels"), "{log}");
}

/// The API over HTTPS as in a pod: the endpoint from `KUBERNETES_SERVICE_HOST`/`_PORT`, the
/// server's certificate checked against the service account's CA, the bearer token from its
/// file.
#[test]
fn https_api_with_a_ca_file_and_a_bearer_token_file() {
    let mut s = Setup::new();
    let certs = s.dir.path().join("tls");
    std::fs::create_dir_all(&certs).unwrap();
    let (ca, cert, key) = crate::harness::make_certs(&certs);
    let uid = "7f1e2d3c-aaaa-4bbb-8ccc-0000000000b1";
    let pods = pod_list(
        5000,
        vec![pod(
            "shop",
            "web-7d4b9c-x2x9z",
            uid,
            4990,
            json!({"app": "web"}),
            json!({}),
        )],
    );
    let namespaces = json!({
        "kind": "NamespaceList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "5001"},
        "items": [namespace("shop", 4001, json!({"team": "web"}))]
    });
    let server = ApiServer::start_with(pods, namespaces, Some((&cert, &key)));
    let sa = s.dir.path().join("serviceaccount");
    std::fs::create_dir_all(&sa).unwrap();
    std::fs::copy(&ca, sa.join("ca.crt")).unwrap();
    std::fs::write(sa.join("token"), "s3cr3t-token\n").unwrap();
    let log_file = s.log("shop", "web-7d4b9c-x2x9z", uid, "nginx");
    append(&log_file, "2024-05-01T10:00:00Z stdout F over https\n");
    let cfg = api_config(
        &s,
        &format!(
            "ca_file = \"{}\"\ntoken_file = \"{}\"",
            sa.join("ca.crt").display(),
            sa.join("token").display()
        ),
    );
    let env = [
        ("KUBERNETES_SERVICE_HOST", "127.0.0.1".to_string()),
        ("KUBERNETES_SERVICE_PORT", server.addr.port().to_string()),
    ];
    let child = s.start_env(&cfg, &env);
    s.wait_for("out", 1);
    let log = s.stop(child);
    let ev = &s.events("out")[0];
    assert_eq!(
        ev["kubernetes"]["pod_labels"],
        json!({"app": "web"}),
        "{log}"
    );
    assert_eq!(ev["kubernetes"]["namespace_labels"]["team"], "web", "{log}");
    // Every request came over TLS with the token, and both collections were read.
    let reqs = server.requests();
    assert!(reqs.len() >= 4, "{reqs:?}");
    for r in &reqs {
        assert!(
            r.contains("\r\nauthorization: Bearer s3cr3t-token\r\n"),
            "no bearer token in {r:?}"
        );
        assert!(r.contains("\r\nhost: 127.0.0.1:"), "{r:?}");
    }
    assert!(reqs
        .iter()
        .any(|r| r.starts_with("GET /api/v1/pods?limit=500")));
    assert!(reqs
        .iter()
        .any(|r| r.starts_with("GET /api/v1/namespaces?limit=500")));
    assert!(!log.contains("no Kubernetes API access"), "{log}");
}

#[test]
fn https_api_with_the_wrong_ca_is_refused_and_path_metadata_is_shipped() {
    let mut s = Setup::new();
    let (theirs, mine) = (s.dir.path().join("tls"), s.dir.path().join("other-ca"));
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::create_dir_all(&mine).unwrap();
    let (_, cert, key) = crate::harness::make_certs(&theirs);
    // A CA that did not sign the server's certificate.
    let (wrong_ca, _, _) = crate::harness::make_certs(&mine);
    let uid = "7f1e2d3c-aaaa-4bbb-8ccc-0000000000c1";
    let pods = pod_list(
        6000,
        vec![pod(
            "shop",
            "web-7d4b9c-x2x9z",
            uid,
            5990,
            json!({"app": "web"}),
            json!({}),
        )],
    );
    let server = ApiServer::start_with(pods, no_namespaces(), Some((&cert, &key)));
    let token = s.dir.path().join("token");
    std::fs::write(&token, "s3cr3t-token\n").unwrap();
    let log_file = s.log("shop", "web-7d4b9c-x2x9z", uid, "nginx");
    append(&log_file, "2024-05-01T10:00:00Z stdout F one\n");
    let cfg = api_config(
        &s,
        &format!(
            "endpoint = \"https://127.0.0.1:{}\"\nca_file = \"{}\"\ntoken_file = \"{}\"",
            server.addr.port(),
            wrong_ca.display(),
            token.display()
        ),
    );
    let child = s.start(&cfg);
    s.wait_for("out", 1);
    append(&log_file, "2024-05-01T10:00:01Z stdout F two\n");
    s.wait_for("out", 2);
    let log = s.stop(child);
    for ev in s.events("out") {
        assert_eq!(
            ev["kubernetes"],
            json!({"pod_namespace": "shop", "pod_name": "web-7d4b9c-x2x9z", "pod_uid": uid, "container_name": "nginx"})
        );
    }
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("no Kubernetes API access"))
        .collect();
    assert_eq!(said.len(), 1, "said once:\n{log}");
    // Both test CAs are named `weir-test-ca` (as a re-created cluster CA is), so rustls says
    // `BadSignature`; a CA of another name gives `UnknownIssuer`.
    let expected = [
        format!(
            "no Kubernetes API access (TLS with https://127.0.0.1:{}: invalid peer certificate: ",
            server.addr.port()
        ),
        format!(
            " (the server's certificate was checked against the CA certificates in {})): events carry the metadata of their path only",
            wrong_ca.display()
        ),
    ];
    for part in &expected {
        assert!(
            said[0].contains(part.as_str()),
            "{}\nexpected: {part}",
            said[0]
        );
    }
    assert!(
        !log.contains("no namespace labels"),
        "the unreachable API is reported by the pods watcher only:\n{log}"
    );
    // The token never went to a server the CA does not vouch for.
    assert_eq!(server.requests(), Vec::<String>::new());
}

#[test]
fn namespaces_refused_by_rbac_leave_pod_metadata_and_are_said_once() {
    let mut s = Setup::new();
    let uid = "7f1e2d3c-aaaa-4bbb-8ccc-0000000000d1";
    let pods = pod_list(
        7000,
        vec![pod(
            "shop",
            "web-7d4b9c-x2x9z",
            uid,
            6990,
            json!({"app": "web"}),
            json!({}),
        )],
    );
    // A ClusterRole with `pods` only: namespaces answer 403.
    let server = ApiServer::start_with(pods, Value::Null, None);
    let token = s.dir.path().join("token");
    std::fs::write(&token, "s3cr3t-token\n").unwrap();
    let log_file = s.log("shop", "web-7d4b9c-x2x9z", uid, "nginx");
    append(&log_file, "2024-05-01T10:00:00Z stdout F one\n");
    let cfg = api_config(
        &s,
        &format!(
            "endpoint = \"http://{}\"\ntoken_file = \"{}\"\nallow_plaintext_credentials = true",
            server.addr,
            token.display()
        ),
    );
    let child = s.start(&cfg);
    s.wait_for("out", 1);
    // Retries (500 ms, doubling) happen meanwhile; they are not said again.
    std::thread::sleep(Duration::from_millis(2000));
    append(&log_file, "2024-05-01T10:00:01Z stdout F two\n");
    s.wait_for("out", 2);
    let log = s.stop(child);
    for ev in s.events("out") {
        assert_eq!(
            ev["kubernetes"]["pod_labels"],
            json!({"app": "web"}),
            "{log}"
        );
        assert!(ev["kubernetes"].get("namespace_labels").is_none(), "{ev}");
    }
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("no namespace labels from the Kubernetes API"))
        .collect();
    assert_eq!(said.len(), 1, "said once:\n{log}");
    assert!(
        said[0].contains("the API answered 403 Forbidden"),
        "{}",
        said[0]
    );
    assert!(said[0].contains("namespaces is forbidden"), "{}", said[0]);
    assert!(!log.contains("no Kubernetes API access"), "{log}");
    let tries = server
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /api/v1/namespaces?limit=500"))
        .count();
    assert!(tries >= 2, "the namespaces list is retried: {tries}");
}
