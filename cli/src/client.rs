//! A small typed HTTP client for the Tally API.
//!
//! Every node serves the whole API and forwards writes to the leader itself (API.md), so
//! the client never hunts for the leader: it tries the endpoints in order and moves on only
//! when a request cannot have reached a node (a connection error), or, for reads, after any
//! transport error. A write that timed out or lost its connection is never re-sent
//! elsewhere: its outcome is unknown, and only the caller's idempotency key makes a retry
//! safe. HTTP error replies (even 503) are returned as they are, never retried here.

use std::fmt::Write as _;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tally_api::v1::{ErrorBody, ErrorDetail};

use crate::exit::{Exit, Failure};

/// A connection attempt to a dead or black-holed node should not eat the whole request
/// timeout before the next endpoint gets its turn.
const CONNECT_TIMEOUT_MAX: Duration = Duration::from_secs(3);

/// Non-JSON error bodies (a proxy's HTML page, say) are cut to this many characters.
const ERROR_BODY_CHARS_MAX: usize = 200;

/// The `--endpoints` list: base URLs such as `http://127.0.0.1:7001`, without a trailing
/// slash, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints(pub Vec<String>);

/// Parses a comma-separated endpoint list. `host:port` gets `http://` in front; nodes run
/// with `--cert-file` need `https://` (and `--cacert`, unless a public CA signed them).
pub fn parse_endpoints(raw: &str) -> Result<Endpoints, String> {
    let mut endpoints: Vec<String> = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        let endpoint = parse_endpoint(item)?;
        if !endpoints.contains(&endpoint) {
            endpoints.push(endpoint);
        }
    }
    if endpoints.is_empty() {
        return Err("no endpoint given".to_string());
    }
    Ok(Endpoints(endpoints))
}

fn parse_endpoint(raw: &str) -> Result<String, String> {
    let with_scheme = if raw.contains("://") { raw.to_string() } else { format!("http://{raw}") };
    let url = reqwest::Url::parse(&with_scheme).map_err(|error| format!("{raw}: {error}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!("{raw}: only http:// and https:// endpoints are supported"));
    }
    if url.host_str().is_none() {
        return Err(format!("{raw}: no host"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{raw}: give a base URL such as http://127.0.0.1:7001, without a path"));
    }
    Ok(with_scheme.trim_end_matches('/').to_string())
}

/// Percent-encodes one path segment, so an id typed by a user cannot change the route.
pub fn segment(raw: &str) -> String {
    let mut encoded = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// The header that carries the cluster secret (API.md: cluster routes).
pub const CLUSTER_SECRET_HEADER: &str = "x-tally-cluster-secret";

/// One API request, built by the command modules from the `tally_api::v1` types and sent
/// by [`Client::call`].
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(&'static str, String)>,
    body: Option<Value>,
}

/// A request body as JSON. The API's request types (`tally_api::v1`) are structs of
/// strings, numbers, booleans, options, lists and maps with string keys: serializing them
/// cannot fail, so a failure here is a bug in those types, not a runtime condition.
fn json_body(body: &impl Serialize) -> Value {
    serde_json::to_value(body).expect("the API's request types serialize infallibly")
}

impl Request {
    fn new(method: Method, path: impl Into<String>, body: Option<Value>) -> Self {
        Request { method, path: path.into(), query: Vec::new(), headers: Vec::new(), body }
    }

    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path, None)
    }

    pub fn post(path: impl Into<String>, body: &impl Serialize) -> Self {
        Self::new(Method::POST, path, Some(json_body(body)))
    }

    pub fn patch(path: impl Into<String>, body: &impl Serialize) -> Self {
        Self::new(Method::PATCH, path, Some(json_body(body)))
    }

    pub fn put(path: impl Into<String>, body: &impl Serialize) -> Self {
        Self::new(Method::PUT, path, Some(json_body(body)))
    }

    pub fn delete(path: impl Into<String>) -> Self {
        Self::new(Method::DELETE, path, None)
    }

    pub fn query(mut self, key: &str, value: impl Into<String>) -> Self {
        self.query.push((key.to_string(), value.into()));
        self
    }

    /// The query string of a `tally_api::v1` query type (`ListQuery`, `ResultsQuery`, …):
    /// one parameter per field that is set. Those types are flat structs of optional
    /// scalars, so they serialize infallibly to an object of scalars.
    pub fn params(mut self, params: &impl Serialize) -> Self {
        if let Value::Object(fields) = json_body(params) {
            for (key, value) in fields {
                match value {
                    Value::Null => {}
                    Value::String(text) => self.query.push((key, text)),
                    other => self.query.push((key, other.to_string())),
                }
            }
        }
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// A successful reply, undecoded.
#[derive(Debug)]
pub struct RawReply {
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}

/// How the client checks nodes' certificates and proves its own (`--cacert`, `--cert`).
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// The CA that signed the nodes' certificates; without it, https endpoints fail (this
    /// build trusts no CA by default: clusters sign their own).
    ca: Option<reqwest::Certificate>,
    /// A client certificate and its key, for nodes run with `--client-cert-auth`.
    identity: Option<reqwest::Identity>,
}

/// PEM files are small; anything bigger is not one.
const PEM_FILE_BYTES_MAX: u64 = 1024 * 1024;

fn read_pem(flag: &str, path: &std::path::Path) -> Result<Vec<u8>, Failure> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(PEM_FILE_BYTES_MAX).read_to_end(&mut bytes))
        .map_err(|e| Failure::usage(format!("cannot read {flag} {}: {e}", path.display())))?;
    Ok(bytes)
}

impl Tls {
    pub fn load(
        cacert: Option<&std::path::Path>,
        cert: Option<&std::path::Path>,
        key: Option<&std::path::Path>,
    ) -> Result<Tls, Failure> {
        let ca = match cacert {
            None => None,
            Some(path) => Some(
                reqwest::Certificate::from_pem(&read_pem("--cacert", path)?)
                    .map_err(|e| Failure::usage(format!("--cacert {}: {e}", path.display())))?,
            ),
        };
        let identity = match (cert, key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let mut pem = read_pem("--cert", cert)?;
                pem.push(b'\n');
                pem.extend(read_pem("--key", key)?);
                Some(
                    reqwest::Identity::from_pem(&pem)
                        .map_err(|e| Failure::usage(format!("--cert {} with --key: {e}", cert.display())))?,
                )
            }
            _ => return Err(Failure::usage("--cert and --key go together")),
        };
        Ok(Tls { ca, identity })
    }

    /// A reqwest builder that checks certificates this way (rustls, no system roots).
    pub fn builder(&self) -> reqwest::ClientBuilder {
        let mut builder = reqwest::Client::builder().use_rustls_tls();
        if let Some(ca) = &self.ca {
            builder = builder.add_root_certificate(ca.clone());
        }
        if let Some(identity) = &self.identity {
            builder = builder.identity(identity.clone());
        }
        builder
    }
}

/// Talks to a list of endpoints; cheap to clone (reqwest shares its connection pool).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    tls: Tls,
    endpoints: Vec<String>,
    timeout: Duration,
    /// Sent as `Authorization: Bearer` on every request (nodes with `--auth jwt`).
    token: Option<String>,
}

impl Client {
    pub fn new(endpoints: Endpoints, timeout: Duration, tls: Tls) -> anyhow::Result<Self> {
        let http = tls.builder().timeout(timeout).connect_timeout(timeout.min(CONNECT_TIMEOUT_MAX)).build()?;
        Ok(Client { http, tls, endpoints: endpoints.0, timeout, token: None })
    }

    /// A reqwest builder with this client's certificates, for callers that tune their own
    /// pool (the benchmark, results streams).
    pub fn http_builder(&self) -> reqwest::ClientBuilder {
        self.tls.builder()
    }

    /// The same client, sending `token` as a bearer token.
    pub fn with_token(self, token: Option<String>) -> Client {
        Client { token, ..self }
    }

    /// `builder` with this client's bearer token, if any: for callers that make their own
    /// requests (long-lived streams).
    pub fn authorize(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Whether requests carry a bearer token (the cluster runs with `--auth jwt`).
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The same client pinned to one endpoint, for per-node questions like status.
    pub fn only(&self, endpoint: &str) -> Client {
        Client { endpoints: vec![endpoint.to_string()], ..self.clone() }
    }

    /// Sends `request` to the first endpoint that takes it and decodes the reply into the
    /// API type `T` (`()` or an `Option` for replies without a body). A reply that does not
    /// match `T` is an `INVALID_RESPONSE` failure.
    pub async fn call<T: DeserializeOwned>(&self, request: &Request) -> Result<T, Failure> {
        let raw = self.send_raw(request).await?;
        decode_success(&raw.body)
    }

    /// Like [`Client::call`] for replies that are not one JSON value (NDJSON): the
    /// successful reply's headers and text.
    pub async fn send_raw(&self, request: &Request) -> Result<RawReply, Failure> {
        let mut tried: Vec<String> = Vec::new();
        for endpoint in &self.endpoints {
            match self.send_once(endpoint, request).await {
                Ok(reply) => return reply,
                Err(error) if may_try_next(&error, &request.method) => {
                    tried.push(format!("{endpoint} ({})", root_cause(&error)));
                }
                Err(error) => return Err(self.transport_failure(endpoint, &error)),
            }
        }
        let message = match tried.as_slice() {
            [only] => format!("unreachable: {only}"),
            _ => format!("no endpoint reachable: {}", tried.join(", ")),
        };
        Err(Failure::unavailable("UNAVAILABLE", message))
    }

    /// The HTTP status of `GET endpoint+path`, or `None` if the node did not answer. For
    /// probes such as `/ready`, whose bodies are not part of the contract.
    pub async fn probe(&self, endpoint: &str, path: &str) -> Option<StatusCode> {
        let response = self.http.get(format!("{endpoint}{path}")).send().await.ok()?;
        Some(response.status())
    }

    /// The outer `Result` is a transport error (the node may never have seen the
    /// request); the inner one is the node's answer.
    async fn send_once(&self, endpoint: &str, request: &Request) -> Result<Result<RawReply, Failure>, reqwest::Error> {
        let mut builder =
            self.http.request(request.method.clone(), format!("{endpoint}{}", request.path)).query(&request.query);
        for (name, value) in &request.headers {
            builder = builder.header(*name, value);
        }
        if let Some(token) = &self.token {
            builder = builder.bearer_auth(token);
        }
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        let response = builder.send().await?;
        let status = response.status();
        let retry_after = header_text(&response, reqwest::header::RETRY_AFTER);
        let headers = response.headers().clone();
        let text = response.text().await?;
        if status.is_success() {
            return Ok(Ok(RawReply { headers, body: text }));
        }
        Ok(Err(failure_from_response(status.as_u16(), &text, retry_after.as_deref())))
    }

    /// A write that failed after it may have reached the node has an unknown outcome:
    /// report that, and leave any retry to the caller's idempotency key.
    fn transport_failure(&self, endpoint: &str, error: &reqwest::Error) -> Failure {
        let retry_hint = "the outcome is unknown (retry with the same idempotency key to learn it)";
        if error.is_timeout() {
            let waited = self.timeout.as_millis();
            let message = format!("{endpoint} did not answer within {waited} ms; {retry_hint}");
            return Failure::unavailable("TIMEOUT", message);
        }
        let message = format!("{endpoint}: {}; {retry_hint}", root_cause(error));
        Failure::unavailable("CONNECTION_LOST", message)
    }
}

/// A connection error means the node never got the request, so any request may go on to
/// the next endpoint. A read (GET) may go on after any transport error: repeating it is
/// harmless.
fn may_try_next(error: &reqwest::Error, method: &Method) -> bool {
    error.is_connect() || *method == Method::GET
}

/// reqwest's top-level message ("error sending request for url") hides the useful part
/// ("Connection refused") in its source chain.
pub fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    let cause = cause.to_string();
    if cause.contains("certificate") {
        // The usual reason with a cluster that signs its own certificates.
        return format!("{cause}; does --cacert (TALLY_CACERT) name the CA that signed the nodes' certificates?");
    }
    cause
}

fn header_text(response: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    let value = response.headers().get(name)?;
    value.to_str().ok().map(str::to_string)
}

/// Decodes a success body into `T`; an empty body (e.g. a 204) decodes as `null`.
pub(crate) fn decode_success<T: DeserializeOwned>(text: &str) -> Result<T, Failure> {
    let text = if text.trim().is_empty() { "null" } else { text };
    serde_json::from_str(text).map_err(|error| {
        let message = match error.classify() {
            serde_json::error::Category::Data => {
                format!("the server's reply is not a {}: {error}", type_label::<T>())
            }
            _ => format!("the server's reply is not JSON: {error}"),
        };
        Failure::failed("INVALID_RESPONSE", message)
    })
}

/// `T`'s name without module paths: `Option<PollBody>` rather than
/// `core::option::Option<tally_api::v1::polls::PollBody>`.
fn type_label<T>() -> String {
    let mut label = String::new();
    let mut word = String::new();
    for c in std::any::type_name::<T>().chars().chain(std::iter::once(' ')) {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            label.push_str(word.rsplit("::").next().unwrap_or_default());
            word.clear();
            label.push(c);
        }
    }
    label.trim_end().to_string()
}

/// Turns an error reply into a [`Failure`], keeping the API's stable `code` and showing any
/// extra context (e.g. the recorded `vote_id` of `ALREADY_VOTED`) after the message.
pub fn failure_from_response(status: u16, body: &str, retry_after: Option<&str>) -> Failure {
    let exit = match status {
        503 | 504 => Exit::Unavailable,
        _ => Exit::Failed,
    };
    let mut failure = match serde_json::from_str::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => Failure::new(exit, &error.code, api_error_message(&error)),
        Err(_) => Failure::new(exit, &format!("HTTP_{status}"), short_body(body)),
    };
    if let Some(seconds) = retry_after {
        let _ = write!(failure.message, " (retry after {seconds} s)");
    }
    failure
}

/// The message, then the code's context fields as `key=value`.
fn api_error_message(error: &ErrorDetail) -> String {
    let mut message = error.message.clone();
    let context: Vec<String> =
        error.context.iter().map(|(key, value)| format!("{key}={}", crate::output::cell(value))).collect();
    if !context.is_empty() {
        let _ = write!(message, " ({})", context.join(", "));
    }
    message
}

fn short_body(body: &str) -> String {
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return "(empty body)".to_string();
    }
    let mut short: String = trimmed.chars().take(ERROR_BODY_CHARS_MAX).collect();
    if trimmed.chars().count() > ERROR_BODY_CHARS_MAX {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(raw: &str) -> Vec<String> {
        parse_endpoints(raw).expect("valid endpoint list").0
    }

    #[test]
    fn endpoints_split_on_commas_and_lose_trailing_slashes() {
        assert_eq!(
            list("http://127.0.0.1:7001, http://127.0.0.1:7002/,"),
            ["http://127.0.0.1:7001", "http://127.0.0.1:7002"]
        );
    }

    #[test]
    fn endpoints_without_scheme_get_http_and_duplicates_go() {
        assert_eq!(
            list("127.0.0.1:7001,localhost:7002,127.0.0.1:7001"),
            ["http://127.0.0.1:7001", "http://localhost:7002"]
        );
    }

    #[test]
    fn bad_endpoint_lists_are_refused() {
        assert!(parse_endpoints("").is_err());
        assert!(parse_endpoints(" , ").is_err());
        assert!(parse_endpoints("ftp://127.0.0.1:7001").is_err());
        assert_eq!(
            parse_endpoints("https://127.0.0.1:7001").map(|e| e.0),
            Ok(vec!["https://127.0.0.1:7001".to_string()])
        );
        assert!(parse_endpoints("http://127.0.0.1:7001/v1").is_err());
        assert!(parse_endpoints("http://:7001").is_err());
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("p-1_a.b~"), "p-1_a.b~");
        assert_eq!(segment("a/b?c d"), "a%2Fb%3Fc%20d");
    }

    #[test]
    fn api_errors_keep_code_and_show_context() {
        let body = r#"{"error":{"code":"ALREADY_VOTED","message":"voter v1 has already voted","vote_id":"x1"}}"#;
        let failure = failure_from_response(409, body, None);
        assert_eq!(failure.exit, Exit::Failed);
        assert_eq!(failure.code, "ALREADY_VOTED");
        assert_eq!(failure.message, "voter v1 has already voted (vote_id=x1)");
    }

    #[test]
    fn unavailable_and_timeout_replies_exit_unavailable() {
        let body = r#"{"error":{"code":"UNAVAILABLE","message":"no leader"}}"#;
        let failure = failure_from_response(503, body, Some("1"));
        assert_eq!(failure.exit, Exit::Unavailable);
        assert_eq!(failure.to_string(), "UNAVAILABLE: no leader (retry after 1 s)");
        assert_eq!(failure_from_response(504, "", None).exit, Exit::Unavailable);
    }

    #[test]
    fn non_api_error_bodies_get_an_http_code() {
        let failure = failure_from_response(502, "<html>bad gateway</html>", None);
        assert_eq!(failure.code, "HTTP_502");
        assert_eq!(failure.message, "<html>bad gateway</html>");
        assert_eq!(failure_from_response(404, "", None).message, "(empty body)");
    }

    #[test]
    fn empty_success_bodies_are_null() {
        assert_eq!(decode_success::<Value>(""), Ok(Value::Null));
        assert_eq!(decode_success::<()>(" "), Ok(()));
        assert_eq!(decode_success::<Option<u64>>(""), Ok(None));
        let failure = decode_success::<Value>("not json").expect_err("not JSON");
        assert_eq!(failure.code, "INVALID_RESPONSE");
        assert!(failure.message.starts_with("the server's reply is not JSON"), "{}", failure.message);
    }

    #[test]
    fn replies_that_break_the_contract_name_the_type() {
        use tally_api::v1::{MemberRemoved, PollBody};
        assert_eq!(decode_success::<MemberRemoved>(r#"{"removed": 4}"#), Ok(MemberRemoved { removed: 4 }));
        let failure = decode_success::<MemberRemoved>(r#"{"node_id": 4}"#).expect_err("no removed");
        assert_eq!(failure.code, "INVALID_RESPONSE");
        assert!(failure.message.starts_with("the server's reply is not a MemberRemoved: "), "{}", failure.message);
        let failure = decode_success::<Option<PollBody>>("[]").expect_err("not a poll");
        assert!(failure.message.contains("not a Option<PollBody>"), "{}", failure.message);
    }

    #[test]
    fn query_types_become_parameters() {
        let query =
            tally_api::v1::ListQuery { status: Some(tally_api::v1::PollStatus::Active), limit: Some(5), cursor: None };
        let mut params = Request::get("/v1/polls").params(&query).query;
        params.sort();
        assert_eq!(params, [("limit".to_string(), "5".to_string()), ("status".into(), "active".into())]);
    }
}
