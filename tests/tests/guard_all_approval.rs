//! approval-gate inside the combined module (guard_all.wasm, DESIGN.md order: llm-telemetry →
//! schema-guard → approval-gate → pii-redact → prompt-guard) through a real Envoy, with the real
//! approval-service process and the demo upstream as the model. A gated tool call in an answer
//! (whole or streamed) is held by a response-phase call-out in the middle of the chain until a
//! person decides through the service's API; the stages below it (pii-redact restoring real
//! values) ran before, the stages above it (schema-guard, llm-telemetry) run after.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use e2e::{assemble_stream, ApprovalService};
use guard_core::api::ApiShape;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const TEMPLATE: &str = include_str!("../configs/guard_all_approval.yaml");
const EMAIL: &str = "jane.doe@example.com";
const REASON: &str = "checked with the customer";

/// A chat request whose answer (demo upstream) is one `transfer_funds` call with the email of
/// the prompt as its `to` argument; the request declares the tool.
fn chat(stream: bool) -> String {
    json!({
        "model": "gpt-4o",
        "stream": stream,
        "messages": [{
            "role": "user",
            "content": format!(
                "Send 5000 to {EMAIL} [[tool_args:{{\"to\":\"{EMAIL}\",\"amount\":5000}}]]"
            )
        }],
        "tools": [{"type": "function", "function": {
            "name": "transfer_funds", "parameters": {"type": "object"}}}]
    })
    .to_string()
}

/// The tool calls the client got: (name, arguments as JSON), whole or streamed answer.
fn tool_calls(r: &e2e::Resp, stream: bool) -> Vec<(String, Value)> {
    if stream {
        let got = assemble_stream(ApiShape::OpenAiChat, &r.body).unwrap();
        assert!(got.done, "{}", r.text());
        got.choices
            .first()
            .map(|c| {
                c.tool_calls
                    .iter()
                    .map(|t| {
                        (
                            t.name.clone().unwrap_or_default(),
                            serde_json::from_str(&t.arguments).unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    } else {
        let v = r.json().unwrap();
        v["choices"][0]["message"]["tool_calls"]
            .as_array()
            .map(|calls| {
                calls
                    .iter()
                    .map(|t| {
                        (
                            t["function"]["name"].as_str().unwrap().to_string(),
                            serde_json::from_str(t["function"]["arguments"].as_str().unwrap())
                                .unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn a_gated_tool_call_is_held_inside_the_combined_module_until_a_person_decides() {
    let (svc, env) = ApprovalService::with_envoy(TEMPLATE).await.unwrap();
    let denied =
        format!("The tool call `transfer_funds` was not run: a person denied it ({REASON}).");
    for stream in [false, true] {
        for decision in ["approve", "deny"] {
            let ctx = format!("stream {stream} {decision}");
            let rid = format!("ga-{stream}-{decision}");
            let held = tokio::spawn({
                let client = env.client();
                let rid = rid.clone();
                async move {
                    client
                        .post("/v1/chat/completions", chat(stream))
                        .header("x-user", "alice")
                        .header("x-request-id", &rid)
                        .send()
                        .await
                        .unwrap()
                }
            });
            let id = svc.wait_pending().await.unwrap();
            // pii-redact (below approval-gate) pseudonymised the request: the model never saw
            // the address ...
            let seen = env.upstream.received();
            let sent = String::from_utf8_lossy(&seen.last().unwrap().body).to_string();
            assert!(!sent.contains(EMAIL), "{ctx}: {sent}");
            assert!(sent.contains("<EMAIL_1>"), "{ctx}: {sent}");
            // ... and restored it in the answer before approval-gate saw it: the person
            // approves the real arguments.
            let rec = svc.record(&id).await.unwrap();
            assert_eq!(
                (
                    rec["tool"].clone(),
                    rec["caller"].clone(),
                    rec["arguments"].clone()
                ),
                (
                    json!("transfer_funds"),
                    json!("alice"),
                    json!({"to": EMAIL, "amount": 5000})
                ),
                "{ctx}: {rec}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(!held.is_finished(), "{ctx}: the answer was not held");
            svc.decide(&id, decision, REASON).await.unwrap();
            let r = held.await.unwrap();
            let calls = if r.status == 200 {
                tool_calls(&r, stream)
            } else {
                Vec::new()
            };
            match (decision, stream) {
                ("approve", _) => {
                    assert_eq!(r.status, 200, "{ctx}: {}", r.text());
                    assert_eq!(
                        calls,
                        vec![(
                            "transfer_funds".to_string(),
                            json!({"to": EMAIL, "amount": 5000})
                        )],
                        "{ctx}: {}",
                        r.text()
                    );
                    let rec = env.audit_record("approval_gate", &rid).await.unwrap();
                    assert_eq!(rec["outcome"], "approved", "{ctx}: {rec}");
                }
                (_, false) => {
                    // A whole answer goes on without the call, in the provider's shape.
                    assert_eq!(r.status, 200, "{ctx}: {}", r.text());
                    let v = r.json().unwrap();
                    let m = &v["choices"][0]["message"];
                    assert!(m.get("tool_calls").is_none(), "{ctx}: {v}");
                    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{ctx}: {v}");
                    assert_eq!(m["content"], denied, "{ctx}: {v}");
                }
                (_, true) => {
                    // A stream: the call is replaced inside the held stream.
                    assert_eq!(r.status, 200, "{ctx}: {}", r.text());
                    assert!(calls.is_empty(), "{ctx}: {}", r.text());
                    let got = assemble_stream(ApiShape::OpenAiChat, &r.body).unwrap();
                    let c = &got.choices[0];
                    assert_eq!(
                        (c.content.as_str(), c.finish_reason.as_deref()),
                        (denied.as_str(), Some("stop")),
                        "{ctx}: {}",
                        r.text()
                    );
                }
            }
            // Every stage of the chain wrote its record for the held exchange.
            for filter in [
                "llm_telemetry",
                "schema_guard",
                "approval_gate",
                "pii_redact",
                "prompt_guard",
            ] {
                let rec = env.audit_record(filter, &rid).await.unwrap();
                assert_eq!(rec["filter"], filter, "{ctx}: {rec}");
            }
            let rec = env.audit_record("pii_redact", &rid).await.unwrap();
            assert_eq!(rec["entities"]["request"]["EMAIL"], 2, "{ctx}: {rec}");
        }
    }
    assert!(svc.pending().await.unwrap().is_empty());
    env.finish();
}

/// Answers without a gated call pass the combined module at once, and pii-redact still works in
/// the same chain: the upstream never sees the address, the client gets it back.
#[tokio::test]
async fn ungated_answers_pass_at_once_and_pii_is_still_redacted() {
    let (svc, env) = ApprovalService::with_envoy(TEMPLATE).await.unwrap();
    for stream in [false, true] {
        let rid = format!("plain-{stream}");
        let body = json!({"model": "gpt-4o", "stream": stream, "messages": [
            {"role": "user", "content": format!("Mail {EMAIL} about the invoice")}]});
        let t = Instant::now();
        let r = env
            .client()
            .post("/v1/chat/completions", body.to_string())
            .header("x-request-id", &rid)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(t.elapsed() < Duration::from_secs(10));
        let seen = env.upstream.received();
        let sent = String::from_utf8_lossy(&seen.last().unwrap().body).to_string();
        assert!(!sent.contains(EMAIL), "stream {stream}: {sent}");
        assert!(sent.contains("<EMAIL_1>"), "stream {stream}: {sent}");
        let text = if stream {
            assemble_stream(ApiShape::OpenAiChat, &r.body)
                .unwrap()
                .choices[0]
                .content
                .clone()
        } else {
            r.json().unwrap()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert!(text.contains(EMAIL), "stream {stream}: {text}");
        let rec = env.audit_record("pii_redact", &rid).await.unwrap();
        assert_eq!(rec["restored"], 1, "stream {stream}: {rec}");
    }
    assert!(svc.pending().await.unwrap().is_empty(), "nothing was gated");
    env.finish();
}
