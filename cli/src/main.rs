//! `tally`: the operator and client command line for a Tally cluster.
//!
//! Noun–verb subcommands (`tally poll create`, `tally cluster status`) over the HTTP API
//! of API.md. Only data goes to stdout; errors go to stderr as `error: CODE: message`, and
//! the exit status is one of [`exit::Exit`].

mod audit;
mod backup;
mod bench;
mod certs;
mod client;
mod cluster;
mod demo;
mod exit;
mod output;
mod poll;
mod results;
mod sibling;
mod simulate;
mod user;
mod vote;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

const DEFAULT_ENDPOINTS: &str = "http://127.0.0.1:7001,http://127.0.0.1:7002,http://127.0.0.1:7003";

/// Vote, read results and operate a Tally cluster.
#[derive(Debug, Parser)]
#[command(name = "tally", version, after_help = exit::EXIT_CODES_HELP)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct GlobalArgs {
    /// Comma-separated base URLs of the nodes, tried in order.
    #[arg(long, global = true, env = "TALLY_ENDPOINTS", default_value = DEFAULT_ENDPOINTS,
          value_parser = client::parse_endpoints)]
    endpoints: client::Endpoints,
    /// Output format: a table for humans, or the server's JSON.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = output::Format::Table)]
    output: output::Format,
    /// Timeout of each HTTP request, in milliseconds.
    #[arg(long, global = true, default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    timeout_ms: u64,
    /// Bearer token for nodes run with `--auth jwt` (from `tally user login`).
    #[arg(long, global = true, env = "TALLY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the cluster secret, which cluster management (`tally cluster init`,
    /// `add-member`, `remove-member`) and creating an `--admin` account need; or set
    /// TALLY_CLUSTER_SECRET. Never a flag's value: `ps` would show it.
    #[arg(long, global = true, value_name = "PATH")]
    cluster_secret_file: Option<std::path::PathBuf>,
    /// PEM file of the CA that signed the nodes' certificates, for https endpoints (nodes
    /// run with `--cert-file`; `tally demo --tls` writes one).
    #[arg(long, global = true, env = "TALLY_CACERT", value_name = "PATH")]
    cacert: Option<std::path::PathBuf>,
    /// PEM client certificate, for nodes run with `--client-cert-auth` (with --key).
    #[arg(long, global = true, env = "TALLY_CERT", value_name = "PATH")]
    cert: Option<std::path::PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, global = true, env = "TALLY_KEY", value_name = "PATH")]
    key: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect the cluster and change its membership.
    #[command(subcommand)]
    Cluster(cluster::Command),
    /// Save a consistent backup from a running cluster, check one, restore one into a new
    /// cluster.
    #[command(subcommand)]
    Backup(backup::Command),
    /// Create, show, list and close polls.
    #[command(subcommand)]
    Poll(poll::Command),
    /// Cast a vote.
    Vote(vote::Args),
    /// Show a poll's results, once or as they change.
    Results(results::Args),
    /// Drive a cluster with votes and reads, report throughput and latency, and check
    /// that every node counts exactly the votes acknowledged.
    Bench(bench::Args),
    /// Start a local 3-node cluster with a sample poll, until Ctrl-C.
    Demo(demo::Args),
    /// Make a private CA and node certificates for TLS (`tally-node --cert-file`).
    Certs(certs::Args),
    /// Generate a realistic election or viral poll against a cluster: an electorate with
    /// regions, a turnout curve, duplicates and retries; live standings, then turnout.
    Simulate(simulate::Args),
    /// Create a built-in account or log in (nodes run with `--auth jwt`).
    #[command(subcommand)]
    User(user::Command),
    /// Verify a poll end to end: its audit chain, voters' receipts, and a recount.
    #[command(subcommand)]
    Audit(audit::Command),
    /// Print a shell completion script: `tally completions bash > /etc/bash_completion.d/tally`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `tally man > tally.1 && man ./tally.1`.
    Man,
}

/// What every command needs, built once from the global flags.
pub struct Settings {
    pub client: client::Client,
    pub format: output::Format,
    /// The cluster secret, if given: operator requests carry it.
    pub cluster_secret: Option<String>,
}

impl Settings {
    /// `request` as the operator's: with the cluster secret, when there is one.
    pub fn as_operator(&self, request: client::Request) -> client::Request {
        match &self.cluster_secret {
            Some(secret) => request.header(client::CLUSTER_SECRET_HEADER, secret.clone()),
            None => request,
        }
    }
}

/// Longest cluster secret file read; a secret is a line of text.
const CLUSTER_SECRET_FILE_BYTES_MAX: u64 = 4096;

fn read_cluster_secret(file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    use std::io::Read;
    let Some(path) = file else {
        // Read by hand, not through clap's `env`, which would also make it a flag.
        return Ok(std::env::var("TALLY_CLUSTER_SECRET").ok().filter(|s| !s.is_empty()));
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(CLUSTER_SECRET_FILE_BYTES_MAX).read_to_string(&mut text))
        .map_err(|e| exit::Failure::usage(format!("cannot read --cluster-secret-file {}: {e}", path.display())))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(exit::Failure::usage(format!("--cluster-secret-file {} is empty", path.display())).into());
    }
    Ok(Some(secret.to_string()))
}

impl TryFrom<GlobalArgs> for Settings {
    type Error = anyhow::Error;

    fn try_from(global: GlobalArgs) -> anyhow::Result<Self> {
        let timeout = Duration::from_millis(global.timeout_ms);
        let tls = client::Tls::load(global.cacert.as_deref(), global.cert.as_deref(), global.key.as_deref())?;
        let client = client::Client::new(global.endpoints, timeout, tls)?.with_token(global.token);
        let cluster_secret = read_cluster_secret(global.cluster_secret_file.as_deref())?;
        Ok(Settings { client, format: global.output, cluster_secret })
    }
}

fn main() -> ExitCode {
    let exit = match try_main() {
        Ok(()) => exit::Exit::Ok,
        Err(error) => exit::report(&error),
    };
    exit.into()
}

fn try_main() -> anyhow::Result<()> {
    let cli = Cli::try_parse()?;
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "tally",
                &mut std::io::stdout(),
            );
            return Ok(());
        }
        Command::Man => {
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut std::io::stdout())?;
            return Ok(());
        }
        _ => {}
    }
    // One thread is plenty for a CLI; the demo's nodes are separate processes.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::try_from(cli.global)?;
    match cli.command {
        Command::Cluster(command) => cluster::run(command, &settings).await,
        Command::Backup(command) => backup::run(command, &settings).await,
        Command::Poll(command) => poll::run(command, &settings).await,
        Command::Vote(args) => vote::run(args, &settings).await,
        Command::Results(args) => results::run(args, &settings).await,
        Command::Demo(args) => demo::run(args, &settings).await,
        Command::Certs(args) => certs::run(args, &settings).await,
        Command::Bench(args) => bench::run(args, &settings).await,
        Command::Audit(command) => audit::run(command, &settings).await,
        Command::User(command) => user::run(command, &settings).await,
        Command::Simulate(args) => simulate::run(args, &settings).await,
        // Handled in `try_main`, before the runtime starts.
        Command::Completions { .. } | Command::Man => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn completions_and_the_manual_cover_the_subcommands() {
        let mut script = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut Cli::command(), "tally", &mut script);
        let script = String::from_utf8(script).expect("utf-8");
        assert!(script.contains("_tally") && script.contains("demo") && script.contains("--cacert"), "{script}");
        let mut page = Vec::new();
        clap_mangen::Man::new(Cli::command()).render(&mut page).expect("roff");
        let page = String::from_utf8(page).expect("utf-8");
        assert!(page.starts_with(".ie") || page.contains(".TH tally"), "{page}");
        assert!(page.contains("certs"), "{page}");
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "tally",
            "poll",
            "get",
            "p1",
            "-o",
            "json",
            "--endpoints",
            "127.0.0.1:9001",
            "--timeout-ms",
            "500",
        ])
        .expect("valid command line");
        assert_eq!(cli.global.output, output::Format::Json);
        assert_eq!(cli.global.endpoints.0, ["http://127.0.0.1:9001"]);
        assert_eq!(cli.global.timeout_ms, 500);
    }

    #[test]
    fn bad_endpoints_are_a_usage_error() {
        let error = Cli::try_parse_from(["tally", "--endpoints", "ftp://x:1", "cluster", "status"])
            .expect_err("ftp is refused");
        assert!(error.use_stderr());
    }
}
