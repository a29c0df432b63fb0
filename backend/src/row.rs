//! The row encoding: compact, self-describing, versioned.
//!
//! `version u8 (1) | column count varint | per column: type byte, payload`, where BIGINT
//! and TIMESTAMP are zigzag varints, DOUBLE 8 bytes little-endian, BOOLEAN has no payload
//! (two type bytes), TEXT and BYTEA a varint length then the bytes, NULL no payload. Rows
//! carry their types so that they decode without the catalog (the tracing layer reads
//! before and after images straight from the log).

use comb_planner::Value;

use crate::error::{Error, Result};

const ROW_V1: u8 = 1;

const T_NULL: u8 = 0;
const T_INT: u8 = 1;
const T_DOUBLE: u8 = 2;
const T_TEXT: u8 = 3;
const T_FALSE: u8 = 4;
const T_TRUE: u8 = 5;
const T_BYTES: u8 = 6;
const T_TIMESTAMP: u8 = 7;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Encodes a row.
pub fn encode_row(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + values.len() * 9);
    out.push(ROW_V1);
    put_varint(&mut out, values.len() as u64);
    for value in values {
        match value {
            Value::Null => out.push(T_NULL),
            Value::Int(v) => {
                out.push(T_INT);
                put_varint(&mut out, zigzag(*v));
            }
            Value::Timestamp(v) => {
                out.push(T_TIMESTAMP);
                put_varint(&mut out, zigzag(*v));
            }
            Value::Double(v) => {
                out.push(T_DOUBLE);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::Bool(v) => out.push(if *v { T_TRUE } else { T_FALSE }),
            Value::Text(v) => {
                out.push(T_TEXT);
                put_varint(&mut out, v.len() as u64);
                out.extend_from_slice(v.as_bytes());
            }
            Value::Bytes(v) => {
                out.push(T_BYTES);
                put_varint(&mut out, v.len() as u64);
                out.extend_from_slice(v);
            }
        }
    }
    out
}

struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    fn corrupt(detail: &str) -> Error {
        Error::Corrupt { location: "a row".to_owned(), detail: detail.to_owned() }
    }

    // The readers are inlined into the row's decoding loop: called, each returned its
    // `Result` (as large as `Error`) through memory, a store and a load for every value.
    #[inline(always)]
    fn byte(&mut self) -> Result<u8> {
        let (&b, rest) = self.input.split_first().ok_or_else(|| Self::corrupt("truncated"))?;
        self.input = rest;
        Ok(b)
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Self::corrupt("varint too long"))
    }

    #[inline(always)]
    fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let (head, rest) = self.input.split_at_checked(n).ok_or_else(|| Self::corrupt("truncated"))?;
        self.input = rest;
        Ok(head)
    }
}

/// A value of a row image, borrowed from the image: decoding a row this way copies no text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Null,
    Int(i64),
    Timestamp(i64),
    Double(f64),
    Bool(bool),
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl ValueRef<'_> {
    /// The value, owned.
    pub fn to_value(self) -> Value {
        match self {
            ValueRef::Null => Value::Null,
            ValueRef::Int(v) => Value::Int(v),
            ValueRef::Timestamp(v) => Value::Timestamp(v),
            ValueRef::Double(v) => Value::Double(v),
            ValueRef::Bool(v) => Value::Bool(v),
            ValueRef::Text(v) => Value::Text(v.to_owned()),
            ValueRef::Bytes(v) => Value::Bytes(v.to_vec()),
        }
    }
}

impl<'a> From<&'a Value> for ValueRef<'a> {
    fn from(value: &'a Value) -> Self {
        match value {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Int(*v),
            Value::Timestamp(v) => ValueRef::Timestamp(*v),
            Value::Double(v) => ValueRef::Double(*v),
            Value::Bool(v) => ValueRef::Bool(*v),
            Value::Text(v) => ValueRef::Text(v),
            Value::Bytes(v) => ValueRef::Bytes(v),
        }
    }
}

/// Decodes a row.
pub fn decode_row(bytes: &[u8]) -> Result<Vec<Value>> {
    decode_row_with(bytes, ValueRef::to_value)
}

/// Decodes a row into values borrowed from `bytes`.
pub fn decode_row_ref(bytes: &[u8]) -> Result<Vec<ValueRef<'_>>> {
    decode_row_with(bytes, |value| value)
}

/// Decodes a row, each value turned by `convert` into what the caller keeps.
fn decode_row_with<'a, T>(bytes: &'a [u8], convert: impl Fn(ValueRef<'a>) -> T) -> Result<Vec<T>> {
    let mut r = Reader { input: bytes };
    if r.byte()? != ROW_V1 {
        return Err(Reader::corrupt("unknown row version"));
    }
    let count = usize::try_from(r.varint()?).map_err(|_| Reader::corrupt("column count"))?;
    if count > bytes.len() {
        return Err(Reader::corrupt("column count exceeds the row's size"));
    }
    let mut values = Vec::with_capacity(count);
    for _ in 0..count {
        let value = match r.byte()? {
            T_NULL => ValueRef::Null,
            T_INT => ValueRef::Int(unzigzag(r.varint()?)),
            T_TIMESTAMP => ValueRef::Timestamp(unzigzag(r.varint()?)),
            T_DOUBLE => ValueRef::Double(f64::from_le_bytes(r.bytes(8)?.try_into().expect("8 bytes"))),
            T_FALSE => ValueRef::Bool(false),
            T_TRUE => ValueRef::Bool(true),
            T_TEXT => {
                let n = usize::try_from(r.varint()?).map_err(|_| Reader::corrupt("length"))?;
                ValueRef::Text(std::str::from_utf8(r.bytes(n)?).map_err(|_| Reader::corrupt("text is not UTF-8"))?)
            }
            T_BYTES => {
                let n = usize::try_from(r.varint()?).map_err(|_| Reader::corrupt("length"))?;
                ValueRef::Bytes(r.bytes(n)?)
            }
            _ => return Err(Reader::corrupt("unknown type byte")),
        };
        values.push(convert(value));
    }
    if !r.input.is_empty() {
        return Err(Reader::corrupt("trailing bytes"));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Int),
            any::<i64>().prop_map(Value::Timestamp),
            any::<f64>().prop_map(Value::Double),
            any::<bool>().prop_map(Value::Bool),
            ".{0,20}".prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::Bytes),
        ]
    }

    proptest! {
        #[test]
        fn rows_round_trip(values in proptest::collection::vec(value(), 0..20)) {
            let encoded = encode_row(&values);
            let decoded = decode_row(&encoded).unwrap();
            let borrowed = decode_row_ref(&encoded).unwrap();
            prop_assert_eq!(decoded.len(), values.len());
            prop_assert_eq!(borrowed.len(), values.len());
            for ((d, b), v) in decoded.iter().zip(&borrowed).zip(&values) {
                match (d, b, v) {
                    (Value::Double(a), ValueRef::Double(r), Value::Double(b)) => {
                        prop_assert_eq!(a.to_bits(), b.to_bits());
                        prop_assert_eq!(r.to_bits(), b.to_bits());
                    }
                    _ => {
                        prop_assert_eq!(d, v);
                        prop_assert_eq!(*b, ValueRef::from(v));
                    }
                }
            }
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            // Both decoders accept and refuse the same inputs.
            prop_assert_eq!(decode_row(&bytes).is_ok(), decode_row_ref(&bytes).is_ok());
        }
    }

    #[test]
    fn small_values_take_few_bytes() {
        assert_eq!(encode_row(&[Value::Int(1), Value::Bool(true), Value::Null]), vec![1, 3, T_INT, 2, T_TRUE, T_NULL]);
    }
}
