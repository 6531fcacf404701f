//! approval-gate on an MCP route through a real Envoy, with the real approval-service process
//! (SQLite) and the demo upstream as the MCP server. Decisions here are made through the
//! service's API (an approver token); the console is driven by a browser in its own test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use e2e::{ApprovalService, Env, Resp, Spec};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const TEMPLATE: &str = include_str!("../configs/approval_gate.yaml");
use e2e::APPROVER;
const CLIENT_TOKEN: &str = e2e::APPROVAL_CLIENT_TOKEN;

async fn start() -> (ApprovalService, Env) {
    // The filter authenticates with a client token from its VM environment.
    ApprovalService::with_envoy(TEMPLATE).await.unwrap()
}

fn call(tool: &str, args: Value, approval: Option<&str>) -> String {
    let mut params = json!({"name": tool, "arguments": args});
    if let Some(id) = approval {
        params["_meta"] = json!({"approval_id": id});
    }
    json!({"jsonrpc": "2.0", "id": 42, "method": "tools/call", "params": params}).to_string()
}

async fn mcp(env: &Env, path: &str, body: String) -> Resp {
    env.client()
        .post(path, body)
        .header("x-user", "alice")
        .header("mcp-session-id", "session-1")
        .send()
        .await
        .unwrap()
}

fn executed(r: &Resp) -> Value {
    let v = r.json().unwrap();
    let text = v["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("not a tool result: {v}"));
    serde_json::from_str(text).unwrap()
}

fn refused(r: &Resp) -> Value {
    let v = r.json().unwrap();
    assert_eq!(v["error"]["code"], -32001, "{v}");
    assert_eq!(v["id"], 42, "{v}");
    v["error"]["data"].clone()
}

#[tokio::test]
async fn a_held_tool_call_runs_only_after_a_person_approves() {
    let (svc, env) = start().await;
    // Small payments and other tools pass at once; deletes never.
    let r = mcp(&env, "/mcp", call("pay", json!({"amount": 20}), None)).await;
    assert_eq!(executed(&r)["arguments"]["amount"], 20);
    let r = mcp(&env, "/mcp", call("delete_account", json!({"id": 1}), None)).await;
    assert_eq!(refused(&r)["reason"], "tool_denied");

    for (decision, want) in [("approve", None), ("deny", Some("approval_denied"))] {
        let env2 = &env;
        let held = tokio::spawn({
            let client = env2.client();
            async move {
                client
                    .post(
                        "/mcp",
                        call("pay", json!({"amount": 1500, "currency": "EUR"}), None),
                    )
                    .header("x-user", "alice")
                    .header("mcp-session-id", "session-1")
                    .send()
                    .await
                    .unwrap()
            }
        });
        let id = svc.wait_pending().await.unwrap();
        // Still held: nothing reached the MCP server yet.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!held.is_finished(), "the call did not wait");
        svc.decide(&id, decision, "checked with the customer")
            .await
            .unwrap();
        let r = held.await.unwrap();
        match want {
            None => assert_eq!(executed(&r)["arguments"]["amount"], 1500),
            Some(reason) => {
                let d = refused(&r);
                assert_eq!(
                    (d["reason"].clone(), d["approval_id"].clone()),
                    (json!(reason), json!(id))
                );
            }
        }
    }
    env.finish();
}

#[tokio::test]
async fn a_deferred_approval_covers_exactly_its_call_once() {
    let (svc, env) = start().await;
    let args = json!({"amount": 2500, "to": "DE89370400440532013000"});
    let r = mcp(&env, "/defer/mcp", call("pay", args.clone(), None)).await;
    let d = refused(&r);
    assert_eq!(d["reason"], "approval_required");
    let id = d["approval_id"].as_str().unwrap().to_string();
    // Before a decision the retry does not pass.
    let r = mcp(&env, "/defer/mcp", call("pay", args.clone(), Some(&id))).await;
    assert_eq!(refused(&r)["reason"], "approval_not_granted");
    svc.decide(&id, "approve", "checked with the customer")
        .await
        .unwrap();
    // Swapped arguments: refused; the approved call: runs, once.
    let r = mcp(
        &env,
        "/defer/mcp",
        call(
            "pay",
            json!({"amount": 9500, "to": "DE89370400440532013000"}),
            Some(&id),
        ),
    )
    .await;
    assert_eq!(refused(&r)["reason"], "approval_mismatch");
    let r = mcp(&env, "/defer/mcp", call("pay", args.clone(), Some(&id))).await;
    assert_eq!(executed(&r)["arguments"], args);
    let r = mcp(&env, "/defer/mcp", call("pay", args.clone(), Some(&id))).await;
    assert_eq!(refused(&r)["reason"], "approval_used");
    env.finish();
}

#[tokio::test]
async fn a_stopped_service_gives_the_failure_policy_and_a_restart_loses_nothing() {
    let (mut svc, env) = start().await;
    let defer = |amount: u64| {
        mcp(
            &env,
            "/defer/mcp",
            call("pay", json!({"amount": amount}), None),
        )
    };
    let id = refused(&defer(3000).await)["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let decided = refused(&defer(2500).await)["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    svc.decide(&decided, "approve", "checked with the customer")
        .await
        .unwrap();
    svc.stop();
    let r = mcp(&env, "/mcp", call("pay", json!({"amount": 3000}), None)).await;
    assert_eq!(refused(&r)["reason"], "approval_unavailable");
    // A gated call in a model answer: replaced (the default failure policy is deny).
    for stream in [false, true] {
        let r = env
            .client()
            .post("/v1/chat/completions", chat("transfer_funds", stream))
            .header("x-user", "alice")
            .send()
            .await
            .unwrap();
        let text = r.text();
        assert_eq!(r.status, 200, "{text}");
        assert!(
            text.contains(
                "The tool call `transfer_funds` was not run: the approval service is unavailable."
            ) && !text.contains("\"tool_calls\""),
            "stream {stream}: {text}"
        );
    }
    svc.restart().await.unwrap();
    // The pending request and the decision survived the restart.
    assert_eq!(svc.pending().await.unwrap(), vec![id.clone()]);
    let r = mcp(
        &env,
        "/defer/mcp",
        call("pay", json!({"amount": 2500}), Some(&decided)),
    )
    .await;
    assert_eq!(executed(&r)["arguments"]["amount"], 2500);
    svc.decide(&id, "approve", "checked with the customer")
        .await
        .unwrap();
    let r = mcp(
        &env,
        "/defer/mcp",
        call("pay", json!({"amount": 3000}), Some(&id)),
    )
    .await;
    assert_eq!(executed(&r)["arguments"]["amount"], 3000);
    env.finish();
}

fn chat(tool: &str, stream: bool) -> String {
    json!({
        "model": "gpt-4o",
        "stream": stream,
        "messages": [{"role": "user", "content": "move the money [[tool_call]]"}],
        "tools": [{"type": "function", "function": {"name": tool, "parameters": {"type": "object"}}}]
    })
    .to_string()
}

/// Tool calls in model answers, streamed or not: a gated call is held (nothing reaches the
/// client) until a person decides; approved → the answer unchanged, denied → the provider's
/// error shape.
#[tokio::test]
async fn a_gated_tool_call_in_an_answer_is_held_until_decided() {
    let (svc, env) = start().await;
    // A tool the policy does not gate: the answer passes at once.
    let r = env
        .client()
        .post("/v1/chat/completions", chat("get_weather", false))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json().unwrap()["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    let r = env
        .client()
        .post("/v1/chat/completions", chat("get_weather", true))
        .send()
        .await
        .unwrap();
    assert!(
        r.text().contains("get_weather") && r.text().contains("data: [DONE]"),
        "{}",
        r.text()
    );
    // A tool the policy denies: removed from a whole answer at once, no person asked.
    let r = env
        .client()
        .post("/v1/chat/completions", chat("delete_account", false))
        .send()
        .await
        .unwrap();
    let v = r.json().unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "The tool call `delete_account` was not run: the policy does not allow it.",
        "{v}"
    );
    for stream in [false, true] {
        // A denied call is replaced by a deterministic message, in a stream too (nothing of
        // the held stream reached the client, so it is rewritten).
        for (decision, want_status) in [("approve", 200), ("deny", 200)] {
            let held = tokio::spawn({
                let client = env.client();
                async move {
                    client
                        .post("/v1/chat/completions", chat("transfer_funds", stream))
                        .header("x-user", "alice")
                        .send()
                        .await
                        .unwrap()
                }
            });
            let id = svc.wait_pending().await.unwrap();
            let rec = svc.record(&id).await.unwrap();
            assert_eq!(
                (rec["tool"].clone(), rec["caller"].clone()),
                (json!("transfer_funds"), json!("alice")),
                "{rec}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(
                !held.is_finished(),
                "the answer was not held (stream {stream})"
            );
            svc.decide(&id, decision, "checked with the customer")
                .await
                .unwrap();
            let r = held.await.unwrap();
            assert_eq!(
                r.status,
                want_status,
                "stream {stream} {decision}: {}",
                r.text()
            );
            if decision == "deny" && !stream {
                let v = r.json().unwrap();
                let m = &v["choices"][0]["message"];
                assert!(m.get("tool_calls").is_none(), "{v}");
                assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
                assert_eq!(
                    m["content"],
                    "The tool call `transfer_funds` was not run: a person denied it (checked with the customer).",
                    "{v}"
                );
            } else if decision == "deny" {
                let t = r.text();
                assert!(
                    !t.contains("\"tool_calls\"")
                        && t.contains(
                            "was not run: a person denied it (checked with the customer)."
                        )
                        && t.contains("\"finish_reason\":\"stop\"")
                        && t.trim_end().ends_with("data: [DONE]"),
                    "{t}"
                );
            } else {
                assert!(r.text().contains("transfer_funds"), "{}", r.text());
                if stream {
                    assert!(r.text().contains("data: [DONE]"), "{}", r.text());
                }
            }
        }
    }
    env.finish();
}

/// The shipped `envoy/approval-gate.yaml` holds a gated MCP call until a person approves it.
#[tokio::test]
async fn the_shipped_config_holds_a_gated_call() {
    let svc =
        ApprovalService::start(&["--approver-token", APPROVER, "--client-token", CLIENT_TOKEN])
            .await
            .unwrap();
    let env = Env::start(
        Spec::shipped_file("envoy/approval-gate.yaml")
            .swap(
                "port_value: 18090",
                &format!("port_value: {}", svc.addr.port()),
            )
            .env("GUARD_APPROVAL_CLIENT_TOKEN", CLIENT_TOKEN),
    )
    .await
    .unwrap();
    let held = tokio::spawn({
        let client = env.client();
        async move {
            client
                .post(
                    "/mcp",
                    call("pay", json!({"amount": 4200, "currency": "EUR"}), None),
                )
                .header("x-user", "alice")
                .send()
                .await
                .unwrap()
        }
    });
    let id = svc.wait_pending().await.unwrap();
    assert!(!held.is_finished());
    svc.decide(&id, "approve", "checked with the customer")
        .await
        .unwrap();
    assert_eq!(executed(&held.await.unwrap())["arguments"]["amount"], 4200);
    env.finish();
}

/// The shipped LLM chains (`envoy/envoy.yaml`, and `envoy/envoy-all.yaml` with every filter in
/// one module) hold a payment the model calls in its answer until a person decides, with the
/// caller's real values in the approval (pii-redact restored them below approval-gate) while the
/// model only saw a pseudonym.
#[tokio::test]
async fn the_shipped_llm_chains_hold_a_gated_call_in_an_answer() {
    for config in ["envoy/envoy.yaml", "envoy/envoy-all.yaml"] {
        let svc =
            ApprovalService::start(&["--approver-token", APPROVER, "--client-token", CLIENT_TOKEN])
                .await
                .unwrap();
        let env = Env::start(
            Spec::shipped_file(config)
                .swap(
                    "port_value: 18090",
                    &format!("port_value: {}", svc.addr.port()),
                )
                .env("GUARD_APPROVAL_CLIENT_TOKEN", CLIENT_TOKEN),
        )
        .await
        .unwrap();
        for (stream, decision) in [(false, "approve"), (true, "deny")] {
            let body = json!({
                "model": "gpt-4o",
                "stream": stream,
                "messages": [{"role": "user", "content": "pay jane.doe@example.com [[tool_args:{\"amount\":1500,\"to\":\"jane.doe@example.com\"}]]"}],
                "tools": [{"type": "function", "function": {"name": "pay", "parameters": {"type": "object"}}}]
            });
            let held = tokio::spawn({
                let client = env.client();
                async move {
                    client
                        .post("/v1/chat/completions", body.to_string())
                        .header("x-user", "alice")
                        .send()
                        .await
                        .unwrap()
                }
            });
            let id = svc.wait_pending().await.unwrap();
            let rec = svc.record(&id).await.unwrap();
            assert_eq!(
                rec["arguments"],
                json!({"amount": 1500, "to": "jane.doe@example.com"}),
                "{config}: {rec}"
            );
            let seen = env.upstream.received();
            let sent = String::from_utf8_lossy(&seen.last().unwrap().body).to_string();
            assert!(!sent.contains("jane.doe@example.com"), "{config}: {sent}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(!held.is_finished(), "{config}: not held");
            svc.decide(&id, decision, "checked with the customer")
                .await
                .unwrap();
            let r = held.await.unwrap();
            let text = r.text();
            assert_eq!(r.status, 200, "{config}: {text}");
            if decision == "approve" {
                let v = r.json().unwrap();
                let call = &v["choices"][0]["message"]["tool_calls"][0]["function"];
                assert_eq!(call["name"], "pay", "{config}: {v}");
                let args: Value =
                    serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
                assert_eq!(args["to"], "jane.doe@example.com", "{config}: {v}");
            } else {
                assert!(
                    text.contains("The tool call `pay` was not run: a person denied it")
                        && !text.contains("\"tool_calls\"")
                        && text.trim_end().ends_with("data: [DONE]"),
                    "{config}: {text}"
                );
            }
        }
        env.finish();
    }
}

/// Nobody decides within the hold bound: the held call gets `approval_expired`, in about the
/// bound (1.5 s on this route), and never reaches the MCP server; a held answer (streamed or
/// not) gets the call replaced.
#[tokio::test]
async fn an_undecided_hold_expires_into_a_refusal() {
    let (svc, env) = start().await;
    let t = Instant::now();
    let r = mcp(
        &env,
        "/quick/mcp",
        call("pay", json!({"amount": 1500}), None),
    )
    .await;
    let took = t.elapsed();
    let d = refused(&r);
    assert_eq!(d["reason"], "approval_expired", "{d}");
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(10),
        "{took:?}"
    );
    // The request is still pending at the service (its own expiry is later): nobody ran it.
    assert_eq!(svc.pending().await.unwrap().len(), 1);
    let recorded = env.upstream.received();
    assert!(
        recorded.iter().all(|r| !r.path.ends_with("/mcp")),
        "the call reached the MCP server"
    );
    // The same for a payment in a model answer, streamed or not: the call is replaced.
    for stream in [false, true] {
        let body = json!({
            "model": "gpt-4o",
            "stream": stream,
            "messages": [{"role": "user", "content": "pay it [[tool_args:{\"amount\":1500}]]"}],
            "tools": [{"type": "function", "function": {"name": "pay", "parameters": {"type": "object"}}}]
        });
        let t = Instant::now();
        let r = env
            .client()
            .post("/quick/v1/chat/completions", body.to_string())
            .header("x-user", "alice")
            .send()
            .await
            .unwrap();
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(1400) && took < Duration::from_secs(10),
            "{took:?}"
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let text = r.text();
        assert!(
            text.contains("The tool call `pay` was not run: nobody approved it in time.")
                && !text.contains("\"tool_calls\""),
            "stream {stream}: {text}"
        );
        if stream {
            assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        }
    }
    assert_eq!(svc.pending().await.unwrap().len(), 3);
    env.finish();
}
