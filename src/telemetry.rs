//! Metrics: names, descriptions, histogram buckets, and handles resolved once.
//!
//! Each `App` owns its own Prometheus recorder (no global), so several proxies in one
//! process (tests) do not mix their numbers. Handles are registered when a route's
//! runtime is created; the request path only calls `increment` / `record` on them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

pub const REQUESTS_TOTAL: &str = "canary_proxy_requests_total";
pub const REQUEST_DURATION: &str = "canary_proxy_request_duration_seconds";
pub const UPSTREAM_ERRORS_TOTAL: &str = "canary_proxy_upstream_errors_total";
pub const CANARY_WEIGHT_RATIO: &str = "canary_proxy_canary_weight_ratio";
pub const CANARY_CONFIGURED_WEIGHT_RATIO: &str = "canary_proxy_canary_configured_weight_ratio";
pub const ROLLBACKS_TOTAL: &str = "canary_proxy_rollbacks_total";
pub const CANARY_STATE: &str = "canary_proxy_canary_state";
pub const CONFIG_RELOADS_TOTAL: &str = "canary_proxy_config_reloads_total";
pub const CONFIG_LAST_RELOAD_SUCCESS: &str =
    "canary_proxy_config_last_reload_success_timestamp_seconds";
pub const OPEN_CONNECTIONS: &str = "canary_proxy_open_connections";
pub const PARKED_CONNECTIONS: &str = "canary_proxy_parked_connections";
pub const BUILD_INFO: &str = "canary_proxy_build_info";
pub const WOULD_ROLLBACK_TOTAL: &str = "canary_proxy_would_rollback_total";
pub const RESPONSES_TOTAL: &str = "canary_proxy_responses_total";
pub const STATE_WRITE_FAILURES_TOTAL: &str = "canary_proxy_state_write_failures_total";
pub const SEQUENTIAL_EVIDENCE: &str = "canary_proxy_sequential_evidence";
pub const SEQUENTIAL_EVIDENCE_BOUND: &str = "canary_proxy_sequential_evidence_bound";
pub const CANARY_VERDICT: &str = "canary_proxy_canary_verdict";
pub const SHIELDED_TOTAL: &str = "canary_proxy_shielded_total";
pub const RETRIES_TOTAL: &str = "canary_proxy_retries_total";
pub const RETRY_BUDGET_EXHAUSTED_TOTAL: &str = "canary_proxy_retry_budget_exhausted_total";
pub const ENDPOINT_EJECTIONS_TOTAL: &str = "canary_proxy_endpoint_ejections_total";
pub const ACCESS_LOG_DROPPED_TOTAL: &str = "canary_proxy_access_log_dropped_total";
pub const WEBHOOK_DELIVERIES_TOTAL: &str = "canary_proxy_webhook_deliveries_total";
pub const WEBHOOK_DROPPED_TOTAL: &str = "canary_proxy_webhook_dropped_total";
pub const FLEET_CONNECTED: &str = "canary_proxy_fleet_connected";
pub const FLEET_MEMBERS: &str = "canary_proxy_fleet_members";
pub const FLEET_IS_JUDGE: &str = "canary_proxy_fleet_is_judge";
pub const FLEET_VIEW_AGE: &str = "canary_proxy_fleet_view_age_seconds";
pub const FLEET_PUBLISH_TOTAL: &str = "canary_proxy_fleet_publish_total";
pub const FLEET_FALLBACKS_TOTAL: &str = "canary_proxy_fleet_fallbacks_total";

/// Upper bounds of `request_duration_seconds`, in seconds. From sub-millisecond (a
/// sidecar hop on loopback) to 30 s (the default `request_timeout`), roughly ×2–2.5
/// apart so a p99 can be read within a factor of about two anywhere in that range.
pub const REQUEST_DURATION_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
    30.0,
];

/// `class` label of `requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Informational,
    Success,
    Redirect,
    ClientError,
    ServerError,
    /// No response from the upstream (connect failure, timeout, reset, protocol).
    Error,
}

/// `kind` label of `upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Connect,
    Timeout,
    Reset,
    Protocol,
    /// A status listed in `error_statuses`.
    Status,
    /// A failing `grpc-status`.
    Grpc,
}

/// `reason` label of `retries_total` (SPEC §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// The upstream closed a reused keep-alive connection before answering.
    KeepaliveRace,
    /// A failed canary attempt sent again to stable (`[route.shield]`).
    Shield,
    /// A connection that could not be made, tried on another endpoint of the side.
    Connect,
}

/// The webhook notifier's handles (SPEC §9): POST attempts by result, and events given
/// up by reason. Cheap to clone (each handle is an `Arc`).
#[derive(Debug, Clone)]
pub struct WebhookMeters {
    /// `webhook_deliveries_total{result="success"}`: a POST answered 2xx.
    pub success: Counter,
    /// `webhook_deliveries_total{result="failure"}`: a POST that failed (error,
    /// timeout, non-2xx); each retry counts again.
    pub failure: Counter,
    /// `webhook_dropped_total{reason="queue_full"}`: the queue of pending events was full.
    pub queue_full: Counter,
    /// `webhook_dropped_total{reason="retries_exhausted"}`: every attempt failed.
    pub retries_exhausted: Counter,
}

/// The fleet client's handles (SPEC §10). Registered only with `[fleet]`.
#[derive(Debug, Clone)]
pub struct FleetMeters {
    /// `fleet_connected`: 1 while the last etcd round trip is within `stale_after`.
    pub connected: Gauge,
    /// `fleet_members`: instances with a live liveness key.
    pub members: Gauge,
    /// `fleet_is_judge`: 1 on the instance that judges the fleet.
    pub is_judge: Gauge,
    /// `fleet_view_age_seconds`: since the last etcd round trip.
    pub view_age: Gauge,
    /// `fleet_publish_total{result="ok"}`: counter writes that landed.
    pub publish_ok: Counter,
    /// `fleet_publish_total{result="error"}`: counter writes that failed.
    pub publish_error: Counter,
    /// `fleet_fallbacks_total`: switches from fleet to local judgement (view stale).
    pub fallbacks: Counter,
}

/// Rollback reasons (`reason` label of `rollbacks_total`).
/// `reason` label of `rollbacks_total`: a closed set, so every series is registered
/// up front and a new reason cannot be counted nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackReason {
    ErrorRate,
    ErrorRateVsStable,
    P99Latency,
    SequentialErrorRate,
    SequentialLatency,
    Manual,
}

// === impl RollbackReason ===

impl RollbackReason {
    pub const ALL: [RollbackReason; 6] = [
        RollbackReason::ErrorRate,
        RollbackReason::ErrorRateVsStable,
        RollbackReason::P99Latency,
        RollbackReason::SequentialErrorRate,
        RollbackReason::SequentialLatency,
        RollbackReason::Manual,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RollbackReason::ErrorRate => "error_rate",
            RollbackReason::ErrorRateVsStable => "error_rate_vs_stable",
            RollbackReason::P99Latency => "p99_latency",
            RollbackReason::SequentialErrorRate => "sequential_error_rate",
            RollbackReason::SequentialLatency => "sequential_latency",
            RollbackReason::Manual => "manual",
        }
    }
}

/// The process's metrics.
#[derive(Debug)]
pub struct Telemetry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    pub reloads_success: Counter,
    pub reloads_failure: Counter,
    /// Decisions that could not be written to `[state] dir`.
    pub state_write_failures: Counter,
    pub last_reload_success: Gauge,
    open_connections_gauge: Gauge,
    /// Maintained by the listener; copied into the gauge at scrape time.
    pub open_connections: Arc<AtomicUsize>,
    parked_connections_gauge: Gauge,
    /// Idle HTTP/1.1 connections holding no buffers (`proxy::deadline`); maintained by
    /// the listener, copied into the gauge at scrape time.
    pub parked_connections: Arc<AtomicUsize>,
    /// `access_log_dropped_total`: access log lines lost (the writer fell behind, or a
    /// write failed).
    pub access_log_dropped: Counter,
}

/// `verdict` label of `canary_verdict`.
pub const VERDICTS: [&str; 3] = ["healthy", "undecided", "failing"];

static METADATA: Metadata<'static> =
    Metadata::new("canary_proxy", metrics::Level::INFO, Some("canary_proxy"));

// === impl Telemetry ===

impl Telemetry {
    pub fn new() -> Arc<Telemetry> {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(REQUEST_DURATION.to_string()),
                &REQUEST_DURATION_BUCKETS,
            )
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        describe(&recorder);
        let counter = |name: &'static str, labels: Vec<Label>| {
            recorder.register_counter(&Key::from_parts(name, labels), &METADATA)
        };
        let reloads_success = counter(CONFIG_RELOADS_TOTAL, vec![Label::new("result", "success")]);
        let reloads_failure = counter(CONFIG_RELOADS_TOTAL, vec![Label::new("result", "failure")]);
        let state_write_failures = counter(STATE_WRITE_FAILURES_TOTAL, vec![]);
        let last_reload_success =
            recorder.register_gauge(&Key::from_name(CONFIG_LAST_RELOAD_SUCCESS), &METADATA);
        let open_connections_gauge =
            recorder.register_gauge(&Key::from_name(OPEN_CONNECTIONS), &METADATA);
        let parked_connections_gauge =
            recorder.register_gauge(&Key::from_name(PARKED_CONNECTIONS), &METADATA);
        let access_log_dropped = counter(ACCESS_LOG_DROPPED_TOTAL, vec![]);
        recorder
            .register_gauge(
                &Key::from_parts(
                    BUILD_INFO,
                    vec![Label::new("version", env!("CARGO_PKG_VERSION"))],
                ),
                &METADATA,
            )
            .set(1.0);
        Arc::new(Telemetry {
            recorder,
            handle,
            reloads_success,
            reloads_failure,
            state_write_failures,
            last_reload_success,
            open_connections_gauge,
            open_connections: Arc::new(AtomicUsize::new(0)),
            parked_connections_gauge,
            parked_connections: Arc::new(AtomicUsize::new(0)),
            access_log_dropped,
        })
    }

    /// A counter of `route` (label `route`, then `extra`), registered now so it shows
    /// as 0 before its first increment. For the per-route bundles of the judgement
    /// (`rollout::meters`) and the data path (`routing::meters`).
    pub fn route_counter(
        &self,
        name: &'static str,
        route: &str,
        extra: &[(&'static str, &'static str)],
    ) -> Counter {
        self.recorder
            .register_counter(&route_key(name, route, extra), &METADATA)
    }

    /// A gauge of `route` (see `route_counter`).
    pub fn route_gauge(
        &self,
        name: &'static str,
        route: &str,
        extra: &[(&'static str, &'static str)],
    ) -> Gauge {
        self.recorder
            .register_gauge(&route_key(name, route, extra), &METADATA)
    }

    /// A histogram of `route` (see `route_counter`); buckets per `REQUEST_DURATION_BUCKETS`
    /// for `REQUEST_DURATION`.
    pub fn route_histogram(
        &self,
        name: &'static str,
        route: &str,
        extra: &[(&'static str, &'static str)],
    ) -> Histogram {
        self.recorder
            .register_histogram(&route_key(name, route, extra), &METADATA)
    }

    /// The webhook notifier's handles.
    pub fn webhook_meters(&self) -> WebhookMeters {
        let counter = |name: &'static str, label: &'static str, value: &'static str| {
            self.recorder.register_counter(
                &Key::from_parts(name, vec![Label::new(label, value)]),
                &METADATA,
            )
        };
        WebhookMeters {
            success: counter(WEBHOOK_DELIVERIES_TOTAL, "result", "success"),
            failure: counter(WEBHOOK_DELIVERIES_TOTAL, "result", "failure"),
            queue_full: counter(WEBHOOK_DROPPED_TOTAL, "reason", "queue_full"),
            retries_exhausted: counter(WEBHOOK_DROPPED_TOTAL, "reason", "retries_exhausted"),
        }
    }

    /// The fleet client's handles (`[fleet]` only, so a single instance shows none).
    pub fn fleet_meters(&self) -> FleetMeters {
        let gauge = |name: &'static str| {
            self.recorder
                .register_gauge(&Key::from_name(name), &METADATA)
        };
        let counter = |name: &'static str, labels: Vec<Label>| {
            self.recorder
                .register_counter(&Key::from_parts(name, labels), &METADATA)
        };
        FleetMeters {
            connected: gauge(FLEET_CONNECTED),
            members: gauge(FLEET_MEMBERS),
            is_judge: gauge(FLEET_IS_JUDGE),
            view_age: gauge(FLEET_VIEW_AGE),
            publish_ok: counter(FLEET_PUBLISH_TOTAL, vec![Label::new("result", "ok")]),
            publish_error: counter(FLEET_PUBLISH_TOTAL, vec![Label::new("result", "error")]),
            fallbacks: counter(FLEET_FALLBACKS_TOTAL, vec![]),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.open_connections_gauge
            .set(self.open_connections.load(Ordering::Relaxed) as f64);
        self.parked_connections_gauge
            .set(self.parked_connections.load(Ordering::Relaxed) as f64);
        let mut text = sorted_exposition(&self.handle.render());
        text.push_str(&process_metrics());
        text
    }

    /// Drains histogram buffers; run on a timer so memory stays bounded between scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

fn route_key(name: &'static str, route: &str, extra: &[(&'static str, &'static str)]) -> Key {
    let mut labels = vec![Label::new("route", SharedString::from(route.to_string()))];
    labels.extend(extra.iter().map(|&(k, v)| Label::new(k, v)));
    Key::from_parts(name, labels)
}

/// The `upstream` label's values, by side index (0 = stable, 1 = canary).
pub const UPSTREAMS: [&str; 2] = ["stable", "canary"];

/// The exporter's text in a stable order (the exporter's is a hash map's, different at
/// every scrape): families sorted by name, each family's series by their label sets,
/// a histogram's buckets kept in `le` order.
fn sorted_exposition(text: &str) -> String {
    // (family name, comment lines, series lines)
    let mut families: Vec<(&str, Vec<&str>, Vec<&str>)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
        {
            let name = rest.split_whitespace().next().unwrap_or("");
            match families.last_mut() {
                Some((current, comments, series)) if *current == name && series.is_empty() => {
                    comments.push(line)
                }
                _ => families.push((name, vec![line], Vec::new())),
            }
            continue;
        }
        match families.last_mut() {
            Some((_, _, series)) => series.push(line),
            None => families.push(("", Vec::new(), vec![line])),
        }
    }
    families.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = String::with_capacity(text.len());
    for (_, comments, mut series) in families {
        // Stable: buckets keep their order within one label set.
        series.sort_by_key(|line| series_key(line));
        for line in comments.into_iter().chain(series) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `name{labels}` of a series line with any `le="…"` label removed; the suffixes
/// `_bucket`, `_sum` and `_count` sort after one another per label set.
fn series_key(line: &str) -> (String, u8) {
    let series = line
        .rsplit_once(' ')
        .map_or(line, |(series, _value)| series);
    let (name, labels) = series.split_once('{').unwrap_or((series, ""));
    let (base, rank) = if let Some(base) = name.strip_suffix("_bucket") {
        (base, 0)
    } else if let Some(base) = name.strip_suffix("_sum") {
        (base, 1)
    } else if let Some(base) = name.strip_suffix("_count") {
        (base, 2)
    } else {
        (name, 0)
    };
    let labels: Vec<&str> = labels
        .trim_end_matches('}')
        .split(',')
        .filter(|l| !l.starts_with("le="))
        .collect();
    (format!("{base}{{{}}}", labels.join(",")), rank)
}

/// The standard `process_*` metrics (Prometheus client conventions), read from /proc
/// at scrape time: CPU seconds, resident memory, open and maximum file descriptors,
/// start time. Empty where /proc is not there.
fn process_metrics() -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    // Clock ticks and page size as Linux sets them on every platform we build for.
    const TICKS_PER_SECOND: f64 = 100.0;
    const PAGE_SIZE: f64 = 4096.0;
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the parenthesised command name, which may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
        // utime and stime are fields 14 and 15 of stat(5), i.e. 11 and 12 after `)`.
        if let (Some(user), Some(system)) = (field(11), field(12)) {
            metric(
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                (user + system) / TICKS_PER_SECOND,
            );
        }
        // rss is field 24 (21 after `)`), in pages.
        if let Some(pages) = field(21) {
            metric(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                pages * PAGE_SIZE,
            );
        }
        // starttime is field 22 (19 after `)`), in ticks since boot.
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
        if let (Some(start), Some(boot)) = (field(19), boot) {
            metric(
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                boot + start / TICKS_PER_SECOND,
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        metric(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds.count() as f64,
        );
    }
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<f64>().ok())
        });
    if let Some(max) = max_fds {
        metric(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        );
    }
    out
}

fn describe(recorder: &PrometheusRecorder) {
    let c = |name: &'static str, unit: Option<Unit>, help: &'static str| {
        recorder.describe_counter(KeyName::from(name), unit, help.into())
    };
    let g = |name: &'static str, unit: Option<Unit>, help: &'static str| {
        recorder.describe_gauge(KeyName::from(name), unit, help.into())
    };
    c(REQUESTS_TOTAL, None, "Upstream attempts, by route, upstream side (stable|canary) and response class (1xx|2xx|3xx|4xx|5xx|error; 1xx = an upgrade, e.g. WebSocket).");
    recorder.describe_histogram(
        KeyName::from(REQUEST_DURATION),
        Some(Unit::Seconds),
        "Time from sending a request upstream to the response head, by route and upstream side."
            .into(),
    );
    c(UPSTREAM_ERRORS_TOTAL, None, "Upstream outcomes counted against the error budget, by kind (connect|timeout|reset|protocol|status|grpc).");
    g(
        CANARY_WEIGHT_RATIO,
        None,
        "Share of sticky keys the canary gets right now (0 after a rollback), 0..1.",
    );
    g(
        CANARY_CONFIGURED_WEIGHT_RATIO,
        None,
        "canary_weight from the config, 0..1.",
    );
    c(
        ROLLBACKS_TOTAL,
        None,
        "Canary rollbacks, by reason (error_rate|error_rate_vs_stable|p99_latency|sequential_error_rate|sequential_latency|manual).",
    );
    g(CANARY_STATE, None, "1 for the route's current canary state (steady|rolling_out|paused|rolled_back|promoted), 0 otherwise.");
    c(
        CONFIG_RELOADS_TOTAL,
        None,
        "Config reloads by result (success|failure).",
    );
    g(
        CONFIG_LAST_RELOAD_SUCCESS,
        Some(Unit::Seconds),
        "Unix time of the last successful config load.",
    );
    g(OPEN_CONNECTIONS, None, "Open downstream connections.");
    g(
        PARKED_CONNECTIONS,
        None,
        "Idle HTTP/1.1 downstream connections parked without buffers until their next request.",
    );
    g(
        BUILD_INFO,
        None,
        "Always 1; the version label says which build runs.",
    );
    c(
        WOULD_ROLLBACK_TOTAL,
        None,
        "Budget breaches seen while enforce = false (observe-only).",
    );
    g(SEQUENTIAL_EVIDENCE, None, "The sequential test's log-likelihood ratio (sequential mode), by route and test (errors|latency): rolled back at the upper bound, healthy at the lower.");
    g(
        SEQUENTIAL_EVIDENCE_BOUND,
        None,
        "The sequential test's decision bounds, by route and bound (upper|lower).",
    );
    g(
        CANARY_VERDICT,
        None,
        "1 for the route's current verdict (healthy|undecided|failing), 0 otherwise.",
    );
    c(STATE_WRITE_FAILURES_TOTAL, None, "Decisions that could not be written to [state] dir (they hold in memory but would not survive a restart).");
    c(RESPONSES_TOTAL, None, "Responses clients received, by route and class (1xx|2xx|3xx|4xx|5xx|error), proxy-made ones included; requests_total counts upstream attempts.");
    c(
        SHIELDED_TOTAL,
        None,
        "Failed canary attempts whose client got stable's answer instead ([route.shield]).",
    );
    c(RETRIES_TOTAL, None, "Attempts sent again, by route, the side that got the retry and reason (keepalive_race|shield|connect).");
    c(
        RETRY_BUDGET_EXHAUSTED_TOTAL,
        None,
        "Shield retries refused because the route's retry budget was spent.",
    );
    c(ENDPOINT_EJECTIONS_TOTAL, None, "Endpoints taken out of rotation after consecutive connect failures or resets, by route and side.");
    c(ACCESS_LOG_DROPPED_TOTAL, None, "Access log lines lost: the writer fell behind (its queue of 8192 lines was full) or a write failed.");
    c(
        WEBHOOK_DELIVERIES_TOTAL,
        None,
        "Webhook POST attempts by result (success|failure); each retry counts.",
    );
    c(
        WEBHOOK_DROPPED_TOTAL,
        None,
        "Events the webhook never received, by reason (queue_full|retries_exhausted).",
    );
    g(FLEET_CONNECTED, None, "1 while this instance's last etcd round trip is within [fleet] stale_after (fleet judgement), 0 while it judges locally.");
    g(
        FLEET_MEMBERS,
        None,
        "Fleet instances with a live liveness key in etcd.",
    );
    g(
        FLEET_IS_JUDGE,
        None,
        "1 on the instance elected to judge the fleet.",
    );
    g(
        FLEET_VIEW_AGE,
        Some(Unit::Seconds),
        "Time since this instance's last etcd round trip.",
    );
    c(
        FLEET_PUBLISH_TOTAL,
        None,
        "Counter publications to etcd, by result (ok|error).",
    );
    c(
        FLEET_FALLBACKS_TOTAL,
        None,
        "Switches from fleet to local judgement because etcd was out of reach for stale_after.",
    );
}

// === impl RetryReason ===

impl RetryReason {
    pub const ALL: [RetryReason; 3] = [
        RetryReason::KeepaliveRace,
        RetryReason::Shield,
        RetryReason::Connect,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::KeepaliveRace => "keepalive_race",
            RetryReason::Shield => "shield",
            RetryReason::Connect => "connect",
        }
    }
}

// === impl Class ===

impl Class {
    pub const ALL: [Class; 6] = [
        Class::Informational,
        Class::Success,
        Class::Redirect,
        Class::ClientError,
        Class::ServerError,
        Class::Error,
    ];

    pub fn of(status: http::StatusCode) -> Class {
        match status.as_u16() / 100 {
            1 => Class::Informational,
            2 => Class::Success,
            3 => Class::Redirect,
            4 => Class::ClientError,
            _ => Class::ServerError,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Informational => "1xx",
            Class::Success => "2xx",
            Class::Redirect => "3xx",
            Class::ClientError => "4xx",
            Class::ServerError => "5xx",
            Class::Error => "error",
        }
    }
}

// === impl ErrorKind ===

impl ErrorKind {
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Reset,
        ErrorKind::Protocol,
        ErrorKind::Status,
        ErrorKind::Grpc,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Status => "status",
            ErrorKind::Grpc => "grpc",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_sorted_within_a_family_and_buckets_keep_their_order() {
        let text = "# HELP a_total x\n# TYPE a_total counter\na_total{route=\"b\"} 2\na_total{route=\"a\"} 1\n# TYPE h histogram\nh_bucket{route=\"z\",le=\"0.5\"} 1\nh_bucket{route=\"z\",le=\"10\"} 2\nh_bucket{route=\"z\",le=\"+Inf\"} 3\nh_sum{route=\"z\"} 4\nh_count{route=\"z\"} 3\nh_bucket{route=\"a\",le=\"0.5\"} 0\nh_bucket{route=\"a\",le=\"10\"} 0\nh_bucket{route=\"a\",le=\"+Inf\"} 0\nh_sum{route=\"a\"} 0\nh_count{route=\"a\"} 0\n";
        let sorted = sorted_exposition(text);
        let lines: Vec<&str> = sorted.lines().collect();
        assert_eq!(lines[2], "a_total{route=\"a\"} 1");
        assert_eq!(lines[3], "a_total{route=\"b\"} 2");
        assert_eq!(
            &lines[5..10],
            [
                "h_bucket{route=\"a\",le=\"0.5\"} 0",
                "h_bucket{route=\"a\",le=\"10\"} 0",
                "h_bucket{route=\"a\",le=\"+Inf\"} 0",
                "h_sum{route=\"a\"} 0",
                "h_count{route=\"a\"} 0",
            ]
        );
        assert_eq!(lines[10], "h_bucket{route=\"z\",le=\"0.5\"} 1");
        assert_eq!(sorted_exposition(&sorted), sorted, "idempotent");
    }

    #[test]
    fn rollback_reasons_index_their_counters_and_are_distinct() {
        for (i, reason) in RollbackReason::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, i, "{reason:?}");
        }
        let mut names: Vec<_> = RollbackReason::ALL.map(RollbackReason::as_str).to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RollbackReason::ALL.len());
    }

    #[test]
    fn process_metrics_are_read_from_proc() {
        let text = process_metrics();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            let value = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing in {text}"));
            assert!(value.parse::<f64>().unwrap() >= 0.0, "{name} {value}");
        }
    }
}
