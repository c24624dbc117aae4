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
//!
//! The sweep also *parks* a connection idle since the previous sweep: the hyper
//! connection is taken apart ([`Supervised::Parked`]), which frees its 8 KiB read and
//! 8 KiB write buffers, and the socket waits for readability with no buffer at all; the
//! next request builds a new hyper connection on it. 7 000 idle keep-alive connections
//! held 83 MiB with the buffers (issue 17). A connection is parked only when hyper is
//! provably between requests: its last read found nothing, its last write or flush
//! completed, no response is open, and no request it served since it was built had a
//! body (hyper may still be reading one after the response ended; such a connection
//! keeps its buffers).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The sweep never runs more often than this (a `header_read_timeout` below 40 ms is
/// therefore coarser than asked).
const MIN_SWEEP: Duration = Duration::from_millis(10);
/// Nor less often than this.
const MAX_SWEEP: Duration = Duration::from_secs(1);

const RUN: u8 = 0;
const DRAIN: u8 = 1;
const CLOSE: u8 = 2;
const PARK: u8 = 3;

/// What a connection is told, read at each of its polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Carry on.
    Run,
    /// The server drains: finish the request in flight, then close.
    Drain,
    /// No request head within `header_read_timeout` and nothing in flight: close now.
    Close,
    /// Idle since the last sweep: shed hyper's buffers if it is between requests.
    Park,
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
    /// A request with a body arrived since the hyper connection was built (see the
    /// module docs: such a connection is not parked).
    bodies: AtomicBool,
    /// The socket's last read found nothing ([`Shed`]).
    read_waiting: AtomicBool,
    /// The socket's last write or flush could not complete ([`Shed`]).
    write_waiting: AtomicBool,
    waker: AtomicWaker,
    timeout: Duration,
    /// The listener's count of parked connections (`parked_connections`).
    parked: Arc<AtomicUsize>,
}

/// One parked connection in the listener's count, while it lives.
#[derive(Debug)]
pub struct Parked(Arc<AtomicUsize>);

/// A connection's socket, telling its [`Activity`] whether hyper's last read found
/// nothing and whether its last write completed: with no response open, that is hyper
/// idle between requests with empty buffers.
#[derive(Debug)]
pub struct Shed<T> {
    io: T,
    activity: Arc<Activity>,
    /// Bytes hyper had read but not parsed when its connection was parked (the start
    /// of a head), read again first by the next one.
    prefix: bytes::Bytes,
}

/// How [`supervise`] ended.
#[derive(Debug)]
pub enum Supervised<T> {
    /// The connection ended by itself, with this result.
    Done(T),
    /// Closed for its header deadline.
    Closed,
    /// Idle between requests with empty buffers: take it apart and wait.
    Parked,
}

/// One request of a connection, open until dropped: with its response body (hyper
/// drops it after the last frame is written, or when the connection fails).
#[derive(Debug)]
pub struct Open(Arc<Activity>);

/// Every plain HTTP/1.1 connection of a listener, swept for the header deadline.
#[derive(Debug, Default)]
pub struct Sweeper {
    connections: Mutex<Connections>,
    /// How many are parked now (`parked_connections`).
    parked: Arc<AtomicUsize>,
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
    /// Told to park in this idle spell.
    parked: bool,
}

// === impl Activity ===

impl Activity {
    /// Counts for a connection no sweeper watches (hyper runs its own header timer
    /// there): never signalled.
    pub fn unwatched() -> Arc<Activity> {
        Arc::new(Activity::new(Duration::MAX, Arc::default()))
    }

    fn new(timeout: Duration, parked: Arc<AtomicUsize>) -> Activity {
        Activity {
            started: AtomicU32::new(0),
            open: AtomicU32::new(0),
            signal: AtomicU8::new(RUN),
            close_at: AtomicU32::new(0),
            bodies: AtomicBool::new(false),
            read_waiting: AtomicBool::new(false),
            write_waiting: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            timeout,
            parked,
        }
    }

    /// Counts the connection as parked until the returned value is dropped.
    pub fn parked(&self) -> Parked {
        self.parked.fetch_add(1, Ordering::Relaxed);
        Parked(Arc::clone(&self.parked))
    }

    /// A request head arrived (`body`: with a body to read); it is open until the
    /// returned [`Open`] is dropped.
    pub fn start(self: &Arc<Self>, body: bool) -> Open {
        if body {
            self.bodies.store(true, Ordering::Relaxed);
        }
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
            PARK => Signal::Park,
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

    /// Resolves with the first drain or close; for waits outside hyper (the first
    /// bytes of a connection, a parked one). A park is void there.
    pub fn signalled(&self) -> impl Future<Output = Signal> + '_ {
        std::future::poll_fn(move |cx| match self.signal(cx) {
            Signal::Run => Poll::Pending,
            Signal::Park => {
                self.unpark();
                Poll::Pending
            }
            signal => Poll::Ready(signal),
        })
    }

    /// Whether hyper is between requests with empty buffers (see [`Shed`]).
    fn idle(&self) -> bool {
        self.read_waiting.load(Ordering::Relaxed)
            && !self.write_waiting.load(Ordering::Relaxed)
            && self.open.load(Ordering::Relaxed) == 0
            && !self.bodies.load(Ordering::Relaxed)
    }

    /// Clears a park (acted on, or void); a drain or close sent meanwhile stands.
    fn unpark(&self) {
        let _ = self
            .signal
            .compare_exchange(PARK, RUN, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// A new hyper connection on the socket: no body read yet.
    fn rebuilt(&self) {
        self.bodies.store(false, Ordering::Relaxed);
        self.read_waiting.store(false, Ordering::Relaxed);
        self.write_waiting.store(false, Ordering::Relaxed);
    }

    fn tell(&self, signal: u8) {
        // A park only replaces nothing; a close replaces nothing or a park (never a
        // drain: the drain finishes what is in flight and closes anyway).
        if signal == PARK {
            if self
                .signal
                .compare_exchange(RUN, PARK, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                return;
            }
        } else if signal == CLOSE {
            let _ = self
                .signal
                .compare_exchange(PARK, RUN, Ordering::AcqRel, Ordering::Relaxed);
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

// === impl Shed ===

impl<T> Shed<T> {
    pub fn new(io: T, activity: Arc<Activity>) -> Shed<T> {
        Shed {
            io,
            activity,
            prefix: bytes::Bytes::new(),
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// `prefix` is read before anything more from the socket.
    pub fn unread(&mut self, prefix: bytes::Bytes) {
        self.prefix = prefix;
    }

    fn wrote<R>(&self, polled: Poll<R>) -> Poll<R> {
        self.activity
            .write_waiting
            .store(polled.is_pending(), Ordering::Relaxed);
        polled
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Shed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        self.activity
            .read_waiting
            .store(polled.is_pending(), Ordering::Relaxed);
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Shed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.wrote(polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl Sweeper ===

impl Sweeper {
    /// A sweeper counting its parked connections in `parked`.
    pub fn new(parked: Arc<AtomicUsize>) -> Sweeper {
        Sweeper {
            connections: Mutex::default(),
            parked,
        }
    }

    /// Watches a new connection whose heads must come within `timeout` (its
    /// `header_read_timeout`); a connection accepted during a drain is told at once.
    pub fn watch(&self, timeout: Duration, now: Instant) -> Arc<Activity> {
        let activity = Arc::new(Activity::new(timeout, Arc::clone(&self.parked)));
        let mut connections = self.lock();
        if connections.draining {
            activity.signal.store(DRAIN, Ordering::Release);
        }
        connections.watched.push(Watched {
            activity: Arc::downgrade(&activity),
            seen: 0,
            idle_since: Some(now),
            parked: false,
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
                watched.parked = false;
                return true;
            }
            let idle_since = *watched.idle_since.get_or_insert(now);
            if now.saturating_duration_since(idle_since) >= activity.timeout {
                activity.close_at.store(started, Ordering::Relaxed);
                activity.tell(CLOSE);
                closed += 1;
            } else if idle_since < now && !watched.parked {
                // Idle since an earlier sweep: a busy connection is never parked.
                watched.parked = true;
                activity.tell(PARK);
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

/// Polls `conn` (a hyper HTTP/1 connection over a [`Shed`] socket) under
/// `activity`'s signals: a drain shuts it down gracefully (the request in flight
/// finishes), a close drops it, a park returns it to be taken apart when hyper is
/// between requests (and is void otherwise).
pub async fn supervise<F, T>(
    activity: &Activity,
    mut conn: Pin<&mut F>,
    mut graceful: impl FnMut(Pin<&mut F>),
) -> Supervised<T>
where
    F: Future<Output = T>,
{
    let mut draining = false;
    std::future::poll_fn(move |cx| {
        let signal = activity.signal(cx);
        match signal {
            Signal::Run | Signal::Park => {}
            Signal::Drain => {
                if !draining {
                    draining = true;
                    graceful(conn.as_mut());
                }
            }
            Signal::Close => return Poll::Ready(Supervised::Closed),
        }
        let polled = conn.as_mut().poll(cx);
        match polled {
            Poll::Ready(result) => Poll::Ready(Supervised::Done(result)),
            Poll::Pending if signal == Signal::Park => {
                activity.unpark();
                if activity.idle() {
                    Poll::Ready(Supervised::Parked)
                } else {
                    Poll::Pending
                }
            }
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Readies `activity` for a new hyper connection on a parked socket.
pub fn rebuilt(activity: &Activity) {
    activity.rebuilt();
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
        // Idle since its accept: told to park (void while it waits for its first bytes).
        assert_eq!(conn.signal(&cx()), Signal::Park);
        assert_eq!(sweeper.sweep(t0 + TIMEOUT), 1);
        assert_eq!(conn.signal(&cx()), Signal::Close);
    }

    #[test]
    fn a_request_in_flight_is_never_cut_and_the_idle_time_counts_from_its_end() {
        let sweeper = Sweeper::default();
        let t0 = Instant::now();
        let conn = sweeper.watch(TIMEOUT, t0);
        let open = conn.start(false);
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
            drop(conn.start(false));
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
        let open = conn.start(false);
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
        assert!(matches!(closed, Supervised::Closed));
    }

    /// A park is acted on only when hyper is between requests: its last read found
    /// nothing, its last write completed, no response open, no request body seen.
    #[tokio::test]
    async fn a_park_takes_only_an_idle_connection_and_is_void_otherwise() {
        let sweeper = Sweeper::default();
        let t0 = Instant::now();
        let conn = sweeper.watch(TIMEOUT, t0);
        let park = |conn: &Activity| conn.signal.store(PARK, Ordering::Release);
        async fn supervised(
            conn: &Activity,
        ) -> Result<Supervised<()>, tokio::time::error::Elapsed> {
            let pending = std::pin::pin!(std::future::pending::<()>());
            tokio::time::timeout(Duration::from_millis(20), supervise(conn, pending, |_| {})).await
        }
        // Not read-waiting yet (hyper never polled the socket).
        park(&conn);
        assert!(supervised(&conn).await.is_err());
        assert_eq!(conn.signal(&cx()), Signal::Run, "a void park is cleared");
        conn.read_waiting.store(true, Ordering::Relaxed);
        for blocked in [
            |c: &Activity| c.write_waiting.store(true, Ordering::Relaxed),
            |c: &Activity| {
                c.open.store(1, Ordering::Relaxed);
            },
            |c: &Activity| c.bodies.store(true, Ordering::Relaxed),
        ] {
            blocked(&conn);
            park(&conn);
            assert!(supervised(&conn).await.is_err());
            conn.write_waiting.store(false, Ordering::Relaxed);
            conn.open.store(0, Ordering::Relaxed);
            conn.rebuilt();
            conn.read_waiting.store(true, Ordering::Relaxed);
        }
        park(&conn);
        let parked = supervised(&conn).await;
        assert!(matches!(parked, Ok(Supervised::Parked)));
        assert_eq!(conn.signal(&cx()), Signal::Run);
    }

    #[test]
    fn the_sweep_parks_a_connection_idle_since_the_last_sweep_once_per_idle_spell() {
        let sweeper = Sweeper::default();
        let t0 = Instant::now();
        let tick = TIMEOUT / 4;
        let conn = sweeper.watch(TIMEOUT, t0);
        drop(conn.start(false));
        sweeper.sweep(t0 + tick);
        assert_eq!(conn.signal(&cx()), Signal::Run, "busy at the last sweep");
        sweeper.sweep(t0 + tick * 2);
        assert_eq!(conn.signal(&cx()), Signal::Run, "idle from this sweep");
        sweeper.sweep(t0 + tick * 3);
        assert_eq!(conn.signal(&cx()), Signal::Park);
        conn.unpark();
        sweeper.sweep(t0 + tick * 4);
        assert_eq!(conn.signal(&cx()), Signal::Run, "once per idle spell");
        // A new request, then idle again: parked again.
        drop(conn.start(false));
        sweeper.sweep(t0 + tick * 5);
        sweeper.sweep(t0 + tick * 6);
        sweeper.sweep(t0 + tick * 7);
        assert_eq!(conn.signal(&cx()), Signal::Park);
        // The close, a timeout after idle began, replaces the park.
        sweeper.sweep(t0 + tick * 10);
        assert_eq!(conn.signal(&cx()), Signal::Close);
    }

    #[tokio::test]
    async fn shed_reports_reads_that_find_nothing_and_writes_that_cannot_complete() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let activity = Activity::unwatched();
        let (ours, mut theirs) = tokio::io::duplex(8);
        let mut shed = Shed::new(ours, Arc::clone(&activity));
        let mut buf = [0u8; 8];
        assert!(
            tokio::time::timeout(Duration::from_millis(10), shed.read(&mut buf))
                .await
                .is_err()
        );
        assert!(activity.read_waiting.load(Ordering::Relaxed));
        theirs.write_all(b"x").await.unwrap();
        assert_eq!(shed.read(&mut buf).await.unwrap(), 1);
        assert!(!activity.read_waiting.load(Ordering::Relaxed));
        // The pipe holds 8 bytes: the ninth cannot be written.
        shed.write_all(b"12345678").await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(10), shed.write_all(b"9"))
                .await
                .is_err()
        );
        assert!(activity.write_waiting.load(Ordering::Relaxed));
        let mut drained = [0u8; 8];
        theirs.read_exact(&mut drained).await.unwrap();
        shed.write_all(b"9").await.unwrap();
        assert!(!activity.write_waiting.load(Ordering::Relaxed));
    }
}
