//! deploy/ is checked, not just written:
//! * every Kubernetes manifest validates against the Kubernetes schemas of two pinned versions
//!   (PyPI `kubernetes-validate`, strict: unknown fields are errors; it ships the schemas, so
//!   this runs offline). It has no schemas for CRDs, so the ServiceMonitor is validated against
//!   a strict hand-written schema of the fields we use
//!   (tests/fixtures/schemas/servicemonitor.monitoring.coreos.com-v1.json) with the same
//!   venv's `jsonschema`;
//! * the manifests agree with each other and with the agent (ports, labels, probes, config);
//! * the DaemonSet keeps to least privilege (capabilities of docs/deploy.md, not privileged,
//!   read-only root and host paths);
//! * the ConfigMap's config parses with the agent's own parser;
//! * the Grafana dashboard parses and queries only metrics we export.
//!
//! `kubernetes-validate` lives in `.cache/kubernetes-validate-venv` (`cargo xtask setup`);
//! without it the schema tests skip, or fail under CI=true.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde::Deserialize as _;
use serde_yaml_ng::Value;
use smp_agent::{
    cli::daemon_config::{DaemonArgs, DaemonConfig, FileConfig},
    metrics::{sample_names, synthetic::SyntheticNode, Format, MetricsOptions, NodeMetrics},
};
use smp_tests::{repo_root, require_tool};

/// Kubernetes versions the manifests must be valid for: the oldest we support and the newest
/// the pinned kubernetes-validate knows.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];
/// The capabilities docs/deploy.md justifies, and nothing else.
const CAPABILITIES: &[&str] = &["BPF", "PERFMON", "SYS_PTRACE", "SYS_RESOURCE"];
const INSTALL: &str = "cargo xtask setup installs it into .cache/kubernetes-validate-venv";

fn k8s_dir() -> PathBuf {
    repo_root().join("deploy/kubernetes")
}

/// Every manifest file named in kustomization.yaml.
fn manifests() -> Vec<PathBuf> {
    let k = load(&k8s_dir().join("kustomization.yaml"));
    k[0]["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(|r| k8s_dir().join(r.as_str().expect("resource path")))
        .collect()
}

fn load(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| {
            Value::deserialize(d).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()))
        })
        .collect()
}

/// The one document of `kind` in deploy/kubernetes.
fn object(kind: &str) -> Value {
    let mut found: Vec<Value> = manifests()
        .iter()
        .flat_map(|p| load(p))
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind}");
    found.remove(0)
}

fn venv_tool(name: &str, test: &str) -> Option<PathBuf> {
    let p = repo_root()
        .join(".cache/kubernetes-validate-venv/bin")
        .join(name);
    require_tool(p.to_str().unwrap(), test, INSTALL)
}

#[test]
fn kustomization_lists_every_manifest() {
    let listed: BTreeSet<PathBuf> = manifests().into_iter().collect();
    for p in &listed {
        assert!(p.is_file(), "{} is listed but missing", p.display());
    }
    let present: BTreeSet<PathBuf> = std::fs::read_dir(k8s_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    assert_eq!(
        listed, present,
        "kustomization.yaml and the directory disagree"
    );
    // Every object sits in the one namespace, or is cluster-scoped.
    for p in &listed {
        for d in load(p) {
            let kind = d["kind"].as_str().unwrap().to_string();
            let ns = d["metadata"]["namespace"].as_str();
            match kind.as_str() {
                "Namespace" | "ClusterRole" | "ClusterRoleBinding" => assert_eq!(ns, None),
                _ => assert_eq!(ns, Some("smp-system"), "{kind} in {}", p.display()),
            }
        }
    }
}

#[test]
fn manifests_validate_against_kubernetes_schemas() {
    let test = "manifests_validate_against_kubernetes_schemas";
    let Some(validate) = venv_tool("kubernetes-validate", test) else {
        return;
    };
    let files: Vec<PathBuf> = manifests()
        .into_iter()
        .filter(|p| !p.ends_with("servicemonitor.yaml"))
        .collect();
    for version in KUBERNETES_VERSIONS {
        let out = Command::new(&validate)
            .args(["--kubernetes-version", version, "--strict"])
            .args(&files)
            .output()
            .expect("run kubernetes-validate");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "Kubernetes {version}:\n{text}");
        // A missing schema is only a warning for the tool: not for us.
        assert!(!text.contains("WARN") && !text.contains("ERROR"), "{text}");
        let passed = text.lines().filter(|l| l.contains(" passed ")).count();
        assert_eq!(passed, 8, "one line per object:\n{text}");
    }
    // Proof that it is strict: a misspelt field fails.
    let bad = std::env::temp_dir().join(format!("smp-bad-ds-{}.yaml", std::process::id()));
    let ds = std::fs::read_to_string(k8s_dir().join("daemonset.yaml")).unwrap();
    std::fs::write(
        &bad,
        ds.replace("readOnlyRootFilesystem", "readOnlyRootFileSystem"),
    )
    .unwrap();
    let out = Command::new(&validate)
        .args(["--kubernetes-version", KUBERNETES_VERSIONS[1], "--strict"])
        .arg(&bad)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&bad);
    assert!(!out.status.success(), "a misspelt field passed validation");
}

#[test]
fn servicemonitor_validates_against_its_schema() {
    let test = "servicemonitor_validates_against_its_schema";
    let Some(python) = venv_tool("python", test) else {
        return;
    };
    let schema =
        repo_root().join("tests/fixtures/schemas/servicemonitor.monitoring.coreos.com-v1.json");
    let script = r#"
import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
docs = list(yaml.safe_load_all(open(sys.argv[2])))
assert len(docs) == 1, docs
errors = sorted(v.iter_errors(docs[0]), key=lambda e: list(e.path))
for e in errors:
    print("/".join(map(str, e.path)) + ": " + e.message)
# Strictness check: an unknown endpoint field must fail.
docs[0]["spec"]["endpoints"][0]["honorlabels"] = True
assert not v.is_valid(docs[0]), "schema is not strict"
sys.exit(1 if errors else 0)
"#;
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&schema)
        .arg(k8s_dir().join("servicemonitor.yaml"))
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn manifests_agree_with_each_other_and_the_agent() {
    let ds = object("DaemonSet");
    let pod = &ds["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        labels["app.kubernetes.io/name"]
    );
    let c = &pod["spec"]["containers"][0];
    let port = &c["ports"][0];
    assert_eq!(port["name"], "metrics");
    let port_number = port["containerPort"].as_u64().unwrap();

    // The Service selects the pods and exposes the named port; the ServiceMonitor scrapes it.
    let svc = object("Service");
    assert_eq!(
        svc["spec"]["selector"]["app.kubernetes.io/name"],
        labels["app.kubernetes.io/name"]
    );
    assert_eq!(svc["spec"]["ports"][0]["name"], "metrics");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");
    let sm = object("ServiceMonitor");
    assert_eq!(
        sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        svc["metadata"]["labels"]["app.kubernetes.io/name"]
    );
    let ep = &sm["spec"]["endpoints"][0];
    assert_eq!(ep["port"], "metrics");
    assert_eq!(ep["path"], "/metrics");
    assert_eq!(ep["honorLabels"], true, "our pod/namespace labels must win");

    // Scrape annotations point at the same port and path.
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(
        ann["prometheus.io/port"].as_str().unwrap(),
        port_number.to_string()
    );
    assert_eq!(ann["prometheus.io/path"], "/metrics");

    // Probes use the server's endpoints.
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "metrics");

    // The ServiceAccount and RBAC: read-only pods, bound to the agent's account.
    assert_eq!(
        pod["spec"]["serviceAccountName"],
        object("ServiceAccount")["metadata"]["name"]
    );
    let role = object("ClusterRole");
    assert_eq!(role["rules"].as_sequence().unwrap().len(), 1);
    assert_eq!(role["rules"][0]["resources"][0], "pods");
    let verbs: BTreeSet<&str> = role["rules"][0]["verbs"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(verbs, BTreeSet::from(["get", "list", "watch"]));
    let binding = object("ClusterRoleBinding");
    assert_eq!(binding["subjects"][0]["name"], "smp-agent");
    assert_eq!(binding["subjects"][0]["namespace"], "smp-system");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);

    // The ConfigMap is mounted where --config points.
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "daemon");
    let config_path = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    let cm = object("ConfigMap");
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "config")
        .unwrap();
    let key = config_path
        .strip_prefix(&format!("{}/", mount["mountPath"].as_str().unwrap()))
        .expect("config under the ConfigMap mount");
    assert!(cm["data"][key].is_string(), "ConfigMap has no {key}");
    let vol = pod["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "config")
        .unwrap();
    assert_eq!(vol["configMap"]["name"], cm["metadata"]["name"]);
}

/// The environment the DaemonSet gives the container, with `$(POD_IP)` expanded to `pod_ip`.
fn container_env(pod_ip: &str) -> Vec<(String, String)> {
    let ds = object("DaemonSet");
    ds["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_string();
            let value = match e["value"].as_str() {
                Some(v) => v.replace("$(POD_IP)", pod_ip),
                None => match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                    Some("status.podIP") => pod_ip.to_string(),
                    Some("spec.nodeName") => "node-1".to_string(),
                    other => panic!("unexpected env source {other:?}"),
                },
            };
            (name, value)
        })
        .collect()
}

#[test]
fn configmap_config_parses_with_the_agents_parser() {
    let cm = object("ConfigMap");
    let text = cm["data"]["config.yaml"].as_str().unwrap();
    let file = FileConfig::parse(text, Path::new("configmap.yaml:config.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        file.listen, None,
        "the DaemonSet sets the address from the pod IP"
    );
    // Resolve as the container would: the file plus the DaemonSet's environment.
    let path = std::env::temp_dir().join(format!("smp-cm-config-{}.yaml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    for pod_ip in ["10.244.1.7", "fd00:10:244:1::7"] {
        let env = container_env(pod_ip);
        let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let args = DaemonArgs {
            config: Some(path.clone()),
            ..DaemonArgs::default()
        };
        let cfg = DaemonConfig::resolve(&args, lookup).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.listen.ip().to_string(), pod_ip);
        assert_eq!(cfg.listen.port(), 9477);
        assert_eq!(cfg.node_name.as_deref(), Some("node-1"));
        assert_eq!(
            cfg.discovery(),
            smp_agent::proxy::DiscoveryConfig::default()
        );
        assert_eq!(cfg.metrics_options(), MetricsOptions::default());
    }
    let _ = std::fs::remove_file(&path);
}

/// Issue 17 item 7: only the Prometheus namespace may reach the metrics port, and the policy
/// selects exactly the agent's pods and its named port.
#[test]
fn networkpolicy_admits_only_the_prometheus_namespace() {
    let ds = object("DaemonSet");
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    let np = object("NetworkPolicy");
    let spec = &np["spec"];
    assert_eq!(
        spec["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        labels["app.kubernetes.io/name"]
    );
    assert_eq!(
        spec["podSelector"]["matchLabels"]
            .as_mapping()
            .unwrap()
            .len(),
        1,
        "selects by the name label only"
    );
    // Ingress only: egress (the API server) stays open.
    let types: Vec<&str> = spec["policyTypes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(types, ["Ingress"]);
    let rules = spec["ingress"].as_sequence().unwrap();
    assert_eq!(rules.len(), 1, "one rule");
    let from = rules[0]["from"].as_sequence().unwrap();
    assert_eq!(from.len(), 1, "one peer");
    let peer = from[0].as_mapping().unwrap();
    assert_eq!(
        peer.len(),
        1,
        "a namespace selector alone (no ipBlock, no podSelector)"
    );
    let ns = &from[0]["namespaceSelector"]["matchLabels"];
    assert_eq!(ns.as_mapping().unwrap().len(), 1);
    assert_eq!(ns["kubernetes.io/metadata.name"], "monitoring");
    let ports = rules[0]["ports"].as_sequence().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["port"], "metrics");
    assert_eq!(ports[0]["protocol"], "TCP");
    assert_eq!(
        ds["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"],
        "metrics"
    );
}

#[test]
fn daemonset_keeps_to_least_privilege() {
    let ds = object("DaemonSet");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(
        spec["hostPID"], true,
        "sidecars live in other pid namespaces"
    );
    assert_ne!(spec["hostNetwork"], true);
    assert_ne!(spec["hostIPC"], true);
    let c = &spec["containers"][0];
    let sc = &c["securityContext"];
    assert_ne!(
        sc["privileged"], true,
        "docs/design.md, rule 6: never privileged"
    );
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    let drop: Vec<&str> = sc["capabilities"]["drop"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(drop, ["ALL"]);
    let add: BTreeSet<&str> = sc["capabilities"]["add"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(add, CAPABILITIES.iter().copied().collect());
    // Each capability is explained in the deploy guide.
    let guide = std::fs::read_to_string(repo_root().join("docs/deploy.md")).unwrap();
    for cap in CAPABILITIES {
        assert!(
            guide.contains(&format!("`CAP_{cap}`")),
            "docs/deploy.md does not explain CAP_{cap}"
        );
    }
    // Every host path is mounted read-only, and documented.
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    for v in spec["volumes"].as_sequence().unwrap() {
        if let Some(host) = v["hostPath"]["path"].as_str() {
            let m = mounts.iter().find(|m| m["name"] == v["name"]).unwrap();
            assert_eq!(m["readOnly"], true, "hostPath {host} mounted writable");
            assert!(
                guide.contains(&format!("`{host}`")),
                "docs/deploy.md does not explain {host}"
            );
        }
    }
    for what in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(c["resources"][what][r].is_string(), "resources.{what}.{r}");
        }
    }
}

#[test]
fn grafana_dashboard_queries_only_our_metrics() {
    let path = repo_root().join("deploy/grafana/smp-agent.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("dashboard JSON");
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let panels = dashboard["panels"].as_array().expect("panels");
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");

    let m = NodeMetrics::new(MetricsOptions::default());
    let mut node = SyntheticNode::new();
    for i in 1..=3 {
        m.update(&node.tick(Duration::from_millis(100 * i)));
    }
    let exported = sample_names(&m.encode(Format::PrometheusText));
    // Metric names in the queries: panel targets' `expr` and template variables' `query`.
    let mut queries = Vec::new();
    collect_queries(&dashboard, &mut queries);
    let text = queries.join("\n");
    let mut used = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(off) = text[i..].find("smp_") {
        let start = i + off;
        let end = start
            + bytes[start..]
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                .unwrap_or(bytes.len() - start);
        // Only names that start a token (not e.g. the "smp-agent" uid).
        if start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            used.insert(text[start..end].to_string());
        }
        i = end;
    }
    assert!(used.len() >= 10, "{used:?}");
    let unknown: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "dashboard uses metrics we do not export: {unknown:?}"
    );
    // The headline panels are there.
    for want in [
        "smp_hop_duration_seconds_bucket",
        "smp_proxy_cpu_seconds_total",
        "smp_proxy_resident_memory_bytes",
        "smp_proxy_requests_total",
        "smp_events_lost_total",
    ] {
        assert!(used.contains(want), "dashboard does not show {want}");
    }
}

fn collect_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_queries(v, out)),
        _ => {}
    }
}

#[test]
fn dockerfile_is_multi_stage_with_the_pinned_toolchain() {
    let text = std::fs::read_to_string(repo_root().join("deploy/Dockerfile")).unwrap();
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert!(froms[0].ends_with(" AS builder"));
    assert!(
        text.contains("ARG BPF_LINKER_VERSION=0.10.4"),
        "bpf-linker pinned to 0.10.4 (docs/architecture.md, Toolchain)"
    );
    assert!(text.contains("--component rust-src"));
    assert!(text.contains("COPY --from=builder"));
    let setup = std::fs::read_to_string(repo_root().join("xtask/src/setup.rs")).unwrap();
    assert!(
        setup.contains("BPF_LINKER_VERSION: &str = \"0.10.4\""),
        "Dockerfile and xtask setup agree"
    );
}
