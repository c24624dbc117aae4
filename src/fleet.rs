//! The fleet (SPEC §10): many instances, one judgement and one latch, kept in etcd v3.
//!
//! Every instance publishes its **cumulative** counters per route (stable and canary
//! requests, errors, slow requests) under a key of its own, and watches the whole fleet
//! prefix. One instance, elected through a leased key, is the judge: it sums every
//! instance's counters and runs the same `Judge` as a single instance on the totals.
//! On a breach it writes the route's fleet record (create-if-absent, then
//! compare-and-swap on `mod_revision`); every instance watches the record and applies
//! it (persisted first, then reported). Operators' commands on any instance change the
//! same record, so two concurrent ones cannot overwrite each other.
//!
//! Keys under `{prefix}{fleet name}/`:
//!
//! | key | value | lease |
//! |---|---|---|
//! | `members/{instance}/{boot}` | `{"instance", "boot"}` | yes: liveness |
//! | `judge` | `{instance}/{boot}` | yes: the election |
//! | `counts/{route}/{canary}/{epoch}/{instance}/{boot}` | `{"stable": Counts, "canary": Counts}` | no: a crashed instance's counts stay in the totals |
//! | `record/{route}/{canary}` | `Record` | no |
//!
//! `{canary}` is a hash of the canary's version and endpoints (a new canary starts
//! from nothing); `{epoch}` grows each time the canary is re-armed (resume), so a
//! resumed canary is judged on fresh counts; `{boot}` is new at each start, so a
//! restarted instance never counts anything twice and the totals never go down.
//!
//! This module is pure (keys, records, the view of the fleet, the status DTO); the etcd
//! client task is `fleet::client`, built with the `fleet` cargo feature.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::config::RouteConfig;
use crate::rollout::machine::Command;
use crate::rollout::{Counts, Operator};

#[cfg(feature = "fleet")]
pub mod client;

/// The fleet's decision about one route's canary: what every instance applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Grows by one with every change.
    pub seq: u64,
    /// Grows by one each time the canary is re-armed (resumed out of a rollback):
    /// counters are keyed by it, so the re-armed canary is judged afresh.
    pub epoch: u64,
    pub state: RecordState,
    /// Who: `fleet:{instance}` for the judge, else the operator's token name.
    pub actor: String,
    /// The instance that wrote it.
    pub instance: String,
    pub reason: String,
    /// The etcd revision of the view the judge decided on (an exact, clock-free
    /// audit); `None` for an operator's command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judged_revision: Option<i64>,
    /// The fleet totals behind a judge's decision: `[stable, canary]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<[Counts; 2]>,
    #[serde(default)]
    pub canary_version: Option<String>,
    /// The rollout's current step, basis points (`[route.rollout]`: the fleet judge
    /// advances it); `None`: the configured `canary_weight`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_basis_points: Option<u16>,
    /// RFC 3339, UTC.
    pub time: String,
}

/// The state a fleet record asks every instance to be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// Judged (steady or rolling out).
    Armed,
    Paused,
    RolledBack,
    Promoted,
}

/// One instance's counters for one route, as published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub stable: Counts,
    pub canary: Counts,
}

/// Where the fleet's keys live, for one fleet and one instance boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// `{prefix}{fleet name}/`.
    pub base: String,
    pub instance: String,
    pub boot: String,
}

/// Everything this instance knows of the fleet: the keys under the fleet's base, as of
/// `revision`. Built by a list, kept by a watch (`apply`).
#[derive(Debug, Default, Clone)]
pub struct View {
    pub revision: i64,
    /// `counts/…` key (below the base) → counters.
    counts: BTreeMap<String, Published>,
    /// `(route segment, canary)` → the record and its `mod_revision`.
    records: BTreeMap<(String, String), (Record, i64)>,
    /// `instance/boot` of every live member.
    pub members: BTreeSet<String>,
    /// `instance/boot` of the judge.
    pub judge: Option<String>,
}

/// A route's fleet fields in `/api/v1/routes` (SPEC §10).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RouteFleetStatus {
    pub name: String,
    /// etcd answered within `stale_after`: the fleet judges this route.
    pub connected: bool,
    /// Live instances.
    pub members: usize,
    /// The judge's instance name (`null` while none is elected).
    pub judge: Option<String>,
    pub totals: Totals,
    /// The fleet record's epoch and sequence (0 before the first decision).
    pub epoch: u64,
    pub seq: u64,
    /// The etcd revision of this instance's view.
    pub revision: i64,
}

/// Fleet totals per side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Totals {
    pub stable: SideTotals,
    pub canary: SideTotals,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SideTotals {
    pub requests: u64,
    pub errors: u64,
}

/// Why a fleet command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// etcd is out of reach: a fleet decision cannot be made (HTTP 503).
    #[error("the fleet's etcd is out of reach; fleet commands need it (the instance judges locally meanwhile)")]
    Unavailable,
    /// Another decision landed first, or the fleet is already there (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// No such route in the fleet client's config (HTTP 404).
    #[error("no route named {0:?}")]
    NoRoute(String),
}

/// An operator's command on the fleet record, for the client task.
#[derive(Debug)]
pub struct CommandRequest {
    pub route: String,
    pub command: Command,
    pub operator: Operator,
    pub reply: oneshot::Sender<Result<Record, CommandError>>,
}

/// What the admin API holds of the fleet client: its status, and a way to send it
/// commands.
#[derive(Debug)]
pub struct Handle {
    pub name: String,
    status: Mutex<BTreeMap<String, RouteFleetStatus>>,
    commands: mpsc::Sender<CommandRequest>,
}

// === impl Handle ===

impl Handle {
    pub fn new(name: String) -> (Arc<Handle>, mpsc::Receiver<CommandRequest>) {
        let (commands, rx) = mpsc::channel(16);
        (
            Arc::new(Handle {
                name,
                status: Mutex::new(BTreeMap::new()),
                commands,
            }),
            rx,
        )
    }

    /// The fleet fields of route `route`, as last published by the client task.
    pub fn status(&self, route: &str) -> Option<RouteFleetStatus> {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(route)
            .cloned()
    }

    /// Replaces every route's status (the client task, after each change).
    pub fn set_status(&self, status: BTreeMap<String, RouteFleetStatus>) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }

    /// Asks the client task to write `command` to the route's fleet record; resolves
    /// once etcd has accepted it (or refused it).
    pub async fn command(
        &self,
        route: &str,
        command: Command,
        operator: Operator,
    ) -> Result<Record, CommandError> {
        let (reply, rx) = oneshot::channel();
        let request = CommandRequest {
            route: route.to_string(),
            command,
            operator,
            reply,
        };
        if self.commands.send(request).await.is_err() {
            return Err(CommandError::Unavailable);
        }
        rx.await.unwrap_or(Err(CommandError::Unavailable))
    }
}

// === impl Keys ===

impl Keys {
    pub fn new(prefix: &str, fleet: &str, instance: &str, boot: &str) -> Keys {
        Keys {
            base: format!("{prefix}{fleet}/"),
            instance: instance.to_string(),
            boot: boot.to_string(),
        }
    }

    /// `instance/boot`: this boot's identity in members and the judge key.
    pub fn me(&self) -> String {
        format!("{}/{}", self.instance, self.boot)
    }

    pub fn member(&self) -> String {
        format!("{}members/{}", self.base, self.me())
    }

    pub fn judge(&self) -> String {
        format!("{}judge", self.base)
    }

    pub fn counts(&self, route: &str, canary: &str, epoch: u64) -> String {
        format!(
            "{}counts/{}/{canary}/{epoch}/{}",
            self.base,
            segment(route),
            self.me()
        )
    }

    /// Whether `key` is a fleet record (the decisions every instance applies).
    pub fn is_record(&self, key: &str) -> bool {
        key.strip_prefix(&self.base)
            .is_some_and(|rest| rest.starts_with("record/"))
    }

    pub fn record(&self, route: &str, canary: &str) -> String {
        format!("{}record/{}/{canary}", self.base, segment(route))
    }
}

/// A route name as one key segment: `[A-Za-z0-9._-]` kept, every other byte `%XX`.
pub fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The canary's identity as a key segment: a hash of its version and endpoints, so a
/// new canary is judged from nothing.
pub fn canary_id(route: &RouteConfig) -> String {
    let mut text = route.canary_version.clone().unwrap_or_default();
    for endpoint in &route.canary.endpoints {
        text.push('\0');
        text.push_str(&endpoint.to_string());
    }
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

// === impl View ===

impl View {
    /// Applies one key's new value (`None`: deleted) at `mod_revision`. `key` is the
    /// full key; keys outside `base` or of unknown shape are ignored (another tool's).
    pub fn apply(&mut self, base: &str, key: &str, value: Option<&[u8]>, mod_revision: i64) {
        self.revision = self.revision.max(mod_revision);
        let Some(rest) = key.strip_prefix(base) else {
            return;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["members", instance, boot] => {
                let id = format!("{instance}/{boot}");
                if value.is_some() {
                    self.members.insert(id);
                } else {
                    self.members.remove(&id);
                }
            }
            ["judge"] => {
                self.judge = value.and_then(|v| std::str::from_utf8(v).ok().map(str::to_string));
            }
            ["counts", _, _, _, _, _] => match value.map(serde_json::from_slice::<Published>) {
                Some(Ok(published)) => {
                    self.counts.insert(rest.to_string(), published);
                }
                Some(Err(err)) => {
                    tracing::warn!(key, error = %err, "fleet: ignoring malformed counters")
                }
                None => {
                    self.counts.remove(rest);
                }
            },
            ["record", route, canary] => {
                let id = (route.to_string(), canary.to_string());
                match value.map(serde_json::from_slice::<Record>) {
                    Some(Ok(record)) => {
                        self.records.insert(id, (record, mod_revision));
                    }
                    Some(Err(err)) => {
                        tracing::warn!(key, error = %err, "fleet: ignoring malformed record")
                    }
                    None => {
                        self.records.remove(&id);
                    }
                }
            }
            _ => {}
        }
    }

    /// The sum of every instance's (and every boot's) counters for the route's canary
    /// at `epoch`: `[stable, canary]`.
    pub fn totals(&self, route: &str, canary: &str, epoch: u64) -> [Counts; 2] {
        let prefix = format!("counts/{}/{canary}/{epoch}/", segment(route));
        self.counts
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .fold([Counts::default(); 2], |[s, c], (_, p)| {
                [s.plus(p.stable), c.plus(p.canary)]
            })
    }

    /// The route's fleet record and its `mod_revision`, if one was written.
    pub fn record(&self, route: &str, canary: &str) -> Option<&(Record, i64)> {
        self.records.get(&(segment(route), canary.to_string()))
    }
}

// === impl Record ===

impl Record {
    /// The record's audit fields, for the event an instance reports when it applies
    /// it: sequence, epoch, who decided, and the judge's revision and totals.
    pub fn event_details(&self) -> Vec<(&'static str, serde_json::Value)> {
        let mut details = vec![
            ("fleet_seq", self.seq.into()),
            ("fleet_epoch", self.epoch.into()),
            ("decided_by", self.instance.clone().into()),
        ];
        if let Some(revision) = self.judged_revision {
            details.push(("judged_revision", revision.into()));
        }
        if let Some([stable, canary]) = self.totals {
            details.push(("fleet_canary_requests", canary.requests.into()));
            details.push(("fleet_canary_errors", canary.errors.into()));
            details.push(("fleet_stable_requests", stable.requests.into()));
            details.push(("fleet_stable_errors", stable.errors.into()));
        }
        details
    }
}

// === impl RecordState ===

impl RecordState {
    /// The local command that brings an instance into this state.
    pub fn command(self) -> Command {
        match self {
            RecordState::Armed => Command::Resume,
            RecordState::Paused => Command::Pause,
            RecordState::RolledBack => Command::Rollback,
            RecordState::Promoted => Command::Promote,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RecordState::Armed => "armed",
            RecordState::Paused => "paused",
            RecordState::RolledBack => "rolled_back",
            RecordState::Promoted => "promoted",
        }
    }
}

/// The record an operator's `command` makes of `current` (`None`: no record yet, the
/// canary armed at epoch 0). A command that finds the fleet already in its target state
/// is a conflict naming who put it there, so of two operators racing, one wins and the
/// other is told.
pub fn next_record(
    current: Option<&Record>,
    command: Command,
    actor: &str,
    instance: &str,
    reason: String,
    time: String,
) -> Result<Record, CommandError> {
    let (seq, epoch, state) =
        current.map_or((0, 0, RecordState::Armed), |r| (r.seq, r.epoch, r.state));
    let target = match command {
        Command::Rollback => RecordState::RolledBack,
        Command::Promote => RecordState::Promoted,
        Command::Pause => RecordState::Paused,
        Command::Resume => RecordState::Armed,
    };
    if target == state {
        let by = current.map_or_else(
            || "the start".to_string(),
            |r| {
                format!(
                    "{} on {} at {} (seq {})",
                    r.actor, r.instance, r.time, r.seq
                )
            },
        );
        return Err(CommandError::Conflict(format!(
            "the fleet is already {}: set by {by}",
            state.as_str()
        )));
    }
    if command == Command::Pause && state == RecordState::RolledBack {
        return Err(CommandError::Conflict(
            "cannot pause a rolled-back canary: resume it first".into(),
        ));
    }
    // Leaving a rollback re-arms the canary: fresh counters, and the rollout starts
    // again from the configured weight.
    let rearmed = state == RecordState::RolledBack;
    let epoch = if rearmed { epoch + 1 } else { epoch };
    let weight_basis_points = if rearmed {
        None
    } else {
        current.and_then(|r| r.weight_basis_points)
    };
    Ok(Record {
        seq: seq + 1,
        epoch,
        state: target,
        actor: actor.to_string(),
        instance: instance.to_string(),
        reason,
        judged_revision: None,
        totals: None,
        canary_version: current.and_then(|r| r.canary_version.clone()),
        weight_basis_points,
        time,
    })
}

#[cfg(test)]
mod tests;
