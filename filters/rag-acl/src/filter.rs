//! The proxy-wasm adapter (host-agnostic: it talks to the proxy only through `guard_host`):
//! identity → ACL, operation allow-list, collection resolution, the request rewrite, the write
//! checks (with an ownership lookup), the answer re-check, metrics and the audit record.

use crate::acl::Acl;
use crate::chroma::{self, Route};
use crate::policy::{self, Backend, Compiled, Settings};
use crate::qdrant;
use guard_core::config::{FailurePolicy, FilterConfig};
use guard_core::error::{Error, ErrorKind, Result};
use guard_core::verdict::{Decision, LocalReply};
use guard_host::driver::{
    CallOut, CallOutResult, Cx, GuardFilter, Outcome, RequestInfo, ResponsePlan,
};
use guard_host::metrics::{label, Metrics};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

pub const NAME: &str = "rag_acl";

/// Most collection ids remembered per VM; past it the cache starts over.
const MAX_CACHED_IDS: usize = 1024;
/// How long a resolved id → name is trusted (a collection can be renamed).
const ID_TTL_NS: u64 = 60_000_000_000;

/// Per-VM state: metrics and the collection ids resolved so far.
pub struct Shared {
    metrics: Rc<Metrics>,
    /// `base|id` → (name, expiry in ns).
    names: RefCell<HashMap<String, (String, u64)>>,
}

impl Shared {
    fn cached(&self, key: &str, now: u64) -> Option<String> {
        self.names
            .borrow()
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .map(|(n, _)| n.clone())
    }

    fn remember(&self, key: String, name: String, now: u64) {
        let mut names = self.names.borrow_mut();
        if names.len() >= MAX_CACHED_IDS {
            names.clear();
        }
        names.insert(key, (name, now.saturating_add(ID_TTL_NS)));
    }
}

/// What a call-out is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    /// The name of a collection id.
    Resolve,
    /// The stored records a write names.
    Ownership,
}

/// What the answer needs.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Pass,
    /// Re-check a Chroma get / query; strip metadata the filter asked for.
    Chroma {
        op: chroma::Op,
        strip: bool,
    },
    /// Keep only covered collections in a list.
    Collections,
    /// Learn the id of a collection fetched by name.
    LearnId {
        key_base: String,
    },
    /// Re-check a Qdrant read.
    Qdrant {
        op: qdrant::Op,
        rewritten: qdrant::Rewritten,
    },
}

/// Per-stream state.
pub struct RagAcl {
    route: Option<Route>,
    qdrant: Option<(String, qdrant::Op)>,
    op: &'static str,
    collection: Option<String>,
    acl: Option<Acl>,
    body: Value,
    pending: Pending,
    answer: Answer,
}

fn deny(status: u16, reason: &str, message: &str) -> Result<Outcome> {
    Ok(Outcome::Reply(LocalReply::new(status, reason, message)))
}

impl RagAcl {
    fn settings<'a>(cx: &'a Cx<'_, Self>) -> &'a Settings {
        &cx.settings().settings
    }

    /// The metric label of the request's collection: its name when the policy lists it.
    fn collection_label(&self, cx: &Cx<'_, Self>) -> String {
        match &self.collection {
            Some(c) if Self::settings(cx).collections.contains_key(c) => label(c),
            Some(_) => "other".to_string(),
            None => "none".to_string(),
        }
    }

    fn count(&self, cx: &Cx<'_, Self>, what: &str, by: u64) {
        let name = format!(
            "guard.{NAME}.collection.{}.op.{}.{what}",
            self.collection_label(cx),
            self.op
        );
        cx.shared.metrics.counter(&name, by);
    }

    fn refuse(
        &self,
        cx: &mut Cx<'_, Self>,
        status: u16,
        reason: &str,
        msg: &str,
    ) -> Result<Outcome> {
        self.count(cx, "operations_refused", 1);
        self.note(cx);
        deny(status, reason, msg)
    }

    /// Operation and collection in the audit record.
    fn note(&self, cx: &mut Cx<'_, Self>) {
        let extra = &mut cx.info.record.extra;
        extra.insert("operation".into(), json!(self.op));
        if let Some(c) = &self.collection {
            extra.insert("collection".into(), json!(c));
        }
    }

    fn claims(cx: &Cx<'_, Self>) -> Option<Value> {
        cx.info
            .identity
            .as_ref()
            .map(|i| i.claims.clone())
            .filter(Value::is_object)
    }

    fn lookup_call(
        cx: &Cx<'_, Self>,
        method: &'static str,
        path: String,
        body: Vec<u8>,
    ) -> Option<CallOut> {
        let l = Self::settings(cx).lookup.as_ref()?;
        Some(CallOut {
            cluster: l.cluster.clone(),
            method,
            authority: l.authority.clone().unwrap_or_else(|| l.cluster.clone()),
            path,
            headers: Vec::new(),
            body,
            timeout_ms: l.timeout_ms,
        })
    }

    fn chroma_request(&mut self, cx: &mut Cx<'_, Self>) -> Result<Outcome> {
        let Some(route) = self.route.clone() else {
            return Ok(Outcome::Continue);
        };
        match &route {
            Route::Server | Route::ListCollections { .. } | Route::CountCollections { .. } => {
                if matches!(route, Route::ListCollections { .. }) {
                    self.answer = Answer::Collections;
                }
                self.note(cx);
                Ok(Outcome::Continue)
            }
            Route::CreateCollection { .. } => {
                let name = self
                    .body
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if let Some(refusal) = self.enter(cx, name.to_string()) {
                    return refusal;
                }
                self.note(cx);
                Ok(Outcome::Continue)
            }
            Route::GetCollection { base, name, id } => {
                let name = match (name, id) {
                    (Some(n), _) => Some(n.clone()),
                    (None, Some(id)) => self.known_name(cx, base, id),
                    (None, None) => None,
                };
                // By id and not known yet: the answer names it, and is checked there.
                if let Some(refusal) = name.and_then(|n| self.enter(cx, n)) {
                    return refusal;
                }
                self.answer = Answer::LearnId {
                    key_base: base.clone(),
                };
                self.note(cx);
                Ok(Outcome::Continue)
            }
            Route::UpdateCollection { base, slot } | Route::DeleteCollection { base, slot } => {
                let name = if chroma::is_uuid(slot) {
                    match self.known_name(cx, base, slot) {
                        Some(n) => n,
                        None => return self.resolve(cx, base, slot),
                    }
                } else {
                    slot.clone()
                };
                if let Some(refusal) = self.enter(cx, name) {
                    return refusal;
                }
                self.note(cx);
                Ok(Outcome::Continue)
            }
            Route::Record(t) => {
                let base = t.base();
                let name = match self.known_name(cx, &base, &t.collection) {
                    Some(n) => n,
                    None => return self.resolve(cx, &base, &t.collection),
                };
                if let Some(refusal) = self.enter(cx, name) {
                    return refusal;
                }
                self.record_op(cx, t)
            }
        }
    }

    /// The request's collection is `name`: the refusal when the policy does not cover it.
    fn enter(&mut self, cx: &mut Cx<'_, Self>, name: String) -> Option<Result<Outcome>> {
        let covered = cx.settings().covers(&name);
        self.collection = Some(name);
        (!covered).then(|| {
            self.refuse(
                cx,
                403,
                "collection_not_allowed",
                "the policy does not cover this collection",
            )
        })
    }

    /// The name of a collection id: from the policy, else from the VM's cache.
    fn known_name(&self, cx: &Cx<'_, Self>, base: &str, id: &str) -> Option<String> {
        cx.settings()
            .name_of_id(id)
            .map(str::to_string)
            .or_else(|| {
                cx.shared
                    .cached(&format!("{base}|{id}"), cx.host.now_nanos())
            })
    }

    fn resolve(&mut self, cx: &mut Cx<'_, Self>, base: &str, id: &str) -> Result<Outcome> {
        if !chroma::is_uuid(id) {
            return self.refuse(cx, 404, "unknown_collection", "not a collection id");
        }
        let Some(call) = Self::lookup_call(
            cx,
            "GET",
            format!("{base}/collections/by-id/{id}"),
            Vec::new(),
        ) else {
            return self.refuse(
                cx,
                403,
                "collection_not_allowed",
                "the policy names no collection with this id and has no lookup to resolve it",
            );
        };
        self.pending = Pending::Resolve;
        Ok(Outcome::CallOut(call))
    }

    fn record_op(&mut self, cx: &mut Cx<'_, Self>, t: &chroma::Target) -> Result<Outcome> {
        let Some(acl) = self.acl.clone() else {
            return Err(Error::new(
                ErrorKind::BadLocation,
                "no ACL for a record operation",
            ));
        };
        let max_ids = Self::settings(cx).max_ids;
        match t.op {
            chroma::Op::Count => {
                self.note(cx);
                Ok(Outcome::Continue)
            }
            chroma::Op::Get | chroma::Op::Query if !Self::settings(cx).rewrite => {
                let strip = chroma::request_metadata(&mut self.body).map_err(Error::unparsable)?;
                self.answer = Answer::Chroma { op: t.op, strip };
                self.note(cx);
                Ok(Outcome::Replace(
                    serde_json::to_vec(&self.body).unwrap_or_default(),
                ))
            }
            chroma::Op::Get | chroma::Op::Query | chroma::Op::Delete => {
                let strip = chroma::rewrite_request(t.op, &mut self.body, &acl)
                    .map_err(Error::unparsable)?;
                if t.op != chroma::Op::Delete {
                    self.answer = Answer::Chroma { op: t.op, strip };
                }
                self.count(cx, "queries_rewritten", 1);
                cx.info.record.decide(Decision::Modify, "acl_enforced");
                self.note(cx);
                Ok(Outcome::Replace(
                    serde_json::to_vec(&self.body).unwrap_or_default(),
                ))
            }
            chroma::Op::Add | chroma::Op::Upsert | chroma::Op::Update => {
                let ids = match chroma::check_written(t.op, &self.body, &acl, max_ids) {
                    Ok(ids) => ids,
                    Err(r) => {
                        let status = if r.reason == "bad_request" || r.reason == "too_many_ids" {
                            400
                        } else {
                            403
                        };
                        return self.refuse(cx, status, r.reason, &r.message);
                    }
                };
                if t.op == chroma::Op::Add {
                    self.note(cx);
                    return Ok(Outcome::Continue);
                }
                let q = chroma::ownership_query(&ids).to_string().into_bytes();
                let path = format!("{}/collections/{}/get", t.base(), t.collection);
                let Some(call) = Self::lookup_call(cx, "POST", path, q) else {
                    return Err(Error::new(
                        ErrorKind::Config,
                        "no lookup cluster for the ownership check",
                    ));
                };
                self.pending = Pending::Ownership;
                Ok(Outcome::CallOut(call))
            }
        }
    }

    fn qdrant_request(&mut self, cx: &mut Cx<'_, Self>) -> Result<Outcome> {
        let Some((collection, op)) = self.qdrant.clone() else {
            return Ok(Outcome::Continue);
        };
        if let Some(refusal) = self.enter(cx, collection) {
            return refusal;
        }
        let Some(acl) = self.acl.clone() else {
            return Err(Error::new(ErrorKind::BadLocation, "no ACL for a read"));
        };
        match qdrant::rewrite_request(op, &mut self.body, &acl) {
            Ok(rewritten) => {
                self.answer = Answer::Qdrant { op, rewritten };
                self.count(cx, "queries_rewritten", 1);
                cx.info.record.decide(Decision::Modify, "acl_enforced");
                self.note(cx);
                Ok(Outcome::Replace(
                    serde_json::to_vec(&self.body).unwrap_or_default(),
                ))
            }
            Err(e) if acl.qdrant_filter().is_none() => self.refuse(cx, 403, "no_access", &e),
            Err(e) => Err(Error::unparsable(e)),
        }
    }
}

impl GuardFilter for RagAcl {
    type Settings = Settings;
    type Compiled = Compiled;
    type Shared = Shared;
    const NAME: &'static str = NAME;
    const DEFAULT_FAILURE: FailurePolicy = FailurePolicy::FailClosed;
    const ALL_REQUESTS: bool = true;

    fn compile(settings: Settings, path: &str) -> Result<Compiled> {
        policy::compile(settings, path)
    }

    fn init_shared(metrics: &Rc<Metrics>, _config: &FilterConfig<Compiled>) -> Shared {
        Shared {
            metrics: Rc::clone(metrics),
            names: RefCell::new(HashMap::new()),
        }
    }

    fn new_stream() -> Self {
        RagAcl {
            route: None,
            qdrant: None,
            op: "unknown",
            collection: None,
            acl: None,
            body: Value::Null,
            pending: Pending::None,
            answer: Answer::Pass,
        }
    }

    fn on_request_body(&mut self, cx: &mut Cx<'_, Self>, body: &[u8]) -> Result<Outcome> {
        let compiled = cx.settings();
        let backend = compiled.settings.backend;
        let (method, path) = (cx.info.method.clone(), cx.info.path.clone());
        cx.info.record.extra.insert(
            "backend".into(),
            json!(match backend {
                Backend::Chroma => "chroma",
                Backend::Qdrant => "qdrant",
            }),
        );
        match backend {
            Backend::Chroma => {
                self.route = chroma::route(&method, &path);
                self.op = self.route.as_ref().map_or("unknown", Route::op);
            }
            Backend::Qdrant => {
                self.qdrant = qdrant::classify(&method, &path);
                self.op = self
                    .qdrant
                    .as_ref()
                    .map_or("unknown", |(_, op)| op.as_str());
            }
        }
        if self.op == "unknown" {
            return self.refuse(
                cx,
                403,
                "unknown_operation",
                &format!(
                    "{method} {} is not an operation the access policy knows",
                    guard_core::api::strip_query(&path)
                ),
            );
        }
        let Some(claims) = Self::claims(cx) else {
            return self.refuse(
                cx,
                403,
                "no_identity",
                "no verified identity reached the access filter",
            );
        };
        let compiled = cx.settings();
        let roles = compiled.roles(&claims);
        if !compiled.allowed(&roles, self.op) {
            let msg = format!("the caller's roles may not run {:?}", self.op);
            return self.refuse(cx, 403, "operation_denied", &msg);
        }
        let record_op = matches!(self.route, Some(Route::Record(_))) || self.qdrant.is_some();
        if record_op {
            match cx.settings().acl(&claims) {
                Ok(acl) => {
                    cx.info
                        .record
                        .extra
                        .insert("acl_fields".into(), json!(acl.fields()));
                    self.acl = Some(acl);
                }
                Err(d) => return self.refuse(cx, 403, d.reason, &d.message),
            }
        }
        self.body = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(body)
                .map_err(|e| Error::unparsable(format!("the request body is not JSON: {e}")))?
        };
        match backend {
            Backend::Chroma => self.chroma_request(cx),
            Backend::Qdrant => self.qdrant_request(cx),
        }
    }

    fn on_callout(&mut self, cx: &mut Cx<'_, Self>, result: CallOutResult) -> Result<Outcome> {
        let pending = std::mem::replace(&mut self.pending, Pending::None);
        let (status, body) = match result {
            CallOutResult::Response { status, body } => (status, body),
            CallOutResult::Failed => {
                return Err(Error::new(
                    ErrorKind::CallOut,
                    "the vector database lookup failed (timeout or connection error)",
                ));
            }
        };
        match pending {
            Pending::None => Ok(Outcome::Continue),
            Pending::Resolve => {
                if status == 404 {
                    return self.refuse(
                        cx,
                        404,
                        "unknown_collection",
                        "the collection does not exist",
                    );
                }
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let name = match (status, v.get("name").and_then(Value::as_str)) {
                    (200, Some(n)) => n.to_string(),
                    _ => {
                        return Err(Error::new(
                            ErrorKind::CallOut,
                            format!("the collection lookup answered {status}"),
                        ));
                    }
                };
                let (base, id) = match &self.route {
                    Some(Route::Record(t)) => (t.base(), t.collection.clone()),
                    Some(
                        Route::UpdateCollection { base, slot }
                        | Route::DeleteCollection { base, slot },
                    ) => (base.clone(), slot.clone()),
                    _ => return Ok(Outcome::Continue),
                };
                cx.shared
                    .remember(format!("{base}|{id}"), name, cx.host.now_nanos());
                // Go on with the name known (it is cached now).
                self.chroma_request(cx)
            }
            Pending::Ownership => {
                let Some(Route::Record(t)) = self.route.clone() else {
                    return Ok(Outcome::Continue);
                };
                let stored: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if status != 200 {
                    return Err(Error::new(
                        ErrorKind::Unparsable,
                        format!("the ownership lookup answered {status}"),
                    ));
                }
                let Some(acl) = self.acl.clone() else {
                    return Ok(Outcome::Continue);
                };
                match chroma::check_owned(t.op, &self.body, &stored, &acl) {
                    Ok(()) => {
                        self.note(cx);
                        Ok(Outcome::Continue)
                    }
                    Err(r) if r.reason == "lookup_failed" => {
                        Err(Error::new(ErrorKind::Unparsable, r.message))
                    }
                    Err(r) => self.refuse(cx, 403, r.reason, &r.message),
                }
            }
        }
    }

    fn response_plan(&mut self, cx: &mut Cx<'_, Self>, _streaming: bool) -> ResponsePlan {
        // Every answer the filter reads may still be replaced (re-checked, or refused when a
        // collection fetched by id turns out not to be covered): its headers wait.
        if !cx.response_ok() || self.answer == Answer::Pass {
            return ResponsePlan::Skip;
        }
        ResponsePlan::Buffer { hold_headers: true }
    }

    fn on_response_body(&mut self, cx: &mut Cx<'_, Self>, body: &[u8]) -> Result<Outcome> {
        let mut v: Value = serde_json::from_slice(body)
            .map_err(|e| Error::unparsable(format!("the answer is not JSON: {e}")))?;
        let answer = std::mem::replace(&mut self.answer, Answer::Pass);
        let removed = match &answer {
            Answer::Pass => return Ok(Outcome::Continue),
            Answer::Chroma { op, strip } => {
                let acl = self.acl.clone().unwrap_or_default();
                chroma::check_response(*op, &mut v, &acl, *strip).map_err(Error::unparsable)?
            }
            Answer::Qdrant { op, rewritten } => {
                let acl = self.acl.clone().unwrap_or_default();
                qdrant::check_response(*op, &mut v, &acl, rewritten).map_err(Error::unparsable)?
            }
            Answer::Collections => {
                let compiled = cx.settings();
                let n = chroma::filter_collections(&mut v, |name| compiled.covers(name))
                    .map_err(Error::unparsable)?;
                cx.info
                    .record
                    .extra
                    .insert("collections_hidden".into(), json!(n));
                return Ok(Outcome::Replace(serde_json::to_vec(&v).unwrap_or_default()));
            }
            Answer::LearnId { key_base } => {
                let name = v
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                if let Some(refusal) = self.enter(cx, name.clone()) {
                    return refusal;
                }
                if let Some(id) = v.get("id").and_then(Value::as_str) {
                    cx.shared
                        .remember(format!("{key_base}|{id}"), name, cx.host.now_nanos());
                }
                return Ok(Outcome::Continue);
            }
        };
        cx.info
            .record
            .extra
            .insert("results_removed".into(), json!(removed));
        if removed > 0 {
            self.count(cx, "results_removed", removed as u64);
            cx.info.record.decide(Decision::Modify, "leak_prevented");
        }
        Ok(Outcome::Replace(serde_json::to_vec(&v).unwrap_or_default()))
    }

    fn reply_body(info: &RequestInfo<Compiled>, reply: &LocalReply) -> Option<Vec<u8>> {
        let v = match info.policy.settings.settings.backend {
            Backend::Chroma => json!({
                "error": match reply.status {
                    400 | 413 | 415 => "InvalidArgumentError",
                    401 => "AuthError",
                    403 => "Forbidden",
                    404 => "NotFoundError",
                    _ => "InternalError",
                },
                "message": reply.message,
                "code": reply.reason,
                "request_id": info.request_id,
            }),
            Backend::Qdrant => json!({
                "status": { "error": reply.message },
                "time": 0.0,
                "code": reply.reason,
                "request_id": info.request_id,
            }),
        };
        serde_json::to_vec(&v).ok()
    }
}
