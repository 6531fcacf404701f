//! Shared helpers for the demo-upstream integration tests: a hyper client over HTTP/1.1 and
//! HTTP/2 prior knowledge, a small SSE splitter, and API-neutral answer extraction.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use demo_upstream::{Options, Upstream};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use hyper::header::HeaderMap;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;

/// Extra request headers of a test case.
pub type Headers = Vec<(&'static str, &'static str)>;

/// Bound on any single client exchange.
pub const TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    H1,
    H2,
}

pub const PROTOS: [Proto; 2] = [Proto::H1, Proto::H2];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Chat,
    Responses,
    Messages,
}

pub const APIS: [Api; 3] = [Api::Chat, Api::Responses, Api::Messages];

impl Api {
    pub fn path(self) -> &'static str {
        match self {
            Api::Chat => "/v1/chat/completions",
            Api::Responses => "/v1/responses",
            Api::Messages => "/v1/messages",
        }
    }

    /// A request body with one user message `text` (plus a system prompt of 3 words).
    pub fn request(self, text: &str, stream: bool) -> Value {
        match self {
            Api::Chat => serde_json::json!({
                "model": "gpt-test",
                "messages": [
                    {"role": "system", "content": "be very brief"},
                    {"role": "user", "content": text},
                ],
                "stream": stream,
            }),
            Api::Responses => serde_json::json!({
                "model": "gpt-test",
                "instructions": "be very brief",
                "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}],
                "stream": stream,
            }),
            Api::Messages => serde_json::json!({
                "model": "gpt-test",
                "max_tokens": 100,
                "system": "be very brief",
                "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
                "stream": stream,
            }),
        }
    }
}

/// A request body made of given frames (data and optional trailers).
pub struct TestBody {
    frames: VecDeque<Frame<Bytes>>,
}

impl TestBody {
    pub fn bytes(data: impl Into<Bytes>) -> TestBody {
        TestBody {
            frames: VecDeque::from([Frame::data(data.into())]),
        }
    }

    pub fn empty() -> TestBody {
        TestBody {
            frames: VecDeque::new(),
        }
    }

    pub fn with_trailers(chunks: Vec<&'static [u8]>, trailers: HeaderMap) -> TestBody {
        let mut frames: VecDeque<_> = chunks
            .into_iter()
            .map(|c| Frame::data(Bytes::from_static(c)))
            .collect();
        frames.push_back(Frame::trailers(trailers));
        TestBody { frames }
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().frames.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }
}

/// What the client saw.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub frames: Vec<Bytes>,
    pub trailers: Option<HeaderMap>,
}

impl Resp {
    pub fn body(&self) -> Vec<u8> {
        self.frames.concat()
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body()).expect("utf-8 body")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body()).expect("json body")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn start(options: Options) -> Upstream {
    Upstream::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .expect("upstream starts")
}

/// Sends one request on a fresh connection and reads the whole response.
pub async fn send(addr: SocketAddr, proto: Proto, request: Request<TestBody>) -> Resp {
    tokio::time::timeout(TIMEOUT, send_inner(addr, proto, request))
        .await
        .expect("exchange within timeout")
}

async fn send_inner(addr: SocketAddr, proto: Proto, request: Request<TestBody>) -> Resp {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let io = TokioIo::new(stream);
    let response = match proto {
        Proto::H1 => {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("h1 handshake");
            tokio::spawn(conn);
            sender.send_request(request).await.expect("h1 response")
        }
        Proto::H2 => {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .expect("h2 handshake");
            tokio::spawn(conn);
            sender.send_request(request).await.expect("h2 response")
        }
    };
    let (parts, mut body) = response.into_parts();
    let mut frames = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("response frame");
        match frame.into_data() {
            Ok(data) => {
                if !data.is_empty() {
                    frames.push(data);
                }
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        frames,
        trailers,
    }
}

/// Builds a request; HTTP/2 needs an absolute URI.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: TestBody,
) -> Request<TestBody> {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(body).unwrap()
}

/// POSTs a JSON body.
pub async fn post_json(
    addr: SocketAddr,
    proto: Proto,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Resp {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let req = request(addr, "POST", path, &all, TestBody::bytes(body.to_string()));
    send(addr, proto, req).await
}

/// One SSE event: its `event:` name (if any) and its `data:` text.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: Option<String>,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data {:?}: {e}", self.data))
    }
}

/// Splits a complete SSE body into events (test-only, simplistic: `\n\n` separated).
pub fn sse_events(body: &str) -> Vec<Event> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut name = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push(v);
                } else {
                    panic!("unexpected sse line {line:?}");
                }
            }
            Event {
                name,
                data: data.join("\n"),
            }
        })
        .collect()
}

/// An API-neutral view of an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Got {
    Text(String),
    /// (name, parsed arguments)
    Calls(Vec<(String, Value)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    pub got: Got,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

fn calls_from(map: BTreeMap<u64, (String, String)>) -> Got {
    Got::Calls(
        map.into_values()
            .map(|(name, args)| (name, serde_json::from_str(&args).expect("arguments json")))
            .collect(),
    )
}

/// Extracts the answer of choice 0 from a non-streamed body.
pub fn extract_json(api: Api, v: &Value) -> Extracted {
    let model = v["model"].as_str().unwrap().to_owned();
    match api {
        Api::Chat => {
            assert_eq!(v["object"], "chat.completion");
            let message = &v["choices"][0]["message"];
            assert_eq!(message["role"], "assistant");
            let got = match message.get("tool_calls") {
                Some(calls) => {
                    assert!(message["content"].is_null());
                    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
                    Got::Calls(
                        calls
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|c| {
                                assert_eq!(c["type"], "function");
                                assert!(c["id"].as_str().unwrap().starts_with("call_"));
                                (
                                    c["function"]["name"].as_str().unwrap().to_owned(),
                                    serde_json::from_str(
                                        c["function"]["arguments"].as_str().unwrap(),
                                    )
                                    .unwrap(),
                                )
                            })
                            .collect(),
                    )
                }
                None => {
                    assert_eq!(v["choices"][0]["finish_reason"], "stop");
                    Got::Text(message["content"].as_str().unwrap().to_owned())
                }
            };
            let u = &v["usage"];
            assert_eq!(
                u["total_tokens"].as_u64().unwrap(),
                u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
            );
            Extracted {
                got,
                model,
                input_tokens: u["prompt_tokens"].as_u64().unwrap(),
                output_tokens: u["completion_tokens"].as_u64().unwrap(),
            }
        }
        Api::Responses => {
            assert_eq!(v["object"], "response");
            assert_eq!(v["status"], "completed");
            let mut text = None;
            let mut calls = Vec::new();
            for item in v["output"].as_array().unwrap() {
                assert_eq!(item["status"], "completed");
                match item["type"].as_str().unwrap() {
                    "message" => {
                        assert_eq!(item["role"], "assistant");
                        let part = &item["content"][0];
                        assert_eq!(part["type"], "output_text");
                        assert_eq!(part["annotations"], serde_json::json!([]));
                        text = Some(part["text"].as_str().unwrap().to_owned());
                    }
                    "function_call" => {
                        assert!(item["call_id"].is_string() && item["id"].is_string());
                        calls.push((
                            item["name"].as_str().unwrap().to_owned(),
                            serde_json::from_str(item["arguments"].as_str().unwrap()).unwrap(),
                        ));
                    }
                    other => panic!("unexpected item type {other}"),
                }
            }
            let got = match text {
                Some(t) => Got::Text(t),
                None => Got::Calls(calls),
            };
            let u = &v["usage"];
            assert_eq!(
                u["total_tokens"].as_u64().unwrap(),
                u["input_tokens"].as_u64().unwrap() + u["output_tokens"].as_u64().unwrap()
            );
            Extracted {
                got,
                model,
                input_tokens: u["input_tokens"].as_u64().unwrap(),
                output_tokens: u["output_tokens"].as_u64().unwrap(),
            }
        }
        Api::Messages => {
            assert_eq!(v["type"], "message");
            assert_eq!(v["role"], "assistant");
            let blocks = v["content"].as_array().unwrap();
            let got = if blocks[0]["type"] == "text" {
                assert_eq!(v["stop_reason"], "end_turn");
                Got::Text(blocks[0]["text"].as_str().unwrap().to_owned())
            } else {
                assert_eq!(v["stop_reason"], "tool_use");
                Got::Calls(
                    blocks
                        .iter()
                        .map(|b| {
                            assert_eq!(b["type"], "tool_use");
                            assert!(b["id"].as_str().unwrap().starts_with("toolu_"));
                            (b["name"].as_str().unwrap().to_owned(), b["input"].clone())
                        })
                        .collect(),
                )
            };
            Extracted {
                got,
                model,
                input_tokens: v["usage"]["input_tokens"].as_u64().unwrap(),
                output_tokens: v["usage"]["output_tokens"].as_u64().unwrap(),
            }
        }
    }
}

/// Extracts the answer of choice 0 from a complete SSE body, checking the event grammar.
pub fn extract_sse(api: Api, body: &str) -> Extracted {
    let events = sse_events(body);
    match api {
        Api::Chat => {
            let last = events.last().unwrap();
            assert_eq!(last.data, "[DONE]");
            let mut text = String::new();
            let mut calls: BTreeMap<u64, (String, String)> = BTreeMap::new();
            let mut finish = None;
            let mut model = String::new();
            let mut usage = None;
            for (i, event) in events[..events.len() - 1].iter().enumerate() {
                assert!(event.name.is_none());
                let chunk = event.json();
                assert_eq!(chunk["object"], "chat.completion.chunk");
                model = chunk["model"].as_str().unwrap().to_owned();
                if chunk["choices"].as_array().unwrap().is_empty() {
                    usage = Some(chunk["usage"].clone());
                    continue;
                }
                let choice = &chunk["choices"][0];
                if choice["index"] != 0 {
                    continue;
                }
                let delta = &choice["delta"];
                if i == 0 {
                    assert_eq!(delta["role"], "assistant", "first chunk carries the role");
                }
                if let Some(c) = delta.get("content").and_then(Value::as_str) {
                    text.push_str(c);
                }
                for call in delta
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let entry = calls.entry(call["index"].as_u64().unwrap()).or_default();
                    if let Some(name) = call["function"].get("name").and_then(Value::as_str) {
                        assert_eq!(call["type"], "function");
                        assert!(call["id"].is_string());
                        entry.0 = name.to_owned();
                    }
                    if let Some(a) = call["function"].get("arguments").and_then(Value::as_str) {
                        entry.1.push_str(a);
                    }
                }
                if let Some(f) = choice["finish_reason"].as_str() {
                    finish = Some(f.to_owned());
                }
            }
            let got = if calls.is_empty() {
                assert_eq!(finish.as_deref(), Some("stop"));
                Got::Text(text)
            } else {
                assert_eq!(finish.as_deref(), Some("tool_calls"));
                calls_from(calls)
            };
            let (input, output) = match usage {
                Some(u) => (
                    u["prompt_tokens"].as_u64().unwrap(),
                    u["completion_tokens"].as_u64().unwrap(),
                ),
                None => (u64::MAX, u64::MAX),
            };
            Extracted {
                got,
                model,
                input_tokens: input,
                output_tokens: output,
            }
        }
        Api::Responses => {
            let mut text = String::new();
            let mut calls: BTreeMap<u64, (String, String)> = BTreeMap::new();
            let mut completed = None;
            for (i, event) in events.iter().enumerate() {
                let data = event.json();
                assert_eq!(
                    event.name.as_deref(),
                    data["type"].as_str(),
                    "event name = type"
                );
                assert_eq!(data["sequence_number"].as_u64().unwrap(), i as u64);
                match data["type"].as_str().unwrap() {
                    "response.output_text.delta" => {
                        assert!(data["item_id"].is_string());
                        assert!(data["output_index"].is_u64() && data["content_index"].is_u64());
                        text.push_str(data["delta"].as_str().unwrap());
                    }
                    "response.output_text.done" => assert_eq!(data["text"].as_str().unwrap(), text),
                    "response.output_item.added" if data["item"]["type"] == "function_call" => {
                        let idx = data["output_index"].as_u64().unwrap();
                        calls.entry(idx).or_default().0 =
                            data["item"]["name"].as_str().unwrap().to_owned();
                        assert!(data["item"]["call_id"].is_string());
                    }
                    "response.function_call_arguments.delta" => {
                        let idx = data["output_index"].as_u64().unwrap();
                        calls
                            .entry(idx)
                            .or_default()
                            .1
                            .push_str(data["delta"].as_str().unwrap());
                    }
                    "response.function_call_arguments.done" => {
                        let idx = data["output_index"].as_u64().unwrap();
                        assert_eq!(data["arguments"].as_str().unwrap(), calls[&idx].1);
                    }
                    "response.completed" => completed = Some(data["response"].clone()),
                    _ => {}
                }
            }
            assert_eq!(events[0].name.as_deref(), Some("response.created"));
            assert_eq!(events[1].name.as_deref(), Some("response.in_progress"));
            assert_eq!(
                events.last().unwrap().name.as_deref(),
                Some("response.completed")
            );
            let completed = completed.expect("response.completed");
            let full = extract_json(Api::Responses, &completed);
            let got = if calls.is_empty() {
                Got::Text(text)
            } else {
                calls_from(calls)
            };
            assert_eq!(
                got, full.got,
                "streamed deltas match the completed response"
            );
            Extracted { got, ..full }
        }
        Api::Messages => {
            let names: Vec<_> = events
                .iter()
                .map(|e| e.name.clone().expect("event: line"))
                .collect();
            assert_eq!(names[0], "message_start");
            assert_eq!(names[1], "content_block_start");
            assert_eq!(names[2], "ping");
            assert_eq!(names[names.len() - 2], "message_delta");
            assert_eq!(names[names.len() - 1], "message_stop");
            let mut text = String::new();
            let mut calls: BTreeMap<u64, (String, String)> = BTreeMap::new();
            let mut input = 0;
            let mut output = 0;
            let mut model = String::new();
            let mut stop = None;
            for event in &events {
                let data = event.json();
                assert_eq!(
                    event.name.as_deref(),
                    data["type"].as_str(),
                    "event name = type"
                );
                match data["type"].as_str().unwrap() {
                    "message_start" => {
                        model = data["message"]["model"].as_str().unwrap().to_owned();
                        input = data["message"]["usage"]["input_tokens"].as_u64().unwrap();
                        assert_eq!(data["message"]["usage"]["output_tokens"], 1);
                    }
                    "content_block_start" if data["content_block"]["type"] == "tool_use" => {
                        let idx = data["index"].as_u64().unwrap();
                        calls.entry(idx).or_default().0 =
                            data["content_block"]["name"].as_str().unwrap().to_owned();
                    }
                    "content_block_delta" => {
                        let delta = &data["delta"];
                        match delta["type"].as_str().unwrap() {
                            "text_delta" => text.push_str(delta["text"].as_str().unwrap()),
                            "input_json_delta" => {
                                let idx = data["index"].as_u64().unwrap();
                                calls
                                    .entry(idx)
                                    .or_default()
                                    .1
                                    .push_str(delta["partial_json"].as_str().unwrap());
                            }
                            other => panic!("unexpected delta {other}"),
                        }
                    }
                    "message_delta" => {
                        output = data["usage"]["output_tokens"].as_u64().unwrap();
                        stop = data["delta"]["stop_reason"].as_str().map(str::to_owned);
                    }
                    _ => {}
                }
            }
            let got = if calls.is_empty() {
                assert_eq!(stop.as_deref(), Some("end_turn"));
                Got::Text(text)
            } else {
                assert_eq!(stop.as_deref(), Some("tool_use"));
                calls_from(calls)
            };
            Extracted {
                got,
                model,
                input_tokens: input,
                output_tokens: output,
            }
        }
    }
}
