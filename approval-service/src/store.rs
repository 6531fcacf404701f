//! The persistent store: one SQLite file (WAL), schema in `schema.sql`. Every state change
//! (create, decide, expire, consume) is one transaction that also appends to `events`.
//! Expiry is evaluated on read: a pending record past `expires_at` is stored as `expired`
//! by the read that notices it.
//!
//! Calls are synchronous; the server runs them on tokio's blocking pool and never holds the
//! connection while a request waits.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use anyhow::Context as _;
use rusqlite::{params, Connection, OptionalExtension as _, Row, Transaction};
use serde_json::{json, Value};

/// The schema, also shipped as `approval-service/schema.sql`.
pub const SCHEMA: &str = include_str!("../schema.sql");

/// Actor recorded for expiry events.
const SYSTEM: &str = "system";

const COLUMNS: &str = "id, status, tool, arguments, digest, caller, conversation, excerpt, \
    excerpt_raw, rule, mode, request_id, created_at, expires_at, decided_at, decided_by, \
    reason, consumed_at";

/// One approval request as stored.
#[derive(Clone, Debug)]
pub struct Record {
    pub id: String,
    pub status: String,
    pub tool: String,
    /// JSON text.
    pub arguments: String,
    pub digest: String,
    pub caller: String,
    pub conversation: String,
    pub excerpt: String,
    pub excerpt_raw: Option<String>,
    pub rule: String,
    pub mode: String,
    pub request_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub consumed_at: Option<i64>,
}

impl Record {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Record> {
        Ok(Record {
            id: row.get(0)?,
            status: row.get(1)?,
            tool: row.get(2)?,
            arguments: row.get(3)?,
            digest: row.get(4)?,
            caller: row.get(5)?,
            conversation: row.get(6)?,
            excerpt: row.get(7)?,
            excerpt_raw: row.get(8)?,
            rule: row.get(9)?,
            mode: row.get(10)?,
            request_id: row.get(11)?,
            created_at: row.get(12)?,
            expires_at: row.get(13)?,
            decided_at: row.get(14)?,
            decided_by: row.get(15)?,
            reason: row.get(16)?,
            consumed_at: row.get(17)?,
        })
    }

    /// The API's JSON shape (no excerpts: those are for the console only).
    pub fn to_json(&self) -> Value {
        let arguments: Value =
            serde_json::from_str(&self.arguments).unwrap_or(Value::String(self.arguments.clone()));
        json!({
            "id": self.id,
            "status": self.status,
            "tool": self.tool,
            "arguments": arguments,
            "digest": self.digest,
            "caller": self.caller,
            "conversation": self.conversation,
            "rule": self.rule,
            "mode": self.mode,
            "request_id": self.request_id,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "decided_at": self.decided_at,
            "decided_by": self.decided_by,
            "reason": self.reason,
            "consumed_at": self.consumed_at,
        })
    }

    pub fn is_pending(&self) -> bool {
        self.status == "pending"
    }
}

/// A new request, validated by the API layer.
#[derive(Clone, Debug)]
pub struct NewRecord {
    pub id: String,
    pub tool: String,
    pub arguments: String,
    pub digest: String,
    pub caller: String,
    pub conversation: String,
    pub excerpt: String,
    pub excerpt_raw: Option<String>,
    pub rule: String,
    pub mode: String,
    pub request_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Approve or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
        }
    }

    fn status(self) -> &'static str {
        match self {
            Decision::Approve => "approved",
            Decision::Deny => "denied",
        }
    }
}

/// Why a decision was refused.
#[derive(Debug)]
pub enum DecideError {
    NotFound,
    AlreadyDecided(Box<Record>),
    Expired,
    Db(anyhow::Error),
}

/// Why a consume was refused (the API's error codes).
#[derive(Debug)]
pub enum ConsumeError {
    NotFound,
    DigestMismatch,
    NotApproved,
    AlreadyUsed,
    Expired,
    Db(anyhow::Error),
}

impl ConsumeError {
    pub fn code(&self) -> &'static str {
        match self {
            ConsumeError::NotFound => "not_found",
            ConsumeError::DigestMismatch => "digest_mismatch",
            ConsumeError::NotApproved => "not_approved",
            ConsumeError::AlreadyUsed => "already_used",
            ConsumeError::Expired => "expired",
            ConsumeError::Db(_) => "internal",
        }
    }
}

/// One audit event, joined with its request's tool and caller.
#[derive(Clone, Debug)]
pub struct Event {
    pub seq: i64,
    pub approval_id: String,
    pub kind: String,
    pub actor: String,
    pub at: i64,
    pub decision: Option<String>,
    pub reason: Option<String>,
    pub tool: String,
    pub caller: String,
}

/// The store. Cheap to share behind an `Arc`.
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, switches it to WAL and applies the
    /// schema.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        let conn = Connection::open(path)
            .with_context(|| format!("opening the database {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .context("setting the busy timeout")?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .context("switching the database to WAL")?;
        if !mode.eq_ignore_ascii_case("wal") {
            anyhow::bail!("the database {} refused WAL mode ({mode})", path.display());
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .context("setting synchronous=FULL")?;
        conn.execute_batch(SCHEMA)
            .context("applying the schema (schema.sql)")?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores a new pending request.
    pub fn create(&self, new: &NewRecord) -> anyhow::Result<Record> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO approvals (id, status, tool, arguments, digest, caller, conversation, \
             excerpt, excerpt_raw, rule, mode, request_id, created_at, expires_at) \
             VALUES (?1, 'pending', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                new.id,
                new.tool,
                new.arguments,
                new.digest,
                new.caller,
                new.conversation,
                new.excerpt,
                new.excerpt_raw,
                new.rule,
                new.mode,
                new.request_id,
                new.created_at,
                new.expires_at
            ],
        )?;
        append_event(
            &tx,
            &new.id,
            "created",
            &new.caller,
            new.created_at,
            None,
            None,
        )?;
        let record = select(&tx, &new.id)?.context("the new record vanished")?;
        tx.commit()?;
        Ok(record)
    }

    /// The record, with expiry applied (and stored) as of `now`.
    pub fn get(&self, id: &str, now: i64) -> anyhow::Result<Option<Record>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let Some(record) = select(&tx, id)? else {
            return Ok(None);
        };
        let record = expire_if_due(&tx, record, now)?;
        tx.commit()?;
        Ok(Some(record))
    }

    /// Approves or denies a pending request (single use).
    pub fn decide(
        &self,
        id: &str,
        decision: Decision,
        by: &str,
        reason: &str,
        now: i64,
    ) -> Result<Record, DecideError> {
        let db = |e: rusqlite::Error| DecideError::Db(e.into());
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(db)?;
        let Some(record) = select(&tx, id).map_err(db)? else {
            return Err(DecideError::NotFound);
        };
        let record = expire_if_due(&tx, record, now).map_err(db)?;
        if record.status == "expired" {
            tx.commit().map_err(db)?;
            return Err(DecideError::Expired);
        }
        if !record.is_pending() {
            return Err(DecideError::AlreadyDecided(Box::new(record)));
        }
        let changed = tx
            .execute(
                "UPDATE approvals SET status = ?1, decided_at = ?2, decided_by = ?3, reason = ?4 \
                 WHERE id = ?5 AND status = 'pending'",
                params![decision.status(), now, by, reason, id],
            )
            .map_err(db)?;
        if changed != 1 {
            return Err(DecideError::AlreadyDecided(Box::new(record)));
        }
        append_event(
            &tx,
            id,
            "decided",
            by,
            now,
            Some(decision.as_str()),
            Some(reason),
        )
        .map_err(db)?;
        let record = select(&tx, id).map_err(db)?.ok_or(DecideError::NotFound)?;
        tx.commit().map_err(db)?;
        Ok(record)
    }

    /// Marks an approved, unexpired request with a matching digest as consumed: one UPDATE,
    /// so two concurrent consumes succeed at most once. On refusal, says why.
    pub fn consume(&self, id: &str, digest: &str, now: i64) -> Result<Record, ConsumeError> {
        let db = |e: rusqlite::Error| ConsumeError::Db(e.into());
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(db)?;
        let changed = tx
            .execute(
                "UPDATE approvals SET status = 'consumed', consumed_at = ?1 \
                 WHERE id = ?2 AND status = 'approved' AND digest = ?3 \
                 AND consumed_at IS NULL AND expires_at > ?1",
                params![now, id, digest],
            )
            .map_err(db)?;
        if changed == 1 {
            append_event(&tx, id, "consumed", "client", now, None, None).map_err(db)?;
            let record = select(&tx, id).map_err(db)?.ok_or(ConsumeError::NotFound)?;
            tx.commit().map_err(db)?;
            return Ok(record);
        }
        let Some(record) = select(&tx, id).map_err(db)? else {
            return Err(ConsumeError::NotFound);
        };
        let record = expire_if_due(&tx, record, now).map_err(db)?;
        tx.commit().map_err(db)?;
        Err(match record.status.as_str() {
            "expired" => ConsumeError::Expired,
            "approved" if record.expires_at <= now => ConsumeError::Expired,
            "approved" | "consumed" if record.digest != digest => ConsumeError::DigestMismatch,
            "consumed" => ConsumeError::AlreadyUsed,
            "approved" if record.consumed_at.is_some() => ConsumeError::AlreadyUsed,
            _ => ConsumeError::NotApproved,
        })
    }

    /// Pending requests (after storing the expiry of overdue ones), soonest expiry first.
    pub fn pending(&self, now: i64, limit: u32) -> anyhow::Result<Vec<Record>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        expire_overdue(&tx, now)?;
        let records = query_records(
            &tx,
            &format!(
                "SELECT {COLUMNS} FROM approvals WHERE status = 'pending' \
                 ORDER BY expires_at, id LIMIT ?1"
            ),
            limit,
        )?;
        tx.commit()?;
        Ok(records)
    }

    /// Requests no longer pending, newest first.
    pub fn recent(&self, now: i64, limit: u32) -> anyhow::Result<Vec<Record>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        expire_overdue(&tx, now)?;
        let records = query_records(
            &tx,
            &format!(
                "SELECT {COLUMNS} FROM approvals WHERE status <> 'pending' \
                 ORDER BY created_at DESC, id LIMIT ?1"
            ),
            limit,
        )?;
        tx.commit()?;
        Ok(records)
    }

    /// The audit trail, newest first.
    pub fn events(&self, now: i64, limit: u32) -> anyhow::Result<Vec<Event>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        expire_overdue(&tx, now)?;
        let events = {
            let mut stmt = tx.prepare(&format!("{EVENT_SELECT} ORDER BY e.seq DESC LIMIT ?1"))?;
            let rows = stmt.query_map(params![limit], event_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        tx.commit()?;
        Ok(events)
    }

    /// The events of one request, oldest first.
    pub fn events_of(&self, id: &str) -> anyhow::Result<Vec<Event>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "{EVENT_SELECT} WHERE e.approval_id = ?1 ORDER BY e.seq"
        ))?;
        let rows = stmt.query_map(params![id], event_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

/// The columns of an [`Event`] row (events joined with their request), for [`event_row`].
const EVENT_SELECT: &str = "SELECT e.seq, e.approval_id, e.kind, e.actor, e.at, e.decision, \
     e.reason, a.tool, a.caller FROM events e JOIN approvals a ON a.id = e.approval_id";

fn event_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        seq: row.get(0)?,
        approval_id: row.get(1)?,
        kind: row.get(2)?,
        actor: row.get(3)?,
        at: row.get(4)?,
        decision: row.get(5)?,
        reason: row.get(6)?,
        tool: row.get(7)?,
        caller: row.get(8)?,
    })
}

fn select(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<Option<Record>> {
    tx.query_row(
        &format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"),
        params![id],
        Record::from_row,
    )
    .optional()
}

fn query_records(tx: &Transaction<'_>, sql: &str, limit: u32) -> rusqlite::Result<Vec<Record>> {
    let mut stmt = tx.prepare(sql)?;
    let rows = stmt.query_map(params![limit], Record::from_row)?;
    rows.collect()
}

fn append_event(
    tx: &Transaction<'_>,
    id: &str,
    kind: &str,
    actor: &str,
    at: i64,
    decision: Option<&str>,
    reason: Option<&str>,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO events (seq, approval_id, kind, actor, at, decision, reason) \
         SELECT COALESCE(MAX(seq), 0) + 1, ?1, ?2, ?3, ?4, ?5, ?6 FROM events",
        params![id, kind, actor, at, decision, reason],
    )?;
    Ok(())
}

/// Stores `expired` for a pending record past its expiry; returns the record as it now is.
fn expire_if_due(tx: &Transaction<'_>, mut record: Record, now: i64) -> rusqlite::Result<Record> {
    if record.is_pending() && now >= record.expires_at {
        let changed = tx.execute(
            "UPDATE approvals SET status = 'expired' WHERE id = ?1 AND status = 'pending'",
            params![record.id],
        )?;
        if changed == 1 {
            append_event(tx, &record.id, "expired", SYSTEM, now, None, None)?;
        }
        "expired".clone_into(&mut record.status);
    }
    Ok(record)
}

/// Stores `expired` for every overdue pending record.
fn expire_overdue(tx: &Transaction<'_>, now: i64) -> rusqlite::Result<()> {
    let ids: Vec<String> = {
        let mut stmt = tx.prepare(
            "SELECT id FROM approvals WHERE status = 'pending' AND expires_at <= ?1 \
             ORDER BY expires_at LIMIT 1000",
        )?;
        let rows = stmt.query_map(params![now], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for id in ids {
        tx.execute(
            "UPDATE approvals SET status = 'expired' WHERE id = ?1 AND status = 'pending'",
            params![id],
        )?;
        append_event(tx, &id, "expired", SYSTEM, now, None, None)?;
    }
    Ok(())
}

// ------------------------------------------------------------------ reviews

const REVIEW_COLUMNS: &str = "id, status, cause, reason, filter, policy, route, api, model, \
    http_status, caller, request_id, excerpt, excerpt_raw, created_at, resolved_at, resolved_by, note";

/// One review (an escalated answer a person follows up) as stored.
#[derive(Clone, Debug)]
pub struct Review {
    pub id: String,
    pub status: String,
    /// `upstream_failure` or `flagged_answer` (the API's `trigger`).
    pub cause: String,
    pub reason: String,
    pub filter: String,
    pub policy: String,
    pub route: String,
    pub api: String,
    pub model: String,
    pub http_status: Option<i64>,
    pub caller: String,
    pub request_id: String,
    pub excerpt: String,
    pub excerpt_raw: Option<String>,
    pub created_at: i64,
    pub resolved_at: Option<i64>,
    pub resolved_by: Option<String>,
    pub note: Option<String>,
}

impl Review {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Review> {
        Ok(Review {
            id: row.get(0)?,
            status: row.get(1)?,
            cause: row.get(2)?,
            reason: row.get(3)?,
            filter: row.get(4)?,
            policy: row.get(5)?,
            route: row.get(6)?,
            api: row.get(7)?,
            model: row.get(8)?,
            http_status: row.get(9)?,
            caller: row.get(10)?,
            request_id: row.get(11)?,
            excerpt: row.get(12)?,
            excerpt_raw: row.get(13)?,
            created_at: row.get(14)?,
            resolved_at: row.get(15)?,
            resolved_by: row.get(16)?,
            note: row.get(17)?,
        })
    }

    /// The API's JSON shape (no excerpts: those are for the console only).
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "kind": "review",
            "status": self.status,
            "trigger": self.cause,
            "reason": self.reason,
            "filter": self.filter,
            "policy": self.policy,
            "route": self.route,
            "api": self.api,
            "model": self.model,
            "http_status": self.http_status,
            "caller": self.caller,
            "request_id": self.request_id,
            "created_at": self.created_at,
            "resolved_at": self.resolved_at,
            "resolved_by": self.resolved_by,
            "note": self.note,
        })
    }

    pub fn is_open(&self) -> bool {
        self.status == "open"
    }
}

/// Why a resolve was refused.
#[derive(Debug)]
pub enum ResolveError {
    NotFound,
    AlreadyResolved(Box<Review>),
    Db(anyhow::Error),
}

impl Store {
    /// Stores a new open review (`review.status` is ignored).
    pub fn create_review(&self, review: &Review) -> anyhow::Result<Review> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            &format!(
                "INSERT INTO reviews ({REVIEW_COLUMNS}) VALUES \
                 (?1, 'open', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, NULL, NULL, NULL)"
            ),
            params![
                review.id,
                review.cause,
                review.reason,
                review.filter,
                review.policy,
                review.route,
                review.api,
                review.model,
                review.http_status,
                review.caller,
                review.request_id,
                review.excerpt,
                review.excerpt_raw,
                review.created_at
            ],
        )?;
        let stored = select_review(&tx, &review.id)?.context("the new review vanished")?;
        tx.commit()?;
        Ok(stored)
    }

    pub fn get_review(&self, id: &str) -> anyhow::Result<Option<Review>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {REVIEW_COLUMNS} FROM reviews WHERE id = ?1"),
                params![id],
                Review::from_row,
            )
            .optional()?)
    }

    /// Reviews with `status` (`None`: all), newest first.
    pub fn reviews(&self, status: Option<&str>, limit: u32) -> anyhow::Result<Vec<Review>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {REVIEW_COLUMNS} FROM reviews WHERE (?1 IS NULL OR status = ?1) \
             ORDER BY created_at DESC, id LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![status, limit], Review::from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Marks an open review resolved (once).
    pub fn resolve_review(
        &self,
        id: &str,
        by: &str,
        note: &str,
        now: i64,
    ) -> Result<Review, ResolveError> {
        let db = |e: rusqlite::Error| ResolveError::Db(e.into());
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(db)?;
        let changed = tx
            .execute(
                "UPDATE reviews SET status = 'resolved', resolved_at = ?1, resolved_by = ?2, \
                 note = ?3 WHERE id = ?4 AND status = 'open'",
                params![now, by, note, id],
            )
            .map_err(db)?;
        let review = select_review(&tx, id)
            .map_err(db)?
            .ok_or(ResolveError::NotFound)?;
        if changed != 1 {
            return Err(ResolveError::AlreadyResolved(Box::new(review)));
        }
        tx.commit().map_err(db)?;
        Ok(review)
    }
}

fn select_review(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<Option<Review>> {
    tx.query_row(
        &format!("SELECT {REVIEW_COLUMNS} FROM reviews WHERE id = ?1"),
        params![id],
        Review::from_row,
    )
    .optional()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_record(id: &str, now: i64, expires_in_ms: i64) -> NewRecord {
        NewRecord {
            id: id.to_owned(),
            tool: "payments.send".to_owned(),
            arguments: "{\"amount\":1}".to_owned(),
            digest: "a".repeat(64),
            caller: "alice".to_owned(),
            conversation: "c".to_owned(),
            excerpt: String::new(),
            excerpt_raw: None,
            rule: "r".to_owned(),
            mode: "defer".to_owned(),
            request_id: "q".to_owned(),
            created_at: now,
            expires_at: now + expires_in_ms,
        }
    }

    #[test]
    fn every_change_is_an_event() {
        let dir = std::env::temp_dir().join(format!("approval-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir.join("db")).unwrap();
        store.create(&new_record("aa", 1000, 500)).unwrap();
        store.create(&new_record("bb", 1000, 500)).unwrap();
        let r = store
            .decide("aa", Decision::Approve, "ops", "fine", 1200)
            .unwrap();
        assert_eq!(
            (r.status.as_str(), r.decided_by.as_deref()),
            ("approved", Some("ops"))
        );
        assert!(matches!(
            store.decide("aa", Decision::Deny, "pia", "", 1300),
            Err(DecideError::AlreadyDecided(_))
        ));
        assert!(matches!(
            store.consume("aa", &"b".repeat(64), 1300),
            Err(ConsumeError::DigestMismatch)
        ));
        store.consume("aa", &"a".repeat(64), 1300).unwrap();
        assert!(matches!(
            store.consume("aa", &"a".repeat(64), 1301),
            Err(ConsumeError::AlreadyUsed)
        ));
        // Read past expiry: stored as expired, once.
        assert_eq!(store.get("bb", 1500).unwrap().unwrap().status, "expired");
        assert_eq!(store.get("bb", 1600).unwrap().unwrap().status, "expired");
        assert!(matches!(
            store.decide("bb", Decision::Approve, "ops", "", 1700),
            Err(DecideError::Expired)
        ));
        let events: Vec<(String, String, String)> = store
            .events(1800, 100)
            .unwrap()
            .into_iter()
            .rev()
            .map(|e| (e.approval_id, e.kind, e.actor))
            .collect();
        let want = [
            ("aa", "created", "alice"),
            ("bb", "created", "alice"),
            ("aa", "decided", "ops"),
            ("aa", "consumed", "client"),
            ("bb", "expired", "system"),
        ];
        let want: Vec<(String, String, String)> = want
            .iter()
            .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
            .collect();
        assert_eq!(events, want);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reviews_are_resolved_once() {
        let dir = std::env::temp_dir().join(format!("review-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir.join("db")).unwrap();
        let new = |id: &str, at: i64| Review {
            id: id.to_owned(),
            status: String::new(),
            cause: "flagged_answer".to_owned(),
            reason: "schema_violation".to_owned(),
            filter: "schema_guard".to_owned(),
            policy: "default/default".to_owned(),
            route: "llm".to_owned(),
            api: "openai_chat".to_owned(),
            model: "m".to_owned(),
            http_status: Some(502),
            caller: "alice".to_owned(),
            request_id: "r".to_owned(),
            excerpt: "[EMAIL]".to_owned(),
            excerpt_raw: Some("a@b.example".to_owned()),
            created_at: at,
            resolved_at: None,
            resolved_by: None,
            note: None,
        };
        assert_eq!(store.create_review(&new("r1", 10)).unwrap().status, "open");
        store.create_review(&new("r2", 20)).unwrap();
        let ids = |status| -> Vec<String> {
            store
                .reviews(status, 10)
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect()
        };
        assert_eq!(ids(None), ["r2", "r1"]);
        let r = store
            .resolve_review("r1", "ops", "called back", 30)
            .unwrap();
        assert_eq!(
            (r.status.as_str(), r.resolved_by.as_deref(), r.resolved_at),
            ("resolved", Some("ops"), Some(30))
        );
        assert!(matches!(
            store.resolve_review("r1", "pia", "", 40),
            Err(ResolveError::AlreadyResolved(_))
        ));
        assert!(matches!(
            store.resolve_review("nope", "pia", "", 40),
            Err(ResolveError::NotFound)
        ));
        assert_eq!(ids(Some("open")), ["r2"]);
        assert_eq!(ids(Some("resolved")), ["r1"]);
        assert_eq!(
            store.get_review("r1").unwrap().unwrap().note.as_deref(),
            Some("called back")
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
