//! The access log (SPEC §12, `[log] access`): one JSON object per request, written off
//! the request path.
//!
//! # What a request costs
//!
//! - **Off** (no `[log] access`, no `side_header`): the snapshot's `log` is `None`, and
//!   the request path checks that one `Option`. Nothing is allocated or formatted.
//! - **On**: the request path fills one boxed [`Entry`] with copies of what it already
//!   holds (refcounted request id, route name, URI, endpoint) and two clock reads. The
//!   entry rides with the response body, which counts the bytes it passes on; when the
//!   body ends (or the client goes away) the entry is handed to a bounded channel with
//!   `try_send`, which never waits. A writer thread formats the lines as JSON and writes
//!   them in batches: one `write(2)` per batch, whatever the request rate.
//! - A full channel (the destination is slower than the traffic) drops the line and
//!   counts `canary_proxy_access_log_dropped_total`; so does a failed write (logged as
//!   a warning once per run of failures). The data path never waits for the log.
//!
//! # Lifetime
//!
//! The snapshot holds an `Arc<AccessLog>`. A reload that keeps the same destination
//! keeps the same log (SIGHUP reopens it, for log rotation); a new destination is
//! opened before the swap (a failure rejects the reload), and the old one's writer
//! finishes the lines of requests still in flight, then closes.

use std::borrow::Cow;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Method, Uri};
use metrics::Counter;
use serde::{Serialize, Serializer};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::AccessLogTarget;
use crate::routing::split::Side;
use crate::telemetry::Class;

/// Lines waiting for the writer: 8 192 requests' worth (about 2.5 MB of JSON). A
/// destination that falls further behind loses lines rather than slowing requests.
pub const CHANNEL_CAPACITY: usize = 8192;

/// The response header of `[log] side_header = true`: `stable` or `canary VERSION`.
pub const SIDE_HEADER: HeaderName = HeaderName::from_static("x-canary-proxy-side");

/// The writer gathers queued lines into one write of up to this many bytes.
const BATCH_BYTES: usize = 64 * 1024;

/// The status logged when the client went away before the response head (nginx's
/// convention: "client closed request").
pub const CLIENT_CLOSED: u16 = 499;

/// What `[log]` asks of the request path; the snapshot holds `None` when nothing is on.
#[derive(Debug)]
pub struct Hooks {
    /// `[log] access`: where each request's line goes.
    pub access: Option<Arc<AccessLog>>,
    /// `[log] side_header`: name the side in [`SIDE_HEADER`] on every routed response.
    pub side_header: bool,
}

/// A running access log: the sending half of its writer's channel.
#[derive(Debug)]
pub struct AccessLog {
    target: AccessLogTarget,
    tx: mpsc::Sender<Msg>,
    dropped: Counter,
}

/// What the writer receives.
#[derive(Debug)]
enum Msg {
    Line(Box<Entry>),
    /// Answered once every line received before it is written.
    Flush(oneshot::Sender<()>),
}

/// One request's line, from its head to the end of its response body. Dropping it
/// sends the line: at the end of the body, or when the client goes away.
#[derive(Debug)]
pub struct Pending {
    log: Arc<AccessLog>,
    /// Always `Some` until dropped.
    entry: Option<Box<Entry>>,
}

/// The fields of one line, as the request path knows them (the writer formats them).
#[derive(Debug)]
pub struct Entry {
    /// When the request head arrived (`time`, RFC 3339 UTC, milliseconds).
    pub time: SystemTime,
    /// The same moment on the monotonic clock, for `duration_ms`.
    pub start: Instant,
    /// `x-request-id` as kept or generated.
    pub request_id: HeaderValue,
    /// The request's method.
    pub method: Method,
    /// Its path is logged (`path`); the query is not, as it may carry secrets.
    pub uri: Uri,
    /// `None`: no route matched (404), or the head was rejected (400, 431).
    pub route: Option<Arc<str>>,
    /// The side that answered (stable after a shielded canary failure), or the side
    /// tried when none answered.
    pub side: Option<Side>,
    /// The route's `canary.version`: on stable lines too, naming the canary they are
    /// compared with.
    pub canary_version: Option<Arc<str>>,
    /// The endpoint (`host:port`) whose response the client got; `None` when the
    /// response is the proxy's own.
    pub upstream: Option<Authority>,
    /// What the client got; [`CLIENT_CLOSED`] until the response head is known.
    pub status: u16,
    /// `Class::of(status)`, or `Class::Error` for a proxy-made 5xx after no upstream
    /// answered (connect failure, timeout, reset).
    pub class: Class,
    /// From the request head to the end of the response body (set when it ends).
    pub duration: Duration,
    /// Response body bytes passed on to the client.
    pub bytes: u64,
    /// The sticky bucket, 0..10 000, when the hash decided.
    pub bucket: Option<u16>,
    /// Why that side: `hash`, `override`, `cohort` or `rolled_back`.
    pub reason: Option<&'static str>,
    /// Stable answered a failed canary attempt (`[route.shield]`).
    pub shielded: bool,
}

/// One line as JSON, borrowing the entry.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(serialize_with = "rfc3339_millis")]
    time: SystemTime,
    request_id: Cow<'a, str>,
    route: Option<&'a str>,
    side: Option<&'static str>,
    canary_version: Option<&'a str>,
    upstream: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    status: u16,
    class: &'static str,
    duration_ms: f64,
    bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    bucket: Option<u16>,
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    shielded: bool,
}

// === impl Hooks ===

impl Hooks {
    /// `None` when both are off: the request path then skips `[log]` with one check.
    pub fn new(access: Option<Arc<AccessLog>>, side_header: bool) -> Option<Box<Hooks>> {
        (access.is_some() || side_header).then(|| {
            Box::new(Hooks {
                access,
                side_header,
            })
        })
    }
}

// === impl AccessLog ===

impl AccessLog {
    /// Opens `target` (a file is created if absent and appended to) and starts its
    /// writer thread. Lines lost count on `dropped`. Errors name the file.
    pub fn open(target: &AccessLogTarget, dropped: Counter) -> io::Result<Arc<AccessLog>> {
        let out: Box<dyn Write + Send> = match target {
            AccessLogTarget::Stderr => Box::new(io::stderr()),
            AccessLogTarget::File(path) => Box::new(
                OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(path)
                    .map_err(|err| {
                        io::Error::new(
                            err.kind(),
                            format!("cannot open access log {}: {err}", path.display()),
                        )
                    })?,
            ),
        };
        AccessLog::with_writer(target.clone(), out, CHANNEL_CAPACITY, dropped)
    }

    /// An access log writing to `out` through a channel of `capacity` lines (at least
    /// one): [`AccessLog::open`] with [`CHANNEL_CAPACITY`], or a tiny channel and a
    /// stalled writer in tests.
    pub fn with_writer(
        target: AccessLogTarget,
        out: Box<dyn Write + Send>,
        capacity: usize,
        dropped: Counter,
    ) -> io::Result<Arc<AccessLog>> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let lost = dropped.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, out, &lost))?;
        Ok(Arc::new(AccessLog {
            target,
            tx,
            dropped,
        }))
    }

    /// The log a new config generation writes to: `None` when `next` is off; `current`
    /// itself when it writes to the same destination and `reopen` is false; else a
    /// newly opened one (SIGHUP reopens, so a rotated file is let go).
    pub fn for_config(
        current: Option<&Arc<AccessLog>>,
        next: Option<&AccessLogTarget>,
        reopen: bool,
        dropped: &Counter,
    ) -> io::Result<Option<Arc<AccessLog>>> {
        let Some(next) = next else {
            return Ok(None);
        };
        match current {
            Some(current) if !reopen && current.target == *next => Ok(Some(Arc::clone(current))),
            _ => AccessLog::open(next, dropped.clone()).map(Some),
        }
    }

    /// Where this log writes.
    pub fn target(&self) -> &AccessLogTarget {
        &self.target
    }

    /// Waits until every line handed over so far is written (or the writer is gone).
    /// Bound it with a timeout: a stalled destination never answers.
    pub async fn flush(&self) {
        let (ack, written) = oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).await.is_ok() {
            let _ = written.await;
        }
    }

    /// Hands a finished line to the writer, or drops and counts it when the channel is
    /// full. Never waits.
    fn send(&self, entry: Box<Entry>) {
        if self.tx.try_send(Msg::Line(entry)).is_err() {
            self.dropped.increment(1);
        }
    }
}

// === impl Pending ===

impl Pending {
    /// Starts the line of a request whose head just arrived.
    pub fn start(
        log: &Arc<AccessLog>,
        method: &Method,
        uri: &Uri,
        request_id: &HeaderValue,
    ) -> Pending {
        Pending {
            log: Arc::clone(log),
            entry: Some(Box::new(Entry {
                time: SystemTime::now(),
                start: Instant::now(),
                request_id: request_id.clone(),
                method: method.clone(),
                uri: uri.clone(),
                route: None,
                side: None,
                canary_version: None,
                upstream: None,
                status: CLIENT_CLOSED,
                class: Class::ClientError,
                duration: Duration::ZERO,
                bytes: 0,
                bucket: None,
                reason: None,
                shielded: false,
            })),
        }
    }

    /// The line's fields, to fill in as the response takes shape.
    pub fn entry(&mut self) -> Option<&mut Entry> {
        self.entry.as_deref_mut()
    }

    /// Counts `n` response body bytes passed on to the client.
    pub fn add_bytes(&mut self, n: usize) {
        if let Some(entry) = &mut self.entry {
            entry.bytes += n as u64;
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut entry) = self.entry.take() {
            entry.duration = entry.start.elapsed();
            self.log.send(entry);
        }
    }
}

// === impl Entry ===

impl Entry {
    /// Appends the line, JSON and a newline, to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let line = Line {
            time: self.time,
            request_id: String::from_utf8_lossy(self.request_id.as_bytes()),
            route: self.route.as_deref(),
            side: self.side.map(Side::as_str),
            canary_version: self.canary_version.as_deref(),
            upstream: self.upstream.as_ref().map(Authority::as_str),
            method: self.method.as_str(),
            path: self.uri.path(),
            status: self.status,
            class: self.class.as_str(),
            // Microsecond resolution, in milliseconds.
            duration_ms: self.duration.as_micros() as f64 / 1000.0,
            bytes: self.bytes,
            bucket: self.bucket,
            reason: self.reason,
            shielded: self.shielded,
        };
        // Writing to a Vec fails only on a serializer error, which these types have not.
        if serde_json::to_writer(&mut *out, &line).is_ok() {
            out.push(b'\n');
        }
    }
}

fn rfc3339_millis<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_millis(*time))
}

/// The writer thread: waits for a line, gathers whatever else is queued (up to
/// [`BATCH_BYTES`]), writes it in one call, answers flushes; ends when every sender
/// is gone and the queue is empty.
fn write_lines(mut rx: mpsc::Receiver<Msg>, mut out: Box<dyn Write + Send>, dropped: &Counter) {
    let mut buf = Vec::with_capacity(BATCH_BYTES);
    let mut acks = Vec::new();
    let mut failing = false;
    while let Some(first) = rx.blocking_recv() {
        let mut lines = 0u64;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Line(entry) => {
                    entry.write_json(&mut buf);
                    lines += 1;
                }
                Msg::Flush(ack) => acks.push(ack),
            }
            if buf.len() < BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            match out.write_all(&buf).and_then(|()| out.flush()) {
                Ok(()) => failing = false,
                Err(err) => {
                    dropped.increment(lines);
                    if !failing {
                        tracing::warn!(error = %err, lines, "cannot write the access log; lines dropped");
                    }
                    failing = true;
                }
            }
            buf.clear();
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Mutex;

    use super::*;

    /// A writer that collects what it is given. With `stall`, its first write says it
    /// began (`stalled`) and waits until the sender of `stall` is dropped.
    #[derive(Clone, Default)]
    struct Collect {
        written: Arc<Mutex<Vec<u8>>>,
        stall: Arc<Mutex<Option<std::sync::mpsc::Receiver<()>>>>,
        stalled: Arc<AtomicBool>,
    }

    impl Write for Collect {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let stall = self.stall.lock().unwrap().take();
            if let Some(stall) = stall {
                self.stalled.store(true, Ordering::SeqCst);
                let _ = stall.recv();
            }
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn counter() -> (Counter, Arc<AtomicU64>) {
        let count = Arc::new(AtomicU64::new(0));
        (Counter::from_arc(Arc::clone(&count)), count)
    }

    fn lines(out: &Collect) -> Vec<serde_json::Value> {
        let text = String::from_utf8(out.written.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_line_has_every_field() {
        let out = Collect::default();
        let (dropped, _) = counter();
        let log =
            AccessLog::with_writer(AccessLogTarget::Stderr, Box::new(out.clone()), 16, dropped)
                .unwrap();
        let uri: Uri = "/cart/items?token=secret".parse().unwrap();
        let id = HeaderValue::from_static("req-1");
        let mut pending = Pending::start(&log, &Method::POST, &uri, &id);
        let entry = pending.entry().unwrap();
        entry.route = Some(Arc::from("checkout"));
        entry.side = Some(Side::Canary);
        entry.canary_version = Some(Arc::from("v2"));
        entry.upstream = Some(Authority::from_static("127.0.0.1:9002"));
        entry.status = 200;
        entry.class = Class::Success;
        entry.bucket = Some(17);
        entry.reason = Some("hash");
        pending.add_bytes(5);
        pending.add_bytes(7);
        drop(pending);
        log.flush().await;

        let lines = lines(&out);
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line["request_id"], "req-1");
        assert_eq!(line["route"], "checkout");
        assert_eq!(line["side"], "canary");
        assert_eq!(line["canary_version"], "v2");
        assert_eq!(line["upstream"], "127.0.0.1:9002");
        assert_eq!(line["method"], "POST");
        assert_eq!(line["path"], "/cart/items", "no query string");
        assert_eq!(line["status"], 200);
        assert_eq!(line["class"], "2xx");
        assert_eq!(line["bytes"], 12);
        assert_eq!(line["bucket"], 17);
        assert_eq!(line["reason"], "hash");
        assert!(line.get("shielded").is_none(), "only when true");
        assert!(line["duration_ms"].as_f64().unwrap() >= 0.0);
        let time = line["time"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
        assert!(time.ends_with('Z') && time.len() == 24, "{time}");
    }

    #[tokio::test]
    async fn an_unfinished_request_is_logged_as_499() {
        let out = Collect::default();
        let (dropped, _) = counter();
        let log =
            AccessLog::with_writer(AccessLogTarget::Stderr, Box::new(out.clone()), 16, dropped)
                .unwrap();
        let uri: Uri = "/x".parse().unwrap();
        drop(Pending::start(
            &log,
            &Method::GET,
            &uri,
            &HeaderValue::from_static("r"),
        ));
        log.flush().await;
        let line = &lines(&out)[0];
        assert_eq!(line["status"], 499);
        assert!(line["route"].is_null() && line["side"].is_null() && line["upstream"].is_null());
        assert!(line.get("bucket").is_none());
    }

    #[tokio::test]
    async fn a_full_channel_drops_and_counts() {
        let (release, stall) = std::sync::mpsc::channel::<()>();
        let out = Collect::default();
        *out.stall.lock().unwrap() = Some(stall);
        let (dropped, count) = counter();
        let log =
            AccessLog::with_writer(AccessLogTarget::Stderr, Box::new(out.clone()), 2, dropped)
                .unwrap();
        let uri: Uri = "/".parse().unwrap();
        let id = HeaderValue::from_static("r");
        // The writer takes the first line and stalls writing it; two more fill the
        // channel; the rest are dropped, without waiting.
        let send = || drop(Pending::start(&log, &Method::GET, &uri, &id));
        send();
        let start = Instant::now();
        while !out.stalled.load(Ordering::SeqCst) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the writer never wrote"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for _ in 0..10 {
            send();
        }
        assert_eq!(count.load(Ordering::Relaxed), 8, "10 sent, 2 queued");
        drop(release);
        log.flush().await;
        assert_eq!(lines(&out).len(), 3);
        assert_eq!(count.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn the_same_destination_is_kept_unless_reopened() {
        let dir = std::env::temp_dir().join(format!("canary-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (dropped, _) = counter();
        let a = AccessLogTarget::File(dir.join("a.log"));
        let b = AccessLogTarget::File(dir.join("b.log"));
        let first = AccessLog::for_config(None, Some(&a), false, &dropped)
            .unwrap()
            .unwrap();
        let same = AccessLog::for_config(Some(&first), Some(&a), false, &dropped)
            .unwrap()
            .unwrap();
        assert!(Arc::ptr_eq(&first, &same));
        let reopened = AccessLog::for_config(Some(&first), Some(&a), true, &dropped)
            .unwrap()
            .unwrap();
        assert!(!Arc::ptr_eq(&first, &reopened));
        let moved = AccessLog::for_config(Some(&first), Some(&b), false, &dropped)
            .unwrap()
            .unwrap();
        assert_eq!(moved.target(), &b);
        assert!(AccessLog::for_config(Some(&first), None, false, &dropped)
            .unwrap()
            .is_none());
        let missing = AccessLogTarget::File(dir.join("no/such/dir/x.log"));
        let err = AccessLog::for_config(None, Some(&missing), false, &dropped).unwrap_err();
        assert!(err.to_string().contains("cannot open access log"), "{err}");
        assert!(err.to_string().contains("no/such/dir/x.log"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
