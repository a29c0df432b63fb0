//! The writer: the one thread that owns the log's write path.
//!
//! Appends, trims, seals and the close arrive through one bounded queue. The writer takes
//! the first waiting command; if it is an append, it also takes every append already waiting
//! behind it (bounded by records and bytes per group commit) and makes them all durable with
//! one call to the loglet (one synced write). While that write runs, new appends gather in
//! the queue and form the next group: no timer is needed to batch. Results are released only
//! after the write is durable and the new tail is published.
//!
//! After a failed write the writer stops accepting writes (fail-stop): what the failed write
//! left on disk is unknown until the log is reopened, and an append that may not be durable
//! must never be acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use tracing::{debug, error};

use crate::error::{Error, Result};
use crate::loglet::{Loglet, LogletState};
use crate::options::LogOptions;
use crate::recent::Recent;
use crate::record::{Entry, Lsn};

/// A request to the writer.
pub(crate) enum Command {
    Append { entries: Vec<Entry>, bytes: usize, reply: oneshot::Sender<Result<Lsn>> },
    Trim { upto: Lsn, reply: oneshot::Sender<Result<()>> },
    Seal { reply: oneshot::Sender<Result<Lsn>> },
    Close { reply: oneshot::Sender<Result<()>> },
}

/// What readers may see: only durable records, and the log's condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Published {
    pub(crate) tail: Lsn,
    pub(crate) trim_point: Lsn,
    pub(crate) sealed: bool,
    pub(crate) closed: bool,
    /// Why the writer stopped after a failed write.
    pub(crate) failed: Option<Arc<str>>,
}

impl Published {
    pub(crate) fn new(state: LogletState) -> Self {
        Published { tail: state.tail, trim_point: state.trim_point, sealed: state.sealed, closed: false, failed: None }
    }
}

/// Counters of the write path, for benchmarks and monitoring.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) appends: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) group_commits: AtomicU64,
    pub(crate) recent_reads: AtomicU64,
    pub(crate) loglet_reads: AtomicU64,
}

/// A group of appends being made durable together.
#[derive(Default)]
struct Group {
    entries: Vec<Entry>,
    bytes: usize,
    /// Each waiting append: how many entries it put into `entries`, and where to reply.
    waiters: Vec<(usize, oneshot::Sender<Result<Lsn>>)>,
}

impl Group {
    fn add(&mut self, entries: Vec<Entry>, bytes: usize, reply: oneshot::Sender<Result<Lsn>>) {
        self.waiters.push((entries.len(), reply));
        self.entries.extend(entries);
        self.bytes += bytes;
    }

    fn fits(&self, records: usize, bytes: usize, options: &LogOptions) -> bool {
        self.entries.len() + records <= options.batch_records_max && self.bytes + bytes <= options.batch_bytes_max
    }
}

/// Group commits whose replies wait for the completer thread. Small: the completer only
/// wakes tasks, and a full queue makes the writer wait (backpressure, never a buffer).
pub(crate) const COMPLETIONS_QUEUED_MAX: usize = 4;

/// Group commits of at most this many appends are answered on the writer itself: waking a
/// task or two costs less than handing them to the completer (one thread switch more on
/// the path of a lone appender).
pub(crate) const COMPLETE_INLINE_MAX: usize = 2;

/// A durable group commit whose appenders are still to be answered.
pub(crate) struct Completion {
    first: Lsn,
    waiters: Vec<(usize, oneshot::Sender<Result<Lsn>>)>,
}

/// The completer thread: answers the appenders of durable group commits, so that waking
/// hundreds of tasks never delays the writer's next write.
pub(crate) fn complete(completions: Receiver<Completion>) {
    for completion in completions {
        completion.answer();
    }
}

impl Completion {
    /// Answers every appender with the LSN of its first record.
    fn answer(self) {
        let mut lsn = self.first;
        for (count, reply) in self.waiters {
            let _ = reply.send(Ok(lsn));
            lsn += count as Lsn;
        }
    }
}

pub(crate) struct Writer {
    pub(crate) loglet: Arc<dyn Loglet>,
    pub(crate) completions: SyncSender<Completion>,
    pub(crate) commands: Receiver<Command>,
    pub(crate) published: Arc<watch::Sender<Published>>,
    pub(crate) recent: Arc<Recent>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) options: LogOptions,
}

impl Writer {
    /// Runs until a `Close` arrives or every handle to the log is dropped.
    pub(crate) fn run(self) {
        let mut state = self.loglet.state();
        let mut failed: Option<Arc<str>> = None;
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
            match command {
                Command::Append { entries, bytes, reply } => {
                    let mut group = Group::default();
                    group.add(entries, bytes, reply);
                    while let Ok(next) = self.commands.try_recv() {
                        match next {
                            Command::Append { entries, bytes, reply } if group.fits(entries.len(), bytes, &self.options) => {
                                group.add(entries, bytes, reply);
                            }
                            other => {
                                held = Some(other);
                                break;
                            }
                        }
                    }
                    lone = group.waiters.len() <= COMPLETE_INLINE_MAX;
                    self.commit(group, &mut state, &mut failed);
                }
                Command::Trim { upto, reply } => {
                    let _ = reply.send(self.trim(upto, &mut state, failed.as_ref()));
                }
                Command::Seal { reply } => {
                    let _ = reply.send(self.seal(&mut state, failed.as_ref()));
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

    fn commit(&self, group: Group, state: &mut LogletState, failed: &mut Option<Arc<str>>) {
        let refusal = if let Some(cause) = failed.as_ref() {
            Some(Error::Failed { cause: cause.to_string() })
        } else if state.sealed {
            Some(Error::Sealed { tail: state.tail })
        } else {
            None
        };
        if let Some(err) = refusal {
            for (_, reply) in group.waiters {
                let _ = reply.send(Err(err.clone()));
            }
            return;
        }
        match self.loglet.append(&group.entries) {
            Ok(first) if first == state.tail + 1 => {
                let records = group.entries.len() as Lsn;
                // Into the ring before the tail moves: a reader clamped to the new tail finds
                // every record up to it there (or reads the loglet).
                self.recent.push(first, group.entries);
                state.tail += records;
                self.published.send_modify(|p| p.tail = state.tail);
                self.counters.appends.fetch_add(group.waiters.len() as u64, Ordering::Relaxed);
                self.counters.records.fetch_add(records, Ordering::Relaxed);
                self.counters.bytes.fetch_add(group.bytes as u64, Ordering::Relaxed);
                self.counters.group_commits.fetch_add(1, Ordering::Relaxed);
                // The tail is published: reads see these records before their appenders
                // are answered, never after.
                // Appenders may be answered out of order across groups: every record up to the
                // tail is durable by now, whoever hears of it first.
                let completion = Completion { first, waiters: group.waiters };
                if completion.waiters.len() <= COMPLETE_INLINE_MAX {
                    completion.answer();
                } else if let Err(unsent) = self.completions.send(completion) {
                    error!("the log's completer thread stopped; answering on the writer");
                    unsent.0.answer();
                }
            }
            outcome => {
                let err = match outcome {
                    Ok(first) => Error::Internal(format!("loglet appended at LSN {first}, expected {}", state.tail + 1)),
                    Err(err) => err,
                };
                error!(%err, "log write failed; the log stops accepting writes until reopened");
                let cause: Arc<str> = err.to_string().into();
                *failed = Some(Arc::clone(&cause));
                self.published.send_modify(|p| p.failed = Some(cause));
                for (_, reply) in group.waiters {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }

    fn trim(&self, upto: Lsn, state: &mut LogletState, failed: Option<&Arc<str>>) -> Result<()> {
        if let Some(cause) = failed {
            return Err(Error::Failed { cause: cause.to_string() });
        }
        if upto > state.tail + 1 {
            return Err(Error::TrimBeyondTail { upto, tail: state.tail });
        }
        if upto <= state.trim_point {
            return Ok(()); // already trimmed that far
        }
        self.loglet.trim(upto)?;
        state.trim_point = upto;
        self.published.send_modify(|p| p.trim_point = upto);
        debug!(trim_point = upto, "log trimmed");
        Ok(())
    }

    fn seal(&self, state: &mut LogletState, failed: Option<&Arc<str>>) -> Result<Lsn> {
        if let Some(cause) = failed {
            return Err(Error::Failed { cause: cause.to_string() });
        }
        let tail = self.loglet.seal()?;
        if tail != state.tail {
            return Err(Error::Internal(format!("loglet sealed at {tail}, the writer's tail is {}", state.tail)));
        }
        state.sealed = true;
        self.published.send_modify(|p| p.sealed = true);
        debug!(tail, "log sealed");
        Ok(tail)
    }

    fn close(&self) -> Result<()> {
        self.published.send_modify(|p| p.closed = true);
        self.loglet.close()
    }
}


impl Command {
    /// Answers a command that will never be carried out.
    pub(crate) fn refuse(self, err: &Error) {
        match self {
            Command::Append { reply, .. } => drop(reply.send(Err(err.clone()))),
            Command::Trim { reply, .. } => drop(reply.send(Err(err.clone()))),
            Command::Seal { reply } => drop(reply.send(Err(err.clone()))),
            Command::Close { reply } => drop(reply.send(Ok(()))),
        }
    }
}
