//! Decision events: logged, kept in a bounded in-memory list for `/api/v1/events`, and
//! handed to the webhook notifier. Recording never blocks and never waits on the network.
//!
//! With `[state] dir` the list also survives a restart: each event is appended to
//! `dir/events.jsonl` (one JSON object per line), read back at start, and the file is
//! rewritten with the newest [`EVENT_CAPACITY`] events once it holds twice as many.
//! Every event names the `instance` (host name) that recorded it.

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

/// How many events `/api/v1/events` keeps (oldest dropped first).
pub const EVENT_CAPACITY: usize = 1000;

/// One decision or config event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    /// RFC 3339, UTC.
    pub time: String,
    /// `rollback`, `step`, `promote`, `pause`, `resume`, `reload`, `reload_failed`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    pub reason: String,
    /// The numbers behind the decision.
    #[serde(flatten)]
    pub details: Map<String, Value>,
}

/// Every kind of event, as persisted and read back.
pub const KINDS: [&str; 9] = [
    "rollback",
    "would_rollback",
    "step",
    "promote",
    "pause",
    "resume",
    "reload",
    "reload_failed",
    "startup",
];

/// The event log of one proxy.
#[derive(Debug)]
pub struct Events {
    recent: Mutex<VecDeque<Event>>,
    notify: Option<mpsc::UnboundedSender<Event>>,
    /// Added to every event: who recorded it.
    instance: String,
    /// `[state] dir`'s event file, when there is one.
    file: Option<Mutex<EventFile>>,
}

#[derive(Debug)]
struct EventFile {
    path: PathBuf,
    /// Lines in the file (events appended since the last rewrite included).
    lines: usize,
}

// === impl Event ===

impl Event {
    pub fn new(kind: &'static str, route: Option<&str>, reason: impl Into<String>) -> Event {
        Event {
            time: timestamp(),
            kind,
            route: route.map(str::to_string),
            reason: reason.into(),
            details: Map::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Event {
        self.details.insert(key.to_string(), value.into());
        self
    }
}

// === impl Events ===

impl Events {
    /// `notify`: where events go for the webhook (none without `[notify]`).
    pub fn new(notify: Option<mpsc::UnboundedSender<Event>>) -> Events {
        Events {
            recent: Mutex::new(VecDeque::with_capacity(64)),
            notify,
            instance: host_name(),
            file: None,
        }
    }

    /// Keeps the events in `dir/events.jsonl` too, and starts with the newest
    /// [`EVENT_CAPACITY`] of those already there (lines that do not parse are skipped,
    /// with a warning). A file that cannot be read or written costs only the history.
    pub fn persist_in(mut self, dir: &Path) -> Events {
        let path = dir.join("events.jsonl");
        let mut lines = 0;
        match fs::read_to_string(&path) {
            Ok(text) => {
                let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    lines += 1;
                    match parse_event(line) {
                        Some(event) => {
                            if recent.len() == EVENT_CAPACITY {
                                recent.pop_front();
                            }
                            recent.push_back(event);
                        }
                        None => {
                            tracing::warn!(file = %path.display(), "skipping an unreadable line of the event log")
                        }
                    }
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(file = %path.display(), error = %err, "cannot read the event log; starting without history")
            }
        }
        self.file = Some(Mutex::new(EventFile { path, lines }));
        self
    }

    pub fn record(&self, event: Event) {
        let mut event = event;
        if !event.details.contains_key("instance") {
            event
                .details
                .insert("instance".into(), Value::from(self.instance.clone()));
        }
        log(&event);
        if let Some(tx) = &self.notify {
            // Unbounded: the notifier drains it; a send only fails once it has stopped.
            let _ = tx.send(event.clone());
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == EVENT_CAPACITY {
            recent.pop_front();
        }
        recent.push_back(event.clone());
        if let Some(file) = &self.file {
            let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(err) = file.append(&event, &recent) {
                tracing::warn!(file = %file.path.display(), error = %err, "cannot write the event log");
            }
        }
    }

    /// Oldest first.
    pub fn list(&self) -> Vec<Event> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().cloned().collect()
    }
}

/// Whether logs are JSON lines (`--log-format json`): then an event's details are
/// written as a JSON object, not as a string holding JSON.
static JSON_LOGS: AtomicBool = AtomicBool::new(false);

/// Set once at start by the binary, with the log format it installed.
pub fn set_json_logs(json: bool) {
    JSON_LOGS.store(json, Ordering::Relaxed);
}

/// Logs an event at INFO (target `canary_proxy::events`, subject to `RUST_LOG`). In
/// JSON mode the line is written here, shaped like tracing-subscriber's JSON lines but
/// with `details` as an object: tracing's field values are strings.
fn log(event: &Event) {
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    if JSON_LOGS.load(Ordering::Relaxed) {
        // Flattened, as the binary's JSON subscriber writes every other line.
        let line = serde_json::json!({
            "timestamp": humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            "level": "INFO",
            "message": "canary event",
            "kind": event.kind,
            "route": event.route,
            "reason": event.reason,
            "details": event.details,
            "target": module_path!(),
        });
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "{line}");
        return;
    }
    let details = Value::Object(event.details.clone());
    tracing::info!(
        kind = event.kind,
        route = event.route.as_deref(),
        reason = %event.reason,
        details = %details,
        "canary event"
    );
}

// === impl EventFile ===

impl EventFile {
    /// Appends `event`; once the file holds twice the capacity, rewrites it with
    /// `recent` (temp file + rename, so a crash leaves the old or the new file).
    fn append(&mut self, event: &Event, recent: &VecDeque<Event>) -> std::io::Result<()> {
        if self.lines + 1 >= 2 * EVENT_CAPACITY {
            let tmp = self.path.with_extension("jsonl.tmp");
            let mut out = fs::File::create(&tmp)?;
            for event in recent {
                serde_json::to_writer(&mut out, event)?;
                out.write_all(b"\n")?;
            }
            out.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            self.lines = recent.len();
            return Ok(());
        }
        let mut out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let mut line = serde_json::to_vec(event)?;
        line.push(b'\n');
        out.write_all(&line)?;
        self.lines += 1;
        Ok(())
    }
}

/// An event as persisted; `None` when the line is not one (or of an unknown kind).
fn parse_event(line: &str) -> Option<Event> {
    let Value::Object(mut map) = serde_json::from_str(line).ok()? else {
        return None;
    };
    let kind = map.remove("kind")?;
    let kind = KINDS.into_iter().find(|k| Some(*k) == kind.as_str())?;
    let time = map.remove("time")?.as_str()?.to_string();
    let reason = map.remove("reason")?.as_str()?.to_string();
    let route = map
        .remove("route")
        .and_then(|r| r.as_str().map(str::to_string));
    Some(Event {
        time,
        kind,
        route,
        reason,
        details: map,
    })
}

/// Now, as events say it: RFC 3339, UTC, milliseconds.
pub fn timestamp() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// This machine's host name (the pod name in Kubernetes), or `unknown`.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_events_and_forwards_them() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let events = Events::new(Some(tx));
        for i in 0..EVENT_CAPACITY + 5 {
            events.record(Event::new("step", Some("r"), format!("n{i}")).with("n", i));
        }
        let list = events.list();
        assert_eq!(list.len(), EVENT_CAPACITY);
        assert_eq!(list[0].reason, "n5");
        let first = rx.try_recv().unwrap();
        assert_eq!(first.reason, "n0");
        let json = serde_json::to_value(&first).unwrap();
        assert_eq!(json["kind"], "step");
        assert_eq!(json["route"], "r");
        assert_eq!(json["n"], 0);
        assert!(json["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn events_survive_a_restart_and_the_file_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let events = Events::new(None).persist_in(dir.path());
        events.record(
            Event::new("rollback", Some("shop"), "sequential_error_rate").with("observed", 7.5),
        );
        events.record(Event::new("reload", None, "config reloaded"));
        drop(events);

        let again = Events::new(None).persist_in(dir.path());
        let list = again.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].kind, "rollback");
        assert_eq!(list[0].route.as_deref(), Some("shop"));
        assert_eq!(list[0].details["observed"], 7.5);
        assert!(list[0].details["instance"].is_string());

        // A garbage line is skipped, not fatal.
        let path = dir.path().join("events.jsonl");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{not json\n");
        std::fs::write(&path, text).unwrap();
        let again = Events::new(None).persist_in(dir.path());
        assert_eq!(again.list().len(), 2);

        for i in 0..3 * EVENT_CAPACITY {
            again.record(Event::new("step", Some("r"), format!("n{i}")));
        }
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines < 2 * EVENT_CAPACITY, "{lines}");
        let restored = Events::new(None).persist_in(dir.path()).list();
        assert_eq!(restored.len(), EVENT_CAPACITY);
        assert_eq!(
            restored.last().unwrap().reason,
            format!("n{}", 3 * EVENT_CAPACITY - 1)
        );
    }
}
