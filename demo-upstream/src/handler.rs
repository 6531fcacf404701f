//! Per-request handling: read and record the request, route it, pick the scenario and build
//! the response (JSON with content-length, or a paced SSE stream).
//!
//! Routes: `GET /healthz` → `ok`; `GET /__recorded` → the record as JSON; `POST` to any path
//! ending in `/v1/chat/completions`, `/v1/responses` or `/v1/messages` → the scripted answer;
//! `POST` to any path ending in `/v1/moderations` or `/classify` → the classifier answer (see
//! [`crate::guard`]); `POST` to any path ending in `/mcp` → a minimal MCP server (JSON-RPC:
//! `initialize`, `tools/list`, `tools/call` echoing the call); anything else → 404 (405 for a known path with another method).
//!
//! Per-request headers: `x-demo-scenario` / `x-demo-json` (see [`crate::scenario`]),
//! `x-demo-chunk-size` (bytes, 0 = one chunk) and `x-demo-chunk-delay-ms` (at most 60000);
//! for the classifier endpoints `x-demo-delay-ms` and `x-demo-status`.

use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE,
};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::answer::{self, Reply};
use crate::api::{openai_error, Api};
use crate::body::{self, ReadError, MAX_BODY_BYTES};
use crate::guard::{self, Endpoint};
use crate::scenario::{self, Directives, Scenario};
use crate::server::{Recorded, State};

/// The response body type (a cut body fails, which aborts the connection).
pub type RespBody = BoxBody<Bytes, std::io::Error>;

/// A scripted failure before the response headers, carried as a response extension: the
/// server then closes the connection without answering (after the hang, for `Hang`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    Reset,
    Hang(Duration),
}

/// A response that is not sent: the connection fails instead.
fn failed(failure: Failure) -> Response<RespBody> {
    let mut r = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    );
    r.extensions_mut().insert(failure);
    r
}

/// Longest accepted `x-demo-chunk-delay-ms`.
const MAX_DELAY_MS: u64 = 60_000;

const JSON: &str = "application/json";

/// Handles one request.
pub(crate) async fn handle(state: &State, request: Request<Incoming>) -> Response<RespBody> {
    let (parts, incoming) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let bare_path = parts.uri.path();
    let collected = body::read(incoming, MAX_BODY_BYTES).await;
    let internal = matches!(bare_path, "/healthz" | "/__recorded");
    if !internal {
        state.record(Recorded {
            method: parts.method.as_str().to_owned(),
            path: path.clone(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect(),
            body: collected.data.clone(),
            trailers: collected.trailers.clone(),
        });
    }
    let api = Api::from_path(bare_path);
    match collected.error {
        None => {}
        Some(ReadError::TooLarge) => {
            let message = format!("request body exceeds {MAX_BODY_BYTES} bytes");
            return error(api, 413, &message);
        }
        Some(ReadError::Transport(e)) => {
            return error(api, 400, &format!("reading the request body failed: {e}"));
        }
    }
    if let Some(endpoint) = Endpoint::from_path(bare_path) {
        if parts.method != Method::POST {
            let message = format!("method {} not allowed", parts.method);
            return error(None, 405, &message);
        }
        return classifier(state, endpoint, &parts.headers, &collected.data).await;
    }
    match (&parts.method, bare_path, api) {
        (&Method::GET | &Method::HEAD, "/healthz", _) => full(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"ok"),
        ),
        (&Method::GET, "/__recorded", _) => {
            let body = recorded_json(&state.received()).to_string();
            full(StatusCode::OK, JSON, Bytes::from(body))
        }
        (&Method::POST, p, None) if p.ends_with("/mcp") => mcp(&collected.data),
        (&Method::POST, _, Some(api)) => answer(state, api, &parts.headers, &collected.data),
        (_, _, Some(api)) => error(
            Some(api),
            405,
            &format!("method {} not allowed", parts.method),
        ),
        _ => error(None, 404, &format!("no route for {bare_path}")),
    }
}

/// Answers an API request.
fn answer(state: &State, api: Api, headers: &HeaderMap, body: &[u8]) -> Response<RespBody> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                Some(api),
                400,
                &format!("request body is not valid json: {e}"),
            )
        }
    };
    let prompt = match api.parse(&value) {
        Ok(p) => p,
        Err(message) => return error(Some(api), 400, &message),
    };
    let directives = match directives(headers, &prompt) {
        Ok(d) => d,
        Err(message) => return error(Some(api), 400, &message),
    };
    let (chunk_size, chunk_delay) = match chunk_plan(headers, state) {
        Ok(plan) => plan,
        Err(message) => return error(Some(api), 400, &message),
    };
    if let Scenario::Status(code) = directives.scenario {
        return error(Some(api), code, &format!("scripted error: status {code}"));
    }
    match directives.scenario {
        Scenario::Reset => return failed(Failure::Reset),
        Scenario::Hang(ms) => return failed(Failure::Hang(Duration::from_millis(ms))),
        _ => {}
    }
    let content = answer::build(&prompt, &directives.scenario);
    let reply = Reply::new(state.next_seq(), unix_now(), &prompt, content);
    let (bytes, content_type) = if prompt.stream {
        (api.render_sse(&reply), "text/event-stream")
    } else {
        (api.render_json(&reply).to_string().into_bytes(), JSON)
    };
    let (bytes, encoding) = if directives.gzip {
        match gzip(&bytes) {
            Ok(z) => (z, Some("gzip")),
            Err(e) => return error(Some(api), 500, &format!("gzip failed: {e}")),
        }
    } else if directives.brotli {
        match brotli(&bytes) {
            Ok(z) => (z, Some("br")),
            Err(e) => return error(Some(api), 500, &format!("brotli failed: {e}")),
        }
    } else {
        (bytes, None)
    };
    let cut = match directives.scenario {
        Scenario::Cut(n) => Some(n.unwrap_or_else(|| default_cut(&bytes, prompt.stream))),
        _ => None,
    };
    let mut response = if prompt.stream || cut.is_some() {
        let len = bytes.len();
        let body = body::paced(Bytes::from(bytes), chunk_size, chunk_delay, cut);
        let mut r = Response::new(body.boxed());
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if prompt.stream {
            r.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        } else {
            // A cut JSON answer announces its whole length and stops short.
            r.headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(len));
        }
        r
    } else {
        full(StatusCode::OK, content_type, Bytes::from(bytes))
    };
    if let Some(encoding) = encoding {
        response
            .headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    response
}

/// Answers a classifier request: header checks, the scripted delay, the scripted status, then
/// the classification.
async fn classifier(
    state: &State,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: &[u8],
) -> Response<RespBody> {
    let delay = match header_str(headers, "x-demo-delay-ms") {
        Ok(None) => 0,
        Ok(Some(v)) => match guard::parse_delay_ms(v) {
            Ok(ms) => ms,
            Err(message) => return error(None, 400, &message),
        },
        Err(message) => return error(None, 400, &message),
    };
    let status = match header_str(headers, "x-demo-status") {
        Ok(None) => None,
        Ok(Some(v)) => match guard::parse_status(v) {
            Ok(code) => Some(code),
            Err(message) => return error(None, 400, &message),
        },
        Err(message) => return error(None, 400, &message),
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if let Some(code) = status {
        return error(None, code, &format!("scripted error: status {code}"));
    }
    match endpoint.answer(state.next_seq(), body) {
        Ok(value) => full(StatusCode::OK, JSON, Bytes::from(value.to_string())),
        Err(message) => error(None, 400, &message),
    }
}

/// A minimal MCP server (JSON-RPC 2.0 over HTTP POST): `initialize`, `tools/list` (one tool,
/// `pay`) and `tools/call`, whose result echoes the tool and its arguments, so a test sees
/// exactly which call reached the server.
fn mcp(body: &[u8]) -> Response<RespBody> {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        let v = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "parse error"}});
        return full(StatusCode::OK, JSON, Bytes::from(v.to_string()));
    };
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let result = match req.get("method").and_then(Value::as_str) {
        Some("initialize") => serde_json::json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "demo-upstream", "version": "0.1.0"}
        }),
        Some("tools/list") => serde_json::json!({"tools": [{
            "name": "pay",
            "description": "Send a payment",
            "inputSchema": {"type": "object", "properties": {"amount": {"type": "number"}, "currency": {"type": "string"}, "to": {"type": "string"}}}
        }]}),
        Some("tools/call") => {
            let params = req.get("params").cloned().unwrap_or(Value::Null);
            let text = serde_json::json!({"executed": params.get("name"), "arguments": params.get("arguments")}).to_string();
            serde_json::json!({"content": [{"type": "text", "text": text}], "isError": false})
        }
        _ => {
            let v = serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "method not found"}});
            return full(StatusCode::OK, JSON, Bytes::from(v.to_string()));
        }
    };
    let v = serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result});
    full(StatusCode::OK, JSON, Bytes::from(v.to_string()))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, String> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| format!("header {name} is not visible ascii"))
        })
        .transpose()
}

/// The header scenario if any; else, unless the conversation ends with a tool result,
/// directives in the last user message.
fn directives(headers: &HeaderMap, prompt: &answer::Prompt) -> Result<Directives, String> {
    if let Some(value) = header_str(headers, "x-demo-scenario")? {
        return scenario::from_header(value, header_str(headers, "x-demo-json")?);
    }
    if prompt.tool_result.is_some() {
        return Ok(Directives::default());
    }
    scenario::from_text(&prompt.user_text)
}

/// Chunk size and delay: server options overridden by request headers.
fn chunk_plan(headers: &HeaderMap, state: &State) -> Result<(usize, Duration), String> {
    let size = match header_str(headers, "x-demo-chunk-size")? {
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map_err(|_| format!("header x-demo-chunk-size: {v:?} is not a byte count"))?,
        None => state.options.chunk_size,
    };
    let delay = match header_str(headers, "x-demo-chunk-delay-ms")? {
        Some(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|ms| *ms <= MAX_DELAY_MS)
            .map(Duration::from_millis)
            .ok_or_else(|| {
                format!("header x-demo-chunk-delay-ms: {v:?} is not in 0..={MAX_DELAY_MS}")
            })?,
        None => state.options.chunk_delay,
    };
    Ok((size, delay))
}

/// Where `[[cut]]` stops: after the first SSE event, or half-way through a JSON body.
fn default_cut(bytes: &[u8], stream: bool) -> usize {
    let first_event = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| p.saturating_add(2));
    match first_event {
        Some(end) if stream => end,
        _ => bytes.len() / 2,
    }
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data)?;
    encoder.finish()
}

fn brotli(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let params = brotli::enc::BrotliEncoderParams::default();
    brotli::BrotliCompress(&mut std::io::Cursor::new(data), &mut out, &params)?;
    Ok(out)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A complete response with content-type and content-length.
fn full(status: StatusCode, content_type: &'static str, data: Bytes) -> Response<RespBody> {
    let len = data.len();
    let mut response = Response::new(Full::new(data).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(len));
    response
}

/// An error response in the API's shape (OpenAI's shape when the API is unknown).
fn error(api: Option<Api>, status: u16, message: &str) -> Response<RespBody> {
    let body = match api {
        Some(api) => api.error_body(status, message),
        None => openai_error(status, message),
    };
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    full(code, JSON, Bytes::from(body.to_string()))
}

/// The record as JSON (bodies as lossy UTF-8 plus their length).
fn recorded_json(recorded: &[Recorded]) -> Value {
    let pairs = |list: &[(String, Vec<u8>)]| -> Value {
        list.iter()
            .map(|(n, v)| json!([n, String::from_utf8_lossy(v)]))
            .collect()
    };
    recorded
        .iter()
        .map(|r| {
            json!({
                "method": r.method,
                "path": r.path,
                "headers": pairs(&r.headers),
                "body": String::from_utf8_lossy(&r.body),
                "body_len": r.body.len(),
                "trailers": pairs(&r.trailers),
            })
        })
        .collect()
}
