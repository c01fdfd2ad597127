//! The Kubernetes deployment (`deploy/kubernetes/`) against the Kubernetes schemas
//! (`kubernetes-validate`, which ships them: no network), and its agent configuration
//! (`config/kubernetes/agent.toml`) checked by `weir validate` and kept identical to the
//! ConfigMap's copy.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::harness::{python_modules, require, weir};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn manifests() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    assert!(v.len() >= 4, "{v:?}");
    v
}

/// `kubernetes-validate` (and the PyYAML it brings) in Python, or the test is skipped (a failure
/// under CI).
fn kubernetes_validate() -> Option<()> {
    require(
        "kubernetes-validate for Python",
        python_modules(&["kubernetes_validate", "yaml"]),
    )
}

/// Every document of every manifest, as JSON (parsed by PyYAML, which kubernetes-validate
/// brings); `None` without it (the test is skipped, or fails under CI).
fn documents() -> Option<Vec<Value>> {
    kubernetes_validate()?;
    let script = "import json, sys, yaml\nprint(json.dumps([d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]))";
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(manifests())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes"))
}

#[test]
fn manifests_pass_the_kubernetes_schemas() {
    let Some(()) = kubernetes_validate() else {
        return;
    };
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "-k", "1.30.0"])
        .args(manifests())
        .output()
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kubernetes-validate failed (scripts/install-test-deps.sh installs it: pip install kubernetes-validate):\n{text}"
    );
    for kind in [
        "daemonset",
        "configmap",
        "serviceaccount",
        "clusterrole",
        "clusterrolebinding",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}/")),
            "{kind}: {text}"
        );
    }
}

#[test]
fn the_daemonset_mounts_logs_read_only_keeps_data_on_the_node_and_probes_health() {
    let Some(docs) = documents() else { return };
    let ds = find(&docs, "DaemonSet");
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
        find(&docs, "ConfigMap")["metadata"]["name"]
    );
    assert!(c["args"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "/etc/weir/weir.toml"));
    // RBAC: read-only access to pods and namespaces, bound to the DaemonSet's account.
    let role = find(&docs, "ClusterRole");
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
    let binding = find(&docs, "ClusterRoleBinding");
    assert_eq!(binding["subjects"][0]["name"], pod["serviceAccountName"]);
}

#[test]
fn the_agent_config_validates_and_is_the_configmap_content() {
    let agent = repo().join("config/kubernetes/agent.toml");
    let Some(docs) = documents() else { return };
    let cm = find(&docs, "ConfigMap");
    assert_eq!(
        cm["data"]["weir.toml"].as_str().unwrap(),
        std::fs::read_to_string(&agent).unwrap(),
        "deploy/kubernetes/configmap.yaml must hold config/kubernetes/agent.toml as is"
    );
    let data = tempfile::tempdir().unwrap();
    let out = weir()
        .env("NODE_NAME", "node-1")
        .env("WEIR_DATA_DIR", data.path())
        .arg("validate")
        .arg(&agent)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
