//! The durable loglet on RocksDB: the only file of this crate that names `rocksdb::`.
//!
//! Layout (all integers big-endian, so that byte order is numeric order):
//! - column family `records`: LSN (8 bytes) -> encoded record (`record::encode_value_into`);
//! - column family `tag_index`: tag (8) ++ LSN (8) -> empty;
//! - column family `meta`: `format` -> version, `trim_point` -> LSN, `sealed` -> 1.
//!
//! The records and the tag index are written without RocksDB's write-ahead log: a `write` is
//! one frame in the log's own segments (`segments.rs`, where the reason is), then one
//! `WriteBatch` of records and index entries; a `sync` is one fdatasync of the active
//! segment, and an `append` is both. RocksDB flushes the records and the index together
//! (atomic flush), so its tables always hold a dense prefix of the records; on open, the
//! records after that prefix are applied again from the segments. The metadata is written
//! through RocksDB's write-ahead log, synced.
//!
//! Trimming writes the new trim point and a range deletion of the records below it in one
//! synced batch; index entries below the trim point are skipped by every read and dropped by
//! a compaction filter.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use rocksdb::compaction_filter::Decision;
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, DBRecoveryMode, ErrorKind, FlushOptions, Options, ReadOptions, SnapshotWithThreadMode, WriteBatch, WriteOptions};

use crate::error::{Error, Result, disk_full_advice};
use crate::loglet::{Loglet, LogletState, check_not_trimmed};
use crate::record::{ANY_TAG, Entry, Lsn, Record, Tag, decode_tags, decode_value};
use crate::segments::{self, Segments, encode_frame};

const RECORDS: &str = "records";
const TAG_INDEX: &str = "tag_index";
const META: &str = "meta";

const META_FORMAT: &[u8] = b"format";
const META_TRIM_POINT: &[u8] = b"trim_point";
const META_SEALED: &[u8] = b"sealed";

/// The on-disk format this build writes and reads: 2 since the records' write-ahead copy is
/// in the log's own segments. A build that knows only 1 would ignore the segments and lose
/// the records not yet flushed, so it must refuse a log of format 2.
const FORMAT_VERSION: u64 = 2;
/// The format before the segments: every record in RocksDB's write-ahead log, which RocksDB
/// recovers on open. Opened, it becomes format 2.
const FORMAT_WITHOUT_SEGMENTS: u64 = 1;
/// The directory of the segments, inside the loglet's.
const SEGMENTS_DIR: &str = "segments";
/// Most records applied from the segments to RocksDB in one batch on open.
const REPLAY_BATCH_RECORDS: usize = 1024;

/// Bytes of RocksDB's memtable per column family before it is flushed.
const MEMTABLE_BYTES: usize = 64 << 20;
/// RocksDB's write-ahead log (metadata only) is bounded: past this, memtables are flushed so
/// that old WAL files can be dropped.
const WAL_BYTES_MAX: u64 = 512 << 20;

/// The durable loglet in a directory of its own.
pub struct RocksLoglet {
    path: PathBuf,
    /// `None` once closed: closing drops the database and releases its lock file. Shared with
    /// the segments' janitor, which flushes it.
    db: Arc<RwLock<Option<DB>>>,
    /// Set once by `open`, after the segments were applied.
    segments: std::sync::OnceLock<Segments>,
    tail: AtomicU64,
    /// Shared with the tag index's compaction filter.
    trim_point: Arc<AtomicU64>,
    sealed: AtomicBool,
    /// For the metadata: through RocksDB's write-ahead log, synced.
    synced: WriteOptions,
    /// For records and the tag index: their write-ahead copy is in the segments.
    unlogged: WriteOptions,
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
    /// Opens (or creates) the loglet in `path` and recovers its state, with the default size
    /// of write-ahead segments. Blocking.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_segments(path, crate::LogOptions::default().segment_bytes)
    }

    /// Opens (or creates) the loglet in `path`, with write-ahead segments of `segment_bytes`
    /// (see `LogOptions::segment_bytes`), and recovers its state. Blocking.
    pub fn open_with_segments(path: &Path, segment_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(path)
            .map_err(|err| Error::Storage { operation: "create the log directory", message: format!("{}: {err}", path.display()) })?;
        let trim_point = Arc::new(AtomicU64::new(1));

        // Closing the database leaves the records in its memtables to the segments (the next
        // open applies them again) rather than flush them; a close still waits for the flushes
        // the janitor has already begun. The one option here that has no setter of its own.
        let mut db_options = Options::default()
            .get_options_from_string("avoid_flush_during_shutdown=true")
            .map_err(|err| storage_error("configure the database", path, err))?;
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
        // The records and their index are flushed together, so that both hold the same prefix.
        db_options.set_atomic_flush(true);
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
        let mut unlogged = WriteOptions::default();
        unlogged.disable_wal(true);
        let loglet = RocksLoglet {
            path: path.to_owned(),
            db: Arc::new(RwLock::new(None)),
            segments: std::sync::OnceLock::new(),
            tail: AtomicU64::new(0),
            trim_point,
            sealed: AtomicBool::new(false),
            synced,
            unlogged,
        };
        loglet.recover(&db)?;
        let recovered = loglet.replay_segments(&db)?;
        *loglet.db.write().map_err(|_| poisoned())? = Some(db);
        let db = Arc::clone(&loglet.db);
        let flush = Box::new(move || {
            let db = db.read().map_err(|_| poisoned())?;
            db.as_ref().map_or(Err(Error::Closed), flush_records)
        });
        let dir = path.join(SEGMENTS_DIR);
        let segments = Segments::start(&dir, segment_bytes, loglet.tail.load(Ordering::Relaxed) + 1, recovered.old, flush)?;
        loglet.segments.set(segments).map_err(|_| Error::Internal("the segments were started twice".to_owned()))?;
        Ok(loglet)
    }

    /// Applies the records that RocksDB's tables lack from the segments, and flushes them, so
    /// that the segments read can be deleted.
    fn replay_segments(&self, db: &DB) -> Result<segments::Recovered> {
        let (records, index) = (family(db, RECORDS)?, family(db, TAG_INDEX)?);
        let mut batch = WriteBatch::default();
        let mut pending = 0;
        let write = |batch: &mut WriteBatch| db.write_opt(std::mem::take(batch), &self.unlogged).map_err(|err| storage_error("apply the segments", &self.path, err));
        let from = self.tail.load(Ordering::Relaxed) + 1;
        let recovered = segments::recover(&self.path.join(SEGMENTS_DIR), from, |first, values| {
            for (lsn, value) in (first..).zip(values) {
                let (tags, _) = decode_tags(lsn, value)?;
                batch.put_cf(records, lsn_key(lsn), value);
                for tag in &tags {
                    batch.put_cf(index, tag_key(*tag, lsn), []);
                }
                pending += 1;
            }
            if pending >= REPLAY_BATCH_RECORDS {
                write(&mut batch)?;
                pending = 0;
            }
            Ok(())
        })?;
        write(&mut batch)?;
        if recovered.last >= from {
            flush_records(db)?;
            self.tail.store(recovered.last, Ordering::Relaxed);
        }
        Ok(recovered)
    }

    fn segments(&self) -> Result<&Segments> {
        self.segments.get().ok_or(Error::Closed)
    }

    /// Reads the format, trim point, seal and tail; writes the format of a new log.
    fn recover(&self, db: &DB) -> Result<()> {
        let meta = family(db, META)?;
        let get_meta = |key: &[u8]| db.get_cf(meta, key).map_err(|err| storage_error("read metadata", &self.path, err));
        match get_meta(META_FORMAT)? {
            Some(found) => {
                let found = decode_u64(&found, || "metadata `format`".to_owned())?;
                if found == FORMAT_WITHOUT_SEGMENTS {
                    let mut batch = WriteBatch::default();
                    batch.put_cf(meta, META_FORMAT, FORMAT_VERSION.to_be_bytes());
                    db.write_opt(batch, &self.synced).map_err(|err| storage_error("write metadata", &self.path, err))?;
                } else if found != FORMAT_VERSION {
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

    /// Writes `entries` after the tail as one frame in the segments (atomic across a crash),
    /// then into RocksDB; durable after the next sync.
    fn put(&self, entries: &[Entry], operation: &'static str) -> Result<Lsn> {
        let segments = self.segments()?;
        self.with_db(|db| {
            let tail = self.tail.load(Ordering::Acquire);
            if self.sealed.load(Ordering::Acquire) {
                return Err(Error::Sealed { tail });
            }
            let (records, index) = (family(db, RECORDS)?, family(db, TAG_INDEX)?);
            let first = tail + 1;
            if entries.is_empty() {
                // No frame: a frame of no records would read as the end of the log.
                return Ok(first);
            }
            let last = tail + entries.len() as Lsn;
            let mut frame = Vec::new();
            let values = encode_frame(first, entries, &mut frame);
            segments.write(&mut frame, last)?;
            let mut batch = WriteBatch::default();
            for ((lsn, entry), value) in (first..).zip(entries).zip(values) {
                batch.put_cf(records, lsn_key(lsn), &frame[value]);
                for tag in &entry.tags {
                    batch.put_cf(index, tag_key(*tag, lsn), []);
                }
            }
            db.write_opt(batch, &self.unlogged).map_err(|err| {
                segments.fail();
                storage_error(operation, &self.path, err)
            })?;
            self.tail.store(last, Ordering::Release);
            Ok(first)
        })
    }

    fn get_record(&self, db: &DB, at: &Snapshot<'_>, lsn: Lsn) -> Result<Option<Record>> {
        let value = at.get_pinned_cf(family(db, RECORDS)?, lsn_key(lsn)).map_err(|err| storage_error("read a record", &self.path, err))?;
        value.map(|value| decode_value(lsn, &value)).transpose()
    }

    /// The trim point as of `at`. A read takes it from its snapshot, not from the loglet's
    /// latest: a trim writes its point and deletes the records below in one batch, so a read
    /// sees the trim wholly or not at all (never an index entry whose record is gone, nor a
    /// record skipped without `Trimmed`).
    fn trim_point_at(&self, db: &DB, at: &Snapshot<'_>) -> Result<Lsn> {
        match at.get_pinned_cf(family(db, META)?, META_TRIM_POINT).map_err(|err| storage_error("read the trim point", &self.path, err))? {
            Some(bytes) => decode_u64(&bytes, || "metadata `trim_point`".to_owned()),
            None => Ok(1),
        }
    }
}

/// A consistent view of the loglet's database, taken by each read.
type Snapshot<'a> = SnapshotWithThreadMode<'a, DB>;

fn family<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily> {
    db.cf_handle(name).ok_or_else(|| Error::Internal(format!("column family {name} missing after open")))
}

fn poisoned() -> Error {
    Error::Internal("RocksDB loglet lock poisoned by a panicking thread".to_owned())
}

/// Flushes the records, the tag index and the metadata to RocksDB's tables, together, and waits.
fn flush_records(db: &DB) -> Result<()> {
    let mut options = FlushOptions::default();
    options.set_wait(true);
    // The metadata too: its memtable would otherwise keep every RocksDB WAL file since its
    // last write (a trim or a seal) from being deleted.
    db.flush_cfs_opt(&[family(db, RECORDS)?, family(db, TAG_INDEX)?, family(db, META)?], &options).map_err(|err| Error::Storage { operation: "flush the records", message: err.into_string() })
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
            message: format!("{message}; {}", disk_full_advice(path)),
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
        let first = self.put(entries, "append")?;
        self.sync()?;
        Ok(first)
    }

    fn write(&self, entries: &[Entry]) -> Result<Lsn> {
        self.put(entries, "write")
    }

    fn sync(&self) -> Result<()> {
        // Safe beside a concurrent write, whose records it may or may not cover.
        self.segments()?.sync()
    }

    fn scan(&self, tag: Tag, from: Lsn, to: Lsn, limit: usize) -> Result<Vec<Record>> {
        self.with_db(|db| {
            let at = db.snapshot();
            let trim_point = self.trim_point_at(db, &at)?;
            check_not_trimmed(from, trim_point)?;
            let asked = from;
            let from = from.max(trim_point);
            if from > to || limit == 0 {
                return Ok(Vec::new());
            }
            let mut out = Vec::new();
            if tag == ANY_TAG {
                let mut options = ReadOptions::default();
                options.set_snapshot(&at);
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
            options.set_snapshot(&at);
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
                match self.get_record(db, &at, lsn)? {
                    Some(record) => out.push(record),
                    None => return Err(Error::Corrupt { location: format!("record {lsn}"), detail: format!("indexed under tag {tag} but missing") }),
                }
            }
            // The index's compaction filter drops entries below the latest trim point, which
            // no snapshot holds back: a trim after the snapshot may have emptied part of the
            // range. The read then counts as after that trim.
            check_not_trimmed(asked, self.trim_point.load(Ordering::Acquire))?;
            Ok(out)
        })
    }

    fn read_prev(&self, tag: Tag, max: Lsn) -> Result<Option<Record>> {
        self.with_db(|db| {
            // The tail before the snapshot, so that the snapshot holds every record up to it.
            let max = max.min(self.tail.load(Ordering::Acquire));
            let at = db.snapshot();
            let trim_point = self.trim_point_at(db, &at)?;
            if max < trim_point {
                return Ok(None);
            }
            if tag == ANY_TAG {
                return self.get_record(db, &at, max);
            }
            let mut options = ReadOptions::default();
            options.set_snapshot(&at);
            options.set_iterate_lower_bound(tag_key(tag, trim_point));
            let mut it = db.raw_iterator_cf_opt(family(db, TAG_INDEX)?, options);
            it.seek_for_prev(tag_key(tag, max));
            it.status().map_err(|err| storage_error("read the tag index", &self.path, err))?;
            let Some(key) = it.key() else { return Ok(None) };
            let lsn = decode_u64(&key[8..], || "a tag index key".to_owned())?;
            // As in `scan`: a trim after the snapshot may have let the index's compaction
            // filter drop the entry wanted (below the new trim point), and the seek then
            // found an older one. Below the trim point now, the read counts as after that
            // trim, which leaves nothing to find at or before `max`.
            if lsn < self.trim_point.load(Ordering::Acquire) {
                return Ok(None);
            }
            match self.get_record(db, &at, lsn)? {
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
        // The janitor first: it may be flushing the database.
        if let Some(segments) = self.segments.get() {
            segments.close();
        }
        let db = self.db.write().map_err(|_| poisoned())?.take();
        if let Some(db) = db {
            db.cancel_all_background_work(true);
            drop(db);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::encode_value_into;

    #[test]
    fn a_log_of_format_1_opens_with_its_records_and_becomes_format_2() {
        let dir = tempfile::tempdir().unwrap();
        {
            // Format 1: every record in RocksDB's own write-ahead log, not yet flushed.
            let mut options = Options::default();
            options.create_if_missing(true);
            options.create_missing_column_families(true);
            let db = DB::open_cf(&options, dir.path(), [RECORDS, TAG_INDEX, META]).unwrap();
            let mut batch = WriteBatch::default();
            batch.put_cf(family(&db, META).unwrap(), META_FORMAT, FORMAT_WITHOUT_SEGMENTS.to_be_bytes());
            for lsn in 1..=3 {
                let mut value = Vec::new();
                encode_value_into(&[7], format!("v1 record {lsn}").as_bytes(), &mut value);
                batch.put_cf(family(&db, RECORDS).unwrap(), lsn_key(lsn), value);
                batch.put_cf(family(&db, TAG_INDEX).unwrap(), tag_key(7, lsn), []);
            }
            let mut synced = WriteOptions::default();
            synced.set_sync(true);
            db.write_opt(batch, &synced).unwrap();
        }
        let payloads = |loglet: &RocksLoglet| loglet.scan(7, 1, 10, 10).unwrap().into_iter().map(|r| String::from_utf8(r.payload.to_vec()).unwrap()).collect::<Vec<_>>();

        let loglet = RocksLoglet::open(dir.path()).unwrap();
        assert_eq!(payloads(&loglet), ["v1 record 1", "v1 record 2", "v1 record 3"]);
        assert_eq!(loglet.append(&[Entry::new([7], "v2 record 4")]).unwrap(), 4);
        loglet.close().unwrap();

        let loglet = RocksLoglet::open(dir.path()).unwrap();
        assert_eq!(payloads(&loglet), ["v1 record 1", "v1 record 2", "v1 record 3", "v2 record 4"]);
        let format = loglet.with_db(|db| Ok(db.get_cf(family(db, META)?, META_FORMAT).unwrap())).unwrap();
        assert_eq!(format, Some(FORMAT_VERSION.to_be_bytes().to_vec()), "upgraded to the format with segments");
        loglet.close().unwrap();
    }

    #[test]
    fn an_empty_write_leaves_no_frame_and_a_closed_loglet_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let loglet = RocksLoglet::open(dir.path()).unwrap();
        assert_eq!(loglet.append(&[Entry::new([1], "one")]).unwrap(), 1);
        assert_eq!(loglet.write(&[]).unwrap(), 2, "an empty write writes nothing");
        assert_eq!(loglet.append(&[Entry::new([1], "two")]).unwrap(), 2);
        loglet.close().unwrap();
        assert_eq!(loglet.sync(), Err(Error::Closed));
        assert_eq!(loglet.write(&[Entry::new([1], "after")]), Err(Error::Closed));
        let loglet = RocksLoglet::open(dir.path()).unwrap();
        assert_eq!(loglet.state().tail, 2, "the record after the empty write is recovered");
        loglet.close().unwrap();
    }
}
