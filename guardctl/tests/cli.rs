//! guardctl as a user runs it: exit codes, messages, JSON Lines.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Write;
use std::process::{Command, Stdio};

fn guardctl(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_guardctl"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn lint_good_and_bad_configs() {
    let dir = std::env::temp_dir().join(format!("guardctl-lint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "good",
            r#"{"policies":{"default":{"failure_policy":"fail_open","models":["gpt-*"]}}}"#,
            0,
            "\"ok\":true",
        ),
        (
            "unknown field",
            r#"{"policies":{"default":{"modles":[]}}}"#,
            2,
            "/policies/default/modles: unknown field",
        ),
        (
            "bad glob",
            r#"{"policies":{"default":{"models":["g*t"]}}}"#,
            2,
            "/policies/default/models/0",
        ),
        ("not json", "{", 2, "not valid json"),
        (
            "pii good",
            r#"{"policies":{"default":{"entities":{"EMAIL":{"action":"mask"}},"dictionaries":[{"name":"PROJECT","terms":["Falcon"]}]}}}"#,
            0,
            "\"filter\":\"pii_redact\"",
        ),
        (
            "pii unknown type",
            r#"{"policies":{"default":{"entities":{"NAME":{"action":"redact"}}}}}"#,
            2,
            "/policies/default/entities/NAME: unknown entity type",
        ),
        (
            "schema good",
            r#"{"policies":{"default":{"stream_mode":"passthrough","on_failure":{"tool_arguments":"drop_tool_call"}}}}"#,
            0,
            "\"filter\":\"schema_guard\"",
        ),
        (
            "schema bad request schema",
            r#"{"policies":{"default":{"request_schema":{"type":"nope"}}}}"#,
            2,
            "/policies/default/request_schema",
        ),
        (
            "pii bad regex",
            r#"{"policies":{"default":{"custom":[{"name":"EMP","pattern":"EMP-("}]}}}"#,
            2,
            "/policies/default/custom/0/pattern: bad regex",
        ),
    ];
    for (name, json, code, want) in cases {
        let f = dir.join(format!("{}.json", name.replace(' ', "_")));
        std::fs::write(&f, json).unwrap();
        let (got, out, err) = guardctl(&["lint", f.to_str().unwrap()], "");
        assert_eq!(got, code, "{name}: {out}{err}");
        assert!(
            out.contains(want) || err.contains(want),
            "{name}: {out}{err}"
        );
    }
    let (code, _, err) = guardctl(&["lint", "/nonexistent.json"], "");
    assert_eq!(code, 2);
    assert!(err.contains("cannot read"), "{err}");
    let (code, _, err) = guardctl(&["frobnicate"], "");
    assert_eq!(code, 2);
    assert!(err.contains("usage"), "{err}");
}

#[test]
fn segments_json_lines() {
    let input = concat!(
        r#"{"model":"m","messages":[{"role":"system","content":"sys"},{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#,
        "\n\nnot json\n",
        r#"{"model":"m","system":"s","messages":[{"role":"user","content":"yo"}]}"#,
        "\n"
    );
    let (code, out, _) = guardctl(&["segments"], input);
    assert_eq!(code, 0);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        3,
        "one output line per non-blank input line: {out}"
    );
    assert_eq!(
        lines[0]["segments"][1]["path"],
        "/messages/1/content/0/text"
    );
    assert_eq!(lines[0]["segments"][1]["source"], "user");
    assert!(lines[1]["error"].is_string());
    assert_eq!(lines[2]["api"], "anthropic_messages");
}

#[test]
fn pii_json_lines() {
    let text = "😀 mail me at jane.doe@example.com";
    let address = "jane.doe@example.com";
    let byte_start = text.find(address).unwrap();
    let start = text[..byte_start].chars().count();
    let end = start + address.chars().count();
    assert_ne!(
        start, byte_start,
        "the emoji must make bytes and chars differ"
    );
    let input = format!(
        "{}\n\n   \nnot json\n{}\n{}\n",
        serde_json::json!({ "text": text, "id": 7 }),
        r#"{"txt":"no text field"}"#,
        serde_json::json!({ "text": "nothing personal here" }),
    );
    let (code, out, err) = guardctl(&["pii"], &input);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        4,
        "one output line per non-blank input line: {out}"
    );
    assert_eq!(
        lines[0]["spans"],
        serde_json::json!([{"start": start, "end": end, "type": "EMAIL"}]),
        "{out}"
    );
    let redacted = lines[0]["redacted"].as_str().unwrap();
    assert!(redacted.starts_with("😀 mail me at "), "{redacted}");
    assert!(!redacted.contains(address), "{redacted}");
    assert!(lines[1]["error"].as_str().unwrap().contains("not json"));
    assert!(lines[2]["error"].as_str().unwrap().contains("text"));
    assert_eq!(lines[3]["spans"], serde_json::json!([]));
    assert_eq!(lines[3]["redacted"], "nothing personal here");
}

#[test]
fn pii_config_and_usage() {
    let dir = std::env::temp_dir().join(format!("guardctl-pii-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Every detection is reported whatever its action; `allow` leaves the text alone.
    let allow = dir.join("allow.json");
    std::fs::write(
        &allow,
        r#"{"policies":{"default":{"entities":{"EMAIL":{"action":"allow"}}}}}"#,
    )
    .unwrap();
    let text = "write to jane.doe@example.com";
    let (code, out, err) = guardctl(
        &["pii", "--config", allow.to_str().unwrap()],
        &format!("{}\n", serde_json::json!({ "text": text })),
    );
    assert_eq!(code, 0, "{err}");
    let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(line["spans"][0]["type"], "EMAIL", "{out}");
    assert_eq!(line["spans"][0]["start"], 9, "{out}");
    assert_eq!(line["redacted"], text, "{out}");

    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"policies":{"default":{"min_scor":0.5}}}"#).unwrap();
    let (code, _, err) = guardctl(&["pii", "--config", bad.to_str().unwrap()], "");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("min_scor"), "{err}");
    let (code, _, err) = guardctl(&["pii", "--config", "/nonexistent.json"], "");
    assert_eq!(code, 2);
    assert!(err.contains("cannot read"), "{err}");
    let (code, _, err) = guardctl(&["pii", "--fast"], "");
    assert_eq!(code, 2);
    assert!(err.contains("usage"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn schema_json_lines() {
    let dir = std::env::temp_dir().join(format!("guardctl-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("person.json");
    std::fs::write(
        &f,
        r#"{"type":"object","properties":{"age":{"type":"integer","minimum":0},"email":{"format":"email"}},"required":["age"]}"#,
    )
    .unwrap();
    let input = "{\"age\": 3}\n\n{\"age\": \"three\"}\n{\"age\": 1, \"email\": \"not-an-email\"}\nnot json\n{}\n";
    let (code, out, err) = guardctl(&["schema", "--schema", f.to_str().unwrap()], input);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "blank line skipped: {out}");
    assert_eq!(lines[0], serde_json::json!({"valid": true, "errors": []}));
    assert_eq!(lines[1]["valid"], false);
    assert_eq!(lines[1]["errors"][0]["path"], "/age");
    assert!(lines[1]["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("integer"));
    assert_eq!(lines[2]["valid"], false, "format is asserted: {}", lines[2]);
    assert_eq!(lines[2]["errors"][0]["path"], "/email");
    assert!(lines[3]["error"].as_str().unwrap().starts_with("not json"));
    assert_eq!(lines[4]["valid"], false);
    assert_eq!(lines[4]["errors"][0]["path"], "");
}

#[test]
fn schema_bad_schema_and_usage() {
    let dir = std::env::temp_dir().join(format!("guardctl-schema-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("bad type", r#"{"type":"strin"}"#, "invalid schema"),
        ("bad pattern", r#"{"pattern":"(a"}"#, "invalid schema"),
        (
            "remote ref",
            r#"{"$ref":"https://example.com/s.json"}"#,
            "invalid schema",
        ),
        ("not json", "{", "not valid json"),
    ];
    for (name, schema, want) in cases {
        let f = dir.join(format!("{}.json", name.replace(' ', "_")));
        std::fs::write(&f, schema).unwrap();
        // No stdin: guardctl exits before reading it.
        let (code, out, err) = guardctl(&["schema", "--schema", f.to_str().unwrap()], "");
        assert_eq!(code, 2, "{name}: {out}");
        assert!(err.contains(want), "{name}: {err}");
    }
    let missing = dir.join("missing.json");
    let (code, _, err) = guardctl(&["schema", "--schema", missing.to_str().unwrap()], "");
    assert_eq!(code, 2);
    assert!(err.contains("cannot read"), "{err}");
    let (code, _, err) = guardctl(&["schema"], "");
    assert_eq!(code, 2);
    assert!(err.contains("--schema"), "{err}");
}

#[test]
fn audit_verify_passes_and_finds_tampering() {
    let key = "cli-audit-key-0123456789abcdef";
    let mut chain = guard_core::audit::Chain::new("t-1".into(), Some(key.as_bytes().to_vec()));
    let lines: Vec<String> = (0..3)
        .map(|i| {
            let rec = chain.seal(
                format!(r#"{{"filter":"pii_redact","decision":"allow","i":{i}}}"#).as_bytes(),
            );
            serde_json::json!({"status": "200", "pii_redact": String::from_utf8(rec).unwrap()})
                .to_string()
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("guardctl-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |name: &str, text: &str, with_key: bool| {
        let f = dir.join(name);
        std::fs::write(&f, text).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_guardctl"));
        cmd.args(["audit", "verify", f.to_str().unwrap()]);
        if with_key {
            cmd.env("GUARD_AUDIT_KEY", key);
        } else {
            cmd.env_remove("GUARD_AUDIT_KEY");
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = run("good.log", &lines.join("\n"), true);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("\"ok\":true") && out.contains("\"records\":3"),
        "{out}"
    );
    let edited = lines.join("\n").replacen("allow", "block", 1);
    let (code, out) = run("edited.log", &edited, true);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("MAC does not match"), "{out}");
    let removed = [lines[0].clone(), lines[2].clone()].join("\n");
    let (code, out) = run("removed.log", &removed, true);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("missing"), "{out}");
    let (code, out) = run("nokey.log", &lines.join("\n"), false);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("GUARD_AUDIT_KEY"), "{out}");
}
