//! The approval console driven by a real headless browser: Debian's `chromium` through
//! `chromedriver` (both installed by `scripts/setup.sh`), spoken to in the W3C WebDriver protocol
//! (JSON over HTTP) with the harness's client. An MCP `tools/call` through a real Envoy is held by
//! approval-gate while a person signs in to the console, opens the pending request, reads it and
//! clicks Approve (the call then reaches the MCP server) or Deny (the agent gets
//! `approval_denied`).
//!
//! `WRITE_DOCS_SCREENSHOT=1 cargo test -p e2e --test approval_console` also writes the detail
//! page of the pending request to `docs/approval-console.png`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use e2e::{repo_root, ApprovalService, Client, Env, Resp};
use serde_json::{json, Value};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TEMPLATE: &str = include_str!("../configs/approval_gate.yaml");
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Bound on one WebDriver command (a navigation included).
const COMMAND: Duration = Duration::from_secs(20);
/// Bound on waiting for something to show up in the browser or to finish.
const UNTIL: Duration = Duration::from_secs(15);
/// The key of a web element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

async fn start() -> (ApprovalService, Env) {
    // The filter authenticates with a client token from its VM environment.
    ApprovalService::with_envoy(TEMPLATE).await.unwrap()
}

/// `chromedriver` on a free port in its own process group, with one browser session; the
/// session is deleted (the browser quits) and the group killed on drop, also on panic.
struct Browser {
    child: Option<Child>,
    addr: SocketAddr,
    session: String,
    log: PathBuf,
}

impl Browser {
    async fn start() -> Browser {
        for (bin, what) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromedriver")] {
            assert!(
                Path::new(bin).exists(),
                "{what} is not installed ({bin} missing): run ./scripts/setup.sh, which installs \
                 the Debian packages chromium and chromium-driver"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::env::temp_dir().join(format!(
            "guard-chromedriver-{}-{port}.log",
            std::process::id()
        ));
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .process_group(0)
            .spawn()
            .expect("starting chromedriver");
        let mut b = Browser {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            session: String::new(),
            log,
        };
        let deadline = Instant::now() + UNTIL;
        loop {
            if let Some(status) = b.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("chromedriver exited: {status}\n{}", b.log_text());
            }
            if let Ok(Ok(r)) =
                tokio::time::timeout(Duration::from_secs(2), b.client().get("/status").send()).await
            {
                if r.status == 200 && r.json().is_ok_and(|v| v["value"]["ready"] == true) {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready within {UNTIL:?}\n{}",
                b.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"]
            }
        }}});
        let v = b.command("POST", "/session", Some(caps)).await;
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id: {v}"))
            .to_owned();
        b
    }

    fn client(&self) -> Client {
        Client::new(self.addr)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One WebDriver command: the answer's `value`, or `Err` with the WebDriver error code.
    async fn try_command(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let req = self
            .client()
            .request(method, path, body.map(|b| b.to_string().into_bytes()));
        let r: Resp = tokio::time::timeout(COMMAND, req.send())
            .await
            .unwrap_or_else(|_| panic!("webdriver {method} {path}: no answer within {COMMAND:?}"))
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e:#}"));
        let v = r
            .json()
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e:#}"));
        if r.status == 200 {
            Ok(v["value"].clone())
        } else {
            Err(format!(
                "{}: {}",
                v["value"]["error"].as_str().unwrap_or("?"),
                v["value"]["message"].as_str().unwrap_or("")
            ))
        }
    }

    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        match self.try_command(method, path, body).await {
            Ok(v) => v,
            Err(e) => panic!("webdriver {method} {path}: {e}"),
        }
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    async fn go(&self, url: &str) {
        self.command("POST", &self.at("/url"), Some(json!({"url": url})))
            .await;
    }

    async fn url(&self) -> String {
        self.command("GET", &self.at("/url"), None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The first element matching a CSS selector, if any.
    async fn try_find(&self, css: &str) -> Option<String> {
        let body = json!({"using": "css selector", "value": css});
        match self
            .try_command("POST", &self.at("/element"), Some(body))
            .await
        {
            Ok(v) => Some(v[ELEMENT].as_str().unwrap().to_owned()),
            Err(e) if e.starts_with("no such element") => None,
            Err(e) => panic!("finding {css:?}: {e}"),
        }
    }

    async fn find(&self, css: &str) -> String {
        match self.try_find(css).await {
            Some(e) => e,
            None => panic!("no element {css:?} on {}", self.url().await),
        }
    }

    async fn find_all(&self, css: &str) -> Vec<String> {
        let body = json!({"using": "css selector", "value": css});
        let v = self
            .command("POST", &self.at("/elements"), Some(body))
            .await;
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e[ELEMENT].as_str().unwrap().to_owned())
            .collect()
    }

    /// Waits (bounded) until `css` matches, reloading `reload` between tries when given.
    async fn wait_for(&self, css: &str, reload: Option<&str>) -> String {
        let deadline = Instant::now() + UNTIL;
        loop {
            if let Some(e) = self.try_find(css).await {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "{css:?} did not appear within {UNTIL:?} on {}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(url) = reload {
                self.go(url).await;
            }
        }
    }

    async fn text(&self, element: &str) -> String {
        self.command("GET", &self.at(&format!("/element/{element}/text")), None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn type_into(&self, element: &str, text: &str) {
        self.command(
            "POST",
            &self.at(&format!("/element/{element}/value")),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn click(&self, element: &str) {
        self.command(
            "POST",
            &self.at(&format!("/element/{element}/click")),
            Some(json!({})),
        )
        .await;
    }

    /// The viewport as PNG bytes.
    async fn screenshot(&self) -> Vec<u8> {
        let v = self.command("GET", &self.at("/screenshot"), None).await;
        base64_decode(v.as_str().unwrap())
    }

    /// The detail page's `<th>name</th><td>value</td>` rows.
    async fn detail_rows(&self) -> Vec<(String, String)> {
        let mut rows = Vec::new();
        for tr in self.find_all("table tr").await {
            let mut cells = Vec::new();
            for css in ["th", "td"] {
                let body = json!({"using": "css selector", "value": css});
                let path = self.at(&format!("/element/{tr}/elements"));
                let found = self.command("POST", &path, Some(body)).await;
                match found.as_array().unwrap().first() {
                    Some(e) => cells.push(self.text(e[ELEMENT].as_str().unwrap()).await),
                    None => break,
                }
            }
            if let [k, v] = &cells[..] {
                rows.push((k.clone(), v.clone()));
            }
        }
        rows
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Quit the browser (a blocking, bounded DELETE: this may run while panicking), then
        // kill chromedriver's process group in case anything was left.
        if !self.session.is_empty() {
            if let Ok(mut s) = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = write!(
                    s,
                    "DELETE /session/{} HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\n\
                     connection: close\r\n\r\n",
                    self.session
                );
                let _ = s.read_to_end(&mut Vec::new());
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", c.id())])
                .stderr(Stdio::null())
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        } else {
            eprintln!("chromedriver log:\n{}", self.log_text());
        }
    }
}

/// Standard base64 (the WebDriver screenshot encoding).
fn base64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let d = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => panic!("not base64: {c:?}"),
        };
        acc = (acc << 6) | u32::from(d);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Width and height from a PNG's IHDR, after checking the signature.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && &png[12..16] == b"IHDR",
        "the screenshot is not a PNG"
    );
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&png[16..20]), be(&png[20..24]))
}

fn call(amount: u64) -> String {
    json!({"jsonrpc": "2.0", "id": 42, "method": "tools/call",
           "params": {"name": "pay", "arguments": {"amount": amount, "currency": "EUR"}}})
    .to_string()
}

/// A chat request whose answer (from the demo upstream) calls `pay` with `amount` EUR; the user
/// message carries an email address (PII for the console's excerpt).
fn chat(amount: u64, stream: bool) -> String {
    let args = json!({"amount": amount, "currency": "EUR"});
    json!({
        "model": "gpt-4o",
        "stream": stream,
        "messages": [
            {"role": "system", "content": "You are a payments assistant."},
            {"role": "user", "content": format!("pay the invoice of bob@example.com [[tool_args:{args}]]")}
        ],
        "tools": [{"type": "function", "function": {"name": "pay", "parameters": {"type": "object"}}}]
    })
    .to_string()
}

/// Where the gated payment comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Surface {
    /// An agent's MCP `tools/call`, held before it reaches the MCP server.
    Mcp,
    /// A tool call in a model answer, streamed or not, held before it reaches the client.
    Answer { stream: bool },
}

/// The request that carries (or whose answer carries) a `pay` of `amount` EUR.
async fn send(client: &Client, surface: Surface, path_prefix: &str, amount: u64) -> Resp {
    match surface {
        Surface::Mcp => client
            .post(&format!("{path_prefix}/mcp"), call(amount))
            .header("x-user", "alice")
            .header("mcp-session-id", "session-1")
            .send()
            .await
            .unwrap(),
        Surface::Answer { stream } => client
            .post(
                &format!("{path_prefix}/v1/chat/completions"),
                chat(amount, stream),
            )
            .header("x-user", "alice")
            .header("x-conversation-id", "conv-1")
            .send()
            .await
            .unwrap(),
    }
}

/// Signs in to the console with the approver token.
async fn sign_in(browser: &Browser, console: &str) {
    browser.go(&format!("{console}/login")).await;
    let token = browser
        .find("form[action='/login'] input[name='token']")
        .await;
    browser.type_into(&token, "approver-secret").await;
    let submit = browser
        .find("form[action='/login'] button[type='submit']")
        .await;
    browser.click(&submit).await;
    browser.wait_for("nav a[href='/logout']", None).await;
}

/// Opens the pending request (signed in), checks what it shows, and clicks `button`; `held`,
/// when given, must still wait until then. Returns the approval id.
async fn approve_or_deny(
    browser: &Browser,
    console: &str,
    button: &str,
    surface: Surface,
    screenshot: bool,
    held: Option<&tokio::task::JoinHandle<Resp>>,
) -> String {
    // The pending list shows the call (reload until it arrives); follow its link.
    let pending = "h2 + table a[href^='/approvals/']";
    let link = browser
        .wait_for(pending, Some(&format!("{console}/")))
        .await;
    browser.click(&link).await;
    browser
        .wait_for("form[action$='/decision'] textarea[name='reason']", None)
        .await;
    let url = browser.url().await;
    let id = url
        .rsplit_once("/approvals/")
        .map(|(_, id)| id.to_owned())
        .unwrap_or_else(|| panic!("not a detail page: {url}"));

    // The page shows what is being approved.
    let rows = browser.detail_rows().await;
    let row = |k: &str| {
        rows.iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {k:?} row in {rows:?}"))
    };
    assert_eq!(
        (row("tool"), row("caller"), row("status"), row("rule")),
        (
            "pay".into(),
            "alice".into(),
            "pending".into(),
            "big-payments".into()
        )
    );
    let pres = browser.find_all("pre").await;
    let arguments = browser.text(&pres[0]).await;
    let arguments: Value = serde_json::from_str(&arguments)
        .unwrap_or_else(|e| panic!("arguments on the page are not JSON ({e}): {arguments}"));
    assert_eq!(arguments["amount"], 1500);
    if let Surface::Answer { .. } = surface {
        // The conversation excerpt, with the end-user's email masked (this approver's role may
        // not see PII); the system prompt is not part of it.
        let excerpt = browser.text(&pres[1]).await;
        assert!(
            excerpt.starts_with("user: pay the invoice of [EMAIL]")
                && !excerpt.contains("bob@example.com"),
            "excerpt not shown masked: {excerpt}"
        );
        assert!(!excerpt.contains("payments assistant"), "{excerpt}");
    }

    if screenshot {
        let png = browser.screenshot().await;
        let (w, h) = png_size(&png);
        assert!(
            w >= 800 && h >= 400 && png.len() > 10_000,
            "a trivial screenshot: {w}x{h}, {} bytes",
            png.len()
        );
        if std::env::var("WRITE_DOCS_SCREENSHOT").as_deref() == Ok("1") {
            let path = repo_root().join("docs/approval-console.png");
            std::fs::write(&path, &png).unwrap();
            eprintln!("wrote {} ({w}x{h})", path.display());
        }
    }

    if let Some(held) = held {
        // Still held while the person reads.
        assert!(!held.is_finished(), "the call did not wait for a decision");
    }
    let reason = browser.find("textarea[name='reason']").await;
    browser
        .type_into(&reason, "checked with the customer by phone")
        .await;
    let value = button.to_lowercase();
    let button_el = browser
        .find(&format!(
            "form[action$='/decision'] button[name='decision'][value='{value}']"
        ))
        .await;
    assert_eq!(browser.text(&button_el).await, button);
    browser.click(&button_el).await;

    // Back on the detail page, decided.
    let status = if value == "approve" {
        "approved"
    } else {
        "denied"
    };
    browser.wait_for(&format!("td span.{status}"), None).await;
    let rows = browser.detail_rows().await;
    let decided: Vec<_> = rows
        .iter()
        .filter(|(k, _)| k == "decided by" || k == "reason")
        .cloned()
        .collect();
    assert_eq!(
        decided,
        vec![
            ("decided by".to_owned(), "ops".to_owned()),
            (
                "reason".to_owned(),
                "checked with the customer by phone".to_owned()
            )
        ]
    );
    id
}

/// Holds a 1500 EUR payment from `surface`, decides it in the browser by clicking `button`
/// ("Approve" or "Deny"), and returns the client's answer and the approval id.
async fn decide_in_browser(surface: Surface, button: &str, screenshot: bool) -> (Resp, String) {
    let (svc, env) = start().await;
    let browser = Browser::start().await;
    let console = format!("http://{}", svc.addr);
    let held = tokio::spawn({
        let client = env.client();
        async move { send(&client, surface, "", 1500).await }
    });
    sign_in(&browser, &console).await;
    let id = approve_or_deny(&browser, &console, button, surface, screenshot, Some(&held)).await;
    let r = tokio::time::timeout(UNTIL, held)
        .await
        .expect("the held call did not complete after the decision")
        .unwrap();
    drop(browser);
    env.finish();
    (r, id)
}

/// The MCP server ran the payment (a tool result from the demo upstream).
fn assert_executed(r: &Resp) {
    let v = r.json().unwrap();
    let text = v["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("not a tool result: {v}"));
    let result: Value = serde_json::from_str(text).unwrap();
    assert_eq!(result["executed"], "pay", "{result}");
    assert_eq!(
        result["arguments"],
        json!({"amount": 1500, "currency": "EUR"})
    );
}

/// The answer the client got, assembled (whole or streamed): text content and tool calls
/// (name, arguments) of choice 0, and the finish reason.
fn answer_of(r: &Resp, stream: bool) -> (String, Vec<(String, Value)>, String) {
    assert_eq!(r.status, 200, "{}", r.text());
    if !stream {
        let v = r.json().unwrap();
        let c = &v["choices"][0];
        let calls = c["message"]["tool_calls"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|t| {
                let args = t["function"]["arguments"].as_str().unwrap();
                (
                    t["function"]["name"].as_str().unwrap().to_owned(),
                    serde_json::from_str(args).unwrap(),
                )
            })
            .collect();
        return (
            c["message"]["content"].as_str().unwrap_or("").to_owned(),
            calls,
            c["finish_reason"].as_str().unwrap().to_owned(),
        );
    }
    let text = r.text();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let mut content = String::new();
    let mut calls: Vec<(String, String)> = Vec::new();
    let mut finish = String::new();
    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        let c = &v["choices"][0];
        if let Some(t) = c["delta"]["content"].as_str() {
            content.push_str(t);
        }
        for t in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let i = t["index"].as_u64().unwrap() as usize;
            if calls.len() <= i {
                calls.resize(i + 1, (String::new(), String::new()));
            }
            if let Some(n) = t["function"]["name"].as_str() {
                calls[i].0.push_str(n);
            }
            if let Some(a) = t["function"]["arguments"].as_str() {
                calls[i].1.push_str(a);
            }
        }
        if let Some(f) = c["finish_reason"].as_str() {
            finish = f.to_owned();
        }
    }
    let calls = calls
        .into_iter()
        .map(|(n, a)| (n, serde_json::from_str(&a).unwrap()))
        .collect();
    (content, calls, finish)
}

const PAYMENT: fn() -> Value = || json!({"amount": 1500, "currency": "EUR"});

#[tokio::test]
async fn a_person_approves_a_held_payment_in_the_console() {
    let started = Instant::now();
    let (r, _) = decide_in_browser(Surface::Mcp, "Approve", true).await;
    assert_executed(&r);
    eprintln!("approve scenario: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_person_denies_a_held_payment_in_the_console() {
    let started = Instant::now();
    let (r, id) = decide_in_browser(Surface::Mcp, "Deny", false).await;
    let v = r.json().unwrap();
    assert_eq!(v["id"], 42, "{v}");
    assert_eq!(v["error"]["code"], -32001, "{v}");
    assert_eq!(
        (
            &v["error"]["data"]["reason"],
            &v["error"]["data"]["approval_id"]
        ),
        (&json!("approval_denied"), &json!(id)),
        "{v}"
    );
    eprintln!("deny scenario: {:?}", started.elapsed());
}

/// A payment the model calls in its answer, streamed or not, waits for the person: approved →
/// the answer reaches the client unchanged; denied → the call is replaced by a deterministic
/// message in the same shape (a stream stays a stream).
#[tokio::test]
async fn a_person_decides_a_payment_in_a_model_answer_in_the_console() {
    for stream in [false, true] {
        let surface = Surface::Answer { stream };
        let (r, _) = decide_in_browser(surface, "Approve", false).await;
        let (_, calls, finish) = answer_of(&r, stream);
        assert_eq!(
            calls,
            vec![("pay".to_owned(), PAYMENT())],
            "stream {stream}"
        );
        assert_eq!(finish, "tool_calls");

        let (r, _) = decide_in_browser(surface, "Deny", false).await;
        let (content, calls, finish) = answer_of(&r, stream);
        assert!(calls.is_empty(), "stream {stream}: {calls:?}");
        assert_eq!(
            (content.as_str(), finish.as_str()),
            (
                "The tool call `pay` was not run: a person denied it (checked with the customer by phone).",
                "stop"
            ),
            "stream {stream}"
        );
    }
}

/// `defer`: the answer comes back at once with the call replaced by a message naming its
/// approval; the person approves it in the console; a retry whose call has other arguments is
/// refused, the unchanged retry goes through once, and a second use is refused.
#[tokio::test]
async fn a_deferred_payment_approved_in_the_console_covers_exactly_its_call_once() {
    let (svc, env) = start().await;
    let browser = Browser::start().await;
    let console = format!("http://{}", svc.addr);
    sign_in(&browser, &console).await;
    for stream in [false, true] {
        let surface = Surface::Answer { stream };
        let client = env.client();
        let r = send(&client, surface, "/defer", 1500).await;
        let (content, calls, finish) = answer_of(&r, stream);
        assert!(calls.is_empty() && finish == "stop", "{content} {calls:?}");
        let id = content
            .split_once("approval id ")
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(id, _)| id.to_owned())
            .unwrap_or_else(|| panic!("no approval id in {content:?}"));
        assert_eq!(
            content,
            format!("The tool call `pay` was not run: it waits for a person's approval (approval id {id}); once approved, send the same request again with the header `x-approval-id: {id}`.")
        );
        let decided = approve_or_deny(&browser, &console, "Approve", surface, false, None).await;
        assert_eq!(decided, id);

        let retry = |amount: u64| {
            let client = env.client();
            let id = id.clone();
            async move {
                client
                    .post("/defer/v1/chat/completions", chat(amount, stream))
                    .header("x-user", "alice")
                    .header("x-conversation-id", "conv-1")
                    .header("x-approval-id", &id)
                    .send()
                    .await
                    .unwrap()
            }
        };
        // The model now calls pay with other arguments: not what the person approved.
        let (content, calls, _) = answer_of(&retry(9000).await, stream);
        assert!(calls.is_empty(), "{calls:?}");
        assert!(
            content.contains("the approval does not cover this tool call"),
            "{content}"
        );
        // The unchanged call passes, once.
        let (_, calls, finish) = answer_of(&retry(1500).await, stream);
        assert_eq!(calls, vec![("pay".to_owned(), PAYMENT())]);
        assert_eq!(finish, "tool_calls");
        let (content, calls, _) = answer_of(&retry(1500).await, stream);
        assert!(calls.is_empty(), "{calls:?}");
        assert!(
            content.contains("the approval does not cover this tool call"),
            "{content}"
        );
    }
    drop(browser);
    env.finish();
}
