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
