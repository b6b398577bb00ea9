//! The client side of peer RPC: HTTP/1.1 POSTs of bincode frames, over any connector.
//!
//! Production uses tokio's TCP ([`HyperTransport::tcp`]) or TLS over it
//! ([`HyperTransport::tls`]); the simulation passes a
//! connector that returns turmoil streams. Everything above this module sees only
//! [`PeerTransport`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::limits::PEER_FRAME_BYTES_MAX;
use crate::rpc::SECRET_HEADER;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("cannot reach {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("connection to {addr} broke: {reason}")]
    Broken { addr: String, reason: String },
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("{addr} answered HTTP {status}: {body}")]
    Status { addr: String, status: u16, body: String },
    #[error("bad frame from {addr}: {reason}")]
    BadFrame { addr: String, reason: String },
}

/// Sends one request body to a peer and returns the response body.
pub trait PeerTransport: Send + Sync + 'static {
    fn post(
        &self,
        addr: &str,
        path: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<u8>, TransportError>>;
}

/// [`PeerTransport`] over hyper's pooled HTTP/1.1 client.
pub struct HyperTransport<C> {
    client: Client<C, Full<Bytes>>,
    secret: Arc<str>,
    scheme: &'static str,
}

/// tokio's TCP with `TCP_NODELAY` (Raft messages are small and latency-bound).
fn tcp_connector(connect_timeout: Duration) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector
}

impl HyperTransport<HttpConnector> {
    pub fn tcp(secret: &str, connect_timeout: Duration) -> Self {
        Self::new(tcp_connector(connect_timeout), secret)
    }
}

impl HyperTransport<HttpsConnector<HttpConnector>> {
    /// Over TLS: `tls` holds the CA the peers' certificates must chain to, and this
    /// node's own certificate, which they check names it.
    pub fn tls(secret: &str, connect_timeout: Duration, tls: rustls::ClientConfig) -> Self {
        let mut tcp = tcp_connector(connect_timeout);
        tcp.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(tcp);
        Self { scheme: "https", ..Self::new(connector, secret) }
    }
}

impl<C> HyperTransport<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    pub fn new(connector: C, secret: &str) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(16)
            .build(connector);
        Self { client, secret: secret.into(), scheme: "http" }
    }

    async fn send(&self, addr: &str, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let unreachable = |reason: String| TransportError::Unreachable { addr: addr.to_string(), reason };
        let request = http::Request::post(format!("{}://{addr}{path}", self.scheme))
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .header(SECRET_HEADER, &*self.secret)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| unreachable(e.to_string()))?;
        let response = self.client.request(request).await.map_err(|e| {
            if e.is_connect() {
                unreachable(format!("{e:?}"))
            } else {
                // The request may have reached the peer: its outcome is unknown.
                TransportError::Broken { addr: addr.to_string(), reason: format!("{e:?}") }
            }
        })?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), PEER_FRAME_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| TransportError::BadFrame { addr: addr.to_string(), reason: e.to_string() })?
            .to_bytes();
        if !status.is_success() {
            let body = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
            return Err(TransportError::Status { addr: addr.to_string(), status: status.as_u16(), body });
        }
        Ok(bytes.to_vec())
    }
}

impl<C> PeerTransport for HyperTransport<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    fn post(
        &self,
        addr: &str,
        path: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        let addr = addr.to_string();
        Box::pin(async move {
            match tokio::time::timeout(timeout, self.send(&addr, path, body)).await {
                Ok(result) => result,
                Err(_) => Err(TransportError::Timeout { addr, timeout }),
            }
        })
    }
}
