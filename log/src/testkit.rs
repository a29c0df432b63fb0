//! Test helpers (feature `test-util`): a loglet wrapper that holds or fails writes on
//! command, and the self-checking records of the crash test.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

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

/// Wraps a loglet so that a test can hold writes or syncs inside the log's threads (to fill
/// the queue, or to look at the log between a write and its sync, deterministically) or make
/// the next write or sync fail (a storage fault). "Writes" are both `append` and `write`.
#[derive(Debug)]
pub struct ControlledLoglet<L: ?Sized = dyn Loglet> {
    writes: Gate,
    syncs: Gate,
    fail_next_write: AtomicBool,
    fail_next_sync: AtomicBool,
    inner: Arc<L>,
}

/// How long a test waits for calls to be held before it fails.
const HELD_WAIT_MAX: Duration = Duration::from_secs(20);

/// Holds the calls passing through it while told to.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    holding: bool,
    /// Calls currently held.
    held: usize,
    /// Held calls to let through while still holding the later ones.
    let_through: usize,
}

impl Gate {
    fn set_holding(&self, holding: bool) {
        let mut state = self.state.lock().expect("gate lock");
        state.holding = holding;
        state.let_through = 0; // an unused let-through never carries over to a later hold
        drop(state);
        self.changed.notify_all();
    }

    fn pass(&self) {
        let mut state = self.state.lock().expect("gate lock");
        state.held += 1;
        self.changed.notify_all();
        while state.holding {
            if state.let_through > 0 {
                state.let_through -= 1;
                break;
            }
            state = self.changed.wait(state).expect("gate lock");
        }
        state.held -= 1;
    }

    fn let_one_through(&self) {
        self.state.lock().expect("gate lock").let_through += 1;
        self.changed.notify_all();
    }

    /// Blocks until `count` calls are held; panics after `HELD_WAIT_MAX`, so that a test
    /// whose calls never come fails rather than hangs.
    fn wait_until_held(&self, count: usize) {
        let state = self.state.lock().expect("gate lock");
        let (state, waited) = self.changed.wait_timeout_while(state, HELD_WAIT_MAX, |s| s.held < count).expect("gate lock");
        let held = state.held;
        drop(state); // not poisoned by the panic below: the calls held must still pass
        assert!(!waited.timed_out(), "{held} of {count} calls held after {HELD_WAIT_MAX:?}");
    }
}

impl ControlledLoglet {
    /// Wraps `inner`; writes and syncs pass through until told otherwise.
    pub fn new(inner: Arc<dyn Loglet>) -> Self {
        ControlledLoglet {
            writes: Gate::default(),
            syncs: Gate::default(),
            fail_next_write: AtomicBool::new(false),
            fail_next_sync: AtomicBool::new(false),
            inner,
        }
    }

    /// From now on, writes wait inside the loglet until [`release`](Self::release).
    pub fn hold(&self) {
        self.writes.set_holding(true);
    }

    /// Lets held and later writes through.
    pub fn release(&self) {
        self.writes.set_holding(false);
    }

    /// Lets one held write through (or the next one, if none is held) and holds the later ones.
    pub fn let_one_write_through(&self) {
        self.writes.let_one_through();
    }

    /// Blocks until `count` writes are held (panics if they are not within 20 s). Blocking:
    /// call it from a blocking thread.
    pub fn wait_until_held(&self, count: usize) {
        self.writes.wait_until_held(count);
    }

    /// From now on, syncs wait inside the loglet until [`release_syncs`](Self::release_syncs).
    pub fn hold_syncs(&self) {
        self.syncs.set_holding(true);
    }

    /// Lets held and later syncs through.
    pub fn release_syncs(&self) {
        self.syncs.set_holding(false);
    }

    /// Blocks until `count` syncs are held (panics if they are not within 20 s). Blocking:
    /// call it from a blocking thread.
    pub fn wait_until_syncs_held(&self, count: usize) {
        self.syncs.wait_until_held(count);
    }

    /// Makes the next write (`append` or `write`) fail with a storage error, writing nothing.
    pub fn fail_next_append(&self) {
        self.fail_next_write.store(true, Ordering::SeqCst);
    }

    /// Makes the next `sync` fail with a storage error (what it leaves durable is unknown,
    /// as after a real failed fsync).
    pub fn fail_next_sync(&self) {
        self.fail_next_sync.store(true, Ordering::SeqCst);
    }

    fn before_write(&self, operation: &'static str) -> Result<()> {
        self.writes.pass();
        if self.fail_next_write.swap(false, Ordering::SeqCst) {
            return Err(Error::Storage { operation, message: "injected failure".to_owned() });
        }
        Ok(())
    }
}

impl Loglet for ControlledLoglet {
    fn state(&self) -> LogletState {
        self.inner.state()
    }

    fn append(&self, entries: &[Entry]) -> Result<Lsn> {
        self.before_write("append")?;
        self.inner.append(entries)
    }

    fn write(&self, entries: &[Entry]) -> Result<Lsn> {
        self.before_write("write")?;
        self.inner.write(entries)
    }

    fn sync(&self) -> Result<()> {
        self.syncs.pass();
        if self.fail_next_sync.swap(false, Ordering::SeqCst) {
            return Err(Error::Storage { operation: "sync", message: "injected failure".to_owned() });
        }
        self.inner.sync()
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
