//! Validators: what makes a pattern match an entity (checksums, ranges, digit counts).
//! Pure functions over the matched text; none allocates on the hot path, none panics.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Luhn checksum over ASCII digits (other bytes ignored). False for fewer than 2 digits.
pub fn luhn(s: &str) -> bool {
    luhn_digits(
        s.bytes()
            .filter(u8::is_ascii_digit)
            .map(|b| b.wrapping_sub(b'0')),
    )
}

/// Luhn over digit values (0..=9), most significant first.
fn luhn_digits<I: DoubleEndedIterator<Item = u8>>(digits: I) -> bool {
    let mut sum: u32 = 0;
    let mut count: usize = 0;
    for (i, d) in digits.rev().enumerate() {
        let mut v = u32::from(d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum = (sum + v) % 10;
        count = i.saturating_add(1);
    }
    count >= 2 && sum == 0
}

/// Numeric value of the first `k` digits (`None` when there are fewer).
fn prefix_value(digits: &[u8], k: usize) -> Option<u32> {
    let head = digits.get(..k)?;
    Some(head.iter().fold(0u32, |acc, &d| {
        acc.saturating_mul(10).saturating_add(u32::from(d))
    }))
}

/// Card number (digits with optional spaces/dashes): issuer range + length + Luhn.
///
/// Separators: one kind only (all spaces or all dashes), single, between digits.
pub fn credit_card(s: &str) -> bool {
    let mut digits = [0u8; 19];
    let mut n = 0usize;
    let mut sep: Option<u8> = None;
    let mut prev_sep = true; // also rejects a leading separator
    for b in s.bytes() {
        match b {
            b'0'..=b'9' => {
                let Some(slot) = digits.get_mut(n) else {
                    return false;
                };
                *slot = b - b'0';
                n += 1;
                prev_sep = false;
            }
            b' ' | b'-' => {
                if prev_sep || sep.is_some_and(|x| x != b) {
                    return false;
                }
                sep = Some(b);
                prev_sep = true;
            }
            _ => return false,
        }
    }
    if prev_sep {
        return false;
    }
    let Some(d) = digits.get(..n) else {
        return false;
    };
    card_issuer_ok(d) && luhn_digits(d.iter().copied())
}

/// Known issuer prefix with a length that issuer uses.
fn card_issuer_ok(d: &[u8]) -> bool {
    let n = d.len();
    let p = |k| prefix_value(d, k).unwrap_or(0);
    let (p1, p2, p3, p4, p6) = (p(1), p(2), p(3), p(4), p(6));
    let visa = p1 == 4 && matches!(n, 13 | 16 | 19);
    let mastercard = n == 16 && ((51..=55).contains(&p2) || (2221..=2720).contains(&p4));
    let amex = n == 15 && (p2 == 34 || p2 == 37);
    let discover = (16..=19).contains(&n)
        && (p4 == 6011
            || (644..=649).contains(&p3)
            || p2 == 65
            || (622_126..=622_925).contains(&p6));
    // JCB: 3528-3589, and the legacy 15-digit 1800 / 2131 ranges.
    let jcb = ((16..=19).contains(&n) && (3528..=3589).contains(&p4))
        || (n == 15 && matches!(p4, 1800 | 2131));
    let diners =
        (14..=19).contains(&n) && ((300..=305).contains(&p3) || matches!(p2, 36 | 38 | 39));
    let unionpay = (16..=19).contains(&n) && p2 == 62;
    let maestro = (12..=19).contains(&n) && (p2 == 50 || (56..=69).contains(&p2));
    visa || mastercard || amex || discover || jcb || diners || unionpay || maestro
}

/// IBAN length per country (SWIFT IBAN registry).
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BI", 27),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DJ", 27),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FK", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HN", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MN", 20),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NI", 28),
    (b"NL", 18),
    (b"NO", 15),
    (b"OM", 23),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"RU", 33),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"SO", 23),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
    (b"YE", 30),
];

/// IBAN length for a country code (uppercase), `None` for a country without IBANs.
pub fn iban_length(country: &[u8]) -> Option<usize> {
    IBAN_LENGTHS
        .iter()
        .find(|(cc, _)| cc.as_slice() == country)
        .map(|&(_, len)| len)
}

/// IBAN (compact or grouped by spaces): known country, its length, mod-97 == 1.
///
/// Uppercase only. The print format is groups of four separated by single spaces (the last group
/// 1 to 4 characters).
pub fn iban(s: &str) -> bool {
    let b = s.as_bytes();
    let (Some(country), Some(check)) = (b.get(..2), b.get(2..4)) else {
        return false;
    };
    if !country.iter().all(u8::is_ascii_uppercase) || !check.iter().all(u8::is_ascii_digit) {
        return false;
    }
    // Check digits 00, 01 and 99 are never produced by the algorithm.
    if !digits_value(check).is_some_and(|v| (2..=98).contains(&v)) {
        return false;
    }
    let spaced = b.contains(&b' ');
    let mut len = 0usize;
    for (i, &c) in b.iter().enumerate() {
        if spaced && i % 5 == 4 {
            if c != b' ' {
                return false;
            }
            continue;
        }
        if !(c.is_ascii_uppercase() || c.is_ascii_digit()) {
            return false;
        }
        len += 1;
    }
    if b.last() == Some(&b' ') || iban_length(country) != Some(len) {
        return false;
    }
    // Move the first four characters to the end; letters count as 10..=35; remainder mod 97.
    let compact = || b.iter().copied().filter(|&c| c != b' ');
    let rem = compact()
        .skip(4)
        .chain(compact().take(4))
        .fold(0u32, |r, c| {
            if c.is_ascii_digit() {
                (r * 10 + u32::from(c - b'0')) % 97
            } else {
                (r * 100 + u32::from(c - b'A') + 10) % 97
            }
        });
    rem == 1
}

/// Numeric value of an all-digit byte slice (`None` if empty, non-digit or too long).
fn digits_value(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 9 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        b.iter()
            .fold(0u32, |acc, &c| acc * 10 + u32::from(c - b'0')),
    )
}

/// US SSN `AAA-GG-SSSS` / spaced / plain: area not 000, 666 or 9xx; group not 00; serial not 0000.
///
/// Also rejects numbers made of one repeated digit and the publicly known voided or advertising
/// numbers (078-05-1120, 219-09-9999, 123-45-6789).
pub fn us_ssn(s: &str) -> bool {
    let b = s.as_bytes();
    let parts = match b.len() {
        9 => (b.get(..3), b.get(3..5), b.get(5..)),
        11 => {
            let sep = b.get(3);
            if sep != b.get(6) || !matches!(sep, Some(b'-' | b' ')) {
                return false;
            }
            (b.get(..3), b.get(4..6), b.get(7..))
        }
        _ => return false,
    };
    let (Some(area), Some(group), Some(serial)) = (
        parts.0.and_then(digits_value),
        parts.1.and_then(digits_value),
        parts.2.and_then(digits_value),
    ) else {
        return false;
    };
    if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 {
        return false;
    }
    let all = area * 1_000_000 + group * 10_000 + serial;
    let first = b.first().copied();
    let repeated = b
        .iter()
        .filter(|c| c.is_ascii_digit())
        .all(|&c| Some(c) == first);
    !repeated && !matches!(all, 78_051_120 | 219_099_999 | 123_456_789)
}

/// IPv4 dotted quad (no leading zeros, each octet <= 255).
pub fn ipv4(s: &str) -> bool {
    let mut octets = 0usize;
    for part in s.split('.') {
        octets += 1;
        let b = part.as_bytes();
        let ok = match digits_value(b) {
            Some(v) => v <= 255 && b.len() <= 3 && !(b.len() > 1 && b.first() == Some(&b'0')),
            None => false,
        };
        if !ok || octets > 4 {
            return false;
        }
    }
    octets == 4 && s.parse::<Ipv4Addr>().is_ok()
}

/// IPv6 (full, compressed, link-local with zone, IPv4-mapped).
///
/// A `%zone` suffix (interface name or index) is accepted only on link-local addresses
/// (`fe80::/10`, or multicast of interface/link scope). Strings without any decimal digit and with
/// fewer than four groups (`dead::beef`, `a::b`) are rejected: in text they are words, not
/// addresses. The unspecified address `::` is rejected.
pub fn ipv6(s: &str) -> bool {
    let (addr, zone) = match s.split_once('%') {
        Some((a, z)) => (a, Some(z)),
        None => (s, None),
    };
    let Ok(ip) = addr.parse::<Ipv6Addr>() else {
        return false;
    };
    if ip.is_unspecified() {
        return false;
    }
    let has_digit = addr.bytes().any(|c| c.is_ascii_digit());
    let groups = addr.split(':').filter(|g| !g.is_empty()).count();
    if !has_digit && groups < 4 {
        return false;
    }
    match zone {
        None => true,
        Some(z) => {
            let seg0 = ip.segments().first().copied().unwrap_or(0);
            let link_local = seg0 & 0xffc0 == 0xfe80 || matches!(seg0 & 0xff0f, 0xff01 | 0xff02);
            let zone_ok = !z.is_empty()
                && z.len() <= 32
                && z.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
            link_local && zone_ok
        }
    }
}

/// How a phone number candidate looks after the digit-count checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phone {
    /// Not a phone number (wrong digit count for its country or format).
    No,
    /// Valid shape but weak on its own (e.g. an unseparated national number): needs context.
    Weak,
    /// A well-formed international or national number.
    Strong,
}

/// Regex (regex-automata syntax) for phone number candidates; validated by [`phone`].
///
/// Four shapes, then an optional extension (`x123`, ` ext. 123`):
/// - `+` and up to seven digit groups, each after one of space, `-`, `.`, `/` or a parenthesised
///   group (` (0)`, ` (415) `): `+44 (0)20 7946 0958`, `+1-415-555-0100`, `+14155550100`;
/// - a parenthesised area code, optionally after a NANP `1`, then up to four groups separated by
///   spaces or dashes: `(415) 555-0100`, `(11) 91234-5678`, `1 (800) 555-0100`;
/// - three groups mixing a space and a dash, the last of four digits: `21 3456-7890`,
///   `080-2345 6789`;
/// - digit groups with one separator throughout (up to seven groups of `-`, space or `.`, or two
///   around `/`), so that a number is not run into the next one (`415-555-0100 42`): `020 7946
///   0958`, `06.45.24.62.50`, `030/1234567`, `00 44 20 7946 0958`, `4155550100`.
///
/// A candidate never starts right after an ASCII letter, digit or `_` (unless it starts with `+`
/// or `(`) and never ends right before one (ASCII word boundaries, which DFAs support). Bounded
/// repeats only.
pub const PHONE_PATTERN: &str = concat!(
    r"(?:\+[1-9][0-9]{0,14}(?:(?:[ .\-/]|[ ]?\([0-9]{1,4}\)[ \-]?)[0-9]{1,12}){0,6}",
    r"|(?:(?-u:\b)1[ .\-]?)?\([0-9]{1,5}\)[ \-]?[0-9]{1,12}(?:[ \-][0-9]{1,12}){0,3}",
    r"|(?-u:\b)[0-9]{2,5}(?: [0-9]{3,5}-|-[0-9]{3,5} )[0-9]{4}",
    r"|(?-u:\b)[0-9]{1,14}(?:(?:-[0-9]{1,12}){1,6}|(?: [0-9]{1,12}){1,6}|(?:\.[0-9]{1,12}){1,6}|/[0-9]{1,12})?)",
    r"(?:[ ]?(?:[xX]|[eE][xX][tT]\.?)[ ]?[0-9]{1,6})?(?-u:\b)",
);

/// Most digits in a phone number (E.164).
const PHONE_MAX_DIGITS: usize = 15;
/// Most digit groups in a phone number candidate.
const PHONE_MAX_GROUPS: usize = 8;

/// One run of digits in a phone number candidate.
#[derive(Debug, Clone, Copy, Default)]
struct Group {
    /// Index of its first digit among all digits.
    start: u8,
    /// Number of digits.
    len: u8,
    /// Written in parentheses.
    paren: bool,
    /// Separator byte right before it (0: none).
    sep: u8,
    /// The previous group was parenthesised (its separator says nothing about the grouping).
    after_paren: bool,
}

/// A phone number candidate taken apart, without allocating.
#[derive(Debug, Default)]
struct PhoneParts {
    plus: bool,
    digits: [u8; PHONE_MAX_DIGITS],
    n_digits: usize,
    groups: [Group; PHONE_MAX_GROUPS],
    n_groups: usize,
}

impl PhoneParts {
    fn digits(&self) -> &[u8] {
        self.digits.get(..self.n_digits).unwrap_or(&[])
    }

    fn groups(&self) -> &[Group] {
        self.groups.get(..self.n_groups).unwrap_or(&[])
    }

    fn digit(&self, i: usize) -> u8 {
        self.digits().get(i).copied().unwrap_or(0)
    }

    fn group_digits(&self, g: &Group) -> &[u8] {
        let start = usize::from(g.start);
        self.digits()
            .get(start..start + usize::from(g.len))
            .unwrap_or(&[])
    }

    fn group_value(&self, g: &Group) -> u32 {
        let d = self.group_digits(g);
        prefix_value(d, d.len()).unwrap_or(u32::MAX)
    }

    fn group_len(&self, k: usize) -> u8 {
        self.groups().get(k).map_or(0, |g| g.len)
    }

    /// Whether the group lengths are exactly `shape`.
    fn shape_is(&self, shape: &[u8]) -> bool {
        self.n_groups == shape.len() && self.groups().iter().zip(shape).all(|(g, &l)| g.len == l)
    }
}

/// Splits a candidate into digit groups, separators and an optional trailing extension.
fn parse_phone(s: &str) -> Option<PhoneParts> {
    let b = s.as_bytes();
    let mut p = PhoneParts::default();
    let mut i = 0usize;
    if b.first() == Some(&b'+') {
        p.plus = true;
        i = 1;
    }
    let mut in_group = false; // reading the digits of a group
    let mut in_paren = false; // between '(' and ')'
    let mut sep = 0u8; // separator seen since the last group
    let mut after_paren = false; // the last item was a parenthesised group
    while let Some(&c) = b.get(i) {
        match c {
            b'0'..=b'9' => {
                if !in_group {
                    let start = u8::try_from(p.n_digits).ok()?;
                    let g = p.groups.get_mut(p.n_groups)?;
                    *g = Group {
                        start,
                        len: 0,
                        paren: in_paren,
                        sep,
                        after_paren,
                    };
                    p.n_groups += 1;
                    in_group = true;
                    sep = 0;
                    after_paren = false;
                }
                *p.digits.get_mut(p.n_digits)? = c - b'0';
                p.n_digits += 1;
                let g = p.groups.get_mut(p.n_groups.checked_sub(1)?)?;
                g.len = g.len.saturating_add(1);
            }
            b'(' => {
                if in_paren || after_paren {
                    return None;
                }
                in_paren = true;
                in_group = false;
            }
            b')' => {
                if !(in_paren && in_group) {
                    return None;
                }
                in_paren = false;
                in_group = false;
                after_paren = true;
            }
            b' ' | b'-' | b'.' | b'/' => {
                if in_paren || sep != 0 || !(in_group || after_paren) {
                    return None;
                }
                in_group = false;
                sep = c;
            }
            b'x' | b'X' | b'e' | b'E' => {
                // Extension: after the last digit group (one space allowed), then to the end.
                if in_paren || !(in_group || sep == b' ') {
                    return None;
                }
                let rest = b.get(i..)?;
                let mut j = if rest
                    .get(..3)
                    .is_some_and(|w| w.eq_ignore_ascii_case(b"ext"))
                {
                    if rest.get(3) == Some(&b'.') {
                        4
                    } else {
                        3
                    }
                } else if matches!(c, b'x' | b'X') {
                    1
                } else {
                    return None;
                };
                if rest.get(j) == Some(&b' ') {
                    j += 1;
                }
                let ext = rest.get(j..)?;
                if ext.is_empty() || ext.len() > 6 || !ext.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                return (p.n_groups > 0).then_some(p);
            }
            _ => return None,
        }
        i += 1;
    }
    (!in_paren && sep == 0 && p.n_groups > 0).then_some(p)
}

/// ITU-T E.164 country codes (1-3 digits, a prefix-free set), as inclusive ranges.
const COUNTRY_CODES: &[(u16, u16)] = &[
    (1, 1),
    (7, 7),
    (20, 20),
    (27, 27),
    (30, 34),
    (36, 36),
    (39, 41),
    (43, 49),
    (51, 58),
    (60, 66),
    (81, 82),
    (84, 84),
    (86, 86),
    (90, 95),
    (98, 98),
    (211, 213),
    (216, 216),
    (218, 218),
    (220, 258),
    (260, 269),
    (290, 291),
    (297, 299),
    (350, 359),
    (370, 383),
    (385, 387),
    (389, 389),
    (420, 421),
    (423, 423),
    (500, 509),
    (590, 599),
    (670, 670),
    (672, 683),
    (685, 692),
    (800, 800),
    (808, 808),
    (850, 850),
    (852, 853),
    (855, 856),
    (870, 870),
    (878, 878),
    (880, 883),
    (886, 886),
    (888, 888),
    (960, 968),
    (970, 977),
    (979, 979),
    (992, 996),
    (998, 998),
];

/// The country calling code at the start of `digits`: `(code, number of digits)`.
///
/// `digits` are digit values (0..=9), not ASCII.
pub fn country_code(digits: &[u8]) -> Option<(u16, usize)> {
    if digits.first().is_some_and(|&d| d == 0) {
        return None;
    }
    let mut value = 0u16;
    for (i, &d) in digits.iter().take(3).enumerate() {
        if d > 9 {
            return None;
        }
        value = value * 10 + u16::from(d);
        if COUNTRY_CODES
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&value))
        {
            return Some((value, i + 1));
        }
    }
    None
}

/// North American Numbering Plan: 10 digits, area code and exchange start with 2-9.
fn nanp(d: &[u8]) -> bool {
    d.len() == 10 && d.first().is_some_and(|&x| x >= 2) && d.get(3).is_some_and(|&x| x >= 2)
}

/// An unseparated run of 10 or 11 digits that could be dialled somewhere: a trunk `0`, 10 digits
/// not starting with 1 (NANP, Indian and Italian mobiles...), NANP with its `1`, a Chinese mobile
/// (`1[3-9]`, 11 digits) or a Brazilian mobile (`DD 9xxxx xxxx`). Unix timestamps in seconds
/// (`1xxxxxxxxx` until 2033) are not.
fn plausible_run(d: &[u8]) -> bool {
    let at = |i: usize| d.get(i).copied().unwrap_or(0);
    match (d.len(), at(0)) {
        (10 | 11, 0) => true,
        (10, first) => first >= 2,
        (11, 1) => nanp(d.get(1..).unwrap_or(&[])) || at(1) >= 3,
        (11, _) => at(2) == 9,
        _ => false,
    }
}

/// Whether a country writes a trunk prefix `0` that is dropped after the country code
/// (`+44 (0)20 ...`).
fn drops_trunk_zero(cc: u16) -> bool {
    !matches!(cc, 1 | 7 | 39 | 378 | 379)
}

/// National significant number length for a country code.
fn nsn_ok(cc: u16, cc_len: usize, nsn: &[u8]) -> bool {
    let n = nsn.len();
    let first = nsn.first().copied().unwrap_or(0);
    let in_range = |lo: usize, hi: usize| (lo..=hi).contains(&n);
    match cc {
        1 => nanp(nsn),
        7 | 30 | 52 | 58 | 90 | 91 | 98 => n == 10,
        20 => in_range(8, 10),
        27 | 31 | 34 | 40 | 41 | 48 | 56 | 61 | 94 | 351 => n == 9,
        33 => n == 9 && first != 0,
        32 | 36 | 51 | 66 | 886 | 966 | 971 | 972 => in_range(8, 9),
        39 => in_range(6, 11),
        43 => in_range(4, 13),
        44 => n == 7 || in_range(9, 10),
        45 | 47 | 65 | 852 | 853 | 965 | 974 => n == 8,
        46 => in_range(7, 10),
        49 => in_range(6, 13),
        54 | 55 => in_range(10, 11),
        57 | 60 | 63 | 64 | 82 => in_range(8, 10),
        62 => in_range(8, 12),
        81 | 84 | 92 => in_range(9, 10),
        86 => match (first, nsn.get(1).copied().unwrap_or(0)) {
            (1, 0) => n == 10,
            (1, _) => n == 11,
            _ => in_range(10, 11),
        },
        353 => in_range(7, 9),
        358 => in_range(5, 12),
        _ => n >= 4 && (8..=PHONE_MAX_DIGITS).contains(&(cc_len + n)),
    }
}

/// Phone number candidate (matched by [`PHONE_PATTERN`]).
///
/// `+CC` (or `00CC`) numbers: a known country code and the national number length of that
/// country (NANP rules for `+1`); a trunk `(0)` is accepted where countries drop it. Strong.
///
/// National numbers: 7 to 12 digits, one separator (spaces may mix with dashes), no 1-digit
/// groups (except a NANP leading `1`). `No`: dates, dotted quads, SSN-shaped `3-2-4`, ZIP+4,
/// a year then a serial (`2019-381745`), NANP `3-3-4` with an area code or exchange starting with
/// 0/1, numbers of one repeated digit. Strong: a parenthesised area code, a trunk `0` with 9-12
/// digits, NANP `3-3-4` and `1-3-3-4`, and common mobile groupings (`5-5` and `3-3-3` from 6,
/// `3-4-4` from 1, `2-3-2-2`). Weak (the caller needs a context word): an unseparated run of 10-11
/// digits (not a `1xxxxxxxxx` Unix time), `3-4` locals, `4-4` and `2-2-2-2`, spaced thousands
/// (`12 345 678`), trunk numbers printed like an IBAN tail (`0213 8889 82`), and other groupings of
/// 9-11 digits.
pub fn phone(s: &str) -> Phone {
    let Some(p) = parse_phone(s) else {
        return Phone::No;
    };
    let d = p.digits();
    let first = d.first().copied();
    if d.len() < 7 || d.iter().all(|&x| Some(x) == first) {
        return Phone::No;
    }
    if p.plus {
        return international(&p, 0);
    }
    if d.starts_with(&[0, 0]) {
        return international(&p, 2);
    }
    national(&p)
}

/// `+CC ...` (skip 0) or `00CC ...` (skip 2).
fn international(p: &PhoneParts, skip: usize) -> Phone {
    let d = p.digits();
    let Some((cc, cc_len)) = d.get(skip..).and_then(country_code) else {
        return Phone::No;
    };
    let cc_end = skip + cc_len;
    let groups = p.groups();
    // The country code sits in one unparenthesised group, the first one (after a lone `00`).
    let Some(ci) = groups
        .iter()
        .position(|g| usize::from(g.start) + usize::from(g.len) > skip)
    else {
        return Phone::No;
    };
    let Some(cg) = groups.get(ci) else {
        return Phone::No;
    };
    let cg_end = usize::from(cg.start) + usize::from(cg.len);
    if cg.paren || cg_end < cc_end || (ci > 0 && !(skip == 2 && p.group_len(0) == 2 && ci == 1)) {
        return Phone::No;
    }
    // At most one parenthesised group, right after the country code: an area code or a trunk 0.
    let mut trunk_at: Option<usize> = None;
    let mut singles = 0usize;
    for (k, g) in groups.iter().enumerate().skip(ci + 1) {
        if g.paren {
            if k != ci + 1 || cg_end != cc_end || g.len > 4 {
                return Phone::No;
            }
            if g.len == 1 && p.digit(usize::from(g.start)) == 0 {
                if !drops_trunk_zero(cc) {
                    return Phone::No;
                }
                trunk_at = Some(usize::from(g.start));
                continue;
            }
        }
        if g.len == 1 {
            singles += 1;
        }
    }
    if singles > 1 {
        return Phone::No;
    }
    let mut nsn = [0u8; PHONE_MAX_DIGITS];
    let mut n = 0usize;
    for (i, &x) in d.iter().enumerate().skip(cc_end) {
        if Some(i) == trunk_at {
            continue;
        }
        if let Some(slot) = nsn.get_mut(n) {
            *slot = x;
            n += 1;
        }
    }
    let mut nsn = nsn.get(..n).unwrap_or(&[]);
    // `+44 020 ...`: a trunk 0 written without parentheses.
    if trunk_at.is_none() && drops_trunk_zero(cc) && nsn.first() == Some(&0) {
        nsn = nsn.get(1..).unwrap_or(&[]);
    }
    if cc_len + nsn.len() <= PHONE_MAX_DIGITS && nsn_ok(cc, cc_len, nsn) {
        Phone::Strong
    } else {
        Phone::No
    }
}

/// `yyyy-mm-dd`, `dd.mm.yyyy`, `mm/dd/yyyy` in the first three groups.
fn looks_like_date(p: &PhoneParts) -> bool {
    let gs = p.groups();
    let (Some(a), Some(b), Some(c)) = (gs.first(), gs.get(1), gs.get(2)) else {
        return false;
    };
    let (va, vb, vc) = (p.group_value(a), p.group_value(b), p.group_value(c));
    let year = |g: &Group, v: u32| g.len == 4 && (1900..=2099).contains(&v);
    let month = |g: &Group, v: u32| g.len <= 2 && (1..=12).contains(&v);
    let day = |g: &Group, v: u32| g.len <= 2 && (1..=31).contains(&v);
    (year(a, va) && month(b, vb) && day(c, vc))
        || (year(c, vc) && ((day(a, va) && month(b, vb)) || (month(a, va) && day(b, vb))))
}

/// A number without `+` or `00`.
fn national(p: &PhoneParts) -> Phone {
    let d = p.digits();
    let gs = p.groups();
    let n = gs.len();
    let dl = d.len();
    if dl > 12 {
        return Phone::No;
    }
    let Some(g0) = gs.first() else {
        return Phone::No;
    };
    let first = p.digit(0);
    // NANP with its leading `1` (`1-800-555-0100`, `1 (415) 555-0100`).
    let lead1 = n >= 2 && g0.len == 1 && first == 1 && !g0.paren;
    if gs
        .iter()
        .enumerate()
        .any(|(k, g)| g.paren && !(k == 0 || (k == 1 && lead1)))
    {
        return Phone::No;
    }
    // One separator throughout (the ones around a parenthesised group do not count), except that
    // spaces may mix with dashes (`11 91234-5678`, `080-2345 6789`).
    let mut sep = 0u8;
    for g in gs.iter().skip(1).filter(|g| !g.after_paren && !g.paren) {
        match (sep, g.sep) {
            (0, s) => sep = s,
            (a, b) if a == b => {}
            (b' ' | b'-', b' ' | b'-') => sep = b' ',
            _ => return Phone::No,
        }
    }
    national_shape(p, sep)
}

/// [`national`] once the separators are known to be consistent (`sep`: the separator used, a
/// space when spaces and dashes mix).
fn national_shape(p: &PhoneParts, sep: u8) -> Phone {
    use Phone::{No, Strong, Weak};
    let d = p.digits();
    let gs = p.groups();
    let n = gs.len();
    let dl = d.len();
    let Some(g0) = gs.first() else {
        return No;
    };
    let first = p.digit(0);
    let lead1 = n >= 2 && g0.len == 1 && first == 1 && !g0.paren;
    if n == 1 {
        return if !g0.paren && plausible_run(d) {
            Weak
        } else {
            No
        };
    }
    if gs
        .iter()
        .enumerate()
        .any(|(k, g)| g.len == 1 && !(k == 0 && lead1))
    {
        return No;
    }
    if lead1 {
        // 1-800-555-0100, 1 (415) 555-0100
        let ok = p.shape_is(&[1, 3, 3, 4]) && nanp(d.get(1..).unwrap_or(&[]));
        return if ok { Strong } else { No };
    }
    // SSN, dates, dotted quads.
    if p.shape_is(&[3, 2, 4]) || looks_like_date(p) {
        return No;
    }
    if sep == b'.' && n == 4 && gs.iter().all(|g| g.len <= 3 && p.group_value(g) <= 255) {
        return No;
    }
    if g0.paren {
        // (415) 555-0100, (11) 91234-5678, (0151) 234567
        let area_ok = matches!(g0.len, 2 | 3) || (matches!(g0.len, 4 | 5) && first == 0);
        let rest_ok = gs.iter().skip(1).all(|g| g.len >= 3);
        let nanp_ok = !(g0.len == 3 && first != 0 && dl == 10) || nanp(d);
        return if area_ok && rest_ok && nanp_ok && (8..=11).contains(&dl) {
            Strong
        } else {
            No
        };
    }
    if first == 0 {
        // Trunk prefix: 020 7946 0958, 0151 23456789, 06 45 24 62 50, 098765 43210. Groups of
        // four with a shorter tail (0213 8889 82) are how IBANs and account numbers print.
        let tail = gs.get(..n.saturating_sub(1)).unwrap_or(&[]);
        let iban_like =
            n >= 3 && tail.iter().all(|g| g.len == 4) && p.group_len(n.saturating_sub(1)) < 4;
        return match (g0.len, dl) {
            (2..=6, 9..=12) if !iban_like => Strong,
            (2..=6, 8..=12) => Weak,
            _ => No,
        };
    }
    if g0.len == 4 && (1900..=2099).contains(&p.group_value(g0)) {
        // INV-2019-13222, ORD-2024-506346, CVE-2015-7378: a year, then a serial.
        return No;
    }
    let spaced_or_dashed = matches!(sep, b' ' | b'-');
    let pairs_tail =
        n >= 4 && p.group_len(n.saturating_sub(1)) == 2 && p.group_len(n.saturating_sub(2)) == 2;
    if p.shape_is(&[3, 3, 4]) {
        // NANP, or an Italian mobile (3xx).
        return if nanp(d) || first == 3 { Strong } else { No };
    }
    if p.shape_is(&[3, 3, 3]) {
        // Spanish 6xx-9xx; otherwise too close to a number with thousands separators.
        return if spaced_or_dashed && first >= 6 {
            Strong
        } else {
            Weak
        };
    }
    if gs.iter().skip(1).all(|g| g.len == 3) {
        // 12 345 678: thousands separators as often as a phone number.
        return if dl >= 8 && g0.len <= 3 { Weak } else { No };
    }
    if p.shape_is(&[5, 4]) {
        // ZIP+4 (94941 2505).
        return No;
    }
    if p.shape_is(&[5, 5]) {
        // Indian mobile 98765 43210.
        return if first >= 6 { Strong } else { Weak };
    }
    if p.shape_is(&[3, 4]) || p.shape_is(&[4, 4]) {
        // US local 555-0100; Singapore / Hong Kong 9123 4567.
        return if spaced_or_dashed && first >= 2 {
            Weak
        } else {
            No
        };
    }
    if pairs_tail && gs.iter().all(|g| g.len <= 4) {
        // 91 123 45 67, 612 34 56 78; 12 34 56 78 (Denmark, Norway).
        return match dl {
            9 if first >= 6 => Strong,
            8..=11 => Weak,
            _ => No,
        };
    }
    if p.shape_is(&[3, 4, 4]) && first == 1 {
        // Chinese mobile 138 1234 5678.
        return Strong;
    }
    if p.shape_is(&[3, 2, 3]) || (9..=11).contains(&dl) {
        // Norway 412 34 567; other groupings of a national number.
        return Weak;
    }
    No
}

/// Shannon entropy in bits per byte.
pub fn entropy(s: &str) -> f64 {
    let mut counts = [0usize; 256];
    for b in s.bytes() {
        if let Some(c) = counts.get_mut(usize::from(b)) {
            *c = c.saturating_add(1);
        }
    }
    let len = s.len() as f64;
    if s.is_empty() {
        return 0.0;
    }
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / len;
            -p * p.log2()
        })
        .sum()
}

/// Base62 alphabet of GitHub token checksums (digits, uppercase, lowercase).
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// GitHub `ghp_/gho_/ghs_/ghu_/ghr_` token: 36 base62 chars whose last 6 are the base62 CRC32 of
/// the first 30.
///
/// The checksum is `crc32(random30)` in base62 (alphabet `0-9A-Za-z`), left-padded with `0` to six
/// characters.
pub fn github_token(s: &str) -> bool {
    let b = s.as_bytes();
    let (Some(prefix), Some(body), Some(check)) = (b.get(..4), b.get(4..34), b.get(34..)) else {
        return false;
    };
    if !matches!(prefix, b"ghp_" | b"gho_" | b"ghs_" | b"ghu_" | b"ghr_")
        || check.len() != 6
        || !body.iter().chain(check).all(u8::is_ascii_alphanumeric)
    {
        return false;
    }
    let mut crc = crc32fast::hash(body);
    let mut expected = [b'0'; 6];
    for slot in expected.iter_mut().rev() {
        let Some(&c) = BASE62.get((crc % 62) as usize) else {
            return false;
        };
        *slot = c;
        crc /= 62;
    }
    crc == 0 && expected.as_slice() == check
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;

    #[test]
    fn luhn_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("visa test number", "4111111111111111", true),
            ("with separators", "4111 1111-1111 1111", true),
            ("one digit off", "4111111111111112", false),
            ("two digits", "18", true),
            ("single digit", "0", false),
            ("empty", "", false),
            ("no digits", "abc", false),
            ("all zeros", "0000", true),
        ];
        for (name, input, want) in cases {
            assert_eq!(luhn(input), *want, "{name}: {input:?}");
        }
    }

    #[test]
    fn credit_card_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("visa 16", "4111111111111111", true),
            ("visa 16 spaced", "4111 1111 1111 1111", true),
            ("visa 16 dashed", "4012-8888-8888-1881", true),
            ("visa 13", "4222222222222", true),
            ("visa bad luhn", "4111111111111112", false),
            ("visa wrong length 15", "411111111111116", false),
            ("mastercard 5x", "5555555555554444", true),
            ("mastercard 2221", "2221000000000009", true),
            ("amex 37", "371449635398431", true),
            ("amex 34 grouped 4-6-5", "3782 822463 10005", true),
            ("amex length 16", "3782822463100053", false),
            ("discover 6011", "6011111111111117", true),
            ("discover 644", "6445644564456445", true),
            ("discover 622126", "6221260000000000", true),
            ("jcb", "3530111333300000", true),
            ("diners 14", "30569309025904", true),
            ("diners 38", "38520000023237", true),
            ("unionpay", "6200000000000005", true),
            ("maestro 50", "5018000000000009", true),
            ("maestro 63", "6304000000000000", true),
            ("unknown issuer 1", "1234567812345670", false),
            ("unknown issuer 9", "9111111111111119", false),
            ("mixed separators", "4111 1111-1111 1111", false),
            ("double space", "4111  1111 1111 1111", false),
            ("leading separator", " 4111111111111111", false),
            ("trailing separator", "4111111111111111-", false),
            ("letters", "4111 1111 1111 111a", false),
            ("too long", "41111111111111111111", false),
            ("too short", "41111111111", false),
            ("empty", "", false),
        ];
        for (name, input, want) in cases {
            assert_eq!(credit_card(input), *want, "{name}: {input:?}");
        }
    }

    #[test]
    fn iban_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("DE print", "DE89 3704 0044 0532 0130 00", true),
            ("DE compact", "DE89370400440532013000", true),
            ("GB letters in BBAN", "GB82 WEST 1234 5698 7654 32", true),
            (
                "FR letter in BBAN",
                "FR14 2004 1010 0505 0001 3M02 606",
                true,
            ),
            ("NO shortest", "NO93 8601 1117 947", true),
            ("BE", "BE68539007547034", true),
            ("NL", "NL91ABNA0417164300", true),
            ("CH", "CH9300762011623852957", true),
            ("BR", "BR1800360305000010009795493C1", true),
            ("SA", "SA0380000000608010167519", true),
            ("AE", "AE070331234567890123456", true),
            ("TR", "TR330006100519786457841326", true),
            ("IL", "IL620108000000099999999", true),
            ("PK", "PK36SCBL0000001123456702", true),
            ("QA", "QA58DOHB00001234567890ABCDEFG", true),
            ("KW", "KW81CBKU0000000000001234560101", true),
            ("MT", "MT84MALT011000012345MTLCAST001S", true),
            ("LC longest", "LC55HEMM000100010012001200023015", true),
            ("RU", "RU0204452560040702810412345678901", true),
            ("bad check digits", "DE88 3704 0044 0532 0130 00", false),
            ("digit changed", "DE89 3704 0044 0532 0130 01", false),
            ("wrong length for DE", "DE89 3704 0044 0532 0130 0", false),
            ("unknown country", "XX89 3704 0044 0532 0130 00", false),
            ("US has no IBAN", "US64SVBKUS6S3300958879", false),
            ("lowercase", "de89 3704 0044 0532 0130 00", false),
            ("lowercase BBAN", "GB82 west 1234 5698 7654 32", false),
            ("groups of 3", "DE8 937 040 044 053 201 300 0", false),
            ("double space", "DE89  3704 0044 0532 0130 00", false),
            ("trailing space", "DE89 3704 0044 0532 0130 00 ", false),
            ("mixed grouping", "DE89 37040044 0532 0130 00", false),
            ("punctuation", "DE89-3704-0044-0532-0130-00", false),
            ("check digits 00", "DE00370400440532013000", false),
            ("short", "DE8", false),
            ("empty", "", false),
        ];
        for (name, input, want) in cases {
            assert_eq!(iban(input), *want, "{name}: {input:?}");
        }
    }

    #[test]
    fn us_ssn_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("dashed", "101-18-1419", true),
            ("spaced", "101 18 1419", true),
            ("plain", "101181419", true),
            ("area 899", "899-45-6780", true),
            ("mixed separators", "101-18 1419", false),
            ("other separator", "101.18.1419", false),
            ("area 000", "000-12-3456", false),
            ("area 666", "666-12-3456", false),
            ("area 900", "900-12-3456", false),
            ("area 999", "999-12-3456", false),
            ("group 00", "123-00-4567", false),
            ("serial 0000", "123-45-0000", false),
            ("woolworth", "078-05-1120", false),
            ("ssa advertising", "219-09-9999", false),
            ("sequential", "123-45-6789", false),
            ("one repeated digit", "111-11-1111", false),
            ("10 digits", "1011814190", false),
            ("letters", "10a-18-1419", false),
            ("empty", "", false),
        ];
        for (name, input, want) in cases {
            assert_eq!(us_ssn(input), *want, "{name}: {input:?}");
        }
    }

    #[test]
    fn ip_table() {
        let v4: &[(&str, &str, bool)] = &[
            ("private", "192.168.1.10", true),
            ("zeros", "0.0.0.0", true),
            ("broadcast", "255.255.255.255", true),
            ("octet 256", "256.1.1.1", false),
            ("leading zero", "01.2.3.4", false),
            ("leading zero last", "1.2.3.04", false),
            ("three octets", "1.2.3", false),
            ("five octets", "1.2.3.4.5", false),
            ("empty octet", "1..3.4", false),
            ("trailing dot", "1.2.3.4.", false),
            ("long octet", "1.2.3.0004", false),
            ("letters", "1.2.3.a", false),
            ("empty", "", false),
        ];
        for (name, input, want) in v4 {
            assert_eq!(ipv4(input), *want, "ipv4 {name}: {input:?}");
        }
        let v6: &[(&str, &str, bool)] = &[
            ("full", "2001:0db8:85a3:0000:0000:8a2e:0370:7334", true),
            ("compressed", "2001:db8::8a2e:370:7334", true),
            (
                "compressed hex only",
                "2d77:890f::b54f:d0f2:20dc:e5f9",
                true,
            ),
            ("loopback", "::1", true),
            ("link-local", "fe80::1ff:fe23:4567:890a", true),
            ("link-local zone", "fe80::1ff:fe23:4567:890a%eth0", true),
            ("link-local numeric zone", "fe80::1%25", true),
            ("ipv4-mapped", "::ffff:192.0.2.128", true),
            ("multicast link zone", "ff02::1%en0", true),
            ("zone on global", "2001:db8::1%eth0", false),
            ("empty zone", "fe80::1%", false),
            ("bad zone", "fe80::1%eth 0", false),
            ("unspecified", "::", false),
            ("word-like", "dead::beef", false),
            ("rust path-like", "a::b", false),
            ("two compressions", "1::2::3", false),
            ("nine groups", "1:2:3:4:5:6:7:8:9", false),
            ("group too long", "12345::1", false),
            ("not hex", "2001:db8::g", false),
            ("empty", "", false),
        ];
        for (name, input, want) in v6 {
            assert_eq!(ipv6(input), *want, "ipv6 {name}: {input:?}");
        }
    }

    #[test]
    fn country_codes() {
        type Case<'a> = (&'a str, &'a [u8], Option<(u16, usize)>);
        let cases: &[Case] = &[
            ("nanp", &[1, 4, 1, 5], Some((1, 1))),
            ("russia", &[7, 4, 9, 5], Some((7, 1))),
            ("uk", &[4, 4, 2, 0], Some((44, 2))),
            ("germany", &[4, 9, 3, 0], Some((49, 2))),
            ("ireland", &[3, 5, 3, 8], Some((353, 3))),
            ("uae", &[9, 7, 1, 5], Some((971, 3))),
            ("hong kong", &[8, 5, 2, 2], Some((852, 3))),
            ("spare 28x", &[2, 8, 1, 2], None),
            ("spare 999", &[9, 9, 9, 1], None),
            ("zero", &[0, 4, 4], None),
            ("not digits", &[4, 40], None),
            ("empty", &[], None),
        ];
        for (name, input, want) in cases {
            assert_eq!(country_code(input), *want, "{name}");
        }
    }

    #[test]
    fn phone_table() {
        use Phone::{No, Strong, Weak};
        let cases: &[(&str, &str, Phone)] = &[
            // International.
            ("e164 us", "+14155550100", Strong),
            ("us spaced", "+1 415 555 0100", Strong),
            ("us parens", "+1 (415) 555-0100", Strong),
            ("us dashed ext", "+1-415-555-0100x769", Strong),
            ("us dotted", "+1.415.555.0100", Strong),
            ("us exchange 1xx", "+1-903-140-4508", No),
            ("us area 0xx", "+1 015 555 0100", No),
            ("us 9 digits", "+1 415 555 010", No),
            ("uk london", "+44 20 7946 0958", Strong),
            ("uk trunk", "+44 (0)20 7946 0958", Strong),
            ("uk trunk no space", "+44(0)20 7946 0958", Strong),
            ("uk trunk unbracketed", "+44 020 7946 0958", Strong),
            ("uk mobile merged", "+447700 900 123", Strong),
            ("uk e164", "+447700900123", Strong),
            ("uk too long", "+44 20 7946 09581", No),
            ("00 prefix", "0044 20 7946 0958", Strong),
            ("00 prefix split", "00 44 20 7946 0958", Strong),
            ("00 nanp bad exchange", "001-490-155-3846", No),
            ("de", "+49 30 12345678", Strong),
            ("de mobile", "+49 151 23456789", Strong),
            ("de trunk", "+49 (0)30 1234567", Strong),
            ("fr", "+33 1 23 45 67 89", Strong),
            ("fr trunk", "+33 (0)6 12 34 56 78", Strong),
            ("fr 8 digits", "+33 1 23 45 67 8", No),
            ("es", "+34 612 345 678", Strong),
            ("it keeps 0", "+39 06 1234 5678", Strong),
            ("it no trunk parens", "+39 (0)6 1234 5678", No),
            ("it mobile", "+39 333 123 4567", Strong),
            ("in", "+91 98765 43210", Strong),
            ("in dashed", "+91-98765-43210", Strong),
            ("br", "+55 11 91234-5678", Strong),
            ("br parens", "+55 (11) 3456-7890", Strong),
            ("jp", "+81 3-1234-5678", Strong),
            ("jp mobile", "+81 90-1234-5678", Strong),
            ("cn mobile", "+86 138 0013 8000", Strong),
            ("cn beijing", "+86 10 1234 5678", Strong),
            ("cn mobile short", "+86 138 0013 800", No),
            ("kr", "+82 10-1234-5678", Strong),
            ("ru", "+7 (495) 123-45-67", Strong),
            ("au", "+61 2 9876 5432", Strong),
            ("ch trunk", "+41 (0)44 668 18 00", Strong),
            ("se trunk", "+46 (0)8 928 571 38", Strong),
            ("nl", "+31 6 12345678", Strong),
            ("nigeria generic", "+234 803 123 4567", Strong),
            ("uae", "+971 50 123 4567", Strong),
            ("hk", "+852 2123 4567", Strong),
            ("unknown cc", "+28 1234 5678", No),
            ("cc split", "+4 4 20 7946 0958", No),
            ("timezone", "+02", No),
            ("too short", "+44 20 79", No),
            ("too long", "+49 30 1234567890123", No),
            ("paren not after cc", "+44 20 (7946) 0958", No),
            ("many single digits", "+33 1 2 3 4 5 67 89", No),
            // National, strong.
            ("us parens", "(415) 555-0100", Strong),
            ("us parens no space", "(978)645-9740x11144", Strong),
            ("us dashed", "415-555-0100", Strong),
            ("us dotted", "415.555.0100", Strong),
            ("us spaced", "415 555 0100", Strong),
            ("us leading 1", "1-800-555-0100", Strong),
            ("us leading 1 parens", "1 (800) 555-0100", Strong),
            ("us ext", "415-555-0100 ext. 123", Strong),
            ("us ext x", "415-555-0100 x12", Strong),
            ("us ext word", "415-555-0100 ext 1234", Strong),
            ("uk london", "020 7946 0958", Strong),
            ("uk mobile", "07700 900123", Strong),
            ("uk geographic", "01632 960983", Strong),
            ("uk 4-3-4", "0161 496 0000", Strong),
            ("de berlin", "030 12345678", Strong),
            ("de mobile", "0151 23456789", Strong),
            ("de slash", "030/1234567", Strong),
            ("de parens", "(030) 12345678", Strong),
            ("fr spaced", "01 23 45 67 89", Strong),
            ("fr dotted", "06.45.24.62.50", Strong),
            ("es mobile", "612 345 678", Strong),
            ("es landline", "91 123 45 67", Strong),
            ("it landline", "06 1234 5678", Strong),
            ("it mobile", "333 123 4567", Strong),
            ("in mobile", "98765 43210", Strong),
            ("in trunk", "098765 43210", Strong),
            ("br mobile", "(11) 91234-5678", Strong),
            ("br landline", "(11) 3456-7890", Strong),
            ("au parens", "(02) 9876 5432", Strong),
            ("jp", "03-1234-5678", Strong),
            ("jp mobile", "090-1234-5678", Strong),
            ("kr mobile", "010-1234-5678", Strong),
            ("cn mobile", "138 0013 8000", Strong),
            ("nl", "06-24312407", Strong),
            ("be", "0490 39 07 81", Strong),
            // National, weak (needs a context word).
            ("unseparated 10", "4155550100", Weak),
            ("unseparated 11 trunk", "02079460958", Weak),
            ("unseparated 11 nanp", "14155550100", Weak),
            ("unseparated cn mobile", "13800138000", Weak),
            ("local 7", "555-0100", Weak),
            ("sg 4-4", "9123 4567", Weak),
            ("dk pairs", "12 34 56 78", Weak),
            ("no 3-2-3", "412 34 567", Weak),
            ("mixed space dash", "11 91234-5678", Weak),
            ("mixed trunk", "080-2345 6789", Strong),
            ("mixed nanp", "415 555-0100", Strong),
            ("thousands-like 3-3-3", "123 456 789", Weak),
            ("2-3-3", "72 128 827", Weak),
            ("mx 2-4-4", "55 1234 5678", Weak),
            // Not phone numbers.
            ("date iso", "2024-01-15", No),
            ("date dotted", "15.01.2024", No),
            ("date iso dotted", "2024.01.15", No),
            ("date us", "01/15/2024", No),
            ("datetime", "2024-01-15 10", No),
            ("year range", "2019-2023", No),
            ("cve", "2021-44228", No),
            ("order with year", "2019-381745", No),
            ("version", "10.0.19045.3729", No),
            ("version 3", "1.2.3", No),
            ("ipv4", "192.168.100.200", No),
            ("ipv4 small", "10.20.30.40", No),
            ("card 16", "4111 1111 1111 1111", No),
            ("card 16 plain", "4111111111111111", No),
            ("amex", "3782 822463 10005", No),
            ("ssn", "101-18-1419", No),
            ("ssn spaced", "101 18 1419", No),
            ("isbn 13", "978-3-16-148410-0", No),
            ("isbn 10", "0-306-40615-2", No),
            ("ean", "4006381333931", No),
            ("zip+4", "94105-1234", No),
            ("zip+4 spaced", "94941 2505", No),
            ("unix time", "1705312200", No),
            ("unix time ms", "1705312200000", No),
            ("thousands", "12 345", No),
            ("thousands 1-3-3", "1 234 567", No),
            ("decimal-like", "100.4541", No),
            ("6 digits", "33 93 31", No),
            ("9 unseparated", "101181419", No),
            ("12 unseparated", "123456789012", No),
            ("16 digits", "4111111111111111", No),
            ("one digit repeated", "000-000-0000", No),
            ("nanp bad exchange", "415-155-0100", No),
            ("nanp bad area", "115-555-0100", No),
            ("tracking", "9400 1000 0000 0000 0000 00", No),
            ("amazon order", "112-1234567-1234567", No),
            ("dotted mixed", "415.555-0100", No),
            ("slash mixed", "030/123 4567", No),
            ("lone paren", "(0)20 7946 0958", No),
            ("paren year", "(2019) 123-145", No),
            ("paren later", "415 (555) 0100", No),
            ("unclosed paren", "(415 555-0100", No),
            ("empty parens", "() 555-0100", No),
            ("iban tail", "0213 8889 82", Weak),
            ("ext alone", "x123", No),
            ("ext too long", "415-555-0100 x1234567", No),
            ("ext letters", "415-555-0100 xa1", No),
            ("ext after separator", "415-555-0100-x12", No),
            ("letters", "415-555-01OO", No),
            ("leading separator", "-415-555-0100", No),
            ("trailing separator", "415-555-0100-", No),
            ("double separator", "415--555-0100", No),
            ("plus only", "+", No),
            ("empty", "", No),
        ];
        for (name, input, want) in cases {
            assert_eq!(phone(input), *want, "{name}: {input:?}");
        }
    }

    /// The pattern and the validator together on running text: `(text, the candidate the pattern
    /// finds first, its verdict)`.
    #[test]
    fn phone_pattern_in_text() {
        use Phone::{No, Strong, Weak};
        let re = regex_automata::meta::Regex::new(PHONE_PATTERN).unwrap();
        let cases: &[(&str, &str, &str, Phone)] = &[
            ("sentence end", "Call 415.555.0100.", "415.555.0100", Strong),
            (
                "next number",
                "Tel 415-555-0100 42 times",
                "415-555-0100",
                Strong,
            ),
            (
                "ext",
                "(978)645-9740x11144 mobile",
                "(978)645-9740x11144",
                Strong,
            ),
            (
                "ext words",
                "415-555-0100 ext. 12, thanks",
                "415-555-0100 ext. 12",
                Strong,
            ),
            (
                "intl trunk",
                "fax: +41 (0)71 526 99 04",
                "+41 (0)71 526 99 04",
                Strong,
            ),
            (
                "intl parens",
                "ring +1 (415) 555-0100 now",
                "+1 (415) 555-0100",
                Strong,
            ),
            (
                "cjk",
                "电话 +55 11 96260-2094，请",
                "+55 11 96260-2094",
                Strong,
            ),
            ("cjk national", "电话13800138000。", "13800138000", Weak),
            ("leading 1", "1-800-555-0100!", "1-800-555-0100", Strong),
            (
                "leading 1 parens",
                "dial 1 (800) 555-0100",
                "1 (800) 555-0100",
                Strong,
            ),
            ("br", "ligue (11) 91234-5678", "(11) 91234-5678", Strong),
            ("fr", "au 01 23 45 67 89.", "01 23 45 67 89", Strong),
            ("br mixed", "ou 21 3456-7890.", "21 3456-7890", Weak),
            (
                "in mixed",
                "landline 080-2345 6789",
                "080-2345 6789",
                Strong,
            ),
            (
                "spaced run",
                "ref 9400 1234 5678 9012 3456 78",
                "9400 1234 5678 9012 3456 78",
                No,
            ),
            (
                "json",
                r#"{"phone":"020 7946 0958"}"#,
                "020 7946 0958",
                Strong,
            ),
            ("in a word", "abc4155550100", "", No),
            ("before a word", "4155550100abc", "", No),
            ("hex", "0x4155550100", "", No),
            (
                "uuid",
                "9d3bba49-fc72-4512-8205-0e27eb46d0c2",
                "4512-8205",
                Weak,
            ),
            ("timestamp", "at 2024-01-15 10:30:00", "2024-01-15", No),
            ("iso datetime", "2025-04-27T14:27:08+02:00", "2025-04", No),
            ("version", "Chrome/120.0.6099.109", "120.0.6099.109", No),
            ("isbn", "ISBN 978-0-664-68655-0", "978-0-664-68655-0", No),
            (
                "card",
                "card 4111 1111 1111 1111",
                "4111 1111 1111 1111",
                No,
            ),
            ("order", "ORD-2019-381745", "2019-381745", No),
        ];
        for (name, text, want, verdict) in cases {
            let got = re.find(text).map_or("", |m| &text[m.range()]);
            assert_eq!(got, *want, "{name}: {text:?}");
            assert_eq!(phone(got), *verdict, "{name}: {got:?}");
        }
    }

    #[test]
    fn entropy_table() {
        let ascii: String = (0u8..128).map(char::from).collect();
        let cases: &[(&str, &str, f64)] = &[
            ("empty", "", 0.0),
            ("one symbol", "aaaa", 0.0),
            ("two symbols", "abab", 1.0),
            ("four symbols", "abcd", 2.0),
            ("skewed", "aaab", 0.811_278_124_459_132_8),
            ("128 symbols", &ascii, 7.0),
        ];
        for (name, input, want) in cases {
            assert!((entropy(input) - want).abs() < 1e-9, "{name}: {input:?}");
        }
    }

    #[test]
    fn github_token_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("ghp", "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", true),
            ("gho", "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", true),
            ("ghs", "ghs_0123456789ABCDEFGHIJKLMNOPQRST4PMbyp", true),
            ("ghu", "ghu_ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ3EAd4B", true),
            ("ghr", "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", true),
            (
                "bad checksum",
                "ghp_abcdefghijklmnopqrstuvwxyzABCD4dNndV",
                false,
            ),
            (
                "body changed",
                "ghp_abcdefghijklmnopqrstuvwxyzABCE4dNndU",
                false,
            ),
            (
                "placeholder",
                "ghp_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
                false,
            ),
            (
                "unknown prefix",
                "ghx_abcdefghijklmnopqrstuvwxyzABCD4dNndU",
                false,
            ),
            (
                "fine-grained is not this",
                "github_pat_abcdefghijklmnopqrstuv",
                false,
            ),
            (
                "too long",
                "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x",
                false,
            ),
            (
                "too short",
                "ghp_abcdefghijklmnopqrstuvwxyzABCD4dNnd",
                false,
            ),
            (
                "non base62",
                "ghp_abcdefghijklmnopqrstuvwxyzABC-4dNndU",
                false,
            ),
            ("non ascii", "ghp_abcdefghijklmnopqrstuvwxyzABé4dNnd", false),
            ("empty", "", false),
        ];
        for (name, input, want) in cases {
            assert_eq!(github_token(input), *want, "{name}: {input:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,64}") {
            let _ = (luhn(&s), credit_card(&s), iban(&s), us_ssn(&s), ipv4(&s), ipv6(&s));
            let _ = (phone(&s), entropy(&s), github_token(&s));
        }

        #[test]
        fn phone_never_panics(s in "[0-9 ()+.\\-/xXeEtT]{0,48}") {
            let _ = phone(&s);
        }

        #[test]
        fn entropy_in_range(s in "\\PC{0,64}") {
            let e = entropy(&s);
            proptest::prop_assert!((0.0..=8.0).contains(&e));
        }
    }
}
