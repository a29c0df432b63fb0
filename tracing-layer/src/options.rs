//! The tracing layer's options: every bound named, with its default.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Options of the tracing layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct TracingOptions {
    /// Whether the server keeps traces at all.
    pub enabled: bool,
    /// Flush the in-memory tail to Parquet once it holds this many bytes.
    pub flush_bytes: usize,
    /// Flush the tail once its oldest row has waited this long.
    #[serde(with = "millis")]
    pub flush_age: Duration,
    /// Remove Parquet files written longer ago than this; `None`: keep everything.
    #[serde(with = "millis_opt")]
    pub retention: Option<Duration>,
    /// Merge this many consecutive files of a table, of one size tier, into one (0: never
    /// merge). Each flush writes a file per table; merges keep their number small.
    pub merge_files: usize,
    /// A merged file is at most this many bytes, and a file this large is not merged again.
    pub merge_bytes_max: u64,
    /// Only files written within the same stretch of this length are merged: a row is kept
    /// at most this much longer than `retention`.
    #[serde(with = "millis")]
    pub merge_span: Duration,
    /// Threads of the query runtime (its own, never the server's).
    pub query_threads: usize,
    /// Most queries running at once; one more is refused (retry later).
    pub queries_in_flight_max: usize,
    /// Most rows a query returns; the rest are cut and the answer says so.
    pub query_rows_max: usize,
    /// Memory one query may use for sorts, joins and aggregates, in bytes.
    pub query_memory_bytes: usize,
    /// Longest a query waits for the traces to reach the log's tail.
    #[serde(with = "millis")]
    pub catch_up_max: Duration,
    /// Most log records read at once by the feed.
    pub feed_batch_records: usize,
    /// How long the feed lets records gather once it has caught up with the log: a commit's
    /// rows are queryable about this long after it, and the feed makes few large batches
    /// instead of one per group commit.
    #[serde(with = "millis")]
    pub feed_interval: Duration,
    /// CPU niceness of the feed's threads (Linux, 0 to 19; 0: the server's priority). The
    /// feed and its flushes take a few percent of the CPUs; at a higher niceness the
    /// transactions' threads run first when both want a CPU, and the feed lags behind the log
    /// until they do not. (It cannot make tracing cheaper when the CPUs are never idle.)
    pub feed_nice: i32,
}

/// Most files one merge reads at once (each one open, and its small row groups in memory).
pub(crate) const MERGE_FILES_MAX: usize = 64;

/// The highest CPU niceness Linux knows.
const NICE_MAX: i32 = 19;

impl Default for TracingOptions {
    fn default() -> Self {
        TracingOptions {
            enabled: true,
            flush_bytes: 32 << 20,
            flush_age: Duration::from_secs(10),
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            merge_files: 8,
            merge_bytes_max: 256 << 20,
            merge_span: Duration::from_secs(3600),
            query_threads: 2,
            queries_in_flight_max: 8,
            query_rows_max: 10_000,
            query_memory_bytes: 512 << 20,
            catch_up_max: Duration::from_secs(10),
            feed_batch_records: 1_024,
            feed_interval: Duration::from_millis(100),
            feed_nice: 10,
        }
    }
}

impl TracingOptions {
    /// Checks every bound.
    pub fn validate(&self) -> Result<()> {
        for (option, value) in [
            ("flush-bytes", self.flush_bytes),
            ("query-threads", self.query_threads),
            ("queries-in-flight-max", self.queries_in_flight_max),
            ("query-rows-max", self.query_rows_max),
            ("query-memory-bytes", self.query_memory_bytes),
            ("feed-batch-records", self.feed_batch_records),
        ] {
            if value == 0 {
                return Err(Error::InvalidOptions { option, reason: "must be at least 1".to_owned() });
            }
        }
        if !(0..=NICE_MAX).contains(&self.feed_nice) {
            return Err(Error::InvalidOptions { option: "feed-nice", reason: format!("{} is not a niceness from 0 to {NICE_MAX}", self.feed_nice) });
        }
        if self.merge_files == 1 || self.merge_files > MERGE_FILES_MAX {
            return Err(Error::InvalidOptions { option: "merge-files", reason: format!("{} is not 0 (never merge) or 2 to {MERGE_FILES_MAX}", self.merge_files) });
        }
        if self.merge_bytes_max == 0 {
            return Err(Error::InvalidOptions { option: "merge-bytes-max", reason: "must be at least 1".to_owned() });
        }
        if self.merge_span.is_zero() {
            return Err(Error::InvalidOptions { option: "merge-span", reason: "must be longer than 0".to_owned() });
        }
        if self.flush_age.is_zero() {
            return Err(Error::InvalidOptions { option: "flush-age", reason: "must be longer than 0".to_owned() });
        }
        // A query that catches up waits for the feed's next step, up to `feed-interval` away
        // and then for the step's work: an interval just below the bound can still be too long
        // for a query that comes as the feed begins to wait, and one at or above it always is.
        if self.feed_interval >= self.catch_up_max {
            return Err(Error::InvalidOptions {
                option: "feed-interval",
                reason: format!(
                    "{} ms is not below catch-up-max ({} ms): a query that waits for the traces to catch up may time out while the feed waits",
                    self.feed_interval.as_millis(),
                    self.catch_up_max.as_millis()
                ),
            });
        }
        Ok(())
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

mod millis_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bound_is_checked_and_named() {
        assert!(TracingOptions::default().validate().is_ok());
        let refused = |options: TracingOptions| match options.validate() {
            Err(Error::InvalidOptions { option, reason }) => format!("{option}: {reason}"),
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(refused(TracingOptions { flush_bytes: 0, ..TracingOptions::default() }), "flush-bytes: must be at least 1");
        assert_eq!(refused(TracingOptions { feed_nice: -1, ..TracingOptions::default() }), "feed-nice: -1 is not a niceness from 0 to 19");
        assert_eq!(refused(TracingOptions { feed_nice: 20, ..TracingOptions::default() }), "feed-nice: 20 is not a niceness from 0 to 19");
        assert_eq!(refused(TracingOptions { flush_age: Duration::ZERO, ..TracingOptions::default() }), "flush-age: must be longer than 0");
        assert_eq!(refused(TracingOptions { merge_files: 1, ..TracingOptions::default() }), "merge-files: 1 is not 0 (never merge) or 2 to 64");
        assert_eq!(refused(TracingOptions { merge_files: 65, ..TracingOptions::default() }), "merge-files: 65 is not 0 (never merge) or 2 to 64");
        assert!(TracingOptions { merge_files: 0, ..TracingOptions::default() }.validate().is_ok(), "0 turns merging off");
        assert_eq!(refused(TracingOptions { merge_bytes_max: 0, ..TracingOptions::default() }), "merge-bytes-max: must be at least 1");
        assert_eq!(refused(TracingOptions { merge_span: Duration::ZERO, ..TracingOptions::default() }), "merge-span: must be longer than 0");
        let slow = TracingOptions { feed_interval: Duration::from_secs(10), ..TracingOptions::default() };
        assert_eq!(refused(slow.clone()), "feed-interval: 10000 ms is not below catch-up-max (10000 ms): a query that waits for the traces to catch up may time out while the feed waits");
        assert!(TracingOptions { catch_up_max: Duration::from_secs(11), ..slow }.validate().is_ok());
    }

    #[test]
    fn options_read_from_kebab_case_json_and_keep_the_defaults_left_out() {
        let options: TracingOptions = serde_json::from_str(r#"{"feed-nice": 0, "flush-age": 500}"#).unwrap();
        assert_eq!(options, TracingOptions { feed_nice: 0, flush_age: Duration::from_millis(500), ..TracingOptions::default() });
        let unknown = serde_json::from_str::<TracingOptions>(r#"{"feed-niceness": 3}"#).unwrap_err().to_string();
        assert!(unknown.contains("unknown field `feed-niceness`"), "{unknown}");
    }
}
