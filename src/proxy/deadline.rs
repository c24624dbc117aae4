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
//! was written (nginx's timers are coarse in the same way). A connection is busy, never
//! idle, while a response is open or its last bytes wait on the socket (a slow
//! reader); a drain does not stop the deadline (it would otherwise wait
//! `drain_timeout` for a half-sent head).
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

/// `Activity::signal` bits: a drain is for good; a close may be withdrawn (a head came
/// after all) and outranks the drain (a drain does not wait for a half-sent head); a
/// park is a suggestion, void unless hyper is between requests.
const DRAIN: u8 = 1;
const CLOSE: u8 = 2;
const PARK: u8 = 4;

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
    /// `DRAIN`, `CLOSE` and `PARK` bits.
    signal: AtomicU8,
    /// `started` as the sweep saw it when it decided `CLOSE`.
    close_at: AtomicU32,
    /// A request with a body arrived since the hyper connection was built (see the
    /// module docs: such a connection is not parked).
    bodies: AtomicBool,
    /// The socket's last read found nothing ([`Shed`]).
    read_waiting: AtomicBool,
    /// The socket's last write or flush could not complete ([`Shed`]): hyper still
    /// holds bytes of a response, so the connection is not idle whatever `open` says.
    write_waiting: AtomicBool,
    /// Parked now (the sweep does not suggest it again).
    is_parked: AtomicBool,
    waker: AtomicWaker,
    timeout: Duration,
    /// The listener's count of parked connections (`parked_connections`).
    parked: Arc<AtomicUsize>,
}

/// One parked connection in the listener's count, while it lives.
#[derive(Debug)]
pub struct Parked(Arc<Activity>);

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
            signal: AtomicU8::new(0),
            close_at: AtomicU32::new(0),
            bodies: AtomicBool::new(false),
            read_waiting: AtomicBool::new(false),
            write_waiting: AtomicBool::new(false),
            is_parked: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            timeout,
            parked,
        }
    }

    /// Counts the connection as parked until the returned value is dropped.
    pub fn parked(self: &Arc<Self>) -> Parked {
        self.parked.fetch_add(1, Ordering::Relaxed);
        self.is_parked.store(true, Ordering::Relaxed);
        Parked(Arc::clone(self))
    }

    /// Whether hyper may still be busy with a response: one open, or its last bytes
    /// not yet written.
    fn busy(&self) -> bool {
        self.open.load(Ordering::Relaxed) > 0 || self.write_waiting.load(Ordering::Relaxed)
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

    /// What the connection should do now; call at every poll of the connection, after
    /// polling it, with its context (the sweep wakes it through it). A close the sweep
    /// decided is withdrawn when a request started since, or a response is still
    /// being written (the sweep read the counts from another thread).
    pub fn signal(&self, cx: &Context<'_>) -> Signal {
        self.waker.register(cx.waker());
        let signal = self.signal.load(Ordering::Acquire);
        if signal & CLOSE != 0 {
            if self.started.load(Ordering::Relaxed) == self.close_at.load(Ordering::Relaxed)
                && !self.busy()
            {
                return Signal::Close;
            }
            self.signal.fetch_and(!CLOSE, Ordering::AcqRel);
        }
        if signal & DRAIN != 0 {
            Signal::Drain
        } else if signal & PARK != 0 {
            Signal::Park
        } else {
            Signal::Run
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
            && !self.busy()
            && !self.bodies.load(Ordering::Relaxed)
    }

    /// Clears a park (acted on, or void); a drain or close sent meanwhile stands.
    fn unpark(&self) {
        self.signal.fetch_and(!PARK, Ordering::AcqRel);
    }

    /// A new hyper connection on a parked socket: no body read yet, no read or write
    /// seen.
    pub fn rebuilt(&self) {
        self.bodies.store(false, Ordering::Relaxed);
        self.read_waiting.store(false, Ordering::Relaxed);
        self.write_waiting.store(false, Ordering::Relaxed);
    }

    fn tell(&self, signal: u8) {
        let before = self.signal.fetch_or(signal, Ordering::AcqRel);
        // A park already suggested (or pointless next to a drain or close) wakes
        // nobody again.
        if signal == PARK && before != 0 {
            return;
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
        self.0.is_parked.store(false, Ordering::Relaxed);
        self.0.parked.fetch_sub(1, Ordering::Relaxed);
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
            activity.signal.fetch_or(DRAIN, Ordering::AcqRel);
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
            if started != watched.seen || activity.busy() {
                watched.seen = started;
                watched.idle_since = None;
                return true;
            }
            let idle_since = *watched.idle_since.get_or_insert(now);
            if now.saturating_duration_since(idle_since) >= activity.timeout {
                activity.close_at.store(started, Ordering::Relaxed);
                activity.tell(CLOSE);
                closed += 1;
            } else if idle_since < now && !activity.is_parked.load(Ordering::Relaxed) {
                // Idle since an earlier sweep (a busy connection is never parked); told
                // again at each sweep until it could park (its last write may have
                // been pending, say).
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
    std::future::poll_fn(move |cx| loop {
        // The connection first: a head already waiting withdraws a close.
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            return Poll::Ready(Supervised::Done(result));
        }
        match activity.signal(cx) {
            Signal::Run => return Poll::Pending,
            Signal::Drain if !draining => {
                draining = true;
                graceful(conn.as_mut());
                // Polled again: hyper acts on the shutdown when polled.
            }
            Signal::Drain => return Poll::Pending,
            Signal::Close => return Poll::Ready(Supervised::Closed),
            Signal::Park => {
                activity.unpark();
                return if activity.idle() {
                    Poll::Ready(Supervised::Parked)
                } else {
                    Poll::Pending
                };
            }
        }
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
    fn drain_reaches_every_connection_and_those_accepted_later_and_a_close_still_comes() {
        let sweeper = Sweeper::default();
        let t0 = Instant::now();
        let before = sweeper.watch(TIMEOUT, t0);
        sweeper.drain();
        let after = sweeper.watch(TIMEOUT, t0);
        assert_eq!(before.signal(&cx()), Signal::Drain);
        assert_eq!(after.signal(&cx()), Signal::Drain);
        // A connection that never sends a whole head is still cut at its deadline:
        // the drain would wait for it until drain_timeout.
        sweeper.sweep(t0 + TIMEOUT);
        assert_eq!(before.signal(&cx()), Signal::Close);
    }

    #[test]
    fn a_response_still_being_written_is_busy_not_idle() {
        let sweeper = Sweeper::default();
        let t0 = Instant::now();
        let conn = sweeper.watch(TIMEOUT, t0);
        drop(conn.start(false));
        // The body ended (the request is no longer open) but its last bytes wait on a
        // client that does not read.
        conn.write_waiting.store(true, Ordering::Relaxed);
        for i in 1..10 {
            assert_eq!(sweeper.sweep(t0 + TIMEOUT * i), 0);
        }
        // A close decided just before the write stalled is withdrawn.
        conn.close_at.store(1, Ordering::Relaxed);
        conn.signal.fetch_or(CLOSE, Ordering::AcqRel);
        assert_eq!(conn.signal(&cx()), Signal::Run);
        conn.write_waiting.store(false, Ordering::Relaxed);
        sweeper.sweep(t0 + TIMEOUT * 10);
        assert_eq!(sweeper.sweep(t0 + TIMEOUT * 11), 1);
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
    fn the_sweep_suggests_a_park_to_an_idle_connection_until_it_parks() {
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
        // Void (hyper was not between requests): suggested again at the next sweep.
        conn.unpark();
        sweeper.sweep(t0 + tick * 4);
        assert_eq!(conn.signal(&cx()), Signal::Park);
        conn.unpark();
        // Parked: not suggested while it stays so.
        let parked = conn.parked();
        sweeper.sweep(t0 + tick * 5);
        assert_eq!(conn.signal(&cx()), Signal::Run);
        drop(parked);
        // The close, a timeout after idle began, comes whatever the park did.
        sweeper.sweep(t0 + tick * 6);
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
