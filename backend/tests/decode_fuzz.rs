//! Log records are decoded from bytes that may be damaged: whatever the bytes (random, or a
//! real commit record with flipped bytes and a cut tail), decoding the record and the row
//! images it carries answers or says `Corrupt`, and never panics (rows and keys alone are
//! fuzzed by their modules' unit tests). Reading the record in place (`view_payload`)
//! accepts exactly what decoding accepts and reads the same values. `COMB_FUZZ_CASES` raises
//! the number of cases for a long run.

use bytes::Bytes;
use comb_backend::{
    COMMIT_VERSION, CommitRecord, Error, InvocationRecord, InvocationView, LogRecord, RecordView, RunRecord, RunView, TraceRecord, Value, WriteRecord, WriteView, decode_payload, decode_row,
    encode_commit, encode_row, encode_trace, view_payload,
};
use prost::encoding::{WireType, encode_key, encode_varint};
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
        writes: vec![WriteRecord { partition: 1, kind: 1, object: 7, key: Bytes::from_static(b"\x00key"), before: Some(Bytes::from(row.clone())), after: Some(Bytes::from(row)) }],
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

fn owned_run(view: &RunView<'_>) -> RunRecord {
    RunRecord {
        id: view.id.to_owned(),
        name: view.name.to_owned(),
        version: view.version,
        input: view.input.to_owned(),
        output: view.output.to_owned(),
        start_us: view.start_us,
        end_us: view.end_us,
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
            prop_assert_eq!(commit.commit_us, view.commit_us);
        }
        (Some(LogRecord::Trace(trace)), Some(RecordView::Trace(view))) => {
            prop_assert_eq!(&trace.invocations, &view.invocations.iter().map(owned_invocation).collect::<Vec<_>>());
            prop_assert_eq!(&trace.runs, &view.runs.iter().map(owned_run).collect::<Vec<_>>());
        }
        (decoded, viewed) => prop_assert!(false, "decoded as {decoded:?}, read in place as {viewed:?}"),
    }
    Ok(decoded)
}

/// Flips bits at a few places in `bytes` and may cut its tail (never its kind byte).
fn damage(mut bytes: Vec<u8>, flips: Vec<(prop::sample::Index, u8)>, cut: Option<prop::sample::Index>) -> Vec<u8> {
    for (at, mask) in flips {
        let i = at.index(bytes.len());
        bytes[i] ^= mask;
    }
    if let Some(cut) = cut {
        bytes.truncate(1 + cut.index(bytes.len()));
    }
    bytes
}

/// A field as the wire carries it, for building messages that no encoder of these records
/// writes: unknown tags, any wire type on any tag, a field twice, groups nested deep.
#[derive(Debug, Clone)]
enum Wire {
    Varint(u32, u64),
    Fixed32(u32),
    Fixed64(u32),
    Delimited(u32, Vec<u8>),
    /// A message of these fields (fields 3 and 4 of a commit, 1 of a trace record).
    Message(u32, Vec<Wire>),
    /// Groups of this field nested this deep, then closed.
    Groups(u32, u32),
}

fn encode_wire(fields: &[Wire], out: &mut Vec<u8>) {
    for field in fields {
        match field {
            Wire::Varint(tag, v) => {
                encode_key(*tag, WireType::Varint, out);
                encode_varint(*v, out);
            }
            Wire::Fixed32(tag) => {
                encode_key(*tag, WireType::ThirtyTwoBit, out);
                out.extend_from_slice(&[1, 2, 3, 4]);
            }
            Wire::Fixed64(tag) => {
                encode_key(*tag, WireType::SixtyFourBit, out);
                out.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
            }
            Wire::Delimited(tag, bytes) => {
                encode_key(*tag, WireType::LengthDelimited, out);
                encode_varint(bytes.len() as u64, out);
                out.extend_from_slice(bytes);
            }
            Wire::Message(tag, fields) => {
                let mut body = Vec::new();
                encode_wire(fields, &mut body);
                encode_key(*tag, WireType::LengthDelimited, out);
                encode_varint(body.len() as u64, out);
                out.extend_from_slice(&body);
            }
            Wire::Groups(tag, depth) => {
                (0..*depth).for_each(|_| encode_key(*tag, WireType::StartGroup, out));
                (0..*depth).for_each(|_| encode_key(*tag, WireType::EndGroup, out));
            }
        }
    }
}

/// A payload of kind `kind` holding `fields`.
fn wire_payload(kind: u8, fields: &[Wire]) -> Vec<u8> {
    let mut out = vec![kind];
    encode_wire(fields, &mut out);
    out
}

/// A field of a message whose length-delimited fields are `delimited`: a known tag or an
/// unknown one (13, 14), mostly of its own wire type (so that whole messages often read), at
/// times of the other, of a fixed size, or groups nested about as deep as prost allows.
fn a_wire_field(delimited: &'static [u32]) -> impl Strategy<Value = Wire> {
    let value = prop_oneof![0..300u64, any::<u64>()];
    let bytes = prop_oneof!["[a-zé]{0,6}".prop_map(String::into_bytes), prop::collection::vec(any::<u8>(), 0..6)];
    let depth = prop_oneof![1..=3u32, 98..=102u32];
    (1..=14u32, 0..20u8, value, bytes, depth).prop_map(move |(tag, roll, value, bytes, depth)| {
        match roll {
            0 => Wire::Fixed32(tag),
            1 => Wire::Fixed64(tag),
            2 => Wire::Groups(tag, depth),
            // 3 and 4: the other of the two wire types.
            roll if delimited.contains(&tag) == (roll > 4) => Wire::Delimited(tag, bytes),
            _ => Wire::Varint(tag, value),
        }
    })
}

/// A record of kind 1 (commit), 2 (catalog) or 3 (trace) made of such fields, its messages
/// (writes, invocations, runs) too.
fn a_wire_record() -> impl Strategy<Value = (u8, Vec<Wire>)> {
    const WRITE: &[u32] = &[4, 5, 6];
    const INVOCATION: &[u32] = &[1, 2, 3, 8, 11];
    const RUN: &[u32] = &[1, 2, 4, 5];
    let message = |tag: u32, delimited: &'static [u32]| prop::collection::vec(a_wire_field(delimited), 0..8).prop_map(move |fields| Wire::Message(tag, fields));
    prop_oneof![
        (Just(1u8), prop::collection::vec(prop_oneof![a_wire_field(&[2]), message(3, WRITE), message(4, INVOCATION)], 0..6)),
        (Just(2u8), prop::collection::vec(a_wire_field(&[1]), 0..4)),
        (Just(3u8), prop::collection::vec(prop_oneof![a_wire_field(&[]), message(1, INVOCATION), message(2, RUN)], 0..6)),
    ]
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
    fn a_damaged_trace_record_is_a_record_or_corrupt(flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..6), cut in any::<Option<prop::sample::Index>>()) {
        let run = RunRecord { id: "r".into(), name: "n".into(), version: -1, input: "{}".into(), output: "null".into(), start_us: 1_764_000_000_000_000, end_us: 1_764_000_000_000_001 };
        let record = encode_trace(&TraceRecord { invocations: vec![an_invocation(), InvocationRecord { function: "g".into(), ..an_invocation() }], runs: vec![run] });
        view_agrees(&damage(record, flips, cut))?;
    }

    #[test]
    fn any_wire_fields_read_in_place_as_decoded((kind, fields) in a_wire_record()) {
        view_agrees(&wire_payload(kind, &fields))?;
    }

    #[test]
    fn a_damaged_commit_record_is_a_record_or_corrupt(flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..6), cut in any::<Option<prop::sample::Index>>()) {
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
    let payload = a_commit();
    let Ok(RecordView::Commit(view)) = view_payload(&payload) else { panic!("the record does not read in place") };
    assert_eq!(view.invocations.iter().map(owned_invocation).collect::<Vec<_>>(), commit.invocations);
    assert_eq!(view.writes.iter().map(owned_write).collect::<Vec<_>>(), commit.writes);
    let after = commit.writes[0].after.clone().unwrap();
    assert_eq!(decode_row(&after).unwrap()[1], Value::Text("café".into()));
}

#[test]
fn groups_nest_as_deep_in_place_as_decoded() {
    // prost allows groups 100 deep in a record's own fields and 99 in a message nested in
    // it; reading in place must refuse exactly the same.
    fn in_record(depth: u32) -> Vec<Wire> {
        vec![Wire::Groups(15, depth)]
    }
    fn in_write(depth: u32) -> Vec<Wire> {
        vec![Wire::Message(3, vec![Wire::Varint(1, 2), Wire::Groups(15, depth)])]
    }
    fn in_invocation(depth: u32) -> Vec<Wire> {
        vec![Wire::Message(1, vec![Wire::Delimited(1, b"f".to_vec()), Wire::Groups(15, depth)])]
    }
    for (kind, fields, deepest) in [(1, in_record as fn(u32) -> Vec<Wire>, 100), (1, in_write, 99), (3, in_invocation, 99)] {
        for depth in deepest - 1..=deepest + 1 {
            let payload = wire_payload(kind, &fields(depth));
            assert_eq!(decode_payload(&Bytes::from(payload.clone())).is_ok(), depth <= deepest, "prost at depth {depth} of {fields:?}", fields = fields(1));
            view_agrees(&payload).unwrap();
        }
    }
}

#[test]
fn a_field_written_twice_reads_as_its_last_value() {
    let invocation = Wire::Message(4, vec![
        Wire::Delimited(1, b"first".to_vec()),
        Wire::Varint(7, 1),
        Wire::Delimited(2, b"w".to_vec()),
        Wire::Delimited(1, b"last".to_vec()),
        Wire::Varint(7, 2),
        Wire::Delimited(2, b"v".to_vec()),
    ]);
    // A uint32 field given more than 32 bits keeps the low 32, as prost does.
    let write = Wire::Message(3, vec![Wire::Varint(3, 1), Wire::Varint(3, (1 << 32) + 9), Wire::Delimited(5, b"a".to_vec()), Wire::Delimited(5, b"b".to_vec())]);
    // `partitions`, unpacked, then packed.
    let partitions = [Wire::Varint(2, 4), Wire::Delimited(2, vec![5, 6])];
    let payload = wire_payload(1, &[invocation, write, partitions[0].clone(), partitions[1].clone()]);
    let Some(LogRecord::Commit(commit)) = view_agrees(&payload).unwrap() else { panic!("the record does not decode") };
    let (invocation, write) = (&commit.invocations[0], &commit.writes[0]);
    assert_eq!((invocation.function.as_str(), invocation.partition, invocation.workflow_id.as_deref()), ("last", Some(2), Some("v")));
    assert_eq!((write.object, write.before.as_deref()), (9, Some(&b"b"[..])));
    assert_eq!(commit.partitions, [4, 5, 6]);
}
