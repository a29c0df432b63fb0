//! The disk's physical limit, measured beside every durable benchmark: the cost of a bare
//! write followed by fdatasync, appending to a file in the benchmark's own directory.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use hdrhistogram::Histogram;

/// Bytes of each write+fdatasync sample beside a transactional benchmark: about one commit
/// record of its workloads.
const COMMIT_SAMPLE_BYTES: usize = 256;

/// Write+fdatasync samples taken beside a transactional benchmark.
const COMMIT_SAMPLES: usize = 500;

/// The p50 of a bare write+fdatasync of a commit record's size, in microseconds: the disk's
/// limit beside the backend and workload benchmarks.
pub(crate) fn commit_fsync_us_p50(dir: &Path) -> anyhow::Result<f64> {
    Ok(crate::driver::us(fdatasync_latencies(dir, COMMIT_SAMPLE_BYTES, COMMIT_SAMPLES)?.value_at_quantile(0.50)))
}

/// Latencies of `samples` write+fdatasync pairs of `bytes` bytes each, in nanoseconds.
pub(crate) fn fdatasync_latencies(dir: &Path, bytes: usize, samples: usize) -> anyhow::Result<Histogram<u64>> {
    let path = dir.join("fdatasync-probe");
    let mut file = OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
    let buffer = vec![0xA5u8; bytes];
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    for _ in 0..samples {
        let start = Instant::now();
        file.write_all(&buffer)?;
        file.sync_data()?;
        latencies.record(start.elapsed().as_nanos() as u64)?;
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(latencies)
}
