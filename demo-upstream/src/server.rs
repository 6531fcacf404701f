//! The running server: binding, HTTP/1.1 and h2c (prior knowledge) connections through
//! hyper-util's auto builder, the record of received requests, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::handler;

/// How long shutdown waits for in-flight connections before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Server options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Bytes per SSE body chunk (0 = the whole stream in one chunk). Default 16.
    pub chunk_size: usize,
    /// Pause between SSE body chunks. Default 0.
    pub chunk_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            chunk_size: 16,
            chunk_delay: Duration::ZERO,
        }
    }
}

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Method, e.g. `POST`.
    pub method: String,
    /// Path and query, e.g. `/v1/chat/completions`.
    pub path: String,
    /// Headers in received order (names lower-case; HTTP/2 pseudo-headers excluded).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body (up to the 64 MiB limit).
    pub body: Vec<u8>,
    /// Request trailers (HTTP/2, or chunked HTTP/1.1).
    pub trailers: Vec<(String, Vec<u8>)>,
}

/// Shared by every connection of one server.
pub(crate) struct State {
    pub(crate) options: Options,
    recorded: Mutex<Vec<Recorded>>,
    seq: AtomicU64,
}

impl State {
    fn new(options: Options) -> State {
        State {
            options,
            recorded: Mutex::new(Vec::new()),
            seq: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Recorded>> {
        self.recorded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn record(&self, request: Recorded) {
        self.lock().push(request);
    }

    pub(crate) fn received(&self) -> Vec<Recorded> {
        self.lock().clone()
    }

    /// Sequence number for the next answer (ids are derived from it).
    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }
}

/// A running upstream. Dropping it also stops the server (without waiting).
pub struct Upstream {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Binds `addr` (port 0 picks a free port) and serves in background tasks.
    pub async fn start(addr: SocketAddr, opts: Options) -> anyhow::Result<Upstream> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let state = Arc::new(State::new(opts));
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&state), rx));
        Ok(Upstream {
            addr,
            state,
            shutdown,
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in order (`/healthz` and `/__recorded` excluded).
    pub fn received(&self) -> Vec<Recorded> {
        self.state.received()
    }

    /// Forgets the recorded requests.
    pub fn clear(&self) {
        self.state.lock().clear();
    }

    /// Stops accepting, lets in-flight connections finish (up to 2 s), then returns.
    /// Stop accepting new connections without waiting (to test an upstream outage while the
    /// handle stays owned by a harness).
    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }

    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // A sent value or a dropped sender both mean "stop".
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(stream, Arc::clone(&state), shutdown.clone()));
                }
                // Transient accept errors (e.g. too many open files): back off briefly.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

async fn serve_connection(
    stream: TcpStream,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let service = service_fn(move |request| {
        let state = Arc::clone(&state);
        async move {
            let response = handler::handle(&state, request).await;
            // A scripted failure before the headers: no answer, the connection is closed.
            match response.extensions().get::<handler::Failure>().copied() {
                None => Ok(response),
                Some(failure) => {
                    if let handler::Failure::Hang(d) = failure {
                        tokio::time::sleep(d).await;
                    }
                    Err(std::io::Error::other("scripted failure before the headers"))
                }
            }
        }
    });
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = shutdown.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
