//! The review queue (docs/approval-api.md, docs/fallback.md): answers a guard filter could not
//! give — the model provider failed, or a guard refused the answer — escalated by the filter's
//! `fallback.escalate`, for a person to follow up. The client got a deterministic "a person will
//! follow up" answer naming the review id.
//!
//! API: `POST /v1/reviews` (filter: client token), `GET /v1/reviews/{id}` (filter or approver),
//! `GET /v1/reviews?status=open|resolved|all` (approver), `POST /v1/reviews/{id}/resolve`
//! (approver, JSON). Console: `/reviews` (open and recent), `/reviews/{id}` (detail with the
//! excerpt, masked unless the approver's role sees PII, and a resolve form).

use std::fmt::Write as _;

use hyper::body::Incoming;
use hyper::{HeaderMap, Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::api::{body_error, valid_id};
use crate::auth::{random_hex, Identity};
use crate::console;
use crate::http::{self, escape, form_get, Resp};
use crate::server::{internal, now_ms, State};
use crate::store::{ResolveError, Review};

/// Longest accepted short field (reason, filter, policy, route, api, model, caller, request id).
const MAX_FIELD: usize = 256;
/// Longest accepted resolution note, in bytes.
const MAX_NOTE: usize = 4096;
/// Reviews listed per page / API call.
const LIST: u32 = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    /// `upstream_failure` or `flagged_answer`.
    trigger: String,
    reason: String,
    #[serde(default)]
    request_id: String,
    #[serde(default)]
    caller: String,
    #[serde(default)]
    filter: String,
    #[serde(default)]
    policy: String,
    #[serde(default)]
    route: String,
    #[serde(default)]
    api: String,
    #[serde(default)]
    model: String,
    /// The status the answer would have had.
    #[serde(default)]
    http_status: Option<u16>,
    /// The real text (the question, the refused answer); the service masks it itself.
    #[serde(default)]
    excerpt_raw: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    #[serde(default)]
    note: String,
}

fn bad_request(message: &str) -> Resp {
    http::error(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn not_found() -> Resp {
    http::error(StatusCode::NOT_FOUND, "not_found", "no such review")
}

fn unauthorized(what: &str) -> Resp {
    http::error(StatusCode::UNAUTHORIZED, "unauthorized", what)
}

/// `POST /v1/reviews` (filter).
pub async fn create(state: &State, req: Request<Incoming>) -> Resp {
    if !state.auth.is_client(req.headers()) {
        return unauthorized("missing or wrong x-approval-client-token");
    }
    let body = match http::read_body(req).await {
        Ok(b) => b,
        Err(e) => return body_error(e),
    };
    let body: CreateBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad_request(&format!("invalid JSON body: {e}")),
    };
    if !matches!(body.trigger.as_str(), "upstream_failure" | "flagged_answer") {
        return bad_request(&format!(
            "trigger: {:?} is not \"upstream_failure\" or \"flagged_answer\"",
            body.trigger
        ));
    }
    if body.reason.is_empty() {
        return bad_request("reason: must not be empty");
    }
    for (name, v) in [
        ("reason", &body.reason),
        ("request_id", &body.request_id),
        ("caller", &body.caller),
        ("filter", &body.filter),
        ("policy", &body.policy),
        ("route", &body.route),
        ("api", &body.api),
        ("model", &body.model),
    ] {
        if v.len() > MAX_FIELD {
            return bad_request(&format!("{name}: longer than {MAX_FIELD} bytes"));
        }
    }
    let id = match random_hex(16) {
        Ok(id) => id,
        Err(_) => return internal(),
    };
    let (excerpt, excerpt_raw) = match &body.excerpt_raw {
        Some(raw) => {
            let e = state.masker.excerpt(raw);
            (e.masked, Some(e.raw))
        }
        None => (String::new(), None),
    };
    let review = Review {
        id,
        status: "open".to_owned(),
        cause: body.trigger,
        reason: body.reason,
        filter: body.filter,
        policy: body.policy,
        route: body.route,
        api: body.api,
        model: body.model,
        http_status: body.http_status.map(i64::from),
        caller: body.caller,
        request_id: body.request_id,
        excerpt,
        excerpt_raw,
        created_at: now_ms(),
        resolved_at: None,
        resolved_by: None,
        note: None,
    };
    match state.db(move |s| s.create_review(&review)).await {
        Ok(Ok(r)) => http::json(
            StatusCode::CREATED,
            &json!({"id": r.id, "status": r.status, "created_at": r.created_at}),
        ),
        Ok(Err(e)) => {
            eprintln!("approval-service: create review: {e:#}");
            internal()
        }
        Err(resp) => resp,
    }
}

/// Reads a review.
async fn load(state: &State, id: &str) -> Result<Review, Resp> {
    if !valid_id(id) {
        return Err(not_found());
    }
    let id = id.to_owned();
    match state.db(move |s| s.get_review(&id)).await? {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(not_found()),
        Err(e) => {
            eprintln!("approval-service: get review: {e:#}");
            Err(internal())
        }
    }
}

/// `GET /v1/reviews/{id}` (filter or approver).
pub async fn get(state: &State, headers: &HeaderMap, id: &str) -> Resp {
    if !state.auth.is_client(headers) && state.auth.approver_from_headers(headers).is_none() {
        return unauthorized("needs the client token or an approver's credentials");
    }
    match load(state, id).await {
        Ok(r) => http::json(StatusCode::OK, &r.to_json()),
        Err(resp) => resp,
    }
}

/// `GET /v1/reviews?status=open|resolved|all` (approver; default `open`).
pub async fn list(state: &State, req: &Request<Incoming>) -> Resp {
    if state.auth.approver_from_headers(req.headers()).is_none() {
        return unauthorized("needs an approver's bearer token");
    }
    let form = http::parse_form(req.uri().query().unwrap_or("").as_bytes());
    let status = match form_get(&form, "status").unwrap_or("open") {
        "all" => None,
        s @ ("open" | "resolved") => Some(s.to_owned()),
        other => {
            return bad_request(&format!(
                "status: {other:?} is not \"open\", \"resolved\" or \"all\""
            ))
        }
    };
    match state.db(move |s| s.reviews(status.as_deref(), LIST)).await {
        Ok(Ok(list)) => http::json(
            StatusCode::OK,
            &json!({"reviews": list.iter().map(Review::to_json).collect::<Vec<_>>()}),
        ),
        Ok(Err(e)) => {
            eprintln!("approval-service: list reviews: {e:#}");
            internal()
        }
        Err(resp) => resp,
    }
}

/// Resolves a review; shared by the API and the console.
async fn apply_resolve(
    state: &State,
    id: &str,
    who: &Identity,
    note: String,
) -> Result<Result<Review, ResolveError>, Resp> {
    if !valid_id(id) {
        return Ok(Err(ResolveError::NotFound));
    }
    if note.len() > MAX_NOTE {
        return Err(bad_request(&format!("note: longer than {MAX_NOTE} bytes")));
    }
    let id = id.to_owned();
    let name = who.approver.name.clone();
    let now = now_ms();
    state
        .db(move |s| s.resolve_review(&id, &name, &note, now))
        .await
}

fn resolve_error(e: ResolveError) -> Resp {
    match e {
        ResolveError::NotFound => not_found(),
        ResolveError::AlreadyResolved(r) => http::error(
            StatusCode::CONFLICT,
            "already_resolved",
            &format!(
                "the review is already resolved (by {})",
                r.resolved_by.as_deref().unwrap_or("someone")
            ),
        ),
        ResolveError::Db(e) => {
            eprintln!("approval-service: resolve review: {e:#}");
            internal()
        }
    }
}

/// `POST /v1/reviews/{id}/resolve` (approver, JSON `{"note"}`).
pub async fn resolve(state: &State, req: Request<Incoming>, id: &str) -> Resp {
    let Some(who) = state.auth.approver_from_headers(req.headers()) else {
        return unauthorized("needs an approver's bearer token");
    };
    if !crate::api::is_json(req.headers()) {
        return http::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a resolution must be sent as content-type: application/json",
        );
    }
    let body = match http::read_body(req).await {
        Ok(b) => b,
        Err(e) => return body_error(e),
    };
    let body: ResolveBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad_request(&format!("invalid JSON body: {e}")),
    };
    match apply_resolve(state, id, &who, body.note).await {
        Ok(Ok(r)) => http::json(StatusCode::OK, &r.to_json()),
        Ok(Err(e)) => resolve_error(e),
        Err(resp) => resp,
    }
}

// ------------------------------------------------------------------ console

fn link(id: &str) -> String {
    format!(
        "<a href=\"/reviews/{0}\">{1}</a>",
        http::percent_encode(id),
        escape(id.get(..8).unwrap_or(id))
    )
}

/// The start of a (masked) excerpt, for a list.
fn snippet(text: &str) -> String {
    let mut end = text.len().min(120);
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text.get(..end).unwrap_or_default();
    if end < text.len() {
        format!("{cut}…")
    } else {
        cut.to_owned()
    }
}

/// The table of reviews (masked excerpts only).
pub fn table(reviews: &[Review]) -> String {
    if reviews.is_empty() {
        return "<p>No reviews.</p>".to_owned();
    }
    let mut out = String::from(
        "<table><tr><th>id</th><th>status</th><th>trigger</th><th>reason</th><th>caller</th>\
         <th>request id</th><th>created</th><th>excerpt (masked)</th></tr>",
    );
    for r in reviews {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            link(&r.id),
            console::status_cell(&r.status),
            escape(&r.cause),
            escape(&r.reason),
            escape(&r.caller),
            escape(&r.request_id),
            console::timestamp(r.created_at),
            escape(&snippet(&r.excerpt)),
        );
    }
    out.push_str("</table>");
    out
}

/// Open reviews, for the home page.
pub async fn open(state: &State) -> anyhow::Result<Vec<Review>> {
    match state.db(move |s| s.reviews(Some("open"), LIST)).await {
        Ok(r) => r,
        Err(_) => anyhow::bail!("the store is unavailable"),
    }
}

/// `GET /reviews`: open and resolved.
pub async fn page_list(state: &State, who: &Identity) -> Resp {
    let lists = state
        .db(move |s| {
            Ok::<_, anyhow::Error>((
                s.reviews(Some("open"), LIST)?,
                s.reviews(Some("resolved"), LIST)?,
            ))
        })
        .await;
    let (open, resolved) = match lists {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            eprintln!("approval-service: console reviews: {e:#}");
            return console::server_error(who);
        }
        Err(resp) => return resp,
    };
    let body = format!(
        "<p>Answers a guard could not give, escalated for a person to follow up.</p>\
         <h2>Open</h2>{}<h2>Resolved</h2>{}",
        table(&open),
        table(&resolved)
    );
    http::html(StatusCode::OK, console::page("Reviews", Some(who), &body))
}

/// `GET /reviews/{id}`.
pub async fn page_detail(
    state: &State,
    who: &Identity,
    id: &str,
    notice: Option<(StatusCode, &str)>,
) -> Resp {
    let r = match load(state, id).await {
        Ok(r) => r,
        Err(resp) if resp.status() == StatusCode::NOT_FOUND => {
            return console::message(
                StatusCode::NOT_FOUND,
                "Not found",
                "No such review.",
                Some(who),
            )
        }
        Err(resp) => return resp,
    };
    let (excerpt, label) = match (&r.excerpt_raw, state.auth.sees_pii(&who.approver)) {
        (Some(raw), true) => (raw.as_str(), "Excerpt (unmasked: your role may see PII)"),
        _ => (r.excerpt.as_str(), "Excerpt (masked)"),
    };
    let mut body = String::new();
    if let Some((_, text)) = notice {
        let _ = write!(body, "<p class=\"denied\"><b>{}</b></p>", escape(text));
    }
    let status = r.http_status.map(|s| s.to_string()).unwrap_or_default();
    let rows: [(&str, String); 15] = [
        ("status", console::status_cell(&r.status)),
        ("trigger", escape(&r.cause)),
        ("reason", escape(&r.reason)),
        ("caller", escape(&r.caller)),
        ("request id", escape(&r.request_id)),
        ("filter", escape(&r.filter)),
        ("policy", escape(&r.policy)),
        ("route", escape(&r.route)),
        ("api", escape(&r.api)),
        ("model", escape(&r.model)),
        ("http status", escape(&status)),
        ("created", console::timestamp(r.created_at)),
        (
            "resolved by",
            escape(r.resolved_by.as_deref().unwrap_or("—")),
        ),
        ("resolved", console::opt_time(r.resolved_at)),
        ("note", escape(r.note.as_deref().unwrap_or("—"))),
    ];
    console::detail_table(&mut body, &rows);
    let _ = write!(
        body,
        "<h2>{}</h2><pre>{}</pre>",
        escape(label),
        escape(excerpt)
    );
    if r.is_open() {
        let csrf = console::csrf_field(&who.via);
        let _ = write!(
            body,
            "<h2>Resolve</h2><form method=\"post\" action=\"/reviews/{id}/resolve\">{csrf}\
             <p><label>Note<br><textarea name=\"note\" rows=\"3\" cols=\"60\" maxlength=\"{MAX_NOTE}\"></textarea></label></p>\
             <p><button type=\"submit\">Mark resolved</button></p></form>",
            id = http::percent_encode(&r.id),
        );
    }
    let status = notice.map_or(StatusCode::OK, |(s, _)| s);
    http::html(
        status,
        console::page(&format!("Review {}", r.id), Some(who), &body),
    )
}

/// `POST /reviews/{id}/resolve` (console form).
pub async fn page_resolve(state: &State, req: Request<Incoming>, id: &str) -> Resp {
    let Some(who) = state.auth.approver_for_console(req.headers()) else {
        return console::message(
            StatusCode::UNAUTHORIZED,
            "Sign in first",
            "You are not signed in.",
            None,
        );
    };
    let form = match console::read_form(req).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    if !console::csrf_ok(&who, &form) {
        return console::forbidden(Some(&who));
    }
    let note = form_get(&form, "note").unwrap_or("").trim().to_owned();
    match apply_resolve(state, id, &who, note).await {
        Ok(Ok(r)) => http::redirect(&format!("/reviews/{}", http::percent_encode(&r.id)), &[]),
        Ok(Err(ResolveError::AlreadyResolved(r))) => {
            let text = format!(
                "Already resolved by {}.",
                r.resolved_by.as_deref().unwrap_or("someone")
            );
            page_detail(state, &who, id, Some((StatusCode::CONFLICT, &text))).await
        }
        Ok(Err(ResolveError::NotFound)) => console::message(
            StatusCode::NOT_FOUND,
            "Not found",
            "No such review.",
            Some(&who),
        ),
        Ok(Err(ResolveError::Db(e))) => {
            eprintln!("approval-service: console resolve: {e:#}");
            console::server_error(&who)
        }
        Err(resp) => resp,
    }
}
