//! Test helpers (feature `test-util`): a loglet wrapper that holds or fails writes on
//! command, and the self-checking records of the crash test.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::loglet::{Loglet, LogletState};
use crate::book::LogBook;
use crate::record::{ANY_TAG, Entry, Lsn, Record, Tag};

/// Every record of the log, from the trim point to the tail, read in chunks.
pub async fn read_all(log: &LogBook) -> Result<Vec<Record>> {
    let mut out: Vec<Record> = Vec::new();
    let mut from = log.trim_point();
    loop {
        let batch = log.read_range(ANY_TAG, from, usize::MAX).await?;
        let Some(last) = batch.last() else { return Ok(out) };
        from = last.lsn + 1;
        out.extend(batch);
    }
}

/// Wraps a loglet so that a test can hold appends inside the writer (to fill the queue
/// deterministically) or make the next append fail (a storage fault).
#[derive(Debug)]
pub struct ControlledLoglet<L: ?Sized = dyn Loglet> {
    gate: Mutex<Gate>,
    changed: Condvar,
    fail_next: AtomicBool,
    inner: Arc<L>,
}

#[derive(Debug, Default)]
struct Gate {
    holding: bool,
    /// Appends currently held inside `append`.
    held: usize,
}

impl ControlledLoglet {
    /// Wraps `inner`; appends pass through until told otherwise.
    pub fn new(inner: Arc<dyn Loglet>) -> Self {
        ControlledLoglet { gate: Mutex::new(Gate::default()), changed: Condvar::new(), fail_next: AtomicBool::new(false), inner }
    }

    /// From now on, appends wait inside the loglet until [`release`](Self::release).
    pub fn hold(&self) {
        self.gate.lock().expect("gate lock").holding = true;
    }

    /// Lets held and later appends through.
    pub fn release(&self) {
        self.gate.lock().expect("gate lock").holding = false;
        self.changed.notify_all();
    }

    /// Blocks until `count` appends are held. Blocking: call it from a blocking thread.
    pub fn wait_until_held(&self, count: usize) {
        let mut gate = self.gate.lock().expect("gate lock");
        while gate.held < count {
            gate = self.changed.wait(gate).expect("gate lock");
        }
    }

    /// Makes the next append fail with a storage error, writing nothing.
    pub fn fail_next_append(&self) {
        self.fail_next.store(true, Ordering::SeqCst);
    }
}

impl Loglet for ControlledLoglet {
    fn state(&self) -> LogletState {
        self.inner.state()
    }

    fn append(&self, entries: &[Entry]) -> Result<Lsn> {
        {
            let mut gate = self.gate.lock().expect("gate lock");
            gate.held += 1;
            self.changed.notify_all();
            while gate.holding {
                gate = self.changed.wait(gate).expect("gate lock");
            }
            gate.held -= 1;
        }
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(Error::Storage { operation: "append", message: "injected failure".to_owned() });
        }
        self.inner.append(entries)
    }

    fn scan(&self, tag: Tag, from: Lsn, to: Lsn, limit: usize) -> Result<Vec<Record>> {
        self.inner.scan(tag, from, to, limit)
    }

    fn read_prev(&self, tag: Tag, max: Lsn) -> Result<Option<Record>> {
        self.inner.read_prev(tag, max)
    }

    fn trim(&self, upto: Lsn) -> Result<()> {
        self.inner.trim(upto)
    }

    fn seal(&self) -> Result<Lsn> {
        self.inner.seal()
    }

    fn close(&self) -> Result<()> {
        self.inner.close()
    }
}

/// The identity of one write of the crash test: which child run, which appender, which of
/// its appends. Every record of the test is derived from it, so that any record read back can
/// be checked for being whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CrashWrite {
    pub round: u32,
    pub appender: u32,
    pub seq: u64,
}

const CRASH_HEADER_BYTES: usize = 16;

impl CrashWrite {
    /// The entry this write appends: a header naming it, a body derived from it, and tags
    /// derived from it. Sizes vary from 16 to 16 + 255 bytes.
    pub fn entry(&self) -> Entry {
        let body = (self.seq % 256) as usize;
        let mut payload = BytesMut::with_capacity(CRASH_HEADER_BYTES + body);
        payload.put_u32(self.round);
        payload.put_u32(self.appender);
        payload.put_u64(self.seq);
        payload.extend((0..body).map(|i| self.body_byte(i)));
        Entry::new(self.tags(), payload.freeze())
    }

    fn tags(&self) -> Vec<Tag> {
        let mut tags = vec![u64::from(self.appender) + 1, 1_000 + self.seq % 4];
        tags.sort_unstable();
        tags
    }

    fn body_byte(&self, i: usize) -> u8 {
        (self.seq.wrapping_mul(31).wrapping_add(i as u64 * 7).wrapping_add(u64::from(self.round) * 13 + u64::from(self.appender))) as u8
    }

    /// Reads the write a record claims to be and checks the record is exactly its entry.
    pub fn parse(record: &Record) -> Result<CrashWrite, String> {
        let payload: &Bytes = &record.payload;
        if payload.len() < CRASH_HEADER_BYTES {
            return Err(format!("record {}: payload of {} bytes is shorter than the header", record.lsn, payload.len()));
        }
        let word = |at: usize, n: usize| payload[at..at + n].iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b));
        let write = CrashWrite { round: word(0, 4) as u32, appender: word(4, 4) as u32, seq: word(8, 8) };
        let expected = write.entry();
        if expected.payload != record.payload {
            return Err(format!("record {}: payload is not the whole payload of {write:?}", record.lsn));
        }
        if expected.tags != record.tags {
            return Err(format!("record {}: tags {:?} are not those of {write:?} ({:?})", record.lsn, record.tags, expected.tags));
        }
        Ok(write)
    }
}
