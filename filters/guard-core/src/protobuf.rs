//! Decoding of the binary encodings Envoy hands to a wasm filter for structured properties
//! (dynamic metadata such as the claims `jwt_authn` writes with `payload_in_metadata`): never
//! JSON.
//!
//! - Envoy 1.40 serialises a map-like value as proxy-wasm *pairs* (`u32` count, then `u32` key
//!   and value lengths, then each key and value followed by a NUL), recursively: nested maps are
//!   pairs again, lists are pairs whose values are empty, strings are raw bytes, numbers 8-byte
//!   little-endian doubles, booleans one byte. See [`decode_envoy_value`] (checked against a real
//!   Envoy 1.40 in the e2e tests).
//! - Older Envoys serialise maps as a `google.protobuf.Struct` message and lists as
//!   `google.protobuf.ListValue`: see [`decode_struct`].
//!
//! The pairs encoding carries no types, so decoding is strict about structure (lengths must add
//! up exactly) and falls back to text. Depth is bounded; malformed input never panics.

use serde_json::{Map, Number, Value};

/// Deepest nesting accepted; deeper input is rejected as malformed.
pub const MAX_DEPTH: usize = 32;

/// Decode a serialised `google.protobuf.Struct` into a JSON object.
pub fn decode_struct(bytes: &[u8]) -> Option<Value> {
    decode_struct_at(bytes, 0).map(Value::Object)
}

/// Decode a serialised `google.protobuf.ListValue` into a JSON array.
pub fn decode_list(bytes: &[u8]) -> Option<Value> {
    decode_list_at(bytes, 0).map(Value::Array)
}

/// Interpret the bytes of a property whose type is not known in advance: a `Struct` if the bytes
/// parse as a non-empty one, else UTF-8 text, else nothing.
pub fn decode_property_lenient(bytes: &[u8]) -> Option<Value> {
    if let Some(Value::Object(m)) = decode_struct(bytes) {
        if !m.is_empty() {
            return Some(Value::Object(m));
        }
    }
    std::str::from_utf8(bytes)
        .ok()
        .map(|s| Value::String(s.to_string()))
}

/// Split proxy-wasm pairs bytes into (key, value) slices; `None` unless the bytes are exactly
/// one well-formed pairs block.
pub fn split_pairs(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let read_u32 = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        usize::try_from(u32::from_le_bytes(a)).ok()
    };
    let count = read_u32(0)?;
    // Each entry needs 8 bytes of lengths and two NULs: bound the count before allocating.
    if count.checked_mul(10)? > bytes.len() {
        return None;
    }
    let mut lens = Vec::with_capacity(count);
    for i in 0..count {
        let at = 4usize.checked_add(i.checked_mul(8)?)?;
        lens.push((read_u32(at)?, read_u32(at.checked_add(4)?)?));
    }
    let mut pos = 4usize.checked_add(count.checked_mul(8)?)?;
    let mut out = Vec::with_capacity(count);
    for (kl, vl) in lens {
        let key = bytes.get(pos..pos.checked_add(kl)?)?;
        pos = pos.checked_add(kl)?;
        if bytes.get(pos) != Some(&0) {
            return None;
        }
        pos = pos.checked_add(1)?;
        let value = bytes.get(pos..pos.checked_add(vl)?)?;
        pos = pos.checked_add(vl)?;
        if bytes.get(pos) != Some(&0) {
            return None;
        }
        pos = pos.checked_add(1)?;
        out.push((key, value));
    }
    (pos == bytes.len()).then_some(out)
}

/// Decode a value Envoy serialised without type information (see the module docs): a map or
/// list when the bytes are well-formed pairs, else text, else an 8-byte double, else a boolean.
pub fn decode_envoy_value(bytes: &[u8]) -> Value {
    decode_envoy_at(bytes, 0)
}

fn decode_envoy_at(bytes: &[u8], depth: usize) -> Value {
    if depth <= MAX_DEPTH {
        if let Some(pairs) = split_pairs(bytes) {
            if !pairs.is_empty() && pairs.iter().all(|(_, v)| v.is_empty()) {
                return Value::Array(
                    pairs
                        .iter()
                        .map(|(k, _)| Value::String(String::from_utf8_lossy(k).into_owned()))
                        .collect(),
                );
            }
            let mut m = Map::new();
            for (k, v) in pairs {
                m.insert(
                    String::from_utf8_lossy(k).into_owned(),
                    decode_envoy_at(v, depth + 1),
                );
            }
            return Value::Object(m);
        }
    }
    if let Ok(s) = std::str::from_utf8(bytes) {
        if !s.contains('\0') {
            return Value::String(s.to_string());
        }
    }
    match bytes.len() {
        8 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(bytes);
            number(f64::from_le_bytes(a))
        }
        1 => Value::Bool(bytes.first() != Some(&0)),
        _ => Value::String(String::from_utf8_lossy(bytes).into_owned()),
    }
}

fn number(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        #[allow(clippy::cast_possible_truncation)]
        Value::Number(Number::from(f as i64))
    } else {
        Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut out: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(out);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    /// Next (field number, value), `None` at the end, `Some(Err)` on malformed input.
    fn next(&mut self) -> Option<Result<(u64, Field<'a>), ()>> {
        if self.pos >= self.buf.len() {
            return None;
        }
        Some(self.field().ok_or(()))
    }

    fn field(&mut self) -> Option<(u64, Field<'a>)> {
        let key = self.varint()?;
        let number = key >> 3;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Field::Fixed64(u64::from_le_bytes(a))
            }
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                Field::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed32
            }
            _ => return None,
        };
        Some((number, field))
    }
}

fn decode_struct_at(bytes: &[u8], depth: usize) -> Option<Map<String, Value>> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut out = Map::new();
    let mut r = Reader::new(bytes);
    while let Some(item) = r.next() {
        // map<string, Value> fields = 1; each entry is {string key = 1; Value value = 2}
        if let (1, Field::Bytes(entry)) = item.ok()? {
            {
                let mut key = String::new();
                let mut value = Value::Null;
                let mut er = Reader::new(entry);
                while let Some(e) = er.next() {
                    match e.ok()? {
                        (1, Field::Bytes(k)) => key = String::from_utf8_lossy(k).into_owned(),
                        (2, Field::Bytes(v)) => value = decode_value_at(v, depth + 1)?,
                        _ => {}
                    }
                }
                out.insert(key, value);
            }
        }
    }
    Some(out)
}

fn decode_list_at(bytes: &[u8], depth: usize) -> Option<Vec<Value>> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut out = Vec::new();
    let mut r = Reader::new(bytes);
    while let Some(item) = r.next() {
        if let (1, Field::Bytes(v)) = item.ok()? {
            out.push(decode_value_at(v, depth + 1)?);
        }
    }
    Some(out)
}

fn decode_value_at(bytes: &[u8], depth: usize) -> Option<Value> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut value = Value::Null;
    let mut r = Reader::new(bytes);
    while let Some(item) = r.next() {
        value = match item.ok()? {
            (1, Field::Varint(_)) => Value::Null,
            // Whole numbers (timestamps, counts) read better as integers.
            (2, Field::Fixed64(bits)) => number(f64::from_bits(bits)),
            (3, Field::Bytes(s)) => Value::String(String::from_utf8_lossy(s).into_owned()),
            (4, Field::Varint(b)) => Value::Bool(b != 0),
            (5, Field::Bytes(s)) => Value::Object(decode_struct_at(s, depth + 1)?),
            (6, Field::Bytes(l)) => Value::Array(decode_list_at(l, depth + 1)?),
            _ => value,
        };
    }
    Some(value)
}

/// Encoders used by tests and by the test harness to build what Envoy would send.
pub mod encode {
    use serde_json::Value;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(number: u64, data: &[u8], out: &mut Vec<u8>) {
        varint((number << 3) | 2, out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }

    /// Serialise a JSON value as `google.protobuf.Value`.
    pub fn value(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        match v {
            Value::Null => {
                varint(1 << 3, &mut out);
                varint(0, &mut out);
            }
            Value::Bool(b) => {
                varint(4 << 3, &mut out);
                varint(u64::from(*b), &mut out);
            }
            Value::Number(n) => {
                varint((2 << 3) | 1, &mut out);
                out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_le_bytes());
            }
            Value::String(s) => bytes_field(3, s.as_bytes(), &mut out),
            Value::Array(_) => bytes_field(6, &list(v), &mut out),
            Value::Object(_) => bytes_field(5, &structure(v), &mut out),
        }
        out
    }

    /// Serialise a JSON value the way Envoy 1.40 hands metadata to wasm (proxy-wasm pairs).
    pub fn envoy_value(v: &Value) -> Vec<u8> {
        fn pairs(items: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&(items.len() as u32).to_le_bytes());
            for (k, v) in items {
                out.extend_from_slice(&(k.len() as u32).to_le_bytes());
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            }
            for (k, v) in items {
                out.extend_from_slice(k);
                out.push(0);
                out.extend_from_slice(v);
                out.push(0);
            }
            out
        }
        match v {
            Value::Object(m) => pairs(
                &m.iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), envoy_value(v)))
                    .collect::<Vec<_>>(),
            ),
            Value::Array(items) => pairs(
                &items
                    .iter()
                    .map(|i| (envoy_value(i), Vec::new()))
                    .collect::<Vec<_>>(),
            ),
            Value::String(s) => s.as_bytes().to_vec(),
            Value::Number(n) => n.as_f64().unwrap_or(0.0).to_le_bytes().to_vec(),
            Value::Bool(b) => vec![u8::from(*b)],
            Value::Null => Vec::new(),
        }
    }

    /// Serialise a JSON object as `google.protobuf.Struct` (non-objects give an empty Struct).
    pub fn structure(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        if let Value::Object(m) = v {
            for (k, val) in m {
                let mut entry = Vec::new();
                bytes_field(1, k.as_bytes(), &mut entry);
                bytes_field(2, &value(val), &mut entry);
                bytes_field(1, &entry, &mut out);
            }
        }
        out
    }

    /// Serialise a JSON array as `google.protobuf.ListValue`.
    pub fn list(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        if let Value::Array(items) = v {
            for item in items {
                bytes_field(1, &value(item), &mut out);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn round_trips_claims() {
        let claims = json!({
            "sub": "alice", "iss": "https://issuer.example", "exp": 1_900_000_000,
            "groups": ["finance", "eng"], "tenant": {"id": "acme", "tier": 2.5},
            "admin": false, "nothing": null
        });
        let bytes = encode::structure(&claims);
        assert_eq!(decode_struct(&bytes), Some(claims));
    }

    #[test]
    fn envoy_pairs_claims() {
        // Bytes as Envoy 1.40 returned them for a jwt_authn payload (captured from a real run).
        let mut real = Vec::new();
        for n in [4u32, 3, 19, 3, 8, 6, 34, 3, 5] {
            real.extend_from_slice(&n.to_le_bytes());
        }
        real.extend_from_slice(b"iss\0https://issuer.test\0exp\0");
        real.extend_from_slice(&4_102_444_800f64.to_le_bytes());
        real.extend_from_slice(b"\0groups\0");
        for n in [2u32, 7, 0, 3, 0] {
            real.extend_from_slice(&n.to_le_bytes());
        }
        real.extend_from_slice(b"finance\0\0eng\0\0\0sub\0alice\0");
        let want = json!({"iss":"https://issuer.test","exp":4_102_444_800u64,"groups":["finance","eng"],"sub":"alice"});
        assert_eq!(decode_envoy_value(&real), want);
        assert_eq!(encode::envoy_value(&want), real);
        assert_eq!(decode_envoy_value(b"alice"), json!("alice"));
        assert_eq!(split_pairs(&[1, 0, 0, 0]), None);
        assert_eq!(split_pairs(&[0xff, 0xff, 0xff, 0x7f]), None);
    }

    #[test]
    fn list_and_lenient() {
        let l = json!(["a", 1, true]);
        assert_eq!(decode_list(&encode::list(&l)), Some(l));
        assert_eq!(decode_property_lenient(b"alice"), Some(json!("alice")));
        assert_eq!(decode_struct(b""), Some(json!({})));
    }

    #[test]
    fn malformed_is_none() {
        let cases: [&[u8]; 4] = [
            &[0x0a, 0x05, 0x01],
            &[0xff; 11],
            &[0x0b],
            &[0x0a, 0x02, 0x12, 0x09],
        ];
        for c in cases {
            assert_eq!(decode_struct(c), None, "{c:?}");
        }
    }

    #[test]
    fn depth_is_bounded() {
        let mut v = json!("leaf");
        for _ in 0..(MAX_DEPTH + 5) {
            v = json!({ "k": v });
        }
        assert_eq!(decode_struct(&encode::structure(&v)), None);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_struct(&bytes);
            let _ = decode_list(&bytes);
            let _ = decode_property_lenient(&bytes);
            let _ = decode_envoy_value(&bytes);
        }
    }
}
