//! llm-telemetry through a real Envoy: every API shape streamed and not, usage and latency
//! metrics, the audit record, per-route policies, identity, and the failure policy for bad
//! input (malformed, oversize, compressed, invalid UTF-8, non-UTF-8 headers), bodies in many
//! chunks and over HTTP/2 with trailers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use e2e::{assemble_stream, hs256_jwks, hs256_jwt, raw_http1, Env, Spec, Version};
use guard_core::api::ApiShape;
use serde_json::{json, Value};

const TEMPLATE: &str = include_str!("../configs/telemetry.yaml");
const SECRET: &[u8] = b"guard-test-secret-0123456789abcdef";

const PLUGIN_CONFIG: &str = r#"{
  "name": "e2e",
  "identity": {"header": "x-guard-identity", "jwt": {"payload_key": "jwt_payload"}},
  "route_policies": {"closed": "closed", "open": "open"},
  "route_metadata_namespace": "llm_guard",
  "policies": {
    "default": {"failure_policy": "fail_open", "tenant": {"claim": "org.id", "header": "x-tenant", "allowed": ["acme", "globex"], "max_labels": 8}},
    "closed": {"failure_policy": "fail_closed", "max_request_body_bytes": 2048, "max_response_body_bytes": 4096},
    "open": {"failure_policy": "fail_open", "max_request_body_bytes": 2048, "max_response_body_bytes": 4096}
  }
}"#;

fn jwt(claims: &Value) -> String {
    hs256_jwt(SECRET, "k1", claims)
}

async fn start() -> anyhow::Result<Env> {
    start_with(demo_upstream::Options::default()).await
}

async fn start_with(opts: demo_upstream::Options) -> anyhow::Result<Env> {
    let jwks = hs256_jwks(SECRET, "k1");
    let config = PLUGIN_CONFIG.replace('\n', " ");
    Env::start(
        Spec::template(TEMPLATE)
            .var("JWKS", &jwks)
            .var("PLUGIN_CONFIG", &config)
            .upstream(opts),
    )
    .await
}

fn chat(content: &str, stream: bool) -> String {
    json!({"model":"gpt-4o","stream":stream,"messages":[{"role":"user","content":content}]})
        .to_string()
}

// ------------------------------------------------------------------ every API shape

struct ShapeCase {
    name: &'static str,
    path: &'static str,
    api: ApiShape,
    body: Value,
    want_text: &'static str,
}

fn shape_cases() -> Vec<ShapeCase> {
    vec![
        ShapeCase {
            name: "openai chat",
            path: "/v1/chat/completions",
            api: ApiShape::OpenAiChat,
            body: json!({"model":"gpt-4o","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"ping one two"}]}]}),
            want_text: "You said: ping one two",
        },
        ShapeCase {
            name: "openai responses",
            path: "/v1/responses",
            api: ApiShape::OpenAiResponses,
            body: json!({"model":"gpt-4.1","instructions":"be brief","input":[{"role":"user","content":[{"type":"input_text","text":"ping one two"}]}]}),
            want_text: "You said: ping one two",
        },
        ShapeCase {
            name: "anthropic messages",
            path: "/v1/messages",
            api: ApiShape::AnthropicMessages,
            body: json!({"model":"claude-sonnet-4-5","max_tokens":100,"system":"be brief","messages":[{"role":"user","content":"ping one two"}]}),
            want_text: "You said: ping one two",
        },
    ]
}

#[tokio::test]
async fn every_api_shape_streamed_and_not() -> anyhow::Result<()> {
    // Small upstream chunks: events, tokens and UTF-8 split across body chunks.
    let env = start_with(demo_upstream::Options {
        chunk_size: 7,
        ..Default::default()
    })
    .await?;
    for case in shape_cases() {
        for stream in [false, true] {
            let mut body = case.body.clone();
            body["stream"] = json!(stream);
            let rid = format!("shape-{}-{stream}", case.name.replace(' ', "-"));
            let resp = env
                .client()
                .post(case.path, body.to_string())
                .header("x-request-id", &rid)
                .send()
                .await?;
            assert_eq!(resp.status, 200, "{}: {}", case.name, resp.text());
            let text = if stream {
                let got = assemble_stream(case.api, &resp.body)?;
                got.choices
                    .first()
                    .map(|c| c.content.clone())
                    .unwrap_or_default()
            } else {
                let v = resp.json()?;
                match case.api {
                    ApiShape::OpenAiChat => v["choices"][0]["message"]["content"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    ApiShape::OpenAiResponses => v["output"][0]["content"][0]["text"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    ApiShape::AnthropicMessages => {
                        v["content"][0]["text"].as_str().unwrap_or("").to_string()
                    }
                }
            };
            assert_eq!(text, case.want_text, "{} stream={stream}", case.name);
            let rec = env.audit_record("llm_telemetry", &rid).await?;
            assert_eq!(rec["api"], case.api.as_str(), "{rec}");
            assert_eq!(rec["stream"], stream, "{rec}");
            assert!(
                rec["tokens_in"].as_u64().unwrap_or(0) > 0,
                "{}: no input tokens: {rec}",
                case.name
            );
            assert!(
                rec["tokens_out"].as_u64().unwrap_or(0) > 0,
                "{}: no output tokens: {rec}",
                case.name
            );
            if stream {
                assert!(rec["ttft_ms"].is_u64(), "{}: no ttft: {rec}", case.name);
            }
            assert_eq!(rec["policy"], "e2e/default");
        }
    }
    // Counters are readable at once, with labels lifted from the name.
    let prom = env.prometheus().await?;
    for (api, model) in [
        ("openai_chat", "gpt-4o"),
        ("openai_responses", "gpt-4_1"),
        ("anthropic_messages", "claude-sonnet-4-5"),
    ] {
        let want = format!(
            "guard_requests{{guard_filter=\"llm_telemetry\",api=\"{api}\",model=\"{model}\",tenant=\"none\"}} 2"
        );
        assert!(prom.contains(&want), "missing {want}:\n{prom}");
    }
    env.finish();
    Ok(())
}

#[tokio::test]
async fn usage_chunk_added_for_the_proxy_and_hidden_from_the_client() -> anyhow::Result<()> {
    let env = start_with(demo_upstream::Options {
        chunk_size: 5,
        ..Default::default()
    })
    .await?;
    // Without include_usage: added upstream, removed from the client's stream.
    let resp = env
        .client()
        .post("/v1/chat/completions", chat("count my tokens", true))
        .header("x-request-id", "u1")
        .send()
        .await?;
    assert_eq!(resp.status, 200);
    let text = resp.text();
    assert!(
        !text.contains("\"choices\":[]"),
        "extra usage chunk reached the client:\n{text}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let upstream_body: Value =
        serde_json::from_slice(&env.upstream.received().last().unwrap().body)?;
    assert_eq!(
        upstream_body["stream_options"],
        json!({"include_usage": true})
    );
    let rec = env.audit_record("llm_telemetry", "u1").await?;
    assert_eq!(rec["decision"], "modify");
    assert!(rec["tokens_out"].as_u64().unwrap_or(0) > 0, "{rec}");

    // A client that asked for usage gets it, and the body is not rewritten.
    let body = json!({"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"count my tokens"}]});
    let resp = env
        .client()
        .post("/v1/chat/completions", body.to_string())
        .header("x-request-id", "u2")
        .send()
        .await?;
    let text = resp.text();
    assert!(
        text.contains("\"choices\":[]") && text.contains("\"usage\":{"),
        "client lost its usage chunk:\n{text}"
    );
    let rec = env.audit_record("llm_telemetry", "u2").await?;
    assert_eq!(rec["decision"], "allow", "{rec}");
    assert!(rec["tokens_out"].as_u64().unwrap_or(0) > 0, "{rec}");
    env.finish();
    Ok(())
}

// ------------------------------------------------------------------ chunking and HTTP/2

#[tokio::test]
async fn bodies_in_many_chunks_and_over_http2_with_trailers_are_seen_whole() -> anyhow::Result<()> {
    let env = start().await?;
    let cases: Vec<(&str, Version, usize, bool)> = vec![
        ("http1 chunked 5 bytes", Version::Http1, 5, false),
        ("http1 chunked with trailers", Version::Http1, 3, true),
        ("http2 frames of 7 bytes", Version::Http2, 7, false),
        ("http2 with trailers", Version::Http2, 11, true),
    ];
    for (name, version, n, trailers) in cases {
        env.upstream.clear();
        let rid = format!("chunks-{}", name.replace(' ', "-"));
        let mut req = env
            .client()
            .post(
                "/v1/chat/completions",
                chat("a body split into many small pieces", true),
            )
            .header("x-request-id", &rid)
            .version(version)
            .chunked(n);
        if trailers {
            req = req.trailer("x-checksum", "abc");
        }
        let resp = req.send().await?;
        assert_eq!(resp.status, 200, "{name}: {}", resp.text());
        // The filter parsed the whole JSON: it added stream_options, and the upstream got
        // one valid body.
        let seen = env.upstream.received();
        let got: Value = serde_json::from_slice(&seen.last().expect("upstream request").body)
            .map_err(|e| anyhow::anyhow!("{name}: upstream body not json: {e}"))?;
        assert_eq!(
            got["stream_options"]["include_usage"], true,
            "{name}: {got}"
        );
        assert_eq!(
            got["messages"][0]["content"],
            "a body split into many small pieces"
        );
        let out = assemble_stream(ApiShape::OpenAiChat, &resp.body)?;
        assert_eq!(
            out.choices[0].content, "You said: a body split into many small pieces",
            "{name}"
        );
        let rec = env.audit_record("llm_telemetry", &rid).await?;
        assert_eq!(rec["decision"], "modify", "{name}: {rec}");
    }
    env.finish();
    Ok(())
}

// ------------------------------------------------------------------ failure policy

struct BadInput {
    name: &'static str,
    body: Vec<u8>,
    headers: Vec<(&'static str, Vec<u8>)>,
    /// Status and reason on the fail-closed route.
    closed: (u16, &'static str),
}

fn bad_inputs() -> Vec<BadInput> {
    let big = chat(&"x".repeat(2100), false).into_bytes();
    vec![
        BadInput { name: "malformed json", body: b"{\"model\":\"gpt-4o\",\"messages\":[".to_vec(), headers: vec![], closed: (400, "unparsable_body") },
        BadInput {
            name: "invalid utf-8",
            body: b"{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}".to_vec(),
            headers: vec![],
            closed: (400, "unparsable_body"),
        },
        BadInput { name: "wrong shape", body: br#"{"model":"gpt-4o","messages":"hi"}"#.to_vec(), headers: vec![], closed: (400, "unparsable_body") },
        BadInput { name: "oversize", body: big, headers: vec![], closed: (413, "body_too_large") },
        BadInput {
            name: "gzip body",
            body: vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3],
            headers: vec![("content-encoding", b"gzip".to_vec())],
            closed: (415, "compressed_body"),
        },
    ]
}

#[tokio::test]
async fn bad_request_bodies_get_the_configured_failure_policy() -> anyhow::Result<()> {
    let env = start().await?;
    for case in bad_inputs() {
        // fail_closed: a provider-shaped error; the upstream never sees the request.
        env.upstream.clear();
        let rid = format!("closed-{}", case.name.replace(' ', "-"));
        let mut req = env
            .client()
            .post("/closed/v1/chat/completions", case.body.clone())
            .header("x-request-id", &rid);
        for (k, v) in &case.headers {
            req = req.header(k, v);
        }
        let resp = req.send().await?;
        assert_eq!(resp.status, case.closed.0, "{}: {}", case.name, resp.text());
        let err = resp.json()?;
        assert_eq!(err["error"]["code"], case.closed.1, "{}: {err}", case.name);
        assert_eq!(err["error"]["request_id"], rid.as_str());
        assert!(
            err["error"]["message"].is_string() && err["error"]["type"].is_string(),
            "{err}"
        );
        assert_eq!(
            resp.header("x-guard-reason").as_deref(),
            Some(case.closed.1)
        );
        assert!(
            env.upstream.received().is_empty(),
            "{}: upstream saw a refused request",
            case.name
        );
        let rec = env.audit_record("llm_telemetry", &rid).await?;
        assert_eq!(rec["decision"], "block", "{}: {rec}", case.name);
        assert_eq!(rec["reasons"][0], case.closed.1);
        assert_eq!(rec["policy"], "e2e/closed");

        // The same on a route whose policy is chosen by route metadata.
        let mut req = env
            .client()
            .post("/meta/v1/chat/completions", case.body.clone());
        for (k, v) in &case.headers {
            req = req.header(k, v);
        }
        assert_eq!(
            req.send().await?.status,
            case.closed.0,
            "{} via route metadata",
            case.name
        );

        // fail_open: passes through unchanged, recorded as skipped with the reason.
        env.upstream.clear();
        let rid = format!("open-{}", case.name.replace(' ', "-"));
        let mut req = env
            .client()
            .post("/open/v1/chat/completions", case.body.clone())
            .header("x-request-id", &rid);
        for (k, v) in &case.headers {
            req = req.header(k, v);
        }
        let resp = req.send().await?;
        assert_ne!(
            resp.header("x-guard-reason").as_deref(),
            Some(case.closed.1),
            "{}",
            case.name
        );
        let seen = env.upstream.received();
        assert_eq!(
            seen.len(),
            1,
            "{}: upstream did not get the fail-open request",
            case.name
        );
        assert_eq!(
            seen[0].body, case.body,
            "{}: fail-open body was altered",
            case.name
        );
        let rec = env.audit_record("llm_telemetry", &rid).await?;
        assert_eq!(rec["decision"], "skipped", "{}: {rec}", case.name);
        assert_eq!(rec["reasons"][0], case.closed.1);
    }
    env.finish();
    Ok(())
}

#[tokio::test]
async fn body_limit_exactly_fits_and_one_over() -> anyhow::Result<()> {
    let env = start().await?;
    let base = chat("", false);
    let pad = 2048 - base.len();
    for (extra, want) in [(0usize, 200u16), (1, 413)] {
        let body = chat(&"y".repeat(pad + extra), false);
        let resp = env
            .client()
            .post("/closed/v1/chat/completions", body.clone())
            .send()
            .await?;
        assert_eq!(
            resp.status,
            want,
            "body of {} bytes: {}",
            body.len(),
            resp.text()
        );
    }
    env.finish();
    Ok(())
}

#[tokio::test]
async fn bad_answers_get_the_configured_failure_policy() -> anyhow::Result<()> {
    let env = start().await?;
    // A compressed answer cannot be checked.
    let resp = env
        .client()
        .post("/closed/v1/chat/completions", chat("[[gzip]]", false))
        .send()
        .await?;
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert_eq!(resp.json()?["error"]["code"], "compressed_body");
    let resp = env
        .client()
        .post("/open/v1/chat/completions", chat("[[gzip]]", false))
        .send()
        .await?;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-encoding").as_deref(), Some("gzip"));
    // An answer over the limit.
    let resp = env
        .client()
        .post("/closed/v1/chat/completions", chat("[[long:6000]]", false))
        .send()
        .await?;
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert_eq!(resp.json()?["error"]["code"], "body_too_large");
    let resp = env
        .client()
        .post("/open/v1/chat/completions", chat("[[long:6000]]", false))
        .send()
        .await?;
    assert_eq!(resp.status, 200);
    assert!(
        resp.json()?["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
            .len()
            >= 6000
    );
    // The filter asks for identity encoding: the client's accept-encoding is not forwarded.
    env.upstream.clear();
    env.client()
        .post("/v1/chat/completions", chat("hi", false))
        .header("accept-encoding", "gzip, br")
        .send()
        .await?;
    let seen = env.upstream.received();
    assert!(
        seen[0].headers.iter().all(|(k, _)| k != "accept-encoding"),
        "{:?}",
        seen[0].headers
    );
    env.finish();
    Ok(())
}

// ------------------------------------------------------------------ identity

#[tokio::test]
async fn identity_from_jwt_claims_and_trusted_header() -> anyhow::Result<()> {
    let env = start().await?;
    let token = jwt(
        &json!({"iss":"https://issuer.test","sub":"alice","groups":["finance","eng"],"exp": 4_102_444_800u64}),
    );
    let resp = env
        .client()
        .post("/v1/chat/completions", chat("who am i", false))
        .header("authorization", format!("Bearer {token}"))
        .header("x-request-id", "id-jwt")
        .send()
        .await?;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        env.audit_record("llm_telemetry", "id-jwt").await?["identity"],
        "alice"
    );

    // A bad signature is refused by Envoy's jwt_authn before our filter.
    let forged = format!("{}x", &token[..token.len() - 1]);
    let resp = env
        .client()
        .post("/v1/chat/completions", chat("hi", false))
        .header("authorization", format!("Bearer {forged}"))
        .send()
        .await?;
    assert_eq!(resp.status, 401);

    // The configured trusted header.
    env.client()
        .post("/v1/chat/completions", chat("hi", false))
        .header("x-guard-identity", "bob")
        .header("x-request-id", "id-hdr")
        .send()
        .await?;
    assert_eq!(
        env.audit_record("llm_telemetry", "id-hdr").await?["identity"],
        "bob"
    );
    env.finish();
    Ok(())
}

/// The tenant label: from a verified claim, else the trusted header; bounded by the allow-list
/// (`other`), `none` without one.
#[tokio::test]
async fn tenant_label_from_claim_or_header_bounded() -> anyhow::Result<()> {
    let env = start().await?;
    let token = jwt(
        &json!({"iss":"https://issuer.test","sub":"carol","org":{"id":"acme"},"exp": 4_102_444_800u64}),
    );
    let sends: [(&str, Option<String>, Option<&str>); 4] = [
        ("t-claim", Some(format!("Bearer {token}")), None),
        ("t-header", None, Some("globex")),
        ("t-unlisted", None, Some("evil-co")),
        ("t-none", None, None),
    ];
    for (id, auth, tenant) in &sends {
        let mut req = env
            .client()
            .post("/v1/chat/completions", chat("hello tenant", false))
            .header("x-request-id", *id);
        if let Some(a) = auth {
            req = req.header("authorization", a.as_str());
        }
        if let Some(t) = tenant {
            req = req.header("x-tenant", *t);
        }
        let resp = req.send().await?;
        assert_eq!(resp.status, 200, "{id}: {}", resp.text());
    }
    assert_eq!(
        env.audit_record("llm_telemetry", "t-claim").await?["tenant"],
        "acme"
    );
    assert_eq!(
        env.audit_record("llm_telemetry", "t-header").await?["tenant"],
        "globex"
    );
    let prom = env
        .wait_prometheus(|t| {
            ["acme", "globex", "other", "none"]
                .iter()
                .all(|l| t.contains(&format!("tenant=\"{l}\"")))
        })
        .await?;
    for l in ["acme", "globex", "other", "none"] {
        let line = prom
            .lines()
            .find(|x| x.starts_with("guard_requests{") && x.contains(&format!("tenant=\"{l}\"")))
            .unwrap_or_else(|| panic!("no guard_requests for tenant {l}:\n{prom}"));
        assert!(line.ends_with(" 1"), "{line}");
    }
    assert!(
        !prom.contains("evil-co"),
        "an unlisted tenant got its own label"
    );
    env.finish();
    Ok(())
}

#[tokio::test]
async fn non_utf8_header_values_do_not_break_the_filter() -> anyhow::Result<()> {
    let env = start().await?;
    let body = chat("hello", false);
    let mut req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-request-id: raw-1\r\nconnection: close\r\nx-guard-identity: ",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(b"\xff\xfe\xc3(");
    req.extend_from_slice(b"\r\nx-other: \xe9t\xe9\r\n\r\n");
    req.extend_from_slice(body.as_bytes());
    let out = raw_http1(env.listen, &req).await?;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("You said: hello"), "{text}");
    let rec = env.audit_record("llm_telemetry", "raw-1").await?;
    assert!(
        rec.get("identity").is_none(),
        "a non-utf-8 identity must not name anyone: {rec}"
    );
    env.finish();
    Ok(())
}

#[tokio::test]
async fn non_llm_traffic_passes_untouched() -> anyhow::Result<()> {
    let env = start().await?;
    let resp = env
        .client()
        .get("/healthz")
        .header("x-request-id", "plain-get")
        .send()
        .await?;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "ok");
    let line = env
        .access_log(1)
        .await?
        .into_iter()
        .find(|l| l["request_id"] == "plain-get")
        .unwrap();
    assert!(
        line["llm_telemetry"].is_null(),
        "non-LLM request got a record: {line}"
    );
    env.finish();
    Ok(())
}

#[tokio::test]
async fn provider_errors_and_envoy_local_replies_are_recorded_not_judged() -> anyhow::Result<()> {
    let env = start().await?;
    // The upstream gone: Envoy's own 503 (text/plain) is not an API answer to parse.
    env.upstream.stop();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let resp = env
        .client()
        .post("/closed/v1/chat/completions", chat("hi", false))
        .header("x-request-id", "e503")
        .send()
        .await?;
    assert_eq!(resp.status, 503, "{}", resp.text());
    let rec = env.audit_record("llm_telemetry", "e503").await?;
    assert_eq!(rec["decision"], "allow", "{rec}");
    assert_eq!(rec["status"], 503);
    env.finish();

    // A provider error (JSON, 429) passes through unchanged on a fail-closed route.
    let env = start().await?;
    let resp = env
        .client()
        .post("/closed/v1/chat/completions", chat("[[status:429]]", false))
        .header("x-request-id", "e429")
        .send()
        .await?;
    assert_eq!(resp.status, 429);
    assert!(resp.json()?["error"].is_object());
    let rec = env.audit_record("llm_telemetry", "e429").await?;
    assert_eq!(rec["decision"], "allow", "{rec}");
    assert_eq!(rec["status"], 429);
    env.finish();
    Ok(())
}
