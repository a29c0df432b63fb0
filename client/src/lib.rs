//! The Rust client of Comb: a light async client of the gRPC API, with none of the
//! server's dependencies.
//!
//! ```no_run
//! # async fn example() -> Result<(), comb_client::Error> {
//! use comb_client::Client;
//!
//! let client = Client::connect("http://127.0.0.1:7878").await?;
//! client.execute_sql("CREATE TABLE IF NOT EXISTS counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)").await?;
//! // Exactly once per id: invoking again with "order-42" returns the same output and runs nothing.
//! let out: serde_json::Value = client.invoke("bump", &serde_json::json!({ "id": 7 })).id("order-42").await?;
//! # Ok(())
//! # }
//! ```
//!
//! One [`Client`] holds one HTTP/2 connection that every clone shares; requests are
//! multiplexed on it, and invocations on one stream of it: the calls waiting at a moment
//! travel as one message, and so do their answers. Each call has a time-out ([`ClientBuilder::timeout`]). Errors say
//! whether a retry can help ([`Error::is_retryable`]); re-invoking with the same workflow id
//! is always safe. An `https://` address is reached over TLS (rustls), the server's
//! certificate checked against the system's CAs or the one given
//! ([`ClientBuilder::ca_certificate`]).

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

pub use tonic::Code;

/// The API as generated from `proto/comb/v1/comb.proto`.
#[allow(missing_docs, missing_debug_implementations, unreachable_pub, clippy::all, clippy::pedantic, clippy::clone_on_ref_ptr)]
pub mod proto {
    tonic::include_proto!("comb.v1");
}

use proto::comb_client::CombClient;

mod stream;

pub use stream::{STREAM_BATCH_BYTES_MAX, STREAM_BATCH_CALLS_MAX, STREAM_CALL_BYTES_MAX, STREAM_CALLS_MAX};

/// An error of a call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The server could not be reached.
    #[error("cannot connect to {addr}: {message}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        message: String,
    },
    /// The server answered with an error status.
    #[error("{message} ({code:?})")]
    Status {
        /// The gRPC code.
        code: Code,
        /// The server's message: what was wrong.
        message: String,
    },
    /// The workflow ran and failed; the failure is its recorded outcome.
    #[error("workflow run {id} failed: {error}")]
    WorkflowFailed {
        /// The run's id.
        id: String,
        /// Which step failed, and why.
        error: String,
    },
    /// A value could not be converted to or from JSON.
    #[error("JSON conversion failed: {0}")]
    Json(String),
}

impl Error {
    /// The gRPC code, for an error status.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Tells whether the same call may succeed later: the server was unreachable,
    /// overloaded, stopping, or the wait timed out. Invoking again with the same workflow
    /// id never runs a workflow twice.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { .. } => true,
            Error::Status { code, .. } => matches!(code, Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded | Code::Aborted),
            _ => false,
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Error {
        // The client's own time-out: tonic reports it as CANCELLED with the text of its
        // `TimeoutExpired` (and nothing else to know it by); it is the deadline passing, as a
        // call on the invocation stream reports it.
        let timed_out = status.code() == Code::Cancelled && status.message() == tonic::TimeoutExpired(()).to_string();
        if timed_out {
            return Error::Status { code: Code::DeadlineExceeded, message: status.message().to_owned() };
        }
        // A call its connection dropped before sending it (the connection closed, or was not
        // ready): hyper reports it as canceled, and tonic as CANCELLED, the code of a caller
        // that gave up. The server never saw it, so another connection may take it.
        if status.code() == Code::Cancelled && never_sent(&status) {
            return Error::Status { code: Code::Unavailable, message: format!("the connection closed before the call was sent ({})", status.message()) };
        }
        // The connection failed under the call (the server killed, the network cut): tonic
        // reports the transport's error as UNKNOWN or INTERNAL, codes a server also sends,
        // but then with no source. The call may or may not have reached the server, as
        // with any UNAVAILABLE; its cause is in the source chain, which the message keeps.
        if matches!(status.code(), Code::Unknown | Code::Internal) && std::error::Error::source(&status).is_some() {
            return Error::Status { code: Code::Unavailable, message: format!("the connection to the server failed: {}", error_chain(&status)) };
        }
        Error::Status { code: status.code(), message: status.message().to_owned() }
    }
}

/// Tells whether `status` comes from hyper canceling a request its connection never sent.
fn never_sent(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_canceled) {
            return true;
        }
        source = error.source();
    }
    false
}

/// The result type of the client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A workflow run's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Started, not ended.
    Running,
    /// Ended with an output.
    Succeeded,
    /// Ended with an error.
    Failed,
}

/// A workflow run.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Run {
    /// Its id.
    pub id: String,
    /// The workflow's name.
    pub name: String,
    /// The workflow's version it runs.
    pub version: u64,
    /// Its status.
    pub status: RunStatus,
    /// Its input.
    pub input: serde_json::Value,
    /// Its output, once succeeded.
    pub output: Option<serde_json::Value>,
    /// Its error, once failed.
    pub error: Option<String>,
    /// When it started, microseconds since the Unix epoch.
    pub started_us: u64,
    /// When it ended.
    pub ended_us: Option<u64>,
    /// Whether the call that returned it found it already run (or running) under its id.
    pub deduplicated: bool,
}

fn json(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|err| Error::Json(format!("the server sent malformed JSON: {err}")))
}

impl Run {
    fn from_proto(workflow: Option<proto::Workflow>, deduplicated: bool) -> Result<Run> {
        let w = workflow.ok_or_else(|| Error::Json("the server's answer has no workflow".to_owned()))?;
        let status = match proto::WorkflowStatus::try_from(w.status) {
            Ok(proto::WorkflowStatus::Running) => RunStatus::Running,
            Ok(proto::WorkflowStatus::Succeeded) => RunStatus::Succeeded,
            Ok(proto::WorkflowStatus::Failed) => RunStatus::Failed,
            _ => return Err(Error::Json(format!("the server sent an unknown status {}", w.status))),
        };
        Ok(Run {
            output: if status == RunStatus::Succeeded { Some(json(&w.output_json)?) } else { None },
            error: (status == RunStatus::Failed).then_some(w.error),
            input: json(&w.input_json)?,
            id: w.id,
            name: w.name,
            version: w.version,
            status,
            started_us: w.started_us,
            ended_us: (w.ended_us != 0).then_some(w.ended_us),
            deduplicated,
        })
    }

    /// The output converted, or the run's failure as an error.
    pub fn into_output<O: DeserializeOwned>(self) -> Result<O> {
        match self.status {
            RunStatus::Succeeded => serde_json::from_value(self.output.unwrap_or_default()).map_err(|err| Error::Json(format!("the output of run {} does not convert: {err}", self.id))),
            RunStatus::Failed => Err(Error::WorkflowFailed { id: self.id, error: self.error.unwrap_or_default() }),
            RunStatus::Running => Err(Error::Status { code: Code::DeadlineExceeded, message: format!("workflow run {} has not ended yet", self.id) }),
        }
    }
}

/// A registered workflow version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The workflow's name.
    pub name: String,
    /// Its new version.
    pub version: u64,
    /// The steps whose outputs are recorded.
    pub recorded_steps: Vec<String>,
    /// The transaction units in running order (`a+b` for a multi-function transaction).
    pub units: Vec<String>,
}

/// One statement of a SQL-only function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SqlStatement {
    /// Its name, unique in the function.
    pub name: String,
    /// The SQL, with `$1`, `$2`, ...
    pub sql: String,
    /// The input field of each parameter.
    #[serde(default)]
    pub params: Vec<String>,
}

/// A SQL-only function: statements run in order in one transaction, returning the rows of
/// the last one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct SqlFunction {
    /// Its name.
    pub name: String,
    /// Its statements.
    pub statements: Vec<SqlStatement>,
    /// The input field holding the partition key; `None`: multi-partition.
    #[serde(default)]
    pub partition_by: Option<String>,
}

/// A page of runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The runs.
    pub runs: Vec<Run>,
    /// Pass to [`ListFilter::page_token`] for the next page; `None` at the end. A page may
    /// hold fewer runs than asked, even none, while more follow: the server examines a
    /// bounded number of runs per call (its `list-examine-max`).
    pub next_page_token: Option<String>,
}

/// Which runs to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only runs of this workflow.
    pub name: Option<String>,
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// Most runs in the page (the server bounds it).
    pub page_size: u32,
    /// Where the previous page ended.
    pub page_token: Option<String>,
}

/// What the server says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Health {
    /// The server's version.
    pub version: String,
    /// Its partitions.
    pub partitions: u32,
    /// The shared log's last LSN.
    pub log_tail: u64,
    /// Runs in progress.
    pub workflows_in_flight: u64,
    /// The last LSN whose traces are queryable (0: tracing is off).
    pub traced_lsn: u64,
    /// The Parquet files the trace tables list now (0 when tracing is off, or before its
    /// first flush).
    pub trace_files: u64,
    /// Merges of trace files since the server started.
    pub trace_merges: u64,
    /// Storage calls of the shared log's write path (a group's write or sync, a trim) since
    /// the server started that took 10 ms or more: every commit behind one waited as long.
    pub log_io_over_10ms: u64,
    /// The longest of those calls since the server started, in microseconds.
    pub log_io_us_max: u64,
    /// The longest step a partition's executor (or the coordinator) is running now, in
    /// milliseconds (0: none): a function that does not return shows here.
    pub executor_step_ms_now_max: u64,
    /// Flushes of the traces to their files that failed since the server started (each is
    /// tried again; meanwhile the log keeps the records the traces still need).
    pub trace_flush_failures: u64,
}

/// The answer to a trace query.
#[derive(Debug, Clone, PartialEq)]
pub struct Traces {
    /// The columns' names, in order.
    pub columns: Vec<String>,
    /// The rows, a JSON value per column.
    pub rows: Vec<Vec<serde_json::Value>>,
    /// Whether the server cut rows at its bounds.
    pub truncated: bool,
}

/// The URI of the server at `addr`, and whether it is reached over TLS: `host:port` means
/// `http://host:port`; `http://` and `https://` addresses are taken as they are. Any other
/// scheme is refused.
fn endpoint_uri(addr: &str) -> std::result::Result<(String, bool), String> {
    match addr.split_once("://") {
        None => Ok((format!("http://{addr}"), false)),
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => Ok((addr.to_owned(), false)),
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => Ok((addr.to_owned(), true)),
        Some((scheme, _)) => Err(format!("the scheme {scheme}:// is not one this client speaks: give host:port, http://host:port or https://host:port")),
    }
}

/// The TLS of a connection to an `https://` server: the server's certificate must be signed
/// by `ca_pem` when given (a private CA's certificate, or the server's own self-signed one),
/// else by a CA the system trusts.
fn tls_config(ca_pem: Option<&[u8]>) -> std::result::Result<ClientTlsConfig, String> {
    match ca_pem {
        // Checked here: a file with no certificate in it would be taken as an empty list,
        // and every server refused as signed by an unknown CA.
        Some(pem) if !pem.windows(PEM_CERTIFICATE.len()).any(|w| w == PEM_CERTIFICATE) => {
            Err("the CA certificate given holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned())
        }
        Some(pem) => Ok(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))),
        None => Ok(ClientTlsConfig::new().with_native_roots()),
    }
}

/// How a PEM certificate begins.
const PEM_CERTIFICATE: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    addr: String,
    token: Option<String>,
    timeout: Duration,
    connect_timeout: Duration,
    ca_certificate: Option<Vec<u8>>,
}

impl ClientBuilder {
    /// The CA certificate (PEM) that signed the certificate of an `https://` server, trusted
    /// instead of the system's CAs: a private CA's, or a self-signed server's own.
    pub fn ca_certificate(mut self, pem: impl Into<Vec<u8>>) -> ClientBuilder {
        self.ca_certificate = Some(pem.into());
        self
    }

    /// The bearer token to send.
    pub fn token(mut self, token: impl Into<String>) -> ClientBuilder {
        self.token = Some(token.into());
        self
    }

    /// The time-out of each call (default 75 s: longer than the server's own wait).
    pub fn timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.timeout = timeout;
        self
    }

    /// The time-out of connecting (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// Connects.
    pub async fn connect(self) -> Result<Client> {
        let connect_error = |message: String| Error::Connect { addr: self.addr.clone(), message };
        // A wrong address or token is no failure to connect: retrying cannot mend it.
        let invalid = |message: String| Error::Status { code: Code::InvalidArgument, message: format!("{}: {message}", self.addr) };
        let (uri, tls) = endpoint_uri(&self.addr).map_err(invalid)?;
        let mut endpoint = Endpoint::from_shared(uri).map_err(|err| invalid(format!("not an address: {err}")))?;
        if tls {
            let config = tls_config(self.ca_certificate.as_deref()).map_err(invalid)?;
            // Off the runtime: with no CA given, this reads the system's certificate files.
            let configured = tokio::task::spawn_blocking(move || endpoint.tls_config(config)).await.map_err(|err| invalid(format!("cannot set up TLS: {err}")))?;
            endpoint = configured.map_err(|err| invalid(format!("cannot set up TLS: {}", error_chain(&err))))?;
        } else if self.ca_certificate.is_some() {
            return Err(invalid("a CA certificate is for a server reached over TLS: give its https:// address".to_owned()));
        }
        let endpoint = endpoint
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .tcp_nodelay(true)
            .http2_adaptive_window(true)
            // A connection that died without a word (a peer gone, a network cut) is found
            // by its pings, so that the invocations on it fail and the next ones reconnect.
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
        let channel = endpoint.connect().await.map_err(|err| {
            let message = error_chain(&err);
            // rustls's words for a first answer that is no TLS record (a plain HTTP/2 server),
            // and for a certificate it refused: a retry will not mend either.
            if tls && message.contains("InvalidContentType") {
                return invalid(format!("the server does not speak TLS (its answer was no TLS record): give its http:// address ({message})"));
            }
            if tls && message.contains("invalid peer certificate") {
                return invalid(format!("the server's certificate is not trusted here: give the CA that signed it (--ca-cert), or the address its certificate names ({message})"));
            }
            connect_error(message)
        })?;
        let token = match self.token {
            Some(token) => Some(MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| invalid("the token is not valid header text".to_owned()))?),
            None => None,
        };
        let inner = CombClient::new(channel).max_decoding_message_size(64 << 20);
        Ok(Client { inner, token, timeout: self.timeout, stream: Arc::new(stream::Mux::new()) })
    }
}

/// An error and its sources, each after a colon; a source whose text the error's own
/// already ends with (some errors print their source) is not said twice.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// How often the client pings its server while calls are open on the connection.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// How long a ping may go unanswered before the connection is taken for dead.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A client; clones share one connection.
#[derive(Debug, Clone)]
pub struct Client {
    inner: CombClient<Channel>,
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
    timeout: Duration,
    /// Where invocations go: one stream of the connection, shared by every clone.
    stream: Arc<stream::Mux>,
}

impl Client {
    /// Starts building a client of the server at `addr` (`host:port` or `http://host:port`;
    /// `https://host:port` for one that serves TLS).
    pub fn builder(addr: impl Into<String>) -> ClientBuilder {
        ClientBuilder { addr: addr.into(), token: None, timeout: Duration::from_secs(75), connect_timeout: Duration::from_secs(5), ca_certificate: None }
    }

    /// Connects with the default options.
    pub async fn connect(addr: impl Into<String>) -> Result<Client> {
        Client::builder(addr).connect().await
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            request.metadata_mut().insert("authorization", token.clone());
        }
        request
    }

    /// Applies a DDL script; returns the log position of the change.
    pub async fn execute_sql(&self, sql: &str) -> Result<u64> {
        let reply = self.inner.clone().execute_sql(self.request(proto::ExecuteSqlRequest { sql: sql.to_owned() })).await?;
        Ok(reply.into_inner().lsn)
    }

    /// Registers a SQL-only function; returns whether it is read-only. Registering the same
    /// definition again changes nothing.
    pub async fn register_function(&self, function: &SqlFunction) -> Result<bool> {
        let request = proto::RegisterFunctionRequest {
            name: function.name.clone(),
            statements: function.statements.iter().map(|s| proto::SqlStatement { name: s.name.clone(), sql: s.sql.clone(), params: s.params.clone() }).collect(),
            partition_by: function.partition_by.clone().unwrap_or_default(),
        };
        Ok(self.inner.clone().register_function(self.request(request)).await?.into_inner().read_only)
    }

    /// Registers a workflow from its JSON specification.
    pub async fn register_workflow(&self, spec_json: &str) -> Result<Registered> {
        let reply = self.inner.clone().register_workflow(self.request(proto::RegisterWorkflowRequest { spec_json: spec_json.to_owned() })).await?.into_inner();
        Ok(Registered { name: reply.name, version: reply.version, recorded_steps: reply.recorded_steps, units: reply.units })
    }

    /// Invokes a workflow; `.await` it for the typed output, or call [`Invoke::run`] for
    /// the whole run. Give an id with [`Invoke::id`] to make retries safe.
    pub fn invoke<O: DeserializeOwned>(&self, workflow: &str, input: &impl Serialize) -> Invoke<'_, O> {
        Invoke {
            client: self,
            workflow: workflow.to_owned(),
            input: serde_json::to_string(input).map_err(|err| Error::Json(format!("the input does not convert: {err}"))),
            id: None,
            output: PhantomData,
        }
    }

    /// Starts a run and returns once its start is durable, with its id.
    pub async fn start(&self, workflow: &str, input: &impl Serialize, id: Option<&str>) -> Result<Run> {
        let input = serde_json::to_string(input).map_err(|err| Error::Json(format!("the input does not convert: {err}")))?;
        let request = proto::InvokeRequest { workflow: workflow.to_owned(), input_json: input, workflow_id: id.unwrap_or_default().to_owned(), r#async: true };
        let reply = self.call_invoke(request).await?;
        Run::from_proto(reply.workflow, reply.deduplicated)
    }

    /// One Invoke: on the connection's invocation stream, or as a call of its own when it
    /// is larger than [`STREAM_CALL_BYTES_MAX`].
    async fn call_invoke(&self, request: proto::InvokeRequest) -> Result<proto::InvokeResponse> {
        if prost::Message::encoded_len(&request) > STREAM_CALL_BYTES_MAX {
            return Ok(self.inner.clone().invoke(self.request(request)).await?.into_inner());
        }
        self.stream.call(self, request).await
    }

    /// A run as it stands; with `wait`, once it has ended. A read-only one-transaction run
    /// invoked synchronously ([`Client::invoke`]) without an id leaves no row, so it is not
    /// found here (`NOT_FOUND`): its end is in the `workflows` trace table
    /// ([`Client::query_traces`]).
    pub async fn get_workflow(&self, id: &str, wait: bool) -> Result<Run> {
        let reply = self.inner.clone().get_workflow(self.request(proto::GetWorkflowRequest { workflow_id: id.to_owned(), wait })).await?.into_inner();
        Run::from_proto(reply.workflow, false)
    }

    /// A page of runs, in id order.
    pub async fn list_workflows(&self, filter: &ListFilter) -> Result<Page> {
        let status = match filter.status {
            None => proto::WorkflowStatus::Unspecified,
            Some(RunStatus::Running) => proto::WorkflowStatus::Running,
            Some(RunStatus::Succeeded) => proto::WorkflowStatus::Succeeded,
            Some(RunStatus::Failed) => proto::WorkflowStatus::Failed,
        };
        let request = proto::ListWorkflowsRequest {
            name: filter.name.clone().unwrap_or_default(),
            status: status.into(),
            page_size: filter.page_size,
            page_token: filter.page_token.clone().unwrap_or_default(),
        };
        let reply = self.inner.clone().list_workflows(self.request(request)).await?.into_inner();
        let runs = reply.workflows.into_iter().map(|w| Run::from_proto(Some(w), false)).collect::<Result<_>>()?;
        Ok(Page { runs, next_page_token: Some(reply.next_page_token).filter(|t| !t.is_empty()) })
    }

    /// Up to `most` runs that `filter` selects, from its `page_token` on, in id order: the
    /// pages one after the other until `most` or the last.
    pub async fn list_workflows_up_to(&self, filter: &ListFilter, most: usize) -> Result<Vec<Run>> {
        let (mut runs, mut filter) = (Vec::new(), filter.clone());
        while runs.len() < most {
            let left = u32::try_from(most - runs.len()).unwrap_or(u32::MAX);
            filter.page_size = if filter.page_size == 0 { left } else { filter.page_size.min(left) };
            let page = self.list_workflows(&filter).await?;
            runs.extend(page.runs);
            match page.next_page_token {
                Some(token) => filter.page_token = Some(token),
                None => break,
            }
        }
        runs.truncate(most);
        Ok(runs)
    }

    /// What the server says of itself.
    pub async fn health(&self) -> Result<Health> {
        let reply = self.inner.clone().health(self.request(proto::HealthRequest {})).await?.into_inner();
        Ok(Health {
            version: reply.version,
            partitions: reply.partitions,
            log_tail: reply.log_tail,
            workflows_in_flight: reply.workflows_in_flight,
            traced_lsn: reply.traced_lsn,
            trace_files: reply.trace_files,
            trace_merges: reply.trace_merges,
            log_io_over_10ms: reply.log_io_over_10ms,
            log_io_us_max: reply.log_io_us_max,
            executor_step_ms_now_max: reply.executor_step_ms_now_max,
            trace_flush_failures: reply.trace_flush_failures,
        })
    }

    /// Runs a read-only SQL query over the traces (`function_invocations`, `change_data`,
    /// `workflows`, `read_events`). With `catch_up`, the answer includes everything
    /// committed before the call.
    pub async fn query_traces(&self, sql: &str, catch_up: bool) -> Result<Traces> {
        let reply = self.inner.clone().query_traces(self.request(proto::QueryTracesRequest { sql: sql.to_owned(), catch_up })).await?.into_inner();
        let rows = reply
            .rows_json
            .iter()
            .map(|row| serde_json::from_str::<Vec<serde_json::Value>>(row).map_err(|err| Error::Json(format!("a trace row is not a JSON array: {err}"))))
            .collect::<Result<_>>()?;
        Ok(Traces { columns: reply.columns, rows, truncated: reply.truncated })
    }
}

/// A synchronous invocation being prepared; see [`Client::invoke`].
#[derive(Debug)]
#[must_use = "an invocation does nothing until awaited"]
pub struct Invoke<'a, O> {
    client: &'a Client,
    workflow: String,
    input: Result<String>,
    id: Option<String>,
    output: PhantomData<fn() -> O>,
}

impl<O> Invoke<'_, O> {
    /// The workflow id (the idempotency key): a run with this id happens at most once.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Runs the workflow and returns the whole run, ended (succeeded or failed).
    pub async fn run(self) -> Result<Run> {
        let request = proto::InvokeRequest { workflow: self.workflow, input_json: self.input?, workflow_id: self.id.unwrap_or_default(), r#async: false };
        let reply = self.client.call_invoke(request).await?;
        Run::from_proto(reply.workflow, reply.deduplicated)
    }
}

impl<'a, O: DeserializeOwned + 'a> IntoFuture for Invoke<'a, O> {
    type Output = Result<O>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<O>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.run().await?.into_output() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_without_a_scheme_is_http() {
        assert_eq!(endpoint_uri("127.0.0.1:7878").unwrap(), ("http://127.0.0.1:7878".to_owned(), false));
        assert_eq!(endpoint_uri("localhost:7878").unwrap(), ("http://localhost:7878".to_owned(), false));
        assert_eq!(endpoint_uri("http://127.0.0.1:7878").unwrap(), ("http://127.0.0.1:7878".to_owned(), false));
        assert_eq!(endpoint_uri("HTTPS://comb.example:443").unwrap(), ("HTTPS://comb.example:443".to_owned(), true));
    }

    #[tokio::test]
    async fn another_scheme_or_a_misplaced_ca_certificate_is_refused_before_anything_is_sent() {
        assert!(endpoint_uri("ftp://comb.example:21").unwrap_err().contains("ftp://"));
        let refused = |result: Result<Client>, wanted: &str| match result {
            Err(err @ Error::Status { code: Code::InvalidArgument, .. }) => assert!(err.to_string().contains(wanted) && !err.is_retryable(), "{err}"),
            other => panic!("{other:?}"),
        };
        // Port 1 of loopback: nothing listens there, and nothing is tried.
        refused(Client::builder("https://127.0.0.1:1").ca_certificate("not a certificate").connect().await, "holds no PEM certificate");
        refused(Client::builder("http://127.0.0.1:1").ca_certificate("-----BEGIN CERTIFICATE-----").connect().await, "give its https:// address");
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_address_given_not_a_missing_scheme() {
        // Port 1 of loopback: nothing listens there.
        let err = Client::builder("127.0.0.1:1").connect_timeout(Duration::from_secs(5)).connect().await.expect_err("nothing listens on port 1");
        let message = err.to_string();
        assert!(matches!(&err, Error::Connect { addr, .. } if addr == "127.0.0.1:1"), "{err:?}");
        assert!(!message.contains("scheme"), "{message}");
    }

    #[tokio::test]
    async fn a_call_its_connection_never_sent_is_retryable_and_a_cancel_is_not() {
        // A connection whose task is gone refuses the request before sending it.
        let (io, _peer) = tokio::io::duplex(64);
        let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, String>(hyper_util::rt::TokioIo::new(io)).await.unwrap();
        drop(connection);
        let refused = sender.send_request(hyper::Request::new(String::new())).await.unwrap_err();
        assert!(refused.is_canceled());
        let status = tonic::Status::from_error(Box::new(refused));
        assert_eq!(status.code(), Code::Cancelled, "tonic's code for it: {status:?}");
        let error = Error::from(status);
        assert_eq!(error.code(), Some(Code::Unavailable), "{error}");
        assert!(error.is_retryable());
        assert!(error.to_string().contains("before the call was sent"), "{error}");

        // A CANCELLED from anywhere else stays what it is.
        let error = Error::from(tonic::Status::cancelled("the caller gave up"));
        assert_eq!(error.code(), Some(Code::Cancelled));
        assert!(!error.is_retryable());
        // And tonic's own time-out is the deadline passing.
        let error = Error::from(tonic::Status::cancelled(tonic::TimeoutExpired(()).to_string()));
        assert_eq!(error.code(), Some(Code::DeadlineExceeded));
        assert!(error.is_retryable());
    }

    /// A connection that fails under a call (the server killed): tonic's UNKNOWN, with the
    /// transport's error as its source, is UNAVAILABLE and keeps its cause; a server's own
    /// UNKNOWN or INTERNAL (no source) stays what it is.
    #[test]
    fn a_connection_failing_under_a_call_is_unavailable_with_its_cause() {
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer");
        let status = tonic::Status::from_error(Box::new(reset));
        assert_eq!(status.code(), Code::Unknown, "tonic's code for it: {status:?}");
        let error = Error::from(status);
        assert_eq!(error.code(), Some(Code::Unavailable), "{error}");
        assert!(error.is_retryable());
        assert!(error.to_string().contains("connection reset by peer"), "{error}");
        for status in [tonic::Status::internal("a bug"), tonic::Status::unknown("a handler's panic")] {
            let code = status.code();
            let error = Error::from(status);
            assert_eq!(error.code(), Some(code), "{error}");
            assert!(!error.is_retryable());
        }
    }
}
