//! Comb's server: the gRPC API, the registry of functions and workflows, and the workflow
//! scheduler that runs each workflow exactly once per workflow id, also across crashes.
//!
//! ```text
//!  client ──gRPC──> service (auth, bounds, errors to codes in one place)
//!                     │
//!                     ▼
//!                  scheduler ── claims ids in memory (a duplicate waits for the first run)
//!                     │         start/end rows in system tables (comb_workflows,
//!                     │         comb_running), units as their inputs are ready
//!                     ▼
//!                  comb-backend: each unit one transaction on its partition, recorded
//!                  outputs where the planner chose (selective function recording)
//!
//!  comb-tracing: tails the log into trace tables; QueryTraces runs SQL over them
//! ```
//!
//! # Guarantees
//!
//! - **Exactly once per workflow id.** A run's effects commit at most once per step: a
//!   recorded step's output is written in the transaction of its effects, and a second
//!   execution returns it without running. Invoking with an id that ended returns its
//!   recorded outcome; with an id still running, waits for that run.
//! - **Recovery without clients.** On start the server resumes every run whose start is
//!   durable and whose end is not.
//! - **One commit for a one-transaction workflow.** Its row is written in its own
//!   transaction, on its partition; there is no separate start record. A longer run invoked
//!   synchronously without an id writes its start with its first unit when every other
//!   unit waits on that one; a longer run ends in its last unit's commit when that unit
//!   runs where the run's row is, or has no partition key.
//! - **Bounds.** Request size, runs in flight, waits and retries are bounded by
//!   [`ServerOptions`].

mod error;
mod options;
mod scheduler;
mod server;
mod service;
mod stream;
mod system;

pub use error::{Error, Result};
pub use options::{CHECKPOINT_INTERVAL_MAX, EXPIRY_INTERVAL_MAX, EXPIRY_INTERVAL_MIN, LIST_PAGE_MAX, RUN_RETENTION_MAX, STREAM_CALLS_IN_FLIGHT_MAX, ServerOptions, TRACE_ANSWER_BYTES_MAX};
pub use comb_tracing::{QueryResult, TracingOptions};
pub use scheduler::ExpiryProgress;
pub use server::{Listening, Server, ServerBuilder, TLS_HANDSHAKE_TIMEOUT};
