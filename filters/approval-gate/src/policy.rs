//! Rules over tool calls: tool name globs, argument predicates, caller claims → an outcome.
//!
//! ```json
//! {
//!   "rules": [
//!     { "id": "big-payments", "tools": ["payments.*", "transfer_*"],
//!       "when": [ { "pointer": "/amount", "op": "gt", "value": 1000 },
//!                 { "pointer": "/currency", "op": "in", "value": ["EUR", "USD"] } ],
//!       "outcome": "require_approval" },
//!     { "id": "no-deletes-for-interns", "tools": ["delete_*"],
//!       "claims": { "role": ["intern"] }, "outcome": "deny" }
//!   ],
//!   "default": "allow"
//! }
//! ```

use guard_core::config::claim_at;
use guard_core::error::{Error, Result};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// What happens to a matching tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    #[default]
    Allow,
    Deny,
    RequireApproval,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::RequireApproval => "require_approval",
        }
    }
}

/// A comparison of the value at a JSON pointer in the arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    NotIn,
    /// A string matching a (linear-time) regular expression.
    Matches,
    /// The pointer resolves (`value`: true) or not (`false`).
    Exists,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredicateDef {
    pub pointer: String,
    pub op: Op,
    #[serde(default)]
    pub value: Value,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    pub id: String,
    /// Tool name globs (`*` any run, `?` one char); empty: every tool.
    #[serde(default)]
    pub tools: Vec<String>,
    /// All must hold.
    #[serde(default)]
    pub when: Vec<PredicateDef>,
    /// Claim path (dot-separated) → accepted values; all must hold (a list claim holds when
    /// one of its items is accepted).
    #[serde(default)]
    pub claims: BTreeMap<String, Vec<Value>>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub rules: Vec<RuleDef>,
    /// Outcome when no rule matches.
    pub default: Outcome,
}

#[derive(Debug)]
enum Check {
    Cmp(Op, Value),
    Pattern(regex::Regex),
    Exists(bool),
}

#[derive(Debug)]
struct Predicate {
    pointer: String,
    check: Check,
}

#[derive(Debug)]
struct Rule {
    id: String,
    tools: Vec<String>,
    when: Vec<Predicate>,
    claims: BTreeMap<String, Vec<Value>>,
    outcome: Outcome,
}

/// The compiled rules.
#[derive(Debug)]
pub struct Policy {
    rules: Vec<Rule>,
    default: Outcome,
}

/// The outcome for one tool call and the rule that gave it (`None`: the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub rule: Option<String>,
}

/// Most bytes of a pattern; patterns compile to linear-time automata, bounded in size.
const MAX_PATTERN: usize = 1024;

/// Compile rules; errors name the JSON path under `path`.
pub fn compile(settings: Settings, path: &str) -> Result<Policy> {
    let mut rules = Vec::with_capacity(settings.rules.len());
    for (i, r) in settings.rules.into_iter().enumerate() {
        let base = format!("{path}/rules/{i}");
        if r.id.is_empty() {
            return Err(Error::config(format!("{base}/id: empty rule id")));
        }
        for (j, t) in r.tools.iter().enumerate() {
            if t.is_empty() {
                return Err(Error::config(format!("{base}/tools/{j}: empty glob")));
            }
        }
        let mut when = Vec::with_capacity(r.when.len());
        for (j, p) in r.when.into_iter().enumerate() {
            let at = format!("{base}/when/{j}");
            if !(p.pointer.is_empty() || p.pointer.starts_with('/')) {
                return Err(Error::config(format!(
                    "{at}/pointer: {:?} is not a JSON pointer",
                    p.pointer
                )));
            }
            let check = match p.op {
                Op::Matches => {
                    let Some(src) = p.value.as_str().filter(|s| s.len() <= MAX_PATTERN) else {
                        return Err(Error::config(format!(
                            "{at}/value: a pattern string of at most {MAX_PATTERN} bytes"
                        )));
                    };
                    let re = regex::RegexBuilder::new(src)
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|e| Error::config(format!("{at}/value: {e}")))?;
                    Check::Pattern(re)
                }
                Op::Exists => match p.value {
                    Value::Bool(b) => Check::Exists(b),
                    Value::Null => Check::Exists(true),
                    _ => return Err(Error::config(format!("{at}/value: true or false"))),
                },
                Op::In | Op::NotIn if !p.value.is_array() => {
                    return Err(Error::config(format!("{at}/value: a list")));
                }
                Op::Gt | Op::Gte | Op::Lt | Op::Lte if !p.value.is_number() => {
                    return Err(Error::config(format!("{at}/value: a number")));
                }
                op => Check::Cmp(op, p.value),
            };
            when.push(Predicate {
                pointer: p.pointer,
                check,
            });
        }
        for claim in r.claims.keys() {
            if claim.is_empty() || claim.split('.').any(str::is_empty) {
                return Err(Error::config(format!(
                    "{base}/claims/{claim}: not a claim path"
                )));
            }
        }
        rules.push(Rule {
            id: r.id,
            tools: r.tools,
            when,
            claims: r.claims,
            outcome: r.outcome,
        });
    }
    Ok(Policy {
        rules,
        default: settings.default,
    })
}

/// `*` matches any run, `?` one char; iterative with one backtrack point (linear in practice,
/// `O(n·m)` worst case on short names).
pub fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut i, mut j) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        match p.get(i) {
            Some('*') => {
                star = Some((i, j));
                i += 1;
            }
            Some(&c) if c == '?' || Some(&c) == n.get(j) => {
                i += 1;
                j += 1;
            }
            _ => match star {
                Some((si, sj)) => {
                    i = si + 1;
                    j = sj + 1;
                    star = Some((si, sj + 1));
                }
                None => return false,
            },
        }
    }
    p.get(i..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

impl Predicate {
    fn holds(&self, args: &Value) -> bool {
        let got = args.pointer(&self.pointer);
        match &self.check {
            Check::Exists(want) => got.is_some() == *want,
            Check::Pattern(re) => got.and_then(Value::as_str).is_some_and(|s| re.is_match(s)),
            Check::Cmp(op, want) => {
                let Some(got) = got else {
                    // A missing value fails every comparison but `ne` and `not_in`.
                    return matches!(op, Op::Ne | Op::NotIn);
                };
                let list = || want.as_array().map(Vec::as_slice).unwrap_or_default();
                match op {
                    Op::Eq => same(got, want),
                    Op::Ne => !same(got, want),
                    Op::In => list().iter().any(|w| same(got, w)),
                    Op::NotIn => !list().iter().any(|w| same(got, w)),
                    Op::Gt | Op::Gte | Op::Lt | Op::Lte => match (num(got), num(want)) {
                        (Some(x), Some(y)) => match op {
                            Op::Gt => x > y,
                            Op::Gte => x >= y,
                            Op::Lt => x < y,
                            _ => x <= y,
                        },
                        // A string amount ("1500") is still an amount: compare it as one.
                        _ => match (
                            got.as_str().and_then(|s| s.trim().parse::<f64>().ok()),
                            num(want),
                        ) {
                            (Some(x), Some(y)) if x.is_finite() => match op {
                                Op::Gt => x > y,
                                Op::Gte => x >= y,
                                Op::Lt => x < y,
                                _ => x <= y,
                            },
                            _ => false,
                        },
                    },
                    Op::Matches | Op::Exists => false,
                }
            }
        }
    }
}

impl Policy {
    /// Whether some call of `tool` could be denied or need approval (a rule that is not
    /// `allow` names it, or a non-allow default): an answer that can only call tools for which
    /// this is false needs no hold.
    pub fn could_gate(&self, tool: &str) -> bool {
        self.default != Outcome::Allow
            || self.rules.iter().any(|r| {
                r.outcome != Outcome::Allow
                    && (r.tools.is_empty() || r.tools.iter().any(|g| glob(g, tool)))
            })
    }

    /// The outcome for a call of `tool` with `args` by a caller with `claims`: the first rule
    /// whose tools, predicates and claims all match, else the default.
    pub fn evaluate(&self, tool: &str, args: &Value, claims: &Value) -> Verdict {
        for r in &self.rules {
            if !r.tools.is_empty() && !r.tools.iter().any(|g| glob(g, tool)) {
                continue;
            }
            if !r.when.iter().all(|p| p.holds(args)) {
                continue;
            }
            let claims_ok = r
                .claims
                .iter()
                .all(|(path, accepted)| match claim_at(claims, path) {
                    Some(Value::Array(items)) => {
                        items.iter().any(|i| accepted.iter().any(|a| same(i, a)))
                    }
                    Some(v) => accepted.iter().any(|a| same(v, a)),
                    None => false,
                });
            if !claims_ok {
                continue;
            }
            return Verdict {
                outcome: r.outcome,
                rule: Some(r.id.clone()),
            };
        }
        Verdict {
            outcome: self.default,
            rule: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn policy(v: Value) -> Policy {
        compile(serde_json::from_value(v).unwrap(), "/p").unwrap()
    }

    #[test]
    fn globs() {
        for (p, n, want) in [
            ("payments.*", "payments.send", true),
            ("payments.*", "payments", false),
            ("transfer_*", "transfer_funds", true),
            ("*", "", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*_record*", "get_medical_records", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("exact", "exactly", false),
        ] {
            assert_eq!(glob(p, n), want, "{p} {n}");
        }
    }

    #[test]
    fn first_matching_rule_decides() {
        let p = policy(json!({
            "rules": [
                {"id": "interns", "tools": ["delete_*"], "claims": {"role": ["intern"]}, "outcome": "deny"},
                {"id": "big", "tools": ["pay*"], "when": [
                    {"pointer": "/amount", "op": "gt", "value": 1000},
                    {"pointer": "/currency", "op": "in", "value": ["EUR", "USD"]}
                ], "outcome": "require_approval"},
                {"id": "iban", "tools": ["pay*"], "when": [{"pointer": "/to/iban", "op": "matches", "value": "^(?i)ru"}], "outcome": "deny"},
                {"id": "medical", "tools": ["*medical*"], "outcome": "require_approval"}
            ],
            "default": "allow"
        }));
        let cases = [
            (
                "pay",
                json!({"amount": 1500, "currency": "EUR"}),
                json!({}),
                Outcome::RequireApproval,
                Some("big"),
            ),
            (
                "pay",
                json!({"amount": "1500.50", "currency": "USD"}),
                json!({}),
                Outcome::RequireApproval,
                Some("big"),
            ),
            (
                "pay",
                json!({"amount": 1000, "currency": "EUR"}),
                json!({}),
                Outcome::Allow,
                None,
            ),
            (
                "pay",
                json!({"amount": 5000, "currency": "GBP"}),
                json!({}),
                Outcome::Allow,
                None,
            ),
            (
                "pay",
                json!({"currency": "EUR"}),
                json!({}),
                Outcome::Allow,
                None,
            ),
            (
                "pay",
                json!({"amount": 5, "to": {"iban": "RU12"}}),
                json!({}),
                Outcome::Deny,
                Some("iban"),
            ),
            (
                "delete_user",
                json!({}),
                json!({"role": ["staff", "intern"]}),
                Outcome::Deny,
                Some("interns"),
            ),
            (
                "delete_user",
                json!({}),
                json!({"role": "staff"}),
                Outcome::Allow,
                None,
            ),
            (
                "get_medical_record",
                json!({"id": 1}),
                json!({}),
                Outcome::RequireApproval,
                Some("medical"),
            ),
        ];
        for (tool, args, claims, want, rule) in cases {
            let v = p.evaluate(tool, &args, &claims);
            assert_eq!(
                (v.outcome, v.rule.as_deref()),
                (want, rule),
                "{tool} {args} {claims}"
            );
        }
    }

    #[test]
    fn which_tools_could_be_gated() {
        let p = policy(json!({"rules": [
            {"id": "a", "tools": ["pay*"], "outcome": "require_approval"},
            {"id": "b", "tools": ["get_*"], "outcome": "allow"}
        ]}));
        assert!(p.could_gate("payments") && !p.could_gate("get_weather") && !p.could_gate("x"));
        let p = policy(
            json!({"rules": [{"id": "a", "outcome": "deny", "when": [{"pointer": "/x", "op": "exists"}]}]}),
        );
        assert!(p.could_gate("anything"));
        let p = policy(json!({"default": "require_approval"}));
        assert!(p.could_gate("x"));
    }

    #[test]
    fn predicates_on_missing_values() {
        let p = policy(json!({"rules": [
            {"id": "ne", "when": [{"pointer": "/x", "op": "ne", "value": 1}], "outcome": "deny"}
        ]}));
        assert_eq!(
            p.evaluate("t", &json!({}), &json!({})).outcome,
            Outcome::Deny
        );
        assert_eq!(
            p.evaluate("t", &json!({"x": 1.0}), &json!({})).outcome,
            Outcome::Allow
        );
        let p = policy(json!({"rules": [
            {"id": "e", "when": [{"pointer": "/x", "op": "exists", "value": false}], "outcome": "deny"}
        ]}));
        assert_eq!(
            p.evaluate("t", &json!({"y": 1}), &json!({})).outcome,
            Outcome::Deny
        );
        assert_eq!(
            p.evaluate("t", &json!({"x": null}), &json!({})).outcome,
            Outcome::Allow
        );
    }

    #[test]
    fn bad_rules_name_the_path() {
        for (rules, want) in [
            (json!([{"id": "", "outcome": "deny"}]), "/p/rules/0/id"),
            (
                json!([{"id": "a", "when": [{"pointer": "amount", "op": "gt", "value": 1}], "outcome": "deny"}]),
                "/p/rules/0/when/0/pointer",
            ),
            (
                json!([{"id": "a", "when": [{"pointer": "/a", "op": "gt", "value": "1"}], "outcome": "deny"}]),
                "/p/rules/0/when/0/value",
            ),
            (
                json!([{"id": "a", "when": [{"pointer": "/a", "op": "in", "value": 1}], "outcome": "deny"}]),
                "/p/rules/0/when/0/value",
            ),
            (
                json!([{"id": "a", "when": [{"pointer": "/a", "op": "matches", "value": "("}], "outcome": "deny"}]),
                "/p/rules/0/when/0/value",
            ),
            (
                json!([{"id": "a", "claims": {"a..b": ["x"]}, "outcome": "deny"}]),
                "/p/rules/0/claims",
            ),
        ] {
            let s: Settings = serde_json::from_value(json!({"rules": rules})).unwrap();
            let err = compile(s, "/p").unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        assert!(serde_json::from_value::<Settings>(
            json!({"rules": [{"id": "a", "outcome": "maybe"}]})
        )
        .is_err());
    }
}
