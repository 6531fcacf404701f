//! Config helpers shared by every filter: the common shape of a filter's plugin configuration,
//! parsed once, validated with errors that name the JSON path, and compiled into an immutable
//! [`FilterConfig`] that every stream shares.
//!
//! ```json
//! {
//!   "name": "default",
//!   "apis": { "paths": { "/llm/chat": "openai_chat" }, "sniff_body": true },
//!   "identity": { "header": "x-guard-identity" },
//!   "route_policies": { "chat_strict": "strict" },
//!   "route_metadata_namespace": "llm_guard",
//!   "policies": {
//!     "default": { "failure_policy": "fail_open" },
//!     "strict":  { "failure_policy": "fail_closed", "max_request_body_bytes": 65536 }
//!   }
//! }
//! ```
//!
//! A policy holds the common fields ([`CommonPolicy`]) plus the filter's own settings, side by
//! side in one object; unknown fields anywhere are rejected. The policy of a request is chosen
//! by the route's metadata (`filter_metadata.<route_metadata_namespace>.policy`), then by the
//! route name (`route_policies`), then `default`.

use crate::api::ApiShape;
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::rc::Rc;

/// What a filter does when it cannot do its job: an internal error, a body over its limit, a
/// body it cannot parse, a compressed body, a call-out that timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Refuse the request (or replace the answer) with a provider-shaped error.
    FailClosed,
    /// Let the traffic pass unscanned, and record `skipped` with the reason.
    FailOpen,
}

impl FailurePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::FailClosed => "fail_closed",
            FailurePolicy::FailOpen => "fail_open",
        }
    }
}

/// Largest body limit a config may set (Envoy's own buffer limit must sit above it).
pub const MAX_BODY_LIMIT: u64 = 256 * 1024 * 1024;
/// Default request body limit: below Envoy's default 1 MiB connection buffer limit.
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 1_000_000;
/// Default limit for a buffered (non-streamed) response body.
pub const DEFAULT_MAX_RESPONSE_BODY_BYTES: u64 = 1_000_000;
/// Default limit for one SSE event.
pub const DEFAULT_MAX_SSE_EVENT_BYTES: u64 = 256 * 1024;

/// The fields every filter's policy has, whatever the filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommonPolicy {
    /// Outcome of internal errors, oversize, unparsable and compressed bodies.
    pub failure_policy: Option<FailurePolicy>,
    /// Largest request body the filter buffers and scans.
    pub max_request_body_bytes: u64,
    /// Largest non-streamed response body the filter buffers and scans.
    pub max_response_body_bytes: u64,
    /// Largest single server-sent event in a streamed answer.
    pub max_sse_event_bytes: u64,
    /// Remove `accept-encoding` from requests so that answers come back uncompressed.
    pub request_identity_encoding: bool,
    /// Put the bodies this filter judged (request, answer; size-capped) into its audit record,
    /// encrypted under the VM's `GUARD_CAPTURE_KEY`, for `guardctl replay`.
    pub capture: bool,
    /// Most bytes of each body captured.
    pub capture_max_bytes: u64,
    /// What the client gets when the upstream fails before answering or a guard flags the
    /// answer (docs/fallback.md).
    pub fallback: Fallback,
}

impl Default for CommonPolicy {
    fn default() -> Self {
        CommonPolicy {
            failure_policy: None,
            max_request_body_bytes: DEFAULT_MAX_REQUEST_BODY_BYTES,
            max_response_body_bytes: DEFAULT_MAX_RESPONSE_BODY_BYTES,
            max_sse_event_bytes: DEFAULT_MAX_SSE_EVENT_BYTES,
            request_identity_encoding: true,
            capture: false,
            capture_max_bytes: DEFAULT_CAPTURE_MAX_BYTES,
            fallback: Fallback::default(),
        }
    }
}

/// Default cap on each captured body.
pub const DEFAULT_CAPTURE_MAX_BYTES: u64 = 64 * 1024;

const COMMON_FIELDS: [&str; 8] = [
    "failure_policy",
    "max_request_body_bytes",
    "max_response_body_bytes",
    "max_sse_event_bytes",
    "request_identity_encoding",
    "capture",
    "capture_max_bytes",
    "fallback",
];

/// What the client gets instead of a failed or refused answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackAction {
    /// A provider-shaped error (status, stable reason code, `x-guard-reason`).
    Error,
    /// The configured `safe_answer` text as a normal answer in the request's API shape
    /// (streamed when the request streams), status 200, `x-guard-fallback: safe_answer`.
    SafeAnswer,
    /// An item in the review queue of the approval service, and a "a person will follow up"
    /// answer naming it; `safe_answer` (else `error`) when the service does not answer.
    Escalate,
}

impl FallbackAction {
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackAction::Error => "error",
            FallbackAction::SafeAnswer => "safe_answer",
            FallbackAction::Escalate => "escalate",
        }
    }
}

/// Longest `safe_answer` / escalation message, in bytes.
pub const MAX_FALLBACK_TEXT: usize = 16 * 1024;
/// Default deadline of the escalation call-out.
pub const DEFAULT_ESCALATE_TIMEOUT_MS: u64 = 2000;
/// The placeholder of the escalation message replaced by the review id.
pub const REVIEW_ID_PLACEHOLDER: &str = "{review_id}";

/// The `fallback` policy field (common to every filter; docs/fallback.md):
///
/// ```json
/// "fallback": {
///   "on_upstream_failure": "safe_answer",
///   "on_flagged_answer": "escalate",
///   "safe_answer": "I can't answer that right now.",
///   "escalate": { "cluster": "approvals", "timeout_ms": 2000 }
/// }
/// ```
///
/// `on_upstream_failure` unset: the filter leaves upstream failures alone (only one filter of a
/// chain should act on them: the outermost, llm-telemetry). `on_flagged_answer` applies to the
/// answers this filter itself refuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fallback {
    /// The upstream failed before its response headers: a 5xx answer, a reset, a timeout
    /// (Envoy's own 503/504 local reply included).
    pub on_upstream_failure: Option<FallbackAction>,
    /// This filter refused the answer (default `error`: today's provider-shaped error).
    pub on_flagged_answer: FallbackAction,
    /// The deterministic answer text of `safe_answer` (and of a failed escalation).
    pub safe_answer: Option<String>,
    /// Where escalations go.
    pub escalate: Option<Escalate>,
}

impl Default for Fallback {
    fn default() -> Self {
        Fallback {
            on_upstream_failure: None,
            on_flagged_answer: FallbackAction::Error,
            safe_answer: None,
            escalate: None,
        }
    }
}

/// The review queue an escalation goes to (the approval service's `POST /v1/reviews`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalate {
    /// The Envoy cluster of the approval service.
    pub cluster: String,
    /// `:authority` of the call (default: the cluster name).
    #[serde(default)]
    pub authority: Option<String>,
    /// Path of the review queue.
    #[serde(default = "default_review_path")]
    pub path: String,
    /// Deadline of the call-out, 1..=60000 ms.
    #[serde(default = "default_escalate_timeout")]
    pub timeout_ms: u64,
    /// The answer the client gets; `{review_id}` is replaced by the review's id.
    #[serde(default = "default_escalate_message")]
    pub message: String,
    /// VM environment variable holding the approval service's client token (sent as
    /// `x-approval-client-token`; a secret, so never in the plugin configuration).
    #[serde(default = "default_client_token_env")]
    pub client_token_env: String,
}

fn default_review_path() -> String {
    "/v1/reviews".to_string()
}
fn default_escalate_timeout() -> u64 {
    DEFAULT_ESCALATE_TIMEOUT_MS
}
/// The default escalation answer.
pub const DEFAULT_ESCALATE_MESSAGE: &str = "I can't give you an answer right now. A person will \
    review your request and follow up (review {review_id}).";
fn default_escalate_message() -> String {
    DEFAULT_ESCALATE_MESSAGE.to_string()
}
fn default_client_token_env() -> String {
    "GUARD_APPROVAL_CLIENT_TOKEN".to_string()
}

impl Fallback {
    /// Whether anything but the default (errors for flagged answers, upstream failures left
    /// alone) is configured: only then does the driver read the request's `stream` and `model`.
    pub fn active(&self) -> bool {
        self.on_upstream_failure.is_some() || self.on_flagged_answer != FallbackAction::Error
    }

    /// Whether an escalation may happen (the driver then keeps a request excerpt).
    pub fn escalates(&self) -> bool {
        self.on_upstream_failure == Some(FallbackAction::Escalate)
            || self.on_flagged_answer == FallbackAction::Escalate
    }

    /// Check the cross-field rules; `base` is the JSON path of the policy.
    pub fn validate(&self, base: &str) -> Result<()> {
        let at = format!("{base}/fallback");
        for (field, action) in [
            ("on_upstream_failure", self.on_upstream_failure),
            ("on_flagged_answer", Some(self.on_flagged_answer)),
        ] {
            match action {
                Some(FallbackAction::SafeAnswer) if self.safe_answer.is_none() => {
                    return Err(Error::config(format!(
                        "{at}/{field}: safe_answer needs {at}/safe_answer (the answer text)"
                    )));
                }
                Some(FallbackAction::Escalate) if self.escalate.is_none() => {
                    return Err(Error::config(format!(
                        "{at}/{field}: escalate needs {at}/escalate (the review queue's cluster)"
                    )));
                }
                _ => {}
            }
        }
        if let Some(text) = &self.safe_answer {
            check_text(&format!("{at}/safe_answer"), text)?;
        }
        if let Some(e) = &self.escalate {
            let at = format!("{at}/escalate");
            if e.cluster.is_empty() {
                return Err(Error::config(format!("{at}/cluster: must not be empty")));
            }
            if !(1..=60_000).contains(&e.timeout_ms) {
                return Err(Error::config(format!(
                    "{at}/timeout_ms: {} is not within 1..=60000",
                    e.timeout_ms
                )));
            }
            if !e.path.starts_with('/') {
                return Err(Error::config(format!(
                    "{at}/path: {:?} does not start with '/'",
                    e.path
                )));
            }
            check_text(&format!("{at}/message"), &e.message)?;
        }
        Ok(())
    }
}

fn check_text(at: &str, text: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(Error::config(format!("{at}: must not be empty")));
    }
    if text.len() > MAX_FALLBACK_TEXT {
        return Err(Error::config(format!(
            "{at}: {} bytes is above the maximum {MAX_FALLBACK_TEXT}",
            text.len()
        )));
    }
    Ok(())
}

/// How API shapes are recognised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Exact paths (without query) mapped to an API shape; checked before the providers' paths.
    pub paths: BTreeMap<String, ApiShape>,
    /// Recognise the providers' own paths (`…/chat/completions`, `…/responses`, `…/messages`).
    pub provider_paths: bool,
    /// When the path says nothing, guess the shape from a JSON body.
    pub sniff_body: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            paths: BTreeMap::new(),
            provider_paths: true,
            sniff_body: true,
        }
    }
}

impl ApiConfig {
    /// The shape a path maps to, if the path alone decides it.
    pub fn shape_for_path(&self, path: &str) -> Option<ApiShape> {
        let bare = crate::api::strip_query(path);
        if let Some(shape) = self.paths.get(bare) {
            return Some(*shape);
        }
        if self.provider_paths {
            return ApiShape::from_default_path(bare);
        }
        None
    }
}

/// Where the caller's identity comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// A request header set by a trusted filter earlier in the chain (e.g. `jwt_authn`'s
    /// `claim_to_headers`, or an ext_authz filter).
    pub header: Option<String>,
    /// A request header carrying the verified claims, set by a trusted filter earlier in the
    /// chain: JSON, or base64url JSON as `jwt_authn`'s `forward_payload_header` writes it. The
    /// chain must drop client copies of it first (Envoy's `header_mutation` filter).
    pub claims_header: Option<String>,
    /// Claims that Envoy's `jwt_authn` filter wrote into dynamic metadata.
    pub jwt: Option<JwtIdentity>,
}

/// A claim by dot-separated path (`org.tenant`) in a JWT payload.
pub fn claim_at<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(claims, |cur, part| cur.get(part))
}

/// Claims from a claims header value: a JSON object, or base64url (padded or not) of one.
pub fn decode_claims(value: &[u8]) -> Option<Value> {
    use base64::Engine as _;
    let text = std::str::from_utf8(value).ok()?.trim();
    let json = if text.starts_with('{') {
        text.as_bytes().to_vec()
    } else {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .ok()?
    };
    serde_json::from_slice::<Value>(&json)
        .ok()
        .filter(Value::is_object)
}

/// Identity from `jwt_authn` dynamic metadata (`payload_in_metadata`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtIdentity {
    /// Dynamic-metadata namespace; `envoy.filters.http.jwt_authn` by default.
    #[serde(default = "default_jwt_namespace")]
    pub namespace: String,
    /// The `payload_in_metadata` key of the provider.
    pub payload_key: String,
    /// Claim that names the caller.
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
}

fn default_jwt_namespace() -> String {
    "envoy.filters.http.jwt_authn".to_string()
}
fn default_subject_claim() -> String {
    "sub".to_string()
}

/// A compiled policy: common fields plus the filter's compiled settings.
#[derive(Debug)]
pub struct Policy<C> {
    pub name: String,
    pub common: CommonPolicy,
    pub failure_policy: FailurePolicy,
    pub settings: C,
}

/// The compiled, immutable configuration of one filter, shared by every stream.
#[derive(Debug)]
pub struct FilterConfig<C> {
    /// Name of the policy set (audit records carry it).
    pub name: String,
    /// Hash of the configuration bytes: the policy version in audit records.
    pub version: String,
    pub apis: ApiConfig,
    pub identity: IdentityConfig,
    pub route_metadata_namespace: Option<String>,
    route_policies: BTreeMap<String, usize>,
    policies: Vec<Rc<Policy<C>>>,
    default: Rc<Policy<C>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    apis: ApiConfig,
    #[serde(default)]
    identity: IdentityConfig,
    #[serde(default)]
    route_policies: BTreeMap<String, String>,
    #[serde(default)]
    route_metadata_namespace: Option<String>,
    #[serde(default)]
    policies: BTreeMap<String, Value>,
}

/// Deserialize `value` into `T`, turning an error into one that names the JSON path (prefixed
/// with `base`) and what was wrong.
pub fn from_value_at<T: DeserializeOwned>(value: Value, base: &str) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path = base.to_string();
        for seg in e.path().iter() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => path.push_str(&format!("/{index}")),
                serde_path_to_error::Segment::Map { key } => {
                    path.push('/');
                    path.push_str(&key.replace('~', "~0").replace('/', "~1"));
                }
                serde_path_to_error::Segment::Enum { .. }
                | serde_path_to_error::Segment::Unknown => {}
            }
        }
        if path.is_empty() {
            path.push('/');
        }
        Error::config(format!("{path}: {}", e.into_inner()))
    })
}

impl<C> FilterConfig<C> {
    /// Parse and compile a plugin configuration. `compile` turns the filter-specific settings
    /// (already deserialized with unknown fields rejected) into the compiled form; it gets the
    /// JSON path of the policy for its error messages. `default_failure` is the filter's default
    /// failure policy (fail_closed for security filters).
    pub fn parse<S, F>(bytes: &[u8], default_failure: FailurePolicy, mut compile: F) -> Result<Self>
    where
        S: DeserializeOwned,
        F: FnMut(S, &str) -> Result<C>,
    {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| Error::config("/: configuration is not valid utf-8"))?;
        let root: Value = if text.trim().is_empty() {
            Value::Object(Map::new())
        } else {
            serde_json::from_str(text)
                .map_err(|e| Error::config(format!("/: configuration is not valid json: {e}")))?
        };
        if !root.is_object() {
            return Err(Error::config("/: configuration must be a json object"));
        }
        let raw: RawConfig = from_value_at(root, "")?;
        for (field, h) in [
            ("header", &raw.identity.header),
            ("claims_header", &raw.identity.claims_header),
        ] {
            let Some(h) = h else { continue };
            if h.is_empty()
                || h.bytes()
                    .any(|b| b.is_ascii_uppercase() || b == b':' || b <= b' ')
            {
                return Err(Error::config(format!(
                    "/identity/{field}: {h:?} is not a lower-case http header name"
                )));
            }
        }
        let mut policies: Vec<Rc<Policy<C>>> = Vec::new();
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        let mut raw_policies = raw.policies;
        if !raw_policies.contains_key("default") {
            raw_policies.insert("default".to_string(), Value::Object(Map::new()));
        }
        for (name, value) in raw_policies {
            let base = format!("/policies/{name}");
            let Value::Object(mut fields) = value else {
                return Err(Error::config(format!(
                    "{base}: a policy must be a json object"
                )));
            };
            let mut common_fields = Map::new();
            for key in COMMON_FIELDS {
                if let Some(v) = fields.remove(key) {
                    common_fields.insert(key.to_string(), v);
                }
            }
            let common: CommonPolicy = from_value_at(Value::Object(common_fields), &base)?;
            for (field, value) in [
                ("max_request_body_bytes", common.max_request_body_bytes),
                ("max_response_body_bytes", common.max_response_body_bytes),
                ("max_sse_event_bytes", common.max_sse_event_bytes),
            ] {
                if value > MAX_BODY_LIMIT {
                    return Err(Error::config(format!(
                        "{base}/{field}: {value} is above the maximum {MAX_BODY_LIMIT}"
                    )));
                }
            }
            common.fallback.validate(&base)?;
            let settings: S = from_value_at(Value::Object(fields), &base)?;
            let settings = compile(settings, &base)?;
            names.insert(name.clone(), policies.len());
            policies.push(Rc::new(Policy {
                failure_policy: common.failure_policy.unwrap_or(default_failure),
                name,
                common,
                settings,
            }));
        }
        let mut route_policies = BTreeMap::new();
        for (route, policy) in raw.route_policies {
            let Some(idx) = names.get(&policy) else {
                return Err(Error::config(format!(
                    "/route_policies/{route}: policy {policy:?} is not defined in /policies"
                )));
            };
            route_policies.insert(route, *idx);
        }
        let default = names
            .get("default")
            .and_then(|i| policies.get(*i))
            .cloned()
            .ok_or_else(|| Error::config("/policies/default: missing"))?;
        Ok(FilterConfig {
            name: raw.name.unwrap_or_else(|| "default".to_string()),
            version: config_version(bytes),
            apis: raw.apis,
            identity: raw.identity,
            route_metadata_namespace: raw.route_metadata_namespace,
            route_policies,
            policies,
            default,
        })
    }

    /// The policy for a request: route metadata first, then the route name, then `default`.
    /// A metadata value that names no policy falls back the same way (and is reported by lint).
    pub fn select(&self, metadata_policy: Option<&str>, route_name: Option<&str>) -> Rc<Policy<C>> {
        let by_meta = metadata_policy.and_then(|m| self.policies.iter().find(|p| p.name == m));
        let by_route = route_name
            .and_then(|r| self.route_policies.get(r))
            .and_then(|i| self.policies.get(*i));
        Rc::clone(by_meta.or(by_route).unwrap_or(&self.default))
    }

    pub fn policy_names(&self) -> impl Iterator<Item = &str> {
        self.policies.iter().map(|p| p.name.as_str())
    }
}

/// Short, stable version string of a configuration: the first 16 hex digits of its SHA-256.
pub fn config_version(bytes: &[u8]) -> String {
    hex_prefix(&Sha256::digest(bytes), 8)
}

/// Lower-case hex of the first `n` bytes.
pub fn hex_prefix(bytes: &[u8], n: usize) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(n * 2);
    for b in bytes.iter().take(n) {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Settings {
        threshold: f64,
    }

    fn parse(json: &str) -> Result<FilterConfig<Settings>> {
        FilterConfig::parse(
            json.as_bytes(),
            FailurePolicy::FailClosed,
            |s: Settings, base: &str| {
                if !(0.0..=1.0).contains(&s.threshold) {
                    return Err(Error::config(format!(
                        "{base}/threshold: {} is not in [0, 1]",
                        s.threshold
                    )));
                }
                Ok(s)
            },
        )
    }

    #[test]
    fn good_and_bad_configs() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("empty", "", None),
            ("empty object", "{}", None),
            (
                "full",
                r#"{"name":"p","apis":{"paths":{"/x":"openai_chat"}},"identity":{"header":"x-user"},
                "route_policies":{"r1":"strict"},"route_metadata_namespace":"llm_guard",
                "policies":{"default":{"threshold":0.5},"strict":{"failure_policy":"fail_open","max_request_body_bytes":0,"threshold":0.9}}}"#,
                None,
            ),
            ("not json", "{", Some("/: configuration is not valid json")),
            (
                "array",
                "[]",
                Some("/: configuration must be a json object"),
            ),
            (
                "unknown top field",
                r#"{"nmae":"x"}"#,
                Some("unknown field `nmae`"),
            ),
            (
                "unknown policy field",
                r#"{"policies":{"default":{"treshold":1}}}"#,
                Some("/policies/default/treshold: unknown field `treshold`"),
            ),
            (
                "bad failure policy",
                r#"{"policies":{"default":{"failure_policy":"maybe"}}}"#,
                Some("/policies/default/failure_policy: unknown variant `maybe`"),
            ),
            (
                "bad limit type",
                r#"{"policies":{"default":{"max_request_body_bytes":-1}}}"#,
                Some("/policies/default/max_request_body_bytes: invalid value"),
            ),
            (
                "limit too big",
                r#"{"policies":{"default":{"max_request_body_bytes":999999999999}}}"#,
                Some("/policies/default/max_request_body_bytes: 999999999999 is above"),
            ),
            (
                "filter validation",
                r#"{"policies":{"default":{"threshold":3}}}"#,
                Some("/policies/default/threshold: 3 is not in [0, 1]"),
            ),
            (
                "dangling route policy",
                r#"{"route_policies":{"r":"nope"}}"#,
                Some("/route_policies/r: policy \"nope\" is not defined"),
            ),
            (
                "bad api shape",
                r#"{"apis":{"paths":{"/x":"openai"}}}"#,
                Some("/apis/paths/~1x: unknown variant `openai`"),
            ),
            (
                "bad header",
                r#"{"identity":{"header":"X-User"}}"#,
                Some("/identity/header: \"X-User\" is not a lower-case"),
            ),
            (
                "policy not object",
                r#"{"policies":{"default":3}}"#,
                Some("/policies/default: a policy must be a json object"),
            ),
            (
                "fallback",
                r#"{"policies":{"default":{"fallback":{"on_upstream_failure":"escalate","on_flagged_answer":"safe_answer","safe_answer":"Sorry.","escalate":{"cluster":"approvals","timeout_ms":500,"message":"See {review_id}."}}}}}"#,
                None,
            ),
            (
                "fallback errors only",
                r#"{"policies":{"default":{"fallback":{"on_upstream_failure":"error"}}}}"#,
                None,
            ),
            (
                "fallback unknown field",
                r#"{"policies":{"default":{"fallback":{"on_upstream":"error"}}}}"#,
                Some("/policies/default/fallback/on_upstream: unknown field"),
            ),
            (
                "fallback bad action",
                r#"{"policies":{"default":{"fallback":{"on_flagged_answer":"retry"}}}}"#,
                Some("/policies/default/fallback/on_flagged_answer: unknown variant `retry`"),
            ),
            (
                "safe answer without text",
                r#"{"policies":{"default":{"fallback":{"on_upstream_failure":"safe_answer"}}}}"#,
                Some("/policies/default/fallback/on_upstream_failure: safe_answer needs /policies/default/fallback/safe_answer"),
            ),
            (
                "escalate without queue",
                r#"{"policies":{"default":{"fallback":{"on_flagged_answer":"escalate"}}}}"#,
                Some("/policies/default/fallback/on_flagged_answer: escalate needs /policies/default/fallback/escalate"),
            ),
            (
                "empty safe answer",
                r#"{"policies":{"default":{"fallback":{"safe_answer":"  "}}}}"#,
                Some("/policies/default/fallback/safe_answer: must not be empty"),
            ),
            (
                "escalate timeout",
                r#"{"policies":{"default":{"fallback":{"escalate":{"cluster":"a","timeout_ms":0}}}}}"#,
                Some("/policies/default/fallback/escalate/timeout_ms: 0 is not within 1..=60000"),
            ),
            (
                "escalate path",
                r#"{"policies":{"default":{"fallback":{"escalate":{"cluster":"a","path":"v1"}}}}}"#,
                Some("/policies/default/fallback/escalate/path: \"v1\" does not start with '/'"),
            ),
            (
                "escalate without cluster",
                r#"{"policies":{"default":{"fallback":{"escalate":{}}}}}"#,
                Some("/policies/default/fallback/escalate: missing field `cluster`"),
            ),
        ];
        for (name, json, want) in cases {
            match (parse(json), want) {
                (Ok(_), None) => {}
                (Err(e), Some(w)) => assert!(
                    e.message().contains(w),
                    "{name}: got {:?}, want {w:?}",
                    e.message()
                ),
                (Ok(_), Some(w)) => panic!("{name}: accepted, want error {w:?}"),
                (Err(e), None) => panic!("{name}: rejected: {e}"),
            }
        }
    }

    #[test]
    fn defaults_are_documented_values() {
        let c = parse("{}").unwrap();
        let p = c.select(None, None);
        assert_eq!(p.name, "default");
        assert_eq!(p.failure_policy, FailurePolicy::FailClosed);
        assert_eq!(
            p.common.max_request_body_bytes,
            DEFAULT_MAX_REQUEST_BODY_BYTES
        );
        assert_eq!(
            p.common.max_response_body_bytes,
            DEFAULT_MAX_RESPONSE_BODY_BYTES
        );
        assert_eq!(p.common.max_sse_event_bytes, DEFAULT_MAX_SSE_EVENT_BYTES);
        assert!(p.common.request_identity_encoding);
        assert_eq!(p.common.fallback, Fallback::default());
        assert_eq!(p.common.fallback.on_flagged_answer, FallbackAction::Error);
        assert_eq!(p.common.fallback.on_upstream_failure, None);
        assert!(!p.common.fallback.active());
        let e: Escalate = serde_json::from_str(r#"{"cluster":"c"}"#).unwrap();
        assert_eq!(e.path, "/v1/reviews");
        assert_eq!(e.timeout_ms, DEFAULT_ESCALATE_TIMEOUT_MS);
        assert_eq!(e.message, DEFAULT_ESCALATE_MESSAGE);
        assert!(e.message.contains(REVIEW_ID_PLACEHOLDER));
        assert_eq!(e.client_token_env, "GUARD_APPROVAL_CLIENT_TOKEN");
        assert!(c.apis.provider_paths && c.apis.sniff_body);
        assert_eq!(c.name, "default");
        assert_eq!(c.version.len(), 16);
    }

    #[test]
    fn policy_selection() {
        let c = parse(r#"{"route_policies":{"r1":"strict"},"policies":{"strict":{"failure_policy":"fail_open"},"other":{}}}"#).unwrap();
        assert_eq!(c.select(None, Some("r1")).name, "strict");
        assert_eq!(c.select(Some("other"), Some("r1")).name, "other");
        assert_eq!(c.select(Some("missing"), Some("r1")).name, "strict");
        assert_eq!(c.select(None, Some("r2")).name, "default");
        assert_eq!(
            c.select(None, Some("r1")).failure_policy,
            FailurePolicy::FailOpen
        );
    }

    #[test]
    fn api_paths() {
        let c = parse(r#"{"apis":{"paths":{"/llm":"anthropic_messages"},"provider_paths":false}}"#)
            .unwrap();
        assert_eq!(
            c.apis.shape_for_path("/llm?x=1"),
            Some(ApiShape::AnthropicMessages)
        );
        assert_eq!(c.apis.shape_for_path("/v1/chat/completions"), None);
    }

    #[test]
    fn claims_headers_decode_json_and_base64url() {
        let want = serde_json::json!({"sub": "alice", "tenant": "A"});
        assert_eq!(
            decode_claims(br#" {"sub":"alice","tenant":"A"} "#),
            Some(want.clone())
        );
        // jwt_authn's forward_payload_header: base64url without padding.
        assert_eq!(
            decode_claims(b"eyJzdWIiOiJhbGljZSIsInRlbmFudCI6IkEifQ"),
            Some(want.clone())
        );
        assert_eq!(
            decode_claims(b"eyJzdWIiOiJhbGljZSIsInRlbmFudCI6IkEifQ=="),
            Some(want)
        );
        for bad in [&b"alice"[..], b"[1]", b"e30", b"\xff", b""] {
            assert_eq!(
                decode_claims(bad).filter(|v| v.as_object().is_some_and(|m| !m.is_empty())),
                None
            );
        }
        assert!(parse(r#"{"identity":{"claims_header":"X-Bad"}}"#)
            .unwrap_err()
            .to_string()
            .contains("/identity/claims_header"));
    }
}
