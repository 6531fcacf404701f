//! Tamper-evident audit records: every VM (filter × worker) keeps a chain with an id (new at
//! each configuration load), and each record it writes carries the chain id, a sequence number
//! and an HMAC-SHA256 over its content and the previous record's MAC (key from the VM
//! environment, never from plugin config). Access-log lines land in completion order, so
//! [`verify_log`] regroups records by chain and sequence and finds an edited, dropped or
//! reordered record.
//!
//! Record layout: the record's own JSON object with `"chain"` and `"seq"` appended, then
//! `"mac"` appended last. The MAC covers the exact bytes up to (not including) `,"mac":"`, plus
//! the closing brace, so no canonical form is needed:
//!
//! ```
//! # fn main() -> Result<(), std::string::FromUtf8Error> {
//! use guard_core::audit::{verify_log, Chain};
//! let key = b"0123456789abcdef0123456789abcdef".to_vec();
//! let mut chain = Chain::new("c1".into(), Some(key.clone()));
//! let a = String::from_utf8(chain.seal(br#"{"filter":"pii_redact","decision":"allow"}"#))?;
//! let b = String::from_utf8(chain.seal(br#"{"filter":"pii_redact","decision":"block"}"#))?;
//! // Lines land in completion order: the verifier regroups by chain and sequence.
//! let log = format!(
//!     "{}\n{}\n",
//!     serde_json::json!({ "pii_redact": b }),
//!     serde_json::json!({ "pii_redact": a }),
//! );
//! let report = verify_log(&log, &key);
//! assert!(report.ok(), "{:?}", report.problems);
//! assert_eq!(report.records, 2);
//! # Ok(())
//! # }
//! ```

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::collections::BTreeMap;

/// Environment variable of the VM holding the audit HMAC key.
pub const KEY_ENV: &str = "GUARD_AUDIT_KEY";
/// Shortest accepted key.
pub const MIN_KEY_BYTES: usize = 16;

const MAC_FIELD: &str = ",\"mac\":\"";

/// One VM's chain.
#[derive(Debug, Clone)]
pub struct Chain {
    id: String,
    seq: u64,
    prev: String,
    key: Option<Vec<u8>>,
}

impl Chain {
    pub fn new(id: String, key: Option<Vec<u8>>) -> Self {
        Chain {
            id,
            seq: 0,
            prev: String::new(),
            key: key.filter(|k| k.len() >= MIN_KEY_BYTES),
        }
    }

    /// A chain keyed from the VM environment ([`KEY_ENV`]); unsigned without a key.
    pub fn from_env(id: String) -> Self {
        let key = std::env::var(KEY_ENV).ok().map(String::into_bytes);
        Chain::new(id, key)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn signed(&self) -> bool {
        self.key.is_some()
    }

    /// Append chain id, sequence number and (when keyed) the MAC to a record's JSON object.
    /// Anything that is not a JSON object is returned unchanged.
    pub fn seal(&mut self, record: &[u8]) -> Vec<u8> {
        let Some(body) = record.strip_suffix(b"}") else {
            return record.to_vec();
        };
        if !record.starts_with(b"{") {
            return record.to_vec();
        }
        self.seq = self.seq.saturating_add(1);
        let mut out = Vec::with_capacity(record.len() + 120);
        out.extend_from_slice(body);
        if body.len() > 1 {
            out.push(b',');
        }
        let id = serde_json::to_string(&self.id).unwrap_or_else(|_| "\"\"".into());
        out.extend_from_slice(format!("\"chain\":{id},\"seq\":{}", self.seq).as_bytes());
        if let Some(key) = &self.key {
            let mut content = out.clone();
            content.push(b'}');
            let mac = mac(key, &self.prev, &content);
            out.extend_from_slice(MAC_FIELD.as_bytes());
            out.extend_from_slice(mac.as_bytes());
            out.push(b'"');
            self.prev = mac;
        }
        out.push(b'}');
        out
    }
}

/// HMAC-SHA256 over the previous MAC (hex, empty for the first record), a newline and the
/// record's content; hex.
pub fn mac(key: &[u8], prev: &str, content: &[u8]) -> String {
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    m.update(prev.as_bytes());
    m.update(b"\n");
    m.update(content);
    crate::config::hex_prefix(&m.finalize().into_bytes(), 32)
}

/// One record found in a log.
#[derive(Debug, Clone)]
struct Found {
    line: usize,
    field: String,
    seq: u64,
    content: Vec<u8>,
    mac: Option<String>,
}

/// What [`verify_log`] found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Records with a chain.
    pub records: usize,
    /// Chains, with their number of records.
    pub chains: BTreeMap<String, usize>,
    /// Everything wrong, one line each (line numbers are 1-based).
    pub problems: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.records > 0
    }
}

/// Verify an access log (JSON lines; every string field holding a JSON object with `chain` and
/// `seq` is a record). Each chain must run 1, 2, 3, ... without gaps or repeats, and every MAC
/// must match its content and its predecessor.
pub fn verify_log(text: &str, key: &[u8]) -> Report {
    let mut report = Report::default();
    let mut chains: BTreeMap<String, Vec<Found>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(line) else {
            report.problems.push(format!("line {n}: not a JSON object"));
            continue;
        };
        for (field, v) in &fields {
            let Some(s) = v.as_str() else { continue };
            if !s.starts_with('{') {
                continue;
            }
            let (content, mac) = match s.rfind(MAC_FIELD) {
                Some(at) if s.ends_with("\"}") => {
                    let mac = s
                        .get(at + MAC_FIELD.len()..s.len().saturating_sub(2))
                        .unwrap_or_default();
                    let mut c = s.get(..at).unwrap_or_default().as_bytes().to_vec();
                    c.push(b'}');
                    (c, Some(mac.to_string()))
                }
                _ => (s.as_bytes().to_vec(), None),
            };
            let Ok(rec) = serde_json::from_slice::<Value>(&content) else {
                report
                    .problems
                    .push(format!("line {n}: field {field}: the record is not JSON"));
                continue;
            };
            let (Some(chain), Some(seq)) = (
                rec.get("chain").and_then(Value::as_str),
                rec.get("seq").and_then(Value::as_u64),
            ) else {
                continue;
            };
            chains.entry(chain.to_string()).or_default().push(Found {
                line: n,
                field: field.clone(),
                seq,
                content,
                mac,
            });
        }
    }
    for (chain, mut recs) in chains {
        recs.sort_by_key(|r| r.seq);
        report.records += recs.len();
        report.chains.insert(chain.clone(), recs.len());
        let mut prev = String::new();
        let mut expect = 1u64;
        for r in &recs {
            let at = format!("line {} ({}), chain {chain} seq {}", r.line, r.field, r.seq);
            if r.seq < expect {
                report
                    .problems
                    .push(format!("{at}: sequence number repeated"));
            } else if r.seq > expect {
                report.problems.push(format!(
                    "{at}: records {expect}..{} of the chain are missing",
                    r.seq - 1
                ));
            }
            expect = r.seq.saturating_add(1);
            match &r.mac {
                None => report.problems.push(format!(
                    "{at}: unsigned record (no GUARD_AUDIT_KEY in the VM)"
                )),
                Some(m) => {
                    let want = mac(key, &prev, &r.content);
                    if *m != want {
                        report.problems.push(format!(
                            "{at}: MAC does not match (record edited, reordered, or another key)"
                        ));
                    }
                    prev = m.clone();
                }
            }
        }
    }
    if report.records == 0 {
        report
            .problems
            .push("no chained audit records found".to_string());
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn log_of(records: &[Vec<u8>]) -> Vec<String> {
        records
            .iter()
            .map(|r| {
                serde_json::json!({"status": "200", "pii_redact": String::from_utf8(r.clone()).unwrap()})
                    .to_string()
            })
            .collect()
    }

    fn chain_records(id: &str, n: usize) -> Vec<Vec<u8>> {
        let mut c = Chain::new(id.into(), Some(KEY.to_vec()));
        (0..n)
            .map(|i| {
                c.seal(
                    format!("{{\"filter\":\"pii_redact\",\"decision\":\"allow\",\"i\":{i}}}")
                        .as_bytes(),
                )
            })
            .collect()
    }

    #[test]
    fn interleaved_chains_in_completion_order_verify() {
        let mut lines = log_of(&chain_records("a", 3));
        lines.extend(log_of(&chain_records("b", 2)));
        lines.swap(0, 4);
        lines.swap(1, 2);
        let r = verify_log(&lines.join("\n"), KEY);
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!(r.records, 5);
        assert_eq!(r.chains.len(), 2);
    }

    #[test]
    fn edits_drops_and_wrong_keys_are_found() {
        let lines = log_of(&chain_records("a", 4));
        // Edited decision.
        let mut edited = lines.clone();
        edited[1] = edited[1].replace("allow", "block");
        let r = verify_log(&edited.join("\n"), KEY);
        assert!(!r.ok());
        assert!(
            r.problems.iter().any(|p| p.contains("MAC does not match")),
            "{:?}",
            r.problems
        );
        // Dropped line.
        let mut dropped = lines.clone();
        dropped.remove(2);
        let r = verify_log(&dropped.join("\n"), KEY);
        assert!(
            r.problems.iter().any(|p| p.contains("missing")),
            "{:?}",
            r.problems
        );
        // Wrong key.
        let r = verify_log(&lines.join("\n"), b"another key of sixteen+ bytes");
        assert!(!r.ok());
        // Unsigned records.
        let mut c = Chain::new("u".into(), None);
        let unsigned = log_of(&[c.seal(b"{\"filter\":\"x\"}")]);
        let r = verify_log(&unsigned.join("\n"), KEY);
        assert!(
            r.problems.iter().any(|p| p.contains("unsigned")),
            "{:?}",
            r.problems
        );
        // Nothing to verify is not a pass.
        assert!(!verify_log("{\"status\":\"200\"}\n", KEY).ok());
    }

    #[test]
    fn seal_keeps_the_record_json() {
        let mut c = Chain::new("c".into(), Some(KEY.to_vec()));
        let v: Value = serde_json::from_slice(&c.seal(b"{}")).unwrap();
        assert_eq!(v["chain"], "c");
        assert_eq!(v["seq"], 1);
        assert_eq!(v["mac"].as_str().unwrap().len(), 64);
        assert_eq!(c.seal(b"not json"), b"not json");
    }
}
