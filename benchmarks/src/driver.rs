//! The closed-loop load driver every benchmark shares: N clients, each issuing its next
//! operation when the previous one returns; a warm-up, then a measured window; latencies
//! merged from per-client histograms (no shared lock on the hot path), in all and by the
//! kind of operation.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use comb_log::LogStats;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};

/// The measured window and where the data lives: the options every benchmark takes.
#[derive(Debug, clap::Args)]
pub(crate) struct Window {
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 5)]
    pub(crate) seconds: u64,
    /// Seconds of warm-up, not measured.
    #[arg(long, default_value_t = 1)]
    pub(crate) warmup_seconds: u64,
    /// Directory in which to create the data (a fresh subdirectory, removed afterwards;
    /// the directory is created if missing);
    /// default: the system's temporary directory.
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
}

/// A fresh subdirectory of `parent` (created if missing; default: the system's temporary
/// directory), removed when dropped.
pub(crate) fn fresh_dir(parent: Option<&Path>, prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
    std::fs::create_dir_all(&parent).with_context(|| format!("cannot create the directory {} (--dir)", parent.display()))?;
    tempfile::Builder::new().prefix(prefix).tempdir_in(&parent).with_context(|| format!("cannot create a data directory in {} (--dir)", parent.display()))
}

impl Window {
    /// A fresh data directory, removed when dropped.
    pub(crate) fn data_dir(&self, prefix: &str) -> anyhow::Result<tempfile::TempDir> {
        anyhow::ensure!(self.seconds >= 1, "--seconds must be at least 1");
        fresh_dir(self.dir.as_deref(), prefix)
    }

    /// The warm-up.
    pub(crate) fn warmup(&self) -> Duration {
        Duration::from_secs(self.warmup_seconds)
    }

    /// The measured window.
    pub(crate) fn measure(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }
}

/// A well-spread number from a client and its sequence number (splitmix64): uniform enough
/// for choosing keys, and free of locks and shared state.
pub(crate) fn spread(client: usize, seq: u64) -> u64 {
    let mut z = (client as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq.wrapping_add(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// How long a closed-loop client waits after an operation was refused for now (overload):
/// doubled at each refusal in a row, from the least to the most.
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(1);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(64);

/// Waits after answers that say "later" (overload, a server starting): each wait doubles
/// the next, from `min` up to `max`; a success starts again from `min`.
pub(crate) struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { next: min, min, max }
    }

    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.max);
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Longest latency a histogram holds: one minute, in nanoseconds.
const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// How one operation ended.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Refused for now (backpressure); counted, and the client goes on.
    Retryable,
    /// Anything else: the run stops with it.
    Fatal(anyhow::Error),
}

impl Failure {
    /// An operation's outcome: an error `retryable` accepts is backpressure, any other ends
    /// the run.
    pub(crate) fn of<T, E>(result: Result<T, E>, retryable: impl FnOnce(&E) -> bool) -> Result<(), Failure>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        match result {
            Ok(_) => Ok(()),
            Err(err) if retryable(&err) => Err(Failure::Retryable),
            Err(err) => Err(Failure::Fatal(err.into())),
        }
    }
}

/// The kind of an operation, as its closure reports it: a workflow's name in a mix, the
/// benchmark's one kind otherwise.
pub(crate) type Kind = &'static str;

/// What a measured window saw.
#[derive(Debug)]
pub(crate) struct Measured<S> {
    /// Latencies of the operations completed in the window, in nanoseconds.
    pub(crate) latencies: Histogram<u64>,
    /// The same latencies by kind of operation.
    pub(crate) by_kind: BTreeMap<Kind, Histogram<u64>>,
    /// Operations refused for now, in the window and the warm-up.
    pub(crate) errors: u64,
    /// The window's length, in seconds.
    pub(crate) seconds: f64,
    /// The sample taken at the window's start and at its end.
    pub(crate) samples: (S, S),
    /// CPU time the whole process used in the window (every thread: clients and server).
    pub(crate) cpu_us: u64,
    /// CPU time the whole machine was busy in the window, every process's and the kernel's
    /// (a baseline's database server's too).
    pub(crate) machine_cpu_us: u64,
}

impl<S> Measured<S> {
    /// The process's CPU time per operation completed in the window, in microseconds (one
    /// decimal).
    pub(crate) fn cpu_us_per_op(&self) -> f64 {
        self.per_op(self.cpu_us)
    }

    /// The machine's busy CPU time per operation completed in the window, in microseconds
    /// (one decimal): what an operation cost, wherever it ran.
    pub(crate) fn machine_cpu_us_per_op(&self) -> f64 {
        self.per_op(self.machine_cpu_us)
    }

    /// Microseconds per operation completed in the window, one decimal.
    fn per_op(&self, us: u64) -> f64 {
        (us as f64 / self.latencies.len().max(1) as f64 * 10.0).round() / 10.0
    }

    /// The share of all the cores' time that was busy in the window (hundredths).
    pub(crate) fn machine_busy(&self, cores: usize) -> f64 {
        let available_us = self.seconds * cores.max(1) as f64 * 1e6;
        (self.machine_cpu_us as f64 / available_us * 100.0).round() / 100.0
    }

    /// Completed operations per second.
    pub(crate) fn per_sec(&self) -> f64 {
        (self.latencies.len() as f64 / self.seconds).round()
    }

    /// A latency quantile, in microseconds (one decimal).
    pub(crate) fn us(&self, quantile: f64) -> f64 {
        us(self.latencies.value_at_quantile(quantile))
    }

    /// The longest latency, in microseconds.
    pub(crate) fn us_max(&self) -> f64 {
        us(self.latencies.max())
    }

    /// The window's length, rounded to hundredths.
    pub(crate) fn seconds_rounded(&self) -> f64 {
        (self.seconds * 100.0).round() / 100.0
    }

    /// This window and the `next` one, measured after it, as one: latencies and errors
    /// added, lengths summed, samples from this one's start to the next one's end.
    pub(crate) fn followed_by(mut self, next: Measured<S>) -> anyhow::Result<Measured<S>> {
        self.latencies.add(&next.latencies)?;
        add_by_kind(&mut self.by_kind, next.by_kind)?;
        Ok(Measured {
            latencies: self.latencies,
            by_kind: self.by_kind,
            errors: self.errors + next.errors,
            seconds: self.seconds + next.seconds,
            samples: (self.samples.0, next.samples.1),
            cpu_us: self.cpu_us + next.cpu_us,
            machine_cpu_us: self.machine_cpu_us + next.machine_cpu_us,
        })
    }
}

impl Measured<LogStats> {
    /// Records per group commit (fsync) of the log during the window.
    pub(crate) fn records_per_fsync(&self) -> f64 {
        records_per_fsync(&self.samples.0, &self.samples.1)
    }
}

/// Adds histograms by kind into `into`.
fn add_by_kind(into: &mut BTreeMap<Kind, Histogram<u64>>, from: impl IntoIterator<Item = (Kind, Histogram<u64>)>) -> anyhow::Result<()> {
    for (kind, histogram) in from {
        match into.get_mut(kind) {
            Some(all) => all.add(&histogram)?,
            None => drop(into.insert(kind, histogram)),
        }
    }
    Ok(())
}

/// Records per group commit (fsync) of the log between two samples.
pub(crate) fn records_per_fsync(before: &LogStats, after: &LogStats) -> f64 {
    let commits = (after.group_commits - before.group_commits).max(1);
    ((after.records - before.records) as f64 / commits as f64 * 10.0).round() / 10.0
}

/// Nanoseconds as microseconds, one decimal.
pub(crate) fn us(nanos: u64) -> f64 {
    (nanos as f64 / 1_000.0 * 10.0).round() / 10.0
}

/// This process's peak resident memory in MiB (`VmHWM`), where the system reports it.
pub(crate) fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some((kib / 1024.0 * 10.0).round() / 10.0)
}

/// The middle of `values` (of an even count, the upper of the two middle ones). Panics on
/// none.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The machine's cores, reported beside every figure.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A progress bar on standard error, of `len` steps (hidden when standard error is not a
/// terminal, so that reports stay clean in files and pipes).
pub(crate) fn progress_bar(len: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template("{prefix:>20} [{bar:30}] {pos}/{len} {msg}").expect("a valid template").progress_chars("=> "));
    bar.set_prefix(label.to_owned());
    bar
}

/// How often the progress bar's rate is updated.
const PROGRESS_TICK: Duration = Duration::from_millis(250);

/// Runs `clients` closed-loop clients of `operation(client, seq)` on the current runtime:
/// `warmup`, then `measure` (calling `sample` at its start and end), with a progress bar
/// labelled `label` showing the seconds and the live rate. An operation that succeeds says
/// what kind it was, and its latency is counted under that kind too.
pub(crate) async fn closed_loop<S, F, Fut>(label: &str, clients: usize, warmup: Duration, measure: Duration, sample: impl Fn() -> S, operation: F) -> anyhow::Result<Measured<S>>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Kind, Failure>> + Send,
{
    anyhow::ensure!(clients >= 1, "at least one client is needed");
    anyhow::ensure!(!measure.is_zero(), "the measured window must be longer than 0");
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let completed = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (phase, operation, completed) = (Arc::clone(&phase), operation.clone(), Arc::clone(&completed));
            tokio::spawn(async move {
                // A mix has a few kinds: a list, searched, costs less than a map.
                let mut by_kind: Vec<(Kind, Histogram<u64>)> = Vec::new();
                let mut errors = 0u64;
                let mut seq = 0u64;
                let mut backoff = Backoff::new(RETRY_PAUSE_MIN, RETRY_PAUSE_MAX);
                loop {
                    let now = phase.load(Ordering::Relaxed);
                    if now == STOP {
                        break;
                    }
                    let start = Instant::now();
                    let result = operation(client, seq).await;
                    completed.fetch_add(u64::from(result.is_ok()), Ordering::Relaxed);
                    if result.is_ok() {
                        backoff.reset();
                    }
                    match result {
                        Ok(kind) if now == MEASURE => {
                            let latency = (start.elapsed().as_nanos() as u64).clamp(1, LATENCY_NS_MAX);
                            let at = match by_kind.iter().position(|(k, _)| *k == kind) {
                                Some(at) => at,
                                None => {
                                    by_kind.push((kind, Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("histogram bounds")));
                                    by_kind.len() - 1
                                }
                            };
                            by_kind[at].1.record(latency).expect("latency in bounds");
                        }
                        Ok(_) => {}
                        // Refused for now: back off exponentially, as a well-behaved client
                        // does, rather than spend the cores the server needs on asking again.
                        Err(Failure::Retryable) => {
                            errors += 1;
                            backoff.wait().await;
                        }
                        Err(Failure::Fatal(err)) => return Err(err),
                    }
                    seq += 1;
                }
                Ok::<_, anyhow::Error>((by_kind, errors))
            })
        })
        .collect();
    let bar = progress_bar((warmup + measure).as_secs(), &format!("{label}, {clients} clients"));
    let show = |seconds: Duration, rate: f64, phase: &str| {
        bar.set_position(seconds.as_secs());
        bar.set_message(format!("s {phase}, {rate:.0} ops/s"));
    };
    let began = Instant::now();
    let mut tick = tokio::time::interval(PROGRESS_TICK);
    let (mut last_at, mut last_ops) = (Instant::now(), 0);
    let mut before = None;
    let mut started = began;
    let (mut cpu_before, mut machine_before) = (0, 0);
    loop {
        tick.tick().await;
        let elapsed = began.elapsed();
        if before.is_none() && elapsed >= warmup {
            (cpu_before, machine_before) = cpu_times().await?;
            before = Some(sample());
            started = Instant::now();
            phase.store(MEASURE, Ordering::Relaxed);
        }
        if before.is_some() && started.elapsed() >= measure {
            break;
        }
        let ops = completed.load(Ordering::Relaxed);
        let rate = (ops - last_ops) as f64 / last_at.elapsed().as_secs_f64();
        (last_at, last_ops) = (Instant::now(), ops);
        show(elapsed, rate, if before.is_some() { "measured" } else { "warm-up" });
    }
    phase.store(STOP, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let after = sample();
    let (cpu_after, machine_after) = cpu_times().await?;
    let (cpu_us, machine_cpu_us) = (cpu_after.saturating_sub(cpu_before), machine_after.saturating_sub(machine_before));
    let before = before.expect("the warm-up ended");
    bar.finish_and_clear();
    let mut by_kind = BTreeMap::new();
    let mut errors = 0;
    for task in tasks {
        let (histograms, failed) = task.await??;
        add_by_kind(&mut by_kind, histograms)?;
        errors += failed;
    }
    let mut latencies = Histogram::<u64>::new_with_bounds(1, LATENCY_NS_MAX, 3)?;
    for histogram in by_kind.values() {
        latencies.add(histogram)?;
    }
    Ok(Measured { latencies, by_kind, errors, seconds, samples: (before, after), cpu_us, machine_cpu_us })
}

/// Linux reports a process's CPU times in clock ticks of USER_HZ, which is 100 on every
/// architecture Comb builds for.
const CLOCK_TICKS_PER_SEC: u64 = 100;

/// CPU time this process has used so far (user and system, every thread, living or gone),
/// in microseconds, at the kernel's 10 ms resolution. Read off the async runtime's workers,
/// like every file.
pub(crate) async fn process_cpu_us() -> anyhow::Result<u64> {
    tokio::task::spawn_blocking(read_process_cpu_us).await?
}

fn read_process_cpu_us() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    parse_cpu_us(&stat).ok_or_else(|| anyhow::anyhow!("cannot read the CPU times in /proc/self/stat: {stat:?}"))
}

/// CPU time this process has used, and the time the machine's cores have been busy since
/// boot (every process, and the kernel's own work and interrupts), in microseconds at the
/// kernel's 10 ms tick: read one right after the other, on one thread off the async
/// runtime's workers, so that a window's two figures start and end together.
pub(crate) async fn cpu_times() -> anyhow::Result<(u64, u64)> {
    tokio::task::spawn_blocking(|| {
        let process = read_process_cpu_us()?;
        let stat = std::fs::read_to_string("/proc/stat")?;
        let machine = parse_machine_busy_us(&stat).ok_or_else(|| anyhow::anyhow!("cannot read the machine's CPU times in the first line of /proc/stat: {:?}", stat.lines().next()))?;
        Ok((process, machine))
    })
    .await?
}

/// The first line of /proc/stat sums every core's ticks: user, nice, system, idle, iowait,
/// irq, softirq, steal, then guest time (already counted in user). Busy is all but idle and
/// iowait; steal (the host ran someone else) counts as busy, as it is lost to the machine.
fn parse_machine_busy_us(stat: &str) -> Option<u64> {
    let mut fields = stat.lines().next()?.strip_prefix("cpu ")?.split_whitespace();
    let mut ticks = [0u64; 8];
    for tick in &mut ticks {
        *tick = fields.next()?.parse().ok()?;
    }
    let [user, nice, system, _idle, _iowait, irq, softirq, steal] = ticks;
    Some((user + nice + system + irq + softirq + steal) * 1_000_000 / CLOCK_TICKS_PER_SEC)
}

/// One living thread of this process, as the kernel counts its time so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ThreadTimes {
    /// `comb-partition-`, `comb-trace-feed`, `tokio-rt-worker`, ...
    pub(crate) name: String,
    /// CPU time, user and system, in microseconds, at the kernel's 10 ms tick (as the
    /// process's own).
    pub(crate) us: u64,
    /// Time runnable but waiting for a CPU while other threads ran, in microseconds, from the
    /// scheduler's nanosecond count.
    pub(crate) wait_us: u64,
}

/// This process's living threads by thread id. Compare two readings thread by thread: a
/// thread that exits between them is in neither's difference (its time in between is not
/// counted), and one that starts between them counts from nothing.
pub(crate) async fn thread_times() -> anyhow::Result<BTreeMap<u32, ThreadTimes>> {
    tokio::task::spawn_blocking(|| {
        let mut threads = BTreeMap::new();
        for task in std::fs::read_dir("/proc/self/task")? {
            let task = task?;
            let Some(tid) = task.file_name().to_str().and_then(|tid| tid.parse().ok()) else { continue };
            // A thread may exit between the listing and the reads: it is then not listed.
            let Ok(stat) = std::fs::read(task.path().join("stat")) else { continue };
            let schedstat = match std::fs::read_to_string(task.path().join("schedstat")) {
                Ok(schedstat) => schedstat,
                Err(_) if !Path::new("/proc/self/schedstat").exists() => {
                    anyhow::bail!("this kernel does not report its threads' scheduling (no /proc/self/schedstat): the per-thread figures need it");
                }
                Err(_) => continue,
            };
            // A thread's name is bytes, not always UTF-8.
            let stat = String::from_utf8_lossy(&stat);
            let (Some(name), Some(us)) = (thread_name(&stat), parse_cpu_us(&stat)) else {
                anyhow::bail!("cannot read a thread's name and CPU times in its stat: {stat:?}");
            };
            let Some(wait_us) = parse_wait_us(&schedstat) else {
                anyhow::bail!("cannot read a thread's wait for a CPU in its schedstat: {schedstat:?}");
            };
            threads.insert(tid, ThreadTimes { name: name.to_owned(), us, wait_us });
        }
        Ok(threads)
    })
    .await?
}

/// The thread's name in its stat line: field 2, in parentheses.
fn thread_name(stat: &str) -> Option<&str> {
    stat.get(stat.find('(')? + 1..stat.rfind(')')?)
}

/// The second field of a thread's `schedstat` (nanoseconds on a CPU, nanoseconds runnable but
/// waiting for one, the number of times it ran), in microseconds.
fn parse_wait_us(schedstat: &str) -> Option<u64> {
    let waited: u64 = schedstat.split_whitespace().nth(1)?.parse().ok()?;
    Some(waited / 1_000)
}

/// utime and stime are fields 14 and 15 of /proc/<pid>/stat; the command (field 2) is in
/// parentheses and may hold spaces, so fields are counted after its closing parenthesis.
fn parse_cpu_us(stat: &str) -> Option<u64> {
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().skip(11);
    let (utime, stime): (u64, u64) = (fields.next()?.parse().ok()?, fields.next()?.parse().ok()?);
    Some((utime + stime) * 1_000_000 / CLOCK_TICKS_PER_SEC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_is_made_in_a_dir_that_does_not_exist_yet_and_removed_after() {
        let root = tempfile::tempdir().unwrap();
        let parent = root.path().join("not").join("there");
        let dir = fresh_dir(Some(&parent), "comb-test-").unwrap();
        assert!(dir.path().is_dir() && dir.path().starts_with(&parent), "{}", dir.path().display());
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists() && parent.is_dir());
        // A parent that cannot be a directory is named in the error.
        let file = root.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let err = fresh_dir(Some(&file), "comb-test-").unwrap_err();
        assert!(format!("{err:#}").contains(&file.display().to_string()), "{err:#}");
    }

    #[test]
    fn the_median_is_the_middle_value_and_of_an_even_count_the_upper_middle_one() {
        assert_eq!(median(vec![5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
        assert_eq!(median(vec![7.0]), 7.0);
    }

    #[test]
    fn the_machines_busy_time_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 20 30 4000 500 6 7 8 90 0\ncpu0 50 10 15 2000 250 3 3 4 45 0\nintr 1 2 3\n";
        assert_eq!(parse_machine_busy_us(stat), Some((100 + 20 + 30 + 6 + 7 + 8) * 10_000));
        // A kernel before steal was counted, and lines that are not the sum, are refused.
        assert_eq!(parse_machine_busy_us("cpu  100 20 30 4000 500 6 7\n"), None);
        assert_eq!(parse_machine_busy_us("cpu0 100 20 30 4000 500 6 7 8\n"), None);
        assert_eq!(parse_machine_busy_us("cpu  100 x 30 4000 500 6 7 8\n"), None);
    }

    #[test]
    fn cpu_times_are_read_after_the_command_even_with_spaces_in_it() {
        let stat = "4242 (comb bench) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_cpu_us(stat), Some((250 + 75) * 10_000));
        assert_eq!(parse_cpu_us("4242 (truncated) S 1"), None);
        assert_eq!(thread_name(stat), Some("comb bench"));
        let odd = "4243 (a) b) S 1 4242 4242 0 -1 4194560 900 0 0 0 7 3 0 0 20 0 9 0 100 0 0";
        assert_eq!((thread_name(odd), parse_cpu_us(odd)), (Some("a) b"), Some(10 * 10_000)));
        assert!(read_process_cpu_us().is_ok(), "this process's own times are readable");
        assert_eq!(parse_wait_us("2500999 7999 12\n"), Some(7));
        assert_eq!(parse_wait_us("2500999\n"), None);
    }

    #[tokio::test]
    async fn a_busy_thread_s_cpu_time_is_in_its_group() {
        // The thread spins until the kernel has counted at least two of its 10 ms ticks for it,
        // however little of a CPU a loaded machine gives it.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinning = Arc::clone(&stop);
        let spin = std::thread::Builder::new()
            .name("bench-spin".into())
            .spawn(move || {
                while !spinning.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let threads = loop {
            let threads = thread_times().await.unwrap();
            if threads.values().any(|t| t.name == "bench-spin" && t.us >= 20_000) {
                break threads;
            }
            assert!(Instant::now() < deadline, "the spinning thread never showed 20 ms of CPU: {threads:?}");
            tokio::task::yield_now().await;
        };
        stop.store(true, Ordering::Relaxed);
        spin.join().unwrap();
        assert!(threads.values().map(|t| t.us).sum::<u64>() <= read_process_cpu_us().unwrap() + 10_000, "{threads:?}");
    }

    #[tokio::test]
    async fn latencies_are_kept_by_kind_and_in_all() {
        // Odd operations are slow ones, and fail once in four: failures are not latencies.
        let operation = |_client: usize, seq: u64| async move {
            if seq.is_multiple_of(2) {
                return Ok("quick");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            if seq % 4 == 1 { Err(Failure::Retryable) } else { Ok("slow") }
        };
        let m = closed_loop("test", 2, Duration::ZERO, Duration::from_millis(300), || (), operation).await.unwrap();
        assert_eq!(m.by_kind.keys().copied().collect::<Vec<_>>(), ["quick", "slow"]);
        let (quick, slow) = (&m.by_kind["quick"], &m.by_kind["slow"]);
        assert_eq!(m.latencies.len(), quick.len() + slow.len());
        assert!(!slow.is_empty() && quick.len() >= slow.len(), "quick {} slow {}", quick.len(), slow.len());
        assert!(slow.value_at_quantile(0.5) >= 2_000_000, "a slow one waits 2 ms: {}", slow.value_at_quantile(0.5));
        assert!(quick.value_at_quantile(0.5) < slow.value_at_quantile(0.5));
        assert!(m.errors > 0);

        // Two windows as one: each kind's latencies added.
        let (quick_ops, slow_ops) = (quick.len(), slow.len());
        let again = closed_loop("test", 1, Duration::ZERO, Duration::from_millis(100), || (), operation).await.unwrap();
        let again_quick = again.by_kind["quick"].len();
        let both = m.followed_by(again).unwrap();
        assert_eq!(both.by_kind["quick"].len(), quick_ops + again_quick);
        assert!(both.by_kind["slow"].len() > slow_ops);
    }
}
