//! The state store on RocksDB: the only file of this crate that names `rocksdb::`.
//!
//! One RocksDB instance of its own (apart from the log's), one column family, RocksDB's
//! write-ahead log off: the shared log is the write-ahead log. Because there is one column
//! family, a memtable flush persists a prefix of the write batches, never a part of one. A
//! partition writes its rows back in chunks and its applied LSN with the last one, so on disk
//! its rows are at least as new as that LSN says (some may be newer): replay from the LSN
//! brings every row to its newest after-image.
//!
//! Keys (see `keys.rs`): rows `partition u16 | table u32 | key`, index entries `partition u16
//! | index u32 | index values | key`, metadata under the prefix `0xFFFF` (no partition has
//! that number).

use std::path::Path;
use std::time::Duration;

use rocksdb::{BlockBasedOptions, Cache, DB, DBCompressionType, Direction, FlushOptions, IteratorMode, Options, ReadOptions, WaitForCompactOptions, WriteBatch, WriteOptions};

use crate::error::{Error, Result};

/// Bytes of RocksDB's memtable before it is flushed.
const MEMTABLE_BYTES: usize = 64 << 20;

/// Bits per key of the bloom filters (about 1% false positives).
const BLOOM_BITS_PER_KEY: f64 = 10.0;

/// Share of the memtable given to its bloom filter.
const MEMTABLE_BLOOM_RATIO: f64 = 0.02;

/// Bytes of the block cache of the state store.
const BLOCK_CACHE_BYTES: usize = 128 << 20;

/// The state store.
pub(crate) struct Store {
    db: DB,
    no_wal: WriteOptions,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.db.path()).finish()
    }
}

/// Maps RocksDB's errors: a failed checksum or undecodable file is corruption (its message
/// names the file), never data.
fn storage(operation: &'static str) -> impl FnOnce(rocksdb::Error) -> Error {
    move |err| match err.kind() {
        rocksdb::ErrorKind::Corruption => Error::Corrupt { location: format!("a state store file (during {operation})"), detail: err.into_string() },
        _ => Error::Storage { operation, message: err.into_string() },
    }
}

/// Puts and deletes applied together, atomically.
#[derive(Default)]
pub(crate) struct Batch {
    inner: WriteBatch,
}

impl Batch {
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8]) {
        self.inner.put(key, value);
    }

    pub(crate) fn delete(&mut self, key: &[u8]) {
        self.inner.delete(key);
    }
}

impl Store {
    /// Opens (or creates) the store in `path`. Blocking.
    pub(crate) fn open(path: &Path) -> Result<Store> {
        std::fs::create_dir_all(path)
            .map_err(|err| Error::Storage { operation: "create the state directory", message: format!("{}: {err}", path.display()) })?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_write_buffer_size(MEMTABLE_BYTES);
        options.set_compression_type(DBCompressionType::Lz4);
        options.set_max_background_jobs(2);
        options.set_keep_log_file_num(4);
        options.set_paranoid_checks(true);
        // Inserts look their key up first, and most such lookups miss (a new row, a recorded
        // output not there yet): bloom filters in the memtable and in every table file answer
        // a miss without searching. Block cache: hot rows stay decoded in memory; every
        // seek looks up index and data blocks in it, and a hyper clock cache does that without
        // the LRU cache's lock per shard (an estimated charge of 0 sizes its table itself).
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(BLOOM_BITS_PER_KEY, false);
        table.set_block_cache(&Cache::new_hyper_clock_cache(BLOCK_CACHE_BYTES, 0));
        options.set_block_based_table_factory(&table);
        options.set_memtable_whole_key_filtering(true);
        options.set_memtable_prefix_bloom_ratio(MEMTABLE_BLOOM_RATIO);
        let db = DB::open(&options, path).map_err(|err| {
            if err.kind() == rocksdb::ErrorKind::IOError && err.as_ref().contains("lock") {
                Error::Storage { operation: "open the state store", message: format!("{} is in use by another open engine: {}", path.display(), err.as_ref()) }
            } else {
                storage("open the state store")(err)
            }
        })?;
        let mut no_wal = WriteOptions::default();
        no_wal.disable_wal(true);
        Ok(Store { db, no_wal })
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_pinned(key).map_err(storage("read"))?.map(|v| v.to_vec()))
    }

    /// The first `count` entries with keys in `start..end`, in key order (descending: from
    /// the end).
    pub(crate) fn scan(&self, start: &[u8], end: Option<&[u8]>, count: usize, descending: bool) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut read = ReadOptions::default();
        if descending {
            // A backwards scan starts at the end and must stop at `start`.
            read.set_iterate_lower_bound(start.to_vec());
        }
        if let Some(end) = end {
            read.set_iterate_upper_bound(end.to_vec());
        }
        let mode = if descending { IteratorMode::End } else { IteratorMode::From(start, Direction::Forward) };
        let mut out = Vec::new();
        for item in self.db.iterator_opt(mode, read) {
            let (key, value) = item.map_err(storage("scan"))?;
            out.push((key.into_vec(), value.into_vec()));
            if out.len() == count {
                break;
            }
        }
        Ok(out)
    }

    /// Writes a batch without RocksDB's WAL: durable only after a flush (the log holds it
    /// until then).
    pub(crate) fn write(&self, batch: Batch) -> Result<()> {
        self.db.write_opt(batch.inner, &self.no_wal).map_err(storage("write"))
    }

    /// Persists every memtable: afterwards everything written so far survives a crash.
    pub(crate) fn flush(&self) -> Result<()> {
        let mut options = FlushOptions::default();
        options.set_wait(true);
        self.db.flush_opt(&options).map_err(storage("flush"))
    }

    /// Waits until the flushes and compactions RocksDB has to do are done (those that writes
    /// during the wait add too), at most `bound`: false when the bound passed first. Blocking.
    pub(crate) fn wait_for_compactions(&self, bound: Duration) -> Result<bool> {
        let mut options = WaitForCompactOptions::default();
        // Zero would mean no bound; RocksDB adds the bound to a signed clock in microseconds.
        let micros = u64::try_from(bound.as_micros()).unwrap_or(u64::MAX).clamp(1, i64::MAX as u64 / 2);
        options.set_timeout(micros);
        match self.db.wait_for_compact(&options) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == rocksdb::ErrorKind::TimedOut => Ok(false),
            Err(err) => Err(storage("wait for compactions")(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level0_files(store: &Store) -> u64 {
        store.db.property_int_value("rocksdb.num-files-at-level0").unwrap().unwrap()
    }

    #[test]
    fn waiting_for_compactions_leaves_none_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Eight flushed files of 4 MB at level 0, twice RocksDB's trigger for compacting
        // them: compacting them takes longer than flushing the last ones.
        let mut noise = 1u64;
        for file in 0..8u32 {
            let mut batch = Batch::default();
            for key in 0..20_000u32 {
                let value: Vec<u8> = (0..200)
                    .map(|_| {
                        noise = noise.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        (noise >> 56) as u8
                    })
                    .collect();
                batch.put(&[key.to_be_bytes(), file.to_be_bytes()].concat(), &value);
            }
            store.write(batch).unwrap();
            store.flush().unwrap();
        }
        // Level 0 has four files or more until they are compacted: a microsecond is too short.
        assert!(!store.wait_for_compactions(Duration::from_micros(1)).unwrap());
        assert!(store.wait_for_compactions(Duration::from_secs(60)).unwrap());
        assert!(level0_files(&store) < 4, "{} files at level 0", level0_files(&store));
        assert_eq!(store.db.property_int_value("rocksdb.compaction-pending").unwrap(), Some(0));
        assert_eq!(store.db.property_int_value("rocksdb.num-running-compactions").unwrap(), Some(0));
        assert!(store.wait_for_compactions(Duration::MAX).unwrap(), "no bound is too long");
        // Every row is still there.
        assert_eq!(store.scan(&[], None, usize::MAX, false).unwrap().len(), 160_000);
    }
}
