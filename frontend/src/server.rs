//! The server: built with the application's functions, opened over one data directory
//! (recovering the store, the registrations and every unfinished run), then served over
//! gRPC.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use comb_backend::{Engine, Function};
use comb_tracing::Tracer;
use comb_client::proto::comb_server::CombServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Identity, ServerTlsConfig};
use tonic::{Request, Status};

use crate::error::{Error, Result};
use crate::options::{CONNECTION_WINDOW_BYTES, STREAM_WINDOW_BYTES, ServerOptions, TRACE_ANSWER_BYTES_MAX};
use crate::scheduler::{ExpiryProgress, RunningCursor, Scheduler, check_user_name};
use crate::service::Service;
use crate::system;

/// Builds a [`Server`]: where its data lives, its options, the application's tables,
/// compiled-in functions and workflows.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use comb_backend::Function;
///
/// let server = comb_frontend::Server::builder()
///     .data_dir("data")
///     .schema("CREATE TABLE IF NOT EXISTS counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)")
///     .function(
///         Function::new("bump")
///             .statement("add", "INSERT INTO counters (id, n) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1 RETURNING n")
///             .partition_by("id")
///             .run(|tx, input| Ok(serde_json::json!({ "n": tx.query_one::<i64>("add", (input["id"].as_i64(),))? }))),
///     )
///     .workflow(r#"{"name": "bump", "steps": [{"id": "bump", "function": "bump", "input": "$input"}], "output": "$bump"}"#)
///     .build()
///     .await?;
/// server.serve("127.0.0.1:7878".parse()?).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default)]
pub struct ServerBuilder {
    data_dir: Option<PathBuf>,
    options: ServerOptions,
    schemas: Vec<String>,
    functions: Vec<Function>,
    workflows: Vec<String>,
    log: Option<comb_log::LogBook>,
}

impl ServerBuilder {
    /// The directory that holds everything: the log, the state, the registrations.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> ServerBuilder {
        self.data_dir = Some(dir.into());
        self
    }

    /// The server's options.
    pub fn options(mut self, options: ServerOptions) -> ServerBuilder {
        self.options = options;
        self
    }

    /// DDL the application needs, applied at start when it changes the catalog (write it
    /// with `IF NOT EXISTS`, so that a restart changes nothing).
    pub fn schema(mut self, ddl: impl Into<String>) -> ServerBuilder {
        self.schemas.push(ddl.into());
        self
    }

    /// A compiled-in function.
    pub fn function(mut self, function: Function) -> ServerBuilder {
        self.functions.push(function);
        self
    }

    /// A workflow specification (JSON) registered at start, unless its latest version is
    /// already this one.
    pub fn workflow(mut self, spec_json: impl Into<String>) -> ServerBuilder {
        self.workflows.push(spec_json.into());
        self
    }

    /// An open log to run on instead of the one in `<data_dir>/log` (the state and the
    /// traces stay in the data directory): a log over a loglet of the embedder's, or one a
    /// test controls. The server closes it when it closes.
    pub fn log(mut self, log: comb_log::LogBook) -> ServerBuilder {
        self.log = Some(log);
        self
    }

    /// Opens the data directory, recovers, registers, and resumes the runs that started and
    /// did not end: up to `workflows-in-flight-max` before it returns, the rest on a task of
    /// their own as the runs in flight fall. Must be called within a tokio runtime.
    pub async fn build(mut self) -> Result<Server> {
        self.options.validate().map_err(|message| Error::InvalidArgument { field: "options", message })?;
        let transport = transport(&self.options).await?;
        let dir = self.data_dir.take().ok_or(Error::InvalidArgument { field: "data_dir", message: "no data directory was given".to_owned() })?;
        let engine = match self.log.take() {
            Some(log) => Engine::open_with_log(log, dir.join("state"), self.options.engine.clone()).await?,
            None => Engine::open(&dir, self.options.engine.clone()).await?,
        };
        let mut tracer = None;
        match self.start_on(&engine, &dir, &mut tracer).await {
            Ok((scheduler, resumed, left_over)) => {
                let mut background = vec![
                    checkpoints(engine, scheduler.options.checkpoint_interval),
                    resumptions(Arc::clone(&scheduler), scheduler.options.resume_interval),
                    expiries(Arc::clone(&scheduler), scheduler.options.expiry_interval()),
                ];
                if let Some(cursor) = left_over {
                    let scheduler = Arc::clone(&scheduler);
                    background.push(Background::once(move |stop| scheduler.resume_left_over(cursor, stop)));
                }
                Ok(Server { scheduler, resumed, tracer, background, transport })
            }
            Err(err) => {
                // Stop what started: the executors' threads and RocksDB's would otherwise
                // still run when the process exits on this error, and exiting under them
                // aborts it.
                if let Some(tracer) = tracer
                    && let Err(close) = tracer.close().await
                {
                    tracing::warn!(error = %close, "closing the tracing layer after a failed start");
                }
                if let Err(close) = engine.close().await {
                    tracing::warn!(error = %close, "closing the engine after a failed start");
                }
                Err(err)
            }
        }
    }

    /// Registers, starts the tracing layer (into `tracer`, so that a failure after it can
    /// close it) and the scheduler, and resumes the unfinished runs, on the opened `engine`.
    /// Returns the scheduler, how many runs resumed, and where those left over begin.
    async fn start_on(self, engine: &Engine, dir: &std::path::Path, tracer: &mut Option<Arc<Tracer>>) -> Result<(Arc<Scheduler>, usize, Option<RunningCursor>)> {
        apply_schema(engine, system::SCHEMA).await?;
        for ddl in &self.schemas {
            apply_schema(engine, ddl).await?;
        }
        let homes = system::homes(engine);
        for function in system::functions(Arc::clone(&homes)) {
            engine.register(function)?;
        }
        for function in self.functions {
            check_user_name("function name", function.name())?;
            engine.register(function)?;
        }
        if self.options.tracing.enabled {
            *tracer = Some(start_tracer(engine, dir, &self.options).await?);
        }
        let scheduler = Arc::new(Scheduler::new(engine.clone(), self.options, homes));
        scheduler.load_definitions().await?;
        for spec in &self.workflows {
            scheduler.register_workflow_if_changed(spec).await?;
        }
        let (resumed, left_over) = scheduler.resume_all().await?;
        if resumed > 0 {
            tracing::info!(resumed, left_over = left_over.is_some(), "resumed the workflow runs that started and did not end");
        }
        Ok((scheduler, resumed, left_over))
    }
}

/// The consumer name of the tracing layer's hold on the log's trim point.
const TRACING_CONSUMER: &str = "tracing";

/// Starts the tracing layer over `<data>/traces` and holds the log's trim point at what it
/// still needs, from now on.
async fn start_tracer(engine: &Engine, dir: &std::path::Path, options: &ServerOptions) -> Result<Arc<Tracer>> {
    let source = engine.clone();
    let catalog: comb_tracing::CatalogSource = Arc::new(move || source.catalog());
    let tracer = Tracer::start(&dir.join("traces"), engine.log().clone(), catalog, options.tracing.clone()).await?;
    let mut checkpoints = tracer.checkpoints();
    engine.hold_trim(TRACING_CONSUMER, *checkpoints.borrow_and_update() + 1);
    let holder = engine.clone();
    tokio::spawn(async move {
        while checkpoints.changed().await.is_ok() {
            let needed = *checkpoints.borrow_and_update() + 1;
            holder.hold_trim(TRACING_CONSUMER, needed);
        }
    });
    Ok(Arc::new(tracer))
}

async fn apply_schema(engine: &Engine, ddl: &str) -> Result<()> {
    let catalog = engine.catalog();
    let next = catalog.apply(ddl).map_err(comb_backend::Error::Ddl)?;
    if next != *catalog {
        engine.execute_ddl(ddl).await?;
    }
    Ok(())
}

/// Applies a user's DDL, refusing any change to the system tables.
pub(crate) async fn execute_user_ddl(engine: &Engine, sql: &str) -> Result<u64> {
    let catalog = engine.catalog();
    let next = catalog.apply(sql).map_err(comb_backend::Error::Ddl)?;
    for table in system::TABLES {
        if catalog.table(table) != next.table(table) {
            return Err(Error::InvalidArgument { field: "sql", message: format!("table {table} belongs to the system and cannot be changed") });
        }
    }
    for table in next.tables() {
        if catalog.table(&table.name).is_none() {
            check_user_name("table name", &table.name).map_err(|_| Error::InvalidArgument {
                field: "sql",
                message: format!("table {}: names starting with {:?} are reserved for the system", table.name, system::PREFIX),
            })?;
        }
    }
    Ok(engine.execute_ddl(sql).await?)
}

/// A Comb server: the engine, the registry and the scheduler, ready to serve.
pub struct Server {
    scheduler: Arc<Scheduler>,
    resumed: usize,
    tracer: Option<Arc<Tracer>>,
    /// Checkpoints, resumptions, and the resumption of the runs left over at start; empty
    /// once closed.
    background: Vec<Background>,
    /// The HTTP/2 server every listen serves with (its TLS, if any, its windows); boxed, as
    /// it is a few hundred bytes.
    transport: Box<tonic::transport::Server>,
}

/// Work the server does on a task of its own, until stopped or done: every so often
/// (checkpoints, resumptions), or once (the runs left over at start).
struct Background {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Background {
    /// Runs `work` every `interval`, the first time one interval from now; stops when `work`
    /// answers `false` (the engine closed).
    fn every<F, Fut>(interval: Duration, mut work: F) -> Background
    where
        F: FnMut(watch::Receiver<bool>) -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send,
    {
        Background::once(move |mut stopped| async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stopped.changed() => return,
                    _ = tick.tick() => {}
                }
                // Not raced against the stop: the work under way finishes before the engine
                // closes (given the stop, to end a long pass sooner).
                if !work(stopped.clone()).await {
                    return;
                }
            }
        })
    }

    /// Runs `work` once, given the receiver that turns true when it must stop: it is to
    /// watch it wherever it waits, and to return soon after.
    fn once<F, Fut>(work: F) -> Background
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        Background { stop, task: tokio::spawn(work(stopped)) }
    }

    /// Stops it, after the work under way if there is some.
    async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Err(err) = (&mut self.task).await
            && err.is_panic()
        {
            tracing::error!(error = %err, "a background task of the server panicked");
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The server's periodic checkpoints: without them the log would keep every record it was
/// ever given.
fn checkpoints(engine: Engine, interval: Duration) -> Background {
    Background::every(interval, move |_| {
        let engine = engine.clone();
        async move {
            match engine.checkpoint().await {
                Ok(trim_point) => tracing::debug!(trim_point, "checkpoint: the log is trimmed below the trim point"),
                Err(comb_backend::Error::Closed) => return false,
                Err(err) => tracing::warn!(error = %err, "a checkpoint failed; the log keeps its records until the next one"),
            }
            true
        }
    })
}

/// The server's periodic resumption of stranded runs: started, not ended, and run by no
/// task here since a failure of the server stopped theirs.
fn resumptions(scheduler: Arc<Scheduler>, interval: Duration) -> Background {
    Background::every(interval, move |_| {
        let scheduler = Arc::clone(&scheduler);
        async move {
            match scheduler.resume_stranded().await {
                Ok(0) => {}
                Ok(resumed) => tracing::info!(resumed, "resumed workflow runs that no task ran"),
                Err(Error::Backend(comb_backend::Error::Closed)) => return false,
                Err(err) => tracing::warn!(error = %err, "resuming stranded workflow runs failed; the next pass tries again"),
            }
            true
        }
    })
}

/// The server's periodic expiry of the runs that ended more than `run-retention` ago.
fn expiries(scheduler: Arc<Scheduler>, interval: Duration) -> Background {
    Background::every(interval, move |stop| {
        let scheduler = Arc::clone(&scheduler);
        async move {
            // Its only error: the engine closed. Each pass reports itself.
            scheduler.expire_ended(&stop).await.is_ok()
        }
    })
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("engine", &self.scheduler.engine).finish_non_exhaustive()
    }
}

/// A server listening on a socket, until [`Listening::shutdown`] or the end of the process.
#[derive(Debug)]
pub struct Listening {
    local_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Listening {
    /// The address it listens on (with the port chosen, when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting requests and waits for the ones in progress.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.map_err(|err| Error::Internal(format!("the server task failed: {err}")))?.map_err(|err| Error::Internal(format!("the server failed: {err}")))
    }
}

impl Server {
    /// Starts building a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The backend.
    pub fn engine(&self) -> &Engine {
        &self.scheduler.engine
    }

    /// The expiry of ended runs (`run-retention`): how many passes and runs so far, and up
    /// to when every run is forgotten; it changes after each pass.
    pub fn expiry_progress(&self) -> watch::Receiver<ExpiryProgress> {
        self.scheduler.expiry_progress()
    }

    /// The tracing layer, unless tracing is off.
    pub fn tracer(&self) -> Option<&Tracer> {
        self.tracer.as_deref()
    }

    /// How many runs this server resumed when it started, before serving (at most
    /// `workflows-in-flight-max`; the runs left over resume later).
    pub fn resumed(&self) -> usize {
        self.resumed
    }

    /// Listens on `addr` and serves the API on a task of its own.
    pub async fn listen(&self, addr: SocketAddr) -> Result<Listening> {
        let options = &self.scheduler.options;
        if !addr.ip().is_loopback() && options.token.is_none() && !options.insecure_no_token {
            return Err(Error::InvalidArgument {
                field: "token",
                message: format!("listening on {addr}, beyond loopback, needs a bearer token: give --token (or COMB_TOKEN), or --insecure-no-token to let anyone who reaches it in"),
            });
        }
        if !addr.ip().is_loopback() && !self.tls() {
            tracing::warn!(%addr, "listening beyond loopback without TLS: requests, their answers and the token cross the network in the clear (give tls-cert and tls-key)");
        }
        let listener = TcpListener::bind(addr).await.map_err(|err| Error::InvalidArgument { field: "addr", message: format!("cannot listen on {addr}: {err}") })?;
        let local_addr = listener.local_addr().map_err(|err| Error::Internal(err.to_string()))?;
        // Told when shutting down begins: open InvokeStreams take no more calls and end once
        // their calls have, so that the graceful shutdown does not wait on idle streams.
        let (closing, closing_seen) = tokio::sync::watch::channel(false);
        let service = CombServer::new(Service { scheduler: Arc::clone(&self.scheduler), tracer: self.tracer.clone(), closing: closing_seen })
            .max_decoding_message_size(options.request_bytes_max)
            .max_encoding_message_size(options.request_bytes_max.max(options.engine.json_bytes_max * 2).max(TRACE_ANSWER_BYTES_MAX + (1 << 20)));
        let auth = Auth { token: options.token.clone().map(|t| format!("Bearer {t}")) };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // Nagle's algorithm off on every accepted connection: an answer written in two pieces
        // would otherwise wait for the client's delayed ACK (40 ms). The builder's
        // `tcp_nodelay` does not reach connections of a listener of our own.
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let task = tokio::spawn(
            (*self.transport)
                .clone()
                .add_service(InterceptedService::new(service, auth))
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stopped.await;
                    closing.send_replace(true);
                }),
        );
        Ok(Listening { local_addr, stop: Some(stop), task })
    }

    /// Whether the server speaks TLS (`tls-cert` and `tls-key` given): its clients reach
    /// it by `https://`.
    pub fn tls(&self) -> bool {
        // Both or neither, and read when the server was built.
        self.scheduler.options.tls_cert.is_some()
    }

    /// Serves on `addr` until the process receives Ctrl-C or SIGTERM, then closes.
    pub async fn serve(self, addr: SocketAddr) -> Result<()> {
        let (server, listening) = self.listen_or_close(addr).await?;
        server.serve_until_signal(listening).await
    }

    /// [`Server::listen`] for a server that has nothing else to do: if it cannot listen, it
    /// closes before it returns why, so that the process can exit on the error (exiting with
    /// the engine's threads still running aborts it).
    pub async fn listen_or_close(self, addr: SocketAddr) -> Result<(Server, Listening)> {
        match self.listen(addr).await {
            Ok(listening) => Ok((self, listening)),
            Err(err) => {
                if let Err(close) = self.close().await {
                    tracing::warn!(error = %close, "closing the server after it could not listen");
                }
                Err(err)
            }
        }
    }

    /// Goes on serving what [`Server::listen`] started until the process receives Ctrl-C
    /// or SIGTERM, then stops listening and closes.
    pub async fn serve_until_signal(self, listening: Listening) -> Result<()> {
        tracing::info!(addr = %listening.local_addr(), "serving");
        shutdown_signal().await;
        // Closed even if the listener ended on an error: its error is the one returned.
        let stopped = listening.shutdown().await;
        let closed = self.close().await;
        stopped.and(closed)
    }

    /// Closes the tracing layer (after a last flush) and the engine: commits in flight
    /// finish, runs in progress resume at the next start.
    pub async fn close(mut self) -> Result<()> {
        for task in std::mem::take(&mut self.background) {
            task.stop().await;
        }
        let traced = match &self.tracer {
            Some(tracer) => tracer.close().await,
            None => Ok(()),
        };
        self.scheduler.engine.close().await?;
        Ok(traced?)
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}

/// Checks the bearer token of every request, when the server has one.
#[derive(Clone)]
struct Auth {
    /// `Bearer <token>`.
    token: Option<String>,
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.token else {
            return Ok(request);
        };
        match request.metadata().get("authorization").map(|v| v.to_str()) {
            None => Err(Status::unauthenticated("this server requires a bearer token: send `authorization: Bearer <token>` (comb --token)")),
            Some(Ok(given)) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => Ok(request),
            Some(_) => Err(Status::unauthenticated("the bearer token is wrong")),
        }
    }
}

/// Compares in constant time for a given length, so timing tells nothing of the token's bytes.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(subtle::ConstantTimeEq::ct_eq(a, b))
}

/// Longest a connection's TLS handshake may take: a peer that connects and stalls is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP/2 server a listen serves with: its flow-control windows, and its TLS from the
/// options' certificate and key, read and parsed when the server is built, before its data
/// directory is opened, so that a wrong file stops it at once.
async fn transport(options: &ServerOptions) -> Result<Box<tonic::transport::Server>> {
    let transport = tonic::transport::Server::builder().initial_stream_window_size(STREAM_WINDOW_BYTES).initial_connection_window_size(CONNECTION_WINDOW_BYTES);
    let (Some(cert), Some(key)) = (&options.tls_cert, &options.tls_key) else {
        return Ok(Box::new(transport));
    };
    let identity = Identity::from_pem(read_tls_file("tls-cert", cert).await?, read_tls_file("tls-key", key).await?);
    let config = ServerTlsConfig::new().identity(identity).timeout(TLS_HANDSHAKE_TIMEOUT);
    transport.tls_config(config).map(Box::new).map_err(|err| Error::InvalidArgument {
        field: "tls-cert",
        // tonic's transport error says little but through its sources.
        message: format!(
            "{} and {} are not a PEM certificate and its private key: {}",
            cert.display(),
            key.display(),
            std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source()).map(ToString::to_string).collect::<Vec<_>>().join(": ")
        ),
    })
}

/// A file of the server's TLS identity: option `field`'s.
async fn read_tls_file(field: &'static str, path: &std::path::Path) -> Result<Vec<u8>> {
    tokio::fs::read(path).await.map_err(|err| Error::InvalidArgument { field, message: format!("cannot read {}: {err}", path.display()) })
}
