//! The native JSON Schema engine: compile once under limits, validate many times.
//!
//! Built on the `jsonschema` crate with `format` asserted, a linear-time `pattern` engine (the
//! `regex` crate) and a retriever that never does I/O: a remote `$ref` resolves only from the
//! documents preloaded into [`Remotes`].

use guard_core::error::Error;
use jsonschema::{PatternOptions, Retrieve, Uri};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

/// Size limits applied before a schema is compiled and before an instance is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest schema, in bytes of its compact JSON serialization (default 256 KiB).
    pub max_schema_bytes: usize,
    /// Deepest nesting of arrays and objects in a schema (default 64).
    pub max_schema_depth: usize,
    /// Largest instance, in bytes of its compact JSON serialization (default 1 MiB).
    pub max_instance_bytes: usize,
    /// Most violations reported for one instance (default 8).
    pub max_errors: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_schema_bytes: 256 * 1024,
            max_schema_depth: 64,
            max_instance_bytes: 1024 * 1024,
            max_errors: 8,
        }
    }
}

/// Which JSON Schema dialect a schema is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// From the schema's `$schema`, else draft 2020-12.
    #[default]
    Auto,
    Draft7,
    Draft202012,
}

/// Documents a remote `$ref` may resolve to, by absolute URI (without fragment). Nothing else
/// is ever fetched.
#[derive(Debug, Clone, Default)]
pub struct Remotes {
    docs: Arc<HashMap<String, Value>>,
}

impl Remotes {
    pub fn new(docs: HashMap<String, Value>) -> Self {
        Remotes {
            docs: Arc::new(docs),
        }
    }
    pub fn len(&self) -> usize {
        self.docs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }
}

impl Retrieve for Remotes {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let key = uri.as_str();
        let key = key.split_once('#').map_or(key, |(k, _)| k);
        match self.docs.get(key) {
            Some(doc) => Ok(doc.clone()),
            None => Err(format!("remote reference {key:?} is not preloaded").into()),
        }
    }
}

/// One reason an instance does not validate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON Pointer into the instance ("" for the instance itself).
    pub path: String,
    pub message: String,
}

/// Longest message kept in a [`Violation`], in bytes (the rest is cut at a char boundary).
const MAX_MESSAGE_BYTES: usize = 256;

/// A schema compiled once, validated against many instances.
pub struct CompiledSchema {
    validator: jsonschema::Validator,
    limits: Limits,
}

impl std::fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledSchema")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl CompiledSchema {
    /// Compile `schema` (dialect from its `$schema`, else 2020-12) after checking its size and
    /// depth. An invalid schema, an unresolvable `$ref` or a limit gives a config error.
    pub fn compile(schema: &Value, limits: Limits, remotes: &Remotes) -> Result<Self, Error> {
        Self::compile_as(schema, Dialect::Auto, limits, remotes)
    }

    /// [`CompiledSchema::compile`] with the dialect chosen by the caller.
    pub fn compile_as(
        schema: &Value,
        dialect: Dialect,
        limits: Limits,
        remotes: &Remotes,
    ) -> Result<Self, Error> {
        check_schema_limits(schema, &limits)?;
        let mut options = jsonschema::options()
            .should_validate_formats(true)
            .with_pattern_options(PatternOptions::regex())
            .with_retriever(remotes.clone());
        options = match dialect {
            Dialect::Auto => options,
            Dialect::Draft7 => options.with_draft(jsonschema::Draft::Draft7),
            Dialect::Draft202012 => options.with_draft(jsonschema::Draft::Draft202012),
        };
        let validator = options.build(schema).map_err(|e| {
            Error::config(format!("invalid schema: {}", first_line(&e.to_string())))
        })?;
        Ok(CompiledSchema { validator, limits })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether `instance` validates (no error detail; the fast path).
    pub fn is_valid(&self, instance: &Value) -> bool {
        instance_size_ok(instance, self.limits.max_instance_bytes)
            && self.validator.is_valid(instance)
    }

    /// The violations of `instance`, at most `max_errors`; empty when it validates. An instance
    /// over the size limit gets one violation at the root.
    pub fn validate(&self, instance: &Value) -> Vec<Violation> {
        if !instance_size_ok(instance, self.limits.max_instance_bytes) {
            return vec![Violation {
                path: String::new(),
                message: format!(
                    "instance is larger than the limit of {} bytes",
                    self.limits.max_instance_bytes
                ),
            }];
        }
        if self.validator.is_valid(instance) {
            return Vec::new();
        }
        self.validator
            .iter_errors(instance)
            .take(self.limits.max_errors)
            .map(|e| Violation {
                path: e.instance_path().as_str().to_string(),
                message: truncate(e.to_string(), MAX_MESSAGE_BYTES),
            })
            .collect()
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Counts the bytes written to it and stops with an error past `limit`.
struct Counter {
    n: usize,
    limit: usize,
}

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.n = self.n.saturating_add(buf.len());
        if self.n > self.limit {
            return Err(std::io::Error::other("over the limit"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether the compact serialization of `v` fits in `limit` bytes (stops counting past it).
fn serialized_fits(v: &Value, limit: usize) -> bool {
    serde_json::to_writer(&mut Counter { n: 0, limit }, v).is_ok()
}

fn instance_size_ok(instance: &Value, limit: usize) -> bool {
    serialized_fits(instance, limit)
}

/// The nesting depth of `v` (a scalar is 0, `{}` and `[]` are 1), walked without recursion;
/// stops early once past `limit`.
fn depth_exceeds(v: &Value, limit: usize) -> bool {
    let mut stack: Vec<(&Value, usize)> = vec![(v, 0)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        let d = d + 1;
        if d > limit {
            return true;
        }
        stack.extend(children.map(|c| (c, d)));
    }
    false
}

/// Depth first: serializing (to count bytes) recurses, the depth walk does not.
fn check_schema_limits(schema: &Value, limits: &Limits) -> Result<(), Error> {
    if depth_exceeds(schema, limits.max_schema_depth) {
        return Err(Error::config(format!(
            "schema is nested deeper than the limit of {}",
            limits.max_schema_depth
        )));
    }
    if !serialized_fits(schema, limits.max_schema_bytes) {
        return Err(Error::config(format!(
            "schema is larger than the limit of {} bytes",
            limits.max_schema_bytes
        )));
    }
    Ok(())
}

/// SHA-256 of the canonical form of `v`: compact JSON with object keys sorted, so that two
/// schemas that differ only in key order or whitespace share a hash. Walked without recursion.
pub fn canonical_hash(v: &Value) -> [u8; 32] {
    enum Tok<'a> {
        Val(&'a Value),
        Raw(&'static [u8]),
        Key(&'a str),
    }
    let mut h = Sha256::new();
    let mut stack = vec![Tok::Val(v)];
    while let Some(t) = stack.pop() {
        match t {
            Tok::Raw(b) => h.update(b),
            Tok::Key(k) => h.update(Value::from(k).to_string().as_bytes()),
            Tok::Val(Value::Array(a)) => {
                h.update(b"[");
                stack.push(Tok::Raw(b"]"));
                for (i, item) in a.iter().enumerate().rev() {
                    stack.push(Tok::Val(item));
                    if i > 0 {
                        stack.push(Tok::Raw(b","));
                    }
                }
            }
            Tok::Val(Value::Object(o)) => {
                h.update(b"{");
                stack.push(Tok::Raw(b"}"));
                let mut entries: Vec<(&String, &Value)> = o.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                for (i, (k, item)) in entries.into_iter().enumerate().rev() {
                    stack.push(Tok::Val(item));
                    stack.push(Tok::Raw(b":"));
                    stack.push(Tok::Key(k));
                    if i > 0 {
                        stack.push(Tok::Raw(b","));
                    }
                }
            }
            Tok::Val(scalar) => h.update(scalar.to_string().as_bytes()),
        }
    }
    h.finalize().into()
}

/// A small LRU of compiled request-declared schemas, keyed by [`canonical_hash`].
#[derive(Debug)]
pub struct SchemaCache {
    capacity: usize,
    limits: Limits,
    remotes: Remotes,
    /// Most recently used last.
    entries: Vec<([u8; 32], Rc<CompiledSchema>)>,
}

impl SchemaCache {
    /// Default number of entries.
    pub const DEFAULT_CAPACITY: usize = 32;

    pub fn new(capacity: usize, limits: Limits, remotes: Remotes) -> Self {
        SchemaCache {
            capacity,
            limits,
            remotes,
            entries: Vec::with_capacity(capacity),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The compiled form of `schema`, compiled (and cached) on a miss. Limits are checked
    /// before hashing, so a hostile schema costs one bounded walk.
    pub fn get_or_compile(&mut self, schema: &Value) -> Result<Rc<CompiledSchema>, Error> {
        check_schema_limits(schema, &self.limits)?;
        let key = canonical_hash(schema);
        if let Some(i) = self.entries.iter().position(|(k, _)| *k == key) {
            let entry = self.entries.remove(i);
            let compiled = Rc::clone(&entry.1);
            self.entries.push(entry);
            return Ok(compiled);
        }
        let compiled = Rc::new(CompiledSchema::compile(schema, self.limits, &self.remotes)?);
        if self.capacity == 0 {
            return Ok(compiled);
        }
        if self.entries.len() >= self.capacity {
            self.entries.remove(0);
        }
        self.entries.push((key, Rc::clone(&compiled)));
        Ok(compiled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(schema: Value) -> Result<CompiledSchema, Error> {
        CompiledSchema::compile(&schema, Limits::default(), &Remotes::default())
    }

    #[test]
    fn table() {
        let person = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer", "minimum": 0},
                "email": {"type": "string", "format": "email"},
                "id": {"type": "string", "format": "uuid"},
                "at": {"type": "string", "format": "date-time"},
                "site": {"type": "string", "format": "uri"},
                "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$"}
            },
            "required": ["name"],
            "additionalProperties": false
        });
        let cases: &[(&str, Value, &[&str])] = &[
            ("valid", json!({"name": "a", "age": 3}), &[]),
            ("missing required", json!({"age": 3}), &[""]),
            ("bad type", json!({"name": "a", "age": "x"}), &["/age"]),
            ("below minimum", json!({"name": "a", "age": -1}), &["/age"]),
            ("extra property", json!({"name": "a", "x": 1}), &[""]),
            (
                "email",
                json!({"name": "a", "email": "not-an-email"}),
                &["/email"],
            ),
            ("uuid", json!({"name": "a", "id": "1234"}), &["/id"]),
            (
                "date-time",
                json!({"name": "a", "at": "yesterday"}),
                &["/at"],
            ),
            ("uri", json!({"name": "a", "site": "no scheme"}), &["/site"]),
            ("pattern", json!({"name": "a", "code": "ab-1"}), &["/code"]),
            (
                "good formats",
                json!({"name": "a", "email": "a@b.example", "id": "123e4567-e89b-12d3-a456-426614174000",
                       "at": "2024-01-02T03:04:05Z", "site": "https://x.example/p", "code": "ABC-12"}),
                &[],
            ),
        ];
        let s = compile(person).unwrap();
        for (name, instance, want) in cases {
            let got: Vec<String> = s.validate(instance).into_iter().map(|v| v.path).collect();
            assert_eq!(got, *want, "{name}");
            assert_eq!(s.is_valid(instance), want.is_empty(), "{name}");
        }
    }

    #[test]
    fn bad_schemas_are_config_errors() {
        let cases = [
            ("bad type", json!({"type": "strin"}), "invalid schema"),
            ("bad minimum", json!({"minimum": "0"}), "invalid schema"),
            (
                "remote ref not preloaded",
                json!({"$ref": "https://example.com/s.json"}),
                "invalid schema",
            ),
            ("bad pattern", json!({"pattern": "(a"}), "invalid schema"),
            (
                "look-around needs backtracking",
                json!({"pattern": "(?=a)"}),
                "invalid schema",
            ),
        ];
        for (name, schema, want) in cases {
            let e = compile(schema).unwrap_err();
            assert_eq!(e.kind(), guard_core::error::ErrorKind::Config, "{name}");
            assert!(e.message().contains(want), "{name}: {}", e.message());
        }
    }

    #[test]
    fn remotes_resolve_from_the_preloaded_map_only() {
        let mut docs = HashMap::new();
        docs.insert(
            "http://localhost:1234/int.json".to_string(),
            json!({"type": "integer"}),
        );
        let remotes = Remotes::new(docs);
        let s = CompiledSchema::compile(
            &json!({"properties": {"n": {"$ref": "http://localhost:1234/int.json"}}}),
            Limits::default(),
            &remotes,
        )
        .unwrap();
        assert!(s.is_valid(&json!({"n": 1})));
        assert_eq!(s.validate(&json!({"n": "x"}))[0].path, "/n");
    }

    #[test]
    fn limits_zero_exact_and_one_over() {
        let schema = json!({"type": "string"});
        let size = schema.to_string().len();
        let with = |l: Limits| CompiledSchema::compile(&schema, l, &Remotes::default());
        let l = Limits::default();
        assert!(with(Limits {
            max_schema_bytes: size,
            ..l
        })
        .is_ok());
        let e = with(Limits {
            max_schema_bytes: size - 1,
            ..l
        })
        .unwrap_err();
        assert!(
            e.message().contains("larger than the limit"),
            "{}",
            e.message()
        );
        assert!(with(Limits {
            max_schema_bytes: 0,
            ..l
        })
        .is_err());

        // depth: {"items": {"items": {}}} is 3 deep.
        let nested = json!({"items": {"items": {}}});
        let d = |n| {
            CompiledSchema::compile(
                &nested,
                Limits {
                    max_schema_depth: n,
                    ..l
                },
                &Remotes::default(),
            )
        };
        assert!(d(3).is_ok());
        assert!(d(2).unwrap_err().message().contains("nested deeper"));
        assert!(d(0).is_err());

        let instance = json!("abc");
        let n = instance.to_string().len();
        let s = with(Limits {
            max_instance_bytes: n,
            ..l
        })
        .unwrap();
        assert!(s.validate(&instance).is_empty());
        let s = with(Limits {
            max_instance_bytes: n - 1,
            ..l
        })
        .unwrap();
        let v = s.validate(&instance);
        assert_eq!(v.len(), 1);
        assert!(v[0].message.contains("larger than the limit"));
        assert!(!s.is_valid(&instance));
    }

    #[test]
    fn deep_schema_is_rejected_without_recursion() {
        let mut v = json!({});
        for _ in 0..20_000 {
            let mut m = serde_json::Map::new();
            m.insert("not".to_string(), v);
            v = Value::Object(m);
        }
        let e = CompiledSchema::compile(&v, Limits::default(), &Remotes::default()).unwrap_err();
        assert!(e.message().contains("nested deeper"));
        // serde_json drops nested values recursively; leak to keep the test from overflowing.
        std::mem::forget(v);
    }

    #[test]
    fn max_errors_caps_the_report() {
        let s = compile(json!({"items": {"type": "integer"}})).unwrap();
        let v = s.validate(&Value::from(vec!["a"; 20]));
        assert_eq!(v.len(), Limits::default().max_errors);
        assert_eq!(v[0].path, "/0");
    }

    #[test]
    fn hash_ignores_key_order() {
        let a: Value =
            serde_json::from_str(r#"{"type":"object","properties":{"a":{},"b":[1,"x"]}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{ "properties": {"b": [1, "x"], "a": {}}, "type": "object" }"#)
                .unwrap();
        let c = json!({"type": "object", "properties": {"a": {}, "b": [1, "y"]}});
        assert_eq!(canonical_hash(&a), canonical_hash(&b));
        assert_ne!(canonical_hash(&a), canonical_hash(&c));
        assert_ne!(
            canonical_hash(&json!(["a,b"])),
            canonical_hash(&json!(["a", "b"]))
        );
    }

    #[test]
    fn cache_is_a_bounded_lru() {
        let mut c = SchemaCache::new(2, Limits::default(), Remotes::default());
        let s = |n: u64| json!({"maximum": n});
        let a = c.get_or_compile(&s(1)).unwrap();
        c.get_or_compile(&s(2)).unwrap();
        assert!(Rc::ptr_eq(&a, &c.get_or_compile(&s(1)).unwrap()));
        c.get_or_compile(&s(3)).unwrap(); // evicts 2, the least recently used
        assert_eq!(c.len(), 2);
        assert!(Rc::ptr_eq(&a, &c.get_or_compile(&s(1)).unwrap()));
        assert!(c.get_or_compile(&json!({"type": 1})).is_err());
        assert_eq!(c.len(), 2);
    }
}
