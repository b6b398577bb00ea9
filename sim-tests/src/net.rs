//! Turmoil plumbing: the node's clock, listener and peer transport, and a JSON client.
//!
//! Every hyper client here pools connections to one host only ([`SimTransport`],
//! [`SimClient`]). hyper-util's pool keeps its idle connections in a std `HashMap` keyed
//! by host, whose iteration order is seeded per process (`RandomState`), and closes them
//! in that order when the pool is dropped or expires idle connections. Each close sends
//! a TCP FIN, and turmoil draws every message's latency from the seed's one RNG in the
//! order messages are sent: a pool holding several hosts would hand the latencies to the
//! FINs, and so to every later message, in an order that changes from process to process.
//! (This is what made swarm seeds 208 and 209 replay differently after the heal.)

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tally_api::v1::{ErrorBody, ErrorDetail, VoteBody, VoteRequest};
use tally_node::clock::Clock;
use tally_raft::transport::{BoxFuture, HyperTransport, PeerTransport, TransportError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{host_name, PORT};

/// Simulated wall clock: turmoil's (which starts at its epoch and advances with the sim),
/// plus a skew the fault schedule may set, to put a leader's clock ahead or behind.
#[derive(Clone, Default)]
pub struct SimClock {
    pub skew_ms: Arc<AtomicI64>,
}

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        let now = turmoil::since_epoch().map_or(0, |d| d.as_millis() as i64);
        now + self.skew_ms.load(Ordering::Relaxed)
    }
}

/// A turmoil listener that axum can serve.
pub struct SimListener(pub turmoil::net::TcpListener);

impl axum::serve::Listener for SimListener {
    type Io = turmoil::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok(accepted) => return accepted,
                // Accept errors are transient in the simulation (a host going away).
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A turmoil stream that hyper's pooled client can use.
pub struct SimStream(turmoil::net::TcpStream);

impl Connection for SimStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for SimStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Connects to `host:port` over turmoil's network.
#[derive(Clone, Copy)]
pub struct SimConnector;

impl tower::Service<http::Uri> for SimConnector {
    type Response = TokioIo<SimStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| std::io::Error::other("no host in uri"))?.to_string();
            let port = uri.port_u16().unwrap_or(80);
            let stream = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
            Ok(TokioIo::new(SimStream(stream)))
        })
    }
}

/// A node's peer transport: the production [`HyperTransport`] over turmoil TCP, with one
/// pool per peer so that closing connections is in a seed-determined order (see the
/// module's documentation). Pools are dropped in address order.
pub struct SimTransport {
    secret: String,
    peers: Mutex<BTreeMap<String, Arc<HyperTransport<SimConnector>>>>,
}

impl SimTransport {
    pub fn new(secret: &str) -> Self {
        Self { secret: secret.to_string(), peers: Mutex::new(BTreeMap::new()) }
    }

    fn peer(&self, addr: &str) -> Arc<HyperTransport<SimConnector>> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers
            .entry(addr.to_string())
            .or_insert_with(|| Arc::new(HyperTransport::new(SimConnector, &self.secret)))
            .clone()
    }
}

impl PeerTransport for SimTransport {
    fn post(
        &self,
        addr: &str,
        path: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        let peer = self.peer(addr);
        let addr = addr.to_string();
        Box::pin(async move { peer.post(&addr, path, body, timeout).await })
    }
}

/// A node's answer to one request, its body decoded as API.md's types (`tally_api::v1`).
#[derive(Debug, Clone, PartialEq)]
pub enum Answer<T> {
    /// A 2xx status and its body.
    Success(u16, T),
    /// Any other status, with the API's error when the body is one. A 2xx whose body is
    /// not the contract's lands here too: a client cannot take it for a success.
    Refused(u16, Option<ErrorDetail>),
}

impl<T> Answer<T> {
    pub fn status(&self) -> u16 {
        match self {
            Answer::Success(status, _) | Answer::Refused(status, _) => *status,
        }
    }

    /// The body of a success.
    pub fn success(self) -> Option<T> {
        match self {
            Answer::Success(_, body) => Some(body),
            Answer::Refused(..) => None,
        }
    }
}

/// A JSON client for simulated clients, with a timeout on every request.
pub struct SimClient {
    /// One pool per node (see the module's documentation), dropped in node order.
    clients: Mutex<BTreeMap<u64, Client<SimConnector, Full<Bytes>>>>,
    timeout: Duration,
}

impl SimClient {
    pub fn new(timeout: Duration) -> Self {
        Self { clients: Mutex::new(BTreeMap::new()), timeout }
    }

    /// The pool of connections to `node`.
    fn client(&self, node: u64) -> Client<SimConnector, Full<Bytes>> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(node)
            // With tokio's timer (simulated), not std's clock: hyper's pool otherwise
            // judges idle connections by real time, and a run would depend on how fast
            // it ran.
            .or_insert_with(|| Client::builder(TokioExecutor::new()).pool_timer(TokioTimer::new()).build(SimConnector))
            .clone()
    }

    /// `None`: no answer within the timeout, or the connection broke.
    pub async fn request<T: DeserializeOwned>(
        &self,
        method: &str,
        node: u64,
        path: &str,
        body: Option<&impl Serialize>,
        idempotency_key: Option<&str>,
    ) -> Option<Answer<T>> {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(format!("http://{}:{PORT}{path}", host_name(node)))
            .header("content-type", "application/json");
        if let Some(key) = idempotency_key {
            builder = builder.header("Idempotency-Key", key);
        }
        // The API's request types serialize infallibly (string keys, no floats).
        let payload = body.map(|b| Bytes::from(serde_json::to_vec(b).unwrap_or_default())).unwrap_or_default();
        let request = builder.body(Full::new(payload)).ok()?;
        let client = self.client(node);
        let exchange = async {
            let response = client.request(request).await.ok()?;
            let status = response.status().as_u16();
            let bytes = Limited::new(response.into_body(), 1 << 20).collect().await.ok()?.to_bytes();
            Some(decode(status, &bytes))
        };
        tokio::time::timeout(self.timeout, exchange).await.ok().flatten()
    }

    pub async fn get<T: DeserializeOwned>(&self, node: u64, path: &str) -> Option<Answer<T>> {
        self.request("GET", node, path, None::<&()>, None).await
    }

    pub async fn post<T: DeserializeOwned>(&self, node: u64, path: &str, body: &impl Serialize) -> Option<Answer<T>> {
        self.request("POST", node, path, Some(body), None).await
    }

    /// One vote, with its idempotency key in the header as API.md has it.
    pub async fn vote(&self, node: u64, poll: &str, voter: &str, option: &str, key: &str) -> Option<Answer<VoteBody>> {
        let body = VoteRequest { option_id: option.to_string(), voter_id: Some(voter.to_string()), attributes: None };
        self.request("POST", node, &format!("/v1/polls/{poll}/votes"), Some(&body), Some(key)).await
    }
}

fn decode<T: DeserializeOwned>(status: u16, bytes: &[u8]) -> Answer<T> {
    if (200..300).contains(&status) {
        if let Ok(body) = serde_json::from_slice(bytes) {
            return Answer::Success(status, body);
        }
        return Answer::Refused(status, None);
    }
    let error = serde_json::from_slice::<ErrorBody>(bytes).ok().map(|body| body.error);
    Answer::Refused(status, error)
}
