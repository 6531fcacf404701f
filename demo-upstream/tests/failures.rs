//! Scripted upstream failures: `reset` and `hang` fail before the response headers (the
//! connection closes with no answer), `cut` sends the headers and part of the body, then
//! aborts the connection. Seen from a raw TCP client, so nothing hides how the connection ended.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use demo_upstream::{Options, Upstream};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Send one HTTP/1.1 request with `body` and read until the server closes the connection.
async fn exchange(upstream: &Upstream, path: &str, body: &str, headers: &str) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(upstream.addr())
        .await
        .unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{headers}\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .ok();
    out
}

fn chat(text: &str, stream: bool) -> String {
    json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": text}]})
        .to_string()
}

async fn start() -> Upstream {
    Upstream::start("127.0.0.1:0".parse().unwrap(), Options::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn reset_closes_the_connection_before_any_header() {
    let up = start().await;
    for (body, header) in [
        (chat("hi [[reset]]", false), ""),
        (chat("hi", true), "x-demo-scenario: reset\r\n"),
    ] {
        let got = exchange(&up, "/v1/chat/completions", &body, header).await;
        assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    }
    // Recorded like any request.
    assert_eq!(up.received().len(), 2);
}

#[tokio::test]
async fn hang_answers_nothing_for_its_time() {
    let up = start().await;
    let t0 = Instant::now();
    let got = exchange(&up, "/v1/messages", &chat("[[hang:400]]", false), "").await;
    assert!(got.is_empty());
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn cut_sends_headers_and_part_of_the_body() {
    let up = start().await;
    // A stream: headers, the first event, then the connection ends without the last chunk.
    let got = exchange(&up, "/v1/chat/completions", &chat("hi [[cut]]", true), "").await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("content-type: text/event-stream"), "{text}");
    assert!(text.contains("data: {"), "{text}");
    assert_eq!(text.matches("data: ").count(), 1, "{text}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "the chunked body was terminated: {text}"
    );
    assert!(!text.contains("[DONE]"));
    // A byte count, through the header.
    let got = exchange(
        &up,
        "/v1/chat/completions",
        &chat("hi", true),
        "x-demo-scenario: cut:40\r\nx-demo-chunk-size: 0\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&got);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(body.starts_with("28\r\n"), "one 40-byte chunk: {text}");
    // A JSON answer announces its length and stops short.
    let got = exchange(
        &up,
        "/v1/chat/completions",
        &chat("hi [[cut:10]]", false),
        "",
    )
    .await;
    let text = String::from_utf8_lossy(&got);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(body.len(), 10);
    assert!(len > 10);
}
