//! approval-gate: policy evaluation of arbitrary tool calls, the tool-name globs, and the
//! approval digest.
//!
//! Input: header, then `policy JSON \0 tool name \0 arguments JSON \0 claims JSON`; a policy
//! that does not parse or compile is replaced by the shipped one
//! (`envoy/policies/approval-gate.json`).
//!
//! Invariants (the crate's contract):
//! - `glob` agrees with a reference matcher (`*` any run, `?` one char);
//! - a tool for which `could_gate` is false is always allowed; a verdict without a rule is the
//!   default; a verdict's rule is the first rule whose tools, predicates and claims hold;
//! - the canonical encoding is JSON that encodes to itself again and ignores key order, so
//!   the digest ignores key order and spacing.
#![no_main]

use approval_gate::digest::{approval_digest, canonical};
use approval_gate::policy::{compile, glob, Outcome, Policy, Settings};
use guard_fuzz::Headed;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const SHIPPED: &str = include_str!("../../envoy/policies/approval-gate.json");

fn shipped() -> Policy {
    let v: Value = serde_json::from_str(SHIPPED).expect("shipped policy is JSON");
    let p = &v["policies"]["default"];
    let s: Settings = serde_json::from_value(serde_json::json!({"rules": p["rules"], "default": p["default"]}))
        .expect("shipped rules deserialize");
    compile(s, "/policies/default").expect("shipped rules compile")
}

/// `*` any run, `?` one char, by dynamic programming over chars.
fn reference_glob(p: &str, n: &str) -> bool {
    let p: Vec<char> = p.chars().collect();
    let n: Vec<char> = n.chars().collect();
    let mut row = vec![false; n.len() + 1];
    row[0] = true;
    for &pc in &p {
        let mut next = vec![false; n.len() + 1];
        if pc == '*' {
            let mut any = false;
            for j in 0..=n.len() {
                any |= row[j];
                next[j] = any;
            }
        } else {
            for j in 1..=n.len() {
                next[j] = row[j - 1] && (pc == '?' || pc == n[j - 1]);
            }
        }
        row = next;
    }
    row[n.len()]
}

fn reversed(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().rev().map(|(k, x)| (k.clone(), reversed(x))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(reversed).collect()),
        other => other.clone(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(h) = Headed::split(data) else { return };
    let parts = guard_fuzz::parts(h.payload, 4);
    let part = |i: usize| parts.get(i).copied().unwrap_or_default();
    let settings: Option<Settings> = serde_json::from_slice(part(0)).ok();
    let (policy, rules) = match settings {
        Some(s) => {
            let rules: Vec<(String, Vec<String>)> =
                s.rules.iter().map(|r| (r.id.clone(), r.tools.clone())).collect();
            let default = s.default;
            match compile(s, "/p") {
                Ok(p) => (p, Some((rules, default))),
                Err(_) => (shipped(), None),
            }
        }
        None => (shipped(), None),
    };
    let tool = String::from_utf8_lossy(part(1));
    let args: Value = serde_json::from_slice(part(2)).unwrap_or(Value::Null);
    let claims: Value = serde_json::from_slice(part(3)).unwrap_or(Value::Null);

    // Globs against the reference (short names: the reference is quadratic).
    if tool.chars().count() <= 64 {
        if let Some((rules, _)) = &rules {
            for (_, tools) in rules {
                for g in tools.iter().filter(|g| g.chars().count() <= 64) {
                    assert_eq!(glob(g, &tool), reference_glob(g, &tool), "glob {g:?} on {tool:?}");
                }
            }
        }
        let pat = String::from_utf8_lossy(part(0));
        if pat.chars().count() <= 64 {
            assert_eq!(glob(&pat, &tool), reference_glob(&pat, &tool), "glob {pat:?} on {tool:?}");
        }
    }

    let v = policy.evaluate(&tool, &args, &claims);
    assert_eq!(v, policy.evaluate(&tool, &args, &claims));
    if !policy.could_gate(&tool) {
        assert_eq!(v.outcome, Outcome::Allow, "a tool that cannot be gated was not allowed");
    }
    if let Some((rules, default)) = &rules {
        match &v.rule {
            None => assert_eq!(v.outcome, *default),
            Some(id) => {
                let (_, tools) = rules.iter().find(|(r, _)| r == id).expect("verdict names a rule");
                assert!(tools.is_empty() || tools.iter().any(|g| glob(g, &tool)), "rule {id} does not name {tool:?}");
            }
        }
    }

    // The digest.
    let mut canon = String::new();
    canonical(&args, &mut canon);
    let back: Value = serde_json::from_str(&canon).expect("canonical encoding is not JSON");
    let mut again = String::new();
    canonical(&back, &mut again);
    assert_eq!(again, canon, "canonical encoding is not stable");
    let mut rev = String::new();
    canonical(&reversed(&args), &mut rev);
    assert_eq!(rev, canon, "canonical encoding depends on key order");
    let caller = String::from_utf8_lossy(part(3));
    assert_eq!(
        approval_digest(&tool, &args, &caller, "c1"),
        approval_digest(&tool, &reversed(&args), &caller, "c1")
    );
});
