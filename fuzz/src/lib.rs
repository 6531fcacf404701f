//! Shared helpers of the fuzz targets (`fuzz_targets/*.rs`): bounded inputs, a small control
//! header, chunking plans chosen by the fuzzer, and the stream helpers several targets use.
//!
//! Input layout of the targets that take a header: `HEADER` control bytes, then the payload
//! (an SSE stream, a JSON body, a text). The seed corpus (`fuzz/corpus/<target>/`) is built
//! that way by `fuzz/seeds.py`, so the payloads stay real fixtures.

use guard_core::api::ApiShape;
use guard_core::holdback::StreamScanner;
use guard_core::sse::{SseEvent, SseParser};
use guard_core::stream::{Assembled, ChannelKey, Delta, StreamAssembler, StreamDecoder};

/// Largest input any target looks at (bigger inputs are ignored, so runs stay fast and
/// bounded; the engines' own limits are tested by their unit tests).
pub const MAX_INPUT: usize = 64 * 1024;

/// Control bytes at the start of a headed input.
pub const HEADER: usize = 4;

/// The control header and the payload after it.
#[derive(Debug, Clone, Copy)]
pub struct Headed<'a> {
    pub ctl: [u8; HEADER],
    pub payload: &'a [u8],
}

impl<'a> Headed<'a> {
    /// `None` for inputs over [`MAX_INPUT`] or shorter than the header.
    pub fn split(data: &'a [u8]) -> Option<Self> {
        if data.len() > MAX_INPUT {
            return None;
        }
        let (head, payload) = data.split_at_checked(HEADER)?;
        let ctl: [u8; HEADER] = head.try_into().ok()?;
        Some(Headed { ctl, payload })
    }

    /// The API shape named by the low two bits of the first control byte.
    pub fn shape(&self) -> ApiShape {
        shape(self.ctl[0])
    }

    /// A bit of the first control byte (2..8).
    pub fn flag(&self, bit: u8) -> bool {
        self.ctl[0] & (1 << bit) != 0
    }

    /// A chunking plan of the payload chosen by control bytes 1..4.
    pub fn cuts(&self) -> Vec<usize> {
        let seed = u64::from(u16::from_le_bytes([self.ctl[1], self.ctl[2]]));
        cuts(self.payload.len(), seed, self.ctl[3])
    }
}

pub fn shape(b: u8) -> ApiShape {
    match b & 3 {
        0 | 3 => ApiShape::OpenAiChat,
        1 => ApiShape::AnthropicMessages,
        _ => ApiShape::OpenAiResponses,
    }
}

/// Cut offsets in `1..len`, ascending. `mode >> 6`: 0 random gaps of 1..=64 (low six bits
/// bound the gap), 1 one cut, 2 one byte at a time (short inputs), 3 random gaps up to 997.
pub fn cuts(len: usize, seed: u64, mode: u8) -> Vec<usize> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (len as u64) ^ 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    if len < 2 {
        return Vec::new();
    }
    let max_gap = match mode >> 6 {
        0 => usize::from(mode & 63) + 1,
        1 => return vec![1 + (next() as usize) % (len - 1)],
        2 if len <= 4096 => 1,
        _ => 997,
    };
    let mut out = Vec::new();
    let mut at = 0usize;
    loop {
        at += 1 + (next() as usize) % max_gap;
        if at >= len {
            return out;
        }
        out.push(at);
    }
}

/// The pieces of `input` between `cuts`.
pub fn chunks<'a>(input: &'a [u8], cuts: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut prev = 0;
    cuts.iter()
        .copied()
        .chain(std::iter::once(input.len()))
        .map(move |c| {
            let s = &input[prev..c];
            prev = c;
            s
        })
}

/// `data` split at NUL bytes into at most `n` parts (the last part keeps any further NULs).
pub fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    data.splitn(n, |&b| b == 0).collect()
}

/// Releases everything unchanged at once.
pub struct Pass;
impl StreamScanner for Pass {
    fn scan(&mut self, _: ChannelKey, pending: &mut String, _: bool) -> usize {
        pending.len()
    }
}

/// Holds everything until its channel ends.
pub struct HoldAll;
impl StreamScanner for HoldAll {
    fn scan(&mut self, _: ChannelKey, pending: &mut String, end: bool) -> usize {
        if end {
            pending.len()
        } else {
            0
        }
    }
}

/// The events of a whole stream as the filters read it: the unterminated tail flushed
/// (leniently dispatched). `None` when an event is over `max_event_bytes`.
pub fn events(bytes: &[u8], max_event_bytes: usize) -> Option<Vec<SseEvent>> {
    let mut p = SseParser::new(max_event_bytes);
    let mut out = Vec::new();
    p.push(bytes, &mut |e| out.push(e)).ok()?;
    p.flush_unterminated(&mut |e| out.push(e)).ok()?;
    Some(out)
}

/// Decode a stream's events into deltas. `Err` when an event other than the last cannot be
/// decoded; an undecodable last event (a truncated tail, which the rewriter passes on as it
/// came) is skipped.
pub fn decode_all(shape: ApiShape, events: &[SseEvent]) -> Result<Vec<Delta>, String> {
    let mut d = StreamDecoder::new(shape);
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let before = out.len();
        if let Err(err) = d.decode(e, &mut out) {
            if i + 1 == events.len() {
                out.truncate(before);
                break;
            }
            return Err(err.to_string());
        }
    }
    Ok(out)
}

/// Fold deltas as a client would; `None` past the assembler's bounds.
pub fn assemble(deltas: &[Delta]) -> Option<Assembled> {
    let mut a = StreamAssembler::new(1 << 24);
    for d in deltas {
        a.apply(d).ok()?;
    }
    Some(a.into_result())
}

/// Parse, decode and assemble a whole stream (`None` when any step fails).
pub fn assemble_bytes(shape: ApiShape, bytes: &[u8]) -> Option<Assembled> {
    let evs = events(bytes, 1 << 24)?;
    let deltas = decode_all(shape, &evs).ok()?;
    assemble(&deltas)
}

/// Lossy UTF-8 text of a payload, bounded to `max` bytes (cut at a char boundary).
pub fn text(payload: &[u8], max: usize) -> String {
    let mut s = String::from_utf8_lossy(payload).into_owned();
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

pub mod pii;
