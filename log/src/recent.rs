//! The recent records: a bounded ring of the last durable records, filled by the writer, so
//! that readers near the tail (subscribers such as the tracing feed) are answered from
//! memory instead of reading back what was just written.
//!
//! The ring is dense: it holds every record from its first LSN to the durable tail. The
//! writer adds a group's records after they are durable and before it publishes the new
//! tail, so a reader clamped to the published tail finds every record it may read in the
//! ring, or reads the loglet. Payloads are shared with the appenders' buffers, not copied.
//!
//! The log's publishing thread (its syncer, or its writer) never waits for a reader: readers
//! run at any priority (the tracing feed runs at a lower one), and a reader preempted while
//! it copies records out would otherwise stall every append behind it. When the ring is busy
//! the group waits in the ring's backlog and goes in with the next group; meanwhile reads of
//! those records go to the loglet.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError, TryLockError};

use crate::record::{Entry, Lsn, Record, Tag};

/// Most records one read examines in the ring. A read by a rare tag that would scan more
/// goes to the loglet's tag index instead, so that no reader holds the ring long.
pub(crate) const RECENT_SCAN_MAX: usize = 4_096;

/// Bytes a record is counted for beside its payload and tags (the record itself).
const RECORD_OVERHEAD_BYTES: usize = std::mem::size_of::<Record>();

/// The ring, shared by the writer (which adds) and the readers (which copy out).
#[derive(Debug)]
pub(crate) struct Recent {
    ring: Mutex<Ring>,
    /// Durable records the writer could not add while a reader held the ring, oldest first.
    /// Only the writer locks it (never contended); bounded by `bytes_max` like the ring.
    backlog: Mutex<Ring>,
    bytes_max: usize,
}

#[derive(Debug, Default)]
struct Ring {
    records: VecDeque<Record>,
    bytes: usize,
}

/// What a read of the ring found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// The records asked for: every one the ring holds up to `to`, or `limit` of them.
    Records(Vec<Record>),
    /// The ring cannot answer (it no longer holds `from`, or the read would scan too far):
    /// read the loglet.
    Elsewhere,
}

impl Recent {
    /// A ring of at most `bytes_max` bytes of records (0: no ring, every read goes to the
    /// loglet).
    pub(crate) fn new(bytes_max: usize) -> Self {
        Recent { ring: Mutex::new(Ring::default()), backlog: Mutex::new(Ring::default()), bytes_max }
    }

    /// Adds the records of a group commit that just became durable, the first at LSN
    /// `first`, and lets the oldest go beyond the bound. Never waits: if a reader holds the
    /// ring, the records wait in the backlog for the next push. Called by the thread that
    /// publishes the log's tail (the syncer, or the writer), one at a time.
    pub(crate) fn push(&self, first: Lsn, entries: Vec<Entry>) {
        if self.bytes_max == 0 {
            return;
        }
        let mut backlog = self.backlog.lock().unwrap_or_else(PoisonError::into_inner);
        for (lsn, entry) in (first..).zip(entries) {
            backlog.push(Record { lsn, tags: entry.tags, payload: entry.payload });
        }
        // Beyond the bound the oldest would only leave the ring at once: drop them now (the
        // ring then starts afresh after the gap).
        backlog.trim(self.bytes_max);
        let mut ring = match self.ring.try_lock() {
            Ok(ring) => ring,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        let Some(oldest) = backlog.records.front().map(|r| r.lsn) else { return };
        if ring.records.back().is_some_and(|last| last.lsn + 1 != oldest) {
            // Not contiguous (the backlog overflowed): start afresh rather than ever answer a
            // read with a gap.
            *ring = Ring::default();
        }
        for record in backlog.records.drain(..) {
            ring.push(record);
        }
        backlog.bytes = 0;
        ring.trim(self.bytes_max);
    }

    /// The records carrying `tag` (`ANY_TAG`: all) in `from..=to`, in order, at most `limit`
    /// of them, if the ring can answer.
    pub(crate) fn read(&self, tag: Tag, from: Lsn, to: Lsn, limit: usize) -> Found {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(first) = ring.records.front().map(|r| r.lsn) else { return Found::Elsewhere };
        if from < first || from > to || limit == 0 {
            return Found::Elsewhere;
        }
        let Ok(start) = usize::try_from(from - first) else { return Found::Elsewhere };
        let mut found = Vec::new();
        for record in ring.records.range(start.min(ring.records.len())..).take(RECENT_SCAN_MAX) {
            if record.lsn > to {
                return Found::Records(found);
            }
            if record.has_tag(tag) {
                found.push(record.clone());
                if found.len() == limit {
                    return Found::Records(found);
                }
            }
            if record.lsn == to {
                return Found::Records(found);
            }
        }
        // The scan stopped before `to`: too far for the ring, or past its end.
        Found::Elsewhere
    }
}

impl Ring {
    fn push(&mut self, record: Record) {
        self.bytes += footprint(&record);
        self.records.push_back(record);
    }

    /// Lets the oldest records go until the ring holds at most `bytes_max` bytes.
    fn trim(&mut self, bytes_max: usize) {
        while self.bytes > bytes_max {
            let Some(oldest) = self.records.pop_front() else { break };
            self.bytes -= footprint(&oldest);
        }
    }
}

fn footprint(record: &Record) -> usize {
    RECORD_OVERHEAD_BYTES + record.payload.len() + record.tags.len() * std::mem::size_of::<Tag>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ANY_TAG;

    fn entry(tag: Tag, payload: &str) -> Entry {
        Entry::new(vec![tag], payload.to_owned())
    }

    fn lsns(found: Found) -> Vec<Lsn> {
        match found {
            Found::Records(records) => records.iter().map(|r| r.lsn).collect(),
            Found::Elsewhere => panic!("the ring should have answered"),
        }
    }

    #[test]
    fn reads_within_the_ring_are_exact_and_clamped_to_the_tail() {
        let recent = Recent::new(1 << 20);
        recent.push(1, vec![entry(1, "a"), entry(2, "b")]);
        recent.push(3, vec![entry(1, "c")]);
        assert_eq!(lsns(recent.read(ANY_TAG, 1, 3, 10)), vec![1, 2, 3]);
        assert_eq!(lsns(recent.read(ANY_TAG, 2, 2, 10)), vec![2], "never past `to`, the published tail");
        assert_eq!(lsns(recent.read(1, 1, 3, 10)), vec![1, 3]);
        assert_eq!(lsns(recent.read(1, 1, 3, 1)), vec![1], "at most `limit`");
        assert_eq!(lsns(recent.read(9, 1, 3, 10)), Vec::<Lsn>::new(), "no record carries tag 9 up to the tail");
        match recent.read(ANY_TAG, 2, 3, 10) {
            Found::Records(records) => {
                assert_eq!(records[0].payload, "b");
                assert_eq!(records[0].tags, vec![2]);
            }
            Found::Elsewhere => panic!("the ring holds LSN 2"),
        }
        assert_eq!(recent.read(ANY_TAG, 4, 3, 10), Found::Elsewhere, "nothing beyond the tail");
        assert_eq!(recent.read(ANY_TAG, 0, 3, 10), Found::Elsewhere, "LSN 0 was never in the ring");
    }

    #[test]
    fn the_oldest_records_leave_beyond_the_bound_and_their_reads_go_elsewhere() {
        let one = RECORD_OVERHEAD_BYTES + 8 + 1;
        let recent = Recent::new(3 * one);
        for lsn in 1..=5 {
            recent.push(lsn, vec![entry(1, "x")]);
        }
        assert_eq!(recent.read(ANY_TAG, 2, 5, 10), Found::Elsewhere, "LSN 2 has left the ring");
        assert_eq!(lsns(recent.read(ANY_TAG, 3, 5, 10)), vec![3, 4, 5]);
        let ring = recent.ring.lock().unwrap();
        assert_eq!((ring.records.len(), ring.bytes), (3, 3 * one));
    }

    #[test]
    fn a_read_that_would_scan_too_far_goes_elsewhere() {
        let recent = Recent::new(usize::MAX);
        let entries = (0..RECENT_SCAN_MAX + 10).map(|_| entry(1, "x")).collect();
        recent.push(1, entries);
        let tail = (RECENT_SCAN_MAX + 10) as Lsn;
        recent.push(tail + 1, vec![entry(2, "y")]);
        assert_eq!(recent.read(2, 1, tail + 1, 10), Found::Elsewhere, "tag 2 lies beyond the longest scan");
        assert_eq!(lsns(recent.read(2, 20, tail + 1, 10)), vec![tail + 1]);
        assert_eq!(lsns(recent.read(ANY_TAG, 1, tail + 1, 3)), vec![1, 2, 3]);
    }

    #[test]
    fn the_writer_never_waits_for_a_reader_and_adds_its_backlog_next_time() {
        let recent = Recent::new(1 << 20);
        recent.push(1, vec![entry(1, "a")]);
        let reading = recent.ring.lock().unwrap();
        recent.push(2, vec![entry(1, "b"), entry(2, "c")]);
        drop(reading);
        assert_eq!(recent.read(ANY_TAG, 1, 3, 10), Found::Elsewhere, "LSNs 2 and 3 wait in the backlog; the loglet answers");
        assert_eq!(lsns(recent.read(ANY_TAG, 1, 1, 10)), vec![1]);
        recent.push(4, vec![entry(1, "d")]);
        assert_eq!(lsns(recent.read(ANY_TAG, 1, 4, 10)), vec![1, 2, 3, 4], "the backlog came in, in order, with the next group");
        assert_eq!(recent.backlog.lock().unwrap().bytes, 0);
    }

    #[test]
    fn a_backlog_beyond_the_bound_loses_its_oldest_and_the_ring_starts_after_the_gap() {
        let one = RECORD_OVERHEAD_BYTES + 8 + 1;
        let recent = Recent::new(2 * one);
        recent.push(1, vec![entry(1, "a")]);
        let reading = recent.ring.lock().unwrap();
        for lsn in 2..=4 {
            recent.push(lsn, vec![entry(1, "x")]);
        }
        drop(reading);
        recent.push(5, vec![entry(1, "e")]);
        assert_eq!(recent.read(ANY_TAG, 1, 5, 10), Found::Elsewhere, "never an answer across the dropped records");
        assert_eq!(lsns(recent.read(ANY_TAG, 4, 5, 10)), vec![4, 5]);
        let ring = recent.ring.lock().unwrap();
        assert_eq!((ring.records.len(), ring.bytes), (2, 2 * one));
    }

    #[test]
    fn a_ring_of_zero_bytes_keeps_nothing_and_a_gap_starts_afresh() {
        let off = Recent::new(0);
        off.push(1, vec![entry(1, "a")]);
        assert_eq!(off.read(ANY_TAG, 1, 1, 10), Found::Elsewhere);

        let recent = Recent::new(1 << 20);
        recent.push(1, vec![entry(1, "a")]);
        recent.push(5, vec![entry(1, "e")]);
        assert_eq!(recent.read(ANY_TAG, 1, 5, 10), Found::Elsewhere, "the ring never answers across a gap");
        assert_eq!(lsns(recent.read(ANY_TAG, 5, 5, 10)), vec![5]);
    }
}
