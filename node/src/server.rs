//! The HTTP server of a node (API and peer RPC share its port), with the bounds a hostile
//! client cannot get around: a deadline on reading each request's headers (which also
//! closes idle keep-alive connections), a deadline on reading each request's body, a cap
//! on open connections, and a bounded drain at shutdown.
//!
//! With `--cert-file`, each connection starts with a TLS handshake (bounded by the header
//! timeout), and its requests carry the peer certificate it showed, if any.
//!
//! axum's own `serve` has none of these knobs, so connections are served here with
//! hyper's HTTP/1 builder, generic over the listener so that the simulation's runs too.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::serve::Listener;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tower::ServiceExt;
use tracing::Instrument;

use crate::ratelimit::{AddrListener, ClientAddr};
use crate::tls::{PeerCertificate, ServerTls};
use crate::Node;

/// What an operator sets (`tally-node --help`: `--http-*`).
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// From the first byte a connection may send until its request's headers are in; it
    /// runs from the end of one response, so an idle keep-alive connection closes too.
    pub header_read_timeout: Duration,
    /// From the headers until the whole body is in.
    pub body_read_timeout: Duration,
    /// Open connections, clients' and peers' together. Past it, a new connection is
    /// closed at once (the idle ones time out and free their places).
    pub connections_max: usize,
    /// How long a stopping node waits for requests in flight before it closes them.
    pub drain_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown`, then stops `node`'s Raft at once (so
/// that the others elect a new leader within an election timeout instead of waiting on
/// this node's clients) and drains for at most `limits.drain_timeout`.
pub async fn serve<L>(
    node: &Node,
    listener: L,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: Listener,
    L::Addr: Into<Option<std::net::SocketAddr>>,
{
    let router = node.router();
    let places = Arc::new(Semaphore::new(limits.connections_max));
    let (closing, closing_watch) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut listener = AddrListener(listener);
    tokio::pin!(shutdown);
    loop {
        let (io, addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        while connections.try_join_next().is_some() {}
        let Ok(place) = places.clone().try_acquire_owned() else {
            node.app.metrics.connections_refused.inc();
            drop(io);
            continue;
        };
        let (router, closing) = (router.clone(), closing_watch.clone());
        let (tls, failed) = (node.app.access.tls.clone(), node.app.metrics.tls_handshakes_failed.clone());
        let connection = async move {
            match tls {
                None => serve_connection(io, addr, router, limits, closing, PeerCertificate::default()).await,
                Some(tls) => match handshake(&tls, io, limits.header_read_timeout).await {
                    Ok((stream, peer)) => serve_connection(stream, addr, router, limits, closing, peer).await,
                    Err(reason) => {
                        failed.inc();
                        tracing::debug!(?addr, "TLS handshake: {reason}");
                    }
                },
            }
            drop(place);
        };
        connections.spawn(connection.instrument(node.span.clone()));
    }
    tracing::info!(connections = connections.len(), "stopping: Raft first, then a bounded drain");
    node.shutdown().await;
    let _ = closing.send(true);
    let drained =
        tokio::time::timeout(limits.drain_timeout, async { while connections.join_next().await.is_some() {} });
    if drained.await.is_err() {
        tracing::warn!(left = connections.len(), "requests still open after the drain: closing them");
        connections.abort_all();
    }
    Ok(())
}

/// The TLS handshake, within the header timeout: a client that stalls in it holds its
/// place no longer than one that stalls in its headers.
async fn handshake<I>(
    tls: &ServerTls,
    io: I,
    timeout: Duration,
) -> Result<(tokio_rustls::server::TlsStream<I>, PeerCertificate), String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let accept = tokio_rustls::TlsAcceptor::from(tls.config.clone()).accept(io);
    let stream = match tokio::time::timeout(timeout, accept).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("not done within {timeout:?}")),
    };
    let peer = tls.peer_certificate(stream.get_ref().1.peer_certificates());
    Ok((stream, peer))
}

async fn serve_connection<I>(
    io: I,
    addr: ClientAddr,
    router: axum::Router,
    limits: HttpLimits,
    mut closing: watch::Receiver<bool>,
    peer: PeerCertificate,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(ConnectInfo(addr));
        parts.extensions.insert(peer.clone());
        let body = axum::body::Body::new(Deadline::new(body, limits.body_read_timeout));
        router.clone().oneshot(http::Request::from_parts(parts, body))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = async { drop(closing.wait_for(|closing| *closing).await) } => {
            // Answers what is in flight, then closes; the drain's deadline bounds it.
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// A request body that fails once its deadline passes: a client sending a body slowly, or
/// announcing more than it sends, holds its connection for `body_read_timeout` at most.
struct Deadline {
    body: Incoming,
    deadline: Pin<Box<Sleep>>,
}

impl Deadline {
    fn new(body: Incoming, timeout: Duration) -> Self {
        Self { body, deadline: Box::pin(tokio::time::sleep(timeout)) }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within the body read timeout")]
struct BodyTimedOut;

impl Body for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimedOut.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
