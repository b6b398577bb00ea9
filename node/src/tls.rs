//! TLS on the node's one port, with rustls: the API's certificate, and mutual TLS between
//! nodes in which a peer's certificate names its node (`node-<id>` among its DNS names).
//!
//! The API and the peer RPC share the port, so one handshake serves both. The server asks
//! every client for a certificate but, unless `--client-cert-auth`, does not require one:
//! API clients send none, nodes send theirs. A certificate chained to the peer CA is what
//! makes a connection a peer's ([`PeerCertificate`]); `/raft/*` requires one, and a Raft
//! message is accepted only from the node its certificate names. That binds the sender's
//! id to a credential, which the cluster secret alone cannot do: everyone who holds the
//! secret could claim any id.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tally_raft::NodeId;

use crate::config::Config;

/// The server side: what the accept loop hands to each connection's handshake.
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    /// With `--client-cert-auth` the handshake trusts the client CA too, so a certificate
    /// it accepted may not be a peer's: this checks the chain against the peer CA alone.
    /// `None` when the handshake's own verifier is the peer CA's.
    recheck_peer: Option<Arc<dyn ClientCertVerifier>>,
}

/// A connection's client certificate, when it chains to the peer CA: the connection is a
/// node's. Every request on the connection carries it as an extension.
#[derive(Clone, Debug, Default)]
pub struct PeerCertificate(pub Option<Arc<PeerCert>>);

/// The certificate, and the node it was last found to name: every AppendEntries of a
/// connection names the same sender, so the DER is parsed once per connection, not per
/// message.
#[derive(Debug)]
pub struct PeerCert {
    der: CertificateDer<'static>,
    named: std::sync::OnceLock<NodeId>,
}

impl PeerCertificate {
    /// Whether the certificate names node `id`.
    pub fn names(&self, id: NodeId) -> bool {
        let Some(cert) = self.0.as_deref() else { return false };
        if cert.named.get() == Some(&id) {
            return true;
        }
        let named = names_node(&cert.der, id);
        if named {
            let _ = cert.named.set(id);
        }
        named
    }
}

/// Everything TLS for one node: the server side, and the client side its peer transport
/// uses (the node's certificate offered to the others, the peer CA to check theirs).
pub struct Tls {
    pub server: Arc<ServerTls>,
    pub peer_client: ClientConfig,
}

impl ServerTls {
    /// After the handshake: the peer identity of the connection, if it has one.
    pub fn peer_certificate(&self, chain: Option<&[CertificateDer<'static>]>) -> PeerCertificate {
        let Some((end_entity, intermediates)) = chain.and_then(|c| c.split_first()) else {
            return PeerCertificate(None);
        };
        if let Some(verifier) = &self.recheck_peer {
            if verifier.verify_client_cert(end_entity, intermediates, UnixTime::now()).is_err() {
                return PeerCertificate(None);
            }
        }
        PeerCertificate(Some(Arc::new(PeerCert { der: end_entity.clone(), named: std::sync::OnceLock::new() })))
    }
}

pub use tally_api::certs::node_name;

fn names_node(cert: &CertificateDer<'_>, id: NodeId) -> bool {
    let Ok(name) = ServerName::try_from(node_name(id)) else { return false };
    webpki::EndEntityCert::try_from(cert).is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("cannot read a private key from {}: {e}", path.display()))
}

fn read_roots(paths: &[&PathBuf]) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for path in paths {
        for cert in read_certs(path)? {
            roots.add(cert).map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
        }
    }
    Ok(Arc::new(roots))
}

fn client_verifier(roots: Arc<RootCertStore>, required: bool) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let builder = WebPkiClientVerifier::builder_with_provider(roots, provider());
    let builder = if required { builder } else { builder.allow_unauthenticated() };
    builder.build().map_err(|e| format!("cannot build the client certificate verifier: {e}"))
}

/// Reads the `--cert-file` family of flags. `None` without `--cert-file`: plain HTTP.
pub fn load(config: &Config) -> Result<Option<Tls>, String> {
    let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
        return match (&config.cert_file, &config.key_file, &config.peer_trusted_ca_file, config.client_cert_auth) {
            (None, None, None, false) => Ok(None),
            _ => Err("TLS needs --cert-file and --key-file together, and --peer-trusted-ca-file".into()),
        };
    };
    let peer_ca = config
        .peer_trusted_ca_file
        .as_ref()
        .ok_or("--cert-file needs --peer-trusted-ca-file: the peers speak TLS on this port too")?;
    if config.client_cert_auth != config.trusted_ca_file.is_some() {
        return Err("--client-cert-auth and --trusted-ca-file (the clients' CA) go together".into());
    }
    let peer_roots = read_roots(&[peer_ca])?;
    let (verifier, recheck_peer) = match &config.trusted_ca_file {
        None => (client_verifier(peer_roots.clone(), false)?, None),
        Some(client_ca) => (
            client_verifier(read_roots(&[client_ca, peer_ca])?, true)?,
            Some(client_verifier(peer_roots.clone(), true)?),
        ),
    };
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_certs(cert_file)?, read_key(key_file)?)
        .map_err(|e| format!("{} and {} do not make a usable pair: {e}", cert_file.display(), key_file.display()))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];

    let peer_cert_file = config.peer_cert_file.as_ref().unwrap_or(cert_file);
    let peer_key_file = config.peer_key_file.as_ref().unwrap_or(key_file);
    let peer_certs = read_certs(peer_cert_file)?;
    if !names_node(&peer_certs[0], config.id) {
        return Err(format!(
            "{} does not name this node: its DNS names must include {:?}, which the others check",
            peer_cert_file.display(),
            node_name(config.id)
        ));
    }
    let peer_client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(peer_roots)
        .with_client_auth_cert(peer_certs, read_key(peer_key_file)?)
        .map_err(|e| format!("{}: {e}", peer_cert_file.display()))?;
    Ok(Some(Tls { server: Arc::new(ServerTls { config: Arc::new(server), recheck_peer }), peer_client }))
}

/// The development CA lives with the client's code (`tally certs`, `tally demo --tls`)
/// and the tests': the node itself never makes certificates.
pub use tally_api::certs as dev;

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn config(args: &[String]) -> Config {
        let base = ["tally-node", "--id", "2", "--data-dir", "d"].map(String::from);
        Config::try_parse_from(base.iter().chain(args)).expect("flags")
    }

    #[test]
    fn half_a_tls_setup_is_refused_and_a_certificate_must_name_its_node() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = |name: &str| dir.path().join(name).display().to_string();
        let ca = dev::Ca::new("unit CA").expect("CA");
        std::fs::write(path("ca.pem"), ca.cert_pem()).expect("write");
        for (name, id) in [("two", 2), ("three", 3)] {
            let issued = ca.issue_node(id, &[], &[]).expect("issue");
            std::fs::write(path(&format!("{name}.pem")), issued.cert_pem).expect("write");
            std::fs::write(path(&format!("{name}.key")), issued.key_pem).expect("write");
        }
        let flags = |cert: &str, key: &str, extra: &[&str]| {
            let mut args = vec!["--cert-file".to_string(), path(cert), "--key-file".to_string(), path(key)];
            args.extend(extra.iter().map(|a| a.to_string()));
            config(&args)
        };
        let ca_file = path("ca.pem");
        let peer_ca = ["--peer-trusted-ca-file", ca_file.as_str()];
        assert!(load(&config(&[])).expect("plain").is_none());
        assert!(load(&flags("two.pem", "two.key", &[])).is_err_and(|e| e.contains("--peer-trusted-ca-file")));
        assert!(load(&flags("two.pem", "two.key", &peer_ca)).expect("node 2's certificate").is_some());
        assert!(load(&flags("three.pem", "three.key", &peer_ca)).is_err_and(|e| e.contains("node-2")));
        let lone = [peer_ca[0], peer_ca[1], "--client-cert-auth"];
        assert!(load(&flags("two.pem", "two.key", &lone)).is_err_and(|e| e.contains("--trusted-ca-file")));
        assert!(load(&flags("two.pem", "three.key", &peer_ca)).is_err());
    }
}
