//! The connection layer: accepts TCP connections and serves each with hyper's
//! HTTP/1, within bounds a slow or hostile client cannot push the daemon past.
//!
//! - **Header timeout** (`server.header_timeout_secs`): a connection that has not
//!   sent a whole request head this long after it opened, or after its last
//!   answer (an idle keep-alive connection), is closed and counted.
//! - **Connection cap** (`server.max_connections`, lowered at start to what the
//!   open-file limit allows, see [`fit_to_file_limit`]): when a new connection
//!   arrives at the cap, the connection that has been idle longest (no request in
//!   progress: still sending its head, or between requests) is closed to make room
//!   and counted as evicted, so that idle or half-open sockets can never lock
//!   clients out. When every connection has a request in progress, the new one is
//!   answered at once with 503 `too_many_connections` and closed, and counted.
//! - **Head size** (`server.max_header_bytes`): hyper refuses a larger request
//!   head with 431 and closes the connection.
//!
//! Shutdown: stop accepting, let every connection finish the request it is
//! serving (hyper's graceful shutdown closes idle ones at once), then return.
//! Errors that hyper's HTTP/1 parser finds before a request exists (a malformed
//! request line or header, an invalid Content-Length, a head over the limit) are
//! answered by hyper itself; [`ParseErrors`] gives that answer the JSON error
//! shape the router gives everything else.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::parse_errors::ParseErrors;

/// File descriptors kept free for everything but client connections: the
/// database and its WAL, model files, SMTP, the log, the listener.
pub const RESERVED_FDS: u64 = 64;

/// The bounds of the connection layer.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
}

/// Counters of the connection layer, exported on /metrics.
#[derive(Debug, Default)]
pub struct ConnStats {
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub evicted: AtomicU64,
    pub header_timeouts: AtomicU64,
    /// Connections closed after a request head the HTTP parser refused.
    pub malformed: AtomicU64,
    pub accept_errors: AtomicU64,
}

/// One open connection, as the accept loop sees it.
struct Entry {
    /// Requests in progress (from the head read to the last byte of the answer).
    busy: Arc<AtomicUsize>,
    /// When it last became idle (opened, or finished an answer), as
    /// milliseconds since the layer started.
    idle_since: Arc<AtomicU64>,
    close: CancellationToken,
}

/// The open connections by id (ids grow, so the map is in opening order).
#[derive(Default)]
struct Registry {
    entries: Mutex<BTreeMap<u64, Entry>>,
}

impl Registry {
    /// Closes the connection idle the longest; `false` when none is idle.
    fn evict_idle(&self) -> bool {
        let Ok(mut entries) = self.entries.lock() else {
            return false;
        };
        let victim = entries
            .iter()
            .filter(|(_, e)| e.busy.load(Ordering::Acquire) == 0)
            .min_by_key(|(_, e)| e.idle_since.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        match victim.and_then(|id| entries.remove(&id)) {
            Some(e) => {
                e.close.cancel();
                true
            }
            None => false,
        }
    }

    fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }
}

/// Lowers `wanted` connections to what the process's open-file limit allows,
/// first raising the soft limit to the hard one (as servers commonly do: the
/// soft default of 1,024 is meant for programs that use `select`). Returns the
/// connection cap and the soft limit now in force.
pub fn fit_to_file_limit(wanted: usize) -> (usize, u64) {
    let soft = raise_nofile_limit();
    let room = soft.saturating_sub(RESERVED_FDS).max(1);
    (
        wanted.min(usize::try_from(room).unwrap_or(usize::MAX)),
        soft,
    )
}

/// RLIMIT_NOFILE's soft and hard limits; `None` when they cannot be read.
fn nofile_rlimit() -> Option<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and pass by pointer.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim)
}

/// RLIMIT_NOFILE's soft limit now (the most descriptors the process may open);
/// 0 when it cannot be read.
pub fn nofile_limit() -> u64 {
    nofile_rlimit().map_or(0, |lim| lim.rlim_cur)
}

/// Raises RLIMIT_NOFILE's soft limit to its hard limit; returns the soft limit.
fn raise_nofile_limit() -> u64 {
    let Some(mut lim) = nofile_rlimit() else {
        return 1024;
    };
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own; raising the soft limit up to
        // the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    lim.rlim_cur
}

/// Serves `app` on `listener` until `stop` fires and every connection has
/// finished its request.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    stats: Arc<ConnStats>,
    stop: CancellationToken,
) {
    let registry = Arc::new(Registry::default());
    // Signalled each time a connection's socket is closed.
    let closed = Arc::new(Notify::new());
    let connections = TaskTracker::new();
    // Refusals answer with a 503 and wait briefly for the client to read it;
    // beyond this many at once (they take descriptors from the reserve), a
    // refused socket is just closed.
    let refusals = Arc::new(Semaphore::new(16));
    let epoch = Instant::now();
    let mut next_id = 0u64;
    let shared = Arc::new(Shared {
        app,
        limits,
        stats: stats.clone(),
        registry: registry.clone(),
        closed: closed.clone(),
        stop: stop.clone(),
    });
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    accept_failed(&stats, &e).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let room = tokio::select! {
            room = make_room(&registry, &stats, &closed, limits.max_connections) => room,
            () = stop.cancelled() => break,
        };
        if !room {
            refuse(stream, &stats, &refusals);
            continue;
        }
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let entry = Entry {
            busy: Arc::new(AtomicUsize::new(0)),
            idle_since: Arc::new(AtomicU64::new(millis_since(epoch))),
            close: CancellationToken::new(),
        };
        let conn = Conn {
            id: next_id,
            busy: entry.busy.clone(),
            idle_since: entry.idle_since.clone(),
            close: entry.close.clone(),
            epoch,
        };
        if let Ok(mut entries) = registry.entries.lock() {
            entries.insert(next_id, entry);
        }
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        connections.spawn(serve_one(stream, conn, shared.clone()));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Waits until fewer than `max` sockets are open, closing the longest-idle
/// connections for it; `false` when every open connection is busy. Sockets are
/// counted until they are closed (not merely told to close), so a burst of new
/// connections can never hold more descriptors than the cap allows.
async fn make_room(registry: &Registry, stats: &ConnStats, closed: &Notify, max: usize) -> bool {
    loop {
        let notified = closed.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if stats.open.load(Ordering::Acquire) < max as u64 {
            return true;
        }
        if registry.len() >= max {
            if !registry.evict_idle() {
                return false;
            }
            let evicted = stats.evicted.fetch_add(1, Ordering::Relaxed) + 1;
            if evicted.is_power_of_two() {
                tracing::warn!(
                    evicted,
                    max_connections = max,
                    "connection limit reached: closed the longest-idle connection to make room \
                     (many idle or slow clients?)"
                );
            }
        }
        // An evicted connection closes its socket as soon as its task runs.
        notified.await;
    }
}

/// What every connection's task shares.
struct Shared {
    app: Router,
    limits: ConnLimits,
    stats: Arc<ConnStats>,
    registry: Arc<Registry>,
    /// Signalled each time a connection's socket is closed.
    closed: Arc<Notify>,
    stop: CancellationToken,
}

/// What a connection's task needs of its registry entry.
struct Conn {
    id: u64,
    busy: Arc<AtomicUsize>,
    idle_since: Arc<AtomicU64>,
    close: CancellationToken,
    epoch: Instant,
}

async fn serve_one(stream: TcpStream, conn: Conn, shared: Arc<Shared>) {
    let Shared {
        app,
        limits,
        stats,
        registry,
        closed,
        stop,
    } = &*shared;
    let app = app.clone();
    let (busy, idle_since, epoch) = (conn.busy.clone(), conn.idle_since.clone(), conn.epoch);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let guard = Busy::enter(busy.clone(), idle_since.clone(), epoch);
        let answer = app.clone().oneshot(req.map(Body::new));
        async move {
            let response: Response = match answer.await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            // The request counts as in progress until its answer is written.
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(Tracked {
                    body,
                    _guard: guard,
                })
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // The read buffer (head, and body as it streams) stays small per connection.
        .max_buf_size(limits.max_header_bytes.max(64 * 1024))
        .max_header_size(limits.max_header_bytes);
    let result = {
        let served = builder.serve_connection(
            TokioIo::new(ParseErrors::new(stream, limits.max_header_bytes)),
            service,
        );
        let mut served = std::pin::pin!(served);
        let mut shutting_down = false;
        loop {
            tokio::select! {
                r = served.as_mut() => break r,
                () = conn.close.cancelled(), if !shutting_down => {},
                () = stop.cancelled(), if !shutting_down => {},
            }
            // Evicted, or the daemon is stopping. `served` is not being polled here,
            // so no request can begin while this looks: with none in progress the
            // connection (idle, or with a head half sent) is closed now; otherwise it
            // finishes its request first.
            if conn.busy.load(Ordering::Acquire) == 0 {
                break Ok(());
            }
            shutting_down = true;
            served.as_mut().graceful_shutdown();
        }
        // The connection, and its socket, are dropped here.
    };
    if let Err(e) = result {
        if e.is_timeout() {
            stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
        } else if e.is_parse() {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "request head refused by the HTTP parser");
        } else {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
    if let Ok(mut entries) = registry.entries.lock() {
        entries.remove(&conn.id);
    }
    stats.open.fetch_sub(1, Ordering::AcqRel);
    closed.notify_waiters();
}

/// Answers a connection over the cap with 503 and closes it, after giving the
/// client a moment to read the answer (closing with its request unread would
/// reset the connection and lose the answer).
fn refuse(stream: TcpStream, stats: &ConnStats, refusals: &Arc<Semaphore>) {
    let refused = stats.refused.fetch_add(1, Ordering::Relaxed) + 1;
    if refused.is_power_of_two() {
        tracing::warn!(
            refused,
            "connection limit reached with every connection busy: new connections are \
             refused with 503 (raise server.max_connections, or add replicas)"
        );
    }
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let mut stream = stream;
        let _ = stream.write_all(REFUSAL).await;
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        let drain = async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
        drop(permit);
    });
}

const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 123\r\n\
\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"every connection is busy: server.max_connections reached; retry later\"}}";

/// Logs a failed accept (the open-file limit, most likely) and pauses briefly so
/// that a persistent error does not spin.
async fn accept_failed(stats: &ConnStats, e: &std::io::Error) {
    let n = stats.accept_errors.fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        tracing::error!(error = %e, accept_errors = n, "cannot accept connections (out of file descriptors?)");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Marks a connection busy for as long as it lives.
struct Busy {
    busy: Arc<AtomicUsize>,
    idle_since: Arc<AtomicU64>,
    epoch: Instant,
}

impl Busy {
    fn enter(busy: Arc<AtomicUsize>, idle_since: Arc<AtomicU64>, epoch: Instant) -> Busy {
        busy.fetch_add(1, Ordering::AcqRel);
        Busy {
            busy,
            idle_since,
            epoch,
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.idle_since
            .store(millis_since(self.epoch), Ordering::Relaxed);
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection marked busy until hyper has
/// written it (and dropped it).
struct Tracked {
    body: Body,
    _guard: Busy,
}

impl HttpBody for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_one_well_formed_json_answer() {
        let (_, body) = crate::server::parse_errors::tests::parts(REFUSAL);
        assert_eq!(body["error"]["code"], "too_many_connections");
    }

    #[test]
    fn eviction_takes_the_longest_idle_connection_and_never_a_busy_one() {
        let registry = Registry::default();
        let add = |id: u64, busy: usize, idle: u64| {
            let e = Entry {
                busy: Arc::new(AtomicUsize::new(busy)),
                idle_since: Arc::new(AtomicU64::new(idle)),
                close: CancellationToken::new(),
            };
            let close = e.close.clone();
            registry.entries.lock().unwrap().insert(id, e);
            close
        };
        let busy_old = add(1, 1, 0);
        let idle_recent = add(2, 0, 50);
        let idle_long = add(3, 0, 10);
        assert!(registry.evict_idle());
        assert!(idle_long.is_cancelled() && !busy_old.is_cancelled());
        assert!(registry.evict_idle());
        assert!(idle_recent.is_cancelled());
        assert!(!registry.evict_idle(), "only a busy connection is left");
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn the_cap_leaves_room_for_the_daemons_own_files() {
        let (cap, soft) = fit_to_file_limit(usize::MAX);
        assert_eq!(cap as u64, soft - RESERVED_FDS);
        assert_eq!(fit_to_file_limit(10).0, 10);
    }
}
