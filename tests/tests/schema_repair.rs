//! schema-guard's `repair` through a real Envoy: an answer that fails its structured-output schema
//! is re-asked once (or `max_attempts` times) with the validation errors, through Envoy's own
//! listener (cluster `self`), so the re-ask passes pii-redact like any request (the upstream never
//! sees the caller's email) and its answer is restored and checked like any answer. A scripted
//! upstream answers from a queue and records what it received.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use bytes::Bytes;
use e2e::{Env, Spec};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

const TEMPLATE: &str = include_str!("../configs/schema_repair.yaml");
const EMAIL: &str = "ann.lee@example.com";

/// What the upstream received: headers and JSON body of each request.
type Seen = Vec<(Vec<(String, String)>, Value)>;

/// An upstream that answers each request with the next queued chat answer (content text) and
/// records (headers, body) of what it received.
#[derive(Clone, Default)]
struct Scripted {
    answers: Arc<Mutex<VecDeque<String>>>,
    seen: Arc<Mutex<Seen>>,
}

impl Scripted {
    async fn start(answers: &[&str]) -> (Scripted, u16) {
        let s = Scripted::default();
        s.answers
            .lock()
            .unwrap()
            .extend(answers.iter().map(|a| a.to_string()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = s.clone();
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move {
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into())
                                })
                                .collect();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            state.seen.lock().unwrap().push((headers, v));
                            let text = state
                                .answers
                                .lock()
                                .unwrap()
                                .pop_front()
                                .unwrap_or_else(|| "no more answers".into());
                            let answer = json!({
                                "id": "chatcmpl-s", "object": "chat.completion", "model": "gpt-4o",
                                "choices": [{"index": 0, "finish_reason": "stop",
                                             "message": {"role": "assistant", "content": text}}],
                                "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
                            });
                            Ok::<_, hyper::Error>(
                                Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(answer.to_string())))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(conn), svc)
                        .await;
                });
            }
        });
        (s, port)
    }

    fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn start(answers: &[&str]) -> (Scripted, Env) {
    let (scripted, port) = Scripted::start(answers).await;
    let env = Env::start(Spec::template(TEMPLATE).var("SCRIPTED_PORT", &port.to_string()))
        .await
        .unwrap();
    (scripted, env)
}

/// A chat request whose answer must be `{"name": string, "age": integer}`.
fn request(stream: bool) -> String {
    json!({
        "model": "gpt-4o",
        "stream": stream,
        "messages": [{"role": "user", "content": format!("Who is {EMAIL}? Answer as JSON.")}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "person", "strict": true, "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"], "additionalProperties": false
        }}}
    })
    .to_string()
}

async fn ask(env: &Env, path: &str, id: &str, extra: Option<(&str, &str)>) -> e2e::Resp {
    let mut req = env
        .client()
        .post(path, request(false))
        .header("x-request-id", id);
    if let Some((k, v)) = extra {
        req = req.header(k, v);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn a_failed_answer_is_repaired_through_the_whole_chain() {
    // The model first gets the age wrong, then answers right, naming the caller by the
    // pseudonym it was given.
    let (up, env) = start(&[
        r#"{"name":"Ann","age":"forty"}"#,
        r#"{"name":"<EMAIL_1>","age":40}"#,
    ])
    .await;
    let r = ask(&env, "/v1/chat/completions", "repair-1", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json().unwrap();
    let content: Value =
        serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    // The repaired answer, with the caller's value restored by pii-redact on the re-ask's way back.
    assert_eq!(content, json!({"name": EMAIL, "age": 40}));

    let seen = up.seen();
    assert_eq!(seen.len(), 2, "one re-ask");
    for (_, body) in &seen {
        assert!(
            !body.to_string().contains(EMAIL),
            "the upstream saw the email: {body}"
        );
    }
    let (headers, reask) = &seen[1];
    assert_eq!(header(headers, "x-guard-repair"), Some("1"));
    assert_eq!(reask["stream"], false);
    let msgs = reask["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "{reask}");
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(msgs[1]["content"], r#"{"name":"Ann","age":"forty"}"#);
    assert_eq!(msgs[2]["role"], "user");
    let ask = msgs[2]["content"].as_str().unwrap();
    assert!(
        ask.contains("/age") && ask.contains("does not match the required schema"),
        "{ask}"
    );
    // The original request's text is there, pseudonymised (the re-ask passed pii-redact).
    assert!(
        msgs[0]["content"].as_str().unwrap().contains("<EMAIL_1>"),
        "{reask}"
    );

    let rec = env.audit_record("schema_guard", "repair-1").await.unwrap();
    assert_eq!(
        (&rec["decision"], &rec["repaired"], &rec["repair_attempts"]),
        (&json!("modify"), &json!(true), &json!(1)),
        "{rec}"
    );
    assert_eq!(
        env.counter("wasmcustom.guard.schema_guard.repair.attempted.answers")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        env.counter("wasmcustom.guard.schema_guard.repair.succeeded.answers")
            .await
            .unwrap(),
        1
    );
    env.finish();
}

#[tokio::test]
async fn an_answer_still_wrong_after_the_attempts_is_blocked() {
    for (path, attempts) in [
        ("/v1/chat/completions", 1usize),
        ("/twice/v1/chat/completions", 2),
    ] {
        let bad = r#"{"name":"Ann"}"#;
        let (up, env) = start(&[bad, bad, bad, bad]).await;
        let r = ask(&env, path, "still-bad", None).await;
        assert_eq!(r.status, 502, "{}", r.text());
        let v = r.json().unwrap();
        assert_eq!(v["error"]["code"], "schema_violation", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("asking again did not fix it"),
            "{v}"
        );
        assert_eq!(up.seen().len(), 1 + attempts, "{path}");
        // Each re-ask numbered; none was itself repaired (no nested re-asks).
        let numbers: Vec<Option<String>> = up
            .seen()
            .iter()
            .map(|(h, _)| header(h, "x-guard-repair").map(str::to_string))
            .collect();
        let want: Vec<Option<String>> = std::iter::once(None)
            .chain((1..=attempts).map(|n| Some(n.to_string())))
            .collect();
        assert_eq!(numbers, want, "{path}");
        assert_eq!(
            env.counter("wasmcustom.guard.schema_guard.repair.failed.answers")
                .await
                .unwrap(),
            1,
            "{path}"
        );
        env.finish();
    }
}

#[tokio::test]
async fn a_re_ask_is_never_repaired_again() {
    // A request that already carries the re-ask header gets the block at once.
    let (up, env) = start(&[r#"{"name":"Ann"}"#]).await;
    let r = ask(
        &env,
        "/v1/chat/completions",
        "reask",
        Some(("x-guard-repair", "1")),
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(up.seen().len(), 1);
    env.finish();
}
