//! The alert rules pass `promtool check rules` and fire on the series they are meant
//! for, and only those.
//!
//! Needs `promtool` (Debian: prometheus) and `python3` with PyYAML (python3-yaml).

mod kit;

use std::process::{Command, Output};

use kit::{alert_rules, read, repo, run, text};

fn promtool(args: &[&str]) -> Output {
    run(Command::new("promtool").args(args), "prometheus")
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
