//! The fleet client: one task that owns the etcd connection (SPEC §10).
//!
//! `etcd-client` does not fail over across endpoints, resume watches or lease
//! keep-alives by itself, so this task does: it talks to one endpoint at a time and
//! moves to the next on any error (`Unavailable`, "no leader" — every call carries
//! `require_leader` — or a timeout); it keeps its lease across reconnects when etcd
//! still has it; it lists the fleet's keys and watches from that revision + 1, and
//! lists again after a compaction or a broken watch. A staleness clock (`last_ok`, any
//! answered round trip) drives the switch between fleet and local judgement. The data
//! path never waits on any of this.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    canary_id, next_record, CommandError, CommandRequest, Handle, Keys, Published, Record,
    RecordState, RouteFleetStatus, SideTotals, Totals, View,
};
use crate::config::Weight;
use crate::config::{FleetConfig, RouteConfig};
use crate::rollout::judge::{step_may_advance, Judge};
use crate::rollout::machine::{Breach, BreachKind, Decision, Machine};
use crate::rollout::{Counts, Operator, Shared};
use crate::routing::Side;
use crate::snapshot::Snapshot;
use crate::telemetry::FleetMeters;

/// How often the task publishes when nudged, judges, and checks its clock.
const TICK: Duration = Duration::from_millis(100);
/// One unary call (connect, put, txn, get) before the endpoint counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// Waits between passes over every endpoint while none answers.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));
/// etcd's shortest lease (seconds).
const MIN_TTL: i64 = 2;

/// The fleet client task's state that outlives one connection.
struct Fleet {
    config: FleetConfig,
    keys: Keys,
    snapshots: Arc<ArcSwap<Snapshot>>,
    shared: Arc<Shared>,
    handle: Arc<Handle>,
    meters: FleetMeters,
    view: View,
    /// Milliseconds since `origin` of the last answered round trip (0: never).
    last_ok: Arc<AtomicU64>,
    origin: Instant,
    lease: Option<i64>,
    /// Per route: the `seq` of the last record this instance applied (it grows with
    /// every change, across epochs).
    applied: HashMap<String, u64>,
    /// Per route, on the judge: the fleet judge and the totals it has seen.
    judges: HashMap<String, RouteJudge>,
    /// Counters as last written, per key: unchanged ones are not written again.
    published: HashMap<String, Published>,
    next_publish: Instant,
    last_publish: Instant,
    jitter: u64,
}

/// The judge of one route's canary at one epoch, on the fleet's totals.
struct RouteJudge {
    canary: String,
    epoch: u64,
    judge: Judge,
    /// Totals already fed to `judge`: `[stable, canary]`.
    seen: [Counts; 2],
    /// A breach not yet written (a lost compare-and-swap is retried).
    pending: Option<Breach>,
    /// The fleet's rollout: its step and how long it has been held.
    machine: Machine,
}

/// Why a connection ended.
#[derive(Debug)]
struct Lost(String);

/// Starts the fleet client. Returns at once; the task runs until `shutdown`, then
/// revokes its lease so the fleet sees it leave (and elects another judge) at once.
pub fn spawn(
    config: FleetConfig,
    snapshots: Arc<ArcSwap<Snapshot>>,
    shared: Arc<Shared>,
    handle: Arc<Handle>,
    commands: mpsc::Receiver<CommandRequest>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let boot = boot_id();
    let keys = Keys::new(&config.prefix, &config.name, &config.instance, &boot);
    let meters = shared.telemetry.fleet_meters();
    let now = Instant::now();
    let fleet = Fleet {
        keys,
        snapshots,
        shared,
        handle,
        meters,
        view: View::default(),
        last_ok: Arc::new(AtomicU64::new(0)),
        origin: now,
        lease: None,
        applied: HashMap::new(),
        judges: HashMap::new(),
        published: HashMap::new(),
        next_publish: now,
        last_publish: now,
        jitter: xxhash_rust::xxh3::xxh3_64(boot.as_bytes()),
        config,
    };
    tracing::info!(
        fleet = %fleet.config.name,
        instance = %fleet.config.instance,
        boot = %boot,
        endpoints = ?fleet.config.endpoints,
        "fleet: joining"
    );
    tokio::spawn(fleet.run(commands, shutdown))
}

impl Fleet {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<CommandRequest>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let monitor = tokio::spawn(monitor(
            Arc::clone(&self.shared),
            self.meters.clone(),
            Arc::clone(&self.last_ok),
            self.origin,
            self.config.stale_after,
        ));
        let mut endpoint = 0;
        let mut failures = 0u32;
        let mut client = None;
        loop {
            let url = self.config.endpoints[endpoint % self.config.endpoints.len()].clone();
            let session = self.session(&url, &mut commands, &mut client);
            let lost = tokio::select! {
                lost = session => lost,
                () = &mut shutdown => break,
            };
            let Lost(why) = lost;
            tracing::debug!(endpoint = %url, error = %why, "fleet: connection lost; trying the next endpoint");
            client = None;
            endpoint += 1;
            if endpoint % self.config.endpoints.len() == 0 {
                failures += 1;
                let wait = (BACKOFF.0 * 2u32.saturating_pow(failures.min(5))).min(BACKOFF.1);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = &mut shutdown => break,
                }
            }
            // Answer commands that arrived while no endpoint was reachable.
            while let Ok(request) = commands.try_recv() {
                let _ = request.reply.send(Err(CommandError::Unavailable));
            }
            if self.last_ok_recently() {
                failures = 0;
            }
        }
        monitor.abort();
        if let Some(client) = client.as_mut() {
            // What was counted since the last publication (the drain has ended, so
            // nothing more will be), then leave at once: members and the judge key go
            // with the lease.
            self.next_publish = Instant::now();
            let _ = tokio::time::timeout(CALL_TIMEOUT, self.publish(client, Instant::now())).await;
        }
        if let (Some(lease), Some(client)) = (self.lease, client.as_mut()) {
            let _ =
                tokio::time::timeout(Duration::from_millis(500), client.lease_revoke(lease)).await;
        }
    }

    fn last_ok_recently(&self) -> bool {
        let last = self.last_ok.load(Ordering::Relaxed);
        last > 0 && self.origin.elapsed().as_millis() as u64 - last < 1000
    }

    fn mark_ok(&self) {
        let ms = (self.origin.elapsed().as_millis() as u64).max(1);
        self.last_ok.store(ms, Ordering::Relaxed);
    }

    /// One connection to `url`: lease, list, watch, then serve ticks, watch events,
    /// keep-alives and commands until something fails.
    async fn session(
        &mut self,
        url: &str,
        commands: &mut mpsc::Receiver<CommandRequest>,
        slot: &mut Option<Client>,
    ) -> Lost {
        let mut client = match timed(connect(url, &self.config)).await {
            Ok(client) => client,
            Err(lost) => return lost,
        };
        *slot = Some(client.clone());
        let lease = match self.lease(&mut client).await {
            Ok(lease) => lease,
            Err(lost) => return lost,
        };
        let (mut keeper, mut alive) = match timed(client.lease_keep_alive(lease)).await {
            Ok(pair) => pair,
            Err(lost) => return lost,
        };
        let member = serde_json::json!({"instance": self.keys.instance, "boot": self.keys.boot});
        let put = client.put(
            self.keys.member(),
            member.to_string(),
            Some(PutOptions::new().with_lease(lease)),
        );
        if let Err(lost) = timed(put).await {
            return lost;
        }
        let listed = timed(client.get(
            self.keys.base.clone(),
            Some(GetOptions::new().with_prefix()),
        ))
        .await;
        let listed = match listed {
            Ok(listed) => listed,
            Err(lost) => return lost,
        };
        let mut view = View::default();
        for kv in listed.kvs() {
            if let Ok(key) = kv.key_str() {
                view.apply(&self.keys.base, key, Some(kv.value()), kv.mod_revision());
            }
        }
        view.revision = listed.header().map_or(view.revision, |h| h.revision());
        self.view = view;
        self.mark_ok();
        let start = self.view.revision + 1;
        let watch = client.watch(
            self.keys.base.clone(),
            Some(WatchOptions::new().with_prefix().with_start_revision(start)),
        );
        let mut watch = match timed(watch).await {
            Ok(watch) => watch,
            Err(lost) => return lost,
        };
        tracing::info!(endpoint = %url, revision = self.view.revision, members = self.view.members.len(), "fleet: connected");
        self.on_view_change(Instant::now());

        let keep_alive_every = (self.config.stale_after / 3).min(Duration::from_secs(1));
        let mut keep_alive = tokio::time::interval(keep_alive_every);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = watch.message() => match message {
                    Ok(Some(response)) => {
                        if response.canceled() {
                            return Lost(format!(
                                "watch canceled (compacted at {}): {}",
                                response.compact_revision(),
                                response.cancel_reason()
                            ));
                        }
                        let mut records = false;
                        for event in response.events() {
                            let Some(kv) = event.kv() else { continue };
                            let Ok(key) = kv.key_str() else { continue };
                            let value = match event.event_type() {
                                EventType::Put => Some(kv.value()),
                                EventType::Delete => None,
                            };
                            records |= self.keys.is_record(key);
                            self.view.apply(&self.keys.base, key, value, kv.mod_revision());
                        }
                        if let Some(header) = response.header() {
                            self.view.revision = self.view.revision.max(header.revision());
                        }
                        self.mark_ok();
                        // Counters arrive from every instance up to 10/s each: only a
                        // record is applied at once; the status follows at the tick.
                        if records {
                            self.on_view_change(Instant::now());
                        }
                    }
                    Ok(None) => return Lost("watch closed".into()),
                    Err(err) => return Lost(format!("watch: {err}")),
                },
                answer = alive.message() => match answer {
                    Ok(Some(answer)) if answer.ttl() > 0 => self.mark_ok(),
                    Ok(Some(_)) => {
                        self.lease = None;
                        return Lost("lease expired".into());
                    }
                    Ok(None) => return Lost("keep-alive stream closed".into()),
                    Err(err) => return Lost(format!("keep-alive: {err}")),
                },
                _ = keep_alive.tick() => {
                    if let Err(err) = keeper.keep_alive().await {
                        return Lost(format!("keep-alive: {err}"));
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    if let Err(lost) = self.publish(&mut client, now).await {
                        return lost;
                    }
                    if let Err(lost) = self.campaign(&mut client, lease).await {
                        return lost;
                    }
                    if let Err(lost) = self.judge(&mut client, now).await {
                        return lost;
                    }
                    self.report();
                }
                Some(request) = commands.recv() => {
                    if let Err(lost) = self.command(&mut client, request).await {
                        return lost;
                    }
                }
            }
        }
    }

    /// The lease kept from an earlier connection if etcd still has it, else a new one.
    async fn lease(&mut self, client: &mut Client) -> Result<i64, Lost> {
        if let Some(id) = self.lease {
            if let Ok(Ok(answer)) =
                tokio::time::timeout(CALL_TIMEOUT, client.lease_time_to_live(id, None)).await
            {
                if answer.ttl() > 0 {
                    return Ok(id);
                }
            }
        }
        let ttl = (self.config.stale_after.as_secs() as i64).max(MIN_TTL);
        let granted = timed(client.lease_grant(ttl, None)).await?;
        self.lease = Some(granted.id());
        Ok(granted.id())
    }

    /// Every route's counters in one write, when due (every `publish_interval`,
    /// jittered ±10 %) or nudged by a canary error (at most every `TICK`); skipped when
    /// nothing changed.
    async fn publish(&mut self, client: &mut Client, now: Instant) -> Result<(), Lost> {
        let nudged = self.shared.fleet.take_nudge() && now >= self.last_publish + TICK;
        if now < self.next_publish && !nudged {
            return Ok(());
        }
        let snapshot = self.snapshots.load();
        let mut puts = Vec::new();
        for route in &snapshot.routes {
            let Some(config) = route_config(&snapshot, &route.name) else {
                continue;
            };
            let (epoch, [stable, canary]) = route.runtime.fleet_counts();
            let key = self.keys.counts(&route.name, &canary_id(config), epoch);
            let published = Published { stable, canary };
            if self.published.get(&key) != Some(&published) {
                puts.push((key, published));
            }
        }
        self.last_publish = now;
        self.jitter = self
            .jitter
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1);
        let spread = (self.jitter >> 33) % 201; // 0..=200 → ±10 %
        let interval = self
            .config
            .publish_interval
            .mul_f64(0.9 + spread as f64 / 1000.0);
        self.next_publish = now + interval;
        if puts.is_empty() {
            return Ok(());
        }
        let ops: Vec<TxnOp> = puts
            .iter()
            .map(|(key, published)| {
                let value = serde_json::to_vec(published).unwrap_or_default();
                TxnOp::put(key.clone(), value, None)
            })
            .collect();
        match timed(client.txn(Txn::new().and_then(ops))).await {
            Ok(_) => {
                self.meters.publish_ok.increment(1);
                self.mark_ok();
                self.published.extend(puts);
                Ok(())
            }
            Err(lost) => {
                self.meters.publish_error.increment(1);
                Err(lost)
            }
        }
    }

    /// With no judge in the view, tries to become it: the judge key, created only if
    /// absent, on this instance's lease.
    async fn campaign(&mut self, client: &mut Client, lease: i64) -> Result<(), Lost> {
        if self.view.judge.is_some() {
            return Ok(());
        }
        let key = self.keys.judge();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                self.keys.me(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let answer = timed(client.txn(txn)).await?;
        self.mark_ok();
        if answer.succeeded() {
            tracing::info!(instance = %self.keys.instance, "fleet: elected judge");
        }
        Ok(())
    }

    fn is_judge(&self) -> bool {
        self.view.judge.as_deref() == Some(self.keys.me().as_str())
    }

    /// On the judge: feeds each route's new fleet totals to its judge; a breach is
    /// written to the route's record (create-if-absent, else compare-and-swap).
    async fn judge(&mut self, client: &mut Client, now: Instant) -> Result<(), Lost> {
        if !self.is_judge() {
            self.judges.clear();
            return Ok(());
        }
        let snapshot = self.snapshots.load_full();
        for route in &snapshot.routes {
            let Some(config) = route_config(&snapshot, &route.name) else {
                continue;
            };
            let canary = canary_id(config);
            let record = self.view.record(&route.name, &canary).cloned();
            let epoch = record.as_ref().map_or(0, |(r, _)| r.epoch);
            let state = record.as_ref().map_or(RecordState::Armed, |(r, _)| r.state);
            let step = record.as_ref().and_then(|(r, _)| r.weight_basis_points);
            let judge = self
                .judges
                .entry(route.name.to_string())
                .or_insert_with(|| RouteJudge::new(config, &canary, epoch, step, now));
            if judge.canary != canary || judge.epoch != epoch {
                *judge = RouteJudge::new(config, &canary, epoch, step, now);
            }
            judge.judge.reconfigure(&config.budget, now);
            judge
                .machine
                .reconfigure(config.canary_weight, config.rollout.clone(), now);
            let totals = self.view.totals(&route.name, &canary, epoch);
            let armed = matches!(state, RecordState::Armed | RecordState::Paused);
            let stable = totals[0].since(judge.seen[0]);
            let canary_delta = totals[1].since(judge.seen[1]);
            judge.seen = totals;
            judge.judge.observe_counts(Side::Stable, stable, now, armed);
            if let Some(breach) = judge
                .judge
                .observe_counts(Side::Canary, canary_delta, now, armed)
            {
                judge.pending = Some(breach);
            }
            if !armed {
                judge.pending = None;
                continue;
            }
            let Some(breach) = judge.pending.clone() else {
                if state == RecordState::Armed {
                    let name = route.name.to_string();
                    self.step(client, &name, config, &canary, record.as_ref(), now)
                        .await?;
                }
                continue;
            };
            if !config.budget.enforce {
                // Observe-only: every instance reports its own would-be rollback.
                judge.pending = None;
                continue;
            }
            let current = record.as_ref().map(|(r, _)| r);
            let next = Record {
                seq: current.map_or(0, |r| r.seq) + 1,
                epoch,
                state: RecordState::RolledBack,
                actor: format!("fleet:{}", self.keys.instance),
                instance: self.keys.instance.clone(),
                reason: breach.kind.as_str().to_string(),
                judged_revision: Some(self.view.revision),
                totals: Some(totals),
                canary_version: config.canary_version.clone(),
                weight_basis_points: current.and_then(|r| r.weight_basis_points),
                time: crate::events::timestamp(),
            };
            let key = self.keys.record(&route.name, &canary);
            let revision = record.as_ref().map(|(_, rev)| *rev);
            if write_record(client, &key, revision, &next).await? {
                tracing::warn!(
                    route = %route.name,
                    reason = %next.reason,
                    judged_revision = self.view.revision,
                    canary_requests = totals[1].requests,
                    canary_errors = totals[1].errors,
                    "fleet: canary rolled back on the fleet's totals"
                );
                judge.pending = None;
            }
            self.mark_ok();
        }
        Ok(())
    }

    /// On the judge: advances the fleet's rollout when its step has been held for
    /// `step_interval` and the fleet's verdict allows it (the rule a single instance
    /// uses); the new step goes into the record by compare-and-swap.
    async fn step(
        &mut self,
        client: &mut Client,
        route: &str,
        config: &RouteConfig,
        canary: &str,
        record: Option<&(Record, i64)>,
        now: Instant,
    ) -> Result<(), Lost> {
        let Some(judge) = self.judges.get_mut(route) else {
            return Ok(());
        };
        let verdict = judge.judge.verdict(now);
        let within = step_may_advance(config.budget.mode, verdict, judge.machine.weight());
        let mut trial = judge.machine.clone();
        let (reason, state) = match trial.tick(now, within) {
            Some(Decision::Stepped { .. }) => (
                "advanced: the previous step held within the fleet's budget for step_interval",
                RecordState::Armed,
            ),
            Some(Decision::Promoted { .. }) => (
                "promoted: the last step held within the fleet's budget",
                RecordState::Promoted,
            ),
            _ => return Ok(()),
        };
        let current = record.map(|(r, _)| r);
        let next = Record {
            seq: current.map_or(0, |r| r.seq) + 1,
            epoch: current.map_or(0, |r| r.epoch),
            state,
            actor: format!("fleet:{}", self.keys.instance),
            instance: self.keys.instance.clone(),
            reason: reason.to_string(),
            judged_revision: Some(self.view.revision),
            totals: None,
            canary_version: config.canary_version.clone(),
            weight_basis_points: Some(trial.weight().basis_points()),
            time: crate::events::timestamp(),
        };
        let key = self.keys.record(route, canary);
        let written = write_record(client, &key, record.map(|(_, rev)| *rev), &next).await?;
        self.mark_ok();
        if written {
            tracing::info!(route, weight = %trial.weight(), "fleet: rollout step");
            if let Some(judge) = self.judges.get_mut(route) {
                judge.machine = trial;
            }
        }
        Ok(())
    }

    /// An operator's command: checked against this instance's machine, then written
    /// to the fleet record by compare-and-swap; applied here at once, and everywhere
    /// through the watch.
    async fn command(&mut self, client: &mut Client, request: CommandRequest) -> Result<(), Lost> {
        let CommandRequest {
            route,
            command,
            operator,
            reply,
        } = request;
        let snapshot = self.snapshots.load_full();
        let Some(config) = route_config(&snapshot, &route) else {
            let _ = reply.send(Err(CommandError::NoRoute(route)));
            return Ok(());
        };
        let canary = canary_id(config);
        let key = self.keys.record(&route, &canary);
        // Read it fresh: the view may trail a concurrent writer.
        let answer = timed(client.get(key.clone(), None)).await?;
        self.mark_ok();
        let current = answer.kvs().first().and_then(|kv| {
            serde_json::from_slice::<Record>(kv.value())
                .ok()
                .map(|r| (r, kv.mod_revision()))
        });
        let next = next_record(
            current.as_ref().map(|(r, _)| r),
            command,
            &operator.name,
            &self.keys.instance,
            operator
                .reason
                .clone()
                .unwrap_or_else(|| "operator".to_string()),
            crate::events::timestamp(),
        )
        .map(|mut next| {
            next.canary_version = config.canary_version.clone();
            next
        });
        let next = match next {
            Ok(next) => next,
            Err(err) => {
                let _ = reply.send(Err(err));
                return Ok(());
            }
        };
        let written =
            write_record(client, &key, current.as_ref().map(|(_, rev)| *rev), &next).await?;
        if !written {
            let _ = reply.send(Err(CommandError::Conflict(
                "another decision about this canary landed first; read the route's state and retry"
                    .into(),
            )));
            return Ok(());
        }
        tracing::info!(route = %route, state = next.state.as_str(), actor = %next.actor, seq = next.seq, "fleet: operator's command written");
        let _ = reply.send(Ok(next));
        Ok(())
    }

    /// Applies every route's fleet record to this instance (new ones only) and
    /// refreshes the status the admin API shows.
    fn on_view_change(&mut self, now: Instant) {
        let snapshot = self.snapshots.load_full();
        for route in &snapshot.routes {
            let Some(config) = route_config(&snapshot, &route.name) else {
                continue;
            };
            let canary = canary_id(config);
            let Some((record, _)) = self.view.record(&route.name, &canary) else {
                continue;
            };
            let applied = self.applied.get(&*route.name).copied();
            if applied.is_some_and(|seq| seq >= record.seq) {
                continue;
            }
            // First sight of an armed record: only its epoch (a rollback this instance
            // made alone, restored from disk, waits for an operator).
            let command = match (applied, record.state) {
                (None, RecordState::Armed) => None,
                (_, state) => Some(state.command()),
            };
            let operator = Operator {
                name: record.actor.clone(),
                reason: Some(record.reason.clone()),
                details: record.event_details(),
                fleet: true,
                breach: BreachKind::parse(&record.reason),
            };
            match route
                .runtime
                .fleet_apply(command, record.epoch, &operator, now)
            {
                Ok(_) => {}
                Err(conflict) => {
                    tracing::debug!(route = %route.name, %conflict, "fleet: record not applicable here")
                }
            }
            if let (RecordState::Armed, Some(step)) = (record.state, record.weight_basis_points) {
                if let Some(weight) = Weight::from_basis_points(step) {
                    route.runtime.fleet_step(weight, &operator, now);
                }
            }
            self.applied.insert(route.name.to_string(), record.seq);
        }
        self.report();
    }

    /// Publishes the fleet fields of every route for the admin API.
    fn report(&self) {
        let snapshot = self.snapshots.load();
        let connected = self.shared.fleet.judges();
        let judge = self.view.judge.as_deref().map(|id| {
            id.split_once('/')
                .map_or(id, |(instance, _)| instance)
                .to_string()
        });
        let mut status = BTreeMap::new();
        for route in &snapshot.routes {
            let Some(config) = route_config(&snapshot, &route.name) else {
                continue;
            };
            let canary = canary_id(config);
            let record = self.view.record(&route.name, &canary);
            let epoch = record.map_or(0, |(r, _)| r.epoch);
            let [s, c] = self.view.totals(&route.name, &canary, epoch);
            status.insert(
                route.name.to_string(),
                RouteFleetStatus {
                    name: self.config.name.clone(),
                    connected,
                    members: self.view.members.len(),
                    judge: judge.clone(),
                    totals: Totals {
                        stable: SideTotals {
                            requests: s.requests,
                            errors: s.errors,
                        },
                        canary: SideTotals {
                            requests: c.requests,
                            errors: c.errors,
                        },
                    },
                    epoch,
                    seq: record.map_or(0, |(r, _)| r.seq),
                    revision: self.view.revision,
                },
            );
        }
        self.handle.set_status(status);
        self.meters.members.set(self.view.members.len() as f64);
        self.meters
            .is_judge
            .set(if self.is_judge() { 1.0 } else { 0.0 });
    }
}

impl RouteJudge {
    /// The judge of a canary at `epoch`, its rollout at the record's `step` (basis
    /// points; `None`: the configured weight), held from `now`.
    fn new(
        config: &RouteConfig,
        canary: &str,
        epoch: u64,
        step: Option<u16>,
        now: Instant,
    ) -> RouteJudge {
        let mut machine = Machine::new(config.canary_weight, config.rollout.clone(), now);
        if let Some(weight) = step.and_then(Weight::from_basis_points) {
            machine.step_to(weight, now);
        }
        RouteJudge {
            canary: canary.to_string(),
            epoch,
            judge: Judge::new(&config.budget, now),
            seen: [Counts::default(); 2],
            pending: None,
            machine,
        }
    }
}

/// The staleness clock: every `TICK`, switches the runtimes between fleet and local
/// judgement and updates the gauges; one log line per switch.
async fn monitor(
    shared: Arc<Shared>,
    meters: FleetMeters,
    last_ok: Arc<AtomicU64>,
    origin: Instant,
    stale_after: Duration,
) {
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        let last = last_ok.load(Ordering::Relaxed);
        let now_ms = origin.elapsed().as_millis() as u64;
        let age = if last == 0 {
            None
        } else {
            Some(Duration::from_millis(now_ms.saturating_sub(last)))
        };
        let fresh = age.is_some_and(|age| age <= stale_after);
        let was = shared.fleet.set_fresh(fresh);
        meters.connected.set(if fresh { 1.0 } else { 0.0 });
        meters
            .view_age
            .set(age.map_or(f64::NAN, |age| age.as_secs_f64()));
        if was && !fresh {
            meters.fallbacks.increment(1);
            tracing::warn!(
                stale_after = ?stale_after,
                "fleet: no etcd round trip within stale_after; judging locally (this instance only)"
            );
        } else if fresh && !was {
            tracing::info!("fleet: etcd reachable; the fleet judges");
        }
    }
}

/// Writes `record` at `key` if it is still at `revision` (`None`: absent). True when
/// written; false when another writer got there first.
async fn write_record(
    client: &mut Client,
    key: &str,
    revision: Option<i64>,
    record: &Record,
) -> Result<bool, Lost> {
    let compare = match revision {
        Some(revision) => Compare::mod_revision(key, CompareOp::Equal, revision),
        None => Compare::create_revision(key, CompareOp::Equal, 0),
    };
    let value = serde_json::to_vec(record).unwrap_or_default();
    let txn = Txn::new()
        .when([compare])
        .and_then([TxnOp::put(key, value, None)]);
    Ok(timed(client.txn(txn)).await?.succeeded())
}

async fn connect(url: &str, config: &FleetConfig) -> Result<Client, etcd_client::Error> {
    let mut options = ConnectOptions::new()
        .with_require_leader(true)
        .with_connect_timeout(CALL_TIMEOUT)
        // etcd answers a keep-alive under 5 s with GOAWAY (too_many_pings).
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(3))
        .with_keep_alive_while_idle(true);
    if let Some(tls) = &config.tls {
        let mut tls_options = TlsOptions::new();
        if let Some(ca) = &tls.ca_file {
            let pem = tokio::fs::read(ca)
                .await
                .map_err(etcd_client::Error::IoError)?;
            tls_options = tls_options.ca_certificate(Certificate::from_pem(pem));
        }
        if let Some((cert, key)) = &tls.cert {
            let cert = tokio::fs::read(cert)
                .await
                .map_err(etcd_client::Error::IoError)?;
            let key = tokio::fs::read(key)
                .await
                .map_err(etcd_client::Error::IoError)?;
            tls_options = tls_options.identity(Identity::from_pem(cert, key));
        }
        options = options.with_tls(tls_options);
    }
    Client::connect([url], Some(options)).await
}

/// A call bounded by `CALL_TIMEOUT`; any failure ends the connection.
async fn timed<T>(call: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, Lost> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(Lost(err.to_string())),
        Err(_) => Err(Lost(format!("no answer within {CALL_TIMEOUT:?}"))),
    }
}

fn route_config<'a>(snapshot: &'a Snapshot, name: &str) -> Option<&'a RouteConfig> {
    snapshot.config.routes.iter().find(|r| r.name == name)
}

/// A new id per start: 8 random bytes, hex.
fn boot_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes = (nanos ^ u64::from(std::process::id())).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
