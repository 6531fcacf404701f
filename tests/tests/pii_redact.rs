//! pii-redact through a real Envoy, for the OpenAI chat and Anthropic Messages shapes: the
//! upstream never sees raw PII, placeholders round-trip (streamed answers split into tiny chunks
//! too), new PII in answers is redacted, `block` refuses requests (400) and answers (502 or an
//! error event), per-type counters, the audit record (counts, never values), the stream
//! hold-back bound, tool-call arguments, dry run, mask and keyed hash.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use e2e::{assemble_stream, Env, Resp, Spec};
use guard_core::api::ApiShape;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

const TEMPLATE: &str = include_str!("../configs/pii_redact.yaml");

/// The `hash` key, set in the VM's environment by the config (never in the plugin config).
const HMAC_KEY: &str = "e2e-pii-hmac-key-0123456789abcdef";

const SHAPES: [ApiShape; 2] = [ApiShape::OpenAiChat, ApiShape::AnthropicMessages];

const EMAIL: &str = "jane.doe@example.com";
const PHONE: &str = "+44 20 7946 0958";
const CARD: &str = "4111 1111 1111 1111";
const AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const GH_SECRET: &str = "ghp_k3Y9pQ2mX7vB4nL8rT1wZ6cF5hJ0sD2gA9eU";

fn plugin_config() -> String {
    json!({
        "name": "e2e",
        "route_policies": {
            "redact": "redact", "block": "block", "hold": "hold", "dry": "dry",
            "mask": "mask", "hash": "hash", "tools": "tools"
        },
        "policies": {
            "default": {},
            // `entities` replaces the default table: every type gets `default` (redact).
            "redact": {"entities": {}},
            "block": {"entities": {"CREDIT_CARD": {"action": "block"}}},
            "hold": {"failure_policy": "fail_closed", "max_hold_bytes": 64},
            "dry": {"dry_run": true},
            "mask": {"entities": {"CREDIT_CARD": {"action": "mask"}}},
            "hash": {"entities": {"EMAIL": {"action": "hash"}}},
            "tools": {
                "dictionaries": [{"name": "CITY", "terms": ["Paris"]}],
                "entities": {"CITY": {"request": "allow", "response": "redact"}}
            }
        }
    })
    .to_string()
}

async fn start() -> anyhow::Result<Env> {
    Env::start(
        Spec::template(TEMPLATE)
            .var("PLUGIN_CONFIG", &plugin_config())
            .var("HMAC_KEY", HMAC_KEY),
    )
    .await
}

fn path(api: ApiShape) -> &'static str {
    match api {
        ApiShape::AnthropicMessages => "/v1/messages",
        _ => "/v1/chat/completions",
    }
}

fn name(api: ApiShape) -> &'static str {
    match api {
        ApiShape::AnthropicMessages => "anthropic",
        _ => "openai",
    }
}

/// A request with one user message (Anthropic: as a text block).
fn request(api: ApiShape, text: &str, stream: bool) -> String {
    match api {
        ApiShape::AnthropicMessages => json!({
            "model": "claude-sonnet-4-5", "max_tokens": 100, "stream": stream,
            "system": "You are a helpful assistant.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]
        }),
        _ => json!({
            "model": "gpt-4o", "stream": stream,
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": text}
            ]
        }),
    }
    .to_string()
}

/// The user text the upstream received.
fn upstream_user_text(api: ApiShape, body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap();
    let t = match api {
        ApiShape::AnthropicMessages => &v["messages"][0]["content"][0]["text"],
        _ => &v["messages"][1]["content"],
    };
    t.as_str()
        .unwrap_or_else(|| panic!("no user text in {v}"))
        .to_string()
}

/// The only model request the upstream received, as text.
fn only_upstream_body(env: &Env) -> String {
    let seen = env.upstream.received();
    assert_eq!(seen.len(), 1, "upstream requests: {}", seen.len());
    String::from_utf8(seen[0].body.clone()).unwrap()
}

/// Every SSE event of a client stream is well formed, and the stream ends the way the API ends
/// it (OpenAI `data: [DONE]`, Anthropic `message_stop`). Returns the event data, in order.
fn assert_valid_stream(api: ApiShape, resp: &Resp) -> Vec<String> {
    let text = resp.text();
    assert!(text.ends_with("\n\n"), "unterminated stream:\n{text}");
    let mut datas = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let data: Vec<&str> = block
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim_start)
            .collect();
        assert!(!data.is_empty(), "event without data: {block:?}\n{text}");
        let data = data.join("\n");
        if data != "[DONE]" {
            serde_json::from_str::<Value>(&data)
                .unwrap_or_else(|e| panic!("event data is not json ({e}): {data}\n{text}"));
        }
        datas.push(data);
    }
    match api {
        ApiShape::AnthropicMessages => {
            let last: Value = serde_json::from_str(datas.last().unwrap()).unwrap();
            assert!(
                last["type"] == "message_stop" || last["type"] == "error",
                "last event: {last}"
            );
        }
        _ => assert_eq!(datas.last().map(String::as_str), Some("[DONE]"), "{text}"),
    }
    datas
}

/// The answer text the client sees (streamed: assembled, after checking the stream is valid and
/// complete without an error).
fn answer_text(api: ApiShape, resp: &Resp, stream: bool) -> String {
    assert_eq!(resp.status, 200, "{}", resp.text());
    if stream {
        assert_valid_stream(api, resp);
        let asm = assemble_stream(api, &resp.body).unwrap();
        assert!(asm.done, "stream did not complete:\n{}", resp.text());
        assert_eq!(asm.error, None, "{}", resp.text());
        return asm.choices[0].content.clone();
    }
    let v = resp.json().unwrap();
    let t = match api {
        ApiShape::AnthropicMessages => &v["content"][0]["text"],
        _ => &v["choices"][0]["message"]["content"],
    };
    t.as_str()
        .unwrap_or_else(|| panic!("no answer text in {v}"))
        .to_string()
}

/// The value of a Prometheus sample with exactly these labels (in any order).
fn prom_value(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(metric)?.strip_prefix('{')?;
        let (inner, value) = rest.split_once("} ")?;
        let mut got: Vec<(&str, &str)> = inner
            .split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        let mut want = labels.to_vec();
        got.sort_unstable();
        want.sort_unstable();
        (got == want).then(|| value.trim().parse().ok())?
    })
}

fn hmac_token(type_name: &str, canonical: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(HMAC_KEY.as_bytes()).unwrap();
    mac.update(type_name.as_bytes());
    mac.update(&[0]);
    mac.update(canonical.as_bytes());
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("[{type_name}:{hex}]")
}

// ------------------------------------------------------------------------------------------------

/// 1. The upstream receives redacted text: placeholders for contact and card data, redaction
/// tokens for secrets, none of the raw values.
#[tokio::test]
async fn upstream_never_sees_raw_pii_in_either_shape() -> anyhow::Result<()> {
    let env = start().await?;
    let text = format!(
        "Hi, I am {EMAIL}, call me on {PHONE}. Card {CARD}, AWS key {AWS_KEY}, password: {GH_SECRET}"
    );
    let want = "Hi, I am <EMAIL_1>, call me on <PHONE_1>. Card <CREDIT_CARD_1>, AWS key [API_KEY], password: [PASSWORD]";
    for api in SHAPES {
        env.upstream.clear();
        let rid = format!("redact-{}", name(api));
        let resp = env
            .client()
            .post(path(api), request(api, &text, false))
            .header("x-request-id", &rid)
            .send()
            .await?;
        assert_eq!(resp.status, 200, "{}", resp.text());
        let body = only_upstream_body(&env);
        for raw in [
            EMAIL,
            PHONE,
            CARD,
            "4111111111111111",
            AWS_KEY,
            GH_SECRET,
            "7946 0958",
        ] {
            assert!(
                !body.contains(raw),
                "{}: upstream saw {raw}: {body}",
                name(api)
            );
        }
        assert_eq!(upstream_user_text(api, body.as_bytes()), want);
        // The content-length was fixed to the rewritten body's.
        let seen = &env.upstream.received()[0];
        let len = seen
            .headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        assert_eq!(len, Some(body.len().to_string()), "{}", name(api));
        let rec = env.audit_record("pii_redact", &rid).await?;
        assert_eq!(rec["decision"], "modify", "{rec}");
        assert_eq!(
            rec["entities"]["request"],
            json!({"EMAIL": 1, "PHONE": 1, "CREDIT_CARD": 1, "API_KEY": 1, "PASSWORD": 1}),
            "{rec}"
        );
        // The echo comes back with the pseudonymised values restored, the secrets not (the
        // `password: [PASSWORD]` part of the echo: see
        // `redaction_tokens_in_answers_are_left_alone`).
        let answer = answer_text(api, &resp, false);
        assert!(
            answer.starts_with(&format!(
                "You said: Hi, I am {EMAIL}, call me on {PHONE}. Card {CARD}, AWS key [API_KEY], password: [PASSWORD]"
            )),
            "{answer}"
        );
    }

    // The all-redact route: tokens only, nothing to restore.
    env.upstream.clear();
    let resp = env
        .client()
        .post(
            "/redact/v1/chat/completions",
            request(ApiShape::OpenAiChat, &text, false),
        )
        .send()
        .await?;
    let answer = answer_text(ApiShape::OpenAiChat, &resp, false);
    assert!(
        answer.starts_with("You said: Hi, I am [EMAIL], call me on [PHONE]. Card [CREDIT_CARD], AWS key [API_KEY], password: [PASSWORD]"),
        "{answer}"
    );
    assert_eq!(
        upstream_user_text(ApiShape::OpenAiChat, only_upstream_body(&env).as_bytes()),
        "Hi, I am [EMAIL], call me on [PHONE]. Card [CREDIT_CARD], AWS key [API_KEY], password: [PASSWORD]"
    );
    env.finish();
    Ok(())
}

/// 2. Pseudonyms round-trip: the upstream sees `<EMAIL_1>`, the client its own address back,
/// non-streamed and streamed in 3-byte chunks (the placeholder split across chunks and deltas).
#[tokio::test]
async fn pseudonyms_round_trip_streamed_or_not() -> anyhow::Result<()> {
    let env = start().await?;
    let text = format!("Please email {EMAIL} and {EMAIL} again about the invoice.");
    for api in SHAPES {
        for stream in [false, true] {
            // (bytes per upstream chunk, ms between chunks): with a pause, Envoy hands the
            // filter every chunk on its own.
            for (chunk, delay) in [("3", "1"), ("1", "0")] {
                if !stream && chunk == "1" {
                    continue;
                }
                env.upstream.clear();
                let rid = format!("rt-{}-{stream}-{chunk}", name(api));
                let resp = env
                    .client()
                    .post(path(api), request(api, &text, stream))
                    .header("x-request-id", &rid)
                    .header("x-demo-chunk-size", chunk)
                    .header("x-demo-chunk-delay-ms", delay)
                    .send()
                    .await?;
                let case = format!("{} stream={stream} chunk={chunk}", name(api));
                let body = only_upstream_body(&env);
                assert!(!body.contains(EMAIL), "{case}: {body}");
                assert_eq!(
                    upstream_user_text(api, body.as_bytes()),
                    "Please email <EMAIL_1> and <EMAIL_1> again about the invoice.",
                    "{case}"
                );
                assert_eq!(
                    answer_text(api, &resp, stream),
                    format!("You said: {text}"),
                    "{case}"
                );
                assert!(!resp.text().contains("EMAIL_"), "{case}: {}", resp.text());
                let rec = env.audit_record("pii_redact", &rid).await?;
                assert_eq!(rec["restored"], 2, "{case}: {rec}");
                assert_eq!(rec["pseudonyms"], 1, "{case}: {rec}");
                assert_eq!(rec["entities"]["request"], json!({"EMAIL": 2}), "{case}");
                assert!(rec["entities"]["response"].is_null(), "{case}: {rec}");
            }
        }
    }
    env.finish();
    Ok(())
}

/// 3. New PII in a streamed answer, split across chunks and deltas, is redacted before any
/// byte of it reaches the client; the stream stays valid.
#[tokio::test]
async fn new_pii_in_answers_is_redacted_streamed_or_not() -> anyhow::Result<()> {
    let env = start().await?;
    let answer = "Sure. Write to bob.smith@corp-mail.net or pay with 5555 5555 5555 4444 today.";
    let want = "Sure. Write to [EMAIL] or pay with [CREDIT_CARD] today.";
    for api in SHAPES {
        for (stream, chunk, delay) in [
            (false, "16", "0"),
            (true, "1", "0"),
            (true, "3", "1"),
            (true, "7", "0"),
        ] {
            let rid = format!("new-{}-{stream}-{chunk}", name(api));
            let resp = env
                .client()
                .post(path(api), request(api, "How do I reach Bob?", stream))
                .header("x-request-id", &rid)
                .header("x-demo-scenario", format!("text:{answer}"))
                .header("x-demo-chunk-size", chunk)
                .header("x-demo-chunk-delay-ms", delay)
                .send()
                .await?;
            let case = format!("{} stream={stream} chunk={chunk}", name(api));
            let raw = resp.text();
            for leak in ["bob.smith", "corp-mail", "5555 5555", "5555", "4444"] {
                assert!(
                    !raw.contains(leak),
                    "{case}: {leak} reached the client:\n{raw}"
                );
            }
            assert_eq!(answer_text(api, &resp, stream), want, "{case}");
            let rec = env.audit_record("pii_redact", &rid).await?;
            assert_eq!(
                rec["entities"]["response"],
                json!({"EMAIL": 1, "CREDIT_CARD": 1}),
                "{case}: {rec}"
            );
            assert_eq!(rec["decision"], "modify", "{case}: {rec}");
            assert!(!rec.to_string().contains("bob.smith"), "{case}: {rec}");
        }
    }
    env.finish();
    Ok(())
}

/// 4. `block`: a request with a card is refused in the provider's error shape and never reaches
/// the upstream; an answer with a card is refused (502) or its stream ends with an error event.
#[tokio::test]
async fn block_refuses_requests_and_answers() -> anyhow::Result<()> {
    let env = start().await?;
    for (api, stream) in SHAPES.iter().flat_map(|a| [(*a, false), (*a, true)]) {
        env.upstream.clear();
        let rid = format!("block-{}-{stream}", name(api));
        let text = format!("Charge my card {CARD} please, mail {EMAIL}.");
        let resp = env
            .client()
            .post(&format!("/block{}", path(api)), request(api, &text, stream))
            .header("x-request-id", &rid)
            .send()
            .await?;
        assert_eq!(resp.status, 400, "{}", resp.text());
        assert_eq!(
            resp.header("x-guard-reason").as_deref(),
            Some("pii_detected")
        );
        assert!(
            !resp.text().contains("4111"),
            "reply echoes the card: {}",
            resp.text()
        );
        let err = resp.json()?;
        if api == ApiShape::AnthropicMessages {
            assert_eq!(err["type"], "error", "{err}");
            assert_eq!(err["error"]["type"], "invalid_request_error", "{err}");
            assert_eq!(err["request_id"], rid.as_str(), "{err}");
        } else {
            assert_eq!(err["error"]["type"], "invalid_request_error", "{err}");
            assert_eq!(err["error"]["request_id"], rid.as_str(), "{err}");
        }
        assert_eq!(err["error"]["code"], "pii_detected", "{err}");
        assert!(
            env.upstream.received().is_empty(),
            "the upstream saw a blocked request"
        );
        let rec = env.audit_record("pii_redact", &rid).await?;
        assert_eq!(rec["decision"], "block", "{rec}");
        assert!(
            rec["reasons"]
                .as_array()
                .is_some_and(|r| r.contains(&json!("pii_detected"))),
            "{rec}"
        );
        assert_eq!(rec["blocked_types"], json!(["CREDIT_CARD"]), "{rec}");
        assert_eq!(
            rec["entities"]["request"],
            json!({"CREDIT_CARD": 1, "EMAIL": 1}),
            "{rec}"
        );
        let s = rec.to_string();
        for raw in ["4111 1111", "4111111111111111", EMAIL] {
            assert!(!s.contains(raw), "record holds {raw}: {s}");
        }
    }

    // Answers: a card the model wrote.
    let scenario = format!("text:Your card on file is {CARD}, thanks.");
    for api in SHAPES {
        let rid = format!("block-answer-{}", name(api));
        let resp = env
            .client()
            .post(
                &format!("/block{}", path(api)),
                request(api, "What card do I have on file?", false),
            )
            .header("x-request-id", &rid)
            .header("x-demo-scenario", &scenario)
            .send()
            .await?;
        assert_eq!(resp.status, 502, "{}", resp.text());
        assert!(!resp.text().contains("4111"), "{}", resp.text());
        assert_eq!(resp.json()?["error"]["code"], "pii_detected");
        let rec = env.audit_record("pii_redact", &rid).await?;
        assert_eq!(rec["decision"], "block", "{rec}");
        assert_eq!(
            rec["entities"]["response"],
            json!({"CREDIT_CARD": 1}),
            "{rec}"
        );

        let rid = format!("block-stream-{}", name(api));
        let resp = env
            .client()
            .post(
                &format!("/block{}", path(api)),
                request(api, "What card do I have on file?", true),
            )
            .header("x-request-id", &rid)
            .header("x-demo-scenario", &scenario)
            .header("x-demo-chunk-size", "3")
            .send()
            .await?;
        assert_eq!(resp.status, 200, "{}", resp.text());
        let raw = resp.text();
        assert!(!raw.contains("4111") && !raw.contains("1111"), "{raw}");
        let events = assert_valid_stream(api, &resp);
        let error_event = events
            .iter()
            .find(|d| d.contains("pii_detected"))
            .unwrap_or_else(|| panic!("no error event:\n{raw}"));
        let e: Value = serde_json::from_str(error_event)?;
        assert_eq!(e["error"]["code"], "pii_detected", "{e}");
        // Nothing after the error (OpenAI: but its [DONE]).
        let after = events
            .iter()
            .skip_while(|d| !d.contains("pii_detected"))
            .skip(1)
            .cloned()
            .collect::<Vec<_>>();
        let want_after: Vec<String> = if api == ApiShape::AnthropicMessages {
            vec![]
        } else {
            vec!["[DONE]".into()]
        };
        assert_eq!(after, want_after, "{raw}");
        let asm = assemble_stream(api, &resp.body)?;
        assert!(asm.error.is_some(), "{raw}");
        assert!(
            !asm.choices
                .first()
                .is_some_and(|c| c.content.contains("1111")),
            "{raw}"
        );
        let rec = env.audit_record("pii_redact", &rid).await?;
        assert_eq!(rec["decision"], "block", "{rec}");
    }
    env.finish();
    Ok(())
}

/// 5. Per-type counters, labelled by direction, type and action, in Prometheus at once.
#[tokio::test]
async fn per_type_counters_appear_in_prometheus() -> anyhow::Result<()> {
    let env = start().await?;
    let text = format!("Mail {EMAIL} or {EMAIL}, phone {PHONE}, key {AWS_KEY}");
    let resp = env
        .client()
        .post(
            "/v1/chat/completions",
            request(ApiShape::OpenAiChat, &text, false),
        )
        .send()
        .await?;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = env
        .client()
        .post(
            "/v1/messages",
            request(ApiShape::AnthropicMessages, "hi", false),
        )
        .header(
            "x-demo-scenario",
            "text:reach me at bob.smith@corp-mail.net",
        )
        .send()
        .await?;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let entities = |direction: &'static str, ty: &'static str, action: &'static str, n: u64| {
        (
            "guard_entities",
            vec![
                ("guard_filter", "pii_redact"),
                ("direction", direction),
                ("entity_type", ty),
                ("action", action),
            ],
            n,
        )
    };
    let want = [
        entities("request", "EMAIL", "pseudonymize", 2),
        entities("request", "PHONE", "pseudonymize", 1),
        entities("request", "API_KEY", "redact", 1),
        entities("response", "EMAIL", "redact", 1),
        ("guard_restored", vec![("guard_filter", "pii_redact")], 3),
        (
            "guard_decisions",
            vec![
                ("guard_filter", "pii_redact"),
                ("decision", "modify"),
                ("reason", "pii_redacted"),
            ],
            2,
        ),
    ];
    let prom = env
        .wait_prometheus(|p| {
            want.iter()
                .all(|(m, labels, n)| prom_value(p, m, labels) == Some(*n))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nwanted: {want:?}"))?;
    // No entity type is counted that was not there (and no value ever is a label).
    let types: Vec<&str> = prom
        .lines()
        .filter(|l| l.starts_with("guard_entities{"))
        .collect();
    assert_eq!(types.len(), 4, "{}", types.join("\n"));
    assert!(!prom.contains("jane"), "{prom}");
    env.finish();
    Ok(())
}

/// 6. The verdict in filter state: counts by type, never the values.
#[tokio::test]
async fn audit_record_has_counts_by_type_never_values() -> anyhow::Result<()> {
    let env = start().await?;
    let other = "john.roe@example.org";
    let text = format!("Mail {EMAIL} and {other}, card {CARD}, phone {PHONE}.");
    for api in SHAPES {
        for stream in [false, true] {
            let rid = format!("rec-{}-{stream}", name(api));
            let resp = env
                .client()
                .post(path(api), request(api, &text, stream))
                .header("x-request-id", &rid)
                .send()
                .await?;
            assert_eq!(answer_text(api, &resp, stream), format!("You said: {text}"));
            let rec = env.audit_record("pii_redact", &rid).await?;
            assert_eq!(rec["request_id"], rid.as_str(), "{rec}");
            assert_eq!(rec["filter"], "pii_redact", "{rec}");
            assert_eq!(rec["policy"], "e2e/default", "{rec}");
            assert_eq!(rec["decision"], "modify", "{rec}");
            assert_eq!(rec["reasons"], json!(["pii_redacted"]), "{rec}");
            assert_eq!(
                rec["entities"],
                json!({"request": {"EMAIL": 2, "CREDIT_CARD": 1, "PHONE": 1}}),
                "{rec}"
            );
            assert_eq!(rec["pseudonyms"], 4, "{rec}");
            assert_eq!(rec["restored"], 4, "{rec}");
            if stream {
                assert!(rec["max_held_bytes"].is_u64(), "{rec}");
            } else {
                assert!(rec["max_held_bytes"].is_null(), "{rec}");
            }
            let s = rec.to_string();
            for raw in [
                EMAIL,
                other,
                "4111 1111",
                "4111111111111111",
                PHONE,
                "7946",
                "jane",
            ] {
                assert!(!s.contains(raw), "record holds {raw}: {s}");
            }
        }
    }
    env.finish();
    Ok(())
}

/// 7. The hold-back bound: text that keeps a match alive past `max_hold_bytes` (64) (a private
/// key without its END line, a long `eyJ...` run) ends the stream with an error event (fail
/// closed), recorded and counted; a JWT longer than the bound never leaks; ordinary answers
/// hold at most 64 bytes.
#[tokio::test]
async fn hold_back_is_bounded_and_fails_closed() -> anyhow::Result<()> {
    let env = start().await?;
    let b64 = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvuNMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZ";
    let run = format!("eyJ{}", "aB3dE5fG7h".repeat(50));
    let cases = [
        (
            "pem",
            format!("Here is the key: -----BEGIN PRIVATE KEY----- {b64}{b64}"),
            "Here is the key: ",
            "MIIEvQ",
        ),
        (
            "eyj-run",
            format!("Here it is: {run} end."),
            "Here it is: ",
            "aB3dE5fG7haB3dE",
        ),
    ];
    for (case, answer, before, material) in &cases {
        for api in SHAPES {
            let rid = format!("{case}-{}", name(api));
            let resp = env
                .client()
                .post(
                    &format!("/hold{}", path(api)),
                    request(api, "key please", true),
                )
                .header("x-request-id", &rid)
                .header("x-demo-scenario", format!("text:{answer}"))
                .header("x-demo-chunk-size", "5")
                .send()
                .await?;
            let case = format!("{case} {}", name(api));
            assert_eq!(resp.status, 200, "{case}: {}", resp.text());
            let raw = resp.text();
            assert!(
                !raw.contains(material) && !raw.contains("BEGIN PRIVATE"),
                "{case}: held material reached the client:\n{raw}"
            );
            let events = assert_valid_stream(api, &resp);
            let err = events
                .iter()
                .rev()
                .find(|d| d.contains("\"error\""))
                .unwrap_or_else(|| panic!("{case}: no error event:\n{raw}"));
            let e: Value = serde_json::from_str(err)?;
            assert_eq!(e["error"]["code"], "body_too_large", "{case}: {e}");
            let asm = assemble_stream(api, &resp.body)?;
            assert!(asm.error.is_some(), "{case}: {raw}");
            // What was released before the stop is text before the held part (the end of it
            // may have been held too, and dropped with the stream).
            let seen = asm
                .choices
                .first()
                .map(|c| c.content.as_str())
                .unwrap_or("");
            assert!(before.starts_with(seen), "{case}: {seen:?}");
            let rec = env.audit_record("pii_redact", &rid).await?;
            assert_eq!(rec["decision"], "block", "{case}: {rec}");
            assert_eq!(rec["reasons"], json!(["body_too_large"]), "{case}: {rec}");
            // The scanner saw at most the bound plus the delta that broke it (<= 8 chars).
            assert!(
                rec["max_held_bytes"]
                    .as_u64()
                    .is_some_and(|n| n > 0 && n <= 64 + 8),
                "{case}: {rec}"
            );
        }
    }
    assert_eq!(
        env.counter("wasmcustom.guard.pii_redact.decision.block.reason.body_too_large.decisions")
            .await?,
        4
    );

    // A real JWT, far longer than the bound: redacted whole, or the stream stops; never leaked.
    let header = e2e::b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = e2e::b64url(
        json!({"sub": "1234567890", "name": "Jane Doe", "scope": "read:all write:all admin:all", "org": "e2e-tests-org-0123456789", "iat": 1_516_239_022, "exp": 1_916_239_022})
            .to_string()
            .as_bytes(),
    );
    let jwt = format!("{header}.{payload}.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U");
    assert!(jwt.len() > 200);
    for api in SHAPES {
        let rid = format!("jwt-{}", name(api));
        let resp = env
            .client()
            .post(
                &format!("/hold{}", path(api)),
                request(api, "token please", true),
            )
            .header("x-request-id", &rid)
            .header(
                "x-demo-scenario",
                format!("text:Your token is {jwt} thanks."),
            )
            .header("x-demo-chunk-size", "5")
            .send()
            .await?;
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_valid_stream(api, &resp);
        let asm = assemble_stream(api, &resp.body)?;
        let seen = asm
            .choices
            .first()
            .map(|c| c.content.clone())
            .unwrap_or_default();
        let leaked: Vec<&str> = (0..jwt.len().saturating_sub(12))
            .step_by(6)
            .map(|i| &jwt[i..i + 12])
            .filter(|w| seen.contains(w))
            .collect();
        assert!(
            leaked.is_empty(),
            "{}: parts of the JWT reached the client: {seen:?}",
            name(api)
        );
        if asm.error.is_none() {
            assert_eq!(seen, "Your token is [API_KEY] thanks.", "{}", name(api));
        }
    }

    // Ordinary streamed answers on the same route: complete, at most 64 bytes held.
    let text = format!(
        "Please forward the minutes of the meeting to {EMAIL} before Friday, thanks a lot."
    );
    for api in SHAPES {
        let rid = format!("hold-ok-{}", name(api));
        let resp = env
            .client()
            .post(&format!("/hold{}", path(api)), request(api, &text, true))
            .header("x-request-id", &rid)
            .header("x-demo-chunk-size", "3")
            .send()
            .await?;
        assert_eq!(answer_text(api, &resp, true), format!("You said: {text}"));
        let rec = env.audit_record("pii_redact", &rid).await?;
        let held = rec["max_held_bytes"]
            .as_u64()
            .unwrap_or_else(|| panic!("no max_held_bytes: {rec}"));
        assert!(held > 0 && held <= 64, "held {held}: {rec}");
        assert_eq!(rec["restored"], 1, "{rec}");
    }
    env.finish();
    Ok(())
}

/// 8. Tool-call arguments: the JSON in a request's `arguments` string stays valid JSON with the
/// placeholder inside the string (Anthropic: `tool_use.input`); an answer's tool-call arguments
/// are rewritten validly, streamed or not.
#[tokio::test]
async fn tool_call_arguments_are_rewritten_validly() -> anyhow::Result<()> {
    let env = start().await?;
    let args = json!({"to": EMAIL, "subject": "Q3 report", "note": "line1\nline2 \"quoted\" \\ done", "cc": [EMAIL, "team@corp-mail.net"]});
    let want = json!({"to": "<EMAIL_1>", "subject": "Q3 report", "note": "line1\nline2 \"quoted\" \\ done", "cc": ["<EMAIL_1>", "<EMAIL_2>"]});
    let openai = json!({"model": "gpt-4o", "messages": [
        {"role": "user", "content": "Send the report to my colleague."},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "send_email", "arguments": args.to_string()}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sent"}
    ]});
    let anthropic = json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [
        {"role": "user", "content": "Send the report to my colleague."},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "tu_1", "name": "send_email", "input": args}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": "sent"}]}
    ]});
    for (api, body) in [
        (ApiShape::OpenAiChat, openai),
        (ApiShape::AnthropicMessages, anthropic),
    ] {
        env.upstream.clear();
        let resp = env
            .client()
            .post(path(api), body.to_string())
            .send()
            .await?;
        assert_eq!(resp.status, 200, "{}", resp.text());
        let seen: Value = serde_json::from_str(&only_upstream_body(&env))?;
        assert!(!seen.to_string().contains(EMAIL), "{seen}");
        let got = if api == ApiShape::AnthropicMessages {
            seen["messages"][1]["content"][0]["input"].clone()
        } else {
            let s = seen["messages"][1]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap_or_else(|| panic!("arguments not a string: {seen}"));
            serde_json::from_str(s).unwrap_or_else(|e| panic!("arguments not json ({e}): {s}"))
        };
        assert_eq!(got, want, "{}", name(api));
    }

    // Answers: the model calls get_weather for Paris; the `tools` route redacts the CITY term.
    let want = json!({"city": "[CITY]", "unit": "celsius"});
    for api in SHAPES {
        for stream in [false, true] {
            let case = format!("{} stream={stream}", name(api));
            let rid = format!("tool-answer-{}-{stream}", name(api));
            let resp = env
                .client()
                .post(
                    &format!("/tools{}", path(api)),
                    request(api, "What is the weather?", stream),
                )
                .header("x-request-id", &rid)
                .header("x-demo-scenario", "tool_call")
                .header("x-demo-chunk-size", "3")
                .send()
                .await?;
            assert_eq!(resp.status, 200, "{case}: {}", resp.text());
            assert!(!resp.text().contains("Paris"), "{case}: {}", resp.text());
            let got: Value = if stream {
                assert_valid_stream(api, &resp);
                let asm = assemble_stream(api, &resp.body)?;
                assert!(asm.done && asm.error.is_none(), "{case}: {}", resp.text());
                let a = &asm.choices[0].tool_calls[0].arguments;
                serde_json::from_str(a)
                    .unwrap_or_else(|e| panic!("{case}: arguments not json ({e}): {a}"))
            } else {
                let v = resp.json()?;
                if api == ApiShape::AnthropicMessages {
                    v["content"][0]["input"].clone()
                } else {
                    let a = v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{case}: {v}"))
                        .to_string();
                    serde_json::from_str(&a)
                        .unwrap_or_else(|e| panic!("{case}: arguments not json ({e}): {a}"))
                }
            };
            assert_eq!(got, want, "{case}");
            let rec = env.audit_record("pii_redact", &rid).await?;
            assert_eq!(
                rec["entities"]["response"],
                json!({"CITY": 1}),
                "{case}: {rec}"
            );
        }
    }
    env.finish();
    Ok(())
}

/// 9. Dry run: nothing changes (the upstream gets the exact bytes), the record says what would
/// have happened.
#[tokio::test]
async fn dry_run_changes_nothing_and_records_what_it_would_do() -> anyhow::Result<()> {
    let env = start().await?;
    let text = format!("My address is {EMAIL}, card {CARD}.");
    for api in SHAPES {
        for stream in [false, true] {
            env.upstream.clear();
            let rid = format!("dry-{}-{stream}", name(api));
            let body = request(api, &text, stream);
            let resp = env
                .client()
                .post(&format!("/dry{}", path(api)), body.clone())
                .header("x-request-id", &rid)
                .header("x-demo-chunk-size", "3")
                .send()
                .await?;
            let case = format!("{} stream={stream}", name(api));
            assert_eq!(only_upstream_body(&env), body, "{case}: body was altered");
            assert_eq!(
                answer_text(api, &resp, stream),
                format!("You said: {text}"),
                "{case}"
            );
            let rec = env.audit_record("pii_redact", &rid).await?;
            assert_eq!(rec["decision"], "allow", "{case}: {rec}");
            assert_eq!(rec["would"], "redact", "{case}: {rec}");
            assert_eq!(rec["dry_run"], true, "{case}: {rec}");
            assert_eq!(
                rec["entities"],
                json!({"request": {"EMAIL": 1, "CREDIT_CARD": 1}, "response": {"EMAIL": 1, "CREDIT_CARD": 1}}),
                "{case}: {rec}"
            );
            assert!(rec["restored"].is_null(), "{case}: {rec}");
        }
    }
    let stats = env.stats().await?;
    for want in [
        "wasmcustom.guard.pii_redact.direction.request.entity_type.EMAIL.action.dry_run_pseudonymize.entities: 4",
        "wasmcustom.guard.pii_redact.direction.response.entity_type.CREDIT_CARD.action.dry_run_redact.entities: 4",
    ] {
        assert!(stats.contains(want), "missing {want}:\n{stats}");
    }
    env.finish();
    Ok(())
}

/// 10. `mask` keeps the last four digits of a card (both directions); `hash` gives the keyed
/// token of the canonical value: the same for the same address (any case), another for another.
#[tokio::test]
async fn mask_and_hash_actions() -> anyhow::Result<()> {
    let env = start().await?;
    for api in SHAPES {
        env.upstream.clear();
        let resp = env
            .client()
            .post(
                &format!("/mask{}", path(api)),
                request(api, "Use card 5555 5555 5555 4444 for it.", false),
            )
            .send()
            .await?;
        assert_eq!(
            upstream_user_text(api, only_upstream_body(&env).as_bytes()),
            "Use card **** **** **** 4444 for it."
        );
        assert_eq!(
            answer_text(api, &resp, false),
            "You said: Use card **** **** **** 4444 for it."
        );
        // A card the model wrote, streamed.
        let resp = env
            .client()
            .post(
                &format!("/mask{}", path(api)),
                request(api, "Which card?", true),
            )
            .header("x-demo-scenario", format!("text:The card is {CARD}."))
            .header("x-demo-chunk-size", "3")
            .send()
            .await?;
        assert_eq!(
            answer_text(api, &resp, true),
            "The card is **** **** **** 1111."
        );
    }

    let jane = hmac_token("EMAIL", EMAIL);
    let john = hmac_token("EMAIL", "john.roe@example.org");
    assert_ne!(jane, john);
    let mut tokens = Vec::new();
    for (api, addr) in [
        (ApiShape::OpenAiChat, EMAIL),
        (ApiShape::AnthropicMessages, "Jane.Doe@Example.COM"),
        (ApiShape::OpenAiChat, "john.roe@example.org"),
    ] {
        env.upstream.clear();
        let resp = env
            .client()
            .post(
                &format!("/hash{}", path(api)),
                request(api, &format!("Write to {addr} today."), false),
            )
            .send()
            .await?;
        assert_eq!(resp.status, 200, "{}", resp.text());
        let seen = upstream_user_text(api, only_upstream_body(&env).as_bytes());
        let token = seen
            .strip_prefix("Write to ")
            .and_then(|s| s.strip_suffix(" today."))
            .unwrap_or_else(|| panic!("{seen}"))
            .to_string();
        assert!(!resp.text().contains(addr), "{}", resp.text());
        tokens.push(token);
    }
    assert_eq!(tokens, vec![jane.clone(), jane, john]);
    env.finish();
    Ok(())
}

/// Regression: a word that merely contains a type name, followed by a number ("voicemail 1"),
/// is not a placeholder: the answer must not have the pseudonymised value pasted into it.
#[tokio::test]
async fn words_containing_a_type_name_are_not_restored() -> anyhow::Result<()> {
    let env = start().await?;
    let text = format!("Write to {EMAIL}. Then check voicemail 1 and press 2.");
    let mut wrong = Vec::new();
    for api in SHAPES {
        for stream in [false, true] {
            let resp = env
                .client()
                .post(path(api), request(api, &text, stream))
                .send()
                .await?;
            let got = answer_text(api, &resp, stream);
            if got != format!("You said: {text}") {
                wrong.push(format!("{} stream={stream}: {got:?}", name(api)));
            }
        }
    }
    assert!(wrong.is_empty(), "answers changed:\n{}", wrong.join("\n"));
    env.finish();
    Ok(())
}

/// Regression: the filter's own redaction token echoed back by the model after a key word
/// (`password: [PASSWORD]`) is taken for a new password value, trimmed of its `]` and redacted
/// again: the client sees `[PASSWORD]]` and the record counts an answer entity that is not there.
#[tokio::test]
async fn redaction_tokens_in_answers_are_left_alone() -> anyhow::Result<()> {
    let env = start().await?;
    let mut wrong = Vec::new();
    for api in SHAPES {
        for stream in [false, true] {
            let rid = format!("token-echo-{}-{stream}", name(api));
            let resp = env
                .client()
                .post(
                    path(api),
                    request(api, &format!("my password: {GH_SECRET}"), stream),
                )
                .header("x-request-id", &rid)
                .send()
                .await?;
            let case = format!("{} stream={stream}", name(api));
            let got = answer_text(api, &resp, stream);
            if got != "You said: my password: [PASSWORD]" {
                wrong.push(format!("{case}: answer {got:?}"));
            }
            let rec = env.audit_record("pii_redact", &rid).await?;
            if rec["entities"] != json!({"request": {"PASSWORD": 1}}) {
                wrong.push(format!("{case}: entities {}", rec["entities"]));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    env.finish();
    Ok(())
}

/// Regression: a placeholder-shaped text the user typed after a value (`..., not <EMAIL_1>`)
/// must keep its number out of the vault; when the value is numbered first, both get
/// `<EMAIL_1>`: the model cannot tell them apart and the answer turns the user's literal text
/// into their address.
#[tokio::test]
async fn literal_placeholders_typed_after_a_value_keep_their_number() -> anyhow::Result<()> {
    let env = start().await?;
    let text = format!("Mail {EMAIL}, not <EMAIL_1>.");
    let mut wrong = Vec::new();
    for api in SHAPES {
        for stream in [false, true] {
            env.upstream.clear();
            let resp = env
                .client()
                .post(path(api), request(api, &text, stream))
                .send()
                .await?;
            let case = format!("{} stream={stream}", name(api));
            let up = upstream_user_text(api, only_upstream_body(&env).as_bytes());
            if up != "Mail <EMAIL_2>, not <EMAIL_1>." {
                wrong.push(format!("{case}: upstream saw {up:?}"));
            }
            let got = answer_text(api, &resp, stream);
            if got != format!("You said: {text}") {
                wrong.push(format!("{case}: client saw {got:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    env.finish();
    Ok(())
}
