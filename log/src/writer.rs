//! The writer: the one thread that owns the log's write path, and the syncer beside it.
//!
//! Appends, trims, seals and the close arrive through one bounded queue. The writer takes
//! the first waiting command; if it is an append, it also takes every append already waiting
//! behind it (bounded by records and bytes per group commit) and writes them all to the
//! loglet. No timer is needed to batch: the appends arriving while a group is written and
//! synced form the next group, except that without `overlap-syncs` (the default) those
//! arriving while a group of more than two is written join it before its sync and share it
//! (see `Writer::write_and_sync`). Results are released only after the group is durable
//! and the new tail is published.
//!
//! With `overlap-syncs` (off by default: on 2 cores the backend loses more to the hand-offs
//! than it gains), the sync overlaps the next write: the writer writes a group without
//! syncing it and hands it to the syncer thread, which syncs it, publishes it and answers its
//! appenders while the writer already writes the next group. The hand-off is a rendezvous, so at most one group
//! is syncing and one more written behind it; the appends arriving meanwhile wait in the
//! queue and form a larger group. A lone appender (a group of one or two appends with nothing
//! in flight) gains nothing from the syncer and would pay its wake-up: the writer appends
//! such a group with a synced write and publishes it itself. Publishing is done by one thread
//! at a time either way: the writer only when no group is in flight.
//!
//! After a failed write or sync the log stops accepting writes (fail-stop): what the failure
//! left on disk is unknown until the log is reopened, and an append that may not be durable
//! must never be acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SendError, SyncSender, TryRecvError, sync_channel};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use tracing::{debug, error};

use crate::error::{Error, Result};
use crate::loglet::{Loglet, LogletState};
use crate::options::LogOptions;
use crate::recent::Recent;
use crate::record::{Entry, Lsn};
use crate::timing::SlowCalls;

/// A request to the writer.
pub(crate) enum Command {
    Append { entries: Vec<Entry>, bytes: usize, reply: Answer },
    Trim { upto: Lsn, reply: oneshot::Sender<Result<()>> },
    Seal { reply: oneshot::Sender<Result<Lsn>> },
    Close { reply: oneshot::Sender<Result<()>> },
}

/// Where an append's outcome goes.
pub(crate) enum Answer {
    /// The task awaiting [`LogBook::append_batch`](crate::LogBook::append_batch).
    Task(oneshot::Sender<Result<Lsn>>),
    /// The callback given to [`LogBook::append_batch_then`](crate::LogBook::append_batch_then).
    Call(Callback),
    /// The two callbacks given to
    /// [`LogBook::append_batch_then_wake`](crate::LogBook::append_batch_then_wake): the quick
    /// one is called where a `Call` is, the waking one where a `Task` is woken. Dropped
    /// unanswered, `quick` hears first: fields drop in their declared order.
    CallThenWake { quick: Callback, wake: Callback },
}

/// A callback waiting for an append's outcome. Dropped unanswered (the log's threads are
/// gone), it hears that the writer stopped: whoever waits on it is never left waiting.
pub(crate) struct Callback(Option<Box<dyn FnOnce(Result<Lsn>) + Send>>);

impl Callback {
    pub(crate) fn new(on_durable: impl FnOnce(Result<Lsn>) + Send + 'static) -> Callback {
        Callback(Some(Box::new(on_durable)))
    }

    fn call(mut self, result: Result<Lsn>) {
        if let Some(on_durable) = self.0.take() {
            on_durable(result);
        }
    }

    /// Drops the callback without calling it.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Callback {
    fn drop(&mut self) {
        if let Some(on_durable) = self.0.take() {
            on_durable(Err(crate::book::writer_gone()));
        }
    }
}

impl Answer {
    /// Drops an answer uncalled: for an append refused before the writer saw it, whose
    /// caller hears of the refusal directly, and only once.
    pub(crate) fn unsent(self) {
        match self {
            Answer::Task(_) => {}
            Answer::Call(callback) => callback.disarm(),
            Answer::CallThenWake { quick, wake } => {
                quick.disarm();
                wake.disarm();
            }
        }
    }

    pub(crate) fn send(self, result: Result<Lsn>) {
        match self {
            Answer::Task(reply) => drop(reply.send(result)),
            Answer::Call(callback) => callback.call(result),
            Answer::CallThenWake { quick, wake } => {
                quick.call(result.clone());
                wake.call(result);
            }
        }
    }
}

/// What readers may see: only durable records, and the log's condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Published {
    pub(crate) tail: Lsn,
    pub(crate) trim_point: Lsn,
    pub(crate) sealed: bool,
    pub(crate) closed: bool,
    /// Why the log stopped accepting writes after a failed write or sync.
    pub(crate) failed: Option<Arc<str>>,
}

impl Published {
    pub(crate) fn new(state: LogletState) -> Self {
        Published { tail: state.tail, trim_point: state.trim_point, sealed: state.sealed, closed: false, failed: None }
    }
}

/// Counters of the write path, for benchmarks and monitoring.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) appends: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) group_commits: AtomicU64,
    pub(crate) recent_reads: AtomicU64,
    pub(crate) loglet_reads: AtomicU64,
    /// The write path's storage calls that took at least each of [`SLOW_IO_MS`].
    pub(crate) slow_io: SlowCalls<{ SLOW_IO_MS.len() }>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            appends: AtomicU64::default(),
            records: AtomicU64::default(),
            bytes: AtomicU64::default(),
            group_commits: AtomicU64::default(),
            recent_reads: AtomicU64::default(),
            loglet_reads: AtomicU64::default(),
            slow_io: SlowCalls::new(SLOW_IO_MS),
        }
    }
}

/// The durations (ms) from which one storage call of the log's write path counts as slow in
/// [`LogStats`]: a group's write, its sync, a lone group's write and sync in one call, a
/// trim, a seal. Every append waiting behind such a call waits as long; a disk that stalls
/// shows here, where the appenders' latencies alone do not say why.
///
/// [`LogStats`]: crate::LogStats
pub(crate) const SLOW_IO_MS: [u64; 3] = [1, 10, 100];

impl Counters {
    /// Runs `io`, a storage call of the write path, and counts how long it took.
    fn timed_io<T>(&self, io: impl FnOnce() -> Result<T>) -> Result<T> {
        self.slow_io.time(io).0
    }
}

/// A group of appends being made durable together.
#[derive(Default)]
pub(crate) struct Group {
    entries: Vec<Entry>,
    bytes: usize,
    /// Each waiting append: how many entries it put into `entries`, and where to reply.
    waiters: Vec<(usize, Answer)>,
}

impl Group {
    fn add(&mut self, entries: Vec<Entry>, bytes: usize, reply: Answer) {
        self.waiters.push((entries.len(), reply));
        self.entries.extend(entries);
        self.bytes += bytes;
    }

    /// Answers every appender of a group that was not made durable.
    fn refuse(self, err: &Error) {
        for (_, reply) in self.waiters {
            reply.send(Err(err.clone()));
        }
    }

    fn fits(&self, records: usize, bytes: usize, options: &LogOptions) -> bool {
        self.entries.len() + records <= options.batch_records_max && self.bytes + bytes <= options.batch_bytes_max
    }
}

/// Group commits whose replies wait for the completer thread. Small: the completer only
/// wakes tasks (and calls the callbacks that wake one), and a full queue makes the writer
/// wait (backpressure, never a buffer).
pub(crate) const COMPLETIONS_QUEUED_MAX: usize = 4;

/// Group commits with at most this many tasks to wake (waiting tasks, and waking callbacks)
/// have them woken on the publishing thread itself: waking a task or two costs less than
/// handing them to the completer (one thread switch more on the path of a lone appender).
pub(crate) const COMPLETE_INLINE_MAX: usize = 2;

/// A group of at most this many appends is a lone appender's (or two): with nothing in
/// flight the writer syncs it itself rather than wake the syncer, and after it spins for
/// the next append rather than sleep.
pub(crate) const LONE_GROUP_MAX: usize = 2;

/// The tasks (and waking callbacks) of a durable group commit still to be woken, each with
/// its first LSN.
pub(crate) struct Completion(Vec<(Lsn, Answer)>);

/// The completer thread: wakes the tasks of durable group commits (and calls their waking
/// callbacks), so that waking hundreds of them never delays the writer's next write.
pub(crate) fn complete(completions: Receiver<Completion>) {
    for completion in completions {
        completion.answer();
    }
}

impl Completion {
    fn answer(self) {
        for (lsn, reply) in self.0 {
            reply.send(Ok(lsn));
        }
    }
}

/// Publishes durable groups: into the ring of recent records, then the new tail, then the
/// appenders' replies. Used by whichever thread made the group durable (the syncer, or the
/// writer for a group it synced itself with nothing in flight), so by one at a time.
#[derive(Clone)]
pub(crate) struct Publisher {
    pub(crate) published: Arc<watch::Sender<Published>>,
    pub(crate) recent: Arc<Recent>,
    pub(crate) counters: Arc<Counters>,
    /// To the completer thread, for groups with more than `COMPLETE_INLINE_MAX` waiting tasks.
    pub(crate) completions: SyncSender<Completion>,
}

impl Publisher {
    /// Why the log stopped accepting writes, if it did.
    fn failed(&self) -> Option<Arc<str>> {
        self.published.borrow().failed.clone()
    }

    /// Stops the log: every later write is refused with `Failed { cause }`, and subscribers
    /// end with it after the durable records.
    fn fail(&self, err: &Error) {
        error!(%err, "a log write or sync failed; the log stops accepting writes until reopened");
        let cause: Arc<str> = err.to_string().into();
        self.published.send_modify(|p| p.failed = Some(cause));
    }

    /// Publishes the durable group whose first record is `first`, then answers its appenders.
    fn publish(&self, first: Lsn, group: Group) {
        let records = group.entries.len() as Lsn;
        // Into the ring before the tail moves: a reader clamped to the new tail finds every
        // record up to it there (or reads the loglet).
        self.recent.push(first, group.entries);
        self.published.send_modify(|p| {
            debug_assert_eq!(p.tail + 1, first, "groups are published in LSN order");
            p.tail = first + records - 1;
        });
        self.counters.appends.fetch_add(group.waiters.len() as u64, Ordering::Relaxed);
        self.counters.records.fetch_add(records, Ordering::Relaxed);
        self.counters.bytes.fetch_add(group.bytes as u64, Ordering::Relaxed);
        self.counters.group_commits.fetch_add(1, Ordering::Relaxed);
        // The tail is published: reads see these records before their appenders are
        // answered, never after. Appenders may be answered out of order across groups:
        // every record up to the tail is durable by now, whoever hears of it first.
        // Callbacks are called here (quick by their contract: a channel send), which spares
        // the backend's executors a hop through the completer; tasks, and the callbacks that
        // wake them, are woken here only when they are few.
        let (mut lsn, mut tasks) = (first, Vec::new());
        for (count, reply) in group.waiters {
            match reply {
                Answer::Call(_) => reply.send(Ok(lsn)),
                Answer::Task(_) => tasks.push((lsn, reply)),
                Answer::CallThenWake { quick, wake } => {
                    // Should this thread die before `wake` is called, its drop tells the
                    // caller the writer stopped: less than is durable, never more.
                    quick.call(Ok(lsn));
                    tasks.push((lsn, Answer::Call(wake)));
                }
            }
            lsn += count as Lsn;
        }
        let completion = Completion(tasks);
        if completion.0.len() <= COMPLETE_INLINE_MAX {
            completion.answer();
        } else if let Err(unsent) = self.completions.send(completion) {
            error!("the log's completer thread stopped; answering here");
            unsent.0.answer();
        }
    }
}

/// What the writer hands to the syncer.
pub(crate) enum Handoff {
    /// A group written (not yet durable) whose first record is `first`.
    Written { first: Lsn, group: Group },
    /// The writer waits until every group handed before is published (or refused).
    Drain(SyncSender<()>),
}

/// The syncer thread: makes each written group durable, publishes it and answers its
/// appenders, while the writer writes the next group.
pub(crate) struct Syncer {
    pub(crate) loglet: Arc<dyn Loglet>,
    pub(crate) handoffs: Receiver<Handoff>,
    pub(crate) publisher: Publisher,
    /// Groups handed to the syncer and not yet published or refused; shared with the writer.
    pub(crate) in_flight: Arc<AtomicUsize>,
}

impl Syncer {
    /// Runs until the writer is gone.
    pub(crate) fn run(self) {
        for handoff in &self.handoffs {
            match handoff {
                Handoff::Drain(done) => drop(done.send(())),
                Handoff::Written { first, group } => {
                    // After a failure nothing more is published: the writer stops (or has
                    // stopped) too, and a later sync would not tell what the failure left.
                    let outcome = match self.publisher.failed() {
                        Some(cause) => Err(Error::Failed { cause: cause.to_string() }),
                        None => self.publisher.counters.timed_io(|| self.loglet.sync()).inspect_err(|err| self.publisher.fail(err)),
                    };
                    match outcome {
                        Ok(()) => self.publisher.publish(first, group),
                        Err(err) => group.refuse(&err),
                    }
                    // Only now may the writer publish a group of its own.
                    self.in_flight.fetch_sub(1, Ordering::Release);
                }
            }
        }
    }
}

pub(crate) struct Writer {
    pub(crate) loglet: Arc<dyn Loglet>,
    pub(crate) commands: Receiver<Command>,
    pub(crate) publisher: Publisher,
    /// To the syncer: a rendezvous, so the writer waits there while a group syncs and one
    /// more is written.
    pub(crate) handoffs: SyncSender<Handoff>,
    pub(crate) in_flight: Arc<AtomicUsize>,
    pub(crate) options: LogOptions,
}

/// Starts the log's threads over `loglet`: the writer, the completer, and the syncer when
/// `overlap-syncs` is on.
pub(crate) fn start(
    loglet: Arc<dyn Loglet>,
    commands: Receiver<Command>,
    published: Arc<watch::Sender<Published>>,
    recent: Arc<Recent>,
    counters: Arc<Counters>,
    options: LogOptions,
) -> Result<()> {
    let slice = Duration::from_micros(options.writer_slice_us);
    // Each thread asks for its time slice first; the log opens once every one has.
    let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
        let (asked, has_asked) = sync_channel(1);
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                if !slice.is_zero() {
                    ask_for_slice(slice);
                }
                let _ = asked.send(());
                body();
            })
            .map_err(|err| Error::Storage { operation: "start the log's threads", message: format!("{name}: {err}") })?;
        has_asked.recv().map_err(|_| Error::Storage { operation: "start the log's threads", message: format!("{name} ended before it started") })
    };
    let (completions, completed) = sync_channel(COMPLETIONS_QUEUED_MAX);
    spawn("comb-log-completer", Box::new(move || complete(completed)))?;
    let publisher = Publisher { published, recent, counters, completions };
    let (handoffs, handed) = sync_channel(0);
    let in_flight = Arc::new(AtomicUsize::new(0));
    // Without overlap-syncs the writer syncs every group itself and never hands one over.
    if options.overlap_syncs {
        let syncer = Syncer { loglet: Arc::clone(&loglet), handoffs: handed, publisher: publisher.clone(), in_flight: Arc::clone(&in_flight) };
        spawn("comb-log-syncer", Box::new(move || syncer.run()))?;
    }
    let writer = Writer { loglet, commands, publisher, handoffs, in_flight, options };
    spawn("comb-log-writer", Box::new(move || writer.run()))
}

/// Asks the kernel for a short time slice for the calling thread (see `writer-slice-us`); a
/// refusal only costs latency, so it is logged and the thread goes on.
fn ask_for_slice(slice: Duration) {
    if let Err(err) = comb_sched::request_slice(slice) {
        let thread = std::thread::current();
        debug!(thread = thread.name().unwrap_or("?"), slice_us = slice.as_micros() as u64, error = %err, "the kernel did not take the log thread's time slice; it keeps the default");
    }
}

impl Writer {
    /// Runs until a `Close` arrives or every handle to the log is dropped.
    pub(crate) fn run(self) {
        // The writer's view: `tail` is the last record written, durable or not.
        let mut state = self.loglet.state();
        // A command taken from the queue that did not fit into the group being formed.
        let mut held: Option<Command> = None;
        // Whether the last group commit answered a lone appender or two: then the writer
        // spins for the next append rather than sleeping.
        let mut lone = false;
        loop {
            let command = match held.take() {
                Some(command) => command,
                None => match self.next_command(std::mem::take(&mut lone)) {
                    Some(command) => command,
                    None => break, // every LogBook handle is gone
                },
            };
            if !matches!(command, Command::Append { .. }) {
                // Trim, seal and close act on durable records only.
                self.drain();
            }
            match command {
                Command::Append { entries, bytes, reply } => {
                    let mut group = Group::default();
                    group.add(entries, bytes, reply);
                    self.gather(&mut group, &mut held);
                    lone = self.commit(group, &mut held, &mut state) <= LONE_GROUP_MAX;
                }
                Command::Trim { upto, reply } => {
                    let _ = reply.send(self.trim(upto, &mut state));
                }
                Command::Seal { reply } => {
                    let _ = reply.send(self.seal(&mut state));
                }
                Command::Close { reply } => {
                    let _ = reply.send(self.close());
                    // Whatever is still queued was never written.
                    while let Ok(command) = self.commands.try_recv() {
                        command.refuse(&Error::Closed);
                    }
                    return;
                }
            }
        }
        self.drain();
        if let Err(err) = self.close() {
            error!(%err, "closing the log after its last handle was dropped failed");
        }
    }

    /// Waits for the next command. After a group commit of a lone appender or two it first
    /// spins for up to `writer-spin-us`, so that the appender's next append finds the writer
    /// awake: waking a sleeping thread costs tens of microseconds on a virtual machine, as
    /// much as a fast disk's fsync. After larger groups it sleeps at once: there, the
    /// appenders arriving while it sleeps form the next group, and a spinning writer would
    /// take them in smaller groups and take CPU from the threads that append.
    fn next_command(&self, spin: bool) -> Option<Command> {
        let spin = if spin { Duration::from_micros(self.options.writer_spin_us) } else { Duration::ZERO };
        if !spin.is_zero() {
            let start = Instant::now();
            loop {
                match self.commands.try_recv() {
                    Ok(command) => return Some(command),
                    Err(TryRecvError::Disconnected) => return None,
                    Err(TryRecvError::Empty) if start.elapsed() >= spin => break,
                    Err(TryRecvError::Empty) => std::hint::spin_loop(),
                }
            }
        }
        self.commands.recv().ok()
    }

    /// Adds to `group` the appends waiting in the queue, while they fit; the first command
    /// that is not an append, or does not fit, is held for later.
    fn gather(&self, group: &mut Group, held: &mut Option<Command>) {
        while held.is_none() {
            let Ok(next) = self.commands.try_recv() else { return };
            match next {
                Command::Append { entries, bytes, reply } if group.fits(entries.len(), bytes, &self.options) => {
                    group.add(entries, bytes, reply);
                }
                other => *held = Some(other),
            }
        }
    }

    /// Waits until every group handed to the syncer is published or refused.
    fn drain(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            return;
        }
        let (done, drained) = sync_channel(1);
        if self.handoffs.send(Handoff::Drain(done)).is_ok() {
            let _ = drained.recv();
        }
    }

    /// Makes `group` durable (or hands it to the syncer to be), and returns how many appends
    /// it held by then: the group may grow while it is written.
    fn commit(&self, group: Group, held: &mut Option<Command>, state: &mut LogletState) -> usize {
        let refusal = if let Some(cause) = self.publisher.failed() {
            Some(Error::Failed { cause: cause.to_string() })
        } else if state.sealed {
            Some(Error::Sealed { tail: state.tail })
        } else {
            None
        };
        let appends = group.waiters.len();
        if let Some(err) = refusal {
            group.refuse(&err);
            return appends;
        }
        // Made durable here without the syncer, or when nothing is in flight and the group is
        // a lone appender or two; else written here and synced by the syncer.
        if !self.options.overlap_syncs || (self.in_flight.load(Ordering::Acquire) == 0 && appends <= LONE_GROUP_MAX) {
            return self.write_and_sync(group, held, state);
        }
        let err = match self.publisher.counters.timed_io(|| self.loglet.write(&group.entries)).and_then(|first| Self::advance(state, first, group.entries.len())) {
            Ok(first) => {
                self.in_flight.fetch_add(1, Ordering::Release);
                match self.handoffs.send(Handoff::Written { first, group }) {
                    Ok(()) => return appends,
                    Err(SendError(unsent)) => {
                        self.in_flight.fetch_sub(1, Ordering::Release);
                        let Handoff::Written { group, .. } = unsent else { unreachable!("a written group was sent") };
                        let err = Error::Internal("the log's syncer thread stopped".to_owned());
                        self.publisher.fail(&err);
                        group.refuse(&err);
                        return appends;
                    }
                }
            }
            Err(err) => err,
        };
        // The groups in flight were written before this one: let the syncer finish them
        // first, so that nothing is published after the failure.
        self.drain();
        self.publisher.fail(&err);
        group.refuse(&err);
        appends
    }

    /// Writes `group` and makes it durable, on the writer itself. A lone appender's group (or
    /// two appenders') is written with a sync, in one call. A larger group is written without
    /// a sync; the appends that arrived while it was written join it and are written too,
    /// again while more arrive (up to the group's bounds), and then one sync makes every part
    /// durable. With many appenders, a sync costs far more than writing a record: the appends
    /// answered by one sync come back while the next group is written, and joining it they
    /// share its sync rather than wait for a sync of their own.
    fn write_and_sync(&self, mut group: Group, held: &mut Option<Command>, state: &mut LogletState) -> usize {
        let first = state.tail + 1;
        let outcome = if group.waiters.len() <= LONE_GROUP_MAX {
            self.publisher.counters.timed_io(|| self.loglet.append(&group.entries)).and_then(|at| Self::advance(state, at, group.entries.len()))
        } else {
            let mut written = 0;
            loop {
                let part = &group.entries[written..];
                if let Err(err) = self.publisher.counters.timed_io(|| self.loglet.write(part)).and_then(|at| Self::advance(state, at, part.len())) {
                    break Err(err);
                }
                written = group.entries.len();
                let appends = group.waiters.len();
                self.gather(&mut group, held);
                if group.waiters.len() == appends {
                    break self.publisher.counters.timed_io(|| self.loglet.sync()).map(|()| first);
                }
            }
        };
        let appends = group.waiters.len();
        match outcome {
            Ok(_) => self.publisher.publish(first, group),
            Err(err) => {
                self.publisher.fail(&err);
                group.refuse(&err);
            }
        }
        appends
    }

    /// Moves the writer's tail past `records` written at `first`, which must follow it.
    fn advance(state: &mut LogletState, first: Lsn, records: usize) -> Result<Lsn> {
        if first != state.tail + 1 {
            return Err(Error::Internal(format!("loglet appended at LSN {first}, expected {}", state.tail + 1)));
        }
        state.tail += records as Lsn;
        Ok(first)
    }

    fn trim(&self, upto: Lsn, state: &mut LogletState) -> Result<()> {
        if let Some(cause) = self.publisher.failed() {
            return Err(Error::Failed { cause: cause.to_string() });
        }
        if upto > state.tail + 1 {
            return Err(Error::TrimBeyondTail { upto, tail: state.tail });
        }
        if upto <= state.trim_point {
            return Ok(()); // already trimmed that far
        }
        self.publisher.counters.timed_io(|| self.loglet.trim(upto))?;
        state.trim_point = upto;
        self.publisher.published.send_modify(|p| p.trim_point = upto);
        debug!(trim_point = upto, "log trimmed");
        Ok(())
    }

    fn seal(&self, state: &mut LogletState) -> Result<Lsn> {
        if let Some(cause) = self.publisher.failed() {
            return Err(Error::Failed { cause: cause.to_string() });
        }
        let tail = self.publisher.counters.timed_io(|| self.loglet.seal())?;
        if tail != state.tail {
            return Err(Error::Internal(format!("loglet sealed at {tail}, the writer's tail is {}", state.tail)));
        }
        state.sealed = true;
        self.publisher.published.send_modify(|p| p.sealed = true);
        debug!(tail, "log sealed");
        Ok(tail)
    }

    fn close(&self) -> Result<()> {
        self.publisher.published.send_modify(|p| p.closed = true);
        self.loglet.close()
    }
}


impl Command {
    /// Drops a command that never reached the writer, its answer uncalled (see
    /// [`Answer::unsent`]).
    pub(crate) fn unsent(self) {
        if let Command::Append { reply, .. } = self {
            reply.unsent();
        }
    }

    /// Answers a command that will never be carried out.
    pub(crate) fn refuse(self, err: &Error) {
        match self {
            Command::Append { reply, .. } => reply.send(Err(err.clone())),
            Command::Trim { reply, .. } => drop(reply.send(Err(err.clone()))),
            Command::Seal { reply } => drop(reply.send(Err(err.clone()))),
            Command::Close { reply } => drop(reply.send(Ok(()))),
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::LogBook;

    /// The time slices the kernel reports for this process's threads named `name`.
    fn slices_of_threads_named(name: &str) -> Vec<Option<Duration>> {
        let mut slices = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").expect("the process's threads are listed") {
            let task = task.expect("a thread's entry");
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() == name {
                let tid: i32 = task.file_name().to_string_lossy().parse().expect("a thread's id");
                // A thread of another test may end meanwhile: only those still there count.
                if let Ok(slice) = comb_sched::slice_of(tid) {
                    slices.push(slice);
                }
            }
        }
        slices
    }

    /// Opens a log with `writer_slice_us` and the syncer on, and returns, for each of its
    /// three threads' names (cut to 15 bytes by the kernel), the slices of this process's
    /// threads of that name: this log's and those of logs other tests hold open.
    fn slices_with(writer_slice_us: u64) -> Vec<(&'static str, Vec<Option<Duration>>)> {
        let log = LogBook::in_memory(LogOptions { writer_slice_us, overlap_syncs: true, ..LogOptions::default() }).unwrap();
        let slices = ["comb-log-writer", "comb-log-comple", "comb-log-syncer"]
            .into_iter()
            .map(|name| {
                let slices = slices_of_threads_named(name);
                assert!(!slices.is_empty(), "no thread named {name}");
                (name, slices)
            })
            .collect();
        drop(log);
        slices
    }

    #[test]
    fn the_logs_threads_run_with_the_time_slice_of_writer_slice_us() {
        // No other test asks for 1,234 us: the threads that have it are this log's.
        let asked = Duration::from_micros(1_234);
        let reports_slices = comb_sched::slice_of(0).unwrap().is_some();
        for (name, slices) in slices_with(1_234) {
            if reports_slices {
                assert!(slices.contains(&Some(asked)), "no {name} thread runs with a {asked:?} slice: {slices:?}");
            }
        }
    }

    #[test]
    fn with_writer_slice_us_0_the_logs_threads_keep_the_kernels_slice() {
        // The test's own thread runs with the kernel's default slice. A log's threads have
        // it too unless they asked for another: 0 asks for none (not the shortest).
        let default = comb_sched::slice_of(0).unwrap();
        // The one other slice any test asks for (above).
        let asked_elsewhere = Some(Duration::from_micros(1_234));
        for (name, slices) in slices_with(0) {
            assert!(slices.iter().all(|slice| *slice == default || *slice == asked_elsewhere), "a {name} thread asked for a slice: {slices:?}, the default {default:?}");
        }
    }
}
