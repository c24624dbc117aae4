//! Latched decisions on disk: one small JSON file per route under `[state] dir`,
//! written atomically (temp file, fsync, rename, fsync of the directory). When `save`
//! returns `Ok`, the decision survives a crash of the process or of the machine: the
//! caller reports it only then.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
}

/// A canary's identity: its version label and endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub version: Option<String>,
    pub endpoints: Vec<String>,
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
        }
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
}
