//! schema-guard `engine::CompiledSchema`: an arbitrary schema compiled under the engine's
//! limits and an arbitrary instance validated against it.
//!
//! Input: header, then `schema JSON \0 instance JSON`.
//!
//! Invariants (the engine's contract):
//! - compiling never panics or hangs; a refusal is a config error;
//! - `is_valid(i)` == `validate(i).is_empty()`; at most `max_errors` violations; an instance
//!   over the size limit is one violation at the root; every violation's path points into the
//!   instance;
//! - `canonical_hash` ignores key order; the schema cache gives the same verdicts.
#![no_main]

use guard_core::ErrorKind;
use guard_fuzz::Headed;
use libfuzzer_sys::fuzz_target;
use schema_guard::engine::{canonical_hash, CompiledSchema, Dialect, Limits, Remotes, SchemaCache};
use serde_json::Value;

/// The same value with every object's keys in reverse order.
fn reversed(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().rev().map(|(k, x)| (k.clone(), reversed(x))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(reversed).collect()),
        other => other.clone(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(h) = Headed::split(data) else { return };
    let parts = guard_fuzz::parts(h.payload, 2);
    let Some(Ok(schema)) = parts.first().map(|s| serde_json::from_slice::<Value>(s)) else { return };
    let instance = parts
        .get(1)
        .and_then(|s| serde_json::from_slice::<Value>(s).ok())
        .unwrap_or(Value::Null);
    let limits = if h.flag(2) {
        Limits { max_schema_bytes: 4096, max_schema_depth: 8, max_instance_bytes: 1024, max_errors: 3 }
    } else {
        Limits::default()
    };
    let dialect = match h.ctl[1] % 3 {
        0 => Dialect::Auto,
        1 => Dialect::Draft7,
        _ => Dialect::Draft202012,
    };
    assert_eq!(canonical_hash(&schema), canonical_hash(&reversed(&schema)), "hash depends on key order");
    let compiled = match CompiledSchema::compile_as(&schema, dialect, limits, &Remotes::default()) {
        Ok(c) => c,
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Config, "{e}");
            return;
        }
    };
    let violations = compiled.validate(&instance);
    assert_eq!(compiled.is_valid(&instance), violations.is_empty(), "is_valid disagrees with validate");
    assert!(violations.len() <= limits.max_errors.max(1));
    for v in &violations {
        assert!(instance.pointer(&v.path).is_some(), "violation path {:?} is not in the instance", v.path);
    }
    let size = serde_json::to_vec(&instance).map(|b| b.len()).unwrap_or(0);
    if size > limits.max_instance_bytes {
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].path, "");
    }
    if dialect == Dialect::Auto {
        let mut cache = SchemaCache::new(2, limits, Remotes::default());
        for _ in 0..2 {
            let c = cache.get_or_compile(&schema).expect("compiled once, compiles again");
            assert_eq!(c.is_valid(&instance), violations.is_empty());
        }
        assert_eq!(cache.len(), 1);
    }
});
