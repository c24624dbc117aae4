//! One publisher of config generations. Generation 1 at start and every reload go
//! through `Publisher::publish`: build a candidate snapshot (the live one untouched),
//! apply the new config to the runtimes it takes over, swap it in, then point the
//! webhook notifier at the new snapshot's webhook. Nothing else stores a snapshot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::time::Instant;

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::notify::Target;
use crate::rollout::Shared;
use crate::snapshot::Snapshot;

/// Holds the live snapshot and publishes new generations.
#[derive(Debug)]
pub struct Publisher {
    snapshots: Arc<ArcSwap<Snapshot>>,
    shared: Arc<Shared>,
    /// The notifier's view of the live snapshot's webhook (it starts before the
    /// first snapshot: events need it).
    webhook: Arc<ArcSwapOption<Target>>,
    generation: AtomicU64,
}

impl Publisher {
    /// Publishes generation 1 of `config`, writing its access log to `access`.
    pub fn start(
        config: Config,
        shared: Arc<Shared>,
        webhook: Arc<ArcSwapOption<Target>>,
        access: Option<Arc<AccessLog>>,
        now: Instant,
    ) -> Arc<Publisher> {
        let snapshot = Snapshot::candidate(config, 1, None, &shared, now)
            .with_access_log(access)
            .apply(now);
        webhook.store(snapshot.webhook.clone());
        Arc::new(Publisher {
            snapshots: Arc::new(ArcSwap::from_pointee(snapshot)),
            shared,
            webhook,
            generation: AtomicU64::new(1),
        })
    }

    /// Publishes `config` as the next generation (built from the live one: runtimes of
    /// unchanged canaries carry on) and returns its number.
    pub fn publish(&self, config: Config, access: Option<Arc<AccessLog>>, now: Instant) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let current = self.snapshots.load_full();
        let snapshot = Snapshot::candidate(config, generation, Some(&current), &self.shared, now)
            .with_access_log(access)
            .apply(now);
        let webhook = snapshot.webhook.clone();
        self.snapshots.store(Arc::new(snapshot));
        self.webhook.store(webhook);
        generation
    }

    /// The live snapshot's holder (requests and the admin API read it).
    pub fn snapshots(&self) -> &Arc<ArcSwap<Snapshot>> {
        &self.snapshots
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}
