//! The records the backend appends to the shared log: prost messages, written by hand
//! (no `.proto`, no protoc), behind a one-byte kind.
//!
//! A payload is `kind u8 | prost message`: kind 1 is a [`CommitRecord`] (tagged with every
//! partition it writes, tag = partition + 1), kind 2 a [`CatalogRecord`] (tagged with
//! [`CATALOG_TAG`]), kind 3 a [`TraceRecord`] (tagged with [`TRACE_TAG`]): invocations that
//! committed nothing. Recovery decodes them with [`decode_payload`]; the tracing layer reads
//! them in place with [`view_payload`](crate::view_payload).

use bytes::Bytes;
use comb_log::Tag;
use prost::Message;

use crate::error::{Error, Result};

/// The tag of catalog records: above every partition's tag (partition + 1 <= 0xFFFF).
pub const CATALOG_TAG: Tag = 0x1_0000;

/// The tag of trace records.
pub const TRACE_TAG: Tag = 0x1_0001;

/// The log tag of a partition.
pub fn partition_tag(partition: u16) -> Tag {
    Tag::from(partition) + 1
}

pub(crate) const KIND_COMMIT: u8 = 1;
pub(crate) const KIND_CATALOG: u8 = 2;
pub(crate) const KIND_TRACE: u8 = 3;

/// Version of the commit record's fields.
pub const COMMIT_VERSION: u32 = 1;

/// One transaction's commit: its writes with before and after images (a recorded output is
/// one of them), and the invocations' identity and timing.
#[derive(Clone, PartialEq, Message)]
pub struct CommitRecord {
    /// [`COMMIT_VERSION`].
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// The partitions written, ascending.
    #[prost(uint32, repeated, tag = "2")]
    pub partitions: Vec<u32>,
    /// Every key written.
    #[prost(message, repeated, tag = "3")]
    pub writes: Vec<WriteRecord>,
    /// Who ran, and when: one invocation, or the functions of a multi-function transaction
    /// in the order they ran, except untraced ones (the server's own functions), so possibly
    /// none. (Repeated since version 1's single field: same encoding.)
    #[prost(message, repeated, tag = "4")]
    pub invocations: Vec<InvocationRecord>,
    // Tag 5 held a single invocation's recorded output a second time, beside its write; no
    // longer written, and skipped (as any unknown field) in the records that have it. Never
    // reuse tag 5: old records would decode into the new field.
    /// When the record was made, microseconds since the epoch: the commit's time, which its
    /// invocations no longer give when none is traced. `None` in records made before it was.
    #[prost(uint64, optional, tag = "6")]
    pub commit_us: Option<u64>,
}

/// One key written by a transaction.
#[derive(Clone, PartialEq, Message)]
pub struct WriteRecord {
    /// The partition of the key.
    #[prost(uint32, tag = "1")]
    pub partition: u32,
    /// 0: a row, 1: an index entry, 2: a recorded output.
    #[prost(uint32, tag = "2")]
    pub kind: u32,
    /// The table (or index) id.
    #[prost(uint32, tag = "3")]
    pub object: u32,
    /// The full store key. (`Bytes`, here and in the images: decoded from a record's payload
    /// they are slices of it, not copies.)
    #[prost(bytes = "bytes", tag = "4")]
    pub key: Bytes,
    /// The value before (absent: the key did not exist). Rows are row-encoded.
    #[prost(bytes = "bytes", optional, tag = "5")]
    pub before: Option<Bytes>,
    /// The value after (absent: deleted).
    #[prost(bytes = "bytes", optional, tag = "6")]
    pub after: Option<Bytes>,
}

/// The identity and timing of an invocation, for tracing.
#[derive(Clone, PartialEq, Message)]
pub struct InvocationRecord {
    /// The function's name.
    #[prost(string, tag = "1")]
    pub function: String,
    /// The workflow id, when the invocation carried one.
    #[prost(string, optional, tag = "2")]
    pub workflow_id: Option<String>,
    /// The step id, when the invocation carried one.
    #[prost(string, optional, tag = "3")]
    pub step_id: Option<String>,
    /// When the transaction started, microseconds since the epoch.
    #[prost(uint64, tag = "4")]
    pub start_us: u64,
    /// When its body finished.
    #[prost(uint64, tag = "5")]
    pub end_us: u64,
    /// Whether its output is recorded.
    #[prost(bool, tag = "6")]
    pub recorded: bool,
    /// The partition it ran on; absent for a multi-partition transaction.
    #[prost(uint32, optional, tag = "7")]
    pub partition: Option<u32>,
    /// Why it failed (its transaction rolled back); absent when it succeeded.
    #[prost(string, optional, tag = "8")]
    pub error: Option<String>,
    /// Whether its recorded output was returned again and nothing ran.
    #[prost(bool, tag = "9")]
    pub replayed: bool,
    /// Whether it wrote no key (beyond those earlier members of its transaction wrote).
    #[prost(bool, tag = "10")]
    pub read_only: bool,
    /// The keys it read (rows and index entries), when the engine traces reads.
    #[prost(bytes = "vec", repeated, tag = "11")]
    pub reads: Vec<Vec<u8>>,
    /// Whether it read more keys than `reads` lists.
    #[prost(bool, tag = "12")]
    pub reads_truncated: bool,
}

/// Invocations that committed nothing (reads, replays of recorded outputs, failures),
/// appended in batches after their replies so that the tracing layer sees every invocation.
#[derive(Clone, PartialEq, Message)]
pub struct TraceRecord {
    /// The invocations, in the order they ended.
    #[prost(message, repeated, tag = "1")]
    pub invocations: Vec<InvocationRecord>,
    /// Workflow runs that ended without a row of their own (see [`RunRecord`]).
    #[prost(message, repeated, tag = "2")]
    pub runs: Vec<RunRecord>,
}

/// A one-transaction workflow run that succeeded, as its end function built it after its
/// members ([`crate::RunEnd`]). A run that wrote nothing, not even its row (a read-only run
/// invoked synchronously without an id, which nothing could look up to deduplicate), has it
/// in a trace record, its only record; a writing one has its row written from it.
#[derive(Clone, PartialEq, Message)]
pub struct RunRecord {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(int64, tag = "3")]
    pub version: i64,
    /// The workflow input, as JSON text.
    #[prost(string, tag = "4")]
    pub input: String,
    /// The workflow output, as JSON text.
    #[prost(string, tag = "5")]
    pub output: String,
    /// When the run started and ended, microseconds since the epoch.
    #[prost(int64, tag = "6")]
    pub start_us: i64,
    #[prost(int64, tag = "7")]
    pub end_us: i64,
}

/// A DDL script applied to the catalog.
#[derive(Clone, PartialEq, Message)]
pub struct CatalogRecord {
    /// The DDL text, exactly as applied.
    #[prost(string, tag = "1")]
    pub ddl: String,
}

/// A decoded payload of the backend's records.
#[derive(Debug, Clone, PartialEq)]
pub enum LogRecord {
    /// A transaction's commit.
    Commit(CommitRecord),
    /// A catalog change.
    Catalog(CatalogRecord),
    /// Invocations that committed nothing.
    Trace(TraceRecord),
}

/// Encodes a commit record's payload.
pub fn encode_commit(record: &CommitRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + record.encoded_len());
    out.push(KIND_COMMIT);
    record.encode(&mut out).expect("a Vec grows as needed");
    out
}

/// Encodes a catalog record's payload.
pub fn encode_catalog(record: &CatalogRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + record.encoded_len());
    out.push(KIND_CATALOG);
    record.encode(&mut out).expect("a Vec grows as needed");
    out
}

/// Encodes a trace record's payload.
pub fn encode_trace(record: &TraceRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + record.encoded_len());
    out.push(KIND_TRACE);
    record.encode(&mut out).expect("a Vec grows as needed");
    out
}

/// Decodes a payload the backend appended; keys and images are slices of `payload`.
pub fn decode_payload(payload: &Bytes) -> Result<LogRecord> {
    let corrupt = |detail: String| Error::Corrupt { location: "a log record".to_owned(), detail };
    let Some(&kind) = payload.first() else {
        return Err(corrupt("empty payload".to_owned()));
    };
    let rest = payload.slice(1..);
    match kind {
        KIND_COMMIT => CommitRecord::decode(rest).map(LogRecord::Commit).map_err(|e| corrupt(e.to_string())),
        KIND_CATALOG => CatalogRecord::decode(rest).map(LogRecord::Catalog).map_err(|e| corrupt(e.to_string())),
        KIND_TRACE => TraceRecord::decode(rest).map(LogRecord::Trace).map_err(|e| corrupt(e.to_string())),
        kind => Err(corrupt(format!("unknown record kind {kind}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_corrupt() {
        let record = CommitRecord {
            version: COMMIT_VERSION,
            partitions: vec![0, 3],
            writes: vec![WriteRecord { partition: 3, kind: 0, object: 7, key: vec![0, 3, 0, 0, 0, 7, 1].into(), before: None, after: Some(vec![1, 0].into()) }],
            invocations: vec![InvocationRecord { function: "f".into(), workflow_id: Some("w".into()), start_us: 1, end_us: 2, recorded: true, partition: Some(3), ..Default::default() }],
            commit_us: Some(3),
        };
        assert_eq!(decode_payload(&encode_commit(&record).into()).unwrap(), LogRecord::Commit(record.clone()));
        // Records written before tag 5 (a recorded output's second copy) was dropped still read.
        let with_tag_5 = [encode_commit(&record), vec![5 << 3 | 2, 2, b'4', b'2']].concat();
        assert_eq!(decode_payload(&with_tag_5.into()).unwrap(), LogRecord::Commit(record));
        let ddl = CatalogRecord { ddl: "CREATE TABLE t (a BIGINT PRIMARY KEY)".into() };
        assert_eq!(decode_payload(&encode_catalog(&ddl).into()).unwrap(), LogRecord::Catalog(ddl));
        let trace = TraceRecord { invocations: vec![InvocationRecord { function: "g".into(), error: Some("no".into()), read_only: true, ..Default::default() }], runs: Vec::new() };
        assert_eq!(decode_payload(&encode_trace(&trace).into()).unwrap(), LogRecord::Trace(trace));
        assert!(matches!(decode_payload(&Bytes::from_static(&[9, 1])), Err(Error::Corrupt { .. })));
        assert!(matches!(decode_payload(&Bytes::new()), Err(Error::Corrupt { .. })));
        assert_eq!((partition_tag(0), partition_tag(0xFFFE)), (1, 0xFFFF));
    }
}
