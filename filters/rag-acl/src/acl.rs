//! The caller's access conditions on document metadata.

use serde_json::{json, Map, Value};

/// One condition a document's metadata must meet.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// `field` equals `value` (numbers compare by value: `2` = `2.0`).
    Equals { field: String, value: Value },
    /// `field` is a list holding at least one of `values` (e.g. `acl_groups` against the
    /// caller's groups). No values: nothing matches.
    AnyOf { field: String, values: Vec<Value> },
    /// `field` is a scalar equal to one of `values`. No values: nothing matches.
    In { field: String, values: Vec<Value> },
    /// `field` is a number at most `value` (clearance).
    AtMost { field: String, value: f64 },
}

/// All rules must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Acl {
    pub rules: Vec<Rule>,
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

impl Rule {
    /// The Chroma `where` term of this rule (positive operators only).
    fn chroma(&self) -> Value {
        match self {
            Rule::Equals { field, value } => json!({ field: { "$eq": value } }),
            // `$or: []` matches nothing in Chroma, as intended for a caller without values.
            Rule::AnyOf { field, values } => json!({
                "$or": values.iter().map(|v| json!({ field: { "$contains": v } })).collect::<Vec<_>>()
            }),
            Rule::In { field, values } if values.is_empty() => json!({ "$or": [] }),
            Rule::In { field, values } => json!({ field: { "$in": values } }),
            Rule::AtMost { field, value } => json!({ field: { "$lte": value } }),
        }
    }

    /// Whether `metadata` meets this rule, with Chroma's meaning.
    fn allows(&self, metadata: &Map<String, Value>) -> bool {
        match self {
            Rule::Equals { field, value } => metadata.get(field).is_some_and(|v| same(v, value)),
            Rule::AnyOf { field, values } => match metadata.get(field) {
                Some(Value::Array(items)) => items
                    .iter()
                    .any(|item| values.iter().any(|v| same(item, v))),
                _ => false,
            },
            Rule::In { field, values } => metadata
                .get(field)
                .is_some_and(|v| !v.is_array() && values.iter().any(|w| same(v, w))),
            Rule::AtMost { field, value } => metadata
                .get(field)
                .and_then(Value::as_f64)
                .is_some_and(|v| v <= *value),
        }
    }
}

impl Acl {
    /// The whole ACL as one Chroma `where`: `{"$and": [...]}` (an empty ACL: `{"$and": []}`,
    /// which matches everything).
    pub fn chroma_where(&self) -> Value {
        json!({ "$and": self.rules.iter().map(Rule::chroma).collect::<Vec<_>>() })
    }

    /// The whole ACL as one Qdrant filter (`{"must": [...]}`), or `None` when a rule can never
    /// match (a caller without groups): Qdrant treats an empty `any` or `should` as no
    /// constraint, so such a request must be answered empty or refused, not sent.
    pub fn qdrant_filter(&self) -> Option<Value> {
        let mut must = Vec::with_capacity(self.rules.len());
        for r in &self.rules {
            must.push(match r {
                Rule::Equals { field, value } => json!({"key": field, "match": {"value": value}}),
                Rule::AnyOf { field, values } | Rule::In { field, values } => {
                    if values.is_empty() {
                        return None;
                    }
                    json!({"key": field, "match": {"any": values}})
                }
                Rule::AtMost { field, value } => json!({"key": field, "range": {"lte": value}}),
            });
        }
        Some(json!({ "must": must }))
    }

    /// The metadata fields the rules read.
    pub fn fields(&self) -> Vec<&str> {
        self.rules
            .iter()
            .map(|r| match r {
                Rule::Equals { field, .. }
                | Rule::AnyOf { field, .. }
                | Rule::In { field, .. }
                | Rule::AtMost { field, .. } => field.as_str(),
            })
            .collect()
    }

    /// Whether a returned document's metadata meets every rule. No metadata (`null`) meets no
    /// rule, so with any rule it fails.
    pub fn allows(&self, metadata: Option<&Value>) -> bool {
        match metadata {
            Some(Value::Object(m)) => self.rules.iter().all(|r| r.allows(m)),
            _ => self.rules.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn acl() -> Acl {
        Acl {
            rules: vec![
                Rule::Equals {
                    field: "tenant".into(),
                    value: json!("A"),
                },
                Rule::AnyOf {
                    field: "acl_groups".into(),
                    values: vec![json!("finance"), json!("eng")],
                },
                Rule::AtMost {
                    field: "clearance".into(),
                    value: 2.0,
                },
            ],
        }
    }

    #[test]
    fn where_is_the_checked_shape() {
        // The filter verified against a real Chroma 1.5.9 (docs/rag-acl-facts.md §2.4).
        assert_eq!(
            acl().chroma_where(),
            json!({"$and":[{"tenant":{"$eq":"A"}},
                {"$or":[{"acl_groups":{"$contains":"finance"}},{"acl_groups":{"$contains":"eng"}}]},
                {"clearance":{"$lte":2.0}}]})
        );
    }

    #[test]
    fn local_check_means_what_chroma_means() {
        // The five records of the facts file: only a1 passes the ACL.
        let records = [
            (
                "a1",
                json!({"tenant":"A","acl_groups":["finance","eng"],"clearance":2}),
                true,
            ),
            (
                "a2",
                json!({"tenant":"A","acl_groups":["eng"],"clearance":5}),
                false,
            ),
            (
                "a3",
                json!({"tenant":"A","acl_groups":["hr"],"clearance":3}),
                false,
            ),
            (
                "b1",
                json!({"tenant":"B","acl_groups":["finance"],"clearance":1}),
                false,
            ),
            ("b2", json!({"tenant":"B","clearance":0}), false),
            (
                "scalar groups",
                json!({"tenant":"A","acl_groups":"finance","clearance":1}),
                false,
            ),
            (
                "float clearance",
                json!({"tenant":"A","acl_groups":["eng"],"clearance":2.0}),
                true,
            ),
            (
                "missing clearance",
                json!({"tenant":"A","acl_groups":["eng"]}),
                false,
            ),
        ];
        let acl = acl();
        for (name, meta, want) in records {
            assert_eq!(acl.allows(Some(&meta)), want, "{name}");
        }
        assert!(!acl.allows(None));
        assert!(!acl.allows(Some(&Value::Null)));
        assert!(Acl::default().allows(None));
    }

    #[test]
    fn callers_without_values_match_nothing() {
        let none = Acl {
            rules: vec![
                Rule::AnyOf {
                    field: "g".into(),
                    values: vec![],
                },
                Rule::In {
                    field: "t".into(),
                    values: vec![],
                },
            ],
        };
        assert_eq!(none.chroma_where(), json!({"$and":[{"$or":[]},{"$or":[]}]}));
        assert!(!none.allows(Some(&json!({"g":["x"],"t":"y"}))));
    }
}
