//! Recording of received requests (body, headers, trailers), service routes, limits and
//! shutdown.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::*;
use demo_upstream::{Options, MAX_BODY_BYTES};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn records_body_headers_and_h2_trailers() {
    let upstream = start(Options::default()).await;
    let addr = upstream.addr();
    let mut trailers = HeaderMap::new();
    trailers.insert(
        HeaderName::from_static("x-checksum"),
        HeaderValue::from_static("abc123"),
    );
    let body = TestBody::with_trailers(
        vec![br#"{"messages":[{"role":"user","#, br#""content":"hi"}]}"#],
        trailers,
    );
    let req = request(
        addr,
        "POST",
        "/v1/chat/completions?trace=1",
        &[("x-tenant", "acme")],
        body,
    );
    let resp = send(addr, Proto::H2, req).await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        extract_json(Api::Chat, &resp.json()).got,
        Got::Text("You said: hi".into())
    );

    let seen = upstream.received();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/chat/completions?trace=1");
    assert_eq!(r.body, br#"{"messages":[{"role":"user","content":"hi"}]}"#);
    assert!(r
        .headers
        .contains(&("x-tenant".to_owned(), b"acme".to_vec())));
    assert_eq!(
        r.trailers,
        vec![("x-checksum".to_owned(), b"abc123".to_vec())]
    );

    upstream.clear();
    assert!(upstream.received().is_empty());
    upstream.shutdown().await;
}

#[tokio::test]
async fn records_h1_chunked_trailers() {
    let upstream = start(Options::default()).await;
    let addr = upstream.addr();
    let body = br#"{"input":"hello"}"#;
    let raw = format!(
        "POST /v1/responses HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ntrailer: x-sig\r\nconnection: close\r\n\r\n{:x}\r\n{}\r\n0\r\nx-sig: s1\r\n\r\n",
        body.len(),
        std::str::from_utf8(body).unwrap()
    );
    let out = tokio::time::timeout(TIMEOUT, async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(raw.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.unwrap();
        out
    })
    .await
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("You said: hello"));
    let seen = upstream.received();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, body);
    assert_eq!(seen[0].trailers, vec![("x-sig".to_owned(), b"s1".to_vec())]);
    upstream.shutdown().await;
}

#[tokio::test]
async fn records_in_order_and_serves_service_routes() {
    let upstream = start(Options::default()).await;
    let addr = upstream.addr();
    for (i, api) in APIS.iter().enumerate() {
        let resp = post_json(
            addr,
            Proto::H1,
            api.path(),
            &[],
            &api.request(&format!("msg {i}"), i == 1),
        )
        .await;
        assert_eq!(resp.status, 200);
    }
    let resp = send(
        addr,
        Proto::H1,
        request(addr, "GET", "/healthz", &[], TestBody::empty()),
    )
    .await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "ok"));
    let resp = send(
        addr,
        Proto::H2,
        request(addr, "GET", "/nope", &[], TestBody::empty()),
    )
    .await;
    assert_eq!(resp.status, 404);
    assert!(resp.json()["error"]["message"].is_string());
    let resp = send(
        addr,
        Proto::H1,
        request(addr, "GET", "/v1/messages", &[], TestBody::empty()),
    )
    .await;
    assert_eq!(resp.status, 405);
    assert_eq!(resp.json()["type"], "error");

    let paths: Vec<String> = upstream.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/v1/chat/completions",
            "/v1/responses",
            "/v1/messages",
            "/nope",
            "/v1/messages"
        ],
        "healthz is not recorded"
    );

    let resp = send(
        addr,
        Proto::H1,
        request(addr, "GET", "/__recorded", &[], TestBody::empty()),
    )
    .await;
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let v: Value = resp.json();
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 5);
    assert_eq!(list[0]["method"], "POST");
    let body0 = Api::Chat.request("msg 0", false).to_string();
    assert_eq!(list[0]["body"], json!(body0));
    assert_eq!(list[0]["body_len"], json!(body0.len()));
    assert!(list[0]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h[0] == "content-type"));
    upstream.shutdown().await;
}

#[tokio::test]
async fn body_limit() {
    let upstream = start(Options::default()).await;
    let addr = upstream.addr();
    // Exactly at the limit: a valid JSON document padded with spaces.
    let doc = br#"{"input":"big"}"#;
    let mut fits = doc.to_vec();
    fits.resize(MAX_BODY_BYTES, b' ');
    let resp = send(
        addr,
        Proto::H1,
        request(addr, "POST", "/v1/responses", &[], TestBody::bytes(fits)),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        extract_json(Api::Responses, &resp.json()).got,
        Got::Text("You said: big".into())
    );
    // One byte over.
    let mut over = doc.to_vec();
    over.resize(MAX_BODY_BYTES + 1, b' ');
    let resp = send(
        addr,
        Proto::H2,
        request(addr, "POST", "/v1/messages", &[], TestBody::bytes(over)),
    )
    .await;
    assert_eq!(resp.status, 413);
    assert_eq!(resp.json()["error"]["type"], "request_too_large");
    let seen = upstream.received();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].body.len(),
        MAX_BODY_BYTES,
        "recorded up to the limit"
    );
    upstream.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let upstream = start(Options::default()).await;
    let addr = upstream.addr();
    let resp = send(
        addr,
        Proto::H1,
        request(addr, "GET", "/healthz", &[], TestBody::empty()),
    )
    .await;
    assert_eq!(resp.status, 200);
    tokio::time::timeout(Duration::from_secs(5), upstream.shutdown())
        .await
        .expect("shutdown is prompt");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_with_a_stream_in_flight_is_bounded() {
    let upstream = start(Options::default()).await;
    let addr = upstream.addr();
    let slow = tokio::spawn(async move {
        let req = request(
            addr,
            "POST",
            "/v1/chat/completions",
            &[
                ("x-demo-chunk-size", "1"),
                ("x-demo-chunk-delay-ms", "1000"),
            ],
            TestBody::bytes(Api::Chat.request("hi", true).to_string()),
        );
        let _ = tokio::time::timeout(Duration::from_secs(10), async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let _ = sender.send_request(req).await;
        })
        .await;
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::time::timeout(Duration::from_secs(6), upstream.shutdown())
        .await
        .expect("shutdown within the grace period");
    slow.abort();
}
