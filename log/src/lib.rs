//! The shared log of Comb: a durable, totally ordered log of tagged records.
//!
//! Every commit of every partition is one record here; recovery replays it and the tracing
//! layer reads it as change-data-capture. The API follows Boki's LogBook.
//!
//! ```text
//!  append(tags, payload) ─┐                       ┌─> read_next / read_prev / read_range
//!  append_batch(entries) ─┤ bounded   ┌────────┐  │   (blocking pool)
//!  trim / seal / close ───┴─ queue ──>│ writer │──┤
//!                                     │ thread │  └─> subscribe(from, tag): a stream that
//!         group commit: every waiting └───┬────┘      wakes when the durable tail moves
//!         append in one synced write      │
//!                                     Loglet (RocksDB or memory)
//! ```
//!
//! Guarantees:
//! - **Order and density.** LSNs are dense `u64`s from 1 in append order. The records present
//!   are exactly `trim_point() ..= tail()`.
//! - **Durability.** `append` resolves only once its record is durable (fsync'd for the
//!   RocksDB loglet); a crash at any instant keeps every acknowledged record with its exact
//!   payload and tags, and no record is ever half-present. A batch is atomic.
//! - **Visibility.** Reads and subscriptions see only durable records.
//! - **Bounds.** Payload size, tags per record, records and bytes per batch and the number of
//!   appends waiting are bounded by [`LogOptions`]; exceeding one is an error (`QueueFull`
//!   for the queue: backpressure, retryable), never an unbounded buffer or a hang.
//! - **Trim and seal.** After `trim(upto)` reads below `upto` fail with `Trimmed`; after
//!   `seal()` appends fail with `Sealed`, which carries the tail. Both are durable.
//! - **Fail-stop.** If a write or a sync fails, the log acknowledges nothing more until reopened.
//! - Tag 0 ([`ANY_TAG`]) on a read means any tag; it cannot be attached to a record.
//!
//! No storage call runs on an async runtime's worker: appends go to the writer thread (and
//! its syncer), reads to tokio's blocking pool. Reads near the tail are answered from a
//! bounded ring of the recent durable records, without touching storage.

mod book;
mod error;
mod loglet;
mod memory;
mod options;
mod recent;
mod record;
mod rocks;
mod segments;
mod timing;
mod writer;

#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
#[cfg(any(test, feature = "test-util"))]
pub mod testkit;

pub use book::{LogBook, LogStats, RecordStream};
pub use error::{Error, Result};
pub use loglet::{Loglet, LogletState};
pub use memory::MemoryLoglet;
pub use options::{FRAME_BODY_BYTES_MAX, LogOptions, RECENT_BYTES_MAX, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, WRITER_SLICE_US_MAX, WRITER_SLICE_US_MIN, WRITER_SPIN_US_MAX};
pub use record::{ANY_TAG, Entry, Lsn, Record, Tag};
pub use rocks::RocksLoglet;
pub use timing::SlowCalls;
