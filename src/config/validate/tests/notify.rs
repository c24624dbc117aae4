//! `[notify]`: defaults, every key, and one test per rejection.

use super::*;

/// `[notify]` (line 1) with `body` from line 2, then a valid route.
fn notify(body: &str) -> String {
    format!("[notify]\n{body}\n{ROUTE}")
}

const HOOK: &str = "webhook = \"http://hooks.internal:8080/canary\"";

#[test]
fn notify_defaults() {
    let config = valid(&notify(HOOK));
    let notify = config.notify.expect("notify");
    assert_eq!(notify.webhook, "http://hooks.internal:8080/canary");
    assert!(notify.tls.is_none() && notify.headers.is_empty());
    assert_eq!((notify.secret, notify.secret_file), (None, None));
    assert_eq!(
        notify.events,
        [
            "rollback",
            "would_rollback",
            "step",
            "promote",
            "pause",
            "resume"
        ]
    );
    assert_eq!(notify.max_attempts, 5);
    assert_eq!(notify.backoff, Duration::from_millis(500));
    assert_eq!(notify.timeout, Duration::from_secs(2));
}

#[test]
fn notify_keys_are_read() {
    let dir = scratch_dir("notify-keys");
    std::fs::write(dir.join("secrets/hook"), "  k3y \n").expect("write secret");
    let src = format!(
        "[notify]\nwebhook = \"https://hooks.example.com/services/T0/B0\"\nheaders = {{ Authorization = \"Bearer x\", \"X-Team\" = \"payments\" }}\nsecret_file = \"secrets/hook\"\nevents = [\"rollback\", \"reload_failed\"]\nmax_attempts = 3\nbackoff = \"50ms\"\ntimeout = \"10s\"\n{ROUTE}"
    );
    let config = parse_str(&src, &dir.join("proxy.toml"));
    let _ = std::fs::remove_dir_all(&dir);
    let notify = config.expect("valid").notify.expect("notify");
    // https with the webpki roots.
    let tls = notify.tls.as_ref().expect("tls");
    assert_eq!(tls.ca_file, None);
    let names: Vec<_> = notify.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["authorization", "x-team"]);
    assert_eq!(notify.headers[0].1, "Bearer x");
    assert!(notify.headers[0].1.is_sensitive());
    assert_eq!(notify.secret.as_deref(), Some("k3y"));
    assert_eq!(notify.secret_file, Some(dir.join("secrets/hook")));
    assert_eq!(notify.events, ["rollback", "reload_failed"]);
    assert_eq!(notify.max_attempts, 3);
    assert_eq!(notify.backoff, Duration::from_millis(50));
    assert_eq!(notify.timeout, Duration::from_secs(10));
    // Neither the secret nor a header value is printed.
    let debug = format!("{notify:?}");
    assert!(
        !debug.contains("k3y") && !debug.contains("Bearer"),
        "{debug}"
    );
}

#[test]
fn notify_ca_file_is_loaded() {
    let dir = scratch_dir("notify-ca");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().expect("key");
    let ca = params.self_signed(&key).expect("ca");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca");
    let src = notify("webhook = \"https://127.0.0.1:8443/hook\"\nca_file = \"ca.pem\"");
    let config = parse_str(&src, &dir.join("proxy.toml"));
    let _ = std::fs::remove_dir_all(&dir);
    let notify = config.expect("valid").notify.expect("notify");
    assert_eq!(notify.tls.expect("tls").ca_file, Some(dir.join("ca.pem")));
}

#[test]
fn rejects_notify_without_webhook() {
    rejects(
        &notify("events = [\"rollback\"]"),
        "notify.webhook",
        1,
        "missing required key `webhook`",
    );
}

#[test]
fn rejects_webhook_that_is_not_a_url() {
    rejects(
        &notify("webhook = \"hooks/x\""),
        "notify.webhook",
        2,
        "not an http:// or https:// URL",
    );
}

#[test]
fn rejects_webhook_with_another_scheme() {
    rejects(
        &notify("webhook = \"ftp://hooks/x\""),
        "notify.webhook",
        2,
        "not an http:// or https:// URL",
    );
}

#[test]
fn rejects_webhook_with_user_info() {
    rejects(
        &notify("webhook = \"https://user:pw@hooks/x\""),
        "notify.webhook",
        2,
        "send credentials with `headers`",
    );
}

#[test]
fn rejects_ca_file_on_an_http_webhook() {
    rejects(
        &notify(&format!("{HOOK}\nca_file = \"ca.pem\"")),
        "notify.ca_file",
        3,
        "only applies to an https:// webhook",
    );
}

#[test]
fn rejects_unreadable_ca_file() {
    rejects(
        &notify("webhook = \"https://hooks/x\"\nca_file = \"/nonexistent/ca.pem\""),
        "notify.ca_file",
        3,
        "/nonexistent/ca.pem",
    );
}

#[test]
fn rejects_bad_header_name() {
    let error = rejects(
        &notify(&format!("{HOOK}\nheaders = {{ \"Bad Header\" = \"x\" }}")),
        "notify.headers.\"Bad Header\"",
        3,
        "not a valid HTTP header name",
    );
    assert_eq!(error.column, 13);
}

#[test]
fn rejects_header_the_notifier_sets() {
    rejects(
        &notify(&format!(
            "{HOOK}\nheaders = {{ \"Content-Type\" = \"text/plain\" }}"
        )),
        "notify.headers.\"Content-Type\"",
        3,
        "set by canary-proxy",
    );
}

#[test]
fn rejects_header_listed_twice() {
    rejects(
        &notify(&format!(
            "{HOOK}\n[notify.headers]\nAuthorization = \"a\"\nauthorization = \"b\""
        )),
        "notify.headers.\"authorization\"",
        5,
        "listed twice",
    );
}

#[test]
fn rejects_bad_header_value() {
    let error = rejects(
        &notify(&format!(
            "{HOOK}\nheaders = {{ Authorization = \"Bearer x\\ny\" }}"
        )),
        "notify.headers.\"Authorization\"",
        3,
        "not a valid header value",
    );
    assert_eq!(error.column, 29);
}

#[test]
fn rejects_header_value_that_is_not_a_string() {
    let Err(errors) = parse(&notify(&format!("{HOOK}\nheaders = {{ X-Retry = 3 }}"))) else {
        panic!("accepted");
    };
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].line, 3, "{}", errors[0]);
    assert!(errors[0].key.starts_with("notify.headers"), "{}", errors[0]);
    assert!(errors[0].message.contains("string"), "{}", errors[0]);
}

#[test]
fn rejects_missing_secret_file() {
    rejects(
        &notify(&format!("{HOOK}\nsecret_file = \"/nonexistent/secret\"")),
        "notify.secret_file",
        3,
        "cannot read secret file /nonexistent/secret",
    );
}

#[test]
fn rejects_empty_secret_file() {
    let dir = scratch_dir("notify-empty-secret");
    std::fs::write(dir.join("secrets/hook"), " \n").expect("write secret");
    let src = notify(&format!("{HOOK}\nsecret_file = \"secrets/hook\""));
    let result = parse_str(&src, &dir.join("proxy.toml"));
    let _ = std::fs::remove_dir_all(&dir);
    let errors = result.expect_err("empty secret accepted");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(
        (errors[0].key.as_str(), errors[0].line),
        ("notify.secret_file", 3)
    );
    assert!(errors[0].message.contains("secret file is empty"));
}

#[test]
fn rejects_unknown_event_kind() {
    let error = rejects(
        &notify(&format!("{HOOK}\nevents = [\"rollback\", \"rolback\"]")),
        "notify.events[1]",
        3,
        "unknown event kind `rolback`",
    );
    // The message lists the valid kinds.
    for kind in [
        "rollback",
        "would_rollback",
        "step",
        "promote",
        "pause",
        "resume",
    ] {
        assert!(error.message.contains(kind), "{error}");
    }
    assert!(error.message.contains("reload_failed"), "{error}");
}

#[test]
fn rejects_event_kind_listed_twice() {
    rejects(
        &notify(&format!("{HOOK}\nevents = [\"step\", \"step\"]")),
        "notify.events[1]",
        3,
        "listed twice",
    );
}

#[test]
fn rejects_empty_event_list() {
    rejects(
        &notify(&format!("{HOOK}\nevents = []")),
        "notify.events",
        3,
        "at least one event kind",
    );
}

#[test]
fn rejects_max_attempts_out_of_range() {
    for value in ["0", "21", "-1"] {
        rejects(
            &notify(&format!("{HOOK}\nmax_attempts = {value}")),
            "notify.max_attempts",
            3,
            "between 1 and 20",
        );
    }
}

#[test]
fn rejects_zero_backoff() {
    rejects(
        &notify(&format!("{HOOK}\nbackoff = \"0s\"")),
        "notify.backoff",
        3,
        "greater than 0",
    );
}

#[test]
fn rejects_backoff_over_the_cap() {
    rejects(
        &notify(&format!("{HOOK}\nbackoff = \"31s\"")),
        "notify.backoff",
        3,
        "at most 30s",
    );
}

#[test]
fn rejects_bad_timeout() {
    rejects(
        &notify(&format!("{HOOK}\ntimeout = \"soon\"")),
        "notify.timeout",
        3,
        "invalid duration",
    );
    rejects(
        &notify(&format!("{HOOK}\ntimeout = \"2m\"")),
        "notify.timeout",
        3,
        "at most 1m",
    );
}

#[test]
fn reports_every_bad_notify_key_at_once() {
    let Err(errors) = parse(&notify(
        "webhook = \"http://hooks/x\"\nca_file = \"ca.pem\"\nevents = [\"nope\"]\nmax_attempts = 0\ntimeout = \"0s\"",
    )) else {
        panic!("accepted");
    };
    let keys: Vec<_> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "notify.ca_file",
            "notify.events[0]",
            "notify.max_attempts",
            "notify.timeout"
        ]
    );
}
