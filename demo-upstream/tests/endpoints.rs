//! Every endpoint × streamed/non-streamed × HTTP/1.1/HTTP/2 × scenario, plus errors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use demo_upstream::Options;
use serde_json::{json, Value};
use std::io::Read as _;

const PII: &str = "Contact Jane at jane.doe@example.com or +1 415 555 0100; card 4111 1111 1111 1111; IBAN DE89 3704 0044 0532 0130 00; SSN 123-45-6789; server 10.1.2.3; key AKIAIOSFODNN7EXAMPLE.";

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

fn paris() -> Value {
    json!({"city": "Paris", "unit": "celsius"})
}

fn berlin() -> Value {
    json!({"city": "Berlin", "unit": "celsius"})
}

/// (name, user text, expected answer, expected output tokens)
fn scenarios() -> Vec<(&'static str, String, Got, u64)> {
    let long = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.";
    let long_1000 = long[..1000].to_owned();
    vec![
        (
            "echo",
            "hello wörld, ünïcode ✓".to_owned(),
            Got::Text("You said: hello wörld, ünïcode ✓".into()),
            words("You said: hello wörld, ünïcode ✓"),
        ),
        (
            "tool_call",
            "weather in paris? [[tool_call]]".to_owned(),
            Got::Calls(vec![("get_weather".into(), paris())]),
            1,
        ),
        (
            "tool_calls:2",
            "[[tool_calls:2]] paris and berlin".to_owned(),
            Got::Calls(vec![
                ("get_weather".into(), paris()),
                ("get_weather".into(), berlin()),
            ]),
            2,
        ),
        (
            "json",
            r#"give json [[json:{"name": "Ada", "tags": [["x"]]}]]"#.to_owned(),
            Got::Text(r#"{"name": "Ada", "tags": [["x"]]}"#.into()),
            words(r#"{"name": "Ada", "tags": [["x"]]}"#),
        ),
        (
            "pii",
            "[[pii]]".to_owned(),
            Got::Text(PII.into()),
            words(PII),
        ),
        (
            "text",
            "[[text:Grüße, 世界! ]]".to_owned(),
            Got::Text("Grüße, 世界! ".into()),
            words("Grüße, 世界! "),
        ),
        (
            "long",
            "[[long:1000]]".to_owned(),
            Got::Text(long_1000.clone()),
            words(&long_1000),
        ),
    ]
}

#[tokio::test]
async fn scenario_matrix() {
    let upstream = start(Options::default()).await;
    let addr = upstream.addr();
    for (name, text, want, want_output) in scenarios() {
        for api in APIS {
            for proto in PROTOS {
                for stream in [false, true] {
                    let case = format!("{name} {api:?} {proto:?} stream={stream}");
                    let mut body = api.request(&text, stream);
                    if api == Api::Chat && stream {
                        body["stream_options"] = json!({"include_usage": true});
                    }
                    let resp = post_json(addr, proto, api.path(), &[], &body).await;
                    assert_eq!(
                        resp.status,
                        200,
                        "{case}: {}",
                        String::from_utf8_lossy(&resp.body())
                    );
                    let got = if stream {
                        assert_eq!(
                            resp.header("content-type"),
                            Some("text/event-stream"),
                            "{case}"
                        );
                        assert!(resp.header("content-length").is_none(), "{case}");
                        extract_sse(api, &resp.text())
                    } else {
                        assert_eq!(
                            resp.header("content-type"),
                            Some("application/json"),
                            "{case}"
                        );
                        let len: usize = resp.header("content-length").unwrap().parse().unwrap();
                        assert_eq!(len, resp.body().len(), "{case}");
                        extract_json(api, &resp.json())
                    };
                    assert_eq!(got.got, want, "{case}");
                    assert_eq!(got.model, "gpt-test", "{case}");
                    assert_eq!(got.input_tokens, 3 + words(&text), "{case}");
                    assert_eq!(got.output_tokens, want_output, "{case}");
                }
            }
        }
    }
    upstream.shutdown().await;
}

#[tokio::test]
async fn declared_tool_is_called_and_model_defaults() {
    let upstream = start(Options::default()).await;
    let addr = upstream.addr();
    let cases = [
        (
            Api::Chat,
            json!({"messages": [{"role": "user", "content": "[[tool_call]]"}],
                   "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]}),
        ),
        (
            Api::Responses,
            json!({"input": "[[tool_call]]", "tools": [{"type": "function", "name": "lookup", "parameters": {}}]}),
        ),
        (
            Api::Messages,
            json!({"max_tokens": 5, "messages": [{"role": "user", "content": "[[tool_call]]"}],
                   "tools": [{"name": "lookup", "input_schema": {"type": "object"}}]}),
        ),
    ];
    for (api, body) in cases {
        for stream in [false, true] {
            let mut body = body.clone();
            body["stream"] = json!(stream);
            let resp = post_json(addr, Proto::H1, api.path(), &[], &body).await;
            assert_eq!(resp.status, 200);
            let got = if stream {
                extract_sse(api, &resp.text())
            } else {
                extract_json(api, &resp.json())
            };
            assert_eq!(
                got.got,
                Got::Calls(vec![("lookup".into(), paris())]),
                "{api:?}"
            );
            assert_eq!(got.model, "demo-model");
        }
    }
    upstream.shutdown().await;
}

#[tokio::test]
async fn header_scenarios() {
    let upstream = start(Options::default()).await;
    let addr = upstream.addr();
    let cases: Vec<(&str, Headers, Got)> = vec![
        (
            "tool",
            vec![("x-demo-scenario", "tool_call")],
            Got::Calls(vec![("get_weather".into(), paris())]),
        ),
        (
            "json",
            vec![
                ("x-demo-scenario", "json"),
                ("x-demo-json", r#"{"ok":true}"#),
            ],
            Got::Text(r#"{"ok":true}"#.into()),
        ),
        (
            "pii",
            vec![("x-demo-scenario", "pii")],
            Got::Text(PII.into()),
        ),
        (
            "header beats text",
            vec![("x-demo-scenario", "echo")],
            Got::Text("You said: [[pii]]".into()),
        ),
    ];
    for (name, headers, want) in cases {
        for api in APIS {
            let resp = post_json(
                addr,
                Proto::H2,
                api.path(),
                &headers,
                &api.request("[[pii]]", false),
            )
            .await;
            assert_eq!(resp.status, 200, "{name}");
            assert_eq!(extract_json(api, &resp.json()).got, want, "{name} {api:?}");
        }
    }
    upstream.shutdown().await;
}

#[tokio::test]
async fn tool_result_turn_gets_text_answer() {
    let upstream = start(Options::default()).await;
    let addr = upstream.addr();
    let cases = [
        (
            Api::Chat,
            json!({"messages": [
                {"role": "user", "content": "[[tool_call]]"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny 21C"}
            ]}),
        ),
        (
            Api::Responses,
            json!({"input": [
                {"role": "user", "content": "[[tool_call]]"},
                {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny 21C"}
            ]}),
        ),
        (
            Api::Messages,
            json!({"messages": [
                {"role": "user", "content": "[[tool_call]]"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny 21C"}]}
            ]}),
        ),
    ];
    for (api, body) in cases {
        let resp = post_json(addr, Proto::H1, api.path(), &[], &body).await;
        assert_eq!(resp.status, 200);
        let got = extract_json(api, &resp.json());
        assert_eq!(
            got.got,
            Got::Text("Tool result: sunny 21C".into()),
            "{api:?}"
        );
        assert_eq!(got.input_tokens, 3, "{api:?}: [[tool_call]] + sunny 21C");
    }
    upstream.shutdown().await;
}

#[tokio::test]
async fn path_prefixes_are_accepted() {
    let upstream = start(Options::default()).await;
    let addr = upstream.addr();
    for (api, path) in [
        (Api::Chat, "/openai/v1/chat/completions"),
        (Api::Responses, "/x/y/v1/responses?api-version=1"),
        (Api::Messages, "/anthropic/v1/messages"),
    ] {
        let resp = post_json(addr, Proto::H1, path, &[], &api.request("hi", false)).await;
        assert_eq!(resp.status, 200, "{path}");
        assert_eq!(
            extract_json(api, &resp.json()).got,
            Got::Text("You said: hi".into())
        );
    }
    upstream.shutdown().await;
}

fn assert_error_shape(api: Api, v: &Value, status: u16) {
    match api {
        Api::Chat | Api::Responses => {
            assert!(v["error"]["message"].is_string(), "{v}");
            assert!(v["error"]["type"].is_string(), "{v}");
            assert!(v["error"].get("code").is_some(), "{v}");
        }
        Api::Messages => {
            assert_eq!(v["type"], "error", "{v}");
            assert!(
                v["error"]["type"].is_string() && v["error"]["message"].is_string(),
                "{v}"
            );
        }
    }
    if status == 429 {
        let kind = v["error"]["type"].as_str().unwrap();
        assert_eq!(kind, "rate_limit_error");
    }
}

#[tokio::test]
async fn scripted_status_and_bad_requests() {
    let upstream = start(Options::default()).await;
    let addr = upstream.addr();
    for api in APIS {
        for proto in PROTOS {
            for (text, status) in [
                ("[[status:429]]", 429),
                ("[[status:500]]", 500),
                ("[[status:401]]", 401),
            ] {
                for stream in [false, true] {
                    let resp =
                        post_json(addr, proto, api.path(), &[], &api.request(text, stream)).await;
                    assert_eq!(resp.status, status);
                    assert_eq!(resp.header("content-type"), Some("application/json"));
                    assert_error_shape(api, &resp.json(), status);
                }
            }
            let bad_bodies: Vec<(&str, Vec<u8>)> = vec![
                ("not json", b"{nope".to_vec()),
                ("not an object", b"[1,2]".to_vec()),
                ("wrong shape", br#"{"model": 5}"#.to_vec()),
                (
                    "bad directive",
                    api.request("[[tool_calls:99]]", false)
                        .to_string()
                        .into_bytes(),
                ),
            ];
            for (name, body) in bad_bodies {
                let req = request(addr, "POST", api.path(), &[], TestBody::bytes(body));
                let resp = send(addr, proto, req).await;
                assert_eq!(resp.status, 400, "{name} {api:?}");
                assert_error_shape(api, &resp.json(), 400);
            }
        }
    }
    // Bad per-request headers are client errors too.
    let resp = post_json(
        addr,
        Proto::H1,
        "/v1/chat/completions",
        &[("x-demo-chunk-size", "abc")],
        &Api::Chat.request("x", true),
    )
    .await;
    assert_eq!(resp.status, 400);
    let resp = post_json(
        addr,
        Proto::H1,
        "/v1/chat/completions",
        &[("x-demo-scenario", "bogus")],
        &Api::Chat.request("x", true),
    )
    .await;
    assert_eq!(resp.status, 400);
    upstream.shutdown().await;
}

#[tokio::test]
async fn gzip_scenario() {
    let upstream = start(Options::default()).await;
    let addr = upstream.addr();
    for api in APIS {
        for stream in [false, true] {
            let resp = post_json(
                addr,
                Proto::H1,
                api.path(),
                &[],
                &api.request("[[gzip]] [[pii]]", stream),
            )
            .await;
            assert_eq!(resp.status, 200);
            assert_eq!(resp.header("content-encoding"), Some("gzip"));
            let mut plain = String::new();
            flate2::read::GzDecoder::new(&resp.body()[..])
                .read_to_string(&mut plain)
                .unwrap();
            let got = if stream {
                if !resp.frames.is_empty() {
                    assert!(resp.frames.len() > 1, "compressed stream is chunked too");
                }
                extract_sse(api, &plain)
            } else {
                let len: usize = resp.header("content-length").unwrap().parse().unwrap();
                assert_eq!(len, resp.body().len());
                extract_json(api, &serde_json::from_str(&plain).unwrap())
            };
            assert_eq!(got.got, Got::Text(PII.into()), "{api:?} stream={stream}");
        }
    }
    upstream.shutdown().await;
}

#[tokio::test]
async fn brotli_scenario() {
    let upstream = start(Options::default()).await;
    let addr = upstream.addr();
    for api in APIS {
        for stream in [false, true] {
            let resp = post_json(
                addr,
                Proto::H1,
                api.path(),
                &[],
                &api.request("[[br]] [[pii]]", stream),
            )
            .await;
            assert_eq!(resp.status, 200);
            assert_eq!(resp.header("content-encoding"), Some("br"));
            let mut plain = String::new();
            brotli::Decompressor::new(&resp.body()[..], 4096)
                .read_to_string(&mut plain)
                .unwrap();
            let got = if stream {
                extract_sse(api, &plain)
            } else {
                extract_json(api, &serde_json::from_str(&plain).unwrap())
            };
            assert_eq!(got.got, Got::Text(PII.into()), "{api:?} stream={stream}");
        }
    }
    upstream.shutdown().await;
}
