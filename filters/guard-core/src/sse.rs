//! An incremental server-sent-events parser over bytes, following the WHATWG algorithm
//! (<https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>).
//!
//! It is correct for any chunking of the input (a CR at the end of one chunk followed by an LF at
//! the start of the next is one line end), decodes UTF-8 only for complete lines (invalid bytes
//! become U+FFFD, never a panic), scans every byte once, and bounds the bytes buffered for one
//! pending event.
//!
//! Every dispatched [`SseEvent`] carries the exact input bytes it came from in `raw`, so a
//! passthrough that re-emits the raw bytes of the events it keeps is byte-identical. Bytes that
//! belong to no dispatched event (comment lines, blocks without `data`, the LF of a CRLF split
//! across chunks) are attached to the `raw` of the next dispatched event; a caller that forwards
//! the stream can take them earlier with [`SseParser::take_skipped_raw`] (so keep-alive comments
//! reach the client at once), and takes whatever is left at the end with
//! [`SseParser::take_pending_raw`].
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use guard_core::sse::SseParser;
//!
//! let mut parser = SseParser::new(1 << 20);
//! let mut events = Vec::new();
//! parser.push(b"event: ping\ndata: {\"a\":", &mut |e| events.push(e))?;
//! parser.push(b"1}\r\n\r\n: keep-alive\n\n", &mut |e| events.push(e))?;
//! assert_eq!(events.len(), 1);
//! assert_eq!(events[0].event.as_deref(), Some("ping"));
//! assert_eq!(events[0].data, "{\"a\":1}");
//! assert_eq!(events[0].raw, b"event: ping\ndata: {\"a\":1}\r\n\r\n");
//! let mut skipped = Vec::new();
//! parser.take_skipped_raw(&mut skipped);
//! assert_eq!(skipped, b": keep-alive\n\n");
//! # Ok(())
//! # }
//! ```

use crate::error::{Error, Result};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The event type (`event:` field); `None` when the block had none (WHATWG's "message").
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last event ID of the stream at dispatch time (WHATWG: it persists across events);
    /// `None` when never set or set to the empty string.
    pub id: Option<String>,
    /// The exact input bytes of this event: from the first byte after the previous dispatched
    /// event (so including comment lines and non-dispatched blocks before it) through the blank
    /// line that dispatched it.
    pub raw: Vec<u8>,
}

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// The per-event field buffers of the WHATWG algorithm.
#[derive(Debug, Default)]
struct Fields {
    data: String,
    has_data: bool,
    event_type: String,
    last_id: Option<String>,
}

impl Fields {
    /// Process one complete, non-empty line (without its terminator).
    fn line(&mut self, line: &[u8]) {
        if line.first() == Some(&b':') {
            return; // comment
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let name = line.get(..colon).unwrap_or_default();
                let mut value = line.get(colon.saturating_add(1)..).unwrap_or_default();
                if value.first() == Some(&b' ') {
                    value = value.get(1..).unwrap_or_default();
                }
                (name, value)
            }
            None => (line, &[][..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.has_data = true;
                self.data.push_str(&String::from_utf8_lossy(value));
            }
            b"event" => {
                self.event_type.clear();
                self.event_type.push_str(&String::from_utf8_lossy(value));
            }
            // An id containing NUL is ignored.
            b"id" if !value.contains(&0) => {
                self.last_id = if value.is_empty() {
                    None
                } else {
                    Some(String::from_utf8_lossy(value).into_owned())
                };
            }
            // `retry` and unknown fields are ignored.
            _ => {}
        }
    }

    fn reset_event(&mut self) {
        self.data.clear();
        self.has_data = false;
        self.event_type.clear();
    }
}

/// Incremental SSE parser; one per stream, reused across chunks.
#[derive(Debug)]
pub struct SseParser {
    max_event_bytes: usize,
    /// Bytes received and not yet handed out (in an event's `raw` or by a `take_*` call).
    buf: Vec<u8>,
    /// Start in `buf` of the bytes not yet handed out.
    raw_start: usize,
    /// Start in `buf` of the current block (after the last blank line).
    block_start: usize,
    /// Start in `buf` of the current, not yet terminated line.
    line_start: usize,
    /// Position in `buf` up to which the current line was searched for its end (so each byte
    /// is searched once, however the input is chunked).
    scan_pos: usize,
    /// Whether the last line ended with a CR at the very end of the input so far: an LF that
    /// follows belongs to that line end.
    skip_lf: bool,
    /// Whether the stream start has not yet been checked for a byte order mark.
    bom_pending: bool,
    fields: Fields,
}

impl SseParser {
    /// A parser that fails with `TooLarge` once the bytes of one pending event (including the
    /// comments and non-dispatched blocks before it) exceed `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        SseParser {
            max_event_bytes,
            buf: Vec::new(),
            raw_start: 0,
            block_start: 0,
            line_start: 0,
            scan_pos: 0,
            skip_lf: false,
            bom_pending: true,
            fields: Fields::default(),
        }
    }

    /// Feed the next chunk; `on_event` is called for every event it completes, in order.
    pub fn push(&mut self, chunk: &[u8], on_event: &mut dyn FnMut(SseEvent)) -> Result<()> {
        self.compact();
        self.buf.extend_from_slice(chunk);
        if self.skip_lf && self.line_start < self.buf.len() {
            self.skip_lf = false;
            if self.buf.get(self.line_start) == Some(&b'\n') {
                if self.block_start == self.line_start {
                    self.block_start = self.block_start.saturating_add(1);
                }
                self.line_start = self.line_start.saturating_add(1);
                self.scan_pos = self.scan_pos.max(self.line_start);
            }
        }
        if self.bom_pending {
            let head = self.buf.get(self.line_start..).unwrap_or_default();
            if head.len() < BOM.len() && BOM.starts_with(head) {
                // Not enough bytes yet to tell.
                return self.check_pending();
            }
            self.bom_pending = false;
            if head.starts_with(&BOM) {
                self.line_start = self.line_start.saturating_add(BOM.len());
                self.scan_pos = self.scan_pos.max(self.line_start);
            }
        }
        self.scan(on_event)?;
        self.check_pending()
    }

    /// End of stream. Per WHATWG an event without its final blank line is not dispatched: its
    /// bytes stay available from [`SseParser::take_pending_raw`].
    pub fn finish(&mut self, _on_event: &mut dyn FnMut(SseEvent)) -> Result<()> {
        self.check_pending()
    }

    /// End of stream, lenient variant (not WHATWG): an unterminated last event that has data is
    /// dispatched as if its blank line had arrived, with `raw` = all bytes not yet handed out.
    /// A filter uses this to scan a tail that some non-conforming clients would still act on.
    pub fn flush_unterminated(&mut self, on_event: &mut dyn FnMut(SseEvent)) -> Result<()> {
        self.check_pending()?;
        if self.line_start < self.buf.len() {
            let line = self.buf.get(self.line_start..).unwrap_or_default();
            self.fields.line(line);
            self.line_start = self.buf.len();
            self.scan_pos = self.buf.len();
        }
        if self.fields.has_data {
            let raw = self.buf.get(self.raw_start..).unwrap_or_default().to_vec();
            self.raw_start = self.buf.len();
            self.block_start = self.buf.len();
            self.dispatch(raw, on_event);
        }
        Ok(())
    }

    /// Move the raw bytes of completed blocks that dispatched nothing (comments, blocks without
    /// `data`) and that precede the pending event into `out`. Calling it between pushes keeps
    /// those bytes out of the next event's `raw`.
    pub fn take_skipped_raw(&mut self, out: &mut Vec<u8>) {
        if let Some(bytes) = self.buf.get(self.raw_start..self.block_start) {
            out.extend_from_slice(bytes);
        }
        self.raw_start = self.block_start.max(self.raw_start);
    }

    /// All bytes not yet part of a dispatched event (for flushing at end of stream). Resets the
    /// pending event; the last event ID is kept.
    pub fn take_pending_raw(&mut self) -> Vec<u8> {
        let out = self.buf.get(self.raw_start..).unwrap_or_default().to_vec();
        self.buf.clear();
        self.raw_start = 0;
        self.block_start = 0;
        self.line_start = 0;
        self.scan_pos = 0;
        self.skip_lf = false;
        self.bom_pending = false;
        self.fields.reset_event();
        out
    }

    /// The bytes not yet part of a dispatched event, without taking them (a filter that
    /// withholds them keeps a copy so a fail-open path can still emit them).
    pub fn pending_raw(&self) -> &[u8] {
        self.buf.get(self.raw_start..).unwrap_or_default()
    }

    /// Number of bytes not yet part of a dispatched event.
    pub fn pending_len(&self) -> usize {
        self.buf.len().saturating_sub(self.raw_start)
    }

    /// Drop the bytes already handed out, once per push (so the work stays linear).
    fn compact(&mut self) {
        if self.raw_start == 0 {
            return;
        }
        let n = self.raw_start.min(self.buf.len());
        self.buf.drain(..n);
        self.raw_start = 0;
        self.block_start = self.block_start.saturating_sub(n);
        self.line_start = self.line_start.saturating_sub(n);
        self.scan_pos = self.scan_pos.saturating_sub(n);
    }

    fn check_pending(&self) -> Result<()> {
        let pending = self.pending_len();
        if pending > self.max_event_bytes {
            return Err(Error::too_large(format!(
                "sse event of at least {pending} bytes exceeds the limit of {} bytes",
                self.max_event_bytes
            )));
        }
        Ok(())
    }

    /// Process every complete line from `line_start` on.
    fn scan(&mut self, on_event: &mut dyn FnMut(SseEvent)) -> Result<()> {
        loop {
            let from = self.scan_pos.max(self.line_start);
            let rest = self.buf.get(from..).unwrap_or_default();
            let Some(off) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
                self.scan_pos = self.buf.len();
                return Ok(());
            };
            let eol = from.saturating_add(off);
            let mut next = eol.saturating_add(1);
            if self.buf.get(eol) == Some(&b'\r') {
                match self.buf.get(next) {
                    Some(b'\n') => next = next.saturating_add(1),
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            if eol == self.line_start {
                // Blank line: dispatch.
                if self.fields.has_data {
                    let size = next.saturating_sub(self.raw_start);
                    if size > self.max_event_bytes {
                        return Err(Error::too_large(format!(
                            "sse event of {size} bytes exceeds the limit of {} bytes",
                            self.max_event_bytes
                        )));
                    }
                    let raw = self
                        .buf
                        .get(self.raw_start..next)
                        .unwrap_or_default()
                        .to_vec();
                    self.raw_start = next;
                    self.dispatch(raw, on_event);
                } else {
                    self.fields.reset_event();
                }
                self.block_start = next;
            } else {
                let line = self.buf.get(self.line_start..eol).unwrap_or_default();
                self.fields.line(line);
            }
            self.line_start = next;
            self.scan_pos = next;
        }
    }

    fn dispatch(&mut self, raw: Vec<u8>, on_event: &mut dyn FnMut(SseEvent)) {
        let event = if self.fields.event_type.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.fields.event_type))
        };
        let ev = SseEvent {
            event,
            data: std::mem::take(&mut self.fields.data),
            id: self.fields.last_id.clone(),
            raw,
        };
        self.fields.reset_event();
        on_event(ev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    /// (event, data, id)
    type Want = (Option<&'static str>, &'static str, Option<&'static str>);
    /// (name, input, events, tail left when fed whole)
    type Case = (&'static str, &'static [u8], Vec<Want>, &'static [u8]);
    /// (name, input, dispatched tail data, raw left)
    type TailCase = (
        &'static str,
        &'static [u8],
        Option<&'static str>,
        &'static [u8],
    );

    fn plans(len: usize) -> Vec<Vec<usize>> {
        // Each plan is a list of cut offsets.
        let mut plans = vec![vec![]];
        for i in 1..len {
            plans.push(vec![i]);
        }
        plans.push((1..len).collect()); // one byte at a time
        for n in [2usize, 3, 5, 7] {
            let step = len.div_ceil(n).max(1);
            plans.push((1..n).map(|k| k * step).filter(|&c| c < len).collect());
        }
        plans
    }

    fn run(input: &[u8], cuts: &[usize], max: usize) -> Result<(Vec<SseEvent>, Vec<u8>)> {
        let mut p = SseParser::new(max);
        let mut events = Vec::new();
        let mut prev = 0;
        for &c in cuts.iter().chain(std::iter::once(&input.len())) {
            p.push(&input[prev..c], &mut |e| events.push(e))?;
            prev = c;
        }
        p.finish(&mut |e| events.push(e))?;
        let tail = p.take_pending_raw();
        Ok((events, tail))
    }

    #[test]
    fn whatwg_cases() {
        let cases: Vec<Case> = vec![
            ("lf", b"data: a\n\n", vec![(None, "a", None)], b""),
            ("crlf", b"data: a\r\n\r\n", vec![(None, "a", None)], b""),
            (
                "cr",
                b"data: a\r\rdata: b\r\r",
                vec![(None, "a", None), (None, "b", None)],
                b"",
            ),
            (
                "mixed endings",
                b"data: a\r\ndata: b\rdata: c\n\r\n",
                vec![(None, "a\nb\nc", None)],
                b"",
            ),
            (
                "multi data lines",
                b"data: x\ndata: y\n\n",
                vec![(None, "x\ny", None)],
                b"",
            ),
            ("no space", b"data:a\n\n", vec![(None, "a", None)], b""),
            (
                "two spaces keep one",
                b"data:  a\n\n",
                vec![(None, " a", None)],
                b"",
            ),
            (
                "field without colon",
                b"data\n\n",
                vec![(None, "", None)],
                b"",
            ),
            (
                "empty data value",
                b"data:\ndata:\n\n",
                vec![(None, "\n", None)],
                b"",
            ),
            (
                "event type",
                b"event: e1\ndata: a\n\ndata: b\n\n",
                vec![(Some("e1"), "a", None), (None, "b", None)],
                b"",
            ),
            (
                "comments and unknown fields",
                b": hi\nfoo: bar\nretry: 10\ndata: a\n\n",
                vec![(None, "a", None)],
                b"",
            ),
            (
                "no data not dispatched",
                b"event: x\n\ndata: a\n\n",
                vec![(None, "a", None)],
                b"",
            ),
            (
                "id persists",
                b"id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n",
                vec![
                    (None, "a", Some("1")),
                    (None, "b", Some("1")),
                    (None, "c", None),
                ],
                b"",
            ),
            (
                "id with nul ignored",
                b"id: 7\ndata: a\n\nid: x\0y\ndata: b\n\n",
                vec![(None, "a", Some("7")), (None, "b", Some("7"))],
                b"",
            ),
            (
                "bom stripped",
                b"\xEF\xBB\xBFdata: a\n\n",
                vec![(None, "a", None)],
                b"",
            ),
            (
                "bom only at start",
                b"data: a\n\n\xEF\xBB\xBFdata: b\n\n",
                vec![(None, "a", None)],
                b"\xEF\xBB\xBFdata: b\n\n",
            ),
            (
                "invalid utf8",
                b"data: \xFF\xFEok\n\n",
                vec![(None, "\u{FFFD}\u{FFFD}ok", None)],
                b"",
            ),
            (
                "utf8 kept",
                "data: héllo €\n\n".as_bytes(),
                vec![(None, "héllo €", None)],
                b"",
            ),
            (
                "unterminated not dispatched",
                b"data: a\n\ndata: b\n",
                vec![(None, "a", None)],
                b"data: b\n",
            ),
            (
                "unterminated line",
                b"data: a\n\ndata: b",
                vec![(None, "a", None)],
                b"data: b",
            ),
            (
                "trailing comment",
                b"data: a\n\n: bye\n\n",
                vec![(None, "a", None)],
                b": bye\n\n",
            ),
            ("empty", b"", vec![], b""),
        ];
        for (name, input, want, want_tail) in &cases {
            for cuts in plans(input.len()) {
                let (events, tail) = run(input, &cuts, 1 << 16).unwrap();
                let got: Vec<_> = events
                    .iter()
                    .map(|e| (e.event.as_deref(), e.data.as_str(), e.id.as_deref()))
                    .collect();
                assert_eq!(&got, want, "{name} cuts {cuts:?}");
                // The raw bytes of the events plus the tail are exactly the input.
                let mut all: Vec<u8> = events.iter().flat_map(|e| e.raw.clone()).collect();
                all.extend_from_slice(&tail);
                assert_eq!(&all, input, "{name} cuts {cuts:?}");
                if cuts.is_empty() {
                    assert_eq!(&tail, want_tail, "{name}");
                }
            }
        }
    }

    #[test]
    fn raw_of_each_event_whole_input() {
        let input = b": c\n\ndata: a\r\n\r\nevent: x\ndata: b\n\n";
        let (events, tail) = run(input, &[], 1 << 10).unwrap();
        assert_eq!(events[0].raw, b": c\n\ndata: a\r\n\r\n");
        assert_eq!(events[1].raw, b"event: x\ndata: b\n\n");
        assert!(tail.is_empty());
    }

    #[test]
    fn skipped_raw_is_taken_between_pushes() {
        let mut p = SseParser::new(1 << 10);
        let mut events = Vec::new();
        let mut skipped = Vec::new();
        p.push(b": ping\n\n: ping\n\ndata: a", &mut |e| events.push(e))
            .unwrap();
        p.take_skipped_raw(&mut skipped);
        assert_eq!(skipped, b": ping\n\n: ping\n\n");
        assert_eq!(p.pending_len(), 7);
        p.push(b"\n\n", &mut |e| events.push(e)).unwrap();
        assert_eq!(events[0].raw, b"data: a\n\n");
        // A CRLF split across pushes: the LF becomes a skipped byte.
        p.push(b"data: b\r\n\r", &mut |e| events.push(e)).unwrap();
        assert_eq!(events.len(), 2);
        p.push(b"\n", &mut |e| events.push(e)).unwrap();
        skipped.clear();
        p.take_skipped_raw(&mut skipped);
        assert_eq!(skipped, b"\n");
        assert_eq!(p.pending_len(), 0);
    }

    #[test]
    fn size_limit() {
        let ev = b"data: abc\n\n"; // 11 bytes
        let cases: Vec<(&str, usize, bool)> = vec![
            ("limit 0", 0, false),
            ("one under", 10, false),
            ("exactly fits", 11, true),
            ("one over", 12, true),
        ];
        for (name, max, ok) in cases {
            for cuts in plans(ev.len()) {
                let res = run(ev, &cuts, max);
                match (ok, res) {
                    (true, Ok((events, _))) => assert_eq!(events.len(), 1, "{name}"),
                    (false, Err(e)) => assert_eq!(e.kind(), ErrorKind::TooLarge, "{name}"),
                    (ok, res) => panic!("{name} cuts {cuts:?}: want ok={ok}, got {res:?}"),
                }
            }
        }
        // A long line without terminator fails before its end arrives.
        let mut p = SseParser::new(8);
        let err = p.push(b"data: 0123456789", &mut |_| {}).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge);
        assert!(err.message().contains("8 bytes"), "{}", err.message());
    }

    #[test]
    fn flush_unterminated_dispatches_tail() {
        let cases: Vec<TailCase> = vec![
            ("no blank line", b"data: a\n\ndata: b\n", Some("b"), b""),
            ("no line end", b"data: a\n\ndata: b", Some("b"), b""),
            ("comment only", b"data: a\n\n: x", None, b": x"),
            ("nothing", b"data: a\n\n", None, b""),
        ];
        for (name, input, want, want_tail) in cases {
            let mut p = SseParser::new(1 << 10);
            let mut events = Vec::new();
            p.push(input, &mut |e| events.push(e)).unwrap();
            events.clear();
            p.flush_unterminated(&mut |e| events.push(e)).unwrap();
            assert_eq!(events.first().map(|e| e.data.as_str()), want, "{name}");
            if let Some(e) = events.first() {
                assert!(input.ends_with(&e.raw), "{name}");
            }
            assert_eq!(p.take_pending_raw(), want_tail, "{name}");
        }
    }

    #[test]
    fn linear_on_many_small_pushes() {
        // One big event fed byte by byte, then many events in one push.
        let mut big = b"data: ".to_vec();
        big.extend(vec![b'x'; 200_000]);
        big.extend_from_slice(b"\n\n");
        let mut p = SseParser::new(1 << 20);
        let mut n = 0;
        for b in &big {
            p.push(std::slice::from_ref(b), &mut |_| n += 1).unwrap();
        }
        assert_eq!(n, 1);
        let many: Vec<u8> = b"data: y\n\n".repeat(100_000);
        p.push(&many, &mut |_| n += 1).unwrap();
        assert_eq!(n, 100_001);
    }
}
