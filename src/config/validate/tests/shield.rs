//! `[route.shield]` and the upstream keys it works with: defaults, and one test per
//! rejection.

use super::*;

#[test]
fn shield_defaults() {
    let config = valid(&format!("{ROUTE}[route.shield]\n"));
    let shield = config.routes[0].shield.clone().expect("shield");
    assert_eq!(
        shield.statuses,
        [502, 503, 504].map(|c| StatusMatch::Exact(http::StatusCode::from_u16(c).unwrap()))
    );
    assert_eq!(shield.methods.len(), 6);
    assert!(shield.methods.contains(&http::Method::PUT));
    assert!(!shield.methods.contains(&http::Method::POST));
    assert_eq!(shield.max_body_bytes, 65536);
    assert_eq!(shield.budget_ratio, 0.2);
    assert_eq!(shield.min_retries_per_second, 10);
    assert_eq!(shield.per_try_timeout, None);
    assert!(valid(ROUTE).routes[0].shield.is_none());
    let stable = &config.routes[0].stable;
    assert_eq!(stable.idle_timeout, Duration::from_secs(4));
    assert_eq!(
        (stable.max_fails, stable.fail_timeout),
        (3, Duration::from_secs(10))
    );
}

#[test]
fn shield_keys_are_read() {
    let config = valid(&format!(
        "{ROUTE}[route.shield]\nstatuses = [\"5xx\", 429]\nmethods = [\"GET\", \"POST\"]\nmax_body_bytes = 0\nbudget_ratio = 1.0\nmin_retries_per_second = 0\nper_try_timeout = \"250ms\"\n"
    ));
    let shield = config.routes[0].shield.clone().expect("shield");
    assert_eq!(shield.statuses.len(), 2);
    assert_eq!(shield.methods, [http::Method::GET, http::Method::POST]);
    assert_eq!(shield.max_body_bytes, 0);
    assert_eq!(shield.budget_ratio, 1.0);
    assert_eq!(shield.min_retries_per_second, 0);
    assert_eq!(shield.per_try_timeout, Some(Duration::from_millis(250)));
}

#[test]
fn rejects_bad_shield_values() {
    let cases = [
        (
            "statuses = [\"6xx\"]",
            "route[0].shield.statuses[0]",
            "invalid error status",
        ),
        (
            "methods = [\"G ET\"]",
            "route[0].shield.methods[0]",
            "invalid method",
        ),
        (
            "methods = [\"CONNECT\"]",
            "route[0].shield.methods[0]",
            "never retried",
        ),
        (
            "max_body_bytes = -1",
            "route[0].shield.max_body_bytes",
            "between 0 and",
        ),
        (
            "max_body_bytes = 999999999",
            "route[0].shield.max_body_bytes",
            "between 0 and",
        ),
        (
            "budget_ratio = 1.5",
            "route[0].shield.budget_ratio",
            "fraction in [0, 1]",
        ),
        (
            "budget_ratio = -0.1",
            "route[0].shield.budget_ratio",
            "fraction in [0, 1]",
        ),
        (
            "min_retries_per_second = -1",
            "route[0].shield.min_retries_per_second",
            "between 0 and 100000",
        ),
        (
            "per_try_timeout = \"0s\"",
            "route[0].shield.per_try_timeout",
            "greater than 0",
        ),
        (
            "per_try_timeout = \"soon\"",
            "route[0].shield.per_try_timeout",
            "invalid duration",
        ),
    ];
    for (line, key, text) in cases {
        rejects(&format!("{ROUTE}[route.shield]\n{line}\n"), key, 7, text);
    }
}

#[test]
fn rejects_unknown_shield_key() {
    let Err(errors) = parse(&format!("{ROUTE}[route.shield]\nretries = 3\n")) else {
        panic!("an unknown key must be an error");
    };
    assert!(
        errors[0].message.contains("unknown field `retries`"),
        "{errors:#?}"
    );
}

#[test]
fn rejects_bad_upstream_health_and_idle_values() {
    let cases = [
        (
            "idle_timeout = \"0s\"",
            "route[0].stable.idle_timeout",
            "greater than 0",
        ),
        (
            "idle_timeout = \"x\"",
            "route[0].stable.idle_timeout",
            "invalid duration",
        ),
        (
            "max_fails = -1",
            "route[0].stable.max_fails",
            "between 0 (never eject) and 1000",
        ),
        (
            "max_fails = 5000",
            "route[0].stable.max_fails",
            "between 0 (never eject) and 1000",
        ),
        (
            "fail_timeout = \"0s\"",
            "route[0].stable.fail_timeout",
            "greater than 0",
        ),
    ];
    for (kv, key, text) in cases {
        let src = ROUTE.replace(
            "stable = { endpoints = [\"127.0.0.1:9001\"] }",
            &format!("stable = {{ endpoints = [\"127.0.0.1:9001\"], {kv} }}"),
        );
        rejects(&src, key, 4, text);
    }
}
