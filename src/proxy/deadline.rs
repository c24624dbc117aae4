//! The header deadline of plain HTTP/1.1 connections, and their drain: one coarse
//! sweep for every connection instead of a timer armed and cancelled per request.
//!
//! hyper's own `header_read_timeout` boxes a `Sleep`, registers it in the timer wheel
//! when a connection starts waiting for a head, and cancels it when the head is in:
//! three timer operations, an allocation and a clock read per request (callgrind:
//! ~1 000 of ~33 000 instructions), plus a drain signal polled at every wakeup. Here a
//! connection counts its requests in two atomics ([`Activity`]) and is woken only when
//! the [`Sweeper`] has something to tell it: close (it waited a whole
//! `header_read_timeout` for a head: silent, slow or idle keep-alive) or drain. The
//! sweep runs every quarter of the current `header_read_timeout` (10 ms to 1 s), and a
//! connection is closed at the first sweep a whole timeout after the first sweep that
//! found it idle: between 1 × and 1.5 × `header_read_timeout` after its last response
//! ended (nginx's timers are coarse in the same way).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::time::Instant;

/// The sweep never runs more often than this (a `header_read_timeout` below 40 ms is
/// therefore coarser than asked).
const MIN_SWEEP: Duration = Duration::from_millis(10);
/// Nor less often than this.
const MAX_SWEEP: Duration = Duration::from_secs(1);

const RUN: u8 = 0;
const DRAIN: u8 = 1;
const CLOSE: u8 = 2;

/// What a connection is told, read at each of its polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Carry on.
    Run,
    /// The server drains: finish the request in flight, then close.
    Drain,
    /// No request head within `header_read_timeout` and nothing in flight: close now.
    Close,
}

/// The requests of one connection, as the sweep sees them, and how to wake it.
#[derive(Debug)]
pub struct Activity {
    /// Request heads received (wrapping).
    started: AtomicU32,
    /// Requests whose response body has not ended (or been dropped) yet.
    open: AtomicU32,
    /// `RUN`, `DRAIN` or `CLOSE`.
    signal: AtomicU8,
    /// `started` as the sweep saw it when it decided `CLOSE`.
    close_at: AtomicU32,
    waker: AtomicWaker,
    timeout: Duration,
}

/// One request of a connection, open until dropped: with its response body (hyper
/// drops it after the last frame is written, or when the connection fails).
#[derive(Debug)]
pub struct Open(Arc<Activity>);

/// Every plain HTTP/1.1 connection of a listener, swept for the header deadline.
#[derive(Debug, Default)]
pub struct Sweeper {
    connections: Mutex<Connections>,
}

#[derive(Debug, Default)]
struct Connections {
    watched: Vec<Watched>,
    draining: bool,
}

/// The sweep's view of one connection.
#[derive(Debug)]
struct Watched {
    activity: Weak<Activity>,
    /// `started` at the last sweep.
    seen: u32,
    /// The first sweep that found it idle since (no head started, nothing in flight),
    /// or its accept: it has been idle at least since then, so a close never comes
    /// before a whole timeout of idleness.
    idle_since: Option<Instant>,
}

// === impl Activity ===

impl Activity {
    /// Counts for a connection no sweeper watches (hyper runs its own header timer
    /// there): never signalled.
    pub fn unwatched() -> Arc<Activity> {
        Arc::new(Activity::new(Duration::MAX))
    }

    fn new(timeout: Duration) -> Activity {
        Activity {
            started: AtomicU32::new(0),
            open: AtomicU32::new(0),
            signal: AtomicU8::new(RUN),
            close_at: AtomicU32::new(0),
            waker: AtomicWaker::new(),
            timeout,
        }
    }

    /// A request head arrived; it is open until the returned [`Open`] is dropped.
    pub fn start(self: &Arc<Self>) -> Open {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        Open(Arc::clone(self))
    }

    /// What the connection should do now; call at every poll of the connection, with
    /// its context (the sweep wakes it through it). A close the sweep decided is
    /// withdrawn when a request started since (the sweep read the counts from another
    /// thread while this one received a head).
    pub fn signal(&self, cx: &Context<'_>) -> Signal {
        self.waker.register(cx.waker());
        match self.signal.load(Ordering::Acquire) {
            RUN => Signal::Run,
            DRAIN => Signal::Drain,
            _ => {
                let started = self.started.load(Ordering::Relaxed);
                if started == self.close_at.load(Ordering::Relaxed)
                    && self.open.load(Ordering::Relaxed) == 0
                {
                    Signal::Close
                } else {
                    // Withdrawn; a drain sent meanwhile stands.
                    let _ = self.signal.compare_exchange(
                        CLOSE,
                        RUN,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    );
                    if self.signal.load(Ordering::Acquire) == DRAIN {
                        Signal::Drain
                    } else {
                        Signal::Run
                    }
                }
            }
        }
    }

    /// Resolves with the first signal other than `Run`; for waits outside hyper (the
    /// first bytes of a connection).
    pub fn signalled(&self) -> impl Future<Output = Signal> + '_ {
        std::future::poll_fn(move |cx| match self.signal(cx) {
            Signal::Run => Poll::Pending,
            signal => Poll::Ready(signal),
        })
    }

    fn tell(&self, signal: u8) {
        // Close never overrides a drain: the drain finishes what is in flight and
        // closes anyway.
        if signal == CLOSE {
            if self
                .signal
                .compare_exchange(RUN, CLOSE, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                return;
            }
        } else {
            self.signal.store(signal, Ordering::Release);
        }
        self.waker.wake();
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl Sweeper ===

impl Sweeper {
    /// Watches a new connection whose heads must come within `timeout` (its
    /// `header_read_timeout`); a connection accepted during a drain is told at once.
    pub fn watch(&self, timeout: Duration, now: Instant) -> Arc<Activity> {
        let activity = Arc::new(Activity::new(timeout));
        let mut connections = self.lock();
        if connections.draining {
            activity.signal.store(DRAIN, Ordering::Release);
        }
        connections.watched.push(Watched {
            activity: Arc::downgrade(&activity),
            seen: 0,
            idle_since: Some(now),
        });
        activity
    }

    /// Tells every connection to drain.
    pub fn drain(&self) {
        let mut connections = self.lock();
        connections.draining = true;
        for watched in &connections.watched {
            if let Some(activity) = watched.activity.upgrade() {
                activity.tell(DRAIN);
            }
        }
    }

    /// One sweep at `now`: forgets closed connections, closes those that waited a
    /// whole timeout for a head. Returns how many it closed.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut closed = 0;
        self.lock().watched.retain_mut(|watched| {
            let Some(activity) = watched.activity.upgrade() else {
                return false;
            };
            let started = activity.started.load(Ordering::Relaxed);
            if started != watched.seen || activity.open.load(Ordering::Relaxed) > 0 {
                watched.seen = started;
                watched.idle_since = None;
                return true;
            }
            let idle_since = *watched.idle_since.get_or_insert(now);
            if now.saturating_duration_since(idle_since) >= activity.timeout {
                activity.close_at.store(started, Ordering::Relaxed);
                activity.tell(CLOSE);
                closed += 1;
            }
            true
        });
        closed
    }

    /// Sweeps every quarter of `timeout()` (read at each sweep: a reload may change
    /// it) until dropped with its task.
    pub async fn run(self: Arc<Self>, timeout: impl Fn() -> Duration) {
        loop {
            let every = (timeout() / 4).clamp(MIN_SWEEP, MAX_SWEEP);
            tokio::time::sleep(every).await;
            self.sweep(Instant::now());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connections> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Polls `conn` (a hyper HTTP/1 connection) under `activity`'s signals: a drain shuts
/// it down gracefully (the request in flight finishes), a close drops it. `None` when
/// it was closed for its header deadline.
pub async fn supervise<F, T>(
    activity: &Activity,
    mut conn: Pin<&mut F>,
    mut graceful: impl FnMut(Pin<&mut F>),
) -> Option<T>
where
    F: Future<Output = T>,
{
    let mut draining = false;
    std::future::poll_fn(move |cx| {
        match activity.signal(cx) {
            Signal::Run => {}
            Signal::Drain => {
                if !draining {
                    draining = true;
                    graceful(conn.as_mut());
                }
            }
            Signal::Close => return Poll::Ready(None),
        }
        conn.as_mut().poll(cx).map(Some)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    const TIMEOUT: Duration = Duration::from_secs(1);

    #[test]
    fn a_silent_connection_is_closed_after_its_timeout_not_before() {
        let sweeper = Sweeper::default();
        let t0 = Instant::now();
        let conn = sweeper.watch(TIMEOUT, t0);
        assert_eq!(sweeper.sweep(t0 + TIMEOUT / 2), 0);
        assert_eq!(conn.signal(&cx()), Signal::Run);
        assert_eq!(sweeper.sweep(t0 + TIMEOUT), 1);
        assert_eq!(conn.signal(&cx()), Signal::Close);
    }

    #[test]
    fn a_request_in_flight_is_never_cut_and_the_idle_time_counts_from_its_end() {
        let sweeper = Sweeper::default();
        let t0 = Instant::now();
        let conn = sweeper.watch(TIMEOUT, t0);
        let open = conn.start();
        // A long download: many timeouts pass.
        for i in 1..10 {
            assert_eq!(sweeper.sweep(t0 + TIMEOUT * i), 0);
        }
        drop(open);
        let end = t0 + TIMEOUT * 10;
        assert_eq!(
            sweeper.sweep(end),
            0,
            "idle from the first sweep after its end"
        );
        assert_eq!(sweeper.sweep(end + TIMEOUT / 2), 0);
        assert_eq!(sweeper.sweep(end + TIMEOUT), 1);
        assert_eq!(conn.signal(&cx()), Signal::Close);
    }

    #[test]
    fn requests_keep_a_keep_alive_connection_open() {
        let sweeper = Sweeper::default();
        let t0 = Instant::now();
        let conn = sweeper.watch(TIMEOUT, t0);
        for i in 1..10 {
            drop(conn.start());
            assert_eq!(sweeper.sweep(t0 + TIMEOUT * i), 0);
            assert_eq!(conn.signal(&cx()), Signal::Run);
        }
    }

    #[test]
    fn a_close_decided_before_a_head_arrived_is_withdrawn() {
        let sweeper = Sweeper::default();
        let t0 = Instant::now();
        let conn = sweeper.watch(TIMEOUT, t0);
        assert_eq!(sweeper.sweep(t0 + TIMEOUT), 1);
        // The head arrives on the connection's thread before it sees the close.
        let open = conn.start();
        assert_eq!(conn.signal(&cx()), Signal::Run);
        drop(open);
        assert_eq!(conn.signal(&cx()), Signal::Run, "withdrawn, not deferred");
        // Idle again from the first sweep that finds it so: a whole timeout later.
        assert_eq!(
            sweeper.sweep(t0 + TIMEOUT * 2),
            0,
            "a head since the last sweep"
        );
        assert_eq!(sweeper.sweep(t0 + TIMEOUT * 3), 0, "idle from here");
        assert_eq!(sweeper.sweep(t0 + TIMEOUT * 4), 1);
    }

    #[test]
    fn drain_reaches_every_connection_and_those_accepted_later_and_beats_close() {
        let sweeper = Sweeper::default();
        let t0 = Instant::now();
        let before = sweeper.watch(TIMEOUT, t0);
        sweeper.drain();
        let after = sweeper.watch(TIMEOUT, t0);
        assert_eq!(before.signal(&cx()), Signal::Drain);
        assert_eq!(after.signal(&cx()), Signal::Drain);
        sweeper.sweep(t0 + TIMEOUT);
        assert_eq!(before.signal(&cx()), Signal::Drain);
    }

    #[test]
    fn closed_connections_are_forgotten() {
        let sweeper = Sweeper::default();
        let t0 = Instant::now();
        let kept = sweeper.watch(TIMEOUT, t0);
        drop(sweeper.watch(TIMEOUT, t0));
        sweeper.sweep(t0);
        assert_eq!(sweeper.lock().watched.len(), 1);
        drop(kept);
        sweeper.sweep(t0);
        assert!(sweeper.lock().watched.is_empty());
    }

    #[tokio::test]
    async fn supervise_drains_gracefully_once_and_closes_by_dropping() {
        let sweeper = Sweeper::default();
        let conn = sweeper.watch(TIMEOUT, Instant::now());
        let mut graceful = 0;
        let mut pending = std::pin::pin!(std::future::pending::<()>());
        sweeper.drain();
        let polled = tokio::time::timeout(
            Duration::from_millis(20),
            supervise(&conn, pending.as_mut(), |_| graceful += 1),
        )
        .await;
        assert!(polled.is_err(), "a drain waits for the connection");
        assert_eq!(graceful, 1);

        let conn = sweeper.watch(TIMEOUT, Instant::now());
        conn.close_at.store(0, Ordering::Relaxed);
        conn.signal.store(CLOSE, Ordering::Release);
        let closed = supervise(&conn, pending.as_mut(), |_| {}).await;
        assert_eq!(closed, None);
    }
}
