//! The web console: server-rendered HTML, no JavaScript. Every value is HTML-escaped; every
//! POST form carries a CSRF token bound to the session (or, behind a trusted proxy, to the
//! approver's name); sessions are HttpOnly, SameSite=Strict cookies.
//!
//! Pages: `/` (pending with time left, open reviews, recent history), `/approvals/{id}`
//! (detail and decision form), `/reviews` and `/reviews/{id}` (the review queue, see
//! [`crate::reviews`]), `/history` (the audit trail), `/login`, `/logout`.

use std::fmt::Write as _;

use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request, StatusCode};

use crate::auth::{self, ct_eq, random_hex, Identity, LOGIN_COOKIE, SESSION_COOKIE, SESSION_TTL};
use crate::http::{self, escape, form_get, Resp};
use crate::server::{now_ms, State};
use crate::store::{DecideError, Event, Record};
use crate::{api, reviews};

/// Rows of the home page's recent history.
const RECENT: u32 = 50;
/// Rows of `/history` (newest first).
const HISTORY: u32 = 1000;
/// Pending requests listed on the home page.
const PENDING: u32 = 500;

pub async fn handle(state: &State, req: Request<Incoming>, segments: &[&str]) -> Resp {
    let method = req.method().clone();
    match (&method, segments) {
        (&Method::GET, ["login"]) => login_form(StatusCode::OK, None),
        (&Method::POST, ["login"]) => login(state, req).await,
        (&Method::GET, ["logout"]) => logout_form(state, req.headers()),
        (&Method::POST, ["logout"]) => logout(state, req).await,
        (&Method::GET, [""]) => match who(state, req.headers()) {
            Some(who) => home(state, &who).await,
            None => to_login(),
        },
        (&Method::GET, ["history"]) => match who(state, req.headers()) {
            Some(who) => history(state, &who).await,
            None => to_login(),
        },
        (&Method::GET, ["approvals", id]) => match who(state, req.headers()) {
            Some(who) => detail(state, &who, id, None).await,
            None => to_login(),
        },
        (&Method::POST, ["approvals", id, "decision"]) => {
            let id = (*id).to_owned();
            decide(state, req, &id).await
        }
        (&Method::GET, ["reviews"]) => match who(state, req.headers()) {
            Some(who) => reviews::page_list(state, &who).await,
            None => to_login(),
        },
        (&Method::GET, ["reviews", id]) => match who(state, req.headers()) {
            Some(who) => reviews::page_detail(state, &who, id, None).await,
            None => to_login(),
        },
        (&Method::POST, ["reviews", id, "resolve"]) => {
            let id = (*id).to_owned();
            reviews::page_resolve(state, req, &id).await
        }
        (_, ["login" | "logout" | "history" | "" | "reviews"])
        | (_, ["approvals" | "reviews", ..]) => message(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
            "",
            None,
        ),
        _ => message(StatusCode::NOT_FOUND, "Not found", "No such page.", None),
    }
}

/// The signed-in approver (`None`: send them to the login page).
fn who(state: &State, headers: &HeaderMap) -> Option<Identity> {
    state.auth.approver_for_console(headers)
}

fn to_login() -> Resp {
    http::redirect("/login", &[])
}

pub(crate) fn page(title: &str, who: Option<&Identity>, body: &str) -> String {
    let nav = match who {
        Some(w) => format!(
            "<nav><a href=\"/\">Pending</a> · <a href=\"/reviews\">Reviews</a> · \
             <a href=\"/history\">History</a> · \
             signed in as <b>{}</b> ({}) · <a href=\"/logout\">Sign out</a></nav>",
            escape(&w.approver.name),
            escape(&w.approver.roles.join(", "))
        ),
        None => String::new(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · approvals</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em;max-width:70em}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}}\
         pre{{background:#f4f4f4;padding:1em;overflow:auto;white-space:pre-wrap}}\
         .approved,.consumed{{color:#060}}.denied,.expired{{color:#a00}}.pending{{color:#a60}}\
         </style></head><body>{nav}<h1>{title}</h1>\n{body}\n</body></html>\n",
        title = escape(title),
    )
}

pub(crate) fn message(status: StatusCode, title: &str, text: &str, who: Option<&Identity>) -> Resp {
    http::html(
        status,
        page(
            title,
            who,
            &format!("<p>{}</p><p><a href=\"/\">Back</a></p>", escape(text)),
        ),
    )
}

/// `1d 2h`, `4m 12s`, `expired`.
fn time_left(expires_at: i64, now: i64) -> String {
    let ms = expires_at.saturating_sub(now);
    if ms <= 0 {
        return "expired".to_owned();
    }
    let s = ms.saturating_add(999) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Unix ms as `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// A two-column detail table (`rows`: label, HTML-safe value) appended to `body`.
pub(crate) fn detail_table(body: &mut String, rows: &[(&str, String)]) {
    body.push_str("<table>");
    for (k, v) in rows {
        let _ = write!(body, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    body.push_str("</table>");
}

pub(crate) fn opt_time(ms: Option<i64>) -> String {
    ms.map_or_else(|| "—".to_owned(), timestamp)
}

pub(crate) fn status_cell(status: &str) -> String {
    format!("<span class=\"{0}\">{0}</span>", escape(status))
}

fn link(id: &str) -> String {
    format!(
        "<a href=\"/approvals/{0}\">{1}</a>",
        http::percent_encode(id),
        escape(id.get(..8).unwrap_or(id))
    )
}

async fn home(state: &State, who: &Identity) -> Resp {
    let now = now_ms();
    let lists = state
        .db(move |s| Ok::<_, anyhow::Error>((s.pending(now, PENDING)?, s.recent(now, RECENT)?)))
        .await;
    let (pending, recent) = match lists {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            eprintln!("approval-service: console: {e:#}");
            return server_error(who);
        }
        Err(resp) => return resp,
    };
    let mut body = String::from("<h2>Pending</h2>");
    if pending.is_empty() {
        body.push_str("<p>Nothing is waiting for a decision.</p>");
    } else {
        body.push_str(
            "<table><tr><th>id</th><th>caller</th><th>tool</th><th>rule</th><th>mode</th>\
             <th>created</th><th>time left</th></tr>",
        );
        for r in &pending {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                link(&r.id),
                escape(&r.caller),
                escape(&r.tool),
                escape(&r.rule),
                escape(&r.mode),
                timestamp(r.created_at),
                time_left(r.expires_at, now)
            );
        }
        body.push_str("</table>");
    }
    body.push_str("<h2>Reviews</h2>");
    match reviews::open(state).await {
        Ok(open) if open.is_empty() => body.push_str("<p>No open reviews.</p>"),
        Ok(open) => body.push_str(&reviews::table(&open)),
        Err(e) => {
            eprintln!("approval-service: console: {e:#}");
            return server_error(who);
        }
    }
    body.push_str("<h2>Recent</h2>");
    body.push_str(&records_table(&recent));
    body.push_str("<p><a href=\"/history\">Full audit trail</a></p>");
    http::html(StatusCode::OK, page("Approvals", Some(who), &body))
}

fn records_table(records: &[Record]) -> String {
    if records.is_empty() {
        return "<p>None yet.</p>".to_owned();
    }
    let mut out = String::from(
        "<table><tr><th>id</th><th>status</th><th>caller</th><th>tool</th><th>rule</th>\
         <th>decided by</th><th>when</th><th>reason</th></tr>",
    );
    for r in records {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            link(&r.id),
            status_cell(&r.status),
            escape(&r.caller),
            escape(&r.tool),
            escape(&r.rule),
            escape(r.decided_by.as_deref().unwrap_or("—")),
            opt_time(r.decided_at.or(Some(r.expires_at))),
            escape(r.reason.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</table>");
    out
}

fn events_table(events: &[Event], with_request: bool) -> String {
    if events.is_empty() {
        return "<p>No events.</p>".to_owned();
    }
    let mut out = String::from("<table><tr><th>#</th><th>when</th><th>event</th><th>actor</th>");
    if with_request {
        out.push_str("<th>request</th><th>caller</th><th>tool</th>");
    }
    out.push_str("<th>reason</th></tr>");
    for e in events {
        let kind = match (&*e.kind, e.decision.as_deref()) {
            ("decided", Some("approve")) => "approved".to_owned(),
            ("decided", Some("deny")) => "denied".to_owned(),
            (k, _) => k.to_owned(),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            e.seq,
            timestamp(e.at),
            status_cell(&kind),
            escape(&e.actor)
        );
        if with_request {
            let _ = write!(
                out,
                "<td>{}</td><td>{}</td><td>{}</td>",
                link(&e.approval_id),
                escape(&e.caller),
                escape(&e.tool)
            );
        }
        let _ = write!(
            out,
            "<td>{}</td></tr>",
            escape(e.reason.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</table>");
    out
}

async fn history(state: &State, who: &Identity) -> Resp {
    let now = now_ms();
    let events = match state.db(move |s| s.events(now, HISTORY)).await {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => {
            eprintln!("approval-service: console: {e:#}");
            return server_error(who);
        }
        Err(resp) => return resp,
    };
    let body = format!(
        "<p>Every change, newest first (last {HISTORY}).</p>{}",
        events_table(&events, true)
    );
    http::html(StatusCode::OK, page("Audit trail", Some(who), &body))
}

pub(crate) fn server_error(who: &Identity) -> Resp {
    message(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Error",
        "Internal error (see the service log).",
        Some(who),
    )
}

/// The detail page; `notice` is shown above it (e.g. why a decision was refused).
async fn detail(
    state: &State,
    who: &Identity,
    id: &str,
    notice: Option<(StatusCode, &str)>,
) -> Resp {
    let record = match api::load(state, id).await {
        Ok(r) => r,
        Err(resp) if resp.status() == StatusCode::NOT_FOUND => {
            return message(
                StatusCode::NOT_FOUND,
                "Not found",
                "No such request.",
                Some(who),
            )
        }
        Err(resp) => return resp,
    };
    let owned = record.id.clone();
    let events = match state.db(move |s| s.events_of(&owned)).await {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => {
            eprintln!("approval-service: console: {e:#}");
            return server_error(who);
        }
        Err(resp) => return resp,
    };
    let now = now_ms();
    let arguments = serde_json::from_str::<serde_json::Value>(&record.arguments)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| record.arguments.clone());
    let (excerpt, excerpt_label) = match (&record.excerpt_raw, state.auth.sees_pii(&who.approver)) {
        (Some(raw), true) => (
            raw.as_str(),
            "Conversation excerpt (unmasked: your role may see PII)",
        ),
        _ => (record.excerpt.as_str(), "Conversation excerpt (masked)"),
    };
    let mut body = String::new();
    if let Some((_, text)) = notice {
        let _ = write!(body, "<p class=\"denied\"><b>{}</b></p>", escape(text));
    }
    let rows: [(&str, String); 14] = [
        ("status", status_cell(&record.status)),
        ("tool", escape(&record.tool)),
        ("caller", escape(&record.caller)),
        ("rule", escape(&record.rule)),
        ("mode", escape(&record.mode)),
        ("conversation", escape(&record.conversation)),
        ("request id", escape(&record.request_id)),
        ("digest", format!("<code>{}</code>", escape(&record.digest))),
        ("created", timestamp(record.created_at)),
        (
            "expires",
            format!(
                "{} ({})",
                timestamp(record.expires_at),
                if record.is_pending() {
                    format!("{} left", time_left(record.expires_at, now))
                } else {
                    "no longer pending".to_owned()
                }
            ),
        ),
        (
            "decided by",
            escape(record.decided_by.as_deref().unwrap_or("—")),
        ),
        ("decided", opt_time(record.decided_at)),
        ("reason", escape(record.reason.as_deref().unwrap_or("—"))),
        ("consumed", opt_time(record.consumed_at)),
    ];
    detail_table(&mut body, &rows);
    let _ = write!(
        body,
        "<h2>Arguments</h2><pre>{}</pre><h2>{}</h2><pre>{}</pre>",
        escape(&arguments),
        escape(excerpt_label),
        escape(excerpt)
    );
    if record.is_pending() {
        let csrf = csrf_field(&who.via);
        let _ = write!(
            body,
            "<h2>Decision</h2><form method=\"post\" action=\"/approvals/{id}/decision\">{csrf}\
             <p><label>Reason<br><textarea name=\"reason\" rows=\"3\" cols=\"60\" maxlength=\"{max}\"></textarea></label></p>\
             <p><button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button> \
             <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></p></form>",
            id = http::percent_encode(&record.id),
            max = api::MAX_REASON,
        );
    }
    body.push_str("<h2>Events</h2>");
    body.push_str(&events_table(&events, false));
    let status = notice.map_or(StatusCode::OK, |(s, _)| s);
    http::html(
        status,
        page(&format!("Request {}", record.id), Some(who), &body),
    )
}

/// Checks the form's CSRF token against the identity's.
pub(crate) fn csrf_ok(who: &Identity, form: &[(String, String)]) -> bool {
    match who.via.csrf() {
        None => true,
        Some(expected) => {
            form_get(form, "csrf").is_some_and(|t| ct_eq(t.as_bytes(), expected.as_bytes()))
        }
    }
}

pub(crate) fn forbidden(who: Option<&Identity>) -> Resp {
    message(
        StatusCode::FORBIDDEN,
        "Forbidden",
        "The form's CSRF token is missing or wrong. Reload the page and try again.",
        who,
    )
}

pub(crate) async fn read_form(req: Request<Incoming>) -> Result<Vec<(String, String)>, Resp> {
    match http::read_body(req).await {
        Ok(b) => Ok(http::parse_form(&b)),
        Err(http::BodyError::TooLarge) => Err(message(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Too large",
            "The form is larger than 256 KiB.",
            None,
        )),
        Err(http::BodyError::Read) => Err(message(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "Could not read the form.",
            None,
        )),
    }
}

async fn decide(state: &State, req: Request<Incoming>, id: &str) -> Resp {
    let Some(who) = state.auth.approver_for_console(req.headers()) else {
        return message(
            StatusCode::UNAUTHORIZED,
            "Sign in first",
            "You are not signed in.",
            None,
        );
    };
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    if !csrf_ok(&who, &form) {
        return forbidden(Some(&who));
    }
    let reason = form_get(&form, "reason").unwrap_or("").trim().to_owned();
    let decision = match api::parse_decision(form_get(&form, "decision").unwrap_or(""), &reason) {
        Ok(d) => d,
        Err(m) => return message(StatusCode::BAD_REQUEST, "Bad request", &m, Some(&who)),
    };
    match api::apply_decision(state, id, decision, &who, reason).await {
        Ok(Ok(r)) => http::redirect(&format!("/approvals/{}", http::percent_encode(&r.id)), &[]),
        Ok(Err(DecideError::AlreadyDecided(r))) => {
            let text = format!(
                "Already decided: this request is {} (decisions are single-use).",
                r.status
            );
            detail(state, &who, id, Some((StatusCode::CONFLICT, &text))).await
        }
        Ok(Err(DecideError::Expired)) => {
            detail(
                state,
                &who,
                id,
                Some((StatusCode::GONE, "This request has expired.")),
            )
            .await
        }
        Ok(Err(DecideError::NotFound)) => message(
            StatusCode::NOT_FOUND,
            "Not found",
            "No such request.",
            Some(&who),
        ),
        Ok(Err(DecideError::Db(e))) => {
            eprintln!("approval-service: console decide: {e:#}");
            server_error(&who)
        }
        Err(resp) => resp,
    }
}

fn login_form(status: StatusCode, error: Option<&str>) -> Resp {
    let nonce = match random_hex(32) {
        Ok(n) => n,
        Err(_) => {
            return message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Error",
                "No randomness.",
                None,
            )
        }
    };
    let error = error
        .map(|e| format!("<p class=\"denied\">{}</p>", escape(e)))
        .unwrap_or_default();
    let body = format!(
        "{error}<form method=\"post\" action=\"/login\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{nonce}\">\
         <p><label>Approver token<br><input type=\"password\" name=\"token\" autocomplete=\"current-password\" required></label></p>\
         <p><button type=\"submit\">Sign in</button></p></form>"
    );
    let mut resp = http::html(status, page("Sign in", None, &body));
    if let Ok(v) = hyper::header::HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={nonce}; Path=/login; HttpOnly; SameSite=Strict; Max-Age=3600"
    )) {
        resp.headers_mut().append("set-cookie", v);
    }
    resp
}

async fn login(state: &State, req: Request<Incoming>) -> Resp {
    let expected = auth::cookie(req.headers(), LOGIN_COOKIE).map(str::to_owned);
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let csrf_ok = match (expected, form_get(&form, "csrf")) {
        (Some(e), Some(got)) => ct_eq(e.as_bytes(), got.as_bytes()),
        _ => false,
    };
    if !csrf_ok {
        return forbidden(None);
    }
    let token = form_get(&form, "token").unwrap_or("").trim();
    let Some(approver) = state.auth.approver_by_token(token) else {
        return login_form(StatusCode::UNAUTHORIZED, Some("Unknown token."));
    };
    let session = match state.auth.login(approver) {
        Ok(s) => s,
        Err(_) => {
            return message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Error",
                "No randomness.",
                None,
            )
        }
    };
    http::redirect(
        "/",
        &[
            format!(
                "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
                SESSION_TTL.as_secs()
            ),
            format!("{LOGIN_COOKIE}=; Path=/login; HttpOnly; SameSite=Strict; Max-Age=0"),
        ],
    )
}

/// The hidden CSRF field of a form, when the approver's session has a token.
pub(crate) fn csrf_field(via: &auth::Via) -> String {
    via.csrf()
        .map(|t| {
            format!(
                "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
                escape(t)
            )
        })
        .unwrap_or_default()
}

fn logout_form(state: &State, headers: &HeaderMap) -> Resp {
    let Some(who) = state.auth.approver_for_console(headers) else {
        return http::redirect("/login", &[]);
    };
    let csrf = csrf_field(&who.via);
    let body = format!(
        "<form method=\"post\" action=\"/logout\">{csrf}<p><button type=\"submit\">Sign out</button></p></form>"
    );
    http::html(StatusCode::OK, page("Sign out", Some(&who), &body))
}

async fn logout(state: &State, req: Request<Incoming>) -> Resp {
    let who = state.auth.approver_for_console(req.headers());
    let headers = req.headers().clone();
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    if let Some(who) = &who {
        if !csrf_ok(who, &form) {
            return forbidden(Some(who));
        }
        state.auth.logout(&headers);
    }
    http::redirect(
        "/login",
        &[format!(
            "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
        )],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let cases = [
            (0, "1970-01-01 00:00:00 UTC"),
            (951_782_400_000, "2000-02-29 00:00:00 UTC"),
            (1_764_050_400_123, "2025-11-25 06:00:00 UTC"),
        ];
        for (ms, want) in cases {
            assert_eq!(timestamp(ms), want, "{ms}");
        }
    }

    #[test]
    fn time_left_formats() {
        let cases = [
            (0, "expired"),
            (-5, "expired"),
            (1, "1s"),
            (59_000, "59s"),
            (61_000, "1m 1s"),
            (3_600_000, "1h 0m"),
            (90_000_000, "1d 1h"),
        ];
        for (ms, want) in cases {
            assert_eq!(time_left(ms, 0), want, "{ms}");
        }
    }
}
