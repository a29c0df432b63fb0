//! Invocations multiplexed on one InvokeStream per connection.
//!
//! ```text
//!  callers ──> queue (tag -> reply kept in `waiting`) ──> the request stream, polled by the
//!              HTTP/2 connection: every queued call in one message (up to
//!              STREAM_BATCH_BYTES_MAX)
//!  the reader task <── the server's results, each sent to its caller by tag
//! ```
//!
//! The first call opens the stream; a stream that fails answers every call waiting on it
//! with the failure, and the next call opens a new one. A call waits at most the client's
//! time-out; at most `STREAM_CALLS_MAX` calls are queued or in flight per client, one more
//! is refused at once (`RESOURCE_EXHAUSTED`, retryable).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use prost::Message;
use tokio::sync::{Semaphore, oneshot};
use tonic::codegen::tokio_stream::Stream;
use tonic::transport::Channel;

use crate::proto::{self, comb_client::CombClient, invoke_result::Outcome};
use crate::{Client, Code, Error, Result};

/// Largest message of streamed invocations (a client's calls, a server's results), in
/// encoded bytes. A server's `request-bytes-max` is at least this.
pub const STREAM_BATCH_BYTES_MAX: usize = 64 << 10;

/// Most calls in one message of streamed invocations; a server ends a stream that sends
/// more.
pub const STREAM_BATCH_CALLS_MAX: usize = 1024;

/// Largest invocation sent on the stream, in encoded bytes; a larger one is sent as a
/// unary Invoke of its own.
pub const STREAM_CALL_BYTES_MAX: usize = 16 << 10;

/// Most invocations of one client (all its clones) queued or in flight on its stream; one
/// more is refused (`RESOURCE_EXHAUSTED`, retryable).
pub const STREAM_CALLS_MAX: usize = 4096;

/// Bytes a call adds to a message beyond its own: its field's key and length.
const CALL_FRAMING_BYTES: usize = 4;

type Reply = oneshot::Sender<Result<proto::InvokeResponse>>;

/// The invocation stream of one connection; the client it belongs to opens it.
pub(crate) struct Mux {
    slots: Semaphore,
    next_tag: AtomicU64,
    /// The stream calls go to; replaced when it has failed.
    current: Mutex<Option<Arc<Shared>>>,
}

impl std::fmt::Debug for Mux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mux").field("calls", &(STREAM_CALLS_MAX - self.slots.available_permits())).finish_non_exhaustive()
    }
}

/// What the callers, the request stream and the reader of one stream share.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Calls not yet sent, in order.
    queue: Vec<proto::InvokeCall>,
    /// Every call queued or sent whose answer has not come, by tag.
    waiting: HashMap<u64, Reply>,
    /// The request stream's task, waiting for a call.
    waker: Option<Waker>,
    /// Why the stream ended; once set, nothing more is queued on it.
    failed: Option<Error>,
    /// The client is gone: the request side ends once its queue is sent.
    finishing: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers the calls of a message of results.
    fn answer(&self, message: proto::InvokeResults) {
        let mut answers = Vec::with_capacity(message.results.len());
        {
            let mut state = self.lock();
            for result in message.results {
                if let Some(reply) = state.waiting.remove(&result.tag) {
                    answers.push((reply, result.outcome));
                }
            }
        }
        for (reply, outcome) in answers {
            let answer = match outcome {
                Some(Outcome::Response(response)) => Ok(response),
                Some(Outcome::Status(status)) => Err(Error::Status { code: Code::from_i32(status.code), message: status.message }),
                None => Err(Error::Status { code: Code::Internal, message: "the server answered a call with no outcome: a bug of the server".to_owned() }),
            };
            let _ = reply.send(answer);
        }
    }

    /// Ends the stream: every call waiting on it hears why.
    fn fail(&self, error: &Error) {
        let (waiting, waker) = {
            let mut state = self.lock();
            state.failed.get_or_insert(error.clone());
            state.queue.clear();
            (std::mem::take(&mut state.waiting), state.waker.take())
        };
        for reply in waiting.into_values() {
            let _ = reply.send(Err(error.clone()));
        }
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Mux {
    pub(crate) fn new() -> Mux {
        Mux { slots: Semaphore::new(STREAM_CALLS_MAX), next_tag: AtomicU64::new(1), current: Mutex::new(None) }
    }

    /// The stream to queue on: the current one, or a new one `client` opens if it failed (or
    /// there is none).
    fn stream(&self, client: &Client) -> Arc<Shared> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(shared) = current.as_ref().filter(|shared| shared.lock().failed.is_none()) {
            return Arc::clone(shared);
        }
        let shared = Arc::new(Shared::default());
        *current = Some(Arc::clone(&shared));
        let request = client.request(Calls { shared: Arc::clone(&shared) });
        tokio::spawn(run(client.inner.clone(), request, Arc::clone(&shared)));
        shared
    }

    /// Sends one Invoke of `client` on the stream and waits for its answer, at most the
    /// client's time-out.
    pub(crate) async fn call(&self, client: &Client, request: proto::InvokeRequest) -> Result<proto::InvokeResponse> {
        let timeout = client.timeout;
        let _slot = self.slots.try_acquire().map_err(|_| Error::Status {
            code: Code::ResourceExhausted,
            message: format!("this client has {STREAM_CALLS_MAX} invocations in flight, its bound: retry once some have ended"),
        })?;
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
        // The server stops the call when its caller stops waiting.
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(1);
        let (reply, answer) = oneshot::channel();
        let shared = self.stream(client);
        let waker = {
            let mut state = shared.lock();
            if let Some(error) = &state.failed {
                return Err(error.clone());
            }
            state.waiting.insert(tag, reply);
            state.queue.push(proto::InvokeCall { tag, request: Some(request), timeout_ms });
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        let mut outstanding = Outstanding { shared, tag, answered: false };
        let answer = tokio::time::timeout(timeout, answer).await;
        // Answered, or its reply dropped by a failing stream: nothing is left of it.
        outstanding.answered = answer.is_ok();
        match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(Error::Status { code: Code::Unavailable, message: "the invocation stream ended before the call was answered".to_owned() }),
            Err(_) => Err(Error::Status { code: Code::DeadlineExceeded, message: format!("the server did not answer within {timeout:?}") }),
        }
    }
}

/// A call queued or sent on a stream. Dropped before its answer came (its time-out, or a
/// caller that stopped waiting), it takes itself off the stream: nothing is kept for it.
struct Outstanding {
    shared: Arc<Shared>,
    tag: u64,
    answered: bool,
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let mut state = self.shared.lock();
        if state.waiting.remove(&self.tag).is_some() {
            state.queue.retain(|call| call.tag != self.tag);
        }
    }
}

impl Drop for Mux {
    fn drop(&mut self) {
        let current = self.current.get_mut().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(shared) = current {
            let waker = {
                let mut state = shared.lock();
                state.finishing = true;
                state.waker.take()
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// Opens one stream with `request` (its calls) and reads its results until it ends.
async fn run(mut client: CombClient<Channel>, request: tonic::Request<Calls>, shared: Arc<Shared>) {
    // If this task ends any other way (a panic, its runtime shutting down), the calls on the
    // stream still hear of it, and the next call opens another.
    struct FailOnDrop(Arc<Shared>);
    impl Drop for FailOnDrop {
        fn drop(&mut self) {
            self.0.fail(&Error::Status { code: Code::Unavailable, message: "the client's invocation stream stopped".to_owned() });
        }
    }
    let _guard = FailOnDrop(Arc::clone(&shared));
    let error = match client.invoke_stream(request).await {
        Err(status) => Error::from(status),
        Ok(response) => {
            let mut results = response.into_inner();
            loop {
                match results.message().await {
                    Ok(Some(message)) => shared.answer(message),
                    Ok(None) => break Error::Status { code: Code::Unavailable, message: "the server ended the invocation stream".to_owned() },
                    Err(status) => break Error::from(status),
                }
            }
        }
    };
    shared.fail(&error);
}

/// The request side of a stream: the queued calls, as messages.
struct Calls {
    shared: Arc<Shared>,
}

impl Stream for Calls {
    type Item = proto::InvokeCalls;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<proto::InvokeCalls>> {
        let mut state = self.shared.lock();
        if state.failed.is_some() {
            return Poll::Ready(None);
        }
        if state.queue.is_empty() {
            if state.finishing {
                return Poll::Ready(None);
            }
            match &mut state.waker {
                Some(waker) => waker.clone_from(cx.waker()),
                None => state.waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        let mut bytes = 0;
        let mut count = 0;
        for call in state.queue.iter().take(STREAM_BATCH_CALLS_MAX) {
            let len = call.encoded_len() + CALL_FRAMING_BYTES;
            if count > 0 && bytes + len > STREAM_BATCH_BYTES_MAX {
                break;
            }
            bytes += len;
            count += 1;
        }
        let calls = state.queue.drain(..count).collect();
        Poll::Ready(Some(proto::InvokeCalls { calls }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic::transport::Endpoint;

    use super::*;

    fn call(tag: u64, input_bytes: usize) -> proto::InvokeCall {
        let request = proto::InvokeRequest { workflow: "w".to_owned(), input_json: "x".repeat(input_bytes), workflow_id: String::new(), r#async: false };
        proto::InvokeCall { tag, request: Some(request), timeout_ms: 1_000 }
    }

    fn poll(calls: &mut Calls) -> Poll<Option<proto::InvokeCalls>> {
        Pin::new(calls).poll_next(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn queued_calls_leave_in_order_in_messages_within_the_bound() {
        let shared = Arc::new(Shared::default());
        let mut calls = Calls { shared: Arc::clone(&shared) };
        assert!(poll(&mut calls).is_pending(), "nothing queued");
        assert!(shared.lock().waker.is_some(), "the stream waits to be woken");
        // Calls of every size up to the largest the stream takes: 200 of them, about 1.6 MiB.
        let sizes: Vec<usize> = (0..200).map(|i| (i * 7919) % (STREAM_CALL_BYTES_MAX - 64)).collect();
        shared.lock().queue.extend(sizes.iter().enumerate().map(|(tag, size)| call(tag as u64, *size)));
        let mut sent = Vec::new();
        while let Poll::Ready(Some(message)) = poll(&mut calls) {
            assert!(!message.calls.is_empty());
            assert!(message.encoded_len() <= STREAM_BATCH_BYTES_MAX, "a message of {} bytes", message.encoded_len());
            sent.extend(message.calls.iter().map(|c| c.tag));
        }
        assert_eq!(sent, (0..200).collect::<Vec<u64>>(), "every call once, in order");
        // Many small calls: messages are cut by their count too.
        shared.lock().queue.extend((0..3000).map(|tag| call(tag, 0)));
        let mut counts = Vec::new();
        while let Poll::Ready(Some(message)) = poll(&mut calls) {
            counts.push(message.calls.len());
        }
        assert_eq!(counts, [STREAM_BATCH_CALLS_MAX, STREAM_BATCH_CALLS_MAX, 3000 - 2 * STREAM_BATCH_CALLS_MAX]);
        assert!(poll(&mut calls).is_pending(), "the queue is empty again");
        shared.lock().finishing = true;
        assert!(matches!(poll(&mut calls), Poll::Ready(None)), "a finished client ends the request side");
    }

    #[tokio::test]
    async fn a_queued_call_wakes_the_request_stream() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let channel = Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        let client = Client { inner: CombClient::new(channel), token: None, timeout: Duration::from_millis(50), stream: Arc::new(Mux::new()) };
        let shared = Arc::new(Shared::default());
        *client.stream.current.lock().unwrap() = Some(Arc::clone(&shared));
        let mut calls = Calls { shared: Arc::clone(&shared) };
        let woken = Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&woken));
        assert!(Pin::new(&mut calls).poll_next(&mut Context::from_waker(&waker)).is_pending());
        let request = proto::InvokeRequest { workflow: "w".to_owned(), ..Default::default() };
        // The call waits for an answer that never comes: it times out, and is gone.
        let answer = client.stream.call(&client, request).await;
        assert!(matches!(answer, Err(Error::Status { code: Code::DeadlineExceeded, .. })), "{answer:?}");
        assert_eq!(woken.0.load(Ordering::SeqCst), 1, "queuing the call woke the request stream once");
        let state = shared.lock();
        assert!(state.queue.is_empty() && state.waiting.is_empty(), "the call timed out before it was sent: it never will be");
    }

    #[test]
    fn a_call_given_up_leaves_nothing_on_its_stream() {
        let shared = Arc::new(Shared::default());
        for (tag, sent) in [(1, false), (2, true)] {
            let (reply, _answer) = oneshot::channel();
            let mut state = shared.lock();
            state.waiting.insert(tag, reply);
            if !sent {
                state.queue.push(call(tag, 10));
            }
        }
        shared.lock().queue.push(call(3, 10));
        // Call 1 is still queued, call 2 was sent: both are given up.
        drop(Outstanding { shared: Arc::clone(&shared), tag: 1, answered: false });
        drop(Outstanding { shared: Arc::clone(&shared), tag: 2, answered: false });
        let state = shared.lock();
        assert!(state.waiting.is_empty(), "no reply is kept for a call given up");
        assert_eq!(state.queue.iter().map(|c| c.tag).collect::<Vec<_>>(), [3], "a queued call given up is not sent; the others are");
    }

    #[test]
    fn a_failed_stream_answers_every_waiting_call_and_takes_no_more() {
        let shared = Arc::new(Shared::default());
        let mut calls = Calls { shared: Arc::clone(&shared) };
        let (sent, mut sent_answer) = oneshot::channel();
        let (queued, mut queued_answer) = oneshot::channel();
        {
            let mut state = shared.lock();
            state.waiting.insert(1, sent);
            state.waiting.insert(2, queued);
            state.queue.push(call(2, 10));
        }
        // One answered by the server, then the stream fails with the other still waiting.
        shared.answer(proto::InvokeResults { results: vec![proto::InvokeResult { tag: 1, outcome: Some(Outcome::Status(proto::CallStatus { code: Code::NotFound as i32, message: "no such workflow".to_owned() })) }] });
        assert!(matches!(sent_answer.try_recv(), Ok(Err(Error::Status { code: Code::NotFound, .. }))));
        shared.fail(&Error::Status { code: Code::Unavailable, message: "connection reset".to_owned() });
        assert!(matches!(queued_answer.try_recv(), Ok(Err(Error::Status { code: Code::Unavailable, .. }))));
        assert!(shared.lock().queue.is_empty() && shared.lock().waiting.is_empty());
        assert!(matches!(poll(&mut calls), Poll::Ready(None)), "the request side ends");
    }
}
