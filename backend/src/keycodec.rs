//! The order-preserving key encoding: byte order of encoded keys is the order of
//! [`Value::sort_cmp`] on values of one type, so RocksDB's range scans return rows in key
//! order and a key prefix selects exactly the rows whose leading columns are equal.
//!
//! One value is a type byte followed by its payload; a composite key is the concatenation
//! of its values. Every encoding is self-delimiting (no encoded value is a prefix of a
//! different one), so concatenation preserves lexicographic order column by column.
//!
//! | value | encoding |
//! | --- | --- |
//! | BIGINT | `0x10`, i64 with the sign bit flipped, big-endian |
//! | DOUBLE | `0x20`, IEEE bits: negative -> all bits flipped, else sign bit flipped; `-0.0` is `0.0`, every NaN one NaN above `+inf` |
//! | TEXT | `0x30`, bytes with `0x00` written `0x00 0xFF`, then `0x00 0x01` |
//! | BOOLEAN | `0x40`, `0` or `1` |
//! | BYTEA | `0x50`, as TEXT |
//! | TIMESTAMP | `0x60`, as BIGINT |
//! | NULL | `0xFF`: after every value, as `sort_cmp` orders NULLs last |
//!
//! A primary-key column declared `DESC` is written with every byte of its encoding inverted
//! (`!b`). The encodings being self-delimiting, two different values first differ at a byte
//! that neither has run out at, so inverting reverses their order and the column still ends
//! where its value does: the table's rows lie in the order its key declares, and a scan in
//! that order reads forwards.
//!
//! Types are ordered as `DataType` is, which `sort_cmp` uses for values of different types
//! (a type-checked plan never compares those, except BIGINT with DOUBLE, which never share
//! a key column).

use comb_planner::Value;

use crate::error::{Error, Result};

const TAG_INT: u8 = 0x10;
const TAG_DOUBLE: u8 = 0x20;
const TAG_TEXT: u8 = 0x30;
const TAG_BOOL: u8 = 0x40;
const TAG_BYTES: u8 = 0x50;
const TAG_TIMESTAMP: u8 = 0x60;
/// The type byte of NULL; also the first byte past every non-NULL value of a column.
pub(crate) const TAG_NULL: u8 = 0xFF;

/// The bit pattern every NaN is written as.
const CANONICAL_NAN: u64 = 0x7FF8_0000_0000_0000;

/// Appends the encoding of one value.
pub fn encode_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(TAG_NULL),
        Value::Int(v) => {
            out.push(TAG_INT);
            out.extend_from_slice(&((*v as u64) ^ (1 << 63)).to_be_bytes());
        }
        Value::Timestamp(v) => {
            out.push(TAG_TIMESTAMP);
            out.extend_from_slice(&((*v as u64) ^ (1 << 63)).to_be_bytes());
        }
        Value::Double(v) => {
            out.push(TAG_DOUBLE);
            out.extend_from_slice(&double_bits(*v).to_be_bytes());
        }
        Value::Text(v) => {
            out.push(TAG_TEXT);
            escape(out, v.as_bytes());
        }
        Value::Bytes(v) => {
            out.push(TAG_BYTES);
            escape(out, v);
        }
        Value::Bool(v) => {
            out.push(TAG_BOOL);
            out.push(u8::from(*v));
        }
    }
}

/// Appends the encoding of one key column's value: as [`encode_value`], with its bytes
/// inverted when the column is `descending`.
pub fn encode_key_value(out: &mut Vec<u8>, value: &Value, descending: bool) {
    let start = out.len();
    encode_value(out, value);
    if descending {
        out[start..].iter_mut().for_each(|b| *b = !*b);
    }
}

/// Encodes the leading columns of a key whose columns run in the directions `descending`
/// (one per key column; `values` may be fewer, a prefix).
pub fn encode_key_in(values: &[Value], descending: &[bool]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 10);
    for (i, value) in values.iter().enumerate() {
        encode_key_value(&mut out, value, descending.get(i).copied().unwrap_or(false));
    }
    out
}

/// Encodes a composite key whose columns all ascend.
pub fn encode_key(values: &[Value]) -> Vec<u8> {
    encode_key_in(values, &[])
}

fn double_bits(v: f64) -> u64 {
    let bits = if v.is_nan() {
        CANONICAL_NAN
    } else if v == 0.0 {
        0 // -0.0 and 0.0 are one key, as sql_cmp says they are equal
    } else {
        v.to_bits()
    };
    if bits & (1 << 63) != 0 { !bits } else { bits | (1 << 63) }
}

fn escape(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 1]);
}

/// Decodes one value from the front of `input`, advancing it.
pub fn decode_value(input: &mut &[u8]) -> Result<Value> {
    let corrupt = |detail: &str| Error::Corrupt { location: "a key".to_owned(), detail: detail.to_owned() };
    let (&tag, rest) = input.split_first().ok_or_else(|| corrupt("empty key value"))?;
    *input = rest;
    let fixed = |input: &mut &[u8]| -> Result<u64> {
        let (head, rest) = input.split_at_checked(8).ok_or_else(|| corrupt("truncated number"))?;
        *input = rest;
        Ok(u64::from_be_bytes(head.try_into().expect("8 bytes")))
    };
    Ok(match tag {
        TAG_NULL => Value::Null,
        TAG_INT => Value::Int((fixed(input)? ^ (1 << 63)) as i64),
        TAG_TIMESTAMP => Value::Timestamp((fixed(input)? ^ (1 << 63)) as i64),
        TAG_DOUBLE => {
            let bits = fixed(input)?;
            let bits = if bits & (1 << 63) != 0 { bits & !(1 << 63) } else { !bits };
            Value::Double(f64::from_bits(bits))
        }
        TAG_BOOL => {
            let (&b, rest) = input.split_first().ok_or_else(|| corrupt("truncated boolean"))?;
            *input = rest;
            Value::Bool(b != 0)
        }
        TAG_TEXT => Value::Text(String::from_utf8(unescape(input)?).map_err(|_| corrupt("text is not UTF-8"))?),
        TAG_BYTES => Value::Bytes(unescape(input)?),
        _ => return Err(corrupt("unknown type byte")),
    })
}

fn unescape(input: &mut &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        match (input.get(i), input.get(i + 1)) {
            (Some(0), Some(0xFF)) => {
                out.push(0);
                i += 2;
            }
            (Some(0), Some(1)) => {
                *input = &input[i + 2..];
                return Ok(out);
            }
            (Some(&b), _) if b != 0 => {
                out.push(b);
                i += 1;
            }
            _ => return Err(Error::Corrupt { location: "a key".to_owned(), detail: "unterminated text".to_owned() }),
        }
    }
}

/// Decodes one key column's value written by [`encode_key_value`], advancing `input`.
pub fn decode_key_value(input: &mut &[u8], descending: bool) -> Result<Value> {
    if !descending {
        return decode_value(input);
    }
    let inverted: Vec<u8> = input.iter().map(|b| !b).collect();
    let mut rest = inverted.as_slice();
    let value = decode_value(&mut rest)?;
    *input = &input[inverted.len() - rest.len()..];
    Ok(value)
}

/// Decodes a whole composite key whose columns all ascend.
pub fn decode_key(input: &[u8]) -> Result<Vec<Value>> {
    decode_key_in(input, &[])
}

/// Decodes a whole composite key whose columns run in the directions `descending` (one per
/// key column; a column past them ascends).
pub fn decode_key_in(mut input: &[u8], descending: &[bool]) -> Result<Vec<Value>> {
    let mut values = Vec::new();
    while !input.is_empty() {
        let desc = descending.get(values.len()).copied().unwrap_or(false);
        values.push(decode_key_value(&mut input, desc)?);
    }
    Ok(values)
}

/// The smallest byte string greater than every string that starts with `prefix`
/// (`None`: no bound, the prefix is all `0xFF`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The partition of a partition-column value: FNV-1a (64 bits, fixed offset basis: stable
/// across processes and versions) of its key encoding, modulo the partition count.
pub fn partition_of(value: &Value, partitions: u16) -> u16 {
    let mut bytes = Vec::with_capacity(16);
    encode_value(&mut bytes, value);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u16
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cmp::Ordering;

    use proptest::prelude::*;

    use super::*;

    /// Values of one type (or NULL), as one key column holds them.
    pub(crate) fn values_of_one_type() -> impl Strategy<Value = Vec<Value>> {
        let null_or = |s: BoxedStrategy<Value>| prop_oneof![1 => Just(Value::Null), 6 => s].boxed();
        let doubles = prop_oneof![
            any::<f64>(),
            Just(0.0),
            Just(-0.0),
            Just(f64::NAN),
            Just(-f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            -3.0..3.0f64
        ];
        prop_oneof![
            proptest::collection::vec(null_or(prop_oneof![any::<i64>(), -3..3i64].prop_map(Value::Int).boxed()), 0..8),
            proptest::collection::vec(null_or(doubles.prop_map(Value::Double).boxed()), 0..8),
            proptest::collection::vec(null_or("[a\\x00b\\x01\u{ff}]{0,5}".prop_map(Value::Text).boxed()), 0..8),
            proptest::collection::vec(null_or(proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(0xFF), any::<u8>()], 0..5).prop_map(Value::Bytes).boxed()), 0..8),
            proptest::collection::vec(null_or(any::<bool>().prop_map(Value::Bool).boxed()), 0..8),
            proptest::collection::vec(null_or(any::<i64>().prop_map(Value::Timestamp).boxed()), 0..8),
        ]
    }

    fn same(a: &Value, b: &Value) -> bool {
        a.sort_cmp(b) == Ordering::Equal
    }

    proptest! {
        #[test]
        fn encoding_order_agrees_with_sort_cmp(values in values_of_one_type()) {
            for a in &values {
                for b in &values {
                    let (ka, kb) = (encode_key(std::slice::from_ref(a)), encode_key(std::slice::from_ref(b)));
                    prop_assert_eq!(ka.cmp(&kb), a.sort_cmp(b), "{:?} vs {:?}", a, b);
                }
            }
        }

        #[test]
        fn composite_keys_order_column_by_column(a in values_of_one_type(), b in values_of_one_type()) {
            // Pair up the first values of each list: (a[i], b[j]) keys compare as tuples.
            let pairs: Vec<(Value, Value)> = a.iter().flat_map(|x| b.iter().map(move |y| (x.clone(), y.clone()))).collect();
            for (x1, y1) in &pairs {
                for (x2, y2) in &pairs {
                    let k1 = encode_key(&[x1.clone(), y1.clone()]);
                    let k2 = encode_key(&[x2.clone(), y2.clone()]);
                    let expected = x1.sort_cmp(x2).then_with(|| y1.sort_cmp(y2));
                    prop_assert_eq!(k1.cmp(&k2), expected);
                    // A prefix selects exactly the keys whose first column is equal.
                    let prefix = encode_key(std::slice::from_ref(x1));
                    prop_assert_eq!(k2.starts_with(&prefix), same(x1, x2));
                }
            }
        }

        #[test]
        fn keys_round_trip(values in values_of_one_type()) {
            let decoded = decode_key(&encode_key(&values)).unwrap();
            prop_assert_eq!(decoded.len(), values.len());
            for (d, v) in decoded.iter().zip(&values) {
                prop_assert!(same(d, v), "{:?} decoded as {:?}", v, d);
            }
        }

        #[test]
        fn keys_with_descending_columns_order_column_by_column_and_round_trip(
            a in values_of_one_type(),
            b in values_of_one_type(),
            directions in any::<[bool; 2]>(),
        ) {
            let pairs: Vec<(Value, Value)> = a.iter().flat_map(|x| b.iter().map(move |y| (x.clone(), y.clone()))).collect();
            let in_direction = |o: Ordering, desc: bool| if desc { o.reverse() } else { o };
            for (x1, y1) in &pairs {
                let k1 = encode_key_in(&[x1.clone(), y1.clone()], &directions);
                let decoded = decode_key_in(&k1, &directions).unwrap();
                prop_assert!(decoded.len() == 2 && same(&decoded[0], x1) && same(&decoded[1], y1), "{:?} decoded as {:?}", (x1, y1), decoded);
                for (x2, y2) in &pairs {
                    let k2 = encode_key_in(&[x2.clone(), y2.clone()], &directions);
                    let expected = in_direction(x1.sort_cmp(x2), directions[0]).then_with(|| in_direction(y1.sort_cmp(y2), directions[1]));
                    prop_assert_eq!(k1.cmp(&k2), expected, "{:?} vs {:?} in directions {:?}", (x1, y1), (x2, y2), directions);
                    let prefix = encode_key_in(std::slice::from_ref(x1), &directions);
                    prop_assert_eq!(k2.starts_with(&prefix), same(x1, x2));
                }
            }
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40), desc in any::<bool>()) {
            let _ = decode_key(&bytes);
            let _ = decode_key_in(&bytes, &[desc, !desc]);
        }
    }

    #[test]
    fn edge_cases_of_the_encoding() {
        let k = |v: Value| encode_key(&[v]);
        assert_eq!(k(Value::Double(-0.0)), k(Value::Double(0.0)));
        assert_eq!(k(Value::Double(f64::NAN)), k(Value::Double(-f64::NAN)));
        assert!(k(Value::Double(f64::NAN)) > k(Value::Double(f64::INFINITY)));
        assert!(k(Value::Int(-1)) < k(Value::Int(0)));
        assert!(k(Value::Int(i64::MAX)) < k(Value::Null));
        assert!(k(Value::Text("a".into())) < k(Value::Text("a\0".into())));
        assert!(k(Value::Text("a\0".into())) < k(Value::Text("a\u{1}".into())));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF]), None);
        // The partition function is fixed: these values never change across releases.
        assert_eq!(partition_of(&Value::Int(1), 1), 0);
        let spread: std::collections::BTreeSet<u16> = (0..64).map(|i| partition_of(&Value::Int(i), 4)).collect();
        assert_eq!(spread.len(), 4, "64 keys reach every one of 4 partitions");
    }
}
