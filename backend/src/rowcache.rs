//! A partition's cache of rows, so that hot rows are read without a lookup in the partition's
//! map of writes waiting for the store or in RocksDB (which walks the memtable's skip list and
//! was about a tenth of the CPU of a point-update workload).
//!
//! The cache is exact, not a hint: it is owned by the partition's state, whose executor is
//! the only writer of the partition's keys, and every durable write goes through
//! [`RowCache::update`] as it is applied, so a cached row is the newest durable value of its
//! key. Point reads that miss fill it from the store ([`RowCache::fill`]); scans do not use
//! it. It holds rows only: a read that finds no row leaves it alone. A write to a key it
//! does not hold adds its row only while the cache is less than half full, so written rows
//! never crowd out the rows read; only reads (and a write that grows a cached row) evict.
//! Filling it on every write (evicting for
//! it), and with every absence an insert's key check finds, made it a churning copy of the
//! rows most recently inserted (retwis's timelines, read only by scans): a third of the
//! executors' CPU went to keeping such a cache.
//!
//! It is bounded by bytes; past the bound it drops a random eighth of its entries (random
//! eviction: no bookkeeping on a hit).

use std::cell::RefCell;

use foldhash::HashMap;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Bytes counted for an entry beside its key and value.
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// An eviction aims 1/`EVICTION_MARGIN_DIVISOR` of the cache's bytes below its target, so
/// that one pass of random draws almost always frees enough (for a cache of thousands of
/// entries: the margin is then several standard deviations of the bytes a pass frees).
const EVICTION_MARGIN_DIVISOR: usize = 64;

/// The most `row-cache-bytes` may be, per partition.
pub const ROW_CACHE_BYTES_MAX: usize = 1 << 40;

#[derive(Debug, Default)]
struct Entries {
    rows: HashMap<Vec<u8>, Vec<u8>>,
    bytes: usize,
}

/// The cache. Reads take `&self` (a miss fills it), so the map sits in a `RefCell`: the
/// cache belongs to one thread at a time, like the state that owns it.
#[derive(Debug)]
pub(crate) struct RowCache {
    entries: RefCell<Entries>,
    bytes_max: usize,
}

/// Bytes counted for an entry of `key` and `value` (none for a deleted row).
pub(crate) fn footprint(key: &[u8], value: &Option<Vec<u8>>) -> usize {
    ENTRY_OVERHEAD_BYTES + key.len() + value.as_ref().map_or(0, Vec::len)
}

fn row_footprint(key: &[u8], row: &[u8]) -> usize {
    ENTRY_OVERHEAD_BYTES + key.len() + row.len()
}

impl RowCache {
    /// A cache of at most `bytes_max` bytes (0: caches nothing).
    pub(crate) fn new(bytes_max: usize) -> RowCache {
        RowCache { entries: RefCell::new(Entries::default()), bytes_max }
    }

    /// The row under `key`, if cached. `None` tells nothing about the key.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.entries.borrow().rows.get(key).cloned()
    }

    /// Remembers `row`, just read from the store under `key` (the newest durable value of a
    /// key the cache did not hold).
    pub(crate) fn fill(&self, key: &[u8], row: &[u8]) {
        self.insert(&mut self.entries.borrow_mut(), key.to_vec(), row.to_vec());
    }

    /// Applies a durable write of `value` (`None`: deleted) under `key`: the cached row, if
    /// there is one, is replaced, or dropped when deleted or too large to keep. A row not
    /// cached is added only while the cache stays under half its bound.
    pub(crate) fn update(&self, key: &[u8], value: &Option<Vec<u8>>) {
        let mut guard = self.entries.borrow_mut();
        let entries = &mut *guard;
        let Some(row) = entries.rows.get_mut(key) else {
            if let Some(new) = value {
                let added = row_footprint(key, new);
                if entries.bytes + added <= self.bytes_max / 2 {
                    entries.rows.insert(key.to_vec(), new.clone());
                    entries.bytes += added;
                }
            }
            return;
        };
        let old = row_footprint(key, row);
        match value {
            // In place, when the new row fits beside the others.
            Some(new) if entries.bytes - old + row_footprint(key, new) <= self.bytes_max => {
                row.clone_from(new);
                entries.bytes = entries.bytes - old + row_footprint(key, new);
            }
            _ => {
                entries.rows.remove(key);
                entries.bytes -= old;
                // A grown row makes room for itself: it is the likeliest to be read again.
                if let Some(new) = value {
                    self.insert(entries, key.to_vec(), new.clone());
                }
            }
        }
    }

    /// Inserts a row the cache does not hold, evicting if it must; a row larger than the
    /// whole bound is not kept.
    fn insert(&self, entries: &mut Entries, key: Vec<u8>, row: Vec<u8>) {
        let added = row_footprint(&key, &row);
        if added > self.bytes_max {
            return;
        }
        if entries.bytes + added > self.bytes_max {
            Self::evict(entries, self.bytes_max, added);
        }
        entries.rows.insert(key, row);
        entries.bytes += added;
    }

    /// Drops a random eighth or so of the entries, and at least enough for `added` more bytes
    /// (random eviction: no bookkeeping on a hit).
    ///
    /// Each entry is dropped on a draw of its own with the share of the bytes to free, and a
    /// margin, so that one pass almost always frees enough (another pass frees the rest).
    /// The draw reads nothing of the entry (hashing its key would load each key from memory:
    /// 30 ms a pass over half a million entries). Dropping the first entries in the map's
    /// order instead drops, from the second eviction on, mostly the rows added since into
    /// the slots the last one freed: the cache keeps its oldest rows for good and churns its
    /// newest, and the rows it keeps stay packed in the rest of the map (the slots freed in
    /// place, tombstones), through which every lookup of a key it does not hold (every
    /// insert's key check) probes. Moving the entries kept into a map under a new seed
    /// avoids both, but costs far more than the draws: a quarter of a long-lived server's
    /// CPU under retwis. The tombstones the draws leave are scattered, and the map clears
    /// them in a rehash when they have used up its room.
    fn evict(entries: &mut Entries, bytes_max: usize, added: usize) {
        let target = (bytes_max - bytes_max / 8).min(bytes_max - added);
        let Entries { rows, bytes } = entries;
        let mut draws = SmallRng::from_rng(&mut rand::rng());
        while *bytes > target {
            let to_free = *bytes - target + *bytes / EVICTION_MARGIN_DIVISOR;
            // Everything goes when the share is 1 or more.
            let share = to_free as f64 / *bytes as f64;
            rows.retain(|key, row| {
                let keep = draws.random::<f64>() >= share;
                if !keep {
                    *bytes -= row_footprint(key, row);
                }
                keep
            });
        }
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
    fn holds_the_rows_read_and_keeps_them_current() {
        let cache = RowCache::new(1 << 20);
        assert_eq!(cache.get(b"k"), None, "nothing cached yet");
        cache.update(b"k", &row(b"v0"));
        assert_eq!(cache.get(b"k"), Some(b"v0".to_vec()), "a write is cached while there is room");
        cache.update(b"k", &None);
        assert_eq!(cache.get(b"k"), None, "a delete drops the row");
        cache.fill(b"k", b"v1");
        assert_eq!(cache.get(b"k"), Some(b"v1".to_vec()));
        cache.update(b"k", &row(b"v22"));
        assert_eq!(cache.get(b"k"), Some(b"v22".to_vec()), "a write replaces the row held");
        assert_eq!(cache.bytes(), footprint(b"k", &row(b"v22")), "a replaced value is no longer counted");
        cache.update(b"k", &None);
        assert_eq!(cache.get(b"k"), None, "a delete drops the row");
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn stays_within_its_bound() {
        let one = footprint(b"key-0000", &row(&[0; 100]));
        let cache = RowCache::new(10 * one);
        for i in 0..1_000 {
            let key = format!("key-{i:04}").into_bytes();
            cache.fill(&key, &[1; 100]);
            assert!(cache.bytes() <= 10 * one, "{} bytes after {i} fills", cache.bytes());
            // A write that grows a row held makes room too.
            cache.update(&key, &row(&[2; 150]));
            assert!(cache.bytes() <= 10 * one, "{} bytes after {i} updates", cache.bytes());
        }
        assert_eq!(cache.get(b"key-0999"), Some(vec![2; 150]), "the newest entry is kept");
        let counted: usize = cache.entries.borrow().rows.iter().map(|(k, v)| row_footprint(k, v)).sum();
        assert_eq!(counted, cache.bytes(), "the byte count matches the entries");
    }

    #[test]
    fn only_reads_evict() {
        let one = footprint(b"key-0000", &row(&[0; 100]));
        let cache = RowCache::new(10 * one);
        for i in 0..10 {
            cache.fill(format!("key-{i:04}").as_bytes(), &[1; 100]);
        }
        cache.update(b"key-0010", &row(&[1; 100]));
        assert_eq!(cache.get(b"key-0010"), None, "a write to a cache half full or more is not added");
        assert!((0..10).all(|i| cache.get(format!("key-{i:04}").as_bytes()).is_some()), "and evicts nothing");
        cache.fill(b"key-0010", &[1; 100]);
        assert_eq!(cache.get(b"key-0010"), Some(vec![1; 100]), "a read makes room");
        assert!(cache.bytes() <= 10 * one);
    }

    #[test]
    fn an_entry_larger_than_the_bound_is_not_kept_nor_its_old_value() {
        let cache = RowCache::new(200);
        cache.fill(b"k", b"small");
        cache.update(b"k", &row(&[7; 500]));
        assert_eq!(cache.get(b"k"), None, "the old value must not answer for the new one");
        assert_eq!(cache.bytes(), 0);
        cache.fill(b"k", &[7; 500]);
        assert_eq!(cache.get(b"k"), None, "too large to keep");
        let off = RowCache::new(0);
        off.fill(b"k", b"v");
        assert_eq!(off.get(b"k"), None, "a cache of 0 bytes keeps nothing");
    }

    /// Eviction must not depend on a row's age: eviction by the map's order (see
    /// [`RowCache::evict`]) keeps the oldest rows for good, and a working set that moves, as
    /// new posts do, then barely hits.
    #[test]
    fn evictions_drop_old_and_new_rows_alike() {
        let key = |i: u64| format!("key-{i:08}").into_bytes();
        let one = footprint(&key(0), &row(&[0; 16]));
        let cache = RowCache::new(10_000 * one);
        for i in 0..10_000 {
            cache.fill(&key(i), &[1; 16]);
        }
        // 30 eighths of new rows; an eviction drops an eighth and a margin (9/64, about 1,400
        // rows), so they make about 27 evictions.
        let end = 10_000 + 30 * 1_250;
        for i in 10_000..end {
            cache.fill(&key(i), &[1; 16]);
        }
        // Random eviction keeps about 2% of the first rows ((55/64)^27), and about 55/64 of
        // the last thousand or more (none of them has met more than one eviction). Eviction
        // by the map's order keeps most of the first rows.
        let first_kept = (0..10_000).filter(|&i| cache.get(&key(i)).is_some()).count();
        assert!(first_kept < 1_000, "{first_kept} of the first 10,000 rows are still cached after 30 eighths of new rows");
        let last_kept = (end - 1_000..end).filter(|&i| cache.get(&key(i)).is_some()).count();
        assert!(last_kept > 800, "only {last_kept} of the last 1,000 rows filled are cached");
    }
}
