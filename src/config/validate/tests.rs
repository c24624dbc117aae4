use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::HeaderName;
use http::StatusCode;

use super::*;
use crate::config::{
    AccessLogTarget, LogConfig, Protocol, Scheme, StatusMatch, StickySource, Weight,
};

/// One file per area, so each stays short; helpers below are shared.
mod fleet;
mod notify;
mod route;
mod server;
mod shield;

/// A valid route, to append to server-level snippets.
const ROUTE: &str = r#"
[[route]]
name = "app"
stable = { endpoints = ["127.0.0.1:9001"] }
canary = { endpoints = ["127.0.0.1:9002"] }
"#;

fn parse(src: &str) -> Result<Config, Vec<Invalid>> {
    parse_str(src, Path::new("/etc/canary/test.toml"))
}

fn valid(src: &str) -> Config {
    match parse(src) {
        Ok(config) => config,
        Err(errors) => panic!("expected a valid config, got {errors:#?}"),
    }
}

/// Asserts exactly one error, naming `key` at `line`, whose message contains `text`.
#[track_caller]
fn rejects(src: &str, key: &str, line: usize, text: &str) -> Invalid {
    let Err(errors) = parse(src) else {
        panic!("expected {key} to be rejected:\n{src}");
    };
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    let error = errors.into_iter().next().expect("one error");
    assert_eq!(error.key, key, "{error}");
    assert_eq!(error.line, line, "{error}");
    assert!(error.message.contains(text), "{error}: missing {text:?}");
    assert_eq!(error.file, "/etc/canary/test.toml");
    error
}

fn route_with(extra: &str) -> String {
    format!("{ROUTE}{extra}\n")
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh directory under the system temp dir, removed by the caller.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("canary-cfg-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("secrets")).expect("create scratch dir");
    dir
}

// --- whole files ---

#[test]
fn shipped_configs_are_valid() {
    for name in ["example.toml", "minimal.toml", "bench.toml"] {
        let path = manifest_dir().join("config").join(name);
        let src = std::fs::read_to_string(&path).expect("read shipped config");
        if let Err(errors) = parse_str(&src, &path) {
            panic!("{name} is invalid: {errors:#?}");
        }
    }
}

#[test]
fn example_reads_the_token_and_resolves_paths() {
    let path = manifest_dir().join("config/example.toml");
    let src = std::fs::read_to_string(&path).expect("read example");
    let config = parse_str(&src, &path).expect("example is valid");
    let admin = config.admin.expect("example has [admin]");
    assert_eq!(admin.token.as_deref(), Some("change-me-dev-token"));
    assert_eq!(
        admin.token_file,
        Some(manifest_dir().join("config/secrets/admin-token"))
    );
    assert_eq!(
        config.state.map(|s| s.dir),
        Some(manifest_dir().join("config/state"))
    );
    let names: Vec<_> = config.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["checkout", "search"]);
    let checkout = &config.routes[0];
    assert_eq!(checkout.canary_version.as_deref(), Some("v2.4.0"));
    assert_eq!(checkout.rollout.as_ref().map(|r| r.steps.len()), Some(4));
    assert_eq!(
        config.routes[1].canary_weight,
        Weight::from_basis_points(250).expect("bp")
    );
}

/// Every `config/invalid/*.toml` fails with the errors its `# expect: KEY @ LINE` lines name.
#[test]
fn invalid_examples_fail_as_announced() {
    let dir = manifest_dir().join("config/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("read config/invalid")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "only {} invalid examples", files.len());
    for path in files {
        let src = std::fs::read_to_string(&path).expect("read invalid example");
        let expects: Vec<(&str, usize)> = src
            .lines()
            .map_while(|line| line.strip_prefix("# expect: "))
            .map(|expect| {
                let (key, line) = expect.rsplit_once(" @ ").expect("`# expect: KEY @ LINE`");
                (key.trim(), line.trim().parse().expect("line number"))
            })
            .collect();
        assert!(
            !expects.is_empty(),
            "{}: no `# expect:` line",
            path.display()
        );
        let Err(errors) = parse_str(&src, &path) else {
            panic!("{} was accepted", path.display());
        };
        assert_eq!(
            errors.len(),
            expects.len(),
            "{}: {errors:#?}",
            path.display()
        );
        for (key, line) in expects {
            assert!(
                errors.iter().any(|e| e.key.contains(key) && e.line == line),
                "{}: no error for {key} at line {line}: {errors:#?}",
                path.display()
            );
        }
    }
}

// --- defaults and resolution ---

#[test]
fn defaults() {
    let config = valid(ROUTE);
    assert_eq!(config.source, Path::new("/etc/canary/test.toml"));
    let server = &config.server;
    assert_eq!(server.listen, "0.0.0.0:8080".parse().expect("addr"));
    assert_eq!(server.connect_timeout, Duration::from_secs(1));
    assert_eq!(server.request_timeout, Duration::from_secs(30));
    assert_eq!(server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(server.max_header_bytes, 65536);
    assert_eq!(server.drain_timeout, Duration::from_secs(15));
    assert!(config.admin.is_none() && config.state.is_none() && config.notify.is_none());

    let route = &config.routes[0];
    assert_eq!(route.path_prefix, "/");
    assert_eq!(route.host, None);
    assert_eq!(route.canary_weight, Weight::ZERO);
    assert_eq!(route.sticky, [StickySource::ClientIp]);
    assert_eq!(route.salt, "app");
    assert_eq!(route.override_header, None);
    assert!(route.cohort.is_empty() && route.rollout.is_none());
    assert_eq!(route.stable.protocol, Protocol::Http1);
    assert_eq!(route.stable.endpoints[0].scheme, Scheme::Http);
    assert_eq!(
        route.stable.endpoints[0].authority.as_str(),
        "127.0.0.1:9001"
    );
    let budget = &route.budget;
    assert_eq!(budget.window, Duration::from_secs(30));
    assert_eq!(budget.min_requests, 50);
    // Sequential by default: the absolute stop is off unless set.
    assert_eq!(budget.mode, crate::config::BudgetMode::Sequential);
    assert_eq!(budget.max_error_rate, None);
    assert!(budget.enforce);
    assert_eq!(budget.max_error_rate_vs_stable, None);
    assert_eq!(budget.max_p99_latency, None);
    assert_eq!(budget.error_statuses, [StatusMatch::Class(5)]);
}

#[test]
fn admin_listen_defaults_to_localhost() {
    let config = valid(&format!("[admin]\n{ROUTE}"));
    let admin = config.admin.expect("admin");
    assert_eq!(admin.listen, "127.0.0.1:9901".parse().expect("addr"));
    assert_eq!((admin.token, admin.token_file), (None, None));
}

#[test]
fn every_value_converts() {
    let config = valid(
        r#"
[server]
drain_timeout = "0s"
[notify]
webhook = "http://hooks.internal:8080/canary"
[[route]]
name = "grpc.v1_x-y"
host = "API.Example.com:8443"
path_prefix = "/api"
stable = { endpoints = ["http://10.0.0.1:50051/", "10.0.0.2:50051"], protocol = "h2" }
canary = { endpoints = ["[::1]:50051"], protocol = "http/1.1", version = "v2" }
canary_weight = 12.34
sticky = ["header:X-User-Id", "cookie:session", "client_ip"]
salt = "s2"
override_header = "X-Canary"
cohort = ["qa"]
[route.budget]
min_requests = 1
max_error_rate = 1
max_error_rate_vs_stable = 2
max_p99_latency = "250ms"
error_statuses = ["5XX", "429", 404]
[route.rollout]
steps = [0.5, 50, 100]
step_interval = "1m"
"#,
    );
    assert_eq!(config.server.drain_timeout, Duration::ZERO);
    let notify = config.notify.expect("notify");
    assert_eq!(notify.webhook.host(), Some("hooks.internal"));
    let route = &config.routes[0];
    assert_eq!(route.host.as_deref(), Some("api.example.com"));
    assert_eq!(route.stable.protocol, Protocol::Http2);
    assert_eq!(route.stable.endpoints.len(), 2);
    assert_eq!(route.canary.protocol, Protocol::Http1);
    assert_eq!(route.canary_weight.basis_points(), 1234);
    let user = HeaderName::from_static("x-user-id");
    assert_eq!(
        route.sticky,
        [
            StickySource::Header(user),
            StickySource::Cookie("session".into()),
            StickySource::ClientIp
        ]
    );
    assert_eq!(route.salt, "s2");
    assert_eq!(
        route.override_header,
        Some(HeaderName::from_static("x-canary"))
    );
    assert_eq!(route.budget.max_error_rate_vs_stable, Some(2.0));
    assert_eq!(
        route.budget.max_p99_latency,
        Some(Duration::from_millis(250))
    );
    assert_eq!(
        route.budget.error_statuses,
        [
            StatusMatch::Class(5),
            StatusMatch::Exact(StatusCode::TOO_MANY_REQUESTS),
            StatusMatch::Exact(StatusCode::NOT_FOUND)
        ]
    );
    let rollout = route.rollout.as_ref().expect("rollout");
    let steps: Vec<u16> = rollout.steps.iter().map(|w| w.basis_points()).collect();
    assert_eq!(steps, [50, 5000, 10_000]);
    assert_eq!(rollout.step_interval, Duration::from_secs(60));
}

#[test]
fn relative_paths_resolve_against_the_config_dir() {
    let dir = scratch_dir("relative");
    std::fs::write(dir.join("secrets/token"), "  s3cret \n").expect("write token");
    let src = format!("[admin]\ntoken_file = \"secrets/token\"\n[state]\ndir = \"state\"\n{ROUTE}");
    let config = parse_str(&src, &dir.join("proxy.toml"));
    let _ = std::fs::remove_dir_all(&dir);
    let config = config.expect("valid");
    let admin = config.admin.expect("admin");
    assert_eq!(admin.token.as_deref(), Some("s3cret"));
    assert_eq!(admin.token_file, Some(dir.join("secrets/token")));
    // Not created, not required to exist.
    assert_eq!(config.state.map(|s| s.dir), Some(dir.join("state")));
}

#[test]
fn absolute_paths_are_kept() {
    let src = format!("[state]\ndir = \"/var/lib/canary\"\n{ROUTE}");
    let config = valid(&src);
    assert_eq!(
        config.state.map(|s| s.dir),
        Some(PathBuf::from("/var/lib/canary"))
    );
}

#[test]
fn bare_file_name_resolves_against_the_working_dir() {
    let src = format!("[state]\ndir = \"state\"\n{ROUTE}");
    let config = parse_str(&src, Path::new("proxy.toml")).expect("valid");
    assert_eq!(config.state.map(|s| s.dir), Some(PathBuf::from("state")));
}

#[test]
fn locate_counts_characters() {
    let src = "a = \"é\"\nbé = 1\n";
    assert_eq!(locate(src, 0), (1, 1));
    assert_eq!(locate(src, 4), (1, 5));
    // 'b' 'é'(2 bytes) ' ' '=' → '=' is byte 13 of the text, column 4.
    assert_eq!(locate(src, 13), (2, 4));
    // Inside a multi-byte char, and past the end: no panic.
    assert_eq!(locate(src, 6), (1, 6));
    assert_eq!(locate(src, 1000), (3, 1));
}
