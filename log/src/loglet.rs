//! The storage contract under a [`LogBook`](crate::LogBook): one segment of the log on one
//! medium, after Delos' loglets. A replicated loglet can later replace the local ones without
//! the layers above noticing.

use crate::error::{Error, Result};
use crate::record::{Entry, Lsn, Record, Tag};

/// What a loglet knows about itself when it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogletState {
    /// The last durable record (0: none was ever appended).
    pub tail: Lsn,
    /// The first record still readable; every record below it has been trimmed.
    pub trim_point: Lsn,
    /// Whether the loglet refuses appends.
    pub sealed: bool,
}

/// One segment of the log on one storage medium.
///
/// Contract, checked for every implementation by the conformance suite:
/// - `append` gives the entries the LSNs `tail + 1 ..`, in order, and returns only once they
///   are durable; it is atomic: after a crash either all of them are present or none is.
/// - LSNs are dense: the records present are exactly `trim_point ..= tail`.
/// - Tags are stored sorted and deduplicated; reads by tag return exactly the records that
///   carry the tag.
/// - `write` is `append` split in two: the entries get their LSNs at once and become durable
///   with the next `sync`. After a crash the records present are still a dense prefix: of the
///   writes not yet synced, any prefix may be present, each write whole or not at all.
/// - `append`, `write`, `trim`, `seal` and `close` are called by one thread at a time (the
///   log's writer); `sync` by one thread at a time (the log's syncer, concurrently with
///   `write`; or the writer itself without `overlap-syncs`); reads by any thread
///   concurrently with all of them. Every method may block on I/O: none is ever called on
///   an async runtime's worker thread.
/// - After a failed `append`, `write` or `sync`, what was written since the last successful
///   sync is in an unknown state (a write may be partly on disk, a failed fsync may have
///   dropped dirty pages). The log stops (fail-stop): it acknowledges nothing more and soon
///   stops calling, until it is reopened and recovery settles what is present. Calls already
///   in flight, or racing with the failure, may still arrive (the syncer may sync earlier
///   writes after a failed `write`); a loglet that must refuse them does so itself, as the
///   RocksDB loglet does.
pub trait Loglet: Send + Sync + 'static {
    /// The loglet's state; after `open`, what it recovered from storage.
    fn state(&self) -> LogletState;

    /// Durably appends `entries` (already validated, tags normalized) and returns the LSN
    /// of the first. Fails with `Sealed` on a sealed loglet.
    fn append(&self, entries: &[Entry]) -> Result<Lsn>;

    /// Appends like `append` but returns before the entries are durable; they are durable
    /// once a later `sync` returns. Reads may see them at once: the log clamps every read to
    /// the durable tail it publishes.
    fn write(&self, entries: &[Entry]) -> Result<Lsn>;

    /// Makes every record written so far durable.
    fn sync(&self) -> Result<()>;

    /// The records carrying `tag` (`ANY_TAG`: all) with LSNs in `from ..= to`, in order, at
    /// most `limit` of them. A trimmed log refuses a `from` below its trim point
    /// (`Trimmed`): the log checks that before it reads, so the loglet's check answers a read
    /// that raced a trim, which would otherwise skip the records trimmed meanwhile. A read
    /// sees a trim wholly or not at all.
    fn scan(&self, tag: Tag, from: Lsn, to: Lsn, limit: usize) -> Result<Vec<Record>>;

    /// The last record carrying `tag` with an LSN at most `max`, if any at or above the trim
    /// point (the log clamps `max` to its tail first, so one below the trim point is `None`).
    fn read_prev(&self, tag: Tag, max: Lsn) -> Result<Option<Record>>;

    /// Durably discards every record below `upto` (`trim_point < upto <= tail + 1`).
    fn trim(&self, upto: Lsn) -> Result<()>;

    /// Durably refuses further appends and returns the tail. Idempotent.
    fn seal(&self) -> Result<Lsn>;

    /// Releases the storage (files, locks). Every later call fails with `Closed`.
    fn close(&self) -> Result<()>;
}

/// Reads at `lsn` fail once records below the trim point are gone (never on an untrimmed
/// log, whose trim point is 1).
pub(crate) fn check_not_trimmed(lsn: Lsn, trim_point: Lsn) -> Result<()> {
    if lsn < trim_point && trim_point > 1 { Err(Error::Trimmed { lsn, trim_point }) } else { Ok(()) }
}
