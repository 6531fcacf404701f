//! The JSON API (docs/approval-api.md): create, get, wait, decision, consume.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{HeaderMap, Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{random_hex, Identity};
use crate::http::{self, BodyError, Resp};
use crate::server::{internal, now_ms, State};
use crate::store::{ConsumeError, DecideError, Decision, NewRecord, Record};

/// Longest accepted `timeout_ms` of a wait.
pub const MAX_WAIT_MS: u64 = 120_000;
/// `timeout_ms` of a wait when not given.
pub const DEFAULT_WAIT_MS: u64 = 30_000;
/// A waiting request re-reads the store at least this often (expiry, missed wake-ups).
const RECHECK: Duration = Duration::from_millis(1000);
/// Longest accepted decision reason, in bytes.
pub const MAX_REASON: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    tool: String,
    arguments: Value,
    digest: String,
    #[serde(default)]
    caller: String,
    #[serde(default)]
    conversation: String,
    /// Masked here whatever the client did; ignored when `excerpt_raw` is given.
    #[serde(default)]
    excerpt: String,
    /// The real text; the service derives the masked excerpt from it.
    #[serde(default)]
    excerpt_raw: Option<String>,
    #[serde(default)]
    rule: String,
    #[serde(default = "default_mode")]
    mode: String,
    expires_in_s: u64,
    #[serde(default)]
    request_id: String,
}

fn default_mode() -> String {
    "hold".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    decision: String,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsumeBody {
    digest: String,
}

fn unauthorized(what: &str) -> Resp {
    http::error(StatusCode::UNAUTHORIZED, "unauthorized", what)
}

fn bad_request(message: &str) -> Resp {
    http::error(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn not_found() -> Resp {
    http::error(StatusCode::NOT_FOUND, "not_found", "no such approval")
}

/// Ids are ours: lower-case hex, bounded. Anything else cannot exist.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn valid_digest(d: &str) -> bool {
    d.len() == 64 && d.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub fn body_error(e: BodyError) -> Resp {
    match e {
        BodyError::TooLarge => http::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "request body exceeds 262144 bytes",
        ),
        BodyError::Read => bad_request("could not read the request body"),
    }
}

async fn json_body<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Resp> {
    let body = http::read_body(req).await.map_err(body_error)?;
    serde_json::from_slice(&body).map_err(|e| bad_request(&format!("invalid JSON body: {e}")))
}

/// `POST /v1/approvals`.
pub async fn create(state: &State, req: Request<Incoming>) -> Resp {
    if !state.auth.is_client(req.headers()) {
        return unauthorized("missing or wrong x-approval-client-token");
    }
    let body: CreateBody = match json_body(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if body.tool.is_empty() {
        return bad_request("tool: must not be empty");
    }
    if !valid_digest(&body.digest) {
        return bad_request(&format!(
            "digest: {:?} is not 64 lower-case hex digits",
            body.digest
        ));
    }
    if !(1..=86_400).contains(&body.expires_in_s) {
        return bad_request(&format!(
            "expires_in_s: {} is not within 1..=86400",
            body.expires_in_s
        ));
    }
    if body.mode != "hold" && body.mode != "defer" {
        return bad_request(&format!(
            "mode: {:?} is not \"hold\" or \"defer\"",
            body.mode
        ));
    }
    let id = match random_hex(16) {
        Ok(id) => id,
        Err(_) => return internal(),
    };
    // Never trust a client to have masked: the stored masked excerpt is always ours.
    let (excerpt, excerpt_raw) = match &body.excerpt_raw {
        Some(raw) => {
            let e = state.masker.excerpt(raw);
            (e.masked, Some(e.raw))
        }
        None => (state.masker.excerpt(&body.excerpt).masked, None),
    };
    let now = now_ms();
    let expires_in_ms = i64::try_from(body.expires_in_s.saturating_mul(1000)).unwrap_or(i64::MAX);
    let new = NewRecord {
        id,
        tool: body.tool,
        arguments: body.arguments.to_string(),
        digest: body.digest,
        caller: body.caller,
        conversation: body.conversation,
        excerpt,
        excerpt_raw,
        rule: body.rule,
        mode: body.mode,
        request_id: body.request_id,
        created_at: now,
        expires_at: now.saturating_add(expires_in_ms),
    };
    match state.db(move |s| s.create(&new)).await {
        Ok(Ok(r)) => http::json(
            StatusCode::CREATED,
            &json!({"id": r.id, "status": r.status, "expires_at": r.expires_at}),
        ),
        Ok(Err(e)) => {
            eprintln!("approval-service: create: {e:#}");
            internal()
        }
        Err(resp) => resp,
    }
}

/// Reads a record (expiry applied).
pub async fn load(state: &State, id: &str) -> Result<Record, Resp> {
    if !valid_id(id) {
        return Err(not_found());
    }
    let id = id.to_owned();
    let now = now_ms();
    match state.db(move |s| s.get(&id, now)).await? {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(not_found()),
        Err(e) => {
            eprintln!("approval-service: get: {e:#}");
            Err(internal())
        }
    }
}

/// `GET /v1/approvals/{id}` (filter or approver).
pub async fn get(state: &State, headers: &HeaderMap, id: &str) -> Resp {
    if !state.auth.is_client(headers) && state.auth.approver_from_headers(headers).is_none() {
        return unauthorized("needs the client token or an approver's credentials");
    }
    match load(state, id).await {
        Ok(r) => http::json(StatusCode::OK, &r.to_json()),
        Err(resp) => resp,
    }
}

/// `GET /v1/approvals/{id}/wait?timeout_ms=N` (filter): long poll.
pub async fn wait(state: &Arc<State>, req: &Request<Incoming>, id: &str) -> Resp {
    if !state.auth.is_client(req.headers()) {
        return unauthorized("missing or wrong x-approval-client-token");
    }
    let form = http::parse_form(req.uri().query().unwrap_or("").as_bytes());
    let timeout_ms = match http::form_get(&form, "timeout_ms") {
        None => DEFAULT_WAIT_MS,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n <= MAX_WAIT_MS => n,
            _ => {
                return bad_request(&format!(
                    "timeout_ms: {v:?} is not a number within 0..=120000"
                ))
            }
        },
    };
    if !valid_id(id) {
        return not_found();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    let notify = state.waiter(id);
    let result = wait_loop(state, id, notify.as_deref(), deadline).await;
    if let Some(n) = notify {
        state.release_waiter(id, n);
    }
    match result {
        Ok(r) => http::json(StatusCode::OK, &r.to_json()),
        Err(resp) => resp,
    }
}

async fn wait_loop(
    state: &State,
    id: &str,
    notify: Option<&tokio::sync::Notify>,
    deadline: tokio::time::Instant,
) -> Result<Record, Resp> {
    loop {
        // Register for wake-ups before reading, so a decision in between is not missed.
        let notified = notify.map(|n| n.notified());
        tokio::pin!(notified);
        if let Some(n) = notified.as_mut().as_pin_mut() {
            n.enable();
        }
        let record = load(state, id).await?;
        let now = tokio::time::Instant::now();
        if !record.is_pending() || now >= deadline {
            return Ok(record);
        }
        let until_expiry = u64::try_from(record.expires_at.saturating_sub(now_ms()))
            .map_or(Duration::ZERO, Duration::from_millis);
        let sleep = RECHECK.min(until_expiry).min(deadline - now);
        match notified.as_mut().as_pin_mut() {
            Some(n) => {
                tokio::select! {
                    _ = n => {}
                    _ = tokio::time::sleep(sleep) => {}
                }
            }
            None => tokio::time::sleep(sleep.min(Duration::from_millis(250))).await,
        }
    }
}

/// Parses and validates a decision; shared with the console.
pub fn parse_decision(decision: &str, reason: &str) -> Result<Decision, String> {
    if reason.len() > MAX_REASON {
        return Err(format!("reason: longer than {MAX_REASON} bytes"));
    }
    match decision {
        "approve" => Ok(Decision::Approve),
        "deny" => Ok(Decision::Deny),
        other => Err(format!(
            "decision: {other:?} is not \"approve\" or \"deny\""
        )),
    }
}

/// Records a decision and wakes waiters; shared with the console.
pub async fn apply_decision(
    state: &State,
    id: &str,
    decision: Decision,
    who: &Identity,
    reason: String,
) -> Result<Result<Record, DecideError>, Resp> {
    if !valid_id(id) {
        return Ok(Err(DecideError::NotFound));
    }
    let owned = id.to_owned();
    let name = who.approver.name.clone();
    let now = now_ms();
    let result = state
        .db(move |s| s.decide(&owned, decision, &name, &reason, now))
        .await?;
    // Decided, or found expired: either way waiters have an answer.
    state.notify(id);
    Ok(result)
}

pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// `POST /v1/approvals/{id}/decision` (approver).
pub async fn decide(state: &State, req: Request<Incoming>, id: &str) -> Resp {
    let Some(who) = state.auth.approver_from_headers(req.headers()) else {
        return unauthorized("needs an approver's bearer token");
    };
    // Browsers cannot send this content type cross-site without a CORS preflight: with
    // identity headers from a proxy in front, this is what stops a forged cross-site post.
    if !is_json(req.headers()) {
        return http::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a decision must be sent as content-type: application/json",
        );
    }
    let body: DecisionBody = match json_body(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let decision = match parse_decision(&body.decision, &body.reason) {
        Ok(d) => d,
        Err(m) => return bad_request(&m),
    };
    match apply_decision(state, id, decision, &who, body.reason).await {
        Ok(Ok(r)) => http::json(StatusCode::OK, &r.to_json()),
        Ok(Err(e)) => decide_error(e),
        Err(resp) => resp,
    }
}

pub fn decide_error(e: DecideError) -> Resp {
    match e {
        DecideError::NotFound => not_found(),
        DecideError::AlreadyDecided(r) => http::error(
            StatusCode::CONFLICT,
            "already_decided",
            &format!("the request is already {}", r.status),
        ),
        DecideError::Expired => http::error(StatusCode::GONE, "expired", "the request has expired"),
        DecideError::Db(e) => {
            eprintln!("approval-service: decide: {e:#}");
            internal()
        }
    }
}

/// `POST /v1/approvals/{id}/consume` (filter, defer mode).
pub async fn consume(state: &State, req: Request<Incoming>, id: &str) -> Resp {
    if !state.auth.is_client(req.headers()) {
        return unauthorized("missing or wrong x-approval-client-token");
    }
    let body: ConsumeBody = match json_body(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if !valid_id(id) {
        return not_found();
    }
    let owned = id.to_owned();
    let now = now_ms();
    let result = match state
        .db(move |s| s.consume(&owned, &body.digest, now))
        .await
    {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match result {
        Ok(r) => {
            state.notify(id);
            http::json(StatusCode::OK, &r.to_json())
        }
        Err(ConsumeError::NotFound) => not_found(),
        Err(ConsumeError::Db(e)) => {
            eprintln!("approval-service: consume: {e:#}");
            internal()
        }
        Err(e) => http::error(
            StatusCode::CONFLICT,
            e.code(),
            match e {
                ConsumeError::DigestMismatch => "the digest does not match the approved call",
                ConsumeError::AlreadyUsed => "the approval was already used",
                ConsumeError::Expired => "the request has expired",
                _ => "the request is not approved",
            },
        ),
    }
}
