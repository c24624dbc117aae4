//! `[fleet]` (SPEC §10): every key checked, one error per bad key; a build without the
//! `fleet` feature refuses the section outright.

use super::*;

const ENDPOINTS: &str = r#"endpoints = ["http://127.0.0.1:2379", "https://etcd-1.internal:2379/"]"#;

/// The errors other than "this build has no fleet support" (present without the
/// `fleet` feature).
fn errors(src: &str) -> Vec<Invalid> {
    match parse(src) {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .into_iter()
            .filter(|e| !(e.key == "fleet" && e.message.contains("no fleet support")))
            .collect(),
    }
}

#[track_caller]
fn rejects_key(src: &str, key: &str, line: usize, text: &str) {
    let errors = errors(src);
    assert_eq!(
        errors.len(),
        1,
        "expected one error, got {errors:#?}\n{src}"
    );
    assert_eq!(errors[0].key, key, "{}", errors[0]);
    assert_eq!(errors[0].line, line, "{}", errors[0]);
    assert!(
        errors[0].message.contains(text),
        "{}: missing {text:?}",
        errors[0]
    );
}

fn tls_files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "x").unwrap();
    dir
}

#[test]
fn a_full_fleet_section_is_read_with_its_defaults() {
    let dir = tls_files();
    let ca = dir.path().join("ca.pem");
    let src = format!(
        "[fleet]\nname = \"checkout\"\n{ENDPOINTS}\ninstance = \"pod-1\"\ntls = {{ ca_file = \"{}\" }}\n{ROUTE}",
        ca.display()
    );
    if cfg!(feature = "fleet") {
        let fleet = valid(&src).fleet.expect("[fleet]");
        assert_eq!(fleet.name, "checkout");
        assert_eq!(fleet.instance, "pod-1");
        assert_eq!(
            fleet.endpoints,
            ["http://127.0.0.1:2379", "https://etcd-1.internal:2379"]
        );
        assert_eq!(fleet.publish_interval, Duration::from_secs(1));
        assert_eq!(fleet.stale_after, Duration::from_secs(3));
        assert_eq!(fleet.prefix, "/canary-proxy/");
        assert_eq!(fleet.tls.unwrap().ca_file, Some(ca));
    } else {
        let errors = parse(&src).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].key, "fleet");
        assert!(
            errors[0].message.contains("--features fleet"),
            "{}",
            errors[0]
        );
    }
    assert_eq!(errors(&src).len(), 0);
}

#[test]
fn the_instance_defaults_to_the_host_name() {
    let src = format!("[fleet]\nname = \"a\"\nendpoints = [\"http://127.0.0.1:2379\"]\n{ROUTE}");
    assert!(errors(&src).is_empty());
    if cfg!(feature = "fleet") {
        assert_eq!(
            valid(&src).fleet.unwrap().instance,
            crate::events::host_name()
        );
    }
}

#[test]
fn each_bad_key_is_named() {
    let head = "[fleet]\nname = \"a\"\n";
    let cases: [(&str, &str, usize, &str); 10] = [
        (
            "[fleet]\nendpoints = [\"http://127.0.0.1:2379\"]\n",
            "fleet.name",
            1,
            "missing",
        ),
        (
            "[fleet]\nname = \"a b\"\nendpoints = [\"http://127.0.0.1:2379\"]\n",
            "fleet.name",
            2,
            "letters, digits",
        ),
        (head, "fleet.endpoints", 1, "missing"),
        (
            "[fleet]\nname = \"a\"\nendpoints = []\n",
            "fleet.endpoints",
            3,
            "at least one",
        ),
        (
            "[fleet]\nname = \"a\"\nendpoints = [\"127.0.0.1:2379\"]\n",
            "fleet.endpoints",
            3,
            "http://host:port",
        ),
        (
            "[fleet]\nname = \"a\"\nendpoints = [\"http://h:2379/v3\"]\n",
            "fleet.endpoints",
            3,
            "not an etcd client URL",
        ),
        (
            "[fleet]\nname = \"a\"\nendpoints = [\"https://h:2379\"]\n",
            "fleet.tls",
            1,
            "ca_file",
        ),
        (
            "[fleet]\nname = \"a\"\nendpoints = [\"http://h:2379\"]\npublish_interval = \"10ms\"\n",
            "fleet.publish_interval",
            4,
            "between 100ms and 60s",
        ),
        (
            "[fleet]\nname = \"a\"\nendpoints = [\"http://h:2379\"]\nstale_after = \"1s\"\n",
            "fleet.stale_after",
            4,
            "twice publish_interval",
        ),
        (
            "[fleet]\nname = \"a\"\nendpoints = [\"http://h:2379\"]\nprefix = \"canary\"\n",
            "fleet.prefix",
            4,
            "start and end with `/`",
        ),
    ];
    for (section, key, line, text) in cases {
        rejects_key(&format!("{section}{ROUTE}"), key, line, text);
    }
}

#[test]
fn tls_files_must_exist_and_come_in_pairs() {
    let src = |tls: &str| {
        format!(
            "[fleet]\nname = \"a\"\nendpoints = [\"https://h:2379\"]\ntls = {{ {tls} }}\n{ROUTE}"
        )
    };
    rejects_key(
        &src("ca_file = \"/nonexistent/ca.pem\""),
        "fleet.tls.ca_file",
        4,
        "cannot read",
    );
    let dir = tls_files();
    let ca = dir.path().join("ca.pem").display().to_string();
    rejects_key(
        &src(&format!("ca_file = \"{ca}\", cert = \"{ca}\"")),
        "fleet.tls.key",
        4,
        "missing",
    );
}

#[test]
fn unknown_fleet_keys_are_errors() {
    let src = format!(
        "[fleet]\nname = \"a\"\nendpoints = [\"http://h:2379\"]\npublish = \"1s\"\n{ROUTE}"
    );
    let errors = parse(&src).unwrap_err();
    assert!(
        errors[0].message.contains("unknown field `publish`"),
        "{errors:#?}"
    );
}
