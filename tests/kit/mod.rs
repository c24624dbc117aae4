//! What the operator-kit tests share (`operator_metrics`, `operator_alerts`,
//! `operator_deploy`): the repository's files, the binary, and external tools that
//! say which package to install when they are missing. Each test binary uses part of
//! it, hence `dead_code` (and `unreachable_pub`, as in `support`).
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

/// The proxy binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_canary-proxy");

/// `path` in the repository (relative to `Cargo.toml`).
pub fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The contents of repository file `path`; panics with the path.
pub fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs `cmd`; a missing program is a panic that says which package provides it.
pub fn run(cmd: &mut Command, package: &str) -> Output {
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{:?} not found: `apt-get install {package}`",
            cmd.get_program()
        ),
        Err(e) => panic!("{:?}: {e}", cmd.get_program()),
    }
}

/// Output bytes as text, lossily.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A Python with PyYAML: `python3` from PATH, else Debian's (python3-yaml), which a
/// PATH that leads to another Python (pyenv, a venv) would not see.
pub fn python() -> &'static str {
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
pub fn yaml(path: &str) -> Vec<Value> {
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

/// `config/alerts.yml` as JSON.
pub fn alert_rules() -> Value {
    yaml("config/alerts.yml").remove(0)
}
