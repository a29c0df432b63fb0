//! The log's API, after Boki's LogBook: durable appends, reads by tag, subscriptions, trim
//! and seal, over any [`Loglet`].

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use bytes::Bytes;
use futures::stream::{self, BoxStream};
use tokio::sync::{oneshot, watch};

use crate::error::{Error, Result, check_tag};
use crate::loglet::{Loglet, check_not_trimmed};
use crate::memory::MemoryLoglet;
use crate::options::LogOptions;
use crate::recent::{Found, Recent};
use crate::record::{Entry, Lsn, Record, Tag, normalize_tags};
use crate::rocks::RocksLoglet;
use crate::writer::{self, Answer, Callback, Command, Counters, Published};

/// A stream of records, as returned by [`LogBook::subscribe`].
pub type RecordStream = BoxStream<'static, Result<Record>>;

/// Counters of the write path since the log was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Appends acknowledged (calls of `append` or `append_batch`).
    pub appends: u64,
    /// Records made durable.
    pub records: u64,
    /// Payload bytes made durable.
    pub bytes: u64,
    /// Synced writes: one per group commit.
    pub group_commits: u64,
    /// Range reads (and the reads of subscriptions) answered from the recent records in
    /// memory.
    pub recent_reads: u64,
    /// Range reads that went to storage.
    pub loglet_reads: u64,
    /// Storage calls of the write path (a group's write, its sync, a lone group's write and
    /// sync in one call, a trim, a seal) that took 1 ms or more: every append behind one
    /// waited as long. Includes the writing thread's wait for a CPU after the call returned.
    pub io_over_1ms: u64,
    /// Those that took 10 ms or more.
    pub io_over_10ms: u64,
    /// Those that took 100 ms or more: a disk that stalls.
    pub io_over_100ms: u64,
    /// The longest of them, in microseconds.
    pub io_us_max: u64,
}

/// A handle to an open log. Cheap to clone; every clone is the same log.
///
/// Every method that touches storage runs it off the async runtime's workers (appends on the
/// writer thread, reads on the blocking pool), so the async methods must be called from
/// within a tokio runtime.
#[derive(Clone)]
pub struct LogBook {
    inner: Arc<Inner>,
}

struct Inner {
    loglet: Arc<dyn Loglet>,
    commands: SyncSender<Command>,
    published: Arc<watch::Sender<Published>>,
    recent: Arc<Recent>,
    counters: Arc<Counters>,
    options: LogOptions,
}

impl std::fmt::Debug for LogBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogBook").field("published", &*self.inner.published.borrow()).finish_non_exhaustive()
    }
}

impl LogBook {
    /// Starts a log over `loglet`, with its threads (writer, completer, and the syncer with
    /// `overlap-syncs`). Does no I/O itself.
    pub fn open(loglet: impl Loglet, options: LogOptions) -> Result<Self> {
        Self::open_shared(Arc::new(loglet), options)
    }

    /// Starts a log over a shared loglet (for wrappers that keep a handle of their own).
    pub fn open_shared(loglet: Arc<dyn Loglet>, options: LogOptions) -> Result<Self> {
        options.validate()?;
        let published = Arc::new(watch::Sender::new(Published::new(loglet.state())));
        let counters = Arc::new(Counters::default());
        let recent = Arc::new(Recent::new(options.recent_bytes_max));
        let (commands, queue) = sync_channel(options.queue_appends_max);
        writer::start(Arc::clone(&loglet), queue, Arc::clone(&published), Arc::clone(&recent), Arc::clone(&counters), options.clone())?;
        Ok(LogBook { inner: Arc::new(Inner { loglet, commands, published, recent, counters, options }) })
    }

    /// A log in memory: nothing survives the process.
    pub fn in_memory(options: LogOptions) -> Result<Self> {
        Self::open(MemoryLoglet::new(), options)
    }

    /// Opens (or creates) the durable log in directory `path`, recovering every record that
    /// was acknowledged before a crash.
    pub async fn open_dir(path: impl AsRef<Path>, options: LogOptions) -> Result<Self> {
        options.validate()?;
        let path = path.as_ref().to_owned();
        let segment_bytes = options.segment_bytes;
        let loglet = blocking(move || RocksLoglet::open_with_segments(&path, segment_bytes)).await?;
        Self::open(loglet, options)
    }

    /// Appends one record and returns its LSN once it is durable.
    pub async fn append(&self, tags: &[Tag], payload: impl Into<Bytes>) -> Result<Lsn> {
        self.append_batch(vec![Entry::new(tags, payload)]).await
    }

    /// Appends records atomically, with consecutive LSNs, and returns the first LSN once all
    /// of them are durable. After a crash either all of them are present or none is.
    ///
    /// Ordering guarantee (the backend relies on it): the append is validated and enqueued
    /// on the future's first poll, so appends first polled one after another from one thread
    /// get increasing LSNs, whoever awaits them later; a refusal (`QueueFull`, a bound, a
    /// log that has failed or closed) is the result of that first poll too.
    pub async fn append_batch(&self, entries: Vec<Entry>) -> Result<Lsn> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(entries, Answer::Task(reply))?;
        answer.await.unwrap_or_else(|_| Err(self.writer_gone()))
    }

    /// Appends records atomically, as [`append_batch`](Self::append_batch) does, without a
    /// task to wait: `on_durable` is called with the first LSN once all of them are durable,
    /// or with the error that stopped them. A refusal (`QueueFull`, a bound, a closed or
    /// failed log) is returned here instead, and `on_durable` is then never called.
    ///
    /// The records are enqueued before this returns, so appends made one after another from
    /// one thread get increasing LSNs. `on_durable` runs on one of the log's own threads,
    /// possibly before this returns, and may hear of appends out of order across group
    /// commits (every record up to the published tail is durable by then): it must be quick
    /// and must not block or panic (hand the result to a channel).
    pub fn append_batch_then(&self, entries: Vec<Entry>, on_durable: impl FnOnce(Result<Lsn>) + Send + 'static) -> Result<()> {
        self.enqueue(entries, Answer::Call(Callback::new(on_durable)))
    }

    /// Appends records atomically, as [`append_batch_then`](Self::append_batch_then) does,
    /// with a second callback for work slower than a channel send: `wake` (waking a task, as
    /// answering a caller does) is called after `on_durable`, with the same result, where the
    /// log wakes the tasks of [`append_batch`](Self::append_batch): on the thread that made
    /// the record durable when its group commit has only a couple of them to wake, else on
    /// the log's completer thread, so that a large group never delays the log's next write.
    /// Either may run before this returns; neither may block or panic. A refusal is returned
    /// here, and neither callback is then called.
    pub fn append_batch_then_wake(&self, entries: Vec<Entry>, on_durable: impl FnOnce(Result<Lsn>) + Send + 'static, wake: impl FnOnce(Result<Lsn>) + Send + 'static) -> Result<()> {
        self.enqueue(entries, Answer::CallThenWake { quick: Callback::new(on_durable), wake: Callback::new(wake) })
    }

    /// Validates an append and hands it to the writer, or refuses it.
    fn enqueue(&self, mut entries: Vec<Entry>, reply: Answer) -> Result<()> {
        // A failed log refuses at once: queued, the append would only wait to be refused by
        // the writer, and an appender that answers before durability (the backend's logged
        // answers) would answer for a record that can never be durable.
        let refused = {
            let published = self.inner.published.borrow();
            if published.closed { Some(Error::Closed) } else { published.failed.as_ref().map(|cause| Error::Failed { cause: cause.to_string() }) }
        };
        let checked = match refused {
            Some(err) => Err(err),
            None => self.validate(&mut entries),
        };
        let bytes = match checked {
            Ok(bytes) => bytes,
            Err(err) => {
                reply.unsent();
                return Err(err);
            }
        };
        self.inner.commands.try_send(Command::Append { entries, bytes, reply }).map_err(|err| match err {
            TrySendError::Full(command) => {
                command.unsent();
                Error::QueueFull { limit: self.inner.options.queue_appends_max }
            }
            TrySendError::Disconnected(command) => {
                command.unsent();
                Error::Closed
            }
        })
    }

    /// Checks every bound, normalizes tags, and returns the payload bytes.
    fn validate(&self, entries: &mut [Entry]) -> Result<usize> {
        let options = &self.inner.options;
        if entries.is_empty() {
            return Err(Error::EmptyBatch);
        }
        let mut bytes = 0;
        for entry in entries.iter_mut() {
            if entry.payload.len() > options.record_bytes_max {
                return Err(Error::RecordTooLarge { size_bytes: entry.payload.len(), limit_bytes: options.record_bytes_max });
            }
            normalize_tags(&mut entry.tags);
            if entry.tags.len() > options.tags_per_record_max {
                return Err(Error::TooManyTags { count: entry.tags.len(), limit: options.tags_per_record_max });
            }
            entry.tags.iter().try_for_each(|tag| check_tag(*tag))?;
            bytes += entry.payload.len();
        }
        if entries.len() > options.batch_records_max || bytes > options.batch_bytes_max {
            return Err(Error::BatchTooLarge {
                records: entries.len(),
                bytes,
                records_limit: options.batch_records_max,
                bytes_limit: options.batch_bytes_max,
            });
        }
        Ok(bytes)
    }

    /// The first record carrying `tag` (`ANY_TAG`: any) with an LSN at least `min_lsn`.
    pub async fn read_next(&self, tag: Tag, min_lsn: Lsn) -> Result<Option<Record>> {
        Ok(self.read_range(tag, min_lsn, 1).await?.into_iter().next())
    }

    /// The last record carrying `tag` (`ANY_TAG`: any) with an LSN at most `max_lsn`.
    pub async fn read_prev(&self, tag: Tag, max_lsn: Lsn) -> Result<Option<Record>> {
        let published = self.published()?;
        check_not_trimmed(max_lsn, published.trim_point)?;
        let max = max_lsn.min(published.tail);
        self.read(move |loglet| loglet.read_prev(tag, max)).await
    }

    /// The records carrying `tag` (`ANY_TAG`: all) from `from` on, in order: at most `limit`
    /// of them and at most `read-batch-records-max`, up to the durable tail. Records still
    /// among the recent ones in memory (`recent-bytes-max`) are read from there.
    pub async fn read_range(&self, tag: Tag, from: Lsn, limit: usize) -> Result<Vec<Record>> {
        let published = self.published()?;
        check_not_trimmed(from, published.trim_point)?;
        if from > published.tail || limit == 0 {
            return Ok(Vec::new());
        }
        let limit = limit.min(self.inner.options.read_batch_records_max);
        let to = published.tail;
        let counters = &self.inner.counters;
        if let Found::Records(records) = self.inner.recent.read(tag, from, to, limit) {
            counters.recent_reads.fetch_add(1, Ordering::Relaxed);
            return Ok(records);
        }
        counters.loglet_reads.fetch_add(1, Ordering::Relaxed);
        self.read(move |loglet| loglet.scan(tag, from, to, limit)).await
    }

    /// The LSN of the last durable record (0: none yet).
    pub fn tail(&self) -> Lsn {
        self.inner.published.borrow().tail
    }

    /// The first LSN still readable: everything below it has been trimmed.
    pub fn trim_point(&self) -> Lsn {
        self.inner.published.borrow().trim_point
    }

    /// Waits until the trim point is past `lsn` (a checkpoint trimmed it); returns the trim
    /// point then. `Closed` if the log closes first.
    pub async fn trimmed_past(&self, lsn: Lsn) -> Result<Lsn> {
        let mut changes = self.inner.published.subscribe();
        let published = changes.wait_for(|p| p.trim_point > lsn || p.closed).await.map_err(|_| Error::Closed)?;
        if published.trim_point > lsn { Ok(published.trim_point) } else { Err(Error::Closed) }
    }

    /// Whether the log is sealed.
    pub fn is_sealed(&self) -> bool {
        self.inner.published.borrow().sealed
    }

    /// The records carrying `tag` (`ANY_TAG`: all) from `from_lsn` on, in order, waiting for
    /// new ones as they become durable. The stream ends after the last record of a sealed
    /// log; it yields an error (and then ends) if the log is closed or fails, or if it is
    /// trimmed past the subscriber's position.
    pub fn subscribe(&self, from_lsn: Lsn, tag: Tag) -> RecordStream {
        let subscription = Subscription {
            log: self.clone(),
            tag,
            next: from_lsn.max(1),
            buffered: std::collections::VecDeque::new(),
            changes: self.inner.published.subscribe(),
            done: false,
        };
        Box::pin(stream::unfold(subscription, |mut subscription| async move {
            let item = subscription.next().await?;
            Some((item, subscription))
        }))
    }

    /// Discards every record below `upto`: the trim point becomes `upto`. Durable on return.
    /// Trimming below the current trim point does nothing; past `tail() + 1` is an error.
    pub async fn trim(&self, upto: Lsn) -> Result<()> {
        self.control(|reply| Command::Trim { upto, reply }).await
    }

    /// Seals the log: every later append fails with `Sealed`. Returns the tail, the last
    /// record the log will ever hold. Durable on return; idempotent.
    pub async fn seal(&self) -> Result<Lsn> {
        self.control(|reply| Command::Seal { reply }).await
    }

    /// Closes the log after the appends already queued: on return the storage is released
    /// (the directory may be reopened). Later calls fail with `Closed`.
    pub async fn close(&self) -> Result<()> {
        match self.control(|reply| Command::Close { reply }).await {
            Err(Error::Closed) => Ok(()),
            other => other,
        }
    }

    /// Counters of the write path since the log was opened.
    pub fn stats(&self) -> LogStats {
        let counters = &self.inner.counters;
        let [over_1ms, over_10ms, over_100ms] = counters.slow_io.counts();
        LogStats {
            appends: counters.appends.load(Ordering::Relaxed),
            records: counters.records.load(Ordering::Relaxed),
            bytes: counters.bytes.load(Ordering::Relaxed),
            group_commits: counters.group_commits.load(Ordering::Relaxed),
            recent_reads: counters.recent_reads.load(Ordering::Relaxed),
            loglet_reads: counters.loglet_reads.load(Ordering::Relaxed),
            io_over_1ms: over_1ms,
            io_over_10ms: over_10ms,
            io_over_100ms: over_100ms,
            io_us_max: counters.slow_io.us_max(),
        }
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.inner.options
    }

    /// Why a command went unanswered: the log closed (a command that reached the writer
    /// after its last drain), or the writer thread died.
    fn writer_gone(&self) -> Error {
        if self.inner.published.borrow().closed { Error::Closed } else { writer_gone() }
    }

    fn published(&self) -> Result<Published> {
        let published = self.inner.published.borrow().clone();
        if published.closed { Err(Error::Closed) } else { Ok(published) }
    }

    /// Sends a control command, waiting for room in the queue rather than failing: only
    /// appends are refused for backpressure.
    async fn control<T: Send + 'static>(&self, command: impl FnOnce(oneshot::Sender<Result<T>>) -> Command) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let commands = self.inner.commands.clone();
        let command = command(reply);
        blocking(move || commands.send(command).map_err(|_| Error::Closed)).await?;
        answer.await.unwrap_or_else(|_| Err(self.writer_gone()))
    }

    async fn read<T: Send + 'static>(&self, f: impl FnOnce(&dyn Loglet) -> Result<T> + Send + 'static) -> Result<T> {
        let loglet = Arc::clone(&self.inner.loglet);
        blocking(move || f(loglet.as_ref())).await
    }
}

/// Runs storage work on the blocking pool, never on an async worker.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|err| Err(Error::Internal(format!("a blocking log task failed: {err}"))))
}

pub(crate) fn writer_gone() -> Error {
    Error::Failed { cause: "the log writer thread stopped unexpectedly".to_owned() }
}

/// The state of one subscriber: its position and a small buffer of records read ahead.
struct Subscription {
    log: LogBook,
    tag: Tag,
    next: Lsn,
    buffered: std::collections::VecDeque<Record>,
    changes: watch::Receiver<Published>,
    done: bool,
}

impl Subscription {
    async fn next(&mut self) -> Option<Result<Record>> {
        loop {
            if let Some(record) = self.buffered.pop_front() {
                return Some(Ok(record));
            }
            if self.done {
                return None;
            }
            let published = self.changes.borrow_and_update().clone();
            if published.closed {
                return self.finish(Err(Error::Closed));
            }
            if let Err(err) = check_not_trimmed(self.next, published.trim_point) {
                return self.finish(Err(err));
            }
            if self.next <= published.tail {
                match self.log.read_range(self.tag, self.next, usize::MAX).await {
                    Ok(records) => {
                        // None carries the tag up to the tail: continue past the tail.
                        self.next = records.last().map_or(published.tail, |r| r.lsn) + 1;
                        self.buffered.extend(records);
                    }
                    Err(err) => return self.finish(Err(err)),
                }
                continue;
            }
            if let Some(cause) = published.failed {
                return self.finish(Err(Error::Failed { cause: cause.to_string() }));
            }
            if published.sealed {
                return None;
            }
            if self.changes.changed().await.is_err() {
                return self.finish(Err(Error::Closed));
            }
        }
    }

    fn finish(&mut self, item: Result<Record>) -> Option<Result<Record>> {
        self.done = true;
        Some(item)
    }
}
