//! The Grafana dashboard and the alert rules stay in step with the proxy: the dashboard
//! imports, and every metric the dashboard and the alerts query is one the proxy
//! exports.
//!
//! Needs `python3` with PyYAML (python3-yaml).

mod kit;
mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use kit::{alert_rules, read, BIN};
use support::Killed;

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
    "canary_proxy_parked_connections",
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

fn dashboard() -> Value {
    serde_json::from_str(&read("config/grafana-dashboard.json")).unwrap()
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

/// PromQL aggregation operators: followed by `by (…)` or `(`, never metrics.
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
/// Keywords followed by a list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Binary operators, modifiers and literals.
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];

/// The metric names a PromQL expression selects: identifiers other than functions and
/// aggregations, keywords, grouping labels (`by (…)`), and whatever is inside label
/// matchers (`{…}`), ranges (`[…]`) and strings. Grafana's `$variables` are skipped.
fn metric_names(expr: &str) -> Vec<String> {
    let stripped = outside_matchers(expr);
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

/// `expr` with each string replaced by a space and whatever is inside label matchers
/// (`{…}`) and ranges (`[…]`) left out.
fn outside_matchers(expr: &str) -> Vec<char> {
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
    stripped
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

/// A fresh `canary-proxy run` process's `GET /metrics` on its admin listener: the
/// raw HTTP/1.1 response (status line, headers, body). The process is killed after.
fn scrape_fresh_proxy() -> String {
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
    scraped
}

/// Every metric the dashboard and the alerts query is on a live proxy's `/metrics`
/// (all series are registered up front, so a fresh process shows them all).
#[test]
fn dashboard_and_alerts_query_metrics_the_proxy_exports() {
    let scraped = scrape_fresh_proxy();
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
