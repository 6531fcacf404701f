//! The approval digest: SHA-256 over a canonical encoding of what was approved.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Canonical JSON: object keys sorted (by their UTF-8 bytes), no insignificant whitespace,
/// numbers as serde_json writes them, strings with serde_json's escaping. Two argument objects
/// that differ only in key order or spacing get the same encoding.
pub fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                if let Some(x) = m.get(*k) {
                    canonical(x, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The digest (lower-case hex) of a tool call for an approval: tool name, canonical arguments,
/// caller and conversation, each length-prefixed so no field can run into the next.
pub fn approval_digest(tool: &str, args: &Value, caller: &str, conversation: &str) -> String {
    let mut canon = String::new();
    canonical(args, &mut canon);
    let mut h = Sha256::new();
    for part in [tool, canon.as_str(), caller, conversation] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_and_spacing_do_not_matter() {
        let a: Value =
            serde_json::from_str(r#"{"amount": 1500, "to": {"iban": "DE89", "name": "x"}}"#)
                .unwrap();
        let b: Value =
            serde_json::from_str(r#"{"to":{"name":"x","iban":"DE89"},"amount":1500}"#).unwrap();
        assert_eq!(
            approval_digest("pay", &a, "alice", "c1"),
            approval_digest("pay", &b, "alice", "c1")
        );
        let mut s = String::new();
        canonical(&a, &mut s);
        assert_eq!(s, r#"{"amount":1500,"to":{"iban":"DE89","name":"x"}}"#);
    }

    #[test]
    fn every_bound_field_changes_the_digest() {
        let args = json!({"amount": 1500, "currency": "EUR"});
        let base = approval_digest("pay", &args, "alice", "c1");
        for other in [
            approval_digest(
                "pay",
                &json!({"amount": 1501, "currency": "EUR"}),
                "alice",
                "c1",
            ),
            approval_digest(
                "pay",
                &json!({"amount": 1500, "currency": "USD"}),
                "alice",
                "c1",
            ),
            approval_digest(
                "pay",
                &json!({"amount": 1500, "currency": "EUR", "x": null}),
                "alice",
                "c1",
            ),
            approval_digest("refund", &args, "alice", "c1"),
            approval_digest("pay", &args, "bob", "c1"),
            approval_digest("pay", &args, "alice", "c2"),
            // Length prefixes: moving a character between fields is a different digest.
            approval_digest("pa", &args, "yalice", "c1"),
        ] {
            assert_ne!(base, other);
        }
        assert_eq!(base.len(), 64);
    }
}
