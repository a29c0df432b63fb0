//! The backend's log records read in place: the fields of a [`CommitRecord`] or a
//! [`TraceRecord`] as slices of the payload, without a copy or an allocation per string.
//!
//! For readers that only look, many records a second: the tracing layer's feed, where
//! prost's decoding (each string copied out and checked, each message in a vector of its
//! own) was the largest share of its CPU. [`view_payload`] accepts and refuses exactly the
//! payloads [`decode_payload`](crate::decode_payload) does, and reads the same values
//! (`tests/decode_fuzz.rs` holds it to that): the wire format is one, read two ways.
//!
//! [`CommitRecord`]: crate::CommitRecord
//! [`TraceRecord`]: crate::TraceRecord

use prost::encoding::{WireType, decode_key, decode_varint};

use crate::commit::{KIND_CATALOG, KIND_COMMIT, KIND_TRACE};
use crate::error::{Error, Result};

/// A payload the backend appended, read in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordView<'a> {
    /// A transaction's commit.
    Commit(CommitView<'a>),
    /// A catalog change (its DDL is not read: see [`decode_payload`](crate::decode_payload)).
    Catalog,
    /// Invocations that committed nothing.
    Trace(TraceView<'a>),
}

/// A [`CommitRecord`](crate::CommitRecord)'s writes and invocations, in their order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitView<'a> {
    pub writes: Vec<WriteView<'a>>,
    pub invocations: Vec<InvocationView<'a>>,
    pub commit_us: Option<u64>,
}

/// A [`TraceRecord`](crate::TraceRecord)'s invocations and runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceView<'a> {
    pub invocations: Vec<InvocationView<'a>>,
    pub runs: Vec<RunView<'a>>,
}

/// A [`RunRecord`](crate::RunRecord), its strings slices of the payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunView<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub version: i64,
    pub input: &'a str,
    pub output: &'a str,
    pub start_us: i64,
    pub end_us: i64,
}

/// A [`WriteRecord`](crate::WriteRecord), its key and images slices of the payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteView<'a> {
    pub partition: u32,
    pub kind: u32,
    pub object: u32,
    pub key: &'a [u8],
    pub before: Option<&'a [u8]>,
    pub after: Option<&'a [u8]>,
}

/// An [`InvocationRecord`](crate::InvocationRecord), its strings slices of the payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvocationView<'a> {
    pub function: &'a str,
    pub workflow_id: Option<&'a str>,
    pub step_id: Option<&'a str>,
    pub start_us: u64,
    pub end_us: u64,
    pub recorded: bool,
    pub partition: Option<u32>,
    pub error: Option<&'a str>,
    pub replayed: bool,
    pub read_only: bool,
    /// The keys read, when the engine traces reads (empty, and not allocated, when not).
    pub reads: Vec<&'a [u8]>,
    pub reads_truncated: bool,
}

/// Reads a payload the backend appended, in place.
pub fn view_payload(payload: &[u8]) -> Result<RecordView<'_>> {
    let corrupt = |detail: String| Error::Corrupt { location: "a log record".to_owned(), detail };
    let Some((&kind, body)) = payload.split_first() else {
        return Err(corrupt("empty payload".to_owned()));
    };
    let view = match kind {
        KIND_COMMIT => commit(body).map(RecordView::Commit),
        KIND_CATALOG => catalog(body).map(|()| RecordView::Catalog),
        KIND_TRACE => trace(body).map(RecordView::Trace),
        kind => return Err(corrupt(format!("unknown record kind {kind}"))),
    };
    view.map_err(corrupt)
}

/// Why a message does not decode, in prost's words where prost has them.
type Why = String;

/// A field's value as its wire type carries it.
enum Value<'a> {
    Varint(u64),
    Delimited(&'a [u8]),
    /// A fixed-size or group field, skipped (no field of these records has one).
    Skipped(WireType),
}

/// How deep groups may nest in a record's own fields, as prost allows (its
/// `RECURSION_LIMIT`); a message nested in the record allows one level less, as in prost,
/// where entering the message spends one.
const GROUP_DEPTH_MAX: u32 = 100;

/// The fields of one message, in the order they were written.
struct Fields<'a> {
    rest: &'a [u8],
    /// Levels of groups an unknown field may still open.
    depth_left: u32,
}

impl<'a> Fields<'a> {
    /// The fields of a record.
    fn of_record(body: &'a [u8]) -> Self {
        Fields { rest: body, depth_left: GROUP_DEPTH_MAX }
    }

    /// The fields of a message nested in a record.
    fn of_nested(body: &'a [u8]) -> Self {
        Fields { rest: body, depth_left: GROUP_DEPTH_MAX - 1 }
    }

    /// Inlined into each message's loop: returned through memory, the field cost a store
    /// that the next load could not forward, a fifth of the tracing feed's time.
    #[inline(always)]
    fn next(&mut self) -> std::result::Result<Option<(u32, Value<'a>)>, Why> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let (tag, wire_type) = key(&mut self.rest)?;
        let value = match wire_type {
            WireType::Varint => Value::Varint(varint_at(&mut self.rest)?),
            WireType::LengthDelimited => {
                let len = varint_at(&mut self.rest)?;
                Value::Delimited(take(&mut self.rest, len, tag)?)
            }
            other => {
                skip(other, tag, &mut self.rest, self.depth_left)?;
                Value::Skipped(other)
            }
        };
        Ok(Some((tag, value)))
    }
}

/// A field's key: its tag and wire type. A key of one byte, as every field of these records
/// has, is read here; a longer one, or one prost refuses, goes to prost's `decode_key`.
#[inline(always)]
fn key(rest: &mut &[u8]) -> std::result::Result<(u32, WireType), Why> {
    if let Some((&byte, after)) = rest.split_first()
        && (8..0x80).contains(&byte)
        && let Ok(wire_type) = WireType::try_from(u64::from(byte & 7))
    {
        *rest = after;
        return Ok((u32::from(byte >> 3), wire_type));
    }
    decode_key(rest).map_err(|e| e.to_string())
}

/// A varint at the start of `rest`. One of a single byte (most lengths, flags and ids) is
/// read here; a longer one goes to prost's `decode_varint`, whose calls were a tenth of the
/// trace feed's ingest when every varint went there.
#[inline(always)]
fn varint_at(rest: &mut &[u8]) -> std::result::Result<u64, Why> {
    match rest.split_first() {
        Some((&byte, after)) if byte < 0x80 => {
            *rest = after;
            Ok(u64::from(byte))
        }
        _ => decode_varint(rest).map_err(|e| e.to_string()),
    }
}

/// Skips a field of a fixed size or a group, as prost's `skip_field` does, refusing groups
/// nested deeper than `depth_left`. (prost's own cannot be given a depth from outside it.)
fn skip(wire_type: WireType, tag: u32, rest: &mut &[u8], depth_left: u32) -> std::result::Result<(), Why> {
    if depth_left == 0 {
        return Err("groups nested too deep".to_owned());
    }
    let len = match wire_type {
        WireType::Varint => {
            varint_at(rest)?;
            0
        }
        WireType::ThirtyTwoBit => 4,
        WireType::SixtyFourBit => 8,
        WireType::LengthDelimited => varint_at(rest)?,
        WireType::StartGroup => loop {
            let (inner_tag, inner_type) = key(rest)?;
            match inner_type {
                WireType::EndGroup if inner_tag == tag => break 0,
                WireType::EndGroup => return Err(format!("field {tag}: a group ended by field {inner_tag}")),
                _ => skip(inner_type, inner_tag, rest, depth_left - 1)?,
            }
        },
        WireType::EndGroup => return Err(format!("field {tag}: a group's end without its start")),
    };
    take(rest, len, tag)?;
    Ok(())
}

/// The next `len` bytes of `rest`, which moves past them: field `tag`'s value.
fn take<'a>(rest: &mut &'a [u8], len: u64, tag: u32) -> std::result::Result<&'a [u8], Why> {
    let len = usize::try_from(len).ok().filter(|&len| len <= rest.len()).ok_or_else(|| format!("field {tag}: its length runs past the end of the message"))?;
    let (value, after) = rest.split_at(len);
    *rest = after;
    Ok(value)
}

fn wrong_type(tag: u32, expected: WireType, value: &Value<'_>) -> Why {
    let actual = match value {
        Value::Varint(_) => WireType::Varint,
        Value::Delimited(_) => WireType::LengthDelimited,
        Value::Skipped(wire_type) => *wire_type,
    };
    format!("field {tag}: wire type {actual:?}, expected {expected:?}")
}

fn varint(tag: u32, value: Value<'_>) -> std::result::Result<u64, Why> {
    match value {
        Value::Varint(v) => Ok(v),
        other => Err(wrong_type(tag, WireType::Varint, &other)),
    }
}

fn delimited<'a>(tag: u32, value: Value<'a>) -> std::result::Result<&'a [u8], Why> {
    match value {
        Value::Delimited(bytes) => Ok(bytes),
        other => Err(wrong_type(tag, WireType::LengthDelimited, &other)),
    }
}

#[inline]
fn string<'a>(tag: u32, value: Value<'a>) -> std::result::Result<&'a str, Why> {
    std::str::from_utf8(delimited(tag, value)?).map_err(|_| format!("field {tag}: a string that is not UTF-8"))
}

/// A repeated `uint32`, packed or not: checked, not kept (no reader of views needs it).
fn uint32s(tag: u32, value: Value<'_>) -> std::result::Result<(), Why> {
    match value {
        Value::Varint(_) => Ok(()),
        Value::Delimited(mut packed) => {
            while !packed.is_empty() {
                varint_at(&mut packed)?;
            }
            Ok(())
        }
        other => Err(wrong_type(tag, WireType::Varint, &other)),
    }
}

fn commit(body: &[u8]) -> std::result::Result<CommitView<'_>, Why> {
    let mut view = CommitView::default();
    let mut fields = Fields::of_record(body);
    while let Some((tag, value)) = fields.next()? {
        match tag {
            1 => {
                varint(tag, value)?;
            }
            2 => uint32s(tag, value)?,
            3 => view.writes.push(write(delimited(tag, value)?)?),
            4 => view.invocations.push(invocation(delimited(tag, value)?)?),
            6 => view.commit_us = Some(varint(tag, value)?),
            // A field this reader does not know: skipped, as prost does.
            _ => {}
        }
    }
    Ok(view)
}

fn trace(body: &[u8]) -> std::result::Result<TraceView<'_>, Why> {
    let mut view = TraceView::default();
    let mut fields = Fields::of_record(body);
    while let Some((tag, value)) = fields.next()? {
        match tag {
            1 => view.invocations.push(invocation(delimited(tag, value)?)?),
            2 => view.runs.push(run(delimited(tag, value)?)?),
            // A field this reader does not know: skipped, as prost does.
            _ => {}
        }
    }
    Ok(view)
}

fn run(body: &[u8]) -> std::result::Result<RunView<'_>, Why> {
    let mut view = RunView::default();
    let mut fields = Fields::of_nested(body);
    while let Some((tag, value)) = fields.next()? {
        match tag {
            1 => view.id = string(tag, value)?,
            2 => view.name = string(tag, value)?,
            // An int64 on the wire is the varint of its two's complement, as prost writes it.
            3 => view.version = varint(tag, value)? as i64,
            4 => view.input = string(tag, value)?,
            5 => view.output = string(tag, value)?,
            6 => view.start_us = varint(tag, value)? as i64,
            7 => view.end_us = varint(tag, value)? as i64,
            // A field this reader does not know: skipped, as prost does.
            _ => {}
        }
    }
    Ok(view)
}

fn catalog(body: &[u8]) -> std::result::Result<(), Why> {
    let mut fields = Fields::of_record(body);
    while let Some((tag, value)) = fields.next()? {
        // A field this reader does not know is skipped, as prost does.
        if tag == 1 {
            string(tag, value)?;
        }
    }
    Ok(())
}

fn write(body: &[u8]) -> std::result::Result<WriteView<'_>, Why> {
    let mut view = WriteView::default();
    let mut fields = Fields::of_nested(body);
    while let Some((tag, value)) = fields.next()? {
        match tag {
            1 => view.partition = varint(tag, value)? as u32,
            2 => view.kind = varint(tag, value)? as u32,
            3 => view.object = varint(tag, value)? as u32,
            4 => view.key = delimited(tag, value)?,
            5 => view.before = Some(delimited(tag, value)?),
            6 => view.after = Some(delimited(tag, value)?),
            // A field this reader does not know: skipped, as prost does.
            _ => {}
        }
    }
    Ok(view)
}

fn invocation(body: &[u8]) -> std::result::Result<InvocationView<'_>, Why> {
    let mut view = InvocationView::default();
    let mut fields = Fields::of_nested(body);
    while let Some((tag, value)) = fields.next()? {
        match tag {
            1 => view.function = string(tag, value)?,
            2 => view.workflow_id = Some(string(tag, value)?),
            3 => view.step_id = Some(string(tag, value)?),
            4 => view.start_us = varint(tag, value)?,
            5 => view.end_us = varint(tag, value)?,
            6 => view.recorded = varint(tag, value)? != 0,
            7 => view.partition = Some(varint(tag, value)? as u32),
            8 => view.error = Some(string(tag, value)?),
            9 => view.replayed = varint(tag, value)? != 0,
            10 => view.read_only = varint(tag, value)? != 0,
            11 => view.reads.push(delimited(tag, value)?),
            12 => view.reads_truncated = varint(tag, value)? != 0,
            // A field this reader does not know: skipped, as prost does.
            _ => {}
        }
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::{CatalogRecord, CommitRecord, InvocationRecord, RunRecord, TraceRecord, WriteRecord, encode_catalog, encode_commit, encode_trace};

    fn invocation_record() -> InvocationRecord {
        InvocationRecord {
            function: "reserve".into(),
            workflow_id: Some("w-1".into()),
            step_id: Some("book".into()),
            start_us: 1_764_000_000_000_000,
            end_us: 1_764_000_000_000_040,
            recorded: true,
            partition: Some(3),
            error: Some("no room".into()),
            replayed: true,
            read_only: true,
            reads: vec![vec![0, 1, 2], vec![]],
            reads_truncated: true,
        }
    }

    #[test]
    fn a_commit_reads_as_its_fields() {
        let record = CommitRecord {
            version: 1,
            partitions: vec![3, 70_000],
            writes: vec![
                WriteRecord { partition: 3, kind: 2, object: 9, key: b"k".to_vec().into(), before: Some(b"".to_vec().into()), after: Some(b"after".to_vec().into()) },
                WriteRecord { partition: 4, object: 10, key: b"gone".to_vec().into(), before: Some(b"b".to_vec().into()), ..Default::default() },
            ],
            invocations: vec![invocation_record(), InvocationRecord { function: "f".into(), ..Default::default() }],
            commit_us: Some(1_764_000_000_000_050),
        };
        let payload = encode_commit(&record);
        let RecordView::Commit(view) = view_payload(&payload).unwrap() else { panic!("not a commit") };
        assert_eq!(view.commit_us, Some(1_764_000_000_000_050));
        assert_eq!(view.writes, [
            WriteView { partition: 3, kind: 2, object: 9, key: b"k", before: Some(b""), after: Some(b"after") },
            WriteView { partition: 4, kind: 0, object: 10, key: b"gone", before: Some(b"b"), after: None },
        ]);
        assert_eq!(view.invocations, [
            InvocationView {
                function: "reserve",
                workflow_id: Some("w-1"),
                step_id: Some("book"),
                start_us: 1_764_000_000_000_000,
                end_us: 1_764_000_000_000_040,
                recorded: true,
                partition: Some(3),
                error: Some("no room"),
                replayed: true,
                read_only: true,
                reads: vec![&[0, 1, 2][..], &[]],
                reads_truncated: true,
            },
            InvocationView { function: "f", ..Default::default() },
        ]);
    }

    #[test]
    fn trace_and_catalog_records_read_and_garbage_is_corrupt() {
        let run = RunRecord { id: "r-1".into(), name: "search".into(), version: 2, input: "{}".into(), output: "[1]".into(), start_us: -5, end_us: 1_764_000_000_000_070 };
        let trace = encode_trace(&TraceRecord { invocations: vec![invocation_record()], runs: vec![run] });
        let RecordView::Trace(view) = view_payload(&trace).unwrap() else { panic!("not a trace record") };
        assert_eq!(view.invocations.len(), 1);
        assert_eq!(view.invocations[0].error, Some("no room"));
        // A negative int64 is ten bytes on the wire, read back whole.
        assert_eq!(view.runs, [RunView { id: "r-1", name: "search", version: 2, input: "{}", output: "[1]", start_us: -5, end_us: 1_764_000_000_000_070 }]);
        assert_eq!(view_payload(&encode_catalog(&CatalogRecord { ddl: "DROP TABLE t".into() })).unwrap(), RecordView::Catalog);
        for (payload, says) in [
            (&[][..], "empty payload"),
            (&[9, 1], "unknown record kind 9"),
            // Field 1 (the function's name) as a varint.
            (&[3, 1 << 3 | 2, 2, 1 << 3, 7], "field 1: wire type Varint, expected LengthDelimited"),
            // A write whose length runs past the record.
            (&[1, 3 << 3 | 2, 9, 1], "field 3: its length runs past the end of the message"),
            // A name that is not UTF-8.
            (&[3, 1 << 3 | 2, 4, 1 << 3 | 2, 2, 0xC3, 0x28], "field 1: a string that is not UTF-8"),
        ] {
            match view_payload(payload) {
                Err(Error::Corrupt { detail, .. }) => assert_eq!(detail, says, "{payload:?}"),
                other => panic!("{payload:?} read as {other:?}"),
            }
        }
    }
}
