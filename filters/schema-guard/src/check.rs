//! What an answer must look like, from its request, and the checks: structured output, tool
//! calls (declared tool, arguments valid against its schema), operator schemas; and the
//! `drop_tool_call` rewrite of a non-streamed answer.

use crate::engine::{CompiledSchema, Violation};
use guard_core::api::ApiShape;
use guard_core::body::{ResponseBody, ToolArgs};
use guard_core::segment::{Source, Step};
use guard_core::stream::Assembled;
use serde_json::{json, Value};
use std::rc::Rc;

/// What kind of check failed (also the reason detail in records and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// The answer's content is not JSON valid against the request's declared schema.
    Output,
    /// A tool call's arguments are not valid against the tool's schema.
    ToolArguments,
    /// A tool call names a tool the request did not declare.
    UndeclaredTool,
    /// The answer fails the operator's response schema.
    Response,
    /// The request fails the operator's request schema.
    Request,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Output => "output",
            Kind::ToolArguments => "tool_arguments",
            Kind::UndeclaredTool => "undeclared_tool",
            Kind::Response => "response",
            Kind::Request => "request",
        }
    }
}

/// One failed check.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub kind: Kind,
    pub choice: usize,
    /// The tool call's ordinal (tool-call kinds).
    pub call: Option<usize>,
    pub tool: Option<String>,
    /// Where the call sits in the answer (non-streamed), for `drop_tool_call`.
    pub location: Option<Vec<Step>>,
    pub violations: Vec<Violation>,
}

impl Finding {
    /// `"/age: 5 is less than the minimum of 18"`-style summary of the first violations.
    pub fn summary(&self, max: usize) -> String {
        let mut parts: Vec<String> = self
            .violations
            .iter()
            .take(max)
            .map(|v| {
                let path = if v.path.is_empty() { "/" } else { &v.path };
                format!("{path}: {}", v.message)
            })
            .collect();
        if self.violations.len() > max {
            parts.push(format!("and {} more", self.violations.len() - max));
        }
        let what = match (self.kind, &self.tool) {
            (Kind::UndeclaredTool, Some(t)) => format!("tool call {t:?}"),
            (Kind::ToolArguments, Some(t)) => format!("arguments of tool call {t:?}"),
            (Kind::Output, _) => "structured output".to_string(),
            (Kind::Response, _) => "answer".to_string(),
            (Kind::Request, _) => "request".to_string(),
            (_, None) => "tool call".to_string(),
        };
        format!("{what}: {}", parts.join("; "))
    }
}

/// A declared tool and its compiled argument schema (`None`: free-form or provider tool).
#[derive(Debug, Clone)]
pub struct DeclaredTool {
    pub name: String,
    pub schema: Option<Rc<CompiledSchema>>,
}

/// What the answer to one request must look like.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub tools: Vec<DeclaredTool>,
    /// The structured-output schema the request declared.
    pub output: Option<Rc<CompiledSchema>>,
    /// The operator's response schema (validated against the whole answer body).
    pub response: Option<Rc<CompiledSchema>>,
    /// Check tool calls (names and arguments).
    pub check_tools: bool,
}

fn violation(path: &str, message: impl Into<String>) -> Violation {
    Violation {
        path: path.to_string(),
        message: message.into(),
    }
}

impl Expect {
    /// Check one tool call given its name and arguments (JSON text or value).
    pub fn tool_call(
        &self,
        choice: usize,
        call: usize,
        name: &str,
        args: Result<Value, String>,
    ) -> Option<Finding> {
        if !self.check_tools {
            return None;
        }
        let finding = |kind, violations| {
            Some(Finding {
                kind,
                choice,
                call: Some(call),
                tool: Some(name.to_string()),
                location: None,
                violations,
            })
        };
        let Some(tool) = self.tools.iter().find(|t| t.name == name) else {
            return finding(
                Kind::UndeclaredTool,
                vec![violation(
                    "",
                    format!("tool {name:?} was not declared in the request"),
                )],
            );
        };
        let Some(schema) = &tool.schema else {
            return None;
        };
        let args = match args {
            Ok(v) => v,
            Err(e) => {
                return finding(
                    Kind::ToolArguments,
                    vec![violation("", format!("arguments are not valid JSON: {e}"))],
                )
            }
        };
        let v = schema.validate(&args);
        if v.is_empty() {
            None
        } else {
            finding(Kind::ToolArguments, v)
        }
    }

    /// Check a choice's text content against the structured-output schema.
    pub fn output(&self, choice: usize, text: &str) -> Option<Finding> {
        let schema = self.output.as_ref()?;
        let violations = match serde_json::from_str::<Value>(text) {
            Ok(v) => schema.validate(&v),
            Err(e) => vec![violation("", format!("the answer is not valid JSON: {e}"))],
        };
        (!violations.is_empty()).then_some(Finding {
            kind: Kind::Output,
            choice,
            call: None,
            tool: None,
            location: None,
            violations,
        })
    }

    /// Check a non-streamed answer.
    pub fn answer(&self, resp: &ResponseBody) -> Vec<Finding> {
        let mut out = Vec::new();
        if let Some(schema) = &self.response {
            let v = schema.validate(resp.json());
            if !v.is_empty() {
                out.push(Finding {
                    kind: Kind::Response,
                    choice: 0,
                    call: None,
                    tool: None,
                    location: None,
                    violations: v,
                });
            }
        }
        let calls = resp.tool_calls();
        for (n, c) in calls.iter().enumerate() {
            let args = match c.arguments {
                ToolArgs::Text(t) => serde_json::from_str::<Value>(t).map_err(|e| e.to_string()),
                ToolArgs::Json(v) => Ok(v.clone()),
            };
            if let Some(mut f) = self.tool_call(c.choice.unwrap_or(0), n, c.name, args) {
                f.location = Some(c.path.0.clone());
                out.push(f);
            }
        }
        if self.output.is_some() {
            // The text of each choice (content parts joined); a choice that only calls tools
            // has no structured output to check.
            let mut texts: Vec<(usize, String)> = Vec::new();
            for seg in resp.segments() {
                if seg.source != Source::Assistant {
                    continue;
                }
                let choice = seg.choice.unwrap_or(0);
                match texts.iter_mut().find(|(c, _)| *c == choice) {
                    Some((_, t)) => t.push_str(&seg.text),
                    None => texts.push((choice, seg.text.to_string())),
                }
            }
            let with_calls: Vec<usize> = calls.iter().map(|c| c.choice.unwrap_or(0)).collect();
            for (choice, text) in texts {
                if text.trim().is_empty() && with_calls.contains(&choice) {
                    continue;
                }
                if let Some(f) = self.output(choice, &text) {
                    out.push(f);
                }
            }
        }
        out
    }

    /// Check what of an assembled stream is complete and not judged yet: tool calls whose
    /// arguments channel ended, a later call started or whose choice finished; choices that
    /// finished (or everything, when `done`).
    pub fn stream(&self, a: &Assembled, progress: &mut Progress, done: bool) -> Vec<Finding> {
        let mut out = Vec::new();
        for (ci, choice) in a.choices.iter().enumerate() {
            let finished = done || choice.finish_reason.is_some();
            for (n, call) in choice.tool_calls.iter().enumerate() {
                let complete = finished
                    || n + 1 < choice.tool_calls.len()
                    || progress.ended.contains(&(ci, call.index));
                if !complete || progress.judged_calls.contains(&(ci, n)) {
                    continue;
                }
                progress.judged_calls.push((ci, n));
                progress.checks += 1;
                let name = call.name.clone().unwrap_or_default();
                let args = if call.arguments.trim().is_empty() {
                    Ok(json!({}))
                } else {
                    serde_json::from_str::<Value>(&call.arguments).map_err(|e| e.to_string())
                };
                if let Some(f) = self.tool_call(ci, n, &name, args) {
                    out.push(f);
                }
            }
            if finished && !progress.judged_choices.contains(&ci) {
                progress.judged_choices.push(ci);
                let skip = choice.content.trim().is_empty() && !choice.tool_calls.is_empty();
                if self.output.is_some() && !skip {
                    progress.checks += 1;
                    if let Some(f) = self.output(ci, &choice.content) {
                        out.push(f);
                    }
                }
            }
        }
        out
    }
}

/// Most tool-call channels a stream tracks (the assembler bounds the calls themselves).
const MAX_TRACKED: usize = 1024;

/// What of a stream has been judged, and which tool-call channels ended.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    judged_calls: Vec<(usize, usize)>,
    judged_choices: Vec<usize>,
    ended: Vec<(usize, usize)>,
    /// Checks run so far.
    pub checks: u64,
}

impl Progress {
    /// The arguments channel of tool call `index` of `choice` ended.
    pub fn channel_ended(&mut self, choice: usize, index: usize) {
        if self.ended.len() < MAX_TRACKED && !self.ended.contains(&(choice, index)) {
            self.ended.push((choice, index));
        }
    }
}

/// The deterministic assistant text that replaces dropped tool calls.
pub fn dropped_message(findings: &[&Finding]) -> String {
    let mut parts = Vec::new();
    for f in findings {
        let name = f.tool.as_deref().unwrap_or("unknown");
        let why = match f.kind {
            Kind::UndeclaredTool => "the tool was not declared".to_string(),
            _ => match f.violations.first() {
                Some(v) => format!(
                    "its arguments did not match the declared schema ({}: {})",
                    if v.path.is_empty() { "/" } else { &v.path },
                    v.message
                ),
                None => "its arguments did not match the declared schema".to_string(),
            },
        };
        parts.push(format!("The tool call `{name}` was removed: {why}."));
    }
    parts.join(" ")
}

/// Remove the tool calls of `findings` (with locations) from a non-streamed answer and add the
/// deterministic message. Returns false when a call could not be located.
pub fn drop_tool_calls(_shape: ApiShape, resp: &mut ResponseBody, findings: &[&Finding]) -> bool {
    let mut calls = Vec::with_capacity(findings.len());
    for f in findings {
        let Some(loc) = &f.location else {
            return false;
        };
        calls.push((loc.as_slice(), f.choice));
    }
    resp.remove_tool_calls(&calls, &dropped_message(findings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Limits, Remotes};

    fn schema(v: Value) -> Rc<CompiledSchema> {
        Rc::new(CompiledSchema::compile(&v, Limits::default(), &Remotes::default()).unwrap())
    }

    fn expect() -> Expect {
        Expect {
            tools: vec![DeclaredTool {
                name: "get_weather".into(),
                schema: Some(schema(json!({
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
                    "required": ["city"],
                    "additionalProperties": false
                }))),
            }],
            output: Some(schema(
                json!({"type": "object", "required": ["age"], "properties": {"age": {"type": "integer", "minimum": 0}}}),
            )),
            response: None,
            check_tools: true,
        }
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn tool_calls_by_name_and_arguments() {
        let e = expect();
        let cases: Vec<(&str, Result<Value, String>, Option<(Kind, &str)>)> = vec![
            ("get_weather", Ok(json!({"city": "Paris"})), None),
            (
                "get_weather",
                Ok(json!({"city": "Paris", "unit": "kelvin"})),
                Some((Kind::ToolArguments, "/unit")),
            ),
            (
                "get_weather",
                Ok(json!({})),
                Some((Kind::ToolArguments, "")),
            ),
            (
                "get_weather",
                Err("eof".into()),
                Some((Kind::ToolArguments, "")),
            ),
            (
                "delete_all",
                Ok(json!({})),
                Some((Kind::UndeclaredTool, "")),
            ),
        ];
        for (name, args, want) in cases {
            let got = e.tool_call(0, 0, name, args.clone());
            match (got, want) {
                (None, None) => {}
                (Some(f), Some((kind, path))) => {
                    assert_eq!(f.kind, kind, "{name} {args:?}");
                    assert_eq!(
                        f.violations.first().map(|v| v.path.as_str()),
                        Some(path),
                        "{name} {args:?}"
                    );
                }
                (got, want) => panic!("{name} {args:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn structured_output() {
        let e = expect();
        assert!(e.output(0, r#"{"age": 3}"#).is_none());
        let f = e.output(0, r#"{"age": -1}"#).unwrap();
        assert_eq!(f.violations[0].path, "/age");
        let f = e.output(0, "Sure! {\"age\": 3}").unwrap();
        assert!(f.violations[0].message.contains("not valid JSON"));
    }

    #[test]
    fn drop_tool_call_openai_and_anthropic() {
        let e = expect();
        let chat = json!({"id": "c", "object": "chat.completion", "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"kelvin\"}"}}]}}]});
        let mut resp = ResponseBody::from_value(ApiShape::OpenAiChat, chat).unwrap();
        let e2 = Expect {
            output: None,
            ..e.clone()
        };
        let findings = e2.answer(&resp);
        assert_eq!(findings.len(), 1);
        let refs: Vec<&Finding> = findings.iter().collect();
        assert!(drop_tool_calls(ApiShape::OpenAiChat, &mut resp, &refs));
        let j = resp.json();
        assert!(j["choices"][0]["message"].get("tool_calls").is_none());
        assert_eq!(j["choices"][0]["finish_reason"], "stop");
        assert!(j["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("The tool call `get_weather` was removed"));

        let msg = json!({"id": "m", "type": "message", "role": "assistant", "stop_reason": "tool_use", "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "t1", "name": "rm_rf", "input": {}}]});
        let mut resp = ResponseBody::from_value(ApiShape::AnthropicMessages, msg).unwrap();
        let findings = e2.answer(&resp);
        assert_eq!(findings[0].kind, Kind::UndeclaredTool);
        let refs: Vec<&Finding> = findings.iter().collect();
        assert!(drop_tool_calls(
            ApiShape::AnthropicMessages,
            &mut resp,
            &refs
        ));
        let j = resp.json();
        assert_eq!(j["stop_reason"], "end_turn");
        let types: Vec<&str> = j["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["text", "text"]);
    }
}
