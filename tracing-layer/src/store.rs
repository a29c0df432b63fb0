//! The trace store: Parquet files under `<data>/traces/<table>/`, the in-memory tail not yet
//! written, and the checkpoint that ties them to the log.
//!
//! ```text
//!  traces/format                          the store's format version (FORMAT_VERSION)
//!  traces/checkpoint                      the last LSN whose rows are all in files
//!  traces/<table>/<from>-<to>-<written_us>.parquet
//! ```
//!
//! A flush writes the tail of every table for the LSNs `from ..= to` (each file to a
//! temporary name, synced, renamed, the folder synced), then the checkpoint (the same way).
//! So after a crash every file whose `from` is at most the checkpoint is whole and counted,
//! and a file above it is from a flush the checkpoint never confirmed: opening removes it
//! and the feed reads those records again. No row is lost, none is kept twice.
//!
//! A merge writes the rows of several consecutive files of one table as one file (named for
//! the records from the first one's `from` to the last one's `to`, the same way), then swaps
//! it for them in the listing; they are removed once no query can still be reading them
//! (queries pin the listing they read). A crash before they are removed leaves them beside
//! the file that holds their rows: opening removes a file whose records lie within another
//! file's. So a table has few large files instead of one per flush (about 60,000 a week at
//! the default `flush-age`), and no row is in two of them.
//!
//! Every method but the in-memory ones does file I/O and is called off the async workers.

use std::fs::{self, File};
use std::io::Write as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use comb_log::Lsn;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};
use crate::tables::{Merged, Rows, TABLES, merge_parquet, write_parquet};

const CHECKPOINT: &str = "checkpoint";
const FORMAT: &str = "format";

/// The trace store's format that this build writes and reads: its folders, its files' names
/// and the tables' columns, with the older columns it still reads (see `tables`). A store of
/// another version was written by another build, whose files this one could misread or,
/// at open, remove: it is refused, never touched. Version 1 is also the store from before the
/// version was written down (no `format` file): every file of it reads as version 1.
const FORMAT_VERSION: u64 = 1;

/// One Parquet file of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TraceFile {
    pub(crate) path: PathBuf,
    pub(crate) from: Lsn,
    pub(crate) to: Lsn,
    /// When it was written, microseconds since the epoch (retention counts from it). A merged
    /// file has the time of its newest input.
    pub(crate) written_us: u64,
    /// Its size.
    pub(crate) bytes: u64,
    /// Whether merges may take it: not once a merge found it unlike this build's files (an
    /// older build's) or could not read it.
    pub(crate) mergeable: bool,
    /// Whether a merge is reading it: expiry leaves it listed until the merge ends.
    pub(crate) merging: bool,
}

impl TraceFile {
    fn name(from: Lsn, to: Lsn, written_us: u64) -> String {
        format!("{from:020}-{to:020}-{written_us}.parquet")
    }

    fn parse(path: PathBuf) -> Option<TraceFile> {
        let stem = path.file_name()?.to_str()?.strip_suffix(".parquet")?;
        let mut parts = stem.split('-');
        let from = parts.next()?.parse().ok()?;
        let to = parts.next()?.parse().ok()?;
        let written_us = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some(TraceFile { path, from, to, written_us, bytes: 0, mergeable: true, merging: false })
    }
}

/// Which files the store merges: see [`TraceStore::merge_plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MergePolicy {
    /// Files merged at once, all of one size tier (0: never merge).
    pub(crate) files: usize,
    /// A merged file is at most this large; a file this large is never merged again.
    pub(crate) bytes_max: u64,
    /// Only files written within the same stretch of this length are merged together, so
    /// that a merged file holds no row written more than this before its own time, which
    /// retention counts from.
    pub(crate) span: Duration,
}

/// Leftover merges take files under `merge-bytes-max` divided by this only.
const LEFTOVER_BYTES_DIVISOR: u64 = 8;

/// Files under this size are the smallest tier; each tier above holds files up to
/// [`MergePolicy::files`] times as large as the one below. Small, so that a merged file
/// soon leaves the tier of the files flushed after it: merged with them again and again,
/// it would be written again at every merge.
const MERGE_TIER_BYTES: u64 = 64 << 10;

impl MergePolicy {
    /// The size tier of a file of `bytes`: merging `files` of one tier makes about one of
    /// the next, so that a row is written again about once per tier, not once per merge.
    fn tier(&self, bytes: u64) -> u32 {
        let (mut tier, mut bound) = (0, MERGE_TIER_BYTES);
        while bytes >= bound && bound < u64::MAX / 2 {
            tier += 1;
            bound = bound.saturating_mul(self.files.max(2) as u64);
        }
        tier
    }

    /// The stretch of `span` a file written at `written_us` belongs to.
    fn stretch(&self, written_us: u64) -> u64 {
        written_us / u64::try_from(self.span.as_micros()).unwrap_or(u64::MAX).max(1)
    }

    /// Whether `file` may be merged at all.
    fn open_to_merge(&self, file: &TraceFile) -> bool {
        file.mergeable && !file.merging && file.bytes < self.bytes_max
    }

    /// Whether `run` (`files` consecutive files of one table) is one merge: of one tier and
    /// one stretch.
    fn takes(&self, run: &[TraceFile]) -> bool {
        let (tier, stretch) = (self.tier(run[0].bytes), self.stretch(run[0].written_us));
        run.iter().all(|f| self.open_to_merge(f) && self.tier(f.bytes) == tier && self.stretch(f.written_us) == stretch) && run.iter().map(|f| f.bytes).sum::<u64>() <= self.bytes_max
    }

    /// How many of the first files of `files` (2 to `self.files` of them, or 0) make one
    /// merge within a stretch that has passed (before `now_stretch`), whatever their tiers:
    /// the files a stretch leaves, fewer than `self.files` of a tier, merged once it is over.
    /// Files of an eighth of `bytes_max` or more stay as they are: large enough alone, and
    /// not worth writing again to take in a few small ones.
    fn takes_leftovers(&self, files: &[TraceFile], now_stretch: u64) -> usize {
        let stretch = self.stretch(files[0].written_us);
        if stretch >= now_stretch {
            return 0;
        }
        let mut bytes = 0;
        let taken = files
            .iter()
            .take(self.files)
            .take_while(|f| {
                bytes += f.bytes;
                self.open_to_merge(f) && f.bytes < self.bytes_max / LEFTOVER_BYTES_DIVISOR && self.stretch(f.written_us) == stretch && bytes <= self.bytes_max
            })
            .count();
        if taken >= 2 { taken } else { 0 }
    }
}

/// One merge to make: the files of one table it merges, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MergePlan {
    pub(crate) table: usize,
    pub(crate) inputs: Vec<TraceFile>,
}

/// What became of a merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MergeOutcome {
    /// The merged file replaced its inputs in the listing.
    Merged { rows: u64, bytes: u64 },
    /// Inputs cannot be merged (an older build's files, or one that could not be read): the
    /// files stay as they are, and those are left out of later merges until a restart.
    Skipped { paths: Vec<PathBuf>, reason: String },
    /// The store is closing: the merge stopped, and its files stay as they are.
    Cancelled,
}

/// What a query sees of one table: its files and its tail, taken together.
#[derive(Debug, Clone, Default)]
pub(crate) struct TableSnapshot {
    pub(crate) files: Vec<PathBuf>,
    pub(crate) tail: Vec<RecordBatch>,
}

#[derive(Debug, Default)]
struct State {
    files: [Vec<TraceFile>; 4],
    tail: [Vec<RecordBatch>; 4],
    tail_bytes: usize,
    /// Every record up to it has its rows in files.
    checkpoint: Lsn,
    /// Every record up to it has its rows in files or in the tail.
    consumed: Lsn,
    /// When the oldest unflushed record was consumed.
    dirty_since: Option<Instant>,
    /// The listing's version: one more each time files leave it (expired or merged).
    listing: u64,
    /// Files taken out of the listing, with the version they left it at: each is removed
    /// once no query holds a snapshot of an earlier version.
    doomed: Vec<(TraceFile, u64)>,
    /// Merges made since the store was opened.
    merges: u64,
}

impl State {
    /// Takes note that `files` left the listing, at a new version of it: they are removed
    /// once no query holds a snapshot of an earlier one.
    fn unlist(&mut self, files: impl IntoIterator<Item = TraceFile>) {
        self.listing += 1;
        let listing = self.listing;
        self.doomed.extend(files.into_iter().map(|f| (f, listing)));
    }
}

/// How many snapshots queries hold, by the listing's version they were taken at.
#[derive(Debug, Default)]
struct Pins(Mutex<BTreeMap<u64, usize>>);

impl Pins {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, usize>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Keeps the files of a snapshot on the disk while held: a query holds it until it ends.
#[derive(Debug)]
pub(crate) struct Pin {
    pins: Arc<Pins>,
    listing: u64,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut pins = self.pins.lock();
        if let Some(count) = pins.get_mut(&self.listing) {
            *count -= 1;
            if *count == 0 {
                pins.remove(&self.listing);
            }
        }
    }
}

/// The files and the tail of every trace table.
#[derive(Debug)]
pub(crate) struct TraceStore {
    dir: PathBuf,
    state: Mutex<State>,
    pins: Arc<Pins>,
    /// Set at close: a merge under way stops at its next row group.
    closing: std::sync::atomic::AtomicBool,
    /// How many files each table lists, sent at each change of the listing.
    counts: tokio::sync::watch::Sender<[usize; 4]>,
}

fn io_error(operation: &'static str, path: &Path, err: &std::io::Error) -> Error {
    Error::Io { operation, path: path.display().to_string(), message: err.to_string() }
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Writes `contents` to `path` through a synced temporary file and a rename, then syncs
/// the folder: after a crash the file is either the old one or the new one, whole.
/// A flush's failure before its checkpoint: the flush fails whole and may be tried again
/// (the tail is kept, and the next try names its files anew), so the files it wrote go, or
/// they would stay out of the listing until the next start removed them.
fn unwritten(err: Error, written: &[Option<TraceFile>]) -> Error {
    for file in written.iter().flatten() {
        let _ = fs::remove_file(&file.path);
    }
    err
}

fn write_durably(path: &Path, write: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let written = File::create(&tmp).map_err(|e| io_error("create", &tmp, &e)).and_then(|mut file| {
        write(&mut file)?;
        file.sync_all().map_err(|e| io_error("sync", &tmp, &e))
    });
    if let Err(err) = written {
        // A full disk, say: what was written of it goes (opening would remove it anyway).
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    if let Err(err) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_error("rename", path, &err));
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Creates `dir` if it is missing, and makes its entry in its parent durable.
fn create_dir_durably(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| io_error("create", dir, &e))?;
    sync_dir(dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
}

fn entry_bytes(path: &Path) -> Result<u64> {
    fs::metadata(path).map(|m| m.len()).map_err(|e| io_error("read the size of", path, &e))
}

/// Removes the file at `path` and syncs its folder.
fn remove_durably(path: &Path) -> Result<()> {
    fs::remove_file(path).map_err(|e| io_error("remove", path, &e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error("sync the folder", dir, &e))
}

/// Refuses a store of another format than [`FORMAT_VERSION`]; writes the version into a store
/// that has none (new, or from before the version was written down), before anything else
/// in it is touched.
fn check_format(dir: &Path) -> Result<()> {
    let path = dir.join(FORMAT);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let found = text.trim().parse::<u64>().map_err(|_| Error::Corrupt { path: path.display().to_string(), detail: format!("{:?} is not a format version (this build writes {FORMAT_VERSION}: write that into it if this build made the store, or move the folder aside)", text.trim()) })?;
            if found != FORMAT_VERSION {
                return Err(Error::UnsupportedFormat { path: dir.display().to_string(), found, expected: FORMAT_VERSION });
            }
            Ok(())
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            write_durably(&path, |file| file.write_all(format!("{FORMAT_VERSION}\n").as_bytes()).map_err(|e| io_error("write", &path, &e)))
        }
        Err(err) => Err(io_error("read", &path, &err)),
    }
}

impl TraceStore {
    /// Opens (or creates) the store in `dir`: checks its format, reads the checkpoint,
    /// removes the files of a flush it does not confirm and any temporary file, and lists the
    /// rest.
    pub(crate) fn open(dir: &Path) -> Result<TraceStore> {
        create_dir_durably(dir)?;
        check_format(dir)?;
        let checkpoint_path = dir.join(CHECKPOINT);
        let checkpoint = match fs::read_to_string(&checkpoint_path) {
            Ok(text) => text.trim().parse::<Lsn>().map_err(|e| Error::Corrupt { path: checkpoint_path.display().to_string(), detail: e.to_string() })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => 0,
            Err(err) => return Err(io_error("read", &checkpoint_path, &err)),
        };
        let _ = fs::remove_file(checkpoint_path.with_extension("tmp"));
        let mut state = State { checkpoint, consumed: checkpoint, ..State::default() };
        for (table, files) in TABLES.iter().zip(state.files.iter_mut()) {
            let folder = dir.join(table);
            create_dir_durably(&folder)?;
            let mut removed = false;
            for entry in fs::read_dir(&folder).map_err(|e| io_error("list", &folder, &e))? {
                let path = entry.map_err(|e| io_error("list", &folder, &e))?.path();
                match TraceFile::parse(path.clone()) {
                    Some(mut file) if file.to <= checkpoint => {
                        file.bytes = entry_bytes(&path)?;
                        files.push(file);
                    }
                    // A temporary file, or a flush the checkpoint does not confirm.
                    _ if path.extension().is_some_and(|e| e == "tmp" || e == "parquet") => {
                        fs::remove_file(&path).map_err(|e| io_error("remove", &path, &e))?;
                        removed = true;
                    }
                    _ => {}
                }
            }
            // A merge's inputs, left by a crash beside the file that holds their rows. Each
            // file is whole (written under a temporary name, then renamed), the merged one too.
            files.sort_by_key(|f| (f.from, std::cmp::Reverse(f.to)));
            let mut kept: Vec<TraceFile> = Vec::with_capacity(files.len());
            for file in files.drain(..) {
                match kept.last() {
                    Some(merged) if file.to <= merged.to => {
                        fs::remove_file(&file.path).map_err(|e| io_error("remove", &file.path, &e))?;
                        removed = true;
                    }
                    Some(before) if file.from <= before.to => {
                        return Err(Error::Corrupt {
                            path: file.path.display().to_string(),
                            detail: format!("its records overlap those of {} (each flush covers the records after the one before, and a merge all the records of the files it merged)", before.path.display()),
                        });
                    }
                    _ => kept.push(file),
                }
            }
            *files = kept;
            // Durably gone: a removed file that came back after a power loss, once the
            // checkpoint has passed it, would be taken for a confirmed flush.
            if removed {
                sync_dir(&folder)?;
            }
        }
        let counts = tokio::sync::watch::Sender::new(std::array::from_fn(|t| state.files[t].len()));
        Ok(TraceStore { dir: dir.to_owned(), state: Mutex::new(state), pins: Arc::default(), closing: std::sync::atomic::AtomicBool::new(false), counts })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The last LSN whose rows are all in files: the feed resumes after it.
    pub(crate) fn checkpoint(&self) -> Lsn {
        self.lock().checkpoint
    }

    /// Adds the rows of the records up to `through` to the tail.
    pub(crate) fn append(&self, rows: Rows, through: Lsn) -> Result<()> {
        let batches = rows.into_batches().map_err(|e| Error::Internal(format!("trace rows do not fit their schema: {e}")))?;
        let added: usize = batches.iter().flatten().map(RecordBatch::get_array_memory_size).sum();
        let mut state = self.lock();
        for (tail, batch) in state.tail.iter_mut().zip(batches) {
            tail.extend(batch);
        }
        state.tail_bytes += added;
        if through > state.consumed {
            state.consumed = through;
            state.dirty_since.get_or_insert_with(Instant::now);
        }
        Ok(())
    }

    /// Bytes held in the tail.
    pub(crate) fn tail_bytes(&self) -> usize {
        self.lock().tail_bytes
    }

    /// Whether consumed records have waited in the tail for at least `age`.
    pub(crate) fn is_older_than(&self, age: Duration) -> bool {
        self.lock().dirty_since.is_some_and(|since| since.elapsed() >= age)
    }

    /// Writes the tail to Parquet files and moves the checkpoint to what was consumed.
    /// Called by the feed only (one flush at a time, nothing appended meanwhile).
    pub(crate) fn flush(&self) -> Result<Lsn> {
        let (from, to, tails) = {
            let state = self.lock();
            (state.checkpoint + 1, state.consumed, state.tail.clone())
        };
        if to < from {
            return Ok(to);
        }
        let written_us = now_us();
        let mut written: [Option<TraceFile>; 4] = Default::default();
        for (table, batches) in tails.iter().enumerate() {
            if batches.is_empty() {
                continue;
            }
            let path = self.dir.join(TABLES[table]).join(TraceFile::name(from, to, written_us));
            let file = write_durably(&path, |file| write_parquet(file, table, batches)).and_then(|()| entry_bytes(&path));
            match file {
                Ok(bytes) => written[table] = Some(TraceFile { path, from, to, written_us, bytes, mergeable: true, merging: false }),
                Err(err) => {
                    let _ = fs::remove_file(&path);
                    return Err(unwritten(err, &written));
                }
            }
        }
        let checkpoint = self.dir.join(CHECKPOINT);
        if let Err(err) = write_durably(&checkpoint, |file| file.write_all(format!("{to}\n").as_bytes()).map_err(|e| io_error("write", &checkpoint, &e))) {
            // Renamed in but not synced, the checkpoint may confirm the files after a crash:
            // then they stay (the next start keeps one of two files of the same records).
            let confirmed = fs::read_to_string(&checkpoint).map_or(true, |text| text.trim() == to.to_string());
            return Err(if confirmed { err } else { unwritten(err, &written) });
        }
        let mut guard = self.lock();
        let state = &mut *guard;
        for ((files, tail), file) in state.files.iter_mut().zip(state.tail.iter_mut()).zip(written) {
            files.extend(file);
            tail.clear();
        }
        self.counted(state);
        state.tail_bytes = 0;
        state.checkpoint = to;
        state.dirty_since = None;
        Ok(to)
    }

    /// Takes the files written longer than `retention` ago out of the listing, then removes
    /// what [`TraceStore::remove_unread`] does. Returns how many files it removed.
    pub(crate) fn expire(&self, retention: Option<Duration>) -> usize {
        let horizon = retention.map_or(0, |retention| now_us().saturating_sub(retention.as_micros() as u64));
        {
            let mut state = self.lock();
            // A merge's inputs stay listed until it swaps them for the file it made.
            let expired: Vec<TraceFile> = state.files.iter_mut().flat_map(|files| files.extract_if(.., |f| f.written_us < horizon && !f.merging)).collect();
            if !expired.is_empty() {
                state.unlist(expired);
                self.counted(&state);
            }
        }
        self.remove_unread()
    }

    /// Removes the files taken out of the listing (expired or merged) that no query can read
    /// any more: none holds a snapshot taken before they left it. Returns how many it removed.
    /// A file that cannot be removed is tried again at the next call; the error is logged,
    /// and the traces go on.
    pub(crate) fn remove_unread(&self) -> usize {
        let unread = {
            let mut state = self.lock();
            // A snapshot of version v lists the files that left at a later version.
            let oldest = self.pins.lock().keys().next().copied();
            state.doomed.extract_if(.., |(_, left)| oldest.is_none_or(|oldest| oldest >= *left)).collect::<Vec<_>>()
        };
        let (mut removed, mut kept) = (0, Vec::new());
        for (file, left) in unread {
            match fs::remove_file(&file.path) {
                Ok(()) => removed += 1,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => removed += 1,
                Err(err) => {
                    tracing::warn!(error = %io_error("remove", &file.path, &err), "a trace file out of the listing could not be removed; the next expiry tries again");
                    kept.push((file, left));
                }
            }
        }
        self.lock().doomed.extend(kept);
        removed
    }

    /// The oldest merge `policy` makes of the files listed now, if any: `policy.files`
    /// consecutive files of one table, of one size tier, written in one `policy.span`; or, in
    /// a stretch of `policy.span` that has passed, 2 or more of its files whatever their
    /// tiers. Its files are marked as merging (expiry leaves them listed) until
    /// [`TraceStore::merge`] ends.
    pub(crate) fn merge_plan(&self, policy: &MergePolicy) -> Option<MergePlan> {
        if policy.files < 2 {
            return None;
        }
        let now_stretch = policy.stretch(now_us());
        let mut state = self.lock();
        let (table, at, taken) = state.files.iter().enumerate().find_map(|(table, files)| {
            let of_a_tier = || files.windows(policy.files).position(|run| policy.takes(run)).map(|at| (at, policy.files));
            let leftovers = || (0..files.len()).map(|at| (at, policy.takes_leftovers(&files[at..], now_stretch))).find(|(_, taken)| *taken > 0);
            of_a_tier().or_else(leftovers).map(|(at, taken)| (table, at, taken))
        })?;
        let inputs = &mut state.files[table][at..at + taken];
        inputs.iter_mut().for_each(|f| f.merging = true);
        Some(MergePlan { table, inputs: inputs.to_vec() })
    }

    /// Tells a merge under way to stop at its next row group (the store is closing).
    pub(crate) fn cancel_merges(&self) {
        self.closing.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Ends `plan`'s hold on its files, and leaves `unmergeable` ones out of later merges.
    fn release(&self, plan: &MergePlan, unmergeable: &[PathBuf]) {
        let mut state = self.lock();
        for file in state.files[plan.table].iter_mut().filter(|f| plan.inputs.iter().any(|i| i.path == f.path)) {
            file.merging = false;
            file.mergeable &= !unmergeable.contains(&file.path);
        }
    }

    /// Makes `plan` (from [`TraceStore::merge_plan`]): writes its inputs' rows as one file,
    /// then swaps it for them in the listing; they are removed once no query reads them (see
    /// [`TraceStore::remove_unread`]). Called by one merge at a time; flushes and expiries
    /// may run meanwhile (expiry leaves the inputs listed). An error leaves the inputs listed
    /// and whole, and no merged file on the disk unless its removal failed too, in which
    /// case the inputs are left out of later merges (opening removes them for it, whole). A
    /// panic (a bug, or a damaged file the Parquet reader does not survive) is an error, and
    /// leaves the inputs out of later merges.
    pub(crate) fn merge(&self, plan: &MergePlan) -> Result<MergeOutcome> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.merge_listed(plan))).unwrap_or_else(|panic| {
            let all: Vec<PathBuf> = plan.inputs.iter().map(|f| f.path.clone()).collect();
            if let Some((path, _)) = self.merged_name(plan) {
                let _ = fs::remove_file(path.with_extension("tmp"));
            }
            self.release(plan, &all);
            let message = panic.downcast_ref::<&str>().map(|s| (*s).to_owned()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
            Err(Error::Internal(format!("a merge of {} files panicked: {message}", all.len())))
        })
    }

    /// The merged file's path and time, for a plan of two files or more.
    fn merged_name(&self, plan: &MergePlan) -> Option<(PathBuf, u64)> {
        let (first, last) = (plan.inputs.first()?, plan.inputs.last()?);
        let written_us = plan.inputs.iter().map(|f| f.written_us).max()?;
        (plan.inputs.len() > 1).then(|| (self.dir.join(TABLES[plan.table]).join(TraceFile::name(first.from, last.to, written_us)), written_us))
    }

    fn merge_listed(&self, plan: &MergePlan) -> Result<MergeOutcome> {
        let (Some((path, written_us)), Some(first), Some(last)) = (self.merged_name(plan), plan.inputs.first(), plan.inputs.last()) else {
            self.release(plan, &[]);
            return Err(Error::Internal(format!("a merge of {} files", plan.inputs.len())));
        };
        let paths: Vec<PathBuf> = plan.inputs.iter().map(|f| f.path.clone()).collect();
        // Written under a temporary name and published only when whole and alike: a merged
        // file, once named, is the one its inputs are removed for at the next open.
        let tmp = path.with_extension("tmp");
        let closing = || self.closing.load(std::sync::atomic::Ordering::Acquire);
        let written = File::create(&tmp).map_err(|e| io_error("create", &tmp, &e)).and_then(|mut file| {
            #[cfg(test)]
            if tests::PANIC_IN_MERGE.with(|panic| panic.replace(false)) {
                panic!("on purpose");
            }
            let merged = merge_parquet(&mut file, plan.table, &paths, &closing)?;
            let bytes = match merged {
                Merged::Written { .. } => {
                    file.sync_all().map_err(|e| io_error("sync", &tmp, &e))?;
                    file.metadata().map_err(|e| io_error("read the size of", &tmp, &e))?.len()
                }
                _ => 0,
            };
            Ok((merged, bytes))
        });
        let (rows, bytes) = match written {
            Ok((Merged::Written { rows }, bytes)) => (rows, bytes),
            failed => {
                let _ = fs::remove_file(&tmp);
                let (unmergeable, outcome) = match failed {
                    Ok((Merged::Unlike { inputs }, _)) => {
                        let paths: Vec<PathBuf> = inputs.into_iter().map(|i| paths[i].clone()).collect();
                        (paths.clone(), Ok(MergeOutcome::Skipped { paths, reason: "other columns than this build writes (an older build's files)".to_owned() }))
                    }
                    Ok(_) => (Vec::new(), Ok(MergeOutcome::Cancelled)),
                    Err(Error::Corrupt { path, detail }) => {
                        // Named by its display: matched so, even when that is lossy.
                        let named: Vec<PathBuf> = paths.iter().filter(|p| p.display().to_string() == path).cloned().collect();
                        let named = if named.is_empty() { paths } else { named };
                        (named.clone(), Ok(MergeOutcome::Skipped { paths: named, reason: format!("it cannot be read: {detail}") }))
                    }
                    Err(err) => (Vec::new(), Err(err)),
                };
                self.release(plan, &unmergeable);
                return outcome;
            }
        };
        if closing() {
            let _ = fs::remove_file(&tmp);
            self.release(plan, &[]);
            return Ok(MergeOutcome::Cancelled);
        }
        if let Err(err) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            self.release(plan, &[]);
            return Err(io_error("rename", &path, &err));
        }
        // Named, but perhaps not durably: its inputs stay until it is.
        if let Err(err) = sync_dir(path.parent().unwrap_or(Path::new("."))) {
            let removed = remove_durably(&path);
            self.release(plan, if removed.is_ok() { &[] } else { &paths });
            return Err(err);
        }
        let mut state = self.lock();
        let files = &mut state.files[plan.table];
        let at = files.iter().position(|f| f.path == first.path).filter(|at| files.get(*at..*at + paths.len()).is_some_and(|run| run.iter().map(|f| &f.path).eq(paths.iter())));
        let Some(at) = at else {
            // Nothing else takes a merging file out of the listing.
            drop(state);
            let removed = remove_durably(&path);
            self.release(plan, if removed.is_ok() { &[] } else { &paths });
            return Err(Error::Internal(format!("the files merged into {} left the listing during the merge", path.display())));
        };
        let inputs: Vec<TraceFile> = files.splice(at..at + paths.len(), [TraceFile { path, from: first.from, to: last.to, written_us, bytes, mergeable: true, merging: false }]).collect();
        state.unlist(inputs);
        state.merges += 1;
        self.counted(&state);
        drop(state);
        self.remove_unread();
        Ok(MergeOutcome::Merged { rows, bytes })
    }

    /// The files and tail of every table, as of one instant, and the pin that keeps those
    /// files on the disk while the query that reads them holds it.
    pub(crate) fn snapshot(&self) -> ([TableSnapshot; 4], Pin) {
        let state = self.lock();
        *self.pins.lock().entry(state.listing).or_default() += 1;
        let pin = Pin { pins: Arc::clone(&self.pins), listing: state.listing };
        (std::array::from_fn(|t| TableSnapshot { files: state.files[t].iter().map(|f| f.path.clone()).collect(), tail: state.tail[t].clone() }), pin)
    }

    /// How many files each table lists.
    #[cfg(test)]
    pub(crate) fn file_counts(&self) -> [usize; 4] {
        *self.counts.borrow()
    }

    /// The files listed now, all tables together, and how many merges replaced their inputs
    /// in the listing since the store was opened: both as of one instant.
    pub(crate) fn files_and_merges(&self) -> (usize, u64) {
        let state = self.lock();
        (state.files.iter().map(Vec::len).sum(), state.merges)
    }

    /// How many files each table lists, as it changes.
    pub(crate) fn watch_file_counts(&self) -> tokio::sync::watch::Receiver<[usize; 4]> {
        self.counts.subscribe()
    }

    /// Sends the counts of `state`'s files, changed under its lock.
    fn counted(&self, state: &State) {
        self.counts.send_replace(std::array::from_fn(|t| state.files[t].len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::InvocationRow;

    thread_local! {
        /// Makes the next merge on this thread panic once its temporary file exists.
        pub(super) static PANIC_IN_MERGE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    fn rows(function: &str) -> Rows {
        let mut rows = Rows::default();
        rows.push_invocation(InvocationRow {
            lsn: Some(1),
            workflow_id: None,
            step: None,
            function,
            partition: Some(0),
            start_us: 1,
            end_us: 2,
            error: None,
            recorded: false,
            replayed: false,
            read_only: true,
        });
        rows
    }

    #[test]
    fn an_unconfirmed_flush_is_removed_and_a_confirmed_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = TraceStore::open(dir.path()).unwrap();
        store.append(rows("a"), 3).unwrap();
        assert_eq!(store.flush().unwrap(), 3);
        store.append(rows("b"), 7).unwrap();
        assert_eq!(store.snapshot().0[0].tail.len(), 1);
        // A flush that wrote its file and crashed before the checkpoint.
        let orphan = dir.path().join(TABLES[0]).join(TraceFile::name(4, 7, 9));
        fs::copy(&store.snapshot().0[0].files[0], &orphan).unwrap();
        fs::write(dir.path().join(TABLES[1]).join("x.tmp"), b"half").unwrap();
        drop(store);

        let store = TraceStore::open(dir.path()).unwrap();
        assert_eq!(store.checkpoint(), 3);
        assert_eq!(store.file_counts(), [1, 0, 0, 0]);
        assert!(!orphan.exists() && !dir.path().join(TABLES[1]).join("x.tmp").exists());
        assert_eq!(store.snapshot().0[0].tail.len(), 0, "the tail is not durable: the feed reads it again");
        let confirmed = store.snapshot().0[0].files[0].clone();
        drop(store);

        // A file reaching past the checkpoint is unconfirmed too, wherever it starts.
        let straddling = dir.path().join(TABLES[0]).join(TraceFile::name(2, 5, 9));
        fs::copy(&confirmed, &straddling).unwrap();
        let store = TraceStore::open(dir.path()).unwrap();
        assert_eq!(store.file_counts(), [1, 0, 0, 0]);
        assert!(!straddling.exists());
        drop(store);

        // A file within another's records is a merge's input, left by a crash beside the
        // merged file: removed, not read twice.
        let merged_input = dir.path().join(TABLES[0]).join(TraceFile::name(3, 3, 9));
        fs::copy(&confirmed, &merged_input).unwrap();
        let store = TraceStore::open(dir.path()).unwrap();
        assert_eq!(store.file_counts(), [1, 0, 0, 0]);
        assert!(!merged_input.exists() && confirmed.exists());
        drop(store);

        // Two confirmed files whose records overlap in part: refused, naming them.
        let overlapping = dir.path().join(TABLES[0]).join(TraceFile::name(0, 2, 9));
        fs::copy(&confirmed, &overlapping).unwrap();
        match TraceStore::open(dir.path()) {
            Err(Error::Corrupt { path, detail }) => assert!(path.contains("00001-") && detail.contains("overlap"), "{path}: {detail}"),
            other => panic!("overlapping files opened: {:?}", other.map(|_| "a store")),
        }
    }

    /// The functions of the invocation rows in `path`, in order.
    fn functions_in(path: &Path) -> Vec<String> {
        use datafusion::arrow::array::{Array, AsArray};
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap().build().unwrap();
        let mut functions = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            let column = batch.column_by_name("function").unwrap().as_string::<i32>();
            functions.extend((0..column.len()).map(|i| column.value(i).to_owned()));
        }
        functions
    }

    /// Merges of three files; its stretch (about 36 years) holds every test's files.
    const POLICY: MergePolicy = MergePolicy { files: 3, bytes_max: 1 << 30, span: Duration::from_secs(1 << 30) };

    #[test]
    fn merges_make_one_file_of_several_and_a_crash_before_their_removal_keeps_each_row_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = TraceStore::open(dir.path()).unwrap();
        for (lsn, function) in [(1, "a"), (2, "b")] {
            store.append(rows(function), lsn).unwrap();
            store.flush().unwrap();
        }
        assert_eq!(store.merge_plan(&POLICY), None, "two files of three");
        store.append(rows("c"), 3).unwrap();
        store.flush().unwrap();
        let plan = store.merge_plan(&POLICY).expect("three small files of one hour");
        assert_eq!((plan.table, plan.inputs.iter().map(|f| (f.from, f.to)).collect::<Vec<_>>()), (0, vec![(1, 1), (2, 2), (3, 3)]));
        let inputs: Vec<PathBuf> = plan.inputs.iter().map(|f| f.path.clone()).collect();
        let kept = tempfile::tempdir().unwrap();
        for input in &inputs {
            fs::copy(input, kept.path().join(input.file_name().unwrap())).unwrap();
        }

        // A flush beside the merge: a file after the merged ones, kept. A query that listed
        // the inputs before the merge reads them still.
        store.append(rows("d"), 4).unwrap();
        let (_, before) = store.snapshot();
        let merged = store.merge(&plan).unwrap();
        store.flush().unwrap();
        let files = store.snapshot().0[0].files.clone();
        assert!(matches!(merged, MergeOutcome::Merged { rows: 3, bytes } if bytes == fs::metadata(&files[0]).unwrap().len()), "{merged:?}");
        assert_eq!(files.len(), 2);
        assert!(files[0].file_name().unwrap().to_str().unwrap().starts_with("00000000000000000001-00000000000000000003-"), "{files:?}");
        assert_eq!(functions_in(&files[0]), ["a", "b", "c"]);
        assert_eq!(functions_in(&files[1]), ["d"]);
        assert_eq!(store.merge_plan(&POLICY), None, "a merged file and a new one");

        // The inputs are out of the listing, and off the disk once the query that listed them
        // ends; a later query, which cannot list them, does not keep them.
        let (_, after) = store.snapshot();
        assert_eq!(store.expire(None), 0);
        assert!(inputs.iter().all(|i| i.exists()), "a query that listed them may still read them");
        drop(before);
        assert_eq!(store.remove_unread(), 3);
        assert!(inputs.iter().all(|i| !i.exists()));
        drop(after);
        assert_eq!(store.file_counts(), [2, 0, 0, 0]);
        drop(store);

        // A crash between the merged file's rename and its inputs' removal leaves both.
        for input in &inputs {
            fs::copy(kept.path().join(input.file_name().unwrap()), input).unwrap();
        }
        let store = TraceStore::open(dir.path()).unwrap();
        assert_eq!(store.snapshot().0[0].files, files, "the merged file and the later one");
        assert!(inputs.iter().all(|i| !i.exists()));
        assert_eq!(store.checkpoint(), 4);

        // Expiry leaves a merge's inputs listed until the merge ends; the merged file
        // expires at the next one.
        for (lsn, function) in [(5, "e"), (6, "f")] {
            store.append(rows(function), lsn).unwrap();
            store.flush().unwrap();
        }
        let plan = store.merge_plan(&POLICY).expect("three small files of one span");
        assert_eq!(plan.inputs.iter().map(|f| f.from).collect::<Vec<_>>(), [1, 4, 5]);
        assert_eq!(store.merge_plan(&POLICY), None, "one merge of a file at a time");
        assert_eq!(store.expire(Some(Duration::ZERO)), 1, "the file outside the merge");
        assert!(matches!(store.merge(&plan).unwrap(), MergeOutcome::Merged { rows: 5, .. }));
        assert_eq!(store.file_counts(), [1, 0, 0, 0]);
        assert_eq!(fs::read_dir(dir.path().join(TABLES[0])).unwrap().count(), 1, "inputs no query reads are removed by the merge");
        assert_eq!(store.expire(Some(Duration::ZERO)), 1, "the merged file");
        assert_eq!(fs::read_dir(dir.path().join(TABLES[0])).unwrap().count(), 0);

        // A merge stopped by a close leaves its files as they were, and mergeable.
        for lsn in 7..=9 {
            store.append(rows("g"), lsn).unwrap();
            store.flush().unwrap();
        }
        let plan = store.merge_plan(&POLICY).unwrap();
        store.cancel_merges();
        assert_eq!(store.merge(&plan).unwrap(), MergeOutcome::Cancelled);
        assert_eq!(fs::read_dir(dir.path().join(TABLES[0])).unwrap().count(), 3, "no merged or temporary file");
        assert_eq!(store.merge_plan(&POLICY).map(|p| p.inputs.len()), Some(3));
    }

    #[test]
    fn a_merge_that_panics_leaves_its_files_listed_and_whole_and_out_of_merges_until_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let on_disk = || fs::read_dir(dir.path().join(TABLES[0])).unwrap().count();
        let store = TraceStore::open(dir.path()).unwrap();
        for lsn in 1..=3 {
            store.append(rows("a"), lsn).unwrap();
            store.flush().unwrap();
        }
        let plan = store.merge_plan(&POLICY).unwrap();
        PANIC_IN_MERGE.with(|panic| panic.set(true));
        let err = store.merge(&plan).unwrap_err();
        assert!(err.to_string().contains("a merge of 3 files panicked: on purpose"), "{err}");
        assert_eq!((store.file_counts(), on_disk()), ([3, 0, 0, 0], 3), "the inputs listed and on the disk, no temporary file");
        assert_eq!(store.merge_plan(&POLICY), None, "the inputs are left out of merges");
        drop(store);

        // Until the next start.
        let store = TraceStore::open(dir.path()).unwrap();
        let plan = store.merge_plan(&POLICY).expect("mergeable again after a start");
        assert_eq!(plan.inputs.iter().map(|f| f.from).collect::<Vec<_>>(), [1, 2, 3]);
        PANIC_IN_MERGE.with(|panic| panic.set(true));
        assert!(store.merge(&plan).is_err());

        // The panic ended the merge's hold on its inputs: expiry takes them, and later
        // files merge without them.
        for lsn in 4..=6 {
            store.append(rows("b"), lsn).unwrap();
            store.flush().unwrap();
        }
        let plan = store.merge_plan(&POLICY).expect("three later files");
        assert_eq!(plan.inputs.iter().map(|f| f.from).collect::<Vec<_>>(), [4, 5, 6]);
        assert_eq!(store.expire(Some(Duration::ZERO)), 3, "the inputs of the merge that panicked, not those of the one under way");
        assert!(matches!(store.merge(&plan).unwrap(), MergeOutcome::Merged { rows: 3, .. }));
        assert_eq!((store.file_counts(), on_disk()), ([1, 0, 0, 0], 1));
    }

    #[test]
    fn a_span_that_has_passed_merges_its_leftover_files_whatever_their_tiers() {
        let dir = tempfile::tempdir().unwrap();
        let store = TraceStore::open(dir.path()).unwrap();
        for lsn in 1..=2 {
            store.append(rows("a"), lsn).unwrap();
            store.flush().unwrap();
        }
        // Two files of three, in the stretch under way: no merge. Once it has passed (here,
        // the files are made older), they are merged.
        let passed = MergePolicy { span: Duration::from_secs(3600), ..POLICY };
        assert_eq!(store.merge_plan(&passed), None);
        store.lock().files[0].iter_mut().for_each(|f| f.written_us = 1);
        let plan = store.merge_plan(&passed).expect("the leftovers of a stretch that has passed");
        assert_eq!(plan.inputs.len(), 2);
        assert!(matches!(store.merge(&plan).unwrap(), MergeOutcome::Merged { rows: 2, .. }));
        assert_eq!(store.merge_plan(&passed), None, "one file left: nothing to merge");
    }

    #[test]
    fn merges_take_files_of_one_tier_and_one_span_and_leave_unlike_files_out() {
        let file = |from: Lsn, bytes: u64, written_us: u64| TraceFile { path: PathBuf::from(format!("{from}")), from, to: from, written_us, bytes, mergeable: true, merging: false };
        let hour = 3_600_000_000;
        let policy = MergePolicy { files: 2, bytes_max: 100 << 20, span: Duration::from_secs(3600) };
        assert_eq!((policy.tier(0), policy.tier((64 << 10) - 1), policy.tier(64 << 10), policy.tier((128 << 10) - 1), policy.tier(128 << 10)), (0, 0, 1, 1, 2));
        assert!(policy.takes(&[file(1, 10, 0), file(2, 60_000, hour - 1)]));
        assert!(!policy.takes(&[file(1, 10, hour - 1), file(2, 10, hour)]), "two hours");
        assert!(!policy.takes(&[file(1, 10, 0), file(2, 64 << 10, 0)]), "two tiers");
        assert!(!policy.takes(&[file(1, 60 << 20, 0), file(2, 60 << 20, 0)]), "too large together");
        assert!(!policy.takes(&[file(1, 10, 0), TraceFile { mergeable: false, ..file(2, 10, 0) }]), "left out");
        assert!(!policy.takes(&[file(1, 10, 0), TraceFile { merging: true, ..file(2, 10, 0) }]), "in a merge");
        assert_eq!(policy.takes_leftovers(&[file(1, 10, 0), file(2, 1 << 20, 1)], 1), 2, "a passed stretch, two tiers");
        assert_eq!(policy.takes_leftovers(&[file(1, 10, 0), file(2, 10, 1)], 0), 0, "the stretch under way");
        assert_eq!(policy.takes_leftovers(&[file(1, 10, 0), file(2, 10, hour)], 2), 0, "two stretches");
        assert_eq!(policy.takes_leftovers(&[file(1, 10, 0), file(2, 10, 1), file(3, 20 << 20, 1)], 1), 2, "not the file large enough alone");
        assert_eq!(policy.takes_leftovers(&[file(1, 20 << 20, 0), file(2, 10, 1)], 1), 0, "nor from it");
        assert!(!policy.takes(&[file(1, 100 << 20, 0), file(2, 0, 0)]), "large enough already");

        // A file of an older build, with other columns, is left out of merges.
        let dir = tempfile::tempdir().unwrap();
        let store = TraceStore::open(dir.path()).unwrap();
        store.append(rows("a"), 1).unwrap();
        store.flush().unwrap();
        let older = dir.path().join(TABLES[0]).join(TraceFile::name(0, 0, now_us()));
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(vec![datafusion::arrow::datatypes::Field::new("function", datafusion::arrow::datatypes::DataType::Utf8, false)]));
        let column: datafusion::arrow::array::ArrayRef = Arc::new(datafusion::arrow::array::StringArray::from(vec!["old"]));
        let mut writer = parquet::arrow::ArrowWriter::try_new(File::create(&older).unwrap(), Arc::clone(&schema), None).unwrap();
        writer.write(&RecordBatch::try_new(schema, vec![column]).unwrap()).unwrap();
        writer.close().unwrap();
        drop(store);
        let store = TraceStore::open(dir.path()).unwrap();
        store.append(rows("b"), 2).unwrap();
        store.flush().unwrap();
        let policy = MergePolicy { files: 2, ..POLICY };
        let plan = store.merge_plan(&policy).unwrap();
        assert_eq!(plan.inputs[0].path, older, "the oldest two: the older build's file first");
        match store.merge(&plan).unwrap() {
            MergeOutcome::Skipped { paths, reason } => assert!(paths == [older.clone()] && reason.contains("other columns"), "{reason}"),
            other => panic!("merged unlike files: {other:?}"),
        }
        assert_eq!(store.file_counts(), [3, 0, 0, 0]);
        let plan = store.merge_plan(&policy).unwrap();
        assert_eq!(plan.inputs.iter().map(|f| f.from).collect::<Vec<_>>(), [1, 2], "the older file is left out");
        assert!(matches!(store.merge(&plan).unwrap(), MergeOutcome::Merged { rows: 2, .. }));
        assert_eq!(store.file_counts(), [2, 0, 0, 0]);
        assert!(older.exists(), "kept as it was");

        // A damaged file is named, kept listed and left out, and its partner freed.
        for lsn in [3, 4] {
            store.append(rows("c"), lsn).unwrap();
            store.flush().unwrap();
        }
        let damaged = store.snapshot().0[0].files[2].clone();
        fs::write(&damaged, b"not parquet").unwrap();
        let plan = store.merge_plan(&policy).unwrap();
        assert_eq!(plan.inputs.iter().map(|f| f.from).collect::<Vec<_>>(), [1, 3]);
        match store.merge(&plan).unwrap() {
            MergeOutcome::Skipped { paths, reason } => assert!(paths == [damaged] && reason.contains("cannot be read"), "{reason}"),
            other => panic!("merged a damaged file: {other:?}"),
        }
        assert_eq!(store.file_counts(), [4, 0, 0, 0]);
        assert_eq!(store.merge_plan(&policy), None, "the damaged file splits the others");
        assert_eq!(store.expire(Some(Duration::ZERO)), 4, "none held by the merge any more");
    }

    #[test]
    fn a_store_of_another_format_is_refused_untouched_and_one_without_a_version_gets_it() {
        let dir = tempfile::tempdir().unwrap();
        let format = dir.path().join(FORMAT);
        let store = TraceStore::open(dir.path()).unwrap();
        store.append(rows("a"), 3).unwrap();
        store.flush().unwrap();
        drop(store);
        assert_eq!(fs::read_to_string(&format).unwrap(), "1\n", "a new store is written with its version");

        // A store from before the version was written down reads as version 1.
        fs::remove_file(&format).unwrap();
        let store = TraceStore::open(dir.path()).unwrap();
        assert_eq!((store.checkpoint(), store.file_counts()), (3, [1, 0, 0, 0]));
        drop(store);
        assert_eq!(fs::read_to_string(&format).unwrap(), "1\n");

        // A later version's store, with a file above the checkpoint that this build would
        // take for an unconfirmed flush and remove: refused, and nothing in it touched.
        let later = dir.path().join(TABLES[0]).join(TraceFile::name(4, 7, 9));
        fs::write(&later, b"a later build's file").unwrap();
        fs::write(&format, "2\n").unwrap();
        let refused = TraceStore::open(dir.path()).unwrap_err();
        assert_eq!(refused, Error::UnsupportedFormat { path: dir.path().display().to_string(), found: 2, expected: FORMAT_VERSION });
        assert!(refused.to_string().starts_with(&format!("the trace store {} has format version 2; this build reads version 1", dir.path().display())), "{refused}");
        assert!(later.exists());
        assert_eq!(fs::read_to_string(&format).unwrap(), "2\n");

        fs::write(&format, "two").unwrap();
        let damaged = TraceStore::open(dir.path()).unwrap_err();
        assert!(damaged.to_string().starts_with(&format!("{} is damaged: \"two\" is not a format version (this build writes 1", format.display())), "{damaged}");
        assert!(later.exists());
    }

    #[test]
    fn expiry_removes_old_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = TraceStore::open(dir.path()).unwrap();
        store.append(rows("a"), 1).unwrap();
        store.flush().unwrap();
        assert_eq!(store.expire(Some(Duration::from_secs(3600))), 0);
        let (listed, query) = store.snapshot();
        let old = listed[0].files[0].clone();
        // Out of the listing at once; on the disk while a query that listed it runs.
        assert_eq!(store.expire(Some(Duration::ZERO)), 0);
        assert_eq!(store.file_counts(), [0; 4]);
        assert!(old.exists());
        assert_eq!(store.expire(Some(Duration::ZERO)), 0);
        assert!(old.exists());
        drop(query);
        assert_eq!(store.expire(Some(Duration::ZERO)), 1);
        assert_eq!(fs::read_dir(dir.path().join(TABLES[0])).unwrap().count(), 0);
        assert_eq!(store.checkpoint(), 1, "expiry keeps the checkpoint: nothing is read again");

        // Unread, an expired file leaves the disk with the listing. One that cannot be
        // removed (here a folder in its place) is tried again at the next expiry.
        store.append(rows("b"), 2).unwrap();
        store.flush().unwrap();
        let (listed, query) = store.snapshot();
        let stuck = listed[0].files[0].clone();
        assert_eq!(store.expire(Some(Duration::ZERO)), 0);
        fs::remove_file(&stuck).unwrap();
        fs::create_dir(&stuck).unwrap();
        fs::write(stuck.join("inside"), b"x").unwrap();
        drop(query);
        assert_eq!(store.expire(Some(Duration::ZERO)), 0);
        fs::remove_dir_all(&stuck).unwrap();
        assert_eq!(store.expire(Some(Duration::ZERO)), 1, "gone by then: counted as removed");
        assert_eq!(store.file_counts(), [0; 4]);
        store.append(rows("c"), 3).unwrap();
        store.flush().unwrap();
        let unread = store.snapshot().0[0].files[0].clone();
        assert_eq!(store.expire(Some(Duration::ZERO)), 1);
        assert!(!unread.exists());
    }
}
