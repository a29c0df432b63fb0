//! The conformance suite that every [`Loglet`] implementation must pass, exercised through
//! a [`LogBook`] (feature `test-util`).
//!
//! Run it for an implementation with [`loglet_conformance_tests!`](crate::loglet_conformance_tests),
//! giving a function that returns a fresh, empty loglet:
//!
//! ```text
//! fn fresh() -> comb_log::conformance::Fresh { /* ... */ }
//! mod memory { comb_log::loglet_conformance_tests!(super::fresh); }
//! ```

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::testkit::{ControlledLoglet, read_all};
use crate::{ANY_TAG, Entry, Error, LogBook, LogOptions, Loglet, Lsn, Record};

/// A fresh, empty loglet, and whatever must live as long as it (a temporary directory).
pub struct Fresh {
    pub loglet: Arc<dyn Loglet>,
    pub guard: Box<dyn Any + Send>,
}

impl std::fmt::Debug for Fresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fresh").field("state", &self.loglet.state()).finish_non_exhaustive()
    }
}

/// A factory of fresh loglets. Called on a blocking thread.
pub type Factory = fn() -> Fresh;

/// Generates one `#[tokio::test]` per conformance case for the loglets of `$factory`.
#[macro_export]
macro_rules! loglet_conformance_tests {
    ($factory:path) => {
        $crate::loglet_conformance_tests!(@cases $factory;
            appends_get_dense_lsns_from_one,
            batches_are_contiguous_and_validated_whole,
            payloads_and_tags_round_trip_exactly,
            reads_by_tag_see_exactly_the_tagged_records,
            read_next_edges,
            read_prev_edges,
            bounds_are_enforced_and_named,
            full_queue_refuses_and_waiting_appends_commit_together,
            callbacks_hear_durable_appends_and_refusals_return_at_once,
            waking_callbacks_follow_the_quick_ones_and_leave_the_writer_when_many,
            concurrent_appenders_get_distinct_dense_lsns,
            trim_discards_and_reads_below_fail,
            reads_racing_trims_see_each_trim_wholly,
            seal_refuses_appends_and_keeps_reads,
            subscribe_waits_for_new_appends,
            subscribers_read_recent_records_from_memory,
            subscribe_ends_at_seal_and_fails_below_trim,
            failed_write_is_never_acknowledged,
            written_records_stay_unseen_until_synced,
            appends_arriving_during_a_write_share_its_sync,
            failed_sync_of_a_grown_group_is_never_acknowledged,
            failed_sync_is_never_acknowledged,
            slow_storage_calls_are_counted,
            close_refuses_everything_after);
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                for recent_bytes_max in $crate::conformance::RECENT_BYTES_VARIANTS {
                    $crate::conformance::run_case($crate::conformance::$case($factory), recent_bytes_max).await;
                }
            }
        )*
    };
}

tokio::task_local! {
    /// The logs a case opened, closed when it ends.
    static OPENED: std::cell::RefCell<Vec<LogBook>>;
    /// The `recent-bytes-max` of every log the case opens.
    static RECENT_BYTES_MAX: usize;
}

/// Each case runs with every read going to the loglet (no recent records in memory: the
/// loglet's own reads are what the suite checks), with room for a few recent records (reads
/// at the ring's edge go either way), and with the default ring (reads near the tail come
/// from memory).
pub const RECENT_BYTES_VARIANTS: [usize; 3] = [0, 2_048, 16 << 20];

/// Runs a case with logs keeping `recent_bytes_max` bytes of recent records, then closes
/// every log it opened: a log left to close on its writer thread after the last handle is
/// gone may still be closing its RocksDB when the test process exits, and RocksDB's
/// background threads then crash the exit ("pthread lock: Invalid argument", SIGSEGV).
pub async fn run_case(case: impl std::future::Future<Output = ()>, recent_bytes_max: usize) {
    let case = RECENT_BYTES_MAX.scope(recent_bytes_max, case);
    OPENED
        .scope(std::cell::RefCell::new(Vec::new()), async move {
            case.await;
            let logs = OPENED.with(|opened| std::mem::take(&mut *opened.borrow_mut()));
            for log in logs {
                // A case may leave its log failed or closed; closing is all that matters here.
                let _ = log.close().await;
            }
        })
        .await;
}

/// Guards every wait of the suite: a hang fails the test instead of stalling it.
const CASE_TIMEOUT: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(CASE_TIMEOUT, future).await.unwrap_or_else(|_| panic!("{what} did not finish within {CASE_TIMEOUT:?}"))
}

/// A log over a fresh loglet, wrapped so the case can hold or fail writes.
struct Subject {
    log: LogBook,
    control: Arc<ControlledLoglet>,
    _guard: Box<dyn Any + Send>,
}

async fn open(factory: Factory, mut options: LogOptions) -> Subject {
    if let Ok(recent_bytes_max) = RECENT_BYTES_MAX.try_with(|bytes| *bytes) {
        options.recent_bytes_max = recent_bytes_max;
    }
    let fresh = tokio::task::spawn_blocking(factory).await.expect("the loglet factory panicked");
    let state = fresh.loglet.state();
    assert_eq!((state.tail, state.trim_point, state.sealed), (0, 1, false), "a fresh loglet must be empty");
    let control = Arc::new(ControlledLoglet::new(fresh.loglet));
    let log = LogBook::open_shared(Arc::clone(&control) as Arc<dyn Loglet>, options).expect("open the log");
    let _ = OPENED.try_with(|opened| opened.borrow_mut().push(log.clone()));
    Subject { log, control, _guard: fresh.guard }
}

async fn open_default(factory: Factory) -> Subject {
    open(factory, LogOptions::default()).await
}

fn payload(lsn_hint: u64) -> Bytes {
    Bytes::from(format!("record-{lsn_hint}"))
}

async fn all_records(log: &LogBook) -> Vec<Record> {
    read_all(log).await.expect("read every record")
}

/// Sequential appends get 1, 2, 3, ...; the tail follows; an empty log has tail 0.
pub async fn appends_get_dense_lsns_from_one(factory: Factory) {
    let s = open_default(factory).await;
    assert_eq!(s.log.tail(), 0);
    assert_eq!(s.log.read_next(ANY_TAG, 0).await.unwrap(), None);
    for expected in 1..=50 {
        let lsn = s.log.append(&[7], payload(expected)).await.unwrap();
        assert_eq!(lsn, expected);
        assert_eq!(s.log.tail(), expected);
    }
    let lsns: Vec<Lsn> = all_records(&s.log).await.iter().map(|r| r.lsn).collect();
    assert_eq!(lsns, (1..=50).collect::<Vec<_>>());
    assert_eq!(s.log.stats().records, 50);
}

/// A batch gets consecutive LSNs and its first is returned; an invalid entry anywhere in a
/// batch refuses the whole batch.
pub async fn batches_are_contiguous_and_validated_whole(factory: Factory) {
    let s = open_default(factory).await;
    s.log.append(&[1], "before").await.unwrap();
    let entries: Vec<Entry> = (0..10).map(|i| Entry::new([1 + i % 3], payload(i))).collect();
    let first = s.log.append_batch(entries.clone()).await.unwrap();
    assert_eq!(first, 2);
    assert_eq!(s.log.tail(), 11);
    let records = s.log.read_range(ANY_TAG, 2, 100).await.unwrap();
    assert_eq!(records.len(), 10);
    for (i, (record, entry)) in records.iter().zip(&entries).enumerate() {
        assert_eq!(record.lsn, 2 + i as Lsn);
        assert_eq!((&record.tags, &record.payload), (&entry.tags, &entry.payload));
    }
    assert_eq!(s.log.append_batch(Vec::new()).await, Err(Error::EmptyBatch));
    let bad = vec![Entry::new([1], "fine"), Entry::new([0], "reserved tag")];
    assert_eq!(s.log.append_batch(bad).await, Err(Error::ReservedTag));
    assert_eq!(s.log.tail(), 11, "a refused batch must leave nothing behind");
}

/// What goes in comes out: empty and binary payloads, many tags (sorted, deduplicated).
pub async fn payloads_and_tags_round_trip_exactly(factory: Factory) {
    let s = open_default(factory).await;
    let binary: Bytes = (0..=255u8).cycle().take(70_000).collect::<Vec<u8>>().into();
    let cases = vec![
        Entry::new(Vec::new(), Bytes::new()),
        Entry::new([u64::MAX, 3, 3, 1], binary.clone()),
        Entry::new((1..=64).rev().collect::<Vec<_>>(), Bytes::from_static(b"\0\0zero\0")),
    ];
    for entry in &cases {
        s.log.append(&entry.tags, entry.payload.clone()).await.unwrap();
    }
    let records = all_records(&s.log).await;
    assert_eq!(records[0], Record { lsn: 1, tags: vec![], payload: Bytes::new() });
    assert_eq!(records[1], Record { lsn: 2, tags: vec![1, 3, u64::MAX], payload: binary });
    assert_eq!(records[2].tags, (1..=64).collect::<Vec<_>>());
    assert_eq!(&records[2].payload[..], b"\0\0zero\0");
}

/// A read by tag returns the records that carry it and no other; tag 0 reads every record.
pub async fn reads_by_tag_see_exactly_the_tagged_records(factory: Factory) {
    let s = open_default(factory).await;
    // LSN i carries tag 2 when i is even, tag 3 when i is a multiple of 3.
    for i in 1..=30u64 {
        let mut tags = Vec::new();
        if i % 2 == 0 {
            tags.push(2);
        }
        if i % 3 == 0 {
            tags.push(3);
        }
        s.log.append(&tags, payload(i)).await.unwrap();
    }
    for tag in [2u64, 3] {
        let lsns: Vec<Lsn> = s.log.read_range(tag, 1, usize::MAX).await.unwrap().iter().map(|r| r.lsn).collect();
        assert_eq!(lsns, (1..=30).filter(|i| i % tag == 0).collect::<Vec<_>>(), "tag {tag}");
    }
    assert_eq!(s.log.read_range(ANY_TAG, 1, usize::MAX).await.unwrap().len(), 30);
    assert!(s.log.read_range(99, 1, usize::MAX).await.unwrap().is_empty());
    let limited: Vec<Lsn> = s.log.read_range(3, 4, 3).await.unwrap().iter().map(|r| r.lsn).collect();
    assert_eq!(limited, vec![6, 9, 12]);
}

/// `read_next(tag, min)` at, before, between and beyond records.
pub async fn read_next_edges(factory: Factory) {
    let s = open_default(factory).await;
    for (i, tag) in [5u64, 6, 5, 6, 6].into_iter().enumerate() {
        s.log.append(&[tag], payload(i as u64 + 1)).await.unwrap();
    }
    let next = |tag, min| {
        let log = s.log.clone();
        async move { log.read_next(tag, min).await.unwrap().map(|r| r.lsn) }
    };
    assert_eq!(next(ANY_TAG, 0).await, Some(1));
    assert_eq!(next(ANY_TAG, 3).await, Some(3));
    assert_eq!(next(ANY_TAG, 5).await, Some(5));
    assert_eq!(next(ANY_TAG, 6).await, None);
    assert_eq!(next(ANY_TAG, u64::MAX).await, None);
    assert_eq!(next(5, 1).await, Some(1));
    assert_eq!(next(5, 2).await, Some(3));
    assert_eq!(next(5, 4).await, None);
    assert_eq!(next(6, 3).await, Some(4));
    assert_eq!(next(7, 0).await, None);
}

/// `read_prev(tag, max)` at, after, between and before records.
pub async fn read_prev_edges(factory: Factory) {
    let s = open_default(factory).await;
    assert_eq!(s.log.read_prev(ANY_TAG, u64::MAX).await.unwrap(), None, "empty log");
    for (i, tag) in [5u64, 6, 5, 6, 6].into_iter().enumerate() {
        s.log.append(&[tag], payload(i as u64 + 1)).await.unwrap();
    }
    let prev = |tag, max| {
        let log = s.log.clone();
        async move { log.read_prev(tag, max).await.unwrap().map(|r| r.lsn) }
    };
    assert_eq!(prev(ANY_TAG, u64::MAX).await, Some(5));
    assert_eq!(prev(ANY_TAG, 5).await, Some(5));
    assert_eq!(prev(ANY_TAG, 2).await, Some(2));
    assert_eq!(prev(ANY_TAG, 0).await, None);
    assert_eq!(prev(5, u64::MAX).await, Some(3));
    assert_eq!(prev(5, 2).await, Some(1));
    assert_eq!(prev(5, 1).await, Some(1));
    assert_eq!(prev(6, 1).await, None);
    assert_eq!(prev(6, 4).await, Some(4));
    assert_eq!(prev(7, u64::MAX).await, None);
    let record = s.log.read_prev(6, 3).await.unwrap().unwrap();
    assert_eq!(record, Record { lsn: 2, tags: vec![6], payload: payload(2) });
}

/// Every bound refuses with an error naming the bound and appends nothing.
pub async fn bounds_are_enforced_and_named(factory: Factory) {
    let options = LogOptions { record_bytes_max: 100, tags_per_record_max: 3, batch_records_max: 4, batch_bytes_max: 250, ..LogOptions::default() };
    let s = open(factory, options).await;
    assert_eq!(s.log.append(&[1], vec![0u8; 100]).await, Ok(1), "a record of exactly the limit fits");
    assert_eq!(s.log.append(&[1], vec![0u8; 101]).await, Err(Error::RecordTooLarge { size_bytes: 101, limit_bytes: 100 }));
    assert_eq!(s.log.append(&[1, 2, 3, 4], "x").await, Err(Error::TooManyTags { count: 4, limit: 3 }));
    assert_eq!(s.log.append(&[1, 1, 2, 2, 3, 3], "x").await, Ok(2), "duplicate tags count once");
    let five: Vec<Entry> = (0..5).map(|_| Entry::new([1], "x")).collect();
    assert_eq!(s.log.append_batch(five).await, Err(Error::BatchTooLarge { records: 5, bytes: 5, records_limit: 4, bytes_limit: 250 }));
    let heavy: Vec<Entry> = (0..3).map(|_| Entry::new([1], vec![0u8; 100])).collect();
    assert!(matches!(s.log.append_batch(heavy).await, Err(Error::BatchTooLarge { bytes: 300, .. })));
    assert_eq!(s.log.tail(), 2);
    let err = s.log.append(&[1], vec![0u8; 101]).await.unwrap_err();
    assert!(err.to_string().contains("record-bytes-max"), "the message names the option: {err}");
    assert!(!err.is_retryable());
}

/// With the writer busy, at most `queue-appends-max` appends wait; one more is refused at
/// once (retryable). When the writer frees up, every waiting append is made durable by one
/// group commit, in queue order.
pub async fn full_queue_refuses_and_waiting_appends_commit_together(factory: Factory) {
    let s = open(factory, LogOptions { queue_appends_max: 4, ..LogOptions::default() }).await;
    let (first, waiting) = hold_lone_then_queue(&s, 4).await;
    let refused = s.log.append(&[1], "one too many").await.unwrap_err();
    assert_eq!(refused, Error::QueueFull { limit: 4 });
    assert!(refused.is_retryable());

    s.control.release();
    assert_eq!(within("the held append", first).await.unwrap(), Ok(1));
    for (i, append) in waiting.into_iter().enumerate() {
        assert_eq!(within("a waiting append", append).await, Ok(2 + i as Lsn));
    }
    let stats = s.log.stats();
    assert_eq!((stats.appends, stats.records, stats.group_commits), (5, 5, 2), "the four waiting appends share one group commit");
    assert_eq!(s.log.append(&[1], "after").await, Ok(6), "the queue accepts appends again");
}

/// `append_batch_then`: the callback hears of its batch once durable (never before), with
/// the batch's first LSN; an append refused before the writer saw it is refused by the call
/// itself and its callback is never called; a failed write reaches the callback as an
/// error; a closed log refuses at once.
pub async fn callbacks_hear_durable_appends_and_refusals_return_at_once(factory: Factory) {
    let s = open(factory, LogOptions { queue_appends_max: 4, ..LogOptions::default() }).await;
    let (heard, hear) = std::sync::mpsc::channel::<(&'static str, crate::Result<Lsn>)>();
    let (called_on, threads) = std::sync::mpsc::channel::<Option<String>>();
    let callback = |name: &'static str| {
        let (heard, called_on) = (heard.clone(), called_on.clone());
        move |result: crate::Result<Lsn>| {
            called_on.send(std::thread::current().name().map(str::to_owned)).expect("the case listens");
            heard.send((name, result)).expect("the case listens")
        }
    };
    let (lone, waiting) = hold_lone_then_queue(&s, 2).await;
    let pair = vec![Entry::new([1], "pair 1"), Entry::new([2], "pair 2")];
    s.log.append_batch_then(pair, callback("pair")).expect("the queue has room for a third append");
    s.log.append_batch_then(vec![Entry::new([1], "last")], callback("last")).expect("and for a fourth");
    assert_eq!(s.log.append_batch_then(vec![Entry::new([1], "over")], callback("over")), Err(Error::QueueFull { limit: 4 }));
    assert_eq!(s.log.append_batch_then(Vec::new(), callback("empty")), Err(Error::EmptyBatch));
    assert!(hear.try_recv().is_err(), "nothing is heard while the writes are held");

    s.control.release();
    assert_eq!(within("the held append", lone).await.unwrap(), Ok(1));
    for append in waiting {
        within("a waiting append", append).await.unwrap();
    }
    let mut answers = within("the callbacks", hear_n(&hear, 2)).await;
    answers.sort_by_key(|(name, _)| *name);
    assert_eq!(answers, vec![("last", Ok(6)), ("pair", Ok(4))], "each hears its first LSN: 1 held, 2 and 3 waiting, 4 and 5 the pair");
    // A group of four appends: its two tasks are few enough to be woken on the writer too;
    // its callbacks always are, however large the group.
    assert_eq!(
        threads.try_iter().collect::<Vec<_>>(),
        vec![Some("comb-log-writer".to_owned()); 2],
        "callbacks are called by the writer that synced their group"
    );
    assert_eq!(s.log.read_next(2, 1).await.unwrap().map(|r| (r.lsn, r.payload)), Some((5, Bytes::from_static(b"pair 2"))));

    s.control.fail_next_append();
    s.log.append_batch_then(vec![Entry::new([1], "lost")], callback("lost")).expect("enqueued");
    let lost = within("the failed write's callback", hear_n(&hear, 1)).await;
    assert!(matches!(lost.as_slice(), [("lost", Err(Error::Storage { .. }))]), "{lost:?}");
    assert_eq!(s.log.tail(), 6, "nothing of the failed write is published");
    // The log has failed: a later append is refused at once, not queued to fail later.
    let after = s.log.append_batch_then(vec![Entry::new([1], "after")], callback("after"));
    assert!(matches!(after, Err(Error::Failed { .. })), "an append after the failure: {after:?}");

    // A failed log may fail to close its loglet too; either way it is closed after.
    let _ = s.log.close().await;
    assert_eq!(s.log.append_batch_then(vec![Entry::new([1], "closed")], callback("closed")), Err(Error::Closed));
    drop(heard);
    let rest: Vec<_> = hear.try_iter().collect();
    assert!(rest.is_empty(), "refused appends were never called back: {rest:?}");
}

/// [`LogBook::append_batch_then_wake`]: each append's quick callback, then its waking one,
/// both with its first LSN. The quick ones are called on the writer; the waking ones too when
/// their group has only a couple, else on the completer, as tasks are woken. A refused
/// append calls neither; a failed write calls both with the error.
pub async fn waking_callbacks_follow_the_quick_ones_and_leave_the_writer_when_many(factory: Factory) {
    let s = open(factory, LogOptions { queue_appends_max: 8, ..LogOptions::default() }).await;
    // (callback, append, result, thread), in the order they were called.
    type Heard = (&'static str, &'static str, crate::Result<Lsn>, Option<String>);
    let (heard, hear) = std::sync::mpsc::channel::<Heard>();
    let callback = |kind: &'static str, name: &'static str| {
        let heard = heard.clone();
        move |result: crate::Result<Lsn>| heard.send((kind, name, result, std::thread::current().name().map(str::to_owned))).expect("the case listens")
    };
    let append = |name: &'static str, entries: Vec<Entry>| s.log.append_batch_then_wake(entries, callback("quick", name), callback("wake", name));

    // Three appends behind a held one: one group commit, with three callbacks to wake.
    let (lone, _) = hold_lone_then_queue(&s, 0).await;
    append("a", vec![Entry::new([1], "a")]).expect("queued");
    append("b", vec![Entry::new([1], "b 1"), Entry::new([2], "b 2")]).expect("queued");
    append("c", vec![Entry::new([1], "c")]).expect("queued");
    assert_eq!(append("empty", Vec::new()), Err(Error::EmptyBatch));
    s.control.release();
    assert_eq!(within("the held append", lone).await.unwrap(), Ok(1));
    let answers = within("the callbacks", hear_n(&hear, 6)).await;
    for (name, lsn) in [("a", 2), ("b", 3), ("c", 5)] {
        let mine: Vec<_> = answers.iter().filter(|(_, n, _, _)| *n == name).collect();
        assert_eq!(mine.len(), 2, "{name}: each callback once: {answers:?}");
        let (quick, wake) = (mine[0], mine[1]);
        assert_eq!((quick.0, &quick.2), ("quick", &Ok(lsn)), "{name}: the quick callback first, with the first LSN");
        assert_eq!((wake.0, &wake.2), ("wake", &Ok(lsn)), "{name}: then the waking one, with the same");
        assert_eq!(quick.3.as_deref(), Some("comb-log-writer"), "{name}: the quick one on the writer");
        assert_eq!(wake.3.as_deref(), Some("comb-log-completer"), "{name}: three to wake are many: on the completer");
    }

    // A lone append: its one callback to wake is woken on the writer.
    append("d", vec![Entry::new([1], "d")]).expect("queued");
    let answers = within("a lone append's callbacks", hear_n(&hear, 2)).await;
    let called: Vec<_> = answers.iter().map(|(kind, _, result, thread)| (*kind, result.clone(), thread.as_deref())).collect();
    assert_eq!(called, vec![("quick", Ok(6), Some("comb-log-writer")), ("wake", Ok(6), Some("comb-log-writer"))]);

    // A failed write: both hear the error. After it, an append is refused and calls neither.
    s.control.fail_next_append();
    append("lost", vec![Entry::new([1], "lost")]).expect("queued");
    let answers = within("the failed write's callbacks", hear_n(&hear, 2)).await;
    let called: Vec<_> = answers.iter().map(|(kind, name, result, _)| (*kind, *name, matches!(result, Err(Error::Storage { .. })))).collect();
    assert_eq!(called, vec![("quick", "lost", true), ("wake", "lost", true)], "both hear the failure, in order: {answers:?}");
    assert!(matches!(append("after", vec![Entry::new([1], "after")]), Err(Error::Failed { .. })));
    let _ = s.log.close().await;
    drop(heard);
    let rest: Vec<_> = hear.try_iter().map(|(kind, name, _, _)| (kind, name)).collect();
    assert!(rest.is_empty(), "refused appends were never called back: {rest:?}");
}

/// Waits for `n` callbacks' answers without blocking the runtime.
async fn hear_n<T>(hear: &std::sync::mpsc::Receiver<T>, n: usize) -> Vec<T> {
    let mut answers = Vec::new();
    while answers.len() < n {
        match hear.try_recv() {
            Ok(answer) => answers.push(answer),
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
    answers
}

/// Many appenders at once: every LSN distinct, together dense, each record the one its
/// appender wrote, each appender's records in its own order.
pub async fn concurrent_appenders_get_distinct_dense_lsns(factory: Factory) {
    for overlap_syncs in [true, false] {
        concurrent_appenders_with(factory, LogOptions { overlap_syncs, ..LogOptions::default() }).await;
    }
}

async fn concurrent_appenders_with(factory: Factory, options: LogOptions) {
    const APPENDERS: u64 = 16;
    const EACH: u64 = 100;
    let overlap_syncs = options.overlap_syncs;
    let s = open(factory, options).await;
    let tasks: Vec<_> = (0..APPENDERS)
        .map(|a| {
            let log = s.log.clone();
            tokio::spawn(async move {
                let mut lsns = Vec::new();
                for i in 0..EACH {
                    lsns.push(log.append(&[a + 1], format!("{a}/{i}")).await.unwrap());
                }
                lsns
            })
        })
        .collect();
    let mut written = std::collections::BTreeMap::new();
    for (a, task) in tasks.into_iter().enumerate() {
        let lsns = within("an appender", task).await.unwrap();
        assert!(lsns.windows(2).all(|w| w[0] < w[1]), "appender {a}'s LSNs must follow its order (overlap-syncs {overlap_syncs})");
        for (i, lsn) in lsns.into_iter().enumerate() {
            assert!(written.insert(lsn, (a as u64, i)).is_none(), "LSN {lsn} given twice (overlap-syncs {overlap_syncs})");
        }
    }
    let total = APPENDERS * EACH;
    assert_eq!(written.keys().copied().collect::<Vec<_>>(), (1..=total).collect::<Vec<_>>());
    for record in all_records(&s.log).await {
        let (a, i) = written[&record.lsn];
        assert_eq!(record.payload, Bytes::from(format!("{a}/{i}")));
        assert_eq!(record.tags, vec![a + 1]);
    }
    let stats = s.log.stats();
    assert_eq!((stats.appends, stats.records), (total, total));
    assert!(stats.group_commits <= total);
}

/// Trim discards below its point: reads there fail naming the trim point, reads at and
/// above it work, tags no longer see trimmed records, appends continue densely.
pub async fn trim_discards_and_reads_below_fail(factory: Factory) {
    let s = open_default(factory).await;
    for i in 1..=10 {
        s.log.append(&[1 + i % 2], payload(i)).await.unwrap();
    }
    s.log.trim(1).await.unwrap();
    assert_eq!(s.log.read_next(ANY_TAG, 0).await.unwrap().map(|r| r.lsn), Some(1), "trim(1) trims nothing");
    s.log.trim(5).await.unwrap();
    assert_eq!(s.log.trim_point(), 5);
    assert_eq!(s.log.read_next(ANY_TAG, 3).await, Err(Error::Trimmed { lsn: 3, trim_point: 5 }));
    assert_eq!(s.log.read_prev(ANY_TAG, 4).await, Err(Error::Trimmed { lsn: 4, trim_point: 5 }));
    // The loglet refuses them too (the log checks first, so the loglet's refusal answers a
    // read that raced the trim), rather than skip what was trimmed.
    assert_eq!(s.control.scan(ANY_TAG, 3, 10, 10), Err(Error::Trimmed { lsn: 3, trim_point: 5 }));
    assert_eq!(s.control.scan(1, 4, 10, 10), Err(Error::Trimmed { lsn: 4, trim_point: 5 }));
    assert_eq!(s.log.read_next(ANY_TAG, 5).await.unwrap().map(|r| r.lsn), Some(5));
    assert_eq!(s.log.read_prev(2, 6).await.unwrap().map(|r| r.lsn), Some(5), "tag 2 is on odd LSNs");
    assert_eq!(s.log.read_prev(1, 5).await.unwrap(), None, "tag 1's record 4 is trimmed");
    let tagged: Vec<Lsn> = s.log.read_range(1, 5, 100).await.unwrap().iter().map(|r| r.lsn).collect();
    assert_eq!(tagged, vec![6, 8, 10]);
    s.log.trim(3).await.unwrap();
    assert_eq!(s.log.trim_point(), 5, "trimming below the trim point changes nothing");
    assert_eq!(s.log.trim(12).await, Err(Error::TrimBeyondTail { upto: 12, tail: 10 }));
    s.log.trim(11).await.unwrap();
    assert!(s.log.read_range(ANY_TAG, 11, 10).await.unwrap().is_empty());
    assert_eq!(s.log.read_prev(ANY_TAG, u64::MAX).await, Ok(None), "everything trimmed: nothing before the end");
    assert_eq!(s.log.append(&[1], "after trim").await, Ok(11));
    assert_eq!(s.log.read_next(1, 11).await.unwrap().map(|r| r.payload), Some(Bytes::from_static(b"after trim")));
}

/// Reads racing trims see each trim wholly or not at all: a read from the trim point it
/// last saw fails `Trimmed`, or returns the records from there, the first of them where it
/// asked; never a false `Corrupt` (an indexed record gone), never records from further on.
pub async fn reads_racing_trims_see_each_trim_wholly(factory: Factory) {
    const RECORDS: u64 = 600;
    let s = open_default(factory).await;
    let entries: Vec<Entry> = (1..=RECORDS).map(|i| Entry::new([1 + i % 2], payload(i))).collect();
    s.log.append_batch(entries).await.unwrap();
    let trims = {
        let log = s.log.clone();
        tokio::spawn(async move {
            for upto in (2..RECORDS).step_by(3) {
                log.trim(upto).await.unwrap();
            }
        })
    };
    let (mut refused, mut answered) = (0, 0);
    loop {
        // Once more after the last trim: that read, at least, is answered.
        let done = trims.is_finished();
        let from = s.log.trim_point();
        // Tag 1 is on even LSNs: the first a read by it can return.
        for (tag, first) in [(ANY_TAG, from), (1, from + from % 2)] {
            match within("a read racing trims", s.log.read_range(tag, from, 64)).await {
                Err(Error::Trimmed { lsn, .. }) => {
                    assert_eq!(lsn, from);
                    refused += 1;
                }
                Ok(records) => {
                    answered += 1;
                    let lsns: Vec<Lsn> = records.iter().map(|r| r.lsn).collect();
                    assert_eq!(lsns.first(), Some(&first), "a read by tag {tag} from {from}: {lsns:?}");
                    let step = if tag == ANY_TAG { 1 } else { 2 };
                    assert!(lsns.windows(2).all(|w| w[1] == w[0] + step), "a read by tag {tag} from {from} is dense: {lsns:?}");
                }
                Err(err) => panic!("a read by tag {tag} from {from} racing a trim: {err}"),
            }
        }
        if done {
            break;
        }
    }
    within("the trims", trims).await.unwrap();
    assert!(answered > 0, "reads were answered ({refused} refused)");
}

/// After a seal, appends fail with `Sealed` carrying the tail, reads still work, and sealing
/// again returns the same tail.
pub async fn seal_refuses_appends_and_keeps_reads(factory: Factory) {
    let s = open_default(factory).await;
    for i in 1..=3 {
        s.log.append(&[1], payload(i)).await.unwrap();
    }
    assert_eq!(s.log.seal().await, Ok(3));
    assert!(s.log.is_sealed());
    assert_eq!(s.log.append(&[1], "late").await, Err(Error::Sealed { tail: 3 }));
    assert_eq!(s.log.append_batch(vec![Entry::new([1], "late")]).await, Err(Error::Sealed { tail: 3 }));
    assert_eq!(s.log.tail(), 3);
    assert_eq!(s.log.read_prev(1, u64::MAX).await.unwrap().map(|r| r.payload), Some(payload(3)));
    assert_eq!(s.log.seal().await, Ok(3), "sealing is idempotent");
    s.log.trim(2).await.unwrap();
    assert_eq!(s.log.trim_point(), 2, "a sealed log can still be trimmed");
}

/// A subscriber reads what exists, then waits, and wakes for records appended later; it
/// skips records without its tag.
pub async fn subscribe_waits_for_new_appends(factory: Factory) {
    let s = open_default(factory).await;
    s.log.append(&[1], "a").await.unwrap();
    s.log.append(&[2], "b").await.unwrap();
    let mut only_1 = s.log.subscribe(1, 1);
    let mut all = s.log.subscribe(0, ANY_TAG);
    assert_eq!(within("the first record", only_1.next()).await.unwrap().unwrap().lsn, 1);
    let mut pending = only_1.next();
    assert!(futures::poll!(&mut pending).is_pending(), "no record of tag 1 beyond LSN 1 yet");

    // Appended by another task while the subscriber waits.
    let writer = tokio::spawn({
        let log = s.log.clone();
        async move {
            log.append(&[2], "c").await.unwrap();
            log.append(&[1, 2], "d").await.unwrap();
            for i in 5..=40 {
                log.append(&[1 + i % 2], payload(i)).await.unwrap();
            }
        }
    });
    assert_eq!(within("a record appended later", pending).await.unwrap().unwrap().payload, Bytes::from_static(b"d"));
    within("the writer task", writer).await.unwrap();
    // From LSN 5 on, tag 1 is on the even LSNs.
    let expected: Vec<Lsn> = (5..=40).filter(|i| i % 2 == 0).collect();
    let mut lsns = Vec::new();
    while lsns.len() < expected.len() {
        let record = within("the next record of tag 1", only_1.next()).await.unwrap().unwrap();
        assert!(record.has_tag(1), "record {} has no tag 1", record.lsn);
        lsns.push(record.lsn);
    }
    assert_eq!(lsns, expected);
    let mut seen = Vec::new();
    while seen.len() < 40 {
        seen.push(within("the any-tag stream", all.next()).await.unwrap().unwrap().lsn);
    }
    assert_eq!(seen, (1..=40).collect::<Vec<_>>());
}

/// A subscriber that starts behind reads storage, then follows the tail from the recent
/// records in memory; whichever answers, it sees every record of its tag exactly once, with
/// its payload and tags.
pub async fn subscribers_read_recent_records_from_memory(factory: Factory) {
    let s = open_default(factory).await;
    let ring_bytes = s.log.options().recent_bytes_max;
    let tags = |i: u64| if i.is_multiple_of(3) { vec![1, 2] } else { vec![1 + i % 2] };
    for i in 1..=100 {
        s.log.append(&tags(i), payload(i)).await.unwrap();
    }
    let mut all = s.log.subscribe(1, ANY_TAG);
    let mut only_2 = s.log.subscribe(1, 2);
    let mut seen = Vec::new();
    let mut seen_2 = Vec::new();
    let check = |record: Record| {
        assert_eq!((record.tags.clone(), record.payload.clone()), (tags(record.lsn), payload(record.lsn)), "record {}", record.lsn);
        record.lsn
    };
    for _ in 1..=100 {
        seen.push(check(within("a record written before", all.next()).await.unwrap().unwrap()));
    }
    // Followed one by one from here: each new record is read right after it is durable.
    for i in 101..=130 {
        s.log.append(&tags(i), payload(i)).await.unwrap();
        seen.push(check(within("a record just written", all.next()).await.unwrap().unwrap()));
    }
    while seen_2.last() != Some(&129) {
        seen_2.push(check(within("a record of tag 2", only_2.next()).await.unwrap().unwrap()));
    }
    assert_eq!(seen, (1..=130).collect::<Vec<_>>());
    assert_eq!(seen_2, (1..=130).filter(|i| tags(*i).contains(&2)).collect::<Vec<_>>());

    let stats = s.log.stats();
    match ring_bytes {
        0 => assert_eq!(stats.recent_reads, 0, "no ring, no reads from it: {stats:?}"),
        // The first 100 records no longer all fit: the start is read from storage.
        bytes if bytes < 100 * 64 => assert!(stats.recent_reads >= 30 && stats.loglet_reads >= 1, "{stats:?}"),
        _ => assert!(stats.recent_reads >= 30 && stats.loglet_reads == 0, "everything was still in memory: {stats:?}"),
    }
}

/// A subscription ends after the last record of a sealed log, and fails (then ends) when its
/// position has been trimmed.
pub async fn subscribe_ends_at_seal_and_fails_below_trim(factory: Factory) {
    let s = open_default(factory).await;
    for i in 1..=4 {
        s.log.append(&[1 + i % 2], payload(i)).await.unwrap();
    }
    let mut tag_2 = s.log.subscribe(1, 2);
    assert_eq!(within("record 1", tag_2.next()).await.unwrap().unwrap().lsn, 1);
    s.log.seal().await.unwrap();
    assert_eq!(within("record 3", tag_2.next()).await.unwrap().unwrap().lsn, 3);
    assert!(within("the end", tag_2.next()).await.is_none(), "the stream ends at the seal");

    s.log.trim(3).await.unwrap();
    let mut behind = s.log.subscribe(2, ANY_TAG);
    assert_eq!(within("the trim error", behind.next()).await.unwrap(), Err(Error::Trimmed { lsn: 2, trim_point: 3 }));
    assert!(within("the end", behind.next()).await.is_none());
    let from_trim: Vec<Lsn> = within("a sealed stream", s.log.subscribe(3, ANY_TAG).map(|r| r.unwrap().lsn).collect::<Vec<_>>()).await;
    assert_eq!(from_trim, vec![3, 4]);
}

/// A write that fails is never acknowledged, and the log acknowledges nothing more (the
/// durable state is unknown until reopened); what was durable stays readable.
pub async fn failed_write_is_never_acknowledged(factory: Factory) {
    let s = open_default(factory).await;
    s.log.append(&[1], "durable").await.unwrap();
    s.control.fail_next_append();
    let err = s.log.append(&[1], "lost").await.unwrap_err();
    assert!(matches!(err, Error::Storage { .. }), "{err}");
    let after = s.log.append(&[1], "after").await.unwrap_err();
    assert!(matches!(&after, Error::Failed { cause } if cause.contains("injected failure")), "{after}");
    assert!(matches!(s.log.seal().await, Err(Error::Failed { .. })));
    assert_eq!(s.log.tail(), 1);
    assert_eq!(s.log.read_next(1, 1).await.unwrap().map(|r| r.payload), Some(Bytes::from_static(b"durable")));
    let mut subscription = s.log.subscribe(1, ANY_TAG);
    assert_eq!(within("record 1", subscription.next()).await.unwrap().unwrap().lsn, 1);
    assert!(matches!(within("the failure", subscription.next()).await, Some(Err(Error::Failed { .. }))));
}

/// Holds the log's writes, lets the writer take a lone append (held inside the loglet), then
/// enqueues `behind` appends behind it: each polled once, which enqueues it, and pending.
async fn hold_lone_then_queue(s: &Subject, behind: u64) -> (tokio::task::JoinHandle<crate::Result<Lsn>>, Vec<PendingAppend>) {
    s.control.hold();
    let lone = tokio::spawn({
        let log = s.log.clone();
        async move { log.append(&[1], "lone").await }
    });
    let control = Arc::clone(&s.control);
    within("the writer taking the lone append", tokio::task::spawn_blocking(move || control.wait_until_held(1))).await.unwrap();
    let mut queued = Vec::new();
    for i in 0..behind {
        let mut append: PendingAppend = Box::pin({
            let log = s.log.clone();
            async move { log.append(&[1], payload(i)).await }
        });
        assert!(futures::poll!(&mut append).is_pending(), "append {i} must wait behind the held one");
        queued.push(append);
    }
    (lone, queued)
}

/// An append enqueued by its first poll and not yet answered.
type PendingAppend = std::pin::Pin<Box<dyn std::future::Future<Output = crate::Result<Lsn>> + Send>>;

/// Holds the log's writes, lets a lone append be taken and `behind` more queue up behind it,
/// runs `meanwhile` (the writes still held), then lets the writes go. Returns the lone
/// append and the appends behind it, which form one group commit of `behind` appends: with
/// three or more, a group the writer hands to its syncer.
async fn lone_then_group(
    s: &Subject,
    behind: u64,
    meanwhile: impl FnOnce(),
) -> (tokio::task::JoinHandle<crate::Result<Lsn>>, Vec<tokio::task::JoinHandle<crate::Result<Lsn>>>) {
    let queued_before = s.log.stats().appends;
    let (lone, queued) = hold_lone_then_queue(s, behind).await;
    assert_eq!(s.log.stats().appends, queued_before, "nothing was answered while the writes were held");
    meanwhile();
    s.control.release();
    (lone, queued.into_iter().map(tokio::spawn).collect())
}

/// The writer writes a group while the syncer syncs it: until its sync returns, none of its
/// records is read, the tail stays, subscribers wait and no appender hears back. Then all of
/// it appears at once.
pub async fn written_records_stay_unseen_until_synced(factory: Factory) {
    let s = open(factory, LogOptions { overlap_syncs: true, ..LogOptions::default() }).await;
    assert_eq!(s.log.append(&[1], "durable").await, Ok(1));
    let (lone, group) = lone_then_group(&s, 3, || s.control.hold_syncs()).await;
    assert_eq!(within("the lone append, synced by the writer", lone).await.unwrap(), Ok(2));
    let control = Arc::clone(&s.control);
    within("the group's sync", tokio::task::spawn_blocking(move || control.wait_until_syncs_held(1))).await.unwrap();

    assert_eq!(s.log.tail(), 2, "the written group is not durable yet");
    assert_eq!(s.log.read_next(ANY_TAG, 3).await, Ok(None));
    assert_eq!(s.log.read_range(ANY_TAG, 1, 100).await.unwrap().len(), 2);
    assert_eq!(s.log.read_prev(ANY_TAG, 5).await.unwrap().map(|r| r.lsn), Some(2));
    let mut subscriber = s.log.subscribe(3, 1);
    let mut next = subscriber.next();
    assert!(futures::poll!(&mut next).is_pending(), "a subscriber waits for the sync");
    for task in &group {
        assert!(!task.is_finished(), "no appender of the group is answered before its sync");
    }

    s.control.release_syncs();
    let mut lsns = Vec::new();
    for task in group {
        lsns.push(within("an append of the group", task).await.unwrap().unwrap());
    }
    assert_eq!(lsns, vec![3, 4, 5]);
    assert_eq!(within("the subscriber", next).await.unwrap().unwrap().lsn, 3);
    assert_eq!(s.log.tail(), 5);
    assert_eq!(all_records(&s.log).await.len(), 5);
}

/// Without the syncer: a lone append, then three appends queued behind it whose group's
/// write is held, then two appends that arrive during that write. Returns the five appends,
/// and the group commits counted before the grown group's.
async fn grow_a_held_group(s: &Subject) -> (Vec<tokio::task::JoinHandle<crate::Result<Lsn>>>, u64) {
    assert_eq!(s.log.append(&[1], "durable").await, Ok(1));
    let (lone, first) = hold_lone_then_queue(s, 3).await;
    let mut appends: Vec<_> = first.into_iter().map(tokio::spawn).collect();
    s.control.let_one_write_through();
    assert_eq!(within("the lone append", lone).await.unwrap(), Ok(2));
    // The three queued appends form a group, whose write is now held.
    let control = Arc::clone(&s.control);
    within("the group's write", tokio::task::spawn_blocking(move || control.wait_until_held(1))).await.unwrap();
    let commits_before = s.log.stats().group_commits;
    for i in 0..2 {
        let mut append: PendingAppend = Box::pin({
            let log = s.log.clone();
            async move { log.append(&[2], payload(10 + i)).await }
        });
        assert!(futures::poll!(&mut append).is_pending(), "append {i} arrives while the group is written");
        appends.push(tokio::spawn(append));
    }
    (appends, commits_before)
}

/// Without the syncer, the appends that arrive while a group is written join it, and one sync
/// makes the whole group durable: they do not wait for a sync of their own.
pub async fn appends_arriving_during_a_write_share_its_sync(factory: Factory) {
    let s = open_default(factory).await;
    let (appends, commits_before) = grow_a_held_group(&s).await;
    s.control.hold_syncs();
    s.control.release();
    let control = Arc::clone(&s.control);
    within("the one sync", tokio::task::spawn_blocking(move || control.wait_until_syncs_held(1))).await.unwrap();
    assert_eq!(s.log.tail(), 2, "nothing of the grown group is durable before its sync");
    for task in &appends {
        assert!(!task.is_finished(), "no append of the grown group is answered before its sync");
    }
    s.control.release_syncs();
    let mut lsns = Vec::new();
    for task in appends {
        lsns.push(within("an append of the grown group", task).await.unwrap().unwrap());
    }
    assert_eq!(lsns, vec![3, 4, 5, 6, 7]);
    assert_eq!(s.log.stats().group_commits, commits_before + 1, "one group commit made all five durable");
    let tags: Vec<_> = all_records(&s.log).await.into_iter().map(|r| r.tags).collect();
    assert_eq!(tags, [[1], [1], [1], [1], [1], [2], [2]]);
}

/// A storage call of the write path held long is counted as slow, once, whichever thread
/// made it: the writer's write and sync of a lone append (held 15 ms), the syncer's sync of
/// a group written (held 120 ms), and, without the syncer, the writer's sync of a grown
/// group (held 120 ms). Each hold is a check that nothing behind the held call is answered
/// meanwhile, and each count is taken while the held call is the only one in flight.
pub async fn slow_storage_calls_are_counted(factory: Factory) {
    const LONE: Duration = Duration::from_millis(15);
    const HELD: Duration = Duration::from_millis(120);
    let s = open(factory, LogOptions { overlap_syncs: true, ..LogOptions::default() }).await;
    assert_eq!(s.log.append(&[1], "durable").await, Ok(1));

    let (mut lone, _) = hold_lone_then_queue(&s, 0).await;
    let before = s.log.stats();
    assert!(tokio::time::timeout(LONE, &mut lone).await.is_err(), "the held append is not answered");
    s.control.release();
    assert_eq!(within("the lone append", lone).await.unwrap(), Ok(2));
    let after = s.log.stats();
    assert_eq!(after.io_over_10ms - before.io_over_10ms, 1, "the lone append's held write and sync: {after:?}");
    assert_eq!(after.io_over_1ms - before.io_over_1ms, 1, "{after:?}");
    assert!(after.io_us_max >= LONE.as_micros() as u64, "{after:?}");

    let (lone, group) = lone_then_group(&s, 3, || s.control.hold_syncs()).await;
    assert_eq!(within("the lone append, synced by the writer", lone).await.unwrap(), Ok(3));
    let (before, after) = stats_around_a_held_sync(&s, HELD, group).await;
    assert_eq!(after.io_over_100ms - before.io_over_100ms, 1, "the syncer's held sync: {after:?}");
    assert_eq!(after.io_over_10ms - before.io_over_10ms, 1, "{after:?}");
    assert!(after.io_us_max >= HELD.as_micros() as u64, "{after:?}");

    let s = open_default(factory).await;
    let (appends, _) = grow_a_held_group(&s).await;
    s.control.hold_syncs();
    s.control.release();
    let (before, after) = stats_around_a_held_sync(&s, HELD, appends).await;
    assert_eq!(after.io_over_100ms - before.io_over_100ms, 1, "the writer's held sync of a grown group: {after:?}");
    assert!(after.io_us_max >= HELD.as_micros() as u64, "{after:?}");
}

/// Once a sync is held, checks for `hold` that the first of `appends` (behind it) is not
/// answered, lets the sync go and waits for them all: the log's stats before the hold and
/// after the appends are answered.
async fn stats_around_a_held_sync(s: &Subject, hold: Duration, mut appends: Vec<tokio::task::JoinHandle<crate::Result<Lsn>>>) -> (crate::LogStats, crate::LogStats) {
    let control = Arc::clone(&s.control);
    within("the held sync", tokio::task::spawn_blocking(move || control.wait_until_syncs_held(1))).await.unwrap();
    let before = s.log.stats();
    if let Some(first) = appends.first_mut() {
        assert!(tokio::time::timeout(hold, first).await.is_err(), "no append behind the held sync is answered");
    }
    s.control.release_syncs();
    for task in appends {
        within("an append behind the held sync", task).await.unwrap().unwrap();
    }
    (before, s.log.stats())
}

/// Without the syncer, a failed sync of a grown group refuses every append of it, the ones
/// written before the others arrived included, and nothing of it is read.
pub async fn failed_sync_of_a_grown_group_is_never_acknowledged(factory: Factory) {
    let s = open_default(factory).await;
    let (appends, _) = grow_a_held_group(&s).await;
    s.control.fail_next_sync();
    s.control.release();
    for task in appends {
        let err = within("an append of the failed group", task).await.unwrap().unwrap_err();
        assert!(matches!(&err, Error::Storage { operation: "sync", .. }), "{err}");
    }
    assert!(matches!(s.log.append(&[1], "after").await, Err(Error::Failed { .. })));
    assert_eq!(s.log.tail(), 2);
    assert_eq!(s.log.read_next(ANY_TAG, 3).await, Ok(None), "nothing of the failed group is read");
}

/// A sync that fails is never acknowledged: its group's appenders get the storage error,
/// every later write is refused, and reads end at the last durable record.
pub async fn failed_sync_is_never_acknowledged(factory: Factory) {
    let s = open(factory, LogOptions { overlap_syncs: true, ..LogOptions::default() }).await;
    assert_eq!(s.log.append(&[1], "durable").await, Ok(1));
    let (lone, group) = lone_then_group(&s, 3, || s.control.fail_next_sync()).await;
    assert_eq!(within("the lone append", lone).await.unwrap(), Ok(2));
    for task in group {
        let err = within("an append of the failed group", task).await.unwrap().unwrap_err();
        assert!(matches!(&err, Error::Storage { operation: "sync", .. }), "{err}");
    }
    let after = s.log.append(&[1], "after").await.unwrap_err();
    assert!(matches!(&after, Error::Failed { cause } if cause.contains("injected failure")), "{after}");
    assert!(matches!(s.log.trim(2).await, Err(Error::Failed { .. })));
    assert_eq!(s.log.tail(), 2);
    assert_eq!(s.log.read_next(ANY_TAG, 3).await, Ok(None), "nothing of the failed group is read");
    let mut subscription = s.log.subscribe(1, ANY_TAG);
    for lsn in [1, 2] {
        assert_eq!(within("a durable record", subscription.next()).await.unwrap().unwrap().lsn, lsn);
    }
    assert!(matches!(within("the failure", subscription.next()).await, Some(Err(Error::Failed { .. }))));
}

/// After `close`, every call fails with `Closed`, subscriptions end, and closing again is fine.
pub async fn close_refuses_everything_after(factory: Factory) {
    let s = open_default(factory).await;
    s.log.append(&[1], "a").await.unwrap();
    let mut waiting = s.log.subscribe(2, ANY_TAG);
    let mut next = waiting.next();
    assert!(futures::poll!(&mut next).is_pending());
    s.log.close().await.unwrap();
    assert_eq!(within("the waiting subscriber", next).await, Some(Err(Error::Closed)));
    assert!(waiting.next().await.is_none());
    assert_eq!(s.log.append(&[1], "b").await, Err(Error::Closed));
    assert_eq!(s.log.read_next(ANY_TAG, 1).await, Err(Error::Closed));
    assert_eq!(s.log.seal().await, Err(Error::Closed));
    assert_eq!(s.log.close().await, Ok(()));
}
