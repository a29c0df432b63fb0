//! The durable loglet on RocksDB: the only file of this crate that names `rocksdb::`.
//!
//! Layout (all integers big-endian, so that byte order is numeric order):
//! - column family `records`: LSN (8 bytes) -> encoded record (`record::encode_value`);
//! - column family `tag_index`: tag (8) ++ LSN (8) -> empty;
//! - column family `meta`: `format` -> version, `trim_point` -> LSN, `sealed` -> 1.
//!
//! An append is one `WriteBatch` (records and index entries together) written with
//! `sync = true`: durable on return and atomic across a crash. A `write` is the same batch
//! with `sync = false` (its WAL bytes reach the OS at once), made durable by a later `sync`
//! (RocksDB's `SyncWAL`, one fdatasync). RocksDB's own write-ahead log is recovered to the
//! last complete batch (point-in-time recovery), so the records present after a crash are
//! always a dense prefix.
//!
//! Trimming writes the new trim point and a range deletion of the records below it in one
//! synced batch; index entries below the trim point are skipped by every read and dropped by
//! a compaction filter.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use rocksdb::compaction_filter::Decision;
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, DBRecoveryMode, ErrorKind, Options, ReadOptions, WriteBatch, WriteOptions};

use crate::error::{Error, Result};
use crate::loglet::{Loglet, LogletState};
use crate::record::{ANY_TAG, Entry, Lsn, Record, Tag, decode_value, encode_value};

const RECORDS: &str = "records";
const TAG_INDEX: &str = "tag_index";
const META: &str = "meta";

const META_FORMAT: &[u8] = b"format";
const META_TRIM_POINT: &[u8] = b"trim_point";
const META_SEALED: &[u8] = b"sealed";

/// The on-disk format this build writes and reads.
const FORMAT_VERSION: u64 = 1;

/// Bytes of RocksDB's memtable per column family before it is flushed.
const MEMTABLE_BYTES: usize = 64 << 20;
/// RocksDB's write-ahead log is bounded: past this, memtables are flushed so that old WAL
/// files can be dropped.
const WAL_BYTES_MAX: u64 = 512 << 20;

/// The durable loglet in a directory of its own.
pub struct RocksLoglet {
    path: PathBuf,
    /// `None` once closed: closing drops the database and releases its lock file.
    db: RwLock<Option<DB>>,
    tail: AtomicU64,
    /// Shared with the tag index's compaction filter.
    trim_point: Arc<AtomicU64>,
    sealed: AtomicBool,
    synced: WriteOptions,
    /// For `write`: RocksDB hands the WAL's bytes to the OS at once and syncs them later.
    unsynced: WriteOptions,
}

impl std::fmt::Debug for RocksLoglet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksLoglet").field("path", &self.path).field("state", &self.state()).finish_non_exhaustive()
    }
}

fn lsn_key(lsn: Lsn) -> [u8; 8] {
    lsn.to_be_bytes()
}

fn tag_key(tag: Tag, lsn: Lsn) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&tag.to_be_bytes());
    key[8..].copy_from_slice(&lsn.to_be_bytes());
    key
}

fn decode_u64(bytes: &[u8], location: impl FnOnce() -> String) -> Result<u64> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::Corrupt { location: location(), detail: format!("expected 8 bytes, found {}", bytes.len()) })?;
    Ok(u64::from_be_bytes(array))
}

impl RocksLoglet {
    /// Opens (or creates) the loglet in `path` and recovers its state. Blocking.
    pub fn open(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path)
            .map_err(|err| Error::Storage { operation: "create the log directory", message: format!("{}: {err}", path.display()) })?;
        let trim_point = Arc::new(AtomicU64::new(1));

        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_use_fsync(false); // fdatasync: the data, and the metadata needed to read it
        // A torn last record (a write the crash cut, never acknowledged) is dropped; damage
        // anywhere before it fails the open. Point-in-time recovery would instead stop at the
        // damage and silently drop every acknowledged record after it.
        db_options.set_wal_recovery_mode(DBRecoveryMode::TolerateCorruptedTailRecords);
        db_options.set_paranoid_checks(true);
        db_options.set_max_total_wal_size(WAL_BYTES_MAX);
        db_options.set_max_background_jobs(2);
        db_options.set_keep_log_file_num(4);

        let mut records = in_order_inserts(0).map_err(|err| storage_error("configure the records", path, err))?;
        records.set_write_buffer_size(MEMTABLE_BYTES);
        records.set_compression_type(DBCompressionType::Lz4);

        let mut index = in_order_inserts(8).map_err(|err| storage_error("configure the tag index", path, err))?;
        index.set_write_buffer_size(MEMTABLE_BYTES / 4);
        let below = Arc::clone(&trim_point);
        index.set_compaction_filter("comb-log-trim", move |_level: u32, key: &[u8], _value: &[u8]| {
            match key.get(8..16).and_then(|lsn| <[u8; 8]>::try_from(lsn).ok()) {
                Some(lsn) if u64::from_be_bytes(lsn) < below.load(Ordering::Relaxed) => Decision::Remove,
                _ => Decision::Keep,
            }
        });

        let families = vec![
            ColumnFamilyDescriptor::new(RECORDS, records),
            ColumnFamilyDescriptor::new(TAG_INDEX, index),
            ColumnFamilyDescriptor::new(META, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&db_options, path, families).map_err(|err| storage_error("open", path, err))?;
        let mut synced = WriteOptions::default();
        synced.set_sync(true);
        let loglet = RocksLoglet {
            path: path.to_owned(),
            db: RwLock::new(None),
            tail: AtomicU64::new(0),
            trim_point,
            sealed: AtomicBool::new(false),
            synced,
            unsynced: WriteOptions::default(),
        };
        loglet.recover(&db)?;
        *loglet.db.write().map_err(|_| poisoned())? = Some(db);
        Ok(loglet)
    }

    /// Reads the format, trim point, seal and tail; writes the format of a new log.
    fn recover(&self, db: &DB) -> Result<()> {
        let meta = family(db, META)?;
        let get_meta = |key: &[u8]| db.get_cf(meta, key).map_err(|err| storage_error("read metadata", &self.path, err));
        match get_meta(META_FORMAT)? {
            Some(found) => {
                let found = decode_u64(&found, || "metadata `format`".to_owned())?;
                if found != FORMAT_VERSION {
                    return Err(Error::UnsupportedFormat { path: self.path.clone(), found, expected: FORMAT_VERSION });
                }
            }
            None => {
                let mut batch = WriteBatch::default();
                batch.put_cf(meta, META_FORMAT, FORMAT_VERSION.to_be_bytes());
                db.write_opt(batch, &self.synced).map_err(|err| storage_error("write metadata", &self.path, err))?;
            }
        }
        let trim_point = match get_meta(META_TRIM_POINT)? {
            Some(bytes) => decode_u64(&bytes, || "metadata `trim_point`".to_owned())?,
            None => 1,
        };
        self.trim_point.store(trim_point, Ordering::Relaxed);
        self.sealed.store(get_meta(META_SEALED)?.is_some(), Ordering::Relaxed);

        let mut last = db.raw_iterator_cf(family(db, RECORDS)?);
        last.seek_to_last();
        last.status().map_err(|err| storage_error("find the tail", &self.path, err))?;
        let tail = match last.key() {
            Some(key) => decode_u64(key, || "the key of the last record".to_owned())?,
            None => trim_point - 1,
        };
        if tail + 1 < trim_point {
            return Err(Error::Corrupt {
                location: self.path.display().to_string(),
                detail: format!("the last record {tail} lies below the trim point {trim_point}"),
            });
        }
        self.tail.store(tail, Ordering::Relaxed);
        Ok(())
    }

    fn with_db<T>(&self, f: impl FnOnce(&DB) -> Result<T>) -> Result<T> {
        let guard: RwLockReadGuard<'_, Option<DB>> = self.db.read().map_err(|_| poisoned())?;
        guard.as_ref().map_or(Err(Error::Closed), f)
    }

    fn write_synced(&self, db: &DB, batch: WriteBatch, operation: &'static str) -> Result<()> {
        db.write_opt(batch, &self.synced).map_err(|err| storage_error(operation, &self.path, err))
    }

    /// Writes `entries` after the tail as one batch, atomic across a crash, with `options`
    /// (synced for `append`, not for `write`).
    fn put(&self, entries: &[Entry], options: &WriteOptions, operation: &'static str) -> Result<Lsn> {
        self.with_db(|db| {
            let tail = self.tail.load(Ordering::Acquire);
            if self.sealed.load(Ordering::Acquire) {
                return Err(Error::Sealed { tail });
            }
            let (records, index) = (family(db, RECORDS)?, family(db, TAG_INDEX)?);
            let mut batch = WriteBatch::default();
            let first = tail + 1;
            for (lsn, entry) in (first..).zip(entries) {
                batch.put_cf(records, lsn_key(lsn), encode_value(&entry.tags, &entry.payload));
                for tag in &entry.tags {
                    batch.put_cf(index, tag_key(*tag, lsn), []);
                }
            }
            db.write_opt(batch, options).map_err(|err| storage_error(operation, &self.path, err))?;
            self.tail.store(tail + entries.len() as Lsn, Ordering::Release);
            Ok(first)
        })
    }

    fn get_record(&self, db: &DB, lsn: Lsn) -> Result<Option<Record>> {
        let value = db.get_pinned_cf(family(db, RECORDS)?, lsn_key(lsn)).map_err(|err| storage_error("read a record", &self.path, err))?;
        value.map(|value| decode_value(lsn, &value)).transpose()
    }
}

fn family<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily> {
    db.cf_handle(name).ok_or_else(|| Error::Internal(format!("column family {name} missing after open")))
}

fn poisoned() -> Error {
    Error::Internal("RocksDB loglet lock poisoned by a panicking thread".to_owned())
}

/// Options for a column family whose keys arrive in ascending order within each prefix of
/// `prefix_bytes` bytes (records by LSN: one prefix, the empty one; the tag index by LSN
/// within each tag). RocksDB's memtable then inserts each key right after the last one of its
/// prefix instead of searching its skip list from the top, which was more than half of the
/// writer's CPU time.
fn in_order_inserts(prefix_bytes: usize) -> std::result::Result<Options, rocksdb::Error> {
    Options::default().get_options_from_string(format!("memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.{prefix_bytes}"))
}

/// Maps RocksDB's errors to the log's: corruption and a held lock get errors of their own.
fn storage_error(operation: &'static str, path: &Path, err: rocksdb::Error) -> Error {
    let kind = err.kind();
    let message = err.into_string();
    match kind {
        ErrorKind::Corruption => Error::Corrupt { location: path.display().to_string(), detail: message },
        ErrorKind::IOError if message.contains("LOCK") || message.contains("lock hold") => Error::InUse { path: path.to_owned() },
        ErrorKind::IOError if message.contains("No space left on device") => Error::Storage {
            operation,
            message: format!("{message}; free space on the disk of {}, then restart: every acknowledged record is recovered", path.display()),
        },
        _ => Error::Storage { operation, message },
    }
}

impl Loglet for RocksLoglet {
    fn state(&self) -> LogletState {
        LogletState {
            tail: self.tail.load(Ordering::Acquire),
            trim_point: self.trim_point.load(Ordering::Acquire),
            sealed: self.sealed.load(Ordering::Acquire),
        }
    }

    fn append(&self, entries: &[Entry]) -> Result<Lsn> {
        self.put(entries, &self.synced, "append")
    }

    fn write(&self, entries: &[Entry]) -> Result<Lsn> {
        self.put(entries, &self.unsynced, "write")
    }

    fn sync(&self) -> Result<()> {
        // With RocksDB's WAL flushed on every write, this is `SyncWAL`: an fdatasync of the
        // WAL, safe beside a concurrent write (whose records it may or may not cover).
        self.with_db(|db| db.flush_wal(true).map_err(|err| storage_error("sync", &self.path, err)))
    }

    fn scan(&self, tag: Tag, from: Lsn, to: Lsn, limit: usize) -> Result<Vec<Record>> {
        self.with_db(|db| {
            let from = from.max(self.trim_point.load(Ordering::Acquire));
            if from > to || limit == 0 {
                return Ok(Vec::new());
            }
            let mut out = Vec::new();
            if tag == ANY_TAG {
                let mut options = ReadOptions::default();
                options.set_iterate_upper_bound(lsn_key(to.saturating_add(1)));
                let mut it = db.raw_iterator_cf_opt(family(db, RECORDS)?, options);
                it.seek(lsn_key(from));
                while out.len() < limit {
                    let (Some(key), Some(value)) = (it.key(), it.value()) else { break };
                    let lsn = decode_u64(key, || "a record key".to_owned())?;
                    if lsn != from + out.len() as Lsn {
                        return Err(Error::Corrupt { location: format!("record {}", from + out.len() as Lsn), detail: format!("missing; the next record present is {lsn}") });
                    }
                    out.push(decode_value(lsn, value)?);
                    it.next();
                }
                it.status().map_err(|err| storage_error("scan records", &self.path, err))?;
                return Ok(out);
            }
            let mut options = ReadOptions::default();
            // The smallest key after (tag, to): that key with a zero byte appended.
            let mut upper = tag_key(tag, to).to_vec();
            upper.push(0);
            options.set_iterate_upper_bound(upper);
            let mut it = db.raw_iterator_cf_opt(family(db, TAG_INDEX)?, options);
            it.seek(tag_key(tag, from));
            let mut lsns = Vec::new();
            while lsns.len() < limit {
                let Some(key) = it.key() else { break };
                lsns.push(decode_u64(&key[8..], || "a tag index key".to_owned())?);
                it.next();
            }
            it.status().map_err(|err| storage_error("scan the tag index", &self.path, err))?;
            for lsn in lsns {
                match self.get_record(db, lsn)? {
                    Some(record) => out.push(record),
                    None => return Err(Error::Corrupt { location: format!("record {lsn}"), detail: format!("indexed under tag {tag} but missing") }),
                }
            }
            Ok(out)
        })
    }

    fn read_prev(&self, tag: Tag, max: Lsn) -> Result<Option<Record>> {
        self.with_db(|db| {
            let trim_point = self.trim_point.load(Ordering::Acquire);
            let max = max.min(self.tail.load(Ordering::Acquire));
            if max < trim_point {
                return Ok(None);
            }
            if tag == ANY_TAG {
                return self.get_record(db, max);
            }
            let mut options = ReadOptions::default();
            options.set_iterate_lower_bound(tag_key(tag, trim_point));
            let mut it = db.raw_iterator_cf_opt(family(db, TAG_INDEX)?, options);
            it.seek_for_prev(tag_key(tag, max));
            it.status().map_err(|err| storage_error("read the tag index", &self.path, err))?;
            let Some(key) = it.key() else { return Ok(None) };
            let lsn = decode_u64(&key[8..], || "a tag index key".to_owned())?;
            match self.get_record(db, lsn)? {
                Some(record) => Ok(Some(record)),
                None => Err(Error::Corrupt { location: format!("record {lsn}"), detail: format!("indexed under tag {tag} but missing") }),
            }
        })
    }

    fn trim(&self, upto: Lsn) -> Result<()> {
        self.with_db(|db| {
            let mut batch = WriteBatch::default();
            batch.put_cf(family(db, META)?, META_TRIM_POINT, upto.to_be_bytes());
            batch.delete_range_cf(family(db, RECORDS)?, lsn_key(0), lsn_key(upto));
            self.write_synced(db, batch, "trim")?;
            self.trim_point.store(upto, Ordering::Release);
            Ok(())
        })
    }

    fn seal(&self) -> Result<Lsn> {
        self.with_db(|db| {
            if !self.sealed.load(Ordering::Acquire) {
                let mut batch = WriteBatch::default();
                batch.put_cf(family(db, META)?, META_SEALED, [1]);
                self.write_synced(db, batch, "seal")?;
                self.sealed.store(true, Ordering::Release);
            }
            Ok(self.tail.load(Ordering::Acquire))
        })
    }

    fn close(&self) -> Result<()> {
        let db = self.db.write().map_err(|_| poisoned())?.take();
        if let Some(db) = db {
            db.cancel_all_background_work(true);
            drop(db);
        }
        Ok(())
    }
}
