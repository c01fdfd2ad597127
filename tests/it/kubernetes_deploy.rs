//! The Kubernetes packaging (`deploy/kubernetes/`, a Kustomize base and overlay) rendered by
//! `kubectl kustomize` (Debian's kubectl: no network) and checked against the Kubernetes
//! schemas (`kubernetes-validate`, which ships them), the ServiceMonitors against the subset
//! of their CRD's schema kept in `deploy/kubernetes/schemas/`; and the Weir configurations in
//! the ConfigMaps (`config/kubernetes/*.toml`) checked by `weir validate` and kept identical to
//! the ConfigMaps' copies.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::harness::{find_program, python_modules, require, weir};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// What can be applied: the agents alone, and the agents with the aggregators behind NATS.
const KUSTOMIZATIONS: [&str; 2] = [
    "deploy/kubernetes/base",
    "deploy/kubernetes/overlays/nats-aggregator",
];

/// `kubernetes-validate` (and the PyYAML and jsonschema it brings) in Python, and kubectl, or
/// the test is skipped (a failure under CI).
fn tools() -> Option<()> {
    require(
        "kubernetes-validate for Python",
        python_modules(&["kubernetes_validate", "yaml", "jsonschema"]),
    )?;
    require("kubectl", find_program("kubectl", &[]).map(|_| ()))
}

/// `kubectl kustomize <dir>`: the manifests as YAML.
fn render(dir: &str) -> String {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join(dir))
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn python(script: &str, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Every document `kubectl kustomize <dir>` renders, as JSON; `None` without the tools (the
/// test is skipped, or fails under CI).
fn documents(dir: &str) -> Option<Vec<Value>> {
    tools()?;
    let out = python(
        "import json, sys, yaml\nprint(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
        &[],
        &render(dir),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn manifests_render_and_pass_the_kubernetes_schemas() {
    let Some(()) = tools() else {
        return;
    };
    for dir in KUSTOMIZATIONS {
        let rendered = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(rendered.path(), render(dir)).unwrap();
        let out = Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "-k", "1.30.0"])
            .arg(rendered.path())
            .output()
            .expect("python3 runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{dir}: kubernetes-validate failed (scripts/install-test-deps.sh installs it: pip install kubernetes-validate):\n{text}"
        );
        let mut kinds = vec![
            "namespace/weir",
            "daemonset/weir-agent",
            "configmap/weir-agent",
            "serviceaccount/weir-agent",
            "clusterrole/weir-agent",
            "clusterrolebinding/weir-agent",
            "service/weir-agent",
        ];
        if dir.ends_with("nats-aggregator") {
            kinds.extend([
                "deployment/weir-aggregator",
                "configmap/weir-aggregator",
                "service/weir-aggregator",
                "serviceaccount/weir-aggregator",
                "poddisruptionbudget/weir-aggregator",
            ]);
        }
        for kind in kinds {
            assert!(
                text.contains(&format!("passed for resource {kind} ")),
                "{dir}: {kind}: {text}"
            );
        }
        // Everything else is a ServiceMonitor (no schema there), checked here.
        let unchecked = text
            .lines()
            .filter(|l| l.contains("Couldn't find schema"))
            .filter(|l| {
                !l.contains("kind ServiceMonitor with api version monitoring.coreos.com/v1")
            })
            .count();
        assert_eq!(unchecked, 0, "{dir}: {text}");
        let schema =
            repo().join("deploy/kubernetes/schemas/servicemonitor.monitoring.coreos.com-v1.json");
        let out = python(
            "import json, sys, yaml, jsonschema\n\
             schema = json.load(open(sys.argv[1]))\n\
             n = 0\n\
             for d in yaml.safe_load_all(sys.stdin):\n\
             \x20   if d and d.get('kind') == 'ServiceMonitor':\n\
             \x20       jsonschema.validate(d, schema)\n\
             \x20       n += 1\n\
             print(n)",
            &[schema.to_str().unwrap()],
            &render(dir),
        );
        assert!(
            out.status.success(),
            "{dir}: a ServiceMonitor fails its schema: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expected = if dir.ends_with("nats-aggregator") {
            "2"
        } else {
            "1"
        };
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            expected,
            "{dir}"
        );
    }
}

/// A broken ServiceMonitor fails the schema check (the check can fail).
#[test]
fn the_servicemonitor_schema_refuses_unknown_fields() {
    let Some(()) = tools() else {
        return;
    };
    let schema =
        repo().join("deploy/kubernetes/schemas/servicemonitor.monitoring.coreos.com-v1.json");
    let bad = "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\nspec:\n  selector: {}\n  endpoints: [{port: api, intervall: 30s}]\n";
    let out = python(
        "import json, sys, yaml, jsonschema\njsonschema.validate(yaml.safe_load(sys.stdin), json.load(open(sys.argv[1])))",
        &[schema.to_str().unwrap()],
        bad,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("intervall"));
}

#[test]
fn the_daemonset_mounts_logs_read_only_keeps_data_on_the_node_and_probes_health() {
    let Some(docs) = documents("deploy/kubernetes/base") else {
        return;
    };
    let ds = find(&docs, "DaemonSet", "weir-agent");
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let volume = |name: &str| {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
            .unwrap()
    };
    let mount = |path: &str| {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == path)
            .cloned()
            .unwrap_or_else(|| panic!("no mount at {path}"))
    };
    let logs = mount("/var/log/pods");
    assert_eq!(logs["readOnly"], true);
    assert_eq!(
        volume(logs["name"].as_str().unwrap())["hostPath"]["path"],
        "/var/log/pods"
    );
    let data = mount("/var/lib/weir");
    assert!(volume(data["name"].as_str().unwrap())["hostPath"]["path"].is_string());
    let env = c["env"].as_array().unwrap();
    let node = env.iter().find(|e| e["name"] == "NODE_NAME").unwrap();
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/health", "{probe}");
    }
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    // The safe posture (docs/security.md): the runtime's seccomp profile, no capability, no
    // privilege escalation, a read-only root, and an image pinned to a release.
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(sc["capabilities"]["add"].is_null(), "{sc}");
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert!(pod["privileged"].is_null() && sc["privileged"].is_null());
    let image = c["image"].as_str().unwrap();
    let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
    assert!(
        !tag.is_empty() && tag != "latest" && tag.chars().next().unwrap().is_ascii_digit(),
        "the image is not pinned to a release: {image}"
    );
    // The config comes from the ConfigMap, mounted where the args point.
    let cfg = mount("/etc/weir");
    assert_eq!(
        volume(cfg["name"].as_str().unwrap())["configMap"]["name"],
        "weir-agent"
    );
    assert_eq!(
        c["args"],
        serde_json::json!(["run", "--watch-config", "--config", "/etc/weir/weir.toml"])
    );
    // A whole-directory mount: a subPath mount is never updated, `--watch-config` would see
    // nothing.
    assert!(cfg["subPath"].is_null());
    // The binary takes those arguments.
    let help = crate::harness::weir()
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in ["--watch-config", "--config"] {
        assert!(help.contains(flag), "`weir run` has no {flag}:\n{help}");
    }
    // The metrics: a headless Service over the agents' API port, scraped by a ServiceMonitor.
    scraped(&docs, ds, "weir-agent");
    // RBAC: read-only access to pods and namespaces, bound to the DaemonSet's account.
    let role = find(&docs, "ClusterRole", "weir-agent");
    let rule = &role["rules"][0];
    for r in ["pods", "namespaces"] {
        assert!(rule["resources"].as_array().unwrap().iter().any(|x| x == r));
    }
    let verbs: Vec<&str> = rule["verbs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(verbs, vec!["get", "list", "watch"]);
    let binding = find(&docs, "ClusterRoleBinding", "weir-agent");
    assert_eq!(binding["subjects"][0]["name"], pod["serviceAccountName"]);
}

/// The Service `name` selects the pods of `workload`, on its `api` port, and the
/// ServiceMonitor `name` scrapes `/metrics` there.
fn scraped(docs: &[Value], workload: &Value, name: &str) {
    let pod_labels = &workload["spec"]["template"]["metadata"]["labels"];
    let svc = find(docs, "Service", name);
    assert_eq!(svc["spec"]["clusterIP"], "None");
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "{name}: the Service selects {k}={v}");
    }
    let port = &svc["spec"]["ports"][0];
    assert_eq!(port["name"], "api");
    assert_eq!(port["targetPort"], "api");
    let c = &workload["spec"]["template"]["spec"]["containers"][0];
    assert!(c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "api" && p["containerPort"] == 8686));
    let sm = find(docs, "ServiceMonitor", name);
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "{name}: the ServiceMonitor selects {k}={v}"
        );
    }
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "api");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
}

#[test]
fn the_aggregators_pull_from_nats_with_limits_a_safe_posture_and_a_watched_config() {
    let Some(docs) = documents("deploy/kubernetes/overlays/nats-aggregator") else {
        return;
    };
    let d = find(&docs, "Deployment", "weir-aggregator");
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(
        c["args"],
        serde_json::json!(["run", "--watch-config", "--config", "/etc/weir/weir.toml"])
    );
    let cfg = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/etc/weir")
        .unwrap();
    assert!(cfg["subPath"].is_null());
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == cfg["name"])
        .unwrap();
    assert_eq!(volume["configMap"]["name"], "weir-aggregator");
    for r in ["requests", "limits"] {
        for k in ["cpu", "memory"] {
            assert!(c["resources"][r][k].is_string(), "{r}.{k}");
        }
    }
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    let sc = &c["securityContext"];
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/health", "{probe}");
    }
    scraped(&docs, d, "weir-aggregator");
    // The agents of this overlay: the NATS configuration, NATS_URL, their posture kept.
    let ds = find(&docs, "DaemonSet", "weir-agent");
    let agent = &ds["spec"]["template"]["spec"]["containers"][0];
    let env = agent["env"].as_array().unwrap();
    assert!(env.iter().any(|e| e["name"] == "NATS_URL"));
    assert!(
        env.iter().any(|e| e["name"] == "NODE_NAME"),
        "the patch keeps the base's env"
    );
    assert_eq!(
        agent["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    assert_eq!(agent["resources"]["limits"]["memory"], "384Mi");
    scraped(&docs, ds, "weir-agent");
}

#[test]
fn the_configs_validate_and_are_the_configmaps_content() {
    for (dir, name, file) in [
        (
            "deploy/kubernetes/base",
            "weir-agent",
            "config/kubernetes/agent.toml",
        ),
        (
            "deploy/kubernetes/overlays/nats-aggregator",
            "weir-agent",
            "config/kubernetes/agent-nats.toml",
        ),
        (
            "deploy/kubernetes/overlays/nats-aggregator",
            "weir-aggregator",
            "config/kubernetes/aggregator.toml",
        ),
    ] {
        let Some(docs) = documents(dir) else { return };
        let cm = find(&docs, "ConfigMap", name);
        let path = repo().join(file);
        assert_eq!(
            cm["data"]["weir.toml"].as_str().unwrap(),
            std::fs::read_to_string(&path).unwrap(),
            "{dir}: the ConfigMap {name} must hold {file} as is"
        );
        let data = tempfile::tempdir().unwrap();
        let out = weir()
            .env("NODE_NAME", "ip-10-0-0-1.ec2.internal")
            .env("POD_NAME", "weir-aggregator-5d9c7b-x2x7q")
            .env("WEIR_DATA_DIR", data.path())
            .arg("validate")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
