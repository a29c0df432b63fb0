//! The server's options: every bound named, with its default.

use std::path::PathBuf;
use std::time::Duration;

use comb_backend::EngineOptions;
use comb_tracing::TracingOptions;
use serde::{Deserialize, Serialize};

/// Options of the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct ServerOptions {
    /// Options of the backend (partitions, queues, row and JSON bounds) and its log.
    pub engine: EngineOptions,
    /// Options of the tracing layer (flushes, retention, query bounds).
    pub tracing: TracingOptions,
    /// The bearer token every request must carry (`authorization: Bearer <token>`).
    /// Required when the server listens on anything but loopback.
    #[serde(skip_serializing)]
    pub token: Option<String>,
    /// Listen beyond loopback without a token: whoever reaches the port can run every
    /// workflow and read every trace. Off unless asked for explicitly.
    pub insecure_no_token: bool,
    /// The server's TLS certificate (PEM, the chain from the server's own), with
    /// `tls-key`: the server then speaks only TLS, and clients reach it by `https://`.
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `tls-cert`.
    pub tls_key: Option<PathBuf>,
    /// Largest request accepted, in bytes.
    pub request_bytes_max: usize,
    /// Most workflow runs in progress at once; one more Invoke is refused
    /// (`RESOURCE_EXHAUSTED`, retry later).
    pub workflows_in_flight_max: usize,
    /// Longest an Invoke waits for its answer (a synchronous one for its run's end, an
    /// asynchronous one for its start to be durable), and a GetWorkflow that waits for a
    /// run's end. Past it the run goes on, and the error names its id.
    #[serde(with = "millis")]
    pub wait_max: Duration,
    /// Most times a step is retried after the backend refused it for overload.
    pub step_retries_max: u32,
    /// Longest workflow id accepted, in bytes.
    pub workflow_id_bytes_max: usize,
    /// How often the server checkpoints: the state store is flushed and the log trimmed
    /// below what the store and the trace feed still need. The log holds about this long of
    /// commits (more while the trace feed is behind), and a restart replays at most that.
    #[serde(with = "millis")]
    pub checkpoint_interval: Duration,
    /// How often the server resumes the runs that started, did not end, and that no task
    /// runs (a failure of the server stopped theirs), as it does at start.
    #[serde(with = "millis")]
    pub resume_interval: Duration,
    /// How long an ended run is remembered: its row (for GetWorkflow and ListWorkflows), and
    /// its id, which an invoke names to get its outcome rather than run it again. Past it,
    /// the run's row and recorded outputs are deleted (a pass every tenth of it, at most
    /// every minute), and an invoke of its id runs it anew. Its trace is kept as long as the
    /// tracing layer's `retention` says.
    #[serde(with = "millis")]
    pub run_retention: Duration,
    /// Most runs one ListWorkflows call examines to fill its page (a filter that few runs
    /// match may leave a page short, even empty, with the token to go on from).
    pub list_examine_max: usize,
    /// Most SQL-only functions, and most workflow versions (of all names together), the
    /// server keeps: a registration past either is refused (`FAILED_PRECONDITION`). Each is
    /// held in memory and loaded at start; definitions stored past a bound lowered later
    /// are still loaded, and a changed workflow the server is built with is registered at
    /// start past it.
    pub definitions_max: usize,
}

/// Longest `run-retention` accepted: about ten years.
pub const RUN_RETENTION_MAX: Duration = Duration::from_secs(3650 * 24 * 3600);

/// Longest time between two passes of the expiry of ended runs (a tenth of `run-retention`
/// when that is shorter).
pub const EXPIRY_INTERVAL_MAX: Duration = Duration::from_secs(60);

/// Shortest time between two passes of the expiry.
pub const EXPIRY_INTERVAL_MIN: Duration = Duration::from_millis(10);

/// Longest `checkpoint-interval` and `resume-interval` accepted: a log kept longer holds a
/// day of commits, and a run stranded longer waits a day.
pub const CHECKPOINT_INTERVAL_MAX: Duration = Duration::from_secs(24 * 3600);

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            engine: EngineOptions::default(),
            tracing: TracingOptions::default(),
            token: None,
            insecure_no_token: false,
            tls_cert: None,
            tls_key: None,
            request_bytes_max: 4 << 20,
            workflows_in_flight_max: 16_384,
            wait_max: Duration::from_secs(60),
            step_retries_max: 50,
            workflow_id_bytes_max: 256,
            checkpoint_interval: Duration::from_secs(30),
            resume_interval: Duration::from_secs(60),
            run_retention: Duration::from_secs(7 * 24 * 3600),
            list_examine_max: 100_000,
            definitions_max: 100_000,
        }
    }
}

/// Largest QueryTraces answer, in bytes encoded; rows beyond it are cut (the answer says
/// so). The tracing layer cuts at as many bytes of row JSON already as it makes the rows;
/// the service cuts again by the answer's encoded bytes, each row's framing counted.
pub const TRACE_ANSWER_BYTES_MAX: usize = comb_tracing::ANSWER_BYTES_MAX;

/// Most calls of one InvokeStream running at once; the stream takes no more of the
/// client's calls until one ends (the client waits, held by HTTP/2 flow control).
pub const STREAM_CALLS_IN_FLIGHT_MAX: usize = 1024;

/// HTTP/2 flow-control window of each stream a server accepts: what a client may send on
/// it before the server reads.
pub(crate) const STREAM_WINDOW_BYTES: u32 = 1 << 20;

/// HTTP/2 flow-control window of a whole connection: room for several streams' windows, so
/// that an InvokeStream at its bound (its window full) does not stall the other calls on
/// the connection.
pub(crate) const CONNECTION_WINDOW_BYTES: u32 = 16 * STREAM_WINDOW_BYTES;

/// Most runs returned by one ListWorkflows page.
pub const LIST_PAGE_MAX: usize = 1000;

/// Runs in a ListWorkflows page when the call asks for none in particular.
pub(crate) const LIST_PAGE_DEFAULT: usize = 100;

impl ServerOptions {
    /// Time between two passes of the expiry of ended runs.
    pub(crate) fn expiry_interval(&self) -> Duration {
        (self.run_retention / 10).clamp(EXPIRY_INTERVAL_MIN, EXPIRY_INTERVAL_MAX)
    }

    /// Checks every bound; called once when the server is built.
    pub fn validate(&self) -> Result<(), String> {
        self.engine.validate().map_err(|e| e.to_string())?;
        self.tracing.validate().map_err(|e| e.to_string())?;
        for (name, value) in [
            ("workflows-in-flight-max", self.workflows_in_flight_max),
            ("workflow-id-bytes-max", self.workflow_id_bytes_max),
            ("list-examine-max", self.list_examine_max),
            ("definitions-max", self.definitions_max),
        ] {
            if value == 0 {
                return Err(format!("invalid server option {name}: must be at least 1"));
            }
        }
        if self.request_bytes_max < comb_client::STREAM_BATCH_BYTES_MAX {
            return Err(format!(
                "invalid server option request-bytes-max: must be at least {} (a client's message of streamed invocations is up to that size)",
                comb_client::STREAM_BATCH_BYTES_MAX
            ));
        }
        for (name, interval) in [("checkpoint-interval", self.checkpoint_interval), ("resume-interval", self.resume_interval)] {
            if interval.is_zero() || interval > CHECKPOINT_INTERVAL_MAX {
                return Err(format!("invalid server option {name}: must be longer than 0 ms and at most {} ms", CHECKPOINT_INTERVAL_MAX.as_millis()));
            }
        }
        if self.run_retention.is_zero() || self.run_retention > RUN_RETENTION_MAX {
            return Err(format!("invalid server option run-retention: must be longer than 0 ms and at most {} ms (ten years)", RUN_RETENTION_MAX.as_millis()));
        }
        if self.wait_max.is_zero() {
            return Err("invalid server option wait-max: must be longer than 0".to_owned());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("invalid server options tls-cert and tls-key: give both (a certificate and its private key) or neither".to_owned());
        }
        if self.token.as_deref() == Some("") {
            return Err("invalid server option token: must not be empty".to_owned());
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
