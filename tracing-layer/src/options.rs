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
}

impl Default for TracingOptions {
    fn default() -> Self {
        TracingOptions {
            enabled: true,
            flush_bytes: 32 << 20,
            flush_age: Duration::from_secs(10),
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            query_threads: 2,
            queries_in_flight_max: 8,
            query_rows_max: 10_000,
            query_memory_bytes: 512 << 20,
            catch_up_max: Duration::from_secs(10),
            feed_batch_records: 1_024,
            feed_interval: Duration::from_millis(100),
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
        if self.flush_age.is_zero() {
            return Err(Error::InvalidOptions { option: "flush-age", reason: "must be longer than 0".to_owned() });
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
