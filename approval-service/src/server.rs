//! The running server: accept loop (HTTP/1.1 and h2c through hyper-util's auto builder),
//! shared state, routing, and the in-memory waiters of long polls.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::auth::Auth;
use crate::excerpt::Masker;
use crate::http::{self, Resp};
use crate::store::Store;
use crate::{api, console, reviews};

/// How long shutdown waits for in-flight connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// At most this many ids with waiters; beyond, waits fall back to periodic re-checks.
const MAX_WAITED_IDS: usize = 10_000;

/// Shared by every connection.
pub struct State {
    pub store: Arc<Store>,
    pub auth: Auth,
    /// Masks conversation excerpts (pii-redact's default policy).
    pub masker: Masker,
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
}

impl State {
    pub fn new(store: Store, auth: Auth, masker: Masker) -> State {
        State {
            store: Arc::new(store),
            auth,
            masker,
            waiters: Mutex::new(HashMap::new()),
        }
    }

    fn waiters(&self) -> MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The notifier of `id` for a waiter (None when the map is full).
    pub fn waiter(&self, id: &str) -> Option<Arc<Notify>> {
        let mut map = self.waiters();
        if let Some(n) = map.get(id) {
            return Some(Arc::clone(n));
        }
        if map.len() >= MAX_WAITED_IDS {
            return None;
        }
        let n = Arc::new(Notify::new());
        map.insert(id.to_owned(), Arc::clone(&n));
        Some(n)
    }

    /// Drops the notifier of `id` once its last waiter is gone.
    pub fn release_waiter(&self, id: &str, notify: Arc<Notify>) {
        let mut map = self.waiters();
        drop(notify);
        if map.get(id).is_some_and(|n| Arc::strong_count(n) == 1) {
            map.remove(id);
        }
    }

    /// Wakes every waiter of `id`.
    pub fn notify(&self, id: &str) {
        if let Some(n) = self.waiters().get(id) {
            n.notify_waiters();
        }
    }

    /// Runs a store call on the blocking pool.
    pub async fn db<T, F>(&self, f: F) -> Result<T, Resp>
    where
        F: FnOnce(&Store) -> T + Send + 'static,
        T: Send + 'static,
    {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|_| internal())
    }
}

pub fn internal() -> Resp {
    http::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error (see the service log)",
    )
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Routes one request.
async fn handle(state: Arc<State>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method().clone();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => http::json(StatusCode::OK, &serde_json::json!({"ok": true})),
        (&Method::POST, ["v1", "approvals"]) => api::create(&state, req).await,
        (&Method::GET, ["v1", "approvals", id]) => api::get(&state, req.headers(), id).await,
        (&Method::GET, ["v1", "approvals", id, "wait"]) => api::wait(&state, &req, id).await,
        (&Method::POST, ["v1", "approvals", id, "decision"]) => {
            let id = (*id).to_owned();
            api::decide(&state, req, &id).await
        }
        (&Method::POST, ["v1", "approvals", id, "consume"]) => {
            let id = (*id).to_owned();
            api::consume(&state, req, &id).await
        }
        (&Method::POST, ["v1", "reviews"]) => reviews::create(&state, req).await,
        (&Method::GET, ["v1", "reviews"]) => reviews::list(&state, &req).await,
        (&Method::GET, ["v1", "reviews", id]) => reviews::get(&state, req.headers(), id).await,
        (&Method::POST, ["v1", "reviews", id, "resolve"]) => {
            let id = (*id).to_owned();
            reviews::resolve(&state, req, &id).await
        }
        (_, ["v1", "approvals" | "reviews", ..] | ["healthz"]) => http::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this endpoint",
        ),
        (_, ["v1", ..]) => http::error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
        _ => console::handle(&state, req, &segments).await,
    }
}

/// Serves on `listener` until `shutdown` fires.
pub async fn serve(listener: TcpListener, state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(stream, Arc::clone(&state), shutdown.clone()));
                }
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
        async move { Ok::<_, Infallible>(handle(state, request).await) }
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
