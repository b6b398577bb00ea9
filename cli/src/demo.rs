//! `tally demo`: a local cluster to play with, in one command.
//!
//! Starts N `tally-node` children on 127.0.0.1, waits until every one is ready, seeds a
//! sample poll with a few votes through different nodes, prints what to try, and on
//! Ctrl-C or SIGTERM stops the nodes gracefully (SIGTERM, a grace period, then SIGKILL).
//! Children are spawned with `kill_on_drop`, so an early return or a panic never leaks them.
//!
//! With `--auth jwt` the nodes check bearer tokens: the demo makes an HS256 secret and an
//! admin account with a random password (both kept, owner-only, in the data dir, so a
//! re-run reuses them), logs in as the admin and seeds the votes as a trusted front end
//! would, through `votes:batch`.
//!
//! With `--tls` the demo makes a private CA and a certificate per node (kept in
//! DATA_DIR/tls), and the nodes serve https and check each other's certificates.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use tally_api::v1::{
    BatchVote, CreatePollRequest, Credentials, OptionInput, PollBody, StatusBody, TokenBody, UserBody,
};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::{sleep, timeout_at, Instant};

use crate::certs::CA_FILE;
use crate::client::{Client, Endpoints, Request};
use crate::exit::Failure;
use crate::output::{self, Format, Table};
use crate::{vote, Settings};

mod banner;
mod seed;

use banner::{banner, summary_json};
use seed::{admin_token, seed};

const HOST: &str = "127.0.0.1";
/// Kept in the data dir so that a re-run on the same data reuses the cluster's secret.
const SECRET_FILE: &str = "cluster-secret";
const SECRET_BYTES: usize = 16;
const JWT_SECRET_FILE: &str = "jwt-secret";
/// The node wants at least 32 bytes; 32 random bytes make 64 hex characters.
const JWT_SECRET_BYTES: usize = 32;
const ADMIN_PASSWORD_FILE: &str = "admin-password";
const ADMIN_PASSWORD_BYTES: usize = 12;
const ADMIN_USERNAME: &str = "admin";
const TLS_DIR: &str = "tls";
/// The sample poll's id, so that a re-run on the same data shows the same poll.
const SAMPLE_POLL_FILE: &str = "sample-poll";

const READY_DEADLINE: Duration = Duration::from_secs(30);
const READY_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// A starting node may accept connections before it answers; one slow probe must not
/// hold up the 200 ms polling of the others for long.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Right after `/ready`, a write may still meet a leader change: retry a bounded number
/// of times, and only on `UNAVAILABLE`, which the API defines as "not recorded".
const SEED_ATTEMPTS_MAX: u32 = 10;
const SEED_RETRY_DELAY: Duration = Duration::from_millis(500);
const STOP_GRACE: Duration = Duration::from_secs(10);
const SUPERVISE_INTERVAL: Duration = Duration::from_millis(500);
const LOG_TAIL_LINES: usize = 20;
const LOG_TAIL_BYTES_MAX: u64 = 64 * 1024;

const SAMPLE_TITLE: &str = "Best systems language?";
const SAMPLE_OPTIONS: [&str; 4] = ["Rust", "Go", "Zig", "C++"];
const SAMPLE_VOTES: [(&str, &str); 3] = [("demo-alice", "Rust"), ("demo-bob", "Zig"), ("demo-carol", "Rust")];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many nodes to start.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=9))]
    pub nodes: u16,
    /// Node I listens on port-base + I - 1.
    #[arg(long, default_value_t = 7001, value_parser = clap::value_parser!(u16).range(1..))]
    pub port_base: u16,
    /// Where the nodes keep their data and logs (DATA_DIR/I/node.log).
    #[arg(long, default_value = "./data/demo")]
    pub data_dir: PathBuf,
    /// The tally-node binary; default: next to this tally binary, else on PATH.
    #[arg(long, env = "TALLY_NODE_BIN")]
    pub node_bin: Option<PathBuf>,
    /// Delete the data dir first, for a brand new cluster.
    #[arg(long)]
    pub fresh: bool,
    /// `jwt`: nodes need bearer tokens; the demo creates an admin account and prints how
    /// to log in. Keep to one mode per data dir.
    #[arg(long, value_enum, default_value_t = AuthMode::None)]
    pub auth: AuthMode,
    /// Serve https, with mutual TLS between the nodes: the demo makes a CA and node
    /// certificates in DATA_DIR/tls (the CLI then needs `--cacert DATA_DIR/tls/ca.pem`).
    #[arg(long)]
    pub tls: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    None,
    Jwt,
}

/// What a `--auth jwt` demo's nodes and seeding need.
#[derive(Debug, Clone)]
struct JwtSetup {
    secret: String,
    admin_password: String,
    password_file: PathBuf,
}

impl JwtSetup {
    fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let secret = load_or_create_secret_file(&dir.join(JWT_SECRET_FILE), JWT_SECRET_BYTES)?;
        let password_file = dir.join(ADMIN_PASSWORD_FILE);
        let admin_password = load_or_create_secret_file(&password_file, ADMIN_PASSWORD_BYTES)?;
        Ok(JwtSetup { secret, admin_password, password_file })
    }
}

/// Where one node of the demo listens.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodePlan {
    id: u64,
    port: u16,
    tls: bool,
}

impl NodePlan {
    fn addr(&self) -> String {
        format!("{HOST}:{}", self.port)
    }

    fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr())
    }

    fn cert_file(&self, tls_dir: &Path) -> PathBuf {
        crate::certs::node_cert_file(tls_dir, self.id)
    }

    fn key_file(&self, tls_dir: &Path) -> PathBuf {
        crate::certs::node_key_file(tls_dir, self.id)
    }
}

/// A running child and what the demo knows about it.
struct Node {
    plan: NodePlan,
    child: Child,
    log_path: PathBuf,
    exited: bool,
}

pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<()> {
    let plan = plan_nodes(args.nodes, args.port_base, args.tls)?;
    prepare_data_dir(&args.data_dir, args.fresh)?;
    let secret = load_or_create_secret(&args.data_dir)?;
    let tls_dir = args.data_dir.join(TLS_DIR);
    if args.tls {
        prepare_certificates(&tls_dir, &plan)?;
    }
    let client_tls = match args.tls {
        false => crate::client::Tls::default(),
        true => crate::client::Tls::load(Some(&tls_dir.join(CA_FILE)), None, None)?,
    };
    let jwt = match args.auth {
        AuthMode::None => None,
        AuthMode::Jwt => Some(JwtSetup::load_or_create(&args.data_dir)?),
    };
    ensure_ports_free(&plan)?;
    let bin = crate::sibling::locate(crate::sibling::NODE, args.node_bin.clone(), std::env::current_exe().ok());
    // Installed before any child exists, so every Ctrl-C goes through the orderly stop.
    let mut shutdown = Shutdown::install()?;
    let mut nodes = spawn_all(&plan, &bin, &args.data_dir, &secret, jwt.as_ref())?;
    let started = tokio::select! {
        started = start(&mut nodes, &args.data_dir, &secret, jwt.as_ref(), &client_tls, settings.format) => Some(started),
        signal = shutdown.recv() => {
            eprintln!("received {signal} while starting: stopping the nodes");
            None
        }
    };
    match started {
        Some(Ok(())) => {
            let supervised = supervise(&mut nodes, &mut shutdown).await;
            stop_all(&mut nodes).await;
            Ok(supervised?)
        }
        Some(Err(error)) => {
            kill_all(&mut nodes).await;
            Err(error)
        }
        None => {
            stop_all(&mut nodes).await;
            Ok(())
        }
    }
}

fn plan_nodes(count: u16, port_base: u16, tls: bool) -> Result<Vec<NodePlan>, Failure> {
    (1..=count)
        .map(|id| {
            let port = port_base
                .checked_add(id - 1)
                .ok_or_else(|| Failure::usage(format!("--port-base {port_base} leaves no port for node {id}")))?;
            Ok(NodePlan { id: u64::from(id), port, tls })
        })
        .collect()
}

/// `1=127.0.0.1:7001,2=127.0.0.1:7002,...`: every node, itself included.
fn peers_arg(plan: &[NodePlan]) -> String {
    let peers: Vec<String> = plan.iter().map(|n| format!("{}={}", n.id, n.addr())).collect();
    peers.join(",")
}

fn node_args(node: &NodePlan, data_dir: &Path, node_dir: &Path, peers: &str, jwt: bool) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--id".into(),
        node.id.to_string().into(),
        "--addr".into(),
        node.addr().into(),
        "--data-dir".into(),
        node_dir.into(),
        "--peers".into(),
        peers.into(),
    ];
    if jwt {
        // The JWT secret itself goes through the environment, out of the process list.
        args.extend(["--auth".into(), "jwt".into(), "--admin".into(), ADMIN_USERNAME.into()]);
    }
    if node.tls {
        let tls_dir = data_dir.join(TLS_DIR);
        args.extend([
            "--cert-file".into(),
            node.cert_file(&tls_dir).into(),
            "--key-file".into(),
            node.key_file(&tls_dir).into(),
            "--peer-trusted-ca-file".into(),
            tls_dir.join(CA_FILE).into(),
        ]);
    }
    args
}

/// `tally certs` into DATA_DIR/tls, kept for re-runs; made anew, CA included, when any
/// file is missing (a demo with more nodes than before, say).
fn prepare_certificates(tls_dir: &Path, plan: &[NodePlan]) -> anyhow::Result<()> {
    let complete = tls_dir.join(CA_FILE).is_file()
        && plan.iter().all(|node| node.cert_file(tls_dir).is_file() && node.key_file(tls_dir).is_file());
    if complete {
        return Ok(());
    }
    crate::certs::write(tls_dir, plan.iter().map(|node| node.id), &[])
}

/// `--fresh` deletes only what looks like a demo data dir (it has the secret file, or is
/// empty), so a mistyped path cannot wipe unrelated files.
fn prepare_data_dir(dir: &Path, fresh: bool) -> anyhow::Result<()> {
    if fresh && dir.exists() {
        let empty = fs::read_dir(dir)?.next().is_none();
        if !empty && !dir.join(SECRET_FILE).is_file() {
            let message = format!(
                "refusing to delete {}: it has no {SECRET_FILE} file, so it may not be a demo data dir",
                dir.display()
            );
            return Err(Failure::failed("NOT_A_DEMO_DIR", message).into());
        }
        fs::remove_dir_all(dir).with_context(|| format!("cannot delete {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

fn load_or_create_secret(dir: &Path) -> anyhow::Result<String> {
    load_or_create_secret_file(&dir.join(SECRET_FILE), SECRET_BYTES)
}

fn load_or_create_secret_file(path: &Path, bytes: usize) -> anyhow::Result<String> {
    match fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
        Ok(_) => Err(Failure::failed("BAD_SECRET", format!("{} is empty", path.display())).into()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let secret = new_secret(bytes);
            write_secret(path, &secret).with_context(|| format!("cannot write {}", path.display()))?;
            Ok(secret)
        }
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// `2 * bytes` hex characters from the OS-seeded thread RNG.
fn new_secret(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

/// Owner-only, since the secret is what lets a process join the cluster.
fn write_secret(path: &Path, secret: &str) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    writeln!(file, "{secret}")
}

/// Checked before spawning anything, so a busy port is one clear message instead of a
/// node dying with a bind error in its log.
fn ensure_ports_free(plan: &[NodePlan]) -> Result<(), Failure> {
    for node in plan {
        if let Err(error) = std::net::TcpListener::bind((HOST, node.port)) {
            let message = format!(
                "port {} on {HOST} is not free ({error}); is another demo or tally-node running? \
                 Stop it, or choose other ports with --port-base",
                node.port
            );
            return Err(Failure::failed("PORT_IN_USE", message));
        }
    }
    Ok(())
}

fn spawn_all(
    plan: &[NodePlan],
    bin: &Path,
    data_dir: &Path,
    secret: &str,
    jwt: Option<&JwtSetup>,
) -> anyhow::Result<Vec<Node>> {
    let peers = peers_arg(plan);
    // On an error, the nodes spawned so far are dropped, and kill_on_drop stops them.
    plan.iter().map(|node| spawn_node(node, bin, data_dir, &peers, secret, jwt)).collect()
}

fn spawn_node(
    plan: &NodePlan,
    bin: &Path,
    data_dir: &Path,
    peers: &str,
    secret: &str,
    jwt: Option<&JwtSetup>,
) -> anyhow::Result<Node> {
    let node_dir = data_dir.join(plan.id.to_string());
    fs::create_dir_all(&node_dir).with_context(|| format!("cannot create {}", node_dir.display()))?;
    let log_path = node_dir.join("node.log");
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    // Appending keeps earlier runs' logs; the marker shows where this run starts.
    writeln!(log, "--- tally demo: starting node {} at {} ---", plan.id, output::now_utc_millis())?;
    let mut command = Command::new(bin);
    // Whatever auth settings the caller's shell holds, the demo's mode is the one used.
    command
        .env_remove("TALLY_AUTH")
        .env_remove("TALLY_JWT_SECRET")
        .env_remove("TALLY_JWT_PUBLIC_KEY")
        .env_remove("TALLY_ADMINS");
    if let Some(jwt) = jwt {
        command.env("TALLY_JWT_SECRET", &jwt.secret);
    }
    // Secrets go through the environment: `ps` shows every process's arguments.
    command.env("TALLY_CLUSTER_SECRET", secret);
    let child = command
        .args(node_args(plan, data_dir, &node_dir, peers, jwt.is_some()))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| spawn_failure(bin, error))?;
    Ok(Node { plan: plan.clone(), child, log_path, exited: false })
}

fn spawn_failure(bin: &Path, error: io::Error) -> anyhow::Error {
    if error.kind() == io::ErrorKind::NotFound {
        return crate::sibling::not_found(bin).into();
    }
    anyhow::Error::new(error).context(format!("cannot start {}", bin.display()))
}

/// Waits for readiness, seeds the sample poll and prints what to try.
async fn start(
    nodes: &mut [Node],
    data_dir: &Path,
    secret: &str,
    jwt: Option<&JwtSetup>,
    tls: &crate::client::Tls,
    format: Format,
) -> anyhow::Result<()> {
    wait_ready(nodes, tls).await?;
    let urls: Vec<String> = nodes.iter().map(|node| node.plan.url()).collect();
    let mut client = Client::new(Endpoints(urls.clone()), REQUEST_TIMEOUT, tls.clone())?;
    if let Some(jwt) = jwt {
        let token = admin_token(&client, jwt, secret).await?;
        client = client.with_token(Some(token));
    }
    let poll = seed(&client, &urls, jwt.is_some(), data_dir).await?;
    let status = client.only(&urls[0]).call::<StatusBody>(&Request::get("/v1/cluster/status")).await;
    let leader_id = status.ok().and_then(|status| status.leader_id);
    match format {
        Format::Json => output::emit_json(&summary_json(nodes, &poll, leader_id, data_dir, jwt))?,
        Format::Table => output::emit(&banner(nodes, &poll, leader_id, data_dir, jwt))?,
    }
    eprintln!("Ctrl-C stops all nodes.");
    Ok(())
}

/// Until every node answers `/ready` with 200 in the same round. A node that exits, or
/// the deadline, ends the wait with the tail of the relevant logs on stderr.
async fn wait_ready(nodes: &mut [Node], tls: &crate::client::Tls) -> anyhow::Result<()> {
    let urls: Vec<String> = nodes.iter().map(|node| node.plan.url()).collect();
    let probe = Client::new(Endpoints(urls), READY_PROBE_TIMEOUT, tls.clone())?;
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        for node in nodes.iter_mut() {
            if let Some(status) = node.child.try_wait()? {
                print_log_tail(node);
                let message = format!("node {} exited during startup ({status})", node.plan.id);
                return Err(Failure::failed("NODE_EXITED", message).into());
            }
        }
        let mut not_ready: Vec<&Node> = Vec::new();
        for node in nodes.iter() {
            let status = probe.probe(&node.plan.url(), "/ready").await;
            if status.is_none_or(|status| !status.is_success()) {
                not_ready.push(node);
            }
        }
        if not_ready.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            not_ready.iter().for_each(|node| print_log_tail(node));
            let ids: Vec<String> = not_ready.iter().map(|node| node.plan.id.to_string()).collect();
            let message = format!("node(s) {} not ready after {} s", ids.join(", "), READY_DEADLINE.as_secs());
            return Err(Failure::failed("NOT_READY", message).into());
        }
        sleep(READY_POLL_INTERVAL).await;
    }
}

fn print_log_tail(node: &Node) {
    let tail = match read_end(&node.log_path, LOG_TAIL_BYTES_MAX) {
        Ok(text) => last_lines(&text, LOG_TAIL_LINES),
        Err(error) => format!("(cannot read it: {error})"),
    };
    eprintln!("--- last lines of {} ---\n{tail}\n---", node.log_path.display());
}

/// Reads at most the last `bytes_max` bytes, so a huge log costs no more than that.
fn read_end(path: &Path, bytes_max: u64) -> io::Result<String> {
    let mut file = File::open(path)?;
    let length = file.metadata()?.len();
    file.seek(SeekFrom::Start(length.saturating_sub(bytes_max)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// SIGINT and SIGTERM, registered once up front: tokio replaces the default "die now"
/// action from then on, so no signal can skip stopping the children.
struct Shutdown {
    interrupt: Signal,
    terminate: Signal,
}

impl Shutdown {
    fn install() -> io::Result<Self> {
        Ok(Shutdown { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

/// Runs until a signal, reporting nodes that exit (killing one is part of the demo).
async fn supervise(nodes: &mut [Node], shutdown: &mut Shutdown) -> Result<(), Failure> {
    loop {
        tokio::select! {
            signal = shutdown.recv() => {
                eprintln!("received {signal}: stopping the nodes");
                return Ok(());
            }
            () = sleep(SUPERVISE_INTERVAL) => {}
        }
        report_exits(nodes);
        if nodes.iter().all(|node| node.exited) {
            return Err(Failure::failed("NODES_EXITED", "every node has exited; see their node.log files"));
        }
    }
}

fn report_exits(nodes: &mut [Node]) {
    for node in nodes.iter_mut().filter(|node| !node.exited) {
        match node.child.try_wait() {
            Ok(Some(status)) => {
                node.exited = true;
                eprintln!("node {} exited ({status}); log: {}", node.plan.id, node.log_path.display());
            }
            Ok(None) => {}
            Err(error) => eprintln!("error: cannot check node {}: {error}", node.plan.id),
        }
    }
}

/// SIGTERM to all at once (they shut down in parallel), then one shared grace period,
/// then SIGKILL for any still running.
async fn stop_all(nodes: &mut [Node]) {
    nodes.iter().for_each(|node| terminate(&node.child));
    let deadline = Instant::now() + STOP_GRACE;
    for node in nodes.iter_mut() {
        if timeout_at(deadline, node.child.wait()).await.is_err() {
            eprintln!("node {} did not stop within {} s: killing it", node.plan.id, STOP_GRACE.as_secs());
            if let Err(error) = node.child.kill().await {
                eprintln!("error: cannot kill node {}: {error}", node.plan.id);
            }
        }
    }
}

/// After a failed start there is nothing to save: SIGKILL and reap.
async fn kill_all(nodes: &mut [Node]) {
    for node in nodes.iter_mut() {
        let _ = node.child.kill().await;
    }
}

// The one unsafe call in the workspace: std and tokio can only SIGKILL a child, and a
// node needs SIGTERM to shut down cleanly.
#[allow(unsafe_code)]
fn terminate(child: &Child) {
    // `id()` is None once tokio has reaped the child, so a pid we get is still our
    // unreaped child's and cannot have been reused by another process.
    let Some(pid) = child.id().and_then(|pid| libc::pid_t::try_from(pid).ok()) else {
        return;
    };
    // SAFETY: kill(2) takes two integers and touches none of our memory.
    let _ = unsafe { libc::kill(pid, libc::SIGTERM) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh scratch directory under the system temp dir (no network, no shared state).
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tally-cli-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    #[test]
    fn nodes_get_consecutive_ports_and_a_full_peer_list() {
        let plan = plan_nodes(3, 7001, false).expect("fits");
        assert_eq!(plan[2], NodePlan { id: 3, port: 7003, tls: false });
        assert_eq!(peers_arg(&plan), "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003");
        assert!(plan_nodes(3, 65535, false).is_err());
        assert_eq!(plan_nodes(1, 7001, true).expect("fits")[0].url(), "https://127.0.0.1:7001");
    }

    #[test]
    fn node_args_follow_the_node_flags() {
        let plan = NodePlan { id: 2, port: 7002, tls: false };
        let args = node_args(&plan, Path::new("d"), Path::new("d/2"), "1=a:1", false);
        let args: Vec<&str> = args.iter().map(|arg| arg.to_str().expect("utf-8")).collect();
        assert_eq!(args, ["--id", "2", "--addr", "127.0.0.1:7002", "--data-dir", "d/2", "--peers", "1=a:1",]);
        let args = node_args(&plan, Path::new("d"), Path::new("d/2"), "1=a:1", true);
        let tail: Vec<&str> = args[8..].iter().map(|arg| arg.to_str().expect("utf-8")).collect();
        assert_eq!(tail, ["--auth", "jwt", "--admin", ADMIN_USERNAME]);
        let tls = NodePlan { tls: true, ..plan };
        let args = node_args(&tls, Path::new("d"), Path::new("d/2"), "1=a:1", false);
        let tail: Vec<&str> = args[8..].iter().map(|arg| arg.to_str().expect("utf-8")).collect();
        let expected = ["--cert-file", "d/tls/node-2.pem", "--key-file", "d/tls/node-2.key"];
        assert_eq!(tail[..4], expected);
        assert_eq!(tail[4..], ["--peer-trusted-ca-file", "d/tls/ca.pem"]);
    }

    #[test]
    fn secret_is_created_once_then_reused() {
        let dir = scratch("secret");
        let first = load_or_create_secret(&dir).expect("created");
        assert_eq!(first.len(), 2 * SECRET_BYTES);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(load_or_create_secret(&dir).expect("reused"), first);
        fs::remove_dir_all(dir).expect("clean up");
    }

    #[test]
    fn fresh_refuses_dirs_that_are_not_demo_dirs() {
        let dir = scratch("fresh");
        fs::write(dir.join("precious.txt"), "keep me").expect("write");
        assert!(prepare_data_dir(&dir, true).is_err());
        assert!(dir.join("precious.txt").is_file());
        fs::write(dir.join(SECRET_FILE), "abc").expect("write");
        prepare_data_dir(&dir, true).expect("a demo dir may be deleted");
        assert!(dir.is_dir() && !dir.join("precious.txt").exists());
        fs::remove_dir_all(dir).expect("clean up");
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
        assert_eq!(last_lines("", 5), "");
    }
}
