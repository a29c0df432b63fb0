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
//! with the status of a malformed message.
//! A client that stops reading stops the stream's calls too (HTTP/2 flow control stops
//! polling the stream), and at most `STREAM_CALLS_IN_FLIGHT_MAX` calls (plus one message's)
//! wait for it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use comb_client::STREAM_BATCH_BYTES_MAX;
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
        InvokeStream { scheduler, calls: Some(calls), running: FuturesUnordered::new(), closing: Some(closing) }
    }

    fn start(&self, call: proto::InvokeCall) -> BoxFuture<'static, proto::InvokeResult> {
        let scheduler = Arc::clone(&self.scheduler);
        Box::pin(async move {
            let answer = match call.request {
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
        while this.running.len() < STREAM_CALLS_IN_FLIGHT_MAX {
            let Some(calls) = this.calls.as_mut() else { break };
            match calls.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(message))) => {
                    for call in message.calls {
                        let future = this.start(call);
                        this.running.push(future);
                    }
                }
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
        if this.calls.is_none() && this.running.is_empty() {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}
