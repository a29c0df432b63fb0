//! A partition's cache of rows, so that hot rows are read without a lookup in the partition's
//! map of writes waiting for the store or in RocksDB (which walks the memtable's skip list and
//! was about a tenth of the CPU of a point-update workload).
//!
//! The cache is exact, not a hint: it is owned by the partition's state, whose executor is
//! the only writer of the partition's keys, and every durable write goes through
//! [`RowCache::put`] as it is applied, so a cached row is the newest durable value of its key.
//! Reads that miss fill it from the store; scans do not use it. It holds present rows and
//! known-absent keys alike (an insert looks its key up first).
//!
//! It is bounded by bytes; past the bound it drops an arbitrary eighth of its entries
//! (random eviction: no bookkeeping on a hit).

use std::cell::RefCell;
use foldhash::HashMap;

/// Bytes counted for an entry beside its key and value.
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// The most `row-cache-bytes` may be, per partition.
pub const ROW_CACHE_BYTES_MAX: usize = 1 << 40;

#[derive(Debug, Default)]
struct Entries {
    rows: HashMap<Vec<u8>, Option<Vec<u8>>>,
    bytes: usize,
}

/// The cache. Reads take `&self` (a miss fills it), so the map sits in a `RefCell`: the
/// cache belongs to one thread at a time, like the state that owns it.
#[derive(Debug)]
pub(crate) struct RowCache {
    entries: RefCell<Entries>,
    bytes_max: usize,
}

/// Bytes counted for an entry of `key` and `value`.
pub(crate) fn footprint(key: &[u8], value: &Option<Vec<u8>>) -> usize {
    ENTRY_OVERHEAD_BYTES + key.len() + value.as_ref().map_or(0, Vec::len)
}

impl RowCache {
    /// A cache of at most `bytes_max` bytes (0: caches nothing).
    pub(crate) fn new(bytes_max: usize) -> RowCache {
        RowCache { entries: RefCell::new(Entries::default()), bytes_max }
    }

    /// The row under `key` if cached: `Some(None)` when the key is known to hold no row.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.entries.borrow().rows.get(key).cloned()
    }

    /// Remembers the newest durable value under `key`: after a read that missed the cache,
    /// and for each durable write as it is applied.
    pub(crate) fn put(&self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let mut entries = self.entries.borrow_mut();
        if let Some(old) = entries.rows.remove(&key) {
            entries.bytes -= footprint(&key, &old);
        }
        let added = footprint(&key, &value);
        if added > self.bytes_max {
            // Too large to cache at all (its older value is gone above).
            return;
        }
        if entries.bytes + added > self.bytes_max {
            // Drop about an eighth of the entries, and at least enough for this one.
            let target = (self.bytes_max - self.bytes_max / 8).min(self.bytes_max - added);
            let mut bytes = entries.bytes;
            entries.rows.retain(|k, v| {
                if bytes <= target {
                    return true;
                }
                bytes -= footprint(k, v);
                false
            });
            entries.bytes = bytes;
        }
        entries.rows.insert(key, value);
        entries.bytes += added;
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.entries.borrow().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(bytes: &[u8]) -> Option<Vec<u8>> {
        Some(bytes.to_vec())
    }

    #[test]
    fn holds_rows_and_absences_and_the_last_write_wins() {
        let cache = RowCache::new(1 << 20);
        assert_eq!(cache.get(b"k"), None, "nothing cached yet");
        cache.put(b"k".to_vec(), None);
        assert_eq!(cache.get(b"k"), Some(None), "known absent");
        cache.put(b"k".to_vec(), row(b"v1"));
        cache.put(b"k".to_vec(), row(b"v22"));
        assert_eq!(cache.get(b"k"), Some(row(b"v22")));
        assert_eq!(cache.bytes(), footprint(b"k", &row(b"v22")), "a replaced value is no longer counted");
        cache.put(b"k".to_vec(), None);
        assert_eq!(cache.get(b"k"), Some(None), "a delete is cached as an absence");
    }

    #[test]
    fn stays_within_its_bound() {
        let one = footprint(b"key-0000", &row(&[0; 100]));
        let cache = RowCache::new(10 * one);
        for i in 0..1_000 {
            cache.put(format!("key-{i:04}").into_bytes(), row(&[1; 100]));
            assert!(cache.bytes() <= 10 * one, "{} bytes after {i} inserts", cache.bytes());
        }
        assert_eq!(cache.get(b"key-0999"), Some(row(&[1; 100])), "the newest entry is kept");
        let counted: usize = cache.entries.borrow().rows.iter().map(|(k, v)| footprint(k, v)).sum();
        assert_eq!(counted, cache.bytes(), "the byte count matches the entries");
    }

    #[test]
    fn an_entry_larger_than_the_bound_is_not_kept_nor_its_old_value() {
        let cache = RowCache::new(200);
        cache.put(b"k".to_vec(), row(b"small"));
        cache.put(b"k".to_vec(), row(&[7; 500]));
        assert_eq!(cache.get(b"k"), None, "the old value must not answer for the new one");
        assert_eq!(cache.bytes(), 0);
        let off = RowCache::new(0);
        off.put(b"k".to_vec(), row(b"v"));
        assert_eq!(off.get(b"k"), None, "a cache of 0 bytes keeps nothing");
    }
}
