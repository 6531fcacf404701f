//! Decoding of the protobuf bytes Envoy hands to a wasm filter for structured properties.
//!
//! `get_property` serialises map-like values (dynamic metadata namespaces such as the claims that
//! `jwt_authn` writes with `payload_in_metadata`) as a `google.protobuf.Struct` message and lists
//! as `google.protobuf.ListValue`: binary protobuf, not JSON. Strings come back raw, numbers as
//! 8-byte little-endian doubles or integers, booleans as one byte. This module turns those bytes
//! into `serde_json::Value` with a bounded depth, and never panics on malformed input.

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
    std::str::from_utf8(bytes).ok().map(|s| Value::String(s.to_string()))
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
        match item.ok()? {
            // map<string, Value> fields = 1; each entry is {string key = 1; Value value = 2}
            (1, Field::Bytes(entry)) => {
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
            _ => {}
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
            (2, Field::Fixed64(bits)) => {
                let f = f64::from_bits(bits);
                // Whole numbers (timestamps, counts) read better as integers.
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    #[allow(clippy::cast_possible_truncation)]
                    Value::Number(Number::from(f as i64))
                } else {
                    Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)
                }
            }
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
    fn list_and_lenient() {
        let l = json!(["a", 1, true]);
        assert_eq!(decode_list(&encode::list(&l)), Some(l));
        assert_eq!(decode_property_lenient(b"alice"), Some(json!("alice")));
        assert_eq!(decode_struct(b""), Some(json!({})));
    }

    #[test]
    fn malformed_is_none() {
        let cases: [&[u8]; 4] = [&[0x0a, 0x05, 0x01], &[0xff; 11], &[0x0b], &[0x0a, 0x02, 0x12, 0x09]];
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
        }
    }
}
