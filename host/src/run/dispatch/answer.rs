//! Answering: the race between the guest's response head and its end, and
//! the response the client gets from whichever came first.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use futures_util::FutureExt as _;
use http::{Response, StatusCode};
use tokio::sync::oneshot;

use crate::base::refusals::Refusals;
use crate::base::responses::{Body, error_response};
use crate::logs::entry::Outcome;
use crate::run::body::BodyFaults;
use crate::run::limits::RequestMeter;
use crate::run::report::outcome_response;

/// The guest's response head, as its callback hands it over: the response,
/// or the guest's error code as text.
pub(super) type Head = Result<Response<Body>, String>;

/// What turns the race's result into the client's response.
pub(super) struct Answer {
    pub(super) meter: Arc<RequestMeter>,
    /// Faults seen while the guest read the body (413, 408).
    pub(super) faults: Arc<BodyFaults>,
    pub(super) refusals: Arc<Refusals>,
    pub(super) body_limit: u64,
    /// Set when the client stops reading the response body.
    pub(super) disconnected: Arc<AtomicBool>,
}

/// A callback for the guest's response head that keeps its status in
/// `status` (for the request event, published when the guest finishes,
/// maybe long after, if it streams its body), and where the head arrives.
pub(super) fn head_channel(
    status: Arc<std::sync::atomic::AtomicU16>,
) -> (
    impl FnOnce(Head) + Send + Sync + 'static,
    oneshot::Receiver<Head>,
) {
    let (tx, rx) = oneshot::channel();
    let on_response = move |response: Head| {
        let code = response.as_ref().map_or(500, |r| r.status().as_u16());
        status.store(code, std::sync::atomic::Ordering::Relaxed);
        let _ = tx.send(response);
    };
    (on_response, rx)
}

impl Answer {
    /// Runs the guest in this task until it sends its response head: no
    /// task to spawn and no other thread to wake for most requests, whose
    /// guests are done by then. A guest still running after its head
    /// (streaming a body) is handed to a task of its own. If the client
    /// goes away before the head, this future is dropped, and the guest
    /// with it: stopped, reported `canceled`.
    pub(super) async fn race(
        self,
        mut guest: Pin<Box<impl Future<Output = Outcome> + Send + 'static>>,
        mut head: oneshot::Receiver<Head>,
    ) -> Response<Body> {
        let first = tokio::select! {
            biased;
            head = &mut head => First::Head(head),
            outcome = &mut guest => First::Ended(outcome),
        };
        let head = match first {
            First::Head(Ok(head)) => {
                // Answered: a guest still running goes on in its own task.
                if guest.as_mut().now_or_never().is_none() {
                    tokio::spawn(guest);
                }
                head
            }
            First::Ended(outcome) => match head.try_recv() {
                Ok(head) => head,
                Err(_) => return self.finish(outcome_response(outcome, &self.meter)),
            },
            // Dropped unsent: the guest is ending (or died) without an answer.
            First::Head(Err(_)) => {
                let outcome = guest.await;
                return self.finish(outcome_response(outcome, &self.meter));
            }
        };
        let response = match head {
            Ok(mut response) => {
                response
                    .extensions_mut()
                    .insert(crate::base::transport::BodyWatch(self.disconnected.clone()));
                response
            }
            Err(code) => error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("the tenant answered with an error: {code}"),
            ),
        };
        self.finish(response)
    }

    /// The response, or the 413/408 the body's faults call for.
    fn finish(&self, response: Response<Body>) -> Response<Body> {
        self.faults
            .finish(response, &self.refusals, self.body_limit)
    }
}

/// What happened first while the guest ran: it sent its response head, or
/// it ended.
enum First {
    Head(Result<Head, oneshot::error::RecvError>),
    Ended(Outcome),
}
