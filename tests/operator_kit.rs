//! The operator kit stays in step with the proxy: the Grafana dashboard and the alert
//! rules use metrics the proxy exports, the rules pass `promtool` and fire when they
//! should, the Kubernetes manifest parses and carries a config `check` accepts, and the
//! Dockerfile and systemd unit start, reload and stop the binary the documented way.
//!
//! Needs `promtool` (Debian: prometheus) and `python3` with PyYAML (python3-yaml).

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use support::Killed;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_canary-proxy");

/// Every metric the dashboard and the alerts may use (besides Prometheus' own `up`).
const KNOWN_METRICS: &[&str] = &[
    "canary_proxy_requests_total",
    "canary_proxy_request_duration_seconds_bucket",
    "canary_proxy_upstream_errors_total",
    "canary_proxy_canary_weight_ratio",
    "canary_proxy_canary_configured_weight_ratio",
    "canary_proxy_rollbacks_total",
    "canary_proxy_canary_state",
    "canary_proxy_config_reloads_total",
    "canary_proxy_config_last_reload_success_timestamp_seconds",
    "canary_proxy_open_connections",
    "canary_proxy_build_info",
    "canary_proxy_responses_total",
    "canary_proxy_shielded_total",
    "canary_proxy_retries_total",
    "canary_proxy_retry_budget_exhausted_total",
    "canary_proxy_would_rollback_total",
    "canary_proxy_sequential_evidence",
    "canary_proxy_sequential_evidence_bound",
    "canary_proxy_canary_verdict",
];

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read("config/grafana-dashboard.json")).unwrap()
}

/// Runs `cmd`; a missing program is a panic that says which package provides it.
fn run(cmd: &mut Command, package: &str) -> Output {
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{:?} not found: `apt-get install {package}`",
            cmd.get_program()
        ),
        Err(e) => panic!("{:?}: {e}", cmd.get_program()),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn promtool(args: &[&str]) -> Output {
    run(Command::new("promtool").args(args), "prometheus")
}

/// A Python with PyYAML: `python3` from PATH, else Debian's (python3-yaml), which a
/// PATH that leads to another Python (pyenv, a venv) would not see.
fn python() -> &'static str {
    static PYTHON: OnceLock<&'static str> = OnceLock::new();
    PYTHON.get_or_init(|| {
        ["python3", "/usr/bin/python3"]
            .into_iter()
            .find(|python| {
                Command::new(python)
                    .args(["-c", "import yaml"])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .expect("no python3 with PyYAML: `apt-get install python3-yaml`")
    })
}

/// The documents of a YAML file, converted to JSON by PyYAML.
fn yaml(path: &str) -> Vec<Value> {
    const TO_JSON: &str =
        "import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)";
    let out = run(
        Command::new(python()).args(["-c", TO_JSON]).arg(repo(path)),
        "python3-yaml",
    );
    assert!(
        out.status.success(),
        "{path} does not parse as YAML: {}",
        text(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

fn manifest() -> Vec<Value> {
    yaml("deploy/kubernetes.yaml")
}

fn alert_rules() -> Value {
    yaml("config/alerts.yml").remove(0)
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes.yaml"))
}

/// The string values of every `expr` key anywhere in `value`.
fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match v {
                    Value::String(s) if key == "expr" => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// Panels, including those nested in rows.
fn panels(value: &Value, out: &mut Vec<Value>) {
    for panel in value["panels"].as_array().into_iter().flatten() {
        out.push(panel.clone());
        panels(panel, out);
    }
}

/// The metric names a PromQL expression selects: identifiers other than functions and
/// aggregations, keywords, grouping labels (`by (…)`), and whatever is inside label
/// matchers (`{…}`), ranges (`[…]`) and strings. Grafana's `$variables` are skipped.
fn metric_names(expr: &str) -> Vec<String> {
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &[
        "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
    ];

    let mut stripped = Vec::new();
    let mut chars = expr.chars();
    let mut depth = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                while let Some(s) = chars.next() {
                    if s == '\\' && c != '`' {
                        chars.next();
                    } else if s == c {
                        break;
                    }
                }
                stripped.push(' ');
            }
            '{' | '[' => depth += 1,
            '}' | ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => stripped.push(c),
            _ => {}
        }
    }

    let word_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = Vec::new();
    let mut i = 0;
    while i < stripped.len() {
        let c = stripped[i];
        if !(word_char(c) || c == '$') {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < stripped.len() && word_char(stripped[i]) {
            i += 1;
        }
        let word: String = stripped[start..i].iter().collect();
        let next = stripped[i..].iter().find(|c| !c.is_whitespace()).copied();
        if LABEL_LISTS.contains(&word.as_str()) {
            if next == Some('(') {
                while i < stripped.len() && stripped[i] != ')' {
                    i += 1;
                }
            }
            continue;
        }
        let skipped = word.starts_with('$')
            || word.starts_with(|c: char| c.is_ascii_digit())
            || AGGREGATIONS.contains(&word.as_str())
            || KEYWORDS.contains(&word.to_ascii_lowercase().as_str())
            || next == Some('(');
        if !skipped {
            names.push(word);
        }
    }
    names
}

#[test]
fn metric_names_finds_selectors_only() {
    let names = |e: &str| metric_names(e).join(" ");
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (upstream, le) (rate(canary_proxy_request_duration_seconds_bucket{route=~"$route"}[5m])))"#
        ),
        "canary_proxy_request_duration_seconds_bucket"
    );
    assert_eq!(
        names("time() - max by (instance) (a_seconds) offset 5m"),
        "a_seconds"
    );
    assert_eq!(
        names(
            r#"(sum(rate(e{x="a}b"}[5m])) by (job) / sum by (job)(rate(r[$__rate_interval]))) > 0.05 and on (job) w > 0"#
        ),
        "e r w"
    );
    assert_eq!(names(r#"up{job="canary-proxy"} == 0"#), "up");
}

/// (a) The dashboard imports: JSON, schema ≥ 36, a data source variable or input, the
/// route variable, panels that each query something, and only known metrics.
#[test]
fn grafana_dashboard_is_importable_and_uses_known_metrics() {
    let dash = dashboard();
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 36);
    assert!(!dash["title"].as_str().unwrap().is_empty());

    let variables = dash["templating"]["list"].as_array().unwrap();
    let has_datasource = variables
        .iter()
        .any(|v| v["type"] == "datasource" && v["query"] == "prometheus")
        || dash["__inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|i| i["pluginId"] == "prometheus");
    assert!(
        has_datasource,
        "no Prometheus data source variable or input"
    );
    let route = variables
        .iter()
        .find(|v| v["name"] == "route")
        .expect("no `route` variable");
    assert!(
        route["query"]
            .to_string()
            .contains("label_values(canary_proxy_requests_total, route)"),
        "{route}"
    );

    let mut all = Vec::new();
    panels(&dash, &mut all);
    assert!(all.len() >= 8, "only {} panels", all.len());
    let mut ids = BTreeSet::new();
    for panel in all.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "{title}: id reused"
        );
        assert!(panel["gridPos"].is_object(), "{title}: no gridPos");
        let mut queries = Vec::new();
        exprs(&panel["targets"], &mut queries);
        assert!(!queries.is_empty(), "{title}: no query");
    }
    for kind in ["timeseries", "stat"] {
        assert!(all.iter().any(|p| p["type"] == kind), "no {kind} panel");
    }

    let mut queries = Vec::new();
    exprs(&dash, &mut queries);
    let mut used = BTreeSet::new();
    for expr in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no metric in {expr}");
        for name in names {
            assert!(
                name == "up" || name.starts_with("canary_proxy_"),
                "{name} is not a canary-proxy metric: {expr}"
            );
            assert!(
                name == "up" || KNOWN_METRICS.contains(&name.as_str()),
                "unknown metric {name} in {expr}"
            );
            used.insert(name);
        }
    }
    for name in [
        "canary_proxy_requests_total",
        "canary_proxy_upstream_errors_total",
        "canary_proxy_request_duration_seconds_bucket",
        "canary_proxy_canary_weight_ratio",
        "canary_proxy_canary_configured_weight_ratio",
        "canary_proxy_canary_state",
        "canary_proxy_rollbacks_total",
        "canary_proxy_config_reloads_total",
        "canary_proxy_open_connections",
        "canary_proxy_responses_total",
        "canary_proxy_shielded_total",
        "canary_proxy_would_rollback_total",
        "canary_proxy_sequential_evidence",
    ] {
        assert!(used.contains(name), "no panel shows {name}");
    }
}

/// Every metric the dashboard and the alerts query is on a live proxy's `/metrics`
/// (all series are registered up front, so a fresh process shows them all).
#[test]
fn dashboard_and_alerts_query_metrics_the_proxy_exports() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"0s\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [[route]]\nname = \"app\"\n\
         stable = { endpoints = [\"127.0.0.1:9\"] }\n\
         canary = { endpoints = [\"127.0.0.1:9\"] }\ncanary_weight = 10\n",
    )
    .unwrap();
    let mut proxy = Killed(
        Command::new(BIN)
            .args(["run", "-c", config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = proxy.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[proxy] {line}");
            if line.contains("admin listening") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the proxy did not log its admin address");
    let scraped = {
        let admin: SocketAddr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .unwrap()
            .parse()
            .unwrap();
        let mut stream = TcpStream::connect(admin).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).unwrap();
        body
    };
    drop(proxy);
    assert!(scraped.starts_with("HTTP/1.1 200"), "{scraped}");
    let exported: BTreeSet<&str> = scraped
        .lines()
        .filter(|l| l.starts_with("canary_proxy_"))
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .collect();

    for name in KNOWN_METRICS {
        assert!(exported.contains(name), "{name} not exported: {exported:?}");
    }
    let mut queries = Vec::new();
    exprs(&dashboard(), &mut queries);
    exprs(&alert_rules(), &mut queries);
    for name in queries.iter().flat_map(|q| metric_names(q)) {
        assert!(
            name == "up" || exported.contains(name.as_str()),
            "{name} is queried but not exported"
        );
    }
}

/// (b) The rules pass `promtool check rules`.
#[test]
fn alert_rules_pass_promtool_check() {
    let path = repo("config/alerts.yml");
    let out = promtool(&["check", "rules", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let alerts = read("config/alerts.yml");
    for name in [
        "CanaryRolledBack",
        "CanaryStuckRolledBack",
        "CanaryErrorRateHigh",
        "ConfigReloadFailing",
        "ProxyDown",
    ] {
        assert!(alerts.contains(&format!("alert: {name}\n")), "no {name}");
    }
    assert!(alerts.contains("/api/v1/routes/{{ $labels.route }}/resume"));
}

/// The rules fire on the series they are meant for, and only those (`promtool test
/// rules` on synthetic series). promtool compares annotations too, so the rules are
/// tested from a copy without them (JSON is YAML to promtool).
#[test]
fn alert_rules_fire_when_they_should() {
    let mut rules = alert_rules();
    for group in rules["groups"].as_array_mut().unwrap() {
        for rule in group["rules"].as_array_mut().unwrap() {
            rule.as_object_mut().unwrap().remove("annotations");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let rules_file = dir.path().join("rules.json");
    std::fs::write(&rules_file, rules.to_string()).unwrap();

    let p = r#"job="canary-proxy",instance="10.0.0.1:9901""#;
    let tests = format!(
        r#"rule_files: ["{rules}"]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'canary_proxy_rollbacks_total{{{p},route="app",reason="error_rate"}}'
        values: '0 0 0 1x30'
      - series: 'canary_proxy_rollbacks_total{{{p},route="app",reason="manual"}}'
        values: '0x33'
      - series: 'canary_proxy_config_reloads_total{{{p},result="failure"}}'
        values: '0 0 0 1x30'
      - series: 'canary_proxy_config_reloads_total{{{p},result="success"}}'
        values: '0 1 2 3x30'
      - series: 'up{{{p}}}'
        values: '1 1 1 0x30'
    alert_rule_test:
      - eval_time: 2m
        alertname: CanaryRolledBack
        exp_alerts: []
      - eval_time: 5m
        alertname: CanaryRolledBack
        exp_alerts:
          - exp_labels: {{severity: warning, job: canary-proxy, instance: "10.0.0.1:9901", route: app, reason: error_rate}}
      - eval_time: 30m
        alertname: CanaryRolledBack
        exp_alerts: []
      - eval_time: 5m
        alertname: ConfigReloadFailing
        exp_alerts:
          - exp_labels: {{severity: warning, job: canary-proxy, instance: "10.0.0.1:9901", result: failure}}
      - eval_time: 4m
        alertname: ProxyDown
        exp_alerts: []
      - eval_time: 6m
        alertname: ProxyDown
        exp_alerts:
          - exp_labels: {{severity: critical, job: canary-proxy, instance: "10.0.0.1:9901"}}
  - interval: 1m
    input_series:
      - series: 'canary_proxy_canary_state{{{p},route="app",state="rolled_back"}}'
        values: '0 0 1x90'
      - series: 'canary_proxy_canary_state{{{p},route="app",state="steady"}}'
        values: '1 1 0x90'
    alert_rule_test:
      - eval_time: 50m
        alertname: CanaryStuckRolledBack
        exp_alerts: []
      - eval_time: 80m
        alertname: CanaryStuckRolledBack
        exp_alerts:
          - exp_labels: {{severity: info, job: canary-proxy, instance: "10.0.0.1:9901", route: app, state: rolled_back}}
  - interval: 1m
    input_series:
      # Route "bad": 10 % of canary requests fail and the canary still has traffic.
      - series: 'canary_proxy_requests_total{{{p},route="bad",upstream="canary",class="2xx"}}'
        values: '0+90x20'
      - series: 'canary_proxy_requests_total{{{p},route="bad",upstream="canary",class="5xx"}}'
        values: '0+10x20'
      - series: 'canary_proxy_upstream_errors_total{{{p},route="bad",upstream="canary",kind="status"}}'
        values: '0+10x20'
      - series: 'canary_proxy_canary_weight_ratio{{{p},route="bad"}}'
        values: '0.1x20'
      # Route "latched": as bad, but already rolled back (weight 0).
      - series: 'canary_proxy_requests_total{{{p},route="latched",upstream="canary",class="5xx"}}'
        values: '0+10x20'
      - series: 'canary_proxy_upstream_errors_total{{{p},route="latched",upstream="canary",kind="status"}}'
        values: '0+10x20'
      - series: 'canary_proxy_canary_weight_ratio{{{p},route="latched"}}'
        values: '0x20'
      # Route "fine": 1 % errors.
      - series: 'canary_proxy_requests_total{{{p},route="fine",upstream="canary",class="2xx"}}'
        values: '0+99x20'
      - series: 'canary_proxy_upstream_errors_total{{{p},route="fine",upstream="canary",kind="status"}}'
        values: '0+1x20'
      - series: 'canary_proxy_canary_weight_ratio{{{p},route="fine"}}'
        values: '0.1x20'
    alert_rule_test:
      - eval_time: 15m
        alertname: CanaryErrorRateHigh
        exp_alerts:
          - exp_labels: {{severity: warning, job: canary-proxy, route: bad}}
"#,
        rules = rules_file.display()
    );
    let test_file = dir.path().join("alerts_test.yml");
    std::fs::write(&test_file, tests).unwrap();
    let out = promtool(&["test", "rules", test_file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// (c) The manifest parses and has the four objects; the sidecar is wired the way the
/// config and the README expect.
#[test]
fn kubernetes_manifest_parses_and_wires_the_sidecar() {
    let docs = manifest();
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in ["ConfigMap", "Secret", "Deployment", "Service"] {
        assert!(kinds.contains(kind), "no {kind}: {kinds:?}");
    }
    let config: toml::Table = find(&docs, "ConfigMap")["data"]["proxy.toml"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let port = |listen: &toml::Value| -> u64 {
        listen
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let proxy_port = port(&config["server"]["listen"]);
    let admin_port = port(&config["admin"]["listen"]);

    let deployment = find(&docs, "Deployment");
    let pod = &deployment["spec"]["template"];
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/port"],
        admin_port.to_string()
    );
    let spec = &pod["spec"];
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    let sidecar = spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "canary-proxy")
        .expect("no canary-proxy container");
    assert_eq!(sidecar["image"], "canary-proxy:latest");
    assert_eq!(
        sidecar["args"],
        serde_json::json!(["run", "-c", "/etc/canary-proxy/proxy.toml"])
    );
    assert_eq!(sidecar["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(sidecar["resources"]["requests"].is_object());
    assert!(sidecar["resources"]["limits"].is_object());
    assert!(sidecar["lifecycle"]["preStop"].is_object(), "no preStop");

    // Named ports resolve to the config's ports.
    let container_port = |name: &Value| -> u64 {
        if let Some(n) = name.as_u64() {
            return n;
        }
        sidecar["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| &p["name"] == name)
            .unwrap_or_else(|| panic!("no port {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &sidecar[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(container_port(&get["port"]), admin_port, "{probe}");
    }
    let service = find(&docs, "Service");
    let service_port = &service["spec"]["ports"][0];
    assert_eq!(service_port["port"], 8080);
    assert_eq!(container_port(&service_port["targetPort"]), proxy_port);

    // Mounts: the ConfigMap as a directory (never subPath, or reloads are missed), the
    // Secret where token_file points, a writable emptyDir at the state dir.
    let volume = |mount_path: &str| -> &Value {
        let mount = sidecar["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == mount_path)
            .unwrap_or_else(|| panic!("nothing mounted at {mount_path}"));
        assert!(mount["subPath"].is_null(), "{mount_path}: subPath");
        spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap()
    };
    assert_eq!(
        volume("/etc/canary-proxy")["configMap"]["name"],
        "canary-proxy"
    );
    let token_file = config["admin"]["token_file"].as_str().unwrap();
    let token_dir = token_file.rsplit_once('/').unwrap().0;
    let secret = &volume(token_dir)["secret"];
    assert_eq!(
        secret["secretName"],
        find(&docs, "Secret")["metadata"]["name"]
    );
    let key = token_file.rsplit('/').next().unwrap();
    assert!(find(&docs, "Secret")["stringData"][key].is_string());
    assert!(volume(config["state"]["dir"].as_str().unwrap())["emptyDir"].is_object());

    // Grace period > preStop sleep + drain.
    let drain = humantime::parse_duration(config["server"]["drain_timeout"].as_str().unwrap())
        .unwrap()
        .as_secs();
    let pre_stop = sidecar["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0);
    let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(grace > pre_stop + drain, "grace {grace}s");
}

/// (d) The proxy.toml in the ConfigMap passes `canary-proxy check`, with token_file
/// pointed at a token in a temp dir (the validator reads it).
#[test]
fn kubernetes_config_passes_check() {
    let docs = manifest();
    let toml = find(&docs, "ConfigMap")["data"]["proxy.toml"]
        .as_str()
        .unwrap()
        .to_string();
    const TOKEN_FILE: &str = "/etc/canary-proxy-secrets/admin-token";
    assert!(
        toml.contains(TOKEN_FILE),
        "token_file moved: update this test"
    );
    for expected in [
        r#"listen = "0.0.0.0:8080""#,
        r#"listen = "0.0.0.0:9901""#,
        r#"dir = "/var/lib/canary-proxy""#,
        "127.0.0.1:9001",
        "127.0.0.1:9002",
    ] {
        assert!(toml.contains(expected), "no {expected}");
    }
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin-token");
    std::fs::write(&token, "test-token\n").unwrap();
    let config = dir.path().join("proxy.toml");
    // `check` probes the state dir (creates it): point it into the tempdir.
    let state = dir.path().join("state");
    let toml = toml
        .replace(TOKEN_FILE, token.to_str().unwrap())
        .replace("/var/lib/canary-proxy", state.to_str().unwrap());
    std::fs::write(&config, toml).unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("route"), "{}", text(&out.stdout));
}

/// (e) The unit starts, reloads and stops the binary the documented way.
#[test]
fn systemd_unit_reloads_with_hup_and_drains_on_sigterm() {
    let unit = read("deploy/canary-proxy.service");
    let value = |key: &str| -> String {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}="))
            .trim()
            .to_string()
    };
    assert_eq!(
        value("ExecStart"),
        "/usr/local/bin/canary-proxy run -c /etc/canary-proxy/proxy.toml"
    );
    let reload = value("ExecReload");
    assert!(
        reload.contains("-HUP") && reload.contains("$MAINPID"),
        "{reload}"
    );
    assert_eq!(value("KillSignal"), "SIGTERM");
    assert_eq!(value("Type"), "exec");
    // Above the default drain_timeout (15s), so a drain is not cut short.
    let stop = humantime::parse_duration(&value("TimeoutStopSec")).unwrap();
    assert!(stop > Duration::from_secs(15), "{stop:?}");
    for line in [
        "DynamicUser=yes",
        "StateDirectory=canary-proxy",
        "ConfigurationDirectory=canary-proxy",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(unit.lines().any(|l| l == line), "no {line}");
    }
}

#[test]
fn dockerfile_runs_the_release_binary_as_non_root() {
    let dockerfile = read("deploy/Dockerfile");
    for line in [
        "FROM rust:1-bookworm AS build",
        "USER 65532:65532",
        "EXPOSE 8080 9901",
        r#"ENTRYPOINT ["canary-proxy"]"#,
        r#"CMD ["run", "-c", "/etc/canary-proxy/canary-proxy.toml"]"#,
        "COPY deploy/container.toml /etc/canary-proxy/canary-proxy.toml",
    ] {
        assert!(dockerfile.lines().any(|l| l == line), "no {line}");
    }
    // The config the image runs by default is valid, listens outside the container,
    // and keeps its state outside the (read-only) config mount.
    let config = canary_proxy::config::parse_str(
        &read("deploy/container.toml"),
        &repo("deploy/container.toml"),
    )
    .unwrap_or_else(|errors| panic!("deploy/container.toml: {errors:#?}"));
    assert!(config.server.listen.ip().is_unspecified());
    assert!(config.admin.as_ref().unwrap().listen.ip().is_unspecified());
    let state = &config.state.as_ref().unwrap().dir;
    assert!(
        !state.starts_with("/etc/canary-proxy"),
        "{}",
        state.display()
    );
    assert!(dockerfile.contains("cargo build --release --locked"));
    assert!(dockerfile.contains("/usr/local/bin/canary-proxy"));
}
