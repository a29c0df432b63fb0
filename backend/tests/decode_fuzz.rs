//! Log records are decoded from bytes that may be damaged: whatever the bytes (random, or a
//! real commit record with flipped bytes and a cut tail), decoding the record and the row
//! images it carries answers or says `Corrupt`, and never panics (rows and keys alone are
//! fuzzed by their modules' unit tests). Reading the record in place (`view_payload`)
//! accepts exactly what decoding accepts and reads the same values. `COMB_FUZZ_CASES` raises
//! the number of cases for a long run.

use bytes::Bytes;
use comb_backend::{
    COMMIT_VERSION, CommitRecord, Error, InvocationRecord, InvocationView, LogRecord, RecordView, TraceRecord, Value, WriteRecord, WriteView, decode_payload, decode_row,
    encode_commit, encode_row, encode_trace, view_payload,
};
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
        invocations: vec![InvocationRecord { function: "f".into(), ..InvocationRecord::default() }, an_invocation()],
        ..CommitRecord::default()
    });
    [record, vec![5 << 3 | 2, 8], br#"{"n": 1}"#.to_vec()].concat()
}

/// An invocation with every field set.
fn an_invocation() -> InvocationRecord {
    InvocationRecord {
        function: "reserve".into(),
        workflow_id: Some("0193a1c2-7f00".into()),
        step_id: Some("book".into()),
        start_us: 1_764_000_000_000_000,
        end_us: 1_764_000_000_000_040,
        recorded: true,
        partition: Some(300),
        error: Some("no room é".into()),
        replayed: true,
        read_only: true,
        reads: vec![b"\x00\x01key".to_vec(), Vec::new()],
        reads_truncated: true,
    }
}

fn owned_write(view: &WriteView<'_>) -> WriteRecord {
    let bytes = |b: &[u8]| Bytes::copy_from_slice(b);
    WriteRecord { partition: view.partition, kind: view.kind, object: view.object, key: bytes(view.key), before: view.before.map(bytes), after: view.after.map(bytes) }
}

fn owned_invocation(view: &InvocationView<'_>) -> InvocationRecord {
    let text = |s: &str| s.to_owned();
    InvocationRecord {
        function: text(view.function),
        workflow_id: view.workflow_id.map(text),
        step_id: view.step_id.map(text),
        start_us: view.start_us,
        end_us: view.end_us,
        recorded: view.recorded,
        partition: view.partition,
        error: view.error.map(text),
        replayed: view.replayed,
        read_only: view.read_only,
        reads: view.reads.iter().map(|r| r.to_vec()).collect(),
        reads_truncated: view.reads_truncated,
    }
}

/// Reading `bytes` in place and decoding them agree: both refuse them as corrupt, or both
/// read the same writes and invocations. Returns the decoded record.
fn view_agrees(bytes: &[u8]) -> Result<Option<LogRecord>, TestCaseError> {
    let decoded = corrupt_or(decode_payload(&Bytes::copy_from_slice(bytes)))?;
    let viewed = corrupt_or(view_payload(bytes))?;
    match (&decoded, &viewed) {
        (None, None) | (Some(LogRecord::Catalog(_)), Some(RecordView::Catalog)) => {}
        (Some(LogRecord::Commit(commit)), Some(RecordView::Commit(view))) => {
            prop_assert_eq!(&commit.writes, &view.writes.iter().map(owned_write).collect::<Vec<_>>());
            prop_assert_eq!(&commit.invocations, &view.invocations.iter().map(owned_invocation).collect::<Vec<_>>());
        }
        (Some(LogRecord::Trace(trace)), Some(RecordView::Trace(view))) => {
            prop_assert_eq!(&trace.invocations, &view.invocations.iter().map(owned_invocation).collect::<Vec<_>>());
        }
        (decoded, viewed) => prop_assert!(false, "decoded as {decoded:?}, read in place as {viewed:?}"),
    }
    Ok(decoded)
}

/// Flips bits at a few places in `bytes` and cuts its tail (never its kind byte).
fn damage(mut bytes: Vec<u8>, flips: Vec<(prop::sample::Index, u8)>, cut: prop::sample::Index) -> Vec<u8> {
    for (at, mask) in flips {
        let i = at.index(bytes.len());
        bytes[i] ^= mask;
    }
    bytes.truncate(1 + cut.index(bytes.len()));
    bytes
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
        view_agrees(&bytes)?;
    }

    #[test]
    fn a_damaged_trace_record_is_a_record_or_corrupt(flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..6), cut in any::<prop::sample::Index>()) {
        let record = encode_trace(&TraceRecord { invocations: vec![an_invocation(), InvocationRecord { function: "g".into(), ..an_invocation() }] });
        view_agrees(&damage(record, flips, cut))?;
    }

    #[test]
    fn a_damaged_commit_record_is_a_record_or_corrupt(flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..6), cut in any::<prop::sample::Index>()) {
        if let Some(LogRecord::Commit(commit)) = view_agrees(&damage(a_commit(), flips, cut))? {
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
    assert_eq!(commit.invocations[1], an_invocation());
    let Ok(RecordView::Commit(view)) = view_payload(&a_commit()) else { panic!("the record does not read in place") };
    assert_eq!(view.invocations.iter().map(owned_invocation).collect::<Vec<_>>(), commit.invocations);
    assert_eq!(view.writes.iter().map(owned_write).collect::<Vec<_>>(), commit.writes);
    let after = commit.writes[0].after.clone().unwrap();
    assert_eq!(decode_row(&after).unwrap()[1], Value::Text("café".into()));
}
