//! Comb's backend: a partitioned relational store on RocksDB where application functions
//! run as ACID transactions, each committed as one record of the shared log.
//!
//! ```text
//!  Engine::invoke(function, input, id?, record?)
//!     │ partition = FNV-1a(key encoding of input[partition_by]) mod N    (no key: coordinator)
//!     ▼
//!  partition executor thread (one per partition; serial; no locks)
//!     a. record? and a recorded output exists for (workflow, step) -> return it, run nothing
//!     b. body(&mut Txn, input): statements by name over write set ▸ overlay ▸ RocksDB
//!     c. writes? commit record {writes with before/after images, output, invocation}
//!        -> log.append_batch_then_wake(tags = [partition + 1])  (enqueued now)
//!     d. stage the writes in the overlay; run the next transaction at once (pipelining)
//!     e. durable (in order): the log answers the caller, and reports it to the executor,
//!        which applies it -> one RocksDB batch (WAL off) with the applied LSN
//! ```
//!
//! # Invariants
//!
//! - **Atomicity.** A transaction's effects reach the log as one record or not at all: an
//!   error or a panic in the body discards its write set before anything is appended. A
//!   multi-partition transaction is one record carrying every written partition's tag.
//! - **Durability before release.** A result is released only once its record, and so every
//!   record before it, is durable. A read-only transaction appends nothing and is released
//!   once every commit whose staged writes it read is durable. The one exception is asked for:
//!   [`Answer::Logged`] answers once the record is queued in the log, for a caller (a
//!   workflow's step) that tells no one before a later record of its own is durable.
//! - **Serializability.** Each partition runs one transaction at a time; a multi-partition
//!   transaction runs while every executor waits at a barrier.
//! - **The log is the write-ahead log.** RocksDB's own WAL is off. Each partition's data and
//!   its applied LSN are written in one batch to one column family, so what survives a crash
//!   is a consistent prefix; recovery replays the log after it. Replay writes after-images,
//!   so it is idempotent.
//! - **Order-preserving keys.** Key bytes order as `Value::sort_cmp` orders values, so range
//!   scans and key order are SQL's (see [`keycodec`]).
//! - **Fail-stop.** A failed append stops its partition: its overlay may hold writes that
//!   never became durable. Reopening the engine recovers exactly the durable commits.
//! - **Bounds.** Queue length per partition, rows scanned and returned per statement, keys
//!   written per transaction and JSON size are bounded by [`EngineOptions`]; exceeding one is
//!   a specific error.
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> comb_backend::Result<()> {
//! use comb_backend::{Engine, EngineOptions, Function, Invocation};
//!
//! let engine = Engine::open("data", EngineOptions::default()).await?;
//! engine.execute_ddl("CREATE TABLE counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)").await?;
//! engine.register(
//!     Function::new("bump")
//!         .statement("add", "UPDATE counters SET n = n + 1 WHERE id = $1 RETURNING n")
//!         .partition_by("id")
//!         .run(|tx, input| {
//!             let n: Option<i64> = tx.query_opt("add", (input["id"].as_i64().unwrap_or(0),))?;
//!             Ok(serde_json::json!({ "n": n }))
//!         }),
//! )?;
//! let out = engine.invoke(Invocation::new("bump", serde_json::json!({ "id": 7 }))).await?;
//! println!("{} at LSN {:?}", out.value, out.lsn);
//! engine.close().await?;
//! # Ok(())
//! # }
//! ```

mod commit;
mod coordinator;
mod engine;
mod error;
mod executor;
mod function;
pub mod keycodec;
mod keys;
mod partition;
mod record_view;
mod recovery;
mod row;
mod rowcache;
mod store;
mod trace;
#[cfg(feature = "test-util")]
pub mod testkit;
mod txn;

pub use commit::{CATALOG_TAG, COMMIT_VERSION, CatalogRecord, CommitRecord, InvocationRecord, LogRecord, RunRecord, TRACE_TAG, TraceRecord, WriteRecord, decode_payload, encode_catalog, encode_commit, encode_trace, partition_tag};
pub use record_view::{CommitView, InvocationView, RecordView, RunView, TraceView, WriteView, view_payload};
pub use engine::{Answer, Engine, EngineOptions, Invocation, Transaction, TransactionStep, TRANSACTION_TIME_MS_MAX, WRITEBACK_BYTES_MAX, WRITEBACK_INTERVAL_MS_MAX};
pub use executor::TRACED_READS_MAX;
pub use error::{Error, Result};
pub use function::{Body, BoxError, Function, RunEndBody, SqlFunction, SqlStatement, value_to_json};
pub use keys::PARTITIONS_MAX;
pub use partition::{EndFn, InvocationId, NextInput, NextInputFn, Output, RunEnd, SlowSteps, StepInProgress, check_json_bytes};
pub use row::{ValueRef, decode_row, decode_row_ref, encode_row};
pub use rowcache::ROW_CACHE_BYTES_MAX;
pub use txn::{FromRow, FromValue, Params, Rows, ToValue, Txn};

pub use comb_planner::Value;
