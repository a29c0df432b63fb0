//! InvokeStream: many invocations multiplexed on one HTTP/2 stream.
//!
//! A unary Invoke pays for a new HTTP/2 stream each time: headers encoded and decoded both
//! ways, the request routed through the service's layers, a task spawned for it, trailers
//! for its status. On an InvokeStream a call is a few bytes of a DATA frame: the client
//! sends the calls that are waiting as one message, and the server answers the calls that
//! have ended as one message.
//!
//! ```text
//!  InvokeCalls ──> take calls while fewer than STREAM_CALLS_IN_FLIGHT_MAX run
//!                    │  each call: the same `invoke` as the unary RPC
//!                    ▼
//!                  running (polled by this stream's own task, no task per call)
//!                    │  the ended calls, up to STREAM_BATCH_BYTES_MAX of results
//!                    ▼
//!                  InvokeResults ──> the client, which answers each caller by tag
//! ```
//!
//! A call's error is its own result; the stream ends when the client has closed its side
//! (or the server begins to shut down) and every call taken has been answered, or at once
//! with the status of a malformed message (or one of more than `STREAM_BATCH_CALLS_MAX`
//! calls). At most `STREAM_CALLS_IN_FLIGHT_MAX` calls run; the calls of the message that
//! reached the bound wait to start, and no more are read until they have (HTTP/2 flow
//! control then holds the client). A client that stops reading holds the stream back: no more
//! of its calls are read or started, and the results of those running wait to be sent (a
//! call already in an executor's queue still runs). A client that resets the stream, or
//! goes away, drops its calls with it. A call with a time-out is stopped when it passes.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use comb_client::{STREAM_BATCH_BYTES_MAX, STREAM_BATCH_CALLS_MAX};
use comb_client::proto::{self, invoke_result::Outcome};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use prost::Message;
use tokio::sync::watch;
use tonic::{Status, Streaming};

use crate::error::Error;
use crate::options::STREAM_CALLS_IN_FLIGHT_MAX;
use crate::scheduler::Scheduler;
use crate::service::invoke;

/// The answer side of one InvokeStream; its calls run as it is polled.
pub(crate) struct InvokeStream {
    scheduler: Arc<Scheduler>,
    /// The client's side; `None` once it closed (or failed).
    calls: Option<Streaming<proto::InvokeCalls>>,
    /// Calls read but not started: the stream is at its bound. No more are read until
    /// they have all started, so they are at most one message's.
    taken: VecDeque<proto::InvokeCall>,
    running: FuturesUnordered<BoxFuture<'static, proto::InvokeResult>>,
    /// Ready when the server begins to shut down: the stream then takes no more calls.
    closing: Option<BoxFuture<'static, ()>>,
}

impl InvokeStream {
    pub(crate) fn new(scheduler: Arc<Scheduler>, calls: Streaming<proto::InvokeCalls>, mut closing: watch::Receiver<bool>) -> InvokeStream {
        let closing = Box::pin(async move {
            // An error: the server is gone, which is closing too.
            let _ = closing.wait_for(|closing| *closing).await;
        });
        InvokeStream { scheduler, calls: Some(calls), taken: VecDeque::new(), running: FuturesUnordered::new(), closing: Some(closing) }
    }

    fn start(&self, call: proto::InvokeCall) -> BoxFuture<'static, proto::InvokeResult> {
        let scheduler = Arc::clone(&self.scheduler);
        Box::pin(async move {
            let answer = match call.request {
                // The caller's time-out ends the call here too, as a unary call's would.
                Some(request) if call.timeout_ms > 0 => {
                    let timeout = Duration::from_millis(call.timeout_ms);
                    tokio::time::timeout(timeout, invoke(&scheduler, request)).await.unwrap_or(Err(Error::CallTimedOut { timeout }))
                }
                Some(request) => invoke(&scheduler, request).await,
                None => Err(Error::InvalidArgument { field: "request", message: format!("call {} of the stream has no request", call.tag) }),
            };
            let outcome = match answer {
                Ok(response) => Outcome::Response(response),
                Err(err) => {
                    let status = Status::from(err);
                    Outcome::Status(proto::CallStatus { code: status.code() as i32, message: status.message().to_owned() })
                }
            };
            proto::InvokeResult { tag: call.tag, outcome: Some(outcome) }
        })
    }
}

impl Stream for InvokeStream {
    type Item = Result<proto::InvokeResults, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(closing) = this.closing.as_mut()
            && closing.as_mut().poll(cx).is_ready()
        {
            this.closing = None;
            this.calls = None;
        }
        loop {
            while this.running.len() < STREAM_CALLS_IN_FLIGHT_MAX
                && let Some(call) = this.taken.pop_front()
            {
                let future = this.start(call);
                this.running.push(future);
            }
            if !this.taken.is_empty() {
                // At the bound: the client's next messages wait, held by flow control.
                break;
            }
            let Some(calls) = this.calls.as_mut() else { break };
            match calls.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(message))) if message.calls.len() > STREAM_BATCH_CALLS_MAX => {
                    this.calls = None;
                    return Poll::Ready(Some(Err(Status::invalid_argument(format!(
                        "a message of InvokeStream holds {} calls; at most {STREAM_BATCH_CALLS_MAX}",
                        message.calls.len()
                    )))));
                }
                Poll::Ready(Some(Ok(message))) => this.taken.extend(message.calls),
                Poll::Ready(Some(Err(status))) => {
                    // A message that does not decode (or is over the size bound): the calls
                    // in flight are dropped with the stream, as a unary call's would be.
                    this.calls = None;
                    return Poll::Ready(Some(Err(status)));
                }
                Poll::Ready(None) => this.calls = None,
                Poll::Pending => break,
            }
        }
        let mut results = Vec::new();
        let mut bytes = 0;
        while bytes < STREAM_BATCH_BYTES_MAX {
            match this.running.poll_next_unpin(cx) {
                Poll::Ready(Some(result)) => {
                    bytes += result.encoded_len();
                    results.push(result);
                }
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        if !results.is_empty() {
            return Poll::Ready(Some(Ok(proto::InvokeResults { results })));
        }
        if this.calls.is_none() && this.taken.is_empty() && this.running.is_empty() {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}
