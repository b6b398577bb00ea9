//! `tally certs`: a private CA and one certificate per node, for `tally demo --tls`, the
//! compose file's TLS mode, or a small deployment without a PKI of its own.
//!
//! Each node's certificate names `node-<id>` (the peer identity the other nodes check),
//! localhost, 127.0.0.1 and the `--host` names given; it serves TLS and is shown to peers
//! alike. A client certificate (`client.pem`) for nodes run with `--client-cert-auth` and
//! `--trusted-ca-file ca.pem` comes with them. The CA's key is not kept: nothing else is
//! ever signed with it, and a new node means a new set (`tally certs` again).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;

use crate::exit::Failure;
use crate::output::{self, Format};
use crate::Settings;

pub const CA_FILE: &str = "ca.pem";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write into (created if missing; existing files are replaced).
    pub dir: PathBuf,
    /// Node ids 1..=N get a certificate.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub nodes: u64,
    /// More DNS names for every node's certificate; `{id}` becomes the node's id
    /// (`--host 'node{id}'` for compose's service names).
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
}

pub fn node_cert_file(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node-{id}.pem"))
}

pub fn node_key_file(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node-{id}.key"))
}

/// Writes `ca.pem`, `node-<id>.pem`/`.key` for each id, and `client.pem`/`.key`.
pub fn write(dir: &Path, ids: impl IntoIterator<Item = u64>, hosts: &[String]) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ca = tally_api::certs::Ca::new("Tally cluster CA")?;
    write_file(&dir.join(CA_FILE), &ca.cert_pem(), 0o644)?;
    let loopback = [std::net::IpAddr::from([127, 0, 0, 1])];
    for id in ids {
        let mut names = vec!["localhost".to_string()];
        names.extend(hosts.iter().map(|host| host.replace("{id}", &id.to_string())));
        let issued = ca.issue_node(id, &names, &loopback)?;
        write_file(&node_cert_file(dir, id), &issued.cert_pem, 0o644)?;
        write_file(&node_key_file(dir, id), &issued.key_pem, 0o600)?;
    }
    let client = ca.issue(&["tally-client".to_string()], &[])?;
    write_file(&dir.join("client.pem"), &client.cert_pem, 0o644)?;
    write_file(&dir.join("client.key"), &client.key_pem, 0o600)?;
    Ok(())
}

/// Replaces `path`; keys are owner-only from the first byte.
fn write_file(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let _ = fs::remove_file(path);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<()> {
    for host in &args.hosts {
        if host.is_empty() || host.contains(['/', ' ', ',']) {
            return Err(Failure::usage(format!("--host {host:?} is not a DNS name")).into());
        }
    }
    write(&args.dir, 1..=args.nodes, &args.hosts)?;
    let dir = args.dir.display();
    match settings.format {
        Format::Json => {
            output::emit_json(&json!({"dir": args.dir, "ca_file": args.dir.join(CA_FILE), "nodes": args.nodes}))?
        }
        Format::Table => output::emit(&format!(
            "wrote {dir}/{CA_FILE}, {dir}/node-1.pem .. node-{n}.pem with their .key files, and {dir}/client.pem\n\
             node I: tally-node --id I --cert-file {dir}/node-I.pem --key-file {dir}/node-I.key \
             --peer-trusted-ca-file {dir}/{CA_FILE} ...\n\
             clients: tally --cacert {dir}/{CA_FILE} --endpoints https://... (curl --cacert likewise)",
            n = args.nodes
        ))?,
    }
    Ok(())
}
