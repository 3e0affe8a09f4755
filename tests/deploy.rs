//! What ships for a fleet (`deploy/`) cannot drift from the host: the Prometheus rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`), and every metric and
//! label the rules and the Grafana dashboard query is one the host exports (the names are read
//! from host/src/metrics.rs, where each is registered once), while every metric the host
//! exports is on some panel.
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const METRICS_RS: &str = include_str!("../host/src/metrics.rs");
const RULES: &str = include_str!("../deploy/prometheus/rules.yml");
const DASHBOARD: &str = include_str!("../deploy/grafana/tierhost.json");

/// Labels Prometheus or the queries themselves add (not exported by the host).
const OUTSIDE_LABELS: &[&str] = &["job", "instance", "le", "tier"];

/// Metric names the host registers: the `"tierhost_..."` literals of metrics.rs.
fn exported() -> BTreeSet<String> {
    METRICS_RS
        .match_indices("\"tierhost_")
        .filter_map(|(at, _)| {
            let name = METRICS_RS[at + 1..].split('"').next()?;
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c == '_')
                .then(|| name.to_string())
        })
        .collect()
}

/// Label names the host's metrics carry: the label lists of metrics.rs (`&["tier", ...]`,
/// every item a string literal).
fn exported_labels() -> BTreeSet<String> {
    METRICS_RS
        .split("&[")
        .skip(1)
        .filter_map(|rest| rest.split_once(']'))
        .map(|(list, _)| {
            list.split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|items| {
            items
                .iter()
                .all(|l| l.len() > 2 && l.starts_with('"') && l.ends_with('"'))
        })
        .flatten()
        .map(|l| l.trim_matches('"').to_string())
        .collect()
}

/// Names of recording rules defined in rules.yml.
fn recorded() -> BTreeSet<String> {
    RULES
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record:"))
        .map(|n| n.trim().to_string())
        .collect()
}

/// Metric names a PromQL expression reads (`tierhost_...` or a `tierhost:...` recording).
fn metrics_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("tierhost") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        rest = &rest[at + name.len()..];
        out.push(name);
    }
    out
}

/// Label names in `by (...)` clauses.
fn grouping_labels(expr: &str) -> Vec<String> {
    expr.split("by (")
        .skip(1)
        .filter_map(|rest| rest.split_once(')'))
        .flat_map(|(list, _)| list.split(',').map(|l| l.trim().to_string()))
        .collect()
}

/// Whether `name` is an exported metric, a histogram series of one, or a recording rule.
fn known(name: &str, exported: &BTreeSet<String>, recorded: &BTreeSet<String>) -> bool {
    if recorded.contains(name) || exported.contains(name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .is_some_and(|b| exported.contains(b))
    })
}

/// Every PromQL expression of the rules file (an `expr:` line, or the block after `expr: |`).
fn rule_exprs() -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = RULES.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(expr) = line.trim().strip_prefix("expr:") else {
            continue;
        };
        if expr.trim() == "|" {
            let indent = line.len() - line.trim_start().len();
            let mut block = String::new();
            while let Some(next) = lines.peek() {
                if !next.trim().is_empty() && next.len() - next.trim_start().len() <= indent {
                    break;
                }
                block.push_str(next.trim());
                block.push(' ');
                lines.next();
            }
            exprs.push(block);
        } else {
            exprs.push(expr.trim().to_string());
        }
    }
    exprs
}

fn promtool(args: &[&str]) -> Option<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus");
    match Command::new("promtool")
        .args(args)
        .current_dir(&dir)
        .output()
    {
        Ok(out) => {
            let report = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "promtool {args:?}: {report}");
            Some(report)
        }
        Err(_) if std::env::var_os("TIERHOST_REQUIRE_PROMTOOL").is_none() => {
            eprintln!(
                "promtool not installed: skipping (scripts/test.sh installs and requires it)"
            );
            None
        }
        Err(e) => panic!("promtool is required (TIERHOST_REQUIRE_PROMTOOL is set): {e}"),
    }
}

#[test]
fn the_prometheus_rules_pass_promtool_and_their_unit_tests() {
    if let Some(report) = promtool(&["check", "rules", "rules.yml"]) {
        assert!(report.contains("SUCCESS"), "{report}");
    }
    if let Some(report) = promtool(&["test", "rules", "rules.test.yml"]) {
        assert!(report.contains("SUCCESS"), "{report}");
    }
}

#[test]
fn the_rules_query_only_what_the_host_exports() {
    let (exported, labels, recorded) = (exported(), exported_labels(), recorded());
    assert!(exported.len() >= 20, "metrics.rs read: {exported:?}");
    let exprs = rule_exprs();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let mut unknown = Vec::new();
    for expr in &exprs {
        for name in metrics_in(expr) {
            if !known(&name, &exported, &recorded) {
                unknown.push(format!("metric {name} in `{expr}`"));
            }
        }
        for label in grouping_labels(expr) {
            if !labels.contains(&label) && !OUTSIDE_LABELS.contains(&label.as_str()) {
                unknown.push(format!("label {label} in `{expr}`"));
            }
        }
    }
    assert!(unknown.is_empty(), "not exported by the host: {unknown:#?}");
}

#[test]
fn the_dashboard_queries_every_exported_metric_and_nothing_else() {
    let (exported, labels, recorded) = (exported(), exported_labels(), recorded());
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("valid JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut queried = BTreeSet::new();
    let mut unknown = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("a title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("an id")),
            "duplicate id: {title}"
        );
        assert!(
            panel["gridPos"]["w"].as_u64().is_some(),
            "{title}: no gridPos"
        );
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            assert!(
                expr.contains("job=~\"$job\""),
                "{title}: `{expr}` ignores the job variable"
            );
            for name in metrics_in(expr) {
                if known(&name, &exported, &recorded) {
                    let base = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| name.strip_suffix(s).filter(|b| exported.contains(*b)))
                        .unwrap_or(&name);
                    queried.insert(base.to_string());
                } else {
                    unknown.push(format!("{title}: metric {name}"));
                }
            }
            for label in grouping_labels(expr) {
                if !labels.contains(&label) && !OUTSIDE_LABELS.contains(&label.as_str()) {
                    unknown.push(format!("{title}: label {label}"));
                }
            }
        }
    }
    assert!(unknown.is_empty(), "not exported by the host: {unknown:#?}");
    let unshown: Vec<&String> = exported.iter().filter(|m| !queried.contains(*m)).collect();
    assert!(unshown.is_empty(), "exported but on no panel: {unshown:?}");
    // What the fleet's operators asked for, by name.
    for needed in [
        "tierhost_requests_total",
        "tierhost:tier_fallback_ratio:rate5m",
        "tierhost_fallbacks_total",
        "tierhost_tier_call_duration_seconds",
        "tierhost_tier_fuel_used",
        "tierhost_breaker_state",
        "tierhost_shadow_agreement_ratio",
        "tierhost_escalations_total",
    ] {
        assert!(queried.contains(needed), "no panel shows {needed}");
    }
}

/// The Kubernetes version the manifests are validated against (strict: unknown fields fail).
const KUBERNETES_VERSION: &str = "1.33.0";

/// `deploy/k8s`: every manifest validates against the Kubernetes schemas (kubernetes-validate,
/// strict, offline), and the cascade in the ConfigMap is one the host accepts: it parses, its
/// rules tier is an `oci://` reference pinned by digest, and it is stored under the pod's
/// volume, which the Deployment mounts where the config says.
#[test]
fn the_kubernetes_manifests_validate_and_carry_a_cascade_the_host_accepts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let k8s = root.join("deploy/k8s");
    let configmap = std::fs::read_to_string(k8s.join("configmap.yaml")).unwrap();
    // The block scalar under `cascade.toml: |`, its 4-space indent removed.
    let toml: String = configmap
        .split_once("cascade.toml: |\n")
        .expect("the ConfigMap holds cascade.toml")
        .1
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let config = tierhost::Config::parse(
        &toml,
        Path::new("configmap.yaml:cascade.toml"),
        Path::new("/etc/tierhost"),
    )
    .unwrap_or_else(|e| panic!("the ConfigMap's cascade does not parse: {e}"));
    let oci: Vec<_> = config
        .tiers
        .iter()
        .filter_map(|t| match &t.plugin {
            tierhost::PluginSource::Oci { reference, local } => Some((reference, local)),
            _ => None,
        })
        .collect();
    assert_eq!(oci.len(), 1, "the rules tier comes from the registry");
    assert!(oci[0].0.contains("@sha256:"), "pinned by digest");
    assert!(
        oci[0].1.starts_with("/var/lib/tierhost/oci/sha256/"),
        "{:?}",
        oci[0].1
    );
    let deployment = std::fs::read_to_string(k8s.join("deployment.yaml")).unwrap();
    for needle in [
        "mountPath: /var/lib/tierhost",
        "mountPath: /etc/tierhost",
        "path: /readyz",
        "path: /healthz",
        "args: [\"pull\", \"--config\", \"/etc/tierhost/cascade.toml\"]",
        "args: [\"serve\", \"--config\", \"/etc/tierhost/cascade.toml\"]",
        "containerPort: 8080",
        "prometheus.io/port: \"8080\"",
    ] {
        assert!(
            deployment.contains(needle),
            "deployment.yaml lacks {needle}"
        );
    }
    assert!(toml.contains("listen = \"0.0.0.0:8080\""));

    // Schema validation, in the project's pinned venv (created on first use).
    let venv = Command::new(root.join("scripts/python-venv.sh"))
        .args(["k8s-venv", k8s.join("requirements.txt").to_str().unwrap()])
        .output()
        .expect("run scripts/python-venv.sh");
    assert!(
        venv.status.success(),
        "cannot create the k8s venv: {}",
        String::from_utf8_lossy(&venv.stderr)
    );
    let python = String::from_utf8_lossy(&venv.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let validate = Path::new(&python).with_file_name("kubernetes-validate");
    let manifests: Vec<String> = ["configmap", "deployment", "service", "poddisruptionbudget"]
        .iter()
        .map(|m| k8s.join(format!("{m}.yaml")).display().to_string())
        .collect();
    let out = Command::new(&validate)
        .args(["-k", KUBERNETES_VERSION, "--strict"])
        .args(&manifests)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && !text.contains("ERROR"), "{text}");
    assert_eq!(text.matches(" passed for resource ").count(), 4, "{text}");
}
