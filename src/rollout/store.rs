//! Latched decisions on disk: one small JSON file per route under `[state] dir`,
//! written atomically (temp file, fsync, rename, fsync of the directory). When `save`
//! returns `Ok`, the decision survives a crash of the process or of the machine: the
//! caller reports it only then.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::machine::{Machine, Phase};
use super::Decided;
use crate::config::Weight;

/// What a route's canary is, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub route: String,
    /// `steady`, `rolling_out`, `paused`, `rolled_back`, `promoted`.
    pub state: String,
    pub weight_basis_points: u16,
    #[serde(default)]
    pub paused_from: Option<String>,
    /// The canary this applies to; a different one starts fresh.
    pub canary: Identity,
    pub reason: String,
    pub updated: String,
    /// The decision's event: its kind, who made it and the numbers behind it (absent in
    /// files written before it was kept).
    #[serde(default)]
    pub decision: serde_json::Map<String, serde_json::Value>,
}

/// A canary's identity: its version label and endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub version: Option<String>,
    pub endpoints: Vec<String>,
}

/// Restores `route`'s saved decision about the canary `identity` into `machine` and
/// returns it as the API shows it. A file about another canary, no file, or one that
/// cannot be read: `None`, and the canary starts fresh (logged).
pub fn restore(
    dir: &Path,
    route: &str,
    identity: &Identity,
    machine: &mut Machine,
    now: Instant,
) -> Option<Decided> {
    match load(dir, route) {
        Ok(Some(saved)) if saved.canary == *identity => {
            if let Some(phase) = Phase::parse(&saved.state) {
                let weight =
                    Weight::from_basis_points(saved.weight_basis_points).unwrap_or(Weight::ZERO);
                let paused_from = saved.paused_from.as_deref().and_then(Phase::parse);
                machine.restore(phase, weight, paused_from, now);
                tracing::info!(route, state = %phase, weight = %weight, "restored canary state");
            }
            Some(Decided {
                reason: saved.reason,
                since: saved.updated,
                decision: saved.decision,
            })
        }
        Ok(Some(_)) => {
            tracing::info!(
                route,
                "saved state is about another canary version or endpoints; starting fresh"
            );
            None
        }
        Ok(None) => None,
        Err(err) => {
            tracing::warn!(route, error = %err, "cannot read saved state; starting fresh");
            None
        }
    }
}

/// Writes `machine`'s state and the `decided` behind it for `route`. A failure leaves
/// the decision standing in memory (reported) and only its survival across a restart
/// lost: counted in `failures` (`state_write_failures_total`) and logged.
pub fn persist(
    dir: &Path,
    route: &str,
    identity: &Identity,
    machine: &Machine,
    decided: &Decided,
    failures: &metrics::Counter,
) {
    let saved = Saved {
        route: route.to_string(),
        state: machine.phase().as_str().to_string(),
        weight_basis_points: machine.weight().basis_points(),
        paused_from: machine.paused_from().map(|p| p.as_str().to_string()),
        canary: identity.clone(),
        reason: decided.reason.clone(),
        updated: decided.since.clone(),
        decision: decided.decision.clone(),
    };
    let start = Instant::now();
    match save(dir, &saved) {
        Ok(()) => tracing::debug!(
            route,
            state = %saved.state,
            took_ms = start.elapsed().as_secs_f64() * 1000.0,
            "persisted canary state"
        ),
        Err(err) => {
            failures.increment(1);
            tracing::error!(route, dir = %dir.display(), error = %err, "cannot persist canary state");
        }
    }
}

/// `dir/route-NAME.json` (the prefix keeps names like `..` harmless).
pub fn path(dir: &Path, route: &str) -> PathBuf {
    dir.join(format!("route-{route}.json"))
}

/// Reads a route's saved state. `Ok(None)` when there is none.
pub fn load(dir: &Path, route: &str) -> io::Result<Option<Saved>> {
    let path = path(dir, route);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|err| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {err}", path.display()),
        )
    })
}

/// Writes a route's state so that a crash leaves either the old or the new file, and
/// returns once the new one is durable.
pub fn save(dir: &Path, saved: &Saved) -> io::Result<()> {
    create_dir_durably(dir)?;
    let target = path(dir, &saved.route);
    let tmp = dir.join(format!(".route-{}.json.tmp", saved.route));
    let json = serde_json::to_vec_pretty(saved).map_err(io::Error::other)?;
    {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&json)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
    }
    fs::rename(&tmp, &target)?;
    sync_dir(dir)
}

/// `create_dir_all`, and each directory it creates is synced into its parent, so the
/// first decision's file is not lost with a directory entry that was never synced.
fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        create_dir_durably(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => sync_dir(parent.unwrap_or(Path::new("."))),
        // Another route's first save made it just now, and syncs the parent itself.
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(err) => Err(err),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Checks that `dir` can hold decisions, the way `save` writes them: creates it
/// (durably) when absent, writes and fsyncs a probe file, renames it, fsyncs the
/// directory, then removes the file. Run at start and by `check`, so a directory that
/// cannot persist (read-only, `/proc/x`, no permission) is refused up front instead of
/// failing at the first rollback. The error names `dir` and the step that failed.
pub fn probe(dir: &Path) -> io::Result<()> {
    let fail = |step: &str, err: io::Error| {
        io::Error::new(
            err.kind(),
            format!("state dir {}: cannot {step}: {err}", dir.display()),
        )
    };
    create_dir_durably(dir).map_err(|err| fail("create it", err))?;
    // Per process: two processes probing one directory do not trip over each other.
    let tmp = dir.join(format!(".probe-{}.tmp", std::process::id()));
    let target = dir.join(format!(".probe-{}", std::process::id()));
    let written = fs::File::create(&tmp).and_then(|mut file| {
        file.write_all(b"canary-proxy probe\n")?;
        file.sync_all()
    });
    if let Err(err) = written {
        let _ = fs::remove_file(&tmp);
        return Err(fail("write a file in it", err));
    }
    if let Err(err) = fs::rename(&tmp, &target) {
        let _ = fs::remove_file(&tmp);
        return Err(fail("rename a file in it", err));
    }
    let synced = sync_dir(dir);
    fs::remove_file(&target).map_err(|err| fail("remove its probe file", err))?;
    synced.map_err(|err| fail("fsync it", err))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved() -> Saved {
        Saved {
            route: "checkout".into(),
            state: "rolled_back".into(),
            weight_basis_points: 0,
            paused_from: None,
            canary: Identity {
                version: Some("v2".into()),
                endpoints: vec!["http://127.0.0.1:9002".into()],
            },
            reason: "error_rate".into(),
            updated: "2026-01-01T00:00:00Z".into(),
            decision: serde_json::Map::new(),
        }
    }

    #[test]
    fn a_file_without_the_decision_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let old = r#"{"route":"r","state":"rolled_back","weight_basis_points":0,"canary":{"version":null,"endpoints":[]},"reason":"manual","updated":"2026-01-01T00:00:00Z"}"#;
        fs::write(path(dir.path(), "r"), old).unwrap();
        let saved = load(dir.path(), "r").unwrap().unwrap();
        assert_eq!(saved.reason, "manual");
        assert!(saved.decision.is_empty());
    }

    #[test]
    fn round_trip_and_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("nested/state");
        assert_eq!(load(&state, "checkout").unwrap(), None);
        save(&state, &saved()).unwrap();
        assert_eq!(load(&state, "checkout").unwrap(), Some(saved()));
        let mut next = saved();
        next.state = "steady".into();
        save(&state, &next).unwrap();
        assert_eq!(load(&state, "checkout").unwrap(), Some(next));
        // No temp file left behind.
        let names: Vec<_> = fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("route-checkout.json")]);
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(path(dir.path(), "r"), b"{not json").unwrap();
        let err = load(dir.path(), "r").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn probe_creates_the_dir_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/b");
        probe(&state).unwrap();
        assert!(state.is_dir());
        assert_eq!(fs::read_dir(&state).unwrap().count(), 0);
    }

    #[test]
    fn probe_names_a_dir_that_cannot_be_created() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where a parent directory should be.
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        let err = probe(&file.join("state")).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&file.join("state").display().to_string()),
            "{message}"
        );
        assert!(message.contains("cannot create it"), "{message}");
    }
}
