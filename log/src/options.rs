//! Options of the shared log, each a named bound.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest `writer-spin-us` accepted.
pub const WRITER_SPIN_US_MAX: u64 = 10_000;

/// Longest `writer-slice-us` accepted: the longest slice the kernel grants (100 ms).
pub const WRITER_SLICE_US_MAX: u64 = comb_sched::SLICE_MAX.as_micros() as u64;

/// Shortest `writer-slice-us` accepted, but 0: the shortest slice the kernel grants (100 us).
pub const WRITER_SLICE_US_MIN: u64 = comb_sched::SLICE_MIN.as_micros() as u64;

/// Smallest and largest `segment-bytes` accepted.
pub const SEGMENT_BYTES_MIN: u64 = 64 << 10;
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;

/// Largest `recent-bytes-max` accepted.
pub const RECENT_BYTES_MAX: usize = 1 << 30;

/// Bytes of a group commit's frame (its records, each framed), at most: the frame stores its
/// length in 32 bits. The batch bounds must keep the largest group within it.
pub const FRAME_BODY_BYTES_MAX: u64 = u32::MAX as u64;

/// Bytes a record takes in a frame beside its payload, with `tags` tags: its length (4), its
/// encoding (1), its tag count (2), and 8 per tag.
pub(crate) fn record_framing_bytes(tags: usize) -> u64 {
    7 + 8 * tags as u64
}

/// Options of the shared log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct LogOptions {
    /// Largest payload accepted by `append`, in bytes.
    pub record_bytes_max: usize,
    /// Most tags one record may carry.
    pub tags_per_record_max: usize,
    /// Most appends (calls of `append` or `append_batch`) waiting for the writer; one more
    /// is refused with `QueueFull` (backpressure) instead of buffering without bound.
    pub queue_appends_max: usize,
    /// Most records written by one group commit; also the most entries of one `append_batch`.
    pub batch_records_max: usize,
    /// Most payload bytes written by one group commit; also the most of one `append_batch`.
    pub batch_bytes_max: usize,
    /// Most records a subscription or a range read fetches from storage at once.
    pub read_batch_records_max: usize,
    /// Microseconds the writer spins waiting for the next append before it sleeps (0: it
    /// sleeps at once). Spinning keeps a lone appender from paying a thread's wake-up on
    /// every append; it costs CPU only while the log is briefly idle.
    pub writer_spin_us: u64,
    /// Whether the writer writes the next group commit while the last one syncs (a syncer
    /// thread makes each written group durable, then publishes and answers it). Off (the
    /// default), the writer does both one after the other. On, 256 appenders to the bare log
    /// gain 10 to 13% on a slow disk, but the backend's counter at 64 clients loses about
    /// 15% on 2 cores: groups are half as large, and the syncer's hand-offs cost CPU.
    pub overlap_syncs: bool,
    /// Microseconds of the CPU time slice the log's writer, completer and syncer ask the
    /// kernel for (0, the default: they keep the kernel's, 1.4 ms on 2 cores, more on more).
    /// A group's commits wait for the writer (and a large group's for the completer) to run
    /// after a sync; a short slice lets them run soon after they wake while the cores are
    /// busy, without a larger share of the CPU (Linux 6.12 and later; older kernels ignore
    /// it). On 2 cores 100 gave a write-only load bound by its syncs 14% more throughput and
    /// cost loads that keep the cores busy 2% to 6%. See docs/architecture.md.
    pub writer_slice_us: u64,
    /// Bytes of recent durable records kept in memory (0: none), so that reads near the
    /// tail, such as subscribers following it, are answered without reading storage.
    pub recent_bytes_max: usize,
    /// Bytes of one of the durable log's write-ahead segments: the records not yet flushed to
    /// its tables are replayed from them on open, and each is deleted once flushed.
    pub segment_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            record_bytes_max: 4 << 20,
            tags_per_record_max: 64,
            queue_appends_max: 16_384,
            batch_records_max: 4_096,
            batch_bytes_max: 16 << 20,
            read_batch_records_max: 1_024,
            writer_spin_us: 50,
            overlap_syncs: false,
            writer_slice_us: 0,
            recent_bytes_max: 16 << 20,
            segment_bytes: 64 << 20,
        }
    }
}

impl LogOptions {
    /// Checks that every bound is usable; called once when a log opens.
    pub fn validate(&self) -> Result<()> {
        let invalid = |option, reason: String| Err(Error::InvalidOptions { option, reason });
        for (option, value) in [
            ("record-bytes-max", self.record_bytes_max),
            ("tags-per-record-max", self.tags_per_record_max),
            ("queue-appends-max", self.queue_appends_max),
            ("batch-records-max", self.batch_records_max),
            ("batch-bytes-max", self.batch_bytes_max),
            ("read-batch-records-max", self.read_batch_records_max),
        ] {
            if value == 0 {
                return invalid(option, "must be at least 1".to_owned());
            }
        }
        if self.writer_spin_us > WRITER_SPIN_US_MAX {
            return invalid("writer-spin-us", format!("{} is above {WRITER_SPIN_US_MAX} (10 ms): a writer spinning that long only burns a core", self.writer_spin_us));
        }
        if self.writer_slice_us != 0 && !(WRITER_SLICE_US_MIN..=WRITER_SLICE_US_MAX).contains(&self.writer_slice_us) {
            return invalid(
                "writer-slice-us",
                format!("{} is outside {WRITER_SLICE_US_MIN} to {WRITER_SLICE_US_MAX} (the kernel's 0.1 to 100 ms); 0 keeps the kernel's default", self.writer_slice_us),
            );
        }
        if self.recent_bytes_max > RECENT_BYTES_MAX {
            return invalid("recent-bytes-max", format!("{} is above {RECENT_BYTES_MAX} (1 GiB)", self.recent_bytes_max));
        }
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return invalid("segment-bytes", format!("{} is outside {SEGMENT_BYTES_MIN} (64 KiB) to {SEGMENT_BYTES_MAX} (1 GiB)", self.segment_bytes));
        }
        if self.tags_per_record_max > usize::from(u16::MAX) {
            return invalid("tags-per-record-max", format!("must be at most {}", u16::MAX));
        }
        let largest_frame = (self.batch_bytes_max as u64).saturating_add((self.batch_records_max as u64).saturating_mul(record_framing_bytes(self.tags_per_record_max)));
        if largest_frame > FRAME_BODY_BYTES_MAX {
            return invalid(
                "batch-bytes-max",
                format!(
                    "a group of batch-bytes-max ({}) bytes in batch-records-max ({}) records of tags-per-record-max ({}) tags would take {largest_frame} bytes, above the {FRAME_BODY_BYTES_MAX} bytes one frame can hold",
                    self.batch_bytes_max, self.batch_records_max, self.tags_per_record_max
                ),
            );
        }
        if self.batch_bytes_max < self.record_bytes_max {
            return invalid(
                "batch-bytes-max",
                format!("{} is below record-bytes-max ({}): a largest record could never be written", self.batch_bytes_max, self.record_bytes_max),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_zero_bounds_are_named() {
        LogOptions::default().validate().unwrap();
        let err = LogOptions { queue_appends_max: 0, ..LogOptions::default() }.validate().unwrap_err();
        assert_eq!(err, Error::InvalidOptions { option: "queue-appends-max", reason: "must be at least 1".into() });
        let err = LogOptions { batch_bytes_max: 10, record_bytes_max: 11, ..LogOptions::default() }.validate().unwrap_err();
        assert!(matches!(err, Error::InvalidOptions { option: "batch-bytes-max", .. }), "{err}");
        LogOptions { writer_spin_us: 0, ..LogOptions::default() }.validate().unwrap();
        LogOptions { writer_spin_us: WRITER_SPIN_US_MAX, ..LogOptions::default() }.validate().unwrap();
        let err = LogOptions { writer_spin_us: WRITER_SPIN_US_MAX + 1, ..LogOptions::default() }.validate().unwrap_err();
        assert!(matches!(err, Error::InvalidOptions { option: "writer-spin-us", .. }), "{err}");
        LogOptions { recent_bytes_max: 0, ..LogOptions::default() }.validate().unwrap();
        let err = LogOptions { recent_bytes_max: RECENT_BYTES_MAX + 1, ..LogOptions::default() }.validate().unwrap_err();
        assert!(matches!(err, Error::InvalidOptions { option: "recent-bytes-max", .. }), "{err}");
        let at_most = FRAME_BODY_BYTES_MAX - 4_096 * record_framing_bytes(64);
        LogOptions { batch_bytes_max: at_most as usize, record_bytes_max: 1, ..LogOptions::default() }.validate().unwrap();
        let err = LogOptions { batch_bytes_max: at_most as usize + 1, record_bytes_max: 1, ..LogOptions::default() }.validate().unwrap_err();
        assert!(matches!(err, Error::InvalidOptions { option: "batch-bytes-max", .. }), "{err}");
        let err = LogOptions { batch_records_max: usize::MAX, ..LogOptions::default() }.validate().unwrap_err();
        assert!(matches!(err, Error::InvalidOptions { option: "batch-bytes-max", .. }), "{err}");
        for writer_slice_us in [0, WRITER_SLICE_US_MIN, WRITER_SLICE_US_MAX] {
            LogOptions { writer_slice_us, ..LogOptions::default() }.validate().unwrap();
        }
        for writer_slice_us in [1, WRITER_SLICE_US_MIN - 1, WRITER_SLICE_US_MAX + 1] {
            let err = LogOptions { writer_slice_us, ..LogOptions::default() }.validate().unwrap_err();
            assert!(matches!(err, Error::InvalidOptions { option: "writer-slice-us", .. }), "{err}");
            assert!(err.to_string().contains("0 keeps the kernel's default"), "{err}");
        }
        for segment_bytes in [SEGMENT_BYTES_MIN - 1, SEGMENT_BYTES_MAX + 1] {
            let err = LogOptions { segment_bytes, ..LogOptions::default() }.validate().unwrap_err();
            assert!(matches!(err, Error::InvalidOptions { option: "segment-bytes", .. }), "{err}");
        }
    }

    #[test]
    fn options_read_from_kebab_case_and_reject_unknown_fields() {
        let opts: LogOptions = serde_json::from_str(r#"{"queue-appends-max": 7}"#).unwrap();
        assert_eq!(opts.queue_appends_max, 7);
        assert_eq!(opts.record_bytes_max, LogOptions::default().record_bytes_max);
        assert!(serde_json::from_str::<LogOptions>(r#"{"queue-max": 7}"#).is_err());
    }
}
