//! Test harness: runs the real binary on a free loopback port with a temp database and
//! talks HTTP/1.1 over std `TcpStream` (bounded timeouts).
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;

pub const CLIENT: &str = "client-secret-1";
pub const OPS: &str = "ops-token-secret";
pub const PII: &str = "pii-token-secret";
pub const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A scratch directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "approval-service-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn db(&self) -> PathBuf {
        self.0.join("approvals.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The running service; killed on drop.
pub struct Service {
    child: Child,
    pub addr: String,
}

/// The default flags of the tests: client token, two approvers (ops without PII, pia with).
pub fn default_flags() -> Vec<String> {
    [
        "--client-token",
        CLIENT,
        "--approver-token",
        &format!("ops:approver:{OPS}"),
        "--approver-token",
        &format!("pia:approver+pii:{PII}"),
        "--pii-roles",
        "pii",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

impl Service {
    pub fn start(db: &Path, flags: &[String]) -> Service {
        let mut child = Command::new(env!("CARGO_BIN_EXE_approval-service"))
            .arg("--addr")
            .arg("127.0.0.1:0")
            .arg("--db")
            .arg(db)
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("the service did not start within 10 s");
            }
        };
        let addr = line
            .trim()
            .strip_prefix("approval-service listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Service { child, addr }
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        request(&self.addr, method, path, headers, body)
    }

    /// JSON request with the client token.
    pub fn client(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        self.request(
            method,
            path,
            &[
                ("x-approval-client-token", CLIENT),
                ("content-type", "application/json"),
            ],
            body.as_bytes(),
        )
    }

    /// JSON request as an approver.
    pub fn approver(&self, token: &str, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let auth = format!("Bearer {token}");
        self.request(
            method,
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.as_bytes(),
        )
    }

    /// Creates a request (`extra`'s fields replace the defaults; a null leaves one out);
    /// returns its id.
    pub fn create(&self, extra: Value) -> String {
        let mut body = serde_json::json!({
            "tool": "payments.send",
            "arguments": {"amount": 1500, "currency": "EUR"},
            "digest": DIGEST,
            "caller": "alice",
            "conversation": "conv-1",
            "excerpt": "pay [EMAIL] now",
            "rule": "big-payments",
            "mode": "defer",
            "expires_in_s": 300,
            "request_id": "req-1",
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                if v.is_null() {
                    b.remove(k);
                } else {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
        let r = self.client("POST", "/v1/approvals", Some(&body));
        assert_eq!(r.status, 201, "{}", r.text());
        let j = r.json();
        assert_eq!(j["status"], "pending");
        assert!(j["expires_at"].as_i64().unwrap() > 0);
        j["id"].as_str().unwrap().to_owned()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP reply.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

/// One HTTP/1.1 request (`connection: close`), 15 s timeouts.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut rest = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        rest = dechunk(&rest);
    }
    Reply {
        status,
        headers,
        body: rest,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_str = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
    out
}
