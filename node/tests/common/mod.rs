//! A cluster of real `tally-node` processes on loopback, for black-box tests.

#![allow(dead_code)]

use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

/// A cluster secret of its own for every test cluster, so that a node of one cluster that
/// meets a port of another (a leftover process, a reused port) is refused, not obeyed.
fn new_secret() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CLUSTERS: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("test-{}-{}-{nanos}", std::process::id(), CLUSTERS.fetch_add(1, Ordering::Relaxed))
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// Flags every node gets on top of the common ones.
    pub extra_args: Vec<String>,
    secret: String,
    pub ports: Vec<u16>,
    children: Vec<std::sync::Mutex<Option<Child>>>,
    pub http: reqwest::Client,
    /// With TLS: the directory of `ca.pem` and the nodes' `node-<id>.pem`/`.key`.
    pub tls: Option<std::path::PathBuf>,
}

/// A CA and one certificate per node, as an operator's PKI would issue them: each names
/// `node-<id>` and 127.0.0.1. Returns the CA, to issue more (clients, impostors).
pub fn write_node_certificates(dir: &std::path::Path, nodes: usize) -> tally_node::tls::dev::Ca {
    std::fs::create_dir_all(dir).expect("tls dir");
    let ca = tally_node::tls::dev::Ca::new("test CA").expect("CA");
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).expect("ca.pem");
    for id in 1..=nodes as u64 {
        let issued = ca.issue_node(id, &[], &[[127, 0, 0, 1].into()]).expect("node certificate");
        std::fs::write(dir.join(format!("node-{id}.pem")), issued.cert_pem).expect("cert");
        std::fs::write(dir.join(format!("node-{id}.key")), issued.key_pem).expect("key");
    }
    ca
}

/// A reqwest client that trusts `ca_pem`, optionally showing `identity`.
pub fn tls_client(ca_pem: &str, identity: Option<&tally_node::tls::dev::Issued>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(Duration::from_secs(15))
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA pem"));
    if let Some(issued) = identity {
        let pem = format!("{}\n{}", issued.cert_pem, issued.key_pem);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity pem"));
    }
    builder.build().expect("client")
}

/// A port that is free now, chosen below the kernel's ephemeral range (32768 and up on
/// Linux): a port the kernel hands out (`bind :0`) can be taken again at once by some
/// outgoing connection before the node binds it, which CI saw as "Address already in use".
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Spread over processes (test binaries run one after another, but a developer may run
    // two at once) by the pid, and within one by a counter.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 100) as u16 * 100;
    for _ in 0..10_000 {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 10_000;
        let port = 20_000 + (port - 20_000) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000")
}

impl Cluster {
    /// Starts `n` nodes that form a cluster by themselves, and waits until all are ready.
    pub async fn start(n: usize) -> Cluster {
        Self::start_with(n, Vec::new()).await
    }

    /// Like [`Cluster::start`], every node with `extra_args` too.
    pub async fn start_with(n: usize, extra_args: Vec<String>) -> Cluster {
        Self::unstarted(n, extra_args).launch().await
    }

    /// Like [`Cluster::start_with`], over TLS with certificates from the returned CA, and
    /// a client (`http`) that trusts it. `identity` is the certificate the client shows.
    pub async fn start_tls(
        n: usize,
        extra_args: Vec<String>,
        identity: impl FnOnce(&tally_node::tls::dev::Ca) -> Option<tally_node::tls::dev::Issued>,
    ) -> (Cluster, tally_node::tls::dev::Ca) {
        let dir = tempfile::tempdir().expect("temp dir");
        let tls = dir.path().join("tls");
        let ca = write_node_certificates(&tls, n);
        let cluster = Cluster {
            dir,
            extra_args,
            secret: new_secret(),
            ports: (0..n).map(|_| free_port()).collect(),
            children: (0..n).map(|_| std::sync::Mutex::new(None)).collect(),
            http: tls_client(&ca.cert_pem(), identity(&ca).as_ref()),
            tls: Some(tls),
        };
        (cluster.launch().await, ca)
    }

    /// A cluster of `n` nodes not started yet, for a test that prepares their data
    /// directories (`dir/<id>`) first; [`Cluster::launch`] starts it.
    pub fn unstarted(n: usize, extra_args: Vec<String>) -> Cluster {
        Cluster {
            dir: tempfile::tempdir().expect("temp dir"),
            extra_args,
            secret: new_secret(),
            ports: (0..n).map(|_| free_port()).collect(),
            children: (0..n).map(|_| std::sync::Mutex::new(None)).collect(),
            http: reqwest::Client::builder().timeout(Duration::from_secs(15)).build().expect("client"),
            tls: None,
        }
    }

    /// Node `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("{}", i + 1))
    }

    /// Waits up to `bound` for node `i` to exit by itself; its exit status if it did.
    pub fn exited_within(&mut self, i: usize, bound: Duration) -> Option<std::process::ExitStatus> {
        let started = std::time::Instant::now();
        let mut guard = self.child(i);
        let child = guard.as_mut()?;
        while started.elapsed() < bound {
            if let Ok(Some(status)) = child.try_wait() {
                guard.take();
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub async fn launch(mut self) -> Cluster {
        let cluster = &mut self;
        let n = cluster.ports.len();
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster.wait_ready(Duration::from_secs(60)).await;
        self
    }

    /// The cluster secret every node of this cluster was started with.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    pub fn url(&self, i: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.ports[i])
    }

    fn peers(&self) -> String {
        self.ports.iter().enumerate().map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1)).collect::<Vec<_>>().join(",")
    }

    fn child(&self, i: usize) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.children[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn spawn(&mut self, i: usize) {
        assert!(self.child(i).is_none(), "node {} is already running", i + 1);
        let data = self.data_dir(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node{}.log", i + 1)))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_tally-node"))
            .args(["--id", &(i + 1).to_string(), "--addr", &format!("127.0.0.1:{}", self.ports[i])])
            .arg("--data-dir")
            .arg(&data)
            .args(["--peers", &self.peers(), "--cluster-secret", &self.secret])
            .args([
                "--heartbeat-interval-ms",
                "50",
                "--election-timeout-ms-min",
                "300",
                "--election-timeout-ms-max",
                "600",
            ])
            .args(["--snapshot-interval-entries", "50"])
            // Tests race one voter's requests on purpose; rate limits have their own test.
            .args(["--rate-limit-voter-per-sec", "0"])
            .args(self.tls_args(i))
            .args(&self.extra_args)
            .env("TALLY_LOG", "info,openraft=warn")
            // A panic in a node (once seen in CI, in openraft's core) then shows where.
            .env("RUST_BACKTRACE", "1")
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("tally-node starts");
        *self.child(i) = Some(child);
    }

    fn tls_args(&self, i: usize) -> Vec<std::ffi::OsString> {
        let Some(dir) = &self.tls else { return Vec::new() };
        let id = i + 1;
        vec![
            "--cert-file".into(),
            dir.join(format!("node-{id}.pem")).into(),
            "--key-file".into(),
            dir.join(format!("node-{id}.key")).into(),
            "--peer-trusted-ca-file".into(),
            dir.join("ca.pem").into(),
        ]
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill(&mut self, i: usize) {
        self.kill_shared(i);
    }

    /// SIGKILL, for a cluster that worker tasks share.
    pub fn kill_shared(&self, i: usize) {
        if let Some(mut child) = self.child(i).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; how long the node took to exit, or `None` if it had not within `bound`
    /// (it is then SIGKILLed).
    pub fn stop_within(&mut self, i: usize, bound: Duration) -> Option<Duration> {
        let mut child = self.child(i).take()?;
        let started = std::time::Instant::now();
        sigterm(child.id());
        while started.elapsed() < bound {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// SIGTERM and wait: the clean shutdown path.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.child(i).take() {
            sigterm(child.id());
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.children.len()).filter(|i| self.child(*i).is_some()).collect()
    }

    /// Everything node `i` (from 0) has logged so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node{}.log", i + 1))).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for i in 0..self.children.len() {
            let text = std::fs::read_to_string(self.dir.path().join(format!("node{}.log", i + 1))).unwrap_or_default();
            let lines: Vec<_> = text.lines().collect();
            // A panic scrolls out of the tail quickly: show where the first one happened too.
            if let Some(at) = lines.iter().position(|l| l.contains("panicked at")) {
                let end = (at + 12).min(lines.len());
                out +=
                    &format!("--- node {}: first panic ---\n{}\n", i + 1, lines[at.saturating_sub(5)..end].join("\n"));
            }
            out += &format!("--- node {} ---\n{}\n", i + 1, lines[lines.len().saturating_sub(30)..].join("\n"));
        }
        out
    }

    pub async fn wait_ready(&self, timeout: Duration) {
        let running = self.running();
        let ok = eventually(timeout, || async {
            for &i in &running {
                match self.http.get(format!("{}/ready", self.url(i))).send().await {
                    Ok(r) if r.status() == 200 => {}
                    _ => return None,
                }
            }
            Some(())
        })
        .await;
        assert!(ok.is_some(), "cluster not ready within {timeout:?}\n{}", self.log_tail());
    }

    pub async fn status(&self, i: usize) -> Option<Value> {
        let response = self.http.get(format!("{}/v1/cluster/status", self.url(i))).send().await.ok()?;
        response.json().await.ok()
    }

    /// The index of the node that leads, as the running nodes agree.
    pub async fn leader(&self) -> usize {
        let running = self.running();
        let leader = eventually(Duration::from_secs(30), || async {
            let mut seen = None;
            for &i in &running {
                let status = self.status(i).await?;
                let leader = status["leader_id"].as_u64()?;
                if seen.is_some_and(|s| s != leader) {
                    return None;
                }
                seen = Some(leader);
            }
            let leader = seen? as usize - 1;
            running.contains(&leader).then_some(leader)
        })
        .await;
        leader.unwrap_or_else(|| panic!("no agreed leader\n{}", self.log_tail()))
    }

    pub async fn create_poll(&self, i: usize, options: &[&str]) -> (String, Vec<String>) {
        let response = self
            .http
            .post(format!("{}/v1/polls", self.url(i)))
            .json(&json!({"title": "integration", "options": options}))
            .send()
            .await
            .expect("create poll");
        let status = response.status();
        let poll: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 201, "create poll through node {}: {poll}\n{}", i + 1, self.log_tail());
        let ids = poll["options"]
            .as_array()
            .expect("options")
            .iter()
            .map(|o| o["option_id"].as_str().unwrap().to_string())
            .collect();
        (poll["poll_id"].as_str().expect("poll id").to_string(), ids)
    }

    /// One vote; `None` when no HTTP answer came back (connection refused or reset).
    pub async fn vote(&self, i: usize, poll: &str, voter: &str, option: &str, key: &str) -> Option<(u16, Value)> {
        let response = self
            .http
            .post(format!("{}/v1/polls/{poll}/votes", self.url(i)))
            .header("Idempotency-Key", key)
            .json(&json!({"voter_id": voter, "option_id": option}))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.unwrap_or(Value::Null)))
    }

    pub async fn results(&self, i: usize, poll: &str) -> Option<Value> {
        let response = self.http.get(format!("{}/v1/polls/{poll}/results", self.url(i))).send().await.ok()?;
        (response.status() == 200).then_some(())?;
        response.json().await.ok()
    }

    /// Waits until every running node has applied the same index with the same state hash.
    pub async fn converged(&self, timeout: Duration) -> Vec<Value> {
        let running = self.running();
        let statuses = eventually(timeout, || async {
            let mut statuses = Vec::new();
            for &i in &running {
                statuses.push(self.status(i).await?);
            }
            let first = &statuses[0];
            let same = statuses
                .iter()
                .all(|s| s["applied_index"] == first["applied_index"] && s["state_hash"] == first["state_hash"]);
            let caught_up = statuses.iter().all(|s| s["applied_index"] == s["commit_index"]);
            (same && caught_up).then_some(statuses)
        })
        .await;
        statuses.unwrap_or_else(|| panic!("nodes did not converge\n{}", self.log_tail()))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill_shared(i);
        }
    }
}

fn sigterm(pid: u32) {
    // `kill -TERM` through the shell's utility keeps this crate free of unsafe code.
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
}

/// Polls `check` until it returns `Some`, or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
