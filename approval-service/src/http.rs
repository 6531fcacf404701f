//! Small HTTP helpers: bounded bodies, JSON / HTML / redirect responses, forms, escaping.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY: usize = 256 * 1024;

pub type Resp = Response<Full<Bytes>>;

fn with_type(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub fn json(status: StatusCode, value: &Value) -> Resp {
    with_type(
        status,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

/// `{"error": code, "message": message}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Resp {
    json(status, &json!({"error": code, "message": message}))
}

pub fn html(status: StatusCode, body: String) -> Resp {
    let mut resp = with_type(status, "text/html; charset=utf-8", body.into_bytes());
    let h = resp.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    resp
}

/// 303 to `location`, setting `cookies`.
pub fn redirect(location: &str, cookies: &[String]) -> Resp {
    let mut resp = with_type(StatusCode::SEE_OTHER, "text/plain", Vec::new());
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(LOCATION, v);
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            h.append("set-cookie", v);
        }
    }
    resp
}

/// Why a body could not be read.
pub enum BodyError {
    TooLarge,
    Read,
}

/// Reads the whole body, at most [`MAX_BODY`] bytes.
pub async fn read_body(req: Request<Incoming>) -> Result<Bytes, BodyError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(BodyError::TooLarge);
    }
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Read),
    }
}

/// Decodes `application/x-www-form-urlencoded` (also query strings).
pub fn parse_form(input: &[u8]) -> Vec<(String, String)> {
    input
        .split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let mut it = pair.splitn(2, |b| *b == b'=');
            let k = it.next().unwrap_or_default();
            let v = it.next().unwrap_or_default();
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// The first value of `name` in a decoded form.
pub fn form_get<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn percent_decode(input: &[u8]) -> String {
    let mut out = Vec::with_capacity(input.len());
    let mut i = input.iter();
    while let Some(&b) = i.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let rest = i.as_slice();
                let decoded = rest
                    .get(..2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match decoded {
                    Some(v) => {
                        out.push(v);
                        i.next();
                        i.next();
                    }
                    None => out.push(b'%'),
                }
            }
            _ => out.push(b),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes for a query value or form field.
pub fn percent_encode(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// HTML-escapes text for element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("a=1&b=x+y", &[("a", "1"), ("b", "x y")]),
            ("t=%3Cb%3E&e=", &[("t", "<b>"), ("e", "")]),
            ("bad=%zz%4", &[("bad", "%zz%4")]),
            ("", &[]),
        ];
        for (input, expected) in cases {
            let got = parse_form(input.as_bytes());
            let want: Vec<(String, String)> = expected
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            assert_eq!(got, want, "{input}");
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
        assert_eq!(
            percent_decode(percent_encode("a b&c=é").as_bytes()),
            "a b&c=é"
        );
    }
}
