//! Rejections inside `[[route]]`, `[route.budget]` and `[route.rollout]`.

use super::*;

// --- [[route]] ---

#[test]
fn rejects_no_routes() {
    rejects(
        "[server]\nlisten = \"127.0.0.1:1\"\n",
        "route",
        1,
        "at least one [[route]]",
    );
    rejects("\nroute = []\n", "route", 2, "at least one [[route]]");
}

#[test]
fn rejects_duplicate_route_name() {
    let error = rejects(
        &format!(
            "{ROUTE}{}",
            ROUTE.replace("[[route]]", "[[route]]\npath_prefix = \"/b\"")
        ),
        "route[1].name",
        9,
        "first defined at line 3",
    );
    assert_eq!(error.column, 8);
}

#[test]
fn rejects_bad_route_name() {
    rejects(
        &ROUTE.replace("\"app\"", "\"a b\""),
        "route[0].name",
        3,
        "invalid route name",
    );
    rejects(
        &ROUTE.replace("\"app\"", "\"\""),
        "route[0].name",
        3,
        "invalid route name",
    );
}

#[test]
fn rejects_missing_route_name() {
    rejects(
        &ROUTE.replace("name = \"app\"", ""),
        "route[0].name",
        2,
        "missing required key `name`",
    );
}

#[test]
fn rejects_bad_host() {
    rejects(
        &route_with("host = \"http://a.example\""),
        "route[0].host",
        6,
        "without a scheme",
    );
    rejects(
        &route_with("host = \"a.example/x\""),
        "route[0].host",
        6,
        "without a path",
    );
    rejects(
        &route_with("host = \"a_b..example\""),
        "route[0].host",
        6,
        "not a valid host name",
    );
}

#[test]
fn rejects_bad_path_prefix() {
    rejects(
        &route_with("path_prefix = \"api\""),
        "route[0].path_prefix",
        6,
        "must start with '/'",
    );
    rejects(
        &route_with("path_prefix = \"/a?b\""),
        "route[0].path_prefix",
        6,
        "plain path",
    );
}

#[test]
fn rejects_missing_upstream_tables() {
    let src = "[[route]]\nname = \"a\"\ncanary = { endpoints = [\"127.0.0.1:1\"] }\n";
    rejects(src, "route[0].stable", 1, "missing required table `stable`");
    let src = "[[route]]\nname = \"a\"\nstable = { endpoints = [\"127.0.0.1:1\"] }\n";
    rejects(src, "route[0].canary", 1, "missing required table `canary`");
}

#[test]
fn rejects_route_without_endpoints() {
    rejects(
        &ROUTE.replace("[\"127.0.0.1:9001\"]", "[]"),
        "route[0].stable.endpoints",
        4,
        "at least one endpoint",
    );
    rejects(
        &ROUTE.replace("endpoints = [\"127.0.0.1:9002\"]", "protocol = \"h2\""),
        "route[0].canary.endpoints",
        5,
        "missing required key `endpoints`",
    );
}

#[test]
fn rejects_bad_endpoints() {
    let cases = [
        ("127.0.0.1", "port is required"),
        ("http://127.0.0.1", "port is required"),
        ("127.0.0.1:0", "between 1 and 65535"),
        ("ftp://a:21", "unsupported scheme"),
        ("http://a:80/path", "path or query"),
        ("a:80?q", "path or query"),
        ("user@a:80", "user info"),
        ("a b:80", "not a valid endpoint"),
        ("a:99999", "between 1 and 65535"),
        ("a:", "between 1 and 65535"),
        ("[::1]", "port is required"),
    ];
    for (endpoint, text) in cases {
        let src = ROUTE.replace("127.0.0.1:9001", endpoint);
        rejects(&src, "route[0].stable.endpoints[0]", 4, text);
    }
}

#[test]
fn rejects_duplicate_endpoint() {
    let src = ROUTE.replace(
        "[\"127.0.0.1:9002\"]",
        "[\"127.0.0.1:9002\", \"http://127.0.0.1:9002\"]",
    );
    rejects(
        &src,
        "route[0].canary.endpoints[1]",
        5,
        "same as route[0].canary.endpoints[0]",
    );
}

#[test]
fn rejects_bad_protocol() {
    let src = ROUTE.replace(
        "[\"127.0.0.1:9002\"]",
        "[\"127.0.0.1:9002\"], protocol = \"h3\"",
    );
    rejects(&src, "route[0].canary.protocol", 5, "unknown protocol");
}

#[test]
fn rejects_bad_weight() {
    for weight in ["100.01", "-1", "12.345", "nan", "inf"] {
        let src = route_with(&format!("canary_weight = {weight}"));
        rejects(
            &src,
            "route[0].canary_weight",
            6,
            "must be a percentage between 0 and 100 with at most two decimals",
        );
    }
}

#[test]
fn rejects_bad_sticky() {
    rejects(
        &route_with("sticky = []"),
        "route[0].sticky",
        6,
        "at least one sticky source",
    );
    for source in [
        "query:x",
        "header:",
        "header:bad header",
        "cookie:",
        "cookie:a;b",
        "client-ip",
    ] {
        let src = route_with(&format!("sticky = [\"client_ip\", \"{source}\"]"));
        rejects(&src, "route[0].sticky[1]", 6, "invalid sticky source");
    }
}

#[test]
fn rejects_bad_forwarded_for_hops() {
    for source in [
        "forwarded_for:0",
        "forwarded_for:x",
        "forwarded_for:",
        "forwarded_for:-1",
        "forwarded_for:256",
        "forwarded_for:1.5",
    ] {
        let src = route_with(&format!("sticky = [\"{source}\", \"client_ip\"]"));
        let error = rejects(&src, "route[0].sticky[0]", 6, "invalid sticky source");
        assert!(error.message.contains("trusted proxies"), "{error}");
    }
}

#[test]
fn forwarded_for_takes_a_hop_count() {
    let config = valid(&route_with(
        "sticky = [\"header:x-user-id\", \"forwarded_for:1\", \"forwarded_for:2\"]",
    ));
    let hops = |n| StickySource::ForwardedFor(std::num::NonZeroU8::new(n).unwrap());
    assert_eq!(
        config.routes[0].sticky,
        [
            StickySource::Header(HeaderName::from_static("x-user-id")),
            hops(1),
            hops(2)
        ]
    );
}

#[test]
fn rejects_bad_override_header_salt_cohort_version() {
    rejects(
        &route_with("override_header = \"x canary\""),
        "route[0].override_header",
        6,
        "header name",
    );
    rejects(
        &route_with("salt = \"\""),
        "route[0].salt",
        6,
        "must not be empty",
    );
    rejects(
        &route_with("cohort = [\"a\", \"\"]"),
        "route[0].cohort[1]",
        6,
        "must not be empty",
    );
    let src = ROUTE.replace(
        "[\"127.0.0.1:9002\"]",
        "[\"127.0.0.1:9002\"], version = \"\"",
    );
    rejects(&src, "route[0].canary.version", 5, "must not be empty");
}

// --- [route.budget], [route.rollout] ---

#[test]
fn rejects_bad_budget() {
    let cases = [
        (
            "window = \"0s\"",
            "route[0].budget.window",
            "greater than 0",
        ),
        (
            "window = \"soon\"",
            "route[0].budget.window",
            "invalid duration",
        ),
        (
            "min_requests = 0",
            "route[0].budget.min_requests",
            "between 1 and",
        ),
        (
            "max_error_rate = 0",
            "route[0].budget.max_error_rate",
            "(0, 1]",
        ),
        (
            "max_error_rate = 1.5",
            "route[0].budget.max_error_rate",
            "(0, 1]",
        ),
        (
            "max_error_rate_vs_stable = 1.0",
            "route[0].budget.max_error_rate_vs_stable",
            "greater than 1.0",
        ),
        (
            "max_error_rate_vs_stable = inf",
            "route[0].budget.max_error_rate_vs_stable",
            "finite",
        ),
        (
            "max_p99_latency = \"0ms\"",
            "route[0].budget.max_p99_latency",
            "greater than 0",
        ),
        (
            "error_statuses = []",
            "route[0].budget.error_statuses",
            "at least one status",
        ),
    ];
    for (line, key, text) in cases {
        rejects(
            &route_with(&format!("[route.budget]\n{line}")),
            key,
            7,
            text,
        );
    }
}

#[test]
fn rejects_bad_sequential_parameters() {
    let cases = [
        (
            "mode = \"bayesian\"",
            "route[0].budget.mode",
            "unknown mode",
        ),
        (
            "tolerance = 0.5",
            "route[0].budget.tolerance",
            "at least 1.0",
        ),
        ("margin = 0.9", "route[0].budget.margin", "[0, 0.5]"),
        ("alpha = 0", "route[0].budget.alpha", "(0, 0.5)"),
        ("alpha = 0.5", "route[0].budget.alpha", "(0, 0.5)"),
        ("beta = -0.1", "route[0].budget.beta", "(0, 0.5)"),
        (
            "latency_slo = \"0s\"",
            "route[0].budget.latency_slo",
            "greater than 0",
        ),
    ];
    for (line, key, text) in cases {
        rejects(
            &route_with(&format!("[route.budget]\n{line}")),
            key,
            7,
            text,
        );
    }
    // No room between healthy and failing.
    rejects(
        &route_with("[route.budget]\ntolerance = 1.0\nmargin = 0"),
        "route[0].budget.tolerance",
        7,
        "leaves no room",
    );
}

#[test]
fn rejects_sequential_keys_in_threshold_mode() {
    for (line, key) in [
        ("tolerance = 3.0", "route[0].budget.tolerance"),
        ("alpha = 0.01", "route[0].budget.alpha"),
        ("latency_slo = \"200ms\"", "route[0].budget.latency_slo"),
    ] {
        rejects(
            &route_with(&format!("[route.budget]\nmode = \"threshold\"\n{line}")),
            key,
            8,
            "only applies with mode = \"sequential\"",
        );
    }
}

#[test]
fn budget_mode_defaults() {
    let config = parse(&route_with("[route.budget]\nmode = \"threshold\"")).unwrap();
    let budget = &config.routes[0].budget;
    assert_eq!(budget.mode, crate::config::BudgetMode::Threshold);
    assert_eq!(budget.max_error_rate, Some(0.05));
    let config = parse(&route_with(
        "[route.budget]\ntolerance = 3\nmargin = 0.02\nalpha = 0.01\nbeta = 0.1\nlatency_slo = \"250ms\"\nenforce = false",
    ))
    .unwrap();
    let budget = &config.routes[0].budget;
    assert_eq!(budget.mode, crate::config::BudgetMode::Sequential);
    assert_eq!(budget.max_error_rate, None);
    assert_eq!(
        budget.sequential,
        crate::config::SequentialConfig {
            tolerance: 3.0,
            margin: 0.02,
            alpha: 0.01,
            beta: 0.1
        }
    );
    assert_eq!(budget.latency_slo, Some(Duration::from_millis(250)));
    assert!(!budget.enforce);
}

#[test]
fn rejects_incomplete_or_unreadable_upstream_tls() {
    let https = |extra: &str| {
        ROUTE.replace(
            "canary = { endpoints = [\"127.0.0.1:9002\"] }",
            &format!("canary = {{ endpoints = [\"https://127.0.0.1:9002\"]{extra} }}"),
        )
    };
    rejects(
        &https(", client_cert = \"/nonexistent/c.pem\""),
        "route[0].canary.client_key",
        5,
        "missing required key `client_key`",
    );
    rejects(
        &https(", ca_file = \"/nonexistent/ca.pem\""),
        "route[0].canary.ca_file",
        5,
        "cannot read /nonexistent/ca.pem",
    );
    // https:// alone is fine: verified against the webpki roots.
    let config = parse(&https("")).unwrap();
    assert!(config.routes[0].canary.tls.is_some());
    assert!(config.routes[0].stable.tls.is_none());
}

#[test]
fn rejects_bad_error_status() {
    for status in ["\"6xx\"", "\"5x\"", "\"99\"", "600", "\"abc\""] {
        let src = route_with(&format!(
            "[route.budget]\nerror_statuses = [\"5xx\", {status}]"
        ));
        rejects(
            &src,
            "route[0].budget.error_statuses[1]",
            7,
            "invalid error status",
        );
    }
}

#[test]
fn rejects_bad_rollout() {
    let cases = [
        (
            "steps = []\nstep_interval = \"1m\"",
            "route[0].rollout.steps",
            7,
            "at least one step",
        ),
        (
            "steps = [0, 100]\nstep_interval = \"1m\"",
            "route[0].rollout.steps[0]",
            7,
            "greater than 0",
        ),
        (
            "steps = [10, 10, 100]\nstep_interval = \"1m\"",
            "route[0].rollout.steps[1]",
            7,
            "strictly increasing",
        ),
        (
            "steps = [10, 50]\nstep_interval = \"1m\"",
            "route[0].rollout.steps[1]",
            7,
            "last step must be 100",
        ),
        (
            "steps = [10, 100.5]\nstep_interval = \"1m\"",
            "route[0].rollout.steps[1]",
            7,
            "percentage",
        ),
        (
            "steps = [100]\nstep_interval = \"0s\"",
            "route[0].rollout.step_interval",
            8,
            "greater than 0",
        ),
        (
            "steps = [100]",
            "route[0].rollout.step_interval",
            6,
            "missing required key",
        ),
        (
            "step_interval = \"1m\"",
            "route[0].rollout.steps",
            6,
            "missing required key",
        ),
    ];
    for (body, key, line, text) in cases {
        rejects(
            &route_with(&format!("[route.rollout]\n{body}")),
            key,
            line,
            text,
        );
    }
}

#[test]
fn reports_every_semantic_error() {
    let src = r#"[server]
listen = "nowhere"
connect_timeout = "0s"
[[route]]
name = "a b"
stable = { endpoints = [] }
canary = { endpoints = ["x:1"], ca_file = "ca.pem" }
canary_weight = 101
"#;
    let errors = parse(src).err().unwrap_or_default();
    let found: Vec<(&str, usize)> = errors.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        found,
        [
            ("server.listen", 2),
            ("server.connect_timeout", 3),
            ("route[0].name", 5),
            ("route[0].stable.endpoints", 6),
            ("route[0].canary.ca_file", 7),
            ("route[0].canary_weight", 8),
        ]
    );
}

#[test]
fn rejects_route_shadowed_by_an_identical_match() {
    let second = ROUTE.replace("\"app\"", "\"other\"");
    rejects(
        &format!("{ROUTE}{second}"),
        "route[1].path_prefix",
        8,
        "would never match",
    );
    let src = format!(
        "{ROUTE}path_prefix = \"/api\"\n{}\npath_prefix = \"/api\"\n",
        second.trim_end()
    );
    rejects(
        &src,
        "route[1].path_prefix",
        12,
        "same host and path_prefix as route `app`",
    );
    valid(&format!(
        "{ROUTE}{}\nhost = \"a.example\"\n",
        second.trim_end()
    ));
}
