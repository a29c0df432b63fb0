//! The log's write-ahead segments: the durable copy of every record until RocksDB has flushed
//! it to its tables. Only plain files here; RocksDB is reached through the `flush` callback.
//!
//! RocksDB holds the records and their tag index with its own write-ahead log off for them.
//! Each `write` of the loglet is first one *frame* at the end of the active segment, and a
//! sync is one fdatasync of that file. A segment is `segments/NNNNNNNNNNNNNNNNNNNN.seg`, named
//! by the LSN of its first record (20 digits, so names sort by LSN). It starts with a header,
//! synced before any frame is written, then holds frames; integers little-endian:
//!
//! ```text
//! segment header: magic "CombSeg1" | salt u64 (random, one per segment file)
//! frame: crc32 u32 | body bytes u32 | salt u64 | first LSN u64 | synced LSN u64 | records u32 | body
//! body: per record, value bytes u32 | value (the record as RocksDB stores it)
//! ```
//!
//! The CRC covers everything after it. `synced` is the last LSN that a finished sync had made
//! durable when the frame was written: it is what tells damage from a torn tail (below). The
//! salt makes a frame valid only in its own segment file: a record's payload that happens to
//! hold (or was crafted to hold) a well-formed frame is never taken for one.
//!
//! **Why not RocksDB's write-ahead log.** An fdatasync of a file that grows must also commit
//! the file system's journal (the file's new size). On the disk this was measured on, writing
//! a few KiB and syncing them cost 165 to 233 us when appending, and 95 to 133 us when
//! overwriting bytes already on disk. A janitor thread therefore prepares the next segment
//! ahead of time, a spare file of zeros written and synced, so that the writer's syncs only
//! overwrite. (Zeros written ahead inside the active segment instead doubled the commit
//! latency's p99: each sync of the active file also had to write back the zeros not yet
//! synced.) RocksDB overwrites like this when it recycles its log files, but refuses
//! recycling under the recovery mode that tells a torn tail from damage.
//!
//! **Rolling.** When a frame would carry the active segment past its capacity, the segment
//! is synced and the frame starts the next one: the spare, renamed, or a new empty file if
//! the janitor has not prepared one; its directory entry is synced before it is written.
//! Capacities start at [`FIRST_SEGMENT_BYTES`] after an open (or at the size of the spare the
//! last open left) and double up to `segment-bytes`, so that a log that holds little writes
//! few zeros; a frame larger than a segment gets one of its own, grown to fit. The janitor
//! then prepares the next spare, flushes RocksDB's memtables (every record of the retired
//! segment is in them) and deletes the retired segment; once capacities stop growing, it
//! recycles the retired segment as the next spare instead (a new salt in its header), so
//! that a steady log writes no zeros at all. The chores waiting for the janitor are bounded
//! by [`CHORES_MAX`]: past it, the writer waits to retire a segment, and does without a spare.
//!
//! **Recovery.** The segments are read in order; the frames whose records RocksDB lacks are
//! applied to it, and RocksDB is flushed before the segments are deleted. A frame that is
//! incomplete, fails its CRC or is zeros ends the log: a crash cut a write that no sync had
//! covered, and its records were never acknowledged; they are dropped, the frame whole. But
//! if a whole frame anywhere after it says that a sync had covered the frame's records, those
//! records were acknowledged, and the open fails as corrupt rather than silently drop them.
//! Recovery reads a segment a window of [`SCAN_WINDOW_BYTES`] at a time (a frame larger than
//! that whole, once its CRC has matched): it never holds a whole segment in memory.

use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tracing::warn;

use crate::error::{Error, Result, disk_full_advice};
use crate::record::{Entry, Lsn, encode_value_into};

/// Capacity of the first segment after an open (at most `segment-bytes`); each next one has
/// twice its predecessor's, up to `segment-bytes`.
pub(crate) const FIRST_SEGMENT_BYTES: u64 = 256 << 10;
/// Bytes of zeros the janitor writes into a spare, and syncs, at a time.
const ZERO_CHUNK: usize = 1 << 20;
/// The spare segment, zero-filled and synced, and the file it is prepared in.
const SPARE: &str = "spare";
const SPARE_UNFINISHED: &str = "spare.tmp";
/// Most chores waiting for the janitor (retired segments, spares to prepare).
const CHORES_MAX: usize = 16;
/// Bytes of a segment recovery reads at a time (its read-ahead, and the scan for proof after
/// damage): it holds a window or two of a segment in memory, or one frame larger than that,
/// never a whole segment.
const SCAN_WINDOW_BYTES: usize = 1 << 20;
/// Where each field of a frame's header lies (see the module's doc).
mod field {
    use std::ops::Range;
    pub(super) const CRC: Range<usize> = 0..4;
    pub(super) const BODY_BYTES: Range<usize> = 4..8;
    pub(super) const SALT: Range<usize> = 8..16;
    pub(super) const FIRST: Range<usize> = 16..24;
    pub(super) const SYNCED: Range<usize> = 24..32;
    pub(super) const COUNT: Range<usize> = 32..36;
}
/// Bytes of a frame's header.
const HEADER_BYTES: usize = field::COUNT.end;
/// A segment file's header: the magic, then the segment's salt.
const MAGIC: &[u8; 8] = b"CombSeg1";
const SEGMENT_HEADER_BYTES: u64 = 16;
const SUFFIX: &str = "seg";

/// Appends the frame for the records `first ..` holding `entries` to `out`, and returns where
/// each record's stored value lies in `out`. The CRC, salt and `synced` are filled in by
/// [`Segments::write`].
pub(crate) fn encode_frame(first: Lsn, entries: &[Entry], out: &mut Vec<u8>) -> Vec<Range<usize>> {
    let start = out.len();
    out.resize(start + HEADER_BYTES, 0);
    let mut values = Vec::with_capacity(entries.len());
    for entry in entries {
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        encode_value_into(&entry.tags, &entry.payload, out);
        let len = out.len() - len_at - 4;
        out[len_at..len_at + 4].copy_from_slice(&(len as u32).to_le_bytes());
        values.push(len_at + 4..out.len());
    }
    let body = out.len() - start - HEADER_BYTES;
    let header = &mut out[start..start + HEADER_BYTES];
    header[field::BODY_BYTES].copy_from_slice(&(body as u32).to_le_bytes());
    header[field::FIRST].copy_from_slice(&first.to_le_bytes());
    header[field::COUNT].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    values
}

/// Fills in a frame's salt and `synced`, then its CRC.
fn seal_frame(frame: &mut [u8], salt: u64, synced: Lsn) {
    frame[field::SALT].copy_from_slice(&salt.to_le_bytes());
    frame[field::SYNCED].copy_from_slice(&synced.to_le_bytes());
    let crc = crc32fast::hash(&frame[field::CRC.end..]);
    frame[field::CRC].copy_from_slice(&crc.to_le_bytes());
}

/// One whole frame read back.
#[derive(Debug)]
struct Frame<'a> {
    first: Lsn,
    synced: Lsn,
    count: u64,
    body: &'a [u8],
    bytes: usize,
}

impl Frame<'_> {
    fn last(&self) -> Lsn {
        self.first + self.count - 1
    }

    /// The stored values, in LSN order; `None` if the body does not hold exactly `count` of them.
    fn values(&self) -> Option<Vec<&[u8]>> {
        let mut values = Vec::with_capacity(self.count as usize);
        let mut rest = self.body;
        while !rest.is_empty() {
            let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            values.push(rest.get(4..4 + len)?);
            rest = &rest[4 + len..];
        }
        (values.len() as u64 == self.count).then_some(values)
    }
}

fn le_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().expect("four bytes"))
}

fn le_u64(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("eight bytes"))
}

/// The whole frame of the segment salted `salt` at the start of `bytes`, or `None` (zeros,
/// cut short, another salt, or a failed CRC).
fn parse_frame(bytes: &[u8], salt: u64) -> Option<Frame<'_>> {
    let header = bytes.get(..HEADER_BYTES)?;
    let body_bytes = le_u32(&header[field::BODY_BYTES]) as usize;
    let count = u64::from(le_u32(&header[field::COUNT]));
    if count == 0 || le_u64(&header[field::SALT]) != salt {
        return None;
    }
    let framed = bytes.get(field::CRC.end..HEADER_BYTES + body_bytes)?;
    if crc32fast::hash(framed) != le_u32(&header[field::CRC]) {
        return None;
    }
    let first = le_u64(&header[field::FIRST]);
    (first > 0 && first.checked_add(count).is_some()).then(|| Frame {
        first,
        synced: le_u64(&header[field::SYNCED]),
        count,
        body: &bytes[HEADER_BYTES..HEADER_BYTES + body_bytes],
        bytes: HEADER_BYTES + body_bytes,
    })
}

/// Whether a frame header of the segment salted `salt` could prove that record `lsn` was
/// acknowledged: written after it, saying a sync had covered it. The salt above all rules out
/// nearly every position of a scan before a frame is read and its CRC computed.
/// Whether a frame header could be one of the segment's frames holding record `lsn`.
fn could_hold(header: &[u8], salt: u64, lsn: Lsn) -> bool {
    let (first, count) = (le_u64(&header[field::FIRST]), u64::from(le_u32(&header[field::COUNT])));
    le_u64(&header[field::SALT]) == salt && first <= lsn && lsn - first < count
}

/// What the scan past a segment's readable frames finds first (see `SegmentFile::beyond`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Beyond {
    /// A whole frame holding the record sought, at this byte.
    Holds(u64),
    /// A whole frame, at this byte, that proves the record sought was acknowledged.
    Proof(u64),
}

fn could_prove(header: &[u8], salt: u64, lsn: Lsn) -> bool {
    let (first, synced) = (le_u64(&header[field::FIRST]), le_u64(&header[field::SYNCED]));
    le_u64(&header[field::SALT]) == salt && first > lsn && (lsn..first).contains(&synced)
}

/// A segment file read back at recovery, a piece at a time: through a read-ahead buffer of
/// [`SCAN_WINDOW_BYTES`] (a frame larger than that alone, and only once its CRC has matched),
/// and the scan after damage a window of its own at a time.
struct SegmentFile<'p> {
    file: File,
    len: u64,
    path: &'p Path,
    /// Bytes of the file from `ahead_at` on.
    ahead: Vec<u8>,
    ahead_at: u64,
}

impl<'p> SegmentFile<'p> {
    fn open(path: &'p Path) -> Result<SegmentFile<'p>> {
        let file = File::open(path).map_err(|err| io_error("read a segment", path, &err))?;
        let len = file.metadata().map_err(|err| io_error("read a segment", path, &err))?.len();
        Ok(SegmentFile { file, len, path, ahead: Vec::new(), ahead_at: 0 })
    }

    /// Reads `len` bytes from `at` into `buf`, fewer where the file ends first.
    fn read(&self, at: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
        let len = usize::try_from(self.len.saturating_sub(at)).map_or(len, |rest| rest.min(len));
        buf.resize(len, 0);
        self.file.read_exact_at(buf, at).map_err(|err| io_error("read a segment", self.path, &err))
    }

    /// The `len` bytes from `at` (fewer where the file ends first), from the read-ahead
    /// buffer, refilled from `at` with at least a window when they are not all in it.
    fn ahead(&mut self, at: u64, len: usize) -> Result<&[u8]> {
        let end = at.saturating_add(len as u64).min(self.len).max(at);
        if at < self.ahead_at || end > self.ahead_at + self.ahead.len() as u64 {
            let mut ahead = std::mem::take(&mut self.ahead);
            self.read(at, len.max(SCAN_WINDOW_BYTES), &mut ahead)?;
            (self.ahead, self.ahead_at) = (ahead, at);
        }
        Ok(&self.ahead[(at - self.ahead_at) as usize..(end - self.ahead_at) as usize])
    }

    /// The salt from the segment's header; `None` for a segment whose header was never
    /// written, which must then hold nothing at all.
    fn salt(&mut self) -> Result<Option<u64>> {
        let path = self.path;
        let salt = read_salt(self.ahead(0, SEGMENT_HEADER_BYTES as usize)?, path)?;
        if salt.is_none() {
            let mut at = 0;
            while at < self.len {
                let window = self.ahead(at, SCAN_WINDOW_BYTES)?;
                if window.iter().any(|b| *b != 0) {
                    return Err(Error::Corrupt { location: self.path.display().to_string(), detail: "the segment's header is damaged".to_owned() });
                }
                at += window.len() as u64;
            }
        }
        Ok(salt)
    }

    /// Whether the CRC of the frame of `bytes` at `at` is `crc`, read a window at a time.
    fn crc_matches(&mut self, at: u64, bytes: u64, crc: u32) -> Result<bool> {
        let mut hasher = crc32fast::Hasher::new();
        let mut from = at + field::CRC.end as u64;
        while from < at + bytes {
            let window = self.ahead(from, SCAN_WINDOW_BYTES.min((at + bytes - from) as usize))?;
            hasher.update(window);
            from += window.len() as u64;
        }
        Ok(hasher.finalize() == crc)
    }

    /// The whole frame of the segment salted `salt` at byte `at`; `None` where there is
    /// none (see [`parse_frame`]). A frame is read whole only once its header has the salt
    /// and its length fits in the file, and, if larger than a window, once its CRC matched:
    /// a damaged length never makes recovery hold the rest of a segment.
    fn frame(&mut self, at: u64, salt: u64) -> Result<Option<Frame<'_>>> {
        let header = self.ahead(at, HEADER_BYTES)?;
        if header.len() < HEADER_BYTES || le_u64(&header[field::SALT]) != salt {
            return Ok(None);
        }
        let crc = le_u32(&header[field::CRC]);
        let bytes = HEADER_BYTES as u64 + u64::from(le_u32(&header[field::BODY_BYTES]));
        if at + bytes > self.len {
            return Ok(None);
        }
        let Ok(len) = usize::try_from(bytes) else { return Ok(None) };
        if len > SCAN_WINDOW_BYTES && !self.crc_matches(at, bytes, crc)? {
            return Ok(None);
        }
        Ok(parse_frame(self.ahead(at, len)?, salt))
    }

    /// What lies past the frames read up to `from`, for record `lsn`, the first not read:
    /// the first byte where a whole frame of the segment holds `lsn` (the damage before it
    /// covered earlier records only), or where one written after `lsn` says that a sync had
    /// covered it (proof that `lsn` was acknowledged). Looks at every byte position, since
    /// the frames after damage cannot be found by their lengths, reading a window at a time
    /// (each window longer by a header, so that a header across two windows is seen whole).
    fn beyond(&mut self, from: u64, salt: u64, lsn: Lsn) -> Result<Option<Beyond>> {
        let mut window = Vec::new();
        let mut start = from;
        while start < self.len {
            self.read(start, SCAN_WINDOW_BYTES + HEADER_BYTES, &mut window)?;
            for at in 0..window.len().saturating_sub(HEADER_BYTES).min(SCAN_WINDOW_BYTES) {
                let (header, pos) = (&window[at..at + HEADER_BYTES], start + at as u64);
                if could_hold(header, salt, lsn) && self.frame(pos, salt)?.is_some() {
                    return Ok(Some(Beyond::Holds(pos)));
                }
                if could_prove(header, salt, lsn) && self.frame(pos, salt)?.is_some_and(|f| f.synced >= lsn) {
                    return Ok(Some(Beyond::Proof(pos)));
                }
            }
            start += SCAN_WINDOW_BYTES as u64;
        }
        Ok(None)
    }
}

/// A fresh salt for a segment file: random per process, mixed with the clock.
fn new_salt() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.finish()
}

fn segment_header(salt: u64) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut header = [0; SEGMENT_HEADER_BYTES as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..].copy_from_slice(&salt.to_le_bytes());
    header
}

/// The salt of a segment file from its header; `None` for a file whose header was never
/// written (it holds nothing).
fn read_salt(bytes: &[u8], path: &Path) -> Result<Option<u64>> {
    let header = bytes.get(..SEGMENT_HEADER_BYTES as usize);
    match header {
        Some(header) if header[..8] == MAGIC[..] => Ok(Some(le_u64(&header[8..]))),
        _ if bytes.iter().all(|b| *b == 0) => Ok(None),
        _ => Err(Error::Corrupt { location: path.display().to_string(), detail: "the segment's header is damaged".to_owned() }),
    }
}

/// Creates the segment file `path` with a fresh header, synced, and opens it for writing.
fn create_segment(path: &Path) -> Result<(File, u64)> {
    let file = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(path).map_err(|err| io_error("create a segment", path, &err))?;
    let salt = new_salt();
    file.write_all_at(&segment_header(salt), 0).and_then(|()| file.sync_data()).map_err(|err| io_error("write a segment's header", path, &err))?;
    Ok((file, salt))
}

/// Makes the spare the segment `path` and opens it: its salt and its capacity.
/// A spare larger than `bytes_max` (left by an open with larger segments) or without a sound
/// header is deleted instead, and `None` returned: the caller creates a segment.
fn take_spare(dir: &Path, path: &Path, bytes_max: u64) -> Result<Option<(File, u64, u64)>> {
    let spare = dir.join(SPARE);
    let file = match OpenOptions::new().read(true).write(true).open(&spare) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(io_error("open the spare segment", &spare, &err)),
    };
    let capacity = file.metadata().map_err(|err| io_error("open the spare segment", &spare, &err))?.len();
    let mut header = [0; SEGMENT_HEADER_BYTES as usize];
    let salt = file.read_exact_at(&mut header, 0).ok().and_then(|()| read_salt(&header, &spare).ok().flatten());
    let Some(salt) = salt.filter(|_| capacity <= bytes_max) else {
        warn!("the spare segment {} ({capacity} bytes) is unusable or too large; it is deleted", spare.display());
        std::fs::remove_file(&spare).map_err(|err| io_error("delete the spare segment", &spare, &err))?;
        return Ok(None);
    };
    std::fs::rename(&spare, path).map_err(|err| io_error("take the spare segment", path, &err))?;
    Ok(Some((file, salt, capacity)))
}

/// Starts the segment `path`: the spare if a usable one is ready, else a new file of
/// `new_capacity`; its directory entry is synced before it is written. Its file, salt and
/// capacity.
fn open_segment(dir: &Path, path: &Path, bytes_max: u64, new_capacity: u64) -> Result<(File, u64, u64)> {
    let opened = match take_spare(dir, path, bytes_max)? {
        Some(spare) => spare,
        None => {
            let (file, salt) = create_segment(path)?;
            (file, salt, new_capacity)
        }
    };
    sync_dir(dir, "sync the segments' directory")?;
    Ok(opened)
}

/// The capacity of the segment after one of `capacity`: twice it, up to `segment_bytes`.
fn grown(capacity: u64, segment_bytes: u64) -> u64 {
    (capacity * 2).min(segment_bytes)
}

fn segment_path(dir: &Path, first: Lsn) -> PathBuf {
    dir.join(format!("{first:020}.{SUFFIX}"))
}

fn io_error(operation: &'static str, path: &Path, err: &std::io::Error) -> Error {
    let message = if err.kind() == std::io::ErrorKind::StorageFull {
        format!("{}: {err}; {}", path.display(), disk_full_advice(path.parent().unwrap_or(path)))
    } else {
        format!("{}: {err}", path.display())
    };
    Error::Storage { operation, message }
}

fn sync_dir(dir: &Path, operation: &'static str) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|err| io_error(operation, dir, &err))
}

/// The segment files in `dir`, ordered by their first LSN.
fn list(dir: &Path) -> Result<Vec<(Lsn, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|err| io_error("list the segments", dir, &err))? {
        let path = entry.map_err(|err| io_error("list the segments", dir, &err))?.path();
        if path.extension().is_none_or(|e| e != SUFFIX) {
            continue;
        }
        let first = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<Lsn>().ok());
        match first {
            Some(first) => segments.push((first, path)),
            None => return Err(Error::Corrupt { location: path.display().to_string(), detail: "a segment whose name is not its first LSN".to_owned() }),
        }
    }
    segments.sort();
    Ok(segments)
}

/// What reading the segments recovered.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// The last record applied, or one before the first wanted if none was.
    pub(crate) last: Lsn,
    /// The segments read, to delete once what was applied is flushed.
    pub(crate) old: Vec<PathBuf>,
}

/// Reads the segments in `dir` (created if missing) and calls `apply` with every record from
/// `from` on, in order, a frame's records together.
pub(crate) fn recover(dir: &Path, from: Lsn, mut apply: impl FnMut(Lsn, &[&[u8]]) -> Result<()>) -> Result<Recovered> {
    std::fs::create_dir_all(dir).map_err(|err| io_error("create the segments' directory", dir, &err))?;
    // Its entry in its parent is made durable too, at every open (a crash may have come
    // between its creation and this sync), before any record is acknowledged in it: a file
    // system may otherwise lose a new directory, records and all.
    if let Some(parent) = dir.parent() {
        sync_dir(parent, "sync the directory holding the segments' directory")?;
    }
    let mut next = from;
    let mut old = Vec::new();
    // A segment ends where its writes ended: cleanly if it was rolled (its successor starts
    // with the next record), or at a torn write. A segment after a torn one can hold no
    // record: a roll syncs the segment first, so a frame after the gap is damage.
    for (_, path) in list(dir)? {
        let mut file = SegmentFile::open(&path)?;
        let corrupt = |at: u64, detail: String| Error::Corrupt { location: format!("{} at byte {at}", path.display()), detail };
        let Some(salt) = file.salt()? else {
            old.push(path);
            continue;
        };
        let mut at = SEGMENT_HEADER_BYTES;
        loop {
            while let Some(frame) = file.frame(at, salt)? {
                let Some(values) = frame.values() else {
                    return Err(corrupt(at, format!("a frame announces {} records but holds others", frame.count)));
                };
                if frame.first > next {
                    return Err(corrupt(at, format!("record {next} is missing; the next one present is {}", frame.first)));
                }
                if frame.last() >= next {
                    let skip = (next - frame.first) as usize;
                    apply(next, &values[skip..])?;
                    next = frame.last() + 1;
                }
                at += frame.bytes as u64;
            }
            match file.beyond(at, salt, next)? {
                // Damage to frames whose records are stored already (below `from`): the
                // reading goes on at the frame that holds the next record.
                Some(Beyond::Holds(found)) if found > at => at = found,
                Some(Beyond::Holds(_)) | None => break,
                Some(Beyond::Proof(proof)) => {
                    return Err(corrupt(at, format!("record {next} is damaged, and a frame at byte {proof} says a sync had covered it")));
                }
            }
        }
        old.push(path);
    }
    Ok(Recovered { last: next - 1, old })
}

/// The segment being written.
struct Active {
    file: Arc<File>,
    path: PathBuf,
    salt: u64,
    /// Bytes of frames in it.
    end: u64,
    /// Bytes it may hold before the next frame rolls to a new segment.
    capacity: u64,
    /// The last record written.
    written: Lsn,
}

enum Chore {
    /// Prepare a spare segment of this many bytes.
    Prepare(u64),
    /// Flush RocksDB, then delete this segment, or make it the spare if one of at least this
    /// many bytes is wanted and none is ready.
    Retire(PathBuf, Option<u64>),
}

/// The active segment, shared by the writer, the syncer and the janitor.
struct Shared {
    dir: PathBuf,
    segment_bytes: u64,
    active: Mutex<Active>,
    /// The last record a finished sync made durable.
    synced: AtomicU64,
    /// Set by a failed write or sync: what it left on disk is unknown until the next open,
    /// so nothing more is written, and no later frame may claim a sync (fail-stop).
    failed: AtomicBool,
    /// Set by `close`: nothing more is written, and the janitor prepares no more spares.
    closed: AtomicBool,
    /// Held through each sync of the active segment: by the syncer's, and by a roll's in the
    /// writer. Linux reports a failed writeback to one sync of an open file only; two syncs of
    /// the file at once could see one fail while the other returns Ok, and the Ok would
    /// acknowledge records the failure may have lost. One at a time, the second finds
    /// `failed` set by the first.
    syncing: Mutex<()>,
}

impl Shared {
    /// The active segment, for writing or syncing it; an error once the segments failed or
    /// were closed.
    fn active(&self) -> Result<MutexGuard<'_, Active>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::Storage { operation: "write", message: format!("an earlier write or sync of {} failed; reopen the log", self.dir.display()) });
        }
        self.active.lock().map_err(|_| Error::Internal("the log's segment lock was poisoned by a panicking thread".to_owned()))
    }

    /// Passes `result` on, failing the segments if it is an error.
    fn fail_on<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.failed.store(true, Ordering::Release);
        }
        result
    }

    /// Syncs `file`, the active segment's (or the one a roll retires), one sync at a time
    /// (see `syncing`); fails the segments if the sync fails, or if one before it did.
    fn sync_active(&self, file: &File, path: &Path) -> Result<()> {
        let _syncing = self.syncing.lock().map_err(|_| Error::Internal("the log's sync lock was poisoned by a panicking thread".to_owned()))?;
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::Storage { operation: "sync", message: format!("an earlier write or sync of {} failed; reopen the log", self.dir.display()) });
        }
        self.fail_on(file.sync_data().map_err(|err| io_error("sync a segment", path, &err)))
    }
}

/// The segments of one loglet: written by the log's writer, synced by it or its syncer.
pub(crate) struct Segments {
    shared: Arc<Shared>,
    /// The janitor's queue and thread; `None` once closed.
    janitor: Mutex<Option<(SyncSender<Chore>, JoinHandle<()>)>>,
}

impl std::fmt::Debug for Segments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segments").field("dir", &self.shared.dir).finish_non_exhaustive()
    }
}

impl Segments {
    /// Starts the active segment for the records from `next` on (the spare left by the last
    /// open if there is one), recycles or deletes the `old` segments (whose records must be
    /// flushed by now) and starts the janitor, which calls `flush` to make RocksDB's memtables durable
    /// before it deletes a retired segment.
    pub(crate) fn start(dir: &Path, segment_bytes: u64, next: Lsn, old: Vec<PathBuf>, flush: Box<dyn Fn() -> Result<()> + Send>) -> Result<Segments> {
        let path = segment_path(dir, next);
        let (file, salt, capacity) = open_segment(dir, &path, segment_bytes, FIRST_SEGMENT_BYTES.min(segment_bytes))?;
        let unfinished = dir.join(SPARE_UNFINISHED);
        if unfinished.exists() {
            std::fs::remove_file(&unfinished).map_err(|err| io_error("delete an unfinished spare segment", &unfinished, &err))?;
        }
        // An old segment of the next capacity becomes the spare, so that a restart writes no
        // zeros; the others are deleted.
        let wanted = grown(capacity, segment_bytes);
        for old in old.into_iter().filter(|old| *old != path) {
            recycle_or_delete(dir, &old, Some(wanted))?;
        }
        let active = Active { file: Arc::new(file), path, salt, end: SEGMENT_HEADER_BYTES, capacity, written: next - 1 };
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            segment_bytes,
            active: Mutex::new(active),
            synced: AtomicU64::new(next - 1),
            failed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            syncing: Mutex::new(()),
        });
        let (chores, inbox) = sync_channel(CHORES_MAX);
        let janitor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("comb-log-janitor".to_owned())
                .spawn(move || janitor(&shared, &inbox, &*flush))
                .map_err(|err| Error::Internal(format!("cannot start the log's janitor thread: {err}")))?
        };
        let segments = Segments { shared, janitor: Mutex::new(Some((chores, janitor))) };
        // Nothing to do if an old segment became the spare.
        segments.ask(Chore::Prepare(wanted));
        Ok(segments)
    }

    /// Hands the janitor a chore: a retired segment waits for room in its queue; a spare is
    /// done without if the queue is full.
    fn ask(&self, chore: Chore) {
        let Ok(janitor) = self.janitor.lock() else { return };
        let Some((chores, _)) = janitor.as_ref() else { return };
        match chore {
            // A segment the janitor never retires is deleted by the next open instead.
            Chore::Retire(..) => drop(chores.send(chore)),
            Chore::Prepare(_) => {
                if let Err(TrySendError::Disconnected(_)) = chores.try_send(chore) {
                    warn!("the log's janitor stopped: the log's syncs will cost more");
                }
            }
        }
    }

    /// Writes `frame` (from [`encode_frame`]), holding the records up to `last`, at the end of
    /// the active segment, rolling first if it would pass the segments' size (a frame larger
    /// than that gets a segment of its own). Not durable until
    /// a later [`sync`](Self::sync).
    pub(crate) fn write(&self, frame: &mut [u8], last: Lsn) -> Result<()> {
        let first = le_u64(&frame[field::FIRST]);
        let body = frame.len() - HEADER_BYTES;
        if u32::try_from(body).is_err() {
            return Err(Error::Internal(format!("a write of {body} bytes does not fit in one frame")));
        }
        let mut active = self.shared.active()?;
        let retired = if active.end > SEGMENT_HEADER_BYTES && active.end + frame.len() as u64 > active.capacity {
            Some(self.shared.fail_on(self.roll(&mut active, first))?)
        } else {
            None
        };
        seal_frame(frame, active.salt, self.shared.synced.load(Ordering::Acquire));
        let written = active.file.write_all_at(frame, active.end).map_err(|err| io_error("write a segment", &active.path, &err));
        self.shared.fail_on(written)?;
        active.end += frame.len() as u64;
        active.written = last;
        let next_capacity = grown(active.capacity, self.shared.segment_bytes);
        drop(active);
        if let Some((retired, retired_bytes)) = retired {
            // Once segments stop growing, each retired one is recycled as the next spare:
            // written through already, it needs no zeros. (One grown by a frame larger than
            // a segment is not: segments keep their size.)
            if retired_bytes == next_capacity {
                self.ask(Chore::Retire(retired, Some(next_capacity)));
            } else {
                self.ask(Chore::Prepare(next_capacity));
                self.ask(Chore::Retire(retired, None));
            }
        }
        Ok(())
    }

    /// Syncs the active segment and starts the next one at `first`, from the spare if there
    /// is one; returns the retired one's path and size.
    fn roll(&self, active: &mut Active, first: Lsn) -> Result<(PathBuf, u64)> {
        self.shared.sync_active(&active.file, &active.path)?;
        let retired_bytes = active.file.metadata().map_err(|err| io_error("roll a segment", &active.path, &err))?.len();
        self.shared.synced.fetch_max(active.written, Ordering::AcqRel);
        let dir = &self.shared.dir;
        let path = segment_path(dir, first);
        let (file, salt, capacity) = open_segment(dir, &path, self.shared.segment_bytes, grown(active.capacity, self.shared.segment_bytes))?;
        let retired = std::mem::replace(active, Active { file: Arc::new(file), path, salt, end: SEGMENT_HEADER_BYTES, capacity, written: active.written });
        Ok((retired.path, retired_bytes))
    }

    /// Stops the segments after a write that failed beside them (RocksDB's): what the frame
    /// written says may not be what the caller was told.
    pub(crate) fn fail(&self) {
        self.shared.failed.store(true, Ordering::Release);
    }

    /// Makes every frame written so far durable: one fdatasync of the active segment (a roll
    /// synced the segments before it).
    pub(crate) fn sync(&self) -> Result<()> {
        let (file, path, written) = {
            let active = self.shared.active()?;
            (Arc::clone(&active.file), active.path.clone(), active.written)
        };
        self.shared.sync_active(&file, &path)?;
        self.shared.synced.fetch_max(written, Ordering::AcqRel);
        Ok(())
    }

    /// Stops the janitor, after the retirements already given to it (it prepares no more
    /// spares); every later write or sync fails with `Closed`.
    pub(crate) fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        let janitor = self.janitor.lock().ok().and_then(|mut janitor| janitor.take());
        if let Some((chores, thread)) = janitor {
            // Its queue closes first: the thread ends once it has done what was queued.
            drop(chores);
            let _ = thread.join();
        }
    }
}

impl Drop for Segments {
    fn drop(&mut self) {
        self.close();
    }
}

/// The janitor's thread: prepares spare segments and deletes the segments whose records
/// RocksDB has flushed. Its failures cost speed or disk space, never a record: a segment it
/// could not delete is deleted by the next open.
fn janitor(shared: &Shared, chores: &Receiver<Chore>, flush: &dyn Fn() -> Result<()>) {
    while let Ok(chore) = chores.recv() {
        match chore {
            Chore::Prepare(_) if shared.closed.load(Ordering::Acquire) => {}
            Chore::Prepare(bytes) => {
                if let Err(err) = prepare_spare(&shared.dir, bytes) {
                    warn!("the log's janitor could not prepare a spare segment (the log's syncs cost more without): {err}");
                }
            }
            Chore::Retire(path, spare_bytes) => match flush() {
                Ok(()) => {
                    if let Err(err) = recycle_or_delete(&shared.dir, &path, spare_bytes) {
                        warn!("the log's janitor could not delete or recycle the flushed segment {}: {err}", path.display());
                    }
                }
                Err(err) => warn!("the log's janitor could not flush the records of {} (kept until the next open): {err}", path.display()),
            },
        }
    }
}

/// Makes the flushed segment `path` the spare, with a fresh salt, if a spare of `wanted` bytes
/// is wanted, none is ready and the segment has that size; else deletes it. Its old frames stay
/// in it, but carry the old salt: they are never read as frames of the new segment.
fn recycle_or_delete(dir: &Path, path: &Path, wanted: Option<u64>) -> Result<()> {
    let bytes = std::fs::metadata(path).map_err(|err| io_error("recycle a segment", path, &err))?.len();
    if wanted != Some(bytes) || dir.join(SPARE).exists() {
        return std::fs::remove_file(path).map_err(|err| io_error("delete a flushed segment", path, &err));
    }
    let unfinished = dir.join(SPARE_UNFINISHED);
    std::fs::rename(path, &unfinished).map_err(|err| io_error("recycle a segment", path, &err))?;
    let file = OpenOptions::new().write(true).open(&unfinished).map_err(|err| io_error("recycle a segment", &unfinished, &err))?;
    file.write_all_at(&segment_header(new_salt()), 0)
        .and_then(|()| file.sync_data())
        .map_err(|err| io_error("write a recycled segment's header", &unfinished, &err))?;
    std::fs::rename(&unfinished, dir.join(SPARE)).map_err(|err| io_error("finish a spare segment", &unfinished, &err))
}

/// Writes a spare segment of `bytes` zeros and syncs it, unless one is ready. It appears under
/// its name only whole: a crash leaves at most an unfinished one, which the next open deletes.
fn prepare_spare(dir: &Path, bytes: u64) -> Result<()> {
    let spare = dir.join(SPARE);
    if spare.exists() {
        return Ok(());
    }
    let unfinished = dir.join(SPARE_UNFINISHED);
    let file = OpenOptions::new().create(true).truncate(true).write(true).open(&unfinished).map_err(|err| io_error("create a spare segment", &unfinished, &err))?;
    let zeros = vec![0u8; ZERO_CHUNK];
    file.write_all_at(&segment_header(new_salt()), 0).map_err(|err| io_error("write a spare segment's header", &unfinished, &err))?;
    let mut at = SEGMENT_HEADER_BYTES;
    while at < bytes {
        let chunk = &zeros[..ZERO_CHUNK.min((bytes - at) as usize)];
        file.write_all_at(chunk, at).map_err(|err| io_error("zero-fill a spare segment", &unfinished, &err))?;
        // A chunk at a time: the disk never has a whole segment of zeros to write at once
        // ahead of the writer's syncs.
        file.sync_data().map_err(|err| io_error("sync a spare segment", &unfinished, &err))?;
        at += chunk.len() as u64;
    }
    std::fs::rename(&unfinished, &spare).map_err(|err| io_error("finish a spare segment", &spare, &err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::decode_value;
    use bytes::Bytes;

    const SALT: u64 = 0x5eed;

    fn frame(first: Lsn, payloads: &[&[u8]], synced: Lsn, salt: u64) -> Vec<u8> {
        let entries: Vec<Entry> = payloads.iter().map(|p| Entry::new([3], p.to_vec())).collect();
        let mut out = Vec::new();
        encode_frame(first, &entries, &mut out);
        seal_frame(&mut out, salt, synced);
        out
    }

    #[test]
    fn a_record_takes_its_payload_and_its_framing_in_a_frame() {
        for (tags, payload) in [(0usize, 0usize), (1, 5), (64, 1000)] {
            let entry = Entry::new(vec![9; tags], vec![1; payload]);
            let mut out = Vec::new();
            encode_frame(1, &[entry], &mut out);
            assert_eq!((out.len() - HEADER_BYTES) as u64, payload as u64 + crate::options::record_framing_bytes(tags), "{tags} tags, {payload} bytes");
        }
    }

    #[test]
    fn frames_round_trip_and_any_damage_is_seen() {
        let bytes = frame(7, &[b"one", b"", b"three"], 5, SALT);
        let parsed = parse_frame(&bytes, SALT).expect("a whole frame");
        assert_eq!((parsed.first, parsed.synced, parsed.count, parsed.bytes, parsed.last()), (7, 5, 3, bytes.len(), 9));
        let values = parsed.values().unwrap();
        let payloads: Vec<_> = values.iter().enumerate().map(|(i, v)| decode_value(7 + i as Lsn, v).unwrap().payload).collect();
        assert_eq!(payloads, vec![&b"one"[..], b"", b"three"]);
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            assert!(parse_frame(&damaged, SALT).is_none(), "a flipped bit at byte {at} went unseen");
        }
        assert!(parse_frame(&bytes[..bytes.len() - 1], SALT).is_none(), "a frame cut short");
        assert!(parse_frame(&[0; 64], SALT).is_none(), "zeros");
        assert!(parse_frame(&bytes, SALT + 1).is_none(), "a frame of another segment");
    }

    /// Where `bytes`, as a segment file, hold proof that record `lsn` was acknowledged.
    fn proof_in(bytes: &[u8], salt: u64, lsn: Lsn) -> Option<u64> {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        std::fs::write(&path, bytes).unwrap();
        match SegmentFile::open(&path).unwrap().beyond(0, salt, lsn).unwrap() {
            Some(Beyond::Proof(at)) => Some(at),
            _ => None,
        }
    }

    #[test]
    fn the_scan_after_damage_reads_a_window_at_a_time_and_misses_no_position() {
        // A proof at the end of the first window, across its edge, at the start of the next,
        // and further on.
        for at in [SCAN_WINDOW_BYTES - HEADER_BYTES, SCAN_WINDOW_BYTES - 10, SCAN_WINDOW_BYTES - 1, SCAN_WINDOW_BYTES, 2 * SCAN_WINDOW_BYTES + 1] {
            let mut bytes = vec![0u8; at];
            bytes.extend(frame(12, &[b"x"], 10, SALT));
            assert_eq!(proof_in(&bytes, SALT, 10), Some(at as u64), "a proof at byte {at}");
        }
        // From where the frames ended, not from a window's edge.
        let mut bytes = vec![0u8; 3 * SCAN_WINDOW_BYTES];
        let proof = frame(12, &[b"x"], 10, SALT);
        bytes[7..7 + proof.len()].copy_from_slice(&proof);
        bytes[SCAN_WINDOW_BYTES + 5..SCAN_WINDOW_BYTES + 5 + proof.len()].copy_from_slice(&proof);
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        std::fs::write(&path, &bytes).unwrap();
        let mut file = SegmentFile::open(&path).unwrap();
        assert_eq!(file.beyond(8, SALT, 10).unwrap(), Some(Beyond::Proof(SCAN_WINDOW_BYTES as u64 + 5)));
    }

    #[test]
    fn frames_are_read_through_a_window_and_a_large_one_only_once_its_crc_matched() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        // Small frames across a window's edge, then one larger than a window.
        let mut bytes = Vec::new();
        let mut lsn = 1;
        while bytes.len() < SCAN_WINDOW_BYTES + 100 {
            bytes.extend(frame(lsn, &[&[lsn as u8; 1000]], lsn - 1, SALT));
            lsn += 1;
        }
        let large_at = bytes.len() as u64;
        let large = vec![9u8; 2 * SCAN_WINDOW_BYTES];
        bytes.extend(frame(lsn, &[&large], lsn - 1, SALT));
        std::fs::write(&path, &bytes).unwrap();
        let mut file = SegmentFile::open(&path).unwrap();
        let (mut at, mut next) = (0, 1);
        while let Some(frame) = file.frame(at, SALT).unwrap() {
            assert_eq!(frame.first, next);
            next = frame.last() + 1;
            at += frame.bytes as u64;
        }
        assert_eq!((at, next), (bytes.len() as u64, lsn + 1), "every frame read, the large one too");
        assert!(file.frame(large_at, SALT + 1).unwrap().is_none(), "another segment's salt");
        // A damaged large frame is refused by its CRC, read a window at a time.
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let mut file = SegmentFile::open(&path).unwrap();
        assert!(file.frame(large_at, SALT).unwrap().is_none());
        assert!(file.ahead.len() <= SCAN_WINDOW_BYTES, "held {} bytes", file.ahead.len());
    }

    #[test]
    fn a_segment_without_a_header_must_hold_nothing_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        let mut bytes = vec![0u8; 2 * SCAN_WINDOW_BYTES];
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(SegmentFile::open(&path).unwrap().salt().unwrap(), None);
        bytes[SCAN_WINDOW_BYTES + 3] = 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(SegmentFile::open(&path).unwrap().salt(), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn a_later_frame_proves_acknowledgement_only_if_its_sync_covered_the_record() {
        let mut bytes = vec![0u8; 100];
        bytes.extend(frame(12, &[b"x"], 9, SALT));
        assert_eq!(proof_in(&bytes, SALT, 10), None, "synced 9 says nothing of record 10");
        assert_eq!(proof_in(&bytes, SALT, 9), Some(100));
        assert_eq!(proof_in(&bytes, SALT, 12), None, "a frame proves nothing of its own records or later ones");
    }

    #[test]
    fn a_frame_inside_a_payload_proves_nothing() {
        // A record whose payload is a well-formed frame claiming that every record was synced,
        // after a torn frame: only a frame with the segment's own salt is proof.
        let forged = frame(1_000, &[b"forged"], u64::MAX - 1, SALT + 1);
        let mut bytes = vec![0u8; 100];
        bytes.extend(frame(20, &[&forged], 9, SALT));
        assert_eq!(proof_in(&bytes, SALT, 10), None);
        let forged_with_the_salt = frame(1_000, &[b"forged"], 999, SALT);
        let mut bytes = vec![0u8; 100];
        bytes.extend(frame(20, &[&forged_with_the_salt], 9, SALT));
        assert!(proof_in(&bytes, SALT, 10).is_some(), "the check above would fail for want of the salt alone");
    }

    #[test]
    fn a_recycled_segment_ends_where_its_own_frames_end() {
        let dir = tempfile::tempdir().unwrap();
        // A recycled segment: a new header and two frames, then a frame of its former life
        // (records 3 and on, "synced" far beyond) that the new frames did not overwrite.
        let mut bytes = segment_header(SALT).to_vec();
        bytes.extend(frame(1, &[b"a"], 0, SALT));
        bytes.extend(frame(2, &[b"b"], 1, SALT));
        bytes.extend(frame(3, &[b"stale"], 900, SALT - 1));
        std::fs::write(segment_path(dir.path(), 1), &bytes).unwrap();
        let mut applied = Vec::new();
        let recovered = recover(dir.path(), 1, |first, values| {
            applied.extend((first..).zip(values.iter().map(|v| decode_value(first, v).unwrap().payload)));
            Ok(())
        })
        .unwrap();
        assert_eq!(recovered.last, 2);
        assert_eq!(applied, vec![(1, Bytes::from_static(b"a")), (2, Bytes::from_static(b"b"))]);
    }

    /// Damage to a frame whose records are stored already (below where recovery starts)
    /// does not hide the whole frames after it; damage to a record recovery needs is an
    /// error where a later frame proves the record acknowledged, as before.
    #[test]
    fn damage_before_the_records_wanted_does_not_end_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = segment_header(SALT).to_vec();
        let mut second = 0;
        for (lsn, payload, synced) in [(1, b"a", 0), (2, b"b", 1), (3, b"c", 2), (4, b"d", 2), (5, b"e", 2)] {
            if lsn == 2 {
                second = bytes.len();
            }
            bytes.extend(frame(lsn, &[payload], synced, SALT));
        }
        bytes[second + HEADER_BYTES + 2] ^= 0x40;
        bytes.extend([0u8; 64]);
        std::fs::write(segment_path(dir.path(), 1), &bytes).unwrap();
        let recover_from = |from: Lsn| {
            let mut applied = Vec::new();
            let recovered = recover(dir.path(), from, |first, values| {
                applied.extend((first..).zip(values.iter().map(|v| decode_value(first, v).unwrap().payload)));
                Ok(())
            });
            recovered.map(|r| (r.last, applied))
        };
        let (last, applied) = recover_from(3).unwrap();
        assert_eq!(last, 5);
        assert_eq!(applied, vec![(3, Bytes::from_static(b"c")), (4, Bytes::from_static(b"d")), (5, Bytes::from_static(b"e"))]);
        // Record 2 itself is wanted, and frames 3 to 5 say a sync had covered it.
        assert!(matches!(recover_from(2), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn a_spare_too_large_or_without_its_header_is_deleted_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let spare = dir.path().join(SPARE);
        let target = segment_path(dir.path(), 5);
        let mut bytes = segment_header(SALT).to_vec();
        bytes.resize(128 << 10, 0);
        std::fs::write(&spare, &bytes).unwrap();
        assert!(take_spare(dir.path(), &target, 64 << 10).unwrap().is_none(), "larger than the segments now");
        assert!(!spare.exists() && !target.exists());

        std::fs::write(&spare, &bytes).unwrap();
        let (_, salt, capacity) = take_spare(dir.path(), &target, 1 << 20).unwrap().expect("a sound spare");
        assert_eq!((salt, capacity), (SALT, 128 << 10));
        assert!(!spare.exists() && target.exists());

        bytes[3] ^= 0xff;
        std::fs::write(&spare, &bytes).unwrap();
        assert!(take_spare(dir.path(), &target, 1 << 20).unwrap().is_none(), "a damaged header");
        assert!(!spare.exists());
    }

    #[test]
    fn an_open_recycles_an_old_segment_of_the_next_size_as_its_spare() {
        let dir = tempfile::tempdir().unwrap();
        let wanted = 2 * FIRST_SEGMENT_BYTES;
        let mut old = segment_header(SALT).to_vec();
        old.extend(frame(1, &[b"flushed already"], 0, SALT));
        old.resize(wanted as usize, 0);
        let (fits, other) = (segment_path(dir.path(), 1), segment_path(dir.path(), 2));
        std::fs::write(&fits, &old).unwrap();
        std::fs::write(&other, &old[..1000]).unwrap();
        let segments = Segments::start(dir.path(), 64 << 20, 3, vec![fits.clone(), other.clone()], Box::new(|| Ok(()))).unwrap();
        segments.close();
        assert!(!fits.exists() && !other.exists(), "both old segments are gone");
        let spare = std::fs::read(dir.path().join(SPARE)).unwrap();
        assert_eq!(spare.len() as u64, wanted, "the one of the next size is the spare");
        assert_eq!(spare[SEGMENT_HEADER_BYTES as usize..], old[SEGMENT_HEADER_BYTES as usize..], "the old segment itself, not new zeros");
        let salt = read_salt(&spare, Path::new("spare")).unwrap().unwrap();
        assert_ne!(salt, SALT, "with a new salt, so that its old frame is not read as a frame of it");
        assert!(parse_frame(&spare[SEGMENT_HEADER_BYTES as usize..], salt).is_none());
    }

    #[test]
    fn a_segment_header_is_its_salt_or_nothing_or_damage() {
        let path = Path::new("segments/1.seg");
        let mut bytes = segment_header(SALT).to_vec();
        bytes.extend([0; 64]);
        assert_eq!(read_salt(&bytes, path).unwrap(), Some(SALT));
        assert_eq!(read_salt(&[0; 80], path).unwrap(), None, "a header never written: an empty segment");
        assert_eq!(read_salt(&[], path).unwrap(), None);
        bytes[0] ^= 1;
        assert!(matches!(read_salt(&bytes, path), Err(Error::Corrupt { .. })));
    }
}
