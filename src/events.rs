//! Decision events: logged, kept in a bounded in-memory list for `/api/v1/events`, and
//! handed to the webhook notifier. Recording never blocks and never waits on the network.

use std::collections::VecDeque;
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

/// The event log of one proxy.
#[derive(Debug)]
pub struct Events {
    recent: Mutex<VecDeque<Event>>,
    notify: Option<mpsc::UnboundedSender<Event>>,
}

// === impl Event ===

impl Event {
    pub fn new(kind: &'static str, route: Option<&str>, reason: impl Into<String>) -> Event {
        Event {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
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
        }
    }

    pub fn record(&self, event: Event) {
        let details = Value::Object(event.details.clone());
        tracing::info!(
            kind = event.kind,
            route = event.route.as_deref(),
            reason = %event.reason,
            details = %details,
            "canary event"
        );
        if let Some(tx) = &self.notify {
            // Unbounded: the notifier drains it; a send only fails once it has stopped.
            let _ = tx.send(event.clone());
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == EVENT_CAPACITY {
            recent.pop_front();
        }
        recent.push_back(event);
    }

    /// Oldest first.
    pub fn list(&self) -> Vec<Event> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().cloned().collect()
    }
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
}
