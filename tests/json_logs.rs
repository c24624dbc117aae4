//! `--log-format json`: every line is a JSON object, and a canary event's details are
//! an object, not a string holding JSON (issue 16, item 8).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

mod support;

use support::Killed;

const BIN: &str = env!("CARGO_BIN_EXE_canary-proxy");

#[test]
fn canary_event_details_are_a_json_object() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    let toml = |weight: u32| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[[route]]\nname = \"r\"\nstable = {{ endpoints = [\"127.0.0.1:9\"] }}\ncanary = {{ endpoints = [\"127.0.0.1:9\"] }}\ncanary_weight = {weight}\nsticky = [\"header:x-user-id\"]\n"
        )
    };
    std::fs::write(&config, toml(10)).unwrap();
    let mut child = Command::new(BIN)
        .args([
            "--log-format",
            "json",
            "run",
            "-c",
            config.to_str().unwrap(),
        ])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _child = Killed(child);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut started = false;
    let mut event = None;
    // At most 15 s: 75 waits of 200 ms with no line.
    let mut quiet = 0;
    while quiet < 75 {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            quiet += 1;
            continue;
        };
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        if !started && line.contains("listening") {
            started = true;
            // A reload records an event.
            std::fs::write(&config, toml(20)).unwrap();
        }
        if value["message"] == "canary event" {
            event = Some(value);
            break;
        }
    }
    let event = event.expect("no canary event logged");
    assert_eq!(event["kind"], "reload", "{event}");
    assert_eq!(event["level"], "INFO");
    assert!(event["details"].is_object(), "{event}");
    assert_eq!(event["details"]["generation"], 2, "{event}");
    assert!(event["details"]["instance"].is_string(), "{event}");
}
