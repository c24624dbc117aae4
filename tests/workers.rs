//! The runtime is sized from the CPUs the process may use (affinity mask, cgroup quota)
//! or `[server] workers`, and says so at start (issue 17). Real processes: the worker
//! threads are counted in /proc.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod support;

use support::Killed;

const BIN: &str = env!("CARGO_BIN_EXE_canary-proxy");

/// Starts `cmd` (a proxy run), waits until it listens; returns it, its stderr lines
/// and the number of tokio worker threads it has.
fn start(mut cmd: Command) -> (Killed, mpsc::Receiver<String>, usize, String) {
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().unwrap();
    let pid = child.id();
    let child = Killed(child);
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = String::new();
    for _ in 0..100 {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        log.push_str(&line);
        log.push('\n');
        if line.contains("canary-proxy listening") {
            break;
        }
    }
    assert!(
        log.contains("canary-proxy listening"),
        "did not start:\n{log}"
    );
    let workers = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("tokio-rt-worker") || name.starts_with("tokio-runtime-w"))
        .count();
    (child, rx, workers, log)
}

fn config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("proxy.toml");
    std::fs::write(
        &path,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n{extra}\n[[route]]\nname = \"r\"\nstable = {{ endpoints = [\"127.0.0.1:9\"] }}\ncanary = {{ endpoints = [\"127.0.0.1:9\"] }}\nsticky = [\"header:x-user-id\"]\n"),
    )
    .unwrap();
    path
}

#[test]
fn one_cpu_in_the_affinity_mask_means_one_worker() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "");
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0", BIN, "run", "-c", path.to_str().unwrap()]);
    let (_child, _rx, workers, log) = start(cmd);
    assert_eq!(workers, 1, "{log}");
    assert!(log.contains("workers=1"), "{log}");
    assert!(log.contains("affinity mask"), "{log}");
}

#[test]
fn server_workers_overrides_and_a_reload_cannot_change_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "workers = 3");
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "-c", path.to_str().unwrap()]);
    let (_child, rx, workers, log) = start(cmd);
    assert_eq!(workers, 3, "{log}");
    assert!(log.contains("workers=3"), "{log}");
    assert!(log.contains("[server] workers"), "{log}");

    // A reload that changes it is refused and says why.
    config(dir.path(), "workers = 2");
    let mut seen = String::new();
    for _ in 0..50 {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("needs a restart") {
                break;
            }
        }
    }
    assert!(
        seen.contains("server.workers: changing the worker thread count needs a restart"),
        "{seen}"
    );
}
