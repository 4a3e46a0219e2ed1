//! Takes HTTP connections within bounds: at most `http.max_connections` at once (the rest
//! wait in the kernel's backlog), headers within `http.header_timeout`, each request body
//! whole within `http.body_timeout`; and on shutdown, connections still open after the
//! grace are closed, so a client that never finishes cannot hold the process.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use prometheus_client::metrics::gauge::Gauge;

use crate::config::HttpConfig;
use crate::metrics::Counted;

/// Pause after an accept error (out of file descriptors, say) before the next accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// What a connection buffers of what it reads (headers, then body bytes not yet taken);
/// hyper's default is about 400 KiB a connection.
const READ_BUFFER: usize = 64 << 10;

/// Serves `router` on `listener` until `shutdown`; then lets requests in flight finish for
/// `grace` and closes what is still open.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpConfig,
    open: Gauge,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let places = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        let place = tokio::select! {
            place = places.clone().acquire_owned() => place.expect("never closed"),
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(error = %error, "Cannot accept a connection; trying again shortly.");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let router = router.clone();
        let body_timeout = limits.body_timeout;
        let service =
            TowerToHyperService::new(tower::service_fn(move |request: hyper::Request<Incoming>| {
                let request = request.map(|body| Body::new(DeadlineBody::new(body, body_timeout)));
                router.clone().oneshot(request)
            }));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).max_buf_size(READ_BUFFER);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let shutdown = shutdown.clone();
        let counted = Counted::new(&open);
        connections.spawn(async move {
            let _counted = counted;
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = shutdown.cancelled() => {
                    // The request in flight is answered, then the connection closes.
                    connection.as_mut().graceful_shutdown();
                    connection.await.ok();
                }
            }
            drop(place);
        });
    }
    drop(listener);
    let closing = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, closing).await.is_err() {
        tracing::warn!(
            open = connections.len(),
            "Connections still open after the grace period; closing them."
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// Why a request body was cut off.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(Duration);

/// A request body that must arrive whole by a deadline: a client trickling a byte now and
/// then cannot keep a request (and its buffer) for long.
struct DeadlineBody {
    body: Incoming,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl DeadlineBody {
    fn new(body: Incoming, timeout: Duration) -> DeadlineBody {
        DeadlineBody { body, timeout, deadline: Box::pin(tokio::time::sleep_until(Instant::now() + timeout)) }
    }
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(self.timeout)))));
        }
        Pin::new(&mut self.body).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
