//! Rejections of toml-level errors and of `[server]`, `[admin]`, `[state]` (`[notify]`: `notify.rs`).

use super::*;

// --- toml-level errors (deserialization stops at the first) ---

#[test]
fn rejects_unknown_key() {
    let src = format!("[server]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n{ROUTE}");
    let error = rejects(&src, "server.bogus", 3, "unknown field `bogus`");
    assert_eq!(error.column, 1);
}

#[test]
fn rejects_unknown_key_in_inline_table() {
    let src = "[[route]]\nname = \"a\"\nstable = { endpoints = [\"127.0.0.1:1\"], weight = 1 }\n";
    rejects(src, "route[0].stable.weight", 3, "unknown field `weight`");
}

#[test]
fn rejects_wrong_type_with_array_index() {
    let src = format!("{ROUTE}[[route]]\nname = \"b\"\ncanary_weight = \"10\"\n");
    rejects(&src, "route[1].canary_weight", 8, "expected a number");
}

#[test]
fn rejects_syntax_error() {
    let src = format!("[server]\nlisten = \"127.0.0.1:1\nx = 1\n{ROUTE}");
    rejects(&src, "server.listen", 2, "");
}

#[test]
fn rejects_duplicate_key() {
    let src = format!("[server]\nlisten = \"127.0.0.1:1\"\nlisten = \"127.0.0.1:2\"\n{ROUTE}");
    rejects(&src, "server.listen", 3, "duplicate key");
}

// --- [server], [admin], [state] ---

#[test]
fn rejects_bad_listen() {
    let error = rejects(
        &format!("[server]\nlisten = \"localhost:80\"\n{ROUTE}"),
        "server.listen",
        2,
        "ip:port",
    );
    assert_eq!(error.column, 10);
}

#[test]
fn rejects_bad_duration() {
    rejects(
        &format!("[server]\nheader_read_timeout = \"10\"\n{ROUTE}"),
        "server.header_read_timeout",
        2,
        "invalid duration",
    );
}

#[test]
fn rejects_zero_timeout_but_not_zero_drain() {
    rejects(
        &format!("[server]\nrequest_timeout = \"0ms\"\ndrain_timeout = \"0s\"\n{ROUTE}"),
        "server.request_timeout",
        2,
        "greater than 0",
    );
}

#[test]
fn rejects_max_header_bytes_out_of_range() {
    rejects(
        &format!("[server]\nmax_header_bytes = 2000000\n{ROUTE}"),
        "server.max_header_bytes",
        2,
        "between 1024 and 1048576",
    );
    rejects(
        &format!("[server]\nmax_header_bytes = -1\n{ROUTE}"),
        "server.max_header_bytes",
        2,
        "between",
    );
}

#[test]
fn rejects_unreadable_tls_files() {
    rejects(
        &format!("[server]\n\ntls = {{ cert = \"/nonexistent/a.crt\", key = \"b\" }}\n{ROUTE}"),
        "server.tls.cert",
        3,
        "cannot read /nonexistent/a.crt",
    );
    rejects(
        &format!("[server]\ntls = {{ cert = \"a.crt\" }}\n{ROUTE}"),
        "server.tls.key",
        2,
        "missing required key `key`",
    );
}

#[test]
fn rejects_missing_token_file() {
    rejects(
        &format!("[admin]\ntoken_file = \"nope/token\"\n{ROUTE}"),
        "admin.token_file",
        2,
        "cannot read token file",
    );
}

#[test]
fn rejects_empty_token_file() {
    let dir = scratch_dir("empty-token");
    std::fs::write(dir.join("secrets/token"), " \n\t").expect("write token");
    let src = format!("[admin]\ntoken_file = \"secrets/token\"\n{ROUTE}");
    let errors = parse_str(&src, &dir.join("proxy.toml"))
        .err()
        .unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(
        (errors[0].key.as_str(), errors[0].line),
        ("admin.token_file", 2)
    );
    assert!(errors[0].message.contains("token file is empty"));
}

#[test]
fn rejects_state_without_dir() {
    rejects(
        &format!("\n[state]\n{ROUTE}"),
        "state.dir",
        2,
        "missing required key `dir`",
    );
}

#[test]
fn rejects_admin_on_the_server_port() {
    let src = format!("[server]\nlisten = \"0.0.0.0:9901\"\n[admin]\n{ROUTE}");
    rejects(&src, "admin.listen", 3, "clashes with server.listen");
    let src = format!(
        "[server]\nlisten = \"127.0.0.1:8080\"\n[admin]\nlisten = \"127.0.0.1:8080\"\n{ROUTE}"
    );
    rejects(&src, "admin.listen", 4, "clashes with server.listen");
    valid(&format!(
        "[server]\nlisten = \"127.0.0.1:8080\"\n[admin]\nlisten = \"127.0.0.2:8080\"\n{ROUTE}"
    ));
}

// --- [log] ---

#[test]
fn log_is_off_by_default_and_resolves_its_path() {
    let config = valid(ROUTE);
    assert_eq!(config.log, LogConfig::default());
    assert!(config.log.access.is_none() && !config.log.side_header);

    let config = valid(&format!(
        "[log]\naccess = \"stderr\"\nside_header = true\n{ROUTE}"
    ));
    assert_eq!(config.log.access, Some(AccessLogTarget::Stderr));
    assert!(config.log.side_header);

    // Relative to the config file's directory, like every other path; not created.
    let config = valid(&format!("[log]\naccess = \"logs/access.log\"\n{ROUTE}"));
    assert_eq!(
        config.log.access,
        Some(AccessLogTarget::File(PathBuf::from(
            "/etc/canary/logs/access.log"
        )))
    );
    let config = valid(&format!("[log]\naccess = \"/var/log/a.log\"\n{ROUTE}"));
    assert_eq!(
        config.log.access,
        Some(AccessLogTarget::File(PathBuf::from("/var/log/a.log")))
    );
}

#[test]
fn rejects_empty_log_access() {
    rejects(
        &format!("[log]\naccess = \" \"\n{ROUTE}"),
        "log.access",
        2,
        "must not be empty",
    );
}

#[test]
fn rejects_stdout_as_log_access() {
    for name in ["stdout", "-"] {
        rejects(
            &format!("[log]\naccess = \"{name}\"\n{ROUTE}"),
            "log.access",
            2,
            "\"/dev/stdout\" for standard output",
        );
    }
}

#[test]
fn rejects_unknown_log_key_and_wrong_type() {
    rejects(
        &format!("[log]\nformat = \"json\"\n{ROUTE}"),
        "log.format",
        2,
        "unknown field `format`",
    );
    rejects(
        &format!("[log]\nside_header = \"yes\"\n{ROUTE}"),
        "log.side_header",
        2,
        "expected a boolean",
    );
}

#[test]
fn workers_is_optional_and_bounded() {
    assert_eq!(valid(ROUTE).server.workers, None);
    let config = valid(&format!("[server]\nworkers = 2\n{ROUTE}"));
    assert_eq!(config.server.workers, Some(2));
    for bad in ["0", "-1", "1025"] {
        rejects(
            &format!("[server]\nworkers = {bad}\n{ROUTE}"),
            "server.workers",
            2,
            "must be between 1 and 1024 worker threads",
        );
    }
}
