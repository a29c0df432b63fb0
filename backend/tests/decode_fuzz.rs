//! Log records are decoded from bytes that may be damaged: whatever the bytes (random, or a
//! real commit record with flipped bytes and a cut tail), decoding the record and the row
//! images it carries answers or says `Corrupt`, and never panics (rows and keys alone are
//! fuzzed by their modules' unit tests). `COMB_FUZZ_CASES` raises the number of cases for a
//! long run.

use bytes::Bytes;
use comb_backend::{COMMIT_VERSION, CommitRecord, Error, InvocationRecord, LogRecord, Value, WriteRecord, decode_payload, decode_row, encode_commit, encode_row};
use proptest::prelude::*;

/// Cases per property: `COMB_FUZZ_CASES`, or `default`.
fn cases(default: u32) -> u32 {
    std::env::var("COMB_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(default)
}

/// A commit record as an older build wrote it: with a field this build does not know (tag 5,
/// the recorded output's dropped second copy), which decoding skips.
fn a_commit() -> Vec<u8> {
    let row = encode_row(&[Value::Int(-5), Value::Text("café".into()), Value::Null, Value::Double(1.5), Value::Bool(true), Value::Bytes(vec![0, 255])]);
    let record = encode_commit(&CommitRecord {
        version: COMMIT_VERSION,
        partitions: vec![1, 2],
        writes: vec![WriteRecord { partition: 1, kind: 1, object: 7, key: Bytes::from_static(b"\x00key"), before: Some(Bytes::from(row.clone())), after: Some(Bytes::from(row)), ..WriteRecord::default() }],
        invocations: vec![InvocationRecord { function: "f".into(), ..InvocationRecord::default() }],
        ..CommitRecord::default()
    });
    [record, vec![5 << 3 | 2, 8], br#"{"n": 1}"#.to_vec()].concat()
}

fn corrupt_or<T>(result: Result<T, Error>) -> Result<Option<T>, TestCaseError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(Error::Corrupt { detail, .. }) => {
            prop_assert!(!detail.is_empty());
            Ok(None)
        }
        Err(other) => Err(TestCaseError::fail(format!("not a corruption error: {other}"))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2048), ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_are_a_record_or_corrupt(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        corrupt_or(decode_payload(&Bytes::from(bytes)))?;
    }

    #[test]
    fn a_damaged_commit_record_is_a_record_or_corrupt(flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..6), cut in any::<prop::sample::Index>()) {
        let mut bytes = a_commit();
        for (at, mask) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
        }
        bytes.truncate(1 + cut.index(bytes.len()));
        if let Some(LogRecord::Commit(commit)) = corrupt_or(decode_payload(&Bytes::from(bytes)))? {
            for write in commit.writes {
                for image in [write.before, write.after].into_iter().flatten() {
                    corrupt_or(decode_row(&image))?;
                }
            }
        }
    }
}

#[test]
fn the_undamaged_record_decodes_whole() {
    let Ok(LogRecord::Commit(commit)) = decode_payload(&Bytes::from(a_commit())) else { panic!("the record does not decode") };
    assert_eq!(commit.invocations[0].function, "f");
    let after = commit.writes[0].after.clone().unwrap();
    assert_eq!(decode_row(&after).unwrap()[1], Value::Text("café".into()));
}
