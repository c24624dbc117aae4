//! The deployment files start, reload and stop the binary the documented way: the
//! Kubernetes manifest parses and carries a config `check` accepts, and the systemd
//! unit and the Dockerfile run it as documented.
//!
//! Needs `python3` with PyYAML (python3-yaml).

mod kit;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use kit::{read, repo, text, yaml, BIN};

fn manifest() -> Vec<Value> {
    yaml("deploy/kubernetes.yaml")
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes.yaml"))
}

/// (c) The manifest parses and has the four objects; the sidecar is wired the way the
/// config and the README expect.
#[test]
fn kubernetes_manifest_parses_and_wires_the_sidecar() {
    let docs = manifest();
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in ["ConfigMap", "Secret", "Deployment", "Service"] {
        assert!(kinds.contains(kind), "no {kind}: {kinds:?}");
    }
    let config: toml::Table = find(&docs, "ConfigMap")["data"]["proxy.toml"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let port = |listen: &toml::Value| -> u64 {
        listen
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let proxy_port = port(&config["server"]["listen"]);
    let admin_port = port(&config["admin"]["listen"]);

    let deployment = find(&docs, "Deployment");
    let pod = &deployment["spec"]["template"];
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/port"],
        admin_port.to_string()
    );
    let spec = &pod["spec"];
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    let sidecar = spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "canary-proxy")
        .expect("no canary-proxy container");
    assert_eq!(sidecar["image"], "canary-proxy:latest");
    assert_eq!(
        sidecar["args"],
        serde_json::json!(["run", "-c", "/etc/canary-proxy/proxy.toml"])
    );
    assert_eq!(sidecar["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(sidecar["resources"]["requests"].is_object());
    assert!(sidecar["resources"]["limits"].is_object());
    assert!(sidecar["lifecycle"]["preStop"].is_object(), "no preStop");

    // Named ports resolve to the config's ports.
    let container_port = |name: &Value| -> u64 {
        if let Some(n) = name.as_u64() {
            return n;
        }
        sidecar["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| &p["name"] == name)
            .unwrap_or_else(|| panic!("no port {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &sidecar[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(container_port(&get["port"]), admin_port, "{probe}");
    }
    let service = find(&docs, "Service");
    let service_port = &service["spec"]["ports"][0];
    assert_eq!(service_port["port"], 8080);
    assert_eq!(container_port(&service_port["targetPort"]), proxy_port);

    // Mounts: the ConfigMap as a directory (never subPath, or reloads are missed), the
    // Secret where token_file points, a writable emptyDir at the state dir.
    let volume = |mount_path: &str| -> &Value {
        let mount = sidecar["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == mount_path)
            .unwrap_or_else(|| panic!("nothing mounted at {mount_path}"));
        assert!(mount["subPath"].is_null(), "{mount_path}: subPath");
        spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap()
    };
    assert_eq!(
        volume("/etc/canary-proxy")["configMap"]["name"],
        "canary-proxy"
    );
    let token_file = config["admin"]["token_file"].as_str().unwrap();
    let token_dir = token_file.rsplit_once('/').unwrap().0;
    let secret = &volume(token_dir)["secret"];
    assert_eq!(
        secret["secretName"],
        find(&docs, "Secret")["metadata"]["name"]
    );
    let key = token_file.rsplit('/').next().unwrap();
    assert!(find(&docs, "Secret")["stringData"][key].is_string());
    assert!(volume(config["state"]["dir"].as_str().unwrap())["emptyDir"].is_object());

    // Grace period > preStop sleep + drain.
    let drain = humantime::parse_duration(config["server"]["drain_timeout"].as_str().unwrap())
        .unwrap()
        .as_secs();
    let pre_stop = sidecar["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0);
    let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(grace > pre_stop + drain, "grace {grace}s");
}

/// (d) The proxy.toml in the ConfigMap passes `canary-proxy check`, with token_file
/// pointed at a token in a temp dir (the validator reads it).
#[test]
fn kubernetes_config_passes_check() {
    let docs = manifest();
    let toml = find(&docs, "ConfigMap")["data"]["proxy.toml"]
        .as_str()
        .unwrap()
        .to_string();
    const TOKEN_FILE: &str = "/etc/canary-proxy-secrets/admin-token";
    assert!(
        toml.contains(TOKEN_FILE),
        "token_file moved: update this test"
    );
    for expected in [
        r#"listen = "0.0.0.0:8080""#,
        r#"listen = "0.0.0.0:9901""#,
        r#"dir = "/var/lib/canary-proxy""#,
        "127.0.0.1:9001",
        "127.0.0.1:9002",
    ] {
        assert!(toml.contains(expected), "no {expected}");
    }
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin-token");
    std::fs::write(&token, "test-token\n").unwrap();
    let config = dir.path().join("proxy.toml");
    // `check` probes the state dir (creates it): point it into the tempdir.
    let state = dir.path().join("state");
    let toml = toml
        .replace(TOKEN_FILE, token.to_str().unwrap())
        .replace("/var/lib/canary-proxy", state.to_str().unwrap());
    std::fs::write(&config, toml).unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("route"), "{}", text(&out.stdout));
}

/// (e) The unit starts, reloads and stops the binary the documented way.
#[test]
fn systemd_unit_reloads_with_hup_and_drains_on_sigterm() {
    let unit = read("deploy/canary-proxy.service");
    let value = |key: &str| -> String {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}="))
            .trim()
            .to_string()
    };
    assert_eq!(
        value("ExecStart"),
        "/usr/local/bin/canary-proxy run -c /etc/canary-proxy/proxy.toml"
    );
    let reload = value("ExecReload");
    assert!(
        reload.contains("-HUP") && reload.contains("$MAINPID"),
        "{reload}"
    );
    assert_eq!(value("KillSignal"), "SIGTERM");
    assert_eq!(value("Type"), "exec");
    // Above the default drain_timeout (15s), so a drain is not cut short.
    let stop = humantime::parse_duration(&value("TimeoutStopSec")).unwrap();
    assert!(stop > Duration::from_secs(15), "{stop:?}");
    for line in [
        "DynamicUser=yes",
        "StateDirectory=canary-proxy",
        "ConfigurationDirectory=canary-proxy",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(unit.lines().any(|l| l == line), "no {line}");
    }
}

#[test]
fn dockerfile_runs_the_release_binary_as_non_root() {
    let dockerfile = read("deploy/Dockerfile");
    for line in [
        "FROM rust:1-bookworm AS build",
        "USER 65532:65532",
        "EXPOSE 8080 9901",
        r#"ENTRYPOINT ["canary-proxy"]"#,
        r#"CMD ["run", "-c", "/etc/canary-proxy/canary-proxy.toml"]"#,
        "COPY deploy/container.toml /etc/canary-proxy/canary-proxy.toml",
    ] {
        assert!(dockerfile.lines().any(|l| l == line), "no {line}");
    }
    // The config the image runs by default is valid, listens outside the container,
    // and keeps its state outside the (read-only) config mount.
    let config = canary_proxy::config::parse_str(
        &read("deploy/container.toml"),
        &repo("deploy/container.toml"),
    )
    .unwrap_or_else(|errors| panic!("deploy/container.toml: {errors:#?}"));
    assert!(config.server.listen.ip().is_unspecified());
    assert!(config.admin.as_ref().unwrap().listen.ip().is_unspecified());
    let state = &config.state.as_ref().unwrap().dir;
    assert!(
        !state.starts_with("/etc/canary-proxy"),
        "{}",
        state.display()
    );
    // The image ships the profile-guided, BOLT-laid-out build (benches/pgo.sh --bolt,
    // locked, with the fleet), so the build stage has what that script and its
    // training runs need.
    assert!(dockerfile.contains("benches/pgo.sh --bolt --features fleet"));
    assert!(dockerfile.contains("target/pgo/bolt/canary-proxy /out/usr/local/bin/canary-proxy"));
    for needed in ["COPY benches ./benches", "COPY examples ./examples"] {
        assert!(dockerfile.lines().any(|l| l == needed), "no {needed}");
    }
    assert!(dockerfile.contains("rustup component add llvm-tools"));
    // The packages themselves, on the apt-get line (not just named in a comment):
    // kill for the training runs, llvm-bolt-16 for --bolt, patch for hyper's patch.
    let apt = dockerfile
        .lines()
        .find(|l| l.contains("apt-get install"))
        .expect("an apt-get install line");
    for package in ["procps", "bolt-16", "patch"] {
        assert!(
            apt.split_whitespace().any(|w| w == package),
            "{package} not installed: {apt}"
        );
    }
    // Both proxy builds take hyper with our patch, on the locked dependencies.
    let pgo = read("benches/pgo.sh");
    let patched_build = "benches/hyper-patch.sh cargo build --release --bin canary-proxy \"$@\"";
    assert_eq!(pgo.matches(patched_build).count(), 2, "{pgo}");
    assert!(!pgo.contains("\n  cargo build --release --locked --bin canary-proxy"));
    assert!(read("benches/hyper-patch.sh").contains("\ncargo fetch --locked"));
    // What --bolt writes is what the image installs (the script's last line prints
    // it), and CI builds the same way.
    assert!(pgo.contains("out=\"$repo/target/pgo/bolt\""));
    assert!(pgo.contains("-o \"$out/canary-proxy\" -data="));
    assert_eq!(
        pgo.trim_end().lines().last(),
        Some("echo \"$out/canary-proxy\"")
    );
    let ci = read(".ci/run");
    assert!(ci.contains("\n  benches/pgo.sh --bolt --features fleet\n"));
    assert!(ci.contains("command -v llvm-bolt-16 >/dev/null || need+=(bolt-16)"));
    // And the tests run once more on the patched hyper.
    assert!(ci.contains("\nbenches/hyper-patch.sh cargo test\n"));
    assert!(ci.contains("command -v patch >/dev/null || need+=(patch)"));
}

/// hyper's patch is for the hyper Cargo.lock pins: a `cargo update` that moves hyper
/// fails here, in `cargo test`, rather than in the release build.
#[test]
fn hyper_patch_matches_the_locked_hyper() {
    let patch = read("benches/hyper-read-buf.patch");
    let wanted = patch
        .lines()
        .find_map(|l| l.strip_prefix("# hyper-version: "))
        .expect("a `# hyper-version:` line");
    let lock = read("Cargo.lock");
    let locked = lock
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"hyper\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .expect("hyper in Cargo.lock");
    assert_eq!(locked.trim_matches('"'), wanted);
    // It patches one file, and carries its own test.
    assert!(patch.contains("\n+++ b/src/proto/h1/io.rs\n"));
    assert!(patch.contains("+    async fn read_reuses_the_rest_of_a_shared_buffer()"));
}

/// CI's disk (stop 24's run died of "No space left on device" in its second test
/// build): debug builds carry line tables for our code only, and CI keeps no
/// incremental state and removes each build it is done with before the next.
#[test]
fn ci_keeps_its_builds_small() {
    let cargo: toml::Table = read("Cargo.toml").parse().unwrap();
    let dev = &cargo["profile"]["dev"];
    assert_eq!(dev["debug"].as_str(), Some("line-tables-only"));
    assert_eq!(dev["package"]["*"]["debug"].as_bool(), Some(false));
    let ci = read(".ci/run");
    let at = |line: &str| {
        ci.find(&format!("\n{line}\n"))
            .unwrap_or_else(|| panic!("no line `{line}` in .ci/run"))
    };
    assert!(at("export CARGO_INCREMENTAL=0") < at("cargo test"));
    let patched = at("benches/hyper-patch.sh cargo test");
    assert!(at("export CARGO_TARGET_DIR=\"$PWD/target/hyper-patched-test\"") < patched);
    assert!(patched < at("rm -rf target/hyper-patched-test"));
    assert!(
        at("rm -rf target/hyper-patched-test") < at("cargo test --features fleet --test fleet")
    );
    assert!(at("cargo test --features fleet --test fleet") < at("rm -rf target/debug"));
    assert!(at("rm -rf target/debug") < at("  benches/pgo.sh --bolt --features fleet"));
}
