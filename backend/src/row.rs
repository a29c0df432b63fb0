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

impl Reader<'_> {
    fn corrupt(detail: &str) -> Error {
        Error::Corrupt { location: "a row".to_owned(), detail: detail.to_owned() }
    }

    fn byte(&mut self) -> Result<u8> {
        let (&b, rest) = self.input.split_first().ok_or_else(|| Self::corrupt("truncated"))?;
        self.input = rest;
        Ok(b)
    }

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

    fn bytes(&mut self, n: usize) -> Result<&[u8]> {
        let (head, rest) = self.input.split_at_checked(n).ok_or_else(|| Self::corrupt("truncated"))?;
        self.input = rest;
        Ok(head)
    }
}

/// Decodes a row.
pub fn decode_row(bytes: &[u8]) -> Result<Vec<Value>> {
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
        values.push(match r.byte()? {
            T_NULL => Value::Null,
            T_INT => Value::Int(unzigzag(r.varint()?)),
            T_TIMESTAMP => Value::Timestamp(unzigzag(r.varint()?)),
            T_DOUBLE => Value::Double(f64::from_le_bytes(r.bytes(8)?.try_into().expect("8 bytes"))),
            T_FALSE => Value::Bool(false),
            T_TRUE => Value::Bool(true),
            T_TEXT => {
                let n = usize::try_from(r.varint()?).map_err(|_| Reader::corrupt("length"))?;
                Value::Text(String::from_utf8(r.bytes(n)?.to_vec()).map_err(|_| Reader::corrupt("text is not UTF-8"))?)
            }
            T_BYTES => {
                let n = usize::try_from(r.varint()?).map_err(|_| Reader::corrupt("length"))?;
                Value::Bytes(r.bytes(n)?.to_vec())
            }
            _ => return Err(Reader::corrupt("unknown type byte")),
        });
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
            let decoded = decode_row(&encode_row(&values)).unwrap();
            prop_assert_eq!(decoded.len(), values.len());
            for (d, v) in decoded.iter().zip(&values) {
                match (d, v) {
                    (Value::Double(a), Value::Double(b)) => prop_assert_eq!(a.to_bits(), b.to_bits()),
                    _ => prop_assert_eq!(d, v),
                }
            }
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode_row(&bytes);
        }
    }

    #[test]
    fn small_values_take_few_bytes() {
        assert_eq!(encode_row(&[Value::Int(1), Value::Bool(true), Value::Null]), vec![1, 3, T_INT, 2, T_TRUE, T_NULL]);
    }
}
