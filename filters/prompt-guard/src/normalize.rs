//! Text normalisation: the views the detectors scan, each with an exact map back to the
//! original input.
//!
//! * [`ViewKind::Base`]: zero-width / invisible / bidi characters removed (tag characters
//!   U+E0020–U+E007E turned back into the ASCII they smuggle, as a separate word), Unicode NFKC,
//!   lower case, homoglyphs folded to Latin inside words that mix Latin with Cyrillic / Greek /
//!   Armenian letters (genuine Russian or Greek words are left alone), whitespace runs collapsed
//!   to one ASCII space, trimmed. Invisible characters go first, so that a mark hidden behind a
//!   zero-width space still composes; otherwise the result is NFKC of the whole string.
//! * [`ViewKind::Deobfuscated`] (only when it differs from Base): letters separated by the same
//!   separator collapsed (`i.g.n.o.r.e` → `ignore`), then leetspeak undone inside tokens that
//!   mix letters with leet characters (`1gn0r3` → `ignore`).
//! * [`ViewKind::Reversed`]: the Base text reversed by characters.
//!
//! Every view keeps a compact span map (runs of 1:1 bytes plus "atomic" pieces that map as a
//! whole), so [`View::original_range`] turns any view range into the original byte range. Pure
//! ASCII takes a fast path (ASCII is NFKC-invariant); all buffers are reused across calls.
//!
//! ```
//! use prompt_guard::normalize::{Normalizer, ViewKind};
//! let mut n = Normalizer::new();
//! let mut views = Vec::new();
//! n.views("Ｐｌｅａｓｅ  i.g.n.o.r.e", &mut views);
//! assert_eq!(views[0].text, "please i.g.n.o.r.e");
//! assert!(views.iter().any(|v| v.kind == ViewKind::Deobfuscated && v.text == "please ignore"));
//! ```

use unicode_normalization::char::{
    canonical_combining_class, decompose_compatible, is_combining_mark,
};
use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

/// Longest NFKC segment (a starter and the characters that may combine with it) normalised as
/// one piece; longer runs of combining marks are cut here (cf. the Stream-Safe Text Format), so
/// the work per character stays bounded.
const MAX_SEGMENT: usize = 32;

/// Longest separator run (in bytes) between collapsed letters (`". "`, `" - "`).
const MAX_SEPARATOR: usize = 3;

/// Which normalised view of an input this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ViewKind {
    /// NFKC, case-folded, invisible characters removed, homoglyphs folded, whitespace collapsed.
    #[default]
    Base,
    /// Base with separators between letters collapsed and leetspeak undone.
    Deobfuscated,
    /// Base reversed by characters.
    Reversed,
}

/// One piece of the map from view bytes to original bytes. The piece starts at view byte `out`
/// and runs up to the next piece (or the end of the text). `atom == 0`: view byte `out + k` is
/// original byte `src + k` (whole characters of equal length on both sides); otherwise every
/// byte of the piece maps to the whole original range `[src, src + atom)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    out: u32,
    src: u32,
    atom: u32,
}

/// One normalised view of an input, with a map back to the original.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Which view this is.
    pub kind: ViewKind,
    /// The normalised text.
    pub text: String,
    /// Span map, in the coordinates of the un-reversed text.
    map: Vec<Span>,
    /// The text is the mapped text reversed by characters.
    reversed: bool,
}

impl View {
    /// Byte range in the ORIGINAL input that produced view bytes `[start, end)`: from the start
    /// of the first source character through the end of the last one. Out-of-range or
    /// mid-character offsets are clamped / widened to whole characters; an empty range maps to
    /// an empty range at the corresponding original position. Never panics.
    pub fn original_range(&self, start: usize, end: usize) -> (usize, usize) {
        let len = self.text.len();
        let mut e = end.min(len);
        let mut s = start.min(e);
        while s > 0 && !self.text.is_char_boundary(s) {
            s -= 1;
        }
        while e < len && !self.text.is_char_boundary(e) {
            e += 1;
        }
        let (a, b) = if self.reversed {
            (len.saturating_sub(e), len.saturating_sub(s))
        } else {
            (s, e)
        };
        if a >= b {
            let p = if a < len {
                src_start(&self.map, a)
            } else {
                src_end(&self.map, len)
            };
            return (p, p);
        }
        (src_start(&self.map, a), src_end(&self.map, b))
    }
}

/// Start (original byte) of the source of the character starting at view byte `pos` (a char
/// boundary of the un-reversed coordinates, `pos < len`).
fn src_start(map: &[Span], pos: usize) -> usize {
    let pos32 = to_u32(pos);
    let idx = map.partition_point(|s| s.out <= pos32);
    match idx.checked_sub(1).and_then(|i| map.get(i)) {
        Some(sp) if sp.atom == 0 => {
            (sp.src as usize).saturating_add(pos.saturating_sub(sp.out as usize))
        }
        Some(sp) => sp.src as usize,
        None => 0,
    }
}

/// End (original byte) of the source of the character ending at view byte `end` (a char
/// boundary of the un-reversed coordinates).
fn src_end(map: &[Span], end: usize) -> usize {
    let Some(last_byte) = end.checked_sub(1) else {
        return 0;
    };
    let pos32 = to_u32(last_byte);
    let idx = map.partition_point(|s| s.out <= pos32);
    match idx.checked_sub(1).and_then(|i| map.get(i)) {
        Some(sp) if sp.atom == 0 => {
            (sp.src as usize).saturating_add(end.saturating_sub(sp.out as usize))
        }
        Some(sp) => (sp.src as usize).saturating_add(sp.atom as usize),
        None => 0,
    }
}

fn to_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Map view bytes from `out` on, 1:1, to original bytes from `src` on.
fn push_linear(map: &mut Vec<Span>, out: usize, src: usize) {
    let (out, src) = (to_u32(out), to_u32(src));
    if let Some(last) = map.last() {
        if last.atom == 0
            && out
                .checked_sub(last.out)
                .and_then(|d| last.src.checked_add(d))
                == Some(src)
        {
            return;
        }
    }
    map.push(Span { out, src, atom: 0 });
}

/// Map view bytes from `out` on, as a whole, to original bytes `[src, src + len)`.
fn push_atomic(map: &mut Vec<Span>, out: usize, src: usize, len: usize) {
    let (out, src, atom) = (to_u32(out), to_u32(src), to_u32(len.max(1)));
    if let Some(last) = map.last() {
        if last.atom == atom && last.src == src {
            return;
        }
    }
    map.push(Span { out, src, atom });
}

/// Push `ch` mapped to the original range `[src, src + len)`.
fn push_mapped(text: &mut String, map: &mut Vec<Span>, ch: char, src: usize, len: usize) {
    let o = text.len();
    text.push(ch);
    if ch.len_utf8() == len {
        push_linear(map, o, src);
    } else {
        push_atomic(map, o, src, len);
    }
}

/// Copies view ranges of a source view (text + map) into a derived view, composing the maps.
/// Copies must come in increasing source order (the cursor only moves forward).
struct Composer<'a> {
    src_map: &'a [Span],
    src_len: usize,
    k: usize,
}

impl Composer<'_> {
    /// Record that derived bytes from `out` on correspond 1:1 to source view bytes `[b0, b1)`.
    fn map_range(&mut self, out_map: &mut Vec<Span>, out: usize, b0: usize, b1: usize) {
        let mut p = b0;
        while p < b1 {
            while let Some(nx) = self.src_map.get(self.k.saturating_add(1)) {
                if (nx.out as usize) <= p {
                    self.k = self.k.saturating_add(1);
                } else {
                    break;
                }
            }
            let Some(sp) = self.src_map.get(self.k) else {
                return;
            };
            let sp_end = self
                .src_map
                .get(self.k.saturating_add(1))
                .map_or(self.src_len, |s| s.out as usize);
            let o = out.saturating_add(p - b0);
            if sp.atom == 0 {
                let off = p.saturating_sub(sp.out as usize);
                push_linear(out_map, o, (sp.src as usize).saturating_add(off));
            } else {
                push_atomic(out_map, o, sp.src as usize, sp.atom as usize);
            }
            if sp_end <= p {
                return;
            }
            p = sp_end;
        }
    }
}

/// Builds views of inputs; create once per stream and reuse (it keeps its scratch buffers).
#[derive(Debug, Default)]
pub struct Normalizer {
    seg: Vec<char>,
    nfkc: Vec<char>,
    fold: Vec<(char, u32, u32)>,
    pool: Vec<View>,
    scratch_text: String,
    scratch_map: Vec<Span>,
}

impl Normalizer {
    /// A normaliser with empty scratch buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fill `out` with the views of `input`, reusing the Views' buffers: always `Base`, then
    /// `Deobfuscated` only when it differs from Base, then `Reversed`.
    pub fn views(&mut self, input: &str, out: &mut Vec<View>) {
        self.pool.append(out);
        let mut base = self.pool.pop().unwrap_or_default();
        self.build_base(input, &mut base);

        let mut deob = self.pool.pop().unwrap_or_default();
        let has_deob = self.build_deobfuscated(&base, &mut deob);

        let mut rev = self.pool.pop().unwrap_or_default();
        build_reversed(&base, &mut rev);

        out.push(base);
        if has_deob {
            out.push(deob);
        } else {
            self.pool.push(deob);
        }
        out.push(rev);
    }

    /// Just the Base view text (used by the statistical model and its trainer).
    pub fn base(&mut self, input: &str, out: &mut String) {
        let mut v = self.pool.pop().unwrap_or_default();
        std::mem::swap(&mut v.text, out);
        self.build_base(input, &mut v);
        std::mem::swap(&mut v.text, out);
        self.pool.push(v);
    }

    fn build_base(&mut self, input: &str, view: &mut View) {
        view.kind = ViewKind::Base;
        view.reversed = false;
        view.text.clear();
        view.map.clear();
        // Offsets are u32: anything beyond 4 GiB is ignored (far above any body limit).
        let mut cut = input.len().min(u32::MAX as usize);
        while cut > 0 && !input.is_char_boundary(cut) {
            cut -= 1;
        }
        let input = input.get(..cut).unwrap_or("");
        let mut b = BaseBuilder {
            input,
            text: &mut view.text,
            map: &mut view.map,
            seg: &mut self.seg,
            nfkc: &mut self.nfkc,
            fold: &mut self.fold,
            seg_start: 0,
            seg_end: 0,
            seg_stable: false,
            pending: None,
            word: None,
            in_tag: false,
            last_tag: (0, 0),
        };
        b.seg.clear();
        b.run();
    }

    /// Build the Deobfuscated view from `base`; false when it would equal Base.
    fn build_deobfuscated(&mut self, base: &View, deob: &mut View) -> bool {
        deob.kind = ViewKind::Deobfuscated;
        deob.reversed = false;
        deob.text.clear();
        deob.map.clear();
        self.scratch_text.clear();
        self.scratch_map.clear();
        let collapsed =
            collapse_separators(base, &mut self.scratch_text, &mut self.scratch_map, true);
        let (stage, stage_map): (&str, &[Span]) = if collapsed {
            (&self.scratch_text, &self.scratch_map)
        } else {
            (&base.text, &base.map)
        };
        let leet = undo_leet(stage, &mut deob.text, true);
        if !collapsed && !leet {
            return false;
        }
        if !leet {
            deob.text.push_str(stage);
        }
        deob.map.extend_from_slice(stage_map);
        true
    }
}

/// Word being tracked for mixed-script homoglyph folding.
#[derive(Debug, Clone, Copy)]
struct Word {
    start: usize,
    latin: bool,
    foreign: bool,
}

struct BaseBuilder<'a> {
    input: &'a str,
    text: &'a mut String,
    map: &'a mut Vec<Span>,
    seg: &'a mut Vec<char>,
    nfkc: &'a mut Vec<char>,
    fold: &'a mut Vec<(char, u32, u32)>,
    /// Original byte range of the pending NFKC segment.
    seg_start: usize,
    seg_end: usize,
    /// The segment is one character that is already NFKC on its own.
    seg_stable: bool,
    /// Collapsed whitespace not yet emitted: original (start, len).
    pending: Option<(usize, usize)>,
    /// Word tracked for homoglyph folding (only once it contains a Cyrillic/Greek/... letter).
    word: Option<Word>,
    /// The last visible character came from tag characters.
    in_tag: bool,
    last_tag: (usize, usize),
}

impl BaseBuilder<'_> {
    fn run(&mut self) {
        let bytes = self.input.as_bytes();
        let len = bytes.len();
        let mut i = 0;
        while i < len {
            let rest = bytes.get(i..).unwrap_or(&[]);
            let j = i + ascii_prefix_len(rest);
            let next = self.input.get(j..).and_then(|s| s.chars().next());
            let class = next.map(classify);
            if j > i {
                self.flush_segment();
                self.leave_tag();
                let may_combine = matches!(
                    class,
                    Some(
                        CharClass::Invisible
                            | CharClass::Text {
                                boundary: false,
                                ..
                            }
                    )
                );
                if may_combine {
                    // The last ASCII character may combine with the marks that follow.
                    self.ascii_run(i, j - 1);
                    self.seg_start = j - 1;
                    self.seg_end = j;
                    self.seg_stable = true;
                    self.seg
                        .push(bytes.get(j - 1).map_or(' ', |&b| char::from(b)));
                } else {
                    self.ascii_run(i, j);
                }
            }
            match (next, class) {
                (Some(c), Some(class)) => {
                    let e = j + c.len_utf8();
                    self.non_ascii(c, class, j, e);
                    i = e;
                }
                _ => i = j.max(i + 1),
            }
        }
        self.flush_segment();
        self.close_word();
    }

    /// ASCII bytes `[i, j)`: NFKC-invariant, so only case, whitespace and word tracking.
    fn ascii_run(&mut self, i: usize, j: usize) {
        let bytes = self.input.as_bytes();
        let mut k = i;
        while k < j && self.word.is_some() {
            let b = bytes.get(k).copied().unwrap_or(b' ');
            self.emit(char::from(b.to_ascii_lowercase()), k, 1);
            k += 1;
        }
        while k < j {
            let b = bytes.get(k).copied().unwrap_or(b' ');
            if is_ascii_ws(b) {
                if !self.text.is_empty() && self.pending.is_none() {
                    self.pending = Some((k, 1));
                }
                k += 1;
                continue;
            }
            // One chunk up to the next whitespace that needs collapsing: single spaces between
            // visible characters map 1:1 and stay inside the chunk.
            let chunk = bytes.get(k..j).unwrap_or(&[]);
            let mut m = 1;
            while let Some(&c) = chunk.get(m) {
                if !is_ascii_ws(c) {
                    m += 1;
                } else if c == b' ' && chunk.get(m + 1).is_some_and(|&d| !is_ascii_ws(d)) {
                    m += 2;
                } else {
                    break;
                }
            }
            let m = k + m;
            self.emit_pending();
            let o = self.text.len();
            self.text.push_str(self.input.get(k..m).unwrap_or(""));
            if let Some(t) = self.text.get_mut(o..) {
                t.make_ascii_lowercase();
            }
            push_linear(self.map, o, k);
            k = m;
        }
    }

    fn non_ascii(&mut self, c: char, class: CharClass, s: usize, e: usize) {
        let (stable, boundary) = match class {
            CharClass::Invisible => return,
            CharClass::Text { stable, boundary } => (stable, boundary),
            CharClass::Tag => {
                self.tag(c, s, e);
                return;
            }
        };
        self.leave_tag();
        if boundary || self.seg.is_empty() || self.seg.len() >= MAX_SEGMENT {
            self.flush_segment();
            self.seg_start = s;
            self.seg_stable = stable;
        } else {
            self.seg_stable = false;
        }
        self.seg.push(c);
        self.seg_end = e;
    }

    /// A tag character: the ASCII it encodes, as a separate word.
    fn tag(&mut self, c: char, s: usize, e: usize) {
        self.flush_segment();
        if !self.in_tag {
            self.in_tag = true;
            // Smuggled text is a separate word from the visible text around it.
            self.emit(' ', s, e - s);
        }
        self.last_tag = (s, e - s);
        let cp = u32::from(c) - 0xE0000;
        if (0x20..0x7F).contains(&cp) {
            let a = char::from_u32(cp).unwrap_or(' ').to_ascii_lowercase();
            self.emit(a, s, e - s);
        }
    }

    fn leave_tag(&mut self) {
        if self.in_tag {
            self.in_tag = false;
            let (s, l) = self.last_tag;
            self.emit(' ', s, l);
        }
    }

    fn flush_segment(&mut self) {
        if self.seg.is_empty() {
            return;
        }
        let (s, len) = (self.seg_start, self.seg_end.saturating_sub(self.seg_start));
        if let [c] = self.seg[..] {
            // Single characters: stable ones and full-width ASCII need no NFKC machinery.
            let single = if self.seg_stable {
                Some(c)
            } else {
                fullwidth_ascii(c)
            };
            if let Some(c) = single {
                self.seg.clear();
                self.emit_folded(c, s, len);
                return;
            }
        }
        self.nfkc.clear();
        self.nfkc.extend(self.seg.iter().copied().nfkc());
        self.seg.clear();
        let mut idx = 0;
        while let Some(&c) = self.nfkc.get(idx) {
            self.emit_folded(c, s, len);
            idx += 1;
        }
    }

    /// Case-fold `c` (NFKC output) and emit it.
    fn emit_folded(&mut self, c: char, s: usize, len: usize) {
        if c.is_ascii() {
            self.emit(c.to_ascii_lowercase(), s, len);
        } else if let Some(l) = lower_fast(c) {
            self.emit(l, s, len);
        } else {
            for l in c.to_lowercase() {
                self.emit(l, s, len);
            }
        }
    }

    fn emit_pending(&mut self) {
        if let Some((ps, pl)) = self.pending.take() {
            push_mapped(self.text, self.map, ' ', ps, pl);
        }
    }

    /// Emit one final (normalised, lower-case) character mapped to original `[s, s + len)`.
    fn emit(&mut self, ch: char, s: usize, len: usize) {
        if ch.is_whitespace() {
            self.close_word();
            if !self.text.is_empty() && self.pending.is_none() {
                self.pending = Some((s, len));
            }
            return;
        }
        self.emit_pending();
        match &mut self.word {
            Some(w) => {
                if is_word_char(ch) {
                    w.latin |= is_latin_letter(ch);
                    w.foreign |= is_foreign_letter(ch);
                } else {
                    self.close_word();
                }
            }
            None => {
                if is_foreign_letter(ch) {
                    let mut start = self.text.len();
                    let mut latin = false;
                    for (i, c) in self.text.char_indices().rev() {
                        if !is_word_char(c) {
                            break;
                        }
                        start = i;
                        latin |= is_latin_letter(c);
                    }
                    self.word = Some(Word {
                        start,
                        latin,
                        foreign: true,
                    });
                }
            }
        }
        push_mapped(self.text, self.map, ch, s, len);
    }

    fn close_word(&mut self) {
        if let Some(w) = self.word.take() {
            if w.latin && w.foreign {
                self.fold_word(w.start);
            }
        }
    }

    /// Fold homoglyphs in the mixed-script word at the tail of the text (from `start`).
    fn fold_word(&mut self, start: usize) {
        self.fold.clear();
        let Some(tail) = self.text.get(start..) else {
            return;
        };
        let start32 = to_u32(start);
        let mut k = self
            .map
            .partition_point(|s| s.out <= start32)
            .saturating_sub(1);
        for (off, c) in tail.char_indices() {
            let pos = start + off;
            while self
                .map
                .get(k + 1)
                .is_some_and(|nx| (nx.out as usize) <= pos)
            {
                k += 1;
            }
            let Some(sp) = self.map.get(k) else {
                return;
            };
            let (src, len) = if sp.atom == 0 {
                let src = (sp.src as usize).saturating_add(pos.saturating_sub(sp.out as usize));
                (src, c.len_utf8())
            } else {
                (sp.src as usize, sp.atom as usize)
            };
            let orig = self.input.get(src..src.saturating_add(len)).and_then(|t| {
                let mut it = t.chars();
                match (it.next(), it.next()) {
                    (Some(o), None) => Some(o),
                    _ => None,
                }
            });
            let folded = orig
                .filter(|&o| o != c)
                .and_then(fold_upper)
                .or_else(|| fold_lower(c))
                .unwrap_or(c);
            self.fold.push((folded, to_u32(src), to_u32(len)));
        }
        self.text.truncate(start);
        let keep = self.map.partition_point(|s| s.out < start32);
        self.map.truncate(keep);
        for &(c, src, len) in self.fold.iter() {
            push_mapped(self.text, self.map, c, src as usize, len as usize);
        }
    }
}

/// Common blocks whose characters are all NFKC-stable starters (combining class 0, NFKC quick
/// check Yes; verified by a unit test), answered without the table look-ups.
fn is_stable_fast(c: char) -> bool {
    matches!(c, '\u{00C0}'..='\u{00FF}' | '\u{0388}'..='\u{03CE}' | '\u{0400}'..='\u{0482}'
        | '\u{048A}'..='\u{04FF}' | '\u{05D0}'..='\u{05EA}' | '\u{0621}'..='\u{064A}'
        | '\u{0905}'..='\u{0939}' | '\u{0E01}'..='\u{0E30}' | '\u{2010}' | '\u{2012}'..='\u{2016}'
        | '\u{2018}'..='\u{2023}' | '\u{2027}' | '\u{3041}'..='\u{3096}' | '\u{30A1}'..='\u{30FA}'
        | '\u{30FC}' | '\u{4E00}'..='\u{9FFF}' | '\u{AC00}'..='\u{D7A3}')
}

/// Lower case of a non-ASCII character: Latin-1 and basic Cyrillic directly, caseless
/// scripts as they are, everything else through the Unicode tables.
fn lower_fast(c: char) -> Option<char> {
    let cp = u32::from(c);
    match c {
        '\u{00C0}'..='\u{00DE}' if c != '\u{00D7}' => char::from_u32(cp + 0x20),
        '\u{00DF}'..='\u{00FF}' | '\u{0430}'..='\u{045F}' => Some(c),
        '\u{0410}'..='\u{042F}' => char::from_u32(cp + 0x20),
        '\u{0400}'..='\u{040F}' => char::from_u32(cp + 0x50),
        '\u{0391}'..='\u{03A9}' if c != '\u{03A2}' => char::from_u32(cp + 0x20),
        '\u{03AC}'..='\u{03CE}' => Some(c),
        _ if is_caseless(c) => Some(c),
        _ => None,
    }
}

/// Blocks of scripts without letter case (Hebrew, Arabic, Indic, Thai, Tibetan, CJK, kana,
/// Hangul, Yi...): lower-casing is the identity there, so skip the table look-up.
fn is_caseless(c: char) -> bool {
    matches!(c, '\u{0590}'..='\u{08FF}' | '\u{0900}'..='\u{0FFF}' | '\u{2000}'..='\u{206F}'
        | '\u{3000}'..='\u{A63F}' | '\u{AC00}'..='\u{D7FF}')
}

/// Length of the ASCII prefix of `b` (whole 32-byte blocks checked with `is_ascii`).
fn ascii_prefix_len(b: &[u8]) -> usize {
    let mut n = 0;
    for block in b.chunks(32) {
        if block.is_ascii() {
            n += block.len();
        } else {
            return n + block.iter().position(|&x| x >= 0x80).unwrap_or(block.len());
        }
    }
    n
}

fn is_ascii_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// How the Base view treats a non-ASCII character.
#[derive(Debug, Clone, Copy)]
enum CharClass {
    /// Dropped.
    Invisible,
    /// A tag character (U+E0000–U+E007F).
    Tag,
    /// Text. `stable`: NFKC leaves it alone and it starts a segment; `boundary`: nothing before
    /// it can combine with it (its full decomposition starts with a stable starter).
    Text { stable: bool, boundary: bool },
}

fn classify(c: char) -> CharClass {
    if is_invisible(c) {
        return CharClass::Invisible;
    }
    if ('\u{E0000}'..='\u{E007F}').contains(&c) {
        return CharClass::Tag;
    }
    if fullwidth_ascii(c).is_some() {
        return CharClass::Text {
            stable: false,
            boundary: true,
        };
    }
    let stable = is_stable_fast(c)
        || (canonical_combining_class(c) == 0
            && is_nfkc_quick(std::iter::once(c)) == IsNormalized::Yes);
    let boundary = stable || {
        let mut first = None;
        decompose_compatible(c, |d| {
            if first.is_none() {
                first = Some(d);
            }
        });
        match first {
            Some(d) => {
                canonical_combining_class(d) == 0
                    && is_nfkc_quick(std::iter::once(d)) == IsNormalized::Yes
            }
            None => true,
        }
    };
    CharClass::Text { stable, boundary }
}

/// NFKC of a full-width ASCII form (U+FF01–U+FF5E) on its own: the ASCII character.
fn fullwidth_ascii(c: char) -> Option<char> {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(u32::from(c) - 0xFEE0),
        _ => None,
    }
}

/// Zero-width, invisible and bidi control characters, dropped from every view.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FFA0}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{FEFF}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0100}'..='\u{E01EF}')
}

fn is_word_char(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric()
    } else {
        is_alnum_non_ascii(c) || is_combining_mark(c)
    }
}

/// `char::is_alphanumeric` for non-ASCII characters, with the common letter blocks answered
/// without the table search.
fn is_alnum_non_ascii(c: char) -> bool {
    match c {
        '\u{00C0}'..='\u{024F}' => c != '\u{00D7}' && c != '\u{00F7}',
        '\u{0400}'..='\u{0481}' | '\u{048A}'..='\u{052F}' => true,
        '\u{3041}'..='\u{3096}' | '\u{30A1}'..='\u{30FA}' => true,
        '\u{4E00}'..='\u{9FFF}' | '\u{AC00}'..='\u{D7A3}' => true,
        '\u{2000}'..='\u{206F}' | '\u{3000}'..='\u{3003}' => false,
        _ => c.is_alphanumeric(),
    }
}

fn is_latin_letter(c: char) -> bool {
    c.is_ascii_alphabetic()
        || (('\u{00C0}'..='\u{024F}').contains(&c) && c != '\u{00D7}' && c != '\u{00F7}')
        || ('\u{0250}'..='\u{02AF}').contains(&c)
        || ('\u{1E00}'..='\u{1EFF}').contains(&c)
        || ('\u{2C60}'..='\u{2C7F}').contains(&c)
        || ('\u{A720}'..='\u{A7FF}').contains(&c)
        || ('\u{AB30}'..='\u{AB6F}').contains(&c)
}

/// Letters of scripts with Latin look-alikes (Greek, Cyrillic, Armenian, Cherokee).
fn is_foreign_letter(c: char) -> bool {
    match c {
        '\u{0370}'..='\u{052F}' => !matches!(
            c,
            '\u{0375}' | '\u{037E}' | '\u{0384}' | '\u{0385}' | '\u{0387}' | '\u{03F6}' | '\u{0482}'
                ..='\u{0489}'
        ),
        '\u{0531}'..='\u{0556}' | '\u{0560}'..='\u{0588}' => true,
        '\u{13A0}'..='\u{13F5}' | '\u{13F8}'..='\u{13FD}' | '\u{AB70}'..='\u{ABBF}' => true,
        '\u{1C80}'..='\u{1C88}' | '\u{2DE0}'..='\u{2DFF}' => true,
        '\u{A640}'..='\u{A66E}' | '\u{A680}'..='\u{A69D}' => true,
        '\u{1F00}'..='\u{1FFF}' => c.is_alphabetic(),
        _ => false,
    }
}

/// Latin look-alike of an original capital letter (before case folding).
fn fold_upper(c: char) -> Option<char> {
    Some(match c {
        // Cyrillic
        'А' => 'a',
        'В' => 'b',
        'С' => 'c',
        'Е' => 'e',
        'Н' => 'h',
        'І' => 'i',
        'Ј' => 'j',
        'К' => 'k',
        'М' => 'm',
        'О' => 'o',
        'Р' => 'p',
        'Ѕ' => 's',
        'Т' => 't',
        'Х' => 'x',
        'У' | 'Ү' => 'y',
        'Ԁ' => 'd',
        'Ԛ' => 'q',
        'Ԝ' => 'w',
        'Ӏ' => 'l',
        'Ѵ' => 'v',
        // Greek
        'Α' => 'a',
        'Β' => 'b',
        'Ε' => 'e',
        'Ζ' => 'z',
        'Η' => 'h',
        'Ι' => 'i',
        'Κ' => 'k',
        'Μ' => 'm',
        'Ν' => 'n',
        'Ο' => 'o',
        'Ρ' => 'p',
        'Τ' => 't',
        'Υ' => 'y',
        'Χ' => 'x',
        'Ϲ' => 'c',
        'Ϳ' => 'j',
        // Armenian
        'Օ' => 'o',
        'Ս' => 'u',
        'Տ' => 's',
        _ => return None,
    })
}

/// Latin look-alike of a lower-case letter.
fn fold_lower(c: char) -> Option<char> {
    Some(match c {
        // Cyrillic
        'а' => 'a',
        'с' => 'c',
        'ԁ' => 'd',
        'е' => 'e',
        'һ' => 'h',
        'і' => 'i',
        'ј' => 'j',
        'к' => 'k',
        'ӏ' => 'l',
        'о' => 'o',
        'р' => 'p',
        'ԛ' => 'q',
        'ѕ' => 's',
        'ԝ' => 'w',
        'х' => 'x',
        'у' | 'ү' => 'y',
        'ѵ' => 'v',
        'ё' => 'e',
        'ї' => 'i',
        // Greek
        'α' => 'a',
        'β' => 'b',
        'γ' => 'y',
        'ε' => 'e',
        'η' => 'n',
        'ι' => 'i',
        'κ' => 'k',
        'μ' => 'u',
        'ν' => 'v',
        'ο' => 'o',
        'ρ' => 'p',
        'τ' => 't',
        'υ' => 'u',
        'χ' => 'x',
        'ω' => 'w',
        'ϲ' => 'c',
        'ϳ' => 'j',
        'ά' => 'a',
        'έ' => 'e',
        'ί' => 'i',
        'ό' => 'o',
        'ύ' => 'u',
        // Armenian
        'օ' => 'o',
        'ս' => 'u',
        'հ' => 'h',
        'ո' => 'n',
        'ց' => 'g',
        'զ' => 'q',
        _ => return None,
    })
}

fn is_separator(b: u8) -> bool {
    matches!(
        b,
        b'.' | b'-' | b'_' | b'*' | b'|' | b'/' | b'+' | b' ' | b'~'
    )
}

/// Is the character at byte `i` alphanumeric, and how long is it?
fn alnum_at(text: &str, i: usize) -> Option<(bool, usize)> {
    let b = *text.as_bytes().get(i)?;
    if b < 0x80 {
        return Some((b.is_ascii_alphanumeric(), 1));
    }
    let c = text.get(i..)?.chars().next()?;
    Some((is_alnum_non_ascii(c), c.len_utf8()))
}

/// Next maximal run of alphanumeric characters at or after `from`: (start, end, one char?).
fn next_word(text: &str, from: usize) -> Option<(usize, usize, bool)> {
    let mut i = from;
    loop {
        let (alnum, l) = alnum_at(text, i)?;
        if alnum {
            break;
        }
        i += l;
    }
    let start = i;
    let mut count = 0usize;
    while let Some((true, l)) = alnum_at(text, i) {
        i += l;
        count += 1;
    }
    Some((start, i, count == 1))
}

/// Prefilter chunk size of the Deobfuscated passes: chunks that cannot hold a pattern are
/// skipped with a branch-free scan.
const CHUNK: usize = 128;

/// Byte flags for [`may_collapse`].
const F_ALNUM: u8 = 1; // ASCII alphanumeric
const F_LEAD2: u8 = 2; // lead byte of a 2-byte character
const F_CONT: u8 = 4; // continuation byte
const F_SEP: u8 = 8; // separator
const F_HIGH: u8 = 16; // lead byte of a 3- or 4-byte character
const F_E2: u8 = 32; // 0xE2
const F_80: u8 = 64; // 0x80 (after 0xE2: U+2000–U+203F, never alphanumeric)

fn collapse_flags(b: u8) -> u8 {
    (u8::from(b.is_ascii_alphanumeric()) * F_ALNUM)
        | (u8::from((0xC2..=0xDF).contains(&b)) * F_LEAD2)
        | (u8::from((0x80..=0xBF).contains(&b)) * F_CONT)
        | (u8::from(is_separator(b)) * F_SEP)
        | (u8::from(b >= 0xE0) * F_HIGH)
        | (u8::from(b == 0xE2) * F_E2)
        | (u8::from(b == 0x80) * F_80)
}

/// Could a separated-letters run start in this window (which begins one byte before the chunk
/// and ends 4 bytes after it)? A superset test: a single ASCII or 2-byte character after a
/// non-alphanumeric, followed by a separator (and a single character or another separator), or
/// any 3/4-byte character other than general punctuation. Written as element-wise passes over
/// a fixed array so that it vectorises.
fn may_collapse(window: &[u8]) -> bool {
    const W: usize = CHUNK + 8;
    let mut f = [0u8; W];
    for (x, &b) in f.iter_mut().zip(window) {
        *x = collapse_flags(b);
    }
    let f = f.get(..window.len().min(W)).unwrap_or(&[]);
    let hit = f
        .iter()
        .zip(f.iter().skip(1))
        .zip(f.iter().skip(2))
        .zip(f.iter().skip(3).zip(f.iter().skip(4)))
        .fold(0u8, |acc, (((&a, &b), &c), (&d, &e))| {
            let bit = |x: u8, m: u8| u8::from(x & m != 0);
            let not_alnum_a = 1 ^ bit(a, F_ALNUM | F_LEAD2);
            let any_char = F_ALNUM | F_LEAD2 | F_HIGH;
            let t1 = not_alnum_a
                & bit(b, F_ALNUM)
                & bit(c, F_SEP)
                & ((bit(d, any_char) & (1 ^ bit(e, any_char))) | bit(d, F_SEP));
            let t2 = not_alnum_a & bit(b, F_LEAD2) & bit(c, F_CONT) & bit(d, F_SEP);
            let high = bit(a, F_HIGH) & (1 ^ (bit(a, F_E2) & bit(b, F_80)));
            acc | t1 | t2 | high
        });
    hit != 0
}

/// Walk `text` chunk by chunk; for every chunk that passes `trigger`, call `region(from, limit)`
/// where `from` is the start of the unit (word / token, per `in_unit`) containing the chunk
/// start, never before what earlier regions reached. `region` returns how far it got (at a unit
/// boundary). The first and the last chunk are always examined.
fn for_regions(
    text: &str,
    trigger: impl Fn(&[u8]) -> bool,
    in_unit: impl Fn(char) -> bool,
    mut region: impl FnMut(usize, usize) -> usize,
) {
    let bytes = text.as_bytes();
    let len = bytes.len();
    let mut reached = 0usize;
    let mut chunk = 0usize;
    while chunk < len {
        let cend = chunk.saturating_add(CHUNK).min(len);
        let window = bytes
            .get(chunk.saturating_sub(1)..cend.saturating_add(4).min(len))
            .unwrap_or(&[]);
        if chunk != 0 && cend != len && !trigger(window) {
            chunk = cend;
            continue;
        }
        let mut from = chunk.max(reached);
        while !text.is_char_boundary(from) {
            from += 1;
        }
        if let Some(before) = text.get(reached..from) {
            for (i, c) in before.char_indices().rev() {
                if !in_unit(c) {
                    break;
                }
                from = reached + i;
            }
        }
        reached = region(from, cend).max(reached);
        chunk = cend.max(reached);
    }
}

/// Pass 1 of the Deobfuscated view: collapse runs of >= 3 single letters separated by the same
/// separator run. Writes nothing and returns false when nothing collapses.
fn collapse_separators(
    base: &View,
    out: &mut String,
    out_map: &mut Vec<Span>,
    prefilter: bool,
) -> bool {
    let text = base.text.as_str();
    let bytes = text.as_bytes();
    let mut comp = Composer {
        src_map: &base.map,
        src_len: text.len(),
        k: 0,
    };
    let mut copied = 0usize;
    let mut changed = false;
    let is_alnum = |c: char| {
        if c.is_ascii() {
            c.is_ascii_alphanumeric()
        } else {
            is_alnum_non_ascii(c)
        }
    };
    let trigger = |w: &[u8]| !prefilter || may_collapse(w);
    for_regions(text, trigger, is_alnum, |from, limit| {
        let mut pos = from;
        loop {
            let Some((w0, w1, single)) = next_word(text, pos) else {
                return text.len();
            };
            if w0 >= limit {
                return w0;
            }
            pos = w1;
            if !single {
                continue;
            }
            let Some((n0, n1, n_single)) = next_word(text, w1) else {
                return text.len();
            };
            let sep = bytes.get(w1..n0).unwrap_or(&[]);
            if !n_single
                || sep.is_empty()
                || sep.len() > MAX_SEPARATOR
                || !sep.iter().all(|&b| is_separator(b))
            {
                continue;
            }
            let mut count = 2;
            let mut end = n1;
            while let Some((m0, m1, m_single)) = next_word(text, end) {
                if !m_single || bytes.get(end..m0) != Some(sep) {
                    break;
                }
                count += 1;
                end = m1;
            }
            if count < 3 {
                continue;
            }
            // Emit the text before the run, then only the letters of the run. A gap that was
            // wider in the original than the run's narrowest gap (`i g n o r e   a l l`)
            // separated words: it stays a space.
            let o = out.len();
            out.push_str(text.get(copied..w0).unwrap_or(""));
            comp.map_range(out_map, o, copied, w0);
            // Width of a gap in the original: from the end of the letter before it to the
            // start of the letter after it (collapsed whitespace maps to its first byte only).
            let gap_len = |g0: usize, g1: usize| {
                let before = base.original_range(g0.saturating_sub(1), g0).1;
                let after = base.original_range(g1, g1 + 1).0;
                after.saturating_sub(before)
            };
            let mut narrowest = usize::MAX;
            let mut p = w0;
            // Only runs spaced by whitespace carry word gaps (`i.g.n` has none).
            while let Some((l0, l1, _)) = next_word(text, p).filter(|_| sep == b" ") {
                if l0 >= end {
                    break;
                }
                if l0 > p && p > w0 {
                    narrowest = narrowest.min(gap_len(p, l0));
                }
                p = l1;
            }
            let mut p = w0;
            while let Some((l0, l1, _)) = next_word(text, p) {
                if l0 >= end {
                    break;
                }
                if l0 > p && p > w0 && gap_len(p, l0) > narrowest {
                    let o = out.len();
                    out.push(' ');
                    comp.map_range(out_map, o, p, l0);
                }
                let o = out.len();
                out.push_str(text.get(l0..l1).unwrap_or(""));
                comp.map_range(out_map, o, l0, l1);
                p = l1;
            }
            copied = end;
            pos = end;
            changed = true;
        }
    });
    if changed {
        let o = out.len();
        out.push_str(text.get(copied..).unwrap_or(""));
        comp.map_range(out_map, o, copied, text.len());
    }
    changed
}

const LETTER: u8 = 1;
const LEET: u8 = 2;
const DIGIT: u8 = 3;

/// Token bytes of the leet pass: ASCII letters, leet characters, other digits; 0 otherwise.
fn leet_class(b: u8) -> u8 {
    match b {
        b'a'..=b'z' | b'A'..=b'Z' => LETTER,
        b'0' | b'1' | b'3' | b'4' | b'5' | b'7' | b'8' | b'@' | b'$' | b'!' | b'|' => LEET,
        b'2' | b'6' | b'9' => DIGIT,
        _ => 0,
    }
}

fn leet_letter(b: u8) -> Option<u8> {
    Some(match b {
        b'0' => b'o',
        b'1' | b'!' => b'i',
        b'3' => b'e',
        b'4' | b'@' => b'a',
        b'5' | b'$' => b's',
        b'7' => b't',
        b'8' => b'b',
        b'|' => b'l',
        _ => return None,
    })
}

/// 1 for digits and leet symbols (a superset of the leet bytes, cheap to vectorise).
fn maybe_leet(b: u8) -> u8 {
    u8::from(b.wrapping_sub(b'0') < 10)
        | u8::from(b == b'@')
        | u8::from(b == b'$')
        | u8::from(b == b'!')
        | u8::from(b == b'|')
}

/// Position of the next digit or leet symbol at or after `from` (32-byte blocks are tested
/// with a vectorisable fold first).
fn next_maybe_leet(bytes: &[u8], from: usize) -> Option<usize> {
    let rest = bytes.get(from..)?;
    let mut off = from;
    for block in rest.chunks(32) {
        if block.iter().fold(0u8, |acc, &b| acc | maybe_leet(b)) != 0 {
            return block
                .iter()
                .position(|&b| maybe_leet(b) != 0)
                .map(|k| off + k);
        }
        off += block.len();
    }
    None
}

/// Characters of a leet token: ASCII letters, digits, leet symbols, non-ASCII alphanumerics.
fn in_leet_token(c: char) -> bool {
    if c.is_ascii() {
        leet_class(c as u8) != 0
    } else {
        is_alnum_non_ascii(c)
    }
}

/// Pass 2 of the Deobfuscated view: undo leetspeak in tokens that mix ASCII letters with leet
/// characters (every substitution is one ASCII byte for another, so the map is unchanged).
/// Writes `out` (the whole text) only when something changes. With `prefilter`, only tokens
/// around digits / leet symbols are examined (found by a fast search); without, every token.
fn undo_leet(text: &str, out: &mut String, prefilter: bool) -> bool {
    let mut st = LeetState {
        copied: 0,
        changed: false,
    };
    let mut i = 0usize;
    if prefilter {
        while let Some(p) = next_maybe_leet(text.as_bytes(), i) {
            let mut t0 = p;
            while let Some(c) = text.get(i..t0).and_then(|t| t.chars().next_back()) {
                if !in_leet_token(c) {
                    break;
                }
                t0 -= c.len_utf8();
            }
            i = leet_token(text, t0, out, &mut st).max(p + 1);
        }
    } else {
        while i < text.len() {
            i = leet_token(text, i, out, &mut st);
        }
    }
    if st.changed {
        out.push_str(text.get(st.copied..).unwrap_or(""));
    }
    st.changed
}

struct LeetState {
    /// Text before this offset is already in `out` (once something changed).
    copied: usize,
    changed: bool,
}

/// Examine the token starting at `t0` (or skip one non-token character); returns where the next
/// token may start.
fn leet_token(text: &str, t0: usize, out: &mut String, st: &mut LeetState) -> usize {
    let bytes = text.as_bytes();
    let (mut letters, mut leet, mut foreign) = (false, false, false);
    let mut j = t0;
    while let Some(&b) = bytes.get(j) {
        let class = leet_class(b);
        if class != 0 {
            letters |= class == LETTER;
            leet |= class == LEET;
            j += 1;
        } else if b >= 0x80 {
            match text.get(j..).and_then(|t| t.chars().next()) {
                Some(c) if is_alnum_non_ascii(c) => {
                    foreign = true;
                    j += c.len_utf8();
                }
                _ => break,
            }
        } else {
            break;
        }
    }
    if j == t0 {
        // Not a token character: skip it.
        return t0
            + text
                .get(t0..)
                .and_then(|t| t.chars().next())
                .map_or(1, char::len_utf8);
    }
    if !(letters && leet) || foreign {
        return j;
    }
    let tok = bytes.get(t0..j).unwrap_or(&[]);
    // Trailing `!` is punctuation; `|` at either edge is a pipe.
    let lead_pipes = tok.iter().take_while(|&&b| b == b'|').count();
    let mut end = tok.len();
    while end > lead_pipes && matches!(tok.get(end - 1), Some(b'!' | b'|')) {
        end -= 1;
    }
    let inner = tok.get(lead_pipes..end).unwrap_or(&[]);
    // `@` in an e-mail address (`name@example.com`) or a mention (`@name`) is not leet.
    let email =
        bytes.get(j) == Some(&b'.') && bytes.get(j + 1).is_some_and(u8::is_ascii_alphanumeric);
    let at_ok = !email && inner.first() != Some(&b'@');
    let sub = |b: u8| {
        if b == b'@' && !at_ok {
            None
        } else {
            leet_letter(b)
        }
    };
    if !inner.iter().any(|&b| sub(b).is_some()) {
        return j;
    }
    if !st.changed {
        out.clear();
        st.changed = true;
    }
    out.push_str(text.get(st.copied..t0 + lead_pipes).unwrap_or(""));
    for &b in inner {
        out.push(char::from(sub(b).unwrap_or(b)));
    }
    st.copied = t0 + end;
    j
}

/// The Reversed view: Base reversed by characters; its map is Base's, read backwards.
fn build_reversed(base: &View, rev: &mut View) {
    rev.kind = ViewKind::Reversed;
    rev.reversed = true;
    rev.map.clear();
    rev.map.extend_from_slice(&base.map);
    let mut bytes = std::mem::take(&mut rev.text).into_bytes();
    bytes.clear();
    bytes.extend_from_slice(base.text.as_bytes());
    bytes.reverse();
    if base.text.is_ascii() {
        rev.text = String::from_utf8(bytes).unwrap_or_default();
        return;
    }
    // Each multi-byte character now reads continuation bytes first: put it back in order.
    let mut i = 0;
    let len = bytes.len();
    while i < len {
        if bytes.get(i).is_some_and(|&b| (b & 0xC0) == 0x80) {
            let mut j = i;
            while bytes.get(j).is_some_and(|&b| (b & 0xC0) == 0x80) {
                j += 1;
            }
            if let Some(ch) = bytes.get_mut(i..=j.min(len.saturating_sub(1))) {
                ch.reverse();
            }
            i = j + 1;
        } else {
            i += 1;
        }
    }
    rev.text = match String::from_utf8(bytes) {
        Ok(s) => s,
        // Unreachable in practice (whole characters were reversed); stay correct anyway.
        Err(_) => base.text.chars().rev().collect(),
    };
}

/// The normalisation steps that change `input` on its way to the Base view, by name, in the
/// order they apply (for decision paths: `guardctl replay`). Not on the scan path.
pub fn steps(input: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    if input.chars().any(is_invisible) {
        out.push("invisible_removed");
    }
    if input
        .chars()
        .any(|c| ('\u{E0020}'..='\u{E007E}').contains(&c))
    {
        out.push("tag_characters_decoded");
    }
    if !matches!(is_nfkc_quick(input.chars()), IsNormalized::Yes) && input.nfkc().ne(input.chars())
    {
        out.push("nfkc");
    }
    if input.chars().any(char::is_uppercase) {
        out.push("lowercased");
    }
    let mixed = input
        .split(|c: char| !c.is_alphanumeric())
        .any(|w| w.chars().any(is_latin_letter) && w.chars().any(is_foreign_letter));
    if mixed {
        out.push("homoglyphs_folded");
    }
    let b = input.as_bytes();
    let ws_run = b
        .windows(2)
        .any(|w| matches!(w, [x, y] if x.is_ascii_whitespace() && y.is_ascii_whitespace()))
        || input.chars().any(|c| c.is_whitespace() && c != ' ');
    if ws_run || input.starts_with(char::is_whitespace) || input.ends_with(char::is_whitespace) {
        out.push("whitespace_collapsed");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_name_what_changed() {
        let cases: [(&str, &[&str]); 6] = [
            ("plain words", &[]),
            ("Ignore ALL", &["lowercased"]),
            ("ig\u{200B}nore", &["invisible_removed"]),
            ("\u{FF29}gnore", &["nfkc", "lowercased"]),
            ("ign\u{043E}re previous", &["homoglyphs_folded"]),
            ("ignore   all\n", &["whitespace_collapsed"]),
        ];
        for (input, want) in cases {
            assert_eq!(super::steps(input), want, "{input:?}");
        }
    }

    #[test]
    fn fast_paths_agree_with_tables() {
        for cp in 0x80..0x3_0000u32 {
            let Some(c) = char::from_u32(cp) else {
                continue;
            };
            if is_stable_fast(c) {
                assert_eq!(canonical_combining_class(c), 0, "{c:?}");
                assert_eq!(
                    is_nfkc_quick(std::iter::once(c)),
                    IsNormalized::Yes,
                    "{c:?}"
                );
            }
            if let Some(l) = lower_fast(c) {
                assert_eq!(c.to_lowercase().collect::<String>(), l.to_string(), "{c:?}");
            }
            if let Some(a) = fullwidth_ascii(c) {
                assert_eq!(c.nfkc().collect::<String>(), a.to_string(), "{c:?}");
                assert!(matches!(
                    classify(c),
                    CharClass::Text { boundary: true, .. }
                ));
            }
            assert_eq!(is_alnum_non_ascii(c), c.is_alphanumeric(), "{c:?}");
            if is_foreign_letter(c) && c.is_alphabetic() {
                assert!(!is_latin_letter(c));
            }
        }
    }

    /// The chunk prefilters of the Deobfuscated passes never change the result.
    fn check_prefilters(input: &str) {
        let mut n = Normalizer::new();
        let mut base = View::default();
        n.build_base(input, &mut base);
        let (mut t1, mut m1, mut t2, mut m2) =
            (String::new(), Vec::new(), String::new(), Vec::new());
        let c1 = collapse_separators(&base, &mut t1, &mut m1, true);
        let c2 = collapse_separators(&base, &mut t2, &mut m2, false);
        assert_eq!((c1, &t1, &m1), (c2, &t2, &m2), "{input:?}");
        let (mut l1, mut l2) = (String::new(), String::new());
        let stage = if c1 { &t1 } else { &base.text };
        assert_eq!(
            undo_leet(stage, &mut l1, true),
            undo_leet(stage, &mut l2, false),
            "{input:?}"
        );
        assert_eq!(l1, l2, "{input:?}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        #[test]
        fn prefilters_are_exact(
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                "a", "b", "Z", "9", "1", "0", "@", "$", "!", "|", ".", "-", "_", "*", "/", "+", " ",
                ". ", " - ", "ab", "word", "ж", "и", "—", "\u{00e9}", "忽", ",", "x.y.z", "1gn0r3",
                "’", "«", "𝐱", "Ω",
            ]), 0..120)
        ) {
            check_prefilters(&pieces.concat());
        }
    }

    #[test]
    fn prefilters_across_chunk_edges() {
        for pad in 0..140 {
            let filler = "w".repeat(pad);
            for tail in [
                "i.g.n",
                "i. g. n. o",
                "1gn0r3",
                "a b c",
                " x y z",
                "p@ss",
                "x|y|z",
                "«a.b.c»",
                "и.г.н",
                "忽 略 指",
                "’x-y-z",
                "é é é",
                "a.и.忽",
                "и-a-b",
            ] {
                check_prefilters(&format!("{filler} {tail}"));
                check_prefilters(&format!("{filler}{tail} end"));
                check_prefilters(&format!("{tail}{filler}"));
            }
        }
    }

    #[test]
    fn spans_merge_for_ascii() {
        let mut n = Normalizer::new();
        let mut v = Vec::new();
        n.views("Hello World", &mut v);
        assert_eq!(v[0].text, "hello world");
        assert_eq!(v[0].map.len(), 1);
    }

    #[test]
    fn reversed_map_matches_base() {
        let mut n = Normalizer::new();
        let mut v = Vec::new();
        n.views("ab ｃ", &mut v);
        let rev = v.iter().find(|v| v.kind == ViewKind::Reversed).unwrap();
        assert_eq!(rev.text, "c ba");
        assert_eq!(rev.original_range(0, 1), (3, 6));
        assert_eq!(rev.original_range(2, 4), (0, 2));
    }
}
